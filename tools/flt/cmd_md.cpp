// flt md: NVE molecular dynamics with a trained energy model (velocity Verlet; src/pipeline/md.hpp).
#include "chem/reader.hpp"
#include "chem/writer.hpp"
#include "core/error.hpp"
#include "core/text.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/md.hpp"
#include "pipeline/predict.hpp"
#include "io/atomic_file.hpp"

#include <cmath>
#include <cstdio>
#include <exception>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

const char* kUsage =
    "Usage: flt md -m MODEL.flt [-m ...] INPUT [--steps N] [--timestep FS] [--temperature K]\n"
    "              [-o TRAJECTORY.xyz] [--log LOG.csv] [options]\n"
    "       flt md -m MODEL.flt TRAJECTORY.xyz --record last --velocities input [--steps N] ...\n\n"
    "Runs NVE molecular dynamics (velocity Verlet) of one molecule with the forces -dE/dr of\n"
    "a model's energy target (an ensemble's mean energy when several -m are given) and\n"
    "reports how well the total energy is conserved: the check a conservative model must pass.\n"
    "Initial velocities: Maxwell-Boltzmann at --temperature (seeded), no centre-of-mass motion;\n"
    "or, with --velocities input, the record's momenta (a frame of an earlier run's trajectory,\n"
    "or an extended XYZ file with momenta written by ASE), continuing its step count and time.\n"
    "Trajectory frames carry momenta and masses as ASE reads them (momenta in sqrt(amu*eV),\n"
    "ASE's unit: velocity in Angstrom/fs = momenta / masses * ase.units.fs) and the forces.\n"
    "Units: Angstrom, fs, amu, eV, K. The run stops with exit status 1 when the total energy\n"
    "moves by more than --max-energy-change eV per atom (a model or time step that blows up).\n";

io::OptionSchema md_schema() {
  using io::OptionType;
  const pipeline::MdOptions defaults;
  io::OptionSchema s;
  s.optional_option("model", "", OptionType::list, "model file (.flt); repeat for an ensemble (default: the default model)");
  s.optional_option("input", "", OptionType::path, "the molecule file to start from, as the argument (which replaces it)");
  s.option("record", "", OptionType::string, "1", "which record of INPUT to start from, 1-based, or last");
  s.optional_option("format", "", OptionType::string, "input format (default: from the file name)");
  s.option("periodic", "", OptionType::string, "error", "an extended XYZ start with periodic boundary conditions (a T in pbc, or a Lattice without pbc): error or isolated (run as an isolated structure, the cell ignored)").choices = {
      "error", "isolated"};
  s.option("steps", "", OptionType::integer, std::to_string(defaults.steps), "time steps");
  s.option("timestep", "", OptionType::real, shortest_number(defaults.timestep_fs), "time step in fs");
  s.option("temperature", "", OptionType::real, shortest_number(defaults.temperature_k), "initial temperature in K (0: start at rest)");
  s.option("seed", "", OptionType::integer, std::to_string(defaults.seed), "seed of the initial velocities");
  s.option("velocities", "", OptionType::string, "maxwell-boltzmann",
           "initial velocities: maxwell-boltzmann (at --temperature) or input (the record's momenta column, "
           "ASE's convention as flt md -o writes it; continues the record's step and time)")
      .choices = {"maxwell-boltzmann", "input"};
  s.option("target", "", OptionType::string, "", "energy target whose forces drive the dynamics (default: the first energy target)");
  s.option("max-energy-change", "", OptionType::real, shortest_number(defaults.max_energy_change_per_atom),
           "stop when the total energy moves by more than this, eV per atom");
  s.optional_option("out", "", OptionType::path,
                    "trajectory, extended XYZ: positions, momenta, masses and forces, time and energies per frame");
  s.option("every", "", OptionType::integer, "10", "write every N-th step to the trajectory and the log");
  s.optional_option("log", "", OptionType::path, "CSV log: step, time [fs], potential, kinetic and total energy [eV], temperature [K]");
  s.option("threads", "", OptionType::integer, std::to_string(defaults.threads), "OpenMP threads (0: all cores)");
  add_common_options(s);
  return s;
}

