// Plain and multi-frame XYZ, extended XYZ (ASE), malformed records, inputs (.gz, stdin,
// directories) and the error policy on XYZ.
#include "chem_test_util.hpp"

#include "core/error.hpp"
#include "core/log.hpp"
#include "io/compressed.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>

using namespace flt::chem;
using namespace flt::chem::test;

TEST_CASE("XYZ: plain single records from the parser cases", "[chem][xyz]") {
  const auto r = read_all({parser_case("rdkit-src/FileParsers/acetate.xyz")});
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 1);
  CHECK(r.records[0].size() == 7);
  // Its comment line "charge=-1=" is a key=value pair, so it becomes a label.
  REQUIRE(r.records[0].properties.size() == 1);
  CHECK(r.records[0].property("charge")->value == "-1=");
  CHECK(r.records[0].atomic_numbers == std::vector<int>{6, 6, 1, 1, 1, 8, 8});
  const auto big = read_all({parser_case("rdkit-src/DetermineBonds_charged_fragments/test37.xyz")});
  REQUIRE(big.records.size() == 1);
  CHECK(big.records[0].size() == 61);
}

TEST_CASE("XYZ: multi-frame file, titles, extra columns ignored, CRLF", "[chem][xyz]") {
  const std::string text =
      "3\r\nwater frame 1\r\nO 0.0 0.0 0.0\r\nH 0.96 0.0 0.0 extra\r\nH -0.24 0.93 0.0\r\n"
      "\r\n"
      "3\nwater frame 2\nO 0.0 0.0 0.1\nH 0.97 0.0 0.1\nh -0.24 0.93 0.1\n";
  const auto r = read_text(text, Format::xyz);
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 2);
  CHECK(r.records[0].title == "water frame 1");
  CHECK(r.records[1].title == "water frame 2");
  CHECK(r.records[1].record == 2);
  CHECK(r.records[1].atomic_numbers == std::vector<int>{8, 1, 1});
  CHECK(r.records[1].positions(2, 2) == 0.1);
  CHECK(r.records[0].positions(1, 0) == 0.96);
}

TEST_CASE("extended XYZ: Properties, key=value labels, per-atom forces", "[chem][xyz]") {
  const std::string text =
      "2\n"
      "Lattice=\"10 0 0 0 10 0 0 0 10\" Properties=species:S:1:pos:R:3:forces:R:3:tag:I:1 "
      "energy=-1.25 config_type=dimer pbc=\"F F F\" name=\"my dimer\"\n"
      "H 0 0 0 0.1 0.2 0.3 1\n"
      "H 0 0 0.74 -0.1 -0.2 -0.3 2\n"
      "1\n"
      "energy=-0.5\n"
      "He 1 2 3\n";
  const auto r = read_text(text, Format::xyz);
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 2);
  const PointSet& p = r.records[0];
  CHECK(p.atomic_numbers == std::vector<int>{1, 1});
  CHECK(p.positions(1, 2) == 0.74);
  CHECK(*p.number("energy") == -1.25);
  CHECK(p.property("config_type")->value == "dimer");
  CHECK(p.property("pbc")->value == "F F F");
  CHECK(p.property("Lattice")->value == "10 0 0 0 10 0 0 0 10");
  CHECK(p.property("Properties") == nullptr);
  CHECK(p.title == "my dimer");
  const AtomColumn* forces = p.column("forces");
  REQUIRE(forces != nullptr);
  CHECK(forces->width == 3);
  CHECK(forces->values == std::vector<double>{0.1, 0.2, 0.3, -0.1, -0.2, -0.3});
  const AtomColumn* tag = p.column("tag");
  REQUIRE(tag != nullptr);
  CHECK(tag->type == 'I');
  CHECK(tag->values == std::vector<double>{1, 2});
  // Without Properties=, key=value comment lines are extended XYZ with species and pos only.
  CHECK(r.records[1].atomic_numbers == std::vector<int>{2});
  CHECK(*r.records[1].number("energy") == -0.5);
  // Units: a file declaring Properties= is ASE extended XYZ, whose energy is in eV and forces in
  // eV/A; without Properties= nothing says so, and no unit is assumed.
  CHECK(p.property("energy")->unit == "eV");
  CHECK(forces->unit == "eV/A");
  CHECK(tag->unit.empty());
  CHECK(r.records[1].property("energy")->unit.empty());
}

