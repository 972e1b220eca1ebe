// Logging through a sink the caller controls. Libraries never write to stdout: they call
// flt::log(), which forwards to the installed sink. The default sink writes warnings and errors
// to stderr and drops the rest; programs install their own (e.g. with verbosity flags).
#pragma once

// LogLevel, LogSink, set_log_sink, stderr_log_sink and null_log_sink are public API (libflt
// exports them): <flt/log.hpp>. Relative path: the public headers are not on flt_core's include
// path (src/).
#include "../include/flt/log.hpp"

#include <sstream>
#include <string>
#include <string_view>

namespace flt {

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
