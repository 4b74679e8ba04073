// Flow files (.flo, KITTI PNG) with the official header and encoding, the KITTI devkit metrics on
// hand-computed cases, and the flow / error colour images.
#include <catch2/catch.hpp>

#include <cmath>

#include <cstring>

#include "core/atomic_file.h"
#include "core/image_io.h"
#include "flow/flow_io.h"
#include "flow/metrics.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace ef::flow;

TEST_CASE("flow io: .flo round trip with the Middlebury header", "[flow]") {
  ef::test::ScratchDir dir("flo");
  torch::Tensor f = torch::tensor({1.5f, -2.25f, 0.0f, 3.0f, 1e10f, 7.0f, -0.125f, 100.0f, 4.0f, 5.0f, 6.0f, -7.5f}).view({2, 3, 2});
  write_flo(dir.path / "a.flo", f);
  const std::string bytes = ef::read_file(dir.path / "a.flo");
  REQUIRE(bytes.size() == 12 + 2 * 3 * 2 * 4);
  CHECK(bytes.substr(0, 4) == "PIEH");  // float 202021.25, little-endian
  int32_t w, h;
  float first;
  std::memcpy(&w, bytes.data() + 4, 4);
  std::memcpy(&h, bytes.data() + 8, 4);
  std::memcpy(&first, bytes.data() + 12, 4);
  CHECK(w == 3);
  CHECK(h == 2);
  CHECK(first == 1.5f);  // row-major, (u, v) interleaved: first value is u(0,0)
  torch::Tensor back = read_flo(dir.path / "a.flo");
  CHECK(torch::equal(back, f));
  torch::Tensor valid = flo_valid(back);
  CHECK(valid.sum().item<int64_t>() == 5);
  CHECK_FALSE(valid[0][2].item<bool>());  // u = 1e10 means unknown

  ef::write_file_atomically(dir.path / "bad.flo", std::string("NOPE") + std::string(8, '\0'));
  CHECK_THROWS_WITH(read_flo(dir.path / "bad.flo"), Catch::Contains("bad.flo") && Catch::Contains("202021.25"));
  ef::write_file_atomically(dir.path / "short.flo", bytes.substr(0, 20));
  CHECK_THROWS_WITH(read_flo(dir.path / "short.flo"), Catch::Contains("short.flo") && Catch::Contains("bytes"));
}

TEST_CASE("flow io: KITTI 16-bit PNG round trip with the devkit encoding", "[flow]") {
  ef::test::ScratchDir dir("kitti");
  torch::Tensor f = torch::tensor({1.0f, -2.5f, 0.015625f, 100.0f, -511.0f, 3.0f, 0.01f, 0.0f}).view({2, 2, 2});
  torch::Tensor valid = torch::tensor({true, true, true, false}).view({2, 2});
  write_kitti_flow(dir.path / "f.png", f, valid);
  // the raw PNG: 16-bit RGB, R = u*64 + 2^15, G = v*64 + 2^15, B = valid
  torch::Tensor raw = ef::read_png(dir.path / "f.png");
  REQUIRE(raw.sizes() == std::vector<int64_t>{2, 2, 3});
  REQUIRE(raw.scalar_type() == torch::kInt32);
  CHECK(raw[0][0][0].item<int>() == 32768 + 64);
  CHECK(raw[0][0][1].item<int>() == 32768 - 160);
  CHECK(raw[0][0][2].item<int>() == 1);
  CHECK(raw[1][0][0].item<int>() == 32768 - 511 * 64);
  CHECK(raw[1][1][2].item<int>() == 0);
  KittiFlow back = read_kitti_flow(dir.path / "f.png");
  CHECK(torch::equal(back.valid, valid));
  // multiples of 1/64 come back exactly; others within half a quantisation step
  CHECK(back.flow[0][0][0].item<float>() == 1.0f);
  CHECK(back.flow[0][1][0].item<float>() == 0.015625f);
  CHECK(back.flow[1][0][0].item<float>() == -511.0f);
  CHECK(std::abs(back.flow[1][1][0].item<float>()) == 0.0f);  // invalid pixels read as 0
  CHECK(std::abs(read_kitti_flow(dir.path / "f.png").flow[0][0][1].item<float>() + 2.5f) < 1.0 / 128);

  ef::write_png(dir.path / "rgb8.png", torch::zeros({2, 2, 3}, torch::kUInt8));
  CHECK_THROWS_WITH(read_kitti_flow(dir.path / "rgb8.png"), Catch::Contains("rgb8.png") && Catch::Contains("16-bit"));
}

