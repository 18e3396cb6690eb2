"""FLOPs per image of an ONNX generator, counted from its graph (2 x multiply-accumulates of
Conv, ConvTranspose, Gemm and MatMul; element-wise ops are ignored, as is customary)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import onnx
from onnx import shape_inference


def _fix_batch(model: onnx.ModelProto, batch: int = 1) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    return shape_inference.infer_shapes(model, data_prop=True)


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Every tensor's shape at batch 1: what shape inference resolves, and where it cannot see
    through a Reshape, what one run of ONNX's reference evaluator produced."""
    shapes = _run_shapes(model)
    values = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    for value in values:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _run_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    import numpy as np
    from onnx.reference import ReferenceEvaluator

    feeds = {}
    for value in model.graph.input:
        t = value.type.tensor_type
        dims = [d.dim_value for d in t.shape.dim]
        dtype = np.int64 if t.elem_type == onnx.TensorProto.INT64 else np.float32
        feeds[value.name] = np.zeros(dims, dtype=dtype)
    try:
        results = ReferenceEvaluator(model).run(None, feeds, intermediate=True)
    except Exception:  # best effort: shape inference alone below
        return {}
    return {name: list(np.shape(v)) for name, v in results.items()}


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def count_flops(path: Path | str) -> float:
    """FLOPs for one image (batch 1)."""
    model = _fix_batch(onnx.load(str(path)))
    shapes = _shapes(model)
    macs = 0
    for node in model.graph.node:
        ins = [shapes.get(i) for i in node.input]
        out = shapes.get(node.output[0]) if node.output else None
        if node.op_type == "Conv" and out and ins[1]:
            cin_per_group, kernel = ins[1][1], math.prod(ins[1][2:])
            macs += math.prod(out) * cin_per_group * kernel
        elif node.op_type == "ConvTranspose" and ins[0] and ins[1]:
            # weight is (Cin, Cout/group, kh, kw): every input element feeds Cout/group x k outputs
            cout_per_group, kernel = ins[1][1], math.prod(ins[1][2:])
            macs += math.prod(ins[0]) * cout_per_group * kernel
        elif node.op_type in ("Gemm", "MatMul") and ins[0] and out:
            k = ins[0][-1] if not (node.op_type == "Gemm" and _attr(node, "transA", 0)) else ins[0][0]
            macs += math.prod(out) * k
    return 2.0 * macs


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(f"{p}: {count_flops(p) / 1e6:.2f} MFLOP/image")
