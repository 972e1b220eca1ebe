// Exit codes of the flt program, shared by every subcommand.
#pragma once

namespace flt::cli {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;     // a run-time error stopped the command (see stderr)
constexpr int kExitUsage = 2;     // bad command line
constexpr int kExitSkipped = 3;   // the command finished but skipped some input records

}  // namespace flt::cli
