// SMILES CSV input (Chemprop's layout): the SMILES column by name or option, other columns as
// properties (with "[unit]" headers), RFC 4180 quoting, conformers from ETKDGv3, unparsable
// SMILES reported with file, record and line and kept as rejected records with their columns.
// SMILES files (.smi): blank-separated fields, a header line only when it names the SMILES
// column, titles, real files checked against their SDF twins.
#include "chem/writer.hpp"
#include "chem_test_util.hpp"

#include <GraphMol/ROMol.h>

#include <catch2/catch.hpp>

#include <algorithm>
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

// --- SMILES files (.smi): fields separated by blanks, header line optional ---------------------

namespace {
std::vector<int> sorted_elements(const PointSet& p) {
  std::vector<int> z(p.atomic_numbers.begin(), p.atomic_numbers.end());
  std::sort(z.begin(), z.end());
  return z;
}
}  // namespace

TEST_CASE("SMILES file: lines without a header, their titles, comments and a bad line",
          "[chem][smiles]") {
  const std::string text =
      "# written by hand\n"
      "CCO ethanol\n"
      "c1ccccc1\tbenzene  ring\t\n"
      "C1CC broken ring\n"
      "\n"
      "O\n"
      "  CC(=O)O   acetic acid\r\n";
  const ReadAll r = read_text(text, Format::smi);
  REQUIRE(r.records.size() == 4);
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].record == 3);
  CHECK(r.summary.skipped[0].reason.find("line 4: RDKit cannot parse the SMILES 'C1CC'") == 0);
  // The hint names the option only when the SMILES might be in another field.
  CHECK(r.summary.skipped[0].reason.find("--smiles-column N") != std::string::npos);
  CHECK(r.records[0].title == "ethanol");
  CHECK(r.records[0].record == 1);
  CHECK(r.records[0].size() == 9);
  CHECK(r.records[0].conformer_generated);
  CHECK(r.records[0].properties.empty());
  CHECK(r.records[1].title == "benzene  ring");  // the rest of the line, blanks inside kept
  CHECK(r.records[1].size() == 12);
  CHECK(r.records[2].title == "O");  // no title: the SMILES
  CHECK(r.records[2].record == 4);
  CHECK(r.records[2].size() == 3);
  CHECK(r.records[3].title == "acetic acid");
  CHECK(r.records[3].size() == 8);
  REQUIRE(r.records[3].molecule);
  CHECK(r.records[3].molecule->getProp<std::string>("_Name") == "acetic acid");

  const ReadAll lone = read_text("C1CC\n", Format::smi);
  REQUIRE(lone.summary.skipped.size() == 1);
  CHECK(lone.summary.skipped[0].reason.find("--smiles-column") == std::string::npos);

  const ReadAll empty = read_text("# nothing\n\n", Format::smi);
  CHECK(empty.records.empty());
  REQUIRE(empty.summary.skipped.size() == 1);
  CHECK(empty.summary.skipped[0].record == 0);
  CHECK(empty.summary.skipped[0].reason == "no SMILES lines");
}

TEST_CASE("SMILES file: a header line names the columns (RDKit's SmilesWriter layout)",
          "[chem][smiles]") {
  // As RDKit's SmilesWriter writes them: values with blanks unquoted, so the last column takes
  // the rest of a longer line.
  const std::string text =
      "SMILES Name pIC50 note y[eV]\n"
      "CCO ethanol 5.1 -0.5 a b\n"
      "c1ccccc1 benzene 6.2 1.5 x\n"
      "O water 7.0\n";
  const ReadAll r = read_text(text, Format::smi);
  REQUIRE(r.records.size() == 2);
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].record == 3);
  CHECK(r.summary.skipped[0].reason == "line 4: 3 fields where the header has 5");
  const PointSet& ethanol = r.records[0];
  CHECK(ethanol.title == "ethanol");
  CHECK(ethanol.property("Name") == nullptr);  // the title holds it
  CHECK(ethanol.property("SMILES") == nullptr);
  CHECK(ethanol.number("pIC50") == 5.1);
  REQUIRE(ethanol.property("note") != nullptr);
  CHECK(ethanol.number("note") == -0.5);
  REQUIRE(ethanol.property("y") != nullptr);
  CHECK(ethanol.property("y")->unit == "eV");
  CHECK(ethanol.property("y")->value == "a b");
  CHECK(r.records[1].property("y")->value == "x");
  CHECK(r.records[1].size() == 12);

  // Tab-separated (RDKit's SmilesWriter with delimiter '\t'): names with blanks stay one field.
  const ReadAll tabs = read_text("SMILES\tName\tpIC50\nCCO\tcompound 12\t5.3\nC\tmethane\t4\n", Format::smi);
  REQUIRE(tabs.records.size() == 2);
  CHECK(tabs.records[0].title == "compound 12");
  CHECK(tabs.records[0].number("pIC50") == 5.3);
  CHECK(tabs.records[1].title == "methane");

  // The file RDKit wrote (tests/chem/data/README.md): an empty name became the row index.
  const ReadAll written = read_all({test_data("rdkit_smiles_writer.smi")});
  REQUIRE(written.records.size() == 3);
  CHECK(written.summary.ok());
  CHECK(written.records[0].title == "ethanol");
  CHECK(written.records[0].property("note")->value == "a b");
  CHECK(written.records[2].title == "2");
  CHECK(written.records[2].number("pIC50") == 7.0);
}

