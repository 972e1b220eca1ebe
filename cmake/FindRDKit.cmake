# FindRDKit.cmake: finds RDKit's headers and C++ libraries where Debian's librdkit-dev puts them
# (Debian ships neither a CMake package nor a pkg-config module for RDKit). Installed next to
# fltConfig.cmake, which uses it for the component rdkit (find_package(flt COMPONENTS rdkit)).
#
#   find_package(RDKit REQUIRED COMPONENTS GraphMol FileParsers)
#
# For each component C found (library libRDKitC) it defines the imported target RDKit::C with
# RDKit's include directory; RDKit::RDKit links every component found. Result variables:
# RDKit_FOUND, RDKit_INCLUDE_DIR, RDKit_<C>_LIBRARY, RDKit_<C>_FOUND. Without COMPONENTS:
# GraphMol, RDGeometryLib and RDGeneral. Hints: RDKit_ROOT (CMake's <Package>_ROOT).
include(FindPackageHandleStandardArgs)

find_path(RDKit_INCLUDE_DIR GraphMol/GraphMol.h PATH_SUFFIXES rdkit)

set(_rdkit_components ${RDKit_FIND_COMPONENTS})
if(NOT _rdkit_components)
  set(_rdkit_components GraphMol RDGeometryLib RDGeneral)
  foreach(_c IN LISTS _rdkit_components)
    set(RDKit_FIND_REQUIRED_${_c} TRUE)
  endforeach()
endif()

set(_rdkit_targets "")
foreach(_c IN LISTS _rdkit_components)
  find_library(RDKit_${_c}_LIBRARY NAMES RDKit${_c})
  if(RDKit_${_c}_LIBRARY AND RDKit_INCLUDE_DIR)
    set(RDKit_${_c}_FOUND TRUE)
    if(NOT TARGET RDKit::${_c})
      add_library(RDKit::${_c} UNKNOWN IMPORTED)
      set_target_properties(RDKit::${_c} PROPERTIES
        IMPORTED_LOCATION "${RDKit_${_c}_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${RDKit_INCLUDE_DIR}")
      if(TARGET Boost::headers)
        set_property(TARGET RDKit::${_c} APPEND PROPERTY INTERFACE_LINK_LIBRARIES Boost::headers)
      endif()
    endif()
    list(APPEND _rdkit_targets RDKit::${_c})
  else()
    set(RDKit_${_c}_FOUND FALSE)
  endif()
  mark_as_advanced(RDKit_${_c}_LIBRARY)
endforeach()
mark_as_advanced(RDKit_INCLUDE_DIR)

find_package_handle_standard_args(RDKit
  REQUIRED_VARS RDKit_INCLUDE_DIR
  HANDLE_COMPONENTS
  REASON_FAILURE_MESSAGE "install the Debian package librdkit-dev or set RDKit_ROOT")

if(RDKit_FOUND AND NOT TARGET RDKit::RDKit)
  add_library(RDKit::RDKit INTERFACE IMPORTED)
  set_target_properties(RDKit::RDKit PROPERTIES INTERFACE_LINK_LIBRARIES "${_rdkit_targets}")
endif()
unset(_rdkit_components)
unset(_rdkit_targets)
unset(_c)
