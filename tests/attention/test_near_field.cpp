// The exact near field of the geometric attention (attention/near_field.hpp): equal to the readable pair
// by pair reference, float against double, gradient checks in double for every input and weight
// (coordinates included), rotation invariance of the scalar output and equivariance of the vector
// messages, continuity at the cutoff, and bitwise determinism across thread counts.
#include "attention/near_field.hpp"

#include "core/allocator.hpp"
#include "core/dual.hpp"
#include "core/error.hpp"
#include "core/gradcheck.hpp"
#include "core/random.hpp"
#include "flt_test_util.hpp"

#include <Eigen/Geometry>
#include <catch2/catch.hpp>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

using namespace flt;
using namespace flt::attn;

using flt::attn::testing::random_normal_mat;

namespace {

struct Problem {
  NearFieldConfig config;
  RaggedIndex sets;
  NeighbourList list;
  Mat<double> coords, q, k, v, vec;
  Mat<double> Wk, bk, Wv, bv, sink;  // biases and sink as column vectors

  NearFieldWeights<double> weights() const {
    return {Wk, {bk.data(), static_cast<std::size_t>(bk.size())}, Wv,
            {bv.data(), static_cast<std::size_t>(bv.size())},
            {sink.data(), static_cast<std::size_t>(sink.size())}};
  }
  void rebuild_list() { list = build_neighbour_list_reference(sets, coords, config.cutoff); }
};

// Sets of the given sizes with atoms ~ N(0, spread^2) per axis, so that some pairs lie beyond
// the cutoff (2.5 A) and some sets are complete.
// head_dim and node_count: 16 and 16 are the settings models run at (3 and 5 keep the
// finite-difference checks over every weight fast).
Problem make_problem(std::uint64_t seed, std::vector<Index> sizes, bool vectors, double spread = 1.6,
                     Index head_dim = 3, Index node_count = 5, Index heads = 2) {
  Rng rng(seed);
  Problem p;
  p.config.heads = heads;
  p.config.head_dim = head_dim;
  p.config.cutoff = 2.5;
  p.config.nodes = RadialNodes::bessel(node_count, p.config.cutoff);
  p.config.vectors = vectors;
  p.sets = RaggedIndex::from_sizes(sizes);
  const Index N = p.sets.total_rows(), D = p.config.width(), V = p.config.value_width();
  const Index K = p.config.nodes.count;
  p.coords = random_normal_mat(rng, N, 3, spread);
  p.q = random_normal_mat(rng, N, D);
  p.k = random_normal_mat(rng, N, D);
  p.v = random_normal_mat(rng, N, V);
  p.vec = vectors ? random_normal_mat(rng, N, 3 * D) : Mat<double>(0, 0);
  p.Wk = random_normal_mat(rng, K, D, 0.7);
  p.bk = random_normal_mat(rng, D, 1, 0.3);
  p.Wv = random_normal_mat(rng, K, V, 0.7);
  p.bv = random_normal_mat(rng, V, 1, 0.3);
  p.sink = random_normal_mat(rng, p.config.heads, 1, 0.5);
  p.rebuild_list();
  return p;
}

template <class T>
struct Outputs {
  Mat<T> out, dvec;
  NearFieldCache<T> cache;
};

template <class T>
Outputs<T> forward(const Problem& p) {
  const Index N = p.q.rows(), D = p.config.width();
  Outputs<T> o;
  o.out.resize(N, D);
  o.dvec.resize(p.config.vectors ? N : 0, p.config.vectors ? 3 * D : 0);
  const Mat<T> q = p.q.cast<T>(), k = p.k.cast<T>(), v = p.v.cast<T>(), vec = p.vec.cast<T>();
  const Mat<T> Wk = p.Wk.cast<T>(), bk = p.bk.cast<T>(), Wv = p.Wv.cast<T>(), bv = p.bv.cast<T>(),
               sink = p.sink.cast<T>();
  const NearFieldWeights<T> w{Wk, {bk.data(), static_cast<std::size_t>(bk.size())}, Wv,
                              {bv.data(), static_cast<std::size_t>(bv.size())},
                              {sink.data(), static_cast<std::size_t>(sink.size())}};
  near_field_forward<T>(p.config, p.list, p.coords, q, k, v, vec, w, o.out, o.dvec, o.cache);
  return o;
}

// Loss = sum(R1 o out) + sum(R2 o dvec) with fixed random R1, R2, and every gradient.
struct Gradients {
  Mat<double> q, k, v, vec, coords, Wk, bk, Wv, bv, sink;
};

Gradients backward(const Problem& p, const Mat<double>& R1, const Mat<double>& R2) {
  Outputs<double> o = forward<double>(p);
  const Index N = p.q.rows();
  Gradients g;
  g.q = Mat<double>::Zero(N, p.q.cols());
  g.k = Mat<double>::Zero(N, p.k.cols());
  g.v = Mat<double>::Zero(N, p.v.cols());
  g.vec = Mat<double>::Zero(p.vec.rows(), p.vec.cols());
  g.coords = Mat<double>::Zero(N, 3);
  g.Wk = Mat<double>::Zero(p.Wk.rows(), p.Wk.cols());
  g.bk = Mat<double>::Zero(p.bk.rows(), 1);
  g.Wv = Mat<double>::Zero(p.Wv.rows(), p.Wv.cols());
  g.bv = Mat<double>::Zero(p.bv.rows(), 1);
  g.sink = Mat<double>::Zero(p.sink.rows(), 1);
  NearFieldGrads<double> grads{g.Wk, {g.bk.data(), static_cast<std::size_t>(g.bk.size())}, g.Wv,
                                     {g.bv.data(), static_cast<std::size_t>(g.bv.size())},
                                     {g.sink.data(), static_cast<std::size_t>(g.sink.size())}};
  near_field_backward<double>(p.config, p.list, p.coords, p.q, p.k, p.v, p.vec, p.weights(), o.cache,
                              R1, R2, g.q, g.k, g.v, g.vec, g.coords, grads);
  return g;
}

// The same gradients from the float forward and backward.
struct FloatGradients {
  Mat<float> q, k, v, vec, coords, Wk, bk, Wv, bv, sink;
};

FloatGradients float_backward(const Problem& p, const Mat<double>& R1, const Mat<double>& R2,
                              bool with_coords = true) {
  const Outputs<float> o = forward<float>(p);
  const Mat<float> q = p.q.cast<float>(), k = p.k.cast<float>(), v = p.v.cast<float>(), vec = p.vec.cast<float>();
  const Mat<float> Wk = p.Wk.cast<float>(), bk = p.bk.cast<float>(), Wv = p.Wv.cast<float>(),
                   bv = p.bv.cast<float>(), sink = p.sink.cast<float>();
  const NearFieldWeights<float> w{Wk, {bk.data(), static_cast<std::size_t>(bk.size())}, Wv,
                                  {bv.data(), static_cast<std::size_t>(bv.size())},
                                  {sink.data(), static_cast<std::size_t>(sink.size())}};
  const Index N = p.q.rows(), D = p.config.width(), V = p.config.value_width();
  FloatGradients g;
  g.q = Mat<float>::Zero(N, D);
  g.k = Mat<float>::Zero(N, D);
  g.v = Mat<float>::Zero(N, V);
  g.vec = Mat<float>::Zero(N, 3 * D);
  g.coords = Mat<float>::Zero(with_coords ? N : 0, 3);
  g.Wk = Mat<float>::Zero(Wk.rows(), Wk.cols());
  g.bk = Mat<float>::Zero(D, 1);
  g.Wv = Mat<float>::Zero(Wv.rows(), Wv.cols());
  g.bv = Mat<float>::Zero(V, 1);
  g.sink = Mat<float>::Zero(p.config.heads, 1);
  NearFieldGrads<float> grads{g.Wk, {g.bk.data(), static_cast<std::size_t>(g.bk.size())}, g.Wv,
                              {g.bv.data(), static_cast<std::size_t>(g.bv.size())},
                              {g.sink.data(), static_cast<std::size_t>(g.sink.size())}};
  near_field_backward<float>(p.config, p.list, p.coords, q, k, v, vec, w, o.cache, R1.cast<float>(),
                             R2.cast<float>(), g.q, g.k, g.v, g.vec, g.coords, grads);
  return g;
}

double loss_of(const Problem& p, const Mat<double>& R1, const Mat<double>& R2) {
  const Outputs<double> o = forward<double>(p);
  double s = (o.out.array() * R1.array()).sum();
  if (p.config.vectors) s += (o.dvec.array() * R2.array()).sum();
  return s;
}

void check_all_gradients(Problem& p) {
  Rng rng(99);
  const Index N = p.q.rows(), D = p.config.width();
  const Mat<double> R1 = random_normal_mat(rng, N, D);
  const Mat<double> R2 = p.config.vectors ? random_normal_mat(rng, N, 3 * D) : Mat<double>(0, 0);
  const Gradients g = backward(p, R1, R2);
  auto check = [&](const char* name, Mat<double>& x, const Mat<double>& analytic, bool geometry) {
    INFO("gradient of " << name);
    REQUIRE(analytic.size() == x.size());
    std::span<double> xs(x.data(), static_cast<std::size_t>(x.size()));
    const auto result = check_gradient(
        [&] {
          // Distances change with the coordinates but the list must not: the test sets keep
          // every pair away from the cutoff by more than the finite-difference step.
          if (geometry) {
            const NeighbourList fresh = build_neighbour_list_reference(p.sets, p.coords, p.config.cutoff);
            REQUIRE(fresh.source == p.list.source);
          }
          return loss_of(p, R1, R2);
        },
        xs, std::span<const double>(analytic.data(), static_cast<std::size_t>(analytic.size())));
    INFO("worst component " << result.worst_index << ": analytic " << result.worst_analytic
                            << ", numeric " << result.worst_numeric);
    CHECK(result.max_rel_error < 1e-6);
  };
  check("q", p.q, g.q, false);
  check("k", p.k, g.k, false);
  check("v", p.v, g.v, false);
  if (p.config.vectors) check("vec", p.vec, g.vec, false);
  check("coords", p.coords, g.coords, true);
  check("Wk", p.Wk, g.Wk, false);
  check("bk", p.bk, g.bk, false);
  check("Wv", p.Wv, g.Wv, false);
  check("bv", p.bv, g.bv, false);
  check("sink", p.sink, g.sink, false);
}

}  // namespace

