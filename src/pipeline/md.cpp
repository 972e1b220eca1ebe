#include "pipeline/md.hpp"

#include "chem/elements.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/random.hpp"
#include "io/units.hpp"

#include <cmath>
#include <sstream>

namespace flt::pipeline {
namespace {

constexpr double kAccelerationPerForceOverMass = 9.64853322e-3;  // (A/fs^2) per (eV/(A amu))
constexpr double kKineticEnergyEv = 103.642697;                  // eV per (amu A^2/fs^2)
constexpr double kBoltzmannEv = 8.617333262e-5;                  // eV/K

double kinetic_energy(const Mat<double>& v, const std::vector<double>& mass) {
  double e = 0;
  for (Index i = 0; i < v.rows(); ++i) {
    e += 0.5 * mass[static_cast<std::size_t>(i)] * (v(i, 0) * v(i, 0) + v(i, 1) * v(i, 1) + v(i, 2) * v(i, 2));
  }
  return e * kKineticEnergyEv;
}

// Degrees of freedom of an isolated molecule with its centre-of-mass motion removed.
double degrees_of_freedom(Index atoms) { return atoms > 1 ? 3.0 * static_cast<double>(atoms) - 3.0 : 3.0; }

void remove_centre_of_mass_velocity(Mat<double>& v, const std::vector<double>& mass) {
  double momentum[3] = {0, 0, 0};
  double total = 0;
  for (Index i = 0; i < v.rows(); ++i) {
    for (int c = 0; c < 3; ++c) momentum[c] += mass[static_cast<std::size_t>(i)] * v(i, c);
    total += mass[static_cast<std::size_t>(i)];
  }
  for (Index i = 0; i < v.rows(); ++i) {
    for (int c = 0; c < 3; ++c) v(i, c) -= momentum[c] / total;
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
  const std::vector<double> mass = atomic_masses(molecule);
  Mat<double> x(n, 3), v = Mat<double>::Zero(n, 3), f(n, 3);
  for (Index i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c) x(i, c) = molecule.positions[static_cast<std::size_t>(i)][static_cast<std::size_t>(c)];
  }

  // Maxwell-Boltzmann velocities: each component normal with variance k_B T / m (A^2/fs^2). A
  // single atom has no motion left once its centre of mass is at rest.
  if (options.temperature_k > 0 && n == 1)
    log_warning("molecular dynamics: a single atom has no internal motion; it stays at rest (0 K)");
  if (options.temperature_k > 0 && n > 1) {
    Rng rng(options.seed);
    for (Index i = 0; i < n; ++i) {
      const double sigma = std::sqrt(kBoltzmannEv * options.temperature_k /
                                     (mass[static_cast<std::size_t>(i)] * kKineticEnergyEv));
      for (int c = 0; c < 3; ++c) v(i, c) = sigma * rng.normal();
    }
    remove_centre_of_mass_velocity(v, mass);
    const double t_now = 2.0 * kinetic_energy(v, mass) / (degrees_of_freedom(n) * kBoltzmannEv);
    if (t_now > 0) v *= std::sqrt(options.temperature_k / t_now);
  }

  auto evaluate = [&](double& energy) {
    for (Index i = 0; i < n; ++i) {
      for (int c = 0; c < 3; ++c) molecule.positions[static_cast<std::size_t>(i)][static_cast<std::size_t>(c)] = x(i, c);
    }
    auto results = predictor.predict_batch(std::span<const models::Molecule>(&molecule, 1),
                                           options.threads, target);
    if (!results[0].ok()) throw InvalidArgument("molecular dynamics: " + results[0].error);
    const MoleculePrediction& p = *results[0].prediction;
    energy = p.mean[target] * to_ev;
    f = p.forces * to_ev;  // the target's unit per Angstrom -> eV/A
  };

  const double dt = options.timestep_fs;
  const double dof = degrees_of_freedom(n);
  double potential = 0;
  evaluate(potential);
  MdSummary summary;
  summary.atoms = static_cast<std::size_t>(n);
  // Running sums for the standard deviation and the least-squares drift of E_tot(t).
  double s_t = 0, s_e = 0, s_tt = 0, s_te = 0, s_ee = 0, s_temp = 0;
  const double band = options.max_energy_change_per_atom * static_cast<double>(n);
  for (std::size_t step = 0;; ++step) {
    const double kinetic = kinetic_energy(v, mass);
    const double total = potential + kinetic;
    const double time = static_cast<double>(step) * dt;
    MdFrame frame;
    frame.step = step;
    frame.time_fs = time;
    frame.potential_ev = potential;
    frame.kinetic_ev = kinetic;
    frame.total_ev = total;
    frame.temperature_k = 2.0 * kinetic / (dof * kBoltzmannEv);
    frame.positions = &x;
    frame.velocities = &v;
    frame.forces = &f;
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
      why << "molecular dynamics: the total energy moved by " << change << " eV at step " << step
          << " (t = " << time << " fs), more than the allowed " << band << " eV ("
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
    for (Index i = 0; i < n; ++i) {
      const double a = kAccelerationPerForceOverMass / mass[static_cast<std::size_t>(i)];
      for (int c = 0; c < 3; ++c) v(i, c) += 0.5 * dt * a * f(i, c);
    }
    x += dt * v;
    evaluate(potential);
    for (Index i = 0; i < n; ++i) {
      const double a = kAccelerationPerForceOverMass / mass[static_cast<std::size_t>(i)];
      for (int c = 0; c < 3; ++c) v(i, c) += 0.5 * dt * a * f(i, c);
    }
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

}  // namespace flt::pipeline
