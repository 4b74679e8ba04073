// Generators "captions" and "edits" and their datasets. What the data holds and the file layout are
// described at the top of tasks/caption_data.h; how a scene is drawn is here:
//
// - The attribute labels of a sample and its scene seed come from the sample's own generator
//   (seeded from the dataset seed, the generator, the split and the index).
// - render_scene draws everything the attributes leave open from the scene seed, always in the same
//   order and always for three objects whatever the count, so that an edit of one attribute leaves the
//   background (tones, stripe period, checker phase, noise) and the jitter of every object as it was.
// - Shapes are drawn by tasks/shape_drawing.h (anti-aliased by 2x2 supersampling), the objects of a
//   group side by side (two) or in a triangle (three) around the grid position, moved inwards just
//   enough to stay inside the image.
#include "tasks/caption_data.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "core/checkpoint.h"
#include "core/data_gen.h"
#include "tasks/shape_drawing.h"

namespace ef {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kSceneSchema = kSceneSchemaVersion;
enum Attr : int { kColour = 0, kShape, kPosition, kSize, kCount, kBackground, kNumAttrs };

struct ColourDef {
  const char* name;
  double rgb[3];
};
const ColourDef kColours[] = {{"red", {0.88, 0.12, 0.10}},   {"green", {0.15, 0.72, 0.18}},  {"blue", {0.16, 0.32, 0.92}},
                              {"yellow", {0.95, 0.88, 0.12}}, {"purple", {0.58, 0.18, 0.78}}, {"orange", {0.98, 0.55, 0.08}},
                              {"white", {0.96, 0.96, 0.96}}};
struct ShapeDef {
  const char* name;
  const char* plural;
  DrawnShape shape;
};
const ShapeDef kShapes[] = {{"circle", "circles", DrawnShape::Disk}, {"square", "squares", DrawnShape::Square},
                            {"triangle", "triangles", DrawnShape::Triangle}, {"star", "stars", DrawnShape::Star},
                            {"ring", "rings", DrawnShape::Ring}, {"cross", "crosses", DrawnShape::Plus}};
struct PositionDef {
  const char* name;
  const char* phrase;  // in a caption
  int col, row;
};
const PositionDef kPositions[] = {{"top left", "at the top left", 0, 0},       {"top", "at the top", 1, 0},
                                  {"top right", "at the top right", 2, 0},     {"left", "on the left", 0, 1},
                                  {"centre", "in the centre", 1, 1},           {"right", "on the right", 2, 1},
                                  {"bottom left", "at the bottom left", 0, 2}, {"bottom", "at the bottom", 1, 2},
                                  {"bottom right", "at the bottom right", 2, 2}};
struct BackgroundDef {
  const char* name;
  const char* phrase;  // appended to a caption; short, so that the longest caption fits in 64 bytes
};
const BackgroundDef kBackgrounds[] = {{"plain", ""}, {"stripes", " on stripes"}, {"checker", " on checks"}, {"noise", " on noise"}};
const char* const kSizes[] = {"small", "large"};
const double kSizeRadius[] = {0.095, 0.16};  // object radius, fraction of the image size
const char* const kCounts[] = {"one", "two", "three"};

template <class T, size_t N>
const T& by_name(const T (&table)[N], const std::string& name) {
  for (const auto& e : table)
    if (name == e.name) return e;
  throw std::logic_error("scene vocabulary: no entry '" + name + "'");
}

std::vector<SceneAttribute> make_vocab(bool basic) {
  auto names = [](const auto& table, size_t limit) {
    std::vector<std::string> v;
    for (const auto& e : table)
      if (v.size() < limit) v.push_back(e.name);
    return v;
  };
  std::vector<SceneAttribute> a(kNumAttrs);
  a[kColour] = {"colour", names(kColours, basic ? 4 : 7)};
  a[kShape] = {"shape", names(kShapes, basic ? 3 : 6)};
  a[kPosition] = {"position", basic ? std::vector<std::string>{"left", "centre", "right"} : names(kPositions, 9)};
  a[kSize] = {"size", {kSizes[0], kSizes[1]}};
  a[kCount] = {"count", {kCounts[0], kCounts[1], kCounts[2]}};
  a[kBackground] = {"background", names(kBackgrounds, basic ? 2 : 4)};
  return a;
}

const std::string& value(const std::vector<SceneAttribute>& attrs, const std::vector<int64_t>& labels, int a) {
  return attrs.at(a).values.at(static_cast<size_t>(labels.at(a)));
}

int64_t object_count(const std::vector<SceneAttribute>& attrs, const std::vector<int64_t>& labels) {
  const std::string& c = value(attrs, labels, kCount);
  for (int64_t i = 0; i < 3; ++i)
    if (c == kCounts[i]) return i + 1;
  throw std::logic_error("scene vocabulary: bad count '" + c + "'");
}

// Uniform in [0, 1) from the top 53 bits: the same numbers with every standard library.
double unit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

void check_labels(const std::vector<SceneAttribute>& attrs, const std::vector<int64_t>& labels) {
  if (attrs.size() != kNumAttrs || labels.size() != attrs.size())
    throw std::invalid_argument("scene: expected " + std::to_string(kNumAttrs) + " attributes and labels, got " +
                                std::to_string(attrs.size()) + " and " + std::to_string(labels.size()));
  for (size_t a = 0; a < attrs.size(); ++a)
    if (labels[a] < 0 || labels[a] >= static_cast<int64_t>(attrs[a].values.size()))
      throw std::invalid_argument("scene: label " + std::to_string(labels[a]) + " of '" + attrs[a].name + "' is outside [0, " +
                                  std::to_string(attrs[a].values.size()) + ")");
}

// The instruction that turns the scene `from` into `to` (which differ in attribute `a`).
std::string instruction(const std::vector<SceneAttribute>& attrs, const std::vector<int64_t>& from, const std::vector<int64_t>& to, int a) {
  const ShapeDef& shape = by_name(kShapes, value(attrs, from, kShape));
  const bool many = object_count(attrs, from) > 1;
  const std::string noun = many ? shape.plural : shape.name, pronoun = many ? "them" : "it";
  switch (a) {
    case kColour: return "make the " + noun + " " + value(attrs, to, kColour);
    case kShape: {
      const ShapeDef& target = by_name(kShapes, value(attrs, to, kShape));
      return "turn the " + noun + " into " + (many ? std::string(target.plural) : std::string("a ") + target.name);
    }
    case kPosition: return "move " + pronoun + " to the " + value(attrs, to, kPosition);
    case kSize: return "make " + pronoun + (value(attrs, to, kSize) == "large" ? " bigger" : " smaller");
    case kCount:
      return object_count(attrs, to) > object_count(attrs, from) ? std::string("add another ") + shape.name
                                                                 : std::string("remove one of the ") + shape.plural;
    case kBackground: return "change the background to " + value(attrs, to, kBackground);
  }
  throw std::logic_error("scene: bad attribute index");
}

// Text `s` into row `row` of a uint8 [N, T] tensor, zero-padded.
// The seed of sample `index` of `split` for generator `gen`.
uint64_t sample_seed(const SceneDataParams& p, const std::string& gen, const std::string& split, int64_t index) {
  return splitmix64(splitmix64(p.seed ^ fnv1a64(gen + "/" + split)) + static_cast<uint64_t>(index));
}

std::vector<int64_t> draw_labels(const std::vector<SceneAttribute>& attrs, std::mt19937_64& rng) {
  std::vector<int64_t> labels;
  for (const auto& a : attrs) labels.push_back(static_cast<int64_t>(rng() % a.values.size()));
  return labels;
}

void write_root(H5File& f, const SceneDataParams& p, const std::string& gen) { write_scene_root(f, gen, p.to_json(), scene_attributes(p.vocab)); }

}  // namespace

