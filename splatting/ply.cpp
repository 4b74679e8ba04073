#include "splatting/ply.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "core/config.h"
#include "core/atomic_file.h"
#include "splatting/compact_ply.h"

namespace ef::splat {

namespace fs = std::filesystem;

namespace {

bool host_is_little_endian() {
  const uint16_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// The property names whose `_<i>` families the standard layout owns; an extra of that name would collide.
const std::set<std::string> kStandardFamilies{"x", "y", "z", "nx", "ny", "nz", "f_dc", "f_rest", "opacity", "scale", "rot"};

enum class Type { I8, U8, I16, U16, I32, U32, F32, F64 };
struct TypeInfo {
  const char* names[2];
  Type type;
  size_t size;
};
constexpr TypeInfo kTypes[] = {
    {{"char", "int8"}, Type::I8, 1},     {{"uchar", "uint8"}, Type::U8, 1},   {{"short", "int16"}, Type::I16, 2},
    {{"ushort", "uint16"}, Type::U16, 2}, {{"int", "int32"}, Type::I32, 4},    {{"uint", "uint32"}, Type::U32, 4},
    {{"float", "float32"}, Type::F32, 4}, {{"double", "float64"}, Type::F64, 8},
};

struct Property {
  std::string name;
  Type type = Type::F32;
  size_t size = 4;
  bool is_list = false;
};
struct Element {
  std::string name;
  int64_t count = 0;
  std::vector<Property> props;
};

[[noreturn]] void fail(const fs::path& path, const std::string& why) { throw InputError(path.string() + ": " + why); }

const TypeInfo& type_named(const std::string& name, const fs::path& path) {
  for (const auto& t : kTypes)
    if (name == t.names[0] || name == t.names[1]) return t;
  fail(path, "unknown PLY property type '" + name + "'");
}

template <class T> double load(const char* p, bool swap) {
  char b[sizeof(T)];
  std::memcpy(b, p, sizeof(T));
  if (swap) std::reverse(b, b + sizeof(T));
  T v;
  std::memcpy(&v, b, sizeof(T));
  return static_cast<double>(v);
}

double load_any(Type t, const char* p, bool swap) {
  switch (t) {
    case Type::I8: return load<int8_t>(p, swap);
    case Type::U8: return load<uint8_t>(p, swap);
    case Type::I16: return load<int16_t>(p, swap);
    case Type::U16: return load<uint16_t>(p, swap);
    case Type::I32: return load<int32_t>(p, swap);
    case Type::U32: return load<uint32_t>(p, swap);
    case Type::F32: return load<float>(p, swap);
    case Type::F64: return load<double>(p, swap);
  }
  return 0;
}

// "f_rest_12" -> ("f_rest", 12); "opacity" -> ("opacity", -1).
std::pair<std::string, int64_t> split_index(const std::string& name) {
  const size_t us = name.rfind('_');
  if (us == std::string::npos || us + 1 == name.size()) return {name, -1};
  for (size_t i = us + 1; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return {name, -1};
  if (name.size() - us - 1 > 9) return {name, -1};
  return {name.substr(0, us), std::stoll(name.substr(us + 1))};
}

}  // namespace

std::vector<std::string> standard_ply_properties(int64_t degree) {
  std::vector<std::string> names{"x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"};
  const int64_t rest = 3 * (sh_coeffs(degree) - 1);
  for (int64_t i = 0; i < rest; ++i) names.push_back("f_rest_" + std::to_string(i));
  names.push_back("opacity");
  for (int i = 0; i < 3; ++i) names.push_back("scale_" + std::to_string(i));
  for (int i = 0; i < 4; ++i) names.push_back("rot_" + std::to_string(i));
  return names;
}

void write_ply(const fs::path& path, const GaussianParams& g) {
  g.check();
  const int64_t n = g.size(), K = g.sh.size(1);
  auto f32 = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat32); };
  std::vector<torch::Tensor> cols{f32(g.means), torch::zeros({n, 3}, torch::kFloat32), f32(g.sh.select(1, 0)),
                                  // [N, K-1, 3] -> channel-major [N, 3, K-1]
                                  f32(g.sh.slice(1, 1)).permute({0, 2, 1}).reshape({n, 3 * (K - 1)}), f32(g.opacities).reshape({n, 1}),
                                  f32(g.scales), f32(g.quats)};
  std::vector<std::string> names = standard_ply_properties(g.sh_degree());
  std::ostringstream comments;
  for (const auto& [name, t] : g.extras) {
    if (name.empty() || name.find_first_of(" \t\r\n") != std::string::npos || kStandardFamilies.count(name))
      throw std::invalid_argument(path.string() + ": extra '" + name + "' cannot be a PLY property family (empty, whitespace, or a standard name)");
    int64_t m = 1;
    for (int64_t d = 1; d < t.dim(); ++d) m *= t.size(d);
    comments << "comment extra " << name;
    for (int64_t d = 1; d < t.dim(); ++d) comments << ' ' << t.size(d);
    comments << '\n';
    cols.push_back(f32(t).reshape({n, m}));
    for (int64_t i = 0; i < m; ++i) names.push_back(name + "_" + std::to_string(i));
  }
  torch::Tensor table = torch::cat(cols, 1).contiguous();  // [N, P]
  std::ostringstream header;
  header << "ply\nformat binary_little_endian 1.0\ncomment written by EdgeForge (3DGS layout)\n" << comments.str()
         << "element vertex " << n << '\n';
  for (const auto& name : names) header << "property float " << name << '\n';
  header << "end_header\n";
  if (!host_is_little_endian()) throw std::runtime_error("write_ply needs a little-endian host");
  write_atomically_via(path, [&](const fs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    const std::string h = header.str();
    out.write(h.data(), static_cast<std::streamsize>(h.size()));
    out.write(static_cast<const char*>(table.data_ptr()), static_cast<std::streamsize>(table.numel() * sizeof(float)));
    out.close();
    if (!out) throw std::runtime_error("cannot write " + path.string());
  });
}

PlyData read_ply_data(const fs::path& path) {
  if (!fs::exists(path)) throw InputError("PLY file not found: " + path.string());
  const std::string bytes = ef::read_file(path);
  if (bytes.compare(0, 4, "ply\n") != 0 && bytes.compare(0, 5, "ply\r\n") != 0) fail(path, "not a PLY file (it does not start with 'ply')");

  // ---- header ----
  const size_t end = bytes.find("end_header");
  if (end == std::string::npos) fail(path, "truncated or not a PLY file: no 'end_header' line");
  size_t data_start = bytes.find('\n', end);
  if (data_start == std::string::npos) fail(path, "truncated after 'end_header'");
  ++data_start;
  std::istringstream header(bytes.substr(0, end));
  std::string line, format;
  std::vector<Element> elements;
  PlyData data;
  std::getline(header, line);  // "ply"
  while (std::getline(header, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::istringstream s(line);
    std::string word;
    s >> word;
    if (word.empty() || word == "obj_info") continue;
    if (word == "comment") {
      std::string tag, name;
      if (s >> tag >> name && tag == "extra") {
        std::vector<int64_t> dims;
        int64_t d;
        while (s >> d) dims.push_back(d);
        data.extra_dims[name] = dims;
      }
    } else if (word == "format") {
      s >> format;
    } else if (word == "element") {
      Element e;
      if (!(s >> e.name >> e.count) || e.count < 0) fail(path, "bad header line '" + line + "'");
      elements.push_back(e);
    } else if (word == "property") {
      if (elements.empty()) fail(path, "property before any element: '" + line + "'");
      std::string type, name;
      s >> type;
      Property p;
      if (type == "list") {
        std::string count_type;
        s >> count_type >> type;
        p.is_list = true;
      }
      const TypeInfo& t = type_named(type, path);
      p.type = t.type, p.size = t.size;
      if (!(s >> p.name)) fail(path, "bad header line '" + line + "'");
      elements.back().props.push_back(p);
    } else {
      fail(path, "unexpected header line '" + line + "'");
    }
  }
  if (format != "binary_little_endian" && format != "binary_big_endian" && format != "ascii")
    fail(path, "unsupported PLY format '" + format + "'");
  // Gaussian scenes are scalar properties; elements with lists (a mesh's faces) may follow them
  // and are ignored, but nothing after such an element can be located.
  bool seen_vertex = false;
  for (size_t k = 0; k < elements.size(); ++k) {
    const Element& e = elements[k];
    auto list = std::find_if(e.props.begin(), e.props.end(), [](const Property& p) { return p.is_list; });
    if (list != e.props.end()) {
      if (!seen_vertex) fail(path, "element '" + e.name + "' before the vertices has list property '" + list->name + "'; not supported");
      elements.resize(k);
      break;
    }
    seen_vertex |= e.name == "vertex";
  }

  // ---- every element's data into a table [count, P]: float32 when every property is float32 (a
  // standard scene, copied as it is), else float64 (exact for 32-bit integers such as packed codes) ----
  const char* p = bytes.data() + data_start;
  const char* const stop = bytes.data() + bytes.size();
  const bool swap = (format == "binary_little_endian") != host_is_little_endian();
  auto require_bytes = [&](const Element& e, size_t need) {
    const size_t left = static_cast<size_t>(stop - p);
    if (left < need)
      fail(path, "truncated: the header announces " + std::to_string(e.count) + " " + e.name + " elements (" + std::to_string(need) +
                     " bytes), but only " + std::to_string(left) + " bytes of data follow");
  };
  for (const Element& e : elements) {
    const int64_t n = e.count, P = static_cast<int64_t>(e.props.size());
    PlyElementData el;
    el.name = e.name;
    for (const auto& prop : e.props) el.properties.push_back(prop.name);
    bool all_float = format != "ascii";
    for (const auto& prop : e.props) all_float &= prop.type == Type::F32;
    if (all_float && !swap) {
      const size_t need = 4 * static_cast<size_t>(n * P);
      require_bytes(e, need);
      el.table = torch::empty({n, P}, torch::kFloat32);
      std::memcpy(el.table.data_ptr<float>(), p, need);
      p += need;
      data.elements.push_back(std::move(el));
      continue;
    }
    el.table = torch::empty({n, P}, torch::kFloat64);
    double* out = el.table.data_ptr<double>();
    if (format == "ascii") {
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < P; ++c) {
          while (p < stop && std::isspace(static_cast<unsigned char>(*p))) ++p;
          if (p >= stop) fail(path, "truncated: ran out of values reading " + e.name + " " + std::to_string(r));
          char* after = nullptr;
          out[r * P + c] = std::strtod(p, &after);
          if (after == p) fail(path, "not a number reading " + e.name + " " + std::to_string(r));
          p = after;
        }
    } else {
      size_t stride = 0;
      std::vector<size_t> offset;
      for (const auto& prop : e.props) offset.push_back(stride), stride += prop.size;
      const size_t need = stride * static_cast<size_t>(n);
      require_bytes(e, need);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < P; ++c) out[r * P + c] = load_any(e.props[c].type, p + static_cast<size_t>(r) * stride + offset[c], swap);
      p += need;
    }
    data.elements.push_back(std::move(el));
  }
  return data;
}

