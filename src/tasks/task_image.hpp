// Image classification with the token model (patch embedding, FLT encoder with 2-D RPE, pooled
// head): `flt image train|eval` on Fashion-MNIST (or any IDX image/label pair of the same layout).
//
// Data: the 60,000 training images are split once (train::random_split, seed `split-seed`) into
// `validation` held-out images (default 5,000; they pick the best epoch) and the rest for training;
// the 10,000 test images are evaluated only at the end with the best checkpoint. Pixels are scaled
// to x = (p / 255 - mu) / sd with mu, sd the mean and standard deviation over the training pixels
// (stored in the model file, so `flt image eval` applies the same scaling).
// Augmentation (training only, per batch from the step's Rng): a random translation by
// (dy, dx) uniform in [-shift, shift]^2 pixels with the background value filling the border, and
// a horizontal flip with probability 1/2 when `flip`.
// Loss: softmax cross-entropy (core/losses.hpp), mean over the batch. Metrics: accuracy, loss,
// per-class accuracy and the confusion matrix. Selection metric: validation error rate (1 - acc).
#pragma once

#include "tasks/data_idx.hpp"
#include "tasks/task_common.hpp"

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

namespace flt::tasks {

struct ImageTrainConfig {
  std::filesystem::path data_dir;       // default_fashion_mnist_dir() when empty
  std::size_t validation = 5000;        // held out of the training images
  std::uint64_t split_seed = 0;
  std::size_t train_limit = 0;          // 0: all remaining training images
  std::size_t test_limit = 0;           // 0: all test images
  int shift = 0;                        // augmentation: max translation in pixels (0: off)
  bool flip = false;                    // augmentation: horizontal flips
  TokenModelConfig model;               // input/image size/outputs/seed are set from the data
  TaskRunConfig run;
};

struct ImageEvaluation {
  std::size_t count = 0;
  double loss = kNaN;
  double accuracy = kNaN;
  std::vector<std::size_t> per_class_count, per_class_correct;
  std::vector<std::vector<std::size_t>> confusion;  // [true][predicted]
  std::vector<int> predicted;                       // per evaluated image
  std::vector<std::size_t> indices;                 // per evaluated image: its 0-based index in the IDX file
  std::vector<int> truth;                           // per evaluated image: its label
  Mat<double> probabilities;                        // count x C: softmax of the logits
  std::string subset = "test";          // the split subset evaluated: names the output files and keys
};

struct ImageTrainResult {
  TaskRunResult run;
  std::size_t train_size = 0, validation_size = 0, test_size = 0;
  ImageEvaluation test;
  std::size_t parameters = 0;
};

io::OptionSchema image_option_schema();
ImageTrainConfig image_config_from_options(const io::ResolvedOptions& options);
ImageTrainConfig parse_image_train_command_line(const std::vector<std::string>& args);

// Trains, then evaluates the best model on the test images; writes into the run directory
// test_metrics.json, test_metrics.csv (per class), confusion.csv and test_predictions.csv (per
// image) besides run_task's files.
ImageTrainResult run_image_training(const ImageTrainConfig& config, const TaskOutput& output = {});

// Pixel scaling of a model file's metadata ("task.pixel_mean", "task.pixel_std").
struct PixelScaling {
  double mean = 0, sd = 1;
};

// Evaluates `model` on images `indices` of `set` (all when empty) in batches, with `threads`
// (0: unchanged).
ImageEvaluation evaluate_images(TokenModel<float>& model, const ImageSet& set, const PixelScaling& scaling,
                                const std::vector<std::size_t>& indices, std::size_t batch_size,
                                const EvalProgress& progress = {});

// `flt image eval`: loads a model file written by run_image_training and evaluates it on a subset
// ("test" or "train") of the IDX data in `data_dir` (limit 0: all). ModelFileError for a model file
// of another task.
ImageEvaluation evaluate_image_model(const std::filesystem::path& model_path, const std::filesystem::path& data_dir,
                                     const std::string& subset, std::size_t limit, std::size_t batch_size,
                                     const EvalProgress& progress = {});

std::string format_image_summary(const ImageTrainResult& result);
std::string format_image_evaluation(const ImageEvaluation& e);
// Writes <subset>_metrics.json, <subset>_metrics.csv, the confusion matrix (confusion.csv for
// the test subset, <subset>_confusion.csv otherwise) and <subset>_predictions.csv (one row per
// evaluated image: index, true class, predicted class, class probabilities) into `dir`, atomically.
void write_image_evaluation(const std::filesystem::path& dir, const ImageEvaluation& e,
                            const std::vector<std::pair<std::string, double>>& extra = {});

}  // namespace flt::tasks
