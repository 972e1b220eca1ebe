// SMILES record parser for two layouts, each row one record:
// - CSV (Chemprop's layout): a header row, a SMILES column, any other columns;
// - SMILES files (.smi; Daylight, Open Babel, RDKit's SmilesMolSupplier and SmilesWriter): fields
//   separated by blanks, '#' comment lines, and a header line only when one of its fields is the
//   SMILES column's name (e.g. RDKit's "SMILES Name ..."). Without a header a line is
//   "SMILES [title...]" (or the SMILES in the field that --smiles-column numbers).
// RDKit parses the SMILES, hydrogens become atoms, and a 3-D conformer is generated
// (chem/conformer.hpp; SMILES carry no coordinates). Every other named column is a property of the
// record (a label for training, passed through by the writers).
#include "chem/conformer.hpp"
#include "chem/rdkit_log.hpp"
#include "chem/record_parsers.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text.hpp"

#include <GraphMol/MolOps.h>
#include <GraphMol/RWMol.h>
#include <GraphMol/SmilesParse/SmilesParse.h>

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <deque>

namespace flt::chem::detail {
namespace {

std::string trimmed(std::string_view text) { return std::string(flt::trim(text)); }

// One row: a CSV row (RFC 4180: quoted fields may hold commas, doubled quotes and line breaks) or
// a SMILES file's line (fields separated by blanks).
struct CsvRow {
  std::vector<std::string> fields;
  std::vector<std::size_t> starts;  // SMILES file: each field's offset in `text` (CSV: empty)
  std::size_t line = 0;  // 1-based line where the row starts
  std::string text;      // the row as read (without the final line break)

  // SMILES file: the text from field k to the end of the line, blanks inside kept ("a b").
  std::string rest_from(std::size_t k) const {
    return std::string(flt::trim(std::string_view(text).substr(starts[k])));
  }
};

// Lines read as the readers do: a UTF-8 byte-order mark dropped from the first, CR-LF as LF.
class LineReader {
 public:
  explicit LineReader(std::istream& in) : in_(in) {}
  bool read_line(std::string& line) {
    if (!std::getline(in_, line)) return false;
    ++line_;
    if (line_ == 1) line.erase(0, line.size() - without_utf8_bom(line).size());
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  }
  std::size_t line() const noexcept { return line_; }

 private:
  std::istream& in_;
  std::size_t line_ = 0;
};

// A SMILES file's rows: blank lines and lines starting with '#' skipped, fields split at runs of
// spaces and tabs (a SMILES holds neither); when the first line holds a tab, at tabs only, so
// that names with blanks stay one field (RDKit's SmilesWriter with delimiter '\t').
class BlankRowReader {
 public:
  explicit BlankRowReader(std::istream& in) : lines_(in) {}
  std::optional<CsvRow> next() {
    std::string line;
    while (lines_.read_line(line)) {
      const auto first = line.find_first_not_of(" \t");
      if (first == std::string::npos || line[first] == '#') continue;
      if (!separators_) separators_ = line.find('\t') != std::string::npos ? "\t" : " \t";
      CsvRow row;
      row.line = lines_.line();
      for (std::size_t i = first; i < line.size();) {
        std::size_t end = std::min(line.find_first_of(*separators_, i), line.size());
        std::size_t last = end;  // a tab-separated field without its surrounding blanks
        while (last > i && line[last - 1] == ' ') --last;
        row.fields.push_back(line.substr(i, last - i));
        row.starts.push_back(i);
        i = line.find_first_not_of(" \t", end);
        if (i == std::string::npos) break;
      }
      row.text = std::move(line);
      return row;
    }
    return std::nullopt;
  }

 private:
  LineReader lines_;
  std::optional<const char*> separators_;
};

class CsvRowReader {
 public:
  explicit CsvRowReader(std::istream& in) : lines_(in) {}

