// Saving and loading a MoleculeModel as a .flt model file (docs/model-format.md: safetensors layout,
// format "flt-model", version 1, CRC-32), on top of flt::train::ModelFile.
//
// Content written by the model:
//   metadata  "model.kind" = "flt-molecule-model", "model.version" = "1",
//             "model.<key>" for every configuration key of config_to_strings (targets, units,
//             pooling, architecture, attention kind, seed, ...), plus any caller entries
//             (training metadata: data fingerprint, training seed, code version, ...), whose keys
//             must not start with "model.".
//   tensors   the arrays of MoleculeModel::export_arrays(): "param.<name>" in the model's scalar
//             type (F32 for a float model), everything else (normalisation, element set, random
//             features, feature draw index) in F64.
// Loading rebuilds the configuration from the metadata, constructs the model and imports the
// arrays; every problem (unknown kind or version, bad configuration, missing or mis-shaped
// tensor, wrong dtype) is an flt::ModelFileError naming the file and the reason.
#pragma once

#include "models/molecule_model.hpp"
#include "train/model_file.hpp"

#include <filesystem>
#include <map>
#include <memory>
#include <string>

namespace flt::models {

inline constexpr const char* kModelKind = "flt-molecule-model";
inline constexpr const char* kModelVersion = "1";

// In memory (also used to embed a model in a checkpoint).
template <class T>
train::ModelFile to_model_file(const MoleculeModel<T>& model,
                               const std::map<std::string, std::string>& metadata = {});
// `source` names the file in errors. metadata (optional) receives every non-"model." entry.
template <class T>
std::unique_ptr<MoleculeModel<T>> from_model_file(const train::ModelFile& file,
                                                  std::map<std::string, std::string>* metadata = nullptr);

// Atomic write (temporary file + rename). Throws flt::IoError.
template <class T>
void save_model(const std::filesystem::path& path, const MoleculeModel<T>& model,
                const std::map<std::string, std::string>& metadata = {});
// Throws flt::IoError (unreadable) or flt::ModelFileError (anything invalid).
std::unique_ptr<MoleculeModel<float>> load_model(const std::filesystem::path& path,
                                                 std::map<std::string, std::string>* metadata = nullptr);

}  // namespace flt::models
