#include "lora/text_to_image_base.h"

namespace ef::lora {

Config text_to_image_base(const std::filesystem::path& base, const std::string& what, const std::string& recipe) {
  Config c = Config::load(base / "config.json");
  const std::string found = c.root().value("recipe", "");
  if (found != "diffusion")
    throw InputError(what + ": " + base.string() + " is a \"" + found + "\" run; the " + recipe + " recipe adapts a text-to-image (\"diffusion\") run");
  return c;
}

const std::vector<std::string>& default_attention_targets() {
  static const std::vector<std::string> targets = {"*.attn1.to_q", "*.attn1.to_k", "*.attn1.to_v", "*.attn1.to_out.0",
                                                   "*.attn2.to_q", "*.attn2.to_k", "*.attn2.to_v", "*.attn2.to_out.0"};
  return targets;
}

}  // namespace ef::lora
