// JSON for the model-file header and structured metadata: values are nlohmann::json (Debian
// nlohmann-json3-dev) and callers use its API; this file adds the two things the library does not
// give.
//
// parse_json(): strict RFC 8259; beyond nlohmann's checks it rejects duplicate object keys,
// nesting deeper than `max_depth`, a byte order mark and anything after the value. Integer
// literals keep their exact 64-bit value; other numbers are doubles.
// dump_json(): the canonical text (the model-file checksum covers it): nlohmann's default dump(),
// which for strings, integers, arrays and objects equals Python's json.dumps(v, sort_keys=True,
// separators=(",", ":"), ensure_ascii=False). Every rule: docs/model-format.md, "JSON text".
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

// Parses one JSON document (surrounding whitespace allowed, nothing else); throws JsonError, never
// an nlohmann exception.
nlohmann::json parse_json(std::string_view text, std::size_t max_depth = 64);

// The canonical text of `value` (docs/model-format.md); InvalidArgument if a string is not valid
// UTF-8. A NaN or infinite double is written as null.
std::string dump_json(const nlohmann::json& value);

}  // namespace flt::io
