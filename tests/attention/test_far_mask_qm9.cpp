// The far-field mask estimate (far_field.hpp) at the molecule model's DEFAULT far-field settings on
// real QM9 geometries: relative error of the estimated mask against the exact mask over the far
// pairs (rho >= cutoff, the only pairs the model estimates) <= 2 %, for randomly rotated designs
// (what the model sees: a fixed design at inference meets molecules in every orientation; training
// rotates it each step). The full measurement (more designs, profiles, all pairs, rotation
// sensitivity of predictions) is tools/bench/bench_far_mask.cpp -> docs/benchmarks/far_field_mask.md.
//
// The settings come from a default-constructed models::ModelConfig (its defaults are inline member
// initialisers, so only the header is needed: this executable links flt_attention and flt_exact,
// not flt_models), mapped to attn::FarFieldConfig as MoleculeModel does: nodes kappa_n =
// n far_spacing (n = 0..far_nodes-1), cutoff = ModelConfig::cutoff, and the design
// product_grid(far_degree) or iid(far_directions) after far_design. A change of those defaults is
// therefore tested as it is made.
//
// Geometries: the bundled QM9 subset (datasets/qm9/qm9_subset.xyz.gz), every 65th record
// (200 molecules spread over the whole subset, which is sorted by QM9 index and so roughly by size).
#include "core/random.hpp"
#include "attention/far_field.hpp"
#include "../common/text_input.hpp"
#include "models/molecule_model.hpp"

#include <catch2/catch.hpp>

#include <Eigen/Geometry>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace flt;
using namespace flt::attn;

namespace {

// Coordinates (Angstrom) of every `every`-th record of the bundled QM9 subset, `count` of them.
std::vector<Mat<double>> read_qm9_coords(std::size_t every, std::size_t count) {
  const std::string path = std::string(FLT_DATASETS_DIR) + "/qm9/qm9_subset.xyz.gz";
  flt::test::TextInput in(path);
  INFO("QM9 subset: " << path);
  REQUIRE(in.opened());
  std::vector<Mat<double>> out;
  std::string line;
  std::size_t record = 0;
  bool ok = true;
  while (ok && out.size() < count && std::getline(in, line)) {
    const int n = std::stoi(line);
    ok = n > 0 && static_cast<bool>(std::getline(in, line));  // header: gdb N and the 15 properties
    const bool keep = record++ % every == 0;
    Mat<double> X(keep ? n : 0, 3);
    for (int i = 0; ok && i < n; ++i) {
      ok = static_cast<bool>(std::getline(in, line));
      if (!keep || !ok) continue;
      std::istringstream atom(line);
      std::string element;
      atom >> element >> X(i, 0) >> X(i, 1) >> X(i, 2);
      ok = !atom.fail();
    }
    if (ok && keep) out.push_back(std::move(X));
  }
  INFO("records read: " << record);
  REQUIRE(ok);
  REQUIRE(out.size() == count);
  return out;
}

const std::vector<Mat<double>>& qm9_molecules() {
  static const std::vector<Mat<double>> mols = read_qm9_coords(65, 200);
  return mols;
}

// A uniformly random rotation (unit quaternion from four normals), as models::random_rotation.
Eigen::Matrix3d random_rotation(Rng& rng) {
  const double w = rng.normal(), x = rng.normal(), y = rng.normal(), z = rng.normal();
  Eigen::Quaterniond q(w, x, y, z);
  q.normalize();
  return q.toRotationMatrix();
}

// The far field of the default model (MoleculeModel's mapping of its ModelConfig).
FarFieldConfig default_far_config() {
  const models::ModelConfig defaults{};
  FarFieldConfig c;
  c.heads = defaults.heads;
  c.value_dim = defaults.head_dim();
  c.cutoff = defaults.cutoff;
  c.nodes.count = defaults.far_nodes;
  c.nodes.first = 0.0;
  c.nodes.spacing = defaults.far_spacing;
  return c;
}

struct DesignChoice {
  DesignKind kind;
  Index param;  // degree (product_grid) or directions (iid)
};

DesignChoice default_design() {
  const models::ModelConfig defaults{};
  return {defaults.far_design,
          defaults.far_design == DesignKind::iid ? defaults.far_directions : defaults.far_degree};
}

struct FarError {
  double frob = 0.0;       // pooled sqrt(sum err^2 / sum exact^2) over every sample and far pair
  double worst = 0.0;      // the same ratio of the worst sample (molecule x design)
  long long pairs = 0;     // far pairs counted (ordered, over every sample)
  Index molecules = 0;     // molecules with at least one far pair
};

// Far-pair relative error of the estimated mask for `rotations` random designs per molecule.
FarError far_pair_error(const FarFieldConfig& c, const DesignChoice& choice, const std::vector<double>& a,
                        int rotations, std::uint64_t seed) {
  const auto& mols = qm9_molecules();
  const SphericalDesign grid = choice.kind == DesignKind::product_grid
                                   ? SphericalDesign::product_grid(static_cast<int>(choice.param))
                                   : SphericalDesign{};
  FarError r;
  double err2 = 0.0, ref2 = 0.0;
  for (std::size_t m = 0; m < mols.size(); ++m) {
    const Mat<double>& X = mols[m];
    const Index n = X.rows();
    const Mat<double> exact = mask_exact(c, X, a);
    bool any = false;
    for (int rot = 0; rot < rotations; ++rot) {
      Rng rng = Rng(seed).fork(m * 64 + static_cast<std::size_t>(rot));
      const SphericalDesign design = choice.kind == DesignKind::iid ? SphericalDesign::iid(choice.param, rng)
                                                                    : grid.rotated(random_rotation(rng));
      const Mat<double> est = mask_estimate(c, design, X, a);
      double e2 = 0.0, r2 = 0.0;
      for (Index i = 0; i < n; ++i)
        for (Index j = 0; j < n; ++j) {
          if (i == j || (X.row(i) - X.row(j)).norm() < c.cutoff) continue;
          const double e = est(i, j) - exact(i, j);
          e2 += e * e;
          r2 += exact(i, j) * exact(i, j);
          ++r.pairs;
          any = true;
        }
      if (r2 > 0.0) r.worst = std::max(r.worst, std::sqrt(e2 / r2));
      err2 += e2;
      ref2 += r2;
    }
    r.molecules += any ? 1 : 0;
  }
  r.frob = ref2 > 0.0 ? std::sqrt(err2 / ref2) : 0.0;
  return r;
}

// Coefficient profiles of one head: the model's initialisation and plausible learned shapes.
std::vector<std::pair<std::string, std::vector<double>>> profiles() {
  const models::ModelConfig defaults{};
  const auto K = static_cast<std::size_t>(defaults.far_nodes);
  std::vector<std::pair<std::string, std::vector<double>>> p;
  p.push_back({"init (all a_n = far_init)", std::vector<double>(K, defaults.far_init)});
  std::vector<double> decay(K), flat(K, 1.0), high(K, 0.0);
  for (std::size_t n = 0; n < K; ++n) decay[n] = std::exp(-static_cast<double>(n));
  flat[0] = 0.0;
  high[K - 1] = 1.0;
  p.push_back({"decaying (a_n = exp(-n))", decay});
  p.push_back({"no constant node (a_0 = 0, a_n = 1)", flat});
  p.push_back({"single highest node", high});
  return p;
}

const char* kind_name(DesignKind k) { return k == DesignKind::iid ? "iid" : "product_grid"; }

}  // namespace

