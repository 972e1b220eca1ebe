// Helpers shared by the attention tests: random normal matrices, a layer with its parameter store,
// random inputs, and
// a gradient checker over every parameter and input.
#pragma once

#include "core/gradcheck.hpp"
#include "core/params.hpp"
#include "core/random.hpp"
#include "attention/attention.hpp"

#include <omp.h>

#include <memory>
#include <vector>

namespace flt::attn::testing {

// Entries scale * N(0, 1), drawn in row-major order.
inline Mat<double> random_normal_mat(Rng& rng, Index rows, Index cols, double scale = 1.0) {
  Mat<double> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) m(i, j) = scale * rng.normal();
  return m;
}

template <class T>
struct Setup {
  ParameterStore<T> store;
  std::unique_ptr<FltAttention<T>> layer;
  RaggedIndex batch;
  Mat<T> Q, K, V, coords;
};

// A small layer (H = 2, d = 3, dv = 2 unless overridden), random inputs of the given set sizes.
// Coordinates ~ N(0, coord_scale^2); integer positions when spectrum is local_window.
template <class T>
std::unique_ptr<Setup<T>> make_setup(const AttentionConfig& config, std::vector<Index> sizes,
                                     std::uint64_t seed, double qk_scale = 0.5,
                                     double coord_scale = 1.0) {
  auto s = std::make_unique<Setup<T>>();
  s->layer = std::make_unique<FltAttention<T>>(config, s->store, "attn");
  s->store.allocate();
  s->layer->init_parameters(s->store);
  s->layer->draw_features(s->store, 0);
  s->batch = RaggedIndex::from_sizes(sizes);
  const Index L = s->batch.total_rows();
  Rng rng(seed);
  auto fill = [&](Mat<T>& M, Index rows, Index cols, double sd) {
    M.resize(rows, cols);
    for (Index i = 0; i < rows; ++i)
      for (Index j = 0; j < cols; ++j) M(i, j) = static_cast<T>(sd * rng.normal());
  };
  fill(s->Q, L, config.heads * config.head_dim, qk_scale);
  fill(s->K, L, config.heads * config.head_dim, qk_scale);
  fill(s->V, L, config.heads * config.value_dim, 1.0);
  const Index dc = config.coord_dim();
  if (config.spectrum.kind == SpectrumKind::local_window) {
    // integer grid positions: set-local row-major grid with side 4 (dc = 2) or a line
    s->coords.resize(L, dc);
    for (Index set = 0; set < s->batch.num_sets(); ++set)
      for (Index i = 0; i < s->batch.size(set); ++i)
        for (Index a = 0; a < dc; ++a)
          s->coords(s->batch.begin(set) + i, a) =
              static_cast<T>(dc == 1 ? i : (a == 0 ? i % 4 : i / 4));
  } else {
    fill(s->coords, L, dc, coord_scale);
  }
  return s;
}

template <class T>
Mat<T> run_forward(Setup<T>& s, AttentionCache<T>& cache) {
  const auto& c = s.layer->config();
  Mat<T> out(s.batch.total_rows(), c.heads * c.value_dim);
  s.layer->forward(s.store, s.Q, s.K, s.V, s.coords, s.batch, out, cache);
  return out;
}

struct GradReport {
  double params = 0, q = 0, k = 0, v = 0, coords = 0;
  double max() const { return std::max({params, q, k, v, coords}); }
};

// Central-difference check of every spectral parameter, beta, Q, K, V and coords for the loss
// sum(out o G) with a fixed random G.
inline GradReport gradient_check(Setup<double>& s, std::uint64_t seed) {
  const auto& c = s.layer->config();
  const Index L = s.batch.total_rows();
  Rng rng(seed);
  Mat<double> G(L, c.heads * c.value_dim);
  for (Index i = 0; i < G.rows(); ++i)
    for (Index j = 0; j < G.cols(); ++j) G(i, j) = rng.normal();
  auto loss = [&] {
    AttentionCache<double> cache;
    return run_forward(s, cache).cwiseProduct(G).sum();
  };
  AttentionCache<double> cache;
  run_forward(s, cache);
  s.store.zero_grad();
  Mat<double> dQ = Mat<double>::Zero(L, s.Q.cols()), dK = dQ, dV = Mat<double>::Zero(L, s.V.cols()),
              dr = Mat<double>::Zero(L, s.coords.cols());
  s.layer->backward(s.store, s.Q, s.K, s.V, s.coords, s.batch, cache, G, dQ, dK, dV, dr);
  const std::vector<double> gp(s.store.grads().begin(), s.store.grads().end());
  // hundreds of tiny forward calls: one thread avoids fork/join overhead on a shared machine
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  GradReport r;
  r.params = check_gradient(loss, s.store.values(), gp).max_rel_error;
  auto span_of = [](Mat<double>& M) { return std::span<double>(M.data(), static_cast<std::size_t>(M.size())); };
  r.q = check_gradient(loss, span_of(s.Q), span_of(dQ)).max_rel_error;
  r.k = check_gradient(loss, span_of(s.K), span_of(dK)).max_rel_error;
  r.v = check_gradient(loss, span_of(s.V), span_of(dV)).max_rel_error;
  r.coords = check_gradient(loss, span_of(s.coords), span_of(dr)).max_rel_error;
  omp_set_num_threads(threads);
  return r;
}

}  // namespace flt::attn::testing
