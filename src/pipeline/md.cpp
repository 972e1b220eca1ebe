#include "pipeline/md.hpp"

#include "chem/elements.hpp"
#include "core/text.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/random.hpp"
#include "io/units.hpp"

#include <cmath>
#include <sstream>

namespace flt::pipeline {
namespace {

constexpr double kBoltzmannEv = 8.617333262e-5;  // eV/K

// Sum p^2 / (2 m): eV for momenta in sqrt(amu eV) and masses in amu.
double kinetic_energy(const Mat<double>& p, const std::vector<double>& mass) {
  double e = 0;
  for (Index i = 0; i < p.rows(); ++i) {
    e += 0.5 * (p(i, 0) * p(i, 0) + p(i, 1) * p(i, 1) + p(i, 2) * p(i, 2)) / mass[static_cast<std::size_t>(i)];
  }
  return e;
}

// Degrees of freedom of an isolated molecule with its centre-of-mass motion removed.
double degrees_of_freedom(Index atoms) { return atoms > 1 ? 3.0 * static_cast<double>(atoms) - 3.0 : 3.0; }

void remove_centre_of_mass_momentum(Mat<double>& p, const std::vector<double>& mass) {
  double momentum[3] = {0, 0, 0};
  double total = 0;
  for (Index i = 0; i < p.rows(); ++i) {
    for (int c = 0; c < 3; ++c) momentum[c] += p(i, c);
    total += mass[static_cast<std::size_t>(i)];
  }
  for (Index i = 0; i < p.rows(); ++i) {
    for (int c = 0; c < 3; ++c) p(i, c) -= mass[static_cast<std::size_t>(i)] * momentum[c] / total;
  }
}

void velocities_of(const Mat<double>& p, const std::vector<double>& mass, Mat<double>& v) {
  for (Index i = 0; i < p.rows(); ++i) {
    for (int c = 0; c < 3; ++c) v(i, c) = p(i, c) / mass[static_cast<std::size_t>(i)] * kAseTimePerFs;
  }
}

}  // namespace

std::vector<double> atomic_masses(const models::Molecule& molecule) {
  std::vector<double> out;
  out.reserve(molecule.atomic_numbers.size());
  for (const auto z : molecule.atomic_numbers) out.push_back(chem::standard_atomic_weight(z));
  return out;
}

MdSummary run_nve(const Predictor& predictor, const models::Molecule& start,
                  const MdOptions& options, const std::function<void(const MdFrame&)>& on_frame) {
  if (!(options.timestep_fs > 0) || !std::isfinite(options.timestep_fs)) {
    throw InvalidArgument("molecular dynamics: the time step must be a positive number of fs");
  }
  if (!(options.temperature_k >= 0)) {
    throw InvalidArgument("molecular dynamics: the temperature must be >= 0 K");
  }
  if (auto reason = predictor.unsupported_reason(start)) {
    throw InvalidArgument("molecular dynamics: the model cannot predict this molecule: " + *reason);
  }
  const std::size_t target = predictor.forces_target(options.target);
  const models::TargetSpec& spec = predictor.targets()[target];
  // The model's energy unit to eV (throws InvalidArgument naming the unit when it is no energy).
  const double to_ev = io::convert(1.0, spec.unit, "eV");

  models::Molecule molecule = start;
  const Index n = static_cast<Index>(molecule.atomic_numbers.size());
  const std::vector<double> mass = options.masses.empty() ? atomic_masses(molecule) : options.masses;
  if (mass.size() != molecule.atomic_numbers.size())
    throw InvalidArgument("molecular dynamics: " + std::to_string(mass.size()) + " masses for " +
                          std::to_string(n) + " atoms");
  for (const double m : mass)
    if (!(m > 0) || !std::isfinite(m)) throw InvalidArgument("molecular dynamics: masses must be positive (amu)");
  Mat<double> x(n, 3), p = Mat<double>::Zero(n, 3), v(n, 3), f(n, 3);
  for (Index i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c) x(i, c) = molecule.positions[static_cast<std::size_t>(i)][static_cast<std::size_t>(c)];
  }

  if (options.momenta.rows() != 0) {
    if (options.momenta.rows() != n || options.momenta.cols() != 3)
      throw InvalidArgument("molecular dynamics: the initial momenta have " + std::to_string(options.momenta.rows()) +
                            " rows for " + std::to_string(n) + " atoms");
    if (!options.momenta.allFinite()) throw InvalidArgument("molecular dynamics: the initial momenta are not finite");
    p = options.momenta;
  } else {
    // Maxwell-Boltzmann momenta: each component normal with variance m k_B T (amu eV). A single
    // atom has no motion left once its centre of mass is at rest.
    if (options.temperature_k > 0 && n == 1)
      log_warning("molecular dynamics: a single atom has no internal motion; it stays at rest (0 K)");
    if (options.temperature_k > 0 && n > 1) {
      Rng rng(options.seed);
      for (Index i = 0; i < n; ++i) {
        const double sigma = std::sqrt(mass[static_cast<std::size_t>(i)] * kBoltzmannEv * options.temperature_k);
        for (int c = 0; c < 3; ++c) p(i, c) = sigma * rng.normal();
      }
      remove_centre_of_mass_momentum(p, mass);
      const double t_now = 2.0 * kinetic_energy(p, mass) / (degrees_of_freedom(n) * kBoltzmannEv);
      if (t_now > 0) p *= std::sqrt(options.temperature_k / t_now);
    }
  }

