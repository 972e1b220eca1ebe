// Tests of the sequence/image token model (src/models/token_model): finite-difference gradients of
// the whole model for every attention kind, input kind, causal/bidirectional and both heads;
// fast attention paths against their O(L^2) references with the same random features; causality;
// determinism (seed, threads); model-file round trip and bad inputs.
#include "core/gradcheck.hpp"
#include "core/losses.hpp"
#include "core/optim.hpp"
#include "core/random.hpp"
#include "attention/attention.hpp"
#include "attention/exact/toeplitz.hpp"
#include "attention/kernel_attention.hpp"
#include "models/token_model.hpp"

#include <catch2/catch.hpp>
#include <omp.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <string>

using namespace flt;
using namespace flt::models;

namespace {

struct Case {
  const char* name;
  TokenAttention attention;
  attn::Variant variant;
  attn::SpectrumKind spectrum;
};

const Case kCases[] = {
    {"flt-bias-gm", TokenAttention::flt, attn::Variant::bias, attn::SpectrumKind::gaussian_mixture},
    {"flt-kron-gm", TokenAttention::flt, attn::Variant::kronecker,
     attn::SpectrumKind::gaussian_mixture},
    {"flt-bias-local", TokenAttention::flt, attn::Variant::bias, attn::SpectrumKind::local_window},
    {"performer", TokenAttention::performer, attn::Variant::bias,
     attn::SpectrumKind::gaussian_mixture},
    {"toeplitz-bias-gm", TokenAttention::toeplitz, attn::Variant::bias,
     attn::SpectrumKind::gaussian_mixture},
    {"toeplitz-kron-gm", TokenAttention::toeplitz, attn::Variant::kronecker,
     attn::SpectrumKind::gaussian_mixture},
    {"toeplitz-kron-local", TokenAttention::toeplitz, attn::Variant::kronecker,
     attn::SpectrumKind::local_window},
};

enum class Setup { tokens_pooled, tokens_causal_lm, tokens_bidir_lm, patches_pooled };

TokenModelConfig tiny(const Case& c, Setup setup, std::uint64_t seed = 11) {
  TokenModelConfig cfg;
  cfg.width = 8;
  cfg.heads = 2;
  cfg.blocks = 2;
  cfg.mlp_hidden = 8;
  cfg.head_hidden = 6;
  cfg.num_features = 6;
  cfg.num_frequencies = 6;
  cfg.spectrum_components = 2;
  cfg.attention = c.attention;
  cfg.variant = c.variant;
  cfg.spectrum = c.spectrum;
  cfg.seed = seed;
  cfg.init_sigma_min = 0.1;
  cfg.init_sigma_max = 0.4;
  if (c.variant == attn::Variant::kronecker && c.attention == TokenAttention::flt) {
    // Variant A's signed RPE estimate needs enough features to keep every denominator positive
    // (otherwise rows are clamped, which the reference comparison would flag).
    cfg.num_features = 16;
    cfg.num_frequencies = 32;
  }
  switch (setup) {
    case Setup::tokens_pooled:
      cfg.input = InputKind::tokens;
      cfg.vocab_size = 7;
      cfg.num_outputs = 3;
      break;
    case Setup::tokens_causal_lm:
    case Setup::tokens_bidir_lm:
      cfg.input = InputKind::tokens;
      cfg.vocab_size = 7;
      cfg.head = OutputHead::per_token;
      cfg.causal = setup == Setup::tokens_causal_lm;
      break;
    case Setup::patches_pooled:
      cfg.input = InputKind::patches;
      cfg.image_height = 6;  // 3 x 2 grid of 2 x 2 patches: unequal axes catch transposes
      cfg.image_width = 4;
      cfg.patch = 2;
      cfg.num_outputs = 4;
      break;
  }
  return cfg;
}

TokenBatch make_batch(const TokenModelConfig& cfg, std::uint64_t seed, Index sets = 3) {
  Rng rng(seed);
  if (cfg.input == InputKind::patches) {
    Mat<float> px(sets, cfg.image_height * cfg.image_width);
    for (Index i = 0; i < px.size(); ++i) px.data()[i] = static_cast<float>(rng.uniform());
    return TokenBatch::images(px);
  }
  std::vector<std::vector<std::int32_t>> seqs;
  for (Index s = 0; s < sets; ++s) {
    std::vector<std::int32_t> seq;
    const Index n = 3 + 2 * s;  // 3, 5, 7 tokens
    for (Index i = 0; i < n; ++i)
      seq.push_back(static_cast<std::int32_t>(rng.next_u64() % static_cast<std::uint64_t>(cfg.vocab_size)));
    seqs.push_back(seq);
  }
  return TokenBatch::sequences(seqs);
}

// Moves every parameter off its initial value (mu = 0 and equal LayerNorm gains make several
// gradient components vanish by symmetry, which would hide errors).
template <class T>
void perturb(TokenModel<T>& model, std::uint64_t seed, double scale = 0.1) {
  Rng rng(seed);
  for (auto& v : model.params().values()) v += static_cast<T>(scale * rng.normal());
}

std::string describe(const Case& c, Setup s) {
  static const char* names[] = {"tokens_pooled", "tokens_causal_lm", "tokens_bidir_lm",
                                "patches_pooled"};
  return std::string(c.name) + " / " + names[static_cast<int>(s)];
}

}  // namespace

