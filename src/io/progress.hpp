// Progress output for long loops (epochs, reading and predicting large files). On a terminal: one
// line redrawn in place ("\r") with a bar, percentage, rate and ETA, at most 10 times a second. Not
// on a terminal (logs, CI): plain lines, one per 10% of progress (at least 0.5 s apart, but always
// the one reaching 100%) or per `plain_interval` seconds.
// Everything goes to the stream the caller passes (stderr in the program, nothing with -q); never
// to stdout. A total of 0 means "unknown" (e.g. standard input): count, rate and elapsed time only,
// plain lines per interval.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

namespace flt::io {

// True if `stream` is a terminal (isatty). Programs pass is_terminal(stderr).
bool is_terminal(std::FILE* stream) noexcept;

// "0.4s", "12s", "3m05s", "1h02m": for ETAs and elapsed times.
std::string format_duration(double seconds);

// "512 B", "12.3 kB", "4.5 MB", "1.2 GB" (powers of 1000).
std::string format_bytes(double bytes);

// What a progress count counts: items (molecules, batches) or bytes (of input files).
enum class ProgressUnit { items, bytes };

// Where a library's progress goes (the caller decides; null stream: silent).
struct ProgressOutput {
  std::ostream* stream = nullptr;
  bool terminal = false;
};

// Seconds left in a run of epochs, extrapolated from this session: `session_seconds` were spent on
// `session_epochs` epochs (fractional: the current epoch's share of its batches counts), and
// `epochs_left` (fractional) remain. nullopt until something has been measured.
std::optional<double> run_eta(double session_seconds, double session_epochs, double epochs_left);

class ProgressBar {
 public:
  using Clock = std::function<double()>;  // seconds, monotonic
  static double steady_seconds();

  ProgressBar(std::ostream& out, bool terminal, std::string label, std::size_t total,
              Clock clock = &ProgressBar::steady_seconds, double plain_interval = 30.0);

  // Reports `done` of `total` items; `status` is appended (e.g. "loss 0.123").
  void update(std::size_t done, std::string_view status = {});
  void set_unit(ProgressUnit unit) noexcept { unit_ = unit; }
  void set_total(std::size_t total) noexcept { total_ = total; }
  std::size_t total() const noexcept { return total_; }
  // Final line: on a terminal the bar line is completed and a newline written; `summary` is
  // appended to the final line in both modes.
  void finish(std::string_view summary = {});

 private:
  std::string line(std::size_t done, std::string_view status, bool with_bar) const;
  std::ostream& out_;
  bool terminal_;
  std::string label_;
  std::size_t total_;
  Clock clock_;
  double plain_interval_;
  double start_;
  double last_draw_ = -1e300;
  std::size_t last_done_ = 0;
  int last_decile_ = 0;
  std::size_t drawn_width_ = 0;
  bool finished_ = false;
  ProgressUnit unit_ = ProgressUnit::items;
  std::size_t printed_done_ = static_cast<std::size_t>(-1);  // plain mode: count of the last line
  std::string last_status_;
  std::string printed_status_;  // plain mode: status of the last line
};

}  // namespace flt::io
