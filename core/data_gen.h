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
  // atomically. `out` is one HDF5 file, or a folder (write_folder_atomically) holding a
  // `generator.json` {"generator", "schema_version", "params"} for datasets that other tools read as
  // folders (a COLMAP scene).
  virtual void generate(const Config& params, const std::filesystem::path& out) = 0;
  // The parameters `params` resolve to (defaults filled in), as stored in the file's "params"
  // attribute (a folder's generator.json "params"): what decides whether an existing dataset is the
  // one asked for.
  virtual nlohmann::json resolved_params(const Config& params) const = 0;
};

using DataGenRegistry = Registry<DataGenerator>;
DataGenRegistry& data_generators();

// A recipe's `data` section for a generated dataset: checks `data.kind` is `kind`, reads `data.path`
// (default: the generator's), generates the file when it is missing and `data.generate` is given,
// and refuses an existing file made with other parameters (it would silently be another dataset).
// Returns the path.
std::filesystem::path prepare_dataset(const Config& data, const std::string& kind);

// The generator parameters a dataset records (HDF5 file: the "params" attribute; folder: "params" of
// its generator.json); null when it records none.
nlohmann::json stored_generator_params(const std::filesystem::path& dataset);

}  // namespace ef