TEST_CASE("token model: configuration strings round trip and bad values are named",
          "[seq][token_model]") {
  TokenModelConfig c = tiny(kCases[2], Setup::tokens_causal_lm);
  c.window_radii = {1, 4};
  c.seed = 0xFFFFFFFFFFFFFFFFULL;
  c.init_beta = 0.1;  // not exactly representable: the shortest round-trip form must survive
  std::map<std::string, std::string> kv;
  for (const auto& [k, v] : config_to_strings(c)) kv[k] = v;
  const TokenModelConfig d = token_config_from_strings(kv);
  CHECK(config_to_strings(d) == config_to_strings(c));
  CHECK(d.window_radii == std::vector<Index>{1, 4});
  CHECK(d.init_beta == 0.1);
  CHECK(d.seed == c.seed);

  auto expect_error = [&](const std::string& key, const std::string& value, const char* needle) {
    auto kv2 = kv;
    kv2[key] = value;
    CHECK_THROWS_WITH(token_config_from_strings(kv2), Catch::Contains(needle));
  };
  expect_error("width", "9", "width");            // not divisible by heads
  expect_error("attention", "softmax", "attention");
  expect_error("patch", "x", "patch");
  expect_error("spectrum", "radial_shells", "spectrum");
  expect_error("window_radii", "1", "window_radii");
  expect_error("causal", "maybe", "causal");
  expect_error("seed", "-1", "seed");
  // INI spellings: '-' for '_', booleans as on/off; a key given in both spellings is refused.
  auto ini = kv;
  ini.erase("redraw_features");
  ini["redraw-features"] = "on";
  CHECK(token_config_from_strings(ini).redraw_features);
  ini["redraw-features"] = "off";
  CHECK_FALSE(token_config_from_strings(ini).redraw_features);
  ini["redraw_features"] = "off";
  CHECK_THROWS_WITH(token_config_from_strings(ini), Catch::Contains("given twice"));
  kv["colour"] = "red";
  CHECK_THROWS_WITH(token_config_from_strings(kv), Catch::Contains("colour"));
  TokenModelConfig img = tiny(kCases[0], Setup::patches_pooled);
  img.causal = true;
  CHECK_THROWS_AS(img.validate(), ConfigError);
  img.causal = false;
  img.patch = 4;  // does not divide 6
  CHECK_THROWS_AS(img.validate(), ConfigError);
}

namespace {

std::set<std::string> keys_without_effect(const TokenModelConfig& c) {
  std::set<std::string> out;
  for (const auto& k : config_keys_without_effect(c)) {
    CHECK_FALSE(k.why.empty());
    CHECK(out.insert(k.key).second);  // each key once
  }
  return out;
}

// A valid value of `key` other than `current` (tiny()'s configurations: 2 spectrum components,
// init sigmas 0.1..0.4).
std::string other_value(const std::string& key, const std::string& current) {
  static const std::map<std::string, std::pair<std::string, std::string>> values{
      {"variant", {"bias", "kronecker"}},        {"num_frequencies", {"4", "9"}},
      {"spectrum", {"gaussian_mixture", "local_window"}}, {"spectrum_components", {"3", "1"}},
      {"window_radii", {"0,5", "2,3"}},          {"proposal", {"gaussian", "uniform_box"}},
      {"proposal_scale", {"0.25", "0.3"}},       {"init_sigma_min", {"0.05", "0.07"}},
      {"init_sigma_max", {"0.2", "0.9"}},        {"init_beta", {"2", "3"}},
      {"block_size", {"2", "3"}},                {"image_height", {"8", "10"}},
      {"image_width", {"8", "10"}},              {"patch", {"1", "3"}},
      {"vocab_size", {"9", "11"}},               {"head_hidden", {"5", "9"}},
      {"num_outputs", {"2", "5"}}};
  const auto it = values.find(key);
  REQUIRE(it != values.end());
  return it->second.first != current ? it->second.first : it->second.second;
}

}  // namespace

