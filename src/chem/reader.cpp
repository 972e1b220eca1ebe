// MoleculeReader: walks the inputs (files, .gz files, directories, archives, standard input) and
// hands each stream to the record parser of its format.
#include "chem/reader.hpp"

#include "chem/record_parsers.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "io/compressed.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <streambuf>

namespace flt::chem {
namespace {

namespace fs = std::filesystem;

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

// One readable stream (a file, an archive member, stdin) with its name and format. When the
// stream goes bad, `failure` (if set and not empty) says why: a decompression or archive error.
struct Source {
  std::string name;
  std::istream* stream = nullptr;
  Format format = Format::unknown;
  const std::string* failure = nullptr;
};

// An input (file, directory, archive, stream) yields its sources one after the other; a source
// stays valid until the next call.
class Input {
 public:
  virtual ~Input() = default;
  virtual std::optional<Source> next_source() = 0;
  // Bytes of the input's file(s) consumed so far (0 for streams).
  virtual std::uint64_t bytes_read() const { return 0; }
  // After next_source() threw IoError: true when the input goes on with its next source (one
  // file of a directory could not be opened), false when it is done.
  virtual bool continues_after_error() const { return false; }
};

// Total size of the molecule files an input path stands for; nullopt for standard input.
std::optional<std::uint64_t> input_size(const std::string& path, const ReadOptions& options);

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
                                    "explicitly (sdf, mol, xyz, extxyz, qm9, pdb, csv, smi)");
    }
    file_ = std::make_unique<io::InputFile>(path_);
  }
  std::optional<Source> next_source() override {
    if (done_) return std::nullopt;
    done_ = true;
    return Source{path_, &file_->stream(), format_, &file_->failure()};
  }
  std::uint64_t bytes_read() const override { return file_->bytes_read(); }

 private:
  std::string path_;
  Format format_;
  std::unique_ptr<io::InputFile> file_;
  bool done_ = false;
};

// Standard input, gzip-compressed or not.
class StreamInput final : public Input {
 public:
  StreamInput(std::istream& in, std::string name, Format format)
      : in_(in, name), name_(std::move(name)), format_(format) {}
  std::optional<Source> next_source() override {
    if (done_) return std::nullopt;
    done_ = true;
    return Source{name_, &in_.stream(), format_, &in_.failure()};
  }

 private:
  io::InputFile in_;
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
      if (!entry.is_regular_file(ec2)) {
        // A molecule file's name on a link to nothing: the user meant it to be read.
        if (log && entry.is_symlink(ec2) && !fs::exists(entry.path(), ec2) &&
            resolve_format(name, options) != Format::unknown)
          log_warning(path, ": skipping ", name, ": a symbolic link to a missing file");
        continue;
      }
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
    file_ = std::make_unique<io::InputFile>(path);
    return Source{path, &file_->stream(), resolve_format(path, options_), &file_->failure()};
  }
  std::uint64_t bytes_read() const override { return finished_bytes_ + (file_ ? file_->bytes_read() : 0); }
  bool continues_after_error() const override { return true; }  // next_ is past the failed file

 private:
  ReadOptions options_;
  std::vector<std::string> files_;
  std::size_t next_ = 0;
  std::unique_ptr<io::InputFile> file_;
  std::uint64_t finished_bytes_ = 0;
};

// libarchive's message for the last error (some end in a line break), or a generic one.
std::string archive_reason(struct archive* archive) {
  const char* why = archive_error_string(archive);
  std::string reason = why != nullptr ? why : "";
  while (!reason.empty() && std::isspace(static_cast<unsigned char>(reason.back()))) reason.pop_back();
  return reason.empty() ? "corrupt or truncated archive" : reason;
}

// A failed read of an archive member: why, and whether the archive can go on (libarchive's
// ARCHIVE_FAILED, e.g. an encrypted member) or not (ARCHIVE_FATAL, e.g. truncated data).
struct MemberFailure {
  std::string reason;
  bool fatal = false;
};

