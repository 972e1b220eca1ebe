#include "io/options.hpp"

#include "core/error.hpp"

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/value_semantic.hpp>

#include <algorithm>
#include <cctype>
#include <system_error>

namespace flt::io {
namespace {

namespace po = boost::program_options;

// Throws ConfigError (message prefixed by `where`) if `value` is not a valid `spec` value.
void validate(const OptionSpec& spec, const std::string& value, const std::string& where) {
  const std::string w = where + ": option '" + spec.name + "'";
  switch (spec.type) {
    case OptionType::integer: (void)parse_int_value(value, w); break;
    case OptionType::real: (void)parse_real_value(value, w); break;
    case OptionType::boolean: (void)parse_bool_value(value, w); break;
    case OptionType::list: (void)parse_list_value(value, w); break;
    case OptionType::path:
      if (value.empty()) throw ConfigError(w + ": empty path");
      break;
    case OptionType::string: break;
  }
  if (!spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(), value) == spec.choices.end()) {
    std::string list;
    for (const auto& c : spec.choices) list += (list.empty() ? "" : ", ") + c;
    throw ConfigError(w + ": '" + value + "' is not one of: " + list);
  }
}

// Edit distance for "did you mean" suggestions.
std::size_t distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string suggestion(const OptionSchema& schema, std::string_view name) {
  const OptionSpec* best = nullptr;
  std::size_t best_d = 3;
  for (const auto& o : schema.options()) {
    // A close spelling, or the option that the name abbreviates (abbreviations are not accepted).
    const std::size_t d = o.name.starts_with(name) && name.size() >= 3 ? 1 : distance(o.name, name);
    if (d < best_d) {
      best_d = d;
      best = &o;
    }
  }
  return best ? " (did you mean --" + best->name + "?)" : "";
}

// Where a section's keys go in an INI file, for messages.
std::string place(const std::string& section) {
  return section.empty() ? "before any [section]" : "in [" + section + "]";
}

// A repeated list option: "a,b" then "c" gives "a,b,c".
void append_item(std::string& list, const std::string& item) {
  if (item.empty()) return;
  list += (list.empty() ? "" : ",") + item;
}

}  // namespace

const char* to_string(OptionType type) noexcept {
  switch (type) {
    case OptionType::string: return "STRING";
    case OptionType::integer: return "INT";
    case OptionType::real: return "REAL";
    case OptionType::boolean: return "BOOL";
    case OptionType::list: return "LIST";
    case OptionType::path: return "PATH";
  }
  return "?";
}

OptionSchema& OptionSchema::add(OptionSpec spec) {
  if (!is_valid_ini_key(spec.name) || spec.name.rfind("no-", 0) == 0)
    throw InvalidArgument("invalid option name '" + spec.name + "'");
  if (find(spec.name)) throw InvalidArgument("duplicate option '" + spec.name + "'");
  if (spec.type == OptionType::boolean) spec.implicit_value = "true";
  if (spec.default_value) {
    try {
      validate(spec, *spec.default_value, "default");
    } catch (const ConfigError& e) {
      throw InvalidArgument(std::string("bad default: ") + e.what());
    }
  }
  std::vector<std::string> aliases = std::move(spec.aliases);
  const char short_name = spec.short_name;
  spec.aliases.clear();
  spec.short_name = 0;
  options_.push_back(std::move(spec));
  if (short_name != 0 || !aliases.empty()) {
    try {
      add_spellings(options_.back().name, short_name, std::move(aliases));
    } catch (...) {
      options_.pop_back();
      throw;
    }
  }
  return *this;
}

OptionSchema& OptionSchema::add_spellings(std::string_view name, char short_name, std::vector<std::string> aliases) {
  auto it = std::find_if(options_.begin(), options_.end(), [&](const OptionSpec& o) { return o.name == name; });
  if (it == options_.end()) throw InvalidArgument("add_spellings: no option named '" + std::string(name) + "'");
  if (short_name != 0) {
    if (!std::isalpha(static_cast<unsigned char>(short_name)))
      throw InvalidArgument("invalid short flag for option '" + it->name + "'");
    const OptionSpec* other = find_short(short_name);
    if (other != nullptr && other != &*it)
      throw InvalidArgument(std::string("short flag -") + short_name + " of '" + it->name + "' is taken by '" +
                            other->name + "'");
    it->short_name = short_name;
  }
  for (auto& alias : aliases) {
    if (!is_valid_ini_key(alias) || alias.rfind("no-", 0) == 0)
      throw InvalidArgument("invalid alias '" + alias + "' of option '" + it->name + "'");
    const OptionSpec* other = find(alias);
    if (other == &*it) continue;
    if (other != nullptr) throw InvalidArgument("alias '" + alias + "' of '" + it->name + "' is taken by '" + other->name + "'");
    it->aliases.push_back(std::move(alias));
  }
  return *this;
}

