// flt::version() and flt::git_commit() (include/flt/version.hpp) are defined once, in flt_core
// (src/core/version.cpp.in, generated from the CMake project version); libflt exports them
// (libflt.map). This file only checks at compile time that the public and internal declarations
// agree, so a change to either breaks the build instead of the ABI.
#include "flt/version.hpp"

#include "core/version.hpp"

#include <type_traits>

static_assert(std::is_same_v<decltype(&flt::version), const char* (*)() noexcept>);
static_assert(std::is_same_v<decltype(&flt::git_commit), const char* (*)() noexcept>);

// libflt references nothing else in flt_core's version.cpp.o, and a static library member is only
// linked in when referenced: keep a reference so the exported symbols exist in libflt.so.
[[gnu::used]] static const char* (*const kExportedVersionFunctions[])() noexcept = {
    &flt::version, &flt::git_commit};
