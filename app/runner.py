"""Thread adapter around a pure :class:`~app.pipeline.Pipeline`.

Waits on the source's ring buffer (condition with a timeout), feeds every new chunk to the
pipeline and hands commands to the session. Starts from the *newest* data (fresh by
default); a reader that falls behind the buffer is told how many samples it lost.
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
    """

    def __init__(
        self,
        pipeline: Pipeline,
        stream: BufferedStream,
        dispatch: Callable[[Command], None],
        on_error: Callable[[str, BaseException, str], None],
        on_stale: Callable[[PipelineRunner, float | None], None] | None = None,
        stale_after_s: float = 0.5,
    ) -> None:
        if not isinstance(stream.buffer, RingBuffer):
            raise TypeError(
                f"pipeline {pipeline.settings.name!r} needs a numeric stream, got marker stream {stream.info.name!r}."
            )
        self.pipeline = pipeline
        self.stream = stream
        self.dispatch = dispatch
        self.on_error = on_error
        self.on_stale = on_stale
        self.stale_after_s = stale_after_s
        self.n_lost = 0
        self.stale = False
        self.data_age_s = float("nan")
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        """Pipeline name."""
        return self.pipeline.settings.name

    def start(self) -> None:
        """Start reading from the current newest sample."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"pipeline:{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def _check_stale(self, buf: RingBuffer) -> None:
        last = buf.last_timestamp
        age = pylsl.local_clock() - last if last == last else float("inf")
        self.data_age_s = age
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
        counter = buf.counter
        try:
            while not self._stop.is_set():
                if not buf.wait_for(counter, timeout=0.05):
                    self._check_stale(buf)
                    continue
                r = buf.read_since(counter)
                counter = r.end
                self.n_lost += r.lost
                for cmd in self.pipeline.process(r.data, r.timestamps):
                    self.dispatch(cmd)
                self._check_stale(buf)
        except BaseException as exc:  # noqa: BLE001 - handed to the session, which faults and goes safe
            self.error = exc
            self.on_error(f"pipeline:{self.name}", exc, traceback.format_exc())
