#include <catch2/catch.hpp>

#include "core/data.h"

namespace {
struct Counting : ef::Dataset {
  int64_t n;
  explicit Counting(int64_t n) : n(n) {}
  int64_t size() const override { return n; }
  ef::Sample get(int64_t i) const override { return {{"x", torch::tensor(i)}}; }
};

std::vector<int64_t> take(ef::Loader& l, int batches) {
  std::vector<int64_t> out;
  for (int b = 0; b < batches; ++b) {
    auto x = l.next().at("x");
    for (int64_t i = 0; i < x.size(0); ++i) out.push_back(x[i].item<int64_t>());
  }
  return out;
}
}  // namespace

TEST_CASE("loader: order depends on the seed only / not on the worker count", "[data]") {
  auto ds = std::make_shared<Counting>(50);
  ef::LoaderOptions o;
  o.batch_size = 8, o.seed = 3;
  o.workers = 0;
  ef::Loader a(ds, o);
  o.workers = 3;
  ef::Loader b(ds, o);
  auto xa = take(a, 20), xb = take(b, 20);  // crosses epochs (6 batches per epoch)
  CHECK(xa == xb);
  // each epoch is a permutation without repeats
  std::vector<int64_t> first(xa.begin(), xa.begin() + 48);
  std::sort(first.begin(), first.end());
  CHECK(std::adjacent_find(first.begin(), first.end()) == first.end());
  o.seed = 4;
  ef::Loader c(ds, o);
  CHECK(take(c, 6) != std::vector<int64_t>(xa.begin(), xa.begin() + 48));
}

TEST_CASE("loader: seek continues exactly where a position was taken", "[data]") {
  auto ds = std::make_shared<Counting>(30);
  ef::LoaderOptions o;
  o.batch_size = 4, o.workers = 2, o.seed = 1;
  ef::Loader a(ds, o);
  take(a, 9);
  ef::LoaderPosition p = a.position();
  auto rest = take(a, 7);
  ef::Loader b(ds, o);
  b.seek(p);
  CHECK(take(b, 7) == rest);
}

TEST_CASE("loader: dataset errors surface in next()", "[data]") {
  struct Broken : ef::Dataset {
    int64_t size() const override { return 10; }
    ef::Sample get(int64_t) const override { throw std::runtime_error("sample file missing"); }
  };
  ef::LoaderOptions o;
  o.batch_size = 2;
  ef::Loader l(std::make_shared<Broken>(), o);
  REQUIRE_THROWS_WITH(l.next(), Catch::Matchers::Contains("sample file missing"));
}
