// PDB record parser on RDKit's PDB reader (PDBBlockToMol). A record is one structure: the whole
// file, or each MODEL ... ENDMDL block of a multi-model file (NMR ensembles, trajectories); END
// also ends a record, so concatenated PDB files read as consecutive records.
//
// Before RDKit sees a record, its ATOM/HETATM lines are filtered as ReadOptions asks, and every
// choice is counted in the log: waters (HOH, WAT, DOD, H2O and common MD water names) and other
// HETATM groups (ligands, ions, cofactors) are kept, dropped, or make the record bad; of
// alternate locations (altLoc column) the blank one and the first ID seen in the record are kept
// (what most programs do with crystal structures), and an atom without that ID keeps its own
// first; CONECT records that name a dropped atom lose that atom. RDKit then perceives bonds
// (CONECT records, standard residue templates and proximity) and, when the structure has no
// hydrogen atom at all and ReadOptions::add_hydrogens, hydrogens are added with coordinates
// (AddHs(addCoords)). Ligands without CONECT bond orders get
// single bonds from proximity, so their added hydrogens follow that: give such files with
// hydrogens, or as SDF.
#include "chem/rdkit_log.hpp"
#include "chem/record_parsers.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text.hpp"

#include <GraphMol/FileParsers/FileParsers.h>
#include <GraphMol/MolOps.h>
#include <GraphMol/RWMol.h>

#include <algorithm>
#include <array>
#include <map>
#include <set>
#include <sstream>
#include <unordered_set>

namespace flt::chem::detail {
namespace {

std::string trimmed(std::string_view text) { return std::string(flt::trim(text)); }

// Fixed PDB columns (1-based, inclusive) of a line; blank when the line is shorter.
std::string column(const std::string& line, std::size_t first, std::size_t last) {
  if (line.size() < first) return {};
  return line.substr(first - 1, std::min(last, line.size()) - first + 1);
}

bool starts_with(const std::string& line, std::string_view prefix) {
  return line.compare(0, prefix.size(), prefix) == 0;
}

bool is_atom_line(const std::string& line) {
  return starts_with(line, "ATOM  ") || starts_with(line, "HETATM");
}

// Residue names of water models: crystallographic (HOH, DOD) and common MD names.
bool is_water(const std::string& residue) {
  static const std::unordered_set<std::string> names = {"HOH", "WAT", "DOD", "H2O", "TIP",
                                                        "TIP3", "TP3", "SOL", "SPC", "T3P"};
  return names.count(residue) > 0;
}

// "GLY A 12 CA": residue name, chain, number (with insertion code) and atom name of a line.
// The serial of a MODEL line: columns 11-14, or whatever follows "MODEL" (Open Babel writes
// "MODEL 1").
std::string model_serial(const std::string& line) {
  std::string serial = trimmed(column(line, 11, 14));
  return serial.empty() ? trimmed(std::string_view(line).substr(5)) : serial;
}

std::string atom_label(const std::string& line) {
  std::ostringstream label;
  label << trimmed(column(line, 18, 20));
  if (const std::string chain = trimmed(column(line, 22, 22)); !chain.empty()) label << ' ' << chain;
  label << ' ' << trimmed(column(line, 23, 26)) << trimmed(column(line, 27, 27)) << ' '
        << trimmed(column(line, 13, 16));
  return label.str();
}

const char* part_name(PdbPart part) {
  switch (part) {
    case PdbPart::keep: return "kept";
    case PdbPart::drop: return "dropped";
    case PdbPart::fail: return "refused";
  }
  return "?";
}

class PdbParser final : public RecordParser {
 public:
  PdbParser(std::istream& in, std::string source, const ReadOptions& options)
      : in_(in), source_(std::move(source)), options_(options) {}

  std::size_t records() const noexcept override { return record_; }

