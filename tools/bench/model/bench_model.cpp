// bench_model: the C++ side of the issue-5 model benchmark (tools/bench/run_model_bench.sh, which
// runs it next to the PyTorch implementation in tools/bench/torch/flt_torch.py). One process = one
// measurement (the harness reads this process's peak RSS from wait4), printing one JSON line.
//
// Shapes: S molecules per batch, N atoms per batch, P targets. The model is the bundled default
// model (`--model`, models/default.flt): its configuration (exact attention with a learned radial
// bias, D = 128, H = 8, 3 blocks, F = 256, G = 128, P = 8 targets with sum/mean pooling) and, for
// prediction, its trained weights and normalisation.
//
// Input (written by tools/bench/torch/prepare_data.py from datasets/qm9/qm9_subset.xyz.gz, so
// both sides see identical molecules and targets): first line "M P"; per molecule a line
// "n y_1 .. y_P" (the standardised targets, dimensionless) followed by n lines "Z x y z"
// (Angstrom).
//
// Modes:
//   train    `--steps` optimisation steps after `--warmup` untimed ones, batches of `--batch-size`
//            consecutive molecules (cycling), from a fresh model with the default model's
//            configuration and seed -- the per-step work of `flt train --config
//            datasets/qm9/default_model.ini` (pipeline/train.cpp): zero grads, forward, L1 loss on
//            the standardised targets, backward, global-norm clipping at 10, AdamW (lr 5e-4,
//            betas 0.9/0.999, eps 1e-8, weight decay 0.05 on matrices only), then the weights'
//            exponential moving average (decay 0.999 with warm-up). The learning-rate schedule is
//            left out on both sides (one scalar per step).
//   predict  physical-unit predictions (MoleculeModel::predict) of the trained default model for
//            `--molecules` molecules in batches of `--batch-size` (64: the predictor's default),
//            after one untimed batch.
//   export   writes the fresh model that `train` starts from (`--model-out`, a .flt file) and the
//            trained default model's normalised outputs (one line per molecule, P values, %.9g)
//            for the first `--molecules` molecules to `--predictions-out`: the parity check of the
//            PyTorch forward.
#include "core/allocator.hpp"
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
  std::string mode, data, model, model_out, predictions_out;
  int threads = 1;
  int steps = 200;
  int warmup = 5;
  int batch_size = 0;  // 0: the mode's default, 32 for train (the default model's training batch),
                      // 64 for predict (flt predict's batch)
  int molecules = 2048;
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
    else if (k == "--batch-size") {
      a.batch_size = std::stoi(val());
      if (a.batch_size < 1) throw std::runtime_error("--batch-size must be >= 1");
    }
    else if (k == "--molecules") a.molecules = std::stoi(val());
    else if (k == "--model") a.model = val();
    else if (k == "--model-out") a.model_out = val();
    else if (k == "--predictions-out") a.predictions_out = val();
    else throw std::runtime_error("unknown option " + k);
  }
  if (a.mode != "train" && a.mode != "predict" && a.mode != "export")
    throw std::runtime_error("--mode must be train, predict or export");
  if (a.data.empty() || a.model.empty()) throw std::runtime_error("--data and --model are required");
  if (a.batch_size == 0) a.batch_size = a.mode == "predict" ? 64 : 32;
  if (a.threads < 1 || a.steps < 1 || a.warmup < 0 || a.batch_size < 1 || a.molecules < 1)
    throw std::runtime_error("--threads, --steps, --batch-size, --molecules must be >= 1");
  return a;
}

