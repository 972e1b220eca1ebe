// RDKit interoperability of the public API (include/flt/rdkit.hpp): an RDKit molecule's conformer
// as an flt::Molecule. Hydrogen policy as the SDF reader's (src/chem/sdf_reader.cpp): implicit
// implicit hydrogens are made explicit with coordinates (also next to explicit ones).
#include "flt/rdkit.hpp"

#include <GraphMol/Conformer.h>
#include <GraphMol/MolOps.h>
#include <GraphMol/RWMol.h>

#include <memory>
#include <string>

namespace flt {

Molecule to_molecule(const RDKit::ROMol& mol, int conf_id, bool add_hydrogens) {
  if (mol.getNumAtoms() == 0) throw InvalidArgument("flt::to_molecule: the molecule has no atoms");
  if (mol.getNumConformers() == 0)
    throw InvalidArgument("flt::to_molecule: the molecule has no conformer (no coordinates); "
                          "embed one first, e.g. RDKit::DGeomHelpers::EmbedMolecule");
  std::string title;
  mol.getPropIfPresent("_Name", title);
  const auto name = [&] { return title.empty() ? std::string() : " ('" + title + "')"; };
  // Throws RDKit's ConformerException for an unknown id; turn it into our typed error.
  const RDKit::Conformer* conf = nullptr;
  try {
    conf = &mol.getConformer(conf_id);
  } catch (const std::exception&) {
    throw InvalidArgument("flt::to_molecule: molecule" + name() + " has no conformer with id " +
                          std::to_string(conf_id));
  }
  if (!conf->is3D() && mol.getNumAtoms() > 1)
    throw InvalidArgument("flt::to_molecule: conformer " + std::to_string(conf->getId()) +
                          " of molecule" + name() + " is 2-D; flt needs 3-D coordinates");

  unsigned explicit_h = 0, implicit_h = 0;
  for (const RDKit::Atom* atom : mol.atoms()) {
    if (atom->getAtomicNum() == 1) ++explicit_h;
    implicit_h += atom->getTotalNumHs(false);
  }
  const RDKit::ROMol* source = &mol;
  std::unique_ptr<RDKit::RWMol> with_h;
  // Also when some are explicit (polar hydrogens only): a partial molecule is another molecule.
  if (add_hydrogens && implicit_h > 0) {
    with_h = std::make_unique<RDKit::RWMol>(mol);
    // explicitOnly = false, addCoords = true: the new atoms get coordinates in every conformer
    // (conformer ids are kept by the copy).
    RDKit::MolOps::addHs(*with_h, false, true);
    source = with_h.get();
    conf = &with_h->getConformer(static_cast<int>(conf->getId()));
  }

  Molecule out;
  out.title = title;
  const unsigned n = source->getNumAtoms();
  out.atomic_numbers.reserve(n);
  out.positions.reserve(n);
  out.formal_charges.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    const RDKit::Atom* atom = source->getAtomWithIdx(i);
    out.atomic_numbers.push_back(atom->getAtomicNum());
    out.formal_charges.push_back(atom->getFormalCharge());
    const RDGeom::Point3D& p = conf->getAtomPos(i);
    out.positions.push_back({p.x, p.y, p.z});  // RDKit stores Angstrom
  }
  return out;
}

Prediction predict(const Model& model, const RDKit::ROMol& mol, int conf_id) {
  return model.predict(to_molecule(mol, conf_id));
}

}  // namespace flt
