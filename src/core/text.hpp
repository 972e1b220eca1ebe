// Small text helpers shared by the libraries: ASCII only, no locale.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace flt {

// `text` without leading and trailing ASCII white space (' ', '\t', '\r', '\n', '\v', '\f').
std::string_view trim(std::string_view text) noexcept;
// `text` without a leading UTF-8 byte-order mark (EF BB BF), which Windows editors write at the
// start of text files.
std::string_view without_utf8_bom(std::string_view text) noexcept;

// ASCII lower case (other bytes unchanged).
std::string lower(std::string_view text);
// The items separated by `separator`: join({"a", "b"}, ", ") == "a, b".
std::string join(const std::vector<std::string>& items, std::string_view separator = ",");
// Every field between separators, untrimmed, empty ones included: split("a,,b", ',') has 3 fields,
// split("", ',') one empty field.
std::vector<std::string> split(std::string_view text, char separator = ',');
// The fields of a user's list: trimmed, empty ones dropped ("a, b,," -> {"a", "b"}).
std::vector<std::string> split_list(std::string_view text, char separator = ',');
// `value` with `significant_digits` significant digits as an ostream writes it ("%g"-like);
// "nan" for NaN. For messages and progress lines.
std::string format_number(double value, int significant_digits = 4);
// A coefficient of determination in tables: six decimals, so that 0.9999993 is not printed as 1
// and values near 0 keep a fixed width ("0.999999", "-0.000093", "nan").
std::string format_r2(double value);
// The shortest text that reads back to the same double (std::to_chars): "0.1", "1e-06", "nan".
std::string shortest_number(double value);

}  // namespace flt