  // The next non-blank row, or nullopt at the end. Throws InputError(source, record) for an
  // unterminated quote or text after a closing quote.
  std::optional<CsvRow> next(const std::string& source, std::size_t record) {
    for (;;) {
      std::string line;
      if (!lines_.read_line(line)) return std::nullopt;
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      CsvRow row;
      row.line = lines_.line();
      row.text = line;
      std::string field;
      bool quoted = false, after_quote = false;
      std::size_t i = 0;
      for (;;) {
        if (i == line.size()) {
          if (!quoted) break;
          std::string more;
          if (!lines_.read_line(more)) {
            throw InputError(source, record, "line " + std::to_string(row.line) +
                                                 ": the file ends inside a quoted field");
          }
          row.text += '\n';
          row.text += more;
          field += '\n';
          line = std::move(more);
          i = 0;
          continue;
        }
        const char c = line[i++];
        if (quoted) {
          if (c != '"') {
            field += c;
          } else if (i < line.size() && line[i] == '"') {
            field += '"';
            ++i;
          } else {
            quoted = false;
            after_quote = true;
          }
        } else if (c == ',') {
          row.fields.push_back(std::move(field));
          field.clear();
          after_quote = false;
        } else if (after_quote) {
          if (c != ' ' && c != '\t') {
            throw InputError(source, record, "line " + std::to_string(row.line) +
                                                 ": text after a closing quote");
          }
        } else if (c == '"' && field.find_first_not_of(" \t") == std::string::npos) {
          field.clear();
          quoted = true;
        } else {
          field += c;
        }
      }
      row.fields.push_back(std::move(field));
      return row;
    }
  }

 private:
  LineReader lines_;
};

// A positive field number ("2"), or nullopt for a column name.
std::optional<std::size_t> field_number(const std::string& text) {
  if (text.empty() || text.size() > 6 ||
      !std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c) != 0; })) {
    return std::nullopt;
  }
  const std::size_t n = std::stoul(text);
  if (n == 0) return std::nullopt;
  return n;
}

class SmilesParser final : public RecordParser {
 public:
  SmilesParser(std::istream& in, std::string source, Format layout, const ReadOptions& options)
      : source_(std::move(source)), layout_(layout), options_(options) {
    if (layout_ == Format::smi) {
      blank_rows_.emplace(in);
    } else {
      csv_rows_.emplace(in);
    }
  }

  std::size_t records() const noexcept override { return record_; }
  RejectedRecord rejected() const override { return rejected_; }

  std::optional<PointSet> next() override {
    if (ahead_.empty()) {
      if (done_) return std::nullopt;
      if (!started_) {
        done_ = true;  // a bad header ends the file
        start();
        done_ = false;
        started_ = true;
      }
      read_ahead();
      if (ahead_.empty()) {
        done_ = true;
        if (record_ == 0) {
          const char* what = header_.empty()            ? "no SMILES lines"
                             : layout_ == Format::csv ? "no SMILES rows after the header"
                                                      : "no SMILES lines after the header";
          throw InputError(source_, 0, what);
        }
        return std::nullopt;
      }
    }
    Row row = std::move(ahead_.front());
    ahead_.pop_front();
    record_ = row.points.record;
    for (const ConformerNote& note : row.notes) log(note.level, note.text);
    if (row.error) {
      rejected_ = RejectedRecord{};
      rejected_.partial.source = source_;
      rejected_.partial.record = row.points.record;
      rejected_.partial.title = row.points.title;
      rejected_.partial.properties = std::move(row.points.properties);
      rejected_.format = layout_;
      rejected_.text = std::move(row.text);
      throw InputError(source_, row.points.record, *row.error);
    }
    return std::move(row.points);
  }

 private:
  // One record between reading and returning it: parsed (serially), then given its conformer
  // (in parallel with the other rows read ahead).
  struct Row {
    PointSet points;  // source, record, title, properties; atoms once embedded
    std::string text, at, smiles;
    std::unique_ptr<RDKit::RWMol> mol;  // with its hydrogens, until embedded
    std::optional<std::string> error;
    std::vector<ConformerNote> notes;  // logged in record order when the record is returned
  };

