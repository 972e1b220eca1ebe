// flt predict: predicts molecular properties for every record of the inputs with one model or an
// ensemble (--model given several times), and writes them as annotated SDF, CSV or extended XYZ,
// or as a table on standard output. See docs/prediction.md.
#include "chem/reader.hpp"
#include "chem/writer.hpp"
#include "comm/communicator.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/dataset_progress.hpp"
#include "pipeline/predict.hpp"
#include "io/units.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

const char* kUsage =
    "Usage: flt predict [-m MODEL.flt ...] INPUT... [-o OUTPUT] [options]\n\n"
    "Predicts the model's targets for every molecule of the inputs (SDF/MOL, XYZ, extended XYZ,\n"
    "QM9, CSV with a SMILES column, SMILES files (.smi); files, .gz, directories, tar archives,\n"
    "'-' for standard input with --format). SMILES get a 3-D conformer from RDKit (ETKDGv3).\n"
    "Several --model options form an ensemble: the mean, and the standard deviation as an\n"
    "uncertainty (<target>_std; <target>_std_calibrated for an ensemble file calibrated by flt\n"
    "ensemble --calibrate: the spread times its factor). Without --model the default model is used: $FLT_DEFAULT_MODEL,\n"
    "then <source tree>/models/default.flt, then <prefix>/share/flt/models/default.flt.\n"
    "OUTPUT .sdf keeps every input record with its tags and adds one tag per prediction,\n"
    "'flt_<target> [unit]'; .csv writes id, source, record, title, the input's label columns,\n"
    "one column per prediction with its unit and an error column; .xyz/.extxyz writes extended\n"
    "XYZ. Without -o a table is printed. Records that cannot be read or predicted (e.g. an\n"
    "element the model never saw) stay in the output without predictions, marked with the reason\n"
    "(SD tag / extended-XYZ key flt_error, CSV column error), and are listed (exit status 3);\n"
    "--on-error fail stops the run at the first one instead.\n"
    "--forces adds F = -dE/dr of an energy target (default: the model's first extensive energy\n"
    "target, e.g. U0 or energy) per atom, in its unit per Angstrom: the extended-XYZ column\n"
    "flt_forces:R:3 (with flt_forces_unit) or the SD tag 'flt_forces [eV/A]' (one 'Fx Fy Fz'\n"
    "line per atom); ensembles add flt_forces_std.\n"
    "--per-atom adds each atom's contribution to the extensive targets (default: all of them), in\n"
    "the target's unit: c_i = e[Z_i] + m + sigma y_i (the element's reference energy, the model's\n"
    "per-atom mean shared equally, the atom's network output), summing to the prediction. Extended\n"
    "XYZ gets the column flt_<target>_contribution:R:1 (with flt_<target>_contribution_unit), SDF\n"
    "the tag 'flt_<target>_contribution [unit]' (one value per line per atom); ensembles add\n"
    "flt_<target>_contribution_std. Intensive targets (per-molecule means) are refused.\n"
    "Progress (bytes of the inputs read and predicted, ETA) goes to stderr: a bar on a terminal,\n"
    "plain lines otherwise, nothing with -q.\n";

std::string pad(std::string s, std::size_t width) {
  if (s.size() < width) s.resize(width, ' ');
  return s;
}

