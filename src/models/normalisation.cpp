// Molecule batches, per-element reference energies (least squares) and target normalisation.
// See molecule_model.hpp for the maps between physical and normalised units.
#include "models/molecule_model.hpp"

#include "core/log.hpp"

#include <Eigen/QR>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <limits>

namespace flt::models {

namespace {

template <class Get>
MoleculeBatch build_batch(std::size_t count, Get get) {
  MoleculeBatch b;
  std::vector<Index> sizes;
  sizes.reserve(count);
  std::size_t total = 0;
  for (std::size_t s = 0; s < count; ++s) {
    const Molecule& m = get(s);
    const std::string where = "molecule " + std::to_string(s) + " of the batch: ";
    if (m.atomic_numbers.empty())
      throw InvalidArgument(where + "empty molecule (no atoms): nothing to predict from");
    if (m.positions.size() != m.atomic_numbers.size())
      throw InvalidArgument(where + std::to_string(m.atomic_numbers.size()) + " atomic numbers but " +
                            std::to_string(m.positions.size()) + " positions");
    if (!m.formal_charges.empty() && m.formal_charges.size() != m.atomic_numbers.size())
      throw InvalidArgument(where + "formal charges must be empty or one per atom");
    for (std::size_t i = 0; i < m.positions.size(); ++i)
      for (double c : m.positions[i])
        if (!std::isfinite(c))
          throw InvalidArgument(where + "atom " + std::to_string(i + 1) + " has a non-finite coordinate");
    sizes.push_back(static_cast<Index>(m.atomic_numbers.size()));
    total += m.atomic_numbers.size();
  }
  b.index = RaggedIndex::from_sizes(sizes);
  b.atomic_numbers.reserve(total);
  b.formal_charges.reserve(total);
  b.coords.resize(static_cast<Index>(total), 3);
  Index row = 0;
  for (std::size_t s = 0; s < count; ++s) {
    const Molecule& m = get(s);
    for (std::size_t i = 0; i < m.atomic_numbers.size(); ++i, ++row) {
      b.atomic_numbers.push_back(m.atomic_numbers[i]);
      b.formal_charges.push_back(m.formal_charges.empty() ? 0 : m.formal_charges[i]);
      for (Index a = 0; a < 3; ++a) b.coords(row, a) = m.positions[i][static_cast<std::size_t>(a)];
    }
  }
  return b;
}

}  // namespace

MoleculeBatch MoleculeBatch::from(std::span<const Molecule> molecules) {
  return build_batch(molecules.size(), [&](std::size_t s) -> const Molecule& { return molecules[s]; });
}

MoleculeBatch MoleculeBatch::from(std::span<const Molecule* const> molecules) {
  return build_batch(molecules.size(), [&](std::size_t s) -> const Molecule& { return *molecules[s]; });
}

Vec<double> fit_reference_energies(const Mat<double>& counts, const Vec<double>& labels, Index* rank) {
  require(counts.rows() == labels.size(), "fit_reference_energies: one label per row of counts");
  require(counts.rows() > 0 && counts.cols() > 0, "fit_reference_energies: empty problem");
  require(counts.allFinite() && labels.allFinite(), "fit_reference_energies: non-finite input");
  // min ||C r - y||_2: complete orthogonal decomposition gives the minimum-norm least-squares
  // solution, so an element whose count is collinear with others still gets a finite value. The
  // rank threshold is relative to the largest pivot: Eigen's default (epsilon x E) takes the
  // rounding left by the Householder steps of identical rows (about 1e-13 of the pivot for 800
  // copies of one composition) for real directions, and solves for them with values of 1e11.
  Eigen::MatrixXd C = counts;  // column-major copy for the decomposition
  Eigen::CompleteOrthogonalDecomposition<Eigen::MatrixXd> cod;
  cod.setThreshold(1e-10);
  cod.compute(C);
  Eigen::VectorXd r = cod.solve(Eigen::VectorXd(labels));
  if (rank != nullptr) *rank = cod.rank();
  return r;
}

ThreeBodyBasis three_body_basis(const ModelConfig& config, const std::vector<std::int32_t>& elements) {
  ThreeBodyBasis b;
  b.cutoff = config.three_body_cutoff;
  b.radial = config.three_body_radial;
  b.lmax = config.three_body_lmax;
  b.elements = elements;
  return b;
}

namespace {

// The element set of a training set: the atomic numbers in `train`, in increasing order
// (InvalidArgument for one outside 1..config.max_z).
std::vector<std::int32_t> training_elements(const ModelConfig& config, const MoleculeBatch& train) {
  const Index V = config.max_z + 1;
  std::vector<unsigned char> seen(static_cast<std::size_t>(V), 0);
  for (std::size_t i = 0; i < train.atomic_numbers.size(); ++i) {
    const int z = train.atomic_numbers[i];
    if (z < 1 || z > config.max_z)
      throw InvalidArgument("fit_normalisation: atomic number " + std::to_string(z) +
                            " outside 1.." + std::to_string(config.max_z));
    seen[static_cast<std::size_t>(z)] = 1;
  }
  std::vector<std::int32_t> elements;
  for (int z = 1; z < V; ++z)
    if (seen[static_cast<std::size_t>(z)]) elements.push_back(z);
  return elements;
}

}  // namespace

ThreeBodyBasis training_three_body_basis(const ModelConfig& config, const MoleculeBatch& train) {
  return three_body_basis(config, training_elements(config, train));
}

Normalisation fit_normalisation(const ModelConfig& config, const MoleculeBatch& train,
                                const Mat<double>& labels, bool fit_reference,
                                const std::optional<Mat<double>>& reference, std::vector<std::string>* log,
                                const Mat<double>* three_body_descriptors, const ReferenceForces* forces) {
  config.validate();
  const Index S = train.num_molecules(), P = config.num_targets(), V = config.max_z + 1;
  require(S > 0, "fit_normalisation: empty training set");
  require(labels.rows() == S && labels.cols() == P, "fit_normalisation: labels must be S x P");
  Normalisation n;
  n.elements = training_elements(config, train);
  const Index E = static_cast<Index>(n.elements.size());
  std::vector<Index> column(static_cast<std::size_t>(V), -1);
  for (Index e = 0; e < E; ++e) column[static_cast<std::size_t>(n.elements[static_cast<std::size_t>(e)])] = e;

  Mat<double> counts = Mat<double>::Zero(S, E);
  for (Index s = 0; s < S; ++s)
    for (Index i = train.index.begin(s); i < train.index.end(s); ++i)
      counts(s, column[static_cast<std::size_t>(train.atomic_numbers[static_cast<std::size_t>(i)])]) += 1.0;

  n.reference = Mat<double>::Zero(P, V);
  if (reference) {
    require(reference->rows() == P && reference->cols() == V,
            "fit_normalisation: given reference energies must be P x (max_z + 1)");
    require(reference->allFinite(), "fit_normalisation: non-finite reference energy");
  }
  n.mean.assign(static_cast<std::size_t>(P), 0.0);
  n.scale.assign(static_cast<std::size_t>(P), 1.0);
  // The training structures' three-body descriptors: the caller's (not copied: at QM9's full size
  // the matrix is GBs) or computed here.
  Mat<double> computed_descriptors;
  const Mat<double>* descriptors = nullptr;
  if (config.three_body) {
    const ThreeBodyBasis basis = three_body_basis(config, n.elements);
    if (three_body_descriptors != nullptr) {
      if (three_body_descriptors->rows() != S || three_body_descriptors->cols() != basis.feature_count())
        throw InvalidArgument("fit_normalisation: the given three-body descriptors are " +
                              std::to_string(three_body_descriptors->rows()) + " x " +
                              std::to_string(three_body_descriptors->cols()) + ", not " + std::to_string(S) +
                              " structures x " + std::to_string(basis.feature_count()) + " features");
      descriptors = three_body_descriptors;
    } else {
      if (train.coords.rows() != train.num_atoms() || train.coords.cols() != 3)
        throw InvalidArgument("fit_normalisation: the three-body reference needs the coordinates of every "
                              "training structure");
      computed_descriptors = three_body_features(basis, train.index, train.coords, train.atomic_numbers);
      descriptors = &computed_descriptors;
    }
    n.three_body = Mat<double>::Zero(P, basis.feature_count());
  }
  // Per target: its labelled rows and, for extensive targets, the per-element reference energies.
  std::vector<std::vector<Index>> rows_of(static_cast<std::size_t>(P));
  for (Index t = 0; t < P; ++t) {
    const bool ext = config.targets[static_cast<std::size_t>(t)].extensive;
    std::vector<Index>& rows = rows_of[static_cast<std::size_t>(t)];
    for (Index s = 0; s < S; ++s)
      if (std::isfinite(labels(s, t))) rows.push_back(s);
    if (rows.empty())
      throw InvalidArgument("fit_normalisation: target '" + config.targets[static_cast<std::size_t>(t)].name +
                            "' has no finite label in the training set");
    const auto M = static_cast<Index>(rows.size());
    if (!ext) continue;
    if (reference) {
      n.reference.row(t) = reference->row(t);
    } else if (fit_reference) {
      Mat<double> C(M, E);
      Vec<double> y(M);
      for (Index r = 0; r < M; ++r) {
        C.row(r) = counts.row(rows[static_cast<std::size_t>(r)]);
        y(r) = labels(rows[static_cast<std::size_t>(r)], t);
      }
      Index rank = 0;
      const Vec<double> ref = fit_reference_energies(C, y, &rank);
      for (Index e = 0; e < E; ++e) n.reference(t, n.elements[static_cast<std::size_t>(e)]) = ref(e);
      if (rank < E)
        log_warning("reference energies of '", config.targets[static_cast<std::size_t>(t)].name, "': the training "
                    "molecules' compositions determine ", rank, " combination", rank == 1 ? "" : "s", " of the ", E,
                    " elements' values (e.g. conformations of one molecule); the smallest values that fit are used, "
                    "so energies of other compositions are extrapolations");
    }
  }
  // The three-body ridge fits on what the reference energies leave, with an unpenalised term per
  // atom (its column the structures' atom counts) that is the per-atom mean below: the model adds
  // n_atoms m_t, so an intercept per structure would not be the model that is used on structures
  // of other sizes. Extensive targets labelled on the same structures share one fit (one
  // eigendecomposition for all of them; each target its own lambda).
  std::vector<double> three_body_loo_rmse(static_cast<std::size_t>(P), 0.0);
  std::vector<double> three_body_intercept(static_cast<std::size_t>(P), 0.0);
  // The target whose reference is fitted to forces too (fitted on its own), or -1.
  Index force_target = -1;
  if (config.three_body && forces != nullptr && forces->weight > 0) {
    require(std::isfinite(forces->weight), "fit_normalisation: the force weight must be finite");
    require(forces->target >= 0 && forces->target < P && config.targets[static_cast<std::size_t>(forces->target)].extensive,
            "fit_normalisation: forces belong to an extensive target");
    require(forces->batch != nullptr && forces->forces != nullptr, "fit_normalisation: forces need their batch");
    const MoleculeBatch& fb = *forces->batch;
    if (fb.num_molecules() != S || fb.index.offsets() != train.index.offsets() ||
        fb.atomic_numbers != train.atomic_numbers || fb.coords.rows() != fb.num_atoms() ||
        fb.coords.cols() != 3 || forces->forces->rows() != fb.num_atoms() || forces->forces->cols() != 3)
      throw InvalidArgument("fit_normalisation: the force labels' batch must be the training structures with their "
                            "coordinates and N x 3 forces");
    force_target = forces->target;
  }
  if (config.three_body) {
    std::vector<char> done(static_cast<std::size_t>(P), 0);
    for (Index t0 = 0; t0 < P; ++t0) {
      if (!config.targets[static_cast<std::size_t>(t0)].extensive || done[static_cast<std::size_t>(t0)]) continue;
      const std::vector<Index>& rows = rows_of[static_cast<std::size_t>(t0)];
      std::vector<Index> group;
      for (Index t = t0; t < P; ++t)
        if (config.targets[static_cast<std::size_t>(t)].extensive && rows_of[static_cast<std::size_t>(t)] == rows &&
            (t == t0 || (t != force_target && t0 != force_target))) {
          group.push_back(t);
          done[static_cast<std::size_t>(t)] = 1;
        }
      const auto M = static_cast<Index>(rows.size());
      if (M < 3)
        throw InvalidArgument("fit_normalisation: the three-body reference needs at least 3 labelled structures");
      // The feature rows are copied only when some labels are missing (the matrix can be GBs).
      Mat<double> subset;
      if (M != S) {
        subset.resize(M, descriptors->cols());
        for (Index r = 0; r < M; ++r) subset.row(r) = descriptors->row(rows[static_cast<std::size_t>(r)]);
      }
      const Mat<double>& X = M == S ? *descriptors : subset;
      Mat<double> y(M, static_cast<Index>(group.size()));
      for (std::size_t g = 0; g < group.size(); ++g) {
        const Index t = group[g];
        for (Index r = 0; r < M; ++r) {
          const Index s = rows[static_cast<std::size_t>(r)];
          double v = labels(s, t);
          for (Index i = train.index.begin(s); i < train.index.end(s); ++i)
            v -= n.reference(t, train.atomic_numbers[static_cast<std::size_t>(i)]);
          y(r, static_cast<Index>(g)) = v;
        }
      }
      Vec<double> atoms(M);
      for (Index r = 0; r < M; ++r) atoms(r) = static_cast<double>(train.index.size(rows[static_cast<std::size_t>(r)]));
      // The forces' target: energies and forces together when its structures have force labels.
      Index force_atoms = 0;
      if (group.front() == force_target)
        for (const Index s : rows)
          for (Index i = forces->batch->index.begin(s); i < forces->batch->index.end(s); ++i)
            force_atoms += forces->forces->row(i).allFinite() ? 1 : 0;
      std::vector<RidgeFit> fits;
      if (force_atoms > 0) {
        const ThreeBodyBasis basis = three_body_basis(config, n.elements);
        ForceRows fr;
        fr.basis = &basis;
        fr.sets = &forces->batch->index;
        fr.coords = &forces->batch->coords;
        fr.atomic_numbers = &forces->batch->atomic_numbers;
        fr.forces = forces->forces;
        fr.structures = rows;
        fr.weight = forces->weight * static_cast<double>(P) * static_cast<double>(M) / (3.0 * static_cast<double>(force_atoms));
        fits.push_back(fit_ridge_loo_with_forces(X, Vec<double>(y.col(0)), atoms, fr));
      } else {
        fits = fit_ridge_loo(X, y, atoms);
      }
      for (std::size_t g = 0; g < group.size(); ++g) {
        const Index t = group[g];
        const RidgeFit& fit = fits[g];
        n.three_body.row(t) = fit.weights.transpose();
        three_body_loo_rmse[static_cast<std::size_t>(t)] = fit.loo_rmse;
        three_body_intercept[static_cast<std::size_t>(t)] = fit.intercept;
        if (log != nullptr) {
          const std::string& unit = config.targets[static_cast<std::size_t>(t)].unit;
          char line[512];
          std::snprintf(line, sizeof line,
                        "three-body reference of '%s': %lld weights, lambda %.3g, leave-one-out MAE %.6g, RMSE %.6g %s",
                        config.targets[static_cast<std::size_t>(t)].name.c_str(),
                        static_cast<long long>(X.cols()), fit.lambda, fit.loo_mae, fit.loo_rmse, unit.c_str());
          std::string text = line;
          if (fit.force_components > 0) {
            std::snprintf(line, sizeof line,
                          "; fitted to energies and %lld force components (leave-one-structure-out), forces MAE "
                          "%.6g, RMSE %.6g %s/A",
                          static_cast<long long>(fit.force_components), fit.force_loo_mae, fit.force_loo_rmse,
                          unit.c_str());
            text += line;
          } else if (group.front() == force_target) {
            text += "; fitted to energies only (no force labels on its structures)";
          }
          log->push_back(text);
        }
      }
    }
  }
  for (Index t = 0; t < P; ++t) {
    const bool ext = config.targets[static_cast<std::size_t>(t)].extensive;
    const std::vector<Index>& rows = rows_of[static_cast<std::size_t>(t)];
    const auto M = static_cast<Index>(rows.size());
    // Residuals after the reference energies; extensive: per-atom mean, then std of the
    // molecule-level residual so the normalised target has unit variance.
    std::vector<double> res(static_cast<std::size_t>(M)), natoms(static_cast<std::size_t>(M));
    for (Index r = 0; r < M; ++r) {
      const Index s = rows[static_cast<std::size_t>(r)];
      double y = labels(s, t);
      if (ext) {
        for (Index i = train.index.begin(s); i < train.index.end(s); ++i)
          y -= n.reference(t, train.atomic_numbers[static_cast<std::size_t>(i)]);
        if (config.three_body) y -= descriptors->row(s).dot(n.three_body.row(t));
      }
      res[static_cast<std::size_t>(r)] = y;
      natoms[static_cast<std::size_t>(r)] = ext ? static_cast<double>(train.index.size(s)) : 1.0;
    }
    double mean = 0.0;
    for (Index r = 0; r < M; ++r) mean += res[static_cast<std::size_t>(r)] / natoms[static_cast<std::size_t>(r)];
    mean /= static_cast<double>(M);
    double var = 0.0;
    for (Index r = 0; r < M; ++r) {
      const double d = res[static_cast<std::size_t>(r)] - natoms[static_cast<std::size_t>(r)] * mean;
      var += d * d;
    }
    var /= static_cast<double>(M);
    // With the three-body reference the scale is its leave-one-out RMSE: the spread of what it
    // leaves on structures it was not fitted to. The in-sample spread can be ~0 when the
    // reference has more weights than structures, and would then inflate every normalised
    // quantity (the force residuals of force training most).
    const double sd = ext && config.three_body ? three_body_loo_rmse[static_cast<std::size_t>(t)] : std::sqrt(var);
    // With the three-body reference the per-atom mean is the fit's own intercept (the same value
    // when every structure has the same size).
    n.mean[static_cast<std::size_t>(t)] = ext && config.three_body ? three_body_intercept[static_cast<std::size_t>(t)] : mean;
    n.scale[static_cast<std::size_t>(t)] = sd > 1e-12 ? sd : 1.0;
  }
  return n;
}

}  // namespace flt::models
