// N tokens, H heads, d per-head width, m Performer features, c = d + 1 extended value width.
// Multi-head Performer attention without a mask (linear attention) or with an exact Toeplitz mask
// (FFTW); equations in kernel_attention.hpp.
#include "attention/kernel_attention.hpp"

#include "core/error.hpp"
#include "attention/performer.hpp"

#include <algorithm>
#include <cmath>
#include <exception>
#include <span>
#include <string>

namespace flt::attn {

namespace {

constexpr Index kLinearBlock = 64;  // rows per causal block (tile of the masked products)

// Lower-triangular mask (incl. diagonal) in place on a square block.
template <class T>
void keep_lower(Mat<T>& A) {
  for (Index i = 0; i < A.rows(); ++i)
    for (Index j = i + 1; j < A.cols(); ++j) A(i, j) = T(0);
}

// The grid of one set and the offset of its mask inside the full mask.
struct SetGrid {
  exact::ToeplitzGrid grid;
  Index mask_offset = 0;
};

SetGrid set_grid(const KernelGrid& g, Index n) {
  SetGrid s;
  if (g.image) {
    s.grid = exact::ToeplitzGrid::image(g.height, g.width);
  } else {
    s.grid = exact::ToeplitzGrid::sequence(n, g.causal);
    s.mask_offset = g.max_length - n;  // offset -(n-1) sits at full index max_length - n
  }
  return s;
}

void check_sets(const KernelGrid& g, const RaggedIndex& sets) {
  for (Index s = 0; s < sets.num_sets(); ++s) {
    const Index n = sets.size(s);
    if (n == 0) throw InvalidArgument("kernel attention: set " + std::to_string(s) + " is empty");
    if (g.image) {
      if (n != g.height * g.width)
        throw InvalidArgument("kernel attention: set " + std::to_string(s) + " has " +
                              std::to_string(n) + " tokens, the image grid needs " +
                              std::to_string(g.height * g.width));
    } else if (n > g.max_length) {
      throw InvalidArgument("kernel attention: set " + std::to_string(s) + " has " +
                            std::to_string(n) + " tokens, more than the mask length " +
                            std::to_string(g.max_length));
    }
  }
}

void rethrow_first(const std::vector<std::exception_ptr>& errors) {
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace

exact::ToeplitzGrid KernelGrid::full() const {
  return image ? exact::ToeplitzGrid::image(height, width)
               : exact::ToeplitzGrid::sequence(max_length, causal);
}

template <class T>
void linear_attention_forward(ConstMatRef<T> PhiQ, ConstMatRef<T> PhiK, ConstMatRef<T> Vp,
                              bool causal, MatRef<T> out) {
  const Index n = PhiQ.rows(), m = PhiQ.cols(), c = Vp.cols();
  require(PhiK.rows() == n && PhiK.cols() == m && Vp.rows() == n && out.rows() == n &&
              out.cols() == c,
          "linear_attention_forward: shape mismatch");
  if (!causal) {
    const Mat<double> S = (PhiK.transpose() * Vp).template cast<double>();
    out.noalias() = PhiQ * S.template cast<T>();
    return;
  }
  Mat<double> S = Mat<double>::Zero(m, c);
  Mat<T> St(m, c), A;
  for (Index b0 = 0; b0 < n; b0 += kLinearBlock) {
    const Index nb = std::min(kLinearBlock, n - b0);
    St = S.template cast<T>();
    A.noalias() = PhiQ.middleRows(b0, nb) * PhiK.middleRows(b0, nb).transpose();
    keep_lower(A);
    out.middleRows(b0, nb).noalias() = PhiQ.middleRows(b0, nb) * St;
    out.middleRows(b0, nb).noalias() += A * Vp.middleRows(b0, nb);
    S += (PhiK.middleRows(b0, nb).transpose() * Vp.middleRows(b0, nb)).template cast<double>();
  }
}

template <class T>
void linear_attention_backward(ConstMatRef<T> PhiQ, ConstMatRef<T> PhiK, ConstMatRef<T> Vp,
                               ConstMatRef<T> dN, bool causal, MatRef<T> dPhiQ, MatRef<T> dPhiK,
                               MatRef<T> dVp) {
  const Index n = PhiQ.rows(), m = PhiQ.cols(), c = Vp.cols();
  require(dN.rows() == n && dN.cols() == c && dPhiQ.rows() == n && dPhiQ.cols() == m &&
              dPhiK.rows() == n && dPhiK.cols() == m && dVp.rows() == n && dVp.cols() == c,
          "linear_attention_backward: shape mismatch");
  if (!causal) {
    const Mat<T> S = (PhiK.transpose() * Vp).template cast<double>().template cast<T>();
    const Mat<T> U = (PhiQ.transpose() * dN).template cast<double>().template cast<T>();
    dPhiQ.noalias() += dN * S.transpose();
    dPhiK.noalias() += Vp * U.transpose();
    dVp.noalias() += PhiK * U;
    return;
  }
  Mat<double> acc = Mat<double>::Zero(m, c);
  Mat<T> At(m, c), M, A;
  // Forward order: dphiQ_b = dN_b S_<b^T + tril(dN_b V'_b^T) phiK_b.
  for (Index b0 = 0; b0 < n; b0 += kLinearBlock) {
    const Index nb = std::min(kLinearBlock, n - b0);
    At = acc.template cast<T>();
    M.noalias() = dN.middleRows(b0, nb) * Vp.middleRows(b0, nb).transpose();
    keep_lower(M);
    dPhiQ.middleRows(b0, nb).noalias() += dN.middleRows(b0, nb) * At.transpose();
    dPhiQ.middleRows(b0, nb).noalias() += M * PhiK.middleRows(b0, nb);
    acc += (PhiK.middleRows(b0, nb).transpose() * Vp.middleRows(b0, nb)).template cast<double>();
  }
  // Reverse order: U_>b = sum_{later blocks} phiQ^T dN.
  acc.setZero();
  const Index blocks = (n + kLinearBlock - 1) / kLinearBlock;
  for (Index blk = blocks; blk-- > 0;) {
    const Index b0 = blk * kLinearBlock, nb = std::min(kLinearBlock, n - b0);
    At = acc.template cast<T>();
    M.noalias() = dN.middleRows(b0, nb) * Vp.middleRows(b0, nb).transpose();
    keep_lower(M);
    A.noalias() = PhiQ.middleRows(b0, nb) * PhiK.middleRows(b0, nb).transpose();
    keep_lower(A);
    dPhiK.middleRows(b0, nb).noalias() += Vp.middleRows(b0, nb) * At.transpose();
    dPhiK.middleRows(b0, nb).noalias() += M.transpose() * PhiQ.middleRows(b0, nb);
    dVp.middleRows(b0, nb).noalias() += PhiK.middleRows(b0, nb) * At;
    dVp.middleRows(b0, nb).noalias() += A.transpose() * dN.middleRows(b0, nb);
    acc += (PhiQ.middleRows(b0, nb).transpose() * dN.middleRows(b0, nb)).template cast<double>();
  }
}

template <class T>
void kernel_attention_forward(const std::vector<Mat<T>>& omega, const RaggedIndex& sets,
                              const KernelGrid& grid, ConstMatRef<T> Q, ConstMatRef<T> K,
                              ConstMatRef<T> V, const std::vector<Vec<T>>& masks,
                              KernelAttentionCache<T>& cache) {
  const Index H = static_cast<Index>(omega.size());
  require(H > 0, "kernel_attention_forward: no heads");
  const Index m = omega[0].rows(), d = omega[0].cols(), N = sets.total_rows();
  require(Q.rows() == N && K.rows() == N && V.rows() == N && Q.cols() == H * d &&
              K.cols() == H * d && V.cols() == H * d,
          "kernel_attention_forward: Q, K, V must be N x (H d)");
  const bool masked = !masks.empty();
  if (masked) {
    require(static_cast<Index>(masks.size()) == H, "kernel_attention_forward: one mask per head");
    for (const auto& mk : masks)
      require(mk.size() == grid.mask_size(), "kernel_attention_forward: mask size mismatch");
    check_sets(grid, sets);
  }
  for (Index s = 0; s < sets.num_sets(); ++s)
    if (sets.size(s) == 0)
      throw InvalidArgument("kernel attention: set " + std::to_string(s) + " is empty");
  const Index S = sets.num_sets(), pairs = S * H;
  cache.out.resize(N, H * d);
  cache.den.resize(N, H);
  cache.phi_q.resize(N, H * m);
  cache.phi_k.resize(N, H * m);
  cache.key_stab.assign(static_cast<std::size_t>(pairs), 0.0);
  std::vector<Index> nonpos(static_cast<std::size_t>(pairs), 0);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(pairs));
  const T scale = static_cast<T>(std::pow(static_cast<double>(d), -0.25));
#pragma omp parallel for schedule(dynamic) if (pairs > 1)
  for (Index p = 0; p < pairs; ++p) {
    try {
      const Index s = p / H, h = p % H, r0 = sets.begin(s), n = sets.size(s);
      const Mat<T> X = Q.block(r0, h * d, n, d) * scale;
      const Mat<T> Y = K.block(r0, h * d, n, d) * scale;
      const Mat<T>& W = omega[static_cast<std::size_t>(h)];
      Mat<T> phq, phk;
      performer_features<T>(X, W, true, 0.0, phq);
      const double stab = performer_logit_max<T>(Y, W);
      performer_features<T>(Y, W, false, stab, phk);
      cache.key_stab[static_cast<std::size_t>(p)] = stab;
      cache.phi_q.block(r0, h * m, n, m) = phq;
      cache.phi_k.block(r0, h * m, n, m) = phk;
      if (masked) {
        const SetGrid sg = set_grid(grid, n);
        const auto& mk = masks[static_cast<std::size_t>(h)];
        const std::span<const T> mspan(mk.data() + sg.mask_offset,
                                       static_cast<std::size_t>(sg.grid.mask_size()));
        exact::ToeplitzForward<T> fwd;
        exact::toeplitz_attention_forward<T>(sg.grid, phq, phk, V.block(r0, h * d, n, d), mspan,
                                             fwd);
        cache.out.block(r0, h * d, n, d) = fwd.out;
        cache.den.block(r0, h, n, 1) = fwd.den;
        nonpos[static_cast<std::size_t>(p)] = fwd.nonpositive_denominators;
      } else {
        Mat<T> Vp(n, d + 1);
        Vp.leftCols(d) = V.block(r0, h * d, n, d);
        Vp.col(d).setOnes();
        Mat<T> Np(n, d + 1);
        linear_attention_forward<T>(phq, phk, Vp, grid.causal, Np);
        for (Index i = 0; i < n; ++i) {
          const T den = Np(i, d);
          cache.den(r0 + i, h) = den;
          cache.out.block(r0 + i, h * d, 1, d) = Np.block(i, 0, 1, d) / den;
        }
      }
    } catch (...) {
      errors[static_cast<std::size_t>(p)] = std::current_exception();
    }
  }
  rethrow_first(errors);
  cache.nonpositive_denominators = 0;
  for (Index c : nonpos) cache.nonpositive_denominators += c;
}

template <class T>
void kernel_attention_backward(const std::vector<Mat<T>>& omega, const RaggedIndex& sets,
                               const KernelGrid& grid, ConstMatRef<T> Q, ConstMatRef<T> K,
                               ConstMatRef<T> V, const std::vector<Vec<T>>& masks,
                               const KernelAttentionCache<T>& cache, ConstMatRef<T> dout,
                               MatRef<T> dQ, MatRef<T> dK, MatRef<T> dV,
                               std::vector<Vec<T>>& dmasks) {
  const Index H = static_cast<Index>(omega.size());
  const Index m = omega[0].rows(), d = omega[0].cols(), N = sets.total_rows();
  require(cache.out.rows() == N && cache.out.cols() == H * d && dout.rows() == N &&
              dout.cols() == H * d && dQ.rows() == N && dK.rows() == N && dV.rows() == N,
          "kernel_attention_backward: shape mismatch (cache from another batch?)");
  const bool masked = !masks.empty();
  const Index S = sets.num_sets(), pairs = S * H;
  const Index msize = masked ? grid.mask_size() : 0;
  if (masked) {
    if (dmasks.size() != masks.size()) dmasks.assign(masks.size(), Vec<T>::Zero(msize));
    for (auto& dm : dmasks)
      require(dm.size() == msize, "kernel_attention_backward: dmask size mismatch");
  }
  std::vector<Vec<T>> partial(static_cast<std::size_t>(masked ? pairs : 0));
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(pairs));
  const T scale = static_cast<T>(std::pow(static_cast<double>(d), -0.25));
#pragma omp parallel for schedule(dynamic) if (pairs > 1)
  for (Index p = 0; p < pairs; ++p) {
    try {
      const Index s = p / H, h = p % H, r0 = sets.begin(s), n = sets.size(s);
      const Mat<T>& W = omega[static_cast<std::size_t>(h)];
      const Mat<T> phq = cache.phi_q.block(r0, h * m, n, m);
      const Mat<T> phk = cache.phi_k.block(r0, h * m, n, m);
      Mat<T> dphq = Mat<T>::Zero(n, m), dphk = Mat<T>::Zero(n, m);
      if (masked) {
        const SetGrid sg = set_grid(grid, n);
        const auto& mk = masks[static_cast<std::size_t>(h)];
        const std::span<const T> mspan(mk.data() + sg.mask_offset,
                                       static_cast<std::size_t>(sg.grid.mask_size()));
        exact::ToeplitzForward<T> fwd;
        fwd.out = cache.out.block(r0, h * d, n, d);
        fwd.den = cache.den.block(r0, h, n, 1);
        Vec<T> dm = Vec<T>::Zero(sg.grid.mask_size());
        Mat<T> dv = Mat<T>::Zero(n, d);
        exact::toeplitz_attention_backward<T>(sg.grid, phq, phk, V.block(r0, h * d, n, d), mspan,
                                              fwd, dout.block(r0, h * d, n, d), dphq, dphk, dv,
                                              std::span<T>(dm.data(), static_cast<std::size_t>(dm.size())));
        dV.block(r0, h * d, n, d) += dv;
        Vec<T>& part = partial[static_cast<std::size_t>(p)];
        part = Vec<T>::Zero(msize);
        part.segment(sg.mask_offset, dm.size()) = dm;
      } else {
        Mat<T> Vp(n, d + 1), dN(n, d + 1);
        Vp.leftCols(d) = V.block(r0, h * d, n, d);
        Vp.col(d).setOnes();
        for (Index i = 0; i < n; ++i) {
          const T a = T(1) / cache.den(r0 + i, h);
          const auto g = dout.block(r0 + i, h * d, 1, d);
          dN.block(i, 0, 1, d) = g * a;
          dN(i, d) = -(g.cwiseProduct(cache.out.block(r0 + i, h * d, 1, d))).sum() * a;
        }
        Mat<T> dVp = Mat<T>::Zero(n, d + 1);
        linear_attention_backward<T>(phq, phk, Vp, dN, grid.causal, dphq, dphk, dVp);
        dV.block(r0, h * d, n, d) += dVp.leftCols(d);
      }
      const Mat<T> X = Q.block(r0, h * d, n, d) * scale;
      const Mat<T> Y = K.block(r0, h * d, n, d) * scale;
      Mat<T> dX = Mat<T>::Zero(n, d), dY = Mat<T>::Zero(n, d);
      performer_backward<T>(X, W, phq, dphq, dX);
      performer_backward<T>(Y, W, phk, dphk, dY);
      dQ.block(r0, h * d, n, d) += dX * scale;
      dK.block(r0, h * d, n, d) += dY * scale;
    } catch (...) {
      errors[static_cast<std::size_t>(p)] = std::current_exception();
    }
  }
  rethrow_first(errors);
  // Fixed-order reduction of the mask gradients: pairs in (set, head) order.
  if (masked)
    for (Index p = 0; p < pairs; ++p)
      dmasks[static_cast<std::size_t>(p % H)] += partial[static_cast<std::size_t>(p)];
}

template <class T>
Mat<T> kernel_attention_reference(const std::vector<Mat<T>>& omega, const RaggedIndex& sets,
                                  const KernelGrid& grid, ConstMatRef<T> Q, ConstMatRef<T> K,
                                  ConstMatRef<T> V, const std::vector<Vec<T>>& masks) {
  const Index H = static_cast<Index>(omega.size());
  const Index d = omega[0].cols(), N = sets.total_rows();
  Mat<T> out(N, H * d);
  const double scale = std::pow(static_cast<double>(d), -0.25);
  for (Index s = 0; s < sets.num_sets(); ++s) {
    const Index r0 = sets.begin(s), n = sets.size(s);
    const SetGrid sg = set_grid(grid, n);
    for (Index h = 0; h < H; ++h) {
      const Mat<double> W = omega[static_cast<std::size_t>(h)].template cast<double>();
      // Unstabilised features of E2 (double: the stabilisers cancel in the ratio).
      auto features = [&](ConstMatRef<T> Z) {
        const Mat<double> X = Z.template cast<double>() * scale;
        Mat<double> phi(n, W.rows());
        for (Index i = 0; i < n; ++i)
          for (Index a = 0; a < W.rows(); ++a)
            phi(i, a) = std::exp(W.row(a).dot(X.row(i)) - 0.5 * X.row(i).squaredNorm()) /
                        std::sqrt(static_cast<double>(W.rows()));
        return phi;
      };
      const Mat<double> pq = features(Q.block(r0, h * d, n, d));
      const Mat<double> pk = features(K.block(r0, h * d, n, d));
      for (Index i = 0; i < n; ++i) {
        Vec<double> num = Vec<double>::Zero(d);
        double den = 0.0;
        for (Index j = 0; j < n; ++j) {
          if (!sg.grid.visible(i, j)) continue;
          double w = pq.row(i).dot(pk.row(j));
          if (!masks.empty())
            w *= static_cast<double>(
                masks[static_cast<std::size_t>(h)](sg.mask_offset + sg.grid.mask_index(i, j)));
          num += w * V.block(r0 + j, h * d, 1, d).transpose().template cast<double>();
          den += w;
        }
        out.block(r0 + i, h * d, 1, d) = (num / den).transpose().template cast<T>();
      }
    }
  }
  return out;
}

#define FLT_KERNEL_INSTANTIATE(T)                                                             \
  template void linear_attention_forward<T>(ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>, bool, \
                                            MatRef<T>);                                           \
  template void linear_attention_backward<T>(ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>,      \
                                             ConstMatRef<T>, bool, MatRef<T>, MatRef<T>,          \
                                             MatRef<T>);                                          \
  template void kernel_attention_forward<T>(const std::vector<Mat<T>>&, const RaggedIndex&,       \
                                            const KernelGrid&, ConstMatRef<T>, ConstMatRef<T>,    \
                                            ConstMatRef<T>, const std::vector<Vec<T>>&,           \
                                            KernelAttentionCache<T>&);                            \
  template void kernel_attention_backward<T>(                                                     \
      const std::vector<Mat<T>>&, const RaggedIndex&, const KernelGrid&, ConstMatRef<T>,          \
      ConstMatRef<T>, ConstMatRef<T>, const std::vector<Vec<T>>&, const KernelAttentionCache<T>&, \
      ConstMatRef<T>, MatRef<T>, MatRef<T>, MatRef<T>, std::vector<Vec<T>>&);                     \
  template Mat<T> kernel_attention_reference<T>(const std::vector<Mat<T>>&, const RaggedIndex&,   \
                                                const KernelGrid&, ConstMatRef<T>, ConstMatRef<T>, \
                                                ConstMatRef<T>, const std::vector<Vec<T>>&);

FLT_KERNEL_INSTANTIATE(float)
FLT_KERNEL_INSTANTIATE(double)

}  // namespace flt::attn
