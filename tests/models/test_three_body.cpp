// The linear three-body reference (models/three_body.hpp): the descriptors against a readable
// O(N^3) reference written from the equations, invariances, the energy gradient against central
// differences, the ridge fit's leave-one-out error against explicit refits, and the reference
// inside a molecule model (normalisation, forces, contributions, model arrays).
#include "core/dual.hpp"
#include "core/gradcheck.hpp"
#include "core/random.hpp"
#include "models/force_training.hpp"
#include "models/molecule_model.hpp"
#include "models/three_body.hpp"

#include <Eigen/Cholesky>
#include <catch2/catch.hpp>
#include <omp.h>

#include <array>
#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

using namespace flt;
using namespace flt::models;

namespace {

// n atoms of elements {1, 6, 8} in a cube of side `box` Angstrom, no two closer than 0.8 A.
Molecule random_cluster(Rng& rng, int n, double box) {
  Molecule m;
  while (static_cast<int>(m.atomic_numbers.size()) < n) {
    const std::array<double, 3> r{box * rng.uniform(), box * rng.uniform(), box * rng.uniform()};
    bool ok = true;
    for (const auto& q : m.positions)
      if (std::hypot(r[0] - q[0], r[1] - q[1], r[2] - q[2]) < 0.8) ok = false;
    if (!ok) continue;
    m.atomic_numbers.push_back(std::array<int, 3>{1, 6, 8}[rng.below(3)]);
    m.positions.push_back(r);
  }
  return m;
}

ThreeBodyBasis small_basis() {
  ThreeBodyBasis b;
  b.cutoff = 4.0;
  b.radial = 3;
  b.lmax = 3;
  b.elements = {1, 6, 8};
  return b;
}

// The descriptors from the header's equations, every triple of every set (O(N^3)), no
// neighbour list.
Mat<double> reference_features(const ThreeBodyBasis& basis, const MoleculeBatch& batch) {
  const Index P = basis.radial, L = basis.lmax, U = basis.channels(), B = basis.block_size();
  const double rc = basis.cutoff, pi = std::numbers::pi;
  auto element = [&](Index i) {
    for (std::size_t e = 0; e < basis.elements.size(); ++e)
      if (basis.elements[e] == batch.atomic_numbers[static_cast<std::size_t>(i)]) return static_cast<Index>(e);
    return Index{-1};
  };
  auto R = [&](Index p, double r) {  // p = 1..P
    return r < rc ? std::sin(static_cast<double>(p) * pi * r / rc) / r * 0.5 * (1 + std::cos(pi * r / rc)) : 0.0;
  };
  auto legendre = [](Index l, double c) {
    double p0 = 1, p1 = c;
    if (l == 0) return p0;
    for (Index k = 1; k < l; ++k) {
      const double p2 = ((2.0 * static_cast<double>(k) + 1) * c * p1 - static_cast<double>(k) * p0) / (static_cast<double>(k) + 1);
      p0 = p1;
      p1 = p2;
    }
    return p1;
  };
  Mat<double> f = Mat<double>::Zero(batch.num_molecules(), basis.feature_count());
  for (Index s = 0; s < batch.num_molecules(); ++s)
    for (Index i = batch.index.begin(s); i < batch.index.end(s); ++i) {
      const Index block = element(i) * B;
      for (Index j = batch.index.begin(s); j < batch.index.end(s); ++j) {
        if (j == i) continue;
        const Eigen::Vector3d dij = (batch.coords.row(j) - batch.coords.row(i)).transpose();
        for (Index p = 1; p <= P; ++p) f(s, block + element(j) * P + p - 1) += R(p, dij.norm());
        for (Index k = batch.index.begin(s); k < batch.index.end(s); ++k) {
          if (k == i || k == j) continue;
          const Eigen::Vector3d dik = (batch.coords.row(k) - batch.coords.row(i)).transpose();
          const double c = dij.dot(dik) / (dij.norm() * dik.norm());
          for (Index p = 1; p <= P; ++p)
            for (Index q = 1; q <= P; ++q) {
              const Index u = element(j) * P + p - 1, v = element(k) * P + q - 1;
              if (u > v) continue;
              const Index pair = u * U - u * (u - 1) / 2 + (v - u);
              for (Index l = 0; l <= L; ++l)
                f(s, block + U + pair * (L + 1) + l) += R(p, dij.norm()) * R(q, dik.norm()) * legendre(l, c);
            }
        }
      }
    }
  return f;
}

MoleculeBatch batch_of(const std::vector<Molecule>& mols) { return MoleculeBatch::from(std::span<const Molecule>(mols)); }

Mat<double> features_of(const ThreeBodyBasis& basis, const MoleculeBatch& b) {
  return three_body_features(basis, b.index, b.coords, b.atomic_numbers);
}

double max_relative(const Mat<double>& a, const Mat<double>& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(1e-300, b.cwiseAbs().maxCoeff());
}

// max |(E(r + h e_ix) - E(r - h e_ix)) / 2h - gradient(i, x)| over every `stride`-th atom i and x,
// with E the batch's total three-body energy for weights w.
double worst_gradient_error(const ThreeBodyBasis& basis, const MoleculeBatch& batch, const Vec<double>& w,
                            const Mat<double>& gradient, double h, Index stride) {
  auto energy = [&](const MoleculeBatch& b) {
    return three_body_energy(basis, b.index, b.coords, b.atomic_numbers, w, false).per_structure.sum();
  };
  double worst = 0.0;
  for (Index i = 0; i < batch.num_atoms(); i += stride)
    for (Index x = 0; x < 3; ++x) {
      MoleculeBatch plus = batch, minus = batch;
      plus.coords(i, x) += h;
      minus.coords(i, x) -= h;
      worst = std::max(worst, std::abs((energy(plus) - energy(minus)) / (2 * h) - gradient(i, x)));
    }
  return worst;
}

}  // namespace

TEST_CASE("three-body descriptors equal the O(N^3) reference, with and without cells", "[three_body]") {
  Rng rng(11);
  const ThreeBodyBasis basis = small_basis();
  // 12 atoms (pair by pair) and 150 atoms in a 12 A box (cell list, atoms beyond the cutoff).
  const std::vector<Molecule> mols{random_cluster(rng, 12, 4.0), random_cluster(rng, 150, 12.0),
                                   random_cluster(rng, 5, 3.0)};
  const MoleculeBatch batch = batch_of(mols);
  const Mat<double> fast = features_of(basis, batch);
  const Mat<double> ref = reference_features(basis, batch);
  REQUIRE(fast.cols() == 3 * (9 + 9 * 10 / 2 * 4));
  CHECK(max_relative(fast, ref) < 1e-12);
  CHECK(ref.cwiseAbs().maxCoeff() > 1.0);  // not vacuous: the features are populated
}

