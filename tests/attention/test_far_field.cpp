// The far field of the geometric FLT attention (far_field.hpp; method notes E29-E31): spherical
// designs, the mask estimate against the closed form with a derived error bound, the fast path
// against the O(n^2) closed form (F1), gradients, rotation / translation behaviour, determinism,
// the role of every term of the fast path, and error handling.
#include "core/error.hpp"
#include "core/gradcheck.hpp"
#include "core/random.hpp"
#include "attention/far_field.hpp"

#include <Eigen/Geometry>
#include <catch2/catch.hpp>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <type_traits>
#include <vector>

using namespace flt;
using namespace flt::attn;

namespace {

// Brute-force neighbour list (independent of neighbours.cpp's builders): sources sorted.
NeighbourList brute_list(const RaggedIndex& sets, const Mat<double>& X, double cutoff, bool self = true) {
  NeighbourList nb;
  nb.cutoff = cutoff;
  nb.include_self = self;
  nb.offsets.push_back(0);
  for (Index s = 0; s < sets.num_sets(); ++s)
    for (Index i = sets.begin(s); i < sets.end(s); ++i) {
      for (Index j = sets.begin(s); j < sets.end(s); ++j)
        if ((i != j || self) && (X.row(i) - X.row(j)).norm() < cutoff) {
          nb.source.push_back(static_cast<std::int32_t>(j));
          nb.target.push_back(static_cast<std::int32_t>(i));
        }
      nb.offsets.push_back(static_cast<std::int64_t>(nb.source.size()));
    }
  return nb;
}

// n points uniform in a ball of the given radius around `centre`, appended to X.
void add_cluster(std::vector<Eigen::Vector3d>& pts, Index n, double radius, const Eigen::Vector3d& centre, Rng& rng) {
  for (Index i = 0; i < n;) {
    const Eigen::Vector3d p(rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1));
    if (p.squaredNorm() > 1.0) continue;
    pts.push_back(centre + radius * p);
    ++i;
  }
}

struct Batch {
  RaggedIndex sets;
  Mat<double> X;
};

// Sets of the given sizes and radii, each around its own random centre.
Batch make_batch(const std::vector<Index>& sizes, const std::vector<double>& radii, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<Eigen::Vector3d> pts;
  for (std::size_t s = 0; s < sizes.size(); ++s)
    add_cluster(pts, sizes[s], radii[s], Eigen::Vector3d(rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-20, 20)), rng);
  Batch b;
  b.sets = RaggedIndex::from_sizes(sizes);
  b.X.resize(static_cast<Index>(pts.size()), 3);
  for (std::size_t i = 0; i < pts.size(); ++i) b.X.row(static_cast<Index>(i)) = pts[i].transpose();
  return b;
}

Mat<double> random_matrix(Index rows, Index cols, Rng& rng, double lo = -1.0, double hi = 1.0) {
  Mat<double> M(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) M(i, j) = rng.uniform(lo, hi);
  return M;
}

FarFieldConfig make_config(Index H, Index dv, Index K, double first, double spacing, double cutoff) {
  FarFieldConfig c;
  c.heads = H;
  c.value_dim = dv;
  c.nodes.count = K;
  c.nodes.first = first;
  c.nodes.spacing = spacing;
  c.cutoff = cutoff;
  return c;
}

template <class T>
Mat<T> run_fast(const FarFieldConfig& c, const SphericalDesign& d, const RaggedIndex& sets, const NeighbourList& nb,
                const Mat<double>& X, const Mat<T>& V, const Mat<T>& A, FarFieldCache<T>* cache_out = nullptr) {
  Mat<T> out(X.rows(), c.heads * c.value_dim);
  FarFieldCache<T> cache;
  far_field_forward<T>(c, d, sets, nb, X, V, A, out, cache);
  if (cache_out) *cache_out = cache;
  return out;
}

template <class T>
Mat<T> run_exact(const FarFieldConfig& c, const RaggedIndex& sets, const Mat<double>& X, const Mat<T>& V, const Mat<T>& A) {
  Mat<T> out(X.rows(), c.heads * c.value_dim);
  far_field_exact_forward<T>(c, sets, X, V, A, out);
  return out;
}

double rel_diff(const Mat<double>& a, const Mat<double>& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(1e-300, b.cwiseAbs().maxCoeff());
}

// Sphere average of x^a y^b z^c: (a-1)!!(b-1)!!(c-1)!! / (a+b+c+1)!! for even a, b, c, else 0.
double sphere_average(int a, int b, int c) {
  if (a % 2 || b % 2 || c % 2) return 0.0;
  auto dfact = [](int n) {
    double r = 1.0;
    for (int k = n; k > 1; k -= 2) r *= k;
    return r;
  };
  return dfact(a - 1) * dfact(b - 1) * dfact(c - 1) / dfact(a + b + c + 1);
}

// The design's quadrature of x^a y^b z^c, symmetrised (each direction stands for u and -u).
double quadrature(const SphericalDesign& d, int a, int b, int c) {
  double q = 0.0;
  for (Index m = 0; m < d.size(); ++m) {
    const double x = d.directions(m, 0), y = d.directions(m, 1), z = d.directions(m, 2);
    const double p = std::pow(x, a) * std::pow(y, b) * std::pow(z, c);
    q += d.weights[static_cast<std::size_t>(m)] * 0.5 * (p + ((a + b + c) % 2 ? -p : p));
  }
  return q;
}

// Max error of the quadrature over all monomials of total degree `deg`.
double max_monomial_error(const SphericalDesign& d, int deg) {
  double err = 0.0;
  for (int a = 0; a <= deg; ++a)
    for (int b = 0; a + b <= deg; ++b) {
      const int c = deg - a - b;
      err = std::max(err, std::abs(quadrature(d, a, b, c) - sphere_average(a, b, c)));
    }
  return err;
}

// Spherical Bessel j_l(x) for 0 <= x < about 2 sqrt(l) + 10 by its power series.
double spherical_jl(int l, double x) {
  double lead = 1.0;  // x^l / (2l+1)!!
  for (int i = 1; i <= l; ++i) lead *= x / (2.0 * i + 1.0);
  double term = lead, sum = lead;
  for (int k = 1; k < 200 && std::abs(term) > 1e-30 * std::abs(lead); ++k) {
    term *= -0.5 * x * x / (k * (2.0 * l + 2.0 * k + 1.0));
    sum += term;
  }
  return sum;
}

// Bound on |sum_m lam_m cos(x u_m.e) - j0(x)| for a design exact to degree D and weights >= 0:
// with the plane-wave expansion cos(x u.e) = sum_{l even} (2l+1) (-1)^(l/2) j_l(x) P_l(u.e),
// terms l <= D integrate exactly (to 0 for l > 0), and each term beyond has |quadrature| <= 1.
double quadrature_bound(int D, double x) {
  double b = 0.0;
  for (int l = D + 1; l <= D + 80; ++l)
    if (l % 2 == 0) b += (2.0 * l + 1.0) * std::abs(spherical_jl(l, x));
  return b;
}

