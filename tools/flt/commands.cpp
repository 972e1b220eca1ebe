#include "flt/commands.hpp"

namespace flt::cli {

// Subcommands declare their entry point here and add a row to the table below.

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
  };
  return table;
}

}  // namespace flt::cli
