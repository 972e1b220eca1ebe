// Dataset loading: point sets from flt::chem readers plus labels (from the records or a CSV),
// converted to training units here, at the boundary. S molecules, P targets, labels S x P.
#include "pipeline/dataset.hpp"

#include "chem/point_set.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text.hpp"
#include "io/csv.hpp"
#include "io/data_checksum.hpp"
#include "train/labels.hpp"
#include "io/units.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <utility>

namespace flt::pipeline {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

// "HOMO" -> "homo", "u0" -> "U0": the QM9 spelling of a QM9 property, any other name unchanged.
// One-letter names alias only as QM9 spells them (A, B, C, G, H, U): a, b, c, g, h and u are
// names users give their own labels.
std::string canonical_target_name(const std::string& name) {
  if (io::find_qm9_target(name)) return name;
  if (name.size() < 2) return name;
  for (const auto& t : io::qm9_targets())
    if (iequals(t.name, name)) return std::string(t.name);
  return name;
}

// Whether the key of a NAME=VALUE option (--units, --source-units, --pooling) names the target
// listed as `raw` (canonical spelling `name`): as typed, as spelled canonically, or in any case.
bool key_names_target(const std::string& key, const std::string& raw, const std::string& name) {
  return key == raw || key == name || iequals(key, raw) || iequals(key, name);
}

// The value given for a target in such an option (an exact spelling wins over another case).
std::string lookup_target(const std::map<std::string, std::string>& m, const std::string& raw,
                          const std::string& name) {
  for (const std::string& exact : {raw, name})
    if (auto it = m.find(exact); it != m.end()) return it->second;
  for (const auto& [key, value] : m)
    if (key_names_target(key, raw, name)) return value;
  return {};
}

// Every key of a NAME=VALUE option names a target: a misspelt one would be ignored silently.
void check_target_keys(const std::map<std::string, std::string>& m, const char* option,
                       const std::vector<std::string>& raw_targets) {
  for (const auto& [key, value] : m) {
    (void)value;
    const bool known = std::any_of(raw_targets.begin(), raw_targets.end(), [&](const std::string& raw) {
      return key_names_target(key, raw, canonical_target_name(raw));
    });
    if (!known) {
      std::string targets;
      for (const auto& raw : raw_targets) targets += (targets.empty() ? "" : ", ") + canonical_target_name(raw);
      throw ConfigError(std::string(option) + " given for '" + key + "', which is not a target (targets: " +
                        targets + ")");
    }
  }
}

// A property of the record named like the target (exact spelling first, then any case).
const chem::Property* find_label(const chem::PointSet& p, const std::string& name) {
  if (const chem::Property* prop = p.property(name)) return prop;
  for (const auto& prop : p.properties)
    if (iequals(prop.key, name)) return &prop;
  return nullptr;
}

// Resolves the per-target settings that do not depend on the data: canonical name, training unit
// when it is fixed up front (asked for, or a QM9 property), pooling when asked for.
struct TargetPlan {
  DatasetTarget target;
  bool unit_fixed = false;
  std::string fallback_source_unit;  // for labels given without a unit
  bool source_unit_given = false;    // --source-units named it: it overrides units in the files
  std::optional<bool> extensive;     // from --pooling
};

std::vector<TargetPlan> plan_targets(const DatasetOptions& options) {
  std::vector<TargetPlan> plans;
  for (const std::string& raw : options.targets) {
    if (raw.empty()) throw ConfigError("empty target name in --targets");
    TargetPlan plan;
    plan.target.name = canonical_target_name(raw);
    // Checked before anything is read: the model file could not hold the name.
    if (const std::string why = models::target_name_problem(plan.target.name); !why.empty())
      throw ConfigError("target '" + plan.target.name + "' " + why +
                        ": target names are written in model files, option lists, CSV headers and extended-XYZ "
                        "keys, where blanks, ',' and '=' separate names; rename the label in the input (an SD tag "
                        "can carry its unit in its name: >  <E_total [kcal/mol]>)");
    for (const auto& other : plans)
      if (other.target.name == plan.target.name)
        throw ConfigError("target '" + plan.target.name + "' is listed twice");
    const io::TargetInfo* qm9 = io::find_qm9_target(plan.target.name);
    std::string src = lookup_target(options.source_units, raw, plan.target.name);
    plan.source_unit_given = !src.empty();
    // No unit is assumed from a QM9 name: QM9 files give their units (the reader sets them), and a
    // label "gap" in a CSV, an SD tag or an extended-XYZ key may be in any unit.
    if (!src.empty()) plan.fallback_source_unit = std::string(io::find_unit(src).name);
    std::string unit = lookup_target(options.units, raw, plan.target.name);
    if (!unit.empty()) {
      plan.target.unit = std::string(io::find_unit(unit).name);
      plan.unit_fixed = true;
    } else if (qm9) {
      plan.target.unit = std::string(qm9->training_unit);
      plan.unit_fixed = true;
    }
    if (plan.unit_fixed && !plan.fallback_source_unit.empty() &&
        io::find_unit(plan.fallback_source_unit).dimension != io::find_unit(plan.target.unit).dimension)
      throw ConfigError("target '" + plan.target.name + "': unit '" + plan.target.unit +
                        "' does not match the source unit '" + plan.fallback_source_unit + "'");
    std::string pooling = lookup_target(options.pooling, raw, plan.target.name);
    if (pooling == "sum" || pooling == "extensive") plan.extensive = true;
    else if (pooling == "mean" || pooling == "intensive") plan.extensive = false;
    else if (!pooling.empty())
      throw ConfigError("target '" + plan.target.name + "': pooling '" + pooling +
                        "' is not one of sum, mean");
    plans.push_back(std::move(plan));
  }
  check_target_keys(options.pooling, "pooling", options.targets);
  check_target_keys(options.units, "--units", options.targets);
  check_target_keys(options.source_units, "--source-units", options.targets);
  return plans;
}

void finish_targets(std::vector<TargetPlan>& plans) {
  for (auto& plan : plans) {
    DatasetTarget& t = plan.target;
    if (t.unit.empty() && !plan.fallback_source_unit.empty())
      t.unit = train::default_training_unit(t.name, plan.fallback_source_unit);
    if (plan.extensive) {
      t.extensive = *plan.extensive;
    } else if (const io::TargetInfo* qm9 = io::find_qm9_target(t.name)) {
      t.extensive = qm9->extent == io::Extent::extensive;
    } else {
      // Energies are sums of atomic contributions; anything else (dipoles, orbital energies
      // given under other names, ...) is averaged unless --pooling says otherwise.
      t.extensive = !t.unit.empty() && io::find_unit(t.unit).dimension == io::Dimension::energy;
    }
  }
}

class DatasetBuilder {
 public:
  DatasetBuilder(const DatasetOptions& options, std::optional<train::LabelTable> csv)
      : options_(options), plans_(plan_targets(options)), csv_(std::move(csv)) {
    const std::size_t p = plans_.size();
    missing_.assign(p, 0);
    if (csv_) {
      // The CSV reader already converted to its training units; adopt them.
      for (std::size_t t = 0; t < p; ++t) {
        plans_[t].target.unit = csv_->units[t];
        plans_[t].target.source_unit = csv_->source_units[t];
        plans_[t].unit_fixed = true;
      }
      by_title_ = csv_->key_column == "title" || csv_->key_column == "name";
    }
  }

