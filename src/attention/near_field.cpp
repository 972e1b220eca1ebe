// N rows, D = H d channels, K radial nodes, P pairs; the equations are in near_field.hpp.
#include "attention/near_field.hpp"

#include "core/dual.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

namespace flt::attn {

void NearFieldConfig::validate() const {
  if (heads < 1 || head_dim < 1)
    throw ConfigError("near field: heads and head_dim must be >= 1, got " + std::to_string(heads) +
                      " and " + std::to_string(head_dim));
  nodes.validate();
  if (!(cutoff > 0) || !std::isfinite(cutoff))
    throw ConfigError("near field: the cutoff must be positive and finite");
  if (table_intervals < 8 || table_intervals > 65536)
    throw ConfigError("near field: table_intervals must be in [8, 65536], got " +
                      std::to_string(table_intervals));
  if (single_pass_max_pairs < 0)
    throw ConfigError("near field: single_pass_max_pairs must be >= 0");
  if (filter_activation != Activation::silu && filter_activation != Activation::identity)
    throw ConfigError("near field: the filter activation must be silu or identity");
}

namespace {

// Row pointers into row-major matrices and references (const references have no lvalue operator()).
template <class M>
auto row_ptr(M& m, Index i) {
  return m.data() + i * m.outerStride();
}

// A Dual matrix as the pair loops hold it: value and tangent parts apart (structure of arrays),
// so that the loops over a row's channels vectorise. Elements read back as Dual and are written
// through DualRef: the loops run the same Dual arithmetic as on a Mat<Dual> (only the compiler's
// contraction into FMAs may differ).
struct DualRef {
  double& v;
  double& d;
  operator Dual() const { return {v, d}; }  // NOLINT: reads as the Dual it holds
  const DualRef& operator=(const Dual& x) const {
    v = x.v;
    d = x.d;
    return *this;
  }
  const DualRef& operator+=(const Dual& x) const {
    v += x.v;
    d += x.d;
    return *this;
  }
};
template <class P>  // double* (writable rows) or const double*
struct SplitRow {
  P v, d;
  auto operator[](Index c) const {
    if constexpr (std::is_const_v<std::remove_pointer_t<P>>) return Dual{v[c], d[c]};
    else return DualRef{v[c], d[c]};
  }
  SplitRow operator+(Index offset) const { return {v + offset, d + offset}; }
};
struct SplitMat {
  Mat<double> value, tangent;
  SplitMat() = default;
  SplitMat(Index rows, Index cols) : value(rows, cols), tangent(rows, cols) {}
  void resize(Index rows, Index cols) {
    value.resize(rows, cols);
    tangent.resize(rows, cols);
  }
  void load(ConstMatRef<Dual> m) {
    value = dual_values(m);
    tangent = dual_tangents(m);
  }
  void store(MatRef<Dual> m) const { dual_store(value, tangent, m, false); }
};
SplitRow<double*> row_ptr(SplitMat& m, Index i) { return {m.value.row(i).data(), m.tangent.row(i).data()}; }
SplitRow<const double*> row_ptr(const SplitMat& m, Index i) {
  return {m.value.row(i).data(), m.tangent.row(i).data()};
}

// Matrices the pair loops own (filters, their gradients, per-pair scratch): split for Dual.
template <class T>
using PairMat = std::conditional_t<is_dual_v<T>, SplitMat, Mat<T>>;

// The inputs and outputs of the pair loops: for Dual, split copies (loaded from the arguments;
// outputs stored back after the loops), else the arguments themselves.
template <class T, class Ref>
class PairView {
 public:
  // overwritten: an output the loops write before reading (not loaded).
  explicit PairView(Ref m, bool overwritten = false) : ref_(m) {
    if constexpr (is_dual_v<T>) {
      if (overwritten) split_.resize(m.rows(), m.cols());
      else split_.load(m);
    }
  }
  // Copies the split accumulations back into the argument (outputs only).
  void store() {
    if constexpr (is_dual_v<T>) split_.store(ref_);
  }
  auto row(Index i) {
    if constexpr (is_dual_v<T>) return row_ptr(split_, i);
    else return row_ptr(ref_, i);
  }
  auto crow(Index i) const {
    if constexpr (is_dual_v<T>) return row_ptr(split_, i);
    else return row_ptr(ref_, i);
  }

 private:
  Ref ref_;
  [[no_unique_address]] std::conditional_t<is_dual_v<T>, SplitMat, char> split_{};
};

// Pairs per piece of work, fewer for wider scalars (a Dual is four floats wide). Backward: the
// filters of a piece and their gradients (pairs x 4D values each) stay in L2 and each sweep over
// the table's gradient rows serves 512 float pairs. Forward (filters only): 128 float pairs, so
// that the written filters stay in L2 next to the table's rows.
template <class T>
constexpr Index kPairsPerPiece = 512 * static_cast<Index>(sizeof(float)) / static_cast<Index>(sizeof(T));
template <class T>
constexpr Index kForwardPairsPerPiece = 128 * static_cast<Index>(sizeof(float)) / static_cast<Index>(sizeof(T));

// Row groups of the forward and of large closed runs in the backward: each group is processed by
// one thread, in order. The group size depends on the row count only (never on the threads).
Index group_rows(Index n) { return std::max<Index>(64, (n + 31) / 32); }

// sum_{c in [c0, c1)} term(c). Float and double ask for SIMD lanes (omp simd: a fixed order per
// build, independent of the thread count) instead of a serial chain of dependent adds, which the
// compiler grants for some terms and not others (the float kernels' hot sums therefore take
// explicit registers: head_product_sums, interpolant_slope_dot); Dual sums in channel order. A
// head of 16 channels gets a fixed trip count: with a run-time count of 16 the compiler's vector
// loop is skipped for its scalar remainder loop.
template <class S, class Term>
S channel_sum(Index c0, Index c1, Term&& term) {
  S s = 0;
  if constexpr (is_dual_v<S>) {
    for (Index c = c0; c < c1; ++c) s += term(c);
  } else if (c1 - c0 == 16) {
#pragma omp simd reduction(+ : s)
    for (Index c = 0; c < 16; ++c) s += term(c0 + c);
  } else {
#pragma omp simd reduction(+ : s)
    for (Index c = c0; c < c1; ++c) s += term(c);
  }
  return s;
}

// sums[h] = sum_{c < d} term(h d + c) for the H heads of a row, through channel_sum: the double and
// Dual rows, and float rows without AVX2 or with heads of other widths than 16.
template <class S, class Term>
void head_sums(Index H, Index d, S* sums, Term&& term) {
  for (Index h = 0; h < H; ++h) sums[h] = channel_sum<S>(h * d, (h + 1) * d, term);
}

#if defined(__AVX2__)
// One float head of 16 channels: a_c b_c [c_c] in two registers of 8, added: 8 partial sums.
template <bool Three>
inline __m256 head16_products(const float* a, const float* b, const float* c) {
  __m256 low = _mm256_mul_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(b));
  __m256 high = _mm256_mul_ps(_mm256_loadu_ps(a + 8), _mm256_loadu_ps(b + 8));
  if constexpr (Three) {
    low = _mm256_mul_ps(low, _mm256_loadu_ps(c));
    high = _mm256_mul_ps(high, _mm256_loadu_ps(c + 8));
  }
  return _mm256_add_ps(low, high);
}

// The sum of a register's 8 lanes: halves added, then pairs, then the last two.
inline float lane_sum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}
#endif

// sums[h] = sum_{c in head h} a_c b_c (c_c) for the H heads of a row: the logits (q o k o F^k)
// and the value products (G o v o F^s). Float heads of 16 channels (the models' width) run in
// AVX2 registers from the rows themselves: each head's two halves added, then eight heads at a
// time a transposing tree of horizontal adds leaves their eight sums in one register, and the
// heads left over are summed lane by lane. A per-channel loop through a lambda (channel_sum) ends
// in a serial chain of 16 dependent scalar adds per head wherever the compiler does not vectorise
// its reduction, which GCC 12 does not here. A fixed order, the same for every thread count.
// c may be null (two factors). Others through head_sums.
template <class S, class Row>
void head_product_sums(Index H, Index d, S* sums, const Row& a, const Row& b, std::type_identity_t<const Row*> c) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<S, float>) {
    if (d == 16) {
      const float* cp = c ? *c : nullptr;
      const auto head = [&](Index h) {
        const Index o = h * 16;
        return cp ? head16_products<true>(a + o, b + o, cp + o) : head16_products<false>(a + o, b + o, nullptr);
      };
      Index h0 = 0;
      for (; h0 + 8 <= H; h0 += 8) {
        __m256 v[8];
        for (int h = 0; h < 8; ++h) v[h] = head(h0 + h);
        // hadd(a, b) per 128-bit lane: [a0+a1, a2+a3, b0+b1, b2+b3]
        const __m256 a01 = _mm256_hadd_ps(v[0], v[1]), a23 = _mm256_hadd_ps(v[2], v[3]);
        const __m256 a45 = _mm256_hadd_ps(v[4], v[5]), a67 = _mm256_hadd_ps(v[6], v[7]);
        const __m256 b0 = _mm256_hadd_ps(a01, a23), b4 = _mm256_hadd_ps(a45, a67);
        // b0 = [s0 s1 s2 s3 | s0' s1' s2' s3'] (low and high lanes of heads 0-3), b4 likewise
        const __m256 low = _mm256_permute2f128_ps(b0, b4, 0x20), high = _mm256_permute2f128_ps(b0, b4, 0x31);
        _mm256_storeu_ps(sums + h0, _mm256_add_ps(low, high));
      }
      for (; h0 < H; ++h0) sums[h0] = lane_sum(head(h0));
      return;
    }
  }
#endif
  if (c) {
    const Row& cc = *c;
    head_sums<S>(H, d, sums, [&](Index k) { return a[k] * b[k] * cc[k]; });
  } else {
    head_sums<S>(H, d, sums, [&](Index k) { return a[k] * b[k]; });
  }
}