TEST_CASE("three-body at the rMD17 recipe's basis: reference and gradient on ethanol and a 120-atom cluster",
          "[three_body]") {
  // The basis users train with (cutoff 5 A, 8 radial functions, Legendre degree 3) on the first
  // rMD17 ethanol conformation (datasets/rmd17-ethanol/train.xyz, record 1) and on a cluster large
  // enough for the cell list: descriptors against the O(N^3) reference, dE/dr against central
  // differences.
  ThreeBodyBasis basis;
  basis.cutoff = 5.0;
  basis.radial = 8;
  basis.lmax = 3;
  basis.elements = {1, 6, 8};
  Molecule ethanol;
  ethanol.atomic_numbers = {6, 6, 8, 1, 1, 1, 1, 1, 1};
  ethanol.positions = {{0.40162460, 0.38569419, 0.07944170},   {-0.83259828, 0.63111076, -0.91769057},
                       {0.42898823, -0.92815605, 0.69153642},  {1.38869085, 0.59405355, -0.20570216},
                       {0.17108235, 1.11935194, 0.98236677},   {-0.52877617, 0.17079218, -1.93423021},
                       {-1.61821698, -0.01452388, -0.50901661}, {-0.95146534, 1.69934720, -0.88271390},
                       {-0.13627129, -0.95389655, 1.56093158}};
  Rng rng(19);
  const std::vector<Molecule> mols{ethanol, random_cluster(rng, 120, 10.0)};
  const MoleculeBatch batch = batch_of(mols);
  CHECK(max_relative(features_of(basis, batch), reference_features(basis, batch)) < 1e-12);
  Vec<double> w(basis.feature_count());
  for (Index k = 0; k < w.size(); ++k) w(k) = 0.01 * rng.normal();
  const ThreeBodyEnergy e = three_body_energy(basis, batch.index, batch.coords, batch.atomic_numbers, w, true);
  const double h = 1e-5, scale = e.gradient.cwiseAbs().maxCoeff();
  REQUIRE(scale > 0.0);
  const double worst = worst_gradient_error(basis, batch, w, e.gradient, h, 7);  // every 7th atom
  CHECK(worst < 1e-7 * scale);
}

TEST_CASE("three-body descriptors are invariant under rotation, translation and same-element exchange",
          "[three_body]") {
  Rng rng(3);
  const ThreeBodyBasis basis = small_basis();
  Molecule m = random_cluster(rng, 14, 4.0);
  const Mat<double> base = features_of(basis, batch_of({m}));

  Molecule moved = m;
  const Eigen::Matrix3d rot = random_rotation(rng);
  for (auto& r : moved.positions) {
    const Eigen::Vector3d v = rot * Eigen::Vector3d(r[0], r[1], r[2]) + Eigen::Vector3d(3.1, -2.0, 7.5);
    r = {v(0), v(1), v(2)};
  }
  CHECK(max_relative(features_of(basis, batch_of({moved})), base) < 1e-12);

  // Exchange two atoms of one element (positions and all): the same structure.
  Index a = -1, b = -1;
  for (std::size_t i = 0; i < m.atomic_numbers.size() && b < 0; ++i)
    for (std::size_t j = i + 1; j < m.atomic_numbers.size(); ++j)
      if (m.atomic_numbers[i] == m.atomic_numbers[j]) {
        a = static_cast<Index>(i);
        b = static_cast<Index>(j);
        break;
      }
  REQUIRE(b >= 0);
  Molecule swapped = m;
  std::swap(swapped.positions[static_cast<std::size_t>(a)], swapped.positions[static_cast<std::size_t>(b)]);
  CHECK(max_relative(features_of(basis, batch_of({swapped})), base) < 1e-12);

  // Exchanging the positions of atoms of two elements is another structure: the features see it.
  Index c = -1;
  for (std::size_t i = 0; i < m.atomic_numbers.size(); ++i)
    if (m.atomic_numbers[i] != m.atomic_numbers[static_cast<std::size_t>(a)]) c = static_cast<Index>(i);
  Molecule other = m;
  std::swap(other.positions[static_cast<std::size_t>(a)], other.positions[static_cast<std::size_t>(c)]);
  CHECK(max_relative(features_of(basis, batch_of({other})), base) > 1e-3);
}

TEST_CASE("three-body energy: sums, features . weights, and the gradient against central differences",
          "[three_body]") {
  Rng rng(5);
  const ThreeBodyBasis basis = small_basis();
  // A dense cluster and one whose atoms straddle the cutoff (pairs near r_c enter smoothly).
  const std::vector<Molecule> mols{random_cluster(rng, 10, 3.5), random_cluster(rng, 9, 6.0)};
  const MoleculeBatch batch = batch_of(mols);
  Vec<double> w(basis.feature_count());
  for (Index k = 0; k < w.size(); ++k) w(k) = rng.normal();
  const ThreeBodyEnergy e = three_body_energy(basis, batch.index, batch.coords, batch.atomic_numbers, w, true);
  const Vec<double> from_features = features_of(basis, batch) * w;
  for (Index s = 0; s < 2; ++s) {
    CHECK(e.per_structure(s) == Approx(from_features(s)).epsilon(1e-12));
    CHECK(e.per_atom.segment(batch.index.begin(s), batch.index.size(s)).sum() == Approx(e.per_structure(s)).epsilon(1e-12));
  }
  // dE/dr against (E(r + h) - E(r - h)) / 2h, h = 1e-5: truncation ~h^2 E''' ~ 1e-9 relative.
  const double h = 1e-5;
  const double scale = e.gradient.cwiseAbs().maxCoeff();
  REQUIRE(scale > 1.0);
  const double worst = worst_gradient_error(basis, batch, w, e.gradient, h, 1);
  CHECK(worst < 1e-7 * scale);
  // Translation: the gradient sums to zero.
  CHECK(e.gradient.colwise().sum().cwiseAbs().maxCoeff() < 1e-10 * scale);
}

TEST_CASE("three-body features and energy are bitwise the same for 1 and 2 threads", "[three_body]") {
  Rng rng(8);
  const ThreeBodyBasis basis = small_basis();
  std::vector<Molecule> mols;
  for (int s = 0; s < 9; ++s) mols.push_back(random_cluster(rng, 4 + 3 * s, 5.0));
  const MoleculeBatch batch = batch_of(mols);
  Vec<double> w(basis.feature_count());
  for (Index k = 0; k < w.size(); ++k) w(k) = rng.normal();
  const int saved = omp_get_max_threads();
  std::vector<Mat<double>> features;
  std::vector<ThreeBodyEnergy> energies;
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    features.push_back(features_of(basis, batch));
    energies.push_back(three_body_energy(basis, batch.index, batch.coords, batch.atomic_numbers, w, true));
  }
  omp_set_num_threads(saved);
  CHECK(features[0] == features[1]);
  CHECK(energies[0].per_structure == energies[1].per_structure);
  CHECK(energies[0].gradient == energies[1].gradient);
}

