// The shared training engine of the token-model tasks (see task_common.hpp for the algorithm,
// the time budget and the determinism/resume contract).
#include "tasks/task_common.hpp"

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/optim.hpp"
#include "core/text.hpp"
#include "core/version.hpp"
#include "io/atomic_file.hpp"
#include "train/checkpoint.hpp"
#include "io/checksum.hpp"
#include "io/csv.hpp"
#include "io/ini.hpp"
#include "io/json.hpp"
#include "io/progress.hpp"
#include "train/run_dir.hpp"
#include "io/svg_plot.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <optional>
#include <sstream>

namespace flt::tasks {

namespace fs = std::filesystem;
using io::OptionType;

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string dashed(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return key;
}

// The configuration that must not change between an interrupted run and its --resume: the
// resolved INI without the [run] section and the thread count.
std::string resume_fingerprint(const std::string& ini_text) {
  const io::IniFile ini = io::IniFile::parse(ini_text, "config");
  std::map<std::string, std::string> sorted;
  for (const auto& section : ini.sections()) {
    if (section.name == "run") continue;
    for (const auto& e : section.entries) {
      if (section.name == "train" && e.key == "threads") continue;
      sorted[section.name + "." + e.key] = e.value;
    }
  }
  std::string out;
  for (const auto& [key, value] : sorted) out += key + " = " + value + "\n";
  return out;
}

// learning_curve.csv of a task run: epoch,step,lr,train_loss,val_loss,seconds,val_<metric>...
struct CurveRow {
  std::int64_t epoch = 0, step = 0;
  double lr = 0, train_loss = 0, val_loss = 0, seconds = 0;
  std::vector<double> val;
};

std::vector<std::string> curve_header(const std::vector<std::string>& metrics) {
  std::vector<std::string> h{"epoch", "step", "lr", "train_loss", "val_loss", "seconds"};
  for (const auto& m : metrics) h.push_back("val_" + m);
  return h;
}

void write_curve(const fs::path& path, const std::vector<std::string>& metrics, const std::vector<CurveRow>& rows) {
  io::AtomicOutputFile out(path);
  io::write_csv_row(out.stream(), curve_header(metrics));
  for (const auto& r : rows) {
    std::vector<std::string> f{std::to_string(r.epoch), std::to_string(r.step), io::csv_number(r.lr),
                               io::csv_number(r.train_loss), io::csv_number(r.val_loss), io::csv_number(r.seconds)};
    for (double v : r.val) f.push_back(io::csv_number(v));
    io::write_csv_row(out.stream(), f);
  }
  out.commit();
}

std::vector<CurveRow> read_curve(const fs::path& path, const std::vector<std::string>& metrics) {
  const io::CsvTable t = io::read_csv(path);
  if (t.header != curve_header(metrics))
    throw io::csv_error(t.source, 1, "learning-curve columns differ from this task's (" + std::to_string(t.header.size()) + " columns)");
  std::vector<CurveRow> rows;
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    CurveRow c;
    c.epoch = static_cast<std::int64_t>(io::parse_csv_number(t.rows[r][0], t, r, 0));
    c.step = static_cast<std::int64_t>(io::parse_csv_number(t.rows[r][1], t, r, 1));
    c.lr = io::parse_csv_number(t.rows[r][2], t, r, 2);
    c.train_loss = io::parse_csv_number(t.rows[r][3], t, r, 3);
    c.val_loss = io::parse_csv_number(t.rows[r][4], t, r, 4);
    c.seconds = io::parse_csv_number(t.rows[r][5], t, r, 5);
    for (std::size_t m = 0; m < metrics.size(); ++m) c.val.push_back(io::parse_csv_number(t.rows[r][6 + m], t, r, 6 + m));
    rows.push_back(std::move(c));
  }
  return rows;
}

