// L tokens on a 1-D or 2-D grid, m positive features, dv value width; padded FFT grid of Ntot real
// and Nc complex entries. Exact Toeplitz / block-Toeplitz RPE-masked Performer attention with FFTW;
// the equations are in toeplitz.hpp.
#include "attention/exact/toeplitz.hpp"

#include "core/error.hpp"
#include "core/log.hpp"

#include <fftw3.h>

#include <algorithm>
#include <complex>
#include <map>
#include <string>

namespace flt::exact {

std::mutex& fftw_planner_mutex() {
  static std::mutex mutex;
  return mutex;
}

namespace {

// Precision dispatch over FFTW's double (fftw_) and float (fftwf_) interfaces. std::complex<T> is
// layout-compatible with fftw_complex / fftwf_complex (FFTW manual, section 4.1.1).
template <class T>
struct Fftw;

template <>
struct Fftw<double> {
  using Plan = fftw_plan;
  static void* alloc(std::size_t bytes) { return fftw_malloc(bytes); }
  static void release(void* p) { fftw_free(p); }
  static Plan plan_r2c(int rank, const int* n, double* in, std::complex<double>* out) {
    return fftw_plan_dft_r2c(rank, n, in, reinterpret_cast<fftw_complex*>(out), FFTW_ESTIMATE);
  }
  static Plan plan_c2r(int rank, const int* n, std::complex<double>* in, double* out) {
    return fftw_plan_dft_c2r(rank, n, reinterpret_cast<fftw_complex*>(in), out, FFTW_ESTIMATE);
  }
  static void r2c(Plan p, double* in, std::complex<double>* out) {
    fftw_execute_dft_r2c(p, in, reinterpret_cast<fftw_complex*>(out));
  }
  static void c2r(Plan p, std::complex<double>* in, double* out) {
    fftw_execute_dft_c2r(p, reinterpret_cast<fftw_complex*>(in), out);
  }
};

template <>
struct Fftw<float> {
  using Plan = fftwf_plan;
  static void* alloc(std::size_t bytes) { return fftwf_malloc(bytes); }
  static void release(void* p) { fftwf_free(p); }
  static Plan plan_r2c(int rank, const int* n, float* in, std::complex<float>* out) {
    return fftwf_plan_dft_r2c(rank, n, in, reinterpret_cast<fftwf_complex*>(out), FFTW_ESTIMATE);
  }
  static Plan plan_c2r(int rank, const int* n, std::complex<float>* in, float* out) {
    return fftwf_plan_dft_c2r(rank, n, reinterpret_cast<fftwf_complex*>(in), out, FFTW_ESTIMATE);
  }
  static void r2c(Plan p, float* in, std::complex<float>* out) {
    fftwf_execute_dft_r2c(p, in, reinterpret_cast<fftwf_complex*>(out));
  }
  static void c2r(Plan p, std::complex<float>* in, float* out) {
    fftwf_execute_dft_c2r(p, reinterpret_cast<fftwf_complex*>(in), out);
  }
};

// SIMD-aligned FFTW buffer (every buffer has the alignment of the planning buffers, as the
// new-array execute functions require).
template <class E, class T>
class FftwBuffer {
 public:
  explicit FftwBuffer(Index n) : size_(n) {
    data_ = static_cast<E*>(Fftw<T>::alloc(sizeof(E) * static_cast<std::size_t>(std::max<Index>(n, 1))));
    if (data_ == nullptr) throw Error("toeplitz attention: fftw_malloc failed");
    std::fill(data_, data_ + n, E(0));
  }
  ~FftwBuffer() { Fftw<T>::release(data_); }
  FftwBuffer(const FftwBuffer&) = delete;
  FftwBuffer& operator=(const FftwBuffer&) = delete;
  E* data() noexcept { return data_; }
  const E* data() const noexcept { return data_; }
  Index size() const noexcept { return size_; }
  Eigen::Map<Eigen::Array<E, Eigen::Dynamic, 1>> array() { return {data_, size_}; }
  void zero() { std::fill(data_, data_ + size_, E(0)); }