  auto evaluate = [&](double& energy) {
    for (Index i = 0; i < n; ++i) {
      for (int c = 0; c < 3; ++c) molecule.positions[static_cast<std::size_t>(i)][static_cast<std::size_t>(c)] = x(i, c);
    }
    auto results = predictor.predict_batch(std::span<const models::Molecule>(&molecule, 1),
                                           options.threads, target);
    if (!results[0].ok()) throw InvalidArgument("molecular dynamics: " + results[0].error);
    const MoleculePrediction& prediction = *results[0].prediction;
    energy = prediction.mean[target] * to_ev;
    f = prediction.forces * to_ev;  // the target's unit per Angstrom -> eV/A
  };

  const double dt = options.timestep_fs;
  const double dt_ase = dt * kAseTimePerFs;  // ASE time units, those of the momenta
  const double dof = degrees_of_freedom(n);
  double potential = 0;
  evaluate(potential);
  MdSummary summary;
  summary.atoms = static_cast<std::size_t>(n);
  // Running sums for the standard deviation and the least-squares drift of E_tot(t).
  double s_t = 0, s_e = 0, s_tt = 0, s_te = 0, s_ee = 0, s_temp = 0;
  const double band = options.max_energy_change_per_atom * static_cast<double>(n);
  for (std::size_t step = 0;; ++step) {
    const double kinetic = kinetic_energy(p, mass);
    const double total = potential + kinetic;
    const double time = static_cast<double>(step) * dt;  // since the start
    velocities_of(p, mass, v);
    MdFrame frame;
    frame.step = options.first_step + step;
    frame.time_fs = options.start_time_fs + time;
    frame.potential_ev = potential;
    frame.kinetic_ev = kinetic;
    frame.total_ev = total;
    frame.temperature_k = 2.0 * kinetic / (dof * kBoltzmannEv);
    frame.positions = &x;
    frame.momenta = &p;
    frame.velocities = &v;
    frame.forces = &f;
    frame.masses = &mass;
    if (step == 0) {
      summary.initial_total_ev = total;
      summary.initial_temperature_k = frame.temperature_k;
    }
    const double change = std::abs(total - summary.initial_total_ev);
    if (!std::isfinite(total) || change > band) {
      if (on_frame) {
        frame.out_of_band = true;
        on_frame(frame);  // the frame that shows what went wrong
      }
      std::ostringstream why;
      why << "molecular dynamics: the total energy moved by " << change << " eV at step " << frame.step
          << " (t = " << frame.time_fs << " fs), more than the allowed " << band << " eV ("
          << options.max_energy_change_per_atom
          << " eV per atom): the model's forces are not conservative or the time step is too long";
      throw Error(why.str());
    }
    summary.max_total_change_ev = std::max(summary.max_total_change_ev, change);
    const double e_rel = total - summary.initial_total_ev;
    s_t += time;
    s_e += e_rel;
    s_tt += time * time;
    s_te += time * e_rel;
    s_ee += e_rel * e_rel;
    s_temp += frame.temperature_k;
    summary.steps = step;
    if (on_frame) on_frame(frame);
    if (step == options.steps) break;

    // Velocity Verlet.
    p += (0.5 * dt_ase) * f;
    for (Index i = 0; i < n; ++i) {
      const double step_per_momentum = dt_ase / mass[static_cast<std::size_t>(i)];
      for (int c = 0; c < 3; ++c) x(i, c) += step_per_momentum * p(i, c);
    }
    evaluate(potential);
    p += (0.5 * dt_ase) * f;
  }
  const double frames = static_cast<double>(summary.steps + 1);
  const double mean_e = s_e / frames;
  summary.total_stddev_ev = std::sqrt(std::max(0.0, s_ee / frames - mean_e * mean_e));
  const double var_t = s_tt / frames - (s_t / frames) * (s_t / frames);
  if (var_t > 0) {
    const double slope_per_fs = (s_te / frames - (s_t / frames) * mean_e) / var_t;
    summary.drift_ev_per_ps = slope_per_fs * 1000.0;
  }
  summary.mean_temperature_k = s_temp / frames;
  return summary;
}

