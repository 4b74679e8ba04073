#pragma once
// "splat-scene": a generated multi-view scene for Gaussian splatting, written in COLMAP layout so
// that the real loader reads it. A small room corner (textured floor, back wall, two tilted panels)
// with two rotated boxes and three spheres at different depths, ray-cast analytically from `views`
// cameras on a hemisphere around it, with the ground truth planar methods (PGS) need:
//
//   <out>/images/view_NNN.png          RGB, Lambert-shaded procedural textures, 2x2 supersampled
//   <out>/sparse/0/{cameras,images,points3D}.bin
//                                      one PINHOLE camera; poses; `points` noisy surface samples with
//                                      their colours and one-view tracks (what SfM would give)
//   <out>/geometry.h5                  per view (rows in image-name order, attribute image_names):
//                                      depth [V,H,W] f32 metres along camera z (0: no surface),
//                                      normals [V,H,W,3] f32 unit WORLD-frame normals facing the camera,
//                                      plane_ids [V,H,W] int32 (0: not a plane, k: plane k),
//                                      planes [K,4] f64 (nx,ny,nz,d), n·x + d = 0, normal toward the
//                                      open side; attributes schema_version, generator, params
//   <out>/generator.json               {"generator", "schema_version", "params"}: written last
//
// The whole folder is written under a temporary name and renamed at the end. Deterministic from
// `seed` (same bytes for the same parameters); the world is z-up with the floor at z = 0.
#include <filesystem>

#include "core/config.h"

namespace ef::splat {

constexpr int64_t kSplatSceneSchema = 1;

struct SplatSceneParams {
  int64_t views = 60;         // cameras on the hemisphere
  int64_t size = 128;         // square images, pixels
  int64_t points = 4000;      // points3D
  double point_noise = 0.01;  // std of the points' position noise (world units; the room is ~6 wide)
  double fov = 60;            // horizontal field of view, degrees
  int64_t seed = 0;
  static SplatSceneParams from(const Config& generate);
  nlohmann::json to_json() const;
};

void generate_splat_scene(const SplatSceneParams& p, const std::filesystem::path& out);

}  // namespace ef::splat
