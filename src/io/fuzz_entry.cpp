#include "io/fuzz_entry.hpp"

#include "core/error.hpp"
#include "io/csv.hpp"
#include "io/ini.hpp"
#include "io/json.hpp"
#include "io/model_file.hpp"

#include <cstdlib>
#include <string_view>

namespace {

std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace

extern "C" int flt_fuzz_model_file(const std::uint8_t* data, std::size_t size) {
  try {
    const auto file = flt::io::parse_model_file(as_text(data, size), "<fuzz>");
    // Whatever parses must serialise and parse back to the same content.
    const auto again = flt::io::parse_model_file(flt::io::serialize_model_file(file), "<fuzz>");
    if (!(again == file)) std::abort();
  } catch (const flt::ModelFileError&) {
  }
  return 0;
}

extern "C" int flt_fuzz_json(const std::uint8_t* data, std::size_t size) {
  try {
    const auto value = flt::io::parse_json(as_text(data, size));
    const std::string text = flt::io::dump_json(value);
    const auto again = flt::io::parse_json(text);
    if (!(again == value) || flt::io::dump_json(again) != text) std::abort();
  } catch (const flt::io::JsonError&) {
  }
  return 0;
}

extern "C" int flt_fuzz_ini(const std::uint8_t* data, std::size_t size) {
  try {
    const auto ini = flt::io::IniFile::parse(as_text(data, size), "<fuzz>");
    const auto again = flt::io::IniFile::parse(ini.dump(), "<fuzz>");
    if (again.dump() != ini.dump()) std::abort();
  } catch (const flt::ConfigError&) {
  }
  return 0;
}

extern "C" int flt_fuzz_csv(const std::uint8_t* data, std::size_t size) {
  try {
    (void)flt::io::parse_csv(as_text(data, size), "<fuzz>");
  } catch (const flt::InputError&) {
  }
  return 0;
}