TEST_CASE("extended XYZ: a column's unit from its <name>_unit key (what flt predict writes)", "[chem][xyz]") {
  const std::string text =
      "2\n"
      "Properties=species:S:1:pos:R:3:flt_forces:R:3:forces:R:3:q:R:1 flt_forces_unit=eV/A "
      "forces_unit=Hartree/Bohr flt_U0=-1.5 flt_U0_unit=eV\n"
      "H 0 0 0 0.1 0.2 0.3 0.01 0.02 0.03 0.5\nH 0 0 0.74 -0.1 -0.2 -0.3 -0.01 -0.02 -0.03 -0.5\n";
  const auto r = read_text(text, Format::xyz);
  REQUIRE(r.records.size() == 1);
  const PointSet& p = r.records[0];
  CHECK(p.column("flt_forces")->unit == "eV/A");
  CHECK(p.column("forces")->unit == "Hartree/Bohr");  // the declared unit over ASE's default
  CHECK(p.column("q")->unit.empty());
  CHECK(p.property("flt_U0")->unit == "eV");
}

TEST_CASE("extended XYZ: labels anywhere on the line (QM7), units from key names and <key>_unit",
          "[chem][xyz]") {
  // QM7 as the qml tutorial distributes it: the file name, then key=value pairs.
  const std::string text =
      "3\n"
      "qm7/0001.xyz E_PBE0_kcal_per_mol=-417.031 E_DFTB3_kcal_per_mol=-431.79 charge=0\n"
      "O 0.0 0.0 0.1173\nH 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n"
      "1\n"
      "U0=-0.5 U0_unit=Hartree gap_eV=4.5 converged dipole_Debye=1.5 note=x\n"
      "He 1 2 3\n"
      "1\n"
      "benzene, optimised at B3LYP\n"
      "He 0 0 0\n";
  const auto r = read_text(text, Format::xyz);
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 3);
  const PointSet& q = r.records[0];
  CHECK(q.title == "qm7/0001.xyz");
  CHECK(q.property("qm7/0001.xyz") == nullptr);  // the title, not a flag
  CHECK(*q.number("E_PBE0_kcal_per_mol") == -417.031);
  CHECK(q.property("E_PBE0_kcal_per_mol")->unit == "kcal/mol");
  CHECK(q.property("E_DFTB3_kcal_per_mol")->unit == "kcal/mol");
  CHECK(q.property("charge")->unit.empty());
  const PointSet& u = r.records[1];
  CHECK(u.property("U0")->unit == "Hartree");   // its own U0_unit
  CHECK(u.property("gap_eV")->unit == "eV");
  CHECK(u.property("dipole_Debye")->unit == "Debye");
  CHECK(u.property("converged")->value == "T");  // a bare word after the pairs: a flag, as in ASE
  CHECK(u.property("note")->unit.empty());
  CHECK(u.title.empty());
  // No key=value pair: a plain XYZ title, however it reads.
  CHECK(r.records[2].title == "benzene, optimised at B3LYP");
  CHECK(r.records[2].properties.empty());
}

