#include "flt/options_util.hpp"

#include "core/log.hpp"

namespace flt::cli {

namespace po = boost::program_options;

po::variables_map parse_arguments(const std::vector<std::string>& args,
                                  const po::options_description& visible,
                                  const char* positional_name,
                                  const po::value_semantic* positional_value, int max_positional) {
  po::options_description hidden;
  hidden.add_options()(positional_name, positional_value);
  po::options_description all;
  all.add(visible).add(hidden);
  po::positional_options_description positional;
  positional.add(positional_name, max_positional);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
  po::notify(vm);
  return vm;
}

void apply_verbosity(const po::variables_map& vm) {
  if (vm.count("verbose") != 0) {
    set_log_sink(stderr_log_sink(LogLevel::info));
  } else if (vm.count("quiet") != 0) {
    set_log_sink(stderr_log_sink(LogLevel::error));
  }
}

bool strip_common_flags(const std::vector<std::string>& raw, std::vector<std::string>& args) {
  for (const auto& a : raw) {
    if (a == "-h" || a == "--help") return true;
    if (a == "-q" || a == "--quiet") {
      set_log_sink(stderr_log_sink(LogLevel::error));
      continue;
    }
    if (a == "-v" || a == "--verbose") {
      set_log_sink(stderr_log_sink(LogLevel::info));
      continue;
    }
    args.push_back(a);
  }
  return false;
}

}  // namespace flt::cli