Eigen::Matrix3d random_rotation(Rng& rng) {
  Eigen::Vector4d q(rng.normal(), rng.normal(), rng.normal(), rng.normal());
  q.normalize();
  const double w = q(0), x = q(1), y = q(2), z = q(3);
  Eigen::Matrix3d R;
  R << 1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
      2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
      2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y);
  return R;
}

std::span<double> span_of(Mat<double>& M) { return {M.data(), static_cast<std::size_t>(M.size())}; }

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("Product grid integrates spherical polynomials exactly up to its degree, and no further",
          "[far_field]") {
  for (int degree : {0, 1, 2, 5, 8, 15, 20}) {
    const SphericalDesign d = SphericalDesign::product_grid(degree);
    INFO("degree " << degree << " -> exact degree " << d.degree << ", M = " << d.size());
    CHECK(d.degree >= degree);
    CHECK(d.degree <= degree + 1);
    double sum = 0.0;
    for (double w : d.weights) {
      CHECK(w > 0.0);
      sum += w;
    }
    CHECK(std::abs(sum - 1.0) < 1e-14);
    for (Index m = 0; m < d.size(); ++m) {
      CHECK(std::abs(d.directions.row(m).norm() - 1.0) < 1e-14);
      CHECK(d.directions(m, 2) > 0.0);  // the t > 0 half
      for (Index k = m + 1; k < d.size(); ++k)  // no antipodal (nor repeated) pair left
        CHECK((d.directions.row(m) + d.directions.row(k)).norm() > 1e-6);
    }
    for (int deg = 0; deg <= d.degree; ++deg) CHECK(max_monomial_error(d, deg) < 1e-14);
    // sharp: some monomial of the next degree is not integrated (error far above rounding)
    CHECK(max_monomial_error(d, d.degree + 1) > 1e-9);
  }
  const SphericalDesign d15 = SphericalDesign::product_grid(15);
  CHECK(d15.size() == 64);  // 8 Gauss-Legendre nodes x 16 phi, halved
  CHECK(d15.degree == 15);
  // z^16 alone shows it: 8 Gauss-Legendre nodes are exact to degree 15 in cos(theta)
  CHECK(std::abs(quadrature(d15, 0, 0, 16) - sphere_average(0, 0, 16)) > 1e-6);
  CHECK(std::abs(quadrature(d15, 0, 0, 14) - sphere_average(0, 0, 14)) < 1e-15);
}

TEST_CASE("i.i.d. and rotated designs", "[far_field]") {
  Rng rng(4);
  const SphericalDesign d = SphericalDesign::iid(500, rng);
  REQUIRE(d.size() == 500);
  for (Index m = 0; m < d.size(); ++m) CHECK(std::abs(d.directions.row(m).norm() - 1.0) < 1e-14);
  for (double w : d.weights) CHECK(w == 1.0 / 500.0);
  // unbiased for sphere averages: second moments near 1/3 (sd about 0.3/sqrt(500))
  CHECK(std::abs(quadrature(d, 2, 0, 0) - 1.0 / 3.0) < 0.06);
  const Eigen::Matrix3d R = random_rotation(rng);
  const SphericalDesign g = SphericalDesign::product_grid(7), gr = g.rotated(R);
  for (Index m = 0; m < g.size(); ++m)
    CHECK((gr.directions.row(m).transpose() - R * g.directions.row(m).transpose()).norm() < 1e-15);
  CHECK(gr.weights == g.weights);
  CHECK(gr.degree == g.degree);
  for (int deg = 0; deg <= g.degree; ++deg) CHECK(max_monomial_error(gr, deg) < 1e-14);
  CHECK(to_string(DesignKind::product_grid) == std::string("product_grid"));
  CHECK(design_kind_from_string("iid") == DesignKind::iid);
  CHECK(design_kind_from_string(to_string(DesignKind::product_grid)) == DesignKind::product_grid);
}

TEST_CASE("Mask estimate of the product grid is within the quadrature bound, i.i.d. error ~ 1/sqrt(M)",
          "[far_field]") {
  // random cluster of radius 6 A (pair distances up to 12 A), nodes kappa = 0 .. 0.1 cycles/A
  const Batch b = make_batch({60}, {6.0}, 11);
  const FarFieldConfig c = make_config(1, 1, 5, 0.0, 0.025, 5.0);
  const std::vector<double> a = {0.4, 1.0, 0.7, 0.5, 0.3};
  const Mat<double> exact = mask_exact(c, b.X, a);
  const double f0 = exact(0, 0);
  CHECK(f0 == Approx(2.9).epsilon(1e-14));  // sum a_n j0(0)
  const SphericalDesign d = SphericalDesign::product_grid(15);
  const Mat<double> est = mask_estimate(c, d, b.X, a);
  double max_err = 0.0, max_ratio = 0.0, max_bound = 0.0;
  for (Index i = 0; i < b.X.rows(); ++i)
    for (Index j = 0; j < b.X.rows(); ++j) {
      const double rho = (b.X.row(i) - b.X.row(j)).norm();
      double bound = 1e-14 * f0;  // rounding
      for (Index n = 0; n < 5; ++n) bound += a[static_cast<std::size_t>(n)] * quadrature_bound(15, 2 * std::numbers::pi * c.nodes.kappa(n) * rho);
      const double err = std::abs(est(i, j) - exact(i, j));
      max_err = std::max(max_err, err);
      max_bound = std::max(max_bound, bound);
      max_ratio = std::max(max_ratio, err / bound);
    }
  INFO("max |est - f| / f(0) = " << max_err / f0 << ", largest bound / f(0) = " << max_bound / f0);
  CHECK(max_ratio <= 1.0);          // every pair within its derived bound
  CHECK(max_err < 2e-4 * f0);       // bound at the widest pair: 2 pi 0.1 12 = 7.5 rad, degree 15
  // Nearer pairs (rho <= 8 A: x <= 5 rad) are estimated to < 1e-6 f(0), as the bound says.
  double near_err = 0.0, near_bound = 0.0;
  for (Index i = 0; i < b.X.rows(); ++i)
    for (Index j = 0; j < b.X.rows(); ++j)
      if ((b.X.row(i) - b.X.row(j)).norm() <= 8.0) near_err = std::max(near_err, std::abs(est(i, j) - exact(i, j)));
  for (Index n = 0; n < 5; ++n) near_bound += a[static_cast<std::size_t>(n)] * quadrature_bound(15, 2 * std::numbers::pi * c.nodes.kappa(n) * 8.0);
  INFO("rho <= 8: error / f(0) = " << near_err / f0 << ", bound / f(0) = " << near_bound / f0);
  CHECK(near_bound < 1e-6 * f0);
  CHECK(near_err < 1e-6 * f0);
  // Self pairs: est(i, i) = sum_n a_n sum_m lam_m = f(0)
  for (Index i = 0; i < b.X.rows(); ++i) CHECK(std::abs(est(i, i) - f0) < 1e-14 * f0);

  // i.i.d. directions: the error is much larger and shrinks like 1/sqrt(M) (RMS, 6 draws each)
  std::vector<double> rms;
  for (Index M : {64, 256, 1024}) {
    double s2 = 0.0;
    for (std::uint64_t seed = 0; seed < 6; ++seed) {
      Rng rng(100 + seed);
      const Mat<double> e = mask_estimate(c, SphericalDesign::iid(M, rng), b.X, a);
      s2 += (e - exact).squaredNorm() / static_cast<double>(exact.size());
    }
    rms.push_back(std::sqrt(s2 / 6.0));
  }
  INFO("iid RMS error / f(0): " << rms[0] / f0 << " " << rms[1] / f0 << " " << rms[2] / f0);
  CHECK(rms[0] > 1e-3 * f0);
  CHECK(rms[0] > 100.0 * max_err);
  CHECK(rms[0] / rms[1] == Approx(2.0).margin(0.5));
  CHECK(rms[1] / rms[2] == Approx(2.0).margin(0.5));
}

