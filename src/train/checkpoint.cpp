#include "train/checkpoint.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>

namespace flt::train {

using io::ModelFile;
using io::Shape;
using io::Tensor;
using io::read_model_file;
using io::write_model_file;
namespace {

// flt::Rng keeps its state private and has no accessor; it is trivially copyable and standard
// layout with members {uint64_t state[4]; double spare; bool has_spare;}, so its object
// representation is copied with memcpy and the meaningful bytes (0..40, not the tail padding,
// whose value is unspecified) are stored as six integers. The static_asserts stop the build if
// core/random.hpp changes that layout. (An explicit state accessor in core would be nicer.)
static_assert(std::is_trivially_copyable_v<Rng> && std::is_standard_layout_v<Rng>);
static_assert(sizeof(Rng) == 48 && alignof(Rng) == 8, "flt::Rng layout changed: update checkpoint.cpp");
constexpr std::size_t kRngWords = 6;

std::vector<std::int64_t> rng_words(const Rng& rng) {
  unsigned char bytes[sizeof(Rng)];
  std::memcpy(bytes, &rng, sizeof(Rng));
  std::vector<std::int64_t> words(kRngWords, 0);
  for (std::size_t i = 0; i < 5; ++i) std::memcpy(&words[i], bytes + 8 * i, 8);  // state[4], spare
  words[5] = bytes[40] != 0 ? 1 : 0;                                               // has_spare
  return words;
}

void rng_from_words(std::span<const std::int64_t> words, Rng& rng) {
  unsigned char bytes[sizeof(Rng)];
  std::memcpy(bytes, &rng, sizeof(Rng));  // keeps the padding bytes as they were
  for (std::size_t i = 0; i < 5; ++i) std::memcpy(bytes + 8 * i, &words[i], 8);
  const bool has_spare = words[5] != 0;
  std::memcpy(bytes + 40, &has_spare, sizeof(bool));
  std::memcpy(static_cast<void*>(&rng), bytes, sizeof(Rng));
}

}  // namespace

void Checkpoint::set_scalar(const std::string& name, double value) {
  file_.set_tensor("scalar/" + name, Tensor::scalar(value));
}

double Checkpoint::scalar(const std::string& name) const {
  return file_.values<double>("scalar/" + name, Shape{})[0];
}

void Checkpoint::set_integer(const std::string& name, std::int64_t value) {
  file_.set_tensor("int/" + name, Tensor::scalar(value));
}

std::int64_t Checkpoint::integer(const std::string& name) const {
  return file_.values<std::int64_t>("int/" + name, Shape{})[0];
}

void Checkpoint::set_text(const std::string& name, std::string value) { file_.set_metadata("text/" + name, std::move(value)); }

const std::string& Checkpoint::text(const std::string& name) const { return file_.metadata("text/" + name); }

void Checkpoint::set_rng(const std::string& name, const Rng& rng) {
  file_.set_tensor("rng/" + name, Tensor::vector(rng_words(rng)));
}

void Checkpoint::get_rng(const std::string& name, Rng& rng) const {
  const auto words = file_.values<std::int64_t>("rng/" + name, Shape{kRngWords});
  // xoshiro256** never reaches the all-zero state (it would then output zeros forever).
  if ((words[5] != 0 && words[5] != 1) || (words[0] == 0 && words[1] == 0 && words[2] == 0 && words[3] == 0))
    throw ModelFileError(source(), "rng/" + name + ": malformed generator state");
  rng_from_words(words, rng);
}

ModelFile Checkpoint::to_model_file() const {
  ModelFile out = file_;
  out.set_tensor("epoch", Tensor::scalar(epoch));
  out.set_tensor("step", Tensor::scalar(step));
  out.set_tensor("data_order", Tensor::vector(data_order));
  return out;
}

Checkpoint Checkpoint::from_model_file(ModelFile file) {
  if (file.format() != "flt-checkpoint")
    throw ModelFileError(file.source(), "holds '" + file.format() + "', not a checkpoint");
  Checkpoint c;
  c.epoch = file.values<std::int64_t>("epoch", Shape{})[0];
  c.step = file.values<std::int64_t>("step", Shape{})[0];
  if (c.epoch < 0 || c.step < 0) throw ModelFileError(file.source(), "negative epoch or step");
  const auto order = file.values<std::int64_t>("data_order");
  if (file.tensor("data_order").shape().size() != 1) throw ModelFileError(file.source(), "data_order must be a vector");
  c.data_order.assign(order.begin(), order.end());
  c.file_ = std::move(file);
  return c;
}

void write_checkpoint(const std::filesystem::path& path, const Checkpoint& checkpoint) {
  write_model_file(path, checkpoint.to_model_file());
}

Checkpoint read_checkpoint(const std::filesystem::path& path) {
  return Checkpoint::from_model_file(read_model_file(path, "flt-checkpoint"));
}

CheckpointSlots::CheckpointSlots(std::filesystem::path run_dir) : dir_(std::move(run_dir)) {}

void CheckpointSlots::save_last(const Checkpoint& checkpoint) {
  Checkpoint c = checkpoint;
  c.set_scalar("slots/best_metric", best_ ? *best_ : std::nan(""));
  write_checkpoint(last_path(), c);
}

bool CheckpointSlots::save_if_best(const Checkpoint& checkpoint, double metric) {
  if (!std::isfinite(metric) || (best_ && !(metric < *best_))) return false;
  best_ = metric;
  Checkpoint c = checkpoint;
  c.set_scalar("slots/best_metric", metric);
  write_checkpoint(best_path(), c);
  return true;
}

bool CheckpointSlots::has_last() const {
  std::error_code ec;
  return std::filesystem::is_regular_file(last_path(), ec);
}

Checkpoint CheckpointSlots::load_last() {
  Checkpoint c = read_checkpoint(last_path());
  if (c.has_scalar("slots/best_metric")) {
    const double b = c.scalar("slots/best_metric");
    best_ = std::isfinite(b) ? std::optional<double>(b) : std::nullopt;
  }
  return c;
}

Checkpoint CheckpointSlots::load_best() const { return read_checkpoint(best_path()); }

}  // namespace flt::train
