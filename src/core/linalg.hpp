// Dense linear algebra that Eigen does slowly and LAPACK does well.
//
// symmetric_eigen: the eigendecomposition of a dense symmetric matrix through LAPACK's dsyevd
// (blocked tridiagonalisation, divide and conquer). The ridge fits (models/three_body.cpp)
// decompose Gram matrices of up to ~6,000 x 6,000; Eigen's SelfAdjointEigenSolver (unblocked
// tridiagonalisation, then QR sweeps that rotate the whole eigenvector matrix) takes minutes
// there, dsyevd with OpenBLAS (the LAPACK that tools/install-deps.sh installs) about half a
// minute on one core (docs/core.md, "Symmetric eigendecomposition").
//
// Determinism: LAPACK runs on one thread whatever the OpenMP setting, so the result does not depend
// on the thread count (threaded BLAS kernels split sums by thread). The bits may differ between
// CPU types, as OpenBLAS picks its kernels per CPU.
#pragma once

#include <Eigen/Core>

namespace flt::linalg {

struct SymmetricEigen {
  Eigen::VectorXd values;   // ascending
  Eigen::MatrixXd vectors;  // column k: the unit eigenvector of values(k)
};

// C = A^T B (transpose_a) or A B, its columns computed in fixed chunks of kProductColumns, one
// Eigen product per chunk, the chunks in parallel over OpenMP threads (Eigen's own threading is
// off in flt): the result depends on the sizes only, never on the thread count. For the
// ridge fits' Gram matrices and projections (10^11 multiply-adds at QM9's size).
inline constexpr Eigen::Index kProductColumns = 256;
Eigen::MatrixXd chunked_product(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, bool transpose_a);

// x <- x v for a square v (x: m x k, v: k x k), in fixed chunks of kRowChunk rows of x in
// parallel (a row of the product needs only its own row of x): no second m x k matrix, and a
// result that does not depend on the thread count.
void multiply_rows_in_place(Eigen::MatrixXd& x, const Eigen::MatrixXd& v);

// a: n x n, symmetric (only its lower triangle is read). Throws InvalidArgument for a matrix that
// is not square or not finite, NumericalError when LAPACK does not converge.
SymmetricEigen symmetric_eigen(Eigen::MatrixXd a);

}  // namespace flt::linalg
