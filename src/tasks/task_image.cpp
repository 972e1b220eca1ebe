// Image classification task (see task_image.hpp). Shapes: S images per batch, H x W pixels,
// C classes; pixels S x (H W), logits S x C.
#include "tasks/task_image.hpp"

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/losses.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"
#include "io/data_checksum.hpp"
#include "io/progress.hpp"
#include "train/split.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

namespace flt::tasks {

namespace fs = std::filesystem;
using io::OptionType;

namespace {

// Keys of TokenModelConfig that the image task sets from the data and the run.
const std::vector<std::string>& owned_keys() {
  static const std::vector<std::string> k = {"input", "vocab_size", "image_height", "image_width", "head",
                                             "num_outputs", "causal", "seed"};
  return k;
}

TokenModelConfig image_model_defaults() {
  TokenModelConfig c;
  c.input = InputKind::patches;
  c.head = OutputHead::pooled;
  c.patch = 4;
  c.width = 64;
  c.heads = 4;
  c.blocks = 3;
  c.mlp_hidden = 128;
  c.head_hidden = 64;
  c.num_features = 32;
  c.num_frequencies = 16;
  c.num_outputs = 10;
  return c;
}

// The pixels of images `idx` scaled to (p/255 - mean)/sd, one image per row; with `rng`, each
// image is translated by up to `shift` pixels and flipped with probability 1/2 when `flip`.
Mat<float> image_rows(const ImageSet& set, std::span<const std::size_t> idx, const PixelScaling& sc, int shift, bool flip,
                      Rng* rng) {
  const auto H = static_cast<Index>(set.rows), W = static_cast<Index>(set.cols);
  const float background = static_cast<float>((0.0 - sc.mean) / sc.sd);
  Mat<float> out(static_cast<Index>(idx.size()), H * W);
  for (std::size_t s = 0; s < idx.size(); ++s) {
    const std::uint8_t* img = set.image(idx[s]);
    Index dy = 0, dx = 0;
    bool mirror = false;
    if (rng) {
      if (shift > 0) {
        dy = static_cast<Index>(rng->below(static_cast<std::uint64_t>(2 * shift + 1))) - shift;
        dx = static_cast<Index>(rng->below(static_cast<std::uint64_t>(2 * shift + 1))) - shift;
      }
      if (flip) mirror = rng->uniform() < 0.5;
    }
    for (Index y = 0; y < H; ++y)
      for (Index x = 0; x < W; ++x) {
        // Output pixel (y, x) shows source pixel (y - dy, x' - dx), x' the (mirrored) column.
        const Index sy = y - dy;
        const Index sx = (mirror ? W - 1 - x : x) - dx;
        float v = background;
        if (sy >= 0 && sy < H && sx >= 0 && sx < W)
          v = static_cast<float>((img[sy * W + sx] / 255.0 - sc.mean) / sc.sd);
        out(static_cast<Index>(s), y * W + x) = v;
      }
  }
  return out;
}

class ImageTask final : public TrainableTask {
 public:
  ImageTask(const ImageSet& set, std::vector<std::size_t> train, std::vector<std::size_t> validation, PixelScaling sc,
            const ImageTrainConfig& cfg)
      : set_(set), train_(std::move(train)), val_(std::move(validation)), sc_(sc), cfg_(cfg) {}

  std::size_t train_size() const override { return train_.size(); }
  std::vector<std::string> metric_columns() const override { return {"accuracy"}; }

  StepResult train_batch(TokenModel<float>& model, std::span<const std::size_t> examples, Rng& rng) override {
    std::vector<std::size_t> idx(examples.size());
    std::vector<std::int32_t> labels(examples.size());
    for (std::size_t k = 0; k < examples.size(); ++k) {
      idx[k] = train_[examples[k]];
      labels[k] = set_.labels[idx[k]];
    }
    TokenBatch batch = TokenBatch::images(image_rows(set_, idx, sc_, cfg_.shift, cfg_.flip, &rng));
    const Mat<float> logits = model.forward(batch, cache_);
    const LossValue lv = cross_entropy_forward<float>(logits, labels);
    Mat<float> d = Mat<float>::Zero(logits.rows(), logits.cols());
    cross_entropy_backward<float>(logits, labels, d);
    model.backward(cache_, d);
    return {lv.value, static_cast<double>(examples.size())};
  }

