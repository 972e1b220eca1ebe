#include "io/json.hpp"

#include <iterator>
#include <optional>
#include <set>
#include <utility>
#include <vector>

namespace flt::io {
namespace {

using nlohmann::json;

// Hands the text to nlohmann's lexer and remembers the last byte handed out: when the parser
// reports a token to the handler, that byte is the token's last one (the lexer reads no further
// for brackets and strings).
class TrackingIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  TrackingIterator(const char* p, const char** last_read) : p_(p), last_read_(last_read) {}
  reference operator*() const {
    *last_read_ = p_;
    return *p_;
  }
  TrackingIterator& operator++() {
    ++p_;
    return *this;
  }
  TrackingIterator operator++(int) {
    TrackingIterator before = *this;
    ++p_;
    return before;
  }
  bool operator==(const TrackingIterator& other) const { return p_ == other.p_; }

 private:
  const char* p_;
  const char** last_read_;
};

// "[json.exception.parse_error.101] parse error at line 1, column 8: syntax error while parsing
// value - invalid literal; last read: '[1, 2, x'" -> "syntax error while parsing value - invalid
// literal" (the offset says where; the last-read token may be long or not valid UTF-8).
std::string syntax_reason(std::string_view what) {
  if (const auto p = what.find("] "); p != std::string_view::npos) what.remove_prefix(p + 2);
  if (what.starts_with("parse error"))
    if (const auto p = what.find(": "); p != std::string_view::npos) what.remove_prefix(p + 2);
  if (const auto p = what.find("; last read"); p != std::string_view::npos) what = what.substr(0, p);
  return std::string(what);
}

// nlohmann's DOM builder plus the checks it lacks: duplicate keys and the nesting depth.
class StrictHandler {
 public:
  StrictHandler(json& root, std::string_view text, const char* const& last_read, std::size_t max_depth)
      : dom_(root, /*allow_exceptions=*/false), text_(text), last_read_(last_read), max_depth_(max_depth) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(json::number_float_t v, const json::string_t& text) { return dom_.number_float(v, text); }
  bool string(json::string_t& v) { return dom_.string(v); }
  bool binary(json::binary_t& v) { return dom_.binary(v); }

  bool start_object(std::size_t n) {
    if (!open_container()) return false;
    keys_.emplace_back();
    return dom_.start_object(n);
  }
  bool key(json::string_t& k) {
    if (!keys_.back().insert(k).second) return fail(key_start(), "duplicate key \"" + k + "\"");
    return dom_.key(k);
  }
  bool end_object() {
    keys_.pop_back();
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t n) { return open_container() && dom_.start_array(n); }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }

  // `position` counts the bytes read, the offending one included.
  template <class Exception>
  bool parse_error(std::size_t position, const std::string& /*last_token*/, const Exception& e) {
    return fail(position == 0 ? 0 : position - 1,
                e.id == 406 ? std::string("number out of the range of a double") : syntax_reason(e.what()));
  }

  const std::optional<JsonError>& error() const { return error_; }

 private:
  std::size_t last_offset() const { return static_cast<std::size_t>(last_read_ - text_.data()); }

  bool open_container() {
    if (depth_ >= max_depth_) return fail(last_offset(), "nesting deeper than " + std::to_string(max_depth_));
    ++depth_;
    return true;
  }

  // The key's closing quote was the last byte read; its opening quote is the nearest quote before
  // it not escaped by an odd run of backslashes.
  std::size_t key_start() const {
    for (std::size_t i = last_offset(); i-- > 0;) {
      if (text_[i] != '"') continue;
      std::size_t backslashes = 0;
      while (backslashes < i && text_[i - 1 - backslashes] == '\\') ++backslashes;
      if (backslashes % 2 == 0) return i;
    }
    return 0;
  }

  bool fail(std::size_t offset, const std::string& reason) {
    error_.emplace(offset, reason);
    return false;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::string_view text_;
  const char* const& last_read_;
  std::size_t max_depth_;
  std::size_t depth_ = 0;
  std::vector<std::set<std::string>> keys_;  // keys seen in each open object
  std::optional<JsonError> error_;
};

}  // namespace

json parse_json(std::string_view text, std::size_t max_depth) {
  if (text.starts_with("\xEF\xBB\xBF")) throw JsonError(0, "byte order mark before the JSON value");
  json root;
  const char* last_read = text.data();
  StrictHandler handler(root, text, last_read, max_depth);
  bool ok = false;
  try {
    const TrackingIterator begin(text.data(), &last_read), end(text.data() + text.size(), &last_read);
    ok = json::sax_parse(begin, end, &handler, json::input_format_t::json, /*strict=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    throw JsonError(0, syntax_reason(e.what()));
  }
  if (!ok) throw handler.error() ? *handler.error() : JsonError(0, "invalid JSON");
  // The lexer takes a NUL byte for the end of the input; a successful parse whose last byte read
  // is a NUL stopped there with bytes left over.
  if (!text.empty() && *last_read == '\0')
    throw JsonError(static_cast<std::size_t>(last_read - text.data()), "unexpected data after the JSON value");
  return root;
}

std::string dump_json(const nlohmann::json& value) {
  try {
    return value.dump();
  } catch (const json::exception& e) {
    throw InvalidArgument("JSON text: a string is not valid UTF-8 (" + syntax_reason(e.what()) + ")");
  }
}

}  // namespace flt::io
