// N rows, D = H d channels, K radial nodes, P pairs; the equations are in near_field.hpp.
#include "flt/near_field.hpp"

#include "core/error.hpp"
#include "core/parallel.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace flt::attn {

void NearFieldConfig::validate() const {
  if (heads < 1 || head_dim < 1)
    throw ConfigError("near field: heads and head_dim must be >= 1, got " + std::to_string(heads) +
                      " and " + std::to_string(head_dim));
  nodes.validate();
  if (!(cutoff > 0) || !std::isfinite(cutoff))
    throw ConfigError("near field: the cutoff must be positive and finite");
}

namespace {

// Row pointers into row-major matrices and references (const references have no lvalue operator()).
template <class M>
auto row_ptr(M& m, Index i) {
  return m.data() + i * m.outerStride();
}

// Pairs per piece of work: the filters of a piece (pairs x (K + 4D) values, twice) stay in L2.
constexpr Index kPairsPerPiece = 512;

// Row groups: each group is processed by one thread, in order, and owns one partial sum of the
// filter-weight gradients. The group size depends on N only (never on the thread count).
Index group_rows(Index n) { return std::max<Index>(32, (n + 63) / 64); }

// Geometry, radial basis and filters of the consecutive pairs [p0, p0 + np).
template <class T>
struct PairBlock {
  Index p0 = 0, np = 0;
  std::vector<double> rho, env, denv;  // np
  Mat<double> unit;                    // np x 3: (r_source - r_target) / rho (0 when rho = 0)
  Mat<T> basis, dbasis;                // np x K (dbasis only when derivatives are wanted)
  Mat<T> zk, fk;                       // np x D: pre-activation and filter
  Mat<T> zv, fv;                       // np x V
  std::vector<double> tmp_b, tmp_db;
};

template <class T>
void build_pairs(const NearFieldConfig& config, const NeighbourList& list, ConstMatRef<double> coords,
                 const NearFieldWeights<T>& w, Index p0, Index p1, bool derivatives, PairBlock<T>& b) {
  const Index np = p1 - p0, K = config.nodes.count;
  b.p0 = p0;
  b.np = np;
  b.rho.resize(static_cast<std::size_t>(np));
  b.env.resize(static_cast<std::size_t>(np));
  b.denv.resize(static_cast<std::size_t>(np));
  b.unit.resize(np, 3);
  b.basis.resize(np, K);
  if (derivatives) b.dbasis.resize(np, K);
  b.tmp_b.resize(static_cast<std::size_t>(K));
  b.tmp_db.resize(static_cast<std::size_t>(K));
  for (Index p = 0; p < np; ++p) {
    const auto pi = static_cast<std::size_t>(p0 + p);
    const Index i = list.target[pi], j = list.source[pi];
    const double dx = coords(j, 0) - coords(i, 0), dy = coords(j, 1) - coords(i, 1),
                 dz = coords(j, 2) - coords(i, 2);
    const double rho = std::sqrt(dx * dx + dy * dy + dz * dz);
    const auto ps = static_cast<std::size_t>(p);
    b.rho[ps] = rho;
    if (rho > 0) {
      b.unit(p, 0) = dx / rho;
      b.unit(p, 1) = dy / rho;
      b.unit(p, 2) = dz / rho;
    } else {
      b.unit.row(p).setZero();
    }
    b.env[ps] = envelope(rho, config.cutoff);
    b.denv[ps] = envelope_derivative(rho, config.cutoff);
    radial_basis(config.nodes, rho, b.tmp_b.data(), derivatives ? b.tmp_db.data() : nullptr);
    for (Index n = 0; n < K; ++n) {
      b.basis(p, n) = static_cast<T>(b.tmp_b[static_cast<std::size_t>(n)]);
      if (derivatives) b.dbasis(p, n) = static_cast<T>(b.tmp_db[static_cast<std::size_t>(n)]);
    }
  }
  const Index D = config.width(), V = config.value_width();
  b.zk.resize(np, D);
  b.zk.noalias() = b.basis * w.Wk;
  b.zk.rowwise() += Eigen::Map<const RowVec<T>>(w.bk.data(), D);
  b.fk.resize(np, D);
  activation_forward<T>(config.filter_activation, b.zk, b.fk);
  b.zv.resize(np, V);
  b.zv.noalias() = b.basis * w.Wv;
  b.zv.rowwise() += Eigen::Map<const RowVec<T>>(w.bv.data(), V);
  b.fv.resize(np, V);
  activation_forward<T>(config.filter_activation, b.zv, b.fv);
}

// Pieces of consecutive rows [r0, r1) of the group [g0, g1) with about kPairsPerPiece pairs each.
template <class F>
void for_each_piece(const NeighbourList& list, Index g0, Index g1, F&& f) {
  Index r0 = g0;
  while (r0 < g1) {
    Index r1 = r0 + 1;
    while (r1 < g1 && list.offsets[static_cast<std::size_t>(r1 + 1)] -
                              list.offsets[static_cast<std::size_t>(r0)] <= kPairsPerPiece)
      ++r1;
    f(r0, r1);
    r0 = r1;
  }
}

template <class T>
void check_inputs(const NearFieldConfig& config, const NeighbourList& list, ConstMatRef<double> coords,
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
  require(list.num_rows() == N, "near field: the neighbour list has " +
                                    std::to_string(list.num_rows()) + " rows, the inputs " +
                                    std::to_string(N));
  require(std::abs(list.cutoff - config.cutoff) <= 1e-12 * config.cutoff,
          "near field: the neighbour list was built for another cutoff");
}

}  // namespace

