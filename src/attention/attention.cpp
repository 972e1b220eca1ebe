// Multi-head FLT attention, streaming kernel (E9, E10, E12, E13) and backward (E25-E28).
// L tokens, H heads, d per head, dv value width, m Performer features, R frequencies,
// P = 2R (kronecker) or 1 (bias) mask-feature width, F = P (dv + 1) accumulator width,
// B = block size (tokens per streamed block).
//
// One kernel serves both variants: Q~_i = phi_i kron psi_i (kronecker: psi = a o cs; bias:
// psi = [1], the mask inside phi), formed per block of n <= B tokens (Qt, Kt: n x mP). With
// Va_j = [v_j, 1]:
//   Sa += Va^T Kt  ((dv+1) x mP, double),  num = Qt Sa^T,  out_i = num_i[:dv] / num_i[dv]   (E10)
// Backward (E25, E26), Ga_i = [G_i / den_i, -(G_i . out_i) / den_i]:
//   dQt = Ga Sa,  dSa = Ga^T Qt,  dKt = Va dSa,  dVa = Kt dSa^T;  with M_i = dQt_i as m x P,
//   dphi_i = M_i psi_i,  dpsi_i = M_i^T phi_i.
// Block layout, causal form and cost: docs/attention.md, "FLT attention".
#include "attention/attention.hpp"

#include "core/error.hpp"
#include "attention/fourier_features.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <type_traits>