void write_curve_plots(const fs::path& dir, const std::vector<std::string>& metrics, const std::vector<CurveRow>& rows) {
  std::vector<double> x, tl, vl;
  for (const auto& r : rows) {
    x.push_back(static_cast<double>(r.epoch));
    tl.push_back(r.train_loss);
    vl.push_back(r.val_loss);
  }
  io::PlotOptions o;
  o.title = "training and validation loss";
  o.x_label = "epoch";
  o.y_label = "loss";
  o.log_y = true;
  io::write_svg(dir / "learning_curve_loss.svg",
                   io::line_plot_svg({{"train", x, tl, "#1f77b4", true, true}, {"validation", x, vl, "#d62728", true, true}}, o));
  for (std::size_t m = 0; m < metrics.size(); ++m) {
    std::vector<double> y;
    for (const auto& r : rows) y.push_back(r.val[m]);
    io::PlotOptions om;
    om.title = "validation " + metrics[m];
    om.x_label = "epoch";
    om.y_label = metrics[m];
    std::string stem = metrics[m];
    // "MAE_U0 [eV]" -> "MAE_U0_eV": other characters become '_', runs of '_' collapse.
    std::string clean;
    for (char c : stem) {
      const char k = std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_';
      if (k != '_' || (!clean.empty() && clean.back() != '_')) clean += k;
    }
    while (!clean.empty() && clean.back() == '_') clean.pop_back();
    stem = clean;
    io::write_svg(dir / ("learning_curve_" + stem + ".svg"), io::line_plot_svg({{"validation", x, y, "#d62728", true, true}}, om));
  }
}

struct RunState {
  std::int64_t epoch = 0;  // completed epochs
  std::int64_t step = 0;
  std::int64_t best_epoch = 0;
  bool stopped_by_budget = false;
  double seconds = 0;
};

