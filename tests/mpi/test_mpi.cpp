// `mpiexec -n 2 flt train|predict` against one rank (the built programs FLT_EXE and FLT_MPIEXEC).
// Training with the same global batch, gradient chunks and seed must give the same model file,
// byte for byte, for 1 and 2 ranks (the exact fixed-point gradient sum, train_distributed.hpp);
// prediction must write the same output, record for record.
#include "../common/scratch_dir.hpp"

#include "train/checkpoint.hpp"
#include "io/csv.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace fs = std::filesystem;
using flt::test_support::RunResult;
using flt::test_support::ScratchDir;
using flt::test_support::slurp;

namespace {

// Built with append() (GCC 12 -Wrestrict false positive on chained operator+ here).
std::string quoted(const fs::path& p) {
  std::string s = "'";
  s.append(p.string());
  s.push_back('\'');
  return s;
}

// "mpiexec -n <ranks> [flags]": Open MPI refuses root without --allow-run-as-root (CI runs as
// root) and more ranks than cores without --oversubscribe (CI machines have 2 cores).
std::string launcher_flags(int ranks) {
  std::string flags = "-n " + std::to_string(ranks);
#if FLT_MPIEXEC_IS_OPEN_MPI
  flags += " --oversubscribe";
  if (::geteuid() == 0) flags += " --allow-run-as-root";
#endif
  return flags;
}

// `flt <args>` on `ranks` MPI ranks (0: plain, without the launcher); a guard ends a hung job.
// env: "NAME=value ..." set for the launcher and the ranks it starts.
RunResult run_flt(int ranks, const std::string& args, const fs::path& dir, const std::string& env = "") {
  if (ranks == 0) return flt::test_support::run_program(FLT_EXE, args, dir);
  return flt::test_support::run_program("timeout", "240 '" + std::string(FLT_MPIEXEC) + "' " + launcher_flags(ranks) +
                                                       " '" + FLT_EXE + "' " + args,
                                        dir, env.empty() ? "" : "env " + env);
}

// MPI calls cut to pieces of this many bytes (odd: pieces end inside numbers and records), so that
// every collective and message of a run travels in several pieces, as blocks above MPI's 2 GiB
// per call do.
const std::string kSmallMessages = "FLT_MPI_MAX_MESSAGE_BYTES=4093";

std::string qm9_subset() { return std::string(FLT_SOURCE_DIR) + "/datasets/qm9/qm9_subset.xyz.gz"; }

// 240 molecules (160/40/40), a small model, 3 epochs, 1 thread per rank; batches of 16 in
// gradient chunks of 4 (4 chunks per batch: 2 per rank); validation and test in evaluation
// batches of 16 (3 each, so both ranks predict some and the rows are gathered).
std::string tiny_args() {
  std::string args = "train '";
  args.append(qm9_subset());
  args.append("' --limit 240 --targets U0,gap --epochs 3 --batch-size 16 --gradient-chunk 4 --width 32 --heads 4"
              " --blocks 1 --mlp-hidden 32 --head-hidden 32"
              " --split 160,40,rest --eval-batch-size 16 --lr 2e-3 --threads 1 --seed 5");
  return args;
}

// The learning curve without its wall-time column.
std::string curve_without_seconds(const fs::path& path) {
  const flt::io::CsvTable table = flt::io::read_csv(path);
  std::string out;
  for (const auto& row : table.rows)
    for (std::size_t c = 0; c < row.size(); ++c)
      if (table.header[c].find("seconds") == std::string::npos) out += row[c] + (c + 1 < row.size() ? "," : "\n");
  return out;
}

// `flt <tiny_args() + extra>` on one rank (plain) into DIR/serial and on 2 ranks into DIR/two;
// both must succeed.
struct TrainedTwice {
  fs::path serial, two;
  RunResult one_rank, two_ranks;
};
TrainedTwice train_on_one_and_two_ranks(const ScratchDir& dir, const std::string& extra,
                                        const std::string& two_rank_env = "") {
  TrainedTwice t{dir / "serial", dir / "two", {}, {}};
  t.one_rank = run_flt(0, tiny_args() + extra + " --out " + quoted(t.serial), dir.path());
  INFO(t.one_rank.err);
  REQUIRE(t.one_rank.status == 0);
  t.two_ranks = run_flt(2, tiny_args() + extra + " --out " + quoted(t.two), dir.path(), two_rank_env);
  INFO(t.two_ranks.err);
  REQUIRE(t.two_ranks.status == 0);
  return t;
}

// The 2-rank run's model, test predictions and learning curve (without its times) are the
// 1-rank run's, byte for byte.
void check_same_run(const TrainedTwice& t) {
  const std::string model = slurp(t.serial / "model.flt");
  REQUIRE(!model.empty());
  CHECK(slurp(t.two / "model.flt") == model);
  CHECK(slurp(t.two / "test_predictions.csv") == slurp(t.serial / "test_predictions.csv"));
  CHECK(curve_without_seconds(t.two / "learning_curve.csv") == curve_without_seconds(t.serial / "learning_curve.csv"));
}

}  // namespace

