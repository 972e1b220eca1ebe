// bench_seq_toeplitz: the long-sequence benchmark. One 1-D attention layer on a single sequence of
// L tokens (positions 0 .. L-1), forward and backward timed separately:
//   flt-bias       FLT variant B (flt::attn::FltAttention, E12/E13), 1-D Gaussian-mixture RPE
//   flt-kronecker  FLT variant A (E9/E10), same spectrum
//   toeplitz       the same FAVOR+ kernel (m features) with the EXACT mask exp(beta f(n)) of the
//                  same spectrum applied by the FFTW Toeplitz path (attention/exact/toeplitz.hpp, method
//                  section 6) through the multi-head Performer kernel (attention/kernel_attention)
// Shapes: H heads, d = dv = 16 per head, m = 32 Performer features, R = 16 RPE frequencies (FLT),
// float32, bidirectional. Backward computes dQ, dK, dV and the RPE parameter gradient (dmask for
// toeplitz). Workload: Q, K, V ~ 0.5 N(0, 1), dLoss/dout ~ N(0, 1), seeded.
//
// Usage: bench_seq_toeplitz METHOD L [--heads H] [--reps n] [--threads t]
// Prints "RESULT method=... L=... forward_s=... backward_s=... fwd_us_per_token=...
//         bwd_us_per_token=... peak_rss_mb=...". Times are the minimum over reps (default 3;
// use 1 for the largest L).
#include "core/params.hpp"
#include "core/random.hpp"
#include "attention/attention.hpp"
#include "attention/spectrum.hpp"
#include "attention/kernel_attention.hpp"

#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

using namespace flt;

namespace {

constexpr Index kHeadDim = 16;
constexpr Index kFeatures = 32;
constexpr Index kFrequencies = 16;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Mat<float> noise(Index rows, Index cols, double scale, Rng& rng) {
  Mat<float> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(scale * rng.normal());
  return m;
}

attn::SpectrumConfig spectrum_1d() {
  attn::SpectrumConfig s;
  s.kind = attn::SpectrumKind::gaussian_mixture;
  s.coord_dim = 1;
  s.components = 2;
  s.proposal = attn::ProposalKind::spectrum;
  s.init_sigma_min = 0.02;
  s.init_sigma_max = 0.3;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 3) throw InvalidArgument("usage: bench_seq_toeplitz METHOD L [--heads H] [--reps n] [--threads t]");
    const std::string method = argv[1];
    const Index L = static_cast<Index>(std::stod(argv[2]));
    Index H = 2;
    int reps = 3, threads = 1;
    for (int i = 3; i + 1 < argc; i += 2) {
      const std::string a = argv[i], v = argv[i + 1];
      if (a == "--heads") H = std::stol(v);
      else if (a == "--reps") reps = std::stoi(v);
      else if (a == "--threads") threads = std::stoi(v);
      else throw InvalidArgument("unknown option " + a);
    }
    omp_set_num_threads(threads);
    const Index D = H * kHeadDim;
    Rng rng(7);
    const Mat<float> Q = noise(L, D, 0.5, rng), K = noise(L, D, 0.5, rng), V = noise(L, D, 0.5, rng);
    const Mat<float> G = noise(L, D, 1.0, rng);
    Mat<float> coords(L, 1);
    for (Index i = 0; i < L; ++i) coords(i, 0) = static_cast<float>(i);
    const RaggedIndex sets = RaggedIndex::single(L);
    Mat<float> dQ = Mat<float>::Zero(L, D), dK = Mat<float>::Zero(L, D), dV = Mat<float>::Zero(L, D);
    double best_f = 1e300, best_b = 1e300;

    if (method == "flt-bias" || method == "flt-kronecker") {
      attn::AttentionConfig ac;
      ac.heads = H;
      ac.head_dim = kHeadDim;
      ac.value_dim = kHeadDim;
      ac.num_features = kFeatures;
      ac.num_frequencies = kFrequencies;
      ac.variant = method == "flt-bias" ? attn::Variant::bias : attn::Variant::kronecker;
      ac.spectrum = spectrum_1d();
      ac.seed = 3;
      ParameterStore<float> store;
      attn::FltAttention<float> layer(ac, store, "attn");
      store.allocate();
      layer.init_parameters(store);
      layer.draw_features(store);
      Mat<float> out(L, D), no_dr(0, 1);
      attn::AttentionCache<float> cache;
      for (int r = 0; r < reps; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        layer.forward(store, Q, K, V, coords, sets, out, cache);
        best_f = std::min(best_f, seconds_since(t0));
        t0 = std::chrono::steady_clock::now();
        layer.backward(store, Q, K, V, coords, sets, cache, G, dQ, dK, dV, no_dr);
        best_b = std::min(best_b, seconds_since(t0));
      }
    } else if (method == "toeplitz") {
      std::vector<Mat<float>> omega;
      for (Index h = 0; h < H; ++h) {
        Rng r = Rng(3).fork(static_cast<std::uint64_t>(h));
        omega.push_back(attn::draw_performer_frequencies(kFeatures, kHeadDim, true,
                                                         attn::FeatureNorms::chi, r)
                            .cast<float>());
      }
      attn::KernelGrid grid;
      grid.max_length = L;
      // The mask exp(beta f(n)) of the same initial spectrum (beta = 1), on every offset.
      const attn::Spectrum spectrum(spectrum_1d());
      std::vector<double> p(static_cast<std::size_t>(spectrum.num_params()));
      Rng init(11);
      spectrum.init(p, init);
      std::vector<Vec<float>> masks;
      std::vector<Vec<float>> dmasks;
      for (Index h = 0; h < H; ++h) {
        Vec<float> mk(2 * L - 1);
        for (Index n = 0; n < 2 * L - 1; ++n) {
          const double z = static_cast<double>(n - (L - 1));
          mk(n) = static_cast<float>(std::exp(spectrum.mask_at(p, std::span<const double>(&z, 1))));
        }
        masks.push_back(mk);
      }
      attn::KernelAttentionCache<float> cache;
      for (int r = 0; r < reps; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        attn::kernel_attention_forward<float>(omega, sets, grid, Q, K, V, masks, cache);
        best_f = std::min(best_f, seconds_since(t0));
        dmasks.clear();
        t0 = std::chrono::steady_clock::now();
        attn::kernel_attention_backward<float>(omega, sets, grid, Q, K, V, masks, cache, G, dQ, dK,
                                               dV, dmasks);
        best_b = std::min(best_b, seconds_since(t0));
      }
    } else {
      throw InvalidArgument("unknown method " + method + " (flt-bias, flt-kronecker, toeplitz)");
    }
    if (!dQ.allFinite() || !dV.allFinite()) throw NumericalError("non-finite gradients");
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf(
        "RESULT method=%s L=%ld heads=%ld d=%ld m=%ld R=%ld threads=%d reps=%d forward_s=%.4f "
        "backward_s=%.4f fwd_us_per_token=%.3f bwd_us_per_token=%.3f peak_rss_mb=%.0f\n",
        method.c_str(), static_cast<long>(L), static_cast<long>(H), static_cast<long>(kHeadDim),
        static_cast<long>(kFeatures), static_cast<long>(kFrequencies), threads, reps, best_f,
        best_b, 1e6 * best_f / static_cast<double>(L), 1e6 * best_b / static_cast<double>(L),
        static_cast<double>(ru.ru_maxrss) / 1024.0);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_seq_toeplitz: " << e.what() << "\n";
    return 1;
  }
}
