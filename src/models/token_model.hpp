// The sequence (1-D) and image (2-D) FLT model: a token or patch embedding, pre-norm encoder
// blocks (encoder_block.hpp) whose attention is FLT attention with a 1-D or 2-D grid RPE or one of
// two baselines, and a pooled or per-token output head.
//
// Shapes: S sequences or images, N tokens in all (RaggedIndex over sets), D width, H heads,
// d = D / H, F block-MLP width, G head width, P outputs, V vocabulary, p patch side.
//   tokens:    x0_n = E[id_n], at position n - begin(s) (dc = 1)                      N x D
//   patches:   x0_n = u_n We + be, u_n the p*p pixels of patch (y, x), at (y, x) (dc = 2)  N x D
//   block b:   x += Attn_b(LN1_b(x)) Wo_b + bo_b;  x += MLP_b(LN2_b(x))  (pre-norm)   N x D
//   pooled:    out_s = MLP_head(LN_out((1/|s|) sum_{n in s} x_n))                     S x P
//   per_token: out_n = LN_out(x_n) Wlm + blm  (logits of the token after n)           N x V
// Attention (FAVOR+ features phi, E2): flt (method sections 2-5: kronecker E9/E10, bias E12/E13;
// spectra gaussian_mixture E15/E16, local_window E22), performer (no RPE, E3), toeplitz (the exact
// mask of the same spectrum by FFTW, method section 6); causal (tokens): keys j <= i only.
// The rest: docs/token-model.md ("Shapes and equations", "Attention kinds", "Random features").
#pragma once

