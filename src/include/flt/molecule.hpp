// flt::Molecule: one molecule (one conformer) as plain arrays, the input of flt::Model::predict.
#pragma once

#include "export.hpp"

#include <array>
#include <string>
#include <vector>

namespace flt {

// One 3-D structure. Every atom, hydrogens included, is listed explicitly: the models are trained
// on all-atom structures (QM9), so a molecule without its hydrogens is a different molecule to
// them (flt/rdkit.hpp adds missing hydrogens for RDKit molecules).
struct Molecule {
  // Atomic number Z of each atom (1 = H, 6 = C, ...). The model must know every element
  // (Model::elements()); others are rejected, never guessed.
  std::vector<int> atomic_numbers;
  // Cartesian coordinates of each atom in Angstrom, same order as atomic_numbers. Only relative
  // positions matter: predictions do not change under translation or atom permutation.
  std::vector<std::array<double, 3>> positions;
  // Formal charge of each atom in units of the elementary charge e; empty means all zero.
  // Used only by models trained with a charge embedding.
  std::vector<int> formal_charges;
  // A name for messages and results (e.g. the SDF title line); optional.
  std::string title;

  // Number of atoms.
  std::size_t size() const noexcept { return atomic_numbers.size(); }
};

}  // namespace flt