  EvalResult validate(TokenModel<float>& model) override {
    EvalResult r;
    if (val_.empty()) return r;
    const ImageEvaluation e = evaluate_images(model, set_, sc_, val_, cfg_.run.eval_batch_size);
    r.loss = e.loss;
    r.metrics = {e.accuracy};
    r.selection = 1.0 - e.accuracy;
    r.count = e.count;
    return r;
  }

  std::string data_fingerprint() const override { return fingerprint(train_); }
  std::string validation_fingerprint() const override { return fingerprint(val_); }

  std::string fingerprint(const std::vector<std::size_t>& rows) const {
    // Per image: its pixels and label.
    std::vector<std::uint64_t> digests;
    std::string bytes;
    for (std::size_t i : rows) {
      bytes.assign(reinterpret_cast<const char*>(set_.image(i)), set_.rows * set_.cols);
      bytes.push_back(static_cast<char>(set_.labels[i]));
      digests.push_back(example_digest(bytes));
    }
    return io::training_data_checksum(digests);
  }

  std::map<std::string, std::string> model_metadata() const override {
    std::map<std::string, std::string> m;
    m["task.kind"] = "image";
    m["task.pixel_mean"] = io::csv_number(sc_.mean);
    m["task.pixel_std"] = io::csv_number(sc_.sd);
    m["task.num_classes"] = std::to_string(set_.num_classes);
    m["task.data"] = set_.images_source;
    return m;
  }