  bool full() const { return options_.limit > 0 && added_ >= options_.limit; }
  std::size_t added() const noexcept { return added_; }

  // The second read of a sharded load: instead of collecting molecules, check each against
  // `target` (same position, id and digest) and put the coordinates of those options.keep_coordinates
  // selects into it. `inputs` names the inputs in errors.
  void refill(Dataset& target, std::string inputs) {
    refill_ = &target;
    inputs_ = std::move(inputs);
  }
  IoError changed_between_reads(const std::string& what) const {
    return IoError(inputs_, "the second read of a sharded load " + what +
                                ": an input changed between the reads, or cannot be read twice (a pipe); under "
                                "mpirun every rank reads each input twice");
  }

  // Adds a record or returns the reason it is bad (labels that are not numbers, geometry, ...).
  // InputError is thrown only for MissingLabels::error.
  std::optional<std::string> add(chem::PointSet&& p) {
    if (p.size() == 0) return "molecule has no atoms";
    if (p.size() < options_.min_atoms)
      return "molecule has " + std::to_string(p.size()) + " atom(s), fewer than min-atoms = " +
             std::to_string(options_.min_atoms);
    for (std::size_t i = 0; i < p.size(); ++i) {
      const int z = p.atomic_numbers[i];
      if (z < 1 || z > options_.max_z)
        return "atom " + std::to_string(i + 1) + ": atomic number " + std::to_string(z) +
               " outside 1.." + std::to_string(options_.max_z);
    }
    if (auto problem = chem::check_geometry(p, 0.0)) return *problem;

    if (!csv_ && seen_keys_.size() < 64)
      for (const auto& prop : p.properties)
        if (std::find(seen_keys_.begin(), seen_keys_.end(), prop.key) == seen_keys_.end()) seen_keys_.push_back(prop.key);
    const std::string where = p.source + ": record " + std::to_string(p.record);
    std::string id = p.title.empty() ? p.source + ":" + std::to_string(p.record) : p.title;
    std::vector<double> row(plans_.size(), kNaN);
    // An energy label whose unit in the file --source-units replaced: (key, file's unit, given unit).
    std::optional<std::array<std::string, 3>> energy_unit_replaced;
    if (csv_) {
      const double* values = nullptr;
      if (by_title_) values = csv_->find(p.title);
      else values = csv_->find(id);
      if (!values && !by_title_ && !p.title.empty()) values = csv_->find(p.title);
      if (!values) {
        if (const chem::Property* index = p.property("index")) values = csv_->find(index->value);
      }
      if (values) std::copy(values, values + plans_.size(), row.begin());
    } else {
      for (std::size_t t = 0; t < plans_.size(); ++t) {
        const chem::Property* prop = find_label(p, plans_[t].target.name);
        if (!prop) continue;
        if (!prop->number) {
          if (io::is_missing_value_text(prop->value)) continue;
          return "label '" + prop->key + "' = '" + prop->value + "' is not a number";
        }
        // --source-units, else the unit the file gives (or the reader's convention), else QM9's.
        std::string unit = plans_[t].source_unit_given || prop->unit.empty()
                               ? plans_[t].fallback_source_unit
                               : prop->unit;
        // An empty unit given with --source-units is the dimensionless one ("1").
        if (unit.empty() && !plans_[t].source_unit_given) {
          throw ConfigError(where + ": label '" + prop->key +
                            "' has no unit; give it with --source-units " + plans_[t].target.name +
                            "=<unit> (units are never guessed; 1 for a dimensionless label such as logP)");
        }
        if (prop->unit_by_convention && !plans_[t].source_unit_given && !convention_warned_) {
          convention_warned_ = true;
          log_warning(where, ": label '", prop->key, "' has no unit in the file and is read in ", prop->unit,
                      " by ASE's convention (forces in ", prop->unit,
                      "/A); if the file holds another unit, give it with --source-units ", plans_[t].target.name,
                      "=<unit> and --forces-unit");
        }
        row[t] = *prop->number * factor(t, unit);
        if (plans_[t].source_unit_given && !prop->unit.empty() && !energy_unit_replaced) {
          const io::Unit& file_unit = io::find_unit(prop->unit);
          if (file_unit.dimension == io::Dimension::energy && file_unit.name != io::find_unit(unit).name)
            energy_unit_replaced = std::array<std::string, 3>{prop->key, std::string(file_unit.name), unit};
        }
      }
    }
    for (std::size_t t = 0; t < plans_.size(); ++t) {
      if (!std::isnan(row[t]) && !std::isfinite(row[t]))
        return "label '" + plans_[t].target.name + "' is not finite";
    }
    for (std::size_t t = 0; t < plans_.size(); ++t) {
      if (!std::isnan(row[t])) continue;
      if (options_.missing == MissingLabels::error)
        throw InputError(p.source, p.record, "no label for target '" + plans_[t].target.name + "'");
      if (options_.missing == MissingLabels::skip)
        return "no label for target '" + plans_[t].target.name + "'";
    }
    for (std::size_t t = 0; t < plans_.size(); ++t)
      if (std::isnan(row[t])) ++missing_[t];

    // Reference forces (eV/Angstrom), when asked for: a record without the column keeps its
    // molecule (forces missing, masked); a column of another shape is a bad record.
    Mat<double> forces(0, 3);
    if (!options_.forces_column.empty()) {
      if (const chem::AtomColumn* col = p.column(options_.forces_column)) {
        if (col->width != 3 || col->type != 'R' || col->values.size() != 3 * p.size())
          return "forces column '" + col->name + "' has " + std::to_string(col->width) +
                 " component(s) of type " + std::string(1, col->type) + "; forces need 3 real components per atom";
        const std::string unit = !options_.forces_source_unit.empty() ? options_.forces_source_unit : col->unit;
        if (unit.empty())
          throw ConfigError(where + ": the forces column '" + col->name +
                            "' has no unit; give it with --forces-unit (e.g. eV/A, Hartree/Bohr)");
        const double f = force_unit_to_ev_per_angstrom(unit);
        // The file's energy and forces agreed on an energy unit (ASE's eV and eV/A in an ASE
        // file), and --source-units says the energies are in another one: the forces are then
        // suspect too (MD17 in kcal/mol and kcal/mol/A written with ASE's key names), so they are
        // not read in the file's unit without being told.
        if (options_.forces_source_unit.empty() && energy_unit_replaced &&
            io::find_unit(unit.substr(0, unit.rfind('/'))).name == (*energy_unit_replaced)[1]) {
          const auto& [label, file_unit, given] = *energy_unit_replaced;
          throw ConfigError(where + ": --source-units reads '" + label + "' in " + given + " instead of the file's " +
                            file_unit + ", but the forces column '" + col->name + "' would still be read in " + unit +
                            ": give the forces' unit with --forces-unit (" + given + "/A if they are in " + given +
                            " per Angstrom, " + unit + " to keep the file's)");
        }
        forces.resize(static_cast<Index>(p.size()), 3);
        for (std::size_t i = 0; i < 3 * p.size(); ++i) {
          if (!std::isfinite(col->values[i]))
            return "forces column '" + col->name + "': atom " + std::to_string(i / 3 + 1) + " has a non-finite component";
          forces.data()[i] = col->values[i] * f;
        }
      } else {
        ++forces_missing_;
      }
    }

    models::Molecule m;
    m.atomic_numbers.assign(p.atomic_numbers.begin(), p.atomic_numbers.end());
    std::vector<double> xyz(3 * p.size());
    for (std::size_t i = 0; i < p.size(); ++i)
      for (std::size_t k = 0; k < 3; ++k) xyz[3 * i + k] = p.positions(static_cast<Index>(i), static_cast<Index>(k));
    // The digest covers the forces only when they are read (older runs' digests stay valid).
    std::vector<double> digested = row;
    if (!options_.forces_column.empty()) {
      digested.push_back(static_cast<double>(forces.rows()));
      digested.insert(digested.end(), forces.data(), forces.data() + forces.size());
    }
    const std::uint64_t digest = io::molecule_digest(m.atomic_numbers, xyz, digested);
    const std::size_t position = added_++;
    // Checked before keep_coordinates is asked: its selection covers the first read's molecules only.
    if (refill_) {
      if (position >= refill_->size())
        throw changed_between_reads("gave more good molecules than the first read's " + std::to_string(refill_->size()));
      if (digest != refill_->digests[position] || id != refill_->ids[position])
        throw changed_between_reads("found other content for molecule " + std::to_string(position + 1) + " (" +
                                    refill_->sources[position] + ", id '" + refill_->ids[position] + "')");
    }
    const bool keep = !options_.keep_coordinates || options_.keep_coordinates(position);
    Dataset* into = refill_;
    if (keep) {
      m.positions.resize(p.size());
      for (std::size_t i = 0; i < p.size(); ++i) m.positions[i] = {xyz[3 * i], xyz[3 * i + 1], xyz[3 * i + 2]};
      const bool any_charge = std::any_of(p.formal_charges.begin(), p.formal_charges.end(),
                                          [](int q) { return q != 0; });
      if (any_charge) m.formal_charges.assign(p.formal_charges.begin(), p.formal_charges.end());
      if (into) {
        into->molecules[position].positions = std::move(m.positions);
        into->molecules[position].formal_charges = std::move(m.formal_charges);
        if (into->has_forces()) into->forces[position] = forces;
      }
    } else {
      forces.resize(0, 3);  // per-atom data goes with the coordinates
    }
    if (into) return std::nullopt;
    if (!options_.forces_column.empty()) forces_.push_back(std::move(forces));
    digests_.push_back(digest);
    molecules_.push_back(std::move(m));
    ids_.push_back(std::move(id));
    titles_.push_back(p.title);
    sources_.push_back(p.source + ":" + std::to_string(p.record));
    labels_.insert(labels_.end(), row.begin(), row.end());
    return std::nullopt;
  }