TEST_CASE("near field: equal to the pair-by-pair reference, float close to double", "[near_field]") {
  // Small heads, and the settings models run at (heads of 16 channels, 16 radial nodes) with a set
  // of 150 atoms whose rows span several pieces of pairs over most of the table's intervals.
  // 8 heads of 16: the float forward's eight-head register sums (head_sums).
  struct Size {
    std::vector<Index> sets;
    Index head_dim, nodes, heads;
  };
  const Size sizes[] = {{{1, 4, 17, 40}, 3, 5, 2}, {{1, 4, 17, 40, 150}, 16, 16, 2}, {{1, 4, 17, 40, 150}, 16, 16, 8}};
  for (const Size& size : sizes)
  for (bool vectors : {true, false}) {
    // Sets: one atom, a small complete set, and sets with pairs beyond the cutoff.
    const Problem p = make_problem(3, size.sets, vectors, 1.6, size.head_dim, size.nodes, size.heads);
    INFO("vectors " << vectors << ", head_dim " << size.head_dim << ", heads " << size.heads);
    Index beyond = 0;
    for (Index s = 0; s < p.sets.num_sets(); ++s) beyond += set_is_complete(p.list, p.sets, s) ? 0 : 1;
    REQUIRE(beyond >= 2);  // the cutoff matters in this test
    const Outputs<double> fast = forward<double>(p);
    Mat<double> ref_out(fast.out.rows(), fast.out.cols()), ref_vec(fast.dvec.rows(), fast.dvec.cols());
    near_field_forward_reference(p.config, p.list, p.coords, p.q, p.k, p.v, p.vec, p.weights(), ref_out,
                                 ref_vec);
    CHECK((fast.out - ref_out).cwiseAbs().maxCoeff() < 1e-12 * (1 + ref_out.cwiseAbs().maxCoeff()));
    if (vectors) CHECK((fast.dvec - ref_vec).cwiseAbs().maxCoeff() < 1e-12 * (1 + ref_vec.cwiseAbs().maxCoeff()));
    const Outputs<float> single = forward<float>(p);
    CHECK((single.out.cast<double>() - ref_out).cwiseAbs().maxCoeff() < 2e-5 * (1 + ref_out.cwiseAbs().maxCoeff()));
    if (vectors)
      CHECK((single.dvec.cast<double>() - ref_vec).cwiseAbs().maxCoeff() <
            2e-5 * (1 + ref_vec.cwiseAbs().maxCoeff()));
  }
}

