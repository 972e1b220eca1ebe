#include "chem/point_set.hpp"

#include "core/error.hpp"
#include "core/text.hpp"
#include "io/units.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <unordered_map>

namespace flt::chem {

namespace {
constexpr Index kAllPairsMaxAtoms = 96;
}  // namespace

const Property* PointSet::property(std::string_view key) const noexcept {
  for (const auto& p : properties) {
    if (p.key == key) return &p;
  }
  return nullptr;
}

std::optional<double> PointSet::number(std::string_view key) const noexcept {
  const Property* p = property(key);
  if (p == nullptr) return std::nullopt;
  return p->number;
}

const AtomColumn* PointSet::column(std::string_view name) const noexcept {
  for (const auto& c : atom_columns) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

void PointSet::set_property(std::string key, std::string value, std::string unit) {
  for (auto& p : properties) {
    if (p.key == key) {
      p.number = parse_number(value);
      p.value = std::move(value);
      p.unit = std::move(unit);
      return;
    }
  }
  Property p;
  p.number = parse_number(value);
  p.key = std::move(key);
  p.value = std::move(value);
  p.unit = std::move(unit);
  properties.push_back(std::move(p));
}

std::optional<double> parse_number(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t' || text.front() == '\r')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) {
    text.remove_suffix(1);
  }
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty() || text.front() == '+') return std::nullopt;
  // Mathematica's "1.5*^-6" (QM9) is 1.5e-6: parse mantissa and exponent separately.
  const auto star = text.find("*^");
  double value = 0.0;
  if (star != std::string_view::npos) {
    const auto mantissa = text.substr(0, star);
    const auto exponent = text.substr(star + 2);
    if (mantissa.empty() || exponent.empty()) return std::nullopt;
    double m = 0.0;
    auto r = std::from_chars(mantissa.data(), mantissa.data() + mantissa.size(), m);
    if (r.ec != std::errc() || r.ptr != mantissa.data() + mantissa.size()) return std::nullopt;
    std::string_view e = exponent;
    if (e.front() == '+') e.remove_prefix(1);
    int exp10 = 0;
    auto re = std::from_chars(e.data(), e.data() + e.size(), exp10);
    if (re.ec != std::errc() || re.ptr != e.data() + e.size()) return std::nullopt;
    // Build "m e exp" text so rounding matches a decimal literal exactly.
    std::string literal(mantissa);
    literal += 'e';
    literal += std::to_string(exp10);
    auto rl = std::from_chars(literal.data(), literal.data() + literal.size(), value);
    if (rl.ptr != literal.data() + literal.size()) return std::nullopt;
    if (rl.ec == std::errc::result_out_of_range) return std::nullopt;
    return value;
  }
  auto r = std::from_chars(text.data(), text.data() + text.size(), value);
  if (r.ec != std::errc() || r.ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<std::string> check_geometry(const PointSet& points, double min_distance,
                                          const std::function<std::string(Index)>& atom_name) {
  const Index n = points.positions.rows();
  auto atom = [&](Index i) {
    std::string text = std::to_string(i + 1);
    if (atom_name) text += " (" + atom_name(i) + ")";
    return text;
  };
  for (Index i = 0; i < n; ++i) {
    for (Index c = 0; c < 3; ++c) {
      if (!std::isfinite(points.positions(i, c))) {
        std::ostringstream out;
        out << "atom " << atom(i) << " has a non-finite coordinate (" << points.positions(i, c)
            << ")";
        return out.str();
      }
    }
  }
  if (!(min_distance > 0.0) || n < 2) return std::nullopt;
  const double min2 = min_distance * min_distance;
  auto too_close = [&](Index i, Index j, double d2) {
    std::ostringstream out;
    out << "atoms " << atom(j) << " and " << atom(i) << " are " << std::sqrt(d2)
        << " Angstrom apart (closer than " << min_distance << ")";
    return out.str();
  };
  if (n <= kAllPairsMaxAtoms) {
    // Small molecules: all pairs is cheaper than building the grid.
    for (Index i = 1; i < n; ++i) {
      for (Index j = 0; j < i; ++j) {
        const double d2 = (points.positions.row(i) - points.positions.row(j)).squaredNorm();
        if (d2 < min2) return too_close(i, j, d2);
      }
    }
    return std::nullopt;
  }
  // Cell grid with cell edge min_distance: two atoms closer than min_distance lie in the same or
  // neighbouring cells, so each atom is compared with the atoms of 27 cells only.
  const double inv = 1.0 / min_distance;
  auto cell_of = [&](Index i, int axis) {
    // Clamped so that huge (finite) coordinates cannot overflow the integer conversion.
    const double cell = std::clamp(std::floor(points.positions(i, axis) * inv), -4e18, 4e18);
    return static_cast<std::int64_t>(cell);
  };
  auto key = [](std::int64_t x, std::int64_t y, std::int64_t z) {
    // Mix three cell indices into one hash key; collisions only cost extra comparisons.
    return static_cast<std::uint64_t>(x) * 0x9E3779B97F4A7C15ULL ^
           static_cast<std::uint64_t>(y) * 0xC2B2AE3D27D4EB4FULL ^
           static_cast<std::uint64_t>(z) * 0x165667B19E3779F9ULL;
  };
  std::unordered_multimap<std::uint64_t, Index> grid;
  grid.reserve(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    const std::int64_t cx = cell_of(i, 0), cy = cell_of(i, 1), cz = cell_of(i, 2);
    for (std::int64_t dx = -1; dx <= 1; ++dx) {
      for (std::int64_t dy = -1; dy <= 1; ++dy) {
        for (std::int64_t dz = -1; dz <= 1; ++dz) {
          auto range = grid.equal_range(key(cx + dx, cy + dy, cz + dz));
          for (auto it = range.first; it != range.second; ++it) {
            const Index j = it->second;
            const double d2 = (points.positions.row(i) - points.positions.row(j)).squaredNorm();
            if (d2 < min2) return too_close(i, j, d2);
          }
        }
      }
    }
    grid.emplace(key(cx, cy, cz), i);
  }
  return std::nullopt;
}

std::pair<std::string, std::string> split_key_unit(const std::string& name) {
  // io::split_unit_suffix, the parser of the label CSV headers, except that a name it cannot
  // split (no "[unit]" at the end, brackets in the middle, nothing before the bracket) stays a
  // key as it is: a molecule file's tag or column name is never an error.
  try {
    auto [key, unit] = io::split_unit_suffix(name);
    if (!key.empty()) return {std::move(key), std::string(flt::trim(unit))};
  } catch (const ConfigError&) {
  }
  return {name, {}};
}

}  // namespace flt::chem
