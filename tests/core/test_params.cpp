#include "core/allocator.hpp"
#include "core/params.hpp"

#include <catch2/catch.hpp>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <vector>

using namespace flt;

TEST_CASE("ParameterStore lays tensors out contiguously with named views", "[core][params]") {
  ParameterStore<float> store;
  const ParamRef w = store.add("layer.weight", 3, 4);
  const ParamRef b = store.add("layer.bias", 4);
  store.allocate();
  REQUIRE(store.size() == 16);
  REQUIRE(w.offset == 0);
  REQUIRE(b.offset == 12);
  store.value(w)(1, 2) = 5.0f;  // row-major: flat index 1*4+2
  REQUIRE(store.values()[6] == 5.0f);
  store.grad(b)(3, 0) = 2.0f;
  REQUIRE(store.grads()[15] == 2.0f);
  REQUIRE(store.ref("layer.bias").offset == b.offset);
  store.zero_grad();
  REQUIRE(store.grads()[15] == 0.0f);
}

TEST_CASE("ParameterStore rejects duplicate names and unknown lookups", "[core][params]") {
  ParameterStore<double> store;
  store.add("a", 2, 2);
  REQUIRE_THROWS_AS(store.add("a", 1, 1), InvalidArgument);
  REQUIRE_THROWS_AS(store.ref("missing"), InvalidArgument);
}

TEST_CASE("tune_allocator_for_batches: large blocks come from the heap and stay there", "[core][allocator]") {
#if defined(__GLIBC__)
  REQUIRE(flt::tune_allocator_for_batches());
  // Blocks of 16 MiB (a large batch's activations) and 256 MiB (one structure of 1e5 atoms, above
  // any mmap threshold glibc accepts) are served from the heap: the count of mmapped blocks does
  // not change. With glibc's defaults both would be mmapped.
  const std::size_t mmapped_before = mallinfo2().hblks;
  std::vector<float> batch(std::size_t{4} << 20, 1.0f);
  CHECK(mallinfo2().hblks == mmapped_before);
  CHECK(batch.back() == 1.0f);
  {
    std::vector<float> structure(std::size_t{64} << 20, 1.0f);
    CHECK(mallinfo2().hblks == mmapped_before);
    CHECK(structure.back() == 1.0f);
  }
  // Freed, it stays in the heap for the next call (no trimming): the heap's size does not shrink.
  CHECK(mallinfo2().arena >= std::size_t{256} << 20);
#else
  CHECK_FALSE(flt::tune_allocator_for_batches());
#endif
}
