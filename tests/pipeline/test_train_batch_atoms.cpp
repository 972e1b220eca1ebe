// `flt train --batch-atoms`: mini-batches under an atom budget. The largest pass of a step stays
// within the budget (and exceeds it without one), molecules larger than the budget train alone
// with a log line, the same seed gives the same model, the gradient-chunk engine keeps the bound,
// and the INI key round-trips. (The batch cutting itself: tests/pipeline/test_dataset.cpp; one
// against two MPI ranks: tests/mpi.)
#include "test_train_util.hpp"

#include <catch2/catch.hpp>

#include <regex>
#include <string>

using flt::pipeline::testing::ScratchDir;
using flt::pipeline::testing::run_flt;
using flt::pipeline::testing::slurp;
namespace fs = std::filesystem;

namespace {

// 120 QM9 molecules (80/20/20, 3 to 19 atoms, 10 of them above 16), a tiny model, 2 epochs, 1 thread.
std::string args(const std::string& extra, const fs::path& out) {
  std::string a = "train '";
  a.append(FLT_SOURCE_DIR);
  a.append("/datasets/qm9/qm9_subset.xyz.gz' --limit 120 --targets U0 --epochs 2 --width 16 --heads 2 --blocks 1"
           " --mlp-hidden 16 --head-hidden 16 --split 80,20,rest --threads 1"
           " --seed 3 ");
  a.append(extra);
  a.append(" --out '");
  a.append(out.string());
  a.append("'");
  return a;
}

// The "at most N atoms in one pass" of the run summary.
long largest_pass(const std::string& summary) {
  std::smatch m;
  REQUIRE(std::regex_search(summary, m, std::regex("at most ([0-9]+) atoms in one pass")));
  return std::stol(m[1].str());
}

}  // namespace

TEST_CASE("flt train --batch-atoms: a step's atoms within the budget, oversize molecules alone, deterministic",
          "[train][batch-atoms]") {
  ScratchDir dir("batch_atoms");
  // Without a budget, 64 molecules of ~18 atoms per step.
  const auto plain = run_flt(args("--batch-size 64", dir / "plain"), dir.path());
  INFO(plain.err);
  REQUIRE(plain.status == 0);
  CHECK(largest_pass(plain.out) > 100);

  const auto budget = run_flt(args("--batch-size 64 --batch-atoms 100", dir / "budget"), dir.path());
  INFO(budget.err);
  REQUIRE(budget.status == 0);
  CHECK(largest_pass(budget.out) <= 100);
  CHECK_THAT(budget.err, Catch::Contains("batches: at most 64 molecules and 100 atoms"));
  CHECK(budget.err.find("larger than the budget") == std::string::npos);
  CHECK_THAT(slurp(dir / "budget" / "config.ini"), Catch::Contains("batch-atoms = 100"));

  // The same seed and data: the same batches, the same model; --config reads the key back.
  const auto again = run_flt("train --config '" + (dir / "budget" / "config.ini").string() + "' --out '" +
                                 (dir / "again").string() + "'",
                             dir.path());
  INFO(again.err);
  REQUIRE(again.status == 0);
  CHECK(slurp(dir / "again" / "model.flt") == slurp(dir / "budget" / "model.flt"));
  CHECK(slurp(dir / "budget" / "model.flt") != slurp(dir / "plain" / "model.flt"));

  // The gradient-chunk engine (what mpirun runs) keeps the bound per chunk.
  const auto chunked = run_flt(args("--batch-size 64 --batch-atoms 100 --gradient-chunk 16", dir / "chunked"), dir.path());
  INFO(chunked.err);
  REQUIRE(chunked.status == 0);
  CHECK(largest_pass(chunked.out) <= 100);

  // A budget below some molecules' size: those train alone, named in the log, and counted.
  const auto small = run_flt(args("--batch-size 16 --batch-atoms 16", dir / "small"), dir.path());
  INFO(small.err);
  REQUIRE(small.status == 0);
  CHECK_THAT(small.err, Catch::Contains("larger than the budget and train alone in a batch: gdb "));
  CHECK_THAT(small.out, Catch::Contains(" of one molecule above --batch-atoms"));
  CHECK(largest_pass(small.out) <= 19);  // the largest molecule of these 120

  const auto bad = run_flt(args("--batch-atoms -5", dir / "bad"), dir.path());
  CHECK(bad.status != 0);
  CHECK_THAT(bad.err, Catch::Contains("--batch-atoms must be >= 0"));
}