TEST_CASE("three-body: refusals name the problem", "[three_body]") {
  ThreeBodyBasis basis = small_basis();
  Molecule m;
  m.atomic_numbers = {6, 16};
  m.positions = {{0, 0, 0}, {1.5, 0, 0}};
  const MoleculeBatch b = batch_of({m});
  CHECK_THROWS_WITH(features_of(basis, b), Catch::Contains("atom 2: element 16"));
  m.atomic_numbers = {6, 6};
  m.positions = {{0, 0, 0}, {0, 0, 0}};
  CHECK_THROWS_WITH(features_of(basis, batch_of({m})), Catch::Contains("coincide"));
  basis.elements = {6, 1};
  CHECK_THROWS_WITH(features_of(basis, b), Catch::Contains("sorted"));
}

TEST_CASE("ridge fit: leave-one-out error equals explicit refits, and an exact linear target is recovered",
          "[three_body]") {
  Rng rng(9);
  const Index M = 40, F = 12;
  Mat<double> X(M, F);
  Vec<double> y(M), w_true(F);
  for (Index k = 0; k < F; ++k) w_true(k) = rng.normal();
  for (Index m = 0; m < M; ++m) {
    for (Index k = 0; k < F; ++k) X(m, k) = 3.0 * rng.normal() + static_cast<double>(k);
    y(m) = X.row(m).dot(w_true) + 4.0 + 0.5 * rng.normal();
  }
  X.col(5).setConstant(2.0);  // a constant column gets weight zero
  for (const Index rows : {M, Index{8}}) {  // primal (M > F) and dual (M <= F)
    const Mat<double> Xr = X.topRows(rows);
    const Vec<double> yr = y.head(rows);
    const RidgeFit fit = fit_ridge_loo(Xr, yr);
    CHECK(fit.weights(5) == 0.0);
    // Explicit leave-one-out at the chosen lambda: the same standardisation (over all rows),
    // an unpenalised intercept and the penalty lambda * rows on the standardised weights.
    Vec<double> mean = Xr.colwise().mean().transpose(), sd(F);
    for (Index k = 0; k < F; ++k) sd(k) = std::sqrt((Xr.col(k).array() - mean(k)).square().mean());
    double mae = 0.0;
    for (Index out = 0; out < rows; ++out) {
      Mat<double> A(rows - 1, F);  // intercept in column 5's place (that column is constant)
      Vec<double> b(rows - 1);
      for (Index m = 0, r = 0; m < rows; ++m) {
        if (m == out) continue;
        for (Index k = 0; k < F; ++k) A(r, k) = k == 5 ? 1.0 : (Xr(m, k) - mean(k)) / sd(k);
        b(r++) = yr(m);
      }
      Mat<double> G = A.transpose() * A;
      for (Index k = 0; k < F; ++k)
        if (k != 5) G(k, k) += fit.lambda * static_cast<double>(rows);
      const Vec<double> coef = G.ldlt().solve(A.transpose() * b);
      double pred = coef(5);
      for (Index k = 0; k < F; ++k)
        if (k != 5) pred += coef(k) * (Xr(out, k) - mean(k)) / sd(k);
      mae += std::abs(yr(out) - pred);
    }
    CHECK(fit.loo_mae == Approx(mae / static_cast<double>(rows)).epsilon(1e-9));
  }
  // Noise-free: the smallest lambda wins and the target is recovered.
  for (Index m = 0; m < M; ++m) y(m) = X.row(m).dot(w_true) + 4.0;
  const RidgeFit exact = fit_ridge_loo(X, y);
  CHECK(exact.lambda == Approx(1e-8));
  CHECK(((X * exact.weights).array() + exact.intercept - y.array()).abs().maxCoeff() < 1e-4);
}

TEST_CASE("ridge fit at sizes of several row and column chunks: leave-one-out residuals from the hat "
          "matrix, the same bits for 1 and 2 threads",
          "[three_body][threads]") {
  // The fit's Gram matrix, projection and leverages run in chunks of 256 columns or rows: 600 x 300
  // (primal) and 300 x 600 (dual) cross chunk boundaries on both sides. Reference: the hat matrix
  // H = 1 1^T / M + X (X^T X + lambda M I)^-1 X^T of the standardised X at the chosen lambda,
  // residual_m = (y_m - (H y)_m) / (1 - H_mm).
  Rng rng(31);
  for (const auto& [M, F] : {std::pair<Index, Index>{600, 300}, std::pair<Index, Index>{300, 600}}) {
    Mat<double> X(M, F);
    Vec<double> y(M);
    for (Index m = 0; m < M; ++m) {
      for (Index k = 0; k < F; ++k) X(m, k) = rng.normal() + 0.01 * static_cast<double>(k);
      y(m) = X(m, 0) - 0.5 * X(m, 7) + 0.1 * rng.normal();
    }
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    const RidgeFit one = fit_ridge_loo(X, y);
    omp_set_num_threads(2);
    const RidgeFit two = fit_ridge_loo(X, y);
    omp_set_num_threads(saved);
    CHECK(one.weights == two.weights);
    CHECK(one.loo_residuals == two.loo_residuals);
    CHECK(one.lambda == two.lambda);

    Eigen::MatrixXd S(M, F);
    for (Index k = 0; k < F; ++k) {
      const double mean = X.col(k).mean();
      const double sd = std::sqrt((X.col(k).array() - mean).square().mean());
      S.col(k) = (X.col(k).array() - mean) / sd;
    }
    Eigen::MatrixXd A = S.transpose() * S;
    A.diagonal().array() += one.lambda * static_cast<double>(M);
    const Eigen::MatrixXd B = A.ldlt().solve(S.transpose());  // F x M
    const Eigen::VectorXd yc = y.array() - y.mean();
    const Eigen::VectorXd fitted = S * (B * yc);
    double worst = 0.0, scale = 0.0;
    for (Index m = 0; m < M; ++m) {
      const double h = 1.0 / static_cast<double>(M) + S.row(m).dot(B.col(m));
      const double residual = (yc(m) - fitted(m)) / (1.0 - h);
      worst = std::max(worst, std::abs(residual - one.loo_residuals(m)));
      scale = std::max(scale, std::abs(residual));
    }
    INFO("M " << M << ", F " << F << ", lambda " << one.lambda);
    CHECK(worst <= 1e-8 * scale);
  }
}

