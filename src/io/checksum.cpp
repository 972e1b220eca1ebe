#include "io/checksum.hpp"

#include <zlib.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

namespace flt::io {
namespace {

std::string to_hex(std::uint64_t value, int digits) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(static_cast<std::size_t>(digits), '0');
  for (int i = digits - 1; i >= 0; --i) {
    out[static_cast<std::size_t>(i)] = kDigits[value & 0xF];
    value >>= 4;
  }
  return out;
}

}  // namespace

std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t size) noexcept {
  // zlib returns its initial value (0) for a null buffer, whatever `crc` is.
  if (size == 0) return crc;
  return static_cast<std::uint32_t>(crc32_z(crc, static_cast<const Bytef*>(data), size));
}

std::string hex32(std::uint32_t value) { return to_hex(value, 8); }
std::string hex64(std::uint64_t value) { return to_hex(value, 16); }

void Fnv1a64::update(const void* data, std::size_t size) noexcept {
  const auto* bytes = static_cast<const unsigned char*>(data);
  std::uint64_t h = hash_;
  for (std::size_t i = 0; i < size; ++i) {
    h ^= bytes[i];
    h *= 0x100000001B3ULL;
  }
  hash_ = h;
}

void Fnv1a64::update_u64(std::uint64_t value) noexcept {
  unsigned char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(value >> (8 * i));
  update(bytes, 8);
}

void Fnv1a64::update_f64(double value) noexcept {
  if (std::isnan(value)) value = std::numeric_limits<double>::quiet_NaN();
  if (value == 0.0) value = 0.0;  // -0.0 -> +0.0
  update_u64(std::bit_cast<std::uint64_t>(value));
}

void Fnv1a64::update_string(std::string_view text) noexcept {
  update_u64(text.size());
  update(text);
}

}  // namespace flt::io
