// Prediction with trained FLT molecule models: loading .flt model files, single models and
// ensembles, physical units, streaming over any input the flt::chem readers handle, the bundled
// default model. This is what `flt predict` and `flt eval` call, and what the public C++ API
// (flt::Model) wraps as a thin facade.
//
// Shapes: S molecules, P targets, M ensemble members. Every returned value is in the unit of its
// target, ModelTargets()[t].unit (energies in eV for models trained by `flt train` by default);
// coordinates are in Angstrom. Ensembles (members with the same targets and units):
//   mean_t = (1/M) sum_m y_mt,  stddev_t = sqrt((1/M) sum_m (y_mt - mean_t)^2)  (0 for M = 1)
// LoadedModel and Predictor are immutable and every method is safe to call from several threads
// at once; results are bitwise the same for any thread count. A molecule the model cannot handle
// is reported per record by batch and streaming calls and thrown by single-molecule calls.
// Example, replicas, threads and errors: docs/prediction.md, "Library".
#pragma once

#include "chem/point_set.hpp"
#include "chem/reader.hpp"
#include "core/tensor.hpp"
#include "models/model_io.hpp"
#include "models/molecule_model.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace flt::comm {
class Communicator;
}
namespace flt::io {
class ModelFile;
}

namespace flt::pipeline {

// One trained model, loaded and validated, immutable. Predicts in float (the network) with the
// normalisation and reference energies applied in double.
class LoadedModel {
 public:
  // Reads a .flt model file (written by `flt train` with models::save_model; layout in
  // models/model_io.hpp). Throws flt::IoError when it cannot be read and flt::ModelFileError
  // (naming the file and the reason) when it is corrupt, truncated, of an unknown format version
  // or inconsistent with its own configuration.
  // An ensemble file (models::kEnsembleFileFormat) is refused here: see load_members.
  static std::shared_ptr<const LoadedModel> load(const std::filesystem::path& path);
  // The models of a model file (one) or of an ensemble file (its M members, in order; each named
  // "<path> [member k of M]"). Errors as for load.
  static std::vector<std::shared_ptr<const LoadedModel>> load_members(const std::filesystem::path& path);
  // A model from one in-memory model file ("flt-model"; models::member_files gives those of an
  // ensemble), named file.source(). ModelFileError when it is inconsistent.
  static std::shared_ptr<const LoadedModel> from_file(const io::ModelFile& file);
  // A copy of an in-memory model's state (the trainer, tests). `metadata` is what `flt info`
  // shows as training metadata; `name` is used in messages.
  static std::shared_ptr<const LoadedModel> from_model(
      const models::MoleculeModel<float>& model, std::string name,
      std::map<std::string, std::string> metadata = {});

  ~LoadedModel();
  LoadedModel(const LoadedModel&) = delete;
  LoadedModel& operator=(const LoadedModel&) = delete;

  // The file it was read from ("FILE [member k of M]" for an ensemble member), or the name given
  // to from_model; used in messages.
  const std::string& source() const noexcept { return source_; }
  // The file it was read from (for an ensemble member: the ensemble file); empty for from_model.
  const std::filesystem::path& file() const noexcept { return file_; }
  const models::ModelConfig& config() const noexcept { return config_; }
  const std::vector<models::TargetSpec>& targets() const noexcept { return config_.targets; }
  // Element set, per-target mean/scale (normalised units -> target unit) and reference energies.
  const models::Normalisation& normalisation() const noexcept { return norm_; }
  // Every string metadata entry of the model file (format version, training data checksum, seed,
  // code version, ...), including the reserved format entries.
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  // Number of trainable scalars.
  std::size_t parameter_count() const noexcept { return parameter_count_; }
  bool supports_element(int z) const noexcept;

  // Why `molecule` cannot be predicted (unknown element, empty, non-finite coordinate, charge out
  // of range), or nullopt.
  std::optional<std::string> unsupported_reason(const models::Molecule& molecule) const;

