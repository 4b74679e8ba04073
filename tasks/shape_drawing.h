#pragma once
// Anti-aliased shapes for the generated image sets: the one copy of the shape outlines and of their
// pixel coverage, shared by "shapes" (tasks/shapes_dataset.h) and "captions"/"edits"
// (tasks/caption_data.h).
#include <cstdint>

namespace ef {

// The outlines, in the order of the "shapes" classes (its labels are these values); Star is drawn
// only by the captions/edits scenes.
enum class DrawnShape : int { Disk, Square, Triangle, Ring, Plus, XCross, HStripes, VStripes, Checker, Dots, Star };

// Is the local point (u, v) (shape frame: radius 1, v pointing up) inside `shape`? `freq` is the
// angular frequency of the textured ones (stripes, checker, dots) in that frame.
bool inside_shape(DrawnShape shape, double u, double v, double freq);

// A shape placed in an image: centre (cx, cy) and radius in pixels (y pointing down), rotated by
// `angle` radians.
class PlacedShape {
 public:
  PlacedShape(DrawnShape shape, double cx, double cy, double radius, double angle, double freq);
  // Fraction of pixel (x, y) the shape covers, by 2x2 supersampling: 0, 0.25, 0.5, 0.75 or 1.
  double coverage(int x, int y) const;

 private:
  DrawnShape shape_;
  double cx_, cy_, radius_, cos_, sin_, freq_;
};

// splitmix64: turns neighbouring seeds (seed, index) into decorrelated generator seeds.
uint64_t splitmix64(uint64_t x);

}  // namespace ef