chem::PointSet trajectory_record(const chem::PointSet& atoms, const MdFrame& frame) {
  require(frame.positions && frame.momenta && frame.forces && frame.masses,
          "trajectory_record: the frame lacks positions, momenta, forces or masses");
  const Index n = frame.positions->rows();
  require(static_cast<Index>(atoms.size()) == n && frame.momenta->rows() == n && frame.forces->rows() == n &&
              frame.masses->size() == atoms.size(),
          "trajectory_record: the frame and the atoms differ in size");
  chem::PointSet out;
  out.atomic_numbers = atoms.atomic_numbers;
  out.formal_charges = atoms.formal_charges;
  out.positions = *frame.positions;
  out.source = atoms.source;
  out.record = atoms.record;
  out.title = "step " + std::to_string(frame.step);
  const auto column = [&](const char* name, const Mat<double>& values) {
    chem::AtomColumn c;
    c.name = name;
    c.width = 3;
    c.values.reserve(static_cast<std::size_t>(3 * n));
    for (Index i = 0; i < n; ++i)
      for (int k = 0; k < 3; ++k) c.values.push_back(values(i, k));
    return c;
  };
  out.atom_columns.push_back(column("momenta", *frame.momenta));
  chem::AtomColumn masses;
  masses.name = "masses";
  masses.values = *frame.masses;
  out.atom_columns.push_back(std::move(masses));
  out.atom_columns.push_back(column("forces", *frame.forces));
  const auto number = [&](const char* key, double value, const char* unit) {
    out.set_property(key, shortest_number(value), unit);
  };
  out.set_property("step", std::to_string(frame.step));
  number("time", frame.time_fs, "fs");
  number("potential_energy", frame.potential_ev, "eV");
  number("kinetic_energy", frame.kinetic_ev, "eV");
  number("total_energy", frame.total_ev, "eV");
  number("temperature", frame.temperature_k, "K");
  // The atom columns' units, as keys of their own (extended XYZ has no place for them in
  // Properties=): what flt's reader takes them from, and what a reader of the file sees.
  out.set_property("momenta_unit", kMomentumUnit);
  out.set_property("masses_unit", "amu");
  out.set_property("forces_unit", "eV/A");
  return out;
}

void continue_from(const chem::PointSet& record, MdOptions& options) {
  const auto fail = [&](const std::string& why) { throw InputError(record.source, record.record, why); };
  const std::size_t n = record.size();
  const chem::AtomColumn* momenta = record.column("momenta");
  if (momenta == nullptr)
    fail("no momenta to continue from: the record needs a momenta column (Properties=...:momenta:R:3, "
         "ASE's convention, as flt md -o writes it)");
  if (momenta->type != 'R' || momenta->width != 3 || momenta->values.size() != 3 * n)
    fail("the momenta column must be momenta:R:3 (3 real numbers per atom)");
  if (!momenta->unit.empty() && momenta->unit != kMomentumUnit)
    fail("momenta in '" + momenta->unit + "': flt reads them in ASE's unit, " + std::string(kMomentumUnit) +
         " (amu Angstrom per ASE time unit)");
  Mat<double> p(static_cast<Index>(n), 3);
  for (std::size_t i = 0; i < 3 * n; ++i) {
    if (!std::isfinite(momenta->values[i])) fail("the momenta are not finite");
    p(static_cast<Index>(i / 3), static_cast<Index>(i % 3)) = momenta->values[i];
  }
  std::vector<double> masses;
  if (const chem::AtomColumn* m = record.column("masses")) {
    if (m->type != 'R' || m->width != 1 || m->values.size() != n)
      fail("the masses column must be masses:R:1 (one real number per atom)");
    if (!m->unit.empty() && m->unit != "amu") fail("masses in '" + m->unit + "': flt reads them in amu");
    for (const double v : m->values)
      if (!(v > 0) || !std::isfinite(v)) fail("the masses must be positive (amu)");
    masses = m->values;
  }
  std::size_t first_step = 0;
  double start_time = 0;
  if (const chem::Property* step = record.property("step")) {
    if (!step->number || !(*step->number >= 0) || *step->number != std::floor(*step->number) || *step->number > 1e15)
      fail("step='" + step->value + "' is not a step number");
    first_step = static_cast<std::size_t>(*step->number);
  }
  if (const chem::Property* time = record.property("time")) {
    if (!time->number || !std::isfinite(*time->number)) fail("time='" + time->value + "' is not a number");
    if (!time->unit.empty() && time->unit != "fs") fail("time in '" + time->unit + "': flt reads it in fs");
    start_time = *time->number;
  }
  options.momenta = std::move(p);
  if (!masses.empty()) options.masses = std::move(masses);
  options.first_step = first_step;
  options.start_time_fs = start_time;
}

}  // namespace flt::pipeline