TEST_CASE("Fast far field matches the closed form (F1) on batches, double and float", "[far_field]") {
  // two complete small molecules, clusters of 60, 150 and 300 atoms (radius up to 9 A), cutoff 4;
  // nodes 0 .. 0.05 cycles/A with a degree-23 design: 2 pi 0.05 18 = 5.7 rad, bound ~ 1e-13
  const Batch b = make_batch({5, 8, 60, 150, 300}, {1.2, 1.5, 5.0, 7.0, 9.0}, 21);
  // H dv = 64: the 60-atom set goes through the Gram matrices, the larger ones through the sums
  const FarFieldConfig c = make_config(4, 16, 5, 0.0, 0.0125, 4.0);
  const SphericalDesign d = SphericalDesign::product_grid(23);
  REQUIRE(quadrature_bound(23, 2 * std::numbers::pi * 0.05 * 18.0) < 1e-11);
  Rng rng(5);
  const Mat<double> V = random_matrix(b.X.rows(), 64, rng);
  const Mat<double> A = random_matrix(4, 5, rng, 0.1, 1.0);
  const Mat<double> ref = run_exact<double>(c, b.sets, b.X, V, A);
  for (bool self : {true, false}) {
    const NeighbourList nb = brute_list(b.sets, b.X, c.cutoff, self);
    FarFieldCache<double> cache;
    const Mat<double> out = run_fast<double>(c, d, b.sets, nb, b.X, V, A, &cache);
    INFO("include_self " << self << ": relative difference " << rel_diff(out, ref));
    CHECK(rel_diff(out, ref) < 1e-9);
    // the two molecules are complete: exact sums only, no features
    CHECK(cache.sum_of_set[0] == -1);
    CHECK(cache.sum_of_set[1] == -1);
    CHECK(cache.sum_of_set[2] == -2);  // small: Gram matrices
    CHECK(cache.sum_of_set[3] == 0);   // sums (one task)
    CHECK(cache.sum_of_set[4] == 1);   // sums (row chunks, partial sums)
    CHECK(cache.sums.size() == 2);
    CHECK(cache.sums[0].rows() == 1 + 4 * 2 * d.size());  // zero node: one constant feature
    // complete sets agree to rounding
    CHECK((out.topRows(13) - ref.topRows(13)).cwiseAbs().maxCoeff() < 1e-14 * ref.cwiseAbs().maxCoeff());
  }
  // the neighbour list may have a larger cutoff than the partition
  CHECK(rel_diff(run_fast<double>(c, d, b.sets, brute_list(b.sets, b.X, 5.5), b.X, V, A), ref) < 1e-9);
  // nodes without a zero node (Bessel-like: first = spacing) work the same way
  const FarFieldConfig cb = make_config(4, 16, 4, 0.0125, 0.0125, 4.0);
  const Mat<double> Ab = random_matrix(4, 4, rng, 0.1, 1.0);
  const NeighbourList nb = brute_list(b.sets, b.X, c.cutoff);
  CHECK(rel_diff(run_fast<double>(cb, d, b.sets, nb, b.X, V, Ab), run_exact<double>(cb, b.sets, b.X, V, Ab)) < 1e-9);

  // a single zero node (a constant mask): the estimate is exact for any design, even one direction
  const FarFieldConfig c0 = make_config(4, 16, 1, 0.0, 0.1, 4.0);
  const Mat<double> A0 = random_matrix(4, 1, rng, 0.1, 1.0);
  Rng one(8);
  CHECK(rel_diff(run_fast<double>(c0, SphericalDesign::iid(1, one), b.sets, nb, b.X, V, A0),
                 run_exact<double>(c0, b.sets, b.X, V, A0)) < 1e-13);

  // float: inputs rounded to float; compared with the double closed form of the same inputs
  const Mat<float> Vf = V.cast<float>(), Af = A.cast<float>();
  const Mat<double> ref_f = run_exact<double>(c, b.sets, b.X, Vf.cast<double>(), Af.cast<double>());
  const Mat<double> out_f = run_fast<float>(c, d, b.sets, nb, b.X, Vf, Af).cast<double>();
  const Mat<double> exact_f = run_exact<float>(c, b.sets, b.X, Vf, Af).cast<double>();
  INFO("float: fast " << rel_diff(out_f, ref_f) << ", exact " << rel_diff(exact_f, ref_f));
  CHECK(rel_diff(out_f, ref_f) < 1e-6);
  CHECK(rel_diff(exact_f, ref_f) < 1e-6);
}

