// S molecules, N atoms, D width, H heads, d = D/H, F block-MLP hidden width, G head hidden width,
// P targets. The FLT molecule model: forward, backward, normalisation maps, serialisation hooks.
// Equations in molecule_model.hpp.
#include "models/molecule_model.hpp"

#include "core/dual.hpp"
#include "core/log.hpp"
#include "io/units.hpp"

#include <Eigen/Geometry>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <limits>
#include <numbers>
#include <set>
#include <sstream>

namespace flt::models {

namespace {

// The values of a matrix of any kernel scalar as doubles (a Dual's tangent is dropped).
template <class T>
Mat<double> values_of(ConstMatRef<T> m) {
  return m.unaryExpr([](const T& x) { return value_of(x); });
}

// Types in order of first appearance, keyed by (element, charge-embedding row).
AtomTypes find_atom_types(const std::vector<std::int32_t>& z, const std::vector<std::int32_t>& charge_ids,
                          int max_z, int charge_rows) {
  AtomTypes types;
  const auto n = z.size();
  std::vector<Index> type_of_key(static_cast<std::size_t>((max_z + 1) * charge_rows), -1);
  types.of_atom.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::int32_t c = charge_ids.empty() ? 0 : charge_ids[i];
    Index& t = type_of_key[static_cast<std::size_t>(z[i] * charge_rows + c)];
    if (t < 0) {
      t = static_cast<Index>(types.z.size());
      types.z.push_back(z[i]);
      types.charge_ids.push_back(c);
      types.first_atom.push_back(static_cast<Index>(i));
    }
    types.of_atom[i] = t;
  }
  return types;
}

// out.row(i) = table.row(of_atom[i]).
template <class T>
void gather_rows(const Mat<T>& table, const std::vector<Index>& of_atom, MatRef<T> out) {
  for (std::size_t i = 0; i < of_atom.size(); ++i) out.row(static_cast<Index>(i)) = table.row(of_atom[i]);
}

// m (one row per type) becomes one row per atom: m.row(i) = old m.row(of_atom[i]).
template <class T>
void gather_rows_in_place(Mat<T>& m, const std::vector<Index>& of_atom) {
  const Mat<T> table = std::move(m);
  m.resize(static_cast<Index>(of_atom.size()), table.cols());
  gather_rows<T>(table, of_atom, m);
}

// The rows of the first atom of each type (block 0's input, a function of the type only).
template <class T>
Mat<T> rows_of_types(const Mat<T>& x, const AtomTypes& types) {
  Mat<T> out(static_cast<Index>(types.first_atom.size()), x.cols());
  for (std::size_t t = 0; t < types.first_atom.size(); ++t)
    out.row(static_cast<Index>(t)) = x.row(types.first_atom[t]);
  return out;
}

// sums.row(t) = sum of the rows of the atoms of type t, in atom order.
template <class T>
Mat<T> sum_rows_by_type(ConstMatRef<T> per_atom, const AtomTypes& types) {
  Mat<T> sums = Mat<T>::Zero(static_cast<Index>(types.z.size()), per_atom.cols());
  for (std::size_t i = 0; i < types.of_atom.size(); ++i)
    sums.row(types.of_atom[i]) += per_atom.row(static_cast<Index>(i));
  return sums;
}

// Charges made neutral per group (structure or fragment), in place: q_i -= mean over i's group
// (each mean summed in Accum<T>, in row order). The map is an orthogonal projection, so it is also
// its own adjoint: backward applies it to dLoss/dq.
template <class T>
void neutralise(const Fragments& groups, MatRef<T> q) {
  std::vector<Accum<T>> total(static_cast<std::size_t>(groups.count), Accum<T>(0.0));
  std::vector<Index> size(static_cast<std::size_t>(groups.count), 0);
  for (Index i = 0; i < q.rows(); ++i) {
    const auto g = static_cast<std::size_t>(groups.of_atom[static_cast<std::size_t>(i)]);
    total[g] += static_cast<Accum<T>>(q(i, 0));
    ++size[g];
  }
  std::vector<T> mean(total.size());
  for (std::size_t g = 0; g < total.size(); ++g)
    mean[g] = static_cast<T>(total[g] / static_cast<double>(size[g]));
  for (Index i = 0; i < q.rows(); ++i)
    q(i, 0) -= mean[static_cast<std::size_t>(groups.of_atom[static_cast<std::size_t>(i)])];
}

// q_i += the atom's formal charge: charges are the formal charges plus a neutral correction.
template <class T>
void add_formal_charges(const MoleculeBatch& batch, MatRef<T> q) {
  for (Index i = 0; i < q.rows(); ++i)
    q(i, 0) += static_cast<T>(batch.formal_charges[static_cast<std::size_t>(i)]);
}

// y(i, 0) += q_i phi_i / 2: atom i's share of the charge energy (sums to E_q per structure).
template <class T>
void add_charge_energy(ConstMatRef<T> charges, ConstMatRef<T> potential, MatRef<T> y) {
  for (Index i = 0; i < y.rows(); ++i) y(i, 0) += static_cast<T>(0.5) * charges(i, 0) * potential(i, 0);
}

}  // namespace

template <class T>
MoleculeModel<T>::MoleculeModel(ModelConfig config) : config_(std::move(config)) {
  config_.validate();
  if constexpr (is_dual_v<T>)
    if (config_.attention != AttentionKind::near_far)
      throw ConfigError(std::string("exact second derivatives (training on forces) need the near_far "
                                    "attention; this model's attention is ") +
                        to_string(config_.attention));
  if constexpr (is_dual_v<T>)
    if (config_.charge_energy != ChargeEnergy::none)
      throw ConfigError(std::string("charge_energy = ") + to_string(config_.charge_energy) +
                        ": exact second derivatives (training on forces) are not available with the "
                        "charge energy; train on energies only, or set charge_energy = none");
  const Index D = config_.width, H = config_.heads, d = config_.head_dim();
  const Index P = config_.num_targets();
  embed_z_ = Embedding<T>::create(store_, "embed.element", config_.max_z + 1, D);
  if (config_.use_charges)
    embed_charge_ = Embedding<T>::create(store_, "embed.charge", 2 * config_.max_charge + 1, D);
  if (config_.attention == AttentionKind::exact) {
    exact_config_.heads = H;
    exact_config_.mask = exact::DistanceMask::additive;
    exact_config_.basis = exact::RadialBasis::uniform(config_.exact_rbf, config_.exact_cutoff);
    exact_config_.query_block = 64;
    exact_config_.key_block = 64;
  }
  if (config_.attention == AttentionKind::near_far) {
    near_config_.heads = H;
    near_config_.head_dim = d;
    near_config_.cutoff = config_.cutoff;
    near_config_.nodes = attn::RadialNodes::bessel(config_.radial_nodes, config_.cutoff);
    near_config_.filter_activation = Activation::silu;
    near_config_.vectors = config_.vectors;
    far_config_.heads = H;
    far_config_.value_dim = d;
    far_config_.cutoff = config_.cutoff;
    far_config_.nodes.count = config_.far_nodes;
    far_config_.nodes.first = 0.0;
    far_config_.nodes.spacing = config_.far_spacing;
  }
  blocks_.resize(static_cast<std::size_t>(config_.blocks));
  for (Index b = 0; b < config_.blocks; ++b) {
    Block& blk = blocks_[static_cast<std::size_t>(b)];
    const std::string p = "block" + std::to_string(b);
    const bool vectors = config_.attention == AttentionKind::near_far && config_.vectors;
    blk.add_attention_layers(store_, p, D, vectors ? 3 * D : D);
    switch (config_.attention) {
      case AttentionKind::kronecker:
      case AttentionKind::bias: {
        attn::AttentionConfig ac;
        ac.heads = H;
        ac.head_dim = d;
        ac.value_dim = d;
        ac.num_features = config_.num_features;
        ac.num_frequencies = config_.num_frequencies;
        ac.variant = config_.attention == AttentionKind::kronecker ? attn::Variant::kronecker
                                                                   : attn::Variant::bias;
        ac.spectrum.kind = config_.spectrum;
        ac.spectrum.coord_dim = 3;
        ac.spectrum.components = config_.spectrum_components;
        ac.spectrum.proposal = config_.proposal;
        ac.spectrum.proposal_scale = config_.proposal_scale;
        ac.spectrum.init_sigma_min = config_.init_sigma_min;
        ac.spectrum.init_sigma_max = config_.init_sigma_max;
        ac.seed = block_feature_seed(config_.seed, b);
        ac.redraw_each_step = config_.redraw_features;
        ac.init_beta = config_.init_beta;
        ac.denominator_policy = attn::DenominatorPolicy::clamp_and_count;
        ac.tiny_denominator = config_.kronecker_floor;
        if constexpr (!is_dual_v<T>)
          blk.flt = std::make_unique<attn::FltAttention<T>>(ac, store_, p + ".attn.rpe");
        break;
      }
      case AttentionKind::exact:
        blk.rbf = store_.add(p + ".attn.rbf", H, config_.exact_rbf);
        break;
      case AttentionKind::performer:
        break;
      case AttentionKind::near_far: {
        const Index K = config_.radial_nodes, V = near_config_.value_width();
        blk.near_wk = store_.add(p + ".attn.filter_k.weight", K, D);
        blk.near_bk = store_.add(p + ".attn.filter_k.bias", D);
        blk.near_wv = store_.add(p + ".attn.filter_v.weight", K, V);
        blk.near_bv = store_.add(p + ".attn.filter_v.bias", V);
        blk.near_sink = store_.add(p + ".attn.sink", H);
        if (config_.far_field != FarField::none)
          blk.far_theta = store_.add(p + ".attn.far.log_coeffs", H, config_.far_nodes);
        break;
      }
    }
    if (vectors) {
      blk.update = EquivariantUpdate<T>::create(store_, p + ".update", D, config_.mlp_hidden,
                                                config_.activation);
    } else {
      blk.add_mlp_layers(store_, p, config_.mlp_hidden, config_.activation);
    }
  }
  ln_out_ = LayerNorm<T>::create(store_, "head.ln", D);
  head_ = Mlp<T>::create(store_, "head.mlp", D, config_.head_hidden, P, config_.activation);
  if (config_.charge_energy != ChargeEnergy::none) {
    charge_mlp_ = Mlp<T>::create(store_, "charge.mlp", D, config_.head_hidden, 1, config_.activation);
    charge_theta_ = store_.add("charge.log_coeffs", 1, config_.charge_nodes);
    charge_config_.heads = 1;
    charge_config_.value_dim = 1;
    charge_config_.cutoff = config_.cutoff;
    charge_config_.nodes.count = config_.charge_nodes;
    charge_config_.nodes.first = 0.0;
    charge_config_.nodes.spacing = config_.charge_spacing;
    charge_config_.validate();
    // Fixed (never rotated): at the default degree the estimate is exact to ~1e-5 of the mask for
    // pairs up to 2 pi kappa_max rho ~ degree, so there is no bias for rotations to average out.
    if (config_.charge_energy == ChargeEnergy::flt)
      charge_design_ = attn::SphericalDesign::product_grid(static_cast<int>(config_.charge_degree));
  }
  store_.allocate();
  init_weights();
  draw_all_features(0);

  norm_.elements.clear();
  for (int z = 1; z <= config_.max_z; ++z) norm_.elements.push_back(z);
  norm_.mean.assign(static_cast<std::size_t>(P), 0.0);
  norm_.scale.assign(static_cast<std::size_t>(P), 1.0);
  norm_.reference = Mat<double>::Zero(P, config_.max_z + 1);
  set_normalisation(norm_);
}