TEST_CASE("mpiexec -n 2 flt train: the same model as one rank, also resumed with another rank count", "[mpi][train]") {
  ScratchDir dir("mpi-train");
  const TrainedTwice t = train_on_one_and_two_ranks(dir, "");
  const RunResult &r1 = t.one_rank, &r2 = t.two_ranks;
  CHECK_THAT(r1.out, Catch::Contains("data-parallel: 1 rank (serial), gradient chunks of 4 molecules"));
  // One summary (rank 0), naming the ranks and the time per step of the all-reduce.
  CHECK_THAT(r2.out, Catch::Contains("data-parallel: 2 ranks (MPI"));
  CHECK_THAT(r2.out, Catch::Contains("per step: all-reduce"));
  CHECK(r2.out.find("run directory:") == r2.out.rfind("run directory:"));
  // Each rank held the coordinates of its own molecules only, never the whole set: 80 training
  // molecules each, and the evaluation batches of 16 of validation and test (rank 0: 16 + 8 of
  // each, rank 1: 16 of each).
  CHECK_THAT(r2.err, Catch::Contains("coordinates held after loading, per rank: 128, 112 of 240 molecules"));
  CHECK_THAT(r1.err, !Catch::Contains("coordinates held after loading"));

  check_same_run(t);
  const fs::path &serial = t.serial, &two = t.two;
  const std::string model = slurp(serial / "model.flt");
  CHECK(slurp(two / "split.csv") == slurp(serial / "split.csv"));
  CHECK(slurp(two / "attention_stats.csv") == slurp(serial / "attention_stats.csv"));
  for (const char* plot : {"parity_U0.svg", "parity_gap.svg", "learning_curve_U0.svg"})
    CHECK(slurp(two / plot) == slurp(serial / plot));

  SECTION("stopped after epoch 1 on 2 ranks, resumed on 1 rank: the same model") {
    const fs::path resumed = dir / "resumed";
    const RunResult a = run_flt(2, tiny_args() + " --stop-after-epoch 1 --out " + quoted(resumed), dir.path());
    INFO(a.err);
    REQUIRE(a.status == 0);
    CHECK_FALSE(fs::exists(resumed / "model.flt"));
    const RunResult b = run_flt(0, "train --resume --out " + quoted(resumed), dir.path());
    INFO(b.err);
    REQUIRE(b.status == 0);
    CHECK(slurp(resumed / "model.flt") == model);
  }
  SECTION("a run with the earlier whole-set data checksum is not resumed on 2 ranks, which cannot compute it") {
    const fs::path earlier = dir / "earlier";
    const RunResult a = run_flt(0, tiny_args() + " --stop-after-epoch 1 --out " + quoted(earlier), dir.path());
    INFO(a.err);
    REQUIRE(a.status == 0);
    flt::train::Checkpoint ck = flt::train::read_checkpoint(earlier / "checkpoint-last.flt");
    REQUIRE_THAT(ck.text("data_checksum"), Catch::StartsWith("fnv1a64-mol:"));
    ck.set_text("data_checksum", "fnv1a64:0123456789abcdef");
    flt::train::write_checkpoint(earlier / "checkpoint-last.flt", ck);
    const RunResult b = run_flt(2, "train --resume --out " + quoted(earlier), dir.path());
    CHECK(b.status != 0);
    CHECK(b.status != 124);
    CHECK_THAT(b.err, Catch::Contains("resume it once without mpirun"));
  }
  SECTION("stopped after epoch 2 on 1 rank, resumed on 2 ranks: the same model") {
    const fs::path resumed = dir / "resumed2";
    const RunResult a = run_flt(0, tiny_args() + " --stop-after-epoch 2 --out " + quoted(resumed), dir.path());
    INFO(a.err);
    REQUIRE(a.status == 0);
    const RunResult b = run_flt(2, "train --resume --out " + quoted(resumed), dir.path());
    INFO(b.err);
    REQUIRE(b.status == 0);
    CHECK(slurp(resumed / "model.flt") == model);
  }
}

TEST_CASE("mpiexec -n 2 flt train --batch-atoms: the same model as one rank", "[mpi][train][batch-atoms]") {
  // An atom budget below the 16 molecules of a batch (about 200 atoms): batches of varying
  // molecule counts, cut identically on every rank from the atom counts, then into the same
  // chunks; the evaluation batches obey the budget too.
  ScratchDir dir("mpi-batch-atoms");
  const TrainedTwice t = train_on_one_and_two_ranks(dir, " --batch-atoms 150");
  CHECK_THAT(t.one_rank.err, Catch::Contains("batches: at most 16 molecules and 150 atoms"));
  check_same_run(t);
}

