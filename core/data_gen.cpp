#include "core/data_gen.h"

namespace ef {

DataGenRegistry& data_generators() {
  static DataGenRegistry registry("data generator");
  return registry;
}

}  // namespace ef
