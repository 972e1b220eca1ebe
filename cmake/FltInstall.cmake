# Installation of libflt as a CMake package and pkg-config modules (included from
# src/api/CMakeLists.txt, after flt_lib and flt_rdkit are defined). `cmake --install <build>
# [--prefix P]` puts:
#   P/include/flt/*.hpp                         the public headers (only these)
#   P/<libdir>/libflt.so.X.Y.Z, libflt.so.X, libflt.so   the library and its SONAME/dev links
#   P/<libdir>/cmake/flt/fltConfig.cmake, fltConfigVersion.cmake, fltTargets*.cmake
#                                               the CMake package: flt::flt
#   P/<libdir>/cmake/flt/fltRDKitTargets.cmake, FindRDKit.cmake
#                                               its component rdkit: flt::rdkit, read only by
#                                               find_package(flt COMPONENTS rdkit)
#   P/<libdir>/pkgconfig/flt.pc, flt-rdkit.pc   pkg-config modules (flt-rdkit adds RDKit's flags)
#   P/share/flt/models/default.flt             the bundled default model, when models/default.flt
#                                               exists in the source tree at install time
# (the flt program goes to P/bin, tools/CMakeLists.txt). Every path inside the package is relative
# to P, so an installation can be moved.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(FLT_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/flt)

install(TARGETS flt_lib EXPORT fltTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})  # include dir: the target's INSTALL_INTERFACE
install(DIRECTORY ${PROJECT_SOURCE_DIR}/src/include/flt
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.hpp")
# OPTIONAL: until a trained default model is committed, the package installs without one and
# Model::load_default() says where it looked.
install(FILES ${PROJECT_SOURCE_DIR}/models/default.flt
  DESTINATION ${CMAKE_INSTALL_DATADIR}/flt/models OPTIONAL)

install(EXPORT fltTargets NAMESPACE flt:: DESTINATION ${FLT_INSTALL_CMAKEDIR})
# flt::rdkit names RDKit's imported targets, which exist only once RDKit has been found: an export
# set of its own that fltConfig.cmake includes after finding RDKit, only when asked for.
install(TARGETS flt_rdkit EXPORT fltRDKitTargets)
install(EXPORT fltRDKitTargets NAMESPACE flt:: DESTINATION ${FLT_INSTALL_CMAKEDIR})
string(REPLACE ";" " " FLT_CONFIG_RDKIT_COMPONENTS "${FLT_API_RDKIT_COMPONENTS}")
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/fltConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/fltConfig.cmake
  INSTALL_DESTINATION ${FLT_INSTALL_CMAKEDIR}
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_DATADIR)
# Semantic versioning: a request for 0.1 accepts any 0.x >= 0.1 (same major version).
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/fltConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES
  ${CMAKE_CURRENT_BINARY_DIR}/fltConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/fltConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/FindRDKit.cmake
  DESTINATION ${FLT_INSTALL_CMAKEDIR})

# pkg-config: paths relative to the .pc file (${pcfiledir}), so the modules work after
# `cmake --install --prefix` anywhere. flt.pc is libflt alone (libflt.so carries its own DT_NEEDED
# entries for RDKit, so -lflt suffices to link). flt-rdkit.pc requires flt and adds RDKit's include
# directory and core libraries for flt/rdkit.hpp; RDKit has no pkg-config module on Debian, so they
# are spelled out.
set(FLT_PC_RDKIT_LIBS "")
foreach(component IN LISTS FLT_API_RDKIT_COMPONENTS)
  string(APPEND FLT_PC_RDKIT_LIBS " -lRDKit${component}")
endforeach()
get_filename_component(FLT_PC_RDKIT_LIBDIR "${RDKit_GraphMol_LIBRARY}" DIRECTORY)
file(RELATIVE_PATH FLT_PC_PREFIX_FROM_PCDIR
  ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
configure_file(${PROJECT_SOURCE_DIR}/cmake/flt.pc.in ${CMAKE_CURRENT_BINARY_DIR}/flt.pc @ONLY)
configure_file(${PROJECT_SOURCE_DIR}/cmake/flt-rdkit.pc.in ${CMAKE_CURRENT_BINARY_DIR}/flt-rdkit.pc
  @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/flt.pc ${CMAKE_CURRENT_BINARY_DIR}/flt-rdkit.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
