// `flt info` for the token model's files (written by flt seq and flt image): the same layout as
// pipeline::describe_model gives a molecule model (file, format, parameter count, configuration,
// targets with units, metadata), with what a token model has instead of elements: the task, the
// architecture in words, the vocabulary or the classes, and the input scaling.
#pragma once

#include "io/model_file.hpp"

#include <string>

namespace flt::tasks {

// Whether `file` holds a token model (metadata "model.kind"), rather than a molecule model.
bool is_token_model_file(const io::ModelFile& file);

// Multi-line text. Sections: file, format and kind, task, parameter count; configuration (every
// key of models::config_to_strings); architecture (input, encoder, attention, head); per task:
// property: tokenization, vocabulary, targets (name, unit, pooling, normalisation mean and scale),
// reference values per element of extensive targets; lm: vocabulary; image: image and patch
// grid, pixel scaling, classes; then every other metadata entry (training.*: data checksum, seed,
// code version, epochs, ...; long values by their length). Throws ModelFileError (naming the
// file) when the file is not a valid token model or its task metadata is inconsistent.
std::string describe_token_model(const io::ModelFile& file);

}  // namespace flt::tasks
