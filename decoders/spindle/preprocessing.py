"""Causal Portiloop front end: resample to 250 Hz, notch, FIR low-pass, running standardisation.

Every block is a small stateful object with a ``__call__(chunk) -> chunk`` that is causal
(no look-ahead) and chunk invariant: feeding a signal in chunks of any size (even one sample
or zero samples) gives the same output as one call on the whole signal, up to float rounding.
The offline evaluation, the training data and the online runtime all go through these same
objects, so what is trained is what runs.

Signals are 1-D (one EEG channel, µV). Times are in s, rates in Hz.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from scipy import signal

from acquisition.validation import check_positive

__all__ = [
    "MAX_DOWN",
    "MAX_UP",
    "MIN_INPUT_SRATE",
    "MODEL_SRATE",
    "FrontEndSettings",
    "RunningStandardizer",
    "SpindleFrontEnd",
    "StreamingResampler",
    "UnsupportedRateError",
    "resampling_ratio",
]

#: Rate (Hz) the network runs at, as in Portiloop.
MODEL_SRATE = 250.0
#: Lowest input rate (Hz): its Nyquist frequency (25 Hz) still covers the sigma band (11-16 Hz).
MIN_INPUT_SRATE = 50.0
#: Largest interpolation / decimation factors of the rational resampler.
MAX_UP = 250
MAX_DOWN = 5000


class UnsupportedRateError(ValueError):
    """An input sampling rate the spindle front end cannot resample to 250 Hz."""


def resampling_ratio(srate: float, where: str = "input") -> tuple[int, int]:
    """Interpolation and decimation factors ``(up, down)`` taking ``srate`` Hz to 250 Hz.

    Parameters
    ----------
    srate : float
        Input sampling rate in Hz.
    where : str
        What the rate belongs to (a file, a stream), named in the error message.

    Returns
    -------
    (int, int)
        ``250 / srate == up / down`` in lowest terms.

    Raises
    ------
    UnsupportedRateError
        ``srate`` is below :data:`MIN_INPUT_SRATE`, not finite, or not a rational multiple of
        250 Hz with ``up <= MAX_UP`` and ``down <= MAX_DOWN`` (e.g. 250.3 Hz).
    """
    if isinstance(srate, bool) or not isinstance(srate, (int, float, np.floating, np.integer)):
        raise TypeError(f"{where}: sampling rate must be a number in Hz, got {type(srate).__name__} ({srate!r}).")
    rate = float(srate)
    if not math.isfinite(rate) or rate < MIN_INPUT_SRATE:
        raise UnsupportedRateError(
            f"{where}: unsupported sampling rate {srate!r} Hz for spindle detection; it must be at least "
            f"{MIN_INPUT_SRATE:g} Hz so the sigma band (11-16 Hz) lies below Nyquist. Record at a higher rate."
        )
    exact = Fraction(rate).limit_denominator(1000)
    ratio = Fraction(int(MODEL_SRATE)) / exact
    if abs(float(exact) - rate) > 1e-9 * rate or ratio.numerator > MAX_UP or ratio.denominator > MAX_DOWN:
        raise UnsupportedRateError(
            f"{where}: unsupported sampling rate {srate!r} Hz for spindle detection; it cannot be resampled "
            f"to {MODEL_SRATE:g} Hz with a rational factor up/down (up <= {MAX_UP}, down <= {MAX_DOWN}); "
            f"use a nominal rate such as 100, 200, 250, 256, 500 or 1000 Hz."
        )
    return ratio.numerator, ratio.denominator


class StreamingResampler:
    """Causal polyphase resampler from ``srate`` Hz to 250 Hz for one channel.

    Output sample ``n`` lies at input time ``n / 250`` s and is computed only from input
    samples at or before that time, with a linear-phase Kaiser-window FIR anti-imaging /
    anti-aliasing filter (cut-off 0.45 × the lower of the two rates; delay ``taps_per_phase / 2``
    input samples, e.g. 20 ms at 200 Hz). Before the first sample the input is taken to be
    constant at the first sample's value, so a DC offset causes no start-up transient.

    Parameters
    ----------
    srate : float
        Input rate in Hz (see :func:`resampling_ratio` for what is supported).
    """

    def __init__(self, srate: float) -> None:
        self.srate = float(srate)
        self.up, self.down = resampling_ratio(srate)
        self.identity = self.up == self.down == 1
        half = 4 * max(1, math.ceil(self.down / self.up))  # input samples each side
        self.taps_per_phase = 2 * half
        n_taps = self.taps_per_phase * self.up
        fs_up = self.srate * self.up
        cutoff = 0.45 * min(self.srate, MODEL_SRATE)
        h = signal.firwin(n_taps, cutoff, window=("kaiser", 5.0), fs=fs_up) * self.up
        # H[phase, i] multiplies input sample j_max - i for output phase ``phase``.
        self._bank = np.ascontiguousarray(h.reshape(self.taps_per_phase, self.up).T)
        self._hist = np.zeros(0)
        self._n_in = 0
        self._n_out = 0

    def reset(self) -> None:
        """Forget every sample seen so far."""
        self._hist = np.zeros(0)
        self._n_in = 0
        self._n_out = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Resample the next chunk.

        Parameters
        ----------
        x : ndarray, shape (n_samples,)
            Next input samples (µV).

        Returns
        -------
        ndarray, shape (n_out,), float64
            Every 250 Hz output sample whose input time has now been reached.
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.identity:
            return x.copy()
        if x.size == 0:
            return np.zeros(0)
        p = self.taps_per_phase
        if self._n_in == 0:
            self._hist = np.full(p - 1, x[0])
        ext = np.concatenate([self._hist, x])
        ext_start = self._n_in - (p - 1)  # global input index of ext[0]
        self._n_in += x.size
        # outputs n with floor(n * down / up) <= n_in - 1
        n_end = (self._n_in * self.up - 1) // self.down + 1
        ns = np.arange(self._n_out, n_end, dtype=np.int64)
        self._n_out = n_end
        self._hist = ext[-(p - 1) :].copy()
        if ns.size == 0:
            return np.zeros(0)
        pos = ns * self.down
        jmax = pos // self.up
        phase = pos % self.up
        idx = (jmax - ext_start)[:, None] - np.arange(p)[None, :]
        return np.einsum("ij,ij->i", self._bank[phase], ext[idx])


class RunningStandardizer:
    """Causal running standardisation ``z = (x - mean) / std`` with exponential forgetting.

    The mean and variance are running averages over all samples so far until ``1 / alpha``
    samples have been seen, then exponential moving averages with weight ``alpha`` per
    sample (time constants ``mean_tau_s`` and ``var_tau_s``). The variance tracks the squared
    deviation from the running mean. ``z`` is clipped to ``±clip``.

    Parameters
    ----------
    srate : float
        Rate of the signal in Hz.
    mean_tau_s, var_tau_s : float
        Time constants (s) of the mean and variance estimates.
    clip : float
        Bound of the standardised output.
    """

    EPS = 1e-6

    def __init__(self, srate: float, mean_tau_s: float, var_tau_s: float, clip: float = 10.0) -> None:
        self.alpha_mean = 1.0 / max(1.0, check_positive(mean_tau_s, "mean_tau_s") * srate)
        self.alpha_var = 1.0 / max(1.0, check_positive(var_tau_s, "var_tau_s") * srate)
        self.clip = check_positive(clip, "clip")
        self.reset()

    def reset(self) -> None:
        """Forget every sample seen so far."""
        self._n = 0
        self._mean_sum = 0.0
        self._var_sum = 0.0
        self._mean = 0.0
        self._var = 0.0

    @staticmethod
    def _average(x: np.ndarray, n0: int, alpha: float, run_sum: float, last: float) -> tuple[np.ndarray, float, float]:
        """Running average of ``x`` (global indices n0...), switching to an EMA after 1/alpha samples."""
        n_warm = math.ceil(1.0 / alpha)
        k = max(0, min(x.size, n_warm - n0))
        out = np.empty_like(x)
        if k:
            sums = run_sum + np.cumsum(x[:k])
            out[:k] = sums / (n0 + 1 + np.arange(k))
            run_sum = float(sums[-1])
            last = float(out[k - 1])
        if k < x.size:
            y, _ = signal.lfilter([alpha], [1.0, alpha - 1.0], x[k:], zi=[(1.0 - alpha) * last])
            out[k:] = y
            last = float(y[-1])
        return out, run_sum, last

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Standardise the next chunk, shape (n_samples,), float64."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return np.zeros(0)
        mean, self._mean_sum, self._mean = self._average(x, self._n, self.alpha_mean, self._mean_sum, self._mean)
        dev = x - mean
        var, self._var_sum, self._var = self._average(dev * dev, self._n, self.alpha_var, self._var_sum, self._var)
        self._n += x.size
        z = dev / (np.sqrt(var) + self.EPS)
        return np.clip(z, -self.clip, self.clip)


@dataclass(frozen=True)
class FrontEndSettings:
    """Settings of the Portiloop front end (stored in the model card's ``preprocessing``).

    Parameters
    ----------
    line_hz : float or None
        Mains frequency to notch (50 or 60 Hz; Q = 30), or None.
    lowpass_hz : float
        Cut-off of the FIR low-pass in Hz.
    fir_taps : int
        Length of the FIR low-pass (odd; delay ``(fir_taps - 1) / 2`` samples at 250 Hz).
    mean_tau_s, var_tau_s : float
        Time constants of the running standardisation (s).
    """

    line_hz: float | None = 50.0
    lowpass_hz: float = 30.0
    fir_taps: int = 21
    mean_tau_s: float = 1.0
    var_tau_s: float = 30.0

    def to_card(self) -> dict[str, Any]:
        """The card's ``preprocessing`` entries (documented in docs/spindle.md)."""
        return {
            "units": "microvolts",
            "resample_to_hz": MODEL_SRATE,
            "line_notch_hz": self.line_hz,
            "fir_lowpass_hz": self.lowpass_hz,
            "fir_taps": self.fir_taps,
            "standardize_mean_tau_s": self.mean_tau_s,
            "standardize_var_tau_s": self.var_tau_s,
        }

    @classmethod
    def from_card(cls, pre: dict[str, Any], where: str) -> FrontEndSettings:
        """Read the settings back from a card's ``preprocessing`` dict; ValueError naming the missing key."""
        keys = {
            "line_hz": "line_notch_hz",
            "lowpass_hz": "fir_lowpass_hz",
            "fir_taps": "fir_taps",
            "mean_tau_s": "standardize_mean_tau_s",
            "var_tau_s": "standardize_var_tau_s",
        }
        missing = [v for v in keys.values() if v not in pre]
        if missing:
            raise ValueError(f"{where}: model card preprocessing lacks spindle key(s) {missing}; found {sorted(pre)}.")
        return cls(**{k: pre[v] for k, v in keys.items()})


class SpindleFrontEnd:
    """Raw µV at ``srate`` Hz -> standardised 250 Hz signal, causally and chunk by chunk.

    Chain: :class:`StreamingResampler` -> IIR notch at ``line_hz`` -> FIR low-pass ->
    :class:`RunningStandardizer`. Filter states start at the steady state of the first sample.

    Parameters
    ----------
    srate : float
        Input rate in Hz; UnsupportedRateError if it cannot be resampled to 250 Hz.
    settings : FrontEndSettings
    """

    def __init__(self, srate: float, settings: FrontEndSettings | None = None) -> None:
        self.settings = settings or FrontEndSettings()
        s = self.settings
        self.resampler = StreamingResampler(srate)
        self.srate = float(srate)
        if s.line_hz is not None:
            b, a = signal.iirnotch(s.line_hz, 30.0, fs=MODEL_SRATE)
            self._notch_sos: np.ndarray | None = signal.tf2sos(b, a)
        else:
            self._notch_sos = None
        if s.fir_taps < 3 or s.fir_taps % 2 == 0:
            raise ValueError(f"fir_taps must be an odd integer >= 3, got {s.fir_taps!r}.")
        self._fir = signal.firwin(s.fir_taps, s.lowpass_hz, fs=MODEL_SRATE)
        self.standardizer = RunningStandardizer(MODEL_SRATE, s.mean_tau_s, s.var_tau_s)
        self._notch_zi: np.ndarray | None = None
        self._fir_zi: np.ndarray | None = None
        self._n_out = 0

    def reset(self) -> None:
        """Forget all state (a new recording or a discontinuity)."""
        self.resampler.reset()
        self.standardizer.reset()
        self._notch_zi = None
        self._fir_zi = None
        self._n_out = 0

    @property
    def n_output(self) -> int:
        """Number of 250 Hz samples produced so far."""
        return self._n_out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Process the next raw chunk (n_samples,) in µV; return the new 250 Hz samples (float64)."""
        y = self.resampler(x)
        if y.size == 0:
            return y
        self._n_out += y.size
        if self._notch_sos is not None:
            if self._notch_zi is None:
                self._notch_zi = signal.sosfilt_zi(self._notch_sos) * y[0]
            y, self._notch_zi = signal.sosfilt(self._notch_sos, y, zi=self._notch_zi)
        if self._fir_zi is None:
            self._fir_zi = signal.lfilter_zi(self._fir, [1.0]) * y[0]
        y, self._fir_zi = signal.lfilter(self._fir, [1.0], y, zi=self._fir_zi)
        return self.standardizer(y)
