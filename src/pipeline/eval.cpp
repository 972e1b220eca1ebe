// S molecules, P evaluated targets, N rotations. Metrics against labels and rotation sensitivity
// (definitions in eval.hpp).
#include "pipeline/eval.hpp"

#include "core/error.hpp"
#include "core/text.hpp"
#include "core/log.hpp"
#include "core/random.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"
#include "train/split.hpp"
#include "io/units.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace flt::pipeline {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// N copies of `m` rotated about its centroid by uniformly random rotations from `rng`.
void append_rotations(const models::Molecule& m, int n, Rng rng, std::vector<models::Molecule>& out) {
  Eigen::Vector3d c = Eigen::Vector3d::Zero();
  for (const auto& p : m.positions) c += Eigen::Vector3d(p[0], p[1], p[2]);
  c /= static_cast<double>(m.positions.size());
  for (int k = 0; k < n; ++k) {
    const Eigen::Matrix3d R = models::random_rotation(rng);
    models::Molecule copy = m;
    for (auto& p : copy.positions) {
      const Eigen::Vector3d r = R * (Eigen::Vector3d(p[0], p[1], p[2]) - c) + c;
      p = {r(0), r(1), r(2)};
    }
    out.push_back(std::move(copy));
  }
}

std::string number(double v, int precision = 4) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", precision, v);
  return buf;
}

}  // namespace

