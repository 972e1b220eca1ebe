// `flt info`: a model file's metadata as readable text (format version, configuration, elements,
// targets with units and pooling, normalisation, reference energies, parameter count, training
// metadata).
#pragma once

#include "pipeline/predict.hpp"

#include <string>

namespace flt::pipeline {

// Multi-line text. Sections: file, configuration (every key of models::config_to_strings),
// elements (symbols and atomic numbers), targets (name, unit, pooling, normalisation mean and
// scale in the target's unit: per atom for extensive targets), reference energies per element and
// extensive target (target unit per atom), parameter count, metadata (every other entry of the
// model file: training data checksum, seed, code version, ...).
std::string describe_model(const LoadedModel& model);

}  // namespace flt::pipeline
