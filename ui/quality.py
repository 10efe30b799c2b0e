"""Per-channel signal-quality verdicts for the scope: ok, flat, railed, line noise (pure functions).

A channel is judged on its last second or so of raw samples (µV):

- **flat**: peak-to-peak below ``flat_uv`` (a disconnected or shorted electrode);
- **railed**: at least ``railed_fraction`` of the samples sit at the channel's own extreme value
  (an amplifier clipped at its rail), or any |value| reaches ``rail_uv``;
- **line**: the spectrum within ±``line_band_hz`` of the mains frequency (50 or 60 Hz) stands more
  than ``line_ratio`` times (10 = 10 dB) above the median of the ±10 Hz around it (a high-impedance
  electrode picking up mains); a peak, not a level, so it works for EEG and broadband EMG alike;
- **ok** otherwise. A window with non-finite samples is judged on its finite part.

Thresholds are parameters of :class:`QualitySettings`; the defaults suit scalp EEG in µV.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

OK, FLAT, RAILED, LINE = "ok", "flat", "railed", "line"
VERDICTS = (OK, FLAT, RAILED, LINE)


@dataclass(frozen=True)
class QualitySettings:
    """Thresholds of :func:`channel_quality` (µV, Hz, fractions)."""

    flat_uv: float = 0.5
    rail_uv: float = 1.0e5
    railed_fraction: float = 0.2
    line_hz: tuple[float, ...] = (50.0, 60.0)
    line_band_hz: float = 1.5
    line_ratio: float = 10.0


def channel_quality(data: np.ndarray, srate: float, settings: QualitySettings | None = None) -> list[str]:
    """Judge every channel of a window.

    Parameters
    ----------
    data : ndarray, shape (n_samples, n_channels)
        Raw samples in µV (at least ~0.25 s for the line-noise test).
    srate : float
        Sampling rate in Hz.
    settings : QualitySettings, optional

    Returns
    -------
    list of str
        One of ``"ok"``, ``"flat"``, ``"railed"``, ``"line"`` per channel.
    """
    q = settings or QualitySettings()
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"channel_quality expects samples × channels, got shape {x.shape}.")
    n, n_ch = x.shape
    out = np.full(n_ch, OK, dtype=object)
    if n < 2:
        return list(out)
    finite = np.isfinite(x)
    if finite.all():
        lo, hi = x.min(axis=0), x.max(axis=0)
        at_extreme = np.maximum((x == hi).sum(axis=0), (x == lo).sum(axis=0)) / n
        n_finite = np.full(n_ch, n)
    else:
        lo = np.where(finite, x, np.inf).min(axis=0)
        hi = np.where(finite, x, -np.inf).max(axis=0)
        n_finite = finite.sum(axis=0)
        at_extreme = np.maximum((x == hi).sum(axis=0), (x == lo).sum(axis=0)) / np.maximum(n_finite, 1)
    line = _line_ratio(x, finite, srate, q) > q.line_ratio
    railed = (np.maximum(np.abs(lo), np.abs(hi)) >= q.rail_uv) | (at_extreme >= q.railed_fraction)
    flat = (n_finite < 2) | ~(hi - lo >= q.flat_uv)
    out[line] = LINE
    out[railed] = RAILED
    out[flat] = FLAT
    return list(out)


def _at_extreme(v: np.ndarray, lo: float, hi: float) -> float:
    """Fraction of samples equal to the channel's minimum or maximum (clipping shows as a plateau)."""
    return max(np.count_nonzero(v == hi), np.count_nonzero(v == lo)) / v.size


@lru_cache(maxsize=8)
def _dft_basis(srate: float, nper: int, freqs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Hann-windowed cosines and sines (each nper × n_freqs, real) for the DFT at ``freqs`` Hz.

    Real matrices on purpose: numpy multiplies real by complex without BLAS (~250× slower).
    """
    t = np.arange(nper) / srate
    arg = 2 * np.pi * t[:, None] * np.asarray(freqs)[None, :]
    win = np.hanning(nper)[:, None]
    return np.ascontiguousarray(win * np.cos(arg)), np.ascontiguousarray(win * np.sin(arg))


def _line_ratio(x: np.ndarray, finite: np.ndarray, srate: float, q: QualitySettings) -> np.ndarray:
    """Mains peak per channel: mean power within ±line_band_hz of 50/60 Hz over the median power of the
    ±10 Hz around it (2 Hz steps, the band left out); 0 where it cannot be computed.

    The power comes from Hann-windowed DFTs at just those frequencies, averaged over three
    half-overlapping segments of ``srate / 2`` samples: two real matrix products per segment
    (BLAS, which runs without holding the interpreter lock) instead of full spectra of every channel.
    """
    n, n_ch = x.shape
    ratio = np.zeros(n_ch)
    usable = [f for f in q.line_hz if f + 10.0 < srate / 2]
    nper = int(srate / 2)
    if not usable or nper < 8 or n < nper:
        return ratio
    xf = np.where(finite, x, 0.0)
    offsets = np.arange(-10.0, 10.0 + 1e-9, 2.0)
    freqs = np.concatenate([f + offsets for f in usable])
    cos, sin = _dft_basis(srate, nper, tuple(freqs))  # (nper, n_freqs) each
    starts = sorted({0, max(0, (n - nper) // 2), n - nper})
    power = np.zeros((n_ch, freqs.size))
    for a in starts:
        seg = xf[a : a + nper]
        seg = seg - seg.mean(axis=0)
        power += (seg.T @ cos) ** 2 + (seg.T @ sin) ** 2
    k = offsets.size
    in_band = np.abs(offsets) <= max(q.line_band_hz, 2.0)
    for i in range(len(usable)):
        p = power[:, i * k : (i + 1) * k]
        peak = p[:, in_band].mean(axis=1)
        floor = np.median(p[:, ~in_band], axis=1)
        r = np.zeros(n_ch)
        np.divide(peak, floor, out=r, where=floor > 0)
        r[(floor <= 0) & (peak > 0)] = np.inf
        ratio = np.maximum(ratio, r)
    return ratio
