#include "chem/format.hpp"

#include "core/error.hpp"

#include <algorithm>
#include <cctype>
#include <iterator>
#include <string>

namespace flt::chem {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool ends_with(const std::string& text, std::string_view suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Format format_from_name(std::string_view name) {
  const std::string n = lower(name);
  if (n == "sdf" || n == "mol" || n == "sd" || n == "mdl") return Format::sdf;
  if (n == "xyz") return Format::xyz;
  if (n == "extxyz" || n == "exyz") return Format::extxyz;
  if (n == "qm9") return Format::qm9;
  if (n == "pdb" || n == "ent") return Format::pdb;
  if (n == "csv") return Format::csv;
  if (n == "smi" || n == "smiles") return Format::smi;
  throw InvalidArgument("unknown molecule format '" + std::string(name) +
                        "' (known: sdf, mol, xyz, extxyz, qm9, pdb, csv, smi)");
}

std::string_view format_name(Format format) {
  switch (format) {
    case Format::sdf: return "sdf";
    case Format::xyz: return "xyz";
    case Format::extxyz: return "extxyz";
    case Format::qm9: return "qm9";
    case Format::pdb: return "pdb";
    case Format::csv: return "csv";
    case Format::smi: return "smi";
    case Format::unknown: break;
  }
  return "unknown";
}

Format format_from_path(std::string_view path) {
  std::string p = lower(path);
  if (ends_with(p, ".gz")) p.resize(p.size() - 3);
  const auto slash = p.find_last_of('/');
  const auto dot = p.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) {
    return Format::unknown;
  }
  const std::string ext = p.substr(dot + 1);
  if (ext == "sdf" || ext == "mol" || ext == "sd" || ext == "mdl") return Format::sdf;
  if (ext == "xyz") return Format::xyz;
  if (ext == "extxyz" || ext == "exyz") return Format::extxyz;
  if (ext == "pdb" || ext == "ent") return Format::pdb;
  if (ext == "csv") return Format::csv;
  if (ext == "smi" || ext == "smiles" || ext == "ism") return Format::smi;
  return Format::unknown;
}

bool is_archive(std::string_view path) {
  const std::string p = lower(path);
  static constexpr std::string_view kSuffixes[] = {
      ".tar",  ".tar.gz",  ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz",
      ".tar.zst", ".tzst", ".zip", ".7z",  ".cpio"};
  return std::any_of(std::begin(kSuffixes), std::end(kSuffixes),
                     [&](std::string_view suffix) { return ends_with(p, suffix); });
}

}  // namespace flt::chem
