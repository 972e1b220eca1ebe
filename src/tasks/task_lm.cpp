// SMILES character language-model task (see task_lm.hpp). Shapes: S strings per batch, N = sum
// (L_s + 1) positions, V vocabulary; logits N x V.
#include "tasks/task_lm.hpp"

#include "core/error.hpp"
#include "core/losses.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"
#include "io/data_checksum.hpp"
#include "io/progress.hpp"

#include <omp.h>

#include <cmath>
#include <iomanip>
#include <numbers>
#include <sstream>

namespace flt::tasks {

namespace fs = std::filesystem;
using io::OptionType;

namespace {

TokenModelConfig lm_model_defaults() {
  TokenModelConfig c;
  c.input = InputKind::tokens;
  c.head = OutputHead::per_token;
  c.causal = true;
  c.vocab_size = Vocabulary::kNumSpecial + 1;
  c.width = 64;
  c.heads = 4;
  c.blocks = 2;
  c.mlp_hidden = 128;
  c.num_features = 32;
  c.num_frequencies = 16;
  return c;
}

std::vector<std::vector<std::int32_t>> encode_rows(const SmilesDataset& d, const Vocabulary& vocab, std::span<const std::size_t> rows) {
  std::vector<std::vector<std::int32_t>> out;
  for (std::size_t i : rows) out.push_back(vocab.encode(tokenize_smiles(d.smiles[i], Tokenization::character, d.ids[i])));
  return out;
}

// The ids and SMILES of an evaluation's strings (rows of `d`, in the evaluated order).
void name_strings(LmEvaluation& e, const SmilesDataset& d, std::span<const std::size_t> rows) {
  for (const std::size_t r : rows) {
    e.ids.push_back(d.ids[r]);
    e.smiles.push_back(d.smiles[r]);
  }
}

// Forward of a batch of strings: logits N x V and the flat targets.
TokenBatch lm_batch(const std::vector<const std::vector<std::int32_t>*>& strings, std::vector<std::int32_t>& targets) {
  std::vector<std::vector<std::int32_t>> inputs(strings.size());
  targets.clear();
  for (std::size_t s = 0; s < strings.size(); ++s) {
    std::vector<std::int32_t> t;
    lm_sequences(*strings[s], inputs[s], t);
    targets.insert(targets.end(), t.begin(), t.end());
  }
  return TokenBatch::sequences(inputs);
}

class LmTask final : public TrainableTask {
 public:
  LmTask(std::vector<std::vector<std::int32_t>> train, std::vector<std::vector<std::int32_t>> val, const LmTrainConfig& cfg,
         const Vocabulary& vocab)
      : train_(std::move(train)), val_(std::move(val)), cfg_(cfg), vocab_(vocab) {}

  std::size_t train_size() const override { return train_.size(); }
  std::vector<std::string> metric_columns() const override { return {"bpc"}; }

  StepResult train_batch(TokenModel<float>& model, std::span<const std::size_t> examples, Rng&) override {
    std::vector<const std::vector<std::int32_t>*> strings;
    for (std::size_t k : examples) strings.push_back(&train_[k]);
    std::vector<std::int32_t> targets;
    const TokenBatch batch = lm_batch(strings, targets);
    const Mat<float> logits = model.forward(batch, cache_);
    const LossValue lv = cross_entropy_forward<float>(logits, targets);
    Mat<float> d = Mat<float>::Zero(logits.rows(), logits.cols());
    cross_entropy_backward<float>(logits, targets, d);
    model.backward(cache_, d);
    return {lv.value, static_cast<double>(targets.size())};
  }

  EvalResult validate(TokenModel<float>& model) override {
    EvalResult r;
    if (val_.empty()) return r;
    const LmEvaluation e = evaluate_lm(model, val_, cfg_.run.eval_batch_size);
    r.loss = e.nll_nats;
    r.metrics = {e.bits_per_character};
    r.selection = e.bits_per_character;
    r.count = e.strings;
    return r;
  }

  std::string data_fingerprint() const override { return fingerprint(train_); }
  std::string validation_fingerprint() const override { return fingerprint(val_); }

  template <class Strings>
  std::string fingerprint(const Strings& strings) const {
    // Per string: its characters.
    std::vector<std::uint64_t> digests;
    for (const auto& s : strings) {
      std::string bytes;
      for (auto id : s) bytes += vocab_.token(id);
      digests.push_back(example_digest(bytes));
    }
    return io::training_data_checksum(digests);
  }

  std::map<std::string, std::string> model_metadata() const override {
    return {{"task.kind", "lm"}, {"task.tokenization", "character"}, {"task.vocabulary", vocab_.to_text()}};
  }

