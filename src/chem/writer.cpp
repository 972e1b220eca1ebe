#include "chem/writer.hpp"

#include "chem/elements.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text.hpp"
#include "io/csv.hpp"

#include <GraphMol/Conformer.h>
#include <GraphMol/FileParsers/FileParsers.h>
#include <GraphMol/ROMol.h>
#include <GraphMol/RWMol.h>

#include <algorithm>
#include <charconv>
#include <unordered_set>

namespace flt::chem {

void MoleculeWriter::close() {
  finish();
  out_->commit();
}

namespace {

// Whether an input property is written: not when a prediction of the same name replaces it.
bool kept(const Property& p, const std::vector<PredictedValue>& predictions) {
  return std::none_of(predictions.begin(), predictions.end(),
                      [&](const PredictedValue& pred) { return pred.name == p.key; });
}

// An SD data value must not contain an empty line (it ends the value) nor a line starting with
// "$$$$" (it ends the record; RDKit can read one into a value when a record lacks the blank line
// before its "$$$$"): such a line is written with a leading blank.
std::string sd_value(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '\r') continue;
    if (value[i] == '\n' && (out.empty() || out.back() == '\n')) continue;
    if ((out.empty() || out.back() == '\n') && value.compare(i, 4, "$$$$") == 0) out += ' ';
    out += value[i];
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class SdfWriter final : public MoleculeWriter {
 public:
  using MoleculeWriter::MoleculeWriter;

  void write(const PointSet& points, const std::vector<PredictedValue>& predictions) override {
    std::ostream& o = out();
    o << mol_block(points);
    for (const auto& p : points.properties) {
      if (!kept(p, predictions)) continue;
      o << ">  <" << p.key;
      if (!p.unit.empty()) o << " [" << p.unit << "]";
      o << ">\n" << sd_value(p.value) << "\n\n";
    }
    for (const auto& pred : predictions) {
      o << ">  <" << pred.name << ">";
      if (!pred.unit.empty()) o << "  [" << pred.unit << "]";
      o << "\n" << shortest_number(pred.value) << "\n\n";
    }
    o << "$$$$\n";
    ++written_;
  }

  void write_error(const PointSet& points, const std::string& reason,
                   const RejectedRecord* rejected) override {
    if (rejected != nullptr && rejected->format == Format::sdf && !rejected->text.empty()) {
      write_marked_text(rejected->text, reason);
      return;
    }
    PointSet marked = points;
    marked.set_property(kErrorTag, reason);
    write(marked, {});
  }

 private:
  // The input's SD text, record by record, each with the tag flt_error added before its "$$$$".
  void write_marked_text(const std::string& text, const std::string& reason) {
    std::ostream& o = out();
    const std::string tag = ">  <" + std::string(kErrorTag) + ">\n" + sd_value(reason) + "\n\n";
    std::size_t pos = 0;
    std::string record;
    const auto finish_record = [&] {
      // A data value runs to the next blank line: end an unterminated one before the tag.
      if (!record.empty() && record.back() != '\n') record += '\n';
      const std::size_t last = record.rfind('\n', record.size() >= 2 ? record.size() - 2 : 0);
      const std::string last_line =
          record.substr(last == std::string::npos ? 0 : last + 1);
      const bool blank = last_line.find_first_not_of(" \t\r\n") == std::string::npos;
      if (!record.empty() && !blank && last_line.rfind("M  END", 0) != 0) {
        record += '\n';
      }
      o << record << tag << "$$$$\n";
      ++written_;
      record.clear();
    };
    while (pos < text.size()) {
      std::size_t end = text.find('\n', pos);
      end = end == std::string::npos ? text.size() : end + 1;
      if (text.compare(pos, 4, "$$$$") == 0) {
        finish_record();
      } else {
        record.append(text, pos, end - pos);
      }
      pos = end;
    }
    if (record.find_first_not_of(" \t\r\n") != std::string::npos) finish_record();
  }

  static std::string mol_block(const PointSet& points) {
    const auto n = static_cast<unsigned>(points.size());
    std::unique_ptr<RDKit::RWMol> copy;
    const RDKit::ROMol* mol = points.molecule.get();
    if (mol != nullptr && mol->getNumAtoms() == n && mol->getNumConformers() > 0) {
      // Write the point set's coordinates (a caller may have changed them).
      const auto& conf = mol->getConformer();
      bool same = true;
      for (unsigned i = 0; i < n && same; ++i) {
        const auto& p = conf.getAtomPos(i);
        same = p.x == points.positions(i, 0) && p.y == points.positions(i, 1) &&
               p.z == points.positions(i, 2);
      }
      if (!same) {
        copy = std::make_unique<RDKit::RWMol>(*mol);
        auto& c = copy->getConformer();
        for (unsigned i = 0; i < n; ++i) {
          c.setAtomPos(i, RDGeom::Point3D(points.positions(i, 0), points.positions(i, 1),
                                          points.positions(i, 2)));
        }
        mol = copy.get();
      }
    } else {
      // No molecule (XYZ input): atoms without bonds, charges and coordinates as given.
      copy = std::make_unique<RDKit::RWMol>();
      auto* conf = new RDKit::Conformer(n);
      conf->set3D(points.coordinates_3d);
      for (unsigned i = 0; i < n; ++i) {
        auto* atom = new RDKit::Atom(points.atomic_numbers[i]);
        if (i < points.formal_charges.size()) atom->setFormalCharge(points.formal_charges[i]);
        atom->setNoImplicit(true);
        copy->addAtom(atom, false, true);
        conf->setAtomPos(i, RDGeom::Point3D(points.positions(i, 0), points.positions(i, 1),
                                            points.positions(i, 2)));
      }
      copy->addConformer(conf, true);
      copy->updatePropertyCache(false);
      copy->setProp(RDKit::common_properties::_Name, points.title);
      mol = copy.get();
    }
    try {
      return RDKit::MolToMolBlock(*mol, true, -1, true);
    } catch (const std::exception&) {
      // Aromatic systems RDKit cannot kekulize are written with aromatic bonds.
      return RDKit::MolToMolBlock(*mol, true, -1, false);
    }
  }
};

class CsvWriter final : public MoleculeWriter {
 public:
  CsvWriter(std::unique_ptr<io::AtomicOutputFile> out, const WriteOptions& options)
      : MoleculeWriter(std::move(out)),
        labels_(options.label_columns),
        error_column_(options.error_column) {
    for (const auto& p : options.prediction_columns) predictions_.emplace_back(p.name, p.unit);
    columns_given_ = !options.prediction_columns.empty();
  }

