"""diffusers reads EdgeForge's pipeline LoRA files (tests/lora/test_adapter_files.cpp).

Usage: diffusers_lora.py CASE_DIR
  CASE_DIR/config.json              the UNet2DConditionModel config (ef::UNetOptions::diffusers_config)
  CASE_DIR/base.safetensors         the UNet's weights
  CASE_DIR/pytorch_lora_weights.safetensors   diffusers' layout, written by ef::lora::save_lora_file
  CASE_DIR/kohya.safetensors        kohya's layout of the same adapters (optional)
  CASE_DIR/io.safetensors           sample, timesteps, context and EdgeForge's adapted output y

For each file, builds the UNet in diffusers from the config and weights, loads the LoRA the way
diffusers' pipelines do (load_lora_adapter with prefix "unet"; kohya's file first through
StableDiffusionLoraLoaderMixin.lora_state_dict, which converts the keys and returns the alphas),
checks that every LoRA tensor of the file became a parameter of the model (diffusers only warns about
unmatched keys), and compares the outputs. Exit 0 and "<layout>: diffusers output matches" per file on
success.
"""
import json
import os
import sys

try:
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from safetensors.torch import load_file
except Exception as e:  # ImportError, or a broken installation
    sys.exit(f"diffusers_lora.py: cannot import torch/diffusers/peft/safetensors in {sys.executable}: {e!r} "
             "(scripts/setup.sh installs them into the venv)")


def base_unet(case_dir):
    config = json.load(open(os.path.join(case_dir, "config.json")))
    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(load_file(os.path.join(case_dir, "base.safetensors")), strict=True)
    return unet.eval()


def lora_params(unet, adapter):
    return {k: v for k, v in unet.state_dict().items() if f".{adapter}." in k and ".lora_" in k}


def compare(name, unet, io):
    with torch.no_grad():
        y = unet(io["sample"], io["timesteps"], encoder_hidden_states=io["context"]).sample
    rel = ((y - io["y"]).abs().max() / io["y"].abs().max()).item()
    if rel > 1e-4:
        sys.exit(f"{name}: diffusers output differs from EdgeForge's: max relative error {rel:.3g}")
    print(f"{name}: diffusers output matches (max relative error {rel:.3g})")


def main(case_dir):
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    io = load_file(os.path.join(case_dir, "io.safetensors"))

    # diffusers' own layout, with its adapter metadata (r, lora_alpha, rank/alpha patterns)
    unet = base_unet(case_dir)
    unet.load_lora_adapter(case_dir, weight_name="pytorch_lora_weights.safetensors", prefix="unet", adapter_name="ours")
    stored = load_file(os.path.join(case_dir, "pytorch_lora_weights.safetensors"))
    loaded = lora_params(unet, "ours")
    for key, value in stored.items():
        name = key.removeprefix("unet.").replace(".lora_A.weight", ".lora_A.ours.weight").replace(".lora_B.weight", ".lora_B.ours.weight")
        if name not in loaded:
            sys.exit(f"diffusers made no parameter for {key} (its LoRA parameters: {sorted(loaded)[:8]} ...)")
        if not torch.equal(loaded[name], value):
            sys.exit(f"diffusers did not load {key}")
    if len(loaded) != len(stored):
        sys.exit(f"diffusers made {len(loaded)} LoRA tensors, the file has {len(stored)}")
    compare("diffusers layout", unet, io)

    # kohya's layout: diffusers converts the names and reads the alphas
    if not os.path.exists(os.path.join(case_dir, "kohya.safetensors")):
        return
    unet = base_unet(case_dir)
    kohya = load_file(os.path.join(case_dir, "kohya.safetensors"))
    n_weights = sum(1 for k in kohya if k.endswith((".lora_down.weight", ".lora_up.weight")))
    state_dict, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(dict(kohya))
    unet.load_lora_adapter(state_dict, prefix="unet", network_alphas=alphas, adapter_name="kohya")
    loaded = lora_params(unet, "kohya")
    if len(loaded) != n_weights:
        sys.exit(f"diffusers made {len(loaded)} LoRA tensors from the kohya file, which has {n_weights}")
    compare("kohya layout", unet, io)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