  std::optional<PointSet> next() override {
    for (;;) {
      std::vector<std::string> lines;
      std::size_t first_line = 0;
      if (!read_record(lines, first_line, model_)) {
        if (record_ == 0 && !reported_empty_) {
          reported_empty_ = true;
          throw InputError(source_, 0, "no ATOM or HETATM records in the file");
        }
        return std::nullopt;
      }
      ++record_;
      return convert(lines, first_line);
    }
  }

 private:
  // The lines of the next record with atoms and its MODEL serial (header lines update the
  // title); false at the end.
  bool read_record(std::vector<std::string>& lines, std::size_t& first_line, std::string& model) {
    std::string line;
    model = next_model_;
    next_model_.clear();
    while (std::getline(in_, line)) {
      ++line_;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (starts_with(line, "HEADER")) {
        id_code_ = trimmed(column(line, 63, 66));
        continue;
      }
      if (starts_with(line, "TITLE ")) {
        const std::string text = trimmed(column(line, 11, 80));
        title_ += (title_.empty() || title_.back() == '-' ? "" : " ") + text;
        continue;
      }
      if (starts_with(line, "MODEL")) {
        if (!lines.empty()) {
          // A MODEL line after atoms without ENDMDL/END: the previous record ends here.
          next_model_ = model_serial(line);
          return true;
        }
        model = model_serial(line);
        continue;
      }
      if (starts_with(line, "ENDMDL") || line == "END" || starts_with(line, "END ")) {
        if (!lines.empty()) return true;
        continue;
      }
      if (is_atom_line(line) || starts_with(line, "CONECT") || starts_with(line, "TER")) {
        if (lines.empty()) first_line = line_;
        if (!starts_with(line, "CONECT") || !lines.empty()) lines.push_back(line);
      }
    }
    if (in_.bad()) throw IoError(source_, "read error");
    return std::any_of(lines.begin(), lines.end(), is_atom_line);
  }

  [[noreturn]] void fail(const std::string& reason) const {
    throw InputError(source_, record_, reason);
  }

