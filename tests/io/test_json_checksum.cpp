#include "io/checksum.hpp"
#include "io/fuzz_entry.hpp"
#include "io/json.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

using flt::io::dump_json;
using flt::io::JsonError;
using flt::io::parse_json;
using nlohmann::json;

namespace {

// The offset of the JsonError that parse_json throws for `text` (npos if it throws none).
std::size_t error_offset(const std::string& text, std::size_t max_depth = 64) {
  try {
    (void)parse_json(text, max_depth);
  } catch (const JsonError& e) {
    return e.offset();
  }
  return std::string::npos;
}

}  // namespace

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
  const json j = parse_json(R"( { "b" : [1, -2.5e3, true, false, null], "a" : "x\"y\\z\n\u00e9\ud83d\ude00\/" } )");
  REQUIRE(j.is_object());
  CHECK(j.size() == 2);
  CHECK(j.at("a").get<std::string>() == "x\"y\\z\n\xC3\xA9\xF0\x9F\x98\x80/");
  const json& arr = j.at("b");
  CHECK(arr[0].is_number_unsigned());
  CHECK(arr[0].get<std::uint64_t>() == 1);
  CHECK(arr[1].is_number_float());
  CHECK(arr[1].get<double>() == -2500.0);
  CHECK(arr[2].get<bool>());
  CHECK(arr[4].is_null());
  // Keys sorted, no whitespace, escapes like Python's json.dumps(ensure_ascii=False); a
  // non-integer number is written as its double's shortest text, not as it was spelled.
  CHECK(dump_json(j) == "{\"a\":\"x\\\"y\\\\z\\n\xC3\xA9\xF0\x9F\x98\x80/\",\"b\":[1,-2500.0,true,false,null]}");
  CHECK(parse_json(dump_json(j)) == j);
  // 64-bit integers survive exactly (no double round trip); only literals without sign, fraction
  // or exponent are unsigned integers (what the model file's shapes and offsets must be).
  const json big = parse_json("18446744073709551615");
  CHECK(big.is_number_unsigned());
  CHECK(big.get<std::uint64_t>() == 18446744073709551615ULL);
  CHECK(dump_json(big) == "18446744073709551615");
  const json most_negative = parse_json("-9223372036854775808");
  CHECK(most_negative.is_number_integer());
  CHECK(!most_negative.is_number_unsigned());
  CHECK(most_negative.get<std::int64_t>() == INT64_MIN);
  for (const char* not_unsigned : {"-1", "-0", "1.5", "1e2", "1.0", "18446744073709551616"}) {
    INFO(not_unsigned);
    CHECK(!parse_json(not_unsigned).is_number_unsigned());
  }
  CHECK(parse_json("18446744073709551616").is_number_float());  // beyond uint64: a double
  CHECK(parse_json("0.1").get<double>() == 0.1);
}

