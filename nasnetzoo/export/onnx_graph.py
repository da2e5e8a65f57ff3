"""Passes and queries on ONNX graphs: simplification, constant folding, fp16, static-shape checks.

These work on ``onnx.ModelProto`` only (no torch), so the TensorRT preparation in ``trt.py`` and the
exporter share them.  ``onnx`` is imported lazily: ``nasnetzoo`` itself does not depend on it.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Optional

import numpy as np

from ..errors import first_line
from .errors import require

# Ops whose value is not a function of their inputs: never folded.
_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                     "Bernoulli", "Multinomial"}
# A folded constant larger than this (elements) would bloat the file more than it saves at run time.
_MAX_FOLDED_ELEMENTS = 1 << 20
FP16_MAX = 65504.0


def _onnx():
    return require("onnx", "ONNX export")


# ------------------------------------------------------------------ queries
def op_counts(model) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def _dims(type_proto) -> list:
    shape = type_proto.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def describe_io(model) -> tuple[list[dict], list[dict]]:
    """``[{"name", "shape", "dtype"}]`` of the graph inputs (initializers excluded) and outputs."""
    onnx = _onnx()
    inits = {i.name for i in model.graph.initializer}

    def info(vi):
        elem = vi.type.tensor_type.elem_type
        return {"name": vi.name, "shape": _dims(vi.type),
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "?"}
    return ([info(v) for v in model.graph.input if v.name not in inits],
            [info(v) for v in model.graph.output])


def static_shape_problems(model) -> list[str]:
    """Tensors whose shape is not fully known and positive after shape inference (empty: static)."""
    onnx = _onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as err:  # an inconsistent graph is a problem in itself
        return [f"shape inference failed: {first_line(err)}"]
    known = {vi.name: vi for vi in (*inferred.graph.value_info, *inferred.graph.input,
                                    *inferred.graph.output)}
    problems = []
    for vi in inferred.graph.input:
        if not _is_static(vi):
            problems.append(f"graph input {vi.name!r} has shape {_dims(vi.type)}")
    for node in inferred.graph.node:
        for out in node.output:
            if not out:
                continue
            vi = known.get(out)
            if vi is None or not vi.type.tensor_type.HasField("shape"):
                problems.append(f"{node.op_type} {node.name!r}: output {out!r} has no inferred shape")
            elif not _is_static(vi):
                problems.append(f"{node.op_type} {node.name!r}: output {out!r} has shape {_dims(vi.type)}")
    return problems


def _is_static(vi) -> bool:
    t = vi.type.tensor_type
    return t.HasField("shape") and all(d.HasField("dim_value") and d.dim_value > 0 for d in t.shape.dim)


def constant_values(model) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs, as numpy arrays."""
    onnx = _onnx()
    values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            value = _constant_node_value(node)
            if value is not None:
                values[node.output[0]] = value
    return values


def _constant_node_value(node) -> Optional[np.ndarray]:
    onnx = _onnx()
    for attr in node.attribute:
        if attr.name == "value":
            return onnx.numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None


# ------------------------------------------------------------------ passes
def fold_constants(model):
    """Turn Constant nodes into initializers and evaluate every node whose inputs are all constant.

    onnxslim folds most of the exporter's constant subgraphs but not all (for example the
    valid-cell count map of TF "SAME" average pooling, an AveragePool over a padded constant of
    ones); what is left is evaluated here with ONNX's reference implementation.
    """
    onnx = _onnx()
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    opset = {o.domain or "": o.version for o in model.opset_import}
    values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    kept, new_inits = [], []
    for node in graph.node:
        folded = None
        if node.domain not in ("", "ai.onnx") or node.op_type in _NONDETERMINISTIC:
            folded = None
        elif node.op_type == "Constant":
            folded = [_constant_node_value(node)]
        elif node.input and all(i == "" or i in values for i in node.input) and \
                not any(o in outputs for o in node.output):
            try:
                feeds = {i: values[i] for i in node.input if i}
                folded = ReferenceEvaluator(node, opsets=opset).run(None, feeds)
            except Exception:  # an op the reference cannot run: leave it to the runtime
                folded = None
        if folded is None or any(v is None for v in folded) or \
                sum(np.asarray(v).size for v in folded) > _MAX_FOLDED_ELEMENTS or \
                any(o in outputs for o in node.output):
            kept.append(node)
            continue
        for name, value in zip(node.output, folded):
            value = np.asarray(value)
            values[name] = value
            new_inits.append(onnx.numpy_helper.from_array(value, name))
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_inits)
    return remove_unused_initializers(model)


def remove_unused_initializers(model):
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    inputs = [v for v in model.graph.input if v.name in used or v.name not in
              {i.name for i in model.graph.initializer}]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model


def simplify(model) -> tuple[Any, str]:
    """Fold constants and simplify with onnxslim (or onnx-simplifier); returns (model, tool)."""
    try:
        import onnxslim
    except ImportError:
        onnxslim = None
    if onnxslim is not None:
        model = onnxslim.slim(model)
        tool = f"onnxslim {getattr(onnxslim, '__version__', '?')}"
    else:
        try:
            import onnxsim
        except ImportError:
            require("onnxslim", "Simplifying an ONNX graph")
        model, ok = onnxsim.simplify(model)
        if not ok:
            from .errors import ExportError
            raise ExportError("onnx-simplifier could not validate the simplified graph; export with "
                              "--no-simplify, or install onnxslim.")
        tool = f"onnxsim {getattr(onnxsim, '__version__', '?')}"
    model = fold_constants(model)
    return model, tool


def to_fp16(model, keep_io_types: bool = True):
    """A float16 copy of ``model``: weights, constants and activations in fp16.

    With ``keep_io_types`` the graph still takes and returns float32 (a Cast at each end), so
    callers feed the same arrays to both variants.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16

    def half(arr: np.ndarray) -> np.ndarray:
        finite = np.isfinite(arr)
        arr = np.where(finite, np.clip(arr, -FP16_MAX, FP16_MAX), arr)
        return arr.astype(np.float16)

    for i, init in enumerate(graph.initializer):
        if init.data_type == F32:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(half(numpy_helper.to_array(init)),
                                                                  init.name))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == F32:
                attr.t.CopyFrom(numpy_helper.from_array(half(numpy_helper.to_array(attr.t)), attr.t.name))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == F32:
                attr.i = F16
        if node.op_type == "Constant" and any(a.name in ("value_float", "value_floats") for a in node.attribute):
            value = half(_constant_node_value(node))
            del node.attribute[:]
            node.attribute.extend([helper.make_attribute("value", numpy_helper.from_array(value))])

    def boundary_casts(values, field: str, make_cast) -> list:
        """Retype the graph's float32 inputs (or outputs): in place, or behind a Cast that keeps
        the float32 name at the boundary and renames the inner edge in the nodes' ``field``."""
        casts = []
        for vi in values:
            if vi.type.tensor_type.elem_type != F32:
                continue
            if not keep_io_types:
                vi.type.tensor_type.elem_type = F16
                continue
            inner = f"{vi.name}_fp16"
            for node in graph.node:
                names = getattr(node, field)
                for k, name in enumerate(names):
                    if name == vi.name:
                        names[k] = inner
            casts.append(make_cast(vi.name, inner))
        return casts

    casts_in = boundary_casts(graph.input, "input", lambda outer, inner: helper.make_node(
        "Cast", [outer], [inner], to=F16, name=f"{outer}_to_fp16"))
    casts_out = boundary_casts(graph.output, "output", lambda outer, inner: helper.make_node(
        "Cast", [inner], [outer], to=F32, name=f"{outer}_to_fp32"))
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)
