#include "core/data_gen.h"

#include "core/config.h"
#include "core/atomic_file.h"
#include "core/hdf5_file.h"

namespace ef {

namespace fs = std::filesystem;

DataGenRegistry& data_generators() {
  static DataGenRegistry registry("data generator");
  return registry;
}

nlohmann::json stored_generator_params(const fs::path& dataset) {
  if (fs::is_directory(dataset)) {
    const fs::path meta = dataset / "generator.json";
    if (!fs::exists(meta)) return nullptr;
    try {
      return nlohmann::json::parse(read_file(meta)).value("params", nlohmann::json());
    } catch (const nlohmann::json::exception& e) {
      throw InputError(meta.string() + ": not valid JSON: " + e.what());
    }
  }
  H5File f(dataset, H5File::Mode::Read);
  return f.has_attr("params") ? nlohmann::json::parse(f.attr_string("params")) : nlohmann::json();
}

fs::path prepare_dataset(const Config& data, const std::string& kind) {
  const std::string asked = data.get<std::string>("kind", kind);
  if (asked != kind)
    data.invalid("kind", "expected \"" + kind + "\", got \"" + asked + "\"");
  auto generator = data_generators().create(kind);
  const fs::path path = data.get<std::string>("path", generator->default_path());
  const bool can_generate = data.has("generate");
  if (fs::exists(path)) {
    if (!can_generate) return path;
    const nlohmann::json want = generator->resolved_params(data.section("generate"));
    const nlohmann::json stored = stored_generator_params(path);
    if (!stored.is_null() && stored != want)
      throw ConfigError(path.string() + " was generated with " + stored.dump() + ", but " + data.path_of("generate") +
                        " asks for " + want.dump() + "; remove it or choose another " + data.path_of("path"));
    return path;
  }
  if (!can_generate)
    throw ConfigError("dataset not found: " + path.string() + " (generate it with `edgeforge data gen " + kind + " --out " +
                      path.string() + "` or add " + data.path_of("generate") + ")");
  generator->generate(data.section("generate"), path);
  return path;
}

}  // namespace ef
