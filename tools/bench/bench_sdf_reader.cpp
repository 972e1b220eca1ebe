// bench_sdf_reader: streaming and throughput of flt's SDF reader against RDKit's own
// ForwardSDMolSupplier on the same file. Run through tools/bench/chem/run_bench_sdf.sh, which
// writes docs/benchmarks/chem_io.md. Subcommands:
//
//   bench_sdf_reader generate OUT.sdf N FILE.sdf...   N records by cycling the records of FILEs
//   bench_sdf_reader read FILE.sdf MODE               MODE: flt | rdkit | rdkit-removehs
//
// `read` prints one line "mode records atoms seconds records_per_s peak_rss_mib": one process per
// measurement, so peak RSS (VmHWM) belongs to that reader alone.
#include "chem/reader.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

#include <GraphMol/FileParsers/MolSupplier.h>
#include <GraphMol/ROMol.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace {

double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1.0;
}

int generate(const std::string& out_path, long count, const std::vector<std::string>& inputs) {
  std::vector<std::string> records;
  for (const auto& path : inputs) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::cerr << "cannot open " << path << "\n";
      return 1;
    }
    std::string line, record;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      record += line;
      record += '\n';
      if (line.rfind("$$$$", 0) == 0) {
        records.push_back(record);
        record.clear();
      }
    }
  }
  if (records.empty()) {
    std::cerr << "no records\n";
    return 1;
  }
  std::ofstream out(out_path, std::ios::binary);
  for (long i = 0; i < count; ++i) out << records[static_cast<std::size_t>(i) % records.size()];
  out.close();
  if (!out) {
    std::cerr << "write error " << out_path << "\n";
    return 1;
  }
  std::cerr << "wrote " << count << " records (cycling " << records.size() << ") to " << out_path
            << "\n";
  return 0;
}

int read(const std::string& path, const std::string& mode) {
  std::size_t records = 0, atoms = 0, failures = 0;
  const auto start = std::chrono::steady_clock::now();
  if (mode == "flt") {
    flt::chem::ReadOptions options;  // defaults: explicit H kept, 3-D required, checks on
    auto reader = flt::chem::MoleculeReader::open(path, options);
    for (;;) {
      try {
        auto points = reader->next();
        if (!points) break;
        ++records;
        atoms += points->size();
      } catch (const flt::InputError&) {
        ++failures;
      }
    }
  } else if (mode == "rdkit" || mode == "rdkit-removehs") {
    std::ifstream in(path, std::ios::binary);
    // The settings flt uses (sanitize, keep H, strict) or RDKit's defaults (remove H).
    RDKit::ForwardSDMolSupplier supplier(&in, false, true, mode == "rdkit-removehs", true);
    while (!supplier.atEnd()) {
      std::unique_ptr<RDKit::ROMol> mol(supplier.next());
      if (!mol) {
        if (supplier.atEnd()) break;  // blank tail after the last record
        ++failures;
        continue;
      }
      ++records;
      atoms += mol->getNumAtoms();
    }
  } else {
    std::cerr << "unknown mode " << mode << "\n";
    return 2;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s %zu %zu %.3f %.1f %.1f %zu\n", mode.c_str(), records, atoms, seconds,
              static_cast<double>(records) / seconds, peak_rss_mib(), failures);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() >= 4 && args[0] == "generate") {
    return generate(args[1], std::stol(args[2]),
                    std::vector<std::string>(args.begin() + 3, args.end()));
  }
  if (args.size() == 3 && args[0] == "read") return read(args[1], args[2]);
  std::cerr << "usage: bench_sdf_reader generate OUT.sdf N FILE.sdf...\n"
               "       bench_sdf_reader read FILE.sdf flt|rdkit|rdkit-removehs\n";
  return 2;
}
