// Every input record reaches the output: flt predict on files with records the model cannot
// predict (elements it never saw) and records the reader cannot parse writes as many SD records
// and CSV rows as the input has, in input order, the unpredicted ones marked with the reason.
// SMILES CSV end to end: train a tiny model on a Chemprop-style file and predict with it.
#include "../common/text_input.hpp"
#include "chem/writer.hpp"
#include "test_predict_util.hpp"
#include "io/csv.hpp"

#include <catch2/catch.hpp>

#include <fstream>

using namespace flt;
using namespace flt::pipeline;
using namespace flt::pipeline::testing;

namespace {

std::size_t count_lines_starting(const std::string& text, const std::string& prefix) {
  std::size_t n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) n += line.rfind(prefix, 0) == 0 ? 1 : 0;
  return n;
}

std::string default_model() { return std::string(FLT_SOURCE_DIR) + "/models/default.flt"; }

// "smiles,U0,gap" rows (Hartree, no units in the header as Chemprop writes them) for the first
// `count` molecules of the bundled QM9 subset, with two unparsable SMILES after rows 3 and 10.
std::string chemprop_csv(const TempDir& dir, std::size_t count) {
  const std::string index_path = std::string(FLT_DATASETS_DIR) + "/qm9/qm9_subset_index.csv.gz";
  flt::test::TextInput index_file(index_path);
  REQUIRE(index_file.opened());
  std::string index_text;
  for (std::string line; std::getline(index_file, line) && index_text.size() < (1u << 20);) {
    index_text += line + "\n";
  }
  const io::CsvTable index = io::parse_csv(index_text, index_path);
  const std::size_t smiles = index.require_column("smiles"), u0 = index.require_column("u0"),
                    gap = index.require_column("gap");
  const std::string path = dir / "chemprop.csv";
  std::ofstream out(path);
  out << "smiles,U0,gap\n";
  for (std::size_t r = 0; r < count; ++r) {
    out << index.rows[r][smiles] << "," << index.rows[r][u0] << "," << index.rows[r][gap] << "\n";
    if (r == 2) out << "C1CC,-1,0.1\n";
    if (r == 9) out << "not_a_smiles,-2,0.2\n";
  }
  return path;
}

}  // namespace

TEST_CASE("flt predict keeps every record: SDF and CSV record counts equal the input's",
          "[predict][program][records]") {
  TempDir dir("records");
  // cdk2.sdf (47 records, many with S, F, Cl or Br, which the default model never saw), then a
  // record RDKit cannot parse, then cdk2's first record again.
  const std::string cdk2 = slurp(kCdk2);
  const std::string first = cdk2.substr(0, cdk2.find("$$$$\n") + 5);
  const std::string broken = "broken\n  test\n\n  x  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n$$$$\n";
  const std::string input = dir / "mixed.sdf";
  std::ofstream(input) << cdk2 << broken << first;
  const std::size_t records_in = count_lines_starting(slurp(input), "$$$$");
  REQUIRE(records_in == 49);

  const std::string sdf = dir / "out.sdf", csv = dir / "out.csv";
  auto run = run_flt("predict -m " + quoted(default_model()) + " " + quoted(input) + " -o " + quoted(sdf), dir);
  INFO(run.err);
  CHECK(run.status == 3);
  const std::string sdf_text = slurp(sdf);
  CHECK(count_lines_starting(sdf_text, "$$$$") == records_in);
  const std::size_t marked = count_lines_starting(sdf_text, ">  <flt_error>");
  const std::size_t predicted = count_lines_starting(sdf_text, ">  <flt_U0 [eV]>");
  CHECK(marked >= 20);  // the sulfur/halogen ligands and the broken record
  CHECK(marked + predicted == records_in);
  // The broken record is written as it was, with the reason.
  CHECK(sdf_text.find("broken\n  test\n\n  x  0  0") != std::string::npos);
  // Record by record: the output's titles follow the input's.
  const auto out_records = read_all(sdf);
  const auto in_records = read_all(input);
  REQUIRE(out_records.size() == in_records.size());  // the broken one is unreadable on both sides
  for (std::size_t k = 0; k < in_records.size(); ++k) {
    CHECK(out_records[k].title == in_records[k].title);
    CHECK(out_records[k].record == in_records[k].record);
  }

  run = run_flt("predict -m " + quoted(default_model()) + " " + quoted(input) + " -o " + quoted(csv), dir);
  CHECK(run.status == 3);
  const io::CsvTable table = io::read_csv(csv);
  REQUIRE(table.rows.size() == records_in);
  const std::size_t error = table.require_column("error");
  const std::size_t u0 = table.require_column("flt_U0 [eV]");
  const std::size_t record = table.require_column("record");
  std::size_t errors = 0;
  for (std::size_t r = 0; r < table.rows.size(); ++r) {
    CHECK(table.rows[r][record] == std::to_string(r + 1));
    const bool failed = !table.rows[r][error].empty();
    errors += failed ? 1 : 0;
    CHECK(table.rows[r][u0].empty() == failed);  // a prediction or a reason, never both
  }
  CHECK(errors == marked);
  CHECK(table.rows[47][error].find("Cannot convert") != std::string::npos);  // the broken record
}

