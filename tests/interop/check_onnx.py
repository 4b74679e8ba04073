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
    # every scale and offset must be the QDQ graph's own: an activation's encoding is keyed by the
    # tensor a QuantizeLinear reads, a parameter's by the DequantizeLinear output that carries its name
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    quantizer_of = {n.input[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    dequantizer_of = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    mismatched = []
    def compare(key, entries, node):
        if node is None or len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
            mismatched.append(key + ": no QDQ node with constant scale and zero point")
            return
        scale = inits[node.input[1]].astype(np.float64).reshape(-1)
        zero_point = inits[node.input[2]]
        offset = -zero_point.astype(np.int64).reshape(-1)
        if np.issubdtype(zero_point.dtype, np.signedinteger):  # the encodings' grid is unsigned: a signed zero point moves by 2^(bits-1)
            offset = offset - (1 << (int(entries[0]["bitwidth"]) - 1))
        if len(entries) != scale.size:
            mismatched.append(f"{key}: {len(entries)} encodings for {scale.size} scales")
            return
        for c, e in enumerate(entries):
            if not np.isclose(e["scale"], scale[c], rtol=1e-6, atol=0) or e["offset"] != offset[c]:
                mismatched.append(f"{key}[{c}]: encodings scale {e['scale']} offset {e['offset']}, graph {scale[c]} {offset[c]}")
                return
    for key, entries in enc["activation_encodings"].items():
        compare(key, entries, quantizer_of.get(key))
    for key, entries in enc["param_encodings"].items():
        compare(key, entries, dequantizer_of.get(key))
    result["encodings_mismatched"] = mismatched[:10]
print(json.dumps(result))
