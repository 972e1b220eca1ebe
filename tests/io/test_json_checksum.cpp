#include "io/checksum.hpp"
#include "io/json.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>

using flt::io::Json;
using flt::io::JsonError;

TEST_CASE("CRC-32 and FNV-1a match their published check values", "[train][checksum]") {
  using namespace flt::io;
  // CRC-32/ISO-HDLC check value; Python: zlib.crc32(b"123456789") == 0xcbf43926.
  CHECK(crc32("123456789") == 0xCBF43926U);
  CHECK(crc32("") == 0U);
  CHECK(hex32(crc32("123456789")) == "cbf43926");
  // Incremental equals one-shot.
  const std::string text = "The quick brown fox jumps over the lazy dog";
  CHECK(crc32_update(crc32_update(0, text.data(), 10), text.data() + 10, text.size() - 10) == crc32(text));
  CHECK(crc32(text) == 0x414FA339U);
  // FNV-1a 64 reference values (offset basis for "", and "a").
  Fnv1a64 empty;
  CHECK(empty.digest() == 0xCBF29CE484222325ULL);
  Fnv1a64 a;
  a.update("a");
  CHECK(a.digest() == 0xAF63DC4C8601EC8CULL);
  CHECK(a.hex() == "af63dc4c8601ec8c");
  // -0.0 and +0.0 hash alike, as do all NaNs; 1.0 differs.
  Fnv1a64 z1, z2, n1, n2, one;
  z1.update_f64(0.0);
  z2.update_f64(-0.0);
  n1.update_f64(std::nan("1"));
  n2.update_f64(-std::nan("2"));
  one.update_f64(1.0);
  CHECK(z1.digest() == z2.digest());
  CHECK(n1.digest() == n2.digest());
  CHECK(one.digest() != z1.digest());
}

TEST_CASE("CRC-32 (zlib's crc32_z) in pieces and with empty pieces", "[train][checksum]") {
  using namespace flt::io;
  std::string text;
  for (int i = 0; i < 3000; ++i) text += "line " + std::to_string(i) + "\n";
  std::uint32_t crc = 0;
  for (std::size_t pos = 0; pos < text.size(); pos += 777) {
    crc = crc32_update(crc, text.data() + pos, std::min<std::size_t>(777, text.size() - pos));
  }
  CHECK(crc == crc32(text));
  // zlib answers its initial value for a null buffer; an empty piece must leave the CRC alone.
  CHECK(crc32_update(crc, nullptr, 0) == crc);
  CHECK(crc32_update(0x12345678U, "", 0) == 0x12345678U);
}

TEST_CASE("JSON parses valid documents and dumps them canonically", "[train][json]") {
  const Json j = Json::parse(R"( { "b" : [1, -2.5e3, true, false, null], "a" : "x\"y\\z\n\u00e9\ud83d\ude00" } )");
  REQUIRE(j.is_object());
  CHECK(j.as_object().size() == 2);
  CHECK(j.find("a")->as_string() == "x\"y\\z\n\xC3\xA9\xF0\x9F\x98\x80");
  const auto& arr = j.find("b")->as_array();
  CHECK(arr[0].as_u64() == 1);
  CHECK(arr[1].as_double() == -2500.0);
  CHECK(arr[1].number_text() == "-2.5e3");
  CHECK(arr[2].as_bool());
  CHECK(arr[4].is_null());
  // Keys sorted, no whitespace, escapes like Python's json.dumps(ensure_ascii=False).
  CHECK(j.dump() == "{\"a\":\"x\\\"y\\\\z\\n\xC3\xA9\xF0\x9F\x98\x80\",\"b\":[1,-2.5e3,true,false,null]}");
  CHECK(Json::parse(j.dump()) == j);
  CHECK(Json::string(std::string("\x01\x1f", 2)).dump() == "\"\\u0001\\u001f\"");
  // 64-bit integers survive exactly (no double round trip).
  CHECK(Json::parse("18446744073709551615").as_u64() == 18446744073709551615ULL);
  CHECK(Json::parse("-9223372036854775808").as_i64() == INT64_MIN);
  CHECK(Json::number(0.1).as_double() == 0.1);
  CHECK(Json::number(std::uint64_t{42}).dump() == "42");
}

TEST_CASE("JSON parser rejects malformed input with a byte offset", "[train][json]") {
  const char* bad[] = {
      "",  "{",        "{\"a\":1,}", "[1,]",      "{\"a\" 1}",   "01",       "1.",        "-",          ".5",
      "+1", "1e",      "tru",        "nul",       "\"abc",       "\"\\x\"",  "\"\\ud800\"", "\"\\udc00\"", "{\"a\":1}x",
      "{\"a\":1,\"a\":2}", "[1 2]",  "\"\t\"",    "NaN",         "Infinity", "{1:2}",     "\"\\u12G4\"",
  };
  for (const char* text : bad) {
    INFO(text);
    CHECK_THROWS_AS(Json::parse(text), JsonError);
  }
  // Invalid UTF-8: overlong, surrogate encoded directly, truncated sequence, stray continuation.
  for (const std::string& text : {std::string("\"\xC0\xAF\""), std::string("\"\xED\xA0\x80\""),
                                 std::string("\"\xE2\x82\""), std::string("\"\x80\"")}) {
    CHECK_THROWS_AS(Json::parse(text), JsonError);
  }
  // Depth limit.
  CHECK_THROWS_AS(Json::parse(std::string(100, '[') + std::string(100, ']'), 64), JsonError);
  CHECK_NOTHROW(Json::parse(std::string(10, '[') + std::string(10, ']'), 64));
  try {
    Json::parse("[1, 2, x]");
    FAIL("no exception");
  } catch (const JsonError& e) {
    CHECK(e.offset() == 7);
  }
  // Type and range errors in accessors.
  CHECK_THROWS_AS(Json::parse("1.5").as_u64(), JsonError);
  CHECK_THROWS_AS(Json::parse("-1").as_u64(), JsonError);
  CHECK_THROWS_AS(Json::parse("18446744073709551616").as_u64(), JsonError);
  CHECK_THROWS_AS(Json::parse("\"x\"").as_double(), JsonError);
  CHECK_THROWS_AS(Json::parse("1e999").as_double(), JsonError);
}