TEST_CASE("ridge fit of several label columns: each column bitwise its own fit, with its own lambda",
          "[three_body]") {
  // Small primal and dual shapes, and shapes that cross the fit's 256-row and 256-column chunks.
  Rng rng(13);
  for (const auto& [M, F] : {std::pair<Index, Index>{90, 20}, std::pair<Index, Index>{15, 20},
                             std::pair<Index, Index>{600, 300}, std::pair<Index, Index>{300, 600}}) {
    Mat<double> X(M, F), Y(M, 3);
    for (Index m = 0; m < M; ++m) {
      for (Index k = 0; k < F; ++k) X(m, k) = rng.normal() + 0.1 * static_cast<double>(k);
      Y(m, 0) = X(m, 1) - 2.0 * X(m, 3) + 1e-3 * rng.normal();  // nearly exact: a small lambda
      Y(m, 1) = 5.0 * rng.normal();                             // noise: a large lambda
      Y(m, 2) = -X(m, 0) + 0.3 * rng.normal() + 7.0;
    }
    const std::vector<RidgeFit> fits = fit_ridge_loo(X, Y);
    REQUIRE(fits.size() == 3);
    for (Index t = 0; t < 3; ++t) {
      const RidgeFit alone = fit_ridge_loo(X, Vec<double>(Y.col(t)));
      const RidgeFit& shared = fits[static_cast<std::size_t>(t)];
      INFO("M " << M << ", column " << t);
      CHECK(shared.weights == alone.weights);
      CHECK(shared.intercept == alone.intercept);
      CHECK(shared.lambda == alone.lambda);
      CHECK(shared.loo_residuals == alone.loo_residuals);
      CHECK(shared.loo_rmse == alone.loo_rmse);
    }
    CHECK(fits[0].lambda < fits[1].lambda);
  }
  const Mat<double> ones = Mat<double>::Ones(10, 2), no_labels(10, 0), short_labels = Mat<double>::Ones(9, 2);
  CHECK_THROWS_AS(fit_ridge_loo(ones, no_labels), InvalidArgument);
  CHECK_THROWS_AS(fit_ridge_loo(ones, short_labels), InvalidArgument);
}

namespace {

ModelConfig three_body_config() {
  ModelConfig c;
  c.targets = {{"energy", "eV", true}};
  c.width = 8;
  c.heads = 2;
  c.blocks = 1;
  c.mlp_hidden = 16;
  c.head_hidden = 16;
  c.max_z = 10;
  c.radial_nodes = 4;
  c.far_field = FarField::none;
  c.three_body = true;
  c.three_body_cutoff = 4.0;
  c.three_body_radial = 3;
  c.three_body_lmax = 3;
  c.seed = 4;
  return c;
}

}  // namespace

TEST_CASE("three-body reference of several extensive targets: the same fits as one target at a time",
          "[three_body]") {
  // Targets labelled on the same structures share one ridge fit (one eigendecomposition); one with
  // a missing label is fitted on its own rows. Each must equal the single-target fit bitwise.
  Rng rng(23);
  std::vector<Molecule> mols;
  for (int s = 0; s < 40; ++s) mols.push_back(random_cluster(rng, 5 + static_cast<int>(rng.below(6)), 3.5));
  const MoleculeBatch train = batch_of(mols);
  ModelConfig cfg = three_body_config();
  cfg.targets = {{"a", "eV", true}, {"gap", "eV", false}, {"b", "eV", true}, {"c", "eV", true}};
  Mat<double> labels(40, 4);
  for (Index s = 0; s < 40; ++s) {
    const double atoms = static_cast<double>(train.index.size(s));
    labels(s, 0) = -3.0 * atoms + rng.normal();
    labels(s, 1) = 0.5 * rng.normal();
    labels(s, 2) = 2.0 * atoms + 0.1 * rng.normal();
    labels(s, 3) = -atoms + 0.3 * rng.normal();
  }
  labels(11, 3) = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::string> log;
  const Normalisation all = fit_normalisation(cfg, train, labels, true, std::nullopt, &log);
  CHECK(log.size() == 3);
  for (const Index t : {Index{0}, Index{2}, Index{3}}) {
    ModelConfig one = cfg;
    one.targets = {cfg.targets[static_cast<std::size_t>(t)]};
    const Normalisation alone = fit_normalisation(one, train, Mat<double>(labels.col(t)));
    INFO("target " << t);
    CHECK(all.three_body.row(t) == alone.three_body.row(0));
    CHECK(all.scale[static_cast<std::size_t>(t)] == alone.scale[0]);
    CHECK(all.mean[static_cast<std::size_t>(t)] == alone.mean[0]);
    CHECK(all.reference.row(t) == alone.reference.row(0));
  }
  CHECK(all.three_body.row(1).isZero());
  CHECK(all.three_body.row(0) != all.three_body.row(2));
}

