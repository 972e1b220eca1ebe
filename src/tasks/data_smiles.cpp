// SMILES tokenizers, vocabulary, QM9 SMILES index and target normalisation (see data_smiles.hpp).
#include "tasks/data_smiles.hpp"

#include "models/molecule_model.hpp"
#include "tasks/data_idx.hpp"
#include "io/compressed.hpp"
#include "io/csv.hpp"
#include "io/units.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <set>
#include <unordered_map>

namespace flt::tasks {

namespace fs = std::filesystem;

namespace {

// Element symbols H..Xe by atomic number (index 0 unused).
const char* const kSymbols[] = {"",   "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al",
                                "Si", "P",  "S",  "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co",
                                "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb",
                                "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I",  "Xe"};
constexpr int kMaxZ = 54;

int atomic_number(std::string_view symbol) {
  for (int z = 1; z <= kMaxZ; ++z)
    if (symbol == kSymbols[z]) return z;
  return 0;
}

void check_printable(std::string_view s, const std::string& where) {
  if (s.empty()) throw InvalidArgument(where + ": empty SMILES");
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x21 || c > 0x7e)
      throw InvalidArgument(where + ": " + (c == 0x20 ? std::string("a space") : "character " + std::to_string(c)) +
                            " at position " + std::to_string(i + 1) +
                            " (a SMILES is printable ASCII without blanks)");
  }
}

// Escapes a token for one line of the vocabulary text: '\\' -> "\\\\", newline -> "\\n",
// carriage return -> "\\r".
std::string escape_token(const std::string& t) {
  std::string out;
  for (char c : t) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else out += c;
  }
  return out;
}

std::string unescape_token(std::string_view t, std::size_t line) {
  std::string out;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (t[i] != '\\') {
      out += t[i];
      continue;
    }
    if (i + 1 == t.size()) throw InvalidArgument("vocabulary line " + std::to_string(line) + ": dangling '\\'");
    const char c = t[++i];
    if (c == '\\') out += '\\';
    else if (c == 'n') out += '\n';
    else if (c == 'r') out += '\r';
    else throw InvalidArgument("vocabulary line " + std::to_string(line) + ": unknown escape '\\" + std::string(1, c) + "'");
  }
  return out;
}

const std::vector<std::string>& special_tokens() {
  static const std::vector<std::string> t = {"<pad>", "<unk>", "<bos>", "<eos>"};
  return t;
}

// The CSV column of a QM9 target in qm9_subset_index.csv.
std::string index_column(std::string_view target) {
  if (target == "U0") return "u0";
  if (target == "U") return "u298";
  if (target == "H") return "h298";
  if (target == "G") return "g298";
  if (target == "Cv") return "cv";
  return std::string(target);  // A, B, C, mu, alpha, homo, lumo, gap, r2, zpve
}

}  // namespace

const char* to_string(Tokenization t) noexcept { return t == Tokenization::character ? "character" : "atom"; }

Tokenization parse_tokenization(std::string_view name) {
  if (name == "character" || name == "char") return Tokenization::character;
  if (name == "atom") return Tokenization::atom;
  throw ConfigError("tokenization '" + std::string(name) + "' (expected character or atom)");
}

std::vector<std::string> tokenize_smiles(std::string_view s, Tokenization level, const std::string& where) {
  check_printable(s, where);
  std::vector<std::string> out;
  if (level == Tokenization::character) {
    for (char c : s) out.emplace_back(1, c);
    return out;
  }
  std::size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '[') {
      const std::size_t close = s.find(']', i + 1);
      if (close == std::string_view::npos)
        throw InvalidArgument(where + ": unterminated bracket atom at position " + std::to_string(i + 1));
      if (close == i + 1) throw InvalidArgument(where + ": empty bracket atom at position " + std::to_string(i + 1));
      out.emplace_back(s.substr(i, close - i + 1));
      i = close + 1;
    } else if ((c == 'C' && i + 1 < s.size() && s[i + 1] == 'l') || (c == 'B' && i + 1 < s.size() && s[i + 1] == 'r')) {
      out.emplace_back(s.substr(i, 2));
      i += 2;
    } else if (c == '%' && i + 2 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1])) &&
               std::isdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.emplace_back(s.substr(i, 3));
      i += 3;
    } else {
      out.emplace_back(1, c);
      ++i;
    }
  }
  return out;
}

Vocabulary::Vocabulary() : tokens_(special_tokens()) {}

Vocabulary Vocabulary::build(const std::vector<std::vector<std::string>>& token_lists) {
  std::set<std::string> seen;
  for (const auto& list : token_lists) seen.insert(list.begin(), list.end());
  Vocabulary v;
  for (const auto& t : seen)
    if (std::find(v.tokens_.begin(), v.tokens_.end(), t) == v.tokens_.end()) v.tokens_.push_back(t);
  return v;
}

