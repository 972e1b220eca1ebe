// The library version. flt follows semantic versioning: the shared library's SONAME carries the
// major version (libflt.so.0), and fltConfigVersion.cmake accepts requests for the same major
// version (find_package(flt 0.1)).
#pragma once

#include "export.hpp"

namespace flt {

// The version of the libflt that is loaded at run time, "MAJOR.MINOR.PATCH" (e.g. "0.1.0").
// Static storage; never null.
FLT_API const char* version() noexcept;

// The git commit libflt was built from (12 hex digits), or "unknown" outside a git checkout.
// Static storage; never null.
FLT_API const char* git_commit() noexcept;

}  // namespace flt
