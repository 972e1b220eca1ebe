# RUNPATHs of the installed binaries (flt, libflt, the Python modules). An installed binary finds
#   - libflt through a path relative to itself ($ORIGIN/...), where it links libflt, so that an
#     installation can be moved;
#   - each third-party library (RDKit, ...) that was linked from a directory outside the system's
#     library directories, e.g. an RDKit in /opt/rdkit/lib, without LD_LIBRARY_PATH.
# No entry names a system library directory (/usr/lib, /lib and below, or the compiler's implicit
# link directories): the loader searches them anyway, and Debian policy forbids such an RPATH. A
# build against Debian's packages therefore installs binaries without any RUNPATH but the
# $ORIGIN one. (CMake's INSTALL_RPATH_USE_LINK_PATH would add /usr/lib/<triplet>/openmpi/lib,
# from which MPI's libraries are linked.)
include_guard(GLOBAL)

# flt_rpath_directories(<out> <library file or imported target>...): the directories of the given
# library files (and of the files an imported target names: its IMPORTED_LOCATION* and the file
# paths in its INTERFACE_LINK_LIBRARIES) that are not system library directories; in order, once
# each. Anything else (-lfoo, flags, other targets) is skipped.
function(flt_rpath_directories out)
  set(files "")
  foreach(item IN LISTS ARGN)
    if(TARGET ${item})
      foreach(property IMPORTED_LOCATION IMPORTED_LOCATION_RELEASE IMPORTED_LOCATION_NOCONFIG
                       INTERFACE_LINK_LIBRARIES)
        get_target_property(value ${item} ${property})
        if(value)
          list(APPEND files ${value})
        endif()
      endforeach()
    else()
      list(APPEND files ${item})
    endif()
  endforeach()
  set(system ${CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES} ${CMAKE_PLATFORM_IMPLICIT_LINK_DIRECTORIES})
  set(dirs "")
  foreach(file IN LISTS files)
    if(NOT IS_ABSOLUTE "${file}")
      continue()
    endif()
    get_filename_component(dir "${file}" DIRECTORY)
    cmake_path(NORMAL_PATH dir)
    string(REGEX REPLACE "(.)/$" "\\1" dir "${dir}")
    if(dir IN_LIST system OR dir MATCHES "^(/usr)?/lib(32|64|x32)?(/|$)")
      continue()
    endif()
    list(APPEND dirs "${dir}")
  endforeach()
  list(REMOVE_DUPLICATES dirs)
  set(${out} "${dirs}" PARENT_SCOPE)
endfunction()

# flt_set_install_rpath(<target> [INSTALL_DIR <dir>] [LIBRARIES <file or target>...]): the
# target's INSTALL_RPATH. INSTALL_DIR (relative to the prefix) is where the target is installed
# when it links libflt: $ORIGIN/<path from there to CMAKE_INSTALL_LIBDIR> comes first. LIBRARIES
# defaults to FLT_RPATH_DEPENDENCIES (cmake/FltDependencies.cmake: the third-party libraries).
function(flt_set_install_rpath target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "INSTALL_DIR" "LIBRARIES")
  if(NOT DEFINED arg_LIBRARIES)
    set(arg_LIBRARIES ${FLT_RPATH_DEPENDENCIES})
  endif()
  set(rpath "")
  if(DEFINED arg_INSTALL_DIR)
    file(RELATIVE_PATH to_libdir /${arg_INSTALL_DIR} /${CMAKE_INSTALL_LIBDIR})
    if(to_libdir STREQUAL "")
      list(APPEND rpath "\$ORIGIN")
    else()
      list(APPEND rpath "\$ORIGIN/${to_libdir}")
    endif()
  endif()
  flt_rpath_directories(dirs ${arg_LIBRARIES})
  list(APPEND rpath ${dirs})
  set_target_properties(${target} PROPERTIES INSTALL_RPATH "${rpath}")
endfunction()
