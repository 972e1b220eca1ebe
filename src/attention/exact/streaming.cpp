// L tokens (ragged sets), H heads, d query/key and dv value width per head, dc coordinate
// dimension, K radial basis functions, tiles of nq query rows x nk key rows (P = nq nk pairs).
// Streaming (flash-attention style) exact softmax attention with a radial distance mask; the
// equations are in streaming.hpp.
#include "attention/exact/streaming.hpp"

#include "core/error.hpp"
#include "core/log.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <new>
#include <string>
#include <type_traits>

namespace flt::exact {
namespace {

template <class T>
using ColMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
template <class T>
using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;

// One unit of parallel work: rows [begin, end) of set `set`.
struct Task {
  Index set, begin, end;
};

std::vector<Task> make_tasks(const RaggedIndex& sets, Index block) {
  std::vector<Task> tasks;
  for (Index s = 0; s < sets.num_sets(); ++s)
    for (Index b = sets.begin(s); b < sets.end(s); b += block)
      tasks.push_back({s, b, std::min(sets.end(s), b + block)});
  return tasks;
}

// The radial mask of one tile (query rows [i0, i0+nq) x key rows [j0, j0+nk)), pair p = r nk + c.
template <class T>
struct MaskTile {
  Mat<T> keys_t;  // dc x nk: key coordinates, one contiguous row per dimension
  // rho (P: |r_i - r_j|) and phi (P x K: phi_k(rho_p)) view either this tile's own storage or a
  // RadialBasisTable's block for the set (reseated with placement new, the Eigen idiom).
  Eigen::Map<const Arr<T>> rho{nullptr, 0};
  Eigen::Map<const ColMat<T>> phi{nullptr, 0, 0};
  Arr<T> rho_own;
  ColMat<T> phi_own;
  ColMat<T> u;    // P x H: u_h(rho_p) = sum_k a_hk phi_k(rho_p)  (column h = nq x nk row-major tile)
  ColMat<T> du;   // P x H: dLoss/du_h(rho_p)
  ColMat<T> c;    // P x K: sum_h du_ph a_hk
  Arr<T> w;       // P: dLoss/drho_p / rho_p (0 where rho_p = 0)

  // The geometry of the tile (keys_t, rho, phi): from the table when it holds the tile's set
  // (table_rho / table_phi non-null), else computed here.
  void build_geometry(const RadialBasis& basis, ConstMatRef<T> coords, Index i0, Index nq, Index j0,
                      Index nk, const T* table_rho = nullptr, const T* table_phi = nullptr) {
    const Index dc = coords.cols();
    const Index P = nq * nk, K = basis.size();
    keys_t = coords.middleRows(j0, nk).transpose();
    if (table_rho != nullptr) {
      new (&rho) Eigen::Map<const Arr<T>>(table_rho, P);
      new (&phi) Eigen::Map<const ColMat<T>>(table_phi, P, K);
      return;
    }
    rho_own.setZero(P);
    for (Index r = 0; r < nq; ++r) {
      auto seg = rho_own.segment(r * nk, nk);
      for (Index a = 0; a < dc; ++a)
        seg += (keys_t.row(a).array().transpose() - coords(i0 + r, a)).square();
    }
    rho_own = rho_own.sqrt();
    phi_own.resize(P, K);
    if (uniform_step > 0.0)
      fill_phi_recurrence(basis);
    else
      for (Index k = 0; k < K; ++k) {
        const T mu = static_cast<T>(basis.centres[static_cast<std::size_t>(k)]);
        phi_own.col(k) = (-(rho_own - mu).square() * inv_two_w2(basis)).exp().matrix();
      }
    new (&rho) Eigen::Map<const Arr<T>>(rho_own.data(), P);
    new (&phi) Eigen::Map<const ColMat<T>>(phi_own.data(), P, K);
  }

