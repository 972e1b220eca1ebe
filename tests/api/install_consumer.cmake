# ctest api_install_consumer (cmake -P): installs the build to a temporary prefix and uses it the
# way a user would. Fails (FATAL_ERROR) at the first problem. Steps:
#   1. cmake --install BUILD_DIR --prefix WORK_DIR/prefix
#   2. the installed files: public headers only, libflt.so with SONAME libflt.so.MAJOR, the full
#      version and DT_NEEDED entries for RDKit, fltConfig*.cmake, FindRDKit.cmake, flt.pc, the flt
#      program (fltRDKitTargets.cmake and flt-rdkit.pc are used in steps 5 and 6)
#      and RUNPATHs (bin/flt, libflt, the Python modules) naming no system directory
#   3. libflt exports the public API only (nm -D: no internal namespaces, no Eigen)
#   4. without RDKit: RDKit (and Boost) cannot be found (CMAKE_DISABLE_FIND_PACKAGE_RDKit/Boost),
#      and still
#      a. find_package(flt) defines flt::flt, searches for neither, and fltTargets*.cmake name no
#         RDKit; find_package(flt COMPONENTS rdkit) then fails, saying what it needs
#      b. examples/consumer-without-rdkit (flt::flt) configures, builds (its compile and link
#         commands hold neither RDKit's include directory nor an RDKit library), needs no RDKit
#         library itself (readelf: only libflt's own DT_NEEDED entries bring RDKit) and runs
#      c. the same program built with -std=c++20 and the flags of `pkg-config flt` (no RDKit, no
#         -std in them) runs; with -std=c++23 before those flags the standard stays C++23, with
#         -std=c++17 the headers stop at an #error saying that they need C++20
#      d. including <flt/rdkit.hpp> with only those flags stops with a message naming flt::rdkit
#   5. with RDKit: examples/consumer: find_package(flt COMPONENTS rdkit) against the prefix,
#      flt::rdkit, build, run on tests/api/data/small.sdf with a test model (make_test_model:
#      random-initialised, untrained)
#   6. the README's "Using flt from C++" example (flt/rdkit.hpp), extracted verbatim from
#      README.md, compiled with -std=c++20 and the flags of the installed flt-rdkit.pc
#      (pkg-config) and run: with
#      FLT_DEFAULT_MODEL, then with the model installed under <prefix>/share/flt/models/default.flt
#      (relocated-prefix lookup)
# Inputs (-D): BUILD_DIR SOURCE_DIR WORK_DIR MAKE_TEST_MODEL PROJECT_VERSION CXX_COMPILER
# RDKIT_INCLUDE_DIR GENERATOR
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR MAKE_TEST_MODEL PROJECT_VERSION CXX_COMPILER
    RDKIT_INCLUDE_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "install_consumer.cmake: -D${var}=... missing")
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

# run_expect_failure(<command>...): the command must fail; RUN_OUTPUT = its stdout and stderr.
function(run_expect_failure)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "succeeded but should have failed: ${cmd}\n"
                        "--- stdout\n${out}\n--- stderr\n${err}")
  endif()
  set(RUN_OUTPUT "${out}${err}" PARENT_SCOPE)
endfunction()

# assert_no_rdkit(<what> <text>): <text> (compiler flags, build commands, a CMake file) names
# neither RDKit's include directory nor an RDKit library or target.
function(assert_no_rdkit what text)
  string(FIND "${text}" "${RDKIT_INCLUDE_DIR}" at_include)
  string(FIND "${text}" "RDKit" at_name)
  if(NOT at_include EQUAL -1 OR NOT at_name EQUAL -1)
    message(FATAL_ERROR "${what} names RDKit (${RDKIT_INCLUDE_DIR} or RDKit...):\n${text}")
  endif()
endfunction()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

# 1. Install.
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

# 2. Installed files.
string(REGEX MATCH "^[0-9]+" major "${PROJECT_VERSION}")
if(EXISTS ${prefix}/lib/libflt.so)
  set(libdir ${prefix}/lib)
