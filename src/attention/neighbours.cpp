// Neighbour lists within a cutoff (see neighbours.hpp).
//
// Both the fast paths and the reference test a pair with the same squared_distance() and the strict
// sqrt(d2) < cutoff; the fast paths compare d2 <= d2_max instead (the largest double whose
// correctly rounded square root is below the cutoff). Large sets use a cell list: cells of side
// >= cutoff, keys row-major over the box grid, so the 27 neighbour cells are 9 contiguous ranges.
// The list is built in passes over work units fixed by the input (counts, prefix sum, sources,
// targets), each row written by one unit: bitwise the same for any thread count and schedule.
// Cell sizing, sparse boxes, work units and measured speed: docs/attention.md, "Neighbour lists".
#include "attention/neighbours.hpp"

#include "core/error.hpp"
#include "core/parallel.hpp"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <sstream>
#include <string>
#include <utility>

namespace flt::attn {
namespace {

constexpr std::int64_t kMaxRows = std::numeric_limits<std::int32_t>::max();
// The box grid is dense when it has at most kDenseCellsPerAtom * n + kDenseCellsExtra cells.
constexpr double kDenseCellsPerAtom = 4.0;
constexpr double kDenseCellsExtra = 64.0;
// Largest number of cell keys of a box grid (keys are int64).
constexpr double kMaxKeys = 0x1.0p60;
// Rows with at most this many neighbours are sorted by rank (see sort_distinct).
constexpr std::int64_t kRankSortMax = 128;
// Below this many distance evaluations the passes run on one thread: a parallel region costs
// more than it saves (a batch of 32 QM9 molecules needs about 1e4).
constexpr double kParallelWork = 1e5;
// Rows per chunk when writing the targets.
constexpr Index kTargetChunk = 16 * kRowChunk;

inline std::size_t uz(Index i) noexcept { return static_cast<std::size_t>(i); }

// Cache hints (no effect on results).
inline void prefetch_read(const void* p) noexcept {
#if defined(__GNUC__)
  __builtin_prefetch(p, 0);
#else
  (void)p;
#endif
}
inline void prefetch_write(const void* p) noexcept {
#if defined(__GNUC__)
  __builtin_prefetch(p, 1);
#else
  (void)p;
#endif
}

// The one squared distance both paths use. Explicit fused multiply-adds where they are fast (the
// x86-64-v3 build): GCC contracts a*a + b*b + c*c by default in C++, and how it contracts may
// differ between call sites; std::fma leaves it no choice. Without fast FMA nothing is contracted.
inline double squared_distance(double dx, double dy, double dz) noexcept {
#if defined(FP_FAST_FMA) || defined(__FP_FAST_FMA)
  return std::fma(dz, dz, std::fma(dy, dy, dx * dx));
#else
  return dx * dx + dy * dy + dz * dz;
#endif
}

// The largest double d2_max with sqrt(d2_max) < cutoff (sqrt is correctly rounded, hence
// monotone): d2 <= d2_max iff sqrt(d2) < cutoff, for every double d2 >= 0 including +inf.
double squared_threshold(double cutoff) {
  const double inf = std::numeric_limits<double>::infinity();
  double t = cutoff * cutoff;  // within an ulp or two of the answer (or inf / 0 at the extremes)
  while (t > 0.0 && !(std::sqrt(t) < cutoff)) t = std::nextafter(t, 0.0);
  while (true) {
    const double up = std::nextafter(t, inf);
    if (!(std::sqrt(up) < cutoff)) break;
    t = up;
  }
  return t;
}

std::string describe(double v) {
  std::ostringstream out;
  out.precision(17);
  out << v;
  return out.str();
}

void validate(const char* fn, const RaggedIndex& sets, ConstMatRef<double> coords, double cutoff) {
  const std::string where = std::string(fn) + ": ";
  require(std::isfinite(cutoff) && cutoff > 0.0,
          where + "the cutoff must be positive and finite, got " + describe(cutoff));
  const Index n = sets.total_rows();
  require(n <= kMaxRows, where + "too many rows (" + std::to_string(n) +
                             "): at most 2^31 - 1 = 2147483647 (pair indices are 32-bit)");
  require(coords.cols() == 3 && coords.rows() == n,
          where + "coords must be N x 3 with N = " + std::to_string(n) + " rows of the sets, got " +
              std::to_string(coords.rows()) + " x " + std::to_string(coords.cols()));
  for (Index s = 0; s < sets.num_sets(); ++s) {
    for (Index i = sets.begin(s); i < sets.end(s); ++i) {
      if (std::isfinite(coords(i, 0)) && std::isfinite(coords(i, 1)) && std::isfinite(coords(i, 2)))
        continue;
      throw InvalidArgument(where + "non-finite coordinate in row " + std::to_string(i) + " (atom " +
                            std::to_string(i - sets.begin(s)) + " of set " + std::to_string(s) +
                            "): (" + describe(coords(i, 0)) + ", " + describe(coords(i, 1)) + ", " +
                            describe(coords(i, 2)) + ")");
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Cell grid of one large set.

using Range = std::pair<std::int32_t, std::int32_t>;  // [begin, end) in cell order

struct CellGrid {
  std::vector<std::int32_t> row;        // global row of each atom, in cell order
  std::vector<double> x, y, z;          // coordinates in cell order
  std::vector<std::int64_t> cell_key;   // occupied cells, increasing key
  std::vector<std::int32_t> cell_start; // their first atom in cell order (+ end sentinel)
  std::int64_t gx = 1, gy = 1, gz = 1;  // box grid dimensions
  bool dense = false;
  std::vector<std::int32_t> key_start;  // dense: first atom of every key (+ end sentinel)
  Index max_candidates = 0;             // most atoms in the 27 cells around any occupied cell
  double work = 0.0;                    // distance evaluations of one pass

  Index num_cells() const noexcept { return static_cast<Index>(cell_key.size()); }

  // Atoms whose cells have keys in [k0, k1].
  Range key_range(std::int64_t k0, std::int64_t k1) const noexcept {
    if (dense) return {key_start[static_cast<std::size_t>(k0)], key_start[static_cast<std::size_t>(k1 + 1)]};
    const auto b = std::lower_bound(cell_key.begin(), cell_key.end(), k0);
    const auto e = std::lower_bound(b, cell_key.end(), k1 + 1);
    return {cell_start[static_cast<std::size_t>(b - cell_key.begin())],
            cell_start[static_cast<std::size_t>(e - cell_key.begin())]};
  }

  // The 9 ranges covering the 27 cells around occupied cell c; returns how many are non-empty.
  int neighbour_ranges(Index c, std::array<Range, 9>& out) const noexcept {
    const std::int64_t key = cell_key[uz(c)];
    const std::int64_t cx = key / (gy * gz), cy = (key / gz) % gy, cz = key % gz;
    const std::int64_t z0 = std::max<std::int64_t>(cz - 1, 0), z1 = std::min<std::int64_t>(cz + 1, gz - 1);
    int count = 0;
    for (std::int64_t ix = std::max<std::int64_t>(cx - 1, 0); ix <= std::min<std::int64_t>(cx + 1, gx - 1); ++ix) {
      for (std::int64_t iy = std::max<std::int64_t>(cy - 1, 0); iy <= std::min<std::int64_t>(cy + 1, gy - 1); ++iy) {
        const std::int64_t base = (ix * gy + iy) * gz;
        const Range r = key_range(base + z0, base + z1);
        if (r.second > r.first) out[static_cast<std::size_t>(count++)] = r;
      }
    }
    return count;
  }
};

// Builds the grid of set s. Returns false when the set's extent is not finite (coordinates near
// the overflow threshold): that set is then searched pair by pair.
bool build_grid(const RaggedIndex& sets, Index s, ConstMatRef<double> coords, double cutoff, CellGrid& g) {
  const Index b = sets.begin(s), n = sets.size(s);
  std::array<double, 3> lo{}, extent{};
  for (int a = 0; a < 3; ++a) {
    double mn = coords(b, a), mx = coords(b, a);
    for (Index i = b + 1; i < b + n; ++i) {
      mn = std::min(mn, coords(i, a));
      mx = std::max(mx, coords(i, a));
    }
    lo[static_cast<std::size_t>(a)] = mn;
    extent[static_cast<std::size_t>(a)] = mx - mn;
    if (!std::isfinite(mx - mn)) return false;
  }
  const double max_extent = std::max({extent[0], extent[1], extent[2]});
  // Side with a margin for the rounding of the cell coordinates (see the top of the file).
  double side = cutoff * (1.0 + 1e-6) + max_extent * 1e-14;
  std::array<double, 3> dims{};
  double inv = 0.0;
  while (true) {
    inv = 1.0 / side;  // 0 for an infinite side: one cell
    double keys = 1.0;
    for (std::size_t a = 0; a < 3; ++a) {
      dims[a] = std::floor(extent[a] * inv) + 1.0;
      keys *= dims[a];
    }
    if (keys <= kMaxKeys) break;
    side *= std::max(1.01, 1.01 * std::cbrt(keys / kMaxKeys));
  }
  g.gx = static_cast<std::int64_t>(dims[0]);
  g.gy = static_cast<std::int64_t>(dims[1]);
  g.gz = static_cast<std::int64_t>(dims[2]);
  const double total_keys = dims[0] * dims[1] * dims[2];
  g.dense = total_keys <= kDenseCellsPerAtom * static_cast<double>(n) + kDenseCellsExtra;

  std::vector<std::int64_t> key(uz(n));
  for (Index i = 0; i < n; ++i) {
    std::array<std::int64_t, 3> c{};
    for (std::size_t a = 0; a < 3; ++a) {
      const double u = (coords(b + i, static_cast<Index>(a)) - lo[a]) * inv;  // >= 0
      c[a] = std::min(static_cast<std::int64_t>(u), static_cast<std::int64_t>(dims[a]) - 1);
    }
    key[uz(i)] = (c[0] * g.gy + c[1]) * g.gz + c[2];
  }

  // order[p] = local index of the p-th atom in cell order (by key, then index).
  std::vector<std::int32_t> order(uz(n));
  if (g.dense) {
    const auto keys = static_cast<std::size_t>(total_keys);
    g.key_start.assign(keys + 1, 0);
    for (Index i = 0; i < n; ++i) ++g.key_start[static_cast<std::size_t>(key[uz(i)]) + 1];
    for (std::size_t k = 0; k < keys; ++k) g.key_start[k + 1] += g.key_start[k];
    std::vector<std::int32_t> next(g.key_start.begin(), g.key_start.end() - 1);
    for (Index i = 0; i < n; ++i) order[uz(next[static_cast<std::size_t>(key[uz(i)])]++)] = static_cast<std::int32_t>(i);
  } else {
    for (Index i = 0; i < n; ++i) order[uz(i)] = static_cast<std::int32_t>(i);
    std::sort(order.begin(), order.end(), [&](std::int32_t p, std::int32_t q) {
      const std::int64_t kp = key[static_cast<std::size_t>(p)], kq = key[static_cast<std::size_t>(q)];
      return kp < kq || (kp == kq && p < q);
    });
  }

  g.row.resize(uz(n));
  g.x.resize(uz(n));
  g.y.resize(uz(n));
  g.z.resize(uz(n));
  g.cell_key.clear();
  g.cell_start.clear();
  for (Index p = 0; p < n; ++p) {
    const std::int32_t i = order[uz(p)];
    const std::int64_t k = key[static_cast<std::size_t>(i)];
    if (g.cell_key.empty() || g.cell_key.back() != k) {
      g.cell_key.push_back(k);
      g.cell_start.push_back(static_cast<std::int32_t>(p));
    }
    g.row[uz(p)] = static_cast<std::int32_t>(b + i);
    g.x[uz(p)] = coords(b + i, 0);
    g.y[uz(p)] = coords(b + i, 1);
    g.z[uz(p)] = coords(b + i, 2);
  }
  g.cell_start.push_back(static_cast<std::int32_t>(n));

  g.max_candidates = 0;
  g.work = 0.0;
  std::array<Range, 9> ranges{};
  for (Index c = 0; c < g.num_cells(); ++c) {
    const int m = g.neighbour_ranges(c, ranges);
    Index candidates = 0;
    for (int r = 0; r < m; ++r) candidates += ranges[static_cast<std::size_t>(r)].second - ranges[static_cast<std::size_t>(r)].first;
    g.max_candidates = std::max(g.max_candidates, candidates);
    g.work += static_cast<double>(candidates) * (g.cell_start[uz(c) + 1] - g.cell_start[uz(c)]);
  }
  return true;
}

// Number of atoms p in [begin, end) with |r - r_p|^2 <= d2_max (vectorisable).
inline std::int64_t count_within(const double* __restrict x, const double* __restrict y,
                                 const double* __restrict z, std::int32_t begin, std::int32_t end,
                                 double xa, double ya, double za, double d2_max) noexcept {
  std::int64_t count = 0;
  for (std::int32_t p = begin; p < end; ++p) {
    const double d2 = squared_distance(xa - x[p], ya - y[p], za - z[p]);
    count += d2 <= d2_max ? 1 : 0;
  }
  return count;
}

// ------------------------------------------------------------------------------------------------
// Work units and the two passes.

struct Unit {
  Index grid = -1;    // -1: small sets [first, last) searched pair by pair; else cells [first, last)
  Index first = 0;
  Index last = 0;
};

struct Plan {
  std::vector<CellGrid> grids;
  std::vector<Unit> units;
  Index max_candidates = 0;
  double work = 0.0;  // distance evaluations of one pass
};

Plan make_plan(const RaggedIndex& sets, ConstMatRef<double> coords, double cutoff, Index brute_force_limit) {
  Plan plan;
  Unit small{-1, 0, 0};
  Index small_rows = 0;
  auto close_small = [&]() {
    if (small.last > small.first) plan.units.push_back(small);
    small_rows = 0;
  };
  for (Index s = 0; s < sets.num_sets(); ++s) {
    const Index n = sets.size(s);
    bool searched_by_cells = false;
    if (n > brute_force_limit && n > 1) {
      CellGrid g;
      if (build_grid(sets, s, coords, cutoff, g)) {
        searched_by_cells = true;
        close_small();
        const auto id = static_cast<Index>(plan.grids.size());
        Index c0 = 0, atoms = 0;
        for (Index c = 0; c < g.num_cells(); ++c) {
          atoms += g.cell_start[uz(c) + 1] - g.cell_start[uz(c)];
          if (atoms >= kRowChunk || c + 1 == g.num_cells()) {
            plan.units.push_back({id, c0, c + 1});
            c0 = c + 1;
            atoms = 0;
          }
        }
        plan.max_candidates = std::max(plan.max_candidates, g.max_candidates);
        plan.work += g.work;
        plan.grids.push_back(std::move(g));
      }
    }
    if (searched_by_cells) {
      small = {-1, s + 1, s + 1};
      continue;
    }
    if (small.last == small.first) small.first = s;
    small.last = s + 1;
    small_rows += n;
    plan.work += static_cast<double>(n) * static_cast<double>(n);
    if (small_rows >= kRowChunk) {
      close_small();
      small = {-1, s + 1, s + 1};
    }
  }
  close_small();
  return plan;
}

struct Pass {
  const RaggedIndex& sets;
  ConstMatRef<double> coords;
  double d2_max;
  bool include_self;
};

// Pass 1 over a unit of small sets: counts[i + 1] = number of pairs of row i.
void count_small(const Pass& ps, const Unit& u, std::int64_t* counts) {
  for (Index s = u.first; s < u.last; ++s) {
    const Index b = ps.sets.begin(s), e = ps.sets.end(s);
    for (Index i = b; i < e; ++i) {
      const double xi = ps.coords(i, 0), yi = ps.coords(i, 1), zi = ps.coords(i, 2);
      std::int64_t count = 0;
      for (Index j = b; j < e; ++j) {
        const double d2 = squared_distance(xi - ps.coords(j, 0), yi - ps.coords(j, 1), zi - ps.coords(j, 2));
        count += (d2 <= ps.d2_max && (j != i || ps.include_self)) ? 1 : 0;
      }
      counts[i + 1] = count;
    }
  }
}

// Pass 2 over a unit of small sets: sources of every row, ascending by construction.
void fill_small(const Pass& ps, const Unit& u, const std::int64_t* offsets, std::int32_t* source) {
  for (Index s = u.first; s < u.last; ++s) {
    const Index b = ps.sets.begin(s), e = ps.sets.end(s);
    for (Index i = b; i < e; ++i) {
      const double xi = ps.coords(i, 0), yi = ps.coords(i, 1), zi = ps.coords(i, 2);
      std::int64_t p = offsets[i];
      for (Index j = b; j < e; ++j) {
        const double d2 = squared_distance(xi - ps.coords(j, 0), yi - ps.coords(j, 1), zi - ps.coords(j, 2));
        if (d2 <= ps.d2_max && (j != i || ps.include_self)) source[p++] = static_cast<std::int32_t>(j);
      }
    }
  }
}

// Pass 1 over a unit of cells (rows in cell order: the count of the next row is prefetched).
void count_cells(const Pass& ps, const CellGrid& g, const Unit& u, std::int64_t* counts) {
  std::array<Range, 9> ranges{};
  const std::int64_t self = ps.include_self ? 0 : 1;
  const std::int32_t cells_end = g.cell_start[uz(u.last)];
  for (Index c = u.first; c < u.last; ++c) {
    const int m = g.neighbour_ranges(c, ranges);
    for (std::int32_t a = g.cell_start[uz(c)]; a < g.cell_start[uz(c) + 1]; ++a) {
      const auto sa = static_cast<std::size_t>(a);
      if (a + 1 < cells_end) prefetch_write(counts + g.row[sa + 1] + 1);
      std::int64_t count = 0;
      for (int r = 0; r < m; ++r) {
        const Range& rg = ranges[static_cast<std::size_t>(r)];
        count += count_within(g.x.data(), g.y.data(), g.z.data(), rg.first, rg.second, g.x[sa], g.y[sa], g.z[sa],
                              ps.d2_max);
      }
      counts[g.row[sa] + 1] = count - self;  // the atom itself (d2 = 0) is always counted
    }
  }
}

// Sorts k distinct values v[0, k) in place (all < INT32_MAX; v has room for 8 more). Up to
// kRankSortMax values: by rank, eight values at a time against all k (k^2 comparisons that
// vectorise without branches; a few times faster than std::sort for the ~50 neighbours of a row).
inline void sort_distinct(std::int32_t* v, std::int64_t k, std::int32_t* tmp) noexcept {
  if (k > kRankSortMax) {
    std::sort(v, v + k);
    return;
  }
  for (std::int64_t l = k; l < k + 8; ++l) v[l] = std::numeric_limits<std::int32_t>::max();  // padding
  for (std::int64_t i0 = 0; i0 < k; i0 += 8) {
    std::int32_t rank[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int32_t vj = v[j];
      for (int l = 0; l < 8; ++l) rank[l] += vj < v[i0 + l] ? 1 : 0;
    }
    for (int l = 0; l < 8 && i0 + l < k; ++l) tmp[rank[l]] = v[i0 + l];
  }
  std::copy(tmp, tmp + k, v);
}

// Pass 2 over a unit of cells. scratch: stride_for(g.max_candidates) entries for this thread.
// Rows are visited in cell order, so their slices of the output lie at random places: the slice of
// the next atom is prefetched while this one is computed (hides the cache misses of the writes).
std::size_t stride_for(Index max_candidates) { return 3 * static_cast<std::size_t>(max_candidates) + 16; }

void fill_cells(const Pass& ps, const CellGrid& g, const Unit& u, const std::int64_t* offsets, std::int32_t* source,
                std::int32_t* scratch) {
  std::array<Range, 9> ranges{};
  const std::int32_t* rows = g.row.data();
  const double *x = g.x.data(), *y = g.y.data(), *z = g.z.data();
  const auto mc = static_cast<std::size_t>(g.max_candidates);
  std::int32_t* found = scratch;             // the row's sources, unsorted (+ 8 for the sort's padding)
  std::int32_t* flag = scratch + mc + 8;     // hit flags of one range
  std::int32_t* tmp = flag + mc;             // sort buffer
  const std::int32_t cells_end = g.cell_start[uz(u.last)];
  for (Index c = u.first; c < u.last; ++c) {
    const int m = g.neighbour_ranges(c, ranges);
    for (std::int32_t a = g.cell_start[uz(c)]; a < g.cell_start[uz(c) + 1]; ++a) {
      const auto sa = static_cast<std::size_t>(a);
      if (a + 2 < cells_end) prefetch_read(offsets + rows[sa + 2]);  // offsets two rows ahead
      if (a + 1 < cells_end) {
        const std::int32_t next = rows[sa + 1];
        const std::int64_t q0 = offsets[next], q1 = offsets[next + 1];
        for (std::int64_t q = q0; q < q1; q += 16) prefetch_write(source + q);  // 16 pairs: 64 bytes
        if (q1 > q0) prefetch_write(source + q1 - 1);
      }
      const double xa = x[sa], ya = y[sa], za = z[sa];
      std::int64_t k = 0;
      for (int r = 0; r < m; ++r) {
        const std::int32_t b = ranges[static_cast<std::size_t>(r)].first;
        const std::int32_t e = ranges[static_cast<std::size_t>(r)].second;
        // Distances (vectorised), then a branch-free compaction of the hits.
        for (std::int32_t p = b; p < e; ++p) {
          const double d2 = squared_distance(xa - x[p], ya - y[p], za - z[p]);
          flag[p - b] = d2 <= ps.d2_max ? 1 : 0;
        }
        if (!ps.include_self && a >= b && a < e) flag[a - b] = 0;
        for (std::int32_t p = b; p < e; ++p) {
          found[k] = rows[p];
          k += flag[p - b];
        }
      }
      sort_distinct(found, k, tmp);  // distinct: the 9 ranges are disjoint
      std::copy(found, found + k, source + offsets[rows[sa]]);
    }
  }
}

NeighbourList empty_list(Index n, double cutoff, bool include_self) {
  NeighbourList list;
  list.cutoff = cutoff;
  list.include_self = include_self;
  list.offsets.assign(uz(n) + 1, 0);
  return list;
}

}  // namespace

NeighbourList build_neighbour_list(const RaggedIndex& sets, ConstMatRef<double> coords, double cutoff,
                                   bool include_self, Index brute_force_limit) {
  validate("build_neighbour_list", sets, coords, cutoff);
  require(brute_force_limit >= 0, "build_neighbour_list: brute_force_limit must be >= 0, got " +
                                      std::to_string(brute_force_limit));
  const Index n = sets.total_rows();
  NeighbourList list = empty_list(n, cutoff, include_self);
  if (n == 0) return list;

  const Plan plan = make_plan(sets, coords, cutoff, brute_force_limit);
  const Pass ps{sets, coords, squared_threshold(cutoff), include_self};
  const auto units = static_cast<Index>(plan.units.size());
  const bool parallel = units > 1 && plan.work > kParallelWork;
  std::int64_t* offsets = list.offsets.data();

  // Pass 1: pairs per row (offsets[i + 1]), then the prefix sum.
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (Index t = 0; t < units; ++t) {
    const Unit& u = plan.units[uz(t)];
    if (u.grid < 0) {
      count_small(ps, u, offsets);
    } else {
      count_cells(ps, plan.grids[uz(u.grid)], u, offsets);
    }
  }
  for (Index i = 0; i < n; ++i) offsets[i + 1] += offsets[i];

  // Allocate first (may throw), then zero-fill the two arrays on two threads: a resize within the
  // capacity neither allocates nor throws.
  const auto pairs = static_cast<std::size_t>(offsets[n]);
  list.source.reserve(pairs);
  list.target.reserve(pairs);
#pragma omp parallel sections if (parallel)
  {
#pragma omp section
    list.source.resize(pairs);
#pragma omp section
    list.target.resize(pairs);
  }
  const int threads = std::max(1, omp_get_max_threads());
  const std::size_t stride = stride_for(plan.max_candidates);  // per thread, see fill_cells
  std::vector<std::int32_t> scratch(static_cast<std::size_t>(threads) * stride);
  std::int32_t* source = list.source.data();
  std::int32_t* target = list.target.data();

  // Pass 2: every row's sources at its offsets.
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (Index t = 0; t < units; ++t) {
    const Unit& u = plan.units[uz(t)];
    if (u.grid < 0) {
      fill_small(ps, u, offsets, source);
    } else {
      std::int32_t* buffer = scratch.data() + static_cast<std::size_t>(omp_get_thread_num()) * stride;
      fill_cells(ps, plan.grids[uz(u.grid)], u, offsets, source, buffer);
    }
  }
  // Targets: row i owns [offsets[i], offsets[i + 1]) (sequential writes, in chunks of rows).
  const Index target_chunks = chunk_count(n, kTargetChunk);
#pragma omp parallel for schedule(static) if (parallel)
  for (Index c = 0; c < target_chunks; ++c) {
    for (Index i = c * kTargetChunk; i < std::min(n, (c + 1) * kTargetChunk); ++i)
      std::fill(target + offsets[i], target + offsets[i + 1], static_cast<std::int32_t>(i));
  }
  return list;
}

NeighbourList build_neighbour_list_reference(const RaggedIndex& sets, ConstMatRef<double> coords, double cutoff,
                                             bool include_self) {
  validate("build_neighbour_list_reference", sets, coords, cutoff);
  const Index n = sets.total_rows();
  NeighbourList list = empty_list(n, cutoff, include_self);
  for (Index s = 0; s < sets.num_sets(); ++s) {
    for (Index i = sets.begin(s); i < sets.end(s); ++i) {
      for (Index j = sets.begin(s); j < sets.end(s); ++j) {
        const bool neighbour =
            i == j ? include_self
                   : std::sqrt(squared_distance(coords(i, 0) - coords(j, 0), coords(i, 1) - coords(j, 1),
                                                coords(i, 2) - coords(j, 2))) < cutoff;
        if (!neighbour) continue;
        list.source.push_back(static_cast<std::int32_t>(j));
        list.target.push_back(static_cast<std::int32_t>(i));
      }
      list.offsets[uz(i) + 1] = static_cast<std::int64_t>(list.source.size());
    }
  }
  return list;
}

bool set_is_complete(const NeighbourList& list, const RaggedIndex& sets, Index set) {
  require(set >= 0 && set < sets.num_sets(), "set_is_complete: set " + std::to_string(set) +
                                                 " out of range (" + std::to_string(sets.num_sets()) + " sets)");
  require(list.num_rows() == sets.total_rows(),
          "set_is_complete: the list has " + std::to_string(list.num_rows()) + " rows, the sets " +
              std::to_string(sets.total_rows()));
  const Index n = sets.size(set);
  const std::int64_t expected = list.include_self ? n : n - 1;
  for (Index i = sets.begin(set); i < sets.end(set); ++i)
    if (list.offsets[uz(i) + 1] - list.offsets[uz(i)] != expected) return false;
  return true;
}

namespace {
// The 21 low bits of v spread to every third bit of 63 (one axis of a Morton key).
std::uint64_t spread_bits(std::uint64_t v) noexcept {
  v &= 0x1fffff;
  v = (v | v << 32) & 0x1f00000000ffffULL;
  v = (v | v << 16) & 0x1f0000ff0000ffULL;
  v = (v | v << 8) & 0x100f00f00f00f00fULL;
  v = (v | v << 4) & 0x10c30c30c30c30c3ULL;
  v = (v | v << 2) & 0x1249249249249249ULL;
  return v;
}
}  // namespace

std::vector<Index> cell_order(const RaggedIndex& sets, ConstMatRef<double> coords, double cell, Index min_rows) {
  require(cell > 0 && std::isfinite(cell), "cell_order: the cell side must be positive and finite, not " + describe(cell));
  require(coords.rows() == sets.total_rows() && coords.cols() == 3,
          "cell_order: coords are " + std::to_string(coords.rows()) + " x " + std::to_string(coords.cols()) +
              ", expected " + std::to_string(sets.total_rows()) + " x 3");
  std::vector<Index> order(uz(sets.total_rows()));
  for (Index i = 0; i < sets.total_rows(); ++i) order[uz(i)] = i;
  constexpr double kMaxCell = 0x1fffff;  // 21 bits per axis
  std::vector<std::uint64_t> key;
  for (Index s = 0; s < sets.num_sets(); ++s) {
    const Index b = sets.begin(s), n = sets.size(s);
    if (n < std::max<Index>(min_rows, 2)) continue;
    const auto X = coords.middleRows(b, n);
    for (Index i = 0; i < n; ++i)
      for (Index a = 0; a < 3; ++a)
        require(std::isfinite(X(i, a)), "cell_order: coordinate " + std::to_string(a) + " of row " +
                                            std::to_string(b + i) + " (set " + std::to_string(s) + ") is " +
                                            describe(X(i, a)));
    const Eigen::RowVector3d lo = X.colwise().minCoeff();
    // cells of side `cell`, wider where a very extended set would need more than 2^21 per axis
    const double side = std::max(cell, (X.colwise().maxCoeff() - lo).maxCoeff() / kMaxCell);
    key.resize(uz(n));
    for (Index i = 0; i < n; ++i) {
      std::uint64_t k = 0;
      for (Index a = 0; a < 3; ++a)
        k |= spread_bits(static_cast<std::uint64_t>(std::min(kMaxCell, std::floor((X(i, a) - lo(a)) / side)))) << a;
      key[uz(i)] = k;
    }
    const auto first = order.begin() + b;
    std::stable_sort(first, first + n, [&](Index i, Index j) { return key[uz(i - b)] < key[uz(j - b)]; });
  }
  return order;
}

std::optional<AsymmetricPair> find_asymmetric_pair(const NeighbourList& list) {
  // The sources below j of row j must be, in increasing order, the rows i < j that list j. Walking
  // the rows in order with a cursor per row matches each pair (i, j), i < j, with the next
  // unmatched source of row j; every one must be i, and none may be left over.
  const Index N = list.num_rows();
  std::vector<std::int64_t> cursor(list.offsets.begin(), list.offsets.end() - (N > 0 ? 1 : 0));
  const auto src = [&](std::int64_t p) -> Index { return list.source[static_cast<std::size_t>(p)]; };
  for (Index i = 0; i < N; ++i) {
    const auto p0 = list.offsets[uz(i)], p1 = list.offsets[uz(i) + 1];
    // Row i's sources below i must all be matched by now (the rows below i are done): an
    // unmatched one was not listed back.
    const std::int64_t c = cursor[uz(i)];
    if (c < p1 && src(c) < i) return AsymmetricPair{i, src(c)};
    for (auto p = p0; p < p1; ++p) {
      const Index j = src(p);
      if (j <= i) continue;
      std::int64_t& next = cursor[uz(j)];
      if (next == list.offsets[uz(j) + 1] || src(next) > i) return AsymmetricPair{i, j};  // row j skips i
      if (src(next) < i) return AsymmetricPair{j, src(next)};  // a row below i that did not list j
      ++next;
    }
  }
  return std::nullopt;
}

void check_neighbour_list(const NeighbourList& list, Index rows, const RaggedIndex* sets, bool symmetric,
                          const std::string& who) {
  require(list.num_rows() == rows && !list.offsets.empty(),
          who + ": the neighbour list has " + std::to_string(list.num_rows()) + " rows, the batch " +
              std::to_string(rows));
  require(sets == nullptr || sets->total_rows() == rows,
          who + ": the sets hold " + std::to_string(sets ? sets->total_rows() : 0) + " rows, the batch " +
              std::to_string(rows));
  require(list.offsets.front() == 0 && list.offsets.back() == static_cast<std::int64_t>(list.source.size()) &&
              list.target.size() == list.source.size(),
          who + ": the neighbour list's offsets do not match its pairs");
  for (Index i = 0; i < rows; ++i)  // (no message built unless it fails)
    if (list.offsets[uz(i)] > list.offsets[uz(i) + 1])
      throw InvalidArgument(who + ": the neighbour list's offsets decrease at row " + std::to_string(i) +
                            " (row i's pairs are [offsets[i], offsets[i + 1]))");
  // Row ranges within sets: (set begin, set end, first row, last row + 1).
  struct Range {
    Index set_begin, set_end, begin, end;
  };
  std::vector<Range> ranges;
  const auto add_set = [&](Index b, Index e) {
    for (Index r = b; r < e; r += kTargetChunk) ranges.push_back({b, e, r, std::min(e, r + kTargetChunk)});
  };
  if (sets != nullptr)
    for (Index s = 0; s < sets->num_sets(); ++s) add_set(sets->begin(s), sets->end(s));
  else
    add_set(0, rows);
  const auto num_ranges = static_cast<Index>(ranges.size());
  Index bad = rows;  // the first offending row (private copies start at the largest Index)
#pragma omp parallel for schedule(static) reduction(min : bad) if (list.num_pairs() > 100000)
  for (Index t = 0; t < num_ranges; ++t) {
    const Range& rg = ranges[uz(t)];
    for (Index i = rg.begin; i < rg.end; ++i) {
      const auto p0 = list.offsets[uz(i)], p1 = list.offsets[uz(i) + 1];
      bool ok = true;
      for (auto p = p0; ok && p < p1; ++p) {
        const Index j = list.source[static_cast<std::size_t>(p)];
        ok = list.target[static_cast<std::size_t>(p)] == i && j >= rg.set_begin && j < rg.set_end &&
             (p == p0 || j > list.source[static_cast<std::size_t>(p) - 1]);
      }
      if (!ok) {
        bad = std::min(bad, i);
        break;
      }
    }
  }
  require(bad == rows, who + ": the neighbour list is malformed at row " + std::to_string(bad) +
                           " (each pair's target must be its row, sources sorted and within the row's set)");
  if (!symmetric) return;
  if (const auto pair = find_asymmetric_pair(list))
    throw InvalidArgument(who + ": the neighbour list is not symmetric: row " + std::to_string(pair->row) +
                          " lists " + std::to_string(pair->source) + ", row " + std::to_string(pair->source) +
                          " does not list " + std::to_string(pair->row) + " (j in N(i) must imply i in N(j))");
}

}  // namespace flt::attn
