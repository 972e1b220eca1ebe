// flt::Model: a trained FLT molecule model (or an ensemble of them) loaded from .flt files, and
// prediction from flt::Molecule, batches of them and molecule files.
//
//   flt::Model model = flt::Model::load("qm9_U0.flt");     // or flt::Model::load_default()
//   flt::Prediction p = model.predict(molecule);
//   double u0 = p.value("U0");                               // in p.unit("U0"), e.g. "eV"
//
// Values are in their target's unit (Target::unit), coordinates in Angstrom; errors are
// flt::Error subclasses (flt/error.hpp). Units, threads and errors: docs/cpp-api.md.
#pragma once

#include "error.hpp"
#include "export.hpp"
#include "molecule.hpp"

#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flt {

// One predicted quantity of a model.
struct Target {
  std::string name;        // e.g. "U0", "gap"
  std::string unit;        // unit of every predicted value of this target, e.g. "eV", "Debye"
  bool extensive = true;   // true: a sum over atoms (energies); false: a per-molecule mean (gap)
};

// The prediction for one molecule: one value per target of the model, in that target's unit.
struct FLT_API Prediction {
  // values[t] is the prediction for targets->at(t), in targets->at(t).unit. For an ensemble, the
  // mean of the members' predictions.
  std::vector<double> values;
  // stddev[t] is the ensemble spread for target t, in the same unit: the population standard
  // deviation sqrt((1/M) sum_m (y_m - mean)^2) over the M members; 0 for a single model. For an
  // ensemble file calibrated by `flt ensemble --calibrate`, that spread times the target's factor
  // (Model::std_calibration).
  std::vector<double> stddev;
  // The model's targets (shared by every prediction of one model; never null for predictions
  // returned by flt).
  std::shared_ptr<const std::vector<Target>> targets;
  // When forces were asked for (PredictOptions::forces): F_i = -dE/dr_i of the energy target
  // `forces_target`, one {Fx, Fy, Fz} per atom in the molecule's atom order, in `forces_unit`
  // (the target's unit per Angstrom, e.g. "eV/A"); for an ensemble the members' mean, with their
  // standard deviation per component in forces_stddev. Empty otherwise.
  std::vector<std::array<double, 3>> forces, forces_stddev;
  std::string forces_target, forces_unit;
  // When per-atom contributions were asked for (PredictOptions::per_atom): contributions[t][i] is
  // atom i's share of target t, in the target's unit, c_i = e[Z_i] + m + sigma y_i (the element's
  // reference energy, the model's per-atom mean shared equally by all atoms, and the atom's
  // network output), so that the contributions of target t sum to values[t] (to rounding). Only
  // extensive targets split into atoms: contributions[t] is empty for an intensive one. For an
  // ensemble the members' mean, with their standard deviation per atom in contributions_stddev.
  // Empty otherwise.
  std::vector<std::vector<double>> contributions, contributions_stddev;

  // Number of targets.
  std::size_t size() const noexcept { return values.size(); }
  // The value of target `name`, in unit(name). Throws flt::InvalidArgument for an unknown target.
  double value(std::string_view name) const;
  // The ensemble standard deviation of target `name`, in unit(name). Throws flt::InvalidArgument
  // for an unknown target.
  double uncertainty(std::string_view name) const;
  // The unit of target `name` (e.g. "eV"). Throws flt::InvalidArgument for an unknown target.
  const std::string& unit(std::string_view name) const;
  // Position of target `name` in values, or nullopt.
  std::optional<std::size_t> index(std::string_view name) const noexcept;
};

// A molecule of a batch: its prediction, or why it could not be predicted.
struct FLT_API Result {
  std::optional<Prediction> prediction;  // set when the molecule was predicted
  std::string error;                     // the reason otherwise (empty when predicted)

  // True when the molecule was predicted.
  bool ok() const noexcept { return prediction.has_value(); }
  // The prediction; throws flt::InvalidArgument carrying `error` when there is none.
  const Prediction& value() const;
};

// Options of batch and file prediction.
// Two atoms closer than this (Angstrom) make a molecule unusable by default (PredictOptions,
// FileOptions): no chemistry puts nuclei that close. The value of the file readers' default
// (a static_assert in the library keeps the two equal).
inline constexpr double kDefaultMinDistance = 0.1;

struct PredictOptions {
  // OpenMP threads for this call; 0 = Model::threads() (which defaults to the OpenMP default: all
  // cores, or OMP_NUM_THREADS). Applies to the calling thread's call only.
  int threads = 0;
  // Molecules per network call (>= 1). Larger batches use more memory (one batch's atoms and
  // attention work space at a time), smaller ones leave cores idle.
  std::size_t batch_size = 64;
  // Also compute forces F = -dE/dr (one backward pass per batch, about 3-4x the cost of the
  // prediction alone) of `forces_target`: an extensive energy target of the model, or empty for
  // the first one (e.g. "U0", "energy"). flt::InvalidArgument when the model has none.
  bool forces = false;
  std::string forces_target;
  // Also give each atom's contribution to the extensive targets (Prediction::contributions; no
  // extra network pass). flt::InvalidArgument when the model has no extensive target.
  bool per_atom = false;
  // Molecules with two atoms closer than this (Angstrom) are not predicted (a collapsed geometry,
  // duplicated atoms), as records of files (FileOptions::min_distance); 0 disables the check.
  // Model::predict and predict_with_forces of one molecule apply the default.
  double min_distance = kDefaultMinDistance;
};

