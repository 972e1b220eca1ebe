// The far field of the geometric FLT attention; the equations are in far_field.hpp.
// N rows (ragged sets), H heads, dv value width per head, K mask nodes, M design directions,
// F features per row (2M per oscillating node, 1 for a zero node), k neighbours per row.
//
// Near part: per row, over its neighbour pairs, c_h(i, j) = sum_n a_hn g_n(i, j) (exact terms
// minus the features' estimate). Far part: S = Psi^T V per set, out += Psi S~ (two GEMMs), or,
// for small sets, the Gram matrices Psi_n Psi_n^T masked to the far pairs. Double inside.
// Work split and backward formulas: docs/attention.md, "Far field".
#include "attention/far_field.hpp"

#include "core/dual.hpp"

#include "core/error.hpp"
#include "core/parallel.hpp"

#include <Eigen/LU>
#include <Eigen/SVD>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <string>

#if defined(__FAST_MATH__)
#error "far_field.cpp relies on IEEE rounding (round_to_integer below); build it without -ffast-math"
#endif

namespace flt::attn {
namespace {

constexpr double kTwoPi = 2.0 * std::numbers::pi;
// An incomplete set of up to this many rows is one task (its sums, far and near parts together);
// larger sets are cut into row chunks, their sums into at most kMaxPartials partial sums.
constexpr Index kWholeSetRows = 4 * kRowChunk;
constexpr Index kMaxPartials = 64;
// FarFieldCache::sum_of_set codes besides an index into sums.
constexpr Index kCompleteSet = -1;  // all pairs in the list: exact near sums only
constexpr Index kGramSet = -2;      // small set: estimate through per-node Gram matrices

// ---------------------------------------------------------------------------------------------
// sin and cos of 2 pi t for t in turns, branch-free so that loops over it vectorise (libm's
// sincos does not). t is first reduced modulo 1 (exactly, by the 1.5 * 2^52 rounding trick; valid
// for |t| < 2^51), then to the nearest quarter turn q (exact as well), leaving |x| <= pi / 4 for
// the Cephes minimax polynomials. Error below 2e-16 (checked against long double), and exactly
// odd / even in t, so that the pair estimate E(d) equals E(-d) bitwise.
inline double round_to_integer(double t) noexcept {
  constexpr double shifter = 0x1.8p52;
  return (t + shifter) - shifter;
}
inline void sincos_turns(double t, double& s, double& c) noexcept {
  t -= round_to_integer(t);                 // [-1/2, 1/2]
  const double q = round_to_integer(4.0 * t);  // -2 .. 2
  const double x = kTwoPi * (t - 0.25 * q);    // [-pi/4, pi/4]
  const double z = x * x;
  const double ps = (((((1.58962301576546568060e-10 * z - 2.50507477628578072866e-8) * z +
                        2.75573136213857245213e-6) * z - 1.98412698295895385996e-4) * z +
                      8.33333333332211858878e-3) * z - 1.66666666666666307295e-1);
  const double pc = (((((-1.13585365213876817300e-11 * z + 2.08757008419747316778e-9) * z -
                        2.75573141792967388112e-7) * z + 2.48015872888517045348e-5) * z -
                      1.38888888888730564116e-3) * z + 4.16666666666665929218e-2);
  const double sx = x + x * z * ps;
  const double cx = 1.0 - 0.5 * z + z * z * pc;
  // Quadrant q: q = 0: (sx, cx); q = +-1: (+-cx, -+sx); q = +-2: (-sx, -cx). Arithmetic selects
  // (all factors in {-1, 0, 1}), which the vectoriser takes where it refuses branches.
  const double a = std::abs(q);
  const double odd = a * (2.0 - a), even = (1.0 - odd) * (1.0 - a);
  s = odd * q * cx + even * sx;
  c = even * cx - odd * q * sx;
}

// ---------------------------------------------------------------------------------------------
// J_0(a) = sum_k (-q)^k / (k!)^2 and S(q) = sum_k (-q)^k N! / (k! (N + k)!) with J_N(a) =
// (a/2)^N / N! S(q), q = (a/2)^2 <= 4: 18 and 12 terms leave truncation errors below 1e-19.
constexpr int kJ0Terms = 18;
constexpr int kJNTerms = 12;

// The product grid's pair estimate in closed form. For a grid of N equally spaced azimuths
// phi_k = 2 pi (k + 1/2) / N (N even) on polar nodes t_i with weights W_i, rotated by R, and
// (x, y, z) = R^T d, rho^2 = x^2 + y^2, alpha the azimuth of (x, y), Jacobi-Anger gives
//   sum_k cos(a cos(phi_k - alpha) + b) / N = cos b [J_0(a) + 2 sum_{m>=1} J_mN(a) cos(m N alpha)]
// (the half-step offset's (-1)^m cancels i^mN), so with a_i = 2 pi kappa s_i rho, s_i = sqrt(1 - t_i^2),
// b_i = 2 pi kappa t_i z:
//   E(d) = sum_i W_i cos b_i [J_0(a_i) + 2 J_N(a_i) cos(N alpha)],
// where (a/2)^N cos(N alpha) = (pi kappa s)^N Re (x + i y)^N (a polynomial: no division by rho).
// Used where a <= 4 over the pairs it serves, so that the m >= 2 terms, (a/2)^2N / (2N)!, are
// below 1e-18 and the power series (above) converge to rounding: one sincos and short series per
// (node, polar node) instead of one sincos per direction. Equal to the direct sum to ~1e-15 (tests).
struct GridClosedForm {
  bool on = false;
  Eigen::Matrix3d frame = Eigen::Matrix3d::Identity();  // design direction = frame x canonical one
  int N = 0;                     // azimuths per polar node
  double rho2_max = 0.0;         // pairs farther than this take the direct sum
  Index lanes = 0;               // (oscillating node n, polar node i), node-major
  Index polar = 0;               // lanes per node: lane l belongs to node n0 + l / polar
  Eigen::ArrayXd beta, coef, turns, weight;  // (pi kappa s)^2, (pi kappa s)^N / N!, kappa t, W_i
  // Power-series coefficients in q = (a/2)^2: J_0 and its q-derivative, S = J_N N! / (a/2)^N and
  // its q-derivative.
  std::array<double, kJ0Terms> j0{}, dj0{};
  std::array<double, kJNTerms> sn{}, dsn{};
};

GridClosedForm grid_closed_form(const RadialNodes& nodes, const SphericalDesign& design, double rho_max,
                                Index n0) {
  GridClosedForm cf;
  const Index M = design.size(), K = nodes.count;
  if (!(rho_max > 0.0) || design.degree < 1 || n0 >= K || M < 2) return cf;
  const SphericalDesign grid = SphericalDesign::product_grid(design.degree);
  if (grid.size() != M) return cf;
  // The rotation that maps the canonical grid onto the design (Kabsch), and how well it does.
  Eigen::Matrix3d cross = Eigen::Matrix3d::Zero();
  for (Index m = 0; m < M; ++m) cross += grid.directions.row(m).transpose() * design.directions.row(m);
  const Eigen::JacobiSVD<Eigen::Matrix3d> svd(cross, Eigen::ComputeFullU | Eigen::ComputeFullV);
  Eigen::Matrix3d fix = Eigen::Matrix3d::Identity();
  fix(2, 2) = (svd.matrixV() * svd.matrixU().transpose()).determinant() < 0 ? -1.0 : 1.0;
  const Eigen::Matrix3d R = svd.matrixV() * fix * svd.matrixU().transpose();
  for (Index m = 0; m < M; ++m) {
    const Eigen::Vector3d c = grid.directions.row(m).transpose();
    if ((R * c - design.directions.row(m).transpose()).norm() > 1e-12) return cf;
    if (std::abs(grid.weights[static_cast<std::size_t>(m)] - design.weights[static_cast<std::size_t>(m)]) > 1e-14)
      return cf;
  }
  // The grid's structure: N azimuths on each polar node (product_grid's order).
  Index N = 1;
  while (N < M && grid.directions(N, 2) == grid.directions(0, 2)) ++N;
  if (N % 2 != 0 || M % N != 0) return cf;
  const Index polar = M / N;
  double kappa_max = 0.0, s_max = 0.0;
  for (Index n = n0; n < K; ++n) kappa_max = std::max(kappa_max, std::abs(nodes.kappa(n)));
  for (Index i = 0; i < polar; ++i) {
    const double t = grid.directions(i * N, 2);
    s_max = std::max(s_max, std::sqrt(std::max(0.0, 1.0 - t * t)));
  }
  const double half_a = std::numbers::pi * kappa_max * s_max * rho_max;  // a_max / 2
  if (half_a > 2.0) return cf;
  if (half_a > 0.0 && 2.0 * static_cast<double>(N) * std::log(half_a) - std::lgamma(2.0 * N + 1.0) > std::log(1e-18))
    return cf;
  cf.frame = R;
  cf.N = static_cast<int>(N);
  cf.rho2_max = rho_max * rho_max;
  cf.lanes = (K - n0) * polar;
  cf.polar = polar;
  cf.beta.resize(cf.lanes);
  cf.coef.resize(cf.lanes);
  cf.turns.resize(cf.lanes);
  cf.weight.resize(cf.lanes);
  for (Index n = n0; n < K; ++n)
    for (Index i = 0; i < polar; ++i) {
      const Index l = (n - n0) * polar + i;
      const double t = grid.directions(i * N, 2), st = std::sqrt(std::max(0.0, 1.0 - t * t));
      const double h = std::numbers::pi * nodes.kappa(n) * st;  // a / (2 rho)
      double w = 0.0;
      for (Index k = 0; k < N; ++k) w += grid.weights[static_cast<std::size_t>(i * N + k)];
      cf.beta(l) = h * h;
      // N is even: (pi kappa s)^N / N! >= 0, through logarithms (no overflow at large N)
      cf.coef(l) = h == 0.0 ? 0.0
                            : std::exp(static_cast<double>(N) * std::log(std::abs(h)) -
                                       std::lgamma(static_cast<double>(N) + 1.0));
      cf.turns(l) = nodes.kappa(n) * t;
      cf.weight(l) = w;
    }
  for (int k = 0; k < kJ0Terms; ++k) {
    const auto u = static_cast<std::size_t>(k);
    cf.j0[u] = k == 0 ? 1.0 : -cf.j0[u - 1] / (k * static_cast<double>(k));
    cf.dj0[u] = 0.0;
    if (k > 0) cf.dj0[u - 1] = k * cf.j0[u];  // d/dq: the top coefficient's term moves down
  }
  for (int k = 0; k < kJNTerms; ++k) {
    const auto u = static_cast<std::size_t>(k);
    cf.sn[u] = k == 0 ? 1.0 : -cf.sn[u - 1] / (k * static_cast<double>(N + k));
    cf.dsn[u] = 0.0;
    if (k > 0) cf.dsn[u - 1] = k * cf.sn[u];
  }
  cf.on = true;
  return cf;
}

// sum_k c[k] q^k (Horner).
template <std::size_t Terms>
inline double power_series(const std::array<double, Terms>& c, double q) noexcept {
  double s = c[Terms - 1];
  for (std::size_t k = Terms - 1; k-- > 0;) s = s * q + c[k];
  return s;
}

// The design and the nodes in the form the kernels use. Features of a row: a zero first node
// (kappa_0 = 0: j0 = 1, so its features are the single constant 1) takes column 0; every other
// node n takes 2M columns [sqrt(lam_m) cos theta_nm]_m, [sqrt(lam_m) sin theta_nm]_m.
struct Geometry {
  Index M = 0, K = 0, F = 0;
  Index n0 = 0;               // first oscillating node (1 after a zero node)
  bool constant = false;      // node 0 is kappa = 0
  bool start_is_step = false; // kappa_{n0} == spacing: one sincos per direction suffices
  double spacing = 0.0, start = 0.0;
  Eigen::ArrayXd ux, uy, uz, lam, sl, kappa;
  GridClosedForm closed;      // on: pairs within closed.rho2_max take the closed form

  // closed_form_rho > 0: the pair estimate may use the product grid's closed form for pairs up to
  // that distance (0: always the direct sum over the directions).
  Geometry(const RadialNodes& nodes, const SphericalDesign& design, double closed_form_rho = 0.0) {
    M = design.size();
    K = nodes.count;
    constant = nodes.first == 0.0;
    n0 = constant ? 1 : 0;
    F = (constant ? 1 : 0) + (K - n0) * 2 * M;
    spacing = nodes.spacing;
    start = n0 < K ? nodes.kappa(n0) : 0.0;
    start_is_step = start == spacing;
    ux = design.directions.col(0).array();
    uy = design.directions.col(1).array();
    uz = design.directions.col(2).array();
    lam.resize(M);
    for (Index m = 0; m < M; ++m) lam(m) = design.weights[static_cast<std::size_t>(m)];
    sl = lam.sqrt();
    kappa.resize(K);
    for (Index n = 0; n < K; ++n) kappa(n) = nodes.kappa(n);
    closed = grid_closed_form(nodes, design, closed_form_rho, n0);
  }
  // First column of oscillating node n >= n0 (the zero node, if any, is column 0).
  Index offset(Index n) const noexcept { return (constant ? 1 : 0) + (n - n0) * 2 * M; }
  Index node_of_column(Index f) const noexcept {
    if (constant) return f == 0 ? 0 : 1 + (f - 1) / (2 * M);
    return f / (2 * M);
  }
};

// Per-thread scratch of the phase recurrences (M each).
struct Phases {
  Eigen::ArrayXd p, c, s, cs, ss, sig;
  Eigen::ArrayXd lane_e, lane_x, lane_y, lane_z;  // the closed form's per-lane terms
  explicit Phases(Index M) : p(M), c(M), s(M), cs(M), ss(M), sig(M) {}

