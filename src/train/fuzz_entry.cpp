#include "train/fuzz_entry.hpp"

#include "core/error.hpp"
#include "train/csv.hpp"
#include "train/ini.hpp"
#include "train/json.hpp"
#include "train/model_file.hpp"

#include <cstdlib>
#include <string_view>

namespace {

std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace

extern "C" int flt_fuzz_model_file(const std::uint8_t* data, std::size_t size) {
  try {
    const auto file = flt::train::parse_model_file(as_text(data, size), "<fuzz>");
    // Whatever parses must serialise and parse back to the same content.
    const auto again = flt::train::parse_model_file(flt::train::serialize_model_file(file), "<fuzz>");
    if (!(again == file)) std::abort();
  } catch (const flt::ModelFileError&) {
  }
  return 0;
}

extern "C" int flt_fuzz_json(const std::uint8_t* data, std::size_t size) {
  try {
    const auto value = flt::train::Json::parse(as_text(data, size));
    const std::string text = value.dump();
    if (!(flt::train::Json::parse(text) == value) || flt::train::Json::parse(text).dump() != text) std::abort();
  } catch (const flt::train::JsonError&) {
  }
  return 0;
}

extern "C" int flt_fuzz_ini(const std::uint8_t* data, std::size_t size) {
  try {
    const auto ini = flt::train::IniFile::parse(as_text(data, size), "<fuzz>");
    const auto again = flt::train::IniFile::parse(ini.dump(), "<fuzz>");
    if (again.dump() != ini.dump()) std::abort();
  } catch (const flt::ConfigError&) {
  }
  return 0;
}

extern "C" int flt_fuzz_csv(const std::uint8_t* data, std::size_t size) {
  try {
    (void)flt::train::parse_csv(as_text(data, size), "<fuzz>");
  } catch (const flt::InputError&) {
  }
  return 0;
}
