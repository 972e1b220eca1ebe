// The SMILES tasks on the real QM9 index (small subsets, tiny models): property regression
// (metrics in physical units, the saved model re-evaluates to the same predictions) and the
// causal language model (bits per character equals a manual log-softmax sum, independent of the
// batch size, and the saved model reproduces it).
#include "core/losses.hpp"
#include "tasks/task_lm.hpp"
#include "tasks/task_property.hpp"
#include "task_test_util.hpp"
#include "io/atomic_file.hpp"
#include "io/csv.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numbers>

using namespace flt;
using namespace flt::tasks;
using flt::tasks::testing::Scratch;
namespace fs = std::filesystem;

namespace {

TokenModelConfig tiny_model(TokenModelConfig c) {
  c.width = 16;
  c.heads = 2;
  c.blocks = 1;
  c.mlp_hidden = 32;
  c.head_hidden = 16;
  c.num_features = 8;
  c.num_frequencies = 8;
  return c;
}

}  // namespace

TEST_CASE("helpers: batches, number lists, metadata lookup", "[seq][task]") {
  const std::vector<std::size_t> order = {5, 3, 1, 0, 2, 4, 6};
  const auto b = batch_spans(order, 3);
  REQUIRE(b.size() == 3);
  CHECK(b[2].size() == 1);
  CHECK(b[2][0] == 6);
  const std::vector<double> v = {1.5, -3e-05, 0.1, 123456789.125};
  CHECK(parse_doubles(format_doubles(v), "x") == v);  // shortest round-trip text
  CHECK(parse_doubles("", "x").empty());
  CHECK_THROWS_AS(parse_doubles("1,,2", "x"), InputError);
  CHECK_THROWS_AS(parse_doubles("1,abc", "x"), InputError);
  CHECK_THROWS_AS(parse_doubles("inf", "x"), InputError);
  CHECK_THROWS_AS(require_metadata({}, "task.kind", "m.flt"), ModelFileError);
  CHECK(example_digest("abc") == example_digest("abc"));
  CHECK(example_digest("abc") != example_digest("abd"));
}

TEST_CASE("property task: trains on QM9 SMILES, metrics in physical units, saved model re-evaluates", "[seq][task][smiles]") {
  Scratch dir("task-property");
  PropertyTrainConfig cfg;
  cfg.index = testing::qm9_index();
  cfg.split_file = testing::qm9_split();
  cfg.targets = {"U0", "gap"};
  cfg.train_limit = 300;
  cfg.test_limit = 0;
  cfg.model = tiny_model(cfg.model);
  cfg.run.epochs = 2;
  cfg.run.batch_size = 32;
  cfg.run.threads = 1;
  cfg.run.out = dir / "run";
  cfg.run.resolved_ini = "[data]\ntask = property\n";
  const PropertyTrainResult r = run_property_training(cfg);
  CHECK(r.train_size == 300);
  CHECK(r.validation_size == 1000);
  CHECK(r.test_size == 1000);
  REQUIRE(r.test.metrics.size() == 2);
  // The reference energies take out nearly all of U0 (thousands of eV): what is left is the
  // residual of the composition fit, far below the spread of U0 itself.
  CHECK(r.test.metrics[0].mae < 2.0);
  CHECK(r.test.metrics[0].r2 > 0.99);
  CHECK(r.test.targets[0].unit == "eV");
  CHECK(r.test.metrics[1].count == 1000);
  for (const char* f : {"model.flt", "test_metrics.csv", "test_predictions.csv", "test_metrics.json", "parity_U0.svg",
                        "learning_curve_MAE_U0_eV.svg"})
    CHECK(fs::exists(dir / "run" / f));
  const io::CsvTable metrics = io::read_csv(dir / "run" / "test_metrics.csv");
  CHECK(metrics.rows.size() == 2);

  // The model file carries vocabulary and normalisation: re-evaluation gives the same numbers.
  const PropertyEvaluation e = evaluate_property_model(dir / "run" / "model.flt", cfg.index, cfg.split_file, "test", 64);
  REQUIRE(e.predicted.rows() == 1000);
  // (float forward in other batch sizes: equal to float rounding, not bitwise)
  CHECK((e.predicted - r.test.predicted).cwiseAbs().maxCoeff() < 1e-5);  // eV, Debye
  CHECK(e.metrics[0].mae == Approx(r.test.metrics[0].mae).epsilon(1e-4));
  // A model of another task is refused.
  CHECK_THROWS_AS(evaluate_lm_model(dir / "run" / "model.flt", cfg.index, cfg.split_file, "test", 64), ModelFileError);
}