TEST_CASE("Far field gradients match central differences (fast and exact paths)", "[far_field][gradcheck]") {
  // a complete molecule (all pairs within the cutoff), an incomplete cluster (sums) and a small
  // incomplete one (Gram matrices)
  const Batch b = make_batch({6, 30, 10}, {1.4, 6.0, 6.0}, 31);
  const FarFieldConfig c = make_config(2, 3, 4, 0.0, 0.04, 4.0);
  Rng rng(7);
  Mat<double> V = random_matrix(b.X.rows(), 6, rng);
  Mat<double> A = random_matrix(2, 4, rng, 0.2, 1.0);
  Mat<double> X = b.X;
  const Mat<double> G = random_matrix(b.X.rows(), 6, rng);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);  // many tiny calls
  for (int variant = 0; variant < 4; ++variant) {
    // 0: exact path; 1: fast, product grid, list with self pairs; 2: without self pairs; 3: iid, no zero node
    const bool exact = variant == 0;
    const FarFieldConfig cv = variant == 3 ? make_config(2, 3, 4, 0.03, 0.04, 4.0) : c;
    Rng drng(3);
    const SphericalDesign d = variant == 3 ? SphericalDesign::iid(20, drng) : SphericalDesign::product_grid(9);
    const NeighbourList nb = brute_list(b.sets, b.X, c.cutoff, variant != 2);
    auto forward = [&] {
      return exact ? run_exact<double>(cv, b.sets, X, V, A) : run_fast<double>(cv, d, b.sets, nb, X, V, A);
    };
    auto loss = [&] { return forward().cwiseProduct(G).sum(); };
    Mat<double> dV = Mat<double>::Zero(V.rows(), V.cols()), dX = Mat<double>::Zero(X.rows(), 3),
                dA = Mat<double>::Zero(2, 4);
    if (exact) {
      far_field_exact_backward<double>(cv, b.sets, X, V, A, G, dV, dX, dA);
    } else {
      FarFieldCache<double> cache;
      Mat<double> out(X.rows(), 6);
      far_field_forward<double>(cv, d, b.sets, nb, X, V, A, out, cache);
      REQUIRE(cache.sum_of_set[0] == -1);
      REQUIRE(cache.sum_of_set[1] == 0);
      REQUIRE(cache.sum_of_set[2] == -2);
      far_field_backward<double>(cv, d, b.sets, nb, X, V, A, cache, G, dV, dX, dA);
      // accumulates, and an empty dcoords skips the coordinates without changing the rest
      Mat<double> dV2 = dV, dA2 = dA, none(0, 3);
      far_field_backward<double>(cv, d, b.sets, nb, X, V, A, cache, G, dV2, none, dA2);
      CHECK((dV2 - 2 * dV).cwiseAbs().maxCoeff() < 1e-12);
      CHECK((dA2 - 2 * dA).cwiseAbs().maxCoeff() < 1e-12);
    }
    const double ev = check_gradient(loss, span_of(V), span_of(dV)).max_rel_error;
    const double ea = check_gradient(loss, span_of(A), span_of(dA)).max_rel_error;
    const double ex = check_gradient(loss, span_of(X), span_of(dX)).max_rel_error;
    INFO("variant " << variant << ": V " << ev << ", coeffs " << ea << ", coords " << ex);
    CHECK(ev < 1e-6);
    CHECK(ea < 1e-6);
    CHECK(ex < 1e-6);
    CHECK(dX.cwiseAbs().maxCoeff() > 1e-3);  // non-trivial
  }
  omp_set_num_threads(threads);
}

TEST_CASE("Rotations change the output only by the quadrature error, translations not at all", "[far_field]") {
  const Batch b = make_batch({150}, {7.0}, 41);
  const FarFieldConfig c = make_config(2, 4, 4, 0.0, 0.015, 4.0);  // 2 pi 0.045 14 = 4 rad
  Rng rng(9);
  const Mat<double> V = random_matrix(b.X.rows(), 8, rng);
  const Mat<double> A = random_matrix(2, 4, rng, 0.2, 1.0);
  const Eigen::Matrix3d R = random_rotation(rng);
  const Mat<double> XR = b.X * R.transpose();
  const Mat<double> XT = b.X.rowwise() + Eigen::RowVector3d(1000.0, -2000.0, 500.0);
  const NeighbourList nb = brute_list(b.sets, b.X, c.cutoff);
  const NeighbourList nbR = brute_list(b.sets, XR, c.cutoff), nbT = brute_list(b.sets, XT, c.cutoff);
  REQUIRE(nbR.source == nb.source);
  REQUIRE(nbT.source == nb.source);
  const SphericalDesign grid = SphericalDesign::product_grid(15);
  Rng drng(2);
  const SphericalDesign iid = SphericalDesign::iid(64, drng);
  const Mat<double> ref = run_exact<double>(c, b.sets, b.X, V, A);
  for (const SphericalDesign* d : {&grid, &iid}) {
    const Mat<double> out = run_fast<double>(c, *d, b.sets, nb, b.X, V, A);
    const Mat<double> rot = run_fast<double>(c, *d, b.sets, nbR, XR, V, A);
    const Mat<double> moved = run_fast<double>(c, *d, b.sets, nbT, XT, V, A);
    // rotating the design with the coordinates is an exact symmetry
    const Mat<double> both = run_fast<double>(c, d->rotated(R), b.sets, nbR, XR, V, A);
    const bool is_grid = d == &grid;
    INFO((is_grid ? "grid" : "iid") << ": rotation " << rel_diff(rot, out) << ", translation "
                                    << rel_diff(moved, out) << ", rotated design " << rel_diff(both, out));
    CHECK(rel_diff(moved, out) < 1e-10);
    CHECK(rel_diff(both, out) < 1e-11);
    if (is_grid) {
      CHECK(rel_diff(rot, out) < 1e-8);
      CHECK(rel_diff(out, ref) < 1e-8);
    } else {
      CHECK(rel_diff(rot, out) > 1e-4);
      CHECK(rel_diff(out, ref) > 1e-4);
    }
  }
}

// The near pairs' estimate through the product grid's closed form (Jacobi-Anger: J_0 and J_N per
// polar node) against the direct sum over the grid's directions. The same directions with
// degree 0 (no grid recognised) take the direct sum; forward and every gradient must agree to
// rounding. At the model's settings (degree 12: N = 14 azimuths, nodes 0.025 / A apart, 5 A
// cutoff; a up to 2.3) and at stretched ones (degree 20, nodes 0.05 / A apart, 3 A; a up to 2.8),
// in a random orientation (a training draw) and in the canonical one, sets large enough to use
// the feature sums (the Gram path has no pair estimate).
TEST_CASE("Far field: the product grid's closed-form pair estimate equals the direct sum", "[far_field]") {
  struct Setting {
    int degree;
    double spacing, cutoff;
  };
  for (const Setting st : {Setting{12, 0.025, 5.0}, Setting{20, 0.05, 3.0}}) {
    INFO("degree " << st.degree << ", spacing " << st.spacing << ", cutoff " << st.cutoff);
    const Batch b = make_batch({700, 500}, {12.0, 9.0}, 77);
    const FarFieldConfig c = make_config(2, 8, 4, 0.0, st.spacing, st.cutoff);
    const NeighbourList nb = brute_list(b.sets, b.X, c.cutoff);
    Rng rng(5);
    const Mat<double> V = random_matrix(b.X.rows(), 16, rng), A = random_matrix(2, 4, rng, 0.1, 1.0);
    const Mat<double> G = random_matrix(b.X.rows(), 16, rng);
    Eigen::Matrix3d rotation = Eigen::Quaterniond(rng.normal(), rng.normal(), rng.normal(), rng.normal())
                                   .normalized()
                                   .toRotationMatrix();
    // beyond its range (a = 2 pi kappa rho s up to 28 here) and for i.i.d. directions: the direct sum
    REQUIRE(!far_field_closed_form(make_config(2, 8, 4, 0.0, 0.3, 5.0), SphericalDesign::product_grid(st.degree)));
    Rng design_rng(3);
    REQUIRE(!far_field_closed_form(c, SphericalDesign::iid(64, design_rng)));
    for (const bool rotate : {true, false}) {
      INFO("rotated " << rotate);
      const SphericalDesign grid = SphericalDesign::product_grid(st.degree);
      const SphericalDesign closed = rotate ? grid.rotated(rotation) : grid;
      SphericalDesign direct = closed;
      direct.degree = 0;
      REQUIRE(far_field_closed_form(c, closed));
      REQUIRE(!far_field_closed_form(c, direct));
      auto run = [&](const SphericalDesign& d) {
        FarFieldCache<double> cache;
        Mat<double> out(V.rows(), 16), dV = Mat<double>::Zero(V.rows(), 16), dX = Mat<double>::Zero(V.rows(), 3),
                    dA = Mat<double>::Zero(2, 4);
        far_field_forward<double>(c, d, b.sets, nb, b.X, V, A, out, cache);
        REQUIRE(cache.sum_of_set[0] >= 0);
        far_field_backward<double>(c, d, b.sets, nb, b.X, V, A, cache, G, dV, dX, dA);
        return std::vector<Mat<double>>{out, dV, dX, dA};
      };
      const auto x = run(closed), y = run(direct);
      const char* names[] = {"out", "dV", "dcoords", "dcoeffs"};
      for (std::size_t r = 0; r < x.size(); ++r) {
        INFO(names[r] << ": largest difference / largest value " << rel_diff(x[r], y[r]));
        CHECK(rel_diff(x[r], y[r]) < 1e-13);
      }
    }
  }
}

