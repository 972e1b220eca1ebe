// The MPI world as a Communicator (compiled with -DFLT_WITH_MPI=ON only).
#include "comm/communicator.hpp"

#include "core/error.hpp"

#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <string>

namespace flt::comm {

namespace {

void check(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw IoError("MPI", std::string(what) + " failed: " + std::string(text, static_cast<std::size_t>(length)));
}

int to_count(std::size_t n, const char* what) {
  if (n > static_cast<std::size_t>(INT_MAX))
    throw InvalidArgument(std::string(what) + ": message of " + std::to_string(n) + " elements is too large for MPI");
  return static_cast<int>(n);
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // Errors come back as codes (turned into exceptions) instead of aborting inside MPI.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  std::string description() const override {
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int length = 0;
    MPI_Get_library_version(version, &length);
    std::string text(version, static_cast<std::size_t>(length));
    if (const auto comma = text.find(','); comma != std::string::npos) text.resize(comma);
    return "MPI (" + text + ")";
  }
  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }
  void allreduce_sum(std::span<std::int64_t> values) override {
    check(MPI_Allreduce(MPI_IN_PLACE, values.data(), to_count(values.size(), "allreduce"), MPI_INT64_T, MPI_SUM,
                        MPI_COMM_WORLD),
          "MPI_Allreduce");
  }
  void allreduce_max(std::span<double> values) override {
    check(MPI_Allreduce(MPI_IN_PLACE, values.data(), to_count(values.size(), "allreduce"), MPI_DOUBLE, MPI_MAX,
                        MPI_COMM_WORLD),
          "MPI_Allreduce");
  }
  std::vector<Bytes> allgather(std::span<const std::byte> block) override {
    int mine = to_count(block.size(), "allgather");
    std::vector<int> counts(static_cast<std::size_t>(size_)), offsets(counts.size());
    check(MPI_Allgather(&mine, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD), "MPI_Allgather");
    std::size_t total = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      offsets[r] = to_count(total, "allgather");
      total += static_cast<std::size_t>(counts[r]);
    }
    Bytes all(total);
    check(MPI_Allgatherv(block.data(), mine, MPI_BYTE, all.data(), counts.data(), offsets.data(), MPI_BYTE,
                         MPI_COMM_WORLD),
          "MPI_Allgatherv");
    std::vector<Bytes> out(counts.size());
    for (std::size_t r = 0; r < counts.size(); ++r)
      out[r].assign(all.begin() + offsets[r], all.begin() + offsets[r] + counts[r]);
    return out;
  }
  void broadcast(Bytes& data, int root) override {
    std::uint64_t n = data.size();
    check(MPI_Bcast(&n, 1, MPI_UINT64_T, root, MPI_COMM_WORLD), "MPI_Bcast");
    data.resize(static_cast<std::size_t>(n));
    check(MPI_Bcast(data.data(), to_count(data.size(), "broadcast"), MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
  }
  void send(std::span<const std::byte> data, int destination, int tag) override {
    check(MPI_Send(data.data(), to_count(data.size(), "send"), MPI_BYTE, destination, tag, MPI_COMM_WORLD),
          "MPI_Send");
  }
  Bytes receive(int source, int tag) override {
    MPI_Status status;
    check(MPI_Probe(source, tag, MPI_COMM_WORLD, &status), "MPI_Probe");
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    Bytes data(static_cast<std::size_t>(count));
    check(MPI_Recv(data.data(), count, MPI_BYTE, source, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "MPI_Recv");
    return data;
  }
  [[noreturn]] void abort(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool built_with_mpi() noexcept { return true; }

MpiSession::MpiSession(int* argc, char*** argv) {
  if (launcher_world_size() == 0) return;  // a plain run: no MPI start-up cost, serial world
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    throw IoError("MPI", "MPI_Init_thread failed");
  static MpiCommunicator communicator;
  set_world(&communicator);
  active_ = true;
}

MpiSession::~MpiSession() {
  if (!active_) return;
  set_world(nullptr);
  MPI_Finalize();
}

}  // namespace flt::comm
