#include "io/model_file.hpp"

#include "io/atomic_file.hpp"
#include "io/checksum.hpp"
#include "io/json.hpp"
#include "io/utf8.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

namespace flt::io {
namespace {

constexpr const char* kMetaKey = "__metadata__";
constexpr const char* kFormatKey = "format";
constexpr const char* kVersionKey = "format_version";
constexpr const char* kChecksumKey = "checksum_crc32";

bool is_reserved_meta(const std::string& key) {
  return key == kFormatKey || key == kVersionKey || key == kChecksumKey;
}

// Product of a shape with overflow detection; nullopt on overflow.
std::optional<std::uint64_t> element_count(const Shape& shape) {
  std::uint64_t n = 1;
  for (const std::uint64_t d : shape) {
    if (d != 0 && n > std::numeric_limits<std::uint64_t>::max() / d) return std::nullopt;
    n *= d;
  }
  return n;
}

std::string shape_text(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Little-endian encode/decode of one element (the host may be big-endian).
template <class T>
void append_le(std::string& out, std::span<const T> values) {
  if constexpr (std::endian::native == std::endian::little || sizeof(T) == 1) {
    out.append(reinterpret_cast<const char*>(values.data()), values.size_bytes());
  } else {
    for (const T v : values) {
      unsigned char b[sizeof(T)];
      std::memcpy(b, &v, sizeof(T));
      std::reverse(b, b + sizeof(T));
      out.append(reinterpret_cast<const char*>(b), sizeof(T));
    }
  }
}

template <class T>
std::vector<T> decode_le(const char* data, std::size_t count) {
  std::vector<T> out(count);
  if (count == 0) return out;
  std::memcpy(out.data(), data, count * sizeof(T));
  if constexpr (std::endian::native != std::endian::little && sizeof(T) > 1) {
    for (T& v : out) {
      unsigned char b[sizeof(T)];
      std::memcpy(b, &v, sizeof(T));
      std::reverse(b, b + sizeof(T));
      std::memcpy(&v, b, sizeof(T));
    }
  }
  return out;
}

void append_tensor_bytes(std::string& out, const Tensor& t) {
  switch (t.dtype()) {
    case DType::F64: append_le(out, t.values<double>()); break;
    case DType::F32: append_le(out, t.values<float>()); break;
    case DType::I64: append_le(out, t.values<std::int64_t>()); break;
    case DType::I32: append_le(out, t.values<std::int32_t>()); break;
    case DType::U8: append_le(out, t.values<std::uint8_t>()); break;
  }
}

Tensor decode_tensor(DType dtype, Shape shape, const char* data, std::size_t count) {
  switch (dtype) {
    case DType::F64: return Tensor(decode_le<double>(data, count), std::move(shape));
    case DType::F32: return Tensor(decode_le<float>(data, count), std::move(shape));
    case DType::I64: return Tensor(decode_le<std::int64_t>(data, count), std::move(shape));
    case DType::I32: return Tensor(decode_le<std::int32_t>(data, count), std::move(shape));
    case DType::U8: return Tensor(decode_le<std::uint8_t>(data, count), std::move(shape));
  }
  throw InvalidArgument("unknown dtype");
}

// Storage order: larger elements first (keeps every tensor naturally aligned when the data buffer
// starts on an 8-byte boundary, like safetensors' own writer), then by name.
std::vector<const std::pair<const std::string, Tensor>*> storage_order(const ModelFile& file) {
  std::vector<const std::pair<const std::string, Tensor>*> order;
  for (const auto& entry : file.tensors()) order.push_back(&entry);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return dtype_size(a->second.dtype()) > dtype_size(b->second.dtype());
  });
  return order;
}

}  // namespace

const char* dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
  }
  return "?";
}

std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::F64:
    case DType::I64: return 8;
    case DType::F32:
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  return 0;
}

