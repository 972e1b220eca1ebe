// Datasets for training and evaluation: molecules read by the flt::chem readers (files,
// directories, .gz, tar archives, "-") with per-molecule labels from the records or from a CSV
// keyed by record id or title, converted here into each target's training unit (io/units.hpp).
//
// Shapes: S molecules, P targets; labels S x P (row-major, training units, NaN = missing).
// ids[s]: the record's title, or "<source>:<record>" when it is empty; titles[s]: as read;
// sources[s]: "<file>:<record>" for messages.
// Labels, units, record ids and bad records: docs/training.md, "The dataset loader".
#pragma once

#include "chem/reader.hpp"
#include "core/tensor.hpp"
#include "models/molecule_model.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace flt::pipeline {

// One target column of a dataset.
struct DatasetTarget {
  std::string name;         // as asked for, e.g. "U0", "gap", "energy"
  std::string unit;         // training unit (labels are stored in it), e.g. "eV"
  std::string source_unit;  // unit of the input ("Hartree" for QM9 U0); "" if no label was read
  bool extensive = true;    // summed over atoms (energies, zpve, Cv, alpha, ...) or averaged
};

// What to do with a molecule that lacks a label for some requested target.
enum class MissingLabels {
  mask,   // keep it; the label is NaN and masked (default); counted per target
  skip,   // drop the molecule (listed in the summary as skipped)
  error,  // throw InputError naming the record and the target
};
MissingLabels missing_labels_from_string(const std::string& name);  // ConfigError otherwise
const char* to_string(MissingLabels policy) noexcept;

struct DatasetOptions {
  std::vector<std::string> inputs;   // files, directories, archives, "-"
  chem::ReadOptions read;            // format, hydrogens, 3-D policy, min distance
  // Bad records (unparsable, non-finite coordinates, atoms on top of each other, no atoms, fewer
  // than min_atoms atoms, elements outside max_z, a label that is not a number): skip logs a
  // warning, lists the record in Dataset::summary and carries on; fail throws the first as
  // flt::InputError naming file, record and reason.
  chem::ErrorPolicy policy = chem::ErrorPolicy::skip;

  // Targets (may be empty: a dataset of unlabelled molecules, e.g. for prediction).
  std::vector<std::string> targets;
  // Training unit per target; default: train::default_training_unit (QM9 training unit, eV for any
  // energy, else the source unit).
  std::map<std::string, std::string> units;
  // Unit of labels whose input gives none (extended-XYZ keys, SD tags, CSV columns without
  // "[unit]"); a QM9 property name defaults to its QM9 unit; otherwise a missing unit is an error.
  std::map<std::string, std::string> source_units;
  // Pooling per target ("sum" = extensive, "mean" = intensive); default: the QM9 table's extent,
  // else extensive for energies and intensive for everything else.
  std::map<std::string, std::string> pooling;

  // Labels from a CSV instead of the records: path ("" = from the records) and key column
  // ("" = the first of id, title, name). A key column named "title" or "name" is matched against
  // record titles, any other against record ids.
  std::string labels_csv;
  std::string label_key;

  MissingLabels missing = MissingLabels::mask;
  // Per-atom reference forces (for training on energies and forces): the name of the per-atom
  // column holding them (extended XYZ `forces:R:3`, ASE's eV/Angstrom), "" for none. A record
  // without the column keeps its molecule with its forces missing (counted in forces_missing,
  // masked in the loss); a column of another width is a bad record. Stored in eV/Angstrom.
  std::string forces_column;
  // Unit of the forces column when the input gives none, or to override it: "<energy>/<length>",
  // e.g. "eV/A", "Hartree/Bohr", "kcal/mol/A" ("" = the column's own unit; none is an error).
  std::string forces_source_unit;
  std::size_t min_atoms = 1;  // molecules with fewer atoms are bad records (0 atoms always are)
  int max_z = models::kDefaultMaxZ;
  std::size_t limit = 0;      // read at most this many good molecules (0 = all)
  // Called after every record read (e.g. a ReadProgressBar, dataset_progress.hpp); may be empty.
  std::function<void(const chem::ReadProgress&)> on_progress;

  // Which good molecules keep their coordinates and formal charges, by position in the dataset
  // (reading order); empty: all. The others keep their atomic numbers, ids, labels and digest only
  // (the first read of a sharded load under mpirun: see load_coordinates).
  std::function<bool(std::size_t)> keep_coordinates;
  // Log a warning for each bad record (off for the second read of a sharded load, whose bad
  // records the first read reported).
  bool warn_skipped = true;
};

struct Dataset {
  std::vector<DatasetTarget> targets;            // P
  std::vector<models::Molecule> molecules;       // S
  std::vector<std::string> ids, titles, sources; // S each
  Mat<double> labels;                            // S x P, training units, NaN = missing
  std::vector<std::size_t> missing_per_target;   // P: molecules kept with a NaN label
  // With DatasetOptions::forces_column: per molecule its atoms' reference forces (N_s x 3,
  // eV/Angstrom), empty (0 x 3) when the record had none (or its coordinates were not kept);
  // otherwise empty.
  std::vector<Mat<double>> forces;
  std::size_t forces_missing = 0;                // molecules read without forces
  bool has_forces() const noexcept { return !forces.empty(); }
  chem::ReadSummary summary;                     // records read and skipped (with reasons)
  // S: io::molecule_digest of each molecule's atoms, coordinates and labels, taken when it was
  // read (also for molecules whose coordinates were not kept).
  std::vector<std::uint64_t> digests;