TEST_CASE("XYZ: bad records are reported with file, record and reason, reading goes on",
          "[chem][xyz][errors]") {
  const std::string text =
      "2\nok 1\nC 0 0 0\nO 0 0 1.2\n"
      "2\nbad element\nC 0 0 0\nXx 0 0 1.2\n"
      "2\nbad number\nC 0 0 0\nO 0 0 1.2abc\n"
      "2\nnan\nC 0 0 0\nO nan 0 1.2\n"
      "2\ninf\nC 0 0 0\nO 0 inf 1.2\n"
      "2\nclose atoms\nC 0 0 0\nO 0 0 0.05\n"
      "2\ntoo few columns\nC 0 0\nO 0 0 1\n"
      "garbage line\nmore garbage\n"
      "2\nok 2\nC 0 0 0\nO 0 0 1.2\n"
      "3\ntruncated\nC 0 0 0\n";
  const auto r = read_text(text, Format::xyz);
  REQUIRE(r.records.size() == 2);
  CHECK(r.records[0].title == "ok 1");
  CHECK(r.records[1].title == "ok 2");
  CHECK(r.records[1].record == 9);
  REQUIRE(r.summary.skipped.size() == 8);
  const auto& s = r.summary.skipped;
  CHECK(s[0].file == "text");
  CHECK(s[0].record == 2);
  CHECK(s[0].reason.find("unknown element symbol 'Xx'") != std::string::npos);
  CHECK(s[0].reason.find("line 8") != std::string::npos);
  CHECK(s[1].record == 3);
  CHECK(s[1].reason.find("bad coordinate '1.2abc'") != std::string::npos);
  CHECK(s[2].record == 4);
  CHECK(s[2].reason.find("non-finite") != std::string::npos);
  CHECK(s[3].record == 5);
  CHECK(s[3].reason.find("non-finite") != std::string::npos);
  CHECK(s[4].record == 6);
  CHECK(s[4].reason.find("closer than 0.1") != std::string::npos);
  CHECK(s[5].record == 7);
  CHECK(s[5].reason.find("needs a symbol and 3 coordinates") != std::string::npos);
  CHECK(s[6].record == 8);
  CHECK(s[6].reason.find("expected the atom count, found 'garbage line'") != std::string::npos);
  CHECK(s[7].record == 10);
  CHECK(s[7].reason.find("ends after 1 of 3 atom lines") != std::string::npos);
}

TEST_CASE("extended XYZ: a formal_charges column sets the atoms' formal charges", "[chem][xyz]") {
  const std::string text =
      "5\nProperties=species:S:1:pos:R:3:formal_charges:I:1 energy=-1\n"
      "N 0 0 0 1\nH 1.03 0 0 0\nH -0.34 0.97 0 0\nH -0.34 -0.49 0.84 0\nH -0.34 -0.49 -0.84 0\n"
      "1\nProperties=species:S:1:pos:R:3:formal_charges:R:1\nH 0 0 0 1.0\n"
      "1\nProperties=species:S:1:pos:R:3:formal_charges:I:1\nH 0 0 0 0.5\n"
      "1\nProperties=species:S:1:pos:R:3:formal_charges:I:1\nO 0 0 0 -40\n"
      "1\nenergy=2\nHe 0 0 0\n";
  const auto r = read_text(text, Format::xyz);
  REQUIRE(r.records.size() == 2);
  CHECK(r.records[0].formal_charges == std::vector<std::int32_t>{1, 0, 0, 0, 0});
  // The column stays among the atom columns (writers pass it through).
  REQUIRE(r.records[0].column("formal_charges") != nullptr);
  CHECK(r.records[1].formal_charges == std::vector<std::int32_t>{0});
  REQUIRE(r.summary.skipped.size() == 3);
  CHECK(r.summary.skipped[0].reason.find("formal_charges:I:1") != std::string::npos);
  CHECK(r.summary.skipped[1].reason.find("column 'formal_charges' has a bad value '0.5'") != std::string::npos);
  CHECK_THAT(r.summary.skipped[2].reason, Catch::EndsWith("atom 1: formal charge -40 outside +-16"));
}

