// The table of flt subcommands. Each subcommand is a function taking its own arguments (argv
// without the program and subcommand names) and returning an exit code; it may throw flt::Error,
// which main() reports on stderr and turns into kExitError.
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
  CommandFn run;
};

// Every registered subcommand, in the order `flt --help` lists them.
const std::vector<Command>& commands();

}  // namespace flt::cli
