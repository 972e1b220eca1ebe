// Layers: double-precision gradient checks (inputs and parameters, objective sum(out .* R)),
// float-vs-double forward agreement with tolerances derived from the float unit roundoff u,
// reference-kernel comparisons, accumulation semantics and error handling.
#include "core/layers.hpp"

#include "core/error.hpp"
#include "core_test_util.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

using namespace flt;
using namespace flt::test;

namespace {

// Gradient check of a parameterised layer with the common forward(store, x, cache) /
// backward(store, cache, dy, dx) interface, w.r.t. its input and all its parameters.
template <class Layer, class Cache>
void check_layer_gradients(const std::string& name, const Layer& layer,
                           ParameterStore<double>& store, Mat<double> x, Rng& rng) {
  Cache cache;
  const Mat<double> y = layer.forward(store, x, cache);
  const Mat<double> R = random_mat(rng, y.rows(), y.cols());
  Mat<double> dx = Mat<double>::Zero(x.rows(), x.cols());
  store.zero_grad();
  layer.backward(store, cache, R, dx);
  auto loss = [&] { return project(layer.forward(store, x), R); };
  require_gradient(name + " input", loss, span_of(x), span_of(dx));
  const std::vector<double> grads(store.grads().begin(), store.grads().end());
  require_gradient(name + " parameters", loss, store.values(), grads);
}

}  // namespace

// ------------------------------------------------------------------------------------- Linear

TEST_CASE("Linear gradients (input, weight, bias) match finite differences", "[core][layers][gradcheck]") {
  Rng rng(11);
  for (bool bias : {true, false}) {
    ParameterStore<double> store;
    const auto fc = Linear<double>::create(store, "fc", 5, 3, bias);
    store.allocate();
    fc.init(store, rng);
    REQUIRE(store.size() == static_cast<std::size_t>(bias ? 18 : 15));
    check_layer_gradients<Linear<double>, LinearCache<double>>(bias ? "linear" : "linear/nobias",
                                                               fc, store, random_mat(rng, 7, 5), rng);
  }
}

TEST_CASE("Linear backward accumulates into dx and parameter gradients", "[core][layers]") {
  Rng rng(12);
  ParameterStore<double> store;
  const auto fc = Linear<double>::create(store, "fc", 4, 2);
  store.allocate();
  fc.init(store, rng);
  const Mat<double> x = random_mat(rng, 3, 4);
  const Mat<double> dy = random_mat(rng, 3, 2);
  LinearCache<double> cache;
  fc.forward(store, x, cache);
  Mat<double> dx_once = Mat<double>::Zero(3, 4);
  store.zero_grad();
  fc.backward(store, cache, dy, dx_once);
  const std::vector<double> once(store.grads().begin(), store.grads().end());
  Mat<double> dx_twice = Mat<double>::Ones(3, 4);
  fc.backward(store, cache, dy, dx_twice);  // second call on top of the first
  for (std::size_t i = 0; i < once.size(); ++i) REQUIRE(store.grads()[i] == Approx(2 * once[i]));
  REQUIRE((dx_twice - (dx_once + Mat<double>::Ones(3, 4))).cwiseAbs().maxCoeff() < 1e-15);
  // dx is W-weighted dy: dx = dy W^T exactly.
  REQUIRE((dx_once - dy * store.value(fc.weight).transpose()).cwiseAbs().maxCoeff() < 1e-15);
}

TEST_CASE("Linear init is uniform(-1/sqrt(in), 1/sqrt(in)) and deterministic", "[core][layers]") {
  ParameterStore<float> a, b;
  const auto la = Linear<float>::create(a, "l", 16, 8);
  const auto lb = Linear<float>::create(b, "l", 16, 8);
  a.allocate();
  b.allocate();
  Rng ra(5), rb(5);
  la.init(a, ra);
  lb.init(b, rb);
  float max_abs = 0.0f;
  for (std::size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a.values()[i] == b.values()[i]);
    max_abs = std::max(max_abs, std::abs(a.values()[i]));
  }
  REQUIRE(max_abs <= 0.25f);  // 1/sqrt(16)
  REQUIRE(max_abs > 0.2f);    // 136 draws nearly fill the interval
  REQUIRE(a.contains("l.weight"));
  REQUIRE(a.contains("l.bias"));
}

