#include "../common/scratch_dir.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"
#include "train/labels.hpp"
#include "io/units.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <sstream>

using namespace flt::io;
using namespace flt::train;
using flt::InputError;

TEST_CASE("CSV reader handles quotes, CRLF, embedded newlines and blank lines", "[train][csv]") {
  const std::string text =
      "\xEF\xBB\xBFid,title,U0\r\n"
      "1,\"gdb 1\",-40.47\r\n"
      "\r\n"
      "2,\"a, \"\"quoted\"\"\nname\",\r\n"
      "3,plain,NaN\n"
      "4,,  -1.5e-3 ";
  const CsvTable t = parse_csv(text, "labels.csv");
  REQUIRE(t.header == std::vector<std::string>{"id", "title", "U0"});
  REQUIRE(t.rows.size() == 4);
  CHECK(t.rows[1][1] == "a, \"quoted\"\nname");
  CHECK(t.row_lines == std::vector<std::size_t>{2, 4, 6, 7});
  CHECK(std::isnan(parse_csv_number(t.rows[1][2], t, 1, 2)));
  CHECK(std::isnan(parse_csv_number(t.rows[2][2], t, 2, 2)));
  CHECK(parse_csv_number(t.rows[3][2], t, 3, 2) == -1.5e-3);
  CHECK_THROWS_WITH(parse_csv_number("12abc", t, 0, 2), Catch::Contains("labels.csv:2:") && Catch::Contains("column 'U0'"));
  // Missing values as pandas reads them by default; anything else that is not a number is an error.
  for (const char* missing : {"", "  ", "NA", "na", "N/A", "n/a", "#N/A", "<NA>", "NaN", "-nan", "None", "NULL", "null"}) {
    INFO(missing);
    CHECK(flt::io::is_missing_value_text(missing));
    CHECK(std::isnan(parse_csv_number(missing, t, 0, 2)));
  }
  for (const char* value : {"N/A N/A", "missing", "-", "?", "0", "nanx", "nulls"}) {
    INFO(value);
    CHECK_FALSE(flt::io::is_missing_value_text(value));
  }
  CHECK_THROWS_WITH(parse_csv_number("?", t, 0, 2), Catch::Contains("'?' is not a number"));
  CHECK(t.where(2) == "labels.csv:6");
  CHECK_THROWS_WITH(t.require_column("gap"), Catch::Contains("no column 'gap' (columns: id, title, U0)"));
  // Writer round trip.
  std::ostringstream out;
  write_csv_row(out, t.header);
  for (const auto& r : t.rows) write_csv_row(out, r);
  const CsvTable again = parse_csv(out.str(), "again.csv");
  CHECK(again.rows == t.rows);
  CHECK(csv_escape(" x") == "\" x\"");
  CHECK(csv_number(0.1) == "0.1");
  CHECK(csv_number(std::nan("")).empty());
}

TEST_CASE("CSV errors name the file and line", "[train][csv]") {
  auto error_of = [](const std::string& text) -> std::string {
    try {
      parse_csv(text, "bad.csv");
    } catch (const InputError& e) {
      return e.what();
    }
    return "no error";
  };
  CHECK_THAT(error_of("a,b\n1,2,3\n"), Catch::Contains("bad.csv:2:") && Catch::Contains("3 fields, the header has 2"));
  CHECK_THAT(error_of("a,b\n1,\"2\n"), Catch::Contains("unterminated quoted field"));
  CHECK_THAT(error_of("a,b\n1,2\"x\n"), Catch::Contains("quote inside an unquoted field"));
  CHECK_THAT(error_of("a,b\n\"1\"x,2\n"), Catch::Contains("text after a closing quote"));
  CHECK_THAT(error_of("a,a\n"), Catch::Contains("duplicate column 'a'"));
  CHECK_THAT(error_of("a,\n"), Catch::Contains("empty column name"));
  CHECK_THAT(error_of(""), Catch::Contains("empty CSV"));
  CHECK_THROWS_AS(read_csv("/nonexistent/x.csv"), flt::IoError);
}

TEST_CASE("unit conversions use CODATA 2018 factors and check dimensions", "[train][units]") {
  CHECK(convert(1.0, "Hartree", "eV") == Approx(27.211386245988).epsilon(1e-15));
  CHECK(convert(1.0, "kcal/mol", "eV") == Approx(0.04336410424).epsilon(1e-9));
  CHECK(convert(1.0, "eV", "kcal/mol") == Approx(23.060547830619).epsilon(1e-10));
  CHECK(convert(1.0, "eV", "kJ/mol") == Approx(96.485332123).epsilon(1e-10));
  CHECK(convert(1.0, "Hartree", "kcal/mol") == Approx(627.5094740631).epsilon(1e-10));
  CHECK(convert(1.0, "e*Bohr", "D") == Approx(2.541746473));
  CHECK(convert(1.0, "Bohr^3", "Angstrom^3") == Approx(0.148184711).epsilon(1e-8));
  CHECK(convert(1.0, "cal/(mol K)", "J/(mol K)") == Approx(4.184));
  CHECK(convert(1.0, "cm^-1", "GHz") == Approx(29.9792458));
  CHECK(convert(250.0, "meV", "eV") == 0.25);
  CHECK(convert(-1.25, "eV", "eV") == -1.25);
  // Round trips are exact to rounding.
  for (const auto& u : unit_table())
    for (const auto& v : unit_table())
      if (u.dimension == v.dimension) CHECK(convert(convert(3.7, u, v), v, u) == Approx(3.7).epsilon(1e-14));
  CHECK(find_unit("Ha").name == "Hartree");
  CHECK(find_unit("\xC3\x85^3").name == "Angstrom^3");
  CHECK_THROWS_WITH(convert(1.0, "eV", "Debye"), Catch::Contains("cannot convert eV (energy) to Debye"));
  CHECK_THROWS_WITH(find_unit("furlong"), Catch::Contains("unknown unit 'furlong'") && Catch::Contains("kcal/mol"));
}

