// Ragged batches: many sets of rows (atoms of molecules, tokens of sequences) stacked into one
// matrix without padding. Set s owns rows [offsets[s], offsets[s+1]). Every batched kernel
// (attention within a set, per-molecule pooling) takes one of these.
#pragma once

#include "core/error.hpp"
#include "core/tensor.hpp"

#include <span>
#include <vector>

namespace flt {

class RaggedIndex {
 public:
  RaggedIndex() : offsets_{0} {}

  // From set sizes, e.g. atom counts {3, 5, 2} -> offsets {0, 3, 8, 10}.
  static RaggedIndex from_sizes(std::span<const Index> sizes) {
    RaggedIndex r;
    for (Index n : sizes) {
      require(n >= 0, "RaggedIndex: negative set size");
      r.offsets_.push_back(r.offsets_.back() + n);
    }
    return r;
  }
  // From offsets (must start at 0 and be non-decreasing).
  static RaggedIndex from_offsets(std::vector<Index> offsets) {
    require(!offsets.empty() && offsets.front() == 0, "RaggedIndex: offsets must start at 0");
    for (std::size_t i = 1; i < offsets.size(); ++i)
      require(offsets[i] >= offsets[i - 1], "RaggedIndex: offsets must be non-decreasing");
    RaggedIndex r;
    r.offsets_ = std::move(offsets);
    return r;
  }
  // A single set of n rows.
  static RaggedIndex single(Index n) {
    RaggedIndex r;
    r.offsets_.push_back(n);
    return r;
  }

  Index num_sets() const noexcept { return static_cast<Index>(offsets_.size()) - 1; }
  Index total_rows() const noexcept { return offsets_.back(); }
  Index begin(Index set) const { return offsets_[static_cast<std::size_t>(set)]; }
  Index end(Index set) const { return offsets_[static_cast<std::size_t>(set) + 1]; }
  Index size(Index set) const { return end(set) - begin(set); }
  const std::vector<Index>& offsets() const noexcept { return offsets_; }

 private:
  std::vector<Index> offsets_;
};

}  // namespace flt