TEST_CASE("near field: gradients of every input and weight match finite differences", "[near_field]") {
  // Both backward schedules: molecules gathered into one task (the default), and every set cut
  // into row groups as large sets are (a set of 70 rows: two groups, whose pairs across the cut
  // go through the halo rows). Small heads, and heads of 16 channels with 16 radial nodes (the
  // settings models run at).
  // Thousands of forward passes: the heap is kept, as the programs keep it, so that the filter
  // tables are not page-faulted afresh on every pass.
  tune_allocator_for_batches();
  for (const Index head_dim : {Index(3), Index(16)})
  for (Index single_pass : {Index(16384), Index(0)})
    for (bool vectors : {true, false}) {
      // At 16 channels (5,000 finite differences per case) one case: the vector path of the
      // cut schedule, which large structures use (test below: the two schedules agree).
      if (head_dim == 16 && (!vectors || single_pass != 0)) continue;
      INFO("vectors " << vectors << ", single_pass_max_pairs " << single_pass << ", head_dim " << head_dim);
      std::vector<Index> sets{1, 3, 9};
      if (head_dim == 3 && single_pass == 0) sets.push_back(70);
      Problem p = make_problem(5, sets, vectors, 1.3, head_dim, head_dim == 16 ? 16 : 5);
      p.config.single_pass_max_pairs = single_pass;
      check_all_gradients(p);
    }
}

// The set of 120 rows: one task, or two row groups with halo rows (60: one group either way).
TEST_CASE("near field: the backward of sets gathered and of sets cut into row groups agree", "[near_field]") {
  for (const Index head_dim : {Index(3), Index(16)}) {  // 16: the channels of a model's head
    INFO("head_dim " << head_dim);
    Problem p = make_problem(19, {120, 7, 60}, true, 2.2, head_dim, head_dim == 16 ? 16 : 5);
    Rng rng(8);
    const Mat<double> R1 = random_normal_mat(rng, p.q.rows(), p.config.width());
    const Mat<double> R2 = random_normal_mat(rng, p.q.rows(), 3 * p.config.width());
    const Gradients one = backward(p, R1, R2);
    p.config.single_pass_max_pairs = 0;
    const Gradients two = backward(p, R1, R2);
    auto close = [](const Mat<double>& a, const Mat<double>& b) {
      return (a - b).cwiseAbs().maxCoeff() <= 1e-12 * (1 + a.cwiseAbs().maxCoeff());
    };
    CHECK(close(one.q, two.q));
    CHECK(close(one.k, two.k));
    CHECK(close(one.v, two.v));
    CHECK(close(one.vec, two.vec));
    CHECK(close(one.coords, two.coords));
    CHECK(close(one.Wk, two.Wk));
    CHECK(close(one.Wv, two.Wv));
    CHECK(close(one.bk, two.bk));
    CHECK(close(one.bv, two.bv));
    CHECK(close(one.sink, two.sink));
  }
}

// The float backward at the models' head layouts (heads of 16 channels, the head sums in AVX2
// registers: eight heads at a time for width 128, one at a time for width 32) against the double
// backward, which the finite-difference checks above verify (double sums per head in lanes).
TEST_CASE("near field: float backward close to double at the models' head layout", "[near_field]") {
  for (const auto& [heads, single_pass] : {std::pair<Index, Index>{8, 16384}, {8, 0}, {2, 16384}}) {
    INFO("heads " << heads << ", single_pass_max_pairs " << single_pass);
    Problem p = make_problem(23, {9, 9, 9, 60}, true, 1.6, 16, 16, heads);
    p.config.single_pass_max_pairs = single_pass;
    Rng rng(31);
    const Index N = p.q.rows(), D = p.config.width();
    const Mat<double> R1 = random_normal_mat(rng, N, D), R2 = random_normal_mat(rng, N, 3 * D);
    const Gradients exact = backward(p, R1, R2);
    const FloatGradients g = float_backward(p, R1, R2);
    auto close = [](const char* name, const Mat<float>& f, const Mat<double>& d) {
      INFO("gradient of " << name);
      CHECK((f.cast<double>() - d).cwiseAbs().maxCoeff() <= 1e-4 * (1 + d.cwiseAbs().maxCoeff()));
    };
    close("q", g.q, exact.q);
    close("k", g.k, exact.k);
    close("v", g.v, exact.v);
    close("vec", g.vec, exact.vec);
    close("coords", g.coords, exact.coords);
    close("Wk", g.Wk, exact.Wk);
    close("bk", g.bk, exact.bk);
    close("Wv", g.Wv, exact.Wv);
    close("bv", g.bv, exact.bv);
    close("sink", g.sink, exact.sink);
  }
}