  void write(const PointSet& points, const std::vector<PredictedValue>& predictions) override {
    if (!header_written_) {
      if (!columns_given_) {
        for (const auto& pred : predictions) predictions_.emplace_back(pred.name, pred.unit);
      }
      header(points);
      write_held();
    }
    bool same = predictions.size() == predictions_.size();
    for (std::size_t k = 0; same && k < predictions.size(); ++k) {
      same = predictions[k].name == predictions_[k].first &&
             predictions[k].unit == predictions_[k].second;
    }
    if (!same) {
      throw InvalidArgument("CSV output " + out_->path() +
                            ": every record needs the same predicted targets and units");
    }
    std::ostream& o = out();
    row_start(points);
    for (const auto& pred : predictions) o << ',' << shortest_number(pred.value);
    if (error_column_) o << ',';
    o << '\n';
    ++written_;
  }

  void write_error(const PointSet& points, const std::string& reason,
                   const RejectedRecord*) override {
    if (!error_column_) {
      throw InvalidArgument("CSV output " + out_->path() +
                            ": records without a prediction need the error column");
    }
    if (!header_written_) {
      if (points.properties.empty() && labels_.empty()) {
        // A record the reader rejected before any label was seen: the label columns come from
        // the first record that has them, so it waits for that record (or for close()).
        held_.emplace_back(points, reason);
        return;
      }
      header(points);
      write_held();
    }
    error_row(points, reason);
  }

 protected:
  void finish() override {
    if (header_written_) return;
    header(held_.empty() ? PointSet{} : held_.front().first);
    write_held();
  }

 private:
  void error_row(const PointSet& points, const std::string& reason) {
    std::ostream& o = out();
    row_start(points);
    for (std::size_t k = 0; k < predictions_.size(); ++k) o << ',';
    o << ',' << io::csv_escape(reason) << '\n';
    ++written_;
  }

