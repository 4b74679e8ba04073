"""Reads an EdgeForge ONNX export with the official tools: onnx.checker (full check, with shape
inference), ONNX Runtime on raw inputs (all graph inputs, in order, one after the other; float32, int64 for
integer inputs),
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
dtypes = [np.dtype(np.int64 if i.type.tensor_type.elem_type == onnx.TensorProto.INT64 else np.float32) for i in graph.input]
raw = open(input_path, "rb").read()
assert len(raw) == sum(int(np.prod(s)) * d.itemsize for s, d in zip(shapes, dtypes)), f"{len(raw)} input bytes for inputs of {shapes}"
feed, pos = {}, 0
for i, s, d in zip(graph.input, shapes, dtypes):
    feed[i.name] = np.frombuffer(raw, dtype=d, count=int(np.prod(s)), offset=pos).reshape(s)
    pos += int(np.prod(s)) * d.itemsize
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
