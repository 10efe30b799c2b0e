"""The ``Source`` interface every acquisition back end implements.

A source owns one or more :class:`BufferedStream` objects (numeric streams are backed by a
:class:`~acquisition.ringbuffer.RingBuffer`, marker streams by a :class:`MarkerBuffer`) and
fills them on its own thread. Errors on that thread are never swallowed: they are stored
in :attr:`Source.error` and handed to the ``on_error`` callback (the Session), which puts
outputs in their safe state.
"""

from __future__ import annotations

import logging
import threading
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from acquisition.ringbuffer import RingBuffer
from acquisition.stream import StreamInfo

log = logging.getLogger(__name__)

ErrorCallback = Callable[["Source", BaseException, str], None]
"""Called on the source's own thread as ``on_error(source, exc, traceback_text)``."""


class MarkerBuffer:
    """Lossless, append-only list of string samples with timestamps, readable by counter.

    Marker streams are sparse, so a plain list is kept whole for the session; readers keep
    their own position like with :class:`RingBuffer`.
    """

    def __init__(self, n_channels: int = 1) -> None:
        self.n_channels = n_channels
        self._values: list[list[str]] = []
        self._ts: list[float] = []
        self._cond = threading.Condition()

    @property
    def counter(self) -> int:
        """Number of markers written so far."""
        return len(self._ts)

    def write(self, values: list[list[str]], timestamps: list[float] | np.ndarray) -> int:
        """Append markers; ``values`` is a list of samples, each a list of ``n_channels`` strings."""
        if len(values) != len(timestamps):
            raise ValueError(f"values and timestamps must have equal length, got {len(values)} and {len(timestamps)}.")
        for v in values:
            if len(v) != self.n_channels:
                raise ValueError(f"each marker sample must have {self.n_channels} strings, got {v!r}.")
        with self._cond:
            self._values.extend([list(map(str, v)) for v in values])
            self._ts.extend(float(t) for t in timestamps)
            self._cond.notify_all()
        return self.counter

    def read_since(self, counter: int) -> tuple[list[list[str]], np.ndarray, int]:
        """Return ``(values, timestamps, end)`` of markers written at or after ``counter``."""
        with self._cond:
            end = len(self._ts)
            return self._values[counter:end], np.asarray(self._ts[counter:end], dtype=np.float64), end

    def wait_for(self, counter: int, timeout: float) -> bool:
        """Block until more than ``counter`` markers exist or ``timeout`` s pass."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._ts) > counter, timeout=timeout)


@dataclass
class StreamStats:
    """Counters a source keeps per stream (read by status displays; written by the source thread)."""

    n_samples: int = 0
    n_chunks: int = 0
    n_nonfinite: int = 0
    n_dropouts: int = 0  # times the stream vanished
    n_reacquired: int = 0  # times it came back
    connected: bool = False
    clock_offset: float = 0.0  # s, last LSL time_correction (or mapping offset)
    last_receive_time: float = float("nan")  # local_clock when the last chunk arrived


@dataclass
class BufferedStream:
    """A stream as the engine sees it: metadata, buffer and counters."""

    info: StreamInfo
    buffer: RingBuffer | MarkerBuffer
    stats: StreamStats = field(default_factory=StreamStats)
    listeners: list[Callable[[], None]] = field(default_factory=list)
    """Called on the source thread right after every chunk is written (pipelines that decode in
    line with acquisition). A listener must not raise and must return quickly."""

    @classmethod
    def create(cls, info: StreamInfo, buffer_seconds: float = 30.0) -> BufferedStream:
        """Allocate a buffer suited to ``info`` (``buffer_seconds`` of samples for numeric streams)."""
        if info.is_string:
            return cls(info, MarkerBuffer(info.n_channels))
        capacity = max(1024, int(np.ceil(buffer_seconds * max(info.srate, 1.0))))
        return cls(info, RingBuffer(capacity, info.n_channels, info.srate))

    def push(self, data: np.ndarray | list[list[str]], timestamps: np.ndarray, receive_time: float) -> None:
        """Write one chunk and update the counters (call from the owning source's thread)."""
        n = len(timestamps)
        if n == 0:
            return
        if isinstance(self.buffer, MarkerBuffer):
            self.buffer.write(data, timestamps)  # type: ignore[arg-type]
        else:
            arr = np.asarray(data, dtype=np.float32)
            if not np.isfinite(arr).all():  # count rows only in the rare bad case
                self.stats.n_nonfinite += int(np.count_nonzero(~np.isfinite(arr).all(axis=1)))
            self.buffer.write(arr, timestamps)
        self.stats.n_samples += n
        self.stats.n_chunks += 1
        self.stats.last_receive_time = receive_time
        for listener in tuple(self.listeners):
            listener()


class Source(ABC):
    """Base class of acquisition back ends (LSL, BrainFlow, simulator, XDF replay).

    Lifecycle: ``open()`` (resolve / prepare, fills :attr:`streams`) -> ``start()`` (thread
    running) -> ``stop()`` -> may ``start()`` again. ``close()`` stops and releases.

    Parameters
    ----------
    name : str
        Name of this source in the session (config key).
    on_error : callable, optional
        ``on_error(source, exc, traceback_text)``, called on the source thread when it dies.
    """

    def __init__(self, name: str, on_error: ErrorCallback | None = None) -> None:
        self.name = name
        self.on_error = on_error
        self.streams: dict[str, BufferedStream] = {}
        self.error: BaseException | None = None
        self.error_traceback: str = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.finished = threading.Event()  # set when a finite source (replay) has delivered everything

    @abstractmethod
    def open(self) -> None:
        """Resolve / prepare the device and fill :attr:`streams` (blocking, with a timeout)."""

    @abstractmethod
    def _run(self) -> None:
        """Body of the acquisition thread; return when ``self._stop`` is set."""

    def close(self) -> None:
        """Stop the thread and release the device. Safe to call twice."""
        self.stop()

    @property
    def running(self) -> bool:
        """True while the acquisition thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the acquisition thread (``open()`` is called first if needed)."""
        if self.running:
            raise RuntimeError(f"source {self.name!r} is already running; call stop() first.")
        if not self.streams:
            self.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._guarded_run, name=f"source:{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and join it for at most ``timeout`` s."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("source %r did not stop within %.1f s", self.name, timeout)
        self._thread = None

    def _guarded_run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - handed to the supervisor, never swallowed
            self.error = exc
            self.error_traceback = traceback.format_exc()
            log.error("source %r failed:\n%s", self.name, self.error_traceback)
            for s in self.streams.values():
                s.stats.connected = False
            if self.on_error is not None:
                self.on_error(self, exc, self.error_traceback)

    def primary(self) -> BufferedStream:
        """The first numeric stream (the one pipelines read by default)."""
        for s in self.streams.values():
            if not s.info.is_string:
                return s
        raise RuntimeError(f"source {self.name!r} has no numeric stream; open() it first.")
