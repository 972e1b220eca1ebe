// SDF / MOL record parser on RDKit's ForwardSDMolSupplier (V2000 and V3000, multi-record,
// streaming). RDKit delimits the records ("$$$$"), parses and sanitizes them; this file turns each
// molecule into a PointSet: hydrogens (explicit kept, implicit ones added with 3-D coordinates),
// 3-D check (error / ETKDG conformer / accept), SD tags as properties, geometry check.
#include "chem/conformer.hpp"
#include "chem/rdkit_log.hpp"
#include "chem/record_parsers.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text.hpp"

#include <GraphMol/FileParsers/MolSupplier.h>
#include <GraphMol/MolOps.h>
#include <GraphMol/ROMol.h>
#include <GraphMol/RWMol.h>

#include <cmath>
#include <cstring>
#include <streambuf>

namespace flt::chem::detail {
namespace {

// Exposes the supplier's line counter so errors can name the line a record ends on.
class Supplier final : public RDKit::ForwardSDMolSupplier {
 public:
  using RDKit::ForwardSDMolSupplier::ForwardSDMolSupplier;
  int line() const noexcept { return d_line; }
};

// Hands the upstream stream to RDKit one line per underflow() and counts the "$$$$" lines RDKit
// has consumed, so record numbers follow the file's records even where RDKit silently skips some
// (after a data-field error it moves on to the next "$$$$", or stops reading altogether).
class LineFeed final : public std::streambuf {
 public:
  explicit LineFeed(std::istream& up) : up_(up), buffer_(1 << 16) {}

  // "$$$$" lines fully read by the consumer so far.
  std::size_t consumed_delimiters() const noexcept {
    return delimiters_before_ + (current_is_delimiter_ && gptr() == egptr() ? 1 : 0);
  }
  // Lines other than blank and "$$$$" fully read by the consumer so far.
  std::size_t consumed_content_lines() const noexcept {
    return content_before_ + (current_is_content_ && gptr() == egptr() ? 1 : 0);
  }
  // 1-based number of the line the consumer is in (or has just finished).
  std::size_t line() const noexcept { return lines_; }
  bool upstream_bad() const noexcept { return up_.bad(); }

  // Starts recording the text handed out: the unread rest of the current line, then every line
  // the consumer moves on to (whole lines). Keeps a rejected record's text for the output; text
  // beyond kMaxCapture bytes (e.g. the rest of a file RDKit stopped reading) is not kept, so
  // memory stays bounded, and captured() is then empty.
  void begin_capture() {
    captured_.assign(gptr(), egptr());
    capture_overflow_ = false;
  }
  const std::string& captured() const noexcept { return captured_; }

