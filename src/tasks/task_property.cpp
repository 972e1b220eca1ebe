// SMILES property-prediction task (see task_property.hpp). Shapes: S molecules per batch, N
// tokens in all, P targets; predictions S x P (standardised inside, physical units outside).
#include "tasks/task_property.hpp"

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"
#include "io/data_checksum.hpp"
#include "io/progress.hpp"
#include "io/svg_plot.hpp"
#include "train/report_plots.hpp"
#include "io/units.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

namespace flt::tasks {

namespace fs = std::filesystem;
using io::OptionType;

namespace {

TokenModelConfig property_model_defaults() {
  TokenModelConfig c;
  c.input = InputKind::tokens;
  c.head = OutputHead::pooled;
  c.vocab_size = Vocabulary::kNumSpecial + 1;  // replaced by the data's vocabulary
  c.width = 64;
  c.heads = 4;
  c.blocks = 2;
  c.mlp_hidden = 128;
  c.head_hidden = 64;
  c.num_features = 32;
  c.num_frequencies = 16;
  return c;
}


std::vector<std::vector<std::int32_t>> encode_all(const SmilesDataset& d, const Vocabulary& vocab, Tokenization level) {
  std::vector<std::vector<std::int32_t>> out(d.size());
  for (std::size_t i = 0; i < d.size(); ++i) out[i] = vocab.encode(tokenize_smiles(d.smiles[i], level, d.ids[i]));
  return out;
}

// Normalised predictions (S x P) of molecules `rows`, in batches.
Mat<double> predict_rows(TokenModel<float>& model, const std::vector<std::vector<std::int32_t>>& encoded,
                         std::span<const std::size_t> rows, std::size_t batch_size, Index P,
                         const EvalProgress& progress = {}) {
  Mat<double> out(static_cast<Index>(rows.size()), P);
  for (std::size_t b = 0; b < rows.size(); b += batch_size) {
    const std::size_t e = std::min(rows.size(), b + batch_size);
    std::vector<std::vector<std::int32_t>> seqs;
    for (std::size_t k = b; k < e; ++k) seqs.push_back(encoded[rows[k]]);
    out.middleRows(static_cast<Index>(b), static_cast<Index>(e - b)) = model.predict(TokenBatch::sequences(seqs)).cast<double>();
    if (progress) progress(e, rows.size());
  }
  return out;
}

// Per target: the rows without that label (NaN, masked in the loss and the metrics).
std::vector<std::size_t> missing_label_counts(const Mat<double>& labels, std::span<const std::size_t> rows) {
  std::vector<std::size_t> n(static_cast<std::size_t>(labels.cols()), 0);
  for (const std::size_t r : rows)
    for (Index t = 0; t < labels.cols(); ++t)
      if (std::isnan(labels(static_cast<Index>(r), t))) ++n[static_cast<std::size_t>(t)];
  return n;
}

// "gap 3, mu 1" (the targets with missing labels), or "none". Target: anything with a `name`.
template <class Target>
std::string missing_label_list(const std::vector<Target>& targets, const std::vector<std::size_t>& missing) {
  std::string out;
  for (std::size_t t = 0; t < targets.size(); ++t) {
    if (missing[t] == 0) continue;
    if (!out.empty()) out += ", ";
    out += targets[t].name;
    out += ' ';
    out += std::to_string(missing[t]);
  }
  return out.empty() ? std::string("none") : out;
}

PropertyEvaluation evaluate_rows(TokenModel<float>& model, const SmilesDataset& d, const std::vector<std::vector<std::int32_t>>& encoded,
                                 const TargetNormalisation& norm, const RegressionLoss& loss, std::span<const std::size_t> rows,
                                 std::size_t batch_size, const EvalProgress& progress = {}) {
  PropertyEvaluation e;
  const auto P = static_cast<Index>(d.targets.size());
  e.targets = d.columns();
  for (std::size_t r : rows) {
    e.ids.push_back(d.ids[r]);
    e.unknown_tokens += static_cast<std::size_t>(std::count(encoded[r].begin(), encoded[r].end(), Vocabulary::kUnk));
  }
  const Mat<double> z = predict_rows(model, encoded, rows, batch_size, P, progress);
  const Mat<double> comp = take_rows(d.composition, rows);
  e.truth = take_rows(d.labels, rows);
  e.missing_labels = missing_label_counts(d.labels, rows);
  e.predicted = norm.denormalise(z, comp);
  e.metrics = train::compute_metrics(std::span<const double>(e.predicted.data(), static_cast<std::size_t>(e.predicted.size())),
                                     std::span<const double>(e.truth.data(), static_cast<std::size_t>(e.truth.size())),
                                     static_cast<std::size_t>(P));
  if (!rows.empty()) e.loss = regression_loss_forward<double>(loss, z, norm.normalise(e.truth, comp)).value;
  return e;
}

class PropertyTask final : public TrainableTask {
 public:
  PropertyTask(const SmilesDataset& d, const std::vector<std::vector<std::int32_t>>& encoded, const TargetNormalisation& norm,
               std::vector<std::size_t> train, std::vector<std::size_t> val, const PropertyTrainConfig& cfg,
               const Vocabulary& vocab)
      : d_(d), enc_(encoded), norm_(norm), train_(std::move(train)), val_(std::move(val)), cfg_(cfg), vocab_(vocab) {
    z_ = norm_.normalise(d_.labels, d_.composition);
  }

