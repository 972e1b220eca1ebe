// Forward-mode dual numbers x = v + d eps (eps^2 = 0) for exact directional derivatives.
//
// Why: training on forces F = -dE/dr needs the gradient of a force loss with respect to the
// parameters, i.e. mixed second derivatives d^2 E / (dtheta dr) contracted with a direction u in
// coordinate space (a Hessian-vector product). Running the model's forward AND backward pass with
// T = Dual, the coordinates seeded with tangent u and the parameters with tangent 0, gives in the
// tangent of every parameter gradient exactly (to rounding)
//     d/deps [dE/dtheta](r + eps u) = sum_k u_k d^2 E / (dtheta dr_k)
// ("forward over reverse", as JAX's jvp(grad(f))). No finite differences: every operation below
// propagates the derivative by its calculus rule.
//
// Every layer that accepts T = Dual also accumulates in Dual where it accumulates float and double
// in double (Accum<T>), and keeps geometry (distances, unit vectors, envelopes) in Dual where it
// keeps them in double (Accum<T> again), so tangents flow through every path. A Dual never converts
// silently to double: value() is explicit.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <type_traits>

namespace flt {

struct Dual {
  double v = 0.0;  // value
  double d = 0.0;  // tangent (directional derivative)

  constexpr Dual() = default;
  constexpr Dual(double value) : v(value) {}  // NOLINT: constants (T(0), static_cast<T>(x)) promote
  constexpr Dual(double value, double tangent) : v(value), d(tangent) {}

  constexpr Dual& operator+=(const Dual& o) { v += o.v; d += o.d; return *this; }
  constexpr Dual& operator-=(const Dual& o) { v -= o.v; d -= o.d; return *this; }
  // The tangent as one fused multiply-add, explicitly (not left to the compiler's contraction).
  Dual& operator*=(const Dual& o) {
    d = std::fma(d, o.v, v * o.d);
    v *= o.v;
    return *this;
  }
  constexpr Dual& operator/=(const Dual& o) {
    const double inv = 1.0 / o.v;
    v *= inv;
    d = (d - v * o.d) * inv;
    return *this;
  }
};

static_assert(std::is_trivially_copyable_v<Dual>);

constexpr Dual operator+(Dual a, const Dual& b) { return a += b; }
constexpr Dual operator-(Dual a, const Dual& b) { return a -= b; }
inline Dual operator*(Dual a, const Dual& b) { return a *= b; }
constexpr Dual operator/(Dual a, const Dual& b) { return a /= b; }
constexpr Dual operator+(const Dual& a) { return a; }
constexpr Dual operator-(const Dual& a) { return {-a.v, -a.d}; }
// Mixed with double (no promotion of the double to a Dual with a zero tangent needed).
constexpr Dual operator+(Dual a, double b) { a.v += b; return a; }
constexpr Dual operator+(double b, Dual a) { a.v += b; return a; }
constexpr Dual operator-(Dual a, double b) { a.v -= b; return a; }
constexpr Dual operator-(double b, const Dual& a) { return {b - a.v, -a.d}; }
constexpr Dual operator*(const Dual& a, double b) { return {a.v * b, a.d * b}; }
constexpr Dual operator*(double b, const Dual& a) { return {a.v * b, a.d * b}; }
constexpr Dual operator/(const Dual& a, double b) { return {a.v / b, a.d / b}; }
constexpr Dual operator/(double b, const Dual& a) {
  const double r = b / a.v;
  return {r, -r * a.d / a.v};
}

// Comparisons look at values only (branches of max, clamps and cutoffs follow the value).
constexpr bool operator==(const Dual& a, const Dual& b) { return a.v == b.v; }
constexpr bool operator!=(const Dual& a, const Dual& b) { return a.v != b.v; }
constexpr bool operator<(const Dual& a, const Dual& b) { return a.v < b.v; }
constexpr bool operator>(const Dual& a, const Dual& b) { return a.v > b.v; }
constexpr bool operator<=(const Dual& a, const Dual& b) { return a.v <= b.v; }
constexpr bool operator>=(const Dual& a, const Dual& b) { return a.v >= b.v; }

// Elementary functions, f(v + d eps) = f(v) + f'(v) d eps. Found by argument-dependent lookup:
// generic code calls them unqualified after `using std::exp;` etc.
inline Dual exp(const Dual& a) {
  const double e = std::exp(a.v);
  return {e, e * a.d};
}
inline Dual log(const Dual& a) { return {std::log(a.v), a.d / a.v}; }
inline Dual sqrt(const Dual& a) {
  const double s = std::sqrt(a.v);
  return {s, s > 0 ? 0.5 * a.d / s : 0.0};
}
inline Dual sin(const Dual& a) { return {std::sin(a.v), std::cos(a.v) * a.d}; }
inline Dual cos(const Dual& a) { return {std::cos(a.v), -std::sin(a.v) * a.d}; }
inline Dual tanh(const Dual& a) {
  const double t = std::tanh(a.v);
  return {t, (1.0 - t * t) * a.d};
}
inline Dual erf(const Dual& a) {
  constexpr double two_over_sqrt_pi = 1.12837916709551257390;  // 2 / sqrt(pi)
  return {std::erf(a.v), two_over_sqrt_pi * std::exp(-a.v * a.v) * a.d};
}
inline Dual abs(const Dual& a) { return a.v < 0 ? -a : a; }
inline Dual fabs(const Dual& a) { return abs(a); }
inline Dual pow(const Dual& a, double p) {
  const double y = std::pow(a.v, p);
  return {y, p * std::pow(a.v, p - 1.0) * a.d};
}
inline Dual floor(const Dual& a) { return {std::floor(a.v), 0.0}; }
inline bool isfinite(const Dual& a) { return std::isfinite(a.v) && std::isfinite(a.d); }
inline bool isnan(const Dual& a) { return std::isnan(a.v) || std::isnan(a.d); }

template <class T>
inline constexpr bool is_dual_v = std::is_same_v<T, Dual>;

// How the calling thread's derivative passes compute. The defaults compute everything, to double
// rounding in Dual passes (the gradient checks). The training step on forces asks for less:
//   float_products: a Dual pass runs the matrix products of its linear layers and filter tables
//     in float (the float kernels of core/gemm.hpp) on the value and tangent parts -- the
//     precision a float model's own gradient has; sums, geometry and elementwise rules stay in
//     double.
//   parameter_gradient_values: false: the value parts of the parameter gradients are not
//     wanted. A float or double backward then accumulates no parameter gradient at all (it gives
//     input and coordinate gradients only); a Dual backward computes the tangents as always and
//     leaves the value parts (dE/dtheta) unspecified: the costly ones (linear layers) are skipped.
//   parameter_tangents: false: the caller guarantees that no parameter of a Dual pass carries a
//     tangent (a Hessian-vector product along coordinates), so layers need not look for one.
struct PassOptions {
  bool float_products = false;
  bool parameter_gradient_values = true;
  bool parameter_tangents = true;
};
// The calling thread's options (read by the layers before they start threads of their own).
inline PassOptions& pass_options() {
  thread_local PassOptions options;
  return options;
}
// Sets the calling thread's options for a scope and restores the previous ones.
class ScopedPassOptions {
 public:
  explicit ScopedPassOptions(PassOptions options) : saved_(pass_options()) {
    pass_options() = options;
  }
  ~ScopedPassOptions() { pass_options() = saved_; }
  ScopedPassOptions(const ScopedPassOptions&) = delete;
  ScopedPassOptions& operator=(const ScopedPassOptions&) = delete;

