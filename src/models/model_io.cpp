// .flt save/load of the molecule model. See model_io.hpp.
#include "models/model_io.hpp"

namespace flt::models {

template <class T>
train::ModelFile to_model_file(const MoleculeModel<T>& model,
                               const std::map<std::string, std::string>& metadata) {
  train::ModelFile file("flt-model");
  file.set_metadata("model.kind", kModelKind);
  file.set_metadata("model.version", kModelVersion);
  for (const auto& [key, value] : config_to_strings(model.config())) file.set_metadata("model." + key, value);
  for (const auto& [key, value] : metadata) {
    if (key.rfind("model.", 0) == 0)
      throw InvalidArgument("save_model: metadata key '" + key + "' is reserved for the model");
    file.set_metadata(key, value);
  }
  for (auto& a : model.export_arrays()) {
    train::Shape shape(a.shape.begin(), a.shape.end());
    if (a.name.rfind("param.", 0) == 0) {
      std::vector<T> v(a.values.begin(), a.values.end());  // exact: the values came from T
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
  const std::string& src = file.source();
  if (file.format() != "flt-model") throw ModelFileError(src, "not a model file (format '" + file.format() + "')");
  if (!file.has_metadata("model.kind") || file.metadata("model.kind") != kModelKind)
    throw ModelFileError(src, "not an flt molecule model (metadata model.kind)");
  if (file.metadata("model.version") != kModelVersion)
    throw ModelFileError(src, "unsupported molecule-model version '" + file.metadata("model.version") +
                                  "' (this build reads version " + kModelVersion + ")");
  std::map<std::string, std::string> config_values;
  if (metadata) metadata->clear();
  for (const auto& [key, value] : file.all_metadata()) {
    if (key.rfind("model.", 0) == 0) {
      if (key != "model.kind" && key != "model.version") config_values[key.substr(6)] = value;
    } else if (metadata) {
      (*metadata)[key] = value;
    }
  }
  std::unique_ptr<MoleculeModel<T>> model;
  try {
    model = std::make_unique<MoleculeModel<T>>(config_from_strings(config_values));
  } catch (const ConfigError& e) {
    throw ModelFileError(src, std::string("invalid model configuration: ") + e.what());
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
      default:
        throw ModelFileError(src, "tensor '" + name + "' has dtype " + train::dtype_name(tensor.dtype()) +
                                      " (the model stores F32 or F64)");
    }
    arrays.push_back(std::move(a));
  }
  try {
    model->import_arrays(arrays);
  } catch (const InvalidArgument& e) {
    throw ModelFileError(src, e.what());
  }
  return model;
}

template <class T>
void save_model(const std::filesystem::path& path, const MoleculeModel<T>& model,
                const std::map<std::string, std::string>& metadata) {
  train::write_model_file(path, to_model_file(model, metadata));
}

std::unique_ptr<MoleculeModel<float>> load_model(const std::filesystem::path& path,
                                                 std::map<std::string, std::string>* metadata) {
  return from_model_file<float>(train::read_model_file(path, "flt-model"), metadata);
}

template train::ModelFile to_model_file<float>(const MoleculeModel<float>&, const std::map<std::string, std::string>&);
template train::ModelFile to_model_file<double>(const MoleculeModel<double>&, const std::map<std::string, std::string>&);
template std::unique_ptr<MoleculeModel<float>> from_model_file<float>(const train::ModelFile&, std::map<std::string, std::string>*);
template std::unique_ptr<MoleculeModel<double>> from_model_file<double>(const train::ModelFile&, std::map<std::string, std::string>*);
template void save_model<float>(const std::filesystem::path&, const MoleculeModel<float>&, const std::map<std::string, std::string>&);
template void save_model<double>(const std::filesystem::path&, const MoleculeModel<double>&, const std::map<std::string, std::string>&);

}  // namespace flt::models