// sum_c x_c (d0 f0_c + d1 s0_c + d2 f1_c + d3 s1_c): a pair's filter gradient x against the
// derivative of its interpolant (d0..d3 the Hermite weights' derivatives, f0, s0, f1, s1 the
// table's rows around it). Float rows of a multiple of 8 channels (4D: always at the models'
// widths) in 8 AVX2 lanes, added at the end by lane_sum; others through channel_sum.
template <class T, class XRow>
T interpolant_slope_dot(Index W, const XRow& x, T d0, T d1, T d2, T d3, const T* f0, const T* s0, const T* f1,
                        const T* s1) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    if (W % 8 == 0) {
      const __m256 w0 = _mm256_set1_ps(d0), w1 = _mm256_set1_ps(d1), w2 = _mm256_set1_ps(d2),
                   w3 = _mm256_set1_ps(d3);
      __m256 acc = _mm256_setzero_ps();
      for (Index c = 0; c < W; c += 8) {
        __m256 slope = _mm256_mul_ps(w0, _mm256_loadu_ps(f0 + c));
        slope = _mm256_fmadd_ps(w1, _mm256_loadu_ps(s0 + c), slope);
        slope = _mm256_fmadd_ps(w2, _mm256_loadu_ps(f1 + c), slope);
        slope = _mm256_fmadd_ps(w3, _mm256_loadu_ps(s1 + c), slope);
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), slope, acc);
      }
      return lane_sum(acc);
    }
  }
#endif
  return channel_sum<T>(0, W, [&](Index c) { return x[c] * (d0 * f0[c] + d1 * s0[c] + d2 * f1[c] + d3 * s1[c]); });
}

// The activation of the filters and its first two derivatives.
struct FilterActivation {
  using RealArray = Eigen::Array<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Activation kind;
  template <class A>
  A value(A z) const {
    using std::exp;
    return kind == Activation::silu ? A(z / (1.0 + exp(-z))) : z;
  }
  template <class A>
  A first(A z) const {
    using std::exp;
    if (kind != Activation::silu) return A(1.0);
    const A s = 1.0 / (1.0 + exp(-z));
    return s * (1.0 + z * (1.0 - s));
  }
  // value and first, or first and second, from one exponential (the tables built from weights
  // with tangents); value and first with the arithmetic of value() and first().
  template <class A>
  void value_and_first(A z, A& f, A& f1) const {
    using std::exp;
    if (kind != Activation::silu) {
      f = z;
      f1 = A(1.0);
      return;
    }
    const A e = exp(-z), s = 1.0 / (1.0 + e);
    f = z / (1.0 + e);
    f1 = s * (1.0 + z * (1.0 - s));
  }
  // Over a whole table of pre-activations, vectorised: F = act(z) and F' = act'(z), and for silu
  // the sigmoid s(z) that F'' needs (kept for the backward, which then needs no exponential).
  void table_value_and_first(const Mat<double>& z, Mat<double>& f, Mat<double>& f1, Mat<double>& sigmoid) const {
    if (kind != Activation::silu) {
      f = z;
      f1.setOnes(z.rows(), z.cols());
      sigmoid.resize(0, 0);
      return;
    }
    const auto x = z.array();
    const RealArray e = (-x).exp(), s = (1.0 + e).inverse();
    f = (x / (1.0 + e)).matrix();
    f1 = (s * (1.0 + x * (1.0 - s))).matrix();
    sigmoid = s.matrix();
  }
  // F' and F'' from z and the sigmoid of table_value_and_first.
  void table_first_and_second(const Mat<double>& z, const Mat<double>& sigmoid, Mat<double>& f1,
                              Mat<double>& f2) const {
    if (kind != Activation::silu) {
      f1.setOnes(z.rows(), z.cols());
      f2.setZero(z.rows(), z.cols());
      return;
    }
    const auto x = z.array();
    const auto s = sigmoid.array();
    f1 = (s * (1.0 + x * (1.0 - s))).matrix();
    f2 = (s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))).matrix();
  }
  template <class A>
  void first_and_second(A z, A& f1, A& f2) const {
    using std::exp;
    if (kind != Activation::silu) {
      f1 = A(1.0);
      f2 = A(0.0);
      return;
    }
    const A s = 1.0 / (1.0 + exp(-z));
    f1 = s * (1.0 + z * (1.0 - s));
    f2 = s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s));
  }
};

// Cubic Hermite basis on [0, 1]: value weights (h00, h10, h01, h11) and their derivatives.
// A = double, or Dual when the distance carries a tangent.
template <class A = double>
struct Hermite {
  A w[4];   // F(t) = w0 F_g + w1 S_g + w2 F_g+1 + w3 S_g+1   (S = h dF/drho)
  A dw[4];  // dF/dt with the same layout (divide by h for d/drho)
  explicit Hermite(A t) {
    const A t2 = t * t, t3 = t2 * t;
    w[0] = 2 * t3 - 3 * t2 + 1;
    w[1] = t3 - 2 * t2 + t;
    w[2] = -2 * t3 + 3 * t2;
    w[3] = t3 - t2;
    dw[0] = 6 * t2 - 6 * t;
    dw[1] = 3 * t2 - 4 * t + 1;
    dw[2] = -6 * t2 + 6 * t;
    dw[3] = 3 * t2 - 2 * t;
  }
};

// The interval g and position t in it of a distance (pairs lie below the cutoff; a distance
// rounded onto it lands at the end of the last interval).
// The interval is chosen by the value; t carries the distance's tangent.
template <class A>
void locate(const NearFieldConfig& config, A rho, Index& g, A& t) {
  const A x = rho / config.table_step();
  const double fl = std::floor(value_of(x));
  g = static_cast<Index>(fl);
  t = x - fl;
  if (g >= config.table_intervals) {
    g = config.table_intervals - 1;
    t = 1.0;
  }
}

// The envelope e(rho) and its derivative, with their tangents when rho is a Dual (e' and e'').
template <class A>
void envelope_with_derivative(A rho, double cutoff, A& env, A& denv) {
  if constexpr (is_dual_v<A>) {
    env = {envelope(rho.v, cutoff), envelope_derivative(rho.v, cutoff) * rho.d};
    denv = {envelope_derivative(rho.v, cutoff), envelope_second_derivative(rho.v, cutoff) * rho.d};
  } else {
    env = envelope(rho, cutoff);
    denv = envelope_derivative(rho, cutoff);
  }
}

// The product real m of a double matrix and a matrix of A (double, or Dual through double
// GEMMs on its value and tangent parts: the Dual path's products stay vectorised).
template <class A, class L>
Mat<A> times(const L& real, const Mat<A>& m) {
  if constexpr (is_dual_v<A>) {
    Mat<A> out(real.rows(), m.cols());
    const RealMat tangents = dual_tangents(m);  // zero for the weights of a Hessian-vector product
    dual_store(RealMat(real * dual_values(m)),
               tangents.isZero(0.0) ? RealMat(RealMat::Zero(real.rows(), m.cols())) : RealMat(real * tangents),
               out, false);
    return out;
  } else {
    return real * m;
  }
}

// Filters at the table nodes, in double: value F = act(z), z = b W + bias, slope S = h act'(z) (b' W).
template <class T>
void build_table(const NearFieldConfig& config, const NearFieldWeights<T>& w, FilterTable<T>& table) {
  const Index G = config.table_intervals, K = config.nodes.count, D = config.width();
  const Index V = config.value_width(), W = D + V;
  using A = Accum<T>;
  const double h = config.table_step();
  const FilterActivation act{config.filter_activation};
  // The basis at the nodes depends on the configuration only: kept from the last build.
  bool same_configuration = true;
  if (table.basis.rows() != G + 1 || table.basis.cols() != K || table.basis_step != h ||
      table.basis_first != config.nodes.first || table.basis_spacing != config.nodes.spacing) {
    table.basis.resize(G + 1, K);
    table.dbasis.resize(G + 1, K);
    for (Index g = 0; g <= G; ++g)
      radial_basis(config.nodes, static_cast<double>(g) * h, table.basis.row(g).data(),
                   table.dbasis.row(g).data());
    table.basis_step = h;
    table.basis_first = config.nodes.first;
    table.basis_spacing = config.nodes.spacing;
    same_configuration = false;
  }
  // Weights without tangents (float and double models; a Dual model differentiated along
  // coordinates): the table is real, computed with vectorised exponentials.
  bool weight_tangents = false;
  Mat<double> weights(K + 1, W);  // [W; bias]
  for (Index n = 0; n < K; ++n) {
    for (Index c = 0; c < D; ++c) weights(n, c) = value_of(w.Wk(n, c));
    for (Index c = 0; c < V; ++c) weights(n, D + c) = value_of(w.Wv(n, c));
    for (Index c = 0; c < D; ++c) weight_tangents |= tangent_of(w.Wk(n, c)) != 0.0;
    for (Index c = 0; c < V; ++c) weight_tangents |= tangent_of(w.Wv(n, c)) != 0.0;
  }
  for (Index c = 0; c < D; ++c) weights(K, c) = value_of(w.bk[static_cast<std::size_t>(c)]);
  for (Index c = 0; c < V; ++c) weights(K, D + c) = value_of(w.bv[static_cast<std::size_t>(c)]);
  for (Index c = 0; c < W; ++c) {
    const double t = tangent_of(c < D ? w.bk[static_cast<std::size_t>(c)] : w.bv[static_cast<std::size_t>(c - D)]);
    weight_tangents |= t != 0.0;
  }
  const bool built = is_dual_v<T> ? table.real() : table.value.rows() == G + 1;
  if (!weight_tangents && same_configuration && built && table.built_activation == config.filter_activation &&
      table.built_from.rows() == K + 1 && table.built_from.cols() == W && table.built_from == weights)
    return;
  table.real_value.resize(0, 0);
  table.real_slope.resize(0, 0);
  table.real_z.resize(0, 0);
  table.real_zslope.resize(0, 0);
  table.sigmoid.resize(0, 0);
  table.built_from.resize(0, 0);
  if (!weight_tangents) {
    const auto Wreal = weights.topRows(K);
    const auto bias = weights.row(K);
    Mat<double> z = table.basis * Wreal;
    z.rowwise() += bias;
    const Mat<double> zslope = table.dbasis * Wreal;
    Mat<double> f, f1;
    act.table_value_and_first(z, f, f1, table.sigmoid);
    Mat<double> slope = (h * f1.array() * zslope.array()).matrix();
    if constexpr (is_dual_v<T>) {
      table.value.resize(0, 0);
      table.slope.resize(0, 0);
      table.z.resize(0, 0);
      table.zslope.resize(0, 0);
      table.real_value = std::move(f);
      table.real_slope = std::move(slope);
      table.real_z = std::move(z);
      table.real_zslope = zslope;
    } else {
      table.value = f.template cast<T>();
      table.slope = slope.template cast<T>();
      table.z = std::move(z);
      table.zslope = zslope;
    }
    table.built_from = std::move(weights);
    table.built_activation = config.filter_activation;
    return;
  }
  Mat<A> Wcat(K, W);
  for (Index n = 0; n < K; ++n) {
    for (Index c = 0; c < D; ++c) Wcat(n, c) = static_cast<A>(w.Wk(n, c));
    for (Index c = 0; c < V; ++c) Wcat(n, D + c) = static_cast<A>(w.Wv(n, c));
  }
  table.z = times<A>(table.basis, Wcat);
  for (Index c = 0; c < D; ++c) table.z.col(c).array() += static_cast<A>(w.bk[static_cast<std::size_t>(c)]);
  for (Index c = 0; c < V; ++c) table.z.col(D + c).array() += static_cast<A>(w.bv[static_cast<std::size_t>(c)]);
  table.zslope = times<A>(table.dbasis, Wcat);
  table.value.resize(G + 1, W);
  table.slope.resize(G + 1, W);
  for (Index g = 0; g <= G; ++g)
    for (Index c = 0; c < W; ++c) {
      A f, f1;
      act.value_and_first(table.z(g, c), f, f1);
      table.value(g, c) = static_cast<T>(f);
      table.slope(g, c) = static_cast<T>(h * f1 * table.zslope(g, c));
    }
}

}  // namespace