template <class T>
void MoleculeModel<T>::init_weights() {
  Rng rng = Rng(config_.seed).fork(kWeightStream);
  embed_z_.init(store_, rng);
  if (config_.use_charges) {
    embed_charge_.init(store_, rng);
    // Neutral atoms start with no charge offset, so use_charges changes nothing until trained.
    store_.value(embed_charge_.weight).row(config_.max_charge).setZero();
  }
  const Index H = config_.heads;
  for (Index b = 0; b < config_.blocks; ++b) {
    Block& blk = blocks_[static_cast<std::size_t>(b)];
    blk.init_attention_layers(store_, rng);
    if constexpr (!is_dual_v<T>)
      if (blk.flt) blk.flt->init_parameters(store_);
    if (config_.attention == AttentionKind::exact) {
      // Start local, like the FLT radial spectra: u_h(rho) ~ -rho^2 / (2 l_h^2) with length
      // scales l_h geometric in [0.75, 3] Angstrom, expanded on the Gaussian basis (a sum of
      // unit Gaussians spaced by their width is ~ sqrt(2 pi) everywhere, hence the division),
      // floored at -20 (exp(-20) is already negligible next to the nearest atoms).
      auto coeffs = store_.value(blk.rbf);
      const auto& basis = exact_config_.basis;
      for (Index h = 0; h < H; ++h) {
        const double t = H > 1 ? static_cast<double>(h) / static_cast<double>(H - 1) : 0.0;
        const double ell = 0.75 * std::pow(4.0, t);
        for (Index k = 0; k < basis.size(); ++k) {
          const double mu = basis.centres[static_cast<std::size_t>(k)];
          const double u = std::max(-20.0, -mu * mu / (2 * ell * ell));
          coeffs(h, k) = static_cast<T>(u / std::sqrt(2 * std::numbers::pi));
        }
      }
    }
    if (config_.attention == AttentionKind::near_far) {
      // Filters as torch's nn.Linear(K, .): uniform(-1/sqrt(K), 1/sqrt(K)); the sink starts at
      // logit 0; the far-field mask at a_hn = far_init (small: far sums grow with the atoms).
      const double bound = 1.0 / std::sqrt(static_cast<double>(config_.radial_nodes));
      for (const ParamRef* r : {&blk.near_wk, &blk.near_bk, &blk.near_wv, &blk.near_bv}) {
        auto m = store_.value(*r);
        for (Index i = 0; i < m.rows(); ++i)
          for (Index j = 0; j < m.cols(); ++j) m(i, j) = static_cast<T>(rng.uniform(-bound, bound));
      }
      store_.value(blk.near_sink).setZero();
      if (config_.far_field != FarField::none)
        store_.value(blk.far_theta).setConstant(static_cast<T>(std::log(config_.far_init)));
    }
    if (config_.attention == AttentionKind::near_far && config_.vectors) {
      blk.update.init(store_, rng);
    } else {
      blk.init_mlp_layers(store_, rng);
    }
  }
  ln_out_.init(store_);
  head_.init(store_, rng);
  if (config_.charge_energy != ChargeEnergy::none) {
    // After every other parameter, so that the rest of the model starts as without the charges.
    charge_mlp_.init(store_, rng);
    set_charge_mask(config_.charge_init);
    // The learned correction to the formal charges starts at zero (the output bias gets no
    // gradient through the neutral projection), so the model starts with the formal charges.
    if (config_.charge_formal) store_.value(charge_mlp_.fc2.weight).setZero();
  }
}

template <class T>
double MoleculeModel<T>::start_charge_mask_at_coulomb() {
  require(config_.charge_energy != ChargeEnergy::none,
          "start_charge_mask_at_coulomb: the model has no charge energy");
  // Coulomb's constant e^2 / (4 pi eps0) = 14.3996454784 eV A (CODATA 2018).
  constexpr double kCoulombEvAngstrom = 14.3996454784;
  const TargetSpec& target = config_.targets.front();
  const io::Unit& unit = io::find_unit(target.unit);
  if (unit.dimension != io::Dimension::energy)
    throw ConfigError("charge_coulomb: target '" + target.name + "' is in '" + target.unit +
                      "', not an energy unit");
  const double k = kCoulombEvAngstrom * io::conversion_factor(io::find_unit("eV"), unit);
  const double c = 4.0 * config_.charge_spacing * k / norm_.scale.front();
  set_charge_mask(c);
  return c;
}

template <class T>
void MoleculeModel<T>::set_charge_mask(double c) {
  // c_n = c for n >= 1 and c_0 = c / 2: the mask is a smoothed c / (4 spacing rho)
  // (sum_{n>=1} j0(n t) = pi / (2 t) - 1/2 for 0 < t < 2 pi).
  auto theta = store_.value(charge_theta_);
  theta.setConstant(static_cast<T>(std::log(c)));
  theta(0, 0) = static_cast<T>(std::log(c / 2));
}

template <class T>
void MoleculeModel<T>::draw_all_features(std::uint64_t draw) {
  draw_ = draw;
  const Index H = config_.heads, d = config_.head_dim(), m = config_.num_features;
  for (Index b = 0; b < config_.blocks; ++b) {
    Block& blk = blocks_[static_cast<std::size_t>(b)];
    if constexpr (!is_dual_v<T>)
      if (blk.flt) blk.flt->draw_features(store_, draw);
    if (config_.attention == AttentionKind::near_far && config_.far_field == FarField::flt)
      blk.far_design = far_design_for_draw(b, draw);
    if (config_.attention == AttentionKind::performer) blk.performer.draw(config_.seed, b, draw, H, m, d);
  }
}

template <class T>
attn::SphericalDesign MoleculeModel<T>::far_design_for_draw(Index block, std::uint64_t draw) const {
  // Draw 0 is the design as built (product grid: its canonical orientation); every other draw
  // a uniformly random rotation of it (product grid) or fresh directions (iid), from the block's
  // feature stream.
  Rng rng = Rng(block_feature_seed(config_.seed, block)).fork(draw);
  if (config_.far_design == attn::DesignKind::iid)
    return attn::SphericalDesign::iid(config_.far_directions, rng);
  const auto grid = attn::SphericalDesign::product_grid(static_cast<int>(config_.far_degree));
  if (draw == 0) return grid;
  return grid.rotated(random_rotation(rng));
}

template <class T>
attn::NearFieldWeights<T> MoleculeModel<T>::near_weights(const Block& blk) const {
  return {store_.value(blk.near_wk), store_.value_span(blk.near_bk), store_.value(blk.near_wv),
          store_.value_span(blk.near_bv), store_.value_span(blk.near_sink)};
}

template <class T>
void MoleculeModel<T>::begin_step(std::uint64_t step) {
  if (config_.redraw_features) draw_all_features(step);
}

template <class T>
void MoleculeModel<T>::set_normalisation(Normalisation norm) {
  const Index P = config_.num_targets();
  require(static_cast<Index>(norm.mean.size()) == P && static_cast<Index>(norm.scale.size()) == P,
          "set_normalisation: mean and scale need one value per target");
  for (Index t = 0; t < P; ++t)
    require(std::isfinite(norm.mean[static_cast<std::size_t>(t)]) &&
                std::isfinite(norm.scale[static_cast<std::size_t>(t)]) &&
                norm.scale[static_cast<std::size_t>(t)] > 0,
            "set_normalisation: mean must be finite and scale finite and positive");
  require(norm.reference.rows() == P && norm.reference.cols() == config_.max_z + 1,
          "set_normalisation: reference energies must be P x (max_z + 1)");
  require(norm.reference.allFinite(), "set_normalisation: non-finite reference energy");
  require(!norm.elements.empty(), "set_normalisation: empty element set");
  if (!config_.three_body) {
    require(norm.three_body.size() == 0, "set_normalisation: three-body weights but three_body is off");
  } else if (norm.three_body.size() != 0) {
    const Index F = three_body_basis(config_, norm.elements).feature_count();
    require(norm.three_body.rows() == P && norm.three_body.cols() == F,
            "set_normalisation: three-body weights must be P x " + std::to_string(F));
    require(norm.three_body.allFinite(), "set_normalisation: non-finite three-body weight");
  }
  element_ok_.assign(static_cast<std::size_t>(config_.max_z + 1), 0);
  for (std::size_t i = 0; i < norm.elements.size(); ++i) {
    const int z = norm.elements[i];
    require(z >= 1 && z <= config_.max_z, "set_normalisation: element " + std::to_string(z) +
                                               " outside 1..max_z");
    require(i == 0 || z > norm.elements[i - 1], "set_normalisation: elements must be sorted and unique");
    element_ok_[static_cast<std::size_t>(z)] = 1;
  }
  norm_ = std::move(norm);
}

template <class T>
bool MoleculeModel<T>::supports_element(int z) const noexcept {
  return z >= 1 && z <= config_.max_z && element_ok_[static_cast<std::size_t>(z)];
}

namespace {
std::string element_list(const std::vector<std::int32_t>& elements) {
  std::string s;
  for (std::size_t i = 0; i < elements.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(elements[i]);
  }
  return s;
}
}  // namespace

template <class T>
Fragments MoleculeModel<T>::charge_groups(const MoleculeBatch& batch) const {
  if (config_.charge_neutral == ChargeNeutral::fragment)
    return covalent_fragments(batch.index, batch.coords, batch.atomic_numbers, config_.charge_bond_scale);
  return set_fragments(batch.index);
}

