// bench_model: the C++ side of the model benchmark (tools/bench/run_model_bench.sh, which runs it
// next to the PyTorch implementation in tools/bench/torch/flt_torch.py). One process = one
// measurement (the harness reads this process's peak RSS from wait4), printing one JSON line.
//
// Shapes: S molecules per batch, N atoms per batch, P targets. The model is a trained model of the
// default configuration (`--model`): attention near_far (exact near field within 5 Angstrom with
// Hermite-table distance filters, sink and vector messages; FLT far field with a product-grid
// design; gated equivariant update), D = 128, H = 8, 3 blocks, F = 256, G = 128, P = 8 targets
// with sum/mean pooling; its configuration for training, its trained weights, far-field designs
// and normalisation for prediction.
//
// Input (written by tools/bench/torch/prepare_data.py from datasets/qm9/qm9_subset.xyz.gz, so
// both sides see identical molecules and targets): first line "M P"; per molecule a line
// "n y_1 .. y_P" (the standardised targets, dimensionless) followed by n lines "Z x y z"
// (Angstrom).
//
// Modes:
//   train    `--steps` optimisation steps after `--warmup` untimed ones, batches of `--batch-size`
//            consecutive molecules (cycling), from a fresh model with the model's configuration
//            and seed -- the per-step work of `flt train --config datasets/qm9/default_model.ini`
//            (pipeline/train.cpp): begin_step (the far-field designs rotated at random), zero
//            grads, forward, L1 loss on the standardised targets, backward, global-norm clipping
//            at 10, AdamW (lr 5e-4, betas 0.9/0.999, eps 1e-8, weight decay 0.05 on matrices only),
//            then the weights' exponential moving average (decay 0.999 with warm-up). The
//            learning-rate schedule is left out on both sides (one scalar per step).
//   predict  physical-unit predictions (MoleculeModel::predict) of the trained model for
//            `--molecules` molecules in batches of `--batch-size` (64: the predictor's default),
//            after one untimed batch. Also reports the forward's arithmetic (count_forward, below:
//            multiply-adds of every batch, counted before the timed loop) as GFLOP/s and as a
//            fraction of this machine's float32 FMA peak (tools/bench/fma_peak.hpp, measured with
//            the same thread count after the timed loop, best of 3), per wall-clock second and per
//            CPU-second of the process.
//   export   writes the fresh model that `train` starts from (`--model-out`, a .flt file), the
//            trained model's normalised outputs (one line per molecule, P values, %.9g; one
//            molecule per forward) for the first `--molecules` molecules to `--predictions-out`,
//            and, with `--physical-out`, the physical-unit predictions of the same molecules through
//            MoleculeModel::predict in batches of `--batch-size` (default 64): the parity check of
//            the PyTorch forward.
//   count    prints the multiply-add count of the forward per term for the first `--molecules`
//            molecules in batches of `--batch-size` (no timing).
//
// Multiply-add count (count_forward): what MoleculeModel<float>::forward executes, read off
// src/models/molecule_model.cpp, src/attention/near_field.cpp, src/attention/far_field.cpp and
// src/models/equivariant_update.cpp, in multiply-adds (an FMA, or a lone multiply or add, is
// one; GFLOP/s = 2 x multiply-adds per second, the unit of the FMA peak). Transcendental
// functions (exp, sin, cos, sqrt, division) and data movement are not counted: the count is a
// lower bound of the arithmetic. Terms, for N atoms, T atom types, P near pairs, D = 128, V = 3D,
// K = 16, G = 256, H = 8, per block:
//   linear            q, k (T rows in block 0, N after), v, o, vec_u, vec_w (3N rows), the
//                     update MLP (2D -> F -> 3D); rows x in x out (+ rows x out for the bias);
//                     the head MLP once
//   filter table      (G + 1) K (D + V) twice (values and slopes), per block and forward
//   filter interp.    4 P (D + V): the cubic Hermite interpolant per pair
//   attention pairs   P (2D logits + 2D scalar messages + 5H logit scaling and softmax weights)
//   vector messages   15 P D (e (v^a F^a vec_x + v^b F^b u_x) for 3 components, as written)
//   far field         exact near pairs P (K_f + K_f H + D); each incomplete set of n <= 185
//                     atoms (the Gram path) n^2 (F_f + K_f (H + 1) + D) + n F_f (features;
//                     F_f = 1 + 2 M (K_f - 1) = 337); larger sets the feature sums 2 n F_f D +
//                     F_f D plus 5 M (K_f - 1) per near pair (their estimates)
//   elementwise       LayerNorms 5 per element, residual adds, activations (1 per element),
//                     the update's norms and gates (3 + 8 per atom and channel), pooling
#include "core/allocator.hpp"
#include "core/losses.hpp"
#include "core/optim.hpp"
#include "core/gemm.hpp"
#include "fma_peak.hpp"
#include "attention/neighbours.hpp"
#include "models/model_io.hpp"
#include "models/molecule_model.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using flt::Index;
using flt::models::Molecule;

