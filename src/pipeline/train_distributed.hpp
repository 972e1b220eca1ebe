// Data-parallel training over the ranks of a comm::Communicator (one rank: the same arithmetic),
// used by run_training when the gradient is summed in chunks (TrainConfig::gradient_chunk, on
// by default under mpirun).
//
// Exact, rank-count-independent gradient sum. A global batch of B molecules (the order of the
// epoch's shuffle, identical on every rank) is cut into K = ceil(B / c) chunks of c consecutive
// molecules; chunk k runs on rank k mod P. Each chunk's gradient g_k (one forward and backward of
// the chunk, the loss derivative scaled by the counts of present labels of the WHOLE batch) is a
// function of the chunk alone, not of P. The chunks' gradients are added in 64-bit fixed point:
//   e = the exponent of max_k,j |g_kj| (one MPI_MAX of a scalar over the ranks),
//   q_kj = round(g_kj * 2^s), s = 62 - bits(K) - e   (so |sum_k q_kj| < 2^62: no overflow),
//   g_j = float(sum_k q_kj * 2^-s)                    (one integer MPI_SUM of the flat gradient).
// Integer addition is associative, so the sum is the same for every P, every reduction tree and
// every arrival order: P = 1 and P = 4 give bit-identical models. The rounding of q is at most
// 2^-(62-bits(K)) of the largest gradient entry per chunk (about 1e-17 relative for K < 64), far
// below the float rounding of the chunk gradients themselves.
//
// Data. The load is sharded: the first read of the inputs keeps, for every good molecule, what
// the split, the normalisation and the data checksum need (id, title, source, labels, atomic
// numbers and a 64-bit digest of the record's atoms, coordinates and labels) and no coordinates;
// the split then fixes the owners (training molecule at position k of the split on rank k mod P,
// validation and test molecules by evaluation batch: batch b on rank b mod P), and a second read
// keeps the coordinates of the rank's own molecules only, checking every digest against the first
// (load_coordinates in dataset.hpp). So no rank ever holds the coordinates of the whole dataset;
// the O(S) small values above (about a hundred bytes a molecule) stay on every rank. The data
// checksum is combined from the digests in split order (io/data_checksum.hpp), identical on
// every rank and for every P. The molecules of a step's chunks that live on other ranks arrive by
// one gather of the batch's owned molecules per step (a few kB).
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

// Which rank keeps which molecule (see the header comment); -1 for molecules in no subset.
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
  // non-finite loss or gradient (on every rank alike).
  double compute(models::MoleculeModel<float>& model, models::ModelCache<float>& cache, Dataset& data,
                 std::span<const std::size_t> batch, std::span<const int> owners,
                 const std::function<void(std::size_t, const Mat<double>&)>& on_prediction);

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
// each |indices| x P.
struct SharedPredictions {
  Mat<double> physical, normalised, normalised_labels;
};
SharedPredictions predict_shared(comm::Communicator& world, models::MoleculeModel<float>& model,
                                 const Dataset& data, std::span<const std::size_t> indices,
                                 std::size_t batch_size, std::size_t max_atoms = 0);

// Every rank's rows of `rows` (those listed in `mine` on each rank) on every rank.
void share_rows(comm::Communicator& world, Mat<double>& rows, std::span<const Index> mine);

// The attention statistics of every rank's forwards, summed (minimum for the relative denominator).
attn::AttentionStats share_attention_stats(comm::Communicator& world, const attn::AttentionStats& mine);

}  // namespace flt::pipeline::distributed
