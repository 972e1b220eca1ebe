// The multi-head Performer kernel (attention/kernel_attention): forward against its readable
// reference and against exact::toeplitz_attention_direct, backward against finite differences of
// the reference (double), thread-count determinism and the checks of its inputs. Every form the
// models use: no mask bidirectional (molecules, bidirectional tokens), no mask causal (language
// model), Toeplitz mask on 1-D sequences (both) and on 2-D image grids.
#include "core/error.hpp"
#include "core/gradcheck.hpp"
#include "core/random.hpp"
#include "attention/exact/toeplitz.hpp"
#include "attention/kernel_attention.hpp"
#include "attention/performer.hpp"

#include <catch2/catch.hpp>
#include <omp.h>

#include <cmath>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

using namespace flt;
using namespace flt::attn;

namespace {

// One configuration of the kernel: grid, set sizes and whether masks are applied.
struct Case {
  std::string name;
  KernelGrid grid;
  std::vector<Index> sizes;
  bool masked = false;
};

// Ragged 1-D sets (a single-row set included) and 2-D grids of 3 x 4; `long_set` adds a set of
// 70 rows, longer than the causal block (64) so the prefix sums cross a block boundary; `more`
// adds sets (so that a reduction in another order than the fixed one would round differently).
std::vector<Case> cases(bool long_set, Index more = 0) {
  std::vector<Case> out;
  for (bool masked : {false, true})
    for (bool causal : {false, true}) {
      Case c;
      c.grid.causal = causal;
      c.sizes = {1, 5, 3, 8};
      if (long_set) c.sizes.push_back(70);
      for (Index k = 0; k < more; ++k) c.sizes.push_back(2 + k % 7);
      for (Index n : c.sizes) c.grid.max_length = std::max(c.grid.max_length, n);
      c.masked = masked;
      c.name = std::string(causal ? "causal" : "bidirectional") + (masked ? " masked" : " unmasked");
      out.push_back(c);
    }
  for (bool masked : {false, true}) {
    Case c;
    c.grid.image = true;
    c.grid.height = 3;
    c.grid.width = 4;
    c.sizes.assign(static_cast<std::size_t>(2 + more), 12);
    c.masked = masked;
    c.name = std::string("image") + (masked ? " masked" : " unmasked");
    out.push_back(c);
  }
  return out;
}

template <class T>
struct Inputs {
  std::vector<Mat<T>> omega;
  RaggedIndex sets;
  Mat<T> Q, K, V;
  std::vector<Vec<T>> masks;
};

// H heads of width d, m features; masks positive (exp of a normal) so every denominator is.
template <class T>
Inputs<T> make_inputs(const Case& c, std::uint64_t seed, Index H = 2, Index d = 3, Index m = 6) {
  Inputs<T> in;
  Rng rng(seed);
  for (Index h = 0; h < H; ++h)
    in.omega.push_back(
        draw_performer_frequencies(m, d, true, FeatureNorms::chi, rng).template cast<T>());
  in.sets = RaggedIndex::from_sizes(c.sizes);
  const Index N = in.sets.total_rows();
  for (Mat<T>* M : {&in.Q, &in.K, &in.V}) {
    M->resize(N, H * d);
    for (Index i = 0; i < M->size(); ++i) M->data()[i] = static_cast<T>(0.7 * rng.normal());
  }
  if (c.masked)
    for (Index h = 0; h < H; ++h) {
      Vec<T> mk(c.grid.mask_size());
      for (Index i = 0; i < mk.size(); ++i) mk(i) = static_cast<T>(std::exp(0.4 * rng.normal()));
      in.masks.push_back(mk);
    }
  return in;
}

double max_abs(const Mat<double>& M) { return M.size() ? M.cwiseAbs().maxCoeff() : 0.0; }

}  // namespace

