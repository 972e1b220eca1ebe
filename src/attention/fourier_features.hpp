// Fourier RPE features from coordinates (method E7, E8) and their backward (E28).
//
// Shapes: coords: n x dc (rows of one set), xi: R x dc (double), cs: n x 2R.
//
//   theta_ik = 2 pi frac(xi_k . (r_i - centre))     computed in double (method 8.5): xi.r is
//              reduced to [-1/2, 1/2) before the 2 pi, so float32 loses nothing for large |xi.r|
//   cs_i     = [cos theta_i1 .. cos theta_iR, sin theta_i1 .. sin theta_iR]           (E8 basis)
//   psiK = cs,  psiQ = a o cs with a_k = a_{R+k} = c~_k = g(xi_k) / (R p(xi_k))          (E8)
//   psiQ(r_i) . psiK(r_j) = (1/R) sum_k c_k cos(2 pi xi_k.(r_i - r_j)) ~ f(r_i - r_j)   (E7)
//
// Backward (E28): dtheta_ik = -dcs_ik sin theta_ik + dcs_i,R+k cos theta_ik,
//                 dr_i += 2 pi sum_k dtheta_ik xi_k.
#pragma once

#include "core/tensor.hpp"

#include <span>

namespace flt::attn {

// cs (resized to n x 2R) for the rows of coords, centred at `centre` (length dc).
template <class T>
void rpe_basis(ConstMatRef<T> coords, std::span<const double> centre, const Mat<double>& xi,
               Mat<T>& cs);

// dr += 2 pi sum_k dtheta_k xi_k from dcs (n x 2R) and cs (the forward output).
template <class T>
void rpe_basis_backward(const Mat<double>& xi, ConstMatRef<T> cs, ConstMatRef<T> dcs,
                        MatRef<T> dr);

// c~_k = g_k / (R pdf_k) for k < R.
void importance_weights(std::span<const double> g, std::span<const double> pdf,
                        std::span<double> ctilde);

}  // namespace flt::attn
