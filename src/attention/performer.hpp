// Performer positive random features (FAVOR+, method section 2, E2) and their backward (E27).
//
// Shapes: X: n x D (rows already scaled, x~ = x / D^(1/4) or the concatenated x^ of E12);
//         W: m x D (one Performer frequency w_a per row); phi: n x m.
//
//   (E2)  phi_ia = m^(-1/2) exp(w_a . x~_i - |x~_i|^2 / 2 - stab)
//   (E27) dx~_i = W^T (gam_i o phi_i) - x~_i sum_a gam_ia phi_ia,   gam = dLoss/dphi
//
// stab is a stabiliser that cancels between numerator and denominator of linear attention:
// per row (queries: stab_i = max_a (w_a . x~_i - |x~_i|^2/2)) or one global constant per set and
// head (keys: the maximum over all keys of the set, computed first with performer_logit_max). It
// is treated as a constant in the backward pass, which is exact because it cancels.
#pragma once

#include "core/random.hpp"
#include "core/tensor.hpp"

namespace flt::attn {

// How the rows of a Performer frequency matrix are normalised.
enum class FeatureNorms {
  chi,    // each row norm drawn from chi(D) (norm of an independent N(0, I_D) vector): unbiased
  fixed,  // every row norm equal to sqrt(D) (lower variance, "regularised" FAVOR+)
};

// m x D frequencies w_a ~ N(0, I_D). orthogonal: rows come in blocks of D mutually orthogonal
// directions (Q of the QR decomposition of a Gaussian D x D matrix), the last block truncated;
// then every row is rescaled to a norm from `norms`. Deterministic given the state of `rng`.
Mat<double> draw_performer_frequencies(Index m, Index D, bool orthogonal, FeatureNorms norms,
                                       Rng& rng);

// max_{i,a} (w_a . x_i - |x_i|^2 / 2) over the rows of X: the global key stabiliser.
template <class T>
double performer_logit_max(ConstMatRef<T> X, ConstMatRef<T> W);

// phi = E2 features of the rows of X. per_row = true: stab_i = row maximum (queries);
// per_row = false: stab = global_stab for every row (keys). phi is resized to n x m.
template <class T>
void performer_features(ConstMatRef<T> X, ConstMatRef<T> W, bool per_row, double global_stab,
                        Mat<T>& phi);

// E27: dX += W^T (gam o phi) - X o rowsum(gam o phi). phi must be the output of
// performer_features for the same X and W (any stabiliser).
template <class T>
void performer_backward(ConstMatRef<T> X, ConstMatRef<T> W, ConstMatRef<T> phi,
                        ConstMatRef<T> gam, MatRef<T> dX);

}  // namespace flt::attn
