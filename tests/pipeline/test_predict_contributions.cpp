// Per-atom contributions of extensive targets: the predictor (single models and ensembles) and
// `flt predict --per-atom` (extended-XYZ column read back by the XYZ reader, SD tag, the refusals
// for CSV output and intensive targets).
#include "chem/writer.hpp"
#include "test_predict_util.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <sstream>

using namespace flt;
using namespace flt::pipeline;
using namespace flt::pipeline::testing;

namespace {

double property_number(const chem::PointSet& p, const std::string& key) {
  const auto* prop = p.property(key);
  REQUIRE(prop != nullptr);
  return std::stod(prop->value);
}

}  // namespace

TEST_CASE("predictor: per-atom contributions sum to the prediction, ensembles average them", "[predict][contributions]") {
  TempDir dir("contributions");
  const auto a = LoadedModel::load(save_small_model(dir, "a.flt", 3, models::AttentionKind::near_far));
  const auto b = LoadedModel::load(save_small_model(dir, "b.flt", 4, models::AttentionKind::near_far));
  const auto points = read_all(qm9_records(dir, 6));
  std::vector<models::Molecule> molecules;
  for (const auto& p : points) molecules.push_back(to_molecule(p));
  const std::span<const models::Molecule> span(molecules);

  const Predictor single({a}), ensemble({a, b});
  const auto ra = single.predict_batch(span, 1, std::nullopt, true);
  const auto rb = Predictor({b}).predict_batch(span, 1, std::nullopt, true);
  const auto re = ensemble.predict_batch(span, 1, std::nullopt, true);
  for (std::size_t k = 0; k < molecules.size(); ++k) {
    REQUIRE(ra[k].ok());
    const auto& pa = *ra[k].prediction;
    const auto& pe = *re[k].prediction;
    const auto n = static_cast<Index>(molecules[k].atomic_numbers.size());
    REQUIRE(pa.contributions.rows() == n);
    REQUIRE(pa.contributions.cols() == 2);
    // U0 (~ -1e4 eV) to float rounding of the pooled sum; gap (intensive) has none.
    CHECK(pa.contributions.col(0).sum() == Approx(pa.mean[0]).margin(2e-3).epsilon(0));
    CHECK(pa.contributions.col(1).array().isNaN().all());
    CHECK(pa.contributions_stddev.col(0).cwiseAbs().maxCoeff() == 0.0);
    // Ensemble: the members' mean per atom (which sums to the ensemble mean) and their spread.
    const auto& pb = *rb[k].prediction;
    for (Index i = 0; i < n; ++i) {
      CHECK(pe.contributions(i, 0) == Approx(0.5 * (pa.contributions(i, 0) + pb.contributions(i, 0))).margin(1e-9));
      CHECK(pe.contributions_stddev(i, 0) ==
            Approx(0.5 * std::abs(pa.contributions(i, 0) - pb.contributions(i, 0))).margin(1e-9));
    }
    CHECK(pe.contributions.col(0).sum() == Approx(pe.mean[0]).margin(2e-3).epsilon(0));
    CHECK(pe.contributions_stddev.col(0).maxCoeff() > 0);  // two different models disagree
    // Without the request there are none.
    CHECK(single.predict_batch(span.subspan(k, 1))[0].prediction->contributions.size() == 0);
  }
  // Which targets split into atoms.
  CHECK(single.contribution_targets() == std::vector<std::size_t>{0});
  CHECK(single.contribution_targets({"U0"}) == std::vector<std::size_t>{0});
  CHECK_THROWS_WITH(single.contribution_targets({"gap"}), Catch::Contains("'gap' is intensive"));
  CHECK_THROWS_WITH(single.contribution_targets({"H"}), Catch::Contains("no target 'H'"));
  auto gap_only = small_model(5);
  models::ModelConfig config = gap_only.config();
  config.targets = {{"gap", "eV", false}};
  models::MoleculeModel<float> intensive(config);
  models::Normalisation norm = gap_only.normalisation();
  norm.mean = {6.8};
  norm.scale = {1.3};
  norm.reference = Mat<double>::Zero(1, config.max_z + 1);
  intensive.set_normalisation(norm);
  CHECK_THROWS_WITH(Predictor({LoadedModel::from_model(intensive, "gap.flt")}).contribution_targets(),
                    Catch::Contains("no extensive"));
}