 private:
  E* data_ = nullptr;
  Index size_ = 0;
};

template <class T>
using RealBuffer = FftwBuffer<T, T>;
template <class T>
using ComplexBuffer = FftwBuffer<std::complex<T>, T>;

// Smallest n' >= n whose prime factors are all in {2, 3, 5, 7} (FFTW is fastest there).
Index good_fft_size(Index n) {
  for (Index c = std::max<Index>(n, 1);; ++c) {
    Index r = c;
    for (Index p : {2, 3, 5, 7})
      while (r % p == 0) r /= p;
    if (r == 1) return c;
  }
}

// The padded FFT grid of a token grid and where tokens and offsets live in it.
struct Geometry {
  std::vector<int> dims;   // padded sizes N_k >= 2 n_k - 1
  Index real_size = 1;     // Ntot
  Index complex_size = 1;  // Nc (r2c halves the last axis)
  std::vector<Index> token_slot;  // L: padded real index of token i

  explicit Geometry(const ToeplitzGrid& grid) {
    for (Index n : grid.shape) dims.push_back(static_cast<int>(good_fft_size(2 * n - 1)));
    for (std::size_t k = 0; k < dims.size(); ++k) {
      real_size *= dims[k];
      complex_size *= (k + 1 == dims.size()) ? dims[k] / 2 + 1 : dims[k];
    }
    const Index L = grid.tokens();
    token_slot.resize(static_cast<std::size_t>(L));
    const Index W = grid.shape.size() == 2 ? grid.shape[1] : L;
    const Index padded_w = grid.shape.size() == 2 ? dims[1] : 0;
    for (Index i = 0; i < L; ++i)
      token_slot[static_cast<std::size_t>(i)] =
          grid.shape.size() == 2 ? (i / W) * padded_w + (i % W) : i;
  }

