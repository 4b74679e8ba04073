#pragma once
// What the recipes of lora/ that adapt a text-to-image model share: the base run they read (a
// `diffusion` run, whose UNet, text encoder and autoencoder they load frozen) and the UNet layers
// adapters go on when a config names none.
#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"

namespace ef::lora {

// The base run's resolved config. InputError naming `what` (the config key) and the run when it is
// a run of another recipe than `diffusion`; `recipe` names the asking recipe in the message.
Config text_to_image_base(const std::filesystem::path& base, const std::string& what, const std::string& recipe);

// The attention projections of every transformer block: q, k, v and out of attn1 and attn2.
const std::vector<std::string>& default_attention_targets();

}  // namespace ef::lora