TEST_CASE("flt predict --per-atom: extended-XYZ column read back, SD tag, refusals", "[predict][contributions][program]") {
  TempDir dir("per_atom");
  const std::string a = save_small_model(dir, "a.flt", 3, models::AttentionKind::near_far);
  const std::string b = save_small_model(dir, "b.flt", 4, models::AttentionKind::near_far);
  const std::string qm9 = qm9_records(dir, 8);

  // Extended XYZ: one column per extensive target, its unit as a key, read back by our reader.
  const std::string xyz = dir / "out.xyz";
  const auto run = run_flt("predict -q -m " + quoted(a) + " " + quoted(qm9) + " -o " + quoted(xyz) + " --per-atom", dir);
  INFO(run.err);
  REQUIRE(run.status == 0);
  const auto back = read_all(xyz);
  const auto input = read_all(qm9);
  REQUIRE(back.size() == 8);
  const Predictor predictor = Predictor::load({a});
  for (std::size_t k = 0; k < back.size(); ++k) {
    const auto* column = back[k].column("flt_U0_contribution");
    REQUIRE(column != nullptr);
    CHECK(column->width == 1);
    REQUIRE(column->values.size() == back[k].size());
    CHECK(back[k].column("flt_gap_contribution") == nullptr);
    CHECK(back[k].property("flt_U0_contribution_unit")->value == "eV");
    double sum = 0;
    for (double v : column->values) sum += v;
    CHECK(sum == Approx(property_number(back[k], "flt_U0")).margin(2e-3).epsilon(0));
    // The values written are the library's, atom by atom (shortest round-trip formatting).
    const auto direct = predictor.predict_batch(std::span<const models::Molecule>(
                                                    std::vector<models::Molecule>{to_molecule(input[k])}),
                                                0, std::nullopt, true);
    for (std::size_t i = 0; i < column->values.size(); ++i)
      CHECK(column->values[i] == Approx(direct[0].prediction->contributions(static_cast<Index>(i), 0)).margin(1e-4));
  }

  // Predicting the output again replaces the column instead of adding a second one.
  const std::string again = dir / "again.xyz";
  REQUIRE(run_flt("predict -q -m " + quoted(a) + " " + quoted(xyz) + " -o " + quoted(again) + " --per-atom", dir).status == 0);
  const std::string text = slurp(again);
  CHECK(text.find("flt_U0_contribution:R:1:flt_U0_contribution") == std::string::npos);
  CHECK(text.find("flt_U0_contribution:R:1") != std::string::npos);

  // Ensemble SDF: one value per line per atom, in the record's atom order, and the spread.
  const std::string sdf = dir / "out.sdf";
  const auto srun = run_flt("predict -q -m " + quoted(a) + " -m " + quoted(b) + " " + quoted(kCdk2) +
                                " -o " + quoted(sdf) + " --per-atom=U0",
                            dir);
  CHECK(srun.status == 3);  // cdk2.sdf has elements the test model never saw; those are marked
  const auto records = read_all(sdf);
  std::size_t with_values = 0;
  for (const auto& r : records) {
    const auto* tag = r.property("flt_U0_contribution");  // tag "flt_U0_contribution [eV]"
    if (tag == nullptr) {
      CHECK(r.property("flt_error") != nullptr);
      continue;
    }
    ++with_values;
    std::istringstream lines(tag->value);
    double v = 0, sum = 0;
    std::size_t count = 0;
    while (lines >> v) {
      sum += v;
      ++count;
    }
    CHECK(count == r.size());
    CHECK(r.property("flt_U0_contribution")->unit == "eV");
    CHECK(sum == Approx(property_number(r, "flt_U0")).margin(5e-3).epsilon(0));
    CHECK(r.property("flt_U0_contribution_std") != nullptr);
  }
  // That output predicted again by one model: the ensemble's spreads and per-atom values are not
  // kept beside the new single-model values.
  const std::string single = dir / "single.sdf";
  REQUIRE(run_flt("predict -q -m " + quoted(a) + " " + quoted(sdf) + " -o " + quoted(single), dir).status == 3);
  for (const auto& r : read_all(single)) {
    CHECK(r.property("flt_U0_std") == nullptr);
    CHECK(r.property("flt_U0_contribution") == nullptr);
    CHECK(r.property("flt_U0_contribution_std") == nullptr);
    if (r.property("flt_error") == nullptr) CHECK(r.property("flt_U0") != nullptr);
  }
  CHECK(with_values > 0);

  // Refusals, before anything is written: CSV has no per-atom place, gap is a per-molecule mean.
  const auto csv = run_flt("predict -m " + quoted(a) + " " + quoted(qm9) + " -o " + quoted(dir / "out.csv") + " --per-atom", dir);
  CHECK(csv.status == 2);
  CHECK(csv.err.find("--per-atom writes a value per atom") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "out.csv"));
  const auto gap = run_flt("predict -m " + quoted(a) + " " + quoted(qm9) + " -o " + quoted(dir / "gap.xyz") + " --per-atom=gap", dir);
  CHECK(gap.status == 2);
  CHECK(gap.err.find("'gap' is intensive (a per-molecule mean)") != std::string::npos);
}
