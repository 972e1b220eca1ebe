// Writers: SDF round trip (atoms, coordinates, tags plus predictions), CSV (units in the header),
// extended XYZ round trip, temporary file + rename.
#include "chem_test_util.hpp"

#include "chem/writer.hpp"
#include "core/error.hpp"

#include "core/log.hpp"

#include <catch2/catch.hpp>

#include <algorithm>

#include <filesystem>
#include <fstream>

using namespace flt::chem;
using namespace flt::chem::test;

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
}  // namespace

TEST_CASE("SDF round trip: same atoms, coordinates and tags plus the added ones",
          "[chem][writer]") {
  TempDir dir;
  const std::string out = dir.file("annotated.sdf");
  const auto input = read_all({parser_case("rdkit-data-deb/cdk2.sdf"),
                               parser_case("rdkit-data-deb/bzr.sdf")});
  REQUIRE(input.summary.ok());
  {
    auto writer = MoleculeWriter::open(out);
    for (const auto& p : input.records) {
      writer->write(p, {{"U0_pred", -1.5 * static_cast<double>(p.record), "eV"},
                        {"gap_pred", 0.25, "Hartree"}});
    }
    CHECK_FALSE(std::filesystem::exists(out));  // only the temporary file so far
    writer->close();
  }
  CHECK(std::filesystem::exists(out));
  const auto again = read_all({out});
  CHECK(again.summary.ok());
  REQUIRE(again.records.size() == input.records.size());
  for (std::size_t k = 0; k < input.records.size(); ++k) {
    const PointSet& a = input.records[k];
    const PointSet& b = again.records[k];
    CHECK(b.atomic_numbers == a.atomic_numbers);
    CHECK(b.formal_charges == a.formal_charges);
    CHECK(b.hydrogens_added == 0);  // written with all hydrogens explicit
    CHECK((b.positions - a.positions).cwiseAbs().maxCoeff() < 1e-4);  // 4 decimals in V2000
    CHECK(b.title == a.title);
    REQUIRE(b.properties.size() == a.properties.size() + 2);
    for (std::size_t i = 0; i < a.properties.size(); ++i) {
      CHECK(b.properties[i].key == a.properties[i].key);
      CHECK(b.properties[i].value == a.properties[i].value);
    }
    CHECK(*b.number("U0_pred") == -1.5 * static_cast<double>(a.record));
    CHECK(*b.number("gap_pred") == 0.25);
  }
  CHECK(slurp(out).find(">  <U0_pred>  [eV]") != std::string::npos);
}

TEST_CASE("SDF writer: XYZ input is written as atoms without bonds", "[chem][writer]") {
  TempDir dir;
  const std::string out = dir.file("qm9.sdf");
  const auto input = read_all({test_data("qm9_original")});
  auto writer = MoleculeWriter::open(out);
  for (const auto& p : input.records) writer->write(p);
  writer->close();
  const auto again = read_all({out});
  CHECK(again.summary.ok());
  REQUIRE(again.records.size() == 3);
  CHECK(again.records[0].atomic_numbers == input.records[0].atomic_numbers);
  CHECK(again.records[0].hydrogens_added == 0);
  CHECK(again.records[0].title == "gdb 1");
  CHECK(again.records[0].property("U0")->value == "-40.47893");
}

TEST_CASE("CSV writer: id, source, record, title, labels with units, predictions",
          "[chem][writer]") {
  TempDir dir;
  const std::string out = dir.file("pred.csv");
  const auto input = read_all({test_data("qm9_original")});
  WriteOptions options;
  options.label_columns = {"U0", "gap", "smiles_gdb17"};
  auto writer = MoleculeWriter::open(out, options);
  for (const auto& p : input.records) writer->write(p, {{"U0", -40.0, "eV"}});
  CHECK_THROWS_AS(writer->write(input.records[0], {{"U0", -40.0, "Hartree"}}),
                  flt::InvalidArgument);
  writer->close();
  const std::string text = slurp(out);
  std::istringstream lines(text);
  std::string header, row1;
  std::getline(lines, header);
  std::getline(lines, row1);
  CHECK(header == "id,source,record,title,U0 [Hartree],gap [Hartree],smiles_gdb17,U0 [eV]");
  CHECK(row1 == "1," + test_data("qm9_original") + "/dsgdb9nsd_000001.xyz,1,gdb 1,-40.47893,0.5048,C,-40");
  std::size_t rows = 0;
  for (std::string l; std::getline(lines, l);) ++rows;
  CHECK(rows == 2);
}

