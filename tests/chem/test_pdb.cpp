// PDB through RDKit: real structures from Debian's rdkit-data (molecules/pdb/SOURCE.md): a
// protein with hydrogens, a crystal structure with waters, ligands and alternate locations, a
// ligand with CONECT bonds, a docked pose in a MODEL block; multi-model records, the water /
// hetero choices, and bad records naming the residue and atom.
#include "chem_test_util.hpp"

#include "chem/writer.hpp"
#include "core/error.hpp"

#include <GraphMol/FileParsers/FileParsers.h>
#include <GraphMol/MolOps.h>
#include <GraphMol/RWMol.h>
#include <catch2/catch.hpp>

#include <fstream>
#include <memory>

using namespace flt::chem;
using namespace flt::chem::test;

namespace {

std::string pdb_file(const std::string& name) {
  return std::string(FLT_SOURCE_DIR) + "/molecules/pdb/" + name;
}

int count_z(const PointSet& p, int z) {
  return static_cast<int>(std::count(p.atomic_numbers.begin(), p.atomic_numbers.end(), z));
}

// The ATOM/HETATM lines of a file.
std::string atom_lines(const std::string& path) {
  std::istringstream in(flt::test_support::slurp(path));
  std::string line, out;
  while (std::getline(in, line)) {
    if (line.rfind("ATOM", 0) == 0 || line.rfind("HETATM", 0) == 0) out += line + "\n";
  }
  return out;
}

}  // namespace

TEST_CASE("PDB: a protein with hydrogens reads atom for atom", "[chem][pdb]") {
  const auto r = read_all({pdb_file("aurka_protein_2c6e.pdb")});
  REQUIRE(r.summary.ok());
  REQUIRE(r.records.size() == 1);
  const PointSet& p = r.records[0];
  CHECK(p.size() == 4334);  // 4334 ATOM lines, hydrogens included
  CHECK(count_z(p, 1) == 2173);
  CHECK(count_z(p, 16) == 5);
  CHECK(p.hydrogens_added == 0);
  const AtomColumn* labels = p.column("pdb_atom");
  REQUIRE(labels != nullptr);
  REQUIRE(labels->strings.size() == p.size());
  CHECK(labels->strings[0] == "ACE 1 H1");  // residue, number, atom name
  // Coordinates as in the file (first ATOM line).
  std::istringstream first(atom_lines(pdb_file("aurka_protein_2c6e.pdb")));
  std::string line;
  std::getline(first, line);
  CHECK(p.positions(0, 0) == Approx(std::stod(line.substr(30, 8))));
  CHECK(p.positions(0, 2) == Approx(std::stod(line.substr(46, 8))));
}

TEST_CASE("PDB: crystal structure: waters dropped, first alternate location, ligands kept, H added",
          "[chem][pdb]") {
  // 5DPV: 2129 ATOM + 85 HETATM lines, of which 37 waters (HOH) and 22 atoms at altLoc B.
  const auto r = read_all({pdb_file("5dpv.pdb")});
  REQUIRE(r.summary.ok());
  REQUIRE(r.records.size() == 1);
  const PointSet& p = r.records[0];
  CHECK(p.title == "5DPV");
  REQUIRE(p.property("pdb_title") != nullptr);
  CHECK(p.property("pdb_title")->value.find("AURORA A KINASE") != std::string::npos);
  const int heavy = static_cast<int>(p.size()) - count_z(p, 1);
  CHECK(heavy == 2129 + 85 - 37 - 22);
  CHECK(p.hydrogens_added > 1000);
  CHECK(count_z(p, 1) == p.hydrogens_added);
  CHECK(count_z(p, 35) == 1);  // the ligand's bromine

  ReadOptions keep;
  keep.pdb_water = PdbPart::keep;
  keep.add_hydrogens = false;
  const auto with_water = read_all({pdb_file("5dpv.pdb")}, keep);
  REQUIRE(with_water.records.size() == 1);
  CHECK(with_water.records[0].size() == 2129 + 85 - 22);

  ReadOptions no_hetero;
  no_hetero.pdb_hetero = PdbPart::drop;
  no_hetero.add_hydrogens = false;
  const auto protein_only = read_all({pdb_file("5dpv.pdb")}, no_hetero);
  REQUIRE(protein_only.records.size() == 1);
  CHECK(protein_only.records[0].size() == 2129 - 22);
  CHECK(count_z(protein_only.records[0], 35) == 0);

  ReadOptions refuse;
  refuse.pdb_water = PdbPart::fail;
  const auto refused = read_all({pdb_file("5dpv.pdb")}, refuse);
  CHECK(refused.records.empty());
  REQUIRE(refused.summary.skipped.size() == 1);
  CHECK(refused.summary.skipped[0].record == 1);
  CHECK(refused.summary.skipped[0].reason.find("water HOH") != std::string::npos);
}

TEST_CASE("PDB: hydrogens added as RDKit adds them, on CONECT bonds", "[chem][pdb]") {
  const std::string path = pdb_file("4uzh_JVE.pdb");
  const auto r = read_all({path});
  REQUIRE(r.records.size() == 1);
  std::unique_ptr<RDKit::RWMol> mol(RDKit::PDBFileToMol(path, true, false));
  REQUIRE(mol);
  const unsigned heavy = mol->getNumAtoms();
  RDKit::MolOps::addHs(*mol, false, true);
  CHECK(r.records[0].size() == mol->getNumAtoms());
  CHECK(r.records[0].hydrogens_added == static_cast<int>(mol->getNumAtoms() - heavy));
  CHECK(heavy == 21);
}

