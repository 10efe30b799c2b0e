"""The decision pipeline: causal filters -> window (length, hop) -> decoder -> Command.

Everything here is pure and synchronous (STYLE habit 1): :class:`Pipeline.process` takes
the next chunk of samples and returns the commands it produced. Threads, LSL and the
session live in :mod:`app.runner` / :mod:`app.session`. Because decisions are placed on
sample indices (every ``hop`` samples once a window is full), feeding the same samples in
any chunking gives the same decisions (chunk invariance, tested), which is what makes a
replayed recording a deterministic regression test.

Non-finite samples (NaN/Inf)
----------------------------
Policy: a non-finite value never reaches a filter or a decoder. It is counted, replaced
by the last finite value of its channel (sample-and-hold, zero before the first finite
value) so filter state stays finite, and every decision whose window or filter
settling span (one window length before it) contains a replaced sample is *suppressed*
and counted in ``n_suppressed_nonfinite``. The raw NaNs are still recorded, since the
recorder reads the source buffer, not the pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pylsl
from scipy import signal

from acquisition.validation import check_int, check_option, check_positive
from decoders.base import Decoder


@dataclass(frozen=True)
class Command:
    """One decision of a pipeline.

    Attributes
    ----------
    pipeline : str
        Name of the pipeline that issued it.
    seq : int
        Sequence number within that pipeline (0, 1, ...).
    kind : str
        ``"discrete"`` (class + probabilities), ``"continuous"`` (vector) or ``"event"``.
    sample_time : float
        Timestamp (s, ``local_clock``) of the last sample in the decision window.
    issued_time : float
        ``local_clock`` when the command was produced (in fast replay: the virtual clock).
    label : str or None
        Winning class (discrete), event name (event), None (continuous).
    values : tuple of float
        Class probabilities (discrete, in ``classes`` order) or the continuous vector.
    classes : tuple of str
        Names matching ``values``.
    sample_index : int
        Index (0-based, in the pipeline's input) of the last sample in the window.
    """

    pipeline: str
    seq: int
    kind: str
    sample_time: float
    issued_time: float
    label: str | None
    values: tuple[float, ...]
    classes: tuple[str, ...]
    sample_index: int

    @property
    def latency(self) -> float:
        """``issued_time - sample_time`` in s."""
        return self.issued_time - self.sample_time

    @property
    def confidence(self) -> float:
        """Largest probability for discrete commands, NaN otherwise."""
        return max(self.values) if self.kind == "discrete" and self.values else float("nan")

    def to_json(self) -> str:
        """Compact JSON (the payload of the command LSL stream and the recording)."""
        d = {
            "pipeline": self.pipeline,
            "seq": self.seq,
            "kind": self.kind,
            "sample_time": self.sample_time,
            "issued_time": self.issued_time,
            "label": self.label,
            "values": [round(v, 6) for v in self.values],
            "classes": self.classes,
            "sample_index": self.sample_index,
        }
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Command:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        d["values"] = tuple(d["values"])
        d["classes"] = tuple(d["classes"])
        return cls(**d)


@dataclass(frozen=True)
class FilterSettings:
    """Causal IIR filter chain: Butterworth band-pass (or high/low-pass) plus optional notch.

    Parameters
    ----------
    bandpass_hz : (float or None, float or None)
        Pass band edges in Hz; ``(lo, None)`` is a high-pass, ``(None, hi)`` a low-pass,
        ``None`` disables it.
    order : int
        Butterworth order.
    notch_hz : float or None
        Line-noise frequency to notch (Q = 30), e.g. 50.0 or 60.0.
    """

    bandpass_hz: tuple[float | None, float | None] | None = None
    order: int = 4
    notch_hz: float | None = None

    def design(self, srate: float) -> np.ndarray | None:
        """Second-order sections for ``srate`` Hz, or None when no filter is configured."""
        nyq = srate / 2.0
        sos = []
        if self.bandpass_hz is not None:
            lo, hi = self.bandpass_hz
            for edge, nm in ((lo, "low edge"), (hi, "high edge")):
                if edge is not None and not 0 < edge < nyq:
                    raise ValueError(
                        f"filter band-pass {nm} must be between 0 and Nyquist ({nyq} Hz), got {edge} Hz; "
                        "lower it or raise the sampling rate."
                    )
            if lo is not None and hi is not None:
                if lo >= hi:
                    raise ValueError(f"filter band-pass low edge must be below high edge, got {lo} >= {hi} Hz.")
                sos.append(signal.butter(self.order, [lo, hi], "bandpass", fs=srate, output="sos"))
            elif lo is not None:
                sos.append(signal.butter(self.order, lo, "highpass", fs=srate, output="sos"))
            elif hi is not None:
                sos.append(signal.butter(self.order, hi, "lowpass", fs=srate, output="sos"))
        if self.notch_hz is not None:
            if not 0 < self.notch_hz < nyq:
                raise ValueError(f"notch_hz must be between 0 and Nyquist ({nyq} Hz), got {self.notch_hz}.")
            b, a = signal.iirnotch(self.notch_hz, 30.0, fs=srate)
            sos.append(signal.tf2sos(b, a))
        return np.concatenate(sos) if sos else None


class CausalFilter:
    """Stateful SOS filter over samples × channels; state (``zi``) carries from chunk to chunk.

    The state is initialised on the first chunk to the steady state for its first sample,
    which avoids the start-up transient of a DC offset. Chunks of one or two samples (the
    common case for a live stream pulled sample by sample) take a direct transposed-direct-
    form-II update with the same state layout as ``scipy.signal.sosfilt``, avoiding its
    per-call set-up cost (~100 µs); longer chunks go through ``sosfilt``. Both paths are
    tested against one offline ``sosfilt`` call.
    """

    SMALL_CHUNK = 2

    def __init__(self, settings: FilterSettings, srate: float, n_channels: int) -> None:
        self.settings = settings
        self.sos = settings.design(srate)
        self.n_channels = n_channels
        self._zi: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the filter state."""
        self._zi = None

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """Filter ``data`` (n_samples × n_channels) and return float32 of the same shape."""
        if self.sos is None or data.shape[0] == 0:
            return data.astype(np.float32, copy=False)
        x = data.astype(np.float64, copy=False)
        if self._zi is None:
            base = signal.sosfilt_zi(self.sos)  # (n_sections, 2)
            self._zi = base[:, :, None] * x[0][None, None, :]
        if x.shape[0] <= self.SMALL_CHUNK:
            return self._small(x)
        y, self._zi = signal.sosfilt(self.sos, x, axis=0, zi=self._zi)
        return y.astype(np.float32)

    def _small(self, x: np.ndarray) -> np.ndarray:
        sos, zi = self.sos, self._zi
        assert sos is not None and zi is not None  # set by __call__
        out = np.empty(x.shape, dtype=np.float32)
        for i in range(x.shape[0]):
            v = x[i]
            for s in range(sos.shape[0]):
                b0, b1, b2, _, a1, a2 = sos[s]
                z = zi[s]
                y = b0 * v + z[0]
                z[0] = b1 * v - a1 * y + z[1]
                z[1] = b2 * v - a2 * y
                v = y
            out[i] = v
        return out


@dataclass(frozen=True)
class PipelineSettings:
    """How a pipeline cuts and judges the stream.

    Parameters
    ----------
    name : str
        Pipeline name (appears in every command).
    window_s, hop_s : float
        Decision window length and hop in s (converted to samples at the stream rate).
    filters : FilterSettings
        Causal filters applied before windowing.
    catch_up : str
        ``"all"``: decide at every hop point (deterministic; replay). ``"latest"``: when a chunk
        contains several hop points, decide only on the newest and count the skipped ones
        (fresh data by default; live sessions).
    min_confidence : float
        Discrete commands whose top probability is below this get ``label = None``.
    channel_indices : tuple of int, optional
        Columns of the source stream to feed the decoder, in the model's order.
    """

    name: str
    window_s: float
    hop_s: float
    filters: FilterSettings = field(default_factory=FilterSettings)
    catch_up: str = "latest"
    min_confidence: float = 0.0
    channel_indices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_positive(self.window_s, f"pipeline {self.name!r} window_s")
        check_positive(self.hop_s, f"pipeline {self.name!r} hop_s")
        check_option(self.catch_up, ("all", "latest"), f"pipeline {self.name!r} catch_up")


class SlidingWindow:
    """The newest ``length`` samples × channels as a contiguous, read-only view — no copy per decision.

    A mirrored buffer: every sample is stored twice, at ``i`` and ``i + length``, so the newest
    ``length`` samples always sit in one contiguous slice. A decision then hands the decoder a
    view instead of copying the window (256 KB for 1 s of 64 ch at 1 kHz) out of a ring.
    Writes cost twice the (small) chunk. Single-threaded: the pipeline's decoding thread only.

    Parameters
    ----------
    length : int
        Window length in samples.
    n_channels : int
        Channels per sample.
    """

    def __init__(self, length: int, n_channels: int) -> None:
        self.length = check_int(length, "length", minimum=1)
        self._data = np.zeros((2 * length, n_channels), dtype=np.float32)
        self._ts = np.full(2 * length, np.nan, dtype=np.float64)
        self._pos = 0  # next write slot in [0, length)
        self.counter = 0  # samples written so far

    def write(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        """Append ``data`` (n × channels, float32) and their ``timestamps`` (n,)."""
        total = n = data.shape[0]
        if n == 0:
            return
        L = self.length
        if n > L:  # only the newest L samples matter
            data, timestamps = data[n - L :], timestamps[n - L :]
            self._pos = (self._pos + n - L) % L
            n = L
        first = min(n, L - self._pos)
        for lo, hi, src in ((self._pos, self._pos + first, slice(0, first)), (0, n - first, slice(first, n))):
            if hi > lo:
                self._data[lo:hi] = data[src]
                self._data[lo + L : hi + L] = data[src]
                self._ts[lo:hi] = timestamps[src]
                self._ts[lo + L : hi + L] = timestamps[src]
        self._pos = (self._pos + n) % L
        self.counter += total

    def window(self) -> tuple[np.ndarray, float]:
        """The newest ``length`` samples (oldest first) as a read-only view, and the last timestamp (s)."""
        view = self._data[self._pos : self._pos + self.length]
        view.flags.writeable = False
        return view, float(self._ts[self._pos + self.length - 1])


class Pipeline:
    """Causal filters -> sliding window -> decoder -> :class:`Command` (pure, synchronous).

    Parameters
    ----------
    settings : PipelineSettings
    decoder : Decoder
        Called with windows of shape (n_window_samples, n_channels), float32.
    srate : float
        Sampling rate of the input in Hz.
    n_input_channels : int
        Channels of the incoming chunks (before ``channel_indices`` selection).
    clock : callable, optional
        Returns the issue time; defaults to ``pylsl.local_clock``. Setting the attribute
        ``virtual_time = True`` (fast replay) issues each decision at its last sample's
        timestamp instead, so results are reproducible.
    """

    def __init__(
        self,
        settings: PipelineSettings,
        decoder: Decoder,
        srate: float,
        n_input_channels: int,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.decoder = decoder
        self.srate = check_positive(srate, "srate")
        self.n_input_channels = check_int(n_input_channels, "n_input_channels", minimum=1)
        idx = settings.channel_indices
        self._idx = np.asarray(idx, dtype=np.intp) if idx is not None else None
        n_ch = len(idx) if idx is not None else n_input_channels
        self.n_channels = n_ch
        self.window = round(settings.window_s * srate)
        self.hop = max(1, round(settings.hop_s * srate))
        check_int(self.window, "window (samples)", minimum=1)
        self.filter = CausalFilter(settings.filters, srate, n_ch)
        self.clock = clock or pylsl.local_clock
        self.virtual_time = False  # True in fast replay: a decision is issued at its last sample's timestamp
        self.classes = tuple(getattr(getattr(decoder, "card", None), "classes", ()) or ())
        self.kind = getattr(getattr(decoder, "card", None), "output", "discrete")
        self._ring = SlidingWindow(self.window, n_ch)  # the newest filtered window; its counter = samples consumed
        self._hold = np.zeros(n_ch, dtype=np.float32)
        self._last_bad = -(10**12)  # index of the last replaced non-finite sample
        self._seq = 0
        # counters
        self.n_decisions = 0
        self.n_skipped_stale = 0
        self.n_suppressed_nonfinite = 0
        self.n_nonfinite_samples = 0

    @property
    def samples_consumed(self) -> int:
        """Number of input samples processed so far."""
        return self._ring.counter

    def _sanitize(self, x: np.ndarray) -> np.ndarray:
        if np.isfinite(x).all():
            self._hold = x[-1].copy()
            return x
        bad = ~np.isfinite(x)
        x = x.copy()
        rows = np.flatnonzero(bad.any(axis=1))
        self.n_nonfinite_samples += len(rows)
        self._last_bad = self._ring.counter + int(rows[-1])
        for i in range(x.shape[0]):  # sample-and-hold per channel; only on chunks that contain bad values
            row_bad = bad[i]
            if row_bad.any():
                x[i, row_bad] = self._hold[row_bad]
            self._hold = x[i].copy()
        return x

    def process(self, data: np.ndarray, timestamps: np.ndarray) -> list[Command]:
        """Consume the next chunk and return the commands decided within it.

        Parameters
        ----------
        data : ndarray, shape (n_samples, n_input_channels)
        timestamps : ndarray, shape (n_samples,), s on ``local_clock``
        """
        n = data.shape[0]
        if n == 0:
            return []
        if data.ndim != 2 or data.shape[1] != self.n_input_channels:
            raise ValueError(
                f"pipeline {self.settings.name!r} expects chunks of shape (n, {self.n_input_channels}), "
                f"got {data.shape}."
            )
        x = data[:, self._idx] if self._idx is not None else data
        x = self._sanitize(np.asarray(x, dtype=np.float32))
        y = self.filter(x)
        # decision points: absolute sample indices d (0-based) with (d + 1) >= window and (d + 1 - window) % hop == 0
        start, end = self._ring.counter, self._ring.counter + n
        first_d = max(self.window - 1, start)
        offset = (first_d + 1 - self.window) % self.hop
        if offset:
            first_d += self.hop - offset
        points = list(range(first_d, end, self.hop))
        if self.settings.catch_up == "latest" and len(points) > 1:
            self.n_skipped_stale += len(points) - 1
            points = points[-1:]
        commands = []
        for d in points:
            self._ring.write(y[: d + 1 - start], timestamps[: d + 1 - start])
            y, timestamps, start = y[d + 1 - start :], timestamps[d + 1 - start :], d + 1
            cmd = self._decide(d)
            if cmd is not None:
                commands.append(cmd)
        self._ring.write(y, timestamps)
        return commands

    def _decide(self, d: int) -> Command | None:
        if d - self._last_bad < 2 * self.window:
            self.n_suppressed_nonfinite += 1
            return None
        window, sample_time = self._ring.window()
        out = np.asarray(self.decoder.predict(window), dtype=np.float64).ravel()
        issued = sample_time if self.virtual_time else self.clock()
        label: str | None = None
        if self.kind == "discrete" and out.size:
            k = int(np.argmax(out))
            label = self.classes[k] if k < len(self.classes) else str(k)
            if out[k] < self.settings.min_confidence:
                label = None
        elif self.kind == "event" and out.size and out[0] >= 0.5:
            label = self.classes[0] if self.classes else "event"
        cmd = Command(
            pipeline=self.settings.name,
            seq=self._seq,
            kind=self.kind,
            sample_time=sample_time,
            issued_time=float(issued),
            label=label,
            values=tuple(float(v) for v in out),
            classes=self.classes,
            sample_index=d,
        )
        self._seq += 1
        self.n_decisions += 1
        return cmd


def select_channels(available: Sequence[str], wanted: Sequence[str], *, what: str) -> tuple[int, ...]:
    """Indices of ``wanted`` labels within ``available``; ValueError naming the missing ones."""
    missing = [w for w in wanted if w not in available]
    if missing:
        raise ValueError(f"{what}: channels {missing} are not in the stream, which has {list(available)}.")
    return tuple(list(available).index(w) for w in wanted)
