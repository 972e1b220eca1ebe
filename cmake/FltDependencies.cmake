# Finds every third-party dependency from Debian 12 packages. When one is missing, configuration
# stops with a message naming the Debian package (tools/install-deps.sh installs them all).

function(flt_require found what package)
  if(NOT ${found})
    message(FATAL_ERROR "flt: ${what} not found. Install the Debian package '${package}' "
                        "(or run: sudo tools/install-deps.sh).")
  endif()
endfunction()

find_package(Eigen3 3.3 QUIET NO_MODULE)
flt_require(Eigen3_FOUND "Eigen 3" libeigen3-dev)

find_package(OpenMP QUIET)
flt_require(OpenMP_CXX_FOUND "OpenMP for C++" "g++ (libgomp1)")

# LAPACK for dense symmetric eigendecompositions (core/linalg.hpp). Debian's alternatives make
# liblapack.so OpenBLAS's once libopenblas-openmp-dev is installed; reference LAPACK works too,
# more slowly.
find_package(LAPACK QUIET)
flt_require(LAPACK_FOUND "LAPACK" libopenblas-openmp-dev)

find_package(PkgConfig QUIET)
flt_require(PKG_CONFIG_FOUND "pkg-config" pkg-config)
pkg_check_modules(FFTW3 QUIET IMPORTED_TARGET fftw3)
flt_require(FFTW3_FOUND "FFTW 3 (double)" libfftw3-dev)
pkg_check_modules(FFTW3F QUIET IMPORTED_TARGET fftw3f)
flt_require(FFTW3F_FOUND "FFTW 3 (float)" libfftw3-dev)

find_package(Boost 1.74 QUIET COMPONENTS program_options)
flt_require(Boost_FOUND "Boost.Program_options" "libboost-program-options-dev libboost-dev")

find_package(ZLIB QUIET)
flt_require(ZLIB_FOUND "zlib" zlib1g-dev)

find_package(nlohmann_json 3 QUIET)
flt_require(nlohmann_json_FOUND "nlohmann JSON for Modern C++ (nlohmann_json 3)" nlohmann-json3-dev)

find_package(LibArchive QUIET)
flt_require(LibArchive_FOUND "libarchive" libarchive-dev)

# RDKit: Debian ships neither a CMake config nor a pkg-config file.
find_path(RDKit_INCLUDE_DIR GraphMol/GraphMol.h PATH_SUFFIXES rdkit)
flt_require(RDKit_INCLUDE_DIR "RDKit headers (GraphMol/GraphMol.h)" librdkit-dev)
set(FLT_RDKIT_COMPONENTS FileParsers SmilesParse DistGeomHelpers ForceFieldHelpers
    ForceField DistGeometry Alignment GraphMol RDGeometryLib RDGeneral)
set(FLT_RDKIT_TARGETS "")
foreach(component IN LISTS FLT_RDKIT_COMPONENTS)
  find_library(RDKit_${component}_LIBRARY NAMES RDKit${component})
  flt_require(RDKit_${component}_LIBRARY "RDKit library RDKit${component}" librdkit-dev)
  if(NOT TARGET RDKit::${component})
    add_library(RDKit::${component} UNKNOWN IMPORTED)
    set_target_properties(RDKit::${component} PROPERTIES
      IMPORTED_LOCATION "${RDKit_${component}_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${RDKit_INCLUDE_DIR}")
  endif()
  list(APPEND FLT_RDKIT_TARGETS RDKit::${component})
endforeach()
if(NOT TARGET RDKit::RDKit)
  add_library(RDKit::RDKit INTERFACE IMPORTED)
  set_target_properties(RDKit::RDKit PROPERTIES
    INTERFACE_LINK_LIBRARIES "${FLT_RDKIT_TARGETS};Boost::headers")
endif()

# The libraries whose directories the installed binaries' RUNPATHs name when they lie outside the
# system's library directories (cmake/FltInstallRpath.cmake; MPI's are added where it is found).
set(FLT_RPATH_DEPENDENCIES ${FLT_RDKIT_TARGETS} Boost::program_options LibArchive::LibArchive ZLIB::ZLIB
    PkgConfig::FFTW3 PkgConfig::FFTW3F OpenMP::OpenMP_CXX ${LAPACK_LIBRARIES})

if(FLT_BUILD_TESTS)
  find_package(Catch2 2 QUIET)
  flt_require(Catch2_FOUND "Catch2 v2" catch2)
endif()