  // Predictions S x P in the targets' units. Throws InvalidArgument for a molecule the model
  // cannot handle (naming its position in the batch, the atom and the element). `threads`: the
  // OpenMP team size for the calling thread only (0 = OpenMP default). With `contributions`, also the per-atom
  // contributions N x P of the extensive targets (MoleculeModel::atom_contributions; NaN columns
  // for intensive targets). Thread-safe.
  Mat<double> predict(const models::MoleculeBatch& batch, int threads = 0,
                      Mat<double>* contributions = nullptr) const;
  // The same predictions and the forces F = -dE/dr (N x 3, the target's unit per Angstrom) of
  // the extensive target `target` (MoleculeModel::predict_with_forces). Thread-safe.
  Mat<double> predict_with_forces(const models::MoleculeBatch& batch, Index target,
                                  Mat<double>& forces, int threads = 0,
                                  Mat<double>* contributions = nullptr) const;

  // The learned RPE function f(rho) of block `block`, head `head` at distances `rho` (Angstrom);
  // dimensionless (a multiplicative attention mask for "kronecker", a logit bias including the
  // learned scale beta for "bias", the radial logit bias for "exact"). InvalidArgument for the
  // "performer" kind (no RPE) or an index out of range.
  std::vector<double> rpe_function(Index block, Index head, std::span<const double> rho) const;

  // The model's own state as named arrays (what the model file stores), e.g. for copying it into
  // a MoleculeModel<double>.
  std::vector<models::NamedArray> arrays() const;

 private:
  friend class Predictor;  // loads an ensemble file's members and its calibration from one read
  LoadedModel() = default;
  static std::shared_ptr<LoadedModel> from_member_file(const io::ModelFile& file, std::filesystem::path path);
  void init(models::ModelConfig config, std::vector<models::NamedArray> arrays,
            std::map<std::string, std::string> metadata, std::string source);

  struct ReplicaDeleter;
  class Lease;
  std::unique_ptr<models::MoleculeModel<float>> make_replica() const;
  Lease lease() const;

