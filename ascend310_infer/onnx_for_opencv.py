"""Rewrite export.py's ONNX into operator forms that OpenCV 4.6's DNN importer (Debian 12's
libopencv-dev) accepts, without changing what the graph computes:

  Reshape (N,C,H,1,W,1) -> Expand (N,C,H,k,W,k) -> Reshape (N,C,kH,kW), the exported nearest
      upsampling, becomes one Resize (nearest, scale k): OpenCV 4.6 has no general Expand.
  Add/Mul with a constant that broadcasts (the decode's cell offsets and anchor sizes) get the
      constant stored at the full output shape: OpenCV 4.6 cannot broadcast them on 5-D tensors.

Both rewrites are exact; the result is checked against the original in ONNX Runtime.

    python ascend310_infer/onnx_for_opencv.py --input yolov3_tiny.onnx --output yolov3_tiny_opencv.onnx
"""
import argparse
import os
import sys
from typing import Dict, List

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from src.fileio import atomic_path  # noqa: E402


def tensor_shapes(model: onnx.ModelProto) -> Dict[str, List[int]]:
    graph = shape_inference.infer_shapes(model).graph
    infos = list(graph.value_info) + list(graph.input) + list(graph.output)
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in infos}


def upsample_factor(in_shape: List[int], out_shape: List[int]) -> int:
    """k when (N,C,H,1,W,1) expands to (N,C,H,k,W,k), else 0."""
    if len(in_shape) != 6 or len(out_shape) != 6 or in_shape[3] != 1 or in_shape[5] != 1:
        return 0
    same = [in_shape[i] == out_shape[i] for i in (0, 1, 2, 4)]
    return out_shape[3] if all(same) and out_shape[3] == out_shape[5] > 1 else 0


def expand_to_resize(model: onnx.ModelProto) -> int:
    """Replace every Reshape-Expand-Reshape upsampling with a Resize; returns how many."""
    graph = model.graph
    shapes = tensor_shapes(model)
    producer = {out: n for n in graph.node for out in n.output}
    consumers: Dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    replaced, dropped = {}, set()
    for node in graph.node:
        if node.op_type != "Expand":
            continue
        before, after = producer.get(node.input[0]), consumers.get(node.output[0], [])
        k = upsample_factor(shapes.get(node.input[0], []), shapes.get(node.output[0], []))
        if not (k and before is not None and before.op_type == "Reshape" and len(after) == 1
                and after[0].op_type == "Reshape" and len(consumers[before.output[0]]) == 1):
            raise UserError(f"cannot lower Expand node {node.name}: it is not the nearest-upsampling pattern "
                            "Reshape (N,C,H,1,W,1) -> Expand -> Reshape")
        roi = numpy_helper.from_array(np.zeros(0, np.float32), node.name + "_roi")
        scales = numpy_helper.from_array(np.array([1, 1, k, k], np.float32), node.name + "_scales")
        graph.initializer.extend([roi, scales])
        replaced[id(node)] = helper.make_node(
            "Resize", [before.input[0], roi.name, scales.name], [after[0].output[0]], name=node.name + "_resize",
            mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        dropped |= {id(before), id(after[0])}
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(replaced)


def materialise_broadcast_constants(model: onnx.ModelProto) -> int:
    """Give Add/Mul constants that broadcast the full output shape; returns how many."""
    graph = model.graph
    shapes = tensor_shapes(model)
    initializers = {t.name: t for t in graph.initializer}
    count = 0
    for node in graph.node:
        if node.op_type not in ("Add", "Mul"):
            continue
        out_shape = shapes.get(node.output[0])
        for k, name in enumerate(node.input):
            if name not in initializers or not out_shape:
                continue
            value = numpy_helper.to_array(initializers[name])
            if value.size > 1 and list(value.shape) != out_shape:
                full = numpy_helper.from_array(np.ascontiguousarray(np.broadcast_to(value, out_shape)),
                                               f"{name}_full_{node.name}")
                graph.initializer.append(full)
                node.input[k] = full.name
                count += 1
    return count


def drop_unused_constants(model: onnx.ModelProto) -> None:
    """Remove the constants the rewrites left without a reader (old shapes and broadcasts)."""
    graph = model.graph
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    nodes = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def check_same_outputs(original: str, lowered: str) -> float:
    """Max |difference| of the two graphs' outputs in ONNX Runtime on one random input."""
    import onnxruntime as ort
    sessions = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in (original, lowered)]
    spec = sessions[0].get_inputs()[0]
    x = np.random.default_rng(0).uniform(0, 1, spec.shape).astype(np.float32)
    a, b = (s.run(None, {spec.name: x})[0] for s in sessions)
    if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-5):
        raise UserError(f"the lowered graph differs from {original} in ONNX Runtime; not written")
    return float(np.abs(a - b).max())


def lower_file(src: str, dst: str) -> str:
    """Write the lowered graph to dst (atomically); returns a one-line summary."""
    if not os.path.isfile(src):
        raise UserError(f"ONNX file not found: {src}")
    try:
        model = onnx.load(src)
    except Exception as e:  # onnx raises DecodeError and others for files that are not ONNX
        raise UserError(f"{src} is not an ONNX model: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if any(node.op_type == "QuantizeLinear" for node in model.graph.node):
        raise UserError(f"{src} is an int8 (QDQ) graph, which OpenCV 4.6's DNN module cannot load (it fails on "
                        f"the quantise and dequantise nodes); give the app the float export, or score the int8 graph "
                        f"with eval.py --onnx_file (ONNX Runtime or OpenVINO)")
    upsamples = expand_to_resize(model)
    constants = materialise_broadcast_constants(model)
    drop_unused_constants(model)
    onnx.checker.check_model(model)
    with atomic_path(dst, ".onnx") as tmp:
        onnx.save(model, tmp)
        diff = check_same_outputs(src, tmp)
    return (f"lowered {src} for OpenCV DNN: {upsamples} upsampling(s) -> Resize, {constants} broadcast "
            f"constant(s) materialised; max |diff| in ONNX Runtime {diff:.3g}; wrote {dst}")


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="ONNX from export.py")
    parser.add_argument("--output", required=True, help="where to write the lowered ONNX")
    args = parser.parse_args()
    print(lower_file(args.input, args.output))


if __name__ == "__main__":
    run_cli(main)