  // Reads up to a fixed number of rows per thread, parses them, and generates their conformers
  // in parallel. Each conformer depends only on its SMILES and the seed, so the records are the
  // same for any thread count and read-ahead.
  void read_ahead() {
    const int threads = omp_get_max_threads();
    const std::size_t want = threads > 1 ? 8 * static_cast<std::size_t>(threads) : 1;
    std::size_t next_record = record_ + ahead_.size() + 1;
    while (ahead_.size() < want && !done_) {
      std::optional<CsvRow> row;
      if (first_row_) {
        row = std::move(first_row_);
        first_row_.reset();
      } else {
        try {
          row = next_row(next_record);
        } catch (const InputError& e) {
          // An unterminated quote runs to the end of the file: the last record, bad.
          Row bad;
          bad.points.source = source_;
          bad.points.record = next_record;
          bad.error = e.reason();
          ahead_.push_back(std::move(bad));
          done_ = true;
          break;
        }
      }
      if (!row) {
        done_ = true;
        break;
      }
      ahead_.push_back(parse(std::move(*row), next_record++));
    }
    const auto n = static_cast<std::ptrdiff_t>(ahead_.size());
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
    for (std::ptrdiff_t k = 0; k < n; ++k) embed(ahead_[static_cast<std::size_t>(k)]);
  }

  // Everything up to the conformer: fields, title, properties, RDKit's parse, hydrogens.
  Row parse(CsvRow&& csv, std::size_t record) {
    Row row;
    row.points.source = source_;
    row.points.record = record;
    row.text = csv.text;
    row.at = "line " + std::to_string(csv.line) + ": ";
    PointSet& points = row.points;
    const std::string& at = row.at;
    auto bad = [&](std::string reason) {
      row.error = at + std::move(reason);
      return std::move(row);
    };
    std::string smiles;
    if (!header_.empty()) {
      // A SMILES file's last column takes the rest of a longer line: RDKit's SmilesWriter writes
      // values with blanks unquoted ("CCO ethanol 5.1 a b" under "SMILES Name pIC50 note").
      const bool longer = csv.fields.size() > header_.size();
      if (csv.fields.size() < header_.size() || (longer && layout_ == Format::csv)) {
        return bad(std::to_string(csv.fields.size()) + " fields where the header has " +
                   std::to_string(header_.size()));
      }
      smiles = trimmed(csv.fields[smiles_column_]);
      points.title = smiles;
      for (std::size_t c = 0; c < header_.size(); ++c) {
        if (c == smiles_column_) continue;
        std::string value = longer && c + 1 == header_.size() ? csv.rest_from(c) : trimmed(csv.fields[c]);
        if (title_column_ && c == *title_column_) {
          if (!value.empty()) points.title = std::move(value);
          continue;
        }
        points.set_property(keys_[c], std::move(value), units_[c]);
      }
    } else {
      // A SMILES file without a header: "SMILES title..." (or the SMILES in field smiles_column_
      // + 1 and the other fields, joined by a blank, the title).
      if (csv.fields.size() <= smiles_column_) {
        return bad(std::to_string(csv.fields.size()) + " field(s); the SMILES is field " +
                   std::to_string(smiles_column_ + 1));
      }
      smiles = csv.fields[smiles_column_];
      std::string title;
      if (smiles_column_ == 0) {
        if (csv.fields.size() > 1) title = csv.rest_from(1);
      } else {
        for (std::size_t c = 0; c < csv.fields.size(); ++c) {
          if (c != smiles_column_) title += (title.empty() ? "" : " ") + csv.fields[c];
        }
      }
      points.title = title.empty() ? smiles : title;
    }
    if (smiles.empty()) return bad("empty SMILES");

    std::vector<RdkitMessage> messages;
    {
      RdkitLogCapture capture(messages);
      try {
        RDKit::SmilesParserParams params;
        params.sanitize = options_.sanitize;
        row.mol.reset(RDKit::SmilesToMol(smiles, params));
      } catch (const std::exception& e) {
        messages.push_back({LogLevel::error, e.what()});
      }
    }
    if (!row.mol) {
      std::string why;
      for (const auto& m : messages) {
        if (m.level != LogLevel::error) continue;
        std::string text = m.text;
        if (text.rfind("ERROR: ", 0) == 0) text.erase(0, 7);
        if (text.find_first_not_of(" \t") == std::string::npos) continue;
        why += (why.empty() ? "" : "; ") + trimmed(text);
      }
      // A headerless SMILES file read with the default column: the SMILES may be elsewhere
      // (ZINC's "name SMILES" lines).
      const bool other_fields = header_.empty() && options_.smiles_column.empty() && csv.fields.size() > 1;
      return bad("RDKit cannot parse the SMILES '" + smiles + "'" + (why.empty() ? "" : ": " + why) +
                 (other_fields ? " (field 1 of a SMILES file without a header line; "
                                 "--smiles-column N (API: smiles_column) reads the SMILES from field N)"
                               : ""));
    }
    if (row.mol->getNumAtoms() == 0) return bad("the SMILES has no atoms");
    for (const auto* atom : row.mol->atoms()) {
      if (atom->getAtomicNum() < 1 || atom->getAtomicNum() > 118) {
        return bad("atom " + std::to_string(atom->getIdx() + 1) + " is a dummy or query atom (" +
                   atom->getSymbol() + "), not an element");
      }
    }
    if (!options_.sanitize) row.mol->updatePropertyCache(false);
    unsigned implicit_h = 0;
    for (const auto* atom : row.mol->atoms()) implicit_h += atom->getTotalNumHs(false);
    if (implicit_h > 0) RDKit::MolOps::addHs(*row.mol, false, false);
    points.hydrogens_added = static_cast<int>(implicit_h);
    row.smiles = std::move(smiles);
    return row;
  }