template <class T>
void lend_filter_table(const FilterTable<T>& from, FilterTable<Dual>& to) {
  static_assert(!is_dual_v<T>);
  to.value.resize(0, 0);
  to.slope.resize(0, 0);
  to.z.resize(0, 0);
  to.zslope.resize(0, 0);
  to.real_value = from.value.template cast<double>();
  to.real_slope = from.slope.template cast<double>();
  to.real_z = from.z;
  to.real_zslope = from.zslope;
  to.sigmoid = from.sigmoid;
  to.basis = from.basis;
  to.dbasis = from.dbasis;
  to.basis_step = from.basis_step;
  to.basis_first = from.basis_first;
  to.basis_spacing = from.basis_spacing;
  to.built_from = from.built_from;
  to.built_activation = from.built_activation;
}
template void lend_filter_table<float>(const FilterTable<float>&, FilterTable<Dual>&);
template void lend_filter_table<double>(const FilterTable<double>&, FilterTable<Dual>&);

namespace {

// The rows of nodes g and g + 1 in one part of the table gradients (values, slopes).
template <class R>
struct NodeRows {
  R *v0, *s0, *v1, *s1;
};
template <class R>
NodeRows<R> node_rows(Mat<R>& value, Mat<R>& slope, Index g) {
  return {value.row(g).data(), slope.row(g).data(), value.row(g + 1).data(), slope.row(g + 1).data()};
}

// One pair's filter gradient x (W) onto the rows of its interval's nodes through the interpolant's
// weights: v0 += w0 x, s0 += w1 x, v1 += w2 x, s1 += w3 x.
template <class R>
void scatter_onto_nodes(const NodeRows<R>& r, R w0, R w1, R w2, R w3, const R* x, Index W) {
#pragma GCC ivdep
  for (Index c = 0; c < W; ++c) {
    r.v0[c] += w0 * x[c];
    r.s0[c] += w1 * x[c];
    r.v1[c] += w2 * x[c];
    r.s1[c] += w3 * x[c];
  }
}

// A float pass sums its pairs' filter gradients onto the table's nodes in float (half the memory
// traffic of double and twice the lanes) for this many pieces, then adds those sums into the
// task's double sums: a float sum runs over at most 16 x 512 pairs spread over the nodes.
constexpr Index kFloatScatterPieces = 16;

// Geometry and interpolated filters of the consecutive pairs [p0, p0 + np).
template <class T>
struct PairBlock {
  Index p0 = 0, np = 0;
  std::vector<Accum<T>> rho, env, denv;  // np
  std::vector<Index> interval;            // np: table interval g
  std::vector<Accum<T>> position;         // np: t in [0, 1]
  // The pairs in order of interval (stable): loops that read or write the table's rows g, g + 1
  // visit them in this order, so consecutive pairs share rows in L1 instead of reading rows spread
  // over the whole table (which outgrows L2 at width 128).
  std::vector<Index> by_interval;         // np
  std::vector<Index> sort_offsets;        // G + 1: the counting sort's scratch
  Mat<Accum<T>> unit;                     // np x 3: (r_source - r_target) / rho (0 when rho = 0)
  PairMat<T> filt;                        // np x W: [F^k | F^v]
};

// b.by_interval: the pairs ordered by table interval, pairs of one interval in list order.
template <class T>
void sort_by_interval(Index intervals, PairBlock<T>& b) {
  // offsets[g] = number of pairs below interval g; each pair then takes its interval's next slot.
  std::vector<Index>& offsets = b.sort_offsets;
  offsets.assign(static_cast<std::size_t>(intervals) + 1, 0);
  for (const Index g : b.interval) ++offsets[static_cast<std::size_t>(g) + 1];
  for (std::size_t g = 1; g < offsets.size(); ++g) offsets[g] += offsets[g - 1];
  b.by_interval.resize(b.interval.size());
  for (Index p = 0; p < b.np; ++p) {
    Index& slot = offsets[static_cast<std::size_t>(b.interval[static_cast<std::size_t>(p)])];
    b.by_interval[static_cast<std::size_t>(slot++)] = p;
  }
}

template <class T>
void build_pairs(const NearFieldConfig& config, const NeighbourList& list,
                 ConstMatRef<Accum<T>> coords, const FilterTable<T>& table, Index p0, Index p1,
                 PairBlock<T>& b) {
  using A = Accum<T>;
  using std::sqrt;
  const Index np = p1 - p0, W = table.columns();
  b.p0 = p0;
  b.np = np;
  b.rho.resize(static_cast<std::size_t>(np));
  b.env.resize(static_cast<std::size_t>(np));
  b.denv.resize(static_cast<std::size_t>(np));
  b.interval.resize(static_cast<std::size_t>(np));
  b.position.resize(static_cast<std::size_t>(np));
  b.unit.resize(np, 3);
  b.filt.resize(np, W);
  for (Index p = 0; p < np; ++p) {
    const auto pi = static_cast<std::size_t>(p0 + p);
    const Index i = list.target[pi], j = list.source[pi];
    const A dx = coords(j, 0) - coords(i, 0), dy = coords(j, 1) - coords(i, 1),
            dz = coords(j, 2) - coords(i, 2);
    const A rho = sqrt(dx * dx + dy * dy + dz * dz);
    const auto ps = static_cast<std::size_t>(p);
    b.rho[ps] = rho;
    if (rho > 0) {
      b.unit(p, 0) = dx / rho;
      b.unit(p, 1) = dy / rho;
      b.unit(p, 2) = dz / rho;
    } else {
      b.unit.row(p).setZero();
    }
    envelope_with_derivative(rho, config.cutoff, b.env[ps], b.denv[ps]);
    Index g;
    A t;
    locate(config, rho, g, t);
    b.interval[ps] = g;
    b.position[ps] = t;
  }
  sort_by_interval(config.table_intervals, b);
  for (const Index p : b.by_interval) {
    const auto ps = static_cast<std::size_t>(p);
    const Index g = b.interval[ps];
    const Hermite<A> hm(b.position[ps]);
    if constexpr (is_dual_v<T>) {
      if (table.real()) {
        // A table without tangents: value and tangent parts are real sums over the table's values.
        const double* f0 = table.real_value.row(g).data();
        const double* s0 = table.real_slope.row(g).data();
        const double* f1 = table.real_value.row(g + 1).data();
        const double* s1 = table.real_slope.row(g + 1).data();
        const double wv0 = hm.w[0].v, wv1 = hm.w[1].v, wv2 = hm.w[2].v, wv3 = hm.w[3].v;
        const double wd0 = hm.w[0].d, wd1 = hm.w[1].d, wd2 = hm.w[2].d, wd3 = hm.w[3].d;
        double* value = b.filt.value.row(p).data();
        double* tangent = b.filt.tangent.row(p).data();
        for (Index c = 0; c < W; ++c) value[c] = wv0 * f0[c] + wv1 * s0[c] + wv2 * f1[c] + wv3 * s1[c];
        for (Index c = 0; c < W; ++c) tangent[c] = wd0 * f0[c] + wd1 * s0[c] + wd2 * f1[c] + wd3 * s1[c];
        continue;
      }
    }
    const T w0 = static_cast<T>(hm.w[0]), w1 = static_cast<T>(hm.w[1]), w2 = static_cast<T>(hm.w[2]),
            w3 = static_cast<T>(hm.w[3]);
    const T* f0 = table.value.row(g).data();
    const T* s0 = table.slope.row(g).data();
    const T* f1 = table.value.row(g + 1).data();
    const T* s1 = table.slope.row(g + 1).data();
    const auto out = row_ptr(b.filt, p);
    for (Index c = 0; c < W; ++c) out[c] = w0 * f0[c] + w1 * s0[c] + w2 * f1[c] + w3 * s1[c];
  }
}

// Pieces of consecutive rows [r0, r1) of the group [g0, g1) with at most max_pairs pairs each
// (or one row). How rows are grouped into pieces changes no result of the forward; in the
// backward it orders the sums onto the table's gradient rows.
template <class F>
void for_each_piece(const NeighbourList& list, Index g0, Index g1, Index max_pairs, F&& f) {
  Index r0 = g0;
  while (r0 < g1) {
    Index r1 = r0 + 1;
    while (r1 < g1 && list.offsets[static_cast<std::size_t>(r1 + 1)] -
                              list.offsets[static_cast<std::size_t>(r0)] <= max_pairs)
      ++r1;
    f(r0, r1);
    r0 = r1;
  }
}

// Work units of the backward, each done in one pass that writes both ends of every pair (each
// pair's filters and weights computed once). Runs of rows closed under the neighbour relation
// (molecules) with few pairs are gathered into one task; the rows of a large closed run are cut
// into groups. A pair whose source lies outside its task's rows writes its source side into the
// task's halo rows, which are added into the gradients after all tasks, in task order, so that
// every gradient row is written by one thread at a time in a fixed order. The units depend on the
// list only, never on the thread count.
struct BackwardTask {
  Index begin = 0, end = 0;
};
constexpr Index kClosedTaskRows = 64;  // rows of small closed runs gathered into one task

std::vector<BackwardTask> backward_tasks(const NeighbourList& list, Index single_pass_max_pairs) {
  const Index N = list.num_rows();
  std::vector<BackwardTask> tasks;
  BackwardTask open{0, 0};
  auto flush = [&] {
    if (open.end > open.begin) tasks.push_back(open);
    open = {open.end, open.end};
  };
  Index start = 0, reach = -1;
  for (Index r = 0; r < N; ++r) {
    const auto e = static_cast<std::size_t>(list.offsets[static_cast<std::size_t>(r) + 1]);
    const auto b = static_cast<std::size_t>(list.offsets[static_cast<std::size_t>(r)]);
    reach = std::max(reach, e > b ? static_cast<Index>(list.source[e - 1]) : r);  // sources sorted
    reach = std::max(reach, r);
    if (reach != r) continue;
    // Rows [start, r] are closed: no pair leaves them (the list is symmetric).
    const Index pairs = list.offsets[static_cast<std::size_t>(r) + 1] - list.offsets[static_cast<std::size_t>(start)];
    if (pairs <= single_pass_max_pairs) {
      open.end = r + 1;
      if (open.end - open.begin >= kClosedTaskRows) flush();
    } else {
      flush();
      const Index n = r + 1 - start, G = group_rows(n);
      for (Index g0 = start; g0 <= r; g0 += G) tasks.push_back({g0, std::min(r + 1, g0 + G)});
      open = {r + 1, r + 1};
    }
    start = r + 1;
  }
  flush();
  return tasks;
}

// The source-side gradients (dk, dv, dvec, dr) a task writes for the sources outside its rows.
template <class T>
struct Halo {
  std::vector<Index> rows;   // the sources outside the task's rows, ascending
  std::vector<std::int32_t> slot;  // per pair of the task: its source's halo row, or -1 inside
                                   // the task (halo rows are sources, which the list holds as int32)
  PairMat<T> dk, dv, dvec;   // rows.size() x D, V, 3D (dvec with vectors only)
  Mat<T> dcoords;            // rows.size() x 3 (when coordinate gradients are wanted)
};

template <class T>
void zero(Mat<T>& m, Index rows, Index cols) {
  m.setZero(rows, cols);
}
void zero(SplitMat& m, Index rows, Index cols) {
  m.value.setZero(rows, cols);
  m.tangent.setZero(rows, cols);
}

template <class T>
void make_halo(const NeighbourList& list, const BackwardTask& task, Index D, Index V, bool vectors,
               bool want_coords, Halo<T>& halo) {
  const auto p0 = static_cast<std::size_t>(list.offsets[static_cast<std::size_t>(task.begin)]);
  const auto p1 = static_cast<std::size_t>(list.offsets[static_cast<std::size_t>(task.end)]);
  halo.rows.clear();
  for (std::size_t p = p0; p < p1; ++p) {
    const Index j = list.source[p];
    if (j < task.begin || j >= task.end) halo.rows.push_back(j);
  }
  std::sort(halo.rows.begin(), halo.rows.end());
  halo.rows.erase(std::unique(halo.rows.begin(), halo.rows.end()), halo.rows.end());
  halo.slot.resize(p1 - p0);
  for (std::size_t p = p0; p < p1; ++p) {
    const Index j = list.source[p];
    halo.slot[p - p0] = j >= task.begin && j < task.end
                            ? -1
                            : static_cast<std::int32_t>(std::lower_bound(halo.rows.begin(), halo.rows.end(), j) -
                                                        halo.rows.begin());
  }
  const auto nh = static_cast<Index>(halo.rows.size());
  zero(halo.dk, nh, D);
  zero(halo.dv, nh, V);
  if (vectors) zero(halo.dvec, nh, 3 * D);
  if (want_coords) halo.dcoords.setZero(nh, 3);
}

template <class T>
void check_inputs(const NearFieldConfig& config, const NeighbourList& list, ConstMatRef<Accum<T>> coords,
                  ConstMatRef<T> q, ConstMatRef<T> k, ConstMatRef<T> v, ConstMatRef<T> vec,
                  const NearFieldWeights<T>& w) {
  config.validate();
  const Index N = q.rows(), D = config.width(), V = config.value_width(), K = config.nodes.count;
  auto shape = [](const char* what, Index r, Index c, Index er, Index ec) {
    if (r != er || c != ec)
      throw InvalidArgument(std::string("near field: ") + what + " is " + std::to_string(r) + " x " +
                            std::to_string(c) + ", expected " + std::to_string(er) + " x " +
                            std::to_string(ec));
  };
  shape("q", q.rows(), q.cols(), N, D);
  shape("k", k.rows(), k.cols(), N, D);
  shape("v", v.rows(), v.cols(), N, V);
  shape("coords", coords.rows(), coords.cols(), N, 3);
  if (config.vectors) shape("vec", vec.rows(), vec.cols(), N, 3 * D);
  shape("Wk", w.Wk.rows(), w.Wk.cols(), K, D);
  shape("Wv", w.Wv.rows(), w.Wv.cols(), K, V);
  require(static_cast<Index>(w.bk.size()) == D && static_cast<Index>(w.bv.size()) == V &&
              static_cast<Index>(w.sink.size()) == config.heads,
          "near field: filter biases or sink of the wrong size");
  check_neighbour_list(list, N, nullptr, false, "near field");
  require(std::abs(list.cutoff - config.cutoff) <= 1e-12 * config.cutoff,
          "near field: the neighbour list was built for another cutoff");
}

}  // namespace