TEST_CASE("token model: the configuration keys without effect for each kind and setting", "[seq][token_model]") {
  std::set<std::string> all;
  for (const auto& [key, value] : config_to_strings(TokenModelConfig{})) all.insert(key);
  const std::set<std::string> rpe = {"variant", "num_frequencies", "spectrum", "spectrum_components", "window_radii",
                                     "proposal", "proposal_scale", "init_sigma_min", "init_sigma_max", "init_beta",
                                     "block_size"};
  // The defaults: flt, bias, gaussian_mixture sampled from the spectrum, tokens, pooled head.
  TokenModelConfig c;
  CHECK(keys_without_effect(c) == std::set<std::string>{"window_radii", "proposal_scale", "image_height",
                                                        "image_width", "patch"});
  c.proposal = attn::ProposalKind::gaussian;
  c.variant = attn::Variant::kronecker;
  CHECK(keys_without_effect(c) == std::set<std::string>{"window_radii", "init_beta", "image_height", "image_width",
                                                        "patch"});
  c.spectrum = attn::SpectrumKind::local_window;
  CHECK(keys_without_effect(c) == std::set<std::string>{"proposal", "proposal_scale", "init_sigma_min",
                                                        "init_sigma_max", "init_beta", "image_height",
                                                        "image_width", "patch"});
  c.attention = TokenAttention::toeplitz;
  c.input = InputKind::patches;
  c.head = OutputHead::pooled;
  CHECK(keys_without_effect(c) == std::set<std::string>{"num_frequencies", "block_size", "proposal",
                                                        "proposal_scale", "init_sigma_min", "init_sigma_max",
                                                        "init_beta", "vocab_size"});
  c.attention = TokenAttention::performer;
  std::set<std::string> performer = rpe;
  performer.insert("vocab_size");
  CHECK(keys_without_effect(c) == performer);
  c.input = InputKind::tokens;
  c.head = OutputHead::per_token;
  for (const auto& key : keys_without_effect(c)) CHECK(all.contains(key));  // config_to_strings names only
  CHECK(keys_without_effect(c).contains("head_hidden"));
  CHECK(keys_without_effect(c).contains("num_outputs"));

  // The lists are true: changing any listed key leaves the initial parameters and the outputs
  // bit for bit the same, for every kind and setting of the tests here (and the gaussian proposal).
  std::vector<Case> cases(std::begin(kCases), std::end(kCases));
  cases.push_back({"flt-kron-local", TokenAttention::flt, attn::Variant::kronecker, attn::SpectrumKind::local_window});
  for (bool gaussian : {false, true})
    for (const Case& k : cases)
      for (Setup setup : {Setup::tokens_pooled, Setup::tokens_bidir_lm, Setup::patches_pooled}) {
        TokenModelConfig base = tiny(k, setup);
        if (gaussian) base.proposal = attn::ProposalKind::gaussian;
        const TokenBatch batch = make_batch(base, 5);
        TokenModel<double> reference(base);
        const Mat<double> expected = reference.predict(batch);
        const std::vector<double> params(reference.params().values().begin(), reference.params().values().end());
        for (const auto& [key, why] : config_keys_without_effect(base)) {
          std::map<std::string, std::string> kv;
          for (const auto& [name, value] : config_to_strings(base)) kv[name] = value;
          kv[key] = other_value(key, kv[key]);
          INFO(describe(k, setup) << (gaussian ? " gaussian proposal: " : ": ") << key << " = " << kv[key]);
          TokenModel<double> changed(token_config_from_strings(kv));
          const std::vector<double> changed_params(changed.params().values().begin(), changed.params().values().end());
          CHECK(changed_params == params);
          CHECK(changed.predict(batch) == expected);
        }
      }
}