const std::vector<SceneAttribute>& scene_attributes(const std::string& vocab) {
  static const std::vector<SceneAttribute> full = make_vocab(false), basic = make_vocab(true);
  if (vocab == "full") return full;
  if (vocab == "basic") return basic;
  throw std::invalid_argument("unknown scene vocabulary \"" + vocab + "\" (expected \"full\" or \"basic\")");
}

SceneDataParams SceneDataParams::from(const Config& c, int64_t default_train, int64_t default_val) {
  SceneDataParams p;
  p.n_train = c.get<int64_t>("n_train", default_train);
  p.n_val = c.get<int64_t>("n_val", default_val);
  p.image_size = c.get<int64_t>("image_size", p.image_size);
  p.seed = static_cast<uint64_t>(c.get<int64_t>("seed", 0));
  p.max_text_bytes = c.get<int64_t>("max_text_bytes", p.max_text_bytes);
  p.vocab = c.get<std::string>("vocab", p.vocab);
  if (p.n_train < 1) c.invalid("n_train", "need at least 1 sample");
  if (p.n_val < 1) c.invalid("n_val", "need at least 1 sample");
  if (p.image_size < 16) c.invalid("image_size", "at least 16 pixels");
  if (p.max_text_bytes < 1) c.invalid("max_text_bytes", "at least 1 byte");
  if (p.vocab != "full" && p.vocab != "basic") c.invalid("vocab", "expected \"full\" or \"basic\", got \"" + p.vocab + "\"");
  return p;
}

