// flt._flt: the compiled part of the Python package `flt` (src/python/flt/__init__.py is the
// user-facing layer). A thin pybind11 binding of the public C++ API (flt/flt.hpp, flt/rdkit.hpp)
// (training is flt._flt_train, train.cpp), so Python sees what C++ callers see:
//   - Model: load / load_ensemble / load_default, targets, elements, metadata, threads, and
//     batch prediction of molecules given as arrays or as RDKit molecules (passed as RDKit's own
//     binary pickle, rebuilt here with the same RDKit release, then flt::to_molecule), returning
//     numpy arrays with NaN and a reason for each molecule that cannot be predicted;
//   - predict_file: streams a molecule file, calling back into Python once per record;
//   - flt::Error and its subclasses as Python exceptions (flt.Error, flt.InvalidInput, ...).
// The GIL is released while the network runs; flt::Model is thread-safe, so several Python threads
// may predict with one Model at once.
#include <flt/flt.hpp>
#include <flt/rdkit.hpp>

#include "python_log.hpp"

#include <GraphMol/MolPickler.h>
#include <GraphMol/ROMol.h>

#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

// libflt's log messages (flt/log.hpp) go to logging.getLogger("flt"). libflt may log from threads
// that do not hold the GIL (OpenMP workers, or the caller while the GIL is released for a
// prediction): those messages wait here, in order, and are logged by flush_log(), which the
// package calls when such a call returns (and predict_file at every record). Taking the GIL in the
// sink instead could deadlock against a thread that holds it and waits for the workers.
struct PendingLog {
  std::mutex mutex;
  std::vector<std::pair<flt::LogLevel, std::string>> messages;
};
PendingLog& pending_log() {
  static auto* pending = new PendingLog;  // leaked: libflt may log during static destruction
  return *pending;
}

void flush_log() {  // with the GIL
  std::vector<std::pair<flt::LogLevel, std::string>> messages;
  {
    std::lock_guard lock(pending_log().mutex);
    messages.swap(pending_log().messages);
  }
  for (const auto& [level, text] : messages) flt::python::log_to_python(level, text);
}

// Flushes the waiting messages when a binding returns (or throws), with the GIL held again.
struct FlushLogAtEnd {
  FlushLogAtEnd() = default;
  FlushLogAtEnd(const FlushLogAtEnd&) = delete;
  FlushLogAtEnd& operator=(const FlushLogAtEnd&) = delete;
  ~FlushLogAtEnd() {
    try {
      flush_log();
    } catch (...) {  // never from a destructor
    }
  }
};

void python_log_sink(flt::LogLevel level, std::string_view message) {
  if (PyGILState_Check() != 0) {
    flush_log();  // earlier messages first
    flt::python::log_to_python(level, message);
    return;
  }
  std::lock_guard lock(pending_log().mutex);
  pending_log().messages.emplace_back(level, std::string(message));
}

// One molecule handed over from Python: arrays, or an RDKit pickle to convert here.
struct MoleculeInput {
  std::optional<flt::Molecule> molecule;  // converted (or given as arrays)
  std::string error;                      // why it could not be converted
};

// Arrays -> flt::Molecule. z: (N,) integers; xyz: (N, 3) Angstrom; charges: (N,) or None.
flt::Molecule molecule_from_arrays(const py::array_t<long long, py::array::c_style | py::array::forcecast>& z,
                                   const py::array_t<double, py::array::c_style | py::array::forcecast>& xyz,
                                   const py::object& charges, std::string title) {
  if (z.ndim() != 1) throw flt::InvalidArgument("atomic numbers must be a 1-D array");
  if (xyz.ndim() != 2 || xyz.shape(1) != 3)
    throw flt::InvalidArgument("coordinates must be an (N, 3) array in Angstrom");
  if (xyz.shape(0) != z.shape(0))
    throw flt::InvalidArgument(std::to_string(z.shape(0)) + " atomic numbers but " +
                               std::to_string(xyz.shape(0)) + " coordinate rows");
  flt::Molecule m;
  m.title = std::move(title);
  const auto zs = z.unchecked<1>();
  const auto rs = xyz.unchecked<2>();
  for (py::ssize_t i = 0; i < z.shape(0); ++i) {
    m.atomic_numbers.push_back(static_cast<int>(zs(i)));
    m.positions.push_back({rs(i, 0), rs(i, 1), rs(i, 2)});
  }
  if (!charges.is_none()) {
    const auto q = py::array_t<long long, py::array::c_style | py::array::forcecast>::ensure(charges);
    if (!q || q.ndim() != 1 || q.shape(0) != z.shape(0))
      throw flt::InvalidArgument("formal charges must be a 1-D integer array with one entry per atom");
    const auto qs = q.unchecked<1>();
    for (py::ssize_t i = 0; i < q.shape(0); ++i) m.formal_charges.push_back(static_cast<int>(qs(i)));
  }
  return m;
}

