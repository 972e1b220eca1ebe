# Warnings, sanitizers and per-kernel architecture flags.
add_library(flt_warnings INTERFACE)
target_compile_options(flt_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow
                       -Wnon-virtual-dtor -Wcast-align -Wunused -Woverloaded-virtual
                       $<$<BOOL:${FLT_WERROR}>:-Werror>)

if(FLT_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# The default target is x86-64-v3 (AVX2, FMA): machines of this kind differ, and some have no
# AVX-512. Kernels that gain from AVX-512 carry their own AVX-512 variant (a target attribute)
# chosen at run time by cpuid (core/gemm.hpp; docs/core.md, "GEMM"). A whole build for AVX-512
# (FLT_NATIVE on a Zen 5 core, and on an Ice Lake server core) measured no faster for the encoder
# block (docs/attention.md, "Near field", Loops).
if(FLT_NATIVE)
  set(FLT_ARCH_FLAGS -march=native)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(FLT_ARCH_FLAGS -march=x86-64-v3)
else()
  set(FLT_ARCH_FLAGS "")
endif()
add_compile_options(${FLT_ARCH_FLAGS})
