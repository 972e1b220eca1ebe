// Tests of the FLT molecule model (src/models): gradients of everything (parameters and
// coordinates) for every attention kind, float vs double, invariances, rotation sensitivity,
// normalisation and reference energies, element checks, determinism, serialisation hooks, and
// an overfitting run on real QM9 molecules.
#include "../common/random_molecules.hpp"
#include "core/gradcheck.hpp"
#include "core/optim.hpp"
#include "core/random.hpp"
#include "models/model_io.hpp"
#include "attention/neighbours.hpp"
#include "models/molecule_model.hpp"
#include "../common/force_check.hpp"
#include "../common/text_input.hpp"

#include <catch2/catch.hpp>
#include <omp.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

using namespace flt;
using namespace flt::models;
using flt::test_support::random_molecules;

namespace {

ModelConfig tiny_config(AttentionKind kind, std::uint64_t seed = 7) {
  ModelConfig c;
  c.targets = {{"E", "eV", true}, {"gap", "eV", false}};
  c.width = 16;
  c.heads = 2;
  c.blocks = 2;
  c.mlp_hidden = 16;
  c.head_hidden = 8;
  c.max_z = 10;
  c.use_charges = true;
  c.max_charge = 1;
  c.attention = kind;
  // Kronecker needs enough features for its signed RPE estimate to keep every denominator
  // positive (a clamped denominator carries no gradient and would spoil the gradient check).
  // (Measured: with R = 16 and s0 = 0.4 about 18% of the denominators of a default-sized
  // model on QM9 are non-positive; with R = 64 and s0 = 0.3 about 1%.)
  c.num_features = kind == AttentionKind::kronecker ? 16 : 8;
  c.num_frequencies = kind == AttentionKind::kronecker ? 64 : 8;
  if (kind == AttentionKind::kronecker) c.proposal_scale = 0.3;
  c.exact_rbf = 6;
  c.exact_cutoff = 5.0;
  // near_far: a cutoff shorter than the test molecules, so both fields and the partition matter.
  c.cutoff = 2.5;
  c.radial_nodes = 4;
  c.far_nodes = 3;
  c.far_spacing = 0.05;
  c.far_degree = 16;
  c.far_init = 0.2;  // large enough that the far field matters in every test
  c.seed = seed;
  return c;
}

// The molecule's atoms renumbered: atom i of the result is atom order[i] of m.
Molecule renumbered(const Molecule& m, const std::vector<Index>& order) {
  Molecule out;
  for (Index i : order) {
    out.atomic_numbers.push_back(m.atomic_numbers[static_cast<std::size_t>(i)]);
    out.positions.push_back(m.positions[static_cast<std::size_t>(i)]);
    out.formal_charges.push_back(m.formal_charges[static_cast<std::size_t>(i)]);
  }
  return out;
}

// attn::cell_order of one molecule's atoms over cells of `cell` Angstrom.
std::vector<Index> cell_order_of(const Molecule& m, double cell) {
  const auto n = static_cast<Index>(m.positions.size());
  Mat<double> X(n, 3);
  for (Index i = 0; i < n; ++i)
    for (Index a = 0; a < 3; ++a) X(i, a) = m.positions[static_cast<std::size_t>(i)][static_cast<std::size_t>(a)];
  return attn::cell_order(RaggedIndex::single(n), X, cell, 0);
}

// The molecule with its atoms in attn::cell_order.
Molecule in_cell_order(const Molecule& m, double cell) { return renumbered(m, cell_order_of(m, cell)); }

struct Qm9Record {
  Molecule molecule;
  double u0_ev = 0, gap_ev = 0;
};

// The bundled QM9 subset: count line, "gdb N" + 15 tab-separated values, then El x y z lines.
std::vector<Qm9Record> read_qm9(std::size_t every, std::size_t count) {
  const std::string path = std::string(FLT_DATASETS_DIR) + "/qm9/qm9_subset.xyz.gz";
  flt::test::TextInput in(path);
  REQUIRE(in.opened());
  std::vector<Qm9Record> out;
  std::string line;
  std::size_t record = 0;
  const double hartree = 27.211386;
  while (out.size() < count && std::getline(in, line)) {
    const int n = std::stoi(line);
    std::getline(in, line);
    std::istringstream header(line);
    std::string gdb;
    int index = 0;
    header >> gdb >> index;
    std::vector<double> v(15);
    for (auto& x : v) header >> x;
    Qm9Record r;
    r.gap_ev = v[7] * hartree;
    r.u0_ev = v[10] * hartree;
    for (int i = 0; i < n; ++i) {
      std::getline(in, line);
      std::istringstream atom(line);
      std::string el;
      double x, y, z;
      atom >> el >> x >> y >> z;
      const int zz = el == "H" ? 1 : el == "C" ? 6 : el == "N" ? 7 : el == "O" ? 8 : el == "F" ? 9 : 0;
      if (zz == 0) throw std::runtime_error(path + ": unexpected element " + el);
      r.molecule.atomic_numbers.push_back(zz);
      r.molecule.positions.push_back({x, y, z});
    }
    if (record++ % every == 0) out.push_back(std::move(r));
  }
  REQUIRE(out.size() == count);
  return out;
}

const AttentionKind kAllKinds[] = {AttentionKind::kronecker, AttentionKind::bias,
                                   AttentionKind::performer, AttentionKind::exact,
                                   AttentionKind::near_far};

// Random-weighted sum of the outputs: a scalar whose gradient exercises every output.
Mat<double> loss_weights(Index S, Index P) {
  Rng rng(99);
  Mat<double> w(S, P);
  for (Index i = 0; i < w.size(); ++i) w.data()[i] = rng.normal();
  return w;
}

}  // namespace

TEST_CASE("molecule model: double gradient check of all parameters and coordinates for every kind",
          "[models]") {
  // Thousands of tiny forward passes: one thread avoids OpenMP start-up costs dominating.
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<ModelConfig> configs;
  for (AttentionKind kind : kAllKinds) configs.push_back(tiny_config(kind));
  for (FarField far : {FarField::exact, FarField::none})
    for (bool vectors : {true, false}) {
      auto c = tiny_config(AttentionKind::near_far);
      c.far_field = far;
      c.vectors = vectors;
      configs.push_back(c);
    }
  {
    auto c = tiny_config(AttentionKind::near_far);
    c.vectors = false;
    configs.push_back(c);
  }
  for (ModelConfig cfg : configs) {
    const AttentionKind kind = cfg.attention;
    INFO("attention " << to_string(kind) << " far field " << to_string(cfg.far_field) << " vectors "
                      << cfg.vectors);
    cfg.width = 8;
    cfg.mlp_hidden = 8;
    cfg.head_hidden = 4;
    MoleculeModel<double> model(cfg);
    // Perturb every parameter away from its initial value (LayerNorm gains 1, biases 0) so
    // no gradient is trivially structured.
    Rng rng(3);
    for (double& p : model.parameters().values()) p += 0.05 * rng.normal();
    const auto mols = random_molecules({1, 4, 6}, 14);
    MoleculeBatch batch = MoleculeBatch::from(std::span<const Molecule>(mols));
    const Mat<double> w = loss_weights(batch.num_molecules(), 2);
    auto loss = [&]() {
      ModelCache<double> cache;
      return (model.forward(batch, cache).array() * w.array()).sum();
    };
    ModelCache<double> cache;
    model.forward(batch, cache);
    model.parameters().zero_grad();
    Mat<double> dr;
    model.backward(batch, cache, w, &dr);
    if (kind == AttentionKind::kronecker || kind == AttentionKind::bias)
      REQUIRE(model.attention_stats().clamped_denominators == 0);

    std::vector<double> analytic(model.parameters().grads().begin(), model.parameters().grads().end());
    const auto gp = check_gradient(loss, model.parameters().values(), analytic);
    INFO("parameters: worst index " << gp.worst_index << " analytic " << gp.worst_analytic
                                    << " numeric " << gp.worst_numeric);
    CHECK(gp.max_rel_error <= 1e-6);

    std::vector<double> analytic_r(dr.data(), dr.data() + dr.size());
    // The coordinate check runs at the finite-difference noise floor of the near_far models
    // (|error| ~ 1e-11 = eps |loss| / h); a slightly larger step keeps it below 1e-6 relative.
    GradCheckOptions coord_options;
    if (kind == AttentionKind::near_far) coord_options.step = 3e-5;
    const auto gr = check_gradient(loss, std::span<double>(batch.coords.data(), static_cast<std::size_t>(batch.coords.size())),
                                   analytic_r, coord_options);
    INFO("coordinates: worst index " << gr.worst_index << " analytic " << gr.worst_analytic
                                     << " numeric " << gr.worst_numeric);
    CHECK(gr.max_rel_error <= 1e-6);
    if (kind != AttentionKind::performer) CHECK(dr.cwiseAbs().maxCoeff() > 1e-6);  // geometry is used
    else CHECK(dr.cwiseAbs().maxCoeff() == 0.0);                                  // and not here
    // Translation invariance of the energy: the coordinate gradient of each molecule sums to 0.
    for (Index s = 0; s < batch.num_molecules(); ++s)
      for (Index a = 0; a < 3; ++a) {
        double total = 0;
        for (Index i = batch.index.begin(s); i < batch.index.end(s); ++i) total += dr(i, a);
        CHECK(std::abs(total) <= 1e-9 * (1 + dr.cwiseAbs().maxCoeff()));
      }
  }
  omp_set_num_threads(saved_threads);
}

