// The public flt::Model facade (include/flt/model.hpp) over flt::pipeline::Predictor
// (src/pipeline/predict.hpp): converts the public plain types to the internal ones and back, adds
// the molecule's title to error messages, and streams files with per-record results in input
// order. No numerics here: every value comes from the pipeline unchanged.
#include "flt/model.hpp"
#include "flt/version.hpp"

#include "chem/format.hpp"
#include "chem/point_set.hpp"
#include "chem/reader.hpp"
#include "pipeline/predict.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <utility>

namespace flt {

// The public header states the readers' default without including them (the public API sees
// only its own headers): the two must not drift apart.
static_assert(kDefaultMinDistance == chem::kDefaultMinDistance,
              "flt::kDefaultMinDistance must equal chem::kDefaultMinDistance (src/chem/reader.hpp)");

namespace {

// The first model member's element set, intersected with the others' (what every member accepts).
std::vector<int> common_elements(const pipeline::Predictor& predictor) {
  std::vector<int> out;
  const auto& members = predictor.members();
  for (std::int32_t z : members.front()->normalisation().elements) {
    const bool everywhere = std::all_of(members.begin(), members.end(),
                                        [z](const auto& m) { return m->supports_element(z); });
    if (everywhere) out.push_back(static_cast<int>(z));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// " ('title')" for messages, or nothing when the molecule has no title.
std::string titled(const std::string& title) {
  return title.empty() ? std::string() : " ('" + title + "')";
}

}  // namespace

// ---------------------------------------------------------------------------------------------

class Model::Impl {
 public:
  explicit Impl(pipeline::Predictor p) : predictor(std::move(p)) {
    auto list = std::make_shared<std::vector<Target>>();
    for (const auto& t : predictor.targets()) list->push_back(Target{t.name, t.unit, t.extensive});
    targets = std::move(list);
    elements = common_elements(predictor);
  }

  // Public molecule -> model input; the reason it is malformed otherwise (checks the public
  // struct's own invariants; the model checks elements, finiteness and charges).
  // `min_distance` (Angstrom, 0: none): two atoms closer than that make the molecule unusable, as
  // for records of files (chem::check_geometry).
  static std::optional<std::string> convert(const Molecule& in, models::Molecule& out,
                                            double min_distance = kDefaultMinDistance) {
    if (in.positions.size() != in.atomic_numbers.size())
      return "atom and position counts differ (" + std::to_string(in.atomic_numbers.size()) +
             " atomic numbers, " + std::to_string(in.positions.size()) + " positions)";
    if (!in.formal_charges.empty() && in.formal_charges.size() != in.atomic_numbers.size())
      return "formal_charges has " + std::to_string(in.formal_charges.size()) +
             " entries for " + std::to_string(in.atomic_numbers.size()) + " atoms";
    if (min_distance > 0 && in.positions.size() > 1) {
      chem::PointSet geometry;
      geometry.positions.resize(static_cast<Index>(in.positions.size()), 3);
      for (std::size_t i = 0; i < in.positions.size(); ++i)
        for (int c = 0; c < 3; ++c) geometry.positions(static_cast<Index>(i), c) = in.positions[i][static_cast<std::size_t>(c)];
      if (auto bad = chem::check_geometry(geometry, min_distance)) return bad;
    }
    out.atomic_numbers.assign(in.atomic_numbers.begin(), in.atomic_numbers.end());
    out.positions = in.positions;
    out.formal_charges.assign(in.formal_charges.begin(), in.formal_charges.end());
    return std::nullopt;
  }

  Prediction to_public(pipeline::MoleculePrediction&& p,
                       std::optional<std::size_t> forces_target = {}, bool per_atom = false) const {
    Prediction out;
    if (per_atom) {
      // Columns of intensive targets (NaN in the pipeline) become empty lists.
      const auto columns = [&](const Mat<double>& c) {
        std::vector<std::vector<double>> v(targets->size());
        for (std::size_t t = 0; t < v.size(); ++t)
          if ((*targets)[t].extensive)
            for (Index i = 0; i < c.rows(); ++i) v[t].push_back(c(i, static_cast<Index>(t)));
        return v;
      };
      out.contributions = columns(p.contributions);
      out.contributions_stddev = columns(p.contributions_stddev);
    }
    out.values = std::move(p.mean);
    out.stddev = std::move(p.stddev);
    out.targets = targets;
    if (forces_target) {
      const auto rows = [](const Mat<double>& f) {
        std::vector<std::array<double, 3>> v(static_cast<std::size_t>(f.rows()));
        for (Index i = 0; i < f.rows(); ++i) v[static_cast<std::size_t>(i)] = {f(i, 0), f(i, 1), f(i, 2)};
        return v;
      };
      out.forces = rows(p.forces);
      out.forces_stddev = rows(p.forces_stddev);
      out.forces_target = (*targets)[*forces_target].name;
      out.forces_unit = (*targets)[*forces_target].unit + "/A";
    }
    return out;
  }

  // The forces target for options asking for forces, or nullopt (InvalidArgument when the model
  // has no such target).
  std::optional<std::size_t> forces_target(bool forces, const std::string& name) const {
    if (!forces) return std::nullopt;
    return predictor.forces_target(name);
  }

  // Checks that per-atom contributions can be given (InvalidArgument when the model has no
  // extensive target) and passes the flag on.
  bool per_atom(bool wanted) const {
    if (wanted) predictor.contribution_targets();
    return wanted;
  }

  pipeline::Predictor predictor;
  std::shared_ptr<const std::vector<Target>> targets;
  std::vector<int> elements;
};

// ---------------------------------------------------------------------------------------------
// Prediction, Result, FileSummary

std::optional<std::size_t> Prediction::index(std::string_view name) const noexcept {
  if (!targets) return std::nullopt;
  for (std::size_t t = 0; t < targets->size(); ++t)
    if ((*targets)[t].name == name) return t;
  return std::nullopt;
}

namespace {
std::size_t require_index(const Prediction& p, std::string_view name) {
  if (auto i = p.index(name); i && *i < p.values.size()) return *i;
  std::string known;
  if (p.targets)
    for (const auto& t : *p.targets) known += (known.empty() ? "" : ", ") + t.name;
  throw InvalidArgument("flt::Prediction: no target '" + std::string(name) +
                        "' (the model predicts: " + (known.empty() ? "nothing" : known) + ")");
}
}  // namespace

double Prediction::value(std::string_view name) const { return values[require_index(*this, name)]; }

double Prediction::uncertainty(std::string_view name) const {
  const std::size_t i = require_index(*this, name);
  return i < stddev.size() ? stddev[i] : 0.0;
}

const std::string& Prediction::unit(std::string_view name) const {
  return (*targets)[require_index(*this, name)].unit;
}

const Prediction& Result::value() const {
  if (!prediction) throw InvalidArgument(error.empty() ? "no prediction" : error);
  return *prediction;
}

std::string FileSummary::describe() const {
  return "predicted " + std::to_string(predicted) + " of " + std::to_string(read) + " records (" +
         std::to_string(failed) + " failed)";
}

// ---------------------------------------------------------------------------------------------
// Model

Model::Model(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;
Model::Model(const Model& other) = default;
Model& Model::operator=(const Model& other) = default;
Model::Model(Model&& other) noexcept = default;
Model& Model::operator=(Model&& other) noexcept = default;

Model Model::load(const std::filesystem::path& path) {
  return Model(std::make_shared<const Impl>(pipeline::Predictor::load({path})));
}

Model Model::load_ensemble(const std::vector<std::filesystem::path>& paths) {
  if (paths.empty()) throw InvalidArgument("flt::Model::load_ensemble: no model files given");
  return Model(std::make_shared<const Impl>(pipeline::Predictor::load(paths)));
}

namespace {

namespace fs = std::filesystem;

// <prefix> of the libflt.so this code runs in (<prefix>/lib/libflt.so.0 or
// <prefix>/lib/<multiarch>/libflt.so.0), from the dynamic loader; empty if unknown. Makes an
// installed libflt find the model installed next to it wherever the prefix was moved.
std::vector<fs::path> library_prefixes() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&library_prefixes), &info) == 0 || info.dli_fname == nullptr)
    return {};
  std::error_code ec;
  fs::path lib = fs::weakly_canonical(fs::path(info.dli_fname), ec);
  if (ec || lib.empty()) return {};
  fs::path dir = lib.parent_path();
  return {dir.parent_path(), dir.parent_path().parent_path()};  // lib/ and lib/<multiarch>/
}

// Where Model::default_model_path looks (see model.hpp): $FLT_DEFAULT_MODEL alone when set;
// otherwise libflt's own installation first, then the pipeline's places (the source tree the
// library was built from, the running program's prefix) and the configured install directory.
std::vector<fs::path> default_candidates() {
  const char* env = std::getenv(pipeline::kDefaultModelEnv);
  if (env != nullptr && *env != '\0') return {fs::path(env)};
  const fs::path relative = fs::path("share") / "flt" / "models" / "default.flt";
  std::vector<fs::path> out;
  auto add = [&out](const fs::path& p) {
    if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  };
  for (const fs::path& prefix : library_prefixes())
    if (!prefix.empty()) add(prefix / relative);
  for (const fs::path& p : pipeline::default_model_candidates()) add(p);
#ifdef FLT_API_INSTALL_DATADIR
  add(fs::path(FLT_API_INSTALL_DATADIR) / "flt" / "models" / "default.flt");
#endif
  return out;
}

}  // namespace

