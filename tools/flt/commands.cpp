#include "commands.hpp"

#include <algorithm>
#include <cstring>

namespace flt::cli {
namespace {
std::vector<Command>& registry() {
  static std::vector<Command> table;  // function-local: safe from static-init order issues
  return table;
}
}  // namespace

bool register_command(const Command& command) {
  registry().push_back(command);
  return true;
}

std::vector<Command> commands() {
  std::vector<Command> sorted = registry();
  std::sort(sorted.begin(), sorted.end(), [](const Command& a, const Command& b) {
    return a.order != b.order ? a.order < b.order : std::strcmp(a.name, b.name) < 0;
  });
  return sorted;
}

}  // namespace flt::cli
