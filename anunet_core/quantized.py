"""INT8 inference of a (pruned) ANU-Net on CPU through ONNX Runtime.

The network of :func:`~anunet_core.inference.optimize_for_inference` (pruned to the depth,
BatchNorm folded) is exported to ONNX and quantised statically in the QDQ format: weights
``int8`` per output channel, activations ``uint8`` per tensor with ranges calibrated on
slices the caller gives (min-max over them), so they should look like what the network will
see (normalised CT slices). ONNX Runtime then runs integer convolutions (VNNI / AMX-INT8
where the CPU has them).

Calibration decides the quality: check the quantised masks against the float network's on
held-out slices before using it (``benchmarks/bench_model.py`` does, with a trained network).

Example::

    >>> net = quantize_int8(trained, depth=4, calibration=slices[:32])  # (N, 1, H, W) float32
    >>> logits = net(torch.zeros(2, 1, 256, 256))  # [(2, 1, 256, 256)] * 4, float32
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anunet_core.inference import optimize_for_inference

INPUT_NAME = "x"


class OnnxNet:
    """A depth-``d`` network run by ONNX Runtime on CPU: ``net(x)`` takes ``(B, C, H, W)``
    (any batch, H and W multiples of ``2 ** d``) and returns the ``d`` head logits, each
    ``(B, 1, H, W)`` float32, like :class:`~anunet_core.inference.InferenceNet`.

    Build it with :func:`quantize_int8` (or :func:`export_onnx` for the float network).
    ``threads``: ONNX Runtime's intra-op threads (default: torch's ``get_num_threads()``).
    """

    def __init__(self, onnx_model: bytes, depth: int, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # No busy-waiting between runs: the CPU goes to whoever runs next (another model, Ray's
        # other tasks), as torch's own thread pool does.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        self.depth = depth

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        array = np.ascontiguousarray(x.detach().to(torch.float32).cpu().numpy())
        return [torch.from_numpy(out) for out in self.session.run(None, {INPUT_NAME: array})]


def export_onnx(model: nn.Module, depth: int, path: str | Path, opset: int = 17) -> Path:
    """Write the fast path of ``model`` at ``depth`` (pruned, BatchNorm folded) to ``path`` as
    ONNX, with batch, height and width dynamic. Returns ``path``."""
    network = optimize_for_inference(model, depth).network.to(memory_format=torch.contiguous_format)
    multiple = 2**depth
    sample = torch.zeros(1, network.in_channels, 4 * multiple, 4 * multiple)
    axes = {0: "batch", 2: "height", 3: "width"}
    outputs = [f"head_{j}" for j in range(1, depth + 1)]
    torch.onnx.export(network, (sample,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                      output_names=outputs, dynamic_axes={INPUT_NAME: axes, **{name: axes for name in outputs}})
    return Path(path)


def quantize_int8(model: nn.Module, depth: int, calibration: torch.Tensor, batch: int = 4,
                  threads: int | None = None) -> OnnxNet:
    """``model`` at ``depth`` as a statically quantised INT8 :class:`OnnxNet`.

    Args:
        model: an ANU-Net (or a network of :mod:`anunet_core.baselines`), any mode; not modified.
        depth: 1..``model.depth``.
        calibration: ``(N, C, H, W)`` float32 slices the activation ranges are taken from
            (min-max), e.g. 32 preprocessed CT slices; H and W multiples of ``2 ** depth``.
        batch: slices per calibration forward. Defaults to 4.
        threads: ONNX Runtime's intra-op threads. Defaults to torch's ``get_num_threads()``.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(f"calibration must be (N, C, H, W) slices with N >= 1, got shape {tuple(calibration.shape)}")

    class Slices(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[torch.Tensor] = iter(torch.split(calibration.to(torch.float32), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self.batches, None)
            return None if chunk is None else {INPUT_NAME: np.ascontiguousarray(chunk.numpy())}

    with tempfile.TemporaryDirectory(prefix="anunet-int8-") as folder:
        float_path = export_onnx(model, depth, Path(folder) / "float.onnx")
        int8_path = Path(folder) / "int8.onnx"
        quantize_static(str(float_path), str(int8_path), Slices(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return OnnxNet(int8_path.read_bytes(), depth, threads)


def onnx_float(model: nn.Module, depth: int, threads: int | None = None) -> OnnxNet:
    """``model`` at ``depth`` as a float32 :class:`OnnxNet` (ONNX Runtime without quantisation)."""
    with tempfile.TemporaryDirectory(prefix="anunet-onnx-") as folder:
        return OnnxNet(export_onnx(model, depth, Path(folder) / "float.onnx").read_bytes(), depth, threads)
