#include "io/progress.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <unistd.h>

namespace flt::io {

bool is_terminal(std::FILE* stream) noexcept { return stream != nullptr && ::isatty(::fileno(stream)) == 1; }

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  char buf[32];
  if (seconds < 10) {
    std::snprintf(buf, sizeof buf, "%.1fs", seconds);
  } else if (seconds < 60) {
    std::snprintf(buf, sizeof buf, "%ds", static_cast<int>(seconds));
  } else if (seconds < 3600) {
    const int s = static_cast<int>(seconds);
    std::snprintf(buf, sizeof buf, "%dm%02ds", s / 60, s % 60);
  } else {
    const long m = static_cast<long>(seconds / 60);
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", m / 60, m % 60);
  }
  return buf;
}

std::string format_bytes(double bytes) {
  char buf[32];
  if (!std::isfinite(bytes) || bytes < 0) return "?";
  if (bytes < 1000) {
    std::snprintf(buf, sizeof buf, "%.0f B", bytes);
  } else if (bytes < 1e6) {
    std::snprintf(buf, sizeof buf, "%.1f kB", bytes / 1e3);
  } else if (bytes < 1e9) {
    std::snprintf(buf, sizeof buf, "%.1f MB", bytes / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  }
  return buf;
}

namespace {
// " 1.2 MB/s" or " 340/s": a rate of bytes or of items per second.
void append_rate(std::string& s, double rate, bool bytes) {
  if (bytes) {
    s += ' ';
    s += format_bytes(rate);
    s += "/s";
  } else {
    char buf[32];
    std::snprintf(buf, sizeof buf, " %.3g/s", rate);
    s += buf;
  }
}
}  // namespace

std::optional<double> run_eta(double session_seconds, double session_epochs, double epochs_left) {
  if (!(session_seconds > 0) || !(session_epochs > 0) || !(epochs_left >= 0)) return std::nullopt;
  return session_seconds / session_epochs * epochs_left;
}

double ProgressBar::steady_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

ProgressBar::ProgressBar(std::ostream& out, bool terminal, std::string label, std::size_t total, Clock clock,
                         double plain_interval)
    : out_(out), terminal_(terminal), label_(std::move(label)), total_(total), clock_(std::move(clock)),
      plain_interval_(plain_interval), start_(clock_()) {}

std::string ProgressBar::line(std::size_t done, std::string_view status, bool with_bar) const {
  const double elapsed = clock_() - start_;
  const bool known = total_ > 0;
  const double fraction = known ? static_cast<double>(done) / static_cast<double>(total_) : 0.0;
  std::string s = label_;
  const bool bytes = unit_ == ProgressUnit::bytes;
  char buf[128];
  if (!known) {
    s += ' ';
    s += bytes ? format_bytes(static_cast<double>(done)) : std::to_string(done);
    if (elapsed > 0 && done > 0) append_rate(s, static_cast<double>(done) / elapsed, bytes);
    s += " elapsed ";
    s += format_duration(elapsed);
    if (!status.empty()) {
      s += "  ";
      s += status;
    }
    return s;
  }
  if (with_bar) {
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(fraction * kWidth);
    s += " [";
    s.append(static_cast<std::size_t>(std::min(filled, kWidth)), '#');
    s.append(static_cast<std::size_t>(kWidth - std::min(filled, kWidth)), '.');
    s += "]";
  }
  if (bytes) {
    std::snprintf(buf, sizeof buf, " %3d%% ", static_cast<int>(fraction * 100.0));
    s += buf;
    s += format_bytes(static_cast<double>(done));
    s += '/';
    s += format_bytes(static_cast<double>(total_));
  } else {
    std::snprintf(buf, sizeof buf, " %3d%% %zu/%zu", static_cast<int>(fraction * 100.0), done, total_);
    s += buf;
  }
  if (elapsed > 0 && done > 0) {
    const double rate = static_cast<double>(done) / elapsed;
    append_rate(s, rate, bytes);
    if (done < total_) s += " ETA " + format_duration(static_cast<double>(total_ - done) / rate);
  }
  s += " elapsed " + format_duration(elapsed);
  if (!status.empty()) {
    s += "  ";
    s += status;
  }
  return s;
}

void ProgressBar::update(std::size_t done, std::string_view status) {
  if (finished_) return;
  if (total_ > 0 && done > total_) done = total_;
  last_done_ = done;
  last_status_.assign(status);
  const double now = clock_();
  if (terminal_) {
    if (now - last_draw_ < 0.1 && (total_ == 0 || done != total_)) return;
    last_draw_ = now;
    const std::string text = line(done, status, true);
    out_ << '\r' << text;
    // Blank out what remains of a longer previous line.
    if (text.size() < drawn_width_) out_ << std::string(drawn_width_ - text.size(), ' ');
    drawn_width_ = text.size();
    out_.flush();
    return;
  }
  // Unknown total: no deciles, a line per interval (the first one interval after the start).
  if (total_ == 0 && last_draw_ < -1e299) last_draw_ = start_;
  const int decile = total_ == 0 ? 0 : static_cast<int>(10 * done / total_);
  const bool new_decile = decile > last_decile_;
  const bool due = now - last_draw_ >= plain_interval_;
  if (!new_decile && !due) return;
  // Deciles of quick work would only repeat each other: a decile line needs kMinPlainGap seconds
  // since the last line, except the one that reaches 100%.
  constexpr double kMinPlainGap = 0.5;
  const bool complete = total_ > 0 && done >= total_;
  const bool print = (new_decile && (complete || now - last_draw_ >= kMinPlainGap)) || (due && last_draw_ > -1e299);
  if (print) {
    printed_done_ = done;
    printed_status_ = last_status_;
    out_ << line(done, status, false) << '\n';
    out_.flush();
    last_decile_ = std::max(decile, last_decile_);
    last_draw_ = now;
  } else if (last_draw_ < -1e299) {
    last_draw_ = now;  // the interval and the gap count from the first report
  }
}

void ProgressBar::finish(std::string_view summary) {
  if (finished_) return;
  finished_ = true;
  // A plain log already ends with this state's line: nothing to add. (The status may have moved
  // on after a line at 100% of the bytes: records decoded from the last buffer.)
  if (!terminal_ && summary.empty() && printed_done_ == last_done_ && printed_status_ == last_status_) return;
  // Without a summary the final line keeps the last status (e.g. the record count).
  std::string text = line(last_done_, summary.empty() ? std::string_view(last_status_) : std::string_view(), terminal_);
  if (!summary.empty()) {
    text += "  ";
    text += summary;
  }
  if (terminal_) {
    out_ << '\r' << text;
    if (text.size() < drawn_width_) out_ << std::string(drawn_width_ - text.size(), ' ');
  } else {
    out_ << text;
  }
  out_ << '\n';
  out_.flush();
}

}  // namespace flt::io
