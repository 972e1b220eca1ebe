// Training checkpoints on top of the model-file container (format "flt-checkpoint", same
// validation and checksum). A checkpoint holds everything --resume needs to continue bit-exactly:
// parameters and optimiser state as named flat arrays (bit-exact, in their own dtype), schedule
// state as named scalars (F64) and integers (I64), RNG states, epoch, step and the data order of
// the current epoch, plus free-form text entries (e.g. the resolved configuration).
//
// io::Tensor names inside the file: "array/<name>", "scalar/<name>", "int/<name>", "rng/<name>",
// "epoch", "step", "data_order"; text entries are metadata "text/<name>".
#pragma once

#include "core/random.hpp"
#include "io/model_file.hpp"

#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace flt::train {

class Checkpoint {
 public:
  std::int64_t epoch = 0;                // completed epochs
  std::int64_t step = 0;                 // optimiser steps taken
  std::vector<std::int64_t> data_order;  // e.g. the permutation of training indices in use

  // Arrays: T is float, double, std::int64_t, std::int32_t or std::uint8_t.
  template <class T>
  void set_array(const std::string& name, std::span<const T> values) {
    file_.set_tensor("array/" + name, io::Tensor::vector(values));
  }
  template <class T>
  void set_array(const std::string& name, const std::vector<T>& values) {
    set_array(name, std::span<const T>(values));
  }
  // Copies the array into `out`; throws ModelFileError naming the checkpoint when it is missing or
  // its dtype or length differs (e.g. a checkpoint of another model size).
  template <class T>
  void get_array(const std::string& name, std::span<T> out) const {
    const auto v = file_.values<T>("array/" + name, io::Shape{static_cast<std::uint64_t>(out.size())});
    std::copy(v.begin(), v.end(), out.begin());
  }
  template <class T>
  std::vector<T> array(const std::string& name) const {
    const auto v = file_.values<T>("array/" + name);
    return {v.begin(), v.end()};
  }
  bool has_array(const std::string& name) const { return file_.has_tensor("array/" + name); }

  void set_scalar(const std::string& name, double value);
  double scalar(const std::string& name) const;  // ModelFileError if missing
  bool has_scalar(const std::string& name) const { return file_.has_tensor("scalar/" + name); }
  void set_integer(const std::string& name, std::int64_t value);
  std::int64_t integer(const std::string& name) const;
  bool has_integer(const std::string& name) const { return file_.has_tensor("int/" + name); }
  void set_text(const std::string& name, std::string value);
  const std::string& text(const std::string& name) const;
  bool has_text(const std::string& name) const { return file_.has_metadata("text/" + name); }

  // The complete generator state (including a cached Box-Muller normal), so a restored Rng yields
  // exactly the numbers the saved one would have.
  void set_rng(const std::string& name, const Rng& rng);
  void get_rng(const std::string& name, Rng& rng) const;

  const std::string& source() const noexcept { return file_.source(); }

  io::ModelFile to_model_file() const;
  static Checkpoint from_model_file(io::ModelFile file);  // ModelFileError if epoch/step/data_order are bad

 private:
  io::ModelFile file_{"flt-checkpoint"};
};

void write_checkpoint(const std::filesystem::path& path, const Checkpoint& checkpoint);  // atomic
Checkpoint read_checkpoint(const std::filesystem::path& path);

// The best and last checkpoints of a run directory: checkpoint-last.flt after every epoch, and
// checkpoint-best.flt whenever the validation metric (lower is better) improves.
class CheckpointSlots {
 public:
  explicit CheckpointSlots(std::filesystem::path run_dir);
  std::filesystem::path last_path() const { return dir_ / "checkpoint-last.flt"; }
  std::filesystem::path best_path() const { return dir_ / "checkpoint-best.flt"; }

  // Writes the last checkpoint (with the best metric so far stored as scalar "slots/best_metric",
  // so a resumed run keeps comparing against it).
  void save_last(const Checkpoint& checkpoint);
  // Writes the best checkpoint if `metric` is finite and lower than the best so far; returns
  // whether it did.
  bool save_if_best(const Checkpoint& checkpoint, double metric);
  std::optional<double> best_metric() const noexcept { return best_; }

  bool has_last() const;
  // Reads the last checkpoint and restores the best metric from it.
  Checkpoint load_last();
  Checkpoint load_best() const;

 private:
  std::filesystem::path dir_;
  std::optional<double> best_;
};

}  // namespace flt::train
