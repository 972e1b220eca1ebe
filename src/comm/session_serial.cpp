// MpiSession of a build without MPI: refuses to run under an MPI launcher.
#include "comm/communicator.hpp"

#include "core/error.hpp"

#include <string>

namespace flt::comm {

bool built_with_mpi() noexcept { return false; }

MpiSession::MpiSession(int*, char***) {
  if (const int n = launcher_world_size(); n > 0)
    throw ConfigError("started by an MPI launcher (" + std::to_string(n) +
                      " processes) but this flt was built without MPI; rebuild with "
                      "-DFLT_WITH_MPI=ON (Open MPI: libopenmpi-dev) or run it without mpirun");
}
MpiSession::~MpiSession() = default;

}  // namespace flt::comm