template <class T>
void near_field_forward(const NearFieldConfig& config, const NeighbourList& list,
                        ConstMatRef<double> coords, ConstMatRef<T> q, ConstMatRef<T> k,
                        ConstMatRef<T> v, ConstMatRef<T> vec, const NearFieldWeights<T>& w,
                        MatRef<T> out, MatRef<T> dvec, NearFieldCache<T>& cache) {
  check_inputs<T>(config, list, coords, q, k, v, vec, w);
  const Index N = q.rows(), H = config.heads, d = config.head_dim, D = config.width();
  require(out.rows() == N && out.cols() == D, "near field: out must be N x D");
  if (config.vectors) require(dvec.rows() == N && dvec.cols() == 3 * D, "near field: dvec must be N x 3D");
  cache.row_max.resize(N, H);
  cache.den.resize(N, H);
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
  parallel_chunks(N, group_rows(N), [&](Index, Index g0, Index g1) {
    PairBlock<T> b;
    std::vector<T> logit, ex;
    for_each_piece(list, g0, g1, [&](Index r0, Index r1) {
      const Index p0 = list.offsets[static_cast<std::size_t>(r0)];
      const Index p1 = list.offsets[static_cast<std::size_t>(r1)];
      build_pairs<T>(config, list, coords, w, p0, p1, false, b);
      logit.resize(static_cast<std::size_t>((p1 - p0) * H));
      ex.resize(logit.size());
      for (Index i = r0; i < r1; ++i) {
        const Index a0 = list.offsets[static_cast<std::size_t>(i)] - p0;
        const Index a1 = list.offsets[static_cast<std::size_t>(i) + 1] - p0;
        const T* qi = row_ptr(q, i);
        for (Index p = a0; p < a1; ++p) {
          const Index j = list.source[static_cast<std::size_t>(p0 + p)];
          const T* kj = row_ptr(k, j);
          const T* fk = row_ptr(b.fk, p);
          for (Index h = 0; h < H; ++h) {
            T s = 0;
            for (Index c = h * d; c < (h + 1) * d; ++c) s += qi[c] * kj[c] * fk[c];
            logit[static_cast<std::size_t>(p * H + h)] = s * scale;
          }
        }
        T* oi = row_ptr(out, i);
        std::fill(oi, oi + D, T(0));
        for (Index h = 0; h < H; ++h) {
          T m = w.sink[static_cast<std::size_t>(h)];
          for (Index p = a0; p < a1; ++p) m = std::max(m, logit[static_cast<std::size_t>(p * H + h)]);
          T den = std::exp(w.sink[static_cast<std::size_t>(h)] - m);
          for (Index p = a0; p < a1; ++p) {
            const auto ph = static_cast<std::size_t>(p * H + h);
            ex[ph] = static_cast<T>(b.env[static_cast<std::size_t>(p)]) * std::exp(logit[ph] - m);
            den += ex[ph];
          }
          cache.row_max(i, h) = m;
          cache.den(i, h) = den;
          const T inv = T(1) / den;
          for (Index p = a0; p < a1; ++p) {
            const Index j = list.source[static_cast<std::size_t>(p0 + p)];
            const T alpha = ex[static_cast<std::size_t>(p * H + h)] * inv;
            const T* vs = row_ptr(v, j);
            const T* fs = row_ptr(b.fv, p);
            for (Index c = h * d; c < (h + 1) * d; ++c) oi[c] += alpha * vs[c] * fs[c];
          }
        }
        if (config.vectors) {
          T* gi = row_ptr(dvec, i);
          std::fill(gi, gi + 3 * D, T(0));
          for (Index p = a0; p < a1; ++p) {
            const Index j = list.source[static_cast<std::size_t>(p0 + p)];
            const T e = static_cast<T>(b.env[static_cast<std::size_t>(p)]);
            const T* va = row_ptr(v, j) + D;
            const T* vb = row_ptr(v, j) + 2 * D;
            const T* fa = row_ptr(b.fv, p) + D;
            const T* fb = row_ptr(b.fv, p) + 2 * D;
            const T* vj = row_ptr(vec, j);
            for (Index x = 0; x < 3; ++x) {
              const T ux = static_cast<T>(b.unit(p, x));
              T* gx = gi + x * D;
              const T* vjx = vj + x * D;
              for (Index c = 0; c < D; ++c) gx[c] += e * (va[c] * fa[c] * vjx[c] + vb[c] * fb[c] * ux);
            }
          }
        }
      }
    });
  });
  cache.out = out;
}