void save_state(train::Checkpoint& ck, const RunState& st, const TokenModel<float>& model, const AdamW<float>& opt,
                const std::string& fingerprint, const std::string& data) {
  ck.epoch = st.epoch;
  ck.step = st.step;
  const auto v = model.params().values();
  ck.set_array<float>("params", std::vector<float>(v.begin(), v.end()));
  ck.set_array<float>("adam_m", opt.state().m);
  ck.set_array<float>("adam_v", opt.state().v);
  ck.set_integer("adam_step", opt.state().step);
  ck.set_integer("best_epoch", st.best_epoch);
  ck.set_integer("stopped_by_budget", st.stopped_by_budget ? 1 : 0);
  ck.set_integer("feature_draw", static_cast<std::int64_t>(model.feature_draw()));
  ck.set_scalar("seconds", st.seconds);
  ck.set_text("config", fingerprint);
  ck.set_text("data_checksum", data);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TaskRunResult run_task(const TaskRunConfig& cfg, TokenModel<float>& model, TrainableTask& task, const TaskOutput& output) {
  if (cfg.out.empty()) throw ConfigError("--out: a run directory is required");
  if (cfg.epochs < 1) throw ConfigError("--epochs must be at least 1");
  if (cfg.batch_size < 1) throw ConfigError("--batch-size must be at least 1");
  if (cfg.threads > 0) omp_set_num_threads(cfg.threads);
  const train::RunMode mode = cfg.resume ? train::RunMode::resume : cfg.overwrite ? train::RunMode::overwrite : train::RunMode::fresh;
  const fs::path dir = train::prepare_run_directory(cfg.out, mode);
  std::ostream* progress = output.progress;
  auto say = [&](const std::string& line) {
    log_info(line);
    if (progress) *progress << line << '\n' << std::flush;
  };
  if (!cfg.resume && !cfg.resolved_ini.empty()) io::write_file_atomic(dir / "config.ini", cfg.resolved_ini);

  const std::size_t n = task.train_size();
  if (n == 0) throw ConfigError("no training examples");
  const std::vector<std::string> metrics = task.metric_columns();
  const std::string fingerprint = resume_fingerprint(cfg.resolved_ini);
  const std::string data = task.data_fingerprint();

  ParameterStore<float>& store = model.params();
  AdamW<float> opt(store.size(), AdamWConfig{0.9, 0.999, 1e-8, cfg.weight_decay});
  opt.set_decay_mask(decay_mask_matrices_only(store));
  const auto steps_per_epoch = static_cast<std::int64_t>((n + cfg.batch_size - 1) / cfg.batch_size);
  WarmupCosineSchedule cosine;
  cosine.base_lr = cfg.lr;
  cosine.min_lr = cfg.min_lr;
  cosine.total_steps = steps_per_epoch * cfg.epochs;
  cosine.warmup_steps = std::min(cosine.total_steps, cfg.warmup_steps < 0 ? std::max<std::int64_t>(1, cosine.total_steps / 20)
                                                                           : cfg.warmup_steps);
  cosine.validate();

  train::CheckpointSlots slots(dir);
  RunState st;
  std::vector<CurveRow> curve;
  if (cfg.resume) {
    if (!slots.has_last())
      throw ConfigError(dir.string() + ": no checkpoint-last.flt to resume from (start the run again without --resume)");
    const train::Checkpoint ck = slots.load_last();
    if (ck.text("config") != fingerprint)
      throw ConfigError(dir.string() + ": --resume with a configuration that differs from the interrupted run's "
                                       "(only --threads and [run] options may change); use the run's config.ini");
    if (ck.text("data_checksum") != data)
      throw ConfigError(dir.string() + ": --resume with different training data (" + data + ", run " + ck.text("data_checksum") + ")");
    ck.get_array<float>("params", store.values());
    AdamWState<float> as;
    as.step = ck.integer("adam_step");
    as.m = ck.array<float>("adam_m");
    as.v = ck.array<float>("adam_v");
    opt.load_state(std::move(as));
    st.epoch = ck.epoch;
    st.step = ck.step;
    st.best_epoch = ck.integer("best_epoch");
    st.stopped_by_budget = ck.integer("stopped_by_budget") != 0;
    st.seconds = ck.scalar("seconds");
    if (model.config().redraw_features) model.begin_step(static_cast<std::uint64_t>(ck.integer("feature_draw")));
    if (fs::exists(dir / "learning_curve.csv")) {
      curve = read_curve(dir / "learning_curve.csv", metrics);
      std::erase_if(curve, [&](const CurveRow& r) { return r.epoch > st.epoch; });
    }
    say("resuming " + dir.string() + " after epoch " + std::to_string(st.epoch) + " (step " + std::to_string(st.step) + ")");
  }

  TaskRunResult result;
  result.run_dir = dir;
  result.planned_epochs = cfg.epochs;
  result.planned_steps = cosine.total_steps;
  const double budget_seconds = cfg.time_budget_minutes > 0 ? cfg.time_budget_minutes * 60.0 : 0.0;
  const double session_start = now_seconds();
  const double seconds_before = st.seconds;
  auto elapsed = [&] { return seconds_before + (now_seconds() - session_start); };
  const std::int64_t session_first_epoch = st.epoch;
  // Whole-run ETA from this session's pace (`fraction` of the current epoch done), capped by the
  // time budget.
  const auto run_eta_text = [&](double fraction) -> std::string {
    const double left = static_cast<double>(cfg.epochs - st.epoch) - fraction;
    auto eta = io::run_eta(now_seconds() - session_start, static_cast<double>(st.epoch - session_first_epoch) + fraction,
                              left);
    if (!eta || left <= 0) return {};
    if (budget_seconds > 0) eta = std::min(*eta, std::max(0.0, budget_seconds - elapsed()));
    return "run ETA " + io::format_duration(*eta);
  };

  std::vector<std::size_t> order(n);
  while (st.epoch < cfg.epochs && !st.stopped_by_budget) {
    const std::int64_t epoch = st.epoch + 1;
    for (std::size_t i = 0; i < n; ++i) order[i] = i;
    Rng(cfg.seed ^ 0x7368756666ULL).fork(static_cast<std::uint64_t>(epoch)).shuffle(order);
    const auto batches = batch_spans(order, cfg.batch_size);
    double loss_sum = 0, weight_sum = 0, lr = 0;
    model.reset_attention_stats();
    const double epoch_start = now_seconds();
    std::unique_ptr<io::ProgressBar> bar;
    if (progress)
      bar = std::make_unique<io::ProgressBar>(*progress, output.terminal,
                                                 "epoch " + std::to_string(epoch) + "/" + std::to_string(cfg.epochs),
                                                 batches.size());
    for (std::size_t bi = 0; bi < batches.size(); ++bi) {
      if (model.config().redraw_features) model.begin_step(static_cast<std::uint64_t>(st.step));
      store.zero_grad();
      Rng step_rng = Rng(cfg.seed ^ 0x6175676d656eULL).fork(static_cast<std::uint64_t>(st.step));
      const StepResult sr = task.train_batch(model, batches[bi], step_rng);
      if (!std::isfinite(sr.loss))
        throw NumericalError("training diverged: non-finite loss (" + format_number(sr.loss) + ") at epoch " +
                             std::to_string(epoch) + ", step " + std::to_string(st.step + 1) + "; lower --lr");
      const double norm = cfg.clip_norm > 0 ? clip_grad_norm(store, cfg.clip_norm) : global_grad_norm(store);
      if (!std::isfinite(norm))
        throw NumericalError("training diverged: non-finite gradient norm at epoch " + std::to_string(epoch) + ", step " +
                             std::to_string(st.step + 1) + "; lower --lr or set --clip-norm");
      lr = cosine.lr_at(st.step);
      opt.step(store, lr);
      ++st.step;
      loss_sum += sr.loss * sr.weight;
      weight_sum += sr.weight;
      if (bar) {
        const std::string eta = run_eta_text(static_cast<double>(bi + 1) / static_cast<double>(batches.size()));
        bar->update(bi + 1, "loss " + format_number(loss_sum / weight_sum) + (eta.empty() ? "" : ", " + eta));
      }
      if (budget_seconds > 0 && elapsed() >= budget_seconds) {
        st.stopped_by_budget = true;
        break;
      }
    }
    const EvalResult val = task.validate(model);
    st.epoch = epoch;
    st.seconds = elapsed();
    const std::optional<double> best_before = slots.best_metric();
    const bool improved = std::isfinite(val.selection) && (!best_before || val.selection < *best_before);
    if (improved) st.best_epoch = epoch;
    CurveRow row{epoch, st.step, lr, weight_sum > 0 ? loss_sum / weight_sum : kNaN, val.loss, st.seconds, val.metrics};
    curve.push_back(row);
    write_curve(dir / "learning_curve.csv", metrics, curve);

    train::Checkpoint ck;
    ck.data_order.assign(order.begin(), order.end());
    save_state(ck, st, model, opt, fingerprint, data);
    if (improved) slots.save_if_best(ck, val.selection);
    slots.save_last(ck);

    if (progress) {
      std::string summary = "train loss " + format_number(row.train_loss) + ", val loss " + format_number(val.loss);
      for (std::size_t m = 0; m < metrics.size() && m < val.metrics.size(); ++m)
        summary += ", " + metrics[m] + " " + format_number(val.metrics[m]);
      summary += "; lr " + format_number(lr, 3) + "; " + io::format_duration(now_seconds() - epoch_start);
      if (st.stopped_by_budget) summary += " (time budget reached)";
      if (improved) summary += " *";
      if (const std::string eta = run_eta_text(0.0); !eta.empty() && !st.stopped_by_budget) summary += "; " + eta;
      bar->finish(summary);
      if (!output.terminal) *progress << std::flush;
    }
    if (st.stopped_by_budget)
      say("time budget of " + format_number(cfg.time_budget_minutes) + " min reached after " + std::to_string(st.step) + " of " +
          std::to_string(cosine.total_steps) + " planned steps");
    if (cfg.stop_after_epoch > 0 && epoch == cfg.stop_after_epoch && st.epoch < cfg.epochs && !st.stopped_by_budget) {
      result.stopped_by_hook = true;
      result.epochs_run = st.epoch;
      result.steps = st.step;
      result.best_epoch = st.best_epoch;
      result.seconds = st.seconds;
      say("stopped after epoch " + std::to_string(epoch) + " (--stop-after-epoch); continue with --resume");
      return result;
    }
  }

  // The final model: the best checkpoint's weights (the last one if no epoch had a finite metric).
  const train::Checkpoint best = fs::exists(slots.best_path()) ? slots.load_best() : slots.load_last();
  {
    const std::vector<float> w = best.array<float>("params");
    if (w.size() != store.size()) throw ModelFileError(best.source(), "parameter count differs from the model");
    std::copy(w.begin(), w.end(), store.values().begin());
  }
  result.epochs_run = st.epoch;
  result.steps = st.step;
  result.best_epoch = best.integer("best_epoch");
  result.stopped_by_budget = st.stopped_by_budget;
  result.seconds = st.seconds;
  for (const auto& r : curve)
    if (r.epoch == result.best_epoch) {
      result.best_validation.loss = r.val_loss;
      result.best_validation.metrics = r.val;
    }

  std::map<std::string, std::string> meta = task.model_metadata();
  meta["training.data_checksum"] = data;
  meta["training.seed"] = std::to_string(cfg.seed);
  meta["training.code_version"] = std::string(flt::version()) + " (" + flt::git_commit() + ")";
  meta["training.epochs"] = std::to_string(st.epoch);
  meta["training.best_epoch"] = std::to_string(result.best_epoch);
  meta["training.steps"] = std::to_string(best.step);
  meta["training.planned_steps"] = std::to_string(cosine.total_steps);
  meta["training.stopped_by_budget"] = st.stopped_by_budget ? "true" : "false";
  meta["training.config"] = fingerprint;
  result.model_path = dir / "model.flt";
  model.save(result.model_path, meta);
  write_curve_plots(dir, metrics, curve);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Options.

void add_run_options(io::OptionSchema& s, std::int64_t epochs, std::size_t batch_size, double lr) {
  s.option("epochs", "train", OptionType::integer, std::to_string(epochs), "training epochs (the schedule is planned over them)");
  s.option("batch-size", "train", OptionType::integer, std::to_string(batch_size), "examples per mini-batch");
  s.option("lr", "train", OptionType::real, io::csv_number(lr), "peak learning rate (AdamW)");
  s.option("min-lr", "train", OptionType::real, "1e-05", "final learning rate of the cosine schedule");
  s.option("weight-decay", "train", OptionType::real, "0.05", "AdamW decoupled weight decay (matrices only)");
  s.option("warmup-steps", "train", OptionType::integer, "-1", "linear warm-up steps (-1: 5% of the planned steps)");
  s.option("clip-norm", "train", OptionType::real, "1", "clip gradients to this global norm (0: off)");
  s.option("seed", "train", OptionType::integer, "0", "seed of initialisation, random features, shuffling and augmentation");
  s.option("threads", "train", OptionType::integer, "0", "OpenMP threads (0: all cores)");
  s.option("time-budget", "train", OptionType::real, "0",
           "stop training when its wall time reaches this many minutes (0: off; the cosine schedule "
           "stays planned over --epochs)");
  s.option("eval-batch-size", "train", OptionType::integer, "256", "examples per batch when evaluating");
  s.option("out", "run", OptionType::path, std::nullopt, "run directory (new or empty; see --overwrite, --resume)");
  s.option("overwrite", "run", OptionType::boolean, "false", "replace an existing flt run directory").persist = false;
  s.option("resume", "run", OptionType::boolean, "false", "continue the interrupted run in --out").persist = false;
  {
    io::OptionSpec& c = s.option("config", "run", OptionType::path, std::nullopt, "INI file of options (command line overrides)");
    c.optional = true;
    c.persist = false;
  }
  s.option("stop-after-epoch", "run", OptionType::integer, "0", "testing: stop after this epoch's checkpoint as if interrupted (0: off)")
      .persist = false;
  // The spellings every flt subcommand shares.
  s.add_spellings("out", 'o', {"output"});
  s.add_spellings("threads", 'j');
}

namespace {

// A key the task sets itself rather than from a [model] option: one of `owned`, or a key the
// model's output head does not use (head_hidden sizes the pooled head's MLP only; a per-token head
// is one Linear layer), which would otherwise be an option that changes nothing.
bool task_owns(const std::string& key, const std::vector<std::string>& owned, const TokenModelConfig& base) {
  if (std::find(owned.begin(), owned.end(), key) != owned.end()) return true;
  return key == "head_hidden" && base.head == OutputHead::per_token;
}

}  // namespace

void add_model_options(io::OptionSchema& s, const TokenModelConfig& defaults, const std::vector<std::string>& owned) {
  for (const auto& [key, value] : models::config_to_strings(defaults)) {
    if (task_owns(key, owned, defaults)) continue;
    std::string help = "model hyper-parameter " + key;
    if (key == "attention") help = "attention: flt (FLT with RPE), performer (no RPE), toeplitz (exact RPE by FFT)";
    else if (key == "num_features") help = "Performer random features per head (m)";
    else if (key == "num_frequencies") help = "RPE random frequencies per head (R, flt)";
    else if (key == "spectrum") help = "RPE spectrum: gaussian_mixture or local_window (local RPE)";
    else if (key == "width") help = "model width D";
    else if (key == "heads") help = "attention heads H";
    else if (key == "blocks") help = "encoder blocks";
    else if (key == "patch") help = "patch side p in pixels (images)";
    else if (key == "causal") help = "causal attention (tokens only)";
    io::OptionSpec& spec = s.option(dashed(key), "model", OptionType::string, value, help);
    if (key == "attention") spec.choices = {"flt", "performer", "toeplitz"};
  }
}

TaskRunConfig run_config_from_options(const io::ResolvedOptions& o) {
  TaskRunConfig c;
  auto positive = [&](const char* name) {
    const auto v = o.get_int(name);
    if (v < 1) throw ConfigError(std::string("--") + name + " must be at least 1");
    return v;
  };
  c.epochs = positive("epochs");
  c.batch_size = static_cast<std::size_t>(positive("batch-size"));
  c.eval_batch_size = static_cast<std::size_t>(positive("eval-batch-size"));
  c.lr = o.get_real("lr");
  c.min_lr = o.get_real("min-lr");
  if (!(c.lr > 0)) throw ConfigError("--lr must be > 0");
  if (c.min_lr < 0 || c.min_lr > c.lr) throw ConfigError("--min-lr must lie in [0, lr]");
  c.weight_decay = o.get_real("weight-decay");
  if (c.weight_decay < 0) throw ConfigError("--weight-decay must be >= 0");
  c.warmup_steps = o.get_int("warmup-steps");
  if (c.warmup_steps < -1) throw ConfigError("--warmup-steps must be >= 0 (or -1: 5% of the planned steps)");
  c.clip_norm = o.get_real("clip-norm");
  if (c.clip_norm < 0) throw ConfigError("--clip-norm must be >= 0 (0: off)");
  c.seed = static_cast<std::uint64_t>(o.get_int("seed"));
  const auto threads = o.get_int("threads");
  if (threads < 0) throw ConfigError("--threads must be >= 0");
  c.threads = static_cast<int>(threads);
  c.time_budget_minutes = o.get_real("time-budget");
  if (c.time_budget_minutes < 0) throw ConfigError("--time-budget must be >= 0 (0: off)");
  c.out = o.get_string("out");
  c.overwrite = o.get_bool("overwrite");
  c.resume = o.get_bool("resume");
  if (c.overwrite && c.resume) throw ConfigError("--overwrite and --resume exclude each other");
  c.stop_after_epoch = o.get_int("stop-after-epoch");
  return c;
}

TokenModelConfig model_config_from_options(const io::ResolvedOptions& o, const TokenModelConfig& base,
                                           const std::vector<std::string>& owned) {
  std::map<std::string, std::string> values;
  for (const auto& [key, value] : models::config_to_strings(base)) {
    if (task_owns(key, owned, base)) values[key] = value;
    else values[key] = o.get_string(dashed(key));
  }
  try {
    return models::token_config_from_strings(values);
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("model options: ") + e.what());
  }
}

io::ResolvedOptions parse_task_command_line(const io::OptionSchema& schema, const std::vector<std::string>& args,
                                               std::vector<std::string>* positional) {
  const io::CommandLine cl = io::parse_command_line(schema, args);
  std::optional<io::IniFile> file;
  bool resume = false;
  std::string out;
  for (const auto& [name, value] : cl.options) {
    if (name == "config") file = io::IniFile::load(value);
    if (name == "resume") resume = io::parse_bool_value(value, "--resume");
    if (name == "out") out = value;
  }
  if (!file && resume && !out.empty() && fs::exists(fs::path(out) / "config.ini")) file = io::IniFile::load(fs::path(out) / "config.ini");
  if (positional) *positional = cl.positional;
  return io::resolve_options(schema, file ? &*file : nullptr, cl.options);
}

// ---------------------------------------------------------------------------------------------
// Helpers.

std::vector<std::span<const std::size_t>> batch_spans(std::span<const std::size_t> order, std::size_t batch_size) {
  require(batch_size > 0, "batch_spans: batch size must be positive");
  std::vector<std::span<const std::size_t>> out;
  for (std::size_t b = 0; b < order.size(); b += batch_size) out.push_back(order.subspan(b, std::min(batch_size, order.size() - b)));
  return out;
}

std::string fingerprint_bytes(std::string_view bytes) { return "crc32:" + io::hex32(io::crc32(bytes)); }

std::string format_doubles(std::span<const double> values) {
  std::string out;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (std::isnan(values[i])) throw InvalidArgument("format_doubles: NaN");
    if (i) out += ',';
    out += io::csv_number(values[i]);
  }
  return out;
}