TEST_CASE("mpiexec -n 2 flt train --three-body: the same reference and model as one rank", "[mpi][train][three-body]") {
  // The three-body reference is fitted on every training structure's descriptors; on 2 ranks
  // each holds half the coordinates, computes those structures' descriptors, and both gather all.
  // The 2-rank run's messages travel in pieces of 4 kB (the descriptors: 2 x 4 MB).
  ScratchDir dir("mpi-three-body");
  const TrainedTwice t = train_on_one_and_two_ranks(dir, " --three-body true", kSmallMessages);
  CHECK_THAT(t.two_ranks.err, Catch::Contains("coordinates held after loading, per rank: 128, 112 of 240 molecules"));
  // the reference's fit (lambda and leave-one-out error per target) reported the same
  const auto fit_lines = [](const std::string& log) {
    std::string lines;
    std::istringstream in(log);
    for (std::string line; std::getline(in, line);)
      if (line.find("three-body") != std::string::npos && line.find("lambda") != std::string::npos)
        lines += line.substr(line.find("three-body")) + "\n";
    return lines;
  };
  CHECK_FALSE(fit_lines(t.one_rank.err + t.one_rank.out).empty());
  CHECK(fit_lines(t.two_ranks.err + t.two_ranks.out) == fit_lines(t.one_rank.err + t.one_rank.out));
  check_same_run(t);
}

TEST_CASE("mpiexec -n 2 flt predict: the same output as one rank, record for record", "[mpi][predict]") {
  ScratchDir dir("mpi-predict");
  // The example molecules in batches of 2, so both ranks predict several batches; and 300 QM9
  // molecules with a bad record spliced in.
  const std::string molecules = quoted(fs::path(FLT_SOURCE_DIR) / "molecules");
  for (const char* ext : {"sdf", "csv"}) {
    const fs::path one = dir / (std::string("one.") + ext), two = dir / (std::string("two.") + ext);
    const RunResult a = run_flt(0, "predict " + molecules + " --batch-size 2 --threads 1 -o " + quoted(one), dir.path());
    const RunResult b = run_flt(2, "predict " + molecules + " --batch-size 2 --threads 1 -o " + quoted(two), dir.path());
    INFO(a.err);
    INFO(b.err);
    CHECK((a.status == 0 || a.status == 3));
    CHECK(b.status == a.status);
    REQUIRE(!slurp(one).empty());
    CHECK(slurp(two) == slurp(one));
  }
  const fs::path one = dir / "qm9-one.xyz", two = dir / "qm9-two.xyz";
  const fs::path input = dir / "qm9.xyz";
  // The first 300 records of the bundled QM9 subset (a record: atom count, comment, atoms) with a
  // bad record (two atoms on top of each other) after the 150th: reported and skipped alike.
  const RunResult unzipped = flt::test_support::run_program("gzip", "-dc '" + qm9_subset() + "'", dir.path());
  REQUIRE(unzipped.status == 0);
  {
    std::istringstream in(unzipped.out);
    std::ofstream out(input);
    std::string line;
    for (int record = 1; record <= 300 && std::getline(in, line); ++record) {
      if (record == 151) out << "2\nbad\nC 0 0 0\nC 0 0 0\n";
      const int atoms = std::stoi(line);
      out << line << '\n';
      for (int k = 0; k < atoms + 1 && std::getline(in, line); ++k) out << line << '\n';
    }
  }
  const RunResult a = run_flt(0, "predict " + quoted(input) + " --batch-size 32 -o " + quoted(one), dir.path());
  // The 2-rank run's results travel to rank 0 in pieces of 4 kB.
  const RunResult b =
      run_flt(2, "predict " + quoted(input) + " --batch-size 32 -o " + quoted(two), dir.path(), kSmallMessages);
  INFO(a.err);
  INFO(b.err);
  REQUIRE(a.status == 3);  // the bad record
  REQUIRE(b.status == 3);
  CHECK_THAT(b.err, Catch::Contains("predicted 300 of 301 records"));
  CHECK(slurp(two) == slurp(one));
  // rank 0 alone reports.
  CHECK(b.err.find("flt predict: predicted") == b.err.rfind("flt predict: predicted"));
  // Per-atom contributions travel with the other ranks' results.
  const fs::path per_atom_one = dir / "per-atom-one.xyz", per_atom_two = dir / "per-atom-two.xyz";
  const RunResult c = run_flt(0, "predict " + quoted(input) + " --batch-size 32 --per-atom -o " + quoted(per_atom_one), dir.path());
  const RunResult d = run_flt(2, "predict " + quoted(input) + " --batch-size 32 --per-atom -o " + quoted(per_atom_two), dir.path());
  INFO(c.err);
  INFO(d.err);
  REQUIRE(c.status == 3);
  REQUIRE(d.status == 3);
  CHECK_THAT(slurp(per_atom_one), Catch::Contains("flt_U0_contribution:R:1"));
  CHECK(slurp(per_atom_two) == slurp(per_atom_one));
}

