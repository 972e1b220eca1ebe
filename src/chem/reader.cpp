// MoleculeReader: walks the inputs (files, .gz files, directories, tar archives, standard input)
// and hands each stream to the record parser of its format.
#include "chem/reader.hpp"

#include "chem/record_parsers.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

#include <boost/iostreams/filter/bzip2.hpp>
#include <boost/iostreams/filter/gzip.hpp>
#include <boost/iostreams/filtering_stream.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <streambuf>

namespace flt::chem {
namespace {

namespace fs = std::filesystem;
namespace bio = boost::iostreams;

constexpr std::size_t kFileBuffer = 1 << 16;

bool has_suffix(const std::string& text, std::string_view suffix) {
  if (text.size() < suffix.size()) return false;
  for (std::size_t i = 0; i < suffix.size(); ++i) {
    const char a = static_cast<char>(std::tolower(static_cast<unsigned char>(
        text[text.size() - suffix.size() + i])));
    if (a != suffix[i]) return false;
  }
  return true;
}

// One readable stream (a file, an archive member, stdin) with its name and format.
struct Source {
  std::string name;
  std::istream* stream = nullptr;
  Format format = Format::unknown;
};

// An input (file, directory, archive, stream) yields its sources one after the other; a source
// stays valid until the next call.
class Input {
 public:
  virtual ~Input() = default;
  virtual std::optional<Source> next_source() = 0;
  // Bytes of the input's file(s) consumed so far (0 for streams).
  virtual std::uint64_t bytes_read() const { return 0; }
};

// Position of the next byte a file buffer hands out (what was read from disk minus what is still
// buffered), without moving it; 0 if unknown.
std::uint64_t buffer_position(std::filebuf* buffer) {
  const auto pos = buffer->pubseekoff(0, std::ios_base::cur, std::ios_base::in);
  return pos < 0 ? 0 : static_cast<std::uint64_t>(pos);
}

// Total size of the molecule files an input path stands for; nullopt for standard input.
std::optional<std::uint64_t> input_size(const std::string& path, const ReadOptions& options);

// A file, decompressed when its name ends in .gz; keeps the file and filter chain alive.
class OpenFile {
 public:
  explicit OpenFile(const std::string& path) : buffer_(kFileBuffer) {
    file_.rdbuf()->pubsetbuf(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
    file_.open(path, std::ios::binary);
    if (!file_) throw IoError(path, std::string("cannot open: ") + std::strerror(errno));
    if (has_suffix(path, ".gz")) {
      filter_.push(bio::gzip_decompressor());
      filter_.push(file_);
      stream_ = &filter_;
    } else {
      stream_ = &file_;
    }
  }
  std::istream& stream() { return *stream_; }
  std::uint64_t bytes_read() { return buffer_position(file_.rdbuf()); }

 private:
  std::vector<char> buffer_;
  std::ifstream file_;
  bio::filtering_istream filter_;
  std::istream* stream_ = nullptr;
};

Format resolve_format(const std::string& name, const ReadOptions& options) {
  if (options.format != Format::unknown) return options.format;
  return format_from_path(name);
}

class FileInput final : public Input {
 public:
  FileInput(std::string path, const ReadOptions& options)
      : path_(std::move(path)), format_(resolve_format(path_, options)) {
    if (format_ == Format::unknown) {
      throw InvalidArgument(path_ + ": cannot tell the format from the file name; give it "
                                    "explicitly (sdf, mol, xyz, extxyz, qm9, pdb, csv)");
    }
    file_ = std::make_unique<OpenFile>(path_);
  }
  std::optional<Source> next_source() override {
    if (done_) return std::nullopt;
    done_ = true;
    return Source{path_, &file_->stream(), format_};
  }
  std::uint64_t bytes_read() const override { return file_->bytes_read(); }

