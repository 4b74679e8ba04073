#pragma once
// Flow datasets.
//
// Generated (HDF5, deterministic from the seed), two domains for the in-domain vs cross-domain
// protocol (flow_scenes.cpp renders them):
//  - "flow-chairs": FlyingChairs-like pairs. A procedurally textured background (value noise,
//    stripes, checkers, colour ramps) under a small global affine motion, and 2-6 textured
//    polygons/ellipses, each under its own random affine motion (translation, rotation, scale);
//    some are textureless (flat colour) so the ambiguity SCI targets exists. Frame 2 is rendered by
//    z-ordered compositing with inverse maps per layer, so the ground-truth flow (the motion of the
//    visible frame-1 layer) and the occlusion mask (that point hidden or out of frame in frame 2)
//    are exact.
//  - "flow-cross": the same construction with other statistics: gratings, dots, rings and fine noise
//    textures, larger motions, more flat regions, sensor noise, blur and a brightness change.
// Splits train/ and val/ hold img1, img2 uint8 [N,H,W,3], flow float [N,H,W,2] (u, v in pixels),
// occ and flat uint8 [N,H,W].
//
// Real benchmarks, read from their folders:
//  - MPI-Sintel: ROOT[/training]/{clean,final}/<scene>/frame_%04d.png, flow/<scene>/frame_%04d.flo
//  - KITTI 2015: ROOT[/training]/image_2/%06d_10.png, %06d_11.png, flow_occ/%06d_10.png
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/data.h"

namespace ef::flow {

struct FlowScenesParams {
  std::string domain = "chairs";  // "chairs" | "cross"; sets the defaults below
  int64_t n = 2000;
  double val_fraction = 0.1;
  int64_t height = 64, width = 96;
  uint64_t seed = 0;
  int64_t min_objects = 2, max_objects = 6;
  double max_translation = 8;       // foreground, pixels per axis
  double max_rotation = 10;         // degrees
  double min_scale = 0.9, max_scale = 1.1;
  double bg_translation = 3, bg_rotation = 3, bg_scale = 0.04;  // background affine: +-px, +-deg, 1 +- s
  double flat_fraction = 0.25;      // objects with a flat colour (textureless)
  double noise = 0.01;              // std of sensor noise (fraction of 255)
  double blur = 0;                  // 3x3 blur strength in [0,1] (cross domain)
  double brightness = 0;            // max relative gain change from frame 1 to frame 2
  static FlowScenesParams defaults(const std::string& domain);
  static FlowScenesParams from(const Config& generate, const std::string& domain);
  nlohmann::json to_json() const;
};

struct FlowScene {
  torch::Tensor img1, img2;  // uint8 [H,W,3]
  torch::Tensor flow;        // float [H,W,2]
  torch::Tensor occ, flat;   // uint8 [H,W]
};
FlowScene render_flow_scene(const FlowScenesParams& p, int64_t index);
void generate_flow_scenes(const FlowScenesParams& p, const std::filesystem::path& path);  // atomic

// One split of a generated file: "image1", "image2" float [3,H,W] in [0,1], "flow" [2,H,W],
// "valid", "occ", "flat" float [H,W].
class FlowScenesDataset : public Dataset {
 public:
  FlowScenesDataset(const std::filesystem::path& path, const std::string& split);
  int64_t size() const override { return flow_.size(0); }
  Sample get(int64_t index) const override;
  int64_t height() const { return flow_.size(1); }
  int64_t width() const { return flow_.size(2); }

 private:
  torch::Tensor img1_, img2_, flow_, occ_, flat_;
};

// ---- benchmark folders -----------------------------------------------------------------------------
struct FlowPairFiles {
  std::filesystem::path image1, image2, flow;
  std::string group;  // "clean", "final" (Sintel) or "kitti"
};
// "sintel" or "kitti" from the folders present under root (or root/training); throws naming root.
std::string detect_flow_layout(const std::filesystem::path& root);
// pass: "clean", "final" or "both" (those present).
std::vector<FlowPairFiles> list_sintel(const std::filesystem::path& root, const std::string& pass);
std::vector<FlowPairFiles> list_kitti(const std::filesystem::path& root);
// Reads one pair: image1, image2 float [3,H,W] in [0,1], flow [2,H,W], valid [H,W] (float 0/1).
Sample load_flow_pair(const FlowPairFiles& files);

}  // namespace ef::flow
