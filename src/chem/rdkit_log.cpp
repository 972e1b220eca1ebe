#include "chem/rdkit_log.hpp"

#include "core/log.hpp"

#include <RDGeneral/RDLog.h>

#include <array>
#include <mutex>
#include <ostream>
#include <streambuf>

namespace flt::chem::detail {
namespace {

thread_local std::vector<RdkitMessage>* t_capture = nullptr;

// The loggers flt routes, with the level of each.
constexpr int kLoggers = 3;
RDLogger* logger_at(int k) {
  switch (k) {
    case 0: return &rdErrorLog;
    case 1: return &rdWarningLog;
    default: return &rdInfoLog;
  }
}
constexpr std::array<LogLevel, kLoggers> kLevels = {LogLevel::error, LogLevel::warning, LogLevel::debug};

// A logger's state as the program left it.
struct Saved {
  std::ostream* dest = nullptr;
  bool owner = false;
  boost::logging::RDTee* tee = nullptr;
  boost::logging::RDTeeStream* teestream = nullptr;
};

// Guards the loggers' swaps, the saved states and writes to the program's streams.
std::mutex g_mutex;
int g_active = 0;         // captures alive in the process (any thread)
bool g_routed = false;    // route_rdkit_logs(): flt's streams installed for good
std::array<Saved, kLoggers> g_saved;

// Where a line of logger k goes when no capture of this thread takes it.
void pass_on(int k, std::string line) {
  {
    std::lock_guard lock(g_mutex);
    if (!g_routed) {
      // The program's own stream (its tee, which also writes to its destination, if it set one).
      const Saved& s = g_saved[static_cast<std::size_t>(k)];
      std::ostream* out = s.teestream != nullptr ? static_cast<std::ostream*>(s.teestream) : s.dest;
      if (out != nullptr) *out << line << '\n' << std::flush;
      return;
    }
  }
  // RDKit prefixes "[HH:MM:SS] "; flt::log has its own.
  if (line.size() >= 11 && line[0] == '[' && line[9] == ']') line.erase(0, 11);
  if (!line.empty()) log(kLevels[static_cast<std::size_t>(k)], "RDKit: " + line);
}

// An unbuffered streambuf: characters go to a per-thread line buffer; each complete line is
// captured by the thread's capture or passed on (above).
class LineBuf final : public std::streambuf {
 public:
  explicit LineBuf(int logger) : logger_(logger) {}

 protected:
  int_type overflow(int_type ch) override {
    if (traits_type::eq_int_type(ch, traits_type::eof())) return traits_type::not_eof(ch);
    const char c = traits_type::to_char_type(ch);
    append(&c, 1);
    return ch;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    append(s, static_cast<std::size_t>(n));
    return n;
  }

 private:
  void append(const char* s, std::size_t n) {
    thread_local std::array<std::string, kLoggers> pending;
    std::string& line = pending[static_cast<std::size_t>(logger_)];
    for (std::size_t i = 0; i < n; ++i) {
      if (s[i] != '\n') {
        line += s[i];
        continue;
      }
      dispatch(std::move(line));
      line.clear();
    }
  }
  void dispatch(std::string line) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    if (line.empty()) return;
    if (t_capture == nullptr) return pass_on(logger_, std::move(line));
    if (line.size() >= 11 && line[0] == '[' && line[9] == ']') line.erase(0, 11);
    t_capture->push_back({kLevels[static_cast<std::size_t>(logger_)], std::move(line)});
  }
  int logger_;
};

// flt's streams, one per logger; leaked on purpose (RDKit may log during static destruction).
std::ostream* flt_stream(int k) {
  static const std::array<std::ostream*, kLoggers> streams = [] {
    std::array<std::ostream*, kLoggers> s{};
    for (int i = 0; i < kLoggers; ++i) s[static_cast<std::size_t>(i)] = new std::ostream(new LineBuf(i));
    return s;
  }();
  return streams[static_cast<std::size_t>(k)];
}

void init_logs_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (!rdErrorLog || !rdWarningLog || !rdInfoLog) RDLog::InitLogs();
  });
}

// Under g_mutex: flt's streams in place of the program's (saved, tees detached, nothing deleted).
void install() {
  for (int k = 0; k < kLoggers; ++k) {
    const RDLogger& logger = *logger_at(k);
    if (!logger) continue;
    Saved& s = g_saved[static_cast<std::size_t>(k)];
    s = {logger->dp_dest, logger->df_owner, logger->tee, logger->teestream};
    logger->dp_dest = flt_stream(k);
    logger->df_owner = false;
    logger->tee = nullptr;
    logger->teestream = nullptr;
  }
}

// Under g_mutex: the program's state back.
void restore() {
  for (int k = 0; k < kLoggers; ++k) {
    const RDLogger& logger = *logger_at(k);
    if (!logger) continue;
    const Saved& s = g_saved[static_cast<std::size_t>(k)];
    logger->dp_dest = s.dest;
    logger->df_owner = s.owner;
    logger->tee = s.tee;
    logger->teestream = s.teestream;
    g_saved[static_cast<std::size_t>(k)] = {};
  }
}

}  // namespace

void route_rdkit_logs() {
  init_logs_once();
  std::lock_guard lock(g_mutex);
  if (g_routed) return;
  if (g_active == 0) install();
  g_routed = true;
}

RdkitLogCapture::RdkitLogCapture(std::vector<RdkitMessage>& sink) : previous_(t_capture) {
  init_logs_once();
  {
    std::lock_guard lock(g_mutex);
    if (g_active++ == 0 && !g_routed) install();
  }
  t_capture = &sink;
}

RdkitLogCapture::~RdkitLogCapture() {
  t_capture = previous_;
  std::lock_guard lock(g_mutex);
  if (--g_active == 0 && !g_routed) restore();
}

}  // namespace flt::chem::detail