// A bulk system at the settings models run (liquid density, 5 A cutoff, 8 heads of 16, 16 nodes):
// one closed run of about 400,000 pairs, backward over 32 row groups of about 12,000 pairs (24
// pieces) whose pairs across the groups go through halo rows, so that the float backward's
// table-gradient sums go through float partial sums over 16 pieces, added into double sums twice
// per task. Its parameter gradients against the double backward's, and bitwise equal for 1 and 2
// threads.
TEST_CASE("near field: float backward of a bulk system: table gradients and thread counts", "[near_field]") {
  const Index N = 8000;
  const double side = std::cbrt(static_cast<double>(N) / 0.1);  // 0.1 atoms per A^3
  Rng rng(41);
  Problem p;
  p.config.heads = 8;
  p.config.head_dim = 16;
  p.config.cutoff = 5.0;
  p.config.nodes = RadialNodes::bessel(16, p.config.cutoff);
  p.config.vectors = true;
  p.sets = RaggedIndex::single(N);
  const Index D = p.config.width(), V = p.config.value_width(), K = p.config.nodes.count;
  p.coords.resize(N, 3);
  for (Index i = 0; i < N; ++i)
    for (Index a = 0; a < 3; ++a) p.coords(i, a) = side * rng.uniform();
  p.q = random_normal_mat(rng, N, D, 0.5);
  p.k = random_normal_mat(rng, N, D, 0.5);
  p.v = random_normal_mat(rng, N, V);
  p.vec = random_normal_mat(rng, N, 3 * D);
  p.Wk = random_normal_mat(rng, K, D, 0.7);
  p.bk = random_normal_mat(rng, D, 1, 0.3);
  p.Wv = random_normal_mat(rng, K, V, 0.7);
  p.bv = random_normal_mat(rng, V, 1, 0.3);
  p.sink = random_normal_mat(rng, p.config.heads, 1, 0.5);
  p.list = build_neighbour_list(p.sets, p.coords, p.config.cutoff);
  REQUIRE(p.list.num_pairs() > 300000);
  const Mat<double> R1 = random_normal_mat(rng, N, D), R2 = random_normal_mat(rng, N, 3 * D);
  const Gradients exact = backward(p, R1, R2);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const FloatGradients one = float_backward(p, R1, R2, false);
  omp_set_num_threads(2);
  const FloatGradients two = float_backward(p, R1, R2, false);
  omp_set_num_threads(saved);
  auto close = [](const char* name, const Mat<float>& f, const Mat<double>& d) {
    INFO("gradient of " << name);
    const double error = (f.cast<double>() - d).cwiseAbs().maxCoeff() / d.cwiseAbs().maxCoeff();
    INFO("largest error / largest gradient " << error);
    CHECK(error <= 2e-6);
  };
  close("Wk", one.Wk, exact.Wk);
  close("bk", one.bk, exact.bk);
  close("Wv", one.Wv, exact.Wv);
  close("bv", one.bv, exact.bv);
  close("k", one.k, exact.k);
  close("v", one.v, exact.v);
  close("vec", one.vec, exact.vec);
  CHECK(one.Wk == two.Wk);
  CHECK(one.bk == two.bk);
  CHECK(one.Wv == two.Wv);
  CHECK(one.bv == two.bv);
  CHECK(one.q == two.q);
  CHECK(one.k == two.k);
  CHECK(one.v == two.v);
  CHECK(one.vec == two.vec);
  CHECK(one.sink == two.sink);
}

TEST_CASE("near field: scalar output invariant, vector messages equivariant under rotation", "[near_field]") {
  Problem p = make_problem(7, {6, 11}, true);
  const Outputs<double> before = forward<double>(p);
  Rng rng(1);
  Eigen::Quaterniond quat(rng.normal(), rng.normal(), rng.normal(), rng.normal());
  quat.normalize();
  const Eigen::Matrix3d R = quat.toRotationMatrix();
  const Index N = p.q.rows(), D = p.config.width();
  Problem r = p;
  for (Index i = 0; i < N; ++i) {
    r.coords.row(i) = (R * p.coords.row(i).transpose()).transpose() + Eigen::RowVector3d(3.0, -1.0, 0.5);
    for (Index c = 0; c < D; ++c) {
      const Eigen::Vector3d x(p.vec(i, c), p.vec(i, D + c), p.vec(i, 2 * D + c));
      const Eigen::Vector3d y = R * x;
      for (Index a = 0; a < 3; ++a) r.vec(i, a * D + c) = y(a);
    }
  }
  r.rebuild_list();
  REQUIRE(r.list.source == p.list.source);
  const Outputs<double> after = forward<double>(r);
  CHECK((after.out - before.out).cwiseAbs().maxCoeff() < 1e-11);
  double worst = 0;
  for (Index i = 0; i < N; ++i)
    for (Index c = 0; c < D; ++c) {
      const Eigen::Vector3d x(before.dvec(i, c), before.dvec(i, D + c), before.dvec(i, 2 * D + c));
      const Eigen::Vector3d y(after.dvec(i, c), after.dvec(i, D + c), after.dvec(i, 2 * D + c));
      worst = std::max(worst, (R * x - y).cwiseAbs().maxCoeff());
    }
  CHECK(worst < 1e-11);
}

