// A text input stream over a file, decompressed when it is gzip (the bundled datasets are
// gzip-compressed; the low-layer tests read them without the chem reader): io::InputFile's stream.
#pragma once

#include "core/error.hpp"
#include "io/compressed.hpp"

#include <istream>
#include <memory>
#include <string>

namespace flt::test {

class TextInput : public std::istream {
 public:
  explicit TextInput(const std::string& path) : std::istream(nullptr) {
    try {
      file_ = std::make_unique<io::InputFile>(path);
      rdbuf(file_->stream().rdbuf());
    } catch (const IoError&) {
      setstate(std::ios::badbit);
    }
  }
  // True when the file opened.
  bool opened() const { return file_ != nullptr; }

 private:
  std::unique_ptr<io::InputFile> file_;
};

}  // namespace flt::test
