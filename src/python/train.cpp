// flt._flt_train.train: `flt train` from Python. The public C++ API (libflt) predicts only, so this
// module links the training pipeline (flt_pipeline_train) statically, as the `flt` program does;
// it is a module of its own so that flt._flt calls libflt's functions (its log sink among them)
// and not the copies linked in here. It takes the same options as `flt train`: its argument list
// (built by flt.train from keyword arguments and a config file). Progress reaches Python through
// a per-epoch callback; every step polls for signals, so Ctrl-C (KeyboardInterrupt) stops the run
// with the last completed epoch's checkpoint on disk (resumable with resume=True). Library log
// messages go to Python's logging module (logger "flt"). Errors are flt's C++ exceptions, which
// the translator flt._flt registers (imported first) turns into flt.ConfigError etc.
#include "core/error.hpp"
#include "core/log.hpp"
#include "pipeline/train.hpp"
#include "python_log.hpp"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cmath>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

namespace py = pybind11;

namespace {

// Forwards flt's log messages to logging.getLogger("flt") while it is installed.
class PythonLogScope {
 public:
  PythonLogScope() {
    previous_ = flt::set_log_sink([](flt::LogLevel level, std::string_view message) {
      py::gil_scoped_acquire acquire;
      flt::python::log_to_python(level, message);
    });
  }
  ~PythonLogScope() { flt::set_log_sink(previous_); }
  PythonLogScope(const PythonLogScope&) = delete;
  PythonLogScope& operator=(const PythonLogScope&) = delete;

 private:
  flt::LogSink previous_;
};

py::dict epoch_to_dict(const flt::pipeline::EpochReport& report) {
  static const std::vector<flt::pipeline::DatasetTarget> none;
  const auto& targets = report.targets ? *report.targets : none;
  py::dict d;
  d["epoch"] = report.record.epoch;
  d["step"] = report.record.step;
  d["lr"] = report.record.learning_rate;
  d["train_loss"] = report.record.train_loss;
  d["val_loss"] = report.record.val_loss;
  d["seconds"] = report.record.seconds;
  d["improved"] = report.improved;
  py::dict train_mae, val_mae, units;
  for (std::size_t t = 0; t < targets.size() && t < report.record.train_mae.size(); ++t) {
    train_mae[py::str(targets[t].name)] = report.record.train_mae[t];
    val_mae[py::str(targets[t].name)] = report.record.val_mae[t];
    units[py::str(targets[t].name)] = targets[t].unit;
  }
  d["train_mae"] = train_mae;
  d["val_mae"] = val_mae;
  d["units"] = units;
  if (!std::isnan(report.val_force_mae)) d["val_force_mae"] = report.val_force_mae;
  return d;
}

}  // namespace

PYBIND11_MODULE(_flt_train, m) {
  m.doc() = "Training part of the flt package (use flt.train).";
  m.def(
      "train",
      [](const std::vector<std::string>& args, const py::object& on_epoch, bool progress) {
        // Option errors are the caller's: ConfigError reaches Python as flt.ConfigError.
        const flt::pipeline::TrainConfig config = flt::pipeline::parse_train_command_line(args);
        flt::pipeline::TrainOutput output;
        if (progress) output.progress = &std::cerr;
        output.on_step = [] {
          py::gil_scoped_acquire acquire;
          if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        };
        flt::pipeline::TrainResult result;
        {
          PythonLogScope log;
          if (!on_epoch.is_none()) {
            output.on_epoch = [&](const flt::pipeline::EpochReport& report) {
              py::gil_scoped_acquire acquire;
              on_epoch(epoch_to_dict(report));
            };
          }
          py::gil_scoped_release release;
          result = flt::pipeline::run_training(config, output);
        }
        py::dict out;
        out["run_dir"] = result.run_dir;
        out["model_path"] = result.model_path;
        out["epochs_run"] = result.epochs_run;
        out["best_epoch"] = result.best_epoch;
        out["stopped_early"] = result.stopped_early;
        out["seconds"] = result.seconds;
        out["train_size"] = result.train_size;
        out["validation_size"] = result.validation_size;
        out["test_size"] = result.test_size;
        out["data_checksum"] = result.data_checksum;
        out["skipped_records"] = result.skipped_records;
        py::list metrics;
        for (std::size_t t = 0; t < result.test_metrics.size() && t < result.targets.size(); ++t) {
          const auto& mt = result.test_metrics[t];
          py::dict row;
          row["target"] = result.targets[t].name;
          row["unit"] = result.targets[t].unit;
          row["count"] = mt.count;
          row["mae"] = mt.mae;
          row["rmse"] = mt.rmse;
          row["r2"] = mt.r2;
          metrics.append(row);
        }
        if (result.test_force_metrics) {
          const auto& mt = *result.test_force_metrics;
          py::dict row;
          row["target"] = result.force_target + " forces";
          row["unit"] = result.force_unit;
          row["count"] = mt.count;
          row["mae"] = mt.mae;
          row["rmse"] = mt.rmse;
          row["r2"] = mt.r2;
          metrics.append(row);
        }
        out["test_metrics"] = metrics;
        out["summary"] = flt::pipeline::format_summary(result);
        return out;
      },
      py::arg("args"), py::arg("on_epoch") = py::none(), py::arg("progress") = false);
}