TEST_CASE("SMILES CSV end to end: train a tiny model, predict, convert, bad SMILES kept and marked",
          "[predict][program][smiles]") {
  TempDir dir("smiles");
  const std::string data = chemprop_csv(dir, 40);  // 42 rows, 2 unparsable
  const fs::path run_dir = dir / "run";
  auto run = run_flt("train " + quoted(data) +
                         " --targets U0 --source-units U0=Hartree --epochs 3 --batch-size 8 --width 32"
                         " --heads 4 --blocks 1 --mlp-hidden 64 --head-hidden 32"
                         " --split 30,5,rest --lr 2e-3 --threads 1 --seed 7 --out " +
                         quoted(run_dir.string()),
                     dir);
  INFO(run.err);
  REQUIRE(fs::exists(run_dir / "model.flt"));
  // The two bad SMILES are reported with the file, the record and the line.
  CHECK(run.err.find("chemprop.csv: record 4: line 5: RDKit cannot parse the SMILES 'C1CC'") !=
        std::string::npos);
  CHECK(run.err.find("not_a_smiles") != std::string::npos);

  const std::string pred = dir / "pred.csv";
  run = run_flt("predict -m " + quoted((run_dir / "model.flt").string()) + " " + quoted(data) +
                    " -o " + quoted(pred),
                dir);
  CHECK(run.status == 3);
  const io::CsvTable table = io::read_csv(pred);
  REQUIRE(table.rows.size() == 42);
  const std::size_t error = table.require_column("error"), title = table.require_column("title");
  const std::size_t label = table.require_column("U0"), u0 = table.require_column("flt_U0 [eV]");
  CHECK(table.rows[0][title] == "C");
  CHECK(table.rows[3][title] == "C1CC");
  CHECK(table.rows[3][label] == "-1");  // the other columns pass through, also for bad rows
  CHECK(table.rows[3][error].find("line 5: RDKit cannot parse the SMILES 'C1CC'") != std::string::npos);
  CHECK(table.rows[3][u0].empty());
  std::size_t predicted = 0;
  for (const auto& row : table.rows) {
    if (!row[u0].empty()) {
      ++predicted;
      CHECK(std::isfinite(std::stod(row[u0])));
      CHECK(row[error].empty());
    }
  }
  CHECK(predicted == 40);

  // SDF output: 42 records, the bad rows as empty molecules with their columns and the reason.
  const std::string pred_sdf = dir / "pred.sdf";
  run = run_flt("predict -m " + quoted((run_dir / "model.flt").string()) + " " + quoted(data) +
                    " -o " + quoted(pred_sdf) + " --optimize mmff",
                dir);
  CHECK(run.status == 3);
  const std::string sdf_text = slurp(pred_sdf);
  CHECK(count_lines_starting(sdf_text, "$$$$") == 42);
  CHECK(count_lines_starting(sdf_text, ">  <flt_error>") == 2);

  // flt convert: the 40 good rows as 3-D molecules; the bad ones reported (exit 3).
  const std::string mols = dir / "mols.sdf";
  run = run_flt("convert " + quoted(data) + " -o " + quoted(mols), dir);
  CHECK(run.status == 3);
  // (Planar molecules such as water come out of ETKDG with every z = 0, which the SD reader takes
  // for 2-D: count the records rather than read them back.)
  CHECK(count_lines_starting(slurp(mols), "$$$$") == 40);
}