  std::size_t train_size() const override { return train_.size(); }
  std::vector<std::string> metric_columns() const override {
    std::vector<std::string> c;
    for (const auto& t : d_.targets) c.push_back(io::with_unit_suffix("MAE_" + t.name, t.unit));
    return c;
  }

  StepResult train_batch(TokenModel<float>& model, std::span<const std::size_t> examples, Rng&) override {
    std::vector<std::vector<std::int32_t>> seqs;
    std::vector<std::size_t> rows;
    for (std::size_t k : examples) {
      rows.push_back(train_[k]);
      seqs.push_back(enc_[train_[k]]);
    }
    const TokenBatch batch = TokenBatch::sequences(seqs);
    const Mat<float> out = model.forward(batch, cache_);
    const Mat<float> target = take_rows(z_, rows).cast<float>();
    const LossValue lv = regression_loss_forward<float>(cfg_.loss, out, target);
    Mat<float> d = Mat<float>::Zero(out.rows(), out.cols());
    regression_loss_backward<float>(cfg_.loss, out, target, d);
    model.backward(cache_, d);
    return {lv.value, static_cast<double>(examples.size())};
  }

  EvalResult validate(TokenModel<float>& model) override {
    EvalResult r;
    if (val_.empty()) return r;
    const PropertyEvaluation e = evaluate_rows(model, d_, enc_, norm_, cfg_.loss, val_, cfg_.run.eval_batch_size);
    r.loss = e.loss;
    double sel = 0;
    int n = 0;
    for (std::size_t t = 0; t < e.metrics.size(); ++t) {
      r.metrics.push_back(e.metrics[t].mae);
      if (!std::isnan(e.metrics[t].mae)) {
        sel += e.metrics[t].mae / norm_.scale[t];
        ++n;
      }
    }
    r.selection = n ? sel / n : kNaN;
    r.count = val_.size();
    return r;
  }

  std::string data_fingerprint() const override { return fingerprint(train_); }
  std::string validation_fingerprint() const override { return fingerprint(val_); }

  std::string fingerprint(const std::vector<std::size_t>& rows) const {
    // Per molecule: its SMILES and labels.
    std::vector<std::uint64_t> digests;
    for (std::size_t i : rows) {
      std::string bytes = d_.smiles[i] + "\n";
      const auto row = d_.labels.row(static_cast<Index>(i));
      for (Index t = 0; t < row.size(); ++t) bytes += io::csv_number(row(t)) + ",";
      digests.push_back(example_digest(bytes));
    }
    return io::training_data_checksum(digests);
  }

  std::map<std::string, std::string> model_metadata() const override {
    std::map<std::string, std::string> m;
    m["task.kind"] = "property";
    m["task.tokenization"] = to_string(cfg_.tokenization);
    m["task.vocabulary"] = vocab_.to_text();
    std::vector<std::string> names, units, ext;
    for (const auto& t : d_.targets) {
      names.push_back(t.name);
      units.push_back(t.unit);
      ext.push_back(t.extensive ? "1" : "0");
    }
    m["task.targets"] = join(names);
    m["task.units"] = join(units);
    m["task.extensive"] = join(ext);
    m["task.elements"] = join(norm_.elements);
    m["task.reference"] = format_doubles(std::span<const double>(norm_.reference.data(), static_cast<std::size_t>(norm_.reference.size())));
    m["task.mean"] = format_doubles(norm_.mean);
    m["task.scale"] = format_doubles(norm_.scale);
    m["task.loss"] = to_string(cfg_.loss.kind);
    return m;
  }

