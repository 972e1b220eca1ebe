// Molecule file formats and how flt tells them apart.
#pragma once

#include <string>
#include <string_view>

namespace flt::chem {

enum class Format {
  unknown,  // "decide from the file name"
  sdf,      // SDF / MOL, V2000 and V3000 (.sdf .sd .mol .mdl), read through RDKit
  xyz,      // XYZ; on reading, each record is recognised as plain, extended (ASE) or QM9
  extxyz,   // extended XYZ (ASE convention); written with Properties=species:S:1:pos:R:3...
  qm9,      // QM9 dsgdb9nsd_*.xyz (15 properties in the comment line), reading only
  pdb,      // Protein Data Bank (.pdb .ent), read through RDKit; reading only
  csv,      // writing; reading: a CSV with a SMILES column (Chemprop layout), conformers generated
  smi,      // SMILES file (.smi .smiles .ism): one molecule per line, "SMILES [title]" separated by
            // blanks, optionally a header line naming the columns; conformers generated; reading only
};

// "sdf", "mol", "xyz", "extxyz", "qm9", "pdb", "csv", "smi" (also "smiles") -> Format; throws
// flt::InvalidArgument otherwise.
Format format_from_name(std::string_view name);
std::string_view format_name(Format format);

// The format of `path` from its extension, looking through a trailing ".gz" ("a.sdf.gz" -> sdf).
// Format::unknown when the extension is not one flt reads or writes.
Format format_from_path(std::string_view path);

// True for the names of the archives the readers open (case-insensitive): ".tar", ".tar.gz",
// ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".zip", ".7z",
// ".cpio".
bool is_archive(std::string_view path);

}  // namespace flt::chem
