// Tests of the shared encoder block (src/models/encoder_block): the parameter names and their
// order (model files), forward against the equations written out here, the inference stages
// against forward on blocks of rows (bitwise), finite-difference gradients in double for every
// parameter and the input, and the seed streams of the Performer frequencies.
#include "core/gradcheck.hpp"
#include "core/random.hpp"
#include "attention/performer.hpp"
#include "models/encoder_block.hpp"
#include "models/molecule_model.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <omp.h>

using namespace flt;
using namespace flt::models;

namespace {

constexpr Index kRows = 6, kWidth = 4, kHidden = 5;

// A block (prefix "block1") with a stand-in attention parameter registered between its two
// halves, as the models register theirs; every parameter random (LayerNorm gains and biases too,
// which start at 1 and 0).
template <class T>
struct Fixture {
  ParameterStore<T> store;
  EncoderBlock<T> block;
  ParamRef between;

  explicit Fixture(Index value_width = kWidth, Index width = kWidth, Index hidden = kHidden) {
    block.add_attention_layers(store, "block1", width, value_width);
    between = store.add("block1.attn.own", 2, 3);
    block.add_mlp_layers(store, "block1", hidden, Activation::silu);
    store.allocate();
    Rng rng(7);
    for (T& v : store.values()) v = static_cast<T>(0.5 * rng.normal());
  }
};

template <class T>
Mat<T> random_matrix(Index rows, Index cols, std::uint64_t seed) {
  Rng rng(seed);
  Mat<T> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) m(i, j) = static_cast<T>(rng.normal());
  return m;
}

// The stand-in attention: a = q o k + v (elementwise), the first D columns of v.
template <class T>
void attend(ConstMatRef<T> q, ConstMatRef<T> k, ConstMatRef<T> v, Mat<T>& a) {
  a = q.cwiseProduct(k) + v.leftCols(q.cols());
}
template <class T>
void attend_backward(ConstMatRef<T> da, ConstMatRef<T> q, ConstMatRef<T> k, Mat<T>& dq, Mat<T>& dk,
                     Mat<T>& dv) {
  dq += da.cwiseProduct(k);
  dk += da.cwiseProduct(q);
  dv.leftCols(da.cols()) += da;
}

// The block written out from the parameters by name.
Mat<double> reference_block(const ParameterStore<double>& s, const Mat<double>& x_in) {
  auto value = [&](const std::string& name) { return Mat<double>(s.value(s.ref("block1." + name))); };
  auto layer_norm = [&](const Mat<double>& x, const std::string& name) {
    const Mat<double> gamma = value(name + ".weight"), beta = value(name + ".bias");
    Mat<double> y(x.rows(), x.cols());
    for (Index i = 0; i < x.rows(); ++i) {
      const double mean = x.row(i).mean();
      double var = 0;
      for (Index j = 0; j < x.cols(); ++j) var += (x(i, j) - mean) * (x(i, j) - mean);
      var /= static_cast<double>(x.cols());
      for (Index j = 0; j < x.cols(); ++j)
        y(i, j) = (x(i, j) - mean) / std::sqrt(var + 1e-5) * gamma(j, 0) + beta(j, 0);
    }
    return y;
  };
  auto linear = [&](const Mat<double>& x, const std::string& name) {
    Mat<double> y = x * value(name + ".weight");
    y.rowwise() += value(name + ".bias").col(0).transpose();
    return y;
  };
  auto silu = [](Mat<double> h) {
    for (Index i = 0; i < h.size(); ++i) h.data()[i] = h.data()[i] / (1 + std::exp(-h.data()[i]));
    return h;
  };
  Mat<double> x = x_in;
  const Mat<double> u = layer_norm(x, "ln1");
  const Mat<double> q = linear(u, "attn.q"), k = linear(u, "attn.k"), v = linear(u, "attn.v");
  const Mat<double> a = q.cwiseProduct(k) + v.leftCols(kWidth);
  x += linear(a, "attn.o");
  x += linear(silu(linear(layer_norm(x, "ln2"), "mlp.fc1")), "mlp.fc2");
  return x;
}

}  // namespace