TEST_CASE("QM9 target table: 15 properties with units and extent", "[train][units]") {
  const auto& t = qm9_targets();
  REQUIRE(t.size() == 15);
  const char* names[] = {"A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv"};
  for (int i = 0; i < 15; ++i) {
    CHECK(t[static_cast<std::size_t>(i)].name == names[i]);
    CHECK(t[static_cast<std::size_t>(i)].qm9_column == i);
    CHECK(is_known_unit(t[static_cast<std::size_t>(i)].source_unit));
    CHECK(find_unit(t[static_cast<std::size_t>(i)].source_unit).dimension ==
          find_unit(t[static_cast<std::size_t>(i)].training_unit).dimension);
  }
  CHECK(find_qm9_target("U0")->source_unit == "Hartree");
  CHECK(find_qm9_target("U0")->training_unit == "eV");
  CHECK(find_qm9_target("U0")->extent == Extent::extensive);
  CHECK(find_qm9_target("gap")->extent == Extent::intensive);
  CHECK(find_qm9_target("alpha")->training_unit == "Bohr^3");
  CHECK(find_qm9_target("Cv")->extent == Extent::extensive);
  CHECK(find_qm9_target("u0") == nullptr);
  CHECK(split_unit_suffix("U0_pred [eV]") == std::pair<std::string, std::string>{"U0_pred", "eV"});
  CHECK(split_unit_suffix("gap") == std::pair<std::string, std::string>{"gap", ""});
  CHECK_THROWS_AS(split_unit_suffix("gap [eV"), flt::ConfigError);
  CHECK(with_unit_suffix("U0_pred", "eV") == "U0_pred [eV]");
  CHECK(with_unit_suffix("logP_pred", "") == "logP_pred [1]");
}

TEST_CASE("labels from CSV are keyed, unit-converted and masked", "[train][labels]") {
  const std::string text =
      "title,U0 [Hartree],gap,mu [D],other\n"
      "gdb 1,-40.47893,0.5048,0,x\n"
      "gdb 2,-56.525887,,1.6256,y\n";
  LabelCsvOptions o;
  o.targets = {"U0", "gap", "mu"};
  // A column without a unit gets none from its (QM9) name: units are never guessed.
  CHECK_THROWS_WITH(parse_label_csv(text, "labels.csv", o), Catch::Contains("column 'gap' has no unit"));
  o.source_units["gap"] = "Hartree";
  const LabelTable t = parse_label_csv(text, "labels.csv", o);
  CHECK(t.key_column == "title");
  CHECK(t.units == std::vector<std::string>{"eV", "eV", "Debye"});
  CHECK(t.source_units == std::vector<std::string>{"Hartree", "Hartree", "Debye"});
  const double* row = t.require("gdb 1");
  CHECK(row[0] == Approx(-40.47893 * 27.211386245988).epsilon(1e-15));
  CHECK(row[1] == Approx(0.5048 * 27.211386245988));
  CHECK(std::isnan(t.find("gdb 2")[1]));
  CHECK(t.find("gdb 3") == nullptr);
  CHECK_THROWS_WITH(t.require("gdb 3"), Catch::Contains("no labels for 'gdb 3'"));
  CHECK(t.line_of("gdb 2") == 3);
  // Asking for kcal/mol instead.
  o.training_units["U0"] = "kcal/mol";
  CHECK(parse_label_csv(text, "labels.csv", o).require("gdb 1")[0] == Approx(-40.47893 * 627.5094740631));
  // Errors.
  LabelCsvOptions bad;
  bad.targets = {"energy"};
  CHECK_THROWS_WITH(parse_label_csv("id,energy\n1,2\n", "l.csv", bad), Catch::Contains("has no unit"));
  bad.source_units["energy"] = "kcal/mol";
  CHECK(parse_label_csv("id,energy\n1,2\n", "l.csv", bad).units[0] == "eV");
  // An infinite label stays infinite (the dataset then skips that record) instead of failing the
  // whole table; other text still does.
  const LabelTable inf = parse_label_csv("id,energy\n1,inf\n2,-Infinity\n3,4\n", "l.csv", bad);
  CHECK(std::isinf(inf.require("1")[0]));
  CHECK(inf.require("2")[0] < 0);
  CHECK(std::isinf(inf.require("2")[0]));
  CHECK_THROWS_WITH(parse_label_csv("id,energy\n1,infinite\n", "l.csv", bad), Catch::Contains("not a number"));
  bad.targets = {"missing"};
  CHECK_THROWS_WITH(parse_label_csv("id,energy\n1,2\n", "l.csv", bad), Catch::Contains("no column for target 'missing'"));
  o.targets = {"U0"};
  o.training_units.clear();
  CHECK_THROWS_WITH(parse_label_csv("id,U0 [eV]\n1,2\n1,3\n", "d.csv", o),
                    Catch::Contains("d.csv:3:") && Catch::Contains("duplicate key '1' (first on line 2)"));
  CHECK_THROWS_WITH(parse_label_csv("id,U0 [eV]\n1,abc\n", "n.csv", o), Catch::Contains("n.csv:2:"));
  CHECK_THROWS_WITH(parse_label_csv("id,U0 [Debye]\n1,2\n", "u.csv", o), Catch::Contains("QM9 property 'U0'") && Catch::Contains("dipole"));
  CHECK_THROWS_WITH(parse_label_csv("key,U0 [eV]\n1,2\n", "k.csv", o), Catch::Contains("no key column"));
}
