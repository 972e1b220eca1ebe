// Molecule writers: annotated SDF, CSV and extended XYZ. Every writer writes to a temporary file
// beside the target and renames it over the target in close(), so a crash or an exception never
// leaves a half-written output; "-" writes to standard output (the caller asked for it).
//
//   auto writer = flt::chem::MoleculeWriter::open("out.sdf");      // format from the name
//   writer->write(points, {{"U0", -40.47, "Hartree"}});             // any number of times
//   writer->close();                                                // flush + rename; required
#pragma once

#include "chem/format.hpp"
#include "chem/point_set.hpp"
#include "chem/reader.hpp"
#include "io/atomic_file.hpp"

#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace flt::chem {

// One predicted value added to a record: an SD tag `>  <name>  [unit]`, a CSV column
// "name [unit]", an extended-XYZ comment pair name=value (plus name_unit=unit).
struct PredictedValue {
  std::string name;
  double value = 0.0;
  std::string unit;  // empty: dimensionless / unknown
};

struct WriteOptions {
  Format format = Format::unknown;  // unknown: from the output name (sdf, xyz/extxyz, csv)
  // CSV: the input label columns, in order. Empty: the property keys of the first record written
  // (later records fill the columns they have; a label they lack is left empty).
  std::vector<std::string> label_columns;
  // CSV: the prediction columns (names and units; values ignored) every record gets, so that the
  // header is right even when the first record has no prediction. Empty: the first record's.
  std::vector<PredictedValue> prediction_columns;
  // CSV: a last column "error", empty for predicted records and the reason for records written
  // with write_error() (which needs it).
  bool error_column = false;
};

class MoleculeWriter {
 public:
  // Throws flt::InvalidArgument for a format flt cannot write, flt::IoError when the temporary
  // file cannot be created.
  static std::unique_ptr<MoleculeWriter> open(const std::string& path,
                                              const WriteOptions& options = {});
  virtual ~MoleculeWriter() = default;

  // Appends one record. SDF: the record's molecule block (its RDKit molecule when it has one,
  // else atoms without bonds) with coordinates from `points.positions`, its properties as SD tags
  // in input order, then the predictions (a prediction replaces an input tag of the same name).
  // A property with a unit is written with it: SD tag "<key [unit]>", extended-XYZ "key_unit=unit"
  // (unless the record has that key), CSV column "key [unit]"; the readers take the unit back.
  // CSV: a row id, source, record, title, label columns, predictions; the predictions' names and
  // units must be the same for every record. Extended XYZ: Properties=species:S:1:pos:R:3 plus
  // the record's atom columns (and formal_charges:I:1 when an atom is charged and the record has
  // no such column); properties and predictions as key=value pairs.
  virtual void write(const PointSet& points, const std::vector<PredictedValue>& predictions = {}) = 0;

  // Appends a record that has no prediction, marked with `reason`, so that every input record
  // reaches the output. `points` is the record as read, or for a record the reader rejected the
  // part it kept (RejectedRecord::partial: no atoms). SDF: when `rejected` holds the input's own
  // SD text, that text unchanged; otherwise the atoms as write() does (none for a rejected
  // record); then the tags and a tag `flt_error` with the reason. CSV: the row with its labels,
  // empty predictions and the reason in the "error" column (WriteOptions::error_column; throws
  // InvalidArgument without it). Extended XYZ: the atoms (none for a rejected record) with
  // flt_error="reason" in the comment line.
  virtual void write_error(const PointSet& points, const std::string& reason,
                           const RejectedRecord* rejected = nullptr) = 0;

  // Finishes the output and renames it into place. Without close() nothing is written.
  void close();
  std::size_t written() const noexcept { return written_; }

 protected:
  explicit MoleculeWriter(std::unique_ptr<io::AtomicOutputFile> out) : out_(std::move(out)) {}
  virtual void finish() {}
  std::ostream& out() { return out_->stream(); }
  std::unique_ptr<io::AtomicOutputFile> out_;
  std::size_t written_ = 0;
};

// The SD tag, CSV column and extended-XYZ key that carry the reason a record was not predicted.
inline constexpr const char* kErrorTag = "flt_error";

}  // namespace flt::chem
