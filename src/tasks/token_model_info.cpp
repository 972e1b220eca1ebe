// Readable description of a token model file (see token_model_info.hpp).
#include "tasks/token_model_info.hpp"

#include "core/error.hpp"
#include "core/text.hpp"
#include "io/units.hpp"
#include "models/token_model.hpp"
#include "tasks/data_idx.hpp"
#include "tasks/smiles_task.hpp"
#include "tasks/task_common.hpp"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace flt::tasks {

namespace {

using Metadata = std::map<std::string, std::string>;

std::string task_title(const std::string& kind) {
  if (kind == "property") return "property (QM9 targets from SMILES: flt seq --task property)";
  if (kind == "lm") return "lm (causal SMILES character language model: flt seq --task lm)";
  if (kind == "image") return "image (image classifier: flt image)";
  return kind;
}

std::string architecture(const TokenModelConfig& c) {
  std::ostringstream o;
  o << "  input: ";
  if (c.input == InputKind::tokens)
    o << "tokens, vocabulary of " << c.vocab_size << "\n";
  else
    o << c.image_height << "x" << c.image_width << " pixel images cut into " << c.patch << "x" << c.patch
      << " patches: a " << c.grid_height() << "x" << c.grid_width() << " grid of " << c.tokens_per_image()
      << " tokens\n";
  o << "  encoder: " << c.blocks << " block" << (c.blocks == 1 ? "" : "s") << " of width " << c.width << ", "
    << c.heads << " head" << (c.heads == 1 ? "" : "s") << " of " << c.head_dim() << ", MLP hidden " << c.mlp_hidden
    << ", " << flt::to_string(c.activation) << "\n";
  o << "  attention: " << models::to_string(c.attention) << (c.causal ? ", causal" : ", bidirectional") << ", "
    << c.num_features << " Performer features per head";
  const std::string rpe_axes = c.coord_dim() == 1 ? "1-D" : "2-D";
  if (c.attention == TokenAttention::flt)
    o << "; " << rpe_axes << " RPE (" << attn::to_string(c.variant) << ", " << attn::to_string(c.spectrum) << " spectrum of "
      << c.spectrum_components << " components) estimated with " << c.num_frequencies
      << " random Fourier features per head";
  else if (c.attention == TokenAttention::toeplitz)
    o << "; exact " << rpe_axes << " RPE mask by FFT (" << attn::to_string(c.variant) << ", "
      << attn::to_string(c.spectrum) << " spectrum of " << c.spectrum_components << " components)";
  else
    o << "; no relative positional encoding";
  o << "\n  head: ";
  if (c.head == OutputHead::pooled)
    o << "pooled (mean over tokens), MLP hidden " << c.head_hidden << ", " << c.num_outputs << " output"
      << (c.num_outputs == 1 ? "" : "s") << "\n";
  else
    o << "per token, " << c.vocab_size << " logits\n";
  return o.str();
}

// The tokens on one line, as the vocabulary stores them (special tokens first).
std::string vocabulary_line(const Vocabulary& vocab) {
  std::string out;
  for (const auto& t : vocab.tokens()) {
    out += ' ';
    out += t;
  }
  return out;
}

void describe_property(std::ostream& o, const Metadata& meta, const std::string& src, const TokenModelConfig& c) {
  const Vocabulary vocab = model_vocabulary(meta, src, c.vocab_size);
  o << "\nvocabulary (" << vocab.size() << " " << require_metadata(meta, "task.tokenization", src)
    << "-level tokens):" << vocabulary_line(vocab) << "\n";
  const std::vector<std::string> names = split(require_metadata(meta, "task.targets", src));
  const std::vector<std::string> units = split(require_metadata(meta, "task.units", src));
  const std::vector<std::string> extensive = split(require_metadata(meta, "task.extensive", src));
  const std::vector<std::string> elements = split(require_metadata(meta, "task.elements", src));
  const std::vector<double> mean = parse_doubles(require_metadata(meta, "task.mean", src), src + " task.mean");
  const std::vector<double> scale = parse_doubles(require_metadata(meta, "task.scale", src), src + " task.scale");
  const std::vector<double> reference =
      parse_doubles(require_metadata(meta, "task.reference", src), src + " task.reference");
  const std::size_t P = names.size(), E = elements.size();
  if (units.size() != P || extensive.size() != P || mean.size() != P || scale.size() != P ||
      reference.size() != P * E || static_cast<std::size_t>(c.num_outputs) != P)
    throw ModelFileError(src, "task metadata: the targets, units, normalisation and reference values differ in size");

  o << "\ntargets (" << P << "):\n";
  char line[512];
  std::snprintf(line, sizeof line, "  %-10s %-14s %-10s %16s %16s\n", "name", "unit", "extensive", "mean", "scale");
  o << line;
  bool any_extensive = false;
  for (std::size_t t = 0; t < P; ++t) {
    any_extensive = any_extensive || extensive[t] == "1";
    std::snprintf(line, sizeof line, "  %-10s %-14s %-10s %16s %16s\n", names[t].c_str(), io::shown_unit(units[t]).c_str(),
                  extensive[t] == "1" ? "yes" : "no", shortest_number(mean[t]).c_str(), shortest_number(scale[t]).c_str());
    o << line;
  }
  o << "  (prediction = mean + scale x network output, plus for extensive targets the sum over the molecule's "
       "atoms of the reference values)\n";
  if (any_extensive) {
    o << "\nreference values per element (target unit per atom):\n  element";
    for (std::size_t t = 0; t < P; ++t)
      if (extensive[t] == "1") o << "  " << names[t] << " [" << io::shown_unit(units[t]) << "]";
    o << "\n";
    for (std::size_t e = 0; e < E; ++e) {
      o << "  " << elements[e];
      for (std::size_t t = 0; t < P; ++t)
        if (extensive[t] == "1") o << "  " << shortest_number(reference[t * E + e]);
      o << "\n";
    }
  }
  if (const auto it = meta.find("task.loss"); it != meta.end()) o << "\nloss: " << it->second << " on the standardised targets\n";
}

void describe_lm(std::ostream& o, const Metadata& meta, const std::string& src, const TokenModelConfig& c) {
  const Vocabulary vocab = model_vocabulary(meta, src, c.vocab_size);
  o << "\nvocabulary (" << vocab.size() << " " << require_metadata(meta, "task.tokenization", src)
    << "-level tokens):" << vocabulary_line(vocab) << "\n";
  o << "output: the next token's distribution over the vocabulary at every position (bits per character)\n";
}

void describe_image(std::ostream& o, const Metadata& meta, const std::string& src, const TokenModelConfig& c) {
  const double mean = parse_doubles(require_metadata(meta, "task.pixel_mean", src), src + " task.pixel_mean").at(0);
  const double sd = parse_doubles(require_metadata(meta, "task.pixel_std", src), src + " task.pixel_std").at(0);
  o << "\npixel scaling: x = (p / 255 - " << shortest_number(mean) << ") / " << shortest_number(sd)
    << " (mean and standard deviation of the training pixels)\n";
  if (const auto it = meta.find("task.data"); it != meta.end()) o << "training images: " << it->second << "\n";
  const auto& names = fashion_mnist_classes();
  o << "\nclasses (" << c.num_outputs << "):\n";
  for (Index k = 0; k < c.num_outputs; ++k) {
    const auto u = static_cast<std::size_t>(k);
    o << "  " << k << " " << (u < names.size() ? names[u] : std::string("(unnamed)")) << "\n";
  }
}

}  // namespace