  PointSet convert(const std::vector<std::string>& lines, std::size_t first_line) {
    // Filter the atoms: waters, hetero groups, alternate locations.
    std::string block;
    std::vector<std::string> labels;  // kept atoms, in RDKit's order
    std::set<long> dropped_serials;
    std::size_t waters = 0, water_residues = 0, hetero = 0, altloc_dropped = 0;
    std::set<std::string> hetero_names;
    std::string last_water_residue;
    char first_altloc = ' ';
    // Alternate locations: the first ID seen in the record wins; an atom that does not have that
    // ID (a position present only in conformer B) keeps its own first one, so it is not lost.
    // The kept lines reach RDKit with a blank altLoc column (RDKit itself keeps blank and 'A' only).
    std::map<std::string, std::string> altlocs_of;  // atom (residue and name) -> IDs, in file order
    for (const std::string& line : lines) {
      if (!is_atom_line(line) || line.size() < 17 || line[16] == ' ') continue;
      if (first_altloc == ' ') first_altloc = line[16];
      std::string& ids = altlocs_of[column(line, 13, 16) + column(line, 18, 27)];
      if (ids.find(line[16]) == std::string::npos) ids += line[16];
    }
    for (std::string line : lines) {
      if (!is_atom_line(line)) continue;
      const std::string residue = trimmed(column(line, 18, 20));
      const bool het = starts_with(line, "HETATM");
      const char altloc = line.size() >= 17 ? line[16] : ' ';
      const std::string serial_text = trimmed(column(line, 7, 11));
      long serial = 0;
      try {
        serial = serial_text.empty() ? 0 : std::stol(serial_text);
      } catch (const std::exception&) {
        serial = 0;  // hybrid-36 or garbage: RDKit decides; CONECT filtering cannot refer to it
      }
      bool keep = true;
      if (is_water(residue)) {
        ++waters;
        const std::string key = column(line, 18, 27);
        if (key != last_water_residue) ++water_residues;
        last_water_residue = key;
        if (options_.pdb_water == PdbPart::fail) {
          fail("water " + atom_label(line) + ": waters are refused (--pdb-water keep|drop; API: pdb_water)");
        }
        keep = options_.pdb_water == PdbPart::keep;
      } else if (het) {
        ++hetero;
        hetero_names.insert(residue);
        if (options_.pdb_hetero == PdbPart::fail) {
          fail("HETATM group " + atom_label(line) +
               ": hetero groups are refused (--pdb-hetero keep|drop; API: pdb_hetero)");
        }
        keep = options_.pdb_hetero == PdbPart::keep;
      }
      if (keep && altloc != ' ') {
        const std::string& ids = altlocs_of[column(line, 13, 16) + column(line, 18, 27)];
        const char chosen = ids.find(first_altloc) != std::string::npos ? first_altloc : ids.front();
        if (altloc != chosen) {
          keep = false;
          ++altloc_dropped;
        } else {
          line[16] = ' ';
        }
      }
      if (!keep) {
        if (serial != 0) dropped_serials.insert(serial);
        continue;
      }
      block += line;
      block += '\n';
      labels.push_back(atom_label(line));
    }
    if (labels.empty()) fail("no atoms left after dropping waters and hetero groups");
    for (const std::string& line : lines) {
      if (!starts_with(line, "CONECT")) continue;
      if (dropped_serials.empty()) {
        block += line + '\n';
        continue;
      }
      // CONECT serials in columns 7-11, 12-16, ...: keep the bonds between kept atoms.
      std::vector<std::string> fields;
      for (std::size_t c = 7; c + 4 <= std::max<std::size_t>(line.size(), 11); c += 5) {
        fields.push_back(column(line, c, c + 4));
      }
      const auto dropped = [&](const std::string& f) {
        const std::string t = trimmed(f);
        if (t.empty()) return false;
        try {
          return dropped_serials.count(std::stol(t)) > 0;
        } catch (const std::exception&) {
          return false;
        }
      };
      if (fields.empty() || dropped(fields[0])) continue;
      std::string kept = "CONECT" + fields[0];
      std::size_t partners = 0;
      for (std::size_t i = 1; i < fields.size(); ++i) {
        if (trimmed(fields[i]).empty() || dropped(fields[i])) continue;
        kept += fields[i];
        ++partners;
      }
      if (partners > 0) block += kept + '\n';
    }
    block += "END\n";

    const std::string where = source_ + ": record " + std::to_string(record_);
    if (waters > 0) {
      log_info(where, ": ", water_residues, " water molecules (", waters, " atoms) ",
               part_name(options_.pdb_water));
    }
    if (hetero > 0) {
      std::string names;
      for (const auto& n : hetero_names) names += (names.empty() ? "" : ",") + n;
      log_info(where, ": ", hetero, " HETATM atoms (", names, ") ", part_name(options_.pdb_hetero));
    }
    if (altloc_dropped > 0) {
      log_info(where, ": ", altloc_dropped, " atoms of alternate locations other than '",
               first_altloc, "' dropped");
    }

    std::vector<RdkitMessage> messages;
    std::unique_ptr<RDKit::RWMol> mol;
    {
      RdkitLogCapture capture(messages);
      try {
        mol.reset(RDKit::PDBBlockToMol(block, options_.sanitize, false, 0, true));
      } catch (const std::exception& e) {
        messages.push_back({LogLevel::error, e.what()});
      }
    }
    if (!mol) {
      std::string why;
      for (const auto& m : messages) {
        if (m.level >= LogLevel::warning) why += (why.empty() ? "" : "; ") + m.text;
      }
      fail("RDKit could not read the structure (lines " + std::to_string(first_line) + "-" +
           std::to_string(line_) + ")" + (why.empty() ? std::string() : ": " + why));
    }
    for (const auto& m : messages) log_at(LogLevel::warning, where, ": RDKit: ", m.text);
    if (mol->getNumAtoms() != labels.size()) {
      fail("RDKit read " + std::to_string(mol->getNumAtoms()) + " atoms where the file has " +
           std::to_string(labels.size()));
    }
    for (const auto* atom : mol->atoms()) {
      if (atom->getAtomicNum() < 1 || atom->getAtomicNum() > 118) {
        fail("atom " + labels[atom->getIdx()] + " has no element (symbol '" + atom->getSymbol() +
             "'); give the element in columns 77-78");
      }
    }

    PointSet points;
    points.source = source_;
    points.record = record_;
    points.title = !id_code_.empty() ? id_code_ : title_;
    if (!model_.empty()) points.title += (points.title.empty() ? "model " : " model ") + model_;
    if (!id_code_.empty()) points.set_property("pdb_id", id_code_);
    if (!title_.empty()) points.set_property("pdb_title", title_);
    if (!model_.empty()) points.set_property("pdb_model", model_);

    unsigned explicit_h = 0, implicit_h = 0;
    if (!options_.sanitize) mol->updatePropertyCache(false);
    for (const auto* atom : mol->atoms()) {
      if (atom->getAtomicNum() == 1) ++explicit_h;
      implicit_h += atom->getTotalNumHs(false);
    }
    if (options_.add_hydrogens && explicit_h == 0 && implicit_h > 0) {
      RDKit::MolOps::addHs(*mol, false, true);
      points.hydrogens_added = static_cast<int>(implicit_h);
      log_info(where, ": added ", implicit_h, " hydrogens with coordinates (the file has none)");
      for (unsigned i = static_cast<unsigned>(labels.size()); i < mol->getNumAtoms(); ++i) {
        const auto* h = mol->getAtomWithIdx(i);
        const auto nbrs = mol->getAtomNeighbors(h);
        const unsigned heavy = nbrs.first != nbrs.second ? static_cast<unsigned>(*nbrs.first) : i;
        labels.push_back("H on " + (heavy < i ? labels[heavy] : std::string("?")));
      }
    } else if (explicit_h > 0 && implicit_h > 0) {
      log_info(where, ": ", implicit_h, " implicit hydrogens kept implicit (the file has explicit ones)");
    }

    const unsigned n = mol->getNumAtoms();
    points.atomic_numbers.resize(n);
    points.formal_charges.resize(n);
    points.positions.resize(static_cast<Index>(n), 3);
    const RDKit::Conformer& conf = mol->getConformer();
    for (unsigned i = 0; i < n; ++i) {
      const auto* atom = mol->getAtomWithIdx(i);
      points.atomic_numbers[i] = static_cast<int>(atom->getAtomicNum());
      points.formal_charges[i] = atom->getFormalCharge();
      const RDGeom::Point3D p = conf.getAtomPos(i);
      points.positions(static_cast<Index>(i), 0) = p.x;
      points.positions(static_cast<Index>(i), 1) = p.y;
      points.positions(static_cast<Index>(i), 2) = p.z;
    }
    AtomColumn residue_atoms;
    residue_atoms.name = "pdb_atom";
    residue_atoms.type = 'S';
    residue_atoms.strings = labels;
    if (auto problem = check_geometry(points, options_.min_distance,
                                      [&](Index i) { return labels[static_cast<std::size_t>(i)]; })) {
      fail(*problem);
    }
    points.atom_columns.push_back(std::move(residue_atoms));
    if (options_.keep_molecule) points.molecule = std::shared_ptr<const RDKit::ROMol>(mol.release());
    return points;
  }

  std::istream& in_;
  std::string source_;
  ReadOptions options_;
  std::size_t line_ = 0;
  std::size_t record_ = 0;
  std::string id_code_, title_, model_, next_model_;
  bool reported_empty_ = false;
};

}  // namespace

std::unique_ptr<RecordParser> make_pdb_parser(std::istream& in, std::string source,
                                              const ReadOptions& options) {
  return std::make_unique<PdbParser>(in, std::move(source), options);
}

}  // namespace flt::chem::detail
