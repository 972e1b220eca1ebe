// Labels from a CSV file keyed by record id or title, converted to training units at the boundary.
// A target column is matched by name, with the unit in brackets: "U0 [Hartree]", "gap [eV]". A
// column without a unit takes the unit given in LabelCsvOptions::source_units, else the QM9 source
// unit for a QM9 property name; otherwise it is an error (units are never guessed).
// Missing values (empty, NA, NaN) are NaN and masked in losses and metrics.
#pragma once

#include "io/csv.hpp"

#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace flt::train {

struct LabelCsvOptions {
  std::string key_column;                          // "" = the first of: id, title, name
  std::vector<std::string> targets;                // e.g. {"U0", "gap"}; must be non-empty
  std::map<std::string, std::string> source_units;  // for columns without "[unit]"
  std::map<std::string, std::string> training_units;  // default: default_training_unit()
};

// The training unit used when none is asked for: a QM9 property's training unit (energies in eV)
// if the dimension agrees; otherwise eV for any energy, else `source_unit` itself.
std::string default_training_unit(std::string_view target, std::string_view source_unit);

class LabelTable {
 public:
  std::string source;
  std::string key_column;
  std::vector<std::string> targets;
  std::vector<std::string> units;         // training unit per target
  std::vector<std::string> source_units;  // unit found in the file per target

  std::size_t size() const noexcept { return keys_.size(); }
  const std::vector<std::string>& keys() const noexcept { return keys_; }
  // targets.size() values (training units, NaN = missing) or nullptr when `key` is absent.
  const double* find(std::string_view key) const;
  // Like find() but throws InputError(source, 0, "no labels for 'key'").
  const double* require(std::string_view key) const;
  // Line of the row holding `key` (0 if absent).
  std::size_t line_of(std::string_view key) const;

  void add_row(std::string key, std::vector<double> values, std::size_t line);  // InputError on duplicates

 private:
  std::vector<std::string> keys_;
  std::vector<double> values_;  // row-major keys x targets
  std::vector<std::size_t> lines_;
  std::unordered_map<std::string, std::size_t> index_;
};

LabelTable parse_label_csv(std::string_view text, const std::string& source, const LabelCsvOptions& options);
LabelTable read_label_csv(const std::filesystem::path& path, const LabelCsvOptions& options);

}  // namespace flt::train
