// The charge energy of the near_far model (charge_energy = flt | exact): learned neutral charges per
// structure and E_q = 1/2 sum_i q_i sum_{j != i} w f(rho_ij) q_j added to the energy. Gradients
// of parameters and coordinates against finite differences (double), the linear-cost path
// against the O(N^2) closed form, bitwise determinism across thread counts, infer against
// forward, size consistency, forces, configuration and model files.
#include "../common/random_molecules.hpp"
#include "core/gradcheck.hpp"
#include "core/random.hpp"
#include "models/model_io.hpp"
#include "models/molecule_model.hpp"
#include "../common/force_check.hpp"

#include <catch2/catch.hpp>
#include <omp.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <map>
#include <numeric>
#include <cmath>
#include <filesystem>
#include <string>

using namespace flt;
using namespace flt::models;
using flt::test_support::random_molecules;

namespace {

ModelConfig charge_config(ChargeEnergy charge, std::uint64_t seed = 11) {
  ModelConfig c;
  c.targets = {{"E", "eV", true}};
  c.width = 16;
  c.heads = 2;
  c.blocks = 2;
  c.mlp_hidden = 16;
  c.head_hidden = 8;
  c.max_z = 10;
  c.attention = AttentionKind::near_far;
  c.cutoff = 2.5;  // shorter than the test structures: near pairs, far pairs and the partition
  c.radial_nodes = 4;
  c.far_nodes = 3;
  c.far_spacing = 0.05;
  c.far_degree = 16;
  c.far_init = 0.2;
  c.charge_energy = charge;
  c.charge_nodes = 6;
  c.charge_spacing = 0.02;
  c.charge_degree = 40;
  c.charge_init = 0.5;  // large enough that the charge energy matters in every test
  c.seed = seed;
  return c;
}

// Points on a jittered cubic grid of spacing 1.6 A: a liquid-like structure of n atoms, no atom
// pairs closer than the jitter allows.
Molecule grid_structure(int n, std::uint64_t seed) {
  Rng rng(seed);
  const int side = static_cast<int>(std::ceil(std::cbrt(static_cast<double>(n))));
  const int elements[] = {1, 6, 7, 8};
  Molecule m;
  for (int i = 0; i < n; ++i) {
    const int x = i % side, y = (i / side) % side, z = i / (side * side);
    m.atomic_numbers.push_back(elements[rng.below(4)]);
    m.positions.push_back({1.6 * x + rng.uniform(-0.3, 0.3), 1.6 * y + rng.uniform(-0.3, 0.3),
                           1.6 * z + rng.uniform(-0.3, 0.3)});
  }
  return m;
}

using test_support::batch_of;

// The charge energy alone (normalised units): the model's output minus the same model's output
// with the charge coefficients set to ~0 (exp(-200)).
template <class T>
Mat<double> charge_energy_of(MoleculeModel<T>& model, const MoleculeBatch& batch) {
  const Mat<double> with = model.infer(batch).template cast<double>();
  auto& store = model.parameters();
  const auto ref = store.infos().back().ref;  // charge.log_coeffs, registered last
  REQUIRE(store.infos().back().name == "charge.log_coeffs");
  const Mat<T> saved = store.value(ref);
  store.value(ref).setConstant(static_cast<T>(-200));
  const Mat<double> without = model.infer(batch).template cast<double>();
  store.value(ref) = saved;
  return with - without;
}

// Double finite-difference check of every parameter's and coordinate's gradient of the loss
// sum_s w_s out_s (relative error <= 1e-6). A shorter parameter step than the default:
// exp(theta) and the quadratic charge energy have third derivatives large enough that h = 1e-5
// truncation reaches 1e-6 relative. The model's gradients stay those of the analytic pass.
// coordinate_step: shorter for structures with bonded hydrogens, whose near-field terms curve
// faster (the error then falls as the step squared, as truncation does).
void check_gradients(MoleculeModel<double>& model, MoleculeBatch& batch, const Mat<double>& w,
                     double coordinate_step = 3e-5) {
  auto loss = [&]() {
    ModelCache<double> cache;
    return (model.forward(batch, cache).array() * w.array()).sum();
  };
  ModelCache<double> cache;
  model.forward(batch, cache);
  model.parameters().zero_grad();
  Mat<double> dr;
  model.backward(batch, cache, w, &dr);
  std::vector<double> analytic(model.parameters().grads().begin(), model.parameters().grads().end());
  GradCheckOptions param_options;
  param_options.step = 2e-6;
  const auto gp = check_gradient(loss, model.parameters().values(), analytic, param_options);
  INFO("parameters: worst index " << gp.worst_index << " analytic " << gp.worst_analytic << " numeric "
                                  << gp.worst_numeric);
  CHECK(gp.max_rel_error <= 1e-6);
  std::vector<double> analytic_r(dr.data(), dr.data() + dr.size());
  GradCheckOptions coord_options;
  coord_options.step = coordinate_step;
  const auto gr = check_gradient(
      loss, std::span<double>(batch.coords.data(), static_cast<std::size_t>(batch.coords.size())), analytic_r,
      coord_options);
  INFO("coordinates: worst index " << gr.worst_index << " analytic " << gr.worst_analytic << " numeric "
                                   << gr.worst_numeric);
  CHECK(gr.max_rel_error <= 1e-6);
}

// Appends a rigid molecule: atoms (Z, formal charge, offset from `at` in Angstrom).
struct TemplateAtom {
  int z, formal;
  double x, y, zc;
};
void add_molecule(Molecule& m, std::array<double, 3> at, const std::vector<TemplateAtom>& atoms) {
  for (const auto& a : atoms) {
    m.atomic_numbers.push_back(a.z);
    m.formal_charges.push_back(a.formal);
    m.positions.push_back({at[0] + a.x, at[1] + a.y, at[2] + a.zc});
  }
}
const std::vector<TemplateAtom> kAmmonium = {{7, 1, 0, 0, 0},          {1, 0, 0.589, 0.589, 0.589},
                                             {1, 0, -0.589, -0.589, 0.589}, {1, 0, -0.589, 0.589, -0.589},
                                             {1, 0, 0.589, -0.589, -0.589}};
const std::vector<TemplateAtom> kHydroxide = {{8, -1, 0, 0, 0}, {1, 0, 0.97, 0, 0}};
const std::vector<TemplateAtom> kWater = {{8, 0, 0, 0, 0}, {1, 0, 0.76, 0.59, 0}, {1, 0, -0.76, 0.59, 0}};

// A small model with formal charges and no far field (so its charge energy dominates), its
// parameters moved off their start so that the learned correction is non-zero.
MoleculeModel<double> moved_formal_model(ChargeEnergy charge, ChargeNeutral neutral, std::uint64_t seed) {
  ModelConfig cfg = charge_config(charge);
  cfg.charge_formal = true;
  cfg.charge_neutral = neutral;
  cfg.far_field = FarField::none;
  cfg.width = 8;
  cfg.mlp_hidden = 8;
  cfg.head_hidden = 4;
  MoleculeModel<double> model(cfg);
  Rng rng(seed);
  for (double& p : model.parameters().values()) p += 0.05 * rng.normal();
  return model;
}

}  // namespace