TEST_CASE("flow metrics: EPE and Fl-all follow the KITTI devkit on hand-built cases", "[flow]") {
  // four pixels; gt magnitudes 50, 100, 10, 0; errors 3.5, 3.5, 2.9, 0
  torch::Tensor gt = torch::zeros({1, 2, 1, 4}), pred = torch::zeros({1, 2, 1, 4});
  gt[0][0][0][0] = 50;   pred[0][0][0][0] = 53.5;  // EPE 3.5 > 3 and > 5% of 50 = 2.5 -> outlier
  gt[0][0][0][1] = 100;  pred[0][0][0][1] = 103.5; // EPE 3.5 > 3 but < 5% of 100 = 5 -> not
  gt[0][1][0][2] = 10;   pred[0][1][0][2] = 12.9;  // EPE 2.9 < 3 -> not
  torch::Tensor valid = torch::ones({1, 1, 4}, torch::kBool);
  torch::Tensor out = fl_outliers(pred, gt);
  CHECK(out[0][0][0].item<bool>());
  CHECK_FALSE(out[0][0][1].item<bool>());
  CHECK_FALSE(out[0][0][2].item<bool>());
  FlowMetricSums s;
  s.add(pred, gt, valid);
  auto m = s.means("");
  CHECK(m["epe"] == Approx((3.5 + 3.5 + 2.9) / 4));
  CHECK(m["fl_all"] == Approx(25.0));
  CHECK(m["1px"] == Approx(25.0));
  CHECK(m["3px"] == Approx(50.0));
  CHECK(m["5px"] == Approx(100.0));

  // a second image with one valid pixel of EPE 5: pooled vs per-image means differ
  torch::Tensor gt2 = torch::zeros({1, 2, 1, 4}), pred2 = torch::zeros({1, 2, 1, 4});
  pred2[0][0][0][0] = 3;
  pred2[0][1][0][0] = 4;
  torch::Tensor valid2 = torch::tensor({1, 0, 0, 0}).view({1, 1, 4});
  s.add(pred2, gt2, valid2);
  m = s.means("eval_");
  CHECK(m["eval_epe"] == Approx((9.9 + 5) / 5));
  CHECK(m["eval_epe_image"] == Approx((9.9 / 4 + 5) / 2));
  CHECK(m["eval_fl_all"] == Approx(100.0 * 2 / 5));  // EPE 5 > 3 and > 0 -> outlier
  // invalid pixels never count
  FlowMetricSums none;
  none.add(pred2, gt2, torch::zeros({1, 1, 4}));
  CHECK(none.valid == 0);
  CHECK(none.images == 0);
  // ...and ground truth without a valid pixel measures nothing: NaN, never a perfect EPE 0
  for (const char* k : {"epe", "epe_image", "fl_all"}) {
    INFO(k);
    CHECK(std::isnan(none.means().at(k)));
  }
}

TEST_CASE("flow images: Middlebury colour wheel and KITTI error colours", "[flow]") {
  torch::Tensor f = torch::zeros({2, 1, 3});
  f[0][0][1] = 1;   // right
  f[0][0][2] = -1;  // left
  torch::Tensor c = flow_to_color(f);
  REQUIRE(c.sizes() == std::vector<int64_t>{3, 1, 3});
  for (int k = 0; k < 3; ++k) CHECK(c[k][0][0].item<float>() == Approx(1.0));  // zero flow is white
  CHECK(c[0][0][1].item<float>() == Approx(1.0));                              // right: red
  CHECK(c[1][0][1].item<float>() == Approx(0.0));
  CHECK(c[0][0][2].item<float>() == Approx(0.0));                              // left: cyan/blue
  CHECK(c[2][0][2].item<float>() == Approx(1.0));

  torch::Tensor gt = torch::ones({2, 1, 2}), pred = gt.clone();
  pred[0][0][1] = 100;  // EPE 99: min(99/3, 20 * 99 / |gt|) >= 16
  torch::Tensor e = flow_error_image(pred, gt, torch::tensor({true, true}).view({1, 2}));
  CHECK(e[0][0][0].item<float>() == Approx(49 / 255.0));   // no error: the first (blue) bin
  CHECK(e[0][0][1].item<float>() == Approx(165 / 255.0));  // huge error: the last (red) bin
  torch::Tensor e2 = flow_error_image(pred, gt, torch::tensor({false, false}).view({1, 2}));
  CHECK(e2.abs().sum().item<float>() == 0);  // invalid: black
}
