// Molecular property prediction from SMILES with the token model (token embedding, bidirectional
// FLT encoder with 1-D RPE, pooled head): `flt seq train|eval --task property`.
//
// Data: the SMILES column of the bundled QM9 index (datasets/qm9/qm9_subset_index.csv.gz), the
// 3-D model's molecules, split (datasets/qm9/split.csv: 11,023 train / 1,000 validation / 1,000
// test) and targets with the same units (energies in eV, converted from the CSV's Hartree; mu in
// Debye, alpha in Bohr^3, Cv in cal/(mol K)), so test MAEs compare directly with the 3-D model's
// (docs/results/qm9.md). SMILES are tokenized at the atom level (data_smiles.hpp says why); the
// vocabulary is built from the training SMILES only (a token unseen in training becomes <unk>).
// Targets: extensive ones (U0, zpve, alpha, Cv, ...) minus per-element reference values fitted by
// least squares on the training molecules' composition (as the 3-D model does; the hydrogen count
// is n_atoms - n_heavy from the index), then standardised; the loss (mse, l1 or huber) is on the
// standardised targets, masked where a label is missing. Metrics: MAE, RMSE, R^2 per target in
// physical units. Selection metric: the mean over targets of validation MAE / sigma_t.
#pragma once

#include "core/losses.hpp"
#include "tasks/data_smiles.hpp"
#include "tasks/smiles_task.hpp"
#include "tasks/task_common.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace flt::tasks {

struct PropertyTrainConfig : SmilesData {
  std::vector<std::string> targets = {"U0", "homo", "lumo", "gap", "mu", "alpha", "zpve", "Cv"};
  Tokenization tokenization = Tokenization::atom;
  bool fit_reference = true;
  RegressionLoss loss{RegressionLossKind::mse, 1.0};
  TokenModelConfig model;
  TaskRunConfig run;
};

struct PropertyEvaluation {
  std::vector<std::string> ids;
  std::vector<train::TargetColumn> targets;
  Mat<double> predicted, truth;        // rows = molecules, physical units
  std::vector<train::Metrics> metrics; // per target
  double loss = kNaN;                  // on standardised targets
  std::size_t unknown_tokens = 0;      // SMILES tokens outside the training vocabulary (read as <unk>)
  std::vector<std::size_t> missing_labels;  // per target: molecules without that label (masked)
  std::string subset = "test";          // the split subset evaluated: names the output files and keys
};

struct PropertyTrainResult : SmilesTrainResult {
  PropertyEvaluation test;
  // Per target: training and validation molecules without that label (masked in the loss and
  // the metrics); the test subset's are test.missing_labels.
  std::vector<std::size_t> train_missing_labels, validation_missing_labels;
};

io::OptionSchema property_option_schema();
PropertyTrainConfig property_config_from_options(const io::ResolvedOptions& options);

// Trains, then evaluates the best model on the test subset; writes test_metrics.csv (per target:
// count, MAE, RMSE, R^2, max error with units), test_metrics.json (with the missing labels of each
// subset and target), test_predictions.csv and parity_<t>.svg into the run directory. Logs (and
// writes to output.progress) the missing labels per subset and target.
PropertyTrainResult run_property_training(const PropertyTrainConfig& config, const TaskOutput& output = {});

// `flt seq eval --task property`: a model file written by run_property_training on the `subset`
// ("train", "validation" or "test") of the index and split given. ModelFileError for another task.
PropertyEvaluation evaluate_property_model(const std::filesystem::path& model_path, const std::filesystem::path& index,
                                           const std::filesystem::path& split_file, const std::string& subset,
                                           std::size_t batch_size, const EvalProgress& progress = {});

std::string format_property_summary(const PropertyTrainResult& result);
std::string format_property_evaluation(const PropertyEvaluation& e);
void write_property_evaluation(const std::filesystem::path& dir, const PropertyEvaluation& e,
                               const std::vector<std::pair<std::string, double>>& extra = {});

}  // namespace flt::tasks