TEST_CASE("near field: an atom crossing the cutoff changes the output continuously", "[near_field]") {
  // Two atoms on the x axis at distance rc -+ eps: the pair enters the list only on one side, and
  // its weight goes to zero with the envelope, so the outputs agree to O(eps^3).
  Problem p = make_problem(11, {2}, true);
  p.coords.setZero();
  const double rc = p.config.cutoff, eps = 1e-4;
  p.coords(1, 0) = rc - eps;
  p.rebuild_list();
  REQUIRE(p.list.num_pairs() == 4);
  const Outputs<double> inside = forward<double>(p);
  p.coords(1, 0) = rc + eps;
  p.rebuild_list();
  REQUIRE(p.list.num_pairs() == 2);
  const Outputs<double> outside = forward<double>(p);
  CHECK((inside.out - outside.out).cwiseAbs().maxCoeff() < 1e-9);
  CHECK((inside.dvec - outside.dvec).cwiseAbs().maxCoeff() < 1e-9);
}

TEST_CASE("near field: forward and backward bitwise equal for 1 and 2 threads", "[near_field]") {
  // Enough rows for several tasks; once with the sets in one pass, once in two.
  for (Index single_pass : {Index(16384), Index(0)}) {
  INFO("single_pass_max_pairs " << single_pass);
  Problem p = make_problem(13, {150, 3, 90}, true, 2.5);
  p.config.single_pass_max_pairs = single_pass;
  Rng rng(5);
  const Mat<double> R1 = random_normal_mat(rng, p.q.rows(), p.config.width());
  const Mat<double> R2 = random_normal_mat(rng, p.q.rows(), 3 * p.config.width());
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const Outputs<float> f1 = forward<float>(p);
  const Gradients g1 = backward(p, R1, R2);
  omp_set_num_threads(2);
  const Outputs<float> f2 = forward<float>(p);
  const Gradients g2 = backward(p, R1, R2);
  omp_set_num_threads(saved);
  CHECK(f1.out == f2.out);
  CHECK(f1.dvec == f2.dvec);
  CHECK(g1.q == g2.q);
  CHECK(g1.k == g2.k);
  CHECK(g1.v == g2.v);
  CHECK(g1.vec == g2.vec);
  CHECK(g1.coords == g2.coords);
  CHECK(g1.Wk == g2.Wk);
  CHECK(g1.Wv == g2.Wv);
  CHECK(g1.sink == g2.sink);
  }
}

TEST_CASE("near field: shape and configuration errors", "[near_field]") {
  Problem p = make_problem(17, {4}, true);
  NearFieldConfig bad = p.config;
  bad.heads = 0;
  CHECK_THROWS_AS(bad.validate(), ConfigError);
  Mat<double> out(4, p.config.width()), dvec(4, 3 * p.config.width());
  NearFieldCache<double> cache;
  const Mat<double> short_q = p.q.topRows(3);
  CHECK_THROWS_AS(near_field_forward<double>(p.config, p.list, p.coords, short_q, p.k, p.v, p.vec,
                                             p.weights(), out, dvec, cache),
                  InvalidArgument);
  NearFieldConfig other = p.config;
  other.cutoff = 3.0;
  CHECK_THROWS_AS(near_field_forward<double>(other, p.list, p.coords, p.q, p.k, p.v, p.vec, p.weights(),
                                             out, dvec, cache),
                  InvalidArgument);
  // lists the kernels would index out of bounds or misattribute with: a source past the last row,
  // a pair filed under another row
  NeighbourList past_end = p.list, retargeted = p.list;
  past_end.source.back() = 4;
  retargeted.target.front() = 1;
  for (const NeighbourList* list : {&past_end, &retargeted})
    CHECK_THROWS_WITH(near_field_forward<double>(p.config, *list, p.coords, p.q, p.k, p.v, p.vec, p.weights(), out,
                                                 dvec, cache),
                      Catch::StartsWith("near field: the neighbour list is malformed"));
}

TEST_CASE("near field: the tabulated filters are within O(h^4) of the exact filters", "[near_field]") {
  // The default table (256 intervals of a 5 A cutoff) against act(b W + bias) computed directly,
  // at the model's default sizes (16 Bessel nodes), on a fine grid of distances; and a coarse
  // table whose error is visibly larger (the comparison can fail).
  Rng rng(23);
  NearFieldConfig config;
  config.heads = 2;
  config.head_dim = 4;
  config.cutoff = 5.0;
  config.nodes = RadialNodes::bessel(16, config.cutoff);
  const Index K = 16, D = config.width(), V = config.value_width();
  const double bound = 1.0 / std::sqrt(static_cast<double>(K));
  Mat<double> Wk = random_normal_mat(rng, K, D, bound), Wv = random_normal_mat(rng, K, V, bound);
  Mat<double> bk = random_normal_mat(rng, D, 1, bound), bv = random_normal_mat(rng, V, 1, bound), sink = Mat<double>::Zero(2, 1);
  const NearFieldWeights<double> w{Wk, {bk.data(), static_cast<std::size_t>(D)}, Wv,
                                   {bv.data(), static_cast<std::size_t>(V)}, {sink.data(), 2}};
  auto worst_error = [&](Index intervals) {
    NearFieldConfig c = config;
    c.table_intervals = intervals;
    double worst = 0, scale = 0;
    for (int i = 0; i <= 5000; ++i) {
      const double rho = 5.0 * i / 5000.0 * 0.99999;
      const FilterValues f = near_field_filters(c, w, rho);
      for (std::size_t x = 0; x < f.exact.size(); ++x) {
        worst = std::max(worst, std::abs(f.exact[x] - f.interpolated[x]));
        scale = std::max(scale, std::abs(f.exact[x]));
      }
    }
    return worst / scale;
  };
  const double fine = worst_error(256), coarse = worst_error(16);
  INFO("relative filter error: 256 intervals " << fine << ", 16 intervals " << coarse);
  CHECK(fine < 1e-5);
  CHECK(coarse > 100 * fine);  // ~h^4: 16x coarser is ~6e4 times worse
}

