# ctest api_install_consumer (cmake -P): installs the build to a temporary prefix and uses it the
# way a user would. Fails (FATAL_ERROR) at the first problem. Steps:
#   1. cmake --install BUILD_DIR --prefix WORK_DIR/prefix
#   2. the installed files: public headers only, libflt.so with SONAME libflt.so.MAJOR and the
#      full version, fltConfig*.cmake, FindRDKit.cmake, flt.pc, the flt program
#   3. libflt exports the public API only (nm -D: no internal namespaces, no Eigen)
#   4. examples/consumer: configure with find_package(flt) against the prefix, build, run on
#      tests/api/data/small.sdf with a test model (make_test_model: random-initialised, untrained)
#   5. the README's "Using flt from C++" example, extracted verbatim from README.md, compiled with
#      the flags of the installed flt-rdkit.pc (pkg-config) and run: with FLT_DEFAULT_MODEL, then with
#      the model installed under <prefix>/share/flt/models/default.flt (relocated-prefix lookup)
# Inputs (-D): BUILD_DIR SOURCE_DIR WORK_DIR MAKE_TEST_MODEL PROJECT_VERSION CXX_COMPILER GENERATOR
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR MAKE_TEST_MODEL PROJECT_VERSION CXX_COMPILER)
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

# 4. The example consumer: find_package(flt) against the prefix only.
set(generator_args "")
if(GENERATOR)
  set(generator_args -G ${GENERATOR})
endif()
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/consumer -B ${WORK_DIR}/consumer ${generator_args}
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer)
run(${WORK_DIR}/consumer/flt_consumer ${sdf} ${model})
message(STATUS "consumer:\n${RUN_OUTPUT}")
if(NOT RUN_OUTPUT MATCHES "all checks passed")
  message(FATAL_ERROR "consumer did not pass its checks")
endif()

# 5. The README example (flt/rdkit.hpp), verbatim, built with pkg-config flt-rdkit.
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
set(ENV{PKG_CONFIG_PATH} ${libdir}/pkgconfig)
run(pkg-config --cflags --libs flt-rdkit)
string(STRIP "${RUN_OUTPUT}" pc_flags)
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
run(${CXX_COMPILER} -O1 -Wall -Wextra -Werror ${WORK_DIR}/readme/main.cpp -o
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
