#include "flow/flow_data.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>

#include "core/data_gen.h"
#include "core/hdf5_file.h"
#include "core/image_io.h"
#include "flow/flow_io.h"

namespace ef::flow {

namespace fs = std::filesystem;
constexpr int64_t kFlowScenesSchema = 1;

FlowScenesParams FlowScenesParams::defaults(const std::string& domain) {
  FlowScenesParams p;
  p.domain = domain;
  if (domain == "cross") {  // other textures (chosen in the renderer), larger motions, harsher imaging
    p.max_translation = 12;
    p.max_rotation = 20;
    p.min_scale = 0.85;
    p.max_scale = 1.15;
    p.bg_translation = 6;
    p.bg_rotation = 5;
    p.bg_scale = 0.06;
    p.flat_fraction = 0.4;
    p.noise = 0.03;
    p.blur = 0.5;
    p.brightness = 0.1;
    p.seed = 1;
  }
  return p;
}

FlowScenesParams FlowScenesParams::from(const Config& c, const std::string& domain) {
  FlowScenesParams p = defaults(domain);
  p.n = c.get<int64_t>("n", p.n);
  p.val_fraction = c.get<double>("val_fraction", p.val_fraction);
  p.height = c.get<int64_t>("height", p.height);
  p.width = c.get<int64_t>("width", p.width);
  p.seed = static_cast<uint64_t>(c.get<int64_t>("seed", static_cast<int64_t>(p.seed)));
  p.min_objects = c.get<int64_t>("min_objects", p.min_objects);
  p.max_objects = c.get<int64_t>("max_objects", p.max_objects);
  p.max_translation = c.get<double>("max_translation", p.max_translation);
  p.max_rotation = c.get<double>("max_rotation", p.max_rotation);
  p.min_scale = c.get<double>("min_scale", p.min_scale);
  p.max_scale = c.get<double>("max_scale", p.max_scale);
  p.bg_translation = c.get<double>("bg_translation", p.bg_translation);
  p.bg_rotation = c.get<double>("bg_rotation", p.bg_rotation);
  p.bg_scale = c.get<double>("bg_scale", p.bg_scale);
  p.flat_fraction = c.get<double>("flat_fraction", p.flat_fraction);
  p.noise = c.get<double>("noise", p.noise);
  p.blur = c.get<double>("blur", p.blur);
  p.brightness = c.get<double>("brightness", p.brightness);
  if (p.n < 20) c.invalid("n", "need at least 20 pairs");
  if (p.val_fraction <= 0 || p.val_fraction >= 1) c.invalid("val_fraction", "expected 0 < v < 1");
  if (p.height < 16 || p.width < 16 || p.height % 8 || p.width % 8) c.invalid("height", "height and width must be multiples of 8, at least 16");
  if (p.min_objects < 0 || p.max_objects < p.min_objects) c.invalid("max_objects", "expected 0 <= min_objects <= max_objects");
  if (p.min_scale <= 0 || p.max_scale < p.min_scale) c.invalid("min_scale", "expected 0 < min_scale <= max_scale");
  if (p.flat_fraction < 0 || p.flat_fraction > 1) c.invalid("flat_fraction", "expected 0..1");
  if (p.noise < 0 || p.blur < 0 || p.blur > 1 || p.brightness < 0 || p.brightness >= 1) c.invalid("noise", "noise >= 0, blur in [0,1], brightness in [0,1)");
  return p;
}

nlohmann::json FlowScenesParams::to_json() const {
  return {{"domain", domain}, {"n", n}, {"val_fraction", val_fraction}, {"height", height}, {"width", width}, {"seed", seed},
          {"min_objects", min_objects}, {"max_objects", max_objects}, {"max_translation", max_translation},
          {"max_rotation", max_rotation}, {"min_scale", min_scale}, {"max_scale", max_scale}, {"bg_translation", bg_translation},
          {"bg_rotation", bg_rotation}, {"bg_scale", bg_scale}, {"flat_fraction", flat_fraction}, {"noise", noise}, {"blur", blur},
          {"brightness", brightness}};
}

// ---- rendering -------------------------------------------------------------------------------------
namespace {

uint64_t mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

using RGB = std::array<double, 3>;

// Smoothly interpolated lattice noise in [0,1].
double value_noise(double x, double y, uint64_t seed) {
  const double xf = std::floor(x), yf = std::floor(y);
  const int64_t xi = static_cast<int64_t>(xf), yi = static_cast<int64_t>(yf);
  auto h = [&](int64_t a, int64_t b) {
    return static_cast<double>(mix(seed ^ mix(static_cast<uint64_t>(a) * 0x9E3779B1ULL + static_cast<uint64_t>(b))) >> 11) * 0x1.0p-53;
  };
  double tx = x - xf, ty = y - yf;
  tx = tx * tx * (3 - 2 * tx);
  ty = ty * ty * (3 - 2 * ty);
  const double a = h(xi, yi) + tx * (h(xi + 1, yi) - h(xi, yi));
  const double b = h(xi, yi + 1) + tx * (h(xi + 1, yi + 1) - h(xi, yi + 1));
  return a + ty * (b - a);
}

// A procedural texture, evaluated in the layer's own coordinates (so it moves with the layer).
struct Texture {
  enum Kind { Flat, Noise, Stripes, Checker, Ramp, Grating, Dots, Rings, FineNoise } kind = Flat;
  RGB a{}, b{};
  double freq = 0.2, angle = 0;
  uint64_t seed = 0;
  RGB at(double u, double v) const {
    const double c = std::cos(angle), s = std::sin(angle), ru = c * u + s * v, rv = -s * u + c * v;
    double t = 0;
    switch (kind) {
      case Flat: return a;
      case Noise: t = 0.6 * value_noise(ru * freq, rv * freq, seed) + 0.4 * value_noise(ru * freq * 3, rv * freq * 3, seed + 1); break;
      case Stripes: t = std::sin(ru * freq * 2 * M_PI) > 0 ? 1 : 0; break;
      case Checker: t = ((static_cast<int64_t>(std::floor(ru * freq)) + static_cast<int64_t>(std::floor(rv * freq))) & 1) ? 1 : 0; break;
      case Ramp: t = 0.5 + 0.5 * std::sin(ru * freq * 0.5); break;
      case Grating: t = 0.5 + 0.25 * std::sin(ru * freq * 2 * M_PI) + 0.25 * std::sin(rv * freq * 1.3 * 2 * M_PI); break;
      case Dots: {
        const double fu = ru * freq - std::floor(ru * freq) - 0.5, fv = rv * freq - std::floor(rv * freq) - 0.5;
        t = fu * fu + fv * fv < 0.09 ? 1 : 0;
        break;
      }
      case Rings: t = 0.5 + 0.5 * std::sin(std::sqrt(u * u + v * v) * freq * 2 * M_PI); break;
      case FineNoise: t = value_noise(ru * freq * 4, rv * freq * 4, seed); break;
    }
    return {a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]), a[2] + t * (b[2] - a[2])};
  }
};