TEST_CASE("A dimensionless SMILES label (logP) trains with unit 1, and every output column states it",
          "[predict][program][smiles]") {
  TempDir dir("logp");
  const std::string data = dir / "logp.csv";
  {
    std::ofstream out(data);
    out << "smiles,logP\n";
    const char* smiles[] = {"C", "CC", "CCC", "CCO", "CO", "CN", "CCN", "OCCO", "CC=O", "C=C", "CC#N", "NC=O"};
    for (std::size_t i = 0; i < 12; ++i) out << smiles[i] << "," << 0.1 * static_cast<double>(i) << "\n";
  }
  const fs::path run_dir = dir / "run";
  const std::string common = " --targets logP --epochs 2 --batch-size 4 --width 16 --heads 2 --blocks 1"
                             " --mlp-hidden 16 --head-hidden 16 --split 8,2,rest --threads 1 --out " +
                             quoted(run_dir.string());
  auto run = run_flt("train " + quoted(data) + common, dir);
  CHECK(run.status != 0);  // no unit: refused, and the message says how to declare one
  CHECK(run.err.find("1 for a dimensionless label") != std::string::npos);
  // The refused run left only its marker: the same command runs again without --overwrite.
  run = run_flt("train " + quoted(data) + common + " --source-units logP=1", dir);
  INFO(run.err);
  REQUIRE(run.status == 0);
  CHECK(io::read_csv(run_dir / "test_predictions.csv").column("logP_true [1]").has_value());
  const std::string pred = dir / "pred.csv";
  run = run_flt("predict -m " + quoted((run_dir / "model.flt").string()) + " " + quoted(data) + " -o " + quoted(pred), dir);
  REQUIRE(run.status == 0);
  CHECK(io::read_csv(pred).column("flt_logP [1]").has_value());
}

TEST_CASE("flt train --missing-3d generate trains on a 2-D SD file", "[predict][program][smiles]") {
  TempDir dir("train2d");
  const std::string data = std::string(FLT_SOURCE_DIR) + "/tests/chem/data/drug_like_2d.sdf";
  // CLOGP is dimensionless; training needs a unit, and any will do for this test of the option.
  const std::string args = " --targets CLOGP --source-units CLOGP=eV --epochs 1 --batch-size 8"
                           " --width 16 --heads 2 --blocks 1 --mlp-hidden 16 --head-hidden 16 --split 30,5,rest"
                           " --threads 1"
                           " --conformer-attempts 1 --optimize mmff";
  // Without it every record is 2-D: nothing to train on.
  auto run = run_flt("train " + quoted(data) + args + " --out " + quoted((dir / "flat").string()), dir);
  CHECK(run.status != 0);
  CHECK(run.err.find("no 3-D coordinates") != std::string::npos);
  run = run_flt("train " + quoted(data) + args + " --missing-3d generate --out " +
                    quoted((dir / "run").string()),
                dir);
  INFO(run.err);
  CHECK(run.status == 3);  // the anti-Bredt record has no conformer
  CHECK(run.err.find("record 42: no 3-D coordinates and no conformer") != std::string::npos);
  CHECK(fs::exists(dir / "run" / "model.flt"));
  CHECK(slurp(dir / "run" / "config.ini").find("missing-3d = generate") != std::string::npos);
}