// Options of Model::predict_file.
struct FileOptions {
  int threads = 0;              // as PredictOptions::threads
  std::size_t batch_size = 64;  // as PredictOptions::batch_size
  // "sdf", "mol", "xyz", "extxyz", "qm9", "pdb", "csv" (SMILES in Chemprop's layout) or "smi" (a
  // SMILES file: "SMILES name" lines); SMILES records are given a generated 3-D conformer. Empty =
  // from the file name (.sdf, .sd, .mol, .xyz, .pdb, .csv, .smi, also inside .gz files;
  // directories and archives (.tar, .tar.gz/.bz2/.xz/.zst, .zip, .7z, .cpio) for the formats
  // other than CSV).
  std::string format;
  // SDF/MOL records with implicit hydrogens (all or some) and PDB structures without any hydrogen
  // get them added as atoms with 3-D coordinates (RDKit AddHs with addCoords).
  bool add_hydrogens = true;
  // SDF/MOL records without 3-D coordinates: false = reported as errors; true = a conformer is
  // generated with RDKit ETKDGv3, retried from random coordinates when that fails (reproducible).
  bool generate_conformers = false;
  // How conformers of SMILES and 2-D records are made. Unset = as the model's training made them
  // (its training.conformer_* metadata; for models without them: seed 42, "none", 0).
  std::optional<unsigned> seed;            // ETKDG random seed
  std::optional<std::string> optimize;     // "none" or "mmff" (MMFF94 clean-up)
  std::optional<int> conformer_attempts;   // ETKDG attempts per try; 0 = RDKit's bound (10 x atoms)
  // RDKit sanitization of SDF/MOL records (valence checks); false accepts e.g. 5-valent carbon.
  bool sanitize = true;
  // Records with two atoms closer than this (Angstrom) are errors; 0 disables the check.
  double min_distance = kDefaultMinDistance;
  // SMILES input: the column holding the SMILES, by name (CSV, or a SMILES file with a header
  // line) or by 1-based number in a SMILES file without one (ZINC's "name SMILES": "2"); empty =
  // the column named "smiles" (CSV), field 1 (SMILES file).
  std::string smiles_column;
  // Extended XYZ records with periodic boundary conditions: "error" (the record is bad) or
  // "isolated" (read as an isolated structure, the cell ignored).
  std::string periodic = "error";
  // PDB: waters and other HETATM groups (ligands, ions): "keep", "drop" or "fail".
  std::string pdb_water = "drop";
  std::string pdb_hetero = "keep";
  bool forces = false;          // as PredictOptions::forces
  std::string forces_target;    // as PredictOptions::forces_target
  bool per_atom = false;        // as PredictOptions::per_atom
};

// One record of a molecule file, as handed to predict_file's callback in input order.
struct FLT_API RecordResult {
  std::string file;         // the input file ("archive.tar:member.sdf" inside archives)
  // 1-based record number within `file`; 0 for a problem of the file as a whole (it could not
  // be read, or holds no records), which `error` describes and FileSummary counts as failed.
  std::size_t record = 0;
  std::string title;        // the record's title (SDF name line, XYZ comment, QM9 "gdb N")
  std::optional<Prediction> prediction;  // set when predicted
  std::string error;        // why not (unreadable record, unknown element, ...); empty when ok

  // True when the record was predicted.
  bool ok() const noexcept { return prediction.has_value(); }
};

// What predict_file did.
struct FLT_API FileSummary {
  std::size_t read = 0;       // records seen (predicted + failed)
  std::size_t predicted = 0;  // records with a prediction
  std::size_t failed = 0;     // records reported with an error
  // True when every record was predicted.
  bool ok() const noexcept { return failed == 0; }
  // "predicted 45 of 47 records (2 failed)".
  std::string describe() const;
};

