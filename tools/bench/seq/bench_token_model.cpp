// bench_token_model: training throughput of the token model on image batches: one
// training step = forward + softmax cross-entropy + backward + AdamW update, float32, timed over
// whole steps after warm-up. Throughput does not depend on the pixel values, so the images are
// seeded uniform noise of the Fashion-MNIST shape (28 x 28, one channel) with random labels.
//
// Usage: bench_token_model [--attention flt|performer|toeplitz] [--variant bias|kronecker]
//            [--width D] [--heads H] [--blocks B] [--mlp F] [--features m] [--frequencies R]
//            [--patch p] [--activation silu|gelu_tanh|...] [--batch S] [--steps n] [--threads t]
// Prints one line "RESULT key=value ..." with images_per_s and ms_per_step.
#include "core/losses.hpp"
#include "core/optim.hpp"
#include "core/random.hpp"
#include "models/token_model.hpp"

#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

using namespace flt;
using namespace flt::models;

int main(int argc, char** argv) {
  try {
    TokenModelConfig cfg;
    cfg.input = InputKind::patches;
    cfg.image_height = 28;
    cfg.image_width = 28;
    cfg.patch = 4;
    cfg.width = 64;
    cfg.heads = 4;
    cfg.blocks = 4;
    cfg.mlp_hidden = 128;
    cfg.head_hidden = 64;
    cfg.num_outputs = 10;
    cfg.attention = TokenAttention::flt;
    cfg.variant = attn::Variant::bias;
    cfg.num_features = 32;
    cfg.num_frequencies = 16;
    Index batch = 128, steps = 20;
    int threads = 1;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (i + 1 >= argc) throw InvalidArgument("missing value after " + a);
      const std::string v = argv[++i];
      if (a == "--attention") cfg.attention = token_attention_from_string(v);
      else if (a == "--variant") cfg.variant = attn::variant_from_string(v);
      else if (a == "--width") cfg.width = std::stol(v);
      else if (a == "--heads") cfg.heads = std::stol(v);
      else if (a == "--blocks") cfg.blocks = std::stol(v);
      else if (a == "--mlp") cfg.mlp_hidden = std::stol(v);
      else if (a == "--features") cfg.num_features = std::stol(v);
      else if (a == "--frequencies") cfg.num_frequencies = std::stol(v);
      else if (a == "--patch") cfg.patch = std::stol(v);
      else if (a == "--activation") cfg.activation = parse_activation(v);
      else if (a == "--batch") batch = std::stol(v);
      else if (a == "--steps") steps = std::stol(v);
      else if (a == "--threads") threads = std::stoi(v);
      else throw InvalidArgument("unknown option " + a);
    }
    omp_set_num_threads(threads);
    TokenModel<float> model(cfg);
    AdamW<float> opt(model.params().size());
    Rng rng(1);
    Mat<float> px(batch, 28 * 28);
    for (Index i = 0; i < px.size(); ++i) px.data()[i] = static_cast<float>(rng.uniform());
    std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
    for (auto& y : labels) y = static_cast<std::int32_t>(rng.next_u64() % 10);
    const TokenBatch tb = TokenBatch::images(px);
    TokenCache<float> cache;
    auto step = [&]() {
      const Mat<float> logits = model.forward(tb, cache);
      Mat<float> dlogits = Mat<float>::Zero(logits.rows(), logits.cols());
      cross_entropy_forward<float>(logits, labels);
      cross_entropy_backward<float>(logits, labels, dlogits);
      model.params().zero_grad();
      model.backward(cache, dlogits);
      opt.step(model.params(), 1e-3);
    };
    step();  // warm-up (allocations, FFTW plans)
    const auto t0 = std::chrono::steady_clock::now();
    for (Index s = 0; s < steps; ++s) step();
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf(
        "RESULT attention=%s variant=%s width=%ld heads=%ld blocks=%ld mlp=%ld m=%ld R=%ld patch=%ld "
        "tokens=%ld batch=%ld steps=%ld threads=%d params=%zu ms_per_step=%.2f images_per_s=%.1f\n",
        to_string(cfg.attention), attn::to_string(cfg.variant), static_cast<long>(cfg.width),
        static_cast<long>(cfg.heads), static_cast<long>(cfg.blocks),
        static_cast<long>(cfg.mlp_hidden), static_cast<long>(cfg.num_features),
        static_cast<long>(cfg.num_frequencies), static_cast<long>(cfg.patch),
        static_cast<long>(cfg.tokens_per_image()), static_cast<long>(batch),
        static_cast<long>(steps), threads, model.params().size(), 1e3 * sec / static_cast<double>(steps),
        static_cast<double>(batch * steps) / sec);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_token_model: " << e.what() << "\n";
    return 1;
  }
}
