// flt convert: converts between molecule formats (SDF/MOL, XYZ, extended XYZ, QM9 in; SDF, CSV,
// extended XYZ out) with the library's error policy, or reports per-record statistics (--stats).
#include "chem/reader.hpp"
#include "chem/writer.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/dataset_progress.hpp"

#include <boost/program_options.hpp>

#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

namespace po = boost::program_options;

const char* kUsage =
    "Usage: flt convert INPUT... -o OUTPUT [options]\n"
    "       flt convert INPUT... --stats [options]\n\n"
    "Reads molecules from files, .gz files, directories, archives (.tar, .tar.gz/.bz2/.xz/.zst,\n"
    ".zip, .7z, .cpio) or '-' (standard input, needs --format) and writes them to OUTPUT (.sdf,\n"
    ".csv, .xyz/.extxyz; '-' for standard output, needs --out-format). Bad records are skipped\n"
    "and listed (exit status 3), or stop the conversion with --on-error fail (exit status 1, no\n"
    "output written). Progress (bytes of the inputs, ETA) goes to stderr: a bar on a terminal,\n"
    "plain lines otherwise, nothing with -q.\n\n"
    "Options";

int run_convert(const std::vector<std::string>& args) {
  std::vector<std::string> inputs;
  std::string output, in_format, out_format, on_error = "skip", missing_3d = "error";
  std::uint32_t seed = 42;
  double min_distance = 0.1;
  ConformerFlags conformer;
  po::options_description options(kUsage);
  options.add_options()
      ("help,h", "show this help")
      ("out,output,o", po::value(&output), "output file ('-' for standard output); also spelled --output")
      ("config", po::value<std::string>(), "INI-style file of options, one 'name = value' per line (inputs as 'input = FILE'); the command line overrides it")
      ("format,f", po::value(&in_format), "input format: sdf, mol, xyz, extxyz, qm9, pdb, csv (SMILES) (default: from each file name)")
      ("out-format", po::value(&out_format), "output format: sdf, csv, xyz, extxyz (default: from the output name)")
      ("on-error", po::value(&on_error), "skip (default) or fail")
      ("stats", "print per-record atom counts and labels instead of converting")
      ("missing-3d", po::value(&missing_3d), "records without 3-D coordinates: error (default), generate (RDKit ETKDGv3, random-coordinate fallback), accept")
      ("seed", po::value(&seed), "random seed of generated conformers (default 42)")
      ("no-add-hydrogens", "do not add implicit hydrogens to records that have no explicit ones")
      ("no-sanitize", "skip RDKit sanitization of SDF/MOL records")
      ("min-distance", po::value(&min_distance), "atoms closer than this (Angstrom) make a record bad; 0 disables (default 0.1)")
      ("quiet,q", "log errors only, no progress")
      ("verbose,v", "log every step (hydrogens added, conformers generated)");
  add_conformer_options(options, conformer);
  const po::variables_map vm = parse_arguments(args, options, "input", po::value(&inputs));
  if (vm.count("help") != 0) {
    std::cout << options << "\n";
    return kExitOk;
  }
  apply_verbosity(vm);
  const bool stats = vm.count("stats") != 0;
  if (inputs.empty()) throw UsageError("no input given");
  if (stats == !output.empty()) throw UsageError("give either -o OUTPUT or --stats");
  if (on_error != "skip" && on_error != "fail") {
    throw UsageError("--on-error must be skip or fail, not '" + on_error + "'");
  }

  chem::ReadOptions read;
  try {
    if (!in_format.empty()) read.format = chem::format_from_name(in_format);
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  if (missing_3d == "error") {
    read.missing_3d = chem::Missing3D::error;
  } else if (missing_3d == "generate") {
    read.missing_3d = chem::Missing3D::generate;
  } else if (missing_3d == "accept") {
    read.missing_3d = chem::Missing3D::accept;
  } else {
    throw UsageError("--missing-3d must be error, generate or accept, not '" + missing_3d + "'");
  }
  read.seed = seed;
  apply_conformer_options(conformer, read);
  read.add_hydrogens = vm.count("no-add-hydrogens") == 0;
  read.sanitize = vm.count("no-sanitize") == 0;
  read.min_distance = min_distance;
  const auto policy = on_error == "fail" ? chem::ErrorPolicy::fail : chem::ErrorPolicy::skip;

  chem::ReadSummary summary;
  pipeline::ReadProgressBar progress(progress_output(is_quiet(vm)), stats ? "reading" : "converting");
  if (stats) {
    read.keep_molecule = false;
    std::cout << "source\trecord\tatoms\theavy_atoms\ttitle\tlabels\n";
    summary = chem::read_molecules(inputs, read, policy, [](chem::PointSet&& p) {
      std::size_t heavy = 0;
      for (int z : p.atomic_numbers) heavy += z > 1 ? 1 : 0;
      std::cout << p.source << '\t' << p.record << '\t' << p.size() << '\t' << heavy << '\t'
                << p.title << '\t';
      for (std::size_t i = 0; i < p.properties.size(); ++i) {
        const auto& prop = p.properties[i];
        std::string value = prop.value;
        for (char& c : value) {
          if (c == '\n' || c == '\t') c = ' ';
        }
        std::cout << (i == 0 ? "" : "; ") << prop.key << '=' << value;
        if (!prop.unit.empty()) std::cout << ' ' << prop.unit;
      }
      std::cout << '\n';
    }, progress.callback());
  } else {
    chem::WriteOptions write;
    try {
      if (!out_format.empty()) write.format = chem::format_from_name(out_format);
    } catch (const InvalidArgument& e) {
      throw UsageError(e.what());
    }
    if (output == "-" && write.format == chem::Format::unknown) {
      throw UsageError("writing to standard output needs --out-format");
    }
    auto writer = chem::MoleculeWriter::open(output, write);
    summary = chem::read_molecules(inputs, read, policy,
                                   [&](chem::PointSet&& p) { writer->write(p); }, progress.callback());
    writer->close();
  }
  progress.finish();
  std::cerr << "flt convert: " << summary.describe() << "\n";
  return summary.ok() ? kExitOk : kExitSkipped;
}

const bool registered = register_command(
    {"convert", "convert molecule files (SDF, MOL, XYZ, extended XYZ, QM9 -> SDF, CSV, XYZ)", 20,
     &run_convert});

}  // namespace
}  // namespace flt::cli
