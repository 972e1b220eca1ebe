// Where libflt's messages go: warnings about records and inputs it skips or reads with a caveat
// (an empty directory, an extended-XYZ unit note, RDKit's remarks on a record) and, at lower
// levels, progress notes. libflt never writes to stdout; by default warnings and errors go to
// stderr as "[flt warning] ..." lines. A program routes them into its own logging with
// set_log_sink (the Python package sends them to logging.getLogger("flt")).
#pragma once

#include "export.hpp"

#include <functional>
#include <string_view>

namespace flt {

enum class LogLevel { debug = 0, info = 1, warning = 2, error = 3 };

// "debug", "info", "warning", "error".
FLT_API const char* to_string(LogLevel level) noexcept;

using LogSink = std::function<void(LogLevel, std::string_view)>;

// Installs `sink` for the whole process (every thread; an empty function drops everything) and
// returns the previous one, e.g. to restore it. Thread-safe; the sink is called under a mutex,
// from whichever thread logs (OpenMP worker threads too), so it need not be re-entrant but must
// not call back into flt.
FLT_API LogSink set_log_sink(LogSink sink);

// A sink that writes "[flt level] message" lines to stderr for levels >= `min_level` (the
// default sink: warnings and errors).
FLT_API LogSink stderr_log_sink(LogLevel min_level = LogLevel::warning);

// A sink that drops everything.
FLT_API LogSink null_log_sink();

}  // namespace flt
