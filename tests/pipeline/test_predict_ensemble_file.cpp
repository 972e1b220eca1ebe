// Ensemble files (format "flt-ensemble"): packing, loading as the members' mean, flattening, and
// every malformed case a reader must refuse.
#include "test_predict_util.hpp"
#include "io/model_file.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace flt;
using namespace flt::pipeline;
using namespace flt::pipeline::testing;

namespace {

// Predictions of `predictor` on `molecules`: every mean and spread, for exact comparison.
std::vector<double> all_outputs(const Predictor& predictor, const std::vector<models::Molecule>& molecules) {
  std::vector<double> out;
  for (const auto& r : predictor.predict_batch(std::span<const models::Molecule>(molecules))) {
    REQUIRE(r.ok());
    out.insert(out.end(), r.prediction->mean.begin(), r.prediction->mean.end());
    out.insert(out.end(), r.prediction->stddev.begin(), r.prediction->stddev.end());
  }
  return out;
}

std::string error_of(const std::string& path) {
  try {
    (void)Predictor::load({path});
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("ensemble file: predicts bit for bit as its member files, flattens, names members", "[predict][ensemble]") {
  TempDir dir("ensemble");
  const std::string a = save_small_model(dir, "a.flt", 1), b = save_small_model(dir, "b.flt", 2),
                    c = save_small_model(dir, "c.flt", 3);
  const std::string ab = dir / "ab.flt", abc = dir / "abc.flt";
  const auto run = run_flt("ensemble " + quoted(a) + " " + quoted(b) + " -o " + quoted(ab), dir);
  INFO(run.err);
  REQUIRE(run.status == 0);
  CHECK(run.err.find("2 models") != std::string::npos);

  std::vector<models::Molecule> molecules;
  for (const auto& p : read_all(qm9_records(dir, 12))) molecules.push_back(to_molecule(p));
  const Predictor packed = Predictor::load({ab}), separate = Predictor::load({a, b});
  REQUIRE(packed.ensemble_size() == 2);
  CHECK(packed.members()[1]->source() == ab + " [member 2 of 2]");
  CHECK(packed.members()[1]->metadata().at("training.seed") == "2");  // each member keeps its own metadata
  CHECK(all_outputs(packed, molecules) == all_outputs(separate, molecules));

  // An ensemble among the inputs contributes its members, in order.
  CHECK(save_ensemble({ab, c}, abc) == 3);
  CHECK(all_outputs(Predictor::load({abc}), molecules) == all_outputs(Predictor::load({a, b, c}), molecules));

  // flt predict with the ensemble file writes what it writes with the member files.
  const std::string qm9 = dir / "qm9.xyz", out_packed = dir / "packed.csv", out_separate = dir / "separate.csv";
  REQUIRE(run_flt("predict -m " + quoted(ab) + " " + quoted(qm9) + " -o " + quoted(out_packed), dir).status == 0);
  REQUIRE(run_flt("predict -m " + quoted(a) + " -m " + quoted(b) + " " + quoted(qm9) + " -o " + quoted(out_separate), dir)
              .status == 0);
  CHECK(slurp(out_packed) == slurp(out_separate));

  // flt info lists every member; flt rpe picks one.
  const auto info = run_flt("info " + quoted(ab), dir);
  REQUIRE(info.status == 0);
  CHECK(info.out.find("an ensemble of 2 models") != std::string::npos);
  const auto rpe_member = run_flt("rpe " + quoted(ab) + " --member 2 --points 5", dir);
  const auto rpe_file = run_flt("rpe " + quoted(b) + " --points 5", dir);
  REQUIRE(rpe_member.status == 0);
  CHECK(rpe_member.out == rpe_file.out);
  CHECK(run_flt("rpe " + quoted(ab) + " --member 3", dir).status == 2);
}

TEST_CASE("ensemble file: refused inputs and malformed files name the file and the reason", "[predict][ensemble]") {
  TempDir dir("ensemble-bad");
  const std::string a = save_small_model(dir, "a.flt", 1), b = save_small_model(dir, "b.flt", 2);
  const std::string ab = dir / "ab.flt";
  REQUIRE(save_ensemble({a, b}, ab) == 2);

  // One model is not an ensemble; the single-model loader refuses an ensemble.
  CHECK_THROWS_WITH(save_ensemble({a}, dir / "one.flt"), Catch::Contains("at least two"));
  CHECK_FALSE(fs::exists(dir / "one.flt"));
  CHECK_THROWS_WITH(LoadedModel::load(ab), Catch::Contains("an ensemble of 2 models"));

  // Members predicting different targets.
  auto other = small_model(4);
  models::ModelConfig config = other.config();
  config.targets = {{"U0", "kcal/mol", true}, {"gap", "eV", false}};
  models::MoleculeModel<float> different(config);
  different.set_normalisation(other.normalisation());
  const std::string d = dir / "d.flt";
  models::save_model(d, different);
  CHECK_THROWS_WITH(save_ensemble({a, d}, dir / "ad.flt"), Catch::Contains("different targets"));
  CHECK_FALSE(fs::exists(dir / "ad.flt"));

  // Hand-made malformed ensembles.
  const io::ModelFile good = io::read_model_file(ab, models::kEnsembleFileFormat);
  auto write_variant = [&](const std::string& name, auto&& change) {
    io::ModelFile f(models::kEnsembleFileFormat);
    for (const auto& [k, v] : good.all_metadata()) f.set_metadata(k, v);
    for (const auto& [k, t] : good.tensors()) f.set_tensor(k, t);
    change(f);
    const std::string path = dir / name;
    io::write_model_file(path, f);
    return path;
  };
  const std::string stray = write_variant("stray.flt", [](io::ModelFile& f) {
    f.set_tensor("member.3.param.x", io::Tensor::vector(std::vector<float>{1}));
  });
  CHECK_THAT(error_of(stray), Catch::Contains("stray.flt") && Catch::Contains("'member.3.param.x' belongs to no ensemble member"));
  const std::string one = write_variant("count1.flt", [](io::ModelFile& f) { f.set_metadata("ensemble.members", "1"); });
  CHECK_THAT(error_of(one), Catch::Contains("member count '1'"));
  const std::string three = write_variant("count3.flt", [](io::ModelFile& f) { f.set_metadata("ensemble.members", "3"); });
  CHECK_THAT(error_of(three), Catch::Contains("member 3 of 3 is empty"));
  const std::string huge = write_variant("huge.flt", [](io::ModelFile& f) { f.set_metadata("ensemble.members", "999999"); });
  CHECK_THAT(error_of(huge), Catch::Contains("member count 999999 exceeds its"));
  const std::string zero_padded = write_variant("padded.flt", [&](io::ModelFile& f) {
    f.set_metadata("member.01.config.width", good.metadata("member.1.config.width"));
  });
  CHECK_THAT(error_of(zero_padded), Catch::Contains("'member.01.config.width' belongs to no ensemble member"));
  // A member that is not a complete model: the member is named.
  const std::string broken_path = dir / "broken.flt";
  std::size_t dropped = 0;
  {
    io::ModelFile f(models::kEnsembleFileFormat);
    for (const auto& [k, v] : good.all_metadata()) f.set_metadata(k, v);
    for (const auto& [k, t] : good.tensors())
      if (k.rfind("member.2.param.", 0) == 0 && dropped == 0) ++dropped;
      else f.set_tensor(k, t);
    io::write_model_file(broken_path, f);
  }
  REQUIRE(dropped == 1);
  CHECK_THAT(error_of(broken_path), Catch::Contains("broken.flt [member 2 of 2]"));
  // A checkpoint is neither a model nor an ensemble.
  io::ModelFile checkpoint("flt-checkpoint");
  checkpoint.set_tensor("epoch", io::Tensor::scalar<std::int64_t>(1));
  io::write_model_file(dir / "ck.flt", checkpoint);
  CHECK_THAT(error_of(dir / "ck.flt"), Catch::Contains("holds 'flt-checkpoint', not a model"));
}