  Dataset finish(chem::ReadSummary summary) {
    // A target that no record carries is a mistake (a typo, or labels in another file), not a
    // column of missing values.
    if (!molecules_.empty() && options_.missing == MissingLabels::mask)
      for (std::size_t t = 0; t < plans_.size(); ++t)
        if (missing_[t] == molecules_.size()) {
          std::string known, inputs;
          for (const auto& k : seen_keys_) known += (known.empty() ? "" : ", ") + k;
          for (std::size_t i = 0; i < options_.inputs.size() && i < 3; ++i) inputs += (i ? ", " : "") + options_.inputs[i];
          if (options_.inputs.size() > 3) inputs += " and " + std::to_string(options_.inputs.size() - 3) + " more";
          throw ConfigError("unknown target '" + plans_[t].target.name + "': none of the " +
                            std::to_string(molecules_.size()) + " molecules of " + inputs + " has a label of that name" +
                            (csv_ ? std::string(" in ") + csv_->source
                                  : std::string(" (labels in the input: ") + (known.empty() ? "none" : known) + ")"));
        }
    finish_targets(plans_);
    Dataset d;
    for (auto& plan : plans_) d.targets.push_back(plan.target);
    const Index s = static_cast<Index>(molecules_.size());
    const Index p = static_cast<Index>(plans_.size());
    d.labels.resize(s, p);
    for (Index i = 0; i < s; ++i)
      for (Index t = 0; t < p; ++t) d.labels(i, t) = labels_[static_cast<std::size_t>(i * p + t)];
    d.molecules = std::move(molecules_);
    d.ids = std::move(ids_);
    d.titles = std::move(titles_);
    d.sources = std::move(sources_);
    d.digests = std::move(digests_);
    d.missing_per_target = missing_;
    d.forces = std::move(forces_);
    d.forces_missing = forces_missing_;
    summary.read = d.molecules.size();
    d.summary = std::move(summary);
    return d;
  }

