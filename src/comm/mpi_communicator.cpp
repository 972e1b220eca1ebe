// The MPI world as a Communicator (compiled with -DFLT_WITH_MPI=ON only).
#include "comm/communicator.hpp"

#include "core/error.hpp"

#include <mpi.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
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

// The most bytes one MPI call moves: INT_MAX (MPI's int counts), or fewer when the environment
// variable FLT_MPI_MAX_MESSAGE_BYTES says so (the tests cut messages small to exercise the
// pieces; an MPI library with a lower limit of its own can be given it).
std::uint64_t message_limit() {
  const char* text = std::getenv("FLT_MPI_MAX_MESSAGE_BYTES");
  if (text == nullptr || *text == '\0') return INT_MAX;
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0' || text[0] == '-' || value < 1 || value > static_cast<unsigned long long>(INT_MAX))
    throw ConfigError(std::string("FLT_MPI_MAX_MESSAGE_BYTES must be an integer in [1, ") + std::to_string(INT_MAX) +
                      "], got '" + text + "'");
  return value;
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(std::uint64_t limit) : limit_(limit) {
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
  // MPI counts are int: a message above 2 GiB (or the limit of message_limit()) travels in
  // pieces. Every rank computes the same rounds from sizes it has gathered or received first.
  std::vector<Bytes> allgather(std::span<const std::byte> block) override {
    std::uint64_t mine = block.size();
    std::vector<std::uint64_t> sizes(static_cast<std::size_t>(size_));
    check(MPI_Allgather(&mine, 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD), "MPI_Allgather");
    // Per round each rank sends at most `piece` bytes, so that a round's total fits the limit.
    const std::uint64_t piece = std::max<std::uint64_t>(1, limit_ / static_cast<std::uint64_t>(size_));
    const std::uint64_t largest = *std::max_element(sizes.begin(), sizes.end());
    std::vector<Bytes> out(sizes.size());
    for (std::size_t r = 0; r < sizes.size(); ++r) out[r].reserve(static_cast<std::size_t>(sizes[r]));
    std::vector<int> counts(sizes.size()), offsets(sizes.size());
    Bytes round;
    const std::uint64_t rounds = largest == 0 ? 1 : (largest + piece - 1) / piece;
    for (std::uint64_t k = 0; k < rounds; ++k) {
      const std::uint64_t sent = k * piece;
      std::size_t total = 0;
      for (std::size_t r = 0; r < sizes.size(); ++r) {
        const std::uint64_t left = sizes[r] > sent ? sizes[r] - sent : 0;
        counts[r] = to_count(static_cast<std::size_t>(std::min(left, piece)), "allgather");
        offsets[r] = to_count(total, "allgather");
        total += static_cast<std::size_t>(counts[r]);
      }
      round.resize(total);
      const int my_count = counts[static_cast<std::size_t>(rank_)];
      check(MPI_Allgatherv(block.data() + static_cast<std::size_t>(std::min<std::uint64_t>(sent, mine)), my_count,
                           MPI_BYTE, round.data(), counts.data(), offsets.data(), MPI_BYTE, MPI_COMM_WORLD),
            "MPI_Allgatherv");
      for (std::size_t r = 0; r < sizes.size(); ++r)
        out[r].insert(out[r].end(), round.begin() + offsets[r], round.begin() + offsets[r] + counts[r]);
    }
    return out;
  }
  void broadcast(Bytes& data, int root) override {
    std::uint64_t n = data.size();
    check(MPI_Bcast(&n, 1, MPI_UINT64_T, root, MPI_COMM_WORLD), "MPI_Bcast");
    data.resize(static_cast<std::size_t>(n));
    for (std::uint64_t at = 0; at < n; at += limit_) {
      const auto count = static_cast<std::size_t>(std::min(limit_, n - at));
      check(MPI_Bcast(data.data() + at, to_count(count, "broadcast"), MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
  }
  // The size first, then the data in pieces of at most the limit (in order: one source, one tag).
  void send(std::span<const std::byte> data, int destination, int tag) override {
    const std::uint64_t n = data.size();
    check(MPI_Send(&n, 1, MPI_UINT64_T, destination, tag, MPI_COMM_WORLD), "MPI_Send");
    for (std::uint64_t at = 0; at < n; at += limit_) {
      const auto count = static_cast<std::size_t>(std::min(limit_, n - at));
      check(MPI_Send(data.data() + at, to_count(count, "send"), MPI_BYTE, destination, tag, MPI_COMM_WORLD),
            "MPI_Send");
    }
  }
  Bytes receive(int source, int tag) override {
    std::uint64_t n = 0;
    check(MPI_Recv(&n, 1, MPI_UINT64_T, source, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "MPI_Recv");
    Bytes data(static_cast<std::size_t>(n));
    for (std::uint64_t at = 0; at < n; at += limit_) {
      const auto count = static_cast<std::size_t>(std::min(limit_, n - at));
      check(MPI_Recv(data.data() + at, to_count(count, "receive"), MPI_BYTE, source, tag, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE),
            "MPI_Recv");
    }
    return data;
  }
  [[noreturn]] void abort(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  int rank_ = 0, size_ = 1;
  std::uint64_t limit_ = INT_MAX;  // bytes per MPI call
};

}  // namespace

bool built_with_mpi() noexcept { return true; }

MpiSession::MpiSession(int* argc, char*** argv) {
  if (launcher_world_size() == 0) return;  // a plain run: no MPI start-up cost, serial world
  const std::uint64_t limit = message_limit();  // a bad setting stops the run before MPI starts
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    throw IoError("MPI", "MPI_Init_thread failed");
  static MpiCommunicator communicator(limit);
  set_world(&communicator);
  active_ = true;
}

MpiSession::~MpiSession() {
  if (!active_) return;
  set_world(nullptr);
  MPI_Finalize();
}

}  // namespace flt::comm
