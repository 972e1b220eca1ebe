// Readable description of a loaded model (see info.hpp).
#include "pipeline/info.hpp"

#include "chem/elements.hpp"
#include "chem/writer.hpp"
#include "core/text.hpp"
#include "io/units.hpp"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace flt::pipeline {

std::string describe_model(const LoadedModel& model) {
  std::ostringstream o;
  const auto& meta = model.metadata();
  auto meta_or = [&](const char* key, const char* fallback) -> std::string {
    auto it = meta.find(key);
    return it == meta.end() ? fallback : it->second;
  };
  o << "model: " << model.source() << "\n";
  o << "format: " << meta_or("format", "flt-model") << ", version "
    << meta_or("format_version", "(in memory)") << "\n";
  o << "parameters: " << model.parameter_count() << "\n";

  o << "\nconfiguration:\n";
  std::size_t width = 0;
  const auto config = models::config_to_strings(model.config());
  for (const auto& [k, v] : config) width = std::max(width, k.size());
  for (const auto& [k, v] : config) {
    std::string key = k;
    key.resize(width, ' ');
    o << "  " << key << " = " << v << "\n";
  }

  const auto& norm = model.normalisation();
  o << "\nelements (" << norm.elements.size() << "):";
  for (int z : norm.elements) o << " " << chem::element_symbol(z) << "(" << z << ")";
  o << "\n";

  o << "\ntargets (" << model.targets().size() << "):\n";
  char line[512];
  std::snprintf(line, sizeof line, "  %-10s %-12s %-9s %16s %16s\n", "name", "unit", "pooling",
                "mean", "scale");
  o << line;
  for (std::size_t t = 0; t < model.targets().size(); ++t) {
    const auto& spec = model.targets()[t];
    std::snprintf(line, sizeof line, "  %-10s %-12s %-9s %16s %16s\n", spec.name.c_str(),
                  io::shown_unit(spec.unit).c_str(), spec.extensive ? "sum" : "mean",
                  shortest_number(norm.mean[t]).c_str(),
                  shortest_number(norm.scale[t]).c_str());
    o << line;
  }
  o << "  (extensive targets: prediction = sum of reference energies + atoms x mean + scale x "
       "network output; intensive: mean + scale x network output)\n";

  bool any_reference = false;
  for (std::size_t t = 0; t < model.targets().size(); ++t)
    if (model.targets()[t].extensive) any_reference = true;
  if (any_reference) {
    o << "\nreference energies per element (target unit per atom):\n";
    o << "  element";
    for (const auto& spec : model.targets())
      if (spec.extensive) o << "  " << spec.name << " [" << spec.unit << "]";
    o << "\n";
    for (int z : norm.elements) {
      o << "  " << chem::element_symbol(z) << "(" << z << ")";
      for (std::size_t t = 0; t < model.targets().size(); ++t)
        if (model.targets()[t].extensive)
          o << "  " << shortest_number(norm.reference(static_cast<Index>(t), z));
      o << "\n";
    }
  }

  o << "\nmetadata:\n";
  bool any = false;
  for (const auto& [k, v] : meta) {
    if (k == "format" || k == "format_version" || k == "checksum_crc32") continue;
    // The configuration is shown above in full; keep the long JSON/INI blobs out.
    if (v.size() > 200) {
      o << "  " << k << " = (" << v.size() << " characters)\n";
    } else {
      o << "  " << k << " = " << v << "\n";
    }
    any = true;
  }
  if (!any) o << "  (none)\n";
  if (auto it = meta.find("checksum_crc32"); it != meta.end()) o << "  checksum_crc32 = " << it->second << "\n";
  return o.str();
}

}  // namespace flt::pipeline