  std::string source_;
  std::filesystem::path file_;
  models::ModelConfig config_;
  models::Normalisation norm_;
  std::map<std::string, std::string> metadata_;
  std::vector<models::NamedArray> arrays_;
  std::size_t parameter_count_ = 0;
  std::unique_ptr<models::MoleculeModel<float>> prototype_;  // never run, only read
  mutable std::mutex idle_mutex_;
  mutable std::vector<std::unique_ptr<models::MoleculeModel<float>>> idle_;
};

// Packs model files (or ensemble files, flattened) into one ensemble file at `out` (written
// atomically), after loading every member and checking that they predict the same targets
// (Predictor's rule). Returns the number of members. IoError / ModelFileError naming the file,
// InvalidArgument for fewer than two models or differing targets.
// With `calibration`, the ensemble file carries it (models::set_calibration; its targets must be
// the members'). Repacking a calibrated ensemble file without one drops its calibration.
std::size_t save_ensemble(const std::vector<std::filesystem::path>& inputs, const std::filesystem::path& out,
                          const std::optional<models::EnsembleCalibration>& calibration = std::nullopt);

// The point set as the model's plain input (atomic numbers, positions in Angstrom, charges).
models::Molecule to_molecule(const chem::PointSet& points);

// One molecule's prediction: P values each.
struct MoleculePrediction {
  std::vector<double> mean;    // ensemble mean (the model's value for M = 1), target units
  std::vector<double> stddev;  // ensemble standard deviation (population, 1/M); zeros for M = 1
  // When forces were asked for (PredictOptions::forces_target): F_i = -dE/dr_i of that target,
  // n x 3 in its unit per Angstrom, the ensemble mean, and the members' standard deviation per
  // component (population, zeros for M = 1). Empty otherwise.
  Mat<double> forces, forces_stddev;
  // When contributions were asked for (PredictOptions::contributions): each atom's contribution to
  // each extensive target, n x P in the target's unit, c_it = e_t[Z_i] + m_t + sigma_t y_it (the
  // atom's element reference energy, the per-atom mean shared equally by all atoms, and the
  // atom's network output; MoleculeModel::atom_contributions), so that sum_i c_it = mean[t] to
  // rounding. The ensemble mean of the members' contributions (which sums to the ensemble mean),
  // and the members' standard deviation per atom (zeros for M = 1). Columns of intensive targets
  // are NaN. Empty otherwise.
  Mat<double> contributions, contributions_stddev;
};

// Atomization energies. A target that is one of QM9's total energies (U0, U, H, G) in an
// energy unit also gives the molecule's atomization energy
//   E_atomization = E - sum_i E_free(Z_i)
// with QM9's free-atom energies at the same level of theory (io::qm9_free_atom_energy),
// converted to the target's unit. It is offered only when every element the model accepts has a
// free-atom energy (H, C, N, O, F), so it exists for every molecule the model can predict. The
// ensemble spread is the total energy's: the subtracted sum is a constant of the molecule.
struct AtomizationOutput {
  std::size_t target = 0;  // index of the total-energy target
  std::string name;        // "<target>_atom", e.g. "U0_atom" (QM9's u0_atom)
  std::string unit;        // the target's unit, e.g. "eV"
};
std::vector<AtomizationOutput> atomization_outputs(const std::vector<models::TargetSpec>& targets,
                                                   std::span<const std::int32_t> model_elements);
// E - sum_i E_free(Z_i) in output.unit. Throws InvalidArgument naming the element when one has no
// QM9 free-atom energy (cannot happen for molecules the model accepted).
double atomization_energy(const AtomizationOutput& output, double total_energy,
                          std::span<const int> atomic_numbers);

// A molecule of a batch: its prediction, or why it could not be predicted.
struct MoleculeResult {
  std::optional<MoleculePrediction> prediction;
  std::string error;  // empty when predicted
  bool ok() const noexcept { return prediction.has_value(); }
};

class BatchDistribution;

struct PredictOptions {
  std::size_t batch_size = 64;  // molecules per model call when streaming (>= 1)
  int threads = 0;              // OpenMP threads per call, 0 = OpenMP default (all cores)
  // Bad input records and molecules the model cannot handle: skip (listed in the summary) or
  // fail (the first one is thrown as flt::InputError naming the file, record and reason).
  chem::ErrorPolicy on_error = chem::ErrorPolicy::skip;
  // Also compute the forces of this target (an extensive energy target; Predictor::forces_target
  // finds the default one). nullopt: no forces (prediction then costs one forward pass only).
  std::optional<std::size_t> forces_target;
  // Also compute the per-atom contributions of the extensive targets (MoleculePrediction::
  // contributions); costs nothing beyond the forward pass.
  bool contributions = false;
  // predict_inputs: called after every batch with how far reading the inputs has got (e.g. a
  // ReadProgressBar, dataset_progress.hpp); may be empty.
  std::function<void(const chem::ReadProgress&)> on_progress;
  // Streaming over the ranks of an MPI job (distribute_batches); null: every batch runs here.
  std::shared_ptr<BatchDistribution> distribution;
};

struct PredictSummary {
  std::size_t read = 0;       // records read from the inputs
  std::size_t predicted = 0;  // records handed to the sink with a prediction
  // Unreadable records and records the model(s) cannot handle, in input order (file, 1-based
  // record, reason).
  std::vector<chem::SkippedRecord> skipped;
  bool ok() const noexcept { return skipped.empty(); }
  // "predicted 45 of 47 records; skipped 2: cdk2.sdf record 3: ...; ..." (at most 10 listed).
  std::string describe() const;
};

// One input record after prediction: predicted, or why not (every record of the input gets one,
// in input order, so that an output can keep them all).
struct RecordOutcome {
  // The record as read; for a record the reader rejected, what it kept (source, record, and when
  // known title and properties; no atoms).
  chem::PointSet points;
  std::optional<MoleculePrediction> prediction;  // set when predicted
  std::string error;                             // the reason otherwise
  // For a record the reader rejected: its input text when known (chem::RejectedRecord).
  std::optional<chem::RejectedRecord> rejected;
  bool ok() const noexcept { return prediction.has_value(); }
};

// A single model or an ensemble of models predicting the same targets.
class Predictor {
 public:
  // Throws InvalidArgument when `members` is empty or the members' targets (names, units,
  // pooling) differ.
  // With `calibration` (an ensemble's factors, fitted by coverage or z-scaling:
  // models::EnsembleCalibration), every target's stddev is the members' spread multiplied by its
  // factor; InvalidArgument for a single model or factors of other targets. The spread of forces
  // and contributions is not scaled.
  explicit Predictor(std::vector<std::shared_ptr<const LoadedModel>> members,
                     std::optional<models::EnsembleCalibration> calibration = std::nullopt);
  // LoadedModel::load_members for each path (errors name the file): an ensemble file contributes
  // all its members. A calibrated ensemble file given alone keeps its calibration; given with
  // other models its factors (fitted for its own members) are not used, with a warning.
  static Predictor load(const std::vector<std::filesystem::path>& paths);

