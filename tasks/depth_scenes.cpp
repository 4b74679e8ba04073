#include "tasks/depth_scenes.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <random>

#include "core/hdf5_file.h"

namespace ef {

namespace fs = std::filesystem;
constexpr int64_t kDepthScenesSchema = 1;

DepthScenesParams DepthScenesParams::from(const Config& c) {
  DepthScenesParams p;
  p.n = c.get<int64_t>("n", p.n);
  p.val_fraction = c.get<double>("val_fraction", p.val_fraction);
  p.size = c.get<int64_t>("size", p.size);
  p.seed = static_cast<uint64_t>(c.get<int64_t>("seed", 0));
  p.max_depth = c.get<double>("max_depth", p.max_depth);
  p.noise = c.get<double>("noise", p.noise);
  if (p.n < 20) c.invalid("n", "need at least 20 images");
  if (p.val_fraction <= 0 || p.val_fraction >= 1) c.invalid("val_fraction", "expected 0 < v < 1");
  if (p.size < 8) c.invalid("size", "at least 8 pixels");
  if (p.max_depth < 4) c.invalid("max_depth", "expected at least 4 (metres)");
  if (p.noise < 0) c.invalid("noise", "must be >= 0");
  return p;
}

nlohmann::json DepthScenesParams::to_json() const {
  return {{"n", n}, {"val_fraction", val_fraction}, {"size", size}, {"seed", seed}, {"max_depth", max_depth}, {"noise", noise}};
}

namespace {

struct V3 {
  double x = 0, y = 0, z = 0;
  V3 operator+(const V3& o) const { return {x + o.x, y + o.y, z + o.z}; }
  V3 operator-(const V3& o) const { return {x - o.x, y - o.y, z - o.z}; }
  V3 operator*(double s) const { return {x * s, y * s, z * s}; }
  double dot(const V3& o) const { return x * o.x + y * o.y + z * o.z; }
  V3 cross(const V3& o) const { return {y * o.z - z * o.y, z * o.x - x * o.z, x * o.y - y * o.x}; }
  V3 unit() const { double n = std::sqrt(dot(*this)); return {x / n, y / n, z / n}; }
};

struct Material {
  V3 a, b;          // two colours
  int pattern = 0;  // 0 solid, 1 stripes, 2 checker
  double freq = 4;
  V3 colour(const V3& p) const {
    switch (pattern) {
      case 1: return std::sin(freq * (p.x + 0.7 * p.y + 0.4 * p.z)) > 0 ? a : b;
      case 2: {
        long s = static_cast<long>(std::floor(freq * p.x * 0.5)) + static_cast<long>(std::floor(freq * p.y * 0.5)) +
                 static_cast<long>(std::floor(freq * p.z * 0.5));
        return (s & 1) ? a : b;
      }
    }
    return a;
  }
};

enum class Kind { Sphere, Box, Panel };
struct Primitive {
  Kind kind;
  V3 centre;
  double radius = 0;     // sphere
  V3 half;               // box half extents (object frame); panel: half.x, half.y along t1, t2
  double angle = 0;      // box rotation about the vertical axis
  V3 normal, t1, t2;     // panel frame
  Material mat;
};

struct Hit {
  double t = 1e30;
  V3 normal;
  const Material* mat = nullptr;
};

uint64_t mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

void intersect(const Primitive& pr, const V3& o, const V3& d, Hit& hit) {
  constexpr double eps = 1e-6;
  if (pr.kind == Kind::Sphere) {
    V3 oc = o - pr.centre;
    double a = d.dot(d), b = 2 * d.dot(oc), c = oc.dot(oc) - pr.radius * pr.radius, disc = b * b - 4 * a * c;
    if (disc < 0) return;
    double t = (-b - std::sqrt(disc)) / (2 * a);
    if (t > eps && t < hit.t) hit = {t, (o + d * t - pr.centre).unit(), &pr.mat};
  } else if (pr.kind == Kind::Box) {
    const double ca = std::cos(pr.angle), sa = std::sin(pr.angle);
    auto to_local = [&](const V3& v) { return V3{ca * v.x + sa * v.z, v.y, -sa * v.x + ca * v.z}; };
    V3 lo = to_local(o - pr.centre), ld = to_local(d);
    double tn = -1e30, tf = 1e30;
    int axis = 0;
    double sign = 1;
    const double os[3] = {lo.x, lo.y, lo.z}, ds[3] = {ld.x, ld.y, ld.z}, hs[3] = {pr.half.x, pr.half.y, pr.half.z};
    for (int i = 0; i < 3; ++i) {
      if (std::abs(ds[i]) < 1e-12) {
        if (std::abs(os[i]) > hs[i]) return;
        continue;
      }
      double t1 = (-hs[i] - os[i]) / ds[i], t2 = (hs[i] - os[i]) / ds[i];
      double s = -1;
      if (t1 > t2) std::swap(t1, t2), s = 1;
      if (t1 > tn) tn = t1, axis = i, sign = s;
      tf = std::min(tf, t2);
    }
    if (tn > tf || tn <= eps || tn >= hit.t) return;
    V3 ln = axis == 0 ? V3{sign, 0, 0} : axis == 1 ? V3{0, sign, 0} : V3{0, 0, sign};
    hit = {tn, V3{ca * ln.x - sa * ln.z, ln.y, sa * ln.x + ca * ln.z}, &pr.mat};
  } else {
    double den = d.dot(pr.normal);
    if (std::abs(den) < 1e-9) return;
    double t = (pr.centre - o).dot(pr.normal) / den;
    if (t <= eps || t >= hit.t) return;
    V3 q = o + d * t - pr.centre;
    if (std::abs(q.dot(pr.t1)) > pr.half.x || std::abs(q.dot(pr.t2)) > pr.half.y) return;
    hit = {t, den < 0 ? pr.normal : pr.normal * -1.0, &pr.mat};
  }
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> render_depth_scene(const DepthScenesParams& p, int64_t index) {
  std::mt19937_64 rng(mix(p.seed * 0x100000001b3ULL + static_cast<uint64_t>(index) + 0x5eed));
  std::uniform_real_distribution<double> U(0.0, 1.0);
  auto uni = [&](double a, double b) { return a + (b - a) * U(rng); };
  auto colour = [&] { return V3{U(rng), U(rng), U(rng)}; };
  auto material = [&] {
    Material m;
    m.a = colour();
    m.b = m.a * uni(0.3, 0.7);
    m.pattern = static_cast<int>(rng() % 3);
    m.freq = uni(2.0, 8.0);
    return m;
  };
  const int S = static_cast<int>(p.size);
  const double maxd = p.max_depth;

  // camera: at height h above the ground (y = 0), pitched down, looking along +z
  const double h = uni(1.0, 2.0), pitch = uni(0.05, 0.3), fov = uni(0.9, 1.15);
  const double focal = 0.5 * S / std::tan(0.5 * fov);
  const V3 eye{0, h, 0}, fwd{0, -std::sin(pitch), std::cos(pitch)}, right{1, 0, 0}, up{0, std::cos(pitch), std::sin(pitch)};

  Material ground = material(), wall = material();
  ground.pattern = 2;
  ground.freq = uni(1.0, 3.0);
  const double wall_z = uni(0.7, 0.85) * maxd;
  std::vector<Primitive> prims;
  const int count = 2 + static_cast<int>(rng() % 5);
  for (int i = 0; i < count; ++i) {
    Primitive pr;
    const double z = uni(2.0, wall_z - 1.0), x = uni(-0.55, 0.55) * z * std::tan(0.5 * fov) * 1.2;
    const int kind = static_cast<int>(rng() % 3);
    pr.mat = material();
    if (kind == 0) {
      pr.kind = Kind::Sphere;
      pr.radius = uni(0.25, 0.9);
      pr.centre = {x, U(rng) < 0.7 ? pr.radius : uni(pr.radius, 2.0), z};  // on the ground or floating
    } else if (kind == 1) {
      pr.kind = Kind::Box;
      pr.half = {uni(0.2, 0.8), uni(0.2, 1.0), uni(0.2, 0.8)};
      pr.centre = {x, pr.half.y, z};
      pr.angle = uni(-1.5, 1.5);
    } else {
      pr.kind = Kind::Panel;
      const double yaw = uni(-1.2, 1.2), tilt = uni(-0.6, 0.6);
      pr.normal = V3{std::sin(yaw) * std::cos(tilt), std::sin(tilt), -std::cos(yaw) * std::cos(tilt)}.unit();
      pr.t1 = V3{0, 1, 0}.cross(pr.normal).unit();
      pr.t2 = pr.normal.cross(pr.t1).unit();
      pr.half = {uni(0.3, 1.0), uni(0.3, 1.0), 0};
      pr.centre = {x, uni(pr.half.y, 2.0), z};
    }
    prims.push_back(pr);
  }
  const V3 light = V3{uni(-0.6, 0.6), 1.0, uni(-0.8, 0.2)}.unit();
  const double ambient = uni(0.25, 0.45), noise = p.noise * U(rng);
  std::normal_distribution<double> N(0.0, 1.0);

  torch::Tensor img = torch::empty({S, S, 3}, torch::kUInt8), depth = torch::empty({S, S}, torch::kFloat32);
  uint8_t* out = img.data_ptr<uint8_t>();
  float* dep = depth.data_ptr<float>();
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      const double cx = (x + 0.5 - 0.5 * S) / focal, cy = -(y + 0.5 - 0.5 * S) / focal;
      const V3 d = right * cx + up * cy + fwd;  // camera-frame z component 1: t is the z-depth
      Hit hit;
      if (d.y < -1e-9) {  // ground
        double t = -h / d.y;
        if (t < hit.t) hit = {t, V3{0, 1, 0}, &ground};
      }
      if (d.z > 1e-9) {  // back wall
        double t = (wall_z - eye.z) / d.z;
        if (t < hit.t) hit = {t, V3{0, 0, -1}, &wall};
      }
      for (const auto& pr : prims) intersect(pr, eye, d, hit);
      const double t = std::min(hit.t, maxd);
      V3 c{0.5, 0.5, 0.5};
      if (hit.mat) {
        V3 q = eye + d * hit.t;
        c = hit.mat->colour(q) * (ambient + (1 - ambient) * std::max(0.0, hit.normal.dot(light)));
      }
      dep[y * S + x] = static_cast<float>(t);
      const double v[3] = {c.x, c.y, c.z};
      for (int k = 0; k < 3; ++k)
        out[(y * S + x) * 3 + k] = static_cast<uint8_t>(std::lround(std::clamp(v[k] + noise * N(rng), 0.0, 1.0) * 255.0));
    }
  return {img, depth};
}

void generate_depth_scenes(const DepthScenesParams& p, const fs::path& path) {
  const int64_t n_val = std::max<int64_t>(10, static_cast<int64_t>(std::llround(p.n * p.val_fraction)));
  const int64_t n_train = p.n - n_val;
  torch::Tensor images = torch::empty({p.n, p.size, p.size, 3}, torch::kUInt8);
  torch::Tensor depth = torch::empty({p.n, p.size, p.size}, torch::kFloat32);
  at::parallel_for(0, p.n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      auto [img, d] = render_depth_scene(p, i);
      images[i].copy_(img);
      depth[i].copy_(d);
    }
  });
  write_h5_atomically(path, [&](H5File& f) {
    f.set_attr("schema_version", kDepthScenesSchema);
    f.set_attr("generator", std::string("depth-scenes"));
    f.set_attr("params", p.to_json().dump());
    f.write("train/images", images.slice(0, 0, n_train));
    f.write("train/depth", depth.slice(0, 0, n_train));
    f.write("val/images", images.slice(0, n_train));
    f.write("val/depth", depth.slice(0, n_train));
  });
}

