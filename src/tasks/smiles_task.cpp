#include "tasks/smiles_task.hpp"

#include "core/error.hpp"

namespace flt::tasks {

using io::OptionType;

void add_smiles_data_options(io::OptionSchema& s, const std::string& task, const std::string& examples) {
  s.option("task", "data", OptionType::string, task, "property (regression from SMILES) or lm (language model)").choices = {
      "property", "lm"};
  s.option("index", "data", OptionType::path, "datasets/qm9/qm9_subset_index.csv.gz", "QM9 SMILES index (CSV, .gz allowed)");
  s.option("split-file", "data", OptionType::path, "datasets/qm9/split.csv", "fixed split of the 3-D model (subset,index,id)");
  s.option("train-limit", "data", OptionType::integer, "0", "train on n training " + examples + " drawn at random (fixed seed, independent of --seed; 0: all)");
  s.option("test-limit", "data", OptionType::integer, "0", "validate and test on n of each, drawn at random as --train-limit (0: all)");
}

void smiles_data_from_options(const io::ResolvedOptions& o, const std::string& task, SmilesData& c) {
  if (o.get_string("task") != task) throw ConfigError("--task: this configuration is for task " + task);
  c.index = o.get_string("index");
  c.split_file = o.get_string("split-file");
  const auto limit = o.get_int("train-limit");
  if (limit < 0) throw ConfigError("--train-limit must be >= 0");
  c.train_limit = static_cast<std::size_t>(limit);
  const auto tlimit = o.get_int("test-limit");
  if (tlimit < 0) throw ConfigError("--test-limit must be >= 0");
  c.test_limit = static_cast<std::size_t>(tlimit);
}

SmilesSubsets load_smiles_subsets(const SmilesData& c, const std::vector<std::string>& targets, Tokenization level,
                                  const std::string& examples) {
  SmilesSubsets s;
  s.data = load_qm9_smiles(c.index, targets);
  const train::Split split = read_qm9_split(c.split_file, s.data);
  // The split files list ids in increasing order, and QM9's first ids are its smallest molecules:
  // a limit draws a sample (the same for every run and seed), never the first rows.
  constexpr std::uint64_t kSubsetSeed = 0x5EED;
  s.train = sample_n(split.train, c.train_limit, kSubsetSeed);
  s.validation = sample_n(split.validation, c.test_limit, kSubsetSeed + 1);
  s.test = sample_n(split.test, c.test_limit, kSubsetSeed + 2);
  if (s.train.empty()) throw ConfigError("the split leaves no training " + examples);
  std::vector<std::vector<std::string>> train_tokens;
  for (std::size_t i : s.train) train_tokens.push_back(tokenize_smiles(s.data.smiles[i], level, s.data.ids[i]));
  s.vocabulary = Vocabulary::build(train_tokens);
  return s;
}

bool train_smiles_model(const TaskRunConfig& run, TokenModel<float>& model, TrainableTask& task,
                        const SmilesSubsets& subsets, const TaskOutput& output, SmilesTrainResult& r) {
  r.train_size = subsets.train.size();
  r.validation_size = subsets.validation.size();
  r.vocabulary = subsets.vocabulary.size();
  r.parameters = model.params().size();
  r.run = run_task(run, model, task, output);
  if (r.run.stopped_by_hook) return false;
  r.test_size = subsets.test.size();
  return true;
}

bool write_smiles_run_summary(std::ostream& out, const SmilesTrainResult& r, const std::string& examples) {
  const std::string note = std::to_string(r.parameters) + " parameters, vocabulary " + std::to_string(r.vocabulary);
  return write_run_summary(out, r.run, note, examples, r.train_size, r.validation_size, r.test_size);
}

Vocabulary model_vocabulary(const std::map<std::string, std::string>& meta, const std::string& src,
                            std::int64_t vocab_size) {
  Vocabulary vocab;
  try {
    vocab = Vocabulary::from_text(require_metadata(meta, "task.vocabulary", src));
  } catch (const InvalidArgument& e) {
    throw ModelFileError(src, std::string("task.vocabulary: ") + e.what());
  }
  if (static_cast<std::int64_t>(vocab.size()) != vocab_size)
    throw ModelFileError(src, "vocabulary size differs from the model's vocab_size");
  return vocab;
}

}  // namespace flt::tasks
