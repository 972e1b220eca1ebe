// bench_block: the scaling benchmark of one encoder block of the molecule model. Forward +
// backward time and peak memory of models::MoleculeModel<float> with blocks = 1 (otherwise the
// default ModelConfig: attention near_far = exact near field on a neighbour list within 5 A + FLT
// far field + vector features, one extensive target) on one "molecule" of N atoms at liquid
// density, N = 1e3 ... 1e6, with 1 and 2 threads; side by side with the same block with the
// O(N^2) closed-form far field (far_field = exact) and with the old quadratic attention kind
// `exact` (softmax attention with a radial-basis logit bias), up to the largest N that runs
// within a per-run time limit. Run it through tools/bench/run_bench_block.sh, which writes
// docs/benchmarks/encoder_block.md.
//
// Usage:
//   bench_block all [--quick] [--widths auto|W,W...] [--timeout S] [--exact-timeout S]
//                   [--max-gib G] [--reruns K] [--output FILE] [--command TEXT] [--commit TEXT]
//       every configuration in its own child process (flt_bench::run_child: peak RSS per
//       configuration; a run past its limit is killed and reported as not run); writes a Markdown
//       report (temp file + rename) to FILE (default: stdout).
//         --widths auto (default): width 128 (8 heads); if the N = 1e6 point does not fit in
//             memory at 128, the whole range again at width 64 (4 heads, head width 16 kept), and
//             if not even there, the default block's range at width 32 (2 heads) as the last
//             resort for the scaling to 1e6. Or an explicit list of widths (multiples of 16).
//         --timeout: limit per child of the default block (default 1200 s; the child also times
//             the variant with coordinate gradients and the kernels of the split, each only when
//             it fits in 0.8 x the limit);
//         --exact-timeout: limit per child of the quadratic variants (default 120 s); sizes whose
//             time predicted from the previous size (x (N / N_prev)^2) exceeds it are skipped;
//         --max-gib: memory cap (default 18 GiB): a configuration whose peak RSS, predicted from
//             the bytes per atom measured at the largest smaller N, exceeds min(cap, available
//             memory - 1.5 GiB) is skipped, and each child runs under RLIMIT_AS at that limit, so
//             a misprediction ends in std::bad_alloc in the child, never in swapping or the OOM
//             killer;
//         --reruns K: after the sweep, the target points (default block, 2 threads, N = 1e4 and
//             1e6, each width) are run K more times, interleaved; the tables use the fastest run.
//   bench_block run KIND N THREADS WIDTH [--max-gib G] [--budget S] [--order cell|random]
//           [--cell A] [--no-split | --kernels-only]
//       one configuration; prints one "RESULT key=value ..." line (the driver passes --no-split
//       except at 2 threads in cell order). --kernels-only: one model forward + backward (its
//       time is one cold repetition), no +dR timing, then the split's kernels, each the fastest
//       of up to 10 repetitions within 8 s (for work on the kernels). --cell A: cells of A Angstrom
//       for the cell order instead of the model's cutoff.
//       KIND: flt (the default block) | flt-scalar (the same without vector features) | far-exact |
//             far-none | exact (the old attention kind)
//   bench_block peak THREADS   FMA-loop peak (fma_peak.hpp); prints one RESULT line
//
// Workload: N atoms uniformly random in a cube of volume N / 0.1 A^3 (0.1 atoms per A^3, about
// liquid water's atom density), elements uniformly among H, C, N, O (Rng seed 7), one set; the
// atoms are renumbered in cell order (attn::cell_order: cells of side r_c = 5 A in Morton/Z order,
// atoms of a cell in their drawn order) so that neighbours are near in memory, as the model's
// predict does for large structures (model.forward and backward, timed here, take the order given;
// --order random measures that order). One forward (model.forward: embedding, neighbour list, block, output head, sum)
// and one backward from dLoss/dout = 1 with parameter gradients only (timing "params"), and again
// with coordinate gradients too (dcoords, what forces need; timing "+dR"). Time = fastest of up
// to 10 repetitions within ~3 s (at least 2 when a second fits the budget; the first
// repetition includes allocating the cache), as wall time and as process CPU time (user +
// system of all threads, flt_bench::cpu_seconds): on a time-shared machine the CPU time grows
// only while the benchmark runs, so it is the load-robust measure (idle-machine wall time ~ CPU
// time / threads).
//
// Split (2 threads, default block and far-none; cheap and without changing src/): the child times
// the block's kernels on the cached inputs of its own forward: attn::build_neighbour_list (on the
// same coordinates and cutoff), near_field_forward + near_field_backward, far_field_forward +
// far_field_backward (parameter gradients only, as in the "params" timing); reported as shares
// of the params CPU time, "rest" = the remainder (embedding, LayerNorms, linear maps, equivariant
// update, output head, gathers, allocation). The kernels are called with configurations mapped
// from ModelConfig as MoleculeModel's constructor does (a change there needs the same one here).
//
// Memory: peak RSS (getrusage ru_maxrss) of the child after the params and +dR timings (before
// the split's extra buffers); bytes/atom = (peak RSS - RSS after model construction) / N, so it
// includes the input arrays, the neighbour list, the model's cache and backward's temporaries.
//
// Block 0 of the model computes its LayerNorm and q/k/v projections once per atom type (the input
// is the element embedding), so this "one block" is somewhat cheaper than a later block of a
// deeper model; the near field, far field and equivariant update are the same as in any block.
#include "core/allocator.hpp"
#include "core/error.hpp"
#include "core/params.hpp"
#include "core/ragged.hpp"
#include "core/random.hpp"
#include "core/tensor.hpp"
#include "core/version.hpp"
#include "attention/exact/streaming.hpp"
#include "attention/far_field.hpp"
#include "attention/near_field.hpp"
#include "attention/neighbours.hpp"
#include "attention/radial.hpp"
#include "models/molecule_model.hpp"

#include "bench_runner.hpp"
#include "fma_peak.hpp"

#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using flt::Index;
using flt::Mat;
using flt_bench::Clock;
using flt_bench::fmt;
using flt_bench::sci;
using flt_bench::seconds_since;
namespace models = flt::models;
namespace attn = flt::attn;

constexpr double kDensity = 0.1;  // atoms per A^3

// ---------------------------------------------------------------------------------------------
// Workload.

