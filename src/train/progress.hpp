// Progress output for long loops (epochs, prediction of large files). On a terminal: one line
// redrawn in place ("\r") with a bar, percentage, rate and ETA, at most 10 times a second. Not on a
// terminal (logs, CI): plain lines, one per 10% of progress or per `plain_interval` seconds.
// Everything goes to the stream the caller passes (stderr in the program); never to stdout.
#pragma once

#include <cstdio>
#include <functional>
#include <ostream>
#include <string>
#include <string_view>

namespace flt::train {

// True if `stream` is a terminal (isatty). Programs pass is_terminal(stderr).
bool is_terminal(std::FILE* stream) noexcept;

// "0.4s", "12s", "3m05s", "1h02m": for ETAs and elapsed times.
std::string format_duration(double seconds);

class ProgressBar {
 public:
  using Clock = std::function<double()>;  // seconds, monotonic
  static double steady_seconds();

  ProgressBar(std::ostream& out, bool terminal, std::string label, std::size_t total,
              Clock clock = &ProgressBar::steady_seconds, double plain_interval = 30.0);

  // Reports `done` of `total` items; `status` is appended (e.g. "loss 0.123").
  void update(std::size_t done, std::string_view status = {});
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
};

}  // namespace flt::train
