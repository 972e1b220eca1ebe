#include "io/json.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

namespace flt::io {
namespace {

// Decodes one UTF-8 sequence at text[i]; returns its length or 0 if invalid (overlong,
// surrogate, beyond U+10FFFF, truncated).
std::size_t utf8_sequence_length(std::string_view text, std::size_t i) noexcept {
  const auto b0 = static_cast<unsigned char>(text[i]);
  if (b0 < 0x80) return 1;
  std::size_t len = 0;
  std::uint32_t cp = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    cp = b0 & 0x1FU;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    cp = b0 & 0x0FU;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07U;
  } else {
    return 0;
  }
  if (i + len > text.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(text[i + k]);
    if ((b & 0xC0U) != 0x80U) return 0;
    cp = (cp << 6) | (b & 0x3FU);
  }
  if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
  if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
  return len;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

bool is_integer_literal(const std::string& t) noexcept {
  return t.find_first_of(".eE") == std::string::npos;
}

}  // namespace

class JsonParser {
 public:
  JsonParser(std::string_view text, std::size_t max_depth) : text_(text), max_depth_(max_depth) {}

  Json parse_document() {
    skip_ws();
    Json value = parse_value(0);
    skip_ws();
    if (pos_ != text_.size()) fail("unexpected data after the JSON value");
    return value;
  }

 private:
  [[noreturn]] void fail(const std::string& reason) const { throw JsonError(pos_, reason); }

  void skip_ws() noexcept {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  char peek() const {
    if (pos_ >= text_.size()) fail("unexpected end of input");
    return text_[pos_];
  }

  void expect_word(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) fail("invalid literal");
    pos_ += word.size();
  }

  Json parse_value(std::size_t depth) {
    if (depth > max_depth_) fail("nesting deeper than " + std::to_string(max_depth_));
    const char c = peek();
    switch (c) {
      case '{': return parse_object(depth);
      case '[': return parse_array(depth);
      case '"': return Json::string(parse_string());
      case 't': expect_word("true"); return Json::boolean(true);
      case 'f': expect_word("false"); return Json::boolean(false);
      case 'n': expect_word("null"); return Json();
      default:
        if (c == '-' || is_digit(c)) return parse_number();
        fail(std::string("unexpected character '") + (c >= 0x20 && c < 0x7F ? std::string(1, c) : "?") + "'");
    }
  }

  Json parse_object(std::size_t depth) {
    ++pos_;  // '{'
    Json obj = Json::object();
    skip_ws();
    if (peek() == '}') {
      ++pos_;
      return obj;
    }
    while (true) {
      skip_ws();
      if (peek() != '"') fail("expected a string key");
      const std::size_t key_pos = pos_;
      std::string key = parse_string();
      skip_ws();
      if (peek() != ':') fail("expected ':'");
      ++pos_;
      skip_ws();
      Json value = parse_value(depth + 1);
      if (obj.find(key) != nullptr) throw JsonError(key_pos, "duplicate key \"" + key + "\"");
      obj.set(std::move(key), std::move(value));
      skip_ws();
      const char c = peek();
      ++pos_;
      if (c == '}') return obj;
      if (c != ',') {
        --pos_;
        fail("expected ',' or '}'");
      }
    }
  }

  Json parse_array(std::size_t depth) {
    ++pos_;  // '['
    Json arr = Json::array();
    skip_ws();
    if (peek() == ']') {
      ++pos_;
      return arr;
    }
    while (true) {
      skip_ws();
      arr.push_back(parse_value(depth + 1));
      skip_ws();
      const char c = peek();
      ++pos_;
      if (c == ']') return arr;
      if (c != ',') {
        --pos_;
        fail("expected ',' or ']'");
      }
    }
  }

