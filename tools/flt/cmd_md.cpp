// flt md: NVE molecular dynamics with a trained energy model (velocity Verlet; src/pipeline/md.hpp).
#include "chem/reader.hpp"
#include "chem/writer.hpp"
#include "core/error.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/md.hpp"
#include "pipeline/predict.hpp"
#include "io/atomic_file.hpp"

#include <boost/program_options.hpp>

#include <cstdio>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

namespace po = boost::program_options;

int run_md(const std::vector<std::string>& args) {
  std::vector<std::string> models;
  std::vector<std::string> inputs;
  std::string trajectory, log_path, target, in_format;
  std::size_t record = 1, every = 10;
  pipeline::MdOptions md;
  po::options_description options(
      "Usage: flt md -m MODEL.flt [-m ...] INPUT [--steps N] [--timestep FS] [--temperature K]\n"
      "              [-o TRAJECTORY.xyz] [--log LOG.csv] [options]\n\n"
      "Runs NVE molecular dynamics (velocity Verlet) of one molecule with the forces -dE/dr of\n"
      "a model's energy target (an ensemble's mean energy when several -m are given) and\n"
      "reports how well the total energy is conserved: the check a conservative model must pass.\n"
      "Initial velocities: Maxwell-Boltzmann at --temperature (seeded), no centre-of-mass motion.\n"
      "Units: Angstrom, fs, amu, eV, K. The run stops with exit status 1 when the total energy\n"
      "moves by more than --max-energy-change eV per atom (a model or time step that blows up).\n\n"
      "Options");
  options.add_options()
      ("help,h", "show this help")
      ("model,m", po::value(&models), "model file (.flt); repeat for an ensemble (default: the default model)")
      ("record", po::value(&record), "which record of INPUT to start from, 1-based (default 1)")
      ("format,f", po::value(&in_format), "input format (default: from the file name)")
      ("steps", po::value(&md.steps), "time steps (default 1000)")
      ("timestep", po::value(&md.timestep_fs), "time step in fs (default 0.5)")
      ("temperature", po::value(&md.temperature_k), "initial temperature in K (default 300; 0: start at rest)")
      ("seed", po::value(&md.seed), "seed of the initial velocities (default 1)")
      ("target", po::value(&target), "energy target whose forces drive the dynamics (default: the first energy target)")
      ("max-energy-change", po::value(&md.max_energy_change_per_atom), "stop when the total energy moves by more than this, eV per atom (default 1)")
      ("out,output,o", po::value(&trajectory), "trajectory, extended XYZ with time and energies per frame; also spelled --output")
      ("every", po::value(&every), "write every N-th step to the trajectory and the log (default 10)")
      ("log", po::value(&log_path), "CSV log: step, time [fs], potential, kinetic and total energy [eV], temperature [K]")
      ("threads,j", po::value(&md.threads), "OpenMP threads (default: all cores)")
      ("quiet,q", "log errors only")
      ("verbose,v", "log every step");
  const po::variables_map vm = parse_arguments(args, options, "input", po::value(&inputs), 1);
  if (vm.count("help") != 0) {
    std::cout << options << "\n";
    return kExitOk;
  }
  apply_verbosity(vm);
  if (inputs.empty()) throw UsageError("give the molecule file to start from");
  if (record < 1) throw UsageError("--record is 1-based");
  if (every < 1) throw UsageError("--every must be at least 1");
  md.target = target;
  if (models.empty()) models.push_back(pipeline::default_model_path().string());

  chem::ReadOptions read;
  if (!in_format.empty()) read.format = chem::format_from_name(in_format);
  read.keep_molecule = false;
  auto reader = chem::MoleculeReader::open(inputs, read);
  std::optional<chem::PointSet> start;
  for (std::size_t k = 1; k <= record; ++k) {
    start = reader->next();  // a bad record throws InputError naming file and record
    if (!start) {
      throw InvalidArgument(inputs[0] + " has " + std::to_string(k - 1) + " records; --record " +
                            std::to_string(record) + " does not exist");
    }
  }
  std::vector<std::filesystem::path> paths(models.begin(), models.end());
  const pipeline::Predictor predictor = pipeline::Predictor::load(paths);
  const models::Molecule molecule = pipeline::to_molecule(*start);

  std::unique_ptr<chem::MoleculeWriter> writer;
  if (!trajectory.empty()) writer = chem::MoleculeWriter::open(trajectory, chem::WriteOptions{});
  std::unique_ptr<io::AtomicOutputFile> log;
  if (!log_path.empty()) {
    log = std::make_unique<io::AtomicOutputFile>(log_path);
    log->stream() << "step,time [fs],potential_energy [eV],kinetic_energy [eV],total_energy [eV],"
                     "temperature [K]\n";
    log->stream() << std::setprecision(12);
  }
  // Frames carry the atoms and the dynamics' own values, not the start record's labels (e.g. its
  // reference energy and forces).
  chem::PointSet frame_points = *start;
  frame_points.properties.clear();
  frame_points.atom_columns.clear();
  const pipeline::MdSummary summary =
      pipeline::run_nve(predictor, molecule, md, [&](const pipeline::MdFrame& f) {
        if (f.step % every != 0 && f.step != md.steps) return;
        if (log) {
          log->stream() << f.step << ',' << f.time_fs << ',' << f.potential_ev << ','
                        << f.kinetic_ev << ',' << f.total_ev << ',' << f.temperature_k << '\n';
        }
        if (writer) {
          frame_points.positions = *f.positions;
          frame_points.title = "step " + std::to_string(f.step);
          writer->write(frame_points, {{"time", f.time_fs, "fs"},
                                       {"potential_energy", f.potential_ev, "eV"},
                                       {"kinetic_energy", f.kinetic_ev, "eV"},
                                       {"total_energy", f.total_ev, "eV"},
                                       {"temperature", f.temperature_k, "K"}});
        }
      });
  if (writer) writer->close();
  if (log) log->commit();
  const double atoms = static_cast<double>(summary.atoms);
  std::cout << std::setprecision(6) << "NVE molecular dynamics: " << summary.atoms << " atoms, "
            << summary.steps << " steps of " << md.timestep_fs << " fs ("
            << static_cast<double>(summary.steps) * md.timestep_fs << " fs), started at "
            << md.temperature_k << " K, mean temperature " << summary.mean_temperature_k << " K\n"
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