TEST_CASE("JSON canonical text is fixed: escapes, key order, integers, doubles", "[train][json]") {
  // Strings: escaped as Python's json.dumps(..., ensure_ascii=False) does (checked with Python 3.11).
  const std::string all_controls =
      std::string("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0A\x0B\x0C\x0D\x0E\x0F", 16) +
      "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1A\x1B\x1C\x1D\x1E\x1F\x7F\"\\/ caf\xC3\xA9 \xE2\x82\xAC "
      "\xF0\x9F\x98\x80 \xEF\xBF\xBF";
  CHECK(dump_json(all_controls) ==
        "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f"
        "\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d"
        "\\u001e\\u001f\x7F\\\"\\\\/ caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xEF\xBF\xBF\"");
  // Keys sorted by their UTF-8 bytes, no whitespace.
  json o = json::object();
  o["b"] = 1;
  o["a"] = std::uint64_t{2};
  o["\xC3\xA9"] = "x";
  o["Z"] = json::array();
  o[""] = json::object();
  o[std::string("a\x01", 2)] = nullptr;
  o["\xF0\x9F\x98\x80"] = true;
  o["\xEF\xBF\xBF"] = false;
  CHECK(dump_json(o) == "{\"\":{},\"Z\":[],\"a\":2,\"a\\u0001\":null,\"b\":1,\"\xC3\xA9\":\"x\","
                    "\"\xEF\xBF\xBF\":false,\"\xF0\x9F\x98\x80\":true}");
  // Integers exactly, including the 64-bit extremes.
  CHECK(dump_json(json(std::uint64_t{18446744073709551615ULL})) == "18446744073709551615");
  CHECK(dump_json(json(std::int64_t{INT64_MIN})) == "-9223372036854775808");
  CHECK(dump_json(json(std::int64_t{-42})) == "-42");
  // Doubles: a text that reads back to the same value, always with a '.' or an exponent
  // (as Python writes them; the hand-written writer this replaced wrote 1.0 as "1", -0.0 as "-0",
  // 0.0001 as "1e-04").
  CHECK(dump_json(json(0.1)) == "0.1");
  CHECK(dump_json(json(1e-06)) == "1e-06");
  CHECK(dump_json(json(1e300)) == "1e+300");
  CHECK(dump_json(json(-2.5)) == "-2.5");
  CHECK(dump_json(json(0.3333333333333333)) == "0.3333333333333333");
  CHECK(dump_json(json(1.7976931348623157e308)) == "1.7976931348623157e+308");
  CHECK(dump_json(json(5e-324)) == "5e-324");
  CHECK(dump_json(json(1.0)) == "1.0");
  CHECK(dump_json(json(-0.0)) == "-0.0");
  CHECK(dump_json(json(100.0)) == "100.0");
  CHECK(dump_json(json(0.0001)) == "0.0001");
  // JSON has no NaN or infinity.
  CHECK(dump_json(json(std::nan(""))) == "null");
  CHECK(dump_json(json(std::numeric_limits<double>::infinity())) == "null");
  // Strings that are not UTF-8 cannot be written: a typed error, not a library exception.
  CHECK_THROWS_AS(dump_json(json(std::string("ab\xFF"))), flt::InvalidArgument);
  CHECK_THROWS_AS(dump_json(json{{"k", std::string("\xC0\xAF")}}), flt::InvalidArgument);
}

TEST_CASE("JSON parser rejects malformed input with a byte offset", "[train][json]") {
  const char* bad[] = {
      "",  "{",        "{\"a\":1,}", "[1,]",      "{\"a\" 1}",   "01",       "1.",        "-",          ".5",
      "+1", "1e",      "tru",        "nul",       "\"abc",       "\"\\x\"",  "\"\\ud800\"", "\"\\udc00\"", "{\"a\":1}x",
      "{\"a\":1,\"a\":2}", "[1 2]",  "\"\t\"",    "NaN",         "Infinity", "{1:2}",     "\"\\u12G4\"",
      "// c\n1", "/* c */ 1", "1e999", "-1e999", "[1] [2]",
  };
  for (const char* text : bad) {
    INFO(text);
    CHECK_THROWS_AS(parse_json(text), JsonError);
  }
  // Invalid UTF-8, reported at the first byte that cannot continue the sequence: overlong,
  // surrogate encoded directly, truncated sequence, stray continuation.
  CHECK(error_offset("\"\xC0\xAF\"") == 1);
  CHECK(error_offset("\"\xED\xA0\x80\"") == 2);
  CHECK(error_offset("\"\xE2\x82\"") == 3);
  CHECK(error_offset("\"\x80\"") == 1);
  // Where the syntax goes wrong.
  CHECK(error_offset("[1, 2, x]") == 7);
  CHECK(error_offset("[1,]") == 3);
  CHECK(error_offset("01") == 1);
  CHECK(error_offset("{\"a\":1}x") == 7);
  CHECK(error_offset("") == 0);
  // The message is ours: the offset, the reason, nothing of the library's exception names.
  try {
    (void)parse_json("[1, 2, x]");
    FAIL("no exception");
  } catch (const JsonError& e) {
    CHECK_THAT(e.what(), Catch::StartsWith("JSON error at byte 7: ") && Catch::Contains("invalid literal") &&
                             !Catch::Contains("json.exception") && !Catch::Contains("last read"));
  }
  CHECK_THROWS_WITH(parse_json("[1e999]"), Catch::Contains("out of the range of a double"));
}

