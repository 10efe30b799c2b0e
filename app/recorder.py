"""Session recorder: every input stream, every command and every session event into one XDF file.

Reads the sources' ring buffers by counter (no copy of anything already written), takes
commands and events from a lossless queue, and hands whole chunks to the
:class:`~acquisition.xdf_writer.XdfWriter` at least every ``flush_interval_s`` (≤ 1 s), so a
crash loses at most that much. Numeric streams are recorded as float32, the dtype the
engine holds them in; timestamps are kept as float64 on ``local_clock``.

If a reader falls behind a ring buffer (it should not: the buffers hold 30 s by default),
the lost sample count is written as a ``recorder_overflow`` event rather than hidden.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pylsl

from acquisition.ringbuffer import RingBuffer
from acquisition.source import BufferedStream, MarkerBuffer
from acquisition.stream import StreamInfo
from acquisition.xdf_writer import XdfWriter
from app.pipeline import Command

log = logging.getLogger(__name__)

COMMANDS_STREAM = StreamInfo.simple(
    "closedloop-commands",
    "Markers",
    ["command"],
    0.0,
    channel_format="string",
    source_id="closedloop-recorder-commands",
)
EVENTS_STREAM = StreamInfo.simple(
    "closedloop-events", "Markers", ["event"], 0.0, channel_format="string", source_id="closedloop-recorder-events"
)


class Recorder:
    """Write the session to an XDF file.

    Parameters
    ----------
    path : str or Path
        Output file (parent folders are created; an existing file is refused).
    streams : list of BufferedStream
        Streams to record from the start of their buffers.
    flush_interval_s : float
        Maximum time between writes, in s (≤ 1).
    on_error : callable, optional
        ``on_error(exc, traceback_text)`` if the writer thread fails (disk full...).
    from_now : bool
        Start each stream at its buffer's current write position instead of its first sample
        (a recording started on a session that is already running).
    """

    def __init__(
        self,
        path: str | Path,
        streams: list[BufferedStream],
        *,
        flush_interval_s: float = 0.25,
        on_error: Callable[[BaseException, str], None] | None = None,
        from_now: bool = False,
    ) -> None:
        if not 0 < flush_interval_s <= 1.0:
            raise ValueError(f"flush_interval_s must be in (0, 1] s, got {flush_interval_s}.")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_interval_s = flush_interval_s
        self.on_error = on_error
        self._writer = XdfWriter(self.path)
        self._streams: list[tuple[BufferedStream, int]] = []
        self._pos: list[int] = []
        for s in streams:
            info = s.info if s.info.is_string else dataclasses.replace(s.info, channel_format="float32")
            self._streams.append((s, self._writer.add_stream(info)))
            self._pos.append(s.buffer.counter if from_now else 0)
        self._cmd_id = self._writer.add_stream(COMMANDS_STREAM)
        self._evt_id = self._writer.add_stream(EVENTS_STREAM)
        self._queue: queue.SimpleQueue[tuple[int, str, float]] = queue.SimpleQueue()  # lossless
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # serialises poll() between the thread and close()
        self._last_boundary = self._last_offsets = pylsl.local_clock() - 10.0
        self.n_lost = 0
        self.n_commands = 0
        self.n_events = 0
        self.closed = False

    # -------------------------------------------------------------- producers
    def add_command(self, command: Command) -> None:
        """Queue a command (any thread; never blocks)."""
        self._queue.put((self._cmd_id, command.to_json(), command.issued_time))

    def add_event(self, kind: str, details: dict | None = None, timestamp: float | None = None) -> None:
        """Queue a session event, e.g. ``("dropout", {"stream": ...})`` (any thread; never blocks)."""
        t = pylsl.local_clock() if timestamp is None else timestamp
        payload = json.dumps({"event": kind, **(details or {})}, default=str)
        self._queue.put((self._evt_id, payload, t))

    # ------------------------------------------------------------------ writer
    def poll(self) -> None:
        """Write everything new (called by the thread, or directly in fast replay)."""
        with self._lock:
            if self.closed:
                return
            for i, (s, sid) in enumerate(self._streams):
                buf = s.buffer
                if isinstance(buf, RingBuffer):
                    while True:
                        r = buf.read_since(self._pos[i], max_samples=65536)
                        if r.lost:
                            self.n_lost += r.lost
                            self.add_event("recorder_overflow", {"stream": s.info.name, "lost_samples": r.lost})
                        self._pos[i] = r.end
                        if len(r) == 0:
                            break
                        self._writer.write_samples(sid, r.data, r.timestamps)
                elif isinstance(buf, MarkerBuffer):
                    values, ts, end = buf.read_since(self._pos[i])
                    self._pos[i] = end
                    if values:
                        self._writer.write_samples(sid, values, ts)
            self._drain_queue()
            now = pylsl.local_clock()
            if now - self._last_offsets >= 5.0:
                # Timestamps are already on this host's local_clock (LSL inputs are clock-corrected at
                # ingestion), so the offset is 0; writing it (like LabRecorder, every 5 s) tells readers so.
                for sid in [*(sid for _, sid in self._streams), self._cmd_id, self._evt_id]:
                    self._writer.write_clock_offset(sid, now, 0.0)
                self._last_offsets = now
            if now - self._last_boundary > 10.0:
                self._writer.write_boundary()
                self._last_boundary = now

    def _drain_queue(self) -> None:
        pending: dict[int, tuple[list[list[str]], list[float]]] = {}
        while True:
            try:
                sid, text, t = self._queue.get_nowait()
            except queue.Empty:
                break
            vals, ts = pending.setdefault(sid, ([], []))
            vals.append([text])
            ts.append(t)
        for sid, (vals, ts) in pending.items():
            self._writer.write_samples(sid, vals, np.asarray(ts))
            if sid == self._cmd_id:
                self.n_commands += len(vals)
            else:
                self.n_events += len(vals)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.flush_interval_s):
                self.poll()
        except BaseException as exc:  # noqa: BLE001 - reported to the session, which goes to a safe state
            log.error("recorder failed:\n%s", traceback.format_exc())
            if self.on_error is not None:
                self.on_error(exc, traceback.format_exc())

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread, write what is left, and close the file with stream footers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.closed:
            return
        self.poll()
        with self._lock:
            self._writer.close()
            self.closed = True
