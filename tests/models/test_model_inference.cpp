// The inference path of the molecule model (MoleculeModel::infer, used by predict) against the
// training forward (the reference): the same predictions and per-atom outputs, bitwise, for every
// attention kind on molecules, and for a near_far model on one structure of 5,000 atoms (more
// than one block of MoleculeModel::infer_rows rows) at 1 and 2 threads; and its progress lines.
#include "../common/random_molecules.hpp"
#include "core/log.hpp"
#include "core/random.hpp"
#include "models/molecule_model.hpp"

#include <catch2/catch.hpp>
#include <omp.h>

#include <cmath>
#include <mutex>
#include <string>
#include <vector>

using namespace flt;
using namespace flt::models;
using flt::test_support::random_molecules;

namespace {

ModelConfig small_config(AttentionKind kind) {
  ModelConfig c;
  c.targets = {{"E", "eV", true}, {"gap", "eV", false}};
  c.width = 16;
  c.heads = 2;
  c.blocks = 2;
  c.mlp_hidden = 16;
  c.head_hidden = 8;
  c.max_z = 10;
  c.use_charges = true;
  c.max_charge = 1;
  c.attention = kind;
  c.num_features = 8;
  c.num_frequencies = 8;
  c.exact_rbf = 6;
  c.exact_cutoff = 5.0;
  c.cutoff = 2.5;  // shorter than the molecules: both fields matter
  c.radial_nodes = 4;
  c.far_nodes = 3;
  c.far_spacing = 0.05;
  c.far_init = 0.2;
  c.seed = 11;
  return c;
}

// One structure of n atoms uniformly random at 0.1 atoms per A^3 (liquid density).
Molecule random_structure(int n, std::uint64_t seed) {
  Rng rng(seed);
  const int elements[] = {1, 6, 7, 8};
  const double side = std::cbrt(static_cast<double>(n) / 0.1);
  Molecule m;
  for (int i = 0; i < n; ++i) {
    m.atomic_numbers.push_back(elements[rng.below(4)]);
    m.positions.push_back({side * rng.uniform(), side * rng.uniform(), side * rng.uniform()});
    m.formal_charges.push_back(0);
  }
  return m;
}

template <class T>
bool bitwise_equal(const Mat<T>& a, const Mat<T>& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() && (a.array() == b.array()).all();
}

// infer against forward on one batch: predictions and per-atom outputs, bitwise.
template <class T>
void check_infer_matches_forward(const ModelConfig& config, const MoleculeBatch& batch) {
  MoleculeModel<T> model(config);
  ModelCache<T> cache;
  const Mat<T> reference = model.forward(batch, cache);
  Mat<T> per_atom;
  const Mat<T> out = model.infer(batch, &per_atom);
  CHECK(bitwise_equal(out, reference));
  CHECK(bitwise_equal(per_atom, cache.y));
  CHECK(model.infer(batch) == out);  // without per-atom outputs too
}

struct CapturedLog {
  std::mutex mutex;
  std::vector<std::string> lines;
};

}  // namespace

TEST_CASE("molecule model inference: infer equals forward bitwise for every attention kind on molecules",
          "[models][inference]") {
  const auto mols = random_molecules({14, 3, 20, 9, 1, 17, 30}, 42);
  const auto batch = MoleculeBatch::from(std::span<const Molecule>(mols));
  for (AttentionKind kind : {AttentionKind::kronecker, AttentionKind::bias, AttentionKind::performer,
                             AttentionKind::exact, AttentionKind::near_far}) {
    INFO("attention " << to_string(kind));
    const ModelConfig config = small_config(kind);
    check_infer_matches_forward<float>(config, batch);
    check_infer_matches_forward<double>(config, batch);
  }
  for (FarField far : {FarField::flt, FarField::exact, FarField::none})
    for (bool vectors : {true, false}) {
      INFO("near_far, far field " << to_string(far) << ", vectors " << vectors);
      ModelConfig config = small_config(AttentionKind::near_far);
      config.far_field = far;
      config.vectors = vectors;
      check_infer_matches_forward<float>(config, batch);
    }
}