TEST_CASE("PDB: MODEL blocks are records, a bad model is reported and the next one read",
          "[chem][pdb]") {
  const std::string atoms = atom_lines(pdb_file("docked_2c6e_JVE_pH74_netcharge1.pdb"));
  // Model 2: the first atom moved onto the second (0.01 A apart).
  std::istringstream in(atoms);
  std::string first, second, rest, line;
  std::getline(in, first);
  std::getline(in, second);
  while (std::getline(in, line)) rest += line + "\n";
  std::string moved = first;
  moved.replace(30, 24, second.substr(30, 24));
  moved[37] = moved[37] == '9' ? '8' : static_cast<char>(moved[37] + 1);  // + 0.001 A in x
  const std::string text = "HEADER    TEST                                    01-JAN-00   1ABC\n"
                           "MODEL 1\n" + atoms + "ENDMDL\n"  // as Open Babel writes it
                           "MODEL        2\n" + moved + "\n" + second + "\n" + rest + "ENDMDL\n"
                           "MODEL        3\n" + atoms + "ENDMDL\nEND\n";
  const auto r = read_text(text, Format::pdb);
  REQUIRE(r.records.size() == 2);
  CHECK(r.records[0].title == "1ABC model 1");
  CHECK(r.records[1].title == "1ABC model 3");
  CHECK(r.records[0].record == 1);
  CHECK(r.records[1].record == 3);
  CHECK(r.records[0].size() == 24);  // explicit hydrogens: kept, none added
  CHECK(r.records[0].positions == r.records[1].positions);
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].record == 2);
  const std::string& why = r.summary.skipped[0].reason;
  INFO(why);
  CHECK(why.find("closer than") != std::string::npos);
  CHECK(why.find("(LIG d 1 C6)") != std::string::npos);  // names the residue and atoms
  CHECK(why.find("(LIG d 1 C7)") != std::string::npos);
}

TEST_CASE("PDB: unknown element and empty input are bad records, pdb is not an output format",
          "[chem][pdb]") {
  const std::string good = atom_lines(pdb_file("4uzh_JVE.pdb"));
  std::string bad = good.substr(0, good.find('\n') + 1);
  bad.replace(76, 2, "Xx");
  const auto r = read_text(bad + "END\n" + good + "END\n", Format::pdb);
  REQUIRE(r.records.size() == 1);
  CHECK(r.records[0].record == 2);
  REQUIRE(r.summary.skipped.size() == 1);
  CHECK(r.summary.skipped[0].record == 1);

  const auto empty = read_text("HEADER    NOTHING\nEND\n", Format::pdb);
  CHECK(empty.records.empty());
  REQUIRE(empty.summary.skipped.size() == 1);
  CHECK(empty.summary.skipped[0].reason.find("no ATOM or HETATM") != std::string::npos);

  CHECK(format_from_path("x/1abc.pdb") == Format::pdb);
  CHECK(format_from_path("x/pdb1abc.ent.gz") == Format::pdb);
  TempDir dir;
  CHECK_THROWS_AS(MoleculeWriter::open(dir.file("out.pdb"), WriteOptions{}), flt::InvalidArgument);
}

TEST_CASE("PDB: alternate locations keep one position per atom, also atoms only in conformer B",
          "[chem][pdb]") {
  ReadOptions options;
  options.add_hydrogens = false;
  // CB in conformers A and B; OXT only in B.
  const std::string a_first =
      "ATOM      1  N   ALA A   1       0.000   1.400   0.000  1.00 10.00           N\n"
      "ATOM      2  CA  ALA A   1       0.000   0.000   0.000  1.00 10.00           C\n"
      "ATOM      3  C   ALA A   1       1.500   0.000   0.000  1.00 10.00           C\n"
      "ATOM      4  O   ALA A   1       2.100   1.000   0.000  1.00 10.00           O\n"
      "ATOM      5  CB AALA A   1      -0.700  -0.700   1.200  0.50 10.00           C\n"
      "ATOM      6  CB BALA A   1      -0.700  -0.700  -1.200  0.50 10.00           C\n"
      "ATOM      7  OXTBALA A   1       2.100  -1.000   0.000  0.50 10.00           O\n"
      "END\n";
  const auto r = read_text(a_first, Format::pdb, options);
  REQUIRE(r.records.size() == 1);
  const PointSet& p = r.records[0];
  CHECK(p.size() == 6);  // N CA C O, CB of A, OXT of B (the only one it has)
  CHECK(p.positions(4, 2) == 1.2);  // CB: conformer A, the first ID of the record
  CHECK(p.atomic_numbers[5] == 8);
  // B seen first: B's positions, and no mismatch with what RDKit reads.
  const std::string b_first =
      "ATOM      1  N   ALA A   1       0.000   1.400   0.000  1.00 10.00           N\n"
      "ATOM      2  CA  ALA A   1       0.000   0.000   0.000  1.00 10.00           C\n"
      "ATOM      3  C   ALA A   1       1.500   0.000   0.000  1.00 10.00           C\n"
      "ATOM      4  O   ALA A   1       2.100   1.000   0.000  1.00 10.00           O\n"
      "ATOM      6  CB BALA A   1      -0.700  -0.700  -1.200  0.50 10.00           C\n"
      "ATOM      5  CB AALA A   1      -0.700  -0.700   1.200  0.50 10.00           C\n"
      "ATOM      7  OXTBALA A   1       2.100  -1.000   0.000  0.50 10.00           O\n"
      "END\n";
  const auto rb = read_text(b_first, Format::pdb, options);
  REQUIRE(rb.records.size() == 1);
  CHECK(rb.summary.skipped.empty());
  CHECK(rb.records[0].size() == 6);
  CHECK(rb.records[0].positions(4, 2) == -1.2);
}
