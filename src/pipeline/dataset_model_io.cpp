// .flt model files of trained molecule models (layout in dataset_model_io.hpp).
#include "pipeline/dataset_model_io.hpp"

#include "core/error.hpp"
#include "train/model_file.hpp"

namespace flt::pipeline {

namespace {

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

void save_model_file(const std::filesystem::path& path, const models::MoleculeModel<float>& model,
                     const std::map<std::string, std::string>& metadata) {
  train::ModelFile file(kModelFileFormat);
  for (const auto& [key, value] : models::config_to_strings(model.config())) file.set_metadata("config." + key, value);
  for (const auto& [key, value] : metadata)
    file.set_metadata(starts_with(key, "training.") ? key : "training." + key, value);
  for (const models::NamedArray& a : model.export_arrays()) {
    train::Shape shape(a.shape.begin(), a.shape.end());
    if (starts_with(a.name, "param.")) {
      // Float weights are exactly representable: store them in their own precision.
      std::vector<float> v(a.values.begin(), a.values.end());
      file.set_tensor(a.name, train::Tensor(std::move(v), std::move(shape)));
    } else if (a.name == "norm.elements") {
      std::vector<std::int32_t> v(a.values.begin(), a.values.end());
      file.set_tensor(a.name, train::Tensor(std::move(v), std::move(shape)));
    } else {
      file.set_tensor(a.name, train::Tensor(a.values, std::move(shape)));
    }
  }
  train::write_model_file(path, file);
}

LoadedModelFile load_model_file(const std::filesystem::path& path) {
  const train::ModelFile file = train::read_model_file(path, kModelFileFormat);
  const std::string source = path.string();
  std::map<std::string, std::string> config;
  for (const auto& [key, value] : file.all_metadata())
    if (starts_with(key, "config.")) config[key.substr(7)] = value;
  if (config.empty()) throw ModelFileError(source, "no model configuration (config.* metadata entries)");
  LoadedModelFile out;
  try {
    out.model = std::make_unique<models::MoleculeModel<float>>(models::config_from_strings(config));
  } catch (const Error& e) {
    throw ModelFileError(source, std::string("invalid model configuration: ") + e.what());
  }
  std::vector<models::NamedArray> arrays;
  for (const auto& [name, tensor] : file.tensors()) {
    models::NamedArray a;
    a.name = name;
    a.shape.assign(tensor.shape().begin(), tensor.shape().end());
    switch (tensor.dtype()) {
      case train::DType::F32: {
        auto v = tensor.values<float>();
        a.values.assign(v.begin(), v.end());
        break;
      }
      case train::DType::F64: {
        auto v = tensor.values<double>();
        a.values.assign(v.begin(), v.end());
        break;
      }
      case train::DType::I32: {
        auto v = tensor.values<std::int32_t>();
        a.values.assign(v.begin(), v.end());
        break;
      }
      default:
        throw ModelFileError(source, "tensor '" + name + "' has unexpected dtype " + train::dtype_name(tensor.dtype()));
    }
    arrays.push_back(std::move(a));
  }
  try {
    out.model->import_arrays(arrays);
  } catch (const Error& e) {
    throw ModelFileError(source, std::string("inconsistent model arrays: ") + e.what());
  }
  out.metadata = file.all_metadata();
  return out;
}

}  // namespace flt::pipeline
