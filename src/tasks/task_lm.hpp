// Causal character-level language model of SMILES with the token model (token embedding, causal
// FLT encoder with 1-D RPE, per-token head): `flt seq train|eval --task lm`.
//
// Data: the SMILES of the bundled QM9 index and the 3-D model's split (as the property task).
// A string c_1..c_L is the input <bos> c_1 .. c_L and the targets c_1 .. c_L <eos>: the model
// predicts every character and the end of the string from the characters before it (causal
// attention: out_n depends on ids <= n only). The vocabulary holds the characters of the training
// SMILES (a character unseen in training is <unk>, still a predicted position).
// Loss: mean cross-entropy over the predicted positions of a batch. Metric:
//   bits per character = (sum over predicted positions of -ln p(target)) / (ln 2 * positions),
// positions = sum over strings of (L + 1) (every character and the end token), on the test split
// with the best checkpoint (selected by validation bpc).
#pragma once

#include "tasks/data_smiles.hpp"
#include "tasks/smiles_task.hpp"
#include "tasks/task_common.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace flt::tasks {

struct LmTrainConfig : SmilesData {
  TokenModelConfig model;
  TaskRunConfig run;
};

struct LmEvaluation {
  std::size_t strings = 0;
  std::size_t positions = 0;      // predicted positions (characters + one end token per string)
  std::size_t unknown = 0;        // characters outside the vocabulary (<unk> targets)
  double nll_nats = kNaN;         // mean -ln p per position
  double bits_per_character = kNaN;
  std::string subset = "test";          // the split subset evaluated: names the output files and keys
  // Per string, in the evaluated order: predicted positions (characters + the end token) and
  // -ln p summed over them (nats). ids and smiles: filled by the callers that know them (empty:
  // the per-string file names strings by their position).
  std::vector<std::size_t> string_positions;
  std::vector<double> string_nll_nats;
  std::vector<std::string> ids, smiles;
};

struct LmTrainResult : SmilesTrainResult {
  LmEvaluation test;
};

io::OptionSchema lm_option_schema();
LmTrainConfig lm_config_from_options(const io::ResolvedOptions& options);

// Input and target ids of one string (see above).
void lm_sequences(const std::vector<std::int32_t>& ids, std::vector<std::int32_t>& input, std::vector<std::int32_t>& target);

// Evaluates bits per character of `model` on `strings` (each already tokenized and encoded), and
// each string's positions and summed nll.
LmEvaluation evaluate_lm(TokenModel<float>& model, const std::vector<std::vector<std::int32_t>>& encoded, std::size_t batch_size,
                         const EvalProgress& progress = {});

LmTrainResult run_lm_training(const LmTrainConfig& config, const TaskOutput& output = {});
LmEvaluation evaluate_lm_model(const std::filesystem::path& model_path, const std::filesystem::path& index,
                               const std::filesystem::path& split_file, const std::string& subset, std::size_t batch_size,
                               const EvalProgress& progress = {});

std::string format_lm_summary(const LmTrainResult& result);
std::string format_lm_evaluation(const LmEvaluation& e);
// Writes <subset>_metrics.json, <subset>_metrics.csv (aggregates) and <subset>_sequences.csv (one
// row per evaluated string: id, SMILES, predicted positions, summed nll [nats], mean nll
// [nats/token], perplexity) into `dir`, atomically.
void write_lm_evaluation(const std::filesystem::path& dir, const LmEvaluation& e,
                         const std::vector<std::pair<std::string, double>>& extra = {});

}  // namespace flt::tasks
