// Helpers shared by the scaling benchmarks (bench_flt, bench_block): wall-clock timing, peak and
// current RSS, one child process per configuration (so peak RSS is per configuration and a run
// past its time limit is killed and reported as not run) that reports one "RESULT key=value ..."
// line on stdout, machine facts for the report header (CPU, memory, load average) and writing the
// Markdown report atomically. Header-only, for tools/bench.
#pragma once

#include "core/error.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace flt_bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Peak resident set size of this process so far (getrusage ru_maxrss), MiB.
inline double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// Current resident set size (VmRSS of /proc/self/status), MiB; 0 when unavailable.
inline double current_rss_mib() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      double kib = 0;
      in >> kib;
      return kib / 1024.0;
    }
    in.ignore(1 << 16, '\n');
  }
  return 0.0;
}

// CPU time of this process (all threads, user + system), seconds. On a time-shared machine it
// grows only while the process runs, so it is far less inflated by other load than wall time.
inline double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct PairTiming {
  double forward = 0.0, backward = 0.0;          // wall seconds of the fastest repetition
  int reps = 0;
  double cpu_forward = 0.0, cpu_backward = 0.0;  // process CPU seconds of the repetition with
                                                 // the least CPU time (chosen independently)
};

// Runs fwd() then bwd(); repeats (keeping the fastest repetition by fwd + bwd) up to max_reps
// times while the total stays within budget_s; at least min_reps repetitions.
template <class F, class B>
PairTiming time_pair(F&& fwd, B&& bwd, int max_reps = 20, double budget_s = 1.5, int min_reps = 1) {
  PairTiming best;
  const auto start = Clock::now();
  for (int rep = 0; rep < max_reps; ++rep) {
    auto t0 = Clock::now();
    double c0 = cpu_seconds();
    fwd();
    const double tf = seconds_since(t0), cf = cpu_seconds() - c0;
    t0 = Clock::now();
    c0 = cpu_seconds();
    bwd();
    const double tb = seconds_since(t0), cb = cpu_seconds() - c0;
    if (rep == 0 || tf + tb < best.forward + best.backward) {
      best.forward = tf;
      best.backward = tb;
    }
    if (rep == 0 || cf + cb < best.cpu_forward + best.cpu_backward) {
      best.cpu_forward = cf;
      best.cpu_backward = cb;
    }
    best.reps = rep + 1;
    if (rep + 1 >= min_reps && seconds_since(start) > budget_s) break;
  }
  return best;
}

using ResultFields = std::map<std::string, std::string>;

// The key=value fields of the first "RESULT ..." line in `text` (empty when there is none).
inline ResultFields parse_result_line(const std::string& text) {
  ResultFields kv;
  const auto pos = text.find("RESULT ");
  if (pos == std::string::npos) return kv;
  std::istringstream line(text.substr(pos + 7, text.find('\n', pos) - pos - 7));
  std::string item;
  while (line >> item) {
    const auto eq = item.find('=');
    if (eq != std::string::npos) kv[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return kv;
}

// Spawns this executable with `args` (stdout piped back, stderr inherited), waits at most
// timeout_s (then SIGKILL); returns the fields of its RESULT line, or nullopt with `why` when the
// child could not start, was killed, failed or printed no RESULT line.
inline std::optional<ResultFields> run_child(const std::vector<std::string>& args, double timeout_s,
                                             std::string& why) {
  int fds[2];
  if (pipe(fds) != 0) throw flt::Error("benchmark: pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  std::vector<std::string> argv_s = {"/proc/self/exe"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  const int rc = posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    why = "spawn failed";
    return std::nullopt;
  }
  // Read while waiting (the output is one line, but never let a full pipe block the child).
  std::string output;
  const auto t0 = Clock::now();
  int status = 0;
  bool done = false, killed = false;
  while (!done) {
    char buffer[4096];
    fd_set set;
    FD_ZERO(&set);
    FD_SET(fds[0], &set);
    timeval tv{0, 100000};
    if (select(fds[0] + 1, &set, nullptr, nullptr, &tv) > 0) {
      const ssize_t n = read(fds[0], buffer, sizeof buffer);
      if (n > 0) output.append(buffer, static_cast<std::size_t>(n));
    }
    const pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) done = true;
    if (!done && seconds_since(t0) > timeout_s) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      killed = true;
      done = true;
    }
  }
  char buffer[4096];
  ssize_t n = 0;
  while ((n = read(fds[0], buffer, sizeof buffer)) > 0) output.append(buffer, static_cast<std::size_t>(n));
  close(fds[0]);
  if (killed) {
    std::ostringstream s;
    s << "not run to completion: killed after the " << timeout_s << " s limit";
    why = s.str();
    return std::nullopt;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    why = "child failed (status " + std::to_string(status) + ")";
    return std::nullopt;
  }
  auto kv = parse_result_line(output);
  if (kv.empty()) {
    why = "no RESULT line";
    return std::nullopt;
  }
  return kv;
}

// Caps this process's address space (RLIMIT_AS) at `gib` GiB, so that a run that would outgrow
// the machine fails with std::bad_alloc in its own process instead of waking the OOM killer.
inline void limit_address_space_gib(double gib) {
  rlimit limit{};
  limit.rlim_cur = limit.rlim_max = static_cast<rlim_t>(gib * 1024.0 * 1024.0 * 1024.0);
  if (setrlimit(RLIMIT_AS, &limit) != 0) throw flt::Error("benchmark: setrlimit(RLIMIT_AS) failed");
}

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// A field of /proc/meminfo in GiB (MemTotal, MemAvailable, ...); 0 when absent.
inline double meminfo_gib(const std::string& field) {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  double kib = 0;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == field + ":") return kib / 1024.0 / 1024.0;
  }
  return 0.0;
}

inline std::string fmt(double v, int precision = 3) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(precision) << v;
  return s.str();
}

inline std::string memory_total() { return fmt(meminfo_gib("MemTotal"), 1) + " GiB"; }

// 1000 -> "1e3", 300000 -> "3e5".
inline std::string sci(long long L) {
  const int e = static_cast<int>(std::lround(std::log10(static_cast<double>(L))));
  const double mant = static_cast<double>(L) / std::pow(10.0, e);
  if (std::abs(mant - 1.0) < 1e-9) return "1e" + std::to_string(e);
  return fmt(mant, 0) + "e" + std::to_string(e);
}

// "1-min / 5-min / 15-min" load averages.
inline std::string load_average() {
  std::ifstream in("/proc/loadavg");
  double one = 0, five = 0, fifteen = 0;
  in >> one >> five >> fifteen;
  return fmt(one, 2) + " / " + fmt(five, 2) + " / " + fmt(fifteen, 2);
}

inline std::string utc_date(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&tt));
  return date;
}

// Writes `text` to `path` through a temporary file and a rename (stdout when path is empty).
inline void write_report(const std::string& path, const std::string& text, const std::string& tag) {
  if (path.empty()) {
    std::cout << text;
    return;
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out) throw flt::IoError(tmp, "cannot open for writing");
    out << text;
    if (!out) throw flt::IoError(tmp, "write failed");
  }
  std::filesystem::rename(tmp, path);
  std::cerr << "[" << tag << "] wrote " << path << "\n";
}

}  // namespace flt_bench
