#include "core/params.hpp"

#include <catch2/catch.hpp>

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
