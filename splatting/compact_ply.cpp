#include "splatting/compact_ply.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/config.h"
#include "core/atomic_file.h"

namespace ef::splat {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kChunk = 256;
const char* kChunkProps[18] = {"min_x",       "min_y",       "min_z",       "max_x",       "max_y",       "max_z",
                               "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z",
                               "min_r",       "min_g",       "min_b",       "max_r",       "max_g",       "max_b"};
const char* kVertexProps[4] = {"packed_position", "packed_rotation", "packed_scale", "packed_color"};

torch::Tensor shl(const torch::Tensor& x, int64_t k) { return torch::bitwise_left_shift(x, k); }
torch::Tensor shr(const torch::Tensor& x, int64_t k) { return torch::bitwise_right_shift(x, k); }

// Interleaves the low 10 bits of x with two zero bits between each (Morton code of 3 axes).
torch::Tensor spread_bits(torch::Tensor x) {
  x = (x | shl(x, 16)) & 0x030000FF;
  x = (x | shl(x, 8)) & 0x0300F00F;
  x = (x | shl(x, 4)) & 0x030C30C3;
  return (x | shl(x, 2)) & 0x09249249;
}

torch::Tensor morton_order(const torch::Tensor& means) {
  auto lo = std::get<0>(means.min(0)), hi = std::get<0>(means.max(0));
  auto q = ((means - lo) / (hi - lo).clamp_min(1e-12) * 1023).round().to(torch::kLong).clamp(0, 1023);
  auto code = spread_bits(q.select(1, 0)) | shl(spread_bits(q.select(1, 1)), 1) | shl(spread_bits(q.select(1, 2)), 2);
  return std::get<1>(torch::sort(code, /*stable=*/true, 0, false));
}

// Per-chunk bounds of v [N, D]: ([C, D], [C, D]); the last chunk's padding repeats the last row.
std::pair<torch::Tensor, torch::Tensor> chunk_bounds(const torch::Tensor& v) {
  const int64_t n = v.size(0), c = (n + kChunk - 1) / kChunk;
  auto rows = v.index_select(0, torch::arange(c * kChunk).clamp_max(n - 1)).view({c, kChunk, v.size(1)});
  return {std::get<0>(rows.min(1)), std::get<0>(rows.max(1))};
}

// unorm codes of v [N, D] within its chunk's [lo, hi] ([C, D]), `bits` per column.
torch::Tensor unorm_codes(const torch::Tensor& v, const torch::Tensor& lo, const torch::Tensor& hi, const std::vector<int64_t>& bits) {
  auto chunk = torch::div(torch::arange(v.size(0)), kChunk, "floor");
  auto l = lo.index_select(0, chunk), h = hi.index_select(0, chunk);
  auto range = h - l;
  auto t = torch::where(range < 1e-5, torch::zeros_like(v), (v - l) / range.clamp_min(1e-5));
  auto levels = torch::tensor(bits, torch::kDouble).exp2() - 1;
  return torch::floor(t * levels + 0.5).clamp_min(0).minimum(levels).to(torch::kLong);
}

torch::Tensor pack_111011(const torch::Tensor& q) { return shl(q.select(1, 0), 21) | shl(q.select(1, 1), 11) | q.select(1, 2); }

// unorm b-bit field at `shift` -> [0, 1]
torch::Tensor field(const torch::Tensor& packed, int64_t shift, int64_t bits) {
  return (shr(packed, shift) & ((int64_t{1} << bits) - 1)).to(torch::kDouble) / static_cast<double>((int64_t{1} << bits) - 1);
}

torch::Tensor lerp_chunks(const torch::Tensor& t, const torch::Tensor& lo, const torch::Tensor& hi) {
  auto chunk = torch::div(torch::arange(t.size(0)), kChunk, "floor");
  auto l = lo.index_select(0, chunk), h = hi.index_select(0, chunk);
  return l * (1 - t) + h * t;
}

[[noreturn]] void fail(const fs::path& path, const std::string& why) { throw InputError(path.string() + ": " + why); }

torch::Tensor columns(const PlyElementData& e, const std::vector<std::string>& names, const fs::path& path) {
  std::vector<int64_t> idx;
  for (const auto& name : names) {
    auto it = std::find(e.properties.begin(), e.properties.end(), name);
    if (it == e.properties.end()) fail(path, "compressed PLY: element '" + e.name + "' lacks property '" + name + "'");
    idx.push_back(it - e.properties.begin());
  }
  return e.table.index_select(1, torch::tensor(idx, torch::kLong));
}

}  // namespace