TEST_CASE("token model: finite-difference gradients of every parameter, all kinds and inputs",
          "[seq][token_model][gradcheck]") {
  // One thread: thousands of tiny forwards, where OpenMP start-up on a loaded machine would
  // dominate (thread independence is tested separately, bitwise).
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  for (const Case& c : kCases)
    for (Setup s : {Setup::tokens_pooled, Setup::tokens_causal_lm, Setup::tokens_bidir_lm,
                    Setup::patches_pooled}) {
      if (c.spectrum == attn::SpectrumKind::local_window && s == Setup::tokens_bidir_lm) continue;
      const TokenModelConfig cfg = tiny(c, s);
      TokenModel<double> model(cfg);
      perturb(model, 5);
      const TokenBatch batch = make_batch(cfg, 3);
      TokenCache<double> cache;
      const Mat<double> out0 = model.forward(batch, cache);
      Rng rng(17);
      Mat<double> G(out0.rows(), out0.cols());
      for (Index i = 0; i < G.size(); ++i) G.data()[i] = rng.normal();
      model.params().zero_grad();
      model.backward(cache, G);
      // Every tensor, up to 4 of its components (chosen at random): all code paths are covered
      // while the test stays fast. check_gradient perturbs the sampled copy `x`, which the loss
      // writes back into the parameters before each evaluation.
      const auto grads = model.params().grads();
      auto values = model.params().values();
      std::vector<std::size_t> idx;
      Rng pick(29);
      for (const auto& info : model.params().infos()) {
        const std::size_t n = info.ref.size();
        if (n <= 4) {
          for (std::size_t i = 0; i < n; ++i) idx.push_back(info.ref.offset + i);
        } else {
          std::set<std::size_t> chosen;  // distinct: a repeated index would be written twice
          while (chosen.size() < 4) chosen.insert(info.ref.offset + pick.next_u64() % n);
          idx.insert(idx.end(), chosen.begin(), chosen.end());
        }
      }
      std::vector<double> x, analytic;
      for (std::size_t i : idx) {
        x.push_back(values[i]);
        analytic.push_back(grads[i]);
      }
      auto loss = [&]() {
        for (std::size_t k = 0; k < idx.size(); ++k) values[idx[k]] = x[k];
        TokenCache<double> c2;
        return model.forward(batch, c2).cwiseProduct(G).sum();
      };
      const auto r = check_gradient(loss, x, analytic);
      INFO(describe(c, s) << ": worst sampled component " << idx[r.worst_index] << " analytic "
                          << r.worst_analytic << " numeric " << r.worst_numeric);
      CHECK(r.max_rel_error < 2e-5);
      // A real check: the loss depends on the parameters (no all-zero gradient).
      double norm = 0;
      for (double g : analytic) norm += g * g;
      CHECK(norm > 1e-6);
    }
  omp_set_num_threads(saved_threads);
}

TEST_CASE("token model: FLT attention equals its O(L^2) reference with the same features",
          "[seq][token_model]") {
  for (Setup s : {Setup::tokens_pooled, Setup::tokens_causal_lm, Setup::patches_pooled})
    for (int ci : {0, 1, 2}) {
      const TokenModelConfig cfg = tiny(kCases[ci], s);
      TokenModel<double> model(cfg);
      perturb(model, 8, 0.05);
      const TokenBatch batch = make_batch(cfg, 4);
      TokenCache<double> cache;
      model.reset_attention_stats();
      model.forward(batch, cache);
      REQUIRE(model.attention_stats().clamped_denominators == 0);
      for (std::size_t b = 0; b < model.layers().size(); ++b) {
        const auto& bc = cache.blocks[b];
        const Mat<double> ref = attn::flt_attention_reference<double>(
            *model.layers()[b].flt, model.params(), bc.q, bc.k, bc.v, cache.coords, cache.sets);
        INFO(describe(kCases[ci], s) << " block " << b);
        CHECK((bc.a - ref).cwiseAbs().maxCoeff() < 1e-10 * (1.0 + ref.cwiseAbs().maxCoeff()));
      }
    }
}

TEST_CASE("token model: performer and toeplitz attention equal the direct masked computation",
          "[seq][token_model]") {
  for (Setup s : {Setup::tokens_pooled, Setup::tokens_causal_lm, Setup::patches_pooled})
    for (int ci : {3, 4, 5, 6}) {
      const TokenModelConfig cfg = tiny(kCases[ci], s);
      TokenModel<double> model(cfg);
      perturb(model, 9, 0.05);
      const TokenBatch batch = make_batch(cfg, 6);
      TokenCache<double> cache;
      model.forward(batch, cache);
      for (std::size_t b = 0; b < model.layers().size(); ++b) {
        const auto& bc = cache.blocks[b];
        const auto& blk = model.layers()[b];
        // Masks rebuilt from the public exact_mask (closed form of the spectrum) for toeplitz.
        std::vector<Vec<double>> masks;
        if (cfg.attention == TokenAttention::toeplitz)
          for (Index h = 0; h < cfg.heads; ++h) {
            const auto f = model.exact_mask(static_cast<Index>(b), h, cache.grid.full());
            masks.push_back(Eigen::Map<const Vec<double>>(f.data(), static_cast<Index>(f.size())));
          }
        const Mat<double> ref = attn::kernel_attention_reference<double>(
            blk.performer.omega_t, cache.sets, cache.grid, bc.q, bc.k, bc.v, masks);
        INFO(describe(kCases[ci], s) << " block " << b);
        CHECK((bc.a - ref).cwiseAbs().maxCoeff() < 1e-10 * (1.0 + ref.cwiseAbs().maxCoeff()));
      }
    }
}

