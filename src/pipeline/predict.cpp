// S molecules, P targets, M ensemble members. Loading, replica lending, ensemble statistics and
// streaming prediction (equations in predict.hpp).
#include "pipeline/predict.hpp"

#include "core/error.hpp"
#include "core/log.hpp"
#include "models/model_io.hpp"
#include "io/model_file.hpp"
#include "io/units.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <utility>

namespace flt::pipeline {

// ---------------------------------------------------------------------------------------------
// Conformers of the training.

std::optional<TrainedConformers> trained_conformers(const Predictor& predictor) {
  std::optional<TrainedConformers> agreed;
  for (const auto& member : predictor.members()) {
    const auto& meta = member->metadata();
    const auto seed = meta.find("training.conformer_seed"), optimize = meta.find("training.conformer_optimize"),
               attempts = meta.find("training.conformer_attempts");
    if (seed == meta.end() || optimize == meta.end() || attempts == meta.end()) return std::nullopt;
    TrainedConformers c;
    try {
      c.seed = static_cast<std::uint32_t>(std::stoul(seed->second));
      c.optimize = chem::optimize_from_name(optimize->second);
      c.attempts = std::stoi(attempts->second);
    } catch (const std::exception&) {
      return std::nullopt;  // not written by flt: ignored
    }
    if (agreed && (agreed->seed != c.seed || agreed->optimize != c.optimize || agreed->attempts != c.attempts))
      return std::nullopt;
    agreed = c;
  }
  return agreed;
}

// ---------------------------------------------------------------------------------------------
// Threads.

ScopedThreads::ScopedThreads(int threads) {
  if (threads <= 0) return;
  // nthreads-var is a per-thread (data environment) setting: this changes the team size of
  // parallel regions started by the calling thread only, not by other threads of the process.
  previous_ = omp_get_max_threads();
  omp_set_num_threads(threads);
  active_ = true;
}

ScopedThreads::~ScopedThreads() {
  if (active_) omp_set_num_threads(previous_);
}

// ---------------------------------------------------------------------------------------------
// LoadedModel.

// A replica borrowed for the duration of one call, returned to the idle list afterwards (also
// when the call throws).
class LoadedModel::Lease {
 public:
  Lease(const LoadedModel& owner, std::unique_ptr<models::MoleculeModel<float>> model)
      : owner_(&owner), model_(std::move(model)) {}
  Lease(Lease&&) = default;
  ~Lease() {
    if (!model_) return;
    model_->reset_attention_stats();
    std::lock_guard<std::mutex> lock(owner_->idle_mutex_);
    owner_->idle_.push_back(std::move(model_));
  }
  models::MoleculeModel<float>& operator*() const { return *model_; }
  models::MoleculeModel<float>* operator->() const { return model_.get(); }

