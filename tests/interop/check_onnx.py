"""Reads an EdgeForge ONNX export with the official tools: onnx.checker (full check, with shape
inference), ONNX Runtime on raw float32 inputs (all graph inputs, in order, one after the other),
and the encodings JSON against the graph's tensor names.
Usage: check_onnx.py MODEL INPUTS.bin OUTPUT.bin [--encodings E.json] [--no-optimize]; prints one JSON object."""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

model_path, input_path, output_path = sys.argv[1:4]
rest = sys.argv[4:]
encodings_path = rest[rest.index("--encodings") + 1] if "--encodings" in rest else None
model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)
graph = model.graph
names = {i.name for i in graph.input} | {i.name for i in graph.initializer}
for node in graph.node:
    names.update(node.output)
shapes = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]
sizes = [int(np.prod(s)) for s in shapes]
raw = np.fromfile(input_path, dtype=np.float32)
assert raw.size == sum(sizes), f"{raw.size} input values for inputs of {shapes}"
feed = {i.name: p.reshape(s) for i, p, s in zip(graph.input, np.split(raw, np.cumsum(sizes)[:-1]), shapes)}
options = ort.SessionOptions()
if "--no-optimize" in rest:
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
y = session.run(None, feed)[0]
y.astype(np.float32).tofile(output_path)
result = {"checker": True, "opset": model.opset_import[0].version, "output_shape": list(y.shape),
          "ops": sorted({n.op_type for n in graph.node})}
if encodings_path:
    enc = json.load(open(encodings_path))
    keys = list(enc["activation_encodings"]) + list(enc["param_encodings"])
    result["encodings"] = len(keys)
    result["encodings_missing"] = [k for k in keys if k not in names]
    result["version"] = enc["version"]
print(json.dumps(result))
