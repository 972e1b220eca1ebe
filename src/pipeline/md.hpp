// Molecular dynamics with a trained energy model: velocity-Verlet integration in the
// microcanonical (NVE) ensemble, with the model's forces F = -dE/dr. Its use is the check every
// machine-learned potential must pass: a conservative model keeps the total energy constant up to
// the integrator's O(dt^2) error and does not blow up.
//
// Units: positions in Angstrom, time in fs, masses in amu (standard atomic weights), energies in
// eV (the model's energy target is converted to eV), velocities in Angstrom/fs, temperature in K.
//   a = F / m:   1 eV / (Angstrom amu) = 9.64853322e-3 Angstrom / fs^2
//   E_kin = (1/2) m v^2:   1 amu Angstrom^2 / fs^2 = 103.642697 eV
// Velocity Verlet, per step:
//   v <- v + (dt/2) a(x);  x <- x + dt v;  a <- F(x) / m;  v <- v + (dt/2) a
// Initial velocities: Maxwell-Boltzmann at `temperature` (seeded), centre-of-mass motion
// removed, then scaled to exactly that temperature with 3N - 3 degrees of freedom.
#pragma once

#include "models/molecule_model.hpp"
#include "pipeline/predict.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace flt::pipeline {

struct MdOptions {
  double timestep_fs = 0.5;
  std::size_t steps = 1000;
  double temperature_k = 300.0;  // initial velocities; 0: start at rest
  std::uint64_t seed = 1;        // initial velocities
  int threads = 0;               // OpenMP threads of each force call (0: the OpenMP default)
  // The energy target whose forces drive the dynamics (empty: the model's first energy target).
  std::string target;
  // Stop with an error when the total energy moves further than this from its start (eV per
  // atom): a model that is not conservative, or a time step too long, blows up. 50 meV/atom is
  // about 20 times what velocity Verlet loses at 2 fs with a smooth model, and a tenth of a run
  // heated from 300 K to 2,000 K by its integration error.
  double max_energy_change_per_atom = 0.05;
};

// One recorded state (every step; the caller keeps what it wants).
struct MdFrame {
  std::size_t step = 0;
  double time_fs = 0;
  double potential_ev = 0, kinetic_ev = 0, total_ev = 0, temperature_k = 0;
  const Mat<double>* positions = nullptr;  // N x 3, Angstrom (valid during the callback)
  const Mat<double>* velocities = nullptr;  // N x 3, Angstrom/fs
  const Mat<double>* forces = nullptr;      // N x 3, eV/Angstrom
  // The state that broke the energy band: run_nve reports it, then throws.
  bool out_of_band = false;
};

struct MdSummary {
  std::size_t steps = 0;
  double initial_total_ev = 0;
  double max_total_change_ev = 0;  // max |E_tot(t) - E_tot(0)|
  double total_stddev_ev = 0;      // standard deviation of E_tot over the run
  double drift_ev_per_ps = 0;      // slope of a least-squares line through E_tot(t)
  double initial_temperature_k = 0;  // of the start's velocities (0 for a single atom, at rest)
  double mean_temperature_k = 0;
  std::size_t atoms = 0;
};

// Standard atomic weights (amu) of the elements of `molecule` (IUPAC, as RDKit's periodic table).
std::vector<double> atomic_masses(const models::Molecule& molecule);

// Runs NVE dynamics from `start` and calls `on_frame` for step 0 and every step after it.
// Throws InvalidArgument when the model cannot predict the molecule or has no energy target
// convertible to eV, and flt::Error when the total energy leaves the allowed band (naming the
// step) or becomes non-finite.
MdSummary run_nve(const Predictor& predictor, const models::Molecule& start,
                  const MdOptions& options, const std::function<void(const MdFrame&)>& on_frame);

}  // namespace flt::pipeline
