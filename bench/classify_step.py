"""The classify training step in Python PyTorch eager: the same ViT, optimizer and batch shape as
bench/classify_step.cpp, so that the C++ program can time both side by side.

Prints one line: JSON {"ms_per_step": ..., "steps": ...}.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, image_size, patch, dim, depth, heads, mlp_ratio, classes, pool):
        super().__init__()
        self.pool = pool
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        tokens = (image_size // patch) ** 2 + (1 if pool == "cls" else 0)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        x = x + self.pos_embed
        for b in self.blocks:
            x = b(x)
        x = self.norm(x)
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(1))


def main():
    p = argparse.ArgumentParser()
    for name, default in [("image_size", 32), ("patch", 4), ("dim", 64), ("depth", 4), ("heads", 2), ("batch", 64),
                          ("steps", 20), ("warmup", 3), ("threads", 2)]:
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--mlp_ratio", type=float, default=2.0)
    p.add_argument("--pool", default="mean")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = ViT(a.image_size, a.patch, a.dim, a.depth, a.heads, a.mlp_ratio, 10, a.pool)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    images = torch.rand(a.batch, 3, a.image_size, a.image_size)
    labels = torch.randint(0, 10, (a.batch,))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    ms = (time.perf_counter() - t0) * 1e3 / a.steps
    print(json.dumps({"ms_per_step": ms, "steps": a.steps}))


if __name__ == "__main__":
    main()