nlohmann::json SceneDataParams::to_json() const {
  return {{"n_train", n_train}, {"n_val", n_val}, {"image_size", image_size}, {"seed", seed},
          {"max_text_bytes", max_text_bytes}, {"vocab", vocab}};
}

std::string scene_caption(const std::vector<SceneAttribute>& attrs, const std::vector<int64_t>& labels) {
  check_labels(attrs, labels);
  const ShapeDef& shape = by_name(kShapes, value(attrs, labels, kShape));
  return value(attrs, labels, kCount) + " " + value(attrs, labels, kSize) + " " + value(attrs, labels, kColour) + " " +
         (object_count(attrs, labels) > 1 ? shape.plural : shape.name) + " " + by_name(kPositions, value(attrs, labels, kPosition)).phrase +
         by_name(kBackgrounds, value(attrs, labels, kBackground)).phrase;
}

torch::Tensor render_scene(const std::vector<SceneAttribute>& attrs, const std::vector<int64_t>& labels, uint64_t scene_seed, int64_t size) {
  check_labels(attrs, labels);
  if (size < 1) throw std::invalid_argument("render_scene: size must be positive, got " + std::to_string(size));
  const int S = static_cast<int>(size);
  std::mt19937_64 rng(splitmix64(scene_seed));
  // Everything the attributes leave open, drawn in one fixed order whatever the attributes are.
  double base[3], grad[3], shade[3];
  const double grey = 0.12 + 0.26 * unit(rng);
  for (int c = 0; c < 3; ++c) base[c] = grey + (unit(rng) - 0.5) * 0.1, grad[c] = (unit(rng) - 0.5) * 0.12;
  const double period = (0.12 + 0.12 * unit(rng)) * S;  // stripes
  const int orientation = static_cast<int>(rng() % 3);  // horizontal, vertical, diagonal
  const double stripe_phase = unit(rng);
  const double cell = (0.1 + 0.1 * unit(rng)) * S;  // checker
  const double cell_dx = unit(rng) * cell, cell_dy = unit(rng) * cell;
  for (double& s : shade) s = (unit(rng) - 0.5) * 0.12;
  const double size_jitter = 1.0 + (unit(rng) - 0.5) * 0.16;
  const double anchor_dx = (unit(rng) - 0.5) * 0.06 * S, anchor_dy = (unit(rng) - 0.5) * 0.06 * S;
  double jx[3], jy[3], angle[3];
  for (int k = 0; k < 3; ++k) jx[k] = (unit(rng) - 0.5) * 0.2, jy[k] = (unit(rng) - 0.5) * 0.2, angle[k] = (unit(rng) - 0.5) * 0.4;
  const uint64_t noise_seed = rng();

  // the group: offsets in radii around its anchor, kept inside the image
  const int64_t count = object_count(attrs, labels);
  static const double kOffsets[3][3][2] = {{{0, 0}}, {{-1.15, 0}, {1.15, 0}}, {{-1.15, 0.95}, {1.15, 0.95}, {0, -1.0}}};
  const double radius = kSizeRadius[value(attrs, labels, kSize) == "large" ? 1 : 0] * S * size_jitter;
  double ox[3], oy[3], lo_x = 1e9, hi_x = -1e9, lo_y = 1e9, hi_y = -1e9;
  for (int64_t k = 0; k < count; ++k) {
    ox[k] = (kOffsets[count - 1][k][0] + jx[k]) * radius, oy[k] = (kOffsets[count - 1][k][1] + jy[k]) * radius;
    lo_x = std::min(lo_x, ox[k] - radius), hi_x = std::max(hi_x, ox[k] + radius);
    lo_y = std::min(lo_y, oy[k] - radius), hi_y = std::max(hi_y, oy[k] + radius);
  }
  const PositionDef& pos = by_name(kPositions, value(attrs, labels, kPosition));
  auto place = [&](int cell_index, double jitter, double lo, double hi) {
    const double a = (0.2 + 0.3 * cell_index) * S + jitter;
    return std::clamp(a, 0.5 - lo, std::max(0.5 - lo, S - 0.5 - hi));
  };
  const double ax = place(pos.col, anchor_dx, lo_x, hi_x), ay = place(pos.row, anchor_dy, lo_y, hi_y);
  const DrawnShape drawn = by_name(kShapes, value(attrs, labels, kShape)).shape;
  std::vector<PlacedShape> objects;
  for (int64_t k = 0; k < count; ++k)
    objects.emplace_back(drawn, ax + ox[k], ay + oy[k], radius, drawn == DrawnShape::Disk ? 0.0 : angle[k], 8.0);
  double fg[3];
  const ColourDef& colour = by_name(kColours, value(attrs, labels, kColour));
  for (int c = 0; c < 3; ++c) fg[c] = std::clamp(colour.rgb[c] + shade[c], 0.0, 1.0);

  const std::string& background = value(attrs, labels, kBackground);
  std::mt19937_64 noise_rng(noise_seed);
  torch::Tensor img = torch::empty({S, S, 3}, torch::kUInt8);
  uint8_t* out = img.data_ptr<uint8_t>();
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      double lift = 0;  // the background pattern: 0 or a lighter second tone, or grey noise
      if (background == "stripes") {
        const double t = orientation == 0 ? y : orientation == 1 ? x : (x + y) * 0.70710678;
        const double f = t / period + stripe_phase;
        lift = f - std::floor(f) < 0.5 ? 0.16 : 0.0;
      } else if (background == "checker") {
        const int64_t i = static_cast<int64_t>(std::floor((x + cell_dx) / cell)) + static_cast<int64_t>(std::floor((y + cell_dy) / cell));
        lift = (i & 1) ? 0.16 : 0.0;
      } else if (background == "noise") {
        lift = (unit(noise_rng) - 0.5) * 0.3;
      }
      const double gy = static_cast<double>(y) / S - 0.5;
      double px[3];
      for (int c = 0; c < 3; ++c) px[c] = base[c] + grad[c] * gy + lift;
      for (const auto& o : objects) {
        const double cover = o.coverage(x, y);
        if (cover > 0)
          for (int c = 0; c < 3; ++c) px[c] = px[c] * (1 - cover) + fg[c] * cover;
      }
      for (int c = 0; c < 3; ++c) out[(y * S + x) * 3 + c] = static_cast<uint8_t>(std::lround(std::clamp(px[c], 0.0, 1.0) * 255.0));
    }
  return img;
}

