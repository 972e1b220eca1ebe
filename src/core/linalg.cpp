#include "core/linalg.hpp"

#include "core/error.hpp"
#include "core/parallel.hpp"

#include <omp.h>

#include <climits>
#include <cstddef>
#include <string>
#include <vector>

// LAPACK's Fortran interface (column-major; character arguments carry hidden lengths).
extern "C" void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w,
                        double* work, const int* lwork, int* iwork, const int* liwork, int* info,
                        std::size_t jobz_length, std::size_t uplo_length);

namespace flt::linalg {

namespace {

// Sets the calling thread's OpenMP thread count for its lifetime, then restores it. OpenBLAS's
// OpenMP build sizes its thread team from omp_get_max_threads() at each call.
class OmpThreads {
 public:
  explicit OmpThreads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved_); }
  OmpThreads(const OmpThreads&) = delete;
  OmpThreads& operator=(const OmpThreads&) = delete;

 private:
  int saved_;
};

}  // namespace

Eigen::MatrixXd chunked_product(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, bool transpose_a) {
  const Eigen::Index inner = transpose_a ? a.rows() : a.cols();
  if (inner != b.rows())
    throw InvalidArgument("chunked_product: inner dimensions differ (" + std::to_string(inner) + " and " +
                          std::to_string(b.rows()) + ")");
  Eigen::MatrixXd c(transpose_a ? a.cols() : a.rows(), b.cols());
  parallel_chunks(b.cols(), kProductColumns, [&](Index, Index c0, Index c1) {
    if (transpose_a) c.middleCols(c0, c1 - c0).noalias() = a.transpose() * b.middleCols(c0, c1 - c0);
    else c.middleCols(c0, c1 - c0).noalias() = a * b.middleCols(c0, c1 - c0);
  });
  return c;
}

void multiply_rows_in_place(Eigen::MatrixXd& x, const Eigen::MatrixXd& v) {
  if (v.rows() != v.cols() || v.rows() != x.cols())
    throw InvalidArgument("multiply_rows_in_place: x is " + std::to_string(x.rows()) + " x " + std::to_string(x.cols()) +
                          ", v " + std::to_string(v.rows()) + " x " + std::to_string(v.cols()) + " (square, x's columns)");
  parallel_chunks(x.rows(), kRowChunk, [&](Index, Index r0, Index r1) {
    const Eigen::MatrixXd rows = x.middleRows(r0, r1 - r0) * v;
    x.middleRows(r0, r1 - r0) = rows;
  });
}

SymmetricEigen symmetric_eigen(Eigen::MatrixXd a) {
  if (a.rows() != a.cols())
    throw InvalidArgument("symmetric_eigen: the matrix is " + std::to_string(a.rows()) + " x " +
                          std::to_string(a.cols()) + ", not square");
  // dsyevd's workspace, 1 + 6n + 2n^2 doubles, is counted in int (LAPACK's LP64 interface).
  const double workspace = 1.0 + 6.0 * static_cast<double>(a.rows()) + 2.0 * static_cast<double>(a.rows()) * static_cast<double>(a.rows());
  if (workspace > static_cast<double>(INT_MAX))
    throw InvalidArgument("symmetric_eigen: a " + std::to_string(a.rows()) + " x " + std::to_string(a.rows()) +
                          " matrix needs a LAPACK workspace above 2^31 entries (at most 32,766 rows)");
  if (!a.allFinite()) throw InvalidArgument("symmetric_eigen: the matrix has non-finite entries");
  SymmetricEigen out;
  const int n = static_cast<int>(a.rows());
  out.values.resize(n);
  if (n == 0) {
    out.vectors = std::move(a);
    return out;
  }
  const OmpThreads one(1);
  const char jobz = 'V', uplo = 'L';
  int info = 0, lwork = -1, liwork = -1, iwork_size = 0;
  double work_size = 0.0;
  // Workspace query, then the decomposition.
  dsyevd_(&jobz, &uplo, &n, a.data(), &n, out.values.data(), &work_size, &lwork, &iwork_size, &liwork, &info, 1, 1);
  if (info != 0) throw NumericalError("symmetric_eigen: LAPACK dsyevd's workspace query failed (info " + std::to_string(info) + ")");
  lwork = static_cast<int>(work_size);
  liwork = iwork_size;
  std::vector<double> work(static_cast<std::size_t>(lwork));
  std::vector<int> iwork(static_cast<std::size_t>(liwork));
  dsyevd_(&jobz, &uplo, &n, a.data(), &n, out.values.data(), work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
  if (info != 0)
    throw NumericalError("symmetric_eigen: LAPACK dsyevd did not converge (info " + std::to_string(info) + ") for a " +
                         std::to_string(n) + " x " + std::to_string(n) + " matrix");
  out.vectors = std::move(a);
  return out;
}

}  // namespace flt::linalg