// x = R(theta) * s * u + c  (u in the layer's coordinates, x in pixels)
struct Affine {
  double theta = 0, scale = 1, cx = 0, cy = 0;
  void apply(double u, double v, double& x, double& y) const {
    const double c = std::cos(theta) * scale, s = std::sin(theta) * scale;
    x = c * u - s * v + cx;
    y = s * u + c * v + cy;
  }
  void invert(double x, double y, double& u, double& v) const {
    const double c = std::cos(theta) / scale, s = std::sin(theta) / scale, dx = x - cx, dy = y - cy;
    u = c * dx + s * dy;
    v = -s * dx + c * dy;
  }
};

struct Layer {
  bool background = false;
  bool ellipse = true;
  double ra = 1, rb = 1;                        // ellipse semi-axes
  std::vector<std::array<double, 2>> polygon;  // vertices in layer coordinates
  Texture tex;
  Affine pose[2];                               // frame 1, frame 2
  bool inside(double u, double v) const {
    if (background) return true;
    if (ellipse) return (u / ra) * (u / ra) + (v / rb) * (v / rb) <= 1;
    bool in = false;  // even-odd rule
    for (size_t i = 0, j = polygon.size() - 1; i < polygon.size(); j = i++) {
      const auto& p = polygon[i];
      const auto& q = polygon[j];
      if ((p[1] > v) != (q[1] > v) && u < (q[0] - p[0]) * (v - p[1]) / (q[1] - p[1]) + p[0]) in = !in;
    }
    return in;
  }
};

