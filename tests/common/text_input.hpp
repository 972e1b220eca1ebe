// A text input stream over a file, decompressed when its name ends in .gz (the bundled datasets
// are gzip-compressed; the low-layer tests read them without the chem reader).
#pragma once

#include <boost/iostreams/filter/gzip.hpp>
#include <boost/iostreams/filtering_stream.hpp>

#include <fstream>
#include <string>

namespace flt::test {

class TextInput : public boost::iostreams::filtering_istream {
 public:
  explicit TextInput(const std::string& path) : file_(path, std::ios::binary) {
    if (path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0) {
      push(boost::iostreams::gzip_decompressor());
    }
    push(file_);
  }
  // True when the file opened (the filter chain itself reports errors only on reading).
  bool opened() const { return file_.is_open(); }

 private:
  std::ifstream file_;
};

}  // namespace flt::test