namespace {

// The forward of near_field_forward and near_field_infer: the same arithmetic; the row maxima
// and denominators are kept only when row_max and den are given (N x H).
template <class T>
void near_field_rows(const NearFieldConfig& config, const NeighbourList& list,
                     ConstMatRef<Accum<T>> coords, ConstMatRef<T> q, ConstMatRef<T> k,
                     ConstMatRef<T> v, ConstMatRef<T> vec, const NearFieldWeights<T>& w, const FilterTable<T>& table,
                     MatRef<T> out, MatRef<T> dvec, Mat<T>* row_max, Mat<T>* den_kept) {
  const Index N = q.rows(), H = config.heads, d = config.head_dim, D = config.width();
  require(out.rows() == N && out.cols() == D, "near field: out must be N x D");
  if (config.vectors) require(dvec.rows() == N && dvec.cols() == 3 * D, "near field: dvec must be N x 3D");
  using std::exp;
  const RealOf<T> scale = static_cast<RealOf<T>>(1.0 / std::sqrt(static_cast<double>(d)));
  const PairView<T, ConstMatRef<T>> q_rows(q), k_rows(k), v_rows(v), vec_rows(vec);
  PairView<T, MatRef<T>> out_rows(out, true), dvec_rows(dvec, true);
  parallel_chunks(N, group_rows(N), [&](Index, Index g0, Index g1) {
    PairBlock<T> b;
    std::vector<T> logit, ex;
    PairMat<T> filtered(config.vectors ? 2 : 0, D);  // e (v^a o F^a), e (v^b o F^b) of a pair
    for_each_piece(list, g0, g1, kForwardPairsPerPiece<T>, [&](Index r0, Index r1) {
      const Index p0 = list.offsets[static_cast<std::size_t>(r0)];
      const Index p1 = list.offsets[static_cast<std::size_t>(r1)];
      build_pairs<T>(config, list, coords, table, p0, p1, b);
      logit.resize(static_cast<std::size_t>((p1 - p0) * H));
      ex.resize(logit.size());
      for (Index i = r0; i < r1; ++i) {
        const Index a0 = list.offsets[static_cast<std::size_t>(i)] - p0;
        const Index a1 = list.offsets[static_cast<std::size_t>(i) + 1] - p0;
        const auto qi = q_rows.crow(i);
        for (Index p = a0; p < a1; ++p) {
          const Index j = list.source[static_cast<std::size_t>(p0 + p)];
          const auto kj = k_rows.crow(j);
          const auto fk = row_ptr(std::as_const(b.filt), p);
          T* lp = logit.data() + p * H;
          head_product_sums<T>(H, d, lp, qi, kj, &fk);
          for (Index h = 0; h < H; ++h) lp[h] *= scale;
        }
        const auto oi = out_rows.row(i);
        for (Index c = 0; c < D; ++c) oi[c] = T(0);
        for (Index h = 0; h < H; ++h) {
          T m = w.sink[static_cast<std::size_t>(h)];
          for (Index p = a0; p < a1; ++p) m = std::max(m, logit[static_cast<std::size_t>(p * H + h)]);
          T den = exp(w.sink[static_cast<std::size_t>(h)] - m);
          for (Index p = a0; p < a1; ++p) {
            const auto ph = static_cast<std::size_t>(p * H + h);
            ex[ph] = static_cast<T>(b.env[static_cast<std::size_t>(p)]) * exp(logit[ph] - m);
            den += ex[ph];
          }
          if (row_max != nullptr) {
            (*row_max)(i, h) = m;
            (*den_kept)(i, h) = den;
          }
          const T inv = T(1) / den;
          for (Index p = a0; p < a1; ++p) {
            const Index j = list.source[static_cast<std::size_t>(p0 + p)];
            const T alpha = ex[static_cast<std::size_t>(p * H + h)] * inv;
            const auto vs = v_rows.crow(j);
            const auto fs = row_ptr(std::as_const(b.filt), p) + D;
            for (Index c = h * d; c < (h + 1) * d; ++c) oi[c] += alpha * vs[c] * fs[c];
          }
        }
        if (config.vectors) {
          const auto gi = dvec_rows.row(i);
          for (Index c = 0; c < 3 * D; ++c) gi[c] = T(0);
          const auto ea = row_ptr(filtered, 0), eb = row_ptr(filtered, 1);
          for (Index p = a0; p < a1; ++p) {
            const Index j = list.source[static_cast<std::size_t>(p0 + p)];
            const T e = static_cast<T>(b.env[static_cast<std::size_t>(p)]);
            const auto va = v_rows.crow(j) + D;
            const auto vb = v_rows.crow(j) + 2 * D;
            const auto fa = row_ptr(std::as_const(b.filt), p) + 2 * D;
            const auto fb = row_ptr(std::as_const(b.filt), p) + 3 * D;
            const auto vj = vec_rows.crow(j);
#pragma GCC ivdep
            for (Index c = 0; c < D; ++c) {  // the filtered values, shared by the 3 components
              ea[c] = e * (va[c] * fa[c]);
              eb[c] = e * (vb[c] * fb[c]);
            }
            for (Index x = 0; x < 3; ++x) {
              const T ux = static_cast<T>(b.unit(p, x));
              const auto gx = gi + x * D;
              const auto vjx = vj + x * D;
#pragma GCC ivdep
              for (Index c = 0; c < D; ++c) gx[c] += ea[c] * vjx[c] + eb[c] * ux;
            }
          }
        }
      }
    });
  });
  out_rows.store();
  if (config.vectors) dvec_rows.store();
}

}  // namespace