  // The calibration applied to stddev, or nullopt (the members' plain spread).
  const std::optional<models::EnsembleCalibration>& calibration() const noexcept { return calibration_; }
  // The same members without calibration.
  Predictor uncalibrated() const { return Predictor(members_); }

  std::size_t ensemble_size() const noexcept { return members_.size(); }
  const std::vector<std::shared_ptr<const LoadedModel>>& members() const noexcept {
    return members_;
  }
  // The targets, with the unit every predicted value is in.
  const std::vector<models::TargetSpec>& targets() const noexcept;

  // The atomization energies this predictor can add to its targets (see AtomizationOutput): the
  // members' element sets are joined.
  std::vector<AtomizationOutput> atomization_outputs() const;

  // The target whose forces `flt predict --forces` reports: `name` when given (InvalidArgument
  // when it is not an extensive target with an energy unit), else the first such target
  // (InvalidArgument when there is none, e.g. a model of the gap only).
  std::size_t forces_target(const std::string& name = {}) const;

  // The targets whose per-atom contributions `flt predict --per-atom` writes: the named ones
  // (InvalidArgument for an unknown name or an intensive target: a per-molecule mean has no
  // per-atom decomposition), or every extensive target when `names` is empty (InvalidArgument
  // when there is none). In target order.
  std::vector<std::size_t> contribution_targets(const std::vector<std::string>& names = {}) const;

  // Why a member cannot predict `molecule` (the first such reason), or nullopt.
  std::optional<std::string> unsupported_reason(const models::Molecule& molecule) const;

  // One molecule. Throws InvalidArgument with the reason when it cannot be predicted; the
  // PointSet overload throws InputError naming points.source and points.record instead.
  MoleculePrediction predict(const models::Molecule& molecule, int threads = 0) const;
  MoleculePrediction predict(const chem::PointSet& points, int threads = 0) const;

  // A batch of molecules in one model call per member; a molecule that cannot be predicted gets
  // its error and does not disturb the others. Thread-safe.
  // With forces_target, each prediction carries the forces of that target; with contributions,
  // the per-atom contributions.
  std::vector<MoleculeResult> predict_batch(std::span<const models::Molecule> molecules,
                                            int threads = 0,
                                            std::optional<std::size_t> forces_target = {},
                                            bool contributions = false) const;

  // Mean and standard deviation (S x P each) for a batch every member can handle (throws
  // InvalidArgument otherwise).
  // With forces_target, also the forces' mean and standard deviation (N x 3 each); with
  // contributions non-null, the per-atom contributions' mean and standard deviation (N x P each).
  void predict_batch(const models::MoleculeBatch& batch, Mat<double>& mean, Mat<double>& stddev,
                     int threads = 0, std::optional<std::size_t> forces_target = {},
                     Mat<double>* forces = nullptr, Mat<double>* forces_stddev = nullptr,
                     Mat<double>* contributions = nullptr,
                     Mat<double>* contributions_stddev = nullptr) const;

