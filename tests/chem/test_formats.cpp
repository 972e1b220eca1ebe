// Formats by name, element symbols, number parsing and the geometry check (grid fast path
// against the all-pairs reference).
#include "chem/elements.hpp"
#include "chem/format.hpp"
#include "chem/point_set.hpp"
#include "core/error.hpp"
#include "core/random.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

using namespace flt::chem;

TEST_CASE("formats from names and paths", "[chem]") {
  CHECK(format_from_path("a/b.sdf") == Format::sdf);
  CHECK(format_from_path("a/b.MOL") == Format::sdf);
  CHECK(format_from_path("x.sdf.gz") == Format::sdf);
  CHECK(format_from_path("dsgdb9nsd_000001.xyz") == Format::xyz);
  CHECK(format_from_path("t.extxyz") == Format::extxyz);
  CHECK(format_from_path("out.csv") == Format::csv);
  CHECK(format_from_path("dir.v1/noext") == Format::unknown);
  CHECK(format_from_name("QM9") == Format::qm9);
  CHECK(format_from_name("PDB") == Format::pdb);
  CHECK(format_from_path("1abc.ent") == Format::pdb);
  CHECK_THROWS_AS(format_from_name("mmcif"), flt::InvalidArgument);
  CHECK(is_archive("dsgdb9nsd.xyz.tar.bz2"));
  CHECK(is_archive("x.tgz"));
  CHECK(is_archive("x.TAR.XZ"));
  CHECK(is_archive("x.tar.zst"));
  CHECK(is_archive("x.zip"));
  CHECK(is_archive("x.7z"));
  CHECK(is_archive("x.cpio"));
  CHECK_FALSE(is_archive("x.sdf.gz"));
  CHECK_FALSE(is_archive("x.xz"));
  CHECK_FALSE(is_archive("zip.sdf"));
}

TEST_CASE("element symbols", "[chem]") {
  CHECK(atomic_number("C") == 6);
  CHECK(atomic_number("Cl") == 17);
  CHECK(atomic_number("CL") == 17);
  CHECK(atomic_number("og") == 118);
  CHECK(atomic_number("D") == 1);
  CHECK(atomic_number("8") == 8);
  CHECK_FALSE(atomic_number("Xx"));
  CHECK_FALSE(atomic_number("Mv"));
  CHECK_FALSE(atomic_number("0"));
  CHECK_FALSE(atomic_number("119"));
  CHECK_FALSE(atomic_number(""));
  CHECK_FALSE(atomic_number("C1"));
  for (int z = 1; z <= kMaxAtomicNumber; ++z) CHECK(atomic_number(element_symbol(z)) == z);
  CHECK_THROWS_AS(element_symbol(0), flt::InvalidArgument);
}

TEST_CASE("numbers, including Mathematica *^ exponents", "[chem]") {
  CHECK(parse_number("1.5") == 1.5);
  CHECK(parse_number(" -0.25\t") == -0.25);
  CHECK(parse_number("+3") == 3.0);
  CHECK(parse_number("2.1997*^-6") == 2.1997e-6);
  CHECK(parse_number("-1.3*^+2") == -130.0);
  CHECK(parse_number("0.") == 0.0);
  CHECK(parse_number("1e3") == 1000.0);
  CHECK_FALSE(parse_number("1.5x"));
  CHECK_FALSE(parse_number("*^3"));
  CHECK_FALSE(parse_number("1*^"));
  CHECK_FALSE(parse_number(""));
  CHECK_FALSE(parse_number("++1"));
  CHECK(std::isnan(*parse_number("nan")));
}

namespace {
std::optional<std::string> brute_force(const PointSet& p, double min_distance) {
  for (flt::Index i = 0; i < p.positions.rows(); ++i) {
    for (flt::Index c = 0; c < 3; ++c) {
      if (!std::isfinite(p.positions(i, c))) return "non-finite";
    }
  }
  for (flt::Index i = 0; i < p.positions.rows(); ++i) {
    for (flt::Index j = 0; j < i; ++j) {
      if ((p.positions.row(i) - p.positions.row(j)).norm() < min_distance) return "close";
    }
  }
  return std::nullopt;
}
}  // namespace

TEST_CASE("geometry check: grid agrees with the all-pairs reference", "[chem]") {
  flt::Rng rng(7);
  int close_grid = 0, fine_grid = 0;
  for (int trial = 0; trial < 300; ++trial) {
    PointSet p;
    // Small molecules take the all-pairs path, n > 96 the cell grid.
    const int n = 2 + (trial * 37) % 400;
    p.positions.resize(n, 3);
    const double side = std::cbrt(static_cast<double>(n)) * (0.3 + 0.1 * (trial % 20));
    for (int i = 0; i < n; ++i) {
      for (int c = 0; c < 3; ++c) p.positions(i, c) = (rng.uniform() - 0.5) * side;
    }
    const bool fast = check_geometry(p, 0.1).has_value();
    const bool slow = brute_force(p, 0.1).has_value();
    CHECK(fast == slow);
    if (n > 96) (fast ? close_grid : fine_grid) += 1;
  }
  CHECK(close_grid > 10);  // both outcomes exercised on the grid path
  CHECK(fine_grid > 10);
  PointSet p;
  p.positions.resize(3, 3);
  p.positions << 0, 0, 0, 1, 0, 0, 1.05, 0, 0;
  auto why = check_geometry(p, 0.1);
  REQUIRE(why);
  CHECK(why->find("atoms 2 and 3") != std::string::npos);
  CHECK_FALSE(check_geometry(p, 0.0));
  p.positions(1, 2) = std::numeric_limits<double>::infinity();
  why = check_geometry(p, 0.1);
  REQUIRE(why);
  CHECK(why->find("atom 2 has a non-finite coordinate") != std::string::npos);
  p.positions(1, 2) = 1e300;  // huge but finite: no overflow in the grid, and no false alarm
  CHECK_FALSE(check_geometry(p, 0.1).has_value());
  p.positions(0, 2) = 1e300;  // atoms 1 and 2 coincide far away
  p.positions(0, 0) = 1.0;
  CHECK(check_geometry(p, 0.1).has_value());
}