 private:
  // Factor from `unit` to the target's training unit; fixes the training unit on first use.
  double factor(std::size_t t, const std::string& unit) {
    TargetPlan& plan = plans_[t];
    const io::Unit& from = io::find_unit(unit);
    if (plan.target.unit.empty()) plan.target.unit = train::default_training_unit(plan.target.name, from.name);
    if (plan.target.source_unit.empty()) plan.target.source_unit = std::string(from.name);
    const io::Unit& to = io::find_unit(plan.target.unit);
    if (from.dimension != to.dimension)
      throw ConfigError("target '" + plan.target.name + "': the input gives unit '" + std::string(from.name) +
                        "', which cannot be converted to '" + plan.target.unit + "'");
    return io::conversion_factor(from, to);
  }

  const DatasetOptions& options_;
  std::vector<TargetPlan> plans_;
  std::optional<train::LabelTable> csv_;
  bool by_title_ = false;
  std::vector<std::size_t> missing_;
  std::vector<std::string> seen_keys_;  // label keys met in the records (for messages)
  std::vector<models::Molecule> molecules_;
  std::vector<std::string> ids_, titles_, sources_;
  std::vector<double> labels_;
  std::vector<std::uint64_t> digests_;
  std::vector<Mat<double>> forces_;
  std::size_t forces_missing_ = 0;
  bool convention_warned_ = false;  // a label read in its format's conventional unit was reported
  std::size_t added_ = 0;  // good molecules so far
  Dataset* refill_ = nullptr;
  std::string inputs_;
};

std::optional<train::LabelTable> load_csv(const DatasetOptions& options) {
  if (options.labels_csv.empty()) return std::nullopt;
  if (options.targets.empty()) throw ConfigError("--labels needs --targets");
  train::LabelCsvOptions csv;
  csv.key_column = options.label_key;
  for (const auto& raw : options.targets) {
    const std::string name = canonical_target_name(raw);
    csv.targets.push_back(name);
    if (std::string v = lookup_target(options.source_units, raw, name); !v.empty()) csv.source_units[name] = v;
    if (std::string v = lookup_target(options.units, raw, name); !v.empty()) csv.training_units[name] = v;
  }
  return train::read_label_csv(options.labels_csv, csv);
}

void reject(chem::ReadSummary& summary, const DatasetOptions& options, const std::string& file,
            std::size_t record, const std::string& reason) {
  if (options.policy == chem::ErrorPolicy::fail) throw InputError(file, record, reason);
  if (options.warn_skipped) log_warning("skipping ", InputError(file, record, reason).what());
  summary.skipped.push_back({file, record, reason});
}

Dataset finish_or_throw(DatasetBuilder& builder, chem::ReadSummary summary, const std::string& what) {
  Dataset d = builder.finish(std::move(summary));
  if (d.size() == 0) {
    std::string reason = "no usable molecules";
    if (!d.summary.skipped.empty()) reason += " (" + d.summary.describe() + ")";
    throw InputError(what, 0, reason);
  }
  return d;
}


}  // namespace