TEST_CASE("extended XYZ: periodic records are refused unless read as isolated structures",
          "[chem][xyz]") {
  // As ASE writes them: a water molecule in a periodic box (ase.io.write of Atoms with pbc=True),
  // then pbc given per direction, a Lattice without pbc (periodic in ASE's reading), an open
  // record, and pbc spellings ASE also reads.
  const std::string text =
      "3\n"
      "Lattice=\"6.0 0.0 0.0 0.0 7.526478 0.0 0.0 0.0 6.596309\" Properties=species:S:1:pos:R:3 pbc=\"T T T\"\n"
      "O        3.00000000       3.76323900       3.59630900\n"
      "H        3.00000000       4.52647800       3.00000000\n"
      "H        3.00000000       3.00000000       3.00000000\n"
      "1\n"
      "pbc=\"F T F\" energy=-1\n"
      "He 0 0 0\n"
      "1\n"
      "Lattice=\"5 0 0 0 5 0 0 0 5\" energy=-2\n"
      "He 0 0 0\n"
      "1\n"
      "Lattice=\"5 0 0 0 5 0 0 0 5\" pbc=\"F F F\" energy=-3\n"
      "He 0 0 0\n"
      "1\n"
      "pbc=\"False false 0\" energy=-4\n"
      "He 0 0 0\n"
      "1\n"
      "pbc=T energy=-5\n"
      "He 0 0 0\n"
      "1\n"
      "pbc=\"T F\" energy=-6\n"
      "He 0 0 0\n"
      "1\n"
      "pbc=\"True 1 F\" energy=-7\n"
      "He 0 0 0\n";
  const auto r = read_text(text, Format::xyz);
  REQUIRE(r.records.size() == 2);
  CHECK(*r.records[0].number("energy") == -3);
  CHECK(*r.records[1].number("energy") == -4);
  REQUIRE(r.summary.skipped.size() == 6);
  CHECK(r.summary.skipped[0].record == 1);
  CHECK(r.summary.skipped[0].reason ==
        "line 2: periodic boundary conditions (pbc='T T T'): flt models isolated structures, without "
        "periodic images; --periodic isolated (API: periodic = isolated) reads the record as one, ignoring the cell");
  CHECK(r.summary.skipped[1].record == 2);
  CHECK(r.summary.skipped[1].reason.find("pbc='F T F'") != std::string::npos);
  CHECK(r.summary.skipped[2].record == 3);
  CHECK(r.summary.skipped[2].reason.find("a Lattice without pbc") != std::string::npos);
  CHECK(r.summary.skipped[3].record == 6);
  CHECK(r.summary.skipped[4].record == 7);
  CHECK(r.summary.skipped[4].reason == "line 22: pbc='T F' is not one or three of T/F");
  CHECK(r.summary.skipped[5].record == 8);
  CHECK(r.summary.skipped[5].reason.find("periodic boundary conditions (pbc='True 1 F')") == 9);

  ReadOptions isolated;
  isolated.periodic = Periodic::isolated;
  const auto all = read_text(text, Format::xyz, isolated);
  REQUIRE(all.records.size() == 7);
  REQUIRE(all.summary.skipped.size() == 1);  // the unreadable pbc stays bad
  const PointSet& water = all.records[0];
  CHECK(water.atomic_numbers == std::vector<int>{8, 1, 1});
  CHECK(water.positions(1, 1) == 4.526478);
  CHECK(water.property("pbc")->value == "T T T");  // kept for the writers
  CHECK(water.property("Lattice") != nullptr);
  CHECK(periodic_from_name("isolated") == Periodic::isolated);
  CHECK_THROWS_AS(periodic_from_name("wrap"), flt::InvalidArgument);
}

TEST_CASE("extended XYZ: species and Z columns together (QUIP, ASE with numbers)", "[chem][xyz]") {
  const std::string text =
      "3\nProperties=species:S:1:pos:R:3:Z:I:1\n"
      "O 0 0 0.119 8\nH 0 0.763 -0.477 1\nH 0 -0.763 -0.477 1\n"
      "3\nProperties=Z:I:1:pos:R:3:species:S:1\n"
      "8 0 0 0.119 O\n1 0 0.763 -0.477 H\n6 0 -0.763 -0.477 H\n"
      "3\nProperties=Z:I:1:pos:R:3\n"
      "8 0 0 0.119\n1 0 0.763 -0.477\n1 0 -0.763 -0.477\n";
  const auto r = read_text(text, Format::xyz);
  REQUIRE(r.records.size() == 2);
  for (const PointSet& p : r.records) {
    CHECK(p.atomic_numbers == std::vector<int>{8, 1, 1});  // one element per atom, not two
    CHECK(p.positions.rows() == 3);
    CHECK(p.positions(1, 1) == 0.763);
  }
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].record == 2);
  CHECK(r.summary.skipped[0].reason == "line 10: column 'Z' has '6' where species says H (Z=1)");
}

