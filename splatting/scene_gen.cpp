#include "splatting/scene_gen.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/atomic_file.h"
#include "core/data_gen.h"
#include "core/hdf5_file.h"
#include "core/image_io.h"
#include "splatting/colmap.h"

namespace ef::splat {

namespace fs = std::filesystem;

SplatSceneParams SplatSceneParams::from(const Config& c) {
  SplatSceneParams p;
  p.views = c.get<int64_t>("views", p.views);
  p.size = c.get<int64_t>("size", p.size);
  p.points = c.get<int64_t>("points", p.points);
  p.point_noise = c.get<double>("point_noise", p.point_noise);
  p.fov = c.get<double>("fov", p.fov);
  p.seed = c.get<int64_t>("seed", p.seed);
  if (p.views < 2) c.invalid("views", "need at least 2 views");
  if (p.size < 16 || p.size > 4096) c.invalid("size", "expected 16..4096 pixels");
  if (p.points < p.views) c.invalid("points", "need at least one point per view (" + std::to_string(p.views) + ")");
  if (p.point_noise < 0) c.invalid("point_noise", "must be >= 0");
  if (p.fov < 20 || p.fov > 120) c.invalid("fov", "expected 20..120 degrees");
  return p;
}

nlohmann::json SplatSceneParams::to_json() const {
  return {{"views", views}, {"size", size}, {"points", points}, {"point_noise", point_noise}, {"fov", fov}, {"seed", seed}};
}

namespace {

constexpr double kPi = 3.14159265358979323846;

struct V3 {
  double x = 0, y = 0, z = 0;
  V3 operator+(const V3& o) const { return {x + o.x, y + o.y, z + o.z}; }
  V3 operator-(const V3& o) const { return {x - o.x, y - o.y, z - o.z}; }
  V3 operator*(double s) const { return {x * s, y * s, z * s}; }
  double dot(const V3& o) const { return x * o.x + y * o.y + z * o.z; }
  V3 cross(const V3& o) const { return {y * o.z - z * o.y, z * o.x - x * o.z, x * o.y - y * o.x}; }
  V3 unit() const { const double n = std::sqrt(dot(*this)); return {x / n, y / n, z / n}; }
};

// splitmix64 as a stream: identical everywhere (std:: distributions are implementation-defined).
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t x = (state += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double a, double b) { return a + (b - a) * uniform(); }
  double normal() {  // Box-Muller
    const double u = 1.0 - uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(2 * kPi * v);
  }
};

struct Blob {
  double u, v, sigma;
  V3 colour;
};
struct Texture {
  enum Kind { Checker, Stripes, Blobs, Solid } kind = Solid;
  V3 a, b;
  double freq = 1;  // cells or stripes per unit of the surface coordinates
  std::vector<Blob> blobs;
  V3 at(double u, double v) const {
    switch (kind) {
      case Checker: return ((static_cast<long>(std::floor(u * freq)) + static_cast<long>(std::floor(v * freq))) & 1) ? a : b;
      case Stripes: return std::sin(2 * kPi * freq * (u + 0.35 * v)) > 0 ? a : b;
      case Blobs: {
        V3 c = a;
        for (const auto& bl : blobs) {
          const double du = u - bl.u, dv = v - bl.v, w = std::exp(-(du * du + dv * dv) / (2 * bl.sigma * bl.sigma));
          c = c * (1 - w) + bl.colour * w;
        }
        return c;
      }
      case Solid: break;
    }
    return a;
  }
};

// A bounded plane (floor, wall, panel): points c + u·t1 + v·t2 with |u| <= hu, |v| <= hv.
struct Rect {
  V3 c, n, t1, t2;
  double hu, hv;
  int32_t plane;
  Texture tex;
};
// A box rotated by `yaw` about the world z axis; its faces are planes first_plane .. first_plane + 5.
struct Box {
  V3 c, half;
  double yaw;
  int32_t first_plane;
  Texture tex;
};
struct Sphere {
  V3 c;
  double r;
  Texture tex;
};

struct Scene {
  std::vector<Rect> rects;
  std::vector<Box> boxes;
  std::vector<Sphere> spheres;
  std::vector<std::array<double, 4>> planes;  // row k-1: plane k
  V3 light;
  double ambient = 0.35;
};

struct Hit {
  double t = 1e30;
  V3 n;  // world, outward (planes: their normal)
  V3 colour;
  int32_t plane = 0;
  const Texture* tex = nullptr;
  double u = 0, v = 0;
};

constexpr double kEps = 1e-9;

void intersect(const Rect& r, const V3& o, const V3& d, Hit& h) {
  const double den = d.dot(r.n);
  if (std::abs(den) < 1e-12) return;
  const double t = (r.c - o).dot(r.n) / den;
  if (t <= kEps || t >= h.t) return;
  const V3 q = o + d * t - r.c;
  const double u = q.dot(r.t1), v = q.dot(r.t2);
  if (std::abs(u) > r.hu || std::abs(v) > r.hv) return;
  h.t = t, h.n = r.n, h.plane = r.plane, h.tex = &r.tex, h.u = u, h.v = v;
}

void intersect(const Box& b, const V3& o, const V3& d, Hit& h) {
  const double ca = std::cos(b.yaw), sa = std::sin(b.yaw);
  auto to_local = [&](const V3& v) { return V3{ca * v.x + sa * v.y, -sa * v.x + ca * v.y, v.z}; };
  const V3 lo = to_local(o - b.c), ld = to_local(d);
  const double os[3] = {lo.x, lo.y, lo.z}, ds[3] = {ld.x, ld.y, ld.z}, hs[3] = {b.half.x, b.half.y, b.half.z};
  double tn = -1e30, tf = 1e30, sign = 1;
  int axis = 0;
  for (int i = 0; i < 3; ++i) {
    if (std::abs(ds[i]) < 1e-15) {
      if (std::abs(os[i]) > hs[i]) return;
      continue;
    }
    double t1 = (-hs[i] - os[i]) / ds[i], t2 = (hs[i] - os[i]) / ds[i], s = -1;
    if (t1 > t2) std::swap(t1, t2), s = 1;
    if (t1 > tn) tn = t1, axis = i, sign = s;
    tf = std::min(tf, t2);
  }
  if (tn > tf || tn <= kEps || tn >= h.t) return;
  const V3 ln = axis == 0 ? V3{sign, 0, 0} : axis == 1 ? V3{0, sign, 0} : V3{0, 0, sign};
  const V3 lp = lo + ld * tn;
  const double p[3] = {lp.x, lp.y, lp.z};
  h.t = tn;
  h.n = V3{ca * ln.x - sa * ln.y, sa * ln.x + ca * ln.y, ln.z};
  h.plane = b.first_plane + axis * 2 + (sign > 0 ? 1 : 0);
  h.tex = &b.tex;
  h.u = p[(axis + 1) % 3], h.v = p[(axis + 2) % 3];
}

void intersect(const Sphere& s, const V3& o, const V3& d, Hit& h) {
  const V3 oc = o - s.c;
  const double a = d.dot(d), b = 2 * d.dot(oc), c = oc.dot(oc) - s.r * s.r, disc = b * b - 4 * a * c;
  if (disc < 0) return;
  double t = (-b - std::sqrt(disc)) / (2 * a);
  if (t <= kEps) t = (-b + std::sqrt(disc)) / (2 * a);
  if (t <= kEps || t >= h.t) return;
  const V3 n = (o + d * t - s.c) * (1.0 / s.r);
  h.t = t, h.n = n, h.plane = 0, h.tex = &s.tex;
  h.u = std::atan2(n.y, n.x) / kPi, h.v = std::asin(std::clamp(n.z, -1.0, 1.0)) / kPi;
}

Hit cast(const Scene& sc, const V3& o, const V3& d) {
  Hit h;
  for (const auto& r : sc.rects) intersect(r, o, d, h);
  for (const auto& b : sc.boxes) intersect(b, o, d, h);
  for (const auto& s : sc.spheres) intersect(s, o, d, h);
  if (h.tex) {
    if (h.n.dot(d) > 0) h.n = h.n * -1.0;  // two-sided planes: the normal faces the viewer
    const double lambert = std::max(0.0, h.n.dot(sc.light));
    h.colour = h.tex->at(h.u, h.v) * (sc.ambient + (1 - sc.ambient) * lambert);
  }
  return h;
}

V3 jitter_colour(Rng& rng, V3 c) {
  auto j = [&](double v) { return std::clamp(v + rng.uniform(-0.06, 0.06), 0.02, 0.98); };
  return {j(c.x), j(c.y), j(c.z)};
}

// The room corner: fixed layout (so every seed gives a comparable scene), colours and object
// positions jittered by the seed.
Scene build_scene(uint64_t seed) {
  Rng rng{seed * 0x100000001b3ULL + 0x51a7};
  Scene sc;
  sc.light = V3{0.45, -0.55, 0.85}.unit();
  auto tex = [&](Texture::Kind k, V3 a, V3 b, double f) {
    Texture t;
    t.kind = k, t.a = jitter_colour(rng, a), t.b = jitter_colour(rng, b), t.freq = f;
    return t;
  };
  auto add_rect = [&](V3 c, V3 n, V3 up_hint, double hu, double hv, Texture t) {
    Rect r;
    r.n = n.unit();
    r.t1 = up_hint.cross(r.n).unit();
    r.t2 = r.n.cross(r.t1);
    r.c = c, r.hu = hu, r.hv = hv, r.tex = t;
    sc.planes.push_back({r.n.x, r.n.y, r.n.z, -r.n.dot(c)});
    r.plane = static_cast<int32_t>(sc.planes.size());
    sc.rects.push_back(r);
  };
  // floor (checkers), back wall (stripes), two tilted panels (noise blobs; diagonal stripes)
  add_rect({0, 0, 0}, {0, 0, 1}, {0, 1, 0}, 3.0, 3.0, tex(Texture::Checker, {0.85, 0.75, 0.55}, {0.45, 0.3, 0.2}, 1.6));
  add_rect({0, 2.5, 1.25}, {0, -1, 0}, {0, 0, 1}, 3.0, 1.25, tex(Texture::Stripes, {0.25, 0.4, 0.8}, {0.9, 0.9, 0.85}, 1.5));
  Texture blobs = tex(Texture::Blobs, {0.9, 0.85, 0.3}, {0, 0, 0}, 1);
  for (int i = 0; i < 6; ++i)
    blobs.blobs.push_back({rng.uniform(-0.5, 0.5), rng.uniform(-0.4, 0.4), rng.uniform(0.08, 0.18),
                           V3{rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)}});
  add_rect({1.5, 1.3, 0.9}, {-0.55, -0.7, 0.3}, {0, 0, 1}, 0.65, 0.55, blobs);
  add_rect({-1.6, 1.0, 0.75}, {0.6, -0.6, 0.45}, {0, 0, 1}, 0.55, 0.6, tex(Texture::Stripes, {0.2, 0.7, 0.3}, {0.95, 0.85, 0.2}, 3.0));
  auto add_box = [&](V3 c, V3 half, double yaw, Texture t) {
    Box b;
    b.c = c + V3{rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), 0};
    b.half = half, b.yaw = yaw, b.tex = t;
    b.first_plane = static_cast<int32_t>(sc.planes.size()) + 1;
    const double ca = std::cos(yaw), sa = std::sin(yaw);
    for (int axis = 0; axis < 3; ++axis)
      for (double sign : {-1.0, 1.0}) {  // the order intersect() numbers the faces in
        const V3 ln = axis == 0 ? V3{sign, 0, 0} : axis == 1 ? V3{0, sign, 0} : V3{0, 0, sign};
        const V3 n{ca * ln.x - sa * ln.y, sa * ln.x + ca * ln.y, ln.z};
        const double h = axis == 0 ? half.x : axis == 1 ? half.y : half.z;
        sc.planes.push_back({n.x, n.y, n.z, -n.dot(b.c) - h});
      }
    sc.boxes.push_back(b);
  };
  add_box({0.35, 0.5, 0.35}, {0.35, 0.35, 0.35}, 0.45, tex(Texture::Checker, {0.85, 0.2, 0.2}, {0.4, 0.05, 0.05}, 4.0));
  add_box({-0.7, 1.7, 0.6}, {0.25, 0.25, 0.6}, -0.3, tex(Texture::Stripes, {0.1, 0.6, 0.6}, {0.9, 0.95, 0.95}, 2.5));
  auto add_sphere = [&](V3 c, double r, Texture t) {
    sc.spheres.push_back({c + V3{rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), 0}, r, t});
  };
  add_sphere({-0.55, -0.35, 0.4}, 0.4, tex(Texture::Stripes, {0.8, 0.2, 0.7}, {0.95, 0.95, 0.95}, 2.0));
  add_sphere({1.05, -0.25, 0.25}, 0.25, tex(Texture::Checker, {1.0, 0.55, 0.1}, {0.3, 0.15, 0.05}, 3.0));
  add_sphere({0.6, 1.4, 1.45}, 0.3, tex(Texture::Solid, {0.6, 0.6, 0.95}, {0, 0, 0}, 1.0));  // floating
  return sc;
}

