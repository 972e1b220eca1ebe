// Data-parallel training pieces (see train_distributed.hpp for the algorithm).
#include "pipeline/train_distributed.hpp"

#include "core/error.hpp"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <limits>
#include <string>

namespace flt::pipeline::distributed {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void put_molecule(comm::ByteWriter& out, const models::Molecule& m) {
  out.put_span(std::span<const std::int32_t>(m.atomic_numbers));
  out.put_span(std::span<const std::array<double, 3>>(m.positions));
  out.put_span(std::span<const std::int32_t>(m.formal_charges));
}

models::Molecule get_molecule(comm::ByteReader& in) {
  models::Molecule m;
  m.atomic_numbers = in.get_vector<std::int32_t>();
  m.positions = in.get_vector<std::array<double, 3>>();
  m.formal_charges = in.get_vector<std::int32_t>();
  return m;
}

}  // namespace

// x * 0 is 0 for every finite x and NaN otherwise, so the sum of those flags any non-finite entry;
// both reductions vectorise.
float largest_magnitude(std::span<const float> values) {
  float largest = 0.0f, poison = 0.0f;
  const float* v = values.data();
  const auto n = static_cast<std::ptrdiff_t>(values.size());
#pragma omp parallel for simd schedule(static) reduction(max : largest) reduction(+ : poison)
  for (std::ptrdiff_t j = 0; j < n; ++j) {
    const float a = std::abs(v[j]);
    largest = a > largest ? a : largest;
    poison += v[j] * 0.0f;
  }
  return poison == 0.0f ? largest : std::numeric_limits<float>::infinity();
}

int fixed_point_exponent(double max_abs, std::size_t terms) {
  require(std::isfinite(max_abs) && max_abs >= 0, "fixed_point_exponent: the magnitude must be finite");
  if (max_abs == 0) return 0;
  int e = 0;
  std::frexp(max_abs, &e);  // max_abs < 2^e
  const int term_bits = static_cast<int>(std::bit_width(std::max<std::size_t>(terms, 1)));
  return 62 - term_bits - e;
}

// A float times 2^s is exact in double for the exponents fixed_point_exponent gives (|s| < 300),
// so multiplying by the power of two and rounding once (llrint: to nearest, ties to even, the
// default rounding mode) is the exact round(x 2^s). Compiled with -fno-math-errno so llrint is one
// instruction.
void add_fixed_point(std::span<const float> values, int s, std::span<std::int64_t> sums) {
  require(values.size() == sums.size(), "add_fixed_point: sizes differ");
  require(s > -900 && s < 900, "add_fixed_point: exponent out of range");
  const double scale = std::ldexp(1.0, s);
  const float* v = values.data();
  std::int64_t* out = sums.data();
  const auto n = static_cast<std::ptrdiff_t>(values.size());
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t j = 0; j < n; ++j) out[j] += std::llrint(static_cast<double>(v[j]) * scale);
}

void from_fixed_point(std::span<const std::int64_t> sums, int s, std::span<float> out) {
  require(out.size() == sums.size(), "from_fixed_point: sizes differ");
  require(s > -900 && s < 900, "from_fixed_point: exponent out of range");
  const double scale = std::ldexp(1.0, -s);
  const std::int64_t* q = sums.data();
  float* o = out.data();
  const auto n = static_cast<std::ptrdiff_t>(sums.size());
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t j = 0; j < n; ++j) o[j] = static_cast<float>(static_cast<double>(q[j]) * scale);
}

std::vector<int> molecule_owners(std::size_t dataset_size, std::span<const std::size_t> train,
                                 std::span<const std::size_t> validation, std::span<const std::size_t> test,
                                 std::size_t eval_batch_size, int ranks,
                                 std::span<const std::size_t> atom_counts, std::size_t eval_atoms) {
  require(ranks >= 1 && eval_batch_size >= 1, "molecule_owners: bad rank count or batch size");
  std::vector<int> owners(dataset_size, -1);
  const auto p = static_cast<std::size_t>(ranks);
  for (std::size_t k = 0; k < train.size(); ++k) owners[train[k]] = static_cast<int>(k % p);
  // Evaluation batch b on rank b mod P, the batches cut as predict_shared cuts them.
  for (const auto subset : {validation, test}) {
    const auto batches = batch_indices(subset, eval_batch_size, atom_counts, eval_atoms);
    for (std::size_t b = 0; b < batches.size(); ++b)
      for (const std::size_t i : batches[b]) owners[i] = static_cast<int>(b % p);
  }
  return owners;
}

