// Configuration of the token model: enum names, validation, key/value strings (model files).
#include "models/token_model.hpp"

#include "core/text.hpp"
#include "models/config_values.hpp"

#include <cmath>
#include <sstream>

namespace flt::models {

const char* to_string(InputKind kind) noexcept {
  return kind == InputKind::tokens ? "tokens" : "patches";
}
const char* to_string(TokenAttention kind) noexcept {
  switch (kind) {
    case TokenAttention::flt: return "flt";
    case TokenAttention::performer: return "performer";
    case TokenAttention::toeplitz: return "toeplitz";
  }
  return "?";
}
const char* to_string(OutputHead head) noexcept {
  return head == OutputHead::pooled ? "pooled" : "per_token";
}
InputKind input_kind_from_string(const std::string& name) {
  if (name == "tokens") return InputKind::tokens;
  if (name == "patches") return InputKind::patches;
  throw ConfigError("input: unknown input kind '" + name + "' (tokens, patches)");
}
TokenAttention token_attention_from_string(const std::string& name) {
  if (name == "flt") return TokenAttention::flt;
  if (name == "performer") return TokenAttention::performer;
  if (name == "toeplitz") return TokenAttention::toeplitz;
  throw ConfigError("attention: unknown attention kind '" + name + "' (flt, performer, toeplitz)");
}
OutputHead output_head_from_string(const std::string& name) {
  if (name == "pooled") return OutputHead::pooled;
  if (name == "per_token" || name == "per-token") return OutputHead::per_token;
  throw ConfigError("head: unknown output head '" + name + "' (pooled, per_token)");
}

void TokenModelConfig::validate() const {
  auto bad = [](const std::string& key, const std::string& why) {
    throw ConfigError("token model configuration: " + key + ": " + why);
  };
  if (input == InputKind::tokens) {
    if (vocab_size < 1) bad("vocab_size", "must be >= 1 for token input");
  } else {
    if (patch < 1) bad("patch", "must be >= 1");
    if (image_height < 1 || image_width < 1) bad("image_height", "image size must be positive");
    if (image_height % patch != 0 || image_width % patch != 0)
      bad("patch", "must divide image_height and image_width");
    if (causal) bad("causal", "only for token sequences (1-D)");
    if (head == OutputHead::per_token) bad("head", "per_token needs token input");
  }
  if (width < 1) bad("width", "must be >= 1");
  if (heads < 1) bad("heads", "must be >= 1");
  if (width % heads != 0) bad("width", "must be divisible by heads");
  if (blocks < 0) bad("blocks", "must be >= 0");
  if (mlp_hidden < 1) bad("mlp_hidden", "must be >= 1");
  if (head == OutputHead::pooled) {
    if (head_hidden < 1) bad("head_hidden", "must be >= 1");
    if (num_outputs < 1) bad("num_outputs", "must be >= 1");
  }
  if (num_features < 1) bad("num_features", "must be >= 1");
  if (attention == TokenAttention::flt && num_frequencies < 1)
    bad("num_frequencies", "must be >= 1");
  if (spectrum != attn::SpectrumKind::gaussian_mixture &&
      spectrum != attn::SpectrumKind::local_window)
    bad("spectrum", "the token model supports gaussian_mixture and local_window");
  if (spectrum_components < 1) bad("spectrum_components", "must be >= 1");
  if (!window_radii.empty()) {
    if (static_cast<Index>(window_radii.size()) != spectrum_components)
      bad("window_radii", "needs one radius per spectrum component");
    for (Index v : window_radii)
      if (v < 0) bad("window_radii", "radii must be >= 0");
  }
  if (!(proposal_scale > 0)) bad("proposal_scale", "must be positive");
  if (!(init_sigma_min > 0) || !(init_sigma_max >= init_sigma_min))
    bad("init_sigma_min", "need 0 < init_sigma_min <= init_sigma_max");
  if (!std::isfinite(init_beta)) bad("init_beta", "must be finite");
  if (block_size < 0) bad("block_size", "must be >= 0");
}

namespace {

std::string join(const std::vector<Index>& v) {
  std::vector<std::string> items;
  for (Index i : v) items.push_back(std::to_string(i));
  return flt::join(items, ",");
}

}  // namespace

std::vector<std::pair<std::string, std::string>> config_to_strings(const TokenModelConfig& c) {
  return {
      {"input", to_string(c.input)},
      {"vocab_size", std::to_string(c.vocab_size)},
      {"image_height", std::to_string(c.image_height)},
      {"image_width", std::to_string(c.image_width)},
      {"patch", std::to_string(c.patch)},
      {"width", std::to_string(c.width)},
      {"heads", std::to_string(c.heads)},
      {"blocks", std::to_string(c.blocks)},
      {"mlp_hidden", std::to_string(c.mlp_hidden)},
      {"head_hidden", std::to_string(c.head_hidden)},
      {"activation", flt::to_string(c.activation)},
      {"head", to_string(c.head)},
      {"num_outputs", std::to_string(c.num_outputs)},
      {"attention", to_string(c.attention)},
      {"variant", attn::to_string(c.variant)},
      {"causal", c.causal ? "true" : "false"},
      {"num_features", std::to_string(c.num_features)},
      {"num_frequencies", std::to_string(c.num_frequencies)},
      {"spectrum", attn::to_string(c.spectrum)},
      {"spectrum_components", std::to_string(c.spectrum_components)},
      {"window_radii", join(c.window_radii)},
      {"proposal", attn::to_string(c.proposal)},
      {"proposal_scale", shortest_number(c.proposal_scale)},
      {"init_sigma_min", shortest_number(c.init_sigma_min)},
      {"init_sigma_max", shortest_number(c.init_sigma_max)},
      {"init_beta", shortest_number(c.init_beta)},
      {"redraw_features", c.redraw_features ? "true" : "false"},
      {"block_size", std::to_string(c.block_size)},
      {"seed", std::to_string(c.seed)},
  };
}

std::vector<KeyWithoutEffect> config_keys_without_effect(const TokenModelConfig& c) {
  std::vector<KeyWithoutEffect> out;
  auto add = [&out](std::initializer_list<const char*> keys, const char* why) {
    for (const char* key : keys) out.push_back({key, why});
  };
  if (c.attention == TokenAttention::performer) {
    add({"variant", "num_frequencies", "spectrum", "spectrum_components", "window_radii", "proposal",
         "proposal_scale", "init_sigma_min", "init_sigma_max", "init_beta", "block_size"},
        "performer attention has no relative positional encoding");
  } else {
    if (c.attention == TokenAttention::toeplitz)
      add({"num_frequencies", "block_size"},
          "toeplitz applies the RPE mask exactly by FFT, without FLT's random Fourier features or its "
          "streaming blocks");
    if (c.variant != attn::Variant::bias) add({"init_beta"}, "only with variant = bias");
    if (c.spectrum == attn::SpectrumKind::local_window) {
      // The local window is sampled on the aliasing box whatever the proposal, and starts with
      // equal window weights: no gaussian proposal, no sigma ladder.
      add({"proposal", "proposal_scale"}, "spectrum = local_window always uses the uniform_box proposal");
      add({"init_sigma_min", "init_sigma_max"}, "only with spectrum = gaussian_mixture");
    } else {
      add({"window_radii"}, "only with spectrum = local_window");
      if (c.proposal != attn::ProposalKind::gaussian) add({"proposal_scale"}, "only with proposal = gaussian");
    }
  }
  if (c.input == InputKind::tokens)
    add({"image_height", "image_width", "patch"}, "only with input = patches");
  else
    add({"vocab_size"}, "only with input = tokens");
  if (c.head == OutputHead::per_token)
    add({"head_hidden", "num_outputs"}, "the per_token head is one linear layer onto the vocabulary");
  return out;
}

TokenModelConfig token_config_from_strings(const std::map<std::string, std::string>& values) {
  const ConfigReader in("token model configuration", values);
  TokenModelConfig c;
  for (const auto& [k, v] : in.values()) {
    if (k == "input") c.input = input_kind_from_string(v);
    else if (k == "vocab_size") c.vocab_size = in.index(k, v);
    else if (k == "image_height") c.image_height = in.index(k, v);
    else if (k == "image_width") c.image_width = in.index(k, v);
    else if (k == "patch") c.patch = in.index(k, v);
    else if (k == "width") c.width = in.index(k, v);
    else if (k == "heads") c.heads = in.index(k, v);
    else if (k == "blocks") c.blocks = in.index(k, v);
    else if (k == "mlp_hidden") c.mlp_hidden = in.index(k, v);
    else if (k == "head_hidden") c.head_hidden = in.index(k, v);
    else if (k == "activation") c.activation = parse_activation(v);
    else if (k == "head") c.head = output_head_from_string(v);
    else if (k == "num_outputs") c.num_outputs = in.index(k, v);
    else if (k == "attention") c.attention = token_attention_from_string(v);
    else if (k == "variant") c.variant = attn::variant_from_string(v);
    else if (k == "causal") c.causal = in.boolean(k, v);
    else if (k == "num_features") c.num_features = in.index(k, v);
    else if (k == "num_frequencies") c.num_frequencies = in.index(k, v);
    else if (k == "spectrum") c.spectrum = attn::spectrum_kind_from_string(v);
    else if (k == "spectrum_components") c.spectrum_components = in.index(k, v);
    else if (k == "window_radii") {
      c.window_radii.clear();
      std::stringstream ss(v);
      std::string item;
      while (std::getline(ss, item, ','))
        if (!item.empty()) c.window_radii.push_back(in.index(k, item));
    } else if (k == "proposal") c.proposal = attn::proposal_kind_from_string(v);
    else if (k == "proposal_scale") c.proposal_scale = in.number(k, v);
    else if (k == "init_sigma_min") c.init_sigma_min = in.number(k, v);
    else if (k == "init_sigma_max") c.init_sigma_max = in.number(k, v);
    else if (k == "init_beta") c.init_beta = in.number(k, v);
    else if (k == "redraw_features") c.redraw_features = in.boolean(k, v);
    else if (k == "block_size") c.block_size = in.index(k, v);
    else if (k == "seed") c.seed = in.unsigned_integer(k, v);
    else in.fail("unknown key '" + k + "'");
  }
  c.validate();
  return c;
}

}  // namespace flt::models