// N atoms in a cube at kDensity, elements among H, C, N, O, in cell order (attn::cell_order: Morton
// order of cells of side `cell`, atoms of a cell in their drawn order) or in drawn (random) order.
models::MoleculeBatch liquid_cube(Index N, double cell, bool cell_order) {
  flt::Rng rng(7);
  const double side = std::cbrt(static_cast<double>(N) / kDensity);
  static constexpr std::array<std::int32_t, 4> kElements = {1, 6, 7, 8};
  Mat<double> r(N, 3);
  std::vector<std::int32_t> z(static_cast<std::size_t>(N));
  for (Index i = 0; i < N; ++i) {
    for (Index a = 0; a < 3; ++a) r(i, a) = side * rng.uniform();
    z[static_cast<std::size_t>(i)] =
        kElements[static_cast<std::size_t>(std::min<double>(3.0, std::floor(4.0 * rng.uniform())))];
  }
  std::vector<Index> order(static_cast<std::size_t>(N));
  std::iota(order.begin(), order.end(), Index(0));
  if (cell_order) order = attn::cell_order(flt::RaggedIndex::single(N), r, cell, 0);
  models::MoleculeBatch batch;
  batch.index = flt::RaggedIndex::single(N);
  batch.coords.resize(N, 3);
  batch.atomic_numbers.resize(static_cast<std::size_t>(N));
  batch.formal_charges.assign(static_cast<std::size_t>(N), 0);
  for (Index i = 0; i < N; ++i) {
    const Index j = order[static_cast<std::size_t>(i)];
    batch.coords.row(i) = r.row(j);
    batch.atomic_numbers[static_cast<std::size_t>(i)] = z[static_cast<std::size_t>(j)];
  }
  return batch;
}

models::ModelConfig block_config(const std::string& kind, Index width) {
  models::ModelConfig c;
  c.blocks = 1;
  c.width = width;
  c.heads = width / 16;  // head width 16 as at the default 128 = 8 x 16
  if (kind == "flt") {
    c.far_field = models::FarField::flt;
  } else if (kind == "flt-scalar") {
    c.far_field = models::FarField::flt;
    c.vectors = false;
  } else if (kind == "far-exact") {
    c.far_field = models::FarField::exact;
  } else if (kind == "far-none") {
    c.far_field = models::FarField::none;
  } else if (kind == "exact") {
    c.attention = models::AttentionKind::exact;
  } else {
    throw flt::InvalidArgument("unknown kind '" + kind + "' (flt | flt-scalar | far-exact | far-none | exact)");
  }
  c.validate();
  return c;
}

// ---------------------------------------------------------------------------------------------
// One configuration (child process).

struct RunOptions {
  double max_gib = 0.0;   // RLIMIT_AS cap (0: none)
  double budget_s = 1e9;  // skip the optional timings (+dR, split) when they would not fit
  bool cell_order = true;
  double cell_side = 0.0;  // side of the cells of the cell order (0: the model's cutoff), Angstrom
  bool split = true;      // time the kernels of the split
  bool kernels_only = false;  // one model forward + backward (untimed repetitions), then the split
};

// Split of the default block's time: its kernels timed on the cached inputs of a forward; wall
// and process CPU seconds (forward + backward) of each; -1 when not timed.
struct Split {
  double neighbours = -1, near = -1, far = -1;
  double neighbours_cpu = -1, near_cpu = -1, far_cpu = -1;
  double near_forward = -1, near_backward = -1, far_forward = -1, far_backward = -1;  // wall s
};

// Each kernel: the fastest of up to 10 repetitions within budget_s (at least one).
Split time_split(models::MoleculeModel<float>& model, const models::MoleculeBatch& batch,
                 const models::ModelCache<float>& cache, double budget_s) {
  const models::ModelConfig& cfg = model.config();
  const Index N = batch.num_atoms(), D = cfg.width;
  Split s;
  {
    const auto t = flt_bench::time_pair(
        [&] {
          const attn::NeighbourList list =
              attn::build_neighbour_list(batch.index, cache.coords_double, cfg.cutoff);
          if (list.num_pairs() != cache.neighbours.num_pairs())
            throw flt::NumericalError("bench_block: neighbour list differs from the model's");
        },
        [] {}, 10, 1.0);
    s.neighbours = t.forward;
    s.neighbours_cpu = t.cpu_forward;
  }
  // Near field, as MoleculeModel maps the configuration (molecule_model.cpp, constructor).
  attn::NearFieldConfig nc;
  nc.heads = cfg.heads;
  nc.head_dim = cfg.head_dim();
  nc.cutoff = cfg.cutoff;
  nc.nodes = attn::RadialNodes::bessel(cfg.radial_nodes, cfg.cutoff);
  nc.filter_activation = flt::Activation::silu;
  nc.vectors = cfg.vectors;
  auto& store = model.parameters();
  const auto& blk = model.layers()[0];
  const auto& bc = cache.blocks[0];
  const attn::NearFieldWeights<float> weights{store.value(blk.near_wk), store.value_span(blk.near_bk),
                                              store.value(blk.near_wv), store.value_span(blk.near_bv),
                                              store.value_span(blk.near_sink)};
  attn::NearFieldGrads<float> grads{store.grad(blk.near_wk), store.grad_span(blk.near_bk),
                                    store.grad(blk.near_wv), store.grad_span(blk.near_bv),
                                    store.grad_span(blk.near_sink)};
  flt::Rng rng(11);
  auto normal = [&](Index rows, Index cols) {
    Mat<float> m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(rng.normal());
    return m;
  };
  const Index Vw = nc.value_width();
  const Mat<float> dout = normal(N, D), ddvec = cfg.vectors ? normal(N, 3 * D) : Mat<float>(0, 0);
  Mat<float> out(N, D), dvec = cfg.vectors ? Mat<float>(N, 3 * D) : Mat<float>(0, 0);
  Mat<float> dq(N, D), dk(N, D), dv(N, Vw), dvec_in = cfg.vectors ? Mat<float>(N, 3 * D) : Mat<float>(0, 0);
  Mat<float> no_dr(0, 3);
  attn::NearFieldCache<float> near_cache;
  {
    const auto t = flt_bench::time_pair(
        [&] {
          attn::near_field_forward<float>(nc, cache.neighbours, cache.coords_double, bc.q, bc.k, bc.v,
                                          bc.vec_in, weights, out, dvec, near_cache);
        },
        [&] {
          dq.setZero();
          dk.setZero();
          dv.setZero();
          if (cfg.vectors) dvec_in = ddvec;
          attn::near_field_backward<float>(nc, cache.neighbours, cache.coords_double, bc.q, bc.k,
                                           bc.v, bc.vec_in, weights, near_cache, dout, ddvec, dq,
                                           dk, dv, dvec_in, no_dr, grads);
        },
        10, budget_s);
    s.near = t.forward + t.backward;
    s.near_cpu = t.cpu_forward + t.cpu_backward;
    s.near_forward = t.forward;
    s.near_backward = t.backward;
    if (!out.allFinite() || !dq.allFinite())
      throw flt::NumericalError("bench_block: non-finite near-field output");
  }
  if (cfg.far_field == models::FarField::flt) {
    attn::FarFieldConfig fc;
    fc.heads = cfg.heads;
    fc.value_dim = cfg.head_dim();
    fc.cutoff = cfg.cutoff;
    fc.nodes.count = cfg.far_nodes;
    fc.nodes.first = 0.0;
    fc.nodes.spacing = cfg.far_spacing;
    const Mat<float> coeffs = store.value(blk.far_theta).array().exp().matrix();
    Mat<float> dcoeffs = Mat<float>::Zero(cfg.heads, cfg.far_nodes);
    attn::FarFieldCache<float> far_cache;
    far_cache.keep_pair_terms = true;  // as the model's forward
    Mat<float> dvf(N, D);
    const auto t = flt_bench::time_pair(
        [&] {
          attn::far_field_forward<float>(fc, blk.far_design, batch.index, cache.neighbours,
                                         cache.coords_double, bc.v.leftCols(D), coeffs, out, far_cache);
        },
        [&] {
          dvf.setZero();
          attn::far_field_backward<float>(fc, blk.far_design, batch.index, cache.neighbours,
                                          cache.coords_double, bc.v.leftCols(D), coeffs, far_cache,
                                          dout, dvf, no_dr, dcoeffs);
        },
        10, budget_s);
    s.far = t.forward + t.backward;
    s.far_cpu = t.cpu_forward + t.cpu_backward;
    s.far_forward = t.forward;
    s.far_backward = t.backward;
    if (!out.allFinite() || !dvf.allFinite())
      throw flt::NumericalError("bench_block: non-finite far-field output");
  } else {
    s.far = s.far_cpu = 0.0;
  }
  return s;
}

