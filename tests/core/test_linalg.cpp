// symmetric_eigen (LAPACK dsyevd) against the definition and against Eigen's solver.
#include "core/linalg.hpp"
#include "core/error.hpp"
#include "core/random.hpp"
#include "core/tensor.hpp"

#include <catch2/catch.hpp>
#include <omp.h>

#include <Eigen/Eigenvalues>

#include <cstdint>
#include <cstring>
#include <limits>

using namespace flt;

namespace {

// A random symmetric n x n matrix: B^T B / n + shift I with B normal, eigenvalues spread over
// [shift, ~4 + shift].
Eigen::MatrixXd random_symmetric(Index n, std::uint64_t seed, double shift) {
  Rng rng(seed);
  Eigen::MatrixXd b(n, n);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) b(i, j) = rng.normal();
  Eigen::MatrixXd a = b.transpose() * b / static_cast<double>(n);
  a.diagonal().array() += shift;
  return a;
}

}  // namespace

TEST_CASE("symmetric_eigen: A V = V diag(e), V orthonormal, ascending, as Eigen's solver", "[linalg]") {
  for (const Index n : {Index{1}, Index{2}, Index{7}, Index{120}}) {
    const Eigen::MatrixXd a = random_symmetric(n, 3 + static_cast<std::uint64_t>(n), -1.0);  // indefinite
    const linalg::SymmetricEigen eig = linalg::symmetric_eigen(a);
    REQUIRE(eig.values.size() == n);
    REQUIRE(eig.vectors.rows() == n);
    REQUIRE(eig.vectors.cols() == n);
    const double scale = a.norm();
    CHECK((a * eig.vectors - eig.vectors * eig.values.asDiagonal()).norm() <= 1e-12 * scale * static_cast<double>(n));
    CHECK((eig.vectors.transpose() * eig.vectors - Eigen::MatrixXd::Identity(n, n)).norm() <= 1e-12 * static_cast<double>(n));
    for (Index k = 1; k < n; ++k) CHECK(eig.values(k - 1) <= eig.values(k));
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> reference(a);
    CHECK((eig.values - reference.eigenvalues()).cwiseAbs().maxCoeff() <= 1e-12 * scale);
  }
  // Only the lower triangle is read.
  Eigen::MatrixXd a = random_symmetric(5, 11, 0.5);
  const linalg::SymmetricEigen full = linalg::symmetric_eigen(a);
  a.triangularView<Eigen::StrictlyUpper>().setConstant(1e300);
  CHECK(linalg::symmetric_eigen(a).values == full.values);
  // A known spectrum: Q diag(1, 2, 2, 5) Q^T with a repeated eigenvalue.
  const Eigen::MatrixXd q = Eigen::HouseholderQR<Eigen::MatrixXd>(random_symmetric(4, 5, 0.0)).householderQ();
  const Eigen::Vector4d e(5.0, 2.0, 1.0, 2.0);
  const linalg::SymmetricEigen known = linalg::symmetric_eigen(q * e.asDiagonal() * q.transpose());
  CHECK((known.values - Eigen::Vector4d(1.0, 2.0, 2.0, 5.0)).cwiseAbs().maxCoeff() <= 1e-14 * 5.0);
}

TEST_CASE("symmetric_eigen: the same bits for 1 and 2 OpenMP threads", "[linalg][threads]") {
  // Large enough for LAPACK's threaded kernels (OpenBLAS threads its symmetric matrix-vector
  // products, splitting their sums) to run on several threads when allowed to.
  const Eigen::MatrixXd a = random_symmetric(700, 17, 0.1);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const linalg::SymmetricEigen one = linalg::symmetric_eigen(a);
  omp_set_num_threads(2);
  const linalg::SymmetricEigen two = linalg::symmetric_eigen(a);
  omp_set_num_threads(saved);
  CHECK(omp_get_max_threads() == saved);
  REQUIRE(one.vectors.size() == two.vectors.size());
  CHECK(std::memcmp(one.values.data(), two.values.data(), sizeof(double) * static_cast<std::size_t>(one.values.size())) == 0);
  CHECK(std::memcmp(one.vectors.data(), two.vectors.data(), sizeof(double) * static_cast<std::size_t>(one.vectors.size())) == 0);
}