TEST_CASE("Far field is bitwise deterministic across thread counts", "[far_field]") {
  // QM9-like molecules (some complete, most not), a 600-row set (one task, several row blocks) and
  // a 1500-row set (row chunks, partial sums in chunk order)
  std::vector<Index> sizes(24, 18);
  std::vector<double> radii(24, 3.0);
  radii[0] = radii[1] = 1.0;
  sizes.push_back(600);
  radii.push_back(11.0);
  sizes.push_back(1100);
  radii.push_back(13.5);
  const Batch b = make_batch(sizes, radii, 51);
  const FarFieldConfig c = make_config(2, 16, 3, 0.0, 0.03, 3.0);
  const SphericalDesign d = SphericalDesign::product_grid(7);
  const NeighbourList nb = brute_list(b.sets, b.X, c.cutoff);
  Rng rng(13);
  const Mat<double> V = random_matrix(b.X.rows(), 32, rng), A = random_matrix(2, 3, rng, 0.1, 1.0);
  const Mat<double> G = random_matrix(b.X.rows(), 32, rng);
  auto run = [&](int threads, auto tag) {
    using T = decltype(tag);
    omp_set_num_threads(threads);
    const Mat<T> Vt = V.cast<T>(), At = A.cast<T>(), Gt = G.cast<T>();
    FarFieldCache<T> cache;
    Mat<T> out(V.rows(), 32), dV = Mat<T>::Zero(V.rows(), 32), dX = Mat<T>::Zero(V.rows(), 3), dA = Mat<T>::Zero(2, 3);
    far_field_forward<T>(c, d, b.sets, nb, b.X, Vt, At, out, cache);
    // every mode: complete molecules, Gram matrices, sums in one task, sums over row chunks
    CHECK(cache.sum_of_set[0] == -1);
    CHECK(cache.sum_of_set[2] == -2);
    CHECK(cache.sum_of_set[24] == 0);
    CHECK(cache.sum_of_set[25] == 1);
    far_field_backward<T>(c, d, b.sets, nb, b.X, Vt, At, cache, Gt, dV, dX, dA);
    std::vector<Mat<T>> r{out, dV, dX, dA};
    if (std::is_same_v<T, double>) {  // the exact path too (its threading is the same in float)
      Mat<T> eout(V.rows(), 32), edV = Mat<T>::Zero(V.rows(), 32), edX = Mat<T>::Zero(V.rows(), 3),
                                edA = Mat<T>::Zero(2, 3);
      far_field_exact_forward<T>(c, b.sets, b.X, Vt, At, eout);
      far_field_exact_backward<T>(c, b.sets, b.X, Vt, At, Gt, edV, edX, edA);
      r.insert(r.end(), {eout, edV, edX, edA});
    }
    return r;
  };
  const int threads = omp_get_max_threads();
  const auto r1 = run(1, 0.0), r2 = run(2, 0.0);
  const auto f1 = run(1, 0.0f), f2 = run(2, 0.0f);
  omp_set_num_threads(threads);
  REQUIRE(r1.size() == 8);
  REQUIRE(f1.size() == 4);
  for (std::size_t k = 0; k < r1.size(); ++k) {
    INFO("result " << k);
    CHECK((r1[k].array() == r2[k].array()).all());
    if (k < f1.size()) CHECK((f1[k].array() == f2[k].array()).all());
  }
}