 private:
  // Up to `space` bytes of what the upstream buffer holds (refilling it once when empty). Not
  // istream::read: when a decompressor's refill throws after part of a read was copied, read()
  // reports nothing of it, and those bytes (records decompressed before a bad tail) would be lost.
  // A refill that throws sets the upstream stream's badbit, as istream does.
  std::streamsize read_available(char* dst, std::size_t space) {
    std::streambuf* up = up_.rdbuf();
    if (up == nullptr || !up_.good()) return 0;
    try {
      if (traits_type::eq_int_type(up->sgetc(), traits_type::eof())) {
        up_.setstate(std::ios::eofbit);
        return 0;
      }
      const std::streamsize ready = std::max<std::streamsize>(1, up->in_avail());
      return up->sgetn(dst, std::min(ready, static_cast<std::streamsize>(space)));
    } catch (...) {
      up_.setstate(std::ios::badbit);
      return 0;
    }
  }

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    if (current_is_delimiter_) ++delimiters_before_;
    if (current_is_content_) ++content_before_;
    current_is_delimiter_ = false;
    current_is_content_ = false;
    begin_ = end_;
    for (;;) {
      const char* nl = static_cast<const char*>(
          std::memchr(buffer_.data() + begin_, '\n', filled_ - begin_));
      if (nl != nullptr) {
        end_ = static_cast<std::size_t>(nl - buffer_.data()) + 1;
        break;
      }
      if (eof_) {
        end_ = filled_;
        break;
      }
      // Move the partial line to the front, grow if a single line fills the buffer, refill.
      if (begin_ > 0) {
        std::memmove(buffer_.data(), buffer_.data() + begin_, filled_ - begin_);
        filled_ -= begin_;
        begin_ = 0;
      }
      if (filled_ == buffer_.size()) buffer_.resize(buffer_.size() * 2);
      const std::streamsize got = read_available(buffer_.data() + filled_, buffer_.size() - filled_);
      if (got <= 0) eof_ = true;
      filled_ += static_cast<std::size_t>(std::max<std::streamsize>(got, 0));
    }
    if (end_ == begin_) {
      setg(buffer_.data() + begin_, buffer_.data() + begin_, buffer_.data() + begin_);
      return traits_type::eof();
    }
    ++lines_;
    if (!capture_overflow_) {
      if (captured_.size() + (end_ - begin_) > kMaxCapture) {
        capture_overflow_ = true;
        captured_.clear();
        captured_.shrink_to_fit();
      } else {
        captured_.append(buffer_.data() + begin_, end_ - begin_);
      }
    }
    current_is_delimiter_ =
        end_ - begin_ >= 4 && std::memcmp(buffer_.data() + begin_, "$$$$", 4) == 0;
    current_is_content_ = false;
    if (!current_is_delimiter_) {
      for (std::size_t i = begin_; i < end_; ++i) {
        const char c = buffer_[i];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
          current_is_content_ = true;
          break;
        }
      }
    }
    // A data header of the CTfile format without the field's name in angle brackets ("> DT12",
    // "> 55", "> (MOLSREGNO)", from older MDL/ISIS exports) makes RDKit's strict parser give up
    // on the rest of the file; it reaches RDKit as ">  <DT12>", a field named by what followed
    // the '>', with its value. Only where a data item can begin (after "M  END" or after the
    // blank line that ends the previous item): a value line such as ">10000" stays a value.
    const std::string_view text(buffer_.data() + begin_, end_ - begin_);
    const bool item_may_start = item_may_start_;
    const bool ctab_end = text.rfind("M  END", 0) == 0;
    item_may_start_ = ctab_end || (in_data_ && !current_is_content_ && !current_is_delimiter_);
    if (current_is_delimiter_) in_data_ = false;
    if (ctab_end) in_data_ = true;
    if (in_data_ && item_may_start && !text.empty() && text[0] == '>' &&
        text.find('<') == std::string_view::npos) {
      const std::string_view name = flt::trim(text.substr(1));
      if (!name.empty()) {
        rewritten_ = ">  <";
        rewritten_ += name;
        rewritten_ += ">\n";
        setg(rewritten_.data(), rewritten_.data(), rewritten_.data() + rewritten_.size());
        return traits_type::to_int_type(*gptr());
      }
    }
    setg(buffer_.data() + begin_, buffer_.data() + begin_, buffer_.data() + end_);
    return traits_type::to_int_type(*gptr());
  }

 private:
  bool in_data_ = false;         // between "M  END" and "$$$$": the data items
  bool item_may_start_ = false;  // the next line may be a data header (after M  END or a blank)
  std::string rewritten_;  // the line handed out instead of a data header without "<name>"
  std::istream& up_;
  std::vector<char> buffer_;
  std::size_t begin_ = 0, end_ = 0, filled_ = 0;
  bool eof_ = false;
  bool current_is_delimiter_ = false;
  bool current_is_content_ = false;
  std::size_t delimiters_before_ = 0;
  std::size_t content_before_ = 0;
  std::size_t lines_ = 0;
  static constexpr std::size_t kMaxCapture = std::size_t{1} << 24;
  std::string captured_;
  bool capture_overflow_ = false;
};

// Splits SD text after its first "$$$$" line: {the first record, the rest}.
std::pair<std::string, std::string> split_first_record(const std::string& text) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    end = end == std::string::npos ? text.size() : end + 1;
    if (text.compare(pos, 4, "$$$$") == 0) return {text.substr(0, end), text.substr(end)};
    pos = end;
  }
  return {text, std::string()};
}