TEST_CASE("token model: causal outputs at position i ignore tokens after i", "[seq][token_model]") {
  for (int ci : {0, 1, 3, 4, 6}) {
    const TokenModelConfig cfg = tiny(kCases[ci], Setup::tokens_causal_lm);
    TokenModel<double> model(cfg);
    perturb(model, 2, 0.05);
    TokenBatch a = make_batch(cfg, 21);
    TokenBatch b = a;
    const Index s = 2, cut = 3;  // change tokens 4.. of the third sequence
    for (Index i = a.sets.begin(s) + cut + 1; i < a.sets.end(s); ++i)
      b.ids[static_cast<std::size_t>(i)] = (a.ids[static_cast<std::size_t>(i)] + 1) % 7;
    const Mat<double> ya = model.predict(a), yb = model.predict(b);
    INFO(kCases[ci].name);
    const Index r0 = a.sets.begin(s);
    // Up to and including position `cut` (and every other sequence): unchanged (up to rounding:
    // the key stabiliser is a set-wide maximum that cancels exactly only in exact arithmetic).
    CHECK((ya.topRows(r0 + cut + 1) - yb.topRows(r0 + cut + 1)).cwiseAbs().maxCoeff() < 1e-12);
    // After it: changed (the test can fail).
    CHECK((ya.bottomRows(ya.rows() - r0 - cut - 1) - yb.bottomRows(yb.rows() - r0 - cut - 1))
              .cwiseAbs()
              .maxCoeff() > 1e-6);
  }
}

TEST_CASE("token model: bidirectional outputs do see later tokens", "[seq][token_model]") {
  const TokenModelConfig cfg = tiny(kCases[0], Setup::tokens_bidir_lm);
  TokenModel<double> model(cfg);
  TokenBatch a = make_batch(cfg, 21);
  TokenBatch b = a;
  b.ids.back() = (b.ids.back() + 1) % 7;
  const Mat<double> ya = model.predict(a), yb = model.predict(b);
  const Index r0 = a.sets.begin(2);
  CHECK((ya.row(r0) - yb.row(r0)).cwiseAbs().maxCoeff() > 1e-6);
}

TEST_CASE("token model: same seed bitwise, 1 vs 2 threads bitwise, other seed differs",
          "[seq][token_model][determinism]") {
  const int saved = omp_get_max_threads();
  for (int ci : {0, 3, 4})
    for (Setup s : {Setup::tokens_causal_lm, Setup::patches_pooled}) {
      TokenModelConfig cfg = tiny(kCases[ci], s);
      cfg.width = 16;
      cfg.heads = 4;
      const TokenBatch batch = make_batch(cfg, 5, 6);
      auto run = [&](std::uint64_t seed, int threads) {
        omp_set_num_threads(threads);
        TokenModelConfig c2 = cfg;
        c2.seed = seed;
        TokenModel<float> model(c2);
        TokenCache<float> cache;
        const Mat<float> y = model.forward(batch, cache);
        Mat<float> G = Mat<float>::Ones(y.rows(), y.cols());
        model.params().zero_grad();
        model.backward(cache, G);
        std::vector<float> g(model.params().grads().begin(), model.params().grads().end());
        return std::make_pair(y, g);
      };
      const auto a = run(1, 1), b = run(1, 1), c = run(1, 2), e = run(2, 1);
      INFO(describe(kCases[ci], s));
      CHECK(a.first == b.first);
      CHECK(a.second == b.second);
      CHECK(a.first == c.first);
      CHECK(a.second == c.second);
      CHECK(a.first != e.first);
    }
  omp_set_num_threads(saved);
}

TEST_CASE("token model: flt and toeplitz models of one seed share their RPE exactly",
          "[seq][token_model]") {
  TokenModel<float> f(tiny(kCases[0], Setup::tokens_pooled));
  TokenModel<float> t(tiny(kCases[4], Setup::tokens_pooled));
  const auto grid = exact::ToeplitzGrid::sequence(9);
  for (Index b = 0; b < 2; ++b)
    for (Index h = 0; h < 2; ++h) CHECK(f.exact_mask(b, h, grid) == t.exact_mask(b, h, grid));
  CHECK(f.params().ref("block1.attn.rpe.h1.lambda").size() == 2);
  CHECK_THROWS_AS(TokenModel<float>(tiny(kCases[3], Setup::tokens_pooled)).exact_mask(0, 0, grid),
                  InvalidArgument);
  // The exact mask of a bias model is exp(beta f) with f(0) = 1 at initialisation.
  const auto m = f.exact_mask(0, 0, grid);
  CHECK(m[8] == Approx(std::exp(1.0)).epsilon(1e-6));
}