TEST_CASE("three-body reference in a molecule model: fit, round trips, forces and contributions",
          "[three_body]") {
  Rng rng(21);
  std::vector<Molecule> mols;
  for (int s = 0; s < 60; ++s) mols.push_back(random_cluster(rng, 5 + static_cast<int>(rng.below(6)), 3.5));
  const MoleculeBatch train = batch_of(mols);
  const ModelConfig cfg = three_body_config();
  // Labels: a fixed three-body energy plus element references (what the fit must find).
  const ThreeBodyBasis basis = three_body_basis(cfg, {1, 6, 8});
  Vec<double> w_true(basis.feature_count());
  for (Index k = 0; k < w_true.size(); ++k) w_true(k) = 0.01 * rng.normal();
  Mat<double> labels(60, 1);
  const Vec<double> e_true = three_body_energy(basis, train.index, train.coords, train.atomic_numbers, w_true, false).per_structure;
  for (Index s = 0; s < 60; ++s) {
    labels(s, 0) = e_true(s);
    for (Index i = train.index.begin(s); i < train.index.end(s); ++i)
      labels(s, 0) += train.atomic_numbers[static_cast<std::size_t>(i)] == 1 ? -0.5 : -37.0;
  }
  std::vector<std::string> log;
  const Normalisation n = fit_normalisation(cfg, train, labels, true, std::nullopt, &log);
  REQUIRE(log.size() == 1);
  CHECK_THAT(log[0], Catch::Contains("three-body reference of 'energy'"));
  REQUIRE(n.three_body.rows() == 1);
  REQUIRE(n.three_body.cols() == basis.feature_count());

  // A missing label: the fit uses the other structures only (the same weights as without it).
  {
    Mat<double> with_gap = labels;
    with_gap(7, 0) = std::numeric_limits<double>::quiet_NaN();
    std::vector<Molecule> rest = mols;
    rest.erase(rest.begin() + 7);
    Mat<double> rest_labels(59, 1);
    rest_labels << labels.topRows(7), labels.bottomRows(52);
    const Normalisation gap = fit_normalisation(cfg, train, with_gap);
    const Normalisation fewer = fit_normalisation(cfg, batch_of(rest), rest_labels);
    CHECK(gap.three_body == fewer.three_body);
    CHECK(gap.three_body != n.three_body);
  }

  MoleculeModel<double> model(cfg);
  model.set_normalisation(n);
  // Offsets computed once map exactly as the batch maps do.
  const Mat<double> offsets = model.label_offsets(train);
  Mat<double> zs(60, 1);
  for (Index s = 0; s < 60; ++s) zs(s, 0) = rng.normal();
  CHECK(model.denormalise(offsets, zs) == model.denormalise(train, zs));
  CHECK(model.normalise_labels(offsets, labels) == model.normalise_labels(train, labels));
  // The same offsets from the structures' descriptors (the trainer's, from the fit's matrix), also
  // for a subset of the rows; the composition part needs no coordinates.
  const Mat<double> descriptors = three_body_features(basis, train.index, train.coords, train.atomic_numbers);
  MoleculeBatch composition = train;
  composition.coords.resize(0, 3);
  CHECK(model.label_offsets_from_descriptors(composition, descriptors) == offsets);
  const MoleculeBatch first_ten = batch_of(std::vector<Molecule>(mols.begin(), mols.begin() + 10));
  CHECK(model.label_offsets_from_descriptors(first_ten, descriptors.topRows(10)) == offsets.topRows(10));
  CHECK(model.label_offsets(first_ten) == offsets.topRows(10));
  CHECK_THROWS_WITH(model.label_offsets_from_descriptors(first_ten, descriptors),
                    Catch::Contains("one descriptor row per structure"));
  CHECK_THROWS_WITH(model.label_offsets_from_descriptors(composition, descriptors.leftCols(5)),
                    Catch::Contains("descriptors of another basis"));
  // The reference carries the labels (the network is fresh and small): normalised labels are far
  // smaller than the label spread, and denormalise inverts normalise_labels.
  const Mat<double> z = model.normalise_labels(train, labels);
  CHECK((model.denormalise(train, z) - labels).cwiseAbs().maxCoeff() < 1e-9);

  // Forces from predict_with_forces against central differences of predict (network + reference).
  const std::vector<Molecule> one{mols[3]};
  const MoleculeBatch b = batch_of(one);
  Mat<double> forces, contributions;
  const Mat<double> e0 = model.predict_with_forces(b, 0, forces, &contributions);
  CHECK(contributions.sum() == Approx(e0(0, 0)).epsilon(1e-12));
  CHECK(model.predict(b)(0, 0) == Approx(e0(0, 0)).epsilon(1e-12));
  const Mat<double> ref_grad = model.reference_gradient(b, 0);
  REQUIRE(ref_grad.cwiseAbs().maxCoeff() > 1e-3);  // the reference's forces are in play
  const double h = 1e-5;
  double worst = 0.0;
  for (Index i = 0; i < b.num_atoms(); ++i)
    for (Index x = 0; x < 3; ++x) {
      MoleculeBatch plus = b, minus = b;
      plus.coords(i, x) += h;
      minus.coords(i, x) -= h;
      const double fd = (model.predict(plus)(0, 0) - model.predict(minus)(0, 0)) / (2 * h);
      worst = std::max(worst, std::abs(-fd - forces(i, x)));
    }
  CHECK(worst < 1e-6 * forces.cwiseAbs().maxCoeff());

  // Model arrays round trip; a wrong width is refused.
  MoleculeModel<double> copy(cfg);
  copy.import_arrays(model.export_arrays());
  CHECK(copy.predict(b)(0, 0) == e0(0, 0));
  auto arrays = model.export_arrays();
  for (auto& a : arrays)
    if (a.name == "norm.three_body") {
      a.shape[1] -= 1;
      a.values.resize(a.values.size() - 1);
    }
  MoleculeModel<double> bad(cfg);
  CHECK_THROWS_WITH(bad.import_arrays(arrays), Catch::Contains("three-body weights must be"));
  // The configuration keys round trip.
  std::map<std::string, std::string> keys;
  for (const auto& [k, v] : config_to_strings(cfg)) keys[k] = v;
  const ModelConfig back = config_from_strings(keys);
  CHECK(back.three_body);
  CHECK(back.three_body_cutoff == 4.0);
  CHECK(back.three_body_radial == 3);
  CHECK(back.three_body_lmax == 3);
}

TEST_CASE("three-body reference learns a three-body target that composition cannot", "[three_body]") {
  // Held-out clusters: the reference fitted on 600 clusters predicts 100 others' three-body energy
  // (R^2 >= 0.99); without it (composition only) they are not (R^2 <= 0).
  // One composition (C2H5O... of eight atoms, as for conformations of one molecule), so that
  // composition alone can only predict the mean.
  Rng rng(33);
  std::vector<Molecule> mols;
  for (int s = 0; s < 700; ++s) {
    Molecule m = random_cluster(rng, 8, 3.5);
    m.atomic_numbers = {6, 6, 8, 1, 1, 1, 1, 1};
    mols.push_back(m);
  }
  const ModelConfig cfg = three_body_config();
  const ThreeBodyBasis basis = three_body_basis(cfg, {1, 6, 8});
  Vec<double> w_true(basis.feature_count());
  for (Index k = 0; k < w_true.size(); ++k) w_true(k) = 0.01 * rng.normal();
  const MoleculeBatch all = batch_of(mols);
  const Vec<double> e = three_body_energy(basis, all.index, all.coords, all.atomic_numbers, w_true, false).per_structure;
  const std::vector<Molecule> train_m(mols.begin(), mols.begin() + 600), test_m(mols.begin() + 600, mols.end());
  Mat<double> train_labels = e.head(600);
  const Vec<double> test_labels = e.tail(100);
  auto r2 = [&](const ModelConfig& c) {
    MoleculeModel<double> model(c);
    model.set_normalisation(fit_normalisation(c, batch_of(train_m), train_labels));
    const MoleculeBatch tb = batch_of(test_m);
    // The normalised output of a fresh network is small; its share is removed exactly.
    const Mat<double> pred = model.denormalise(tb, Mat<double>::Zero(100, 1));
    const double ss_res = (pred.col(0) - test_labels).squaredNorm();
    const double ss_tot = (test_labels.array() - test_labels.mean()).square().sum();
    return 1.0 - ss_res / ss_tot;
  };
  CHECK(r2(cfg) >= 0.99);
  ModelConfig composition = cfg;
  composition.three_body = false;
  CHECK(r2(composition) <= 0.0);
}

TEST_CASE("three-body reference of structures of several sizes: its intercept is per atom", "[three_body]") {
  // Clusters of one element with 6 and 24 atoms (as a metal nanocluster data set holds Cu13 and
  // Cu55 frames), labelled with a three-body energy plus a per-atom reference energy: what the
  // reference represents exactly. At a normalised output of 0 (a fresh network's share removed)
  // the model must then reproduce held-out clusters of both sizes to about the fit's
  // leave-one-out error. A fit whose intercept is a constant per structure, handed to the model
  // as its per-atom mean, is off on every structure by that constant times (1 - n mean(1/n)).
  Rng rng(47);
  std::vector<Molecule> mols;
  for (int s = 0; s < 400; ++s) {
    Molecule m = random_cluster(rng, s % 2 == 0 ? 6 : 24, s % 2 == 0 ? 3.0 : 4.8);
    m.atomic_numbers.assign(m.atomic_numbers.size(), 6);
    mols.push_back(m);
  }
  const ModelConfig cfg = three_body_config();
  const ThreeBodyBasis basis = three_body_basis(cfg, {6});
  Vec<double> w_true(basis.feature_count());
  for (Index k = 0; k < w_true.size(); ++k) w_true(k) = 0.01 * rng.normal();
  const MoleculeBatch all = batch_of(mols);
  const Vec<double> e = three_body_energy(basis, all.index, all.coords, all.atomic_numbers, w_true, false).per_structure;
  Mat<double> labels(400, 1);
  for (Index s = 0; s < 400; ++s) labels(s, 0) = e(s) - 37.0 * static_cast<double>(all.index.size(s));
  const std::vector<Molecule> train_m(mols.begin(), mols.begin() + 300), test_m(mols.begin() + 300, mols.end());
  MoleculeModel<double> model(cfg);
  model.set_normalisation(fit_normalisation(cfg, batch_of(train_m), labels.topRows(300)));
  const Mat<double> pred = model.denormalise(batch_of(test_m), Mat<double>::Zero(100, 1));
  const double error = std::sqrt((pred.col(0) - labels.bottomRows(100).col(0)).array().square().mean());
  const double loo_rmse = model.normalisation().scale[0];
  const Vec<double> three_body_part = e.tail(100);
  const double spread = std::sqrt((three_body_part.array() - three_body_part.mean()).square().mean());
  INFO("held-out RMSE " << error << ", leave-one-out RMSE " << loo_rmse << ", three-body spread " << spread);
  CHECK(loo_rmse < 0.01 * spread);
  CHECK(error < 3.0 * loo_rmse);
}

