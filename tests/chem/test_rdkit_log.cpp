// RDKit's process-wide loggers belong to the program: flt captures the messages of its own RDKit
// calls and leaves the program's destinations and tees as they were, also for messages other
// threads log meanwhile.
#include "chem_test_util.hpp"

#include "chem/rdkit_log.hpp"
#include "core/log.hpp"

#include <GraphMol/ROMol.h>
#include <GraphMol/SmilesParse/SmilesParse.h>
#include <RDGeneral/RDLog.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

using namespace flt::chem;

namespace {

// A program's own RDKit error log: its destination and a tee, restored at the end.
struct ProgramErrorLog {
  std::ostringstream dest, tee;
  std::ostream* saved_dest = nullptr;
  bool saved_owner = false;
  ProgramErrorLog() {
    if (!rdErrorLog) RDLog::InitLogs();
    rdErrorLog->ClearTee();
    saved_dest = rdErrorLog->dp_dest;
    saved_owner = rdErrorLog->df_owner;
    rdErrorLog->dp_dest = &dest;
    rdErrorLog->df_owner = false;
    rdErrorLog->SetTee(tee);
  }
  ~ProgramErrorLog() {
    rdErrorLog->ClearTee();
    rdErrorLog->dp_dest = saved_dest;
    rdErrorLog->df_owner = saved_owner;
  }
};

void parse_bad_smiles(const std::string& smiles) {
  std::unique_ptr<RDKit::RWMol> mol(RDKit::SmilesToMol(smiles));
  CHECK_FALSE(mol);
}

}  // namespace

TEST_CASE("RDKit logs: flt captures its own calls and leaves the program's loggers alone", "[chem][rdkit_log]") {
  ProgramErrorLog program;
  std::vector<std::string> flt_log;
  const flt::LogSink previous = flt::set_log_sink(
      [&](flt::LogLevel, std::string_view message) { flt_log.emplace_back(message); });

  parse_bad_smiles("C1CCC");
  CHECK_THAT(program.tee.str(), Catch::Contains("C1CCC"));

  // An SDF record RDKit refuses (a 5-valent carbon): flt's error names RDKit's reason, which
  // reaches neither the program's streams nor flt's log as a separate message.
  const std::filesystem::path sdf = std::filesystem::temp_directory_path() / "flt_rdkit_log_test.sdf";
  {
    std::ofstream out(sdf);
    out << "pentavalent\n  test\n\n  6  5  0  0  0  0  0  0  0  0999 V2000\n"
           "    0.0000    0.0000    0.0000 C   0  0\n"
           "    1.0900    0.0000    0.0000 H   0  0\n"
           "   -0.3600    1.0300    0.0000 H   0  0\n"
           "   -0.3600   -0.5100    0.8900 H   0  0\n"
           "   -0.3600   -0.5100   -0.8900 H   0  0\n"
           "    0.0000    0.0000    1.5000 H   0  0\n"
           "  1  2  1  0\n  1  3  1  0\n  1  4  1  0\n  1  5  1  0\n  1  6  1  0\nM  END\n$$$$\n";
  }
  const std::string tee_before = program.tee.str();
  const ReadSummary summary = read_molecules({sdf.string()}, ReadOptions{}, ErrorPolicy::skip, [](PointSet&&) {});
  REQUIRE(summary.skipped.size() == 1);
  CHECK_THAT(summary.skipped[0].reason, Catch::Contains("valence"));
  CHECK(program.tee.str() == tee_before);
  std::filesystem::remove(sdf);

  // Restored after flt's calls: the program's destination and tee get its messages again.
  CHECK(rdErrorLog->dp_dest == &program.dest);
  CHECK(rdErrorLog->teestream != nullptr);
  parse_bad_smiles("C1CCCC");
  CHECK_THAT(program.tee.str(), Catch::Contains("C1CCCC"));
  CHECK_THAT(program.dest.str(), Catch::Contains("C1CCCC"));

  // While flt captures on this thread, another thread's messages still go to the program's tee.
  std::vector<detail::RdkitMessage> captured;
  {
    detail::RdkitLogCapture capture(captured);
    std::thread other([] { parse_bad_smiles("c1cccc"); });
    other.join();
    parse_bad_smiles("N1NN");
  }
  CHECK_THAT(program.tee.str(), Catch::Contains("c1cccc"));
  CHECK_THAT(program.tee.str(), !Catch::Contains("N1NN"));
  REQUIRE_FALSE(captured.empty());
  bool found = false;
  for (const auto& m : captured) {
    found = found || m.text.find("N1NN") != std::string::npos;
    CHECK(m.text.find("c1cccc") == std::string::npos);
  }
  CHECK(found);
  for (const auto& line : flt_log) CHECK(line.find("RDKit") == std::string::npos);
  flt::set_log_sink(previous);
}
