// Options of a subcommand that come from the command line or an INI file, the command line
// overriding the file, with defaults below both; each value remembers where it came from. The
// schema declares them; Boost.Program_options parses the command line and the file (io/ini.hpp).
// The resolved configuration is written back as an INI file that --config reads again (same
// values, same types).
//
// Naming: an option `batch-size` in section `train` is `--batch-size` on the command line and
// `batch-size = 32` under `[train]` in the file (options of section "" come before any [section]).
// Names are unique across sections.
#pragma once

#include "io/ini.hpp"

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace flt::io {

enum class OptionType { string, integer, real, boolean, list, path };
const char* to_string(OptionType type) noexcept;

struct OptionSpec {
  std::string name;       // "batch-size"
  std::string section;    // "train"
  OptionType type = OptionType::string;
  std::optional<std::string> default_value;  // nullopt: no default (required unless `optional`)
  std::string help;
  bool optional = false;  // may stay unset (no default, not required)
  bool persist = true;    // written to the resolved INI and accepted in files (false for
                          // --config, --resume, --overwrite: run actions, not configuration)
  std::vector<std::string> choices;  // allowed values (string options), empty = any
  // Other spellings: a one-letter command-line flag ('o' for -o) and further long names (older
  // or shared spellings such as "output" for "out"), accepted on the command line and as INI
  // keys; the resolved configuration always uses `name`.
  char short_name = 0;
  std::vector<std::string> aliases;
  // The value of `--name` given without one, which then never takes the next argument as its
  // value (e.g. "" for predict's --forces [TARGET]). Booleans: always "true".
  std::optional<std::string> implicit_value;
};

class OptionSchema {
 public:
  // Adds an option; throws InvalidArgument on a duplicate or invalid name or a default that does
  // not parse as `type`.
  OptionSchema& add(OptionSpec spec);
  // Shorthand: adds {name, section, type, default_value, help} and returns the new spec for
  // further settings (valid until the next add), e.g.
  //   schema.option("schedule", "train", OptionType::string, "cosine", "...").choices = {"cosine", "plateau"};
  //   schema.option("config", "", OptionType::path, std::nullopt, "INI file").persist = false;
  OptionSpec& option(std::string name, std::string section, OptionType type,
                     std::optional<std::string> default_value, std::string help);
  // Shorthand for an option without a default that may stay unset.
  OptionSpec& optional_option(std::string name, std::string section, OptionType type, std::string help);
  const std::vector<OptionSpec>& options() const noexcept { return options_; }
  // The option named `name` or having it as an alias.
  const OptionSpec* find(std::string_view name) const;
  const OptionSpec* find_short(char short_name) const;
  // Adds a short flag and/or aliases to an existing option (e.g. a shared spelling given by the
  // program to a schema the library builds). Throws InvalidArgument on a clash or unknown option.
  OptionSchema& add_spellings(std::string_view name, char short_name, std::vector<std::string> aliases = {});
  // "--name TYPE   help [default: x]" lines, grouped by section.
  std::string help() const;

 private:
  std::vector<OptionSpec> options_;
};

// The command line split into options and positional arguments (Boost.Program_options' parser,
// without guessing abbreviations). Accepted forms: --name value, --name=value, -x value, -xvalue
// (short flags), --flag / -x (booleans: true), --flag=false, --no-flag (booleans: false), and "--"
// ending options. Aliases are reported under the option's name. Unknown options, missing values
// and repeated non-list options throw ConfigError naming the option.
// A repeated list option appends (--targets U0 --targets gap == --targets U0,gap).
struct CommandLine {
  std::vector<std::pair<std::string, std::string>> options;  // in order given
  std::vector<std::string> positional;
};
CommandLine parse_command_line(const OptionSchema& schema, const std::vector<std::string>& args);

// Where a resolved value came from.
struct OptionSource {
  enum class Kind { unset, default_value, file, command_line } kind = Kind::unset;
  std::string where;  // "default", "run.ini:12", "command line"
};

class ResolvedOptions {
 public:
  bool has(std::string_view name) const;  // set by default, file or command line
  // Typed getters: throw ConfigError when unset (naming the option) and InvalidArgument when the
  // option is not in the schema or has another type. Values were validated by resolve().
  const std::string& get_string(std::string_view name) const;  // string and path options
  std::int64_t get_int(std::string_view name) const;
  double get_real(std::string_view name) const;
  bool get_bool(std::string_view name) const;
  std::vector<std::string> get_list(std::string_view name) const;
  const OptionSource& source(std::string_view name) const;
  const std::string& raw(std::string_view name) const;

  // The persisted options as INI (one section per option section, schema order); unset optional
  // options are omitted. Reading it back with resolve() gives the same values.
  IniFile to_ini() const;

  const OptionSchema& schema() const noexcept { return *schema_; }

 private:
  friend ResolvedOptions resolve_options(const OptionSchema&, const IniFile*,
                                         const std::vector<std::pair<std::string, std::string>>&);
  const OptionSpec& spec(std::string_view name, std::initializer_list<OptionType> types) const;
  std::string_view canonical(std::string_view name) const;  // an alias's option name
  const OptionSchema* schema_ = nullptr;
  std::map<std::string, std::string, std::less<>> values_;
  std::map<std::string, OptionSource, std::less<>> sources_;
};

// Resolves: defaults, then `file` (may be null), then `command_line` (name without dashes, value).
// The file must only hold known sections and keys of persisted options (unknown entries are
// errors naming file:line and key); a key repeated in the file appends for a list option and is an
// error otherwise. Every value is type-checked with a message naming its source. Options with no
// default that are neither optional nor given are reported together.
// The schema must outlive the result.
ResolvedOptions resolve_options(const OptionSchema& schema, const IniFile* file,
                                const std::vector<std::pair<std::string, std::string>>& command_line);

// The whole scheme in one call: parses `args` (the subcommand's arguments), loads the INI file named
// by the option `config_option` if given (on the command line only), and resolves defaults < file <
// command line. Positional arguments are returned in `positional` (if not null). The schema must
// have `config_option` as a non-persisted path option.
ResolvedOptions resolve_command_line(const OptionSchema& schema, const std::vector<std::string>& args,
                                     std::vector<std::string>* positional = nullptr,
                                     const std::string& config_option = "config");

// `value` of a path option as an absolute, lexically normal path, a relative one taken from the
// working directory: a configuration file written with it names the same files when it is read
// from another directory (a run directory's config.ini on --resume). "-" (standard input) stays
// as it is. Throws IoError when the working directory cannot be determined.
std::string absolute_path_value(const std::string& value);

// Makes the values in `ini` of the schema's persisted path options, and item by item those of the
// list options named in `path_lists`, absolute (absolute_path_value); a value in `keep` (a
// sentinel such as "none") stays as it is.
void make_paths_absolute(IniFile& ini, const OptionSchema& schema, std::initializer_list<std::string_view> path_lists = {},
                         std::initializer_list<std::string_view> keep = {});

// `value` of a path option reduced to its file (or last directory) name, "-" and "none" kept:
// the spelling of a configuration's paths in a run's fingerprint, which names what was read
// without depending on where it lies (the data itself is identified by its checksum).
std::string file_name_value(const std::string& value);
// The same selection as make_paths_absolute, each value reduced by file_name_value.
void reduce_paths_to_file_names(IniFile& ini, const OptionSchema& schema,
                                std::initializer_list<std::string_view> path_lists = {});

// Writes the resolved configuration (to_ini()) atomically with a comment header, e.g. the run's
// config.ini, which `--config` reads back.
void write_resolved_config(const std::filesystem::path& path, const ResolvedOptions& options,
                           std::string_view header_comment = "flt resolved configuration: read it back with --config");

}  // namespace flt::io