TEST_CASE("charge energy: double gradient check of all parameters and coordinates", "[models][charge]") {
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  for (ChargeEnergy charge : {ChargeEnergy::flt, ChargeEnergy::exact}) {
    for (FarField far : {FarField::flt, FarField::none}) {
      INFO("charge_energy " << to_string(charge) << ", far_field " << to_string(far));
      ModelConfig cfg = charge_config(charge);
      cfg.far_field = far;
      cfg.width = 8;
      cfg.mlp_hidden = 8;
      cfg.head_hidden = 4;
      MoleculeModel<double> model(cfg);
      Rng rng(3);
      for (double& p : model.parameters().values()) p += 0.05 * rng.normal();
      // Structures wider than the cutoff (so the features' estimate carries far pairs) and a
      // single atom (its charge is 0 after neutralisation).
      const auto mols = random_molecules({1, 7, 12}, 21, 2.0, false);
      MoleculeBatch batch = batch_of(mols);
      Mat<double> w(3, 1);
      w << 0.7, -1.3, 0.9;
      ModelCache<double> cache;
      model.forward(batch, cache);
      // The term is there: neutral charges per structure, a non-zero energy.
      for (Index s = 0; s < batch.num_molecules(); ++s) {
        double total = 0;
        for (Index i = batch.index.begin(s); i < batch.index.end(s); ++i) total += cache.charges(i, 0);
        CHECK(std::abs(total) <= 1e-12);
      }
      CHECK(cache.charges.cwiseAbs().maxCoeff() > 1e-3);
      check_gradients(model, batch, w);
      // The charge parameters get gradients (except the output bias: a constant shift of every
      // charge of a structure is removed by the neutrality projection).
      const auto& infos = model.parameters().infos();
      for (const auto& info : infos)
        if (info.name.rfind("charge.", 0) == 0 && info.name != "charge.mlp.fc2.bias") {
          const auto g = model.parameters().grad(info.ref);
          INFO(info.name);
          CHECK(g.cwiseAbs().maxCoeff() > 1e-8);
        }
    }
  }
  omp_set_num_threads(saved_threads);
}

