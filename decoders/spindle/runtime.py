"""The ``spindle-gru`` decoder runtime: a stateful :class:`~decoders.base.Decoder` for session pipelines.

A session pipeline calls :meth:`SpindleGruDecoder.predict` every hop (24 ms) with the newest raw
window (0.96 s) of the stream at the card's rate. The decoder works out which samples are new
since its previous call (the previous window's tail reappears at the head of this one; normally
exactly one hop), feeds only those to its :class:`~decoders.spindle.detector.SpindleDetector`
(resampling to 250 Hz, filters, running standardisation, staggered GRU copies with their hidden
states, threshold, refractory period, trigger variant) and reports what happened in them.

Output (``card.classes``): ``spindle`` 1.0 when a spindle onset was detected in the new samples
(the pipeline then labels the event command ``"spindle"``); ``trigger`` 1.0 when the stimulation
trigger fired (variant and fixed delay applied); ``probability`` the newest network output;
``active`` 1.0 while a detected spindle lasts.

State: the decoder is *stateful* by design (filters, standardisation, hidden states, events).
It keeps that state private to the pipeline's decoding thread; :meth:`reset` clears it. When the
new window does not overlap the previous one (samples were skipped, e.g. a ``catch_up = "latest"``
pipeline that fell a whole window behind, or decisions suppressed around non-finite samples), the
whole window is fed as new data and ``n_resyncs`` counts it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from decoders.card import ModelCard
from decoders.loader import register_runtime
from decoders.spindle.detector import OrtStepModel, SpindleDetector, detector_from_card
from decoders.spindle.preprocessing import UnsupportedRateError

__all__ = ["RUNTIME_NAME", "SpindleGruDecoder", "load_spindle_decoder"]

RUNTIME_NAME = "spindle-gru"


class SpindleGruDecoder:
    """Stateful spindle detector behind the :class:`~decoders.base.Decoder` protocol.

    Parameters
    ----------
    path : str or path-like
        ONNX step graph with a ``spindle-gru`` card.
    card : ModelCard
        Its card (``read_card(path)``).

    Raises
    ------
    ValueError
        The card lacks spindle settings, the graph is not a spindle step graph, or the card's
        rate cannot be resampled to 250 Hz (:class:`UnsupportedRateError`).
    """

    def __init__(self, path: str | os.PathLike[str], card: ModelCard) -> None:
        self.path = Path(path)
        self.card = card
        if card.n_channels != 1:
            raise ValueError(
                f"model {str(path)!r}: a spindle-gru model takes one channel, its card lists "
                f"{list(card.channel_labels)}."
            )
        self._front, self._settings = detector_from_card(path, card)
        self.model = OrtStepModel(path)
        if self.model.window != self._settings.window:
            raise ValueError(
                f"model {str(path)!r}: graph window {self.model.window} differs from the card's detector window "
                f"{self._settings.window}."
            )
        try:
            self.detector = SpindleDetector(self.model, card.srate, self._front, self._settings)
        except UnsupportedRateError as err:
            raise UnsupportedRateError(f"model {str(path)!r}: {err}") from None
        self._shape = (card.n_window_samples, 1)
        self._prev: np.ndarray | None = None
        self._shift = 1
        self.n_resyncs = 0

    def reset(self) -> None:
        """Forget all state (filters, standardisation, hidden states, events)."""
        self.detector = SpindleDetector(self.model, self.card.srate, self._front, self._settings)
        self._prev = None
        self.n_resyncs = 0

    def _new_samples(self, w: np.ndarray) -> np.ndarray:
        prev = self._prev
        self._prev = w.copy()
        if prev is None:
            return w
        n = w.size
        candidates = [self._shift, *range(0, n)]
        for k in candidates:
            if 0 <= k < n and np.array_equal(w[: n - k], prev[k:]):
                self._shift = k if k > 0 else self._shift
                return w[n - k :]
        self.n_resyncs += 1
        return w

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Feed the newest raw window; see the module docstring for the output.

        Parameters
        ----------
        window : ndarray, shape (n_window_samples, 1)
            Raw µV samples at the card's rate.

        Returns
        -------
        ndarray, shape (4,), float64
            ``[spindle onset, trigger, probability, active]``.
        """
        if not isinstance(window, np.ndarray) or window.shape != self._shape:
            found = window.shape if isinstance(window, np.ndarray) else type(window).__name__
            raise ValueError(f"window must have shape {self._shape} for model {str(self.path)!r}, got {found}.")
        w = np.asarray(window[:, 0], dtype=np.float32)
        if not np.isfinite(w).all():
            raise ValueError(f"window for model {str(self.path)!r} holds NaN or infinite values; refusing to decode.")
        log = self.detector.process(self._new_samples(w))
        active = bool(log.active[-1]) if len(log) else self.detector.tracker.open_onset is not None
        return np.array(
            [float(log.onset.any()), float(log.trigger.any()), self.detector.last_prob, float(active)], dtype=np.float64
        )

    def __repr__(self) -> str:
        return f"SpindleGruDecoder({str(self.path)!r}, srate={self.card.srate!r}, {self._settings})"


def load_spindle_decoder(path: Path, card: ModelCard) -> SpindleGruDecoder:
    """Factory registered with :func:`decoders.loader.register_runtime` for ``spindle-gru``."""
    return SpindleGruDecoder(path, card)


register_runtime(RUNTIME_NAME, load_spindle_decoder, module="decoders.spindle.runtime")
