// INI configuration files: read by Boost.Program_options' config-file parser, written by dump()
// in one canonical form that reads back to the same entries (the run's config.ini).
//
// Syntax (Boost's; one construct per line, LF or CRLF, UTF-8 with an optional BOM):
//   # comment            ('#' starts a comment anywhere on a line, also after a value)
//   [section]
//   key = value          (blanks around key and value trimmed; key: letters, digits, '_', '-')
//   key = "  quoted  "   (ours on top: keeps blanks; escapes \" \\ \n \r \t \xHH, '#' as \x23)
// Keys before the first [section] belong to the unnamed section "" (`section.key = value` there is
// the key of [section], as Boost reads it). A repeated section continues the first one; a repeated
// key is kept as a second entry (the option resolver appends list values and refuses others).
#pragma once

#include "core/error.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace flt::io {

struct IniEntry {
  std::string key;
  std::string value;
  std::size_t line = 0;  // 1-based line in the source; 0 if set in memory
};

struct IniSection {
  std::string name;
  std::vector<IniEntry> entries;  // in file order
};

// Typed conversions shared by the option resolver and other readers of user text. `where`
// prefixes the error (e.g. "run.ini:12: option 'lr'"); each throws flt::ConfigError on bad input.
std::int64_t parse_int_value(std::string_view text, const std::string& where);
double parse_real_value(std::string_view text, const std::string& where);  // finite only
bool parse_bool_value(std::string_view text, const std::string& where);    // true/false yes/no on/off 1/0
// Comma-separated, items trimmed; "" gives an empty list; an empty item is an error.
std::vector<std::string> parse_list_value(std::string_view text, const std::string& where);

class IniFile {
 public:
  explicit IniFile(std::string source = "<memory>") : source_(std::move(source)) {}

  // Parses text; `source` names it in errors ("file:line: reason"). Throws flt::ConfigError.
  static IniFile parse(std::string_view text, std::string source);
  // Reads a file (flt::IoError if unreadable) and parses it.
  static IniFile load(const std::filesystem::path& path);
  // Writes dump() atomically.
  void save(const std::filesystem::path& path, std::string_view header_comment = {}) const;
  // Canonical text: the unnamed section first (without a header), then each section in order;
  // comments are not kept. `header_comment` lines come first, each prefixed "# ".
  std::string dump(std::string_view header_comment = {}) const;

  const std::string& source() const noexcept { return source_; }
  const std::vector<IniSection>& sections() const noexcept { return sections_; }
  const IniSection* section(std::string_view name) const;
  // The first entry `key` of `section`.
  const IniEntry* find(std::string_view section, std::string_view key) const;
  // Inserts or replaces the first entry (keeping its position). Throws InvalidArgument for a key
  // or section name that the file could not hold.
  void set(const std::string& section, const std::string& key, std::string value);

 private:
  IniSection& section_for_write(const std::string& name);
  std::string source_;
  std::vector<IniSection> sections_;
};

bool is_valid_ini_key(std::string_view key) noexcept;

}  // namespace flt::io