void generate_captions(const SceneDataParams& p, const fs::path& path) {
  const auto& attrs = scene_attributes(p.vocab);
  const int64_t A = static_cast<int64_t>(attrs.size()), S = p.image_size, T = p.max_text_bytes;
  struct Split {
    std::string name;
    int64_t n;
    torch::Tensor images, text, labels;
  };
  std::vector<Split> splits = {{"train", p.n_train, {}, {}, {}}, {"val", p.n_val, {}, {}, {}}};
  for (auto& s : splits) {
    s.images = torch::empty({s.n, S, S, 3}, torch::kUInt8);
    s.labels = torch::empty({s.n, A}, torch::kInt64);
    std::vector<std::string> captions(static_cast<size_t>(s.n));
    uint8_t* images = s.images.data_ptr<uint8_t>();
    int64_t* labels = s.labels.data_ptr<int64_t>();
    at::parallel_for(0, s.n, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        std::mt19937_64 rng(sample_seed(p, "captions", s.name, i));
        std::vector<int64_t> l = draw_labels(attrs, rng);
        const uint64_t scene_seed = rng();
        torch::Tensor img = render_scene(attrs, l, scene_seed, S);
        std::copy(img.data_ptr<uint8_t>(), img.data_ptr<uint8_t>() + S * S * 3, images + i * S * S * 3);
        std::copy(l.begin(), l.end(), labels + i * A);
        captions[static_cast<size_t>(i)] = scene_caption(attrs, l);
      }
    });
    s.text = scene_texts(captions, T, "caption");
  }
  write_h5_atomically(path, [&](H5File& f) {
    write_root(f, p, "captions");
    for (const auto& s : splits) {
      f.write(s.name + "/images", s.images);
      f.write(s.name + "/text", s.text);
      for (int64_t a = 0; a < A; ++a) f.write(s.name + "/attr/" + attrs[a].name, s.labels.select(1, a));
    }
  });
}