TEST_CASE("kernel attention: forward equals the readable reference in every form", "[attention][kernel]") {
  for (const Case& c : cases(true)) {
    INFO(c.name);
    const auto in = make_inputs<double>(c, 11);
    KernelAttentionCache<double> cache;
    kernel_attention_forward<double>(in.omega, in.sets, c.grid, in.Q, in.K, in.V, in.masks, cache);
    const Mat<double> ref =
        kernel_attention_reference<double>(in.omega, in.sets, c.grid, in.Q, in.K, in.V, in.masks);
    CHECK(max_abs(cache.out - ref) <= 1e-12 * (1.0 + max_abs(ref)));
    CHECK(cache.nonpositive_denominators == 0);
    CHECK((cache.den.array() > 0).all());
  }
}

TEST_CASE("kernel attention: float forward is close to double", "[attention][kernel]") {
  for (const Case& c : cases(true)) {
    INFO(c.name);
    const auto in = make_inputs<double>(c, 12);
    KernelAttentionCache<double> cd;
    kernel_attention_forward<double>(in.omega, in.sets, c.grid, in.Q, in.K, in.V, in.masks, cd);
    std::vector<Mat<float>> omega_f;
    for (const auto& w : in.omega) omega_f.push_back(w.cast<float>());
    std::vector<Vec<float>> masks_f;
    for (const auto& mk : in.masks) masks_f.push_back(mk.cast<float>());
    KernelAttentionCache<float> cf;
    kernel_attention_forward<float>(omega_f, in.sets, c.grid, in.Q.cast<float>(), in.K.cast<float>(),
                                    in.V.cast<float>(), masks_f, cf);
    CHECK(max_abs(cd.out - cf.out.cast<double>()) <= 1e-5 * (1.0 + max_abs(cd.out)));
  }
}

TEST_CASE("kernel attention: backward equals finite differences of the reference (double)",
          "[attention][kernel]") {
  for (const Case& c : cases(false)) {
    INFO(c.name);
    auto in = make_inputs<double>(c, 13);
    const Index N = in.sets.total_rows(), HD = in.Q.cols();
    Mat<double> G(N, HD);
    Rng rng(14);
    for (Index i = 0; i < G.size(); ++i) G.data()[i] = rng.normal();
    KernelAttentionCache<double> cache;
    kernel_attention_forward<double>(in.omega, in.sets, c.grid, in.Q, in.K, in.V, in.masks, cache);
    Mat<double> dQ = Mat<double>::Zero(N, HD), dK = dQ, dV = dQ;
    std::vector<Vec<double>> dmasks;
    kernel_attention_backward<double>(in.omega, in.sets, c.grid, in.Q, in.K, in.V, in.masks, cache,
                                      G, dQ, dK, dV, dmasks);
    // The loss through the reference: an independent forward (no stabilisers, no linear form).
    auto loss = [&]() {
      return (kernel_attention_reference<double>(in.omega, in.sets, c.grid, in.Q, in.K, in.V,
                                                 in.masks).array() *
              G.array())
          .sum();
    };
    auto check = [&](const char* what, double* x, Index size, const double* analytic) {
      const auto r = check_gradient(loss, std::span<double>(x, static_cast<std::size_t>(size)),
                                    std::span<const double>(analytic, static_cast<std::size_t>(size)));
      INFO(what << ": worst index " << r.worst_index << " analytic " << r.worst_analytic
                << " numeric " << r.worst_numeric);
      CHECK(r.max_rel_error <= 1e-6);
      // Not a comparison of zeros.
      CHECK(Eigen::Map<const Vec<double>>(analytic, size).cwiseAbs().maxCoeff() > 1e-3);
    };
    check("dQ", in.Q.data(), in.Q.size(), dQ.data());
    check("dK", in.K.data(), in.K.size(), dK.data());
    check("dV", in.V.data(), in.V.size(), dV.data());
    if (c.masked) {
      REQUIRE(dmasks.size() == in.masks.size());
      for (std::size_t h = 0; h < in.masks.size(); ++h) {
        // 1-D: the entries beyond the longest set's offsets and, causally, the later ones carry
        // no weight; the check covers them too (gradient 0 both ways).
        check("dmask", in.masks[h].data(), in.masks[h].size(), dmasks[h].data());
      }
    } else {
      CHECK(dmasks.empty());
    }
  }
}