EvalResult evaluate(const Predictor& predictor, const EvalOptions& options) {
  require(options.rotations >= 0, "eval: the number of rotations must be >= 0");
  require(options.rotations != 1, "eval: the rotation sensitivity needs at least 2 rotations");
  require(options.batch_size >= 1, "eval: the batch size must be at least 1");
  const ScopedThreads scoped_threads(options.threads);  // reading (conformers) too
  const auto& model_targets = predictor.targets();

  // Which model outputs are evaluated, in the order asked for.
  std::vector<std::size_t> columns;
  if (options.targets.empty()) {
    for (std::size_t t = 0; t < model_targets.size(); ++t) columns.push_back(t);
  } else {
    for (const auto& name : options.targets) {
      std::size_t found = model_targets.size();
      for (std::size_t t = 0; t < model_targets.size(); ++t) {
        const auto& mt = model_targets[t].name;
        bool same = mt.size() == name.size();
        for (std::size_t i = 0; same && i < mt.size(); ++i)
          same = std::tolower(static_cast<unsigned char>(mt[i])) ==
                 std::tolower(static_cast<unsigned char>(name[i]));
        if (same) found = t;
      }
      if (found == model_targets.size()) {
        std::string known;
        for (const auto& t : model_targets) known += (known.empty() ? "" : ", ") + t.name;
        throw ConfigError("the model does not predict '" + name + "' (it predicts " + known + ")");
      }
      columns.push_back(found);
    }
  }

  // Labels converted into the model's unit of each target, at the dataset boundary.
  DatasetOptions data = options.data;
  data.targets.clear();
  data.units.clear();
  data.pooling.clear();
  for (std::size_t c : columns) {
    const auto& t = model_targets[c];
    data.targets.push_back(t.name);
    data.units[t.name] = t.unit;
    data.pooling[t.name] = t.extensive ? "sum" : "mean";
  }
  data.max_z = predictor.members().front()->config().max_z;
  Dataset dataset = load_dataset(data);
  if (!options.split_file.empty()) {
    const train::Split split = train::read_split_file(options.split_file, dataset.size(), dataset.ids);
    const std::vector<std::size_t>* chosen = nullptr;
    if (options.subset == "train") chosen = &split.train;
    if (options.subset == "validation") chosen = &split.validation;
    if (options.subset == "test") chosen = &split.test;
    if (chosen == nullptr)
      throw ConfigError("subset must be train, validation or test, not '" + options.subset + "'");
    if (chosen->empty())
      throw InputError(options.split_file, 0, "the " + options.subset + " subset is empty");
    dataset = subset(dataset, *chosen);
  }

  EvalResult result;
  result.rotations = options.rotations;
  result.ensemble_size = predictor.ensemble_size();
  result.calibration = predictor.calibration();
  result.summary = dataset.summary;
  for (std::size_t k = 0; k < columns.size(); ++k) {
    TargetEvaluation te;
    te.name = model_targets[columns[k]].name;
    te.unit = model_targets[columns[k]].unit;
    result.targets.push_back(std::move(te));
  }

  // Molecules the model cannot handle are skipped (or fail) with file and record.
  std::vector<std::size_t> keep;
  for (std::size_t s = 0; s < dataset.size(); ++s) {
    auto reason = predictor.unsupported_reason(dataset.molecules[s]);
    if (!reason) {
      keep.push_back(s);
      continue;
    }
    // dataset.sources[s] is "<file>:<record>".
    const std::string& where = dataset.sources[s];
    const auto colon = where.rfind(':');
    std::string file = where;
    std::size_t record = 0;
    if (colon != std::string::npos) {
      try {
        record = std::stoul(where.substr(colon + 1));
        file = where.substr(0, colon);
      } catch (const std::exception&) {
        record = 0;
      }
    }
    if (options.data.policy == chem::ErrorPolicy::fail) throw InputError(file, record, *reason);
    log_warning("skipped ", where, ": ", *reason);
    result.summary.skipped.push_back({file, record, *reason});
  }
  if (keep.empty()) throw InputError(dataset.sources.empty() ? std::string("input") : dataset.sources.front(), 0,
                                     "no molecules the model can evaluate");

  const auto S = static_cast<Index>(keep.size());
  const auto P = static_cast<Index>(columns.size());
  const auto PM = static_cast<Index>(model_targets.size());
  result.predicted.resize(S, P);
  result.stddev.resize(S, P);
  result.truth.resize(S, P);
  result.rotation_sd = Mat<double>::Zero(options.rotations > 0 ? S : 0, P);
  const int N = options.rotations;

  // Forces of an energy target against the reference forces (eV/Angstrom in the dataset).
  std::optional<std::size_t> force_column;
  double force_factor = 1.0;
  std::vector<double> force_pred, force_true, force_sd;
  if (!options.data.forces_column.empty()) {
    force_column = predictor.forces_target(options.forces_target);
    const models::TargetSpec& ft = model_targets[*force_column];
    force_factor = io::conversion_factor(io::find_unit("eV"), io::find_unit(ft.unit));
    TargetEvaluation te;
    te.name = ft.name + " forces";
    te.unit = ft.unit + "/A";
    result.forces = std::move(te);
    // A forces row of no values would read as a result; as flt train does, refuse it.
    const bool any = std::any_of(keep.begin(), keep.end(), [&](auto i) { return dataset.forces[i].rows() > 0; });
    if (!any)
      throw ConfigError("--forces: none of the " + std::to_string(keep.size()) +
                        " molecules evaluated has forces in column '" + options.data.forces_column +
                        "' (name the file's forces column: --forces NAME)");
  }

  if (options.on_progress) options.on_progress(0, static_cast<std::size_t>(S));
  for (Index begin = 0; begin < S; begin += static_cast<Index>(options.batch_size)) {
    const Index end = std::min(S, begin + static_cast<Index>(options.batch_size));
    std::vector<const models::Molecule*> ptrs;
    for (Index s = begin; s < end; ++s) ptrs.push_back(&dataset.molecules[keep[static_cast<std::size_t>(s)]]);
    const auto batch = models::MoleculeBatch::from(std::span<const models::Molecule* const>(ptrs));
    Mat<double> mean, sd, forces, forces_sd;
    if (force_column) {
      predictor.predict_batch(batch, mean, sd, options.threads, force_column, &forces, &forces_sd);
      for (Index s = begin; s < end; ++s) {
        const Mat<double>& ref = dataset.forces[keep[static_cast<std::size_t>(s)]];
        if (ref.rows() == 0) continue;  // no reference forces for this molecule
        const Index first = batch.index.begin(s - begin);
        for (Index i = 0; i < ref.rows(); ++i)
          for (Index a = 0; a < 3; ++a) {
            force_pred.push_back(forces(first + i, a));
            force_true.push_back(ref(i, a) * force_factor);
            force_sd.push_back(forces_sd(first + i, a));
          }
      }
    } else {
      predictor.predict_batch(batch, mean, sd, options.threads);
    }
    for (Index s = begin; s < end; ++s) {
      const auto row = dataset.label_row(keep[static_cast<std::size_t>(s)]);
      result.ids.push_back(dataset.ids[keep[static_cast<std::size_t>(s)]]);
      for (Index k = 0; k < P; ++k) {
        const auto c = static_cast<Index>(columns[static_cast<std::size_t>(k)]);
        result.predicted(s, k) = mean(s - begin, c);
        result.stddev(s, k) = sd(s - begin, c);
        result.truth(s, k) = row[static_cast<std::size_t>(k)];
      }
    }
    if (N == 0) {
      if (options.on_progress) options.on_progress(static_cast<std::size_t>(end), static_cast<std::size_t>(S));
      continue;
    }
    // N rotated copies of each molecule of this batch, predicted in one call per member.
    std::vector<models::Molecule> rotated;
    rotated.reserve(ptrs.size() * static_cast<std::size_t>(N));
    for (Index s = begin; s < end; ++s)
      append_rotations(*ptrs[static_cast<std::size_t>(s - begin)], N,
                       Rng(options.seed).fork(static_cast<std::uint64_t>(keep[static_cast<std::size_t>(s)])),
                       rotated);
    const auto rbatch = models::MoleculeBatch::from(std::span<const models::Molecule>(rotated));
    Mat<double> rmean, rsd;
    predictor.predict_batch(rbatch, rmean, rsd, options.threads);
    (void)PM;
    for (Index s = begin; s < end; ++s) {
      const Index first = (s - begin) * N;
      for (Index k = 0; k < P; ++k) {
        const auto c = static_cast<Index>(columns[static_cast<std::size_t>(k)]);
        double m = 0;
        for (Index r = 0; r < N; ++r) m += rmean(first + r, c);
        m /= N;
        double v = 0;
        for (Index r = 0; r < N; ++r) v += (rmean(first + r, c) - m) * (rmean(first + r, c) - m);
        result.rotation_sd(s, k) = std::sqrt(v / N);
      }
    }
    if (options.on_progress) options.on_progress(static_cast<std::size_t>(end), static_cast<std::size_t>(S));
  }

  if (result.forces) {
    result.forces->metrics = train::compute_metrics(force_pred, force_true);
    // Per force component: the members' spread of that component against its error.
    if (result.ensemble_size > 1)
      result.forces->uncertainty = train::compute_uncertainty_metrics(force_pred, force_true, force_sd);
  }
  for (Index k = 0; k < P; ++k) {
    std::vector<double> pred(static_cast<std::size_t>(S)), truth(static_cast<std::size_t>(S));
    for (Index s = 0; s < S; ++s) {
      pred[static_cast<std::size_t>(s)] = result.predicted(s, k);
      truth[static_cast<std::size_t>(s)] = result.truth(s, k);
    }
    auto& te = result.targets[static_cast<std::size_t>(k)];
    te.metrics = train::compute_metrics(pred, truth);
    if (result.ensemble_size > 1) {
      std::vector<double> sd(static_cast<std::size_t>(S));
      for (Index s = 0; s < S; ++s) sd[static_cast<std::size_t>(s)] = result.stddev(s, k);
      te.uncertainty = train::compute_uncertainty_metrics(pred, truth, sd);
    }
    if (N > 0) {
      double acc = 0;  // fixed order: molecules in input order
      for (Index s = 0; s < S; ++s) acc += result.rotation_sd(s, k);
      te.rotation_std = acc / static_cast<double>(S);
      te.rotation_fraction = te.metrics.count > 0 && te.metrics.mae > 0 ? te.rotation_std / te.metrics.mae : kNaN;
    }
  }
  return result;
}