void generate_edits(const SceneDataParams& p, const fs::path& path) {
  const auto& attrs = scene_attributes(p.vocab);
  const int64_t A = static_cast<int64_t>(attrs.size()), S = p.image_size, T = p.max_text_bytes;
  struct Split {
    std::string name;
    int64_t n;
    torch::Tensor source, target, text, source_labels, target_labels, edited;
  };
  std::vector<Split> splits = {{"train", p.n_train, {}, {}, {}, {}, {}, {}}, {"val", p.n_val, {}, {}, {}, {}, {}, {}}};
  for (auto& s : splits) {
    s.source = torch::empty({s.n, S, S, 3}, torch::kUInt8);
    s.target = torch::empty({s.n, S, S, 3}, torch::kUInt8);
    s.source_labels = torch::empty({s.n, A}, torch::kInt64);
    s.target_labels = torch::empty({s.n, A}, torch::kInt64);
    s.edited = torch::empty({s.n}, torch::kInt64);
    std::vector<std::string> instructions(static_cast<size_t>(s.n));
    at::parallel_for(0, s.n, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        std::mt19937_64 rng(sample_seed(p, "edits", s.name, i));
        std::vector<int64_t> from = draw_labels(attrs, rng);
        const uint64_t scene_seed = rng();
        // one attribute changes to another of its values; the count steps by one
        const int a = static_cast<int>(rng() % static_cast<uint64_t>(A));
        std::vector<int64_t> to = from;
        const int64_t n = static_cast<int64_t>(attrs[a].values.size());
        if (a == kCount) {
          const bool add = from[a] == 0 || (from[a] < n - 1 && rng() % 2 == 0);
          to[a] = from[a] + (add ? 1 : -1);
        } else {
          to[a] = (from[a] + 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(n - 1))) % n;
        }
        torch::Tensor src = render_scene(attrs, from, scene_seed, S), tgt = render_scene(attrs, to, scene_seed, S);
        std::copy(src.data_ptr<uint8_t>(), src.data_ptr<uint8_t>() + S * S * 3, s.source.data_ptr<uint8_t>() + i * S * S * 3);
        std::copy(tgt.data_ptr<uint8_t>(), tgt.data_ptr<uint8_t>() + S * S * 3, s.target.data_ptr<uint8_t>() + i * S * S * 3);
        std::copy(from.begin(), from.end(), s.source_labels.data_ptr<int64_t>() + i * A);
        std::copy(to.begin(), to.end(), s.target_labels.data_ptr<int64_t>() + i * A);
        s.edited.data_ptr<int64_t>()[i] = a;
        instructions[static_cast<size_t>(i)] = instruction(attrs, from, to, a);
      }
    });
    s.text = scene_texts(instructions, T, "instruction");
  }
  write_h5_atomically(path, [&](H5File& f) {
    write_root(f, p, "edits");
    for (const auto& s : splits) {
      f.write(s.name + "/source", s.source);
      f.write(s.name + "/target", s.target);
      f.write(s.name + "/text", s.text);
      f.write(s.name + "/edited_attribute", s.edited);
      for (int64_t a = 0; a < A; ++a) {
        f.write(s.name + "/source_attr/" + attrs[a].name, s.source_labels.select(1, a));
        f.write(s.name + "/target_attr/" + attrs[a].name, s.target_labels.select(1, a));
      }
    }
  });
}

// ---- datasets ----------------------------------------------------------------------------------

