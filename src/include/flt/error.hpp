// The exceptions every flt function throws: flt::Error and its subclasses. They are shared by the
// public API and the internal libraries (src/core/error.hpp includes this header), so an error
// raised anywhere inside flt reaches callers as one of these types. Each carries the context a
// user needs to act (file, 1-based record number, reason) in what() and in typed accessors.
//
//   try { auto model = flt::Model::load("m.flt"); }
//   catch (const flt::ModelFileError& e) { /* e.path(), e.what() */ }
//   catch (const flt::Error& e) { /* any other flt failure */ }
#pragma once

#include "export.hpp"

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

namespace flt {

// Base of every error thrown by flt. what() is the full, human-readable message.
class FLT_API Error : public std::runtime_error {
 public:
  // `message` becomes what().
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A caller passed an argument that violates a documented precondition (shape mismatch, bad option,
// a molecule the model cannot predict: unknown element, empty, non-finite coordinate).
class FLT_API InvalidArgument : public Error {
 public:
  using Error::Error;
};

// A configuration value (INI file, command line, model configuration, a missing default model) is
// missing or invalid.
class FLT_API ConfigError : public Error {
 public:
  using Error::Error;
};

// Reading or writing a file failed at the operating-system level (missing, unwritable, short write).
class FLT_API IoError : public Error {
 public:
  // what() is "<path>: <reason>".
  IoError(std::string path, const std::string& reason)
      : Error(path + ": " + reason), path_(std::move(path)) {}
  // The file concerned.
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// A record in an input file is malformed. Names the file, the 1-based record and the reason.
// record == 0 means the error concerns the file as a whole.
class FLT_API InputError : public Error {
 public:
  // what() is "<file>: record <record>: <reason>" ("<file>: <reason>" for record 0).
  InputError(std::string file, std::size_t record, std::string reason)
      : Error(format(file, record, reason)),
        file_(std::move(file)),
        record_(record),
        reason_(std::move(reason)) {}
  // The input file ("archive.tar:member.sdf" inside archives, "-" for standard input).
  const std::string& file() const noexcept { return file_; }
  // 1-based record number within file(); 0 for the file as a whole.
  std::size_t record() const noexcept { return record_; }
  // Why the record was rejected.
  const std::string& reason() const noexcept { return reason_; }

 private:
  static std::string format(const std::string& file, std::size_t record, const std::string& reason) {
    if (record == 0) return file + ": " + reason;
    return file + ": record " + std::to_string(record) + ": " + reason;
  }
  std::string file_;
  std::size_t record_;
  std::string reason_;
};

// A model file or checkpoint is corrupt, truncated, of an unknown version or inconsistent.
class FLT_API ModelFileError : public Error {
 public:
  // what() is "<path>: <reason>".
  ModelFileError(std::string path, const std::string& reason)
      : Error(path + ": " + reason), path_(std::move(path)) {}
  // The model file concerned.
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// A numerical failure that must not pass silently (non-finite loss, non-positive FLT denominator
// when the policy is to stop).
class FLT_API NumericalError : public Error {
 public:
  using Error::Error;
};

}  // namespace flt