std::int32_t Vocabulary::id(std::string_view token) const {
  for (std::size_t i = 0; i < tokens_.size(); ++i)
    if (tokens_[i] == token) return static_cast<std::int32_t>(i);
  return kUnk;
}

bool Vocabulary::contains(std::string_view token) const {
  return std::find(tokens_.begin(), tokens_.end(), token) != tokens_.end();
}

const std::string& Vocabulary::token(std::int32_t i) const {
  if (i < 0 || static_cast<std::size_t>(i) >= tokens_.size())
    throw InvalidArgument("vocabulary: token id " + std::to_string(i) + " outside 0.." + std::to_string(tokens_.size() - 1));
  return tokens_[static_cast<std::size_t>(i)];
}

std::vector<std::int32_t> Vocabulary::encode(const std::vector<std::string>& tokens) const {
  // Vocabularies are small (tens of tokens): a hash map per call would cost more than it saves.
  std::unordered_map<std::string, std::int32_t> index;
  for (std::size_t i = 0; i < tokens_.size(); ++i) index.emplace(tokens_[i], static_cast<std::int32_t>(i));
  std::vector<std::int32_t> out;
  out.reserve(tokens.size());
  for (const auto& t : tokens) {
    const auto it = index.find(t);
    out.push_back(it == index.end() ? kUnk : it->second);
  }
  return out;
}

std::string Vocabulary::to_text() const {
  std::string out;
  for (const auto& t : tokens_) out += escape_token(t) + "\n";
  return out;
}

Vocabulary Vocabulary::from_text(std::string_view text) {
  Vocabulary v;
  v.tokens_.clear();
  std::size_t line = 0, pos = 0;
  std::set<std::string> seen;
  while (pos < text.size()) {
    const std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) throw InvalidArgument("vocabulary: last line lacks its newline");
    ++line;
    std::string t = unescape_token(text.substr(pos, nl - pos), line);
    if (t.empty()) throw InvalidArgument("vocabulary line " + std::to_string(line) + ": empty token");
    if (!seen.insert(t).second) throw InvalidArgument("vocabulary line " + std::to_string(line) + ": duplicate token '" + t + "'");
    v.tokens_.push_back(std::move(t));
    pos = nl + 1;
  }
  const auto& sp = special_tokens();
  if (v.tokens_.size() < sp.size() || !std::equal(sp.begin(), sp.end(), v.tokens_.begin()))
    throw InvalidArgument("vocabulary: the first lines must be the special tokens <pad>, <unk>, <bos>, <eos>");
  return v;
}