const PlyElementData* PlyData::element(const std::string& name) const {
  for (const auto& e : elements)
    if (e.name == name) return &e;
  return nullptr;
}

GaussianParams read_ply(const fs::path& path) {
  PlyData data = read_ply_data(path);
  if (data.element("chunk")) return decode_compact_ply(data, path);
  const PlyElementData* vertex = data.element("vertex");
  if (!vertex) fail(path, "no 'element vertex' in the header");
  const int64_t n = vertex->table.size(0), P = vertex->table.size(1);
  const torch::Tensor table = vertex->table.to(torch::kFloat32);
  const auto& extra_dims = data.extra_dims;
  const std::vector<std::string>& names = vertex->properties;

  // ---- columns into GaussianParams ----
  std::map<std::string, int64_t> column;
  for (int64_t c = 0; c < P; ++c) column[names[c]] = c;
  auto gather = [&](const std::vector<std::string>& names) {
    std::vector<int64_t> idx;
    for (const auto& name : names) {
      auto it = column.find(name);
      if (it == column.end()) fail(path, "missing vertex property '" + name + "' of the 3DGS layout");
      idx.push_back(it->second);
    }
    return table.index_select(1, torch::tensor(idx, torch::kInt64));
  };
  GaussianParams g;
  g.means = gather({"x", "y", "z"});
  g.opacities = gather({"opacity"}).reshape({n});
  g.scales = gather({"scale_0", "scale_1", "scale_2"});
  g.quats = gather({"rot_0", "rot_1", "rot_2", "rot_3"});
  torch::Tensor dc = gather({"f_dc_0", "f_dc_1", "f_dc_2"});  // [N, 3]
  int64_t rest = 0;
  while (column.count("f_rest_" + std::to_string(rest))) ++rest;
  int64_t degree = 0;
  while (3 * (sh_coeffs(degree) - 1) < rest) ++degree;
  const int64_t K = sh_coeffs(degree);
  if (3 * (K - 1) != rest)
    fail(path, "has " + std::to_string(rest) + " f_rest properties; an SH degree L needs 3((L+1)^2 - 1) (0, 9, 24 or 45)");
  std::vector<std::string> rest_names;
  for (int64_t i = 0; i < rest; ++i) rest_names.push_back("f_rest_" + std::to_string(i));
  torch::Tensor sh_rest = rest ? gather(rest_names).reshape({n, 3, K - 1}).permute({0, 2, 1}) : torch::empty({n, 0, 3});
  g.sh = torch::cat({dc.unsqueeze(1), sh_rest}, 1).contiguous();

  // Extras: every other property, grouped by family name.
  std::map<std::string, std::map<int64_t, int64_t>> families;  // name -> index -> column
  for (int64_t c = 0; c < P; ++c) {
    const std::string& name = names[c];
    auto [base, index] = split_index(name);
    if (kStandardFamilies.count(base) || kStandardFamilies.count(name)) continue;
    if (!families[base].emplace(index, c).second) fail(path, "vertex property '" + name + "' appears twice");
  }
  for (const auto& [base, members] : families) {
    std::vector<int64_t> idx;
    if (members.count(-1)) {
      if (members.size() > 1) fail(path, "vertex property '" + base + "' exists both alone and as '" + base + "_<i>'");
      idx.push_back(members.at(-1));
    } else {
      for (int64_t i = 0; i < static_cast<int64_t>(members.size()); ++i) {
        if (!members.count(i)) fail(path, "extra property family '" + base + "' is missing '" + base + "_" + std::to_string(i) + "'");
        idx.push_back(members.at(i));
      }
    }
    torch::Tensor t = table.index_select(1, torch::tensor(idx, torch::kInt64));
    std::vector<int64_t> shape{n};
    if (auto it = extra_dims.find(base); it != extra_dims.end()) {
      int64_t m = 1;
      for (int64_t d : it->second) m *= d;
      if (m != static_cast<int64_t>(idx.size()))
        fail(path, "comment gives extra '" + base + "' " + std::to_string(m) + " values per vertex, but it has " + std::to_string(idx.size()));
      shape.insert(shape.end(), it->second.begin(), it->second.end());
    } else if (members.count(-1) == 0) {
      shape.push_back(static_cast<int64_t>(idx.size()));
    }
    g.extras[base] = t.reshape(shape).contiguous();
  }
  g.check();
  return g;
}

}  // namespace ef::splat
