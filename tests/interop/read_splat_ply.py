#!/usr/bin/env python3
"""Reads a 3DGS .ply with numpy alone, the way viewers and training scripts do, and prints JSON.

Used by tests/splatting/test_ply.cpp to check that EdgeForge's writer produces the standard layout:
the header is parsed line by line and the vertex data mapped with np.frombuffer. With
--expect-degree L, the script itself checks that the properties start with the standard 3DGS names
for SH degree L in the standard order (62 names for L = 3), all float32, 4 bytes each.
Output: {"format": ..., "count": N, "names": [...], "values": [[row], ...]}
"""
import argparse
import json
import sys

import numpy as np

TYPES = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8", "uchar": "u1", "uint8": "u1",
         "char": "i1", "int8": "i1", "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
         "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4"}


def standard_names(degree):
    rest = 3 * ((degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ply")
    ap.add_argument("--expect-degree", type=int, default=None)
    args = ap.parse_args()
    data = open(args.ply, "rb").read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    if lines[0] != "ply":
        sys.exit("not a ply file")
    fmt, count, props = None, None, []
    for line in lines[1:]:
        words = line.split()
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            if words[1] != "vertex":
                sys.exit(f"unexpected element {words[1]}")
            count = int(words[2])
        elif words[0] == "property":
            props.append((words[2], TYPES[words[1]]))
    if fmt != "binary_little_endian":
        sys.exit(f"format is {fmt}, expected binary_little_endian")
    dtype = np.dtype([(name, t) for name, t in props])
    vertices = np.frombuffer(data, dtype=dtype, count=count, offset=end)
    if end + count * dtype.itemsize != len(data):
        sys.exit(f"file has {len(data) - end} data bytes, expected {count * dtype.itemsize}")
    names = [name for name, _ in props]
    if args.expect_degree is not None:
        want = standard_names(args.expect_degree)
        if names[: len(want)] != want:
            sys.exit(f"property names {names[:len(want)]} differ from the standard {want}")
        if any(t != "<f4" for _, t in props):
            sys.exit("every property should be a float32")
    values = [[float(vertices[n][i]) for n in names] for i in range(count)]
    print(json.dumps({"format": fmt, "count": count, "names": names, "values": values,
                      "bytes_per_vertex": dtype.itemsize}))


if __name__ == "__main__":
    main()