std::vector<std::pair<std::string, int>> smiles_heavy_atoms(std::string_view smiles, const std::string& where) {
  std::map<int, int> by_z;
  for (const auto& tok : tokenize_smiles(smiles, Tokenization::atom, where)) {
    std::string sym;
    if (tok.front() == '[') {
      // [isotope? symbol chirality? hcount? charge? class?]: skip the isotope digits, then an
      // uppercase letter with an optional lowercase one, or an aromatic lowercase symbol.
      std::size_t k = 1;
      while (k < tok.size() && std::isdigit(static_cast<unsigned char>(tok[k]))) ++k;
      if (k < tok.size() && std::isupper(static_cast<unsigned char>(tok[k]))) {
        sym = tok.substr(k, 1);
        if (k + 1 < tok.size() && std::islower(static_cast<unsigned char>(tok[k + 1])) &&
            atomic_number(tok.substr(k, 2)) > 0)
          sym = tok.substr(k, 2);
      } else if (k < tok.size() && std::islower(static_cast<unsigned char>(tok[k]))) {
        sym = std::string(1, static_cast<char>(std::toupper(static_cast<unsigned char>(tok[k]))));
        if (k + 1 < tok.size() && tok[k] == 's' && tok[k + 1] == 'e') sym = "Se";
        if (k + 1 < tok.size() && tok[k] == 'a' && tok[k + 1] == 's') sym = "As";
      }
      if (sym.empty() || atomic_number(sym) == 0)
        throw InvalidArgument(where + ": unknown element in bracket atom " + tok);
      if (sym == "H") continue;  // an explicit hydrogen atom: hydrogens are not counted here
    } else if (tok == "Cl" || tok == "Br") {
      sym = tok;
    } else {
      const char c = tok.front();
      if (std::string_view("BCNOPSFI").find(c) != std::string_view::npos) sym = std::string(1, c);
      else if (std::string_view("bcnops").find(c) != std::string_view::npos)
        sym = std::string(1, static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
      else if (std::isalpha(static_cast<unsigned char>(c)))
        throw InvalidArgument(where + ": '" + tok + "' is not an organic-subset atom (bracket it)");
      else continue;  // bonds, branches, ring closures, dots
    }
    ++by_z[atomic_number(sym)];
  }
  std::vector<std::pair<std::string, int>> out;
  for (const auto& [z, n] : by_z) out.emplace_back(kSymbols[z], n);
  return out;
}

std::vector<train::TargetColumn> SmilesDataset::columns() const {
  std::vector<train::TargetColumn> out;
  for (const auto& t : targets) out.push_back({t.name, t.unit});
  return out;
}

SmilesDataset load_qm9_smiles(const fs::path& index_csv, const std::vector<std::string>& targets, bool geometry_only) {
  if (targets.empty()) throw ConfigError("SMILES dataset: at least one target is required");
  const io::CsvTable table = io::parse_csv(io::read_maybe_gzip(index_csv), index_csv.string());
  const std::size_t c_index = table.require_column("gdb_index");
  const std::size_t c_geom = table.require_column("has_geometry");
  const std::size_t c_atoms = table.require_column("n_atoms");
  const std::size_t c_heavy = table.require_column("n_heavy");
  const std::size_t c_smiles = table.require_column("smiles");
  SmilesDataset d;
  d.source = index_csv.string();
  std::vector<std::size_t> target_cols;
  std::vector<double> factors;
  for (const auto& name : targets) {
    const io::TargetInfo* info = io::find_qm9_target(name);
    if (!info) {
      std::string known;
      for (const auto& t : io::qm9_targets()) known += (known.empty() ? "" : ", ") + std::string(t.name);
      throw ConfigError("unknown QM9 target '" + name + "' (known: " + known + ")");
    }
    d.targets.push_back({std::string(info->name), std::string(info->training_unit), info->extent == io::Extent::extensive});
    target_cols.push_back(table.require_column(index_column(info->name)));
    factors.push_back(io::conversion_factor(io::find_unit(info->source_unit), io::find_unit(info->training_unit)));
  }

  struct Row {
    long long gdb;
    std::size_t row;
  };
  std::vector<Row> rows;
  std::set<long long> seen;
  for (std::size_t r = 0; r < table.rows.size(); ++r) {
    const double g = io::parse_csv_number(table.rows[r][c_index], table, r, c_index);
    if (!(g >= 1) || g != std::floor(g)) throw io::csv_error(table.source, table.row_lines[r], "gdb_index must be a positive integer");
    if (!seen.insert(static_cast<long long>(g)).second)
      throw io::csv_error(table.source, table.row_lines[r], "duplicate gdb_index " + table.rows[r][c_index]);
    const double geom = io::parse_csv_number(table.rows[r][c_geom], table, r, c_geom);
    if (geometry_only && geom != 1) continue;
    rows.push_back({static_cast<long long>(g), r});
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.gdb < b.gdb; });

  const auto N = static_cast<Index>(rows.size());
  const auto P = static_cast<Index>(targets.size());
  d.labels.resize(N, P);
  std::vector<std::map<std::string, int>> heavy(rows.size());
  std::vector<double> hydrogens(rows.size());
  std::set<int> elements_z;
  for (std::size_t k = 0; k < rows.size(); ++k) {
    const std::size_t r = rows[k].row;
    const std::string where = table.where(r);
    const std::string& smi = table.rows[r][c_smiles];
    std::vector<std::pair<std::string, int>> atoms;
    try {
      atoms = smiles_heavy_atoms(smi, "SMILES '" + smi + "'");
    } catch (const InvalidArgument& e) {
      throw io::csv_error(table.source, table.row_lines[r], e.what());
    }
    int nheavy = 0;
    for (const auto& [sym, n] : atoms) {
      heavy[k][sym] = n;
      nheavy += n;
      elements_z.insert(atomic_number(sym));
    }
    const double n_atoms = io::parse_csv_number(table.rows[r][c_atoms], table, r, c_atoms);
    const double n_heavy = io::parse_csv_number(table.rows[r][c_heavy], table, r, c_heavy);
    if (n_heavy != nheavy)
      throw io::csv_error(table.source, table.row_lines[r],
                             "SMILES '" + smi + "' has " + std::to_string(nheavy) + " heavy atoms, n_heavy says " +
                                 table.rows[r][c_heavy]);
    if (!(n_atoms >= n_heavy)) throw io::csv_error(table.source, table.row_lines[r], "n_atoms < n_heavy");
    hydrogens[k] = n_atoms - n_heavy;
    for (Index t = 0; t < P; ++t) {
      const std::size_t c = target_cols[static_cast<std::size_t>(t)];
      d.labels(static_cast<Index>(k), t) = io::parse_csv_number(table.rows[r][c], table, r, c) * factors[static_cast<std::size_t>(t)];
    }
    d.ids.push_back("gdb " + std::to_string(rows[k].gdb));
    d.smiles.push_back(smi);
  }
  d.elements.push_back("H");
  for (int z : elements_z) d.elements.push_back(kSymbols[z]);
  d.composition = Mat<double>::Zero(N, static_cast<Index>(d.elements.size()));
  for (std::size_t k = 0; k < rows.size(); ++k) {
    d.composition(static_cast<Index>(k), 0) = hydrogens[k];
    for (std::size_t e = 1; e < d.elements.size(); ++e) {
      const auto it = heavy[k].find(d.elements[e]);
      if (it != heavy[k].end()) d.composition(static_cast<Index>(k), static_cast<Index>(e)) = it->second;
    }
  }
  return d;
}

