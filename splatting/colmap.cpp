#include "splatting/colmap.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>
#include <stdexcept>

#include "core/atomic_file.h"
#include "core/config.h"

namespace ef::splat {

namespace fs = std::filesystem;

namespace {

struct ModelInfo {
  const char* name;
  int params;
};
// Indexed by COLMAP's model id.
constexpr ModelInfo kModels[] = {
    {"SIMPLE_PINHOLE", 3}, {"PINHOLE", 4}, {"SIMPLE_RADIAL", 4}, {"RADIAL", 5}, {"OPENCV", 8}, {"OPENCV_FISHEYE", 8},
    {"FULL_OPENCV", 12},   {"FOV", 5},     {"SIMPLE_RADIAL_FISHEYE", 4}, {"RADIAL_FISHEYE", 5}, {"THIN_PRISM_FISHEYE", 12},
};
constexpr int32_t kModelCount = sizeof(kModels) / sizeof(kModels[0]);

static_assert(sizeof(double) == 8 && sizeof(float) == 4, "COLMAP files need IEEE-754 doubles");

bool host_is_little_endian() {
  const uint16_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// Little-endian reads from a whole file held in memory; running past the end names the file and the
// record being read, which is what a user needs to find a truncated copy.
class BinaryReader {
 public:
  BinaryReader(const fs::path& path) : path_(path), bytes_(ef::read_file(path)) {
    if (!host_is_little_endian()) throw std::runtime_error("COLMAP binary files need a little-endian host");
  }
  template <class T> T get(const std::string& what) {
    if (bytes_.size() - pos_ < sizeof(T)) truncated(what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string get_cstring(const std::string& what) {
    const size_t end = bytes_.find('\0', pos_);
    if (end == std::string::npos) truncated(what);
    std::string s = bytes_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }
  // A count that must fit the bytes left, so a corrupt count fails cleanly instead of allocating.
  uint64_t get_count(const std::string& what, size_t min_record_bytes) {
    const uint64_t n = get<uint64_t>(what);
    if (min_record_bytes > 0 && n > (bytes_.size() - pos_) / min_record_bytes) truncated(what + " (" + std::to_string(n) + " records)");
    return n;
  }
  void expect_end() const {
    if (pos_ != bytes_.size())
      throw std::runtime_error(path_.string() + ": " + std::to_string(bytes_.size() - pos_) + " unexpected bytes after the last record");
  }

 private:
  [[noreturn]] void truncated(const std::string& what) const {
    throw std::runtime_error(path_.string() + ": truncated or corrupt file: ran out of data reading " + what + " at byte " +
                             std::to_string(pos_) + " of " + std::to_string(bytes_.size()));
  }
  fs::path path_;
  std::string bytes_;
  size_t pos_ = 0;
};

class BinaryWriter {
 public:
  template <class T> void put(T v) { out_.append(reinterpret_cast<const char*>(&v), sizeof(T)); }
  void put_cstring(const std::string& s) {
    if (s.find('\0') != std::string::npos) throw std::invalid_argument("COLMAP image name contains a NUL byte: " + s);
    out_.append(s);
    out_.push_back('\0');
  }
  const std::string& bytes() const { return out_; }

 private:
  std::string out_;
};

// Text files: '#' comments and blank lines are skipped; each data line is read as a stream of
// whitespace-separated fields.
std::vector<std::pair<size_t, std::string>> data_lines(const fs::path& path) {
  std::istringstream in(ef::read_file(path));
  std::vector<std::pair<size_t, std::string>> lines;
  std::string line;
  for (size_t no = 1; std::getline(in, line); ++no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    lines.emplace_back(no, line);
  }
  return lines;
}

[[noreturn]] void bad_line(const fs::path& path, size_t no, const std::string& why) {
  throw std::runtime_error(path.string() + ":" + std::to_string(no) + ": " + why);
}

template <class T> T field(std::istringstream& s, const fs::path& path, size_t no, const char* what) {
  T v;
  if (!(s >> v)) bad_line(path, no, std::string("expected ") + what);
  return v;
}

fs::path pick(const fs::path& dir, const std::string& stem) {
  const fs::path bin = dir / (stem + ".bin"), txt = dir / (stem + ".txt");
  if (fs::exists(bin)) return bin;
  if (fs::exists(txt)) return txt;
  throw std::runtime_error("COLMAP model incomplete: neither " + bin.string() + " nor " + txt.string() + " exists");
}

void check_model(int32_t model, const fs::path& path) {
  if (model < 0 || model >= kModelCount)
    throw std::runtime_error(path.string() + ": unknown COLMAP camera model id " + std::to_string(model));
}

// ---- cameras ----
std::map<int32_t, ColmapCamera> read_cameras(const fs::path& path) {
  std::map<int32_t, ColmapCamera> cams;
  if (path.extension() == ".bin") {
    BinaryReader r(path);
    const uint64_t n = r.get_count("the camera count", 24);
    for (uint64_t i = 0; i < n; ++i) {
      const std::string rec = "camera " + std::to_string(i);
      ColmapCamera c;
      c.id = r.get<int32_t>(rec + " id");
      c.model = r.get<int32_t>(rec + " model");
      check_model(c.model, path);
      c.width = r.get<uint64_t>(rec + " width");
      c.height = r.get<uint64_t>(rec + " height");
      for (int k = 0; k < kModels[c.model].params; ++k) c.params.push_back(r.get<double>(rec + " parameters"));
      cams[c.id] = c;
    }
    r.expect_end();
    return cams;
  }
  for (const auto& [no, line] : data_lines(path)) {
    std::istringstream s(line);
    ColmapCamera c;
    c.id = field<int32_t>(s, path, no, "CAMERA_ID");
    const std::string model = field<std::string>(s, path, no, "MODEL");
    c.model = colmap_model_from_name(model);
    if (c.model < 0) bad_line(path, no, "unknown COLMAP camera model " + model);
    c.width = field<uint64_t>(s, path, no, "WIDTH");
    c.height = field<uint64_t>(s, path, no, "HEIGHT");
    for (int k = 0; k < kModels[c.model].params; ++k) c.params.push_back(field<double>(s, path, no, "a camera parameter"));
    cams[c.id] = c;
  }
  return cams;
}

std::string write_cameras(const ColmapModel& m, ColmapEncoding enc) {
  for (const auto& [id, c] : m.cameras) {
    check_model(c.model, "<cameras>");
    if (static_cast<int>(c.params.size()) != kModels[c.model].params)
      throw std::invalid_argument("COLMAP camera " + std::to_string(id) + ": " + kModels[c.model].name + " takes " +
                                  std::to_string(kModels[c.model].params) + " parameters, got " + std::to_string(c.params.size()));
  }
  if (enc == ColmapEncoding::Binary) {
    BinaryWriter w;
    w.put<uint64_t>(m.cameras.size());
    for (const auto& [id, c] : m.cameras) {
      w.put<int32_t>(c.id);
      w.put<int32_t>(c.model);
      w.put<uint64_t>(c.width);
      w.put<uint64_t>(c.height);
      for (double p : c.params) w.put<double>(p);
    }
    return w.bytes();
  }
  std::ostringstream s;
  s << std::setprecision(17);
  s << "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n";
  s << "# Number of cameras: " << m.cameras.size() << "\n";
  for (const auto& [id, c] : m.cameras) {
    s << c.id << ' ' << kModels[c.model].name << ' ' << c.width << ' ' << c.height;
    for (double p : c.params) s << ' ' << p;
    s << '\n';
  }
  return s.str();
}

// ---- images ----
std::vector<ColmapImage> read_images(const fs::path& path) {
  std::vector<ColmapImage> images;
  if (path.extension() == ".bin") {
    BinaryReader r(path);
    const uint64_t n = r.get_count("the image count", 73);
    for (uint64_t i = 0; i < n; ++i) {
      const std::string rec = "image " + std::to_string(i);
      ColmapImage im;
      im.id = r.get<int32_t>(rec + " id");
      for (double& q : im.qvec) q = r.get<double>(rec + " qvec");
      for (double& t : im.tvec) t = r.get<double>(rec + " tvec");
      im.camera_id = r.get<int32_t>(rec + " camera_id");
      im.name = r.get_cstring(rec + " name");
      const uint64_t n2d = r.get_count(rec + " 2-D point count", 24);
      im.points2d.resize(n2d);
      for (auto& p : im.points2d) {
        p.x = r.get<double>(rec + " 2-D points");
        p.y = r.get<double>(rec + " 2-D points");
        p.point3d_id = r.get<int64_t>(rec + " 2-D points");
      }
      images.push_back(std::move(im));
    }
    r.expect_end();
    return images;
  }
  // Two lines per image: the pose line, then the 2-D points line (which may be empty: COLMAP then
  // writes an empty line, which data_lines() drops, so a pose line can be followed by a pose line).
  std::istringstream in(ef::read_file(path));
  std::string line;
  bool expect_points = false;
  for (size_t no = 1; std::getline(in, line); ++no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!expect_points && (line.empty() || line[0] == '#')) continue;
    std::istringstream s(line);
    if (!expect_points) {
      ColmapImage im;
      im.id = field<int32_t>(s, path, no, "IMAGE_ID");
      for (double& q : im.qvec) q = field<double>(s, path, no, "QW QX QY QZ");
      for (double& t : im.tvec) t = field<double>(s, path, no, "TX TY TZ");
      im.camera_id = field<int32_t>(s, path, no, "CAMERA_ID");
      im.name = field<std::string>(s, path, no, "NAME");
      images.push_back(std::move(im));
      expect_points = true;
    } else {
      ColmapPoint2D p;
      while (s >> p.x) {
        p.y = field<double>(s, path, no, "Y of a 2-D point");
        p.point3d_id = field<int64_t>(s, path, no, "POINT3D_ID of a 2-D point");
        images.back().points2d.push_back(p);
      }
      if (!s.eof()) bad_line(path, no, "expected X Y POINT3D_ID triples");
      expect_points = false;
    }
  }
  return images;
}

std::string write_images(const ColmapModel& m, ColmapEncoding enc) {
  if (enc == ColmapEncoding::Binary) {
    BinaryWriter w;
    w.put<uint64_t>(m.images.size());
    for (const auto& im : m.images) {
      w.put<int32_t>(im.id);
      for (double q : im.qvec) w.put<double>(q);
      for (double t : im.tvec) w.put<double>(t);
      w.put<int32_t>(im.camera_id);
      w.put_cstring(im.name);
      w.put<uint64_t>(im.points2d.size());
      for (const auto& p : im.points2d) {
        w.put<double>(p.x);
        w.put<double>(p.y);
        w.put<int64_t>(p.point3d_id);
      }
    }
    return w.bytes();
  }
  std::ostringstream s;
  s << std::setprecision(17);
  s << "# Image list with two lines of data per image:\n#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
       "#   POINTS2D[] as (X, Y, POINT3D_ID)\n# Number of images: "
    << m.images.size() << "\n";
  for (const auto& im : m.images) {
    if (im.name.find_first_of(" \t\n") != std::string::npos)
      throw std::invalid_argument("COLMAP text format cannot hold an image name with whitespace: '" + im.name + "'");
    s << im.id;
    for (double q : im.qvec) s << ' ' << q;
    for (double t : im.tvec) s << ' ' << t;
    s << ' ' << im.camera_id << ' ' << im.name << '\n';
    for (size_t i = 0; i < im.points2d.size(); ++i)
      s << (i ? " " : "") << im.points2d[i].x << ' ' << im.points2d[i].y << ' ' << im.points2d[i].point3d_id;
    s << '\n';
  }
  return s.str();
}

// ---- points ----
std::vector<ColmapPoint3D> read_points(const fs::path& path) {
  std::vector<ColmapPoint3D> points;
  if (path.extension() == ".bin") {
    BinaryReader r(path);
    const uint64_t n = r.get_count("the point count", 43);
    points.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
      const std::string rec = "point " + std::to_string(i);
      ColmapPoint3D p;
      p.id = r.get<uint64_t>(rec + " id");
      for (double& v : p.xyz) v = r.get<double>(rec + " xyz");
      for (uint8_t& c : p.rgb) c = r.get<uint8_t>(rec + " rgb");
      p.error = r.get<double>(rec + " error");
      const uint64_t len = r.get_count(rec + " track length", 8);
      p.track.resize(len);
      for (auto& [img, idx] : p.track) {
        img = r.get<int32_t>(rec + " track");
        idx = r.get<int32_t>(rec + " track");
      }
      points.push_back(std::move(p));
    }
    r.expect_end();
    return points;
  }
  for (const auto& [no, line] : data_lines(path)) {
    std::istringstream s(line);
    ColmapPoint3D p;
    p.id = field<uint64_t>(s, path, no, "POINT3D_ID");
    for (double& v : p.xyz) v = field<double>(s, path, no, "X Y Z");
    for (uint8_t& c : p.rgb) {
      const int v = field<int>(s, path, no, "R G B");
      if (v < 0 || v > 255) bad_line(path, no, "colour component " + std::to_string(v) + " is outside 0..255");
      c = static_cast<uint8_t>(v);
    }
    p.error = field<double>(s, path, no, "ERROR");
    int32_t img;
    while (s >> img) p.track.emplace_back(img, field<int32_t>(s, path, no, "POINT2D_IDX of a track element"));
    if (!s.eof()) bad_line(path, no, "expected IMAGE_ID POINT2D_IDX pairs");
    points.push_back(std::move(p));
  }
  return points;
}

std::string write_points(const ColmapModel& m, ColmapEncoding enc) {
  if (enc == ColmapEncoding::Binary) {
    BinaryWriter w;
    w.put<uint64_t>(m.points.size());
    for (const auto& p : m.points) {
      w.put<uint64_t>(p.id);
      for (double v : p.xyz) w.put<double>(v);
      for (uint8_t c : p.rgb) w.put<uint8_t>(c);
      w.put<double>(p.error);
      w.put<uint64_t>(p.track.size());
      for (const auto& [img, idx] : p.track) {
        w.put<int32_t>(img);
        w.put<int32_t>(idx);
      }
    }
    return w.bytes();
  }
  std::ostringstream s;
  s << std::setprecision(17);
  s << "# 3D point list with one line of data per point:\n"
       "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n# Number of points: "
    << m.points.size() << "\n";
  for (const auto& p : m.points) {
    s << p.id << ' ' << p.xyz[0] << ' ' << p.xyz[1] << ' ' << p.xyz[2] << ' ' << int(p.rgb[0]) << ' ' << int(p.rgb[1]) << ' '
      << int(p.rgb[2]) << ' ' << p.error;
    for (const auto& [img, idx] : p.track) s << ' ' << img << ' ' << idx;
    s << '\n';
  }
  return s.str();
}

}  // namespace

std::string colmap_model_name(int32_t model) {
  return model >= 0 && model < kModelCount ? kModels[model].name : "model id " + std::to_string(model);
}

int32_t colmap_model_from_name(const std::string& name) {
  for (int32_t i = 0; i < kModelCount; ++i)
    if (name == kModels[i].name) return i;
  return -1;
}

int colmap_model_param_count(int32_t model) { return model >= 0 && model < kModelCount ? kModels[model].params : -1; }

ColmapModel read_colmap_model(const fs::path& dir) {
  if (!fs::is_directory(dir)) throw std::runtime_error("COLMAP model folder not found: " + dir.string());
  ColmapModel m;
  const fs::path cams = pick(dir, "cameras"), images = pick(dir, "images"), points = pick(dir, "points3D");
  m.cameras = read_cameras(cams);
  m.images = read_images(images);
  m.points = read_points(points);
  for (const auto& im : m.images)
    if (!m.cameras.count(im.camera_id))
      throw std::runtime_error(images.string() + ": image '" + im.name + "' refers to camera " + std::to_string(im.camera_id) +
                               ", which " + cams.string() + " does not define");
  return m;
}

void write_colmap_model(const fs::path& dir, const ColmapModel& model, ColmapEncoding encoding) {
  const std::string ext = encoding == ColmapEncoding::Binary ? ".bin" : ".txt";
  // Render every file first so that a bad record fails before anything is written.
  const std::string cams = write_cameras(model, encoding), images = write_images(model, encoding),
                    points = write_points(model, encoding);
  fs::create_directories(dir);
  write_file_atomically(dir / ("cameras" + ext), cams);
  write_file_atomically(dir / ("images" + ext), images);
  write_file_atomically(dir / ("points3D" + ext), points);
}

std::array<double, 9> colmap_quat_to_rotation(const std::array<double, 4>& q_in) {
  const double n = std::sqrt(q_in[0] * q_in[0] + q_in[1] * q_in[1] + q_in[2] * q_in[2] + q_in[3] * q_in[3]);
  if (!(n > 0)) throw std::invalid_argument("COLMAP quaternion has zero length");
  const double w = q_in[0] / n, x = q_in[1] / n, y = q_in[2] / n, z = q_in[3] / n;
  return {1 - 2 * (y * y + z * z), 2 * (x * y - w * z),     2 * (x * z + w * y),
          2 * (x * y + w * z),     1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
          2 * (x * z - w * y),     2 * (y * z + w * x),     1 - 2 * (x * x + y * y)};
}

std::array<double, 4> colmap_rotation_to_quat(const std::array<double, 9>& R) {
  // Shepperd's method: pivot on the largest of the diagonal combinations for accuracy.
  const double t = R[0] + R[4] + R[8];
  double w, x, y, z;
  if (t > 0) {
    const double s = 2 * std::sqrt(1 + t);
    w = 0.25 * s, x = (R[7] - R[5]) / s, y = (R[2] - R[6]) / s, z = (R[3] - R[1]) / s;
  } else if (R[0] > R[4] && R[0] > R[8]) {
    const double s = 2 * std::sqrt(1 + R[0] - R[4] - R[8]);
    w = (R[7] - R[5]) / s, x = 0.25 * s, y = (R[1] + R[3]) / s, z = (R[2] + R[6]) / s;
  } else if (R[4] > R[8]) {
    const double s = 2 * std::sqrt(1 + R[4] - R[0] - R[8]);
    w = (R[2] - R[6]) / s, x = (R[1] + R[3]) / s, y = 0.25 * s, z = (R[5] + R[7]) / s;
  } else {
    const double s = 2 * std::sqrt(1 + R[8] - R[0] - R[4]);
    w = (R[3] - R[1]) / s, x = (R[2] + R[6]) / s, y = (R[5] + R[7]) / s, z = 0.25 * s;
  }
  const double sign = w < 0 ? -1 : 1, n = std::sqrt(w * w + x * x + y * y + z * z);
  return {sign * w / n, sign * x / n, sign * y / n, sign * z / n};
}

Camera to_camera(const ColmapCamera& c, const ColmapImage& image, const std::string& source) {
  Camera cam;
  const auto& p = c.params;
  const auto distortion_free = [&](size_t first) {
    return std::all_of(p.begin() + static_cast<std::ptrdiff_t>(first), p.end(), [](double v) { return v == 0.0; });
  };
  bool pinhole = true;
  switch (static_cast<ColmapModelId>(c.model)) {
    case ColmapModelId::SimplePinhole: cam.fx = cam.fy = p[0], cam.cx = p[1], cam.cy = p[2]; break;
    case ColmapModelId::Pinhole: cam.fx = p[0], cam.fy = p[1], cam.cx = p[2], cam.cy = p[3]; break;
    case ColmapModelId::SimpleRadial:
    case ColmapModelId::Radial:
      pinhole = distortion_free(3);
      cam.fx = cam.fy = p[0], cam.cx = p[1], cam.cy = p[2];
      break;
    case ColmapModelId::OpenCV:
    case ColmapModelId::FullOpenCV:
      pinhole = distortion_free(4);
      cam.fx = p[0], cam.fy = p[1], cam.cx = p[2], cam.cy = p[3];
      break;
    default: pinhole = false;  // fisheye and FOV models are not pinholes even without distortion
  }
  if (!pinhole)
    throw InputError(source + ": camera " + std::to_string(c.id) + " uses the " + colmap_model_name(c.model) +
                             " model with lens distortion, which the rasterizer cannot render; undistort the images first "
                             "(colmap image_undistorter --image_path images --input_path sparse/0 --output_path undistorted) "
                             "and load the undistorted folder (PINHOLE or SIMPLE_PINHOLE cameras)");
  // a camera that cannot project (no size, a zero, negative or non-finite focal length) is refused by id
  const bool size_ok = c.width > 0 && c.height > 0 && c.width < (1u << 20) && c.height < (1u << 20);
  const bool focal_ok = std::isfinite(cam.fx) && std::isfinite(cam.fy) && cam.fx > 0 && cam.fy > 0 && std::isfinite(cam.cx) && std::isfinite(cam.cy);
  if (!size_ok || !focal_ok)
    throw InputError(source + ": camera " + std::to_string(c.id) + " has size " + std::to_string(c.width) + "x" + std::to_string(c.height) +
                     " and focal length " + std::to_string(cam.fx) + ", " + std::to_string(cam.fy) +
                     " (principal point " + std::to_string(cam.cx) + ", " + std::to_string(cam.cy) + "): a camera needs a positive size and focal length");
  cam.width = static_cast<int64_t>(c.width);
  cam.height = static_cast<int64_t>(c.height);
  cam.name = image.name;
  const auto R = colmap_quat_to_rotation(image.qvec);
  cam.world_to_camera = torch::eye(4, torch::kFloat64);
  auto a = cam.world_to_camera.accessor<double, 2>();
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) a[i][j] = R[i * 3 + j];
    a[i][3] = image.tvec[i];
  }
  return cam;
}

}  // namespace ef::splat