 private:
  std::string path_;
  Format format_;
  std::unique_ptr<OpenFile> file_;
  bool done_ = false;
};

class StreamInput final : public Input {
 public:
  StreamInput(std::istream& in, std::string name, Format format)
      : in_(in), name_(std::move(name)), format_(format) {}
  std::optional<Source> next_source() override {
    if (done_) return std::nullopt;
    done_ = true;
    return Source{name_, &in_, format_};
  }

 private:
  std::istream& in_;
  std::string name_;
  Format format_;
  bool done_ = false;
};

class DirectoryInput final : public Input {
 public:
  DirectoryInput(const std::string& path, const ReadOptions& options)
      : options_(options), files_(molecule_files(path, options, true)) {
    if (files_.empty()) log_warning(path, ": the directory holds no molecule files");
  }
  // The molecule files of a directory, sorted by name (not recursive; hidden files and files that
  // are not molecule files by their name left out).
  static std::vector<std::string> molecule_files(const std::string& path, const ReadOptions& options, bool log) {
    std::vector<std::string> files;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.empty() || name[0] == '.') continue;
      std::error_code ec2;
      if (!entry.is_regular_file(ec2)) continue;
      const Format f = resolve_format(name, options);
      if (f == Format::unknown || f == Format::csv) {
        if (log) log_debug(path, ": skipping ", name, " (not a molecule file by its name)");
        continue;
      }
      files.push_back(entry.path().string());
    }
    if (ec) throw IoError(path, "cannot list the directory: " + ec.message());
    std::sort(files.begin(), files.end());
    return files;
  }
  std::optional<Source> next_source() override {
    file_.reset();
    if (next_ == files_.size()) return std::nullopt;
    const std::string& path = files_[next_++];
    if (next_ > 1) {
      std::error_code ec;
      const auto size = fs::file_size(files_[next_ - 2], ec);
      if (!ec) finished_bytes_ += size;
    }
    file_ = std::make_unique<OpenFile>(path);
    return Source{path, &file_->stream(), resolve_format(path, options_)};
  }
  std::uint64_t bytes_read() const override { return finished_bytes_ + (file_ ? file_->bytes_read() : 0); }

 private:
  ReadOptions options_;
  std::vector<std::string> files_;
  std::size_t next_ = 0;
  std::unique_ptr<OpenFile> file_;
  std::uint64_t finished_bytes_ = 0;
};

// Reads at most `size` bytes of an upstream stream: one tar member.
class BoundedBuf final : public std::streambuf {
 public:
  BoundedBuf(std::istream& up, std::uint64_t size) : up_(up), remaining_(size), buffer_(1 << 15) {}
  std::uint64_t remaining() const noexcept { return remaining_; }
  bool truncated() const noexcept { return truncated_; }

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    if (remaining_ == 0) return traits_type::eof();
    const auto want = static_cast<std::streamsize>(
        std::min<std::uint64_t>(remaining_, buffer_.size()));
    up_.read(buffer_.data(), want);
    const std::streamsize got = up_.gcount();
    if (got <= 0) {
      truncated_ = true;
      remaining_ = 0;
      return traits_type::eof();
    }
    remaining_ -= static_cast<std::uint64_t>(got);
    setg(buffer_.data(), buffer_.data(), buffer_.data() + got);
    return traits_type::to_int_type(*gptr());
  }

 private:
  std::istream& up_;
  std::uint64_t remaining_;
  std::vector<char> buffer_;
  bool truncated_ = false;
};

