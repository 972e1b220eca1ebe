// The flt model file (.flt): a safetensors-layout container of named tensors plus string metadata,
// with flt's own format name, version and CRC-32 checksum. Specification: docs/model-format.md.
//
//   bytes 0..7   N, the header length, unsigned 64-bit little-endian
//   bytes 8..8+N the header: a JSON object, UTF-8, padded with spaces so 8+N is a multiple of 8:
//                {"__metadata__": {"format": "flt-model", "format_version": "1",
//                                  "checksum_crc32": "xxxxxxxx", ...string: string...},
//                 "<tensor>": {"dtype": "F32", "shape": [r, c], "data_offsets": [begin, end]}, ...}
//   bytes 8+N..  the data buffer; tensor offsets are relative to its start, tensors are contiguous
//                (no gaps, no overlap), cover the buffer exactly, little-endian, row-major.
// checksum_crc32 = CRC-32 of (canonical JSON of the header without the checksum entry) followed by
// the data buffer. Checkpoints use the same container with format "flt-checkpoint".
#pragma once

#include "core/error.hpp"

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace flt::io {

inline constexpr int kModelFormatVersion = 1;
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;  // same limit as safetensors
inline constexpr std::size_t kMaxTensorRank = 32;

enum class DType { F64, F32, I64, I32, U8 };

const char* dtype_name(DType dtype) noexcept;  // "F64", "F32", "I64", "I32", "U8"
std::size_t dtype_size(DType dtype) noexcept;  // bytes per element
std::optional<DType> parse_dtype(std::string_view name) noexcept;

template <class T> struct DTypeOf;
template <> struct DTypeOf<double> { static constexpr DType value = DType::F64; };
template <> struct DTypeOf<float> { static constexpr DType value = DType::F32; };
template <> struct DTypeOf<std::int64_t> { static constexpr DType value = DType::I64; };
template <> struct DTypeOf<std::int32_t> { static constexpr DType value = DType::I32; };
template <> struct DTypeOf<std::uint8_t> { static constexpr DType value = DType::U8; };

using Shape = std::vector<std::uint64_t>;

// One typed, row-major array with a shape (shape {} is a scalar holding one element).
class Tensor {
 public:
  Tensor() : Tensor(std::vector<float>{}, Shape{0}) {}

  template <class T>
  Tensor(std::vector<T> values, Shape shape) : dtype_(DTypeOf<T>::value), shape_(std::move(shape)),
                                              data_(std::move(values)) {
    check_shape();
  }
  // A vector of n values has shape {n}.
  template <class T>
  static Tensor vector(std::vector<T> values) {
    const auto n = static_cast<std::uint64_t>(values.size());
    return Tensor(std::move(values), Shape{n});
  }
  template <class T>
  static Tensor vector(std::span<const T> values) {
    return vector(std::vector<T>(values.begin(), values.end()));
  }
  template <class T>
  static Tensor scalar(T value) {
    return Tensor(std::vector<T>{value}, Shape{});
  }

  DType dtype() const noexcept { return dtype_; }
  const Shape& shape() const noexcept { return shape_; }
  std::size_t size() const noexcept;  // number of elements
  std::size_t byte_size() const noexcept { return size() * dtype_size(dtype_); }

  // The values; throws flt::InvalidArgument if T is not this tensor's dtype.
  template <class T>
  std::span<const T> values() const {
    if (DTypeOf<T>::value != dtype_)
      throw InvalidArgument(std::string("tensor holds ") + dtype_name(dtype_) + ", not " +
                            dtype_name(DTypeOf<T>::value));
    return std::get<std::vector<T>>(data_);
  }

  friend bool operator==(const Tensor& a, const Tensor& b);  // bitwise equality of the data

 private:
  void check_shape() const;
  DType dtype_;
  Shape shape_;
  std::variant<std::vector<double>, std::vector<float>, std::vector<std::int64_t>,
               std::vector<std::int32_t>, std::vector<std::uint8_t>>
      data_;
};

// An in-memory model file: metadata and tensors, both ordered by name.
class ModelFile {
 public:
  // `format` names the kind of content ("flt-model", "flt-checkpoint"); it must start with "flt-".
  explicit ModelFile(std::string format = "flt-model");

  const std::string& format() const noexcept { return format_; }
  // Where this file was read from ("<memory>" for one built in memory); used in error messages.
  const std::string& source() const noexcept { return source_; }
  // For a file taken apart from another (an ensemble member): how errors name it.
  void set_source(std::string source) { source_ = std::move(source); }

  // Metadata: UTF-8 strings. The reserved keys format, format_version and checksum_crc32 are
  // managed by the writer and rejected here (flt::InvalidArgument).
  void set_metadata(const std::string& key, std::string value);
  bool has_metadata(const std::string& key) const { return metadata_.contains(key); }
  // Throws ModelFileError(source, "missing metadata entry 'key'") when absent.
  const std::string& metadata(const std::string& key) const;
  const std::map<std::string, std::string>& all_metadata() const noexcept { return metadata_; }

  // Tensors. Names: non-empty UTF-8, not "__metadata__". set_tensor replaces an existing one.
  void set_tensor(const std::string& name, Tensor tensor);
  bool has_tensor(const std::string& name) const { return tensors_.contains(name); }
  // Throws ModelFileError(source, "missing tensor 'name'").
  const Tensor& tensor(const std::string& name) const;
  // Typed access with validation: throws ModelFileError naming the tensor when the dtype differs
  // or, if `expected_shape` is given, when the shape differs.
  template <class T>
  std::span<const T> values(const std::string& name,
                            const std::optional<Shape>& expected_shape = std::nullopt) const {
    const Tensor& t = tensor(name);
    check_tensor(name, t, DTypeOf<T>::value, expected_shape);
    return t.values<T>();
  }
  const std::map<std::string, Tensor>& tensors() const noexcept { return tensors_; }

  friend bool operator==(const ModelFile& a, const ModelFile& b);  // format, metadata, tensors

 private:
  friend ModelFile parse_model_file(std::string_view, const std::string&, std::string_view);
  void check_tensor(const std::string& name, const Tensor& t, DType dtype,
                    const std::optional<Shape>& shape) const;
  std::string format_;
  std::string source_ = "<memory>";
  std::map<std::string, std::string> metadata_;
  std::map<std::string, Tensor> tensors_;
};

// The file bytes (deterministic: same content -> same bytes).
std::string serialize_model_file(const ModelFile& file);

// Parses and validates file bytes. `source` names the file in errors. `expected_format` empty
// accepts any "flt-*" format. Throws ModelFileError(source, reason) for anything malformed: too
// short, header length out of range, invalid UTF-8 or JSON, missing or unknown format/version,
// bad dtype/shape/offsets, overlapping or uncovered data, checksum mismatch.
ModelFile parse_model_file(std::string_view bytes, const std::string& source,
                           std::string_view expected_format = {});

// Writes atomically (temp file + fsync + rename). Throws flt::IoError.
void write_model_file(const std::filesystem::path& path, const ModelFile& file);
// Reads and validates. Throws flt::IoError (cannot read) or ModelFileError.
ModelFile read_model_file(const std::filesystem::path& path, std::string_view expected_format = "flt-model");

}  // namespace flt::io