 private:
  const SmilesDataset& d_;
  const std::vector<std::vector<std::int32_t>>& enc_;
  const TargetNormalisation& norm_;
  std::vector<std::size_t> train_, val_;
  const PropertyTrainConfig& cfg_;
  const Vocabulary& vocab_;
  Mat<double> z_;
  TokenCache<float> cache_;
};

}  // namespace

io::OptionSchema property_option_schema() {
  io::OptionSchema s;
  add_smiles_data_options(s, "property", "molecules");
  s.option("targets", "data", OptionType::list, "U0,homo,lumo,gap,mu,alpha,zpve,Cv", "QM9 targets (units as the 3-D model)");
  s.option("tokenization", "data", OptionType::string, "atom", "SMILES tokens: atom (regex) or character").choices = {"atom", "character"};
  s.option("fit-reference", "data", OptionType::boolean, "true", "per-element reference values for extensive targets");
  s.option("loss", "data", OptionType::string, "mse", "loss on standardised targets: mse, l1, huber").choices = {"mse", "l1", "huber"};
  add_run_options(s, 20, 32, 1e-3);
  add_model_options(s, property_model_defaults(), sequence_task_owned_keys());
  return s;
}

PropertyTrainConfig property_config_from_options(const io::ResolvedOptions& o) {
  PropertyTrainConfig c;
  smiles_data_from_options(o, "property", c);
  c.targets = o.get_list("targets");
  if (c.targets.empty()) throw ConfigError("--targets: at least one target is required");
  c.tokenization = parse_tokenization(o.get_string("tokenization"));
  c.fit_reference = o.get_bool("fit-reference");
  c.loss.kind = parse_regression_loss(o.get_string("loss"));
  c.run = run_config_from_options(o);
  c.model = model_config_from_options(o, property_model_defaults(), sequence_task_owned_keys());
  set_resolved_ini(c.run, o, "flt seq train configuration (resolved; read it back with --config FILE)");
  return c;
}

PropertyTrainResult run_property_training(const PropertyTrainConfig& cfg, const TaskOutput& output) {
  if (cfg.run.threads > 0) omp_set_num_threads(cfg.run.threads);
  const SmilesSubsets sub = load_smiles_subsets(cfg, cfg.targets, cfg.tokenization, "molecules");
  const SmilesDataset& d = sub.data;
  const auto& train_rows = sub.train;
  // Molecules with an element no training molecule has: its reference energy would be a guess (0),
  // so, as flt train does, they leave the validation and test subsets, with a warning.
  std::vector<char> trained_element(d.elements.size(), 0);
  for (const std::size_t r : train_rows)
    for (std::size_t e = 0; e < d.elements.size(); ++e)
      if (d.composition(static_cast<Index>(r), static_cast<Index>(e)) > 0) trained_element[e] = 1;
  const auto known_elements_only = [&](const std::vector<std::size_t>& rows, const char* subset) {
    std::vector<std::size_t> kept;
    std::vector<std::string> left_out;
    for (const std::size_t r : rows) {
      bool known = true;
      for (std::size_t e = 0; e < d.elements.size(); ++e)
        known = known && (trained_element[e] || d.composition(static_cast<Index>(r), static_cast<Index>(e)) == 0);
      if (known) kept.push_back(r);
      else left_out.push_back(d.ids[r]);
    }
    if (!left_out.empty()) {
      std::string first;
      for (std::size_t k = 0; k < left_out.size() && k < 5; ++k) first += (k ? ", " : "") + left_out[k];
      log_warning(left_out.size(), " ", subset, " molecule", left_out.size() == 1 ? "" : "s",
                  " left out: an element not among the training molecules' (", first,
                  left_out.size() > 5 ? ", ..." : "", ")");
    }
    return kept;
  };
  const std::vector<std::size_t> val_rows = known_elements_only(sub.validation, "validation");
  const std::vector<std::size_t> test_rows = known_elements_only(sub.test, "test");
  const Vocabulary& vocab = sub.vocabulary;
  const auto encoded = encode_all(d, vocab, cfg.tokenization);
  const TargetNormalisation norm = fit_target_normalisation(d, train_rows, cfg.fit_reference);

  TokenModelConfig mc = cfg.model;
  mc.input = InputKind::tokens;
  mc.vocab_size = static_cast<Index>(vocab.size());
  mc.head = OutputHead::pooled;
  mc.num_outputs = static_cast<Index>(d.targets.size());
  mc.causal = false;
  mc.seed = cfg.run.seed;
  TokenModel<float> model(mc);
  if (output.progress)
    *output.progress << "QM9 SMILES " << cfg.index.string() << ": " << train_rows.size() << " train, " << val_rows.size()
                     << " validation, " << test_rows.size() << " test molecules; " << vocab.size() << " "
                     << to_string(cfg.tokenization) << " tokens; model " << to_string(mc.attention) << ", "
                     << model.params().size() << " parameters\n"
                     << std::flush;
  PropertyTrainResult r;
  // Missing labels are masked, which shrinks what a target is trained and scored on: said per
  // subset and target, as flt train says it of its data, and kept in test_metrics.json.
  r.train_missing_labels = missing_label_counts(d.labels, train_rows);
  r.validation_missing_labels = missing_label_counts(d.labels, val_rows);
  const std::vector<std::size_t> test_missing = missing_label_counts(d.labels, test_rows);
  {
    std::ostringstream text;
    text << "labels missing (masked in the loss and the metrics): train (" << train_rows.size() << " molecules) "
         << missing_label_list(d.targets, r.train_missing_labels) << "; validation (" << val_rows.size() << ") "
         << missing_label_list(d.targets, r.validation_missing_labels) << "; test (" << test_rows.size() << ") "
         << missing_label_list(d.targets, test_missing);
    const std::string line = text.str();
    log_info(line);
    if (output.progress) *output.progress << line << "\n" << std::flush;
  }
  PropertyTask task(d, encoded, norm, train_rows, val_rows, cfg, vocab);
  if (!train_smiles_model(cfg.run, model, task, sub, output, r)) return r;
  r.test = evaluate_rows(model, d, encoded, norm, cfg.loss, test_rows, cfg.run.eval_batch_size);
  std::vector<std::pair<std::string, double>> extra{{"train_molecules", static_cast<double>(r.train_size)}};
  for (std::size_t t = 0; t < d.targets.size(); ++t) {
    extra.emplace_back("train_missing_labels." + d.targets[t].name, static_cast<double>(r.train_missing_labels[t]));
    extra.emplace_back("validation_missing_labels." + d.targets[t].name,
                       static_cast<double>(r.validation_missing_labels[t]));
  }
  write_property_evaluation(r.run.run_dir, r.test, run_numbers(r.run, r.parameters, extra));
  return r;
}

void write_property_evaluation(const fs::path& dir, const PropertyEvaluation& e,
                               const std::vector<std::pair<std::string, double>>& extra) {
  if (e.ids.empty()) return;
  train::write_metrics_csv(dir / (e.subset + "_metrics.csv"), e.targets, e.metrics);
  train::write_predictions_csv(dir / (e.subset + "_predictions.csv"), "id", e.ids, e.targets,
                               std::span<const double>(e.predicted.data(), static_cast<std::size_t>(e.predicted.size())),
                               std::span<const double>(e.truth.data(), static_cast<std::size_t>(e.truth.size())));
  std::vector<std::pair<std::string, double>> numbers{{e.subset + "_molecules", static_cast<double>(e.ids.size())}, {e.subset + "_loss", e.loss},
                                                      {e.subset + "_unknown_tokens", static_cast<double>(e.unknown_tokens)}};
  std::vector<std::pair<std::string, std::string>> strings{{"task", "property"}, {"subset", e.subset}};
  for (std::size_t t = 0; t < e.targets.size(); ++t) {
    numbers.push_back({e.subset + "_mae." + e.targets[t].name, e.metrics[t].mae});
    numbers.push_back({e.subset + "_rmse." + e.targets[t].name, e.metrics[t].rmse});
    numbers.push_back({e.subset + "_r2." + e.targets[t].name, e.metrics[t].r2});
    numbers.push_back({e.subset + "_missing_labels." + e.targets[t].name, static_cast<double>(e.missing_labels.at(t))});
    strings.push_back({"unit." + e.targets[t].name, e.targets[t].unit});
    std::vector<double> yt(e.ids.size()), yp(e.ids.size());
    for (std::size_t i = 0; i < e.ids.size(); ++i) {
      yt[i] = e.truth(static_cast<Index>(i), static_cast<Index>(t));
      yp[i] = e.predicted(static_cast<Index>(i), static_cast<Index>(t));
    }
    io::write_svg(dir / ("parity_" + e.targets[t].name + ".svg"), train::readable_parity_svg(e.targets[t].name, e.targets[t].unit, yt, yp, nullptr, e.subset));
  }
  numbers.insert(numbers.end(), extra.begin(), extra.end());
  write_metrics_json(dir / (e.subset + "_metrics.json"), numbers, strings);
}

PropertyEvaluation evaluate_property_model(const fs::path& model_path, const fs::path& index, const fs::path& split_file,
                                           const std::string& subset, std::size_t batch_size,
                                           const EvalProgress& progress) {
  std::map<std::string, std::string> meta;
  auto model = TokenModel<float>::load(model_path, &meta);
  const std::string src = model_path.string();
  if (require_metadata(meta, "task.kind", src) != "property")
    throw ModelFileError(src, "a model of task '" + meta["task.kind"] + "', not a SMILES property model");
  const Tokenization level = parse_tokenization(require_metadata(meta, "task.tokenization", src));
  const Vocabulary vocab = model_vocabulary(meta, src, model->config().vocab_size);
  const std::vector<std::string> targets = split(require_metadata(meta, "task.targets", src));
  const std::vector<std::string> elements = split(require_metadata(meta, "task.elements", src));
  TargetNormalisation norm;
  norm.elements = elements;
  norm.mean = parse_doubles(require_metadata(meta, "task.mean", src), src + " task.mean");
  norm.scale = parse_doubles(require_metadata(meta, "task.scale", src), src + " task.scale");
  const std::vector<double> ref = parse_doubles(require_metadata(meta, "task.reference", src), src + " task.reference");
  const auto P = static_cast<Index>(targets.size()), E = static_cast<Index>(elements.size());
  if (norm.mean.size() != targets.size() || norm.scale.size() != targets.size() || ref.size() != static_cast<std::size_t>(P * E) ||
      model->config().num_outputs != P)
    throw ModelFileError(src, "normalisation sizes do not match the targets and elements");
  norm.reference = Eigen::Map<const Mat<double>>(ref.data(), P, E);
  const RegressionLoss loss{parse_regression_loss(meta.count("task.loss") ? meta["task.loss"] : "mse"), 1.0};

  SmilesDataset d = load_qm9_smiles(index, targets);
  // The data's composition columns in the model's element order (an element the model never saw
  // has no reference value: an error rather than a silent zero).
  Mat<double> comp = Mat<double>::Zero(static_cast<Index>(d.size()), E);
  for (std::size_t c = 0; c < d.elements.size(); ++c) {
    const auto it = std::find(elements.begin(), elements.end(), d.elements[c]);
    if (it == elements.end()) {
      if (d.composition.col(static_cast<Index>(c)).any()) throw InputError(index.string(), 0, "element " + d.elements[c] + " unknown to the model");
      continue;
    }
    comp.col(static_cast<Index>(it - elements.begin())) = d.composition.col(static_cast<Index>(c));
  }
  d.composition = comp;
  d.elements = elements;
  const train::Split split = read_qm9_split(split_file, d);
  const std::vector<std::size_t>* rows = &subset_rows(split, subset);
  const auto encoded = encode_all(d, vocab, level);
  PropertyEvaluation e = evaluate_rows(*model, d, encoded, norm, loss, *rows, batch_size, progress);
  e.subset = subset;
  return e;
}

std::string format_property_evaluation(const PropertyEvaluation& e) {
  std::ostringstream out;
  out << "molecules: " << e.ids.size();
  if (e.unknown_tokens > 0) out << ", " << e.unknown_tokens << " SMILES tokens outside the vocabulary (read as <unk>)";
  if (std::any_of(e.missing_labels.begin(), e.missing_labels.end(), [](std::size_t n) { return n > 0; }))
    out << "; labels missing (masked): " << missing_label_list(e.targets, e.missing_labels);
  out << "\n";
  out << "  " << std::left << std::setw(10) << "target" << std::setw(14) << "unit" << std::right << std::setw(8) << "n"
      << std::setw(14) << "MAE" << std::setw(14) << "RMSE" << std::setw(10) << "R^2" << '\n';
  for (std::size_t t = 0; t < e.metrics.size(); ++t) {
    const auto& m = e.metrics[t];
    out << "  " << std::left << std::setw(10) << e.targets[t].name << std::setw(14) << e.targets[t].unit << std::right
        << std::setw(8) << m.count << std::setw(14) << std::setprecision(5) << m.mae << std::setw(14) << m.rmse << std::setw(10)
        << std::setprecision(4) << m.r2 << '\n';
  }
  return out.str();
}

std::string format_property_summary(const PropertyTrainResult& r) {
  std::ostringstream out;
  if (write_smiles_run_summary(out, r, "molecules")) out << "test metrics:\n" << format_property_evaluation(r.test);
  return out.str();
}

}  // namespace flt::tasks