TEST_CASE("molecule model inference: a 5,000-atom structure, bitwise equal to forward at 1 and 2 threads",
          "[models][inference]") {
  // Width 32 with vectors and the FLT far field, cutoff 5 A (about 52 neighbours per atom), one
  // set of 5,000 atoms: several row blocks of infer_rows, the far field's chunked sums, the cell list.
  ModelConfig config = small_config(AttentionKind::near_far);
  config.width = 32;
  config.heads = 4;
  config.cutoff = 5.0;
  config.radial_nodes = 8;
  config.use_charges = false;
  const Molecule structure = random_structure(5000, 3);
  REQUIRE(5000 > MoleculeModel<float>::infer_rows);
  // The structure and two molecules after it: row blocks that cross a set boundary.
  std::vector<Molecule> inputs = random_molecules({12, 7}, 5);
  for (auto& m : inputs) m.formal_charges.clear();
  inputs.insert(inputs.begin(), structure);
  const auto batch = MoleculeBatch::from(std::span<const Molecule>(inputs));
  MoleculeModel<float> model(config);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  ModelCache<float> cache;
  const Mat<float> reference = model.forward(batch, cache);
  Mat<float> per_atom_1, per_atom_2;
  const Mat<float> one_thread = model.infer(batch, &per_atom_1);
  omp_set_num_threads(2);
  const Mat<float> two_threads = model.infer(batch, &per_atom_2);
  omp_set_num_threads(saved);
  CHECK(bitwise_equal(one_thread, reference));
  CHECK(bitwise_equal(two_threads, reference));
  CHECK(bitwise_equal(per_atom_1, cache.y));
  CHECK(bitwise_equal(per_atom_2, cache.y));
  // The prediction is not trivially constant: the far field and the vectors move it.
  ModelConfig near_only = config;
  near_only.far_field = FarField::none;
  MoleculeModel<float> near_model(near_only);
  CHECK((near_model.infer(batch).array() != reference.array()).any());
}

TEST_CASE("molecule model: predict keeps a large structure's pooled sum in double",
          "[models][inference]") {
  // A float model's per-atom outputs summed over 3,000 atoms: rounded to float, the sum (and the
  // energy of a large structure) moves in steps of its float spacing; predict and infer_accumulated
  // keep the double sum, which the atom contributions add up to.
  ModelConfig config = small_config(AttentionKind::near_far);
  config.cutoff = 5.0;
  config.use_charges = false;
  const Molecule structure = random_structure(3000, 7);
  const auto batch = MoleculeBatch::from(std::span<const Molecule>(&structure, 1));
  MoleculeModel<float> model(config);
  Mat<float> per_atom;
  const Mat<double> sums = model.infer_accumulated(batch, &per_atom);
  const Mat<float> rounded = model.infer(batch);
  double expected = 0.0;
  for (Index i = 0; i < per_atom.rows(); ++i) expected += static_cast<double>(per_atom(i, 0));
  CHECK(sums(0, 0) == expected);
  CHECK(static_cast<double>(rounded(0, 0)) == static_cast<double>(static_cast<float>(expected)));
  Mat<double> contributions;
  const Mat<double> predicted = model.predict(batch, &contributions);
  double total = 0.0, magnitude = 0.0;
  for (Index i = 0; i < contributions.rows(); ++i) {
    total += contributions(i, 0);
    magnitude += std::abs(contributions(i, 0));
  }
  INFO("predicted " << predicted(0, 0) << ", contributions " << total << ", float spacing of the sum "
                    << std::nextafter(static_cast<float>(expected), 1e30f) - static_cast<float>(expected));
  CHECK(std::abs(predicted(0, 0) - total) <= 1e-12 * magnitude);
}

