// SMILES tokenizers, vocabulary, heavy-atom composition, the QM9 SMILES index (units, order, split
// of the 3-D model) and the target normalisation (reference energies by least squares).
#include "core/random.hpp"
#include "tasks/data_smiles.hpp"
#include "task_test_util.hpp"
#include "io/atomic_file.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <map>

using namespace flt;
using namespace flt::tasks;
using flt::tasks::testing::Scratch;

namespace {

std::string concat(const std::vector<std::string>& t) {
  std::string s;
  for (const auto& x : t) s += x;
  return s;
}

std::map<std::string, int> composition(const std::string& smiles) {
  std::map<std::string, int> m;
  for (const auto& [s, n] : smiles_heavy_atoms(smiles)) m[s] = n;
  return m;
}

}  // namespace

TEST_CASE("SMILES tokenizers: atom level keeps bracket atoms, Cl, Br and %nn whole, both partition the string", "[seq][smiles]") {
  const std::string s = "C[NH3+]CCl.Br%12c1cc[nH]c1%12";
  const auto atom = tokenize_smiles(s, Tokenization::atom);
  const std::vector<std::string> expected = {"C", "[NH3+]", "C", "Cl", ".", "Br", "%12", "c", "1", "c",
                                             "c", "[nH]",   "c", "1",  "%12"};
  CHECK(atom == expected);
  CHECK(concat(atom) == s);
  const auto chars = tokenize_smiles(s, Tokenization::character);
  CHECK(chars.size() == s.size());
  CHECK(concat(chars) == s);
  // "Cl" is one token but "Cc" (carbon, aromatic carbon) is two; a lone "%" is a character.
  CHECK(tokenize_smiles("CcCl", Tokenization::atom) == std::vector<std::string>{"C", "c", "Cl"});
  CHECK(tokenize_smiles("C%1", Tokenization::atom) == std::vector<std::string>{"C", "%", "1"});

  CHECK_THROWS_AS(tokenize_smiles("C[NH3+", Tokenization::atom, "rec 7"), InvalidArgument);
  try {
    tokenize_smiles("C[NH3+", Tokenization::atom, "rec 7");
  } catch (const InvalidArgument& e) {
    CHECK(std::string(e.what()).find("rec 7: unterminated bracket atom at position 2") != std::string::npos);
  }
  CHECK_THROWS_AS(tokenize_smiles("C[]C", Tokenization::atom), InvalidArgument);
  CHECK_THROWS_AS(tokenize_smiles("", Tokenization::character), InvalidArgument);
  CHECK_THROWS_AS(tokenize_smiles("C C", Tokenization::character), InvalidArgument);
  CHECK(parse_tokenization("atom") == Tokenization::atom);
  CHECK(parse_tokenization("character") == Tokenization::character);
  CHECK_THROWS_AS(parse_tokenization("word"), ConfigError);
}

TEST_CASE("Vocabulary: order-independent build, unknown tokens, text round trip", "[seq][smiles]") {
  const Vocabulary a = Vocabulary::build({{"C", "O", "["}, {"N", "C"}});
  const Vocabulary b = Vocabulary::build({{"N"}, {"O", "C", "[", "C"}});
  CHECK(a == b);
  CHECK(a.size() == Vocabulary::kNumSpecial + 4);
  CHECK(a.token(Vocabulary::kPad) == "<pad>");
  CHECK(a.token(Vocabulary::kEos) == "<eos>");
  CHECK(a.id("C") == Vocabulary::kNumSpecial);  // sorted after the specials: C < N < O < [
  CHECK(a.id("[") == Vocabulary::kNumSpecial + 3);
  CHECK(a.id("S") == Vocabulary::kUnk);
  CHECK(a.encode({"C", "S", "O"}) == std::vector<std::int32_t>{4, Vocabulary::kUnk, 6});
  CHECK_THROWS_AS(a.token(99), InvalidArgument);

  const Vocabulary odd = Vocabulary::build({{"a\\b", "x\ny", "\r"}});
  const Vocabulary back = Vocabulary::from_text(odd.to_text());
  CHECK(back == odd);
  CHECK_THROWS_AS(Vocabulary::from_text("<pad>\n<unk>\n<bos>\n"), InvalidArgument);            // specials missing
  CHECK_THROWS_AS(Vocabulary::from_text("<pad>\n<unk>\n<bos>\n<eos>\nC\nC\n"), InvalidArgument); // duplicate
  CHECK_THROWS_AS(Vocabulary::from_text("<pad>\n<unk>\n<bos>\n<eos>\nC"), InvalidArgument);     // no newline
  CHECK_THROWS_AS(Vocabulary::from_text("<pad>\n<unk>\n<bos>\n<eos>\na\\q\n"), InvalidArgument); // bad escape
}