DataParallelGradient::DataParallelGradient(comm::Communicator& world, std::size_t chunk, RegressionLoss loss)
    : world_(world), chunk_(chunk), loss_(loss) {
  require(chunk_ >= 1, "DataParallelGradient: the chunk size must be at least 1");
}

double DataParallelGradient::compute(models::MoleculeModel<float>& model, models::ModelCache<float>& cache,
                                     Dataset& data, std::span<const std::size_t> batch,
                                     std::span<const int> owners,
                                     const std::function<void(std::size_t, const Mat<double>&)>& on_prediction,
                                     const std::function<Mat<double>(const Batch&)>& offsets) {
  const int ranks = world_.size(), rank = world_.rank();
  const std::size_t p = data.num_targets();
  const std::size_t chunks = (batch.size() + chunk_ - 1) / chunk_;
  auto chunk_rank = [&](std::size_t k) { return static_cast<int>(k % static_cast<std::size_t>(ranks)); };

  // Present labels per target over the whole batch (labels live on every rank).
  std::vector<std::int64_t> count(p, 0);
  for (std::size_t i : batch)
    for (std::size_t t = 0; t < p; ++t)
      if (!std::isnan(data.labels(static_cast<Index>(i), static_cast<Index>(t)))) ++count[t];
  std::int64_t active = 0;
  for (auto n : count) active += n > 0 ? 1 : 0;
  std::vector<double> weight(p, 0.0);  // 1 / (K' n_t): the loss's per-element normalisation
  for (std::size_t t = 0; t < p; ++t)
    if (count[t] > 0) weight[t] = 1.0 / (static_cast<double>(active) * static_cast<double>(count[t]));

  // Molecules of this rank's chunks that other ranks hold.
  std::vector<std::size_t> borrowed;
  if (ranks > 1) {
    const double start = now_seconds();
    comm::ByteWriter out;
    for (std::size_t k = 0; k < batch.size(); ++k) {
      const std::size_t i = batch[k];
      if (owners[i] != rank || chunk_rank(k / chunk_) == rank) continue;
      out.put<std::uint64_t>(i);
      put_molecule(out, data.molecules[i]);
    }
    const auto blocks = world_.allgather(out.bytes());
    for (int r = 0; r < ranks; ++r) {
      if (r == rank) continue;
      comm::ByteReader in(blocks[static_cast<std::size_t>(r)]);
      while (!in.done()) {
        const auto i = static_cast<std::size_t>(in.get<std::uint64_t>());
        models::Molecule m = get_molecule(in);
        const auto k = static_cast<std::size_t>(std::find(batch.begin(), batch.end(), i) - batch.begin());
        if (k < batch.size() && chunk_rank(k / chunk_) == rank) {
          data.molecules[i] = std::move(m);
          borrowed.push_back(i);
        }
      }
    }
    times_.exchange += now_seconds() - start;
  }

  // This rank's chunks: gradient and per-target loss sums of each.
  ParameterStore<float>& store = model.parameters();
  std::vector<std::size_t> mine;
  for (std::size_t k = 0; k < chunks; ++k)
    if (chunk_rank(k) == rank) mine.push_back(k);
  if (chunk_grads_.size() < mine.size()) chunk_grads_.resize(mine.size());
  // Slots: per chunk and target the loss sum (bits of a double), written by the chunk's rank
  // only, so the integer sum over ranks moves them unchanged.
  sums_.assign(store.size() + chunks * p, 0);
  std::span<std::int64_t> loss_slots(sums_.data() + store.size(), chunks * p);
  double local_max[2] = {0.0, 0.0};  // largest |g|, and 1 when something was not finite
  for (std::size_t m = 0; m < mine.size(); ++m) {
    const std::size_t k = mine[m];
    const auto indices = batch.subspan(k * chunk_, std::min(chunk_, batch.size() - k * chunk_));
    const Batch b = make_model_batch(data, indices, model);
    largest_chunk_atoms_ = std::max(largest_chunk_atoms_, static_cast<std::size_t>(b.molecules.num_atoms()));
    store.zero_grad();
    const Mat<float> out = model.forward(b.molecules, cache);
    const Mat<double> offset = offsets ? offsets(b) : model.label_offsets(b.molecules);
    const Mat<double> target = model.normalise_labels(offset, b.labels);
    Mat<float> dout = Mat<float>::Zero(out.rows(), out.cols());
    std::vector<double> loss_sum(p, 0.0);
    for (Index i = 0; i < out.rows(); ++i)
      for (Index t = 0; t < out.cols(); ++t) {
        // Present labels exactly as the loss sees them (the normalised target as float).
        const float y = static_cast<float>(target(i, t));
        if (std::isnan(y)) continue;
        const double d = static_cast<double>(out(i, t)) - static_cast<double>(y);
        loss_sum[static_cast<std::size_t>(t)] += regression_element_loss(loss_, d);
        dout(i, t) = static_cast<float>(weight[static_cast<std::size_t>(t)] * regression_element_grad(loss_, d));
      }
    model.backward(b.molecules, cache, dout);
    chunk_grads_[m].assign(store.grads().begin(), store.grads().end());
    const float largest = largest_magnitude(chunk_grads_[m]);
    if (!std::isfinite(largest)) local_max[1] = 1.0;
    else local_max[0] = std::max(local_max[0], static_cast<double>(largest));
    for (std::size_t t = 0; t < p; ++t) {
      if (!std::isfinite(loss_sum[t])) local_max[1] = 1.0;
      loss_slots[k * p + t] = std::bit_cast<std::int64_t>(loss_sum[t]);
    }
    const Mat<double> physical = model.denormalise(offset, out.cast<double>());
    for (std::size_t j = 0; j < indices.size(); ++j) on_prediction(indices[j], physical.row(static_cast<Index>(j)));
  }
  for (std::size_t i : borrowed) {
    data.molecules[i].positions = {};
    data.molecules[i].formal_charges = {};
  }

  double t0 = now_seconds();
  world_.allreduce_max(std::span<double>(local_max, 2));
  double t1 = now_seconds();
  times_.wait += t1 - t0;
  const bool finite = local_max[1] == 0.0;
  const int s = finite ? fixed_point_exponent(local_max[0], chunks) : 0;
  if (finite)
    for (std::size_t m = 0; m < mine.size(); ++m)
      add_fixed_point(chunk_grads_[m], s, std::span<std::int64_t>(sums_.data(), store.size()));
  t0 = now_seconds();
  times_.convert += t0 - t1;
  world_.allreduce_sum(sums_);
  t1 = now_seconds();
  times_.reduce += t1 - t0;
  ++steps_;

  double loss = 0;
  for (std::size_t t = 0; t < p; ++t) {
    if (count[t] == 0) continue;
    double sum = 0;
    for (std::size_t k = 0; k < chunks; ++k) sum += std::bit_cast<double>(loss_slots[k * p + t]);
    loss += sum / static_cast<double>(count[t]);
  }
  if (active > 0) loss /= static_cast<double>(active);
  if (!finite || !std::isfinite(loss))
    throw NumericalError(std::string("training diverged: non-finite ") + (std::isfinite(loss) ? "gradient" : "loss") +
                         " in a batch");
  from_fixed_point(std::span<const std::int64_t>(sums_.data(), store.size()), s, store.grads());
  times_.convert += now_seconds() - t1;
  return loss;
}

