#include "io/ini.hpp"

#include "core/text.hpp"

#include "io/atomic_file.hpp"
#include "io/utf8.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace flt::io {
namespace {

std::string quote_for_message(std::string_view s) {
  std::string out = "'";
  for (const char c : s.substr(0, 80)) out.push_back(static_cast<unsigned char>(c) < 0x20 ? '?' : c);
  if (s.size() > 80) out += "...";
  return out + "'";
}

bool needs_quotes(std::string_view v) {
  if (v.empty()) return false;
  if (v.front() == ' ' || v.front() == '\t' || v.back() == ' ' || v.back() == '\t' || v.front() == '"') return true;
  return v.find_first_of("\n\r") != std::string_view::npos;
}

std::string quote_value(std::string_view v) {
  std::string out = "\"";
  for (const char c : v) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: out.push_back(c);
    }
  }
  return out + "\"";
}

}  // namespace

bool is_valid_ini_key(std::string_view key) noexcept {
  if (key.empty()) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
  });
}

std::int64_t parse_int_value(std::string_view text, const std::string& where) {
  const std::string_view t = trim(text);
  std::int64_t v = 0;
  const char* first = t.data();
  if (!t.empty() && t.front() == '+') ++first;
  const auto res = std::from_chars(first, t.data() + t.size(), v);
  if (t.empty() || res.ec != std::errc() || res.ptr != t.data() + t.size())
    throw ConfigError(where + ": expected an integer, got " + quote_for_message(text));
  return v;
}

double parse_real_value(std::string_view text, const std::string& where) {
  const std::string_view t = trim(text);
  double v = 0;
  const char* first = t.data();
  if (!t.empty() && t.front() == '+') ++first;
  const auto res = std::from_chars(first, t.data() + t.size(), v);
  if (t.empty() || res.ec != std::errc() || res.ptr != t.data() + t.size() || !std::isfinite(v))
    throw ConfigError(where + ": expected a finite number, got " + quote_for_message(text));
  return v;
}

bool parse_bool_value(std::string_view text, const std::string& where) {
  const std::string t = lower(trim(text));
  if (t == "true" || t == "yes" || t == "on" || t == "1") return true;
  if (t == "false" || t == "no" || t == "off" || t == "0") return false;
  throw ConfigError(where + ": expected true or false, got " + quote_for_message(text));
}

std::vector<std::string> parse_list_value(std::string_view text, const std::string& where) {
  std::vector<std::string> items;
  if (trim(text).empty()) return items;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string_view item = trim(text.substr(start, comma == std::string_view::npos ? text.npos : comma - start));
    if (item.empty()) throw ConfigError(where + ": empty item in list " + quote_for_message(text));
    items.emplace_back(item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
}

IniFile IniFile::parse(std::string_view text, std::string source) {
  IniFile ini(std::move(source));
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  if (!is_valid_utf8(text)) throw ConfigError(ini.source_ + ": not valid UTF-8 text");
  IniSection* current = nullptr;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t nl = text.find('\n', pos);
    std::string_view raw = text.substr(pos, nl == std::string_view::npos ? text.npos : nl - pos);
    pos = (nl == std::string_view::npos) ? text.size() + 1 : nl + 1;
    ++line_no;
    if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
    const std::string_view line = trim(raw);
    const std::string at = ini.source_ + ":" + std::to_string(line_no) + ": ";
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    if (line.front() == '[') {
      const std::size_t close = line.find(']');
      if (close == std::string_view::npos) throw ConfigError(at + "section header without ']'");
      if (!trim(line.substr(close + 1)).empty()) throw ConfigError(at + "text after the section header");
      const std::string name(trim(line.substr(1, close - 1)));
      if (name.empty()) throw ConfigError(at + "empty section name");
      if (const IniSection* prev = ini.section(name))
        throw ConfigError(at + "section [" + name + "] repeated (first at line " + std::to_string(prev->line) + ")");
      ini.sections_.push_back({name, line_no, {}});
      current = &ini.sections_.back();
      continue;
    }
    const std::size_t eq = line.find('=');
    if (eq == std::string_view::npos)
      throw ConfigError(at + "expected 'key = value', '[section]' or a comment, got " + quote_for_message(line));
    const std::string key(trim(line.substr(0, eq)));
    if (!is_valid_ini_key(key))
      throw ConfigError(at + "invalid key " + quote_for_message(key) + " (letters, digits, '_', '-', '.')");
    std::string_view rawv = trim(line.substr(eq + 1));
    std::string value;
    if (!rawv.empty() && rawv.front() == '"') {
      if (rawv.size() < 2 || rawv.back() != '"') throw ConfigError(at + "unterminated quoted value for key '" + key + "'");
      const std::string_view inner = rawv.substr(1, rawv.size() - 2);
      for (std::size_t i = 0; i < inner.size(); ++i) {
        char c = inner[i];
        if (c == '"') throw ConfigError(at + "unescaped '\"' inside the quoted value of key '" + key + "'");
        if (c == '\\') {
          if (++i >= inner.size()) throw ConfigError(at + "dangling '\\' in the quoted value of key '" + key + "'");
          switch (inner[i]) {
            case '"': c = '"'; break;
            case '\\': c = '\\'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            default: throw ConfigError(at + "unknown escape '\\" + std::string(1, inner[i]) + "' in key '" + key + "'");
          }
        }
        value.push_back(c);
      }
    } else {
      value = std::string(rawv);
    }
    if (current == nullptr) {
      ini.sections_.push_back({"", 0, {}});
      current = &ini.sections_.back();
    }
    for (const IniEntry& e : current->entries)
      if (e.key == key)
        throw ConfigError(at + "key '" + key + "' repeated in [" + current->name + "] (first at line " +
                          std::to_string(e.line) + ")");
    current->entries.push_back({key, std::move(value), line_no});
  }
  return ini;
}

