// Thread-count independence: every core kernel cuts its work into chunks fixed by the problem size
// and reduces partials serially in chunk order (core/parallel.hpp), and Eigen's own threading is
// off (EIGEN_DONT_PARALLELIZE), so 1 and 2 OpenMP threads must give BITWISE identical results.
#include "core/layers.hpp"
#include "core/losses.hpp"
#include "core/optim.hpp"

#include <catch2/catch.hpp>
#include <omp.h>

#include <vector>

using namespace flt;

namespace {

struct Outputs {
  std::vector<float> values;  // every forward output, flattened
  std::vector<float> grads;   // parameter gradients, input gradients, then updated parameters
  double norm = 0.0;
};

void append(std::vector<float>& to, const Mat<float>& m) { to.insert(to.end(), m.data(), m.data() + m.size()); }

Outputs run_model(int threads) {
  omp_set_num_threads(threads);
  Rng rng(2024);
  // 1100 atoms in 60 molecules (sizes 0..36): 5 row chunks of 256 for the row kernels.
  std::vector<Index> sizes;
  Index total = 0;
  while (total < 1100) {
    const Index s = std::min<Index>(static_cast<Index>(rng.below(37)), 1100 - total);
    sizes.push_back(s);
    total += s;
  }
  const RaggedIndex index = RaggedIndex::from_sizes(sizes);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(total));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng.below(10));

  ParameterStore<float> store;
  const auto emb = Embedding<float>::create(store, "emb", 10, 16);
  const auto ln = LayerNorm<float>::create(store, "ln", 16);
  const auto mlp = Mlp<float>::create(store, "mlp", 16, 48, 16, Activation::gelu_tanh);
  const auto head = Linear<float>::create(store, "head", 16, 3);
  store.allocate();
  emb.init(store, rng);
  ln.init(store);
  mlp.init(store, rng);
  head.init(store, rng);

  EmbeddingCache<float> ce;
  LayerNormCache<float> cl;
  MlpCache<float> cm;
  LinearCache<float> ch;
  const Mat<float> h0 = emb.forward(store, ids, ce);
  const Mat<float> h1 = ln.forward(store, h0, cl);
  const Mat<float> h2 = mlp.forward(store, h1, cm);
  Mat<float> h3(h2.rows(), h2.cols());
  residual_forward<float>(h0, h2, h3);
  Mat<float> pooled(index.num_sets(), 16);
  segment_pool_forward<float>(Pooling::mean, index, h3, pooled);
  const Mat<float> pred = head.forward(store, pooled, ch);
  Mat<float> target(pred.rows(), pred.cols());
  for (Index i = 0; i < target.size(); ++i) target.data()[i] = static_cast<float>(rng.normal());

  Outputs out;
  append(out.values, h1);
  append(out.values, h2);
  append(out.values, pooled);
  append(out.values, pred);
  out.values.push_back(static_cast<float>(mse_loss_forward<float>(pred, target).value));

  store.zero_grad();
  Mat<float> dpred = Mat<float>::Zero(pred.rows(), pred.cols());
  mse_loss_backward<float>(pred, target, dpred);
  Mat<float> dpooled = Mat<float>::Zero(pooled.rows(), pooled.cols());
  head.backward(store, ch, dpred, dpooled);
  Mat<float> dh3 = Mat<float>::Zero(h3.rows(), h3.cols());
  segment_pool_backward<float>(Pooling::mean, index, dpooled, dh3);
  Mat<float> dh0 = Mat<float>::Zero(h0.rows(), h0.cols());
  Mat<float> dh2 = Mat<float>::Zero(h2.rows(), h2.cols());
  residual_backward<float>(dh3, dh0, dh2);
  Mat<float> dh1 = Mat<float>::Zero(h1.rows(), h1.cols());
  mlp.backward(store, cm, dh2, dh1);
  ln.backward(store, cl, dh1, dh0);
  emb.backward(store, ce, dh0);
  append(out.grads, dh0);
  out.grads.insert(out.grads.end(), store.grads().begin(), store.grads().end());

  // A big flat buffer for the norm (many chunks of kFlatChunk) and an AdamW step.
  std::vector<float> big(100003);
  for (auto& v : big) v = static_cast<float>(rng.uniform(-1.0, 1.0));
  out.norm = global_grad_norm<float>(big);
  out.norm += clip_grad_norm(store, 1e-3);
  AdamW<float> opt(store.size());
  opt.set_decay_mask(decay_mask_matrices_only(store));
  opt.step(store, 1e-3);
  out.grads.insert(out.grads.end(), store.values().begin(), store.values().end());
  return out;
}

}  // namespace

TEST_CASE("Results with 1 and 2 OpenMP threads are bitwise identical", "[core][threads]") {
  const int saved = omp_get_max_threads();
  const Outputs one = run_model(1);
  const Outputs two = run_model(2);
  omp_set_num_threads(saved);
  REQUIRE(one.values.size() == two.values.size());
  REQUIRE(one.grads.size() == two.grads.size());
  // Bitwise: compare as exact equality of every float (no NaNs are produced).
  std::size_t value_mismatches = 0, grad_mismatches = 0;
  for (std::size_t i = 0; i < one.values.size(); ++i) value_mismatches += one.values[i] != two.values[i];
  for (std::size_t i = 0; i < one.grads.size(); ++i) grad_mismatches += one.grads[i] != two.grads[i];
  CHECK(value_mismatches == 0);
  CHECK(grad_mismatches == 0);
  CHECK(one.norm == two.norm);
  // The run is not trivially zero.
  CHECK(one.norm > 1.0);
}
