#pragma once
// COLMAP sparse models (`sparse/0/{cameras,images,points3D}.{bin,txt}`): the records exactly as COLMAP
// stores them, a reader for both encodings and a writer (the scene generator and the tests make
// fixtures with it). Conversion to renderer cameras lives here too, because only pinhole models can
// be converted: every other model must be undistorted first (COLMAP's image_undistorter).
#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "splatting/camera.h"

namespace ef::splat {

// COLMAP's camera model ids (src/colmap/sensor/models.h).
enum class ColmapModelId : int32_t {
  SimplePinhole = 0, Pinhole = 1, SimpleRadial = 2, Radial = 3, OpenCV = 4, OpenCVFisheye = 5, FullOpenCV = 6, FOV = 7,
  SimpleRadialFisheye = 8, RadialFisheye = 9, ThinPrismFisheye = 10,
};
std::string colmap_model_name(int32_t model);        // "OPENCV"; "model id 42" when unknown
int32_t colmap_model_from_name(const std::string& name);  // -1 when unknown
int colmap_model_param_count(int32_t model);        // -1 when unknown

struct ColmapCamera {
  int32_t id = 0;
  int32_t model = 1;  // ColmapModelId
  uint64_t width = 0, height = 0;
  std::vector<double> params;  // as the model orders them (PINHOLE: fx, fy, cx, cy)
  bool operator==(const ColmapCamera& o) const {
    return id == o.id && model == o.model && width == o.width && height == o.height && params == o.params;
  }
};

struct ColmapPoint2D {
  double x = 0, y = 0;
  int64_t point3d_id = -1;  // -1: not triangulated
  bool operator==(const ColmapPoint2D& o) const { return x == o.x && y == o.y && point3d_id == o.point3d_id; }
};

struct ColmapImage {
  int32_t id = 0;
  std::array<double, 4> qvec{1, 0, 0, 0};  // (w, x, y, z), world -> camera rotation
  std::array<double, 3> tvec{0, 0, 0};     // world -> camera translation
  int32_t camera_id = 0;
  std::string name;                        // relative to the images folder
  std::vector<ColmapPoint2D> points2d;
  bool operator==(const ColmapImage& o) const {
    return id == o.id && qvec == o.qvec && tvec == o.tvec && camera_id == o.camera_id && name == o.name && points2d == o.points2d;
  }
};

struct ColmapPoint3D {
  uint64_t id = 0;
  std::array<double, 3> xyz{0, 0, 0};
  std::array<uint8_t, 3> rgb{0, 0, 0};
  double error = 0;
  std::vector<std::pair<int32_t, int32_t>> track;  // (image_id, point2D_idx)
  bool operator==(const ColmapPoint3D& o) const {
    return id == o.id && xyz == o.xyz && rgb == o.rgb && error == o.error && track == o.track;
  }
};

struct ColmapModel {
  std::map<int32_t, ColmapCamera> cameras;  // by id
  std::vector<ColmapImage> images;          // in file order
  std::vector<ColmapPoint3D> points;        // in file order
};

enum class ColmapEncoding { Binary, Text };

// Reads `dir`/{cameras,images,points3D}.bin, or the .txt files when the .bin ones are absent.
// Errors (std::runtime_error) name the file: missing, truncated, unknown camera model, bad line.
ColmapModel read_colmap_model(const std::filesystem::path& dir);
// Writes the three files into `dir` (created when missing), each atomically. Text files carry
// 17 significant digits, so binary and text round trips are exact.
void write_colmap_model(const std::filesystem::path& dir, const ColmapModel& model, ColmapEncoding encoding);

// Rotation matrix (row-major 3x3) of a COLMAP quaternion (w, x, y, z); normalises it first.
std::array<double, 9> colmap_quat_to_rotation(const std::array<double, 4>& q);
// The inverse: a unit quaternion with w >= 0.
std::array<double, 4> colmap_rotation_to_quat(const std::array<double, 9>& R);

// A renderer camera for `image` seen through `camera`. SIMPLE_PINHOLE and PINHOLE convert; so do the
// distorted models whose distortion parameters are all exactly 0. Any other model throws an error
// naming the model and `source` (the cameras file) and telling the user to run image_undistorter.
Camera to_camera(const ColmapCamera& camera, const ColmapImage& image, const std::string& source);

}  // namespace ef::splat
