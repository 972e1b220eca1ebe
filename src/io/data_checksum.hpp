// A fingerprint of a training set for model metadata and --resume ("which data was this model
// trained on?"), independent of the host and of float formatting. Not cryptographic: it detects a
// different or changed data set, it does not authenticate one.
//
// Per molecule, a canonical little-endian encoding of its content:
//   u64 atom count, then per atom: u64 atomic number, f64 x, y, z (Angstrom),
//   then u64 label count and the f64 labels (training units; NaN for missing).
//
// training_data_checksum (the checksum flt train writes, "fnv1a64-mol:<16 hex digits>"): the 64-bit
// FNV-1a (io/checksum.hpp) of each molecule's encoding alone (molecule_digest), then the FNV-1a
// of u64 count followed by those digests as u64, in the order given (the training split's order).
// Each molecule's digest can be taken where its record is read and the coordinates dropped, so a
// process that holds only some molecules' coordinates computes the same checksum.
//
// DataFingerprint ("fnv1a64:<16 hex digits>"): the earlier definition, one FNV-1a over the
// concatenated encodings followed by u64 count. flt train wrote it until the per-molecule form
// replaced it; it remains to recognise the checkpoints of those runs.
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