OptionSpec& OptionSchema::option(std::string name, std::string section, OptionType type,
                                 std::optional<std::string> default_value, std::string help) {
  OptionSpec spec;
  spec.name = std::move(name);
  spec.section = std::move(section);
  spec.type = type;
  spec.default_value = std::move(default_value);
  spec.help = std::move(help);
  add(std::move(spec));
  return options_.back();
}

OptionSpec& OptionSchema::optional_option(std::string name, std::string section, OptionType type, std::string help) {
  OptionSpec& spec = option(std::move(name), std::move(section), type, std::nullopt, std::move(help));
  spec.optional = true;
  return spec;
}

const OptionSpec* OptionSchema::find(std::string_view name) const {
  for (const auto& o : options_)
    if (o.name == name) return &o;
  for (const auto& o : options_)
    if (std::find(o.aliases.begin(), o.aliases.end(), name) != o.aliases.end()) return &o;
  return nullptr;
}

const OptionSpec* OptionSchema::find_short(char short_name) const {
  for (const auto& o : options_)
    if (short_name != 0 && o.short_name == short_name) return &o;
  return nullptr;
}

std::string OptionSchema::help() const {
  std::vector<std::string> sections;
  for (const auto& o : options_)
    if (std::find(sections.begin(), sections.end(), o.section) == sections.end()) sections.push_back(o.section);
  std::string out;
  for (const auto& s : sections) {
    out += (s.empty() ? std::string("options") : "[" + s + "] options") + ":\n";
    for (const auto& o : options_) {
      if (o.section != s) continue;
      std::string left = o.short_name != 0 ? std::string("  -") + o.short_name + ", --" : std::string("  --");
      if (o.type == OptionType::boolean) left += (o.default_value == "true" ? "[no-]" : "") + o.name;
      else if (o.implicit_value) left += o.name + " [" + to_string(o.type) + "]";
      else left += o.name + " " + to_string(o.type);
      if (left.size() < 28) left.resize(28, ' ');
      else left += "  ";
      out += left + o.help;
      if (!o.choices.empty()) {
        out += " (";
        for (std::size_t i = 0; i < o.choices.size(); ++i) out += (i ? "|" : "") + o.choices[i];
        out += ")";
      }
      // A switch that is off by default needs no note.
      if (o.default_value && !o.default_value->empty() && !(o.type == OptionType::boolean && *o.default_value == "false"))
        out += " [default: " + *o.default_value + "]";
      for (std::size_t i = 0; i < o.aliases.size(); ++i) out += (i ? ", --" : " (also --") + o.aliases[i];
      if (!o.aliases.empty()) out += ")";
      out += "\n";
    }
  }
  return out;
}

CommandLine parse_command_line(const OptionSchema& schema, const std::vector<std::string>& args) {
  po::options_description described;
  for (const auto& o : schema.options()) {
    std::string names = o.name;  // "out,output,o": Boost reports every spelling as the first
    for (const auto& a : o.aliases) names += "," + a;
    if (o.short_name != 0) names += std::string(",") + o.short_name;
    auto* value = po::value<std::string>();
    if (o.implicit_value && o.type != OptionType::boolean) value->implicit_value(*o.implicit_value);
    described.add_options()(names.c_str(), value);
  }
  // Booleans: --flag, --flag=VALUE, --no-flag and -f are read here, so that a switch never takes
  // the next argument as its value (Boost's implicit values would).
  const auto switches = [&schema](const std::string& token) -> std::pair<std::string, std::string> {
    if (token.size() == 2 && token[0] == '-' && token[1] != '-') {
      const OptionSpec* spec = schema.find_short(token[1]);
      if (spec != nullptr && spec->type == OptionType::boolean) return {spec->name, "true"};
      return {};
    }
    if (token.rfind("--", 0) != 0) return {};
    const std::size_t eq = token.find('=');
    const std::string name = token.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const OptionSpec* spec = schema.find(name);
    if (spec != nullptr && spec->type == OptionType::boolean)
      return {spec->name, eq == std::string::npos ? "true" : token.substr(eq + 1)};
    spec = name.rfind("no-", 0) == 0 && eq == std::string::npos ? schema.find(name.substr(3)) : nullptr;
    if (spec != nullptr && spec->type == OptionType::boolean) return {spec->name, "false"};
    return {};
  };
  std::vector<po::option> parsed;
  try {
    parsed = po::command_line_parser(args)
                 .options(described)
                 .extra_parser(switches)
                 .style(po::command_line_style::default_style & ~po::command_line_style::allow_guessing)
                 .allow_unregistered()
                 .run()
                 .options;
  } catch (const po::error& e) {
    throw ConfigError(std::string("command line: ") + e.what());
  }
  CommandLine cl;
  for (const po::option& o : parsed) {
    if (o.position_key >= 0) {
      cl.positional.push_back(o.value.front());
      continue;
    }
    const OptionSpec* spec = o.unregistered ? nullptr : schema.find(o.string_key);
    if (spec == nullptr && o.string_key.size() == 2 && o.string_key[0] == '-') {
      std::string known;
      for (const auto& s : schema.options())
        if (s.short_name != 0) known += std::string(known.empty() ? "" : ", ") + "-" + s.short_name;
      throw ConfigError("command line: unknown option '" + o.original_tokens.front() + "'" +
                        (known.empty() ? std::string(" (options are spelled --name)") : " (short flags: " + known + ")"));
    }
    if (spec == nullptr) throw ConfigError("command line: unknown option --" + o.string_key + suggestion(schema, o.string_key));
    const std::string value = o.value.empty() ? spec->implicit_value.value_or("") : o.value.front();
    auto given = std::find_if(cl.options.begin(), cl.options.end(), [&](const auto& p) { return p.first == spec->name; });
    if (given == cl.options.end()) {
      cl.options.emplace_back(spec->name, value);
    } else if (spec->type == OptionType::list) {
      append_item(given->second, value);
    } else {
      throw ConfigError("command line: option --" + spec->name + " given more than once");
    }
  }
  return cl;
}