// A table cell: four decimals from magnitude 1 up, six significant digits below. Total energies
// are large numbers known to meV (QM9's U0 of -10880.0057 eV; a Pt cluster's -7048493.7540 eV):
// six significant digits printed them to 1 eV or 10 eV. The file outputs carry every digit.
std::string short_number(double v) {
  char buf[64];
  if (std::isfinite(v) && std::abs(v) >= 1.0 && std::abs(v) < 1e15) std::snprintf(buf, sizeof buf, "%.4f", v);
  else std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// One output column: a model target, or the atomization energy derived from a total-energy target
// (pipeline::AtomizationOutput). The ensemble spread of a derived column is its target's.
struct OutputColumn {
  std::string name;  // "U0", "U0_atom"
  std::string unit;
  std::size_t target = 0;
  std::optional<pipeline::AtomizationOutput> atomization;

  double mean(const chem::PointSet& points, const pipeline::MoleculePrediction& p) const {
    if (!atomization) return p.mean[target];
    return pipeline::atomization_energy(*atomization, p.mean[target], points.atomic_numbers);
  }
  double stddev(const pipeline::MoleculePrediction& p) const { return p.stddev[target]; }
};

std::vector<OutputColumn> output_columns(const pipeline::Predictor& predictor) {
  std::vector<OutputColumn> columns;
  const auto& targets = predictor.targets();
  const auto derived = predictor.atomization_outputs();
  for (std::size_t t = 0; t < targets.size(); ++t) {
    columns.push_back({targets[t].name, targets[t].unit, t, std::nullopt});
    for (const auto& a : derived)
      if (a.target == t) columns.push_back({a.name, a.unit, t, a});
  }
  return columns;
}

// The readable table: one line per molecule, columns sized from the header.
class TablePrinter {
 public:
  TablePrinter(std::ostream& out, const std::vector<OutputColumn>& columns, bool ensemble)
      : out_(out), columns_(columns), ensemble_(ensemble) {}

  void row(const chem::PointSet& p, const pipeline::MoleculePrediction& pred) {
    if (!header_done_) header();
    out_ << pad(std::to_string(++count_), 6) << pad(molecule_name(p), 26) << pad(std::to_string(p.size()), 6);
    for (std::size_t c = 0; c < columns_.size(); ++c) {
      std::string cell = short_number(columns_[c].mean(p, pred));
      if (ensemble_) cell += " +- " + short_number(columns_[c].stddev(pred));
      out_ << "  " << pad(cell, widths_[c]);
    }
    out_ << "\n";
  }

  // A record without a prediction: its place in the table and the reason.
  void error_row(const chem::PointSet& p, const std::string& reason) {
    if (!header_done_) header();
    out_ << pad(std::to_string(++count_), 6) << pad(molecule_name(p), 26)
         << pad(p.size() > 0 ? std::to_string(p.size()) : "-", 6) << "  not predicted: " << reason
         << "\n";
  }

 private:
  // The title, or "<source>:<record>" for a record without one (ASE's frames), cut to 24
  // characters; the latter keeps its end, the record number, which tells the rows of a file apart.
  static std::string molecule_name(const chem::PointSet& p) {
    if (!p.title.empty()) return p.title.size() > 24 ? p.title.substr(0, 21) + "..." : p.title;
    const std::string name = p.source + ":" + std::to_string(p.record);
    return name.size() > 24 ? "..." + name.substr(name.size() - 21) : name;
  }

  void header() {
    header_done_ = true;
    out_ << pad("#", 6) << pad("molecule", 26) << pad("atoms", 6);
    for (const auto& c : columns_) {
      const std::string h = io::with_unit_suffix(c.name, c.unit);
      widths_.push_back(std::max<std::size_t>(h.size(), ensemble_ ? 26 : 13));
      out_ << "  " << pad(h, widths_.back());
    }
    out_ << "\n";
  }
  std::ostream& out_;
  const std::vector<OutputColumn>& columns_;
  bool ensemble_;
  bool header_done_ = false;
  std::size_t count_ = 0;
  std::vector<std::size_t> widths_;
};

// flt's own output predicted again: its flt_* SD tags, extended-XYZ keys, CSV columns and per-atom
// columns (predictions, spreads, units, errors, forces, contributions) are the earlier run's; they
// are left out, so this run's replace them instead of standing beside them (an ensemble's
// flt_U0_std next to a single model's flt_U0, or a CSV column flt_U0 [eV]_2).
void drop_previous_predictions(chem::PointSet& points) {
  const auto earlier = [](const std::string& name) { return name.rfind("flt_", 0) == 0; };
  std::erase_if(points.properties, [&](const chem::Property& p) { return earlier(p.key); });
  std::erase_if(points.atom_columns, [&](const chem::AtomColumn& c) { return earlier(c.name); });
}

// Adds an extended-XYZ per-atom column, replacing one of the same name (a column of the input, e.g.
// an earlier run's output being predicted again), with its unit as the "<name>_unit" key.
void set_atom_column(chem::PointSet& points, chem::AtomColumn column) {
  points.set_property(column.name + "_unit", column.unit);
  for (auto& existing : points.atom_columns)
    if (existing.name == column.name) {
      existing = std::move(column);
      return;
    }
  points.atom_columns.push_back(std::move(column));
}

// Per-atom values (n x width, row-major) as an extended-XYZ column name:R:width with its unit, or
// for SDF a tag 'name [unit]' with one atom's values per line, in the record's atom order.
void attach_atom_values(chem::PointSet& points, chem::Format format, const std::string& name,
                        const std::string& unit, int width, std::vector<double> values) {
  if (format == chem::Format::sdf) {
    std::string text;
    for (std::size_t k = 0; k < values.size(); ++k)
      text += shortest_number(values[k]) + ((k + 1) % static_cast<std::size_t>(width) == 0 ? "\n" : " ");
    points.set_property(io::with_unit_suffix(name, unit), text);
  } else {
    chem::AtomColumn column;
    column.name = name;
    column.type = 'R';
    column.width = width;
    column.unit = unit;
    column.values = std::move(values);
    set_atom_column(points, std::move(column));
  }
}

// The forces of a prediction as the output's per-atom data: an extended-XYZ column
// (flt_forces:R:3, unit in flt_forces_unit) or an SD tag with one "Fx Fy Fz" line per atom.
void attach_forces(chem::PointSet& points, const pipeline::MoleculePrediction& p, chem::Format format,
                   const std::string& unit, bool ensemble) {
  const auto add = [&](const std::string& name, const Mat<double>& f) {
    std::vector<double> values;
    for (Index i = 0; i < f.rows(); ++i)
      for (Index c = 0; c < 3; ++c) values.push_back(f(i, c));
    attach_atom_values(points, format, name, unit, 3, std::move(values));
  };
  add("flt_forces", p.forces);
  if (ensemble) add("flt_forces_std", p.forces_stddev);
}

// The per-atom contributions of a prediction to the chosen extensive targets: an extended-XYZ
// column flt_<target>_contribution:R:1 (unit in flt_<target>_contribution_unit) or an SD tag
// 'flt_<target>_contribution [unit]' with one value per line, in the record's atom order.
void attach_contributions(chem::PointSet& points, const pipeline::MoleculePrediction& p,
                          chem::Format format, const std::vector<models::TargetSpec>& targets,
                          const std::vector<std::size_t>& chosen, bool ensemble) {
  const auto add = [&](const std::string& name, const std::string& unit, const Mat<double>& c,
                       std::size_t t) {
    std::vector<double> values;
    for (Index i = 0; i < c.rows(); ++i) values.push_back(c(i, static_cast<Index>(t)));
    attach_atom_values(points, format, name, unit, 1, std::move(values));
  };
  for (const std::size_t t : chosen) {
    const std::string name = "flt_" + targets[t].name + "_contribution";
    add(name, targets[t].unit, p.contributions, t);
    if (ensemble) add(name + "_std", targets[t].unit, p.contributions_stddev, t);
  }
}

// The output values of one record in column order: "flt_<name> [unit]" for SDF and CSV (the unit
// is part of the tag / header), name and unit apart for extended XYZ. Without a prediction the
// values are 0 (used for the column names only).
std::vector<chem::PredictedValue> predicted_values(const std::vector<OutputColumn>& columns,
                                                   chem::Format format, bool ensemble, bool calibrated,
                                                   const chem::PointSet& points,
                                                   const pipeline::MoleculePrediction* p) {
  std::vector<chem::PredictedValue> values;
  for (const auto& column : columns) {
    const std::string name = "flt_" + column.name;
    const double mean = p != nullptr ? column.mean(points, *p) : 0.0;
    const double stddev = p != nullptr ? column.stddev(*p) : 0.0;
    // A calibrated std has its own name: a script reading flt_U0_std never gets it unawares.
    const std::string std_name = name + (calibrated ? "_std_calibrated" : "_std");
    if (format == chem::Format::sdf || format == chem::Format::csv) {
      // The unit is part of the SD tag name / CSV header ("[1]" for a dimensionless target).
      values.push_back({io::with_unit_suffix(name, column.unit), mean, ""});
      if (ensemble) values.push_back({io::with_unit_suffix(std_name, column.unit), stddev, ""});
    } else {
      values.push_back({name, mean, column.unit});
      if (ensemble) values.push_back({std_name, stddev, column.unit});
    }
  }
  return values;
}

io::OptionSchema predict_schema() {
  using io::OptionType;
  io::OptionSchema s;
  s.optional_option("model", "", OptionType::list, "model file (.flt); repeat for an ensemble (default: the default model)");
  s.optional_option("inputs", "", OptionType::list, "input files, as the arguments (which replace these)");
  s.optional_option("out", "", OptionType::path, "output file: .sdf, .csv, .xyz/.extxyz, or '-' (standard output, needs --out-format)");
  s.optional_option("format", "", OptionType::string, "input format: sdf, mol, xyz, extxyz, qm9, pdb, csv (SMILES CSV), smi (SMILES file) (default: from each file name)");
  s.optional_option("out-format", "", OptionType::string, "output format: sdf, csv, xyz, extxyz (default: from the output name)");
  s.option("table", "", OptionType::boolean, "false", "also print the table of predictions to standard output when -o is given");
  s.option("on-error", "", OptionType::string, "skip", "skip or fail").choices = {"skip", "fail"};
  s.option("batch-size", "", OptionType::integer, "64", "molecules per model call");
  s.option("threads", "", OptionType::integer, "0", "OpenMP threads (0: all cores / OMP_NUM_THREADS)");
  s.option("missing-3d", "", OptionType::string, "error",
           "records without 3-D coordinates: error or generate (RDKit ETKDGv3, random-coordinate fallback)")
      .choices = {"error", "generate"};
  s.option("seed", "", OptionType::integer, "42", "random seed of generated conformers");
  s.option("min-distance", "", OptionType::real, shortest_number(chem::kDefaultMinDistance), "atoms closer than this (Angstrom) make a record bad; 0 disables");
  s.optional_option("forces", "", OptionType::string,
                    "also write the forces -dE/dr of this energy target (alone: the first extensive energy target; "
                    "needs SDF or extended-XYZ output)")
      .implicit_value = "";
  s.optional_option("per-atom", "", OptionType::list,
                    "also write each atom's contribution to these extensive targets (alone: all extensive targets), "
                    "summing to the prediction; needs SDF or extended-XYZ output")
      .implicit_value = "";
  add_conformer_options(s);
  add_common_options(s);
  s.add_spellings("seed", 0, {"conformer-seed"});
  return s;
}

int run_predict(const std::vector<std::string>& args) {
  static const io::OptionSchema schema = predict_schema();
  const std::optional<Arguments> parsed = parse_arguments(schema, args, kUsage);
  if (!parsed) return kExitOk;
  const io::ResolvedOptions& o = parsed->options;
  const std::vector<std::string> inputs = parsed->positional_or("inputs");
  std::vector<std::string> model_paths = o.has("model") ? o.get_list("model") : std::vector<std::string>{};
  const std::string output = parsed->string_or_empty("out");
  const std::string on_error = o.get_string("on-error");
  const auto batch_size = o.get_int("batch-size");
  const auto threads = o.get_int("threads");
  const auto seed = o.get_int("seed");
  if (inputs.empty()) throw UsageError("no input given");
  if (batch_size < 1) throw UsageError("--batch-size must be at least 1");
  if (threads < 0) throw UsageError("--threads must be >= 0");
  if (seed < 0 || seed > 0xffffffff) throw UsageError("--seed must be in 0..4294967295");
  // The readers' conformer generation runs on these threads too.
  const pipeline::ScopedThreads scoped_threads(static_cast<int>(threads));

  chem::ReadOptions read;
  read.format = format_option(o, "format");
  read.missing_3d = o.get_string("missing-3d") == "generate" ? chem::Missing3D::generate : chem::Missing3D::error;
  read.min_distance = o.get_real("min-distance");
  read.seed = static_cast<std::uint32_t>(seed);
  apply_conformer_options(o, read);

  chem::WriteOptions write;
  write.format = format_option(o, "out-format");
  if (output == "-" && write.format == chem::Format::unknown)
    throw UsageError("writing to standard output needs --out-format");
  chem::Format format = write.format;
  if (!output.empty() && format == chem::Format::unknown) {
    format = chem::format_from_path(output);
    if (format == chem::Format::unknown || format == chem::Format::qm9)
      throw UsageError("cannot tell the output format from '" + output +
                       "' (use .sdf, .csv, .xyz or --out-format)");
  }
  read.keep_molecule = format == chem::Format::sdf;  // bonds are only needed to write SDF

  if (model_paths.empty()) model_paths.push_back(pipeline::default_model_path().string());
  std::vector<std::filesystem::path> paths(model_paths.begin(), model_paths.end());
  const pipeline::Predictor predictor = pipeline::Predictor::load(paths);
  apply_trained_conformers(predictor, o, "seed", read);
  const std::vector<OutputColumn> columns = output_columns(predictor);
  const bool ensemble = predictor.ensemble_size() > 1;
  const bool calibrated = predictor.calibration().has_value();

  // CSV: every record gets a row, those without a prediction an empty one with the reason.
  write.error_column = true;
  write.prediction_columns = predicted_values(columns, format, ensemble, calibrated, chem::PointSet{}, nullptr);
  // Under mpirun rank 0 writes everything; the other ranks only predict their batches.
  comm::Communicator& world = comm::world();
  const bool lead = world.rank() == 0;
  // Open the output before reading anything: an unwritable path fails at once.
  std::unique_ptr<chem::MoleculeWriter> writer;
  refuse_output_among_inputs(inputs, output);
  if (!output.empty() && lead) writer = chem::MoleculeWriter::open(output, write);
  const bool table = lead && (output.empty() || (o.get_bool("table") && output != "-"));
  TablePrinter printer(std::cout, columns, ensemble);

  const bool want_forces = o.has("forces");
  std::size_t forces_target = 0;
  std::string forces_unit;
  if (want_forces) {
    if (output.empty() || (format != chem::Format::sdf && format != chem::Format::xyz &&
                    format != chem::Format::extxyz))
      throw UsageError("--forces writes per-atom values: give -o FILE.sdf or FILE.xyz");
    try {
      forces_target = predictor.forces_target(o.get_string("forces"));
    } catch (const InvalidArgument& e) {
      throw UsageError(e.what());
    }
    forces_unit = predictor.targets()[forces_target].unit + "/A";
  }

  const bool want_per_atom = o.has("per-atom");
  std::vector<std::size_t> per_atom_targets;
  if (want_per_atom) {
    if (output.empty() || (format != chem::Format::sdf && format != chem::Format::xyz &&
                           format != chem::Format::extxyz))
      throw UsageError("--per-atom writes a value per atom, which CSV and the table have no place "
                       "for: give -o FILE.sdf or FILE.xyz");
    try {
      per_atom_targets = predictor.contribution_targets(o.get_list("per-atom"));
    } catch (const InvalidArgument& e) {
      throw UsageError(e.what());
    }
  }

  pipeline::PredictOptions popts;
  if (want_forces) popts.forces_target = forces_target;
  popts.contributions = want_per_atom;
  popts.batch_size = static_cast<std::size_t>(batch_size);
  popts.threads = static_cast<int>(threads);
  popts.on_error = on_error == "fail" ? chem::ErrorPolicy::fail : chem::ErrorPolicy::skip;
  popts.distribution = pipeline::distribute_batches(world);
  // Under mpirun only rank 0 shows progress.
  io::ProgressOutput progress_to = lead ? progress_output(parsed->quiet) : io::ProgressOutput{};
  // A bar redrawn on the terminal that also shows the table would cut through its rows.
  if (table && progress_to.terminal && io::is_terminal(stdout)) progress_to = {};
  pipeline::ReadProgressBar progress(progress_to, "predicting");
  popts.on_progress = progress.callback();
  const auto summary = predictor.predict_records(inputs, read, popts, [&](pipeline::RecordOutcome&& r) {
    drop_previous_predictions(r.points);
    if (!r.ok()) {
      if (writer) writer->write_error(r.points, r.error, r.rejected ? &*r.rejected : nullptr);
      if (table) printer.error_row(r.points, r.error);
      return;
    }
    const pipeline::MoleculePrediction& p = *r.prediction;
    if (writer) {
      if (want_forces) attach_forces(r.points, p, format, forces_unit, ensemble);
      if (want_per_atom)
        attach_contributions(r.points, p, format, predictor.targets(), per_atom_targets, ensemble);
      writer->write(r.points, predicted_values(columns, format, ensemble, calibrated, r.points, &p));
    }
    if (table) printer.row(r.points, p);
  });
  if (writer) writer->close();
  progress.finish();
  if (!lead) return summary.ok() ? kExitOk : kExitSkipped;
  std::cerr << "flt predict: " << summary.describe();
  if (writer && output != "-")
    std::cerr << "; wrote " << writer->written() << " record" << (writer->written() == 1 ? "" : "s")
              << " to " << output;
  std::cerr << "\n";
  return summary.ok() ? kExitOk : kExitSkipped;
}

const bool registered = register_command(
    {"predict", "predict molecular properties (SDF/XYZ/QM9 in; annotated SDF, CSV or a table out)",
     40, &run_predict});

}  // namespace
}  // namespace flt::cli