TEST_CASE("CSV writer: column names stay unique when input tags repeat them", "[chem][writer]") {
  TempDir dir;
  const std::string out = dir.file("dup.csv");
  PointSet p;
  p.atomic_numbers = {1};
  p.positions = flt::Mat<double>::Zero(1, 3);
  p.title = "h";
  p.source = "in.sdf";
  p.record = 1;
  p.set_property("id", "ZINC1");
  p.set_property("title", "other");
  p.set_property("input_id", "x");
  p.set_property("score", "1.5");
  auto writer = MoleculeWriter::open(out);
  writer->write(p, {{"score", 2.0, ""}, {"flt_U0", -1.0, "eV"}});
  writer->close();
  std::istringstream lines(slurp(out));
  std::string header, row;
  std::getline(lines, header);
  std::getline(lines, row);
  CHECK(header == "id,source,record,title,input_id,input_title,input_input_id,score,score_2,flt_U0 [eV]");
  CHECK(row == "1,in.sdf,1,h,ZINC1,other,x,1.5,2,-1");
}

TEST_CASE("extended XYZ writer: round trip with labels, Mulliken column and predictions",
          "[chem][writer]") {
  TempDir dir;
  const std::string out = dir.file("out.extxyz");
  const auto input = read_all({test_data("qm9_original")});
  auto writer = MoleculeWriter::open(out);
  for (const auto& p : input.records) writer->write(p, {{"energy", 0.1, "eV"}});
  writer->close();
  const auto again = read_all({out});
  CHECK(again.summary.ok());
  REQUIRE(again.records.size() == 3);
  for (std::size_t k = 0; k < 3; ++k) {
    const PointSet& a = input.records[k];
    const PointSet& b = again.records[k];
    CHECK(b.atomic_numbers == a.atomic_numbers);
    CHECK(b.positions == a.positions);  // shortest round-trip text: exact
    CHECK(b.title == a.title);
    CHECK(*b.number("U0") == *a.number("U0"));
    CHECK(b.property("frequencies")->value == a.property("frequencies")->value);
    CHECK(b.column("mulliken_charge")->values == a.column("mulliken_charge")->values);
    CHECK(*b.number("energy") == 0.1);
    CHECK(b.property("energy_unit")->value == "eV");
    CHECK(b.property("U0")->unit == a.property("U0")->unit);  // Hartree, as U0_unit=Hartree
    CHECK(b.property("mu")->unit == "Debye");
  }
}

TEST_CASE("writers keep units and formal charges through SDF and extended XYZ and back",
          "[chem][writer]") {
  TempDir dir;
  const ReadAll input = read_text("smiles,energy [kcal/mol],note\nC[NH3+],-100.0,a\nCC(=O)[O-],-0.5,b\n",
                                  Format::csv);
  REQUIRE(input.records.size() == 2);
  for (const char* name : {"out.extxyz", "out.sdf"}) {
    INFO(name);
    const std::string out = dir.file(name);
    auto writer = MoleculeWriter::open(out);
    for (const auto& p : input.records) writer->write(p);
    writer->close();
    const ReadAll again = read_all({out});
    REQUIRE(again.records.size() == 2);
    for (std::size_t k = 0; k < 2; ++k) {
      const PointSet& a = input.records[k];
      const PointSet& b = again.records[k];
      REQUIRE(b.property("energy") != nullptr);
      CHECK(b.property("energy")->unit == "kcal/mol");
      CHECK(*b.number("energy") == *a.number("energy"));
      CHECK(b.property("note")->unit.empty());
      CHECK(b.formal_charges == a.formal_charges);
    }
    CHECK(std::count(again.records[0].formal_charges.begin(), again.records[0].formal_charges.end(), 1) == 1);
  }
}

TEST_CASE("writers: nothing appears without close(), bad formats are refused", "[chem][writer]") {
  TempDir dir;
  const std::string out = dir.file("never.sdf");
  {
    auto writer = MoleculeWriter::open(out);
    const auto input = read_all({test_data("qm9_original")});
    writer->write(input.records[0]);
  }
  CHECK_FALSE(std::filesystem::exists(out));
  CHECK(std::filesystem::is_empty(std::filesystem::path(out).parent_path()));
  CHECK_THROWS_AS(MoleculeWriter::open(dir.file("x.unknown")), flt::InvalidArgument);
  CHECK_THROWS_AS(MoleculeWriter::open(dir.file("x.sdf.gz")), flt::InvalidArgument);
  CHECK_THROWS_AS(MoleculeWriter::open("/nonexistent-dir/x.sdf"), flt::IoError);
  WriteOptions qm9;
  qm9.format = Format::qm9;
  CHECK_THROWS_AS(MoleculeWriter::open(dir.file("x.xyz"), qm9), flt::InvalidArgument);
}

