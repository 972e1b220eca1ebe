// Internal: RDKit's own log streams (which print to stderr) and flt. Not part of the public API.
//
// A library must leave RDKit's process-wide loggers to the program that links it. So flt routes
// them only while one of its own RDKit calls runs (RdkitLogCapture): the messages of the calling
// thread are captured (a failed record's error names RDKit's reason), those of other threads go
// where they went before (the program's destination or tee), and the loggers are restored when
// the last capture ends. A program that wants every RDKit message through flt::log for the whole
// process (the flt command-line program) calls route_rdkit_logs() once.
#pragma once

#include "core/log.hpp"

#include <string>
#include <vector>

namespace flt::chem::detail {

struct RdkitMessage {
  LogLevel level;
  std::string text;
};

// Routes RDKit's error, warning and info logs through flt::log for the rest of the process
// (idempotent, thread-safe): for programs, never called by the library.
void route_rdkit_logs();

// While alive, RDKit messages logged by the constructing thread go into `sink` (timestamps
// stripped); see above.
class RdkitLogCapture {
 public:
  explicit RdkitLogCapture(std::vector<RdkitMessage>& sink);
  ~RdkitLogCapture();
  RdkitLogCapture(const RdkitLogCapture&) = delete;
  RdkitLogCapture& operator=(const RdkitLogCapture&) = delete;

 private:
  std::vector<RdkitMessage>* previous_;
};

}  // namespace flt::chem::detail