TEST_CASE("three-body reference in force training: its forces enter the loss, the gradient is exact",
          "[three_body]") {
  // The loss of energy_force_gradient against its definition with the forces of
  // predict_with_forces (network + reference), and its parameter gradient against central
  // differences of that definition.
  Rng rng(41);
  std::vector<Molecule> mols;
  for (int s = 0; s < 30; ++s) mols.push_back(random_cluster(rng, 6, 3.0));
  const ModelConfig cfg = three_body_config();
  const MoleculeBatch train = batch_of(mols);
  // Labels of a smooth three-body energy, so that the fitted reference's forces are of the
  // size of real ones (random labels would give a rough fit and forces that swamp the rounding).
  const ThreeBodyBasis basis = three_body_basis(cfg, {1, 6, 8});
  Vec<double> w_true(basis.feature_count());
  for (Index k = 0; k < w_true.size(); ++k) w_true(k) = 0.01 * rng.normal();
  Mat<double> energies =
      three_body_energy(basis, train.index, train.coords, train.atomic_numbers, w_true, false).per_structure;
  for (Index s = 0; s < 30; ++s) energies(s, 0) += 0.1 * rng.normal();  // what the network would learn
  MoleculeModel<double> model(cfg);
  // 30 structures and 567 weights: the reference fits the training labels almost exactly, and
  // the scale is its leave-one-out RMSE (about the label noise), not the in-sample spread (~0).
  std::vector<std::string> log;
  model.set_normalisation(fit_normalisation(cfg, train, energies, true, std::nullopt, &log));
  REQUIRE(log.size() == 1);
  const double loo_rmse = std::stod(log[0].substr(log[0].find("RMSE ") + 5));
  CHECK(model.normalisation().scale[0] == Approx(loo_rmse).epsilon(1e-5));
  CHECK(model.normalisation().scale[0] > 0.01);  // the in-sample spread is ~1e-10
  for (double& p : model.parameters().values()) p += 0.05 * rng.normal();
  MoleculeModel<Dual> dual(cfg);

  const std::vector<Molecule> two{mols[0], mols[1]};
  const MoleculeBatch batch = batch_of(two);
  const Index N = batch.num_atoms();
  Mat<double> labels(2, 1);
  labels << 0.3, -0.4;  // normalised
  Mat<double> ref(N, 3);
  for (Index i = 0; i < ref.size(); ++i) ref.data()[i] = 0.1 * rng.normal();
  const double weight = 2.0, sigma = model.normalisation().scale[0];
  const RegressionLoss loss{RegressionLossKind::mse, 1.0};
  ModelCache<double> cache;
  ModelCache<Dual> dual_cache;
  const EnergyForceLoss lv = energy_force_gradient(model, dual, batch, labels, ref, 0, weight, loss, cache, dual_cache);
  const std::vector<double> analytic(model.parameters().grads().begin(), model.parameters().grads().end());
  REQUIRE(model.reference_gradient(batch, 0).cwiseAbs().maxCoeff() > 1e-3);

  auto total_loss = [&]() {
    Mat<double> forces;
    model.predict_with_forces(batch, 0, forces);
    ModelCache<double> c;
    const Mat<double> out = model.forward(batch, c);
    const double e = regression_loss_forward<double>(loss, out, labels).value;
    return e + weight * ((forces - ref) / sigma).squaredNorm() / (3.0 * static_cast<double>(N));
  };
  Mat<double> forces;
  model.predict_with_forces(batch, 0, forces);
  CHECK((lv.forces - forces).cwiseAbs().maxCoeff() < 1e-10 * forces.cwiseAbs().maxCoeff());
  CHECK(total_loss() == Approx(lv.value()).epsilon(1e-10));
  const auto check = check_gradient(total_loss, model.parameters().values(), analytic);
  INFO("worst parameter " << check.worst_index << ": analytic " << check.worst_analytic << ", numeric "
                          << check.worst_numeric);
  CHECK(check.max_rel_error <= 1e-6);

  // The reference gradient kept by a trainer (per structure): bitwise the same loss and gradient;
  // it is used (a zero one changes the forces by the reference's); a wrong shape is refused.
  const Mat<double> kept = model.reference_gradient(batch, 0);
  const EnergyForceLoss with_kept =
      energy_force_gradient(model, dual, batch, labels, ref, 0, weight, loss, cache, dual_cache, &kept);
  CHECK(with_kept.value() == lv.value());
  CHECK(with_kept.forces == lv.forces);
  CHECK(std::equal(analytic.begin(), analytic.end(), model.parameters().grads().begin()));
  const Mat<double> zero = Mat<double>::Zero(N, 3);
  const EnergyForceLoss with_zero =
      energy_force_gradient(model, dual, batch, labels, ref, 0, weight, loss, cache, dual_cache, &zero);
  CHECK((with_zero.forces - lv.forces - kept).cwiseAbs().maxCoeff() < 1e-12);
  const Mat<double> short_one = Mat<double>::Zero(N - 1, 3);
  CHECK_THROWS_WITH(energy_force_gradient(model, dual, batch, labels, ref, 0, weight, loss, cache, dual_cache, &short_one),
                    Catch::Contains("reference gradient must be N x 3"));
}