template <class T>
void near_field_forward(const NearFieldConfig& config, const NeighbourList& list,
                        ConstMatRef<Accum<T>> coords, ConstMatRef<T> q, ConstMatRef<T> k,
                        ConstMatRef<T> v, ConstMatRef<T> vec, const NearFieldWeights<T>& w,
                        MatRef<T> out, MatRef<T> dvec, NearFieldCache<T>& cache) {
  check_inputs<T>(config, list, coords, q, k, v, vec, w);
  cache.row_max.resize(q.rows(), config.heads);
  cache.den.resize(q.rows(), config.heads);
  build_table<T>(config, w, cache.table);
  near_field_rows<T>(config, list, coords, q, k, v, vec, w, cache.table, out, dvec, &cache.row_max,
                     &cache.den);
  cache.out = out;
}

template <class T>
void near_field_infer(const NearFieldConfig& config, const NeighbourList& list,
                      ConstMatRef<Accum<T>> coords, ConstMatRef<T> q, ConstMatRef<T> k, ConstMatRef<T> v,
                      ConstMatRef<T> vec, const NearFieldWeights<T>& w, MatRef<T> out, MatRef<T> dvec) {
  check_inputs<T>(config, list, coords, q, k, v, vec, w);
  FilterTable<T> table;
  build_table<T>(config, w, table);
  near_field_rows<T>(config, list, coords, q, k, v, vec, w, table, out, dvec, nullptr, nullptr);
}