TEST_CASE("charge energy: the FLT path equals the O(N^2) closed form, values and gradients", "[models][charge]") {
  // Two structures of several cutoffs (about 9 A across) and one small one; the product grid of
  // degree 40 resolves 2 pi kappa_max rho up to ~40 at kappa_max = 0.1: rho up to ~60 A.
  std::vector<Molecule> mols = {grid_structure(300, 1), grid_structure(150, 2)};
  mols.push_back(random_molecules({5}, 3, 1.2, false).front());
  const auto batch = batch_of(mols);
  ModelConfig fast_cfg = charge_config(ChargeEnergy::flt), exact_cfg = charge_config(ChargeEnergy::exact);
  fast_cfg.far_field = exact_cfg.far_field = FarField::none;
  MoleculeModel<double> fast(fast_cfg), exact(exact_cfg);  // the same seed: the same weights
  REQUIRE(fast.parameters().values().size() == exact.parameters().values().size());
  CHECK(std::equal(fast.parameters().values().begin(), fast.parameters().values().end(),
                   exact.parameters().values().begin()));
  ModelCache<double> cf, ce;
  const Mat<double> of = fast.forward(batch, cf), oe = exact.forward(batch, ce);
  const double phi_scale = ce.potential.cwiseAbs().maxCoeff();
  REQUIRE(phi_scale > 1e-3);
  INFO("max |phi_flt - phi_exact| = " << (cf.potential - ce.potential).cwiseAbs().maxCoeff()
                                      << " of max |phi| = " << phi_scale);
  CHECK((cf.potential - ce.potential).cwiseAbs().maxCoeff() <= 1e-8 * phi_scale);
  CHECK((of - oe).cwiseAbs().maxCoeff() <= 1e-8 * (1 + oe.cwiseAbs().maxCoeff()));
  const Mat<double> dout = Mat<double>::Ones(3, 1);
  Mat<double> drf, dre;
  fast.parameters().zero_grad();
  exact.parameters().zero_grad();
  fast.backward(batch, cf, dout, &drf);
  exact.backward(batch, ce, dout, &dre);
  double gmax = 0, gdiff = 0;
  for (std::size_t i = 0; i < fast.parameters().grads().size(); ++i) {
    gmax = std::max(gmax, std::abs(exact.parameters().grads()[i]));
    gdiff = std::max(gdiff, std::abs(fast.parameters().grads()[i] - exact.parameters().grads()[i]));
  }
  CHECK(gdiff <= 1e-7 * gmax);
  CHECK((drf - dre).cwiseAbs().maxCoeff() <= 1e-7 * dre.cwiseAbs().maxCoeff());
}