models::EnsembleCalibration fit_calibration(const Predictor& predictor, EvalOptions options, const std::string& method) {
  if (predictor.ensemble_size() < 2)
    throw InvalidArgument("a single model cannot be calibrated: it has no spread (give an ensemble of at least two models)");
  const bool coverage = method == models::kCalibrationCoverage;
  if (!coverage && method != models::kCalibrationZScaling)
    throw InvalidArgument("calibration method '" + method + "' is unknown (coverage or zscaling)");
  options.rotations = 0;
  options.targets.clear();  // every target: the factors travel with the ensemble
  const EvalResult result = evaluate(predictor.uncalibrated(), options);
  std::string data;
  for (const auto& input : options.data.inputs) {
    const std::string name = std::filesystem::path(input).filename().string();
    data += (data.empty() ? "" : ", ") + (name.empty() ? input : name);
  }
  std::string where = data;
  if (!options.split_file.empty()) where += " (" + options.subset + " subset of " + options.split_file + ")";
  models::EnsembleCalibration c;
  c.data = data;
  c.subset = options.split_file.empty() ? std::string() : options.subset;
  c.records = result.ids.size();
  c.method = method;
  for (const auto& t : result.targets) {
    const train::UncertaintyMetrics& u = *t.uncertainty;
    if (u.labelled == 0)
      throw InputError(where, 0, "no record has a label of " + t.name + " to calibrate its std on (of " +
                                     std::to_string(result.ids.size()) + " evaluated)");
    if (u.count == 0)
      throw InputError(where, 0, "all " + std::to_string(u.labelled) + " labelled records of " + t.name +
                                     " have std = 0 (the members agree exactly): no factor can be fitted");
    const double factor = coverage ? u.std_coverage_scale : u.std_scale;
    if (!std::isfinite(factor) || factor <= 0.0)
      throw InputError(where, 0, "the " + method + " factor of " + t.name + " is not finite and > 0 (" + number(factor) +
                                     (coverage ? "): a prediction or std is not finite, or most errors are 0"
                                               : "): a prediction or std is not finite, or every error is 0"));
    c.targets.push_back(t.name);
    c.factors.push_back(factor);
  }
  return c;
}

