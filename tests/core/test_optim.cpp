// AdamW, schedules, clipping and EMA against hand-computed values, and bit-exact resume from
// exported state.
#include "core/optim.hpp"

#include "core/error.hpp"
#include "core/layers.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

using namespace flt;

TEST_CASE("AdamW matches a hand computation for two steps, with and without weight decay", "[core][optim]") {
  // lr = 0.1, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.1; both elements start at
  // p = 1 and see g = 0.5 then g = -0.25. Element 0 decays, element 1 is masked out (a "bias").
  //
  // Step 1 (t = 1): decay p = 1 (1 - 0.1 * 0.1) = 0.99
  //   m = 0.1 * 0.5 = 0.05;  v = 0.001 * 0.25 = 0.00025
  //   m^ = m / (1 - 0.9) = 0.5;  sqrt(v / (1 - 0.999)) = sqrt(0.25) = 0.5
  //   p = 0.99 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.99 - 0.099999998 = 0.890000002     (no decay: 0.900000002)
  // Step 2 (t = 2): decay p = 0.890000002 * 0.99 = 0.88110000198
  //   m = 0.9 * 0.05 + 0.1 * (-0.25) = 0.02;  v = 0.999 * 0.00025 + 0.001 * 0.0625 = 0.00031225
  //   m^ = 0.02 / (1 - 0.81) = 0.105263157894737;  sqrt(v / (1 - 0.998001)) = 0.395225381...
  //   p = 0.88110000198 - 0.1 * 0.105263157894737 / (0.395225381 + 1e-8) = 0.854466298687846
  //   (no decay: 0.900000002 - 0.026633703300... = 0.873366298707846)
  AdamWConfig config;
  config.weight_decay = 0.1;
  AdamW<double> opt(2, config);
  opt.set_decay_mask({1, 0});
  std::vector<double> p = {1.0, 1.0};
  std::vector<double> g = {0.5, 0.5};
  opt.step(p, g, 0.1);
  CHECK(p[0] == Approx(0.890000002).epsilon(1e-14));
  CHECK(p[1] == Approx(0.900000002).epsilon(1e-14));
  CHECK(opt.state().m[0] == Approx(0.05).epsilon(1e-15));
  CHECK(opt.state().v[0] == Approx(0.00025).epsilon(1e-15));
  g = {-0.25, -0.25};
  opt.step(p, g, 0.1);
  CHECK(p[0] == Approx(0.8544662986878463).epsilon(1e-14));
  CHECK(p[1] == Approx(0.8733662987078463).epsilon(1e-14));
  CHECK(opt.state().step == 2);
  CHECK(opt.state().v[1] == Approx(0.00031225).epsilon(1e-14));
  REQUIRE_THROWS_AS(opt.set_decay_mask({1}), InvalidArgument);
  std::vector<double> short_p = {1.0};
  REQUIRE_THROWS_AS(opt.step(short_p, g, 0.1), InvalidArgument);
}

TEST_CASE("AdamW resumes bit-exactly from exported state", "[core][optim]") {
  const std::size_t n = 1000;
  std::vector<float> p(n), g(n);
  for (std::size_t i = 0; i < n; ++i) p[i] = std::sin(0.1f * static_cast<float>(i));
  auto grad_at = [&](int step) {
    for (std::size_t i = 0; i < n; ++i)
      g[i] = std::cos(0.37f * static_cast<float>(i) + static_cast<float>(step)) + 0.01f * p[i];
  };
  AdamW<float> a(n);
  for (int s = 0; s < 3; ++s) {
    grad_at(s);
    a.step(p, g, 1e-2);
  }
  const AdamWState<float> saved = a.state();  // what a checkpoint stores
  const std::vector<float> saved_p = p;
  for (int s = 3; s < 6; ++s) {
    grad_at(s);
    a.step(p, g, 1e-2);
  }
  AdamW<float> b(n);
  b.load_state(saved);
  std::vector<float> q = saved_p;
  std::swap(p, q);  // grad_at reads p
  for (int s = 3; s < 6; ++s) {
    grad_at(s);
    b.step(p, g, 1e-2);
  }
  REQUIRE(p == q);
  REQUIRE(b.state().m == a.state().m);
  REQUIRE(b.state().v == a.state().v);
  AdamWState<float> bad = saved;
  bad.m.pop_back();
  REQUIRE_THROWS_AS(b.load_state(bad), InvalidArgument);
}

TEST_CASE("Weight-decay masks from parameter shapes and names", "[core][optim]") {
  ParameterStore<float> store;
  const auto fc = Linear<float>::create(store, "fc", 3, 2);    // weight 3x2 (6), bias 2x1 (2)
  const auto ln = LayerNorm<float>::create(store, "ln", 2);    // weight 2x1, bias 2x1
  const auto emb = Embedding<float>::create(store, "emb", 4, 2);  // 4x2 (8)
  store.allocate();
  const auto mask = decay_mask_matrices_only(store);
  REQUIRE(mask.size() == 20);
  for (std::size_t i = 0; i < 6; ++i) CHECK(mask[fc.weight.offset + i] == 1);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(mask[fc.bias.offset + i] == 0);
    CHECK(mask[ln.weight.offset + i] == 0);
    CHECK(mask[ln.bias.offset + i] == 0);
  }
  for (std::size_t i = 0; i < 8; ++i) CHECK(mask[emb.weight.offset + i] == 1);
  const auto by_name = decay_mask_by(store, [](const ParamInfo& info) {
    return info.name.ends_with(".weight") && !info.name.starts_with("ln.");
  });
  CHECK(by_name[fc.weight.offset] == 1);
  CHECK(by_name[ln.weight.offset] == 0);
  CHECK(by_name[emb.weight.offset + 7] == 1);
}

