#include "io/ini.hpp"

#include "core/text.hpp"

#include "io/atomic_file.hpp"
#include "io/utf8.hpp"

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/parsers.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>

namespace flt::io {
namespace {

namespace po = boost::program_options;

// What Boost's config-file parser trims from lines, keys and values.
constexpr std::string_view kBlanks = " \t\r";

std::string_view trim_blanks(std::string_view s) {
  const std::size_t first = s.find_first_not_of(kBlanks);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kBlanks) - first + 1);
}

std::string quote_for_message(std::string_view s) {
  std::string out = "'";
  for (const char c : s.substr(0, 80)) out.push_back(static_cast<unsigned char>(c) < 0x20 ? '?' : c);
  if (s.size() > 80) out += "...";
  return out + "'";
}

bool needs_quotes(std::string_view v) {
  if (v.empty()) return false;
  return kBlanks.find(v.front()) != std::string_view::npos || kBlanks.find(v.back()) != std::string_view::npos ||
         v.front() == '"' || v.find_first_of("\n\r#") != std::string_view::npos;
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
      case '#': out += "\\x23"; break;  // Boost would read '#' as the start of a comment
      default: out.push_back(c);
    }
  }
  return out + "\"";
}

// The text of a quoted value ("..." with escapes); `at` and `key` name it in errors.
std::string unquote(std::string_view raw, const std::string& at, const std::string& key) {
  const std::string what = at + "quoted value of key '" + key + "': ";
  if (raw.size() < 2 || raw.back() != '"')
    throw ConfigError(what + "no closing '\"' ('#' starts a comment; write it as \\x23)");
  const std::string_view inner = raw.substr(1, raw.size() - 2);
  std::string value;
  for (std::size_t i = 0; i < inner.size(); ++i) {
    char c = inner[i];
    if (c == '"') throw ConfigError(what + "'\"' inside it must be written \\\"");
    if (c == '\\') {
      if (++i >= inner.size()) throw ConfigError(what + "dangling '\\'");
      switch (inner[i]) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'x': {
          unsigned byte = 0;
          const char* first = inner.data() + i + 1;
          if (inner.size() < i + 3 || std::from_chars(first, first + 2, byte, 16).ptr != first + 2)
            throw ConfigError(what + "\\x needs two hexadecimal digits");
          c = static_cast<char>(byte);
          i += 2;
          break;
        }
        default: throw ConfigError(what + "unknown escape '\\" + std::string(1, inner[i]) + "'");
      }
    }
    value.push_back(c);
  }
  if (!is_valid_utf8(value)) throw ConfigError(what + "not valid UTF-8 text");
  return value;
}

// A section name that dump() writes and parse() reads back as the same name ("" is the unnamed one).
bool is_valid_section_name(std::string_view name) {
  return name.find_first_of("#\n") == std::string_view::npos && name == trim_blanks(name) && !name.ends_with('.') &&
         is_valid_utf8(name);
}

}  // namespace

bool is_valid_ini_key(std::string_view key) noexcept {
  if (key.empty()) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
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
  for (const std::string& field : split(text, ',')) {
    const std::string_view item = trim(field);
    if (item.empty()) throw ConfigError(where + ": empty item in list " + quote_for_message(text));
    items.emplace_back(item);
  }
  return items;
}

IniFile IniFile::parse(std::string_view text, std::string source) {
  IniFile ini(std::move(source));
  text = without_utf8_bom(text);
  if (!is_valid_utf8(text)) throw ConfigError(ini.source_ + ": not valid UTF-8 text");
  const auto at = [&](std::size_t line) {
    std::string where = ini.source_;  // built with append(): GCC 12 warns on chained operator+ here
    if (line > 0) where.append(":").append(std::to_string(line));
    return where.append(": ");
  };
  // Boost reports no line numbers: the lines of its entries (and of the first line it cannot
  // read), counted by its rules: a comment from '#', blanks trimmed, "[name]" or "key = value".
  std::vector<std::size_t> entry_lines;
  std::size_t bad_line = 0, line_no = 0;
  for (const std::string& raw : split(text, '\n')) {
    ++line_no;
    const std::string_view line = trim_blanks(std::string_view(raw).substr(0, raw.find('#')));
    if (line.empty()) continue;
    if (line.front() == '[' && line.back() == ']') {
      if (trim_blanks(line.substr(1, line.size() - 2)).empty()) throw ConfigError(at(line_no) + "empty section name");
    } else if (line.find('=') != std::string_view::npos) {
      entry_lines.push_back(line_no);
    } else if (bad_line == 0) {
      bad_line = line_no;
    }
  }
  std::istringstream stream{std::string(text)};
  std::vector<po::option> entries;
  try {
    entries = po::parse_config_file(stream, po::options_description(), /*allow_unregistered=*/true).options;
  } catch (const po::error& e) {
    if (bad_line == 0) throw ConfigError(at(0) + e.what());
    const std::string raw = split(text, '\n')[bad_line - 1];
    throw ConfigError(at(bad_line) + "expected 'key = value', '[section]' or a comment, got " +
                      quote_for_message(trim_blanks(std::string_view(raw).substr(0, raw.find('#')))));
  }
  for (std::size_t k = 0; k < entries.size(); ++k) {
    const std::size_t line = entry_lines.size() == entries.size() ? entry_lines[k] : 0;
    // Boost names an entry "section.key" (its section's header, or the key as written).
    const std::string& name = entries[k].string_key;
    const std::size_t dot = name.rfind('.');
    const std::string section(dot == std::string::npos ? std::string_view() : trim_blanks(std::string_view(name).substr(0, dot)));
    const std::string key = dot == std::string::npos ? name : name.substr(dot + 1);
    if (!is_valid_ini_key(key))
      throw ConfigError(at(line) + "invalid key " + quote_for_message(key) + " (letters, digits, '_', '-')");
    if (!is_valid_section_name(section)) throw ConfigError(at(line) + "invalid section name " + quote_for_message(section));
    const std::string& raw = entries[k].value.front();
    std::string value = !raw.empty() && raw.front() == '"' ? unquote(raw, at(line), key) : raw;
    ini.section_for_write(section).entries.push_back({key, std::move(value), line});
  }
  return ini;
}

IniFile IniFile::load(const std::filesystem::path& path) { return parse(read_file(path), path.string()); }

void IniFile::save(const std::filesystem::path& path, std::string_view header_comment) const {
  write_file_atomic(path, dump(header_comment));
}

std::string IniFile::dump(std::string_view header_comment) const {
  std::string out;
  if (!header_comment.empty())
    for (const std::string& line : split(header_comment, '\n')) out += "# " + line + "\n";
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
  if (!is_valid_section_name(name)) throw InvalidArgument("invalid INI section name '" + name + "'");
  sections_.push_back({name, {}});
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

}  // namespace flt::io