TEST_CASE("kernel attention: one set equals exact::toeplitz_attention_direct", "[attention][kernel]") {
  // Independent of kernel_attention_reference: features from performer_features, mask arbitrary
  // positive.
  const Index n = 150, d = 4, m = 5;  // n > the causal block (64) to cross block boundaries
  Rng rng(3);
  Mat<double> Q(n, d), K(n, d), V(n, d);
  for (Mat<double>* M : {&Q, &K, &V})
    for (Index i = 0; i < M->size(); ++i) M->data()[i] = 0.5 * rng.normal();
  std::vector<Mat<double>> omega{draw_performer_frequencies(m, d, true, FeatureNorms::chi, rng)};
  for (bool causal : {false, true}) {
    KernelGrid grid;
    grid.max_length = n;
    grid.causal = causal;
    Vec<double> mask(2 * n - 1);
    for (Index i = 0; i < mask.size(); ++i)
      mask(i) = std::exp(-std::abs(static_cast<double>(i - (n - 1))) / 9.0);
    for (bool masked : {false, true}) {
      std::vector<Vec<double>> masks;
      if (masked) masks.push_back(mask);
      KernelAttentionCache<double> cache;
      kernel_attention_forward<double>(omega, RaggedIndex::single(n), grid, Q, K, V, masks, cache);
      const double scale = std::pow(static_cast<double>(d), -0.25);
      Mat<double> pq, pk;
      performer_features<double>(Q * scale, omega[0], true, 0.0, pq);
      performer_features<double>(K * scale, omega[0], false, 0.0, pk);
      Vec<double> ones = Vec<double>::Ones(2 * n - 1);
      const Vec<double>& mk = masked ? mask : ones;
      const Mat<double> ref = exact::toeplitz_attention_direct<double>(
          exact::ToeplitzGrid::sequence(n, causal), pq, pk, V,
          std::span<const double>(mk.data(), static_cast<std::size_t>(mk.size())));
      INFO("causal " << causal << " masked " << masked);
      CHECK((cache.out - ref).cwiseAbs().maxCoeff() < 1e-10);
    }
  }
}

TEST_CASE("kernel attention: bitwise identical for 1 and 2 threads", "[attention][kernel]") {
  const int saved = omp_get_max_threads();
  for (const Case& c : cases(true, 14)) {
    INFO(c.name);
    const auto in = make_inputs<float>(c, 15);
    const Index N = in.sets.total_rows(), HD = in.Q.cols();
    const Mat<float> G = Mat<float>::Ones(N, HD);
    struct Result {
      Mat<float> out, dQ, dK, dV;
      std::vector<Vec<float>> dmasks;
    };
    auto run = [&](int threads) {
      omp_set_num_threads(threads);
      Result r;
      KernelAttentionCache<float> cache;
      kernel_attention_forward<float>(in.omega, in.sets, c.grid, in.Q, in.K, in.V, in.masks, cache);
      r.out = cache.out;
      r.dQ = Mat<float>::Zero(N, HD);
      r.dK = r.dQ;
      r.dV = r.dQ;
      kernel_attention_backward<float>(in.omega, in.sets, c.grid, in.Q, in.K, in.V, in.masks, cache,
                                       G, r.dQ, r.dK, r.dV, r.dmasks);
      return r;
    };
    const Result a = run(1), b = run(2);
    CHECK((a.out.array() == b.out.array()).all());
    CHECK((a.dQ.array() == b.dQ.array()).all());
    CHECK((a.dK.array() == b.dK.array()).all());
    CHECK((a.dV.array() == b.dV.array()).all());
    REQUIRE(a.dmasks.size() == b.dmasks.size());
    for (std::size_t h = 0; h < a.dmasks.size(); ++h)
      CHECK((a.dmasks[h].array() == b.dmasks[h].array()).all());
  }
  omp_set_num_threads(saved);
}

