// XYZ, extended XYZ (ASE convention) and QM9 record parsers.
//
// XYZ record:      N / comment line / N lines "El x y z [...]" (Angstrom).
// Extended XYZ:    comment = key=value pairs (values "quoted" or {braced}; bare words are flags);
//                  Properties=name:type:ncols:... describes the atom columns (species:S:1 or
//                  Z:I:1, pos:R:3, then e.g. forces:R:3); without it, species:S:1:pos:R:3. A line
//                  with at least one key=value pair is extended XYZ (ASE's rule). A
//                  formal_charges:I:1 column sets the atoms' formal charges.
// QM9:             comment = "gdb N" + 15 numbers (io::qm9_targets() order); an optional 5th atom
//                  column (Mulliken charge, e) and optional trailer lines after the atoms.
// Titles, units of labels, number syntax and the trailer: docs/chem-io.md, "Formats".
#include "chem/elements.hpp"
#include "chem/record_parsers.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text.hpp"
#include "io/units.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string_view>

namespace flt::chem::detail {
namespace {

constexpr std::size_t kReserveCap = 4096;  // never trust a count line for allocation sizes
constexpr int kMaxFormalCharge = 16;        // beyond any atom's oxidation state: a broken column

void split_ws(std::string_view s, std::vector<std::string_view>& out) {
  out.clear();
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    const std::size_t start = i;
    while (i < s.size() && !std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
}

std::optional<std::size_t> parse_count(std::string_view s) {
  s = trim(s);
  if (s.empty() || s.size() > 12) return std::nullopt;
  std::size_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<std::size_t>(c - '0');
  }
  return n;
}

std::string quote(std::string_view s) {
  constexpr std::size_t kMax = 60;
  std::string out = "'";
  out += s.size() > kMax ? std::string(s.substr(0, kMax)) + "..." : std::string(s);
  out += "'";
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// Lines with '\r' stripped (and a UTF-8 byte-order mark from the first, as Windows editors write
// it), a line counter and one line of look-ahead.
class LineReader {
 public:
  explicit LineReader(std::istream& in) : in_(in) {}
  bool get(std::string& line) {
    if (has_peeked_) {
      line.swap(peeked_);
      has_peeked_ = false;
      ++line_;
      return true;
    }
    if (!read(line)) return false;
    ++line_;
    return true;
  }
  const std::string* peek() {
    if (!has_peeked_) {
      if (!read(peeked_)) return nullptr;
      has_peeked_ = true;
    }
    return &peeked_;
  }
  std::size_t line() const noexcept { return line_; }

 private:
  std::istream& in_;
  bool read(std::string& line) {
    if (!std::getline(in_, line)) {
      if (in_.bad()) throw Error("read error");
      return false;
    }
    if (first_) line.erase(0, line.size() - without_utf8_bom(line).size());
    first_ = false;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  }
  std::string peeked_;
  bool has_peeked_ = false;
  bool first_ = true;
  std::size_t line_ = 0;
};

struct ColumnSpec {
  std::string name;
  char type;
  int width;
};

// Parses an extended-XYZ comment line into key/value pairs; a bare word becomes (word, "T") and
// its position in `out` is listed in `flags`. Returns false (with `error`) for an unterminated
// quote or brace.
bool parse_key_values(std::string_view s, std::vector<std::pair<std::string, std::string>>& out,
                      std::string& error, std::vector<std::size_t>& flags) {
  out.clear();
  flags.clear();
  std::size_t i = 0;
  while (true) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    if (i >= s.size()) break;
    std::string key;
    if (s[i] == '"') {
      ++i;
      while (i < s.size() && s[i] != '"') key += s[i++];
      if (i >= s.size()) {
        error = "unterminated quote in the comment line";
        return false;
      }
      ++i;
    } else {
      while (i < s.size() && s[i] != '=' && !std::isspace(static_cast<unsigned char>(s[i]))) {
        key += s[i++];
      }
    }
    std::size_t j = i;
    while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
    if (j < s.size() && s[j] == '=') {
      i = j + 1;
      while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
      std::string value;
      if (i < s.size() && s[i] == '"') {
        ++i;
        bool closed = false;
        while (i < s.size()) {
          if (s[i] == '\\' && i + 1 < s.size()) {
            value += s[i + 1];
            i += 2;
            continue;
          }
          if (s[i] == '"') {
            closed = true;
            ++i;
            break;
          }
          value += s[i++];
        }
        if (!closed) {
          error = "unterminated quote in the value of '" + key + "'";
          return false;
        }
      } else if (i < s.size() && s[i] == '{') {
        ++i;
        bool closed = false;
        while (i < s.size()) {
          if (s[i] == '}') {
            closed = true;
            ++i;
            break;
          }
          value += s[i++];
        }
        if (!closed) {
          error = "unterminated '{' in the value of '" + key + "'";
          return false;
        }
      } else {
        while (i < s.size() && !std::isspace(static_cast<unsigned char>(s[i]))) value += s[i++];
      }
      if (key.empty()) {
        error = "a value without a key in the comment line";
        return false;
      }
      out.emplace_back(std::move(key), std::move(value));
    } else {
      // A bare word is a flag (ASE reads it as True).
      flags.push_back(out.size());
      out.emplace_back(std::move(key), "T");
    }
  }
  return true;
}

bool parse_properties_spec(std::string_view spec, std::vector<ColumnSpec>& columns,
                           std::string& error) {
  columns.clear();
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= spec.size(); ++i) {
    if (i == spec.size() || spec[i] == ':') {
      parts.push_back(spec.substr(start, i - start));
      start = i + 1;
    }
  }
  if (parts.size() % 3 != 0) {
    error = "Properties=" + std::string(spec) + " is not a list of name:type:columns triples";
    return false;
  }
  for (std::size_t k = 0; k < parts.size(); k += 3) {
    ColumnSpec c;
    c.name = std::string(parts[k]);
    if (parts[k + 1].size() != 1 || std::string_view("SRIL").find(parts[k + 1][0]) ==
                                        std::string_view::npos) {
      error = "Properties: column '" + c.name + "' has type " + quote(parts[k + 1]) +
              " (expected S, R, I or L)";
      return false;
    }
    c.type = parts[k + 1][0];
    const auto width = parse_count(parts[k + 2]);
    if (!width || *width == 0 || *width > 64 || c.name.empty()) {
      error = "Properties: column '" + c.name + "' has a bad column count " + quote(parts[k + 2]);
      return false;
    }
    c.width = static_cast<int>(*width);
    columns.push_back(std::move(c));
  }
  return true;
}

enum class Flavour { plain, extended, qm9 };

class XyzParser final : public RecordParser {
 public:
  XyzParser(std::istream& in, std::string source, Format flavour, const ReadOptions& options)
      : lines_(in), source_(std::move(source)), forced_(flavour), options_(options) {}