TEST_CASE("Linear fast kernel matches the triple-loop reference", "[core][layers][reference]") {
  Rng rng(13);
  // 600 rows: three row chunks, the last one partial.
  const Mat<double> x = random_mat(rng, 600, 37);
  const Mat<double> W = random_mat(rng, 37, 19);
  const Mat<double> b = random_mat(rng, 19, 1);
  const std::span<const double> bs(b.data(), 19);
  Mat<double> y(600, 19), yr(600, 19);
  linear_forward<double>(x, W, bs, y);
  linear_forward_reference<double>(x, W, bs, yr);
  REQUIRE((y - yr).cwiseAbs().maxCoeff() < 1e-13);
}

TEST_CASE("Linear parameter gradient reduced over many rows matches x^T dy", "[core][layers][reference]") {
  Rng rng(14);
  // 5000 rows reduced by one product per column block (the double path; the float path has its
  // own test in test_gemm.cpp).
  const Mat<double> x = random_mat(rng, 5000, 4);
  const Mat<double> W = random_mat(rng, 4, 3);
  const Mat<double> dy = random_mat(rng, 5000, 3);
  Mat<double> dW = Mat<double>::Zero(4, 3);
  std::vector<double> db(3, 0.0);
  Mat<double> none;
  linear_backward<double>(x, W, dy, none, dW, db);
  Mat<double> ref = Mat<double>::Zero(4, 3);
  for (Index n = 0; n < 5000; ++n)
    for (Index i = 0; i < 4; ++i)
      for (Index o = 0; o < 3; ++o) ref(i, o) += x(n, i) * dy(n, o);
  REQUIRE((dW - ref).cwiseAbs().maxCoeff() < 1e-11);
  for (Index o = 0; o < 3; ++o) REQUIRE(db[static_cast<std::size_t>(o)] == Approx(dy.col(o).sum()).epsilon(1e-12));
}

TEST_CASE("Linear float forward agrees with double within the float rounding bound", "[core][layers][float]") {
  Rng rng(15);
  const Index n = 300, in = 48, out = 24;
  ParameterStore<double> sd;
  ParameterStore<float> sf;
  const auto ld = Linear<double>::create(sd, "fc", in, out);
  const auto lf = Linear<float>::create(sf, "fc", in, out);
  sd.allocate();
  sf.allocate();
  ld.init(sd, rng);
  round_to_float(sd);
  copy_values(sd, sf);
  const Mat<double> x = random_mat(rng, n, in, 2.0);
  const Mat<double> yd = ld.forward(sd, x);
  const Mat<float> yf = lf.forward(sf, to_float(x));
  // Inputs are exact in float, so the only error is the float dot product of length in plus the
  // bias add: |err| <= (in + 1) u (|x| |W| + |b|) elementwise (standard summation bound).
  Mat<double> mag = x.cwiseAbs() * sd.value(ld.weight).cwiseAbs();
  mag.rowwise() += abs_row(sd, ld.bias);
  const Mat<double> err = (yf.cast<double>() - yd).cwiseAbs();
  REQUIRE((err.array() <= static_cast<double>(in + 1) * kFloatU * mag.array()).all());
  REQUIRE(err.maxCoeff() > 0.0);  // the float path really ran in float
}

TEST_CASE("Linear kernels reject mismatched shapes", "[core][layers][errors]") {
  Mat<double> x(3, 4), W(5, 2), y(3, 2);
  REQUIRE_THROWS_AS(linear_forward<double>(x, W, {}, y), InvalidArgument);
  Mat<double> W2(4, 2), ybad(2, 2);
  REQUIRE_THROWS_AS(linear_forward<double>(x, W2, {}, ybad), InvalidArgument);
  std::vector<double> b(3);
  REQUIRE_THROWS_AS(linear_forward<double>(x, W2, b, y), InvalidArgument);
}

// ---------------------------------------------------------------------------------- LayerNorm

TEST_CASE("LayerNorm gradients (input, gain, bias) match finite differences", "[core][layers][gradcheck]") {
  Rng rng(21);
  ParameterStore<double> store;
  const auto ln = LayerNorm<double>::create(store, "ln", 6);
  store.allocate();
  ln.init(store);
  for (double& v : store.values()) v += rng.uniform(-0.5, 0.5);  // non-trivial gamma and beta
  check_layer_gradients<LayerNorm<double>, LayerNormCache<double>>("layernorm", ln, store,
                                                                   random_mat(rng, 5, 6, 3.0), rng);
}