template <class T>
void near_field_backward(const NearFieldConfig& config, const NeighbourList& list,
                         ConstMatRef<double> coords, ConstMatRef<T> q, ConstMatRef<T> k,
                         ConstMatRef<T> v, ConstMatRef<T> vec, const NearFieldWeights<T>& w,
                         const NearFieldCache<T>& cache, ConstMatRef<T> dout, ConstMatRef<T> ddvec,
                         MatRef<T> dq, MatRef<T> dk, MatRef<T> dv, MatRef<T> dvec_in,
                         MatRef<T> dcoords, NearFieldGrads<T>& grads) {
  check_inputs<T>(config, list, coords, q, k, v, vec, w);
  const Index N = q.rows(), H = config.heads, d = config.head_dim, D = config.width();
  const Index V = config.value_width(), K = config.nodes.count;
  const bool vectors = config.vectors;
  const bool want_coords = dcoords.size() != 0;
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
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));

  // D_ih = sum_{c in h} G_ic out_ic, for every row (pass 2 reads other rows' values).
  Mat<T> Dg(N, H);
  for (Index i = 0; i < N; ++i)
    for (Index h = 0; h < H; ++h) {
      T s = 0;
      for (Index c = h * d; c < (h + 1) * d; ++c) s += dout(i, c) * cache.out(i, c);
      Dg(i, h) = s;
    }

  // The gradient of one pair (i -> j) with respect to its filters, envelope and direction, given
  // the pair's geometry and filters. Accumulates the pair's share of dq_i (pass 1) or of
  // dk_j, dv_j, dvec_j (pass 2) as requested.
  struct PairGrad {
    std::vector<T> dfk, dfv;  // D, V
    double de = 0;
    double du[3] = {0, 0, 0};
  };

  const Index G = group_rows(N);
  const Index groups = chunk_count(N, G);
  std::vector<Mat<T>> part_Wk(static_cast<std::size_t>(groups)), part_Wv(static_cast<std::size_t>(groups));
  std::vector<Vec<T>> part_bk(static_cast<std::size_t>(groups)), part_bv(static_cast<std::size_t>(groups));
  Mat<T> dsink_rows = Mat<T>::Zero(N, H);

  // pass == 1: destinations (rows are i); pass == 2: sources (rows are j, pairs listed as j -> i
  // stand for their reverse i -> j, which has the same distance and the opposite direction).
  auto run_pass = [&](int pass) {
    parallel_chunks(N, G, [&](Index g, Index g0, Index g1) {
      PairBlock<T> b;
      Mat<T> dfk, dfv, dzk, dzv, dB;
      std::vector<double> de;
      Mat<double> du;
      if (pass == 1) {
        part_Wk[static_cast<std::size_t>(g)] = Mat<T>::Zero(K, D);
        part_Wv[static_cast<std::size_t>(g)] = Mat<T>::Zero(K, V);
        part_bk[static_cast<std::size_t>(g)] = Vec<T>::Zero(D);
        part_bv[static_cast<std::size_t>(g)] = Vec<T>::Zero(V);
      }
      const bool need_dfilter = pass == 1 || want_coords;
      for_each_piece(list, g0, g1, [&](Index r0, Index r1) {
        const Index p0 = list.offsets[static_cast<std::size_t>(r0)];
        const Index p1 = list.offsets[static_cast<std::size_t>(r1)];
        const Index np = p1 - p0;
        build_pairs<T>(config, list, coords, w, p0, p1, want_coords, b);
        if (need_dfilter) {
          dfk.setZero(np, D);
          dfv.setZero(np, V);
          de.assign(static_cast<std::size_t>(np), 0.0);
          du.setZero(np, 3);
        }
        for (Index row = r0; row < r1; ++row) {
          const Index a0 = list.offsets[static_cast<std::size_t>(row)] - p0;
          const Index a1 = list.offsets[static_cast<std::size_t>(row) + 1] - p0;
          for (Index p = a0; p < a1; ++p) {
            const Index other = list.source[static_cast<std::size_t>(p0 + p)];
            // The pair i -> j in the notation of the header.
            const Index i = pass == 1 ? row : other;
            const Index j = pass == 1 ? other : row;
            const double sign = pass == 1 ? 1.0 : -1.0;  // unit vector of i -> j
            const T e = static_cast<T>(b.env[static_cast<std::size_t>(p)]);
            const T* qi = row_ptr(q, i);
            const T* kj = row_ptr(k, j);
            const T* vs = row_ptr(v, j);
            const T* fk = row_ptr(b.fk, p);
            const T* fs = row_ptr(b.fv, p);
            const T* Gi = row_ptr(dout, i);
            double de_p = 0.0;
            for (Index h = 0; h < H; ++h) {
              T lg = 0, gx = 0;
              for (Index c = h * d; c < (h + 1) * d; ++c) {
                lg += qi[c] * kj[c] * fk[c];
                gx += Gi[c] * vs[c] * fs[c];
              }
              lg *= scale;
              const T ex = std::exp(lg - cache.row_max(i, h)) / cache.den(i, h);
              const T alpha = e * ex;
              const T delta = gx - Dg(i, h);
              const T dlogit = alpha * delta;
              de_p += static_cast<double>(ex * delta);
              if (pass == 1) {
                T* dqi = row_ptr(dq, i);
                for (Index c = h * d; c < (h + 1) * d; ++c) dqi[c] += dlogit * kj[c] * fk[c] * scale;
              } else {
                T* dkj = row_ptr(dk, j);
                T* dvs = row_ptr(dv, j);
                for (Index c = h * d; c < (h + 1) * d; ++c) {
                  dkj[c] += dlogit * qi[c] * fk[c] * scale;
                  dvs[c] += alpha * Gi[c] * fs[c];
                }
              }
              if (need_dfilter) {
                T* dfkp = row_ptr(dfk, p);
                T* dfsp = row_ptr(dfv, p);
                for (Index c = h * d; c < (h + 1) * d; ++c) {
                  dfkp[c] = dlogit * qi[c] * kj[c] * scale;
                  dfsp[c] = alpha * Gi[c] * vs[c];
                }
              }
            }
            if (vectors) {
              const T* va = row_ptr(v, j) + D;
              const T* vb = row_ptr(v, j) + 2 * D;
              const T* fa = row_ptr(b.fv, p) + D;
              const T* fb = row_ptr(b.fv, p) + 2 * D;
              const T* vj = row_ptr(vec, j);
              const T* Gv = row_ptr(ddvec, i);
              const T ux[3] = {static_cast<T>(sign * b.unit(p, 0)), static_cast<T>(sign * b.unit(p, 1)),
                               static_cast<T>(sign * b.unit(p, 2))};
              T* dva = pass == 2 ? row_ptr(dv, j) + D : nullptr;
              T* dvb = pass == 2 ? row_ptr(dv, j) + 2 * D : nullptr;
              T* dvj = pass == 2 ? row_ptr(dvec_in, j) : nullptr;
              T* dfa = need_dfilter ? row_ptr(dfv, p) + D : nullptr;
              T* dfb = need_dfilter ? row_ptr(dfv, p) + 2 * D : nullptr;
              double du0 = 0, du1 = 0, du2 = 0, dev = 0;
              for (Index c = 0; c < D; ++c) {
                const T gx0 = Gv[c], gx1 = Gv[D + c], gx2 = Gv[2 * D + c];
                const T ga = gx0 * vj[c] + gx1 * vj[D + c] + gx2 * vj[2 * D + c];
                const T gb = gx0 * ux[0] + gx1 * ux[1] + gx2 * ux[2];
                if (pass == 2) {
                  dva[c] += e * ga * fa[c];
                  dvb[c] += e * gb * fb[c];
                  const T s = e * va[c] * fa[c];
                  dvj[c] += s * gx0;
                  dvj[D + c] += s * gx1;
                  dvj[2 * D + c] += s * gx2;
                }
                if (need_dfilter) {
                  dfa[c] = e * ga * va[c];
                  dfb[c] = e * gb * vb[c];
                  dev += static_cast<double>(ga * va[c] * fa[c] + gb * vb[c] * fb[c]);
                  const T t = e * vb[c] * fb[c];
                  du0 += static_cast<double>(t * gx0);
                  du1 += static_cast<double>(t * gx1);
                  du2 += static_cast<double>(t * gx2);
                }
              }
              de_p += dev;
              if (need_dfilter) {
                du(p, 0) = du0;
                du(p, 1) = du1;
                du(p, 2) = du2;
              }
            }
            if (need_dfilter) de[static_cast<std::size_t>(p)] = de_p;
          }
          if (pass == 1) {
            for (Index h = 0; h < H; ++h)
              dsink_rows(row, h) = -std::exp(w.sink[static_cast<std::size_t>(h)] - cache.row_max(row, h)) /
                                   cache.den(row, h) * Dg(row, h);
          }
        }
        if (!need_dfilter) return;
        dzk.resize(np, D);
        dzk.setZero();
        activation_backward<T>(config.filter_activation, b.zk, dfk, dzk);
        dzv.resize(np, V);
        dzv.setZero();
        activation_backward<T>(config.filter_activation, b.zv, dfv, dzv);
        if (pass == 1) {
          const auto gs = static_cast<std::size_t>(g);
          part_Wk[gs].noalias() += b.basis.transpose() * dzk;
          part_Wv[gs].noalias() += b.basis.transpose() * dzv;
          part_bk[gs] += dzk.colwise().sum().transpose();
          part_bv[gs] += dzv.colwise().sum().transpose();
        }
        if (!want_coords) return;
        dB.resize(np, K);
        dB.noalias() = dzk * w.Wk.transpose();
        dB.noalias() += dzv * w.Wv.transpose();
        for (Index p = 0; p < np; ++p) {
          const auto pi = static_cast<std::size_t>(p0 + p);
          const Index tgt = list.target[pi], src = list.source[pi];
          const double rho = b.rho[static_cast<std::size_t>(p)];
          if (tgt == src || rho <= 0) continue;  // the self pair does not depend on the coordinates
          double drho = de[static_cast<std::size_t>(p)] * b.denv[static_cast<std::size_t>(p)];
          for (Index n = 0; n < K; ++n) drho += static_cast<double>(dB(p, n) * b.dbasis(p, n));
          // Pair i -> j: rvec = r_j - r_i, u = rvec / rho; dL/drvec = drho u + (du - (du.u) u) / rho.
          const double sign = pass == 1 ? 1.0 : -1.0;
          const double u[3] = {sign * b.unit(p, 0), sign * b.unit(p, 1), sign * b.unit(p, 2)};
          const double dudot = du(p, 0) * u[0] + du(p, 1) * u[1] + du(p, 2) * u[2];
          for (Index x = 0; x < 3; ++x) {
            const double gr = drho * u[x] + (du(p, x) - dudot * u[x]) / rho;
            // Pass 1 owns row i (= tgt): dr_i -= g; pass 2 owns row j (= tgt): dr_j += g.
            dcoords(tgt, x) += static_cast<T>(pass == 1 ? -gr : gr);
          }
        }
      });
    });
  };
  run_pass(1);
  run_pass(2);
  for (Index g = 0; g < groups; ++g) {
    const auto gs = static_cast<std::size_t>(g);
    grads.Wk += part_Wk[gs];
    grads.Wv += part_Wv[gs];
    for (Index c = 0; c < D; ++c) grads.bk[static_cast<std::size_t>(c)] += part_bk[gs](c);
    for (Index c = 0; c < V; ++c) grads.bv[static_cast<std::size_t>(c)] += part_bv[gs](c);
  }
  for (Index h = 0; h < H; ++h) {
    double s = 0;
    for (Index i = 0; i < N; ++i) s += static_cast<double>(dsink_rows(i, h));
    grads.sink[static_cast<std::size_t>(h)] += static_cast<T>(s);
  }
}