TEST_CASE("charge energy: bitwise equal for 1 and 2 threads, and infer equals forward", "[models][charge]") {
  // A structure above the far field's single-chunk size (1024 rows) and two small ones.
  std::vector<Molecule> mols = {grid_structure(1500, 4)};
  for (auto& m : random_molecules({9, 14}, 5, 2.0, false)) mols.push_back(std::move(m));
  const auto batch = batch_of(mols);
  for (ChargeEnergy charge : {ChargeEnergy::flt, ChargeEnergy::exact}) {
    INFO("charge_energy " << to_string(charge));
    const ModelConfig cfg = charge_config(charge);
    auto run = [&](int threads, Mat<float>& out, std::vector<float>& grads, Mat<float>& dr, Mat<float>& inferred,
                   Mat<float>& per_atom, Mat<float>& cached_y) {
      MoleculeModel<float> model(cfg);
      omp_set_num_threads(threads);
      ModelCache<float> cache;
      out = model.forward(batch, cache);
      cached_y = cache.y;
      model.parameters().zero_grad();
      model.backward(batch, cache, Mat<float>::Ones(out.rows(), 1), &dr);
      grads.assign(model.parameters().grads().begin(), model.parameters().grads().end());
      inferred = model.infer(batch, &per_atom);
    };
    const int saved = omp_get_max_threads();
    Mat<float> o1, o2, r1, r2, i1, i2, p1, p2, y1, y2;
    std::vector<float> g1, g2;
    run(1, o1, g1, r1, i1, p1, y1);
    run(2, o2, g2, r2, i2, p2, y2);
    omp_set_num_threads(saved);
    CHECK((o1.array() == o2.array()).all());
    CHECK(g1 == g2);
    CHECK((r1.array() == r2.array()).all());
    CHECK((i1.array() == o1.array()).all());
    CHECK((i2.array() == o2.array()).all());
    CHECK((p1.array() == y1.array()).all());
    CHECK((p2.array() == y2.array()).all());
  }
  // Double as well (infer against forward).
  MoleculeModel<double> model(charge_config(ChargeEnergy::flt));
  ModelCache<double> cache;
  const Mat<double> out = model.forward(batch, cache);
  Mat<double> per_atom;
  const Mat<double> inferred = model.infer(batch, &per_atom);
  CHECK((out.array() == inferred.array()).all());
  CHECK((per_atom.array() == cache.y.array()).all());
}

TEST_CASE("charge energy: size consistent (two far-apart copies of a structure carry twice its energy)",
          "[models][charge]") {
  // The near field, the vector features and the charges of each copy see only that copy once the
  // copies are more than blocks x cutoff apart (the residual-stream far field is off: a sum of
  // values over all pairs is not size consistent). So E(A + B) = 2 E(A) + X, X the charge energy's
  // cross term sum_{i in A, j in B} q_i q_j f(rho_ij), to rounding (checked against X computed
  // here from the model's charges and mask). With neutral charges X is a multipole interaction,
  // below 2e-3 of E_q(A) from 20 to 640 A (it does not fall off monotonically: the truncated
  // spectrum's ripple couples dipoles too); without neutrality it would hold the monopole term
  // Q_A Q_B f(D) ~ Q^2 c / (4 s D), and c_0 Q_A Q_B from the constant node alone at any distance.
  for (ChargeEnergy charge : {ChargeEnergy::flt, ChargeEnergy::exact}) {
    INFO("charge_energy " << to_string(charge));
    ModelConfig cfg = charge_config(charge);
    cfg.far_field = FarField::none;
    cfg.charge_nodes = 16;
    cfg.charge_spacing = 0.005;  // 1/rho-like to 200 A
    cfg.charge_degree = 80;      // 2 pi 0.075 rho < 80 up to rho ~ 170 A
    MoleculeModel<double> model(cfg);
    const Molecule a = random_molecules({16}, 8, 1.5, false).front();
    const Mat<double> ea = charge_energy_of(model, batch_of({a}));
    REQUIRE(std::abs(ea(0, 0)) > 1e-3);
    const double one = model.infer(batch_of({a}))(0, 0);
    // The fast path only within the distances its design resolves (2 pi kappa_max rho < degree).
    const std::vector<double> distances =
        charge == ChargeEnergy::flt ? std::vector<double>{20, 40, 80} : std::vector<double>{20, 40, 80, 160, 320, 640};
    for (double distance : distances) {
      Molecule pair = a;
      for (std::size_t i = 0; i < a.positions.size(); ++i) {
        pair.atomic_numbers.push_back(a.atomic_numbers[i]);
        // The second copy rotated by 90 degrees about z as well: not the same orientation.
        pair.positions.push_back({-a.positions[i][1] + distance, a.positions[i][0], a.positions[i][2]});
      }
      const auto batch = batch_of({pair});
      ModelCache<double> cache;
      const double two = model.forward(batch, cache)(0, 0);
      const Index n = static_cast<Index>(a.positions.size());
      double x = 0;
      for (Index i = 0; i < n; ++i)
        for (Index j = n; j < 2 * n; ++j) {
          const double rho[] = {(batch.coords.row(i) - batch.coords.row(j)).norm()};
          x += cache.charges(i, 0) * cache.charges(j, 0) * model.charge_mask(rho)[0];
        }
      INFO("D = " << distance << " A: E(A + B) - 2 E(A) = " << two - 2 * one << ", cross term X = " << x
                  << ", E_q(A) = " << ea(0, 0));
      CHECK(std::abs(two - 2 * one - x) <= 1e-9 * std::abs(one));
      CHECK(std::abs(x) <= 2e-3 * std::abs(ea(0, 0)));
    }
  }
}

