// Typed exceptions for every flt library. Libraries throw; only programs' main() turns them into
// exit codes (see tools/flt/exit_codes.hpp). Each error carries the context a user needs to act:
// the file, the 1-based record number and the reason.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

namespace flt {

// Base of every error thrown by flt. what() is the full, human-readable message.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A caller passed an argument that violates a documented precondition (shape mismatch, bad option).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// A configuration value (INI file, command line, model configuration) is missing or invalid.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// Reading or writing a file failed at the operating-system level (missing, unwritable, short write).
class IoError : public Error {
 public:
  IoError(std::string path, const std::string& reason)
      : Error(path + ": " + reason), path_(std::move(path)) {}
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// A record in an input file is malformed. Names the file, the 1-based record and the reason.
// record == 0 means the error concerns the file as a whole.
class InputError : public Error {
 public:
  InputError(std::string file, std::size_t record, std::string reason)
      : Error(format(file, record, reason)),
        file_(std::move(file)),
        record_(record),
        reason_(std::move(reason)) {}
  const std::string& file() const noexcept { return file_; }
  std::size_t record() const noexcept { return record_; }
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
class ModelFileError : public Error {
 public:
  ModelFileError(std::string path, const std::string& reason)
      : Error(path + ": " + reason), path_(std::move(path)) {}
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// A numerical failure that must not pass silently (non-finite loss, non-positive FLT denominator
// when the policy is to stop).
class NumericalError : public Error {
 public:
  using Error::Error;
};

// Throws InvalidArgument with `message` unless `condition` holds. For preconditions on shapes and
// arguments at library boundaries (cheap; kept in release builds).
inline void require(bool condition, const char* message) {
  if (!condition) throw InvalidArgument(message);
}
inline void require(bool condition, const std::string& message) {
  if (!condition) throw InvalidArgument(message);
}

}  // namespace flt