 private:
  const LoadedModel* owner_;
  std::unique_ptr<models::MoleculeModel<float>> model_;
};

LoadedModel::~LoadedModel() = default;

std::unique_ptr<models::MoleculeModel<float>> LoadedModel::make_replica() const {
  auto model = std::make_unique<models::MoleculeModel<float>>(config_);
  model->import_arrays(arrays_);
  return model;
}

LoadedModel::Lease LoadedModel::lease() const {
  {
    std::lock_guard<std::mutex> lock(idle_mutex_);
    if (!idle_.empty()) {
      auto model = std::move(idle_.back());
      idle_.pop_back();
      return Lease(*this, std::move(model));
    }
  }
  // No idle replica: build one outside the lock (other calls proceed meanwhile).
  return Lease(*this, make_replica());
}

void LoadedModel::init(models::ModelConfig config, std::vector<models::NamedArray> arrays,
                       std::map<std::string, std::string> metadata, std::string source) {
  source_ = std::move(source);
  config_ = std::move(config);
  arrays_ = std::move(arrays);
  metadata_ = std::move(metadata);
  try {
    prototype_ = make_replica();
  } catch (const ModelFileError&) {
    throw;
  } catch (const Error& e) {
    throw ModelFileError(source_, std::string("inconsistent model: ") + e.what());
  }
  norm_ = prototype_->normalisation();
  parameter_count_ = static_cast<std::size_t>(prototype_->parameters().size());
}

std::shared_ptr<const LoadedModel> LoadedModel::from_model(const models::MoleculeModel<float>& model,
                                                           std::string name,
                                                           std::map<std::string, std::string> metadata) {
  std::shared_ptr<LoadedModel> loaded(new LoadedModel());
  loaded->init(model.config(), model.export_arrays(), std::move(metadata), std::move(name));
  return loaded;
}

std::shared_ptr<LoadedModel> LoadedModel::from_member_file(const io::ModelFile& file,
                                                          std::filesystem::path path) {
  // ModelFileError (inconsistent configuration or arrays) passes through, naming file.source().
  std::map<std::string, std::string> metadata;
  const std::unique_ptr<models::MoleculeModel<float>> model = models::from_model_file<float>(file, &metadata);
  // The container's reserved entries (the reader accepts only this format and version).
  metadata["format"] = models::kModelFileFormat;
  metadata["format_version"] = std::to_string(io::kModelFormatVersion);
  std::shared_ptr<LoadedModel> loaded(new LoadedModel());
  loaded->init(model->config(), model->export_arrays(), std::move(metadata), file.source());
  loaded->file_ = std::move(path);
  return loaded;
}

std::shared_ptr<const LoadedModel> LoadedModel::from_file(const io::ModelFile& file) {
  return from_member_file(file, {});
}

std::vector<std::shared_ptr<const LoadedModel>> LoadedModel::load_members(const std::filesystem::path& path) {
  // IoError (unreadable) and ModelFileError (corrupt, unknown version, inconsistent) pass through.
  std::vector<std::shared_ptr<const LoadedModel>> members;
  for (const io::ModelFile& file : models::read_member_files(path))
    members.push_back(from_member_file(file, path));
  return members;
}

std::shared_ptr<const LoadedModel> LoadedModel::load(const std::filesystem::path& path) {
  auto members = load_members(path);
  if (members.size() != 1)
    throw ModelFileError(path.string(), "an ensemble of " + std::to_string(members.size()) +
                                            " models, where one model is expected");
  return std::move(members.front());
}

bool LoadedModel::supports_element(int z) const noexcept { return prototype_->supports_element(z); }

std::optional<std::string> LoadedModel::unsupported_reason(const models::Molecule& molecule) const {
  return prototype_->unsupported_reason(molecule);
}

Mat<double> LoadedModel::predict(const models::MoleculeBatch& batch, int threads,
                                 Mat<double>* contributions) const {
  prototype_->check_batch(batch);  // clear error before borrowing anything
  ScopedThreads scoped(threads);
  Lease model = lease();
  return model->predict(batch, contributions);
}

Mat<double> LoadedModel::predict_with_forces(const models::MoleculeBatch& batch, Index target,
                                             Mat<double>& forces, int threads,
                                             Mat<double>* contributions) const {
  prototype_->check_batch(batch);
  ScopedThreads scoped(threads);
  Lease model = lease();
  return model->predict_with_forces(batch, target, forces, contributions);
}

std::vector<double> LoadedModel::rpe_function(Index block, Index head,
                                              std::span<const double> rho) const {
  return prototype_->rpe_function(block, head, rho);
}

std::vector<models::NamedArray> LoadedModel::arrays() const { return arrays_; }

std::size_t save_ensemble(const std::vector<std::filesystem::path>& inputs, const std::filesystem::path& out,
                          const std::optional<models::EnsembleCalibration>& calibration) {
  std::vector<io::ModelFile> files;
  std::vector<std::shared_ptr<const LoadedModel>> members;
  for (const auto& path : inputs)
    for (io::ModelFile& file : models::read_member_files(path)) {
      members.push_back(LoadedModel::from_file(file));
      files.push_back(std::move(file));
    }
  io::ModelFile ensemble = models::to_ensemble_file(files);  // refuses fewer than two
  const Predictor check(std::move(members), calibration);       // refuses differing targets
  if (calibration) models::set_calibration(ensemble, *calibration);
  io::write_model_file(out, ensemble);
  return files.size();
}

models::Molecule to_molecule(const chem::PointSet& points) {
  models::Molecule m;
  const std::size_t n = points.size();
  m.atomic_numbers.assign(points.atomic_numbers.begin(), points.atomic_numbers.end());
  m.positions.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto r = static_cast<Index>(i);
    m.positions[i] = {points.positions(r, 0), points.positions(r, 1), points.positions(r, 2)};
  }
  if (points.formal_charges.size() == n)
    m.formal_charges.assign(points.formal_charges.begin(), points.formal_charges.end());
  return m;
}

// ---------------------------------------------------------------------------------------------
// Predictor.

