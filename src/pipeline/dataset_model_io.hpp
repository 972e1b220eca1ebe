// Trained molecule models as .flt files (train/model_file.hpp container, format "flt-model"),
// written by `flt train` and read by `flt predict/eval/info/rpe`. Layout (docs/training.md):
//   metadata  "config.<key>"   every models::config_to_strings entry (architecture, targets with
//                              units and pooling, seed) -> the model is rebuilt from these alone
//             "training.<key>" training metadata (data checksum, seed, code version, epochs, ...)
//   tensors   every models::MoleculeModel::export_arrays() entry under its own name:
//             "param.<name>"   F32 (the float weights, exactly)
//             "norm.elements"  I32 [E]; "norm.mean", "norm.scale" F64 [P];
//             "norm.reference" F64 [P, max_z + 1] (per-element reference energies)
//             "features.*"     F64 random features (Performer / RPE frequencies and densities)
// Loading validates everything: the container (magic, version, checksum), the configuration,
// and every array's name and shape (import_arrays); failures are flt::ModelFileError naming the
// file.
#pragma once

#include "models/molecule_model.hpp"

#include <filesystem>
#include <map>
#include <memory>
#include <string>

namespace flt::pipeline {

inline constexpr const char* kModelFileFormat = "flt-model";

// Writes `model` with `metadata` (keys without the "training." prefix get it) atomically.
void save_model_file(const std::filesystem::path& path, const models::MoleculeModel<float>& model,
                     const std::map<std::string, std::string>& metadata);

struct LoadedModelFile {
  std::unique_ptr<models::MoleculeModel<float>> model;
  std::map<std::string, std::string> metadata;  // every metadata entry of the file
};

// Reads and validates a model file (IoError if unreadable, ModelFileError if malformed).
LoadedModelFile load_model_file(const std::filesystem::path& path);

}  // namespace flt::pipeline
