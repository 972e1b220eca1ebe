// N atoms, D channels; the equations are in equivariant_update.hpp.
#include "models/equivariant_update.hpp"

#include "core/dual.hpp"

#include "core/error.hpp"
#include "core/parallel.hpp"

#include <algorithm>
#include <cmath>

namespace flt::models {

namespace {

// The N x 3D vector features as a 3N x D matrix (row 3 i + a = component a of atom i).
template <class T>
Eigen::Map<const Mat<T>> components(const Mat<T>& vec, Index dim) {
  return {vec.data(), 3 * vec.rows(), dim};
}
template <class T>
Eigen::Map<Mat<T>> components(Mat<T>& vec, Index dim) {
  return {vec.data(), 3 * vec.rows(), dim};
}

}  // namespace

template <class T>
EquivariantUpdate<T> EquivariantUpdate<T>::create(ParameterStore<T>& store, const std::string& prefix,
                                                  Index dim, Index hidden, Activation activation) {
  EquivariantUpdate u;
  u.dim = dim;
  u.ln = LayerNorm<T>::create(store, prefix + ".ln", dim);
  u.u_map = Linear<T>::create(store, prefix + ".vec_u", dim, dim, /*bias=*/false);
  u.w_map = Linear<T>::create(store, prefix + ".vec_w", dim, dim, /*bias=*/false);
  u.mlp = Mlp<T>::create(store, prefix + ".mlp", 2 * dim, hidden, 3 * dim, activation);
  return u;
}

template <class T>
void EquivariantUpdate<T>::init(ParameterStore<T>& store, Rng& rng) const {
  ln.init(store);
  u_map.init(store, rng);
  w_map.init(store, rng);
  mlp.init(store, rng);
}

template <class T>
void EquivariantUpdate<T>::fill_cache(const ParameterStore<T>& store, ConstMatRef<T> x,
                                      ConstMatRef<T> vec, EquivariantUpdateCache<T>& cache) const {
  const Index N = x.rows(), D = dim;
  require(x.cols() == D && vec.rows() == N && vec.cols() == 3 * D,
          "EquivariantUpdate: x must be N x D and vec N x 3D");
  cache.compact_rows = 0;
  cache.x_in.resize(0, 0);
  cache.vec_in = vec;
  cache.U.resize(N, 3 * D);
  cache.W.resize(N, 3 * D);
  const auto vin = components<T>(cache.vec_in, D);
  auto U3 = components<T>(cache.U, D);
  auto W3 = components<T>(cache.W, D);
  linear_forward<T>(vin, store.value(u_map.weight), {}, U3);
  linear_forward<T>(vin, store.value(w_map.weight), {}, W3);
  cache.mlp_in.resize(N, 2 * D);
  cache.mlp_in.leftCols(D) = ln.forward(store, x, cache.ln);
  cache.norms.resize(N, D);
  using std::sqrt;
  parallel_chunks(N, kRowChunk, [&](Index, Index r0, Index r1) {
    for (Index i = r0; i < r1; ++i)
      for (Index c = 0; c < D; ++c) {
        const T w0 = cache.W(i, c), w1 = cache.W(i, D + c), w2 = cache.W(i, 2 * D + c);
        cache.norms(i, c) = sqrt(w0 * w0 + w1 * w1 + w2 * w2 + static_cast<T>(kVectorNormEps));
      }
  });
  cache.mlp_in.rightCols(D) = cache.norms;
  cache.gates = mlp.forward(store, cache.mlp_in, cache.mlp);
}

template <class T>
void EquivariantUpdate<T>::forward(const ParameterStore<T>& store, Mat<T>& x, Mat<T>& vec,
                                   EquivariantUpdateCache<T>& cache) const {
  fill_cache(store, x, vec, cache);
  const Index N = x.rows(), D = dim;
  parallel_chunks(N, kRowChunk, [&](Index, Index r0, Index r1) {
    for (Index i = r0; i < r1; ++i)
      for (Index c = 0; c < D; ++c) {
        const T avv = cache.gates(i, c), asv = cache.gates(i, D + c), ass = cache.gates(i, 2 * D + c);
        T dot = 0;
        for (Index a = 0; a < 3; ++a) {
          dot += cache.U(i, a * D + c) * cache.W(i, a * D + c);
          vec(i, a * D + c) += avv * cache.U(i, a * D + c);
        }
        x(i, c) += asv * dot + ass;
      }
  });
}

template <class T>
void EquivariantUpdate<T>::forward_compact(const ParameterStore<T>& store, Mat<T>& x, Mat<T>& vec,
                                           EquivariantUpdateCache<T>& cache, Index rows) const {
  const Index N = x.rows(), D = dim;
  require(x.cols() == D && vec.rows() == N && vec.cols() == 3 * D,
          "EquivariantUpdate: x must be N x D and vec N x 3D");
  require(rows > 0, "EquivariantUpdate::forward_compact: rows must be positive");
  cache = EquivariantUpdateCache<T>{};
  cache.compact_rows = rows;
  cache.x_in = x;
  cache.vec_in = vec;
  // Each block of rows through forward on copies of its rows (the kernels' own teams are
  // inactive inside this one).
  const Index blocks = chunk_count(N, rows);
#pragma omp parallel for schedule(dynamic, 1) if (blocks > 1)
  for (Index b = 0; b < blocks; ++b) {
    const Index r0 = b * rows, n = std::min(N, r0 + rows) - r0;
    Mat<T> x_rows = x.middleRows(r0, n), vec_rows = vec.middleRows(r0, n);
    EquivariantUpdateCache<T> part;
    forward(store, x_rows, vec_rows, part);
    x.middleRows(r0, n) = x_rows;
    vec.middleRows(r0, n) = vec_rows;
  }
}

template <class T>
void EquivariantUpdate<T>::backward(ParameterStore<T>& store, const EquivariantUpdateCache<T>& cache,
                                    Mat<T>& dx, Mat<T>& dvec) const {
  const Index N = dx.rows(), D = dim;
  require(dx.cols() == D && dvec.rows() == N && dvec.cols() == 3 * D,
          "EquivariantUpdate::backward: dx must be N x D and dvec N x 3D");
  if (cache.compact_rows > 0) {
    require(cache.x_in.rows() == N && cache.vec_in.rows() == N,
            "EquivariantUpdate::backward: the compact cache holds another number of rows");
    const Index rows = cache.compact_rows;
    EquivariantUpdateCache<T> part;  // the full cache of one block of rows, reused
    for (Index r0 = 0; r0 < N; r0 += rows) {
      const Index n = std::min(N, r0 + rows) - r0;
      fill_cache(store, cache.x_in.middleRows(r0, n), cache.vec_in.middleRows(r0, n), part);
      Mat<T> dx_rows = dx.middleRows(r0, n), dvec_rows = dvec.middleRows(r0, n);
      backward(store, part, dx_rows, dvec_rows);
      dx.middleRows(r0, n) = dx_rows;
      dvec.middleRows(r0, n) = dvec_rows;
    }
    return;
  }
  require(cache.gates.rows() == N, "EquivariantUpdate::backward: the cache holds another number of rows");
  Mat<T> dgates(N, 3 * D), dU(N, 3 * D), dW(N, 3 * D);
  parallel_chunks(N, kRowChunk, [&](Index, Index r0, Index r1) {
    for (Index i = r0; i < r1; ++i)
      for (Index c = 0; c < D; ++c) {
        const T avv = cache.gates(i, c), asv = cache.gates(i, D + c);
        const T g = dx(i, c);
        T dot = 0, davv = 0;
        for (Index a = 0; a < 3; ++a) {
          dot += cache.U(i, a * D + c) * cache.W(i, a * D + c);
          davv += dvec(i, a * D + c) * cache.U(i, a * D + c);
        }
        dgates(i, c) = davv;
        dgates(i, D + c) = g * dot;
        dgates(i, 2 * D + c) = g;
        const T gdot = g * asv;
        for (Index a = 0; a < 3; ++a) {
          dU(i, a * D + c) = dvec(i, a * D + c) * avv + gdot * cache.W(i, a * D + c);
          dW(i, a * D + c) = gdot * cache.U(i, a * D + c);
        }
      }
  });
  Mat<T> dmlp_in = Mat<T>::Zero(N, 2 * D);
  mlp.backward(store, cache.mlp, dgates, dmlp_in);
  // Norms: dW_a += dn o W_a / n.
  parallel_chunks(N, kRowChunk, [&](Index, Index r0, Index r1) {
    for (Index i = r0; i < r1; ++i)
      for (Index c = 0; c < D; ++c) {
        const T s = dmlp_in(i, D + c) / cache.norms(i, c);
        for (Index a = 0; a < 3; ++a) dW(i, a * D + c) += s * cache.W(i, a * D + c);
      }
  });
  // The identity paths: dx and dvec already hold G and Gv.
  ln.backward(store, cache.ln, dmlp_in.leftCols(D), dx);
  const auto vin = components<T>(cache.vec_in, D);
  auto dvec3 = components<T>(dvec, D);
  u_map.backward(store, vin, components<T>(dU, D), dvec3);
  w_map.backward(store, vin, components<T>(dW, D), dvec3);
}

template struct EquivariantUpdate<float>;
template struct EquivariantUpdate<double>;
template struct EquivariantUpdate<Dual>;

}  // namespace flt::models