TEST_CASE("token model: model file round trip restores outputs bit for bit",
          "[seq][token_model][io]") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("flt_token_model_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (int ci : {0, 2, 3, 5})
    for (Setup s : {Setup::tokens_causal_lm, Setup::patches_pooled}) {
      TokenModelConfig cfg = tiny(kCases[ci], s);
      TokenModel<float> model(cfg);
      perturb(model, 4, 0.05);
      model.redraw_features(7);  // the file must carry the features, not draw 0
      const TokenBatch batch = make_batch(cfg, 8);
      const Mat<float> y = model.predict(batch);
      const auto path = dir / (std::string(kCases[ci].name) + ".flt");
      model.save(path, {{"task", "unit test"}, {"units", "logits"}});
      std::map<std::string, std::string> meta;
      auto loaded = TokenModel<float>::load(path, &meta);
      INFO(describe(kCases[ci], s));
      CHECK(loaded->predict(batch) == y);
      CHECK(loaded->feature_draw() == 7);
      CHECK(meta.at("task") == "unit test");
      CHECK(meta.at("units") == "logits");
      CHECK(config_to_strings(loaded->config()) == config_to_strings(cfg));
    }
  // Bad files: wrong kind, missing tensor, reserved caller key.
  TokenModel<float> model(tiny(kCases[0], Setup::tokens_pooled));
  auto file = model.to_model_file();
  file.set_metadata("model.kind", "flt-molecule-model");
  CHECK_THROWS_AS(TokenModel<float>::from_model_file(file), ModelFileError);
  io::ModelFile partial("flt-model");
  const io::ModelFile full = model.to_model_file();
  for (const auto& [k, v] : full.all_metadata()) partial.set_metadata(k, v);
  CHECK_THROWS_WITH(TokenModel<float>::from_model_file(partial), Catch::Contains("param."));
  CHECK_THROWS_AS(model.to_model_file({{"model.seed", "1"}}), InvalidArgument);
  std::filesystem::remove_all(dir);
}

TEST_CASE("token model: bad batches are rejected with the set and token named",
          "[seq][token_model]") {
  TokenModel<float> model(tiny(kCases[0], Setup::tokens_pooled));
  TokenBatch b = make_batch(model.config(), 1);
  b.ids[4] = 7;  // vocab is 7: ids 0..6
  CHECK_THROWS_WITH(model.predict(b), Catch::Contains("sequence 1") && Catch::Contains("id 7"));
  std::vector<std::vector<std::int32_t>> seqs{{1, 2}, {}};
  CHECK_THROWS_WITH(model.predict(TokenBatch::sequences(seqs)), Catch::Contains("empty"));
  TokenModel<float> img(tiny(kCases[0], Setup::patches_pooled));
  CHECK_THROWS_WITH(img.predict(TokenBatch::images(Mat<float>::Zero(2, 23))),
                    Catch::Contains("24 pixels"));
  Mat<float> px = Mat<float>::Zero(2, 24);
  px(1, 5) = std::nanf("");
  CHECK_THROWS_WITH(img.predict(TokenBatch::images(px)), Catch::Contains("image 1"));
}

TEST_CASE("token model: image patches are cut in row-major grid order", "[seq][token_model]") {
  TokenModelConfig cfg = tiny(kCases[0], Setup::patches_pooled);  // 6 x 4 pixels, 2 x 2 patches
  Mat<float> px(1, 24);
  for (Index i = 0; i < 24; ++i) px(0, i) = static_cast<float>(i);
  const Mat<double> P = image_patches<double>(cfg, px);
  REQUIRE(P.rows() == 6);
  REQUIRE(P.cols() == 4);
  // Token 3 = grid (1, 1): pixel rows 2-3, columns 2-3 -> 10, 11, 14, 15.
  CHECK(P.row(3) == (RowVec<double>(4) << 10, 11, 14, 15).finished());
  CHECK(P.row(0) == (RowVec<double>(4) << 0, 1, 4, 5).finished());
}