// y: M x P targets, row-major.
void read_data(const std::string& path, std::vector<Molecule>& mols, std::vector<double>& y, std::size_t& p) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::size_t m = 0;
  in >> m >> p;
  mols.resize(m);
  y.resize(m * p);
  for (std::size_t s = 0; s < m; ++s) {
    std::size_t n = 0;
    in >> n;
    for (std::size_t t = 0; t < p; ++t) in >> y[s * p + t];
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

// Batch b of size B over the data, cycling (consecutive molecules, as the torch side); labels
// (count x p, row-major) when asked.
flt::models::MoleculeBatch batch_at(const std::vector<Molecule>& mols, std::size_t first,
                                    std::size_t count, std::vector<double>* labels_out = nullptr,
                                    const std::vector<double>* y = nullptr, std::size_t p = 0) {
  std::vector<const Molecule*> ptrs;
  for (std::size_t k = 0; k < count; ++k) {
    const std::size_t s = (first + k) % mols.size();
    ptrs.push_back(&mols[s]);
    if (labels_out)
      for (std::size_t t = 0; t < p; ++t) labels_out->push_back((*y)[s * p + t]);
  }
  return flt::models::MoleculeBatch::from(std::span<const Molecule* const>(ptrs));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    omp_set_num_threads(a.threads);
    // As the flt command does (core/allocator.hpp); the harness gives the PyTorch child the
    // same glibc thresholds through GLIBC_TUNABLES.
    if (!flt::tune_allocator_for_batches()) throw std::runtime_error("mallopt refused the allocator settings");
    std::vector<Molecule> mols;
    std::vector<double> y;
    std::size_t p = 0;
    read_data(a.data, mols, y, p);
    // The bundled default model: its configuration for training (fresh weights from its seed), its
    // trained weights and normalisation for prediction.
    const std::unique_ptr<flt::models::MoleculeModel<float>> trained = flt::models::load_model(a.model);
    flt::models::MoleculeModel<float>& default_model = *trained;
    if (static_cast<std::size_t>(default_model.config().num_targets()) != p)
      throw std::runtime_error("the data file has " + std::to_string(p) + " targets, the model " +
                               std::to_string(default_model.config().num_targets()));
    std::size_t atoms = 0;

    if (a.mode == "export") {
      flt::models::MoleculeModel<float> fresh(default_model.config());
      flt::models::save_model(a.model_out, fresh);
      std::ofstream out(a.predictions_out);
      for (int s = 0; s < a.molecules; ++s) {
        flt::models::ModelCache<float> cache;
        const auto b = batch_at(mols, static_cast<std::size_t>(s), 1);
        const flt::Mat<float> o = default_model.forward(b, cache);
        for (flt::Index t = 0; t < o.cols(); ++t) {
          char v[32];
          std::snprintf(v, sizeof v, "%s%.9g", t ? " " : "", static_cast<double>(o(0, t)));
          out << v;
        }
        out << "\n";
      }
      std::printf("{\"mode\":\"export\",\"molecules\":%d}\n", a.molecules);
      return 0;
    }

    if (a.mode == "train") {
      flt::models::MoleculeModel<float> model(default_model.config());
      auto& store = model.parameters();
      flt::AdamW<float> opt(store.size(), flt::AdamWConfig{0.9, 0.999, 1e-8, 0.05});
      opt.set_decay_mask(flt::decay_mask_matrices_only(store));
      flt::ExponentialMovingAverage<float> ema(store.values(), 0.999, true);
      flt::models::ModelCache<float> cache;
      double loss = 0;
      auto step = [&](int k) {
        std::vector<double> labels;
        const std::size_t first = static_cast<std::size_t>(k) * static_cast<std::size_t>(a.batch_size);
        const auto b = batch_at(mols, first, static_cast<std::size_t>(a.batch_size), &labels, &y, p);
        store.zero_grad();
        const flt::Mat<float> out = model.forward(b, cache);
        flt::Mat<float> target(out.rows(), out.cols());
        for (Index s = 0; s < out.rows(); ++s)
          for (Index t = 0; t < out.cols(); ++t)
            target(s, t) = static_cast<float>(labels[static_cast<std::size_t>(s * out.cols() + t)]);
        const flt::LossValue lv = flt::l1_loss_forward<float>(out, target);
        flt::Mat<float> dout = flt::Mat<float>::Zero(out.rows(), out.cols());
        flt::l1_loss_backward<float>(out, target, dout);
        model.backward(b, cache, dout);
        flt::clip_grad_norm(store, 10.0);
        opt.step(store, 5e-4);
        ema.update(store.values());
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
      checksum += default_model.predict(b).sum();
    }
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_seconds();
    for (int first = 0; first < a.molecules; first += a.batch_size) {
      const int count = std::min(a.batch_size, a.molecules - first);
      const auto b = batch_at(mols, static_cast<std::size_t>(first), static_cast<std::size_t>(count));
      atoms += static_cast<std::size_t>(b.num_atoms());
      checksum += default_model.predict(b).sum();
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