TEST_CASE("SMILES file: the SMILES column by number or by name, and its errors", "[chem][smiles]") {
  ReadOptions second;
  second.smiles_column = "2";
  const ReadAll named_first = read_text("ZINC1 CCO\nZINC2 extra c1ccccc1\n", Format::smi, second);
  REQUIRE(named_first.records.size() == 1);
  CHECK(named_first.records[0].title == "ZINC1");
  CHECK(named_first.records[0].size() == 9);
  // The SMILES is field 2 of every line: on the second line that is "extra", reported. (With
  // tabs between the fields, "ZINC2 extra" would be one field: the test above.)
  REQUIRE(named_first.summary.skipped.size() == 1);
  CHECK(named_first.summary.skipped[0].record == 2);
  CHECK(named_first.summary.skipped[0].reason.find("line 2: RDKit cannot parse the SMILES 'extra'") == 0);
  const ReadAll joined = read_text("ZINC2 c1ccccc1 extra\n", Format::smi, second);
  REQUIRE(joined.records.size() == 1);
  CHECK(joined.records[0].title == "ZINC2 extra");  // the other fields, joined by a blank

  const ReadAll short_line = read_text("CCO\n", Format::smi, second);
  REQUIRE(short_line.summary.skipped.size() == 1);
  CHECK(short_line.summary.skipped[0].reason == "line 1: 1 field(s); the SMILES is field 2");

  ReadOptions by_name;
  by_name.smiles_column = "mol";
  const ReadAll header = read_text("id mol\na C\nb O\n", Format::smi, by_name);
  REQUIRE(header.records.size() == 2);
  CHECK(header.records[1].title == "O");
  CHECK(header.records[1].property("id")->value == "b");
  const ReadAll no_header = read_text("C methane\n", Format::smi, by_name);
  REQUIRE(no_header.summary.skipped.size() == 1);
  CHECK(no_header.summary.skipped[0].record == 0);
  CHECK(no_header.summary.skipped[0].reason.find("no header line naming the SMILES column 'mol'") == 0);
  const ReadAll numbered_header = read_text("smiles name\nC methane\n", Format::smi, second);
  REQUIRE(numbered_header.summary.skipped.size() == 1);
  CHECK(numbered_header.summary.skipped[0].reason.find("name the SMILES column instead") != std::string::npos);
}

TEST_CASE("SMILES file: names, directories, and the writer's refusal", "[chem][smiles]") {
  CHECK(format_from_path("a.smi") == Format::smi);
  CHECK(format_from_path("dir/A.SMILES") == Format::smi);
  CHECK(format_from_path("a.ism.gz") == Format::smi);
  CHECK(format_from_name("smi") == Format::smi);
  CHECK(format_from_name("SMILES") == Format::smi);
  CHECK(std::string(format_name(Format::smi)) == "smi");
  CHECK_THROWS_AS(MoleculeWriter::open("out.smi", {}), flt::InvalidArgument);

  // In a directory, .smi files are read (CSV files are not: they are usually label tables).
  TempDir dir;
  std::ofstream(dir.file("a.smi")) << "CC ethane\n";
  std::ofstream(dir.file("labels.csv")) << "smiles,y\nO,1\n";
  const ReadAll r = read_all({dir.path()});
  REQUIRE(r.records.size() == 1);
  CHECK(r.records[0].title == "ethane");
}

TEST_CASE("SMILES file: real files from rdkit-data give the molecules of their SDF twins",
          "[chem][smiles]") {
  // bzr.smi: "SMILES name", blank-separated, the first 10 molecules of bzr.sdf; cdk2.smi:
  // "name<TAB>SMILES", the 47 molecules of cdk2.sdf (tests/chem/data/README.md).
  ReadOptions second;
  second.smiles_column = "2";
  struct Twin {
    std::string smi, sdf;
    ReadOptions options;
    std::size_t count;
  };
  for (const Twin& twin : {Twin{"bzr.smi", "rdkit-data-deb/bzr.sdf", {}, 10},
                           Twin{"cdk2.smi", "rdkit-data-deb/cdk2.sdf", second, 47}}) {
    INFO(twin.smi);
    const ReadAll smi = read_all({test_data(twin.smi)}, twin.options);
    const ReadAll sdf = read_all({parser_case(twin.sdf)});
    CHECK(smi.summary.ok());
    REQUIRE(smi.records.size() == twin.count);
    REQUIRE(sdf.records.size() >= twin.count);
    for (std::size_t i = 0; i < twin.count; ++i) {
      INFO("record " << i + 1);
      CHECK(smi.records[i].title == sdf.records[i].title);
      CHECK(sorted_elements(smi.records[i]) == sorted_elements(sdf.records[i]));
    }
  }
  // Read with the default column, cdk2.smi's names are not SMILES: every line is reported with
  // the hint, none lost.
  const ReadAll wrong = read_all({test_data("cdk2.smi")});
  CHECK(wrong.records.empty());
  REQUIRE(wrong.summary.skipped.size() == 47);
  CHECK(wrong.summary.skipped[46].record == 47);
  CHECK(wrong.summary.skipped[46].reason.find("--smiles-column N (API: smiles_column) reads the SMILES from field N") !=
        std::string::npos);
}