// RDKit pickle -> flt::Molecule through the C++ API's own conversion (hydrogen policy, 2-D check).
flt::Molecule molecule_from_rdkit_pickle(const std::string& pickle, int conf_id, bool add_hydrogens) {
  RDKit::ROMol mol;
  try {
    RDKit::MolPickler::molFromPickle(pickle, mol);
  } catch (const std::exception& e) {
    throw flt::InvalidArgument(std::string("cannot read the RDKit molecule: ") + e.what());
  }
  return flt::to_molecule(mol, conf_id, add_hydrogens);
}

// Predictions of a batch as numpy arrays: values and stddev (S x T, NaN where not predicted) and
// the reason per molecule (None where predicted).
// The forces of a prediction as an (n, 3) array, or None when there are none.
py::object forces_array(const std::vector<std::array<double, 3>>& forces, bool asked) {
  if (!asked) return py::none();
  py::array_t<double> out({static_cast<py::ssize_t>(forces.size()), py::ssize_t{3}});
  auto f = out.mutable_unchecked<2>();
  for (std::size_t i = 0; i < forces.size(); ++i)
    for (py::ssize_t c = 0; c < 3; ++c) f(static_cast<py::ssize_t>(i), c) = forces[i][static_cast<std::size_t>(c)];
  return out;
}

// Per-atom contributions of a prediction as an (n, T) array (NaN columns for intensive targets,
// which have none), or None when there are none.
py::object contributions_array(const std::optional<flt::Prediction>& prediction, std::size_t targets,
                               bool asked, bool spread) {
  if (!asked || !prediction) return py::none();
  const auto& c = spread ? prediction->contributions_stddev : prediction->contributions;
  std::size_t n = 0;
  for (const auto& column : c) n = std::max(n, column.size());
  py::array_t<double> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(targets)});
  auto a = out.mutable_unchecked<2>();
  for (std::size_t t = 0; t < targets; ++t)
    for (std::size_t i = 0; i < n; ++i)
      a(static_cast<py::ssize_t>(i), static_cast<py::ssize_t>(t)) =
          t < c.size() && i < c[t].size() ? c[t][i] : std::numeric_limits<double>::quiet_NaN();
  return out;
}

py::tuple results_to_arrays(const std::vector<flt::Result>& results, std::size_t targets,
                            bool forces, bool per_atom) {
  const auto S = static_cast<py::ssize_t>(results.size());
  const auto T = static_cast<py::ssize_t>(targets);
  py::array_t<double> values({S, T});
  py::array_t<double> stddev({S, T});
  auto v = values.mutable_unchecked<2>();
  auto s = stddev.mutable_unchecked<2>();
  py::list errors, force_list, force_std_list, contribution_list, contribution_std_list;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (py::ssize_t i = 0; i < S; ++i) {
    const flt::Result& r = results[static_cast<std::size_t>(i)];
    for (py::ssize_t t = 0; t < T; ++t) {
      v(i, t) = r.ok() ? r.prediction->values[static_cast<std::size_t>(t)] : nan;
      s(i, t) = r.ok() ? r.prediction->stddev[static_cast<std::size_t>(t)] : nan;
    }
    if (r.ok()) errors.append(py::none());
    else errors.append(r.error);
    force_list.append(forces_array(r.ok() ? r.prediction->forces : std::vector<std::array<double, 3>>{},
                                   forces && r.ok()));
    force_std_list.append(forces_array(
        r.ok() ? r.prediction->forces_stddev : std::vector<std::array<double, 3>>{}, forces && r.ok()));
    contribution_list.append(contributions_array(r.prediction, targets, per_atom, false));
    contribution_std_list.append(contributions_array(r.prediction, targets, per_atom, true));
  }
  return py::make_tuple(values, stddev, errors, force_list, force_std_list, contribution_list,
                        contribution_std_list);
}

}  // namespace