struct Args {
  std::string mode, data, model, model_out, predictions_out, physical_out;
  int threads = 1;
  int steps = 200;
  int warmup = 5;
  int batch_size = 0;  // 0: the mode's default, 32 for train (the default model's training batch),
                      // 64 otherwise (flt predict's batch)
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
    else if (k == "--physical-out") a.physical_out = val();
    else throw std::runtime_error("unknown option " + k);
  }
  if (a.mode != "train" && a.mode != "predict" && a.mode != "export" && a.mode != "count")
    throw std::runtime_error("--mode must be train, predict, export or count");
  if (a.data.empty() || a.model.empty()) throw std::runtime_error("--data and --model are required");
  if (a.batch_size == 0) a.batch_size = a.mode == "train" ? 32 : 64;
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

// ---------------------------------------------------------------------------------------------
// Multiply-adds of MoleculeModel<float>::forward for one batch of the near_far kind with vectors
// and the FLT far field (the terms are listed in the header comment).
struct ForwardCount {
  std::map<std::string, double> macs;  // per term
  double pairs = 0, far_pairs = 0, gram_sets = 0, sum_sets = 0, complete_sets = 0;
  double total() const {
    double t = 0;
    for (const auto& [k, v] : macs) t += v;
    return t;
  }
  void add(const ForwardCount& o) {
    for (const auto& [k, v] : o.macs) macs[k] += v;
    pairs += o.pairs;
    far_pairs += o.far_pairs;
    gram_sets += o.gram_sets;
    sum_sets += o.sum_sets;
    complete_sets += o.complete_sets;
  }
};

ForwardCount count_forward(const flt::models::MoleculeModel<float>& model,
                           const flt::models::MoleculeBatch& batch) {
  const auto& c = model.config();
  if (c.attention != flt::models::AttentionKind::near_far || !c.vectors ||
      c.far_field != flt::models::FarField::flt || c.use_charges)
    throw std::runtime_error("count_forward: needs a near_far model with vectors and the flt far field");
  const double N = static_cast<double>(batch.num_atoms()), D = static_cast<double>(c.width);
  const double H = static_cast<double>(c.heads), V = 3 * D, K = static_cast<double>(c.radial_nodes);
  const double Fh = static_cast<double>(c.mlp_hidden), Gh = static_cast<double>(c.head_hidden);
  const double Pt = static_cast<double>(c.num_targets()), Kf = static_cast<double>(c.far_nodes);
  const double Gt = 256;  // NearFieldConfig::table_intervals (the model keeps the default)
  const double M = static_cast<double>(model.layers().at(0).far_design.size());
  const double Ff = 1 + 2 * M * (Kf - 1);  // far features per row: the constant node, then 2M per node
  const double gram_limit = std::min(256.0, std::floor(2 * Ff * D / (Ff + D)));
  std::vector<int> seen(static_cast<std::size_t>(c.max_z + 1), 0);
  double T = 0;
  for (int z : batch.atomic_numbers)
    if (!seen[static_cast<std::size_t>(z)]++) T += 1;
  const flt::attn::NeighbourList nb = flt::attn::build_neighbour_list(batch.index, batch.coords, c.cutoff);
  ForwardCount out;
  const double P = static_cast<double>(nb.num_pairs());
  out.pairs = P;
  auto lin = [](double rows, double in, double o, bool bias = true) { return rows * in * o + (bias ? rows * o : 0); };
  auto& m = out.macs;
  double far_sets = 0;
  for (Index s = 0; s < batch.num_molecules(); ++s) {
    const double n = static_cast<double>(batch.index.size(s));
    const double pairs = static_cast<double>(nb.offsets[static_cast<std::size_t>(batch.index.end(s))] -
                                             nb.offsets[static_cast<std::size_t>(batch.index.begin(s))]);
    out.far_pairs += n * n - pairs;
    if (flt::attn::set_is_complete(nb, batch.index, s)) {
      out.complete_sets += 1;
    } else if (n <= gram_limit) {
      out.gram_sets += 1;
      far_sets += n * n * (Ff + Kf * (H + 1) + D) + n * Ff;
    } else {
      out.sum_sets += 1;
      far_sets += 2 * n * Ff * D + Ff * D + pairs * 5 * M * (Kf - 1);
    }
  }
  for (Index b = 0; b < c.blocks; ++b) {
    const double R = b == 0 ? T : N;  // block 0: LN1 and q/k/v per atom type
    m["linear"] += lin(R, D, D) * 2 + lin(R, D, V) + lin(N, D, D) + 2 * lin(3 * N, D, D, false) +
                   lin(N, 2 * D, Fh) + lin(N, Fh, 3 * D);
    m["filter table"] += 2 * (Gt + 1) * K * (D + V);
    m["filter interpolation"] += 4 * P * (D + V);
    m["attention pairs"] += P * (2 * D + 2 * D + 5 * H);
    m["vector messages"] += 15 * P * D;
    m["far field"] += P * (Kf + Kf * H + D) + far_sets;
    m["elementwise"] += 5 * R * D + 5 * N * D /* LNs */ + N * D + 3 * N * D /* residuals */ +
                        N * Fh /* silu */ + 3 * N * D + 8 * N * D /* norms, gates */;
  }
  m["linear"] += lin(N, D, Gh) + lin(N, Gh, Pt);
  m["elementwise"] += 5 * N * D + N * Gh + N * Pt;
  return out;
}

