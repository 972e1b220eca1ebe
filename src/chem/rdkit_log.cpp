#include "chem/rdkit_log.hpp"

#include "core/log.hpp"

#include <RDGeneral/RDLog.h>

#include <mutex>
#include <ostream>
#include <streambuf>

namespace flt::chem::detail {
namespace {

thread_local std::vector<RdkitMessage>* t_capture = nullptr;

// An unbuffered streambuf: characters go to a per-thread line buffer; each complete line is
// either captured or forwarded to flt::log at the level of the RDKit stream it came from.
class LineBuf final : public std::streambuf {
 public:
  explicit LineBuf(LogLevel level) : level_(level) {}

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
    thread_local std::string pending[4];
    std::string& line = pending[static_cast<int>(level_)];
    for (std::size_t i = 0; i < n; ++i) {
      if (s[i] != '\n') {
        line += s[i];
        continue;
      }
      dispatch(line);
      line.clear();
    }
  }
  void dispatch(std::string line) {
    // RDKit prefixes "[HH:MM:SS] "; drop it, and trailing blanks.
    if (line.size() >= 11 && line[0] == '[' && line[9] == ']') line.erase(0, 11);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    if (line.empty()) return;
    if (t_capture != nullptr) {
      t_capture->push_back({level_, std::move(line)});
    } else {
      log(level_, "RDKit: " + line);
    }
  }
  LogLevel level_;
};

}  // namespace

void route_rdkit_logs() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (!rdErrorLog || !rdWarningLog || !rdInfoLog) RDLog::InitLogs();
    // Leaked on purpose: RDKit may log during static destruction.
    auto* err_buf = new LineBuf(LogLevel::error);
    auto* warn_buf = new LineBuf(LogLevel::warning);
    auto* info_buf = new LineBuf(LogLevel::debug);
    auto* err_stream = new std::ostream(err_buf);
    auto* warn_stream = new std::ostream(warn_buf);
    auto* info_stream = new std::ostream(info_buf);
    auto install = [](const RDLogger& logger, std::ostream* stream) {
      if (!logger) return;
      logger->ClearTee();
      if (logger->df_owner) delete logger->dp_dest;
      logger->dp_dest = stream;
      logger->df_owner = false;
    };
    install(rdErrorLog, err_stream);
    install(rdWarningLog, warn_stream);
    install(rdInfoLog, info_stream);
  });
}

RdkitLogCapture::RdkitLogCapture(std::vector<RdkitMessage>& sink) : previous_(t_capture) {
  t_capture = &sink;
}

RdkitLogCapture::~RdkitLogCapture() { t_capture = previous_; }

}  // namespace flt::chem::detail