SharedPredictions predict_shared(comm::Communicator& world, models::MoleculeModel<float>& model,
                                 const Dataset& data, std::span<const std::size_t> indices,
                                 std::size_t batch_size, std::size_t max_atoms,
                                 const std::function<Mat<double>(const Batch&)>& offsets) {
  const Index p = static_cast<Index>(data.num_targets());
  const Index n = static_cast<Index>(indices.size());
  SharedPredictions out{Mat<double>(n, p), Mat<double>(n, p), Mat<double>(n, p)};
  const auto ranks = static_cast<std::size_t>(world.size());
  std::vector<Index> mine;
  // Batches are consecutive runs of `indices` (batch_indices keeps the order): batch b starts at
  // the sum of the sizes before it.
  const auto batches = batch_indices(indices, batch_size, atom_counts(data), max_atoms);
  for (std::size_t b = 0, begin = 0; b < batches.size(); begin += batches[b].size(), ++b) {
    if (b % ranks != static_cast<std::size_t>(world.rank())) continue;
    const std::size_t end = begin + batches[b].size();
    const Batch batch = make_model_batch(data, indices.subspan(begin, end - begin), model);
    const Mat<double> norm = model.infer_accumulated(batch.molecules);  // no activation caches
    const auto rows = static_cast<Index>(end - begin);
    out.normalised.middleRows(static_cast<Index>(begin), rows) = norm;
    const Mat<double> offset = offsets ? offsets(batch) : model.label_offsets(batch.molecules);
    out.physical.middleRows(static_cast<Index>(begin), rows) = model.denormalise(offset, norm);
    out.normalised_labels.middleRows(static_cast<Index>(begin), rows) = model.normalise_labels(offset, batch.labels);
    for (std::size_t r = begin; r < end; ++r) mine.push_back(static_cast<Index>(r));
  }
  if (ranks > 1) {
    Mat<double> all(n, 3 * p);
    all << out.physical, out.normalised, out.normalised_labels;
    share_rows(world, all, mine);
    out.physical = all.leftCols(p);
    out.normalised = all.middleCols(p, p);
    out.normalised_labels = all.rightCols(p);
  }
  return out;
}