// A trained model or an ensemble of models predicting the same targets. Cheap to copy: copies
// share the loaded, immutable network (the thread setting is per object).
// Threads: the const member functions may be called from any number of threads at once on the
// same object (each call borrows its own copy of the network's work space; results do not depend
// on which). Within one call the molecules of a batch are spread over OpenMP threads; the team
// size is PredictOptions::threads, else threads(), else the OpenMP default (all cores, or
// OMP_NUM_THREADS). The thread count never changes a result beyond float rounding (fixed-order
// reductions; in practice bitwise equal).
class FLT_API Model {
 public:
  // Loads a .flt model file (written by `flt train`), or an ensemble file (written by
  // `flt ensemble`; then as load_ensemble of its members). Throws flt::IoError when it cannot be read
  // and flt::ModelFileError naming the file and the reason when it is corrupt, truncated, of an
  // unknown format version or inconsistent.
  static Model load(const std::filesystem::path& path);
  // Loads several model files as an ensemble: predictions are the members' mean, with their
  // standard deviation as Prediction::stddev. The members must predict the same targets in the
  // same units (flt::InvalidArgument otherwise); load errors as for load(), naming the file.
  static Model load_ensemble(const std::vector<std::filesystem::path>& paths);
  // Loads the bundled default model, default_model_path().
  static Model load_default();
  // Where the default model is: $FLT_DEFAULT_MODEL when set (it must exist; no fallback), else
  // the first existing of
  //   <prefix>/share/flt/models/default.flt with <prefix> the installation libflt.so is loaded
  //     from (<prefix>/lib/libflt.so.0 or <prefix>/lib/<multiarch>/libflt.so.0; relocatable),
  //   <source tree>/models/default.flt (the checkout libflt was built from),
  //   <prefix of the running program>/share/flt/models/default.flt,
  //   <CMAKE_INSTALL_PREFIX at build time>/share/flt/models/default.flt.
  // Throws flt::ConfigError listing every place looked in when there is none.
  static std::filesystem::path default_model_path();

  ~Model();
  // A moved-from Model holds no model: it may only be
  // assigned to or destroyed (as with std::unique_ptr, using it is undefined behaviour).
  Model(const Model& other);
  Model& operator=(const Model& other);
  Model(Model&& other) noexcept;
  Model& operator=(Model&& other) noexcept;

  // The targets in prediction order, with the unit of every predicted value.
  const std::vector<Target>& targets() const noexcept;
  // The atomic numbers the model accepts, sorted (for an ensemble: those every member accepts).
  const std::vector<int>& elements() const noexcept;
  // Number of ensemble members (1 for a single model).
  std::size_t ensemble_size() const noexcept;
  // Per target, the calibration factor Prediction::stddev carries (an ensemble file calibrated by
  // `flt ensemble --calibrate`, loaded alone); empty when stddev is the members' plain spread.
  std::vector<double> std_calibration() const;
  // How those factors were fitted: "coverage" or "zscaling"; empty when there are none.
  std::string std_calibration_method() const;
  // The file each member was loaded from, in member order (an ensemble file once per member).
  std::vector<std::filesystem::path> files() const;
  // The first member's metadata as stored in its file: format version, training data checksum,
  // seed, code version, architecture ("config.*") and training ("training.*") entries.
  std::map<std::string, std::string> metadata() const;
  // Number of trainable scalars of the first member.
  std::size_t parameter_count() const noexcept;

  // Why `molecule` cannot be predicted (an element the model never saw, no atoms, mismatched
  // array lengths, a non-finite coordinate, a formal charge out of range), or nullopt.
  std::optional<std::string> unsupported_reason(const Molecule& molecule) const;

  // The OpenMP team size used by this object's predictions when a call does not give one;
  // 0 (the default) = the OpenMP default. Not to be called while other threads use this object.
  void set_threads(int threads);
  int threads() const noexcept;

  // Predicts one molecule, values in targets()[t].unit. Throws flt::InvalidArgument with the
  // reason (and the title) when the molecule cannot be predicted (also: atoms more than 1e6
  // Angstrom apart along an axis), flt::NumericalError when a predicted value is not finite.
  // Thread-safe.
  Prediction predict(const Molecule& molecule) const;
  // The same with the forces of an energy target (PredictOptions::forces_target; empty: the
  // first extensive energy target). Throws as predict() does (NumericalError also for non-finite
  // forces), or flt::InvalidArgument when the model has no such target. Thread-safe.
  Prediction predict_with_forces(const Molecule& molecule, const std::string& target = {}) const;
  // The target whose forces PredictOptions::forces gives: `name` when it is an extensive energy
  // target, else (name empty) the first such target. flt::InvalidArgument otherwise.
  std::string forces_target(const std::string& name = {}) const;
  // Predicts a batch, results in input order; a molecule that cannot be predicted gets its error
  // in its Result and does not disturb the others. Values as for predict(). Thread-safe.
  std::vector<Result> predict(std::span<const Molecule> molecules,
                              const PredictOptions& options = {}) const;
  // Streams a molecule file (or directory, .gz, tar archive; "-" = standard input, which needs
  // options.format) and calls `sink` once per record, in input order, with its prediction or its
  // error (unreadable record, unknown element, missing 3-D coordinates, ...): per-record problems
  // are reported, not thrown. Memory: one batch. Throws flt::IoError when the input cannot be
  // opened and flt::InvalidArgument for a bad option; exceptions thrown by `sink` pass through.
  FileSummary predict_file(const std::filesystem::path& path,
                           const std::function<void(const RecordResult&)>& sink,
                           const FileOptions& options = {}) const;

  class Impl;

 private:
  explicit Model(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
  int threads_ = 0;
};

}  // namespace flt
