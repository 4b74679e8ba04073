#!/usr/bin/env python3
"""Decodes a compressed 3DGS .ply (SuperSplat's chunked layout) with numpy alone, following the
PlayCanvas engine's decoder: 11/10/11-bit unorm centres and log scales lerped within each
256-splat chunk's bounds, the 2-bit index of the dropped largest quaternion component with three
10-bit components scaled by sqrt(2) around 0.5, RGBA8 colour lerped within the chunk's colour
bounds (when present) with f_dc = (c - 0.5) / C0 and opacity = -log(1/a - 1) (+-40 at 0 and 1), and
higher SH as q * 8/255 - 4. Prints JSON: {"count", "means", "scales", "quats" (w,x,y,z),
"opacities", "f_dc", "f_rest"}.
Used by tests/splatting/test_compact_ply.cpp as a decoder written independently of EdgeForge's.
"""
import json
import sys

import numpy as np

SH_C0 = 0.28209479177387814
TYPES = {"float": "<f4", "uint": "<u4", "uchar": "u1"}


def parse(path):
    data = open(path, "rb").read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    elements = []
    for line in data[:end].decode("ascii").splitlines()[1:]:
        w = line.split()
        if w[0] == "element":
            elements.append((w[1], int(w[2]), []))
        elif w[0] == "property":
            elements[-1][2].append((w[2], TYPES[w[1]]))
    out, pos = {}, end
    for name, count, props in elements:
        dt = np.dtype(props)
        out[name] = np.frombuffer(data, dtype=dt, count=count, offset=pos)
        pos += dt.itemsize * count
    if pos != len(data):
        sys.exit(f"{len(data) - pos} bytes left after the elements")
    return out


def unorm(v, shift, bits):
    return ((v >> shift) & ((1 << bits) - 1)).astype(np.float64) / ((1 << bits) - 1)


def main():
    el = parse(sys.argv[1])
    chunk, vertex = el["chunk"], el["vertex"]
    n = len(vertex)
    ci = np.arange(n) // 256

    def lerp(t, lo, hi):
        lo, hi = chunk[lo][ci].astype(np.float64), chunk[hi][ci].astype(np.float64)
        return lo * (1 - t) + hi * t

    p, s = vertex["packed_position"], vertex["packed_scale"]
    means = np.stack([lerp(unorm(p, 21, 11), "min_x", "max_x"), lerp(unorm(p, 11, 10), "min_y", "max_y"),
                      lerp(unorm(p, 0, 11), "min_z", "max_z")], 1)
    scales = np.stack([lerp(unorm(s, 21, 11), "min_scale_x", "max_scale_x"), lerp(unorm(s, 11, 10), "min_scale_y", "max_scale_y"),
                       lerp(unorm(s, 0, 11), "min_scale_z", "max_scale_z")], 1)
    r = vertex["packed_rotation"]
    norm = 1.0 / (np.sqrt(2) * 0.5)
    a, b, c = [(unorm(r, sh, 10) - 0.5) * norm for sh in (20, 10, 0)]
    m = np.sqrt(np.maximum(0, 1 - (a * a + b * b + c * c)))
    which = r >> 30
    # engine: Quat(x, y, z, w) per case, stored as rot_0 = w, rot_1..3 = x, y, z
    xyzw = np.where(which[:, None] == 0, np.stack([a, b, c, m], 1),
           np.where(which[:, None] == 1, np.stack([m, b, c, a], 1),
           np.where(which[:, None] == 2, np.stack([b, m, c, a], 1), np.stack([b, c, m, a], 1))))
    quats = np.stack([xyzw[:, 3], xyzw[:, 0], xyzw[:, 1], xyzw[:, 2]], 1)
    col = vertex["packed_color"]
    rgb = np.stack([unorm(col, 24, 8), unorm(col, 16, 8), unorm(col, 8, 8)], 1)
    if "min_r" in chunk.dtype.names:
        rgb = np.stack([lerp(rgb[:, 0], "min_r", "max_r"), lerp(rgb[:, 1], "min_g", "max_g"), lerp(rgb[:, 2], "min_b", "max_b")], 1)
    alpha = unorm(col, 0, 8)
    with np.errstate(divide="ignore"):
        opacities = np.where(alpha <= 0, -40.0, np.where(alpha >= 1, 40.0, -np.log(1 / np.maximum(alpha, 1e-300) - 1)))
    f_rest = []
    if "sh" in el:
        sh = el["sh"]
        f_rest = (np.stack([sh[name] for name in sh.dtype.names], 1).astype(np.float64) * (8 / 255) - 4).tolist()
    print(json.dumps({"count": n, "means": means.tolist(), "scales": scales.tolist(), "quats": quats.tolist(),
                      "opacities": opacities.tolist(), "f_dc": ((rgb - 0.5) / SH_C0).tolist(), "f_rest": f_rest}))


if __name__ == "__main__":
    main()