TEST_CASE("LayerNorm normalises rows and matches the reference", "[core][layers][reference]") {
  Rng rng(22);
  ParameterStore<double> store;
  const auto ln = LayerNorm<double>::create(store, "ln", 9);
  store.allocate();
  ln.init(store);
  REQUIRE(ln.eps == 1e-5);
  Mat<double> x = random_mat(rng, 300, 9, 4.0);
  x.array() += 100.0;  // a large common offset must not hurt (two-pass variance)
  const Mat<double> y = ln.forward(store, x);
  for (Index r = 0; r < y.rows(); ++r) {
    REQUIRE(std::abs(y.row(r).mean()) < 1e-12);
    const double var = y.row(r).squaredNorm() / 9.0;
    // var(y) = var / (var + eps) with gamma = 1.
    const double vx = (x.row(r).array() - x.row(r).mean()).square().mean();
    REQUIRE(var == Approx(vx / (vx + 1e-5)).epsilon(1e-12));
  }
  for (double& v : store.values()) v += rng.uniform(-0.5, 0.5);
  const Mat<double> y2 = ln.forward(store, x);
  Mat<double> yr(300, 9);
  layernorm_forward_reference<double>(x, store.value_span(ln.weight), store.value_span(ln.bias),
                                      ln.eps, yr);
  REQUIRE((y2 - yr).cwiseAbs().maxCoeff() < 1e-13);
}

TEST_CASE("LayerNorm float forward agrees with the double forward to float rounding", "[core][layers][float]") {
  Rng rng(23);
  ParameterStore<double> sd;
  ParameterStore<float> sf;
  const auto ld = LayerNorm<double>::create(sd, "ln", 32);
  const auto lf = LayerNorm<float>::create(sf, "ln", 32);
  sd.allocate();
  sf.allocate();
  ld.init(sd);
  for (double& v : sd.values()) v += rng.uniform(-0.5, 0.5);
  round_to_float(sd);
  copy_values(sd, sf);
  const Mat<double> x = random_mat(rng, 200, 32, 3.0);
  const Mat<double> yd = ld.forward(sd, x);
  const Mat<float> yf = lf.forward(sf, to_float(x));
  // The float forward computes the row statistics in float (vectorised two-pass), so besides the
  // final rounding (u |y|) it carries the rounding of the mean and of x - mean, a few units of
  // float rounding in normalised units: |err| <= u (|y| + 8 max|gamma| (|xhat| + 1)). A wrong
  // mean, variance, eps or affine step would be off by orders of magnitude more.
  const Mat<double> err = (yf.cast<double>() - yd).cwiseAbs();
  double gmax = 0.0;
  for (double g : sd.values()) gmax = std::max(gmax, std::abs(g));  // gamma and beta: a bound
  for (Index r = 0; r < x.rows(); ++r) {
    const double mean = x.row(r).mean();
    const double rs = 1.0 / std::sqrt((x.row(r).array() - mean).square().mean() + kLayerNormEps);
    for (Index c = 0; c < x.cols(); ++c) {
      const double xhat = (x(r, c) - mean) * rs;
      const double bound = kFloatU * (std::abs(yd(r, c)) + 8.0 * gmax * (std::abs(xhat) + 1.0));
      INFO("row " << r << " col " << c << ": err " << err(r, c) << ", bound " << bound);
      REQUIRE(err(r, c) <= bound);
    }
  }
  // And it is not trivially loose: the bound is a few float ulps of the output scale.
  REQUIRE(err.maxCoeff() < 1e-5);
}

// -------------------------------------------------------------------------------- Activations

TEST_CASE("Activation gradients match finite differences", "[core][layers][gradcheck]") {
  for (Activation a : {Activation::identity, Activation::silu, Activation::gelu_tanh,
                       Activation::gelu_erf}) {
    Rng rng(31);
    Mat<double> x = random_mat(rng, 6, 5, 4.0);
    const Mat<double> R = random_mat(rng, 6, 5);
    Mat<double> dx = Mat<double>::Zero(6, 5);
    activation_backward<double>(a, x, R, dx);
    auto loss = [&] {
      Mat<double> y(6, 5);
      activation_forward<double>(a, x, y);
      return project(y, R);
    };
    require_gradient(to_string(a), loss, span_of(x), span_of(dx));
  }
}