std::string format_eval_table(const EvalResult& result) {
  std::ostringstream o;
  o << "evaluated " << result.ids.size() << " molecule" << (result.ids.size() == 1 ? "" : "s");
  if (result.ensemble_size > 1) o << " with an ensemble of " << result.ensemble_size << " models";
  if (result.rotations > 0) o << "; rotation sensitivity over " << result.rotations << " random rotations";
  o << "\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-10s %-12s %7s %12s %12s %10s %14s %12s\n", "target", "unit",
                "count", "MAE", "RMSE", "R^2", "rotation std", "std/MAE");
  o << line;
  for (const auto& t : result.targets) {
    const std::string frac =
        std::isfinite(t.rotation_fraction) ? number(100.0 * t.rotation_fraction, 3) + " %" : "n/a";
    std::snprintf(line, sizeof line, "%-10s %-12s %7zu %12s %12s %10s %14s %12s\n", t.name.c_str(),
                  io::shown_unit(t.unit).c_str(), t.metrics.count, number(t.metrics.mae).c_str(),
                  number(t.metrics.rmse).c_str(), format_r2(t.metrics.r2).c_str(),
                  number(t.rotation_std).c_str(), frac.c_str());
    o << line;
  }
  if (result.forces) {
    const auto& f = *result.forces;
    std::snprintf(line, sizeof line, "%-10s %-12s %7zu %12s %12s %10s   (per force component of %s)\n", "forces",
                  f.unit.c_str(), f.metrics.count, number(f.metrics.mae).c_str(), number(f.metrics.rmse).c_str(),
                  format_r2(f.metrics.r2).c_str(), f.name.c_str());
    o << line;
  }
  if (result.ensemble_size < 2) return o.str();
  // A single model has no spread: the second table is an ensemble's only.
  if (result.calibration) {
    const auto& c = *result.calibration;
    o << "\nuncertainty: the calibrated std (the spread, population std, of the " << result.ensemble_size
      << " members times the ensemble file's factor, method " << c.method << ", fitted on " << c.data
      << (c.subset.empty() ? std::string() : ", subset " + c.subset) << ", " << c.records
      << " molecules) against the errors of the mean; forces: the plain spread\n";
  } else {
    o << "\nuncertainty: the spread (population std) of the " << result.ensemble_size
      << " members against the errors of the mean\n";
  }
  std::snprintf(line, sizeof line, "%-10s %-12s %7s %6s %9s %9s %9s %9s %9s %9s %9s %9s\n", "target", "unit", "count",
                "std=0", "Spearman", "<=1 std", "<=2 std", "NLL", "miscal.", "ENCE", "s", "q");
  o << line;
  const auto percent = [](double v) { return std::isfinite(v) ? number(100.0 * v, 3) + " %" : std::string("n/a"); };
  std::vector<const TargetEvaluation*> rows;
  for (const auto& t : result.targets) rows.push_back(&t);
  if (result.forces) rows.push_back(&*result.forces);
  for (const TargetEvaluation* row : rows) {
    const auto& t = *row;
    if (!t.uncertainty) continue;
    const auto& u = *t.uncertainty;
    const bool force_row = &t == (result.forces ? &*result.forces : nullptr);
    std::snprintf(line, sizeof line, "%-10s %-12s %7zu %6zu %9s %9s %9s %9s %9s %9s %9s %9s\n",
                  force_row ? "forces" : t.name.c_str(), force_row ? t.unit.c_str() : io::shown_unit(t.unit).c_str(), u.count, u.zero_std, number(u.spearman, 3).c_str(),
                  percent(u.within_1std).c_str(), percent(u.within_2std).c_str(), number(u.nll, 4).c_str(),
                  number(u.miscalibration_area, 3).c_str(), number(u.ence, 3).c_str(), number(u.std_scale, 3).c_str(),
                  number(u.std_coverage_scale, 3).c_str());
    o << line;
  }
  o << "Spearman: rank correlation of |error| and std; <=k std: fraction of |error| within k std\n"
       "(Gaussian: 68.3 %, 95.4 %); NLL: Gaussian negative log-likelihood per molecule, nats, errors\n"
       "in the target's unit; miscal.: miscalibration area over the levels 0.01..0.99; ENCE over\n"
       "min(100, count) bins by std; s = sqrt(mean (error/std)^2) and q = the 68.27 % quantile of\n"
       "|error|/std, the factors that would calibrate the std on these data by z-scaling and by\n"
       "coverage (not applied). docs/prediction.md, \"Uncertainty of an ensemble\"\n";
  if (result.forces && result.forces->uncertainty)
    o << "forces: per force component (count: components), the members' spread of each component\n";
  if (result.calibration) {
    o << "calibration factors (" << result.calibration->method << ", in the scored std):";
    for (std::size_t t = 0; t < result.calibration->targets.size(); ++t)
      o << (t == 0 ? " " : ", ") << result.calibration->targets[t] << " " << number(result.calibration->factors[t], 4);
    o << "\n";
  }
  for (const TargetEvaluation* row : rows)
    if (row->uncertainty && row->uncertainty->zero_std > 0)
      o << row->name << ": " << row->uncertainty->zero_std << " of " << row->uncertainty->labelled
        << (row == (result.forces ? &*result.forces : nullptr) ? " labelled components have" : " labelled molecules have")
        << " std = 0 (the members agree exactly) and are left out of its uncertainty "
           "metrics\n";
  return o.str();
}

