// Logging through a sink the caller controls. Libraries never write to stdout: they call
// flt::log(), which forwards to the installed sink. The default sink writes warnings and errors
// to stderr and drops the rest; programs install their own (e.g. with verbosity flags).
#pragma once

#include <functional>
#include <sstream>
#include <string>
#include <string_view>

namespace flt {

enum class LogLevel { debug = 0, info = 1, warning = 2, error = 3 };

const char* to_string(LogLevel level) noexcept;

using LogSink = std::function<void(LogLevel, std::string_view)>;

// Installs `sink` for the whole process and returns the previous one. Thread-safe; the sink itself
// is called under a mutex, so it need not be re-entrant.
LogSink set_log_sink(LogSink sink);

// A sink that writes "[flt level] message" lines to stderr for levels >= `min_level`.
LogSink stderr_log_sink(LogLevel min_level = LogLevel::warning);

// A sink that drops everything.
LogSink null_log_sink();

void log(LogLevel level, std::string_view message);

// Convenience: flt::log_info("read ", n, " records from ", path);
template <class... Args>
void log_at(LogLevel level, const Args&... args) {
  std::ostringstream stream;
  (stream << ... << args);
  log(level, stream.str());
}
template <class... Args> void log_debug(const Args&... a) { log_at(LogLevel::debug, a...); }
template <class... Args> void log_info(const Args&... a) { log_at(LogLevel::info, a...); }
template <class... Args> void log_warning(const Args&... a) { log_at(LogLevel::warning, a...); }
template <class... Args> void log_error(const Args&... a) { log_at(LogLevel::error, a...); }

}  // namespace flt
