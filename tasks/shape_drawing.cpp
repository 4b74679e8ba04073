#include "tasks/shape_drawing.h"

#include <cmath>

namespace ef {

bool inside_shape(DrawnShape shape, double u, double v, double freq) {
  const double au = std::fabs(u), av = std::fabs(v), r2 = u * u + v * v;
  const bool in_patch = au <= 0.9 && av <= 0.9;
  switch (shape) {
    case DrawnShape::Disk: return r2 <= 1.0;
    case DrawnShape::Square: return au <= 0.8 && av <= 0.8;
    case DrawnShape::Triangle: return v >= -0.6 && v <= 0.9 - 1.732 * au;  // upward triangle
    case DrawnShape::Ring: return r2 <= 1.0 && r2 >= 0.36;
    case DrawnShape::Plus: return (au <= 0.28 && av <= 1.0) || (av <= 0.28 && au <= 1.0);
    case DrawnShape::XCross: {
      double a = (u + v) * 0.7071, b = (u - v) * 0.7071;
      return (std::fabs(a) <= 0.26 && std::fabs(b) <= 1.0) || (std::fabs(b) <= 0.26 && std::fabs(a) <= 1.0);
    }
    case DrawnShape::HStripes: return in_patch && std::sin(v * freq) > 0;
    case DrawnShape::VStripes: return in_patch && std::sin(u * freq) > 0;
    case DrawnShape::Checker: return in_patch && std::sin(u * freq) * std::sin(v * freq) > 0;
    case DrawnShape::Dots: {
      double fu = u * freq / M_PI * 0.5 + 100.0, fv = v * freq / M_PI * 0.5 + 100.0;
      double du = fu - std::floor(fu) - 0.5, dv = fv - std::floor(fv) - 0.5;
      return in_patch && du * du + dv * dv < 0.09;
    }
    case DrawnShape::Star: {  // five points, one pointing up; outer radius 1, inner 0.45
      if (r2 > 1.0) return false;
      constexpr double kSector = 2 * M_PI / 5, kInner = 0.45;
      const double r = std::sqrt(r2);
      double phi = std::fmod(std::atan2(u, v) + 2 * M_PI + kSector / 2, kSector) - kSector / 2;  // [-36, 36] degrees
      const double x = r * std::cos(phi), y = r * std::fabs(std::sin(phi));
      // inside when on the centre's side of the edge from the tip (1, 0) to the inner corner
      const double ex = kInner * std::cos(kSector / 2) - 1.0, ey = kInner * std::sin(kSector / 2);
      return ex * y - ey * (x - 1.0) >= 0;
    }
  }
  return false;
}

PlacedShape::PlacedShape(DrawnShape shape, double cx, double cy, double radius, double angle, double freq)
    : shape_(shape), cx_(cx), cy_(cy), radius_(radius), cos_(std::cos(angle)), sin_(std::sin(angle)), freq_(freq) {}

double PlacedShape::coverage(int x, int y) const {
  double cover = 0;
  for (int sy = 0; sy < 2; ++sy)
    for (int sx = 0; sx < 2; ++sx) {
      double dx = (x + 0.25 + 0.5 * sx - cx_) / radius_, dy = (y + 0.25 + 0.5 * sy - cy_) / radius_;
      double u = cos_ * dx + sin_ * dy, v = -sin_ * dx + cos_ * dy;
      cover += inside_shape(shape_, u, -v, freq_) ? 0.25 : 0.0;
    }
  return cover;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace ef