template <class T>
std::optional<std::string> MoleculeModel<T>::unsupported_reason(const Molecule& m) const {
  if (m.atomic_numbers.empty()) return std::string("empty molecule (no atoms)");
  if (m.positions.size() != m.atomic_numbers.size()) return std::string("atom and position counts differ");
  for (std::size_t i = 0; i < m.atomic_numbers.size(); ++i) {
    const int z = m.atomic_numbers[i];
    if (!supports_element(z))
      return "atom " + std::to_string(i + 1) + ": element Z=" + std::to_string(z) +
             " was not in the model's training set (known Z: " + element_list(norm_.elements) + ")";
    for (double c : m.positions[i])
      if (!std::isfinite(c)) return "atom " + std::to_string(i + 1) + ": non-finite coordinate";
    if (!m.formal_charges.empty()) {
      const int q = m.formal_charges[i];
      if (config_.use_charges && (q < -config_.max_charge || q > config_.max_charge))
        return "atom " + std::to_string(i + 1) + ": formal charge " + std::to_string(q) +
               " outside +-" + std::to_string(config_.max_charge);
    }
  }
  // Finite coordinates whose squares or differences overflow, or whose spread the float network
  // cannot resolve, would give NaN or meaningless values; no molecule spans a kilometre.
  for (int a = 0; a < 3; ++a) {
    const auto [lo, hi] = std::minmax_element(m.positions.begin(), m.positions.end(),
                                              [a](const auto& p, const auto& q) { return p[a] < q[a]; });
    if (const double span = (*hi)[a] - (*lo)[a]; span > kMaxStructureExtent) {
      char text[160];
      std::snprintf(text, sizeof text, "atoms %td and %td are %.3g Angstrom apart along %c: more than the %g Angstrom a structure may span (wrong units?)",
                    lo - m.positions.begin() + 1, hi - m.positions.begin() + 1, span, static_cast<char>('x' + a),
                    kMaxStructureExtent);
      return std::string(text);
    }
  }
  return std::nullopt;
}

template <class T>
void MoleculeModel<T>::check_batch(const MoleculeBatch& batch) const {
  const Index N = batch.num_atoms();
  require(static_cast<Index>(batch.atomic_numbers.size()) == N && batch.coords.rows() == N &&
              batch.coords.cols() == 3 && static_cast<Index>(batch.formal_charges.size()) == N,
          "MoleculeModel: inconsistent batch arrays");
  for (Index s = 0; s < batch.num_molecules(); ++s) {
    if (batch.index.size(s) == 0)
      throw InvalidArgument("molecule " + std::to_string(s) + " of the batch is empty (no atoms)");
    for (Index i = batch.index.begin(s); i < batch.index.end(s); ++i) {
      const int z = batch.atomic_numbers[static_cast<std::size_t>(i)];
      const std::string where = "molecule " + std::to_string(s) + " of the batch, atom " +
                                std::to_string(i - batch.index.begin(s) + 1) + ": ";
      if (!supports_element(z))
        throw InvalidArgument(where + "element Z=" + std::to_string(z) +
                              " was not in the model's training set (known Z: " +
                              element_list(norm_.elements) + ")");
      if (!batch.coords.row(i).allFinite()) throw InvalidArgument(where + "non-finite coordinate");
      const int q = batch.formal_charges[static_cast<std::size_t>(i)];
      if (config_.use_charges && (q < -config_.max_charge || q > config_.max_charge))
        throw InvalidArgument(where + "formal charge " + std::to_string(q) + " outside +-" +
                              std::to_string(config_.max_charge));
    }
  }
}

template <class T>
Mat<T> MoleculeModel<T>::forward(const MoleculeBatch& batch, ModelCache<T>& cache,
                                 const Mat<double>* coordinate_tangent) {
  check_batch(batch);
  if constexpr (!is_dual_v<T>)
    require(coordinate_tangent == nullptr,
            "MoleculeModel::forward: coordinate tangents need the Dual scalar type");
  if (coordinate_tangent != nullptr)
    require(coordinate_tangent->rows() == batch.num_atoms() && coordinate_tangent->cols() == 3,
            "MoleculeModel::forward: the coordinate tangent must be N x 3");
  const Index N = batch.num_atoms(), D = config_.width;
  const bool near_far = config_.attention == AttentionKind::near_far;
  const bool vectors = near_far && config_.vectors;
  require(!cache.update_rows || *cache.update_rows >= 0,
          "MoleculeModel::forward: ModelCache::update_rows must not be negative");
  cache.index = batch.index;
  cache.z = batch.atomic_numbers;
  cache.coords = batch.coords.cast<T>();
  if constexpr (is_dual_v<T>)
    if (coordinate_tangent != nullptr)
      for (Index i = 0; i < N; ++i)
        for (Index a = 0; a < 3; ++a) cache.coords(i, a).d = (*coordinate_tangent)(i, a);
  Mat<T> x = embed_z_.forward(store_, cache.z);
  if (config_.use_charges) {
    cache.charge_ids.resize(static_cast<std::size_t>(N));
    for (Index i = 0; i < N; ++i)
      cache.charge_ids[static_cast<std::size_t>(i)] =
          batch.formal_charges[static_cast<std::size_t>(i)] + config_.max_charge;
    x += embed_charge_.forward(store_, cache.charge_ids);
  }
  if (!config_.use_charges) cache.charge_ids.clear();
  cache.types = find_atom_types(cache.z, cache.charge_ids, config_.max_z,
                                config_.use_charges ? 2 * config_.max_charge + 1 : 1);
  if constexpr (!is_dual_v<T>)
    if (config_.attention == AttentionKind::exact)
      exact::radial_basis_table<T>(exact_config_, batch.index, cache.coords, cache.radial);
  if (near_far) {
    if constexpr (is_dual_v<T>)
      cache.coords_double = cache.coords;  // with the tangents
    else
      cache.coords_double = batch.coords;
    cache.neighbours = attn::build_neighbour_list(batch.index, batch.coords, config_.cutoff);
    check_density(batch, cache.neighbours);
  }
  Mat<T> vec;  // N x 3D vector features (near_far with vectors)
  if (vectors) vec = Mat<T>::Zero(N, 3 * D);
  if (cache.recompute_blocks) {
    require(near_far && !is_dual_v<T>,
            "MoleculeModel::forward: block recomputation needs near_far attention in float or double");
    cache.blocks.assign(blocks_.size(), BlockCache<T>{});  // nothing kept
    cache.block_x.resize(blocks_.size());
    cache.block_vec.resize(blocks_.size());
  } else {
    cache.blocks.resize(blocks_.size());
    cache.block_x.clear();
    cache.block_vec.clear();
  }
  BlockCache<T> scratch;  // the one block cache when recomputing
  for (std::size_t b = 0; b < blocks_.size(); ++b) {
    if (cache.recompute_blocks) {
      cache.block_x[b] = x;
      cache.block_vec[b] = vec;
    }
    forward_block(b, batch, cache, x, vec, cache.recompute_blocks ? scratch : cache.blocks[b]);
  }
  const Mat<T> u = ln_out_.forward(store_, x, cache.ln_out);
  cache.y = head_.forward(store_, u, cache.head);
  if constexpr (!is_dual_v<T>) {
    if (config_.charge_energy != ChargeEnergy::none) {
      cache.charges = charge_mlp_.forward(store_, u, cache.charge_mlp);
      cache.charge_groups = charge_groups(batch);
      neutralise<T>(cache.charge_groups, cache.charges);
      if (config_.charge_formal) add_formal_charges<T>(batch, cache.charges);
      cache.charge_coeffs = store_.value(charge_theta_).array().exp().matrix();
      cache.potential.resize(N, 1);
      charge_potential(batch, cache.neighbours, cache.coords_double, cache.charges,
                       cache.charge_coeffs, cache.potential, cache.charge_far);
      add_charge_energy<T>(cache.charges, cache.potential, cache.y);
    }
  }
  return pool(batch, cache.y);
}

template <class T>
void MoleculeModel<T>::forward_block(std::size_t b, const MoleculeBatch& batch, const ModelCache<T>& cache,
                                     Mat<T>& x, Mat<T>& vec, BlockCache<T>& bc) {
  const Index N = batch.num_atoms(), D = config_.width;
  const bool vectors = config_.attention == AttentionKind::near_far && config_.vectors;
  Block& blk = blocks_[b];
  // q, k, v of LN1(x); block 0 once per atom type, then gathered (see AtomTypes).
  if (b == 0) {
    blk.project(store_, rows_of_types(x, cache.types), bc);
    gather_rows_in_place(bc.q, cache.types.of_atom);
    gather_rows_in_place(bc.k, cache.types.of_atom);
    gather_rows_in_place(bc.v, cache.types.of_atom);
  } else {
    blk.project(store_, x, bc);
  }
  bc.a.resize(N, D);
  Mat<T> vec_msg;  // N x 3D vector messages of the near field: added to vec, not kept for backward
  switch (config_.attention) {
    case AttentionKind::kronecker:
    case AttentionKind::bias:
      if constexpr (!is_dual_v<T>)
        blk.flt->forward(store_, bc.q, bc.k, bc.v, cache.coords, batch.index, bc.a, bc.flt);
      break;
    case AttentionKind::exact:
      if constexpr (!is_dual_v<T>) {
        exact::streaming_attention_forward<T>(exact_config_, batch.index, bc.q, bc.k, bc.v,
                                              cache.coords, store_.value(blk.rbf), bc.exact,
                                              &cache.radial);
        bc.a = bc.exact.out;
      }
      break;
    case AttentionKind::performer:
      if constexpr (!is_dual_v<T>) {
        attn::kernel_attention_forward<T>(blk.performer.omega_t, batch.index, attn::KernelGrid{}, bc.q,
                                          bc.k, bc.v, {}, bc.perf);
        bc.a = bc.perf.out;
      }
      break;
    case AttentionKind::near_far: {
      if (vectors) {
        bc.vec_in = vec;
        vec_msg.resize(N, 3 * D);
      }
      attn::near_field_forward<T>(near_config_, cache.neighbours, cache.coords_double, bc.q, bc.k,
                                  bc.v, bc.vec_in, near_weights(blk), bc.a, vec_msg, bc.near);
      if (config_.far_field != FarField::none) {
        bc.far_coeffs = store_.value(blk.far_theta).array().exp().matrix();
        Mat<T> far(N, D);
        if constexpr (is_dual_v<T>) {
          // The same functions in dual numbers (far_field.hpp), with tangents.
          if (config_.far_field == FarField::flt)
            attn::far_field_dual_forward(far_config_, blk.far_design, batch.index, cache.neighbours,
                                         cache.coords_double, bc.v.leftCols(D), bc.far_coeffs, far);
          else
            attn::far_field_exact_forward<T>(far_config_, batch.index, cache.coords_double,
                                             bc.v.leftCols(D), bc.far_coeffs, far);
        } else if (config_.far_field == FarField::flt) {
          bc.far.keep_pair_terms = cache.keep_far_pair_terms;
          attn::far_field_forward<T>(far_config_, blk.far_design, batch.index, cache.neighbours,
                                     cache.coords_double, bc.v.leftCols(D), bc.far_coeffs, far,
                                     bc.far);
        } else {
          attn::far_field_exact_forward<T>(far_config_, batch.index, cache.coords_double,
                                           bc.v.leftCols(D), bc.far_coeffs, far);
        }
        bc.a += far;
      }
      break;
    }
  }
  blk.add_output(store_, bc.a, x);
  if (vectors) {
    // vec += vector messages; then the gated equivariant update of x and vec.
    vec += vec_msg;
    vec_msg.resize(0, 0);
    const Index rows = cache.update_rows.value_or(N > recompute_atoms ? update_block_rows : 0);
    if (rows > 0) blk.update.forward_compact(store_, x, vec, bc.update, rows);
    else blk.update.forward(store_, x, vec, bc.update);
  } else {
    blk.add_mlp(store_, x, bc);
  }
}