std::optional<DType> parse_dtype(std::string_view name) noexcept {
  if (name == "F64") return DType::F64;
  if (name == "F32") return DType::F32;
  if (name == "I64") return DType::I64;
  if (name == "I32") return DType::I32;
  if (name == "U8") return DType::U8;
  return std::nullopt;
}

std::size_t Tensor::size() const noexcept {
  return std::visit([](const auto& v) { return v.size(); }, data_);
}

void Tensor::check_shape() const {
  if (shape_.size() > kMaxTensorRank) throw InvalidArgument("tensor rank above " + std::to_string(kMaxTensorRank));
  const auto n = element_count(shape_);
  if (!n || *n != size())
    throw InvalidArgument("tensor shape " + shape_text(shape_) + " does not match its " +
                          std::to_string(size()) + " values");
}

bool operator==(const Tensor& a, const Tensor& b) {
  if (a.dtype_ != b.dtype_ || a.shape_ != b.shape_ || a.size() != b.size()) return false;
  // Bitwise, so NaN payloads and -0.0 compare as stored.
  return std::visit(
      [&](const auto& va) {
        using V = std::decay_t<decltype(va)>;
        const auto& vb = std::get<V>(b.data_);
        return va.empty() || std::memcmp(va.data(), vb.data(), va.size() * sizeof(va[0])) == 0;
      },
      a.data_);
}

ModelFile::ModelFile(std::string format) : format_(std::move(format)) {
  if (format_.rfind("flt-", 0) != 0 || !is_valid_utf8(format_))
    throw InvalidArgument("model file format must start with \"flt-\": " + format_);
}

void ModelFile::set_metadata(const std::string& key, std::string value) {
  if (is_reserved_meta(key)) throw InvalidArgument("metadata key '" + key + "' is reserved");
  if (key.empty() || !is_valid_utf8(key) || !is_valid_utf8(value))
    throw InvalidArgument("metadata key and value must be non-empty key, valid UTF-8: '" + key + "'");
  metadata_[key] = std::move(value);
}

const std::string& ModelFile::metadata(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) throw ModelFileError(source_, "missing metadata entry '" + key + "'");
  return it->second;
}

void ModelFile::set_tensor(const std::string& name, Tensor tensor) {
  if (name.empty() || name == kMetaKey || !is_valid_utf8(name))
    throw InvalidArgument("invalid tensor name '" + name + "'");
  tensors_.insert_or_assign(name, std::move(tensor));
}

const Tensor& ModelFile::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw ModelFileError(source_, "missing tensor '" + name + "'");
  return it->second;
}

void ModelFile::check_tensor(const std::string& name, const Tensor& t, DType dtype,
                             const std::optional<Shape>& shape) const {
  if (t.dtype() != dtype)
    throw ModelFileError(source_, "tensor '" + name + "' has dtype " + dtype_name(t.dtype()) +
                                      ", expected " + dtype_name(dtype));
  if (shape && *shape != t.shape())
    throw ModelFileError(source_, "tensor '" + name + "' has shape " + shape_text(t.shape()) +
                                      ", expected " + shape_text(*shape));
}

bool operator==(const ModelFile& a, const ModelFile& b) {
  return a.format_ == b.format_ && a.metadata_ == b.metadata_ && a.tensors_ == b.tensors_;
}

std::string serialize_model_file(const ModelFile& file) {
  const auto order = storage_order(file);
  nlohmann::json header = nlohmann::json::object();
  nlohmann::json meta = nlohmann::json::object();
  for (const auto& [k, v] : file.all_metadata()) meta[k] = v;
  meta[kFormatKey] = file.format();
  meta[kVersionKey] = std::to_string(kModelFormatVersion);
  std::uint64_t offset = 0;
  std::string data;
  for (const auto* entry : order) {
    const Tensor& t = entry->second;
    const std::uint64_t end = offset + t.byte_size();
    header[entry->first] = {{"dtype", dtype_name(t.dtype())},
                            {"shape", t.shape()},
                            {"data_offsets", {offset, end}}};
    append_tensor_bytes(data, t);
    offset = end;
  }
  header[kMetaKey] = meta;
  // The checksum covers the canonical header without itself, then the data.
  const std::string canonical = dump_json(header);
  std::uint32_t crc = crc32_update(0, canonical.data(), canonical.size());
  crc = crc32_update(crc, data.data(), data.size());
  meta[kChecksumKey] = hex32(crc);
  header[kMetaKey] = std::move(meta);
  std::string text = dump_json(header);
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts on an 8-byte boundary
  std::string out;
  out.reserve(8 + text.size() + data.size());
  const std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  out += text;
  out += data;
  return out;
}

