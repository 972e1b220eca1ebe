#include "core/random.hpp"
#include "../common/scratch_dir.hpp"
#include "io/atomic_file.hpp"
#include "train/checkpoint.hpp"
#include "train/run_dir.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <optional>

using namespace flt::io;
using namespace flt::train;
namespace fs = std::filesystem;

TEST_CASE("run directories are never silently reused", "[train][run_dir]") {
  flt::test_support::ScratchDir tmp("rd");
  const fs::path run = tmp / "runs" / "a";
  CHECK(prepare_run_directory(run, RunMode::fresh).path() == run);
  CHECK(is_run_directory(run));
  // A run that stopped before writing anything (bad input) leaves only the marker: the same
  // command can be run again without --overwrite.
  CHECK_NOTHROW(prepare_run_directory(run, RunMode::fresh));
  write_file_atomic(run / "model.flt", "x");
  CHECK_THROWS_WITH(prepare_run_directory(run, RunMode::fresh), Catch::Contains("--overwrite") && Catch::Contains("--resume"));
  CHECK_NOTHROW(prepare_run_directory(run, RunMode::resume));
  CHECK(fs::exists(run / "model.flt"));
  prepare_run_directory(run, RunMode::overwrite);
  CHECK_FALSE(fs::exists(run / "model.flt"));
  CHECK(is_run_directory(run));
  // A foreign non-empty directory is refused even with overwrite; an empty one is adopted.
  const fs::path foreign = tmp / "home";
  fs::create_directories(foreign);
  write_file_atomic(foreign / "thesis.tex", "precious");
  CHECK_THROWS_WITH(prepare_run_directory(foreign, RunMode::overwrite), Catch::Contains("refusing to delete"));
  CHECK(fs::exists(foreign / "thesis.tex"));
  CHECK_THROWS_AS(prepare_run_directory(foreign, RunMode::resume), flt::ConfigError);
  CHECK_THROWS_AS(prepare_run_directory(tmp / "missing", RunMode::resume), flt::ConfigError);
  fs::create_directories(tmp / "empty");
  CHECK_NOTHROW(prepare_run_directory(tmp / "empty", RunMode::fresh));
  CHECK_THROWS_AS(prepare_run_directory(foreign / "thesis.tex", RunMode::fresh), flt::ConfigError);
  // Numbered new directories.
  CHECK(new_run_directory(tmp / "auto").filename() == "run-001");
  CHECK(new_run_directory(tmp / "auto").filename() == "run-002");
  CHECK(new_run_directory(tmp / "auto", "exp").filename() == "exp-001");
}

TEST_CASE("a run directory in use by another run is neither emptied nor resumed", "[train][run_dir]") {
  flt::test_support::ScratchDir tmp("rdlock");
  const fs::path run = tmp / "run";
  std::optional<RunDirectoryLock> first = prepare_run_directory(run, RunMode::fresh);
  REQUIRE(first->locked());
  write_file_atomic(run / "model.flt", "the first run's model");
  // flock locks belong to an open file description: a second open in this process conflicts
  // exactly as another process's would.
  for (RunMode mode : {RunMode::overwrite, RunMode::resume}) {
    CHECK_THROWS_WITH(check_run_directory(run, mode), Catch::Contains("another flt run is using"));
    CHECK_THROWS_WITH(prepare_run_directory(run, mode), Catch::Contains("another flt run is using"));
  }
  CHECK_THROWS_AS(RunDirectoryLock(run), flt::ConfigError);
  CHECK(fs::exists(run / "model.flt"));
  // Released with its holder (moved first: the moved-from object releases nothing).
  RunDirectoryLock moved = std::move(*first);
  first.reset();
  CHECK_THROWS_AS(prepare_run_directory(run, RunMode::resume), flt::ConfigError);
  moved = RunDirectoryLock();
  CHECK_NOTHROW(check_run_directory(run, RunMode::overwrite));
  const RunDirectoryLock second = prepare_run_directory(run, RunMode::overwrite);
  CHECK(second.locked());
  CHECK_FALSE(fs::exists(run / "model.flt"));
}