  void write_held() {
    for (const auto& [points, reason] : held_) error_row(points, reason);
    held_.clear();
  }

  void header(const PointSet& points) {
    header_written_ = true;
    std::ostream& o = out();
    if (labels_.empty()) {
      for (const auto& p : points.properties) labels_.push_back(p.key);
    }
    o << "id,source,record,title";
    // Column names stay unique: an input tag that repeats a name already written (e.g. a tag
    // called "id") becomes "input_<tag>" (then "input_<tag>_2", ...); a prediction that
    // repeats one becomes "<name>_2", "<name>_3", ...
    std::vector<std::string> used = {"id", "source", "record", "title"};
    if (error_column_) used.emplace_back("error");
    const auto unique = [&used](const std::string& name, const std::string& unit, bool input) {
      const auto with_unit = [&unit](const std::string& n) {
        return unit.empty() ? n : n + " [" + unit + "]";
      };
      std::string header = with_unit(name);
      for (int k = 1; std::find(used.begin(), used.end(), header) != used.end(); ++k) {
        std::string renamed = input ? "input_" : "";
        renamed += name;
        if (!input || k > 1) {  // (appended piecewise: GCC 12 -Wrestrict false positive)
          renamed += '_';
          renamed += std::to_string(input ? k : k + 1);
        }
        header = with_unit(renamed);
      }
      used.push_back(header);
      return header;
    };
    for (const auto& key : labels_) {
      const Property* p = points.property(key);
      o << ',' << io::csv_escape(unique(key, p != nullptr ? p->unit : std::string(), true));
    }
    for (const auto& [name, unit] : predictions_) o << ',' << io::csv_escape(unique(name, unit, false));
    if (error_column_) o << ",error";
    o << '\n';
  }

  void row_start(const PointSet& points) {
    std::ostream& o = out();
    o << (written_ + 1) << ',' << io::csv_escape(points.source) << ',' << points.record << ','
      << io::csv_escape(points.title);
    for (const auto& key : labels_) {
      const Property* p = points.property(key);
      o << ',';
      if (p != nullptr) o << io::csv_escape(p->value);
    }
    // The columns are fixed by the header: a label a later record adds has no place. Said once per
    // label, so it is not lost unnoticed.
    if (known_.empty()) known_.insert(labels_.begin(), labels_.end());
    for (const auto& p : points.properties) {
      if (!known_.insert(p.key).second) continue;  // a column, or warned about already
      log_warning(out_->path(), ": ", points.source, " record ", points.record, " has the label '", p.key,
                  "', which is not a column of this CSV (its columns are the first record's labels); "
                  "SDF or extended-XYZ output keeps every label");
    }
  }