// Hands out the data of the archive's current member (archive_read_data). A read error sets the
// istream's badbit (std::istream turns the exception into badbit) and is kept in `failure`.
class MemberBuf final : public std::streambuf {
 public:
  MemberBuf(struct archive* archive, MemberFailure* failure)
      : archive_(archive), failure_(failure), buffer_(1 << 15) {}

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    if (!failure_->reason.empty()) return traits_type::eof();
    const la_ssize_t got = archive_read_data(archive_, buffer_.data(), buffer_.size());
    if (got < 0) {
      failure_->reason = archive_reason(archive_);
      failure_->fatal = got == ARCHIVE_FATAL;
      throw std::ios_base::failure(failure_->reason);
    }
    if (got == 0) return traits_type::eof();
    setg(buffer_.data(), buffer_.data(), buffer_.data() + got);
    return traits_type::to_int_type(*gptr());
  }

 private:
  struct archive* archive_;
  MemberFailure* failure_;
  std::vector<char> buffer_;
};

// An archive read member by member through libarchive without extracting (memory does not grow
// with the archive): tar (ustar, GNU, pax), zip, 7-Zip and cpio, plain or compressed with gzip,
// bzip2, xz or zstd (told apart by content, not by name). Regular members with a molecule-file
// name are read in archive order; others are skipped.
class ArchiveInput final : public Input {
 public:
  ArchiveInput(std::string path, const ReadOptions& options)
      : path_(std::move(path)), options_(options), archive_(archive_read_new()) {
    if (archive_ == nullptr) throw IoError(path_, "libarchive: cannot allocate a reader");
    // Only filters built into libarchive: archive_read_support_filter_all would also run external
    // programs (lrzip, lzop, grzip) on data that looks like theirs.
    archive_read_support_filter_gzip(archive_);
    archive_read_support_filter_bzip2(archive_);
    archive_read_support_filter_xz(archive_);
    archive_read_support_filter_zstd(archive_);
    archive_read_support_format_tar(archive_);
    archive_read_support_format_zip(archive_);
    archive_read_support_format_7zip(archive_);
    archive_read_support_format_cpio(archive_);
    archive_read_support_format_empty(archive_);
    if (archive_read_open_filename(archive_, path_.c_str(), kFileBuffer) != ARCHIVE_OK) {
      const std::string why = reason();
      archive_read_free(archive_);
      throw IoError(path_, why);
    }
  }
  ~ArchiveInput() override { archive_read_free(archive_); }
  ArchiveInput(const ArchiveInput&) = delete;
  ArchiveInput& operator=(const ArchiveInput&) = delete;

