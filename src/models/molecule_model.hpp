// The FLT molecule model: per-atom embeddings, pre-norm encoder blocks (encoder_block.hpp) whose
// attention is one of the AttentionKinds, and a per-atom output head pooled per molecule; with
// its configuration, batches and normalisation.
//
// Shapes: S molecules, N atoms in all (RaggedIndex over molecules), D width, H heads, d = D / H,
// F block-MLP width, G head width, P targets; coordinates in Angstrom.
//   x0    = E_Z[z_n] (+ E_q[q_n + max_charge] when use_charges)                        N x D
//   block b: x += Attn_b(LN1_b(x)) Wo_b + bo_b;  x += MLP_b(LN2_b(x))  (pre-norm; with vectors
//            the equivariant update, equivariant_update.hpp, replaces LN2 + MLP)       N x D
//   head:  y_n = MLP_head(LN_out(x_n));  out_s = sum_{n in s} y_n (extensive) or mean  S x P
//   physical: y_st = sum_{n in s} e_t[Z_n] + b_t(s) + |s| m_t + sigma_t out_st (extensive targets;
//             b_t the optional three-body reference, three_body.hpp, zero without it),
//             y_st = m_t + sigma_t out_st (intensive); normalise_labels inverts it
// Kinds: near_far (exact near field, FLT far field), kronecker (FLT variant A, E9/E10), bias
// (variant B, E12/E13), performer (FAVOR+, E2, no RPE), exact (softmax, radial logit bias).
// The rest: docs/molecule-model.md ("Architecture" and the sections after it).
#pragma once

