// A fingerprint of a training set for model metadata and --resume, independent of the host and
// of float formatting; not cryptographic (it detects changed data, it does not authenticate it).
//
// Per molecule, a canonical little-endian encoding, hashed with FNV-1a (io/checksum.hpp):
//   u64 atom count, per atom u64 Z and f64 x, y, z (Angstrom), u64 label count, f64 labels.
// training_data_checksum ("fnv1a64-mol:<16 hex>"): FNV-1a of u64 count, then the molecules'
// digests (molecule_digest) as u64 in the order given. DataFingerprint ("fnv1a64:<16 hex>"):
// the earlier whole-set form, kept to recognise old checkpoints. docs/model-format.md,
// "Data fingerprint".
#pragma once

#include "io/checksum.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace flt::io {

// FNV-1a of one molecule's encoding. coordinates: 3 * atomic_numbers.size() values, x y z per atom.
std::uint64_t molecule_digest(std::span<const int> atomic_numbers, std::span<const double> coordinates,
                              std::span<const double> labels);
// "fnv1a64-mol:<16 hex digits>" from the molecules' digests in order.
std::string training_data_checksum(std::span<const std::uint64_t> molecule_digests);
// The prefix of training_data_checksum's values.
inline constexpr std::string_view kTrainingDataChecksumPrefix = "fnv1a64-mol:";

class DataFingerprint {
 public:
  // coordinates: 3 * atomic_numbers.size() values, x y z per atom.
  void add_molecule(std::span<const int> atomic_numbers, std::span<const double> coordinates,
                    std::span<const double> labels);
  void add_molecule(std::span<const int> atomic_numbers, std::span<const float> coordinates,
                    std::span<const double> labels);
  std::size_t molecules() const noexcept { return count_; }
  std::uint64_t digest() const noexcept;  // includes the molecule count
  std::string hex() const;                // "fnv1a64:<16 hex digits>"

 private:
  Fnv1a64 hash_;
  std::size_t count_ = 0;
};

}  // namespace flt::io
