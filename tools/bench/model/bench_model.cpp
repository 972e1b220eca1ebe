// bench_model: the C++ side of the issue-5 model benchmark (tools/bench/run_model_bench.sh, which
// runs it next to the PyTorch implementation in tools/bench/torch/flt_torch.py). One process = one
// measurement (the harness reads this process's peak RSS from wait4), printing one JSON line.
//
// Shapes: S molecules per batch, N atoms per batch; the model is the default MoleculeModel<float>
// (models::ModelConfig defaults: D = 128, H = 8, 3 blocks, bias FLT attention, m = 16, R = 16,
// radial_gaussian spectrum with T = 4), one extensive target.
//
// Input (written by tools/bench/torch/prepare_data.py from datasets/qm9/qm9_subset.xyz.gz, so
// both sides see identical molecules and targets): first line M; per molecule a line "n y" (y =
// the standardised U0 target, dimensionless) followed by n lines "Z x y z" (Angstrom).
//
// Modes:
//   train    `--steps` optimisation steps after `--warmup` untimed ones, batches of `--batch-size`
//            consecutive molecules (cycling): zero grads, forward, MSE on the standardised target,
//            backward, global-norm clipping at 10, AdamW (lr 5e-4 constant, betas 0.9/0.999,
//            eps 1e-8, weight decay 0.01 on matrices only) -- the per-step work of
//            pipeline/train.cpp with its defaults (the learning-rate schedule is left out: it is
//            one scalar per step on both sides).
//   predict  physical-unit predictions (MoleculeModel::predict) of `--molecules` molecules in
//            batches of `--batch-size` (64: the predictor's default), after one untimed batch.
//   export   writes the freshly initialised model (`--model-out`, a .flt file) and its predictions
//            (normalised output, one line per molecule, %.9g) for the first `--molecules`
//            molecules to `--predictions-out`: the parity check of the PyTorch forward.
#include "core/losses.hpp"
#include "core/optim.hpp"
#include "models/model_io.hpp"
#include "models/molecule_model.hpp"

#include <omp.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using flt::Index;
using flt::models::Molecule;

struct Args {
  std::string mode, data, model_out, predictions_out;
  int threads = 1;
  int steps = 200;
  int warmup = 5;
  int batch_size = 32;
  int molecules = 2048;
  std::uint64_t seed = 0;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value for " + k);
      return argv[++i];
    };
    if (k == "--mode") a.mode = val();
    else if (k == "--data") a.data = val();
    else if (k == "--threads") a.threads = std::stoi(val());
    else if (k == "--steps") a.steps = std::stoi(val());
    else if (k == "--warmup") a.warmup = std::stoi(val());
    else if (k == "--batch-size") a.batch_size = std::stoi(val());
    else if (k == "--molecules") a.molecules = std::stoi(val());
    else if (k == "--seed") a.seed = std::stoull(val());
    else if (k == "--model-out") a.model_out = val();
    else if (k == "--predictions-out") a.predictions_out = val();
    else throw std::runtime_error("unknown option " + k);
  }
  if (a.mode != "train" && a.mode != "predict" && a.mode != "export")
    throw std::runtime_error("--mode must be train, predict or export");
  if (a.data.empty()) throw std::runtime_error("--data is required");
  if (a.threads < 1 || a.steps < 1 || a.warmup < 0 || a.batch_size < 1 || a.molecules < 1)
    throw std::runtime_error("--threads, --steps, --batch-size, --molecules must be >= 1");
  return a;
}