template <class T>
void near_field_backward(const NearFieldConfig& config, const NeighbourList& list,
                         ConstMatRef<Accum<T>> coords, ConstMatRef<T> q, ConstMatRef<T> k,
                         ConstMatRef<T> v, ConstMatRef<T> vec, const NearFieldWeights<T>& w,
                         const NearFieldCache<T>& cache, ConstMatRef<T> dout, ConstMatRef<T> ddvec,
                         MatRef<T> dq, MatRef<T> dk, MatRef<T> dv, MatRef<T> dvec_in,
                         MatRef<T> dcoords, NearFieldGrads<T>& grads) {
  check_inputs<T>(config, list, coords, q, k, v, vec, w);
  const Index N = q.rows(), H = config.heads, d = config.head_dim, D = config.width();
  const Index V = config.value_width(), K = config.nodes.count;
  const bool vectors = config.vectors;
  const bool want_coords = dcoords.size() != 0;
  // A float or double pass asked for input gradients only skips the filter weights' gradients (a
  // Dual pass still needs their tangents).
  const bool want_parameters = is_dual_v<T> || pass_options().parameter_gradient_values;
  require(cache.out.rows() == N && cache.row_max.rows() == N && cache.den.rows() == N,
          "near field backward: cache from another forward");
  require(dout.rows() == N && dout.cols() == D, "near field backward: dout must be N x D");
  if (vectors) {
    require(ddvec.rows() == N && ddvec.cols() == 3 * D, "near field backward: ddvec must be N x 3D");
    require(dvec_in.rows() == N && dvec_in.cols() == 3 * D, "near field backward: dvec must be N x 3D");
  }
  require(dq.rows() == N && dk.rows() == N && dv.rows() == N && dv.cols() == V,
          "near field backward: gradient shapes");
  if (want_coords) require(dcoords.rows() == N && dcoords.cols() == 3, "near field backward: dcoords must be N x 3");
  using A = Accum<T>;
  using std::exp;
  const RealOf<T> scale = static_cast<RealOf<T>>(1.0 / std::sqrt(static_cast<double>(d)));

  // D_ih = sum_{c in h} G_ic out_ic, for every row (pass 2 reads other rows' values).
  Mat<T> Dg(N, H);
  for (Index i = 0; i < N; ++i)
    for (Index h = 0; h < H; ++h) {
      T s = 0;
      for (Index c = h * d; c < (h + 1) * d; ++c) s += dout(i, c) * cache.out(i, c);
      Dg(i, h) = s;
    }

  const std::vector<BackwardTask> tasks = backward_tasks(list, config.single_pass_max_pairs);
  const auto ntasks = static_cast<Index>(tasks.size());
  const Index GT = config.table_intervals, W = D + V;
  const double step = config.table_step();
  const FilterTable<T>& table = cache.table;
  require(table.nodes() == GT + 1 && table.columns() == W,
          "near field backward: the cache's filter table does not match the configuration");
  // Per task: d Loss / d(table values) and d Loss / d(table slopes), summed in task
  // order. A task's pairs touch few of the G + 1 nodes: only those rows are zeroed and summed.
  // The parts are real (a Dual's value and tangent apart), so the scatter runs in vectorised
  // real arithmetic; a float pass sums in float for kFloatScatterPieces pieces at a time. A Dual
  // pass that wants no parameter-gradient values and has a real table needs the tangents only:
  // dz' = act'(z) dF' + h act''(z) s dS' (act', act'', s real).
  const bool table_values = !is_dual_v<T> || pass_options().parameter_gradient_values || !table.real();
  struct TablePart {
    Mat<double> value, slope;                  // value parts (when table_values)
    Mat<double> value_tangent, slope_tangent;  // tangent parts (Dual)
    std::vector<char> touched;                 // G + 1: nodes whose rows are zeroed and used
    // Float passes: the sums of the pieces since the last flush, and their nodes.
    Mat<float> pending_value, pending_slope;
    std::vector<char> pending_touched;         // G + 1
    std::vector<Index> pending_nodes;
    // Adds the pending float sums into the double sums (in node order of first use) and clears them.
    void flush() {
      for (const Index node : pending_nodes) {
        const auto n = static_cast<std::size_t>(node);
        if (!touched[n]) {
          touched[n] = 1;
          value.row(node).setZero();
          slope.row(node).setZero();
        }
        value.row(node) += pending_value.row(node).template cast<double>();
        slope.row(node) += pending_slope.row(node).template cast<double>();
        pending_touched[n] = 0;
      }
      pending_nodes.clear();
    }
  };
  std::vector<TablePart> parts(static_cast<std::size_t>(ntasks));
  Mat<T> dsink_rows = Mat<T>::Zero(N, H);
  const PairView<T, ConstMatRef<T>> q_rows(q), k_rows(k), v_rows(v), vec_rows(vec), dout_rows(dout),
      ddvec_rows(ddvec);
  PairView<T, MatRef<T>> dq_rows(dq), dk_rows(dk), dv_rows(dv), dvec_in_rows(dvec_in);

  // One pass per task over its rows i: the destination side of each pair i -> j (dq_i, the table,
  // dr_i) into the gradients, its source side (dk_j, dv_j, dvec_j, dr_j) into the gradients when j
  // is one of the task's rows, else into the task's halo.
  std::vector<Halo<T>> halos(static_cast<std::size_t>(ntasks));
#pragma omp parallel for schedule(dynamic, 1) if (ntasks > 1)
  for (Index task = 0; task < ntasks; ++task) {
    const BackwardTask& tk = tasks[static_cast<std::size_t>(task)];
    const Index g = task, g0 = tk.begin, g1 = tk.end;
    Halo<T>& halo = halos[static_cast<std::size_t>(g)];
    make_halo(list, tk, D, V, vectors, want_coords, halo);
    const Index task_p0 = list.offsets[static_cast<std::size_t>(g0)];
    PairBlock<T> b;
    PairMat<T> dfilt;
    std::vector<A> de;
    PairMat<T> head_products(2, D);  // per pair: q_i o k_j, G_i o v_j
    std::vector<T> logits(static_cast<std::size_t>(H)), value_sums(static_cast<std::size_t>(H));
    PairMat<T> pair_products(2, D);  // per pair: the gradients of the vector messages' filters
    const auto qk = row_ptr(head_products, 0), gv = row_ptr(head_products, 1);
    const auto qk_c = row_ptr(std::as_const(head_products), 0), gv_c = row_ptr(std::as_const(head_products), 1);
    const auto egav = row_ptr(pair_products, 0), egbv = row_ptr(pair_products, 1);
    Mat<A> du;
    const bool table_side = want_parameters;  // writes the table's gradients
    constexpr bool float_scatter = std::is_same_v<T, float>;
    std::vector<double> df_value;  // W: one pair's filter gradient in double (double T)
    Index pieces = 0;              // pieces done by this task
    if (table_side) {
      TablePart& part = parts[static_cast<std::size_t>(g)];
      if (table_values) {
        part.value.resize(GT + 1, W);
        part.slope.resize(GT + 1, W);
      }
      if constexpr (is_dual_v<T>) {
        part.value_tangent.resize(GT + 1, W);
        part.slope_tangent.resize(GT + 1, W);
      }
      part.touched.assign(static_cast<std::size_t>(GT + 1), 0);
      if constexpr (float_scatter) {
        part.pending_value.resize(GT + 1, W);
        part.pending_slope.resize(GT + 1, W);
        part.pending_touched.assign(static_cast<std::size_t>(GT + 1), 0);
        part.pending_nodes.clear();
      } else if constexpr (!is_dual_v<T>) {
        df_value.resize(static_cast<std::size_t>(W));
      }
    }
    const bool need_dfilter = table_side || want_coords;
    for_each_piece(list, g0, g1, kPairsPerPiece<T>, [&](Index r0, Index r1) {
      const Index p0 = list.offsets[static_cast<std::size_t>(r0)];
      const Index p1 = list.offsets[static_cast<std::size_t>(r1)];
      const Index np = p1 - p0;
      build_pairs<T>(config, list, coords, table, p0, p1, b);
      if (need_dfilter) dfilt.resize(np, W);  // every entry is written below
      if (want_coords) {  // d Loss / d envelope and d Loss / d unit vector, per pair
        de.assign(static_cast<std::size_t>(np), A(0.0));
        du.setZero(np, 3);
      }
      for (Index row = r0; row < r1; ++row) {
        const Index a0 = list.offsets[static_cast<std::size_t>(row)] - p0;
        const Index a1 = list.offsets[static_cast<std::size_t>(row) + 1] - p0;
        const Index i = row;
        for (Index p = a0; p < a1; ++p) {
          const Index j = list.source[static_cast<std::size_t>(p0 + p)];
          const std::int32_t slot = halo.slot[static_cast<std::size_t>(p0 + p - task_p0)];
          const T e = static_cast<T>(b.env[static_cast<std::size_t>(p)]);
          const auto qi = q_rows.crow(i);
          const auto kj = k_rows.crow(j);
          const auto vs = v_rows.crow(j);
          const auto fk = row_ptr(std::as_const(b.filt), p);
          const auto fs = row_ptr(std::as_const(b.filt), p) + D;
          const auto Gi = dout_rows.crow(i);
          // The source side's rows: the gradients' own, or the task's halo rows.
          const auto dkj = slot < 0 ? dk_rows.row(j) : row_ptr(halo.dk, slot);
          const auto dvj = slot < 0 ? dv_rows.row(j) : row_ptr(halo.dv, slot);
          A de_p = 0.0;
          // The products q_i k_j and G_i v_j are shared by the logits and the filter gradients.
#pragma GCC ivdep
          for (Index c = 0; c < D; ++c) {
            qk[c] = qi[c] * kj[c];
            gv[c] = Gi[c] * vs[c];
          }
          head_product_sums<T>(H, d, logits.data(), qk_c, fk, nullptr);
          head_product_sums<T>(H, d, value_sums.data(), gv_c, fs, nullptr);
          for (Index h = 0; h < H; ++h) {
            const Index c0 = h * d;
            const T lg = scale * logits[static_cast<std::size_t>(h)];
            const T gx = value_sums[static_cast<std::size_t>(h)];
            const T ex = exp(lg - cache.row_max(i, h)) / cache.den(i, h);
            const T alpha = e * ex;
            const T delta = gx - Dg(i, h);
            const T dlogit = alpha * delta;
            const T dscaled = dlogit * scale;  // d Loss / d (q k f) of each component
            if (want_coords) de_p += static_cast<A>(ex * delta);
            const auto dqi = dq_rows.row(i);
#pragma GCC ivdep
            for (Index c = c0; c < c0 + d; ++c) dqi[c] += dscaled * (kj[c] * fk[c]);
#pragma GCC ivdep
            for (Index c = c0; c < c0 + d; ++c) {
              dkj[c] += dscaled * (qi[c] * fk[c]);
              dvj[c] += alpha * (Gi[c] * fs[c]);
            }
            if (need_dfilter) {
              const auto dfkp = row_ptr(dfilt, p);
              const auto dfsp = row_ptr(dfilt, p) + D;
#pragma GCC ivdep
              for (Index c = 0; c < d; ++c) {
                dfkp[c0 + c] = dscaled * qk[c0 + c];
                dfsp[c0 + c] = alpha * gv[c0 + c];
              }
            }
          }
          if (vectors) {
            const auto va = v_rows.crow(j) + D;
            const auto vb = v_rows.crow(j) + 2 * D;
            const auto fa = row_ptr(std::as_const(b.filt), p) + 2 * D;
            const auto fb = row_ptr(std::as_const(b.filt), p) + 3 * D;
            const auto vj = vec_rows.crow(j);
            const auto Gv = ddvec_rows.crow(i);
            const T ux[3] = {static_cast<T>(b.unit(p, 0)), static_cast<T>(b.unit(p, 1)),
                             static_cast<T>(b.unit(p, 2))};
            const auto dva = dvj + D;
            const auto dvb = dvj + 2 * D;
            const auto dvecj = slot < 0 ? dvec_in_rows.row(j) : row_ptr(halo.dvec, slot);
            // The element-wise updates (rows of different matrices: no aliasing, vectorisable),
            // then the reductions that only the coordinate gradient needs.
            const auto ea = egav;
            const auto eb = egbv;
#pragma GCC ivdep
            for (Index c = 0; c < D; ++c) {
              const T gx0 = Gv[c], gx1 = Gv[D + c], gx2 = Gv[2 * D + c];
              ea[c] = e * (gx0 * vj[c] + gx1 * vj[D + c] + gx2 * vj[2 * D + c]);
              eb[c] = e * (gx0 * ux[0] + gx1 * ux[1] + gx2 * ux[2]);
            }
#pragma GCC ivdep
            for (Index c = 0; c < D; ++c) {
              dva[c] += ea[c] * fa[c];
              dvb[c] += eb[c] * fb[c];
              const T s = e * (va[c] * fa[c]);
              dvecj[c] += s * Gv[c];
              dvecj[D + c] += s * Gv[D + c];
              dvecj[2 * D + c] += s * Gv[2 * D + c];
            }
            if (need_dfilter) {
              const auto dfa = row_ptr(dfilt, p) + 2 * D;
              const auto dfb = row_ptr(dfilt, p) + 3 * D;
#pragma GCC ivdep
              for (Index c = 0; c < D; ++c) {
                dfa[c] = ea[c] * va[c];
                dfb[c] = eb[c] * vb[c];
              }
            }
            A du0 = 0, du1 = 0, du2 = 0, dev = 0;
            const auto coordinate_terms = [&](Index c, A& sum_e, A& sum_u0, A& sum_u1, A& sum_u2) {
              const T gx0 = Gv[c], gx1 = Gv[D + c], gx2 = Gv[2 * D + c];
              const T ga = gx0 * vj[c] + gx1 * vj[D + c] + gx2 * vj[2 * D + c];
              const T gb = gx0 * ux[0] + gx1 * ux[1] + gx2 * ux[2];
              const T vafa = va[c] * fa[c], vbfb = vb[c] * fb[c];
              sum_e += static_cast<A>(ga * vafa + gb * vbfb);
              const T t = e * vbfb;
              sum_u0 += static_cast<A>(t * gx0);
              sum_u1 += static_cast<A>(t * gx1);
              sum_u2 += static_cast<A>(t * gx2);
            };
            if (want_coords) {
              if constexpr (is_dual_v<T>) {
                for (Index c = 0; c < D; ++c) coordinate_terms(c, dev, du0, du1, du2);
              } else {  // lanes summed in a fixed order, as in channel_sum
#pragma omp simd reduction(+ : dev, du0, du1, du2)
                for (Index c = 0; c < D; ++c) coordinate_terms(c, dev, du0, du1, du2);
              }
            }
            if (want_coords) {
              de_p += dev;
              du(p, 0) = du0;
              du(p, 1) = du1;
              du(p, 2) = du2;
            }
          }
          if (want_coords) de[static_cast<std::size_t>(p)] = de_p;
        }
        for (Index h = 0; h < H; ++h)
          dsink_rows(row, h) = -exp(w.sink[static_cast<std::size_t>(h)] - cache.row_max(row, h)) /
                               cache.den(row, h) * Dg(row, h);
      }
      if (!need_dfilter) return;
      if (table_side) {
        // The interpolant's weights scatter each pair's filter gradient onto its two nodes:
        // value parts w x, tangent parts w' x + w x' (the rounding of Dual products).
        TablePart& part = parts[static_cast<std::size_t>(g)];
        if constexpr (float_scatter) {
          for (const Index p : b.by_interval) {
            const Index gi = b.interval[static_cast<std::size_t>(p)];
            for (const Index node : {gi, gi + 1})
              if (!part.pending_touched[static_cast<std::size_t>(node)]) {
                part.pending_touched[static_cast<std::size_t>(node)] = 1;
                part.pending_nodes.push_back(node);
                part.pending_value.row(node).setZero();
                part.pending_slope.row(node).setZero();
              }
            const Hermite<A> hm(b.position[static_cast<std::size_t>(p)]);
            const float w0 = static_cast<float>(hm.w[0]), w1 = static_cast<float>(hm.w[1]),
                        w2 = static_cast<float>(hm.w[2]), w3 = static_cast<float>(hm.w[3]);
            scatter_onto_nodes(node_rows(part.pending_value, part.pending_slope, gi), w0, w1, w2, w3,
                               row_ptr(std::as_const(dfilt), p), W);
          }
          if (++pieces % kFloatScatterPieces == 0) part.flush();
        } else {
          for (const Index p : b.by_interval) {
            const Index gi = b.interval[static_cast<std::size_t>(p)];
            for (const Index node : {gi, gi + 1})
              if (!part.touched[static_cast<std::size_t>(node)]) {
                part.touched[static_cast<std::size_t>(node)] = 1;
                for (Mat<double>* m : {&part.value, &part.slope, &part.value_tangent, &part.slope_tangent})
                  if (m->size() != 0) m->row(node).setZero();
              }
            const Hermite<A> hm(b.position[static_cast<std::size_t>(p)]);
            const double* xv;  // the pair's filter gradient (value parts)
            if constexpr (is_dual_v<T>) {
              xv = dfilt.value.row(p).data();
            } else {
              const T* df = row_ptr(dfilt, p);
              for (Index c = 0; c < W; ++c) df_value[static_cast<std::size_t>(c)] = static_cast<double>(df[c]);
              xv = df_value.data();
            }
            const double w0 = value_of(hm.w[0]), w1 = value_of(hm.w[1]), w2 = value_of(hm.w[2]),
                         w3 = value_of(hm.w[3]);
            if (table_values) scatter_onto_nodes(node_rows(part.value, part.slope, gi), w0, w1, w2, w3, xv, W);
            if constexpr (is_dual_v<T>) {
              const double* xd = dfilt.tangent.row(p).data();
              const double t0 = hm.w[0].d, t1 = hm.w[1].d, t2 = hm.w[2].d, t3 = hm.w[3].d;
              const NodeRows<double> r = node_rows(part.value_tangent, part.slope_tangent, gi);
#pragma GCC ivdep
              for (Index c = 0; c < W; ++c) {
                r.v0[c] += std::fma(t0, xv[c], w0 * xd[c]);
                r.s0[c] += std::fma(t1, xv[c], w1 * xd[c]);
                r.v1[c] += std::fma(t2, xv[c], w2 * xd[c]);
                r.s1[c] += std::fma(t3, xv[c], w3 * xd[c]);
              }
            }
          }
        }
      }
      if (!want_coords) return;
      for (const Index p : b.by_interval) {
        const auto pi = static_cast<std::size_t>(p0 + p);
        const Index tgt = list.target[pi], src = list.source[pi];
        const A rho = b.rho[static_cast<std::size_t>(p)];
        if (tgt == src || rho <= 0) continue;  // the self pair does not depend on the coordinates
        // d filter / d rho of the interpolant: (dw0 F_g + dw1 S_g + dw2 F_g+1 + dw3 S_g+1) / h.
        const Index gi = b.interval[static_cast<std::size_t>(p)];
        const Hermite<A> hm(b.position[static_cast<std::size_t>(p)]);
        const auto df = row_ptr(std::as_const(dfilt), p);
        T acc = 0;
        bool summed = false;
        if constexpr (is_dual_v<T>) {
          if (table.real()) {  // a table without tangents, as in build_pairs
            const double* f0 = table.real_value.row(gi).data();
            const double* s0 = table.real_slope.row(gi).data();
            const double* f1 = table.real_value.row(gi + 1).data();
            const double* s1 = table.real_slope.row(gi + 1).data();
            const Dual* dw = hm.dw;
            for (Index c = 0; c < W; ++c)
              acc += df[c] * Dual{dw[0].v * f0[c] + dw[1].v * s0[c] + dw[2].v * f1[c] + dw[3].v * s1[c],
                                  dw[0].d * f0[c] + dw[1].d * s0[c] + dw[2].d * f1[c] + dw[3].d * s1[c]};
            summed = true;
          }
        }
        if (!summed) {
          const T* f0 = table.value.row(gi).data();
          const T* s0 = table.slope.row(gi).data();
          const T* f1 = table.value.row(gi + 1).data();
          const T* s1 = table.slope.row(gi + 1).data();
          const T d0 = static_cast<T>(hm.dw[0]), d1 = static_cast<T>(hm.dw[1]), d2 = static_cast<T>(hm.dw[2]),
                  d3 = static_cast<T>(hm.dw[3]);
          acc = interpolant_slope_dot<T>(W, df, d0, d1, d2, d3, f0, s0, f1, s1);
        }
        const A drho = de[static_cast<std::size_t>(p)] * b.denv[static_cast<std::size_t>(p)] +
                       static_cast<A>(acc) / step;
        // Pair i -> j: rvec = r_j - r_i, u = rvec / rho; dL/drvec = drho u + (du - (du.u) u) / rho.
        const A u[3] = {b.unit(p, 0), b.unit(p, 1), b.unit(p, 2)};
        const A dudot = du(p, 0) * u[0] + du(p, 1) * u[1] + du(p, 2) * u[2];
        const std::int32_t slot = halo.slot[static_cast<std::size_t>(p0 + p - task_p0)];
        for (Index x = 0; x < 3; ++x) {
          const A gr = drho * u[x] + (du(p, x) - dudot * u[x]) / rho;
          // dr_i -= g (destination side, i = tgt), dr_j += g (source side, j = src).
          dcoords(tgt, x) -= static_cast<T>(gr);
          (slot < 0 ? dcoords(src, x) : halo.dcoords(slot, x)) += static_cast<T>(gr);
        }
      }
    });
    if constexpr (float_scatter) {
      if (table_side) {
        TablePart& part = parts[static_cast<std::size_t>(g)];
        part.flush();
        part.pending_value.resize(0, 0);
        part.pending_slope.resize(0, 0);
      }
    }
    halo.slot = {};
  }
  // The halos into the gradients, task after task (a task's halo rows are distinct).
  for (Index task = 0; task < ntasks; ++task) {
    Halo<T>& halo = halos[static_cast<std::size_t>(task)];
    const auto nh = static_cast<Index>(halo.rows.size());
#pragma omp parallel for schedule(static) if (nh >= 256)
    for (Index r = 0; r < nh; ++r) {
      const Index j = halo.rows[static_cast<std::size_t>(r)];
      const auto add = [](auto to, auto from, Index n) {
        for (Index c = 0; c < n; ++c) to[c] += from[c];
      };
      add(dk_rows.row(j), row_ptr(std::as_const(halo.dk), r), D);
      add(dv_rows.row(j), row_ptr(std::as_const(halo.dv), r), V);
      if (vectors) add(dvec_in_rows.row(j), row_ptr(std::as_const(halo.dvec), r), 3 * D);
      if (want_coords)
        for (Index x = 0; x < 3; ++x) dcoords(j, x) += halo.dcoords(r, x);
    }
    halo = {};
  }
  dq_rows.store();
  dk_rows.store();
  dv_rows.store();
  if (vectors) dvec_in_rows.store();
  if (!want_parameters) return;
  // Table gradients to the filter weights. F = act(z), S = h act'(z) s with z = b W + bias and
  // s = b' W:  dz = act'(z) dF + h act''(z) s dS;  ds = h act'(z) dS;
  // dW = b^T dz + b'^T ds;  dbias = sum_g dz.
  // One real part of the table gradients summed over the tasks in task order (0: values,
  // 1: tangents).
  auto summed_part = [&](int which, Mat<double>& dvalue, Mat<double>& dslope) {
    dvalue.setZero(GT + 1, W);
    dslope.setZero(GT + 1, W);
    for (Index task = 0; task < ntasks; ++task) {
      const TablePart& part = parts[static_cast<std::size_t>(task)];
      const Mat<double>& pv = which == 0 ? part.value : part.value_tangent;
      const Mat<double>& ps = which == 0 ? part.slope : part.slope_tangent;
      for (std::size_t node = 0; node < part.touched.size(); ++node) {
        if (!part.touched[node]) continue;
        const auto row = static_cast<Index>(node);
        dvalue.row(row) += pv.row(row);
        dslope.row(row) += ps.row(row);
      }
    }
  };
  const FilterActivation act{config.filter_activation};
  Mat<A> dW = Mat<A>::Zero(K, W);
  RowVec<A> db = RowVec<A>::Zero(W);
  if (!is_dual_v<T> || table.real()) {
    // A real table: act' and act'' of its pre-activations are real, so the value and tangent
    // parts map on their own, through real products.
    const Mat<double>* zp;
    const Mat<double>* zslopep;
    if constexpr (is_dual_v<T>) {
      zp = &table.real_z;
      zslopep = &table.real_zslope;
    } else {
      zp = &table.z;
      zslopep = &table.zslope;
    }
    const Mat<double>& z = *zp;
    const Mat<double>& zslope = *zslopep;
    Mat<double> a1, a2;
    act.table_first_and_second(z, table.sigmoid, a1, a2);
    Mat<double> dvalue, dslope, dz(GT + 1, W), ds(GT + 1, W);
    for (int which = 0; which < (is_dual_v<T> ? 2 : 1); ++which) {
      if (which == 0 && !table_values) continue;
      summed_part(which, dvalue, dslope);
      for (Index g = 0; g <= GT; ++g)
        for (Index c = 0; c < W; ++c) {
          dz(g, c) = a1(g, c) * dvalue(g, c) + step * a2(g, c) * zslope(g, c) * dslope(g, c);
          ds(g, c) = step * a1(g, c) * dslope(g, c);
        }
      const Mat<double> dW_part = table.basis.transpose() * dz + table.dbasis.transpose() * ds;
      const RowVec<double> db_part = dz.colwise().sum();
      if constexpr (is_dual_v<T>) {
        double Dual::*member = which == 0 ? &Dual::v : &Dual::d;
        for (Index n = 0; n < K; ++n)
          for (Index c = 0; c < W; ++c) dW(n, c).*member = dW_part(n, c);
        for (Index c = 0; c < W; ++c) db(c).*member = db_part(c);
      } else {
        dW = dW_part;
        db = db_part;
      }
    }
  } else {
    if constexpr (is_dual_v<T>) {
      // Weights with tangents: act' and act'' carry tangents too.
      Mat<double> parts_of[2][2];  // [values, tangents][dF, dS]
      summed_part(0, parts_of[0][0], parts_of[0][1]);
      summed_part(1, parts_of[1][0], parts_of[1][1]);
      Mat<A> dz(GT + 1, W), ds(GT + 1, W);
      for (Index g = 0; g <= GT; ++g)
        for (Index c = 0; c < W; ++c) {
          A a1, a2;
          act.first_and_second(table.z(g, c), a1, a2);
          const A dvalue{parts_of[0][0](g, c), parts_of[1][0](g, c)};
          const A dslope{parts_of[0][1](g, c), parts_of[1][1](g, c)};
          dz(g, c) = a1 * dvalue + step * a2 * table.zslope(g, c) * dslope;
          ds(g, c) = step * a1 * dslope;
        }
      dW = times<A>(table.basis.transpose(), dz) + times<A>(table.dbasis.transpose(), ds);
      db = dz.colwise().sum();
    }
  }
  for (Index n = 0; n < K; ++n) {
    for (Index c = 0; c < D; ++c) grads.Wk(n, c) += static_cast<T>(dW(n, c));
    for (Index c = 0; c < V; ++c) grads.Wv(n, c) += static_cast<T>(dW(n, D + c));
  }
  for (Index c = 0; c < D; ++c) grads.bk[static_cast<std::size_t>(c)] += static_cast<T>(db(c));
  for (Index c = 0; c < V; ++c) grads.bv[static_cast<std::size_t>(c)] += static_cast<T>(db(D + c));
  for (Index h = 0; h < H; ++h) {
    A s = 0;
    for (Index i = 0; i < N; ++i) s += static_cast<A>(dsink_rows(i, h));
    grads.sink[static_cast<std::size_t>(h)] += static_cast<T>(s);
  }
}