MissingLabels missing_labels_from_string(const std::string& name) {
  if (name == "mask") return MissingLabels::mask;
  if (name == "skip") return MissingLabels::skip;
  if (name == "error") return MissingLabels::error;
  throw ConfigError("missing-labels '" + name + "' is not one of mask, skip, error");
}

const char* to_string(MissingLabels policy) noexcept {
  switch (policy) {
    case MissingLabels::mask: return "mask";
    case MissingLabels::skip: return "skip";
    case MissingLabels::error: return "error";
  }
  return "?";
}

std::vector<std::string> Dataset::target_names() const {
  std::vector<std::string> out;
  for (const auto& t : targets) out.push_back(t.name);
  return out;
}

std::vector<std::string> Dataset::target_units() const {
  std::vector<std::string> out;
  for (const auto& t : targets) out.push_back(t.unit);
  return out;
}

std::vector<models::TargetSpec> Dataset::target_specs() const {
  std::vector<models::TargetSpec> out;
  for (const auto& t : targets) out.push_back({t.name, t.unit, t.extensive});
  return out;
}

std::size_t Dataset::coordinates_held() const noexcept {
  return static_cast<std::size_t>(std::count_if(molecules.begin(), molecules.end(), [](const models::Molecule& m) {
    return !m.positions.empty();
  }));
}