std::filesystem::path Model::default_model_path() {
  const auto candidates = default_candidates();
  for (const auto& p : candidates) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(p, ec)) return p;
  }
  const char* env = std::getenv(pipeline::kDefaultModelEnv);
  if (env != nullptr && *env != '\0')
    throw ConfigError(std::string("flt::Model::default_model_path: the default model named by ") +
                      pipeline::kDefaultModelEnv + " does not exist: " + env);
  std::string places;
  for (const auto& p : candidates) places += (places.empty() ? "" : ", ") + p.string();
  throw ConfigError(
      "flt::Model::default_model_path: no default model found; looked in $" +
      std::string(pipeline::kDefaultModelEnv) + " (not set), " + places +
      ". Load a model file with flt::Model::load, set " + pipeline::kDefaultModelEnv +
      ", or install a trained model as <prefix>/share/flt/models/default.flt");
}

Model Model::load_default() { return load(default_model_path()); }

const std::vector<Target>& Model::targets() const noexcept { return *impl_->targets; }
const std::vector<int>& Model::elements() const noexcept { return impl_->elements; }
std::size_t Model::ensemble_size() const noexcept { return impl_->predictor.ensemble_size(); }

std::vector<double> Model::std_calibration() const {
  const auto& c = impl_->predictor.calibration();
  return c ? c->factors : std::vector<double>{};
}