  std::uint32_t parse_hex4() {
    if (pos_ + 4 > text_.size()) fail("truncated \\u escape");
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<std::uint32_t>(c - 'A' + 10);
      else {
        --pos_;
        fail("invalid hex digit in \\u escape");
      }
    }
    return v;
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) fail("unterminated string");
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c == '\\') {
        ++pos_;
        if (pos_ >= text_.size()) fail("unterminated escape");
        const char e = text_[pos_++];
        switch (e) {
          case '"': out.push_back('"'); break;
          case '\\': out.push_back('\\'); break;
          case '/': out.push_back('/'); break;
          case 'b': out.push_back('\b'); break;
          case 'f': out.push_back('\f'); break;
          case 'n': out.push_back('\n'); break;
          case 'r': out.push_back('\r'); break;
          case 't': out.push_back('\t'); break;
          case 'u': {
            std::uint32_t cp = parse_hex4();
            if (cp >= 0xDC00 && cp <= 0xDFFF) fail("lone low surrogate in \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (text_.substr(pos_, 2) != "\\u") fail("high surrogate not followed by a low one");
              pos_ += 2;
              const std::uint32_t low = parse_hex4();
              if (low < 0xDC00 || low > 0xDFFF) fail("high surrogate not followed by a low one");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            append_utf8(out, cp);
            break;
          }
          default:
            --pos_;
            fail("invalid escape");
        }
        continue;
      }
      const std::size_t len = utf8_sequence_length(text_, pos_);
      if (len == 0) fail("invalid UTF-8");
      out.append(text_.substr(pos_, len));
      pos_ += len;
    }
  }

  Json parse_number() {
    const std::size_t start = pos_;
    if (text_[pos_] == '-') ++pos_;
    if (pos_ >= text_.size() || !is_digit(text_[pos_])) fail("invalid number");
    if (text_[pos_] == '0') {
      ++pos_;
      if (pos_ < text_.size() && is_digit(text_[pos_])) fail("leading zero in number");
    } else {
      while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
    }
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      if (pos_ >= text_.size() || !is_digit(text_[pos_])) fail("digit expected after '.'");
      while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (pos_ >= text_.size() || !is_digit(text_[pos_])) fail("digit expected in exponent");
      while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
    }
    Json value;
    value.type_ = Json::Type::number;
    value.text_ = std::string(text_.substr(start, pos_ - start));
    return value;
  }

  std::string_view text_;
  std::size_t max_depth_;
  std::size_t pos_ = 0;
};

namespace {

[[noreturn]] void type_error(const char* want) { throw JsonError(0, std::string("expected a JSON ") + want); }

bool key_less(const Json::Member& m, std::string_view key) { return m.first < key; }

}  // namespace

Json Json::boolean(bool value) {
  Json j;
  j.type_ = Type::boolean;
  j.bool_ = value;
  return j;
}

Json Json::number(std::int64_t value) {
  Json j;
  j.type_ = Type::number;
  j.text_ = std::to_string(value);
  return j;
}

Json Json::number(std::uint64_t value) {
  Json j;
  j.type_ = Type::number;
  j.text_ = std::to_string(value);
  return j;
}

Json Json::number(double value) {
  if (!std::isfinite(value)) throw InvalidArgument("Json::number: JSON has no NaN or infinity");
  char buf[64];
  // Shortest text that parses back to the same double.
  const auto res = std::to_chars(buf, buf + sizeof buf, value);
  std::string t(buf, res.ptr);
  // std::to_chars may write "1e+20"; JSON allows it. It never writes a leading '+' or "inf".
  Json j;
  j.type_ = Type::number;
  j.text_ = std::move(t);
  return j;
}

Json Json::string(std::string value) {
  if (!is_valid_utf8(value)) throw InvalidArgument("Json::string: text is not valid UTF-8");
  Json j;
  j.type_ = Type::string;
  j.text_ = std::move(value);
  return j;
}

Json Json::array(Array items) {
  Json j;
  j.type_ = Type::array;
  j.array_ = std::move(items);
  return j;
}

Json Json::object() {
  Json j;
  j.type_ = Type::object;
  return j;
}

Json Json::parse(std::string_view text, std::size_t max_depth) {
  return JsonParser(text, max_depth).parse_document();
}

bool Json::as_bool() const {
  if (type_ != Type::boolean) type_error("boolean");
  return bool_;
}

double Json::as_double() const {
  if (type_ != Type::number) type_error("number");
  double v = 0;
  const auto res = std::from_chars(text_.data(), text_.data() + text_.size(), v);
  if (res.ec != std::errc() || res.ptr != text_.data() + text_.size() || !std::isfinite(v))
    throw JsonError(0, "number out of range: " + text_);
  return v;
}