  std::vector<std::string> labels_;
  std::unordered_set<std::string> known_;  // the columns and the labels warned about (once each)
  std::vector<std::pair<std::string, std::string>> predictions_;
  bool columns_given_ = false;
  bool error_column_ = false;
  bool header_written_ = false;
  std::vector<std::pair<PointSet, std::string>> held_;  // rejected records before the header
};

std::string xyz_value(const std::string& value) {
  bool plain = !value.empty();
  for (char c : value) {
    if (c == ' ' || c == '\t' || c == '"' || c == '=' || c == '\n' || c == '\r' || c == '{' ||
        c == '}' || c == '\\') {
      plain = false;
    }
  }
  if (plain) return value;
  std::string out = "\"";
  for (char c : value) {
    if (c == '\n' || c == '\r') {
      out += ' ';
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

std::string xyz_key(const std::string& key) {
  std::string out;
  for (char c : key) out += (c == ' ' || c == '\t' || c == '=' || c == '"') ? '_' : c;
  return out.empty() ? "_" : out;
}

class ExtXyzWriter final : public MoleculeWriter {
 public:
  using MoleculeWriter::MoleculeWriter;

  void write(const PointSet& points, const std::vector<PredictedValue>& predictions) override {
    std::ostream& o = out();
    const std::size_t n = points.size();
    o << n << '\n' << "Properties=species:S:1:pos:R:3";
    std::vector<const AtomColumn*> columns;
    bool have_charges = false;
    for (const auto& c : points.atom_columns) {
      const std::size_t expected = n * static_cast<std::size_t>(c.width);
      const std::size_t have = c.type == 'S' ? c.strings.size() : c.values.size();
      if (have != expected || c.name == "species" || c.name == "pos") continue;
      o << ':' << xyz_key(c.name) << ':' << c.type << ':' << c.width;
      columns.push_back(&c);
      have_charges = have_charges || c.name == "formal_charges";
    }
    // Formal charges (from an SDF's CHG, a charged SMILES) as the column the reader takes them from.
    const bool charges = !have_charges && points.formal_charges.size() == n &&
                         std::any_of(points.formal_charges.begin(), points.formal_charges.end(),
                                     [](std::int32_t q) { return q != 0; });
    if (charges) o << ":formal_charges:I:1";
    if (!points.title.empty() && points.property("title") == nullptr) {
      o << " title=" << xyz_value(points.title);
    }
    for (const auto& p : points.properties) {
      if (!kept(p, predictions) || p.key == "Properties") continue;
      o << ' ' << xyz_key(p.key) << '=' << xyz_value(p.value);
      if (!p.unit.empty() && points.property(p.key + "_unit") == nullptr)
        o << ' ' << xyz_key(p.key) << "_unit=" << xyz_value(p.unit);
    }
    for (const auto& pred : predictions) {
      o << ' ' << xyz_key(pred.name) << '=' << shortest_number(pred.value);
      if (!pred.unit.empty()) o << ' ' << xyz_key(pred.name) << "_unit=" << xyz_value(pred.unit);
    }
    o << '\n';
    for (std::size_t i = 0; i < n; ++i) {
      o << element_symbol(points.atomic_numbers[i]);
      for (Index c = 0; c < 3; ++c) {
        o << ' ' << shortest_number(points.positions(static_cast<Index>(i), c));
      }
      for (const AtomColumn* col : columns) {
        for (int k = 0; k < col->width; ++k) {
          const std::size_t at = i * static_cast<std::size_t>(col->width) +
                                 static_cast<std::size_t>(k);
          if (col->type == 'S') {
            std::string s = col->strings[at];
            for (char& ch : s) {
              if (ch == ' ' || ch == '\t') ch = '_';
            }
            o << ' ' << (s.empty() ? "_" : s);
          } else if (col->type == 'L') {
            o << ' ' << (col->values[at] != 0.0 ? 'T' : 'F');
          } else if (col->type == 'I') {
            o << ' ' << static_cast<long long>(col->values[at]);
          } else {
            o << ' ' << shortest_number(col->values[at]);
          }
        }
      }
      if (charges) o << ' ' << points.formal_charges[i];
      o << '\n';
    }
    ++written_;
  }

  void write_error(const PointSet& points, const std::string& reason,
                   const RejectedRecord*) override {
    PointSet marked = points;
    marked.set_property(kErrorTag, reason);
    write(marked, {});
  }
};

}  // namespace

std::unique_ptr<MoleculeWriter> MoleculeWriter::open(const std::string& path,
                                                     const WriteOptions& options) {
  Format format = options.format != Format::unknown ? options.format : format_from_path(path);
  if (format == Format::unknown) {
    throw InvalidArgument(path + ": cannot tell the output format from the name; give it "
                                 "explicitly (sdf, xyz, extxyz, csv)");
  }
  if (format == Format::qm9 || format == Format::pdb || format == Format::smi) {
    throw InvalidArgument(path + ": flt reads " + std::string(format_name(format)) +
                          " files but does not write them");
  }
  if (path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0) {
    throw InvalidArgument(path + ": compressed output is not supported");
  }
  auto out = std::make_unique<io::AtomicOutputFile>(path);
  switch (format) {
    case Format::sdf: return std::unique_ptr<MoleculeWriter>(new SdfWriter(std::move(out)));
    case Format::csv: return std::unique_ptr<MoleculeWriter>(new CsvWriter(std::move(out), options));
    case Format::xyz:
    case Format::extxyz: return std::unique_ptr<MoleculeWriter>(new ExtXyzWriter(std::move(out)));
    default: break;
  }
  throw InvalidArgument(path + ": unsupported output format");
}

}  // namespace flt::chem