ResolvedOptions resolve_options(const OptionSchema& schema, const IniFile* file,
                                const std::vector<std::pair<std::string, std::string>>& command_line) {
  ResolvedOptions r;
  r.schema_ = &schema;
  for (const auto& o : schema.options())
    if (o.default_value) {
      validate(o, *o.default_value, "default");
      r.values_[o.name] = *o.default_value;
      r.sources_[o.name] = {OptionSource::Kind::default_value, "default"};
    }
  if (file != nullptr) {
    std::string problems;
    for (const IniSection& s : file->sections()) {
      for (const IniEntry& e : s.entries) {
        const OptionSpec* spec = schema.find(e.key);
        const std::string at = file->source() + (e.line > 0 ? ":" + std::to_string(e.line) : std::string());
        if (spec == nullptr || !spec->persist) {
          problems += "\n  " + at + ": unknown option '" + e.key + "'" + (s.name.empty() ? "" : " in [" + s.name + "]") +
                      (spec ? " (only allowed on the command line)" : suggestion(schema, e.key));
          continue;
        }
        if (spec->section != s.name) {
          problems += "\n  " + at + ": option '" + e.key + "' belongs " + place(spec->section) + ", not " + place(s.name);
          continue;
        }
        validate(*spec, e.value, at);
        const auto earlier = r.sources_.find(spec->name);
        if (earlier == r.sources_.end() || earlier->second.kind != OptionSource::Kind::file) {
          r.values_[spec->name] = e.value;
          r.sources_[spec->name] = {OptionSource::Kind::file, at};
        } else if (spec->type == OptionType::list) {
          append_item(r.values_[spec->name], e.value);
        } else {
          problems += "\n  " + at + ": option '" + e.key + "' repeated (first at " + earlier->second.where + ")";
        }
      }
    }
    if (!problems.empty()) throw ConfigError(file->source() + ": configuration errors:" + problems);
  }
  for (const auto& [name, value] : command_line) {
    const OptionSpec* spec = schema.find(name);
    if (spec == nullptr) throw ConfigError("command line: unknown option --" + name + suggestion(schema, name));
    validate(*spec, value, "command line");
    r.values_[spec->name] = value;
    r.sources_[spec->name] = {OptionSource::Kind::command_line, "command line"};
  }
  std::string missing;
  for (const auto& o : schema.options())
    if (!o.optional && !r.values_.contains(o.name)) missing += (missing.empty() ? "--" : ", --") + o.name;
  if (!missing.empty()) throw ConfigError("missing required option(s): " + missing);
  return r;
}

std::string_view ResolvedOptions::canonical(std::string_view name) const {
  const OptionSpec* s = schema_ ? schema_->find(name) : nullptr;
  return s ? std::string_view(s->name) : name;
}

bool ResolvedOptions::has(std::string_view name) const { return values_.find(canonical(name)) != values_.end(); }

const OptionSpec& ResolvedOptions::spec(std::string_view name, std::initializer_list<OptionType> types) const {
  const OptionSpec* s = schema_ ? schema_->find(name) : nullptr;
  if (s == nullptr) throw InvalidArgument("no option named '" + std::string(name) + "' in the schema");
  if (std::find(types.begin(), types.end(), s->type) == types.end())
    throw InvalidArgument("option '" + std::string(name) + "' is of type " + to_string(s->type));
  if (!has(name)) throw ConfigError("option --" + std::string(name) + " is not set");
  return *s;
}