namespace {

// A Dual matrix with value m and tangent t (zero tangents where t is empty).
Mat<Dual> dual_of(const Mat<double>& m, const Mat<double>& t) {
  Mat<Dual> out(m.rows(), m.cols());
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j) out(i, j) = Dual(m(i, j), t.size() != 0 ? t(i, j) : 0.0);
  return out;
}
Mat<double> part_of(const Mat<Dual>& m, bool tangent) {
  return m.unaryExpr([tangent](const Dual& x) { return tangent ? x.d : x.v; });
}

// A direction in everything the near field depends on: coordinates, inputs, weights (left empty:
// no weight tangents, the training pass's case) and the output gradients R1, R2.
struct Direction {
  Mat<double> coords, q, k, v, vec, Wk, bk, Wv, bv, sink, R1, R2;
};

Direction random_direction(const Problem& p, std::uint64_t seed, bool weights) {
  Rng rng(seed);
  Direction u;
  const Index N = p.q.rows(), D = p.config.width();
  u.coords = random_normal_mat(rng, N, 3);
  u.q = random_normal_mat(rng, N, D);
  u.k = random_normal_mat(rng, N, D);
  u.v = random_normal_mat(rng, N, p.v.cols());
  u.vec = random_normal_mat(rng, p.vec.rows(), p.vec.cols());
  if (weights) {
    u.Wk = random_normal_mat(rng, p.Wk.rows(), p.Wk.cols());
    u.bk = random_normal_mat(rng, p.bk.rows(), 1);
    u.Wv = random_normal_mat(rng, p.Wv.rows(), p.Wv.cols());
    u.bv = random_normal_mat(rng, p.bv.rows(), 1);
    u.sink = random_normal_mat(rng, p.sink.rows(), 1);
  }
  u.R1 = random_normal_mat(rng, N, D);
  u.R2 = random_normal_mat(rng, p.config.vectors ? N : 0, p.config.vectors ? 3 * D : 0);
  return u;
}

// p moved by h along u (the neighbour list kept: callers check that it does not change).
Problem moved(const Problem& p, const Direction& u, double h) {
  Problem m = p;
  m.coords += h * u.coords;
  m.q += h * u.q;
  m.k += h * u.k;
  m.v += h * u.v;
  m.vec += h * u.vec;
  if (u.Wk.size() != 0) {
    m.Wk += h * u.Wk;
    m.bk += h * u.bk;
    m.Wv += h * u.Wv;
    m.bv += h * u.bv;
    m.sink += h * u.sink;
  }
  return m;
}

// Outputs and every gradient of the Dual near field seeded with u, as value and tangent parts.
struct DualResult {
  Mat<double> out[2], dvec[2];
  Gradients grads[2];  // [0] values, [1] tangents
};

DualResult dual_pass(const Problem& p, const Direction& u, const Mat<double>& R1, const Mat<double>& R2) {
  const Index N = p.q.rows(), D = p.config.width();
  const Mat<Dual> coords = dual_of(p.coords, u.coords), q = dual_of(p.q, u.q), k = dual_of(p.k, u.k),
                  v = dual_of(p.v, u.v), vec = dual_of(p.vec, u.vec);
  const Mat<Dual> Wk = dual_of(p.Wk, u.Wk), bk = dual_of(p.bk, u.bk), Wv = dual_of(p.Wv, u.Wv),
                  bv = dual_of(p.bv, u.bv), sink = dual_of(p.sink, u.sink);
  const NearFieldWeights<Dual> w{Wk, {bk.data(), static_cast<std::size_t>(bk.size())}, Wv,
                                 {bv.data(), static_cast<std::size_t>(bv.size())},
                                 {sink.data(), static_cast<std::size_t>(sink.size())}};
  Mat<Dual> out(N, D), dvec(p.config.vectors ? N : 0, p.config.vectors ? 3 * D : 0);
  NearFieldCache<Dual> cache;
  near_field_forward<Dual>(p.config, p.list, coords, q, k, v, vec, w, out, dvec, cache);
  const Mat<Dual> dout = dual_of(R1, u.R1), ddvec = dual_of(R2, u.R2);
  Mat<Dual> gq = Mat<Dual>::Zero(N, D), gk = Mat<Dual>::Zero(N, D), gv = Mat<Dual>::Zero(N, p.v.cols()),
            gvec = Mat<Dual>::Zero(p.vec.rows(), p.vec.cols()), gcoords = Mat<Dual>::Zero(N, 3);
  Mat<Dual> gWk = Mat<Dual>::Zero(p.Wk.rows(), p.Wk.cols()), gbk = Mat<Dual>::Zero(p.bk.rows(), 1),
            gWv = Mat<Dual>::Zero(p.Wv.rows(), p.Wv.cols()), gbv = Mat<Dual>::Zero(p.bv.rows(), 1),
            gsink = Mat<Dual>::Zero(p.sink.rows(), 1);
  NearFieldGrads<Dual> grads{gWk, {gbk.data(), static_cast<std::size_t>(gbk.size())}, gWv,
                             {gbv.data(), static_cast<std::size_t>(gbv.size())},
                             {gsink.data(), static_cast<std::size_t>(gsink.size())}};
  near_field_backward<Dual>(p.config, p.list, coords, q, k, v, vec, w, cache, dout, ddvec, gq, gk, gv, gvec,
                            gcoords, grads);
  DualResult r;
  for (int t = 0; t < 2; ++t) {
    r.out[t] = part_of(out, t == 1);
    r.dvec[t] = part_of(dvec, t == 1);
    r.grads[t] = {part_of(gq, t == 1),  part_of(gk, t == 1),  part_of(gv, t == 1),   part_of(gvec, t == 1),
                  part_of(gcoords, t == 1), part_of(gWk, t == 1), part_of(gbk, t == 1), part_of(gWv, t == 1),
                  part_of(gbv, t == 1), part_of(gsink, t == 1)};
  }
  return r;
}