TEST_CASE("molecule model: float forward matches double forward", "[models]") {
  for (AttentionKind kind : kAllKinds) {
    INFO("attention " << to_string(kind));
    MoleculeModel<double> md(tiny_config(kind));
    MoleculeModel<float> mf(tiny_config(kind));
    copy_model_state(md, mf);
    const auto mols = random_molecules({3, 9, 17, 1}, 5);
    const auto batch = MoleculeBatch::from(std::span<const Molecule>(mols));
    const Mat<double> yd = md.predict(batch), yf = mf.predict(batch);
    const double scale = yd.cwiseAbs().maxCoeff();
    CHECK((yd - yf).cwiseAbs().maxCoeff() <= 1e-4 * scale);
    // And back: float -> double reproduces the float parameters exactly.
    MoleculeModel<double> md2(tiny_config(kind));
    copy_model_state(mf, md2);
    for (std::size_t i = 0; i < mf.parameters().size(); ++i)
      REQUIRE(md2.parameters().values()[i] == static_cast<double>(mf.parameters().values()[i]));
  }
}

TEST_CASE("molecule model: block 0 computed per atom type equals the per-atom computation", "[models]") {
  // Block 0's LN1 and q/k/v run once per (element, charge) type and are gathered to the atoms
  // (AtomTypes); they must be bitwise the rows a per-atom computation gives.
  for (bool charges : {true, false}) {
    INFO("use_charges " << charges);
    auto cfg = tiny_config(AttentionKind::exact);
    cfg.use_charges = charges;
    MoleculeModel<float> model(cfg);
    Rng rng(5);
    for (float& p : model.parameters().values()) p += static_cast<float>(0.05 * rng.normal());
    const auto mols = random_molecules({7, 1, 12, 5}, 21);
    const auto batch = MoleculeBatch::from(std::span<const Molecule>(mols));
    ModelCache<float> cache;
    model.forward(batch, cache);
    const Index N = batch.num_atoms(), D = cfg.width;
    // Types: (Z, q) pairs (or Z alone) of the batch, in order of first appearance.
    std::vector<std::pair<int, int>> seen;
    for (Index i = 0; i < N; ++i) {
      const std::pair<int, int> key{batch.atomic_numbers[static_cast<std::size_t>(i)],
                                    charges ? batch.formal_charges[static_cast<std::size_t>(i)] : 0};
      if (std::find(seen.begin(), seen.end(), key) == seen.end()) seen.push_back(key);
    }
    REQUIRE(cache.types.z.size() == seen.size());
    REQUIRE(seen.size() < static_cast<std::size_t>(N));  // the test needs repeated types
    // Per-atom reference: embedding rows, LN1 of all N rows, the three projections.
    const auto& store = model.parameters();
    const auto& blk = model.layers()[0];
    Mat<float> x(N, D);
    for (Index i = 0; i < N; ++i) {
      x.row(i) = store.value(store.ref("embed.element.weight")).row(batch.atomic_numbers[static_cast<std::size_t>(i)]);
      if (charges)
        x.row(i) += store.value(store.ref("embed.charge.weight"))
                        .row(batch.formal_charges[static_cast<std::size_t>(i)] + cfg.max_charge);
    }
    LayerNormCache<float> ln;
    const Mat<float> u = blk.ln1.forward(store, x, ln);
    const Mat<float> q = blk.q.forward(store, u), k = blk.k.forward(store, u), v = blk.v.forward(store, u);
    CHECK(cache.blocks[0].q == q);
    CHECK(cache.blocks[0].k == k);
    CHECK(cache.blocks[0].v == v);
    CHECK(cache.blocks[0].u.rows() == static_cast<Index>(seen.size()));
  }
}

TEST_CASE("molecule model: permutation and translation invariance and rotation sensitivity", "[models]") {
  for (AttentionKind kind : kAllKinds) {
    INFO("attention " << to_string(kind));
    MoleculeModel<float> model(tiny_config(kind));
    const auto mols = random_molecules({12}, 21);
    const Molecule& m = mols[0];
    Molecule permuted = m, shifted = m;
    std::vector<std::size_t> perm(m.atomic_numbers.size());
    for (std::size_t i = 0; i < perm.size(); ++i) perm[i] = perm.size() - 1 - ((i * 5) % perm.size());
    std::vector<std::size_t> check(perm);
    std::sort(check.begin(), check.end());
    for (std::size_t i = 0; i < check.size(); ++i) REQUIRE(check[i] == i);  // a true permutation
    for (std::size_t i = 0; i < perm.size(); ++i) {
      permuted.atomic_numbers[i] = m.atomic_numbers[perm[i]];
      permuted.positions[i] = m.positions[perm[i]];
      permuted.formal_charges[i] = m.formal_charges[perm[i]];
    }
    for (auto& p : shifted.positions) p = {p[0] + 7.5, p[1] - 3.25, p[2] + 11.0};
    const std::vector<Molecule> three{m, permuted, shifted};
    const Mat<double> y = model.predict(MoleculeBatch::from(std::span<const Molecule>(three)));
    const double tol = 1e-5 * (1 + y.cwiseAbs().maxCoeff());
    CHECK((y.row(0) - y.row(1)).cwiseAbs().maxCoeff() <= tol);
    CHECK((y.row(0) - y.row(2)).cwiseAbs().maxCoeff() <= tol);

    // Rotation: exact for performer (no geometry) and exact (distances only). For the FLT kinds
    // the RPE is a Monte-Carlo estimate from R random frequencies, so rotations change the
    // prediction by an amount that shrinks like 1/sqrt(R): measured for R = 8 and R = 128.
    const auto sd = rotation_sensitivity(model, m, 16, 1);
    REQUIRE(sd.size() == 2);
    if (kind == AttentionKind::performer || kind == AttentionKind::exact) {
      for (double v : sd) CHECK(v <= 1e-5 * (1 + y.cwiseAbs().maxCoeff()));
    } else if (kind == AttentionKind::near_far) {
      // The near field is exact and the far-field design integrates the mask's plane waves
      // exactly at these distances: only float rounding remains.
      for (double v : sd) CHECK(v <= 1e-5 * (1 + y.cwiseAbs().maxCoeff()));
    } else {
      // The Gaussian proposal: its RPE estimate dominates the rotation dependence. (With the
      // default spectrum proposal the RPE part is already accurate at R = 8 and the remaining
      // dependence comes from the Performer features of the rotated RPE features, which more
      // frequencies do not reduce.)
      auto cfg = tiny_config(kind);
      cfg.proposal = attn::ProposalKind::gaussian;
      cfg.num_frequencies = 8;
      MoleculeModel<float> few(cfg);
      cfg.num_frequencies = 128;
      MoleculeModel<float> many(cfg);
      const auto sd_few = rotation_sensitivity(few, m, 16, 1);
      const auto sd_many = rotation_sensitivity(many, m, 16, 1);
      for (std::size_t t = 0; t < 2; ++t) {
        INFO("target " << t << " rotation std R=8: " << sd_few[t] << ", R=128: " << sd_many[t]);
        CHECK(sd_many[t] > 0.0);
        CHECK(sd_many[t] < 0.6 * sd_few[t]);
      }
    }
  }
}