#include "core/dual.hpp"
#include "core/error.hpp"
#include "core/layers.hpp"
#include "core/params.hpp"
#include "core/ragged.hpp"
#include "core/tensor.hpp"
#include "attention/attention.hpp"
#include "attention/exact/streaming.hpp"
#include "attention/far_field.hpp"
#include "attention/kernel_attention.hpp"
#include "attention/near_field.hpp"
#include "attention/neighbours.hpp"
#include "models/config_values.hpp"
#include "models/encoder_block.hpp"
#include "models/equivariant_update.hpp"
#include "models/fragments.hpp"
#include "models/three_body.hpp"

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flt::models {

// Largest atomic number the element embedding covers by default (Rn).
inline constexpr int kDefaultMaxZ = 86;

enum class AttentionKind { kronecker, bias, performer, exact, near_far };
const char* to_string(AttentionKind kind) noexcept;
AttentionKind attention_kind_from_string(const std::string& name);  // throws ConfigError

// The far field of the near_far kind: FLT features (linear cost), the closed-form mask over all
// pairs (quadratic; the reference and an ablation), or none (near field only).
enum class FarField { flt, exact, none };
const char* to_string(FarField far) noexcept;
FarField far_field_from_string(const std::string& name);  // throws ConfigError

// The charge energy of the near_far kind (docs/molecule-model.md): per-atom charges from the
// final features, made neutral per structure, and the energy
//   E_q = 1/2 sum_i q_i sum_{j != i} w(rho_ij) f(rho_ij) q_j,  f(rho) = sum_n c_n j0(2 pi kappa_n rho)
// added to the (single, extensive) target: through the FLT far-field machinery (flt, linear cost),
// over all pairs in closed form (exact, quadratic), or none (the default; models before it).
enum class ChargeEnergy { none, flt, exact };
const char* to_string(ChargeEnergy charge) noexcept;
ChargeEnergy charge_energy_from_string(const std::string& name);  // throws ConfigError

// Where the learned charge correction sums to zero: over each structure, or over each covalently
// bonded fragment (models/fragments.hpp), so every molecule of a cluster keeps its net formal
// charge and charge cannot flow between molecules.
enum class ChargeNeutral { structure, fragment };
const char* to_string(ChargeNeutral neutral) noexcept;
ChargeNeutral charge_neutral_from_string(const std::string& name);  // throws ConfigError

// One predicted quantity. extensive: summed over atoms (energies, ZPVE, Cv, alpha, ...) and
// eligible for per-element reference energies; intensive: averaged (HOMO, LUMO, gap, mu, ...).
struct TargetSpec {
  std::string name;     // e.g. "U0"
  std::string unit;     // e.g. "eV" (informational; the model never converts)
  bool extensive = true;
};

// Why `name` cannot name a target, e.g. "holds a blank" ("" when it can): model files, option
// lists, CSV headers and extended-XYZ keys separate names with blanks, ',' and '='.
std::string target_name_problem(std::string_view name);

// Every hyper-parameter of the architecture. INI keys = the field names (config_to_strings).
struct ModelConfig {
  // Targets (P >= 1).
  std::vector<TargetSpec> targets{{"U0", "eV", true}};
  // Architecture.
  Index width = 128;               // D (divisible by heads)
  Index heads = 8;                 // H; per-head width d = D / H
  Index blocks = 3;                // encoder blocks
  Index mlp_hidden = 256;          // F, hidden width of each block's MLP
  Index head_hidden = 128;         // G, hidden width of the output head
  Activation activation = Activation::silu;
  int max_z = kDefaultMaxZ;        // element embedding rows 0..max_z (row 0 unused)
  bool use_charges = false;        // add a formal-charge embedding
  int max_charge = 2;              // charges in [-max_charge, max_charge]
  // Attention.
  AttentionKind attention = AttentionKind::near_far;
  // near_far: exact near field within the cutoff, FLT far field beyond it (attention/near_field.hpp,
  // attention/far_field.hpp), equivariant vector features (equivariant_update.hpp).
  double cutoff = 5.0;             // r_c, Angstrom
  Index radial_nodes = 16;         // K, Bessel nodes kappa_n = (n + 1) / (2 r_c) of the filters
  bool vectors = true;             // vector features and messages
  FarField far_field = FarField::flt;
  Index far_nodes = 4;             // mask nodes kappa_n = n far_spacing, n = 0..far_nodes-1
  double far_spacing = 0.025;      // cycles per Angstrom
  attn::DesignKind far_design = attn::DesignKind::product_grid;
  Index far_degree = 12;           // product grid: exact for spherical polynomials to this degree
  Index far_directions = 64;       // iid design: directions
  double far_init = 1e-3;          // initial mask coefficients a_hn
  // near_far, one extensive target: the charge energy E_q (ChargeEnergy above). With equal
  // coefficients c_n = c (n >= 1) and c_0 = c/2 the mask is c / (4 charge_spacing rho) for
  // rho < 1 / charge_spacing up to the truncation at charge_nodes (a smoothed 1/rho): the
  // initial shape. The features' design is the product grid of charge_degree, fixed.
  ChargeEnergy charge_energy = ChargeEnergy::none;
  Index charge_nodes = 8;          // kappa_n = n charge_spacing, n = 0..charge_nodes-1
  double charge_spacing = 0.01;    // cycles per Angstrom: 1/rho shape up to 100 A
  Index charge_degree = 32;        // exact spherical polynomials up to this degree: the estimate
                                   // holds to ~5e-4 of the mask for 2 pi kappa_max rho < ~27,
                                   // structures up to ~60 A across at the default nodes
  double charge_init = 0.01;       // initial c_n (c_0 = c/2)
  // Charges q_i = formal charge + the learned correction made neutral per structure (so a
  // structure keeps its net formal charge); the correction starts at zero.
  bool charge_formal = false;
  // The mask starts as Coulomb's law, f = k_e / (sigma rho) in the target's energy unit (sigma the
  // target scale), set by start_charge_mask_at_coulomb once the normalisation is fitted.
  bool charge_coulomb = false;
  // The correction is neutral per structure or per fragment; fragments join atoms closer than
  // charge_bond_scale times the sum of their covalent radii.
  ChargeNeutral charge_neutral = ChargeNeutral::structure;
  double charge_bond_scale = 1.2;
  // FLT kinds (kronecker, bias) and performer.
  Index num_features = 16;         // m, Performer features per head (kronecker, bias, performer)
  Index num_frequencies = 16;      // R, RPE frequencies per head (kronecker, bias)
  attn::SpectrumKind spectrum = attn::SpectrumKind::radial_gaussian;
  Index spectrum_components = 4;   // T of the spectrum per head
  attn::ProposalKind proposal = attn::ProposalKind::spectrum;  // where frequencies are drawn
  double proposal_scale = 0.4;     // s0 of the gaussian proposal, cycles per Angstrom (see docs)
  double init_sigma_min = 0.15;    // spectrum init ladder (cycles per Angstrom)
  double init_sigma_max = 0.6;
  double init_beta = 1.0;          // bias variant: initial RPE scale per head
  double kronecker_floor = 0.1;    // kronecker: denominators below this share of their bound are raised to it
  // Redraw random features (FLT kinds, performer) or rotate the far-field design (near_far) at
  // every training step (begin_step); inference keeps the features of the model file.
  bool redraw_features = true;
  Index exact_rbf = 32;            // exact kind: radial basis functions K
  double exact_cutoff = 10.0;      // exact kind: basis centres evenly on [0, cutoff] Angstrom
  // A linear three-body reference energy (models/three_body.hpp) for the extensive targets,
  // fitted by ridge regression in fit_normalisation; the network learns what it leaves.
  bool three_body = false;
  double three_body_cutoff = 5.0;  // Angstrom
  Index three_body_radial = 6;     // radial functions P
  Index three_body_lmax = 4;       // Legendre degree L
  // Randomness: initial weights and every random feature derive from this seed.
  std::uint64_t seed = 0;

  Index head_dim() const noexcept { return heads > 0 ? width / heads : 0; }
  Index num_targets() const noexcept { return static_cast<Index>(targets.size()); }
  void validate() const;  // throws ConfigError naming the key
};

// Key/value strings (INI-ready, stable order) and back. config_from_strings starts from the
// defaults, overrides each given key and validates; an unknown key or a malformed value throws
// ConfigError naming it; keys may use '-' for '_' (mlp-hidden = mlp_hidden). Lists are comma separated: targets = U0,gap; target_units = eV,eV;
// target_pooling = sum,mean (sum: extensive, mean: intensive).
std::vector<std::pair<std::string, std::string>> config_to_strings(const ModelConfig& config);
ModelConfig config_from_strings(const std::map<std::string, std::string>& values);

// The keys that change nothing for `config`, so that a front end can refuse them rather than
// accept them silently: per attention kind the other kinds' keys (near_far: cutoff, radial_nodes,
// vectors, far_*, charge_*; kronecker and bias: the random features and their RPE spectrum, with
// init_beta of bias only, kronecker_floor of kronecker only; performer: num_features; exact:
// exact_rbf, exact_cutoff), redraw_features where nothing is random (exact; near_far without the
// FLT far field), and keys of a setting that is off: far_* with far_field = none, the design's
// far_design / far_degree / far_directions with far_field = exact, far_degree with the iid design,
// far_directions with the product grid; charge_* without a charge_energy, charge_degree with
// charge_energy = exact, charge_init with charge_coulomb (the mask starts at Coulomb's law),
// charge_bond_scale unless charge_neutral = fragment; proposal_scale unless proposal = gaussian;
// three_body_* without three_body; max_charge without use_charges.
std::vector<KeyWithoutEffect> config_keys_without_effect(const ModelConfig& config);

// ---------------------------------------------------------------------------------------------
// Input.

// One molecule as plain arrays. positions in Angstrom; formal_charges empty means all zero.
struct Molecule {
  std::vector<std::int32_t> atomic_numbers;
  std::vector<std::array<double, 3>> positions;
  std::vector<std::int32_t> formal_charges;
};

// A ragged batch: atoms of all molecules stacked, molecule s owning rows index.begin(s)..end(s).
struct MoleculeBatch {
  RaggedIndex index;
  std::vector<std::int32_t> atomic_numbers;  // N
  Mat<double> coords;                        // N x 3, Angstrom
  std::vector<std::int32_t> formal_charges;  // N (zeros when the input had none)

  Index num_molecules() const noexcept { return index.num_sets(); }
  Index num_atoms() const noexcept { return index.total_rows(); }
  // Builds a batch; throws InvalidArgument for an empty molecule, mismatched array lengths or a
  // non-finite coordinate (naming the molecule's position in `molecules`). A single atom is a
  // valid molecule (it attends to itself only).
  static MoleculeBatch from(std::span<const Molecule> molecules);
  static MoleculeBatch from(std::span<const Molecule* const> molecules);
};

// The batch with its atoms renumbered within their molecules: row i of the result is row
// order[i] of batch (order: a permutation of the N rows that keeps every row in its molecule).
MoleculeBatch reordered(const MoleculeBatch& batch, std::span<const Index> order);
// Per-atom rows (coordinates, force labels) in that order: row i of the result is row order[i].
Mat<double> rows_in_order(const Mat<double>& rows, std::span<const Index> order);

// ---------------------------------------------------------------------------------------------
// Normalisation and reference energies.

struct Normalisation {
  std::vector<std::int32_t> elements;  // sorted atomic numbers the model accepts
  std::vector<double> mean;            // P: m_t (per atom for extensive targets)
  std::vector<double> scale;           // P: sigma_t > 0
  Mat<double> reference;               // P x (max_z + 1): e_t[Z] (zero rows for intensive targets)
  // With config.three_body: P x F weights of the three-body reference over `elements` (zero rows
  // for intensive targets); empty otherwise. Its energy b_t(s) is part of the reference:
  //   y_st = sum_{n in s} e_t[Z_n] + b_t(s) + |s| m_t + sigma_t out_st.
  Mat<double> three_body;
};

// The three-body basis of a configuration over an element set.
ThreeBodyBasis three_body_basis(const ModelConfig& config, const std::vector<std::int32_t>& elements);

// Least-squares per-element reference values: minimises sum_m (sum_e counts(m,e) r_e - y_m)^2.
// counts: M x E atom counts, labels: M. A rank-deficient problem (e.g. conformations of one
// molecule, whose counts are all the same row) gets the minimum-norm solution (complete orthogonal
// decomposition in double, singular directions below 1e-10 of the largest dropped); `rank`, when
// given, receives the numerical rank (E when every element's value is determined).
Vec<double> fit_reference_energies(const Mat<double>& counts, const Vec<double>& labels, Index* rank = nullptr);

// Fits the normalisation on a training set: the element set; for extensive targets reference
// energies by least squares (when fit_reference), or the given `reference` (P x (max_z+1)); with
// config.three_body the three-body weights by ridge regression on what the reference energies
// leave (fit_ridge_loo; the batch needs its coordinates unless `three_body_descriptors` gives the
// structures' descriptors, S x the feature count of training_three_body_basis(config, train), as
// ranks that each hold some structures' coordinates compute them; targets labelled on the same
// structures share one fit, each the same bits as fitted alone; `log`, if given, receives one
// line per target with the chosen lambda and the leave-one-out error, and sigma_t below is then the
// reference's leave-one-out RMSE: the spread of what it leaves on unseen structures); then
// m_t = mean over molecules of (y - sum e[Z]) / |s| and sigma_t = std of (y - sum e[Z] - |s| m_t);
// for intensive targets m_t, sigma_t = mean and std of y. labels: S x P, NaN = missing (skipped).
// sigma_t below 1e-12 (constant target) becomes 1.
//
// With `forces` (training on forces, weight w > 0) the three-body reference of the forces' target
// is fitted to its energies and forces together (fit_ridge_loo_with_forces), each force component
// weighted as the training loss weighs it against one structure's energy: L = L_E + w/(3 N_f)
// sum |r|^2 with L_E a mean over the S labelled structures and the P targets, so c = w P S /
// (3 N_f) (force_training.hpp; both terms in units of sigma_t, which therefore drops out). Without
// force labels on its structures the fit is the energies-only one.
struct ReferenceForces {
  const MoleculeBatch* batch = nullptr;  // `train` with its coordinates (same structures and order)
  const Mat<double>* forces = nullptr;   // N x 3, the target's unit per Angstrom; NaN rows: none
  Index target = 0;                      // the extensive target the forces belong to
  double weight = 0.0;                   // the training loss's force weight w
};
Normalisation fit_normalisation(const ModelConfig& config, const MoleculeBatch& train,
                                const Mat<double>& labels, bool fit_reference = true,
                                const std::optional<Mat<double>>& reference = std::nullopt,
                                std::vector<std::string>* log = nullptr,
                                const Mat<double>* three_body_descriptors = nullptr,
                                const ReferenceForces* forces = nullptr);

// The three-body reference's descriptor basis that fit_normalisation uses for this training set:
// its elements are the atomic numbers in `train` (its coordinates are not read).
ThreeBodyBasis training_three_body_basis(const ModelConfig& config, const MoleculeBatch& train);

// ---------------------------------------------------------------------------------------------
// Serialisation hooks: a flat, named, double array with its shape (row-major).
struct NamedArray {
  std::string name;
  std::vector<std::size_t> shape;
  std::vector<double> values;
};

// What forward keeps for backward (opaque to callers; reuse one per batch): the shared block's
// (u: block 0 has one row per atom type, see below) and the attention kinds'.
template <class T>
struct BlockCache : EncoderBlockCache<T> {
  attn::AttentionCache<T> flt;    // kronecker / bias
  exact::StreamingAttentionCache<T> exact;  // exact
  attn::KernelAttentionCache<T> perf;  // performer: output, denominators, features
  // near_far
  attn::NearFieldCache<T> near;
  attn::FarFieldCache<T> far;
  Mat<T> far_coeffs;              // H x K_f mask coefficients a_hn = exp(theta_hn)
  Mat<T> vec_in;                  // N x 3D vector features entering the block
  EquivariantUpdateCache<T> update;
};

// Block 0's input is the embedding, a function of the atom's type (element, and formal charge
// when use_charges) only, so its LN1 and q/k/v projections are computed once per type present in
// the batch and gathered to the atoms (bitwise the same rows as per atom: every kernel computes a
// row independently of the others); in backward, dq/dk/dv are summed per type first. For QM9
// (5 types, ~18 atoms per molecule) this removes 3 of the 13 weight products per atom of a
// forward pass and 6 of the 26 of a backward pass.
struct AtomTypes {
  std::vector<Index> of_atom;                      // N: type of each atom, 0..T-1
  std::vector<std::int32_t> z, charge_ids;         // T: element and charge-embedding row of each type
  std::vector<Index> first_atom;                   // T: an atom of each type (types in order of first appearance)
};

template <class T>
struct ModelCache {
  std::vector<std::int32_t> z, charge_ids;
  AtomTypes types;
  exact::RadialBasisTable<T> radial;  // exact kind: distances and radial basis, shared by the blocks
  attn::NeighbourList neighbours;     // near_far: pairs within the cutoff, shared by the blocks
  Mat<Accum<T>> coords_double;        // near_far: N x 3 coordinates (Angstrom; double, or Dual
                                      // with the coordinate tangents for T = Dual)
  Mat<T> coords;                  // N x 3 in T
  std::vector<BlockCache<T>> blocks;
  // Recomputation (set before forward; near_far, float and double): forward keeps only each
  // block's inputs x (N x D) and vec (N x 3D) and leaves `blocks` empty; backward recomputes one
  // block's cache at a time from them. The same kernels on the same inputs: bitwise the same
  // gradients, for one more forward pass of the blocks, with one block's cache in memory instead of
  // all of them (predict_with_forces on large structures).
  bool recompute_blocks = false;
  // Set before forward (near_far, float and double): the far field keeps its near-pair terms for
  // a backward without coordinate gradients (attn::FarFieldCache::keep_pair_terms; K values per
  // pair and block). A backward that wants coordinate gradients does not read them: the passes
  // that take forces (predict_with_forces, energy_force_gradient) turn it off.
  bool keep_far_pair_terms = true;
  std::vector<Mat<T>> block_x, block_vec;
  // The equivariant updates' caches (near_far with vectors; set before forward): rows > 0: compact
  // (EquivariantUpdate::forward_compact: each block keeps its update's inputs only, 4D values per
  // atom instead of 18D + 2F, and backward recomputes the update `rows` atoms at a time); 0: full;
  // unset: compact with MoleculeModel::update_block_rows for batches of more than recompute_atoms
  // atoms, full otherwise. The same outputs and input gradients (bitwise in float, and in double
  // when rows is a multiple of infer_rows); parameter gradients the same to rounding.
  std::optional<Index> update_rows;
  LayerNormCache<T> ln_out;
  MlpCache<T> head;               // holds the final LN output
  Mat<T> y;                       // N x P per-atom outputs (with the charge energy's share)
  RaggedIndex index;
  // charge_energy: the charge head (its input is the head's LN output), the neutral charges q
  // (N x 1), the potentials phi_i = sum_{j != i} w(rho_ij) f(rho_ij) q_j (N x 1), the mask
  // coefficients c_n (1 x charge_nodes), the far-field sums of the flt path and the groups over
  // which the correction is neutral (structures or fragments).
  MlpCache<T> charge_mlp;
  Mat<T> charges, potential, charge_coeffs;
  Fragments charge_groups;
  attn::FarFieldCache<T> charge_far;
};

// The largest spread of a structure's coordinates along an axis (Angstrom) that prediction
// accepts, far above any molecule or simulation box. Finite coordinates far beyond it (wrong
// units, a blown-up simulation) overflow squared distances in float and give NaN.
inline constexpr double kMaxStructureExtent = 1e6;

template <class T>
class MoleculeModel {
 public:
  // Validates the configuration, registers every parameter, allocates, initialises from
  // config.seed and draws the random features (draw 0). The element set starts as 1..max_z and
  // the normalisation as identity (mean 0, scale 1, no reference energies) until
  // set_normalisation.
  explicit MoleculeModel(ModelConfig config);

  const ModelConfig& config() const noexcept { return config_; }
  ParameterStore<T>& parameters() noexcept { return store_; }
  const ParameterStore<T>& parameters() const noexcept { return store_; }

  const Normalisation& normalisation() const noexcept { return norm_; }
  void set_normalisation(Normalisation norm);  // validates sizes; throws InvalidArgument
  // charge_coulomb: sets the charge mask to c_n = c (n >= 1), c_0 = c / 2 with
  // c = 4 charge_spacing k_e / sigma (k_e = 14.3996 eV A in the target's unit, sigma its scale),
  // so that f(rho) = k_e / (sigma rho) over the mask's range: unit charges at distance rho start
  // with their Coulomb energy. Returns c; throws ConfigError if the target's unit is not an energy.
  double start_charge_mask_at_coulomb();
  bool supports_element(int z) const noexcept;
  // Throws InvalidArgument naming the first molecule (0-based batch position), atom and element
  // the model cannot handle (outside Normalisation::elements, fixed from the training set). The
  // CLI may call it per record to skip bad records.
  void check_batch(const MoleculeBatch& batch) const;
  // The reason a molecule cannot be predicted, or nullopt if it can: no atoms, an element outside
  // the training set, a non-finite coordinate, a charge out of range, or atoms farther apart along
  // an axis than kMaxStructureExtent.
  std::optional<std::string> unsupported_reason(const Molecule& molecule) const;

  // Normalised predictions (S x P). Fills `cache` for backward. Updates attention statistics.
  // T = Dual (core/dual.hpp; near_far attention only): the coordinates get the tangents
  // `coordinate_tangent` (N x 3; none: zero), so forward and backward return the directional
  // derivatives of the outputs and of every gradient along it: a Hessian-vector product
  // d^2 Loss / (dtheta dr) u in the tangents of the parameter gradients (force training).
  Mat<T> forward(const MoleculeBatch& batch, ModelCache<T>& cache,
                 const Mat<double>* coordinate_tangent = nullptr);
  // The same predictions without anything for backward: the inference path of predict. Bitwise
  // the same outputs as forward in float (every kernel is the same call on the same values; the
  // row-local layers run on blocks of rows, and their products sum each row in the same order
  // whatever the row range: gemm.hpp), for any thread count. Memory: the activations of one
  // block at a time, reused block to block (x, q, k, v, the attention output and, with vectors,
  // vec and the vector messages: 10 D values per atom with vectors, 5 D without), the neighbour
  // list built once and shared by the blocks, and the row-local layers (LayerNorms, projections,
  // MLPs, the equivariant update) streamed over blocks of infer_rows atoms, one OpenMP team over
  // the blocks; nothing of size
  // N x N or pairs x D. per_atom, if given, receives the per-atom outputs y (N x P) for
  // atom_contributions. A structure of at least progress_atoms atoms logs (info) the neighbour
  // list and each block as it finishes, with its time.
  Mat<T> infer(const MoleculeBatch& batch, Mat<T>* per_atom = nullptr);
  // infer's outputs with the pooled sums kept at Accum<T> (double for a float model), as predict
  // denormalises them and training's evaluations score them: a float output rounds the sum over
  // a structure's atoms to float (an extensive target of 1e5 atoms, ~1e5 in normalised units, to
  // ~1e-2 of a unit), which quantises large structures' energies.
  Mat<Accum<T>> infer_accumulated(const MoleculeBatch& batch, Mat<T>* per_atom = nullptr);
  // A multiple of the kernels' row chunks (96 and 256 rows), so that in double too (Eigen's
  // products) every row sees the same chunk as in forward; the blocks are shared out among the
  // threads.
  static constexpr Index infer_rows = 768;
  static constexpr Index progress_atoms = 10000;
  // near_far: a structure whose atoms have more neighbours within the cutoff than
  // max_atom_density atoms per A^3 give (3x diamond's 0.18; liquid water 0.1) is logged (a
  // warning, once per model): coordinates in nm rather than Angstrom pass the minimum-distance
  // check when no bond is shorter than 1 A, and cost ~1000x the pairs.
  static constexpr double max_atom_density = 0.5;
  // Accumulates parameter gradients into parameters().grads() from dout = dLoss/dout (S x P);
  // if dcoords is non-null it is resized to N x 3 and receives dLoss/dcoords (Angstrom^-1 units of
  // the loss) -- with dout = 1 for an energy target this is dE/dr, i.e. minus the forces.
  void backward(const MoleculeBatch& batch, const ModelCache<T>& cache, ConstMatRef<T> dout,
                Mat<T>* dcoords = nullptr);

  // Physical-unit predictions (S x P) with the normalisation applied. With `contributions`, also
  // each atom's share of each extensive target (N x P, see atom_contributions).
  // With near_far attention, predict and predict_with_forces run each structure of at least
  // spatial_order_atoms atoms in cell order (attn::cell_order, cells of the cutoff), whatever the
  // order it comes in, and return per-atom outputs (contributions, forces) in the input's order:
  // in an order without locality (shuffled atoms) the near field's backward costs several times
  // the time and memory. The result is the model's function of the input, to rounding (a sum in
  // another order); forward, backward and infer run in the batch's own order.
  Mat<double> predict(const MoleculeBatch& batch, Mat<double>* contributions = nullptr);
  static constexpr Index spatial_order_atoms = 512;
  // The order predict runs the batch's atoms in (order[new_row] = old_row: reordered(batch,
  // order)), or nothing when that is the batch's own order. A trainer builds its batches in this
  // order too (pipeline::make_model_batch): per structure, it depends only on that structure.
  std::optional<std::vector<Index>> spatial_order(const MoleculeBatch& batch) const;
  // The same predictions, and the forces of the extensive target `target` (an energy):
  // F_i = -dE/dr_i (N x 3, in the target's unit per Angstrom), by one forward and one backward
  // pass with dE/dout = 1 (E = reference + n mean + scale out, so dE/dr = scale dout/dr). The
  // parameter gradients are overwritten (not for use inside a training step). InvalidArgument
  // for an intensive target (a per-atom mean is not an energy) or an index out of range.
  // A batch of more than recompute_atoms atoms runs with ModelCache::recompute_blocks (a model
  // with more than one near_far block): the same forces in less memory.
  Mat<double> predict_with_forces(const MoleculeBatch& batch, Index target, Mat<double>& forces,
                                  Mat<double>* contributions = nullptr);
  static constexpr Index recompute_atoms = 20000;
  // Rows per recomputed block of a compact equivariant update (ModelCache::update_rows): a
  // multiple of infer_rows; its full cache at width 128 is about 35 MB.
  static constexpr Index update_block_rows = 3072;
  // Whether predict_with_forces recomputes the blocks for this batch (the rule above).
  bool recomputes_blocks_for(const MoleculeBatch& batch) const noexcept;
  // Per-atom contributions (N x P, physical units) of the extensive targets from the per-atom
  // outputs y_nt of a forward pass (cache.y):
  //   c_nt = e_t[Z_n] + m_t + sigma_t y_nt,
  // so sum_{n in s} c_nt is the prediction of molecule s (to double rounding: predict keeps the
  // pooled sum in double). The reference energy of an element goes to the atoms of
  // that element, the per-atom mean m_t to every atom equally. Columns of intensive targets are
  // NaN: a per-molecule mean has no additive per-atom decomposition.
  Mat<double> atom_contributions(const MoleculeBatch& batch, const ModelCache<T>& cache) const;
  // The same from the per-atom outputs of infer (N x P).
  Mat<double> atom_contributions(const MoleculeBatch& batch, ConstMatRef<T> per_atom) const;
  // Maps between physical labels (S x P, NaN kept) and normalised units for this batch.
  Mat<double> normalise_labels(const MoleculeBatch& batch, const Mat<double>& labels) const;
  Mat<double> denormalise(const MoleculeBatch& batch, const Mat<double>& normalised) const;
  // The same maps from precomputed offsets (S x P): label_offsets(batch) is the physical value of
  // a normalised output 0 (reference energies, the three-body reference and n_atoms m_t, or m_t),
  // so y = offset + sigma_t z. A structure's offsets depend only on its atoms and coordinates: a
  // trainer computes them once per structure instead of once per step.
  Mat<double> label_offsets(const MoleculeBatch& batch) const;
  // label_offsets(batch) from the batch's three-body descriptors (S x F, three_body_features of the
  // model's basis, one row per structure in batch order) instead of a descriptor pass: the batch
  // needs atomic numbers only (the training set's offsets from the fit's descriptor matrix).
  Mat<double> label_offsets_from_descriptors(const MoleculeBatch& batch, const Mat<double>& descriptors) const;
  Mat<double> normalise_labels(const Mat<double>& offsets, const Mat<double>& labels) const;
  Mat<double> denormalise(const Mat<double>& offsets, const Mat<double>& normalised) const;
  // The gradient dB/dr (N x 3, target unit per Angstrom) of target t's three-body reference:
  // zero without one. Predicted forces are -(sigma_t dout/dr + dB/dr).
  Mat<double> reference_gradient(const MoleculeBatch& batch, Index t) const;

  // Random features: redraw with draw index `step` when config.redraw_features (call at each
  // optimisation step); features are a pure function of (seed, draw, parameters for the
  // "spectrum" proposal), so a model file may store either the arrays or the seed and draw.
  void begin_step(std::uint64_t step);
  std::uint64_t feature_draw() const noexcept { return draw_; }

  // Attention statistics summed over blocks (FLT kinds; zero for the others).
  attn::AttentionStats attention_stats() const;
  void reset_attention_stats();

  // The learned RPE of block b, head h at distances `rho` (Angstrom): f(rho) of the spectrum for
  // kronecker/bias (times beta for bias), u_h(rho) for exact; throws for performer.
  std::vector<double> rpe_function(Index block, Index head, std::span<const double> rho) const;

  // The charge energy's mask f(rho) = sum_n c_n j0(2 pi kappa_n rho) at distances `rho`
  // (Angstrom; in normalised energy units per charge^2, without the partition w, which is 0 at
  // rho = 0 and 1 from the cutoff on). InvalidArgument when charge_energy = none.
  std::vector<double> charge_mask(std::span<const double> rho) const;

  // Serialisation: every parameter as "param.<name>" (shape rows x cols), the normalisation as
  // "norm.elements" (E), "norm.mean", "norm.scale" (P), "norm.reference" (P x (max_z+1)), and
  // the random features as "features.block<b>.h<h>.omega|xi|pdf". import_arrays checks that exactly
  // these names are present with exactly these shapes (InvalidArgument otherwise) and restores the
  // model bit for bit (float parameters are exactly representable in double).
  std::vector<NamedArray> export_arrays() const;
  void import_arrays(const std::vector<NamedArray>& arrays);

  // Internal layer handles (public for tests and tools that inspect the model).
  // The shared block (encoder_block.hpp; no MLP with vectors) and the attention kinds' state.
  struct Block : EncoderBlock<T> {
    std::unique_ptr<attn::FltAttention<T>> flt;  // kronecker / bias
    ParamRef rbf;                                // exact: H x K coefficients
    PerformerFrequencies<T> performer;           // performer
    // near_far
    ParamRef near_wk, near_bk, near_wv, near_bv, near_sink;  // K x D, D, K x V, V, H
    ParamRef far_theta;                          // H x K_f: a_hn = exp(theta_hn)
    attn::SphericalDesign far_design;            // rotated for the current draw
    EquivariantUpdate<T> update;                 // with vectors (replaces ln2 + mlp)
  };
  const std::vector<Block>& layers() const noexcept { return blocks_; }

 private:
  void init_weights();
  // The charge mask's coefficients: c_n = c (n >= 1), c_0 = c / 2, i.e. f ~ c / (4 charge_spacing rho).
  void set_charge_mask(double c);
  // The groups over which the learned charge correction is neutral (config charge_neutral).
  Fragments charge_groups(const MoleculeBatch& batch) const;
  // The three-body reference of target t: per structure, per atom and optionally dE/dr
  // (physical units); zero when the model has none or t is intensive.
  ThreeBodyEnergy three_body_part(const MoleculeBatch& batch, Index t, bool want_gradient) const;
  // The three-body reference of every target per structure (S x P) from one descriptor pass;
  // zero columns for intensive targets, all zero without a reference.
  Mat<double> three_body_per_structure(const MoleculeBatch& batch) const;
  // The same from the structures' descriptors (S x F): b_t(s) = features(s) . w_t, one dot product
  // per entry (a fixed order, whatever S).
  Mat<double> three_body_from_descriptors(const Mat<double>& descriptors) const;
  // offsets (S x P, the three-body part) plus the composition part of label_offsets.
  Mat<double> add_composition_offsets(const MoleculeBatch& batch, Mat<double> offsets) const;
  // Per-target pooling of the per-atom outputs y (N x P) into S x P (forward and infer): the
  // sums in Accum<T>, and those rounded to T.
  Mat<Accum<T>> pooled_sums(const MoleculeBatch& batch, const Mat<T>& y) const;
  Mat<T> pool(const MoleculeBatch& batch, const Mat<T>& y) const;
  Mat<double> predict_in_order(const MoleculeBatch& batch, Mat<double>* contributions);
  Mat<double> predict_with_forces_in_order(const MoleculeBatch& batch, Index target, Mat<double>& forces,
                                           Mat<double>* contributions);
  // Block b of forward: x and vec (N x 3D with vectors, else empty) go in and come out updated; bc
  // receives what backward needs. Reads cache's shared parts (types, neighbours, coordinates).
  void forward_block(std::size_t b, const MoleculeBatch& batch, const ModelCache<T>& cache, Mat<T>& x,
                     Mat<T>& vec, BlockCache<T>& bc);
  void draw_all_features(std::uint64_t draw);
  // Logs the first structure of the batch denser than max_atom_density (once per model).
  void check_density(const MoleculeBatch& batch, const attn::NeighbourList& neighbours) const;
  attn::SphericalDesign far_design_for_draw(Index block, std::uint64_t draw) const;
  attn::NearFieldWeights<T> near_weights(const Block& blk) const;
  // charge_energy: phi = the masked pair sum of the neutral charges q over each structure (flt or
  // exact path), and y(:, 0) += q o phi / 2.
  void charge_potential(const MoleculeBatch& batch, const attn::NeighbourList& neighbours,
                        ConstMatRef<Accum<T>> coords, ConstMatRef<T> charges, ConstMatRef<T> coeffs,
                        MatRef<T> potential, attn::FarFieldCache<T>& far) const;

  ModelConfig config_;
  ParameterStore<T> store_;
  Embedding<T> embed_z_;
  Embedding<T> embed_charge_;
  std::vector<Block> blocks_;
  LayerNorm<T> ln_out_;
  Mlp<T> head_;
  Mlp<T> charge_mlp_;               // charge_energy: D -> head_hidden -> 1
  ParamRef charge_theta_;           // charge_energy: 1 x charge_nodes, c_n = exp(theta_n)
  attn::FarFieldConfig charge_config_;
  attn::SphericalDesign charge_design_;
  mutable bool charge_range_warned_ = false;  // a structure wider than the design resolves was logged
  mutable bool density_warned_ = false;       // a structure denser than max_atom_density was logged
  exact::StreamingAttentionConfig exact_config_;
  attn::NearFieldConfig near_config_;
  attn::FarFieldConfig far_config_;
  Normalisation norm_;
  std::vector<unsigned char> element_ok_;  // max_z + 1 flags
  std::uint64_t draw_ = 0;

  template <class To, class From>
  friend void copy_model_state(const MoleculeModel<From>& from, MoleculeModel<To>& to);
};

// Copies parameters, normalisation and random features from `from` into `to` (same
// configuration; throws InvalidArgument otherwise), converting the scalar type.
template <class To, class From>
void copy_model_state(const MoleculeModel<From>& from, MoleculeModel<To>& to);

// Rotation sensitivity: the standard deviation (physical units, per target, population std over
// the rotations) of the predictions for `molecule` over n_rotations uniformly random rotations
// about its centroid (Rng(seed)).
template <class T>
std::vector<double> rotation_sensitivity(MoleculeModel<T>& model, const Molecule& molecule,
                                         int n_rotations, std::uint64_t seed);

// A uniformly random 3-D rotation matrix (unit quaternion from four normals).
Eigen::Matrix3d random_rotation(Rng& rng);

}  // namespace flt::models