TEST_CASE("charge energy: the initial mask is a decaying 1/rho (and absent without the term)", "[models][charge]") {
  ModelConfig cfg;
  cfg.targets = {{"energy", "eV", true}};
  cfg.charge_energy = ChargeEnergy::flt;
  MoleculeModel<float> model(cfg);
  // Defaults: 8 nodes spaced 0.01 cycles/A: c / (4 0.01 rho) within 15% from 5 to 60 A (the
  // truncation's ripple), the shape of 1/rho up to 100 A.
  std::vector<double> rho = {5, 10, 20, 40, 60};
  const auto f = model.charge_mask(rho);
  for (std::size_t i = 0; i < rho.size(); ++i) {
    const double target = cfg.charge_init / (4 * cfg.charge_spacing * rho[i]);
    INFO("rho = " << rho[i] << ": f = " << f[i] << ", c / (4 s rho) = " << target);
    CHECK(std::abs(f[i] - target) <= 0.15 * target);
  }
  ModelConfig none;
  MoleculeModel<float> plain(none);
  CHECK_THROWS_AS(plain.charge_mask(rho), InvalidArgument);
}

TEST_CASE("charge energy: forces are minus the gradient of the predicted energy", "[models][charge][forces]") {
  MoleculeModel<double> model(charge_config(ChargeEnergy::flt));
  Normalisation norm = model.normalisation();
  norm.scale[0] = 2.5;
  model.set_normalisation(norm);
  const std::vector<Molecule> mols = random_molecules({9, 6}, 31, 2.0, false);
  Mat<double> forces;
  const Mat<double> y = model.predict_with_forces(batch_of(mols), 0, forces);
  CHECK((y - model.predict(batch_of(mols))).cwiseAbs().maxCoeff() <= 1e-12 * (1 + y.cwiseAbs().maxCoeff()));
  const double fmax = forces.cwiseAbs().maxCoeff();
  REQUIRE(fmax > 1e-3);
  const double worst = test_support::worst_force_error(model, mols, forces, 3e-5);
  INFO("max |F + dE/dr| = " << worst << ", max |F| = " << fmax);
  CHECK(worst <= 1e-6 * (1 + fmax));
  CHECK(forces.topRows(9).colwise().sum().cwiseAbs().maxCoeff() <= 1e-10 * (1 + fmax));
}

TEST_CASE("charge energy: configuration, refusals and model files", "[models][charge]") {
  // Keys round trip; a configuration without them (a model file from before) means none.
  const ModelConfig cfg = charge_config(ChargeEnergy::flt);
  std::map<std::string, std::string> strings;
  for (const auto& [k, v] : config_to_strings(cfg)) strings[k] = v;
  CHECK(strings.at("charge_energy") == "flt");
  CHECK(config_to_strings(config_from_strings(strings)) == config_to_strings(cfg));
  std::map<std::string, std::string> old;
  for (const auto& [k, v] : strings)
    if (k.rfind("charge_", 0) != 0) old[k] = v;
  CHECK(config_from_strings(old).charge_energy == ChargeEnergy::none);
  strings["charge-energy"] = "exact";
  strings.erase("charge_energy");
  CHECK(config_from_strings(strings).charge_energy == ChargeEnergy::exact);
  strings["charge-energy"] = "ewald";
  CHECK_THROWS_WITH(config_from_strings(strings), Catch::Contains("charge_energy"));

  // Refused where it makes no sense: other attention kinds, intensive or several targets, and
  // dual numbers (training on forces).
  ModelConfig bad = cfg;
  bad.attention = AttentionKind::exact;
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("charge_energy") && Catch::Contains("near_far"));
  bad = cfg;
  bad.targets = {{"gap", "eV", false}};
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("charge_energy") && Catch::Contains("extensive"));
  bad = cfg;
  bad.targets = {{"U0", "eV", true}, {"H", "eV", true}};
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("charge_energy"));
  bad = cfg;
  bad.charge_nodes = 0;
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("charge_nodes"));
  CHECK_THROWS_AS(MoleculeModel<Dual>{cfg}, ConfigError);
  CHECK_THROWS_WITH(MoleculeModel<Dual>{cfg}, Catch::Contains("charge_energy"));

  // A .flt file round trip predicts the same, bit for bit; the charge parameters are saved.
  MoleculeModel<float> model(cfg);
  const auto mols = random_molecules({7, 3, 10}, 13, 2.0, false);
  const auto batch = batch_of(mols);
  Mat<double> labels(3, 1);
  labels << -100, -40, -150;
  model.set_normalisation(fit_normalisation(cfg, batch, labels));
  const auto dir = std::filesystem::temp_directory_path() / ("flt-charge-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / "model.flt";
  save_model(path, model, {});
  std::map<std::string, std::string> meta;
  const auto loaded = load_model(path, &meta);
  CHECK(meta.at("config.charge_energy") == "flt");
  CHECK(config_to_strings(loaded->config()) == config_to_strings(cfg));
  const Mat<double> a = model.predict(batch), b = loaded->predict(batch);
  CHECK((a.array() == b.array()).all());
  std::filesystem::remove_all(dir);
}

