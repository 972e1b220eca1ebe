// CSV (RFC 4180) reading and writing: comma-separated, fields optionally quoted with '"' (a quote
// inside a quoted field is doubled), quoted fields may hold commas and line breaks, lines end in
// LF or CRLF, an initial UTF-8 BOM is skipped, blank lines are skipped. The first row is the header.
// Errors are flt::InputError naming the file and the 1-based line ("labels.csv:12: reason").
#pragma once

#include "core/error.hpp"

#include <cstddef>
#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace flt::io {

// The error for a problem at a line of a text file: InputError whose file() is "source:line" (just
// "source" when line is 0) and whose message reads "source:line: reason".
InputError csv_error(const std::string& source, std::size_t line, const std::string& reason);

struct CsvTable {
  std::string source;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // every row has header.size() fields
  std::vector<std::size_t> row_lines;          // 1-based line where each row starts

  // Column index by exact header name; nullopt if absent.
  std::optional<std::size_t> column(std::string_view name) const;
  // Like column() but throws InputError(source, 0, "no column 'name' (columns: ...)").
  std::size_t require_column(std::string_view name) const;
  // "file:line" of row i, for messages.
  std::string where(std::size_t row) const;
};

// Parses CSV text. Throws InputError(source, line, reason) for an unterminated quote, a quote
// inside an unquoted field, text after a closing quote, a row whose field count differs from the
// header's, an empty or duplicate header name, invalid UTF-8.
CsvTable parse_csv(std::string_view text, const std::string& source);
CsvTable read_csv(const std::filesystem::path& path);  // IoError if unreadable

// Whether a label's text marks a missing value: empty (after trimming blanks) or, in any case,
// NA, N/A, #N/A, <NA>, NaN, -NaN, None, NULL: the spellings pandas reads as missing by default,
// which spreadsheets and RDKit-written SD files carry.
bool is_missing_value_text(std::string_view text) noexcept;

// A numeric field: a missing value (is_missing_value_text) gives NaN; otherwise the whole field
// must be a number (leading/trailing blanks allowed). Throws InputError naming source:line and
// the column.
double parse_csv_number(std::string_view field, const CsvTable& table, std::size_t row, std::size_t column);

// Quotes a field when it holds a comma, quote, CR, LF or leading/trailing blank.
std::string csv_escape(std::string_view field);
// Writes fields joined by ',' and a trailing '\n'.
void write_csv_row(std::ostream& out, const std::vector<std::string>& fields);
// A double for CSV: shortest round-trip text; NaN as an empty field.
std::string csv_number(double value);

}  // namespace flt::io