DepthScenesDataset::DepthScenesDataset(const fs::path& path, const std::string& split) {
  H5File f(path, H5File::Mode::Read);
  require_schema(f, kDepthScenesSchema);
  images_ = f.read(split + "/images");
  depth_ = f.read(split + "/depth").to(torch::kFloat32);
  if (images_.dim() != 4 || images_.size(3) != 3 || images_.scalar_type() != torch::kUInt8)
    throw std::runtime_error(path.string() + ": " + split + "/images is not uint8 [N,H,W,3]");
  if (depth_.dim() != 3 || depth_.size(0) != images_.size(0) || depth_.size(1) != images_.size(1) || depth_.size(2) != images_.size(2))
    throw std::runtime_error(path.string() + ": " + split + "/depth is not float [N,H,W] matching " + split + "/images");
  if (f.has_attr("params")) max_depth_ = nlohmann::json::parse(f.attr_string("params")).value("max_depth", max_depth_);
}

Sample DepthScenesDataset::get(int64_t index) const {
  torch::Tensor img = images_[index].permute({2, 0, 1}).to(torch::kFloat32).div_(255.0f);
  return {{"image", img}, {"depth", depth_[index].unsqueeze(0).clone()}};
}

}  // namespace ef

// ---- `edgeforge data gen depth-scenes` ---------------------------------------------------------
#include "core/data_gen.h"

namespace ef {
namespace {
class DepthScenesGenerator : public DataGenerator {
 public:
  std::string default_path() const override { return "data/depth_scenes.h5"; }
  void generate(const Config& params, const fs::path& out) override { generate_depth_scenes(DepthScenesParams::from(params), out); }
  nlohmann::json resolved_params(const Config& params) const override { return DepthScenesParams::from(params).to_json(); }
};
EF_REGISTER(data_generators(), "depth-scenes", [] { return std::make_unique<DepthScenesGenerator>(); },
            "ray-cast scenes of random 3-D primitives with metric z-depth (depth)");
}  // namespace
}  // namespace ef