PYBIND11_MODULE(_flt, m) {
  m.doc() = "Compiled core of the flt package (use `import flt`).";
  m.attr("__version__") = flt::version();
  // The default of min_distance (Angstrom), for the Python signatures.
  m.attr("DEFAULT_MIN_DISTANCE") = flt::kDefaultMinDistance;
  flt::set_log_sink(python_log_sink);
  // Back to stderr before the interpreter goes: nothing may call into Python after that.
  py::module_::import("atexit").attr("register")(py::cpp_function([] {
    flush_log();
    flt::set_log_sink(flt::stderr_log_sink());
  }));
  m.def("flush_log", &flush_log, "Logs the messages libflt left while the GIL was released.");

  // Exceptions: the C++ hierarchy, with Python's built-in bases where they apply.
  static py::exception<flt::Error> error(m, "Error");
  static py::exception<flt::InvalidArgument> invalid(m, "InvalidInput",
                                                     py::make_tuple(error, py::handle(PyExc_ValueError)).ptr());
  static py::exception<flt::ConfigError> config(m, "ConfigError", error.ptr());
  static py::exception<flt::IoError> io(m, "IoError", py::make_tuple(error, py::handle(PyExc_OSError)).ptr());
  static py::exception<flt::InputError> input(m, "InputError",
                                              py::make_tuple(error, py::handle(PyExc_ValueError)).ptr());
  static py::exception<flt::ModelFileError> model_file(m, "ModelFileError", error.ptr());
  static py::exception<flt::NumericalError> numerical(m, "NumericalError",
                                                     py::make_tuple(error, py::handle(PyExc_ArithmeticError)).ptr());
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const flt::InvalidArgument& e) {
      invalid(e.what());
    } catch (const flt::ConfigError& e) {
      config(e.what());
    } catch (const flt::IoError& e) {
      io(e.what());
    } catch (const flt::InputError& e) {
      input(e.what());
    } catch (const flt::ModelFileError& e) {
      model_file(e.what());
    } catch (const flt::NumericalError& e) {
      numerical(e.what());
    } catch (const flt::Error& e) {
      error(e.what());
    }
  });

  py::class_<flt::Model>(m, "Model")
      .def_static("load", &flt::Model::load, py::arg("path"), py::call_guard<py::gil_scoped_release>())
      .def_static("load_ensemble", &flt::Model::load_ensemble, py::arg("paths"),
                  py::call_guard<py::gil_scoped_release>())
      .def_static("load_default", &flt::Model::load_default, py::call_guard<py::gil_scoped_release>())
      .def_static("default_model_path", &flt::Model::default_model_path)
      .def_property_readonly("targets",
                             [](const flt::Model& model) {
                               py::list out;
                               for (const auto& t : model.targets())
                                 out.append(py::make_tuple(t.name, t.unit, t.extensive));
                               return out;
                             })
      .def_property_readonly("elements", &flt::Model::elements)
      .def_property_readonly("ensemble_size", &flt::Model::ensemble_size)
      .def_property_readonly("std_calibration", &flt::Model::std_calibration,
                             "per target, the factor stddev carries (a calibrated ensemble file); [] otherwise")
      .def_property_readonly("std_calibration_method", &flt::Model::std_calibration_method,
                             "how those factors were fitted: 'coverage' or 'zscaling'; '' otherwise")
      .def_property_readonly("files", &flt::Model::files)
      .def_property_readonly("parameter_count", &flt::Model::parameter_count)
      .def("metadata", &flt::Model::metadata)
      .def_property("threads", &flt::Model::threads, &flt::Model::set_threads)
      .def("forces_target", &flt::Model::forces_target, py::arg("name") = "")
      // items: list of ("arrays", z, xyz, charges, title) or ("rdkit", pickle, conf_id, add_h, title)
      .def(
          "predict_batch",
          [](const flt::Model& model, const py::list& items, int threads, std::size_t batch_size,
             bool forces, const std::string& forces_target, bool per_atom, double min_distance) {
            // Convert under the GIL (numpy and bytes access), predict without it.
            std::vector<MoleculeInput> inputs(items.size());
            for (std::size_t i = 0; i < items.size(); ++i) {
              const py::tuple item = items[i].cast<py::tuple>();
              const std::string kind = item[0].cast<std::string>();
              try {
                if (kind == "arrays") {
                  inputs[i].molecule = molecule_from_arrays(
                      item[1].cast<py::array_t<long long, py::array::c_style | py::array::forcecast>>(),
                      item[2].cast<py::array_t<double, py::array::c_style | py::array::forcecast>>(),
                      item[3], item[4].cast<std::string>());
                } else if (kind == "rdkit") {
                  const std::string pickle = item[1].cast<std::string>();
                  const int conf_id = item[2].cast<int>();
                  const bool add_h = item[3].cast<bool>();
                  py::gil_scoped_release release;
                  inputs[i].molecule = molecule_from_rdkit_pickle(pickle, conf_id, add_h);
                } else {
                  throw flt::InvalidArgument("unknown molecule kind '" + kind + "'");
                }
              } catch (const flt::Error& e) {
                inputs[i].error = e.what();
              } catch (const py::cast_error& e) {
                inputs[i].error = std::string("not a molecule: ") + e.what();
              }
            }
            std::vector<flt::Result> results;
            const FlushLogAtEnd flush;
            {
              py::gil_scoped_release release;
              // Molecules that could not be converted stay in place as empty placeholders (their
              // result is replaced by the conversion error), so messages number molecules as the
              // caller's list does.
              std::vector<flt::Molecule> molecules(inputs.size());
              for (std::size_t i = 0; i < inputs.size(); ++i)
                if (inputs[i].molecule) molecules[i] = std::move(*inputs[i].molecule);
              flt::PredictOptions options;
              options.threads = threads;
              options.batch_size = batch_size;
              options.forces = forces;
              options.forces_target = forces_target;
              options.per_atom = per_atom;
              options.min_distance = min_distance;
              results = model.predict(std::span<const flt::Molecule>(molecules), options);
              for (std::size_t i = 0; i < inputs.size(); ++i)
                if (!inputs[i].molecule) results[i] = flt::Result{std::nullopt, inputs[i].error};
            }
            return results_to_arrays(results, model.targets().size(), forces, per_atom);
          },
          py::arg("items"), py::arg("threads") = 0, py::arg("batch_size") = 64,
          py::arg("forces") = false, py::arg("forces_target") = "", py::arg("per_atom") = false, py::arg("min_distance") = flt::kDefaultMinDistance)
      .def(
          "predict_file",
          [](const flt::Model& model, const std::filesystem::path& path, const py::function& sink,
             const std::string& format, bool add_hydrogens, bool generate_conformers, std::optional<unsigned> seed,
             std::optional<std::string> optimize, std::optional<int> conformer_attempts, bool sanitize,
             const std::string& smiles_column, const std::string& periodic, const std::string& pdb_water,
             const std::string& pdb_hetero, double min_distance, int threads, std::size_t batch_size, bool forces,
             const std::string& forces_target, bool per_atom) {
            flt::FileOptions options;
            options.threads = threads;
            options.batch_size = batch_size;
            options.format = format;
            options.add_hydrogens = add_hydrogens;
            options.generate_conformers = generate_conformers;
            options.seed = seed;
            options.optimize = std::move(optimize);
            options.conformer_attempts = conformer_attempts;
            options.sanitize = sanitize;
            options.smiles_column = smiles_column;
            options.periodic = periodic;
            options.pdb_water = pdb_water;
            options.pdb_hetero = pdb_hetero;
            options.min_distance = min_distance;
            options.forces = forces;
            options.forces_target = forces_target;
            options.per_atom = per_atom;
            const double nan = std::numeric_limits<double>::quiet_NaN();
            const std::size_t T = model.targets().size();
            flt::FileSummary summary;
            const FlushLogAtEnd flush;
            {
              py::gil_scoped_release release;  // re-acquired by the sink and when the block ends
              summary = model.predict_file(
                path,
                [&](const flt::RecordResult& r) {
                  py::gil_scoped_acquire acquire;
                  flush_log();  // what reading the record logged, before the record
                  py::array_t<double> values(static_cast<py::ssize_t>(T));
                  py::array_t<double> stddev(static_cast<py::ssize_t>(T));
                  auto v = values.mutable_unchecked<1>();
                  auto s = stddev.mutable_unchecked<1>();
                  for (std::size_t t = 0; t < T; ++t) {
                    v(static_cast<py::ssize_t>(t)) = r.ok() ? r.prediction->values[t] : nan;
                    s(static_cast<py::ssize_t>(t)) = r.ok() ? r.prediction->stddev[t] : nan;
                  }
                  // An exception raised by the Python callback propagates as error_already_set.
                  sink(r.file, r.record, r.title, values, stddev,
                       r.ok() ? py::object(py::none()) : py::object(py::str(r.error)),
                       forces_array(r.ok() ? r.prediction->forces : std::vector<std::array<double, 3>>{},
                                    forces && r.ok()),
                       contributions_array(r.prediction, T, per_atom, false),
                       contributions_array(r.prediction, T, per_atom, true),
                       forces_array(r.ok() ? r.prediction->forces_stddev : std::vector<std::array<double, 3>>{},
                                    forces && r.ok()));
                },
                options);
            }
            return py::make_tuple(summary.read, summary.predicted, summary.failed);
          },
          py::arg("path"), py::arg("sink"), py::arg("format") = "", py::arg("add_hydrogens") = true,
          py::arg("generate_conformers") = false, py::arg("seed") = py::none(),
          py::arg("optimize") = py::none(), py::arg("conformer_attempts") = py::none(), py::arg("sanitize") = true,
          py::arg("smiles_column") = "", py::arg("periodic") = "error", py::arg("pdb_water") = "drop",
          py::arg("pdb_hetero") = "keep",
          py::arg("min_distance") = flt::kDefaultMinDistance, py::arg("threads") = 0, py::arg("batch_size") = 64,
          py::arg("forces") = false, py::arg("forces_target") = "", py::arg("per_atom") = false);
}