 private:
  std::vector<std::vector<std::int32_t>> train_, val_;
  const LmTrainConfig& cfg_;
  const Vocabulary& vocab_;
  TokenCache<float> cache_;
};

}  // namespace

void lm_sequences(const std::vector<std::int32_t>& ids, std::vector<std::int32_t>& input, std::vector<std::int32_t>& target) {
  input.clear();
  target.clear();
  input.push_back(Vocabulary::kBos);
  input.insert(input.end(), ids.begin(), ids.end());
  target.insert(target.end(), ids.begin(), ids.end());
  target.push_back(Vocabulary::kEos);
}

LmEvaluation evaluate_lm(TokenModel<float>& model, const std::vector<std::vector<std::int32_t>>& encoded, std::size_t batch_size,
                         const EvalProgress& progress) {
  require(batch_size > 0, "evaluate_lm: batch size must be positive");
  LmEvaluation e;
  e.strings = encoded.size();
  double nll = 0;
  for (std::size_t b = 0; b < encoded.size(); b += batch_size) {
    std::vector<const std::vector<std::int32_t>*> strings;
    for (std::size_t k = b; k < std::min(encoded.size(), b + batch_size); ++k) strings.push_back(&encoded[k]);
    std::vector<std::int32_t> targets;
    const Mat<float> logits = model.predict(lm_batch(strings, targets));
    // Summed in double per batch in a fixed order: cross_entropy_forward's mean times its count.
    nll += cross_entropy_forward<float>(logits, targets).value * static_cast<double>(targets.size());
    // Per string: -ln softmax(logits)[target] in double over its rows (its characters and the
    // end token, consecutive in the batch).
    Index row = 0;
    for (const auto* s : strings) {
      const std::size_t positions = s->size() + 1;
      double sum = 0;
      for (std::size_t k = 0; k < positions; ++k, ++row) {
        const Eigen::RowVectorXd z = logits.row(row).cast<double>();
        const double m = z.maxCoeff();
        sum += m + std::log((z.array() - m).exp().sum()) - z(targets[static_cast<std::size_t>(row)]);
      }
      e.string_positions.push_back(positions);
      e.string_nll_nats.push_back(sum);
    }
    e.positions += targets.size();
    for (auto t : targets) e.unknown += t == Vocabulary::kUnk ? 1 : 0;
    if (progress) progress(std::min(encoded.size(), b + batch_size), encoded.size());
  }
  if (e.positions > 0) {
    e.nll_nats = nll / static_cast<double>(e.positions);
    e.bits_per_character = e.nll_nats / std::numbers::ln2;
  }
  return e;
}

io::OptionSchema lm_option_schema() {
  io::OptionSchema s;
  add_smiles_data_options(s, "lm", "strings");
  add_run_options(s, 10, 32, 1e-3);
  add_model_options(s, lm_model_defaults(), sequence_task_owned_keys());
  return s;
}

LmTrainConfig lm_config_from_options(const io::ResolvedOptions& o) {
  LmTrainConfig c;
  smiles_data_from_options(o, "lm", c);
  c.run = run_config_from_options(o);
  c.model = model_config_from_options(o, lm_model_defaults(), sequence_task_owned_keys());
  set_resolved_ini(c.run, o, "flt seq train configuration (resolved; read it back with --config FILE)");
  return c;
}

LmTrainResult run_lm_training(const LmTrainConfig& cfg, const TaskOutput& output) {
  if (cfg.run.threads > 0) omp_set_num_threads(cfg.run.threads);
  // Labels are not used, but loading U0 keeps the reader's checks (and the molecule set) identical
  // to the property task's.
  const SmilesSubsets sub = load_smiles_subsets(cfg, {"U0"}, Tokenization::character, "strings");
  const SmilesDataset& d = sub.data;
  const auto& train_rows = sub.train;
  const auto& val_rows = sub.validation;
  const auto& test_rows = sub.test;
  const Vocabulary& vocab = sub.vocabulary;

  TokenModelConfig mc = cfg.model;
  mc.input = InputKind::tokens;
  mc.vocab_size = static_cast<Index>(vocab.size());
  mc.head = OutputHead::per_token;
  mc.causal = true;
  mc.seed = cfg.run.seed;
  TokenModel<float> model(mc);
  if (output.progress)
    *output.progress << "QM9 SMILES " << cfg.index.string() << ": " << train_rows.size() << " train, " << val_rows.size()
                     << " validation, " << test_rows.size() << " test strings; " << vocab.size()
                     << " character tokens; causal model " << to_string(mc.attention) << ", " << model.params().size()
                     << " parameters\n"
                     << std::flush;
  LmTask task(encode_rows(d, vocab, train_rows), encode_rows(d, vocab, val_rows), cfg, vocab);
  LmTrainResult r;
  if (!train_smiles_model(cfg.run, model, task, sub, output, r)) return r;
  r.test = evaluate_lm(model, encode_rows(d, vocab, test_rows), cfg.run.eval_batch_size);
  name_strings(r.test, d, test_rows);
  write_lm_evaluation(r.run.run_dir, r.test, run_numbers(r.run, r.parameters,
              {{"validation_bpc", r.run.best_validation.metrics.empty() ? kNaN : r.run.best_validation.metrics[0]},
               {"train_strings", static_cast<double>(r.train_size)}}));
  return r;
}

void write_lm_evaluation(const fs::path& dir, const LmEvaluation& e, const std::vector<std::pair<std::string, double>>& extra) {
  std::vector<std::pair<std::string, double>> numbers{{e.subset + "_bpc", e.bits_per_character},
                                                      {e.subset + "_nll_nats", e.nll_nats},
                                                      {e.subset + "_strings", static_cast<double>(e.strings)},
                                                      {e.subset + "_positions", static_cast<double>(e.positions)},
                                                      {e.subset + "_unknown_characters", static_cast<double>(e.unknown)}};
  numbers.insert(numbers.end(), extra.begin(), extra.end());
  write_metrics_json(dir / (e.subset + "_metrics.json"), numbers, {{"task", "lm"}, {"subset", e.subset}});
  {
    io::AtomicOutputFile out(dir / (e.subset + "_metrics.csv"));
    io::write_csv_row(out.stream(), {"strings", "positions", "unknown", "nll [nats/char]", "bpc [bits/char]"});
    io::write_csv_row(out.stream(), {std::to_string(e.strings), std::to_string(e.positions), std::to_string(e.unknown),
                                        io::csv_number(e.nll_nats), io::csv_number(e.bits_per_character)});
    out.commit();
  }
  // One row per evaluated string, in the evaluated order: every string of the subset appears.
  // tokens: the predicted positions (its characters and the end token); perplexity = exp(loss).
  require(e.string_positions.size() == e.strings && e.string_nll_nats.size() == e.strings,
          "write_lm_evaluation: one per-string entry per string");
  const bool named = e.ids.size() == e.strings && e.smiles.size() == e.strings;
  io::AtomicOutputFile out(dir / (e.subset + "_sequences.csv"));
  io::write_csv_row(out.stream(), {named ? "id" : "string", "smiles", "tokens", "nll [nats]", "loss [nats/token]",
                                   "perplexity"});
  for (std::size_t i = 0; i < e.strings; ++i) {
    const double loss = e.string_nll_nats[i] / static_cast<double>(e.string_positions[i]);
    io::write_csv_row(out.stream(), {named ? e.ids[i] : std::to_string(i), named ? e.smiles[i] : std::string(),
                                     std::to_string(e.string_positions[i]), io::csv_number(e.string_nll_nats[i]),
                                     io::csv_number(loss), io::csv_number(std::exp(loss))});
  }
  out.commit();
}

LmEvaluation evaluate_lm_model(const fs::path& model_path, const fs::path& index, const fs::path& split_file,
                               const std::string& subset, std::size_t batch_size, const EvalProgress& progress) {
  std::map<std::string, std::string> meta;
  auto model = TokenModel<float>::load(model_path, &meta);
  const std::string src = model_path.string();
  if (require_metadata(meta, "task.kind", src) != "lm")
    throw ModelFileError(src, "a model of task '" + meta["task.kind"] + "', not a SMILES language model");
  const Vocabulary vocab = model_vocabulary(meta, src, model->config().vocab_size);
  const SmilesDataset d = load_qm9_smiles(index, {"U0"});
  const train::Split split = read_qm9_split(split_file, d);
  const std::vector<std::size_t>* rows = &subset_rows(split, subset);
  LmEvaluation e = evaluate_lm(*model, encode_rows(d, vocab, *rows), batch_size, progress);
  name_strings(e, d, *rows);
  e.subset = subset;
  return e;
}

std::string format_lm_evaluation(const LmEvaluation& e) {
  std::ostringstream out;
  out << "strings: " << e.strings << ", predicted positions: " << e.positions << " (characters + one end token each)";
  if (e.unknown) out << ", " << e.unknown << " unknown characters";
  out << "\n" << std::fixed << std::setprecision(4) << "bits per character: " << e.bits_per_character
      << "\nnll: " << e.nll_nats << " nats per character\n";
  return out.str();
}

std::string format_lm_summary(const LmTrainResult& r) {
  std::ostringstream out;
  if (write_smiles_run_summary(out, r, "strings")) out << "test: " << format_lm_evaluation(r.test);
  return out.str();
}

}  // namespace flt::tasks