  // The conformer and the atoms; runs on any thread, throws nothing.
  void embed(Row& row) const noexcept {
    if (row.error || !row.mol) return;
    try {
      PointSet& points = row.points;
      RDKit::RWMol& mol = *row.mol;
      if (auto why = generate_conformer(mol, conformer_options(options_),
                                        source_ + ": record " + std::to_string(points.record), &row.notes)) {
        row.error = row.at + "no conformer for '" + row.smiles + "': " + *why;
        return;
      }
      points.conformer_generated = true;
      const unsigned n = mol.getNumAtoms();
      const auto& conf = mol.getConformer();
      points.atomic_numbers.resize(n);
      points.formal_charges.resize(n);
      points.positions.resize(static_cast<Index>(n), 3);
      for (unsigned i = 0; i < n; ++i) {
        const auto* atom = mol.getAtomWithIdx(i);
        points.atomic_numbers[i] = atom->getAtomicNum();
        points.formal_charges[i] = atom->getFormalCharge();
        const RDGeom::Point3D p = conf.getAtomPos(i);
        points.positions(static_cast<Index>(i), 0) = p.x;
        points.positions(static_cast<Index>(i), 1) = p.y;
        points.positions(static_cast<Index>(i), 2) = p.z;
      }
      if (auto problem = check_geometry(points, options_.min_distance)) {
        row.error = row.at + *problem;
        return;
      }
      if (options_.keep_molecule) {
        mol.setProp(RDKit::common_properties::_Name, points.title);
        points.molecule = std::shared_ptr<const RDKit::ROMol>(row.mol.release());
      }
      row.mol.reset();
    } catch (const std::exception& e) {
      row.error = row.at + "conformer generation failed: " + e.what();
    } catch (...) {
      row.error = row.at + "conformer generation failed";
    }
  }


  std::optional<CsvRow> next_row(std::size_t record) {
    return blank_rows_ ? blank_rows_->next() : csv_rows_->next(source_, record);
  }

