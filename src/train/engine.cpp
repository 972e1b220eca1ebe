// The training loop (see engine.hpp for the algorithm and the resume contract).
#include "train/engine.hpp"

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/optim.hpp"
#include "core/text.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"
#include "io/ini.hpp"
#include "io/progress.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>

namespace flt::train {

namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr std::uint64_t kShuffleSalt = 0x7368756666ULL;      // "shuff"
constexpr std::uint64_t kStepSalt = 0x6175676d656eULL;       // "augmen"

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct RunState {
  std::int64_t epoch = 0;  // completed epochs
  std::int64_t step = 0;
  std::int64_t bad_epochs = 0;
  std::int64_t best_epoch = 0;
  bool stopped_early = false;
  bool stopped_by_budget = false;
  double seconds = 0;  // training wall time of the run so far
};

std::vector<std::string> curve_header(const std::vector<std::string>& columns) {
  std::vector<std::string> h{"epoch", "step", "lr", "train_loss", "val_loss", "seconds"};
  h.insert(h.end(), columns.begin(), columns.end());
  return h;
}

void write_curve(const fs::path& path, const std::vector<std::string>& columns, const std::vector<CurveRow>& rows) {
  io::AtomicOutputFile out(path);
  io::write_csv_row(out.stream(), curve_header(columns));
  for (const auto& r : rows) {
    std::vector<std::string> f{std::to_string(r.epoch), std::to_string(r.step), io::csv_number(r.lr),
                               io::csv_number(r.train_loss), io::csv_number(r.val_loss), io::csv_number(r.seconds)};
    for (double v : r.columns) f.push_back(io::csv_number(v));
    io::write_csv_row(out.stream(), f);
  }
  out.commit();
}

std::vector<CurveRow> read_curve(const fs::path& path, const std::vector<std::string>& columns) {
  const io::CsvTable t = io::read_csv(path);
  if (t.header != curve_header(columns))
    throw io::csv_error(t.source, 1, "learning-curve columns differ from this run's (" + std::to_string(t.header.size()) +
                                         " columns, expected " + std::to_string(columns.size() + 6) + ")");
  std::vector<CurveRow> rows;
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    const auto num = [&](std::size_t c) { return io::parse_csv_number(t.rows[r][c], t, r, c); };
    const double epoch = num(0), step = num(1);
    if (!(epoch == std::floor(epoch)) || !(step == std::floor(step)))
      throw io::csv_error(t.source, t.row_lines[r], "epoch and step must be integers");
    CurveRow c;
    c.epoch = static_cast<std::int64_t>(epoch);
    c.step = static_cast<std::int64_t>(step);
    c.lr = num(2);
    c.train_loss = num(3);
    c.val_loss = num(4);
    c.seconds = num(5);
    for (std::size_t m = 0; m < columns.size(); ++m) c.columns.push_back(num(6 + m));
    rows.push_back(std::move(c));
  }
  return rows;
}

void save_state(Checkpoint& ck, const RunState& st, std::span<const float> params, const AdamW<float>& opt,
                const ExponentialMovingAverage<float>* ema, const ReduceLROnPlateau* plateau,
                const std::string& fingerprint, const std::string& checksum,
                const std::string& validation_checksum) {
  ck.epoch = st.epoch;
  ck.step = st.step;
  ck.set_array<float>("params", params);
  ck.set_array<float>("adam_m", opt.state().m);
  ck.set_array<float>("adam_v", opt.state().v);
  ck.set_integer("adam_step", opt.state().step);
  if (ema) {
    ck.set_array<float>("ema_shadow", ema->state().shadow);
    ck.set_integer("ema_updates", ema->state().num_updates);
  }
  if (plateau) {
    const PlateauState& p = plateau->state();
    ck.set_scalar("plateau_lr", p.lr);
    ck.set_scalar("plateau_best", p.best);
    ck.set_integer("plateau_bad", p.num_bad_epochs);
    ck.set_integer("plateau_cooldown", p.cooldown_counter);
    ck.set_integer("plateau_last_epoch", p.last_epoch);
  }
  ck.set_integer("bad_epochs", st.bad_epochs);
  ck.set_integer("best_epoch", st.best_epoch);
  ck.set_integer("stopped_early", st.stopped_early ? 1 : 0);
  ck.set_integer("stopped_by_budget", st.stopped_by_budget ? 1 : 0);
  ck.set_scalar("seconds", st.seconds);
  ck.set_text("config", fingerprint);
  ck.set_text("data_checksum", checksum);
  if (!validation_checksum.empty()) ck.set_text("validation_checksum", validation_checksum);
}

