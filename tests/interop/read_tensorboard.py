#!/usr/bin/env python3
"""Reads a TensorBoard log directory with TensorBoard's own reader and prints what it found.

Used by tests/core/test_tensorboard.cpp to check that EdgeForge's C++ event writer produces files
TensorBoard accepts (framing, CRCs and protobuf fields). Output is one JSON object:
  {"scalars": {tag: [[step, value], ...]}, "images": {tag: [[step, width, height], ...]}}
"""
import glob
import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} LOG_DIR", file=sys.stderr)
        return 2
    log_dir = sys.argv[1]
    # EventAccumulator quietly reports nothing for a directory without event files, which would
    # look like an empty but valid log; make that an explicit error instead.
    if not glob.glob(os.path.join(log_dir, "*tfevents*")):
        print(f"no TensorBoard event file in {log_dir}", file=sys.stderr)
        return 1

    # A size guidance of 0 keeps every event instead of a reservoir sample.
    guidance = {kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}
    acc = event_accumulator.EventAccumulator(log_dir, size_guidance=guidance)
    acc.Reload()

    tags = acc.Tags()
    result = {
        "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
        "images": {t: [[e.step, e.width, e.height] for e in acc.Images(t)] for t in tags["images"]},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
