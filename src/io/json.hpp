// A minimal, strict JSON (RFC 8259) value, parser and canonical writer, used for the model-file
// header and structured metadata. Written here rather than adding a dependency because the stack
// is fixed (docs/conventions.md) and the model-file reader must control every limit itself: input
// size, nesting depth, duplicate keys (rejected), invalid UTF-8 and lone surrogates (rejected),
// numbers kept as their exact literal text (so 64-bit offsets never pass through a double).
//
// Canonical output (dump()): no whitespace, object keys sorted by their UTF-8 bytes (code-point
// order), strings escaped exactly as Python's json.dumps(..., ensure_ascii=False) does: \" \\ \b
// \f \n \r \t, other characters below U+0020 as \u00xx (lowercase hex), everything else raw.
// Python reproduces it with json.dumps(v, sort_keys=True, separators=(",", ":"),
// ensure_ascii=False) for documents holding strings, integers, arrays and objects.
#pragma once

#include "core/error.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

class JsonParser;

class Json {
 public:
  enum class Type { null, boolean, number, string, array, object };
  using Array = std::vector<Json>;
  using Member = std::pair<std::string, Json>;
  using Object = std::vector<Member>;  // kept sorted by key, keys unique

  Json() = default;  // null
  static Json boolean(bool value);
  static Json number(std::int64_t value);
  static Json number(std::uint64_t value);
  static Json number(double value);  // finite only; shortest round-trip text
  static Json string(std::string value);
  static Json array(Array items = {});
  static Json object();

  // Parses one JSON document (surrounding whitespace allowed, nothing else after it).
  static Json parse(std::string_view text, std::size_t max_depth = 64);

  Type type() const noexcept { return type_; }
  bool is_null() const noexcept { return type_ == Type::null; }
  bool is_bool() const noexcept { return type_ == Type::boolean; }
  bool is_number() const noexcept { return type_ == Type::number; }
  bool is_string() const noexcept { return type_ == Type::string; }
  bool is_array() const noexcept { return type_ == Type::array; }
  bool is_object() const noexcept { return type_ == Type::object; }

  // Accessors throw JsonError(0, ...) on a type mismatch or an out-of-range number.
  bool as_bool() const;
  double as_double() const;
  std::uint64_t as_u64() const;  // integer literal without sign, fraction or exponent
  std::int64_t as_i64() const;   // integer literal without fraction or exponent
  const std::string& as_string() const;
  const std::string& number_text() const;  // the literal as written
  const Array& as_array() const;
  Array& as_array();
  const Object& as_object() const;

  // Objects: set() inserts or replaces; find() returns nullptr when absent.
  Json& set(std::string key, Json value);
  const Json* find(std::string_view key) const;
  bool erase(std::string_view key);
  // Arrays: append.
  void push_back(Json value);

  std::string dump() const;  // canonical compact text (see above)
  void dump_to(std::string& out) const;

  friend bool operator==(const Json& a, const Json& b);
  friend class JsonParser;

 private:
  Type type_ = Type::null;
  bool bool_ = false;
  std::string text_;  // string value or number literal
  Array array_;
  Object object_;
};

// Appends `text` as a JSON string literal (with quotes) in the canonical escaping.
void json_escape_to(std::string& out, std::string_view text);

// True if `text` is well-formed UTF-8 (no overlong forms, no surrogates, <= U+10FFFF).
bool is_valid_utf8(std::string_view text) noexcept;

}  // namespace flt::io
