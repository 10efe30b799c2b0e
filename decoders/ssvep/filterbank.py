"""Chebyshev type I filter bank of Chen et al. (2015): sub-band n passes [n * start, high] Hz.

Each window is filtered on its own with zero-phase ``sosfiltfilt``: the window is a finite
segment already in the past, so this is as causal online as offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import signal

__all__ = ["apply_filter_bank", "design_filter_bank", "subband_edges"]


def subband_edges(
    n_subbands: int, srate: float, start_hz: float = 8.0, high_hz: float = 88.0
) -> list[tuple[float, float]]:
    """Pass bands ``[(n * start_hz, high), ...]`` in Hz for n = 1..n_subbands (high capped below Nyquist)."""
    high = min(high_hz, 0.5 * srate - 6.0)
    edges = [(n * start_hz, high) for n in range(1, n_subbands + 1)]
    bad = [e for e in edges if not 2.0 < e[0] < e[1] - 4.0]
    if bad:
        raise ValueError(
            f"sub-bands {bad} Hz are empty at {srate:g} Hz (start {start_hz:g} Hz, {n_subbands} sub-bands); "
            "use fewer sub-bands or a lower start."
        )
    return edges


def design_filter_bank(edges: Sequence[Sequence[float]], srate: float) -> list[np.ndarray]:
    """Chebyshev I band-pass SOS per sub-band: pass ``edges[n]``, stop 4 Hz below, 10 Hz above (40 dB)."""
    nyq = srate / 2.0
    out = []
    for lo, hi in edges:
        wp = [lo / nyq, hi / nyq]
        ws = [max(lo - 4.0, 0.5) / nyq, min(hi + 10.0, nyq - 1.0) / nyq]
        order, wn = signal.cheb1ord(wp, ws, 3, 40)
        out.append(signal.cheby1(order, 0.5, wn, btype="bandpass", output="sos"))
    return out


@lru_cache(maxsize=64)
def _zi(sos_bytes: bytes, n_sections: int) -> np.ndarray:
    return signal.sosfilt_zi(np.frombuffer(sos_bytes).reshape(n_sections, 6))


def _odd_ext(x: np.ndarray, n: int) -> np.ndarray:
    """Odd extension by ``n`` samples at both ends of the last axis (as scipy's filtfilt pads)."""
    left = 2 * x[..., :1] - x[..., n:0:-1]
    right = 2 * x[..., -1:] - x[..., -2 : -n - 2 : -1]
    return np.concatenate([left, x, right], axis=-1)


def _sosfiltfilt(sos: np.ndarray, x: np.ndarray, padlen: int) -> np.ndarray:
    """``scipy.signal.sosfiltfilt`` along the last axis, its initial-state template cached (it dominates the cost)."""
    zi = _zi(np.ascontiguousarray(sos, dtype=np.float64).tobytes(), sos.shape[0])
    zi = zi.reshape((zi.shape[0],) + (1,) * (x.ndim - 1) + (2,))
    ext = _odd_ext(x, padlen)
    y, _ = signal.sosfilt(sos, ext, axis=-1, zi=zi * ext[..., :1])
    y = np.ascontiguousarray(y[..., ::-1])
    y, _ = signal.sosfilt(sos, y, axis=-1, zi=zi * y[..., :1])
    return y[..., ::-1][..., padlen:-padlen]


def apply_filter_bank(window: np.ndarray, bank: Sequence[np.ndarray]) -> np.ndarray:
    """Filter one window (or a batch) through every sub-band, zero phase (``sosfiltfilt``, odd padding).

    Parameters
    ----------
    window : ndarray, shape (n_samples, n_channels) or (n_windows, n_samples, n_channels), µV
    bank : list of SOS arrays

    Returns
    -------
    ndarray, float64, shape (n_subbands, n_samples, n_channels) or (n_windows, n_subbands, n_samples, n_channels)
    """
    x = np.asarray(window, dtype=np.float64)
    xt = np.ascontiguousarray(np.swapaxes(x, -1, -2))  # (..., n_channels, n_samples): time last
    n = xt.shape[-1]
    out = np.empty((len(bank), *xt.shape))
    for b, sos in enumerate(bank):
        out[b] = _sosfiltfilt(sos, xt, min(3 * (2 * len(sos) + 1), n - 1))
    out = np.swapaxes(out, -1, -2)  # (n_subbands, ..., n_samples, n_channels)
    return np.moveaxis(out, 0, 1) if x.ndim == 3 else out
