// Progress of reading molecule files, drawn with io::ProgressBar: bytes of the inputs against
// their size on disk (with an ETA), or records against `record_limit` when reading stops at a
// limit, or a running count when the size is unknown (standard input).
#pragma once

#include "chem/reader.hpp"
#include "io/progress.hpp"

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace flt::pipeline {

class ReadProgressBar {
 public:
  // Silent when `output.stream` is null.
  ReadProgressBar(const io::ProgressOutput& output, std::string label, std::size_t record_limit = 0);
  void update(const chem::ReadProgress& progress);
  // Completes the line (a terminal bar gets its newline); `summary` is appended.
  void finish(std::string_view summary = {});
  // update() as a callback for chem::read_molecules / DatasetOptions::on_progress; the callback
  // refers to this object, which must outlive its use.
  std::function<void(const chem::ReadProgress&)> callback();

 private:
  std::unique_ptr<io::ProgressBar> bar_;
  std::size_t record_limit_ = 0;
  std::size_t records_ = 0;
};

}  // namespace flt::pipeline