// POSIX ustar / GNU tar archive, optionally bzip2- or gzip-compressed, read member by member
// without extracting (so memory does not grow with the archive).
class TarInput final : public Input {
 public:
  TarInput(std::string path, const ReadOptions& options)
      : path_(std::move(path)), options_(options), buffer_(kFileBuffer) {
    file_.rdbuf()->pubsetbuf(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
    file_.open(path_, std::ios::binary);
    if (!file_) throw IoError(path_, std::string("cannot open: ") + std::strerror(errno));
    if (has_suffix(path_, ".bz2") || has_suffix(path_, ".tbz")) {
      in_.push(bio::bzip2_decompressor());
    } else if (has_suffix(path_, ".gz") || has_suffix(path_, ".tgz")) {
      in_.push(bio::gzip_decompressor());
    }
    in_.push(file_);
  }

  std::optional<Source> next_source() override {
    if (member_) {
      if (member_buf_->truncated()) throw IoError(path_, "archive ends inside " + member_name_);
      skip(member_buf_->remaining() + padding_);
      member_.reset();
      member_buf_.reset();
    }
    std::string long_name;
    for (;;) {
      std::array<char, 512> header{};
      in_.read(header.data(), 512);
      if (in_.gcount() == 0) return std::nullopt;
      if (in_.gcount() != 512) throw IoError(path_, "truncated tar header");
      if (std::all_of(header.begin(), header.end(), [](char c) { return c == 0; })) {
        return std::nullopt;  // end-of-archive block
      }
      if (!checksum_ok(header)) {
        throw IoError(path_, "not a tar archive (bad header checksum at member " +
                                 std::to_string(members_ + 1) + ")");
      }
      ++members_;
      const std::uint64_t size = parse_size(header);
      const char type = header[156];
      std::string name = long_name.empty() ? header_name(header) : long_name;
      long_name.clear();
      padding_ = (512 - size % 512) % 512;
      if (type == 'L' || type == 'x') {
        if (size > (1u << 20)) throw IoError(path_, "oversized tar extended header");
        std::string data(size, '\0');
        in_.read(data.data(), static_cast<std::streamsize>(size));
        if (static_cast<std::uint64_t>(in_.gcount()) != size) {
          throw IoError(path_, "truncated tar extended header");
        }
        skip(padding_);
        if (type == 'L') {
          long_name = data.substr(0, data.find('\0'));
        } else {
          long_name = pax_path(data);
        }
        continue;
      }
      const bool regular = type == '0' || type == '\0' || type == '7';
      const std::string base = name.substr(name.find_last_of('/') + 1);
      const Format format = regular ? resolve_format(name, options_) : Format::unknown;
      if (!regular || base.empty() || base[0] == '.' || format == Format::unknown ||
          format == Format::csv || has_suffix(name, ".gz")) {
        if (regular) log_debug(path_, ": skipping member ", name);
        skip(size + padding_);
        continue;
      }
      member_name_ = name;
      member_buf_ = std::make_unique<BoundedBuf>(in_, size);
      member_ = std::make_unique<std::istream>(member_buf_.get());
      return Source{path_ + ":" + name, member_.get(), format};
    }
  }
  std::uint64_t bytes_read() const override { return buffer_position(file_.rdbuf()); }

 private:
  static bool checksum_ok(const std::array<char, 512>& h) {
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < 512; ++i) {
      sum += (i >= 148 && i < 156) ? 32u : static_cast<unsigned char>(h[i]);
    }
    std::uint64_t stored = 0;
    bool any = false;
    for (std::size_t i = 148; i < 156; ++i) {
      const char c = h[i];
      if (c >= '0' && c <= '7') {
        stored = stored * 8 + static_cast<std::uint64_t>(c - '0');
        any = true;
      } else if (any) {
        break;
      }
    }
    return any && stored == sum;
  }
  std::uint64_t parse_size(const std::array<char, 512>& h) const {
    if (static_cast<unsigned char>(h[124]) & 0x80) {  // GNU base-256 for sizes >= 8 GiB
      std::uint64_t v = 0;
      for (std::size_t i = 125; i < 136; ++i) v = (v << 8) | static_cast<unsigned char>(h[i]);
      return v;
    }
    std::uint64_t v = 0;
    for (std::size_t i = 124; i < 136; ++i) {
      const char c = h[i];
      if (c >= '0' && c <= '7') {
        v = v * 8 + static_cast<std::uint64_t>(c - '0');
      } else if (c != ' ' && c != '\0') {
        throw IoError(path_, "bad size field in tar member " + std::to_string(members_));
      }
    }
    return v;
  }
  static std::string field(const std::array<char, 512>& h, std::size_t offset, std::size_t len) {
    const char* begin = h.data() + offset;
    return std::string(begin, strnlen(begin, len));
  }
  static std::string header_name(const std::array<char, 512>& h) {
    std::string name = field(h, 0, 100);
    if (std::memcmp(h.data() + 257, "ustar", 5) == 0) {
      const std::string prefix = field(h, 345, 155);
      if (!prefix.empty()) name = prefix + "/" + name;
    }
    return name;
  }
  static std::string pax_path(const std::string& data) {
    // Records "<len> key=value\n".
    std::size_t pos = 0;
    while (pos < data.size()) {
      const auto space = data.find(' ', pos);
      if (space == std::string::npos) break;
      std::size_t len = 0;
      for (std::size_t i = pos; i < space; ++i) {
        if (data[i] < '0' || data[i] > '9') return {};
        len = len * 10 + static_cast<std::size_t>(data[i] - '0');
      }
      if (len == 0 || pos + len > data.size()) break;
      const std::string record = data.substr(space + 1, pos + len - space - 2);
      if (record.rfind("path=", 0) == 0) return record.substr(5);
      pos += len;
    }
    return {};
  }
  void skip(std::uint64_t n) {
    while (n > 0) {
      const auto chunk = static_cast<std::streamsize>(std::min<std::uint64_t>(n, 1u << 30));
      in_.ignore(chunk);
      if (in_.gcount() != chunk) throw IoError(path_, "truncated tar archive");
      n -= static_cast<std::uint64_t>(chunk);
    }
  }

