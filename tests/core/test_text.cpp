// The shared text helpers (core/text.hpp): the exact splitting and trimming rules that option
// lists, model metadata, INI values and PDB columns rely on.
#include "core/text.hpp"

#include <catch2/catch.hpp>

#include <limits>
#include <string>
#include <vector>

using Strings = std::vector<std::string>;

TEST_CASE("text: trim strips ASCII white space at both ends only", "[core][text]") {
  CHECK(flt::trim("  a b\t\r\n") == "a b");
  CHECK(flt::trim("\v\fx\f") == "x");
  CHECK(flt::trim(" \t ").empty());
  CHECK(flt::trim("") == "");
  CHECK(flt::lower("U0 Hartree ß") == "u0 hartree ß");
}

TEST_CASE("text: split keeps every field, split_list the non-empty trimmed ones", "[core][text]") {
  CHECK(flt::split("a,,b") == Strings{"a", "", "b"});
  CHECK(flt::split("") == Strings{""});
  CHECK(flt::split(" a , b,") == Strings{" a ", " b", ""});
  CHECK(flt::split("x;y", ';') == Strings{"x", "y"});
  CHECK(flt::split_list(" U0, gap ,, cal/(mol K) ,") == Strings{"U0", "gap", "cal/(mol K)"});
  CHECK(flt::split_list(" , ").empty());
  CHECK(flt::join({"a", "b", "c"}) == "a,b,c");
  CHECK(flt::join({"a", "b"}, ", ") == "a, b");
  CHECK(flt::join({}) == "");
  CHECK(flt::split(flt::join({"p", "", "q"})) == Strings{"p", "", "q"});
}

TEST_CASE("text: numbers for messages and the shortest round-trip text", "[core][text]") {
  CHECK(flt::format_number(3.14159265) == "3.142");
  CHECK(flt::format_number(0.000123456, 3) == "0.000123");
  CHECK(flt::format_number(std::numeric_limits<double>::quiet_NaN()) == "nan");
  CHECK(flt::shortest_number(0.1) == "0.1");
  CHECK(flt::shortest_number(1e-6) == "1e-06");
  CHECK(flt::shortest_number(-40.47893) == "-40.47893");
  CHECK(std::stod(flt::shortest_number(1.0 / 3.0)) == 1.0 / 3.0);
}
