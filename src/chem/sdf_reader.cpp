// SDF / MOL record parser on RDKit's ForwardSDMolSupplier (V2000 and V3000, multi-record,
// streaming). RDKit delimits the records ("$$$$"), parses and sanitizes them; this file turns each
// molecule into a PointSet: hydrogens (explicit kept, implicit-only added with 3-D coordinates),
// 3-D check (error / ETKDG conformer / accept), SD tags as properties, geometry check.
#include "chem/rdkit_log.hpp"
#include "chem/record_parsers.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

#include <GraphMol/DistGeomHelpers/Embedder.h>
#include <GraphMol/FileParsers/MolSupplier.h>
#include <GraphMol/MolOps.h>
#include <GraphMol/ROMol.h>
#include <GraphMol/RWMol.h>

#include <cmath>

namespace flt::chem::detail {
namespace {

// Exposes the supplier's line counter so errors can name the line a record ends on.
class Supplier final : public RDKit::ForwardSDMolSupplier {
 public:
  using RDKit::ForwardSDMolSupplier::ForwardSDMolSupplier;
  int line() const noexcept { return d_line; }
};

std::string join_errors(const std::vector<RdkitMessage>& messages) {
  std::string out;
  for (const auto& m : messages) {
    if (m.level != LogLevel::error) continue;
    std::string text = m.text;
    if (text.rfind("ERROR: ", 0) == 0) text.erase(0, 7);
    if (text == "moving to the beginning of the next molecule") continue;
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out;
}

bool is_flat(const RDKit::Conformer& conf) {
  if (!conf.is3D()) return true;
  if (conf.getNumAtoms() < 2) return false;
  for (const auto& p : conf.getPositions()) {
    if (p.z != 0.0) return false;
  }
  return true;
}

class SdfParser final : public RecordParser {
 public:
  SdfParser(std::istream& in, std::string source, const ReadOptions& options)
      : source_(std::move(source)),
        options_(options),
        // takeOwnership=false: the caller owns the stream. removeHs=false: hydrogens are atoms
        // of the point set. strictParsing=true: as SDMolSupplier (RDKit's file default).
        supplier_(&in, false, options.sanitize, false, true) {
    route_rdkit_logs();
  }

  std::size_t records() const noexcept override { return record_; }

  std::optional<PointSet> next() override {
    std::vector<RdkitMessage> messages;
    std::unique_ptr<RDKit::ROMol> mol;
    const int first_line = supplier_.line() + 1;
    {
      RdkitLogCapture capture(messages);
      if (supplier_.atEnd()) {
        if (record_ == 0 && !empty_reported_) {
          empty_reported_ = true;
          throw InputError(source_, 0, "no molecule records in the file");
        }
        return std::nullopt;
      }
      ++record_;
      try {
        mol.reset(supplier_.next());
      } catch (const std::exception& e) {
        messages.push_back({LogLevel::error, e.what()});
      }
    }
    if (!mol) {
      std::string reason = join_errors(messages);
      if (reason.empty()) reason = "RDKit could not read the record";
      fail(reason + " (record starts at line " + std::to_string(first_line) + ")");
    }
    for (const auto& m : messages) {
      log_at(m.level == LogLevel::error ? LogLevel::warning : m.level, source_, ": record ",
             record_, ": RDKit: ", m.text);
    }
    return convert(std::move(mol));
  }

 private:
  [[noreturn]] void fail(const std::string& reason) const {
    throw InputError(source_, record_, reason);
  }

  PointSet convert(std::unique_ptr<RDKit::ROMol> mol) {
    PointSet points;
    points.source = source_;
    points.record = record_;
    if (mol->getNumAtoms() == 0) fail("the record has no atoms");
    mol->getPropIfPresent(RDKit::common_properties::_Name, points.title);
    for (const auto& key : mol->getPropList(false, false)) {
      std::string value;
      mol->getPropIfPresent(key, value);
      points.set_property(key, std::move(value));
    }

    bool flat = mol->getNumConformers() == 0 || is_flat(mol->getConformer());
    if (!options_.sanitize) mol->updatePropertyCache(false);
    unsigned explicit_h = 0;
    unsigned implicit_h = 0;
    for (const auto* atom : mol->atoms()) {
      if (atom->getAtomicNum() == 1) ++explicit_h;
      implicit_h += atom->getTotalNumHs(false);
    }
    const bool add_h = options_.add_hydrogens && explicit_h == 0 && implicit_h > 0;
    if (!add_h && explicit_h > 0 && implicit_h > 0) {
      log_info(source_, ": record ", record_, ": ", implicit_h,
               " implicit hydrogens kept implicit (the record has explicit ones)");
    }
    std::unique_ptr<RDKit::RWMol> rw;
    if (add_h || (flat && options_.missing_3d == Missing3D::generate)) {
      rw = std::make_unique<RDKit::RWMol>(*mol);
    }
    if (flat) {
      if (options_.missing_3d == Missing3D::error) {
        fail("no 3-D coordinates (2-D record); generate a conformer or accept 2-D explicitly");
      }
      if (options_.missing_3d == Missing3D::generate) {
        if (add_h) RDKit::MolOps::addHs(*rw, false, false);
        RDKit::DGeomHelpers::EmbedParameters params = RDKit::DGeomHelpers::ETKDGv3;
        params.randomSeed = static_cast<int>(options_.seed & 0x7fffffffU);
        std::vector<RdkitMessage> messages;
        int conf_id = -1;
        {
          RdkitLogCapture capture(messages);
          try {
            conf_id = RDKit::DGeomHelpers::EmbedMolecule(*rw, params);
          } catch (const std::exception& e) {
            messages.push_back({LogLevel::error, e.what()});
          }
        }
        if (conf_id < 0) {
          const std::string why = join_errors(messages);
          fail("no 3-D coordinates and ETKDG could not generate a conformer" +
               (why.empty() ? std::string() : ": " + why));
        }
        points.conformer_generated = true;
        flat = false;
        log_info(source_, ": record ", record_, ": generated a 3-D conformer (ETKDG, seed ",
                 options_.seed, ")");
      } else {
        points.coordinates_3d = false;
      }
    }
    if (add_h && !points.conformer_generated) {
      // addCoords places each new H from its heavy atom's geometry (3-D, or 2-D when accepted).
      RDKit::MolOps::addHs(*rw, false, true);
    }
    if (add_h) {
      points.hydrogens_added = static_cast<int>(implicit_h);
      log_info(source_, ": record ", record_, ": added ", implicit_h,
               " implicit hydrogens as atoms with coordinates");
    }
    std::shared_ptr<const RDKit::ROMol> final_mol;
    if (rw) {
      final_mol = std::shared_ptr<const RDKit::ROMol>(rw.release());
    } else {
      final_mol = std::shared_ptr<const RDKit::ROMol>(mol.release());
    }

    const unsigned n = final_mol->getNumAtoms();
    points.atomic_numbers.resize(n);
    points.formal_charges.resize(n);
    points.positions.resize(static_cast<Index>(n), 3);
    const bool has_conf = final_mol->getNumConformers() > 0;
    for (unsigned i = 0; i < n; ++i) {
      const auto* atom = final_mol->getAtomWithIdx(i);
      points.atomic_numbers[i] = static_cast<int>(atom->getAtomicNum());
      points.formal_charges[i] = atom->getFormalCharge();
      if (points.atomic_numbers[i] < 1 || points.atomic_numbers[i] > 118) {
        fail("atom " + std::to_string(i + 1) + " is a dummy or query atom (" +
             atom->getSymbol() + "), not an element");
      }
      const RDGeom::Point3D p =
          has_conf ? final_mol->getConformer().getAtomPos(i) : RDGeom::Point3D(0, 0, 0);
      points.positions(static_cast<Index>(i), 0) = p.x;
      points.positions(static_cast<Index>(i), 1) = p.y;
      points.positions(static_cast<Index>(i), 2) = p.z;
    }
    if (auto problem = check_geometry(points, points.coordinates_3d ? options_.min_distance : 0.0)) {
      fail(*problem);
    }
    if (options_.keep_molecule) points.molecule = std::move(final_mol);
    return points;
  }

  std::string source_;
  ReadOptions options_;
  Supplier supplier_;
  std::size_t record_ = 0;
  bool empty_reported_ = false;
};

}  // namespace

std::unique_ptr<RecordParser> make_sdf_parser(std::istream& in, std::string source,
                                              const ReadOptions& options) {
  return std::make_unique<SdfParser>(in, std::move(source), options);
}

}  // namespace flt::chem::detail
