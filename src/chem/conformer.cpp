#include "chem/conformer.hpp"

#include "chem/rdkit_log.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

#include <GraphMol/DistGeomHelpers/Embedder.h>
#include <GraphMol/ForceFieldHelpers/MMFF/MMFF.h>
#include <GraphMol/MolOps.h>
#include <GraphMol/RWMol.h>

#include <algorithm>

#include <vector>

namespace flt::chem {
namespace {

std::string error_text(const std::vector<detail::RdkitMessage>& messages) {
  std::string out;
  for (const auto& m : messages) {
    if (m.level != LogLevel::error && m.level != LogLevel::warning) continue;
    std::string text = m.text;
    for (const char* prefix : {"ERROR: ", "WARNING: "}) {
      if (text.rfind(prefix, 0) == 0) text.erase(0, std::string(prefix).size());
    }
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out;
}

// One EmbedMolecule call with RDKit's messages captured; the conformer id (-1 on failure).
int embed(RDKit::RWMol& mol, const RDKit::DGeomHelpers::EmbedParameters& params,
          std::vector<detail::RdkitMessage>& messages) {
  detail::RdkitLogCapture capture(messages);
  try {
    return RDKit::DGeomHelpers::EmbedMolecule(mol, params);
  } catch (const std::exception& e) {
    messages.push_back({LogLevel::error, e.what()});
    return -1;
  }
}

// ETKDG embeds the fragments of a disconnected molecule (a salt, a hydrate, a mixture) one by
// one, each about the origin, so they overlap. Lays them out along x instead, in fragment order:
// each fragment's centroid a bounding-sphere radius plus kFragmentGap beyond the previous one's,
// so no two atoms of different fragments are closer than kFragmentGap. Returns the fragment count.
constexpr double kFragmentGap = 3.0;  // Angstrom

int separate_fragments(RDKit::RWMol& mol, int conf_id) {
  std::vector<int> fragment_of;
  const auto count = static_cast<int>(RDKit::MolOps::getMolFrags(mol, fragment_of));
  if (count < 2) return count;
  RDKit::Conformer& conf = mol.getConformer(conf_id);
  std::vector<RDGeom::Point3D> centre(static_cast<std::size_t>(count));
  std::vector<int> atoms(static_cast<std::size_t>(count), 0);
  std::vector<double> radius(static_cast<std::size_t>(count), 0.0);
  for (unsigned i = 0; i < mol.getNumAtoms(); ++i) {
    const auto f = static_cast<std::size_t>(fragment_of[i]);
    centre[f] += conf.getAtomPos(i);
    ++atoms[f];
  }
  for (int f = 0; f < count; ++f) centre[static_cast<std::size_t>(f)] /= atoms[static_cast<std::size_t>(f)];
  for (unsigned i = 0; i < mol.getNumAtoms(); ++i) {
    const auto f = static_cast<std::size_t>(fragment_of[i]);
    radius[f] = std::max(radius[f], (conf.getAtomPos(i) - centre[f]).length());
  }
  std::vector<double> x(static_cast<std::size_t>(count), 0.0);
  for (std::size_t f = 1; f < x.size(); ++f) x[f] = x[f - 1] + radius[f - 1] + kFragmentGap + radius[f];
  for (unsigned i = 0; i < mol.getNumAtoms(); ++i) {
    const auto f = static_cast<std::size_t>(fragment_of[i]);
    const RDGeom::Point3D shift = RDGeom::Point3D(x[f], 0.0, 0.0) - centre[f] + centre[0];
    conf.setAtomPos(i, conf.getAtomPos(i) + shift);
  }
  return count;
}

}  // namespace

Optimize optimize_from_name(const std::string& name) {
  if (name == "none") return Optimize::none;
  if (name == "mmff" || name == "mmff94") return Optimize::mmff;
  throw InvalidArgument("conformer optimisation must be none or mmff, not '" + name + "'");
}

std::optional<std::string> generate_conformer(RDKit::RWMol& mol, const ConformerOptions& options,
                                              const std::string& context, std::vector<ConformerNote>* notes) {
  const std::string where = context.empty() ? std::string() : context + ": ";
  auto note = [&](LogLevel level, const std::string& text) {
    if (notes != nullptr) {
      notes->push_back({level, where + text});
    } else {
      log(level, where + text);
    }
  };
  if (options.max_attempts < 0) throw InvalidArgument("conformer attempts must be >= 0");
  RDKit::DGeomHelpers::EmbedParameters params = RDKit::DGeomHelpers::ETKDGv3;
  params.randomSeed = static_cast<int>(options.seed & 0x7fffffffU);
  params.maxIterations = static_cast<unsigned>(options.max_attempts);
  std::vector<detail::RdkitMessage> messages;
  int conf_id = embed(mol, params, messages);
  if (conf_id < 0 && options.random_coords_fallback) {
    params.useRandomCoords = true;
    std::vector<detail::RdkitMessage> retry;
    conf_id = embed(mol, params, retry);
    if (conf_id >= 0) {
      note(LogLevel::info, "ETKDGv3 needed random starting coordinates for this molecule");
    } else {
      messages.insert(messages.end(), retry.begin(), retry.end());
    }
  }
  if (conf_id < 0) {
    const std::string why = error_text(messages);
    return "ETKDGv3 could not embed the molecule" +
           std::string(options.random_coords_fallback ? " (also from random coordinates)" : "") +
           (why.empty() ? std::string() : ": " + why);
  }
  if (const int fragments = separate_fragments(mol, conf_id); fragments > 1) {
    note(LogLevel::info, std::to_string(fragments) + " fragments embedded apart and laid out " +
                             std::to_string(static_cast<int>(kFragmentGap)) + " A apart along x");
  }
  if (options.optimize == Optimize::mmff) {
    std::vector<detail::RdkitMessage> mmff_messages;
    std::pair<int, double> result{-1, 0.0};
    {
      detail::RdkitLogCapture capture(mmff_messages);
      try {
        result = RDKit::MMFF::MMFFOptimizeMolecule(mol, options.mmff_max_iterations, "MMFF94",
                                                   10.0, conf_id);
      } catch (const std::exception& e) {
        mmff_messages.push_back({LogLevel::error, e.what()});
      }
    }
    if (result.first == -1) {
      const std::string why = error_text(mmff_messages);
      note(LogLevel::warning, "MMFF94 clean-up not possible (no MMFF94 parameters for the molecule" +
                                  (why.empty() ? std::string() : ": " + why) + "); the ETKDG geometry is kept");
    } else if (result.first == 1) {
      note(LogLevel::warning, "MMFF94 clean-up did not converge in " + std::to_string(options.mmff_max_iterations) +
                                  " iterations; the partly minimised geometry is kept");
    }
  }
  return std::nullopt;
}

}  // namespace flt::chem