TEST_CASE("XYZ: a UTF-8 byte-order mark before the first line is not part of it", "[chem][xyz]") {
  const auto r = read_text("\xEF\xBB\xBF" "2\r\nhydrogen\r\nH 0 0 0\r\nH 0 0 0.74\r\n", Format::xyz);
  REQUIRE(r.records.size() == 1);
  CHECK(r.records[0].title == "hydrogen");
  CHECK(r.summary.ok());
}

TEST_CASE("XYZ: minimum distance can be switched off", "[chem][xyz]") {
  ReadOptions options;
  options.min_distance = 0.0;
  const auto r = read_text("2\nclose\nC 0 0 0\nO 0 0 0.05\n", Format::xyz, options);
  CHECK(r.summary.ok());
  CHECK(r.records.size() == 1);
}

TEST_CASE("extended XYZ: malformed headers and rows", "[chem][xyz][errors]") {
  const std::string text =
      "1\nProperties=species:S:1:pos:R:3:forces:R:3 e=1\nH 0 0 0 1 2\n"
      "1\nProperties=species:S:1:pos:R:2\nH 0 0\n"
      "1\nProperties=species:S:1:pos:R:3 note=\"unterminated\nH 0 0 0\n"
      "1\nProperties=species:S:1:pos:Q:3\nH 0 0 0\n"
      "1\nProperties=species:S:1:pos:R:3\nH 0 0 0\n";
  const auto r = read_text(text, Format::xyz);
  REQUIRE(r.records.size() == 1);
  CHECK(r.records[0].record == 5);
  REQUIRE(r.summary.skipped.size() == 4);
  CHECK(r.summary.skipped[0].reason.find("expected 7 columns") != std::string::npos);
  CHECK(r.summary.skipped[1].reason.find("lacks species") != std::string::npos);
  CHECK(r.summary.skipped[2].reason.find("unterminated quote") != std::string::npos);
  CHECK(r.summary.skipped[3].reason.find("type 'Q'") != std::string::npos);
}

TEST_CASE("inputs: empty files, zero-atom records, missing files", "[chem][errors]") {
  auto r = read_text("", Format::xyz);
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].record == 0);
  CHECK(r.summary.skipped[0].reason == "no molecule records in the file");
  r = read_text("0\nnothing\n", Format::xyz);
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].reason == "the record has no atoms");
  CHECK_THROWS_AS(MoleculeReader::open("/nonexistent/file.sdf"), flt::IoError);
  CHECK_THROWS_AS(MoleculeReader::open(test_data("README.md")), flt::InvalidArgument);
}

TEST_CASE("inputs: .gz files read like the plain file", "[chem][io]") {
  const auto gz = read_all({test_data("bzr_data.sdf.gz")});
  const auto plain = read_all({parser_case("rdkit-src/MolAlign/bzr_data.sdf")});
  CHECK(gz.summary.ok());
  REQUIRE(gz.records.size() == 10);
  REQUIRE(plain.records.size() == 10);
  for (std::size_t i = 0; i < 10; ++i) {
    CHECK(gz.records[i].atomic_numbers == plain.records[i].atomic_numbers);
    CHECK(gz.records[i].positions == plain.records[i].positions);
    CHECK(gz.records[i].source == test_data("bzr_data.sdf.gz"));
  }
}

TEST_CASE("inputs: '-' reads standard input in the given format", "[chem][io]") {
  std::istringstream fake("1\nfrom stdin\nNe 0 0 0\n");
  auto* saved = std::cin.rdbuf(fake.rdbuf());
  ReadOptions options;
  std::vector<PointSet> got;
  try {
    CHECK_THROWS_AS(read_molecules({"-"}, options, ErrorPolicy::fail, [](PointSet&&) {}),
                    flt::InvalidArgument);
    options.format = Format::xyz;
    read_molecules({"-"}, options, ErrorPolicy::fail,
                   [&](PointSet&& p) { got.push_back(std::move(p)); });
  } catch (...) {
    std::cin.rdbuf(saved);
    throw;
  }
  std::cin.rdbuf(saved);
  REQUIRE(got.size() == 1);
  CHECK(got[0].source == "-");
  CHECK(got[0].title == "from stdin");
  CHECK(got[0].atomic_numbers == std::vector<int>{10});
}

