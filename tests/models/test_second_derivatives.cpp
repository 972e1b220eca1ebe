// Exact second derivatives of the molecule model by forward mode over its backward pass
// (core/dual.hpp): the tangents of a Dual forward + backward, seeded with a coordinate direction
// u, must equal central finite differences along u of the double model's outputs, parameter
// gradients and coordinate gradients, for every near_far variant (far field flt, exact, none;
// with and without vector features).
#include "core/dual.hpp"
#include "core/gradcheck.hpp"
#include "core/random.hpp"
#include "models/force_training.hpp"
#include "models/molecule_model.hpp"

#include <catch2/catch.hpp>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

using namespace flt;
using namespace flt::models;

namespace {

ModelConfig small_near_far(FarField far, bool vectors, double cutoff) {
  ModelConfig c;
  c.targets = {{"E", "eV", true}, {"gap", "eV", false}};
  c.width = 8;
  c.heads = 2;
  c.blocks = 2;
  c.mlp_hidden = 8;
  c.head_hidden = 4;
  c.max_z = 10;
  c.use_charges = true;
  c.max_charge = 1;
  c.attention = AttentionKind::near_far;
  c.cutoff = cutoff;
  c.radial_nodes = 4;
  c.vectors = vectors;
  c.far_field = far;
  c.far_nodes = 3;
  c.far_spacing = 0.05;
  c.far_degree = 16;
  c.far_init = 0.2;  // the far field matters
  c.seed = 5;
  return c;
}

// Molecules of H, C, N, O within a sphere of radius `radius` (so all pairs lie within 2 radius).
std::vector<Molecule> molecules_within(std::vector<int> sizes, double radius, std::uint64_t seed) {
  Rng rng(seed);
  const int elements[] = {1, 6, 7, 8};
  std::vector<Molecule> out;
  for (int n : sizes) {
    Molecule m;
    for (int i = 0; i < n; ++i) {
      std::array<double, 3> p{};
      do {
        for (double& x : p) x = rng.uniform(-radius, radius);
      } while (p[0] * p[0] + p[1] * p[1] + p[2] * p[2] > radius * radius);
      m.atomic_numbers.push_back(elements[rng.below(4)]);
      m.positions.push_back(p);
      m.formal_charges.push_back(static_cast<int>(rng.below(3)) - 1);
    }
    out.push_back(std::move(m));
  }
  return out;
}

// Parameters moved off their initial values (no derivative vanishes by symmetry) and the far-field
// design of a training step.
void perturb(MoleculeModel<double>& model, Rng& rng, std::uint64_t step) {
  for (double& p : model.parameters().values()) p += 0.05 * rng.normal();
  model.begin_step(step);
}

struct Derivatives {
  Mat<double> out;                // S x P
  std::vector<double> grads;      // parameter gradients
  Mat<double> dcoords;            // N x 3
};

Derivatives run_double(MoleculeModel<double>& model, const MoleculeBatch& batch, const Mat<double>& dout) {
  ModelCache<double> cache;
  Derivatives d;
  d.out = model.forward(batch, cache);
  model.parameters().zero_grad();
  model.backward(batch, cache, dout, &d.dcoords);
  d.grads.assign(model.parameters().grads().begin(), model.parameters().grads().end());
  return d;
}

struct DualDerivatives {
  Derivatives value, tangent;
};

DualDerivatives run_dual(MoleculeModel<Dual>& model, const MoleculeBatch& batch, const Mat<double>& dout,
                         const Mat<double>& direction) {
  ModelCache<Dual> cache;
  const Mat<Dual> out = model.forward(batch, cache, &direction);
  model.parameters().zero_grad();
  Mat<Dual> dcoords;
  model.backward(batch, cache, dout.cast<Dual>(), &dcoords);
  DualDerivatives d;
  d.value.out = out.unaryExpr([](const Dual& x) { return x.v; });
  d.tangent.out = out.unaryExpr([](const Dual& x) { return x.d; });
  d.value.dcoords = dcoords.unaryExpr([](const Dual& x) { return x.v; });
  d.tangent.dcoords = dcoords.unaryExpr([](const Dual& x) { return x.d; });
  for (const Dual& g : model.parameters().grads()) {
    d.value.grads.push_back(g.v);
    d.tangent.grads.push_back(g.d);
  }
  return d;
}

// max |a - b| / (max |b| + floor): a relative error over a whole array.
double relative_error(const double* a, const double* b, std::size_t n, double floor = 1e-8) {
  double worst = 0, scale = floor;
  for (std::size_t i = 0; i < n; ++i) {
    worst = std::max(worst, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return worst / scale;
}
double relative_error(const Mat<double>& a, const Mat<double>& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  return relative_error(a.data(), b.data(), static_cast<std::size_t>(a.size()));
}
double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  return relative_error(a.data(), b.data(), a.size());
}

}  // namespace

TEST_CASE("second derivatives: Dual arithmetic follows the calculus rules", "[models][dual]") {
  // f(x) = exp(sin x) / sqrt(1 + x^2) + tanh(x) log(2 + x) + erf(x / 3) - 2 / x, at x = 0.7.
  auto f = [](auto x) {
    using std::cos;
    using std::erf;
    using std::exp;
    using std::log;
    using std::sin;
    using std::sqrt;
    using std::tanh;
    return exp(sin(x)) / sqrt(1.0 + x * x) + tanh(x) * log(2.0 + x) + erf(x / 3.0) - 2.0 / x +
           cos(x) * x;
  };
  const double x = 0.7, h = 1e-5;
  const Dual y = f(Dual(x, 1.0));
  const double numeric = (f(x + h) - f(x - h)) / (2 * h);
  CHECK(y.v == Approx(f(x)).epsilon(1e-15));
  CHECK(y.d == Approx(numeric).epsilon(1e-9));
  CHECK(Dual(2.0, 1.0) < Dual(3.0, -5.0));  // comparisons look at values
}

TEST_CASE("second derivatives: Dual forward and backward give the directional derivatives of outputs and every gradient",
          "[models][dual]") {
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  struct Case {
    FarField far;
    bool vectors;
    double cutoff;
  };
  // Cutoff 5 A: every pair in the neighbour list (the FLT far field is its closed form); 2 A:
  // shorter than the molecules, so the partition and the FLT features' estimate matter.
  const Case cases[] = {{FarField::flt, true, 5.0},   {FarField::flt, false, 5.0},
                        {FarField::flt, true, 2.0},   {FarField::flt, false, 2.0},
                        {FarField::exact, true, 2.0}, {FarField::exact, false, 2.0},
                        {FarField::none, true, 2.0}};
  for (const Case& cs : cases) {
    INFO("far field " << to_string(cs.far) << " vectors " << cs.vectors << " cutoff " << cs.cutoff);
    const ModelConfig cfg = small_near_far(cs.far, cs.vectors, cs.cutoff);
    MoleculeModel<double> model(cfg);
    Rng rng(11);
    perturb(model, rng, 3);  // a rotated far-field design, as in training
    MoleculeModel<Dual> dual(cfg);
    copy_model_state(model, dual);

    const auto mols = molecules_within({1, 5, 7}, 2.2, 21);
    const MoleculeBatch batch = MoleculeBatch::from(std::span<const Molecule>(mols));
    const Index N = batch.num_atoms();
    Mat<double> dout(batch.num_molecules(), 2);
    for (Index i = 0; i < dout.size(); ++i) dout.data()[i] = rng.normal();
    Mat<double> u(N, 3);
    for (Index i = 0; i < u.size(); ++i) u.data()[i] = rng.normal();

    const Derivatives at = run_double(model, batch, dout);
    const DualDerivatives d = run_dual(dual, batch, dout, u);
    // The value parts are the double model's results (to the rounding of other summation orders).
    CHECK(relative_error(d.value.out, at.out) <= 1e-12);
    CHECK(relative_error(d.value.grads, at.grads) <= 1e-12);
    CHECK(relative_error(d.value.dcoords, at.dcoords) <= 1e-12);

    // Central differences along u.
    // Central differences have error O(h^2): 1e-5 leaves 3e-6 (measured) in the tangents of the
    // near-field-only model; 2e-6 leaves < 2e-7, far above the rounding floor (~1e-10).
    const double h = 2e-6;
    MoleculeBatch plus = batch, minus = batch;
    plus.coords += h * u;
    minus.coords -= h * u;
    const Derivatives fp = run_double(model, plus, dout), fm = run_double(model, minus, dout);
    const Mat<double> num_out = (fp.out - fm.out) / (2 * h);
    std::vector<double> num_grads(fp.grads.size());
    for (std::size_t k = 0; k < num_grads.size(); ++k) num_grads[k] = (fp.grads[k] - fm.grads[k]) / (2 * h);
    const Mat<double> num_dcoords = (fp.dcoords - fm.dcoords) / (2 * h);

    // d out / d eps = (d out / d r) . u for the first target (the directional derivative).
    CHECK(relative_error(d.tangent.out, num_out) <= 1e-7);
    const double e_out = relative_error(d.tangent.grads, num_grads);
    INFO("parameter-gradient tangents vs finite differences: " << e_out);
    CHECK(e_out <= 1e-6);
    const double e_r = relative_error(d.tangent.dcoords, num_dcoords);
    INFO("coordinate-gradient tangents (Hessian times u) vs finite differences: " << e_r);
    CHECK(e_r <= 1e-6);
    // The tangents are not trivially zero.
    CHECK(*std::max_element(d.tangent.grads.begin(), d.tangent.grads.end(),
                            [](double a, double b) { return std::abs(a) < std::abs(b); }) != 0.0);
  }
  omp_set_num_threads(saved_threads);
}

TEST_CASE("second derivatives: the Dual path refuses what it does not implement", "[models][dual]") {
  ModelConfig exact = small_near_far(FarField::flt, true, 5.0);
  exact.attention = AttentionKind::exact;
  CHECK_THROWS_WITH(MoleculeModel<Dual>(exact), Catch::Contains("near_far"));
  // A tangent on a model without Dual numbers.
  const ModelConfig cfg = small_near_far(FarField::flt, true, 1.5);
  const auto mols = molecules_within({6}, 2.2, 3);
  const MoleculeBatch batch = MoleculeBatch::from(std::span<const Molecule>(mols));
  MoleculeModel<double> plain(cfg);
  ModelCache<double> plain_cache;
  const Mat<double> u = Mat<double>::Zero(batch.num_atoms(), 3);
  CHECK_THROWS_WITH(plain.forward(batch, plain_cache, &u), Catch::Contains("Dual"));
}

TEST_CASE("second derivatives: the energy and force loss gradient matches finite differences of the loss",
          "[models][dual]") {
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  for (const auto& [far, cutoff] : {std::pair{FarField::flt, 5.0}, std::pair{FarField::flt, 2.0},
                                    std::pair{FarField::none, 5.0}}) {
    INFO("far field " << to_string(far) << " cutoff " << cutoff);
    ModelConfig cfg = small_near_far(far, true, cutoff);
    cfg.targets = {{"E", "eV", true}, {"gap", "eV", false}};
    MoleculeModel<double> model(cfg);
    Rng rng(17);
    for (double& p : model.parameters().values()) p += 0.05 * rng.normal();
    Normalisation norm = model.normalisation();
    norm.scale = {0.7, 1.3};  // sigma_t enters the forces
    norm.mean = {-0.2, 0.1};
    model.set_normalisation(norm);
    model.begin_step(2);
    MoleculeModel<Dual> dual(cfg);

    const auto mols = molecules_within({4, 6, 3}, 2.2, 31);
    MoleculeBatch batch = MoleculeBatch::from(std::span<const Molecule>(mols));
    const Index S = batch.num_molecules(), N = batch.num_atoms();
    Mat<double> labels(S, 2);
    for (Index i = 0; i < labels.size(); ++i) labels.data()[i] = rng.normal();
    labels(1, 0) = std::numeric_limits<double>::quiet_NaN();  // a missing energy label
    Mat<double> ref(N, 3);
    for (Index i = 0; i < ref.size(); ++i) ref.data()[i] = rng.normal();
    // The last molecule has no reference forces (masked).
    ref.bottomRows(batch.index.size(S - 1)).setConstant(std::numeric_limits<double>::quiet_NaN());
    const double weight = 3.0;
    const RegressionLoss loss{RegressionLossKind::mse, 1.0};

    ModelCache<double> cache;
    ModelCache<Dual> dual_cache;
    const EnergyForceLoss lv =
        energy_force_gradient(model, dual, batch, labels, ref, 0, weight, loss, cache, dual_cache);
    CHECK(lv.force_atoms == N - batch.index.size(S - 1));
    CHECK(lv.force > 0);
    const std::vector<double> analytic(model.parameters().grads().begin(), model.parameters().grads().end());

    // The loss from its definition: forces by a plain forward and backward.
    auto total_loss = [&]() {
      ModelCache<double> c;
      const Mat<double> out = model.forward(batch, c);
      const double energy = regression_loss_forward<double>(loss, out, labels).value;
      Mat<double> select = Mat<double>::Zero(S, 2);
      select.col(0).setOnes();
      Mat<double> dr;
      model.backward(batch, c, select, &dr);  // dout_E / dr; F~ = -dr
      double sq = 0;
      Index atoms = 0;
      for (Index i = 0; i < N; ++i) {
        if (!ref.row(i).allFinite()) continue;
        ++atoms;
        sq += (-dr.row(i) - ref.row(i) / norm.scale[0]).squaredNorm();
      }
      return energy + weight * sq / (3.0 * static_cast<double>(atoms));
    };
    CHECK(total_loss() == Approx(lv.value()).epsilon(1e-12));
    const auto check = check_gradient(total_loss, model.parameters().values(), analytic);
    INFO("worst parameter " << check.worst_index << ": analytic " << check.worst_analytic << ", numeric "
                            << check.worst_numeric);
    CHECK(check.max_rel_error <= 1e-6);

    // With weight 0 the gradient is the energy loss's alone.
    energy_force_gradient(model, dual, batch, labels, ref, 0, 0.0, loss, cache, dual_cache);
    const std::vector<double> energy_only(model.parameters().grads().begin(), model.parameters().grads().end());
    ModelCache<double> c;
    const Mat<double> out = model.forward(batch, c);
    Mat<double> dout = Mat<double>::Zero(S, 2);
    regression_loss_backward<double>(loss, out, labels, dout);
    model.parameters().zero_grad();
    model.backward(batch, c, dout);
    const std::vector<double> plain(model.parameters().grads().begin(), model.parameters().grads().end());
    CHECK(relative_error(energy_only, plain) <= 1e-12);
  }
  omp_set_num_threads(saved_threads);
}

TEST_CASE("second derivatives: the energy and force gradient refuses an intensive target and bad shapes",
          "[models][dual]") {
  const ModelConfig cfg = small_near_far(FarField::none, true, 5.0);
  MoleculeModel<double> model(cfg);
  MoleculeModel<Dual> dual(cfg);
  const auto mols = molecules_within({3}, 1.5, 1);
  const MoleculeBatch batch = MoleculeBatch::from(std::span<const Molecule>(mols));
  const Mat<double> labels = Mat<double>::Zero(1, 2);
  const Mat<double> ref = Mat<double>::Zero(3, 3);
  ModelCache<double> cache;
  ModelCache<Dual> dual_cache;
  const RegressionLoss loss{};
  CHECK_THROWS_WITH(energy_force_gradient(model, dual, batch, labels, ref, 1, 1.0, loss, cache, dual_cache),
                    Catch::Contains("extensive"));
  CHECK_THROWS_WITH(
      energy_force_gradient(model, dual, batch, labels, Mat<double>::Zero(2, 3), 0, 1.0, loss, cache, dual_cache),
      Catch::Contains("N x 3"));
}

TEST_CASE("second derivatives: a tangent on the weights gives the parameter directional derivatives",
          "[models][dual]") {
  // Weights that carry tangents take the general paths of the Dual layers (linear layers with
  // W', filter tables built in Dual arithmetic) that a Hessian-vector product along coordinates
  // never reaches: the output tangent is grad . w and the gradient tangents are the parameter
  // Hessian times w, against central differences along w.
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  for (const auto& [far, cutoff] : {std::pair{FarField::flt, 2.0}, std::pair{FarField::none, 5.0}}) {
    INFO("far field " << to_string(far) << " cutoff " << cutoff);
    const ModelConfig cfg = small_near_far(far, true, cutoff);
    MoleculeModel<double> model(cfg);
    Rng rng(23);
    perturb(model, rng, 4);
    MoleculeModel<Dual> dual(cfg);
    copy_model_state(model, dual);
    std::vector<double> w(model.parameters().size());
    for (double& x : w) x = rng.normal();
    for (std::size_t k = 0; k < w.size(); ++k) dual.parameters().values()[k].d = w[k];

    const auto mols = molecules_within({4, 6}, 2.2, 41);
    const MoleculeBatch batch = MoleculeBatch::from(std::span<const Molecule>(mols));
    Mat<double> dout(batch.num_molecules(), 2);
    for (Index i = 0; i < dout.size(); ++i) dout.data()[i] = rng.normal();
    const DualDerivatives d = run_dual(dual, batch, dout, Mat<double>::Zero(batch.num_atoms(), 3));

    const Derivatives at = run_double(model, batch, dout);
    double directional = 0;
    for (std::size_t k = 0; k < w.size(); ++k) directional += at.grads[k] * w[k];
    double tangent = 0;
    for (Index s = 0; s < dout.rows(); ++s)
      for (Index t = 0; t < dout.cols(); ++t) tangent += dout(s, t) * d.tangent.out(s, t);
    CHECK(tangent == Approx(directional).epsilon(1e-10));

    const double h = 2e-6;
    auto shifted = [&](double sign) {
      MoleculeModel<double> m(cfg);
      copy_model_state(model, m);
      for (std::size_t k = 0; k < w.size(); ++k) m.parameters().values()[k] += sign * h * w[k];
      return run_double(m, batch, dout);
    };
    const Derivatives fp = shifted(1.0), fm = shifted(-1.0);
    std::vector<double> num_grads(fp.grads.size());
    for (std::size_t k = 0; k < num_grads.size(); ++k) num_grads[k] = (fp.grads[k] - fm.grads[k]) / (2 * h);
    const double e = relative_error(d.tangent.grads, num_grads);
    INFO("gradient tangents (parameter Hessian times w) vs finite differences: " << e);
    CHECK(e <= 1e-6);
    CHECK(relative_error(d.tangent.dcoords, Mat<double>((fp.dcoords - fm.dcoords) / (2 * h))) <= 1e-6);
  }
  omp_set_num_threads(saved_threads);
}

TEST_CASE("second derivatives: passes without parameter-gradient values change nothing else",
          "[models][dual]") {
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const ModelConfig cfg = small_near_far(FarField::flt, true, 2.0);
  MoleculeModel<double> model(cfg);
  Rng rng(29);
  perturb(model, rng, 1);
  MoleculeModel<Dual> dual(cfg);
  copy_model_state(model, dual);
  const auto mols = molecules_within({5, 7}, 2.2, 43);
  const MoleculeBatch batch = MoleculeBatch::from(std::span<const Molecule>(mols));
  Mat<double> dout(batch.num_molecules(), 2);
  for (Index i = 0; i < dout.size(); ++i) dout.data()[i] = rng.normal();
  Mat<double> u(batch.num_atoms(), 3);
  for (Index i = 0; i < u.size(); ++i) u.data()[i] = rng.normal();

  // A double backward for its coordinate gradient only: the same coordinate gradient, bit for
  // bit, and no parameter gradient.
  const Derivatives full = run_double(model, batch, dout);
  Derivatives coords_only;
  {
    const ScopedPassOptions options({.parameter_gradient_values = false});
    coords_only = run_double(model, batch, dout);
  }
  CHECK(coords_only.dcoords == full.dcoords);
  for (const auto& info : model.parameters().infos()) {
    const auto g = model.parameters().grad_span(info.ref);
    INFO(info.name);
    CHECK(std::all_of(g.begin(), g.end(), [](double x) { return x == 0.0; }));
  }

  // A Dual pass without the values dE/dtheta: the same tangents, bit for bit.
  const DualDerivatives all = run_dual(dual, batch, dout, u);
  DualDerivatives tangents_only;
  {
    const ScopedPassOptions options({.parameter_gradient_values = false});
    tangents_only = run_dual(dual, batch, dout, u);
  }
  CHECK(tangents_only.tangent.grads == all.tangent.grads);
  CHECK(tangents_only.tangent.dcoords == all.tangent.dcoords);
  CHECK(tangents_only.value.dcoords == all.value.dcoords);
  // Parameters promised to carry no tangent (as after copy_model_state): the same again.
  DualDerivatives promised;
  {
    const ScopedPassOptions options({.parameter_gradient_values = false, .parameter_tangents = false});
    promised = run_dual(dual, batch, dout, u);
  }
  CHECK(promised.tangent.grads == all.tangent.grads);
  CHECK(promised.tangent.dcoords == all.tangent.dcoords);
  omp_set_num_threads(saved_threads);
}

TEST_CASE("second derivatives: a float model's force-training gradient (float products) matches the double model's",
          "[models][dual]") {
  // energy_force_gradient on a float model runs its Dual pass with float products and without
  // parameter-gradient values; the gradient must be the double model's to float precision.
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  // A small model, and one at the rMD17 recipe's settings (datasets/rmd17-ethanol: width 32, 2
  // heads of 16 channels, 16 radial nodes, cutoff 5 A, a batch of 16 nine-atom structures), where
  // the dual near field's vectorised loops and several pieces of the pair list run.
  struct Case {
    const char* name;
    Index width, heads, mlp_hidden, head_hidden, radial_nodes;
    double cutoff;
    std::vector<int> sizes;
  };
  const Case cases[] = {{"small", 16, 2, 32, 4, 4, 2.0, {6, 9, 4}},
                        {"rMD17 recipe", 32, 2, 256, 128, 16, 5.0, std::vector<int>(16, 9)}};
  for (const Case& cs : cases) {
  INFO(cs.name);
  ModelConfig cfg = small_near_far(FarField::flt, true, cs.cutoff);
  cfg.width = cs.width;  // products deep enough to show float rounding
  cfg.heads = cs.heads;
  cfg.mlp_hidden = cs.mlp_hidden;
  cfg.head_hidden = cs.head_hidden;
  cfg.radial_nodes = cs.radial_nodes;
  MoleculeModel<double> model(cfg);
  Rng rng(37);
  perturb(model, rng, 2);
  MoleculeModel<float> single(cfg);
  copy_model_state(model, single);
  MoleculeModel<Dual> dual(cfg);

  const auto mols = molecules_within(cs.sizes, 2.2, 47);
  const MoleculeBatch batch = MoleculeBatch::from(std::span<const Molecule>(mols));
  Mat<double> labels(batch.num_molecules(), 2);
  for (Index i = 0; i < labels.size(); ++i) labels.data()[i] = rng.normal();
  Mat<double> ref(batch.num_atoms(), 3);
  for (Index i = 0; i < ref.size(); ++i) ref.data()[i] = rng.normal();
  const RegressionLoss loss{RegressionLossKind::mse, 1.0};

  ModelCache<double> cache;
  ModelCache<float> single_cache;
  ModelCache<Dual> dual_cache;
  const EnergyForceLoss ld = energy_force_gradient(model, dual, batch, labels, ref, 0, 5.0, loss, cache, dual_cache);
  const EnergyForceLoss lf =
      energy_force_gradient(single, dual, batch, labels, ref, 0, 5.0, loss, single_cache, dual_cache);
  CHECK(lf.value() == Approx(ld.value()).epsilon(1e-5));
  const std::vector<double> gd(model.parameters().grads().begin(), model.parameters().grads().end());
  std::vector<double> gf;
  for (float g : single.parameters().grads()) gf.push_back(static_cast<double>(g));
  const double e = relative_error(gf, gd);
  INFO("float against double training gradient: " << e);
  CHECK(e <= 1e-4);
  }
  // The options are restored after the step.
  CHECK(pass_options().parameter_gradient_values);
  CHECK_FALSE(pass_options().float_products);
  omp_set_num_threads(saved_threads);
}