  // p_m = u_m.x; (cs, ss) = (cos, sin) of the step 2 pi spacing p_m; (c, s) of the first
  // oscillating node 2 pi kappa_{n0} p_m. Phases are reduced modulo one turn before the 2 pi.
  void start(const Geometry& g, const double* x) noexcept {
    const Index M = g.M;
    const double x0 = x[0], x1 = x[1], x2 = x[2], step = g.spacing, first = g.start;
    const double *ux = g.ux.data(), *uy = g.uy.data(), *uz = g.uz.data();
    double *pp = p.data(), *pc = c.data(), *ps = s.data(), *pcs = cs.data(), *pss = ss.data();
#pragma omp simd
    for (Index m = 0; m < M; ++m) pp[m] = ux[m] * x0 + uy[m] * x1 + uz[m] * x2;
#pragma omp simd
    for (Index m = 0; m < M; ++m) sincos_turns(step * pp[m], pss[m], pcs[m]);
    if (g.start_is_step) {
      c = cs;
      s = ss;
    } else {
#pragma omp simd
      for (Index m = 0; m < M; ++m) sincos_turns(first * pp[m], ps[m], pc[m]);
    }
  }
  // Advance (c, s) by one node: angle addition with the step (error ~ n ulp after n steps).
  void advance(Index M) noexcept {
    double *pc = c.data(), *ps = s.data();
    const double *pcs = cs.data(), *pss = ss.data();
#pragma omp simd
    for (Index m = 0; m < M; ++m) {
      const double cn = pc[m] * pcs[m] - ps[m] * pss[m];
      ps[m] = ps[m] * pcs[m] + pc[m] * pss[m];
      pc[m] = cn;
    }
  }
};

// Features of one row at the centred position x (3) into psi (F).
void feature_row(const Geometry& g, const double* x, double* psi, Phases& ph) noexcept {
  if (g.constant) psi[0] = 1.0;
  if (g.n0 >= g.K) return;
  ph.start(g, x);
  const Index M = g.M;
  const double* sl = g.sl.data();
  for (Index n = g.n0; n < g.K; ++n) {
    double* pcos = psi + g.offset(n);
    double* psin = pcos + M;
    const double *pc = ph.c.data(), *ps = ph.s.data();
#pragma omp simd
    for (Index m = 0; m < M; ++m) {
      pcos[m] = sl[m] * pc[m];
      psin[m] = sl[m] * ps[m];
    }
    if (n + 1 < g.K) ph.advance(M);
  }
}

// Features of rows [begin, end) of a set with centroid `centre` into Psi (rows x F).
void feature_block(const Geometry& g, ConstMatRef<double> coords, Index begin, Index end,
                   const Eigen::Vector3d& centre, Mat<double>& Psi, Phases& ph) {
  Psi.resize(end - begin, g.F);
  for (Index i = begin; i < end; ++i) {
    const double x[3] = {coords(i, 0) - centre(0), coords(i, 1) - centre(1), coords(i, 2) - centre(2)};
    feature_row(g, x, Psi.row(i - begin).data(), ph);
  }
}

// pair_estimate through the grid's closed form (GridClosedForm), E (K; the oscillating nodes) and,
// with gamma, grad (3) = d/dd sum_n gamma_n E_n. Per lane l = (n, i), T = J_0(a) + 2 J_N(a) cos(N alpha)
// = J_0(q) + 2 c P S(q) with q = beta rho^2, c = coef, P = Re w^N, w = x + i y; E_n = sum_i W_i cos(b) T,
//   dE/dz = -sum_i W_i sin(b) 2 pi kappa t T,
//   dE/dx = sum_i W_i cos(b) [J_0'(q) 2 beta x + 2 c (N Re w^(N-1) S + P S'(q) 2 beta x)],
//   dE/dy = sum_i W_i cos(b) [J_0'(q) 2 beta y + 2 c (-N Im w^(N-1) S + P S'(q) 2 beta y)],
// and d/dd = R d/d(x, y, z). Exactly even in d (odd for the gradient), as the direct sum.
void closed_pair_estimate(const Geometry& g, const double* d, double* E, const double* gamma,
                          double* grad, Phases& ph) noexcept {
  const GridClosedForm& cf = g.closed;
  const Eigen::Matrix3d& R = cf.frame;
  const double x = R(0, 0) * d[0] + R(1, 0) * d[1] + R(2, 0) * d[2];
  const double y = R(0, 1) * d[0] + R(1, 1) * d[1] + R(2, 1) * d[2];
  const double z = R(0, 2) * d[0] + R(1, 2) * d[1] + R(2, 2) * d[2];
  const double rho2 = x * x + y * y;
  // w^(N-1) by binary powers, then w^N
  double pr = 1.0, pi = 0.0, br = x, bi = y;
  for (int e = cf.N - 1; e > 0; e >>= 1) {
    if (e & 1) {
      const double t = pr * br - pi * bi;
      pi = pr * bi + pi * br;
      pr = t;
    }
    const double t = br * br - bi * bi;
    bi = 2.0 * br * bi;
    br = t;
  }
  const double P = pr * x - pi * y;  // Re w^N
  const double Nd = static_cast<double>(cf.N);
  const Index L = cf.lanes;
  ph.lane_e.resize(L);
  double* ve = ph.lane_e.data();
  const double *beta = cf.beta.data(), *coef = cf.coef.data(), *turns = cf.turns.data(), *weight = cf.weight.data();
  double *vx = nullptr, *vy = nullptr, *vz = nullptr;  // the gradient's lanes (with grad)
  if (!grad) {
#pragma omp simd
    for (Index l = 0; l < L; ++l) {
      const double q = beta[l] * rho2;
      const double T = power_series(cf.j0, q) + 2.0 * coef[l] * P * power_series(cf.sn, q);
      double sb, cb;
      sincos_turns(turns[l] * z, sb, cb);
      ve[l] = weight[l] * cb * T;
    }
  } else {
    ph.lane_x.resize(L);
    ph.lane_y.resize(L);
    ph.lane_z.resize(L);
    vx = ph.lane_x.data();
    vy = ph.lane_y.data();
    vz = ph.lane_z.data();
#pragma omp simd
    for (Index l = 0; l < L; ++l) {
      const double q = beta[l] * rho2, b2 = 2.0 * beta[l];
      const double j0 = power_series(cf.j0, q), dj0 = power_series(cf.dj0, q);
      const double sn = power_series(cf.sn, q), dsn = power_series(cf.dsn, q);
      const double T = j0 + 2.0 * coef[l] * P * sn;
      double sb, cb;
      sincos_turns(turns[l] * z, sb, cb);
      const double wc = weight[l] * cb;
      ve[l] = wc * T;
      vz[l] = -weight[l] * sb * kTwoPi * turns[l] * T;
      vx[l] = wc * (dj0 * b2 * x + 2.0 * coef[l] * (Nd * pr * sn + P * dsn * b2 * x));
      vy[l] = wc * (dj0 * b2 * y + 2.0 * coef[l] * (-Nd * pi * sn + P * dsn * b2 * y));
    }
  }
  // Sums over each node's polar nodes (consecutive lanes), in lane order, in a register: a
  // scatter into E[node] would chain its adds through memory.
  for (Index n = g.n0; n < g.K; ++n) {
    const double* lane = ve + (n - g.n0) * cf.polar;
    double e = 0.0;
    for (Index i = 0; i < cf.polar; ++i) e += lane[i];
    E[n] = e;
  }
  if (grad) {
    double gx = 0.0, gy = 0.0, gz = 0.0;
    for (Index n = g.n0, l = 0; n < g.K; ++n)  // lanes in order
      for (Index i = 0; i < cf.polar; ++i, ++l) {
        gx += gamma[n] * vx[l];
        gy += gamma[n] * vy[l];
        gz += gamma[n] * vz[l];
      }
    grad[0] = R(0, 0) * gx + R(0, 1) * gy + R(0, 2) * gz;
    grad[1] = R(1, 0) * gx + R(1, 1) * gy + R(1, 2) * gz;
    grad[2] = R(2, 0) * gx + R(2, 1) * gy + R(2, 2) * gz;
  }
}

// E_n(d) = psi_n(r_i).psi_n(r_j) = sum_m lam_m cos(2 pi kappa_n u_m.d), d = r_i - r_j, into E (K).
// With gamma (K) non-null, also grad (3) = d/dd sum_n gamma_n E_n.
void pair_estimate(const Geometry& g, const double* d, double* E, const double* gamma, double* grad,
                   Phases& ph) noexcept {
  if (g.constant) E[0] = 1.0;
  if (grad) grad[0] = grad[1] = grad[2] = 0.0;
  if (g.n0 >= g.K) return;
  if (g.closed.on && d[0] * d[0] + d[1] * d[1] + d[2] * d[2] <= g.closed.rho2_max) {
    closed_pair_estimate(g, d, E, gamma, grad, ph);
    return;
  }
  ph.start(g, d);
  const Index M = g.M;
  const double* lam = g.lam.data();
  if (grad) ph.sig.setZero();
  double* sig = ph.sig.data();
  for (Index n = g.n0; n < g.K; ++n) {
    const double *pc = ph.c.data(), *ps = ph.s.data();
    double e = 0.0;
#pragma omp simd reduction(+ : e)
    for (Index m = 0; m < M; ++m) e += lam[m] * pc[m];
    E[n] = e;
    if (grad) {
      const double gk = gamma[n] * g.kappa(n);
#pragma omp simd
      for (Index m = 0; m < M; ++m) sig[m] += gk * ps[m];
    }
    if (n + 1 < g.K) ph.advance(M);
  }
  if (grad) {
    // d E_n / dd = -2 pi kappa_n sum_m lam_m sin(theta_nm) u_m
    double gx = 0.0, gy = 0.0, gz = 0.0;
    const double *ux = g.ux.data(), *uy = g.uy.data(), *uz = g.uz.data();
#pragma omp simd reduction(+ : gx, gy, gz)
    for (Index m = 0; m < M; ++m) {
      const double t = lam[m] * sig[m];
      gx += t * ux[m];
      gy += t * uy[m];
      gz += t * uz[m];
    }
    grad[0] = -kTwoPi * gx;
    grad[1] = -kTwoPi * gy;
    grad[2] = -kTwoPi * gz;
  }
}

// S~ from S (F x H dv): the rows of node n, columns of head h, scaled by a_hn.
void scale_by_coeffs(const Geometry& g, const Mat<double>& A, Index dv, const Mat<double>& S,
                     Mat<double>& out) {
  out.resize(S.rows(), S.cols());
  for (Index f = 0; f < S.rows(); ++f) {
    const Index n = g.node_of_column(f);
    for (Index h = 0; h < A.rows(); ++h) out.row(f).segment(h * dv, dv) = A(h, n) * S.row(f).segment(h * dv, dv);
  }
}

// da_hn += sum over node n's rows and head h's columns of S o dS~.
void coeff_grad_from_sums(const Geometry& g, Index dv, const Mat<double>& S, const Mat<double>& dSt,
                          Mat<double>& da) {
  for (Index f = 0; f < S.rows(); ++f) {
    const Index n = g.node_of_column(f);
    for (Index h = 0; h < da.rows(); ++h)
      da(h, n) += S.row(f).segment(h * dv, dv).dot(dSt.row(f).segment(h * dv, dv));
  }
}

// Far-field backward of a row block: dVacc += Psi dS; dracc += d/dr through the phases of
// dPsi = G S~^T + V dS^T (dracc may be null).
// dracc (rows x 3, row-major) += d/dr of sum(dPsi o Psi) through the phases of the features:
// d theta = sqrt(lam) (-dPsi_cos sin theta + dPsi_sin cos theta), d theta / dr = 2 pi kappa_n u_m.
void phase_gradient(const Geometry& g, const Mat<double>& Psi, const Mat<double>& dPsi, double* dracc,
                    Phases& ph) {
  const Index M = g.M;
  const double *ux = g.ux.data(), *uy = g.uy.data(), *uz = g.uz.data();
  double* sig = ph.sig.data();
  for (Index r = 0; r < Psi.rows(); ++r) {
    ph.sig.setZero();
    for (Index n = g.n0; n < g.K; ++n) {
      const double* pc = Psi.row(r).data() + g.offset(n);
      const double* ps = pc + M;
      const double* gc = dPsi.row(r).data() + g.offset(n);
      const double* gs = gc + M;
      const double kn = g.kappa(n);
#pragma omp simd
      for (Index m = 0; m < M; ++m) sig[m] += kn * (gs[m] * pc[m] - gc[m] * ps[m]);
    }
    double gx = 0.0, gy = 0.0, gz = 0.0;
#pragma omp simd reduction(+ : gx, gy, gz)
    for (Index m = 0; m < M; ++m) {
      gx += sig[m] * ux[m];
      gy += sig[m] * uy[m];
      gz += sig[m] * uz[m];
    }
    dracc[3 * r + 0] += kTwoPi * gx;
    dracc[3 * r + 1] += kTwoPi * gy;
    dracc[3 * r + 2] += kTwoPi * gz;
  }
}

void far_backward_block(const Geometry& g, const Mat<double>& Psi, const Mat<double>& St,
                        const Mat<double>& dS, const Mat<double>& Gd, const Mat<double>& Vd,
                        Eigen::Ref<Mat<double>> dVacc, double* dracc, Mat<double>& dPsi, Phases& ph) {
  dVacc.noalias() += Psi * dS;
  if (dracc == nullptr || g.n0 >= g.K) return;
  dPsi.noalias() = Gd * St.transpose();
  dPsi.noalias() += Vd * dS.transpose();
  phase_gradient(g, Psi, dPsi, dracc, ph);
}

// ---------------------------------------------------------------------------------------------
// Small sets: the same estimate through the features' Gram matrices. For n rows, P_n = Psi_n
// Psi_n^T (n x n) holds est of node n for every pair; masked to the far pairs (j not in N(i),
// j != i) and combined per head, C_h = sum_n a_hn P_n o Far, it gives out_h += C_h V_h, i.e.
// sum_{j in set} est v - sum_{j in N(i)} est v without forming either term (no cancellation).
// Cost ~ 2 n^2 (F + H dv) against ~ 4 n F H dv through the sums S: cheaper below
// n = 2 F H dv / (F + H dv) rows (about 200 at F = 513, H dv = 128).
Index gram_limit(Index F, Index Hdv) {
  return std::min(kRowChunk, (2 * F * Hdv) / (F + Hdv));
}

struct GramWork {
  Mat<double> far, P, dP;   // n x n
  std::vector<Mat<double>> C, Q;  // per head n x n