// Topmost layer (highest index) covering pixel (x, y) in frame k, and its layer coordinates.
int top_layer(const std::vector<Layer>& layers, int k, double x, double y, double& u, double& v) {
  for (int i = static_cast<int>(layers.size()) - 1; i >= 0; --i) {
    layers[i].pose[k].invert(x, y, u, v);
    if (layers[i].inside(u, v)) return i;
  }
  return -1;  // unreachable: the background covers everything
}

}  // namespace

FlowScene render_flow_scene(const FlowScenesParams& p, int64_t index) {
  std::mt19937_64 rng(mix(p.seed * 0x100000001b3ULL + static_cast<uint64_t>(index) + 0xf10f));
  std::uniform_real_distribution<double> U(0.0, 1.0);
  auto uni = [&](double a, double b) { return a + (b - a) * U(rng); };
  auto colour = [&] { return RGB{U(rng), U(rng), U(rng)}; };
  const bool cross = p.domain == "cross";
  const int H = static_cast<int>(p.height), W = static_cast<int>(p.width);
  const double size = std::min(H, W), deg = M_PI / 180.0;

  auto texture = [&](bool flat) {
    Texture t;
    t.a = colour();
    t.b = colour();
    t.seed = rng();
    t.angle = uni(0, M_PI);
    if (flat) return t;  // kind Flat
    if (cross) {
      const Texture::Kind kinds[] = {Texture::Grating, Texture::Dots, Texture::Rings, Texture::FineNoise};
      t.kind = kinds[rng() % 4];
      t.freq = uni(0.08, 0.3);
    } else {
      const Texture::Kind kinds[] = {Texture::Noise, Texture::Stripes, Texture::Checker, Texture::Ramp};
      t.kind = kinds[rng() % 4];
      t.freq = uni(0.1, 0.35);
    }
    return t;
  };

  std::vector<Layer> layers;
  Layer bg;
  bg.background = true;
  bg.tex = texture(false);
  bg.pose[0] = {0, 1, 0, 0};
  {  // global affine about the image centre: x2 = R s (x1 - c) + c + t
    const double th = uni(-p.bg_rotation, p.bg_rotation) * deg, s = 1 + uni(-p.bg_scale, p.bg_scale);
    const double tx = uni(-p.bg_translation, p.bg_translation), ty = uni(-p.bg_translation, p.bg_translation);
    const double cx = 0.5 * (W - 1), cy = 0.5 * (H - 1);
    double ox, oy;
    Affine rot{th, s, 0, 0};
    rot.apply(-cx, -cy, ox, oy);
    bg.pose[1] = {th, s, ox + cx + tx, oy + cy + ty};
  }
  layers.push_back(bg);
  const int64_t count = p.min_objects + static_cast<int64_t>(rng() % static_cast<uint64_t>(p.max_objects - p.min_objects + 1));
  for (int64_t i = 0; i < count; ++i) {
    Layer L;
    const double r = uni(0.12, 0.3) * size;
    L.ellipse = U(rng) < 0.4;
    if (L.ellipse) {
      L.ra = r;
      L.rb = r * uni(0.5, 1.0);
    } else {  // star-shaped polygon: sorted angles, random radii
      const int nv = 3 + static_cast<int>(rng() % 6);
      std::vector<double> ang;
      for (int k = 0; k < nv; ++k) ang.push_back(uni(0, 2 * M_PI));
      std::sort(ang.begin(), ang.end());
      for (double a : ang) {
        const double rr = r * uni(0.5, 1.0);
        L.polygon.push_back({rr * std::cos(a), rr * std::sin(a)});
      }
    }
    L.tex = texture(U(rng) < p.flat_fraction);
    L.pose[0] = {uni(0, 2 * M_PI), 1.0, uni(0.1, 0.9) * (W - 1), uni(0.1, 0.9) * (H - 1)};
    L.pose[1] = L.pose[0];
    L.pose[1].theta += uni(-p.max_rotation, p.max_rotation) * deg;
    L.pose[1].scale *= uni(p.min_scale, p.max_scale);
    L.pose[1].cx += uni(-p.max_translation, p.max_translation);
    L.pose[1].cy += uni(-p.max_translation, p.max_translation);
    layers.push_back(L);
  }

  FlowScene s;
  torch::Tensor f1 = torch::empty({H, W, 3}, torch::kFloat64), f2 = torch::empty({H, W, 3}, torch::kFloat64);
  s.flow = torch::empty({H, W, 2}, torch::kFloat32);
  s.occ = torch::empty({H, W}, torch::kUInt8);
  s.flat = torch::empty({H, W}, torch::kUInt8);
  double* i1 = f1.data_ptr<double>();
  double* i2 = f2.data_ptr<double>();
  float* fl = s.flow.data_ptr<float>();
  uint8_t* occ = s.occ.data_ptr<uint8_t>();
  uint8_t* flat = s.flat.data_ptr<uint8_t>();
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const int64_t o = static_cast<int64_t>(y) * W + x;
      double u, v;
      const int l1 = top_layer(layers, 0, x, y, u, v);
      const RGB c1 = layers[l1].tex.at(u, v);
      double x2, y2;
      layers[l1].pose[1].apply(u, v, x2, y2);  // where this point of the layer is in frame 2
      fl[2 * o] = static_cast<float>(x2 - x);
      fl[2 * o + 1] = static_cast<float>(y2 - y);
      double u2, v2;
      const bool in_frame = x2 >= 0 && x2 <= W - 1 && y2 >= 0 && y2 <= H - 1;
      occ[o] = !in_frame || top_layer(layers, 1, x2, y2, u2, v2) != l1;
      flat[o] = layers[l1].tex.kind == Texture::Flat;
      const int l2 = top_layer(layers, 1, x, y, u2, v2);
      const RGB c2 = layers[l2].tex.at(u2, v2);
      for (int k = 0; k < 3; ++k) i1[3 * o + k] = c1[k], i2[3 * o + k] = c2[k];
    }
  // imaging: blur, brightness change, sensor noise (independent per frame)
  auto finish = [&](torch::Tensor img, double gain) {
    if (p.blur > 0) {
      torch::Tensor k = torch::tensor({p.blur / 4, 1 - p.blur / 2, p.blur / 4}, torch::kFloat64);
      torch::Tensor k2 = (k.view({3, 1}) * k.view({1, 3})).view({1, 1, 3, 3}).expand({3, 1, 3, 3}).contiguous();
      torch::Tensor chw = torch::nn::functional::pad(img.permute({2, 0, 1}).unsqueeze(0),
                                                     torch::nn::functional::PadFuncOptions({1, 1, 1, 1}).mode(torch::kReplicate));
      img = torch::nn::functional::conv2d(chw, k2, torch::nn::functional::Conv2dFuncOptions().groups(3))[0].permute({1, 2, 0}).contiguous();
    }
    img = img * gain;
    if (p.noise > 0) {
      std::normal_distribution<double> N(0.0, p.noise);
      double* d = img.data_ptr<double>();
      for (int64_t i = 0; i < img.numel(); ++i) d[i] += N(rng);
    }
    return (img.clamp(0, 1) * 255).round().to(torch::kUInt8);
  };
  s.img1 = finish(f1, 1.0);
  s.img2 = finish(f2, 1.0 + uni(-p.brightness, p.brightness));
  return s;
}