TEST_CASE("charge energy: charges from formal charges, gradients and the Coulomb start", "[models][charge]") {
  // charge_formal: q = formal + a neutral learned correction, so each structure keeps its net
  // formal charge (here +1, 0 and -1) and the correction starts at zero.
  auto with_formal = [](std::vector<Molecule> mols) {
    const std::vector<std::vector<std::int32_t>> formal = {{1, 0, 0, 0, 0, -1, 1},
                                                           {0, 0, -1, 0, 0, 1, 0, 0, 0, 0, 0, 0},
                                                           {0, 0, 0, -1, 0}};
    for (std::size_t s = 0; s < mols.size(); ++s) mols[s].formal_charges = formal[s];
    return mols;
  };
  const auto mols = with_formal(random_molecules({7, 12, 5}, 41, 2.0, false));
  const std::vector<double> net = {1, 0, -1};
  {
    ModelConfig cfg = charge_config(ChargeEnergy::flt);
    cfg.charge_formal = true;
    MoleculeModel<double> fresh(cfg);
    ModelCache<double> cache;
    const auto batch = batch_of(mols);
    fresh.forward(batch, cache);
    for (Index i = 0; i < batch.num_atoms(); ++i)
      CHECK(std::abs(cache.charges(i, 0) - batch.formal_charges[static_cast<std::size_t>(i)]) <= 1e-12);
  }
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  for (ChargeEnergy charge : {ChargeEnergy::flt, ChargeEnergy::exact}) {
    INFO("charge_energy " << to_string(charge));
    MoleculeModel<double> model = moved_formal_model(charge, ChargeNeutral::structure, 5);
    MoleculeBatch batch = batch_of(mols);
    Mat<double> w(3, 1);
    w << 0.7, -1.3, 0.9;
    ModelCache<double> cache;
    const Mat<double> out = model.forward(batch, cache);
    for (Index s = 0; s < batch.num_molecules(); ++s) {
      double total = 0, correction = 0;
      for (Index i = batch.index.begin(s); i < batch.index.end(s); ++i) {
        total += cache.charges(i, 0);
        correction += std::abs(cache.charges(i, 0) - batch.formal_charges[static_cast<std::size_t>(i)]);
      }
      CHECK(std::abs(total - net[static_cast<std::size_t>(s)]) <= 1e-12);
      CHECK(correction > 1e-4);  // the learned part is there once the weights moved
    }
    CHECK((model.infer(batch).array() == out.array()).all());
    check_gradients(model, batch, w);
  }
  omp_set_num_threads(saved_threads);

  // charge_coulomb: a +1 and a -1 ion at distance D start with the energy -k_e / D in the target's
  // unit (kcal/mol here: k_e = 332.0637 kcal/mol A), within the default mask's 15% ripple; through
  // the FLT path at its default design, as users train it.
  ModelConfig cfg;
  cfg.targets = {{"energy", "kcal/mol", true}};
  cfg.charge_energy = ChargeEnergy::flt;
  cfg.far_field = FarField::none;
  cfg.charge_formal = true;
  cfg.charge_coulomb = true;
  MoleculeModel<double> model(cfg);
  Normalisation norm = model.normalisation();
  norm.scale[0] = 3.7;
  model.set_normalisation(norm);
  const double c = model.start_charge_mask_at_coulomb();
  CHECK(c == Approx(4 * cfg.charge_spacing * 332.0637 / 3.7).epsilon(1e-6));
  for (double distance : {8.0, 15.0, 30.0, 55.0}) {
    Molecule pair;
    pair.atomic_numbers = {7, 8};
    pair.positions = {{0, 0, 0}, {distance, 0, 0}};
    pair.formal_charges = {1, -1};
    const double energy = norm.scale[0] * charge_energy_of(model, batch_of({pair}))(0, 0);
    const double coulomb = -332.0637 / distance;
    INFO("D = " << distance << " A: charge energy " << energy << " kcal/mol, Coulomb " << coulomb);
    CHECK(std::abs(energy - coulomb) <= 0.15 * std::abs(coulomb));
  }
  // Only for an energy target, and only with a charge energy.
  ModelConfig dipole = cfg;
  dipole.targets = {{"mu", "D", true}};
  MoleculeModel<double> wrong_unit(dipole);
  CHECK_THROWS_WITH(wrong_unit.start_charge_mask_at_coulomb(), Catch::Contains("not an energy unit"));
  ModelConfig bad = cfg;
  bad.charge_energy = ChargeEnergy::none;
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("charge_formal"));
  bad.charge_formal = false;
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("charge_coulomb"));
}