TEST_CASE("Activations take their documented values", "[core][layers]") {
  Mat<double> x(1, 3);
  x << -1.0, 0.0, 2.0;
  Mat<double> y(1, 3);
  silu_forward<double>(x, y);  // x / (1 + e^-x)
  CHECK(y(0, 0) == Approx(-1.0 / (1.0 + std::exp(1.0))).epsilon(1e-15));
  CHECK(y(0, 1) == 0.0);
  CHECK(y(0, 2) == Approx(2.0 / (1.0 + std::exp(-2.0))).epsilon(1e-15));
  activation_forward<double>(Activation::gelu_erf, x, y);  // x Phi(x); Phi(2) = 0.9772498680518208
  CHECK(y(0, 2) == Approx(2.0 * 0.9772498680518208).epsilon(1e-14));
  CHECK(y(0, 0) == Approx(-1.0 * 0.15865525393145707).epsilon(1e-14));
  gelu_forward<double>(x, y);  // tanh form, GPT-2: 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))
  CHECK(y(0, 2) == Approx(0.5 * 2.0 * (1.0 + std::tanh(0.7978845608028654 * (2.0 + 0.044715 * 8.0))))
                       .epsilon(1e-15));
  CHECK(std::abs(y(0, 2) - 2.0 * 0.9772498680518208) < 1e-3);  // close to the exact GELU
  REQUIRE(parse_activation("gelu") == Activation::gelu_tanh);
  REQUIRE(parse_activation("gelu_erf") == Activation::gelu_erf);
  REQUIRE_THROWS_AS(parse_activation("relu6"), ConfigError);
}

TEST_CASE("Activation float forward agrees with double within the float bound", "[core][layers][float]") {
  for (Activation a : {Activation::silu, Activation::gelu_tanh, Activation::gelu_erf}) {
    Rng rng(32);
    const Mat<double> x = random_mat(rng, 64, 16, 6.0);
    Mat<double> yd(64, 16);
    Mat<float> yf(64, 16);
    activation_forward<double>(a, x, yd);
    activation_forward<float>(a, to_float(x), yf);
    // y = x * s(x) with s in [0, 1] built from exp/tanh/erf (a few ulps each); 1 + tanh or 1 + erf
    // cancels for negative x, leaving an ABSOLUTE error of a few u in s, i.e. ~u |x| in y:
    // |err| <= 8 u (|y| + |x|).
    const Mat<double> err = (yf.cast<double>() - yd).cwiseAbs();
    INFO(to_string(a));
    REQUIRE((err.array() <= 8.0 * kFloatU * (yd.cwiseAbs().array() + x.cwiseAbs().array())).all());
  }
}

// ---------------------------------------------------------------------------------------- MLP

TEST_CASE("MLP gradients (input and all parameters) match finite differences", "[core][layers][gradcheck]") {
  for (Activation a : {Activation::silu, Activation::gelu_tanh, Activation::gelu_erf}) {
    Rng rng(41);
    ParameterStore<double> store;
    const auto mlp = Mlp<double>::create(store, "mlp", 4, 7, 3, a);
    store.allocate();
    mlp.init(store, rng);
    REQUIRE(store.contains("mlp.fc1.weight"));
    REQUIRE(store.contains("mlp.fc2.bias"));
    check_layer_gradients<Mlp<double>, MlpCache<double>>(std::string("mlp/") + to_string(a), mlp,
                                                         store, random_mat(rng, 5, 4, 2.0), rng);
  }
}

