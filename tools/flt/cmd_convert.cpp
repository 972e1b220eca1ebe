// flt convert: converts between molecule formats (SDF/MOL, XYZ, extended XYZ, QM9 in; SDF, CSV,
// extended XYZ out) with the library's error policy, or reports per-record statistics (--stats).
#include "chem/reader.hpp"
#include "chem/writer.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "options_util.hpp"
#include "pipeline/dataset_progress.hpp"

#include <iostream>
#include <string>
#include <vector>

namespace flt::cli {
namespace {

const char* kUsage =
    "Usage: flt convert INPUT... -o OUTPUT [options]\n"
    "       flt convert INPUT... --stats [options]\n\n"
    "Reads molecules from files, .gz files, directories, archives (.tar, .tar.gz/.bz2/.xz/.zst,\n"
    ".zip, .7z, .cpio) or '-' (standard input, needs --format) and writes them to OUTPUT (.sdf,\n"
    ".csv, .xyz/.extxyz; '-' for standard output, needs --out-format). Bad records are skipped\n"
    "and listed (exit status 3), or stop the conversion with --on-error fail (exit status 1, no\n"
    "output written). Progress (bytes of the inputs, ETA) goes to stderr: a bar on a terminal,\n"
    "plain lines otherwise, nothing with -q.\n";

io::OptionSchema convert_schema() {
  using io::OptionType;
  io::OptionSchema s;
  s.optional_option("inputs", "", OptionType::list, "input files, as the arguments (which replace these)");
  s.optional_option("out", "", OptionType::path, "output file ('-' for standard output)");
  s.optional_option("format", "", OptionType::string, "input format: sdf, mol, xyz, extxyz, qm9, pdb, csv (SMILES CSV), smi (SMILES file) (default: from each file name)");
  s.optional_option("out-format", "", OptionType::string, "output format: sdf, csv, xyz, extxyz (default: from the output name)");
  s.option("on-error", "", OptionType::string, "skip", "skip or fail").choices = {"skip", "fail"};
  s.option("stats", "", OptionType::boolean, "false", "print per-record atom counts and labels instead of converting");
  s.option("missing-3d", "", OptionType::string, "error",
           "records without 3-D coordinates: error, generate (RDKit ETKDGv3, random-coordinate fallback), accept")
      .choices = {"error", "generate", "accept"};
  s.option("seed", "", OptionType::integer, "42", "random seed of generated conformers");
  s.option("add-hydrogens", "", OptionType::boolean, "true", "add implicit hydrogens (with coordinates) to records that have any");
  s.option("sanitize", "", OptionType::boolean, "true", "RDKit sanitization of SDF/MOL records");
  s.option("min-distance", "", OptionType::real, shortest_number(chem::kDefaultMinDistance), "atoms closer than this (Angstrom) make a record bad; 0 disables");
  add_conformer_options(s);
  add_common_options(s);
  s.add_spellings("seed", 0, {"conformer-seed"});
  return s;
}

int run_convert(const std::vector<std::string>& args) {
  static const io::OptionSchema schema = convert_schema();
  const std::optional<Arguments> parsed = parse_arguments(schema, args, kUsage);
  if (!parsed) return kExitOk;
  const io::ResolvedOptions& o = parsed->options;
  const std::vector<std::string> inputs = parsed->positional_or("inputs");
  const std::string output = parsed->string_or_empty("out");
  const bool stats = o.get_bool("stats");
  const auto seed = o.get_int("seed");
  if (inputs.empty()) throw UsageError("no input given");
  if (stats == !output.empty()) throw UsageError("give either -o OUTPUT or --stats");
  if (seed < 0 || seed > 0xffffffff) throw UsageError("--seed must be in 0..4294967295");

  chem::ReadOptions read;
  read.format = format_option(o, "format");
  const std::string missing_3d = o.get_string("missing-3d");
  read.missing_3d = missing_3d == "generate" ? chem::Missing3D::generate
                    : missing_3d == "accept" ? chem::Missing3D::accept
                                             : chem::Missing3D::error;
  read.seed = static_cast<std::uint32_t>(seed);
  apply_conformer_options(o, read);
  read.add_hydrogens = o.get_bool("add-hydrogens");
  read.sanitize = o.get_bool("sanitize");
  read.min_distance = o.get_real("min-distance");
  const auto policy = o.get_string("on-error") == "fail" ? chem::ErrorPolicy::fail : chem::ErrorPolicy::skip;

  chem::ReadSummary summary;
  pipeline::ReadProgressBar progress(progress_output(parsed->quiet), stats ? "reading" : "converting");
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
    write.format = format_option(o, "out-format");
    if (output == "-" && write.format == chem::Format::unknown) {
      throw UsageError("writing to standard output needs --out-format");
    }
    refuse_output_among_inputs(inputs, output);
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