std::span<const double> Dataset::label_row(std::size_t s) const {
  require(s < size(), "Dataset::label_row: index out of range");
  return {labels.data() + s * num_targets(), num_targets()};
}

std::string Dataset::describe() const {
  std::ostringstream out;
  out << "read " << size() << " molecule" << (size() == 1 ? "" : "s");
  if (!summary.skipped.empty()) {
    out << "; skipped " << summary.skipped.size() << " record" << (summary.skipped.size() == 1 ? "" : "s") << ": "
        << summary.skipped_list();
  }
  for (std::size_t t = 0; t < targets.size(); ++t)
    if (missing_per_target[t] > 0)
      out << "; " << targets[t].name << ": " << missing_per_target[t] << " label"
          << (missing_per_target[t] == 1 ? "" : "s") << " missing (masked)";
  if (has_forces() && forces_missing > 0)
    out << "; forces: " << forces_missing << " molecule" << (forces_missing == 1 ? "" : "s")
        << " without (masked)";
  return out.str();
}

namespace {

// Reads every record of options.inputs into `builder` (bad records per the error policy).
chem::ReadSummary read_records(DatasetBuilder& builder, const DatasetOptions& options) {
  chem::ReadSummary summary;
  auto reader = chem::MoleculeReader::open(options.inputs, options.read);
  while (!builder.full()) {
    std::optional<chem::PointSet> p;
    try {
      p = reader->next();
    } catch (const InputError& e) {
      reject(summary, options, e.file(), e.record(), e.reason());
      continue;
    } catch (const IoError& e) {
      if (options.policy == chem::ErrorPolicy::fail) throw;
      if (options.warn_skipped) log_warning("skipping ", e.what());
      summary.skipped.push_back({e.path(), 0, e.what()});
      continue;
    }
    if (!p) break;
    const std::string file = p->source;
    const std::size_t record = p->record;
    if (auto problem = builder.add(std::move(*p))) reject(summary, options, file, record, *problem);
    if (options.on_progress) options.on_progress(reader->progress());
  }
  if (options.on_progress) options.on_progress(reader->progress());
  return summary;
}

}  // namespace

