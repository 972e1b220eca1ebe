// The training engine on a least-squares problem over a flat buffer of 3 weights: resume gives
// the parameters of an uninterrupted run, early stopping, the plateau schedule, the time budget,
// the EMA weights as the evaluated ones, and the refusals of --resume.
#include "../common/scratch_dir.hpp"
#include "core/error.hpp"
#include "core/optim.hpp"
#include "train/engine.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <optional>

using namespace flt;
using namespace flt::train;
using flt::test_support::ScratchDir;

namespace {

// y = a . x + noise; loss: the batch mean of (w . x - y)^2. Validation: the same on held-out
// points, or a scripted sequence of selection metrics.
class LeastSquares final : public Trainable {
 public:
  explicit LeastSquares(std::size_t n = 40) {
    store_.add("w", 3);
    store_.allocate();
    Rng rng(7);
    const double a[3] = {1.5, -2.0, 0.5};
    for (std::size_t i = 0; i < n + 20; ++i) {
      std::array<double, 3> x{rng.normal(), rng.normal(), rng.normal()};
      xs_.push_back(x);
      ys_.push_back(a[0] * x[0] + a[1] * x[1] + a[2] * x[2] + 0.1 * rng.normal());
    }
    n_ = n;
  }
  ParameterStore<float>& parameters() override { return store_; }
  std::size_t train_size() const override { return n_; }
  StepResult train_batch(std::span<const std::size_t> positions, Rng&) override {
    double loss = 0;
    auto w = store_.values();
    auto g = store_.grads();
    for (std::size_t p : positions) {
      const double r = residual(w, p);
      loss += r * r;
      for (int k = 0; k < 3; ++k) g[k] += static_cast<float>(2 * r * xs_[p][k] / static_cast<double>(positions.size()));
    }
    return {loss / static_cast<double>(positions.size()), static_cast<double>(positions.size())};
  }
  Validation validate() override {
    const auto w = store_.values();
    validated.emplace_back(w.begin(), w.end());
    Validation v;
    double loss = 0;
    for (std::size_t p = n_; p < xs_.size(); ++p) loss += residual(w, p) * residual(w, p);
    v.loss = loss / static_cast<double>(xs_.size() - n_);
    v.selection = script.empty() ? v.loss : script[std::min(validated.size(), script.size()) - 1];
    v.columns = {v.loss};
    return v;
  }
  std::vector<std::string> curve_columns() const override { return {"val_mse"}; }
  std::string data_checksum() const override { return checksum; }
  std::string validation_checksum() const override { return validation; }

  std::vector<std::vector<float>> validated;  // the weights of each validate()
  std::vector<double> script;                 // selection metrics per epoch (empty: the loss)
  std::string checksum = "fnv1a64-mol:0123456789abcdef";
  std::string validation = "fnv1a64-mol:00000000000000aa";

 private:
  double residual(std::span<const float> w, std::size_t p) const {
    return w[0] * xs_[p][0] + w[1] * xs_[p][1] + w[2] * xs_[p][2] - ys_[p];
  }
  ParameterStore<float> store_;
  std::vector<std::array<double, 3>> xs_;
  std::vector<double> ys_;
  std::size_t n_ = 0;
};

EngineConfig base_config(const std::filesystem::path& dir) {
  EngineConfig c;
  c.dir = dir;
  c.epochs = 6;
  c.batch_size = 8;
  c.lr = 0.05;
  c.min_lr = 1e-4;
  c.clip_norm = 1.0;
  c.seed = 3;
  c.config_fingerprint = "train.epochs = 6\n";
  return c;
}

std::vector<float> weights(LeastSquares& t) {
  const auto w = t.parameters().values();
  return {w.begin(), w.end()};
}

}  // namespace

TEST_CASE("engine: a resumed run reaches the parameters of an uninterrupted one", "[train][engine]") {
  ScratchDir scratch("engine-resume");
  for (const Schedule schedule : {Schedule::cosine, Schedule::plateau}) {
    EngineConfig c = base_config(scratch / "whole");
    c.schedule = schedule;
    c.plateau_patience = 0;
    c.ema_decay = 0.8;
    std::filesystem::remove_all(c.dir);
    std::filesystem::create_directories(c.dir);
    LeastSquares whole;
    const EngineResult full = Engine(c).run(whole);
    CHECK(full.epochs_run == 6);
    CHECK(full.steps == 30);

    c.dir = scratch / "parts";
    std::filesystem::remove_all(c.dir);
    std::filesystem::create_directories(c.dir);
    c.stop_after_epoch = 2;
    LeastSquares first;
    const EngineResult stopped = Engine(c).run(first);
    CHECK(stopped.stopped_by_hook);
    CHECK(stopped.epochs_run == 2);
    c.stop_after_epoch = 0;
    c.resume = true;
    LeastSquares second;  // a fresh process: initial weights again
    const EngineResult resumed = Engine(c).run(second);
    CHECK(resumed.epochs_run == 6);
    CHECK(resumed.best_epoch == full.best_epoch);
    CHECK(weights(second) == weights(whole));
    // The validated weights of epochs 3..6 are the uninterrupted run's, bit for bit.
    REQUIRE(second.validated.size() == 4);
    for (std::size_t e = 0; e < 4; ++e) CHECK(second.validated[e] == whole.validated[e + 2]);
    REQUIRE(resumed.curve.size() == 6);
    for (std::size_t e = 0; e < 6; ++e) CHECK(resumed.curve[e].lr == full.curve[e].lr);
  }
}