std::string Model::std_calibration_method() const {
  const auto& c = impl_->predictor.calibration();
  return c ? c->method : std::string();
}

std::vector<std::filesystem::path> Model::files() const {
  std::vector<std::filesystem::path> out;
  for (const auto& m : impl_->predictor.members()) out.push_back(m->file().empty() ? std::filesystem::path(m->source()) : m->file());
  return out;
}

std::map<std::string, std::string> Model::metadata() const {
  return impl_->predictor.members().front()->metadata();
}

std::size_t Model::parameter_count() const noexcept {
  return impl_->predictor.members().front()->parameter_count();
}

std::optional<std::string> Model::unsupported_reason(const Molecule& molecule) const {
  models::Molecule m;
  if (auto bad = Impl::convert(molecule, m)) return bad;
  return impl_->predictor.unsupported_reason(m);
}

void Model::set_threads(int threads) {
  if (threads < 0) throw InvalidArgument("flt::Model::set_threads: threads must be >= 0");
  threads_ = threads;
}
int Model::threads() const noexcept { return threads_; }

Prediction Model::predict(const Molecule& molecule) const {
  models::Molecule m;
  std::optional<std::string> bad = Impl::convert(molecule, m);
  if (!bad) bad = impl_->predictor.unsupported_reason(m);
  if (bad) throw InvalidArgument("flt::Model::predict: molecule" + titled(molecule.title) +
                                 " cannot be predicted: " + *bad);
  auto results = impl_->predictor.predict_batch(std::span<const models::Molecule>(&m, 1), threads_);
  if (!results.front().ok())
    throw NumericalError("flt::Model::predict: molecule" + titled(molecule.title) + ": " + results.front().error);
  return impl_->to_public(std::move(*results.front().prediction));
}