TEST_CASE("checkpoint round trip is bit-exact, including RNG state", "[train][checkpoint]") {
  flt::test_support::ScratchDir tmp("ck");
  Checkpoint c;
  c.epoch = 3;
  c.step = 1234;
  c.data_order = {5, 2, 9, 0};
  const std::vector<float> params = {1.f, -0.f, std::nextafter(1.f, 2.f), 1e-40f};
  c.set_array<float>("params", params);
  c.set_array<double>("adam.m", std::vector<double>{1e-300, -2});
  c.set_scalar("lr", 3.0e-4);
  c.set_integer("bad_epochs", 2);
  c.set_text("config", "[train]\nlr = 3e-4\n");
  flt::Rng rng(99);
  (void)rng.normal();  // leaves a cached second normal: that must survive too
  c.set_rng("shuffle", rng);
  write_checkpoint(tmp / "c.flt", c);

  const Checkpoint r = read_checkpoint(tmp / "c.flt");
  CHECK(r.epoch == 3);
  CHECK(r.step == 1234);
  CHECK(r.data_order == c.data_order);
  std::vector<float> p(4);
  r.get_array<float>("params", p);
  CHECK(std::memcmp(p.data(), params.data(), sizeof(float) * 4) == 0);
  CHECK(r.array<double>("adam.m")[0] == 1e-300);
  CHECK(r.scalar("lr") == 3.0e-4);
  CHECK(r.integer("bad_epochs") == 2);
  CHECK(r.text("config") == "[train]\nlr = 3e-4\n");
  flt::Rng restored(0);
  r.get_rng("shuffle", restored);
  for (int i = 0; i < 5; ++i) {
    CHECK(restored.normal() == rng.normal());
    CHECK(restored.next_u64() == rng.next_u64());
  }
  // Wrong size, type, name: clear errors naming the checkpoint.
  std::vector<float> wrong(5);
  CHECK_THROWS_WITH(r.get_array<float>("params", wrong), Catch::Contains("c.flt") && Catch::Contains("expected [5]"));
  std::vector<double> as_double(4);
  CHECK_THROWS_WITH(r.get_array<double>("params", as_double), Catch::Contains("expected F64"));
  CHECK_THROWS_WITH(r.scalar("nope"), Catch::Contains("missing tensor 'scalar/nope'"));
  // Malformed bookkeeping tensors.
  ModelFile bad = c.to_model_file();
  bad.set_tensor("data_order", Tensor::scalar(std::int64_t{1}));
  CHECK_THROWS_WITH(Checkpoint::from_model_file(bad), Catch::Contains("data_order must be a vector"));
  bad = c.to_model_file();
  bad.set_tensor("epoch", Tensor::scalar(-1.0));
  CHECK_THROWS_WITH(Checkpoint::from_model_file(bad), Catch::Contains("'epoch' has dtype F64, expected I64"));
  bad = c.to_model_file();
  bad.set_tensor("rng/shuffle", Tensor::vector(std::vector<std::int64_t>{1, 2, 3, 4, 5, 7}));
  flt::Rng scratch;
  CHECK_THROWS_WITH(Checkpoint::from_model_file(bad).get_rng("shuffle", scratch), Catch::Contains("malformed generator state"));
  bad.set_tensor("rng/shuffle", Tensor::vector(std::vector<std::int64_t>{0, 0, 0, 0, 5, 0}));
  CHECK_THROWS_WITH(Checkpoint::from_model_file(bad).get_rng("shuffle", scratch), Catch::Contains("malformed generator state"));
  // A model file is not a checkpoint.
  write_model_file(tmp / "m.flt", ModelFile());
  CHECK_THROWS_AS(read_checkpoint(tmp / "m.flt"), flt::ModelFileError);
}

namespace {

// A small but real training loop (linear regression, SGD with momentum in float, shuffled
// mini-batches, noisy targets from the RNG, a step-decay schedule) whose full state is
// checkpointed after every epoch. Used to check that resuming reproduces the uninterrupted run.
struct ToyTrainer {
  std::vector<float> x, y;  // 64 samples, 3 features
  std::vector<float> w = std::vector<float>(4, 0.f), velocity = std::vector<float>(4, 0.f);
  double lr = 0.05;
  flt::Rng rng{2026};
  std::int64_t epoch = 0, step = 0;
  std::vector<std::int64_t> order;