// Applies f(name, a, b) to every gradient of a and b.
template <class F>
void for_each_gradient(const Gradients& a, const Gradients& b, F&& f) {
  f("q", a.q, b.q);
  f("k", a.k, b.k);
  f("v", a.v, b.v);
  f("vec", a.vec, b.vec);
  f("coords", a.coords, b.coords);
  f("Wk", a.Wk, b.Wk);
  f("bk", a.bk, b.bk);
  f("Wv", a.Wv, b.Wv);
  f("bv", a.bv, b.bv);
  f("sink", a.sink, b.sink);
}

// (plus - minus) / (2 h) for every gradient.
Gradients central_difference(const Gradients& plus, const Gradients& minus, double h) {
  const auto d = [h](const Mat<double>& a, const Mat<double>& b) { return Mat<double>((a - b) / (2 * h)); };
  return {d(plus.q, minus.q),   d(plus.k, minus.k),   d(plus.v, minus.v),   d(plus.vec, minus.vec),
          d(plus.coords, minus.coords), d(plus.Wk, minus.Wk), d(plus.bk, minus.bk), d(plus.Wv, minus.Wv),
          d(plus.bv, minus.bv), d(plus.sink, minus.sink)};
}

double relative_difference(const Mat<double>& a, const Mat<double>& b) {
  if (a.size() == 0 && b.size() == 0) return 0.0;
  return (a - b).cwiseAbs().maxCoeff() / std::max(1e-300, b.cwiseAbs().maxCoeff());
}

}  // namespace

TEST_CASE("near field: Dual forward and backward give the directional derivatives of outputs and gradients",
          "[near_field][dual]") {
  // Forward over reverse, as force training runs it: the tangents of the outputs and of every
  // gradient are the derivatives along u (coordinates, inputs, output gradients; weights too in
  // the second case), checked against central differences of the double forward and backward;
  // the value parts are the double results. Both backward schedules; with and without vectors;
  // small sets and heads, and the settings models run at (heads of 16 channels, 16 radial nodes,
  // a batch of nine-atom structures and a larger one: vectorised loops, many pieces and tasks).
  // (Sets large enough to be cut into row groups put pairs within a step of a table node, where
  // the interpolant's second derivative jumps: the schedules' Dual passes are compared instead.)
  struct Size {
    std::vector<Index> sets;
    Index head_dim, nodes;
  };
  std::vector<Index> batch(12, 9);
  batch.push_back(30);
  const Size sizes[] = {{{1, 3, 9}, 3, 5}, {batch, 16, 16}};
  for (const Size& size : sizes)
  for (const bool weight_tangents : {false, true})
    for (const Index single_pass : {Index(16384), Index(0)})
      for (const bool vectors : {true, false}) {
        INFO("head_dim " << size.head_dim << ", " << size.sets.size() << " sets, weight tangents "
                         << weight_tangents << ", single_pass_max_pairs " << single_pass << ", vectors " << vectors);
        Problem p = make_problem(5, size.sets, vectors, 1.3, size.head_dim, size.nodes);
        p.config.single_pass_max_pairs = single_pass;
        Rng rng(99);
        const Mat<double> R1 = random_normal_mat(rng, p.q.rows(), p.config.width());
        const Mat<double> R2 = vectors ? random_normal_mat(rng, p.q.rows(), 3 * p.config.width()) : Mat<double>(0, 0);
        const Direction u = random_direction(p, 17, weight_tangents);
        const DualResult r = dual_pass(p, u, R1, R2);

        const Gradients at = backward(p, R1, R2);
        const Outputs<double> out = forward<double>(p);
        CHECK(relative_difference(r.out[0], out.out) <= 1e-12);
        CHECK(relative_difference(r.dvec[0], out.dvec) <= 1e-12);
        for_each_gradient(r.grads[0], at, [](const char* name, const Mat<double>& a, const Mat<double>& b) {
          INFO("value of the gradient of " << name);
          CHECK(relative_difference(a, b) <= 1e-12);
        });

        const double h = 1e-5;
        const Problem plus = moved(p, u, h), minus = moved(p, u, -h);
        REQUIRE(build_neighbour_list_reference(plus.sets, plus.coords, p.config.cutoff).source == p.list.source);
        REQUIRE(build_neighbour_list_reference(minus.sets, minus.coords, p.config.cutoff).source == p.list.source);
        const Gradients gp = backward(plus, R1 + h * u.R1, R2 + h * u.R2);
        const Gradients gm = backward(minus, R1 - h * u.R1, R2 - h * u.R2);
        const Outputs<double> op = forward<double>(plus), om = forward<double>(minus);
        CHECK(relative_difference(r.out[1], (op.out - om.out) / (2 * h)) <= 1e-7);
        CHECK(relative_difference(r.dvec[1], (op.dvec - om.dvec) / (2 * h)) <= 1e-7);
        const Gradients numeric = central_difference(gp, gm, h);
        for_each_gradient(r.grads[1], numeric, [](const char* name, const Mat<double>& a, const Mat<double>& b) {
          INFO("tangent of the gradient of " << name << " vs central differences");
          CHECK(relative_difference(a, b) <= 1e-6);
          if (b.size() != 0) CHECK(a.cwiseAbs().maxCoeff() > 0.0);
        });

        // The training pass asks for no parameter-gradient values: every tangent and every input
        // gradient is bitwise the same.
        DualResult lean;
        {
          const ScopedPassOptions options({.parameter_gradient_values = false});
          lean = dual_pass(p, u, R1, R2);
        }
        CHECK(lean.grads[1].Wk == r.grads[1].Wk);
        CHECK(lean.grads[1].Wv == r.grads[1].Wv);
        CHECK(lean.grads[1].bk == r.grads[1].bk);
        CHECK(lean.grads[1].bv == r.grads[1].bv);
        CHECK(lean.grads[1].sink == r.grads[1].sink);
        for (int t = 0; t < 2; ++t) {
          CHECK(lean.grads[t].q == r.grads[t].q);
          CHECK(lean.grads[t].k == r.grads[t].k);
          CHECK(lean.grads[t].v == r.grads[t].v);
          CHECK(lean.grads[t].vec == r.grads[t].vec);
          CHECK(lean.grads[t].coords == r.grads[t].coords);
        }
      }
}

