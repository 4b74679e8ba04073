// ToSA: equivalence with softmax attention at keep ratio 1, bypass and token order, the selector's
// supervision and staged schedule, FLOPs, and finite-difference gradients.
#include <catch2/catch.hpp>

#include "models/attention/tosa.h"
#include "models/vit.h"
#include "tests/gradcheck.h"

namespace {

ef::ViT make_vit(const std::string& pool, int64_t depth, nlohmann::json attention, int64_t image = 16) {
  ef::Config m = ef::Config::from_json(
      {{"image_size", image}, {"patch", 4}, {"dim", 16}, {"depth", depth}, {"heads", 2}, {"pool", pool}, {"mlp_ratio", 2.0}});
  return ef::ViT(ef::ViTOptions::from(m), ef::Config::from_json(attention));
}

std::shared_ptr<ef::ToSAAttentionImpl> tosa_of(ef::ViT& vit, int64_t layer) {
  return std::dynamic_pointer_cast<ef::ToSAAttentionImpl>((*vit->blocks)[layer]->as<ef::Block>()->attn);
}

// Copies every parameter of `from` into the parameter of the same name in `to`.
void copy_parameters(torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto dst = to.named_parameters(true);
  for (const auto& p : from.named_parameters(true)) dst[p.key()].copy_(p.value());
}

bool has_grad(const torch::Tensor& p) { return p.grad().defined() && p.grad().abs().sum().item<double>() > 0; }

}  // namespace

TEST_CASE("tosa: with keep ratio 1 it equals plain softmax attention", "[tosa]") {
  torch::manual_seed(0);
  // the mixer on its own
  ef::SoftmaxAttentionImpl softmax({16, 2}, ef::Config::from_json({{"kind", "softmax"}}));
  ef::ToSAAttentionImpl tosa({16, 2}, ef::Config::from_json({{"kind", "tosa"}}));
  copy_parameters(softmax, tosa);
  torch::Tensor x = torch::randn({2, 9, 16});
  CHECK(torch::allclose(tosa.forward(x), softmax.forward(x), 1e-6, 1e-6));

  // a whole ViT: standard, feeder and selective layers, class token, train and eval mode
  for (std::string pool : {"cls", "mean"}) {
    INFO("pool " << pool);
    ef::ViT dense = make_vit(pool, 4, {{"kind", "softmax"}});
    ef::ViT sel = make_vit(pool, 4, {{"kind", "tosa"}, {"keep_ratio", 1.0}, {"start_layer", 1}});
    REQUIRE(tosa_of(sel, 1)->role() == ef::ToSAAttentionImpl::Role::Selective);
    REQUIRE(tosa_of(sel, 3)->role() == ef::ToSAAttentionImpl::Role::Selective);
    copy_parameters(*dense, *sel);
    torch::Tensor images = torch::rand({3, 3, 16, 16});
    for (bool train : {false, true}) {
      INFO("training " << train);
      dense->train(train);
      sel->train(train);
      torch::Tensor a = dense->forward(images), b = sel->forward(images);
      CHECK((a - b).abs().max().item<double>() < 1e-5);
      sel->take_aux_losses();
    }
    CHECK(sel->flops() > dense->flops());  // the selectors cost something even when they keep everything
  }
}