H5File SceneTextDataset::open(const fs::path& path, const std::string& split, const std::string& generator) {
  path_ = path;
  split_ = split;
  H5File f(path, H5File::Mode::Read);
  const std::string gen = f.has_attr("generator") ? f.attr_string("generator") : "";
  if (gen != generator)
    throw std::runtime_error(path.string() + " does not hold " + generator + " data (its generator is " +
                             (gen.empty() ? std::string("not recorded") : "\"" + gen + "\"") + "; make it with `edgeforge data gen " +
                             generator + "`)");
  require_schema(f, kSceneSchema);
  if (!f.has(split + "/text"))
    throw std::runtime_error(path.string() + ": no split '" + split + "' (" + generator + " data has 'train' and 'val')");
  try {
    for (const auto& a : nlohmann::json::parse(f.attr_string("attributes")))
      attributes_.push_back({a.at("name").get<std::string>(), a.at("values").get<std::vector<std::string>>()});
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path.string() + ": the root attribute 'attributes' is not a valid attribute list: " + e.what());
  }
  text_ = f.read(split + "/text");
  if (text_.dim() != 2 || text_.scalar_type() != torch::kUInt8)
    throw std::runtime_error(path.string() + ": " + split + "/text is not uint8 [N, max_text_bytes]");
  return f;
}

torch::Tensor SceneTextDataset::labels_of(const H5File& f, const std::string& group) const {
  std::vector<torch::Tensor> columns;
  for (const auto& a : attributes_) {
    torch::Tensor l = f.read(split_ + "/" + group + "/" + a.name).to(torch::kInt64);
    if (l.dim() != 1 || l.size(0) != size())
      throw std::runtime_error(path_.string() + ": " + split_ + "/" + group + "/" + a.name + " is not [" + std::to_string(size()) + "]");
    if (l.numel() > 0 && (l.min().item<int64_t>() < 0 || l.max().item<int64_t>() >= static_cast<int64_t>(a.values.size())))
      throw std::runtime_error(path_.string() + ": " + split_ + "/" + group + "/" + a.name + " has labels outside [0, " +
                               std::to_string(a.values.size()) + ")");
    columns.push_back(l);
  }
  return torch::stack(columns, 1);
}

std::string SceneTextDataset::text_at(int64_t i) const {
  if (i < 0 || i >= size()) throw std::out_of_range("text_at(" + std::to_string(i) + "): " + std::to_string(size()) + " samples");
  const uint8_t* row = text_.data_ptr<uint8_t>() + i * text_.size(1);
  const uint8_t* end = std::find(row, row + text_.size(1), uint8_t{0});
  return std::string(row, end);
}

std::vector<std::string> SceneTextDataset::attribute_names() const {
  std::vector<std::string> names;
  for (const auto& a : attributes_) names.push_back(a.name);
  return names;
}

int64_t SceneTextDataset::attribute_index(const std::string& name) const {
  for (size_t a = 0; a < attributes_.size(); ++a)
    if (attributes_[a].name == name) return static_cast<int64_t>(a);
  std::string known;
  for (const auto& a : attributes_) known += (known.empty() ? "" : ", ") + a.name;
  throw std::invalid_argument(path_.string() + ": no attribute '" + name + "' (it has " + known + ")");
}

const std::vector<std::string>& SceneTextDataset::attribute_values(const std::string& name) const {
  return attributes_[static_cast<size_t>(attribute_index(name))].values;
}

void write_scene_root(H5File& f, const std::string& generator, const nlohmann::json& params, const std::vector<SceneAttribute>& attributes) {
  nlohmann::json vocab = nlohmann::json::array();
  for (const auto& a : attributes) vocab.push_back({{"name", a.name}, {"values", a.values}});
  f.set_attr("schema_version", kSceneSchema);
  f.set_attr("generator", generator);
  f.set_attr("params", params.dump());
  f.set_attr("attributes", vocab.dump());
}

torch::Tensor read_scene_images(const H5File& f, const std::string& name, int64_t n) {
  torch::Tensor t = f.read(name);
  if (t.dim() != 4 || t.size(3) != 3 || t.size(1) != t.size(2) || t.scalar_type() != torch::kUInt8 || t.size(0) != n)
    throw std::runtime_error(f.path().string() + ": " + name + " is not uint8 [" + std::to_string(n) + ",H,H,3]");
  return t;
}

