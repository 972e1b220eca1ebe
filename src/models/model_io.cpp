// .flt save/load of the molecule model. See model_io.hpp.
#include "models/model_io.hpp"

#include "core/error.hpp"

#include <cstdint>
#include <utility>
#include <vector>

namespace flt::models {

namespace {

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

template <class T>
train::ModelFile to_model_file(const MoleculeModel<T>& model,
                               const std::map<std::string, std::string>& metadata) {
  train::ModelFile file(kModelFileFormat);
  for (const auto& [key, value] : config_to_strings(model.config())) file.set_metadata("config." + key, value);
  for (const auto& [key, value] : metadata)
    file.set_metadata(starts_with(key, "training.") ? key : "training." + key, value);
  for (NamedArray& a : model.export_arrays()) {
    train::Shape shape(a.shape.begin(), a.shape.end());
    if (starts_with(a.name, "param.")) {
      // The weights are exactly representable in T: store them in their own precision.
      std::vector<T> v(a.values.begin(), a.values.end());
      file.set_tensor(a.name, train::Tensor(std::move(v), std::move(shape)));
    } else if (a.name == "norm.elements") {
      std::vector<std::int32_t> v(a.values.begin(), a.values.end());
      file.set_tensor(a.name, train::Tensor(std::move(v), std::move(shape)));
    } else {
      file.set_tensor(a.name, train::Tensor(std::move(a.values), std::move(shape)));
    }
  }
  return file;
}

template <class T>
std::unique_ptr<MoleculeModel<T>> from_model_file(const train::ModelFile& file,
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
      case train::DType::F32: {
        const auto v = tensor.template values<float>();
        a.values.assign(v.begin(), v.end());
        break;
      }
      case train::DType::F64: {
        const auto v = tensor.template values<double>();
        a.values.assign(v.begin(), v.end());
        break;
      }
      case train::DType::I32: {
        const auto v = tensor.template values<std::int32_t>();
        a.values.assign(v.begin(), v.end());
        break;
      }
      default:
        throw ModelFileError(source, "tensor '" + name + "' has unexpected dtype " + train::dtype_name(tensor.dtype()));
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
  train::write_model_file(path, to_model_file(model, metadata));
}

std::unique_ptr<MoleculeModel<float>> load_model(const std::filesystem::path& path,
                                                 std::map<std::string, std::string>* metadata) {
  return from_model_file<float>(train::read_model_file(path, kModelFileFormat), metadata);
}

template train::ModelFile to_model_file<float>(const MoleculeModel<float>&, const std::map<std::string, std::string>&);
template train::ModelFile to_model_file<double>(const MoleculeModel<double>&, const std::map<std::string, std::string>&);
template std::unique_ptr<MoleculeModel<float>> from_model_file<float>(const train::ModelFile&, std::map<std::string, std::string>*);
template std::unique_ptr<MoleculeModel<double>> from_model_file<double>(const train::ModelFile&, std::map<std::string, std::string>*);
template void save_model<float>(const std::filesystem::path&, const MoleculeModel<float>&, const std::map<std::string, std::string>&);
template void save_model<double>(const std::filesystem::path&, const MoleculeModel<double>&, const std::map<std::string, std::string>&);

}  // namespace flt::models
