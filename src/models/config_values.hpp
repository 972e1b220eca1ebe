// Reading the models' key/value configurations (config_from_strings, token_config_from_strings):
// the keys in their canonical spelling and the parsers of their values. Errors are ConfigErrors
// that start with the context (e.g. "model configuration") and name the key and the value.
#pragma once

#include "core/tensor.hpp"

#include <cstdint>
#include <map>
#include <string>

namespace flt::models {

// A configuration key (config_to_strings name) whose value changes nothing for a configuration,
// and why: `why` names the kind or the setting that would read it ("only attention = exact
// reads it", "only with far_design = iid"). Both models' config_keys_without_effect return them.
struct KeyWithoutEffect {
  std::string key;
  std::string why;
};

class ConfigReader {
 public:
  // Keys with '-' are spelled with '_' (INI files write mlp-hidden for mlp_hidden); a key given in
  // both spellings is a ConfigError.
  ConfigReader(std::string context, const std::map<std::string, std::string>& given);

  const std::map<std::string, std::string>& values() const noexcept { return values_; }

  // A whole decimal integer (no blanks; no sign for the unsigned one); out of range is an error.
  Index index(const std::string& key, const std::string& value) const;
  int integer(const std::string& key, const std::string& value) const;
  std::uint64_t unsigned_integer(const std::string& key, const std::string& value) const;
  // A finite number (std::from_chars: the shortest round-trip text of config_to_strings reads
  // back exactly).
  double number(const std::string& key, const std::string& value) const;
  // true, 1, yes, on or false, 0, no, off.
  bool boolean(const std::string& key, const std::string& value) const;

  // Throws ConfigError("<context>: <message>").
  [[noreturn]] void fail(const std::string& message) const;

 private:
  template <class Int>
  Int parse_integer(const std::string& key, const std::string& value, const char* what) const;

  std::string context_;
  std::map<std::string, std::string> values_;
};

}  // namespace flt::models
