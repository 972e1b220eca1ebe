// Every flt subcommand spells its shared options the same way: -m/--model, -o/--out (also
// --output), -j/--threads, -q/--quiet, -v/--verbose, -h/--help and --config where they apply;
// older spellings still work. Progress goes to stderr as plain lines when stderr is not a
// terminal, and -q silences it.
#include "../common/scratch_dir.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using flt::test_support::RunResult;
using flt::test_support::ScratchDir;
using flt::test_support::slurp;
namespace fs = std::filesystem;

namespace {

RunResult flt_run(const std::string& args, const ScratchDir& dir) {
  return flt::test_support::run_program(FLT_EXE, args, dir.path());
}

// A path in the source tree, quoted for the shell. (Built with append(): GCC 12 warns about
// chained operator+ here, -Wrestrict false positive.)
std::string source(const std::string& relative) {
  std::string quoted = "'";
  quoted.append(FLT_SOURCE_DIR).append("/").append(relative).append("'");
  return quoted;
}

// The help of `command` (the option schema's) shows `flag` and `long_name` as one option ("-o, --out").
bool has_option(const std::string& help, const std::string& flag, const std::string& long_name) {
  if (flag.empty()) return help.find("  --" + long_name + " ") != std::string::npos;
  return help.find(flag + ", --" + long_name + " ") != std::string::npos;
}

struct Shared {
  const char* command;
  std::vector<std::pair<std::string, std::string>> options;  // short flag ("" for none), long name
};

}  // namespace

TEST_CASE("flt subcommands: the shared options have one spelling", "[programs][options]") {
  ScratchDir dir("options");
  const std::vector<Shared> table = {
      {"convert", {{"-o", "out"}, {"-q", "quiet"}, {"-v", "verbose"}, {"-h", "help"}, {"", "config"}, {"-f", "format"}}},
      {"predict",
       {{"-m", "model"}, {"-o", "out"}, {"-j", "threads"}, {"-q", "quiet"}, {"-v", "verbose"}, {"-h", "help"}, {"", "config"}, {"-f", "format"}}},
      {"eval",
       {{"-m", "model"}, {"-o", "out"}, {"-j", "threads"}, {"-q", "quiet"}, {"-v", "verbose"}, {"-h", "help"}, {"", "config"}, {"-f", "format"},
        {"-t", "targets"}}},
      {"info", {{"-m", "model"}, {"-q", "quiet"}, {"-v", "verbose"}, {"-h", "help"}, {"", "config"}}},
      {"rpe", {{"-m", "model"}, {"-o", "out"}, {"-q", "quiet"}, {"-v", "verbose"}, {"-h", "help"}, {"", "config"}}},
      {"md", {{"-m", "model"}, {"-o", "out"}, {"-j", "threads"}, {"-q", "quiet"}, {"-h", "help"}, {"", "config"}, {"-f", "format"}}},
      {"ensemble", {{"-m", "model"}, {"-o", "out"}, {"-q", "quiet"}, {"-h", "help"}, {"", "config"}}},
      {"train", {{"-o", "out"}, {"-j", "threads"}, {"", "config"}, {"-t", "targets"}, {"-f", "format"}}},
      {"seq train", {{"-o", "out"}, {"-j", "threads"}, {"", "config"}}},
      {"seq eval", {{"-m", "model"}, {"-o", "out"}, {"-j", "threads"}, {"-q", "quiet"}, {"-h", "help"}, {"", "config"}}},
      {"image train", {{"-o", "out"}, {"-j", "threads"}, {"", "config"}}},
      {"image eval", {{"-m", "model"}, {"-o", "out"}, {"-j", "threads"}, {"-q", "quiet"}, {"-h", "help"}, {"", "config"}}},
  };
  for (const auto& entry : table) {
    INFO("flt " << entry.command << " --help");
    const RunResult r = flt_run(std::string(entry.command) + " --help", dir);
    REQUIRE(r.status == 0);
    for (const auto& [flag, name] : entry.options) {
      INFO(flag << " --" << name);
      CHECK(has_option(r.out, flag, name));
    }
    // The training commands, whose libraries read the options, document -q/-v/-h in their usage
    // text; the alias of --out is named.
    if (std::string(entry.command).find("train") != std::string::npos) {
      CHECK_THAT(r.out, Catch::Contains("-q/--quiet") && Catch::Contains("-v/--verbose") && Catch::Contains("-h/--help"));
    }
    if (has_option(r.out, "-o", "out")) CHECK_THAT(r.out, Catch::Contains("--output"));
  }
}

