// The serial communicator, launcher detection and the byte reader (MPI: mpi_communicator.cpp).
#include "comm/communicator.hpp"

#include "core/error.hpp"

#include <cstdlib>
#include <cstring>
#include <string>

namespace flt::comm {

namespace {

class SerialCommunicator final : public Communicator {
 public:
  int rank() const noexcept override { return 0; }
  int size() const noexcept override { return 1; }
  std::string description() const override { return "serial"; }
  void barrier() override {}
  void allreduce_sum(std::span<std::int64_t>) override {}
  void allreduce_max(std::span<double>) override {}
  std::vector<Bytes> allgather(std::span<const std::byte> block) override {
    return {Bytes(block.begin(), block.end())};
  }
  void broadcast(Bytes&, int) override {}
  void send(std::span<const std::byte>, int destination, int) override {
    throw InvalidArgument("serial communicator: no rank " + std::to_string(destination) + " to send to");
  }
  Bytes receive(int source, int) override {
    throw InvalidArgument("serial communicator: no rank " + std::to_string(source) + " to receive from");
  }
  [[noreturn]] void abort(int exit_code) override { std::exit(exit_code); }
};

}  // namespace

namespace {
Communicator* g_world = nullptr;  // set by MpiSession
}  // namespace

void set_world(Communicator* communicator) noexcept { g_world = communicator; }

bool in_mpi_job() noexcept { return g_world != nullptr; }

Communicator& world() {
  static SerialCommunicator serial;
  return g_world ? *g_world : serial;
}

int launcher_world_size() noexcept {
  // Open MPI's mpirun, MPICH/Hydra and Slurm's srun (PMI-1/2), PMIx launchers.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"}) {
    const char* value = std::getenv(name);
    if (value && *value) {
      const int n = std::atoi(value);
      if (n > 0) return n;
    }
  }
  if (const char* rank = std::getenv("PMIX_RANK"); rank && *rank) return 1;  // size unknown here
  return 0;
}

void ByteReader::copy_out(void* destination, std::size_t n) {
  if (n > bytes_.size() - offset_)
    throw InvalidArgument("message ends early (" + std::to_string(bytes_.size()) + " bytes)");
  if (n) std::memcpy(destination, bytes_.data() + offset_, n);
  offset_ += n;
}


}  // namespace flt::comm