TEST_CASE("molecule model: reference energies and normalisation recover synthetic values", "[models]") {
  // E = sum over atoms of per-element energies + a small molecule-dependent part.
  const double e_ref[] = {0, -13.6, 0, 0, 0, 0, -1030.0, -1485.0, -2040.0};
  auto mols = random_molecules(std::vector<int>(60, 0), 1);
  Rng rng(8);
  mols.clear();
  Mat<double> labels(60, 2);
  for (int s = 0; s < 60; ++s) {
    Molecule m;
    const int n = 2 + static_cast<int>(rng.below(12));
    double e = 0;
    for (int i = 0; i < n; ++i) {
      const int z = std::array<int, 4>{1, 6, 7, 8}[rng.below(4)];
      m.atomic_numbers.push_back(z);
      m.positions.push_back({1.5 * i, 0, 0});
      e += e_ref[z];
    }
    labels(s, 0) = e;
    labels(s, 1) = 5.0 + 0.1 * s;
    mols.push_back(m);
  }
  const auto batch = MoleculeBatch::from(std::span<const Molecule>(mols));
  auto cfg = tiny_config(AttentionKind::kronecker);
  cfg.use_charges = false;
  const Normalisation n = fit_normalisation(cfg, batch, labels);
  CHECK(n.elements == std::vector<std::int32_t>{1, 6, 7, 8});
  for (int z : {1, 6, 7, 8}) CHECK(n.reference(0, z) == Approx(e_ref[z]).margin(1e-8));
  CHECK(n.reference.row(1).cwiseAbs().maxCoeff() == 0.0);  // intensive: no reference energies
  CHECK(std::abs(n.mean[0]) < 1e-8);
  CHECK(n.mean[1] == Approx(5.0 + 0.1 * 29.5));

  // Normalise / denormalise are inverses; a fresh model's outputs map through them.
  MoleculeModel<double> model(cfg);
  model.set_normalisation(n);
  const Mat<double> z = model.normalise_labels(batch, labels);
  CHECK((model.denormalise(batch, z) - labels).cwiseAbs().maxCoeff() <= 1e-9 * 2040 * 14);
  const double sd1 = std::sqrt((z.col(1).array() - z.col(1).mean()).square().mean());
  CHECK(sd1 == Approx(1.0).epsilon(1e-9));

  // The plain least-squares helper with a noisy, over-determined system.
  Mat<double> counts(40, 3);
  Vec<double> y(40);
  Rng r2(2);
  for (Index i = 0; i < 40; ++i) {
    for (Index e = 0; e < 3; ++e) counts(i, e) = static_cast<double>(r2.below(6));
    y(i) = counts(i, 0) * 2.0 - counts(i, 1) * 7.0 + counts(i, 2) * 0.5 + 1e-6 * r2.normal();
  }
  Index rank = 0;
  const Vec<double> r = fit_reference_energies(counts, y, &rank);
  CHECK(rank == 3);
  CHECK(r(0) == Approx(2.0).margin(1e-5));
  CHECK(r(1) == Approx(-7.0).margin(1e-5));
  CHECK(r(2) == Approx(0.5).margin(1e-5));

  // Conformations of one molecule (ethanol: 6 H, 2 C, 1 O, as in rMD17): every row the same
  // composition, rank 1. The minimum-norm solution is proportional to the composition, r =
  // c mean(y) / |c|^2; at 800 rows Eigen's default rank threshold took rounding for two more
  // directions and returned values of +-1e11.
  for (const Index rows : {200, 800, 1000}) {
    Mat<double> same(rows, 3);
    Vec<double> energies(rows);
    Rng r3(3);
    for (Index i = 0; i < rows; ++i) {
      same.row(i) << 6.0, 2.0, 1.0;
      energies(i) = -4209.0 + 0.14 * r3.normal();
    }
    const Vec<double> ethanol = fit_reference_energies(same, energies, &rank);
    INFO(rows << " rows");
    CHECK(rank == 1);
    const double k = energies.mean() / 41.0;
    CHECK(ethanol(0) == Approx(6 * k).epsilon(1e-9));
    CHECK(ethanol(1) == Approx(2 * k).epsilon(1e-9));
    CHECK(ethanol(2) == Approx(k).epsilon(1e-9));
  }
}

TEST_CASE("molecule model: unknown elements and empty or single-atom molecules", "[models]") {
  auto cfg = tiny_config(AttentionKind::kronecker);
  cfg.max_z = 86;
  MoleculeModel<float> model(cfg);
  auto mols = random_molecules({5, 6, 7}, 3);
  const auto train = MoleculeBatch::from(std::span<const Molecule>(mols));
  Mat<double> labels(3, 2);
  labels << -10, 1, -12, 2, -14, 3;
  model.set_normalisation(fit_normalisation(cfg, train, labels));
  REQUIRE(model.supports_element(6));
  REQUIRE_FALSE(model.supports_element(16));

  Molecule bad = mols[0];
  bad.atomic_numbers[2] = 16;  // sulfur, never seen
  const std::vector<Molecule> with_bad{mols[1], bad};
  try {
    model.predict(MoleculeBatch::from(std::span<const Molecule>(with_bad)));
    FAIL("an unknown element was accepted");
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    CHECK(what.find("molecule 1") != std::string::npos);
    CHECK(what.find("atom 3") != std::string::npos);
    CHECK(what.find("Z=16") != std::string::npos);
  }
  REQUIRE(model.unsupported_reason(bad).has_value());
  CHECK_FALSE(model.unsupported_reason(mols[0]).has_value());

  Molecule empty;
  const std::vector<Molecule> with_empty{mols[0], empty};
  CHECK_THROWS_AS(MoleculeBatch::from(std::span<const Molecule>(with_empty)), InvalidArgument);
  CHECK(model.unsupported_reason(empty).has_value());
  Molecule nan = mols[0];
  nan.positions[0][1] = std::nan("");
  const std::vector<Molecule> with_nan{nan};
  CHECK_THROWS_AS(MoleculeBatch::from(std::span<const Molecule>(with_nan)), InvalidArgument);

  Molecule single;
  single.atomic_numbers = {8};
  single.positions = {{0.1, 0.2, 0.3}};
  const std::vector<Molecule> one{single};
  const Mat<double> y = model.predict(MoleculeBatch::from(std::span<const Molecule>(one)));
  CHECK(y.allFinite());
}