  std::string path_;
  ReadOptions options_;
  std::vector<char> buffer_;
  std::ifstream file_;
  bio::filtering_istream in_;
  std::unique_ptr<BoundedBuf> member_buf_;
  std::unique_ptr<std::istream> member_;
  std::string member_name_;
  std::uint64_t padding_ = 0;
  std::size_t members_ = 0;
};

}  // namespace

class MoleculeReader::Impl {
 public:
  Impl(std::vector<std::string> inputs, ReadOptions options)
      : inputs_(std::move(inputs)), options_(options) {}
  Impl(std::istream& stream, std::string name, ReadOptions options) : options_(options) {
    input_ = std::make_unique<StreamInput>(stream, std::move(name), options.format);
  }

  std::optional<PointSet> next() {
    for (;;) {
      if (parser_) {
        try {
          auto points = parser_->next();
          if (points) {
            ++seen_;
            return points;
          }
        } catch (const InputError& e) {
          if (e.record() != 0) ++seen_;
          last_rejected_ = parser_->rejected();
          if (last_rejected_.partial.record != e.record()) last_rejected_ = RejectedRecord{};
          last_rejected_.partial.source = e.file();
          last_rejected_.partial.record = e.record();
          if (source_.stream != nullptr && source_.stream->bad()) drop_source();
          throw;
        } catch (const IoError&) {
          drop_source();
          throw;
        } catch (const Error& e) {
          const std::string name = source_.name;
          drop_source();
          throw IoError(name, e.what());
        } catch (const std::exception& e) {
          // Decompression errors (boost::iostreams) and stream failures.
          const std::string name = source_.name;
          drop_source();
          throw IoError(name, std::string("read error: ") + e.what());
        }
        const bool bad = source_.stream != nullptr && source_.stream->bad();
        const std::string name = source_.name;
        drop_source();
        if (bad) throw IoError(name, "read error (corrupt or truncated data?)");
      }
      if (input_) {
        std::optional<Source> source;
        try {
          source = input_->next_source();
        } catch (...) {
          input_.reset();
          throw;
        }
        if (source) {
          source_ = *source;
          parser_ = make_parser(source_);
          continue;
        }
        finish_input();
      }
      if (next_input_ == inputs_.size()) return std::nullopt;
      input_ = open_input(inputs_[next_input_++]);
    }
  }