  // Reads the header: always in a CSV; in a SMILES file when a field of the first line is the
  // SMILES column's name ("smiles" in any case, or a name given as smiles_column); otherwise that
  // line is the first record.
  void start() {
    std::optional<CsvRow> row = next_row(0);
    if (layout_ == Format::csv) {
      if (!row) throw InputError(source_, 0, "empty file: no CSV header");
      read_header(*row);
      return;
    }
    if (!row) return;  // next() reports the empty file
    const std::optional<std::size_t> number = field_number(options_.smiles_column);
    const std::string wanted = options_.smiles_column.empty() || number ? "smiles" : options_.smiles_column;
    const bool header = std::any_of(row->fields.begin(), row->fields.end(),
                                    [&](const std::string& f) { return lower(f) == lower(wanted); });
    if (header && !number) {
      read_header(*row);
      return;
    }
    if (header) {
      throw InputError(source_, 0, "the first line is a header (" + row->text +
                                       "): name the SMILES column instead of numbering it");
    }
    if (!options_.smiles_column.empty() && !number) {
      throw InputError(source_, 0,
                       "no header line naming the SMILES column '" + options_.smiles_column +
                           "' (first line: " + row->text +
                           "); a SMILES file without a header takes the column's number, 1 = the first");
    }
    smiles_column_ = number ? *number - 1 : 0;
    first_row_ = std::move(row);
    log_info(source_, ": SMILES file without a header: the SMILES in field ", smiles_column_ + 1,
             ", the other fields the title");
  }

  void read_header(const CsvRow& row) {
    header_ = row.fields;
    std::string columns;
    for (auto& name : header_) {
      name = trimmed(name);
      columns += (columns.empty() ? "" : ", ") + name;
    }
    std::optional<std::size_t> found;
    const std::string wanted = options_.smiles_column.empty() ? "smiles" : options_.smiles_column;
    for (std::size_t c = 0; c < header_.size() && !found; ++c) {
      if (header_[c] == wanted) found = c;
    }
    for (std::size_t c = 0; c < header_.size() && !found; ++c) {
      if (lower(header_[c]) == lower(wanted)) found = c;
    }
    if (!found) {
      throw InputError(source_, 0,
                       "no SMILES column '" + wanted + "' in the header (columns: " + columns +
                           ")" + (options_.smiles_column.empty() ? "; choose one with --smiles-column (API: smiles_column)" : ""));
    }
    smiles_column_ = *found;
    for (std::size_t c = 0; c < header_.size(); ++c) {
      // "U0 [eV]" -> key "U0", unit "eV" (in a SMILES file, whose blanks separate the columns, "U0[eV]").
      auto [key, unit] = split_key_unit(header_[c]);
      if (key.empty() && c != smiles_column_) {
        throw InputError(source_, 0, "column " + std::to_string(c + 1) + " has no name");
      }
      for (std::size_t k = 0; k < keys_.size(); ++k) {
        if (keys_[k] == key) throw InputError(source_, 0, "column '" + key + "' appears twice");
      }
      keys_.push_back(key);
      units_.push_back(unit);
    }
    // A SMILES file's "Name" (RDKit's SmilesWriter) or "Title" column is the title.
    for (std::size_t c = 0; c < header_.size() && layout_ == Format::smi && !title_column_; ++c) {
      const std::string key = lower(keys_[c]);
      if (c != smiles_column_ && (key == "name" || key == "title")) title_column_ = c;
    }
    log_info(source_, ": SMILES in column '", header_[smiles_column_], "'; ",
             header_.size() - 1 - (title_column_ ? 1 : 0), " other column(s) kept as properties",
             title_column_ ? ", column '" + header_[*title_column_] + "' the title" : std::string());
  }


  std::string source_;
  Format layout_;
  ReadOptions options_;
  std::optional<CsvRowReader> csv_rows_;
  std::optional<BlankRowReader> blank_rows_;
  std::optional<CsvRow> first_row_;  // a SMILES file's first line when it is not a header
  std::deque<Row> ahead_;            // records read ahead, in order
  std::vector<std::string> header_, keys_, units_;
  std::size_t smiles_column_ = 0;
  std::optional<std::size_t> title_column_;
  std::size_t record_ = 0;
  bool started_ = false, done_ = false;
  RejectedRecord rejected_;
};

}  // namespace

std::unique_ptr<RecordParser> make_smiles_parser(std::istream& in, std::string source, Format layout,
                                                 const ReadOptions& options) {
  if (layout != Format::csv && layout != Format::smi) {
    throw InvalidArgument("make_smiles_parser: the layout is csv or smi");
  }
  return std::make_unique<SmilesParser>(in, std::move(source), layout, options);
}

}  // namespace flt::chem::detail