TEST_CASE("JSON parser: duplicate keys, depth, byte order mark and NUL bytes", "[train][json]") {
  // A duplicate key is reported at its opening quote, after escapes are decoded; the same key in
  // two different objects is fine.
  CHECK(error_offset(R"({"a":1,"a":2})") == 7);
  CHECK(error_offset(R"({"a\"b":1, "a\"b":2})") == 11);
  CHECK(error_offset(R"({"x\\":1,"x\\":2})") == 9);
  CHECK(error_offset(R"({"a":1,"\u0061":2})") == 7);
  CHECK(error_offset(R"({"o":{"k":1,"k":2}})") == 12);
  CHECK_THROWS_WITH(parse_json(R"({"a":1,"a":2})"), Catch::Contains("duplicate key \"a\""));
  CHECK_NOTHROW(parse_json(R"({"a":{"a":1},"b":{"a":2},"c":[{"a":3},{"a":4}]})"));
  // Depth: at most max_depth arrays and objects inside each other; the error is at the first
  // bracket too deep.
  CHECK(error_offset(std::string(64, '[') + "1" + std::string(64, ']')) == std::string::npos);
  CHECK(error_offset(std::string(65, '[') + std::string(65, ']')) == 64);
  CHECK(error_offset(std::string(100, '[') + std::string(100, ']'), 64) == 64);
  CHECK(error_offset(R"({"a":{"a":{}}})", 2) == 10);
  CHECK(error_offset(R"({"a":{"a":{}}})", 3) == std::string::npos);
  CHECK(error_offset("[[1],[2],[[]]]", 2) == 10);
  CHECK(error_offset("1", 0) == std::string::npos);
  CHECK(error_offset("[]", 0) == 0);
  CHECK_THROWS_WITH(parse_json("[[]]", 1), Catch::Contains("nesting deeper than 1"));
  // Deep input well beyond the limit fails quickly, without recursion.
  CHECK(error_offset(std::string(1000000, '[')) == 64);
  // nlohmann accepts a UTF-8 byte order mark and stops at a NUL byte; the strict parser does not.
  CHECK(error_offset("\xEF\xBB\xBF{}") == 0);
  CHECK(error_offset(std::string("{}\0x", 4)) == 2);
  CHECK(error_offset(std::string("1\0", 2)) == 1);
  CHECK(error_offset(std::string("[1] \0", 5)) == 4);
  CHECK(error_offset(std::string("\0", 1)) == 0);
  CHECK(parse_json(std::string("\"a\\u0000b\"")).get<std::string>() == std::string("a\0b", 3));
  CHECK(error_offset(std::string("\"a\0b\"", 5)) == 2);
  // Surrounding whitespace is fine.
  CHECK(parse_json(" \t\r\n[] \n") == json::array());
}

TEST_CASE("JSON fuzz entry: no crash and no foreign exception on hostile input", "[train][json][fuzz]") {
  const std::string inputs[] = {std::string("{}\0x", 4), "\xEF\xBB\xBF[1]", std::string(100000, '['),
                                "{\"a\":1,\"a\":2}", "\"\xFF\"", "[1e999]", "[-0, 1e308, 5e-324, 18446744073709551616]",
                                "{\"\\ud83d\\ude00\":[0.1,1.0,-0.0]}"};
  for (const std::string& s : inputs)
    CHECK(flt_fuzz_json(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()) == 0);
}