std::uint64_t Json::as_u64() const {
  if (type_ != Type::number || !is_integer_literal(text_) || text_[0] == '-')
    type_error("non-negative integer");
  std::uint64_t v = 0;
  const auto res = std::from_chars(text_.data(), text_.data() + text_.size(), v);
  if (res.ec != std::errc() || res.ptr != text_.data() + text_.size())
    throw JsonError(0, "integer out of range: " + text_);
  return v;
}

std::int64_t Json::as_i64() const {
  if (type_ != Type::number || !is_integer_literal(text_)) type_error("integer");
  std::int64_t v = 0;
  const auto res = std::from_chars(text_.data(), text_.data() + text_.size(), v);
  if (res.ec != std::errc() || res.ptr != text_.data() + text_.size())
    throw JsonError(0, "integer out of range: " + text_);
  return v;
}

const std::string& Json::as_string() const {
  if (type_ != Type::string) type_error("string");
  return text_;
}

const std::string& Json::number_text() const {
  if (type_ != Type::number) type_error("number");
  return text_;
}

const Json::Array& Json::as_array() const {
  if (type_ != Type::array) type_error("array");
  return array_;
}

Json::Array& Json::as_array() {
  if (type_ != Type::array) type_error("array");
  return array_;
}

const Json::Object& Json::as_object() const {
  if (type_ != Type::object) type_error("object");
  return object_;
}

Json& Json::set(std::string key, Json value) {
  if (type_ != Type::object) type_error("object");
  if (!is_valid_utf8(key)) throw InvalidArgument("Json::set: key is not valid UTF-8");
  auto it = std::lower_bound(object_.begin(), object_.end(), std::string_view(key), key_less);
  if (it != object_.end() && it->first == key) {
    it->second = std::move(value);
    return it->second;
  }
  it = object_.insert(it, Member(std::move(key), std::move(value)));
  return it->second;
}

const Json* Json::find(std::string_view key) const {
  if (type_ != Type::object) type_error("object");
  auto it = std::lower_bound(object_.begin(), object_.end(), key, key_less);
  if (it != object_.end() && it->first == key) return &it->second;
  return nullptr;
}

bool Json::erase(std::string_view key) {
  if (type_ != Type::object) type_error("object");
  auto it = std::lower_bound(object_.begin(), object_.end(), key, key_less);
  if (it == object_.end() || it->first != key) return false;
  object_.erase(it);
  return true;
}

void Json::push_back(Json value) {
  if (type_ != Type::array) type_error("array");
  array_.push_back(std::move(value));
}

void json_escape_to(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xF]);
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

void Json::dump_to(std::string& out) const {
  switch (type_) {
    case Type::null: out += "null"; break;
    case Type::boolean: out += bool_ ? "true" : "false"; break;
    case Type::number: out += text_; break;
    case Type::string: json_escape_to(out, text_); break;
    case Type::array:
      out.push_back('[');
      for (std::size_t i = 0; i < array_.size(); ++i) {
        if (i) out.push_back(',');
        array_[i].dump_to(out);
      }
      out.push_back(']');
      break;
    case Type::object:
      out.push_back('{');
      for (std::size_t i = 0; i < object_.size(); ++i) {
        if (i) out.push_back(',');
        json_escape_to(out, object_[i].first);
        out.push_back(':');
        object_[i].second.dump_to(out);
      }
      out.push_back('}');
      break;
  }
}

std::string Json::dump() const {
  std::string out;
  dump_to(out);
  return out;
}

bool operator==(const Json& a, const Json& b) {
  if (a.type_ != b.type_) return false;
  switch (a.type_) {
    case Json::Type::null: return true;
    case Json::Type::boolean: return a.bool_ == b.bool_;
    case Json::Type::number:
    case Json::Type::string: return a.text_ == b.text_;
    case Json::Type::array: return a.array_ == b.array_;
    case Json::Type::object: return a.object_ == b.object_;
  }
  return false;
}

bool is_valid_utf8(std::string_view text) noexcept {
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t len = utf8_sequence_length(text, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

}  // namespace flt::io
