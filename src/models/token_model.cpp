// S sets, N tokens, D width, H heads, d = D/H, F block-MLP hidden width, G head hidden width,
// P outputs, V vocabulary, p patch side, m Performer features, R RPE frequencies.
// The token model: construction, forward, backward, exact masks and their gradients, model files.
// Equations in token_model.hpp.
#include "models/token_model.hpp"

#include "core/log.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace flt::models {

namespace {

constexpr double kPi = std::numbers::pi;

// Window radii of the local RPE: the configured ones or the ladder 1, 3, 7, 15, ... (2^(t+1) - 1).
std::vector<Index> resolved_radii(const TokenModelConfig& c) {
  if (!c.window_radii.empty()) return c.window_radii;
  std::vector<Index> r;
  for (Index t = 0; t < c.spectrum_components; ++t) r.push_back((Index{2} << t) - 1);
  return r;
}

attn::SpectrumConfig spectrum_config(const TokenModelConfig& c) {
  attn::SpectrumConfig s;
  s.kind = c.spectrum;
  s.coord_dim = c.coord_dim();
  s.components = c.spectrum_components;
  // local_window is defined on integer grids and sampled uniformly on the aliasing box.
  s.proposal = c.spectrum == attn::SpectrumKind::local_window ? attn::ProposalKind::uniform_box
                                                              : c.proposal;
  s.proposal_scale = c.proposal_scale;
  if (c.spectrum == attn::SpectrumKind::local_window) s.window_radii = resolved_radii(c);
  s.init_sigma_min = c.init_sigma_min;
  s.init_sigma_max = c.init_sigma_max;
  return s;
}

// Grid offsets z (rows, dc columns) in the mask layout of exact::ToeplitzGrid.
Mat<double> grid_offsets(const exact::ToeplitzGrid& g) {
  if (g.shape.size() == 1) {
    const Index L = g.shape[0];
    Mat<double> z(2 * L - 1, 1);
    for (Index i = 0; i < 2 * L - 1; ++i) z(i, 0) = static_cast<double>(i - (L - 1));
    return z;
  }
  const Index Hg = g.shape[0], Wg = g.shape[1];
  Mat<double> z((2 * Hg - 1) * (2 * Wg - 1), 2);
  for (Index a = 0; a < 2 * Hg - 1; ++a)
    for (Index b = 0; b < 2 * Wg - 1; ++b) {
      z(a * (2 * Wg - 1) + b, 0) = static_cast<double>(a - (Hg - 1));
      z(a * (2 * Wg - 1) + b, 1) = static_cast<double>(b - (Wg - 1));
    }
  return z;
}

// dparams += sum_n df[n] df(z_n)/dparams for the closed-form masks (E16, E22) on integer offsets.
//   gaussian_mixture: f_t = w_t prod_a sqrt(pi s2_ta) exp(-pi^2 s2_ta z_a^2) cos(2 pi mu_t . z),
//     df/dlogw_t = f_t;  df/dmu_ta = -(w_t prod ...) sin(2 pi mu_t . z) 2 pi z_a;
//     df/dlambda_ta = f_t (1/2 - pi^2 s2_ta z_a^2) dlog s2 / dlambda (smooth clamp factor)
//   local_window: f_t = a_t prod_a 1[|z_a| <= v_t],  df/dloga_t = f_t
void mask_backward(const attn::Spectrum& spectrum, std::span<const double> p, const Mat<double>& z,
                   const Vec<double>& df, std::span<double> dp) {
  const auto& c = spectrum.config();
  const Index T = c.components, dc = c.coord_dim;
  const double* logw = p.data();
  for (Index n = 0; n < z.rows(); ++n) {
    const double g = df(n);
    if (g == 0.0) continue;
    for (Index t = 0; t < T; ++t) {
      const double w = std::exp(logw[t]);
      if (c.kind == attn::SpectrumKind::local_window) {
        const Index v = c.window_radii[static_cast<std::size_t>(t)];
        bool inside = true;
        for (Index a = 0; a < dc; ++a) inside = inside && std::abs(z(n, a)) <= static_cast<double>(v);
        if (inside) dp[static_cast<std::size_t>(t)] += g * w;
        continue;
      }
      const double* mu = logw + T + t * dc;
      const double* lam = logw + T + T * dc + t * dc;
      double amp = w, phase = 0.0;
      for (Index a = 0; a < dc; ++a) {
        const double s2 = std::exp(spectrum.clamped_log_sigma2(lam[a]));
        amp *= std::sqrt(kPi * s2) * std::exp(-kPi * kPi * s2 * z(n, a) * z(n, a));
        phase += mu[a] * z(n, a);
      }
      const double cs = std::cos(2 * kPi * phase), sn = std::sin(2 * kPi * phase);
      const double ft = amp * cs;
      dp[static_cast<std::size_t>(t)] += g * ft;
      for (Index a = 0; a < dc; ++a) {
        dp[static_cast<std::size_t>(T + t * dc + a)] += -g * amp * sn * 2 * kPi * z(n, a);
        const double s2 = std::exp(spectrum.clamped_log_sigma2(lam[a]));
        dp[static_cast<std::size_t>(T + T * dc + t * dc + a)] +=
            g * ft * (0.5 - kPi * kPi * s2 * z(n, a) * z(n, a)) *
            spectrum.clamped_log_sigma2_derivative(lam[a]);
      }
    }
  }
}

template <class T>
std::vector<double> head_params(const ParameterStore<T>& store, const std::vector<ParamRef>& refs) {
  std::vector<double> p;
  for (const auto& ref : refs) {
    const auto v = store.value(ref);
    for (Index r = 0; r < ref.rows; ++r)
      for (Index c = 0; c < ref.cols; ++c) p.push_back(static_cast<double>(v(r, c)));
  }
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Batches.

TokenBatch TokenBatch::sequences(std::span<const std::vector<std::int32_t>> seqs) {
  TokenBatch b;
  std::vector<Index> sizes;
  for (const auto& s : seqs) {
    sizes.push_back(static_cast<Index>(s.size()));
    b.ids.insert(b.ids.end(), s.begin(), s.end());
  }
  b.sets = RaggedIndex::from_sizes(sizes);
  return b;
}

TokenBatch TokenBatch::images(Mat<float> pixels) {
  TokenBatch b;
  b.pixels = std::move(pixels);
  return b;
}

Index TokenBatch::num_sets() const noexcept {
  return pixels.rows() > 0 ? pixels.rows() : sets.num_sets();
}

template <class T>
Mat<T> image_patches(const TokenModelConfig& c, const Mat<float>& pixels) {
  const Index S = pixels.rows(), p = c.patch, W = c.image_width;
  const Index Hg = c.grid_height(), Wg = c.grid_width(), tpi = Hg * Wg;
  require(pixels.cols() == c.image_height * c.image_width,
          "image_patches: each image row needs image_height * image_width pixels");
  Mat<T> out(S * tpi, p * p);
  for (Index s = 0; s < S; ++s)
    for (Index y = 0; y < Hg; ++y)
      for (Index x = 0; x < Wg; ++x) {
        const Index row = s * tpi + y * Wg + x;
        for (Index py = 0; py < p; ++py)
          for (Index px = 0; px < p; ++px)
            out(row, py * p + px) = static_cast<T>(pixels(s, (y * p + py) * W + x * p + px));
      }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Construction.

template <class T>
TokenModel<T>::TokenModel(TokenModelConfig config) : config_(std::move(config)) {
  config_.validate();
  const Index D = config_.width, H = config_.heads, d = config_.head_dim();
  if (config_.attention != TokenAttention::performer)
    spectrum_ = std::make_unique<attn::Spectrum>(spectrum_config(config_));
  if (config_.input == InputKind::tokens)
    embed_ = Embedding<T>::create(store_, "embed.token", config_.vocab_size, D);
  else
    patch_embed_ = Linear<T>::create(store_, "embed.patch", config_.patch_dim(), D);
  blocks_.resize(static_cast<std::size_t>(config_.blocks));
  for (Index b = 0; b < config_.blocks; ++b) {
    Block& blk = blocks_[static_cast<std::size_t>(b)];
    const std::string p = "block" + std::to_string(b);
    blk.add_attention_layers(store_, p, D, D);
    const std::string rpe = p + ".attn.rpe";
    if (config_.attention == TokenAttention::flt) {
      attn::AttentionConfig ac;
      ac.heads = H;
      ac.head_dim = d;
      ac.value_dim = d;
      ac.num_features = config_.num_features;
      ac.num_frequencies = config_.num_frequencies;
      ac.variant = config_.variant;
      ac.causal = config_.causal;
      ac.spectrum = spectrum_config(config_);
      ac.seed = block_feature_seed(config_.seed, b);
      ac.redraw_each_step = config_.redraw_features;
      ac.init_beta = config_.init_beta;
      ac.block_size = config_.block_size;
      ac.denominator_policy = attn::DenominatorPolicy::clamp_and_count;
      blk.flt = std::make_unique<attn::FltAttention<T>>(ac, store_, rpe);
    } else if (config_.attention == TokenAttention::toeplitz) {
      // Same names and shapes as FltAttention registers, so flt and toeplitz models share them.
      blk.spectrum_refs.resize(static_cast<std::size_t>(H));
      for (Index h = 0; h < H; ++h)
        for (const auto& t : spectrum_->tensors())
          blk.spectrum_refs[static_cast<std::size_t>(h)].push_back(
              store_.add(rpe + ".h" + std::to_string(h) + "." + t.name, t.rows, t.cols));
      if (config_.variant == attn::Variant::bias) blk.beta = store_.add(rpe + ".beta", H, 1);
    }
    blk.add_mlp_layers(store_, p, config_.mlp_hidden, config_.activation);
  }
  ln_out_ = LayerNorm<T>::create(store_, "head.ln", D);
  if (config_.head == OutputHead::pooled)
    head_mlp_ = Mlp<T>::create(store_, "head.mlp", D, config_.head_hidden, config_.num_outputs,
                               config_.activation);
  else
    lm_ = Linear<T>::create(store_, "head.lm", D, config_.vocab_size);
  store_.allocate();
  init_weights();
  draw_all(0);
}

template <class T>
void TokenModel<T>::init_weights() {
  Rng rng = Rng(config_.seed).fork(kWeightStream);
  if (config_.input == InputKind::tokens)
    embed_.init(store_, rng);
  else
    patch_embed_.init(store_, rng);
  for (Index b = 0; b < config_.blocks; ++b) {
    Block& blk = blocks_[static_cast<std::size_t>(b)];
    blk.init_attention_layers(store_, rng);
    if (blk.flt) blk.flt->init_parameters(store_);
    if (config_.attention == TokenAttention::toeplitz) {
      // Exactly FltAttention::init_parameters: the same spectra for the same seed.
      Rng base(block_feature_seed(config_.seed, b) ^ 0x5EC7A1ULL);
      for (Index h = 0; h < config_.heads; ++h) {
        Rng hr = base.fork(static_cast<std::uint64_t>(h));
        std::vector<double> p(static_cast<std::size_t>(spectrum_->num_params()));
        spectrum_->init(p, hr);
        std::size_t pos = 0;
        for (const auto& ref : blk.spectrum_refs[static_cast<std::size_t>(h)]) {
          auto v = store_.value(ref);
          for (Index r = 0; r < ref.rows; ++r)
            for (Index c = 0; c < ref.cols; ++c) v(r, c) = static_cast<T>(p[pos++]);
        }
      }
      if (config_.variant == attn::Variant::bias)
        store_.value(blk.beta).setConstant(static_cast<T>(config_.init_beta));
    }
    blk.init_mlp_layers(store_, rng);
  }
  ln_out_.init(store_);
  if (config_.head == OutputHead::pooled)
    head_mlp_.init(store_, rng);
  else
    lm_.init(store_, rng);
}

template <class T>
void TokenModel<T>::draw_all(std::uint64_t draw) {
  draw_ = draw;
  const Index H = config_.heads, d = config_.head_dim(), m = config_.num_features;
  for (Index b = 0; b < config_.blocks; ++b) {
    Block& blk = blocks_[static_cast<std::size_t>(b)];
    if (blk.flt)
      blk.flt->draw_features(store_, draw);
    else
      blk.performer.draw(config_.seed, b, draw, H, m, d);
  }
}

template <class T>
void TokenModel<T>::begin_step(std::uint64_t step) {
  if (config_.redraw_features) draw_all(step);
}

template <class T>
void TokenModel<T>::redraw_features(std::uint64_t draw) {
  draw_all(draw);
}

template <class T>
attn::AttentionStats TokenModel<T>::attention_stats() const {
  attn::AttentionStats s;
  for (const auto& blk : blocks_)
    if (blk.flt) s.merge(blk.flt->stats());
  return s;
}

template <class T>
void TokenModel<T>::reset_attention_stats() {
  for (auto& blk : blocks_)
    if (blk.flt) blk.flt->reset_stats();
}

// ---------------------------------------------------------------------------------------------
// Exact masks (toeplitz kind, and for inspection of the flt kind).

template <class T>
std::vector<double> TokenModel<T>::exact_mask(Index block, Index head,
                                              const exact::ToeplitzGrid& grid) const {
  require(config_.attention != TokenAttention::performer,
          "TokenModel::exact_mask: the performer kind has no RPE");
  require(block >= 0 && block < config_.blocks && head >= 0 && head < config_.heads,
          "TokenModel::exact_mask: block or head out of range");
  require(static_cast<Index>(grid.shape.size()) == config_.coord_dim(),
          "TokenModel::exact_mask: grid dimension differs from the model's");
  const Block& blk = blocks_[static_cast<std::size_t>(block)];
  std::vector<double> p;
  double beta = 0.0;
  if (blk.flt) {
    p = blk.flt->head_spectrum_params(store_, head);
    if (config_.variant == attn::Variant::bias)
      beta = static_cast<double>(store_.value(blk.flt->beta_param())(head, 0));
  } else {
    p = head_params(store_, blk.spectrum_refs[static_cast<std::size_t>(head)]);
    if (config_.variant == attn::Variant::bias)
      beta = static_cast<double>(store_.value(blk.beta)(head, 0));
  }
  const Mat<double> z = grid_offsets(grid);
  std::vector<double> f(static_cast<std::size_t>(z.rows()));
  spectrum_->mask(p, z, f);
  if (config_.variant == attn::Variant::bias)
    for (double& v : f) v = std::exp(beta * v);
  return f;
}

// ---------------------------------------------------------------------------------------------
// Forward and backward.

template <class T>
RaggedIndex TokenModel<T>::checked_sets(const TokenBatch& batch) const {
  if (config_.input == InputKind::patches) {
    const Index S = batch.pixels.rows();
    require(batch.pixels.cols() == config_.image_height * config_.image_width,
            "TokenModel: image batch needs " +
                std::to_string(config_.image_height * config_.image_width) +
                " pixels per row, got " + std::to_string(batch.pixels.cols()));
    for (Index s = 0; s < S; ++s)
      if (!batch.pixels.row(s).allFinite())
        throw InvalidArgument("TokenModel: image " + std::to_string(s) +
                              " of the batch has a non-finite pixel");
    std::vector<Index> sizes(static_cast<std::size_t>(S), config_.tokens_per_image());
    return RaggedIndex::from_sizes(sizes);
  }
  require(static_cast<Index>(batch.ids.size()) == batch.sets.total_rows(),
          "TokenModel: batch has " + std::to_string(batch.ids.size()) + " ids but its index covers " +
              std::to_string(batch.sets.total_rows()) + " tokens");
  for (Index s = 0; s < batch.sets.num_sets(); ++s) {
    if (batch.sets.size(s) == 0)
      throw InvalidArgument("TokenModel: sequence " + std::to_string(s) + " of the batch is empty");
    for (Index i = batch.sets.begin(s); i < batch.sets.end(s); ++i) {
      const auto id = batch.ids[static_cast<std::size_t>(i)];
      if (id < 0 || id >= config_.vocab_size)
        throw InvalidArgument("TokenModel: sequence " + std::to_string(s) + ", token " +
                              std::to_string(i - batch.sets.begin(s)) + ": id " +
                              std::to_string(id) + " outside [0, " +
                              std::to_string(config_.vocab_size) + ")");
    }
  }
  return batch.sets;
}

template <class T>
void TokenModel<T>::prepare(TokenBatch& batch) const {
  batch.sets = checked_sets(batch);
}

template <class T>
Mat<T> TokenModel<T>::forward(const TokenBatch& in, TokenCache<T>& cache) {
  cache.sets = checked_sets(in);
  const TokenBatch* batch = &in;
  const RaggedIndex& sets = cache.sets;
  const Index N = sets.total_rows(), S = sets.num_sets(), D = config_.width;
  const Index H = config_.heads;
  cache.rows = N;
  Mat<T> x;
  cache.coords.resize(N, config_.coord_dim());
  if (config_.input == InputKind::tokens) {
    cache.ids = batch->ids;
    x = embed_.forward(store_, cache.ids, cache.token_embed);
    for (Index s = 0; s < S; ++s)
      for (Index i = sets.begin(s); i < sets.end(s); ++i)
        cache.coords(i, 0) = static_cast<T>(i - sets.begin(s));
  } else {
    const Mat<T> patches = image_patches<T>(config_, batch->pixels);
    x = patch_embed_.forward(store_, patches, cache.patch_embed);
    const Index Wg = config_.grid_width(), tpi = config_.tokens_per_image();
    for (Index i = 0; i < N; ++i) {
      const Index t = i % tpi;
      cache.coords(i, 0) = static_cast<T>(t / Wg);
      cache.coords(i, 1) = static_cast<T>(t % Wg);
    }
  }
  // Grid of the exact masks: the longest sequence (1-D) or the patch grid (2-D).
  attn::KernelGrid& grid = cache.grid;
  grid = attn::KernelGrid{};
  grid.causal = config_.causal;
  if (config_.input == InputKind::patches) {
    grid.image = true;
    grid.height = config_.grid_height();
    grid.width = config_.grid_width();
  } else {
    for (Index s = 0; s < S; ++s) grid.max_length = std::max(grid.max_length, sets.size(s));
  }
  Mat<double> offsets;
  if (config_.attention == TokenAttention::toeplitz && N > 0) offsets = grid_offsets(grid.full());

  cache.blocks.resize(blocks_.size());
  for (std::size_t b = 0; b < blocks_.size(); ++b) {
    const Block& blk = blocks_[b];
    TokenBlockCache<T>& bc = cache.blocks[b];
    blk.forward(store_, x, bc, [&](ConstMatRef<T> q, ConstMatRef<T> k, ConstMatRef<T> v, Mat<T>& a) {
      switch (config_.attention) {
        case TokenAttention::flt:
          blk.flt->forward(store_, q, k, v, cache.coords, sets, a, bc.flt);
          break;
        case TokenAttention::performer:
          bc.masks.clear();
          attn::kernel_attention_forward<T>(blk.performer.omega_t, sets, grid, q, k, v, bc.masks,
                                            bc.kernel);
          a = bc.kernel.out;
          break;
        case TokenAttention::toeplitz: {
          bc.masks.assign(static_cast<std::size_t>(H), Vec<T>());
          bc.f.assign(static_cast<std::size_t>(H), Vec<double>());
          for (Index h = 0; h < H && N > 0; ++h) {
            const auto p = head_params(store_, blk.spectrum_refs[static_cast<std::size_t>(h)]);
            Vec<double>& f = bc.f[static_cast<std::size_t>(h)];
            f.resize(offsets.rows());
            spectrum_->mask(p, offsets, std::span<double>(f.data(), static_cast<std::size_t>(f.size())));
            if (config_.variant == attn::Variant::bias) {
              const double beta = static_cast<double>(store_.value(blk.beta)(h, 0));
              bc.masks[static_cast<std::size_t>(h)] = (beta * f).array().exp().matrix().template cast<T>();
            } else {
              bc.masks[static_cast<std::size_t>(h)] = f.template cast<T>();
            }
          }
          if (N > 0)
            attn::kernel_attention_forward<T>(blk.performer.omega_t, sets, grid, q, k, v, bc.masks,
                                              bc.kernel);
          else
            bc.kernel.out.resize(0, D);
          a = bc.kernel.out;
          if (bc.kernel.nonpositive_denominators > 0)
            log_warning("token model block ", b, ": ", bc.kernel.nonpositive_denominators,
                        " non-positive Toeplitz denominators (signed mask)");
          break;
        }
      }
    });
  }
  if (config_.head == OutputHead::per_token) {
    const Mat<T> u = ln_out_.forward(store_, x, cache.ln_out);
    return lm_.forward(store_, u, cache.lm);
  }
  cache.pooled.resize(S, D);
  segment_pool_forward<T>(Pooling::mean, sets, x, cache.pooled);
  const Mat<T> u = ln_out_.forward(store_, cache.pooled, cache.ln_out);
  return head_mlp_.forward(store_, u, cache.head_mlp);
}

template <class T>
void TokenModel<T>::backward(const TokenCache<T>& cache, ConstMatRef<T> dout) {
  const RaggedIndex& sets = cache.sets;
  const Index N = cache.rows, S = sets.num_sets(), D = config_.width, H = config_.heads;
  require(cache.blocks.size() == blocks_.size(), "TokenModel::backward: cache from another model");
  Mat<T> dx = Mat<T>::Zero(N, D);
  if (config_.head == OutputHead::per_token) {
    require(dout.rows() == N && dout.cols() == config_.vocab_size,
            "TokenModel::backward: dout must be N x vocab_size");
    Mat<T> du = Mat<T>::Zero(N, D);
    lm_.backward(store_, cache.lm, dout, du);
    ln_out_.backward(store_, cache.ln_out, du, dx);
  } else {
    require(dout.rows() == S && dout.cols() == config_.num_outputs,
            "TokenModel::backward: dout must be S x num_outputs");
    Mat<T> du = Mat<T>::Zero(S, D), dpool = Mat<T>::Zero(S, D);
    head_mlp_.backward(store_, cache.head_mlp, dout, du);
    ln_out_.backward(store_, cache.ln_out, du, dpool);
    segment_pool_backward<T>(Pooling::mean, sets, dpool, dx);
  }
  Mat<T> no_dr(0, config_.coord_dim());
  EncoderBlockGrads<T> grads;
  for (std::size_t bi = blocks_.size(); bi-- > 0;) {
    const Block& blk = blocks_[bi];
    const TokenBlockCache<T>& bc = cache.blocks[bi];
    blk.backward(store_, bc, dx, grads, [&](ConstMatRef<T> da, Mat<T>& dq, Mat<T>& dk, Mat<T>& dv) {
      switch (config_.attention) {
        case TokenAttention::flt:
          blk.flt->backward(store_, bc.q, bc.k, bc.v, cache.coords, sets, bc.flt, da, dq, dk, dv,
                            no_dr);
          break;
        case TokenAttention::performer: {
          std::vector<Vec<T>> none;
          attn::kernel_attention_backward<T>(blk.performer.omega_t, sets, cache.grid, bc.q, bc.k,
                                             bc.v, bc.masks, bc.kernel, da, dq, dk, dv, none);
          break;
        }
        case TokenAttention::toeplitz: {
          if (N == 0) break;
          std::vector<Vec<T>> dmasks;
          attn::kernel_attention_backward<T>(blk.performer.omega_t, sets, cache.grid, bc.q, bc.k,
                                             bc.v, bc.masks, bc.kernel, da, dq, dk, dv, dmasks);
          // Chain through the closed-form mask: kronecker N = f; bias N = exp(beta f).
          const Mat<double> offsets = grid_offsets(cache.grid.full());
          for (Index h = 0; h < H; ++h) {
            const auto& refs = blk.spectrum_refs[static_cast<std::size_t>(h)];
            const auto p = head_params(store_, refs);
            const Vec<double> dN = dmasks[static_cast<std::size_t>(h)].template cast<double>();
            const Vec<double>& f = bc.f[static_cast<std::size_t>(h)];
            Vec<double> df;
            if (config_.variant == attn::Variant::bias) {
              const double beta = static_cast<double>(store_.value(blk.beta)(h, 0));
              const Vec<double> M = (beta * f).array().exp().matrix();
              const Vec<double> dNM = dN.cwiseProduct(M);
              store_.grad(blk.beta)(h, 0) += static_cast<T>(dNM.dot(f));
              df = beta * dNM;
            } else {
              df = dN;
            }
            std::vector<double> dp(p.size(), 0.0);
            mask_backward(*spectrum_, p, offsets, df, dp);
            std::size_t pos = 0;
            for (const auto& ref : refs) {
              auto g = store_.grad(ref);
              for (Index r = 0; r < ref.rows; ++r)
                for (Index c = 0; c < ref.cols; ++c) g(r, c) += static_cast<T>(dp[pos++]);
            }
          }
          break;
        }
      }
    });
  }
  if (config_.input == InputKind::tokens) {
    embedding_backward<T>(cache.ids, dx, store_.grad(embed_.weight));
  } else {
    Mat<T> none;
    patch_embed_.backward(store_, cache.patch_embed, dx, none);
  }
}

template <class T>
Mat<T> TokenModel<T>::predict(const TokenBatch& batch) {
  TokenCache<T> cache;
  return forward(batch, cache);
}

// ---------------------------------------------------------------------------------------------
// Model files.

namespace {

template <class T>
io::Tensor matrix_tensor(const Mat<T>& m) {
  std::vector<T> v(m.data(), m.data() + m.size());
  return io::Tensor(std::move(v), io::Shape{static_cast<std::uint64_t>(m.rows()),
                                                  static_cast<std::uint64_t>(m.cols())});
}

// Values of a tensor in double, whatever its floating dtype, with the expected 2-D shape.
std::vector<double> read_matrix(const io::ModelFile& file, const std::string& name, Index rows,
                                Index cols) {
  const io::Tensor& t = file.tensor(name);
  const io::Shape want{static_cast<std::uint64_t>(rows), static_cast<std::uint64_t>(cols)};
  if (t.shape() != want)
    throw ModelFileError(file.source(), "tensor '" + name + "' has the wrong shape (expected " +
                                            std::to_string(rows) + " x " + std::to_string(cols) +
                                            ")");
  if (t.dtype() == io::DType::F32) {
    const auto v = t.values<float>();
    return {v.begin(), v.end()};
  }
  if (t.dtype() == io::DType::F64) {
    const auto v = t.values<double>();
    return {v.begin(), v.end()};
  }
  throw ModelFileError(file.source(), "tensor '" + name + "' must be F32 or F64");
}

Mat<double> to_mat(const std::vector<double>& v, Index rows, Index cols) {
  Mat<double> m(rows, cols);
  std::copy(v.begin(), v.end(), m.data());
  return m;
}

}  // namespace

template <class T>
io::ModelFile TokenModel<T>::to_model_file(
    const std::map<std::string, std::string>& metadata) const {
  io::ModelFile file("flt-model");
  for (const auto& [k, v] : metadata) {
    if (k.rfind("model.", 0) == 0)
      throw InvalidArgument("TokenModel::to_model_file: caller metadata key '" + k +
                            "' must not start with 'model.'");
    file.set_metadata(k, v);
  }
  file.set_metadata("model.kind", kTokenModelKind);
  file.set_metadata("model.version", kTokenModelVersion);
  for (const auto& [k, v] : config_to_strings(config_)) file.set_metadata("model." + k, v);
  file.set_metadata("model.feature_draw", std::to_string(draw_));
  for (const auto& info : store_.infos())
    file.set_tensor("param." + info.name, matrix_tensor<T>(Mat<T>(store_.value(info.ref))));
  for (Index b = 0; b < config_.blocks; ++b) {
    const Block& blk = blocks_[static_cast<std::size_t>(b)];
    for (Index h = 0; h < config_.heads; ++h) {
      const std::string p = "features.block" + std::to_string(b) + ".h" + std::to_string(h) + ".";
      const auto hs = static_cast<std::size_t>(h);
      if (blk.flt) {
        const auto& f = blk.flt->features();
        file.set_tensor(p + "omega", matrix_tensor<double>(f.omega[hs]));
        file.set_tensor(p + "xi", matrix_tensor<double>(f.xi[hs]));
        file.set_tensor(p + "pdf", matrix_tensor<double>(Mat<double>(f.pdf[hs].transpose())));
      } else {
        file.set_tensor(p + "omega", matrix_tensor<double>(blk.performer.omega[hs]));
      }
    }
  }
  return file;
}

template <class T>
std::unique_ptr<TokenModel<T>> TokenModel<T>::from_model_file(
    const io::ModelFile& file, std::map<std::string, std::string>* metadata) {
  const std::string& src = file.source();
  if (!file.has_metadata("model.kind") || file.metadata("model.kind") != kTokenModelKind)
    throw ModelFileError(src, std::string("not a token model (model.kind must be '") +
                                  kTokenModelKind + "')");
  if (!file.has_metadata("model.version") || file.metadata("model.version") != kTokenModelVersion)
    throw ModelFileError(src, std::string("unsupported token model version (expected ") +
                                  kTokenModelVersion + ")");
  std::map<std::string, std::string> cfg;
  std::uint64_t draw = 0;
  for (const auto& [k, v] : file.all_metadata()) {
    if (k.rfind("model.", 0) != 0) {
      if (metadata) (*metadata)[k] = v;
      continue;
    }
    const std::string key = k.substr(6);
    if (key == "kind" || key == "version") continue;
    if (key == "feature_draw") {
      try {
        draw = std::stoull(v);
      } catch (const std::exception&) {
        throw ModelFileError(src, "bad model.feature_draw '" + v + "'");
      }
      continue;
    }
    cfg[key] = v;
  }
  std::unique_ptr<TokenModel<T>> model;
  try {
    model = std::make_unique<TokenModel<T>>(token_config_from_strings(cfg));
  } catch (const ConfigError& e) {
    throw ModelFileError(src, std::string("bad configuration: ") + e.what());
  }
  auto& store = model->store_;
  std::size_t expected = store.infos().size();
  for (const auto& info : store.infos()) {
    const auto v = read_matrix(file, "param." + info.name, info.ref.rows, info.ref.cols);
    auto dst = store.value(info.ref);
    for (Index i = 0; i < dst.size(); ++i) dst.data()[i] = static_cast<T>(v[static_cast<std::size_t>(i)]);
  }
  model->draw_ = draw;
  const auto& c = model->config_;
  const Index H = c.heads;
  for (Index b = 0; b < c.blocks; ++b) {
    Block& blk = model->blocks_[static_cast<std::size_t>(b)];
    if (blk.flt) {
      attn::RandomFeatures f = blk.flt->features();
      f.draw = draw;
      for (Index h = 0; h < H; ++h) {
        const std::string p = "features.block" + std::to_string(b) + ".h" + std::to_string(h) + ".";
        const auto hs = static_cast<std::size_t>(h);
        f.omega[hs] = to_mat(read_matrix(file, p + "omega", f.omega[hs].rows(), f.omega[hs].cols()),
                             f.omega[hs].rows(), f.omega[hs].cols());
        f.xi[hs] = to_mat(read_matrix(file, p + "xi", f.xi[hs].rows(), f.xi[hs].cols()),
                          f.xi[hs].rows(), f.xi[hs].cols());
        const Index R = f.pdf[hs].size();
        const auto pdf = read_matrix(file, p + "pdf", 1, R);
        for (Index k = 0; k < R; ++k) f.pdf[hs](k) = pdf[static_cast<std::size_t>(k)];
        expected += 3;
      }
      try {
        blk.flt->set_features(std::move(f));
      } catch (const InvalidArgument& e) {
        throw ModelFileError(src, std::string("bad random features: ") + e.what());
      }
    } else {
      std::vector<Mat<double>> omega = blk.performer.omega;
      for (Index h = 0; h < H; ++h) {
        const std::string p = "features.block" + std::to_string(b) + ".h" + std::to_string(h) + ".";
        Mat<double>& om = omega[static_cast<std::size_t>(h)];
        om = to_mat(read_matrix(file, p + "omega", om.rows(), om.cols()), om.rows(), om.cols());
        expected += 1;
      }
      blk.performer.set(std::move(omega));
    }
  }
  if (file.tensors().size() != expected)
    throw ModelFileError(src, "unexpected tensors in the token model file (" +
                                  std::to_string(file.tensors().size()) + " present, " +
                                  std::to_string(expected) + " expected)");
  return model;
}

template <class T>
void TokenModel<T>::save(const std::filesystem::path& path,
                         const std::map<std::string, std::string>& metadata) const {
  io::write_model_file(path, to_model_file(metadata));
}

template <class T>
std::unique_ptr<TokenModel<T>> TokenModel<T>::load(const std::filesystem::path& path,
                                                   std::map<std::string, std::string>* metadata) {
  return from_model_file(io::read_model_file(path, "flt-model"), metadata);
}

template class TokenModel<float>;
template class TokenModel<double>;
template Mat<float> image_patches<float>(const TokenModelConfig&, const Mat<float>&);
template Mat<double> image_patches<double>(const TokenModelConfig&, const Mat<float>&);

}  // namespace flt::models