TEST_CASE("SMILES heavy-atom composition: organic subset, aromatic, bracket atoms, isotopes", "[seq][smiles]") {
  CHECK(composition("CC(=O)[O-]") == std::map<std::string, int>{{"C", 2}, {"O", 2}});
  CHECK(composition("c1cc[nH]c1") == std::map<std::string, int>{{"C", 4}, {"N", 1}});
  CHECK(composition("[13CH4]") == std::map<std::string, int>{{"C", 1}});
  CHECK(composition("ClCBr") == std::map<std::string, int>{{"Br", 1}, {"C", 1}, {"Cl", 1}});
  CHECK(composition("[H][H]").empty());  // explicit hydrogens are not heavy atoms
  CHECK(composition("[Na+].[Cl-]") == std::map<std::string, int>{{"Cl", 1}, {"Na", 1}});
  CHECK(composition("C#N") == std::map<std::string, int>{{"C", 1}, {"N", 1}});
  CHECK_THROWS_AS(smiles_heavy_atoms("[Xx]"), InvalidArgument);
  CHECK_THROWS_AS(smiles_heavy_atoms("CA"), InvalidArgument);
}

TEST_CASE("QM9 SMILES index: the 3-D model's molecules, units and split", "[seq][smiles]") {
  const SmilesDataset d = load_qm9_smiles(testing::qm9_index(), {"U0", "gap", "mu", "Cv"});
  CHECK(d.size() == 13023);  // rows with has_geometry = 1 (qm9_subset.xyz)
  CHECK(d.ids.front() == "gdb 1");
  CHECK(d.smiles.front() == "C");
  // gdb 1 (methane): U0 = -40.47893 Hartree, gap 0.5048 Hartree, mu 0 D, Cv 6.469 cal/(mol K).
  const double ha = 27.211386245988;
  CHECK(d.labels(0, 0) == Approx(-40.47893 * ha).epsilon(1e-12));
  CHECK(d.labels(0, 1) == Approx(0.5048 * ha).epsilon(1e-12));
  CHECK(d.labels(0, 2) == 0.0);
  CHECK(d.labels(0, 3) == Approx(6.469).epsilon(1e-12));
  CHECK(d.targets[0].unit == "eV");
  CHECK(d.targets[0].extensive);
  CHECK_FALSE(d.targets[1].extensive);
  CHECK(d.targets[2].unit == "Debye");
  CHECK(d.targets[3].unit == "cal/(mol K)");
  CHECK(d.elements == std::vector<std::string>{"H", "C", "N", "O"});
  CHECK(d.composition(0, 0) == 4);  // CH4
  CHECK(d.composition(0, 1) == 1);
  // Sorted by QM9 index, unique.
  for (std::size_t i = 1; i < d.size(); ++i) REQUIRE(std::stol(d.ids[i].substr(4)) > std::stol(d.ids[i - 1].substr(4)));

  const train::Split split = read_qm9_split(testing::qm9_split(), d);
  CHECK(split.train.size() == 11023);
  CHECK(split.validation.size() == 1000);
  CHECK(split.test.size() == 1000);

  CHECK_THROWS_AS(load_qm9_smiles(testing::qm9_index(), {"U7"}), ConfigError);
}