torch::Tensor signed_scene_image(const torch::Tensor& hwc) {
  return hwc.permute({2, 0, 1}).to(torch::kFloat32).div_(127.5f).sub_(1.0f);
}

torch::Tensor signed_scene_images(const torch::Tensor& nhwc) {
  return nhwc.permute({0, 3, 1, 2}).to(torch::kFloat32).div_(127.5f).sub_(1.0f);
}

torch::Tensor scene_texts(const std::vector<std::string>& texts, int64_t max_text_bytes, const std::string& what) {
  torch::Tensor out = torch::zeros({static_cast<int64_t>(texts.size()), max_text_bytes}, torch::kUInt8);
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string& t = texts[i];
    if (static_cast<int64_t>(t.size()) > max_text_bytes)
      throw ConfigError("the " + what + " \"" + t + "\" is " + std::to_string(t.size()) + " bytes, more than max_text_bytes " +
                        std::to_string(max_text_bytes) + "; raise max_text_bytes");
    std::copy(t.begin(), t.end(), out.data_ptr<uint8_t>() + static_cast<int64_t>(i) * max_text_bytes);
  }
  return out;
}

CaptionsDataset::CaptionsDataset(const fs::path& path, const std::string& split) {
  H5File f = open(path, split, "captions");
  images_ = read_scene_images(f, split + "/images", size());
  image_size_ = images_.size(1);
  labels_ = labels_of(f, "attr");
}

Sample CaptionsDataset::get(int64_t index) const {
  Sample s = {{"image", signed_scene_image(images_[index])}, {"text", text_[index]}};
  for (size_t a = 0; a < attributes_.size(); ++a) s["attr_" + attributes_[a].name] = labels_[index][static_cast<int64_t>(a)];
  return s;
}

EditsDataset::EditsDataset(const fs::path& path, const std::string& split) {
  H5File f = open(path, split, "edits");
  source_ = read_scene_images(f, split + "/source", size());
  target_ = read_scene_images(f, split + "/target", size());
  image_size_ = source_.size(1);
  source_labels_ = labels_of(f, "source_attr");
  target_labels_ = labels_of(f, "target_attr");
  edited_ = f.read(split + "/edited_attribute").to(torch::kInt64);
  if (edited_.dim() != 1 || edited_.size(0) != size())
    throw std::runtime_error(path.string() + ": " + split + "/edited_attribute is not [" + std::to_string(size()) + "]");
}

Sample EditsDataset::get(int64_t index) const {
  Sample s = {{"source", signed_scene_image(source_[index])}, {"target", signed_scene_image(target_[index])},
              {"text", text_[index]}, {"edited_attribute", edited_[index]}};
  for (size_t a = 0; a < attributes_.size(); ++a) {
    s["attr_" + attributes_[a].name] = target_labels_[index][static_cast<int64_t>(a)];
    s["source_attr_" + attributes_[a].name] = source_labels_[index][static_cast<int64_t>(a)];
  }
  return s;
}

// ---- `edgeforge data gen captions` / `edgeforge data gen edits` ---------------------------------

namespace {
class SceneGenerator : public DataGenerator {
 public:
  SceneGenerator(std::string kind, int64_t n_train, int64_t n_val) : kind_(std::move(kind)), n_train_(n_train), n_val_(n_val) {}
  std::string default_path() const override { return "data/" + kind_ + ".h5"; }
  void generate(const Config& params, const fs::path& out) override {
    SceneDataParams p = SceneDataParams::from(params, n_train_, n_val_);
    if (kind_ == "captions") generate_captions(p, out);
    else generate_edits(p, out);
  }
  nlohmann::json resolved_params(const Config& params) const override { return SceneDataParams::from(params, n_train_, n_val_).to_json(); }

 private:
  std::string kind_;
  int64_t n_train_, n_val_;
};
EF_REGISTER(data_generators(), "captions", [] { return std::make_unique<SceneGenerator>("captions", 20000, 2000); },
            "shapes scenes (colour, shape, position, size, count, background) with English captions (text-to-image, classify)");
EF_REGISTER(data_generators(), "edits", [] { return std::make_unique<SceneGenerator>("edits", 10000, 1000); },
            "(source image, instruction, target image) triplets that change one scene attribute (image editing)");
}  // namespace

}  // namespace ef