// The Dual backward (values and tangents, weights with and without tangents) of a set of 120 rows
// as one task and cut into two row groups with halo rows (plus a set of 60: one group either way).
TEST_CASE("near field: Dual backward of sets gathered and of sets cut into row groups agree", "[near_field][dual]") {
  for (const bool weight_tangents : {false, true}) {
    INFO("weight tangents " << weight_tangents);
    Problem p = make_problem(19, {120, 7, 60}, true, 2.2, 16, 16);
    Rng rng(8);
    const Mat<double> R1 = random_normal_mat(rng, p.q.rows(), p.config.width());
    const Mat<double> R2 = random_normal_mat(rng, p.q.rows(), 3 * p.config.width());
    const Direction u = random_direction(p, 23, weight_tangents);
    const DualResult gathered = dual_pass(p, u, R1, R2);
    p.config.single_pass_max_pairs = 0;
    const DualResult cut = dual_pass(p, u, R1, R2);
    for (int t = 0; t < 2; ++t)
      for_each_gradient(gathered.grads[t], cut.grads[t], [&](const char* name, const Mat<double>& a, const Mat<double>& b) {
        INFO((t == 0 ? "value" : "tangent") << " of the gradient of " << name);
        CHECK(relative_difference(a, b) <= 1e-12);
        if (t == 1 && a.size() != 0) CHECK(a.cwiseAbs().maxCoeff() > 0.0);
      });
  }
}

TEST_CASE("near field: a Dual forward keeps a table lent by a forward over the same weights, rebuilds otherwise",
          "[near_field][dual]") {
  Problem p = make_problem(5, {1, 3, 9}, true, 1.3);
  const Direction u = random_direction(p, 17, false);
  const Index N = p.q.rows(), D = p.config.width();
  const auto dual_forward = [&](const Problem& at, NearFieldCache<Dual>& cache) {
    const Mat<Dual> coords = dual_of(at.coords, u.coords), q = dual_of(at.q, u.q), k = dual_of(at.k, u.k),
                    v = dual_of(at.v, u.v), vec = dual_of(at.vec, u.vec);
    const Mat<Dual> Wk = at.Wk.cast<Dual>(), bk = at.bk.cast<Dual>(), Wv = at.Wv.cast<Dual>(),
                    bv = at.bv.cast<Dual>(), sink = at.sink.cast<Dual>();
    const NearFieldWeights<Dual> w{Wk, {bk.data(), static_cast<std::size_t>(bk.size())}, Wv,
                                   {bv.data(), static_cast<std::size_t>(bv.size())},
                                   {sink.data(), static_cast<std::size_t>(sink.size())}};
    Mat<Dual> out(N, D), dvec(N, 3 * D);
    near_field_forward<Dual>(at.config, at.list, coords, q, k, v, vec, w, out, dvec, cache);
    return std::pair{part_of(out, false), part_of(out, true)};
  };
  NearFieldCache<Dual> fresh;
  const auto expected = dual_forward(p, fresh);

  // Lent by a double forward over the same weights: the same table, bitwise the same results.
  NearFieldCache<Dual> lent;
  lend_filter_table(forward<double>(p).cache.table, lent.table);
  REQUIRE(lent.table.built_from.size() != 0);
  CHECK(dual_forward(p, lent) == expected);

  // Lent by a float forward: the float model's filters, equal to float rounding.
  NearFieldCache<Dual> lent_float;
  lend_filter_table(forward<float>(p).cache.table, lent_float.table);
  const auto from_float = dual_forward(p, lent_float);
  CHECK(relative_difference(from_float.first, expected.first) <= 1e-6);
  CHECK(relative_difference(from_float.second, expected.second) <= 1e-6);

  // Lent for other weights (one weight changed): rebuilt, as if fresh.
  Problem other = p;
  other.Wv(2, 5) += 0.25;
  NearFieldCache<Dual> stale;
  lend_filter_table(forward<double>(p).cache.table, stale.table);
  NearFieldCache<Dual> fresh_other;
  CHECK(dual_forward(other, stale) == dual_forward(other, fresh_other));
  CHECK(dual_forward(other, fresh_other) != expected);
}