TEST_CASE("Far field: a backward from the forward's kept pair terms equals one that computes them",
          "[far_field]") {
  // The model's far-field settings (4 nodes from 0 at 0.025 cycles/A, product grid of degree 12,
  // cutoff 5 A, 2 heads x 16) on complete molecules, a small incomplete set (Gram matrices), a
  // 400-atom cluster (sums) and a list without self pairs, as the model builds it.
  std::vector<Index> sizes{9, 12, 40, 400};
  std::vector<double> radii{1.2, 1.5, 6.0, 10.0};
  const Batch b = make_batch(sizes, radii, 83);
  const FarFieldConfig c = make_config(2, 16, 4, 0.0, 0.025, 5.0);
  const SphericalDesign d = SphericalDesign::product_grid(12);
  const NeighbourList nb = brute_list(b.sets, b.X, c.cutoff, false);
  const Index N = b.X.rows();
  Rng rng(29);
  const Mat<double> V = random_matrix(N, 32, rng), A = random_matrix(2, 4, rng, 0.1, 1.0);
  const Mat<double> G = random_matrix(N, 32, rng);
  auto run = [&](auto tag, bool keep, bool coordinates, double scale_kept) {
    using T = decltype(tag);
    const Mat<T> Vt = V.cast<T>(), At = A.cast<T>(), Gt = G.cast<T>();
    FarFieldCache<T> cache;
    cache.keep_pair_terms = keep;
    Mat<T> out(N, 32), dV = Mat<T>::Zero(N, 32), dA = Mat<T>::Zero(2, 4);
    Mat<T> dX = Mat<T>::Zero(coordinates ? N : 0, 3);
    far_field_forward<T>(c, d, b.sets, nb, b.X, Vt, At, out, cache);
    CHECK(cache.pair_terms.empty() == !keep);
    CHECK(cache.sum_of_set == std::vector<Index>{-1, -1, -2, 0});  // complete, Gram, sums
    for (auto& terms : cache.pair_terms) terms *= static_cast<T>(scale_kept);
    far_field_backward<T>(c, d, b.sets, nb, b.X, Vt, At, cache, Gt, dV, dX, dA);
    return std::vector<Mat<double>>{dV.template cast<double>(), dA.template cast<double>(), dX.template cast<double>()};
  };
  // double: the kept terms are the ones the backward computes, bitwise
  const auto computed = run(0.0, false, false, 1.0), kept = run(0.0, true, false, 1.0);
  for (std::size_t k = 0; k < 2; ++k) {
    INFO("double, result " << k);
    CHECK((computed[k].array() == kept[k].array()).all());
  }
  // float: kept in float, the backward's pair terms rounded once
  const auto fcomputed = run(0.0f, false, false, 1.0), fkept = run(0.0f, true, false, 1.0);
  for (std::size_t k = 0; k < 2; ++k) {
    INFO("float, result " << k << ": " << rel_diff(fcomputed[k], fkept[k]));
    CHECK(rel_diff(fcomputed[k], fkept[k]) < 1e-6);
  }
  // the backward reads them: kept terms scaled by 1.01 move dV and da
  const auto scaled = run(0.0, true, false, 1.01);
  CHECK(rel_diff(computed[0], scaled[0]) > 1e-4);
  CHECK(rel_diff(computed[1], scaled[1]) > 1e-4);
  // with coordinate gradients they are not used: the same as without them, scaled or not
  const auto with_dX = run(0.0, false, true, 1.0), with_dX_kept = run(0.0, true, true, 1.01);
  for (std::size_t k = 0; k < 3; ++k) {
    INFO("coordinate gradients, result " << k);
    CHECK((with_dX[k].array() == with_dX_kept[k].array()).all());
  }
  // kept terms that do not match the list are refused
  FarFieldCache<double> cache;
  cache.keep_pair_terms = true;
  Mat<double> out(N, 32), dV = Mat<double>::Zero(N, 32), dA = Mat<double>::Zero(2, 4), no_dX;
  far_field_forward<double>(c, d, b.sets, nb, b.X, V, A, out, cache);
  cache.pair_terms.back().conservativeResize(cache.pair_terms.back().rows() - 1, Eigen::NoChange);
  CHECK_THROWS_AS(far_field_backward<double>(c, d, b.sets, nb, b.X, V, A, cache, G, dV, no_dX, dA), InvalidArgument);
  cache.pair_terms.pop_back();
  CHECK_THROWS_AS(far_field_backward<double>(c, d, b.sets, nb, b.X, V, A, cache, G, dV, no_dX, dA), InvalidArgument);
}

TEST_CASE("Every term of the fast path matters: dropping one breaks the agreement", "[far_field]") {
  const Batch b = make_batch({150}, {7.0}, 61);
  const FarFieldConfig c = make_config(2, 3, 4, 0.0, 0.015, 4.0);
  const SphericalDesign d = SphericalDesign::product_grid(23);
  Rng rng(17);
  const Mat<double> V = random_matrix(b.X.rows(), 6, rng), A = random_matrix(2, 4, rng, 0.2, 1.0);
  const NeighbourList nb = brute_list(b.sets, b.X, c.cutoff);
  const Mat<double> fast = run_fast<double>(c, d, b.sets, nb, b.X, V, A);
  const Mat<double> ref = run_exact<double>(c, b.sets, b.X, V, A);
  REQUIRE(rel_diff(fast, ref) < 1e-9);
  const Index n = b.X.rows();
  // the three terms, per head, from the diagnostics
  Mat<double> all_est = Mat<double>::Zero(n, 6), near_est = all_est, near_exact = all_est, near_mask = all_est;
  for (Index h = 0; h < 2; ++h) {
    const std::vector<double> a(A.row(h).data(), A.row(h).data() + 4);
    const Mat<double> est = mask_estimate(c, d, b.X, a), f = mask_exact(c, b.X, a);
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < n; ++j) all_est.row(i).segment(h * 3, 3) += est(i, j) * V.row(j).segment(h * 3, 3);
      for (auto p = nb.offsets[static_cast<std::size_t>(i)]; p < nb.offsets[static_cast<std::size_t>(i) + 1]; ++p) {
        const Index j = nb.source[static_cast<std::size_t>(p)];
        const double w = 1.0 - envelope((b.X.row(i) - b.X.row(j)).norm(), c.cutoff);
        near_est.row(i).segment(h * 3, 3) += est(i, j) * V.row(j).segment(h * 3, 3);
        near_exact.row(i).segment(h * 3, 3) += w * f(i, j) * V.row(j).segment(h * 3, 3);
        near_mask.row(i).segment(h * 3, 3) += f(i, j) * V.row(j).segment(h * 3, 3);
      }
    }
  }
  // the decomposition (E31) reproduces the fast path ...
  CHECK(rel_diff(all_est - near_est + near_exact, fast) < 1e-12);
  // ... and without any one of its terms, or with w = 1 near, the test above would fail
  const double no_subtraction = rel_diff(all_est + near_exact, ref);
  const double no_exact_near = rel_diff(all_est - near_est, ref);
  const double no_far = rel_diff(near_exact, ref);
  const double w_is_one = rel_diff(all_est - near_est + near_mask, ref);
  INFO("no subtraction " << no_subtraction << ", no exact near " << no_exact_near << ", no far " << no_far
                         << ", w = 1 " << w_is_one);
  CHECK(no_subtraction > 1e-2);
  CHECK(no_exact_near > 1e-2);
  CHECK(no_far > 1e-2);
  CHECK(w_is_one > 1e-2);
}

