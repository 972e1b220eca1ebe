// Streaming molecule readers: SDF/MOL (V2000, V3000; through RDKit's ForwardSDMolSupplier), XYZ,
// extended XYZ (ASE) and QM9 (original dsgdb9nsd_*.xyz and the shared subset's variant) from a
// file, a gzip file, a directory of files, an archive (tar, compressed tar, zip, 7-Zip, cpio; see
// chem::is_archive), or standard input ("-"). Memory does not depend on the input size: one
// record is parsed at a time.
//
// MoleculeReader::open(inputs, options), then next() until nullopt; next() throws InputError for
// one bad record and continues after it on the next call. read_molecules(inputs, options, policy,
// callback) applies the error policy for you. Examples and options: docs/chem-io.md, "Public API".
#pragma once

#include "chem/conformer.hpp"
#include "chem/format.hpp"
#include "chem/point_set.hpp"

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace flt::chem {

// What to do with an SDF/MOL record that has no 3-D coordinates: RDKit reads it as 2-D (the
// header's "2D" flag, or no flag and every z = 0), or it has more than one atom and every z = 0.
// A single atom is always 3-D; XYZ records are 3-D by definition.
enum class Missing3D {
  error,     // the record is bad (default): InputError "no 3-D coordinates"
  generate,  // generate a conformer (chem/conformer.hpp: ETKDGv3, random-coordinate fallback,
             // ReadOptions::seed, conformer_attempts, optional MMFF94 clean-up)
  accept,    // keep the flat coordinates; PointSet::coordinates_3d = false (inspection/conversion)
};

// PDB: what to do with waters and with other HETATM groups (ligands, ions, cofactors).
enum class PdbPart {
  keep,  // read them as atoms of the structure
  drop,  // leave them out (counted in the log)
  fail,  // the record is bad (InputError naming the first such atom)
};

// "keep", "drop", "fail" -> PdbPart; throws flt::InvalidArgument otherwise.
PdbPart pdb_part_from_name(const std::string& name);

// Extended XYZ: what to do with a periodic record (a `pbc` with a T, or a `Lattice` without `pbc`,
// which ASE reads as periodic in all three directions). The models treat every structure as
// isolated: no periodic images.
enum class Periodic {
  error,     // the record is bad (default): InputError naming pbc / Lattice and the option
  isolated,  // read it as an isolated structure, the cell ignored (a warning once per file); the
             // Lattice and pbc keys stay properties, so the writers pass them through
};

// "error", "isolated" -> Periodic; throws flt::InvalidArgument otherwise.
Periodic periodic_from_name(const std::string& name);

// Two atoms closer than this (Angstrom) make a record bad by default: no chemistry puts nuclei
// that close. The one definition of the default: the readers', the programs' --min-distance and,
// checked at compile time in src/api, the public flt::kDefaultMinDistance (whose header cannot
// include this one).
inline constexpr double kDefaultMinDistance = 0.1;

struct ReadOptions {
  // Format of every input; Format::unknown = from each file's extension (also inside directories
  // and archives). Standard input needs an explicit format. Format::xyz recognises plain,
  // extended and QM9 records by their comment line; extxyz and qm9 insist on that flavour.
  Format format = Format::unknown;
  // SDF/MOL: a record with implicit hydrogens gets them as atoms with 3-D coordinates (RDKit
  // AddHs(addCoords=true)); logged at info level, or as a warning when the record had some
  // explicit hydrogens (polar hydrogens only, as docking tools write). Explicit ones are kept.
  // PDB: only a structure without any hydrogen gets them (PDB files carry no bond orders or
  // charges, so RDKit's implicit counts next to explicit hydrogens are not to be trusted).
  bool add_hydrogens = true;
  Missing3D missing_3d = Missing3D::error;
  std::uint32_t seed = 42;  // ETKDG random seed (Missing3D::generate, SMILES)
  // ETKDG attempts per try (ConformerOptions::max_attempts; 0 = RDKit's bound, 10 x atoms).
  int conformer_attempts = 0;
  Optimize optimize = Optimize::none;  // force-field clean-up of generated conformers
  // SMILES CSV (Format::csv): the column holding the SMILES; "" = the column named "smiles" in
  // any case (Chemprop's layout). Every other column is a property of the record; a header
  // "name [unit]" gives the property "name" with that unit.
  std::string smiles_column;
  // SDF/MOL: RDKit sanitization (valence checks, aromaticity). RDKit's default; off accepts
  // records such as 5-valent carbon.
  bool sanitize = true;
  // Two atoms closer than this (Angstrom) make the record bad; 0 disables the check.
  double min_distance = kDefaultMinDistance;
  // PDB: waters are dropped and other HETATM groups kept by default; of alternate locations only
  // the blank one and the first ID in each record are read. Hydrogens: add_hydrogens above (only
  // when the structure has none).
  PdbPart pdb_water = PdbPart::drop;
  PdbPart pdb_hetero = PdbPart::keep;
  Periodic periodic = Periodic::error;
  // Keep the RDKit molecule in PointSet::molecule (the SDF writer needs it to write bonds).
  bool keep_molecule = true;
};

// How far a reader is through its inputs, for progress bars: bytes of the input files consumed
// (compressed bytes for .gz and compressed archives) against their total size on disk.
struct ReadProgress {
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_total = 0;  // 0: unknown (standard input or a stream)
  std::size_t records = 0;        // records delivered or rejected so far
};

// The conformer settings of `options` (seed, attempts, clean-up; random-coordinate fallback on).
ConformerOptions conformer_options(const ReadOptions& options);

// What the reader kept of a record it rejected (the one behind the InputError just thrown), so
// that an output can keep the record in place, marked with the reason.
struct RejectedRecord {
  // source and record always; title and properties when the reader got that far (a SMILES row's
  // other columns, an SD record's tags when RDKit parsed it).
  PointSet partial;
  Format format = Format::unknown;  // format of `text`
  // The record as the input spelled it: for SDF its lines up to and including "$$$$", for SMILES
  // CSV the row; empty when not available (other formats, or a record over 16 MiB).
  std::string text;
};

class MoleculeReader {
 public:
  // Opens inputs in order: files, directories (their readable files sorted by name, not
  // recursive), archives, "-" for standard input. Throws flt::IoError for a missing or unreadable
  // input and flt::InvalidArgument for an unknown format; nothing is read yet.
  static std::unique_ptr<MoleculeReader> open(const std::vector<std::string>& inputs,
                                              const ReadOptions& options = {});
  static std::unique_ptr<MoleculeReader> open(const std::string& input,
                                              const ReadOptions& options = {});
  // Reads from a stream the caller owns (must outlive the reader); `name` is used in errors.
  // `options.format` must be given (not Format::unknown).
  static std::unique_ptr<MoleculeReader> from_stream(std::istream& stream, std::string name,
                                                     const ReadOptions& options);

  ~MoleculeReader();
  MoleculeReader(const MoleculeReader&) = delete;
  MoleculeReader& operator=(const MoleculeReader&) = delete;

  // The next record as a point set, or nullopt after the last record of the last input.
  // Throws flt::InputError (file, 1-based record, reason) for a bad record; the reader stays
  // usable and the following call continues with the next record. Throws flt::IoError when an
  // input cannot be opened or read (the reader then moves on to the next input).
  std::optional<PointSet> next();

  // Number of records delivered or rejected so far (across all inputs).
  std::size_t records_seen() const noexcept;
  // Bytes consumed of the inputs so far and their total size (see ReadProgress).
  ReadProgress progress() const;

  // After next() threw InputError for a record (record() > 0): what is known of that record.
  // Valid until the next call of next().
  const RejectedRecord& last_rejected() const noexcept;

  class Impl;

 private:
  explicit MoleculeReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

enum class ErrorPolicy {
  skip,  // log each bad record, carry on, report them in ReadSummary (default)
  fail,  // rethrow the first InputError
};

struct SkippedRecord {
  std::string file;
  std::size_t record = 0;  // 0: the whole file (e.g. it could not be opened)
  std::string reason;
};

struct ReadSummary {
  std::size_t read = 0;                // point sets handed to the callback
  std::vector<SkippedRecord> skipped;  // in input order
  bool ok() const noexcept { return skipped.empty(); }
  // "read 120 of 122 records, skipped 2: a.sdf record 7: ...; b.xyz record 1: ..." (problems of
  // a file as a whole, record 0, are listed but are no records).
  std::string describe() const;
  // The skipped records and files: "a.sdf record 7: ...; b.xyz record 1: ..." (at most 10 listed).
  std::string skipped_list() const;
};

// Reads every record of `inputs`, handing each point set to `sink`. With ErrorPolicy::skip a bad
// record (InputError) or an unreadable input (IoError) is logged as a warning and listed in the
// summary; with ErrorPolicy::fail the first one is rethrown. Exceptions thrown by `sink` pass
// through. `on_progress`, if set, is called after every record (e.g. to draw a progress bar).
ReadSummary read_molecules(const std::vector<std::string>& inputs, const ReadOptions& options,
                           ErrorPolicy policy, const std::function<void(PointSet&&)>& sink,
                           const std::function<void(const ReadProgress&)>& on_progress = {});

}  // namespace flt::chem