  std::size_t records() const noexcept override { return record_; }

  std::optional<PointSet> next() override {
    std::string line;
    // Skip blank lines between records; a file that ends in blank lines has no more records.
    for (;;) {
      const std::string* p = lines_.peek();
      if (p == nullptr) {
        if (record_ == 0 && !empty_reported_) {
          empty_reported_ = true;
          throw InputError(source_, 0, "no molecule records in the file");
        }
        return std::nullopt;
      }
      if (!trim(*p).empty()) break;
      lines_.get(line);
    }
    ++record_;
    lines_.get(line);
    const auto count = parse_count(line);
    if (!count) {
      const std::size_t bad_line = lines_.line();
      resync();
      fail("line " + std::to_string(bad_line) + ": expected the atom count, found " +
           quote(trim(line)));
    }
    std::string comment;
    if (!lines_.get(comment)) {
      fail("the file ends before the comment line");
    }
    const Flavour flavour = detect(comment);

    PointSet points;
    points.source = source_;
    points.record = record_;
    std::string error;
    std::vector<ColumnSpec> columns;
    std::vector<std::pair<std::string, std::string>> pairs;
    parse_comment(flavour, comment, points, columns, pairs, error);

    // Per-atom storage; sized as lines arrive so a bogus count cannot exhaust memory.
    std::vector<double> xyz;
    xyz.reserve(3 * std::min(*count, kReserveCap));
    points.atomic_numbers.reserve(std::min(*count, kReserveCap));
    std::vector<AtomColumn> extra;
    for (const auto& c : columns) {
      if (c.name == "species" || c.name == "pos" || c.name == "Z") continue;
      AtomColumn col;
      col.name = c.name;
      col.type = c.type;
      col.width = c.width;
      // The column's own "<name>_unit=U" on the comment line (flt predict writes one per column);
      // else, since only a Properties= declaration makes a forces column, ASE's unit.
      if (const Property* declared = points.property(c.name + "_unit")) col.unit = declared->value;
      else if (c.name == "forces" && c.type == 'R' && c.width == 3) col.unit = "eV/A";
      extra.push_back(std::move(col));
    }
    int mulliken_seen = -1;  // QM9: -1 unknown, 0 no 5th column, 1 a 5th column
    std::vector<double> mulliken;
    std::vector<std::string_view> tokens;
    for (std::size_t i = 0; i < *count; ++i) {
      if (!lines_.get(line)) {
        fail("the file ends after " + std::to_string(i) + " of " + std::to_string(*count) +
             " atom lines");
      }
      if (!error.empty()) continue;  // keep consuming the record's lines to stay aligned
      split_ws(line, tokens);
      const std::string where = "line " + std::to_string(lines_.line()) + ": ";
      if (flavour == Flavour::extended) {
        parse_extended_atom(tokens, columns, points, xyz, extra, error);
        if (!error.empty()) error = where + error;
        continue;
      }
      if (tokens.size() < 4) {
        error = where + "an atom line needs a symbol and 3 coordinates, found " + quote(line);
        continue;
      }
      if (!add_species(tokens[0], points, error)) {
        error = where + error;
        continue;
      }
      for (int c = 0; c < 3; ++c) {
        const auto v = parse_number(tokens[static_cast<std::size_t>(1 + c)]);
        if (!v) {
          error = where + "bad coordinate " + quote(tokens[static_cast<std::size_t>(1 + c)]);
          break;
        }
        xyz.push_back(*v);
      }
      if (!error.empty()) continue;
      if (flavour == Flavour::qm9) {
        const int has5 = tokens.size() >= 5 ? 1 : 0;
        if (mulliken_seen >= 0 && has5 != mulliken_seen) {
          error = where + "some atom lines have a Mulliken charge column and some do not";
          continue;
        }
        mulliken_seen = has5;
        if (has5 == 1) {
          const auto q = parse_number(tokens[4]);
          if (!q) {
            error = where + "bad Mulliken charge " + quote(tokens[4]);
            continue;
          }
          mulliken.push_back(*q);
        }
      }
    }
    if (flavour == Flavour::qm9) read_qm9_trailer(points);
    if (!error.empty()) fail(error);
    if (*count == 0) fail("the record has no atoms");

    const std::size_t n = points.atomic_numbers.size();
    points.positions.resize(static_cast<Index>(n), 3);
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t c = 0; c < 3; ++c) {
        points.positions(static_cast<Index>(i), static_cast<Index>(c)) = xyz[3 * i + c];
      }
    }
    points.formal_charges.assign(n, 0);
    for (const auto& col : extra) {
      // A formal_charges:I:1 column gives each atom its formal charge (an SDF's CHG); the column
      // also stays among the atom columns, so writers pass it through.
      if (col.name != "formal_charges") continue;
      if (col.type != 'I' || col.width != 1)
        fail("column 'formal_charges' must be declared formal_charges:I:1 (integer, one per atom)");
      for (std::size_t i = 0; i < n; ++i) {
        const double q = col.values[i];
        if (std::abs(q) > static_cast<double>(kMaxFormalCharge))
          fail("atom " + std::to_string(i + 1) + ": formal charge " + std::to_string(static_cast<long long>(q)) +
               " outside +-" + std::to_string(kMaxFormalCharge));
        points.formal_charges[i] = static_cast<std::int32_t>(q);
      }
    }
    for (auto& col : extra) points.atom_columns.push_back(std::move(col));
    if (mulliken_seen == 1) {
      AtomColumn col;
      col.name = "mulliken_charge";
      col.unit = "e";
      col.values = std::move(mulliken);
      points.atom_columns.push_back(std::move(col));
    }
    if (auto problem = check_geometry(points, options_.min_distance)) fail(*problem);
    return points;
  }

 private:
  [[noreturn]] void fail(const std::string& reason) const {
    throw InputError(source_, record_, reason);
  }

  // After a line that should have been an atom count: skip to the next line that is one, so the
  // following record can still be read.
  void resync() {
    std::string skipped;
    for (;;) {
      const std::string* p = lines_.peek();
      if (p == nullptr || parse_count(*p)) return;
      lines_.get(skipped);
    }
  }

  Flavour detect(const std::string& comment) const {
    if (forced_ == Format::qm9) return Flavour::qm9;
    if (forced_ == Format::extxyz) return Flavour::extended;
    std::vector<std::string_view> tokens;
    split_ws(comment, tokens);
    if (tokens.size() >= 17 && tokens[0] == "gdb" && parse_count(tokens[1])) return Flavour::qm9;
    if (tokens.empty()) return Flavour::plain;
    std::vector<std::pair<std::string, std::string>> pairs;
    std::string error;
    std::vector<std::size_t> flags;
    if (!parse_key_values(comment, pairs, error, flags)) {
      // A broken quote in a line that declares Properties= is a broken extended XYZ record.
      return comment.find("Properties=") != std::string::npos ? Flavour::extended
                                                              : Flavour::plain;
    }
    // Extended as soon as one key=value pair is present (ASE's parser reads every such line).
    return pairs.size() > flags.size() ? Flavour::extended : Flavour::plain;
  }

  void parse_comment(Flavour flavour, const std::string& comment, PointSet& points,
                     std::vector<ColumnSpec>& columns,
                     std::vector<std::pair<std::string, std::string>>& pairs,
                     std::string& error) const {
    const std::string where = "line " + std::to_string(lines_.line()) + ": ";
    if (flavour == Flavour::plain) {
      points.title = std::string(trim(comment));
      return;
    }
    if (flavour == Flavour::qm9) {
      // The 15 properties in file order, with their units (io/units.hpp's QM9 table).
      const auto& qm9 = io::qm9_targets();
      std::vector<std::string_view> tokens;
      split_ws(comment, tokens);
      if (tokens.size() < 2 + qm9.size() || tokens[0] != "gdb" ||
          !parse_count(tokens[1])) {
        error = where + "a QM9 comment line is 'gdb N' and 15 numbers, found " + quote(comment);
        return;
      }
      points.title = "gdb " + std::string(tokens[1]);
      points.set_property("index", std::string(tokens[1]));
      for (std::size_t k = 0; k < qm9.size(); ++k) {
        const std::string_view text = tokens[2 + k];
        const auto value = parse_number(text);
        if (!value) {
          error = where + "QM9 property " + std::string(qm9[k].name) +
                  " is not a number: " + quote(text);
          return;
        }
        Property p;
        p.key = std::string(qm9[k].name);
        p.value = std::string(text);
        p.number = value;
        p.unit = std::string(qm9[k].source_unit);
        points.properties.push_back(std::move(p));
      }
      return;
    }
    // Extended XYZ.
    std::vector<std::size_t> flags;
    std::string kv_error;
    if (!parse_key_values(comment, pairs, kv_error, flags)) {
      error = where + kv_error;
      return;
    }
    std::string spec = "species:S:1:pos:R:3";
    bool declares_properties = false;
    bool has_title_key = false;
    for (const auto& kv : pairs) {
      declares_properties = declares_properties || iequals(kv.first, "Properties");
      has_title_key = has_title_key || iequals(kv.first, "title") || iequals(kv.first, "name");
    }
    // A bare word before the first key=value pair names the record (QM7: the file name).
    const bool leading_title = !has_title_key && !flags.empty() && flags.front() == 0;
    for (std::size_t k = 0; k < pairs.size(); ++k) {
      const auto& kv = pairs[k];
      if (leading_title && k == 0) {
        points.title = kv.first;
        continue;
      }
      if (iequals(kv.first, "Properties")) {
        spec = kv.second;
        continue;
      }
      if (iequals(kv.first, "title") || iequals(kv.first, "name")) {
        if (points.title.empty()) points.title = kv.second;
      }
      points.set_property(kv.first, kv.second);
    }
    assign_label_units(points, declares_properties);
    std::string spec_error;
    if (!parse_properties_spec(spec, columns, spec_error)) {
      error = where + spec_error;
      return;
    }
    bool has_species = false, has_pos = false;
    for (const auto& c : columns) {
      if ((c.name == "species" && c.type == 'S' && c.width == 1) ||
          (c.name == "Z" && c.type == 'I' && c.width == 1)) {
        has_species = true;
      }
      if (c.name == "pos" && c.type == 'R' && c.width == 3) has_pos = true;
    }
    if (!has_species || !has_pos) {
      error = where + "Properties=" + spec + " lacks species:S:1 (or Z:I:1) or pos:R:3";
    }
    check_periodic(pairs, where, error);
  }

  // ASE's reading: pbc="T T T" (T/F, True/False or 1/0; one value for all three directions), and
  // a Lattice without pbc is periodic in all three.
  void check_periodic(const std::vector<std::pair<std::string, std::string>>& pairs,
                      const std::string& where, std::string& error) const {
    const std::string* pbc = nullptr;
    bool lattice = false;
    for (const auto& kv : pairs) {
      if (kv.first == "pbc") pbc = &kv.second;
      if (kv.first == "Lattice") lattice = true;
    }
    std::string why;
    if (pbc != nullptr) {
      std::vector<std::string_view> tokens;
      split_ws(*pbc, tokens);
      bool periodic = false, readable = tokens.size() == 1 || tokens.size() == 3;
      for (const auto token : tokens) {
        const std::string t = flt::lower(token);
        if (t == "t" || t == "true" || t == "1") {
          periodic = true;
        } else if (t != "f" && t != "false" && t != "0") {
          readable = false;
        }
      }
      if (!readable) {
        if (error.empty()) error = where + "pbc=" + quote(*pbc) + " is not one or three of T/F";
        return;
      }
      if (periodic) why = "periodic boundary conditions (pbc=" + quote(*pbc) + ")";
    } else if (lattice) {
      why = "a Lattice without pbc (periodic in all three directions, as ASE reads it)";
    }
    if (why.empty()) return;
    if (options_.periodic == Periodic::isolated) {
      if (!warned_periodic_) {
        log_warning(source_, ": periodic records read as isolated structures (--periodic isolated): ",
                    "the cell is ignored, atoms see no periodic images");
        warned_periodic_ = true;
      }
      return;
    }
    if (error.empty()) {
      error = where + why + ": flt models isolated structures, without periodic images; "
                            "--periodic isolated (API: periodic = isolated) reads the record as one, ignoring the cell";
    }
  }

  // Units of the comment line's labels (see the head of this file): the key's own
  // "<key>_unit=U", a unit spelled at the end of the key, else ASE's definitions in ASE files.
  void assign_label_units(PointSet& points, bool ase_file) const {
    static constexpr std::pair<std::string_view, std::string_view> kSuffixes[] = {
        {"_kcal_per_mol", "kcal/mol"}, {"_kcalmol", "kcal/mol"}, {"_kJ_per_mol", "kJ/mol"},
        {"_kJmol", "kJ/mol"},          {"_meV", "meV"},          {"_eV", "eV"},
        {"_Hartree", "Hartree"},       {"_hartree", "Hartree"},  {"_Ha", "Hartree"},
        {"_Debye", "Debye"}};
    for (auto& p : points.properties) {
      if (!p.unit.empty() || !p.number) continue;
      if (const Property* declared = points.property(p.key + "_unit")) {
        p.unit = declared->value;
        continue;
      }
      for (const auto& [suffix, unit] : kSuffixes) {
        if (p.key.size() > suffix.size() && p.key.ends_with(suffix)) {
          p.unit = std::string(unit);
          break;
        }
      }
      if (p.unit.empty() && ase_file && (p.key == "energy" || p.key == "free_energy")) {
        // The caller, which knows whether the user gave the unit, warns when it reads the label.
        p.unit = "eV";
        p.unit_by_convention = true;
        if (!ase_units_logged_) {
          ase_units_logged_ = true;
          log_info(source_, ": ASE extended XYZ (Properties=): '", p.key, "' read in eV and forces in eV/A by ASE's convention");
        }
      }
    }
  }

  bool add_species(std::string_view symbol, PointSet& points, std::string& error) const {
    const auto z = atomic_number(symbol);
    if (!z) {
      error = "unknown element symbol " + quote(symbol);
      return false;
    }
    points.atomic_numbers.push_back(*z);
    return true;
  }

  void parse_extended_atom(const std::vector<std::string_view>& tokens,
                           const std::vector<ColumnSpec>& columns, PointSet& points,
                           std::vector<double>& xyz, std::vector<AtomColumn>& extra,
                           std::string& error) const {
    std::size_t expected = 0;
    for (const auto& c : columns) expected += static_cast<std::size_t>(c.width);
    if (tokens.size() != expected) {
      error = "expected " + std::to_string(expected) + " columns (Properties=), found " +
              std::to_string(tokens.size());
      return;
    }
    std::size_t t = 0;
    std::size_t e = 0;
    // With both species:S:1 and Z:I:1 (QUIP, ASE's columns=[..., 'numbers']) the element comes
    // from species and Z must agree with it.
    const bool has_species =
        std::any_of(columns.begin(), columns.end(), [](const ColumnSpec& c) { return c.name == "species"; });
    std::optional<std::string_view> z_token;
    for (const auto& c : columns) {
      const bool is_extra = !(c.name == "species" || c.name == "pos" || c.name == "Z");
      for (int k = 0; k < c.width; ++k, ++t) {
        const std::string_view tok = tokens[t];
        if (c.name == "Z" && has_species) {
          z_token = tok;
          continue;
        }
        if (c.name == "species" || c.name == "Z") {
          if (!add_species(tok, points, error)) return;
          continue;
        }
        if (c.type == 'S') {
          extra[e].strings.emplace_back(tok);
          continue;
        }
        std::optional<double> v;
        if (c.type == 'L') {
          if (tok == "T" || tok == "True" || tok == "true" || tok == "1") v = 1.0;
          if (tok == "F" || tok == "False" || tok == "false" || tok == "0") v = 0.0;
        } else {
          v = parse_number(tok);
          if (v && c.type == 'I' && *v != static_cast<double>(static_cast<long long>(*v))) {
            v.reset();
          }
        }
        if (!v) {
          error = "column '" + c.name + "' has a bad value " + quote(tok);
          return;
        }
        if (c.name == "pos") {
          xyz.push_back(*v);
        } else {
          extra[e].values.push_back(*v);
        }
      }
      if (is_extra) ++e;
    }
    if (z_token) {
      const std::optional<double> z = parse_number(*z_token);
      if (!z || *z != static_cast<double>(points.atomic_numbers.back())) {
        error = "column 'Z' has " + quote(*z_token) + " where species says " +
                std::string(element_symbol(points.atomic_numbers.back())) + " (Z=" +
                std::to_string(points.atomic_numbers.back()) + ")";
      }
    }
  }

  void read_qm9_trailer(PointSet& points) {
    // Up to three lines that are not the next record's atom count: frequencies, SMILES, InChI.
    std::string line;
    std::vector<std::string_view> tokens;
    for (int k = 0; k < 3; ++k) {
      const std::string* p = lines_.peek();
      if (p == nullptr || trim(*p).empty() || parse_count(*p)) return;
      lines_.get(line);
      split_ws(line, tokens);
      if (k == 0) {
        std::string joined;
        for (const auto& tok : tokens) {
          if (!joined.empty()) joined += ' ';
          joined += tok;
        }
        points.set_property("frequencies", joined, "cm^-1");
      } else {
        const char* base = k == 1 ? "smiles" : "inchi";
        if (!tokens.empty()) points.set_property(std::string(base) + "_gdb17",
                                                 std::string(tokens[0]));
        if (tokens.size() > 1) points.set_property(std::string(base) + "_b3lyp",
                                                   std::string(tokens[1]));
      }
    }
  }

  LineReader lines_;
  std::string source_;
  Format forced_;
  ReadOptions options_;
  std::size_t record_ = 0;
  bool empty_reported_ = false;
  mutable bool ase_units_logged_ = false;
  mutable bool warned_periodic_ = false;
};

}  // namespace

std::unique_ptr<RecordParser> make_xyz_parser(std::istream& in, std::string source,
                                              Format flavour, const ReadOptions& options) {
  return std::make_unique<XyzParser>(in, std::move(source), flavour, options);
}

}  // namespace flt::chem::detail
