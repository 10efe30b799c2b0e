"""ONNX graphs of the observation parts of the continuous decoders.

All graphs take ``window`` ``(batch, n_bins, n_features)`` float32 (raw feature units) and fold
the feature standardisation into their first layer:

- :func:`affine_graph`: flatten the window and apply ``y = x W + c``; the Wiener filter
  (``n_bins`` = lags) and the Kalman filter's information vector ``Hᵀ Q⁻¹ (x - b)`` (1 bin).
- :func:`dkf_graph`: ``f(x)`` from a projection (affine, or an MLP with tanh hidden layers) then,
  for DKF-NW, a Nadaraya-Watson regression of the training kinematics on the (scaled) projection;
  ``Q(x)`` by Nadaraya-Watson regression of the training residual outer products. Output
  ``(batch, d + d²)``: ``f`` then ``Q`` row-major.

Nadaraya-Watson weights are ``softmax(-|u - u_i|² / (2 h²))`` over the training points ``u_i``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["affine_graph", "dkf_graph"]

OPSET = 17
IR_VERSION = 8


class _B:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def c(self, name: str, v: np.ndarray) -> str:
        self.n += 1
        nm = f"{name}_{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(v), nm))
        return nm

    def op(self, t: str, ins: Sequence[str], **kw: object) -> str:
        self.n += 1
        out = f"{t.lower()}_{self.n}"
        self.nodes.append(helper.make_node(t, list(ins), [out], **kw))  # type: ignore[arg-type]
        return out

    def model(self, out: str, n_bins: int, n_features: int, n_out: int, doc: str) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [out], ["output"]))
        g = helper.make_graph(
            self.nodes,
            "continuous_decoder",
            [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", n_bins, n_features])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_out])],
            initializer=self.inits,
            doc_string=doc,
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="closedloop")
        m.ir_version = IR_VERSION
        onnx.checker.check_model(m)
        return m


def _flat(b: _B, n: int) -> str:
    return b.op("Reshape", ["window", b.c("shape", np.array([-1, n], np.int64))])


def affine_graph(weights: np.ndarray, bias: np.ndarray, n_bins: int, n_features: int, doc: str) -> onnx.ModelProto:
    """``output = flatten(window) @ weights + bias``.

    Parameters
    ----------
    weights : ndarray, shape (n_bins * n_features, n_out)
        Rows in window order (oldest bin first, features within a bin).
    bias : ndarray, shape (n_out,)
    """
    w = np.asarray(weights, np.float32)
    b = _B()
    x = _flat(b, n_bins * n_features)
    out = b.op("Add", [b.op("MatMul", [x, b.c("w", w)]), b.c("b", np.asarray(bias, np.float32))])
    return b.model(out, n_bins, n_features, w.shape[1], doc)


def dkf_graph(
    *,
    n_features: int,
    layers: Sequence[tuple[np.ndarray, np.ndarray]],
    nw_points: np.ndarray | None,
    nw_targets: np.ndarray | None,
    q_points: np.ndarray,
    q_scale: np.ndarray,
    q_targets: np.ndarray,
    bandwidth_f: float,
    bandwidth_q: float,
    q_floor: np.ndarray,
    doc: str,
) -> onnx.ModelProto:
    """``f(x)`` and ``Q(x)`` of a DKF as one graph.

    Parameters
    ----------
    layers : sequence of (W (n_in, n_out), b (n_out,))
        The projection ``g(x)``: affine layers, tanh between them (standardisation folded into the first).
    nw_points : ndarray, shape (N, k) or None
        DKF-NW: training projections (already scaled); ``f`` is the NW regression of ``nw_targets``
        (N × d) on ``g(x)`` with bandwidth ``bandwidth_f``. None: ``f = g(x)`` (DKF-NN).
    q_points : ndarray, shape (N, d)
        Training points of the ``Q`` regression, in the space ``f(x) * q_scale``.
    q_targets : ndarray, shape (N, d * d)
        Residual outer products ``r rᵀ`` (row-major).
    q_floor : ndarray, shape (d * d,)
        Added to ``Q`` (a small multiple of the identity) so it stays invertible.
    """
    b = _B()
    h = _flat(b, n_features)
    for i, (w, bias) in enumerate(layers):
        h = b.op(
            "Add", [b.op("MatMul", [h, b.c("w", np.asarray(w, np.float32))]), b.c("b", np.asarray(bias, np.float32))]
        )
        if i < len(layers) - 1:
            h = b.op("Tanh", [h])

    def nw(u: str, points: np.ndarray, targets: np.ndarray, bw: float) -> str:
        pts = np.asarray(points, np.float32)
        # -|u - p|^2 / (2h^2) = (2 u.p - |p|^2 - |u|^2) / (2h^2); |u|^2 is constant per row and cancels in softmax
        cross = b.op("MatMul", [u, b.c("pT", pts.T.copy())])
        logits = b.op(
            "Sub",
            [
                b.op("Mul", [cross, b.c("k", np.array(1.0 / bw**2, np.float32))]),
                b.c("pp", (np.sum(pts.astype(np.float64) ** 2, axis=1) / (2 * bw**2)).astype(np.float32)),
            ],
        )
        w = b.op("Softmax", [logits], axis=1)
        return b.op("MatMul", [w, b.c("t", np.asarray(targets, np.float32))])

    f = h if nw_points is None else nw(h, nw_points, nw_targets, bandwidth_f)  # type: ignore[arg-type]
    u = b.op("Mul", [f, b.c("qs", np.asarray(q_scale, np.float32))])
    q = b.op("Add", [nw(u, q_points, q_targets, bandwidth_q), b.c("qf", np.asarray(q_floor, np.float32))])
    out = b.op("Concat", [f, q], axis=1)
    d = int(np.asarray(q_scale).size)
    return b.model(out, 1, n_features, d + d * d, doc)
