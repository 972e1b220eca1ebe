#include "io/data_checksum.hpp"

#include "core/error.hpp"

namespace flt::io {
namespace {

template <class C>
void add(Fnv1a64& h, std::span<const int> z, std::span<const C> xyz, std::span<const double> labels) {
  require(xyz.size() == 3 * z.size(), "DataFingerprint::add_molecule: need 3 coordinates per atom");
  h.update_u64(z.size());
  for (std::size_t i = 0; i < z.size(); ++i) {
    h.update_i64(z[i]);
    for (int k = 0; k < 3; ++k) h.update_f64(static_cast<double>(xyz[3 * i + static_cast<std::size_t>(k)]));
  }
  h.update_u64(labels.size());
  for (const double v : labels) h.update_f64(v);
}

}  // namespace

void DataFingerprint::add_molecule(std::span<const int> z, std::span<const double> xyz, std::span<const double> labels) {
  add(hash_, z, xyz, labels);
  ++count_;
}

void DataFingerprint::add_molecule(std::span<const int> z, std::span<const float> xyz, std::span<const double> labels) {
  add(hash_, z, xyz, labels);
  ++count_;
}

std::uint64_t DataFingerprint::digest() const noexcept {
  Fnv1a64 h = hash_;
  h.update_u64(count_);
  return h.digest();
}

std::uint64_t molecule_digest(std::span<const int> z, std::span<const double> xyz, std::span<const double> labels) {
  Fnv1a64 h;
  add(h, z, xyz, labels);
  return h.digest();
}

std::string training_data_checksum(std::span<const std::uint64_t> molecule_digests) {
  Fnv1a64 h;
  h.update_u64(molecule_digests.size());
  for (const std::uint64_t d : molecule_digests) h.update_u64(d);
  return std::string(kTrainingDataChecksumPrefix) + hex64(h.digest());
}

std::string DataFingerprint::hex() const { return "fnv1a64:" + hex64(digest()); }

}  // namespace flt::io