train::Split read_qm9_split(const fs::path& split_csv, const SmilesDataset& data) {
  return train::read_split_file(split_csv, data.size(), data.ids);
}

Mat<double> take_rows(const Mat<double>& m, std::span<const std::size_t> rows) {
  Mat<double> out(static_cast<Index>(rows.size()), m.cols());
  for (std::size_t k = 0; k < rows.size(); ++k) {
    require(rows[k] < static_cast<std::size_t>(m.rows()), "take_rows: row index out of range");
    out.row(static_cast<Index>(k)) = m.row(static_cast<Index>(rows[k]));
  }
  return out;
}

TargetNormalisation fit_target_normalisation(const SmilesDataset& data, std::span<const std::size_t> train_rows,
                                             bool fit_reference) {
  require(!train_rows.empty(), "fit_target_normalisation: no training rows");
  const Index P = static_cast<Index>(data.targets.size());
  const Index E = static_cast<Index>(data.elements.size());
  TargetNormalisation n;
  n.elements = data.elements;
  n.reference = Mat<double>::Zero(P, E);
  n.mean.assign(static_cast<std::size_t>(P), 0.0);
  n.scale.assign(static_cast<std::size_t>(P), 1.0);
  for (Index t = 0; t < P; ++t) {
    std::vector<std::size_t> rows;
    for (std::size_t r : train_rows)
      if (std::isfinite(data.labels(static_cast<Index>(r), t))) rows.push_back(r);
    if (rows.empty())
      throw InvalidArgument("target '" + data.targets[static_cast<std::size_t>(t)].name + "' has no label in the training rows");
    const auto M = static_cast<Index>(rows.size());
    if (data.targets[static_cast<std::size_t>(t)].extensive && fit_reference) {
      Mat<double> C(M, E);
      Vec<double> y(M);
      for (Index k = 0; k < M; ++k) {
        C.row(k) = data.composition.row(static_cast<Index>(rows[static_cast<std::size_t>(k)]));
        y(k) = data.labels(static_cast<Index>(rows[static_cast<std::size_t>(k)]), t);
      }
      n.reference.row(t) = models::fit_reference_energies(C, y).transpose();
    }
    double mean = 0;
    for (std::size_t r : rows)
      mean += data.labels(static_cast<Index>(r), t) - data.composition.row(static_cast<Index>(r)).dot(n.reference.row(t));
    mean /= static_cast<double>(M);
    double var = 0;
    for (std::size_t r : rows) {
      const double d =
          data.labels(static_cast<Index>(r), t) - data.composition.row(static_cast<Index>(r)).dot(n.reference.row(t)) - mean;
      var += d * d;
    }
    const double sd = std::sqrt(var / static_cast<double>(M));
    n.mean[static_cast<std::size_t>(t)] = mean;
    n.scale[static_cast<std::size_t>(t)] = sd > 1e-12 ? sd : 1.0;
  }
  return n;
}

Mat<double> TargetNormalisation::normalise(const Mat<double>& labels, const Mat<double>& composition) const {
  require(labels.cols() == reference.rows() && composition.cols() == reference.cols() && labels.rows() == composition.rows(),
          "TargetNormalisation::normalise: shapes");
  Mat<double> z(labels.rows(), labels.cols());
  for (Index i = 0; i < labels.rows(); ++i)
    for (Index t = 0; t < labels.cols(); ++t)
      z(i, t) = (labels(i, t) - composition.row(i).dot(reference.row(t)) - mean[static_cast<std::size_t>(t)]) /
                scale[static_cast<std::size_t>(t)];
  return z;
}

Mat<double> TargetNormalisation::denormalise(const Mat<double>& z, const Mat<double>& composition) const {
  require(z.cols() == reference.rows() && composition.cols() == reference.cols() && z.rows() == composition.rows(),
          "TargetNormalisation::denormalise: shapes");
  Mat<double> y(z.rows(), z.cols());
  for (Index i = 0; i < z.rows(); ++i)
    for (Index t = 0; t < z.cols(); ++t)
      y(i, t) = z(i, t) * scale[static_cast<std::size_t>(t)] + mean[static_cast<std::size_t>(t)] +
                composition.row(i).dot(reference.row(t));
  return y;
}

}  // namespace flt::tasks