TEST_CASE("MLP float forward agrees with double within a propagated rounding bound", "[core][layers][float]") {
  Rng rng(42);
  const Index n = 100, in = 24, hidden = 64, out = 8;
  ParameterStore<double> sd;
  ParameterStore<float> sf;
  const auto md = Mlp<double>::create(sd, "mlp", in, hidden, out, Activation::gelu_tanh);
  const auto mf = Mlp<float>::create(sf, "mlp", in, hidden, out, Activation::gelu_tanh);
  sd.allocate();
  sf.allocate();
  md.init(sd, rng);
  round_to_float(sd);
  copy_values(sd, sf);
  const Mat<double> x = random_mat(rng, n, in, 2.0);
  MlpCache<double> cache;
  const Mat<double> yd = md.forward(sd, x, cache);
  const Mat<float> yf = mf.forward(sf, to_float(x));
  // Error propagation with u the float unit roundoff:
  //   e_pre <= (in + 1) u (|x| |W1| + |b1|)                              (first linear)
  //   e_act <= 1.2 e_pre + 8 u (|act| + |pre|)     (|gelu'| <= 1.13; activation bound as above)
  //   e_out <= (hidden + 1) u (|act| |W2| + |b2|) + e_act |W2|           (second linear)
  // and we allow a factor 2 of slack for second-order terms.
  auto W1 = sd.value(md.fc1.weight).cwiseAbs();
  auto W2 = sd.value(md.fc2.weight).cwiseAbs();
  Mat<double> e_pre = x.cwiseAbs() * W1;
  e_pre.rowwise() += abs_row(sd, md.fc1.bias);
  e_pre *= static_cast<double>(in + 1) * kFloatU;
  const Mat<double> e_act = 1.2 * e_pre + 8.0 * kFloatU * (cache.fc2.x.cwiseAbs() + cache.pre.cwiseAbs());
  Mat<double> e_out = cache.fc2.x.cwiseAbs() * W2;
  e_out.rowwise() += abs_row(sd, md.fc2.bias);
  e_out = static_cast<double>(hidden + 1) * kFloatU * e_out + e_act * W2;
  const Mat<double> err = (yf.cast<double>() - yd).cwiseAbs();
  REQUIRE((err.array() <= 2.0 * e_out.array()).all());
}

// ---------------------------------------------------------------------------------- Embedding

TEST_CASE("Embedding gradient (scatter into the table) matches finite differences", "[core][layers][gradcheck]") {
  Rng rng(51);
  ParameterStore<double> store;
  const auto emb = Embedding<double>::create(store, "emb", 5, 3);
  store.allocate();
  emb.init(store, rng);
  const std::vector<std::int32_t> ids = {0, 2, 2, 1, 4, 0, 2};  // repeats accumulate; 3 unused
  EmbeddingCache<double> cache;
  const Mat<double> y = emb.forward(store, ids, cache);
  REQUIRE(y.row(1) == store.value(emb.weight).row(2));
  const Mat<double> R = random_mat(rng, 7, 3);
  store.zero_grad();
  emb.backward(store, cache, R);
  REQUIRE(store.grad(emb.weight).row(3).isZero(0.0));
  const std::vector<double> grads(store.grads().begin(), store.grads().end());
  auto loss = [&] { return project(emb.forward(store, ids), R); };
  require_gradient("embedding table", loss, store.values(), grads);
}

TEST_CASE("Embedding rejects out-of-range ids and its float forward is exact", "[core][layers][errors][float]") {
  Rng rng(52);
  ParameterStore<double> sd;
  ParameterStore<float> sf;
  const auto ed = Embedding<double>::create(sd, "emb", 4, 6, 0.5);
  const auto ef = Embedding<float>::create(sf, "emb", 4, 6, 0.5);
  sd.allocate();
  sf.allocate();
  ed.init(sd, rng);
  round_to_float(sd);
  copy_values(sd, sf);
  const std::vector<std::int32_t> ids = {3, 0, 1, 3};
  // A table copy is exact: |err| = 0 <= 0 u.
  REQUIRE((ef.forward(sf, ids).cast<double>() - ed.forward(sd, ids)).cwiseAbs().maxCoeff() == 0.0);
  const std::vector<std::int32_t> too_big = {0, 4};
  const std::vector<std::int32_t> negative = {-1};
  REQUIRE_THROWS_AS(ed.forward(sd, too_big), InvalidArgument);
  REQUIRE_THROWS_WITH(ed.forward(sd, too_big), Catch::Contains("id 4 at row 1"));
  REQUIRE_THROWS_AS(ed.forward(sd, negative), InvalidArgument);
  Mat<double> dy(1, 6);
  REQUIRE_THROWS_AS(embedding_backward<double>(negative, dy, sd.grad(ed.weight)), InvalidArgument);
}

// ----------------------------------------------------------------------------------- Residual

