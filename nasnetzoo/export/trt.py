"""TensorRT-ready ONNX graphs: static, folded, simplified, and only ops the TensorRT parser knows.

What "ready" means here, each point checked by ``tensorrt_problems``:

* every op is in ``TENSORRT_ONNX_OPS`` (below; the parser's support matrix) and the opset is at
  most ``TENSORRT_MAX_OPSET``;
* every tensor has a fully static shape (batch included), no ``Constant`` node and no node whose
  inputs are all constants is left (folded into initializers), and the inputs that the parser
  requires to be initializers are (``Conv`` weights, ``Pad`` pads/value, ``Slice`` starts/ends/
  axes/steps);
* **average pooling never relies on the parser's reading of ``count_include_pad``**: every
  ``AveragePool`` has zero ``pads``.  Padding is an explicit constant ``Pad`` before it, and where
  the padded zeros must not be counted (TF "SAME" pools, PyTorch ``count_include_pad=False``) the
  result is rescaled by a constant map of ``kernel area / valid cells``.  (onnx-tensorrt has read
  that attribute differently across versions, onnx/onnx-tensorrt#663; with no padding it means
  nothing.)  The rescaling is checked numerically in ONNX Runtime like the rest;
* TF "SAME" max pooling pads with ``-inf``: the exported ``Pad(-inf) -> MaxPool`` becomes one
  ``MaxPool`` with (possibly asymmetric) ``pads``, which a pooling layer reads unambiguously;
* an fp16 variant (fp16 weights and activations, fp32 input/output) beside the fp32 graph.

The ``trtexec`` commands that build the engines are written to the report.  Where the
``tensorrt`` package and a CUDA GPU are present the engines are built here and compared with
PyTorch; otherwise the report says plainly that this step was not run, and why.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import NotTensorRTReadyError, require

TENSORRT_OPS_SOURCE = ("onnx/onnx-tensorrt, docs/operators.md at the TensorRT 8.5 release "
                       "(\"TensorRT 8.5 supports operators up to Opset 17\"), the rows marked Y")
TENSORRT_OPS_VERSION = "8.5"
TENSORRT_MAX_OPSET = 17
# Operators the TensorRT ONNX parser supports (source above).  Later releases only add to it.
TENSORRT_ONNX_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
GridSample GRU HardSwish HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN
RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin
Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
# Inputs (by position) that the parser requires to be initializers.
_MUST_BE_CONSTANT = {"Conv": (1,), "Pad": (1, 2), "Slice": (1, 2, 3, 4)}
_NEG_INF_THRESHOLD = -1e30


def _onnx():
    return require("onnx", "A TensorRT-ready export")


def _attrs(node) -> dict:
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _set_attr(node, name, value):
    onnx = _onnx()
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.extend([onnx.helper.make_attribute(name, value)])


def _consumers(graph) -> dict[str, list]:
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _initializers(graph) -> dict[str, np.ndarray]:
    onnx = _onnx()
    return {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}


def _spatial_pads(pads: np.ndarray) -> Optional[list[int]]:
    """ONNX Pad ``pads`` of an NCHW tensor -> pool ``pads`` [top, left, bottom, right], or None if
    it pads the batch or channel axis or crops."""
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if len(pads) != 8 or any(p < 0 for p in pads) or pads[0] or pads[1] or pads[4] or pads[5]:
        return None
    return [pads[2], pads[3], pads[6], pads[7]]


# ------------------------------------------------------------------ rewrites
def fold_pad_into_maxpool(model) -> int:
    """``Pad(value=-inf) -> MaxPool(pads=0)`` -> ``MaxPool(pads=...)``; returns the number folded."""
    graph = model.graph
    inits, users = _initializers(graph), _consumers(graph)
    outputs = {o.name for o in graph.output}
    drop, folded = set(), 0
    for pad in graph.node:
        if pad.op_type != "Pad" or _attrs(pad).get("mode", b"constant") not in (b"constant", "constant"):
            continue
        if len(pad.input) < 3 or pad.input[1] not in inits or pad.input[2] not in inits:
            continue
        if float(np.asarray(inits[pad.input[2]]).reshape(-1)[0]) > _NEG_INF_THRESHOLD:
            continue
        spatial = _spatial_pads(inits[pad.input[1]])
        nexts = users.get(pad.output[0], [])
        if spatial is None or len(nexts) != 1 or pad.output[0] in outputs:
            continue
        pool = nexts[0]
        a = _attrs(pool)
        if pool.op_type != "MaxPool" or any(a.get("pads", [0])) or a.get("ceil_mode", 0) \
                or len(pool.output) > 1 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        pool.input[0] = pad.input[0]
        _set_attr(pool, "pads", spatial)
        drop.add(id(pad))
        folded += 1
    kept = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(kept)
    return folded


def _valid_counts(size: int, kernel: int, stride: int, before: int, after: int) -> np.ndarray:
    """Per output position along one axis: how many cells of the window are real (not padding)."""
    out = (size + before + after - kernel) // stride + 1
    starts = np.arange(out) * stride - before
    return np.minimum(starts + kernel, size) - np.maximum(starts, 0)


def explicit_average_pool_padding(model) -> int:
    """Give every padded ``AveragePool`` an explicit ``Pad`` (and, for count_include_pad=0, a
    constant rescaling); returns the number rewritten.  Needs static shapes."""
    onnx = _onnx()
    from onnx import helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in (*inferred.graph.value_info, *inferred.graph.input)}
    graph = model.graph
    new_nodes, new_inits, rewritten = [], [], 0
    for node in graph.node:
        a = _attrs(node) if node.op_type == "AveragePool" else {}
        pads = list(a.get("pads", [0, 0, 0, 0]))
        shape = shapes.get(node.input[0]) if node.op_type == "AveragePool" else None
        if node.op_type != "AveragePool" or not any(pads) or a.get("ceil_mode", 0) or shape is None \
                or len(shape) != 4 or not all(shape) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            new_nodes.append(node)
            continue
        kh, kw = a["kernel_shape"]
        sh, sw = a.get("strides", [1, 1])
        top, left, bottom, right = pads
        base = node.name or node.output[0]
        pad_name, pooled = f"{base}/explicit_pad", f"{base}/pooled"
        new_inits.append(numpy_helper.from_array(
            np.array([0, 0, top, left, 0, 0, bottom, right], dtype=np.int64), f"{pad_name}/pads"))
        new_nodes.append(helper.make_node("Pad", [node.input[0], f"{pad_name}/pads"], [pad_name + "_out"],
                                          mode="constant", name=pad_name))
        _set_attr(node, "pads", [0, 0, 0, 0])
        node.input[0] = pad_name + "_out"
        if a.get("count_include_pad", 0):
            new_nodes.append(node)
        else:
            rows = _valid_counts(shape[2], kh, sh, top, bottom)
            cols = _valid_counts(shape[3], kw, sw, left, right)
            scale = (kh * kw) / np.outer(rows, cols).astype(np.float64)
            out = node.output[0]
            node.output[0] = pooled
            new_nodes.append(node)
            new_inits.append(numpy_helper.from_array(scale.astype(np.float32)[None, None], f"{base}/valid_scale"))
            new_nodes.append(helper.make_node("Mul", [pooled, f"{base}/valid_scale"], [out],
                                              name=f"{base}/exclude_padding"))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    return rewritten


# ------------------------------------------------------------------ checks
def tensorrt_problems(model, opset: Optional[int] = None) -> list[str]:
    """Why the TensorRT ONNX parser would reject ``model`` or read it differently (empty: ready)."""
    from .onnx_graph import static_shape_problems

    graph = model.graph
    opset = opset or next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    problems = []
    if opset is not None and opset > TENSORRT_MAX_OPSET:
        problems.append(f"opset {opset} is above {TENSORRT_MAX_OPSET}, the newest the TensorRT "
                        f"{TENSORRT_OPS_VERSION} op list covers; export with --opset {TENSORRT_MAX_OPSET}")
    unsupported = sorted({n.op_type for n in graph.node if n.op_type not in TENSORRT_ONNX_OPS
                          or n.domain not in ("", "ai.onnx")})
    if unsupported:
        problems.append(f"ops outside the TensorRT ONNX parser's list: {', '.join(unsupported)}")
    inits = _initializers(graph)
    for node in graph.node:
        where = f"{node.op_type} {node.name or node.output[0]!r}"
        if node.op_type == "Constant":
            problems.append(f"{where}: Constant node left unfolded")
        elif node.input and all(i == "" or i in inits for i in node.input):
            problems.append(f"{where}: all inputs are constants (not folded)")
        for k in _MUST_BE_CONSTANT.get(node.op_type, ()):
            if k < len(node.input) and node.input[k] and node.input[k] not in inits:
                problems.append(f"{where}: input {k} ({node.input[k]!r}) is computed, not an initializer")
        a = _attrs(node) if node.op_type in ("AveragePool", "MaxPool", "Pad") else {}
        if node.op_type == "AveragePool" and any(a.get("pads", [0])):
            problems.append(f"{where}: padded AveragePool (pads {list(a['pads'])}, count_include_pad="
                            f"{a.get('count_include_pad', 0)}); expected an explicit Pad")
        if node.op_type in ("AveragePool", "MaxPool") and a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            problems.append(f"{where}: auto_pad={a['auto_pad']!r}; expected explicit pads")
        if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
            problems.append(f"{where}: MaxPool Indices output is not supported")
        if node.op_type == "Pad" and a.get("mode", b"constant") not in (b"constant", "constant"):
            problems.append(f"{where}: Pad mode {a['mode']!r}; only constant padding is expected here")
    for init in graph.initializer:
        if init.data_type == 11:  # DOUBLE
            problems.append(f"initializer {init.name!r} is float64")
    problems.extend(static_shape_problems(model))
    return problems


def average_pool_summary(model) -> dict:
    """How the graph's average pools are expressed (for the report)."""
    graph = model.graph
    users = _consumers(graph)
    producers = {o: n for n in graph.node for o in n.output}
    summary = {"AveragePool": 0, "after_explicit_pad": 0, "rescaled_to_exclude_padding": 0, "unpadded": 0}
    for node in graph.node:
        if node.op_type != "AveragePool":
            continue
        summary["AveragePool"] += 1
        src = producers.get(node.input[0])
        if src is not None and src.op_type == "Pad":
            summary["after_explicit_pad"] += 1
            if any(u.op_type in ("Mul", "Div") for u in users.get(node.output[0], [])):
                summary["rescaled_to_exclude_padding"] += 1
        else:
            summary["unpadded"] += 1
    return summary


