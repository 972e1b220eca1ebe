// The whole public C++ API of flt except the RDKit interoperability (flt/rdkit.hpp).
// Reference: docs/cpp-api.md. Link the CMake target flt::flt (find_package(flt)) or use
// pkg-config --cflags --libs flt.
#pragma once

#include "error.hpp"
#include "log.hpp"
#include "model.hpp"
#include "molecule.hpp"
#include "version.hpp"
