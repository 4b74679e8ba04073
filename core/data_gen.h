#pragma once
// Generated datasets, by name, for `edgeforge data gen <kind>`. Each domain registers its
// generators; a generator's parameters are the same object a recipe's `data.generate` holds.
#include <filesystem>
#include <string>

#include "core/config.h"
#include "core/registry.h"

namespace ef {

class DataGenerator {
 public:
  virtual ~DataGenerator() = default;
  virtual std::string default_path() const = 0;  // "data/shapes.h5"
  // Reads its parameters from `params` (unknown keys are rejected by the caller) and writes `out`
  // atomically.
  virtual void generate(const Config& params, const std::filesystem::path& out) = 0;
};

using DataGenRegistry = Registry<DataGenerator>;
DataGenRegistry& data_generators();

}  // namespace ef
