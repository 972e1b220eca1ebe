// A scratch directory for one test case, removed at the end (tests/common/scratch_dir.hpp).
#pragma once

#include "../common/scratch_dir.hpp"

namespace flt::train::testing {

using TempDir = flt::test_support::ScratchDir;

}  // namespace flt::train::testing