TEST_CASE("Far field rejects bad shapes, lists and configurations", "[far_field]") {
  const Batch b = make_batch({5, 20}, {1.0, 5.0}, 71);
  const FarFieldConfig c = make_config(2, 3, 3, 0.0, 0.05, 3.0);
  const SphericalDesign d = SphericalDesign::product_grid(5);
  const NeighbourList nb = brute_list(b.sets, b.X, c.cutoff);
  Rng rng(1);
  const Index N = b.X.rows();
  const Mat<double> V = random_matrix(N, 6, rng), A = random_matrix(2, 3, rng, 0.1, 1.0);
  Mat<double> out(N, 6);
  FarFieldCache<double> cache;
  far_field_forward<double>(c, d, b.sets, nb, b.X, V, A, out, cache);

  const Mat<double> Vbad = random_matrix(N, 5, rng), Abad = random_matrix(2, 4, rng), Xbad = random_matrix(N, 2, rng);
  Mat<double> outbad(N, 5);
  CHECK_THROWS_AS(far_field_forward<double>(c, d, b.sets, nb, b.X, Vbad, A, out, cache), InvalidArgument);
  CHECK_THROWS_AS(far_field_forward<double>(c, d, b.sets, nb, b.X, V, Abad, out, cache), InvalidArgument);
  CHECK_THROWS_AS(far_field_forward<double>(c, d, b.sets, nb, Xbad, V, A, out, cache), InvalidArgument);
  CHECK_THROWS_AS(far_field_forward<double>(c, d, b.sets, nb, b.X, V, A, outbad, cache), InvalidArgument);
  CHECK_THROWS_AS(far_field_exact_forward<double>(c, b.sets, b.X, Vbad, A, out), InvalidArgument);
  CHECK_THROWS_AS(far_field_exact_forward<double>(c, b.sets, Xbad, V, A, out), InvalidArgument);
  Mat<double> Xnan = b.X;
  Xnan(3, 1) = std::nan("");
  CHECK_THROWS_AS(far_field_forward<double>(c, d, b.sets, nb, Xnan, V, A, out, cache), InvalidArgument);
  // neighbour lists: other batch, too small a cutoff, malformed, asymmetric (backward)
  const RaggedIndex other = RaggedIndex::from_sizes(std::vector<Index>{N - 1});
  CHECK_THROWS_AS(far_field_forward<double>(c, d, b.sets, brute_list(other, b.X.topRows(N - 1), 3.0), b.X, V, A, out, cache),
                  InvalidArgument);
  CHECK_THROWS_AS(far_field_forward<double>(c, d, b.sets, brute_list(b.sets, b.X, 2.0), b.X, V, A, out, cache),
                  InvalidArgument);
  NeighbourList cross = nb;
  cross.source[0] = static_cast<std::int32_t>(N - 1);  // row 0 (set 0) pointing into set 1
  CHECK_THROWS_AS(far_field_forward<double>(c, d, b.sets, cross, b.X, V, A, out, cache), InvalidArgument);
  // drop one pair (i, j) of the big set but keep (j, i): fine forward, rejected backward
  NeighbourList asym = nb;
  {
    const Index i = 10;
    auto p = static_cast<std::size_t>(asym.offsets[static_cast<std::size_t>(i)]);
    if (asym.source[p] == i) ++p;
    asym.source.erase(asym.source.begin() + static_cast<std::ptrdiff_t>(p));
    asym.target.erase(asym.target.begin() + static_cast<std::ptrdiff_t>(p));
    for (std::size_t r = static_cast<std::size_t>(i) + 1; r < asym.offsets.size(); ++r) --asym.offsets[r];
  }
  FarFieldCache<double> cache_asym;
  far_field_forward<double>(c, d, b.sets, asym, b.X, V, A, out, cache_asym);
  Mat<double> dV = Mat<double>::Zero(N, 6), dX = Mat<double>::Zero(N, 3), dA = Mat<double>::Zero(2, 3);
  CHECK_THROWS_AS(far_field_backward<double>(c, d, b.sets, asym, b.X, V, A, cache_asym, out, dV, dX, dA), InvalidArgument);
  // Two more asymmetries, each dropping one pair (row, source) of the big set: (i, j), j > i, kept
  // while row j loses (j, i); and (i, j) dropped from row i where i is row j's last source below j,
  // so that nothing after row i could notice (j, i) left unmatched but row j itself.
  const auto drop = [](NeighbourList list, Index row, Index source) {
    const auto b0 = list.source.begin() + list.offsets[static_cast<std::size_t>(row)];
    const auto b1 = list.source.begin() + list.offsets[static_cast<std::size_t>(row) + 1];
    const auto at = std::lower_bound(b0, b1, static_cast<std::int32_t>(source));
    REQUIRE((at != b1 && *at == source));
    const auto p = static_cast<std::size_t>(at - list.source.begin());
    list.source.erase(list.source.begin() + static_cast<std::ptrdiff_t>(p));
    list.target.erase(list.target.begin() + static_cast<std::ptrdiff_t>(p));
    for (std::size_t r = static_cast<std::size_t>(row) + 1; r < list.offsets.size(); ++r) --list.offsets[r];
    return list;
  };
  {
    const Index i = 10, j = nb.source[static_cast<std::size_t>(nb.offsets[static_cast<std::size_t>(i) + 1]) - 1];
    REQUIRE(j > i);
    const NeighbourList kept_upper = drop(nb, j, i);
    const Index j2 = 20;
    Index i2 = -1;  // row j2's last source below j2
    for (auto p = nb.offsets[static_cast<std::size_t>(j2)]; p < nb.offsets[static_cast<std::size_t>(j2) + 1]; ++p)
      if (nb.source[static_cast<std::size_t>(p)] < j2) i2 = nb.source[static_cast<std::size_t>(p)];
    REQUIRE(i2 >= 0);
    const NeighbourList kept_lower = drop(nb, i2, j2);
    for (const NeighbourList* list : {&kept_upper, &kept_lower}) {
      FarFieldCache<double> cache_one;
      far_field_forward<double>(c, d, b.sets, *list, b.X, V, A, out, cache_one);
      CHECK_THROWS_AS(far_field_backward<double>(c, d, b.sets, *list, b.X, V, A, cache_one, out, dV, dX, dA),
                      InvalidArgument);
    }
  }
  // backward shapes and a cache from another design
  Mat<double> dXbad = Mat<double>::Zero(N, 2), dAbad = Mat<double>::Zero(3, 3);
  CHECK_THROWS_AS(far_field_backward<double>(c, d, b.sets, nb, b.X, V, A, cache, out, dV, dXbad, dA), InvalidArgument);
  CHECK_THROWS_AS(far_field_backward<double>(c, d, b.sets, nb, b.X, V, A, cache, out, dV, dX, dAbad), InvalidArgument);
  CHECK_THROWS_AS(far_field_backward<double>(c, SphericalDesign::product_grid(7), b.sets, nb, b.X, V, A, cache, out, dV, dX, dA),
                  InvalidArgument);
  CHECK_THROWS_AS(far_field_exact_backward<double>(c, b.sets, b.X, V, A, out, dV, dX, dAbad), InvalidArgument);
  CHECK_NOTHROW(far_field_backward<double>(c, d, b.sets, nb, b.X, V, A, cache, out, dV, dX, dA));
  // diagnostics
  const std::vector<double> a3 = {1, 1, 1}, a2 = {1, 1};
  CHECK_THROWS_AS(mask_estimate(c, d, b.X, a2), InvalidArgument);
  CHECK_THROWS_AS(mask_exact(c, Xbad, a3), InvalidArgument);
  // configurations and designs
  auto bad = [&](auto edit) {
    FarFieldConfig e = c;
    edit(e);
    CHECK_THROWS_AS(e.validate(), ConfigError);
    CHECK_THROWS_AS(far_field_exact_forward<double>(e, b.sets, b.X, V, A, out), ConfigError);
  };
  bad([](FarFieldConfig& e) { e.heads = 0; });
  bad([](FarFieldConfig& e) { e.value_dim = 0; });
  bad([](FarFieldConfig& e) { e.cutoff = 0.0; });
  bad([](FarFieldConfig& e) { e.cutoff = std::nan(""); });
  bad([](FarFieldConfig& e) { e.nodes.count = 0; });
  bad([](FarFieldConfig& e) { e.nodes.spacing = -0.1; });
  bad([](FarFieldConfig& e) { e.nodes.first = -0.1; });
  CHECK_NOTHROW(c.validate());
  CHECK_THROWS_AS(SphericalDesign::product_grid(-1), ConfigError);
  Rng r(2);
  CHECK_THROWS_AS(SphericalDesign::iid(0, r), ConfigError);
  CHECK_THROWS_AS(d.rotated(2.0 * Eigen::Matrix3d::Identity()), InvalidArgument);
  CHECK_THROWS_AS(design_kind_from_string("lebedev"), ConfigError);
  SphericalDesign broken = d;
  broken.weights.pop_back();
  CHECK_THROWS_AS(far_field_forward<double>(c, broken, b.sets, nb, b.X, V, A, out, cache), InvalidArgument);
}

