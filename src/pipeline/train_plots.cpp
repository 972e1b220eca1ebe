#include "pipeline/train_plots.hpp"

#include "io/units.hpp"

namespace flt::pipeline {

std::optional<train::ParityReference> parity_reference(const Dataset& data, std::span<const std::size_t> indices,
                                                       std::size_t t, const models::Normalisation& normalisation) {
  const DatasetTarget& target = data.targets.at(t);
  // QM9's free atoms: the atomization energy, in the target's training unit.
  if (io::qm9_free_atom_energy(target.name, 1)) {
    train::ParityReference ref;
    ref.name = target.name + "_atom (atomization energy)";
    bool complete = true;
    for (std::size_t i : indices) {
      double hartree = 0.0;
      for (const auto z : data.molecules[i].atomic_numbers) {
        const auto e = io::qm9_free_atom_energy(target.name, z);
        if (!e) {
          complete = false;
          break;
        }
        hartree += *e;
      }
      if (!complete) break;
      ref.values.push_back(io::convert(hartree, "Hartree", target.unit));
    }
    if (complete) return ref;
  }
  // The model's per-element references (zero for intensive targets and without --fit-reference).
  const auto& table = normalisation.reference;
  if (!target.extensive || static_cast<std::size_t>(table.rows()) <= t || table.row(static_cast<Index>(t)).isZero(0.0))
    return std::nullopt;
  train::ParityReference ref;
  ref.name = target.name + " - sum of per-element references";
  for (std::size_t i : indices) {
    double sum = 0.0;
    for (const auto z : data.molecules[i].atomic_numbers)
      if (z >= 0 && z < table.cols()) sum += table(static_cast<Index>(t), static_cast<Index>(z));
    ref.values.push_back(sum);
  }
  return ref;
}

}  // namespace flt::pipeline