  std::size_t size() const noexcept { return molecules.size(); }
  std::size_t num_targets() const noexcept { return targets.size(); }
  // Molecules whose coordinates are in memory (all of them unless keep_coordinates said otherwise
  // or they were dropped).
  std::size_t coordinates_held() const noexcept;
  std::vector<std::string> target_names() const;
  std::vector<std::string> target_units() const;
  // The model's target specs (name, training unit, extensive).
  std::vector<models::TargetSpec> target_specs() const;
  // Labels of molecule s (P values).
  std::span<const double> label_row(std::size_t s) const;
  // "read 13023 molecules from a.xyz; skipped 2 (...); U0: 3 labels missing (masked)".
  std::string describe() const;
};

// Reads the inputs and labels as above. Throws ConfigError for an unknown target / unit /
// pooling, IoError for an unreadable input or CSV, InputError for bad records under
// ErrorPolicy::fail or MissingLabels::error, and InputError("no molecules") when nothing is left.
Dataset load_dataset(const DatasetOptions& options);

// The second read of a sharded load. `data` came from load_dataset(options) with
// keep_coordinates selecting none or some molecules; this reads options.inputs again and puts
// the coordinates and formal charges of the molecules `keep` selects (by position in `data`) into
// `data`, holding no others. The inputs must give the same good molecules again, digest for digest:
// otherwise (a file changed between the reads, or an input that cannot be read twice such as a
// pipe) it throws IoError naming the inputs and the first molecule that differs.
void load_coordinates(Dataset& data, DatasetOptions options, std::function<bool(std::size_t)> keep);

// Builds a dataset from point sets already in memory (same label rules; `where` names the
// collection in messages). Bad point sets follow options.policy.
Dataset dataset_from_point_sets(std::vector<chem::PointSet> points, const DatasetOptions& options);

// The subset of `data` at `indices` (same targets; summary copied).
Dataset subset(const Dataset& data, std::span<const std::size_t> indices);

// A ragged mini-batch of molecules and their labels.
struct Batch {
  std::vector<std::size_t> indices;  // positions in the dataset
  models::MoleculeBatch molecules;   // atoms stacked (RaggedIndex over molecules)
  Mat<double> labels;                // size x P, training units, NaN = missing
  // When the dataset has forces: N x 3 reference forces (eV/Angstrom) of the stacked atoms, NaN
  // rows for molecules without forces; otherwise empty.
  Mat<double> forces;
};

// Factor from a force unit "<energy>/<length>" (e.g. "Hartree/Bohr", "kcal/mol/A") to
// eV/Angstrom; ConfigError naming the unit otherwise.
double force_unit_to_ev_per_angstrom(const std::string& unit);

// The batch of `data` at `indices` (in that order).
Batch make_batch(const Dataset& data, std::span<const std::size_t> indices);

// The same batch with each structure's atoms in the order `model` runs them
// (MoleculeModel::spatial_order: structures of spatial_order_atoms or more atoms in cell order;
// smaller ones as given), the force labels' rows moved with their atoms. Labels are per structure
// and the model does not depend on the atoms' numbering, so losses and parameter gradients are
// make_batch's to rounding, in a fraction of the time and memory for large structures given in an
// order without locality. Per-atom rows (forces, contributions) come in this batch's order.
Batch make_model_batch(const Dataset& data, std::span<const std::size_t> indices,
                       const models::MoleculeModel<float>& model);

// Cuts `order` into consecutive mini-batches of at most batch_size indices (the last may be
// smaller); batch_size >= 1.
std::vector<std::vector<std::size_t>> batch_indices(std::span<const std::size_t> order,
                                                    std::size_t batch_size);

// Cuts `order` into consecutive mini-batches under two bounds: at most max_molecules molecules
// (>= 1) and, when max_atoms > 0, at most max_atoms atoms, where atom_counts[i] is the number of
// atoms of dataset molecule i. A batch is closed before the molecule that would break either
// bound, so the order is kept and the cut is a pure function of (order, atom counts, bounds). A
// molecule of more than max_atoms atoms goes alone in its batch (the only batches above the
// budget). max_atoms = 0 gives batch_indices(order, max_molecules).
std::vector<std::vector<std::size_t>> batch_indices(std::span<const std::size_t> order,
                                                    std::size_t max_molecules,
                                                    std::span<const std::size_t> atom_counts,
                                                    std::size_t max_atoms);

// Atoms of each molecule of `data` (what the atom-budget batching reads; the atomic numbers stay
// on every rank of a data-parallel run, so every rank computes the same counts).
std::vector<std::size_t> atom_counts(const Dataset& data);

}  // namespace flt::pipeline