void share_rows(comm::Communicator& world, Mat<double>& rows, std::span<const Index> mine) {
  if (world.size() == 1) return;
  comm::ByteWriter out;
  std::vector<double> row(static_cast<std::size_t>(rows.cols()));
  for (Index r : mine) {
    out.put<std::int64_t>(r);
    for (Index c = 0; c < rows.cols(); ++c) row[static_cast<std::size_t>(c)] = rows(r, c);
    out.put_span(std::span<const double>(row));
  }
  const auto blocks = world.allgather(out.bytes());
  for (int source = 0; source < world.size(); ++source) {
    if (source == world.rank()) continue;
    comm::ByteReader in(blocks[static_cast<std::size_t>(source)]);
    while (!in.done()) {
      const auto r = static_cast<Index>(in.get<std::int64_t>());
      const auto values = in.get_vector<double>();
      require(r >= 0 && r < rows.rows() && static_cast<Index>(values.size()) == rows.cols(),
              "share_rows: a rank sent a row that does not fit");
      for (Index c = 0; c < rows.cols(); ++c) rows(r, c) = values[static_cast<std::size_t>(c)];
    }
  }
}

attn::AttentionStats share_attention_stats(comm::Communicator& world, const attn::AttentionStats& mine) {
  if (world.size() == 1) return mine;
  std::int64_t counts[5] = {static_cast<std::int64_t>(mine.forward_calls), static_cast<std::int64_t>(mine.denominators),
                            static_cast<std::int64_t>(mine.nonpositive_denominators),
                            static_cast<std::int64_t>(mine.tiny_denominators),
                            static_cast<std::int64_t>(mine.clamped_denominators)};
  double negative_min = -mine.min_relative_denominator;
  world.allreduce_sum(counts);
  world.allreduce_max(std::span<double>(&negative_min, 1));
  attn::AttentionStats all;
  all.forward_calls = static_cast<std::uint64_t>(counts[0]);
  all.denominators = static_cast<std::uint64_t>(counts[1]);
  all.nonpositive_denominators = static_cast<std::uint64_t>(counts[2]);
  all.tiny_denominators = static_cast<std::uint64_t>(counts[3]);
  all.clamped_denominators = static_cast<std::uint64_t>(counts[4]);
  all.min_relative_denominator = -negative_min;
  return all;
}

}  // namespace flt::pipeline::distributed