void generate_flow_scenes(const FlowScenesParams& p, const fs::path& path) {
  const int64_t n_val = std::max<int64_t>(10, static_cast<int64_t>(std::llround(p.n * p.val_fraction)));
  const int64_t n_train = p.n - n_val, H = p.height, W = p.width;
  torch::Tensor img1 = torch::empty({p.n, H, W, 3}, torch::kUInt8), img2 = torch::empty({p.n, H, W, 3}, torch::kUInt8);
  torch::Tensor flow = torch::empty({p.n, H, W, 2}, torch::kFloat32);
  torch::Tensor occ = torch::empty({p.n, H, W}, torch::kUInt8), flat = torch::empty({p.n, H, W}, torch::kUInt8);
  at::parallel_for(0, p.n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      FlowScene s = render_flow_scene(p, i);
      img1[i].copy_(s.img1);
      img2[i].copy_(s.img2);
      flow[i].copy_(s.flow);
      occ[i].copy_(s.occ);
      flat[i].copy_(s.flat);
    }
  });
  write_h5_atomically(path, [&](H5File& f) {
    f.set_attr("schema_version", kFlowScenesSchema);
    f.set_attr("generator", std::string(p.domain == "cross" ? "flow-cross" : "flow-chairs"));
    f.set_attr("params", p.to_json().dump());
    for (auto [split, b, e] : {std::tuple<std::string, int64_t, int64_t>{"train", 0, n_train}, {"val", n_train, p.n}}) {
      f.write(split + "/img1", img1.slice(0, b, e));
      f.write(split + "/img2", img2.slice(0, b, e));
      f.write(split + "/flow", flow.slice(0, b, e));
      f.write(split + "/occ", occ.slice(0, b, e));
      f.write(split + "/flat", flat.slice(0, b, e));
    }
  });
}

