// The process group a run belongs to: one process (the serial communicator, always available) or
// the ranks of an MPI job (mpi_communicator.cpp, compiled with -DFLT_WITH_MPI=ON). The training
// and prediction workflows talk to this interface only, so nothing below src/pipeline knows about
// MPI and a build without MPI runs the same code with one rank.
//
// Every collective must be called by every rank in the same order (MPI's rule). Results that
// must not depend on timing or on the number of ranks are built from operations whose result is
// independent of the reduction order: integer sums (exact), maxima, and gathers in rank order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace flt::comm {

using Bytes = std::vector<std::byte>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  // "serial" or "MPI (<library version>)".
  virtual std::string description() const = 0;

  virtual void barrier() = 0;
  // In place, element-wise over ranks. Integer sums are exact, so the result does not depend on
  // the order in which the ranks' contributions are combined.
  virtual void allreduce_sum(std::span<std::int64_t> values) = 0;
  virtual void allreduce_max(std::span<double> values) = 0;
  // Every rank's block, indexed by rank, on every rank.
  virtual std::vector<Bytes> allgather(std::span<const std::byte> block) = 0;
  // root's data on every rank (resized on the others).
  virtual void broadcast(Bytes& data, int root) = 0;
  // Point to point (blocking; messages between two ranks with one tag arrive in order).
  virtual void send(std::span<const std::byte> data, int destination, int tag) = 0;
  virtual Bytes receive(int source, int tag) = 0;
  // Ends every rank of the job with `exit_code` (after the caller printed why).
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

// The communicator of this process: the MPI world while an MpiSession is alive, else a serial one.
Communicator& world();

// True while world() is an MPI world (an MpiSession is active), whatever its size.
bool in_mpi_job() noexcept;

// Used by MpiSession: makes `communicator` (null: the serial one) the world.
void set_world(Communicator* communicator) noexcept;

// True when this program was built with MPI support (-DFLT_WITH_MPI=ON).
bool built_with_mpi() noexcept;

// The number of processes an MPI launcher (mpirun/mpiexec of Open MPI or MPICH, srun with PMI or
// PMIx) says this job has, read from the launcher's environment variables; 0 when the process was
// not started by such a launcher.
int launcher_world_size() noexcept;

// Starts MPI (MPI_Init_thread, funneled: only the main thread calls MPI) for the lifetime of the
// object and makes world() the MPI world; ends it (MPI_Finalize) on destruction. Only when
// built_with_mpi() and the process was started by a launcher; otherwise world() stays serial.
// A program built without MPI but started by a launcher throws ConfigError saying so (it would
// otherwise run as P independent copies writing the same files).
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  bool active() const noexcept { return active_; }

 private:
  bool active_ = false;
};

// ---------------------------------------------------------------------------------------------
// Packing plain values into byte blocks for the collectives above (same machine architecture on
// every rank, as MPI jobs of one program are).

class ByteWriter {
 public:
  template <class T>
  void put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    append(&value, sizeof(T));
  }
  template <class T>
  void put_span(std::span<const T> values) {
    static_assert(std::is_trivially_copyable_v<T>);
    put<std::uint64_t>(values.size());
    append(values.data(), values.size_bytes());
  }
  void put_string(const std::string& s) {
    put_span(std::span<const char>(s.data(), s.size()));
  }
  Bytes& bytes() noexcept { return bytes_; }

 private:
  void append(const void* data, std::size_t n) {
    const std::size_t at = bytes_.size();
    bytes_.resize(at + n);
    if (n) std::memcpy(bytes_.data() + at, data, n);
  }
  Bytes bytes_;
};

// Reads what a ByteWriter wrote, in the same order; throws InvalidArgument past the end.
class ByteReader {
 public:
  explicit ByteReader(std::span<const std::byte> bytes) : bytes_(bytes) {}
  template <class T>
  T get() {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    copy_out(&value, sizeof(T));
    return value;
  }
  template <class T>
  std::vector<T> get_vector() {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto n = get<std::uint64_t>();
    std::vector<T> out(static_cast<std::size_t>(n));
    copy_out(out.data(), out.size() * sizeof(T));
    return out;
  }
  std::string get_string() {
    const auto chars = get_vector<char>();
    return std::string(chars.begin(), chars.end());
  }
  bool done() const noexcept { return offset_ == bytes_.size(); }

 private:
  void copy_out(void* destination, std::size_t n);
  std::span<const std::byte> bytes_;
  std::size_t offset_ = 0;
};

}  // namespace flt::comm
