// Dataset splits into train / validation / test subsets of record indices (0-based positions in
// the dataset as read, in file order).
//
// Split file (CSV, docs/model-format.md#split-files):
//   subset,index,id
//   train,0,gdb 1
//   validation,5,gdb 6
// subset is train, validation or test; index is the 0-based record index; id (optional column) is
// the record's id or title. When ids are available on reading, a row may give only the id (empty
// index) and rows giving both are checked against each other, so a split file cannot silently be
// applied to a different dataset. Records not listed belong to no subset.
#pragma once

#include "core/error.hpp"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flt::train {

struct Split {
  std::vector<std::size_t> train, validation, test;  // each sorted ascending
};

// The size of one subset: a count, a fraction of the dataset, or "the rest".
struct SubsetSize {
  enum class Kind { count, fraction, rest } kind = Kind::rest;
  double value = 0;
};
struct SplitSizes {
  SubsetSize train, validation, test;
};

// Parses "train,validation,test" sizes: each a count ("1000"), a fraction ("0.8", must contain
// '.'), or "rest" (at most one). Two values mean the test subset is "rest". Throws ConfigError.
SplitSizes parse_split_sizes(std::string_view text);
// Counts for a dataset of n records: fractions are floor(f * n); "rest" takes what is left.
// Throws ConfigError if the counts exceed n.
void resolve_split_counts(const SplitSizes& sizes, std::size_t n, std::size_t& train, std::size_t& validation,
                          std::size_t& test);

// A random split: a permutation of 0..n-1 by flt::Rng(seed).shuffle, the first `train` to train,
// the next to validation, the next to test; each subset then sorted. Same n, sizes and seed give
// the same split on every platform.
Split random_split(std::size_t n, const SplitSizes& sizes, std::uint64_t seed);

// Throws InputError(source, 0, reason) for an index >= n or an index in two subsets (or twice).
void validate_split(const Split& split, std::size_t n, const std::string& source = "split");

// CSV text / file as above; `ids` (empty = no id column) are the records' ids, one per record.
std::string split_to_csv(const Split& split, const std::vector<std::string>& ids = {});
void write_split_file(const std::filesystem::path& path, const Split& split, const std::vector<std::string>& ids = {});
// Parses and validates against a dataset of n records (`ids` empty or of size n).
// Throws InputError naming file:line.
Split parse_split_csv(std::string_view text, const std::string& source, std::size_t n,
                      const std::vector<std::string>& ids = {});
Split read_split_file(const std::filesystem::path& path, std::size_t n, const std::vector<std::string>& ids = {});

}  // namespace flt::train