std::string Model::forces_target(const std::string& name) const {
  return (*impl_->targets)[impl_->predictor.forces_target(name)].name;
}

Prediction Model::predict_with_forces(const Molecule& molecule, const std::string& target) const {
  models::Molecule m;
  std::optional<std::string> bad = Impl::convert(molecule, m);
  if (!bad) bad = impl_->predictor.unsupported_reason(m);
  if (bad) throw InvalidArgument("flt::Model::predict_with_forces: molecule" + titled(molecule.title) +
                                 " cannot be predicted: " + *bad);
  const auto forces_target = impl_->forces_target(true, target);
  auto results = impl_->predictor.predict_batch(std::span<const models::Molecule>(&m, 1), threads_,
                                                forces_target);
  if (!results.front().ok())
    throw NumericalError("flt::Model::predict_with_forces: molecule" + titled(molecule.title) + ": " +
                         results.front().error);
  return impl_->to_public(std::move(*results.front().prediction), forces_target);
}

std::vector<Result> Model::predict(std::span<const Molecule> molecules,
                                   const PredictOptions& options) const {
  if (options.batch_size == 0) throw InvalidArgument("flt::PredictOptions: batch_size must be >= 1");
  if (options.threads < 0) throw InvalidArgument("flt::PredictOptions: threads must be >= 0");
  if (!(options.min_distance >= 0)) throw InvalidArgument("flt::PredictOptions: min_distance must be >= 0");
  const int threads = options.threads > 0 ? options.threads : threads_;
  const pipeline::ScopedThreads scoped_threads(threads);  // reading (conformers) too
  const auto forces_target = impl_->forces_target(options.forces, options.forces_target);
  const bool per_atom = impl_->per_atom(options.per_atom);
  std::vector<Result> out(molecules.size());
  std::vector<models::Molecule> batch;
  std::vector<std::size_t> where;  // position in `molecules` of each batch entry
  auto flush = [&] {
    if (batch.empty()) return;
    auto results = impl_->predictor.predict_batch(std::span<const models::Molecule>(batch), threads,
                                                  forces_target, per_atom);
    for (std::size_t k = 0; k < results.size(); ++k) {
      Result& r = out[where[k]];
      if (results[k].ok()) {
        r.prediction = impl_->to_public(std::move(*results[k].prediction), forces_target, per_atom);
      } else {
        r.error = "molecule " + std::to_string(where[k]) + titled(molecules[where[k]].title) +
                  ": " + results[k].error;
      }
    }
    batch.clear();
    where.clear();
  };
  for (std::size_t i = 0; i < molecules.size(); ++i) {
    models::Molecule m;
    if (auto bad = Impl::convert(molecules[i], m, options.min_distance)) {
      out[i].error = "molecule " + std::to_string(i) + titled(molecules[i].title) + ": " + *bad;
      continue;
    }
    batch.push_back(std::move(m));
    where.push_back(i);
    if (batch.size() >= options.batch_size) flush();
  }
  flush();
  return out;
}

