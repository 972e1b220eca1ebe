// The library version (semantic versioning) and the git commit it was built from.
#pragma once

namespace flt {

const char* version() noexcept;     // "MAJOR.MINOR.PATCH"
const char* git_commit() noexcept;  // short hash, or "unknown" outside a git checkout

}  // namespace flt
