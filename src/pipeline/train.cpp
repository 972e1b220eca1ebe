// `flt train` workflow (see train.hpp for the algorithm and its determinism/resume contract).
// Shapes: S molecules in a batch, N atoms, P targets; predictions and labels S x P.
#include "pipeline/train.hpp"

#include "comm/communicator.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/optim.hpp"
#include "core/random.hpp"
#include "core/text.hpp"
#include "core/version.hpp"
#include "models/force_training.hpp"
#include "models/model_io.hpp"
#include "pipeline/dataset_progress.hpp"
#include "pipeline/train_distributed.hpp"
#include "pipeline/train_plots.hpp"
#include "io/atomic_file.hpp"
#include "train/engine.hpp"
#include "train/engine_options.hpp"
#include "io/csv.hpp"
#include "io/data_checksum.hpp"
#include "io/ini.hpp"
#include "io/progress.hpp"
#include "train/run_dir.hpp"
#include "train/split.hpp"
#include "io/svg_plot.hpp"
#include "train/report_plots.hpp"
#include "io/units.hpp"

#include <omp.h>

#include <algorithm>
#include <map>
#include <chrono>
#include <cmath>
#include <set>
#include <functional>
#include <iomanip>
#include <limits>
#include <memory>
#include <numeric>
#include <sstream>