TEST_CASE("tosa: skipped tokens bypass the block / kept tokens keep their order / dense outputs see every token", "[tosa]") {
  torch::manual_seed(1);
  ef::ViT vit = make_vit("cls", 2, {{"kind", "tosa"}, {"keep_ratio", 0.5}, {"start_layer", 1}});
  vit->eval();
  torch::NoGradGuard no_grad;
  auto b0 = (*vit->blocks)[0]->as<ef::Block>(), b1 = (*vit->blocks)[1]->as<ef::Block>();
  auto attn = tosa_of(vit, 1);
  torch::Tensor x = torch::randn({2, 17, 16});
  ef::AttentionContext ctx;
  torch::Tensor x1 = b0->forward(x, ctx);
  REQUIRE(ctx.tensors.count("tosa/logits"));
  torch::Tensor logits = ctx.tensors.at("tosa/logits");
  CHECK(logits.sizes() == std::vector<int64_t>{2, 2, 17, 17});
  torch::Tensor idx = attn->select(attn->predict(logits));
  REQUIRE(idx.sizes() == std::vector<int64_t>{2, 1 + 8});  // class token + ceil(0.5 * 16)
  CHECK((idx.select(1, 0) == 0).all().item<bool>());       // the class token is always kept
  CHECK((idx.slice(1, 1) > idx.slice(1, 0, -1)).all().item<bool>());  // ascending: original order

  torch::Tensor y = b1->forward(x1, ctx);
  REQUIRE(y.sizes() == x1.sizes());
  torch::Tensor kept_mask = torch::zeros({2, 17}, torch::kBool).scatter(1, idx, true);
  // bypassed tokens come out exactly as they went in, at their own positions
  torch::Tensor skipped = ~kept_mask;
  CHECK(torch::equal(y.index({skipped}), x1.index({skipped})));
  // kept tokens are the block applied to the kept tokens alone, put back at their positions
  torch::Tensor g = x1.gather(1, idx.unsqueeze(-1).expand({2, 9, 16}));
  torch::Tensor h = g + b1->attn->forward(b1->norm1->forward(g));
  h = h + b1->mlp->forward(b1->norm2->forward(h));
  CHECK(torch::allclose(y.gather(1, idx.unsqueeze(-1).expand({2, 9, 16})), h, 1e-6, 1e-6));

  // a shuffled batch order gives the same per-image outputs (selection is per image)
  torch::Tensor images = torch::rand({3, 3, 16, 16});
  torch::Tensor feats = vit->forward_features(images);
  CHECK(feats.sizes() == std::vector<int64_t>{3, 17, 16});
  torch::Tensor perm = torch::tensor({2, 0, 1});
  CHECK(torch::allclose(vit->forward_features(images.index_select(0, perm)), feats.index_select(0, perm), 1e-5, 1e-6));
  // the dense feature map of a GAP ViT has every patch token
  ef::ViT gap = make_vit("mean", 4, {{"kind", "tosa"}, {"keep_ratio", 0.25}, {"start_layer", 1}});
  gap->eval();
  auto taps = gap->forward_intermediates(images, {1, 3, -1});
  for (const auto& t : taps) CHECK(t.sizes() == std::vector<int64_t>{3, 16, 16});
}

TEST_CASE("tosa: the selector learns the next layer's attention maps / stage A trains only the selectors", "[tosa][train]") {
  torch::manual_seed(2);
  ef::ViT vit = make_vit("mean", 2, {{"kind", "tosa"}, {"start_layer", 1}, {"schedule", {{"selector_steps", 1000}}}});
  vit->train();
  auto attn = tosa_of(vit, 1);
  std::vector<torch::Tensor> sel_params = attn->selector->parameters();
  torch::optim::Adam opt(sel_params, torch::optim::AdamOptions(1e-2));
  torch::Tensor images = torch::rand({4, 3, 16, 16});
  double first = 0, last = 0;
  for (int i = 0; i < 30; ++i) {
    for (auto& p : vit->parameters()) p.mutable_grad() = torch::Tensor();
    torch::Tensor logits = vit->forward(images);
    CHECK_FALSE(logits.requires_grad());  // the backbone runs without gradients in stage A
    auto aux = vit->take_aux_losses();
    REQUIRE(aux.count("tosa_sel"));
    torch::Tensor kl = aux.at("tosa_sel");
    CHECK(kl.item<double>() >= 0);
    (logits.sum() * 0 + kl).backward();
    if (i == 0) {
      first = kl.item<double>();
      for (const auto& p : sel_params) CHECK(has_grad(p));
      CHECK_FALSE(has_grad(vit->patch_embed->proj->weight));
      CHECK_FALSE(has_grad(attn->qkv->weight));
    }
    last = kl.item<double>();
    opt.step();
  }
  INFO("KL " << first << " -> " << last);
  CHECK(last < 0.7 * first);
  CHECK(attn->step.item<int64_t>() == 30);
}

TEST_CASE("tosa: staged schedule: dense / then selectors only / then routed", "[tosa][train]") {
  torch::manual_seed(3);
  ef::ViT vit = make_vit("mean", 2, {{"kind", "tosa"}, {"start_layer", 1}, {"keep_ratio", 0.5}, {"schedule", {{"dense_steps", 1}, {"selector_steps", 1}}}});
  ef::ViT ref = make_vit("mean", 2, {{"kind", "tosa"}, {"start_layer", 1}, {"keep_ratio", 1.0}});
  copy_parameters(*vit, *ref);
  vit->train();
  ref->train();
  torch::Tensor images = torch::rand({2, 3, 16, 16});
  auto attn = tosa_of(vit, 1);
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    for (auto& p : vit->parameters()) p.mutable_grad() = torch::Tensor();
    CHECK(vit->backbone_frozen() == (step == 1));
    torch::Tensor out = vit->forward(images);
    torch::Tensor dense_out = ref->forward(images).detach();
    ref->take_aux_losses();
    // routing is off in the first two stages: the output is the dense one
    const bool same = torch::allclose(out.detach(), dense_out, 1e-5, 1e-6);
    CHECK(same == (step < 2));
    torch::Tensor loss = vit->take_aux_losses().at("tosa_sel") + (out.requires_grad() ? out.square().mean() : torch::zeros({}));
    loss.backward();
    CHECK(has_grad(attn->selector->parameters()[0]));
    CHECK(has_grad(attn->qkv->weight) == (step != 1));
  }
  CHECK(attn->step.item<int64_t>() == 3);
  vit->eval();
  CHECK_FALSE(vit->backbone_frozen());
}