// The weights to evaluate and ship: the EMA shadow when averaging, else the live parameters.
std::vector<float> eval_weights(const Checkpoint& ck) {
  return ck.has_array("ema_shadow") ? ck.array<float>("ema_shadow") : ck.array<float>("params");
}

void validate_config(const EngineConfig& c) {
  if (c.dir.empty()) throw ConfigError("--out: a run directory is required");
  if (c.epochs < 1) throw ConfigError("--epochs must be at least 1");
  if (c.batch_size < 1) throw ConfigError("--batch-size must be at least 1");
  if (c.clip_norm < 0) throw ConfigError("--clip-norm must be >= 0 (0: off)");
  if (!(c.ema_decay >= 0 && c.ema_decay < 1)) throw ConfigError("--ema-decay must lie in [0, 1)");
  if (c.patience < 0) throw ConfigError("--patience must be >= 0 (0: off)");
  if (!(c.time_budget_minutes >= 0)) throw ConfigError("--time-budget must be >= 0 (0: off)");
}

}  // namespace

std::vector<std::vector<std::size_t>> Trainable::batches(std::span<const std::size_t> order,
                                                         std::size_t batch_size) const {
  require(batch_size > 0, "Trainable::batches: batch size must be positive");
  std::vector<std::vector<std::size_t>> out;
  for (std::size_t b = 0; b < order.size(); b += batch_size)
    out.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(b),
                     order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), b + batch_size)));
  return out;
}

std::string Trainable::epoch_summary(const EpochInfo& info) const {
  std::string s = "train loss " + format_number(info.train_loss) + ", val loss " + format_number(info.validation->loss);
  const auto names = curve_columns();
  for (std::size_t m = 0; m < names.size() && m < info.validation->columns.size(); ++m)
    s += ", " + names[m] + " " + format_number(info.validation->columns[m]);
  s += "; lr " + format_number(info.lr, 3);
  if (info.stopped_by_budget) s += " (time budget reached)";
  if (info.improved) s += " *";
  if (!info.eta.empty()) s += "; " + info.eta;
  return s;
}

std::string resume_fingerprint(const std::string& ini_text,
                               const std::vector<std::pair<std::string, std::string>>& neutral_values) {
  const io::IniFile ini = io::IniFile::parse(ini_text, "config");
  std::map<std::string, std::string> sorted;  // "section.key" -> value: independent of key order
  for (const auto& section : ini.sections()) {
    if (section.name == "run") continue;
    for (const auto& e : section.entries) {
      if (section.name == "train" && e.key == "threads") continue;
      const std::string key = section.name + "." + e.key;
      const auto neutral = std::find_if(neutral_values.begin(), neutral_values.end(),
                                        [&](const auto& n) { return n.first == key; });
      if (neutral != neutral_values.end() && neutral->second == e.value) continue;
      sorted[key] = e.value;
    }
  }
  std::string out;
  for (const auto& [key, value] : sorted) out += key + " = " + value + "\n";
  return out;
}