TEST_CASE("token model: exact local-RPE masks on 1-D and 2-D grids (E22)", "[seq][token_model]") {
  // Default radii 1, 3 and a_t = 1/2 at initialisation: f(n) = 1/2 1[|n| <= 1] + 1/2 1[|n| <= 3]
  // (2-D: the window is the square max(|dy|, |dx|) <= v_t).
  TokenModel<double> seq_model(tiny(kCases[6], Setup::tokens_pooled));
  const auto f = seq_model.exact_mask(0, 1, exact::ToeplitzGrid::sequence(6));
  REQUIRE(f.size() == 11u);
  const double expect1d[11] = {0, 0, 0.5, 0.5, 1, 1, 1, 0.5, 0.5, 0, 0};  // n = -5 .. 5
  for (int i = 0; i < 11; ++i) CHECK(f[static_cast<std::size_t>(i)] == Approx(expect1d[i]).margin(1e-12));
  TokenModel<double> img_model(tiny(kCases[6], Setup::patches_pooled));
  const auto grid = exact::ToeplitzGrid::image(3, 2);  // the model's 3 x 2 patch grid
  const auto g = img_model.exact_mask(1, 0, grid);
  REQUIRE(g.size() == 15u);  // (2*3 - 1) x (2*2 - 1)
  auto at = [&](int dy, int dx) { return g[static_cast<std::size_t>((dy + 2) * 3 + (dx + 1))]; };
  CHECK(at(0, 0) == Approx(1.0));
  CHECK(at(1, -1) == Approx(1.0));
  CHECK(at(2, 0) == Approx(0.5));
  CHECK(at(-2, 1) == Approx(0.5));
  // Layout agrees with exact::ToeplitzGrid::mask_index: token 5 = (2, 1), token 0 = (0, 0).
  CHECK(grid.mask_index(5, 0) == (2 + 2) * 3 + (1 + 1));
}

TEST_CASE("token model: the RPE learns a distance rule that the Performer without RPE cannot see",
          "[seq][token_model][training]") {
  // 64 sequences of 10 tokens: filler 3 everywhere, one 1 and one 2; label 1 when the two are
  // adjacent. Every sequence has the same bag of tokens, so the Performer without positions must
  // give every sequence the same output (chance accuracy, exactly 32/64), while FLT with the local
  // RPE (E22) separates them after a short training run.
  Rng rng(5);
  std::vector<std::vector<std::int32_t>> seqs;
  std::vector<std::int32_t> labels;
  for (int s = 0; s < 64; ++s) {
    const Index L = 10;
    std::vector<std::int32_t> q(static_cast<std::size_t>(L), 3);
    const Index i = static_cast<Index>(rng.next_u64() % L);
    Index j = 0;
    const bool adjacent = s % 2 == 0;
    if (adjacent) {
      j = i + 1 < L ? i + 1 : i - 1;
    } else {
      do j = static_cast<Index>(rng.next_u64() % L); while (std::abs(j - i) <= 1);
    }
    q[static_cast<std::size_t>(i)] = 1;
    q[static_cast<std::size_t>(j)] = 2;
    seqs.push_back(q);
    labels.push_back(adjacent ? 1 : 0);
  }
  const TokenBatch batch = TokenBatch::sequences(seqs);
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);  // small batches: OpenMP start-up on a loaded machine would dominate
  auto train = [&](TokenAttention kind, int steps) {
    TokenModelConfig c;
    c.vocab_size = 4;
    c.width = 16;
    c.heads = 2;
    c.blocks = 1;
    c.mlp_hidden = 32;
    c.head_hidden = 16;
    c.num_outputs = 2;
    c.num_features = 16;
    c.num_frequencies = 32;
    c.attention = kind;
    c.spectrum = attn::SpectrumKind::local_window;
    c.seed = 1;
    TokenModel<float> model(c);
    AdamW<float> opt(model.params().size());
    Mat<float> out;
    double loss = 0;
    for (int t = 0; t <= steps; ++t) {
      TokenCache<float> cache;
      out = model.forward(batch, cache);
      Mat<float> d = Mat<float>::Zero(out.rows(), out.cols());
      loss = cross_entropy_forward<float>(out, labels).value;
      if (t == steps) break;
      cross_entropy_backward<float>(out, labels, d);
      model.params().zero_grad();
      model.backward(cache, d);
      opt.step(model.params(), 3e-3);
    }
    int correct = 0;
    for (Index s = 0; s < 64; ++s)
      correct += (out(s, 1) > out(s, 0)) == (labels[static_cast<std::size_t>(s)] == 1);
    return std::make_tuple(out, loss, correct);
  };
  const auto [flt_out, flt_loss, flt_correct] = train(TokenAttention::flt, 200);
  CHECK(flt_correct >= 62);
  CHECK(flt_loss < 0.1);
  const auto [perf_out, perf_loss, perf_correct] = train(TokenAttention::performer, 40);
  CHECK(perf_correct == 32);
  CHECK((perf_out.rowwise() - perf_out.row(0)).cwiseAbs().maxCoeff() < 1e-5);
  CHECK(perf_loss > 0.69);
  omp_set_num_threads(saved_threads);
}

