#include "pipeline/dataset_progress.hpp"

namespace flt::pipeline {

ReadProgressBar::ReadProgressBar(const io::ProgressOutput& output, std::string label, std::size_t record_limit)
    : record_limit_(record_limit) {
  if (output.stream == nullptr) return;
  bar_ = std::make_unique<io::ProgressBar>(*output.stream, output.terminal, std::move(label), record_limit);
  if (record_limit == 0) bar_->set_unit(io::ProgressUnit::bytes);
}

void ReadProgressBar::update(const chem::ReadProgress& progress) {
  records_ = progress.records;
  if (!bar_) return;
  if (record_limit_ > 0) {
    bar_->update(progress.records);
  } else {
    const std::string status = std::to_string(progress.records) + " records";
    bar_->set_total(static_cast<std::size_t>(progress.bytes_total));
    bar_->update(static_cast<std::size_t>(progress.bytes_read), status);
  }
}

void ReadProgressBar::finish(std::string_view summary) {
  if (!bar_) return;
  bar_->finish(summary);
  bar_.reset();
}

std::function<void(const chem::ReadProgress&)> ReadProgressBar::callback() {
  return [this](const chem::ReadProgress& p) { update(p); };
}

}  // namespace flt::pipeline