void near_field_forward_reference(const NearFieldConfig& config, const NeighbourList& list,
                                  ConstMatRef<double> coords, ConstMatRef<double> q,
                                  ConstMatRef<double> k, ConstMatRef<double> v,
                                  ConstMatRef<double> vec, const NearFieldWeights<double>& w,
                                  MatRef<double> out, MatRef<double> dvec) {
  check_inputs<double>(config, list, coords, q, k, v, vec, w);
  const Index N = q.rows(), H = config.heads, d = config.head_dim, D = config.width();
  const Index V = config.value_width(), K = config.nodes.count;
  auto act = [&](double z) {
    Mat<double> x(1, 1), y(1, 1);
    x(0, 0) = z;
    activation_forward<double>(config.filter_activation, x, y);
    return y(0, 0);
  };
  out.setZero();
  if (config.vectors) dvec.setZero();
  std::vector<double> basis(static_cast<std::size_t>(K));
  for (Index i = 0; i < N; ++i) {
    const auto i0 = static_cast<std::size_t>(list.offsets[static_cast<std::size_t>(i)]);
    const auto i1 = static_cast<std::size_t>(list.offsets[static_cast<std::size_t>(i) + 1]);
    // Every pair quantity of row i, materialised.
    std::vector<double> env, logits;  // logits: pair-major, H per pair
    std::vector<std::vector<double>> fk, fv;
    std::vector<Eigen::Vector3d> unit;
    for (std::size_t p = i0; p < i1; ++p) {
      const Index j = list.source[p];
      const Eigen::Vector3d r = (coords.row(j) - coords.row(i)).transpose();
      const double rho = r.norm();
      unit.push_back(rho > 0 ? Eigen::Vector3d(r / rho) : Eigen::Vector3d::Zero());
      env.push_back(envelope(rho, config.cutoff));
      radial_basis(config.nodes, rho, basis.data(), nullptr);
      std::vector<double> a(static_cast<std::size_t>(D)), b(static_cast<std::size_t>(V));
      for (Index c = 0; c < D; ++c) {
        double z = w.bk[static_cast<std::size_t>(c)];
        for (Index n = 0; n < K; ++n) z += basis[static_cast<std::size_t>(n)] * w.Wk(n, c);
        a[static_cast<std::size_t>(c)] = act(z);
      }
      for (Index c = 0; c < V; ++c) {
        double z = w.bv[static_cast<std::size_t>(c)];
        for (Index n = 0; n < K; ++n) z += basis[static_cast<std::size_t>(n)] * w.Wv(n, c);
        b[static_cast<std::size_t>(c)] = act(z);
      }
      for (Index h = 0; h < H; ++h) {
        double s = 0;
        for (Index c = h * d; c < (h + 1) * d; ++c) s += q(i, c) * k(j, c) * a[static_cast<std::size_t>(c)];
        logits.push_back(s / std::sqrt(static_cast<double>(d)));
      }
      fk.push_back(std::move(a));
      fv.push_back(std::move(b));
    }
    const std::size_t n = i1 - i0;
    for (Index h = 0; h < H; ++h) {
      // softmax over the pairs and the sink (a zero value), weights e_ij exp(logit)
      double m = w.sink[static_cast<std::size_t>(h)];
      for (std::size_t p = 0; p < n; ++p) m = std::max(m, logits[p * static_cast<std::size_t>(H) + static_cast<std::size_t>(h)]);
      double den = std::exp(w.sink[static_cast<std::size_t>(h)] - m);
      for (std::size_t p = 0; p < n; ++p)
        den += env[p] * std::exp(logits[p * static_cast<std::size_t>(H) + static_cast<std::size_t>(h)] - m);
      for (std::size_t p = 0; p < n; ++p) {
        const Index j = list.source[i0 + p];
        const double alpha =
            env[p] * std::exp(logits[p * static_cast<std::size_t>(H) + static_cast<std::size_t>(h)] - m) / den;
        for (Index c = h * d; c < (h + 1) * d; ++c) out(i, c) += alpha * v(j, c) * fv[p][static_cast<std::size_t>(c)];
      }
    }
    if (!config.vectors) continue;
    for (std::size_t p = 0; p < n; ++p) {
      const Index j = list.source[i0 + p];
      for (Index x = 0; x < 3; ++x)
        for (Index c = 0; c < D; ++c)
          dvec(i, x * D + c) += env[p] * (v(j, D + c) * fv[p][static_cast<std::size_t>(D + c)] * vec(j, x * D + c) +
                                          v(j, 2 * D + c) * fv[p][static_cast<std::size_t>(2 * D + c)] * unit[p](x));
    }
  }
}

#define FLT_NEAR_FIELD_INSTANTIATE(T)                                                              \
  template void near_field_forward<T>(const NearFieldConfig&, const NeighbourList&,                \
                                      ConstMatRef<double>, ConstMatRef<T>, ConstMatRef<T>,         \
                                      ConstMatRef<T>, ConstMatRef<T>, const NearFieldWeights<T>&,  \
                                      MatRef<T>, MatRef<T>, NearFieldCache<T>&);                   \
  template void near_field_backward<T>(                                                            \
      const NearFieldConfig&, const NeighbourList&, ConstMatRef<double>, ConstMatRef<T>,           \
      ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>, const NearFieldWeights<T>&,                  \
      const NearFieldCache<T>&, ConstMatRef<T>, ConstMatRef<T>, MatRef<T>, MatRef<T>, MatRef<T>,   \
      MatRef<T>, MatRef<T>, NearFieldGrads<T>&);
FLT_NEAR_FIELD_INSTANTIATE(float)
FLT_NEAR_FIELD_INSTANTIATE(double)
#undef FLT_NEAR_FIELD_INSTANTIATE

}  // namespace flt::attn