TEST_CASE("Writers keep rejected and unpredicted records, marked with the reason",
          "[chem][writer]") {
  TempDir dir;
  // An SD file whose record 2 RDKit cannot parse (a bad counts line) between two good ones.
  const std::string good =
      "water\n  test          3D\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\n"
      "    0.0000    0.0000    0.1173 O   0  0  0  0  0  0  0  0  0  0  0  0\n"
      "    0.0000    0.7572   -0.4692 H   0  0  0  0  0  0  0  0  0  0  0  0\n"
      "    0.0000   -0.7572   -0.4692 H   0  0  0  0  0  0  0  0  0  0  0  0\n"
      "  1  2  1  0\n  1  3  1  0\nM  END\n>  <label>\n1.5\n\n$$$$\n";
  const std::string bad = "broken\n  test\n\n  x  0  0  0  0  0  0  0  0  0999 V2000\n"
                          "M  END\n>  <label>\n2.5\n$$$$\n";  // the value lacks its blank line
  const std::string input = dir.file("in.sdf");
  std::ofstream(input) << good << bad << good;

  ReadOptions options;
  auto reader = MoleculeReader::open(input, options);
  std::vector<std::pair<std::optional<PointSet>, std::string>> records;
  std::optional<RejectedRecord> rejected;
  for (;;) {
    try {
      auto p = reader->next();
      if (!p) break;
      records.emplace_back(std::move(*p), "");
    } catch (const flt::InputError& e) {
      rejected = reader->last_rejected();
      records.emplace_back(std::nullopt, e.reason());
    }
  }
  REQUIRE(records.size() == 3);
  REQUIRE(rejected);
  CHECK(rejected->partial.record == 2);
  CHECK(rejected->text == bad);

  const std::string sdf = dir.file("out.sdf"), csv = dir.file("out.csv"), xyz = dir.file("out.xyz");
  WriteOptions csv_options;
  csv_options.error_column = true;
  csv_options.prediction_columns = {{"flt_U0 [eV]", 0.0, ""}};
  auto sdf_writer = MoleculeWriter::open(sdf);
  auto csv_writer = MoleculeWriter::open(csv, csv_options);
  auto xyz_writer = MoleculeWriter::open(xyz);
  // Record 1 "not predicted" (as a model would refuse it), 2 rejected by the reader, 3 predicted.
  for (auto* writer : {sdf_writer.get(), csv_writer.get(), xyz_writer.get()}) {
    writer->write_error(*records[0].first, "unsupported element O");
    writer->write_error(rejected->partial, records[1].second, &*rejected);
    writer->write(*records[2].first, {{"flt_U0 [eV]", -2.0, ""}});
    writer->close();
    CHECK(writer->written() == 3);
  }

  // SDF: three records; the rejected one is its input text with the tag added.
  const std::string sdf_text = slurp(sdf);
  CHECK(sdf_text.find("broken\n  test\n\n  x  0  0") != std::string::npos);
  CHECK(sdf_text.find(">  <label>\n2.5\n\n>  <flt_error>\n" + records[1].second + "\n\n$$$$\n") !=
        std::string::npos);
  const ReadAll back = read_all({sdf});
  REQUIRE(back.records.size() == 2);  // record 2 is still unreadable, and still in place
  REQUIRE(back.summary.skipped.size() == 1);
  CHECK(back.summary.skipped[0].record == 2);
  REQUIRE(back.records[0].property(kErrorTag) != nullptr);
  CHECK(back.records[0].property(kErrorTag)->value == "unsupported element O");
  CHECK(back.records[0].number("label") == 1.5);
  CHECK(back.records[1].property(kErrorTag) == nullptr);
  CHECK(back.records[1].record == 3);

  // CSV: one row per record, empty predictions and the reason where not predicted.
  std::istringstream lines(slurp(csv));
  std::vector<std::string> rows;
  for (std::string l; std::getline(lines, l);) rows.push_back(l);
  REQUIRE(rows.size() == 4);
  CHECK(rows[0] == "id,source,record,title,label,flt_U0 [eV],error");
  CHECK(rows[1] == "1," + input + ",1,water,1.5,,unsupported element O");
  CHECK(rows[2].rfind("2," + input + ",2,,,,", 0) == 0);
  CHECK(rows[2].find(records[1].second.substr(0, 20)) != std::string::npos);
  CHECK(rows[3] == "3," + input + ",3,water,1.5,-2,");

  // Extended XYZ: every record, flt_error in the comment line.
  const std::string xyz_text = slurp(xyz);
  CHECK(xyz_text.find("flt_error=\"unsupported element O\"") != std::string::npos);
  CHECK(xyz_text.rfind("0\nProperties=species:S:1:pos:R:3 flt_error=", std::string::npos) !=
        std::string::npos);

  // A CSV writer without the error column refuses records without predictions.
  auto plain = MoleculeWriter::open(dir.file("plain.csv"));
  CHECK_THROWS_AS(plain->write_error(*records[0].first, "x"), flt::InvalidArgument);
}