TEST_CASE("kernel attention: bad inputs are rejected with the set named", "[attention][kernel]") {
  Case c;
  c.grid.max_length = 4;
  c.sizes = {3, 0, 2};
  const auto in = make_inputs<double>(c, 16);
  KernelAttentionCache<double> cache;
  // An empty set has no denominator.
  CHECK_THROWS_WITH(kernel_attention_forward<double>(in.omega, in.sets, c.grid, in.Q, in.K, in.V,
                                                     in.masks, cache),
                    Catch::Contains("set 1 is empty"));
  // Masked: a 1-D set longer than the masks were built for; a 2-D set that is not the grid.
  Case longer;
  longer.grid.max_length = 3;
  longer.sizes = {2, 4};
  longer.masked = true;
  const auto lin = make_inputs<double>(longer, 17);
  CHECK_THROWS_WITH(kernel_attention_forward<double>(lin.omega, lin.sets, longer.grid, lin.Q, lin.K,
                                                     lin.V, lin.masks, cache),
                    Catch::Contains("set 1 has 4 tokens, more than the mask length 3"));
  Case image;
  image.grid.image = true;
  image.grid.height = 2;
  image.grid.width = 3;
  image.sizes = {6, 5};
  image.masked = true;
  const auto iin = make_inputs<double>(image, 18);
  CHECK_THROWS_WITH(kernel_attention_forward<double>(iin.omega, iin.sets, image.grid, iin.Q, iin.K,
                                                     iin.V, iin.masks, cache),
                    Catch::Contains("set 1 has 5 tokens, the image grid needs 6"));
  // Q, K, V not as wide as the heads: three heads of width 3 for 2 x 3 columns.
  const std::vector<Mat<double>> three_heads{lin.omega[0], lin.omega[1], lin.omega[0]};
  CHECK_THROWS_AS(kernel_attention_forward<double>(three_heads, lin.sets, longer.grid, lin.Q, lin.K,
                                                   lin.V, {}, cache),
                  InvalidArgument);
}