void print_count_json(const ForwardCount& fc, double molecules) {
  std::printf("\"macs_per_molecule\":%.1f,\"macs_terms_per_molecule\":{", fc.total() / molecules);
  bool first = true;
  for (const auto& [k, v] : fc.macs) {
    std::printf("%s\"%s\":%.1f", first ? "" : ",", k.c_str(), v / molecules);
    first = false;
  }
  std::printf("},\"pairs_per_molecule\":%.2f,\"far_pairs_per_molecule\":%.2f,\"complete_sets\":%.0f,"
              "\"gram_sets\":%.0f,\"sum_sets\":%.0f",
              fc.pairs / molecules, fc.far_pairs / molecules, fc.complete_sets, fc.gram_sets, fc.sum_sets);
}

void write_row(std::ofstream& out, const double* v, Index n) {
  for (Index t = 0; t < n; ++t) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%s%.17g", t ? " " : "", v[t]);
    out << buf;
  }
  out << "\n";
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
    // The trained model: its configuration for training (fresh weights from its seed), its
    // trained weights, designs and normalisation for prediction.
    // For an ensemble file its first member: the benchmark times one network.
    const std::unique_ptr<flt::models::MoleculeModel<float>> trained =
        flt::models::from_model_file<float>(flt::models::read_member_files(a.model).front());
    flt::models::MoleculeModel<float>& trained_model = *trained;
    if (static_cast<std::size_t>(trained_model.config().num_targets()) != p)
      throw std::runtime_error("the data file has " + std::to_string(p) + " targets, the model " +
                               std::to_string(trained_model.config().num_targets()));
    std::size_t atoms = 0;

    if (a.mode == "export") {
      flt::models::MoleculeModel<float> fresh(trained_model.config());
      flt::models::save_model(a.model_out, fresh);
      std::ofstream out(a.predictions_out);
      for (int s = 0; s < a.molecules; ++s) {
        flt::models::ModelCache<float> cache;
        const auto b = batch_at(mols, static_cast<std::size_t>(s), 1);
        const flt::Mat<double> o = trained_model.forward(b, cache).cast<double>();
        write_row(out, o.data(), o.cols());
      }
      if (!a.physical_out.empty()) {
        std::ofstream phys(a.physical_out);
        for (int first = 0; first < a.molecules; first += a.batch_size) {
          const int count = std::min(a.batch_size, a.molecules - first);
          const flt::Mat<double> o =
              trained_model.predict(batch_at(mols, static_cast<std::size_t>(first), static_cast<std::size_t>(count)));
          for (Index s = 0; s < o.rows(); ++s) write_row(phys, o.row(s).data(), o.cols());
        }
      }
      std::printf("{\"mode\":\"export\",\"molecules\":%d}\n", a.molecules);
      return 0;
    }

    if (a.mode == "count") {
      ForwardCount total;
      for (int first = 0; first < a.molecules; first += a.batch_size) {
        const int count = std::min(a.batch_size, a.molecules - first);
        total.add(count_forward(trained_model, batch_at(mols, static_cast<std::size_t>(first),
                                                        static_cast<std::size_t>(count))));
      }
      std::printf("{\"mode\":\"count\",\"batch_size\":%d,\"molecules\":%d,", a.batch_size, a.molecules);
      print_count_json(total, a.molecules);
      std::printf("}\n");
      return 0;
    }

    if (a.mode == "train") {
      flt::models::MoleculeModel<float> model(trained_model.config());
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
        // As pipeline/train.cpp: a new draw (far-field designs rotated) per optimisation step.
        if (model.config().redraw_features) model.begin_step(static_cast<std::uint64_t>(k));
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

    // predict. The arithmetic of the timed batches, counted first (untimed).
    ForwardCount work;
    for (int first = 0; first < a.molecules; first += a.batch_size) {
      const int count = std::min(a.batch_size, a.molecules - first);
      work.add(count_forward(trained_model, batch_at(mols, static_cast<std::size_t>(first),
                                                     static_cast<std::size_t>(count))));
    }
    double checksum = 0;
    {
      const auto b = batch_at(mols, 0, static_cast<std::size_t>(a.batch_size));
      checksum += trained_model.predict(b).sum();
    }
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_seconds();
    for (int first = 0; first < a.molecules; first += a.batch_size) {
      const int count = std::min(a.batch_size, a.molecules - first);
      const auto b = batch_at(mols, static_cast<std::size_t>(first), static_cast<std::size_t>(count));
      atoms += static_cast<std::size_t>(b.num_atoms());
      checksum += trained_model.predict(b).sum();
    }
    const double t = seconds_since(t0);
    const double cpu = cpu_seconds() - c0;
    // The FMA peak with the same thread count, right after the timed loop: best of three, per
    // wall-clock second and per CPU-second of the process (on a shared machine the CPU-time
    // figures are less disturbed by waiting for a core, on both sides of the fraction).
    constexpr long kPeakIters = 40'000'000;
    const double peak_flop = static_cast<double>(a.threads) * static_cast<double>(kPeakIters) * 12 * 8 * 2;
    double peak = 0, peak_cpu = 0;
    for (int r = 0; r < 3; ++r) {
      const double c1 = cpu_seconds();
      peak = std::max(peak, flt_bench::fma_peak_gflops(a.threads, kPeakIters));
      peak_cpu = std::max(peak_cpu, peak_flop / (cpu_seconds() - c1) * 1e-9);
    }
    const double gflops = 2.0 * work.total() / t * 1e-9;
    const double gflops_cpu = 2.0 * work.total() / cpu * 1e-9;
    std::printf("{\"mode\":\"predict\",\"impl\":\"cpp\",\"threads\":%d,\"batch_size\":%d,\"molecules\":%d,"
                "\"atoms\":%zu,\"seconds\":%.6f,\"cpu_seconds\":%.6f,\"mol_per_s\":%.3f,\"checksum\":%.6g,"
                "\"gflops\":%.3f,\"fma_peak_gflops\":%.3f,\"peak_fraction\":%.5f,\"gflops_per_cpu_s\":%.3f,"
                "\"fma_peak_gflops_per_cpu_s\":%.3f,\"peak_fraction_cpu\":%.5f,\"fma_peak_isa\":\"%s\","
                "\"gemm_isa\":\"%s\",",
                a.threads, a.batch_size, a.molecules, atoms, t, cpu, a.molecules / t, checksum, gflops, peak,
                gflops / peak, gflops_cpu, peak_cpu, gflops_cpu / peak_cpu, flt_bench::peak_description().c_str(),
                flt::gemm::isa_name(flt::gemm::active_isa()));
    print_count_json(work, a.molecules);
    std::printf("}\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_model: %s\n", e.what());
    return 1;
  }
}