TEST_CASE("Residual add gradients match finite differences, float agrees", "[core][layers][gradcheck][float]") {
  Rng rng(61);
  Mat<double> a = random_mat(rng, 4, 3);
  Mat<double> b = random_mat(rng, 4, 3);
  const Mat<double> R = random_mat(rng, 4, 3);
  auto loss = [&] {
    Mat<double> y(4, 3);
    residual_forward<double>(a, b, y);
    return project(y, R);
  };
  Mat<double> da = Mat<double>::Zero(4, 3), db = Mat<double>::Zero(4, 3);
  residual_backward<double>(R, da, db);
  require_gradient("residual a", loss, span_of(a), span_of(da));
  require_gradient("residual b", loss, span_of(b), span_of(db));
  Mat<double> yd(4, 3);
  Mat<float> yf(4, 3);
  residual_forward<double>(a, b, yd);
  residual_forward<float>(to_float(a), to_float(b), yf);
  // One float addition: |err| <= u |a + b|.
  REQUIRE(((yf.cast<double>() - yd).cwiseAbs().array() <= kFloatU * yd.cwiseAbs().array()).all());
}

// ------------------------------------------------------------------------------------ Pooling

TEST_CASE("Segment sum and mean pooling gradients match finite differences, empty sets included", "[core][layers][gradcheck]") {
  const std::vector<Index> sizes = {3, 0, 1, 4};
  const RaggedIndex index = RaggedIndex::from_sizes(sizes);
  for (Pooling p : {Pooling::sum, Pooling::mean}) {
    Rng rng(71);
    Mat<double> x = random_mat(rng, 8, 5);
    const Mat<double> R = random_mat(rng, 4, 5);
    Mat<double> dx = Mat<double>::Zero(8, 5);
    segment_pool_backward<double>(p, index, R, dx);
    auto loss = [&] {
      Mat<double> y(4, 5);
      segment_pool_forward<double>(p, index, x, y);
      return project(y, R);
    };
    require_gradient(to_string(p), loss, span_of(x), span_of(dx));
  }
}

TEST_CASE("Segment pooling values: sums, means and zero rows for empty sets", "[core][layers]") {
  const std::vector<Index> sizes = {2, 0, 3};
  const RaggedIndex index = RaggedIndex::from_sizes(sizes);
  Mat<double> x(5, 2);
  x << 1, 2,  //
      3, 4,   //
      5, 6,   //
      7, 8,   //
      9, 10;
  Mat<double> y = Mat<double>::Constant(3, 2, 99.0);
  segment_pool_forward<double>(Pooling::sum, index, x, y);
  CHECK(y(0, 0) == 4.0);
  CHECK(y(0, 1) == 6.0);
  CHECK(y(1, 0) == 0.0);  // empty set -> 0, not left as 99 and not NaN
  CHECK(y(2, 1) == 24.0);
  segment_pool_forward<double>(Pooling::mean, index, x, y);
  CHECK(y(0, 0) == 2.0);
  CHECK(y(1, 1) == 0.0);
  CHECK(y(2, 0) == 7.0);
  Mat<double> dy = Mat<double>::Ones(3, 2);
  Mat<double> dx = Mat<double>::Zero(5, 2);
  segment_pool_backward<double>(Pooling::mean, index, dy, dx);
  CHECK(dx(0, 0) == 0.5);
  CHECK(dx(4, 1) == Approx(1.0 / 3.0));
  // Shape errors.
  Mat<double> wrong(4, 2);
  REQUIRE_THROWS_AS(segment_pool_forward<double>(Pooling::sum, index, wrong, y), InvalidArgument);
  REQUIRE(parse_pooling("mean") == Pooling::mean);
  REQUIRE_THROWS_AS(parse_pooling("max"), ConfigError);
}

TEST_CASE("Segment pooling float forward equals the rounded double forward", "[core][layers][float]") {
  Rng rng(72);
  std::vector<Index> sizes;
  for (int s = 0; s < 150; ++s) sizes.push_back(static_cast<Index>(rng.below(30)));  // some empty
  const RaggedIndex index = RaggedIndex::from_sizes(sizes);
  const Mat<double> x = random_mat(rng, index.total_rows(), 7);
  for (Pooling p : {Pooling::sum, Pooling::mean}) {
    Mat<double> yd(150, 7);
    Mat<float> yf(150, 7);
    segment_pool_forward<double>(p, index, x, yd);
    segment_pool_forward<float>(p, index, to_float(x), yf);
    // Both accumulate in double; the float result is the double one rounded: |err| <= u |y|.
    REQUIRE(((yf.cast<double>() - yd).cwiseAbs().array() <= kFloatU * yd.cwiseAbs().array()).all());
  }
}
