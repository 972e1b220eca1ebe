// flt: the command-line program. Git-style subcommands; this file only dispatches and turns
// exceptions into exit codes (libraries throw, main decides).
#include "chem/rdkit_log.hpp"
#include "comm/communicator.hpp"
#include "core/allocator.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/version.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace {

void print_help(std::ostream& out) {
  out << "flt " << flt::version()
      << " - FourierLearner-Transformers for molecular property prediction\n\n"
         "Usage: flt <command> [options]\n"
         "       flt --help | --version\n\n"
         "Commands:\n";
  const auto table = flt::cli::commands();
  for (const auto& command : table) {
    std::string name = command.name;
    name.resize(std::max<std::size_t>(name.size(), 10), ' ');
    out << "  " << name << "  " << command.summary << "\n";
  }
  if (table.empty()) out << "  (none yet)\n";
  out << "\nRun 'flt <command> --help' for the options of one command.\n"
         "Exit status: 0 success, 1 error, 2 usage error, 3 finished but skipped input records.\n";
}

// Under MPI: "rank 1 of 4: " before an error, so the message names the rank that failed.
std::string rank_prefix() {
  const auto& world = flt::comm::world();
  return world.size() > 1 ? "rank " + std::to_string(world.rank()) + " of " + std::to_string(world.size()) + ": "
                          : std::string();
}

// Ends the whole MPI job after an error on this rank (the other ranks would otherwise wait for it
// forever in the next collective); a serial run just returns the exit code.
int finish_with_error(int exit_code) {
  auto& world = flt::comm::world();
  if (world.size() > 1) {
    std::cerr << std::flush;
    world.abort(exit_code);
  }
  return exit_code;
}

int run_program(std::vector<std::string> args);

}  // namespace

int main(int argc, char** argv) {
  // Joins the MPI job when started by mpirun/srun (a build without MPI refuses to run there).
  std::optional<flt::comm::MpiSession> mpi;
  try {
    mpi.emplace(&argc, &argv);
  } catch (const flt::Error& e) {
    std::cerr << "flt: error: " << e.what() << "\n";
    return flt::cli::kExitError;
  }
  // Only rank 0 reports progress and warnings; every rank reports its errors.
  if (flt::comm::world().rank() != 0) flt::set_log_sink(flt::stderr_log_sink(flt::LogLevel::error));
  // The program owns the process: every RDKit message goes through flt's log (its levels, -q, -v).
  flt::chem::detail::route_rdkit_logs();
  return run_program(std::vector<std::string>(argv + 1, argv + argc));
}

namespace {

int run_program(std::vector<std::string> args) {
  using namespace flt::cli;
  // Keep freed per-batch activations in the heap instead of returning them to the kernel after
  // every batch (core/allocator.hpp: about a third of prediction time otherwise).
  flt::tune_allocator_for_batches();
  if (args.empty()) {
    print_help(std::cerr);
    return kExitUsage;
  }
  const std::string& first = args.front();
  if (first == "-h" || first == "--help" || first == "help") {
    print_help(std::cout);
    return kExitOk;
  }
  if (first == "-V" || first == "--version") {
    std::cout << "flt " << flt::version() << " (" << flt::git_commit() << ")\n";
    return kExitOk;
  }
  for (const auto& command : commands()) {
    if (first != command.name) continue;
    const std::string name = command.name;
    if (flt::comm::world().size() > 1 && name != "train" && name != "predict") {
      // The other commands would run as independent copies writing the same files.
      std::cerr << "flt " << name << ": " << rank_prefix()
                << "runs on one process; only train and predict run under mpirun\n";
      return finish_with_error(kExitUsage);
    }
    try {
      return command.run(std::vector<std::string>(args.begin() + 1, args.end()));
    } catch (const UsageError& e) {
      std::cerr << "flt " << command.name << ": " << rank_prefix() << e.what() << " (see 'flt "
                << command.name << " --help')\n";
      return finish_with_error(kExitUsage);
    } catch (const flt::Error& e) {
      std::cerr << "flt " << command.name << ": " << rank_prefix() << "error: " << e.what() << "\n";
      return finish_with_error(kExitError);
    } catch (const std::exception& e) {
      std::cerr << "flt " << command.name << ": " << rank_prefix() << "internal error: " << e.what()
                << "\n";
      return finish_with_error(kExitError);
    }
  }
  std::cerr << "flt: unknown command or option '" << first << "' (see 'flt --help')\n";
  return kExitUsage;
}

}  // namespace