Dataset load_dataset(const DatasetOptions& options) {
  if (options.inputs.empty()) throw ConfigError("no input files given");
  DatasetBuilder builder(options, load_csv(options));
  chem::ReadSummary summary = read_records(builder, options);
  return finish_or_throw(builder, std::move(summary), join(options.inputs, ", "));
}

void load_coordinates(Dataset& data, DatasetOptions options, std::function<bool(std::size_t)> keep) {
  if (options.inputs.empty()) throw ConfigError("no input files given");
  options.keep_coordinates = std::move(keep);
  options.warn_skipped = false;
  require(data.digests.size() == data.size(), "load_coordinates: the dataset has no molecule digests");
  // Only the kept coordinates are stored: the records are checked against `data` as they are read.
  DatasetBuilder builder(options, load_csv(options));
  builder.refill(data, join(options.inputs, ", "));
  read_records(builder, options);
  if (builder.added() != data.size())
    throw builder.changed_between_reads("gave " + std::to_string(builder.added()) + " good molecules, the first read " +
                                        std::to_string(data.size()));
}

Dataset dataset_from_point_sets(std::vector<chem::PointSet> points, const DatasetOptions& options) {
  DatasetBuilder builder(options, load_csv(options));
  chem::ReadSummary summary;
  for (auto& p : points) {
    if (builder.full()) break;
    const std::string file = p.source.empty() ? "<memory>" : p.source;
    const std::size_t record = p.record;
    if (auto problem = builder.add(std::move(p))) reject(summary, options, file, record, *problem);
  }
  return finish_or_throw(builder, std::move(summary), "<memory>");
}

Dataset subset(const Dataset& data, std::span<const std::size_t> indices) {
  Dataset d;
  d.targets = data.targets;
  d.summary = data.summary;
  const Index p = static_cast<Index>(data.num_targets());
  d.labels.resize(static_cast<Index>(indices.size()), p);
  d.missing_per_target.assign(data.num_targets(), 0);
  for (std::size_t k = 0; k < indices.size(); ++k) {
    const std::size_t i = indices[k];
    require(i < data.size(), "subset: index out of range");
    d.molecules.push_back(data.molecules[i]);
    d.ids.push_back(data.ids[i]);
    d.titles.push_back(data.titles[i]);
    d.sources.push_back(data.sources[i]);
    if (data.digests.size() == data.size()) d.digests.push_back(data.digests[i]);
    if (data.has_forces()) {
      d.forces.push_back(data.forces[i]);
      if (data.forces[i].rows() == 0) ++d.forces_missing;
    }
    for (Index t = 0; t < p; ++t) {
      d.labels(static_cast<Index>(k), t) = data.labels(static_cast<Index>(i), t);
      if (std::isnan(data.labels(static_cast<Index>(i), t))) ++d.missing_per_target[static_cast<std::size_t>(t)];
    }
  }
  return d;
}