TEST_CASE("QM9: the far-field mask estimate at the default model settings is within 2% on far pairs",
          "[far_field][qm9]") {
  const FarFieldConfig c = default_far_config();
  REQUIRE_NOTHROW(c.validate());
  const DesignChoice choice = default_design();
  INFO("default design: " << kind_name(choice.kind) << " " << choice.param << "; far_nodes " << c.nodes.count
                          << ", far_spacing " << c.nodes.spacing << ", cutoff " << c.cutoff);
  for (const auto& [name, a] : profiles()) {
    const FarError e = far_pair_error(c, choice, a, 4, 11);
    INFO("profile " << name << ": far-pair relative error " << e.frob << " (worst molecule x design " << e.worst
                    << ") over " << e.pairs << " far pairs of " << e.molecules << " molecules");
    // Enough real far pairs for the number to mean something (QM9: most molecules with 7 or more
    // heavy atoms reach beyond 5 A).
    CHECK(e.molecules >= 100);
    CHECK(e.pairs >= 10000);
    CHECK(e.frob <= 0.02);
  }
}

TEST_CASE("QM9: the 2% far-pair criterion fails for designs that are too coarse", "[far_field][qm9]") {
  // The same measurement detects a bad design: a product grid of low degree (its quadrature misses
  // the plane wave's terms of degree > 3, which matter at 2 pi kappa rho up to ~5.5 on QM9) and an
  // i.i.d. design (Monte-Carlo error ~ 1/sqrt(M), here with 64 directions, the default
  // far_directions at the time of writing) both exceed 2% on the far pairs (measured: about 38%
  // for product_grid 2; 5.5% (init) and 40% (single node) for iid 64).
  const FarFieldConfig c = default_far_config();
  const auto prof = profiles();
  const auto& single_high = prof.back().second;  // the profile that feels the bandwidth most
  const auto& init = prof.front().second;
  const FarError low_degree = far_pair_error(c, {DesignKind::product_grid, 2}, single_high, 4, 11);
  INFO("product_grid 2, single highest node: " << low_degree.frob);
  CHECK(low_degree.frob > 0.02);
  const FarError iid_high = far_pair_error(c, {DesignKind::iid, 64}, single_high, 4, 11);
  INFO("iid 64, single highest node: " << iid_high.frob);
  CHECK(iid_high.frob > 0.02);
  // i.i.d. fails even at the initial (uniform) coefficients, whose exactly estimated constant node
  // (kappa_0 = 0) makes up much of the mask.
  const FarError iid_init = far_pair_error(c, {DesignKind::iid, 64}, init, 4, 11);
  INFO("iid 64, init: " << iid_init.frob);
  CHECK(iid_init.frob > 0.02);
}
