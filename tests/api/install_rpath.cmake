# ctest api_install_rpath (cmake -P): the install RUNPATHs of cmake/FltInstallRpath.cmake.
#   1. flt_rpath_directories keeps the directories outside the system's library directories (an
#      RDKit in /opt/rdkit/lib, /usr/local/lib) and drops /usr/lib, /lib and everything below
#      them (Open MPI's /usr/lib/<triplet>/openmpi/lib), the compiler's directories, -l flags
#   2. end to end, with a stand-in for an RDKit outside the system directories: a shared library
#      "dep" installed to WORK_DIR/opt/lib; a project links a shared library "core" (as libflt)
#      privately against it and a program against core, sets their INSTALL_RPATH with
#      flt_set_install_rpath, installs them, moves the installation and runs the program with no
#      LD_LIBRARY_PATH: it finds core through $ORIGIN and core finds dep through its own RUNPATH
# Inputs (-D): SOURCE_DIR WORK_DIR CXX_COMPILER [GENERATOR]
cmake_minimum_required(VERSION 3.25)  # the project's policies in script mode (IN_LIST)
foreach(var SOURCE_DIR WORK_DIR CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "install_rpath.cmake: -D${var}=... missing")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n--- stdout\n${out}\n--- stderr\n${err}")
  endif()
  set(RUN_OUTPUT "${out}" PARENT_SCOPE)
endfunction()

# 1. Which directories.
include(${SOURCE_DIR}/cmake/FltInstallRpath.cmake)
flt_rpath_directories(dirs
  /opt/rdkit/lib/libRDKitGraphMol.so /usr/lib/libRDKitGraphMol.so
  /usr/lib/x86_64-linux-gnu/openmpi/lib/libmpi.so /lib/x86_64-linux-gnu/libz.so /lib64/libfoo.so
  /usr/lib/gcc/x86_64-linux-gnu/12/libgomp.so /opt/rdkit/lib/../lib/libRDKitRDGeneral.so
  /usr/local/lib/libarchive.so -lfoo -Wl,--as-needed /usr/library/libx.so)
if(NOT dirs STREQUAL "/opt/rdkit/lib;/usr/local/lib;/usr/library")
  message(FATAL_ERROR "flt_rpath_directories: '${dirs}', expected '/opt/rdkit/lib;/usr/local/lib;/usr/library'")
endif()

# 2. End to end.
set(generator_args "")
if(GENERATOR)
  set(generator_args -G ${GENERATOR})
endif()
file(REMOVE_RECURSE ${WORK_DIR})
file(WRITE ${WORK_DIR}/dep/dep.cpp "int dep_value() { return 42; }\n")
file(WRITE ${WORK_DIR}/dep/CMakeLists.txt [=[
cmake_minimum_required(VERSION 3.25)
project(dep LANGUAGES CXX)
add_library(dep SHARED dep.cpp)
set_target_properties(dep PROPERTIES VERSION 1.0 SOVERSION 1)
install(TARGETS dep LIBRARY DESTINATION lib)
]=])
run(${CMAKE_COMMAND} -S ${WORK_DIR}/dep -B ${WORK_DIR}/dep/build ${generator_args}
    -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/dep/build)
run(${CMAKE_COMMAND} --install ${WORK_DIR}/dep/build --prefix ${WORK_DIR}/opt)

file(WRITE ${WORK_DIR}/app/core.cpp "int dep_value();\nint core_value() { return dep_value() + 1; }\n")
file(WRITE ${WORK_DIR}/app/main.cpp
     "#include <cstdio>\nint core_value();\nint main() { std::printf(\"core %d\\n\", core_value()); }\n")
file(WRITE ${WORK_DIR}/app/CMakeLists.txt [=[
cmake_minimum_required(VERSION 3.25)
project(app LANGUAGES CXX)
include(GNUInstallDirs)
include(FltInstallRpath)
find_library(DEP_LIBRARY dep PATHS ${DEP_DIR} NO_DEFAULT_PATH REQUIRED)
add_library(core SHARED core.cpp)
target_link_libraries(core PRIVATE ${DEP_LIBRARY})
flt_set_install_rpath(core LIBRARIES ${DEP_LIBRARY} /usr/lib/x86_64-linux-gnu/openmpi/lib/libmpi.so)
add_executable(prog main.cpp)
target_link_libraries(prog PRIVATE core)
flt_set_install_rpath(prog INSTALL_DIR ${CMAKE_INSTALL_BINDIR} LIBRARIES ${DEP_LIBRARY})
install(TARGETS core prog)
]=])
run(${CMAKE_COMMAND} -S ${WORK_DIR}/app -B ${WORK_DIR}/app/build ${generator_args}
    -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_MODULE_PATH=${SOURCE_DIR}/cmake
    -DCMAKE_INSTALL_LIBDIR=lib -DDEP_DIR=${WORK_DIR}/opt/lib)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/app/build)
run(${CMAKE_COMMAND} --install ${WORK_DIR}/app/build --prefix ${WORK_DIR}/prefix)
file(RENAME ${WORK_DIR}/prefix ${WORK_DIR}/moved-prefix)
unset(ENV{LD_LIBRARY_PATH})
run(readelf -d ${WORK_DIR}/moved-prefix/lib/libcore.so)
if(NOT RUN_OUTPUT MATCHES "RUNPATH[^\n]*\\[${WORK_DIR}/opt/lib\\]")
  message(FATAL_ERROR "libcore's RUNPATH is not just ${WORK_DIR}/opt/lib:\n${RUN_OUTPUT}")
endif()
run(readelf -d ${WORK_DIR}/moved-prefix/bin/prog)
if(NOT RUN_OUTPUT MATCHES "RUNPATH[^\n]*\\[\\$ORIGIN/\\.\\./lib:${WORK_DIR}/opt/lib\\]")
  message(FATAL_ERROR "prog's RUNPATH is not $ORIGIN/../lib:${WORK_DIR}/opt/lib:\n${RUN_OUTPUT}")
endif()
run(${WORK_DIR}/moved-prefix/bin/prog)
if(NOT RUN_OUTPUT STREQUAL "core 43\n")
  message(FATAL_ERROR "the moved program printed '${RUN_OUTPUT}'")
endif()
message(STATUS "installed RUNPATHs: libcore ${WORK_DIR}/opt/lib, prog \$ORIGIN/../lib:${WORK_DIR}/opt/lib; "
               "the moved program runs")