TEST_CASE("molecule model: deterministic for a seed and across thread counts", "[models]") {
  const auto mols = random_molecules({14, 3, 20, 9, 1, 17}, 42);
  const auto batch = MoleculeBatch::from(std::span<const Molecule>(mols));
  for (AttentionKind kind : kAllKinds) {
    INFO("attention " << to_string(kind));
    auto cfg = tiny_config(kind);
    auto run = [&](int threads, std::uint64_t seed, Mat<float>& out, std::vector<float>& grads,
                   Mat<float>& dr) {
      cfg.seed = seed;
      MoleculeModel<float> model(cfg);
      omp_set_num_threads(threads);
      ModelCache<float> cache;
      out = model.forward(batch, cache);
      model.parameters().zero_grad();
      model.backward(batch, cache, Mat<float>::Ones(out.rows(), out.cols()), &dr);
      grads.assign(model.parameters().grads().begin(), model.parameters().grads().end());
    };
    const int saved = omp_get_max_threads();
    Mat<float> o1, o2, o3, o4, r1, r2, r3, r4;
    std::vector<float> g1, g2, g3, g4;
    run(1, 5, o1, g1, r1);
    run(2, 5, o2, g2, r2);
    run(2, 5, o3, g3, r3);
    run(2, 6, o4, g4, r4);
    omp_set_num_threads(saved);
    // Fixed-order reductions: bitwise equal across thread counts (stronger than required).
    CHECK((o1.array() == o2.array()).all());
    CHECK(g1 == g2);
    CHECK((r1.array() == r2.array()).all());
    CHECK((o2.array() == o3.array()).all());
    CHECK(g2 == g3);
    CHECK((o3.array() != o4.array()).any());  // the seed matters
  }
}

TEST_CASE("molecule model: configuration strings and array export round trip", "[models]") {
  auto cfg = tiny_config(AttentionKind::bias);
  cfg.targets = {{"U0", "eV", true}, {"homo", "eV", false}, {"Cv", "cal/(mol K)", true}};
  cfg.proposal_scale = 0.7;
  const auto kv = config_to_strings(cfg);
  std::map<std::string, std::string> m(kv.begin(), kv.end());
  const ModelConfig back = config_from_strings(m);
  CHECK(config_to_strings(back) == kv);
  CHECK(back.targets[1].extensive == false);
  CHECK(back.targets[2].unit == "cal/(mol K)");
  // (Values swapped in rather than assigned from literals: g++ 12 emits a false -Wrestrict.)
  auto with = [&](const std::string& key, std::string value) {
    auto copy = m;
    copy[key].swap(value);
    return copy;
  };
  CHECK_THROWS_AS(config_from_strings(with("widht", std::string(1, '3'))), ConfigError);
  auto hyphen = with("mlp-hidden", std::string("24"));
  CHECK_THROWS_AS(config_from_strings(hyphen), ConfigError);  // mlp_hidden given twice
  hyphen.erase("mlp_hidden");
  CHECK(config_from_strings(hyphen).mlp_hidden == 24);
  CHECK_THROWS_AS(config_from_strings(with("heads", std::string(1, '3'))), ConfigError);  // 16 % 3
  CHECK_THROWS_AS(config_from_strings(with("attention", std::string("softmax"))), ConfigError);

  for (AttentionKind kind : kAllKinds) {
    INFO("attention " << to_string(kind));
    MoleculeModel<float> a(tiny_config(kind, 1));
    Rng rng(5);
    for (float& p : a.parameters().values()) p += static_cast<float>(0.01 * rng.normal());
    a.begin_step(3);
    MoleculeModel<float> b(tiny_config(kind, 2));
    auto arrays = a.export_arrays();
    b.import_arrays(arrays);
    const auto mols = random_molecules({6, 8}, 9);
    const auto batch = MoleculeBatch::from(std::span<const Molecule>(mols));
    const Mat<double> ya = a.predict(batch), yb = b.predict(batch);
    CHECK((ya.array() == yb.array()).all());
    // Shape mismatch and missing arrays are rejected.
    auto broken = arrays;
    broken[0].shape[0] += 1;
    broken[0].values.resize(broken[0].values.size() + broken[0].shape[1]);
    CHECK_THROWS_AS(b.import_arrays(broken), InvalidArgument);
    broken = arrays;
    broken.pop_back();
    CHECK_THROWS_AS(b.import_arrays(broken), InvalidArgument);
  }
}

TEST_CASE("molecule model: overfits 20 real QM9 molecules with AdamW", "[models]") {
  const auto records = read_qm9(37, 20);
  std::vector<Molecule> mols;
  Mat<double> labels(20, 2);
  for (std::size_t i = 0; i < records.size(); ++i) {
    mols.push_back(records[i].molecule);
    labels(static_cast<Index>(i), 0) = records[i].u0_ev;
    labels(static_cast<Index>(i), 1) = records[i].gap_ev;
  }
  const auto batch = MoleculeBatch::from(std::span<const Molecule>(mols));
  ModelConfig cfg;
  cfg.targets = {TargetSpec{std::string("U0"), std::string("eV"), true},
                 TargetSpec{std::string("gap"), std::string("eV"), false}};
  cfg.width = 32;
  cfg.heads = 4;
  cfg.blocks = 2;
  cfg.mlp_hidden = 64;
  cfg.head_hidden = 32;
  cfg.num_features = 8;
  cfg.num_frequencies = 8;
  cfg.max_z = 9;
  cfg.seed = 3;
  MoleculeModel<float> model(cfg);
  model.set_normalisation(fit_normalisation(cfg, batch, labels));
  const Mat<float> target = model.normalise_labels(batch, labels).cast<float>();
  AdamW<float> opt(model.parameters().size(), AdamWConfig{0.9, 0.999, 1e-8, 0.0});
  auto mse = [&](const Mat<float>& out) { return static_cast<double>((out - target).squaredNorm()) / static_cast<double>(out.size()); };
  const double mae_before = (model.predict(batch).col(0) - labels.col(0)).cwiseAbs().mean();
  // One thread: 120 small steps; OpenMP barriers on a busy 2-core machine only add waiting.
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  double first = 0, last = 0;
  for (int step = 0; step < 120; ++step) {
    ModelCache<float> cache;
    const Mat<float> out = model.forward(batch, cache);
    const double l = mse(out);
    if (step == 0) first = l;
    last = l;
    model.parameters().zero_grad();
    const Mat<float> dout = (out - target) * (2.0f / static_cast<float>(out.size()));
    model.backward(batch, cache, dout);
    opt.step(model.parameters(), 3e-3);
  }
  omp_set_num_threads(saved_threads);
  INFO("normalised MSE: first " << first << " last " << last);
  CHECK(last < first / 50);
  // In physical units the U0 error is far below the spread of the labels.
  const Mat<double> pred = model.predict(batch);
  const double mae_u0 = (pred.col(0) - labels.col(0)).cwiseAbs().mean();
  INFO("U0 training MAE " << mae_u0 << " eV, before training " << mae_before << " eV");
  CHECK(mae_u0 < mae_before / 10);
}