Batch make_batch(const Dataset& data, std::span<const std::size_t> indices) {
  Batch b;
  b.indices.assign(indices.begin(), indices.end());
  std::vector<const models::Molecule*> ptrs;
  ptrs.reserve(indices.size());
  const Index p = static_cast<Index>(data.num_targets());
  b.labels.resize(static_cast<Index>(indices.size()), p);
  for (std::size_t k = 0; k < indices.size(); ++k) {
    require(indices[k] < data.size(), "make_batch: index out of range");
    ptrs.push_back(&data.molecules[indices[k]]);
    for (Index t = 0; t < p; ++t) b.labels(static_cast<Index>(k), t) = data.labels(static_cast<Index>(indices[k]), t);
  }
  b.molecules = models::MoleculeBatch::from(std::span<const models::Molecule* const>(ptrs));
  if (data.has_forces()) {
    b.forces = Mat<double>::Constant(b.molecules.num_atoms(), 3, std::numeric_limits<double>::quiet_NaN());
    for (std::size_t k = 0; k < indices.size(); ++k) {
      const Mat<double>& f = data.forces[indices[k]];
      const auto s = static_cast<Index>(k);
      if (f.rows() == b.molecules.index.size(s)) b.forces.middleRows(b.molecules.index.begin(s), f.rows()) = f;
    }
  }
  return b;
}

Batch make_model_batch(const Dataset& data, std::span<const std::size_t> indices,
                       const models::MoleculeModel<float>& model) {
  Batch b = make_batch(data, indices);
  const auto order = model.spatial_order(b.molecules);
  if (!order) return b;
  b.molecules = models::reordered(b.molecules, *order);
  if (b.forces.rows() != 0) b.forces = models::rows_in_order(b.forces, *order);
  return b;
}

double force_unit_to_ev_per_angstrom(const std::string& unit) {
  const auto slash = unit.rfind('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == unit.size())
    throw ConfigError("force unit '" + unit + "' is not of the form <energy>/<length> (e.g. eV/A, Hartree/Bohr)");
  const io::Unit& energy = io::find_unit(unit.substr(0, slash));
  const io::Unit& length = io::find_unit(unit.substr(slash + 1));
  if (energy.dimension != io::Dimension::energy || length.dimension != io::Dimension::length)
    throw ConfigError("force unit '" + unit + "' is not an energy per length (e.g. eV/A, Hartree/Bohr)");
  return energy.to_base / length.to_base;
}

std::vector<std::vector<std::size_t>> batch_indices(std::span<const std::size_t> order, std::size_t batch_size) {
  require(batch_size >= 1, "batch_indices: batch size must be at least 1");
  std::vector<std::vector<std::size_t>> out;
  for (std::size_t begin = 0; begin < order.size(); begin += batch_size) {
    const std::size_t end = std::min(order.size(), begin + batch_size);
    out.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(begin), order.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return out;
}

std::vector<std::vector<std::size_t>> batch_indices(std::span<const std::size_t> order,
                                                    std::size_t max_molecules,
                                                    std::span<const std::size_t> atom_counts,
                                                    std::size_t max_atoms) {
  require(max_molecules >= 1, "batch_indices: batch size must be at least 1");
  if (max_atoms == 0) return batch_indices(order, max_molecules);
  std::vector<std::vector<std::size_t>> out;
  std::vector<std::size_t> current;
  std::size_t atoms = 0;
  for (const std::size_t i : order) {
    require(i < atom_counts.size(), "batch_indices: index without an atom count");
    const std::size_t n = atom_counts[i];
    if (!current.empty() && (current.size() >= max_molecules || atoms + n > max_atoms)) {
      out.push_back(std::move(current));
      current.clear();
      atoms = 0;
    }
    current.push_back(i);
    atoms += n;
  }
  if (!current.empty()) out.push_back(std::move(current));
  return out;
}

std::vector<std::size_t> atom_counts(const Dataset& data) {
  std::vector<std::size_t> counts(data.size());
  for (std::size_t i = 0; i < data.size(); ++i) counts[i] = data.molecules[i].atomic_numbers.size();
  return counts;
}

}  // namespace flt::pipeline