TEST_CASE("molecule model inference: a progress line per block for large structures only",
          "[models][inference]") {
  auto captured = std::make_shared<CapturedLog>();
  const LogSink previous = set_log_sink([captured](LogLevel level, std::string_view message) {
    if (level != LogLevel::info) return;
    std::lock_guard<std::mutex> lock(captured->mutex);
    captured->lines.emplace_back(message);
  });
  ModelConfig config = small_config(AttentionKind::near_far);
  config.use_charges = false;
  MoleculeModel<float> model(config);
  const auto small = random_molecules({20, 30}, 8);
  std::vector<Molecule> small_inputs = small;
  for (auto& m : small_inputs) m.formal_charges.clear();
  model.infer(MoleculeBatch::from(std::span<const Molecule>(small_inputs)));
  const std::size_t after_small = captured->lines.size();
  const Molecule large = random_structure(static_cast<int>(MoleculeModel<float>::progress_atoms), 9);
  model.infer(MoleculeBatch::from(std::span<const Molecule>(&large, 1)));
  set_log_sink(previous);
  CHECK(after_small == 0);
  std::vector<std::string> blocks;
  for (const auto& line : captured->lines)
    if (line.find(" atoms: block ") != std::string::npos) blocks.push_back(line);
  REQUIRE(blocks.size() == 2);
  CHECK(blocks[0].find("predicting 10000 atoms: block 1 of 2 in ") == 0);
  CHECK(blocks[1].find("predicting 10000 atoms: block 2 of 2 in ") == 0);
}

TEST_CASE("molecule model: a structure denser than matter is logged once (coordinates in nm?)",
          "[models][inference]") {
  auto captured = std::make_shared<CapturedLog>();
  const LogSink previous = set_log_sink([captured](LogLevel level, std::string_view message) {
    if (level != LogLevel::warning) return;
    std::lock_guard<std::mutex> lock(captured->mutex);
    captured->lines.emplace_back(message);
  });
  ModelConfig config = small_config(AttentionKind::near_far);
  config.use_charges = false;
  config.cutoff = 5.0;  // the default: bound 0.5 x 4/3 pi 5^3 = 262 neighbours per atom
  auto strip = [](std::vector<Molecule> ms) {
    for (auto& m : ms) m.formal_charges.clear();
    return ms;
  };
  // Molecules and a 2,000-atom structure at liquid water's density (0.1 per A^3): no warning.
  MoleculeModel<float> model(config);
  const std::vector<Molecule> molecules = strip(random_molecules({20, 30}, 8));
  model.infer(MoleculeBatch::from(std::span<const Molecule>(molecules)));
  const std::vector<Molecule> liquid = strip({random_structure(2000, 3)});
  model.infer(MoleculeBatch::from(std::span<const Molecule>(liquid)));
  const std::size_t normal = captured->lines.size();
  // 400 atoms of that density with the coordinates divided by 10 (Angstrom read as nm): once.
  std::vector<Molecule> dense = strip({random_structure(400, 4)});
  for (auto& p : dense[0].positions)
    for (double& c : p) c *= 0.1;
  const auto dense_batch = MoleculeBatch::from(std::span<const Molecule>(dense));
  model.infer(dense_batch);
  model.infer(dense_batch);
  const std::size_t after_infer = captured->lines.size();
  // The training forward checks too (a fresh model: the warning is once per model).
  MoleculeModel<float> fresh(config);
  ModelCache<float> cache;
  fresh.forward(dense_batch, cache);
  set_log_sink(previous);
  CHECK(normal == 0);
  REQUIRE(after_infer == 1);
  CHECK_THAT(captured->lines[0], Catch::StartsWith("a structure of 400 atoms has 400 neighbours per atom within 5 A"));
  CHECK_THAT(captured->lines[0], Catch::Contains("are its coordinates in nm rather than Angstrom?"));
  CHECK(captured->lines.size() == 2);
}
