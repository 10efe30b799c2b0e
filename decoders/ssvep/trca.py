"""Ensemble task-related component analysis (Nakanishi et al. 2018, IEEE TBME 65:104-112,
doi:10.1109/TBME.2017.2694818), with the filter bank of Chen et al. (2015).

Per sub-band and class, TRCA finds the spatial filter maximising the covariance between
trials (generalised eigenproblem ``S w = lambda Q w``). The ensemble stacks the filters of all
classes, ``W`` (channels × K). A window's score for class k is ``sum_n w_n corr(X_n W_n,
T_{n,k} W_n)`` where ``T_{n,k}`` is the class-k mean trial in sub-band n and corr the Pearson
correlation of the flattened projections.

The scoring runs as an ONNX graph (:func:`build_etrca_onnx`) whose input is the filter-bank
tensor ``(batch, n_subbands, n_samples, n_channels)``; :func:`etrca_scores` is the numpy
reference it is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from scipy import linalg

__all__ = ["EtrcaModel", "build_etrca_onnx", "etrca_scores", "fit_etrca", "trca_filter"]

OPSET = 17
IR_VERSION = 8


def trca_filter(trials: np.ndarray) -> np.ndarray:
    """The TRCA spatial filter of one class in one sub-band.

    Parameters
    ----------
    trials : ndarray, shape (n_trials, n_samples, n_channels), n_trials >= 2

    Returns
    -------
    ndarray, shape (n_channels,)
    """
    x = trials - trials.mean(axis=1, keepdims=True)
    total = x.sum(axis=0)  # (n, C)
    s = total.T @ total - np.einsum("tnc,tnd->cd", x, x)  # sum over i != j of X_i^T X_j
    cat = x.reshape(-1, x.shape[2])
    q = cat.T @ cat
    q += 1e-9 * np.trace(q) / q.shape[0] * np.eye(q.shape[0])
    vals, vecs = linalg.eigh(s, q)
    return vecs[:, int(np.argmax(vals))]


@dataclass(frozen=True)
class EtrcaModel:
    """Fitted eTRCA: filters (n_subbands, n_channels, K), templates (n_subbands, K, n_samples, n_channels), weights."""

    filters: np.ndarray
    templates: np.ndarray
    weights: np.ndarray

    def projected_templates(self) -> np.ndarray:
        """Centred, unit-norm projected templates, shape (n_subbands, K, n_samples, K_filters)."""
        tw = np.einsum("bknc,bcf->bknf", self.templates, self.filters)
        tw = tw - tw.mean(axis=(2, 3), keepdims=True)
        return tw / np.sqrt((tw**2).sum(axis=(2, 3), keepdims=True) + 1e-12)


def fit_etrca(bands: np.ndarray, y: np.ndarray, n_classes: int, weights: np.ndarray) -> EtrcaModel:
    """Fit eTRCA on filter-bank trials.

    Parameters
    ----------
    bands : ndarray, shape (n_trials, n_subbands, n_samples, n_channels)
    y : ndarray, shape (n_trials,), class indices 0..n_classes-1, each with >= 2 trials
    n_classes : int
    weights : ndarray, shape (n_subbands,)
    """
    n_sub = bands.shape[1]
    filters = np.zeros((n_sub, bands.shape[3], n_classes))
    templates = np.zeros((n_sub, n_classes, bands.shape[2], bands.shape[3]))
    for k in range(n_classes):
        tk = bands[y == k]
        if tk.shape[0] < 2:
            raise ValueError(f"eTRCA needs at least 2 trials of class {k}, got {tk.shape[0]}.")
        for b in range(n_sub):
            filters[b, :, k] = trca_filter(tk[:, b])
            templates[b, k] = tk[:, b].mean(axis=0)
    return EtrcaModel(filters, templates, np.asarray(weights, dtype=np.float64))


def etrca_scores(model: EtrcaModel, bands: np.ndarray) -> np.ndarray:
    """Scores of one window's filter-bank tensor (n_subbands, n_samples, n_channels) -> (K,), normalised by sum(w)."""
    z = np.einsum("bnc,bcf->bnf", bands, model.filters)
    z = z - z.mean(axis=(1, 2), keepdims=True)
    z = z / np.sqrt((z**2).sum(axis=(1, 2), keepdims=True) + 1e-12)
    corr = np.einsum("bnf,bknf->bk", z, model.projected_templates())
    return (model.weights[:, None] * corr).sum(axis=0) / model.weights.sum()


def build_etrca_onnx(model: EtrcaModel, input_name: str = "bands") -> onnx.ModelProto:
    """The eTRCA scorer as ONNX: input (batch, n_subbands, n_samples, n_channels) float32 -> scores (batch, K)."""
    n_sub, n_ch, n_f = model.filters.shape
    n_samples = model.templates.shape[2]
    tn = model.projected_templates().astype(np.float32)  # (B, K, n, F)
    w = (model.weights / model.weights.sum()).astype(np.float32).reshape(n_sub, 1)
    inits = [
        numpy_helper.from_array(model.filters.astype(np.float32), "W"),
        numpy_helper.from_array(tn, "TN"),
        numpy_helper.from_array(w, "wb"),
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "ax23"),
        numpy_helper.from_array(np.array([3, 4], dtype=np.int64), "ax34"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "ax2"),
        numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("MatMul", [input_name, "W"], ["z"]),  # (b, B, n, F)
        helper.make_node("ReduceMean", ["z"], ["zm"], axes=[2, 3], keepdims=1),
        helper.make_node("Sub", ["z", "zm"], ["zc"]),
        helper.make_node("Mul", ["zc", "zc"], ["zsq"]),
        helper.make_node("ReduceSum", ["zsq", "ax23"], ["zss"], keepdims=1),
        helper.make_node("Add", ["zss", "eps"], ["zsse"]),
        helper.make_node("Sqrt", ["zsse"], ["znorm"]),
        helper.make_node("Div", ["zc", "znorm"], ["zn"]),
        helper.make_node("Unsqueeze", ["zn", "ax2"], ["zu"]),  # (b, B, 1, n, F)
        helper.make_node("Mul", ["zu", "TN"], ["prod"]),  # (b, B, K, n, F)
        helper.make_node("ReduceSum", ["prod", "ax34"], ["corr"], keepdims=0),  # (b, B, K)
        helper.make_node("Mul", ["corr", "wb"], ["wcorr"]),
        helper.make_node("ReduceSum", ["wcorr", "ax1"], ["scores"], keepdims=0),  # (b, K)
    ]
    graph = helper.make_graph(
        nodes,
        "etrca",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n_sub, n_samples, n_ch])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_f])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="closedloop")
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m)
    return m