FileSummary Model::predict_file(const std::filesystem::path& path,
                                const std::function<void(const RecordResult&)>& sink,
                                const FileOptions& options) const {
  if (options.batch_size == 0) throw InvalidArgument("flt::FileOptions: batch_size must be >= 1");
  if (options.threads < 0) throw InvalidArgument("flt::FileOptions: threads must be >= 0");
  if (!(options.min_distance >= 0)) throw InvalidArgument("flt::FileOptions: min_distance must be >= 0");
  chem::ReadOptions read;
  read.format = options.format.empty() ? chem::Format::unknown : chem::format_from_name(options.format);
  read.add_hydrogens = options.add_hydrogens;
  read.missing_3d = options.generate_conformers ? chem::Missing3D::generate : chem::Missing3D::error;
  const auto trained = pipeline::trained_conformers(impl_->predictor);
  read.seed = options.seed.value_or(trained ? trained->seed : read.seed);
  read.optimize = trained ? trained->optimize : read.optimize;
  if (options.optimize) {
    try {
      read.optimize = chem::optimize_from_name(*options.optimize);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(std::string("flt::FileOptions: optimize: ") + e.what());
    }
  }
  read.conformer_attempts = options.conformer_attempts.value_or(trained ? trained->attempts : read.conformer_attempts);
  if (read.conformer_attempts < 0) throw InvalidArgument("flt::FileOptions: conformer_attempts must be >= 0");
  read.sanitize = options.sanitize;
  read.min_distance = options.min_distance;
  read.smiles_column = options.smiles_column;
  try {
    read.periodic = chem::periodic_from_name(options.periodic);
    read.pdb_water = chem::pdb_part_from_name(options.pdb_water);
    read.pdb_hetero = chem::pdb_part_from_name(options.pdb_hetero);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(std::string("flt::FileOptions: ") + e.what());
  }
  read.keep_molecule = false;  // only coordinates are needed here
  const int threads = options.threads > 0 ? options.threads : threads_;
  const pipeline::ScopedThreads scoped_threads(threads);  // reading (conformers) too
  const auto forces_target = impl_->forces_target(options.forces, options.forces_target);
  const bool per_atom = impl_->per_atom(options.per_atom);

  // Records wait here, in input order, until their batch is predicted; failed records are queued
  // too so that the sink sees every record in order.
  std::deque<RecordResult> pending;
  std::vector<models::Molecule> batch;
  std::vector<RecordResult*> slots;  // pending entry of each batch molecule (deque keeps addresses)
  FileSummary summary;
  auto emit = [&](std::size_t keep) {
    while (pending.size() > keep) {
      RecordResult& r = pending.front();
      ++summary.read;
      if (r.ok()) ++summary.predicted; else ++summary.failed;
      sink(r);
      pending.pop_front();
    }
  };
  auto flush = [&] {
    if (!batch.empty()) {
      auto results = impl_->predictor.predict_batch(std::span<const models::Molecule>(batch), threads,
                                                    forces_target, per_atom);
      for (std::size_t k = 0; k < results.size(); ++k) {
        if (results[k].ok())
          slots[k]->prediction =
              impl_->to_public(std::move(*results[k].prediction), forces_target, per_atom);
        else slots[k]->error = results[k].error;
      }
      batch.clear();
      slots.clear();
    }
    emit(0);
  };

  // Throws IoError / InvalidArgument when the input cannot be opened at all.
  auto reader = chem::MoleculeReader::open(path.string(), read);
  for (;;) {
    std::optional<chem::PointSet> points;
    try {
      points = reader->next();
    } catch (const InputError& e) {
      RecordResult r;
      r.file = e.file();
      r.record = e.record();
      if (e.record() > 0) r.title = reader->last_rejected().partial.title;  // as far as it was read
      r.error = e.reason();
      pending.push_back(std::move(r));
      continue;
    } catch (const IoError& e) {
      // A member of a directory or archive could not be read; the reader goes on with the next.
      RecordResult r;
      r.file = e.path();
      r.error = e.what();
      pending.push_back(std::move(r));
      continue;
    }
    if (!points) break;
    RecordResult r;
    r.file = points->source;
    r.record = points->record;
    r.title = points->title;
    models::Molecule m = pipeline::to_molecule(*points);
    std::optional<std::string> bad = impl_->predictor.unsupported_reason(m);
    if (bad) r.error = *bad;
    pending.push_back(std::move(r));
    if (!bad) {
      batch.push_back(std::move(m));
      slots.push_back(&pending.back());
      if (batch.size() >= options.batch_size) flush();
    } else if (batch.empty()) {
      emit(0);
    }
  }
  flush();
  return summary;
}

}  // namespace flt
