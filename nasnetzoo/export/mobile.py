"""The converters and loaders of the runtimes phones use: ExecuTorch (XNNPACK), LiteRT, OpenVINO.

The runtime table (``runtimes.RUNTIMES``) names these functions; ``pipeline.export`` runs them,
checks the written file against PyTorch and writes the export.  ``convert_*(model, x, path,
options, cases)`` writes the file for an eval-mode module traced at ``x`` (``options``: the record's
``XnnpackOptions`` or ``NoOptions``; ``cases`` are not needed here) and returns what the conversion says;
``load_*(path, threads)`` returns ``numpy input -> numpy logits`` running the written file.

* ``executorch``: ``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner
  (fp32) -> ``NAME.pte``, run with ``executorch.runtime``.  The report gives the number of XNNPACK
  partitions (delegate calls) and the ops left outside the delegate, which run as portable
  kernels; one partition and no op outside is the goal for every mobile entry.
* ``tflite``: ``litert_torch.convert`` -> ``NAME.tflite``, run with ``ai_edge_litert``'s
  interpreter (XNNPACK on CPU).
* ``openvino``: ``openvino.convert_model`` -> ``NAME.xml`` + ``NAME.bin`` (fp32 weights, no fp16
  compression), compiled for the CPU with the inference precision pinned to f32 (OpenVINO would
  otherwise run bf16 on CPUs that have it).

Both XNNPACK converters (ExecuTorch, LiteRT) first split depthwise convolutions larger than XNNPACK's
depthwise kernels into row bands (``xnnpack_rewrites``; ``split_depthwise=False`` keeps them whole),
and say how many in ``depthwise_split``.  ExecuTorch's exported program also has its repeated nodes
merged (the LiteRT converter merges them itself; ``merge_repeated=False`` keeps them).

Threads: ``load_*(path, threads)`` sets each runtime's own thread count (XNNPACK's thread pool,
the LiteRT interpreter's ``num_threads``, OpenVINO's ``INFERENCE_NUM_THREADS``).
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np


# ------------------------------------------------------------------ ExecuTorch
def _executorch_program(model, x, merge_repeated: bool = True):
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from .xnnpack_rewrites import merge_repeated_nodes

    exported = torch.export.export(model, (x,), strict=False)
    if merge_repeated:  # what ONNX Runtime and OpenVINO do to a graph, ExecuTorch does not
        merge_repeated_nodes(exported)
    return to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])


def delegation_summary(edge) -> dict:
    """XNNPACK partitions (delegate calls) and the ops left outside them in a lowered program."""
    graph = edge.exported_program().graph
    partitions, outside = 0, Counter()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        label = getattr(node.target, "__name__", "") or str(node.target)
        if "executorch_call_delegate" in label:
            partitions += 1
        elif "getitem" not in label:
            outside[_op_name(node.target)] += 1
    return {"partitions": partitions, "ops_outside": sorted(outside), "ops_outside_counts": dict(outside)}


def _op_name(target) -> str:
    """``avg_pool2d`` for ``aten.avg_pool2d.default``, its edge-dialect overload or ``aten::avg_pool2d``;
    ``_to_dim_order_copy`` for ExecuTorch's ``dim_order_ops._to_dim_order_copy.default``."""
    found = re.search(r"\b(?:aten|quantized_decomposed|[a-z_]+_ops)(?:\.|::)(\w+)", str(target))
    return found.group(1) if found else str(target)


def _for_xnnpack(model, split_depthwise: bool):
    """``(model, depthwise convs split)``: the model as XNNPACK runs it fastest, same outputs."""
    if not split_depthwise:
        return model, 0
    from .xnnpack_rewrites import split_large_depthwise
    return split_large_depthwise(model)


def convert_executorch(model, x, path, options, cases=None) -> dict:
    model, split = _for_xnnpack(model, options.split_depthwise)
    edge = _executorch_program(model, x, options.merge_repeated)
    info = delegation_summary(edge)
    Path(path).write_bytes(edge.to_executorch().buffer)
    return {**info, "depthwise_split": split}


def _set_xnnpack_threads(threads: Optional[int]) -> None:
    if threads is None:
        return
    try:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    except ImportError:
        return
    _unsafe_reset_threadpool(int(threads))


def load_executorch(path, threads: Optional[int] = None):
    import torch
    from executorch.runtime import Runtime as ETRuntime

    _set_xnnpack_threads(threads)
    method = ETRuntime.get().load_program(Path(path)).load_method("forward")

    def run(x: np.ndarray) -> np.ndarray:
        return method.execute([torch.from_numpy(x)])[0].numpy()
    return run


# ------------------------------------------------------------------ LiteRT
def convert_litert(model, x, path, options, cases=None) -> dict:
    import litert_torch

    model, split = _for_xnnpack(model, options.split_depthwise)
    edge = litert_torch.convert(model, (x,))
    edge.export(str(path))
    return {"ops": tflite_ops(path), "depthwise_split": split}


def tflite_ops(path) -> dict:
    """Op counts of a .tflite file, read with the interpreter's own analyzer where it has one."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        details = Interpreter(model_path=str(path))._get_ops_details()
    except Exception:
        return {}
    return dict(sorted(Counter(d["op_name"] for d in details).items()))


def load_litert(path, threads: Optional[int] = None):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=int(threads) if threads else None)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def run(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out).copy()
    return run


# ------------------------------------------------------------------ OpenVINO
def convert_openvino(model, x, path, options=None, cases=None) -> dict:
    import openvino as ov

    ov_model = ov.convert_model(model, example_input=x)
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    ops = Counter(op.get_type_name() for op in ov_model.get_ordered_ops())
    return {"ops": dict(sorted(ops.items()))}


def load_openvino(path, threads: Optional[int] = None):
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        return np.array(request.infer([x])[compiled.output(0)])
    return run