TEST_CASE("QM9 SMILES index: malformed rows give InputError naming file and line", "[seq][smiles]") {
  Scratch dir("smiles-bad");
  const std::string header = "gdb_index,has_geometry,n_atoms,n_heavy,smiles,u0,gap\n";
  auto expect = [&](const std::string& body, const std::string& fragment) {
    io::write_file_atomic(dir / "x.csv", header + body);
    try {
      load_qm9_smiles(dir / "x.csv", {"U0"});
      FAIL("no error for " + body);
    } catch (const InputError& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(fragment) != std::string::npos);
      CHECK(std::string(e.what()).find("x.csv:3") != std::string::npos);
    }
  };
  expect("1,1,5,1,C,-40.5,0.5\n2,1,4,2,N,-56.5,0.3\n", "has 1 heavy atoms, n_heavy says 2");
  expect("1,1,5,1,C,-40.5,0.5\n2,1,4,1,N[,-56.5,0.3\n", "unterminated bracket");
  expect("1,1,5,1,C,-40.5,0.5\n1,1,4,1,N,-56.5,0.3\n", "duplicate gdb_index");
  expect("1,1,5,1,C,-40.5,0.5\n2,1,4,1,N,abc,0.3\n", "u0");
  io::write_file_atomic(dir / "y.csv", "gdb_index,has_geometry,n_atoms,n_heavy,smiles\n1,1,5,1,C\n");
  CHECK_THROWS_AS(load_qm9_smiles(dir / "y.csv", {"U0"}), InputError);  // no u0 column
}

TEST_CASE("Target normalisation: reference values recovered by least squares, exact round trip", "[seq][smiles]") {
  // Synthetic: an extensive target = composition . r + small noise, an intensive one independent.
  SmilesDataset d;
  d.elements = {"H", "C", "O"};
  d.targets = {{"U0", "eV", true}, {"gap", "eV", false}};
  const Index N = 300;
  d.composition.resize(N, 3);
  d.labels.resize(N, 2);
  Rng rng(5);
  const double r[3] = {-13.6, -1030.0, -2040.0};
  for (Index i = 0; i < N; ++i) {
    double e = 0;
    for (Index k = 0; k < 3; ++k) {
      d.composition(i, k) = static_cast<double>(rng.below(6) + (k == 1 ? 1 : 0));
      e += d.composition(i, k) * r[k];
    }
    d.labels(i, 0) = e + rng.normal(0.0, 0.1);
    d.labels(i, 1) = 5.0 + rng.normal(0.0, 2.0);
    d.ids.push_back(std::to_string(i));
    d.smiles.push_back("C");
  }
  d.labels(7, 1) = std::nan("");  // a missing label stays missing
  std::vector<std::size_t> train;
  for (std::size_t i = 0; i < 200; ++i) train.push_back(i);
  const TargetNormalisation n = fit_target_normalisation(d, train, true);
  for (Index k = 0; k < 3; ++k) CHECK(n.reference(0, k) == Approx(r[k]).margin(0.05));
  CHECK(n.reference.row(1).isZero());  // intensive: no reference values
  CHECK(n.scale[0] == Approx(0.1).epsilon(0.2));
  CHECK(n.scale[1] == Approx(2.0).epsilon(0.2));
  const Mat<double> z = n.normalise(d.labels, d.composition);
  CHECK(std::isnan(z(7, 1)));
  double m0 = 0, m1 = 0, v0 = 0;
  int c1 = 0;
  for (std::size_t i : train) {
    m0 += z(static_cast<Index>(i), 0);
    v0 += z(static_cast<Index>(i), 0) * z(static_cast<Index>(i), 0);
    if (!std::isnan(z(static_cast<Index>(i), 1))) {
      m1 += z(static_cast<Index>(i), 1);
      ++c1;
    }
  }
  CHECK(m0 / 200 == Approx(0).margin(1e-9));
  CHECK(v0 / 200 == Approx(1).epsilon(1e-9));
  CHECK(m1 / c1 == Approx(0).margin(1e-9));
  const Mat<double> back = n.denormalise(z, d.composition);
  for (Index i = 0; i < N; ++i)
    for (Index t = 0; t < 2; ++t)
      if (!std::isnan(d.labels(i, t))) REQUIRE(back(i, t) == Approx(d.labels(i, t)).epsilon(1e-12));
  // Without the fit, the extensive target is standardised as it is.
  const TargetNormalisation plain = fit_target_normalisation(d, train, false);
  CHECK(plain.reference.isZero());
  CHECK(plain.scale[0] > 100 * n.scale[0]);
}