const std::string& ResolvedOptions::raw(std::string_view name) const {
  auto it = values_.find(canonical(name));
  if (it == values_.end()) throw ConfigError("option --" + std::string(name) + " is not set");
  return it->second;
}

const std::string& ResolvedOptions::get_string(std::string_view name) const {
  spec(name, {OptionType::string, OptionType::path});
  return raw(name);
}
std::int64_t ResolvedOptions::get_int(std::string_view name) const {
  spec(name, {OptionType::integer});
  return parse_int_value(raw(name), source(name).where);
}
double ResolvedOptions::get_real(std::string_view name) const {
  spec(name, {OptionType::real, OptionType::integer});
  return parse_real_value(raw(name), source(name).where);
}
bool ResolvedOptions::get_bool(std::string_view name) const {
  spec(name, {OptionType::boolean});
  return parse_bool_value(raw(name), source(name).where);
}
std::vector<std::string> ResolvedOptions::get_list(std::string_view name) const {
  spec(name, {OptionType::list});
  return parse_list_value(raw(name), source(name).where);
}

const OptionSource& ResolvedOptions::source(std::string_view name) const {
  static const OptionSource unset{};
  auto it = sources_.find(canonical(name));
  return it == sources_.end() ? unset : it->second;
}

IniFile ResolvedOptions::to_ini() const {
  IniFile ini("<resolved>");
  for (const auto& o : schema_->options()) {
    if (!o.persist) continue;
    auto it = values_.find(o.name);
    if (it != values_.end()) ini.set(o.section, o.name, it->second);
  }
  return ini;
}

ResolvedOptions resolve_command_line(const OptionSchema& schema, const std::vector<std::string>& args,
                                     std::vector<std::string>* positional, const std::string& config_option) {
  const OptionSpec* config = schema.find(config_option);
  require(config != nullptr && !config->persist && config->type == OptionType::path,
          "resolve_command_line: the schema needs a non-persisted path option --" + config_option);
  CommandLine cl = parse_command_line(schema, args);
  if (positional != nullptr) *positional = cl.positional;
  std::optional<IniFile> file;
  for (const auto& [name, value] : cl.options)
    if (name == config_option) file = IniFile::load(value);
  return resolve_options(schema, file ? &*file : nullptr, cl.options);
}

std::string absolute_path_value(const std::string& value) {
  if (value.empty() || value == "-") return value;
  std::error_code error;
  const std::filesystem::path absolute = std::filesystem::absolute(value, error);
  if (error) throw IoError(value, "cannot make the path absolute: " + error.message());
  return absolute.lexically_normal().string();
}

namespace {

// Replaces each persisted path option's value in `ini` (and each item of the list options named
// in `path_lists`) by map(value), values in `keep` left as they are.
template <class Map>
void map_path_values(IniFile& ini, const OptionSchema& schema, std::initializer_list<std::string_view> path_lists,
                     std::initializer_list<std::string_view> keep, const Map& map) {
  const auto kept = [&](const std::string& v) { return std::find(keep.begin(), keep.end(), v) != keep.end(); };
  for (const OptionSpec& spec : schema.options()) {
    const bool list = std::find(path_lists.begin(), path_lists.end(), spec.name) != path_lists.end();
    if (!spec.persist || (spec.type != OptionType::path && !list)) continue;
    const IniEntry* entry = ini.find(spec.section, spec.name);
    if (entry == nullptr || kept(entry->value)) continue;
    std::string value;
    if (list) {
      for (const std::string& item : parse_list_value(entry->value, spec.name))
        append_item(value, kept(item) ? item : map(item));
    } else {
      value = map(entry->value);
    }
    ini.set(spec.section, spec.name, value);
  }
}

}  // namespace

void make_paths_absolute(IniFile& ini, const OptionSchema& schema, std::initializer_list<std::string_view> path_lists,
                         std::initializer_list<std::string_view> keep) {
  map_path_values(ini, schema, path_lists, keep, absolute_path_value);
}

std::string file_name_value(const std::string& value) {
  if (value.empty() || value == "-" || value == "none") return value;
  std::filesystem::path path = std::filesystem::path(value).lexically_normal();
  if (!path.has_filename() && path.has_parent_path()) path = path.parent_path();  // "dir/" -> "dir"
  const std::string name = path.filename().string();
  return name.empty() ? value : name;
}

void reduce_paths_to_file_names(IniFile& ini, const OptionSchema& schema,
                                std::initializer_list<std::string_view> path_lists) {
  map_path_values(ini, schema, path_lists, {}, file_name_value);
}

void write_resolved_config(const std::filesystem::path& path, const ResolvedOptions& options,
                           std::string_view header_comment) {
  options.to_ini().save(path, header_comment);
}

}  // namespace flt::io