struct Pose {
  std::array<double, 9> R;  // world -> camera, row-major
  std::array<double, 3> t;
  std::array<double, 4> q;
  V3 eye;
};

// Cameras on a hemisphere in front of the back wall, looking at the scene centre: azimuths sweep
// 150 degrees, elevations and radii oscillate so that the views are not coplanar.
Pose camera_pose(const SplatSceneParams& p, int64_t i, Rng& rng) {
  const V3 target{0, 0.8, 0.6};
  const double f = (i + 0.5) / p.views;
  const double az = (-75 + 150 * f) * kPi / 180 + rng.uniform(-0.02, 0.02);
  const double el = (18 + 14 * (1 + std::sin(2.39996 * i))) * kPi / 180;
  const double r = 4.3 + 0.4 * std::sin(1.3 * i + 0.5);
  const V3 eye = target + V3{std::cos(el) * std::sin(az), -std::cos(el) * std::cos(az), std::sin(el)} * r;
  const V3 z = (target - eye).unit(), x = z.cross(V3{0, 0, 1}).unit(), y = z.cross(x);  // as Camera::look_at
  Pose pose;
  pose.q = colmap_rotation_to_quat({x.x, x.y, x.z, y.x, y.y, y.z, z.x, z.y, z.z});
  // Render with the rotation the stored quaternion gives back, so images and poses agree exactly.
  pose.R = colmap_quat_to_rotation(pose.q);
  const auto& R = pose.R;
  for (int k = 0; k < 3; ++k) pose.t[k] = -(R[k * 3] * eye.x + R[k * 3 + 1] * eye.y + R[k * 3 + 2] * eye.z);
  pose.eye = V3{-(R[0] * pose.t[0] + R[3] * pose.t[1] + R[6] * pose.t[2]), -(R[1] * pose.t[0] + R[4] * pose.t[1] + R[7] * pose.t[2]),
                -(R[2] * pose.t[0] + R[5] * pose.t[1] + R[8] * pose.t[2])};
  return pose;
}