TEST_CASE("Warm-up then cosine schedule takes the hand-computed values", "[core][optim]") {
  // base 1, warm-up 4, total 12, floor 0.1.
  //   s = 0..3: (s + 1)/4 = 0.25, 0.5, 0.75, 1
  //   s = 4: p = 0 -> 1;  s = 6: p = 2/8 -> 0.1 + 0.9 (1 + cos(pi/4))/2 = 0.868198051533946
  //   s = 8: p = 1/2 -> 0.1 + 0.9/2 = 0.55;  s = 12: p = 1 -> 0.1;  s = 100: clamped -> 0.1
  const WarmupCosineSchedule s{1.0, 4, 12, 0.1};
  s.validate();
  CHECK(s.lr_at(0) == Approx(0.25).epsilon(1e-15));
  CHECK(s.lr_at(1) == Approx(0.5).epsilon(1e-15));
  CHECK(s.lr_at(3) == Approx(1.0).epsilon(1e-15));
  CHECK(s.lr_at(4) == Approx(1.0).epsilon(1e-15));
  CHECK(s.lr_at(6) == Approx(0.8681980515339464).epsilon(1e-14));
  CHECK(s.lr_at(8) == Approx(0.55).epsilon(1e-14));
  CHECK(s.lr_at(12) == Approx(0.1).epsilon(1e-14));
  CHECK(s.lr_at(100) == Approx(0.1).epsilon(1e-14));
  for (std::int64_t k = 4; k < 12; ++k) CHECK(s.lr_at(k + 1) < s.lr_at(k));  // decays monotonically
  const WarmupCosineSchedule no_warmup{2.0, 0, 10, 0.0};
  CHECK(no_warmup.lr_at(0) == Approx(2.0));
  CHECK(no_warmup.lr_at(5) == Approx(1.0));
  REQUIRE_THROWS_AS((WarmupCosineSchedule{1.0, 0, 10, 2.0}.validate()), ConfigError);
}

TEST_CASE("Reduce-on-plateau follows torch's algorithm step by step", "[core][optim]") {
  // mode min, factor 0.5, patience 2, threshold 0.1 (rel), cooldown 1, min_lr 0.2, lr0 = 1.
  // epoch metric  better? (a < best*0.9)   bad  cooldown  lr
  //   1    10     yes (best inf -> 10)      0     0       1
  //   2    9.5    no (9.5 >= 9)             1     0       1
  //   3    9.2    no                        2     0       1
  //   4    9.1    no -> bad 3 > 2: reduce   0     1       0.5
  //   5    9.0    no -> bad 1, cooldown     0     0       0.5
  //   6    9.0    no                        1     0       0.5
  //   7    8.0    yes (8 < 9): best 8       0     0       0.5
  //   8..9 8.0    no                        1, 2  0       0.5
  //  10    8.0    bad 3: reduce             0     1       0.25
  //  11    8.0    cooldown                  0     0       0.25
  //  12,13 8.0                              1, 2  0       0.25
  //  14    8.0    reduce: max(0.125, 0.2)   0     1       0.2
  //  15..18 8.0   at 18 bad 3, but 0.2 - max(0.1, 0.2) = 0 <= eps: unchanged, returns false
  PlateauConfig c;
  c.factor = 0.5;
  c.patience = 2;
  c.threshold = 0.1;
  c.cooldown = 1;
  c.min_lr = 0.2;
  ReduceLROnPlateau sched(1.0, c);
  const std::vector<double> metric = {10, 9.5, 9.2, 9.1, 9.0, 9.0, 8.0, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8};
  const std::vector<double> lr = {1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2,
                                  0.2, 0.2, 0.2, 0.2};
  const std::vector<int> reduced_at = {4, 10, 14};
  PlateauState mid;
  for (std::size_t e = 0; e < metric.size(); ++e) {
    const bool reduced = sched.step(metric[e]);
    INFO("epoch " << e + 1);
    CHECK(sched.lr() == Approx(lr[e]).epsilon(1e-15));
    CHECK(reduced == (std::find(reduced_at.begin(), reduced_at.end(), static_cast<int>(e + 1)) !=
                      reduced_at.end()));
    if (e + 1 == 7) mid = sched.state();
  }
  CHECK(sched.state().best == 8.0);
  CHECK(sched.state().last_epoch == 18);
  // Resume from the state saved after epoch 7: identical trajectory.
  ReduceLROnPlateau resumed(123.0, c);
  resumed.load_state(mid);
  for (std::size_t e = 7; e < metric.size(); ++e) resumed.step(metric[e]);
  CHECK(resumed.state().lr == sched.state().lr);
  CHECK(resumed.state().num_bad_epochs == sched.state().num_bad_epochs);
  CHECK(resumed.state().cooldown_counter == sched.state().cooldown_counter);
  // A NaN metric is never an improvement; mode max and abs threshold.
  PlateauConfig cm;
  cm.mode = PlateauMode::max;
  cm.threshold_mode = ThresholdMode::abs;
  cm.threshold = 0.5;
  cm.patience = 0;
  ReduceLROnPlateau up(1.0, cm);
  up.step(1.0);                                                  // best 1
  CHECK(!up.step(1.6));                                          // 1.6 > 1.5: better
  CHECK(up.step(2.0));                                           // 2.0 <= 2.1: bad 1 > 0 -> 0.1
  CHECK(up.lr() == Approx(0.1));
  CHECK(up.step(std::numeric_limits<double>::quiet_NaN()));     // NaN: bad -> 0.01
  REQUIRE_THROWS_AS(ReduceLROnPlateau(1.0, PlateauConfig{PlateauMode::min, 1.5}), ConfigError);
}