template <class T>
void MoleculeModel<T>::charge_potential(const MoleculeBatch& batch,
                                        const attn::NeighbourList& neighbours,
                                        ConstMatRef<Accum<T>> coords, ConstMatRef<T> charges,
                                        ConstMatRef<T> coeffs, MatRef<T> potential,
                                        attn::FarFieldCache<T>& far) const {
  if constexpr (is_dual_v<T>) {
    throw ConfigError("charge_energy: not available with dual numbers");  // refused at construction
  } else {
    if (config_.charge_energy == ChargeEnergy::flt) {
      // The design resolves the mask for pairs with 2 pi kappa_max rho below about its degree
      // (docs/molecule-model.md); a wider structure gets a less accurate estimate: say so once.
      if (!charge_range_warned_) {
        const double kappa_max = charge_config_.nodes.kappa(config_.charge_nodes - 1);
        for (Index s = 0; s < batch.num_molecules(); ++s) {
          const auto rows = coords.middleRows(batch.index.begin(s), batch.index.size(s));
          const double extent = values_of<Accum<T>>(rows.colwise().maxCoeff() - rows.colwise().minCoeff()).norm();
          if (2 * std::numbers::pi * kappa_max * extent > static_cast<double>(config_.charge_degree) - 4) {
            log_warning("charge energy: a structure of ", batch.index.size(s), " atoms spans ", extent,
                        " A, beyond the ", (static_cast<double>(config_.charge_degree) - 4) /
                                                (2 * std::numbers::pi * kappa_max),
                        " A that charge_degree = ", config_.charge_degree,
                        " resolves accurately; the charge energy of its far pairs is approximate");
            charge_range_warned_ = true;
            break;
          }
        }
      }
      attn::far_field_forward<T>(charge_config_, charge_design_, batch.index, neighbours, coords,
                                 charges, coeffs, potential, far);
    } else {
      attn::far_field_exact_forward<T>(charge_config_, batch.index, coords, charges, coeffs, potential);
    }
  }
}

template <class T>
void MoleculeModel<T>::check_density(const MoleculeBatch& batch, const attn::NeighbourList& neighbours) const {
  if (density_warned_) return;
  // Pairs per atom (self included) within the cutoff, as atoms per A^3 of the cutoff sphere. A
  // structure smaller than the bound in atoms cannot exceed it, so molecules never pay the count.
  const double sphere = 4.0 / 3.0 * std::numbers::pi * config_.cutoff * config_.cutoff * config_.cutoff;
  const double bound = max_atom_density * sphere;
  for (Index s = 0; s < batch.num_molecules(); ++s) {
    const Index n = batch.index.size(s);
    if (static_cast<double>(n) <= bound) continue;
    const auto begin = static_cast<std::size_t>(batch.index.begin(s));
    const auto pairs = neighbours.offsets[begin + static_cast<std::size_t>(n)] - neighbours.offsets[begin];
    const double per_atom = static_cast<double>(pairs) / static_cast<double>(n);
    if (per_atom <= bound) continue;
    log_warning("a structure of ", n, " atoms has ", std::setprecision(4), per_atom,
                " neighbours per atom within ", config_.cutoff, " A, an atom density of at least ", per_atom / sphere,
                " per A^3 (liquid water 0.1, diamond 0.18): are its coordinates in nm rather than Angstrom?");
    density_warned_ = true;
    return;
  }
}

template <class T>
Mat<Accum<T>> MoleculeModel<T>::pooled_sums(const MoleculeBatch& batch, const Mat<T>& y) const {
  // Per-target pooling: sum (extensive) or mean (intensive), rows summed in order in double.
  const Index S = batch.num_molecules(), P = config_.num_targets();
  Mat<Accum<T>> out(S, P);
  for (Index s = 0; s < S; ++s)
    for (Index t = 0; t < P; ++t) {
      Accum<T> acc = 0.0;
      for (Index i = batch.index.begin(s); i < batch.index.end(s); ++i) acc += static_cast<Accum<T>>(y(i, t));
      if (!config_.targets[static_cast<std::size_t>(t)].extensive)
        acc /= static_cast<double>(batch.index.size(s));
      out(s, t) = acc;
    }
  return out;
}

template <class T>
Mat<T> MoleculeModel<T>::pool(const MoleculeBatch& batch, const Mat<T>& y) const {
  const Mat<Accum<T>> sums = pooled_sums(batch, y);
  Mat<T> out(sums.rows(), sums.cols());
  for (Index s = 0; s < sums.rows(); ++s)
    for (Index t = 0; t < sums.cols(); ++t) out(s, t) = static_cast<T>(sums(s, t));
  return out;
}

template <class T>
Mat<Accum<T>> MoleculeModel<T>::infer_accumulated(const MoleculeBatch& batch, Mat<T>* per_atom) {
  Mat<T> y;
  infer(batch, &y);
  Mat<Accum<T>> sums = pooled_sums(batch, y);
  if (per_atom != nullptr) *per_atom = std::move(y);
  return sums;
}

namespace {

// Calls f(r0, r1) for the row ranges [b rows, min(n, (b + 1) rows)) covering [0, n), one OpenMP
// team over the ranges: f must write only its own rows. The kernels f calls open no team of their
// own inside (nested regions are inactive) and compute each row independently of the others, so
// the results do not depend on which thread takes which range; dynamic scheduling keeps both
// threads busy when a core is shared with other work. One range: the kernels' own teams.
template <class F>
void for_row_blocks(Index n, Index rows, F&& f) {
  const Index ranges = (n + rows - 1) / rows;
#pragma omp parallel for schedule(dynamic, 1) if (ranges > 1)
  for (Index b = 0; b < ranges; ++b) f(b * rows, std::min(n, (b + 1) * rows));
}

// Seconds since `start`, to three significant digits (for progress lines).
std::string seconds_since(std::chrono::steady_clock::time_point start) {
  std::ostringstream text;
  text << std::setprecision(3)
       << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s";
  return text.str();
}

}  // namespace

template <class T>
Mat<T> MoleculeModel<T>::infer(const MoleculeBatch& batch, Mat<T>* per_atom) {
  if constexpr (is_dual_v<T>) {
    // Dual numbers serve derivatives, which need the caches: the forward, the same outputs.
    ModelCache<T> cache;
    Mat<T> out = forward(batch, cache);
    if (per_atom != nullptr) *per_atom = cache.y;
    return out;
  } else {
    check_batch(batch);
    const Index N = batch.num_atoms(), D = config_.width, P = config_.num_targets();
    const Index B = static_cast<Index>(blocks_.size());
    const bool near_far = config_.attention == AttentionKind::near_far;
    const bool vectors = near_far && config_.vectors;
    const bool report = N >= progress_atoms;
    auto clock = std::chrono::steady_clock::now();

    std::vector<std::int32_t> charge_ids;
    Mat<T> x = embed_z_.forward(store_, batch.atomic_numbers);
    if (config_.use_charges) {
      charge_ids.resize(static_cast<std::size_t>(N));
      for (Index i = 0; i < N; ++i)
        charge_ids[static_cast<std::size_t>(i)] =
            batch.formal_charges[static_cast<std::size_t>(i)] + config_.max_charge;
      x += embed_charge_.forward(store_, charge_ids);
    }
    const AtomTypes types = find_atom_types(batch.atomic_numbers, charge_ids, config_.max_z,
                                            config_.use_charges ? 2 * config_.max_charge + 1 : 1);
    attn::NeighbourList neighbours;
    if (near_far) {
      neighbours = attn::build_neighbour_list(batch.index, batch.coords, config_.cutoff);
      check_density(batch, neighbours);
      if (report)
        log_info("predicting ", N, " atoms: neighbour list of ", neighbours.num_pairs(), " pairs (",
                 std::setprecision(3), static_cast<double>(neighbours.num_pairs()) / static_cast<double>(N),
                 " per atom) in ", seconds_since(clock));
    }
    exact::RadialBasisTable<T> radial;
    Mat<T> coords;  // the kinds other than near_far take the coordinates in T
    if (!near_far) coords = batch.coords.cast<T>();
    if (config_.attention == AttentionKind::exact)
      exact::radial_basis_table<T>(exact_config_, batch.index, coords, radial);

    // One block's activations, reused by every block.
    Mat<T> q(N, D), k(N, D), v, a(N, D);
    Mat<T> vec, vec_msg;  // N x 3D with vectors
    if (vectors) {
      vec = Mat<T>::Zero(N, 3 * D);
      vec_msg.resize(N, 3 * D);
    }
    BlockCache<T> scratch;  // the kernels of the kinds other than near_far fill a cache
    for (Index b = 0; b < B; ++b) {
      const auto block_start = std::chrono::steady_clock::now();
      Block& blk = blocks_[static_cast<std::size_t>(b)];
      v.resize(N, blk.value_width());
      // q, k, v = LN1(x) W + bias; block 0 per atom type (as forward), the others by row blocks.
      if (b == 0) {
        const Index nt = static_cast<Index>(types.first_atom.size());
        Mat<T> qt(nt, D), kt(nt, D), vt(nt, blk.value_width());
        blk.project(store_, rows_of_types(x, types), qt, kt, vt);
        gather_rows<T>(qt, types.of_atom, q);
        gather_rows<T>(kt, types.of_atom, k);
        gather_rows<T>(vt, types.of_atom, v);
      } else {
        for_row_blocks(N, infer_rows, [&](Index r0, Index r1) {
          const Index n = r1 - r0;
          blk.project(store_, x.middleRows(r0, n), q.middleRows(r0, n), k.middleRows(r0, n),
                      v.middleRows(r0, n));
        });
      }
      switch (config_.attention) {
        case AttentionKind::kronecker:
        case AttentionKind::bias:
          blk.flt->forward(store_, q, k, v, coords, batch.index, a, scratch.flt);
          break;
        case AttentionKind::exact:
          exact::streaming_attention_forward<T>(exact_config_, batch.index, q, k, v, coords,
                                                store_.value(blk.rbf), scratch.exact, &radial);
          a = scratch.exact.out;
          break;
        case AttentionKind::performer:
          attn::kernel_attention_forward<T>(blk.performer.omega_t, batch.index, attn::KernelGrid{}, q, k,
                                            v, {}, scratch.perf);
          a = scratch.perf.out;
          break;
        case AttentionKind::near_far: {
          attn::near_field_infer<T>(near_config_, neighbours, batch.coords, q, k, v, vec,
                                    near_weights(blk), a, vec_msg);
          if (config_.far_field != FarField::none) {
            // q is spent: its rows take the far field.
            const Mat<T> coeffs = store_.value(blk.far_theta).array().exp().matrix();
            if (config_.far_field == FarField::flt) {
              attn::FarFieldCache<T> far_sums;
              attn::far_field_forward<T>(far_config_, blk.far_design, batch.index, neighbours,
                                         batch.coords, v.leftCols(D), coeffs, q, far_sums);
            } else {
              attn::far_field_exact_forward<T>(far_config_, batch.index, batch.coords, v.leftCols(D),
                                               coeffs, q);
            }
            a += q;
          }
          break;
        }
      }
      // x += a Wo + bo; then the equivariant update, or x += MLP(LN2(x)): row-local, by row blocks.
      if (vectors) vec += vec_msg;
      for_row_blocks(N, infer_rows, [&](Index r0, Index r1) {
        const Index n = r1 - r0;
        blk.add_output(store_, a.middleRows(r0, n), x.middleRows(r0, n));
        if (vectors) {
          Mat<T> x_rows = x.middleRows(r0, n), vec_rows = vec.middleRows(r0, n);
          EquivariantUpdateCache<T> update_rows;
          blk.update.forward(store_, x_rows, vec_rows, update_rows);
          x.middleRows(r0, n) = x_rows;
          vec.middleRows(r0, n) = vec_rows;
        } else {
          blk.add_mlp(store_, x.middleRows(r0, n));
        }
      });
      if (report)
        log_info("predicting ", N, " atoms: block ", b + 1, " of ", B, " in ",
                 seconds_since(block_start));
    }
    Mat<T> y(N, P);
    const bool charges = config_.charge_energy != ChargeEnergy::none;
    Mat<T> atom_charges(charges ? N : 0, 1);
    for_row_blocks(N, infer_rows, [&](Index r0, Index r1) {
      const Mat<T> u = ln_out_.forward(store_, x.middleRows(r0, r1 - r0));
      y.middleRows(r0, r1 - r0) = head_.forward(store_, u);
      if (charges) atom_charges.middleRows(r0, r1 - r0) = charge_mlp_.forward(store_, u);
    });
    if (charges) {
      neutralise<T>(charge_groups(batch), atom_charges);
      if (config_.charge_formal) add_formal_charges<T>(batch, atom_charges);
      const Mat<T> coeffs = store_.value(charge_theta_).array().exp().matrix();
      Mat<T> potential(N, 1);
      attn::FarFieldCache<T> far_sums;
      charge_potential(batch, neighbours, batch.coords, atom_charges, coeffs, potential, far_sums);
      add_charge_energy<T>(atom_charges, potential, y);
    }
    if (report) log_info("predicting ", N, " atoms: done in ", seconds_since(clock));
    Mat<T> out = pool(batch, y);
    if (per_atom != nullptr) *per_atom = std::move(y);
    return out;
  }
}

