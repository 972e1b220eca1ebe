// FLT_API marks the declarations that libflt.so exports. libflt is built with
// -fvisibility=hidden and a linker version script (src/api/libflt.map), so only the public API of
// include/flt/ is visible to programs that link it; the internal static libraries it contains are
// not. Consumers do not need to define anything.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define FLT_API __attribute__((visibility("default")))
#else
#define FLT_API
#endif
