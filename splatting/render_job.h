#pragma once
// `edgeforge render`: a trained scene (a splat run's checkpoint, or a standard 3DGS .ply) to PNG
// frames from the dataset's cameras or from an orbit around the scene, and the scene to .ply.
#include <filesystem>
#include <string>
#include <vector>

#include "splatting/camera.h"
#include "splatting/gaussians.h"
#include "splatting/renderer.h"

namespace ef::splat {

struct RenderJob {
  std::filesystem::path run_dir;     // a splat run (uses its checkpoint and config), or empty with `ply`
  std::filesystem::path ply;         // render this .ply instead of a run (cameras from `data`)
  std::filesystem::path data;        // scene folder for the cameras (default: the run's data.path)
  std::string renderer = "alpha";    // with `ply`: the renderer kind, a name in renderers()
  std::string views = "test";        // test | train | all | none
  int64_t orbit = 0;                 // additionally N frames on an orbit around the scene
  std::filesystem::path out;         // frames go here (default: <run>/render)
  std::filesystem::path export_ply;  // write the scene here as a standard 3DGS .ply
  std::vector<std::string> overrides;
};

struct RenderReport {
  int64_t frames = 0;
  double seconds = 0;
  double mean_psnr = 0;  // over dataset views that have images; 0 when none
  std::filesystem::path out;
};

RenderReport run_render_job(const RenderJob& job);

// N cameras on a horizontal circle around the centre of `cams`, at their mean distance and height,
// looking at the centre, with the intrinsics of the first camera.
std::vector<Camera> orbit_cameras(const std::vector<Camera>& cams, int64_t n);

}  // namespace ef::splat
