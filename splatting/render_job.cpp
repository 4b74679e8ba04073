#include "splatting/render_job.h"

#include <chrono>
#include <cmath>

#include "core/image_io.h"
#include "core/image_metrics.h"
#include "core/run.h"
#include "splatting/dataset.h"
#include "splatting/ply.h"
#include "splatting/scene_module.h"

namespace ef::splat {

namespace fs = std::filesystem;

std::vector<Camera> orbit_cameras(const std::vector<Camera>& cams, int64_t n) {
  TORCH_CHECK(!cams.empty(), "orbit: no cameras to centre the orbit on");
  std::vector<torch::Tensor> centres;
  for (const auto& c : cams) centres.push_back(c.center());
  auto C = torch::stack(centres);
  auto mean = C.mean(0);
  // the scene's "up": opposite to the mean camera y axis (OpenCV y points down)
  std::vector<torch::Tensor> ys;
  for (const auto& c : cams) ys.push_back(c.rotation()[1]);
  auto up = -torch::stack(ys).mean(0);
  up = up / up.norm();
  // look-at target: the point nearest to all optical axes would be best; the centroid of the
  // points in front of the cameras is approximated by the mean camera position pushed along the
  // mean viewing direction by the mean distance to the camera centroid
  std::vector<torch::Tensor> zs;
  for (const auto& c : cams) zs.push_back(c.rotation()[2]);
  auto radius = (C - mean).norm(2, 1).mean().item<double>();
  auto target = mean + torch::stack(zs).mean(0) * radius;
  auto rel = C - target;
  auto height = torch::matmul(rel, up).mean().item<double>();
  auto planar = rel - torch::outer(torch::matmul(rel, up), up);
  double r = planar.norm(2, 1).mean().item<double>();
  if (r < 1e-6) r = radius > 0 ? radius : 1.0;
  // an orthonormal basis of the orbit plane
  auto a = planar[0].norm().item<double>() > 1e-9 ? planar[0] / planar[0].norm() : torch::tensor({1.0, 0.0, 0.0}, up.options());
  auto b = torch::cross(up, a, 0);
  const auto& k = cams.front();
  const double fov = 2 * std::atan(0.5 * k.width / k.fx);
  std::vector<Camera> out;
  for (int64_t i = 0; i < n; ++i) {
    const double t = 2 * M_PI * double(i) / double(n);
    auto eye = target + up * height + r * (std::cos(t) * a + std::sin(t) * b);
    char name[32];
    std::snprintf(name, sizeof(name), "orbit_%04lld", static_cast<long long>(i));
    out.push_back(Camera::look_at(eye, target, up, k.width, k.height, fov, name));
  }
  return out;
}

RenderReport run_render_job(const RenderJob& job) {
  torch::NoGradGuard no_grad;
  GaussianParams scene;
  std::shared_ptr<SplatRendererImpl> renderer;
  SceneData data;
  fs::path out = job.out;
  torch::Device device(torch::kCPU);
  std::optional<OpenedRun> run;
  renderers().at(job.renderer);  // before any work: an unknown kind is a ConfigError naming the registered ones
  if (!job.ply.empty()) {
    scene = read_ply(job.ply);
    renderer = make_renderer(Config::from_json({{"kind", job.renderer}}));
    renderer->add_attributes(scene);
    if (job.data.empty()) throw InputError("render: --ply needs --data, the scene folder whose cameras to use");
    data = load_scene(Config::from_json({{"path", job.data.string()}}));
    if (out.empty()) out = job.ply.parent_path() / "render";
  } else {
    run.emplace(open_run(job.run_dir, job.overrides));
    auto mods = run->recipe->modules();
    auto* s = mods.count("scene") ? dynamic_cast<GaussianSceneImpl*>(mods.at("scene")) : nullptr;
    auto* r = mods.count("renderer") ? dynamic_cast<SplatRendererImpl*>(mods.at("renderer")) : nullptr;
    if (!s || !r) throw InputError("render: " + job.run_dir.string() + " is not a splat run (recipe '" +
                                              run->config.require<std::string>("recipe") + "')");
    scene = s->params();
    renderer = std::shared_ptr<SplatRendererImpl>(r, [](SplatRendererImpl*) {});  // owned by the recipe
    device = run->ctx.device;
    if (!job.data.empty()) run->config.apply_override("data.path=" + nlohmann::json(job.data.string()).dump());
    data = load_scene(run->config.section("data"));
    if (out.empty()) out = job.run_dir / "render";
  }
  if (!job.export_ply.empty()) {
    GaussianParams cpu = scene;
    for (auto& [name, t] : cpu.fields()) *t = t->detach().cpu();
    write_ply(job.export_ply, cpu);
  }
  std::vector<const SceneView*> views;
  if (job.views == "test" || job.views == "all")
    for (const auto& v : data.test) views.push_back(&v);
  if (job.views == "train" || job.views == "all")
    for (const auto& v : data.train) views.push_back(&v);
  if (job.views != "test" && job.views != "train" && job.views != "all" && job.views != "none")
    throw InputError("render: --views must be test, train, all or none, got '" + job.views + "'");
  std::vector<Camera> train_cams;
  for (const auto& v : data.train) train_cams.push_back(v.camera);
  auto orbit = job.orbit > 0 ? orbit_cameras(train_cams, job.orbit) : std::vector<Camera>{};

  RenderSettings rs{3, data.background.to(device)};
  RenderReport report;
  report.out = out;
  fs::create_directories(out);
  auto t0 = std::chrono::steady_clock::now();
  double psnr_sum = 0;
  auto frame = [&](const Camera& cam, const torch::Tensor& target) {
    auto img = renderer->render(scene, cam, rs).image.clamp(0, 1).cpu();
    if (target.defined()) psnr_sum += psnr(img, target.cpu()).item<double>();
    fs::path name = fs::path(cam.name.empty() ? "frame_" + std::to_string(report.frames) : cam.name).filename();
    write_png(out / name.replace_extension(".png"), to_uint8_hwc(img.permute({2, 0, 1})));
    ++report.frames;
  };
  for (const auto* v : views) frame(v->camera, v->image);
  for (const auto& c : orbit) frame(c, torch::Tensor());
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report.mean_psnr = views.empty() ? 0 : psnr_sum / double(views.size());
  return report;
}

}  // namespace ef::splat
