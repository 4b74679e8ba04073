"""Reference outputs of diffusers models for the C++ interop tests (tests/models/test_diffusers_interop.cpp).

usage: diffusers_reference.py CASES.json OUT_DIR

CASES.json: {"cases": [{"name": str, "model": "unet" | "taesd", "config": <the diffusers config>,
                        "seed": int, "noise": float, "inputs": {...}}]}
  unet inputs:  {"batch", "height", "width", "tokens"}      (sample, timesteps, context -> out)
  taesd inputs: {"batch", "height", "width"}                (image -> latent; latent_in -> decoded)

For every case the model is built from its config with a fixed seed, every parameter is perturbed by
Gaussian noise of std `noise` (so norm scales and biases are not 1 and 0), and two files are written:
OUT_DIR/<name>.weights.safetensors (the state dict) and OUT_DIR/<name>.io.safetensors (the inputs and
the outputs). Prints one JSON line at the end. Exits non-zero, with the reason, when diffusers or
safetensors are missing or a case fails.
"""
import json
import os
import sys

try:
    import diffusers
    import torch
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from safetensors.torch import save_file
except Exception as e:  # ImportError, or a broken installation
    sys.exit(f"diffusers_reference.py: cannot import torch/diffusers/safetensors in {sys.executable}: {e!r} "
             "(scripts/setup.sh installs them into the venv)")


def perturbed(model, seed, noise):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn_like(p))
    return model.eval()


def run_unet(case, gen):
    cfg = case["config"]
    model = perturbed(UNet2DConditionModel.from_config(cfg), case["seed"], case["noise"])
    i = case["inputs"]
    b, h, w = i["batch"], i["height"], i["width"]
    sample = torch.randn(b, cfg["in_channels"], h, w, generator=gen)
    timesteps = torch.randint(0, 1000, (b,), generator=gen, dtype=torch.int64)
    context = torch.randn(b, i["tokens"], cfg["cross_attention_dim"], generator=gen)
    with torch.no_grad():
        out = model(sample, timesteps, encoder_hidden_states=context).sample
    return model, {"sample": sample, "timesteps": timesteps, "context": context, "out": out}


def run_taesd(case, gen):
    cfg = case["config"]
    model = perturbed(AutoencoderTiny.from_config(cfg), case["seed"], case["noise"])
    i = case["inputs"]
    b, h, w = i["batch"], i["height"], i["width"]
    down = 2 ** (len(cfg["num_encoder_blocks"]) - 1)
    image = torch.rand(b, cfg["in_channels"], h, w, generator=gen) * 2 - 1
    latent_in = torch.randn(b, cfg["latent_channels"], h // down, w // down, generator=gen) * 2
    with torch.no_grad():
        latent = model.encode(image).latents
        decoded = model.decode(latent_in).sample
    return model, {"image": image, "latent": latent, "latent_in": latent_in, "decoded": decoded}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    cases = json.load(open(sys.argv[1]))["cases"]
    out_dir = sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    done = []
    for case in cases:
        gen = torch.Generator().manual_seed(case["seed"] + 1)
        runner = {"unet": run_unet, "taesd": run_taesd}.get(case["model"])
        if runner is None:
            sys.exit(f"diffusers_reference.py: case {case['name']}: unknown model {case['model']!r}")
        model, io = runner(case, gen)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(out_dir, case["name"] + ".weights.safetensors"))
        save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out_dir, case["name"] + ".io.safetensors"))
        done.append({"name": case["name"], "tensors": len(state), "parameters": sum(v.numel() for v in state.values())})
    print(json.dumps({"diffusers": diffusers.__version__, "torch": torch.__version__, "cases": done}))


if __name__ == "__main__":
    main()