TEST_CASE("flt subcommands: short flags and the old spellings both work", "[programs][options]") {
  ScratchDir dir("spellings");
  const std::string model = source("models/default.flt");
  const std::string qm9 = source("molecules/qm9_test_examples.xyz");

  const RunResult info = flt_run("info -m " + model, dir);
  INFO(info.err);
  CHECK(info.status == 0);
  CHECK(info.out == flt_run("info " + model, dir).out);

  const RunResult rpe = flt_run("rpe -q -m " + model + " -o '" + (dir / "rpe.csv").string() + "' --points 5", dir);
  INFO(rpe.err);
  CHECK(rpe.status == 0);
  CHECK(fs::exists(dir / "rpe.csv"));
  CHECK(rpe.err.empty());  // -q: no "wrote" line
  CHECK(flt_run("rpe -m " + model + " " + model, dir).status == 2);  // the model given twice

  // predict: -o, --out and --output are one option; -j, -m.
  for (const std::string spelling : {"-o", "--out", "--output"}) {
    const fs::path out = dir / ("pred" + std::string(spelling == "-o" ? "1" : spelling == "--out" ? "2" : "3") + ".csv");
    const RunResult r = flt_run("predict -m " + model + " -j 1 " + qm9 + " " + spelling + " '" + out.string() + "'", dir);
    INFO(spelling << ": " << r.err);
    CHECK(r.status == 0);
    CHECK(fs::exists(out));
  }
  CHECK(slurp(dir / "pred1.csv") == slurp(dir / "pred3.csv"));

  // eval: -o (metrics CSV) and the older --csv.
  const RunResult e1 = flt_run("eval -q -m " + model + " --rotations 0 " + qm9 + " -o '" + (dir / "m1.csv").string() + "'", dir);
  const RunResult e2 = flt_run("eval -q -m " + model + " --rotations 0 " + qm9 + " --csv '" + (dir / "m2.csv").string() + "'", dir);
  INFO(e1.err << e2.err);
  CHECK(e1.status == 0);
  CHECK(e2.status == 0);
  CHECK(slurp(dir / "m1.csv") == slurp(dir / "m2.csv"));

  // --config for predict: options from a file, the command line overriding.
  {
    std::ofstream config(dir / "predict.ini");
    config << "# flt predict options\nmodel = " << std::string(FLT_SOURCE_DIR) << "/models/default.flt\ninput = "
           << std::string(FLT_SOURCE_DIR) << "/molecules/qm9_test_examples.xyz\nthreads = 1\nout = " << (dir / "ignored.csv").string()
           << "\n";
  }
  const RunResult c = flt_run("predict --config '" + (dir / "predict.ini").string() + "' -o '" + (dir / "pred4.csv").string() + "'", dir);
  INFO(c.err);
  CHECK(c.status == 0);
  CHECK(slurp(dir / "pred4.csv") == slurp(dir / "pred1.csv"));
  CHECK_FALSE(fs::exists(dir / "ignored.csv"));
  CHECK(flt_run("predict --config '" + (dir / "missing.ini").string() + "'", dir).status == 1);
  {
    std::ofstream bad(dir / "bad.ini");
    bad << "threads = 1\nnonsense = 2\n";
  }
  const RunResult bad = flt_run("predict --config '" + (dir / "bad.ini").string() + "' " + qm9, dir);
  CHECK(bad.status == 2);
  CHECK_THAT(bad.err, Catch::Contains("bad.ini:2: unknown option 'nonsense'"));

  // train: -o, -j, -t, -f with --split-only (reads the data, writes the split and stops).
  const RunResult t = flt_run("train " + qm9 + " -f qm9 -t U0 -j 1 --split 3,1,rest -o '" + (dir / "run").string() + "' --split-only", dir);
  INFO(t.err);
  CHECK(t.status == 0);
  CHECK(fs::exists(dir / "run" / "split.csv"));
  const RunResult t2 = flt_run("train " + qm9 + " --targets U0 --split 3,1,rest --output '" + (dir / "run2").string() + "' --split-only", dir);
  CHECK(t2.status == 0);
  CHECK(slurp(dir / "run" / "split.csv") == slurp(dir / "run2" / "split.csv"));
  CHECK(flt_run("train " + qm9 + " -x", dir).status == 2);
}

