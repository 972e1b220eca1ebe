// SMILES CSV input (Chemprop's layout): the SMILES column by name or option, other columns as
// properties (with "[unit]" headers), RFC 4180 quoting, conformers from ETKDGv3, unparsable
// SMILES reported with file, record and line and kept as rejected records with their columns.
#include "chem_test_util.hpp"

#include <GraphMol/ROMol.h>

#include <catch2/catch.hpp>

#include <fstream>

using namespace flt::chem;
using namespace flt::chem::test;

TEST_CASE("SMILES CSV: rows become molecules with generated conformers and their columns",
          "[chem][smiles]") {
  const std::string text =
      "SMILES,solubility [log(mol/L)],name\n"
      "CCO,-0.77,ethanol\n"
      "\n"
      "c1ccccc1,-1.64,\"benzene,\nthe ring\"\n"
      "OC(=O)C,0.5,\"acetic \"\"acid\"\"\"\n";
  const ReadAll r = read_text(text, Format::csv);
  CHECK(r.summary.ok());
  REQUIRE(r.records.size() == 3);
  const PointSet& ethanol = r.records[0];
  CHECK(ethanol.title == "CCO");
  CHECK(ethanol.record == 1);
  CHECK(ethanol.size() == 9);  // C2H6O with hydrogens as atoms
  CHECK(ethanol.hydrogens_added == 6);
  CHECK(ethanol.conformer_generated);
  CHECK(ethanol.positions.col(2).cwiseAbs().maxCoeff() > 0.1);  // 3-D
  REQUIRE(ethanol.molecule);
  CHECK(ethanol.molecule->getNumBonds() == 8);
  REQUIRE(ethanol.property("solubility") != nullptr);
  CHECK(ethanol.property("solubility")->unit == "log(mol/L)");
  CHECK(ethanol.number("solubility") == -0.77);
  CHECK(ethanol.property("name")->value == "ethanol");
  CHECK(ethanol.property("SMILES") == nullptr);  // the title holds it
  CHECK(r.records[1].property("name")->value == "benzene,\nthe ring");
  CHECK(r.records[1].size() == 12);
  CHECK(r.records[2].property("name")->value == "acetic \"acid\"");

  // The same seed gives the same conformer; another seed another one.
  const ReadAll again = read_text(text, Format::csv);
  CHECK(again.records[1].positions == r.records[1].positions);
  ReadOptions other;
  other.seed = 7;
  const ReadAll seeded = read_text(text, Format::csv, other);
  CHECK(seeded.records[1].positions != r.records[1].positions);
}

TEST_CASE("SMILES CSV: bad rows are reported with the line and kept as rejected records",
          "[chem][smiles]") {
  const std::string text =
      "smiles,y\n"
      "CCO,1\n"
      "C1CC,2\n"                 // unclosed ring
      "CC(C)(C)(C)C,3\n"         // five-valent carbon
      "\"C(C\",4\n"               // quoted, unbalanced
      "C,5,extra\n"              // a field too many
      "N,6\n";
  ReadOptions options;
  options.format = Format::csv;
  std::istringstream in(text);
  auto reader = MoleculeReader::from_stream(in, "mols.csv", options);
  std::vector<std::string> results;
  for (;;) {
    try {
      auto p = reader->next();
      if (!p) break;
      results.push_back("ok " + std::to_string(p->record) + " " + p->title);
    } catch (const flt::InputError& e) {
      CHECK(e.file() == "mols.csv");
      const RejectedRecord& rejected = reader->last_rejected();
      CHECK(rejected.partial.record == e.record());
      CHECK(rejected.format == Format::csv);
      results.push_back("bad " + std::to_string(e.record()) + " " + e.reason() + " | " +
                        rejected.text + " | y=" +
                        (rejected.partial.property("y") ? rejected.partial.property("y")->value
                                                        : std::string("-")));
    }
  }
  REQUIRE(results.size() == 6);
  CHECK(results[0] == "ok 1 CCO");
  CHECK(results[1].rfind("bad 2 line 3: RDKit cannot parse the SMILES 'C1CC'", 0) == 0);
  CHECK(results[1].find("| C1CC,2 | y=2") != std::string::npos);
  CHECK(results[2].rfind("bad 3 line 4: RDKit cannot parse the SMILES 'CC(C)(C)(C)C'", 0) == 0);
  CHECK(results[2].find("valence") != std::string::npos);
  CHECK(results[3].rfind("bad 4 line 5: RDKit cannot parse the SMILES 'C(C'", 0) == 0);
  CHECK(results[3].find("| \"C(C\",4 | y=4") != std::string::npos);
  CHECK(results[4].rfind("bad 5 line 6: 3 fields where the header has 2", 0) == 0);
  CHECK(results[5] == "ok 6 N");
  CHECK(reader->records_seen() == 6);
}

TEST_CASE("SMILES CSV: the column by option, by file name, and header errors", "[chem][smiles]") {
  ReadOptions options;
  options.smiles_column = "mol";
  const ReadAll r = read_text("id,mol\na,C\nb,O\n", Format::csv, options);
  REQUIRE(r.records.size() == 2);
  CHECK(r.records[1].title == "O");
  CHECK(r.records[1].property("id")->value == "b");

  const ReadAll missing = read_text("id,mol\na,C\n", Format::csv);
  REQUIRE(missing.summary.skipped.size() == 1);
  CHECK(missing.summary.skipped[0].record == 0);
  CHECK(missing.summary.skipped[0].reason.find("no SMILES column 'smiles'") != std::string::npos);
  CHECK(missing.summary.skipped[0].reason.find("columns: id, mol") != std::string::npos);

  // A .csv file is read as SMILES CSV by its name.
  TempDir dir;
  const std::string file = dir.file("chemprop.csv");
  std::ofstream(file) << "smiles,target\r\nCC,1.5\r\n";
  const ReadAll from_file = read_all({file});
  REQUIRE(from_file.records.size() == 1);
  CHECK(from_file.records[0].source == file);
  CHECK(from_file.records[0].number("target") == 1.5);
  CHECK(from_file.records[0].size() == 8);
}
