"""The numeric check of every export: the written file, run in its own runtime, against PyTorch.

Shared by the ONNX, TensorRT-ready and mobile exports (``onnx_export``, ``trt``, ``mobile``), so
none of them imports another for it.  A check runs the exported program on random inputs that
differ from the one traced or exported (a data-dependent branch baked in shows up), and compares
its output with PyTorch's fp32 output on the same input.

Tolerances (max abs difference of the logits, ``Case.tolerance``):

* fp32: ``1e-4``, widened by ``16 x eps32`` where ``eps32`` is PyTorch's own float32 error on that
  input (its fp32 logits against a float64 run of the same model).  For a well-conditioned network
  ``eps32`` is ~1e-6 and the bound is 1e-4; a random-init network whose BatchNorm statistics were
  calibrated (see ``prepare.calibrate_batchnorm``) amplifies rounding to ``eps32`` ~ 1e-5..5e-3 and
  two runtimes then differ by as much from each other, correctly.  One image's ``eps32`` is a noisy
  estimate: over 30 random-init torchvision mobilenet_v2s at 32 px the ratio
  ``|ORT - PyTorch| / eps32`` had median 1.5 and maximum 14.2, hence the factor 16.  A broken op
  moves calibrated logits by far more than that.
* fp16: the larger of ``1e-2 x max|logit|`` and ``2**13 x eps32``: fp16 keeps 13 fewer mantissa bits
  than fp32, so a network that amplifies fp32 rounding to ``eps32`` amplifies fp16 rounding to
  about ``2**13 eps32`` (measured: 1300-2000x on the zoo).

Outputs must be finite on both sides: non-finite logits (NaN weights, an input so small that a
BatchNorm divides by nothing) fail the check with "non-finite outputs", never a comparison of NaNs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .errors import ExportError, ExportVerificationError

FP32_ATOL = 1e-4
FP32_NOISE_FACTOR = 16.0  # |ORT - PyTorch| / eps32 reached 14.2 (median 1.5) over 30 random mobilenet_v2s
FP16_RTOL = 1e-2          # of max |logit|
FP16_NOISE_FACTOR = 2.0 ** 13


@dataclass
class Verification:
    variant: str
    runtime: str
    batches: list
    max_abs_diff: float
    max_rel_diff: float
    tolerance: str
    passed: bool
    finite: bool = True

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def reference_output(model, x):
    """PyTorch's logits for ``x`` (no grad) as float32 numpy."""
    import torch

    with torch.no_grad():
        out = model(x)
    if not isinstance(out, torch.Tensor):
        raise ExportError(f"the model returned {type(out).__name__} in eval mode; export needs a model "
                          "whose forward returns one logits tensor.")
    return out.float().numpy()


@dataclass
class Case:
    """One verification input with PyTorch's fp32 output and that output's own float32 error."""

    x: np.ndarray
    ref: np.ndarray
    eps32: float  # max |PyTorch fp32 - PyTorch fp64| on x[:2] (0 when the float64 run is impossible)

    def tolerance(self, fp16: bool) -> float:
        if fp16:
            return max(FP16_RTOL * float(np.max(np.abs(self.ref))), FP16_NOISE_FACTOR * self.eps32)
        return FP32_ATOL + FP32_NOISE_FACTOR * self.eps32

    @property
    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.ref)))


def make_cases(model, inputs) -> list[Case]:
    """Cases for ``inputs`` (torch tensors); the float64 copy measures PyTorch's own rounding."""
    import torch

    refs = [reference_output(model, x) for x in inputs]
    try:
        model64 = copy.deepcopy(model).double()
        with torch.no_grad():  # two images show the network's rounding as well as a large batch
            refs64 = [model64(x[:2].double()).numpy() for x in inputs]
        del model64
    except Exception:  # an op without a float64 kernel: fall back to the plain bound
        refs64 = [r[:2] for r in refs]
    cases = []
    for x, r, r64 in zip(inputs, refs, refs64):
        with np.errstate(invalid="ignore", over="ignore"):
            eps = float(np.max(np.abs(r[:2] - r64))) if r.size else 0.0
        cases.append(Case(x.numpy(), r, eps if np.isfinite(eps) else 0.0))
    return cases