  void build(const RadialBasis& basis, ConstMatRef<T> coords, ConstMatRef<T> coeffs, Index i0,
             Index nq, Index j0, Index nk, const T* table_rho = nullptr, const T* table_phi = nullptr) {
    build_geometry(basis, coords, i0, nq, j0, nk, table_rho, table_phi);
    u.noalias() = phi * coeffs.transpose();
  }

  static T inv_two_w2(const RadialBasis& basis) {
    return static_cast<T>(1.0 / (2.0 * basis.width * basis.width));
  }

  // Evenly spaced centres (mu_{k+1} - mu_k = Delta, delta = Delta / w <= 1) allow a recurrence that
  // needs 2 exp per group of 8 centres instead of one per centre. With z_k = (rho - mu_k) / w:
  //   phi_{k+1} = phi_k r_k,  r_k = exp(delta z_k - delta^2 / 2),  r_{k+1} = r_k exp(-delta^2).
  // Each group restarts from an exactly computed phi_k0. Where phi_k0 is flushed to 0
  // (-z_k0^2 / 2 < -80 in float, -700 in double), every phi_k of its group is below
  // exp(-(12.6 - 7 delta)^2 / 2) < 2e-7 (float) anyway; the exponent of r_k0 is capped (far below
  // overflow) so that 0 * r stays 0.
  double uniform_step = 0.0;  // delta, or 0 when the recurrence does not apply
  static double recurrence_step(const RadialBasis& basis) {
    const Index K = basis.size();
    if (K < 2) return 0.0;
    const double spacing = basis.centres[1] - basis.centres[0];
    if (!(spacing > 0.0)) return 0.0;
    for (Index k = 1; k < K; ++k) {
      const double step = basis.centres[static_cast<std::size_t>(k)] -
                          basis.centres[static_cast<std::size_t>(k - 1)];
      if (std::abs(step - spacing) > 1e-9 * spacing) return 0.0;
    }
    const double delta = spacing / basis.width;
    return delta <= 1.0 ? delta : 0.0;
  }
  void fill_phi_recurrence(const RadialBasis& basis) {
    const Index K = basis.size();
    const double delta = uniform_step;
    const T inv_w = static_cast<T>(1.0 / basis.width);
    const T decay = static_cast<T>(std::exp(-delta * delta));
    const T cap = static_cast<T>(std::is_same_v<T, float> ? 80.0 : 700.0);
    const T floor_arg = -cap;  // exp below this is flushed to 0 (|z| > 12.6 float, 37.4 double)
    constexpr Index group = 8;
    for (Index k0 = 0; k0 < K; k0 += group) {
      const T mu = static_cast<T>(basis.centres[static_cast<std::size_t>(k0)]);
      z = (rho_own - mu) * inv_w;
      // Eigen's vectorised exp clamps very negative arguments to a tiny non-zero value instead of
      // 0, which the recurrence would then amplify: flush those to exactly 0.
      ratio = -T(0.5) * z.square();
      phi_own.col(k0) = ratio.exp().matrix();  // plain operand: vectorised exp
      phi_own.col(k0) = (ratio < floor_arg).select(T(0), phi_own.col(k0).array()).matrix();
      ratio = (static_cast<T>(delta) * z - static_cast<T>(0.5 * delta * delta)).min(cap).exp();
      for (Index k = k0 + 1; k < std::min(K, k0 + group); ++k) {
        phi_own.col(k) = (phi_own.col(k - 1).array() * ratio).matrix();
        ratio *= decay;
      }
    }
  }
  Arr<T> z, ratio;  // recurrence scratch

  Eigen::Map<const Mat<T>> u_head(Index h, Index nq, Index nk) const {
    return {u.col(h).data(), nq, nk};
  }
  Eigen::Map<Mat<T>> du_head(Index h, Index nq, Index nk) { return {du.col(h).data(), nq, nk}; }