Predictor::Predictor(std::vector<std::shared_ptr<const LoadedModel>> members,
                     std::optional<models::EnsembleCalibration> calibration)
    : members_(std::move(members)), calibration_(std::move(calibration)) {
  require(!members_.empty(), "Predictor: no model given");
  for (const auto& m : members_) require(m != nullptr, "Predictor: null model");
  const auto& first = members_.front()->targets();
  for (std::size_t k = 1; k < members_.size(); ++k) {
    const auto& other = members_[k]->targets();
    bool same = other.size() == first.size();
    for (std::size_t t = 0; same && t < first.size(); ++t)
      same = other[t].name == first[t].name && other[t].unit == first[t].unit &&
             other[t].extensive == first[t].extensive;
    if (!same) {
      auto list = [](const std::vector<models::TargetSpec>& ts) {
        std::string s;
        for (const auto& t : ts) s += (s.empty() ? "" : ", ") + t.name + " [" + t.unit + "]";
        return s;
      };
      throw InvalidArgument("ensemble members predict different targets: " +
                            members_.front()->source() + " has " + list(first) + ", " +
                            members_[k]->source() + " has " + list(other));
    }
  }
  if (!calibration_) return;
  if (members_.size() < 2)
    throw InvalidArgument("a single model cannot be calibrated: it has no spread (calibrate an ensemble of at least two)");
  bool same = calibration_->targets.size() == first.size() && calibration_->factors.size() == first.size();
  for (std::size_t t = 0; same && t < first.size(); ++t) same = calibration_->targets[t] == first[t].name;
  if (!same) throw InvalidArgument("the calibration's targets are not the ensemble's");
  for (const double f : calibration_->factors)
    if (!std::isfinite(f) || f <= 0.0) throw InvalidArgument("calibration factors must be finite and > 0");
}

Predictor Predictor::load(const std::vector<std::filesystem::path>& paths) {
  std::vector<std::shared_ptr<const LoadedModel>> members;
  std::optional<models::EnsembleCalibration> calibration;
  members.reserve(paths.size());
  for (const auto& p : paths) {
    // IoError and ModelFileError pass through, naming the file.
    io::ModelFile file = io::read_model_file(p, {});
    // In the first member's target order; the constructor checks it against the members'.
    std::optional<models::EnsembleCalibration> file_calibration = models::read_calibration(file);
    for (const io::ModelFile& member : models::member_files(std::move(file)))
      members.push_back(LoadedModel::from_member_file(member, p));
    if (!file_calibration) continue;
    if (paths.size() > 1) {
      log_warning(p.string(), ": its calibration was fitted for its own members alone; with other models the "
                              "uncalibrated spread is used");
      continue;
    }
    calibration = std::move(file_calibration);
  }
  return Predictor(std::move(members), std::move(calibration));
}

const std::vector<models::TargetSpec>& Predictor::targets() const noexcept {
  return members_.front()->targets();
}

std::size_t Predictor::forces_target(const std::string& name) const {
  const auto& t = targets();
  const auto is_energy = [](const models::TargetSpec& spec) {
    return spec.extensive && io::is_known_unit(spec.unit) &&
           io::find_unit(spec.unit).dimension == io::Dimension::energy;
  };
  std::string energies;
  for (const auto& spec : t)
    if (is_energy(spec)) energies += (energies.empty() ? "" : ", ") + spec.name;
  for (std::size_t k = 0; k < t.size(); ++k) {
    if (name.empty() ? is_energy(t[k]) : t[k].name == name) {
      if (!is_energy(t[k]))
        throw InvalidArgument("forces: target '" + name + "' is not an extensive energy (" +
                              (t[k].extensive ? "unit " + t[k].unit : "a per-molecule mean") +
                              "); energy targets of this model: " +
                              (energies.empty() ? "none" : energies));
      return k;
    }
  }
  if (name.empty())
    throw InvalidArgument("forces: the model has no extensive energy target to differentiate");
  throw InvalidArgument("forces: the model has no target '" + name + "'; energy targets: " +
                        (energies.empty() ? "none" : energies));
}