TEST_CASE("kernel attention: at the models' settings, against the reference and 1 vs 2 threads",
          "[attention][kernel]") {
  // The molecule model's performer kind (8 heads of 16, 16 features) and the token model's
  // default (4 heads of 16, 32 features); 1-D sets up to 140 tokens (three causal blocks) and
  // 7 x 7 image grids.
  struct Setting {
    Index H, d, m;
  };
  const int saved = omp_get_max_threads();
  for (const Setting s : {Setting{8, 16, 16}, Setting{4, 16, 32}}) {
    std::vector<Case> settings_cases;
    for (bool masked : {false, true})
      for (bool causal : {false, true}) {
        Case c;
        c.grid.causal = causal;
        c.sizes = {29, 140, 1, 64};
        c.grid.max_length = 140;
        c.masked = masked;
        c.name = std::string(causal ? "causal" : "bidirectional") + (masked ? " masked" : " unmasked");
        settings_cases.push_back(c);
      }
    Case image;
    image.grid.image = true;
    image.grid.height = 7;
    image.grid.width = 7;
    image.sizes.assign(3, 49);
    image.masked = true;
    image.name = "image masked";
    settings_cases.push_back(image);
    for (const Case& c : settings_cases) {
      INFO(c.name << ", H " << s.H << ", d " << s.d << ", m " << s.m);
      auto in = make_inputs<double>(c, 21, s.H, s.d, s.m);
      const Index N = in.sets.total_rows(), HD = in.Q.cols();
      Rng rng(22);
      Mat<double> G(N, HD), U(N, HD);
      for (Index i = 0; i < G.size(); ++i) G.data()[i] = rng.normal();
      for (Index i = 0; i < U.size(); ++i) U.data()[i] = rng.normal();
      KernelAttentionCache<double> cache;
      kernel_attention_forward<double>(in.omega, in.sets, c.grid, in.Q, in.K, in.V, in.masks, cache);
      const Mat<double> ref =
          kernel_attention_reference<double>(in.omega, in.sets, c.grid, in.Q, in.K, in.V, in.masks);
      CHECK(max_abs(cache.out - ref) <= 1e-11 * (1.0 + max_abs(ref)));
      Mat<double> dQ = Mat<double>::Zero(N, HD), dK = dQ, dV = dQ;
      std::vector<Vec<double>> dmasks;
      kernel_attention_backward<double>(in.omega, in.sets, c.grid, in.Q, in.K, in.V, in.masks, cache, G, dQ,
                                        dK, dV, dmasks);
      // Directional derivatives of <G, reference output> along U, by central differences.
      auto directional = [&](Mat<double>& X) {
        const double eps = 1e-5;
        auto loss = [&]() {
          return (kernel_attention_reference<double>(in.omega, in.sets, c.grid, in.Q, in.K, in.V, in.masks)
                      .array() *
                  G.array())
              .sum();
        };
        X += eps * U;
        const double up = loss();
        X -= 2 * eps * U;
        const double down = loss();
        X += eps * U;
        return (up - down) / (2 * eps);
      };
      for (auto [name, X, dX] : {std::tuple{"dQ", &in.Q, &dQ}, std::tuple{"dK", &in.K, &dK},
                                  std::tuple{"dV", &in.V, &dV}}) {
        const double analytic = (dX->array() * U.array()).sum();
        const double numeric = directional(*X);
        INFO(name << ": analytic " << analytic << ", numeric " << numeric);
        CHECK(std::abs(analytic - numeric) <= 1e-6 * (1.0 + std::abs(numeric)));
      }
      if (c.masked) {
        REQUIRE(dmasks.size() == in.masks.size());
        for (std::size_t h = 0; h < in.masks.size(); ++h) {
          Mat<double> mask_column = in.masks[h];  // the head's mask as an (entries x 1) matrix
          Mat<double> direction(mask_column.rows(), 1);
          for (Index i = 0; i < direction.size(); ++i) direction.data()[i] = rng.normal();
          const double analytic = dmasks[h].dot(direction.col(0));
          const double eps = 1e-5;
          auto loss = [&]() {
            return (kernel_attention_reference<double>(in.omega, in.sets, c.grid, in.Q, in.K, in.V, in.masks)
                        .array() *
                    G.array())
                .sum();
          };
          in.masks[h] = mask_column.col(0) + eps * direction.col(0);
          const double up = loss();
          in.masks[h] = mask_column.col(0) - eps * direction.col(0);
          const double down = loss();
          in.masks[h] = mask_column.col(0);
          const double numeric = (up - down) / (2 * eps);
          INFO("dmask of head " << h << ": analytic " << analytic << ", numeric " << numeric);
          CHECK(std::abs(analytic - numeric) <= 1e-6 * (1.0 + std::abs(numeric)));
        }
      }
      // Float, 1 and 2 threads: bitwise the same.
      std::vector<Mat<float>> omega_f;
      for (const auto& w : in.omega) omega_f.push_back(w.cast<float>());
      std::vector<Vec<float>> masks_f;
      for (const auto& mk : in.masks) masks_f.push_back(mk.cast<float>());
      const Mat<float> Qf = in.Q.cast<float>(), Kf = in.K.cast<float>(), Vf = in.V.cast<float>();
      const Mat<float> Gf = G.cast<float>();
      auto run = [&](int threads) {
        omp_set_num_threads(threads);
        KernelAttentionCache<float> cf;
        kernel_attention_forward<float>(omega_f, in.sets, c.grid, Qf, Kf, Vf, masks_f, cf);
        Mat<float> gQ = Mat<float>::Zero(N, HD), gK = gQ, gV = gQ;
        std::vector<Vec<float>> gm;
        kernel_attention_backward<float>(omega_f, in.sets, c.grid, Qf, Kf, Vf, masks_f, cf, Gf, gQ, gK, gV, gm);
        Mat<float> all(N, 4 * HD);
        all << cf.out, gQ, gK, gV;
        return std::pair{all, gm};
      };
      const auto one = run(1), two = run(2);
      CHECK((one.first.array() == two.first.array()).all());
      REQUIRE(one.second.size() == two.second.size());
      for (std::size_t h = 0; h < one.second.size(); ++h) CHECK((one.second[h].array() == two.second[h].array()).all());
    }
  }
  omp_set_num_threads(saved);
}
