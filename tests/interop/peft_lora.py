"""PEFT reads an EdgeForge LoRA folder (tests/lora/test_adapters.cpp).

Usage: peft_lora.py BASE.safetensors CASE_DIR
  BASE.safetensors   the base stack's weights (conv, fc1, fc2, head)
  CASE_DIR/adapter/  adapter_config.json + adapter_model.safetensors written by ef::lora::save_peft
  CASE_DIR/io.safetensors  x and EdgeForge's adapted output y

Builds the same stack in torch.nn, loads the folder with PeftModel.from_pretrained, checks that every
LoRA tensor of the file was loaded (PEFT only warns about missing or unexpected keys), and compares
the outputs. Exit 0 and "peft output matches" on success.
"""
import sys

try:
    import torch
    import torch.nn.functional as F
    from peft import PeftModel
    from safetensors.torch import load_file
except Exception as e:  # ImportError, or a broken installation
    sys.exit(f"peft_lora.py: cannot import torch/peft/safetensors in {sys.executable}: {e!r} "
             "(scripts/setup.sh installs them into the venv)")


class Stack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 12, 3, stride=2, padding=1)
        self.fc1 = torch.nn.Linear(12, 16)
        self.fc2 = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, 5, bias=False)

    def forward(self, images):
        x = self.conv(images).flatten(2).transpose(1, 2)
        return self.head(F.gelu(self.fc2(F.gelu(self.fc1(x)))))


def main(base_file, case_dir):
    model = Stack()
    model.load_state_dict(load_file(base_file), strict=True)
    model.eval()
    peft_model = PeftModel.from_pretrained(model, f"{case_dir}/adapter")
    peft_model.eval()

    stored = load_file(f"{case_dir}/adapter/adapter_model.safetensors")
    loaded = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    for key, value in stored.items():
        name = key.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        if name not in loaded:
            sys.exit(f"PEFT has no parameter for {key} (its LoRA parameters: {sorted(loaded)})")
        if not torch.equal(loaded[name], value):
            sys.exit(f"PEFT did not load {key}")
    if len(loaded) != len(stored):
        sys.exit(f"PEFT made {len(loaded)} LoRA tensors, the file has {len(stored)}")

    io = load_file(f"{case_dir}/io.safetensors")
    with torch.no_grad():
        y = peft_model(io["x"])
    err = (y - io["y"]).abs().max().item()
    if not torch.allclose(y, io["y"], rtol=1e-5, atol=1e-5):
        sys.exit(f"peft output differs: max abs error {err}")
    print(f"peft output matches (max abs error {err:.3g})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
