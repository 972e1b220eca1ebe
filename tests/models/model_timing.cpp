// flt_model_timing: forward+backward (training) and forward-only (prediction) time per molecule of
// the molecule model on real QM9 molecules. A measurement program, not a test (not registered with
// ctest). Prints one line per configuration to stdout.
//
//   flt_model_timing [--qm9 FILE] [--molecules N] [--batch B] [--repeats R] [--threads T]
//                    [key=value ...]       (model configuration keys, as in the INI file)
//
// Example (docs/molecule-model.md): flt_model_timing --threads 1 attention=kronecker width=128
#include "core/optim.hpp"
#include "models/molecule_model.hpp"
#include "../common/text_input.hpp"

#include <omp.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

using namespace flt;
using namespace flt::models;

namespace {

std::vector<Molecule> read_qm9(const std::string& path, std::size_t count) {
  flt::test::TextInput in(path);
  if (!in.opened()) throw IoError(path, "cannot open");
  std::vector<Molecule> out;
  std::string line;
  while (out.size() < count && std::getline(in, line)) {
    const int n = std::stoi(line);
    std::getline(in, line);  // gdb N + labels (unused here)
    Molecule m;
    for (int i = 0; i < n; ++i) {
      std::getline(in, line);
      std::istringstream atom(line);
      std::string el;
      double x, y, z;
      atom >> el >> x >> y >> z;
      const int zz = el == "H" ? 1 : el == "C" ? 6 : el == "N" ? 7 : el == "O" ? 8 : el == "F" ? 9 : 0;
      if (zz == 0) throw InputError(path, out.size() + 1, "unexpected element " + el);
      m.atomic_numbers.push_back(zz);
      m.positions.push_back({x, y, z});
    }
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string path = std::string(FLT_DATASETS_DIR) + "/qm9/qm9_subset.xyz.gz";
  std::size_t count = 512, batch_size = 32;
  int repeats = 3, threads = omp_get_max_threads();
  std::map<std::string, std::string> kv;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw ConfigError(a + " needs a value");
      return argv[++i];
    };
    if (a == "--qm9") path = next();
    else if (a == "--molecules") count = std::stoul(next());
    else if (a == "--batch") batch_size = std::stoul(next());
    else if (a == "--repeats") repeats = std::stoi(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (auto eq = a.find('='); eq != std::string::npos) kv[a.substr(0, eq)] = a.substr(eq + 1);
    else throw ConfigError("unknown argument " + a);
  }
  omp_set_num_threads(threads);
  // QM9 molecules are spread over the file by size; take every k-th for a representative mix.
  auto all = read_qm9(path, 13023);
  std::vector<Molecule> mols;
  const std::size_t stride = std::max<std::size_t>(1, all.size() / count);
  for (std::size_t i = 0; i < all.size() && mols.size() < count; i += stride) mols.push_back(all[i]);
  if (!kv.contains("max_z")) kv["max_z"] = "9";
  const ModelConfig cfg = config_from_strings(kv);
  MoleculeModel<float> model(cfg);
  AdamW<float> opt(model.parameters().size());
  std::vector<MoleculeBatch> batches;
  std::size_t atoms = 0;
  for (std::size_t b = 0; b < mols.size(); b += batch_size) {
    const std::size_t e = std::min(mols.size(), b + batch_size);
    batches.push_back(MoleculeBatch::from(std::span<const Molecule>(mols.data() + b, e - b)));
    atoms += static_cast<std::size_t>(batches.back().num_atoms());
  }
  using clock = std::chrono::steady_clock;
  double best_train = 1e300, best_pred = 1e300, cpu_train = 0, cpu_pred = 0;
  for (int r = 0; r < repeats; ++r) {
    const std::clock_t c0 = std::clock();
    auto t0 = clock::now();
    for (const auto& b : batches) {
      ModelCache<float> cache;
      const Mat<float> out = model.forward(b, cache);
      model.parameters().zero_grad();
      model.backward(b, cache, Mat<float>::Constant(out.rows(), out.cols(), 1e-3f));
      opt.step(model.parameters(), 1e-5);
    }
    auto t1 = clock::now();
    const std::clock_t c1 = std::clock();
    for (const auto& b : batches) model.predict(b);
    auto t2 = clock::now();
    const std::clock_t c2 = std::clock();
    if (r == repeats - 1) {
      cpu_train = static_cast<double>(c1 - c0) / CLOCKS_PER_SEC;
      cpu_pred = static_cast<double>(c2 - c1) / CLOCKS_PER_SEC;
    }
    best_train = std::min(best_train, std::chrono::duration<double>(t1 - t0).count());
    best_pred = std::min(best_pred, std::chrono::duration<double>(t2 - t1).count());
  }
  const double n = static_cast<double>(mols.size());
  const auto st = model.attention_stats();
  if (st.denominators > 0)
    std::printf("FLT denominators: %llu checked, %llu non-positive, %llu tiny, min relative %.3g\n",
                static_cast<unsigned long long>(st.denominators),
                static_cast<unsigned long long>(st.nonpositive_denominators),
                static_cast<unsigned long long>(st.tiny_denominators), st.min_relative_denominator);
  std::printf("attention=%s width=%ld heads=%ld blocks=%ld m=%ld R=%ld params=%zu threads=%d "
              "molecules=%zu atoms/molecule=%.1f batch=%zu | train %.3f ms/molecule (%.0f molecules/s) | "
              "predict %.3f ms/molecule (%.0f molecules/s) | CPU time train %.3f, predict %.3f ms/molecule\n",
              to_string(cfg.attention), static_cast<long>(cfg.width), static_cast<long>(cfg.heads),
              static_cast<long>(cfg.blocks), static_cast<long>(cfg.num_features),
              static_cast<long>(cfg.num_frequencies), model.parameters().size(), threads, mols.size(),
              static_cast<double>(atoms) / n, batch_size, 1e3 * best_train / n, n / best_train,
              1e3 * best_pred / n, n / best_pred, 1e3 * cpu_train / n, 1e3 * cpu_pred / n);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "flt_model_timing: " << e.what() << "\n";
  return 1;
}
