// The near field of the geometric FLT attention: exact attention over the pairs of a neighbour list
// (|r_i - r_j| < r_c), with distance-dependent filters on keys and values (continuous filters, as
// in SchNet and TorchMD-Net's equivariant transformer) and equivariant vector messages (PaiNN).
//
// Shapes: N rows, D = H d channels in H heads of width d, K radial nodes, pairs (i, j) of the list.
//   q, k: N x D;  v: N x 3D = [v^s | v^a | v^b];  vec: N x 3D = [x | y | z];  coords: N x 3 (A);
//   Wk: K x D, bk: D, Wv: K x 3D, bv: 3D (D and K x D without vectors);  sink: H;
//   out: N x D (scalar messages), dvec: N x 3D (vector messages).
// Per pair, rho = |r_j - r_i|, u = (r_j - r_i) / rho, e = envelope(rho), F = act(b(rho) W + bias):
//   logit_h = sum_{c in h} q_ic k_jc F^k_c / sqrt(d),  w_ijh = e_ij exp(logit_ijh - m_ih)
//   out_ic = sum_j w_ijh v^s_jc F^s_ijc / (exp(sink_h - m_ih) + sum_j w_ijh)   (c in head h)
//   dvec_i[x] = sum_j e_ij (v^a_j o F^a_ij o vec_j[x] + v^b_j o F^b_ij u_ij[x])
// The sink, the filter table, the backward formulas, its tasks and halo rows, memory and threads:
// docs/attention.md, "Near field".
#pragma once

#include "core/dual.hpp"
#include "core/layers.hpp"
#include "core/ragged.hpp"
#include "core/tensor.hpp"
#include "attention/neighbours.hpp"
#include "attention/radial.hpp"

#include <span>
#include <vector>

namespace flt::attn {

struct NearFieldConfig {
  Index heads = 8;
  Index head_dim = 16;          // d; D = heads * head_dim
  RadialNodes nodes;            // K nodes of the filters' radial basis
  double cutoff = 5.0;          // r_c (the neighbour list's cutoff)
  Activation filter_activation = Activation::silu;  // silu or identity
  bool vectors = true;          // vector messages (v has 3D columns; otherwise D and no dvec)
  Index table_intervals = 256;  // G: the filters are cubic Hermite interpolants on G intervals
  // Backward: closed runs of rows (molecules) with at most this many pairs are gathered into one
  // task; larger ones are cut into row groups whose pairs with a source outside the group sum
  // that side into halo rows (0: always cut; the results agree to rounding).
  Index single_pass_max_pairs = 16384;