 private:
  PassOptions saved_;
};

// The scalar kernels accumulate sums and hold geometry in: double for float and double models,
// Dual for Dual models (so tangents are never dropped).
template <class T>
using Accum = std::conditional_t<is_dual_v<T>, Dual, double>;

// The real type of a kernel's constants: T itself for float and double, double for Dual (a
// constant carries no tangent, and Dual x double costs two multiplications instead of three).
template <class T>
using RealOf = std::conditional_t<is_dual_v<T>, double, T>;

// The value part of a scalar of any kernel type, as double (logging, statistics, tests).
inline double value_of(double x) { return x; }
inline double value_of(float x) { return static_cast<double>(x); }
inline double value_of(const Dual& x) { return x.v; }
inline double tangent_of(double) { return 0.0; }
inline double tangent_of(float) { return 0.0; }
inline double tangent_of(const Dual& x) { return x.d; }

}  // namespace flt

namespace Eigen {
template <>
struct NumTraits<flt::Dual> : GenericNumTraits<flt::Dual> {
  using Real = flt::Dual;
  using NonInteger = flt::Dual;
  using Nested = flt::Dual;
  using Literal = flt::Dual;
  enum {
    IsComplex = 0,
    IsInteger = 0,
    IsSigned = 1,
    // Trivially copyable, and like float and double not zeroed by Eigen's constructors: code
    // generic over T never reads a coefficient it has not written.
    RequireInitialization = 0,
    ReadCost = 2,
    AddCost = 2,
    MulCost = 3
  };
  static inline flt::Dual epsilon() { return NumTraits<double>::epsilon(); }
  static inline flt::Dual dummy_precision() { return NumTraits<double>::dummy_precision(); }
  static inline flt::Dual highest() { return NumTraits<double>::highest(); }
  static inline flt::Dual lowest() { return NumTraits<double>::lowest(); }
  static inline int digits10() { return NumTraits<double>::digits10(); }
};
}  // namespace Eigen

namespace flt {

// Dual matrices as a value part and a tangent part, so that products run as real GEMMs:
//   (A + eps A')(B + eps B') = A B + eps (A' B + A B').
using RealMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class Derived>
RealMat dual_values(const Eigen::MatrixBase<Derived>& m) {
  return m.unaryExpr([](const Dual& x) { return x.v; });
}
template <class Derived>
RealMat dual_tangents(const Eigen::MatrixBase<Derived>& m) {
  return m.unaryExpr([](const Dual& x) { return x.d; });
}
// Writes value + eps tangent into out (same shape), or adds it when accumulate.
template <class Out>
void dual_store(const RealMat& value, const RealMat& tangent, Out&& out, bool accumulate) {
  for (Eigen::Index i = 0; i < out.rows(); ++i)
    for (Eigen::Index j = 0; j < out.cols(); ++j) {
      const Dual x{value(i, j), tangent(i, j)};
      if (accumulate) out(i, j) += x;
      else out(i, j) = x;
    }
}

}  // namespace flt