  std::size_t seen() const noexcept { return seen_; }
  const RejectedRecord& last_rejected() const noexcept { return last_rejected_; }

  ReadProgress progress() {
    if (!total_) {
      // Measured once, on first use: only callers that draw progress pay for it.
      std::uint64_t total = 0;
      bool known = !inputs_.empty();
      for (const auto& path : inputs_) {
        const auto size = input_size(path, options_);
        if (!size) known = false;
        else total += *size;
      }
      total_ = known ? total : 0;
    }
    ReadProgress p;
    p.bytes_total = *total_;
    p.bytes_read = finished_bytes_ + (input_ ? input_->bytes_read() : 0);
    if (p.bytes_total > 0) p.bytes_read = std::min(p.bytes_read, p.bytes_total);
    p.records = seen_;
    return p;
  }

 private:
  void drop_source() {
    parser_.reset();
    source_ = Source{};
  }
  void finish_input() {
    if (input_ && next_input_ > 0) {
      // Count the whole input as read (its size, not the position: a reader may stop early).
      const auto size = input_size(inputs_[next_input_ - 1], options_);
      finished_bytes_ += size ? *size : input_->bytes_read();
    }
    input_.reset();
  }

  std::unique_ptr<detail::RecordParser> make_parser(const Source& source) const {
    switch (source.format) {
      case Format::sdf: return detail::make_sdf_parser(*source.stream, source.name, options_);
      case Format::xyz:
      case Format::extxyz:
      case Format::qm9:
        return detail::make_xyz_parser(*source.stream, source.name, source.format, options_);
      case Format::pdb: return detail::make_pdb_parser(*source.stream, source.name, options_);
      case Format::csv: return detail::make_smiles_parser(*source.stream, source.name, options_);
      case Format::unknown: break;
    }
    throw InvalidArgument(source.name + ": unknown format");
  }

  std::unique_ptr<Input> open_input(const std::string& path) const {
    if (path == "-") {
      if (options_.format == Format::unknown) {
        throw InvalidArgument("standard input: give the format explicitly (e.g. --format sdf)");
      }
      return std::make_unique<StreamInput>(std::cin, "-", options_.format);
    }
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (ec || !fs::exists(status)) throw IoError(path, "no such file or directory");
    if (fs::is_directory(status)) return std::make_unique<DirectoryInput>(path, options_);
    if (is_tar_archive(path)) return std::make_unique<TarInput>(path, options_);
    return std::make_unique<FileInput>(path, options_);
  }

  std::vector<std::string> inputs_;
  std::size_t next_input_ = 0;
  ReadOptions options_;
  std::unique_ptr<Input> input_;
  Source source_;
  std::unique_ptr<detail::RecordParser> parser_;
  std::size_t seen_ = 0;
  std::uint64_t finished_bytes_ = 0;
  std::optional<std::uint64_t> total_;
  RejectedRecord last_rejected_;
};

namespace {

std::optional<std::uint64_t> input_size(const std::string& path, const ReadOptions& options) {
  if (path == "-") return std::nullopt;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    std::uint64_t total = 0;
    try {
      for (const auto& file : DirectoryInput::molecule_files(path, options, false)) {
        const auto size = fs::file_size(file, ec);
        if (!ec) total += size;
      }
    } catch (const Error&) {
      // An unreadable directory adds nothing; reading it reports the error.
    }
    return total;
  }
  const auto size = fs::file_size(path, ec);
  return ec ? 0 : size;
}

}  // namespace

MoleculeReader::MoleculeReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MoleculeReader::~MoleculeReader() = default;