TEST_CASE("encoder block: parameter names in registration order, the model's own between the halves",
          "[models][encoder_block]") {
  Fixture<float> f(3 * kWidth);
  std::vector<std::string> names;
  for (const auto& info : f.store.infos()) names.push_back(info.name);
  const std::vector<std::string> expected{
      "block1.ln1.weight",      "block1.ln1.bias",        "block1.attn.q.weight",
      "block1.attn.q.bias",     "block1.attn.k.weight",   "block1.attn.k.bias",
      "block1.attn.v.weight",   "block1.attn.v.bias",     "block1.attn.o.weight",
      "block1.attn.o.bias",     "block1.attn.own",        "block1.ln2.weight",
      "block1.ln2.bias",        "block1.mlp.fc1.weight",  "block1.mlp.fc1.bias",
      "block1.mlp.fc2.weight",  "block1.mlp.fc2.bias"};
  CHECK(names == expected);
  CHECK(f.block.width() == kWidth);
  CHECK(f.block.value_width() == 3 * kWidth);
  CHECK(f.store.ref("block1.attn.v.weight").cols == 3 * kWidth);
}

TEST_CASE("encoder block: forward matches the equations written out", "[models][encoder_block]") {
  for (Index value_width : {kWidth, 2 * kWidth}) {
    INFO("value width " << value_width);
    Fixture<double> f(value_width);
    const Mat<double> x0 = random_matrix<double>(kRows, kWidth, 3);
    Mat<double> x = x0;
    EncoderBlockCache<double> cache;
    f.block.forward(f.store, x, cache, attend<double>);
    const Mat<double> want = reference_block(f.store, x0);
    CHECK((x - want).cwiseAbs().maxCoeff() < 1e-12 * (1 + want.cwiseAbs().maxCoeff()));
    CHECK(cache.v.cols() == value_width);
    CHECK(cache.a.rows() == kRows);
  }
}

TEST_CASE("encoder block: the inference stages on blocks of rows equal forward bitwise",
          "[models][encoder_block]") {
  Fixture<float> f;
  const Mat<float> x0 = random_matrix<float>(kRows, kWidth, 5);
  Mat<float> x = x0;
  EncoderBlockCache<float> cache;
  f.block.forward(f.store, x, cache, attend<float>);
  // Rows 0..2 and 3..5 separately, without caches: project, attend, add_output, add_mlp.
  Mat<float> y = x0;
  for (Index r0 : {Index{0}, Index{3}}) {
    Mat<float> q(3, kWidth), k(3, kWidth), v(3, kWidth), a(3, kWidth);
    f.block.project(f.store, y.middleRows(r0, 3), q, k, v);
    CHECK(q == cache.q.middleRows(r0, 3));
    CHECK(v == cache.v.middleRows(r0, 3));
    attend<float>(q, k, v, a);
    f.block.add_output(f.store, a, y.middleRows(r0, 3));
    f.block.add_mlp(f.store, y.middleRows(r0, 3));
  }
  CHECK(y == x);
}

TEST_CASE("encoder block: at the models' settings, the inference stages on row blocks equal forward bitwise",
          "[models][encoder_block]") {
  // Width 128 with 256 hidden units (the default model's), 1,000 rows cut into the streaming
  // inference's blocks (MoleculeModel::infer_rows = 768, then the rest), which cross the GEMM
  // kernels' row chunks (96 and 256 rows); 1 and 2 threads.
  constexpr Index rows = 1000, width = 128, hidden = 256;
  const Index block_rows = MoleculeModel<float>::infer_rows;
  Fixture<float> f(width, width, hidden);
  const Mat<float> x0 = random_matrix<float>(rows, width, 21);
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2}) {
    INFO(threads << " threads");
    omp_set_num_threads(threads);
    Mat<float> x = x0;
    EncoderBlockCache<float> cache;
    f.block.forward(f.store, x, cache, attend<float>);
    Mat<float> y = x0;
    for (Index r0 = 0; r0 < rows; r0 += block_rows) {
      const Index n = std::min(block_rows, rows - r0);
      Mat<float> q(n, width), k(n, width), v(n, width), a(n, width);
      f.block.project(f.store, y.middleRows(r0, n), q, k, v);
      attend<float>(q, k, v, a);
      f.block.add_output(f.store, a, y.middleRows(r0, n));
      f.block.add_mlp(f.store, y.middleRows(r0, n));
    }
    CHECK(y == x);
  }
  omp_set_num_threads(saved);
}