  // Streams `inputs` (files, directories, .gz, tar archives, "-") through the reader, predicts in
  // batches of options.batch_size and calls `sink` once per predicted record, in input order, with
  // the point set and its prediction. Bad records and molecules the model cannot handle follow
  // options.on_error. Exceptions thrown by `sink` pass through. Memory: one batch.
  PredictSummary predict_inputs(
      const std::vector<std::string>& inputs, const chem::ReadOptions& read,
      const PredictOptions& options,
      const std::function<void(chem::PointSet&&, const MoleculePrediction&)>& sink) const;

  // As predict_inputs, but `sink` gets every record in input order: predicted ones, records the
  // model cannot handle and records the reader rejected (with their reason, and for the latter
  // what the reader kept of them). With ErrorPolicy::fail the first bad record is thrown instead.
  // An input that cannot be opened or read at all (IoError) has no records: it is listed in the
  // summary only.
  PredictSummary predict_records(const std::vector<std::string>& inputs,
                                 const chem::ReadOptions& read, const PredictOptions& options,
                                 const std::function<void(RecordOutcome&&)>& sink) const;

 private:
  std::vector<std::shared_ptr<const LoadedModel>> members_;
  std::optional<models::EnsembleCalibration> calibration_;
};

// ---------------------------------------------------------------------------------------------
// Prediction over the ranks of a job (`mpirun -np P flt predict`; predict_distributed.cpp).
// Every rank reads the whole input stream (so all agree on the records, the bad ones and the
// batches); the stream's batch b is predicted on rank b mod P, and rank 0 receives each batch's
// results in turn and hands every record to the sink in input order. The batches are exactly
// those of a one-rank run, so the output is the same record for record, bit for bit. The sinks of
// the other ranks see nothing.
class BatchDistribution {
 public:
  virtual ~BatchDistribution() = default;
  // Batch `number` of the stream (0, 1, ... in order on every rank): runs `compute` when the
  // batch is this rank's, and returns its results on rank 0 (nullopt elsewhere).
  virtual std::optional<std::vector<MoleculeResult>> run(
      std::size_t number, const std::function<std::vector<MoleculeResult>()>& compute) = 0;
};
// Null for a communicator of one rank.
std::shared_ptr<BatchDistribution> distribute_batches(comm::Communicator& world);

// ---------------------------------------------------------------------------------------------
// The bundled default model.

// The environment variable that names the default model file (checked first).
inline constexpr const char* kDefaultModelEnv = "FLT_DEFAULT_MODEL";

// Where the default model is looked for, in this order:
//   1. $FLT_DEFAULT_MODEL, when set and non-empty (then it must exist: no fallback);
//   2. <source tree>/models/default.flt (the checkout this library was built from, only for code
//      running from that build tree: never for an installed or copied library);
//   3. <install data dir>/flt/models/default.flt: FLT_INSTALL_DATADIR when the build defines it
//      (CMake: ${CMAKE_INSTALL_FULL_DATADIR}), and <prefix>/share/flt/models/default.flt with
//      <prefix> the parent of the directory of the running program (a relocated installation).
std::vector<std::filesystem::path> default_model_candidates();

// The first existing candidate. Throws ConfigError listing every place looked in and how to train
// a default model when none exists (or when $FLT_DEFAULT_MODEL names a missing file).
std::filesystem::path default_model_path();

// ---------------------------------------------------------------------------------------------
// The conformer settings the model's training used for SMILES and 2-D records (model metadata
// training.conformer_seed, _optimize, _attempts), when every member of the predictor has them and
// they agree; nullopt for models trained before they were recorded or members that differ.
struct TrainedConformers {
  std::uint32_t seed = 42;
  chem::Optimize optimize = chem::Optimize::none;
  int attempts = 0;
};
std::optional<TrainedConformers> trained_conformers(const Predictor& predictor);

// Scoped OpenMP team size for the calling thread (restored on destruction); threads <= 0 leaves
// the setting alone.
class ScopedThreads {
 public:
  explicit ScopedThreads(int threads);
  ~ScopedThreads();
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int previous_ = 0;
  bool active_ = false;
};

}  // namespace flt::pipeline
