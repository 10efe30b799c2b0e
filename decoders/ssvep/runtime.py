"""Runtimes for SSVEP model files: filter bank in numpy, then FBCCA (numpy) or an ONNX scorer.

Card ``provenance["runtime"]``:

- ``"fbcca"``: a card-only file (trivial ONNX graph); everything needed is in
  ``provenance["parameters"]`` (frequencies, sub-bands, harmonics, weights).
- ``"ssvep-onnx"``: the ONNX graph scores the filter-bank tensor ``(1, n_subbands, n_samples,
  n_channels)`` (eTRCA correlations, or the DNN's log-probabilities).

Both add the rest class (see :mod:`decoders.ssvep.rest`) when the card has a rest threshold.
Importing this module registers both runtimes with :func:`decoders.loader.register_runtime`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from decoders.card import ModelCard
from decoders.loader import register_runtime
from decoders.ssvep.fbcca import fbcca_scores, reference_signals
from decoders.ssvep.filterbank import apply_filter_bank, design_filter_bank
from decoders.ssvep.rest import scores_to_probabilities

__all__ = ["FBCCA_RUNTIME", "ONNX_RUNTIME", "SsvepDecoder", "card_only_graph"]

FBCCA_RUNTIME = "fbcca"
ONNX_RUNTIME = "ssvep-onnx"
OPSET = 17
IR_VERSION = 8


def card_only_graph(n_samples: int, n_channels: int, input_name: str = "window") -> onnx.ModelProto:
    """A trivial valid ONNX graph (window -> its shape) to carry the card of a training-free model."""
    graph = helper.make_graph(
        [helper.make_node("Shape", [input_name], ["shape"])],
        "card_only",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, n_samples, n_channels])],
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [3])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="closedloop")
    m.ir_version = IR_VERSION
    return m


class SsvepDecoder:
    """Decoder for SSVEP model files (runtimes ``fbcca`` and ``ssvep-onnx``).

    ``predict`` filters the window through the card's Chebyshev I filter bank (zero phase, within
    the window), scores each target, and returns the probabilities of ``card.classes`` (targets,
    then rest when the card has a rest threshold). Stateless between calls; call from one
    thread (the pipeline's decoding thread).

    Parameters
    ----------
    path : path-like
        The model file.
    card : ModelCard
        Its card (``provenance["parameters"]`` holds ``frequencies``, ``subbands``,
        ``weights``, ``temperature``, ``rest_threshold`` and, for FBCCA, ``n_harmonics``).
    """

    def __init__(self, path: str | os.PathLike[str], card: ModelCard) -> None:
        self.path = Path(path)
        self.card = card
        params: dict[str, Any] = dict(card.provenance.get("parameters", {}))
        need = ["frequencies", "subbands", "weights", "temperature"]
        missing = [k for k in need if k not in params]
        if missing:
            raise ValueError(f"model {str(self.path)!r}: card provenance.parameters lacks {missing}.")
        self.frequencies = [float(f) for f in params["frequencies"]]
        self.bank = design_filter_bank(params["subbands"], card.srate)
        self.weights = np.asarray(params["weights"], dtype=np.float64)
        self.temperature = float(params["temperature"])
        thr = params.get("rest_threshold")
        self.rest_threshold = None if thr is None else float(thr)
        self.rest_statistic = str(params.get("rest_statistic", "margin"))
        n_out = len(self.frequencies) + (1 if self.rest_threshold is not None else 0)
        if n_out != card.n_outputs:
            raise ValueError(
                f"model {str(self.path)!r}: {len(self.frequencies)} targets"
                f"{' + rest' if self.rest_threshold is not None else ''} but the card lists "
                f"classes {list(card.classes)}."
            )
        self.runtime = str(card.provenance.get("runtime"))
        self._shape = (card.n_window_samples, card.n_channels)
        self._session: Any = None
        if self.runtime == FBCCA_RUNTIME:
            self.qy = reference_signals(self.frequencies, card.srate, card.n_window_samples, int(params["n_harmonics"]))
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
        self.predict(np.zeros(self._shape, dtype=np.float32))  # warm-up

    def _check(self, window: np.ndarray) -> None:
        if not isinstance(window, np.ndarray) or window.shape != self._shape:
            found = window.shape if isinstance(window, np.ndarray) else type(window).__name__
            raise ValueError(f"window must have shape {self._shape} for model {str(self.path)!r}, got {found}.")
        if not np.isfinite(window).all():
            raise ValueError(f"window for model {str(self.path)!r} holds NaN or infinite values; refusing to decode.")

    def scores_from_bands(self, bands: np.ndarray) -> np.ndarray:
        """Target scores: (n_subbands, n, C) -> (K,), or (n_windows, n_subbands, n, C) -> (n_windows, K)."""
        if self._session is None:
            if bands.ndim == 4:
                return np.stack([fbcca_scores(b, self.qy, self.weights) for b in bands])
            return fbcca_scores(bands, self.qy, self.weights)
        batch = bands if bands.ndim == 4 else bands[None]
        out = self._session.run(None, {self._input: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        out = np.asarray(out, dtype=np.float64)
        return out if bands.ndim == 4 else out[0]

    def scores(self, window: np.ndarray) -> np.ndarray:
        """Target scores (K,) of one window (n_samples × n_channels, µV)."""
        self._check(window)
        return self.scores_from_bands(apply_filter_bank(window, self.bank))

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Class probabilities (targets, then rest if the card has one) of one window (n_samples × n_channels, µV)."""
        return scores_to_probabilities(self.scores(window), self.temperature, self.rest_threshold, self.rest_statistic)

    def __repr__(self) -> str:
        return f"SsvepDecoder({str(self.path)!r}, runtime={self.runtime!r}, classes={list(self.card.classes)})"


def _factory(path: Path, card: ModelCard) -> SsvepDecoder:
    return SsvepDecoder(path, card)


register_runtime(FBCCA_RUNTIME, _factory, module="decoders.ssvep.runtime")
register_runtime(ONNX_RUNTIME, _factory, module="decoders.ssvep.runtime")