void read_data(const std::string& path, std::vector<Molecule>& mols, std::vector<double>& y) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::size_t m = 0;
  in >> m;
  mols.resize(m);
  y.resize(m);
  for (std::size_t s = 0; s < m; ++s) {
    std::size_t n = 0;
    in >> n >> y[s];
    auto& mol = mols[s];
    mol.atomic_numbers.resize(n);
    mol.positions.resize(n);
    for (std::size_t i = 0; i < n; ++i)
      in >> mol.atomic_numbers[i] >> mol.positions[i][0] >> mol.positions[i][1] >> mol.positions[i][2];
    if (!in || n == 0) throw std::runtime_error(path + ": bad record " + std::to_string(s + 1));
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// CPU time of the whole process (all threads), seconds: on a shared, oversubscribed machine it
// says how much work the measured loop took, which wall time alone cannot.
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Batch b of size B over the data, cycling (consecutive molecules, as the torch side).
flt::models::MoleculeBatch batch_at(const std::vector<Molecule>& mols, std::size_t first,
                                    std::size_t count, std::vector<double>* labels_out = nullptr,
                                    const std::vector<double>* y = nullptr) {
  std::vector<const Molecule*> ptrs;
  for (std::size_t k = 0; k < count; ++k) {
    const std::size_t s = (first + k) % mols.size();
    ptrs.push_back(&mols[s]);
    if (labels_out) labels_out->push_back((*y)[s]);
  }
  return flt::models::MoleculeBatch::from(std::span<const Molecule* const>(ptrs));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    omp_set_num_threads(a.threads);
    std::vector<Molecule> mols;
    std::vector<double> y;
    read_data(a.data, mols, y);
    flt::models::ModelConfig config;  // the documented defaults
    config.seed = a.seed;
    flt::models::MoleculeModel<float> model(config);
    auto& store = model.parameters();
    std::size_t atoms = 0;

    if (a.mode == "export") {
      flt::models::save_model(a.model_out, model);
      std::ofstream out(a.predictions_out);
      for (int s = 0; s < a.molecules; ++s) {
        flt::models::ModelCache<float> cache;
        const auto b = batch_at(mols, static_cast<std::size_t>(s), 1);
        const flt::Mat<float> o = model.forward(b, cache);
        char line[64];
        std::snprintf(line, sizeof line, "%.9g\n", static_cast<double>(o(0, 0)));
        out << line;
      }
      std::printf("{\"mode\":\"export\",\"molecules\":%d}\n", a.molecules);
      return 0;
    }

    if (a.mode == "train") {
      flt::AdamW<float> opt(store.size(), flt::AdamWConfig{0.9, 0.999, 1e-8, 0.01});
      opt.set_decay_mask(flt::decay_mask_matrices_only(store));
      flt::models::ModelCache<float> cache;
      double loss = 0;
      auto step = [&](int k) {
        std::vector<double> labels;
        const std::size_t first = static_cast<std::size_t>(k) * static_cast<std::size_t>(a.batch_size);
        const auto b = batch_at(mols, first, static_cast<std::size_t>(a.batch_size), &labels, &y);
        store.zero_grad();
        const flt::Mat<float> out = model.forward(b, cache);
        flt::Mat<float> target(out.rows(), 1);
        for (Index s = 0; s < out.rows(); ++s) target(s, 0) = static_cast<float>(labels[static_cast<std::size_t>(s)]);
        const flt::LossValue lv = flt::mse_loss_forward<float>(out, target);
        flt::Mat<float> dout = flt::Mat<float>::Zero(out.rows(), out.cols());
        flt::mse_loss_backward<float>(out, target, dout);
        model.backward(b, cache, dout);
        flt::clip_grad_norm(store, 10.0);
        opt.step(store, 5e-4);
        loss = lv.value;
        return static_cast<std::size_t>(b.num_atoms());
      };
      for (int k = 0; k < a.warmup; ++k) step(k);
      const auto t0 = std::chrono::steady_clock::now();
      const double c0 = cpu_seconds();
      for (int k = a.warmup; k < a.warmup + a.steps; ++k) atoms += step(k);
      const double t = seconds_since(t0);
      const double cpu = cpu_seconds() - c0;
      const double n = static_cast<double>(a.steps) * a.batch_size;
      std::printf("{\"mode\":\"train\",\"impl\":\"cpp\",\"threads\":%d,\"steps\":%d,\"batch_size\":%d,"
                  "\"molecules\":%.0f,\"atoms\":%zu,\"seconds\":%.6f,\"cpu_seconds\":%.6f,\"mol_per_s\":%.3f,"
                  "\"last_loss\":%.6g}\n",
                  a.threads, a.steps, a.batch_size, n, atoms, t, cpu, n / t, loss);
      return 0;
    }

    // predict
    double checksum = 0;
    {
      const auto b = batch_at(mols, 0, static_cast<std::size_t>(a.batch_size));
      checksum += model.predict(b).sum();
    }
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_seconds();
    for (int first = 0; first < a.molecules; first += a.batch_size) {
      const int count = std::min(a.batch_size, a.molecules - first);
      const auto b = batch_at(mols, static_cast<std::size_t>(first), static_cast<std::size_t>(count));
      atoms += static_cast<std::size_t>(b.num_atoms());
      checksum += model.predict(b).sum();
    }
    const double t = seconds_since(t0);
    const double cpu = cpu_seconds() - c0;
    std::printf("{\"mode\":\"predict\",\"impl\":\"cpp\",\"threads\":%d,\"batch_size\":%d,\"molecules\":%d,"
                "\"atoms\":%zu,\"seconds\":%.6f,\"cpu_seconds\":%.6f,\"mol_per_s\":%.3f,\"checksum\":%.6g}\n",
                a.threads, a.batch_size, a.molecules, atoms, t, cpu, a.molecules / t, checksum);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_model: %s\n", e.what());
    return 1;
  }
}