// Counted flops (2 per multiply-add) of one forward + backward with parameter gradients: a lower
// bound on the work, for the fraction of the FMA peak and the shortest possible time.
//   Dense layers, per atom (exact from the shapes; backward = 2 x forward: input and weight
//   gradients): output map D^2; with vectors the equivariant update's channel maps 2 x 3 D^2 and
//   its MLP 2D -> F -> 3D, else the block MLP D -> F -> D; the output head D -> G -> P. Block 0's
//   LayerNorm and q/k/v projections run once per atom type and are not counted.
//   near_far: only the near field's filter interpolation per pair of the neighbour list, W = D + V
//   filter values (V = 3D with vectors): 4W multiply-adds in forward (build_pairs), 2 x 4W in
//   backward (filters recomputed in both passes) + 4W (scatter onto the table's nodes);
//   logits, messages, their gradients and the whole far field are not counted.
//   exact kind: flt::exact::streaming_attention_flops (Q K^T, P V, their gradients, the basis).
double counted_gflop(const models::ModelConfig& c, Index N, Index pairs) {
  const double D = static_cast<double>(c.width), F = static_cast<double>(c.mlp_hidden);
  const double G = static_cast<double>(c.head_hidden), P = static_cast<double>(c.num_targets());
  const bool near_far = c.attention == models::AttentionKind::near_far;
  const bool vectors = near_far && c.vectors;
  const double dense = D * D + (vectors ? 6 * D * D + 2 * D * F + 3 * D * F : 2 * D * F) + D * G + G * P;
  double madds = 3.0 * dense * static_cast<double>(N);
  if (near_far) {
    const double W = D + (vectors ? 3 * D : D);
    madds += 16.0 * W * static_cast<double>(pairs);
  }
  double flops = 2.0 * madds;
  if (c.attention == models::AttentionKind::exact) {
    flt::exact::StreamingAttentionConfig ec;  // as MoleculeModel's constructor sets it
    ec.heads = c.heads;
    ec.mask = flt::exact::DistanceMask::additive;
    ec.basis = flt::exact::RadialBasis::uniform(c.exact_rbf, c.exact_cutoff);
    const auto f = flt::exact::streaming_attention_flops(ec, flt::RaggedIndex::single(N), c.head_dim(),
                                                         c.head_dim());
    flops += f.forward + f.backward;
  }
  return flops / 1e9;
}