TEST_CASE("charge energy: the correction neutral per covalently bonded fragment", "[models][charge]") {
  // Structures of several molecules (fragments 3-4 A apart): each fragment keeps its net formal
  // charge with charge_neutral = fragment, while per structure only the total is kept.
  std::vector<Molecule> mols(3);
  add_molecule(mols[0], {0, 0, 0}, kAmmonium);
  add_molecule(mols[0], {3.5, 0.5, 0}, kHydroxide);
  add_molecule(mols[0], {0.5, 3.6, 0.3}, kWater);
  add_molecule(mols[1], {0, 0, 0}, kWater);
  add_molecule(mols[1], {3.2, 0, 0.4}, kAmmonium);
  add_molecule(mols[1], {0, -3.4, 1}, kAmmonium);
  add_molecule(mols[2], {0, 0, 0}, kHydroxide);
  const std::vector<std::vector<double>> net = {{1, -1, 0}, {0, 1, 1}, {-1}};
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  for (ChargeNeutral neutral : {ChargeNeutral::fragment, ChargeNeutral::structure})
    for (ChargeEnergy charge : {ChargeEnergy::flt, ChargeEnergy::exact}) {
      INFO("charge_energy " << to_string(charge) << ", charge_neutral " << to_string(neutral));
      MoleculeModel<double> model = moved_formal_model(charge, neutral, 9);
      MoleculeBatch batch = batch_of(mols);
      ModelCache<double> cache;
      const Mat<double> out = model.forward(batch, cache);
      double worst = 0;  // largest |sum of a fragment's charges - its net formal charge|
      for (Index s = 0; s < batch.num_molecules(); ++s) {
        const auto& charges = net[static_cast<std::size_t>(s)];
        std::vector<double> sums(charges.size(), 0.0);
        Index fragment = 0;
        for (Index i = batch.index.begin(s); i < batch.index.end(s); ++i) {
          // Template sizes in the order added: 5 ammonium, 2 hydroxide, 3 water atoms.
          sums[static_cast<std::size_t>(fragment)] += cache.charges(i, 0);
          const Index local = i - batch.index.begin(s);
          const Index ends[3][3] = {{5, 7, 10}, {3, 8, 13}, {2, 2, 2}};
          if (local + 1 == ends[s][fragment]) ++fragment;
        }
        double total = 0;
        for (std::size_t k = 0; k < charges.size(); ++k) {
          worst = std::max(worst, std::abs(sums[k] - charges[k]));
          total += sums[k];
        }
        CHECK(std::abs(total - std::accumulate(charges.begin(), charges.end(), 0.0)) <= 1e-12);
      }
      if (neutral == ChargeNeutral::fragment) {
        CHECK(worst <= 1e-12);
        CHECK(cache.charge_groups.count == 7);
        CHECK((model.infer(batch).array() == out.array()).all());
        Mat<double> w(3, 1);
        w << 0.7, -1.3, 0.9;
        check_gradients(model, batch, w, 3e-6);
      } else {
        CHECK(worst > 1e-4);  // per structure, charge moves between the molecules
      }
    }
  omp_set_num_threads(saved_threads);

  // Refused without a charge energy; the keys round trip.
  ModelConfig cfg = charge_config(ChargeEnergy::flt);
  cfg.charge_neutral = ChargeNeutral::fragment;
  cfg.charge_bond_scale = 1.3;
  std::map<std::string, std::string> strings;
  for (const auto& [k, v] : config_to_strings(cfg)) strings[k] = v;
  CHECK(strings.at("charge_neutral") == "fragment");
  CHECK(config_to_strings(config_from_strings(strings)) == config_to_strings(cfg));
  strings["charge_neutral"] = "molecule";
  CHECK_THROWS_WITH(config_from_strings(strings), Catch::Contains("charge_neutral"));
  ModelConfig bad = cfg;
  bad.charge_bond_scale = 0;
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("charge_bond_scale"));
  bad = cfg;
  bad.charge_energy = ChargeEnergy::none;
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("charge_neutral"));
}

