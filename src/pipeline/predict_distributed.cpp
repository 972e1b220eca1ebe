// Streaming prediction over the ranks of a job (see BatchDistribution in predict.hpp).
#include "pipeline/predict.hpp"

#include "comm/communicator.hpp"
#include "core/error.hpp"

namespace flt::pipeline {

namespace {

constexpr int kResultsTag = 7301;

void put_matrix(comm::ByteWriter& out, const Mat<double>& m) {
  out.put<std::int64_t>(m.rows());
  out.put<std::int64_t>(m.cols());
  out.put_span(std::span<const double>(m.data(), static_cast<std::size_t>(m.size())));
}

Mat<double> get_matrix(comm::ByteReader& in) {
  const auto rows = in.get<std::int64_t>();
  const auto cols = in.get<std::int64_t>();
  const auto values = in.get_vector<double>();
  require(rows >= 0 && cols >= 0 && static_cast<std::int64_t>(values.size()) == rows * cols,
          "prediction message: matrix size does not match");
  Mat<double> m(static_cast<Index>(rows), static_cast<Index>(cols));
  std::copy(values.begin(), values.end(), m.data());
  return m;
}

comm::Bytes pack(const std::vector<MoleculeResult>& results) {
  comm::ByteWriter out;
  out.put<std::uint64_t>(results.size());
  for (const auto& r : results) {
    out.put<std::uint8_t>(r.ok() ? 1 : 0);
    if (!r.ok()) {
      out.put_string(r.error);
      continue;
    }
    out.put_span(std::span<const double>(r.prediction->mean));
    out.put_span(std::span<const double>(r.prediction->stddev));
    put_matrix(out, r.prediction->forces);
    put_matrix(out, r.prediction->forces_stddev);
    put_matrix(out, r.prediction->contributions);
    put_matrix(out, r.prediction->contributions_stddev);
  }
  return std::move(out.bytes());
}

std::vector<MoleculeResult> unpack(const comm::Bytes& bytes) {
  comm::ByteReader in(bytes);
  std::vector<MoleculeResult> results(static_cast<std::size_t>(in.get<std::uint64_t>()));
  for (auto& r : results) {
    if (in.get<std::uint8_t>() == 0) {
      r.error = in.get_string();
      continue;
    }
    MoleculePrediction p;
    p.mean = in.get_vector<double>();
    p.stddev = in.get_vector<double>();
    p.forces = get_matrix(in);
    p.forces_stddev = get_matrix(in);
    p.contributions = get_matrix(in);
    p.contributions_stddev = get_matrix(in);
    r.prediction = std::move(p);
  }
  return results;
}

class RoundRobinBatches final : public BatchDistribution {
 public:
  explicit RoundRobinBatches(comm::Communicator& world) : world_(world) {}
  std::optional<std::vector<MoleculeResult>> run(
      std::size_t number, const std::function<std::vector<MoleculeResult>()>& compute) override {
    const int owner = static_cast<int>(number % static_cast<std::size_t>(world_.size()));
    const int rank = world_.rank();
    if (rank == 0) {
      if (owner == 0) return compute();
      return unpack(world_.receive(owner, kResultsTag));
    }
    if (owner == rank) world_.send(pack(compute()), 0, kResultsTag);
    return std::nullopt;
  }

 private:
  comm::Communicator& world_;
};

}  // namespace

std::shared_ptr<BatchDistribution> distribute_batches(comm::Communicator& world) {
  if (world.size() <= 1) return nullptr;
  return std::make_shared<RoundRobinBatches>(world);
}

}  // namespace flt::pipeline