TEST_CASE("encoder block: gradients of every parameter and the input match central differences",
          "[models][encoder_block]") {
  for (Index value_width : {kWidth, 2 * kWidth}) {
    INFO("value width " << value_width);
    Fixture<double> f(value_width);
    Mat<double> x0 = random_matrix<double>(kRows, kWidth, 9);
    const Mat<double> w = random_matrix<double>(kRows, kWidth, 10);  // L = sum w o block(x)
    auto loss = [&] {
      Mat<double> x = x0;
      EncoderBlockCache<double> c;
      f.block.forward(f.store, x, c, attend<double>);
      return x.cwiseProduct(w).sum();
    };
    Mat<double> x = x0;
    EncoderBlockCache<double> cache;
    f.block.forward(f.store, x, cache, attend<double>);
    f.store.zero_grad();
    Mat<double> dx = w;
    EncoderBlockGrads<double> grads;
    f.block.backward(f.store, cache, dx, grads,
                     [&](ConstMatRef<double> da, Mat<double>& dq, Mat<double>& dk, Mat<double>& dv) {
                       attend_backward<double>(da, cache.q, cache.k, dq, dk, dv);
                     });
    GradCheckOptions options;
    options.step = 1e-6;
    const std::vector<double> analytic(f.store.grads().begin(), f.store.grads().end());
    const auto params = check_gradient(loss, f.store.values(), analytic, options);
    {
      INFO("parameter " << params.worst_index << ": analytic " << params.worst_analytic
                        << ", numeric " << params.worst_numeric);
      CHECK(params.max_rel_error < 1e-6);
    }
    // The stand-in parameter is the model's: the block leaves its gradient alone.
    CHECK(f.store.grad(f.between).isZero());
    const auto input = check_gradient(loss, std::span<double>(x0.data(), static_cast<std::size_t>(x0.size())),
                                      std::span<const double>(dx.data(), static_cast<std::size_t>(dx.size())),
                                      options);
    INFO("input " << input.worst_index << ": analytic " << input.worst_analytic << ", numeric "
                  << input.worst_numeric);
    CHECK(input.max_rel_error < 1e-6);
  }
}

TEST_CASE("encoder block: the stages compose to backward (the molecule model's per-type block 0)",
          "[models][encoder_block]") {
  // project_backward on its own with dq, dk, dv given accumulates into dx and the projections'
  // gradients exactly as the whole backward does.
  Fixture<double> f;
  const Mat<double> x0 = random_matrix<double>(kRows, kWidth, 11);
  Mat<double> x = x0;
  EncoderBlockCache<double> cache;
  f.block.forward(f.store, x, cache, attend<double>);
  const Mat<double> w = random_matrix<double>(kRows, kWidth, 12);
  auto backward_sink = [&](ConstMatRef<double> da, Mat<double>& dq, Mat<double>& dk, Mat<double>& dv) {
    attend_backward<double>(da, cache.q, cache.k, dq, dk, dv);
  };
  f.store.zero_grad();
  Mat<double> dx_whole = w;
  EncoderBlockGrads<double> g1;
  f.block.backward(f.store, cache, dx_whole, g1, backward_sink);
  const std::vector<double> grads_whole(f.store.grads().begin(), f.store.grads().end());

  f.store.zero_grad();
  Mat<double> dx = w;
  EncoderBlockGrads<double> g2;
  f.block.mlp_backward(f.store, cache, dx, g2);
  f.block.output_backward(f.store, cache, dx, g2);
  f.block.zero_attention_grads(kRows, g2);
  backward_sink(g2.da, g2.dq, g2.dk, g2.dv);
  f.block.project_backward(f.store, cache, g2.dq, g2.dk, g2.dv, g2.du, dx);
  CHECK(dx == dx_whole);
  CHECK(std::vector<double>(f.store.grads().begin(), f.store.grads().end()) == grads_whole);
}

TEST_CASE("encoder block: Performer frequencies per block, draw and head from the feature stream",
          "[models][encoder_block]") {
  const std::uint64_t seed = 42;
  CHECK(block_feature_seed(seed, 3) == Rng(seed).fork(kFeatureStream).fork(3).next_u64());
  CHECK(block_feature_seed(seed, 3) != block_feature_seed(seed, 2));
  PerformerFrequencies<float> p;
  p.draw(seed, 1, 5, 3, 8, 4);
  REQUIRE(p.omega.size() == 3);
  REQUIRE(p.omega_t.size() == 3);
  for (Index h = 0; h < 3; ++h) {
    Rng rng = Rng(block_feature_seed(seed, 1)).fork(5).fork(static_cast<std::uint64_t>(h));
    const Mat<double> want = attn::draw_performer_frequencies(8, 4, true, attn::FeatureNorms::chi, rng);
    CHECK(p.omega[static_cast<std::size_t>(h)] == want);
    CHECK(p.omega_t[static_cast<std::size_t>(h)] == want.cast<float>());
  }
  PerformerFrequencies<float> other;
  other.draw(seed, 1, 6, 3, 8, 4);
  CHECK(other.omega[0] != p.omega[0]);
  other.set(p.omega);
  CHECK(other.omega_t[2] == p.omega_t[2]);
}
