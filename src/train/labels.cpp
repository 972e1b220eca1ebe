#include "train/labels.hpp"

#include "core/text.hpp"
#include "io/atomic_file.hpp"
#include "io/units.hpp"

#include <cmath>
#include <limits>

namespace flt::train {

using io::CsvTable;
using io::Dimension;
using io::TargetInfo;
using io::Unit;
using io::conversion_factor;
using io::csv_error;
using io::find_qm9_target;
using io::find_unit;
using io::parse_csv;
using io::parse_csv_number;
using io::read_file;
using io::split_unit_suffix;
using io::to_string;

std::string default_training_unit(std::string_view target, std::string_view source_unit) {
  const Unit& src = find_unit(source_unit);
  if (const TargetInfo* t = find_qm9_target(target)) {
    const Unit& train = find_unit(t->training_unit);
    if (train.dimension == src.dimension) return std::string(train.name);
  }
  if (src.dimension == Dimension::energy) return "eV";
  return std::string(src.name);
}

const double* LabelTable::find(std::string_view key) const {
  auto it = index_.find(std::string(key));
  if (it == index_.end()) return nullptr;
  return values_.data() + it->second * targets.size();
}

const double* LabelTable::require(std::string_view key) const {
  if (const double* v = find(key)) return v;
  throw csv_error(source, 0, "no labels for '" + std::string(key) + "' (key column '" + key_column + "')");
}

std::size_t LabelTable::line_of(std::string_view key) const {
  auto it = index_.find(std::string(key));
  return it == index_.end() ? 0 : lines_[it->second];
}

void LabelTable::add_row(std::string key, std::vector<double> values, std::size_t line) {
  if (values.size() != targets.size()) throw InvalidArgument("LabelTable::add_row: wrong number of values");
  if (key.empty()) throw csv_error(source, line, "empty key in column '" + key_column + "'");
  if (auto it = index_.find(key); it != index_.end())
    throw csv_error(source, line, "duplicate key '" + key + "' (first on line " + std::to_string(lines_[it->second]) + ")");
  index_.emplace(key, keys_.size());
  keys_.push_back(std::move(key));
  lines_.push_back(line);
  values_.insert(values_.end(), values.begin(), values.end());
}

LabelTable parse_label_csv(std::string_view text, const std::string& source, const LabelCsvOptions& options) {
  if (options.targets.empty()) throw InvalidArgument("parse_label_csv: no targets requested");
  const CsvTable csv = parse_csv(text, source);
  LabelTable table;
  table.source = source;
  table.targets = options.targets;
  // Key column.
  if (!options.key_column.empty()) {
    table.key_column = options.key_column;
  } else {
    for (const char* k : {"id", "title", "name"})
      if (csv.column(k)) {
        table.key_column = k;
        break;
      }
    if (table.key_column.empty()) throw csv_error(source, 1, "no key column: expected one named id, title or name");
  }
  const std::size_t key_col = csv.require_column(table.key_column);
  // Target columns, with units.
  std::vector<std::size_t> cols;
  std::vector<double> factors;
  for (const auto& target : options.targets) {
    std::optional<std::size_t> found;
    std::string unit;
    for (std::size_t c = 0; c < csv.header.size(); ++c) {
      std::pair<std::string, std::string> parts;
      try {
        parts = split_unit_suffix(csv.header[c]);
      } catch (const ConfigError& e) {
        throw csv_error(source, 1, e.what());
      }
      if (parts.first != target) continue;
      if (found) throw csv_error(source, 1, "two columns for target '" + target + "'");
      found = c;
      unit = parts.second;
    }
    if (!found) {
      std::string cols_text;
      for (const auto& h : csv.header) cols_text += (cols_text.empty() ? "" : ", ") + h;
      throw csv_error(source, 1, "no column for target '" + target + "' (columns: " + cols_text + ")");
    }
    if (unit.empty()) {
      if (auto it = options.source_units.find(target); it != options.source_units.end()) unit = it->second;
      else
        throw csv_error(source, 1, "column '" + csv.header[*found] + "' has no unit: write it as '" + target +
                                        " [unit]' or give it with --source-units " + target +
                                        "=<unit> (units are never guessed)");
    }
    std::string train_unit;
    try {
      const Unit& src = find_unit(unit);
      if (const TargetInfo* info = find_qm9_target(target))
        if (find_unit(info->source_unit).dimension != src.dimension)
          throw ConfigError("QM9 property '" + target + "' is a quantity of dimension " +
                            to_string(find_unit(info->source_unit).dimension) + ", the column's unit " + unit +
                            " is a " + to_string(src.dimension));
      if (auto it = options.training_units.find(target); it != options.training_units.end()) train_unit = it->second;
      else train_unit = default_training_unit(target, unit);
      factors.push_back(conversion_factor(find_unit(unit), find_unit(train_unit)));
    } catch (const ConfigError& e) {
      throw csv_error(source, 1, "target '" + target + "': " + e.what());
    }
    cols.push_back(*found);
    table.source_units.push_back(std::string(find_unit(unit).name));
    table.units.push_back(std::string(find_unit(train_unit).name));
  }
  for (std::size_t r = 0; r < csv.rows.size(); ++r) {
    std::vector<double> values(cols.size());
    for (std::size_t t = 0; t < cols.size(); ++t) {
      // An infinite label is kept as such: the dataset skips that record ("label is not finite"),
      // as it does for one read from a molecule file, instead of the whole table failing.
      const std::string cell = flt::lower(flt::trim(csv.rows[r][cols[t]]));
      const bool infinite = cell == "inf" || cell == "+inf" || cell == "-inf" || cell == "infinity" ||
                            cell == "+infinity" || cell == "-infinity";
      const double v = infinite ? (cell[0] == '-' ? -1.0 : 1.0) * std::numeric_limits<double>::infinity()
                                : parse_csv_number(csv.rows[r][cols[t]], csv, r, cols[t]);
      values[t] = std::isnan(v) ? v : v * factors[t];
    }
    table.add_row(csv.rows[r][key_col], std::move(values), csv.row_lines[r]);
  }
  return table;
}

LabelTable read_label_csv(const std::filesystem::path& path, const LabelCsvOptions& options) {
  return parse_label_csv(read_file(path), path.string(), options);
}

}  // namespace flt::train