TEST_CASE("molecule model: save and load a .flt model file", "[models]") {
  auto cfg = tiny_config(AttentionKind::bias, 4);
  cfg.targets = {TargetSpec{std::string("U0"), std::string("eV"), true},
                 TargetSpec{std::string("Cv"), std::string("cal/(mol K)"), true}};
  MoleculeModel<float> model(cfg);
  const auto mols = random_molecules({7, 3, 10}, 13);
  const auto batch = MoleculeBatch::from(std::span<const Molecule>(mols));
  Mat<double> labels(3, 2);
  labels << -100, 20, -40, 10, -150, 30;
  model.set_normalisation(fit_normalisation(cfg, batch, labels));
  const auto dir = std::filesystem::temp_directory_path() /
                   ("flt-models-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / "model.flt";
  save_model(path, model, {{"seed", "4"}, {"data_fingerprint", "fnv1a64:0123456789abcdef"}});
  std::map<std::string, std::string> meta;
  const auto loaded = load_model(path, &meta);
  CHECK(meta.at("training.data_fingerprint") == "fnv1a64:0123456789abcdef");
  CHECK(meta.at("training.seed") == "4");
  CHECK(meta.at("config.width") == std::to_string(cfg.width));
  CHECK(config_to_strings(loaded->config()) == config_to_strings(cfg));
  CHECK(loaded->normalisation().elements == model.normalisation().elements);
  const Mat<double> a = model.predict(batch), b = loaded->predict(batch);
  CHECK((a.array() == b.array()).all());

  // A configuration that disagrees with the tensors, a missing tensor, a foreign kind.
  auto file = to_model_file(model);
  file.set_metadata("config.width", "32");
  CHECK_THROWS_WITH(from_model_file<float>(file), Catch::Contains("inconsistent model arrays"));
  io::ModelFile partial("flt-model");
  const auto full = to_model_file(model);
  for (const auto& [k, v] : full.all_metadata()) partial.set_metadata(k, v);
  bool skipped = false;
  for (const auto& [name, t] : full.tensors()) {
    if (!skipped && name.rfind("param.", 0) == 0) {
      skipped = true;
      continue;
    }
    partial.set_tensor(name, t);
  }
  CHECK_THROWS_AS(from_model_file<float>(partial), ModelFileError);
  // A token model's file (flt image / flt seq) and a file without any configuration.
  auto foreign = to_model_file(model);
  foreign.set_metadata("model.kind", "flt-token-model");
  CHECK_THROWS_WITH(from_model_file<float>(foreign), Catch::Contains("not a molecule model"));
  io::ModelFile bare("flt-model");
  for (const auto& [name, t] : full.tensors()) bare.set_tensor(name, t);
  CHECK_THROWS_WITH(from_model_file<float>(bare), Catch::Contains("no model configuration"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("molecule model: forces are minus the gradient of the predicted energy, rotate with the molecule and sum to zero",
          "[models][forces]") {
  for (AttentionKind kind : {AttentionKind::near_far, AttentionKind::exact, AttentionKind::bias}) {
    INFO("attention " << to_string(kind));
    MoleculeModel<double> model(tiny_config(kind));
    Normalisation norm = model.normalisation();
    norm.scale[0] = 2.5;  // dE/dr = scale dout/dr: a wrong factor fails the comparison below
    norm.mean[0] = -0.3;
    model.set_normalisation(norm);
    std::vector<Molecule> mols = random_molecules({7, 11}, 5);
    using test_support::batch_of;
    Mat<double> forces;
    const Mat<double> y = model.predict_with_forces(batch_of(mols), 0, forces);
    REQUIRE(forces.rows() == 18);
    REQUIRE(forces.cols() == 3);
    CHECK((y - model.predict(batch_of(mols))).cwiseAbs().maxCoeff() == 0.0);
    const double fmax = forces.cwiseAbs().maxCoeff();
    REQUIRE(fmax > 1e-3);  // a model whose energy ignores geometry would pass trivially

    // Central differences of the predicted energy (double precision throughout).
    const double worst = test_support::worst_force_error(model, mols, forces, 3e-5);
    INFO("max |F + dE/dr (central differences)| = " << worst << ", max |F| = " << fmax);
    CHECK(worst <= 1e-6 * (1 + fmax));

    // No net force on an isolated molecule (translation invariance).
    CHECK(forces.topRows(7).colwise().sum().cwiseAbs().maxCoeff() <= 1e-10 * (1 + fmax));
    CHECK(forces.bottomRows(11).colwise().sum().cwiseAbs().maxCoeff() <= 1e-10 * (1 + fmax));

    // Rotating the molecule rotates its forces: F(R r) = R F(r) (rows: F R^T).
    Rng rng(17);
    const Eigen::Matrix3d rot = random_rotation(rng);
    std::vector<Molecule> rotated = mols;
    for (auto& m : rotated)
      for (auto& p : m.positions) {
        const Eigen::Vector3d q = rot * Eigen::Vector3d(p[0], p[1], p[2]);
        p = {q[0], q[1], q[2]};
      }
    Mat<double> rotated_forces;
    model.predict_with_forces(batch_of(rotated), 0, rotated_forces);
    const double tol = kind == AttentionKind::bias ? 0.5 : 1e-6;  // bias: random-feature RPE
    CHECK((rotated_forces - forces * rot.transpose()).cwiseAbs().maxCoeff() <= tol * (1 + fmax));

    // An intensive target is not an energy.
    CHECK_THROWS_WITH(model.predict_with_forces(batch_of(mols), 1, forces),
                      Catch::Contains("extensive"));
  }
}

TEST_CASE("molecule model: the far field's kept pair terms give the parameter gradients bitwise",
          "[models]") {
  // ModelCache::keep_far_pair_terms (the default): each block's far field keeps its near-pair
  // terms and a backward without coordinate gradients reads them; off: none kept, computed again.
  auto cfg = tiny_config(AttentionKind::near_far);
  cfg.blocks = 2;
  MoleculeModel<double> model(cfg);
  Rng rng(5);
  for (double& p : model.parameters().values()) p += 0.05 * rng.normal();
  const auto mols = random_molecules({9, 14, 6}, 23);
  const auto batch = MoleculeBatch::from(std::span<const Molecule>(mols));
  const Mat<double> dout = Mat<double>::Ones(3, 2);
  auto gradients = [&](ModelCache<double>& cache) {
    model.parameters().zero_grad();
    model.backward(batch, cache, dout);
    return std::vector<double>(model.parameters().grads().begin(), model.parameters().grads().end());
  };
  ModelCache<double> kept, computed;
  computed.keep_far_pair_terms = false;
  CHECK(model.forward(batch, kept) == model.forward(batch, computed));
  REQUIRE(kept.blocks.size() == 2);
  for (std::size_t b = 0; b < 2; ++b) {
    CHECK_FALSE(kept.blocks[b].far.pair_terms.empty());
    CHECK(computed.blocks[b].far.pair_terms.empty());
  }
  const std::vector<double> from_kept = gradients(kept), from_computed = gradients(computed);
  CHECK(from_kept == from_computed);
  // the backward reads them: kept terms scaled by 1.01 move the gradients
  for (auto& bc : kept.blocks)
    for (auto& terms : bc.far.pair_terms) terms *= 1.01;
  CHECK(gradients(kept) != from_computed);
}

TEST_CASE("molecule model: recomputing the blocks in backward gives bitwise the same gradients",
          "[models][forces]") {
  // ModelCache::recompute_blocks keeps only each block's inputs and recomputes its cache inside
  // backward: outputs, parameter gradients and coordinate gradients must be bitwise those of the
  // stored caches (three blocks, vectors, far field, a cutoff shorter than the molecules).
  auto check = [&]<class T>(MoleculeModel<T>&& model) {
    Rng rng(9);
    for (T& p : model.parameters().values()) p += static_cast<T>(0.05 * rng.normal());
    const auto mols = random_molecules({9, 14, 6}, 23);
    const auto batch = MoleculeBatch::from(std::span<const Molecule>(mols));
    const Mat<T> dout = Mat<T>::Ones(3, 2);
    ModelCache<T> stored, recomputed;
    recomputed.recompute_blocks = true;
    const Mat<T> y_stored = model.forward(batch, stored);
    model.parameters().zero_grad();
    Mat<T> dr_stored;
    model.backward(batch, stored, dout, &dr_stored);
    const std::vector<T> grads_stored(model.parameters().grads().begin(), model.parameters().grads().end());
    const Mat<T> y_recomputed = model.forward(batch, recomputed);
    for (const auto& bc : recomputed.blocks) REQUIRE(bc.q.size() == 0);  // nothing kept per block
    REQUIRE(recomputed.block_x.size() == static_cast<std::size_t>(model.config().blocks));
    model.parameters().zero_grad();
    Mat<T> dr_recomputed;
    model.backward(batch, recomputed, dout, &dr_recomputed);
    const std::vector<T> grads_recomputed(model.parameters().grads().begin(), model.parameters().grads().end());
    CHECK(y_recomputed == y_stored);
    CHECK(dr_recomputed == dr_stored);
    REQUIRE(dr_stored.cwiseAbs().maxCoeff() > 0);
    CHECK(grads_recomputed == grads_stored);
  };
  auto cfg = tiny_config(AttentionKind::near_far);
  cfg.blocks = 3;
  for (bool use_float : {false, true}) {
    INFO((use_float ? "float" : "double"));
    if (use_float) check(MoleculeModel<float>(cfg));
    else check(MoleculeModel<double>(cfg));
  }
  {
    // The default model's settings (width 128, 8 heads, 3 blocks, 5 A cutoff, product-grid far
    // field), in float as users run it.
    INFO("default configuration, float");
    ModelConfig defaults;
    defaults.targets = {{"E", "eV", true}, {"gap", "eV", false}};
    check(MoleculeModel<float>(defaults));
  }
  // predict_with_forces recomputes above recompute_atoms atoms: the same forces as the stored
  // caches (a jittered lattice 2 A apart, about 6 neighbours per atom, so 20,001 atoms cost little).
  auto big_cfg = tiny_config(AttentionKind::near_far);
  big_cfg.width = 8;
  big_cfg.heads = 1;
  big_cfg.far_field = FarField::none;
  MoleculeModel<float> model(big_cfg);
  Rng rng(3);
  Molecule lattice;
  const Index n = MoleculeModel<float>::recompute_atoms + 1;
  for (Index i = 0; i < n; ++i) {
    lattice.atomic_numbers.push_back(i % 3 == 0 ? 8 : 1);
    lattice.positions.push_back({2.0 * static_cast<double>(i % 30) + rng.normal(0, 0.1),
                                 2.0 * static_cast<double>((i / 30) % 30) + rng.normal(0, 0.1),
                                 2.0 * static_cast<double>(i / 900) + rng.normal(0, 0.1)});
    lattice.formal_charges.push_back(0);
  }
  lattice = in_cell_order(lattice, big_cfg.cutoff);  // the order predict_with_forces runs it in
  const auto batch = MoleculeBatch::from(std::span<const Molecule>(&lattice, 1));
  REQUIRE(model.recomputes_blocks_for(batch));
  Molecule smaller = lattice;
  smaller.atomic_numbers.pop_back();
  smaller.positions.pop_back();
  smaller.formal_charges.pop_back();
  const auto smaller_batch = MoleculeBatch::from(std::span<const Molecule>(&smaller, 1));
  CHECK_FALSE(model.recomputes_blocks_for(smaller_batch));
  {
    // At recompute_atoms atoms the updates keep their full caches.
    ModelCache<float> full;
    model.forward(smaller_batch, full);
    CHECK(full.blocks[1].update.compact_rows == 0);
    CHECK(full.blocks[1].update.U.rows() == MoleculeModel<float>::recompute_atoms);
  }
  Mat<double> forces;
  model.predict_with_forces(batch, 0, forces);
  ModelCache<float> cache;
  model.forward(batch, cache);
  REQUIRE(cache.blocks[1].q.size() != 0);  // the stored path
  // Above recompute_atoms atoms the updates' caches are compact by default.
  CHECK(cache.blocks[1].update.compact_rows == MoleculeModel<float>::update_block_rows);
  model.parameters().zero_grad();
  Mat<float> dout = Mat<float>::Zero(1, 2), dr;
  dout(0, 0) = 1.0f;
  model.backward(batch, cache, dout, &dr);
  const Mat<double> want = dr.cast<double>() * -model.normalisation().scale[0];
  REQUIRE(want.cwiseAbs().maxCoeff() > 0);
  CHECK(forces == want);
  {
    // The compact updates at their real block size (3072 rows: seven blocks, the last partial)
    // against the full caches on the same 20,001 atoms: the same outputs and coordinate gradients
    // bitwise, parameter gradients to float rounding.
    const std::vector<float> compact(model.parameters().grads().begin(), model.parameters().grads().end());
    ModelCache<float> full;
    full.update_rows = 0;
    const Mat<float> y_full = model.forward(batch, full);
    CHECK(full.blocks[1].update.compact_rows == 0);
    CHECK(y_full == model.forward(batch, cache));
    model.parameters().zero_grad();
    Mat<float> dr_full;
    model.backward(batch, full, dout, &dr_full);
    CHECK(dr_full == dr);
    double scale = 0, worst = 0;
    const auto grads = model.parameters().grads();
    for (std::size_t i = 0; i < compact.size(); ++i) {
      scale = std::max(scale, std::abs(static_cast<double>(grads[i])));
      worst = std::max(worst, std::abs(static_cast<double>(grads[i]) - static_cast<double>(compact[i])));
    }
    REQUIRE(scale > 0);
    INFO("largest gradient difference " << worst << " of a largest gradient " << scale);
    CHECK(worst <= 1e-5 * scale);
  }
}

TEST_CASE("molecule model: compact equivariant updates give the same outputs and gradients",
          "[models][forces]") {
  // ModelCache::update_rows > 0 keeps only each update's inputs and recomputes the update in
  // blocks of rows inside backward: outputs and coordinate gradients those of the full caches
  // (bitwise in float, whose products compute each row alone; in double Eigen's products sum a
  // row differently in a 7-row block than in the full batch, so there to rounding: the model's
  // 3072-row blocks align with the double kernels' row chunks), parameter gradients to rounding
  // (summed block by block), and bitwise the same for any thread count. Blocks of 7 rows over 29
  // atoms: four full blocks and a partial one, a block boundary inside each molecule.
  auto run = [&]<class T>(MoleculeModel<T>& model, Index rows, int threads, Mat<T>& y, Mat<T>& dr) {
    const auto mols = random_molecules({9, 14, 6}, 23);
    const auto batch = MoleculeBatch::from(std::span<const Molecule>(mols));
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    ModelCache<T> cache;
    cache.update_rows = rows;
    y = model.forward(batch, cache);
    for (const auto& bc : cache.blocks) {
      REQUIRE(bc.update.compact_rows == rows);
      REQUIRE((bc.update.U.size() == 0) == (rows > 0));  // the compact cache keeps no U
    }
    model.parameters().zero_grad();
    model.backward(batch, cache, Mat<T>::Ones(3, 2), &dr);
    omp_set_num_threads(saved);
    return std::vector<T>(model.parameters().grads().begin(), model.parameters().grads().end());
  };
  auto check = [&]<class T>(MoleculeModel<T>&& model, double tolerance) {
    Rng rng(9);
    for (T& p : model.parameters().values()) p += static_cast<T>(0.05 * rng.normal());
    Mat<T> y_full, dr_full, y_compact, dr_compact, y_one, dr_one;
    const std::vector<T> full = run(model, 0, 2, y_full, dr_full);
    const std::vector<T> compact = run(model, 7, 2, y_compact, dr_compact);
    const std::vector<T> one_thread = run(model, 7, 1, y_one, dr_one);
    if constexpr (std::is_same_v<T, float>) {
      CHECK(y_compact == y_full);
      CHECK(dr_compact == dr_full);
    } else {
      CHECK((y_compact - y_full).cwiseAbs().maxCoeff() <= tolerance * y_full.cwiseAbs().maxCoeff());
      CHECK((dr_compact - dr_full).cwiseAbs().maxCoeff() <= tolerance * dr_full.cwiseAbs().maxCoeff());
    }
    REQUIRE(dr_full.cwiseAbs().maxCoeff() > 0);
    double scale = 0, worst = 0;
    for (std::size_t i = 0; i < full.size(); ++i) {
      scale = std::max(scale, std::abs(static_cast<double>(full[i])));
      worst = std::max(worst, std::abs(static_cast<double>(compact[i]) - static_cast<double>(full[i])));
    }
    REQUIRE(scale > 0);
    INFO("largest gradient difference " << worst << " of a largest gradient " << scale);
    CHECK(worst <= tolerance * scale);
    CHECK(one_thread == compact);
    CHECK(y_one == y_compact);
    CHECK(dr_one == dr_compact);
  };
  auto cfg = tiny_config(AttentionKind::near_far);
  cfg.blocks = 3;
  check(MoleculeModel<double>(cfg), 1e-13);
  check(MoleculeModel<float>(cfg), 1e-5);
  {
    INFO("default configuration, float");
    ModelConfig defaults;
    defaults.targets = {{"E", "eV", true}, {"gap", "eV", false}};
    check(MoleculeModel<float>(defaults), 1e-5);
  }
}

TEST_CASE("molecule model: per-atom contributions sum to the prediction, carry the reference energies and are rotation invariant",
          "[models][contributions]") {
  for (AttentionKind kind : {AttentionKind::near_far, AttentionKind::exact}) {
    INFO("attention " << to_string(kind));
    for (bool double_precision : {true, false}) {
      INFO((double_precision ? "double" : "float"));
      const auto check = [&](auto& model) {
        Normalisation norm = model.normalisation();
        norm.scale[0] = 2.5;  // c = e[Z] + m + sigma y: a wrong factor or term breaks the sum
        norm.mean[0] = -0.3;
        norm.reference(0, 1) = -13.6;
        norm.reference(0, 6) = -1029.8;
        norm.reference(0, 7) = -1485.3;
        norm.reference(0, 8) = -2042.6;
        model.set_normalisation(norm);
        std::vector<Molecule> mols = random_molecules({7, 11, 1}, 9);
        const auto batch_of = [](const std::vector<Molecule>& m) {
          return MoleculeBatch::from(std::span<const Molecule>(m));
        };
        const MoleculeBatch batch = batch_of(mols);
        Mat<double> c;
        const Mat<double> y = model.predict(batch, &c);
        REQUIRE(c.rows() == 19);
        REQUIRE(c.cols() == 2);
        CHECK((y - model.predict(batch)).cwiseAbs().maxCoeff() == 0.0);
        // Float rounds the pooled sum to float once (relative 6e-8 of a ~1e4 eV total).
        const double tol = double_precision ? 1e-9 : 5e-3;
        for (Index s = 0; s < 3; ++s) {
          const double sum = c.middleRows(batch.index.begin(s), batch.index.size(s)).col(0).sum();
          CHECK(std::abs(sum - y(s, 0)) <= tol);
        }
        // Each atom carries its own element's reference energy (not an even share of the total):
        // the network part c - e[Z] - m = sigma y_n is small next to the reference energies.
        for (Index i = 0; i < c.rows(); ++i)
          CHECK(std::abs(c(i, 0) - norm.reference(0, batch.atomic_numbers[static_cast<std::size_t>(i)]) -
                         norm.mean[0]) < 50.0);
        // The intensive target (a mean) has no per-atom decomposition.
        CHECK(c.col(1).array().isNaN().all());
        // Forces and contributions from one pass agree with the separate calls.
        Mat<double> forces, c_with_forces;
        model.predict_with_forces(batch, 0, forces, &c_with_forces);
        CHECK((c_with_forces - c).col(0).cwiseAbs().maxCoeff() == 0.0);

        // Rotation invariance per atom (the near_far and exact kinds are exactly invariant).
        Rng rng(23);
        const Eigen::Matrix3d rot = random_rotation(rng);
        std::vector<Molecule> rotated = mols;
        for (auto& m : rotated)
          for (auto& p : m.positions) {
            const Eigen::Vector3d q = rot * Eigen::Vector3d(p[0], p[1], p[2]);
            p = {q[0], q[1], q[2]};
          }
        Mat<double> c_rotated;
        model.predict(batch_of(rotated), &c_rotated);
        const double spread = (c.col(0).array() - c.col(0).mean()).abs().maxCoeff();
        REQUIRE(spread > 1.0);
        CHECK((c_rotated - c).col(0).cwiseAbs().maxCoeff() <= (double_precision ? 1e-9 : 2e-3));
      };
      if (double_precision) {
        MoleculeModel<double> model(tiny_config(kind));
        check(model);
      } else {
        MoleculeModel<float> model(tiny_config(kind));
        check(model);
      }
    }
  }
}

TEST_CASE("molecule model: large structures are predicted in cell order, per-atom outputs in the input's order",
          "[models][order]") {
  // A jittered lattice of 600 atoms (above spatial_order_atoms) in shuffled order: predict and
  // predict_with_forces must give bitwise what forward and backward give on the cell-ordered
  // atoms, with forces and contributions mapped back to the input's rows; and the same values, to
  // rounding, as the lattice in its own order.
  auto cfg = tiny_config(AttentionKind::near_far);
  MoleculeModel<double> model(cfg);
  const Index n = 600;
  REQUIRE(n >= MoleculeModel<double>::spatial_order_atoms);
  Rng rng(5);
  Molecule lattice;
  for (Index i = 0; i < n; ++i) {
    lattice.atomic_numbers.push_back(i % 3 == 0 ? 8 : (i % 3 == 1 ? 6 : 1));
    lattice.positions.push_back({1.5 * static_cast<double>(i % 10) + rng.normal(0, 0.1),
                                 1.5 * static_cast<double>((i / 10) % 10) + rng.normal(0, 0.1),
                                 1.5 * static_cast<double>(i / 100) + rng.normal(0, 0.1)});
    lattice.formal_charges.push_back(static_cast<int>(i % 3) - 1);
  }
  std::vector<Index> shuffle(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) shuffle[static_cast<std::size_t>(i)] = i;
  for (Index i = n - 1; i > 0; --i)
    std::swap(shuffle[static_cast<std::size_t>(i)], shuffle[rng.below(static_cast<std::uint64_t>(i + 1))]);
  const Molecule shuffled = renumbered(lattice, shuffle);  // atom i is atom shuffle[i] of the lattice
  const auto batch_of = [](const Molecule& m) { return MoleculeBatch::from(std::span<const Molecule>(&m, 1)); };

  Mat<double> forces, c, c_predict;
  const Mat<double> y = model.predict_with_forces(batch_of(shuffled), 0, forces, &c);
  const Mat<double> y_predict = model.predict(batch_of(shuffled), &c_predict);
  CHECK(y_predict == y);
  CHECK(c_predict.col(0) == c.col(0));

  // The reference: forward and backward on the cell-ordered atoms, rows mapped back.
  const std::vector<Index> order = cell_order_of(shuffled, cfg.cutoff);
  bool moved = false;
  for (Index i = 0; i < n; ++i) moved = moved || order[static_cast<std::size_t>(i)] != i;
  REQUIRE(moved);
  const MoleculeBatch sorted_batch = batch_of(renumbered(shuffled, order));
  ModelCache<double> cache;
  const Mat<double> out = model.forward(sorted_batch, cache);
  Mat<double> dout = Mat<double>::Zero(1, 2), dr;
  dout(0, 0) = 1.0;
  model.parameters().zero_grad();
  model.backward(sorted_batch, cache, dout, &dr);
  const Mat<double> f_sorted = -model.normalisation().scale[0] * dr - model.reference_gradient(sorted_batch, 0);
  const Mat<double> c_sorted = model.atom_contributions(sorted_batch, cache);
  CHECK(y == model.denormalise(sorted_batch, out));
  REQUIRE(forces.rows() == n);
  REQUIRE(c.rows() == n);
  double fmax = 0;
  for (Index i = 0; i < n; ++i) {
    const Index from = order[static_cast<std::size_t>(i)];  // sorted row i is input row `from`
    CHECK(forces.row(from) == f_sorted.row(i));
    CHECK(c.row(from).col(0) == c_sorted.row(i).col(0));
    fmax = std::max(fmax, f_sorted.row(i).norm());
  }
  REQUIRE(fmax > 0);

  // The lattice in its own order gives the same values to rounding, rows matched through shuffle.
  Mat<double> forces_lattice, c_lattice;
  const Mat<double> y_lattice = model.predict_with_forces(batch_of(lattice), 0, forces_lattice, &c_lattice);
  CHECK(std::abs(y_lattice(0, 0) - y(0, 0)) <= 1e-9 * std::max(1.0, std::abs(y(0, 0))));
  CHECK(std::abs(y_lattice(0, 1) - y(0, 1)) <= 1e-9 * std::max(1.0, std::abs(y(0, 1))));
  double worst = 0;
  for (Index i = 0; i < n; ++i)
    worst = std::max(worst, (forces.row(i) - forces_lattice.row(shuffle[static_cast<std::size_t>(i)])).norm());
  CHECK(worst <= 1e-9 * fmax);

  // Below spatial_order_atoms nothing is reordered: predict equals forward on the given order.
  Molecule small = shuffled;
  small.atomic_numbers.resize(MoleculeModel<double>::spatial_order_atoms - 1);
  small.positions.resize(small.atomic_numbers.size());
  small.formal_charges.resize(small.atomic_numbers.size());
  ModelCache<double> small_cache;
  const MoleculeBatch small_batch = batch_of(small);
  CHECK(model.predict(small_batch) == model.denormalise(small_batch, model.forward(small_batch, small_cache)));
}

namespace {

std::set<std::string> keys_without_effect(const ModelConfig& c) {
  std::set<std::string> out;
  for (const auto& k : config_keys_without_effect(c)) {
    CHECK_FALSE(k.why.empty());
    out.insert(k.key);
  }
  return out;
}

}  // namespace

TEST_CASE("molecule model: the configuration keys without effect for each kind and setting", "[models][config]") {
  std::set<std::string> all;
  for (const auto& [key, value] : config_to_strings(ModelConfig{})) all.insert(key);
  ModelConfig c;  // near_far, FLT far field on the product grid, no charge energy or three-body
  std::set<std::string> none = keys_without_effect(c);
  for (const auto& key : none) CHECK(all.contains(key));  // config_to_strings names only
  for (const char* key : {"num_features", "num_frequencies", "spectrum", "proposal", "proposal_scale",
                          "init_sigma_min", "init_beta", "kronecker_floor", "exact_rbf", "exact_cutoff",
                          "far_directions", "charge_nodes", "charge_formal", "charge_bond_scale",
                          "three_body_cutoff", "three_body_lmax", "max_charge"})
    CHECK(none.contains(key));
  for (const char* key : {"width", "attention", "cutoff", "radial_nodes", "vectors", "far_field", "far_nodes",
                          "far_design", "far_degree", "far_init", "charge_energy", "three_body", "redraw_features",
                          "use_charges", "seed", "targets"})
    CHECK_FALSE(none.contains(key));

  SECTION("near_far settings") {
    c.far_design = attn::DesignKind::iid;
    CHECK(keys_without_effect(c).contains("far_degree"));
    CHECK_FALSE(keys_without_effect(c).contains("far_directions"));
    c.far_field = FarField::exact;
    CHECK(keys_without_effect(c).contains("far_directions"));
    CHECK(keys_without_effect(c).contains("redraw_features"));
    CHECK_FALSE(keys_without_effect(c).contains("far_init"));
    c.far_field = FarField::none;
    for (const char* key : {"far_nodes", "far_spacing", "far_init", "far_design", "redraw_features"})
      CHECK(keys_without_effect(c).contains(key));
    c.charge_energy = ChargeEnergy::exact;
    c.targets = {{"E", "eV", true}};
    std::set<std::string> charged = keys_without_effect(c);
    CHECK(charged.contains("charge_degree"));
    CHECK(charged.contains("charge_bond_scale"));
    CHECK_FALSE(charged.contains("charge_nodes"));
    CHECK_FALSE(charged.contains("charge_init"));
    c.charge_coulomb = true;
    c.charge_neutral = ChargeNeutral::fragment;
    charged = keys_without_effect(c);
    CHECK(charged.contains("charge_init"));
    CHECK_FALSE(charged.contains("charge_bond_scale"));
    c.three_body = true;
    c.use_charges = true;
    CHECK_FALSE(keys_without_effect(c).contains("three_body_lmax"));
    CHECK_FALSE(keys_without_effect(c).contains("max_charge"));
  }
  SECTION("kronecker and bias") {
    c.attention = AttentionKind::kronecker;
    std::set<std::string> k = keys_without_effect(c);
    for (const char* key : {"cutoff", "radial_nodes", "vectors", "far_field", "far_degree", "charge_energy",
                            "init_beta", "proposal_scale", "exact_rbf"})
      CHECK(k.contains(key));
    for (const char* key : {"num_features", "num_frequencies", "spectrum", "spectrum_components", "proposal",
                            "init_sigma_min", "init_sigma_max", "kronecker_floor", "redraw_features"})
      CHECK_FALSE(k.contains(key));
    c.attention = AttentionKind::bias;
    c.proposal = attn::ProposalKind::gaussian;
    k = keys_without_effect(c);
    CHECK(k.contains("kronecker_floor"));
    CHECK_FALSE(k.contains("init_beta"));
    CHECK_FALSE(k.contains("proposal_scale"));
  }
  SECTION("performer and exact") {
    c.attention = AttentionKind::performer;
    std::set<std::string> p = keys_without_effect(c);
    CHECK_FALSE(p.contains("num_features"));
    CHECK_FALSE(p.contains("redraw_features"));
    for (const char* key : {"num_frequencies", "spectrum", "init_beta", "kronecker_floor", "cutoff", "exact_rbf"})
      CHECK(p.contains(key));
    c.attention = AttentionKind::exact;
    p = keys_without_effect(c);
    CHECK_FALSE(p.contains("exact_rbf"));
    CHECK_FALSE(p.contains("exact_cutoff"));
    for (const char* key : {"num_features", "num_frequencies", "redraw_features", "cutoff", "far_nodes"})
      CHECK(p.contains(key));
  }
}
