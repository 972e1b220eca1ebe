// The registry of flt subcommands. Each subcommand lives in its own file tools/flt/cmd_<name>.cpp
// (picked up by tools/CMakeLists.txt) and registers itself at static-initialisation time:
//
//   static const bool registered = flt::cli::register_command(
//       {"convert", "convert between molecule file formats", 20, &run_convert});
//
// A subcommand takes its own arguments (argv without the program and subcommand names) and returns
// an exit code; it may throw flt::Error (exit 1) or UsageError (exit 2), which main() reports on
// stderr.
#pragma once

#include "core/error.hpp"

#include <string>
#include <vector>

namespace flt::cli {

// Thrown by a subcommand for a bad command line (exit status 2).
class UsageError : public flt::Error {
 public:
  using flt::Error::Error;
};

using CommandFn = int (*)(const std::vector<std::string>& args);

struct Command {
  const char* name;
  const char* summary;
  int order;  // position in `flt --help` (ascending)
  CommandFn run;
};

bool register_command(const Command& command);

// Every registered subcommand, sorted by order then name.
std::vector<Command> commands();

}  // namespace flt::cli