TEST_CASE("inputs: gzip-compressed standard input is decompressed, a cut one reported", "[chem][io]") {
  std::string frames;
  for (int k = 0; k < 2000; ++k) frames += "2\nframe " + std::to_string(k) + "\nH 0 0 0\nH 0 0 0.74\n";
  const std::string gz = flt::io::gzip_bytes(frames);
  const auto read_stdin = [](const std::string& bytes) {
    std::istringstream fake(bytes);
    auto* saved = std::cin.rdbuf(fake.rdbuf());
    ReadOptions options;
    options.format = Format::xyz;
    std::vector<PointSet> got;
    ReadSummary summary;
    try {
      summary = read_molecules({"-"}, options, ErrorPolicy::skip, [&](PointSet&& p) { got.push_back(std::move(p)); });
    } catch (...) {
      std::cin.rdbuf(saved);
      throw;
    }
    std::cin.rdbuf(saved);
    return std::pair{got, summary};
  };
  const auto [whole, whole_summary] = read_stdin(gz);
  CHECK(whole_summary.ok());
  REQUIRE(whole.size() == 2000);
  CHECK(whole[1999].title == "frame 1999");
  CHECK(whole[1999].positions(1, 2) == 0.74);
  // Cut in the middle: the frames before the cut arrive, then the stream's error.
  const auto [cut, cut_summary] = read_stdin(gz.substr(0, gz.size() / 2));
  CHECK(cut.size() > 100);
  CHECK(cut.size() < 2000);
  CHECK_FALSE(cut_summary.ok());
  CHECK_THAT(cut_summary.describe(), Catch::Contains("truncated gzip stream"));
  CHECK_THAT(cut_summary.describe(), Catch::StartsWith("read " + std::to_string(cut.size()) + " records, skipped 1: -:"));
  // Bad records count among the records read from: "read 1 of 2 records".
  const auto [mixed, mixed_summary] = read_stdin("1\nok\nH 0 0 0\n1\nbad\nXx 0 0 0\n");
  CHECK(mixed.size() == 1);
  CHECK_THAT(mixed_summary.describe(), Catch::StartsWith("read 1 of 2 records, skipped 1: - record 2: "));
}

TEST_CASE("inputs: a directory file that cannot be opened is reported and the next one read", "[chem][io]") {
  TempDir dir;
  for (const char* name : {"a", "b", "c"})
    std::ofstream(dir / (std::string(name) + ".xyz")) << "1\n" << name << "\nNe 0 0 0\n";
  std::filesystem::create_symlink(dir / "gone.xyz", dir / "d.xyz");
  std::vector<std::string> warnings;
  const flt::LogSink previous = flt::set_log_sink([&](flt::LogLevel level, std::string_view text) {
    if (level == flt::LogLevel::warning) warnings.emplace_back(text);
  });
  auto reader = MoleculeReader::open(dir.path().string());
  auto first = reader->next();
  flt::set_log_sink(previous);
  REQUIRE(first);
  CHECK(first->title == "a");
  // The link to nothing is named, not skipped in silence.
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("d.xyz") && Catch::Contains("symbolic link to a missing file"));
  // b.xyz disappears after the directory was listed: its error, then c.xyz.
  std::filesystem::remove(dir / "b.xyz");
  CHECK_THROWS_AS(reader->next(), flt::IoError);
  auto third = reader->next();
  REQUIRE(third);
  CHECK(third->title == "c");
  CHECK_FALSE(reader->next());
}

TEST_CASE("inputs: several inputs in order, a directory's files sorted by name", "[chem][io]") {
  const auto r = read_all({parser_case("rdkit-src/FileParsers/ethane.xyz"), test_data("qm9_original"),
                           parser_case("rdkit-src/FileParsers/acetate.xyz")});
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 5);
  CHECK(r.records[0].size() == 8);
  CHECK(r.records[1].title == "gdb 1");
  CHECK(r.records[3].title == "gdb 3");
  CHECK(r.records[4].size() == 7);
}