std::string fingerprint_difference(const std::string& now, const std::string& run) {
  const auto entries = [](const std::string& text) {
    std::map<std::string, std::string> out;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);)
      if (const auto eq = line.find(" = "); eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 3);
    return out;
  };
  const auto a = entries(now), b = entries(run);
  std::string diff;
  const auto add = [&](const std::string& key) {
    if (diff.size() > 400) return;
    const auto x = a.find(key), y = b.find(key);
    diff += (diff.empty() ? "" : "; ") + key + " = " + (x == a.end() ? std::string("(unset)") : "'" + x->second + "'") +
            " (the run has " + (y == b.end() ? std::string("it unset") : "'" + y->second + "'") + ")";
  };
  for (const auto& [key, value] : a)
    if (!b.contains(key) || b.at(key) != value) add(key);
  for (const auto& [key, value] : b)
    if (!a.contains(key)) add(key);
  return diff.empty() ? "the stored configuration is unreadable" : diff;
}

Engine::Engine(EngineConfig config) : cfg_(std::move(config)) { validate_config(cfg_); }

EngineResult Engine::run(Trainable& task) {
  const EngineConfig& cfg = cfg_;
  const fs::path& dir = cfg.dir;
  std::ostream* progress = cfg.writer ? cfg.progress : nullptr;
  const auto say = [&](const std::string& line) {
    log_info(line);
    if (progress) *progress << line << '\n' << std::flush;
  };
  const std::size_t n = task.train_size();
  if (n == 0) throw ConfigError("no training examples");
  const std::vector<std::string> columns = task.curve_columns();
  const std::string checksum = task.data_checksum();
  const std::string validation_checksum = task.validation_checksum();

  // An epoch's batches: a pure function of (seed, epoch) and the trainable's cut.
  const auto epoch_batches = [&](std::int64_t epoch) {
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    Rng(cfg.seed ^ kShuffleSalt).fork(static_cast<std::uint64_t>(epoch)).shuffle(order);
    return task.batches(order, cfg.batch_size);
  };

  ParameterStore<float>& store = task.parameters();
  AdamW<float> opt(store.size(), AdamWConfig{0.9, 0.999, 1e-8, cfg.weight_decay});
  opt.set_decay_mask(decay_mask_matrices_only(store));
  std::int64_t steps_per_epoch = static_cast<std::int64_t>((n + cfg.batch_size - 1) / cfg.batch_size);
  std::int64_t total_steps = steps_per_epoch * cfg.epochs;
  if (task.batch_count_varies()) {
    total_steps = 0;
    for (std::int64_t e = 1; e <= cfg.epochs; ++e) {
      const auto count = static_cast<std::int64_t>(epoch_batches(e).size());
      if (e == 1) steps_per_epoch = count;
      total_steps += count;
    }
  }
  WarmupCosineSchedule cosine;
  cosine.base_lr = cfg.lr;
  cosine.min_lr = cfg.min_lr;
  cosine.total_steps = total_steps;
  const std::int64_t default_warmup = cfg.default_warmup == DefaultWarmup::one_epoch
                                          ? steps_per_epoch
                                          : std::max<std::int64_t>(1, total_steps / 20);
  cosine.warmup_steps = std::min(total_steps, cfg.warmup_steps < 0 ? default_warmup : cfg.warmup_steps);
  cosine.validate();
  std::unique_ptr<ReduceLROnPlateau> plateau;
  if (cfg.schedule == Schedule::plateau) {
    PlateauConfig pc;
    pc.factor = cfg.plateau_factor;
    pc.patience = cfg.plateau_patience;
    pc.min_lr = cfg.min_lr;
    plateau = std::make_unique<ReduceLROnPlateau>(cfg.lr, pc);
  }
  std::unique_ptr<ExponentialMovingAverage<float>> ema;
  if (cfg.ema_decay > 0) ema = std::make_unique<ExponentialMovingAverage<float>>(store.values(), cfg.ema_decay, true);

  CheckpointSlots slots(dir);
  RunState st;
  std::vector<CurveRow> curve;
  if (cfg.resume) {
    if (!slots.has_last())
      throw ConfigError(dir.string() + ": no checkpoint-last.flt to resume from: the run stopped before its first epoch ended (start it again with --overwrite instead of --resume)");
    const Checkpoint ck = slots.load_last();
    const std::string& stored_config = ck.text("config");
    if (stored_config != cfg.config_fingerprint &&
        (cfg.config_fingerprint_as_given.empty() || stored_config != cfg.config_fingerprint_as_given))
      throw ConfigError(dir.string() + ": --resume with a configuration that differs from the interrupted run's (" +
                        fingerprint_difference(cfg.config_fingerprint, ck.text("config")) +
                        "; only --threads and the [run] options may change); resume with --resume --out " +
                        dir.string() + " alone to use the run's config.ini");
    const std::string stored = ck.text("data_checksum");
    if (stored != checksum && !task.accepts_stored_checksum(stored)) {
      const auto kind = [](const std::string& c) { return c.substr(0, c.find(':')); };
      if (kind(stored) != kind(checksum))
        throw ConfigError(dir.string() + ": the run's data checksum (" + stored + ") is of a kind this flt no longer " +
                          "writes (" + kind(checksum) + "); the data cannot be compared: start the run again without " +
                          "--resume");
      throw ConfigError(dir.string() + ": --resume with different training data (checksum " + checksum + ", run " +
                        stored + ")");
    }
    // Checkpoints of earlier runs have no validation checksum: nothing to compare.
    if (!validation_checksum.empty() && ck.has_text("validation_checksum") &&
        ck.text("validation_checksum") != validation_checksum)
      throw ConfigError(dir.string() + ": --resume with different validation data (checksum " + validation_checksum +
                        ", run " + ck.text("validation_checksum") +
                        "): the best epoch would be chosen among metrics of other molecules");
    ck.get_array<float>("params", store.values());
    AdamWState<float> as;
    as.step = ck.integer("adam_step");
    as.m = ck.array<float>("adam_m");
    as.v = ck.array<float>("adam_v");
    opt.load_state(std::move(as));
    if (ema) {
      EmaState<float> es;
      es.shadow = ck.array<float>("ema_shadow");
      es.num_updates = ck.integer("ema_updates");
      ema->load_state(std::move(es));
    }
    if (plateau) {
      PlateauState ps;
      ps.lr = ck.scalar("plateau_lr");
      ps.best = ck.scalar("plateau_best");
      ps.num_bad_epochs = ck.integer("plateau_bad");
      ps.cooldown_counter = ck.integer("plateau_cooldown");
      ps.last_epoch = ck.integer("plateau_last_epoch");
      plateau->load_state(ps);
    }
    st.epoch = ck.epoch;
    st.step = ck.step;
    // Runs of the token-model tasks before the common engine kept neither entry (nor EMA,
    // plateau or patience state): they had neither feature.
    st.bad_epochs = ck.has_integer("bad_epochs") ? ck.integer("bad_epochs") : 0;
    st.best_epoch = ck.integer("best_epoch");
    st.stopped_early = ck.has_integer("stopped_early") && ck.integer("stopped_early") != 0;
    st.stopped_by_budget = ck.has_integer("stopped_by_budget") && ck.integer("stopped_by_budget") != 0;
    st.seconds = ck.scalar("seconds");
    task.load_state(ck);
    if (cfg.writer && fs::exists(dir / "learning_curve.csv")) {
      curve = read_curve(dir / "learning_curve.csv", columns);
      std::erase_if(curve, [&](const CurveRow& r) { return r.epoch > st.epoch; });
    }
    say("resuming " + dir.string() + " after epoch " + std::to_string(st.epoch) + " (step " + std::to_string(st.step) +
        ")");
  }
  std::optional<double> best = slots.best_metric();  // also kept on ranks that write no slots
  task.before_training();

  EngineResult result;
  result.planned_steps = total_steps;
  result.ema = ema != nullptr;
  const double budget_seconds = cfg.time_budget_minutes > 0 ? cfg.time_budget_minutes * 60.0 : 0.0;
  const double session_start = now_seconds();
  const double seconds_before = st.seconds;
  const auto elapsed = [&] { return seconds_before + (now_seconds() - session_start); };
  const std::int64_t session_first_epoch = st.epoch;
  // Whole-run ETA from this session's pace (`fraction` of the current epoch done), capped by the
  // time budget; an upper bound when early stopping may end the run sooner.
  const auto run_eta_text = [&](double fraction) -> std::string {
    const double left = static_cast<double>(cfg.epochs - st.epoch) - fraction;
    auto eta = io::run_eta(now_seconds() - session_start, static_cast<double>(st.epoch - session_first_epoch) + fraction,
                           left);
    if (!eta || left <= 0) return {};
    if (budget_seconds > 0) eta = std::min(*eta, std::max(0.0, budget_seconds - elapsed()));
    return std::string("run ETA ") + (cfg.patience > 0 ? "<= " : "") + io::format_duration(*eta);
  };
  const auto diverged = [&](const std::string& what, std::int64_t epoch) {
    return NumericalError("training diverged: " + what + " at epoch " + std::to_string(epoch) + ", step " +
                          std::to_string(st.step + 1) + "; lower --lr or set --clip-norm");
  };

  while (st.epoch < cfg.epochs && !st.stopped_early && !st.stopped_by_budget) {
    const std::int64_t epoch = st.epoch + 1;
    const auto batches = epoch_batches(epoch);
    task.begin_epoch(epoch);
    double loss_sum = 0, weight_sum = 0, lr = 0;
    const double epoch_start = now_seconds();
    std::unique_ptr<io::ProgressBar> bar;
    if (progress && cfg.terminal)
      bar = std::make_unique<io::ProgressBar>(*progress, true,
                                              "epoch " + std::to_string(epoch) + "/" + std::to_string(cfg.epochs),
                                              batches.size());
    for (std::size_t bi = 0; bi < batches.size(); ++bi) {
      const double step_start = now_seconds();
      task.begin_step(st.step);
      store.zero_grad();
      Rng step_rng = Rng(cfg.seed ^ kStepSalt).fork(static_cast<std::uint64_t>(st.step));
      const StepResult sr = task.train_batch(batches[bi], step_rng);
      if (!std::isfinite(sr.loss)) throw diverged("non-finite loss (" + format_number(sr.loss) + ")", epoch);
      const double norm = cfg.clip_norm > 0 ? clip_grad_norm(store, cfg.clip_norm) : global_grad_norm(store);
      if (!std::isfinite(norm)) throw diverged("non-finite gradient norm", epoch);
      lr = plateau ? plateau->lr() : cosine.lr_at(st.step);
      opt.step(store, lr);
      ++st.step;
      if (ema) ema->update(store.values());
      loss_sum += sr.loss * sr.weight;
      weight_sum += sr.weight;
      result.session_step_seconds += now_seconds() - step_start;
      ++result.session_steps;
      if (bar) {
        const std::string eta = run_eta_text(static_cast<double>(bi + 1) / static_cast<double>(batches.size()));
        bar->update(bi + 1, "loss " + format_number(loss_sum / weight_sum) + (eta.empty() ? "" : ", " + eta));
      }
      if (cfg.on_step) cfg.on_step();
      if (budget_seconds > 0 && elapsed() >= budget_seconds) {
        st.stopped_by_budget = true;
        break;
      }
    }
    task.end_epoch();

    if (ema) ema->swap(store.values());
    const Validation val = task.validate();
    if (ema) ema->swap(store.values());
    require(val.columns.size() == columns.size(), "Engine: validate() returned a wrong number of curve columns");
    st.epoch = epoch;
    st.seconds = elapsed();
    if (plateau && std::isfinite(val.selection)) plateau->step(val.selection);
    const bool improved = std::isfinite(val.selection) && (!best || val.selection < *best);
    if (improved) {
      st.bad_epochs = 0;
      st.best_epoch = epoch;
      best = val.selection;
    } else {
      ++st.bad_epochs;
    }
    if (cfg.patience > 0 && st.bad_epochs >= cfg.patience) st.stopped_early = true;
    curve.push_back({epoch, st.step, lr, weight_sum > 0 ? loss_sum / weight_sum : kNaN, val.loss, st.seconds, val.columns});

    Checkpoint ck;
    for (const auto& b : batches) ck.data_order.insert(ck.data_order.end(), b.begin(), b.end());  // the epoch's order
    save_state(ck, st, store.values(), opt, ema.get(), plateau.get(), cfg.config_fingerprint, checksum,
               validation_checksum);
    task.save_state(ck);
    if (cfg.writer) {
      write_curve(dir / "learning_curve.csv", columns, curve);
      if (improved) slots.save_if_best(ck, val.selection);
      slots.save_last(ck);
    }

    EpochInfo info;
    info.epoch = epoch;
    info.epochs = cfg.epochs;
    info.step = st.step;
    info.batches = batches.size();
    info.lr = lr;
    info.train_loss = curve.back().train_loss;
    info.seconds = st.seconds;
    info.epoch_seconds = now_seconds() - epoch_start;
    info.validation = &val;
    info.improved = improved;
    info.stopped_early = st.stopped_early;
    info.stopped_by_budget = st.stopped_by_budget;
    if (!st.stopped_early && !st.stopped_by_budget) info.eta = run_eta_text(0.0);
    if (progress) {
      const std::string summary = task.epoch_summary(info);
      if (bar) {
        bar->finish(summary);
      } else {
        *progress << "epoch " << epoch << "/" << cfg.epochs << " (" << batches.size() << " batches, "
                  << io::format_duration(info.epoch_seconds) << "): " << summary << '\n'
                  << std::flush;
      }
    }
    task.after_epoch(info);
    if (st.stopped_early) say("early stopping: no validation improvement for " + std::to_string(cfg.patience) + " epochs");
    if (st.stopped_by_budget)
      say("time budget of " + format_number(cfg.time_budget_minutes) + " min reached after " + std::to_string(st.step) +
          " of " + std::to_string(total_steps) + " planned steps");
    if (cfg.stop_after_epoch > 0 && epoch == cfg.stop_after_epoch && st.epoch < cfg.epochs && !st.stopped_early &&
        !st.stopped_by_budget) {
      result.stopped_by_hook = true;
      result.epochs_run = st.epoch;
      result.steps = st.step;
      result.best_epoch = st.best_epoch;
      result.seconds = st.seconds;
      result.curve = std::move(curve);
      say("stopped after epoch " + std::to_string(epoch) + " (--stop-after-epoch); continue with --resume");
      return result;
    }
  }

  // The final weights: the best checkpoint's evaluation weights (the last one's if no epoch had a
  // finite metric).
  if (cfg.barrier) cfg.barrier();
  const Checkpoint final_ck = fs::exists(slots.best_path()) ? slots.load_best() : slots.load_last();
  {
    const std::vector<float> w = eval_weights(final_ck);
    if (w.size() != store.size()) throw ModelFileError(final_ck.source(), "parameter count differs from the model");
    std::copy(w.begin(), w.end(), store.values().begin());
  }
  result.epochs_run = st.epoch;
  result.steps = st.step;
  result.best_epoch = final_ck.integer("best_epoch");
  result.best_step = final_ck.step;
  result.stopped_early = st.stopped_early;
  result.stopped_by_budget = st.stopped_by_budget;
  result.seconds = st.seconds;
  for (const auto& r : curve)
    if (r.epoch == result.best_epoch) result.best_row = r;
  result.curve = std::move(curve);
  return result;
}

}  // namespace flt::train
