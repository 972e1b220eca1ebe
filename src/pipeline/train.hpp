// `flt train`: the training workflow (run_training) on top of the dataset loader (dataset.hpp),
// the FLT molecule model (models/molecule_model.hpp) and the training engine (train/engine.hpp):
// read and split the data, fit the normalisation on the training subset, train, and write the
// best checkpoint's model, test metrics, predictions and plots into the run directory.
//
// Selection metric (best checkpoint, early stopping, plateau schedule) over the P targets:
//   m = (1/P) sum_t MAE_val,t / sigma_t      (sigma_t: target t's normalisation scale)
// The run step by step, determinism, --resume and MPI: docs/training.md, "One run of flt train".
#pragma once

#include "core/losses.hpp"
#include "models/molecule_model.hpp"
#include "pipeline/dataset.hpp"
#include "train/engine.hpp"
#include "train/metrics.hpp"
#include "io/options.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace flt::pipeline {

// The engine's settings (train/engine.hpp: epochs, batch size, learning-rate schedule, clipping,
// EMA, early stopping, time budget, seed, threads, evaluation batch size) and what `flt train`
// adds for molecules.
struct TrainConfig : train::EngineSettings {
  TrainConfig() {
    epochs = 100;
    lr = 5e-4;
  }

  // Data.
  DatasetOptions data;  // inputs, targets, units, labels CSV, error policy

  // Split: a split file, or random sizes "train,validation,test" (counts, fractions or "rest").
  std::string split_file;
  std::string split = "0.8,0.1,rest";
  std::uint64_t split_seed = 0;

  // Atom budget of a mini-batch (0: none): batches hold at most batch_size molecules AND at most
  // batch_atoms atoms (batch_indices with an atom budget), so the memory of a step is bounded
  // whatever the molecules' sizes; a molecule larger than the budget trains alone. Evaluation
  // batches (eval_batch_size molecules) obey the same budget.
  std::size_t batch_atoms = 0;
  RegressionLoss loss{RegressionLossKind::mse, 1.0};
  // Training on energies and forces (models/force_training.hpp): the weight w of the force term
  // (0: energies only; data.forces_column names the forces' column) and the energy target the
  // forces belong to ("": the first extensive target with an energy unit).
  double force_weight = 0;
  std::string force_target;
  bool fit_reference = true;          // per-element reference energies by least squares
  // Fit the three-body reference of the forces' target to energies and forces (force training
  // only); false: to energies alone.
  bool three_body_force_fit = false;
  // Molecules per gradient chunk: > 0 sums the batch gradient exactly over chunks of this size
  // (train_distributed.hpp), so any number of MPI ranks gives the same model; 0: one backward
  // pass over the whole batch in a plain run, kDefaultGradientChunk in an MPI job of any size
  // (comm::in_mpi_job), or the interrupted run's value on --resume.
  std::size_t gradient_chunk = 0;

  models::ModelConfig model;          // targets are filled from the dataset

  // Run directory.
  std::filesystem::path out;
  bool overwrite = false;
  bool resume = false;
  bool split_only = false;            // write split.csv and config.ini, then return (no training)

  // The resolved configuration, written as config.ini (set by config_from_options), with its
  // paths absolute (io::make_paths_absolute).
  std::string resolved_ini;
  // The same with the paths as given (relative to the working directory), the spelling that runs
  // made before config.ini held absolute paths have in their checkpoints: --resume accepts it.
  std::string resolved_ini_as_given;
  // The same with every path reduced to its file name (io::reduce_paths_to_file_names): the text
  // of the resume fingerprint and of the model's training.config metadata, so that neither
  // depends on where the data lies (the data is compared by checksum) and the same data and
  // configuration give the same model file from any directory.
  std::string fingerprint_ini;
};

// Per-epoch numbers, also passed to the observer.
struct EpochReport {
  train::EpochRecord record;          // epoch, step, lr, losses, MAEs (physical units)
  double val_force_mae = std::numeric_limits<double>::quiet_NaN();  // with forces: validation force MAE per component
  double selection_metric = 0;        // see header comment
  bool improved = false;
  attn::AttentionStats attention;     // summed over the epoch's training forwards
  const std::vector<DatasetTarget>* targets = nullptr;  // the run's targets, in MAE order
};

