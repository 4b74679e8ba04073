"""The diffusers side of bench/diffusion.cpp: the same UNet (and TAESD) in diffusers, PyTorch eager.

usage: diffusion_reference.py SPEC.json

SPEC.json (written by bench_diffusion): {"unet": <UNet2DConditionModel config>, "edit_unet": <the same with the
editing input channels>, "taesd": <AutoencoderTiny config>, "batch", "size", "tokens", "edit_batch", "device",
"threads", "budget", "min_reps", "max_reps"}

Builds the models, prints one JSON line {"ready": true, "parameters": ...}, then answers every line it reads on
stdin with one JSON line {"ms": median}: `train` (forward + MSE + backward + AdamW step), `infer` (one forward
without gradients), `edit_unet` (one forward of the editing UNet on edit_batch), `taesd_encode`, `taesd_decode`
(one 8x image). Timing as bench/timing.h: one warm-up, then at least min_reps runs until about `budget` seconds,
at most max_reps; the median.
"""
import json
import sys
import time

import torch
from diffusers import AutoencoderTiny, UNet2DConditionModel


def timed(fn, spec, device):
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    ms = []
    start = time.perf_counter()
    while len(ms) < spec["min_reps"] or time.perf_counter() - start < spec["budget"]:
        t0 = time.perf_counter()
        fn()
        sync()
        ms.append((time.perf_counter() - t0) * 1e3)
        if len(ms) >= spec["max_reps"]:
            break
    return sorted(ms)[len(ms) // 2]  # as bench/timing.h


def main():
    spec = json.load(open(sys.argv[1]))
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(spec["unet"]).to(device)
    edit_unet = UNet2DConditionModel.from_config(spec["edit_unet"]).to(device).eval()
    taesd = AutoencoderTiny.from_config(spec["taesd"]).to(device).eval()
    b, s, tokens = spec["batch"], spec["size"], spec["tokens"]
    ucfg = spec["unet"]
    x = torch.randn(b, ucfg["in_channels"], s, s, device=device)
    t = torch.randint(0, 1000, (b,), device=device)
    ctx = torch.randn(b, tokens, ucfg["cross_attention_dim"], device=device)
    target = torch.randn(b, ucfg["out_channels"], s, s, device=device)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=1e-2)
    eb = spec["edit_batch"]
    ex = torch.randn(eb, spec["edit_unet"]["in_channels"], s, s, device=device)
    et = torch.full((eb,), 500, device=device)
    ectx = torch.randn(eb, tokens, ucfg["cross_attention_dim"], device=device)
    image = torch.rand(1, spec["taesd"]["in_channels"], s * 8, s * 8, device=device) * 2 - 1
    latent = torch.randn(1, spec["taesd"]["latent_channels"], s, s, device=device)

    def train():
        unet.train()
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(unet(x, t, encoder_hidden_states=ctx).sample, target)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer():
        unet.eval()
        unet(x, t, encoder_hidden_states=ctx)

    @torch.no_grad()
    def edit():
        edit_unet(ex, et, encoder_hidden_states=ectx)

    @torch.no_grad()
    def encode():
        taesd.encode(image)

    @torch.no_grad()
    def decode():
        taesd.decode(latent)

    jobs = {"train": train, "infer": infer, "edit_unet": edit, "taesd_encode": encode, "taesd_decode": decode}
    print(json.dumps({"ready": True, "parameters": sum(p.numel() for p in unet.parameters())}), flush=True)
    for line in sys.stdin:
        job = jobs.get(line.strip())
        if job is None:
            print(json.dumps({"error": f"unknown request {line.strip()!r}"}), flush=True)
            continue
        print(json.dumps({"ms": timed(job, spec, device)}), flush=True)


if __name__ == "__main__":
    main()
