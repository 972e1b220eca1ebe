#include "train/split.hpp"

#include "core/random.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"
#include "io/ini.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>
#include <unordered_map>

namespace flt::train {

using io::CsvTable;
using io::csv_error;
using io::parse_csv;
using io::parse_int_value;
using io::parse_list_value;
using io::parse_real_value;
using io::read_file;
using io::write_csv_row;
using io::write_file_atomic;
namespace {

// "<path>:<record>" (the id of a record without a title) as "<file name>:<record>"; other ids as
// they are. Two spellings of one input path give the same reduced id.
std::string reduced_id(const std::string& id) {
  const std::size_t colon = id.rfind(':');
  if (colon == std::string::npos || colon + 1 == id.size() ||
      id.find_first_not_of("0123456789", colon + 1) != std::string::npos)
    return id;
  const std::size_t slash = id.rfind('/', colon);
  return slash == std::string::npos ? id : id.substr(slash + 1);
}


SubsetSize parse_subset(std::string_view item, const std::string& where) {
  if (item == "rest") return {SubsetSize::Kind::rest, 0};
  if (item.find_first_of(".eE") != std::string_view::npos) {
    const double f = parse_real_value(item, where);
    if (f < 0 || f > 1) throw ConfigError(where + ": fraction " + std::string(item) + " outside [0, 1]");
    return {SubsetSize::Kind::fraction, f};
  }
  const std::int64_t c = parse_int_value(item, where);
  if (c < 0) throw ConfigError(where + ": negative count " + std::string(item));
  return {SubsetSize::Kind::count, static_cast<double>(c)};
}

const char* subset_name(int s) { return s == 0 ? "train" : (s == 1 ? "validation" : "test"); }

}  // namespace

SplitSizes parse_split_sizes(std::string_view text) {
  const std::string where = "split sizes '" + std::string(text) + "'";
  const auto items = parse_list_value(text, where);
  if (items.size() != 2 && items.size() != 3)
    throw ConfigError(where + ": expected train,validation[,test] (counts, fractions or 'rest')");
  SplitSizes s;
  s.train = parse_subset(items[0], where);
  s.validation = parse_subset(items[1], where);
  s.test = items.size() == 3 ? parse_subset(items[2], where) : SubsetSize{SubsetSize::Kind::rest, 0};
  const int rests = (s.train.kind == SubsetSize::Kind::rest) + (s.validation.kind == SubsetSize::Kind::rest) +
                    (s.test.kind == SubsetSize::Kind::rest);
  if (rests > 1) throw ConfigError(where + ": at most one subset can be 'rest'");
  return s;
}

void resolve_split_counts(const SplitSizes& sizes, std::size_t n, std::size_t& train, std::size_t& validation,
                          std::size_t& test) {
  const SubsetSize* parts[3] = {&sizes.train, &sizes.validation, &sizes.test};
  std::size_t counts[3] = {0, 0, 0};
  int rest = -1;
  std::size_t used = 0;
  for (int i = 0; i < 3; ++i) {
    switch (parts[i]->kind) {
      case SubsetSize::Kind::count: counts[i] = static_cast<std::size_t>(parts[i]->value); break;
      case SubsetSize::Kind::fraction:
        counts[i] = static_cast<std::size_t>(std::floor(parts[i]->value * static_cast<double>(n)));
        break;
      case SubsetSize::Kind::rest: rest = i; break;
    }
    used += counts[i];
  }
  if (used > n)
    throw ConfigError("split sizes " + std::to_string(counts[0]) + " + " + std::to_string(counts[1]) + " + " +
                      std::to_string(counts[2]) + " exceed the " + std::to_string(n) + " records");
  if (rest >= 0) counts[rest] = n - used;
  train = counts[0];
  validation = counts[1];
  test = counts[2];
}

Split random_split(std::size_t n, const SplitSizes& sizes, std::uint64_t seed) {
  std::size_t nt = 0, nv = 0, ns = 0;
  resolve_split_counts(sizes, n, nt, nv, ns);
  std::vector<std::size_t> perm(n);
  std::iota(perm.begin(), perm.end(), std::size_t{0});
  Rng rng(seed);
  rng.shuffle(perm);
  Split s;
  s.train.assign(perm.begin(), perm.begin() + static_cast<std::ptrdiff_t>(nt));
  s.validation.assign(perm.begin() + static_cast<std::ptrdiff_t>(nt), perm.begin() + static_cast<std::ptrdiff_t>(nt + nv));
  s.test.assign(perm.begin() + static_cast<std::ptrdiff_t>(nt + nv),
                perm.begin() + static_cast<std::ptrdiff_t>(nt + nv + ns));
  std::sort(s.train.begin(), s.train.end());
  std::sort(s.validation.begin(), s.validation.end());
  std::sort(s.test.begin(), s.test.end());
  return s;
}

void validate_split(const Split& split, std::size_t n, const std::string& source) {
  std::vector<signed char> owner(n, -1);
  const std::vector<std::size_t>* subsets[3] = {&split.train, &split.validation, &split.test};
  for (int s = 0; s < 3; ++s)
    for (const std::size_t i : *subsets[s]) {
      if (i >= n)
        throw csv_error(source, 0, std::string(subset_name(s)) + " index " + std::to_string(i) +
                                        " out of range (dataset has " + std::to_string(n) + " records)");
      if (owner[i] >= 0)
        throw csv_error(source, 0, "record " + std::to_string(i) + " is in " + subset_name(owner[i]) +
                                        (owner[i] == s ? " twice" : std::string(" and in ") + subset_name(s)));
      owner[i] = static_cast<signed char>(s);
    }
}

std::string split_to_csv(const Split& split, const std::vector<std::string>& ids) {
  std::ostringstream out;
  const bool with_ids = !ids.empty();
  write_csv_row(out, with_ids ? std::vector<std::string>{"subset", "index", "id"}
                              : std::vector<std::string>{"subset", "index"});
  const std::vector<std::size_t>* subsets[3] = {&split.train, &split.validation, &split.test};
  for (int s = 0; s < 3; ++s)
    for (const std::size_t i : *subsets[s]) {
      if (with_ids) {
        require(i < ids.size(), "split_to_csv: index beyond the ids");
        write_csv_row(out, {subset_name(s), std::to_string(i), ids[i]});
      } else {
        write_csv_row(out, {subset_name(s), std::to_string(i)});
      }
    }
  return out.str();
}

void write_split_file(const std::filesystem::path& path, const Split& split, const std::vector<std::string>& ids) {
  write_file_atomic(path, split_to_csv(split, ids));
}

Split parse_split_csv(std::string_view text, const std::string& source, std::size_t n,
                      const std::vector<std::string>& ids) {
  require(ids.empty() || ids.size() == n, "parse_split_csv: ids must be empty or one per record");
  const CsvTable csv = parse_csv(text, source);
  const std::size_t subset_col = csv.require_column("subset");
  const auto index_col = csv.column("index");
  const auto id_col = csv.column("id");
  if (!index_col && !id_col) throw csv_error(source, 1, "split file needs an 'index' or an 'id' column");
  if (!index_col && ids.empty()) throw csv_error(source, 1, "split file has ids only, but the dataset has no ids");
  std::unordered_map<std::string, std::size_t> by_id, by_reduced_id;
  if (id_col && !ids.empty())
    for (std::size_t i = 0; i < ids.size(); ++i) by_id.emplace(ids[i], i);  // first occurrence wins
  Split split;
  std::vector<signed char> owner(n, -1);
  std::vector<std::size_t> first_line(n, 0);
  for (std::size_t r = 0; r < csv.rows.size(); ++r) {
    const std::size_t line = csv.row_lines[r];
    const std::string& subset = csv.rows[r][subset_col];
    int s = -1;
    if (subset == "train") s = 0;
    else if (subset == "validation" || subset == "val" || subset == "valid") s = 1;
    else if (subset == "test") s = 2;
    else throw csv_error(source, line, "unknown subset '" + subset + "' (train, validation or test)");
    std::optional<std::size_t> index;
    if (index_col && !csv.rows[r][*index_col].empty()) {
      const std::string& t = csv.rows[r][*index_col];
      std::int64_t v = 0;
      try {
        v = parse_int_value(t, "index");
      } catch (const ConfigError&) {
        throw csv_error(source, line, "index '" + t + "' is not an integer");
      }
      if (v < 0 || static_cast<std::uint64_t>(v) >= n)
        throw csv_error(source, line, "index " + t + " out of range (dataset has " + std::to_string(n) + " records)");
      index = static_cast<std::size_t>(v);
    }
    if (id_col && !ids.empty()) {
      const std::string& id = csv.rows[r][*id_col];
      if (index) {
        if (!id.empty() && ids[*index] != id && reduced_id(ids[*index]) != reduced_id(id))
          throw csv_error(source, line, "record " + std::to_string(*index) + " has id '" + ids[*index] +
                                             "', the split file says '" + id + "' (a split for another dataset?)");
      } else {
        auto it = by_id.find(id);
        if (it == by_id.end()) {
          // Untitled records are named "<input path>:<record>": the same file under another
          // spelling of its path (./a.xyz, an absolute path, a copy elsewhere) is the same record.
          if (by_reduced_id.empty())
            for (std::size_t i = 0; i < ids.size(); ++i) by_reduced_id.emplace(reduced_id(ids[i]), i);
          it = by_reduced_id.find(reduced_id(id));
          if (it == by_reduced_id.end()) throw csv_error(source, line, "no record with id '" + id + "'");
        }
        index = it->second;
      }
    }
    if (!index) throw csv_error(source, line, "row gives neither an index nor an id");
    if (owner[*index] >= 0)
      throw csv_error(source, line, "record " + std::to_string(*index) + " already listed on line " +
                                         std::to_string(first_line[*index]) + " (in " + subset_name(owner[*index]) + ")");
    owner[*index] = static_cast<signed char>(s);
    first_line[*index] = line;
    (s == 0 ? split.train : s == 1 ? split.validation : split.test).push_back(*index);
  }
  std::sort(split.train.begin(), split.train.end());
  std::sort(split.validation.begin(), split.validation.end());
  std::sort(split.test.begin(), split.test.end());
  validate_split(split, n, source);
  return split;
}

Split read_split_file(const std::filesystem::path& path, std::size_t n, const std::vector<std::string>& ids) {
  return parse_split_csv(read_file(path), path.string(), n, ids);
}

}  // namespace flt::train