  // far(i, j) = 1 for the far pairs of rows [b, e) of one set: not in the list, not i = j.
  void far_mask(const NeighbourList& nb, Index b, Index e) {
    far.setOnes(e - b, e - b);
    for (Index i = b; i < e; ++i) {
      far(i - b, i - b) = 0.0;
      for (auto p = nb.offsets[static_cast<std::size_t>(i)]; p < nb.offsets[static_cast<std::size_t>(i) + 1]; ++p)
        far(i - b, nb.source[static_cast<std::size_t>(p)] - b) = 0.0;
    }
  }
  // P = Psi_n Psi_n^T o far for node n.
  void node_gram(const Geometry& g, const Mat<double>& Psi, Index n) {
    const bool zero_node = g.constant && n == 0;  // its single constant column 0
    const Index off = zero_node ? 0 : g.offset(n), width = zero_node ? 1 : 2 * g.M;
    P.noalias() = Psi.middleCols(off, width) * Psi.middleCols(off, width).transpose();
    P.array() *= far.array();
  }
};

// acc (n x H dv) += C_h V_h for the set's rows (Psi: its features, far mask set).
void gram_forward(const Geometry& g, const Mat<double>& A, Index dv, const Mat<double>& Psi,
                  const Mat<double>& Vd, Mat<double>& acc, GramWork& gw) {
  const Index H = A.rows(), n = Psi.rows();
  gw.C.resize(static_cast<std::size_t>(H));
  for (auto& c : gw.C) c.setZero(n, n);
  for (Index k = 0; k < g.K; ++k) {
    gw.node_gram(g, Psi, k);
    for (Index h = 0; h < H; ++h) gw.C[static_cast<std::size_t>(h)] += A(h, k) * gw.P;
  }
  for (Index h = 0; h < H; ++h)
    acc.middleCols(h * dv, dv).noalias() += gw.C[static_cast<std::size_t>(h)] * Vd.middleCols(h * dv, dv);
}

// Backward of gram_forward: dVacc += C_h^T G_h; da_hn += sum (P_n o far) o Q_h with Q_h = G_h V_h^T;
// dPsi_n = (dP_n + dP_n^T) Psi_n with dP_n = far o sum_h a_hn Q_h, then through the phases.
void gram_backward(const Geometry& g, const Mat<double>& A, Index dv, const Mat<double>& Psi,
                   const Mat<double>& Gd, const Mat<double>& Vd, Mat<double>& dVacc, double* dracc,
                   Mat<double>& da, Mat<double>& dPsi, GramWork& gw, Phases& ph) {
  const Index H = A.rows(), n = Psi.rows();
  gw.C.resize(static_cast<std::size_t>(H));
  gw.Q.resize(static_cast<std::size_t>(H));
  for (Index h = 0; h < H; ++h) {
    gw.C[static_cast<std::size_t>(h)].setZero(n, n);
    gw.Q[static_cast<std::size_t>(h)].noalias() = Gd.middleCols(h * dv, dv) * Vd.middleCols(h * dv, dv).transpose();
  }
  if (dracc) dPsi.setZero(n, g.F);
  for (Index k = 0; k < g.K; ++k) {
    gw.node_gram(g, Psi, k);
    if (dracc) gw.dP.setZero(n, n);
    for (Index h = 0; h < H; ++h) {
      const Mat<double>& Qh = gw.Q[static_cast<std::size_t>(h)];
      da(h, k) += gw.P.cwiseProduct(Qh).sum();
      gw.C[static_cast<std::size_t>(h)] += A(h, k) * gw.P;
      if (dracc) gw.dP += A(h, k) * Qh;
    }
    if (dracc && k >= g.n0) {
      gw.dP.array() *= gw.far.array();
      gw.P = gw.dP + gw.dP.transpose();  // (P no longer needed for this node)
      dPsi.middleCols(g.offset(k), 2 * g.M).noalias() = gw.P * Psi.middleCols(g.offset(k), 2 * g.M);
    }
  }
  for (Index h = 0; h < H; ++h)
    dVacc.middleCols(h * dv, dv).noalias() += gw.C[static_cast<std::size_t>(h)].transpose() * Gd.middleCols(h * dv, dv);
  if (dracc && g.n0 < g.K) phase_gradient(g, Psi, dPsi, dracc, ph);
}

// ---------------------------------------------------------------------------------------------
// The pair kernel: c_h(i, j) = sum_n a_hn g_n(i, j), g_n = w b_n [- E_n], over the sources of a
// block of rows. First the pairs' geometry (pair_terms: g and, for coordinate gradients, the
// pieces of d c / d r_i), then per row the sums over values (forward_row, backward_row).
// `geometry` null: no estimate (exact path, complete sets).
struct PairWork {
  Eigen::ArrayXd b, db, E, gamma, own, other;
  Mat<double> C;
  Phases ph;
  PairWork(Index K, Index H, Index M)
      : b(K), db(K), E(K), gamma(K), own(H), other(H), ph(M) {}
};

struct PairContext {
  const RadialNodes& nodes;
  double cutoff;
  Index H, dv, K;
  const Mat<double>& A;  // H x K
};

// The sources of rows [begin, end), concatenated (row i's at [first[i - begin], first[i - begin + 1]),
// increasing), and their pairs' terms. With coordinate gradients, per pair also
// radial = sum_n gamma_n (w' b_n + w b_n') / rho (0 at rho = 0) and grad = d/dd sum_n gamma_n E_n,
// gamma_n = sum_h (G_i.v_j + G_j.v_i)_h a_hn the loss's derivative by g_n (both directions).
struct PairBlock {
  Index begin = 0, end = 0;
  std::vector<Index> src, first;
  Mat<double> G;               // pairs x K: g_n(i, j)
  std::vector<double> radial;  // pairs (coordinate gradients only)
  Mat<double> grad;            // pairs x 3 (coordinate gradients only)
  Mat<double> own;             // pairs x H: G_i,h . v_j,h (coordinate gradients only, else empty)
  std::vector<char> done;      // pair filled from its reverse
  void start(Index b) {
    begin = end = b;
    src.clear();
    first.assign(1, 0);
  }
  // Appends row `end` with sources from `sources` (increasing).
  template <class Sources>
  void add_row(Sources&& sources) {
    sources(src);
    first.push_back(static_cast<Index>(src.size()));
    ++end;
  }
  Index pairs() const noexcept { return static_cast<Index>(src.size()); }
};

// Rows of sources are scattered over V and dout (random atom order): fetch them ahead of use.
template <class T>
inline void prefetch_row(const T* p, Index n) noexcept {
  const auto* bytes = reinterpret_cast<const char*>(p);
  for (Index off = 0; off < n * static_cast<Index>(sizeof(T)); off += 64) __builtin_prefetch(bytes + off);
}
constexpr std::size_t kPrefetchAhead = 2;  // pairs

// a . b over one head's dv channels, in double. Summed in SIMD lanes (a fixed order per build, the
// same for every thread count), not as a serial chain of dependent adds; a head of 16 channels
// with a fixed trip count, which the compiler vectorises (a run-time 16 goes to its scalar
// remainder loop).
template <class T>
double head_dot(const T* a, const T* b, Index dv) {
  double s = 0.0;
  if (dv == 16) {
#pragma omp simd reduction(+ : s)
    for (Index c = 0; c < 16; ++c) s += static_cast<double>(a[c]) * static_cast<double>(b[c]);
  } else {
#pragma omp simd reduction(+ : s)
    for (Index c = 0; c < dv; ++c) s += static_cast<double>(a[c]) * static_cast<double>(b[c]);
  }
  return s;
}

// own_h = G_i,h . v_j,h for the H heads of a pair; with `other`, also other_h = G_j,h . v_i,h.
template <class T>
void head_products(Index H, Index dv, const T* gi, const T* vj, const T* gj, const T* vi, double* own,
                   double* other) {
  for (Index h = 0; h < H; ++h) {
    own[h] = head_dot(gi + h * dv, vj + h * dv, dv);
    if (other) other[h] = head_dot(gj + h * dv, vi + h * dv, dv);
  }
}

// The terms of the block's pairs. g and radial are even in d = r_i - r_j and grad odd, bitwise
// (pair_estimate's closed form and direct sum both are), and gamma is symmetric in (i, j); so a
// pair whose reverse (j, i) is also in the block is computed once and its reverse's slot filled
// from it (grad negated): the same values as computing both, half the work for those pairs.
// V and dout (for gamma) only for coordinate gradients.
template <class T>
void pair_terms(const PairContext& cx, const Geometry* geometry, ConstMatRef<double> coords, PairBlock& pb,
                PairWork& w, const ConstMatRef<T>* V = nullptr, const ConstMatRef<T>* dout = nullptr) {
  const Index K = cx.K, H = cx.H, dv = cx.dv, P = pb.pairs();
  const bool coordinate_grads = V && dout;
  pb.G.resize(P, K);
  pb.done.assign(static_cast<std::size_t>(P), 0);
  pb.own.resize(coordinate_grads ? P : 0, H);
  if (coordinate_grads) {
    pb.radial.resize(static_cast<std::size_t>(P));
    pb.grad.resize(P, 3);
  }
  for (Index i = pb.begin; i < pb.end; ++i) {
    const Index q0 = pb.first[static_cast<std::size_t>(i - pb.begin)];
    const Index q1 = pb.first[static_cast<std::size_t>(i - pb.begin) + 1];
    for (Index q = q0; q < q1; ++q) {
      if (pb.done[static_cast<std::size_t>(q)]) continue;
      const Index j = pb.src[static_cast<std::size_t>(q)];
      if (static_cast<Index>(q) + static_cast<Index>(kPrefetchAhead) < q1) {
        const Index ahead = pb.src[static_cast<std::size_t>(q) + kPrefetchAhead];
        __builtin_prefetch(coords.row(ahead).data());
        if (coordinate_grads) {
          prefetch_row(dout->row(ahead).data(), H * dv);
          prefetch_row(V->row(ahead).data(), H * dv);
        }
      }
      const double d[3] = {coords(i, 0) - coords(j, 0), coords(i, 1) - coords(j, 1), coords(i, 2) - coords(j, 2)};
      const double rho = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
      radial_basis(cx.nodes, rho, w.b.data(), coordinate_grads ? w.db.data() : nullptr);
      const double wt = 1.0 - envelope(rho, cx.cutoff);
      double* grad_est = coordinate_grads ? pb.grad.row(q).data() : nullptr;
      if (coordinate_grads) {
        double* own = pb.own.row(q).data();
        head_products(H, dv, dout->row(i).data(), V->row(j).data(), dout->row(j).data(), V->row(i).data(), own,
                      w.other.data());
        for (Index n = 0; n < K; ++n) {
          double gn = 0.0;
          for (Index h = 0; h < H; ++h) gn += (own[h] + w.other(h)) * cx.A(h, n);
          w.gamma(n) = gn;
        }
        grad_est[0] = grad_est[1] = grad_est[2] = 0.0;
      }
      if (geometry) {
        pair_estimate(*geometry, d, w.E.data(), coordinate_grads ? w.gamma.data() : nullptr, grad_est, w.ph);
        pb.G.row(q) = (wt * w.b - w.E).matrix().transpose();
      } else {
        pb.G.row(q) = (wt * w.b).matrix().transpose();
      }
      double radial = 0.0;
      if (coordinate_grads) {
        if (rho > 0.0) radial = (w.gamma * (-envelope_derivative(rho, cx.cutoff) * w.b + wt * w.db)).sum() / rho;
        pb.radial[static_cast<std::size_t>(q)] = radial;
      }
      // The reverse pair, when row j is in the block and lists i.
      if (j > i && j < pb.end) {
        const auto row_b = pb.src.begin() + pb.first[static_cast<std::size_t>(j - pb.begin)];
        const auto row_e = pb.src.begin() + pb.first[static_cast<std::size_t>(j - pb.begin) + 1];
        const auto it = std::lower_bound(row_b, row_e, i);
        if (it != row_e && *it == i) {
          const auto r = static_cast<Index>(it - pb.src.begin());
          pb.G.row(r) = pb.G.row(q);
          if (coordinate_grads) {
            pb.radial[static_cast<std::size_t>(r)] = radial;
            pb.grad.row(r) = -pb.grad.row(q);
            for (Index h = 0; h < H; ++h) pb.own(r, h) = w.other(h);  // G_j . v_i: the reverse's own
          }
          pb.done[static_cast<std::size_t>(r)] = 1;
        }
      }
    }
  }
}

// acc (H dv) += sum_j c_h(i, j) v_j,h over row i's pairs in the block.
template <class T>
void forward_row(const PairContext& cx, const PairBlock& pb, Index i, ConstMatRef<T> V, double* acc, PairWork& w) {
  const Index q0 = pb.first[static_cast<std::size_t>(i - pb.begin)];
  const Index k = pb.first[static_cast<std::size_t>(i - pb.begin) + 1] - q0;
  if (k == 0) return;
  const Index H = cx.H, dv = cx.dv;
  const Index* src = pb.src.data() + q0;
  for (Index q = 0; q < std::min<Index>(k, kPrefetchAhead); ++q) prefetch_row(V.row(src[q]).data(), H * dv);
  w.C.noalias() = pb.G.middleRows(q0, k) * cx.A.transpose();  // k x H
  for (Index q = 0; q < k; ++q) {
    if (q + static_cast<Index>(kPrefetchAhead) < k) prefetch_row(V.row(src[q + kPrefetchAhead]).data(), H * dv);
    const T* vj = V.row(src[q]).data();
    for (Index h = 0; h < H; ++h) {
      const double ch = w.C(q, h);
      double* a = acc + h * dv;
      const T* v = vj + h * dv;
      for (Index c = 0; c < dv; ++c) a[c] += ch * static_cast<double>(v[c]);
    }
  }
}

// Gradients of the pair terms through row i's own (symmetric) pairs: dV_i (H dv) += sum_j c_h(i, j)
// G_j,h; dr_i (3, may be null) += sum_j (gc_h(i, j) + gc_h(j, i)) d c_h(i, j) / d r_i (radial and
// grad of pair_terms); da (H x K) += sum_j gc_h(i, j) g_n(i, j), with gc_h(i, j) = G_i,h . v_j,h
// (pair_terms' products when it computed them for coordinate gradients, else computed here).
template <class T>
void backward_row(const PairContext& cx, const PairBlock& pb, Index i, ConstMatRef<double> coords, ConstMatRef<T> V,
                  ConstMatRef<T> dout, double* dV, double* dr, Mat<double>& da, PairWork& w) {
  const Index K = cx.K, H = cx.H, dv = cx.dv;
  const Index q0 = pb.first[static_cast<std::size_t>(i - pb.begin)];
  const Index q1 = pb.first[static_cast<std::size_t>(i - pb.begin) + 1];
  const T* gi = dout.row(i).data();
  const T* vi = V.row(i).data();
  const bool stored = pb.own.rows() == pb.pairs();  // the products G_i . v_j
  for (Index q = q0; q < q1; ++q) {
    const Index j = pb.src[static_cast<std::size_t>(q)];
    if (q + static_cast<Index>(kPrefetchAhead) < q1) {
      const Index ahead = pb.src[static_cast<std::size_t>(q) + kPrefetchAhead];
      prefetch_row(dout.row(ahead).data(), H * dv);
      if (!stored) prefetch_row(V.row(ahead).data(), H * dv);
    }
    const T* gj = dout.row(j).data();
    const double* own = w.own.data();
    if (stored)
      own = pb.own.row(q).data();
    else
      head_products(H, dv, gi, V.row(j).data(), gj, vi, w.own.data(), nullptr);
    const double* g = pb.G.row(q).data();
    for (Index h = 0; h < H; ++h) {
      double ch = 0.0;  // c_h(i, j)
      for (Index n = 0; n < K; ++n) {
        ch += cx.A(h, n) * g[n];
        da(h, n) += own[h] * g[n];
      }
      for (Index c = h * dv; c < (h + 1) * dv; ++c) dV[c] += ch * static_cast<double>(gj[c]);
    }
    if (dr) {
      // grad of g_n: (dw b_n + w db_n) d / rho (zero at rho = 0: even, smooth) - grad E_n
      const double d[3] = {coords(i, 0) - coords(j, 0), coords(i, 1) - coords(j, 1), coords(i, 2) - coords(j, 2)};
      const double radial = pb.radial[static_cast<std::size_t>(q)];
      if (radial != 0.0)
        for (int a = 0; a < 3; ++a) dr[a] += radial * d[a];
      for (int a = 0; a < 3; ++a) dr[a] -= pb.grad(q, a);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Validation (before any parallel region: no exception may leave one).

void validate_design(const SphericalDesign& design) {
  require(design.size() >= 1 && design.directions.cols() == 3,
          "far field: the design needs at least one direction (M x 3)");
  require(static_cast<Index>(design.weights.size()) == design.size(),
          "far field: the design has " + std::to_string(design.weights.size()) + " weights for " +
              std::to_string(design.size()) + " directions");
  for (double wt : design.weights)
    require(std::isfinite(wt) && wt >= 0.0, "far field: design weights must be finite and non-negative");
  require(design.directions.allFinite(), "far field: design directions must be finite");
}

template <class T, class C = double>
void validate_inputs(const char* what, const FarFieldConfig& cfg, const RaggedIndex& sets,
                     ConstMatRef<C> coords, ConstMatRef<T> V, ConstMatRef<T> coeffs) {
  cfg.validate();
  const Index N = sets.total_rows(), H = cfg.heads, dv = cfg.value_dim, K = cfg.nodes.count;
  const std::string w = what;
  require(coords.rows() == N && coords.cols() == 3,
          w + ": coords must be " + std::to_string(N) + " x 3 (the batch has " + std::to_string(N) +
              " rows), got " + std::to_string(coords.rows()) + " x " + std::to_string(coords.cols()));
  require(V.rows() == N && V.cols() == H * dv,
          w + ": V must be N x (heads * value_dim) = " + std::to_string(N) + " x " + std::to_string(H * dv) +
              ", got " + std::to_string(V.rows()) + " x " + std::to_string(V.cols()));
  require(coeffs.rows() == H && coeffs.cols() == K,
          w + ": coeffs must be heads x nodes = " + std::to_string(H) + " x " + std::to_string(K) + ", got " +
              std::to_string(coeffs.rows()) + " x " + std::to_string(coeffs.cols()));
  require(N <= std::numeric_limits<std::int32_t>::max(), w + ": more than 2^31 - 1 rows");
  for (Index i = 0; i < N; ++i)
    if (!(std::isfinite(value_of(coords(i, 0))) && std::isfinite(value_of(coords(i, 1))) &&
          std::isfinite(value_of(coords(i, 2)))))
      throw InvalidArgument(w + ": non-finite coordinate in row " + std::to_string(i));
}

// Row chunks within sets (set, begin, end), every row in exactly one.
struct Chunk {
  Index set, begin, end;
};
std::vector<Chunk> row_chunks(const RaggedIndex& sets, Index chunk) {
  std::vector<Chunk> out;
  for (Index s = 0; s < sets.num_sets(); ++s)
    for (Index b = sets.begin(s); b < sets.end(s); b += chunk) out.push_back({s, b, std::min(sets.end(s), b + chunk)});
  return out;
}

// The neighbour list must be well formed over the batch's sets, cover the partition's cutoff,
// and (for backward) be symmetric.
void validate_neighbours(const char* what, const NeighbourList& nb, const RaggedIndex& sets, double cutoff,
                         bool symmetric) {
  check_neighbour_list(nb, sets.total_rows(), &sets, symmetric, what);
  require(nb.cutoff >= cutoff,
          std::string(what) + ": the neighbour list's cutoff " + std::to_string(nb.cutoff) +
              " is below the far field's cutoff " + std::to_string(cutoff) +
              " (pairs between them would be neither exact nor estimated)");
}

std::vector<Eigen::Vector3d> centroids(const RaggedIndex& sets, ConstMatRef<double> coords) {
  std::vector<Eigen::Vector3d> c(static_cast<std::size_t>(sets.num_sets()), Eigen::Vector3d::Zero());
  for (Index s = 0; s < sets.num_sets(); ++s) {
    if (sets.size(s) == 0) continue;
    Eigen::Vector3d sum = Eigen::Vector3d::Zero();
    for (Index i = sets.begin(s); i < sets.end(s); ++i) sum += coords.row(i).transpose();
    c[static_cast<std::size_t>(s)] = sum / static_cast<double>(sets.size(s));
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// The plan of the fast path: tasks (parallel units writing their own rows) and, for large
// incomplete sets, groups of rows whose partial sums are added in group order.
struct Task {
  Index set, begin, end;
  bool whole;  // an incomplete set handled entirely by this task (sums or Gram matrices included)
};
struct Plan {
  std::vector<Task> tasks;
  std::vector<Chunk> groups;                // of large incomplete sets, in set order
  std::vector<Index> first_group, num_groups; // per set (large incomplete sets only)
  std::vector<Index> large_sets;
};

Plan make_plan(const RaggedIndex& sets, const std::vector<Index>& sum_of_set) {
  Plan plan;
  const Index S = sets.num_sets();
  plan.first_group.assign(static_cast<std::size_t>(S), 0);
  plan.num_groups.assign(static_cast<std::size_t>(S), 0);
  for (Index s = 0; s < S; ++s) {
    const Index b = sets.begin(s), e = sets.end(s), n = e - b;
    if (n == 0) continue;
    const Index mode = sum_of_set[static_cast<std::size_t>(s)];
    if (mode == kGramSet || (mode >= 0 && n <= kWholeSetRows)) {
      plan.tasks.push_back({s, b, e, true});
      continue;
    }
    const bool features = mode >= 0;
    for (Index r = b; r < e; r += kRowChunk) plan.tasks.push_back({s, r, std::min(e, r + kRowChunk), false});
    if (!features) continue;
    const Index chunks = chunk_count(n, kRowChunk);
    const Index group_rows = kRowChunk * chunk_count(chunks, kMaxPartials);
    plan.first_group[static_cast<std::size_t>(s)] = static_cast<Index>(plan.groups.size());
    for (Index r = b; r < e; r += group_rows) plan.groups.push_back({s, r, std::min(e, r + group_rows)});
    plan.num_groups[static_cast<std::size_t>(s)] =
        static_cast<Index>(plan.groups.size()) - plan.first_group[static_cast<std::size_t>(s)];
    plan.large_sets.push_back(s);
  }
  return plan;
}

// Per row group t of the large sets: P_t = sum over the group's rows of Psi^T X (F x cols, double;
// X = V in forward, dout in backward). One thread computes each P_t in row order and the caller
// adds them in group order, so the sums are the same for any thread count.
template <class T>
std::vector<Mat<double>> group_feature_sums(const Geometry& g, const Plan& plan, ConstMatRef<double> coords,
                                            const std::vector<Eigen::Vector3d>& centre, ConstMatRef<T> X) {
  std::vector<Mat<double>> partial(plan.groups.size());
  const auto num_groups = static_cast<Index>(plan.groups.size());
#pragma omp parallel
  {
    Phases ph(g.M);
    Mat<double> Psi, Xd;
#pragma omp for schedule(dynamic, 1)
    for (Index t = 0; t < num_groups; ++t) {
      const Chunk& gr = plan.groups[static_cast<std::size_t>(t)];
      Mat<double>& P = partial[static_cast<std::size_t>(t)];
      P.setZero(g.F, X.cols());
      for (Index b = gr.begin; b < gr.end; b += kRowChunk) {
        const Index e = std::min(gr.end, b + kRowChunk);
        feature_block(g, coords, b, e, centre[static_cast<std::size_t>(gr.set)], Psi, ph);
        Xd = X.middleRows(b, e - b).template cast<double>();
        P.noalias() += Psi.transpose() * Xd;
      }
    }
  }
  return partial;
}

// Appends the sources of row i: its neighbours, plus itself when the list omits self pairs and the
// set uses features (the feature sums contain the self pair, whose exact weight w(0) = 0 is 0).
void near_sources(const NeighbourList& nb, Index i, bool add_self, std::vector<Index>& src) {
  const auto p0 = nb.offsets[static_cast<std::size_t>(i)], p1 = nb.offsets[static_cast<std::size_t>(i) + 1];
  bool self_done = !add_self;
  for (auto p = p0; p < p1; ++p) {
    const Index j = nb.source[static_cast<std::size_t>(p)];
    if (!self_done && j > i) {
      src.push_back(i);
      self_done = true;
    }
    src.push_back(j);
  }
  if (!self_done) src.push_back(i);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

const char* to_string(DesignKind kind) noexcept {
  switch (kind) {
    case DesignKind::product_grid: return "product_grid";
    case DesignKind::iid: return "iid";
  }
  return "?";
}

DesignKind design_kind_from_string(const std::string& name) {
  for (auto k : {DesignKind::product_grid, DesignKind::iid})
    if (name == to_string(k)) return k;
  throw ConfigError("unknown spherical design '" + name + "' (product_grid, iid)");
}

SphericalDesign SphericalDesign::product_grid(int degree) {
  if (degree < 0 || degree > 1000)
    throw ConfigError("spherical design: the product grid's degree must be in [0, 1000], got " +
                      std::to_string(degree));
  // n_theta Gauss-Legendre nodes in t = cos(theta) are exact for polynomials in t of degree
  // 2 n_theta - 1; n_phi equally spaced phi for trigonometric degree n_phi - 1. A monomial
  // x^a y^b z^c of degree D = a + b + c is (1 - t^2)^((a+b)/2) t^c cos^a(phi) sin^b(phi): its phi
  // part has frequencies <= a + b <= D and vanishes on average unless a + b is even, when the t part
  // is a polynomial of degree D. Both counts even: no node at t = 0 and phi + pi on the grid, so
  // the grid is closed under u -> -u and its t > 0 half holds one of each antipodal pair.
  auto even_at_least = [](int n) { return n + (n % 2); };
  const int n_theta = even_at_least(std::max(1, (degree + 2) / 2));
  const int n_phi = even_at_least(std::max(1, degree + 1));

  // Gauss-Legendre nodes (positive half) by Newton's method on the three-term recurrence.
  std::vector<double> t, wt;
  for (int i = 0; i < n_theta / 2; ++i) {
    double z = std::cos(std::numbers::pi * (i + 0.75) / (n_theta + 0.5));
    double dp = 0.0;
    for (int iter = 0; iter < 100; ++iter) {
      double p0 = 1.0, p1 = z;
      for (int k = 2; k <= n_theta; ++k) {
        const double p2 = ((2.0 * k - 1.0) * z * p1 - (k - 1.0) * p0) / k;
        p0 = p1;
        p1 = p2;
      }
      dp = n_theta * (z * p1 - p0) / (z * z - 1.0);  // P_n'(z)
      const double dz = p1 / dp;
      z -= dz;
      if (std::abs(dz) < 1e-16) break;
    }
    // weight recomputed at the converged node
    double p0 = 1.0, p1 = z;
    for (int k = 2; k <= n_theta; ++k) {
      const double p2 = ((2.0 * k - 1.0) * z * p1 - (k - 1.0) * p0) / k;
      p0 = p1;
      p1 = p2;
    }
    dp = n_theta * (z * p1 - p0) / (z * z - 1.0);
    t.push_back(z);
    wt.push_back(2.0 / ((1.0 - z * z) * dp * dp));  // on [-1, 1]: the full set sums to 2
  }
  SphericalDesign d;
  const Index M = static_cast<Index>(t.size()) * n_phi;
  d.directions.resize(M, 3);
  d.weights.resize(static_cast<std::size_t>(M));
  Index m = 0;
  double total = 0.0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const double st = std::sqrt(std::max(0.0, 1.0 - t[i] * t[i]));
    for (int k = 0; k < n_phi; ++k, ++m) {
      const double phi = 2.0 * std::numbers::pi * (k + 0.5) / n_phi;
      d.directions(m, 0) = st * std::cos(phi);
      d.directions(m, 1) = st * std::sin(phi);
      d.directions(m, 2) = t[i];
      // sphere average = (1/2) int dt (1/2pi) int dphi; the antipodal pair's two weights merged
      d.weights[static_cast<std::size_t>(m)] = wt[i] / n_phi;
      total += wt[i] / n_phi;
    }
  }
  for (double& w : d.weights) w /= total;  // 1 up to rounding already
  d.degree = std::min(2 * n_theta - 1, n_phi - 1);
  return d;
}

SphericalDesign SphericalDesign::iid(Index count, Rng& rng) {
  if (count < 1) throw ConfigError("spherical design: need at least one i.i.d. direction, got " + std::to_string(count));
  SphericalDesign d;
  d.directions.resize(count, 3);
  for (Index m = 0; m < count; ++m) {
    double x, y, z, r2;
    do {
      x = rng.normal();
      y = rng.normal();
      z = rng.normal();
      r2 = x * x + y * y + z * z;
    } while (r2 < 1e-300);
    const double inv = 1.0 / std::sqrt(r2);
    d.directions(m, 0) = x * inv;
    d.directions(m, 1) = y * inv;
    d.directions(m, 2) = z * inv;
  }
  d.weights.assign(static_cast<std::size_t>(count), 1.0 / static_cast<double>(count));
  d.degree = 0;
  return d;
}

SphericalDesign SphericalDesign::rotated(const Eigen::Matrix3d& rotation) const {
  require(rotation.allFinite() && (rotation.transpose() * rotation - Eigen::Matrix3d::Identity()).cwiseAbs().maxCoeff() < 1e-9,
          "SphericalDesign::rotated: the matrix is not orthogonal");
  SphericalDesign d = *this;
  d.directions = directions * rotation.transpose();
  return d;
}

void FarFieldConfig::validate() const {
  if (heads < 1) throw ConfigError("far field: heads must be >= 1, got " + std::to_string(heads));
  if (value_dim < 1) throw ConfigError("far field: value_dim must be >= 1, got " + std::to_string(value_dim));
  nodes.validate();
  if (!(cutoff > 0.0) || !std::isfinite(cutoff))
    throw ConfigError("far field: the cutoff must be positive and finite, got " + std::to_string(cutoff));
}

// ---------------------------------------------------------------------------------------------

template <class T>
void far_field_forward(const FarFieldConfig& cfg, const SphericalDesign& design, const RaggedIndex& sets,
                       const NeighbourList& nb, ConstMatRef<double> coords, ConstMatRef<T> V,
                       ConstMatRef<T> coeffs, MatRef<T> out, FarFieldCache<T>& cache) {
  validate_inputs<T>("far field forward", cfg, sets, coords, V, coeffs);
  validate_design(design);
  const Index N = sets.total_rows(), H = cfg.heads, dv = cfg.value_dim, Hdv = H * dv, K = cfg.nodes.count;
  require(out.rows() == N && out.cols() == Hdv, "far field forward: out must be N x (heads * value_dim)");
  validate_neighbours("far field forward", nb, sets, cfg.cutoff, false);

  const Geometry g(cfg.nodes, design, cfg.cutoff);
  const Mat<double> A = coeffs.template cast<double>();
  const Index S = sets.num_sets();
  cache.centre = centroids(sets, coords);
  cache.sum_of_set.assign(static_cast<std::size_t>(S), kCompleteSet);
  Index num_sums = 0;
  const Index small = gram_limit(g.F, Hdv);
  for (Index s = 0; s < S; ++s)
    if (sets.size(s) > 0 && !set_is_complete(nb, sets, s))
      cache.sum_of_set[static_cast<std::size_t>(s)] = sets.size(s) <= small ? kGramSet : num_sums++;
  cache.sums.assign(static_cast<std::size_t>(num_sums), Mat<double>());
  const Plan plan = make_plan(sets, cache.sum_of_set);
  const PairContext cx{cfg.nodes, cfg.cutoff, H, dv, K, A};

  // Partial sums of the large sets' row groups, then their sums in group order.
  std::vector<Mat<double>> partial = group_feature_sums<T>(g, plan, coords, cache.centre, V);
  std::vector<Mat<double>> scaled(static_cast<std::size_t>(S));  // S~ of the large sets
  for (const Index s : plan.large_sets) {
    Mat<double>& sum = cache.sums[static_cast<std::size_t>(cache.sum_of_set[static_cast<std::size_t>(s)])];
    const Index g0 = plan.first_group[static_cast<std::size_t>(s)];
    sum = partial[static_cast<std::size_t>(g0)];
    for (Index q = 1; q < plan.num_groups[static_cast<std::size_t>(s)]; ++q) sum += partial[static_cast<std::size_t>(g0 + q)];
    scale_by_coeffs(g, A, dv, sum, scaled[static_cast<std::size_t>(s)]);
  }
  partial.clear();

  const auto num_tasks = static_cast<Index>(plan.tasks.size());
  cache.pair_terms.assign(cache.keep_pair_terms ? plan.tasks.size() : 0, Mat<T>());
#pragma omp parallel
  {
    PairWork w(K, H, g.M);
    PairBlock pb;
    GramWork gw;
    Mat<double> acc, Psi, Vd, St_own;
#pragma omp for schedule(dynamic, 1)
    for (Index t = 0; t < num_tasks; ++t) {
      const Task& task = plan.tasks[static_cast<std::size_t>(t)];
      const auto su = static_cast<std::size_t>(task.set);
      const Index sum_index = cache.sum_of_set[su];
      const bool features = sum_index >= 0;  // near pairs: exact minus their estimate
      const Index R = task.end - task.begin;
      acc.setZero(R, Hdv);
      const bool add_self = features && !nb.include_self;
      pb.start(task.begin);
      for (Index i = task.begin; i < task.end; ++i)
        pb.add_row([&](std::vector<Index>& src) { near_sources(nb, i, add_self, src); });
      pair_terms<T>(cx, features ? &g : nullptr, coords, pb, w);
      if (cache.keep_pair_terms) cache.pair_terms[static_cast<std::size_t>(t)] = pb.G.template cast<T>();
      for (Index i = task.begin; i < task.end; ++i) forward_row<T>(cx, pb, i, V, acc.row(i - task.begin).data(), w);
      if (sum_index == kGramSet) {
        feature_block(g, coords, task.begin, task.end, cache.centre[su], Psi, w.ph);
        Vd = V.middleRows(task.begin, R).template cast<double>();
        gw.far_mask(nb, task.begin, task.end);
        gram_forward(g, A, dv, Psi, Vd, acc, gw);
      }
      if (features) {
        const Eigen::Vector3d& c = cache.centre[su];
        if (task.whole) {
          Mat<double>& sum = cache.sums[static_cast<std::size_t>(sum_index)];
          sum.setZero(g.F, Hdv);
          for (Index b = task.begin; b < task.end; b += kRowChunk) {
            const Index e = std::min(task.end, b + kRowChunk);
            feature_block(g, coords, b, e, c, Psi, w.ph);
            Vd = V.middleRows(b, e - b).template cast<double>();
            sum.noalias() += Psi.transpose() * Vd;
          }
          scale_by_coeffs(g, A, dv, sum, St_own);
          const bool one_block = R <= kRowChunk;  // Psi still holds the whole set
          for (Index b = task.begin; b < task.end; b += kRowChunk) {
            const Index e = std::min(task.end, b + kRowChunk);
            if (!one_block) feature_block(g, coords, b, e, c, Psi, w.ph);
            acc.middleRows(b - task.begin, e - b).noalias() += Psi * St_own;
          }
        } else {
          for (Index b = task.begin; b < task.end; b += kRowChunk) {
            const Index e = std::min(task.end, b + kRowChunk);
            feature_block(g, coords, b, e, c, Psi, w.ph);
            acc.middleRows(b - task.begin, e - b).noalias() += Psi * scaled[su];
          }
        }
      }
      out.middleRows(task.begin, R) = acc.template cast<T>();
    }
  }
}

template <class T>
void far_field_backward(const FarFieldConfig& cfg, const SphericalDesign& design, const RaggedIndex& sets,
                        const NeighbourList& nb, ConstMatRef<double> coords, ConstMatRef<T> V,
                        ConstMatRef<T> coeffs, const FarFieldCache<T>& cache, ConstMatRef<T> dout,
                        MatRef<T> dV, MatRef<T> dcoords, MatRef<T> dcoeffs) {
  validate_inputs<T>("far field backward", cfg, sets, coords, V, coeffs);
  validate_design(design);
  const Index N = sets.total_rows(), H = cfg.heads, dv = cfg.value_dim, Hdv = H * dv, K = cfg.nodes.count;
  const Index S = sets.num_sets();
  require(dout.rows() == N && dout.cols() == Hdv, "far field backward: dout must be N x (heads * value_dim)");
  require(dV.rows() == N && dV.cols() == Hdv, "far field backward: dV must be N x (heads * value_dim)");
  require(dcoords.size() == 0 || (dcoords.rows() == N && dcoords.cols() == 3),
          "far field backward: dcoords must be N x 3 or empty");
  require(dcoeffs.rows() == H && dcoeffs.cols() == K, "far field backward: dcoeffs must be heads x nodes");
  const Geometry g(cfg.nodes, design, cfg.cutoff);
  require(static_cast<Index>(cache.sum_of_set.size()) == S && static_cast<Index>(cache.centre.size()) == S,
          "far field backward: the cache is not from a forward over these sets");
  for (Index s = 0; s < S; ++s) {
    const Index k = cache.sum_of_set[static_cast<std::size_t>(s)];
    require(k >= kGramSet && k < static_cast<Index>(cache.sums.size()) &&
                (k != kGramSet || sets.size(s) <= gram_limit(g.F, Hdv)) &&
                (k < 0 || (cache.sums[static_cast<std::size_t>(k)].rows() == g.F &&
                           cache.sums[static_cast<std::size_t>(k)].cols() == Hdv)),
            "far field backward: the cache does not match the configuration and design");
  }
  validate_neighbours("far field backward", nb, sets, cfg.cutoff, true);

  const Mat<double> A = coeffs.template cast<double>();
  const Plan plan = make_plan(sets, cache.sum_of_set);
  const PairContext cx{cfg.nodes, cfg.cutoff, H, dv, K, A};
  const bool want_coords = dcoords.size() > 0;

  // dS~ of the large sets: partials over row groups, added in group order.
  std::vector<Mat<double>> partial = group_feature_sums<T>(g, plan, coords, cache.centre, dout);
  std::vector<Mat<double>> scaled(static_cast<std::size_t>(S)), dsum(static_cast<std::size_t>(S));
  Mat<double> da_total = Mat<double>::Zero(H, K);
  for (const Index s : plan.large_sets) {
    const auto su = static_cast<std::size_t>(s);
    const Mat<double>& sum = cache.sums[static_cast<std::size_t>(cache.sum_of_set[su])];
    const Index g0 = plan.first_group[su];
    Mat<double> dSt = partial[static_cast<std::size_t>(g0)];
    for (Index q = 1; q < plan.num_groups[su]; ++q) dSt += partial[static_cast<std::size_t>(g0 + q)];
    coeff_grad_from_sums(g, dv, sum, dSt, da_total);
    scale_by_coeffs(g, A, dv, sum, scaled[su]);
    scale_by_coeffs(g, A, dv, dSt, dsum[su]);
  }
  partial.clear();

  const auto num_tasks = static_cast<Index>(plan.tasks.size());
  // The forward's pair terms, when it kept them: g_n(i, j) is all a backward without coordinate
  // gradients needs of a pair (with them, also the estimate's gradient, computed afresh).
  const bool kept_terms = !want_coords && !cache.pair_terms.empty();
  if (kept_terms) {
    require(cache.pair_terms.size() == plan.tasks.size(), "far field backward: the kept pair terms are not from this plan");
    for (std::size_t t = 0; t < plan.tasks.size(); ++t) {
      const Task& task = plan.tasks[t];
      const bool add_self = cache.sum_of_set[static_cast<std::size_t>(task.set)] >= 0 && !nb.include_self;
      const Index pairs = nb.offsets[static_cast<std::size_t>(task.end)] - nb.offsets[static_cast<std::size_t>(task.begin)] +
                          (add_self ? task.end - task.begin : 0);
      require(cache.pair_terms[t].rows() == pairs && cache.pair_terms[t].cols() == K,
              "far field backward: the kept pair terms do not match the neighbour list");
    }
  }
  std::vector<Mat<double>> da_part(plan.tasks.size());
#pragma omp parallel
  {
    PairWork w(K, H, g.M);
    PairBlock pb;
    GramWork gw;
    Mat<double> dVacc, dracc, Psi, Gd, Vd, St_own, dS_own, dSt, dPsi;
#pragma omp for schedule(dynamic, 1)
    for (Index t = 0; t < num_tasks; ++t) {
      const Task& task = plan.tasks[static_cast<std::size_t>(t)];
      const auto su = static_cast<std::size_t>(task.set);
      const Index sum_index = cache.sum_of_set[su];
      const bool features = sum_index >= 0;
      const Index R = task.end - task.begin;
      Mat<double>& da = da_part[static_cast<std::size_t>(t)];
      da.setZero(H, K);
      dVacc.setZero(R, Hdv);
      dracc.setZero(want_coords ? R : 0, 3);
      const bool add_self = features && !nb.include_self;
      pb.start(task.begin);
      for (Index i = task.begin; i < task.end; ++i)
        pb.add_row([&](std::vector<Index>& src) { near_sources(nb, i, add_self, src); });
      if (kept_terms) {
        pb.G = cache.pair_terms[static_cast<std::size_t>(t)].template cast<double>();
        pb.own.resize(0, H);
      } else {
        pair_terms<T>(cx, features ? &g : nullptr, coords, pb, w, want_coords ? &V : nullptr, &dout);
      }
      for (Index i = task.begin; i < task.end; ++i)
        backward_row<T>(cx, pb, i, coords, V, dout, dVacc.row(i - task.begin).data(),
                        want_coords ? dracc.row(i - task.begin).data() : nullptr, da, w);
      if (sum_index == kGramSet) {
        feature_block(g, coords, task.begin, task.end, cache.centre[su], Psi, w.ph);
        Gd = dout.middleRows(task.begin, R).template cast<double>();
        Vd = V.middleRows(task.begin, R).template cast<double>();
        gw.far_mask(nb, task.begin, task.end);
        gram_backward(g, A, dv, Psi, Gd, Vd, dVacc, want_coords ? dracc.data() : nullptr, da, dPsi, gw, w.ph);
      }
      if (features) {
        const Eigen::Vector3d& c = cache.centre[su];
        const bool one_block = R <= kRowChunk;
        const Mat<double>* St = &scaled[su];
        const Mat<double>* dS = &dsum[su];
        if (task.whole) {
          const Mat<double>& sum = cache.sums[static_cast<std::size_t>(sum_index)];
          dSt.setZero(g.F, Hdv);
          for (Index b = task.begin; b < task.end; b += kRowChunk) {
            const Index e = std::min(task.end, b + kRowChunk);
            feature_block(g, coords, b, e, c, Psi, w.ph);
            Gd = dout.middleRows(b, e - b).template cast<double>();
            dSt.noalias() += Psi.transpose() * Gd;
          }
          coeff_grad_from_sums(g, dv, sum, dSt, da);
          scale_by_coeffs(g, A, dv, sum, St_own);
          scale_by_coeffs(g, A, dv, dSt, dS_own);
          St = &St_own;
          dS = &dS_own;
        }
        for (Index b = task.begin; b < task.end; b += kRowChunk) {
          const Index e = std::min(task.end, b + kRowChunk);
          if (!(task.whole && one_block)) feature_block(g, coords, b, e, c, Psi, w.ph);
          Gd = dout.middleRows(b, e - b).template cast<double>();
          Vd = V.middleRows(b, e - b).template cast<double>();
          far_backward_block(g, Psi, *St, *dS, Gd, Vd, dVacc.middleRows(b - task.begin, e - b),
                             want_coords ? dracc.row(b - task.begin).data() : nullptr, dPsi, w.ph);
        }
      }
      dV.middleRows(task.begin, R) += dVacc.template cast<T>();
      if (want_coords) dcoords.middleRows(task.begin, R) += dracc.template cast<T>();
    }
  }
  for (const auto& part : da_part) da_total += part;
  dcoeffs += da_total.template cast<T>();
}

// ---------------------------------------------------------------------------------------------

template <class T>
void far_field_exact_forward(const FarFieldConfig& cfg, const RaggedIndex& sets, ConstMatRef<Accum<T>> coords,
                             ConstMatRef<T> V, ConstMatRef<T> coeffs, MatRef<T> out) {
  validate_inputs<T>("far field exact forward", cfg, sets, coords, V, coeffs);
  const Index N = sets.total_rows(), H = cfg.heads, dv = cfg.value_dim, Hdv = H * dv, K = cfg.nodes.count;
  require(out.rows() == N && out.cols() == Hdv, "far field exact forward: out must be N x (heads * value_dim)");
  const Mat<double> A = coeffs.template cast<double>();
  const PairContext cx{cfg.nodes, cfg.cutoff, H, dv, K, A};
  const std::vector<Chunk> chunks = row_chunks(sets, kRowChunk);
  const auto num_chunks = static_cast<Index>(chunks.size());
#pragma omp parallel
  {
    PairWork w(K, H, 0);
    PairBlock pb;
    Mat<double> acc;
#pragma omp for schedule(dynamic, 1)
    for (Index t = 0; t < num_chunks; ++t) {
      const Chunk& ch = chunks[static_cast<std::size_t>(t)];
      acc.setZero(ch.end - ch.begin, Hdv);
      for (Index i = ch.begin; i < ch.end; ++i) {  // one row at a time: the set's pairs are O(n^2)
        pb.start(i);
        pb.add_row([&](std::vector<Index>& src) {
          for (Index j = sets.begin(ch.set); j < sets.end(ch.set); ++j) src.push_back(j);
        });
        pair_terms<T>(cx, nullptr, coords, pb, w);
        forward_row<T>(cx, pb, i, V, acc.row(i - ch.begin).data(), w);
      }
      out.middleRows(ch.begin, ch.end - ch.begin) = acc.template cast<T>();
    }
  }
}

template <class T>
void far_field_exact_backward(const FarFieldConfig& cfg, const RaggedIndex& sets, ConstMatRef<Accum<T>> coords,
                              ConstMatRef<T> V, ConstMatRef<T> coeffs, ConstMatRef<T> dout, MatRef<T> dV,
                              MatRef<T> dcoords, MatRef<T> dcoeffs) {
  validate_inputs<T>("far field exact backward", cfg, sets, coords, V, coeffs);
  const Index N = sets.total_rows(), H = cfg.heads, dv = cfg.value_dim, Hdv = H * dv, K = cfg.nodes.count;
  require(dout.rows() == N && dout.cols() == Hdv, "far field exact backward: dout must be N x (heads * value_dim)");
  require(dV.rows() == N && dV.cols() == Hdv, "far field exact backward: dV must be N x (heads * value_dim)");
  require(dcoords.size() == 0 || (dcoords.rows() == N && dcoords.cols() == 3),
          "far field exact backward: dcoords must be N x 3 or empty");
  require(dcoeffs.rows() == H && dcoeffs.cols() == K, "far field exact backward: dcoeffs must be heads x nodes");
  const Mat<double> A = coeffs.template cast<double>();
  const PairContext cx{cfg.nodes, cfg.cutoff, H, dv, K, A};
  const bool want_coords = dcoords.size() > 0;
  const std::vector<Chunk> chunks = row_chunks(sets, kRowChunk);
  const auto num_chunks = static_cast<Index>(chunks.size());
  std::vector<Mat<double>> da_part(chunks.size());
#pragma omp parallel
  {
    PairWork w(K, H, 0);
    PairBlock pb;
    Mat<double> dVacc, dracc;
#pragma omp for schedule(dynamic, 1)
    for (Index t = 0; t < num_chunks; ++t) {
      const Chunk& ch = chunks[static_cast<std::size_t>(t)];
      const Index R = ch.end - ch.begin;
      Mat<double>& da = da_part[static_cast<std::size_t>(t)];
      da.setZero(H, K);
      dVacc.setZero(R, Hdv);
      dracc.setZero(want_coords ? R : 0, 3);
      for (Index i = ch.begin; i < ch.end; ++i) {
        pb.start(i);
        pb.add_row([&](std::vector<Index>& src) {
          for (Index j = sets.begin(ch.set); j < sets.end(ch.set); ++j) src.push_back(j);
        });
        pair_terms<T>(cx, nullptr, coords, pb, w, want_coords ? &V : nullptr, &dout);
        backward_row<T>(cx, pb, i, coords, V, dout, dVacc.row(i - ch.begin).data(),
                        want_coords ? dracc.row(i - ch.begin).data() : nullptr, da, w);
      }
      dV.middleRows(ch.begin, R) += dVacc.template cast<T>();
      if (want_coords) dcoords.middleRows(ch.begin, R) += dracc.template cast<T>();
    }
  }
  Mat<double> total = Mat<double>::Zero(H, K);
  for (const auto& part : da_part) total += part;
  dcoeffs += total.template cast<T>();
}

// ---------------------------------------------------------------------------------------------

Mat<double> mask_estimate(const FarFieldConfig& cfg, const SphericalDesign& design, ConstMatRef<double> coords,
                          std::span<const double> coeffs_of_head) {
  cfg.validate();
  validate_design(design);
  const Index K = cfg.nodes.count, n = coords.rows();
  require(coords.cols() == 3, "mask_estimate: coords must be n x 3");
  require(static_cast<Index>(coeffs_of_head.size()) == K, "mask_estimate: need one coefficient per node");
  require(coords.allFinite(), "mask_estimate: non-finite coordinates");
  const Geometry g(cfg.nodes, design);
  Eigen::Vector3d centre = Eigen::Vector3d::Zero();
  for (Index i = 0; i < n; ++i) centre += coords.row(i).transpose();
  if (n > 0) centre /= static_cast<double>(n);
  Phases ph(g.M);
  Mat<double> Psi;
  feature_block(g, coords, 0, n, centre, Psi, ph);
  Vec<double> scale(g.F);
  for (Index f = 0; f < g.F; ++f) scale(f) = coeffs_of_head[static_cast<std::size_t>(g.node_of_column(f))];
  return Psi * scale.asDiagonal() * Psi.transpose();
}

bool far_field_closed_form(const FarFieldConfig& cfg, const SphericalDesign& design) {
  cfg.validate();
  validate_design(design);
  return Geometry(cfg.nodes, design, cfg.cutoff).closed.on;
}

Mat<double> mask_exact(const FarFieldConfig& cfg, ConstMatRef<double> coords, std::span<const double> coeffs_of_head) {
  cfg.validate();
  const Index K = cfg.nodes.count, n = coords.rows();
  require(coords.cols() == 3, "mask_exact: coords must be n x 3");
  require(static_cast<Index>(coeffs_of_head.size()) == K, "mask_exact: need one coefficient per node");
  Mat<double> out(n, n);
  Eigen::ArrayXd b(K);
  const Eigen::Map<const Eigen::ArrayXd> a(coeffs_of_head.data(), K);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) {
      radial_basis(cfg.nodes, (coords.row(i) - coords.row(j)).norm(), b.data(), nullptr);
      out(i, j) = (a * b).sum();
    }
  return out;
}

// ---------------------------------------------------------------------------------------------
// T = Dual: the far field written out pair by pair, every quantity carrying its tangent. For each
// pair (i, j) of a set, d = r_i - r_j, rho = |d|, a per-node term g_n(d) and its gradient in d:
//   the closed form (F1), and the fast path's pairs in the neighbour list or the self pair:
//     g_n = w(rho) b_n(rho),  dg_n/dd = (w' b_n + w b_n') d / rho
//   the fast path's other pairs, the features' estimate (E30):
//     g_n = E_n(d) = sum_m lam_m cos(2 pi kappa_n u_m.d),  dE_n/dd = -2 pi kappa_n sum_m lam_m sin(.) u_m
// Forward: c_h = sum_n a_hn g_n;  out_i,h += c_h v_j,h. Backward (G = dLoss/dout; gc_h = G_i,h . v_j,h):
//   dV_j,h += c_h G_i,h;  da_hn += gc_h g_n;  dr_i += sum_h gc_h sum_n a_hn dg_n/dd;  dr_j -= the same.
// The fast path equals this sum (it adds the features' estimate over all pairs and replaces the
// near pairs' share by the exact terms); only the rounding differs. The distance's tangent reaches
// b_n and b_n' through b_n' and b_n'' (spherical_j0_second_derivative), the envelope's through e'
// and e''.

namespace {

// scratch: 3K doubles (kept by the caller across pairs).
void radial_basis_dual(const RadialNodes& nodes, const Dual& rho, std::vector<Dual>& b,
                       std::vector<Dual>& db, std::vector<double>& scratch) {
  const auto K = static_cast<std::size_t>(nodes.count);
  scratch.resize(3 * K);
  double* v = scratch.data();
  double* dv = v + K;
  double* ddv = dv + K;
  radial_basis(nodes, rho.v, v, dv);
  radial_basis_second_derivative(nodes, rho.v, ddv);
  b.resize(K);
  db.resize(K);
  for (std::size_t n = 0; n < K; ++n) {
    b[n] = {v[n], dv[n] * rho.d};
    db[n] = {dv[n], ddv[n] * rho.d};
  }
}

// The terms g_n and their gradients dg_n/dd (K x 3) of one pair; the gradients only when
// want_grad (the backward with coordinate gradients).
struct DualPairTerms {
  Dual d[3];
  bool want_grad = true;
  std::vector<Dual> g, b, db;
  std::vector<std::array<Dual, 3>> grad;
  std::vector<double> scratch;
};

void exact_terms(const FarFieldConfig& cfg, DualPairTerms& p) {
  const Dual rho = sqrt(p.d[0] * p.d[0] + p.d[1] * p.d[1] + p.d[2] * p.d[2]);
  radial_basis_dual(cfg.nodes, rho, p.b, p.db, p.scratch);
  const double e1 = envelope_derivative(rho.v, cfg.cutoff);
  const Dual wt{1.0 - envelope(rho.v, cfg.cutoff), -e1 * rho.d};
  const Dual dwt{-e1, -envelope_second_derivative(rho.v, cfg.cutoff) * rho.d};
  const auto K = p.b.size();
  p.g.resize(K);
  p.grad.resize(K);
  for (std::size_t n = 0; n < K; ++n) {
    p.g[n] = wt * p.b[n];
    if (!p.want_grad) continue;
    const Dual radial = rho > 0.0 ? Dual((dwt * p.b[n] + wt * p.db[n]) / rho) : Dual(0.0);
    for (int a = 0; a < 3; ++a) p.grad[n][static_cast<std::size_t>(a)] = radial * p.d[a];
  }
}

void estimate_terms(const FarFieldConfig& cfg, const SphericalDesign& design, DualPairTerms& p) {
  const auto K = static_cast<std::size_t>(cfg.nodes.count);
  p.g.assign(K, Dual(0.0));
  p.grad.assign(K, {Dual(0.0), Dual(0.0), Dual(0.0)});
  for (Index m = 0; m < design.size(); ++m) {
    const double u[3] = {design.directions(m, 0), design.directions(m, 1), design.directions(m, 2)};
    const Dual proj = u[0] * p.d[0] + u[1] * p.d[1] + u[2] * p.d[2];
    const double lam = design.weights[static_cast<std::size_t>(m)];
    for (std::size_t n = 0; n < K; ++n) {
      const double k = kTwoPi * cfg.nodes.kappa(static_cast<Index>(n));
      const Dual theta = k * proj;
      p.g[n] += lam * cos(theta);
      if (!p.want_grad) continue;
      const Dual slope = -lam * k * sin(theta);
      for (int a = 0; a < 3; ++a) p.grad[n][static_cast<std::size_t>(a)] += slope * u[a];
    }
  }
}

// Calls terms(i, j, p) for every ordered pair of every set (after filling p.d) and accumulates
// the forward (out) or the backward (dV, dcoords, dcoeffs); serial within a set, parallel over sets.
template <class Terms>
void dual_pair_sums(const FarFieldConfig& cfg, const RaggedIndex& sets, ConstMatRef<Dual> coords,
                    ConstMatRef<Dual> V, ConstMatRef<Dual> coeffs, const Terms& terms, MatRef<Dual>* out,
                    ConstMatRef<Dual>* dout, MatRef<Dual>* dV, MatRef<Dual>* dcoords, MatRef<Dual>* dcoeffs) {
  const Index H = cfg.heads, dv = cfg.value_dim, K = cfg.nodes.count;
  std::vector<Mat<Dual>> da_part(static_cast<std::size_t>(sets.num_sets()));
#pragma omp parallel for schedule(dynamic, 1)
  for (Index s = 0; s < sets.num_sets(); ++s) {
    DualPairTerms p;
    p.want_grad = dcoords && dcoords->size() > 0;
    Mat<Dual>& da = da_part[static_cast<std::size_t>(s)];
    if (dcoeffs) da = Mat<Dual>::Zero(H, K);
    for (Index i = sets.begin(s); i < sets.end(s); ++i)
      for (Index j = sets.begin(s); j < sets.end(s); ++j) {
        for (int a = 0; a < 3; ++a) p.d[a] = coords(i, a) - coords(j, a);
        terms(i, j, p);
        Dual grad_sum[3] = {0.0, 0.0, 0.0};  // sum_h gc_h sum_n a_hn dg_n/dd
        for (Index h = 0; h < H; ++h) {
          Dual c = 0.0;
          for (Index n = 0; n < K; ++n) c += coeffs(h, n) * p.g[static_cast<std::size_t>(n)];
          if (out) {
            for (Index x = h * dv; x < (h + 1) * dv; ++x) (*out)(i, x) += c * V(j, x);
            continue;
          }
          Dual gc = 0.0;
          for (Index x = h * dv; x < (h + 1) * dv; ++x) gc += (*dout)(i, x) * V(j, x);
          for (Index x = h * dv; x < (h + 1) * dv; ++x) (*dV)(j, x) += c * (*dout)(i, x);
          for (Index n = 0; n < K; ++n) {
            const auto nn = static_cast<std::size_t>(n);
            da(h, n) += gc * p.g[nn];
            if (p.want_grad)
              for (int a = 0; a < 3; ++a) grad_sum[a] += gc * coeffs(h, n) * p.grad[nn][static_cast<std::size_t>(a)];
          }
        }
        if (p.want_grad)
          for (int a = 0; a < 3; ++a) {
            (*dcoords)(i, a) += grad_sum[a];
            (*dcoords)(j, a) -= grad_sum[a];
          }
      }
  }
  if (dcoeffs)
    for (const auto& part : da_part) *dcoeffs += part;
}

void check_dual_backward(const FarFieldConfig& cfg, Index N, ConstMatRef<Dual> dout, MatRef<Dual> dV,
                         MatRef<Dual> dcoords, MatRef<Dual> dcoeffs) {
  const Index Hdv = cfg.heads * cfg.value_dim;
  require(dout.rows() == N && dout.cols() == Hdv && dV.rows() == N && dV.cols() == Hdv,
          "far field backward: dout and dV must be N x (heads * value_dim)");
  require(dcoords.size() == 0 || (dcoords.rows() == N && dcoords.cols() == 3),
          "far field backward: dcoords must be N x 3 or empty");
  require(dcoeffs.rows() == cfg.heads && dcoeffs.cols() == cfg.nodes.count,
          "far field backward: dcoeffs must be heads x nodes");
}

// The checks of a dual forward and backward with a design and a list (the pair-by-pair reference
// and the fast path); backward's list must be symmetric where it gathers pairs per row.
void check_dual_forward(const FarFieldConfig& cfg, const SphericalDesign& design, const RaggedIndex& sets,
                        const NeighbourList& nb, ConstMatRef<Dual> coords, ConstMatRef<Dual> V,
                        ConstMatRef<Dual> coeffs, MatRef<Dual> out) {
  validate_inputs<Dual, Dual>("far field forward", cfg, sets, coords, V, coeffs);
  validate_design(design);
  validate_neighbours("far field forward", nb, sets, cfg.cutoff, false);
  require(out.rows() == sets.total_rows() && out.cols() == cfg.heads * cfg.value_dim,
          "far field forward: out must be N x (heads * value_dim)");
}
void check_dual_backward(const FarFieldConfig& cfg, const SphericalDesign& design, const RaggedIndex& sets,
                         const NeighbourList& nb, bool symmetric, ConstMatRef<Dual> coords, ConstMatRef<Dual> V,
                         ConstMatRef<Dual> coeffs, ConstMatRef<Dual> dout, MatRef<Dual> dV, MatRef<Dual> dcoords,
                         MatRef<Dual> dcoeffs) {
  validate_inputs<Dual, Dual>("far field backward", cfg, sets, coords, V, coeffs);
  validate_design(design);
  validate_neighbours("far field backward", nb, sets, cfg.cutoff, symmetric);
  check_dual_backward(cfg, sets.total_rows(), dout, dV, dcoords, dcoeffs);
}

// Whether j is the self pair or in the neighbour list of i (sources sorted per row).
bool near_pair(const NeighbourList& nb, Index i, Index j) {
  if (i == j) return true;
  const auto b = nb.source.begin() + nb.offsets[static_cast<std::size_t>(i)];
  const auto e = nb.source.begin() + nb.offsets[static_cast<std::size_t>(i) + 1];
  return std::binary_search(b, e, static_cast<std::int32_t>(j));
}

}  // namespace

template <>
void far_field_exact_forward<Dual>(const FarFieldConfig& cfg, const RaggedIndex& sets,
                                   ConstMatRef<Dual> coords, ConstMatRef<Dual> V,
                                   ConstMatRef<Dual> coeffs, MatRef<Dual> out) {
  validate_inputs<Dual, Dual>("far field exact forward", cfg, sets, coords, V, coeffs);
  require(out.rows() == sets.total_rows() && out.cols() == cfg.heads * cfg.value_dim,
          "far field exact forward: out must be N x (heads * value_dim)");
  out.setZero();
  const auto terms = [&](Index, Index, DualPairTerms& p) { exact_terms(cfg, p); };
  dual_pair_sums(cfg, sets, coords, V, coeffs, terms, &out, nullptr, nullptr, nullptr, nullptr);
}

template <>
void far_field_exact_backward<Dual>(const FarFieldConfig& cfg, const RaggedIndex& sets,
                                    ConstMatRef<Dual> coords, ConstMatRef<Dual> V,
                                    ConstMatRef<Dual> coeffs, ConstMatRef<Dual> dout,
                                    MatRef<Dual> dV, MatRef<Dual> dcoords, MatRef<Dual> dcoeffs) {
  validate_inputs<Dual, Dual>("far field exact backward", cfg, sets, coords, V, coeffs);
  check_dual_backward(cfg, sets.total_rows(), dout, dV, dcoords, dcoeffs);
  const auto terms = [&](Index, Index, DualPairTerms& p) { exact_terms(cfg, p); };
  dual_pair_sums(cfg, sets, coords, V, coeffs, terms, nullptr, &dout, &dV, &dcoords, &dcoeffs);
}

void far_field_pairs_forward(const FarFieldConfig& cfg, const SphericalDesign& design, const RaggedIndex& sets,
                             const NeighbourList& neighbours, ConstMatRef<Dual> coords, ConstMatRef<Dual> V,
                             ConstMatRef<Dual> coeffs, MatRef<Dual> out) {
  check_dual_forward(cfg, design, sets, neighbours, coords, V, coeffs, out);
  out.setZero();
  const auto terms = [&](Index i, Index j, DualPairTerms& p) {
    if (near_pair(neighbours, i, j)) exact_terms(cfg, p);
    else estimate_terms(cfg, design, p);
  };
  dual_pair_sums(cfg, sets, coords, V, coeffs, terms, &out, nullptr, nullptr, nullptr, nullptr);
}

void far_field_pairs_backward(const FarFieldConfig& cfg, const SphericalDesign& design, const RaggedIndex& sets,
                              const NeighbourList& neighbours, ConstMatRef<Dual> coords, ConstMatRef<Dual> V,
                              ConstMatRef<Dual> coeffs, ConstMatRef<Dual> dout, MatRef<Dual> dV,
                              MatRef<Dual> dcoords, MatRef<Dual> dcoeffs) {
  check_dual_backward(cfg, design, sets, neighbours, false, coords, V, coeffs, dout, dV, dcoords, dcoeffs);
  const auto terms = [&](Index i, Index j, DualPairTerms& p) {
    if (near_pair(neighbours, i, j)) exact_terms(cfg, p);
    else estimate_terms(cfg, design, p);
  };
  dual_pair_sums(cfg, sets, coords, V, coeffs, terms, nullptr, &dout, &dV, &dcoords, &dcoeffs);
}

// ---------------------------------------------------------------------------------------------
// The fast path in dual numbers: the same sums as far_field_pairs_forward / backward, computed as
// the fast path does (features over all pairs of an incomplete set, the near pairs' estimate
// replaced by their exact terms), with every quantity carrying its tangent. Per feature column f
// (node n, direction m) at x = r - centre, with theta = 2 pi kappa_n u_m.x:
//   psi_cos = sqrt(lam_m) cos theta,  psi_sin = sqrt(lam_m) sin theta,
//   d psi_cos / dr = -k psi_sin,  d psi_sin / dr = k psi_cos,  k = 2 pi kappa_n u_m;
// the zero node's column is the constant 1. Per set with features, S = Psi^T V (F x H dv) and
//   out_i,h = sum_n a_hn sum_{f in n} psi_if S_f,h + sum_{j near i or j = i} c_h(ij) v_j,h,
//   c_h(ij) = sum_n a_hn D_n(ij),  D_n(ij) = w(rho_ij) b_n(rho_ij) - sum_{f in n} psi_if psi_jf.
// Backward with G = Psi^T dout: dV_i,h += sum_n a_hn sum_{f in n} psi_if G_f,h, da_hn += sum_{f in n}
// G_f,h . S_f,h, and dr_i gets sum_f R_if d psi_if / dr with R_if = sum_h a_hn(f) (dout_i,h . S_f,h
// + v_i,h . G_f,h). The near pairs are gathered per row (the list is symmetric and D even in d):
//   dV_i,h += sum_j c_h(ij) dout_j,h,  da_hn += sum_j gc_h(ij) D_n(ij),  gc_h(ij) = dout_i,h . v_j,h,
//   dr_i += sum_j sum_n (sum_h (gc_h(ij) + gc_h(ji)) a_hn) dD_n(ij)/dr_i,
// so every gradient row has one writer. Complete sets (every pair in the list) use no features;
// small incomplete sets no sums: each pair takes its exact terms (near) or psi_i . psi_j (far),
// n^2 F instead of about 4 n F H dv operations.

namespace {

// Per feature column: its node and, for oscillating nodes, the partner column (cos <-> sin) and
// k_f with d psi_f / dr = k_f psi_partner(f) (k_f = -2 pi kappa_n u_m for cos, + for sin).
struct DualColumns {
  std::vector<Index> node, partner;
  Mat<double> slope;  // F x 3 (zero for the constant column)
};

DualColumns dual_columns(const Geometry& g) {
  DualColumns c;
  c.node.assign(static_cast<std::size_t>(g.F), 0);
  c.partner.assign(static_cast<std::size_t>(g.F), 0);
  c.slope = Mat<double>::Zero(g.F, 3);
  for (Index n = g.n0; n < g.K; ++n)
    for (Index m = 0; m < g.M; ++m) {
      const Index fc = g.offset(n) + m, fs = fc + g.M;
      const double k = kTwoPi * g.kappa(n);
      c.node[static_cast<std::size_t>(fc)] = c.node[static_cast<std::size_t>(fs)] = n;
      c.partner[static_cast<std::size_t>(fc)] = fs;
      c.partner[static_cast<std::size_t>(fs)] = fc;
      const double u[3] = {g.ux(m), g.uy(m), g.uz(m)};
      for (int a = 0; a < 3; ++a) {
        c.slope(fc, a) = -k * u[a];
        c.slope(fs, a) = k * u[a];
      }
    }
  return c;
}

// The columns of node n: [first, last) (a zero node: the constant column 0).
std::pair<Index, Index> node_columns(const Geometry& g, Index n) {
  if (n < g.n0) return {0, 1};
  return {g.offset(n), g.offset(n) + 2 * g.M};
}

// What the dual fast path keeps per set: whether it uses features, and then its centre, the row
// of its first atom in Psi, S = Psi^T V and (backward) G = Psi^T dout. A small incomplete set
// (at most gram_limit(F, H dv) rows, as in the float path) is `pairwise`: no sums; each of its
// pairs takes the exact terms (in the list) or the dot product of the two feature rows.
struct DualSetPlan {
  std::vector<char> features, pairwise;
  std::vector<Index> first_psi_row;  // per set; rows of feature sets are stacked in set order
  std::vector<Eigen::Vector3d> centre;
  std::vector<Index> set_of_row;     // per row
  Index psi_rows = 0;
};

DualSetPlan dual_set_plan(const RaggedIndex& sets, const NeighbourList& nb, ConstMatRef<Dual> coords,
                          Index pairwise_rows) {
  DualSetPlan p;
  const Index S = sets.num_sets();
  p.features.assign(static_cast<std::size_t>(S), 0);
  p.pairwise.assign(static_cast<std::size_t>(S), 0);
  p.first_psi_row.assign(static_cast<std::size_t>(S), 0);
  p.centre.assign(static_cast<std::size_t>(S), Eigen::Vector3d::Zero());
  p.set_of_row.assign(static_cast<std::size_t>(sets.total_rows()), 0);
  for (Index s = 0; s < S; ++s) {
    for (Index i = sets.begin(s); i < sets.end(s); ++i) p.set_of_row[static_cast<std::size_t>(i)] = s;
    if (sets.size(s) == 0 || set_is_complete(nb, sets, s)) continue;
    p.features[static_cast<std::size_t>(s)] = 1;
    p.pairwise[static_cast<std::size_t>(s)] = sets.size(s) <= pairwise_rows ? 1 : 0;
    p.first_psi_row[static_cast<std::size_t>(s)] = p.psi_rows;
    p.psi_rows += sets.size(s);
    // The estimate depends on differences only, so the centre is a constant (values).
    Eigen::Vector3d sum = Eigen::Vector3d::Zero();
    for (Index i = sets.begin(s); i < sets.end(s); ++i)
      for (int a = 0; a < 3; ++a) sum(a) += coords(i, a).v;
    p.centre[static_cast<std::size_t>(s)] = sum / static_cast<double>(sets.size(s));
  }
  return p;
}

// The Psi row of row i (of a feature set).
Index psi_row(const DualSetPlan& p, const RaggedIndex& sets, Index i) {
  const Index s = p.set_of_row[static_cast<std::size_t>(i)];
  return p.first_psi_row[static_cast<std::size_t>(s)] + (i - sets.begin(s));
}

// Dual features of every row of the feature sets (psi_rows x F).
Mat<Dual> dual_features(const Geometry& g, const DualSetPlan& p, const RaggedIndex& sets, ConstMatRef<Dual> coords) {
  Mat<Dual> Psi(p.psi_rows, g.F);
  const Index N = sets.total_rows();
#pragma omp parallel for schedule(static)
  for (Index i = 0; i < N; ++i) {
    const Index s = p.set_of_row[static_cast<std::size_t>(i)];
    if (!p.features[static_cast<std::size_t>(s)]) continue;
    const Eigen::Vector3d& c = p.centre[static_cast<std::size_t>(s)];
    const Dual x[3] = {coords(i, 0) - c(0), coords(i, 1) - c(1), coords(i, 2) - c(2)};
    Dual* psi = &Psi(psi_row(p, sets, i), 0);
    if (g.constant) psi[0] = Dual(1.0);
    for (Index n = g.n0; n < g.K; ++n)
      for (Index m = 0; m < g.M; ++m) {
        const Dual turns = g.kappa(n) * (g.ux(m) * x[0] + g.uy(m) * x[1] + g.uz(m) * x[2]);
        double sn, cs;
        sincos_turns(turns.v, sn, cs);
        const double sl = g.sl(m), dtheta = kTwoPi * turns.d;
        psi[g.offset(n) + m] = {sl * cs, -sl * sn * dtheta};
        psi[g.offset(n) + g.M + m] = {sl * sn, sl * cs * dtheta};
      }
  }
  return Psi;
}

// Per feature set: Psi_s^T X_s (F x cols), each entry summed over the set's rows in order; tasks
// of a set's column blocks, so that rows are read whole.
std::vector<Mat<Dual>> dual_feature_sums(const Geometry& g, const DualSetPlan& p, const RaggedIndex& sets,
                                         const Mat<Dual>& Psi, ConstMatRef<Dual> X) {
  constexpr Index kColumns = 16;
  std::vector<Mat<Dual>> sums(static_cast<std::size_t>(sets.num_sets()));
  std::vector<std::pair<Index, Index>> tasks;  // (set, first column)
  for (Index s = 0; s < sets.num_sets(); ++s)
    if (p.features[static_cast<std::size_t>(s)] && !p.pairwise[static_cast<std::size_t>(s)]) {
      sums[static_cast<std::size_t>(s)] = Mat<Dual>::Zero(g.F, X.cols());
      for (Index f = 0; f < g.F; f += kColumns) tasks.emplace_back(s, f);
    }
  const auto T = static_cast<Index>(tasks.size());
  const Index C = X.cols();
#pragma omp parallel for schedule(dynamic, 1)
  for (Index t = 0; t < T; ++t) {
    const auto [s, f0] = tasks[static_cast<std::size_t>(t)];
    const Index f1 = std::min(g.F, f0 + kColumns);
    Mat<Dual>& out = sums[static_cast<std::size_t>(s)];
    const Index first = p.first_psi_row[static_cast<std::size_t>(s)];
    for (Index i = sets.begin(s); i < sets.end(s); ++i) {
      const Dual* psi = &Psi(first + i - sets.begin(s), 0);
      const Dual* x = X.data() + i * X.outerStride();
      for (Index f = f0; f < f1; ++f) {
        Dual* o = &out(f, 0);
        for (Index c = 0; c < C; ++c) o[c] += psi[f] * x[c];
      }
    }
  }
  return sums;
}

// acc (H dv) = sum_n a_hn sum_{f in n} psi_f Y_f,h: the features' estimate for one row.
void dual_estimate_row(const Geometry& g, const FarFieldConfig& cfg, ConstMatRef<Dual> coeffs, const Dual* psi,
                       const Mat<Dual>& Y, std::vector<Dual>& node_acc, Dual* acc) {
  const Index Hdv = cfg.heads * cfg.value_dim;
  node_acc.resize(static_cast<std::size_t>(Hdv));
  for (Index n = 0; n < g.K; ++n) {
    std::fill(node_acc.begin(), node_acc.end(), Dual(0.0));
    const auto [f0, f1] = node_columns(g, n);
    for (Index f = f0; f < f1; ++f) {
      const Dual* y = &Y(f, 0);
      for (Index x = 0; x < Hdv; ++x) node_acc[static_cast<std::size_t>(x)] += psi[f] * y[x];
    }
    for (Index x = 0; x < Hdv; ++x) acc[x] += coeffs(x / cfg.value_dim, n) * node_acc[static_cast<std::size_t>(x)];
  }
}

// The terms g_n(ij) (K) of one pair and, with want_grad, dg_n/dr_i (K x 3): the exact terms when
// `exact`, plus est_sign times the features' estimate sum_{f in n} psi_if psi_jf when psi_i is
// given (-1: a near pair of a set with feature sums, whose estimate the sums hold; +1: a far pair
// of a pairwise set; d/dr_i of the estimate is sum_f k_f psi_i,partner(f) psi_jf).
void dual_terms(const FarFieldConfig& cfg, const Geometry& g, const DualColumns& cols, bool exact,
                const Dual* psi_i, const Dual* psi_j, double est_sign, DualPairTerms& p) {
  if (exact) {
    exact_terms(cfg, p);
  } else {
    p.g.assign(static_cast<std::size_t>(g.K), Dual(0.0));
    p.grad.assign(static_cast<std::size_t>(g.K), {Dual(0.0), Dual(0.0), Dual(0.0)});
  }
  if (!psi_i) return;
  for (Index n = 0; n < g.K; ++n) {
    const auto nn = static_cast<std::size_t>(n);
    const auto [f0, f1] = node_columns(g, n);
    Dual est = 0.0, grad[3] = {0.0, 0.0, 0.0};
    for (Index f = f0; f < f1; ++f) {
      est += psi_i[f] * psi_j[f];
      if (!p.want_grad || n < g.n0) continue;
      const Dual t = psi_i[cols.partner[static_cast<std::size_t>(f)]] * psi_j[f];
      for (int a = 0; a < 3; ++a) grad[a] += cols.slope(f, a) * t;
    }
    p.g[nn] += est_sign * est;
    if (p.want_grad)
      for (int a = 0; a < 3; ++a) p.grad[nn][static_cast<std::size_t>(a)] += est_sign * grad[a];
  }
}

// The pairs of row i in the dual fast path, with whether each is near (in the list, or the self
// pair): its list, plus itself for a feature set when the list omits self pairs (its estimate is
// in the feature sums); a pairwise set's every row; a complete set's list without the self pair
// (w(0) = 0).
struct DualSource {
  Index j;
  bool near;
};
void dual_sources(const NeighbourList& nb, const DualSetPlan& p, const RaggedIndex& sets, Index i,
                  std::vector<Index>& scratch, std::vector<DualSource>& src) {
  src.clear();
  scratch.clear();
  const Index s = p.set_of_row[static_cast<std::size_t>(i)];
  const bool features = p.features[static_cast<std::size_t>(s)] != 0;
  near_sources(nb, i, features && !nb.include_self, scratch);
  if (!p.pairwise[static_cast<std::size_t>(s)]) {
    for (const Index j : scratch)
      if (features || j != i) src.push_back({j, true});
    return;
  }
  std::size_t at = 0;  // scratch is sorted: walk it beside the set's rows
  for (Index j = sets.begin(s); j < sets.end(s); ++j) {
    const bool near = at < scratch.size() && scratch[at] == j;
    if (near) ++at;
    src.push_back({j, near});
  }
}

// What forward and backward both build: the layout, the plan, the features of every row of the
// feature sets and the sums S = Psi^T V of the large ones.
struct DualSetup {
  Geometry g;
  DualColumns cols;
  DualSetPlan plan;
  Mat<Dual> Psi;
  std::vector<Mat<Dual>> S;
  DualSetup(const FarFieldConfig& cfg, const SphericalDesign& design, const RaggedIndex& sets,
            const NeighbourList& nb, ConstMatRef<Dual> coords, ConstMatRef<Dual> V)
      : g(cfg.nodes, design),
        cols(dual_columns(g)),
        plan(dual_set_plan(sets, nb, coords, gram_limit(g.F, cfg.heads * cfg.value_dim))),
        Psi(dual_features(g, plan, sets, coords)),
        S(dual_feature_sums(g, plan, sets, Psi, V)) {}
};

// The terms of the pair (i, j) of dual_sources by its set's mode (psi_i null: a complete set).
void dual_pair_terms(const FarFieldConfig& cfg, const Geometry& g, const DualColumns& cols, const DualSetPlan& plan,
                     const Mat<Dual>& Psi, const RaggedIndex& sets, Index i, const DualSource& src, const Dual* psi_i,
                     DualPairTerms& p) {
  if (!psi_i) {
    dual_terms(cfg, g, cols, true, nullptr, nullptr, 0.0, p);
    return;
  }
  const Dual* psi_j = &Psi(psi_row(plan, sets, src.j), 0);
  if (!plan.pairwise[static_cast<std::size_t>(plan.set_of_row[static_cast<std::size_t>(i)])])
    dual_terms(cfg, g, cols, true, psi_i, psi_j, -1.0, p);  // near: exact minus the sums' estimate
  else if (src.near)
    dual_terms(cfg, g, cols, true, nullptr, nullptr, 0.0, p);
  else
    dual_terms(cfg, g, cols, false, psi_i, psi_j, 1.0, p);
}

}  // namespace

void far_field_dual_forward(const FarFieldConfig& cfg, const SphericalDesign& design, const RaggedIndex& sets,
                            const NeighbourList& neighbours, ConstMatRef<Dual> coords, ConstMatRef<Dual> V,
                            ConstMatRef<Dual> coeffs, MatRef<Dual> out) {
  check_dual_forward(cfg, design, sets, neighbours, coords, V, coeffs, out);
  out.setZero();
  const DualSetup setup(cfg, design, sets, neighbours, coords, V);
  const auto& [g, cols, plan, Psi, S] = setup;
  const Index N = sets.total_rows(), H = cfg.heads, dv = cfg.value_dim, K = cfg.nodes.count;
#pragma omp parallel
  {
    DualPairTerms p;
    p.want_grad = false;
    std::vector<Index> scratch;
    std::vector<DualSource> src;
    std::vector<Dual> node_acc;
#pragma omp for schedule(dynamic, 64)
    for (Index i = 0; i < N; ++i) {
      const auto s = static_cast<std::size_t>(plan.set_of_row[static_cast<std::size_t>(i)]);
      Dual* acc = &out(i, 0);
      const Dual* psi_i = plan.features[s] ? &Psi(psi_row(plan, sets, i), 0) : nullptr;
      if (plan.features[s] && !plan.pairwise[s]) dual_estimate_row(g, cfg, coeffs, psi_i, S[s], node_acc, acc);
      dual_sources(neighbours, plan, sets, i, scratch, src);
      for (const DualSource& source : src) {
        const Index j = source.j;
        for (int a = 0; a < 3; ++a) p.d[a] = coords(i, a) - coords(j, a);
        dual_pair_terms(cfg, g, cols, plan, Psi, sets, i, source, psi_i, p);
        for (Index h = 0; h < H; ++h) {
          Dual c = 0.0;
          for (Index n = 0; n < K; ++n) c += coeffs(h, n) * p.g[static_cast<std::size_t>(n)];
          for (Index x = h * dv; x < (h + 1) * dv; ++x) acc[x] += c * V(j, x);
        }
      }
    }
  }
}

void far_field_dual_backward(const FarFieldConfig& cfg, const SphericalDesign& design, const RaggedIndex& sets,
                             const NeighbourList& neighbours, ConstMatRef<Dual> coords, ConstMatRef<Dual> V,
                             ConstMatRef<Dual> coeffs, ConstMatRef<Dual> dout, MatRef<Dual> dV,
                             MatRef<Dual> dcoords, MatRef<Dual> dcoeffs) {
  check_dual_backward(cfg, design, sets, neighbours, true, coords, V, coeffs, dout, dV, dcoords, dcoeffs);
  const DualSetup setup(cfg, design, sets, neighbours, coords, V);
  const auto& [g, cols, plan, Psi, S] = setup;
  const std::vector<Mat<Dual>> G = dual_feature_sums(g, plan, sets, Psi, dout);
  const Index N = sets.total_rows(), H = cfg.heads, dv = cfg.value_dim, K = cfg.nodes.count;
  const bool want_coords = dcoords.size() > 0;
  // da_hn from the feature sums, set by set in order.
  for (Index s = 0; s < sets.num_sets(); ++s) {
    if (!plan.features[static_cast<std::size_t>(s)] || plan.pairwise[static_cast<std::size_t>(s)]) continue;
    const Mat<Dual>& Ss = S[static_cast<std::size_t>(s)];
    const Mat<Dual>& Gs = G[static_cast<std::size_t>(s)];
    for (Index n = 0; n < K; ++n) {
      const auto [f0, f1] = node_columns(g, n);
      for (Index h = 0; h < H; ++h) {
        Dual t = 0.0;
        for (Index f = f0; f < f1; ++f)
          for (Index x = h * dv; x < (h + 1) * dv; ++x) t += Gs(f, x) * Ss(f, x);
        dcoeffs(h, n) += t;
      }
    }
  }
  // Rows: the features' part and the near pairs gathered. The near pairs' da parts per fixed row
  // chunk, added in chunk order (the same for any thread count).
  constexpr Index kChunk = 256;
  const Index chunks = (N + kChunk - 1) / kChunk;
  std::vector<Mat<Dual>> da_part(static_cast<std::size_t>(chunks));
#pragma omp parallel
  {
    DualPairTerms p;
    std::vector<Index> scratch;
    std::vector<DualSource> src;
    std::vector<Dual> node_acc, gc(static_cast<std::size_t>(H)), gc_back(static_cast<std::size_t>(H));
    std::vector<Dual> R(static_cast<std::size_t>(g.F));
#pragma omp for schedule(dynamic, 1)
    for (Index chunk = 0; chunk < chunks; ++chunk) {
      Mat<Dual>& da = da_part[static_cast<std::size_t>(chunk)];
      da = Mat<Dual>::Zero(H, K);
      for (Index i = chunk * kChunk; i < std::min(N, (chunk + 1) * kChunk); ++i) {
        const Index s = plan.set_of_row[static_cast<std::size_t>(i)];
        const bool features = plan.features[static_cast<std::size_t>(s)] != 0;
        const Dual* psi_i = features ? &Psi(psi_row(plan, sets, i), 0) : nullptr;
        if (features && !plan.pairwise[static_cast<std::size_t>(s)]) {
          const Mat<Dual>& Ss = S[static_cast<std::size_t>(s)];
          const Mat<Dual>& Gs = G[static_cast<std::size_t>(s)];
          dual_estimate_row(g, cfg, coeffs, psi_i, Gs, node_acc, &dV(i, 0));
          if (want_coords) {
            Dual dr[3] = {0.0, 0.0, 0.0};
            for (Index f = (g.constant ? 1 : 0); f < g.F; ++f) {
              const Index n = cols.node[static_cast<std::size_t>(f)];
              Dual r = 0.0;
              for (Index h = 0; h < H; ++h) {
                Dual t = 0.0;
                for (Index x = h * dv; x < (h + 1) * dv; ++x) t += dout(i, x) * Ss(f, x) + V(i, x) * Gs(f, x);
                r += coeffs(h, n) * t;
              }
              const Dual w = r * psi_i[cols.partner[static_cast<std::size_t>(f)]];
              for (int a = 0; a < 3; ++a) dr[a] += cols.slope(f, a) * w;
            }
            for (int a = 0; a < 3; ++a) dcoords(i, a) += dr[a];
          }
        }
        dual_sources(neighbours, plan, sets, i, scratch, src);
        Dual dr[3] = {0.0, 0.0, 0.0};
        for (const DualSource& source : src) {
          const Index j = source.j;
          for (int a = 0; a < 3; ++a) p.d[a] = coords(i, a) - coords(j, a);
          p.want_grad = want_coords && j != i;  // the self pair's d is identically 0
          dual_pair_terms(cfg, g, cols, plan, Psi, sets, i, source, psi_i, p);
          for (Index h = 0; h < H; ++h) {
            Dual c = 0.0, gij = 0.0, gji = 0.0;
            for (Index n = 0; n < K; ++n) c += coeffs(h, n) * p.g[static_cast<std::size_t>(n)];
            for (Index x = h * dv; x < (h + 1) * dv; ++x) {
              dV(i, x) += c * dout(j, x);  // the pair (j, i): c_h(ji) = c_h(ij)
              gij += dout(i, x) * V(j, x);
              gji += dout(j, x) * V(i, x);
            }
            for (Index n = 0; n < K; ++n) da(h, n) += gij * p.g[static_cast<std::size_t>(n)];
            gc[static_cast<std::size_t>(h)] = gij;
            gc_back[static_cast<std::size_t>(h)] = gji;
          }
          if (!p.want_grad) continue;
          for (Index n = 0; n < K; ++n) {
            Dual w = 0.0;
            for (Index h = 0; h < H; ++h)
              w += (gc[static_cast<std::size_t>(h)] + gc_back[static_cast<std::size_t>(h)]) * coeffs(h, n);
            for (int a = 0; a < 3; ++a) dr[a] += w * p.grad[static_cast<std::size_t>(n)][static_cast<std::size_t>(a)];
          }
        }
        if (want_coords)
          for (int a = 0; a < 3; ++a) dcoords(i, a) += dr[a];
      }
    }
  }
  for (const auto& part : da_part) dcoeffs += part;
}

#define FLT_FAR_FIELD_INSTANTIATE(T)                                                                      \
  template void far_field_forward<T>(const FarFieldConfig&, const SphericalDesign&, const RaggedIndex&,   \
                                     const NeighbourList&, ConstMatRef<double>, ConstMatRef<T>,           \
                                     ConstMatRef<T>, MatRef<T>, FarFieldCache<T>&);                       \
  template void far_field_backward<T>(const FarFieldConfig&, const SphericalDesign&, const RaggedIndex&,  \
                                      const NeighbourList&, ConstMatRef<double>, ConstMatRef<T>,          \
                                      ConstMatRef<T>, const FarFieldCache<T>&, ConstMatRef<T>, MatRef<T>, \
                                      MatRef<T>, MatRef<T>);                                              \
  template void far_field_exact_forward<T>(const FarFieldConfig&, const RaggedIndex&, ConstMatRef<Accum<T>>, \
                                           ConstMatRef<T>, ConstMatRef<T>, MatRef<T>);                    \
  template void far_field_exact_backward<T>(const FarFieldConfig&, const RaggedIndex&, ConstMatRef<Accum<T>>, \
                                            ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>, MatRef<T>,    \
                                            MatRef<T>, MatRef<T>);

FLT_FAR_FIELD_INSTANTIATE(float)
FLT_FAR_FIELD_INSTANTIATE(double)
#undef FLT_FAR_FIELD_INSTANTIATE

}  // namespace flt::attn
