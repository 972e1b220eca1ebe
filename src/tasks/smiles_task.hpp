// What the two SMILES tasks (property regression, task_property; language model, task_lm) share:
// their data options, the QM9 SMILES index cut into the fixed split's subsets with the training
// vocabulary, and the vocabulary stored in a model file.
#pragma once

#include "io/options.hpp"
#include "tasks/data_smiles.hpp"
#include "tasks/task_common.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace flt::tasks {

// The data of a SMILES task (the first fields of its configuration).
struct SmilesData {
  std::filesystem::path index = "datasets/qm9/qm9_subset_index.csv.gz";
  std::filesystem::path split_file = "datasets/qm9/split.csv";
  std::size_t train_limit = 0;  // 0: the whole training subset; else its first n examples
  std::size_t test_limit = 0;   // 0: the whole validation and test subsets; else their first n
};

// Adds the [data] options task (default `task`), index, split-file, train-limit and test-limit;
// `examples` names what a row is ("molecules", "strings").
void add_smiles_data_options(io::OptionSchema& schema, const std::string& task, const std::string& examples);
// Reads them into `data`; ConfigError when --task is not `task` or a limit is negative.
void smiles_data_from_options(const io::ResolvedOptions& options, const std::string& task, SmilesData& data);

// The index with the labels of `targets`, the split's training, validation and test rows (cut to
// the limits) and the vocabulary of the training rows' tokens at `level`. ConfigError when no
// training row is left (naming `examples`).
struct SmilesSubsets {
  SmilesDataset data;
  std::vector<std::size_t> train, validation, test;
  Vocabulary vocabulary;
};
SmilesSubsets load_smiles_subsets(const SmilesData& config, const std::vector<std::string>& targets,
                                  Tokenization level, const std::string& examples);

// The run and the counts of a SMILES task's training (the first fields of its result).
struct SmilesTrainResult {
  TaskRunResult run;
  std::size_t train_size = 0, validation_size = 0, test_size = 0, vocabulary = 0, parameters = 0;
};
// Trains `model` on `task` (run_task) and fills `result`'s run and counts; test_size only when the
// run went to its end. Returns false when the test hook stopped it (nothing more to do).
bool train_smiles_model(const TaskRunConfig& run, TokenModel<float>& model, TrainableTask& task,
                        const SmilesSubsets& subsets, const TaskOutput& output, SmilesTrainResult& result);

// The summary lines of a SMILES task's run (write_run_summary with the parameter and vocabulary
// counts); false when the test hook stopped the run (nothing more to report).
bool write_smiles_run_summary(std::ostream& out, const SmilesTrainResult& result, const std::string& examples);

// The vocabulary in a model file's metadata ("task.vocabulary"), checked against the model's
// vocab_size. ModelFileError naming `source` otherwise.
Vocabulary model_vocabulary(const std::map<std::string, std::string>& metadata, const std::string& source,
                            std::int64_t vocab_size);

}  // namespace flt::tasks