std::vector<double> parse_doubles(std::string_view text, const std::string& what) {
  std::vector<double> out;
  if (text.empty()) return out;
  std::size_t pos = 0;
  while (true) {
    const std::size_t comma = text.find(',', pos);
    const std::string item(text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos));
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (item.empty() || end != item.c_str() + item.size() || !std::isfinite(v))
      throw InputError(what, 0, "'" + item + "' is not a finite number");
    out.push_back(v);
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

const std::string& require_metadata(const std::map<std::string, std::string>& metadata, const std::string& key,
                                    const std::string& source) {
  const auto it = metadata.find(key);
  if (it == metadata.end()) throw ModelFileError(source, "missing metadata entry '" + key + "' (not a model of this task?)");
  return it->second;
}

void write_metrics_json(const fs::path& path, const std::vector<std::pair<std::string, double>>& numbers,
                        const std::vector<std::pair<std::string, std::string>>& strings) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : numbers) {
    // Counts arrive as doubles: integral values are written as JSON integers (6, not 6.0).
    if (!std::isfinite(v)) j[k] = nullptr;
    else if (v == std::trunc(v) && std::fabs(v) < 0x1p53) j[k] = static_cast<std::int64_t>(v);
    else j[k] = v;
  }
  for (const auto& [k, v] : strings) j[k] = v;
  io::write_file_atomic(path, io::dump_json(j) + "\n");
}

bool write_run_summary(std::ostream& out, const TaskRunResult& run, const std::string& model_note,
                       const std::string& examples, std::size_t train, std::size_t validation,
                       std::size_t test) {
  out << "run directory: " << run.run_dir.string() << "\n";
  if (run.stopped_by_hook) {
    out << "stopped after epoch " << run.epochs_run << " (continue with --resume)\n";
    return false;
  }
  out << "model: " << run.model_path.string() << " (" << model_note << ")\n";
  out << examples << ": " << train << " train, " << validation << " validation, " << test << " test\n";
  out << "epochs: " << run.epochs_run << " of " << run.planned_epochs << " (best " << run.best_epoch << "), steps "
      << run.steps << " of " << run.planned_steps << (run.stopped_by_budget ? ", stopped by the time budget" : "")
      << "; training time " << io::format_duration(run.seconds) << "\n";
  return true;
}

const std::vector<std::string>& sequence_task_owned_keys() {
  static const std::vector<std::string> keys = {"input", "vocab_size", "image_height", "image_width", "patch",
                                                "head", "num_outputs", "causal", "seed"};
  return keys;
}

}  // namespace flt::tasks
