"""Thread adapter around a pure :class:`~app.pipeline.Pipeline`.

Two ways to run (``mode``):

``"source"`` (default)
    The pipeline runs *on the acquisition thread*, right after each chunk is written to the
    ring buffer (a :attr:`BufferedStream.listeners` hook): no thread wake-up between a sample's
    arrival and its decision, which is the lowest latency the engine offers. A light watchdog
    thread checks data age. An exception in the pipeline is caught here, reported to the
    session and detaches the pipeline; acquisition (and recording) go on.
``"thread"``
    The pipeline has its own thread that waits on the ring buffer's condition (with a timeout).
    Use it for slow decoders (tens of ms), so they never hold up acquisition.

Either way the runner reads the ring buffer by counter starting from the *newest* data
(fresh by default); a reader that falls behind the buffer is told how many samples it lost.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable

import pylsl

from acquisition.ringbuffer import RingBuffer
from acquisition.source import BufferedStream
from app.pipeline import Command, Pipeline

log = logging.getLogger(__name__)


class PipelineRunner:
    """Run one pipeline on its own thread.

    Parameters
    ----------
    pipeline : Pipeline
    stream : BufferedStream
        Numeric stream the pipeline reads.
    dispatch : callable
        ``dispatch(command)``, called on this runner's thread for every command.
    on_error : callable
        ``on_error(where, exc, traceback_text)`` if the pipeline raises; the thread then ends.
    on_stale : callable
        ``on_stale(runner, age_s)`` when the newest sample becomes older than ``stale_after_s``,
        and ``on_stale(runner, None)`` when fresh data returns.
    stale_after_s : float
        Data age (s) that counts as stale.
    mode : str
        ``"source"`` (decode on the acquisition thread) or ``"thread"`` (own thread).
    on_age : callable, optional
        ``on_age(name, age_s)`` at every data-age check (about every 50 ms, on the runner's
        thread): the Session feeds it to the SafetySupervisor as heartbeat and data age. An
        infinite age means no data yet.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        stream: BufferedStream,
        dispatch: Callable[[Command], None],
        on_error: Callable[[str, BaseException, str], None],
        on_stale: Callable[[PipelineRunner, float | None], None] | None = None,
        stale_after_s: float = 0.5,
        mode: str = "source",
        on_age: Callable[[str, float], None] | None = None,
    ) -> None:
        if not isinstance(stream.buffer, RingBuffer):
            raise TypeError(
                f"pipeline {pipeline.settings.name!r} needs a numeric stream, got marker stream {stream.info.name!r}."
            )
        if mode not in ("source", "thread"):
            raise ValueError(f"pipeline runner mode must be 'source' or 'thread', got {mode!r}.")
        self.mode = mode
        self.pipeline = pipeline
        self.stream = stream
        self.dispatch = dispatch
        self.on_error = on_error
        self.on_stale = on_stale
        self.stale_after_s = stale_after_s
        self.on_age = on_age
        self.n_lost = 0
        self.stale = False
        self.data_age_s = float("nan")
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counter = 0
        self._busy = threading.Lock()  # one chunk at a time; guards only the read position

    @property
    def name(self) -> str:
        """Pipeline name."""
        return self.pipeline.settings.name

    def start(self) -> None:
        """Start reading from the current newest sample."""
        self._stop.clear()
        self._counter = self.stream.buffer.counter
        if self.mode == "source":
            self.stream.listeners.append(self._on_data)
            target = self._watch
        else:
            target = self._run
        self._thread = threading.Thread(target=target, name=f"pipeline:{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Detach from the stream and join the thread."""
        self._stop.set()
        self._detach()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def _detach(self) -> None:
        try:
            self.stream.listeners.remove(self._on_data)
        except ValueError:
            pass  # not attached (thread mode, or already detached after an error)

    def _step(self) -> None:
        """Process everything new in the buffer (caller holds ``_busy``)."""
        buf = self.stream.buffer
        assert isinstance(buf, RingBuffer)  # checked in __init__; narrows the type for mypy
        r = buf.read_since(self._counter)
        self._counter = r.end
        self.n_lost += r.lost
        for cmd in self.pipeline.process(r.data, r.timestamps):
            self.dispatch(cmd)

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self._stop.set()
        self._detach()
        self.on_error(f"pipeline:{self.name}", exc, traceback.format_exc())

    def _on_data(self) -> None:
        # Runs on the acquisition thread: never let a pipeline error escape into acquisition.
        if self._stop.is_set() or not self._busy.acquire(blocking=False):
            return
        try:
            self._step()
        except BaseException as exc:  # noqa: BLE001 - handed to the session, which faults and goes safe
            self._fail(exc)
        finally:
            self._busy.release()

    def _watch(self) -> None:
        buf = self.stream.buffer
        assert isinstance(buf, RingBuffer)
        try:
            while not self._stop.wait(0.05):
                self._check_stale(buf)
        except BaseException as exc:  # noqa: BLE001 - handed to the session, which faults and goes safe
            self._fail(exc)

    def _check_stale(self, buf: RingBuffer) -> None:
        last = buf.last_timestamp
        age = pylsl.local_clock() - last if last == last else float("inf")
        self.data_age_s = age
        if self.on_age is not None:
            self.on_age(self.name, age)
        if age > self.stale_after_s and not self.stale:
            self.stale = True
            if self.on_stale is not None:
                self.on_stale(self, age)
        elif age <= self.stale_after_s and self.stale:
            self.stale = False
            if self.on_stale is not None:
                self.on_stale(self, None)

    def _run(self) -> None:
        buf = self.stream.buffer
        assert isinstance(buf, RingBuffer)  # checked in __init__; narrows the type for mypy
        try:
            while not self._stop.is_set():
                if buf.wait_for(self._counter, timeout=0.05):
                    with self._busy:
                        self._step()
                self._check_stale(buf)
        except BaseException as exc:  # noqa: BLE001 - handed to the session, which faults and goes safe
            self._fail(exc)