struct TrainResult {
  std::filesystem::path run_dir;
  std::filesystem::path model_path;         // run_dir / "model.flt" (empty if stopped by the hook)
  std::vector<DatasetTarget> targets;
  std::vector<train::Metrics> test_metrics;  // per target (empty when no test molecules)
  // Training on forces: the energy target they belong to, their unit (the target's per Angstrom)
  // and the test metrics over force components (count = components with reference forces).
  std::string force_target, force_unit;
  std::optional<train::Metrics> test_force_metrics;
  std::size_t train_size = 0, validation_size = 0, test_size = 0;
  std::int64_t epochs_run = 0;               // completed epochs (including resumed ones)
  std::int64_t best_epoch = 0;
  bool stopped_early = false;                // early stopping (patience)
  bool stopped_by_hook = false;              // stop_after_epoch
  bool split_only = false;                   // TrainConfig::split_only: nothing was trained
  double seconds = 0;                        // training wall time (all sessions of the run)
  std::string data_checksum;                 // of the training subset (io::training_data_checksum)
  std::string dataset_summary;               // Dataset::describe()
  std::size_t skipped_records = 0;           // bad input records skipped while reading
  // Data-parallel numbers of this session (gradient_chunk 0: the plain serial engine).
  int ranks = 1;
  std::string communicator = "serial";
  std::size_t gradient_chunk = 0;
  std::int64_t session_steps = 0;
  std::size_t session_molecules = 0;         // training molecules processed (forward + backward)
  // The most atoms one forward and backward pass of a training step held on this rank in this
  // session (a whole batch, or a gradient chunk): what a step's memory grows with.
  std::size_t largest_step_atoms = 0;
  std::size_t session_batches_over_budget = 0;  // steps of one molecule larger than batch_atoms
  double session_train_seconds = 0;          // wall time of the optimiser steps of this session
  double reduce_seconds = 0;                 // in the integer all-reduce of the gradient
  double wait_seconds = 0;                   // waiting for the slowest rank before it
  double convert_seconds = 0;                // converting gradients to and from fixed point
  double exchange_seconds = 0;               // in the per-step exchange of molecules
};

// The options of `flt train` (sections data, split, train, model, run): every option is accepted
// on the command line (--name) and in an INI file ([section] name = ...), the command line
// overriding the file. Model hyper-parameters are the keys of models::config_to_strings with '_'
// written '-' (--width, --heads, --blocks, --num-features (m), --num-frequencies (R), ...).
io::OptionSchema train_option_schema();

// Builds a TrainConfig from resolved options (throws ConfigError naming the option) and records
// the resolved INI text. Positional arguments are inputs (added to --inputs).
TrainConfig config_from_options(const io::ResolvedOptions& options,
                                const std::vector<std::string>& positional = {});

// Parses a command line (args without "flt train") the way the program does: --config FILE, or on
// --resume without --config the run directory's config.ini, below the command line.
TrainConfig parse_train_command_line(const std::vector<std::string>& args);

// Where the run writes progress (a bar with ETA on a terminal, plain lines otherwise) and an
// optional observer called after each epoch.
struct TrainOutput {
  std::ostream* progress = nullptr;  // null: silent
  bool terminal = false;
  std::function<void(const EpochReport&)> on_epoch;
  // Called after every optimiser step (e.g. to poll for an interrupt). An exception it throws
  // stops the run and propagates; the run directory keeps the last completed epoch's checkpoint,
  // from which --resume continues.
  std::function<void()> on_step;
};

// Runs the whole workflow. Throws ConfigError (bad options, non-empty --out without --overwrite),
// IoError, InputError, NumericalError (non-finite loss or gradient, naming epoch and step).
TrainResult run_training(const TrainConfig& config, const TrainOutput& output = {});

// The final summary (targets, sizes, test MAE/RMSE/R^2 with units, files) as text for stdout.
std::string format_summary(const TrainResult& result);

}  // namespace flt::pipeline