int64_t write_compact_ply(const fs::path& path, const GaussianParams& in) {
  in.check();
  const int64_t n = in.size(), K = in.sh.size(1);
  if (n == 0) throw std::invalid_argument(path.string() + ": an empty scene has no compressed layout");
  if (in.sh_degree() > 3) throw std::invalid_argument(path.string() + ": the compressed layout holds SH degree <= 3, the scene has " + std::to_string(in.sh_degree()));
  auto f64 = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kDouble); };
  const torch::Tensor order = morton_order(f64(in.means));
  auto take = [&](const torch::Tensor& t) { return f64(t).index_select(0, order); };
  const torch::Tensor means = take(in.means), scales = take(in.scales), quats = take(in.quats), opacity = take(in.opacities), sh = take(in.sh);

  auto [pmin, pmax] = chunk_bounds(means);
  auto [smin, smax] = chunk_bounds(scales);
  const torch::Tensor rgb = 0.5 + kShC0 * sh.select(1, 0);
  auto [cmin, cmax] = chunk_bounds(rgb);
  const torch::Tensor packed_position = pack_111011(unorm_codes(means, pmin, pmax, {11, 10, 11}));
  const torch::Tensor packed_scale = pack_111011(unorm_codes(scales, smin, smax, {11, 10, 11}));
  // smallest three: the largest |component| is dropped (made positive, rebuilt from the others)
  torch::Tensor q = quats / quats.norm(2, 1, true).clamp_min(1e-12);
  const torch::Tensor largest = q.abs().argmax(1);
  q = q * torch::where(q.gather(1, largest.unsqueeze(1)) < 0, -1.0, 1.0);
  const torch::Tensor others = torch::tensor({1, 2, 3, 0, 2, 3, 0, 1, 3, 0, 1, 2}, torch::kLong).view({4, 3}).index_select(0, largest);
  const torch::Tensor abc = torch::floor((q.gather(1, others) / std::sqrt(2.0) + 0.5) * 1023 + 0.5).clamp(0, 1023).to(torch::kLong);
  const torch::Tensor packed_rotation = shl(largest, 30) | shl(abc.select(1, 0), 20) | shl(abc.select(1, 1), 10) | abc.select(1, 2);
  const torch::Tensor col = unorm_codes(rgb, cmin, cmax, {8, 8, 8});
  const torch::Tensor alpha = torch::floor(torch::sigmoid(opacity) * 255 + 0.5).clamp(0, 255).to(torch::kLong);
  const torch::Tensor packed_color = shl(col.select(1, 0), 24) | shl(col.select(1, 1), 16) | shl(col.select(1, 2), 8) | alpha;

  const int64_t chunks = pmin.size(0), rest = 3 * (K - 1);
  torch::Tensor chunk_table = torch::cat({pmin, pmax, smin, smax, cmin, cmax}, 1).to(torch::kFloat).contiguous();  // [C, 18]
  torch::Tensor packed = torch::stack({packed_position, packed_rotation, packed_scale, packed_color}, 1).contiguous();  // [N, 4] int64
  std::vector<uint32_t> vertex(static_cast<size_t>(4 * n));
  const int64_t* pk = packed.data_ptr<int64_t>();
  for (size_t i = 0; i < vertex.size(); ++i) vertex[i] = static_cast<uint32_t>(pk[i]);
  torch::Tensor sh_codes;
  if (rest > 0)  // [N, K-1, 3] -> channel-major [N, 3(K-1)], the standard f_rest order
    sh_codes = torch::round((sh.slice(1, 1).permute({0, 2, 1}).reshape({n, rest}) + 4) * (255.0 / 8.0)).clamp(0, 255).to(torch::kUInt8).contiguous();

  std::ostringstream header;
  header << "ply\nformat binary_little_endian 1.0\ncomment written by EdgeForge (compressed 3DGS layout, 256-Gaussian chunks)\n";
  std::vector<std::pair<std::string, torch::Tensor>> extras;
  for (const auto& [name, t] : in.extras) {
    int64_t m = 1;
    header << "comment extra " << name;
    for (int64_t d = 1; d < t.dim(); ++d) header << ' ' << t.size(d), m *= t.size(d);
    header << '\n';
    extras.emplace_back(name, take(t).reshape({n, m}).to(torch::kFloat));
  }
  header << "element chunk " << chunks << '\n';
  for (const char* p : kChunkProps) header << "property float " << p << '\n';
  header << "element vertex " << n << '\n';
  for (const char* p : kVertexProps) header << "property uint " << p << '\n';
  if (rest > 0) {
    header << "element sh " << n << '\n';
    for (int64_t i = 0; i < rest; ++i) header << "property uchar f_rest_" << i << '\n';
  }
  torch::Tensor extra_table;
  if (!extras.empty()) {
    std::vector<torch::Tensor> cols;
    header << "element extra " << n << '\n';
    for (const auto& [name, t] : extras) {
      for (int64_t i = 0; i < t.size(1); ++i) header << "property float " << name << '_' << i << '\n';
      cols.push_back(t);
    }
    extra_table = torch::cat(cols, 1).contiguous();
  }
  header << "end_header\n";
  int64_t size = 0;
  write_atomically_via(path, [&](const fs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    auto put = [&](const void* p, size_t bytes) { out.write(static_cast<const char*>(p), static_cast<std::streamsize>(bytes)); size += static_cast<int64_t>(bytes); };
    const std::string h = header.str();
    put(h.data(), h.size());
    put(chunk_table.data_ptr(), static_cast<size_t>(chunk_table.nbytes()));
    put(vertex.data(), vertex.size() * sizeof(uint32_t));
    if (sh_codes.defined()) put(sh_codes.data_ptr(), static_cast<size_t>(sh_codes.nbytes()));
    if (extra_table.defined()) put(extra_table.data_ptr(), static_cast<size_t>(extra_table.nbytes()));
    out.close();
    if (!out) throw std::runtime_error("cannot write " + path.string());
  });
  return size;
}

