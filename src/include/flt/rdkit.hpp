// RDKit interoperability: predict an RDKit molecule (one of its conformers) with an flt::Model.
// Kept apart from flt/flt.hpp so that programs which do not use RDKit need neither its headers nor
// its libraries: this header needs RDKit's include directory, which the CMake target flt::rdkit
// (find_package(flt COMPONENTS rdkit)) or `pkg-config flt-rdkit` provides; flt::flt and flt.pc
// do not.
//
//   std::unique_ptr<RDKit::ROMol> mol(RDKit::MolFileToMol("ligand.mol", true, false));
//   flt::Prediction p = flt::predict(model, *mol);             // default conformer
//   flt::Prediction q = flt::predict(model, *mol, 3);          // conformer with id 3
#pragma once

#include "export.hpp"
#include "model.hpp"
#include "molecule.hpp"

#if __has_include(<GraphMol/ROMol.h>)
#include <GraphMol/ROMol.h>
#else
// Without RDKit's include directory the compiler would only say that GraphMol/ROMol.h is missing;
// name the target that provides it instead, and declare ROMol so that this is the only error.
#error "flt/rdkit.hpp needs RDKit headers: link flt::rdkit (find_package(flt COMPONENTS rdkit)) or use pkg-config flt-rdkit"
namespace RDKit {
class ROMol;
}  // namespace RDKit
#endif

namespace flt {

// The atoms (atomic numbers, formal charges) and the coordinates of conformer `conf_id` (-1 = the
// default conformer) of `mol` as an flt::Molecule; positions in Angstrom as RDKit stores them;
// title = the "_Name" property when set. When `mol` has implicit hydrogens (all, or some next to
// explicit ones) and add_hydrogens is true, they are added as atoms with coordinates (RDKit AddHs
// with addCoords), as the SDF reader does. Throws flt::InvalidArgument when `mol` has no atoms, no conformer or no conformer
// `conf_id`, or a 2-D conformer.
FLT_API Molecule to_molecule(const RDKit::ROMol& mol, int conf_id = -1, bool add_hydrogens = true);

// model.predict(to_molecule(mol, conf_id)): values in the unit of each target
// (model.targets()[t].unit). Throws flt::InvalidArgument as to_molecule and Model::predict do.
// Thread-safe.
FLT_API Prediction predict(const Model& model, const RDKit::ROMol& mol, int conf_id = -1);

}  // namespace flt
