#include <catch2/catch.hpp>

#include "core/data_gen.h"
#include "core/recipe.h"
#include "core/registry.h"
#include "core/registry_index.h"
#include "models/attention/attention.h"

using Catch::Matchers::Contains;

namespace {
struct Widget {
  virtual ~Widget() = default;
  virtual int value() const = 0;
};
struct Seven : Widget {
  int value() const override { return 7; }
};
}  // namespace

TEST_CASE("registry: create by name / reject duplicates / suggest on unknown names", "[registry]") {
  ef::Registry<Widget> r("widget");
  r.add("seven", [] { return std::make_unique<Seven>(); }, "returns seven");
  CHECK(r.create("seven")->value() == 7);
  REQUIRE_THROWS_WITH(r.add("seven", [] { return std::make_unique<Seven>(); }), Contains("registered twice"));
  REQUIRE_THROWS_WITH(r.create("sevn"), Contains("unknown widget 'sevn' (did you mean 'seven'?)"));
}

TEST_CASE("registry: the index lists every live registry with its entries", "[registry]") {
  auto find = [](const std::string& what) -> const ef::RegistryListing* {
    for (const auto* r : ef::registry_index())
      if (r->what() == what) return r;
    return nullptr;
  };
  {
    ef::Registry<Widget> r("test gadget");
    r.add("seven", [] { return std::make_unique<Seven>(); }, "returns seven");
    r.add("plain", [] { return std::make_unique<Seven>(); });
    const ef::RegistryListing* listed = find("test gadget");
    REQUIRE(listed == &r);
    auto items = listed->items();
    REQUIRE(items.size() == 2);
    CHECK(items[0].name == "plain");
    CHECK(items[0].description.empty());
    CHECK(items[1].name == "seven");
    CHECK(items[1].description == "returns seven");
  }
  CHECK(find("test gadget") == nullptr);  // a destroyed registry leaves the index
  // the linked libraries' registries are there, ordered by what they hold
  CHECK(find("recipe") == &ef::recipes());
  CHECK(find("attention kind") == &ef::attention_kinds());
  auto all = ef::registry_index();
  for (size_t i = 1; i < all.size(); ++i) CHECK(all[i - 1]->what() <= all[i]->what());
}

TEST_CASE("registry: the static registrations of the linked libraries are present", "[registry]") {
  CHECK(ef::recipes().contains("classify"));
  CHECK(ef::attention_kinds().contains("softmax"));
  CHECK(ef::data_generators().contains("shapes"));
}

// Every registered attention kind keeps the [B, N, C] contract and is differentiable: a new kind
// is tested by registering it.
TEST_CASE("registry: every attention kind maps [B /N /C] to [B /N /C] with gradients", "[registry][attention]") {
  torch::manual_seed(0);
  for (const auto& name : ef::attention_kinds().names()) {
    INFO("attention kind " << name);
    ef::Config section = ef::Config::from_json({{"kind", name}});
    auto attn = ef::make_attention({32, 4}, section);
    torch::Tensor x = torch::randn({2, 17, 32}, torch::requires_grad());
    torch::Tensor y = attn->forward(x);
    CHECK(y.sizes() == x.sizes());
    y.square().sum().backward();
    CHECK(x.grad().defined());
    CHECK(x.grad().abs().sum().item<double>() > 0);
    CHECK(attn->flops(17) > 0);
  }
}