TEST_CASE("Gradient clipping by global norm", "[core][optim]") {
  // g = (3, 4): norm 5. max_norm 1: g <- g * 1 / (5 + 1e-6) = (0.599999880000024, 0.799999840000032).
  std::vector<double> g = {3.0, 4.0};
  CHECK(clip_grad_norm<double>(g, 1.0) == 5.0);
  CHECK(g[0] == Approx(0.599999880000024).epsilon(1e-15));
  CHECK(g[1] == Approx(0.799999840000032).epsilon(1e-15));
  std::vector<double> h = {3.0, 4.0};
  CHECK(clip_grad_norm<double>(h, 10.0) == 5.0);  // below the threshold: untouched
  CHECK(h == std::vector<double>{3.0, 4.0});
  std::vector<float> bad = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  CHECK(std::isnan(clip_grad_norm<float>(bad, 1.0)));
  CHECK(bad[0] == 1.0f);  // non-finite norm: left for the caller to handle
  REQUIRE_THROWS_AS(clip_grad_norm<double>(h, 0.0), InvalidArgument);
  // Many chunks: the norm of 100000 ones is sqrt(1e5), accumulated in double.
  ParameterStore<float> store;
  store.add("w", 100000);
  store.allocate();
  for (float& v : store.grads()) v = 1.0f;
  CHECK(global_grad_norm(store) == Approx(std::sqrt(1e5)).epsilon(1e-15));
  CHECK(clip_grad_norm(store, 1.0) == Approx(std::sqrt(1e5)).epsilon(1e-15));
  CHECK(global_grad_norm(store) == Approx(1.0).epsilon(1e-6));
}

TEST_CASE("EMA of weights: values, swap for evaluation, warm-up and resume", "[core][optim]") {
  // decay 0.5: shadow starts (0, 2); update with (2, 2) -> (1, 2); with (4, 0) -> (2.5, 1).
  std::vector<double> p = {0.0, 2.0};
  ExponentialMovingAverage<double> ema(p, 0.5);
  p = {2.0, 2.0};
  ema.update(p);
  CHECK(ema.state().shadow == std::vector<double>{1.0, 2.0});
  p = {4.0, 0.0};
  ema.update(p);
  CHECK(ema.state().shadow == std::vector<double>{2.5, 1.0});
  const EmaState<double> saved = ema.state();
  ema.swap(p);  // evaluate with the averaged weights
  CHECK(p == std::vector<double>{2.5, 1.0});
  CHECK(ema.swapped());
  REQUIRE_THROWS_AS(ema.update(p), InvalidArgument);
  ema.swap(p);  // back to the live weights
  CHECK(p == std::vector<double>{4.0, 0.0});
  CHECK(!ema.swapped());
  // Resume: a fresh EMA loaded with the saved state continues identically.
  ExponentialMovingAverage<double> resumed(std::vector<double>{9.0, 9.0}, 0.5);
  resumed.load_state(saved);
  p = {0.5, 1.0};
  ema.update(p);
  resumed.update(p);
  CHECK(resumed.state().shadow == ema.state().shadow);  // (1.5, 1)
  CHECK(ema.state().shadow == std::vector<double>{1.5, 1.0});
  // Warm-up: d = min(decay, (1 + n)/(10 + n)): n = 0 -> 0.1, n = 1 -> 2/11.
  std::vector<double> w = {0.0};
  ExponentialMovingAverage<double> warm(w, 0.99, true);
  CHECK(warm.current_decay() == Approx(0.1));
  w = {1.0};
  warm.update(w);  // 0.1 * 0 + 0.9 * 1
  CHECK(warm.state().shadow[0] == Approx(0.9));
  CHECK(warm.current_decay() == Approx(2.0 / 11.0));
  REQUIRE_THROWS_AS(ExponentialMovingAverage<double>(w, 1.0), ConfigError);
}
