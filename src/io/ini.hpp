// INI configuration files: sections, `key = value`, full-line comments. Used for the resolved
// configuration of a run (written into the run directory, read back by --config).
//
// Syntax (one construct per line; lines end in LF or CRLF; UTF-8, an initial BOM is skipped):
//   # comment            ; comment          (only whole lines; '#' inside a value is kept)
//   [section]
//   key = value          (key: letters, digits, '_', '-', '.'; surrounding blanks trimmed)
//   key = "  quoted  "   (keeps blanks; escapes \" \\ \n \r \t)
// Keys before the first [section] belong to the unnamed section "". A repeated section or a
// repeated key within a section is an error (naming both lines), as is anything else malformed.
#pragma once

#include "core/error.hpp"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
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
  std::size_t line = 0;
  std::vector<IniEntry> entries;  // in file order
};

// Typed conversions shared by the INI getters and the option resolver. `where` prefixes the error
// (e.g. "run.ini:12: key 'lr' in [train]"); each throws flt::ConfigError on bad input.
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
  // comments are not preserved. `header_comment` lines are written first, each prefixed "# ".
  std::string dump(std::string_view header_comment = {}) const;

  const std::string& source() const noexcept { return source_; }
  const std::vector<IniSection>& sections() const noexcept { return sections_; }
  const IniSection* section(std::string_view name) const;
  const IniEntry* find(std::string_view section, std::string_view key) const;
  // Inserts or replaces (keeps the position of an existing key). Validates the key syntax.
  void set(const std::string& section, const std::string& key, std::string value);

  // "file:line: key 'k' in [s]" (or without the line when the key is absent): for messages.
  std::string where(std::string_view section, std::string_view key) const;

  // Typed getters: the required form throws ConfigError("file: missing key 'k' in [s]") when
  // absent; the defaulted form returns `fallback`. Malformed values throw naming file:line and key.
  std::string get_string(std::string_view section, std::string_view key) const;
  std::string get_string(std::string_view section, std::string_view key, std::string fallback) const;
  std::int64_t get_int(std::string_view section, std::string_view key) const;
  std::int64_t get_int(std::string_view section, std::string_view key, std::int64_t fallback) const;
  double get_real(std::string_view section, std::string_view key) const;
  double get_real(std::string_view section, std::string_view key, double fallback) const;
  bool get_bool(std::string_view section, std::string_view key) const;
  bool get_bool(std::string_view section, std::string_view key, bool fallback) const;
  std::vector<std::string> get_list(std::string_view section, std::string_view key) const;

  // Keys of `section` not in `known`, as "file:line: unknown key 'k' in [s]" messages.
  std::vector<std::string> unknown_keys(std::string_view section, const std::set<std::string>& known) const;
  // Throws ConfigError listing every unknown key (sections not in `known_sections` too).
  void require_known(const std::set<std::string>& known_sections, std::string_view section,
                     const std::set<std::string>& known_keys) const;

 private:
  const IniEntry& require(std::string_view section, std::string_view key) const;
  IniSection& section_for_write(const std::string& name);
  std::string source_;
  std::vector<IniSection> sections_;
};

bool is_valid_ini_key(std::string_view key) noexcept;

}  // namespace flt::io