template <class T>
void MoleculeModel<T>::backward(const MoleculeBatch& batch, const ModelCache<T>& cache,
                                ConstMatRef<T> dout, Mat<T>* dcoords) {
  const Index N = batch.num_atoms(), S = batch.num_molecules(), D = config_.width;
  const Index P = config_.num_targets();
  const bool near_far = config_.attention == AttentionKind::near_far;
  const bool vectors = near_far && config_.vectors;
  require(cache.y.rows() == N && cache.index.offsets() == batch.index.offsets() &&
              cache.blocks.size() == blocks_.size(),
          "MoleculeModel::backward: cache from another batch");
  require(dout.rows() == S && dout.cols() == P, "MoleculeModel::backward: dout must be S x P");
  Mat<T> dy(N, P);
  for (Index s = 0; s < S; ++s)
    for (Index t = 0; t < P; ++t) {
      T g = dout(s, t);
      if (!config_.targets[static_cast<std::size_t>(t)].extensive)
        g /= static_cast<T>(batch.index.size(s));
      for (Index i = batch.index.begin(s); i < batch.index.end(s); ++i) dy(i, t) = g;
    }
  const bool want_dr = dcoords != nullptr;
  Mat<T> du = Mat<T>::Zero(N, D);
  head_.backward(store_, cache.head, dy, du);
  Mat<T> dr_charge = want_dr ? Mat<T>::Zero(N, 3) : Mat<T>(0, 3);
  if constexpr (!is_dual_v<T>) {
    if (config_.charge_energy != ChargeEnergy::none) {
      // y_i0 += q_i phi_i / 2 with phi = M q (M symmetric, the masked pairs): the far field's
      // backward with dout = dy q / 2 gives M^T (dy q / 2) into dq, plus the direct dy phi / 2.
      Mat<T> dphi(N, 1), dq(N, 1);
      for (Index i = 0; i < N; ++i) {
        dphi(i, 0) = static_cast<T>(0.5) * dy(i, 0) * cache.charges(i, 0);
        dq(i, 0) = static_cast<T>(0.5) * dy(i, 0) * cache.potential(i, 0);
      }
      Mat<T> dcoeffs = Mat<T>::Zero(1, config_.charge_nodes);
      if (config_.charge_energy == ChargeEnergy::flt)
        attn::far_field_backward<T>(charge_config_, charge_design_, batch.index, cache.neighbours,
                                    cache.coords_double, cache.charges, cache.charge_coeffs,
                                    cache.charge_far, dphi, dq, dr_charge, dcoeffs);
      else
        attn::far_field_exact_backward<T>(charge_config_, batch.index, cache.coords_double,
                                          cache.charges, cache.charge_coeffs, dphi, dq, dr_charge,
                                          dcoeffs);
      if (pass_options().parameter_gradient_values)
        store_.grad(charge_theta_).array() += dcoeffs.array() * cache.charge_coeffs.array();
      neutralise<T>(cache.charge_groups, dq);
      charge_mlp_.backward(store_, cache.charge_mlp, dq, du);
    }
  }
  Mat<T> dx = Mat<T>::Zero(N, D);
  ln_out_.backward(store_, cache.ln_out, du, dx);

  Mat<T> dr = Mat<T>::Zero(N, 3);
  Mat<T> no_dr(0, 3);
  Mat<Accum<T>> dr_near = want_dr && near_far ? Mat<Accum<T>>::Zero(N, 3) : Mat<Accum<T>>(0, 3);
  Mat<T> dvec;  // dLoss/dvec after the block being processed (near_far with vectors)
  if (vectors) dvec = Mat<T>::Zero(N, 3 * D);
  EncoderBlockGrads<T> g;
  BlockCache<T> recomputed;  // the block's cache, recomputed from its inputs (recompute_blocks)
  require(!cache.recompute_blocks || cache.block_x.size() == blocks_.size(),
          "MoleculeModel::backward: the cache holds no block inputs to recompute from");
  for (std::size_t bi = blocks_.size(); bi-- > 0;) {
    const Block& blk = blocks_[bi];
    if (cache.recompute_blocks) {
      Mat<T> x_in = cache.block_x[bi], vec_in = cache.block_vec[bi];
      forward_block(bi, batch, cache, x_in, vec_in, recomputed);
    }
    const BlockCache<T>& bc = cache.recompute_blocks ? recomputed : cache.blocks[bi];
    if (vectors) {
      // x_out, vec_out = update(x_mid, vec_mid): dx, dvec become dLoss/d(x_mid, vec_mid).
      blk.update.backward(store_, bc.update, dx, dvec);
    } else {
      blk.mlp_backward(store_, bc, dx, g);
    }
    // x_mid = x_in + a Wo + bo.
    blk.output_backward(store_, bc, dx, g);
    blk.zero_attention_grads(N, g);
    Mat<T>&dq = g.dq, &dk = g.dk, &dv = g.dv;
    const Mat<T>& da = g.da;
    switch (config_.attention) {
      case AttentionKind::kronecker:
      case AttentionKind::bias:
        if constexpr (!is_dual_v<T>)
          blk.flt->backward(store_, bc.q, bc.k, bc.v, cache.coords, batch.index, bc.flt, da, dq, dk,
                            dv, want_dr ? MatRef<T>(dr) : MatRef<T>(no_dr));
        break;
      case AttentionKind::exact:
        if constexpr (!is_dual_v<T>)
          exact::streaming_attention_backward<T>(exact_config_, batch.index, bc.q, bc.k, bc.v,
                                                 cache.coords, store_.value(blk.rbf), bc.exact, da,
                                                 dq, dk, dv, dr, store_.grad(blk.rbf),
                                                 &cache.radial);
        break;
      case AttentionKind::performer:
        if constexpr (!is_dual_v<T>) {
          std::vector<Vec<T>> no_dmasks;
          attn::kernel_attention_backward<T>(blk.performer.omega_t, batch.index, attn::KernelGrid{}, bc.q,
                                             bc.k, bc.v, {}, bc.perf, da, dq, dk, dv, no_dmasks);
        }
        break;
      case AttentionKind::near_far: {
        Mat<T> dr_block = want_dr ? Mat<T>::Zero(N, 3) : Mat<T>(0, 3);
        if (config_.far_field != FarField::none) {
          Mat<T> dcoeffs = Mat<T>::Zero(config_.heads, config_.far_nodes);
          auto dv_far = dv.leftCols(D);
          if constexpr (is_dual_v<T>) {
            if (config_.far_field == FarField::flt)
              attn::far_field_dual_backward(far_config_, blk.far_design, batch.index, cache.neighbours,
                                            cache.coords_double, bc.v.leftCols(D), bc.far_coeffs, da,
                                            dv_far, dr_block, dcoeffs);
            else
              attn::far_field_exact_backward<T>(far_config_, batch.index, cache.coords_double,
                                                bc.v.leftCols(D), bc.far_coeffs, da, dv_far, dr_block,
                                                dcoeffs);
          } else if (config_.far_field == FarField::flt)
            attn::far_field_backward<T>(far_config_, blk.far_design, batch.index, cache.neighbours,
                                        cache.coords_double, bc.v.leftCols(D), bc.far_coeffs,
                                        bc.far, da, dv_far, dr_block, dcoeffs);
          else
            attn::far_field_exact_backward<T>(far_config_, batch.index, cache.coords_double,
                                              bc.v.leftCols(D), bc.far_coeffs, da, dv_far,
                                              dr_block, dcoeffs);
          // a_hn = exp(theta_hn): dtheta = da_hn a_hn.
          if (is_dual_v<T> || pass_options().parameter_gradient_values)
            store_.grad(blk.far_theta).array() += dcoeffs.array() * bc.far_coeffs.array();
        }
        // vec_mid = vec_in + messages: the messages get dvec, and dvec keeps the identity path.
        Mat<T> dvec_in;
        if (vectors) dvec_in = dvec;
        attn::NearFieldGrads<T> grads{store_.grad(blk.near_wk), store_.grad_span(blk.near_bk),
                                      store_.grad(blk.near_wv), store_.grad_span(blk.near_bv),
                                      store_.grad_span(blk.near_sink)};
        attn::near_field_backward<T>(near_config_, cache.neighbours, cache.coords_double, bc.q, bc.k,
                                     bc.v, bc.vec_in, near_weights(blk), bc.near, da, dvec, dq, dk, dv,
                                     dvec_in, dr_block, grads);
        if (vectors) dvec = std::move(dvec_in);
        if (want_dr) dr_near += dr_block.template cast<Accum<T>>();
        break;
      }
    }
    if (bi == 0) {
      // Block 0 ran per atom type: the weight gradients u_t^T (sum of the type's dq rows) equal
      // the per-atom sums, and the input gradient of a type goes to its embedding rows once.
      const auto& types = cache.types;
      Mat<T> dx_types = Mat<T>::Zero(static_cast<Index>(types.z.size()), D);
      blk.project_backward(store_, bc, sum_rows_by_type<T>(dq, types), sum_rows_by_type<T>(dk, types),
                           sum_rows_by_type<T>(dv, types), g.du, dx_types);
      embedding_backward<T>(types.z, dx_types, store_.grad(embed_z_.weight));
      if (config_.use_charges)
        embedding_backward<T>(types.charge_ids, dx_types, store_.grad(embed_charge_.weight));
    } else {
      blk.project_backward(store_, bc, dq, dk, dv, g.du, dx);
    }
  }
  // The residual path of every atom (block 0's LN1 path was added per type above).
  embedding_backward<T>(cache.z, dx, store_.grad(embed_z_.weight));
  if (config_.use_charges) embedding_backward<T>(cache.charge_ids, dx, store_.grad(embed_charge_.weight));
  if (want_dr) {
    if (config_.charge_energy != ChargeEnergy::none) dr_near += dr_charge.template cast<Accum<T>>();
    if (near_far) dr = dr_near.template cast<T>();
    *dcoords = std::move(dr);
  }
}