int run_one(const std::string& kind, Index N, int threads, Index width, const RunOptions& opt) {
  if (opt.max_gib > 0) flt_bench::limit_address_space_gib(opt.max_gib);
  omp_set_num_threads(threads);
  // As the flt command does (core/allocator.hpp): freed blocks stay in the heap for the next call.
  if (!flt::tune_allocator_for_batches()) throw std::runtime_error("mallopt refused the allocator settings");
  const auto t_start = Clock::now();
  models::MoleculeModel<float> model(block_config(kind, width));
  const double rss_base = flt_bench::current_rss_mib();
  const models::MoleculeBatch batch = liquid_cube(N, opt.cell_side > 0 ? opt.cell_side : model.config().cutoff, opt.cell_order);
  const double rss_inputs = flt_bench::current_rss_mib();
  models::ModelCache<float> cache;
  const Mat<float> dout = Mat<float>::Ones(1, model.config().num_targets());
  Mat<float> out, dcoords;
  auto fwd = [&] { out = model.forward(batch, cache); };
  auto bwd = [&] {
    model.parameters().zero_grad();
    model.backward(batch, cache, dout);
  };
  auto bwd_dr = [&] {
    model.parameters().zero_grad();
    model.backward(batch, cache, dout, &dcoords);
  };
  // Params timing: one repetition (it includes allocating the cache and faulting its pages in),
  // then more within ~3 s, at least one more when a second fits the budget with room for the +dR
  // timing (the large sizes too, so that every size's time excludes the first allocation); the
  // fastest counts (wall and CPU time each).
  flt_bench::PairTiming t = flt_bench::time_pair(fwd, bwd, 1, 0.0);
  const double first = t.forward + t.backward;
  if (!opt.kernels_only && seconds_since(t_start) + 3.0 * first < opt.budget_s) {
    const flt_bench::PairTiming more = flt_bench::time_pair(fwd, bwd, 9, 3.0);
    if (more.forward + more.backward < t.forward + t.backward) {
      t.forward = more.forward;
      t.backward = more.backward;
    }
    if (more.cpu_forward + more.cpu_backward < t.cpu_forward + t.cpu_backward) {
      t.cpu_forward = more.cpu_forward;
      t.cpu_backward = more.cpu_backward;
    }
    t.reps = 1 + more.reps;
  }
  if (!out.allFinite()) throw flt::NumericalError("bench_block: non-finite model output");
  const double best = t.forward + t.backward;
  // +dR timing and the split, each only when it fits the remaining budget.
  flt_bench::PairTiming tdr{-1, -1, 0, -1, -1};
  if (!opt.kernels_only && seconds_since(t_start) + 1.5 * best < opt.budget_s) {
    tdr = flt_bench::time_pair(fwd, bwd_dr, 10, 1.5);
    if (!dcoords.allFinite()) throw flt::NumericalError("bench_block: non-finite coordinate gradient");
  }
  const double peak = flt_bench::peak_rss_mib();
  Split split;
  const bool near_far = model.config().attention == models::AttentionKind::near_far;
  const bool far_ok = model.config().far_field != models::FarField::exact;
  if (opt.split && near_far && far_ok && (opt.kernels_only || seconds_since(t_start) + 2.0 * best < opt.budget_s))
    split = time_split(model, batch, cache, opt.kernels_only ? 8.0 : 1.0);

  const Index pairs = near_far ? cache.neighbours.num_pairs() : Index(0);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto tv = [](const timeval& v) { return static_cast<double>(v.tv_sec) + 1e-6 * static_cast<double>(v.tv_usec); };
  const double sys_share = tv(usage.ru_stime) / std::max(1e-9, tv(usage.ru_utime) + tv(usage.ru_stime));
  std::cout << std::setprecision(9) << "RESULT kind=" << kind << " atoms=" << N
            << " threads=" << threads << " width=" << width << " heads=" << model.config().heads
            << " pairs=" << pairs << " gflop=" << counted_gflop(model.config(), N, pairs)
            << " forward_s=" << t.forward << " backward_s=" << t.backward
            << " cpu_s=" << t.cpu_forward + t.cpu_backward << " reps=" << t.reps
            << " dr_s=" << (tdr.reps > 0 ? tdr.forward + tdr.backward : -1.0)
            << " dr_cpu_s=" << (tdr.reps > 0 ? tdr.cpu_forward + tdr.cpu_backward : -1.0)
            << " reps_dr=" << tdr.reps << " rss_base_mib=" << rss_base
            << " rss_inputs_mib=" << rss_inputs << " peak_rss_mib=" << peak
            << " neighbours_s=" << split.neighbours << " near_s=" << split.near
            << " far_s=" << split.far << " neighbours_cpu_s=" << split.neighbours_cpu
            << " near_cpu_s=" << split.near_cpu << " far_cpu_s=" << split.far_cpu
            << " near_forward_s=" << split.near_forward << " near_backward_s=" << split.near_backward
            << " far_forward_s=" << split.far_forward << " far_backward_s=" << split.far_backward
            << " sys_share=" << sys_share << " order=" << (opt.cell_order ? "cell" : "random") << "\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Driver.

struct Result {
  std::string kind, order = "cell";
  Index atoms = 0, width = 0, heads = 0, pairs = 0;
  int threads = 0, reps = 0, reps_dr = 0;
  double forward_s = 0, backward_s = 0, cpu_s = 0, dr_s = -1, dr_cpu_s = -1;
  double rss_base_mib = 0, rss_inputs_mib = 0, peak_rss_mib = 0, gflop = 0;
  double neighbours_s = -1, near_s = -1, far_s = -1;
  double neighbours_cpu_s = -1, near_cpu_s = -1, far_cpu_s = -1;
  double sys_share = 0;  // system CPU time / all CPU time of the whole child (page faults, ...)
  double load = 0;       // 1-min load average when the child started

  double total() const { return forward_s + backward_s; }
  double us_per_atom() const { return total() / static_cast<double>(atoms) * 1e6; }
  double cpu_us_per_atom() const { return cpu_s / static_cast<double>(atoms) * 1e6; }
  double bytes_per_atom() const {
    return (peak_rss_mib - rss_base_mib) * 1024.0 * 1024.0 / static_cast<double>(atoms);
  }
  bool has_split() const { return neighbours_cpu_s >= 0 && near_cpu_s >= 0 && far_cpu_s >= 0; }
};

Result to_result(const flt_bench::ResultFields& kv) {
  auto num = [&](const char* key) { return std::stod(kv.at(key)); };
  Result r;
  r.kind = kv.at("kind");
  r.order = kv.at("order");
  r.atoms = std::stol(kv.at("atoms"));
  r.threads = std::stoi(kv.at("threads"));
  r.width = std::stol(kv.at("width"));
  r.heads = std::stol(kv.at("heads"));
  r.pairs = std::stol(kv.at("pairs"));
  r.gflop = num("gflop");
  r.forward_s = num("forward_s");
  r.backward_s = num("backward_s");
  r.cpu_s = num("cpu_s");
  r.reps = std::stoi(kv.at("reps"));
  r.dr_s = num("dr_s");
  r.dr_cpu_s = num("dr_cpu_s");
  r.reps_dr = std::stoi(kv.at("reps_dr"));
  r.rss_base_mib = num("rss_base_mib");
  r.rss_inputs_mib = num("rss_inputs_mib");
  r.peak_rss_mib = num("peak_rss_mib");
  r.neighbours_s = num("neighbours_s");
  r.near_s = num("near_s");
  r.far_s = num("far_s");
  r.neighbours_cpu_s = num("neighbours_cpu_s");
  r.near_cpu_s = num("near_cpu_s");
  r.far_cpu_s = num("far_cpu_s");
  r.sys_share = num("sys_share");
  return r;
}

double load_1min() {
  std::ifstream in("/proc/loadavg");
  double one = 0;
  in >> one;
  return one;
}

struct Options {
  bool quick = false;
  std::string widths = "auto", output, command = "bench_block all", commit;
  double timeout = 1200, exact_timeout = 120, max_gib = 18;
  int reruns = 0;
};

class Driver {
 public:
  explicit Driver(const Options& o) : opt_(o) {}

  // Runs (kind, N, threads, width) unless a prediction says it would not fit; records the result
  // or why it is missing. Returns true when it ran to completion.
  bool run(const std::string& kind, Index N, int threads, Index width, bool cell_order = true) {
    const bool quadratic = kind == "far-exact" || kind == "exact";
    const double timeout = quadratic ? opt_.exact_timeout : opt_.timeout;
    const std::string label = kind + " width " + std::to_string(width) + " N = " + sci(N) + ", " +
                              std::to_string(threads) + " thread(s)" +
                              (cell_order ? "" : ", random order");
    if (memory_skipped(kind, N, width)) return false;  // already skipped or out of memory
    // Memory: bytes per atom at the largest smaller N of this kind and width (any thread count).
    const double limit_gib = std::min(opt_.max_gib, flt_bench::meminfo_gib("MemAvailable") - 1.5);
    if (const Result* prev = largest_below(kind, width, N, 0)) {
      const double predicted_gib =
          (prev->rss_base_mib + prev->bytes_per_atom() * static_cast<double>(N) / 1048576.0) / 1024.0;
      if (predicted_gib > limit_gib) {
        missing_.push_back(label + ": skipped, predicted peak RSS " + fmt(predicted_gib, 1) +
                           " GiB (" + fmt(prev->bytes_per_atom() / 1024.0, 1) + " KiB/atom at N = " +
                           sci(prev->atoms) + ") > limit " + fmt(limit_gib, 1) +
                           " GiB (min of --max-gib and available memory - 1.5 GiB)");
        memory_skipped_.push_back({kind, N, width});
        std::cerr << "[bench_block] " << missing_.back() << "\n";
        return false;
      }
    }
    // Time: quadratic kinds from the previous size at this thread count.
    if (const Result* prev = largest_below(kind, width, N, threads)) {
      const double x = static_cast<double>(N) / static_cast<double>(prev->atoms);
      const double predicted = prev->total() * (quadratic ? x * x : x);
      if (predicted > 1.25 * timeout) {
        missing_.push_back(label + ": skipped, predicted " + fmt(predicted, 0) + " s (from " +
                           fmt(prev->total(), 1) + " s at N = " + sci(prev->atoms) + ", x (N/N')" +
                           (quadratic ? "^2" : "") + ") > the " + fmt(timeout, 0) + " s limit");
        std::cerr << "[bench_block] " << missing_.back() << "\n";
        return false;
      }
    }
    std::vector<std::string> args = {"run", kind, std::to_string(N), std::to_string(threads),
                                      std::to_string(width), "--max-gib", fmt(limit_gib, 2),
                                      "--budget", fmt(0.8 * timeout, 0)};
    if (!cell_order) args.insert(args.end(), {"--order", "random"});
    if (threads != 2 || !cell_order) args.push_back("--no-split");  // the split at 2 threads only
    const double load = load_1min();
    std::string why;
    const auto kv = flt_bench::run_child(args, timeout, why);
    if (!kv && why == "child failed (status 768)") {  // exit code 3: std::bad_alloc
      missing_.push_back(label + ": ran out of memory (std::bad_alloc) under the " + fmt(limit_gib, 1) +
                         " GiB address-space cap (RLIMIT_AS); not retried at the other thread count");
      memory_skipped_.push_back({kind, N, width});
      std::cerr << "[bench_block] " << missing_.back() << "\n";
      return false;
    }
    if (!kv) {
      missing_.push_back(label + ": " + why);
      std::cerr << "[bench_block] " << missing_.back() << "\n";
      return false;
    }
    Result r = to_result(*kv);
    r.load = load;
    std::cerr << "[bench_block] " << label << ": " << fmt(r.total(), 3) << " s, "
              << fmt(r.us_per_atom(), 2) << " us/atom, peak " << fmt(r.peak_rss_mib, 0)
              << " MiB (load " << fmt(load, 2) << ")\n";
    results_.push_back(r);
    return true;
  }

  // The completed run of a configuration (cell order) with the least CPU time, or nullptr.
  const Result* find(const std::string& kind, Index N, int threads, Index width) const {
    const Result* best = nullptr;
    for (const auto& r : results_)
      if (r.kind == kind && r.atoms == N && r.threads == threads && r.width == width && r.order == "cell" &&
          (!best || r.cpu_s < best->cpu_s))
        best = &r;
    return best;
  }
  std::vector<const Result*> all_runs(const std::string& kind, Index N, int threads, Index width) const {
    std::vector<const Result*> v;
    for (const auto& r : results_)
      if (r.kind == kind && r.atoms == N && r.threads == threads && r.width == width && r.order == "cell")
        v.push_back(&r);
    return v;
  }
  bool memory_skipped(const std::string& kind, Index N, Index width) const {
    for (const auto& m : memory_skipped_)
      if (m.kind == kind && m.atoms == N && m.width == width) return true;
    return false;
  }
  const std::vector<Result>& results() const { return results_; }
  const std::vector<std::string>& missing() const { return missing_; }

 private:
  // The completed run of (kind, width[, threads]) with the largest N below `N` (cell order).
  const Result* largest_below(const std::string& kind, Index width, Index N, int threads) const {
    const Result* best = nullptr;
    for (const auto& r : results_)
      if (r.kind == kind && r.width == width && r.atoms < N && r.order == "cell" &&
          (threads == 0 || r.threads == threads) && (!best || r.atoms > best->atoms))
        best = &r;
    return best;
  }
  struct Skip {
    std::string kind;
    Index atoms, width;
  };
  Options opt_;
  std::vector<Result> results_;
  std::vector<std::string> missing_;
  std::vector<Skip> memory_skipped_;
};

std::string pct(double part, double whole) { return fmt(100.0 * part / whole, 0) + "%"; }

struct Peak {
  double wall_gflops = 0;    // all threads, wall time
  double cpu_gflops = 0;     // per CPU-second (one core's rate while it runs)
};

int run_all(const Options& opt) {
  const std::string load_before = flt_bench::load_average();
  const auto started = std::chrono::system_clock::now();
  const auto wall0 = Clock::now();
  Driver drv(opt);

  std::map<int, Peak> peaks;
  for (int threads : {1, 2}) {
    std::string why;
    const auto kv = flt_bench::run_child({"peak", std::to_string(threads)}, 120, why);
    if (kv) peaks[threads] = {std::stod(kv->at("gflops")), std::stod(kv->at("cpu_gflops"))};
    std::cerr << "[bench_block] peak " << threads << " thread(s): "
              << (kv ? kv->at("gflops") + " GFLOP/s wall, " + kv->at("cpu_gflops") + " per CPU-second" : why)
              << "\n";
  }
  // Per-core peak per CPU-second: the best of the runs (time-sharing can only lower it).
  double core_peak = 0;
  for (const auto& [t, p] : peaks) core_peak = std::max(core_peak, p.cpu_gflops);

  const std::vector<Index> sizes = opt.quick
                                       ? std::vector<Index>{1000, 10000, 100000}
                                       : std::vector<Index>{1000, 3000, 10000, 30000, 100000, 300000, 1000000};
  // 1 thread at the sizes only; 3e3 and 3e4 (2 threads) for the side by side.
  auto one_thread = [&](Index N) { return N != 3000 && N != 30000; };
  const std::vector<Index> exact_sizes = opt.quick ? std::vector<Index>{1000, 3000, 10000}
                                                   : std::vector<Index>{1000, 3000, 10000, 30000, 100000};
  auto sweep = [&](Index width, bool quadratic) {
    for (Index N : sizes)
      for (int threads : {1, 2})
        if (threads == 2 || one_thread(N)) drv.run("flt", N, threads, width);
    // The quadratic variants at 2 threads, up to the first size that does not run.
    if (quadratic)
      for (const std::string kind : {"far-exact", "exact"})
        for (Index N : exact_sizes)
          if (!drv.run(kind, N, 2, width)) break;
  };
  std::vector<Index> widths;
  if (opt.widths == "auto") {
    widths = {128};
  } else {
    std::istringstream list(opt.widths);
    std::string item;
    while (std::getline(list, item, ',')) {
      const Index w = std::stol(item);
      if (w < 16 || w % 16 != 0) throw flt::InvalidArgument("--widths: multiples of 16, or auto");
      widths.push_back(w);
    }
  }
  if (widths.empty()) throw flt::InvalidArgument("--widths: auto or a list such as 128,64");
  for (Index w : widths) sweep(w, true);
  const Index top = sizes.back();
  // auto: while the top size does not fit, the range again at half the width (64 with the
  // quadratic variants; 32, the last resort, only for the scaling of the default block).
  if (opt.widths == "auto")
    for (Index w : {Index(64), Index(32)}) {
      if (drv.find("flt", top, 2, widths.back())) break;
      std::cerr << "[bench_block] width " << widths.back() << " did not run at N = " << sci(top)
                << ": the range again at width " << w << "\n";
      widths.push_back(w);
      sweep(w, w == 64);
    }
  // Context: the default block at 1e5 (quick: 1e4) atoms in random order (2 threads), first width.
  const Index Lr = opt.quick ? 10000 : 100000;
  drv.run("flt", Lr, 2, widths.front(), false);
  // The near field alone (far_field = none): the far field's cost by difference.
  for (Index w : widths)
    if (w >= 64)
      for (Index N : {Index(10000), Index(100000)}) drv.run("far-none", N, 2, w);
  // Reruns of the target points, interleaved.
  for (int k = 0; k < opt.reruns; ++k)
    for (Index w : widths)
      for (Index N : {Index(10000), top})
        if (drv.find("flt", N, 2, w)) drv.run("flt", N, 2, w);

  const double total_minutes = seconds_since(wall0) / 60.0;
  const std::string load_after = flt_bench::load_average();

  std::ostringstream md;
  md << "# Encoder block scaling benchmark\n\n"
     << "Produced by `" << opt.command << "` on " << flt_bench::utc_date(started) << " (commit "
     << (opt.commit.empty() ? std::string(flt::git_commit()) : opt.commit) << ", "
     << (opt.quick ? "quick" : "full") << " mode, " << fmt(total_minutes, 1) << " min).\n\n"
     << "- Machine: " << flt_bench::cpu_model() << ", " << std::thread::hardware_concurrency()
     << " logical CPUs, " << flt_bench::memory_total()
     << " RAM, shared with other engineers' builds and training jobs; load average (1 / 5 / 15 min) "
     << load_before << " at the start, " << load_after
     << " at the end (column \"load\": the 1-min load when each configuration started). With a "
        "load above the CPU count, wall times are inflated and the thread speed-up is deflated by "
        "time-sharing; the process CPU time (user + system, all threads) grows only while the "
        "benchmark runs and is the load-robust measure: on an idle machine the wall time would be "
        "about CPU time / threads (less with idle threads)\n"
     << "- Compiler: " << FLT_BENCH_COMPILER << "; flags: `" << FLT_BENCH_FLAGS << "`\n"
     << "- Workload: `models::MoleculeModel<float>` with blocks = 1 and otherwise the default "
        "ModelConfig (one extensive target; attention near_far: exact near field on the neighbour "
        "list within 5 A with distance filters and vector features, FLT far field (product grid "
        "of degree 12, 4 nodes), gated equivariant update; "
     << (opt.widths == "auto"
             ? "width 128 = 8 heads x 16; a section at width 64 = 4 heads x 16 or 32 = 2 heads x "
               "16 only where the default did not fit in this machine's memory at 1e6 atoms"
             : "one section per width of --widths " + opt.widths +
                   ", 16 channels per head (128 = 8 heads: the default model; 64 = 4 heads: the "
                   "rMD17 energy-and-force recipe; 32 = 2 heads: the rMD17 energy recipe)")
     << ") on one set of N atoms uniformly random in a cube "
        "at 0.1 atoms/A^3, elements uniformly among H, C, N, O, renumbered in cell order (Morton "
        "order of 5 A cells, atoms of a cell in drawn order). Time = model.forward (embedding, "
        "neighbour list, the block, output head, sum) + model.backward from dLoss/dout = 1: "
        "\"params\" computes the parameter gradients, \"+dR\" also the coordinate gradients "
        "(forces)\n"
     << "- Kinds: **flt** = the default block; **far-none** = the near field only (far_field = "
        "none); **far-exact** = far_field = exact (the O(N^2) closed form of the far field); "
        "**exact** = the old attention kind `exact` (exact O(N^2) softmax attention with a learned "
        "radial-basis logit bias, 32 Gaussians on [0, 10] A, streaming, O(N) memory; no vector "
        "features, block MLP instead of the equivariant update). The quadratic kinds run at 2 "
        "threads up to the first size that does not finish within "
     << fmt(opt.exact_timeout, 0)
     << " s (a size whose time predicted by (N/N')^2 from the previous one exceeds 1.25 x that "
        "is skipped, not run); flt runs 1 thread at 1e3, 1e4, 1e5, 3e5, 1e6\n"
     << "- Each configuration runs in its own process; time = fastest of up to 10 repetitions "
        "within ~3 s (at least 2 when a second fits the time limit; wall and CPU "
        "minima taken separately; a single repetition includes allocating the cache); of "
        "repeated configurations (reruns) the run with the least CPU time is shown; peak RSS = "
        "getrusage ru_maxrss of that process after the params and +dR timings; bytes/atom = (peak "
        "RSS - RSS after constructing the model) / N: inputs, neighbour list, the cache and "
        "backward's temporaries; system share = system CPU time / all CPU time of the process "
        "(page faults of fresh allocations, mostly)\n"
     << "- Split (default block, 2 threads): the block's kernels timed again in the same process "
        "on the cached inputs of its own forward: neighbour-list build, near field forward + "
        "backward, far field forward + backward (parameter gradients); shares of the params CPU "
        "time (rest = embedding, LayerNorms, linear maps, equivariant update, output head, "
        "allocation; block 0 computes its LayerNorm and q/k/v projections per atom type, so a "
        "later block of a deeper model costs somewhat more in \"rest\")\n"
     << "- Memory cap: a configuration is skipped when its peak RSS predicted from the bytes/atom "
        "at the largest smaller N exceeds min("
     << fmt(opt.max_gib, 0)
     << " GiB, available memory - 1.5 GiB), and each child runs under RLIMIT_AS at that limit\n\n";

  md << "## Machine peak (FMA loop, " << flt_bench::peak_description() << ", measured in this run)\n\n"
     << "| threads | GFLOP/s (wall) | GFLOP per CPU-second |\n|---|---|---|\n";
  for (const auto& [t, p] : peaks) md << "| " << t << " | " << fmt(p.wall_gflops, 1) << " | " << fmt(p.cpu_gflops, 1) << " |\n";
  md << "\nCounted flops (2 per multiply-add; formulas in tools/bench/bench_block.cpp) are a lower "
        "bound on the work: the dense layers exactly (output map, the equivariant update's channel "
        "maps and MLP, output head; forward + input and weight gradients) and, of the near field, "
        "only the filter interpolation per pair (4 (D + 3D) multiply-adds per pair in forward, 12 "
        "(D + 3D) in backward); logits, messages, softmax, the far field and the neighbour list "
        "are not counted. \"% of peak\" = counted flops per CPU-second / the best per-CPU-second "
        "peak above ("
     << fmt(core_peak, 1)
     << "): a lower bound on the fraction of one core's peak while the benchmark runs. Counted "
        "flops / (threads x that peak) is a lower bound on the idle-machine time at any "
        "efficiency. Not given for far-exact (its O(N^2) far field is not counted).\n";

  auto ratio = [](double a, double b) { return b > 0 ? fmt(a / b, 2) : std::string("-"); };
  for (Index w : widths) {
    md << "\n## Width " << w << " (" << w / 16 << " heads x 16): time\n\n"
       << "| kind | N | threads | pairs/atom | forward s | backward s | params s | us/atom | / at 1e4 "
          "| CPU s | CPU us/atom | / at 1e4 | +dR s | +dR CPU s | counted GFLOP | % of peak | reps | load |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const std::string kind : {"flt", "far-none", "far-exact", "exact"})
      for (int threads : {1, 2})
        for (Index N : std::vector<Index>{1000, 3000, 10000, 30000, 100000, 300000, 1000000}) {
          const Result* r = drv.find(kind, N, threads, w);
          if (!r) continue;
          const Result* ref = drv.find(kind, 10000, threads, w);
          const auto runs = drv.all_runs(kind, N, threads, w);
          const bool counted = kind != "far-exact" && r->gflop > 0;
          md << "| " << kind << " | " << sci(N) << " | " << threads << " | "
             << (r->pairs > 0 ? fmt(static_cast<double>(r->pairs) / static_cast<double>(N), 1) : "-")
             << " | " << fmt(r->forward_s, 3) << " | " << fmt(r->backward_s, 3) << " | "
             << fmt(r->total(), 3) << " | " << fmt(r->us_per_atom(), 1) << " | "
             << (ref ? ratio(r->us_per_atom(), ref->us_per_atom()) : "-") << " | " << fmt(r->cpu_s, 3)
             << " | " << fmt(r->cpu_us_per_atom(), 1) << " | "
             << (ref ? ratio(r->cpu_us_per_atom(), ref->cpu_us_per_atom()) : "-") << " | "
             << (r->dr_s >= 0 ? fmt(r->dr_s, 3) : "-") << " | "
             << (r->dr_cpu_s >= 0 ? fmt(r->dr_cpu_s, 3) : "-") << " | "
             << (counted ? fmt(r->gflop, 1) : "-") << " | "
             << (counted && core_peak > 0 ? fmt(100.0 * r->gflop / r->cpu_s / core_peak, 0) + "%" : "-")
             << " | " << r->reps << " | " << fmt(r->load, 2);
          if (runs.size() > 1) {
            md << " (" << runs.size() << " runs, wall / CPU s:";
            for (std::size_t i = 0; i < runs.size(); ++i)
              md << (i ? ", " : " ") << fmt(runs[i]->total(), 2) << " / " << fmt(runs[i]->cpu_s, 2);
            md << ")";
          }
          md << " |\n";
        }
    md << "\n## Width " << w << ": memory and split\n\n"
       << "| kind | N | threads | peak RSS MiB | bytes/atom | system share of CPU | CPU-time split: "
          "nbr / near / far / rest | split wall s: nbr / near / far |\n|---|---|---|---|---|---|---|---|\n";
    for (const std::string kind : {"flt", "far-none", "far-exact", "exact"})
      for (int threads : {1, 2})
        for (Index N : std::vector<Index>{1000, 3000, 10000, 30000, 100000, 300000, 1000000}) {
          const Result* r = drv.find(kind, N, threads, w);
          if (!r) continue;
          md << "| " << kind << " | " << sci(N) << " | " << threads << " | " << fmt(r->peak_rss_mib, 0)
             << " | " << fmt(r->bytes_per_atom(), 0) << " | " << pct(r->sys_share, 1.0) << " | ";
          if (r->has_split()) {
            const double c = r->cpu_s;
            md << pct(r->neighbours_cpu_s, c) << " / " << pct(r->near_cpu_s, c) << " / "
               << pct(r->far_cpu_s, c) << " / "
               << pct(c - r->neighbours_cpu_s - r->near_cpu_s - r->far_cpu_s, c) << " | "
               << fmt(r->neighbours_s, 2) << " / " << fmt(r->near_s, 2) << " / " << fmt(r->far_s, 2);
          } else {
            md << "- | -";
          }
          md << " |\n";
        }
  }
  {
    bool any = false;
    for (const auto& r : drv.results())
      if (r.order == "random") {
        if (!any)
          md << "\nAtom order (2 threads): the same block with the atoms in drawn (random) order "
                "instead of cell order:\n\n";
        any = true;
        const Result* c = drv.find(r.kind, r.atoms, r.threads, r.width);
        md << "- " << r.kind << " width " << r.width << " N = " << sci(r.atoms) << ": "
           << fmt(r.total(), 3) << " s (CPU " << fmt(r.cpu_s, 3) << " s) in random order";
        if (c)
          md << " vs " << fmt(c->total(), 3) << " s (CPU " << fmt(c->cpu_s, 3) << " s) in cell order: "
             << fmt(r.cpu_s / c->cpu_s, 2) << "x the CPU time";
        md << "\n";
      }
  }
  if (!drv.missing().empty()) {
    md << "\nNot run (nothing extrapolated into the tables):\n\n";
    for (const auto& m : drv.missing()) md << "- " << m << "\n";
  }

  // Targets.
  md << "\n## Targets (2 threads)\n\n";
  for (Index w : widths) {
    const Result *a = drv.find("flt", 10000, 2, w), *b = drv.find("flt", top, 2, w);
    md << "- Width " << w << ": ";
    if (a && b) {
      const double rw = b->us_per_atom() / a->us_per_atom(), rc = b->cpu_us_per_atom() / a->cpu_us_per_atom();
      md << "time/atom at " << sci(top) << " / at 1e4 = " << fmt(rw, 2) << " wall, " << fmt(rc, 2)
         << " CPU time (target <= 1.3: " << (std::max(rw, rc) <= 1.3 ? "met" : std::min(rw, rc) <= 1.3 ? "met by one measure" : "NOT met")
         << ")";
      if (top == 1000000) {
        md << "; time at 1e6 = " << fmt(b->total(), 1) << " s wall (" << fmt(b->cpu_s / 2, 1)
           << " s = CPU time / 2) with parameter gradients";
        if (b->dr_s >= 0) md << ", " << fmt(b->dr_s, 1) << " s wall (" << fmt(b->dr_cpu_s / 2, 1) << " s) with coordinate gradients";
        const bool met = b->total() < 10.0, met_idle = b->cpu_s / 2 < 10.0;
        md << " (target < 10 s: " << (met ? "met" : met_idle ? "met only by the idle-machine estimate" : "NOT met") << ")";
      }
      md << ".\n";
      if (core_peak > 0)
        md << "  Counted flops at " << sci(top) << ": " << fmt(b->gflop, 0) << " GFLOP, i.e. at least "
           << fmt(b->gflop / (2 * core_peak), 1)
           << " s on 2 threads even at 100% of the FMA peak; measured "
           << fmt(100.0 * b->gflop / b->cpu_s / core_peak, 0) << "% of it per CPU-second.\n";
    } else {
      md << "not measured at both 1e4 and " << sci(top)
         << (drv.memory_skipped("flt", top, w) ? " (the top size was skipped for memory)" : "") << ".\n";
    }
    md << "  Bytes/atom:";
    for (Index N : sizes)
      if (const Result* r = drv.find("flt", N, 2, w)) md << " " << sci(N) << ": " << fmt(r->bytes_per_atom(), 0) << ";";
    if (const Result* r = drv.find("flt", 100000, 2, w))
      md << " peak RSS at 1e6 extrapolated from 1e5: "
         << fmt((r->rss_base_mib + r->bytes_per_atom() * 1e6 / 1048576.0) / 1024.0, 1) << " GiB.";
    md << "\n";
    for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
      const Result *one = drv.find("flt", *it, 1, w), *two = drv.find("flt", *it, 2, w);
      if (one && two) {
        md << "  Thread speed-up 1 -> 2 at " << sci(*it) << ": " << fmt(one->total() / two->total(), 2)
           << "x wall; CPU time 2 threads / 1 thread: " << fmt(two->cpu_s / one->cpu_s, 2) << ".\n";
        break;
      }
    }
    for (const std::string kind : {"far-exact", "exact"}) {
      const Result* q = nullptr;
      for (Index N : exact_sizes)
        if (const Result* r = drv.find(kind, N, 2, w)) q = r;
      if (!q) continue;
      const Result* f = drv.find("flt", q->atoms, 2, w);
      md << "  " << kind << ": largest N run " << sci(q->atoms) << " (" << fmt(q->total(), 1) << " s wall, "
         << fmt(q->cpu_s, 1) << " s CPU)";
      if (f) md << ", " << fmt(q->cpu_s / f->cpu_s, 1) << "x the default block's CPU time there";
      md << ".\n";
    }
  }
  flt_bench::write_report(opt.output, md.str(), "bench_block");
  return 0;
}

