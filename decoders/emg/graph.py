"""EMG decoders as plain ONNX graphs: window -> TD features -> classifier head -> class probabilities.

The graph input ``window`` is ``(batch, n_samples, n_channels)`` float32 in µV, already
band-passed and notched by the pipeline's causal filter (card ``preprocessing``); the optional
common-average reference, the features of :func:`decoders.emg.features.td_features`, their
log transform and standardisation all run inside the graph, so the runtime is a plain
:class:`~decoders.onnx_decoder.OnnxDecoder`. Output ``probabilities`` is ``(batch, n_classes)``.

Heads: a linear layer + softmax (LDA, whose ``predict_proba`` is the softmax of its decision
function) and a small 2-D CNN over the electrode grid (feature maps ``5 × rows × cols``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from decoders.emg.features import FEATURES

__all__ = [
    "IR_VERSION",
    "OPSET",
    "ConvLayer",
    "build_cnn_graph",
    "build_linear_graph",
    "classifier_input",
]

OPSET = 17
IR_VERSION = 8
#: Added before the log of RMS, MAV and WL (µV), so silent channels stay finite.
LOG_OFFSET_UV = 1.0
N_LOG = 3  # rms, mav, wl are log-transformed; zc, ssc stay counts


def classifier_input(features: np.ndarray) -> np.ndarray:
    """The transform the graph applies to TD features before the head (float32, like the graph).

    Parameters
    ----------
    features : ndarray, shape (n_windows, 5, n_channels)
        Output of :func:`~decoders.emg.features.td_features`.

    Returns
    -------
    ndarray, shape (n_windows, 5, n_channels), float32
        ``log(f + 1 µV)`` for RMS, MAV and WL; ZC and SSC unchanged.
    """
    f = np.asarray(features, dtype=np.float32).copy()
    f[:, :N_LOG] = np.log(f[:, :N_LOG] + np.float32(LOG_OFFSET_UV))
    return f


class _Builder:
    """Collects nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], base: str | None = None, **attrs: object) -> str:
        out = self.name(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))  # type: ignore[arg-type]
        return out


def _features(b: _Builder, x: str, n_samples: int, threshold_uv: float, common_average: bool) -> str:
    """Append the TD-feature subgraph; returns the name of the (batch, 5, n_channels) transformed features."""
    if n_samples < 3:
        raise ValueError(f"EMG windows need at least 3 samples for SSC, got {n_samples}.")
    if common_average:
        mean = b.op("ReduceMean", [x], "car_mean", axes=[2], keepdims=1)
        x = b.op("Sub", [x, mean], "car")
    ax1 = b.const("axis1", np.array([1], dtype=np.int64))

    def sl(t: str, lo: int, hi: int) -> str:
        return b.op(
            "Slice",
            [t, b.const("lo", np.array([lo], np.int64)), b.const("hi", np.array([hi], np.int64)), ax1],
            "slice",
        )

    thr = b.const("threshold_uv", np.array(threshold_uv, dtype=np.float32))
    zero = b.const("zero", np.array(0.0, dtype=np.float32))
    rms = b.op("Sqrt", [b.op("ReduceMean", [b.op("Mul", [x, x])], axes=[1], keepdims=0)], "rms")
    mav = b.op("ReduceMean", [b.op("Abs", [x])], "mav", axes=[1], keepdims=0)
    head, tail = sl(x, 0, n_samples - 1), sl(x, 1, n_samples)
    d = b.op("Sub", [tail, head], "diff")
    ad = b.op("Abs", [d], "absdiff")
    wl = b.op("ReduceSum", [ad, ax1], "wl", keepdims=0)
    big = b.op("GreaterOrEqual", [ad, thr])
    crossing = b.op("Less", [b.op("Mul", [head, tail]), zero])
    zc_mask = b.op("Cast", [b.op("And", [crossing, big])], to=TensorProto.FLOAT)
    zc = b.op("ReduceSum", [zc_mask, ax1], "zc", keepdims=0)
    d1, d2 = sl(d, 0, n_samples - 2), sl(d, 1, n_samples - 1)
    turn = b.op("Less", [b.op("Mul", [d1, d2]), zero])
    big2 = b.op("Or", [sl(big, 0, n_samples - 2), sl(big, 1, n_samples - 1)])
    ssc_mask = b.op("Cast", [b.op("And", [turn, big2])], to=TensorProto.FLOAT)
    ssc = b.op("ReduceSum", [ssc_mask, ax1], "ssc", keepdims=0)
    unsq = [b.op("Unsqueeze", [f, ax1]) for f in (rms, mav, wl, zc, ssc)]
    amp = b.op("Concat", unsq[:N_LOG], axis=1)
    log_amp = b.op("Log", [b.op("Add", [amp, b.const("log_offset", np.array(LOG_OFFSET_UV, np.float32))])])
    return b.op("Concat", [log_amp, *unsq[N_LOG:]], "features", axis=1)