GaussianParams decode_compact_ply(const PlyData& data, const fs::path& path) {
  const PlyElementData* chunk = data.element("chunk");
  const PlyElementData* vertex = data.element("vertex");
  if (!chunk || !vertex) fail(path, "compressed PLY: needs 'chunk' and 'vertex' elements");
  const int64_t n = vertex->table.size(0), chunks = chunk->table.size(0);
  if (chunks != (n + kChunk - 1) / kChunk)
    fail(path, "compressed PLY: " + std::to_string(chunks) + " chunks for " + std::to_string(n) + " Gaussians (expected one per 256)");
  std::vector<std::string> names(kChunkProps, kChunkProps + 12);
  const bool has_colour_bounds = std::find(chunk->properties.begin(), chunk->properties.end(), "min_r") != chunk->properties.end();
  if (has_colour_bounds) names.assign(kChunkProps, kChunkProps + 18);
  const torch::Tensor c = columns(*chunk, names, path);
  const torch::Tensor packed = columns(*vertex, {kVertexProps, kVertexProps + 4}, path).to(torch::kLong);
  auto unpack_111011 = [&](const torch::Tensor& p) { return torch::stack({field(p, 21, 11), field(p, 11, 10), field(p, 0, 11)}, 1); };

  GaussianParams g;
  g.means = lerp_chunks(unpack_111011(packed.select(1, 0)), c.slice(1, 0, 3), c.slice(1, 3, 6)).to(torch::kFloat);
  g.scales = lerp_chunks(unpack_111011(packed.select(1, 2)), c.slice(1, 6, 9), c.slice(1, 9, 12)).to(torch::kFloat);
  const torch::Tensor rot = packed.select(1, 1);
  const torch::Tensor abc = (torch::stack({field(rot, 20, 10), field(rot, 10, 10), field(rot, 0, 10)}, 1) - 0.5) * std::sqrt(2.0);
  const torch::Tensor m = (1 - abc.square().sum(1, true)).clamp_min(0).sqrt();
  const torch::Tensor largest = shr(rot, 30) & 3;
  // place the rebuilt largest component at its index and the other three around it, in order
  torch::Tensor q = torch::empty({n, 4}, torch::kDouble);
  const torch::Tensor others = torch::tensor({1, 2, 3, 0, 2, 3, 0, 1, 3, 0, 1, 2}, torch::kLong).view({4, 3}).index_select(0, largest);
  q.scatter_(1, largest.unsqueeze(1), m);
  q.scatter_(1, others, abc);
  g.quats = q.to(torch::kFloat);
  const torch::Tensor col = packed.select(1, 3);
  torch::Tensor rgb = torch::stack({field(col, 24, 8), field(col, 16, 8), field(col, 8, 8)}, 1);
  if (has_colour_bounds) rgb = lerp_chunks(rgb, c.slice(1, 12, 15), c.slice(1, 15, 18));
  const torch::Tensor a = field(col, 0, 8);
  g.opacities = torch::where(a <= 0, -40.0, torch::where(a >= 1, 40.0, -torch::log(1 / a.clamp(1e-12, 1) - 1))).to(torch::kFloat);
  const torch::Tensor dc = (rgb - 0.5) / kShC0;
  torch::Tensor rest = torch::empty({n, 0, 3}, torch::kDouble);
  if (const PlyElementData* sh = data.element("sh")) {
    const int64_t r = static_cast<int64_t>(sh->properties.size());
    int64_t degree = 0;
    while (3 * (sh_coeffs(degree) - 1) < r) ++degree;
    if (3 * (sh_coeffs(degree) - 1) != r || sh->table.size(0) != n)
      fail(path, "compressed PLY: element 'sh' has " + std::to_string(r) + " properties for " + std::to_string(sh->table.size(0)) +
                     " Gaussians (expected 9, 24 or 45 for each of " + std::to_string(n) + ")");
    std::vector<std::string> rest_names;
    for (int64_t i = 0; i < r; ++i) rest_names.push_back("f_rest_" + std::to_string(i));
    rest = (columns(*sh, rest_names, path) * (8.0 / 255.0) - 4).view({n, 3, r / 3}).permute({0, 2, 1});
  }
  g.sh = torch::cat({dc.unsqueeze(1), rest}, 1).to(torch::kFloat).contiguous();
  if (const PlyElementData* extra = data.element("extra")) {
    for (const auto& [name, dims] : data.extra_dims) {
      int64_t count = 1;
      for (int64_t d : dims) count *= d;
      std::vector<std::string> cols;
      for (int64_t i = 0; i < count; ++i) cols.push_back(name + "_" + std::to_string(i));
      std::vector<int64_t> shape{n};
      shape.insert(shape.end(), dims.begin(), dims.end());
      g.extras[name] = columns(*extra, cols, path).to(torch::kFloat).reshape(shape).contiguous();
    }
  }
  g.check();
  return g;
}

}  // namespace ef::splat
