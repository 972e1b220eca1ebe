#include "core/log.hpp"

#include <cstdio>
#include <mutex>

namespace flt {
namespace {
std::mutex& sink_mutex() {
  static std::mutex mutex;
  return mutex;
}
LogSink& current_sink() {
  static LogSink sink = stderr_log_sink(LogLevel::warning);
  return sink;
}
}  // namespace

const char* to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
  }
  return "unknown";
}

LogSink set_log_sink(LogSink sink) {
  std::lock_guard lock(sink_mutex());
  LogSink previous = std::move(current_sink());
  current_sink() = sink ? std::move(sink) : null_log_sink();
  return previous;
}

LogSink stderr_log_sink(LogLevel min_level) {
  return [min_level](LogLevel level, std::string_view message) {
    if (level < min_level) return;
    std::fprintf(stderr, "[flt %s] %.*s\n", to_string(level), static_cast<int>(message.size()),
                 message.data());
  };
}

LogSink null_log_sink() {
  return [](LogLevel, std::string_view) {};
}

void log(LogLevel level, std::string_view message) {
  std::lock_guard lock(sink_mutex());
  if (current_sink()) current_sink()(level, message);
}

}  // namespace flt
