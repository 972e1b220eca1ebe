// One flat parameter buffer with named views. Every trainable tensor of a model lives in a single
// contiguous array (and its gradient in a matching array), so the optimiser, the checkpoint writer,
// gradient clipping and any later all-reduce see one span. Layers hold a ParamRef (offset + shape)
// and ask the store for an Eigen::Map when they run.
//
// Usage: register every tensor with add() while building the model, then call allocate(); maps
// stay valid until the next allocate().
#pragma once

#include "core/error.hpp"
#include "core/tensor.hpp"

#include <cstddef>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace flt {

// Handle to one named tensor inside a ParameterStore.
struct ParamRef {
  std::size_t offset = 0;
  Index rows = 0;
  Index cols = 0;
  std::size_t size() const noexcept { return static_cast<std::size_t>(rows * cols); }
};

// Metadata of one registered tensor (for checkpoints and `flt info`).
struct ParamInfo {
  std::string name;
  ParamRef ref;
};

template <class T>
class ParameterStore {
 public:
  // Registers a rows x cols tensor (a vector is rows x 1). Names must be unique.
  ParamRef add(const std::string& name, Index rows, Index cols = 1) {
    require(rows >= 0 && cols >= 0, "ParameterStore::add: negative shape for " + name);
    require(!by_name_.contains(name), "ParameterStore::add: duplicate parameter name " + name);
    ParamRef ref{total_, rows, cols};
    total_ += ref.size();
    by_name_.emplace(name, infos_.size());
    infos_.push_back({name, ref});
    return ref;
  }

  // Allocates (zeroed) value and gradient buffers for everything registered so far.
  void allocate() {
    values_.assign(total_, T(0));
    grads_.assign(total_, T(0));
  }

  std::size_t size() const noexcept { return total_; }
  bool allocated() const noexcept { return values_.size() == total_; }

  std::span<T> values() noexcept { return values_; }
  std::span<const T> values() const noexcept { return values_; }
  std::span<T> grads() noexcept { return grads_; }
  std::span<const T> grads() const noexcept { return grads_; }

  MatMap<T> value(const ParamRef& r) { return {values_.data() + r.offset, r.rows, r.cols}; }
  ConstMatMap<T> value(const ParamRef& r) const {
    return {values_.data() + r.offset, r.rows, r.cols};
  }
  MatMap<T> grad(const ParamRef& r) { return {grads_.data() + r.offset, r.rows, r.cols}; }
  ConstMatMap<T> grad(const ParamRef& r) const {
    return {grads_.data() + r.offset, r.rows, r.cols};
  }

  // Flat views of one tensor (row-major order), e.g. for bias vectors passed to kernels.
  std::span<T> value_span(const ParamRef& r) { return {values_.data() + r.offset, r.size()}; }
  std::span<const T> value_span(const ParamRef& r) const {
    return {values_.data() + r.offset, r.size()};
  }
  std::span<T> grad_span(const ParamRef& r) { return {grads_.data() + r.offset, r.size()}; }
  std::span<const T> grad_span(const ParamRef& r) const {
    return {grads_.data() + r.offset, r.size()};
  }

  void zero_grad() { std::fill(grads_.begin(), grads_.end(), T(0)); }

  const std::vector<ParamInfo>& infos() const noexcept { return infos_; }
  const ParamRef& ref(const std::string& name) const {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) throw InvalidArgument("no parameter named " + name);
    return infos_[it->second].ref;
  }
  bool contains(const std::string& name) const { return by_name_.contains(name); }

 private:
  std::size_t total_ = 0;
  std::vector<T> values_;
  std::vector<T> grads_;
  std::vector<ParamInfo> infos_;
  std::unordered_map<std::string, std::size_t> by_name_;
};

}  // namespace flt
