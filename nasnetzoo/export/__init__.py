"""Deployment: ONNX / TensorRT-ready export and latency benchmarks."""
