// SMILES CSV record parser (Chemprop's layout: a header row, a SMILES column, any other columns):
// each row becomes one record. RDKit parses the SMILES, hydrogens become atoms, and a 3-D
// conformer is generated (chem/conformer.hpp; SMILES carry no coordinates). Every other column is
// a property of the record (a label for training, passed through by the writers).
#include "chem/conformer.hpp"
#include "chem/rdkit_log.hpp"
#include "chem/record_parsers.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text.hpp"

#include <GraphMol/MolOps.h>
#include <GraphMol/RWMol.h>
#include <GraphMol/SmilesParse/SmilesParse.h>

#include <algorithm>
#include <cctype>

namespace flt::chem::detail {
namespace {

std::string trimmed(std::string_view text) { return std::string(flt::trim(text)); }

// One CSV row (RFC 4180: quoted fields may hold commas, doubled quotes and line breaks).
struct CsvRow {
  std::vector<std::string> fields;
  std::size_t line = 0;  // 1-based line where the row starts
  std::string text;      // the row as read (without the final line break)
};

class CsvRowReader {
 public:
  explicit CsvRowReader(std::istream& in) : in_(in) {}

  // The next non-blank row, or nullopt at the end. Throws InputError(source, record) for an
  // unterminated quote or text after a closing quote.
  std::optional<CsvRow> next(const std::string& source, std::size_t record) {
    for (;;) {
      std::string line;
      if (!read_line(line)) return std::nullopt;
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      CsvRow row;
      row.line = line_;
      row.text = line;
      std::string field;
      bool quoted = false, after_quote = false;
      std::size_t i = 0;
      for (;;) {
        if (i == line.size()) {
          if (!quoted) break;
          std::string more;
          if (!read_line(more)) {
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
  bool read_line(std::string& line) {
    if (!std::getline(in_, line)) return false;
    ++line_;
    if (line_ == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // UTF-8 BOM
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  }
  std::istream& in_;
  std::size_t line_ = 0;
};

class SmilesParser final : public RecordParser {
 public:
  SmilesParser(std::istream& in, std::string source, const ReadOptions& options)
      : source_(std::move(source)), options_(options), rows_(in) {
    route_rdkit_logs();
  }

  std::size_t records() const noexcept override { return record_; }
  RejectedRecord rejected() const override { return rejected_; }

  std::optional<PointSet> next() override {
    if (done_) return std::nullopt;
    if (header_.empty()) {
      done_ = true;  // a bad header ends the file
      read_header();
      done_ = false;
    }
    std::optional<CsvRow> row;
    try {
      row = rows_.next(source_, record_ + 1);
    } catch (const InputError&) {
      done_ = true;  // an unterminated quote runs to the end of the file
      ++record_;
      throw;
    }
    if (!row) {
      done_ = true;
      if (record_ == 0) throw InputError(source_, 0, "no SMILES rows after the header");
      return std::nullopt;
    }
    ++record_;
    PointSet points;
    points.source = source_;
    points.record = record_;
    const std::string at = "line " + std::to_string(row->line) + ": ";
    if (row->fields.size() != header_.size()) {
      fail(at + std::to_string(row->fields.size()) + " fields where the header has " +
               std::to_string(header_.size()),
           points, *row);
    }
    const std::string smiles = trimmed(row->fields[smiles_column_]);
    points.title = smiles;
    for (std::size_t c = 0; c < header_.size(); ++c) {
      if (c == smiles_column_) continue;
      points.set_property(keys_[c], trimmed(row->fields[c]), units_[c]);
    }
    if (smiles.empty()) fail(at + "empty SMILES", points, *row);

    std::vector<RdkitMessage> messages;
    std::unique_ptr<RDKit::RWMol> mol;
    {
      RdkitLogCapture capture(messages);
      try {
        RDKit::SmilesParserParams params;
        params.sanitize = options_.sanitize;
        mol.reset(RDKit::SmilesToMol(smiles, params));
      } catch (const std::exception& e) {
        messages.push_back({LogLevel::error, e.what()});
      }
    }
    if (!mol) {
      std::string why;
      for (const auto& m : messages) {
        if (m.level != LogLevel::error) continue;
        std::string text = m.text;
        if (text.rfind("ERROR: ", 0) == 0) text.erase(0, 7);
        if (text.find_first_not_of(" \t") == std::string::npos) continue;
        why += (why.empty() ? "" : "; ") + trimmed(text);
      }
      fail(at + "RDKit cannot parse the SMILES '" + smiles + "'" + (why.empty() ? "" : ": " + why),
           points, *row);
    }
    if (mol->getNumAtoms() == 0) fail(at + "the SMILES has no atoms", points, *row);
    for (const auto* atom : mol->atoms()) {
      if (atom->getAtomicNum() < 1 || atom->getAtomicNum() > 118) {
        fail(at + "atom " + std::to_string(atom->getIdx() + 1) + " is a dummy or query atom (" +
                 atom->getSymbol() + "), not an element",
             points, *row);
      }
    }
    if (!options_.sanitize) mol->updatePropertyCache(false);
    unsigned implicit_h = 0;
    for (const auto* atom : mol->atoms()) implicit_h += atom->getTotalNumHs(false);
    if (implicit_h > 0) RDKit::MolOps::addHs(*mol, false, false);
    points.hydrogens_added = static_cast<int>(implicit_h);
    if (auto why = generate_conformer(*mol, conformer_options(options_),
                                      source_ + ": record " + std::to_string(record_))) {
      fail(at + "no conformer for '" + smiles + "': " + *why, points, *row);
    }
    points.conformer_generated = true;

    const unsigned n = mol->getNumAtoms();
    const auto& conf = mol->getConformer();
    points.atomic_numbers.resize(n);
    points.formal_charges.resize(n);
    points.positions.resize(static_cast<Index>(n), 3);
    for (unsigned i = 0; i < n; ++i) {
      const auto* atom = mol->getAtomWithIdx(i);
      points.atomic_numbers[i] = atom->getAtomicNum();
      points.formal_charges[i] = atom->getFormalCharge();
      const RDGeom::Point3D p = conf.getAtomPos(i);
      points.positions(static_cast<Index>(i), 0) = p.x;
      points.positions(static_cast<Index>(i), 1) = p.y;
      points.positions(static_cast<Index>(i), 2) = p.z;
    }
    if (auto problem = check_geometry(points, options_.min_distance)) {
      fail(at + *problem, points, *row);
    }
    if (options_.keep_molecule) {
      mol->setProp(RDKit::common_properties::_Name, smiles);
      points.molecule = std::shared_ptr<const RDKit::ROMol>(mol.release());
    }
    return points;
  }

 private:
  void read_header() {
    std::optional<CsvRow> row = rows_.next(source_, 0);
    if (!row) throw InputError(source_, 0, "empty file: no CSV header");
    header_ = row->fields;
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
                           ")" + (options_.smiles_column.empty() ? "; choose one with --smiles-column" : ""));
    }
    smiles_column_ = *found;
    for (std::size_t c = 0; c < header_.size(); ++c) {
      // "U0 [eV]" -> key "U0", unit "eV".
      std::string key = header_[c], unit;
      const auto open = key.rfind(" [");
      if (open != std::string::npos && key.size() > open + 3 && key.back() == ']') {
        unit = trimmed(key.substr(open + 2, key.size() - open - 3));
        key = trimmed(key.substr(0, open));
      }
      if (key.empty() && c != smiles_column_) {
        throw InputError(source_, 0, "column " + std::to_string(c + 1) + " has no name");
      }
      for (std::size_t k = 0; k < keys_.size(); ++k) {
        if (keys_[k] == key) throw InputError(source_, 0, "column '" + key + "' appears twice");
      }
      keys_.push_back(key);
      units_.push_back(unit);
    }
    log_info(source_, ": SMILES in column '", header_[smiles_column_], "'; ",
             header_.size() - 1, " other column(s) kept as properties");
  }

  [[noreturn]] void fail(const std::string& reason, const PointSet& partial, const CsvRow& row) {
    rejected_ = RejectedRecord{};
    rejected_.partial.source = source_;
    rejected_.partial.record = record_;
    rejected_.partial.title = partial.title;
    rejected_.partial.properties = partial.properties;
    rejected_.format = Format::csv;
    rejected_.text = row.text;
    throw InputError(source_, record_, reason);
  }

  std::string source_;
  ReadOptions options_;
  CsvRowReader rows_;
  std::vector<std::string> header_, keys_, units_;
  std::size_t smiles_column_ = 0;
  std::size_t record_ = 0;
  bool done_ = false;
  RejectedRecord rejected_;
};

}  // namespace

std::unique_ptr<RecordParser> make_smiles_parser(std::istream& in, std::string source,
                                                 const ReadOptions& options) {
  return std::make_unique<SmilesParser>(in, std::move(source), options);
}

}  // namespace flt::chem::detail