FlowScenesDataset::FlowScenesDataset(const fs::path& path, const std::string& split) {
  H5File f(path, H5File::Mode::Read);
  require_schema(f, kFlowScenesSchema);
  img1_ = f.read(split + "/img1");
  img2_ = f.read(split + "/img2");
  flow_ = f.read(split + "/flow").to(torch::kFloat32);
  occ_ = f.read(split + "/occ");
  flat_ = f.read(split + "/flat");
  if (img1_.dim() != 4 || img1_.size(3) != 3 || img1_.scalar_type() != torch::kUInt8 || img2_.sizes() != img1_.sizes())
    throw std::runtime_error(path.string() + ": " + split + "/img1 and img2 must be uint8 [N,H,W,3] of one shape");
  if (flow_.dim() != 4 || flow_.size(3) != 2 || flow_.sizes().slice(0, 3) != img1_.sizes().slice(0, 3))
    throw std::runtime_error(path.string() + ": " + split + "/flow must be float [N,H,W,2] matching the images");
  if (occ_.sizes() != flow_.sizes().slice(0, 3) || flat_.sizes() != occ_.sizes())
    throw std::runtime_error(path.string() + ": " + split + "/occ and flat must be [N,H,W] matching the images");
}

Sample FlowScenesDataset::get(int64_t i) const {
  auto img = [](const torch::Tensor& t) { return t.permute({2, 0, 1}).to(torch::kFloat32).div_(255.0f); };
  return {{"image1", img(img1_[i])},
          {"image2", img(img2_[i])},
          {"flow", flow_[i].permute({2, 0, 1}).clone()},
          {"valid", torch::ones({flow_.size(1), flow_.size(2)})},
          {"occ", occ_[i].to(torch::kFloat32)},
          {"flat", flat_[i].to(torch::kFloat32)}};
}

// ---- benchmark folders -----------------------------------------------------------------------------
namespace {
fs::path training_dir(const fs::path& root) { return fs::is_directory(root / "training") ? root / "training" : root; }
std::vector<fs::path> sorted_files(const fs::path& dir, const std::string& ext) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ext) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

std::string detect_flow_layout(const fs::path& root) {
  if (!fs::is_directory(root)) throw std::runtime_error("flow data folder not found: " + root.string());
  const fs::path t = training_dir(root);
  if (fs::is_directory(t / "flow") && (fs::is_directory(t / "clean") || fs::is_directory(t / "final"))) return "sintel";
  if (fs::is_directory(t / "image_2") && fs::is_directory(t / "flow_occ")) return "kitti";
  throw std::runtime_error(root.string() + " is neither a Sintel folder ([training/]{clean,final}/, flow/) nor a KITTI 2015 one "
                           "([training/]image_2/, flow_occ/)");
}

std::vector<FlowPairFiles> list_sintel(const fs::path& root, const std::string& pass) {
  const fs::path t = training_dir(root);
  std::vector<std::string> passes;
  for (std::string p : {"clean", "final"})
    if ((pass == "both" || pass == p) && fs::is_directory(t / p)) passes.push_back(p);
  if (passes.empty()) throw std::runtime_error(t.string() + ": no Sintel pass folder for \"" + pass + "\" (clean/ or final/)");
  std::vector<FlowPairFiles> out;
  for (const auto& p : passes) {
    std::vector<fs::path> scenes;
    for (const auto& e : fs::directory_iterator(t / p))
      if (e.is_directory()) scenes.push_back(e.path());
    std::sort(scenes.begin(), scenes.end());
    for (const auto& scene : scenes) {
      std::vector<fs::path> frames = sorted_files(scene, ".png");
      for (size_t i = 0; i + 1 < frames.size(); ++i) {
        fs::path flo = t / "flow" / scene.filename() / frames[i].filename().replace_extension(".flo");
        if (!fs::exists(flo)) throw std::runtime_error("Sintel: missing flow " + flo.string() + " for " + frames[i].string());
        out.push_back({frames[i], frames[i + 1], flo, p});
      }
    }
  }
  return out;
}