def _model(b: _Builder, n_samples: int, n_channels: int, n_classes: int, out: str, doc: str) -> onnx.ModelProto:
    inp = helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", n_samples, n_channels])
    outp = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_classes])
    b.nodes.append(helper.make_node("Identity", [out], ["probabilities"]))
    graph = helper.make_graph(b.nodes, "emg_decoder", [inp], [outp], initializer=b.inits, doc_string=doc)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="closedloop")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _standardise(b: _Builder, f: str, mean: np.ndarray, scale: np.ndarray, n_channels: int) -> str:
    shape = (len(FEATURES), n_channels)
    mean = np.asarray(mean, np.float32).reshape(shape)
    scale = np.asarray(scale, np.float32).reshape(shape)
    if not np.all(scale > 0):
        raise ValueError("feature scale must be > 0 for every feature (a constant feature was not dropped).")
    return b.op("Div", [b.op("Sub", [f, b.const("feat_mean", mean)]), b.const("feat_scale", scale)], "standard")


def build_linear_graph(
    *,
    n_samples: int,
    n_channels: int,
    threshold_uv: float,
    common_average: bool,
    mean: np.ndarray,
    scale: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray,
) -> onnx.ModelProto:
    """Features + standardisation + linear layer + softmax (the exported LDA).

    Parameters
    ----------
    n_samples, n_channels : int
        Window shape.
    threshold_uv : float
        ZC/SSC threshold in µV.
    common_average : bool
        Apply a common-average reference first.
    mean, scale : ndarray, shape (5 * n_channels,)
        Standardisation of the flattened (feature-major) classifier input.
    weights : ndarray, shape (5 * n_channels, n_classes)
    bias : ndarray, shape (n_classes,)
    """
    b = _Builder()
    f = _features(b, "window", n_samples, threshold_uv, common_average)
    z = _standardise(b, f, mean, scale, n_channels)
    flat = b.op("Reshape", [z, b.const("flat_shape", np.array([-1, len(FEATURES) * n_channels], np.int64))])
    w = np.asarray(weights, np.float32)
    logits = b.op("Add", [b.op("MatMul", [flat, b.const("weights", w)]), b.const("bias", np.asarray(bias, np.float32))])
    prob = b.op("Softmax", [logits], "softmax", axis=1)
    return _model(b, n_samples, n_channels, w.shape[1], prob, "EMG TD features -> LDA")


ConvLayer = tuple[np.ndarray, np.ndarray]  # weight (out, in, kh, kw), bias (out,)


def build_cnn_graph(
    *,
    n_samples: int,
    n_channels: int,
    threshold_uv: float,
    common_average: bool,
    mean: np.ndarray,
    scale: np.ndarray,
    grid_index: np.ndarray,
    convs: Sequence[ConvLayer],
    dense_weight: np.ndarray,
    dense_bias: np.ndarray,
) -> onnx.ModelProto:
    """Features + standardisation + grid gather + (Conv 3×3 + ReLU)* + linear + softmax (the exported CNN).

    Parameters
    ----------
    grid_index : ndarray of int, shape (rows, cols)
        Column index of the window (channel) at each electrode position.
    convs : sequence of (weight, bias)
        Conv2d layers with padding 1 (same size), each followed by ReLU.
    dense_weight : ndarray, shape (n_classes, n_flat)
    dense_bias : ndarray, shape (n_classes,)
    Other parameters as :func:`build_linear_graph`.
    """
    grid_index = np.asarray(grid_index, dtype=np.int64)
    rows, cols = grid_index.shape
    b = _Builder()
    f = _features(b, "window", n_samples, threshold_uv, common_average)
    z = _standardise(b, f, mean, scale, n_channels)
    g = b.op("Gather", [z, b.const("grid_index", grid_index.reshape(-1))], "grid", axis=2)
    h = b.op("Reshape", [g, b.const("grid_shape", np.array([-1, len(FEATURES), rows, cols], np.int64))])
    for w, bias in convs:
        w = np.asarray(w, np.float32)
        kh, kw = w.shape[2:]
        h = b.op(
            "Conv",
            [h, b.const("conv_w", w), b.const("conv_b", np.asarray(bias, np.float32))],
            "conv",
            kernel_shape=[kh, kw],
            pads=[kh // 2, kw // 2, kh // 2, kw // 2],
        )
        h = b.op("Relu", [h])
    flat = b.op("Flatten", [h], axis=1)
    dw = np.asarray(dense_weight, np.float32)
    logits = b.op(
        "Gemm", [flat, b.const("dense_w", dw), b.const("dense_b", np.asarray(dense_bias, np.float32))], transB=1
    )
    prob = b.op("Softmax", [logits], "softmax", axis=1)
    return _model(b, n_samples, n_channels, dw.shape[0], prob, "EMG TD feature maps -> grid CNN")
