// FLT_API marks the declarations that libflt.so exports. libflt is built with
// -fvisibility=hidden and a linker version script (src/api/libflt.map), so only the public API of
// include/flt/ is visible to programs that link it; the internal static libraries it contains are
// not. Consumers do not need to define anything.
#pragma once

// The headers use C++20 (std::span). The CMake target flt::flt asks for it (cxx_std_20, or a later
// standard of the program's); with pkg-config the program chooses its standard itself.
#if __cplusplus < 202002L
#error "the flt headers need C++20: compile with -std=c++20 or later"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FLT_API __attribute__((visibility("default")))
#else
#define FLT_API
#endif