 private:
  const ImageSet& set_;
  std::vector<std::size_t> train_, val_;
  PixelScaling sc_;
  const ImageTrainConfig& cfg_;
  TokenCache<float> cache_;
};

}  // namespace

ImageEvaluation evaluate_images(TokenModel<float>& model, const ImageSet& set, const PixelScaling& sc,
                                const std::vector<std::size_t>& indices_in, std::size_t batch_size,
                                const EvalProgress& progress) {
  std::vector<std::size_t> indices = indices_in;
  if (indices.empty()) {
    indices.resize(set.count);
    for (std::size_t i = 0; i < set.count; ++i) indices[i] = i;
  }
  require(batch_size > 0, "evaluate_images: batch size must be positive");
  const auto C = static_cast<std::size_t>(set.num_classes);
  ImageEvaluation e;
  e.count = indices.size();
  e.per_class_count.assign(C, 0);
  e.per_class_correct.assign(C, 0);
  e.confusion.assign(C, std::vector<std::size_t>(C, 0));
  e.indices = indices;
  e.probabilities.resize(static_cast<Index>(indices.size()), static_cast<Index>(C));
  double loss_sum = 0;
  std::size_t correct = 0;
  for (std::size_t b = 0; b < indices.size(); b += batch_size) {
    const std::span<const std::size_t> idx(indices.data() + b, std::min(batch_size, indices.size() - b));
    std::vector<std::int32_t> labels(idx.size());
    for (std::size_t k = 0; k < idx.size(); ++k) labels[k] = set.labels[idx[k]];
    const Mat<float> logits = model.predict(TokenBatch::images(image_rows(set, idx, sc, 0, false, nullptr)));
    if (logits.cols() != static_cast<Index>(C))
      throw InvalidArgument("the model has " + std::to_string(logits.cols()) + " outputs, the data " + std::to_string(C) + " classes");
    if (progress) progress(b + idx.size(), indices.size());
    loss_sum += cross_entropy_forward<float>(logits, labels).value * static_cast<double>(idx.size());
    for (std::size_t k = 0; k < idx.size(); ++k) {
      Index best = 0;
      logits.row(static_cast<Index>(k)).maxCoeff(&best);  // first maximum on ties
      const auto y = static_cast<std::size_t>(labels[k]);
      // Softmax in double, shifted by the row's maximum.
      const auto row = static_cast<Index>(b + k);
      const Vec<double> z = logits.row(static_cast<Index>(k)).cast<double>().transpose();
      const Vec<double> p = (z.array() - z.maxCoeff()).exp().matrix();
      e.probabilities.row(row) = (p / p.sum()).transpose();
      e.truth.push_back(labels[k]);
      e.predicted.push_back(static_cast<int>(best));
      ++e.per_class_count[y];
      ++e.confusion[y][static_cast<std::size_t>(best)];
      if (static_cast<std::size_t>(best) == y) {
        ++correct;
        ++e.per_class_correct[y];
      }
    }
  }
  e.loss = indices.empty() ? kNaN : loss_sum / static_cast<double>(indices.size());
  e.accuracy = indices.empty() ? kNaN : static_cast<double>(correct) / static_cast<double>(indices.size());
  return e;
}

io::OptionSchema image_option_schema() {
  io::OptionSchema s;
  s.option("data-dir", "data", OptionType::path, std::nullopt,
           "directory of the IDX files (default: $FLT_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist)")
      .optional = true;
  s.option("validation", "data", OptionType::integer, "5000", "training images held out for validation (best epoch)");
  s.option("split-seed", "data", OptionType::integer, "0", "seed of the train/validation split");
  s.option("train-limit", "data", OptionType::integer, "0", "train on at most this many images (0: all)");
  s.option("test-limit", "data", OptionType::integer, "0", "test on at most this many images (0: all)");
  s.option("shift", "data", OptionType::integer, "0", "augmentation: random translation up to this many pixels (0: off)");
  s.option("flip", "data", OptionType::boolean, "false", "augmentation: random horizontal flips");
  add_run_options(s, 10, 64, 2e-3);
  add_model_options(s, image_model_defaults(), owned_keys());
  return s;
}

ImageTrainConfig image_config_from_options(const io::ResolvedOptions& o) {
  ImageTrainConfig c;
  if (o.has("data-dir")) c.data_dir = o.get_string("data-dir");
  auto nonneg = [&](const char* name) {
    const auto v = o.get_int(name);
    if (v < 0) throw ConfigError(std::string("--") + name + " must be >= 0");
    return static_cast<std::size_t>(v);
  };
  c.validation = nonneg("validation");
  c.split_seed = static_cast<std::uint64_t>(o.get_int("split-seed"));
  c.train_limit = nonneg("train-limit");
  c.test_limit = nonneg("test-limit");
  c.shift = static_cast<int>(nonneg("shift"));
  if (c.shift > 8) throw ConfigError("--shift must be at most 8 pixels");
  c.flip = o.get_bool("flip");
  c.run = run_config_from_options(o);
  c.model = model_config_from_options(o, image_model_defaults(), owned_keys());
  set_resolved_ini(c.run, o, "flt image train configuration (resolved; read it back with --config FILE)");
  return c;
}

ImageTrainConfig parse_image_train_command_line(const std::vector<std::string>& args) {
  static const io::OptionSchema schema = image_option_schema();
  std::vector<std::string> positional;
  const io::ResolvedOptions o = parse_task_command_line(schema, args, &positional);
  if (!positional.empty()) throw ConfigError("unexpected argument '" + positional.front() + "'");
  return image_config_from_options(o);
}

ImageTrainResult run_image_training(const ImageTrainConfig& cfg, const TaskOutput& output) {
  if (cfg.run.threads > 0) omp_set_num_threads(cfg.run.threads);
  const fs::path dir = cfg.data_dir.empty() ? default_fashion_mnist_dir() : cfg.data_dir;
  const ImageSet train_set = load_fashion_mnist(dir, "train");
  const ImageSet test_set = load_fashion_mnist(dir, "test");
  if (train_set.rows != test_set.rows || train_set.cols != test_set.cols)
    throw InputError(test_set.images_source, 0, "test images are " + std::to_string(test_set.rows) + "x" +
                                                    std::to_string(test_set.cols) + ", training images " +
                                                    std::to_string(train_set.rows) + "x" + std::to_string(train_set.cols));
  if (cfg.validation >= train_set.count) throw ConfigError("--validation must be smaller than the training set");
  train::SplitSizes sizes;
  sizes.train = {train::SubsetSize::Kind::rest, 0};
  sizes.validation = {train::SubsetSize::Kind::count, static_cast<double>(cfg.validation)};
  sizes.test = {train::SubsetSize::Kind::count, 0};
  const train::Split split = train::random_split(train_set.count, sizes, cfg.split_seed);
  const std::vector<std::size_t> train_idx = first_n(split.train, cfg.train_limit);

  // Pixel scaling from the training images only.
  PixelScaling sc;
  {
    double sum = 0, sum2 = 0;
    const double npx = static_cast<double>(train_idx.size() * train_set.rows * train_set.cols);
    for (std::size_t i : train_idx) {
      const std::uint8_t* img = train_set.image(i);
      for (std::size_t p = 0; p < train_set.rows * train_set.cols; ++p) {
        const double v = img[p] / 255.0;
        sum += v;
        sum2 += v * v;
      }
    }
    sc.mean = sum / npx;
    const double var = sum2 / npx - sc.mean * sc.mean;
    sc.sd = var > 1e-12 ? std::sqrt(var) : 1.0;
  }

  TokenModelConfig mc = cfg.model;
  mc.input = InputKind::patches;
  mc.image_height = static_cast<Index>(train_set.rows);
  mc.image_width = static_cast<Index>(train_set.cols);
  mc.head = OutputHead::pooled;
  mc.num_outputs = train_set.num_classes;
  mc.causal = false;
  mc.seed = cfg.run.seed;
  TokenModel<float> model(mc);
  if (output.progress)
    *output.progress << "Fashion-MNIST " << dir.string() << ": " << train_idx.size() << " train, " << split.validation.size()
                     << " validation, " << (cfg.test_limit ? std::min(cfg.test_limit, test_set.count) : test_set.count)
                     << " test images; model " << to_string(mc.attention) << ", " << model.params().size()
                     << " parameters, " << mc.tokens_per_image() << " patches of " << mc.patch << "x" << mc.patch << "\n"
                     << std::flush;

  ImageTask task(train_set, train_idx, split.validation, sc, cfg);
  ImageTrainResult r;
  r.parameters = model.params().size();
  r.train_size = train_idx.size();
  r.validation_size = split.validation.size();
  r.run = run_task(cfg.run, model, task, output);
  if (r.run.stopped_by_hook) return r;
  std::vector<std::size_t> test_idx(cfg.test_limit ? std::min(cfg.test_limit, test_set.count) : test_set.count);
  for (std::size_t i = 0; i < test_idx.size(); ++i) test_idx[i] = i;
  r.test_size = test_idx.size();
  r.test = evaluate_images(model, test_set, sc, test_idx, cfg.run.eval_batch_size);
  write_image_evaluation(r.run.run_dir, r.test, run_numbers(r.run, r.parameters,
              {{"validation_accuracy", r.run.best_validation.metrics.empty() ? kNaN : r.run.best_validation.metrics[0]},
               {"train_images", static_cast<double>(r.train_size)}}));
  return r;
}

void write_image_evaluation(const fs::path& dir, const ImageEvaluation& e,
                            const std::vector<std::pair<std::string, double>>& extra) {
  std::vector<std::pair<std::string, double>> numbers{{e.subset + "_accuracy", e.accuracy}, {e.subset + "_loss", e.loss},
                                                      {e.subset + "_images", static_cast<double>(e.count)}};
  numbers.insert(numbers.end(), extra.begin(), extra.end());
  write_metrics_json(dir / (e.subset + "_metrics.json"), numbers, {{"task", "image"}, {"subset", e.subset}});
  const auto& names = fashion_mnist_classes();
  {
    io::AtomicOutputFile out(dir / (e.subset + "_metrics.csv"));
    io::write_csv_row(out.stream(), {"class", "name", "count", "correct", "accuracy"});
    std::size_t total = 0, correct = 0;
    for (std::size_t c = 0; c < e.per_class_count.size(); ++c) {
      const double acc = e.per_class_count[c] ? static_cast<double>(e.per_class_correct[c]) / static_cast<double>(e.per_class_count[c]) : kNaN;
      io::write_csv_row(out.stream(), {std::to_string(c), c < names.size() ? names[c] : "", std::to_string(e.per_class_count[c]),
                                          std::to_string(e.per_class_correct[c]), io::csv_number(acc)});
      total += e.per_class_count[c];
      correct += e.per_class_correct[c];
    }
    io::write_csv_row(out.stream(), {"all", "", std::to_string(total), std::to_string(correct), io::csv_number(e.accuracy)});
    out.commit();
  }
  {
    // One row per evaluated image, in the evaluated order: every image of the subset appears.
    // Probabilities: the softmax of the model's logits (dimensionless), one column per class,
    // named by the class.
    io::AtomicOutputFile out(dir / (e.subset + "_predictions.csv"));
    std::vector<std::string> header{"index", "true_class", "predicted_class"};
    for (Index c = 0; c < e.probabilities.cols(); ++c) {
      const auto u = static_cast<std::size_t>(c);
      std::string name = "p(";
      name += u < names.size() ? names[u] : "class " + std::to_string(c);
      name += ')';
      header.push_back(std::move(name));
    }
    io::write_csv_row(out.stream(), header);
    for (std::size_t i = 0; i < e.indices.size(); ++i) {
      std::vector<std::string> row{std::to_string(e.indices[i]), std::to_string(e.truth[i]), std::to_string(e.predicted[i])};
      for (Index c = 0; c < e.probabilities.cols(); ++c)
        row.push_back(io::csv_number(e.probabilities(static_cast<Index>(i), c)));
      io::write_csv_row(out.stream(), row);
    }
    out.commit();
  }
  {
    io::AtomicOutputFile out(dir / (e.subset == "test" ? std::string("confusion.csv") : e.subset + "_confusion.csv"));
    std::vector<std::string> header{"true\\predicted"};
    for (std::size_t c = 0; c < e.confusion.size(); ++c) header.push_back(std::to_string(c));
    io::write_csv_row(out.stream(), header);
    for (std::size_t c = 0; c < e.confusion.size(); ++c) {
      std::vector<std::string> row{std::to_string(c)};
      for (auto v : e.confusion[c]) row.push_back(std::to_string(v));
      io::write_csv_row(out.stream(), row);
    }
    out.commit();
  }
}

ImageEvaluation evaluate_image_model(const fs::path& model_path, const fs::path& data_dir, const std::string& subset,
                                     std::size_t limit, std::size_t batch_size, const EvalProgress& progress) {
  std::map<std::string, std::string> meta;
  auto model = TokenModel<float>::load(model_path, &meta);
  const std::string src = model_path.string();
  if (require_metadata(meta, "task.kind", src) != "image")
    throw ModelFileError(src, "a model of task '" + meta["task.kind"] + "', not an image classifier");
  PixelScaling sc;
  sc.mean = parse_doubles(require_metadata(meta, "task.pixel_mean", src), src).at(0);
  sc.sd = parse_doubles(require_metadata(meta, "task.pixel_std", src), src).at(0);
  const ImageSet set = load_fashion_mnist(data_dir.empty() ? default_fashion_mnist_dir() : data_dir, subset);
  if (static_cast<Index>(set.rows) != model->config().image_height || static_cast<Index>(set.cols) != model->config().image_width)
    throw InputError(set.images_source, 0, "images are " + std::to_string(set.rows) + "x" + std::to_string(set.cols) +
                                               ", the model expects " + std::to_string(model->config().image_height) + "x" +
                                               std::to_string(model->config().image_width));
  std::vector<std::size_t> idx(limit ? std::min(limit, set.count) : set.count);
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  ImageEvaluation e = evaluate_images(*model, set, sc, idx, batch_size, progress);
  e.subset = subset;
  return e;
}

std::string format_image_evaluation(const ImageEvaluation& e) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(4);
  out << "images: " << e.count << "\naccuracy: " << e.accuracy << "\nloss (cross-entropy, nats): " << e.loss << "\n";
  const auto& names = fashion_mnist_classes();
  out << "per class:\n";
  for (std::size_t c = 0; c < e.per_class_count.size(); ++c) {
    const double acc = e.per_class_count[c] ? static_cast<double>(e.per_class_correct[c]) / static_cast<double>(e.per_class_count[c]) : kNaN;
    out << "  " << c << " " << std::left << std::setw(12) << (c < names.size() ? names[c] : "") << std::right << std::setw(8)
        << e.per_class_count[c] << "  " << acc << "\n";
  }
  return out.str();
}

std::string format_image_summary(const ImageTrainResult& r) {
  std::ostringstream out;
  if (!write_run_summary(out, r.run, std::to_string(r.parameters) + " parameters", "images",
                         r.train_size, r.validation_size, r.test_size))
    return out.str();
  out << std::fixed << std::setprecision(4);
  if (!r.run.best_validation.metrics.empty()) out << "validation accuracy (best epoch): " << r.run.best_validation.metrics[0] << "\n";
  out << "test accuracy: " << r.test.accuracy << " (" << r.test.count << " images), test loss " << r.test.loss << "\n";
  return out.str();
}

}  // namespace flt::tasks