TEST_CASE("Dual far field: the fast path equals the pair-by-pair reference, values and tangents",
          "[far_field][dual]") {
  // The model's settings (nodes 0, 0.025, 0.05, 0.075 cycles/A, product grid of degree 12, cutoff 5,
  // 2 heads x 16): two complete small molecules, a 40-atom cluster (radius 4 A: incomplete, and
  // small enough for pairs through the features), an 80-atom and a 400-atom cluster (radius 5.6
  // and 9.8 A, about 0.1 atoms/A^3, so most pairs are far: feature sums); tangents on coordinates,
  // values, coefficients and dout (the general path).
  const Batch b = make_batch({9, 3, 40, 80, 400}, {1.3, 1.0, 4.0, 5.6, 9.8}, 61);
  const FarFieldConfig c = make_config(2, 16, 4, 0.0, 0.025, 5.0);
  const SphericalDesign d = SphericalDesign::product_grid(12);
  const Index N = b.X.rows(), C = 32;
  Rng rng(17);
  const auto dual_of = [&](const Mat<double>& v, double scale) {
    Mat<Dual> m(v.rows(), v.cols());
    for (Index i = 0; i < v.rows(); ++i)
      for (Index j = 0; j < v.cols(); ++j) m(i, j) = Dual{v(i, j), scale * rng.uniform(-1, 1)};
    return m;
  };
  const Mat<Dual> X = dual_of(b.X, 1.0), V = dual_of(random_matrix(N, C, rng), 1.0),
                  A = dual_of(random_matrix(2, 4, rng, 0.1, 1.0), 0.3), G = dual_of(random_matrix(N, C, rng), 1.0);
  const auto max_abs = [](const Mat<Dual>& m, bool tangent) {
    double x = 0.0;
    for (Index i = 0; i < m.rows(); ++i)
      for (Index j = 0; j < m.cols(); ++j) x = std::max(x, std::abs(tangent ? m(i, j).d : m(i, j).v));
    return x;
  };
  const auto rel = [&](const Mat<Dual>& a, const Mat<Dual>& r, bool tangent) {
    Mat<Dual> diff(a.rows(), a.cols());
    for (Index i = 0; i < a.rows(); ++i)
      for (Index j = 0; j < a.cols(); ++j) diff(i, j) = a(i, j) - r(i, j);
    return max_abs(diff, tangent) / std::max(1e-300, max_abs(r, tangent));
  };
  for (bool self : {true, false}) {
    const NeighbourList nb = brute_list(b.sets, b.X, c.cutoff, self);
    REQUIRE(set_is_complete(nb, b.sets, 0));
    REQUIRE_FALSE(set_is_complete(nb, b.sets, 2));
    REQUIRE_FALSE(set_is_complete(nb, b.sets, 4));
    const auto run = [&](bool fast, int threads) {
      omp_set_num_threads(threads);
      Mat<Dual> out(N, C), dV = Mat<Dual>::Zero(N, C), dX = Mat<Dual>::Zero(N, 3), dA = Mat<Dual>::Zero(2, 4);
      if (fast) {
        far_field_dual_forward(c, d, b.sets, nb, X, V, A, out);
        far_field_dual_backward(c, d, b.sets, nb, X, V, A, G, dV, dX, dA);
      } else {
        far_field_pairs_forward(c, d, b.sets, nb, X, V, A, out);
        far_field_pairs_backward(c, d, b.sets, nb, X, V, A, G, dV, dX, dA);
      }
      return std::vector<Mat<Dual>>{out, dV, dX, dA};
    };
    const int threads = omp_get_max_threads();
    const auto ref = run(false, threads), fast = run(true, 1), fast2 = run(true, 2);
    omp_set_num_threads(threads);
    const char* names[] = {"out", "dV", "dcoords", "dcoeffs"};
    for (std::size_t k = 0; k < ref.size(); ++k)
      for (bool tangent : {false, true}) {
        INFO("include_self " << self << ", " << names[k] << (tangent ? " tangent" : " value") << ": relative difference "
                             << rel(fast[k], ref[k], tangent));
        REQUIRE(max_abs(ref[k], tangent) > 0);
        CHECK(rel(fast[k], ref[k], tangent) < 1e-10);
        CHECK(rel(fast2[k], fast[k], tangent) == 0.0);  // bitwise across thread counts
      }
    // complete sets: the list's pairs only, the same sums to rounding
    CHECK(rel(fast[0].topRows(12), ref[0].topRows(12), false) < 1e-13);
  }
  // The fast backward gathers each row's pairs in both directions: an asymmetric list is refused
  // (naming the pair), where the pair-by-pair reference, which scatters, accepts it.
  NeighbourList asym = brute_list(b.sets, b.X, c.cutoff);
  const Index i = 70;  // a row of the 80-atom cluster: drop its first neighbour other than itself
  auto at = static_cast<std::size_t>(asym.offsets[static_cast<std::size_t>(i)]);
  if (asym.source[at] == i) ++at;
  asym.source.erase(asym.source.begin() + static_cast<std::ptrdiff_t>(at));
  asym.target.erase(asym.target.begin() + static_cast<std::ptrdiff_t>(at));
  for (std::size_t r = static_cast<std::size_t>(i) + 1; r < asym.offsets.size(); ++r) --asym.offsets[r];
  Mat<Dual> out(N, C), dV = Mat<Dual>::Zero(N, C), dX = Mat<Dual>::Zero(N, 3), dA = Mat<Dual>::Zero(2, 4);
  far_field_dual_forward(c, d, b.sets, asym, X, V, A, out);
  CHECK_NOTHROW(far_field_pairs_backward(c, d, b.sets, asym, X, V, A, G, dV, dX, dA));
  CHECK_THROWS_WITH(far_field_dual_backward(c, d, b.sets, asym, X, V, A, G, dV, dX, dA),
                    Catch::Contains("does not list"));
}
