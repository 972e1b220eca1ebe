// N rows, D width, V value width, F MLP hidden width. The shared encoder block: registration,
// initialisation, forward and backward stages, the block feature seed and the Performer draws.
// Equations in encoder_block.hpp.
#include "models/encoder_block.hpp"

#include "core/dual.hpp"
#include "attention/performer.hpp"

namespace flt::models {

std::uint64_t block_feature_seed(std::uint64_t seed, Index block) {
  return Rng(seed).fork(kFeatureStream).fork(static_cast<std::uint64_t>(block)).next_u64();
}

template <class T>
void PerformerFrequencies<T>::draw(std::uint64_t seed, Index block, std::uint64_t draw, Index heads,
                                   Index features, Index head_dim) {
  const Rng stream = Rng(block_feature_seed(seed, block)).fork(draw);
  std::vector<Mat<double>> frequencies;
  for (Index h = 0; h < heads; ++h) {
    Rng rng = stream.fork(static_cast<std::uint64_t>(h));
    frequencies.push_back(
        attn::draw_performer_frequencies(features, head_dim, true, attn::FeatureNorms::chi, rng));
  }
  set(std::move(frequencies));
}

template <class T>
void PerformerFrequencies<T>::set(std::vector<Mat<double>> frequencies) {
  omega = std::move(frequencies);
  omega_t.clear();
  for (const auto& w : omega) omega_t.push_back(w.template cast<T>());
}

template <class T>
void EncoderBlock<T>::add_attention_layers(ParameterStore<T>& store, const std::string& prefix,
                                           Index width, Index value_width) {
  ln1 = LayerNorm<T>::create(store, prefix + ".ln1", width);
  q = Linear<T>::create(store, prefix + ".attn.q", width, width);
  k = Linear<T>::create(store, prefix + ".attn.k", width, width);
  v = Linear<T>::create(store, prefix + ".attn.v", width, value_width);
  o = Linear<T>::create(store, prefix + ".attn.o", width, width);
}

template <class T>
void EncoderBlock<T>::add_mlp_layers(ParameterStore<T>& store, const std::string& prefix,
                                     Index hidden, Activation activation) {
  ln2 = LayerNorm<T>::create(store, prefix + ".ln2", width());
  mlp = Mlp<T>::create(store, prefix + ".mlp", width(), hidden, width(), activation);
}

template <class T>
void EncoderBlock<T>::init_attention_layers(ParameterStore<T>& store, Rng& rng) const {
  ln1.init(store);
  q.init(store, rng);
  k.init(store, rng);
  v.init(store, rng);
  o.init(store, rng);
}

template <class T>
void EncoderBlock<T>::init_mlp_layers(ParameterStore<T>& store, Rng& rng) const {
  ln2.init(store);
  mlp.init(store, rng);
}

template <class T>
void EncoderBlock<T>::project(const ParameterStore<T>& store, ConstMatRef<T> x,
                              EncoderBlockCache<T>& c) const {
  c.u = ln1.forward(store, x, c.ln1);
  c.q.resize(x.rows(), width());
  c.k.resize(x.rows(), width());
  c.v.resize(x.rows(), value_width());
  linear_forward<T>(c.u, store.value(q.weight), store.value_span(q.bias), c.q);
  linear_forward<T>(c.u, store.value(k.weight), store.value_span(k.bias), c.k);
  linear_forward<T>(c.u, store.value(v.weight), store.value_span(v.bias), c.v);
}

template <class T>
void EncoderBlock<T>::project(const ParameterStore<T>& store, ConstMatRef<T> x, MatRef<T> q_out,
                              MatRef<T> k_out, MatRef<T> v_out) const {
  const Mat<T> u = ln1.forward(store, x);
  linear_forward<T>(u, store.value(q.weight), store.value_span(q.bias), q_out);
  linear_forward<T>(u, store.value(k.weight), store.value_span(k.bias), k_out);
  linear_forward<T>(u, store.value(v.weight), store.value_span(v.bias), v_out);
}

template <class T>
void EncoderBlock<T>::add_output(const ParameterStore<T>& store, ConstMatRef<T> a, MatRef<T> x) const {
  Mat<T> out(a.rows(), width());
  linear_forward<T>(a, store.value(o.weight), store.value_span(o.bias), out);
  x += out;
}

template <class T>
void EncoderBlock<T>::add_mlp(const ParameterStore<T>& store, MatRef<T> x, EncoderBlockCache<T>& c) const {
  const Mat<T> u2 = ln2.forward(store, x, c.ln2);
  x += mlp.forward(store, u2, c.mlp);
}

template <class T>
void EncoderBlock<T>::add_mlp(const ParameterStore<T>& store, MatRef<T> x) const {
  const Mat<T> u2 = ln2.forward(store, x);
  x += mlp.forward(store, u2);
}

template <class T>
void EncoderBlock<T>::mlp_backward(ParameterStore<T>& store, const EncoderBlockCache<T>& c,
                                   MatRef<T> dx, EncoderBlockGrads<T>& g) const {
  // x_out = x_mid + MLP(LN2(x_mid)): dx (dL/dx_out) already holds the residual path.
  g.du.setZero(dx.rows(), width());
  mlp.backward(store, c.mlp, dx, g.du);
  ln2.backward(store, c.ln2, g.du, dx);
}

template <class T>
void EncoderBlock<T>::output_backward(ParameterStore<T>& store, const EncoderBlockCache<T>& c,
                                      ConstMatRef<T> dx, EncoderBlockGrads<T>& g) const {
  g.da.setZero(dx.rows(), width());
  o.backward(store, c.a, dx, g.da);
}

template <class T>
void EncoderBlock<T>::zero_attention_grads(Index rows, EncoderBlockGrads<T>& g) const {
  g.dq.setZero(rows, width());
  g.dk.setZero(rows, width());
  g.dv.setZero(rows, value_width());
}

template <class T>
void EncoderBlock<T>::project_backward(ParameterStore<T>& store, const EncoderBlockCache<T>& c,
                                       ConstMatRef<T> dq, ConstMatRef<T> dk, ConstMatRef<T> dv,
                                       Mat<T>& du, MatRef<T> dx) const {
  du.setZero(c.u.rows(), width());
  q.backward(store, c.u, dq, du);
  k.backward(store, c.u, dk, du);
  v.backward(store, c.u, dv, du);
  ln1.backward(store, c.ln1, du, dx);
}

template struct PerformerFrequencies<float>;
template struct PerformerFrequencies<double>;
template struct PerformerFrequencies<Dual>;
template struct EncoderBlock<float>;
template struct EncoderBlock<double>;
template struct EncoderBlock<Dual>;

}  // namespace flt::models