# ------------------------------------------------------------------ engines
def tensorrt_unavailable_reason() -> Optional[str]:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed"
    try:
        import torch
        if not torch.cuda.is_available():
            return f"no CUDA GPU visible to torch {torch.__version__}"
    except ImportError:
        return "torch is not installed"
    return None


def trtexec_commands(fp32_path: Path, fp16_path: Path) -> dict[str, str]:
    return {
        "fp32": f"trtexec --onnx={fp32_path} --saveEngine={fp32_path.with_suffix('.engine')}",
        "fp16": f"trtexec --onnx={fp16_path} --saveEngine={fp16_path.with_suffix('.engine')} --fp16",
    }


class TensorRTEngine:
    """A TensorRT engine built from an ONNX graph, run on CUDA tensors through torch.

    Written against the TensorRT 10 Python API (named I/O tensors, ``execute_async_v3``).  Only
    used where ``tensorrt_unavailable_reason()`` is None.
    """

    def __init__(self, onnx_path: Path, fp16: bool = False) -> None:
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else \
            1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(Path(onnx_path).read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise NotTensorRTReadyError(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise NotTensorRTReadyError(f"TensorRT could not build an engine from {onnx_path}")
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def runner(self, x: np.ndarray):
        import torch

        xt = torch.from_numpy(x).cuda()
        shape = tuple(self.engine.get_tensor_shape(self.outputs[0]))
        out = torch.empty(shape, dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.inputs[0], xt.data_ptr())
        self.context.set_tensor_address(self.outputs[0], out.data_ptr())
        stream = torch.cuda.current_stream()

        def run():
            self.context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            return out
        return run

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.runner(x)().cpu().numpy()


def load_engine(path, threads: Optional[int] = None):
    """The runtime table's loader: ``numpy input -> numpy logits`` through a TensorRT engine."""
    return TensorRTEngine(Path(path))


def engine_runner(path, x: np.ndarray, threads: Optional[int] = None):
    """The runtime table's timed runner: input already on the GPU, synchronised after each run."""
    return TensorRTEngine(Path(path)).runner(x)


def build_and_compare(paths: dict[str, Path], cases) -> dict:
    """Build the fp32 and fp16 engines and compare them with PyTorch, or say why not."""
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        return {"status": f"not run: {reason}; build the engines with the trtexec commands above on a "
                          "machine with TensorRT and a GPU", "run": False}
    from .checks import check_outputs

    results = {}
    for variant, path in paths.items():
        engine = TensorRTEngine(path, fp16=variant == "fp16")
        # TF32 convolutions are TensorRT's fp32 default: judge them like fp16 (10 mantissa bits).
        results[variant] = check_outputs(f"tensorrt engine {variant}", "tensorrt", cases,
                                         [engine(c.x) for c in cases], fp16=True).to_dict()
    import tensorrt as trt
    status = "built and compared with PyTorch: " + ", ".join(
        f"{k} max abs diff {v['max_abs_diff']:.2e} ({'ok' if v['passed'] else 'FAILED'})" for k, v in results.items())
    return {"status": status, "run": True, "tensorrt_version": trt.__version__, "results": results}


# ------------------------------------------------------------------ the whole step
def prepare_tensorrt(model, *, name: str, stem: str, out_dir: Path, cases: Sequence):
    """(report section, {key: (path, ModelProto)}) for the TensorRT-ready graphs.

    ``model`` is the simplified fp32 graph; raises ``NotTensorRTReadyError`` if it cannot be made
    ready.  The export pipeline checks both written graphs against PyTorch in ONNX Runtime.
    """
    onnx = _onnx()
    from .onnx_graph import fold_constants, op_counts, to_fp16

    ready = onnx.ModelProto.FromString(model.SerializeToString())
    n_max = fold_pad_into_maxpool(ready)
    n_avg = explicit_average_pool_padding(ready)
    ready = fold_constants(ready)
    onnx.checker.check_model(ready, full_check=True)
    problems = tensorrt_problems(ready)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise NotTensorRTReadyError(f"{name}: the graph is not TensorRT-ready: {'; '.join(problems[:5])}{more}.")
    ready16 = to_fp16(ready)
    onnx.checker.check_model(ready16, full_check=True)
    problems16 = tensorrt_problems(ready16)
    if problems16:
        raise NotTensorRTReadyError(f"{name}: the fp16 graph is not TensorRT-ready: {'; '.join(problems16[:5])}.")
    paths = {"fp32": out_dir / f"{stem}.trt.onnx", "fp16": out_dir / f"{stem}.trt.fp16.onnx"}
    section = {
        "files": {k: p.name for k, p in paths.items()},
        "op_list_source": TENSORRT_OPS_SOURCE,
        "op_list_version": TENSORRT_OPS_VERSION,
        "max_opset": TENSORRT_MAX_OPSET,
        "ops": op_counts(ready),
        "nodes": len(ready.graph.node),
        "static_shapes": True,
        "rewrites": {"pad_neg_inf_folded_into_maxpool": n_max,
                     "average_pool_padding_made_explicit": n_avg},
        "average_pools": average_pool_summary(ready),
        "fp16_variant": "fp16 weights and activations, fp32 input and output (a Cast at each end)",
        "trtexec": trtexec_commands(paths["fp32"], paths["fp16"]),
    }
    models = {"trt_onnx": (paths["fp32"], ready), "trt_fp16_onnx": (paths["fp16"], ready16)}
    # The engines can only be built once the files exist; the caller writes them, so build here
    # from temporary copies only when TensorRT is present.
    if tensorrt_unavailable_reason() is None:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            tmp_paths = {}
            for key, proto in (("fp32", ready), ("fp16", ready16)):
                tmp_paths[key] = Path(tmp) / f"{stem}.{key}.onnx"
                onnx.save(proto, str(tmp_paths[key]))
            section["engine"] = build_and_compare(tmp_paths, cases)
    else:
        section["engine"] = build_and_compare(paths, cases)
    return section, models