std::vector<std::size_t> Predictor::contribution_targets(const std::vector<std::string>& names) const {
  const auto& t = targets();
  std::string extensive;
  for (const auto& spec : t)
    if (spec.extensive) extensive += (extensive.empty() ? "" : ", ") + spec.name;
  if (extensive.empty()) extensive = "none";
  std::vector<std::size_t> chosen;
  if (names.empty()) {
    for (std::size_t k = 0; k < t.size(); ++k)
      if (t[k].extensive) chosen.push_back(k);
    if (chosen.empty())
      throw InvalidArgument("per-atom contributions: the model has no extensive (sum-pooled) target; "
                            "its targets are per-molecule means, which do not split into atoms");
    return chosen;
  }
  for (const auto& name : names) {
    const auto it = std::find_if(t.begin(), t.end(), [&](const auto& spec) { return spec.name == name; });
    if (it == t.end())
      throw InvalidArgument("per-atom contributions: the model has no target '" + name +
                            "'; extensive targets: " + extensive);
    if (!it->extensive)
      throw InvalidArgument("per-atom contributions: target '" + name +
                            "' is intensive (a per-molecule mean), which does not split into atoms; "
                            "extensive targets: " + extensive);
    const auto k = static_cast<std::size_t>(it - t.begin());
    if (std::find(chosen.begin(), chosen.end(), k) == chosen.end()) chosen.push_back(k);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

std::optional<std::string> Predictor::unsupported_reason(const models::Molecule& molecule) const {
  std::vector<std::optional<std::string>> reasons;
  for (const auto& m : members_) reasons.push_back(m->unsupported_reason(molecule));
  const auto refused = std::find_if(reasons.begin(), reasons.end(), [](const auto& r) { return r.has_value(); });
  if (refused == reasons.end()) return std::nullopt;
  std::string reason = **refused;
  // The member is named only where members disagree (e.g. on their elements): a reason every
  // member gives is about the molecule.
  if (std::any_of(reasons.begin(), reasons.end(), [&](const auto& r) { return r != *refused; }))
    reason += " (model " + members_[static_cast<std::size_t>(refused - reasons.begin())]->source() + ")";
  return reason;
}

void Predictor::predict_batch(const models::MoleculeBatch& batch, Mat<double>& mean,
                              Mat<double>& stddev, int threads,
                              std::optional<std::size_t> forces_target, Mat<double>* forces,
                              Mat<double>* forces_stddev, Mat<double>* contributions,
                              Mat<double>* contributions_stddev) const {
  const Index S = batch.num_molecules();
  const auto P = static_cast<Index>(targets().size());
  const auto M = static_cast<double>(members_.size());
  // Members in order; the mean and the spread are summed in member order (fixed), two passes.
  std::vector<Mat<double>> y, f, c;
  y.reserve(members_.size());
  for (const auto& m : members_) {
    Mat<double>* member_contributions = nullptr;
    if (contributions != nullptr) member_contributions = &c.emplace_back();
    if (forces_target) {
      f.emplace_back();
      y.push_back(m->predict_with_forces(batch, static_cast<Index>(*forces_target), f.back(), threads,
                                         member_contributions));
    } else {
      y.push_back(m->predict(batch, threads, member_contributions));
    }
  }
  if (contributions != nullptr) {
    require(contributions_stddev != nullptr, "predict_batch: no place for the contributions' spread");
    // Member order, two passes, as for the predictions (NaN columns of intensive targets stay NaN).
    *contributions = Mat<double>::Zero(batch.num_atoms(), P);
    for (const auto& cm : c) *contributions += cm;
    *contributions /= M;
    *contributions_stddev = Mat<double>::Zero(batch.num_atoms(), P);
    for (const auto& cm : c) contributions_stddev->array() += (cm - *contributions).array().square();
    *contributions_stddev = (*contributions_stddev / M).array().sqrt().matrix();
  }
  if (forces_target) {
    require(forces != nullptr && forces_stddev != nullptr, "predict_batch: no place for the forces");
    *forces = Mat<double>::Zero(batch.num_atoms(), 3);
    for (const auto& fm : f) *forces += fm;
    *forces /= M;
    *forces_stddev = Mat<double>::Zero(batch.num_atoms(), 3);
    if (members_.size() > 1) {
      for (const auto& fm : f) forces_stddev->array() += (fm - *forces).array().square();
      *forces_stddev = (*forces_stddev / M).array().sqrt().matrix();
    }
  }
  mean = Mat<double>::Zero(S, P);
  for (const auto& ym : y) mean += ym;
  mean /= M;
  stddev = Mat<double>::Zero(S, P);
  if (members_.size() > 1) {
    for (const auto& ym : y) stddev.array() += (ym - mean).array().square();
    stddev = (stddev / M).array().sqrt().matrix();
  }
  if (calibration_)
    for (Index t = 0; t < P; ++t) stddev.col(t) *= calibration_->factors[static_cast<std::size_t>(t)];
}

std::vector<MoleculeResult> Predictor::predict_batch(std::span<const models::Molecule> molecules,
                                                     int threads,
                                                     std::optional<std::size_t> forces_target,
                                                     bool contributions) const {
  std::vector<MoleculeResult> results(molecules.size());
  std::vector<const models::Molecule*> good;
  std::vector<std::size_t> where;
  for (std::size_t i = 0; i < molecules.size(); ++i) {
    if (auto reason = unsupported_reason(molecules[i])) {
      results[i].error = *reason;
    } else {
      good.push_back(&molecules[i]);
      where.push_back(i);
    }
  }
  if (good.empty()) return results;
  const auto batch = models::MoleculeBatch::from(std::span<const models::Molecule* const>(good));
  Mat<double> mean, stddev, forces, forces_stddev, atom_values, atom_values_stddev;
  predict_batch(batch, mean, stddev, threads, forces_target, &forces, &forces_stddev,
                contributions ? &atom_values : nullptr, contributions ? &atom_values_stddev : nullptr);
  const auto P = static_cast<std::size_t>(mean.cols());
  for (std::size_t k = 0; k < good.size(); ++k) {
    MoleculePrediction p;
    p.mean.resize(P);
    p.stddev.resize(P);
    for (std::size_t t = 0; t < P; ++t) {
      p.mean[t] = mean(static_cast<Index>(k), static_cast<Index>(t));
      p.stddev[t] = stddev(static_cast<Index>(k), static_cast<Index>(t));
    }
    if (forces_target) {
      const auto atoms = static_cast<Index>(k);
      p.forces = forces.middleRows(batch.index.begin(atoms), batch.index.size(atoms));
      p.forces_stddev = forces_stddev.middleRows(batch.index.begin(atoms), batch.index.size(atoms));
    }
    if (contributions) {
      const auto atoms = static_cast<Index>(k);
      p.contributions = atom_values.middleRows(batch.index.begin(atoms), batch.index.size(atoms));
      p.contributions_stddev =
          atom_values_stddev.middleRows(batch.index.begin(atoms), batch.index.size(atoms));
    }
    // Never passed on as a result: a NaN or infinite value or force is an error of its record.
    // (Contributions of intensive targets are NaN by definition.)
    const bool finite = std::all_of(p.mean.begin(), p.mean.end(), [](double v) { return std::isfinite(v); }) &&
                        (!forces_target || p.forces.allFinite());
    if (!finite) {
      results[where[k]].error = "the prediction is not finite (NaN or infinite values" +
                                std::string(forces_target ? " or forces" : "") + ")";
      continue;
    }
    results[where[k]].prediction = std::move(p);
  }
  return results;
}

MoleculePrediction Predictor::predict(const models::Molecule& molecule, int threads) const {
  if (auto reason = unsupported_reason(molecule)) throw InvalidArgument(*reason);
  auto results = predict_batch(std::span<const models::Molecule>(&molecule, 1), threads);
  if (!results.front().ok()) throw NumericalError(results.front().error);
  return std::move(*results.front().prediction);
}

MoleculePrediction Predictor::predict(const chem::PointSet& points, int threads) const {
  const models::Molecule molecule = to_molecule(points);
  if (auto reason = unsupported_reason(molecule))
    throw InputError(points.source, points.record, *reason);
  return predict(molecule, threads);
}

std::string PredictSummary::describe() const {
  std::string s = "predicted " + std::to_string(predicted) + " of " + std::to_string(read) +
                  " record" + (read == 1 ? "" : "s");
  if (skipped.empty()) return s;
  s += "; skipped " + std::to_string(skipped.size()) + ":";
  for (std::size_t i = 0; i < skipped.size() && i < 10; ++i) {
    const auto& k = skipped[i];
    s += (i == 0 ? " " : "; ") + k.file;
    if (k.record > 0) s += " record " + std::to_string(k.record);
    s += ": " + k.reason;
  }
  if (skipped.size() > 10) s += "; ... (" + std::to_string(skipped.size() - 10) + " more)";
  return s;
}

PredictSummary Predictor::predict_inputs(
    const std::vector<std::string>& inputs, const chem::ReadOptions& read,
    const PredictOptions& options,
    const std::function<void(chem::PointSet&&, const MoleculePrediction&)>& sink) const {
  return predict_records(inputs, read, options, [&](RecordOutcome&& outcome) {
    if (outcome.ok()) sink(std::move(outcome.points), *outcome.prediction);
  });
}

PredictSummary Predictor::predict_records(const std::vector<std::string>& inputs,
                                          const chem::ReadOptions& read,
                                          const PredictOptions& options,
                                          const std::function<void(RecordOutcome&&)>& sink) const {
  require(options.batch_size >= 1, "predict: the batch size must be at least 1");
  PredictSummary summary;
  // Records wait here in input order until their batch is predicted; failed records queue too,
  // so the sink sees every record in order. A deque keeps the addresses of queued outcomes.
  std::deque<RecordOutcome> queue;
  std::vector<models::Molecule> molecules;
  std::vector<RecordOutcome*> slots;  // queue entry of each molecule of the batch
  molecules.reserve(options.batch_size);

  auto skip = [&](const std::string& file, std::size_t record, const std::string& reason) {
    if (options.on_error == chem::ErrorPolicy::fail) throw InputError(file, record, reason);
    log_warning("skipped ", file, record > 0 ? " record " + std::to_string(record) : "", ": ",
                reason);
    summary.skipped.push_back({file, record, reason});
  };
  auto emit = [&] {
    while (!queue.empty()) {
      RecordOutcome& front = queue.front();
      if (front.ok()) ++summary.predicted;
      sink(std::move(front));
      queue.pop_front();
    }
  };
  std::size_t batch_number = 0;
  auto flush = [&] {
    if (!molecules.empty()) {
      auto compute = [&] {
        return predict_batch(std::span<const models::Molecule>(molecules), options.threads,
                             options.forces_target, options.contributions);
      };
      std::vector<MoleculeResult> results;
      if (options.distribution) {
        auto shared = options.distribution->run(batch_number++, compute);
        if (!shared) {  // not rank 0: rank 0's sink hands these records on
          queue.clear();
          molecules.clear();
          slots.clear();
          return;
        }
        results = std::move(*shared);
        require(results.size() == slots.size(), "predict: a rank sent the results of a different batch");
      } else {
        results = compute();
      }
      for (std::size_t i = 0; i < results.size(); ++i) {
        if (results[i].ok()) {
          slots[i]->prediction = std::move(results[i].prediction);
        } else {
          // Only a check that unsupported_reason missed can land here (it checks every member).
          skip(slots[i]->points.source, slots[i]->points.record, results[i].error);
          slots[i]->error = results[i].error;
        }
      }
      molecules.clear();
      slots.clear();
    }
    emit();
  };

  auto reader = chem::MoleculeReader::open(inputs, read);
  for (;;) {
    std::optional<chem::PointSet> points;
    try {
      points = reader->next();
    } catch (const InputError& e) {
      skip(e.file(), e.record(), e.reason());
      if (e.record() == 0) continue;  // about a file as a whole (e.g. no records): no record
      RecordOutcome outcome;
      outcome.rejected = reader->last_rejected();
      outcome.points = outcome.rejected->partial;
      outcome.error = e.reason();
      queue.push_back(std::move(outcome));
      if (molecules.empty()) emit();
      continue;
    } catch (const IoError& e) {
      std::string reason = e.what();
      const std::string prefix = e.path() + ": ";
      if (reason.rfind(prefix, 0) == 0) reason.erase(0, prefix.size());
      skip(e.path(), 0, reason);
      continue;
    }
    if (!points) break;
    models::Molecule molecule = to_molecule(*points);
    RecordOutcome outcome;
    outcome.points = std::move(*points);
    if (auto reason = unsupported_reason(molecule)) {
      // Checked here, record by record, so the error names the file and the record.
      skip(outcome.points.source, outcome.points.record, *reason);
      outcome.error = *reason;
      queue.push_back(std::move(outcome));
      if (molecules.empty()) emit();
      continue;
    }
    queue.push_back(std::move(outcome));
    molecules.push_back(std::move(molecule));
    slots.push_back(&queue.back());
    if (molecules.size() >= options.batch_size) {
      flush();
      if (options.on_progress) options.on_progress(reader->progress());
    }
  }
  flush();
  if (options.on_progress) options.on_progress(reader->progress());
  summary.read = reader->records_seen();
  return summary;
}

}  // namespace flt::pipeline
