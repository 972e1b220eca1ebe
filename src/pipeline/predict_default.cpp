// The bundled default model: where it is looked for (order documented in predict.hpp and
// docs/prediction.md).
#include "core/error.hpp"
#include "pipeline/predict.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace flt::pipeline {
namespace {

namespace fs = std::filesystem;

fs::path canonical_or_empty(const fs::path& p) {
  std::error_code ec;
  fs::path c = fs::weakly_canonical(p, ec);
  return ec ? fs::path() : c;
}

// The file (program or shared library) holding this code, from the dynamic loader.
fs::path this_module() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&canonical_or_empty), &info) == 0 || info.dli_fname == nullptr) return {};
  return canonical_or_empty(info.dli_fname);
}

// The source tree this library was built from (FLT_SOURCE_TREE, set by CMake), when this code runs
// from that build's tree (FLT_BUILD_TREE): an installed or copied library never reaches back into
// a developer's checkout.
fs::path source_tree() {
#if defined(FLT_SOURCE_TREE) && defined(FLT_BUILD_TREE)
  const fs::path build = canonical_or_empty(FLT_BUILD_TREE), module = this_module();
  if (build.empty() || module.empty()) return {};
  const auto [end, rest] = std::mismatch(build.begin(), build.end(), module.begin(), module.end());
  if (end != build.end()) return {};
  return fs::path(FLT_SOURCE_TREE);
#else
  return {};
#endif
}

// <prefix> of the running program (<prefix>/bin/flt), from /proc/self/exe; empty if unknown.
fs::path program_prefix() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec || exe.empty()) return {};
  return exe.parent_path().parent_path();
}

const fs::path kModelRelative = fs::path("models") / "default.flt";

}  // namespace

std::vector<fs::path> default_model_candidates() {
  std::vector<fs::path> out;
  const char* env = std::getenv(kDefaultModelEnv);
  if (env != nullptr && *env != '\0') {
    out.emplace_back(env);
    return out;  // an explicit choice: no silent fallback to another model
  }
  if (const fs::path root = source_tree(); !root.empty()) out.push_back(root / kModelRelative);
#ifdef FLT_INSTALL_DATADIR
  out.push_back(fs::path(FLT_INSTALL_DATADIR) / "flt" / kModelRelative);
#endif
  if (const fs::path prefix = program_prefix(); !prefix.empty()) {
    const fs::path p = prefix / "share" / "flt" / kModelRelative;
    if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  }
  return out;
}

fs::path default_model_path() {
  const auto candidates = default_model_candidates();
  for (const auto& p : candidates) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p;
  }
  const char* env = std::getenv(kDefaultModelEnv);
  std::string message;
  if (env != nullptr && *env != '\0') {
    message = std::string("the default model named by ") + kDefaultModelEnv + " does not exist: " +
              env;
  } else {
    message = "no default model found; looked in (in this order): $" +
              std::string(kDefaultModelEnv) + " (not set)";
    for (const auto& p : candidates) message += ", " + p.string();
  }
  message +=
      ". Give a model with --model FILE.flt, or train one with 'flt train' (for example on the "
      "bundled QM9 subset datasets/qm9/qm9_subset.xyz.gz; see docs/prediction.md) and copy the "
      "run's model.flt to models/default.flt in the source tree, or point " +
      std::string(kDefaultModelEnv) + " at it";
  throw ConfigError(message);
}

}  // namespace flt::pipeline