  // w_p = (dLoss/drho_p) / rho_p with dLoss/drho_p = sum_k c_pk phi_pk (mu_k - rho_p) / w^2.
  void pair_weights(const RadialBasis& basis, ConstMatRef<T> coeffs) {
    c.noalias() = du * coeffs;
    const T inv_w2 = static_cast<T>(1.0 / (basis.width * basis.width));
    Arr<T> drho = Arr<T>::Zero(rho.size());
    for (Index k = 0; k < basis.size(); ++k) {
      const T mu = static_cast<T>(basis.centres[static_cast<std::size_t>(k)]);
      drho += c.col(k).array() * phi.col(k).array() * (mu - rho);
    }
    drho *= inv_w2;
    w = (rho > T(0)).select(drho / rho.max(std::numeric_limits<T>::min()), T(0));
  }
};

// Query side of dcoords for one tile (after MaskTile::pair_weights):
//   dr_i += sum_j w_ij (r_i - r_j) = r_i sum_j w_ij - sum_j w_ij r_j.
template <class T>
void accumulate_query_coords(const MaskTile<T>& tile, ConstMatRef<T> coords, Index i0, Index nq,
                             Index nk, Mat<T>& grad_q) {
  for (Index r = 0; r < nq; ++r) {
    const auto wr = tile.w.segment(r * nk, nk);
    const T wsum = wr.sum();
    for (Index a = 0; a < coords.cols(); ++a)
      grad_q(r, a) += coords(i0 + r, a) * wsum - (wr * tile.keys_t.row(a).array().transpose()).sum();
  }
}

template <class T>
void validate(const StreamingAttentionConfig& cfg, const RaggedIndex& sets, ConstMatRef<T> Q,
              ConstMatRef<T> K, ConstMatRef<T> V, ConstMatRef<T> coords, ConstMatRef<T> coeffs) {
  const char* who = "streaming attention: ";
  const Index L = Q.rows();
  require(cfg.heads >= 1, std::string(who) + "need at least one head");
  require(cfg.query_block >= 1 && cfg.key_block >= 1, std::string(who) + "block sizes must be >= 1");
  require(K.rows() == L && V.rows() == L, std::string(who) + "Q, K, V must have the same rows");
  require(K.cols() == Q.cols() && Q.cols() > 0 && Q.cols() % cfg.heads == 0 &&
              V.cols() % cfg.heads == 0 && V.cols() > 0,
          std::string(who) + "Q and K need equal widths H d (d >= 1), V width H dv (dv >= 1)");
  require(sets.total_rows() == L, std::string(who) + "the ragged index must cover the L rows");
  if (cfg.mask != DistanceMask::none) {
    require(coords.rows() == L && coords.cols() >= 1,
            std::string(who) + "coords must be L x dc (dc >= 1) when a distance mask is used");
    require(cfg.basis.size() >= 1 && cfg.basis.width > 0.0,
            std::string(who) + "the radial basis needs at least one centre and a positive width");
    require(coeffs.rows() == cfg.heads && coeffs.cols() == cfg.basis.size(),
            std::string(who) + "coeffs must be heads x (number of radial basis functions)");
  }
}

// Rows of the largest set that is a single tile.
Index single_tile_limit(const StreamingAttentionConfig& cfg) { return std::min(cfg.query_block, cfg.key_block); }

// The table's (rho, phi) pointers for `set`, or nulls when the table does not hold it.
template <class T>
std::pair<const T*, const T*> table_block(const RadialBasisTable<T>* table, Index set) {
  if (table == nullptr || table->first_pair[static_cast<std::size_t>(set)] < 0) return {nullptr, nullptr};
  const Index first = table->first_pair[static_cast<std::size_t>(set)];
  return {table->rho.data() + first, table->phi.data() + first * table->basis_size};
}

template <class T>
void validate_table(const StreamingAttentionConfig& cfg, const RaggedIndex& sets,
                    const RadialBasisTable<T>* table) {
  if (table == nullptr) return;
  require(cfg.mask != DistanceMask::none && table->basis_size == cfg.basis.size() &&
              static_cast<Index>(table->first_pair.size()) == sets.num_sets() &&
              table->phi.size() == table->rho.size() * table->basis_size,
          "streaming attention: the radial basis table does not match the configuration and sets");
  for (Index s = 0; s < sets.num_sets(); ++s) {
    const Index first = table->first_pair[static_cast<std::size_t>(s)];
    const Index n = sets.size(s);
    require(first < 0 ? n > single_tile_limit(cfg) : (n <= single_tile_limit(cfg) && first + n * n <= table->rho.size()),
            "streaming attention: the radial basis table does not match the sets");
  }
}

}  // namespace

template <class T>
void radial_basis_table(const StreamingAttentionConfig& cfg, const RaggedIndex& sets,
                        ConstMatRef<T> coords, RadialBasisTable<T>& table) {
  require(cfg.mask != DistanceMask::none, "radial_basis_table: the configuration has no distance mask");
  require(coords.rows() == sets.total_rows() && coords.cols() >= 1,
          "radial_basis_table: coords must be L x dc (dc >= 1)");
  require(cfg.basis.size() >= 1 && cfg.basis.width > 0.0,
          "radial_basis_table: the radial basis needs at least one centre and a positive width");
  const Index K = cfg.basis.size(), limit = single_tile_limit(cfg);
  table.basis_size = K;
  table.first_pair.assign(static_cast<std::size_t>(sets.num_sets()), -1);
  Index pairs = 0;
  for (Index s = 0; s < sets.num_sets(); ++s)
    if (sets.size(s) <= limit) {
      table.first_pair[static_cast<std::size_t>(s)] = pairs;
      pairs += sets.size(s) * sets.size(s);
    }
  table.rho.resize(pairs);
  table.phi.resize(pairs * K);
  // Each set's block is computed by the same tile code as without the table, in the tile's own
  // aligned storage, and copied: computing in place at the table's offsets would let Eigen peel
  // unaligned leading elements into its scalar exp, whose rounding differs from the packet exp,
  // and the table would no longer be bitwise what the tile path computes.
#pragma omp parallel
  {
    MaskTile<T> tile;
    tile.uniform_step = MaskTile<T>::recurrence_step(cfg.basis);
#pragma omp for schedule(dynamic, 8)
    for (Index s = 0; s < sets.num_sets(); ++s) {
      const Index first = table.first_pair[static_cast<std::size_t>(s)];
      if (first < 0 || sets.size(s) == 0) continue;
      const Index s0 = sets.begin(s), n = sets.size(s);
      tile.build_geometry(cfg.basis, coords, s0, n, s0, n);
      table.rho.segment(first, n * n) = tile.rho;
      Eigen::Map<ColMat<T>>(table.phi.data() + first * K, n * n, K) = tile.phi;
    }
  }
}

RadialBasis RadialBasis::uniform(Index count, double r_max) {
  require(count >= 2 && r_max > 0.0, "RadialBasis::uniform: need count >= 2 and r_max > 0");
  RadialBasis b;
  const double spacing = r_max / static_cast<double>(count - 1);
  for (Index k = 0; k < count; ++k) b.centres.push_back(spacing * static_cast<double>(k));
  b.width = spacing;
  return b;
}

double RadialBasis::phi(Index k, double rho) const {
  const double z = rho - centres[static_cast<std::size_t>(k)];
  return std::exp(-z * z / (2.0 * width * width));
}

template <class T>
void streaming_attention_forward(const StreamingAttentionConfig& cfg, const RaggedIndex& sets,
                                 ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                                 ConstMatRef<T> coords, ConstMatRef<T> coeffs,
                                 StreamingAttentionCache<T>& cache, const RadialBasisTable<T>* table) {
  validate<T>(cfg, sets, Q, K, V, coords, coeffs);
  validate_table<T>(cfg, sets, table);
  const Index L = Q.rows(), H = cfg.heads, d = Q.cols() / H, dv = V.cols() / H;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
  const bool masked = cfg.mask != DistanceMask::none;
  const bool additive = cfg.mask == DistanceMask::additive;
  cache.out.resize(L, H * dv);
  cache.row_max.resize(L, H);
  cache.row_sum.resize(L, H);
  const std::vector<Task> tasks = make_tasks(sets, cfg.query_block);
  const auto num_tasks = static_cast<Index>(tasks.size());

#pragma omp parallel
  {
    MaskTile<T> tile;
    if (masked) tile.uniform_step = MaskTile<T>::recurrence_step(cfg.basis);
    Mat<T> Qs, S, acc, m, l;
    Vec<T> m_new, corr;
#pragma omp for schedule(dynamic, 1)
    for (Index t = 0; t < num_tasks; ++t) {
      const Task& task = tasks[static_cast<std::size_t>(t)];
      const Index i0 = task.begin, nq = task.end - task.begin;
      const Index s0 = sets.begin(task.set), s1 = sets.end(task.set);
      Qs = scale * Q.middleRows(i0, nq);  // scaled queries: logits s = (q / sqrt d) . k
      acc.setZero(nq, H * dv);
      m.setConstant(nq, H, -std::numeric_limits<T>::infinity());
      l.setZero(nq, H);
      for (Index j0 = s0; j0 < s1; j0 += cfg.key_block) {
        const Index nk = std::min(cfg.key_block, s1 - j0);
        if (masked) {
          const auto [trho, tphi] = table_block(table, task.set);
          tile.build(cfg.basis, coords, coeffs, i0, nq, j0, nk, trho, tphi);
        }
        for (Index h = 0; h < H; ++h) {
          S.noalias() = Qs.middleCols(h * d, d) * K.block(j0, h * d, nk, d).transpose();
          if (additive) S += tile.u_head(h, nq, nk);
          // Online softmax: m_new = max(m, max_j logit); rescale old sums by exp(m - m_new).
          m_new = m.col(h).cwiseMax(S.rowwise().maxCoeff());
          corr = (m.col(h) - m_new).array().exp().matrix();
          // In place, then exp on a plain array: Eigen vectorises exp only on contiguous
          // operands, not on broadcast (colwise) expressions.
          S.array().colwise() -= m_new.array();
          S.array() = S.array().exp();
          if (masked && !additive) S.array() *= tile.u_head(h, nq, nk).array();
          l.col(h) = l.col(h).cwiseProduct(corr) + S.rowwise().sum();
          auto acc_h = acc.middleCols(h * dv, dv);
          acc_h = corr.asDiagonal() * acc_h;
          acc_h.noalias() += S * V.block(j0, h * dv, nk, dv);
          m.col(h) = m_new;
        }
      }
      for (Index h = 0; h < H; ++h)
        cache.out.block(i0, h * dv, nq, dv) =
            l.col(h).cwiseInverse().asDiagonal() * acc.middleCols(h * dv, dv);
      cache.row_max.middleRows(i0, nq) = m;
      cache.row_sum.middleRows(i0, nq) = l;
    }
  }
  cache.nonpositive_denominators = 0;
  if (masked && !additive) {
    cache.nonpositive_denominators = (cache.row_sum.array() <= T(0)).count();
    if (cache.nonpositive_denominators > 0)
      log_warning("streaming attention: ", cache.nonpositive_denominators,
                  " (row, head) denominators sum_j exp(s_ij) u_h(rho_ij) are <= 0 "
                  "(multiplicative radial mask); their outputs are not meaningful");
  }
}

template <class T>
void streaming_attention_backward(const StreamingAttentionConfig& cfg, const RaggedIndex& sets,
                                  ConstMatRef<T> Q, ConstMatRef<T> K, ConstMatRef<T> V,
                                  ConstMatRef<T> coords, ConstMatRef<T> coeffs,
                                  const StreamingAttentionCache<T>& cache, ConstMatRef<T> dout,
                                  MatRef<T> dQ, MatRef<T> dK, MatRef<T> dV, MatRef<T> dcoords,
                                  MatRef<T> dcoeffs, const RadialBasisTable<T>* table) {
  validate<T>(cfg, sets, Q, K, V, coords, coeffs);
  validate_table<T>(cfg, sets, table);
  const Index L = Q.rows(), H = cfg.heads, d = Q.cols() / H, dv = V.cols() / H;
  const bool masked = cfg.mask != DistanceMask::none;
  const bool additive = cfg.mask == DistanceMask::additive;
  const bool multiplicative = cfg.mask == DistanceMask::multiplicative;
  require(cache.out.rows() == L && cache.out.cols() == H * dv && cache.row_max.rows() == L &&
              cache.row_sum.rows() == L && cache.row_max.cols() == H,
          "streaming attention backward: the cache does not match the inputs");
  require(dout.rows() == L && dout.cols() == H * dv, "streaming attention backward: dout shape");
  require(dQ.rows() == L && dQ.cols() == Q.cols() && dK.rows() == L && dK.cols() == K.cols() &&
              dV.rows() == L && dV.cols() == V.cols(),
          "streaming attention backward: gradient shapes must match Q, K, V");
  if (masked)
    require(dcoords.rows() == L && dcoords.cols() == coords.cols() &&
                dcoeffs.rows() == coeffs.rows() && dcoeffs.cols() == coeffs.cols(),
            "streaming attention backward: dcoords/dcoeffs shapes must match coords/coeffs");
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
  const Index dc = masked ? coords.cols() : 0;

  // D_i = G_i . out_i per head, and 1 / l_i.
  Mat<T> Dvec(L, H);
  for (Index h = 0; h < H; ++h)
    Dvec.col(h) = dout.middleCols(h * dv, dv).cwiseProduct(cache.out.middleCols(h * dv, dv))
                      .rowwise().sum();
  const Mat<T> inv_l = cache.row_sum.cwiseInverse();

  // The shared recomputation of one head of one tile: E = exp(logit - m) / l, P = E (or E u),
  // Tm = dP - D, dS = P o Tm; and du for the mask.
  struct Work {
    MaskTile<T> tile;
    Mat<T> S, E, P, Tm, dS, acc;
    bool multiplicative = false;
    // The attention weights P of the current head (E itself unless the mask multiplies).
    const Mat<T>& weights() const { return multiplicative ? P : E; }
  };
  auto recompute = [&](Work& w, Index h, Index i0, Index nq, Index j0, Index nk) {
    w.S.noalias() = Q.block(i0, h * d, nq, d) * K.block(j0, h * d, nk, d).transpose();
    w.S *= scale;
    if (additive) w.S += w.tile.u_head(h, nq, nk);
    w.S.array().colwise() -= cache.row_max.col(h).segment(i0, nq).array();
    w.S.array() = w.S.array().exp();  // contiguous: vectorised exp
    w.E.noalias() = inv_l.col(h).segment(i0, nq).asDiagonal() * w.S;
    if (multiplicative) w.P = w.E.cwiseProduct(w.tile.u_head(h, nq, nk));
    w.Tm.noalias() = dout.block(i0, h * dv, nq, dv) * V.block(j0, h * dv, nk, dv).transpose();
    w.Tm.array().colwise() -= Dvec.col(h).segment(i0, nq).array();
    w.dS = w.weights().cwiseProduct(w.Tm);
    if (masked) w.tile.du_head(h, nq, nk) = additive ? w.dS : w.E.cwiseProduct(w.Tm);
  };

  // A set that fits in one query block and one key block (every QM9 molecule with the default
  // 64-row blocks) is a single tile: pass 1 then also computes its dQ and the query side of its
  // dcoords from the same recomputed tile, and pass 2 skips it. Same operations in the same
  // order as the two-pass path, so the results are bitwise the same; it saves one tile build
  // and one recomputation per head.
  auto single_tile = [&](Index set) { return sets.size(set) <= single_tile_limit(cfg); };

  // Pass 1: key blocks -> dK, dV, key side of dcoords, partial dcoeffs per key block (and dQ,
  // query side of dcoords for single-tile sets).
  const std::vector<Task> key_tasks = make_tasks(sets, cfg.key_block);
  const auto num_key_tasks = static_cast<Index>(key_tasks.size());
  std::vector<Mat<T>> dcoeff_parts(masked ? key_tasks.size() : 0);
#pragma omp parallel
  {
    Work w;
    w.multiplicative = multiplicative;
    if (masked) w.tile.uniform_step = MaskTile<T>::recurrence_step(cfg.basis);
    Mat<T> dKacc, dVacc, dQacc, grad_q;
#pragma omp for schedule(dynamic, 1)
    for (Index t = 0; t < num_key_tasks; ++t) {
      const Task& task = key_tasks[static_cast<std::size_t>(t)];
      const Index j0 = task.begin, nk = task.end - task.begin;
      const Index s0 = sets.begin(task.set), s1 = sets.end(task.set);
      const bool also_queries = single_tile(task.set);  // then i0 = j0 = s0, nq = nk
      dKacc.setZero(nk, H * d);
      dVacc.setZero(nk, H * dv);
      if (also_queries) {
        dQacc.setZero(nk, H * d);
        if (masked) grad_q.setZero(nk, dc);
      }
      Mat<T> grad_keys_t;  // dc x nk
      if (masked) {
        grad_keys_t.setZero(dc, nk);
        dcoeff_parts[static_cast<std::size_t>(t)].setZero(H, coeffs.cols());
      }
      for (Index i0 = s0; i0 < s1; i0 += cfg.query_block) {
        const Index nq = std::min(cfg.query_block, s1 - i0);
        if (masked) {
          const auto [trho, tphi] = table_block(table, task.set);
          w.tile.build(cfg.basis, coords, coeffs, i0, nq, j0, nk, trho, tphi);
          w.tile.du.resize(nq * nk, H);
        }
        for (Index h = 0; h < H; ++h) {
          recompute(w, h, i0, nq, j0, nk);
          dVacc.middleCols(h * dv, dv).noalias() += w.weights().transpose() * dout.block(i0, h * dv, nq, dv);
          dKacc.middleCols(h * d, d).noalias() += w.dS.transpose() * Q.block(i0, h * d, nq, d);
          if (also_queries) dQacc.middleCols(h * d, d).noalias() += w.dS * K.block(j0, h * d, nk, d);
        }
        if (masked) {
          dcoeff_parts[static_cast<std::size_t>(t)].noalias() += w.tile.du.transpose() * w.tile.phi;
          w.tile.pair_weights(cfg.basis, coeffs);
          // dr_j -= sum_i w_ij (r_i - r_j)
          for (Index r = 0; r < nq; ++r) {
            const auto wr = w.tile.w.segment(r * nk, nk).transpose();
            for (Index a = 0; a < dc; ++a)
              grad_keys_t.row(a).array() -=
                  wr * (coords(i0 + r, a) - w.tile.keys_t.row(a).array());
          }
          if (also_queries) accumulate_query_coords(w.tile, coords, i0, nq, nk, grad_q);
        }
      }
      dK.middleRows(j0, nk) += scale * dKacc;
      dV.middleRows(j0, nk) += dVacc;
      if (masked) dcoords.middleRows(j0, nk) += grad_keys_t.transpose();
      if (also_queries) {
        dQ.middleRows(j0, nk) += scale * dQacc;
        if (masked) dcoords.middleRows(j0, nk) += grad_q;
      }
    }
  }
  if (masked) {
    Mat<double> total = Mat<double>::Zero(coeffs.rows(), coeffs.cols());
    for (const auto& part : dcoeff_parts) total += part.template cast<double>();
    dcoeffs += total.cast<T>();
  }

  // Pass 2: query blocks -> dQ, query side of dcoords.
  const std::vector<Task> query_tasks = make_tasks(sets, cfg.query_block);
  const auto num_query_tasks = static_cast<Index>(query_tasks.size());
#pragma omp parallel
  {
    Work w;
    w.multiplicative = multiplicative;
    if (masked) w.tile.uniform_step = MaskTile<T>::recurrence_step(cfg.basis);
    Mat<T> dQacc, grad_q;
#pragma omp for schedule(dynamic, 1)
    for (Index t = 0; t < num_query_tasks; ++t) {
      const Task& task = query_tasks[static_cast<std::size_t>(t)];
      if (single_tile(task.set)) continue;  // done in pass 1
      const Index i0 = task.begin, nq = task.end - task.begin;
      const Index s0 = sets.begin(task.set), s1 = sets.end(task.set);
      dQacc.setZero(nq, H * d);
      if (masked) grad_q.setZero(nq, dc);
      for (Index j0 = s0; j0 < s1; j0 += cfg.key_block) {
        const Index nk = std::min(cfg.key_block, s1 - j0);
        if (masked) {
          w.tile.build(cfg.basis, coords, coeffs, i0, nq, j0, nk);
          w.tile.du.resize(nq * nk, H);
        }
        for (Index h = 0; h < H; ++h) {
          recompute(w, h, i0, nq, j0, nk);
          dQacc.middleCols(h * d, d).noalias() += w.dS * K.block(j0, h * d, nk, d);
        }
        if (masked) {
          w.tile.pair_weights(cfg.basis, coeffs);
          accumulate_query_coords(w.tile, coords, i0, nq, nk, grad_q);
        }
      }
      dQ.middleRows(i0, nq) += scale * dQacc;
      if (masked) dcoords.middleRows(i0, nq) += grad_q;
    }
  }
}

StreamingAttentionFlops streaming_attention_flops(const StreamingAttentionConfig& cfg,
                                                  const RaggedIndex& sets, Index d, Index dv) {
  double pairs = 0.0;
  for (Index s = 0; s < sets.num_sets(); ++s)
    pairs += static_cast<double>(sets.size(s)) * static_cast<double>(sets.size(s));
  const auto H = static_cast<double>(cfg.heads);
  const auto dd = static_cast<double>(d), dvv = static_cast<double>(dv);
  const double KH = cfg.mask == DistanceMask::none ? 0.0
                                                    : static_cast<double>(cfg.basis.size()) * H;
  StreamingAttentionFlops f;
  f.forward = pairs * (H * 2.0 * (dd + dvv) + 2.0 * KH);
  // pass 1: QK^T 2d, GV^T 2dv, P^T G 2dv, dS^T Q 2d; pass 2: QK^T 2d, GV^T 2dv, dS K 2d.
  // mask: pass 1 Phi A^T, du^T Phi, du A; pass 2 Phi A^T, du A.
  f.backward = pairs * (H * (8.0 * dd + 6.0 * dvv) + 10.0 * KH);
  return f;
}

#define FLT_EXACT_STREAMING_INSTANTIATE(T)                                                        \
  template void radial_basis_table<T>(const StreamingAttentionConfig&, const RaggedIndex&,        \
                                      ConstMatRef<T>, RadialBasisTable<T>&);                       \
  template void streaming_attention_forward<T>(                                                   \
      const StreamingAttentionConfig&, const RaggedIndex&, ConstMatRef<T>, ConstMatRef<T>,        \
      ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>, StreamingAttentionCache<T>&,                \
      const RadialBasisTable<T>*);                                                                 \
  template void streaming_attention_backward<T>(                                                  \
      const StreamingAttentionConfig&, const RaggedIndex&, ConstMatRef<T>, ConstMatRef<T>,        \
      ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>, const StreamingAttentionCache<T>&,          \
      ConstMatRef<T>, MatRef<T>, MatRef<T>, MatRef<T>, MatRef<T>, MatRef<T>,                      \
      const RadialBasisTable<T>*);

FLT_EXACT_STREAMING_INSTANTIATE(float)
FLT_EXACT_STREAMING_INSTANTIATE(double)
#undef FLT_EXACT_STREAMING_INSTANTIATE

}  // namespace flt::exact