int run_md(const std::vector<std::string>& args) {
  static const io::OptionSchema schema = md_schema();
  const std::optional<Arguments> parsed = parse_arguments(schema, args, kUsage, 1);
  if (!parsed) return kExitOk;
  const io::ResolvedOptions& o = parsed->options;
  std::vector<std::string> models = o.has("model") ? o.get_list("model") : std::vector<std::string>{};
  const std::vector<std::string> inputs =
      parsed->positional.empty() && o.has("input") ? std::vector<std::string>{o.get_string("input")} : parsed->positional;
  const std::string trajectory = parsed->string_or_empty("out"), log_path = parsed->string_or_empty("log");
  const auto steps = o.get_int("steps"), seed = o.get_int("seed"), threads = o.get_int("threads");
  if (inputs.empty()) throw UsageError("give the molecule file to start from");
  // --record: a 1-based number, or 0 for "last".
  std::size_t record = 0;
  if (o.get_string("record") != "last") {
    const std::optional<double> number = chem::parse_number(o.get_string("record"));
    if (!number || *number < 1 || *number != std::floor(*number) || *number > 1e15)
      throw UsageError("--record is a 1-based record number or last, not '" + o.get_string("record") + "'");
    record = static_cast<std::size_t>(*number);
  }
  if (o.get_int("every") < 1) throw UsageError("--every must be at least 1");
  if (steps < 0 || seed < 0 || threads < 0) throw UsageError("--steps, --seed and --threads must be >= 0");
  const auto every = static_cast<std::size_t>(o.get_int("every"));
  const bool input_velocities = o.get_string("velocities") == "input";
  if (input_velocities) {
    for (const char* drawn : {"temperature", "seed"})
      if (o.source(drawn).kind != io::OptionSource::Kind::default_value)
        throw UsageError(std::string("--") + drawn + " draws Maxwell-Boltzmann velocities; --velocities input takes them "
                         "from the record");
  }
  pipeline::MdOptions md;
  md.steps = static_cast<decltype(md.steps)>(steps);
  md.timestep_fs = o.get_real("timestep");
  md.temperature_k = o.get_real("temperature");
  md.seed = static_cast<decltype(md.seed)>(seed);
  md.max_energy_change_per_atom = o.get_real("max-energy-change");
  md.threads = static_cast<int>(threads);
  md.target = o.get_string("target");
  if (models.empty()) models.push_back(pipeline::default_model_path().string());

  chem::ReadOptions read;
  read.format = format_option(o, "format");
  read.keep_molecule = false;
  read.periodic = chem::periodic_from_name(o.get_string("periodic"));
  auto reader = chem::MoleculeReader::open(inputs, read);
  // Only the start record is used: a bad record before it (atoms too close, a non-finite
  // coordinate, a parse error) is passed over, so one bad frame of a trajectory does not keep
  // the others from starting a run; a bad start record is the error, naming file and record.
  std::optional<chem::PointSet> start;
  std::size_t passed = 0;  // records read, good or bad
  std::exception_ptr bad_start;
  while (record == 0 || passed < record) {
    try {
      auto next = reader->next();
      if (!next) break;
      start = std::move(next);
      bad_start = nullptr;
    } catch (const InputError&) {
      start.reset();
      bad_start = std::current_exception();
    }
    ++passed;
  }
  if (record != 0 && passed < record) {
    throw InvalidArgument(inputs[0] + " has " + std::to_string(passed) + " records; --record " +
                          std::to_string(record) + " does not exist");
  }
  if (bad_start) std::rethrow_exception(bad_start);
  if (!start) throw InvalidArgument(inputs[0] + " has no records");
  if (input_velocities) pipeline::continue_from(*start, md);
  std::vector<std::filesystem::path> paths(models.begin(), models.end());
  const pipeline::Predictor predictor = pipeline::Predictor::load(paths);
  const models::Molecule molecule = pipeline::to_molecule(*start);
  if (auto reason = predictor.unsupported_reason(molecule)) {
    throw InputError(start->source, start->record, "the model cannot predict this molecule: " + *reason);
  }

  std::unique_ptr<chem::MoleculeWriter> writer;
  if (!trajectory.empty()) writer = chem::MoleculeWriter::open(trajectory, chem::WriteOptions{});
  std::unique_ptr<io::AtomicOutputFile> log;
  if (!log_path.empty()) {
    log = std::make_unique<io::AtomicOutputFile>(log_path);
    log->stream() << "step,time [fs],potential_energy [eV],kinetic_energy [eV],total_energy [eV],"
                     "temperature [K]\n";
    log->stream() << std::setprecision(12);
  }
  // Frames up to a failure are kept: the trajectory and log of a run that blew up show how.
  const auto finish_files = [&] {
    if (writer) writer->close();
    if (log) log->commit();
  };
  pipeline::MdSummary summary;
  try {
    const std::size_t last_step = md.first_step + md.steps;
    summary = pipeline::run_nve(predictor, molecule, md, [&](const pipeline::MdFrame& f) {
        if (f.step % every != 0 && f.step != last_step && !f.out_of_band) return;
        if (log) {
          log->stream() << f.step << ',' << f.time_fs << ',' << f.potential_ev << ','
                        << f.kinetic_ev << ',' << f.total_ev << ',' << f.temperature_k << '\n';
        }
        // Frames carry the atoms and the dynamics' own values, not the start record's labels
        // (e.g. its reference energy and forces).
        if (writer) writer->write(pipeline::trajectory_record(*start, f));
      });
  } catch (const Error&) {
    finish_files();
    throw;
  }
  finish_files();
  const double atoms = static_cast<double>(summary.atoms);
  std::cout << std::setprecision(6) << "NVE molecular dynamics: " << summary.atoms << " atoms, "
            << summary.steps << " steps of " << md.timestep_fs << " fs ("
            << static_cast<double>(summary.steps) * md.timestep_fs << " fs), started at "
            << summary.initial_temperature_k << " K, mean temperature " << summary.mean_temperature_k << " K\n"
            << "total energy [eV]: start " << std::setprecision(10) << summary.initial_total_ev
            << std::setprecision(4) << ", largest change " << summary.max_total_change_ev
            << " (" << 1000 * summary.max_total_change_ev / atoms << " meV/atom), std "
            << summary.total_stddev_ev << ", drift " << summary.drift_ev_per_ps << " eV/ps ("
            << 1000 * summary.drift_ev_per_ps / atoms << " meV/atom/ps)\n";
  return kExitOk;
}

const bool registered = register_command(
    {"md", "NVE molecular dynamics with a model's forces (energy conservation check)", 45, &run_md});

}  // namespace
}  // namespace flt::cli