std::unique_ptr<MoleculeReader> MoleculeReader::open(const std::vector<std::string>& inputs,
                                                     const ReadOptions& options) {
  for (const auto& path : inputs) {
    if (path == "-") continue;
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (ec || !fs::exists(status)) throw IoError(path, "no such file or directory");
    if (!fs::is_directory(status) && !is_tar_archive(path) &&
        (options.format == Format::unknown ? format_from_path(path) : options.format) ==
            Format::unknown) {
      throw InvalidArgument(path + ": cannot tell the format from the file name; give it "
                                   "explicitly (sdf, mol, xyz, extxyz, qm9, pdb, csv)");
    }
  }
  return std::unique_ptr<MoleculeReader>(
      new MoleculeReader(std::make_unique<Impl>(inputs, options)));
}

std::unique_ptr<MoleculeReader> MoleculeReader::open(const std::string& input,
                                                     const ReadOptions& options) {
  return open(std::vector<std::string>{input}, options);
}

std::unique_ptr<MoleculeReader> MoleculeReader::from_stream(std::istream& stream, std::string name,
                                                            const ReadOptions& options) {
  if (options.format == Format::unknown) {
    throw InvalidArgument(name + ": reading a stream needs an explicit input format");
  }
  return std::unique_ptr<MoleculeReader>(
      new MoleculeReader(std::make_unique<Impl>(stream, std::move(name), options)));
}

std::optional<PointSet> MoleculeReader::next() { return impl_->next(); }

std::size_t MoleculeReader::records_seen() const noexcept { return impl_->seen(); }

ReadProgress MoleculeReader::progress() const { return impl_->progress(); }
const RejectedRecord& MoleculeReader::last_rejected() const noexcept {
  return impl_->last_rejected();
}

ConformerOptions conformer_options(const ReadOptions& options) {
  ConformerOptions conformer;
  conformer.seed = options.seed;
  conformer.max_attempts = options.conformer_attempts;
  conformer.optimize = options.optimize;
  return conformer;
}

PdbPart pdb_part_from_name(const std::string& name) {
  if (name == "keep") return PdbPart::keep;
  if (name == "drop") return PdbPart::drop;
  if (name == "fail") return PdbPart::fail;
  throw InvalidArgument("'" + name + "' is not keep, drop or fail");
}

std::string ReadSummary::describe() const {
  std::ostringstream out;
  out << "read " << read << " record" << (read == 1 ? "" : "s");
  if (skipped.empty()) return out.str();
  out << ", skipped " << skipped.size() << ":";
  constexpr std::size_t kListed = 10;
  for (std::size_t i = 0; i < skipped.size() && i < kListed; ++i) {
    const auto& s = skipped[i];
    out << (i == 0 ? " " : "; ") << s.file;
    if (s.record != 0) out << " record " << s.record;
    out << ": " << s.reason;
  }
  if (skipped.size() > kListed) out << "; ... (" << skipped.size() - kListed << " more)";
  return out.str();
}

ReadSummary read_molecules(const std::vector<std::string>& inputs, const ReadOptions& options,
                           ErrorPolicy policy, const std::function<void(PointSet&&)>& sink,
                           const std::function<void(const ReadProgress&)>& on_progress) {
  ReadSummary summary;
  auto reader = MoleculeReader::open(inputs, options);
  for (;;) {
    if (on_progress) on_progress(reader->progress());
    std::optional<PointSet> points;
    try {
      points = reader->next();
    } catch (const InputError& e) {
      if (policy == ErrorPolicy::fail) throw;
      log_warning("skipped: ", e.what());
      summary.skipped.push_back({e.file(), e.record(), e.reason()});
      continue;
    } catch (const IoError& e) {
      if (policy == ErrorPolicy::fail) throw;
      log_warning("skipped: ", e.what());
      summary.skipped.push_back({e.path(), 0, e.what()});
      continue;
    }
    if (!points) break;
    ++summary.read;
    sink(std::move(*points));
  }
  if (on_progress) on_progress(reader->progress());
  return summary;
}

}  // namespace flt::chem