namespace flt::attn {

const char* to_string(Variant v) noexcept { return v == Variant::kronecker ? "kronecker" : "bias"; }
Variant variant_from_string(const std::string& name) {
  if (name == "kronecker") return Variant::kronecker;
  if (name == "bias") return Variant::bias;
  throw ConfigError("unknown FLT variant '" + name + "' (kronecker, bias)");
}

Index AttentionConfig::features() const noexcept {
  if (num_features > 0) return num_features;
  return variant == Variant::kronecker ? kDefaultFeaturesKronecker : kDefaultFeaturesBias;
}
Index AttentionConfig::frequencies() const noexcept {
  return num_frequencies > 0 ? num_frequencies : kDefaultFrequencies;
}
Index AttentionConfig::block() const noexcept { return block_size > 0 ? block_size : kDefaultBlockSize; }

void AttentionConfig::validate() const {
  if (heads < 1 || head_dim < 1 || value_dim < 1)
    throw ConfigError("FLT attention: heads, head_dim and value_dim must be positive");
  if (num_features < 0 || num_frequencies < 0 || block_size < 0)
    throw ConfigError("FLT attention: num_features, num_frequencies, block_size must be >= 0");
  if (!(tiny_denominator > 0) || !(tiny_denominator < 1))
    throw ConfigError("FLT attention: tiny_denominator must be in (0, 1)");
  Spectrum check(spectrum);  // validates the spectrum configuration
}

void AttentionStats::merge(const AttentionStats& o) {
  forward_calls += o.forward_calls;
  denominators += o.denominators;
  nonpositive_denominators += o.nonpositive_denominators;
  tiny_denominators += o.tiny_denominators;
  clamped_denominators += o.clamped_denominators;
  min_relative_denominator = std::min(min_relative_denominator, o.min_relative_denominator);
}

namespace {

// Per (set, head) constants.
template <class T>
struct Head {
  Variant variant;
  Index h, d, dv, m, R, P, D;
  const Mat<T>* W;          // m x D
  const Mat<double>* xi;    // R x dc
  RowVec<T> a;              // query-side scale of the basis columns (length 2R)
  RowVec<T> b;              // key-side scale (bias variant; kronecker uses psiK = cs)
  T qscale;                 // d^(-1/4)
  std::span<const double> centre;
};

// The factors of one block of rows on one side.
template <class T>
struct Side {
  Mat<T> X;    // Performer input, n x D
  Mat<T> phi;  // n x m
  Mat<T> cs;   // n x 2R
  Mat<T> psi;  // n x P
};

template <class T>
void build_input(const Head<T>& hd, ConstMatRef<T> QK, ConstMatRef<T> coords, Index i0, Index n,
                 bool query, Side<T>& s) {
  rpe_basis<T>(coords.middleRows(i0, n), hd.centre, *hd.xi, s.cs);
  if (hd.variant == Variant::kronecker) {
    s.X = QK.block(i0, hd.h * hd.d, n, hd.d) * hd.qscale;
    if (query)
      s.psi = s.cs.array().rowwise() * hd.a.array();
    else
      s.psi = s.cs;
  } else {
    // E12: x^ = [q / d^(1/4); beta psiQ], y^ = [k / d^(1/4); psiK]
    s.X.resize(n, hd.D);
    s.X.leftCols(hd.d) = QK.block(i0, hd.h * hd.d, n, hd.d) * hd.qscale;
    if (query)
      s.X.rightCols(2 * hd.R) = s.cs.array().rowwise() * hd.a.array();
    else
      s.X.rightCols(2 * hd.R) = s.cs.array().rowwise() * hd.b.array();
    s.psi.setOnes(n, 1);
  }
}

template <class T>
void build_side(const Head<T>& hd, ConstMatRef<T> QK, ConstMatRef<T> coords, Index i0, Index n,
                bool query, double key_stab, Side<T>& s) {
  build_input(hd, QK, coords, i0, n, query, s);
  performer_features<T>(s.X, *hd.W, query, key_stab, s.phi);
}

// Chain rule from dphi, dpsi of one block back to dQ or dK, dr and (query side) da.
template <class T>
void backward_side(const Head<T>& hd, const Side<T>& s, const Mat<T>& dphi, const Mat<T>* dpsi,
                   bool query, std::type_identity_t<MatRef<T>> dQK_block,
                   std::type_identity_t<MatRef<T>> dr_block, Vec<double>& da) {
  const Index n = s.X.rows();
  if (n == 0) return;
  Mat<T> dX = Mat<T>::Zero(n, hd.D);
  performer_backward<T>(s.X, *hd.W, s.phi, dphi, dX);
  Mat<T> dcs;
  if (hd.variant == Variant::kronecker) {
    dQK_block += hd.qscale * dX;
    if (query) {
      // psiQ = a o cs: da += colsum(dpsi o cs), dcs = dpsi o a
      da.head(2 * hd.R) += dpsi->cwiseProduct(s.cs).colwise().sum().transpose().template cast<double>();
      dcs = dpsi->array().rowwise() * hd.a.array();
    } else {
      dcs = *dpsi;
    }
  } else {
    dQK_block += hd.qscale * dX.leftCols(hd.d);
    if (query) {
      const auto dpart = dX.rightCols(2 * hd.R);
      da.head(2 * hd.R) += dpart.cwiseProduct(s.cs).colwise().sum().transpose().template cast<double>();
      dcs = dpart.array().rowwise() * hd.a.array();
    } else {
      const auto dpart = dX.rightCols(2 * hd.R);
      da.tail(2 * hd.R) += dpart.cwiseProduct(s.cs).colwise().sum().transpose().template cast<double>();
      dcs = dpart.array().rowwise() * hd.b.array();
    }
  }
  rpe_basis_backward<T>(*hd.xi, s.cs, dcs, dr_block);
}

// Xt.row(i) = vec(phi_i^T psi_i) (m x P row-major): the block's Kronecker features (E9).
template <class T>
void kron_features(const Mat<T>& phi, const Mat<T>& psi, Mat<T>& xt) {
  const Index n = phi.rows(), m = phi.cols(), P = psi.cols();
  if (P == 1) {  // bias variant: psi is a column (of ones)
    xt = phi.array().colwise() * psi.col(0).array();
    return;
  }
  xt.resize(n, m * P);
  for (Index i = 0; i < n; ++i) {
    const auto p = psi.row(i);
    for (Index a = 0; a < m; ++a) xt.row(i).segment(a * P, P) = phi(i, a) * p;
  }
}
// E26 split of dXt: dphi_i = M_i psi_i, dpsi_i = M_i^T phi_i, M_i = dXt_i as m x P.
// dphi is overwritten; dpsi is overwritten.
template <class T>
void kron_split(const Mat<T>& dxt, const Mat<T>& phi, const Mat<T>& psi, Mat<T>& dphi, Mat<T>& dpsi) {
  const Index n = phi.rows(), m = phi.cols(), P = psi.cols();
  if (P == 1) {
    dphi = dxt.array().colwise() * psi.col(0).array();
    dpsi = dxt.cwiseProduct(phi).rowwise().sum();
    return;
  }
  dphi.resize(n, m);
  dpsi.resize(n, P);
  for (Index i = 0; i < n; ++i) {
    const ConstMatMap<T> M(dxt.row(i).data(), m, P);
    dphi.row(i).noalias() = psi.row(i) * M.transpose();
    dpsi.row(i).noalias() = phi.row(i) * M;
  }
}

template <class T>
void value_block(ConstMatRef<T> V, const Head<T>& hd, Index i0, Index n, Mat<T>& va) {
  va.resize(n, hd.dv + 1);
  va.leftCols(hd.dv) = V.block(i0, hd.h * hd.dv, n, hd.dv);
  va.col(hd.dv).setOnes();
}

template <class T>
void lower_triangle(Mat<T>& A) {
  for (Index i = 0; i < A.rows(); ++i)
    for (Index j = i + 1; j < A.cols(); ++j) A(i, j) = T(0);
}

// Query- and key-side scales of the RPE basis columns (E8, E12). kronecker: a = c~ (one side),
// b unused. bias (clean one-sided form, balanced): a_k = beta sqrt(R) c~_k, b_k = 1/sqrt(R), so
// a_k b_k = beta c~_k while |psiK|^2 = 1 and |psiQ|^2 = beta^2 mean_k c_k^2 stay bounded as R
// grows (unbalanced, |psiK|^2 = R and the Performer variance exp(|x^ + y^|^2) would grow like
// exp(R)). Smooth in c~ (a sqrt|c~| split on both sides has unbounded curvature where a signed
// spectrum such as the Dirichlet kernel crosses zero).
template <class T>
void head_scales(bool kron, const std::vector<double>& ct, double beta, RowVec<T>& a, RowVec<T>& b) {
  const Index R = static_cast<Index>(ct.size());
  const double root = std::sqrt(static_cast<double>(R));
  a.resize(2 * R);
  b.resize(2 * R);
  for (Index k = 0; k < R; ++k) {
    const double c = ct[static_cast<std::size_t>(k)];
    if (kron) {
      a(k) = a(R + k) = static_cast<T>(c);
      b(k) = b(R + k) = T(1);
    } else {
      a(k) = a(R + k) = static_cast<T>(beta * root * c);
      b(k) = b(R + k) = static_cast<T>(1.0 / root);
    }
  }
}

struct PairError {
  bool set = false;
  std::string message;
};

}  // namespace

template <class T>
FltAttention<T>::FltAttention(AttentionConfig config, ParameterStore<T>& store,
                              const std::string& name)
    : config_(std::move(config)), spectrum_(config_.spectrum), name_(name) {
  config_.validate();
  spectrum_refs_.resize(static_cast<std::size_t>(config_.heads));
  for (Index h = 0; h < config_.heads; ++h)
    for (const auto& t : spectrum_.tensors())
      spectrum_refs_[static_cast<std::size_t>(h)].push_back(
          store.add(name + ".h" + std::to_string(h) + "." + t.name, t.rows, t.cols));
  if (config_.variant == Variant::bias) beta_ref_ = store.add(name + ".beta", config_.heads, 1);
}

template <class T>
void FltAttention<T>::init_parameters(ParameterStore<T>& store) const {
  require(store.allocated(), "FltAttention::init_parameters: allocate the store first");
  Rng base(config_.seed ^ 0x5EC7A1ULL);
  for (Index h = 0; h < config_.heads; ++h) {
    Rng rng = base.fork(static_cast<std::uint64_t>(h));
    std::vector<double> p(static_cast<std::size_t>(spectrum_.num_params()));
    spectrum_.init(p, rng);
    std::size_t pos = 0;
    for (const auto& ref : spectrum_refs_[static_cast<std::size_t>(h)]) {
      auto v = store.value(ref);
      for (Index r = 0; r < ref.rows; ++r)
        for (Index c = 0; c < ref.cols; ++c) v(r, c) = static_cast<T>(p[pos++]);
    }
  }
  if (config_.variant == Variant::bias) store.value(beta_ref_).setConstant(static_cast<T>(config_.init_beta));
}

template <class T>
std::vector<double> FltAttention<T>::head_spectrum_params(const ParameterStore<T>& store,
                                                          Index head) const {
  require(head >= 0 && head < config_.heads, "FltAttention: head out of range");
  std::vector<double> p;
  p.reserve(static_cast<std::size_t>(spectrum_.num_params()));
  for (const auto& ref : spectrum_refs_[static_cast<std::size_t>(head)]) {
    const auto v = store.value(ref);
    for (Index r = 0; r < ref.rows; ++r)
      for (Index c = 0; c < ref.cols; ++c) p.push_back(static_cast<double>(v(r, c)));
  }
  return p;
}

template <class T>
std::vector<double> FltAttention<T>::head_ctilde(const ParameterStore<T>& store, Index head) const {
  require(has_features(), "FltAttention: random features not drawn (call draw_features)");
  const auto p = head_spectrum_params(store, head);
  const auto& xi = features_.xi[static_cast<std::size_t>(head)];
  const auto& pdf = features_.pdf[static_cast<std::size_t>(head)];
  std::vector<double> g(static_cast<std::size_t>(xi.rows())), ct(g.size());
  spectrum_.evaluate(p, xi, g);
  importance_weights(g, std::span<const double>(pdf.data(), static_cast<std::size_t>(pdf.size())), ct);
  return ct;
}

template <class T>
const ParamRef& FltAttention<T>::spectrum_param(Index head, Index tensor) const {
  require(head >= 0 && head < config_.heads && tensor >= 0 &&
              tensor < static_cast<Index>(spectrum_.tensors().size()),
          "FltAttention::spectrum_param: index out of range");
  return spectrum_refs_[static_cast<std::size_t>(head)][static_cast<std::size_t>(tensor)];
}

template <class T>
const ParamRef& FltAttention<T>::beta_param() const {
  require(config_.variant == Variant::bias, "FltAttention::beta_param: only the bias variant has beta");
  return beta_ref_;
}

template <class T>
void FltAttention<T>::draw_features(const ParameterStore<T>& store, std::uint64_t draw) {
  const Index H = config_.heads, m = config_.features(), R = config_.frequencies();
  const Index D = config_.variant == Variant::kronecker ? config_.head_dim : config_.head_dim + 2 * R;
  RandomFeatures f;
  f.seed = config_.seed;
  f.draw = draw;
  const Rng stream = Rng(config_.seed).fork(draw);
  for (Index h = 0; h < H; ++h) {
    Rng rng = stream.fork(static_cast<std::uint64_t>(h));
    f.omega.push_back(draw_performer_frequencies(m, D, config_.orthogonal_features,
                                                 config_.feature_norms, rng));
    Mat<double> xi;
    Vec<double> pdf;
    spectrum_.sample(head_spectrum_params(store, h), R, rng, xi, pdf);
    f.xi.push_back(std::move(xi));
    f.pdf.push_back(std::move(pdf));
  }
  set_features(std::move(f));
}

template <class T>
void FltAttention<T>::begin_step(const ParameterStore<T>& store, std::uint64_t step) {
  if (config_.redraw_each_step) draw_features(store, step);
}

template <class T>
void FltAttention<T>::set_features(RandomFeatures f) {
  const Index H = config_.heads, m = config_.features(), R = config_.frequencies();
  const Index D = config_.variant == Variant::kronecker ? config_.head_dim : config_.head_dim + 2 * R;
  require(static_cast<Index>(f.omega.size()) == H && static_cast<Index>(f.xi.size()) == H &&
              static_cast<Index>(f.pdf.size()) == H,
          "FltAttention::set_features: need one entry per head");
  for (Index h = 0; h < H; ++h) {
    const auto hs = static_cast<std::size_t>(h);
    require(f.omega[hs].rows() == m && f.omega[hs].cols() == D,
            "FltAttention::set_features: Performer frequencies must be m x D");
    require(f.xi[hs].rows() == R && f.xi[hs].cols() == config_.coord_dim() && f.pdf[hs].size() == R,
            "FltAttention::set_features: RPE frequencies must be R x dc with R densities");
    for (Index k = 0; k < R; ++k)
      require(f.pdf[hs](k) > 0 && std::isfinite(f.pdf[hs](k)),
              "FltAttention::set_features: proposal densities must be positive and finite");
  }
  features_ = std::move(f);
  omega_t_.clear();
  for (const auto& w : features_.omega) omega_t_.push_back(w.template cast<T>());
}

namespace {

template <class T>
void check_shapes(const AttentionConfig& c, ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                  ConstMatRef<T> coords, const RaggedIndex& batch) {
  const Index L = batch.total_rows();
  require(Q.rows() == L && K.rows() == L && V.rows() == L && coords.rows() == L,
          "FltAttention: Q, K, V and coords need batch.total_rows() rows");
  require(Q.cols() == c.heads * c.head_dim && K.cols() == c.heads * c.head_dim,
          "FltAttention: Q and K need heads * head_dim columns");
  require(V.cols() == c.heads * c.value_dim, "FltAttention: V needs heads * value_dim columns");
  require(coords.cols() == c.coord_dim(), "FltAttention: coords need coord_dim columns");
}

}  // namespace

template <class T>
void FltAttention<T>::forward(const ParameterStore<T>& store, ConstMatRef<T> Q, ConstMatRef<T> K,
                              ConstMatRef<T> V, ConstMatRef<T> coords, const RaggedIndex& batch,
                              MatRef<T> out, AttentionCache<T>& cache) {
  require(has_features(), "FltAttention::forward: random features not drawn (call draw_features)");
  check_shapes<T>(config_, Q, K, V, coords, batch);
  const Index L = batch.total_rows(), H = config_.heads, dv = config_.value_dim,
              dc = config_.coord_dim(), S = batch.num_sets(), R = config_.frequencies(),
              B = config_.block();
  require(out.rows() == L && out.cols() == H * dv, "FltAttention::forward: out must be L x H dv");
  const bool kron = config_.variant == Variant::kronecker;
  const Index P = kron ? 2 * R : 1;

  // Per-head estimate weights and query-side scales (cheap: R values per head).
  std::vector<RowVec<T>> scale(static_cast<std::size_t>(H)), kscale(scale.size());
  for (Index h = 0; h < H; ++h) {
    const auto ct = head_ctilde(store, h);
    const double beta = kron ? 1.0 : static_cast<double>(store.value(beta_ref_)(h, 0));
    head_scales(kron, ct, beta, scale[static_cast<std::size_t>(h)], kscale[static_cast<std::size_t>(h)]);
  }

  cache.rows = L;
  cache.out.resize(L, H * dv);
  cache.den.resize(L, H);
  cache.clamped.assign(static_cast<std::size_t>(L * H), 0);
  cache.key_stab.assign(static_cast<std::size_t>(S * H), 0.0);
  cache.sums.assign(config_.causal ? 0 : static_cast<std::size_t>(S * H), Mat<double>());
  cache.centres.assign(static_cast<std::size_t>(S), Vec<double>::Zero(dc));
  for (Index s = 0; s < S; ++s) {
    if (!config_.centring() || batch.size(s) == 0) continue;
    Vec<double> c = Vec<double>::Zero(dc);
    for (Index i = batch.begin(s); i < batch.end(s); ++i)
      for (Index a = 0; a < dc; ++a) c(a) += static_cast<double>(coords(i, a));
    cache.centres[static_cast<std::size_t>(s)] = c / static_cast<double>(batch.size(s));
  }

  const Index pairs = S * H;
  std::vector<AttentionStats> pair_stats(static_cast<std::size_t>(pairs));
  std::vector<PairError> errors(static_cast<std::size_t>(pairs));
  const auto policy = config_.denominator_policy;
  const double tiny = config_.tiny_denominator;

#pragma omp parallel for schedule(dynamic, 1)
  for (Index pair = 0; pair < pairs; ++pair) {
    const Index s = pair / H, h = pair % H;
    const Index base = batch.begin(s), n_set = batch.size(s);
    if (n_set == 0) continue;
    const auto ps = static_cast<std::size_t>(pair);
    const Vec<double>& centre = cache.centres[static_cast<std::size_t>(s)];
    Head<T> hd{config_.variant, h, config_.head_dim, dv, config_.features(), R, P,
               omega_t_[static_cast<std::size_t>(h)].cols(), &omega_t_[static_cast<std::size_t>(h)],
               &features_.xi[static_cast<std::size_t>(h)], scale[static_cast<std::size_t>(h)],
               kscale[static_cast<std::size_t>(h)],
               static_cast<T>(std::pow(static_cast<double>(config_.head_dim), -0.25)),
               std::span<const double>(centre.data(), static_cast<std::size_t>(dc))};
    AttentionStats& st = pair_stats[ps];
    st.min_relative_denominator = 1.0;

    // Pass 0: global key stabiliser (one max per set and head, cancels in out).
    double stab = -std::numeric_limits<double>::infinity();
    Side<T> qs, ks;
    for (Index i0 = base; i0 < base + n_set; i0 += B) {
      const Index n = std::min(B, base + n_set - i0);
      build_input(hd, K, coords, i0, n, false, ks);
      stab = std::max(stab, performer_logit_max<T>(ks.X, *hd.W));
    }
    cache.key_stab[ps] = stab;

    Mat<double> Sa = Mat<double>::Zero(dv + 1, hd.m * P), Zabs = Mat<double>::Zero(hd.m, P);
    Mat<T> SaT, ZabsT, va, xt, tmp, num, absq, sc, pm, y, amat;
    // Writes out and den for rows [i0, i0 + n) from num (n x dv+1) and scale (n x 1).
    auto finish = [&](Index i0, Index n) {
      for (Index i = 0; i < n; ++i) {
        const Index row = i0 + i;
        const double den = static_cast<double>(num(i, dv));
        const double scl = static_cast<double>(sc(i, 0));
        ++st.denominators;
        const double rel = scl > 0 ? den / scl : (den > 0 ? 1.0 : -1.0);
        st.min_relative_denominator = std::min(st.min_relative_denominator, rel);
        double used = den;
        const bool bad = !(den > 0) || den < tiny * scl;
        if (!(den > 0))
          ++st.nonpositive_denominators;
        else if (den < tiny * scl)
          ++st.tiny_denominators;
        if (bad) {
          used = std::max(tiny * scl, static_cast<double>(std::numeric_limits<T>::min()));
          if (policy == DenominatorPolicy::throw_error && !errors[ps].set) {
            std::ostringstream msg;
            msg << "FLT attention: denominator " << den << " (relative " << rel
                << ") of row " << (row - base) << " in set " << s << ", head " << h
                << " is not safely positive (variant " << to_string(config_.variant) << ")";
            errors[ps] = {true, msg.str()};
          }
          ++st.clamped_denominators;
          cache.clamped[static_cast<std::size_t>(row * H + h)] = 1;
        }
        cache.den(row, h) = static_cast<T>(used);
        const T inv = static_cast<T>(1.0 / used);
        out.row(row).segment(h * dv, dv) = num.row(i).head(dv) * inv;
        cache.out.row(row).segment(h * dv, dv) = out.row(row).segment(h * dv, dv);
      }
    };

    if (!config_.causal) {
      // Pass 1: Sa = sum_j K~_j Va_j^T, Zabs = sum_j phiK_j^T |psiK_j|.
      for (Index i0 = base; i0 < base + n_set; i0 += B) {
        const Index n = std::min(B, base + n_set - i0);
        build_side(hd, K, coords, i0, n, false, stab, ks);
        value_block(V, hd, i0, n, va);
        kron_features(ks.phi, ks.psi, xt);
        tmp.noalias() = va.transpose() * xt;
        Sa += tmp.template cast<double>();
        Zabs += (ks.phi.transpose() * ks.psi.cwiseAbs()).template cast<double>();
      }
      SaT = Sa.template cast<T>();
      ZabsT = Zabs.template cast<T>();
      // Pass 2: queries.
      for (Index i0 = base; i0 < base + n_set; i0 += B) {
        const Index n = std::min(B, base + n_set - i0);
        build_side(hd, Q, coords, i0, n, true, 0.0, qs);
        kron_features(qs.phi, qs.psi, xt);
        num.noalias() = xt * SaT.transpose();
        absq.noalias() = qs.phi * ZabsT;
        sc = absq.cwiseProduct(qs.psi.cwiseAbs()).rowwise().sum();
        finish(i0, n);
      }
      cache.sums[ps] = std::move(Sa);
    } else {
      for (Index i0 = base; i0 < base + n_set; i0 += B) {
        const Index n = std::min(B, base + n_set - i0);
        build_side(hd, Q, coords, i0, n, true, 0.0, qs);
        build_side(hd, K, coords, i0, n, false, stab, ks);
        value_block(V, hd, i0, n, va);
        SaT = Sa.template cast<T>();
        ZabsT = Zabs.template cast<T>();
        kron_features(qs.phi, qs.psi, xt);
        num.noalias() = xt * SaT.transpose();  // earlier blocks
        absq.noalias() = qs.phi * ZabsT;
        sc = absq.cwiseProduct(qs.psi.cwiseAbs()).rowwise().sum();
        // This block, j <= i: A = tril((phiQ phiK^T) o (psiQ psiK^T)).
        pm.noalias() = qs.phi * ks.phi.transpose();
        y.noalias() = qs.psi * ks.psi.transpose();
        amat = pm.cwiseProduct(y);
        lower_triangle(amat);
        num.noalias() += amat * va;
        y.noalias() = qs.psi.cwiseAbs() * ks.psi.cwiseAbs().transpose();
        amat = pm.cwiseProduct(y);
        lower_triangle(amat);
        sc += amat.rowwise().sum();
        finish(i0, n);
        kron_features(ks.phi, ks.psi, xt);
        tmp.noalias() = va.transpose() * xt;
        Sa += tmp.template cast<double>();
        Zabs += (ks.phi.transpose() * ks.psi.cwiseAbs()).template cast<double>();
      }
    }
  }

  AttentionStats call;
  call.forward_calls = 1;
  for (const auto& st : pair_stats) call.merge(st);
  stats_.merge(call);
  for (const auto& e : errors)
    if (e.set) throw NumericalError(e.message);
}

template <class T>
void FltAttention<T>::backward(ParameterStore<T>& store, ConstMatRef<T> Q, ConstMatRef<T> K,
                               ConstMatRef<T> V, ConstMatRef<T> coords, const RaggedIndex& batch,
                               const AttentionCache<T>& cache, ConstMatRef<T> dout, MatRef<T> dQ,
                               MatRef<T> dK, MatRef<T> dV, MatRef<T> dcoords) const {
  require(has_features(), "FltAttention::backward: random features not drawn");
  check_shapes<T>(config_, Q, K, V, coords, batch);
  const Index L = batch.total_rows(), H = config_.heads, dv = config_.value_dim,
              dc = config_.coord_dim(), S = batch.num_sets(), R = config_.frequencies(),
              B = config_.block(), d = config_.head_dim;
  require(cache.rows == L && cache.out.rows() == L, "FltAttention::backward: cache from another batch");
  require(dout.rows() == L && dout.cols() == H * dv, "FltAttention::backward: dout must be L x H dv");
  require(dQ.rows() == L && dQ.cols() == H * d && dK.rows() == L && dK.cols() == H * d &&
              dV.rows() == L && dV.cols() == H * dv,
          "FltAttention::backward: dQ, dK, dV shapes");
  const bool want_dr = dcoords.rows() > 0;
  require(!want_dr || (dcoords.rows() == L && dcoords.cols() == dc),
          "FltAttention::backward: dcoords must be L x dc or empty");
  const bool kron = config_.variant == Variant::kronecker;
  const Index P = kron ? 2 * R : 1;

  std::vector<RowVec<T>> scale(static_cast<std::size_t>(H)), kscale(scale.size());
  std::vector<std::vector<double>> ctilde(static_cast<std::size_t>(H));
  std::vector<double> betas(static_cast<std::size_t>(H), 1.0);
  for (Index h = 0; h < H; ++h) {
    const auto hs = static_cast<std::size_t>(h);
    ctilde[hs] = head_ctilde(store, h);
    if (!kron) betas[hs] = static_cast<double>(store.value(beta_ref_)(h, 0));
    head_scales(kron, ctilde[hs], betas[hs], scale[hs], kscale[hs]);
  }

  const Index pairs = S * H;
  Mat<T> dr_heads = Mat<T>::Zero(want_dr ? L : 0, H * dc);
  std::vector<Vec<double>> da_pairs(static_cast<std::size_t>(pairs), Vec<double>::Zero(4 * R));

#pragma omp parallel for schedule(dynamic, 1)
  for (Index pair = 0; pair < pairs; ++pair) {
    const Index s = pair / H, h = pair % H;
    const Index base = batch.begin(s), n_set = batch.size(s);
    if (n_set == 0) continue;
    const auto ps = static_cast<std::size_t>(pair);
    const Vec<double>& centre = cache.centres[static_cast<std::size_t>(s)];
    Head<T> hd{config_.variant, h, d, dv, config_.features(), R, P,
               omega_t_[static_cast<std::size_t>(h)].cols(), &omega_t_[static_cast<std::size_t>(h)],
               &features_.xi[static_cast<std::size_t>(h)], scale[static_cast<std::size_t>(h)],
               kscale[static_cast<std::size_t>(h)],
               static_cast<T>(std::pow(static_cast<double>(d), -0.25)),
               std::span<const double>(centre.data(), static_cast<std::size_t>(dc))};
    const double stab = cache.key_stab[ps];
    Vec<double>& da = da_pairs[ps];
    Mat<T> local_dr;  // rows of this set when dcoords is not wanted
    if (!want_dr) local_dr.setZero(n_set, dc);
    auto dr_block = [&](Index i0, Index n) -> MatRef<T> {
      if (want_dr) return dr_heads.block(i0, h * dc, n, dc);
      return local_dr.middleRows(i0 - base, n);
    };
    // Ga_i = [G_i / den_i, -(G_i . out_i) / den_i]; no gradient through a clamped denominator.
    Mat<T> ga;
    auto make_ga = [&](Index i0, Index n) {
      ga.resize(n, dv + 1);
      for (Index i = 0; i < n; ++i) {
        const Index row = i0 + i;
        const T den = cache.den(row, h);
        const auto g = dout.row(row).segment(h * dv, dv);
        ga.row(i).head(dv) = g / den;
        ga(i, dv) = cache.clamped[static_cast<std::size_t>(row * H + h)]
                        ? T(0)
                        : -g.dot(cache.out.row(row).segment(h * dv, dv)) / den;
      }
    };
    Side<T> qs, ks;
    Mat<T> va, xt, tmp, dxt, dphiq, dpsiq, dphik, dpsik, dva, pm, y, amat, da_mat, dpm, dy;

    // Key-side inter-block gradient from dSa (E25 dK~, dV).
    auto key_from_dsa = [&](const Mat<T>& dSaT, Index i0, Index n) {
      dxt.noalias() = va * dSaT;
      kron_split(dxt, ks.phi, ks.psi, dphik, dpsik);
      kron_features(ks.phi, ks.psi, xt);
      dva.noalias() = xt * dSaT.transpose();
      dV.block(i0, h * dv, n, dv) += dva.leftCols(dv);
      backward_side(hd, ks, dphik, &dpsik, false, dK.block(i0, h * d, n, d), dr_block(i0, n), da);
    };

    if (!config_.causal) {
      const Mat<T> SaT = cache.sums[ps].template cast<T>();
      Mat<double> dSa = Mat<double>::Zero(dv + 1, hd.m * P);
      for (Index i0 = base; i0 < base + n_set; i0 += B) {
        const Index n = std::min(B, base + n_set - i0);
        build_side(hd, Q, coords, i0, n, true, 0.0, qs);
        make_ga(i0, n);
        dxt.noalias() = ga * SaT;
        kron_split(dxt, qs.phi, qs.psi, dphiq, dpsiq);
        kron_features(qs.phi, qs.psi, xt);
        tmp.noalias() = ga.transpose() * xt;
        dSa += tmp.template cast<double>();
        backward_side(hd, qs, dphiq, &dpsiq, true, dQ.block(i0, h * d, n, d), dr_block(i0, n), da);
      }
      const Mat<T> dSaT = dSa.template cast<T>();
      for (Index i0 = base; i0 < base + n_set; i0 += B) {
        const Index n = std::min(B, base + n_set - i0);
        build_side(hd, K, coords, i0, n, false, stab, ks);
        value_block(V, hd, i0, n, va);
        key_from_dsa(dSaT, i0, n);
      }
    } else {
      // Pass 1, forward order: inter-block query side and everything intra-block.
      Mat<double> Sa = Mat<double>::Zero(dv + 1, hd.m * P);
      Mat<T> SaT;
      for (Index i0 = base; i0 < base + n_set; i0 += B) {
        const Index n = std::min(B, base + n_set - i0);
        build_side(hd, Q, coords, i0, n, true, 0.0, qs);
        build_side(hd, K, coords, i0, n, false, stab, ks);
        value_block(V, hd, i0, n, va);
        make_ga(i0, n);
        SaT = Sa.template cast<T>();
        dxt.noalias() = ga * SaT;
        kron_split(dxt, qs.phi, qs.psi, dphiq, dpsiq);
        // Intra-block: num_i += sum_{j<=i} A_ij Va_j.
        pm.noalias() = qs.phi * ks.phi.transpose();
        y.noalias() = qs.psi * ks.psi.transpose();
        amat = pm.cwiseProduct(y);
        lower_triangle(amat);
        da_mat.noalias() = ga * va.transpose();
        lower_triangle(da_mat);
        dva.noalias() = amat.transpose() * ga;
        dV.block(i0, h * dv, n, dv) += dva.leftCols(dv);
        dpm = da_mat.cwiseProduct(y);
        dy = da_mat.cwiseProduct(pm);
        dphiq.noalias() += dpm * ks.phi;
        dphik.noalias() = dpm.transpose() * qs.phi;
        dpsiq.noalias() += dy * ks.psi;
        dpsik.noalias() = dy.transpose() * qs.psi;
        backward_side(hd, qs, dphiq, &dpsiq, true, dQ.block(i0, h * d, n, d), dr_block(i0, n), da);
        backward_side(hd, ks, dphik, &dpsik, false, dK.block(i0, h * d, n, d), dr_block(i0, n), da);
        kron_features(ks.phi, ks.psi, xt);
        tmp.noalias() = va.transpose() * xt;
        Sa += tmp.template cast<double>();
      }
      // Pass 2, reverse order: keys receive dSa of all later blocks.
      Mat<double> dSacc = Mat<double>::Zero(dv + 1, hd.m * P);
      const Index nblocks = (n_set + B - 1) / B;
      for (Index b = nblocks - 1; b >= 0; --b) {
        const Index i0 = base + b * B;
        const Index n = std::min(B, base + n_set - i0);
        if (b < nblocks - 1) {
          build_side(hd, K, coords, i0, n, false, stab, ks);
          value_block(V, hd, i0, n, va);
          key_from_dsa(dSacc.template cast<T>(), i0, n);
        }
        if (b > 0) {
          build_side(hd, Q, coords, i0, n, true, 0.0, qs);
          make_ga(i0, n);
          kron_features(qs.phi, qs.psi, xt);
          tmp.noalias() = ga.transpose() * xt;
          dSacc += tmp.template cast<double>();
        }
      }
    }
  }

  // Fixed-order reductions over pairs: spectral parameters and beta per head.
  for (Index h = 0; h < H; ++h) {
    const auto hs = static_cast<std::size_t>(h);
    Vec<double> da = Vec<double>::Zero(4 * R);
    for (Index s = 0; s < S; ++s) da += da_pairs[static_cast<std::size_t>(s * H + h)];
    const auto& pdf = features_.pdf[hs];
    std::vector<double> dg(static_cast<std::size_t>(R));
    double dbeta = 0;
    for (Index k = 0; k < R; ++k) {
      // Each scale multiplies both the cos and the sin column of frequency k.
      // (the key-side scale b_k = 1/sqrt(R) is a constant: da's tail is not needed)
      const double dak = da(k) + da(R + k);
      const double ck = ctilde[hs][static_cast<std::size_t>(k)];
      double dck = dak;  // kronecker: a_k = c~_k
      if (!kron) {
        // bias: a_k = beta sqrt(R) c~_k: dc~_k = beta sqrt(R) da_k, dbeta = sum_k da_k sqrt(R) c~_k
        const double root = std::sqrt(static_cast<double>(R));
        dbeta += dak * root * ck;
        dck = betas[hs] * root * dak;
      }
      // E28: dparams = sum_k dc~_k / (R p_k) dg(xi_k)/dparams
      dg[static_cast<std::size_t>(k)] = dck / (static_cast<double>(R) * pdf(k));
    }
    std::vector<double> dp(static_cast<std::size_t>(spectrum_.num_params()), 0.0);
    spectrum_.evaluate_backward(head_spectrum_params(store, h), features_.xi[hs], dg, dp);
    std::size_t pos = 0;
    for (const auto& ref : spectrum_refs_[hs]) {
      auto gview = store.grad(ref);
      for (Index r = 0; r < ref.rows; ++r)
        for (Index c = 0; c < ref.cols; ++c) gview(r, c) += static_cast<T>(dp[pos++]);
    }
    if (!kron) store.grad(beta_ref_)(h, 0) += static_cast<T>(dbeta);
  }

  // Coordinates: sum the heads in order, then undo the centring (r_i - mean r): subtract the mean.
  if (want_dr) {
    for (Index s = 0; s < S; ++s) {
      const Index b0 = batch.begin(s), n = batch.size(s);
      if (n == 0) continue;
      Mat<double> g = Mat<double>::Zero(n, dc);
      for (Index h = 0; h < H; ++h)
        g += dr_heads.block(b0, h * dc, n, dc).template cast<double>();
      if (config_.centring()) g.rowwise() -= g.colwise().mean();
      dcoords.middleRows(b0, n) += g.template cast<T>();
    }
  }
}

template class FltAttention<float>;
template class FltAttention<double>;

}  // namespace flt::attn