void write_eval_csv(const std::filesystem::path& path, const EvalResult& result) {
  io::AtomicOutputFile out(path);
  // The uncertainty columns follow the existing ones, for ensembles only, so a single model's
  // file is what it always was.
  const bool ensemble = result.ensemble_size > 1;
  std::vector<std::string> header = {"target", "unit", "count", "MAE", "RMSE", "R2", "max_abs_error",
                                     "rotations", "rotation_std", "rotation_std_over_MAE"};
  if (ensemble)
    header.insert(header.end(), {"uncertainty_count", "zero_std_count", "spearman_abs_error_std",
                                 "within_1std [fraction]", "within_2std [fraction]", "NLL [nats per record in unit]",
                                 "miscalibration_area", "ENCE", "std_scale", "std_coverage_scale"});
  // Only a calibrated ensemble's file has the column: every other file stays what it was.
  if (ensemble && result.calibration) header.push_back("calibration_factor");
  io::write_csv_row(out.stream(), header);
  const auto uncertainty_cells = [](const train::UncertaintyMetrics& u) {
    return std::vector<std::string>{std::to_string(u.count), std::to_string(u.zero_std), io::csv_number(u.spearman),
                                    io::csv_number(u.within_1std), io::csv_number(u.within_2std), io::csv_number(u.nll),
                                    io::csv_number(u.miscalibration_area), io::csv_number(u.ence),
                                    io::csv_number(u.std_scale), io::csv_number(u.std_coverage_scale)};
  };
  for (const auto& t : result.targets) {
    std::vector<std::string> row = {t.name, io::shown_unit(t.unit), std::to_string(t.metrics.count),
                                    io::csv_number(t.metrics.mae), io::csv_number(t.metrics.rmse),
                                    io::csv_number(t.metrics.r2), io::csv_number(t.metrics.max_abs_error),
                                    std::to_string(result.rotations), io::csv_number(t.rotation_std),
                                    io::csv_number(t.rotation_fraction)};
    if (ensemble) {
      const auto cells = uncertainty_cells(t.uncertainty.value_or(train::UncertaintyMetrics{}));
      row.insert(row.end(), cells.begin(), cells.end());
      if (result.calibration) {
        // The targets evaluated are a selection of the model's, in their own order.
        const auto& c = *result.calibration;
        const auto it = std::find(c.targets.begin(), c.targets.end(), t.name);
        row.push_back(it == c.targets.end() ? "" : io::csv_number(c.factors[static_cast<std::size_t>(it - c.targets.begin())]));
      }
    }
    io::write_csv_row(out.stream(), row);
  }
  if (result.forces) {
    const auto& f = *result.forces;
    std::vector<std::string> row = {f.name, f.unit, std::to_string(f.metrics.count), io::csv_number(f.metrics.mae),
                                    io::csv_number(f.metrics.rmse), io::csv_number(f.metrics.r2),
                                    io::csv_number(f.metrics.max_abs_error), "0", "", ""};
    if (ensemble) {
      const auto cells = uncertainty_cells(f.uncertainty.value_or(train::UncertaintyMetrics{}));
      row.insert(row.end(), cells.begin(), cells.end());
      if (result.calibration) row.push_back("1");  // forces: the plain spread
    }
    io::write_csv_row(out.stream(), row);
  }
  out.commit();
}

void write_eval_predictions_csv(const std::filesystem::path& path, const EvalResult& result) {
  std::vector<train::TargetColumn> columns;
  for (const auto& t : result.targets) columns.push_back({t.name, t.unit});
  const std::size_t n = static_cast<std::size_t>(result.predicted.size());
  // Row-major [S x P] copies (Mat is row-major already, but be explicit about the layout).
  std::vector<double> pred(n), truth(n), sd(n);
  for (Index s = 0; s < result.predicted.rows(); ++s)
    for (Index k = 0; k < result.predicted.cols(); ++k) {
      const auto i = static_cast<std::size_t>(s * result.predicted.cols() + k);
      pred[i] = result.predicted(s, k);
      truth[i] = result.truth(s, k);
      sd[i] = result.stddev(s, k);
    }
  train::write_predictions_csv(path, "id", result.ids, columns, pred, truth,
                               result.ensemble_size > 1 ? std::span<const double>(sd)
                                                        : std::span<const double>(),
                               result.calibration ? "_std_calibrated" : "_std");
}

}  // namespace flt::pipeline
