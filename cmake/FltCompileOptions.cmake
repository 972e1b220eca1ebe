# Warnings, sanitizers and per-kernel architecture flags.
add_library(flt_warnings INTERFACE)
target_compile_options(flt_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow
                       -Wnon-virtual-dtor -Wcast-align -Wunused -Woverloaded-virtual
                       $<$<BOOL:${FLT_WERROR}>:-Werror>)

if(FLT_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# Eigen's GEMM is faster built for AVX2 than for AVX-512 on this Zen 4 (measured, see docs/),
# so the default target is x86-64-v3; exp/cos-heavy kernels opt into AVX-512 per source file
# with flt_kernel_avx512(<file>...) and are dispatched at run time.
if(FLT_NATIVE)
  set(FLT_ARCH_FLAGS -march=native)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(FLT_ARCH_FLAGS -march=x86-64-v3)
else()
  set(FLT_ARCH_FLAGS "")
endif()
add_compile_options(${FLT_ARCH_FLAGS})