namespace {

// Exact filters [F^k | F^v] and their derivative in rho at one distance, in double, directly.
void exact_filters(const NearFieldConfig& config, const NearFieldWeights<double>& w, double rho,
                   std::vector<double>& value, std::vector<double>& slope) {
  const Index K = config.nodes.count, D = config.width(), V = config.value_width();
  std::vector<double> b(static_cast<std::size_t>(K)), db(static_cast<std::size_t>(K));
  radial_basis(config.nodes, rho, b.data(), db.data());
  const FilterActivation act{config.filter_activation};
  value.assign(static_cast<std::size_t>(D + V), 0.0);
  slope.assign(static_cast<std::size_t>(D + V), 0.0);
  for (Index c = 0; c < D + V; ++c) {
    double z = c < D ? w.bk[static_cast<std::size_t>(c)] : w.bv[static_cast<std::size_t>(c - D)];
    double dz = 0;
    for (Index n = 0; n < K; ++n) {
      const double weight = c < D ? w.Wk(n, c) : w.Wv(n, c - D);
      z += b[static_cast<std::size_t>(n)] * weight;
      dz += db[static_cast<std::size_t>(n)] * weight;
    }
    value[static_cast<std::size_t>(c)] = act.value(z);
    slope[static_cast<std::size_t>(c)] = act.first(z) * dz;
  }
}

// The model's filters at rho: the cubic Hermite interpolant between the two table nodes around
// rho of the exact values and derivatives there.
std::vector<double> interpolated_filters(const NearFieldConfig& config, const NearFieldWeights<double>& w,
                                         double rho) {
  Index g;
  double t;
  locate(config, rho, g, t);
  const double h = config.table_step();
  std::vector<double> f0, d0, f1, d1;
  exact_filters(config, w, static_cast<double>(g) * h, f0, d0);
  exact_filters(config, w, static_cast<double>(g + 1) * h, f1, d1);
  const double h00 = 2 * t * t * t - 3 * t * t + 1, h10 = t * t * t - 2 * t * t + t;
  const double h01 = -2 * t * t * t + 3 * t * t, h11 = t * t * t - t * t;
  std::vector<double> f(f0.size());
  for (std::size_t c = 0; c < f.size(); ++c)
    f[c] = h00 * f0[c] + h10 * h * d0[c] + h01 * f1[c] + h11 * h * d1[c];
  return f;
}

}  // namespace

