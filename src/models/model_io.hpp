// Saving and loading a MoleculeModel as a .flt model file: the file `flt train` writes and
// `flt predict/eval/info/rpe` and the public API read. Container: io::ModelFile
// (docs/model-format.md: safetensors layout, format "flt-model", version 1, CRC-32). Content:
//   metadata "config.<key>"  (config_to_strings: the model is rebuilt from these alone),
//            "training.<key>" (the caller's metadata)
//   tensors  MoleculeModel::export_arrays(): "param.<name>" (the model's scalar type),
//            "norm.*" and "features.*" (F64)
// The content in full and what loading checks: docs/molecule-model.md, "Model files".
#pragma once

#include "models/molecule_model.hpp"
#include "io/model_file.hpp"

#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace flt::models {

inline constexpr const char* kModelFileFormat = "flt-model";

// An ensemble file: M >= 2 trained models in one container, format "flt-ensemble"
// (docs/model-format.md). Member k (1-based) keeps its own model file's content under a prefix:
// metadata "member.<k>.<key>" and tensors "member.<k>.<name>"; "ensemble.members" holds M. A
// predictor loads it as the M members' mean, exactly as it loads the M model files.
inline constexpr const char* kEnsembleFileFormat = "flt-ensemble";

// Packs model files ("flt-model") into one ensemble file, in the given order; ensemble files among
// them are flattened into their members. InvalidArgument for fewer than two models in all or a
// member of another format.
io::ModelFile to_ensemble_file(std::span<const io::ModelFile> files);
// The members of a model file: the file itself for "flt-model", the M member model files (named
// "<source> [member k of M]" in errors) for "flt-ensemble". ModelFileError naming the file for
// any other format, a missing or inconsistent member count, or an entry outside every member.
std::vector<io::ModelFile> member_files(const io::ModelFile& file);
std::vector<io::ModelFile> member_files(io::ModelFile&& file);  // moves a model file's tensors
// read_model_file accepting either format, then member_files. IoError / ModelFileError.
std::vector<io::ModelFile> read_member_files(const std::filesystem::path& path);

// Calibration of an ensemble's spread, optional in an ensemble file: per target t a factor
// s_t > 0 by which the members' standard deviation is multiplied, fitted on labelled data by one of
// two methods (train/uncertainty.hpp): "coverage", the 68.27 % quantile of |e|/std
// (std_coverage_scale: 68.27 % of those records within 1 calibrated std; robust to a few records
// with huge e/std), or "zscaling", Chemprop's s_t = sqrt(mean (e/std)^2) (std_scale). Metadata
// (not a member's): "calibration.version" (kCalibrationVersion), "calibration.method" ("coverage"
// or "zscaling"), "calibration.factor.<target>" (%.17g: exact round trip), "calibration.data" (file
// names of the data), "calibration.subset" (of a split file, "" for every record),
// "calibration.records" (molecules evaluated). docs/model-format.md, "Ensemble files".
inline constexpr const char* kCalibrationCoverage = "coverage";
inline constexpr const char* kCalibrationZScaling = "zscaling";
inline constexpr int kCalibrationVersion = 1;
struct EnsembleCalibration {
  std::vector<std::string> targets;  // names, in the members' target order
  std::vector<double> factors;       // one per target, dimensionless, finite and > 0
  std::string data;                  // e.g. "qm9.xyz.gz" (file names, ", "-joined)
  std::string subset;                // "validation", or "" for every record of the data
  std::size_t records = 0;
  std::string method = kCalibrationCoverage;  // how the factors were fitted: "coverage" or "zscaling"
  friend bool operator==(const EnsembleCalibration&, const EnsembleCalibration&) = default;
};
// Stores `calibration` in an ensemble file (InvalidArgument for another format, a factor that is
// not finite and > 0, an unknown method, or no targets).
void set_calibration(io::ModelFile& ensemble, const EnsembleCalibration& calibration);
// The calibration of an ensemble file, or nullopt when it has none (files written before it
// existed). ModelFileError naming the file for an unknown version or method, or a malformed entry.
// Factors come in `target_order` when given, else in the first member's target order
// ("member.1.config.targets"); a target without a factor, or a factor of no target, is an error.
std::optional<EnsembleCalibration> read_calibration(const io::ModelFile& file,
                                                    const std::vector<std::string>& target_order = {});

// In memory. metadata: the caller's entries, stored as "training.<key>".
template <class T>
io::ModelFile to_model_file(const MoleculeModel<T>& model,
                               const std::map<std::string, std::string>& metadata = {});
// `file.source()` names the file in errors. metadata (optional) receives every metadata entry of
// the file ("config.*", "training.*" and the container's own). Validates the configuration and
// every array's name and shape (import_arrays): flt::ModelFileError naming the file and the
// reason; a token model's file ("model.kind") is refused with a message saying so.
template <class T>
std::unique_ptr<MoleculeModel<T>> from_model_file(const io::ModelFile& file,
                                                  std::map<std::string, std::string>* metadata = nullptr);

// Atomic write (temporary file + rename). Throws flt::IoError.
template <class T>
void save_model(const std::filesystem::path& path, const MoleculeModel<T>& model,
                const std::map<std::string, std::string>& metadata = {});
// Throws flt::IoError (unreadable) or flt::ModelFileError (anything invalid: the container's
// magic, version or checksum (read_model_file), then as from_model_file).
std::unique_ptr<MoleculeModel<float>> load_model(const std::filesystem::path& path,
                                                 std::map<std::string, std::string>* metadata = nullptr);

}  // namespace flt::models
