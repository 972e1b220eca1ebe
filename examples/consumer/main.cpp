// flt_consumer SDF [MODEL.flt]: reads an SD file with RDKit, predicts every molecule with flt (the
// given model, else the default model) and checks the results; exit status 0 only when every check
// passes. Checks:
//   - at least one molecule is predicted, every value is finite, every target has a unit;
//   - each molecule predicted from RDKit (flt::predict on the ROMol) equals the same record read
//     and predicted by flt's own reader (Model::predict_file), and a record fails in one path
//     exactly when it fails in the other;
//   - a batch prediction (Model::predict on a span) equals the single-molecule predictions.
#include <flt/flt.hpp>
#include <flt/rdkit.hpp>

#include <GraphMol/FileParsers/MolSupplier.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "CHECK FAILED: %s\n", what.c_str());
    ++failures;
  }
}

bool agree(const flt::Prediction& a, const flt::Prediction& b) {
  if (a.values.size() != b.values.size()) return false;
  for (std::size_t t = 0; t < a.values.size(); ++t)
    if (std::abs(a.values[t] - b.values[t]) > 1e-6 * (1.0 + std::abs(b.values[t]))) return false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: flt_consumer SDF [MODEL.flt]\n");
    return 2;
  }
  const std::string sdf = argv[1];
  try {
    const flt::Model model = argc == 3 ? flt::Model::load(argv[2]) : flt::Model::load_default();
    std::printf("flt %s, model %s\n", flt::version(), model.files().at(0).c_str());
    for (const flt::Target& t : model.targets()) check(!t.unit.empty(), "unit of " + t.name);

    // 1. flt's own reader, streaming.
    std::vector<flt::RecordResult> records;
    const flt::FileSummary summary =
        model.predict_file(sdf, [&](const flt::RecordResult& r) { records.push_back(r); });
    std::printf("predict_file: %s\n", summary.describe().c_str());
    check(summary.predicted > 0, "at least one record predicted");

    // 2. RDKit reads the same file (keeping explicit hydrogens); flt predicts each ROMol.
    RDKit::SDMolSupplier supplier(sdf, /*sanitize=*/true, /*removeHs=*/false);
    std::vector<flt::Molecule> molecules;
    std::vector<flt::Prediction> singles;
    for (std::size_t index = 0; !supplier.atEnd(); ++index) {
      std::unique_ptr<RDKit::ROMol> mol(supplier.next());
      const flt::RecordResult* rec = index < records.size() ? &records[index] : nullptr;
      if (!mol) {
        check(rec != nullptr && !rec->ok(), "record " + std::to_string(index + 1) +
                                                " unreadable by RDKit but predicted by flt");
        continue;
      }
      const std::string label = "record " + std::to_string(index + 1);
      try {
        const flt::Prediction p = flt::predict(model, *mol);
        for (std::size_t t = 0; t < p.size(); ++t) {
          check(std::isfinite(p.values[t]), label + ": finite " + model.targets()[t].name);
          std::printf("%-28s %s = %.6f %s\n", flt::to_molecule(*mol).title.c_str(),
                      model.targets()[t].name.c_str(), p.values[t], model.targets()[t].unit.c_str());
        }
        check(rec != nullptr && rec->ok() && agree(p, *rec->prediction),
              label + ": RDKit and flt reader predictions agree");
        molecules.push_back(flt::to_molecule(*mol));
        singles.push_back(p);
      } catch (const flt::Error& e) {
        std::printf("%-28s not predicted: %s\n", label.c_str(), e.what());
        check(rec != nullptr && !rec->ok(), label + ": fails with RDKit but not with flt's reader");
      }
    }

    // 3. Batch prediction equals the single-molecule ones.
    const std::vector<flt::Result> batch = model.predict(molecules);
    for (std::size_t i = 0; i < batch.size(); ++i)
      check(batch[i].ok() && agree(batch[i].value(), singles[i]), "batch " + std::to_string(i));
    check(!singles.empty(), "RDKit molecules predicted");
  } catch (const flt::Error& e) {
    std::fprintf(stderr, "flt error: %s\n", e.what());
    return 1;
  }
  if (failures > 0) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all checks passed\n");
  return 0;
}
