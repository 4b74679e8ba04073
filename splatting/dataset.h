#pragma once
// Scenes a splatting recipe trains on: posed views with their images, the initial point cloud, the
// background colour and the scene extent, read from a COLMAP folder or a NeRF-synthetic folder
// (the generated `splat-scene` is written in COLMAP layout, so it goes through the COLMAP reader).
//
//   COLMAP:          <path>/sparse/0/{cameras,images,points3D}.{bin,txt}, <path>/<images>/<name>
//   NeRF-synthetic:  <path>/transforms_{train,test}.json, frames' file_path relative to <path>
//   ground truth:    <path>/geometry.h5 (generated scenes): per-view depth, normals, plane ids
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "splatting/camera.h"

namespace ef::splat {

struct SceneView {
  Camera camera;            // intrinsics match `image`'s size
  torch::Tensor image;      // [H, W, 3] float32 in [0, 1] (RGBA composited on the scene background)
  // Ground truth from geometry.h5 (generated scenes); undefined when the folder has none.
  torch::Tensor depth;      // [H, W] float32, metres along the camera's z axis; 0 where no surface
  torch::Tensor normals;    // [H, W, 3] float32, unit, WORLD frame, facing the camera; 0 where no surface
  torch::Tensor plane_ids;  // [H, W] int32: 0 = not on a plane, k >= 1 = plane k (row k-1 of SceneData::planes)
};

struct SceneData {
  std::filesystem::path root;
  std::string format;             // "colmap" or "nerf-synthetic"
  std::vector<SceneView> train, test;
  torch::Tensor points;           // [P, 3] float32, world: the initial point cloud
  torch::Tensor colors;           // [P, 3] float32 in [0, 1]
  torch::Tensor background;       // [3] float32 in [0, 1]
  double extent = 1.0;            // 1.1 x the largest distance of a train camera centre from their mean (3DGS)
  torch::Tensor planes;           // [K, 4] float64 (nx, ny, nz, d): n·x + d = 0, world; geometry.h5 only
  bool has_geometry() const { return !train.empty() && train.front().depth.defined(); }
};

// The `data` section of a splatting recipe (every key has a default except `path`).
struct SceneOptions {
  std::filesystem::path path;
  std::string format = "auto";     // auto | colmap | nerf-synthetic
  std::string images = "images";   // COLMAP: images | images_2 | images_4 | images_8 (folder; cameras follow its size)
  double downscale = 1;            // resize on load by 1/downscale (for folders not shipped pre-scaled)
  int64_t test_every = 8;          // COLMAP: sorted index % test_every == 0 is test; 0 = no test split
  std::vector<double> background;  // [r, g, b] in [0, 1]; default black (COLMAP) or white (NeRF-synthetic)
  int64_t init_points = 100000;    // NeRF-synthetic: random initial points in [-1.3, 1.3]^3
  int64_t init_seed = 0;           // NeRF-synthetic: seed of those points and their colours
  bool geometry = true;            // read geometry.h5 when present

  // Reads the keys above from `data` (path given separately: load_scene(Config) resolves it) and
  // writes the defaults back, so the resolved config records them; the format is detected here
  // because the background's default depends on it.
  static SceneOptions from(const Config& data, const std::filesystem::path& path);
};

// The entry point for recipes and `edgeforge render`: `data.path` names the scene folder; with
// `data.generate` (or `data.kind: "splat-scene"`) the folder is generated when missing and checked
// against the parameters when present, as every generated dataset is (ef::prepare_dataset).
// Unknown keys are left for the run's reject_unknown_keys(), as for every recipe section.
SceneData load_scene(const Config& data);
SceneData load_scene(const SceneOptions& options);

// "colmap" when `root` holds sparse/0 (or sparse/ with the model files), "nerf-synthetic" when it
// holds transforms_train.json; otherwise throws naming what was looked for.
std::string detect_scene_format(const std::filesystem::path& root);

// 3DGS's getNerfppNorm radius: 1.1 x max_i |c_i - mean(c)| over the camera centres.
double camera_extent(const std::vector<Camera>& cameras);

// Loaders behind load_scene (options.format is ignored by them).
SceneData load_colmap_scene(const SceneOptions& options);
SceneData load_nerf_synthetic_scene(const SceneOptions& options);

// Converts a decoded image (uint8 or 16-bit-as-int32 [H, W, C], C in 1..4) to float [H, W, 3] in
// [0, 1], compositing alpha over `background` [3].
torch::Tensor image_to_rgb(const torch::Tensor& decoded, const torch::Tensor& background);
// Area-resizes a float [H, W, C] image to [height, width, C].
torch::Tensor resize_image(const torch::Tensor& hwc, int64_t height, int64_t width);

}  // namespace ef::splat
