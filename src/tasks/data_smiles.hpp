// SMILES data for the sequence model: tokenizers, a vocabulary, the QM9 SMILES index with the
// 3-D model's targets, units and split, and the target normalisation (per-element reference
// energies by least squares for extensive targets, then standardisation).
//
// Tokenization.
//   character: every byte is a token. The language model uses it, so that "bits per character"
//              is per character of the SMILES string (plus one end token per string).
//   atom:      the regular expression of Schwaller et al. (ACS Cent. Sci. 5, 1572 (2019)):
//              a bracket atom "[NH3+]" is one token, "Cl" and "Br" are one token, "%12" (a
//              two-digit ring closure) is one token, every other character is a token. The
//              property model uses it: a bracket atom is one chemical entity (an atom with its
//              charge and hydrogens), and QM9's SMILES hold 1,044 bracket atoms ([nH], [NH3+],
//              [O-], ...) that character tokens would split into 3-6 pieces, lengthening the
//              sequence and making the model learn to re-assemble atoms from characters.
// Both are exact partitions of the string (concatenating the tokens gives it back).
#pragma once

#include "core/error.hpp"
#include "core/tensor.hpp"
#include "train/metrics.hpp"
#include "train/split.hpp"

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flt::tasks {

enum class Tokenization { character, atom };
const char* to_string(Tokenization t) noexcept;
Tokenization parse_tokenization(std::string_view name);  // "character" / "atom"; ConfigError otherwise

// Splits `smiles` into tokens (see above). `where` names the record in errors: InvalidArgument
// "where: unterminated bracket atom" (atom level), "empty SMILES", and characters outside
// printable ASCII (both levels).
std::vector<std::string> tokenize_smiles(std::string_view smiles, Tokenization level, const std::string& where = "SMILES");

// A token vocabulary: four special tokens first, then the tokens seen, sorted by their bytes (so a
// vocabulary built from the same strings is the same whatever their order).
class Vocabulary {
 public:
  static constexpr std::int32_t kPad = 0;  // never produced by encode(); reserved for padding
  static constexpr std::int32_t kUnk = 1;  // a token not in the vocabulary
  static constexpr std::int32_t kBos = 2;  // start of a sequence (language-model input)
  static constexpr std::int32_t kEos = 3;  // end of a sequence (a predicted token of the LM)
  static constexpr std::int32_t kNumSpecial = 4;

  Vocabulary();  // only the special tokens
  // The tokens of every list (each once).
  static Vocabulary build(const std::vector<std::vector<std::string>>& token_lists);

  std::size_t size() const noexcept { return tokens_.size(); }
  std::int32_t id(std::string_view token) const;  // kUnk when absent
  bool contains(std::string_view token) const;
  const std::string& token(std::int32_t id) const;  // InvalidArgument when out of range
  const std::vector<std::string>& tokens() const noexcept { return tokens_; }
  std::vector<std::int32_t> encode(const std::vector<std::string>& tokens) const;

  // One token per line, special tokens included, each escaped so any byte survives: for the
  // model file's metadata. from_text() checks the special tokens and rejects duplicates
  // (InvalidArgument naming the line).
  std::string to_text() const;
  static Vocabulary from_text(std::string_view text);

  friend bool operator==(const Vocabulary& a, const Vocabulary& b) { return a.tokens_ == b.tokens_; }

 private:
  std::vector<std::string> tokens_;  // id -> token
};

// Heavy-atom composition of a SMILES string by element symbol (bracket atoms included; aromatic
// lowercase symbols count as their element; hydrogens are not counted, not even [H]-style bracket
// hydrogens' H counts). Throws InvalidArgument naming `where` for an element symbol it does not
// know (the organic subset B C N O P S F Cl Br I and, in brackets, any of H..Xe).
std::vector<std::pair<std::string, int>> smiles_heavy_atoms(std::string_view smiles, const std::string& where = "SMILES");

struct SmilesTarget {
  std::string name;        // QM9 name: "U0", "gap", "mu"
  std::string unit;        // training unit: "eV", "Debye", ...
  bool extensive = false;  // from io/units.hpp (per-element reference energies apply)
};

// The labelled SMILES of the bundled QM9 subset, in the order of the 3-D dataset (rows with
// has_geometry = 1 sorted by gdb_index, i.e. the records of qm9_subset.xyz), so that the 3-D
// model's split file (subset,index,id with ids "gdb N") applies unchanged.
struct SmilesDataset {
  std::string source;
  std::vector<std::string> ids;       // "gdb 17"
  std::vector<std::string> smiles;
  std::vector<SmilesTarget> targets;
  Mat<double> labels;                 // N x P, training units (NaN = missing)
  std::vector<std::string> elements;  // composition columns: "H", then heavy elements by atomic number
  Mat<double> composition;            // N x E atom counts (H from n_atoms - n_heavy)

  std::size_t size() const noexcept { return ids.size(); }
  std::vector<train::TargetColumn> columns() const;
};

// Reads datasets/qm9/qm9_subset_index.csv(.gz). `targets` are QM9 names (io/units.hpp:
// "U0", "homo", "lumo", "gap", "mu", "alpha", "zpve", "Cv", ...); values are converted from the
// QM9 unit of the CSV (energies in Hartree) to the training unit (energies in eV). Checks (InputError
// naming file:line): required columns, numeric fields, duplicate gdb_index, SMILES that do not
// tokenize, and that the SMILES heavy-atom count equals the n_heavy column. `geometry_only` keeps
// only rows with has_geometry = 1 (the 3-D model's molecules).
SmilesDataset load_qm9_smiles(const std::filesystem::path& index_csv, const std::vector<std::string>& targets,
                              bool geometry_only = true);

// The fixed split of the 3-D model (datasets/qm9/split.csv), validated against the ids.
train::Split read_qm9_split(const std::filesystem::path& split_csv, const SmilesDataset& data);

// Target normalisation fitted on the training rows only:
//   extensive targets: y - sum_e c_e r_e with the reference energies r (least squares over the
//                      composition c, models::fit_reference_energies), when fit_reference;
//   then z = (residual - mean) / scale (per target, over the training rows with a label).
struct TargetNormalisation {
  std::vector<std::string> elements;
  Mat<double> reference;  // P x E (zero rows for intensive targets)
  std::vector<double> mean, scale;

  // N x P physical -> standardised (NaN stays NaN), and back. `composition` is N x E.
  Mat<double> normalise(const Mat<double>& labels, const Mat<double>& composition) const;
  Mat<double> denormalise(const Mat<double>& z, const Mat<double>& composition) const;
};
TargetNormalisation fit_target_normalisation(const SmilesDataset& data, std::span<const std::size_t> train_rows,
                                             bool fit_reference);

// Rows of a matrix (in the given order).
Mat<double> take_rows(const Mat<double>& m, std::span<const std::size_t> rows);

}  // namespace flt::tasks