ModelFile parse_model_file(std::string_view bytes, const std::string& source,
                           std::string_view expected_format) {
  auto fail = [&](const std::string& reason) -> ModelFileError { return ModelFileError(source, reason); };
  if (bytes.size() < 8)
    throw fail("file too short (" + std::to_string(bytes.size()) + " bytes) to hold the 8-byte header length");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  if (n > kMaxHeaderBytes)
    throw fail("header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) +
               " bytes (not a model file, or corrupted)");
  if (n > bytes.size() - 8)
    throw fail("truncated: header length " + std::to_string(n) + " but only " + std::to_string(bytes.size() - 8) +
               " bytes follow");
  const std::string_view header_text = bytes.substr(8, static_cast<std::size_t>(n));
  if (header_text.empty() || header_text[0] != '{') throw fail("header does not start with '{' (not a model file)");
  nlohmann::json header;
  try {
    header = parse_json(header_text, 16);
  } catch (const JsonError& e) {
    throw fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw fail("header is not a JSON object");
  const auto meta_it = header.find(kMetaKey);
  if (meta_it == header.end()) throw fail("no __metadata__ in the header (not an flt model file)");
  const nlohmann::json& meta = *meta_it;
  if (!meta.is_object()) throw fail("__metadata__ is not an object");
  for (const auto& [k, v] : meta.items())
    if (!v.is_string()) throw fail("__metadata__ entry '" + k + "' is not a string");
  auto meta_string = [&](const char* key) -> const std::string& {
    const auto v = meta.find(key);
    if (v == meta.end()) throw fail(std::string("__metadata__ has no '") + key + "' entry (not an flt model file)");
    return v->get_ref<const std::string&>();
  };
  const std::string& format = meta_string(kFormatKey);
  if (format.rfind("flt-", 0) != 0) throw fail("unknown format '" + format + "' (expected flt-*)");
  if (!expected_format.empty() && format != expected_format)
    throw fail("file holds '" + format + "', expected '" + std::string(expected_format) + "'");
  const std::string& version = meta_string(kVersionKey);
  if (version != std::to_string(kModelFormatVersion))
    throw fail("unsupported format version '" + version + "' (this build reads version " +
               std::to_string(kModelFormatVersion) + ")");
  const std::string checksum = meta_string(kChecksumKey);
  if (checksum.size() != 8 || checksum.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw fail("malformed checksum_crc32 '" + checksum + "' (expected 8 lowercase hex digits)");

  struct Entry {
    const std::string* name;
    DType dtype;
    Shape shape;
    std::uint64_t count, begin, end;
  };
  std::vector<Entry> entries;
  for (auto it = header.cbegin(); it != header.cend(); ++it) {
    const std::string& name = it.key();  // Entry keeps a pointer to it: the header outlives entries
    const nlohmann::json& info = it.value();
    if (name == kMetaKey) continue;
    const std::string where = "tensor '" + name + "': ";
    if (name.empty()) throw fail("empty tensor name");
    if (!info.is_object()) throw fail(where + "entry is not an object");
    for (const auto& field : info.items())
      if (field.key() != "dtype" && field.key() != "shape" && field.key() != "data_offsets")
        throw fail(where + "unknown field '" + field.key() + "'");
    const auto dt = info.find("dtype");
    const auto sh = info.find("shape");
    const auto off = info.find("data_offsets");
    if (dt == info.end() || sh == info.end() || off == info.end())
      throw fail(where + "needs dtype, shape and data_offsets");
    if (!dt->is_string()) throw fail(where + "dtype is not a string");
    const std::string& dtype_text = dt->get_ref<const std::string&>();
    const auto dtype = parse_dtype(dtype_text);
    if (!dtype) throw fail(where + "unsupported dtype '" + dtype_text + "' (F64, F32, I64, I32, U8)");
    if (!sh->is_array()) throw fail(where + "shape is not an array");
    if (sh->size() > kMaxTensorRank) throw fail(where + "rank above " + std::to_string(kMaxTensorRank));
    // Integer literals without sign, fraction or exponent only (parse_json keeps them as uint64).
    Shape shape;
    for (const nlohmann::json& d : *sh) {
      if (!d.is_number_unsigned()) throw fail(where + "shape entries must be non-negative integers");
      shape.push_back(d.get<std::uint64_t>());
    }
    const auto count = element_count(shape);
    if (!count || *count > std::numeric_limits<std::uint64_t>::max() / dtype_size(*dtype))
      throw fail(where + "shape " + shape_text(shape) + " overflows");
    if (!off->is_array() || off->size() != 2) throw fail(where + "data_offsets must be [begin, end]");
    if (!(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      throw fail(where + "data_offsets must be non-negative integers");
    const auto begin = (*off)[0].get<std::uint64_t>();
    const auto end = (*off)[1].get<std::uint64_t>();
    if (end < begin) throw fail(where + "data_offsets end before begin");
    if (end - begin != *count * dtype_size(*dtype))
      throw fail(where + "data_offsets span " + std::to_string(end - begin) + " bytes but " + dtype_text +
                 " " + shape_text(shape) + " needs " + std::to_string(*count * dtype_size(*dtype)));
    entries.push_back({&name, *dtype, std::move(shape), *count, begin, end});
  }
  const std::string_view data = bytes.substr(8 + static_cast<std::size_t>(n));
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t expected_begin = 0;
  for (const Entry& e : entries) {
    if (e.begin < expected_begin) throw fail("tensor '" + *e.name + "' overlaps the previous tensor");
    if (e.begin > expected_begin) throw fail("gap in the data buffer before tensor '" + *e.name + "'");
    expected_begin = e.end;
  }
  if (expected_begin > data.size())
    throw fail("truncated: tensors need " + std::to_string(expected_begin) + " data bytes, file has " +
               std::to_string(data.size()));
  if (expected_begin < data.size())
    throw fail(std::to_string(data.size() - expected_begin) + " trailing bytes after the last tensor");

  nlohmann::json canonical = header;
  canonical[kMetaKey].erase(kChecksumKey);
  const std::string canonical_text = dump_json(canonical);
  std::uint32_t crc = crc32_update(0, canonical_text.data(), canonical_text.size());
  crc = crc32_update(crc, data.data(), data.size());
  if (hex32(crc) != checksum)
    throw fail("checksum mismatch (stored " + checksum + ", computed " + hex32(crc) + "): the file is corrupted");

  ModelFile file(format);
  file.source_ = source;
  for (const auto& [k, v] : meta.items())
    if (!is_reserved_meta(k)) file.metadata_[k] = v.get<std::string>();
  for (const Entry& e : entries)
    file.tensors_.emplace(*e.name, decode_tensor(e.dtype, e.shape, data.data() + e.begin, e.count));
  return file;
}

void write_model_file(const std::filesystem::path& path, const ModelFile& file) {
  write_file_atomic(path, serialize_model_file(file));
}

ModelFile read_model_file(const std::filesystem::path& path, std::string_view expected_format) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    const std::filesystem::path model = path / "model.flt";
    throw IoError(path.string(), "is a directory, not a model file" +
                                     (std::filesystem::is_regular_file(model, ec)
                                          ? " (a run directory? its model is " + model.string() + ")"
                                          : std::string()));
  }
  const std::string bytes = read_file(path);
  return parse_model_file(bytes, path.string(), expected_format);
}

}  // namespace flt::io