  ToyTrainer() {
    flt::Rng data(1);
    for (int i = 0; i < 64; ++i) {
      float t = 0.5f;
      for (int k = 0; k < 3; ++k) {
        const auto v = static_cast<float>(data.normal());
        x.push_back(v);
        t += static_cast<float>(k + 1) * v;
      }
      y.push_back(t);
    }
    order.resize(64);
    std::iota(order.begin(), order.end(), 0);
  }

  void run_epoch() {
    rng.shuffle(order);
    for (std::size_t b = 0; b < order.size(); b += 8) {
      std::vector<float> g(4, 0.f);
      for (std::size_t k = b; k < b + 8; ++k) {
        const auto i = static_cast<std::size_t>(order[k]);
        float pred = w[3];
        for (int j = 0; j < 3; ++j) pred += w[static_cast<std::size_t>(j)] * x[3 * i + static_cast<std::size_t>(j)];
        const float err = pred - y[i] + 0.01f * static_cast<float>(rng.normal());  // noisy labels
        for (int j = 0; j < 3; ++j) g[static_cast<std::size_t>(j)] += err * x[3 * i + static_cast<std::size_t>(j)];
        g[3] += err;
      }
      for (std::size_t j = 0; j < 4; ++j) {
        velocity[j] = 0.9f * velocity[j] + g[j] / 8.f;
        w[j] -= static_cast<float>(lr) * velocity[j];
      }
      ++step;
    }
    ++epoch;
    if (epoch % 3 == 0) lr *= 0.5;
  }

  Checkpoint save() const {
    Checkpoint c;
    c.epoch = epoch;
    c.step = step;
    c.data_order = order;
    c.set_array<float>("params", w);
    c.set_array<float>("optimizer/velocity", velocity);
    c.set_scalar("schedule/lr", lr);
    c.set_rng("rng", rng);
    return c;
  }

  void load(const Checkpoint& c) {
    epoch = c.epoch;
    step = c.step;
    order = c.data_order;
    c.get_array<float>("params", std::span<float>(w));
    c.get_array<float>("optimizer/velocity", std::span<float>(velocity));
    lr = c.scalar("schedule/lr");
    c.get_rng("rng", rng);
  }
};

}  // namespace

TEST_CASE("resuming from the last checkpoint continues bit-exactly", "[train][checkpoint]") {
  flt::test_support::ScratchDir tmp("resume");
  ToyTrainer full;
  for (int e = 0; e < 10; ++e) full.run_epoch();

  // Interrupted after 4 epochs (the process "dies": only the files remain), then resumed.
  {
    ToyTrainer first;
    CheckpointSlots slots(tmp.path());
    for (int e = 0; e < 4; ++e) {
      first.run_epoch();
      const double val = e == 3 ? 100.0 : 10.0 - e;  // improves for 3 epochs, then worse
      slots.save_if_best(first.save(), val);
      slots.save_last(first.save());
    }
  }
  ToyTrainer resumed;
  CheckpointSlots slots(tmp.path());
  REQUIRE(slots.has_last());
  resumed.load(slots.load_last());
  CHECK(resumed.epoch == 4);
  REQUIRE(slots.best_metric().has_value());  // restored from the last checkpoint
  CHECK(slots.load_best().epoch == 3);        // epoch 4 was made worse on purpose
  while (resumed.epoch < 10) resumed.run_epoch();
  CHECK(resumed.step == full.step);
  CHECK(std::memcmp(resumed.w.data(), full.w.data(), 4 * sizeof(float)) == 0);
  CHECK(std::memcmp(resumed.velocity.data(), full.velocity.data(), 4 * sizeof(float)) == 0);
  CHECK(resumed.order == full.order);
  // And the model actually learned something (the comparison is not between two no-ops).
  CHECK(full.w[2] == Approx(3.0).margin(0.1));
  // Slots: NaN is never best, a worse metric does not replace the best.
  CHECK_FALSE(slots.save_if_best(resumed.save(), std::nan("")));
  CHECK_FALSE(slots.save_if_best(resumed.save(), 1e9));
  CHECK(slots.save_if_best(resumed.save(), -1.0));
  CHECK(slots.load_best().epoch == 10);
}