int usage() {
  std::cerr << "usage: bench_block all [--quick] [--widths auto|W,W...] [--timeout S] "
               "[--exact-timeout S] [--max-gib G] [--reruns K] [--output FILE] [--command TEXT] "
               "[--commit TEXT]\n"
               "       bench_block run KIND N THREADS WIDTH [--max-gib G] [--budget S] [--order cell|random] [--cell A]"
               " [--no-split | --kernels-only]\n"
               "           KIND: flt | flt-scalar | far-exact | far-none | exact\n"
               "       bench_block peak THREADS\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) return usage();
    if (args[0] == "run" && args.size() >= 5) {
      RunOptions opt;
      for (std::size_t i = 5; i < args.size(); ++i) {
        if (args[i] == "--max-gib" && i + 1 < args.size()) {
          opt.max_gib = std::stod(args[++i]);
        } else if (args[i] == "--budget" && i + 1 < args.size()) {
          opt.budget_s = std::stod(args[++i]);
        } else if (args[i] == "--no-split") {
          opt.split = false;
        } else if (args[i] == "--kernels-only") {
          opt.kernels_only = true;
        } else if (args[i] == "--order" && i + 1 < args.size()) {
          const std::string o = args[++i];
          if (o != "cell" && o != "random") return usage();
          opt.cell_order = o == "cell";
        } else if (args[i] == "--cell" && i + 1 < args.size()) {
          opt.cell_side = std::stod(args[++i]);
          if (!(opt.cell_side > 0)) return usage();
        } else {
          return usage();
        }
      }
      return run_one(args[1], std::stol(args[2]), std::stoi(args[3]), std::stol(args[4]), opt);
    }
    if (args[0] == "peak" && args.size() == 2) {
      const int threads = std::stoi(args[1]);
      constexpr long kIters = 40'000'000;
      flt_bench::fma_peak_gflops(threads, kIters);  // warm-up (clock ramp)
      const double c0 = flt_bench::cpu_seconds();
      const double gflops = flt_bench::fma_peak_gflops(threads, kIters);
      const double cpu = flt_bench::cpu_seconds() - c0;
      // fma_peak.hpp: 12 chains x 8 lanes x 2 flops per iteration and thread (AVX-512: half the
      // iterations of 16 lanes).
      const double flops = static_cast<double>(threads) * static_cast<double>(kIters) * 12.0 * 8.0 * 2.0;
      std::cout << "RESULT threads=" << threads << " gflops=" << gflops
                << " cpu_gflops=" << flops / cpu / 1e9 << "\n";
      return 0;
    }
    if (args[0] == "all") {
      Options opt;
      for (std::size_t i = 1; i < args.size(); ++i) {
        const bool has = i + 1 < args.size();
        if (args[i] == "--quick") {
          opt.quick = true;
        } else if (args[i] == "--widths" && has) {
          opt.widths = args[++i];
        } else if (args[i] == "--timeout" && has) {
          opt.timeout = std::stod(args[++i]);
        } else if (args[i] == "--exact-timeout" && has) {
          opt.exact_timeout = std::stod(args[++i]);
        } else if (args[i] == "--max-gib" && has) {
          opt.max_gib = std::stod(args[++i]);
        } else if (args[i] == "--reruns" && has) {
          opt.reruns = std::stoi(args[++i]);
        } else if (args[i] == "--output" && has) {
          opt.output = args[++i];
        } else if (args[i] == "--command" && has) {
          opt.command = args[++i];
        } else if (args[i] == "--commit" && has) {
          opt.commit = args[++i];
        } else {
          return usage();
        }
      }
      return run_all(opt);
    }
    return usage();
  } catch (const std::bad_alloc&) {
    std::cerr << "bench_block: out of memory (std::bad_alloc; the child's RLIMIT_AS cap)\n";
    return 3;
  } catch (const std::exception& e) {
    std::cerr << "bench_block: " << e.what() << "\n";
    return 1;
  }
}
