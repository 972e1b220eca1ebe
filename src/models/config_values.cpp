// Parsers of the models' configuration values. See config_values.hpp.
#include "models/config_values.hpp"

#include "core/error.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace flt::models {

ConfigReader::ConfigReader(std::string context, const std::map<std::string, std::string>& given)
    : context_(std::move(context)) {
  for (const auto& [key, value] : given) {
    std::string k = key;
    std::replace(k.begin(), k.end(), '-', '_');
    if (!values_.emplace(k, value).second) fail("key '" + k + "' given twice (with - and _)");
  }
}

void ConfigReader::fail(const std::string& message) const { throw ConfigError(context_ + ": " + message); }

template <class Int>
Int ConfigReader::parse_integer(const std::string& key, const std::string& value, const char* what) const {
  Int out{};
  const auto r = std::from_chars(value.data(), value.data() + value.size(), out);
  if (value.empty() || r.ec != std::errc() || r.ptr != value.data() + value.size())
    fail(key + ": '" + value + "' is not " + what);
  return out;
}

Index ConfigReader::index(const std::string& key, const std::string& value) const {
  return parse_integer<Index>(key, value, "an integer");
}

int ConfigReader::integer(const std::string& key, const std::string& value) const {
  return parse_integer<int>(key, value, "an integer");
}

std::uint64_t ConfigReader::unsigned_integer(const std::string& key, const std::string& value) const {
  return parse_integer<std::uint64_t>(key, value, "an unsigned integer");
}

double ConfigReader::number(const std::string& key, const std::string& value) const {
  double out = 0;
  const auto r = std::from_chars(value.data(), value.data() + value.size(), out);
  if (value.empty() || r.ec != std::errc() || r.ptr != value.data() + value.size() || !std::isfinite(out))
    fail(key + ": '" + value + "' is not a finite number");
  return out;
}

bool ConfigReader::boolean(const std::string& key, const std::string& value) const {
  if (value == "true" || value == "1" || value == "yes" || value == "on") return true;
  if (value == "false" || value == "0" || value == "no" || value == "off") return false;
  fail(key + ": '" + value + "' is not a boolean (true, false, yes, no, on, off, 1, 0)");
}

}  // namespace flt::models