#include "core/error.hpp"
#include "core/layers.hpp"
#include "core/params.hpp"
#include "core/ragged.hpp"
#include "core/tensor.hpp"
#include "attention/attention.hpp"
#include "attention/exact/toeplitz.hpp"
#include "attention/spectrum.hpp"
#include "attention/kernel_attention.hpp"
#include "io/model_file.hpp"
#include "models/config_values.hpp"
#include "models/encoder_block.hpp"

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace flt::models {

enum class InputKind { tokens, patches };
enum class TokenAttention { flt, performer, toeplitz };
enum class OutputHead { pooled, per_token };

const char* to_string(InputKind kind) noexcept;
const char* to_string(TokenAttention kind) noexcept;
const char* to_string(OutputHead head) noexcept;
InputKind input_kind_from_string(const std::string& name);          // "tokens" | "patches"
TokenAttention token_attention_from_string(const std::string& name);  // "flt" | "performer" | "toeplitz"
OutputHead output_head_from_string(const std::string& name);        // "pooled" | "per_token"

// Every hyper-parameter of the architecture. Keys of config_to_strings = the field names.
struct TokenModelConfig {
  // Input.
  InputKind input = InputKind::tokens;
  Index vocab_size = 0;            // V (tokens): ids in [0, V)
  Index image_height = 28;         // patches: pixels per image row count
  Index image_width = 28;          //          pixels per image column count
  Index patch = 4;                 // p: patch side (must divide image_height and image_width)
  // Architecture.
  Index width = 64;                // D (divisible by heads)
  Index heads = 4;                 // H; per-head width d = D / H
  Index blocks = 2;                // encoder blocks
  Index mlp_hidden = 128;          // F
  Index head_hidden = 64;          // G (pooled head)
  Activation activation = Activation::silu;
  OutputHead head = OutputHead::pooled;
  Index num_outputs = 1;           // P (pooled head); per_token outputs V logits
  // Attention.
  TokenAttention attention = TokenAttention::flt;
  attn::Variant variant = attn::Variant::bias;   // flt and toeplitz (mask f or exp(beta f))
  bool causal = false;             // tokens only
  Index num_features = 32;         // m, Performer features per head (all kinds)
  Index num_frequencies = 16;      // R, RPE frequencies per head (flt)
  attn::SpectrumKind spectrum = attn::SpectrumKind::gaussian_mixture;  // or local_window
  Index spectrum_components = 2;   // T per head
  std::vector<Index> window_radii; // local_window: v_t per component (empty: 1, 3, 7, ... ladder)
  attn::ProposalKind proposal = attn::ProposalKind::spectrum;  // ignored for local_window (always uniform_box)
  double proposal_scale = 0.5;     // s0 of the gaussian proposal (cycles per position)
  double init_sigma_min = 0.02;    // gaussian_mixture init ladder (cycles per position): mask
  double init_sigma_max = 0.3;     //   widths 1/(pi sigma) from about 1 to 16 positions
  double init_beta = 1.0;          // bias variant: initial RPE scale per head
  bool redraw_features = false;    // redraw random features at every step (begin_step)
  Index block_size = 0;            // flt streaming block (0: attn::kDefaultBlockSize)
  // Randomness: initial weights and every random feature derive from this seed.
  std::uint64_t seed = 0;

  Index head_dim() const noexcept { return heads > 0 ? width / heads : 0; }
  Index coord_dim() const noexcept { return input == InputKind::patches ? 2 : 1; }
  Index grid_height() const noexcept { return patch > 0 ? image_height / patch : 0; }
  Index grid_width() const noexcept { return patch > 0 ? image_width / patch : 0; }
  Index patch_dim() const noexcept { return patch * patch; }
  Index tokens_per_image() const noexcept { return grid_height() * grid_width(); }
  Index output_width() const noexcept { return head == OutputHead::per_token ? vocab_size : num_outputs; }
  void validate() const;  // throws ConfigError naming the key
};

// Key/value strings (stable order) and back; from_strings starts from the defaults, overrides the
// given keys ('-' accepted for '_') and validates. Unknown key or malformed value: ConfigError.
// window_radii is comma separated.
std::vector<std::pair<std::string, std::string>> config_to_strings(const TokenModelConfig& config);
TokenModelConfig token_config_from_strings(const std::map<std::string, std::string>& values);

// The configuration keys that change nothing for `config`, and why, so that a front end can refuse
// them rather than accept them silently. performer has no RPE: every key of the mask (variant,
// spectrum and its initialisation) and of FLT's random Fourier features of it (num_frequencies,
// proposal, proposal_scale, block_size). toeplitz applies the mask exactly: FLT's Fourier-feature
// keys num_frequencies and block_size (the proposal still bounds the gaussian_mixture widths).
// flt and toeplitz, per setting: init_beta unless variant = bias; window_radii unless spectrum =
// local_window; with local_window (always the uniform_box proposal, its windows start equal)
// proposal, proposal_scale, init_sigma_min and init_sigma_max; proposal_scale unless proposal =
// gaussian. The input's and head's keys: vocab_size with patches; image_height, image_width and
// patch with tokens; head_hidden and num_outputs with the per_token head.
std::vector<KeyWithoutEffect> config_keys_without_effect(const TokenModelConfig& config);

// One ragged batch. tokens: `ids` holds the N token ids of all sequences, `sets` the sequences.
// patches: `pixels` holds one image per row (S x image_height*image_width, row-major pixels,
// already scaled as the caller wants, e.g. to [0, 1]); `sets` is filled by the model (every image
// has tokens_per_image() tokens) and may be left empty.
struct TokenBatch {
  RaggedIndex sets;
  std::vector<std::int32_t> ids;
  Mat<float> pixels;

  static TokenBatch sequences(std::span<const std::vector<std::int32_t>> seqs);
  static TokenBatch images(Mat<float> pixels);  // sets filled later from the configuration
  Index num_sets() const noexcept;              // S (images: pixels.rows())
};

// What forward keeps for backward (opaque; reuse one per batch): the shared block's and the
// attention kinds'.
template <class T>
struct TokenBlockCache : EncoderBlockCache<T> {
  attn::AttentionCache<T> flt;       // flt kind
  attn::KernelAttentionCache<T> kernel;  // performer / toeplitz: features, denominators
  std::vector<Vec<T>> masks;         // toeplitz: per head the mask on every offset of the grid
  std::vector<Vec<double>> f;        // toeplitz: per head f on every offset (before exp for bias)
};

template <class T>
struct TokenCache {
  RaggedIndex sets;
  std::vector<std::int32_t> ids;     // tokens
  Mat<T> coords;                     // N x dc positions
  attn::KernelGrid grid;             // performer / toeplitz: causal flag and mask layout
  LinearCache<T> patch_embed;        // patches (holds the N x p*p patch matrix)
  EmbeddingCache<T> token_embed;     // tokens
  std::vector<TokenBlockCache<T>> blocks;
  LayerNormCache<T> ln_out;
  Mat<T> pooled;                     // pooled head: S x D (input of LN_out)
  MlpCache<T> head_mlp;              // pooled head
  LinearCache<T> lm;                 // per_token head
  Index rows = 0;
};

template <class T>
class TokenModel {
 public:
  // Builds, initialises (seeded) and draws features (draw 0). Throws ConfigError.
  explicit TokenModel(TokenModelConfig config);

  const TokenModelConfig& config() const noexcept { return config_; }
  ParameterStore<T>& params() noexcept { return store_; }
  const ParameterStore<T>& params() const noexcept { return store_; }

  // Fills batch.sets for an image batch (no-op for tokens) and validates the batch against the
  // configuration: id range, pixel columns, empty sequences, per_token needs tokens. Throws
  // InvalidArgument naming the set and row.
  void prepare(TokenBatch& batch) const;

  // Forward: pooled: S x P; per_token: N x V. Fills `cache` for backward. Validates the batch like
  // prepare() (an image batch's own `sets` is ignored: the index follows from the configuration).
  Mat<T> forward(const TokenBatch& batch, TokenCache<T>& cache);
  // Accumulates dLoss/dparams into params().grads() from dout = dLoss/dout (shape of forward's
  // result). Zero the gradients with params().zero_grad() before.
  void backward(const TokenCache<T>& cache, ConstMatRef<T> dout);
  // Evaluation: forward with a private cache.
  Mat<T> predict(const TokenBatch& batch);

  // Random features: redraw with draw index `step` when config.redraw_features (needed with the
  // "spectrum" proposal, as the spectrum learns).
  void begin_step(std::uint64_t step);
  std::uint64_t feature_draw() const noexcept { return draw_; }
  void redraw_features(std::uint64_t draw);  // unconditional redraw (tests, tools)

  // FLT attention statistics summed over blocks (zero for the other kinds).
  attn::AttentionStats attention_stats() const;
  void reset_attention_stats();

  // The exact mask of block b, head h on every grid offset (layout of exact::ToeplitzGrid: 1-D
  // (2L-1) values for offsets -(L-1)..L-1, 2-D (2Hg-1)(2Wg-1)) for the given grid: f for variant
  // kronecker, exp(beta f) for bias. Valid for kinds flt and toeplitz.
  std::vector<double> exact_mask(Index block, Index head, const exact::ToeplitzGrid& grid) const;

  // Model file (.flt, io/model_file.hpp): metadata "model.kind" = "flt-token-model",
  // "model.version" = "1", "model.<key>" for every config key, "model.feature_draw", plus the
  // caller's entries (keys must not start with "model."); tensors "param.<name>" (F32 for float,
  // F64 for double) and the random features "features.block<b>.h<h>.omega|xi|pdf" (F64).
  io::ModelFile to_model_file(const std::map<std::string, std::string>& metadata = {}) const;
  static std::unique_ptr<TokenModel> from_model_file(
      const io::ModelFile& file, std::map<std::string, std::string>* metadata = nullptr);
  void save(const std::filesystem::path& path,
            const std::map<std::string, std::string>& metadata = {}) const;  // atomic
  static std::unique_ptr<TokenModel> load(const std::filesystem::path& path,
                                          std::map<std::string, std::string>* metadata = nullptr);

  // Internal layer handles (public for tests): the shared block (encoder_block.hpp) and the
  // attention kinds' state.
  struct Block : EncoderBlock<T> {
    std::unique_ptr<attn::FltAttention<T>> flt;  // flt kind
    PerformerFrequencies<T> performer;           // performer / toeplitz
    // toeplitz: spectral parameters per head and tensor, and beta (bias variant).
    std::vector<std::vector<ParamRef>> spectrum_refs;
    ParamRef beta;
  };
  const std::vector<Block>& layers() const noexcept { return blocks_; }

 private:
  void init_weights();
  void draw_all(std::uint64_t draw);
  RaggedIndex checked_sets(const TokenBatch& batch) const;  // validates; the batch's index

  TokenModelConfig config_;
  std::unique_ptr<attn::Spectrum> spectrum_;  // flt and toeplitz
  ParameterStore<T> store_;
  Embedding<T> embed_;
  Linear<T> patch_embed_;
  std::vector<Block> blocks_;
  LayerNorm<T> ln_out_;
  Mlp<T> head_mlp_;
  Linear<T> lm_;
  std::uint64_t draw_ = 0;
};

inline constexpr const char* kTokenModelKind = "flt-token-model";
inline constexpr const char* kTokenModelVersion = "1";

// Extracts the N x p*p patch matrix of an image batch (S x H*W pixels) in token order.
template <class T>
Mat<T> image_patches(const TokenModelConfig& config, const Mat<float>& pixels);

}  // namespace flt::models