template <class T>
ThreeBodyEnergy MoleculeModel<T>::three_body_part(const MoleculeBatch& batch, Index t, bool want_gradient) const {
  const Index S = batch.num_molecules(), N = batch.num_atoms();
  if (norm_.three_body.size() == 0 || !config_.targets[static_cast<std::size_t>(t)].extensive) {
    ThreeBodyEnergy zero;
    zero.per_structure = Vec<double>::Zero(S);
    zero.per_atom = Vec<double>::Zero(N);
    if (want_gradient) zero.gradient = Mat<double>::Zero(N, 3);
    return zero;
  }
  require(batch.coords.rows() == N && batch.coords.cols() == 3,
          "the three-body reference needs the batch's coordinates");
  const Vec<double> weights = norm_.three_body.row(t).transpose();
  return three_body_energy(three_body_basis(config_, norm_.elements), batch.index, batch.coords,
                           batch.atomic_numbers, weights, want_gradient);
}

template <class T>
Mat<double> MoleculeModel<T>::reference_gradient(const MoleculeBatch& batch, Index t) const {
  require(t >= 0 && t < config_.num_targets(), "reference_gradient: target index out of range");
  return three_body_part(batch, t, true).gradient;
}

template <class T>
Mat<double> MoleculeModel<T>::three_body_per_structure(const MoleculeBatch& batch) const {
  const Index S = batch.num_molecules(), P = config_.num_targets();
  if (norm_.three_body.size() == 0) return Mat<double>::Zero(S, P);
  require(batch.coords.rows() == batch.num_atoms() && batch.coords.cols() == 3,
          "the three-body reference needs the batch's coordinates");
  return three_body_from_descriptors(
      three_body_features(three_body_basis(config_, norm_.elements), batch.index, batch.coords, batch.atomic_numbers));
}

template <class T>
Mat<double> MoleculeModel<T>::three_body_from_descriptors(const Mat<double>& descriptors) const {
  const Index S = descriptors.rows(), P = config_.num_targets();
  if (norm_.three_body.size() == 0) return Mat<double>::Zero(S, P);
  require(descriptors.cols() == norm_.three_body.cols(),
          "three-body reference: descriptors of another basis (" + std::to_string(descriptors.cols()) + " columns, " +
              std::to_string(norm_.three_body.cols()) + " weights)");
  // b_t(s) = features(s) . w_t; intensive targets have zero weight rows.
  Mat<double> out(S, P);
  for (Index s = 0; s < S; ++s)
    for (Index t = 0; t < P; ++t) out(s, t) = descriptors.row(s).dot(norm_.three_body.row(t));
  return out;
}

template <class T>
Mat<double> MoleculeModel<T>::label_offsets(const MoleculeBatch& batch) const {
  return add_composition_offsets(batch, three_body_per_structure(batch));
}

template <class T>
Mat<double> MoleculeModel<T>::label_offsets_from_descriptors(const MoleculeBatch& batch,
                                                             const Mat<double>& descriptors) const {
  require(descriptors.rows() == batch.num_molecules(), "label_offsets_from_descriptors: one descriptor row per structure");
  return add_composition_offsets(batch, three_body_from_descriptors(descriptors));
}

template <class T>
Mat<double> MoleculeModel<T>::add_composition_offsets(const MoleculeBatch& batch, Mat<double> offsets) const {
  const Index S = batch.num_molecules(), P = config_.num_targets();
  require(offsets.rows() == S && offsets.cols() == P, "label offsets: S x P three-body part expected");
  for (Index s = 0; s < S; ++s)
    for (Index t = 0; t < P; ++t) {
      const auto ts = static_cast<std::size_t>(t);
      if (config_.targets[ts].extensive) {
        for (Index i = batch.index.begin(s); i < batch.index.end(s); ++i)
          offsets(s, t) += norm_.reference(t, batch.atomic_numbers[static_cast<std::size_t>(i)]);
        offsets(s, t) += static_cast<double>(batch.index.size(s)) * norm_.mean[ts];
      } else {
        offsets(s, t) = norm_.mean[ts];
      }
    }
  return offsets;
}

template <class T>
Mat<double> MoleculeModel<T>::denormalise(const Mat<double>& offsets, const Mat<double>& z) const {
  const Index P = config_.num_targets();
  require(offsets.cols() == P && z.rows() == offsets.rows() && z.cols() == P,
          "denormalise: offsets and values must both be S x P");
  Mat<double> y(z.rows(), P);
  for (Index s = 0; s < z.rows(); ++s)
    for (Index t = 0; t < P; ++t) y(s, t) = offsets(s, t) + norm_.scale[static_cast<std::size_t>(t)] * z(s, t);
  return y;
}

template <class T>
Mat<double> MoleculeModel<T>::normalise_labels(const Mat<double>& offsets, const Mat<double>& labels) const {
  const Index P = config_.num_targets();
  require(offsets.cols() == P && labels.rows() == offsets.rows() && labels.cols() == P,
          "normalise_labels: offsets and labels must both be S x P");
  // The exact inverse of denormalise (NaN stays NaN: missing labels).
  Mat<double> z(labels.rows(), P);
  for (Index s = 0; s < labels.rows(); ++s)
    for (Index t = 0; t < P; ++t) z(s, t) = (labels(s, t) - offsets(s, t)) / norm_.scale[static_cast<std::size_t>(t)];
  return z;
}

template <class T>
Mat<double> MoleculeModel<T>::denormalise(const MoleculeBatch& batch, const Mat<double>& z) const {
  require(z.rows() == batch.num_molecules() && z.cols() == config_.num_targets(), "denormalise: values must be S x P");
  return denormalise(label_offsets(batch), z);
}

template <class T>
Mat<double> MoleculeModel<T>::normalise_labels(const MoleculeBatch& batch, const Mat<double>& labels) const {
  require(labels.rows() == batch.num_molecules() && labels.cols() == config_.num_targets(),
          "normalise_labels: labels must be S x P");
  return normalise_labels(label_offsets(batch), labels);
}

template <class T>
Mat<double> MoleculeModel<T>::atom_contributions(const MoleculeBatch& batch,
                                                 const ModelCache<T>& cache) const {
  require(cache.y.rows() == batch.num_atoms() && cache.y.cols() == config_.num_targets(),
          "atom_contributions: the cache is not of a forward pass over this batch");
  return atom_contributions(batch, cache.y);
}

template <class T>
Mat<double> MoleculeModel<T>::atom_contributions(const MoleculeBatch& batch,
                                                 ConstMatRef<T> y) const {
  const Index N = batch.num_atoms(), P = config_.num_targets();
  require(y.rows() == N && y.cols() == P,
          "atom_contributions: the per-atom outputs are not of this batch");
  Mat<double> c(N, P);
  for (Index t = 0; t < P; ++t) {
    const auto ts = static_cast<std::size_t>(t);
    if (!config_.targets[ts].extensive) {
      c.col(t).setConstant(std::numeric_limits<double>::quiet_NaN());
      continue;
    }
    const ThreeBodyEnergy three_body = three_body_part(batch, t, false);
    for (Index i = 0; i < N; ++i)
      c(i, t) = norm_.reference(t, batch.atomic_numbers[static_cast<std::size_t>(i)]) + three_body.per_atom(i) +
                norm_.mean[ts] + norm_.scale[ts] * value_of(y(i, t));
  }
  return c;
}

MoleculeBatch reordered(const MoleculeBatch& batch, std::span<const Index> order) {
  const Index N = batch.num_atoms();
  require(static_cast<Index>(order.size()) == N, "reordered: the order has " + std::to_string(order.size()) +
                                                     " rows, the batch " + std::to_string(N));
  std::vector<char> taken(static_cast<std::size_t>(N), 0);
  for (Index s = 0; s < batch.num_molecules(); ++s)
    for (Index i = batch.index.begin(s); i < batch.index.end(s); ++i) {
      const Index from = order[static_cast<std::size_t>(i)];
      require(from >= batch.index.begin(s) && from < batch.index.end(s) && !taken[static_cast<std::size_t>(from)],
              "reordered: row " + std::to_string(i) + " of molecule " + std::to_string(s) + " takes row " +
                  std::to_string(from) + ", outside the molecule or taken before");
      taken[static_cast<std::size_t>(from)] = 1;
    }
  MoleculeBatch out;
  out.index = batch.index;
  out.coords = rows_in_order(batch.coords, order);
  out.atomic_numbers.resize(static_cast<std::size_t>(N));
  out.formal_charges.resize(static_cast<std::size_t>(N));
  for (Index i = 0; i < N; ++i) {
    const auto from = static_cast<std::size_t>(order[static_cast<std::size_t>(i)]);
    out.atomic_numbers[static_cast<std::size_t>(i)] = batch.atomic_numbers[from];
    out.formal_charges[static_cast<std::size_t>(i)] = batch.formal_charges[from];
  }
  return out;
}

