// Atomization energies from predicted total energies: E_atomization = E - sum_i E_free(Z_i), with
// QM9's free-atom energies (declared in predict.hpp; the table is io::qm9_free_atom_energy).

#include "pipeline/predict.hpp"

#include "core/error.hpp"
#include "io/units.hpp"

#include <algorithm>
#include <set>
#include <string>

namespace flt::pipeline {

std::vector<AtomizationOutput> atomization_outputs(const std::vector<models::TargetSpec>& targets,
                                                   std::span<const std::int32_t> model_elements) {
  std::vector<AtomizationOutput> outputs;
  for (std::size_t t = 0; t < targets.size(); ++t) {
    const auto& spec = targets[t];
    if (!io::qm9_free_atom_energy(spec.name, 1)) continue;  // not U0, U, H or G
    if (!io::is_known_unit(spec.unit) ||
        io::find_unit(spec.unit).dimension != io::Dimension::energy)
      continue;
    const bool every_element_has_reference =
        std::all_of(model_elements.begin(), model_elements.end(), [&](std::int32_t z) {
          return io::qm9_free_atom_energy(spec.name, z).has_value();
        });
    if (!every_element_has_reference) continue;
    outputs.push_back({t, spec.name + "_atom", spec.unit});
  }
  return outputs;
}

double atomization_energy(const AtomizationOutput& output, double total_energy,
                          std::span<const int> atomic_numbers) {
  const std::string property = output.name.substr(0, output.name.size() - std::string("_atom").size());
  // Sum in Hartree (the table's unit), convert once.
  double free_atoms_hartree = 0.0;
  for (int z : atomic_numbers) {
    const auto e = io::qm9_free_atom_energy(property, z);
    if (!e)
      throw InvalidArgument("no QM9 free-atom energy for element Z=" + std::to_string(z) + " (" +
                            output.name + " is defined for H, C, N, O and F only)");
    free_atoms_hartree += *e;
  }
  return total_energy - io::convert(free_atoms_hartree, "Hartree", output.unit);
}

std::vector<AtomizationOutput> Predictor::atomization_outputs() const {
  std::set<std::int32_t> elements;
  for (const auto& member : members_)
    elements.insert(member->normalisation().elements.begin(), member->normalisation().elements.end());
  const std::vector<std::int32_t> joined(elements.begin(), elements.end());
  return pipeline::atomization_outputs(targets(), joined);
}

}  // namespace flt::pipeline
