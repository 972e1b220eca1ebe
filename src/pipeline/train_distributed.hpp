// Data-parallel training over the ranks of a comm::Communicator (one rank: the same arithmetic),
// used by run_training when the gradient is summed in chunks (TrainConfig::gradient_chunk, on
// by default under mpirun): a gradient sum independent of the rank count P, the molecules'
// owners, and evaluation split over the ranks.
//
// A global batch of B molecules is cut into K = ceil(B / c) chunks of c molecules; chunk k runs
// on rank k mod P, and its gradient g_k depends on the chunk alone. The chunks are added in
// 64-bit fixed point, the same sum for every P and reduction order:
//   e = exponent of max_k,j |g_kj| (MPI_MAX),   s = 62 - bits(K) - e,
//   q_kj = round(g_kj 2^s),   g_j = float(2^-s sum_k q_kj)   (integer MPI_SUM; |sum| < 2^62).
// Rounding, loss scaling, sharded data: docs/training.md, "Running on a cluster".
#pragma once

#include "comm/communicator.hpp"
#include "core/losses.hpp"
#include "models/molecule_model.hpp"
#include "pipeline/dataset.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace flt::pipeline::distributed {

// The chunk size used in an MPI job when the configuration leaves it at 0 (automatic).
inline constexpr std::size_t kDefaultGradientChunk = 8;

// max_j |values[j]|, or infinity when an entry is infinite or NaN.
float largest_magnitude(std::span<const float> values);

// Fixed-point exponent s for adding `terms` vectors whose largest magnitude is max_abs (finite,
// >= 0): every |round(x 2^s)| < 2^(62 - bits(terms)), so the sum of `terms` of them stays below
// 2^62 in magnitude.
int fixed_point_exponent(double max_abs, std::size_t terms);
// sums[j] += round(values[j] * 2^s) (round to nearest, ties to even).
void add_fixed_point(std::span<const float> values, int s, std::span<std::int64_t> sums);
// out[j] = float(sums[j] * 2^-s).
void from_fixed_point(std::span<const std::int64_t> sums, int s, std::span<float> out);

// Which rank keeps which molecule's coordinates: training molecule at position k of the split on
// rank k mod P, validation and test molecules by evaluation batch (batch b on rank b mod P); -1
// for molecules in no subset.
// Evaluation batches are cut by batch_indices(subset, eval_batch_size, atom_counts, eval_atoms)
// (eval_atoms = 0: by molecule count alone), as predict_shared cuts them.
std::vector<int> molecule_owners(std::size_t dataset_size, std::span<const std::size_t> train,
                                 std::span<const std::size_t> validation, std::span<const std::size_t> test,
                                 std::size_t eval_batch_size, int ranks,
                                 std::span<const std::size_t> atom_counts = {}, std::size_t eval_atoms = 0);

// One optimiser step's gradient of a global batch, as described above.
class DataParallelGradient {
 public:
  DataParallelGradient(comm::Communicator& world, std::size_t chunk, RegressionLoss loss);

  // Fills model.parameters().grads() with the gradient of the batch loss (mean over present
  // labels per target, as regression_loss_forward) of `batch`, identical on every rank, and
  // returns the loss. `owners` says which rank holds each molecule. `on_prediction(index, row)`
  // receives the predictions (physical units, 1 x P) of the molecules of this rank's chunks. Throws NumericalError on a
  // non-finite loss or gradient (on every rank alike). `offsets(b)`, when given, returns the
  // chunk's label offsets (MoleculeModel::label_offsets, e.g. kept per structure by the trainer:
  // the three-body reference's share is a descriptor pass); computed per chunk otherwise.
  double compute(models::MoleculeModel<float>& model, models::ModelCache<float>& cache, Dataset& data,
                 std::span<const std::size_t> batch, std::span<const int> owners,
                 const std::function<void(std::size_t, const Mat<double>&)>& on_prediction,
                 const std::function<Mat<double>(const Batch&)>& offsets = {});

  std::size_t chunk() const noexcept { return chunk_; }
  // Wall time summed over compute() calls, by phase.
  struct Times {
    double exchange = 0;  // gathering the molecules of this rank's chunks
    double wait = 0;      // the scalar MPI_MAX: absorbs waiting for the slowest rank
    double convert = 0;   // to and from fixed point
    double reduce = 0;    // the integer MPI_Allreduce of the flat gradient
  };
  const Times& times() const noexcept { return times_; }
  std::int64_t steps() const noexcept { return steps_; }
  // The most atoms of one chunk this rank ran forward and backward (a step's memory on a rank).
  std::size_t largest_chunk_atoms() const noexcept { return largest_chunk_atoms_; }

 private:
  comm::Communicator& world_;
  std::size_t chunk_;
  RegressionLoss loss_;
  std::vector<std::vector<float>> chunk_grads_;
  std::vector<std::int64_t> sums_;
  Times times_;
  std::int64_t steps_ = 0;
  std::size_t largest_chunk_atoms_ = 0;
};

// Rows computed by the evaluation batches of `indices` (batch b on rank b mod P, like
// predict_indices' batching: batch_size molecules and, when max_atoms > 0, at most max_atoms
// atoms), on every rank: physical predictions, normalised outputs and the normalised labels,
// each |indices| x P. `offsets` as in DataParallelGradient::compute.
struct SharedPredictions {
  Mat<double> physical, normalised, normalised_labels;
};
SharedPredictions predict_shared(comm::Communicator& world, models::MoleculeModel<float>& model,
                                 const Dataset& data, std::span<const std::size_t> indices,
                                 std::size_t batch_size, std::size_t max_atoms = 0,
                                 const std::function<Mat<double>(const Batch&)>& offsets = {});

// Every rank's rows of `rows` (those listed in `mine` on each rank) on every rank.
void share_rows(comm::Communicator& world, Mat<double>& rows, std::span<const Index> mine);

// The attention statistics of every rank's forwards, summed (minimum for the relative denominator).
attn::AttentionStats share_attention_stats(comm::Communicator& world, const attn::AttentionStats& mine);

}  // namespace flt::pipeline::distributed