IniFile IniFile::load(const std::filesystem::path& path) { return parse(read_file(path), path.string()); }

void IniFile::save(const std::filesystem::path& path, std::string_view header_comment) const {
  write_file_atomic(path, dump(header_comment));
}

std::string IniFile::dump(std::string_view header_comment) const {
  std::string out;
  std::size_t start = 0;
  while (start < header_comment.size()) {
    const std::size_t nl = header_comment.find('\n', start);
    out += "# ";
    out += header_comment.substr(start, nl == std::string_view::npos ? header_comment.npos : nl - start);
    out += "\n";
    start = nl == std::string_view::npos ? header_comment.size() : nl + 1;
  }
  auto write_entries = [&](const IniSection& s) {
    for (const IniEntry& e : s.entries) {
      out += e.key;
      out += e.value.empty() ? " =" : " = ";
      out += needs_quotes(e.value) ? quote_value(e.value) : e.value;
      out += "\n";
    }
  };
  if (const IniSection* global = section("")) write_entries(*global);
  for (const IniSection& s : sections_) {
    if (s.name.empty()) continue;
    if (!out.empty()) out += "\n";
    out += "[" + s.name + "]\n";
    write_entries(s);
  }
  return out;
}

const IniSection* IniFile::section(std::string_view name) const {
  for (const IniSection& s : sections_)
    if (s.name == name) return &s;
  return nullptr;
}

const IniEntry* IniFile::find(std::string_view section_name, std::string_view key) const {
  const IniSection* s = section(section_name);
  if (s == nullptr) return nullptr;
  for (const IniEntry& e : s->entries)
    if (e.key == key) return &e;
  return nullptr;
}

IniSection& IniFile::section_for_write(const std::string& name) {
  for (IniSection& s : sections_)
    if (s.name == name) return s;
  if (name.find_first_of("]\n\r") != std::string::npos || name != trim(name) || !is_valid_utf8(name))
    throw InvalidArgument("invalid INI section name '" + name + "'");
  sections_.push_back({name, 0, {}});
  return sections_.back();
}

void IniFile::set(const std::string& section_name, const std::string& key, std::string value) {
  if (!is_valid_ini_key(key)) throw InvalidArgument("invalid INI key '" + key + "'");
  if (!is_valid_utf8(value)) throw InvalidArgument("INI value for '" + key + "' is not valid UTF-8");
  IniSection& s = section_for_write(section_name);
  for (IniEntry& e : s.entries)
    if (e.key == key) {
      e.value = std::move(value);
      return;
    }
  s.entries.push_back({key, std::move(value), 0});
}

std::string IniFile::where(std::string_view section_name, std::string_view key) const {
  const IniEntry* e = find(section_name, key);
  std::string w = source_;
  if (e != nullptr && e->line > 0) {
    w += ':';
    w += std::to_string(e->line);
  }
  return w + ": key '" + std::string(key) + "' in [" + std::string(section_name) + "]";
}

const IniEntry& IniFile::require(std::string_view section_name, std::string_view key) const {
  const IniEntry* e = find(section_name, key);
  if (e == nullptr)
    throw ConfigError(source_ + ": missing key '" + std::string(key) + "' in [" + std::string(section_name) + "]");
  return *e;
}

std::string IniFile::get_string(std::string_view s, std::string_view k) const { return require(s, k).value; }
std::string IniFile::get_string(std::string_view s, std::string_view k, std::string fallback) const {
  const IniEntry* e = find(s, k);
  return e ? e->value : fallback;
}
std::int64_t IniFile::get_int(std::string_view s, std::string_view k) const {
  return parse_int_value(require(s, k).value, where(s, k));
}
std::int64_t IniFile::get_int(std::string_view s, std::string_view k, std::int64_t fallback) const {
  return find(s, k) ? get_int(s, k) : fallback;
}
double IniFile::get_real(std::string_view s, std::string_view k) const {
  return parse_real_value(require(s, k).value, where(s, k));
}
double IniFile::get_real(std::string_view s, std::string_view k, double fallback) const {
  return find(s, k) ? get_real(s, k) : fallback;
}
bool IniFile::get_bool(std::string_view s, std::string_view k) const {
  return parse_bool_value(require(s, k).value, where(s, k));
}
bool IniFile::get_bool(std::string_view s, std::string_view k, bool fallback) const {
  return find(s, k) ? get_bool(s, k) : fallback;
}
std::vector<std::string> IniFile::get_list(std::string_view s, std::string_view k) const {
  const IniEntry* e = find(s, k);
  return e ? parse_list_value(e->value, where(s, k)) : std::vector<std::string>{};
}

std::vector<std::string> IniFile::unknown_keys(std::string_view section_name, const std::set<std::string>& known) const {
  std::vector<std::string> out;
  if (const IniSection* s = section(section_name))
    for (const IniEntry& e : s->entries)
      if (!known.contains(e.key)) out.push_back(where(section_name, e.key) + ": unknown key");
  return out;
}

void IniFile::require_known(const std::set<std::string>& known_sections, std::string_view section_name,
                            const std::set<std::string>& known_keys) const {
  std::string message;
  for (const IniSection& s : sections_)
    if (!known_sections.contains(s.name))
      message += "\n  " + source_ + ":" + std::to_string(s.line) + ": unknown section [" + s.name + "]";
  for (const std::string& m : unknown_keys(section_name, known_keys)) message += "\n  " + m;
  if (!message.empty()) throw ConfigError(source_ + ": unknown configuration entries:" + message);
}

}  // namespace flt::io