bool is_token_model_file(const io::ModelFile& file) { return file.has_metadata("model.kind"); }

std::string describe_token_model(const io::ModelFile& file) {
  const std::string& src = file.source();
  Metadata meta;  // every entry except model.*
  const std::unique_ptr<TokenModel<float>> model = TokenModel<float>::from_model_file(file, &meta);
  const TokenModelConfig& c = model->config();
  std::ostringstream o;
  o << "model: " << src << "\n";
  o << "format: " << file.format() << ", version " << io::kModelFormatVersion << "\n";
  o << "kind: " << file.metadata("model.kind") << ", version " << file.metadata("model.version") << "\n";
  const auto kind = meta.find("task.kind");
  o << "task: " << (kind == meta.end() ? std::string("(not recorded)") : task_title(kind->second)) << "\n";
  o << "parameters: " << model->params().size() << "\n";

  o << "\nconfiguration:\n";
  std::size_t width = 0;
  const auto config = models::config_to_strings(c);
  for (const auto& [k, v] : config) width = std::max(width, k.size());
  for (const auto& [k, v] : config) {
    std::string key = k;
    key.resize(width, ' ');
    o << "  " << key << " = " << v << "\n";
  }
  o << "\narchitecture:\n" << architecture(c);

  if (kind != meta.end()) {
    if (kind->second == "property") describe_property(o, meta, src, c);
    else if (kind->second == "lm") describe_lm(o, meta, src, c);
    else if (kind->second == "image") describe_image(o, meta, src, c);
  }

  o << "\nmetadata:\n";
  bool any = false;
  for (const auto& [k, v] : meta) {
    // Long or multi-line values (the vocabulary, one token per line, shown above) by their
    // length, as describe_model does for molecule models.
    if (v.size() > 200 || v.find('\n') != std::string::npos) o << "  " << k << " = (" << v.size() << " characters)\n";
    else o << "  " << k << " = " << v << "\n";
    any = true;
  }
  if (!any) o << "  (none)\n";
  return o.str();
}

}  // namespace flt::tasks