TEST_CASE("SDF writer: files with records RDKit skips or cannot read come back record for record",
          "[chem][writer]") {
  ReadOptions options;
  options.missing_3d = Missing3D::accept;
  const auto delimiters = [](const std::string& text) {
    std::size_t n = 0;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) n += line.rfind("$$$$", 0) == 0 ? 1 : 0;
    return n;
  };
  for (const char* name : {"rdkit-src/FileParsers/strictLax2.sdf",
                           "rdkit-src/FileParsers/esters.prop_name_trunc.sdf",
                           "rdkit-src/FileParsers/Issue3525673.sdf",
                           "rdkit-src/FileParsers/sdErrors2.sdf"}) {
    INFO(name);
    TempDir dir;
    const std::string out = dir.file("out.sdf");
    auto writer = MoleculeWriter::open(out);
    auto reader = MoleculeReader::open(parser_case(name), options);
    std::size_t errors = 0;
    for (;;) {
      try {
        auto p = reader->next();
        if (!p) break;
        writer->write(*p);
      } catch (const flt::InputError& e) {
        REQUIRE(e.record() > 0);
        REQUIRE(!reader->last_rejected().text.empty());
        writer->write_error(reader->last_rejected().partial, e.reason(), &reader->last_rejected());
        ++errors;
      }
    }
    writer->close();
    CHECK(errors > 0);
    const std::string text = slurp(out);
    CHECK(delimiters(text) == delimiters(slurp(parser_case(name))));
    CHECK(writer->written() == delimiters(text));
  }
}

TEST_CASE("CSV writer: a rejected first record does not hide the label columns", "[chem][writer]") {
  TempDir dir;
  WriteOptions options;
  options.error_column = true;
  options.prediction_columns = {{"flt_y", 0.0, "eV"}};
  PointSet rejected;  // what a reader keeps of a record it could not parse: no labels
  rejected.source = "in.sdf";
  rejected.record = 1;
  PointSet good;
  good.atomic_numbers = {1};
  good.positions = flt::Mat<double>::Zero(1, 3);
  good.source = "in.sdf";
  good.record = 2;
  good.title = "h";
  good.set_property("label", "4.5");
  const std::string out = dir.file("first_rejected.csv"), only = dir.file("only_rejected.csv");
  auto writer = MoleculeWriter::open(out, options);
  writer->write_error(rejected, "unreadable");
  writer->write(good, {{"flt_y", 1.0, "eV"}});
  writer->close();
  CHECK(writer->written() == 2);
  CHECK(slurp(out) ==
        "id,source,record,title,label,flt_y [eV],error\n"
        "1,in.sdf,1,,,,unreadable\n"
        "2,in.sdf,2,h,4.5,1,\n");
  auto lonely = MoleculeWriter::open(only, options);
  lonely->write_error(rejected, "unreadable");
  lonely->close();
  CHECK(slurp(only) == "id,source,record,title,flt_y [eV],error\n1,in.sdf,1,,,unreadable\n");
}

TEST_CASE("CSV writer: a later record's label without a column is warned about once",
          "[chem][writer]") {
  TempDir dir;
  std::vector<std::string> log;
  auto previous = flt::set_log_sink([&](flt::LogLevel level, std::string_view message) {
    if (level == flt::LogLevel::warning) log.emplace_back(message);
  });
  auto writer = MoleculeWriter::open(dir.file("out.csv"));
  PointSet first, later;
  first.set_property("ID", "a");
  later.set_property("ID", "b");
  later.set_property("pIC50", "5.1");
  writer->write(first);
  writer->write(later);
  writer->write(later);
  writer->close();
  flt::set_log_sink(previous);
  REQUIRE(log.size() == 1);
  CHECK(log[0].find("has the label 'pIC50', which is not a column") != std::string::npos);
}