TEST_CASE("flt subcommands: every one reads --config FILE with the same INI syntax", "[programs][options]") {
  ScratchDir dir("config");
  const std::string model = source("models/default.flt");
  const std::string qm9 = source("molecules/qm9_test_examples.xyz");
  const std::string model_path = std::string(FLT_SOURCE_DIR) + "/models/default.flt";
  const std::string qm9_path = std::string(FLT_SOURCE_DIR) + "/molecules/qm9_test_examples.xyz";
  const auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return "--config '" + (dir / name).string() + "'";
  };

  // An unknown key: every subcommand names the file, the line and the key (exit status 2).
  const std::string bad = write("bad.ini", "# options\n\nnonsense = 2\n");
  for (const std::string command : {"convert", "predict", "eval", "info", "rpe", "md", "ensemble", "seq eval", "image eval",
                                    "train", "seq train", "image train"}) {
    const RunResult r = flt_run(command + " " + bad, dir);
    INFO("flt " << command << ": " << r.err);
    CHECK(r.status == 2);
    CHECK_THAT(r.err, Catch::Contains("bad.ini:3: unknown option 'nonsense'"));
  }
  // A bad value names the file, line and option; a repeated single value is refused.
  const RunResult typed = flt_run("eval " + write("typed.ini", "rotations = many\n") + " " + qm9, dir);
  CHECK(typed.status == 2);
  CHECK_THAT(typed.err, Catch::Contains("typed.ini:1: option 'rotations'") && Catch::Contains("expected an integer"));
  const RunResult twice = flt_run("rpe " + write("twice.ini", "points = 5\npoints = 6\n") + " " + model, dir);
  CHECK(twice.status == 2);
  CHECK_THAT(twice.err, Catch::Contains("twice.ini:2: option 'points' repeated"));

  // eval: a list option repeated in the file appends (an ensemble of two), as -m twice does.
  const RunResult e1 = flt_run("eval -q -m " + model + " -m " + model + " --rotations 0 " + qm9 + " -o '" + (dir / "m1.csv").string() + "'", dir);
  const RunResult e2 = flt_run("eval -q " +
                                   write("eval.ini", "model = " + model_path + "\nmodel = " + model_path + "\ninput = " + qm9_path +
                                                         "\nrotations = 0\nout = " + (dir / "m2.csv").string() + "\n"),
                               dir);
  INFO(e1.err << e2.err);
  CHECK(e1.status == 0);
  CHECK(e2.status == 0);
  CHECK(slurp(dir / "m1.csv") == slurp(dir / "m2.csv"));
  CHECK(e1.out == e2.out);
  CHECK_THAT(e1.out, Catch::Contains("an ensemble of 4 models"));  // default.flt holds two

  // convert and info: options and inputs from the file; the command line overrides it.
  const RunResult c1 = flt_run("convert -q " + qm9 + " --stats", dir);
  const RunResult c2 = flt_run("convert -q " + write("convert.ini", "inputs = " + qm9_path + "\nstats = true\n"), dir);
  CHECK(c1.status == 0);
  CHECK(c2.status == 0);
  CHECK(c1.out == c2.out);
  const std::string no_stats = write("convert2.ini", "inputs = " + qm9_path + "\nstats = false\n");
  CHECK(flt_run("convert -q " + no_stats + " --stats", dir).out == c1.out);
  CHECK(flt_run("convert -q " + no_stats, dir).status == 2);  // neither -o nor --stats
  const RunResult i1 = flt_run("info " + write("info.ini", "model = " + model_path + "\n"), dir);
  CHECK(i1.status == 0);
  CHECK(i1.out == flt_run("info " + model, dir).out);
}

TEST_CASE("flt subcommands: plain progress lines on stderr, none with -q, never on stdout", "[programs][progress]") {
  ScratchDir dir("progress");
  const std::string model = source("models/default.flt");
  const std::string qm9 = source("molecules/qm9_test_examples.xyz");
  struct Case {
    std::string args, label;
  };
  const std::vector<Case> cases = {
      {"predict -m " + model + " " + qm9 + " -o '" + (dir / "p.csv").string() + "'", "predicting 100% "},
      {"convert " + qm9 + " -o '" + (dir / "c.sdf").string() + "'", "converting 100% "},
      {"convert " + qm9 + " --stats", "reading 100% "},
      {"eval -m " + model + " --rotations 2 " + qm9, "evaluating (with rotations) 100% 5/5"},
      {"train " + qm9 + " -t U0 --split 3,1,rest -o '" + (dir / "run").string() + "' --split-only --overwrite", "reading 100% "},
  };
  for (const auto& c : cases) {
    INFO("flt " << c.args);
    const RunResult loud = flt_run(c.args, dir);
    INFO(loud.err);
    REQUIRE(loud.status == 0);
    CHECK_THAT(loud.err, Catch::Contains(c.label) && !Catch::Contains("\r"));
    CHECK_THAT(loud.out, !Catch::Contains(c.label));
    const RunResult quiet = flt_run(c.args + " -q", dir);
    REQUIRE(quiet.status == 0);
    CHECK_THAT(quiet.err, !Catch::Contains(c.label.substr(0, c.label.find(' '))));
    CHECK(quiet.out == loud.out);
  }
}