TEST_CASE("three-body feature Jacobian: central differences of the features, and -J w the energy's gradient",
          "[three_body]") {
  Rng rng(53);
  const ThreeBodyBasis basis = small_basis();
  // A dense cluster and one whose atoms straddle the cutoff.
  const std::vector<Molecule> mols{random_cluster(rng, 8, 3.5), random_cluster(rng, 7, 6.0)};
  const MoleculeBatch batch = batch_of(mols);
  const Mat<double> jac = three_body_feature_jacobian(basis, batch.index, batch.coords, batch.atomic_numbers);
  REQUIRE(jac.rows() == 3 * batch.num_atoms());
  REQUIRE(jac.cols() == basis.feature_count());
  const double scale = jac.cwiseAbs().maxCoeff();
  REQUIRE(scale > 1.0);
  // (X(r + h e_ix) - X(r - h e_ix)) / 2h against row 3 i + x, h = 1e-5, in double.
  const double h = 1e-5;
  double worst = 0.0;
  for (Index i = 0; i < batch.num_atoms(); ++i) {
    const Index s = i < batch.index.end(0) ? 0 : 1;
    for (Index x = 0; x < 3; ++x) {
      MoleculeBatch plus = batch, minus = batch;
      plus.coords(i, x) += h;
      minus.coords(i, x) -= h;
      const Mat<double> d = (features_of(basis, plus) - features_of(basis, minus)) / (2 * h);
      worst = std::max(worst, (d.row(s) - jac.row(3 * i + x)).cwiseAbs().maxCoeff());
      // The other structure's row does not move.
      CHECK(d.row(1 - s).cwiseAbs().maxCoeff() == 0.0);
    }
  }
  INFO("worst difference " << worst << " of " << scale);
  CHECK(worst < 1e-7 * scale);
  // J w is the gradient of three_body_energy for any weights.
  Vec<double> w(basis.feature_count());
  for (Index k = 0; k < w.size(); ++k) w(k) = rng.normal();
  const ThreeBodyEnergy e = three_body_energy(basis, batch.index, batch.coords, batch.atomic_numbers, w, true);
  const Vec<double> jw = jac * w;
  for (Index i = 0; i < batch.num_atoms(); ++i)
    for (Index x = 0; x < 3; ++x) CHECK(jw(3 * i + x) == Approx(e.gradient(i, x)).margin(1e-10 * scale));
  // Bitwise the same for 1 and 2 threads.
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const Mat<double> one = three_body_feature_jacobian(basis, batch.index, batch.coords, batch.atomic_numbers);
  omp_set_num_threads(2);
  const Mat<double> two = three_body_feature_jacobian(basis, batch.index, batch.coords, batch.atomic_numbers);
  omp_set_num_threads(saved);
  CHECK(one == two);
}

namespace {

// Clusters of carbon with 5 and 9 atoms, labelled with a three-body energy of weights w_true plus
// 37 per atom, and that energy's forces (-dE/dr): a target the reference represents exactly.
struct ForceData {
  std::vector<Molecule> mols;
  Mat<double> energies;  // S x 1
  Mat<double> forces;    // N x 3
};
ForceData carbon_clusters(Rng& rng, int count, const ThreeBodyBasis& basis, const Vec<double>& w_true) {
  ForceData d;
  for (int s = 0; s < count; ++s) {
    Molecule m = random_cluster(rng, s % 2 == 0 ? 5 : 9, s % 2 == 0 ? 2.8 : 3.6);
    m.atomic_numbers.assign(m.atomic_numbers.size(), 6);
    d.mols.push_back(m);
  }
  const MoleculeBatch b = batch_of(d.mols);
  const ThreeBodyEnergy e = three_body_energy(basis, b.index, b.coords, b.atomic_numbers, w_true, true);
  d.energies.resize(count, 1);
  for (Index s = 0; s < count; ++s) d.energies(s, 0) = e.per_structure(s) - 37.0 * static_cast<double>(b.index.size(s));
  d.forces = -e.gradient;
  return d;
}

}  // namespace

TEST_CASE("three-body reference fitted to energies and forces: the forces pin what the energies leave",
          "[three_body]") {
  // 16 training structures and 27 weights (radial 3, lmax 3, one element): the
  // energies alone leave directions of w free, the 16 x 3 x 5..9 force components pin them. With
  // force labels the fitted reference must reproduce held-out forces and energies; fitted to the
  // energies only it cannot.
  Rng rng(59);
  const ModelConfig cfg = three_body_config();
  const ThreeBodyBasis basis = three_body_basis(cfg, {6});
  Vec<double> w_true(basis.feature_count());
  for (Index k = 0; k < w_true.size(); ++k) w_true(k) = 0.05 * rng.normal();
  const ForceData train = carbon_clusters(rng, 16, basis, w_true), test = carbon_clusters(rng, 20, basis, w_true);
  const MoleculeBatch train_batch = batch_of(train.mols), test_batch = batch_of(test.mols);
  REQUIRE(basis.feature_count() > 16);

  const auto held_out_errors = [&](const Normalisation& n) {
    MoleculeModel<double> model(cfg);
    model.set_normalisation(n);
    const Mat<double> pred_forces = -model.reference_gradient(test_batch, 0);
    const Mat<double> energies = model.denormalise(test_batch, Mat<double>::Zero(20, 1));
    return std::array<double, 2>{std::sqrt((pred_forces - test.forces).array().square().mean()),
                                 std::sqrt((energies - test.energies).array().square().mean())};
  };
  const double force_rms = std::sqrt(test.forces.array().square().mean());
  Vec<double> three_body_part(20);  // the energies less 37 per atom
  for (Index s = 0; s < 20; ++s) three_body_part(s) = test.energies(s, 0) + 37.0 * static_cast<double>(test_batch.index.size(s));
  const double energy_spread = std::sqrt((three_body_part.array() - three_body_part.mean()).square().mean());
  REQUIRE(force_rms > 0.1);

  std::vector<std::string> log;
  ReferenceForces rf;
  rf.batch = &train_batch;
  rf.forces = &train.forces;
  rf.target = 0;
  rf.weight = 1.0;
  const Normalisation with = fit_normalisation(cfg, train_batch, train.energies, true, std::nullopt, &log, nullptr, &rf);
  const Normalisation without = fit_normalisation(cfg, train_batch, train.energies);
  const auto e_with = held_out_errors(with), e_without = held_out_errors(without);
  INFO("force RMS " << force_rms << ", energy spread " << energy_spread << "; held-out force RMSE " << e_with[0]
                    << " (energies only " << e_without[0] << "), energy RMSE " << e_with[1] << " (energies only "
                    << e_without[1] << ")");
  CHECK(e_with[0] < 1e-3 * force_rms);
  CHECK(e_with[1] < 1e-3 * energy_spread);
  CHECK(e_without[0] > 0.05 * force_rms);
  REQUIRE(log.size() == 1);
  CHECK_THAT(log[0], Catch::Contains("force components (leave-one-structure-out)"));

  // Without a force label on any training structure (or at weight 0) the fit is the
  // energies-only one, bit for bit.
  const Mat<double> none = Mat<double>::Constant(train_batch.num_atoms(), 3, std::numeric_limits<double>::quiet_NaN());
  ReferenceForces unlabelled = rf;
  unlabelled.forces = &none;
  CHECK(fit_normalisation(cfg, train_batch, train.energies, true, std::nullopt, nullptr, nullptr, &unlabelled).three_body ==
        without.three_body);
  ReferenceForces weightless = rf;
  weightless.weight = 0.0;
  CHECK(fit_normalisation(cfg, train_batch, train.energies, true, std::nullopt, nullptr, nullptr, &weightless).three_body ==
        without.three_body);
}

