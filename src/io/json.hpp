// JSON for the model-file header and structured metadata: values are nlohmann::json (Debian
// nlohmann-json3-dev) and callers use its API; this file adds the two things the library does not
// give.
//
// parse_json(): strict RFC 8259. Besides what nlohmann rejects (syntax errors, invalid UTF-8,
// lone surrogates, NaN and Infinity, numbers beyond the range of a double), it rejects duplicate
// object keys, arrays and objects nested more than `max_depth` deep, a byte order mark, and
// anything after the value (nlohmann alone would stop at a NUL byte). Every failure is a
// JsonError carrying the byte offset; no nlohmann exception leaves it. Integer literals keep their
// exact 64-bit value (non-negative ones as number_unsigned, negative ones as number_integer), so
// 64-bit offsets never pass through a double; other numbers (fractions, exponents, integers
// beyond 64 bits) are doubles.
//
// dump_json(): the canonical text (the model-file checksum covers it): no whitespace, object keys
// sorted by their UTF-8 bytes, strings escaped as Python's json.dumps(..., ensure_ascii=False)
// does (\" \\ \b \f \n \r \t, other characters below U+0020 as \u00xx in lowercase hex,
// everything else raw), integers in decimal, doubles as a text that reads back to the same value
// (0.1, 1e-06, 1.0, -0.0, 1e+300; Grisu2, at most 17 digits and nearly always the shortest); a
// NaN or infinite double is written as null. Python reproduces it with json.dumps(v,
// sort_keys=True, separators=(",", ":"), ensure_ascii=False) for documents of strings, integers,
// arrays and objects (not always for doubles: Python writes 1e15 as 1000000000000000.0). This is
// nlohmann's dump() with its default arguments; the tests pin it byte for byte.
#pragma once

#include "core/error.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace flt::io {

// Malformed JSON text: `offset` is the 0-based byte offset of the problem.
class JsonError : public Error {
 public:
  JsonError(std::size_t offset, const std::string& reason)
      : Error("JSON error at byte " + std::to_string(offset) + ": " + reason), offset_(offset) {}
  std::size_t offset() const noexcept { return offset_; }

 private:
  std::size_t offset_;
};

// Parses one JSON document (surrounding whitespace allowed, nothing else); throws JsonError.
nlohmann::json parse_json(std::string_view text, std::size_t max_depth = 64);

// The canonical text of `value` (see above); InvalidArgument if a string is not valid UTF-8.
std::string dump_json(const nlohmann::json& value);

}  // namespace flt::io
