"""Causal EMG preprocessing, sliding windows and per-channel time-domain features (numpy).

The feature definitions here are the reference for the ONNX graph in :mod:`decoders.emg.graph`
(same float32 arithmetic, so the threshold counts ZC and SSC agree bit for bit).

Features per channel of a window ``x`` (n_samples,) in µV, threshold ``thr`` in µV:

- ``rms``: ``sqrt(mean(x**2))``
- ``mav``: ``mean(|x|)`` (Hudgins)
- ``wl``: waveform length ``sum |x[i+1] - x[i]|`` (Hudgins)
- ``zc``: zero crossings ``#{x[i] * x[i+1] < 0 and |x[i+1] - x[i]| >= thr}`` (Hudgins)
- ``ssc``: slope sign changes ``#{d1 * d2 < 0 and (|d1| >= thr or |d2| >= thr)}`` with
  ``d1 = x[i] - x[i-1]``, ``d2 = x[i+1] - x[i]`` (Hudgins)

References: B. Hudgins, P. Parker, R. N. Scott, "A new strategy for multifunction myoelectric
control", IEEE Trans. Biomed. Eng. 40(1):82-94, 1993, doi:10.1109/10.204774.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

__all__ = [
    "FEATURES",
    "Preprocessing",
    "causal_filter",
    "td_features",
    "window_ends",
]

#: Feature names in the order they are stacked (feature-major: all channels of ``rms``, then ``mav`` ...).
FEATURES = ("rms", "mav", "wl", "zc", "ssc")


@dataclass(frozen=True)
class Preprocessing:
    """Causal EMG preprocessing, as written into the model card.

    Parameters
    ----------
    bandpass_hz : (float, float)
        Butterworth band-pass edges in Hz (high-pass ~20 Hz removes motion artefact and DC;
        the high edge stays below Nyquist).
    filter_order : int
        Butterworth order.
    notch_hz : float or None
        Line-noise notch (Q = 30) in Hz, or None.
    common_average : bool
        Subtract the mean over channels from every sample (done inside the model graph).
    """

    bandpass_hz: tuple[float, float] = (20.0, 450.0)
    filter_order: int = 4
    notch_hz: float | None = 60.0
    common_average: bool = False

    def card_dict(self) -> dict:
        """The card's ``preprocessing`` entry (the pipeline applies band-pass and notch; CAR is in the graph)."""
        return {
            "bandpass_hz": [float(self.bandpass_hz[0]), float(self.bandpass_hz[1])],
            "filter_order": int(self.filter_order),
            "notch_hz": None if self.notch_hz is None else float(self.notch_hz),
            "units": "microvolts",
            "reference": "none",
            "common_average_in_graph": bool(self.common_average),
        }

    def sos(self, srate: float) -> np.ndarray:
        """Second-order sections for ``srate`` Hz, identical to the online pipeline's design."""
        lo, hi = self.bandpass_hz
        nyq = srate / 2.0
        if not 0 < lo < hi < nyq:
            raise ValueError(
                f"EMG band-pass {list(self.bandpass_hz)} Hz must satisfy 0 < low < high < Nyquist ({nyq:g} Hz); "
                "lower the high edge for this sampling rate."
            )
        sos = [signal.butter(self.filter_order, [lo, hi], "bandpass", fs=srate, output="sos")]
        if self.notch_hz is not None:
            if not 0 < self.notch_hz < nyq:
                raise ValueError(f"EMG notch_hz must be between 0 and Nyquist ({nyq:g} Hz), got {self.notch_hz}.")
            b, a = signal.iirnotch(self.notch_hz, 30.0, fs=srate)
            sos.append(signal.tf2sos(b, a))
        return np.concatenate(sos)


def causal_filter(data: np.ndarray, srate: float, pre: Preprocessing) -> np.ndarray:
    """Filter a whole recording causally with the online pipeline's own filter.

    Parameters
    ----------
    data : ndarray, shape (n_samples, n_channels)
        Raw EMG in µV.
    srate : float
        Sampling rate in Hz.
    pre : Preprocessing

    Returns
    -------
    ndarray, shape (n_samples, n_channels), float32
        Filtered EMG in µV, computed by :class:`app.pipeline.CausalFilter` (the state starts at
        the steady state for the first sample, as in a live session), so offline windows equal
        the windows a session decodes.
    """
    from app.pipeline import CausalFilter, FilterSettings

    pre.sos(srate)  # validate the band for this rate with an EMG-specific message
    settings = FilterSettings((pre.bandpass_hz[0], pre.bandpass_hz[1]), pre.filter_order, pre.notch_hz)
    x = np.asarray(data, dtype=np.float32)
    return CausalFilter(settings, srate, x.shape[1])(x)


def window_ends(start: int, stop: int, window: int, hop: int) -> np.ndarray:
    """Indices of the last sample of every window that fits in ``[start, stop)`` on the global hop grid.

    The online pipeline decides at sample ``d`` when ``(d + 1 - window) % hop == 0``; offline
    windows use the same grid so both see identical windows.

    Parameters
    ----------
    start, stop : int
        Sample range (``stop`` exclusive) the whole window must lie in.
    window, hop : int
        Window length and hop in samples.

    Returns
    -------
    ndarray of int
        Last-sample indices ``d`` with ``d - window + 1 >= start`` and ``d < stop``.
    """
    first = max(start + window - 1, window - 1)
    off = (first + 1 - window) % hop
    if off:
        first += hop - off
    return np.arange(first, stop, hop, dtype=np.int64)


def td_features(windows: np.ndarray, threshold_uv: float, *, common_average: bool = False) -> np.ndarray:
    """RMS and Hudgins time-domain features per channel, in float32.

    Parameters
    ----------
    windows : ndarray, shape (n_windows, n_samples, n_channels)
        Filtered EMG windows in µV.
    threshold_uv : float
        Amplitude threshold of ZC and SSC in µV.
    common_average : bool
        Subtract the per-sample mean over channels first.

    Returns
    -------
    ndarray, shape (n_windows, 5, n_channels), float32
        Features in :data:`FEATURES` order; ZC and SSC are counts (not normalised).
    """
    x = np.asarray(windows, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"windows must have shape (n_windows, n_samples, n_channels), got {x.shape}.")
    if common_average:
        x = x - x.mean(axis=2, keepdims=True, dtype=np.float32)
    thr = np.float32(threshold_uv)
    rms = np.sqrt(np.mean(x * x, axis=1, dtype=np.float32))
    mav = np.mean(np.abs(x), axis=1, dtype=np.float32)
    d = x[:, 1:] - x[:, :-1]
    ad = np.abs(d)
    wl = np.sum(ad, axis=1, dtype=np.float32)
    zc = np.sum(((x[:, :-1] * x[:, 1:]) < 0) & (ad >= thr), axis=1).astype(np.float32)
    d1, d2 = d[:, :-1], d[:, 1:]
    ssc = np.sum(((d1 * d2) < 0) & ((ad[:, :-1] >= thr) | (ad[:, 1:] >= thr)), axis=1).astype(np.float32)
    return np.stack([rms, mav, wl, zc, ssc], axis=1)
