// Internal: the per-format record parsers behind MoleculeReader. Each parses one stream (one
// file, one archive member) record by record. Not part of the public API.
#pragma once

#include "chem/reader.hpp"

#include <istream>
#include <memory>
#include <optional>
#include <string>

namespace flt::chem::detail {

class RecordParser {
 public:
  virtual ~RecordParser() = default;
  // Next record, nullopt at the end of the stream; throws InputError for a bad record after
  // moving past it, so the next call continues with the following record.
  virtual std::optional<PointSet> next() = 0;
  // Records seen so far (good and bad).
  virtual std::size_t records() const noexcept = 0;
  // What is known of the record behind the InputError next() threw last (source and record are
  // filled in by the reader when a parser leaves them empty).
  virtual RejectedRecord rejected() const { return {}; }
};

std::unique_ptr<RecordParser> make_sdf_parser(std::istream& in, std::string source,
                                              const ReadOptions& options);
std::unique_ptr<RecordParser> make_pdb_parser(std::istream& in, std::string source,
                                              const ReadOptions& options);
// `flavour` is Format::xyz (recognise each record), Format::extxyz or Format::qm9.
std::unique_ptr<RecordParser> make_xyz_parser(std::istream& in, std::string source,
                                              Format flavour, const ReadOptions& options);
// `layout` Format::csv: a CSV with a SMILES column (Chemprop's layout); Format::smi: a SMILES file
// (fields separated by blanks, header line optional). Conformers from chem/conformer.hpp.
std::unique_ptr<RecordParser> make_smiles_parser(std::istream& in, std::string source, Format layout,
                                                 const ReadOptions& options);

}  // namespace flt::chem::detail