TEST_CASE("LM task: bits per character = manual log-softmax sum / ln 2, batch independent, saved model reproduces", "[seq][task][smiles]") {
  std::vector<std::int32_t> in, tg;
  lm_sequences({7, 8, 9}, in, tg);
  CHECK(in == std::vector<std::int32_t>{Vocabulary::kBos, 7, 8, 9});
  CHECK(tg == std::vector<std::int32_t>{7, 8, 9, Vocabulary::kEos});

  Scratch dir("task-lm");
  LmTrainConfig cfg;
  cfg.index = testing::qm9_index();
  cfg.split_file = testing::qm9_split();
  cfg.train_limit = 1000;
  cfg.test_limit = 200;
  cfg.run.lr = 3e-3;
  cfg.model = tiny_model(cfg.model);
  cfg.run.epochs = 2;
  cfg.run.batch_size = 32;
  cfg.run.threads = 1;
  cfg.run.out = dir / "run";
  cfg.run.resolved_ini = "[data]\ntask = lm\n";
  const LmTrainResult r = run_lm_training(cfg);
  CHECK(r.test.strings == 200);
  CHECK(io::read_csv(dir / "run" / "test_sequences.csv").rows.size() == 200);  // every test string
  // A character model beats the uniform distribution over its vocabulary.
  CHECK(r.test.bits_per_character < std::log2(static_cast<double>(r.vocabulary)) - 0.8);
  CHECK(r.test.bits_per_character > 0.5);

  // Manual bpc on a handful of strings with the saved model.
  std::map<std::string, std::string> meta;
  auto model = TokenModel<float>::load(dir / "run" / "model.flt", &meta);
  CHECK(model->config().causal);
  const Vocabulary vocab = Vocabulary::from_text(meta.at("task.vocabulary"));
  std::vector<std::vector<std::int32_t>> strings;
  for (const char* s : {"CC(=O)N", "c1ccoc1", "OCC#N", "C1CC1O"})
    strings.push_back(vocab.encode(tokenize_smiles(s, Tokenization::character)));
  double nll = 0;
  std::size_t positions = 0;
  std::vector<double> string_nll;
  for (const auto& s : strings) {
    std::vector<std::int32_t> input, target;
    lm_sequences(s, input, target);
    const Mat<float> logits = model->predict(TokenBatch::sequences(std::vector<std::vector<std::int32_t>>{input}));
    REQUIRE(logits.rows() == static_cast<Index>(target.size()));
    string_nll.push_back(0);
    for (Index n = 0; n < logits.rows(); ++n) {
      const Vec<double> z = logits.row(n).cast<double>().transpose();
      const double m = z.maxCoeff();
      const double lse = m + std::log((z.array() - m).exp().sum());
      nll += lse - z(target[static_cast<std::size_t>(n)]);
      string_nll.back() += lse - z(target[static_cast<std::size_t>(n)]);
      ++positions;
    }
  }
  const LmEvaluation one = evaluate_lm(*model, strings, 1);
  const LmEvaluation all = evaluate_lm(*model, strings, 3);
  CHECK(one.positions == positions);
  CHECK(one.bits_per_character == Approx(nll / positions / std::numbers::ln2).epsilon(1e-5));
  CHECK(all.bits_per_character == Approx(one.bits_per_character).epsilon(1e-5));
  // Per string (batched as a whole or one by one): its positions and summed nll.
  REQUIRE(all.string_nll_nats.size() == strings.size());
  for (std::size_t i = 0; i < strings.size(); ++i) {
    CHECK(all.string_positions[i] == strings[i].size() + 1);
    CHECK(all.string_nll_nats[i] == Approx(string_nll[i]).epsilon(1e-5));
    CHECK(one.string_nll_nats[i] == Approx(string_nll[i]).epsilon(1e-5));
  }

  // Causality: the logits of a prefix do not change when characters are appended.
  std::vector<std::int32_t> a, b, t;
  lm_sequences(strings[0], a, t);
  b = a;
  b.push_back(vocab.id("C"));
  b.push_back(vocab.id("O"));
  const Mat<float> la = model->predict(TokenBatch::sequences(std::vector<std::vector<std::int32_t>>{a}));
  const Mat<float> lb = model->predict(TokenBatch::sequences(std::vector<std::vector<std::int32_t>>{b}));
  CHECK((lb.topRows(la.rows()) - la).cwiseAbs().maxCoeff() < 1e-4);

  // The saved model evaluates every validation string of the split.
  const LmEvaluation e = evaluate_lm_model(dir / "run" / "model.flt", cfg.index, cfg.split_file, "validation", 256);
  CHECK(e.strings == 1000);
  CHECK(std::isfinite(e.bits_per_character));
  // Its per-string file lists every validation string of the split once, and the rows add up to
  // the aggregate: summed nll over summed tokens is the mean nll per position.
  write_lm_evaluation(dir.path(), e);
  const io::CsvTable seqs = io::read_csv(dir / "validation_sequences.csv");
  CHECK(seqs.header == std::vector<std::string>{"id", "smiles", "tokens", "nll [nats]", "loss [nats/token]", "perplexity"});
  REQUIRE(seqs.rows.size() == 1000);
  std::vector<std::string> split_ids;
  for (const auto& row : io::read_csv(cfg.split_file).rows)
    if (row[0] == "validation") split_ids.push_back(row[2]);
  std::vector<std::string> file_ids;
  double nll_sum = 0;
  std::size_t token_sum = 0;
  for (const auto& row : seqs.rows) {
    file_ids.push_back(row[0]);
    CHECK(std::stoul(row[2]) == row[1].size() + 1);
    nll_sum += std::stod(row[3]);
    token_sum += std::stoul(row[2]);
    CHECK(std::stod(row[4]) == Approx(std::stod(row[3]) / std::stod(row[2])));
    CHECK(std::stod(row[5]) == Approx(std::exp(std::stod(row[4]))));
  }
  CHECK(file_ids == split_ids);
  CHECK(token_sum == e.positions);
  CHECK(nll_sum / static_cast<double>(token_sum) == Approx(e.nll_nats).epsilon(1e-9));
  CHECK_THROWS_AS(evaluate_property_model(dir / "run" / "model.flt", cfg.index, cfg.split_file, "test", 64), ModelFileError);
}

TEST_CASE("subset limits draw a seeded sample in the split's order, not its first rows", "[tasks]") {
  std::vector<std::size_t> ids(11023);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = 3 * i + 1;  // id-ordered, as split files
  const auto a = sample_n(ids, 1000, 7), b = sample_n(ids, 1000, 7), c = sample_n(ids, 1000, 8);
  CHECK(a == b);
  CHECK(a != c);
  REQUIRE(a.size() == 1000);
  CHECK(std::is_sorted(a.begin(), a.end()));
  CHECK(std::adjacent_find(a.begin(), a.end()) == a.end());  // distinct
  // Spread over the whole range: a quarter of the sample in each quarter of the ids, roughly.
  const auto in_last_quarter = std::count_if(a.begin(), a.end(), [&](std::size_t id) { return id > ids[ids.size() * 3 / 4]; });
  CHECK(in_last_quarter > 200);
  CHECK(in_last_quarter < 300);
  CHECK(sample_n(ids, 0, 7) == ids);
  CHECK(sample_n(ids, 20000, 7) == ids);
}