  Index width() const noexcept { return heads * head_dim; }
  double table_step() const noexcept { return cutoff / static_cast<double>(table_intervals); }
  Index value_width() const noexcept { return vectors ? 3 * width() : width(); }
  void validate() const;        // throws ConfigError
};

// Parameters of the near field (views into a ParameterStore or plain matrices).
template <class T>
struct NearFieldWeights {
  ConstMatRef<T> Wk;           // K x D
  std::span<const T> bk;       // D
  ConstMatRef<T> Wv;           // K x value_width
  std::span<const T> bv;       // value_width
  std::span<const T> sink;     // H
};
template <class T>
struct NearFieldGrads {
  MatRef<T> Wk;
  std::span<T> bk;
  MatRef<T> Wv;
  std::span<T> bv;
  std::span<T> sink;
};

// The filters as functions of the distance, tabulated: at the nodes rho_g = g h (g = 0..G,
// h = r_c / G) the exact values F_g = act(z_g), z_g = b(rho_g) W + bias, and slopes
// S_g = h dF/drho(rho_g) = h act'(z_g) (b'(rho_g) W); between nodes the cubic Hermite
// interpolant, which is C1 in rho (continuous forces) and within O(h^4) of the exact filter.
// Columns: [F^k (D) | F^v (V)].
template <class T>
struct FilterTable {
  Mat<T> value, slope;          // (G + 1) x (D + V)
  Mat<Accum<T>> z, zslope;      // pre-activations z_g and dz/drho at the nodes
  Mat<double> basis, dbasis;    // (G + 1) x K: b(rho_g), b'(rho_g)
  double basis_step = 0, basis_first = 0, basis_spacing = 0;  // what basis was computed for
  // A Dual table whose weights carry no tangent (a Hessian-vector product along coordinates) is
  // real: it holds these instead of value, slope, z and zslope (which stay empty).
  Mat<double> real_value, real_slope, real_z, real_zslope;
  Mat<double> sigmoid;  // silu tables built from real weights: s(z) at every entry, else empty
  // The weights the table was built from, (K + 1) x (D + V): [W; bias] (values; empty when they
  // carried tangents). A build for the same weights keeps the table.
  Mat<double> built_from;
  Activation built_activation = Activation::identity;
  bool real() const noexcept { return real_value.size() != 0; }
  Index columns() const noexcept { return real() ? real_value.cols() : value.cols(); }
  Index nodes() const noexcept { return real() ? real_value.rows() : value.rows(); }
};

// The table of a float or double forward handed to a Dual pass over the same weights without
// tangents (a Hessian-vector product along coordinates) as its real table, so that the Dual
// forward does not rebuild it: the filters are the float or double model's own.
template <class T>
void lend_filter_table(const FilterTable<T>& from, FilterTable<Dual>& to);

// What backward needs besides the inputs: per (row, head) the logit maximum m_ih and the
// denominator den_ih, the scalar output, and the filter table of the forward's weights.
template <class T>
struct NearFieldCache {
  FilterTable<T> table;
  Mat<T> row_max;  // N x H
  Mat<T> den;      // N x H
  Mat<T> out;      // N x D
};

// Forward. `out` (N x D) and `dvec` (N x 3D, or empty without vectors) are overwritten.
// vec may be empty without vectors. The neighbour list must be built for config.cutoff and well
// formed over the N rows (check_neighbour_list; it need not be symmetric): InvalidArgument otherwise,
// the same in every entry point below.
template <class T>
void near_field_forward(const NearFieldConfig& config, const NeighbourList& neighbours,
                        ConstMatRef<Accum<T>> coords, ConstMatRef<T> q, ConstMatRef<T> k,
                        ConstMatRef<T> v, ConstMatRef<T> vec, const NearFieldWeights<T>& weights,
                        MatRef<T> out, MatRef<T> dvec, NearFieldCache<T>& cache);

// The same forward without anything for backward (bitwise the same out and dvec): for inference,
// where the cache's N x D copy of out and N x H maxima and denominators are not needed.
template <class T>
void near_field_infer(const NearFieldConfig& config, const NeighbourList& neighbours,
                      ConstMatRef<Accum<T>> coords, ConstMatRef<T> q, ConstMatRef<T> k, ConstMatRef<T> v,
                      ConstMatRef<T> vec, const NearFieldWeights<T>& weights, MatRef<T> out,
                      MatRef<T> dvec);

// Backward: ACCUMULATES into dq, dk, dv, dvec_in (N x 3D: d/d vec), dcoords (N x 3; may be
// empty: skipped) and grads. dout: N x D; ddvec: N x 3D (or empty).
// Every gradient row has one writer: bitwise the same for any thread count.
template <class T>
void near_field_backward(const NearFieldConfig& config, const NeighbourList& neighbours,
                         ConstMatRef<Accum<T>> coords, ConstMatRef<T> q, ConstMatRef<T> k,
                         ConstMatRef<T> v, ConstMatRef<T> vec, const NearFieldWeights<T>& weights,
                         const NearFieldCache<T>& cache, ConstMatRef<T> dout, ConstMatRef<T> ddvec,
                         MatRef<T> dq, MatRef<T> dk, MatRef<T> dv, MatRef<T> dvec_in,
                         MatRef<T> dcoords, NearFieldGrads<T>& grads);

// Readable reference: the same forward computed pair by pair in double, materialising every
// pair quantity (for tests); its filters are the Hermite interpolants of the exact filters at the
// two table nodes around each distance, computed directly.
void near_field_forward_reference(const NearFieldConfig& config, const NeighbourList& neighbours,
                                  ConstMatRef<double> coords, ConstMatRef<double> q,
                                  ConstMatRef<double> k, ConstMatRef<double> v,
                                  ConstMatRef<double> vec, const NearFieldWeights<double>& weights,
                                  MatRef<double> out, MatRef<double> dvec);

// The filters [F^k | F^v] at one distance, exactly (act(b W + bias)) and as the model uses them
// (the table's interpolant), in double: for tests of the table's accuracy.
struct FilterValues {
  std::vector<double> exact, interpolated;
};
FilterValues near_field_filters(const NearFieldConfig& config, const NearFieldWeights<double>& weights,
                                double rho);

}  // namespace flt::attn