TEST_CASE("symmetric_eigen: bad input is refused", "[linalg]") {
  CHECK_THROWS_AS(linalg::symmetric_eigen(Eigen::MatrixXd::Zero(2, 3)), InvalidArgument);
  Eigen::MatrixXd a = Eigen::MatrixXd::Identity(3, 3);
  a(2, 1) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(linalg::symmetric_eigen(a), Catch::Contains("non-finite"));
  CHECK(linalg::symmetric_eigen(Eigen::MatrixXd(0, 0)).values.size() == 0);
}

TEST_CASE("chunked_product: A^T B and A B as Eigen's product, the same bits for 1 and 2 threads", "[linalg][threads]") {
  Rng rng(23);
  Eigen::MatrixXd a(300, 700), b(300, 600), c(700, 600);
  for (Eigen::MatrixXd* m : {&a, &b, &c})
    for (Index k = 0; k < m->size(); ++k) m->data()[k] = rng.normal();
  const Eigen::MatrixXd atb = a.transpose() * b, ac = a * c;
  const int saved = omp_get_max_threads();
  for (const int threads : {1, 2}) {
    omp_set_num_threads(threads);
    const Eigen::MatrixXd t = linalg::chunked_product(a, b, true), n = linalg::chunked_product(a, c, false);
    REQUIRE(t.rows() == 700);
    REQUIRE(t.cols() == 600);
    REQUIRE(n.rows() == 300);
    REQUIRE(n.cols() == 600);
    CHECK((t - atb).cwiseAbs().maxCoeff() <= 1e-12 * atb.cwiseAbs().maxCoeff());
    CHECK((n - ac).cwiseAbs().maxCoeff() <= 1e-12 * ac.cwiseAbs().maxCoeff());
    static Eigen::MatrixXd first_t, first_n;
    if (threads == 1) {
      first_t = t;
      first_n = n;
    } else {
      CHECK(std::memcmp(t.data(), first_t.data(), sizeof(double) * static_cast<std::size_t>(t.size())) == 0);
      CHECK(std::memcmp(n.data(), first_n.data(), sizeof(double) * static_cast<std::size_t>(n.size())) == 0);
    }
  }
  omp_set_num_threads(saved);
  CHECK_THROWS_AS(linalg::chunked_product(a, c, true), InvalidArgument);
}

TEST_CASE("multiply_rows_in_place: x v as Eigen's product, the same bits for 1 and 2 threads", "[linalg][threads]") {
  Rng rng(29);
  Eigen::MatrixXd x(700, 90), v(90, 90);
  for (Eigen::MatrixXd* m : {&x, &v})
    for (Index k = 0; k < m->size(); ++k) m->data()[k] = rng.normal();
  const Eigen::MatrixXd expected = x * v;
  const int saved = omp_get_max_threads();
  Eigen::MatrixXd one = x, two = x;
  omp_set_num_threads(1);
  linalg::multiply_rows_in_place(one, v);
  omp_set_num_threads(2);
  linalg::multiply_rows_in_place(two, v);
  omp_set_num_threads(saved);
  CHECK((one - expected).cwiseAbs().maxCoeff() <= 1e-12 * expected.cwiseAbs().maxCoeff());
  CHECK(std::memcmp(one.data(), two.data(), sizeof(double) * static_cast<std::size_t>(one.size())) == 0);
  Eigen::MatrixXd wrong(3, 4);
  CHECK_THROWS_AS(linalg::multiply_rows_in_place(wrong, v), InvalidArgument);
}