struct Sample {
  int32_t px, py;
  V3 world;
  std::array<uint8_t, 3> rgb;
  double error;
};

}  // namespace

void generate_splat_scene(const SplatSceneParams& p, const fs::path& out) {
  const Scene scene = build_scene(static_cast<uint64_t>(p.seed));
  const int64_t V = p.views, S = p.size;
  const double focal = 0.5 * S / std::tan(0.5 * p.fov * kPi / 180), c0 = 0.5 * S;
  torch::Tensor images = torch::zeros({V, S, S, 3}, torch::kUInt8);
  torch::Tensor depth = torch::zeros({V, S, S}, torch::kFloat32);
  torch::Tensor normals = torch::zeros({V, S, S, 3}, torch::kFloat32);
  torch::Tensor ids = torch::zeros({V, S, S}, torch::kInt32);
  std::vector<Pose> poses(V);
  std::vector<std::vector<Sample>> samples(V);
  const int digits = std::max(3, static_cast<int>(std::to_string(V - 1).size()));

  at::parallel_for(0, V, 1, [&](int64_t begin, int64_t end) {
    for (int64_t v = begin; v < end; ++v) {
      Rng rng{static_cast<uint64_t>(p.seed) * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(v) * 0x2545f4914f6cdd1dULL + 1};
      const Pose pose = camera_pose(p, v, rng);
      poses[v] = pose;
      const auto& R = pose.R;
      auto ray = [&](double u, double w) {  // world direction whose camera z is 1: hit.t is z-depth
        const double a = (u - c0) / focal, b = (w - c0) / focal;
        return V3{R[0] * a + R[3] * b + R[6], R[1] * a + R[4] * b + R[7], R[2] * a + R[5] * b + R[8]};
      };
      uint8_t* img = images.data_ptr<uint8_t>() + v * S * S * 3;
      float* dep = depth.data_ptr<float>() + v * S * S;
      float* nor = normals.data_ptr<float>() + v * S * S * 3;
      int32_t* pid = ids.data_ptr<int32_t>() + v * S * S;
      std::vector<int32_t> covered;
      for (int64_t y = 0; y < S; ++y)
        for (int64_t x = 0; x < S; ++x) {
          const int64_t k = y * S + x;
          const Hit h = cast(scene, pose.eye, ray(x + 0.5, y + 0.5));
          if (h.tex) {
            dep[k] = static_cast<float>(h.t);
            nor[k * 3] = static_cast<float>(h.n.x), nor[k * 3 + 1] = static_cast<float>(h.n.y), nor[k * 3 + 2] = static_cast<float>(h.n.z);
            pid[k] = h.plane;
            covered.push_back(static_cast<int32_t>(k));
          }
          V3 c;  // 2x2 supersampling against texture and silhouette aliasing; black where nothing is hit
          for (double oy : {0.25, 0.75})
            for (double ox : {0.25, 0.75}) c = c + cast(scene, pose.eye, ray(x + ox, y + oy)).colour * 0.25;
          const double rgb[3] = {c.x, c.y, c.z};
          for (int ch = 0; ch < 3; ++ch) img[k * 3 + ch] = static_cast<uint8_t>(std::lround(std::clamp(rgb[ch], 0.0, 1.0) * 255));
        }
      // SfM-like points: surface samples of this view with its pixel colours, moved by noise.
      const int64_t quota = p.points / V + (v < p.points % V ? 1 : 0);
      for (int64_t s = 0; s < quota && !covered.empty(); ++s) {
        const int32_t k = covered[static_cast<size_t>(rng.next() % covered.size())];
        const int32_t x = k % S, y = k / S;
        const V3 clean = pose.eye + ray(x + 0.5, y + 0.5) * dep[k];
        const V3 noisy = clean + V3{rng.normal(), rng.normal(), rng.normal()} * p.point_noise;
        // reprojection error of the noisy point in this view, in pixels, as COLMAP reports it
        const V3 rel = noisy - pose.eye;
        const double cz = R[6] * rel.x + R[7] * rel.y + R[8] * rel.z;
        const double u = focal * (R[0] * rel.x + R[1] * rel.y + R[2] * rel.z) / cz + c0, w = focal * (R[3] * rel.x + R[4] * rel.y + R[5] * rel.z) / cz + c0;
        samples[v].push_back({x, y, noisy, {img[k * 3], img[k * 3 + 1], img[k * 3 + 2]}, std::hypot(u - (x + 0.5), w - (y + 0.5))});
      }
    }
  });

  ColmapModel model;
  model.cameras[1] = ColmapCamera{1, static_cast<int32_t>(ColmapModelId::Pinhole), static_cast<uint64_t>(S), static_cast<uint64_t>(S),
                                  {focal, focal, c0, c0}};
  nlohmann::json names = nlohmann::json::array();
  for (int64_t v = 0; v < V; ++v) {
    char name[32];
    std::snprintf(name, sizeof name, "view_%0*lld.png", digits, static_cast<long long>(v));
    ColmapImage im;
    im.id = static_cast<int32_t>(v + 1);
    im.qvec = poses[v].q;
    im.tvec = poses[v].t;
    im.camera_id = 1;
    im.name = name;
    for (const auto& s : samples[v]) {
      ColmapPoint3D pt;
      pt.id = model.points.size() + 1;
      pt.xyz = {s.world.x, s.world.y, s.world.z};
      pt.rgb = s.rgb;
      pt.error = s.error;
      pt.track.emplace_back(im.id, static_cast<int32_t>(im.points2d.size()));
      im.points2d.push_back({s.px + 0.5, s.py + 0.5, static_cast<int64_t>(pt.id)});
      model.points.push_back(std::move(pt));
    }
    model.images.push_back(std::move(im));
    names.push_back(name);
  }
  torch::Tensor planes = torch::empty({static_cast<int64_t>(scene.planes.size()), 4}, torch::kFloat64);
  for (size_t k = 0; k < scene.planes.size(); ++k)
    for (int j = 0; j < 4; ++j) planes[static_cast<int64_t>(k)][j] = scene.planes[k][j];

  const nlohmann::json params = p.to_json();
  write_folder_atomically(out, [&](const fs::path& dir) {
    fs::create_directories(dir / "images");
    for (int64_t v = 0; v < V; ++v) {
      const std::string png = encode_png(images[v]);
      std::ofstream f(dir / "images" / model.images[v].name, std::ios::binary);
      f.write(png.data(), static_cast<std::streamsize>(png.size()));
      if (!f) throw std::runtime_error("cannot write " + (dir / "images" / model.images[v].name).string());
    }
    write_colmap_model(dir / "sparse" / "0", model, ColmapEncoding::Binary);
    write_h5_atomically(dir / "geometry.h5", [&](H5File& f) {
      f.set_attr("schema_version", kSplatSceneSchema);
      f.set_attr("generator", std::string("splat-scene"));
      f.set_attr("params", params.dump());
      f.set_attr("image_names", names.dump());
      f.set_attr("depth_convention", std::string("metres along the camera z axis; 0 where no surface"));
      f.set_attr("normals_frame", std::string("world; unit; facing the camera; 0 where no surface"));
      f.write("depth", depth);
      f.write("normals", normals);
      f.write("plane_ids", ids);
      f.write("planes", planes);
    });
    write_file_atomically(dir / "generator.json",
                          nlohmann::json{{"generator", "splat-scene"}, {"schema_version", kSplatSceneSchema}, {"params", params}}.dump(2) + "\n");
  });
}

namespace {
class SplatSceneGenerator : public DataGenerator {
 public:
  std::string default_path() const override { return "data/splat_scene"; }
  void generate(const Config& params, const fs::path& out) override { generate_splat_scene(SplatSceneParams::from(params), out); }
  nlohmann::json resolved_params(const Config& params) const override { return SplatSceneParams::from(params).to_json(); }
};
EF_REGISTER(data_generators(), "splat-scene", [] { return std::make_unique<SplatSceneGenerator>(); },
            "multi-view ray-cast room corner in COLMAP layout with depth, normals and plane ids (splatting, PGS)");
}  // namespace

}  // namespace ef::splat
