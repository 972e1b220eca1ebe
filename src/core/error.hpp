// Typed exceptions for every flt library. Libraries throw; only programs' main() turns them into
// exit codes (see tools/flt/exit_codes.hpp). Each error carries the context a user needs to act:
// the file, the 1-based record number and the reason.
//
// The classes themselves (Error, InvalidArgument, ConfigError, IoError, InputError,
// ModelFileError, NumericalError) are part of the public C++ API and live in
// src/include/flt/error.hpp (installed as <flt/error.hpp>), so that internal code and users of
// libflt throw and catch the very same types. This header adds the internal helpers.
#pragma once

// Relative path: the public headers are not on flt_core's include path (src/).
#include "../include/flt/error.hpp"

#include <string>

namespace flt {

// Throws InvalidArgument with `message` unless `condition` holds. For preconditions on shapes and
// arguments at library boundaries (cheap; kept in release builds).
inline void require(bool condition, const char* message) {
  if (!condition) throw InvalidArgument(message);
}
inline void require(bool condition, const std::string& message) {
  if (!condition) throw InvalidArgument(message);
}

}  // namespace flt
