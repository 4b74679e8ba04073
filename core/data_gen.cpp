#include "core/data_gen.h"

#include "core/hdf5_file.h"

namespace ef {

namespace fs = std::filesystem;

DataGenRegistry& data_generators() {
  static DataGenRegistry registry("data generator");
  return registry;
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
    H5File f(path, H5File::Mode::Read);
    if (f.has_attr("params") && nlohmann::json::parse(f.attr_string("params")) != want)
      throw ConfigError(path.string() + " was generated with " + f.attr_string("params") + ", but " + data.path_of("generate") +
                        " asks for " + want.dump() + "; remove the file or choose another " + data.path_of("path"));
    return path;
  }
  if (!can_generate)
    throw ConfigError("dataset not found: " + path.string() + " (generate it with `edgeforge data gen " + kind + " --out " +
                      path.string() + "` or add " + data.path_of("generate") + ")");
  generator->generate(data.section("generate"), path);
  return path;
}

}  // namespace ef
