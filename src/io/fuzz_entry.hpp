// libFuzzer entry points for the parsers of this library. A fuzz target (tools/fuzz/) defines
//   extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) { return flt_fuzz_model_file(d, n); }
// Each function feeds the bytes to one parser and swallows only the documented, typed errors
// (flt::Error and its subclasses); anything else (another exception, a crash, a sanitizer report)
// escapes and is a bug. They always return 0, as libFuzzer requires.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {
int flt_fuzz_model_file(const std::uint8_t* data, std::size_t size);  // parse_model_file
int flt_fuzz_json(const std::uint8_t* data, std::size_t size);        // parse_json + dump_json round trip
int flt_fuzz_ini(const std::uint8_t* data, std::size_t size);         // IniFile::parse + dump round trip
int flt_fuzz_csv(const std::uint8_t* data, std::size_t size);         // parse_csv
}
