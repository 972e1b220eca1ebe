#include "io/csv.hpp"

#include "core/text.hpp"

#include "io/atomic_file.hpp"
#include "io/utf8.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <set>

namespace flt::io {

InputError csv_error(const std::string& source, std::size_t line, const std::string& reason) {
  if (line == 0) return InputError(source, 0, reason);
  std::string where = source;
  where += ':';
  where += std::to_string(line);
  return InputError(where, 0, reason);
}

std::optional<std::size_t> CsvTable::column(std::string_view name) const {
  for (std::size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return i;
  return std::nullopt;
}

std::size_t CsvTable::require_column(std::string_view name) const {
  if (auto c = column(name)) return *c;
  std::string cols;
  for (const auto& h : header) cols += (cols.empty() ? "" : ", ") + h;
  throw csv_error(source, 0, "no column '" + std::string(name) + "' (columns: " + cols + ")");
}

std::string CsvTable::where(std::size_t row) const {
  return source + ":" + std::to_string(row < row_lines.size() ? row_lines[row] : 0);
}

CsvTable parse_csv(std::string_view text, const std::string& source) {
  CsvTable table;
  table.source = source;
  text = without_utf8_bom(text);
  if (!is_valid_utf8(text)) throw csv_error(source, 0, "not valid UTF-8 text");
  std::size_t line = 1;
  std::size_t i = 0;
  bool have_header = false;
  while (i < text.size()) {
    const std::size_t row_line = line;
    std::vector<std::string> fields;
    std::string field;
    bool row_done = false;
    bool any_content = false;
    while (!row_done) {
      // One field.
      field.clear();
      if (i < text.size() && text[i] == '"') {
        any_content = true;
        ++i;
        while (true) {
          if (i >= text.size()) throw csv_error(source, row_line, "unterminated quoted field (opened on line " +
                                                                       std::to_string(row_line) + ")");
          const char c = text[i++];
          if (c == '"') {
            if (i < text.size() && text[i] == '"') {
              field.push_back('"');
              ++i;
              continue;
            }
            break;
          }
          if (c == '\n') ++line;
          field.push_back(c);
        }
        // After a closing quote: separator, end of line or end of input.
        if (i < text.size() && text[i] != ',' && text[i] != '\n' && !(text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') &&
            !(text[i] == '\r' && i + 1 == text.size()))
          throw csv_error(source, line, "text after a closing quote");
      } else {
        while (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          if (text[i] == '"') throw csv_error(source, line, "quote inside an unquoted field (quote the whole field)");
          field.push_back(text[i++]);
        }
        if (i < text.size() && text[i] == '\r' && !(i + 1 == text.size() || text[i + 1] == '\n'))
          throw csv_error(source, line, "bare carriage return inside a field");
        if (!field.empty()) any_content = true;
      }
      fields.push_back(field);
      if (i >= text.size()) {
        row_done = true;
      } else if (text[i] == ',') {
        ++i;
        any_content = true;
        if (i >= text.size()) fields.emplace_back();  // trailing comma at end of input
        if (i >= text.size()) row_done = true;
      } else {  // '\n' or "\r\n" or final '\r'
        if (text[i] == '\r') ++i;
        if (i < text.size() && text[i] == '\n') ++i;
        ++line;
        row_done = true;
      }
    }
    if (!any_content) continue;  // blank line
    if (!have_header) {
      std::set<std::string> names;
      for (const auto& h : fields) {
        if (h.empty()) throw csv_error(source, row_line, "empty column name in the header");
        if (!names.insert(h).second) throw csv_error(source, row_line, "duplicate column '" + h + "' in the header");
      }
      table.header = std::move(fields);
      have_header = true;
      continue;
    }
    if (fields.size() != table.header.size())
      throw csv_error(source, row_line, "row has " + std::to_string(fields.size()) + " fields, the header has " +
                                             std::to_string(table.header.size()));
    table.rows.push_back(std::move(fields));
    table.row_lines.push_back(row_line);
  }
  if (!have_header) throw csv_error(source, 0, "empty CSV file (no header row)");
  return table;
}

CsvTable read_csv(const std::filesystem::path& path) { return parse_csv(read_file(path), path.string()); }

bool is_missing_value_text(std::string_view text) noexcept {
  text = trim(text);
  if (text.size() > 5) return false;
  std::string low(text);
  for (char& c : low)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return low.empty() || low == "na" || low == "n/a" || low == "#n/a" || low == "<na>" || low == "nan" ||
         low == "-nan" || low == "none" || low == "null";
}

double parse_csv_number(std::string_view field, const CsvTable& table, std::size_t row, std::size_t column) {
  field = trim(field);
  if (is_missing_value_text(field)) return std::numeric_limits<double>::quiet_NaN();
  const char* first = field.data();
  if (field.front() == '+') ++first;
  double v = 0;
  const auto res = std::from_chars(first, field.data() + field.size(), v);
  if (res.ec != std::errc() || res.ptr != field.data() + field.size() || !std::isfinite(v)) {
    const std::size_t line = row < table.row_lines.size() ? table.row_lines[row] : 0;
    const std::string col = column < table.header.size() ? table.header[column] : "?";
    throw csv_error(table.source, line, "column '" + col + "': '" + std::string(field) + "' is not a number");
  }
  return v;
}

std::string csv_escape(std::string_view field) {
  const bool quote = field.find_first_of(",\"\r\n") != std::string_view::npos ||
                     (!field.empty() && (field.front() == ' ' || field.back() == ' '));
  if (!quote) return std::string(field);
  std::string out = "\"";
  for (const char c : field) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  return out + "\"";
}

void write_csv_row(std::ostream& out, const std::vector<std::string>& fields) {
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i) out << ',';
    out << csv_escape(fields[i]);
  }
  out << '\n';
}

std::string csv_number(double value) {
  return std::isnan(value) ? std::string() : shortest_number(value);
}

}  // namespace flt::io