def compare(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(max abs difference, that over max |ref|); inf for a shape mismatch."""
    out = np.asarray(out, dtype=np.float32)
    if out.shape != ref.shape:
        return float("inf"), float("inf")
    with np.errstate(invalid="ignore", over="ignore"):
        diff = float(np.max(np.abs(out - ref))) if ref.size else 0.0
    return diff, diff / max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-12)


def check_outputs(variant: str, runtime: str, cases: Sequence[Case], outputs, *, fp16: bool) -> Verification:
    """Compare a runtime's ``outputs`` with the cases' PyTorch outputs under the fp32/fp16 bound."""
    worst_abs, worst_rel, passed, finite = 0.0, 0.0, True, True
    worst_ratio, shown = -1.0, cases[0]
    for case, out in zip(cases, outputs):
        ok_values = case.finite and bool(np.all(np.isfinite(np.asarray(out, dtype=np.float32))))
        finite &= ok_values
        abs_diff, rel = compare(case.ref, out) if ok_values else (float("nan"), float("nan"))
        limit = case.tolerance(fp16)
        passed &= ok_values and abs_diff <= limit
        ratio = abs_diff / limit if ok_values and limit > 0 else float("inf")
        if ratio >= worst_ratio:
            worst_ratio, shown = ratio, case
        if ok_values:
            worst_abs, worst_rel = max(worst_abs, abs_diff), max(worst_rel, rel)
    limit, eps = shown.tolerance(fp16), shown.eps32
    if fp16:
        tol = (f"{limit:.2e} (fp16: max of {FP16_RTOL:g} x max|logit| and 2^13 x {eps:.1e}, "
               "PyTorch's own fp32 error vs fp64)")
    else:
        tol = (f"{limit:.2e} (fp32: {FP32_ATOL:g} + {FP32_NOISE_FACTOR:g} x {eps:.1e}, PyTorch's own "
               "fp32 error vs fp64)")
    if not finite:
        worst_abs = worst_rel = float("nan")
    return Verification(variant, runtime, [int(c.x.shape[0]) for c in cases], worst_abs, worst_rel, tol,
                        bool(passed), bool(finite))


def verification_error(name: str, v: Verification, runtime: str = "ONNX Runtime",
                       hint: Optional[str] = None) -> ExportVerificationError:
    """The one-line error of a failed check (the caller then writes nothing)."""
    if not v.finite:
        return ExportVerificationError(
            f"{name}: non-finite outputs (NaN or Inf logits) in PyTorch or in {runtime} for the exported "
            f"{v.variant} program; nothing was written. Check the weights for NaN/Inf values and the input "
            "size (a network run at a size far below its own can divide by zero).")
    hint = hint or ("The model probably has input-dependent Python control flow that tracing baked in, or "
                    "an op the exporter lowers differently.")
    return ExportVerificationError(
        f"{name}: the exported {v.variant} program differs from PyTorch in {runtime} by "
        f"{v.max_abs_diff:.3g} (max abs over the logits, batch {', '.join(map(str, v.batches))}), beyond the "
        f"tolerance {v.tolerance}; nothing was written. {hint}")


def verify_onnx(model_proto, variant: str, cases: Sequence[Case], *, fp16: bool,
                threads: Optional[int] = None) -> Verification:
    """Run ``model_proto`` in ONNX Runtime (CPU) on each case and check it."""
    from .ort import ort_run, ort_session

    session = ort_session(model_proto, threads=threads)
    return check_outputs(variant, "onnxruntime CPUExecutionProvider", cases,
                         [ort_run(session, c.x) for c in cases], fp16=fp16)