  std::optional<Source> next_source() override {
    member_.reset();
    member_buf_.reset();
    // After a fatal data error libarchive cannot go on; the error was reported for the member.
    if (done_ || failure_.fatal) return std::nullopt;
    failure_.reason.clear();
    for (;;) {
      struct archive_entry* entry = nullptr;
      const int rc = archive_read_next_header(archive_, &entry);
      if (rc == ARCHIVE_EOF) {
        done_ = true;
        return std::nullopt;
      }
      if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
        done_ = true;
        throw IoError(path_, reason());
      }
      const std::string name = pathname(entry);
      if (rc == ARCHIVE_WARN) log_debug(path_, ": ", name, ": ", reason());
      const bool regular =
          archive_entry_filetype(entry) == AE_IFREG && archive_entry_hardlink(entry) == nullptr;
      if (!regular) continue;
      const std::string base = name.substr(name.find_last_of('/') + 1);
      const Format format = resolve_format(name, options_);
      if (base.empty() || base[0] == '.' || format == Format::unknown || format == Format::csv ||
          has_suffix(name, ".gz")) {
        log_debug(path_, ": skipping member ", name);
        continue;
      }
      member_buf_ = std::make_unique<MemberBuf>(archive_, &failure_);
      member_ = std::make_unique<std::istream>(member_buf_.get());
      return Source{path_ + ":" + name, member_.get(), format, &failure_.reason};
    }
  }
  // Bytes of the archive file consumed (compressed bytes when the archive is compressed).
  std::uint64_t bytes_read() const override {
    const la_int64_t n = archive_filter_bytes(archive_, -1);
    return n < 0 ? 0 : static_cast<std::uint64_t>(n);
  }

 private:
  std::string reason() const { return archive_reason(archive_); }
  static std::string pathname(struct archive_entry* entry) {
    const char* name = archive_entry_pathname(entry);
    if (name == nullptr) name = archive_entry_pathname_utf8(entry);
    return name != nullptr ? name : "";
  }

  std::string path_;
  ReadOptions options_;
  struct archive* archive_;
  std::unique_ptr<MemberBuf> member_buf_;
  std::unique_ptr<std::istream> member_;
  MemberFailure failure_;
  bool done_ = false;
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
          // A record cut short by a decompression or archive error: report that error.
          if (stream_failure() != nullptr) fail_source("");
          if (e.record() != 0) ++seen_;
          last_rejected_ = parser_->rejected();
          if (last_rejected_.partial.record != e.record()) last_rejected_ = RejectedRecord{};
          last_rejected_.partial.source = e.file();
          last_rejected_.partial.record = e.record();
          if (source_.stream != nullptr && source_.stream->bad()) drop_source();
          throw;
        } catch (const IoError&) {
          if (stream_failure() != nullptr) fail_source("");
          drop_source();
          throw;
        } catch (const Error& e) {
          fail_source(e.what());
        } catch (const std::exception& e) {
          // Stream failures that reached the parser as exceptions.
          fail_source(std::string("read error: ") + e.what());
        }
        if (source_.stream != nullptr && source_.stream->bad()) {
          fail_source("read error (corrupt or truncated data?)");
        }
        drop_source();
      }
      if (input_) {
        std::optional<Source> source;
        try {
          source = input_->next_source();
        } catch (const IoError&) {
          if (!input_->continues_after_error()) input_.reset();
          throw;
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
  // Why the current source's stream failed, when its decompressor or archive said so.
  const std::string* stream_failure() const {
    if (source_.failure == nullptr || source_.failure->empty()) return nullptr;
    return source_.failure;
  }
  // Drops the current source and throws an IoError naming it, with the stream's failure when
  // there is one, else `reason`.
  [[noreturn]] void fail_source(const std::string& reason) {
    const std::string name = source_.name;
    const std::string* why = stream_failure();
    const std::string message = why != nullptr ? *why : reason;
    drop_source();
    throw IoError(name, message);
  }
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
      case Format::csv:
      case Format::smi:
        return detail::make_smiles_parser(*source.stream, source.name, source.format, options_);
      case Format::unknown: break;
    }
    throw InvalidArgument(source.name + ": unknown format");
  }

  std::unique_ptr<Input> open_input(const std::string& path) const {
    if (path == "-") {
      if (options_.format == Format::unknown) {
        throw InvalidArgument("standard input: give the format explicitly (e.g. --format sdf; API: format)");
      }
      return std::make_unique<StreamInput>(std::cin, "-", options_.format);
    }
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (ec || !fs::exists(status)) throw IoError(path, "no such file or directory");
    if (fs::is_directory(status)) return std::make_unique<DirectoryInput>(path, options_);
    if (is_archive(path)) return std::make_unique<ArchiveInput>(path, options_);
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
    if (!fs::is_directory(status) && !is_archive(path) &&
        (options.format == Format::unknown ? format_from_path(path) : options.format) ==
            Format::unknown) {
      throw InvalidArgument(path + ": cannot tell the format from the file name; give it "
                                   "explicitly (sdf, mol, xyz, extxyz, qm9, pdb, csv, smi)");
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

Periodic periodic_from_name(const std::string& name) {
  if (name == "error") return Periodic::error;
  if (name == "isolated") return Periodic::isolated;
  throw InvalidArgument("'" + name + "' is not error or isolated");
}

std::string ReadSummary::skipped_list() const {
  std::ostringstream out;
  constexpr std::size_t kListed = 10;
  for (std::size_t i = 0; i < skipped.size() && i < kListed; ++i) {
    const auto& s = skipped[i];
    out << (i == 0 ? "" : "; ") << s.file;
    if (s.record != 0) out << " record " << s.record;
    out << ": " << s.reason;
  }
  if (skipped.size() > kListed) out << "; ... (" << skipped.size() - kListed << " more)";
  return out.str();
}

std::string ReadSummary::describe() const {
  const auto bad_records = static_cast<std::size_t>(
      std::count_if(skipped.begin(), skipped.end(), [](const SkippedRecord& s) { return s.record != 0; }));
  std::ostringstream out;
  out << "read " << read;
  if (bad_records > 0) out << " of " << read + bad_records;
  out << " record" << (read + bad_records == 1 ? "" : "s");
  if (skipped.empty()) return out.str();
  out << ", skipped " << skipped.size() << ": " << skipped_list();
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
