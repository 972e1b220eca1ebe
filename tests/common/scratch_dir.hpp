// Test helpers shared by every test folder: a scratch directory removed at the end of the test,
// reading a whole file, and running a program through the shell with its output captured.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace flt::test_support {

// A fresh empty directory under the system temp directory, unique per process and object
// ("flt-<tag>-<pid>-<n>"), removed with everything in it by the destructor.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag) {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("flt-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& leaf) const { return path_ / leaf; }

 private:
  std::filesystem::path path_;
};

// The whole file as bytes ("" if it cannot be opened).
inline std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

struct RunResult {
  int status = -1;  // exit status (-1: did not exit normally)
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs `env 'exe' args` through the shell (args are shell words: quote paths yourself; env is
// "NAME=value ..." or empty), with stdout and stderr captured in files in `dir`.
inline RunResult run_program(const std::string& exe, const std::string& args, const std::filesystem::path& dir,
                             const std::string& env = "") {
  const auto out = dir / "stdout.txt";
  const auto err = dir / "stderr.txt";
  const std::string cmd = env + (env.empty() ? "" : " ") + "'" + exe + "' " + args + " >'" + out.string() +
                          "' 2>'" + err.string() + "'";
  const int raw = std::system(cmd.c_str());
  RunResult r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

}  // namespace flt::test_support
