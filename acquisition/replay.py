"""Replay of a recorded XDF session into the engine, and optionally onto the LSL network.

Three modes:

- **real time** (``speed=1``) or scaled (``speed=X``): a thread pushes every stream's samples
  when their (scaled) time comes, paced against absolute deadlines on ``local_clock``.
  Timestamps are re-based onto the current ``local_clock``: ``t0 + (t - t_first) / speed``,
  so the rest of the engine sees a live session.
- **as fast as possible** (:meth:`ReplaySource.iter_chunks`): the caller pulls chunks in
  timestamp order with their *original* timestamps and drives the pipeline synchronously —
  deterministic, used by ``Session.run_fast`` for regression tests.
- **LSL republishing** (``lsl=True``): every stream, empty ones included, gets an outlet with
  its original name, type, source_id, format, rate and channel metadata, and samples are
  pushed with the re-based timestamps. Before pushing, the source waits up to
  ``wait_consumers_s`` for every non-empty stream to have a consumer, and keeps the outlets
  alive ``linger_s`` after the end so consumers can drain them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pylsl

from acquisition.lsl import make_outlet
from acquisition.source import BufferedStream, ErrorCallback, Source
from acquisition.validation import check_positive
from acquisition.xdf_reader import RecordedStream, XdfTruncatedWarning, read_xdf

log = logging.getLogger(__name__)


class ReplaySource(Source):
    """Play an XDF file as if its streams were live.

    Parameters
    ----------
    name : str
        Source name in the session.
    path : str or Path
        The XDF recording.
    speed : float
        Playback speed (1 = real time).
    lsl : bool
        Also republish every stream as an LSL outlet.
    wait_consumers_s : float
        With ``lsl``, wait up to this long (s) for consumers before starting.
    linger_s : float
        With ``lsl``, keep outlets open this long (s) after the last sample.
    chunk_s : float
        Pacing period (s).
    """

    def __init__(
        self,
        name: str,
        path: str | Path,
        *,
        speed: float = 1.0,
        lsl: bool = False,
        wait_consumers_s: float = 0.0,
        linger_s: float = 1.0,
        chunk_s: float = 0.01,
        on_error: ErrorCallback | None = None,
        buffer_seconds: float = 30.0,
    ) -> None:
        super().__init__(name, on_error)
        self.path = Path(path)
        self.speed = check_positive(speed, "speed")
        self.lsl = lsl
        self.wait_consumers_s = check_positive(wait_consumers_s, "wait_consumers_s", allow_zero=True)
        self.linger_s = check_positive(linger_s, "linger_s", allow_zero=True)
        self.chunk_s = check_positive(chunk_s, "chunk_s")
        self.buffer_seconds = buffer_seconds
        self.recorded: list[RecordedStream] = []
        self.truncation_warning: str | None = None
        self._outlets: dict[str, pylsl.StreamOutlet] = {}
        self._mono: list[np.ndarray] = []
        self.t_first = float("nan")
        self.t0 = float("nan")

    @property
    def duration_s(self) -> float:
        """Recording length in s (first to last sample over all streams)."""
        ends = [r.timestamps[-1] for r in self.recorded if r.n_samples]
        return float(max(ends) - self.t_first) if ends else 0.0

    def open(self) -> None:
        """Read the file (clear error if missing, corrupt or not XDF) and create the streams."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", XdfTruncatedWarning)
            self.recorded = read_xdf(self.path)
        for w in caught:
            if issubclass(w.category, XdfTruncatedWarning):
                self.truncation_warning = str(w.message)
                log.warning("%s", w.message)
        if not self.recorded:
            raise ValueError(f"replay file {str(self.path)!r} contains no streams; nothing to play.")
        names = [r.info.name for r in self.recorded]
        self.streams = {}
        for r in self.recorded:
            key = r.info.name if names.count(r.info.name) == 1 else f"{r.info.name}#{r.stream_id}"
            cap = max(self.buffer_seconds, 2.0 * self.chunk_s)
            self.streams[key] = BufferedStream.create(r.info, cap)
        # Search keys for pacing: recorded LSL stamps may step back slightly; never let that reorder playback.
        self._mono = [np.maximum.accumulate(r.timestamps) if r.n_samples else r.timestamps for r in self.recorded]
        firsts = [r.timestamps[0] for r in self.recorded if r.n_samples]
        self.t_first = float(min(firsts)) if firsts else 0.0
        if self.lsl:
            self._outlets = {k: make_outlet(r.info) for k, r in zip(self.streams, self.recorded, strict=True)}

    def close(self) -> None:
        """Stop and drop the outlets."""
        super().close()
        self._outlets = {}

    def _wait_for_consumers(self) -> None:
        if not self._outlets or self.wait_consumers_s <= 0:
            return
        deadline = pylsl.local_clock() + self.wait_consumers_s
        for (key, outlet), r in zip(self._outlets.items(), self.recorded, strict=True):
            if r.n_samples == 0:
                continue
            left = deadline - pylsl.local_clock()
            if left <= 0 or not outlet.wait_for_consumers(left):
                log.warning(
                    "replay: no consumer for LSL stream %r within %.1f s; playing anyway", key, self.wait_consumers_s
                )

    def _run(self) -> None:
        self._wait_for_consumers()
        pos = [0] * len(self.recorded)
        keys = list(self.streams)
        self.t0 = t0 = pylsl.local_clock()
        for s in self.streams.values():
            s.stats.connected = True
        rel = [(m - self.t_first) / self.speed for m in self._mono]
        tick = 0
        while not self._stop.is_set():
            now = pylsl.local_clock()
            elapsed = now - t0
            done = True
            for i, r in enumerate(self.recorded):
                end = int(np.searchsorted(rel[i], elapsed, side="right"))
                if end > pos[i]:
                    self._emit(keys[i], r, pos[i], end, t0 + rel[i][pos[i] : end], now)
                    pos[i] = end
                done = done and pos[i] >= r.n_samples
            if done:
                break
            tick += 1
            self._stop.wait(max(0.0, t0 + tick * self.chunk_s - pylsl.local_clock()))
        self.finished.set()
        if self._outlets and not self._stop.is_set():
            self._stop.wait(self.linger_s)

    def _emit(self, key: str, r: RecordedStream, a: int, b: int, ts: np.ndarray, now: float) -> None:
        data = r.data[a:b]
        self.streams[key].push(data, ts, now)
        outlet = self._outlets.get(key)
        if outlet is not None:
            payload = data if isinstance(data, list) else np.ascontiguousarray(data)
            outlet.push_chunk(payload, ts.tolist())

    def iter_chunks(self, chunk_s: float = 0.1) -> Iterator[tuple[str, np.ndarray | list[list[str]], np.ndarray]]:
        """Yield ``(stream_key, data, timestamps)`` in timestamp order with original timestamps.

        Chunks cover consecutive ``chunk_s`` spans of recording time; used for deterministic,
        as-fast-as-possible replay.
        """
        if not self.recorded:
            self.open()
        check_positive(chunk_s, "chunk_s")
        keys = list(self.streams)
        pos = [0] * len(self.recorded)
        mono = self._mono
        t = self.t_first
        end_t = self.t_first + self.duration_s
        while t <= end_t:
            t += chunk_s
            for i, r in enumerate(self.recorded):
                end = int(np.searchsorted(mono[i], t, side="right"))
                if end > pos[i]:
                    yield keys[i], r.data[pos[i] : end], r.timestamps[pos[i] : end]
                    pos[i] = end
