// Matrix conventions shared by every kernel: row-major Eigen matrices (one row per token/atom),
// templated on the scalar so the same code runs in float32 for speed and in double for gradient
// checks. Maps let kernels read and write slices of the flat parameter buffer without copies.
#pragma once

#include <Eigen/Core>

#include <cstddef>

namespace flt {

using Index = Eigen::Index;

template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <class T>
using RowVec = Eigen::Matrix<T, 1, Eigen::Dynamic>;

template <class T>
using MatMap = Eigen::Map<Mat<T>>;
template <class T>
using ConstMatMap = Eigen::Map<const Mat<T>>;
template <class T>
using VecMap = Eigen::Map<Vec<T>>;
template <class T>
using ConstVecMap = Eigen::Map<const Vec<T>>;

// Row-major references so kernels accept Mat, Map and row blocks alike without copies.
template <class T>
using MatRef = Eigen::Ref<Mat<T>>;
template <class T>
using ConstMatRef = Eigen::Ref<const Mat<T>>;

}  // namespace flt
