#include "io/checksum.hpp"
#include "io/json.hpp"

#include <catch2/catch.hpp>

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

TEST_CASE("JSON canonical text is fixed: escapes, key order, integers, doubles", "[train][json]") {
  // Strings: escaped as Python's json.dumps(..., ensure_ascii=False) does (checked with Python 3.11).
  const std::string all_controls =
      std::string("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0A\x0B\x0C\x0D\x0E\x0F", 16) +
      "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1A\x1B\x1C\x1D\x1E\x1F\x7F\"\\/ caf\xC3\xA9 \xE2\x82\xAC "
      "\xF0\x9F\x98\x80 \xEF\xBF\xBF";
  CHECK(Json::string(all_controls).dump() ==
        "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f"
        "\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d"
        "\\u001e\\u001f\x7F\\\"\\\\/ caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xEF\xBF\xBF\"");
  // Keys sorted by their UTF-8 bytes, no whitespace.
  Json o = Json::object();
  o.set("b", Json::number(std::uint64_t{1}));
  o.set("a", Json::number(std::uint64_t{2}));
  o.set("\xC3\xA9", Json::string("x"));
  o.set("Z", Json::array());
  o.set("", Json::object());
  o.set(std::string("a\x01", 2), Json());
  o.set("\xF0\x9F\x98\x80", Json::boolean(true));
  o.set("\xEF\xBF\xBF", Json::boolean(false));
  CHECK(o.dump() == "{\"\":{},\"Z\":[],\"a\":2,\"a\\u0001\":null,\"b\":1,\"\xC3\xA9\":\"x\","
                    "\"\xEF\xBF\xBF\":false,\"\xF0\x9F\x98\x80\":true}");
  // Integers exactly, including the 64-bit extremes.
  CHECK(Json::number(std::uint64_t{18446744073709551615ULL}).dump() == "18446744073709551615");
  CHECK(Json::number(std::int64_t{INT64_MIN}).dump() == "-9223372036854775808");
  CHECK(Json::number(std::int64_t{-42}).dump() == "-42");
  // Doubles: shortest text that reads back to the same value.
  CHECK(Json::number(0.1).dump() == "0.1");
  CHECK(Json::number(1e-06).dump() == "1e-06");
  CHECK(Json::number(1e300).dump() == "1e+300");
  CHECK(Json::number(-2.5).dump() == "-2.5");
  CHECK(Json::number(0.3333333333333333).dump() == "0.3333333333333333");
  CHECK(Json::number(1.7976931348623157e308).dump() == "1.7976931348623157e+308");
  CHECK(Json::number(5e-324).dump() == "5e-324");
  CHECK(Json::number(1.0).dump() == "1");
  CHECK(Json::number(-0.0).dump() == "-0");
  CHECK(Json::number(100.0).dump() == "100");
  CHECK(Json::number(0.0001).dump() == "1e-04");
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