TEST_CASE("token model: FLT kronecker converges to the exact toeplitz model as R grows",
          "[seq][token_model]") {
  // Same seed -> same weights and RPE parameters. Giving the toeplitz model the FLT model's
  // Performer frequencies (through a model file) leaves the RPE estimate psiQ_i . psiK_j ~ f(i - j)
  // (E7) as the only difference, whose error shrinks like 1 / sqrt(R). Compared: the first
  // block's attention output (identical inputs in both models).
  auto error_at = [](Index R) {
    TokenModelConfig c = tiny(kCases[1], Setup::tokens_pooled);
    c.num_frequencies = R;
    c.num_features = 8;
    TokenModel<double> flt_model(c);
    const io::ModelFile flt_file = flt_model.to_model_file();
    io::ModelFile toe_file("flt-model");
    for (const auto& [k, v] : flt_file.all_metadata())
      if (k != "model.attention") toe_file.set_metadata(k, v);
    toe_file.set_metadata("model.attention", "toeplitz");
    for (const auto& [name, t] : flt_file.tensors())
      if (name.rfind("param.", 0) == 0 || name.find(".omega") != std::string::npos)
        toe_file.set_tensor(name, t);
    auto toe_model = TokenModel<double>::from_model_file(toe_file);
    const TokenBatch batch = make_batch(c, 12);
    TokenCache<double> ca, cb;
    flt_model.forward(batch, ca);
    toe_model->forward(batch, cb);
    REQUIRE(flt_model.attention_stats().clamped_denominators == 0);
    // First block's attention output: same inputs in both models, so only the RPE differs.
    const Mat<double>& a = ca.blocks[0].a;
    const Mat<double>& b = cb.blocks[0].a;
    return (a - b).norm() / b.norm();
  };
  // Measured: R = 8: 0.18, 64: 0.11, 512: 0.047, 4096: 0.017, 32768: 0.0049 (no error floor).
  const double coarse = error_at(8), fine = error_at(2048);
  INFO("relative error R = 8: " << coarse << ", R = 2048: " << fine);
  CHECK(fine < coarse / 5);
  CHECK(fine < 0.05);
}

TEST_CASE("token model: bidirectional pooled models cannot tell a sequence from its reverse",
          "[seq][token_model]") {
  // Documented limitation (docs/token-model.md): every RPE here is even, f(n) = f(-n) (cosine
  // spectra, symmetric windows), and there is no absolute position, so reversing a sequence (for
  // images: reflecting the patch grid through its centre, i.e. reversing the token order) leaves
  // the exact-mask models' pooled outputs unchanged; FLT is invariant in expectation only.
  for (int ci : {3, 4, 6}) {
    const TokenModelConfig cfg = tiny(kCases[ci], Setup::tokens_pooled);
    TokenModel<double> model(cfg);
    perturb(model, 3, 0.05);
    const TokenBatch a = make_batch(cfg, 31);
    TokenBatch b = a;
    for (Index s = 0; s < a.sets.num_sets(); ++s)
      std::reverse(b.ids.begin() + a.sets.begin(s), b.ids.begin() + a.sets.end(s));
    REQUIRE(a.ids != b.ids);
    INFO(kCases[ci].name);
    CHECK((model.predict(a) - model.predict(b)).cwiseAbs().maxCoeff() < 1e-12);
  }
  // Causal models do see the order (same pooled head, only causal switched on).
  TokenModelConfig cfg = tiny(kCases[4], Setup::tokens_pooled);
  cfg.causal = true;
  TokenModel<double> model(cfg);
  const TokenBatch a = make_batch(cfg, 31);
  TokenBatch b = a;
  std::reverse(b.ids.begin() + a.sets.begin(2), b.ids.begin() + a.sets.end(2));
  const Mat<double> ya = model.predict(a), yb = model.predict(b);
  CHECK((ya.row(2) - yb.row(2)).cwiseAbs().maxCoeff() > 1e-6);
  CHECK((ya.topRows(2) - yb.topRows(2)).cwiseAbs().maxCoeff() == 0.0);
}