  // Calls fn(mask_index, padded_real_index) for every offset of the grid that is visible.
  template <class F>
  void for_each_offset(const ToeplitzGrid& grid, F&& fn) const {
    if (grid.shape.size() == 1) {
      const Index L = grid.shape[0], N = dims[0];
      for (Index n = grid.causal ? 0 : -(L - 1); n <= L - 1; ++n) fn(n + L - 1, n >= 0 ? n : N + n);
    } else {
      const Index Hg = grid.shape[0], Wg = grid.shape[1], N0 = dims[0], N1 = dims[1];
      for (Index dy = -(Hg - 1); dy <= Hg - 1; ++dy)
        for (Index dx = -(Wg - 1); dx <= Wg - 1; ++dx)
          fn((dy + Hg - 1) * (2 * Wg - 1) + (dx + Wg - 1),
             (dy >= 0 ? dy : N0 + dy) * N1 + (dx >= 0 ? dx : N1 + dx));
    }
  }
};

template <class T>
struct Plans {
  typename Fftw<T>::Plan forward;  // real -> half complex
  typename Fftw<T>::Plan inverse;  // half complex -> real (unnormalised)
};

// Plans are created once per (precision, padded dims) and kept for the life of the process.
template <class T>
Plans<T> plans_for(const Geometry& g) {
  static std::map<std::vector<int>, Plans<T>> cache;  // guarded by fftw_planner_mutex()
  std::lock_guard<std::mutex> lock(fftw_planner_mutex());
  auto it = cache.find(g.dims);
  if (it != cache.end()) return it->second;
  RealBuffer<T> real(g.real_size);
  ComplexBuffer<T> spec(g.complex_size);
  const int rank = static_cast<int>(g.dims.size());
  Plans<T> p{Fftw<T>::plan_r2c(rank, g.dims.data(), real.data(), spec.data()),
             Fftw<T>::plan_c2r(rank, g.dims.data(), spec.data(), real.data())};
  if (p.forward == nullptr || p.inverse == nullptr)
    throw Error("toeplitz attention: FFTW could not create a plan");
  cache.emplace(g.dims, p);
  return p;
}

template <class T>
void check_inputs(const ToeplitzGrid& grid, ConstMatRef<T> PhiQ, ConstMatRef<T> PhiK,
                  ConstMatRef<T> V, std::span<const T> mask) {
  grid.validate();
  const Index L = grid.tokens();
  require(PhiQ.rows() == L && PhiK.rows() == L && V.rows() == L,
          "toeplitz attention: PhiQ, PhiK and V must have one row per grid token (" +
              std::to_string(L) + ")");
  require(PhiQ.cols() == PhiK.cols() && PhiQ.cols() >= 1,
          "toeplitz attention: PhiQ and PhiK need the same number (>= 1) of features");
  require(V.cols() >= 1, "toeplitz attention: V needs at least one column");
  require(static_cast<Index>(mask.size()) == grid.mask_size(),
          "toeplitz attention: the mask must hold f on all " + std::to_string(grid.mask_size()) +
              " offsets of the grid");
}

// FFT of the zero-padded mask (causal: offsets n < 0 left at zero).
template <class T>
void mask_spectrum(const ToeplitzGrid& grid, const Geometry& g, const Plans<T>& plans,
                   std::span<const T> mask, ComplexBuffer<T>& spectrum) {
  RealBuffer<T> padded(g.real_size);
  g.for_each_offset(grid, [&](Index mi, Index slot) {
    padded.data()[slot] = mask[static_cast<std::size_t>(mi)];
  });
  Fftw<T>::r2c(plans.forward, padded.data(), spectrum.data());
}

}  // namespace

ToeplitzGrid ToeplitzGrid::sequence(Index length, bool causal) {
  ToeplitzGrid g;
  g.shape = {length};
  g.causal = causal;
  g.validate();
  return g;
}

ToeplitzGrid ToeplitzGrid::image(Index height, Index width) {
  ToeplitzGrid g;
  g.shape = {height, width};
  g.validate();
  return g;
}

void ToeplitzGrid::validate() const {
  require(shape.size() == 1 || shape.size() == 2,
          "ToeplitzGrid: the grid must be 1-D (sequence) or 2-D (image)");
  for (Index n : shape) require(n >= 1, "ToeplitzGrid: every axis needs at least one token");
  require(!causal || shape.size() == 1, "ToeplitzGrid: causal attention is defined for 1-D only");
}

Index ToeplitzGrid::tokens() const {
  Index n = 1;
  for (Index s : shape) n *= s;
  return n;
}

Index ToeplitzGrid::mask_size() const {
  Index n = 1;
  for (Index s : shape) n *= 2 * s - 1;
  return n;
}

Index ToeplitzGrid::mask_index(Index i, Index j) const {
  if (shape.size() == 1) return i - j + shape[0] - 1;
  const Index W = shape[1];
  return (i / W - j / W + shape[0] - 1) * (2 * W - 1) + (i % W - j % W + W - 1);
}

template <class T>
void toeplitz_attention_forward(const ToeplitzGrid& grid, ConstMatRef<T> PhiQ, ConstMatRef<T> PhiK,
                                ConstMatRef<T> V, std::span<const T> mask,
                                ToeplitzForward<T>& result) {
  check_inputs<T>(grid, PhiQ, PhiK, V, mask);
  const Index L = grid.tokens(), m = PhiQ.cols(), dv = V.cols();
  const Geometry g(grid);
  const Plans<T> plans = plans_for<T>(g);
  ComplexBuffer<T> fhat(g.complex_size);
  mask_spectrum<T>(grid, g, plans, mask, fhat);

  // Transposed copies: one contiguous row per feature / value column. Row dv of Vx is all ones
  // (the denominator column).
  const Mat<T> PhiQt = PhiQ.transpose(), PhiKt = PhiK.transpose();
  Mat<T> Vx(dv + 1, L);
  Vx.topRows(dv) = V.transpose();
  Vx.row(dv).setOnes();
  Mat<T> num = Mat<T>::Zero(dv + 1, L);  // num_c,i (row dv: den_i), times Ntot
  const auto* slot = g.token_slot.data();

#pragma omp parallel
  {
    RealBuffer<T> x(g.real_size);
    ComplexBuffer<T> X(g.complex_size);
#pragma omp for schedule(dynamic, 1)
    for (Index c = 0; c <= dv; ++c) {
      for (Index a = 0; a < m; ++a) {
        x.zero();
        for (Index j = 0; j < L; ++j) x.data()[slot[j]] = PhiKt(a, j) * Vx(c, j);
        Fftw<T>::r2c(plans.forward, x.data(), X.data());
        X.array() *= fhat.array();
        Fftw<T>::c2r(plans.inverse, X.data(), x.data());  // = Ntot [f * (PhiK_a o V_c)]
        for (Index i = 0; i < L; ++i) num(c, i) += PhiQt(a, i) * x.data()[slot[i]];
      }
    }
  }
  // The 1/Ntot of the inverse FFT cancels in num / den; den itself is reported unscaled.
  const T inv_n = T(1) / static_cast<T>(g.real_size);
  result.den = num.row(dv).transpose() * inv_n;
  result.out.resize(L, dv);
  for (Index i = 0; i < L; ++i) result.out.row(i) = num.col(i).head(dv).transpose() / num(dv, i);
  result.nonpositive_denominators = (result.den.array() <= T(0)).count();
  if (result.nonpositive_denominators > 0)
    log_warning("toeplitz attention: ", result.nonpositive_denominators,
                " denominators sum_j (PhiQ_i.PhiK_j) f(i-j) are <= 0; their outputs are not "
                "meaningful");
}

template <class T>
void toeplitz_attention_backward(const ToeplitzGrid& grid, ConstMatRef<T> PhiQ,
                                 ConstMatRef<T> PhiK, ConstMatRef<T> V, std::span<const T> mask,
                                 const ToeplitzForward<T>& forward, ConstMatRef<T> dout,
                                 MatRef<T> dPhiQ, MatRef<T> dPhiK, MatRef<T> dV,
                                 std::span<T> dmask) {
  check_inputs<T>(grid, PhiQ, PhiK, V, mask);
  const Index L = grid.tokens(), m = PhiQ.cols(), dv = V.cols();
  require(forward.out.rows() == L && forward.out.cols() == dv && forward.den.size() == L,
          "toeplitz attention backward: the forward result does not match the inputs");
  require(dout.rows() == L && dout.cols() == dv, "toeplitz attention backward: dout must be L x dv");
  require(dPhiQ.rows() == L && dPhiQ.cols() == m && dPhiK.rows() == L && dPhiK.cols() == m &&
              dV.rows() == L && dV.cols() == dv && dmask.size() == mask.size(),
          "toeplitz attention backward: gradient shapes must match the inputs");
  const Geometry g(grid);
  const Plans<T> plans = plans_for<T>(g);
  ComplexBuffer<T> fhat(g.complex_size);
  mask_spectrum<T>(grid, g, plans, mask, fhat);
  ComplexBuffer<T> fhat_conj(g.complex_size);  // spectrum of f^T(n) = f(-n)
  fhat_conj.array() = fhat.array().conjugate();

  const Mat<T> PhiQt = PhiQ.transpose(), PhiKt = PhiK.transpose();
  Mat<T> Vx(dv + 1, L), Gx(dv + 1, L);  // extended columns: V_c (ones), dnum_c (delta)
  Vx.topRows(dv) = V.transpose();
  Vx.row(dv).setOnes();
  for (Index i = 0; i < L; ++i) {
    const T inv_den = T(1) / forward.den(i);
    Gx.col(i).head(dv) = dout.row(i).transpose() * inv_den;
    Gx(dv, i) = -dout.row(i).dot(forward.out.row(i)) * inv_den;
  }

  // Feature chunks: boundaries depend on m only, so partial sums are thread-count independent.
  const Index chunks = std::min<Index>(m, 8);
  const Index per_chunk = (m + chunks - 1) / chunks;
  Mat<T> gQt = Mat<T>::Zero(m, L), gKt = Mat<T>::Zero(m, L);  // times Ntot
  std::vector<Mat<T>> dV_parts(static_cast<std::size_t>(chunks));
  std::vector<Eigen::Array<std::complex<T>, Eigen::Dynamic, 1>> df_parts(
      static_cast<std::size_t>(chunks));
  const auto* slot = g.token_slot.data();

#pragma omp parallel
  {
    RealBuffer<T> x(g.real_size);
    ComplexBuffer<T> X1(g.complex_size), X2(g.complex_size), Y(g.complex_size);
#pragma omp for schedule(dynamic, 1)
    for (Index ch = 0; ch < chunks; ++ch) {
      Mat<T>& dV_part = dV_parts[static_cast<std::size_t>(ch)];
      auto& df_part = df_parts[static_cast<std::size_t>(ch)];
      dV_part.setZero(dv, L);
      df_part.setZero(g.complex_size);
      for (Index a = ch * per_chunk; a < std::min(m, (ch + 1) * per_chunk); ++a) {
        for (Index c = 0; c <= dv; ++c) {
          // X2 = FFT(PhiK_a o V_c);  y = f * (PhiK_a o V_c)  ->  dPhiQ_a += dnum_c o y
          x.zero();
          for (Index j = 0; j < L; ++j) x.data()[slot[j]] = PhiKt(a, j) * Vx(c, j);
          Fftw<T>::r2c(plans.forward, x.data(), X2.data());
          Y.array() = X2.array() * fhat.array();
          Fftw<T>::c2r(plans.inverse, Y.data(), x.data());
          for (Index i = 0; i < L; ++i) gQt(a, i) += Gx(c, i) * x.data()[slot[i]];
          // X1 = FFT(PhiQ_a o dnum_c);  u = f^T * (PhiQ_a o dnum_c)
          x.zero();
          for (Index i = 0; i < L; ++i) x.data()[slot[i]] = PhiQt(a, i) * Gx(c, i);
          Fftw<T>::r2c(plans.forward, x.data(), X1.data());
          df_part += X1.array() * X2.array().conjugate();  // cross-correlation spectrum
          Y.array() = X1.array() * fhat_conj.array();
          Fftw<T>::c2r(plans.inverse, Y.data(), x.data());
          for (Index j = 0; j < L; ++j) {
            const T u = x.data()[slot[j]];
            gKt(a, j) += Vx(c, j) * u;
            if (c < dv) dV_part(c, j) += PhiKt(a, j) * u;
          }
        }
      }
    }
  }

  const T inv_n = T(1) / static_cast<T>(g.real_size);
  dPhiQ += gQt.transpose() * inv_n;
  dPhiK += gKt.transpose() * inv_n;
  Mat<T> dV_total = Mat<T>::Zero(dv, L);
  ComplexBuffer<T> df_total(g.complex_size);
  for (Index ch = 0; ch < chunks; ++ch) {
    dV_total += dV_parts[static_cast<std::size_t>(ch)];
    df_total.array() += df_parts[static_cast<std::size_t>(ch)];
  }
  dV += dV_total.transpose() * inv_n;
  RealBuffer<T> df(g.real_size);
  Fftw<T>::c2r(plans.inverse, df_total.data(), df.data());
  g.for_each_offset(grid, [&](Index mi, Index s) {
    dmask[static_cast<std::size_t>(mi)] += df.data()[s] * inv_n;
  });
}

template <class T>
Mat<T> toeplitz_attention_direct(const ToeplitzGrid& grid, ConstMatRef<T> PhiQ,
                                 ConstMatRef<T> PhiK, ConstMatRef<T> V, std::span<const T> mask) {
  check_inputs<T>(grid, PhiQ, PhiK, V, mask);
  const Index L = grid.tokens(), dv = V.cols();
  Mat<T> out(L, dv);
  Eigen::VectorXd acc(dv);
  for (Index i = 0; i < L; ++i) {
    acc.setZero();
    double den = 0.0;
    for (Index j = 0; j < L; ++j) {
      if (!grid.visible(i, j)) continue;
      // w_ij = (PhiQ_i . PhiK_j) f(pos_i - pos_j)
      const double w = PhiQ.row(i).template cast<double>().dot(PhiK.row(j).template cast<double>()) *
                       static_cast<double>(mask[static_cast<std::size_t>(grid.mask_index(i, j))]);
      den += w;
      acc += w * V.row(j).transpose().template cast<double>();
    }
    out.row(i) = (acc / den).transpose().template cast<T>();
  }
  return out;
}

#define FLT_EXACT_TOEPLITZ_INSTANTIATE(T)                                                        \
  template void toeplitz_attention_forward<T>(const ToeplitzGrid&, ConstMatRef<T>,               \
                                              ConstMatRef<T>, ConstMatRef<T>,                    \
                                              std::span<const T>, ToeplitzForward<T>&);          \
  template void toeplitz_attention_backward<T>(                                                  \
      const ToeplitzGrid&, ConstMatRef<T>, ConstMatRef<T>, ConstMatRef<T>, std::span<const T>,   \
      const ToeplitzForward<T>&, ConstMatRef<T>, MatRef<T>, MatRef<T>, MatRef<T>, std::span<T>); \
  template Mat<T> toeplitz_attention_direct<T>(const ToeplitzGrid&, ConstMatRef<T>,              \
                                               ConstMatRef<T>, ConstMatRef<T>, std::span<const T>);

FLT_EXACT_TOEPLITZ_INSTANTIATE(float)
FLT_EXACT_TOEPLITZ_INSTANTIATE(double)
#undef FLT_EXACT_TOEPLITZ_INSTANTIATE

}  // namespace flt::exact
