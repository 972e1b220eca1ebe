// UTF-8 validation for text read from files and for names and values written into them.
#pragma once

#include <string_view>

namespace flt::io {

// True if `text` is well-formed UTF-8 (no overlong forms, no surrogates, <= U+10FFFF).
bool is_valid_utf8(std::string_view text) noexcept;

}  // namespace flt::io
