// Molecular dynamics with a trained energy model: velocity-Verlet integration in the
// microcanonical (NVE) ensemble, with the model's forces F = -dE/dr. Its use is the check every
// machine-learned potential must pass: a conservative model keeps the total energy constant up to
// the integrator's O(dt^2) error and does not blow up.
//
// Units: positions in Angstrom, time in fs, masses in amu (standard atomic weights unless given),
// energies in eV (the model's energy target is converted to eV), temperature in K. The state is
// integrated as momenta in ASE's unit, sqrt(amu eV) = amu Angstrom / tau with ASE's time unit
// tau = Angstrom sqrt(amu/eV) = 1 / kAseTimePerFs fs, so that a trajectory holds the exact state
// in the convention ASE reads (a continued run then repeats an uninterrupted one bit for bit):
//   dt [tau] = dt [fs] * kAseTimePerFs;   velocity [Angstrom/fs] = p / m * kAseTimePerFs
//   E_kin [eV] = sum p^2 / (2 m)
// Velocity Verlet, per step (F in eV/Angstrom):
//   p <- p + (dt/2) F(x);  x <- x + dt p / m;  F <- F(x);  p <- p + (dt/2) F
// Initial momenta: Maxwell-Boltzmann at `temperature` (seeded), centre-of-mass motion removed,
// then scaled to exactly that temperature with 3N - 3 degrees of freedom; or given (a frame to
// continue from: continue_from below).
#pragma once

#include "chem/point_set.hpp"
#include "models/molecule_model.hpp"
#include "pipeline/predict.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace flt::pipeline {

// ASE's time unit per fs (ase.units.fs, CODATA 2014 constants, ASE's default).
inline constexpr double kAseTimePerFs = 0.09822694788464063;
// The unit of momenta, ASE's (amu Angstrom per ASE time unit), as trajectories name it.
inline constexpr const char* kMomentumUnit = "sqrt(amu*eV)";

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
  // Masses in amu, one per atom; empty: standard atomic weights (atomic_masses).
  std::vector<double> masses;
  // Initial momenta, N x 3 in sqrt(amu eV) (kMomentumUnit), used as they are (no centre-of-mass
  // correction, no scaling); none (0 rows): Maxwell-Boltzmann at temperature_k.
  Mat<double> momenta;
  // The step number and time of the start: a continued run counts on from its frame. `steps`
  // more steps are run.
  std::size_t first_step = 0;
  double start_time_fs = 0;
};

// One recorded state (every step; the caller keeps what it wants).
struct MdFrame {
  std::size_t step = 0;
  double time_fs = 0;
  double potential_ev = 0, kinetic_ev = 0, total_ev = 0, temperature_k = 0;
  const Mat<double>* positions = nullptr;  // N x 3, Angstrom (valid during the callback)
  const Mat<double>* momenta = nullptr;     // N x 3, sqrt(amu eV) (kMomentumUnit)
  const Mat<double>* velocities = nullptr;  // N x 3, Angstrom/fs (momenta / masses * kAseTimePerFs)
  const Mat<double>* forces = nullptr;      // N x 3, eV/Angstrom
  const std::vector<double>* masses = nullptr;  // amu
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

// Runs NVE dynamics from `start` and calls `on_frame` for its first step and every step after it.
// Throws InvalidArgument when the model cannot predict the molecule, has no energy target
// convertible to eV, or the given masses or momenta do not fit the molecule, and flt::Error when
// the total energy leaves the allowed band (naming the step) or becomes non-finite.
MdSummary run_nve(const Predictor& predictor, const models::Molecule& start,
                  const MdOptions& options, const std::function<void(const MdFrame&)>& on_frame);

// A frame as a trajectory record (extended XYZ, flt md -o): `atoms` (its elements and formal
// charges; its labels and atom columns are dropped) with the frame's positions, titled
// "step N", with the atom columns momenta:R:3 (sqrt(amu eV)), masses:R:1 (amu) and forces:R:3
// (eV/Angstrom), each unit as the "<name>_unit" key, and the properties step, time (fs),
// potential_energy, kinetic_energy, total_energy (eV) and temperature (K). ASE reads the momenta
// and masses as its own (Atoms.get_momenta, get_velocities, get_kinetic_energy) and the forces
// as a calculator's; the numbers are written exactly (shortest round-trip text).
chem::PointSet trajectory_record(const chem::PointSet& atoms, const MdFrame& frame);

// Continues from `record` (a trajectory frame of flt md, or any extended XYZ with momenta, e.g.
// written by ASE): sets `options`' momenta from its momenta column (3 reals per atom, in ASE's
// unit: a "momenta_unit" key, when present, must say sqrt(amu*eV)), its masses from a masses
// column (amu) when it has one (else standard atomic weights stay), and the first step and
// start time from its "step" and "time" (fs) properties when it has them (else 0). Throws
// InputError naming the record when the momenta are missing, malformed or in another unit.
void continue_from(const chem::PointSet& record, MdOptions& options);

}  // namespace flt::pipeline