TEST_CASE("three-body ridge fit with force rows: bitwise the same for 1 and 2 threads",
          "[three_body]") {
  Rng rng(61);
  const ModelConfig cfg = three_body_config();
  const ThreeBodyBasis basis = three_body_basis(cfg, {6});
  Vec<double> w_true(basis.feature_count());
  for (Index k = 0; k < w_true.size(); ++k) w_true(k) = 0.05 * rng.normal();
  ForceData d = carbon_clusters(rng, 30, basis, w_true);
  for (Index s = 0; s < 30; ++s) d.energies(s, 0) += 0.01 * rng.normal();  // noise: lambda > its least
  for (Index i = 0; i < d.forces.size(); ++i) d.forces.data()[i] += 0.01 * rng.normal();
  d.forces.row(3).setConstant(std::numeric_limits<double>::quiet_NaN());  // an atom without a label
  const MoleculeBatch b = batch_of(d.mols);
  const Mat<double> X = features_of(basis, b);
  Vec<double> atoms(30);
  for (Index s = 0; s < 30; ++s) atoms(s) = static_cast<double>(b.index.size(s));
  ForceRows fr;
  fr.basis = &basis;
  fr.sets = &b.index;
  fr.coords = &b.coords;
  fr.atomic_numbers = &b.atomic_numbers;
  fr.forces = &d.forces;
  for (Index s = 0; s < 30; ++s) fr.structures.push_back(s);
  fr.weight = 0.3;
  const int saved = omp_get_max_threads();
  std::vector<RidgeFit> fits;
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    fits.push_back(fit_ridge_loo_with_forces(X, Vec<double>(d.energies.col(0)), atoms, fr));
  }
  omp_set_num_threads(saved);
  CHECK(fits[0].weights == fits[1].weights);
  CHECK(fits[0].intercept == fits[1].intercept);
  CHECK(fits[0].loo_residuals == fits[1].loo_residuals);
  CHECK(fits[0].force_loo_rmse == fits[1].force_loo_rmse);
  CHECK(fits[0].force_components == 3 * (b.num_atoms() - 1));
  CHECK(fits[0].lambda > 1e-8);
  // The leave-one-structure-out errors are about the noise, not the fit's in-sample residuals.
  CHECK(fits[0].force_loo_rmse > 0.005);
  CHECK(fits[0].force_loo_rmse < 0.05);
}

TEST_CASE("three-body ridge fit with force rows: leave-one-structure-out residuals equal explicit refits",
          "[three_body]") {
  // For each structure g, the fit at the chosen lambda on the other structures' energy and force
  // rows (same column spreads, penalty lambda M, an unpenalised per-atom intercept), solved from
  // its normal equations, predicts g's energy and forces: its residuals are the fit's
  // leave-one-structure-out residuals.
  Rng rng(67);
  const ModelConfig cfg = three_body_config();
  const ThreeBodyBasis basis = three_body_basis(cfg, {6});
  Vec<double> w_true(basis.feature_count());
  for (Index k = 0; k < w_true.size(); ++k) w_true(k) = 0.05 * rng.normal();
  const Index M = 12;
  ForceData d = carbon_clusters(rng, static_cast<int>(M), basis, w_true);
  for (Index s = 0; s < M; ++s) d.energies(s, 0) += 0.02 * rng.normal();
  for (Index i = 0; i < d.forces.size(); ++i) d.forces.data()[i] += 0.02 * rng.normal();
  const MoleculeBatch b = batch_of(d.mols);
  const Mat<double> X = features_of(basis, b);
  const Mat<double> J = three_body_feature_jacobian(basis, b.index, b.coords, b.atomic_numbers);
  const Index F = X.cols();
  Vec<double> atoms(M);
  for (Index s = 0; s < M; ++s) atoms(s) = static_cast<double>(b.index.size(s));
  ForceRows fr;
  fr.basis = &basis;
  fr.sets = &b.index;
  fr.coords = &b.coords;
  fr.atomic_numbers = &b.atomic_numbers;
  fr.forces = &d.forces;
  for (Index s = 0; s < M; ++s) fr.structures.push_back(s);
  fr.weight = 0.3;
  const Vec<double> y = d.energies.col(0);
  const RidgeFit fit = fit_ridge_loo_with_forces(X, y, atoms, fr);

  // The column spreads: energy rows centred on the atom counts, force rows sqrt(c) J.
  const double c = fr.weight, uu = atoms.squaredNorm();
  Eigen::VectorXd sd(F);
  for (Index col = 0; col < F; ++col) {
    const Eigen::VectorXd centred = X.col(col) - (atoms.dot(X.col(col)) / uu) * atoms;
    sd(col) = std::sqrt((centred.squaredNorm() + c * J.col(col).squaredNorm()) / static_cast<double>(M));
    REQUIRE(sd(col) > 1e-6);
  }
  double force_sq = 0.0;
  for (Index g = 0; g < M; ++g) {
    // Unknowns: F standardised weights and the intercept; normal equations of the other rows.
    Eigen::MatrixXd A = Eigen::MatrixXd::Zero(F + 1, F + 1);
    Eigen::VectorXd rhs = Eigen::VectorXd::Zero(F + 1);
    const auto add_row = [&](const Eigen::VectorXd& row, double label) {
      A += row * row.transpose();
      rhs += row * label;
    };
    for (Index s = 0; s < M; ++s) {
      if (s == g) continue;
      Eigen::VectorXd row(F + 1);
      row.head(F) = X.row(s).transpose().cwiseQuotient(sd);
      row(F) = atoms(s);
      add_row(row, y(s));
      for (Index i = b.index.begin(s); i < b.index.end(s); ++i)
        for (Index x = 0; x < 3; ++x) {
          row.head(F) = std::sqrt(c) * J.row(3 * i + x).transpose().cwiseQuotient(sd);
          row(F) = 0.0;
          add_row(row, -std::sqrt(c) * d.forces(i, x));
        }
    }
    A.diagonal().head(F).array() += fit.lambda * static_cast<double>(M);
    const Eigen::VectorXd sol = A.ldlt().solve(rhs);
    const Eigen::VectorXd w = sol.head(F).cwiseQuotient(sd);
    const double energy_residual = y(g) - X.row(g).dot(w) - atoms(g) * sol(F);
    CHECK(fit.loo_residuals(g) == Approx(energy_residual).epsilon(1e-6).margin(1e-9));
    for (Index i = b.index.begin(g); i < b.index.end(g); ++i)
      for (Index x = 0; x < 3; ++x) {
        const double r = d.forces(i, x) + J.row(3 * i + x).dot(w);
        force_sq += r * r;
      }
  }
  const double explicit_rmse = std::sqrt(force_sq / static_cast<double>(3 * b.num_atoms()));
  CHECK(fit.force_loo_rmse == Approx(explicit_rmse).epsilon(1e-6));
}
