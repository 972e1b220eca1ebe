// .flt save/load of the molecule model. See model_io.hpp.
#include "models/model_io.hpp"

#include "core/error.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <utility>
#include <vector>

namespace flt::models {

namespace {

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

template <class T>
io::ModelFile to_model_file(const MoleculeModel<T>& model,
                               const std::map<std::string, std::string>& metadata) {
  io::ModelFile file(kModelFileFormat);
  for (const auto& [key, value] : config_to_strings(model.config())) file.set_metadata("config." + key, value);
  for (const auto& [key, value] : metadata)
    file.set_metadata(starts_with(key, "training.") ? key : "training." + key, value);
  for (NamedArray& a : model.export_arrays()) {
    io::Shape shape(a.shape.begin(), a.shape.end());
    if (starts_with(a.name, "param.")) {
      // The weights are exactly representable in T: store them in their own precision.
      std::vector<T> v(a.values.begin(), a.values.end());
      file.set_tensor(a.name, io::Tensor(std::move(v), std::move(shape)));
    } else if (a.name == "norm.elements") {
      std::vector<std::int32_t> v(a.values.begin(), a.values.end());
      file.set_tensor(a.name, io::Tensor(std::move(v), std::move(shape)));
    } else {
      file.set_tensor(a.name, io::Tensor(std::move(a.values), std::move(shape)));
    }
  }
  return file;
}

template <class T>
std::unique_ptr<MoleculeModel<T>> from_model_file(const io::ModelFile& file,
                                                  std::map<std::string, std::string>* metadata) {
  const std::string& source = file.source();
  if (file.format() != kModelFileFormat)
    throw ModelFileError(source, "not a model file (format '" + file.format() + "')");
  if (file.has_metadata("model.kind"))
    throw ModelFileError(source, "a '" + file.metadata("model.kind") +
                                     "' file (flt image/seq), not a molecule model (flt train writes those)");
  std::map<std::string, std::string> config;
  for (const auto& [key, value] : file.all_metadata())
    if (starts_with(key, "config.")) config[key.substr(7)] = value;
  if (config.empty()) throw ModelFileError(source, "no model configuration (config.* metadata entries)");
  std::unique_ptr<MoleculeModel<T>> model;
  try {
    model = std::make_unique<MoleculeModel<T>>(config_from_strings(config));
  } catch (const Error& e) {
    throw ModelFileError(source, std::string("invalid model configuration: ") + e.what());
  }
  std::vector<NamedArray> arrays;
  for (const auto& [name, tensor] : file.tensors()) {
    NamedArray a;
    a.name = name;
    a.shape.assign(tensor.shape().begin(), tensor.shape().end());
    switch (tensor.dtype()) {
      case io::DType::F32: {
        const auto v = tensor.template values<float>();
        a.values.assign(v.begin(), v.end());
        break;
      }
      case io::DType::F64: {
        const auto v = tensor.template values<double>();
        a.values.assign(v.begin(), v.end());
        break;
      }
      case io::DType::I32: {
        const auto v = tensor.template values<std::int32_t>();
        a.values.assign(v.begin(), v.end());
        break;
      }
      default:
        throw ModelFileError(source, "tensor '" + name + "' has unexpected dtype " + io::dtype_name(tensor.dtype()));
    }
    arrays.push_back(std::move(a));
  }
  try {
    model->import_arrays(arrays);
  } catch (const Error& e) {
    throw ModelFileError(source, std::string("inconsistent model arrays: ") + e.what());
  }
  if (metadata) *metadata = file.all_metadata();
  return model;
}

template <class T>
void save_model(const std::filesystem::path& path, const MoleculeModel<T>& model,
                const std::map<std::string, std::string>& metadata) {
  io::write_model_file(path, to_model_file(model, metadata));
}

std::unique_ptr<MoleculeModel<float>> load_model(const std::filesystem::path& path,
                                                 std::map<std::string, std::string>* metadata) {
  return from_model_file<float>(io::read_model_file(path, kModelFileFormat), metadata);
}

namespace {

constexpr const char* kMembersKey = "ensemble.members";
constexpr const char* kCalibrationPrefix = "calibration.";
constexpr const char* kFactorPrefix = "calibration.factor.";

std::string member_prefix(std::size_t k) { return "member." + std::to_string(k) + "."; }

// Parses "member.<k>.<rest>" into k (1..members) and rest; nullopt when `key` is not of that form.
std::optional<std::pair<std::size_t, std::string>> split_member_key(const std::string& key,
                                                                    std::size_t members) {
  if (!starts_with(key, "member.")) return std::nullopt;
  const std::size_t dot = key.find('.', 7);
  if (dot == std::string::npos || dot == 7 || dot + 1 == key.size()) return std::nullopt;
  std::size_t k = 0;
  for (std::size_t i = 7; i < dot; ++i) {
    if (key[i] < '0' || key[i] > '9' || (i == 7 && key[i] == '0') || k > members) return std::nullopt;
    k = 10 * k + static_cast<std::size_t>(key[i] - '0');
  }
  if (k < 1 || k > members) return std::nullopt;
  return std::make_pair(k, key.substr(dot + 1));
}

}  // namespace

io::ModelFile to_ensemble_file(std::span<const io::ModelFile> files) {
  std::vector<io::ModelFile> members;
  for (const io::ModelFile& f : files) {
    if (f.format() != kModelFileFormat && f.format() != kEnsembleFileFormat)
      throw InvalidArgument(f.source() + ": holds '" + f.format() + "', not a model or an ensemble");
    for (io::ModelFile& m : member_files(f)) members.push_back(std::move(m));
  }
  if (members.size() < 2)
    throw InvalidArgument("an ensemble needs at least two models (given " + std::to_string(members.size()) + ")");
  io::ModelFile out(kEnsembleFileFormat);
  out.set_metadata(kMembersKey, std::to_string(members.size()));
  for (std::size_t k = 0; k < members.size(); ++k) {
    const std::string prefix = member_prefix(k + 1);
    for (const auto& [key, value] : members[k].all_metadata()) out.set_metadata(prefix + key, value);
    for (const auto& [name, tensor] : members[k].tensors()) out.set_tensor(prefix + name, tensor);
  }
  return out;
}

std::vector<io::ModelFile> member_files(const io::ModelFile& file) {
  const std::string& source = file.source();
  if (file.format() == kModelFileFormat) return {file};
  if (file.format() != kEnsembleFileFormat)
    throw ModelFileError(source, "holds '" + file.format() + "', not a model ('" + kModelFileFormat +
                                     "') or an ensemble ('" + kEnsembleFileFormat + "')");
  if (!file.has_metadata(kMembersKey)) throw ModelFileError(source, "ensemble without its member count ('ensemble.members')");
  const std::string& count = file.metadata(kMembersKey);
  std::size_t members = 0;
  if (count.empty() || count.size() > 6 || count.find_first_not_of("0123456789") != std::string::npos ||
      (members = std::stoul(count)) < 2)
    throw ModelFileError(source, "ensemble member count '" + count + "' is not a whole number of at least 2");
  // Every member holds at least one tensor: a count beyond the tensors is malformed, and is refused
  // before anything is allocated for it.
  if (members > file.tensors().size())
    throw ModelFileError(source, "ensemble member count " + count + " exceeds its " +
                                     std::to_string(file.tensors().size()) + " tensors");
  std::vector<io::ModelFile> out(members, io::ModelFile(kModelFileFormat));
  for (std::size_t k = 0; k < members; ++k)
    out[k].set_source(source + " [member " + std::to_string(k + 1) + " of " + count + "]");
  for (const auto& [key, value] : file.all_metadata()) {
    if (key == kMembersKey || starts_with(key, kCalibrationPrefix)) continue;
    const auto parsed = split_member_key(key, members);
    if (!parsed) throw ModelFileError(source, "metadata entry '" + key + "' belongs to no ensemble member");
    out[parsed->first - 1].set_metadata(parsed->second, value);
  }
  for (const auto& [name, tensor] : file.tensors()) {
    const auto parsed = split_member_key(name, members);
    if (!parsed) throw ModelFileError(source, "tensor '" + name + "' belongs to no ensemble member");
    out[parsed->first - 1].set_tensor(parsed->second, tensor);
  }
  for (std::size_t k = 0; k < members; ++k)
    if (out[k].tensors().empty())
      throw ModelFileError(source, "ensemble member " + std::to_string(k + 1) + " of " + count + " is empty");
  return out;
}

std::vector<io::ModelFile> member_files(io::ModelFile&& file) {
  if (file.format() != kModelFileFormat) return member_files(static_cast<const io::ModelFile&>(file));
  std::vector<io::ModelFile> out;
  out.push_back(std::move(file));  // a model file is its own only member: no copy of its tensors
  return out;
}

std::vector<io::ModelFile> read_member_files(const std::filesystem::path& path) {
  return member_files(io::read_model_file(path, {}));
}

void set_calibration(io::ModelFile& ensemble, const EnsembleCalibration& calibration) {
  if (ensemble.format() != kEnsembleFileFormat)
    throw InvalidArgument(ensemble.source() + ": only an ensemble file holds a calibration");
  if (calibration.targets.empty() || calibration.targets.size() != calibration.factors.size())
    throw InvalidArgument("a calibration needs one factor per target");
  for (std::size_t t = 0; t < calibration.factors.size(); ++t)
    if (!std::isfinite(calibration.factors[t]) || calibration.factors[t] <= 0.0)
      throw InvalidArgument("calibration factor of " + calibration.targets[t] + " is not finite and > 0");
  if (calibration.method != kCalibrationCoverage && calibration.method != kCalibrationZScaling)
    throw InvalidArgument("calibration method '" + calibration.method + "' is unknown (coverage or zscaling)");
  ensemble.set_metadata("calibration.version", std::to_string(kCalibrationVersion));
  ensemble.set_metadata("calibration.method", calibration.method);
  for (std::size_t t = 0; t < calibration.targets.size(); ++t) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", calibration.factors[t]);
    ensemble.set_metadata(kFactorPrefix + calibration.targets[t], buf);
  }
  ensemble.set_metadata("calibration.data", calibration.data);
  ensemble.set_metadata("calibration.subset", calibration.subset);
  ensemble.set_metadata("calibration.records", std::to_string(calibration.records));
}

std::optional<EnsembleCalibration> read_calibration(const io::ModelFile& file,
                                                    const std::vector<std::string>& target_order) {
  const auto& meta = file.all_metadata();
  const bool any = std::any_of(meta.begin(), meta.end(), [](const auto& kv) { return starts_with(kv.first, kCalibrationPrefix); });
  if (!any) return std::nullopt;
  const std::string& source = file.source();
  const auto get = [&](const char* key) -> const std::string& {
    if (!file.has_metadata(key)) throw ModelFileError(source, std::string("calibration without '") + key + "'");
    return file.metadata(key);
  };
  if (get("calibration.version") != std::to_string(kCalibrationVersion))
    throw ModelFileError(source, "calibration version '" + file.metadata("calibration.version") +
                                     "' is not one this program reads (" + std::to_string(kCalibrationVersion) + ")");
  const std::string& method = get("calibration.method");
  if (method != kCalibrationCoverage && method != kCalibrationZScaling)
    throw ModelFileError(source, "calibration method '" + method + "' is unknown (coverage or zscaling)");
  EnsembleCalibration c;
  c.method = method;
  c.data = get("calibration.data");
  c.subset = get("calibration.subset");
  const std::string& records = get("calibration.records");
  if (records.empty() || records.size() > 18 || records.find_first_not_of("0123456789") != std::string::npos)
    throw ModelFileError(source, "calibration record count '" + records + "' is not a whole number");
  c.records = std::stoull(records);
  std::map<std::string, double> factors;
  for (const auto& [key, value] : meta) {
    if (!starts_with(key, kCalibrationPrefix)) continue;
    if (!starts_with(key, kFactorPrefix)) {
      if (key != "calibration.version" && key != "calibration.method" && key != "calibration.data" &&
          key != "calibration.subset" && key != "calibration.records")
        throw ModelFileError(source, "unknown calibration entry '" + key + "'");
      continue;
    }
    const std::string target = key.substr(std::char_traits<char>::length(kFactorPrefix));
    char* end = nullptr;
    const double v = value.empty() ? 0.0 : std::strtod(value.c_str(), &end);
    if (value.empty() || end != value.c_str() + value.size() || !std::isfinite(v) || v <= 0.0)
      throw ModelFileError(source, "calibration factor of " + target + " '" + value + "' is not a number > 0");
    factors[target] = v;
  }
  if (factors.empty()) throw ModelFileError(source, "calibration without a factor");
  std::vector<std::string> order = target_order;
  if (order.empty() && file.has_metadata("member.1.config.targets")) {
    // The members' target order (a comma-separated list, as config_to_strings writes it).
    std::string list = file.metadata("member.1.config.targets") + ",";
    for (std::size_t start = 0, comma; (comma = list.find(',', start)) != std::string::npos; start = comma + 1)
      order.push_back(list.substr(start, comma - start));
  }
  if (order.empty())
    for (const auto& [name, v] : factors) order.push_back(name);
  for (const std::string& name : order) {
    const auto it = factors.find(name);
    if (it == factors.end()) throw ModelFileError(source, "calibration has no factor for target " + name);
    c.targets.push_back(name);
    c.factors.push_back(it->second);
    factors.erase(it);
  }
  if (!factors.empty())
    throw ModelFileError(source, "calibration factor for " + factors.begin()->first + ", which the members do not predict");
  return c;
}

template io::ModelFile to_model_file<float>(const MoleculeModel<float>&, const std::map<std::string, std::string>&);
template io::ModelFile to_model_file<double>(const MoleculeModel<double>&, const std::map<std::string, std::string>&);
template std::unique_ptr<MoleculeModel<float>> from_model_file<float>(const io::ModelFile&, std::map<std::string, std::string>*);
template std::unique_ptr<MoleculeModel<double>> from_model_file<double>(const io::ModelFile&, std::map<std::string, std::string>*);
template void save_model<float>(const std::filesystem::path&, const MoleculeModel<float>&, const std::map<std::string, std::string>&);
template void save_model<double>(const std::filesystem::path&, const MoleculeModel<double>&, const std::map<std::string, std::string>&);

}  // namespace flt::models
