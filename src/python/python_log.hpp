// flt's log messages into Python's logging module (logger "flt"), for both extension modules
// (flt._flt and flt._flt_train). Call with the GIL held.
#pragma once

#include "../include/flt/log.hpp"

#include <pybind11/pybind11.h>

#include <string>
#include <string_view>

namespace flt::python {

inline void log_to_python(LogLevel level, std::string_view message) {
  static const int levels[] = {10, 20, 30, 40};  // logging.DEBUG ... logging.ERROR
  try {
    pybind11::module_::import("logging")
        .attr("getLogger")("flt")
        .attr("log")(levels[static_cast<int>(level)], std::string(message));
  } catch (const pybind11::error_already_set&) {
    // A broken logging configuration must not turn a prediction or a training into an error.
  }
}

}  // namespace flt::python