std::string join_errors(const std::vector<RdkitMessage>& messages) {
  std::string out;
  for (const auto& m : messages) {
    if (m.level != LogLevel::error) continue;
    std::string text = m.text;
    if (text.rfind("ERROR: ", 0) == 0) text.erase(0, 7);
    if (text == "moving to the beginning of the next molecule") continue;
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out;
}

// An atom whose neighbours (bonded atoms and hydrogens) cannot all lie in one plane with it in a
// real geometry: sp3 with three or more.
bool is_pyramidal(const RDKit::Atom& atom) {
  return atom.getHybridization() == RDKit::Atom::SP3 && atom.getDegree() + atom.getTotalNumHs(false) >= 3;
}

// No 3-D coordinates: RDKit read the record as 2-D, or every z is 0. A record tagged 3D whose z are
// all 0 is a planar molecule written in the xy plane (ethylene, benzene, a linear HCN) unless an
// atom would have to be pyramidal (then it is a drawing tagged 3D); hybridisation needs a
// sanitized molecule, so without sanitization such a record counts as flat.
bool is_flat(const RDKit::ROMol& mol, const RDKit::Conformer& conf, bool sanitized) {
  if (conf.getNumAtoms() < 2) return false;  // one point is a valid 3-D geometry
  if (!conf.is3D()) return true;
  for (const auto& p : conf.getPositions()) {
    if (p.z != 0.0) return false;
  }
  if (!sanitized) return true;
  for (const RDKit::Atom* atom : mol.atoms())
    if (is_pyramidal(*atom)) return true;
  return false;
}

class SdfParser final : public RecordParser {
 public:
  SdfParser(std::istream& in, std::string source, const ReadOptions& options)
      : source_(std::move(source)),
        options_(options),
        feed_(in),
        feed_stream_(&feed_),
        // takeOwnership=false: this parser owns the stream. removeHs=false: hydrogens are atoms
        // of the point set. strictParsing=true: as SDMolSupplier (RDKit's file default).
        supplier_(&feed_stream_, false, options.sanitize, false, true) {}

  std::size_t records() const noexcept override { return record_; }

  std::optional<PointSet> next() override {
    if (pending_) throw_pending();
    for (;;) {
      std::vector<RdkitMessage> messages;
      std::unique_ptr<RDKit::ROMol> mol;
      const std::size_t before = feed_.consumed_delimiters();
      const std::size_t first_line = feed_.line() + 1;
      const std::size_t content_before = feed_.consumed_content_lines();
      feed_.begin_capture();
      {
        RdkitLogCapture capture(messages);
        if (supplier_.atEnd()) return finish();
        try {
          mol.reset(supplier_.next());
        } catch (const std::exception& e) {
          messages.push_back({LogLevel::error, e.what()});
        }
      }
      const std::size_t after = feed_.consumed_delimiters();
      record_ = before + 1;
      record_text_ = feed_.captured();
      if (after > before + 1) {
        std::string why = join_errors(messages);
        if (why.empty()) {
          // No error: RDKit read a "$$$$" line as the value of a data field (e.g. "> <price>"
          // directly followed by "$$$$"); the records it merged are reported, not dropped.
          log_warning(source_, ": record ", record_, ": RDKit read ", after - before - 1,
                      " \"$$$$\" line(s) as part of a data field (up to line ", feed_.line(),
                      ")");
        } else {
          // RDKit skipped from this record to a later "$$$$": records before+2 .. after are lost.
          // Each is reported on its own (with its text), so every record reaches an output.
          auto [first, rest] = split_first_record(record_text_);
          record_text_ = std::move(first);
          Skipped lost;
          lost.next = before + 2;
          lost.last = after;
          lost.reason = "record not read: RDKit skipped to line " + std::to_string(feed_.line()) +
                        " after an error in record " + std::to_string(record_) + " (" + why + ")";
          lost.text = std::move(rest);
          pending_ = std::move(lost);
        }
      }
      const std::size_t max_before = max_record_;
      max_record_ = std::max(max_record_, std::max(after, record_));
      if (!mol) {
        const bool blank = feed_.consumed_content_lines() == content_before;
        if (blank && after == before) {
          // Blank lines after the last record, or a file of blank lines only (whatever RDKit says
          // of them): no record. An empty file is then "no molecule records in the file".
          max_record_ = max_before;
          log_debug(source_, ": blank lines after the last record ignored");
          if (pending_) throw_pending();
          continue;
        }
        std::string reason = join_errors(messages);
        if (reason.empty()) {
          if (blank) {
            // An empty record (blank lines before "$$$$"): not a molecule.
            log_warning(source_, ": record ", record_, ": empty record ignored");
            if (pending_) throw_pending();
            continue;
          }
          reason = "RDKit could not read the record";
        }
        fail(reason + " (lines " + std::to_string(first_line) + "-" +
             std::to_string(feed_.line()) + ")");
      }
      ++good_;
      for (const auto& m : messages) {
        if (m.text.find("moving to the beginning of the next molecule") != std::string::npos) continue;
        // flt decides on flat records itself (is_flat) and says so when it refuses one.
        if (m.text.find("tagged as 3D, but all Z coords are zero") != std::string::npos) continue;
        log_at(LogLevel::warning, source_, ": record ", record_, ": RDKit: ", m.text);
      }
      return convert(std::move(mol));
    }
  }

 private:
  RejectedRecord rejected() const override { return rejected_; }

  // Rejects the current record, keeping its text (and its title and tags when RDKit read them).
  [[noreturn]] void fail(const std::string& reason, const PointSet* partial = nullptr) {
    rejected_ = RejectedRecord{};
    if (partial != nullptr) {
      rejected_.partial.title = partial->title;
      rejected_.partial.properties = partial->properties;
    }
    rejected_.partial.source = source_;
    rejected_.partial.record = record_;
    rejected_.format = Format::sdf;
    rejected_.text = record_text_;
    throw InputError(source_, record_, reason);
  }

  // Reports the next record of pending_ (records RDKit skipped over).
  [[noreturn]] void throw_pending() {
    Skipped& lost = *pending_;
    auto [text, rest] = split_first_record(lost.text);
    lost.text = std::move(rest);
    const std::size_t record = lost.next++;
    const std::string reason = lost.reason;
    if (lost.next > lost.last) pending_.reset();
    rejected_ = RejectedRecord{};
    rejected_.partial.source = source_;
    rejected_.partial.record = record;
    rejected_.format = Format::sdf;
    rejected_.text = std::move(text);
    throw InputError(source_, record, reason);
  }

  // End of RDKit's reading: report the records it never reached (it stops early after some
  // errors), one per call as the rest of the file is read, then files without any record.
  std::optional<PointSet> finish() {
    if (finished_) return std::nullopt;
    if (!reading_rest_) {
      reading_rest_ = true;
      unread_next_ = max_record_ + 1;
    }
    // The next record of the unread rest: up to and including a "$$$$" line, or a last stretch
    // with content but no "$$$$".
    std::string text, line;
    bool delimited = false, content = false;
    while (std::getline(feed_stream_, line)) {
      if (text.size() < kMaxRejectedText) text += line + "\n";
      if (line.rfind("$$$$", 0) == 0) {
        delimited = true;
        break;
      }
      if (line.find_first_not_of(" \t\r") != std::string::npos) content = true;
    }
    if (delimited || content) {
      record_ = unread_next_++;
      max_record_ = std::max(max_record_, record_);
      rejected_ = RejectedRecord{};
      rejected_.partial.source = source_;
      rejected_.partial.record = record_;
      rejected_.format = Format::sdf;
      if (text.size() < kMaxRejectedText) rejected_.text = std::move(text);
      throw InputError(source_, record_, "record not read: RDKit stopped reading the file early");
    }
    finished_ = true;
    if (good_ == 0 && max_record_ == 0) {
      throw InputError(source_, 0, "no molecule records in the file");
    }
    return std::nullopt;
  }

  PointSet convert(std::unique_ptr<RDKit::ROMol> mol) {
    PointSet points;
    points.source = source_;
    points.record = record_;
    if (mol->getNumAtoms() == 0) fail("the record has no atoms", &points);
    mol->getPropIfPresent(RDKit::common_properties::_Name, points.title);
    for (const auto& key : mol->getPropList(false, false)) {
      std::string value;
      mol->getPropIfPresent(key, value);
      auto [name, unit] = split_key_unit(key);  // "<U0 [eV]>", flt's own SD tags
      points.set_property(std::move(name), std::move(value), std::move(unit));
    }

    for (const auto* atom : mol->atoms()) {
      if (atom->getAtomicNum() < 1 || atom->getAtomicNum() > 118) {
        fail("atom " + std::to_string(atom->getIdx() + 1) + " is a dummy or query atom (" +
             atom->getSymbol() + "), not an element", &points);
      }
    }
    bool flat = mol->getNumConformers() == 0 || is_flat(*mol, mol->getConformer(), options_.sanitize);
    if (!options_.sanitize) mol->updatePropertyCache(false);
    unsigned explicit_h = 0;
    unsigned implicit_h = 0;
    for (const auto* atom : mol->atoms()) {
      if (atom->getAtomicNum() == 1) ++explicit_h;
      implicit_h += atom->getTotalNumHs(false);
    }
    // Also when some are explicit (docking poses with polar hydrogens only): the models were
    // trained on complete molecules, and a partial one is another molecule to them.
    const bool add_h = options_.add_hydrogens && implicit_h > 0;
    if (!add_h && explicit_h > 0 && implicit_h > 0) {
      log_info(source_, ": record ", record_, ": ", implicit_h,
               " implicit hydrogens kept implicit (the record has explicit ones)");
    }
    std::unique_ptr<RDKit::RWMol> rw;
    if (add_h || (flat && options_.missing_3d == Missing3D::generate)) {
      rw = std::make_unique<RDKit::RWMol>(*mol);
    }
    if (flat) {
      if (options_.missing_3d == Missing3D::error) {
        fail("no 3-D coordinates (2-D record); --missing-3d generate (API: generate_conformers) "
             "makes a conformer",
             &points);
      }
      if (options_.missing_3d == Missing3D::generate) {
        if (add_h) RDKit::MolOps::addHs(*rw, false, false);
        if (auto why = generate_conformer(*rw, conformer_options(options_),
                                          source_ + ": record " + std::to_string(record_))) {
          fail("no 3-D coordinates and no conformer: " + *why, &points);
        }
        points.conformer_generated = true;
        flat = false;
        log_info(source_, ": record ", record_, ": generated a 3-D conformer (ETKDGv3, seed ",
                 options_.seed, options_.optimize == Optimize::mmff ? ", MMFF94 clean-up" : "",
                 ")");
      } else {
        points.coordinates_3d = false;
      }
    }
    if (add_h && !points.conformer_generated) {
      // addCoords places each new H from its heavy atom's geometry (3-D, or 2-D when accepted).
      RDKit::MolOps::addHs(*rw, false, true);
    }
    if (add_h) {
      points.hydrogens_added = static_cast<int>(implicit_h);
      if (explicit_h > 0) {
        log_warning(source_, ": record ", record_, ": hydrogens completed: added ", implicit_h,
                    " implicit hydrogens with coordinates to the ", explicit_h, " explicit ones");
      } else {
        log_info(source_, ": record ", record_, ": added ", implicit_h,
                 " implicit hydrogens as atoms with coordinates");
      }
    }
    std::shared_ptr<const RDKit::ROMol> final_mol;
    if (rw) {
      final_mol = std::shared_ptr<const RDKit::ROMol>(rw.release());
    } else {
      final_mol = std::shared_ptr<const RDKit::ROMol>(mol.release());
    }

    const unsigned n = final_mol->getNumAtoms();
    points.atomic_numbers.resize(n);
    points.formal_charges.resize(n);
    points.positions.resize(static_cast<Index>(n), 3);
    const bool has_conf = final_mol->getNumConformers() > 0;
    for (unsigned i = 0; i < n; ++i) {
      const auto* atom = final_mol->getAtomWithIdx(i);
      points.atomic_numbers[i] = static_cast<int>(atom->getAtomicNum());
      points.formal_charges[i] = atom->getFormalCharge();
      const RDGeom::Point3D p =
          has_conf ? final_mol->getConformer().getAtomPos(i) : RDGeom::Point3D(0, 0, 0);
      points.positions(static_cast<Index>(i), 0) = p.x;
      points.positions(static_cast<Index>(i), 1) = p.y;
      points.positions(static_cast<Index>(i), 2) = p.z;
    }
    if (auto problem = check_geometry(points, points.coordinates_3d ? options_.min_distance : 0.0)) {
      fail(*problem, &points);
    }
    if (options_.keep_molecule) points.molecule = std::move(final_mol);
    return points;
  }

  std::string source_;
  ReadOptions options_;
  LineFeed feed_;
  std::istream feed_stream_;
  Supplier supplier_;
  std::size_t record_ = 0;      // the record being read / just read (1-based, by "$$$$")
  std::size_t max_record_ = 0;  // highest record number accounted for
  std::size_t good_ = 0;
  // Records RDKit skipped over after an error, still to be reported: next..last, their text.
  struct Skipped {
    std::size_t next = 0, last = 0;
    std::string reason;
    std::string text;
  };
  static constexpr std::size_t kMaxRejectedText = std::size_t{1} << 24;
  std::optional<Skipped> pending_;
  bool finished_ = false;
  bool reading_rest_ = false;    // RDKit is done; finish() walks the unread rest of the file
  std::size_t unread_next_ = 0;  // the next record number in that rest
  std::string record_text_;      // the text of the record being read
  RejectedRecord rejected_;
};

}  // namespace

std::unique_ptr<RecordParser> make_sdf_parser(std::istream& in, std::string source,
                                              const ReadOptions& options) {
  return std::make_unique<SdfParser>(in, std::move(source), options);
}

}  // namespace flt::chem::detail
