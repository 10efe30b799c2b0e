"""Stateful continuous decoders: an ONNX observation graph plus a Kalman / DKF recursion from the card.

Registered runtimes (``provenance["runtime"]``):

- ``"kalman"``: the graph gives the information vector ``Hᵀ Q⁻¹ (x - b)``; the card's
  ``provenance["state_space"]`` holds ``A``, ``W``, ``J = Hᵀ Q⁻¹ H``, ``S`` and ``z_mean``.
- ``"dkf"``: the graph gives ``f(x)`` and ``Q(x)``; the card holds ``A``, ``gamma``, ``S``,
  ``z_mean`` and ``robust``.

The decoder keeps the filter state between calls (it is *not* stateless): each ``predict`` is
one bin, in order; :meth:`StateSpaceDecoder.reset` starts a new sequence. Run the pipeline with
``catch_up = "all"`` so no bin is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from decoders.card import ModelCard
from decoders.continuous.filters import DiscriminativeKalmanFilter, KalmanInfoFilter
from decoders.loader import register_runtime

__all__ = ["StateSpaceDecoder"]


def _matrix(ss: dict[str, Any], key: str, d: int, where: str) -> np.ndarray:
    if key not in ss:
        raise ValueError(f"model {where}: card provenance.state_space lacks {key!r}.")
    m = np.asarray(ss[key], dtype=np.float64)
    if m.shape != (d, d) or not np.isfinite(m).all():
        raise ValueError(f"model {where}: state_space.{key} must be a finite {d} × {d} matrix, got shape {m.shape}.")
    return m


class StateSpaceDecoder:
    """One bin of features in, the filtered kinematics out (stateful; see the module doc).

    Threading: ``predict`` from the pipeline's decoding thread only.

    Parameters
    ----------
    path : str or path-like
        ONNX model with a ``continuous`` card whose provenance names runtime ``kalman`` or ``dkf``.
    card : ModelCard
    """

    def __init__(self, path: str | os.PathLike[str], card: ModelCard) -> None:
        self.path = Path(path)
        self.card = card
        where = repr(str(self.path))
        ss = card.provenance.get("state_space")
        if not isinstance(ss, dict):
            raise ValueError(f"model {where}: card provenance has no 'state_space' table for the Kalman/DKF runtime.")
        self.kind = str(card.provenance.get("runtime"))
        d = card.n_outputs
        self.d = d
        self.z_mean = np.asarray(ss.get("z_mean", np.zeros(d)), dtype=np.float64)
        A, S = _matrix(ss, "A", d, where), _matrix(ss, "S", d, where)
        self.filter: KalmanInfoFilter | DiscriminativeKalmanFilter
        if self.kind == "kalman":
            self.filter = KalmanInfoFilter(A, _matrix(ss, "W", d, where), _matrix(ss, "J", d, where), S)
            n_out = d
        elif self.kind == "dkf":
            self.filter = DiscriminativeKalmanFilter(
                A, _matrix(ss, "gamma", d, where), S, robust=bool(ss.get("robust", False))
            )
            n_out = d + d * d
        else:
            raise ValueError(f"model {where}: StateSpaceDecoder runs runtimes 'kalman' and 'dkf', not {self.kind!r}.")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        self._shape = (card.n_window_samples, card.n_channels)
        self._input = np.zeros((1, *self._shape), dtype=np.float32)
        out = self._session.run(None, {card.input_name: self._input})[0]
        if out.shape[-1] != n_out:
            raise ValueError(
                f"model {where}: graph output has {out.shape[-1]} values, runtime {self.kind} needs {n_out}."
            )

    def reset(self) -> None:
        """Start a new sequence (filter back to its prior)."""
        self.filter.reset()

    @property
    def n_fallbacks(self) -> int:
        """DKF steps that needed the ``Q ← (Q⁻¹ + S⁻¹)⁻¹`` fallback (0 for the Kalman filter)."""
        return int(getattr(self.filter, "n_fallbacks", 0))

    def observe(self, window: np.ndarray) -> np.ndarray:
        """The graph output for one window (no filter step); float64 copy."""
        if not isinstance(window, np.ndarray) or window.shape != self._shape:
            found = window.shape if isinstance(window, np.ndarray) else type(window).__name__
            raise ValueError(f"window must have shape {self._shape} for model {str(self.path)!r}, got {found}.")
        np.copyto(self._input[0], window, casting="same_kind")
        if not np.isfinite(self._input).all():
            raise ValueError(f"window for model {str(self.path)!r} holds NaN or infinite features; refusing to decode.")
        return np.array(self._session.run(None, {self.card.input_name: self._input})[0][0], dtype=np.float64)

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Advance the filter by one bin; returns the kinematics estimate (d,) in the training units."""
        out = self.observe(window)
        if isinstance(self.filter, KalmanInfoFilter):
            mu = self.filter.step(out)
        else:
            mu = self.filter.step(out[: self.d], out[self.d :].reshape(self.d, self.d))
        return mu + self.z_mean


def _factory(path: Path, card: ModelCard) -> StateSpaceDecoder:
    return StateSpaceDecoder(path, card)


register_runtime("kalman", _factory, module="decoders.continuous.runtime")
register_runtime("dkf", _factory, module="decoders.continuous.runtime")
