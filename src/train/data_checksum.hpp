// A fingerprint of a training set for model metadata ("which data was this model trained on?"):
// 64-bit FNV-1a (train/checksum.hpp) over a canonical little-endian encoding, independent of the
// host and of float formatting. Per molecule, in the order added:
//   u64 atom count, then per atom: u64 atomic number, f64 x, y, z (Angstrom),
//   then u64 label count and the f64 labels (training units; NaN for missing).
// The caller adds molecules in dataset order (e.g. the sorted training indices). Not
// cryptographic: it detects a different or changed data set, it does not authenticate one.
#pragma once

#include "train/checksum.hpp"

#include <cstdint>
#include <span>
#include <string>

namespace flt::train {

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

}  // namespace flt::train
