// flt_consumer_plain SDF [MODEL.flt]: predicts every record of an SD file with flt's own reader
// and a molecule written in code, through <flt/flt.hpp> alone (no RDKit in this program); exit
// status 0 only when every check passes. Checks:
//   - at least one record is predicted, every value is finite, every target has a unit;
//   - a molecule written in code (water) is predicted, alone and in a batch, with equal values.
#include <flt/flt.hpp>

#include <cmath>
#include <cstdio>
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
    std::fprintf(stderr, "usage: flt_consumer_plain SDF [MODEL.flt]\n");
    return 2;
  }
  try {
    const flt::Model model = argc == 3 ? flt::Model::load(argv[2]) : flt::Model::load_default();
    std::printf("flt %s, model %s\n", flt::version(), model.files().at(0).c_str());
    for (const flt::Target& t : model.targets()) check(!t.unit.empty(), "unit of " + t.name);

    // 1. A molecule file, read by flt.
    std::vector<flt::RecordResult> records;
    const flt::FileSummary summary =
        model.predict_file(argv[1], [&](const flt::RecordResult& r) { records.push_back(r); });
    std::printf("predict_file: %s\n", summary.describe().c_str());
    check(summary.predicted > 0, "at least one record predicted");
    for (const flt::RecordResult& r : records) {
      if (!r.ok()) continue;
      for (std::size_t t = 0; t < r.prediction->size(); ++t) {
        check(std::isfinite(r.prediction->values[t]), r.title + ": finite value");
        std::printf("%-28s %s = %.6f %s\n", r.title.c_str(), model.targets()[t].name.c_str(),
                    r.prediction->values[t], model.targets()[t].unit.c_str());
      }
    }

    // 2. A molecule written in code: water, coordinates in Angstrom.
    flt::Molecule water;
    water.title = "water (in code)";
    water.atomic_numbers = {8, 1, 1};
    water.positions = {{{0.0, 0.0, 0.1173}}, {{0.0, 0.7572, -0.4692}}, {{0.0, -0.7572, -0.4692}}};
    const flt::Prediction single = model.predict(water);
    const std::vector<flt::Molecule> batch_input = {water, water};
    const std::vector<flt::Result> batch = model.predict(batch_input);
    check(batch.size() == 2, "batch size");
    for (const flt::Result& r : batch) check(r.ok() && agree(r.value(), single), "batch = single");
    for (std::size_t t = 0; t < single.size(); ++t) {
      check(std::isfinite(single.values[t]), "water: finite value");
      std::printf("%-28s %s = %.6f %s\n", water.title.c_str(), model.targets()[t].name.c_str(),
                  single.values[t], model.targets()[t].unit.c_str());
    }
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