else()
  file(GLOB libdir LIST_DIRECTORIES true ${prefix}/lib/*-linux-gnu*)
endif()
foreach(f
    include/flt/flt.hpp include/flt/model.hpp include/flt/molecule.hpp include/flt/error.hpp
    include/flt/version.hpp include/flt/export.hpp include/flt/rdkit.hpp bin/flt)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "not installed: ${prefix}/${f}")
  endif()
endforeach()
foreach(f libflt.so libflt.so.${major} libflt.so.${PROJECT_VERSION} cmake/flt/fltConfig.cmake
    cmake/flt/fltConfigVersion.cmake cmake/flt/fltTargets.cmake cmake/flt/FindRDKit.cmake
    pkgconfig/flt.pc)
  if(NOT EXISTS ${libdir}/${f})
    message(FATAL_ERROR "not installed: ${libdir}/${f}")
  endif()
endforeach()
file(GLOB_RECURSE headers RELATIVE ${prefix}/include ${prefix}/include/*)
foreach(h IN LISTS headers)
  if(NOT h MATCHES "^flt/[a-z_]+\\.hpp$")
    message(FATAL_ERROR "unexpected installed header (internal headers must not be installed): ${h}")
  endif()
endforeach()
run(readelf -d ${libdir}/libflt.so.${PROJECT_VERSION})
if(NOT RUN_OUTPUT MATCHES "Library soname: \\[libflt\\.so\\.${major}\\]")
  message(FATAL_ERROR "libflt SONAME is not libflt.so.${major}:\n${RUN_OUTPUT}")
endif()
# libflt records the RDKit libraries it uses itself, so a program links it with -lflt alone.
if(NOT RUN_OUTPUT MATCHES "NEEDED[^\n]*\\[libRDKitGraphMol\\.so")
  message(FATAL_ERROR "libflt has no DT_NEEDED entry for libRDKitGraphMol:\n${RUN_OUTPUT}")
endif()

# RUNPATHs: $ORIGIN-relative ones and third-party directories outside the system's only (a build
# against Debian's RDKit: none but the Python module's $ORIGIN one); never a system directory.
file(GLOB python_modules ${prefix}/lib/python*/*-packages/flt/*.so)
foreach(binary ${prefix}/bin/flt ${libdir}/libflt.so.${PROJECT_VERSION} ${python_modules})
  run(readelf -d ${binary})
  if(RUN_OUTPUT MATCHES "\\((RPATH|RUNPATH)\\)[^\n]*\\[([^]\n]*)\\]")
    string(REPLACE ":" ";" entries "${CMAKE_MATCH_2}")
    foreach(entry IN LISTS entries)
      if(entry STREQUAL "" OR entry MATCHES "^(/usr)?/lib(32|64|x32)?(/|$)")
        message(FATAL_ERROR "${binary}: RUNPATH entry '${entry}' (a system or empty directory):\n${RUN_OUTPUT}")
      endif()
    endforeach()
  endif()
endforeach()

# 3. Exported symbols: the public API only.
run(nm -DC --defined-only ${libdir}/libflt.so.${PROJECT_VERSION})
set(symbols "${RUN_OUTPUT}")
foreach(expected "flt::Model::load(" "flt::Model::predict_file(" "flt::version()"
    "flt::predict(flt::Model const&, RDKit::ROMol const&, int)" "flt::to_molecule(")
  string(FIND "${symbols}" "${expected}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "libflt does not export ${expected}:\n${symbols}")
  endif()
endforeach()
foreach(internal "flt::chem::" "flt::pipeline::" "flt::models::" "flt::train::" "flt::attn::"
    "Eigen::" "flt::Model::Impl::")
  string(FIND "${symbols}" "${internal}" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "libflt exports internal symbols (${internal}):\n${symbols}")
  endif()
endforeach()

# A test model (random-initialised, untrained) and the input.
set(model ${WORK_DIR}/test-model.flt)
run(${MAKE_TEST_MODEL} ${model} 3)
set(sdf ${SOURCE_DIR}/tests/api/data/small.sdf)

set(generator_args "")
if(GENERATOR)
  set(generator_args -G ${GENERATOR})
endif()
# What a machine without RDKit's (and Boost's) development files looks like to CMake: neither
# package can be found. flt::flt must not need them.
set(no_rdkit_args -DCMAKE_DISABLE_FIND_PACKAGE_RDKit=ON -DCMAKE_DISABLE_FIND_PACKAGE_Boost=ON)

# 4a. The package without the component: configures with RDKit unfindable, defines flt::flt with
# no RDKit in its interface and searches for neither RDKit nor Boost; with the component, a
# failure that says what is missing.
file(WRITE ${WORK_DIR}/probe/CMakeLists.txt [=[
cmake_minimum_required(VERSION 3.20)
project(probe LANGUAGES NONE)
find_package(flt 0.1 REQUIRED)
if(NOT TARGET flt::flt)
  message(FATAL_ERROR "find_package(flt) did not define flt::flt")
endif()
if(TARGET flt::rdkit OR DEFINED RDKit_FOUND OR DEFINED Boost_FOUND OR DEFINED RDKit_INCLUDE_DIR)
  message(FATAL_ERROR "find_package(flt) without COMPONENTS rdkit searched for RDKit or Boost")
endif()
get_target_property(link flt::flt INTERFACE_LINK_LIBRARIES)
message(STATUS "flt::flt INTERFACE_LINK_LIBRARIES: ${link}")
]=])
run(${CMAKE_COMMAND} -S ${WORK_DIR}/probe -B ${WORK_DIR}/probe/build
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON ${no_rdkit_args})
string(REGEX MATCH "flt::flt INTERFACE_LINK_LIBRARIES: [^\n]*" link "${RUN_OUTPUT}")
assert_no_rdkit("the interface of flt::flt" "${link}")
file(GLOB target_files ${libdir}/cmake/flt/fltTargets*.cmake)
foreach(f IN LISTS target_files)
  file(READ ${f} text)
  assert_no_rdkit("${f}" "${text}")
endforeach()
# With the component (optional, then required) and RDKit unfindable.
file(WRITE ${WORK_DIR}/probe-rdkit/CMakeLists.txt [=[
cmake_minimum_required(VERSION 3.20)
project(probe_rdkit LANGUAGES NONE)
find_package(flt 0.1 QUIET OPTIONAL_COMPONENTS rdkit)
if(NOT flt_FOUND OR flt_rdkit_FOUND OR TARGET flt::rdkit)
  message(FATAL_ERROR "OPTIONAL_COMPONENTS rdkit without RDKit: flt_FOUND=${flt_FOUND} "
                      "flt_rdkit_FOUND=${flt_rdkit_FOUND}")
endif()
message(STATUS "OPTIONAL_COMPONENTS rdkit without RDKit: flt::flt only")
find_package(flt 0.1 REQUIRED COMPONENTS rdkit)
]=])
run_expect_failure(${CMAKE_COMMAND} -S ${WORK_DIR}/probe-rdkit -B ${WORK_DIR}/probe-rdkit/build
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON ${no_rdkit_args})
if(NOT RUN_OUTPUT MATCHES "OPTIONAL_COMPONENTS rdkit without RDKit: flt::flt only")
  message(FATAL_ERROR "find_package(flt OPTIONAL_COMPONENTS rdkit) without RDKit:\n${RUN_OUTPUT}")
endif()
if(NOT RUN_OUTPUT MATCHES "component[ \n]+rdkit[ \n]+\\(flt::rdkit,")
  message(FATAL_ERROR "find_package(flt COMPONENTS rdkit) without RDKit: no or another error:\n"
                      "${RUN_OUTPUT}")
endif()

# 4b. examples/consumer-without-rdkit: flt::flt alone, RDKit unfindable.
set(plain ${WORK_DIR}/consumer-without-rdkit)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/consumer-without-rdkit -B ${plain}
    ${generator_args} -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON ${no_rdkit_args})
# (find_path/find_library/find_package would have left these entries in the cache)
file(READ ${plain}/CMakeCache.txt cache)
if(cache MATCHES "(^|\n)(RDKit_[A-Za-z_]*|Boost_DIR|Boost_INCLUDE_DIR):")
  message(FATAL_ERROR "configuring examples/consumer-without-rdkit searched for RDKit or Boost: "
                      "${CMAKE_MATCH_2} in ${plain}/CMakeCache.txt")
endif()
run(${CMAKE_COMMAND} --build ${plain} --verbose)
message(STATUS "consumer-without-rdkit build commands:\n${RUN_OUTPUT}")
if(NOT RUN_OUTPUT MATCHES "main\\.cpp" OR NOT RUN_OUTPUT MATCHES "libflt\\.so")
  message(FATAL_ERROR "the verbose build shows no compile or link command:\n${RUN_OUTPUT}")
endif()
assert_no_rdkit("the compile and link commands of examples/consumer-without-rdkit" "${RUN_OUTPUT}")
run(readelf -d ${plain}/flt_consumer_plain)
if(NOT RUN_OUTPUT MATCHES "NEEDED[^\n]*\\[libflt\\.so\\.${major}\\]")
  message(FATAL_ERROR "flt_consumer_plain does not need libflt.so.${major}:\n${RUN_OUTPUT}")
endif()
assert_no_rdkit("the DT_NEEDED entries of flt_consumer_plain" "${RUN_OUTPUT}")
run(${plain}/flt_consumer_plain ${sdf} ${model})
message(STATUS "consumer-without-rdkit:\n${RUN_OUTPUT}")
if(NOT RUN_OUTPUT MATCHES "all checks passed")
  message(FATAL_ERROR "consumer-without-rdkit did not pass its checks")
endif()

# 4c. The same program with pkg-config flt.
set(ENV{PKG_CONFIG_PATH} ${libdir}/pkgconfig)
run(pkg-config --cflags --libs flt)
string(STRIP "${RUN_OUTPUT}" pc_flags)
message(STATUS "pkg-config --cflags --libs flt: ${pc_flags}")
assert_no_rdkit("pkg-config --cflags --libs flt" "${pc_flags}")
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
file(MAKE_DIRECTORY ${WORK_DIR}/pc-plain)
run(${CXX_COMPILER} -std=c++20 -O1 -Wall -Wextra -Werror
    ${SOURCE_DIR}/examples/consumer-without-rdkit/main.cpp -o ${WORK_DIR}/pc-plain/example
    ${pc_flags})
# A program's later standard stays its own (the flags of pkg-config after it, as usual), and an
# earlier one stops at an #error that says what the headers need.
file(WRITE ${WORK_DIR}/pc-plain/std.cpp
     "#include <flt/flt.hpp>\nstatic_assert(__cplusplus > 202002L, \"not C++23\");\nint main() {}\n")
run(${CXX_COMPILER} -std=c++23 -fsyntax-only ${WORK_DIR}/pc-plain/std.cpp ${pc_flags})
run_expect_failure(${CXX_COMPILER} -std=c++17 -fsyntax-only ${WORK_DIR}/pc-plain/std.cpp ${pc_flags})
if(NOT RUN_OUTPUT MATCHES "#error[^\n]*need C\\+\\+20")
  message(FATAL_ERROR "flt/flt.hpp with -std=c++17: no #error saying that C++20 is needed:\n${RUN_OUTPUT}")
endif()
if(pc_flags MATCHES "-std=")
  message(FATAL_ERROR "pkg-config --cflags flt sets the language standard, which is the program's "
                      "choice: ${pc_flags}")
endif()
set(ENV{LD_LIBRARY_PATH} ${libdir})
run(${WORK_DIR}/pc-plain/example ${sdf} ${model})
if(NOT RUN_OUTPUT MATCHES "all checks passed")
  message(FATAL_ERROR "consumer-without-rdkit (pkg-config flt) did not pass its checks")
endif()
unset(ENV{LD_LIBRARY_PATH})

# 4d. flt/rdkit.hpp without RDKit's flags: a message that names the target to use.
file(WRITE ${WORK_DIR}/pc-plain/rdkit_without_rdkit.cpp "#include <flt/rdkit.hpp>\nint main() {}\n")
run_expect_failure(${CXX_COMPILER} -std=c++20 -fsyntax-only ${WORK_DIR}/pc-plain/rdkit_without_rdkit.cpp
    ${pc_flags})
if(NOT RUN_OUTPUT MATCHES "#error[^\n]*flt::rdkit")
  message(FATAL_ERROR "flt/rdkit.hpp without RDKit: the error does not name flt::rdkit:\n"
                      "${RUN_OUTPUT}")
endif()

# 5. The example consumer with RDKit: find_package(flt COMPONENTS rdkit) against the prefix only.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/consumer -B ${WORK_DIR}/consumer ${generator_args}
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer)
run(${WORK_DIR}/consumer/flt_consumer ${sdf} ${model})
message(STATUS "consumer:\n${RUN_OUTPUT}")
if(NOT RUN_OUTPUT MATCHES "all checks passed")
  message(FATAL_ERROR "consumer did not pass its checks")
endif()

# 6. The README example (flt/rdkit.hpp), verbatim, built with pkg-config flt-rdkit.
file(READ ${SOURCE_DIR}/README.md readme)
string(FIND "${readme}" "<!-- cpp-api-example:begin -->" begin)
string(FIND "${readme}" "<!-- cpp-api-example:end -->" end)
if(begin EQUAL -1 OR end EQUAL -1 OR end LESS begin)
  message(FATAL_ERROR "README.md: no <!-- cpp-api-example:begin/end --> markers")
endif()
math(EXPR length "${end} - ${begin}")
string(SUBSTRING "${readme}" ${begin} ${length} block)
# Keep the lines between the ```cpp fence and the closing fence.
string(REGEX MATCH "```cpp\n(.*)\n```" matched "${block}")
if(NOT matched)
  message(FATAL_ERROR "README.md: no ```cpp block between the markers")
endif()
file(WRITE ${WORK_DIR}/readme/main.cpp "${CMAKE_MATCH_1}\n")
run(pkg-config --cflags --libs flt-rdkit)
string(STRIP "${RUN_OUTPUT}" pc_flags)
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
run(${CXX_COMPILER} -std=c++20 -O1 -Wall -Wextra -Werror ${WORK_DIR}/readme/main.cpp -o
    ${WORK_DIR}/readme/example ${pc_flags} -lRDKitFileParsers)
set(ENV{LD_LIBRARY_PATH} ${libdir})
set(ENV{FLT_DEFAULT_MODEL} ${model})
run(${WORK_DIR}/readme/example ${sdf})
message(STATUS "README example (FLT_DEFAULT_MODEL):\n${RUN_OUTPUT}")
# Without the variable the installed libflt finds <prefix>/share/flt/models/default.flt (the
# bundled model when one was installed, else the test model put there).
unset(ENV{FLT_DEFAULT_MODEL})
if(NOT EXISTS ${prefix}/share/flt/models/default.flt)
  file(MAKE_DIRECTORY ${prefix}/share/flt/models)
  file(COPY_FILE ${model} ${prefix}/share/flt/models/default.flt)
endif()
file(RENAME ${prefix} ${WORK_DIR}/moved-prefix)  # relocatable: nothing points at the old path
set(ENV{LD_LIBRARY_PATH} ${WORK_DIR}/moved-prefix/lib)
if(NOT EXISTS ${WORK_DIR}/moved-prefix/lib/libflt.so)
  string(REPLACE "${prefix}" "${WORK_DIR}/moved-prefix" moved_libdir "${libdir}")
  set(ENV{LD_LIBRARY_PATH} ${moved_libdir})
endif()
run(${WORK_DIR}/readme/example ${sdf})
message(STATUS "README example (installed default model):\n${RUN_OUTPUT}")
if(NOT RUN_OUTPUT MATCHES "moved-prefix/share/flt/models/default\\.flt")
  message(FATAL_ERROR "the moved installation did not use its own share/flt/models/default.flt")
endif()

# The installed Python package (when built): imports from the moved prefix without
# LD_LIBRARY_PATH (its module finds libflt through a relative RUNPATH) and uses the same model.
if(PYTHON)
  unset(ENV{LD_LIBRARY_PATH})
  set(ENV{PYTHONPATH} ${WORK_DIR}/moved-prefix/${PYTHON_INSTALL_DIR})
  # (no semicolons in the code: CMake would split the argument there)
  run(${PYTHON} -c "import flt\nm = flt.Model.load_default()\nprint(flt.__file__, m.default_model_path(), m.names)")
  message(STATUS "Python package (moved installation):\n${RUN_OUTPUT}")
  if(NOT RUN_OUTPUT MATCHES "moved-prefix/.*/flt/__init__\\.py.*moved-prefix/share/flt/models/default\\.flt")
    message(FATAL_ERROR "the installed Python package did not load from the moved prefix")
  endif()
endif()
