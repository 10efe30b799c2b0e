"""Decoded commands for the task: real EMG of the performed gesture, through LSL, into an EMG decoder.

:class:`EmgReplaySource` is a :class:`~.task.CommandSource`. It holds recorded EMG segments per
gesture (samples × channels, µV, e.g. the steady part of every gesture of the flexemg test
trials). When the virtual participant performs a gesture for one hop, the next samples of that
gesture's segments (cycling through them) are pushed into a real ``pylsl`` outlet stamped on the
simulation clock, pulled back from an inlet, and fed to a :class:`~app.pipeline.Pipeline`
built from the model's card (causal filters, window, hop). The commands it decides are what the
bridge receives - the decoder's errors and its window lag are part of the run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence

import numpy as np
import pylsl

from app.pipeline import Command, FilterSettings, Pipeline, PipelineSettings, select_channels
from decoders.loader import load_decoder

__all__ = ["EmgReplaySource"]


class EmgReplaySource:
    """Replay EMG segments of the performed gesture through LSL -> decoder.

    Parameters
    ----------
    model : path
        EMG decoder (ONNX with card), e.g. from ``closedloop train emg --method lda``.
    segments : mapping of str to list of ndarray
        Per gesture label, EMG segments (n_samples × n_channels, µV) to draw from in order.
    ch_names : sequence of str
        Labels of the segment columns (the model's ``channel_labels`` are selected from them).
    srate : float
        Sampling rate of the segments in Hz (must match the card).
    min_confidence : float
        Passed to the pipeline (labels below it become None).
    pull_timeout_s : float
        Give up waiting for pushed samples to arrive at the inlet after this long (wall clock).
    """

    def __init__(
        self,
        model: str,
        segments: Mapping[str, Sequence[np.ndarray]],
        ch_names: Sequence[str],
        srate: float,
        *,
        min_confidence: float = 0.0,
        pull_timeout_s: float = 5.0,
    ) -> None:
        self.decoder = load_decoder(model)
        card = self.decoder.card
        if abs(card.srate - srate) > 1e-6:
            raise ValueError(f"EMG model {model} expects {card.srate} Hz, the segments are {srate} Hz.")
        missing = [g for g, segs in segments.items() if not segs]
        if missing:
            raise ValueError(f"EMG replay has no segments for gestures {missing}.")
        self.segments = {g: list(s) for g, s in segments.items()}
        self.srate = srate
        self.n_channels = len(ch_names)
        idx = select_channels(list(ch_names), list(card.channel_labels), what=f"EMG model {model}")
        pre = card.preprocessing
        band = pre.get("bandpass_hz")
        filters = FilterSettings(tuple(band) if band else None, int(pre.get("filter_order", 4)), pre.get("notch_hz"))
        settings = PipelineSettings(
            name="emg",
            window_s=card.window_s,
            hop_s=card.hop_s,
            filters=filters,
            catch_up="all",
            min_confidence=min_confidence,
            channel_indices=idx,
        )
        self.pipeline = Pipeline(settings, self.decoder, srate, self.n_channels)
        self.pipeline.virtual_time = True
        self.classes = tuple(card.classes)
        name = f"closedloop-teleop-emg-{uuid.uuid4().hex[:8]}"
        info = pylsl.StreamInfo(name, "EMG", self.n_channels, srate, pylsl.cf_float32, name)
        self.outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
        found = pylsl.resolve_byprop("name", name, 1, 5.0)
        if not found:
            raise RuntimeError(f"EMG replay could not resolve its own LSL stream {name!r} within 5 s.")
        self.inlet = pylsl.StreamInlet(found[0], max_buflen=60, processing_flags=0)
        self.inlet.open_stream(timeout=5.0)
        self.pull_timeout_s = pull_timeout_s
        self._cursor = {g: (0, 0) for g in self.segments}  # (segment index, sample offset)
        self._carry = 0.0
        self.n_samples = 0
        self.transit_s: list[float] = []

    def _take(self, gesture: str, n: int) -> np.ndarray:
        segs = self.segments.get(gesture)
        if segs is None:
            raise KeyError(f"EMG replay has no segments for gesture {gesture!r}; it has {sorted(self.segments)}.")
        out = []
        k, off = self._cursor[gesture]
        while n > 0:
            seg = segs[k]
            m = min(n, seg.shape[0] - off)
            out.append(seg[off : off + m])
            n -= m
            off += m
            if off >= seg.shape[0]:
                k, off = (k + 1) % len(segs), 0
        self._cursor[gesture] = (k, off)
        return np.concatenate(out).astype(np.float32)

    def produce(self, gesture: str, t: float, duration: float) -> list[Command]:
        """Stream ``duration`` s of ``gesture`` EMG through LSL and decode it; returns the commands."""
        exact = duration * self.srate + self._carry
        n = int(exact)
        self._carry = exact - n
        if n == 0:
            return []
        data = self._take(gesture, n)
        first = self.n_samples
        ts = (np.arange(first, first + n) + 1) / self.srate
        t_push = time.perf_counter()
        self.outlet.push_chunk(data, ts.tolist())
        got_x, got_t = [], []
        received = 0
        deadline = time.monotonic() + self.pull_timeout_s
        while received < n:
            x, tt = self.inlet.pull_chunk(timeout=0.05, max_samples=n - received)
            if tt:
                got_x.append(np.asarray(x, dtype=np.float32))
                got_t.append(np.asarray(tt))
                received += len(tt)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"EMG replay: {received}/{n} pushed samples arrived within {self.pull_timeout_s} s.")
        self.transit_s.append(time.perf_counter() - t_push)
        self.n_samples += n
        x_all = np.concatenate(got_x)
        t_all = np.concatenate(got_t) - ts[-1] + t + duration  # LSL stamps -> simulation clock
        return self.pipeline.process(x_all, t_all)

    def close(self) -> None:
        """Close the LSL inlet and outlet."""
        self.inlet.close_stream()
        del self.inlet
        del self.outlet