TEST_CASE("mpiexec: a rank that cannot read its input or dies ends the whole job, naming the rank",
          "[mpi][faults]") {
  ScratchDir dir("mpi-faults");
  const std::string flt = std::string("'") + FLT_EXE + "'";
  // Thousands of epochs: the job must end by the fault, long before training would.
  const std::string common = " --limit 60 --targets U0 --epochs 5000 --batch-size 8 --width 16 --heads 2 --blocks 1"
                             " --mlp-hidden 16 --head-hidden 16 --threads 1";
  SECTION("rank 1 cannot read its input") {
    // Rank 1 is given a file that does not exist; rank 0 the real data.
    const std::string script = "if [ \"$OMPI_COMM_WORLD_RANK$PMI_RANK\" = 1 ]; then exec " + flt + " train " +
                               quoted(dir / "missing.xyz") + common + " --out " + quoted(dir / "run1") + "; else exec " +
                               flt + " train '" + qm9_subset() + "'" + common + " --out " + quoted(dir / "run1") + "; fi";
    const RunResult r = flt::test_support::run_program(
        "timeout", "240 '" + std::string(FLT_MPIEXEC) + "' " + launcher_flags(2) + " sh -c " + "\"" + [&] {
          std::string escaped;
          for (char c : script) {
            if (c == '"' || c == '$' || c == '\\') escaped += '\\';
            escaped += c;
          }
          return escaped;
        }() + "\"",
        dir.path());
    INFO(r.err);
    CHECK(r.status != 0);
    CHECK(r.status != 124);  // ended, not killed by the guard
    CHECK_THAT(r.err, Catch::Contains("rank 1 of 2: error"));
    CHECK_THAT(r.err, Catch::Contains("missing.xyz"));
  }
  SECTION("training from standard input is refused on several ranks (it cannot be read twice)") {
    const std::string input = std::string(FLT_SOURCE_DIR) + "/tests/data/qm9/qm9_first20_schnetpack.xyz";
    const RunResult r = run_flt(2, "train -" + common + " --out " + quoted(dir / "run3") + " < '" + input + "'",
                                dir.path());
    CHECK(r.status != 0);
    CHECK(r.status != 124);
    CHECK_THAT(r.err, Catch::Contains("standard input ('-') cannot be read under mpirun with several ranks"));
  }
  SECTION("commands other than train and predict refuse to run as several copies") {
    const RunResult r = run_flt(2, "info '" + std::string(FLT_SOURCE_DIR) + "/models/default.flt'", dir.path());
    CHECK(r.status != 0);
    CHECK(r.status != 124);
    CHECK_THAT(r.err, Catch::Contains("only train and predict run under mpirun"));
  }
  SECTION("a message limit that is not a positive count stops the job before MPI starts") {
    for (const char* bad : {"0", "-5", "4k", "3000000000"}) {
      const RunResult r = run_flt(2, "train '" + qm9_subset() + "'" + common + " --out " + quoted(dir / "run3"),
                                  dir.path(), std::string("FLT_MPI_MAX_MESSAGE_BYTES=") + bad);
      INFO(bad);
      INFO(r.err);
      CHECK(r.status != 0);
      CHECK(r.status != 124);
      CHECK_THAT(r.err, Catch::Contains("FLT_MPI_MAX_MESSAGE_BYTES must be an integer in [1, 2147483647], got '" +
                                        std::string(bad) + "'"));
    }
  }
  SECTION("rank 1 dies") {
    // Rank 1 is killed (SIGKILL) a second into training.
    const std::string script = "if [ \"$OMPI_COMM_WORLD_RANK$PMI_RANK\" = 1 ]; then (sleep 1; kill -9 $$) & fi; exec " + flt +
                               " train '" + qm9_subset() + "'" + common + " --out " + quoted(dir / "run2");
    std::string escaped;
    for (char c : script) {
      if (c == '"' || c == '$' || c == '\\') escaped += '\\';
      escaped += c;
    }
    const RunResult r = flt::test_support::run_program(
        "timeout", "240 '" + std::string(FLT_MPIEXEC) + "' " + launcher_flags(2) + " sh -c \"" + escaped + "\"",
        dir.path());
    INFO(r.err);
    CHECK(r.status != 0);
    CHECK(r.status != 124);
    CHECK_FALSE(fs::exists(dir / "run2" / "model.flt"));
#if FLT_MPIEXEC_IS_OPEN_MPI
    CHECK_THAT(r.err, Catch::Contains("rank 1"));
#endif
  }
}