TEST_CASE("engine: --resume refuses another configuration or other data", "[train][engine]") {
  ScratchDir scratch("engine-refuse");
  EngineConfig c = base_config(scratch.path());
  c.stop_after_epoch = 1;
  LeastSquares t;
  Engine(c).run(t);
  c.stop_after_epoch = 0;
  c.resume = true;
  {
    EngineConfig other = c;
    other.config_fingerprint = "train.epochs = 7\n";
    LeastSquares u;
    CHECK_THROWS_WITH(Engine(other).run(u), Catch::Contains("train.epochs = '7' (the run has '6')"));
  }
  {
    LeastSquares u;
    u.checksum = "fnv1a64-mol:fedcba9876543210";
    CHECK_THROWS_WITH(Engine(c).run(u), Catch::Contains("different training data"));
  }
  {
    // Other validation data: the best epoch would compare metrics of other examples.
    LeastSquares u;
    u.validation = "fnv1a64-mol:00000000000000bb";
    CHECK_THROWS_WITH(Engine(c).run(u), Catch::Contains("different validation data"));
  }
  {
    // A checksum of an earlier kind (the tasks' crc32 before the common engine): a clear error.
    LeastSquares u;
    u.checksum = "crc32:01234567";
    CHECK_THROWS_AS(Engine(c).run(u), ConfigError);
  }
  LeastSquares same;
  CHECK(Engine(c).run(same).epochs_run == 6);
}

TEST_CASE("engine: early stopping after `patience` epochs without improvement", "[train][engine]") {
  ScratchDir scratch("engine-patience");
  EngineConfig c = base_config(scratch.path());
  c.epochs = 20;
  c.patience = 3;
  LeastSquares t;
  t.script = {5, 4, 3, 3.5, 3, 4, 2.9, 3.0};  // best at epoch 3 (an equal metric is no improvement)
  const EngineResult r = Engine(c).run(t);
  CHECK(r.stopped_early);
  CHECK(r.epochs_run == 6);
  CHECK(r.best_epoch == 3);
  CHECK(weights(t) == t.validated[2]);  // the best epoch's weights
}

TEST_CASE("engine: the plateau schedule lowers the rate when the metric stalls", "[train][engine]") {
  ScratchDir scratch("engine-plateau");
  EngineConfig c = base_config(scratch.path());
  c.schedule = Schedule::plateau;
  c.plateau_patience = 1;
  c.plateau_factor = 0.5;
  LeastSquares t;
  t.script = {1, 1, 1, 1, 1, 1};
  const EngineResult r = Engine(c).run(t);
  REQUIRE(r.curve.size() == 6);
  // Epoch 1 sets the best; epochs 2 and 3 are bad: more than patience 1 after epoch 3.
  CHECK(r.curve[0].lr == 0.05);
  CHECK(r.curve[2].lr == 0.05);
  CHECK(r.curve[3].lr == Approx(0.025));
  CHECK(r.curve[5].lr < r.curve[3].lr);
}

TEST_CASE("engine: the time budget ends the run after a step", "[train][engine]") {
  ScratchDir scratch("engine-budget");
  EngineConfig c = base_config(scratch.path());
  c.time_budget_minutes = 1e-12;
  LeastSquares t;
  const EngineResult r = Engine(c).run(t);
  CHECK(r.stopped_by_budget);
  CHECK(r.steps == 1);
  CHECK(r.epochs_run == 1);
  CHECK(r.planned_steps == 30);
  CHECK(t.validated.size() == 1);  // the partial epoch is validated
  // A resumed run that already hit its budget trains no further.
  c.resume = true;
  c.time_budget_minutes = 1e-12;
  LeastSquares u;
  CHECK(Engine(c).run(u).steps == 1);
}

TEST_CASE("engine: with EMA the averaged weights are evaluated and returned", "[train][engine]") {
  ScratchDir scratch("engine-ema");
  EngineConfig c = base_config(scratch.path());
  c.ema_decay = 0.9;
  LeastSquares t;
  // The average of the live weights after every step, kept beside the engine.
  std::optional<ExponentialMovingAverage<float>> shadow;
  shadow.emplace(t.parameters().values(), 0.9, true);
  std::vector<std::vector<float>> expected, live;
  std::size_t steps = 0;
  c.on_step = [&] {
    shadow->update(t.parameters().values());
    if (++steps % 5 == 0) {  // 5 batches per epoch
      expected.push_back(shadow->state().shadow);
      const auto w = t.parameters().values();
      live.emplace_back(w.begin(), w.end());
    }
  };
  const EngineResult r = Engine(c).run(t);
  CHECK(r.ema);
  REQUIRE(t.validated.size() == 6);
  REQUIRE(expected.size() == 6);
  for (std::size_t e = 0; e < 6; ++e) CHECK(t.validated[e] == expected[e]);
  CHECK(weights(t) == expected[static_cast<std::size_t>(r.best_epoch - 1)]);
  CHECK(t.validated.back() != live.back());  // not the live weights
}