Mat<double> rows_in_order(const Mat<double>& rows, std::span<const Index> order) {
  require(static_cast<Index>(order.size()) == rows.rows(), "rows_in_order: the order has " +
                                                               std::to_string(order.size()) + " rows, the matrix " +
                                                               std::to_string(rows.rows()));
  Mat<double> out(rows.rows(), rows.cols());
  for (Index i = 0; i < rows.rows(); ++i) out.row(i) = rows.row(order[static_cast<std::size_t>(i)]);
  return out;
}

namespace {

// Per-atom rows computed in `order` put back in the input's order.
Mat<double> in_input_order(const Mat<double>& rows, const std::vector<Index>& order) {
  Mat<double> out(rows.rows(), rows.cols());
  for (Index i = 0; i < rows.rows(); ++i) out.row(order[static_cast<std::size_t>(i)]) = rows.row(i);
  return out;
}

}  // namespace

template <class T>
std::optional<std::vector<Index>> MoleculeModel<T>::spatial_order(const MoleculeBatch& batch) const {
  if (config_.attention != AttentionKind::near_far) return std::nullopt;
  bool large = false;
  for (Index s = 0; s < batch.num_molecules() && !large; ++s) large = batch.index.size(s) >= spatial_order_atoms;
  if (!large) return std::nullopt;
  std::vector<Index> order = attn::cell_order(batch.index, batch.coords, config_.cutoff, spatial_order_atoms);
  for (std::size_t i = 0; i < order.size(); ++i)
    if (order[i] != static_cast<Index>(i)) return order;
  return std::nullopt;  // already in cell order
}

template <class T>
Mat<double> MoleculeModel<T>::predict(const MoleculeBatch& batch, Mat<double>* contributions) {
  check_batch(batch);  // before reordering: errors name the input's rows
  const auto order = spatial_order(batch);
  if (!order) return predict_in_order(batch, contributions);
  Mat<double> c;
  Mat<double> out = predict_in_order(reordered(batch, *order), contributions != nullptr ? &c : nullptr);
  if (contributions != nullptr) *contributions = in_input_order(c, *order);
  return out;
}

template <class T>
Mat<double> MoleculeModel<T>::predict_in_order(const MoleculeBatch& batch, Mat<double>* contributions) {
  Mat<T> per_atom;
  const Mat<Accum<T>> sums = infer_accumulated(batch, &per_atom);
  if (contributions != nullptr) *contributions = atom_contributions(batch, per_atom);
  return denormalise(batch, values_of<Accum<T>>(sums));
}

template <class T>
bool MoleculeModel<T>::recomputes_blocks_for(const MoleculeBatch& batch) const noexcept {
  return !is_dual_v<T> && config_.attention == AttentionKind::near_far && config_.blocks > 1 &&
         batch.num_atoms() > recompute_atoms;
}

template <class T>
Mat<double> MoleculeModel<T>::predict_with_forces(const MoleculeBatch& batch, Index target,
                                                  Mat<double>& forces, Mat<double>* contributions) {
  check_batch(batch);  // before reordering: errors name the input's rows
  const auto order = spatial_order(batch);
  if (!order) return predict_with_forces_in_order(batch, target, forces, contributions);
  Mat<double> f, c;
  Mat<double> out =
      predict_with_forces_in_order(reordered(batch, *order), target, f, contributions != nullptr ? &c : nullptr);
  forces = in_input_order(f, *order);
  if (contributions != nullptr) *contributions = in_input_order(c, *order);
  return out;
}

template <class T>
Mat<double> MoleculeModel<T>::predict_with_forces_in_order(const MoleculeBatch& batch, Index target,
                                                           Mat<double>& forces, Mat<double>* contributions) {
  const Index S = batch.num_molecules(), P = config_.num_targets();
  require(target >= 0 && target < P, "predict_with_forces: target index out of range");
  const TargetSpec& spec = config_.targets[static_cast<std::size_t>(target)];
  require(spec.extensive, "forces need an extensive (energy) target; '" + spec.name +
                              "' is a per-molecule mean");
  ModelCache<T> cache;
  cache.recompute_blocks = recomputes_blocks_for(batch);
  cache.keep_far_pair_terms = false;  // the backward takes coordinate gradients
  forward(batch, cache);
  Mat<T> dout = Mat<T>::Zero(S, P);
  dout.col(target).setOnes();
  store_.zero_grad();
  Mat<T> dcoords;
  backward(batch, cache, dout, &dcoords);
  forces = values_of<T>(dcoords) * -norm_.scale[static_cast<std::size_t>(target)] -
           reference_gradient(batch, target);
  if (contributions != nullptr) *contributions = atom_contributions(batch, cache);
  return denormalise(batch, values_of<Accum<T>>(pooled_sums(batch, cache.y)));
}

template <class T>
attn::AttentionStats MoleculeModel<T>::attention_stats() const {
  attn::AttentionStats total;
  total.min_relative_denominator = 1.0;
  for (const auto& blk : blocks_)
    if constexpr (!is_dual_v<T>)
      if (blk.flt) total.merge(blk.flt->stats());
  return total;
}

template <class T>
void MoleculeModel<T>::reset_attention_stats() {
  for (auto& blk : blocks_)
    if constexpr (!is_dual_v<T>)
      if (blk.flt) blk.flt->reset_stats();
}

template <class T>
std::vector<double> MoleculeModel<T>::rpe_function(Index block, Index head,
                                                   std::span<const double> rho) const {
  require(block >= 0 && block < config_.blocks && head >= 0 && head < config_.heads,
          "rpe_function: block or head out of range");
  const Block& blk = blocks_[static_cast<std::size_t>(block)];
  std::vector<double> f(rho.size());
  switch (config_.attention) {
    case AttentionKind::kronecker:
    case AttentionKind::bias: {
      if constexpr (!is_dual_v<T>) {
        const auto p = blk.flt->head_spectrum_params(store_, head);
        Mat<double> zz = Mat<double>::Zero(static_cast<Index>(rho.size()), 3);
        for (std::size_t i = 0; i < rho.size(); ++i) zz(static_cast<Index>(i), 0) = rho[i];
        blk.flt->spectrum().mask(p, zz, f);
        if (config_.attention == AttentionKind::bias) {
          const double beta = value_of(store_.value(blk.flt->beta_param())(head, 0));
          for (double& v : f) v *= beta;
        }
      }
      break;
    }
    case AttentionKind::exact: {
      if constexpr (!is_dual_v<T>) {
        const auto coeffs = store_.value(blk.rbf);
        for (std::size_t i = 0; i < rho.size(); ++i)
          f[i] = exact_config_.basis.evaluate(coeffs.row(head), rho[i]);
      }
      break;
    }
    case AttentionKind::performer:
      throw InvalidArgument("rpe_function: the performer attention has no RPE");
    case AttentionKind::near_far: {
      // The far-field mask f_h(rho) = sum_n a_hn j0(2 pi kappa_n rho) (the FLT mask; inside the
      // cutoff it is weighted by 1 - e(rho) and taken exactly).
      if (config_.far_field == FarField::none)
        throw InvalidArgument("rpe_function: this near_far model has no far field (far_field = none)");
      const auto theta = store_.value(blk.far_theta);
      std::vector<double> basis(static_cast<std::size_t>(config_.far_nodes));
      for (std::size_t i = 0; i < rho.size(); ++i) {
        attn::radial_basis(far_config_.nodes, rho[i], basis.data(), nullptr);
        double v = 0;
        for (Index n = 0; n < config_.far_nodes; ++n)
          v += std::exp(value_of(theta(head, n))) * basis[static_cast<std::size_t>(n)];
        f[i] = v;
      }
      break;
    }
  }
  return f;
}

template <class T>
std::vector<double> MoleculeModel<T>::charge_mask(std::span<const double> rho) const {
  if (config_.charge_energy == ChargeEnergy::none)
    throw InvalidArgument("charge_mask: this model has no charge energy (charge_energy = none)");
  const auto theta = store_.value(charge_theta_);
  std::vector<double> basis(static_cast<std::size_t>(config_.charge_nodes));
  std::vector<double> f(rho.size());
  for (std::size_t i = 0; i < rho.size(); ++i) {
    attn::radial_basis(charge_config_.nodes, rho[i], basis.data(), nullptr);
    double v = 0;
    for (Index n = 0; n < config_.charge_nodes; ++n)
      v += std::exp(value_of(theta(0, n))) * basis[static_cast<std::size_t>(n)];
    f[i] = v;
  }
  return f;
}

// ---------------------------------------------------------------------------------------------
// Serialisation hooks.

namespace {

NamedArray array_of(std::string name, const Mat<double>& m) {
  NamedArray a;
  a.name = std::move(name);
  a.shape = {static_cast<std::size_t>(m.rows()), static_cast<std::size_t>(m.cols())};
  a.values.assign(m.data(), m.data() + m.size());  // row-major
  return a;
}

NamedArray array_of(std::string name, std::vector<double> v) {
  NamedArray a;
  a.name = std::move(name);
  a.shape = {v.size()};
  a.values = std::move(v);
  return a;
}

Mat<double> matrix_of(const NamedArray& a) {
  Mat<double> m(static_cast<Index>(a.shape.at(0)), static_cast<Index>(a.shape.at(1)));
  std::copy(a.values.begin(), a.values.end(), m.data());
  return m;
}

}  // namespace