TEST_CASE("charge energy: neutral per fragment at the default model on a 720-atom ionic cluster",
          "[models][charge]") {
  // The settings users train with (the default model, charge energy through the FLT path at its
  // default design, float as in training): 216 waters, ammonium and hydroxide ions on a 3.2 A grid
  // (net charge 0, 72 ions each sign). Each molecule is one fragment and keeps its formal charge;
  // infer equals forward; charge_bond_scale reaches the fragments (at 0.5 no atom is bonded, so
  // each atom keeps its own formal charge).
  Molecule cluster;
  const std::vector<TemplateAtom>* kinds[] = {&kWater, &kAmmonium, &kHydroxide};
  std::vector<Index> first_atom;
  for (int k = 0; k < 216; ++k) {
    first_atom.push_back(static_cast<Index>(cluster.atomic_numbers.size()));
    add_molecule(cluster, {3.2 * (k % 6), 3.2 * ((k / 6) % 6), 3.2 * (k / 36)}, *kinds[k % 3]);
  }
  first_atom.push_back(static_cast<Index>(cluster.atomic_numbers.size()));
  REQUIRE(first_atom.back() == 720);
  const auto batch = batch_of({cluster});
  for (double scale : {1.2, 0.5}) {
    INFO("charge_bond_scale " << scale);
    ModelConfig cfg;
    cfg.targets = {{"energy", "eV", true}};
    cfg.charge_energy = ChargeEnergy::flt;
    cfg.charge_formal = true;
    cfg.charge_neutral = ChargeNeutral::fragment;
    cfg.charge_bond_scale = scale;
    MoleculeModel<float> model(cfg);
    Rng rng(3);
    for (float& p : model.parameters().values()) p += static_cast<float>(0.05 * rng.normal());
    ModelCache<float> cache;
    const Mat<float> out = model.forward(batch, cache);
    CHECK((model.infer(batch).array() == out.array()).all());
    double worst = 0, moved = 0;
    if (scale == 1.2) {
      CHECK(cache.charge_groups.count == 216);
      for (std::size_t k = 0; k + 1 < first_atom.size(); ++k) {
        double sum = 0, formal = 0;
        for (Index i = first_atom[k]; i < first_atom[k + 1]; ++i) {
          sum += cache.charges(i, 0);
          formal += batch.formal_charges[static_cast<std::size_t>(i)];
          moved = std::max(moved, std::abs(double(cache.charges(i, 0)) - batch.formal_charges[static_cast<std::size_t>(i)]));
        }
        worst = std::max(worst, std::abs(sum - formal));
      }
      CHECK(worst <= 1e-5);  // float sums of up to 5 charges
      CHECK(moved > 1e-3);   // the learned correction is there
    } else {
      CHECK(cache.charge_groups.count == 720);
      for (Index i = 0; i < batch.num_atoms(); ++i)
        worst = std::max(worst, std::abs(double(cache.charges(i, 0)) - batch.formal_charges[static_cast<std::size_t>(i)]));
      CHECK(worst == 0);
    }
  }
}
