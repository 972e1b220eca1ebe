// flt: the command-line program. Git-style subcommands; this file only dispatches and turns
// exceptions into exit codes (libraries throw, main decides).
#include "core/allocator.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/version.hpp"
#include "flt/commands.hpp"
#include "flt/exit_codes.hpp"

#include <boost/program_options/errors.hpp>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>
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

}  // namespace

int main(int argc, char** argv) {
  using namespace flt::cli;
  // Keep freed per-batch activations in the heap instead of returning them to the kernel after
  // every batch (core/allocator.hpp: about a third of prediction time otherwise).
  flt::tune_allocator_for_batches();
  std::vector<std::string> args(argv + 1, argv + argc);
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
    try {
      return command.run(std::vector<std::string>(args.begin() + 1, args.end()));
    } catch (const UsageError& e) {
      std::cerr << "flt " << command.name << ": " << e.what() << " (see 'flt " << command.name
                << " --help')\n";
      return kExitUsage;
    } catch (const boost::program_options::error& e) {
      std::cerr << "flt " << command.name << ": " << e.what() << " (see 'flt " << command.name
                << " --help')\n";
      return kExitUsage;
    } catch (const flt::Error& e) {
      std::cerr << "flt " << command.name << ": error: " << e.what() << "\n";
      return kExitError;
    } catch (const std::exception& e) {
      std::cerr << "flt " << command.name << ": internal error: " << e.what() << "\n";
      return kExitError;
    }
  }
  std::cerr << "flt: unknown command or option '" << first << "' (see 'flt --help')\n";
  return kExitUsage;
}