namespace flt::pipeline {

namespace fs = std::filesystem;
using io::OptionType;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Model-configuration keys that the trainer sets itself (from the data and --seed).
bool is_trainer_owned_model_key(const std::string& key) {
  return key == "targets" || key == "target_units" || key == "target_pooling" || key == "seed";
}

std::string dashed(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return key;
}

// "name=value" list items -> map (for --units, --source-units, --pooling).
std::map<std::string, std::string> parse_assignments(const std::vector<std::string>& items, const std::string& option) {
  std::map<std::string, std::string> out;
  for (const auto& item : items) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      throw ConfigError("--" + option + ": '" + item + "' is not of the form target=value");
    out[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return out;
}

// Options added after runs became resumable, each with the value that behaves as before it existed.
// At that value the option is left out of the fingerprint, so a run started by an flt without it
// (whose checkpoint has no entry) resumes; any other value is compared as usual.
const std::vector<std::pair<std::string, std::string>>& later_options_neutral_values() {
  static const std::vector<std::pair<std::string, std::string>> values{{"train.batch-atoms", "0"},
                                                         {"train.force-weight", "0"},
                                                         {"train.force-target", ""},
                                                         {"train.three-body-fit", "energies"},
                                                         {"data.forces-column", "forces"},
                                                         {"data.forces-unit", ""},
                                                         {"train.time-budget", "0"}};
  return values;
}

// Predictions of the molecules at `indices` (physical units, rows in that order); `normalised`
// (optional) receives the normalised outputs.
// `offsets` (optional) gives a batch's label offsets (MoleculeModel::label_offsets) from a cache.
Mat<double> predict_indices(models::MoleculeModel<float>& model, const Dataset& data,
                            std::span<const std::size_t> indices, std::size_t batch_size,
                            std::size_t max_atoms, Mat<double>* normalised = nullptr,
                            const std::function<Mat<double>(const Batch&)>& offsets = {}) {
  const Index p = static_cast<Index>(data.num_targets());
  Mat<double> out(static_cast<Index>(indices.size()), p);
  if (normalised) normalised->resize(static_cast<Index>(indices.size()), p);
  // Consecutive runs of `indices` (batch_indices keeps the order), under the atom budget; the
  // inference path (no activation caches; bitwise the forward's outputs).
  const auto batches = batch_indices(indices, batch_size, atom_counts(data), max_atoms);
  for (std::size_t k = 0, begin = 0; k < batches.size(); begin += batches[k].size(), ++k) {
    const std::size_t end = begin + batches[k].size();
    const Batch b = make_model_batch(data, indices.subspan(begin, end - begin), model);
    const Mat<double> norm = model.infer_accumulated(b.molecules);
    const Mat<double> phys = offsets ? model.denormalise(offsets(b), norm) : model.denormalise(b.molecules, norm);
    out.middleRows(static_cast<Index>(begin), static_cast<Index>(end - begin)) = phys;
    if (normalised) normalised->middleRows(static_cast<Index>(begin), static_cast<Index>(end - begin)) = norm;
  }
  return out;
}

Mat<double> labels_at(const Dataset& data, std::span<const std::size_t> indices) {
  Mat<double> out(static_cast<Index>(indices.size()), static_cast<Index>(data.num_targets()));
  for (std::size_t k = 0; k < indices.size(); ++k)
    out.row(static_cast<Index>(k)) = data.labels.row(static_cast<Index>(indices[k]));
  return out;
}

// The target the forces belong to: `name`, or the first extensive target with an energy unit.
Index find_force_target(const std::vector<DatasetTarget>& targets, const std::string& name) {
  for (std::size_t t = 0; t < targets.size(); ++t) {
    const bool energy = !targets[t].unit.empty() &&
                        io::find_unit(targets[t].unit).dimension == io::Dimension::energy;
    if (!name.empty() && targets[t].name != name) continue;
    if (!targets[t].extensive || !energy) {
      if (name.empty()) continue;
      throw ConfigError("--force-target " + name + ": forces are the gradient of an extensive energy; '" + name +
                        "' is " + (targets[t].extensive ? "not an energy (unit '" + targets[t].unit + "')"
                                                        : std::string("a per-molecule mean")));
    }
    return static_cast<Index>(t);
  }
  throw ConfigError(name.empty() ? std::string("--force-weight > 0 needs an extensive energy target (e.g. --targets energy)")
                                 : "--force-target " + name + " is not one of the targets");
}

// Predicted and reference forces (the target's unit per Angstrom) of the molecules at `indices`
// that have reference forces, as metrics over force components. `factor` converts the dataset's
// eV/Angstrom into the target's unit per Angstrom.
train::Metrics force_metrics(models::MoleculeModel<float>& model, const Dataset& data,
                             std::span<const std::size_t> indices, Index target, double factor,
                             std::size_t batch_size, std::size_t max_atoms) {
  std::vector<double> predicted, reference;
  const auto batches = batch_indices(indices, batch_size, atom_counts(data), max_atoms);
  for (const auto& idx : batches) {
    const Batch b = make_model_batch(data, idx, model);
    Mat<double> forces;
    model.predict_with_forces(b.molecules, target, forces);
    for (Index i = 0; i < forces.rows(); ++i)
      for (Index a = 0; a < 3; ++a)
        if (std::isfinite(b.forces(i, a))) {
          predicted.push_back(forces(i, a));
          reference.push_back(b.forces(i, a) * factor);
        }
  }
  return train::compute_metrics(predicted, reference);  // NaN metrics when there are none
}

std::vector<train::Metrics> metrics_of(const Mat<double>& predicted, const Mat<double>& truth) {
  return train::compute_metrics(std::span<const double>(predicted.data(), static_cast<std::size_t>(predicted.size())),
                                std::span<const double>(truth.data(), static_cast<std::size_t>(truth.size())),
                                static_cast<std::size_t>(truth.cols()));
}

std::vector<double> maes(const std::vector<train::Metrics>& m) {
  std::vector<double> out;
  for (const auto& x : m) out.push_back(x.mae);
  return out;
}

// mean_t MAE_t / sigma_t over targets with labels (NaN if none).
double selection_metric(const std::vector<double>& mae, const models::Normalisation& norm) {
  double sum = 0;
  int n = 0;
  for (std::size_t t = 0; t < mae.size(); ++t) {
    if (std::isnan(mae[t])) continue;
    sum += mae[t] / norm.scale[t];
    ++n;
  }
  return n ? sum / n : kNaN;
}

void write_test_predictions(const fs::path& path, const Dataset& data, std::span<const std::size_t> indices,
                            const Mat<double>& predicted) {
  io::AtomicOutputFile out(path);
  std::vector<std::string> header{"id", "title"};
  for (const auto& t : data.targets) {
    header.push_back(io::with_unit_suffix(t.name + "_true", t.unit));
    header.push_back(io::with_unit_suffix(t.name + "_pred", t.unit));
  }
  io::write_csv_row(out.stream(), header);
  for (std::size_t k = 0; k < indices.size(); ++k) {
    const std::size_t i = indices[k];
    std::vector<std::string> row{data.ids[i], data.titles[i]};
    for (std::size_t t = 0; t < data.num_targets(); ++t) {
      row.push_back(io::csv_number(data.labels(static_cast<Index>(i), static_cast<Index>(t))));
      row.push_back(io::csv_number(predicted(static_cast<Index>(k), static_cast<Index>(t))));
    }
    io::write_csv_row(out.stream(), row);
  }
  out.commit();
}

// Per-epoch attention denominator statistics (FLT variant A/B), one row per epoch.
void append_attention_csv(const fs::path& path, std::int64_t epoch, const attn::AttentionStats& s,
                          bool truncate_first) {
  std::string text;
  if (!truncate_first && fs::exists(path)) {
    // Keep rows of earlier epochs only (a resumed run rewrites the epochs after its checkpoint).
    const io::CsvTable table = io::read_csv(path);
    text = join(table.header) + "\n";
    for (const auto& row : table.rows)
      if (!row.empty() && std::stoll(row[0]) < epoch) text += join(row) + "\n";
  } else {
    text = "epoch,forward_calls,denominators,nonpositive,tiny,clamped,min_relative_denominator\n";
  }
  std::ostringstream line;
  line << epoch << ',' << s.forward_calls << ',' << s.denominators << ',' << s.nonpositive_denominators << ','
       << s.tiny_denominators << ',' << s.clamped_denominators << ',' << io::csv_number(s.min_relative_denominator)
       << '\n';
  text += line.str();
  io::write_file_atomic(path, text);
}

// The atomic numbers of the molecules at `indices` as a batch without coordinates: all that
// fit_normalisation reads, available on every rank of a sharded load.
models::MoleculeBatch composition_batch(const Dataset& data, std::span<const std::size_t> indices) {
  models::MoleculeBatch b;
  std::vector<Index> sizes;
  for (std::size_t i : indices) {
    const auto& z = data.molecules[i].atomic_numbers;
    sizes.push_back(static_cast<Index>(z.size()));
    b.atomic_numbers.insert(b.atomic_numbers.end(), z.begin(), z.end());
  }
  b.index = RaggedIndex::from_sizes(sizes);
  return b;
}

// The three-body descriptors (models::three_body_features) of the training structures `train`
// (rows in that order) under a sharded load: each rank computes the rows of the structures whose
// coordinates it holds (owners[s] == its rank; every training structure has one) and every rank
// gathers all rows (distributed::share_rows; the communicator cuts blocks above MPI's 2 GiB per
// call into pieces). A row
// depends on its structure alone, so the matrix is the one a single rank computes from all
// coordinates.
Mat<double> gathered_three_body_descriptors(comm::Communicator& world, const Dataset& data,
                                           std::span<const std::size_t> train, const std::vector<int>& owners,
                                           const models::ThreeBodyBasis& basis) {
  std::vector<Index> mine;  // positions in train
  std::vector<std::size_t> held;
  for (std::size_t k = 0; k < train.size(); ++k)
    if (owners[train[k]] == world.rank()) {
      mine.push_back(static_cast<Index>(k));
      held.push_back(train[k]);
    }
  Mat<double> descriptors = Mat<double>::Zero(static_cast<Index>(train.size()), basis.feature_count());
  if (!held.empty()) {
    const models::MoleculeBatch batch = make_batch(data, held).molecules;
    const Mat<double> rows = models::three_body_features(basis, batch.index, batch.coords, batch.atomic_numbers);
    for (std::size_t q = 0; q < mine.size(); ++q) descriptors.row(mine[q]) = rows.row(static_cast<Index>(q));
  }
  distributed::share_rows(world, descriptors, mine);
  return descriptors;
}

// The data checksum of runs started before the per-molecule form (io::DataFingerprint), for
// resuming them; needs the coordinates of every training molecule.
std::string legacy_data_fingerprint(const Dataset& data, std::span<const std::size_t> train_indices) {
  io::DataFingerprint fingerprint;
  for (std::size_t i : train_indices) {
    const auto& m = data.molecules[i];
    std::vector<int> z(m.atomic_numbers.begin(), m.atomic_numbers.end());
    std::vector<double> xyz;
    for (const auto& r : m.positions) xyz.insert(xyz.end(), r.begin(), r.end());
    fingerprint.add_molecule(z, std::span<const double>(xyz), data.label_row(i));
  }
  return fingerprint.hex();
}

template <class T>
std::vector<T> to_vector(std::span<const T> s) {
  return {s.begin(), s.end()};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Options.

io::OptionSchema train_option_schema() {
  io::OptionSchema s;
  // [data]
  s.option("inputs", "data", OptionType::list, std::nullopt,
           "molecule files, directories or archives (positional arguments are appended)")
      .optional = true;
  s.option("targets", "data", OptionType::list, "U0", "targets to learn, e.g. U0,gap,homo (QM9 names or label keys)");
  s.option("units", "data", OptionType::list, std::nullopt,
           "training unit per target, e.g. U0=kcal/mol (default: eV for energies, else natural)")
      .optional = true;
  s.option("source-units", "data", OptionType::list, std::nullopt,
           "unit of labels given without one, e.g. energy=eV (never guessed; QM9 files give theirs)")
      .optional = true;
  s.option("pooling", "data", OptionType::list, std::nullopt,
           "sum (extensive) or mean (intensive) per target, e.g. dipole=mean")
      .optional = true;
  s.option("labels", "data", OptionType::path, std::nullopt,
           "CSV file of labels keyed by id or title (columns 'U0 [Hartree]', ...)")
      .optional = true;
  s.option("label-key", "data", OptionType::string, "", "key column of --labels (default: id, title or name)");
  s.option("format", "data", OptionType::string, "auto", "input format: auto, sdf, xyz, extxyz, qm9, pdb, csv (SMILES), smi").choices = {
      "auto", "sdf", "mol", "xyz", "extxyz", "qm9", "pdb", "csv", "smi"};
  s.option("pdb-water", "data", OptionType::string, "drop", "PDB input: waters keep, drop or fail (the record is bad)").choices = {
      "keep", "drop", "fail"};
  s.option("pdb-hetero", "data", OptionType::string, "keep", "PDB input: other HETATM groups (ligands, ions) keep, drop or fail").choices = {
      "keep", "drop", "fail"};
  s.option("periodic", "data", OptionType::string, "error", "extended XYZ records with periodic boundary conditions (a T in pbc, or a Lattice without pbc): error (the record is bad) or isolated (read as an isolated structure, the cell ignored)").choices = {
      "error", "isolated"};
  s.option("smiles-column", "data", OptionType::string, "", "SMILES input: the column holding the SMILES, by name (CSV, or a SMILES file with a header line) or by number in a SMILES file without one (default: the column named smiles; field 1)");
  s.option("missing-3d", "data", OptionType::string, "error",
           "records without 3-D coordinates: error or generate (RDKit ETKDGv3, random-coordinate fallback); SMILES always get one")
      .choices = {"error", "generate"};
  s.option("optimize", "data", OptionType::string, "none", "clean-up of generated conformers: none or mmff (MMFF94)").choices = {
      "none", "mmff"};
  s.option("conformer-seed", "data", OptionType::integer, "42", "random seed of generated conformers");
  s.option("conformer-attempts", "data", OptionType::integer, "0",
           "ETKDG attempts per try (0: RDKit's bound, 10 x atoms)");
  s.option("on-error", "data", OptionType::string, "skip", "bad records: skip (with a summary) or fail").choices = {
      "skip", "fail"};
  s.option("missing-labels", "data", OptionType::string, "mask",
           "molecules without a label: mask (default), skip or error")
      .choices = {"mask", "skip", "error"};
  s.option("forces-column", "data", OptionType::string, "forces",
           "per-atom column of reference forces (extended XYZ forces:R:3), read when --force-weight > 0");
  s.option("forces-unit", "data", OptionType::string, "",
           "unit of the forces column when the input gives none, or to override it: energy/length, e.g. eV/A, Hartree/Bohr (extended XYZ: eV/A)");
  s.option("min-atoms", "data", OptionType::integer, "1", "molecules with fewer atoms are bad records");
  s.option("min-distance", "data", OptionType::real, shortest_number(chem::kDefaultMinDistance), "atoms closer than this (Angstrom) make a record bad");
  s.option("add-hydrogens", "data", OptionType::boolean, "true", "SDF: make implicit hydrogens explicit (3-D)");
  s.option("limit", "data", OptionType::integer, "0", "read at most this many molecules (0: all)");
  // [split]
  s.option("split", "split", OptionType::string, "0.8,0.1,rest",
           "random split sizes train,validation,test: counts, fractions or rest");
  s.option("split-file", "split", OptionType::path, std::nullopt, "split CSV (subset,index,id) instead of --split; none: use --split")
      .optional = true;
  s.option("split-seed", "split", OptionType::integer, "0", "seed of the random split");
  // [train]
  {
    TrainConfig defaults;  // the command's defaults, which differ from the library's
    defaults.epochs = 120;
    defaults.weight_decay = 0.05;
    defaults.ema_decay = 0.999;
    train::add_engine_options(s, defaults, "molecules", train::DefaultWarmup::one_epoch);
  }
  s.option("batch-atoms", "train", OptionType::integer, "0",
           "atom budget of a mini-batch (and of an evaluation batch): batches hold at most batch-size molecules "
           "and at most this many atoms; a larger molecule trains alone (0: no atom budget)");
  s.option("loss", "train", OptionType::string, "l1", "loss on standardised targets: mse, l1, huber").choices = {
      "mse", "l1", "huber"};
  s.option("huber-delta", "train", OptionType::real, "1", "huber loss threshold (standardised units)");
  s.option("force-weight", "train", OptionType::real, "0",
           "weight of the force term (mean squared force error in standardised units) next to the energy loss "
           "(0: energies only; needs --attention near_far)");
  s.option("force-target", "train", OptionType::string, "",
           "energy target whose forces are trained (default: the first extensive energy target)");
  s.option("fit-reference", "train", OptionType::boolean, "true",
           "fit per-element reference energies by least squares (extensive targets)");
  s.option("three-body-fit", "train", OptionType::string, "energies",
           "what the three-body reference of the forces' target is fitted to when training on forces: energies, "
           "or energies and forces weighted as the loss weighs them (needs --three-body true and --force-weight > 0)")
      .choices = {"energies", "forces"};
  s.option("gradient-chunk", "train", OptionType::integer, "0",
           "molecules per chunk of the exact gradient sum that makes any number of MPI ranks give the same "
           "model (0: whole batch in a plain run, 8 under mpirun)");
  // [model]: every ModelConfig key except those the trainer sets.
  for (const auto& [key, value] : models::config_to_strings(models::ModelConfig{})) {
    if (is_trainer_owned_model_key(key)) continue;
    static const std::map<std::string, std::string> helps = {
        {"width", "model width D"},
        {"heads", "attention heads H"},
        {"blocks", "encoder blocks"},
        {"mlp_hidden", "hidden width of each block's MLP (the gated update with vectors)"},
        {"head_hidden", "hidden width of the output head"},
        {"activation", "activation: silu, gelu_tanh, gelu_erf, identity"},
        {"max_z", "largest atomic number the element embedding covers"},
        {"use_charges", "add a formal-charge embedding"},
        {"max_charge", "formal charges in [-max_charge, max_charge]"},
        {"attention", "attention kind: near_far, kronecker, bias, performer, exact"},
        {"cutoff", "near_far: cutoff r_c of the exact near field (Angstrom)"},
        {"radial_nodes", "near_far: Bessel radial nodes of the near-field filters"},
        {"vectors", "near_far: equivariant vector features"},
        {"far_field", "near_far: far field flt (linear), exact (quadratic) or none"},
        {"far_nodes", "near_far: radial nodes of the far-field mask (n = 0..far_nodes-1)"},
        {"far_spacing", "near_far: spacing of the far-field mask nodes (cycles/Angstrom)"},
        {"far_design", "near_far: far-field directions product_grid or iid"},
        {"far_degree", "near_far: product-grid degree (exact spherical polynomials)"},
        {"far_directions", "near_far: directions of the iid design"},
        {"far_init", "near_far: initial far-field mask coefficients"},
        {"charge_energy", "near_far, one energy target: learned neutral charges per structure with the energy "
                          "1/2 sum q_i q_j w f(r_ij) over pairs, f a learned decaying radial mask: flt "
                          "(linear), exact (quadratic) or none"},
        {"charge_nodes", "charge_energy: nodes of the charge mask (n = 0..charge_nodes-1)"},
        {"charge_spacing", "charge_energy: spacing of the charge mask nodes (cycles/Angstrom)"},
        {"charge_degree", "charge_energy = flt: product-grid degree of the charge mask's features"},
        {"charge_init", "charge_energy: initial charge mask coefficients"},
        {"charge_formal", "charge_energy: charges = formal charges + a learned neutral correction "
                          "(starting at zero)"},
        {"charge_coulomb", "charge_energy: start the charge mask at Coulomb's law in the target's "
                           "energy unit (charge_init unused)"},
        {"charge_neutral", "charge_energy: the learned correction is neutral per structure or per "
                           "covalently bonded fragment (each molecule keeps its formal charge)"},
        {"charge_bond_scale", "charge_neutral = fragment: atoms closer than this times the sum of "
                              "their covalent radii are bonded"},
        {"three_body", "add a linear three-body reference (ridge fit, leave-one-out penalty) to the "
                       "energy targets; the network learns what it leaves"},
        {"three_body_cutoff", "three_body: cutoff of its descriptors (Angstrom)"},
        {"three_body_radial", "three_body: radial functions per element"},
        {"three_body_lmax", "three_body: Legendre degree of its angular functions"},
        {"num_features", "Performer random features per head (m)"},
        {"num_frequencies", "RPE random frequencies per head (R)"},
        {"spectrum", "FLT kinds: RPE spectrum radial_gaussian or radial_shells"},
        {"spectrum_components", "FLT kinds: components of the spectrum"},
        {"proposal", "FLT kinds: frequency proposal spectrum or gaussian"},
        {"proposal_scale", "FLT kinds: scale of the gaussian proposal (cycles/Angstrom)"},
        {"init_sigma_min", "FLT kinds: smallest initial spectrum width"},
        {"init_sigma_max", "FLT kinds: largest initial spectrum width"},
        {"init_beta", "bias kind: initial RPE scale"},
        {"kronecker_floor", "kronecker kind: denominators are raised to this share of their bound"},
        {"redraw_features", "redraw random features / rotate the far-field design every step"},
        {"exact_rbf", "exact kind: radial basis functions"},
        {"exact_cutoff", "exact kind: range of the radial basis (Angstrom)"},
        {"seed", "model seed"},
    };
    const auto it = helps.find(key);
    const std::string help = it != helps.end() ? it->second : "model hyper-parameter " + key;
    io::OptionSpec& spec = s.option(dashed(key), "model", OptionType::string, value, help);
    if (key == "attention") spec.choices = {"near_far", "kronecker", "bias", "performer", "exact"};
    if (key == "far_field") spec.choices = {"flt", "exact", "none"};
    if (key == "charge_energy") spec.choices = {"none", "flt", "exact"};
    if (key == "far_design") spec.choices = {"product_grid", "iid"};
    if (key == "proposal") spec.choices = {"spectrum", "gaussian"};
  }
  // [run]
  s.option("out", "run", OptionType::path, std::nullopt, "run directory (new or empty; see --overwrite, --resume)");
  s.option("overwrite", "run", OptionType::boolean, "false", "replace an existing flt run directory").persist = false;
  s.option("resume", "run", OptionType::boolean, "false", "continue the interrupted run in --out").persist = false;
  {
    io::OptionSpec& c = s.option("config", "run", OptionType::path, std::nullopt,
                                    "INI file of options (command line overrides)");
    c.optional = true;
    c.persist = false;
  }
  s.option("split-only", "run", OptionType::boolean, "false",
           "read the data, write split.csv and config.ini to --out and stop (no training)")
      .persist = false;
  s.option("stop-after-epoch", "run", OptionType::integer, "0",
           "testing: stop after this epoch's checkpoint as if interrupted (0: off)")
      .persist = false;
  // The spellings every flt subcommand shares.
  s.add_spellings("out", 'o', {"output"});
  s.add_spellings("threads", 'j');
  s.add_spellings("targets", 't');
  s.add_spellings("format", 'f');
  return s;
}

TrainConfig config_from_options(const io::ResolvedOptions& o, const std::vector<std::string>& positional) {
  TrainConfig c;
  DatasetOptions& d = c.data;
  if (o.has("inputs")) d.inputs = o.get_list("inputs");
  d.inputs.insert(d.inputs.end(), positional.begin(), positional.end());
  if (d.inputs.empty()) throw ConfigError("no input files: give them as arguments or with --inputs");
  d.targets = o.get_list("targets");
  if (d.targets.empty()) throw ConfigError("--targets: at least one target is required");
  if (o.has("units")) d.units = parse_assignments(o.get_list("units"), "units");
  if (o.has("source-units")) d.source_units = parse_assignments(o.get_list("source-units"), "source-units");
  if (o.has("pooling")) d.pooling = parse_assignments(o.get_list("pooling"), "pooling");
  if (o.has("labels")) d.labels_csv = o.get_string("labels");
  d.label_key = o.get_string("label-key");
  const std::string format = o.get_string("format");
  d.read.format = format == "auto" ? chem::Format::unknown : chem::format_from_name(format);
  d.read.add_hydrogens = o.get_bool("add-hydrogens");
  d.read.min_distance = o.get_real("min-distance");
  d.read.keep_molecule = false;
  d.read.smiles_column = o.get_string("smiles-column");
  d.read.periodic = chem::periodic_from_name(o.get_string("periodic"));
  d.read.pdb_water = chem::pdb_part_from_name(o.get_string("pdb-water"));
  d.read.pdb_hetero = chem::pdb_part_from_name(o.get_string("pdb-hetero"));
  d.read.missing_3d = o.get_string("missing-3d") == "generate" ? chem::Missing3D::generate : chem::Missing3D::error;
  d.read.optimize = chem::optimize_from_name(o.get_string("optimize"));
  const auto conformer_seed = o.get_int("conformer-seed");
  if (conformer_seed < 0 || conformer_seed > 0x7fffffff) throw ConfigError("--conformer-seed must be in 0..2147483647");
  d.read.seed = static_cast<std::uint32_t>(conformer_seed);
  const auto attempts = o.get_int("conformer-attempts");
  if (attempts < 0 || attempts > 1000000) throw ConfigError("--conformer-attempts must be in 0..1000000");
  d.read.conformer_attempts = static_cast<int>(attempts);
  d.policy = o.get_string("on-error") == "fail" ? chem::ErrorPolicy::fail : chem::ErrorPolicy::skip;
  d.missing = missing_labels_from_string(o.get_string("missing-labels"));
  const auto min_atoms = o.get_int("min-atoms");
  if (min_atoms < 1) throw ConfigError("--min-atoms must be at least 1");
  d.min_atoms = static_cast<std::size_t>(min_atoms);
  const auto limit = o.get_int("limit");
  if (limit < 0) throw ConfigError("--limit must be >= 0");
  d.limit = static_cast<std::size_t>(limit);

  // "none" switches off a split file given in a --config file (use --split instead).
  if (o.has("split-file") && o.get_string("split-file") != "none") c.split_file = o.get_string("split-file");
  c.split = o.get_string("split");
  train::parse_split_sizes(c.split);  // validates early
  c.split_seed = static_cast<std::uint64_t>(o.get_int("split-seed"));

  train::engine_settings_from_options(o, c);
  const auto batch_atoms = o.get_int("batch-atoms");
  if (batch_atoms < 0) throw ConfigError("--batch-atoms must be >= 0 (0: no atom budget)");
  c.batch_atoms = static_cast<std::size_t>(batch_atoms);
  c.loss.kind = parse_regression_loss(o.get_string("loss"));
  c.loss.huber_delta = o.get_real("huber-delta");
  if (!(c.loss.huber_delta > 0)) throw ConfigError("--huber-delta must be > 0");
  c.fit_reference = o.get_bool("fit-reference");
  c.three_body_force_fit = o.get_string("three-body-fit") == "forces";
  c.force_weight = o.get_real("force-weight");
  if (!(c.force_weight >= 0) || !std::isfinite(c.force_weight)) throw ConfigError("--force-weight must be >= 0");
  c.force_target = o.get_string("force-target");
  if (c.force_weight > 0) {
    d.forces_column = o.get_string("forces-column");
    if (d.forces_column.empty()) throw ConfigError("--force-weight > 0 needs --forces-column");
    d.forces_source_unit = o.get_string("forces-unit");
    if (!d.forces_source_unit.empty()) force_unit_to_ev_per_angstrom(d.forces_source_unit);  // validates
  }
  const auto gradient_chunk = o.get_int("gradient-chunk");
  if (gradient_chunk < 0) throw ConfigError("--gradient-chunk must be >= 0 (0: automatic)");
  c.gradient_chunk = static_cast<std::size_t>(gradient_chunk);

  std::map<std::string, std::string> model;
  for (const auto& [key, value] : models::config_to_strings(models::ModelConfig{})) {
    (void)value;
    if (is_trainer_owned_model_key(key)) continue;
    model[key] = o.get_string(dashed(key));
  }
  try {
    c.model = models::config_from_strings(model);
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("model options: ") + e.what());
  }
  // An option that changes nothing for this model, as flt seq and flt image treat theirs: a
  // near_far run given --num-frequencies would otherwise look like it had tried them.
  {
    std::map<std::string, std::string> defaults, values;
    for (const auto& [key, value] : models::config_to_strings(models::ModelConfig{})) defaults[key] = value;
    for (const auto& [key, value] : models::config_to_strings(c.model)) values[key] = value;
    std::vector<train::OptionWithoutEffect> idle;
    for (const models::KeyWithoutEffect& unused : models::config_keys_without_effect(c.model)) {
      if (is_trainer_owned_model_key(unused.key)) continue;
      idle.push_back({dashed(unused.key), unused.why, values.at(unused.key) == defaults.at(unused.key)});
    }
    train::check_options_without_effect(o, idle, "--attention " + std::string(models::to_string(c.model.attention)));
  }
  if (c.three_body_force_fit && !(c.model.three_body && c.force_weight > 0))
    throw ConfigError("--three-body-fit forces (" + o.source("three-body-fit").where +
                      ") needs --three-body true and --force-weight > 0: it fits the three-body reference to the forces "
                      "the run trains on");
  d.max_z = c.model.max_z;

  c.out = o.get_string("out");
  c.overwrite = o.get_bool("overwrite");
  c.resume = o.get_bool("resume");
  if (c.overwrite && c.resume) throw ConfigError("--overwrite and --resume exclude each other");
  c.stop_after_epoch = o.get_int("stop-after-epoch");
  if (c.stop_after_epoch < 0) throw ConfigError("--stop-after-epoch must be >= 0 (0: off)");
  c.split_only = o.get_bool("split-only");

  // The resolved INI in schema order, with the inputs (file and positional) first in [data], so
  // the same configuration always gives the same text however it was given.
  const io::IniFile base = o.to_ini();
  io::IniFile ini;
  ini.set("data", "inputs", join(d.inputs));
  for (const auto& section : base.sections())
    for (const auto& e : section.entries)
      if (!(section.name == "data" && e.key == "inputs")) ini.set(section.name, e.key, e.value);
  const char* header = "flt train configuration (resolved; read it back with flt train --config FILE)";
  c.resolved_ini_as_given = ini.dump(header);
  io::IniFile named = ini;
  io::reduce_paths_to_file_names(named, o.schema(), {"inputs"});
  c.fingerprint_ini = named.dump(header);
  // config.ini names its files by absolute paths: --resume (and --config RUN_DIR/config.ini) from
  // another working directory reads the same files.
  io::make_paths_absolute(ini, o.schema(), {"inputs"}, {"none"});
  c.resolved_ini = ini.dump(header);
  return c;
}

TrainConfig parse_train_command_line(const std::vector<std::string>& args) {
  static const io::OptionSchema schema = train_option_schema();
  const io::CommandLine cl = io::parse_command_line(schema, args);
  bool from_run_directory = false;
  const std::optional<io::IniFile> file = train::training_config_file(cl, &from_run_directory);
  std::vector<std::pair<std::string, std::string>> options = cl.options;
  std::vector<std::string> positional = cl.positional;
  if (from_run_directory) {
    // The run's config.ini already lists every input of the run, positional ones included: inputs
    // given again (the original command line with --resume added) replace that list instead of
    // being appended to it.
    if (!positional.empty()) {
      auto given = std::find_if(options.begin(), options.end(), [](const auto& o) { return o.first == "inputs"; });
      const std::string listed = join(positional);
      if (given == options.end()) options.emplace_back("inputs", listed);
      else given->second += "," + listed;
      positional.clear();
    }
  }
  const io::ResolvedOptions resolved = io::resolve_options(schema, file ? &*file : nullptr, options);
  return config_from_options(resolved, positional);
}

// ---------------------------------------------------------------------------------------------
// The run.

namespace {

void record_times(const distributed::DataParallelGradient::Times& times, TrainResult& result) {
  result.exchange_seconds = times.exchange;
  result.wait_seconds = times.wait;
  result.convert_seconds = times.convert;
  result.reduce_seconds = times.reduce;
}

// The molecule model, its data and split as the engine's Trainable. Positions are indices into
// split.train. Shapes: S molecules in a batch, P targets.
class MoleculeTrainable final : public train::Trainable {
 public:
  // `data` is not const: the data-parallel step exchanges molecules' coordinates between ranks.
  MoleculeTrainable(const TrainConfig& cfg, models::MoleculeModel<float>& model, Dataset& data,
                    const train::Split& split, std::string checksum, std::vector<int> owners,
                    TrainResult& result, std::function<void(const std::string&)> say,
                    const TrainOutput& output)
      : cfg_(cfg), model_(model), data_(data), split_(split), checksum_(std::move(checksum)),
        owners_(std::move(owners)), result_(result), say_(std::move(say)), output_(output),
        world_(comm::world()), atoms_of_(atom_counts(data)) {
    for (const std::size_t i : split.train) atoms_by_position_.push_back(atoms_of_[i]);
    train_truth_ = labels_at(data, split.train);
    val_truth_ = labels_at(data, split.validation);
    offsets_ = Mat<double>::Zero(static_cast<Index>(data.size()), static_cast<Index>(data.num_targets()));
    offset_known_.assign(data.size(), 0);
    reference_gradient_.assign(data.size(), Mat<double>(0, 3));
    chunk_ = cfg.gradient_chunk;
    if (chunk_ == 0 && comm::in_mpi_job()) chunk_ = distributed::kDefaultGradientChunk;
  }

  // Label offsets known beforehand (rows in the order of `indices`, dataset indices).
  void set_offsets(std::span<const std::size_t> indices, const Mat<double>& offsets) {
    require(offsets.rows() == static_cast<Index>(indices.size()) && offsets.cols() == offsets_.cols(),
            "set_offsets: one row of offsets per structure expected");
    for (std::size_t k = 0; k < indices.size(); ++k) {
      offsets_.row(static_cast<Index>(indices[k])) = offsets.row(static_cast<Index>(k));
      offset_known_[indices[k]] = 1;
    }
  }
  // The offsets of a batch's molecules, computing those not yet known from the batch.
  Mat<double> offsets_of(const Batch& b) {
    const bool known = std::all_of(b.indices.begin(), b.indices.end(),
                                   [&](std::size_t i) { return offset_known_[i] != 0; });
    if (!known) {
      const Mat<double> computed = model_.label_offsets(b.molecules);
      for (std::size_t k = 0; k < b.indices.size(); ++k) {
        offsets_.row(static_cast<Index>(b.indices[k])) = computed.row(static_cast<Index>(k));
        offset_known_[b.indices[k]] = 1;
      }
    }
    return offsets_at(b.indices);
  }
  // The force target's reference gradient (MoleculeModel::reference_gradient: the three-body
  // reference's dE/dr, zero without one) of the batch's atoms, each structure's computed once
  // (in the batch's atom order, which make_model_batch fixes per structure).
  Mat<double> reference_gradient_of(const Batch& b) {
    const models::MoleculeBatch& m = b.molecules;
    if (!model_.config().three_body) return Mat<double>::Zero(m.num_atoms(), 3);
    const bool known = std::all_of(b.indices.begin(), b.indices.end(),
                                   [&](std::size_t i) { return reference_gradient_[i].rows() != 0; });
    if (!known) {
      const Mat<double> computed = model_.reference_gradient(m, force_target_);
      for (std::size_t k = 0; k < b.indices.size(); ++k) {
        const auto s = static_cast<Index>(k);
        reference_gradient_[b.indices[k]] = computed.middleRows(m.index.begin(s), m.index.size(s));
      }
    }
    Mat<double> out(m.num_atoms(), 3);
    for (std::size_t k = 0; k < b.indices.size(); ++k) {
      const auto s = static_cast<Index>(k);
      out.middleRows(m.index.begin(s), m.index.size(s)) = reference_gradient_[b.indices[k]];
    }
    return out;
  }
  // The offsets of molecules at `indices`, all known.
  Mat<double> offsets_at(std::span<const std::size_t> indices) const {
    Mat<double> out(static_cast<Index>(indices.size()), offsets_.cols());
    for (std::size_t k = 0; k < indices.size(); ++k) {
      require(offset_known_[indices[k]] != 0, "label offsets: molecule " + std::to_string(indices[k]) + " not computed");
      out.row(static_cast<Index>(k)) = offsets_.row(static_cast<Index>(indices[k]));
    }
    return out;
  }

  ParameterStore<float>& parameters() override { return model_.parameters(); }
  std::size_t train_size() const override { return split_.train.size(); }
  std::vector<std::vector<std::size_t>> batches(std::span<const std::size_t> order, std::size_t batch_size) const override {
    return batch_indices(order, batch_size, atoms_by_position_, cfg_.batch_atoms);
  }
  bool batch_count_varies() const override { return cfg_.batch_atoms > 0; }

  void load_state(const train::Checkpoint& ck) override {
    if (model_.config().redraw_features) model_.begin_step(static_cast<std::uint64_t>(ck.integer("feature_draw")));
    // Continue with the interrupted run's gradient chunks (a run that summed whole batches
    // continues whole-batch when serial; on several ranks it must switch to chunks).
    const std::size_t saved =
        ck.has_integer("gradient_chunk") ? static_cast<std::size_t>(ck.integer("gradient_chunk")) : 0;
    if (cfg_.gradient_chunk == 0 && (saved > 0 || world_.size() == 1)) chunk_ = saved;
    if (chunk_ != saved) {
      const std::string before = saved ? "in chunks of " + std::to_string(saved) + " molecules" : "over whole batches";
      say_("note: the interrupted run summed gradients " + before + "; this session uses chunks of " +
           std::to_string(chunk_) + " molecules (the result differs in rounding from an uninterrupted run)");
    }
  }
  void save_state(train::Checkpoint& ck) const override {
    ck.set_integer("feature_draw", static_cast<std::int64_t>(model_.feature_draw()));
    ck.set_integer("gradient_chunk", static_cast<std::int64_t>(chunk_));
  }
  bool accepts_stored_checksum(const std::string& stored) override {
    if (stored.starts_with(io::kTrainingDataChecksumPrefix)) return false;
    // A run of an flt that wrote the whole-set fingerprint: it needs every training coordinate.
    const std::string dir = cfg_.out.string();
    if (world_.size() > 1)
      throw ConfigError(dir + ": the run was started by an earlier flt, whose data checksum (" + stored +
                        ") needs every training molecule's coordinates on one rank; resume it once without mpirun "
                        "(or with -np 1), then on any number of ranks");
    const std::string legacy = legacy_data_fingerprint(data_, split_.train);
    if (legacy != stored)
      throw ConfigError(dir + ": --resume with different training data (checksum " + legacy + ", run " + stored + ")");
    say_("note: the run's data checksum is of the earlier kind; the data match, and the checkpoints from now on carry " +
         checksum_);
    return true;
  }
  std::string data_checksum() const override { return checksum_; }
  std::string validation_checksum() const override {
    std::vector<std::uint64_t> digests;
    for (const std::size_t i : split_.validation) digests.push_back(data_.digests[i]);
    return io::training_data_checksum(digests);
  }

  void before_training() override {
    const int ranks = world_.size();
    if (chunk_ > 0) {
      parallel_.emplace(world_, chunk_, cfg_.loss);
      const std::size_t chunks_per_batch = (cfg_.batch_size + chunk_ - 1) / chunk_;
      say_("data-parallel: " + std::to_string(ranks) + " rank" + (ranks > 1 ? "s" : "") + " (" + world_.description() +
           "), batches of " + std::to_string(cfg_.batch_size) + " in chunks of " + std::to_string(chunk_) + " molecules");
      if (chunks_per_batch < static_cast<std::size_t>(ranks))
        say_("warning: a batch has only " + std::to_string(chunks_per_batch) + " chunks for " + std::to_string(ranks) +
             " ranks: some ranks idle; raise --batch-size or lower --gradient-chunk");
    }
    result_.ranks = ranks;
    result_.communicator = world_.description();
    result_.gradient_chunk = chunk_;
    // Training on energies and forces (models/force_training.hpp).
    if (cfg_.force_weight > 0) {
      if (parallel_)
        throw ConfigError("--force-weight: training on forces runs in one process with whole-batch gradients "
                          "(no mpirun, --gradient-chunk 0)");
      force_target_ = find_force_target(data_.targets, cfg_.force_target);
      const DatasetTarget& ft = data_.targets[static_cast<std::size_t>(force_target_)];
      force_factor_ = io::conversion_factor(io::find_unit("eV"), io::find_unit(ft.unit));
      dual_ = std::make_unique<models::MoleculeModel<Dual>>(model_.config());
      std::size_t with_forces = 0;
      for (const std::size_t i : split_.train) with_forces += data_.forces[i].rows() > 0 ? 1 : 0;
      if (with_forces == 0)
        throw ConfigError("--force-weight > 0: no training molecule has forces in column '" + cfg_.data.forces_column +
                          "'");
      result_.force_target = ft.name;
      result_.force_unit = ft.unit + "/A";
      say_("training on energies and forces: target " + ft.name + ", force weight " + format_number(cfg_.force_weight) +
           ", " + std::to_string(with_forces) + " of " + std::to_string(split_.train.size()) +
           " training molecules with forces (the others: energies only)");
    }
  }

  void begin_epoch(std::int64_t epoch) override {
    epoch_ = epoch;
    // Training-time predictions (physical units, before each batch's update) in split.train order.
    train_pred_ = Mat<double>::Constant(static_cast<Index>(split_.train.size()),
                                        static_cast<Index>(data_.num_targets()), kNaN);
    my_train_rows_.clear();
    model_.reset_attention_stats();
  }
  void begin_step(std::int64_t step) override {
    step_ = step;
    if (model_.config().redraw_features) model_.begin_step(static_cast<std::uint64_t>(step));
  }

  train::StepResult train_batch(std::span<const std::size_t> positions, Rng&) override {
    std::vector<std::size_t> indices;
    for (const std::size_t k : positions) indices.push_back(split_.train[k]);
    LossValue lv;
    if (parallel_) {
      try {
        const auto keep_prediction = [&](std::size_t i, const Mat<double>& row) {
          const auto at = std::find(indices.begin(), indices.end(), i) - indices.begin();
          const Index k = static_cast<Index>(positions[static_cast<std::size_t>(at)]);
          train_pred_.row(k) = row;
          my_train_rows_.push_back(k);
        };
        lv.value = parallel_->compute(model_, cache_, data_, indices, owners_, keep_prediction,
                                      [this](const Batch& b) { return offsets_of(b); });
      } catch (const NumericalError& e) {
        throw NumericalError(std::string(e.what()) + " at epoch " + std::to_string(epoch_) + ", step " +
                             std::to_string(step_ + 1) + "; lower --lr or set --clip-norm");
      }
      result_.largest_step_atoms = std::max(result_.largest_step_atoms, parallel_->largest_chunk_atoms());
    } else {
      const Batch b = make_model_batch(data_, indices, model_);
      result_.largest_step_atoms = std::max(result_.largest_step_atoms, static_cast<std::size_t>(b.molecules.num_atoms()));
      const Mat<double> offsets = offsets_of(b);
      Mat<double> out_norm;
      if (dual_) {
        const Mat<double> reference_gradient = reference_gradient_of(b);
        const models::EnergyForceLoss efl = models::energy_force_gradient(
            model_, *dual_, b.molecules, model_.normalise_labels(offsets, b.labels), b.forces * force_factor_,
            force_target_, cfg_.force_weight, cfg_.loss, cache_, dual_cache_, &reference_gradient);
        lv = efl.energy;
        lv.value = efl.value();
        out_norm = efl.out;
      } else {
        const Mat<float> out = model_.forward(b.molecules, cache_);
        const Mat<float> target = model_.normalise_labels(offsets, b.labels).cast<float>();
        lv = regression_loss_forward<float>(cfg_.loss, out, target);
        Mat<float> dout = Mat<float>::Zero(out.rows(), out.cols());
        regression_loss_backward<float>(cfg_.loss, out, target, dout);
        model_.backward(b.molecules, cache_, dout);
        out_norm = out.cast<double>();
      }
      if (std::isfinite(lv.value)) {
        const Mat<double> phys = model_.denormalise(offsets, out_norm);
        for (std::size_t k = 0; k < positions.size(); ++k)
          train_pred_.row(static_cast<Index>(positions[k])) = phys.row(static_cast<Index>(k));
      }
    }
    result_.session_molecules += indices.size();
    if (cfg_.batch_atoms > 0 && indices.size() == 1 && atoms_of_[indices[0]] > cfg_.batch_atoms)
      ++result_.session_batches_over_budget;
    return {lv.value, static_cast<double>(indices.size())};
  }

  void end_epoch() override {
    attention_ = parallel_ ? distributed::share_attention_stats(world_, model_.attention_stats()) : model_.attention_stats();
    if (parallel_) distributed::share_rows(world_, train_pred_, my_train_rows_);
  }

  train::Validation validate() override {
    Mat<double> val_norm, val_pred, val_targets;
    if (parallel_) {
      auto shared = distributed::predict_shared(world_, model_, data_, split_.validation, cfg_.eval_batch_size,
                                                cfg_.batch_atoms, [this](const Batch& b) { return offsets_of(b); });
      val_pred = std::move(shared.physical);
      val_norm = std::move(shared.normalised);
      val_targets = std::move(shared.normalised_labels);
    } else {
      val_pred = predict_indices(model_, data_, split_.validation, cfg_.eval_batch_size, cfg_.batch_atoms, &val_norm,
                                 [this](const Batch& b) { return offsets_of(b); });
    }
    val_force_mae_ = kNaN;
    if (dual_ && !split_.validation.empty())
      val_force_mae_ = force_metrics(model_, data_, split_.validation, force_target_, force_factor_,
                                     cfg_.eval_batch_size, cfg_.batch_atoms)
                           .mae;
    train::Validation v;
    if (!split_.validation.empty()) {
      if (!parallel_)
        val_targets = model_.normalise_labels(offsets_at(split_.validation), labels_at(data_, split_.validation));
      v.loss = regression_loss_forward<double>(cfg_.loss, val_norm, val_targets).value;
    }
    const std::size_t p = data_.num_targets();
    train_mae_ = maes(metrics_of(train_pred_, train_truth_));
    val_mae_ = split_.validation.empty() ? std::vector<double>(p, kNaN) : maes(metrics_of(val_pred, val_truth_));
    // Without a (labelled) validation set, select on the training MAE.
    v.selection = selection_metric(val_mae_, model_.normalisation());
    if (std::isnan(v.selection)) v.selection = selection_metric(train_mae_, model_.normalisation());
    // Training on forces: the forces count as in the loss, W MAE_F / sigma (forces in the energy's
    // standardised unit, weighted by --force-weight).
    if (dual_ && std::isfinite(val_force_mae_) && std::isfinite(v.selection))
      v.selection += cfg_.force_weight * val_force_mae_ /
                     model_.normalisation().scale[static_cast<std::size_t>(force_target_)];
    for (std::size_t t = 0; t < p; ++t) {
      v.columns.push_back(train_mae_[t]);
      v.columns.push_back(val_mae_[t]);
    }
    if (cfg_.force_weight > 0) v.columns.push_back(val_force_mae_);
    return v;
  }
  std::vector<std::string> curve_columns() const override {
    std::vector<std::string> c;
    for (const auto& t : data_.targets) {
      c.push_back(io::with_unit_suffix("train_mae_" + t.name, t.unit));
      c.push_back(io::with_unit_suffix("val_mae_" + t.name, t.unit));
    }
    if (cfg_.force_weight > 0) {  // asked before before_training() sets the force model up
      const auto target = find_force_target(data_.targets, cfg_.force_target);
      const DatasetTarget& ft = data_.targets[static_cast<std::size_t>(target)];
      c.push_back(io::with_unit_suffix("val_force_mae_" + ft.name, ft.unit + "/A"));
    }
    return c;
  }

  std::string epoch_summary(const train::EpochInfo& info) const override {
    std::string summary;
    for (std::size_t t = 0; t < data_.num_targets(); ++t)
      summary += (t ? ", " : "") + data_.targets[t].name + " train " + format_number(train_mae_[t]) + " val " +
                 format_number(val_mae_[t]) + " " + data_.targets[t].unit;
    if (dual_) summary += ", forces val " + format_number(val_force_mae_) + " " + result_.force_unit;
    summary += "; lr " + format_number(info.lr, 3);
    if (attention_.denominators > 0)
      summary += "; attention min den/scale " + format_number(attention_.min_relative_denominator, 3) + ", " +
                 std::to_string(attention_.nonpositive_denominators) + " nonpositive of " +
                 std::to_string(attention_.denominators);
    if (info.stopped_by_budget) summary += " (time budget reached)";
    if (info.improved) summary += " *";
    if (!info.eta.empty()) summary += "; " + info.eta;
    return summary;
  }

  void after_epoch(const train::EpochInfo& info) override {
    if (world_.rank() == 0)
      append_attention_csv(result_.run_dir / "attention_stats.csv", info.epoch, attention_, info.epoch == 1);
    if (!output_.on_epoch) return;
    EpochReport report;
    report.record.epoch = info.epoch;
    report.record.step = info.step;
    report.record.learning_rate = info.lr;
    report.record.train_loss = info.train_loss;
    report.record.val_loss = info.validation->loss;
    report.record.seconds = info.seconds;
    report.record.train_mae = train_mae_;
    report.record.val_mae = val_mae_;
    report.val_force_mae = val_force_mae_;
    report.selection_metric = info.validation->selection;
    report.improved = info.improved;
    report.attention = attention_;
    report.targets = &data_.targets;
    output_.on_epoch(report);
  }

  const distributed::DataParallelGradient* parallel() const { return parallel_ ? &*parallel_ : nullptr; }
  bool forces() const { return dual_ != nullptr; }
  Index force_target() const { return force_target_; }
  double force_factor() const { return force_factor_; }

 private:
  const TrainConfig& cfg_;
  models::MoleculeModel<float>& model_;
  Dataset& data_;
  const train::Split& split_;
  std::string checksum_;
  std::vector<int> owners_;
  TrainResult& result_;
  std::function<void(const std::string&)> say_;
  const TrainOutput& output_;
  comm::Communicator& world_;
  std::vector<std::size_t> atoms_of_, atoms_by_position_;
  Mat<double> train_truth_, val_truth_, train_pred_;
  // Label offsets (MoleculeModel::label_offsets) by dataset index, each computed once: they depend
  // only on a molecule's atoms and coordinates, and the three-body reference's share costs a
  // descriptor pass that would otherwise repeat every step and epoch.
  Mat<double> offsets_;
  std::vector<unsigned char> offset_known_;
  std::vector<Mat<double>> reference_gradient_;  // per dataset index (reference_gradient_of)
  std::vector<Index> my_train_rows_;
  std::size_t chunk_ = 0;
  std::optional<distributed::DataParallelGradient> parallel_;
  std::unique_ptr<models::MoleculeModel<Dual>> dual_;
  Index force_target_ = -1;
  double force_factor_ = 1.0;  // eV/Angstrom (the dataset's) -> the target's unit per Angstrom
  models::ModelCache<float> cache_;
  models::ModelCache<Dual> dual_cache_;
  std::int64_t epoch_ = 0, step_ = 0;
  attn::AttentionStats attention_;
  std::vector<double> train_mae_, val_mae_;
  double val_force_mae_ = kNaN;
};

}  // namespace

// The model knows the elements of its training molecules only: validation and test molecules
// holding another element could not be predicted, so they leave those subsets (and split.csv),
// named in a warning, instead of failing the run after its training.
void leave_out_unseen_elements(const Dataset& data, train::Split& split) {
  std::set<std::int32_t> seen;
  for (const std::size_t i : split.train)
    seen.insert(data.molecules[i].atomic_numbers.begin(), data.molecules[i].atomic_numbers.end());
  for (auto* subset : {&split.validation, &split.test}) {
    std::vector<std::size_t> kept, left;
    std::vector<int> elements;
    for (const std::size_t i : *subset) {
      bool ok = true;
      for (const std::int32_t z : data.molecules[i].atomic_numbers) {
        if (seen.count(z) > 0) continue;
        ok = false;
        if (std::find(elements.begin(), elements.end(), z) == elements.end()) elements.push_back(z);
      }
      (ok ? kept : left).push_back(i);
    }
    if (left.empty()) continue;
    std::sort(elements.begin(), elements.end());
    std::string line = std::to_string(left.size()) + (subset == &split.test ? " test" : " validation") +
                       " molecule" + (left.size() == 1 ? "" : "s") + " left out: element";
    line += elements.size() == 1 ? " Z=" : "s Z=";
    for (std::size_t k = 0; k < elements.size(); ++k) {
      if (k > 0) line += ',';
      line += std::to_string(elements[k]);
    }
    line += " not among the training molecules' (the model could not predict them):";
    for (std::size_t k = 0; k < left.size() && k < 5; ++k) {
      line += k > 0 ? ", " : " ";
      line += data.ids[left[k]];
    }
    if (left.size() > 5) line += ", ... (" + std::to_string(left.size() - 5) + " more)";
    log_warning(line);
    *subset = std::move(kept);
  }
}

TrainResult run_training(const TrainConfig& cfg, const TrainOutput& output) {
  if (cfg.out.empty()) throw ConfigError("--out: a run directory is required");
  if (cfg.threads > 0) omp_set_num_threads(cfg.threads);
  const train::RunMode mode =
      cfg.resume ? train::RunMode::resume : cfg.overwrite ? train::RunMode::overwrite : train::RunMode::fresh;
  // Rank 0 owns the run directory and every file in it; the others read the inputs (and, on
  // --resume, the checkpoint) and compute.
  comm::Communicator& world = comm::world();
  const int ranks = world.size();
  const bool lead = world.rank() == 0;
  const fs::path dir(cfg.out);
  // Checked now, prepared (a run it overwrites emptied) only when the run starts writing, after
  // the inputs, the split and the normalisation: a run that fails before that leaves it untouched.
  if (lead) train::check_run_directory(dir, mode);
  train::RunDirectoryLock run_lock;  // held from the first write to the end of the run
  auto start_writing = [&](const train::Split& split, const std::vector<std::string>& ids) {
    if (lead) {
      run_lock = train::prepare_run_directory(dir, mode);
      train::write_split_file(dir / "split.csv", split, ids);
      if (!cfg.resume) io::write_file_atomic(dir / "config.ini", cfg.resolved_ini);
    }
    world.barrier();  // the directory is ready (a failure on rank 0 ends the whole job instead)
  };
  std::ostream* progress = lead ? output.progress : nullptr;
  auto say = [&](const std::string& line) {
    log_info(line);
    if (progress) *progress << line << '\n' << std::flush;
  };

  // 1. Data and split. On several ranks the load is sharded (train_distributed.hpp): the first read
  // keeps no coordinates, the second keeps this rank's molecules' only.
  const bool sharded = ranks > 1;
  if (sharded && std::find(cfg.data.inputs.begin(), cfg.data.inputs.end(), "-") != cfg.data.inputs.end())
    throw ConfigError("standard input ('-') cannot be read under mpirun with several ranks: every rank reads the "
                      "inputs twice (once for the split, once for its own molecules' coordinates); give a file");
  ReadProgressBar reading({progress, output.terminal}, "reading", cfg.data.limit);
  DatasetOptions data_options = cfg.data;
  data_options.on_progress = reading.callback();
  if (sharded) data_options.keep_coordinates = [](std::size_t) { return false; };
  Dataset data = load_dataset(data_options);
  reading.finish();
  say(data.describe());
  {
    // How each target is modelled, which --pooling changes: a sum of per-atom contributions (with
    // per-element reference energies) or a mean over the atoms.
    std::string line = "targets:";
    for (std::size_t t = 0; t < data.targets.size(); ++t) {
      const DatasetTarget& target = data.targets[t];
      line += t == 0 ? " " : "; ";
      line += target.name;
      line += " [";
      line += io::shown_unit(target.unit);
      if (!target.source_unit.empty() && target.source_unit != target.unit) line += ", read in " + target.source_unit;
      line += "]";
      line += target.extensive ? " sum over atoms" : " mean over atoms";
    }
    say(line + " (--pooling NAME=sum|mean)");
  }
  train::Split split;
  if (!cfg.split_file.empty()) {
    split = train::read_split_file(cfg.split_file, data.size(), data.ids);
  } else {
    split = train::random_split(data.size(), train::parse_split_sizes(cfg.split), cfg.split_seed);
  }
  if (split.train.empty()) throw ConfigError("the split leaves no training molecules");
  leave_out_unseen_elements(data, split);
  if (cfg.split_only) {
    start_writing(split, data.ids);
    TrainResult r;
    r.run_dir = dir;
    r.targets = data.targets;
    r.train_size = split.train.size();
    r.validation_size = split.validation.size();
    r.test_size = split.test.size();
    r.dataset_summary = data.describe();
    r.skipped_records = data.summary.skipped.size();
    r.split_only = true;
    return r;
  }
  say("split: " + std::to_string(split.train.size()) + " train, " + std::to_string(split.validation.size()) +
      " validation, " + std::to_string(split.test.size()) + " test molecules");
  if (const std::size_t used = split.train.size() + split.validation.size() + split.test.size(); used < data.size())
    log_warning(std::to_string(data.size() - used) + " of " + std::to_string(data.size()) +
                " molecules are in no subset of the split (fractions round down; 'rest' takes what is left)");
  if (split.validation.empty())
    log_warning("no validation molecules: the epoch kept is the one of least training MAE");
  // Atom counts come from the atomic numbers, which every rank keeps for every molecule.
  const std::vector<std::size_t> atoms_of = atom_counts(data);
  // Which rank holds which molecule's coordinates (train_distributed.hpp); one rank holds all.
  const std::vector<int> shard_owners = distributed::molecule_owners(
      data.size(), split.train, split.validation, split.test, cfg.eval_batch_size, ranks, atoms_of, cfg.batch_atoms);
  if (sharded) {
    ReadProgressBar second({progress, output.terminal}, "reading this rank's coordinates", cfg.data.limit);
    DatasetOptions again = cfg.data;
    again.on_progress = second.callback();
    const int rank = world.rank();
    load_coordinates(data, again, [&](std::size_t s) { return shard_owners[s] == rank; });
    second.finish();
  }
  if (ranks > 1) {
    // Reported by rank 0 for all ranks: the coordinates each rank held after loading.
    comm::ByteWriter mine;
    mine.put<std::uint64_t>(data.coordinates_held());
    const auto held = world.allgather(mine.bytes());
    std::string line = "coordinates held after loading, per rank:";
    for (int r = 0; r < ranks; ++r) {
      comm::ByteReader in(held[static_cast<std::size_t>(r)]);
      line += (r ? ", " : " ") + std::to_string(in.get<std::uint64_t>());
    }
    say(line + " of " + std::to_string(data.size()) + " molecules");
  }

  // 2. Model and normalisation (fitted on the training subset only).
  models::ModelConfig mc = cfg.model;
  mc.targets = data.target_specs();
  mc.seed = cfg.seed;
  models::MoleculeModel<float> model(mc);
  Mat<double> training_offsets;  // split.train x P, with the three-body reference only
  if (!mc.three_body) {
    model.set_normalisation(
        models::fit_normalisation(mc, composition_batch(data, split.train), labels_at(data, split.train), cfg.fit_reference));
  } else {
    // The three-body reference is fitted on the training structures' descriptors. Under a sharded
    // load each rank computes those of the structures it holds and every rank gathers all (the
    // same fit as one rank's); one rank computes them all.
    say("fitting the three-body reference on " + std::to_string(split.train.size()) + " training structures");
    const models::MoleculeBatch composition = composition_batch(data, split.train);
    const Mat<double> descriptors = gathered_three_body_descriptors(
        world, data, split.train, shard_owners, models::training_three_body_basis(mc, composition));
    // With --three-body-fit forces, training on forces (one process: the trainer refuses them under
    // MPI) fits the reference of the forces' target to energies and forces, weighted as the loss
    // weighs them. Not the default: on rMD17 ethanol the network then stalls (docs/training.md).
    Batch with_forces;
    models::ReferenceForces reference_forces;
    if (cfg.three_body_force_fit && world.size() == 1 && data.has_forces()) {
      with_forces = make_batch(data, split.train);
      reference_forces.target = find_force_target(data.targets, cfg.force_target);
      with_forces.forces *= io::conversion_factor(
          io::find_unit("eV"), io::find_unit(data.targets[static_cast<std::size_t>(reference_forces.target)].unit));
      reference_forces.batch = &with_forces.molecules;
      reference_forces.forces = &with_forces.forces;
      reference_forces.weight = cfg.force_weight;
    }
    std::vector<std::string> lines;
    model.set_normalisation(models::fit_normalisation(mc, composition, labels_at(data, split.train), cfg.fit_reference,
                                                      std::nullopt, &lines, &descriptors,
                                                      reference_forces.batch ? &reference_forces : nullptr));
    for (const auto& line : lines) say(line);
    // The training structures' label offsets from the same descriptors (no second descriptor pass).
    training_offsets = model.label_offsets_from_descriptors(composition, descriptors);
  }
  if (mc.charge_coulomb) {
    const double c = model.start_charge_mask_at_coulomb();
    say("charge mask starts at Coulomb's law: coefficients " + format_number(c) + " (target scale " +
        format_number(model.normalisation().scale.front()) + " " + mc.targets.front().unit + ")");
  }
  // From the per-molecule digests taken while reading, so ranks that hold different molecules'
  // coordinates agree, for any number of ranks.
  std::vector<std::uint64_t> train_digests;
  require(data.digests.size() == data.size(), "run_training: the dataset has no molecule digests");
  for (std::size_t i : split.train) train_digests.push_back(data.digests[i]);
  const std::string checksum = io::training_data_checksum(train_digests);
  const std::string config_fingerprint = train::resume_fingerprint(
      cfg.fingerprint_ini.empty() ? cfg.resolved_ini : cfg.fingerprint_ini, later_options_neutral_values());
  const std::string config_fingerprint_as_given =
      train::resume_fingerprint(cfg.resolved_ini_as_given.empty() ? cfg.resolved_ini : cfg.resolved_ini_as_given,
                                later_options_neutral_values());
  if (cfg.batch_atoms > 0) {
    std::size_t largest = 0;
    std::vector<std::size_t> over;
    for (const std::size_t i : split.train) {
      largest = std::max(largest, atoms_of[i]);
      if (atoms_of[i] > cfg.batch_atoms) over.push_back(i);
    }
    std::string line = "batches: at most " + std::to_string(cfg.batch_size) + " molecules and " +
                       std::to_string(cfg.batch_atoms) + " atoms (largest training molecule: " +
                       std::to_string(largest) + " atoms)";
    if (!over.empty()) {
      line += "; " + std::to_string(over.size()) + " training molecule" + (over.size() == 1 ? " is" : "s are") +
              " larger than the budget and train" + (over.size() == 1 ? "s" : "") + " alone in a batch:";
      for (std::size_t k = 0; k < over.size() && k < 5; ++k)
        line += (k == 0 ? " " : ", ") + data.ids[over[k]] + " (" + std::to_string(atoms_of[over[k]]) + " atoms)";
      if (over.size() > 5) line += ", ... (" + std::to_string(over.size() - 5) + " more)";
    }
    say(line);
  }

  start_writing(split, data.ids);

  // 3. The training loop (train/engine.hpp): an epoch's order is a pure function of (seed, epoch),
  // and its batches of that order and the molecules' atom counts (identical on every rank: the
  // atomic numbers stay everywhere), so a resumed run and every rank of a job draw the same ones.
  TrainResult result;
  result.run_dir = dir;
  result.targets = data.targets;
  result.train_size = split.train.size();
  result.validation_size = split.validation.size();
  result.test_size = split.test.size();
  result.data_checksum = checksum;
  result.dataset_summary = data.describe();
  result.skipped_records = data.summary.skipped.size();
  MoleculeTrainable trainable(cfg, model, data, split, checksum, shard_owners, result, say, output);
  if (training_offsets.size() != 0) trainable.set_offsets(split.train, training_offsets);
  train::EngineConfig ec;
  static_cast<train::EngineSettings&>(ec) = cfg;
  ec.default_warmup = train::DefaultWarmup::one_epoch;
  ec.dir = dir;
  ec.resume = cfg.resume;
  ec.writer = lead;
  ec.config_fingerprint = config_fingerprint;
  ec.config_fingerprint_as_given = config_fingerprint_as_given;
  ec.progress = progress;
  ec.terminal = output.terminal;
  ec.on_step = output.on_step;
  ec.barrier = [&world] { world.barrier(); };  // rank 0 has written the last epoch's checkpoints
  const train::EngineResult run = train::Engine(ec).run(trainable);
  const auto* parallel = trainable.parallel();
  result.epochs_run = run.epochs_run;
  result.best_epoch = run.best_epoch;
  result.stopped_early = run.stopped_early;
  result.seconds = run.seconds;
  result.session_steps = run.session_steps;
  result.session_train_seconds = run.session_step_seconds;
  if (parallel) record_times(parallel->times(), result);
  if (run.stopped_by_hook) {
    result.stopped_by_hook = true;
    return result;
  }

  // 4. Final model: the best checkpoint's evaluation weights (in the parameters now).
  const bool dual = trainable.forces();
  const Index force_target = trainable.force_target();
  const double force_factor = trainable.force_factor();
  const std::size_t p = data.num_targets();
  const Mat<double> test_pred =
      parallel ? distributed::predict_shared(world, model, data, split.test, cfg.eval_batch_size, cfg.batch_atoms).physical
               : predict_indices(model, data, split.test, cfg.eval_batch_size, cfg.batch_atoms);
  const Mat<double> test_truth = labels_at(data, split.test);
  result.test_metrics = split.test.empty() ? std::vector<train::Metrics>{} : metrics_of(test_pred, test_truth);
  if (dual && !split.test.empty())
    result.test_force_metrics =
        force_metrics(model, data, split.test, force_target, force_factor, cfg.eval_batch_size, cfg.batch_atoms);
  result.model_path = dir / "model.flt";
  if (!lead) return result;

  std::map<std::string, std::string> meta;
  meta["training.data_checksum"] = checksum;
  meta["training.seed"] = std::to_string(cfg.seed);
  meta["training.code_version"] = std::string(flt::version()) + " (" + flt::git_commit() + ")";
  meta["training.epochs"] = std::to_string(run.epochs_run);
  meta["training.best_epoch"] = std::to_string(result.best_epoch);
  meta["training.steps"] = std::to_string(run.best_step);
  meta["training.train_molecules"] = std::to_string(split.train.size());
  meta["training.validation_molecules"] = std::to_string(split.validation.size());
  meta["training.test_molecules"] = std::to_string(split.test.size());
  meta["training.config"] = config_fingerprint;
  meta["training.weights"] = run.ema ? "ema" : "final";
  // How conformers of SMILES (and 2-D records) were made: flt predict and flt eval make them the
  // same way unless told otherwise (pipeline::apply_trained_conformers).
  meta["training.conformer_seed"] = std::to_string(cfg.data.read.seed);
  meta["training.conformer_optimize"] = cfg.data.read.optimize == chem::Optimize::mmff ? "mmff" : "none";
  meta["training.conformer_attempts"] = std::to_string(cfg.data.read.conformer_attempts);
  for (std::size_t t = 0; t < result.test_metrics.size(); ++t) {
    meta["training.test_mae." + data.targets[t].name] = io::csv_number(result.test_metrics[t].mae);
    meta["training.test_rmse." + data.targets[t].name] = io::csv_number(result.test_metrics[t].rmse);
  }
  if (result.test_force_metrics) {
    meta["training.force_weight"] = io::csv_number(cfg.force_weight);
    meta["training.test_force_mae." + result.force_target] = io::csv_number(result.test_force_metrics->mae);
    meta["training.test_force_rmse." + result.force_target] = io::csv_number(result.test_force_metrics->rmse);
  }
  models::save_model(result.model_path, model, meta);

  if (!split.test.empty()) {
    std::vector<train::TargetColumn> metric_columns;
    for (const auto& t : data.targets) metric_columns.push_back({t.name, io::shown_unit(t.unit)});
    std::vector<train::Metrics> metric_rows = result.test_metrics;
    if (result.test_force_metrics) {
      metric_columns.push_back({result.force_target + " forces", result.force_unit});  // as flt eval names it
      metric_rows.push_back(*result.test_force_metrics);
    }
    train::write_metrics_csv(dir / "test_metrics.csv", metric_columns, metric_rows);
    write_test_predictions(dir / "test_predictions.csv", data, split.test, test_pred);
  }
  std::vector<double> epochs;
  for (const auto& r : run.curve) epochs.push_back(static_cast<double>(r.epoch));
  for (std::size_t t = 0; t < p; ++t) {
    std::vector<double> tr, va;
    for (const auto& r : run.curve) {
      tr.push_back(r.columns[2 * t]);
      va.push_back(r.columns[2 * t + 1]);
    }
    io::write_svg(dir / ("learning_curve_" + data.targets[t].name + ".svg"),
                     train::learning_curve_svg(data.targets[t].name, data.targets[t].unit, epochs, tr, va));
    if (!split.test.empty()) {
      std::vector<double> yt(static_cast<std::size_t>(test_truth.rows())), yp(yt.size());
      for (Index i = 0; i < test_truth.rows(); ++i) {
        yt[static_cast<std::size_t>(i)] = test_truth(i, static_cast<Index>(t));
        yp[static_cast<std::size_t>(i)] = test_pred(i, static_cast<Index>(t));
      }
      const auto reference = parity_reference(data, split.test, t, model.normalisation());
      io::write_svg(dir / ("parity_" + data.targets[t].name + ".svg"),
                       train::readable_parity_svg(data.targets[t].name, data.targets[t].unit, yt, yp,
                                                  reference ? &*reference : nullptr, "test"));
    }
  }
  return result;
}

std::string format_summary(const TrainResult& r) {
  std::ostringstream out;
  out << "run directory: " << r.run_dir.string() << '\n';
  if (r.split_only) {
    out << "data: " << r.dataset_summary << '\n';
    out << "split: " << r.train_size << " train, " << r.validation_size << " validation, " << r.test_size
        << " test molecules -> " << (r.run_dir / "split.csv").string() << '\n';
    return out.str();
  }
  if (r.stopped_by_hook) {
    out << "stopped after epoch " << r.epochs_run << " (continue with --resume)\n";
    return out.str();
  }
  out << "model: " << r.model_path.string() << '\n';
  out << "data: " << r.dataset_summary << '\n';
  out << "molecules: " << r.train_size << " train, " << r.validation_size << " validation, " << r.test_size
      << " test; data checksum " << r.data_checksum << '\n';
  out << "epochs: " << r.epochs_run << " (best " << r.best_epoch << ")" << (r.stopped_early ? ", stopped early" : "")
      << "; training time " << io::format_duration(r.seconds) << '\n';
  if (r.session_steps > 0) {
    const double steps = static_cast<double>(r.session_steps);
    out << "throughput: " << format_number(static_cast<double>(r.session_molecules) / r.session_train_seconds, 4)
        << " molecules/s (" << r.session_steps << " step" << (r.session_steps == 1 ? "" : "s")
        << " this session, at most " << r.largest_step_atoms << " atoms in one pass"
        << (r.ranks > 1 ? " on rank 0" : "");
    if (r.session_batches_over_budget > 0)
      out << "; " << r.session_batches_over_budget << " step" << (r.session_batches_over_budget == 1 ? "" : "s")
          << " of one molecule above --batch-atoms";
    out << ")";
    if (r.gradient_chunk > 0)
      out << "; data-parallel: " << r.ranks << " rank" << (r.ranks > 1 ? "s" : "") << " (" << r.communicator
          << "), gradient chunks of " << r.gradient_chunk << " molecules; per step: all-reduce "
          << format_number(1e3 * r.reduce_seconds / steps, 3) << " ms, waiting for the slowest rank "
          << format_number(1e3 * r.wait_seconds / steps, 3) << " ms, fixed-point conversion "
          << format_number(1e3 * r.convert_seconds / steps, 3) << " ms, molecule exchange "
          << format_number(1e3 * r.exchange_seconds / steps, 3) << " ms";
    out << '\n';
  }
  if (!r.test_metrics.empty()) {
    out << "test metrics:\n";
    out << "  " << std::left << std::setw(10) << "target" << std::setw(14) << "unit" << std::right << std::setw(8)
        << "n" << std::setw(14) << "MAE" << std::setw(14) << "RMSE" << std::setw(12) << "R^2" << '\n';
    for (std::size_t t = 0; t < r.test_metrics.size(); ++t) {
      const auto& m = r.test_metrics[t];
      out << "  " << std::left << std::setw(10) << r.targets[t].name << std::setw(14) << io::shown_unit(r.targets[t].unit) << std::right
          << std::setw(8) << m.count << std::setw(14) << format_number(m.mae, 5) << std::setw(14)
          << format_number(m.rmse, 5) << std::setw(12) << format_r2(m.r2) << '\n';
    }
    if (r.test_force_metrics) {
      const auto& m = *r.test_force_metrics;
      out << "  " << std::left << std::setw(10) << "forces" << std::setw(14) << r.force_unit << std::right
          << std::setw(8) << m.count << std::setw(14) << format_number(m.mae, 5) << std::setw(14)
          << format_number(m.rmse, 5) << std::setw(12) << format_r2(m.r2)
          << "   (per component, " << r.force_target << " forces)\n";
    }
  }
  return out.str();
}

}  // namespace flt::pipeline
