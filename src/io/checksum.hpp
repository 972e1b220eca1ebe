// Checksums: CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, init and final xor 0xFFFFFFFF;
// zlib's crc32_z, the same value as Python's zlib.crc32 and binascii.crc32) for model-file
// integrity, and a 64-bit FNV-1a hash for dataset fingerprints (implemented here). Neither is
// cryptographic: they detect corruption and accidental mismatches, not tampering.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace flt::io {

// Incremental CRC-32: crc32_update(crc32_update(0, a), b) == crc32(a + b). Start with 0.
std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t size) noexcept;
inline std::uint32_t crc32(std::string_view bytes) noexcept {
  return crc32_update(0, bytes.data(), bytes.size());
}

// 8 lowercase hex digits, e.g. "cbf43926" for crc32("123456789").
std::string hex32(std::uint32_t value);
// 16 lowercase hex digits.
std::string hex64(std::uint64_t value);

// 64-bit FNV-1a over a byte stream, with helpers that feed values in a fixed little-endian
// encoding so the digest does not depend on the host. hash = (hash ^ byte) * 0x100000001B3,
// starting from the offset basis 0xCBF29CE484222325.
class Fnv1a64 {
 public:
  void update(const void* data, std::size_t size) noexcept;
  void update(std::string_view bytes) noexcept { update(bytes.data(), bytes.size()); }
  void update_u64(std::uint64_t value) noexcept;          // 8 bytes little-endian
  void update_i64(std::int64_t value) noexcept { update_u64(static_cast<std::uint64_t>(value)); }
  void update_f64(double value) noexcept;                 // IEEE-754 bits, little-endian; -0.0 and
                                                          // all NaNs normalised (0.0, one NaN)
  void update_string(std::string_view text) noexcept;     // length (u64) then bytes
  std::uint64_t digest() const noexcept { return hash_; }
  std::string hex() const { return hex64(hash_); }

 private:
  std::uint64_t hash_ = 0xCBF29CE484222325ULL;
};

}  // namespace flt::io
