// Internal: routes RDKit's own log streams (which print to stderr/stdout) through flt::log, and
// lets a reader capture the messages one RDKit call produces, so a failed record's error names
// RDKit's reason. Not part of the public API.
#pragma once

#include "core/log.hpp"

#include <string>
#include <vector>

namespace flt::chem::detail {

struct RdkitMessage {
  LogLevel level;
  std::string text;
};

// Installs the redirection once per process (idempotent, thread-safe).
void route_rdkit_logs();

// While alive, RDKit messages logged by the constructing thread go into `sink` (timestamps
// stripped) instead of flt::log.
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