std::vector<FlowPairFiles> list_kitti(const fs::path& root) {
  const fs::path t = training_dir(root);
  std::vector<FlowPairFiles> out;
  for (const auto& gt : sorted_files(t / "flow_occ", ".png")) {
    const std::string id = gt.stem().string();  // 000000_10
    if (id.size() < 3 || id.substr(id.size() - 3) != "_10") continue;
    const std::string base = id.substr(0, id.size() - 3);
    fs::path a = t / "image_2" / (base + "_10.png"), b = t / "image_2" / (base + "_11.png");
    if (!fs::exists(a) || !fs::exists(b)) throw std::runtime_error("KITTI: missing " + (fs::exists(a) ? b : a).string() + " for " + gt.string());
    out.push_back({a, b, gt, "kitti"});
  }
  if (out.empty()) throw std::runtime_error((t / "flow_occ").string() + ": no *_10.png ground-truth files");
  return out;
}

Sample load_flow_pair(const FlowPairFiles& f) {
  auto img = [](const fs::path& p) {
    torch::Tensor t = read_image(p);
    if (t.dim() == 2) t = t.unsqueeze(-1);
    if (t.size(2) == 1) t = t.expand({t.size(0), t.size(1), 3});
    if (t.size(2) == 4) t = t.narrow(2, 0, 3);
    if (t.scalar_type() != torch::kUInt8) throw std::runtime_error(p.string() + ": expected an 8-bit image");
    return t.permute({2, 0, 1}).to(torch::kFloat32).div_(255.0f);
  };
  Sample s{{"image1", img(f.image1)}, {"image2", img(f.image2)}};
  if (f.flow.extension() == ".flo") {
    torch::Tensor flow = read_flo(f.flow);
    torch::Tensor valid = flo_valid(flow);
    s["flow"] = flow.masked_fill(valid.logical_not().unsqueeze(-1), 0).permute({2, 0, 1}).contiguous();
    s["valid"] = valid.to(torch::kFloat32);
  } else {
    KittiFlow k = read_kitti_flow(f.flow);
    s["flow"] = k.flow.permute({2, 0, 1}).contiguous();
    s["valid"] = k.valid.to(torch::kFloat32);
  }
  if (s["image1"].sizes() != s["image2"].sizes() || s["image1"].size(1) != s["flow"].size(1) || s["image1"].size(2) != s["flow"].size(2))
    throw std::runtime_error(f.image1.string() + ", " + f.image2.string() + " and " + f.flow.string() + " differ in size");
  return s;
}

// ---- `edgeforge data gen flow-chairs | flow-cross` ------------------------------------------------
namespace {
class FlowScenesGenerator : public DataGenerator {
 public:
  explicit FlowScenesGenerator(std::string domain) : domain_(std::move(domain)) {}
  std::string default_path() const override { return "data/flow_" + domain_ + ".h5"; }
  void generate(const Config& params, const fs::path& out) override { generate_flow_scenes(FlowScenesParams::from(params, domain_), out); }
  nlohmann::json resolved_params(const Config& params) const override { return FlowScenesParams::from(params, domain_).to_json(); }

 private:
  std::string domain_;
};
EF_REGISTER(data_generators(), "flow-chairs", [] { return std::make_unique<FlowScenesGenerator>("chairs"); },
            "FlyingChairs-like image pairs: textured shapes under random affine motions, exact flow and occlusion (flow)");
EF_REGISTER(data_generators(), "flow-cross", [] { return std::make_unique<FlowScenesGenerator>("cross"); },
            "flow pairs of a second domain (other textures, larger motions, noise and blur) for cross-domain tests (flow)");
}  // namespace

}  // namespace ef::flow