FilterValues near_field_filters(const NearFieldConfig& config, const NearFieldWeights<double>& w,
                                double rho) {
  config.validate();
  FilterValues out;
  std::vector<double> slope;
  exact_filters(config, w, rho, out.exact, slope);
  out.interpolated = interpolated_filters(config, w, rho);
  return out;
}

void near_field_forward_reference(const NearFieldConfig& config, const NeighbourList& list,
                                  ConstMatRef<double> coords, ConstMatRef<double> q,
                                  ConstMatRef<double> k, ConstMatRef<double> v,
                                  ConstMatRef<double> vec, const NearFieldWeights<double>& w,
                                  MatRef<double> out, MatRef<double> dvec) {
  check_inputs<double>(config, list, coords, q, k, v, vec, w);
  const Index N = q.rows(), H = config.heads, d = config.head_dim, D = config.width();
  out.setZero();
  if (config.vectors) dvec.setZero();
  for (Index i = 0; i < N; ++i) {
    const auto i0 = static_cast<std::size_t>(list.offsets[static_cast<std::size_t>(i)]);
    const auto i1 = static_cast<std::size_t>(list.offsets[static_cast<std::size_t>(i) + 1]);
    // Every pair quantity of row i, materialised.
    std::vector<double> env, logits;  // logits: pair-major, H per pair
    std::vector<std::vector<double>> filters;
    std::vector<Eigen::Vector3d> unit;
    for (std::size_t p = i0; p < i1; ++p) {
      const Index j = list.source[p];
      const Eigen::Vector3d r = (coords.row(j) - coords.row(i)).transpose();
      const double rho = r.norm();
      unit.push_back(rho > 0 ? Eigen::Vector3d(r / rho) : Eigen::Vector3d::Zero());
      env.push_back(envelope(rho, config.cutoff));
      std::vector<double> f = interpolated_filters(config, w, rho);
      for (Index h = 0; h < H; ++h) {
        double s = 0;
        for (Index c = h * d; c < (h + 1) * d; ++c) s += q(i, c) * k(j, c) * f[static_cast<std::size_t>(c)];
        logits.push_back(s / std::sqrt(static_cast<double>(d)));
      }
      filters.push_back(std::move(f));
    }
    const std::size_t n = i1 - i0;
    const auto hs = static_cast<std::size_t>(H);
    for (Index h = 0; h < H; ++h) {
      // softmax over the pairs and the sink (a zero value), weights e_ij exp(logit)
      const auto hh = static_cast<std::size_t>(h);
      double m = w.sink[hh];
      for (std::size_t p = 0; p < n; ++p) m = std::max(m, logits[p * hs + hh]);
      double den = std::exp(w.sink[hh] - m);
      for (std::size_t p = 0; p < n; ++p) den += env[p] * std::exp(logits[p * hs + hh] - m);
      for (std::size_t p = 0; p < n; ++p) {
        const Index j = list.source[i0 + p];
        const double alpha = env[p] * std::exp(logits[p * hs + hh] - m) / den;
        for (Index c = h * d; c < (h + 1) * d; ++c)
          out(i, c) += alpha * v(j, c) * filters[p][static_cast<std::size_t>(D + c)];
      }
    }
    if (!config.vectors) continue;
    for (std::size_t p = 0; p < n; ++p) {
      const Index j = list.source[i0 + p];
      const auto& f = filters[p];
      for (Index x = 0; x < 3; ++x)
        for (Index c = 0; c < D; ++c)
          dvec(i, x * D + c) += env[p] * (v(j, D + c) * f[static_cast<std::size_t>(2 * D + c)] * vec(j, x * D + c) +
                                          v(j, 2 * D + c) * f[static_cast<std::size_t>(3 * D + c)] * unit[p](x));
    }
  }
}

#define FLT_NEAR_FIELD_INSTANTIATE(T)                                                              \
  template void near_field_forward<T>(const NearFieldConfig&, const NeighbourList&,                \
                                      ConstMatRef<Accum<T>>, ConstMatRef<T>, ConstMatRef<T>,         \
                                      ConstMatRef<T>, ConstMatRef<T>, const NearFieldWeights<T>&,  \
                                      MatRef<T>, MatRef<T>, NearFieldCache<T>&);                   \
  template void near_field_infer<T>(const NearFieldConfig&, const NeighbourList&,                  \
                                    ConstMatRef<Accum<T>>, ConstMatRef<T>, ConstMatRef<T>,         \
                                    ConstMatRef<T>, ConstMatRef<T>, const NearFieldWeights<T>&,    \
                                    MatRef<T>, MatRef<T>);                                         \
  template void near_field_backward<T>(                                                            \
      const NearFieldConfig&, const NeighbourList&, ConstMatRef<Accum<T>>, ConstMatRef<T>,         \
      ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>, const NearFieldWeights<T>&,                  \
      const NearFieldCache<T>&, ConstMatRef<T>, ConstMatRef<T>, MatRef<T>, MatRef<T>, MatRef<T>,   \
      MatRef<T>, MatRef<T>, NearFieldGrads<T>&);
FLT_NEAR_FIELD_INSTANTIATE(float)
FLT_NEAR_FIELD_INSTANTIATE(double)
FLT_NEAR_FIELD_INSTANTIATE(Dual)
#undef FLT_NEAR_FIELD_INSTANTIATE

}  // namespace flt::attn