template <class T>
std::vector<NamedArray> MoleculeModel<T>::export_arrays() const {
  std::vector<NamedArray> out;
  for (const auto& info : store_.infos())
    out.push_back(array_of("param." + info.name, values_of<T>(store_.value(info.ref))));
  std::vector<double> el(norm_.elements.begin(), norm_.elements.end());
  out.push_back(array_of("norm.elements", el));
  out.push_back(array_of("norm.mean", norm_.mean));
  out.push_back(array_of("norm.scale", norm_.scale));
  out.push_back(array_of("norm.reference", norm_.reference));
  if (config_.three_body) out.push_back(array_of("norm.three_body", norm_.three_body));
  out.push_back(array_of("features.draw", std::vector<double>{static_cast<double>(draw_)}));
  for (Index b = 0; b < config_.blocks; ++b) {
    const Block& blk = blocks_[static_cast<std::size_t>(b)];
    const std::string p = "features.block" + std::to_string(b) + ".h";
    for (Index h = 0; h < config_.heads; ++h) {
      const auto hs = static_cast<std::size_t>(h);
      const std::string ph = p + std::to_string(h);
      if constexpr (is_dual_v<T>) {
        // near_far only (the constructor refuses the others): no per-head features.
      } else if (blk.flt) {
        const auto& f = blk.flt->features();
        out.push_back(array_of(ph + ".omega", f.omega[hs]));
        out.push_back(array_of(ph + ".xi", f.xi[hs]));
        out.push_back(array_of(ph + ".pdf", std::vector<double>(f.pdf[hs].data(), f.pdf[hs].data() + f.pdf[hs].size())));
      } else if (config_.attention == AttentionKind::performer) {
        out.push_back(array_of(ph + ".omega", blk.performer.omega[hs]));
      }
    }
    if (config_.attention == AttentionKind::near_far && config_.far_field == FarField::flt) {
      const std::string pb = "features.block" + std::to_string(b);
      out.push_back(array_of(pb + ".far_directions", blk.far_design.directions));
      out.push_back(array_of(pb + ".far_weights", blk.far_design.weights));
    }
  }
  return out;
}

template <class T>
void MoleculeModel<T>::import_arrays(const std::vector<NamedArray>& arrays) {
  // The expected names and shapes are those this configuration exports (norm.elements may have
  // any length >= 1).
  std::map<std::string, const NamedArray*> given;
  for (const auto& a : arrays) {
    std::size_t n = 1;
    for (auto s : a.shape) n *= s;
    if (n != a.values.size())
      throw InvalidArgument("model arrays: '" + a.name + "' has " + std::to_string(a.values.size()) +
                            " values for its shape");
    for (double v : a.values)
      if (!std::isfinite(v)) throw InvalidArgument("model arrays: '" + a.name + "' holds a non-finite value");
    if (!given.emplace(a.name, &a).second)
      throw InvalidArgument("model arrays: duplicate array '" + a.name + "'");
  }
  const auto expected = export_arrays();
  for (const auto& e : expected) {
    auto it = given.find(e.name);
    if (it == given.end()) throw InvalidArgument("model arrays: missing array '" + e.name + "'");
    if (e.name == "norm.elements") {
      if (it->second->shape.size() != 1 || it->second->shape[0] == 0)
        throw InvalidArgument("model arrays: 'norm.elements' must be a non-empty vector");
    } else if (e.name == "norm.three_body") {
      // Its width follows norm.elements: set_normalisation checks it.
      if (it->second->shape.size() != 2 || it->second->shape[0] != static_cast<std::size_t>(config_.num_targets()))
        throw InvalidArgument("model arrays: 'norm.three_body' must be a matrix with one row per target");
    } else if (it->second->shape != e.shape) {
      auto str = [](const std::vector<std::size_t>& s) {
        std::string r = "[";
        for (std::size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
        return r + "]";
      };
      throw InvalidArgument("model arrays: '" + e.name + "' has shape " + str(it->second->shape) +
                            ", the configuration needs " + str(e.shape));
    }
  }
  if (given.size() != expected.size()) {
    std::set<std::string> names;
    for (const auto& e : expected) names.insert(e.name);
    for (const auto& [name, a] : given)
      if (!names.contains(name)) throw InvalidArgument("model arrays: unexpected array '" + name + "'");
  }
  // Normalisation first (validated), then parameters and features.
  Normalisation n;
  for (double v : given["norm.elements"]->values) {
    if (v != std::floor(v)) throw InvalidArgument("model arrays: 'norm.elements' must hold integers");
    n.elements.push_back(static_cast<std::int32_t>(v));
  }
  n.mean = given["norm.mean"]->values;
  n.scale = given["norm.scale"]->values;
  n.reference = matrix_of(*given["norm.reference"]);
  if (config_.three_body) n.three_body = matrix_of(*given["norm.three_body"]);
  set_normalisation(std::move(n));
  for (const auto& info : store_.infos()) {
    const auto& a = *given["param." + info.name];
    auto v = store_.value(info.ref);
    for (Index r = 0; r < info.ref.rows; ++r)
      for (Index c = 0; c < info.ref.cols; ++c)
        v(r, c) = static_cast<T>(a.values[static_cast<std::size_t>(r * info.ref.cols + c)]);
  }
  const double draw = given["features.draw"]->values[0];
  if (draw < 0 || draw != std::floor(draw)) throw InvalidArgument("model arrays: bad 'features.draw'");
  draw_ = static_cast<std::uint64_t>(draw);
  for (Index b = 0; b < config_.blocks; ++b) {
    Block& blk = blocks_[static_cast<std::size_t>(b)];
    const std::string p = "features.block" + std::to_string(b) + ".h";
    if constexpr (is_dual_v<T>) {
      // near_far only (the constructor refuses the others): the far-field design below.
    } else if (blk.flt) {
      attn::RandomFeatures f;
      f.seed = blk.flt->config().seed;
      f.draw = draw_;
      for (Index h = 0; h < config_.heads; ++h) {
        const std::string ph = p + std::to_string(h);
        f.omega.push_back(matrix_of(*given[ph + ".omega"]));
        f.xi.push_back(matrix_of(*given[ph + ".xi"]));
        const auto& pdf = given[ph + ".pdf"]->values;
        f.pdf.push_back(Eigen::Map<const Vec<double>>(pdf.data(), static_cast<Index>(pdf.size())));
      }
      blk.flt->set_features(std::move(f));
    } else if (config_.attention == AttentionKind::performer) {
      std::vector<Mat<double>> omega;
      for (Index h = 0; h < config_.heads; ++h) omega.push_back(matrix_of(*given[p + std::to_string(h) + ".omega"]));
      blk.performer.set(std::move(omega));
    } else if (config_.attention == AttentionKind::near_far && config_.far_field == FarField::flt) {
      // The design of the draw the model was saved at (directions, weights), as stored.
      const std::string pb = "features.block" + std::to_string(b);
      attn::SphericalDesign design = blk.far_design;
      design.directions = matrix_of(*given[pb + ".far_directions"]);
      design.weights = given[pb + ".far_weights"]->values;
      double total = 0;
      for (Index m = 0; m < design.size(); ++m) {
        const double len = design.directions.row(m).norm();
        if (std::abs(len - 1.0) > 1e-9)
          throw InvalidArgument("model arrays: '" + pb + ".far_directions' holds a non-unit direction");
        total += design.weights[static_cast<std::size_t>(m)];
      }
      if (std::abs(total - 1.0) > 1e-9)
        throw InvalidArgument("model arrays: '" + pb + ".far_weights' do not sum to 1");
      blk.far_design = std::move(design);
    }
  }
}

template <class To, class From>
void copy_model_state(const MoleculeModel<From>& from, MoleculeModel<To>& to) {
  require(config_to_strings(from.config()) == config_to_strings(to.config()),
          "copy_model_state: the two models have different configurations");
  if constexpr (is_dual_v<To>) {
    // A Dual model (near_far only) is refreshed at every step of training on forces: its whole
    // state is the parameters, the normalisation, the draw and the far-field designs, copied
    // directly (the parameter layout follows the configuration).
    const auto source = from.store_.values();
    const auto target = to.store_.values();
    require(source.size() == target.size(), "copy_model_state: the two models have another parameter layout");
    for (std::size_t k = 0; k < source.size(); ++k) target[k] = Dual(static_cast<double>(source[k]));
    to.set_normalisation(from.norm_);
    to.draw_ = from.draw_;
    for (std::size_t b = 0; b < to.blocks_.size(); ++b) to.blocks_[b].far_design = from.blocks_[b].far_design;
  } else {
    to.import_arrays(from.export_arrays());
  }
}

// ---------------------------------------------------------------------------------------------

Eigen::Matrix3d random_rotation(Rng& rng) {
  // A normalised vector of four independent normals is a uniformly random unit quaternion, and
  // its rotation matrix is uniformly distributed on SO(3) (Haar measure).
  // (Sequenced draws: the evaluation order of constructor arguments is unspecified.)
  const double w = rng.normal(), x = rng.normal(), y = rng.normal(), z = rng.normal();
  Eigen::Quaterniond q(w, x, y, z);
  q.normalize();
  return q.toRotationMatrix();
}

template <class T>
std::vector<double> rotation_sensitivity(MoleculeModel<T>& model, const Molecule& molecule,
                                         int n_rotations, std::uint64_t seed) {
  require(n_rotations >= 2, "rotation_sensitivity: need at least 2 rotations");
  require(!molecule.atomic_numbers.empty(), "rotation_sensitivity: empty molecule");
  Eigen::Vector3d centre = Eigen::Vector3d::Zero();
  for (const auto& p : molecule.positions) centre += Eigen::Vector3d(p[0], p[1], p[2]);
  centre /= static_cast<double>(molecule.positions.size());
  Rng rng(seed);
  std::vector<Molecule> copies(static_cast<std::size_t>(n_rotations), molecule);
  for (auto& c : copies) {
    const Eigen::Matrix3d R = random_rotation(rng);
    for (auto& p : c.positions) {
      const Eigen::Vector3d r = R * (Eigen::Vector3d(p[0], p[1], p[2]) - centre) + centre;
      p = {r(0), r(1), r(2)};
    }
  }
  const Mat<double> y = model.predict(MoleculeBatch::from(std::span<const Molecule>(copies)));
  std::vector<double> sd(static_cast<std::size_t>(y.cols()));
  for (Index t = 0; t < y.cols(); ++t) {
    const double mean = y.col(t).mean();
    sd[static_cast<std::size_t>(t)] = std::sqrt((y.col(t).array() - mean).square().mean());
  }
  return sd;
}

template class MoleculeModel<float>;
template class MoleculeModel<double>;
template class MoleculeModel<Dual>;
template void copy_model_state<Dual, float>(const MoleculeModel<float>&, MoleculeModel<Dual>&);
template void copy_model_state<Dual, double>(const MoleculeModel<double>&, MoleculeModel<Dual>&);
template void copy_model_state<float, double>(const MoleculeModel<double>&, MoleculeModel<float>&);
template void copy_model_state<double, float>(const MoleculeModel<float>&, MoleculeModel<double>&);
template void copy_model_state<float, float>(const MoleculeModel<float>&, MoleculeModel<float>&);
template void copy_model_state<double, double>(const MoleculeModel<double>&, MoleculeModel<double>&);
template std::vector<double> rotation_sensitivity<float>(MoleculeModel<float>&, const Molecule&, int,
                                                         std::uint64_t);
template std::vector<double> rotation_sensitivity<double>(MoleculeModel<double>&, const Molecule&, int,
                                                          std::uint64_t);

}  // namespace flt::models