TEST_CASE("tosa: FLOPs of a selective layer shrink with the keep ratio", "[tosa][flops]") {
  ef::AttentionShape s{64, 4};
  s.layer = 1;
  s.depth = 2;
  for (double rho : {0.25, 0.5, 0.75, 1.0}) {
    INFO("rho " << rho);
    ef::ToSAAttentionImpl t(s, ef::Config::from_json({{"keep_ratio", rho}, {"start_layer", 1}}));
    REQUIRE(t.role() == ef::ToSAAttentionImpl::Role::Selective);
    const int64_t N = 1024, M = t.kept_tokens(N);
    CHECK(M == static_cast<int64_t>(std::ceil(rho * N)));
    CHECK(t.block_tokens(N) == M);
    const double C = 64, att = 2 * M * 3 * C * C + 4.0 * M * M * C + 2 * M * C * C;
    const double selector = 1.0 * N * N * (2 * 3 * 4 * 16 * 2);
    CHECK(t.flops(N) == Approx(att + selector));
    ef::SoftmaxAttentionImpl full({64, 4}, ef::Config::from_json({{"kind", "softmax"}}));
    // linear parts scale by rho, the N^2 part by rho^2
    CHECK(att / full.flops(N) <= rho + 1e-9);
  }
  // with Q strided query rows the selector is linear in N
  ef::ToSAAttentionImpl q(s, ef::Config::from_json({{"keep_ratio", 0.5}, {"start_layer", 1}, {"queries", 64}}));
  auto selector_part = [&](int64_t n) {
    const double M = static_cast<double>(q.kept_tokens(n)), C = 64;
    return q.flops(n) - (2 * M * 3 * C * C + 4 * M * M * C + 2 * M * C * C);
  };
  CHECK(selector_part(8192) == Approx(2 * selector_part(4096)));
}

TEST_CASE("tosa: gradients match finite differences (double)", "[tosa][gradcheck]") {
  torch::manual_seed(4);
  ef::ViT vit = make_vit("cls", 2, {{"kind", "tosa"}, {"start_layer", 1}, {"keep_ratio", 0.5}, {"selector", {{"hidden", 2}}}}, 8);
  vit->to(torch::kFloat64);
  vit->train();
  auto block = (*vit->blocks)[1]->as<ef::Block>();
  auto attn = tosa_of(vit, 1);
  torch::Tensor x = torch::randn({2, 5, 16}, torch::TensorOptions().dtype(torch::kFloat64).requires_grad(true));
  torch::Tensor prev = torch::randn({2, 2, 5, 5}, torch::kFloat64);  // fixed: the selection stays the same

  // the routed block w.r.t. its input and every block parameter except the selector
  std::vector<torch::Tensor> leaves = {x};
  for (const auto& p : block->named_parameters(true))
    if (p.key().find("selector") == std::string::npos) leaves.push_back(p.value());
  auto routed = [&] {
    ef::AttentionContext ctx;
    ctx.tensors["tosa/logits"] = prev;
    torch::Tensor y = block->forward(x, ctx);
    attn->take_aux_losses();
    return y;
  };
  auto r = ef::test::gradcheck(routed, leaves);
  INFO(r.worst);
  CHECK(r.max_rel_error < 1e-6);

  // the selector loss w.r.t. the selector's parameters and its input logits
  torch::Tensor prev_leaf = prev.clone().requires_grad_(true);
  std::vector<torch::Tensor> sel_leaves = attn->selector->parameters();
  sel_leaves.push_back(prev_leaf);
  auto sel_loss = [&] {
    ef::AttentionContext ctx;
    ctx.tensors["tosa/logits"] = prev_leaf;
    block->forward(x.detach(), ctx);
    return attn->take_aux_losses().at("tosa_sel");
  };
  auto r2 = ef::test::gradcheck(sel_loss, sel_leaves);
  INFO(r2.worst);
  CHECK(r2.max_rel_error < 1e-6);
}
