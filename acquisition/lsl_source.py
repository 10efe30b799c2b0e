"""Acquisition from a Lab Streaming Layer stream.

The acquisition thread blocks in ``pull_chunk(min_samples=1)`` (event-driven: it wakes as
soon as one sample arrives and takes whatever else is ready), so the latency it adds is
the wake-up of one thread. Every blocking call carries a timeout.

Dropouts: the inlet is created with ``recover=False`` so that a vanished outlet raises
``pylsl.LostError`` instead of being hidden. The source then counts a dropout, marks the
stream disconnected and re-resolves the same stream every ``reacquire_poll_s`` until it
returns: same name, type and ``source_id`` (name, type and hostname when the outlet has no
source_id), as liblsl's own recovery does. The name is part of the query because one program
may give several outlets the same source_id (mne-lsl's ``PlayerLSL`` gives its
``{name}-annotations`` outlet the main stream's source_id). The time jump is then counted as
a gap by the ring buffer. The Session is never stopped by a dropout; it sees it through
:attr:`StreamStats.connected` and the ``on_event`` callback. A stream that comes back with
another layout (channel count, format, rate or labels) is refused with a RuntimeError that
reaches ``on_error``: its data never mixes with the old layout's in one buffer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LslTimeoutError

from acquisition.lsl import from_lsl_info
from acquisition.source import BufferedStream, ErrorCallback, Source
from acquisition.stream import StreamInfo
from acquisition.validation import check_positive

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict], None]
"""``on_event(kind, details)`` called on the acquisition thread for ``"dropout"`` / ``"reacquired"``."""


def _escape(value: str) -> str:
    if "'" in value:
        raise ValueError(f"LSL query values must not contain single quotes, got {value!r}.")
    return value


def build_predicate(name: str | None = None, type: str | None = None, source_id: str | None = None) -> str:
    """XPath predicate matching every given property (at least one is required)."""
    parts = [f"{k}='{_escape(v)}'" for k, v in (("name", name), ("type", type), ("source_id", source_id)) if v]
    if not parts:
        raise ValueError("an LSL source needs at least one of name, type or source_id; got none.")
    return " and ".join(parts)


def resolve_one(predicate: str, timeout: float) -> pylsl.StreamInfo:
    """Resolve the first stream matching ``predicate`` within ``timeout`` s.

    Raises
    ------
    TimeoutError
        Naming the query and the timeout, with a hint on how to list streams.
    """
    found = pylsl.resolve_bypred(predicate, 1, timeout)
    if not found:
        raise TimeoutError(
            f"no LSL stream matching [{predicate}] appeared within {timeout:.1f} s; "
            "run `closedloop devices` to list the streams on the network."
        )
    return found[0]


class LslSource(Source):
    """Pull one LSL stream into a ring buffer on a background thread.

    Parameters
    ----------
    name : str
        Name of this source in the session.
    stream_name, stream_type, source_id : str, optional
        Resolve by any combination of these LSL properties (at least one).
    resolve_timeout : float
        Seconds to wait for the stream in :meth:`open` (TimeoutError after).
    clock_sync : bool
        Apply LSL clock correction (``proc_clocksync``) so timestamps are on this host's
        ``local_clock``. Keep on unless the outlet runs on the same host and you want raw stamps.
    dejitter : bool
        Smooth timestamps (``proc_dejitter | proc_monotonize``). Off by default: it trades
        accuracy at onsets for smoothness.
    buffer_seconds : float
        Ring buffer length in s.
    max_buffered : int
        Seconds of data liblsl itself buffers in the inlet.
    reacquire_poll_s : float
        Resolve timeout of each re-acquisition attempt after a dropout.
    on_error, on_event : callable, optional
        Error callback (see :class:`~acquisition.source.Source`) and event callback for dropouts.
    """

    def __init__(
        self,
        name: str = "lsl",
        *,
        stream_name: str | None = None,
        stream_type: str | None = None,
        source_id: str | None = None,
        resolve_timeout: float = 5.0,
        clock_sync: bool = True,
        dejitter: bool = False,
        buffer_seconds: float = 30.0,
        max_buffered: int = 360,
        reacquire_poll_s: float = 0.25,
        on_error: ErrorCallback | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        super().__init__(name, on_error)
        self.predicate = build_predicate(stream_name, stream_type, source_id)
        self.resolve_timeout = check_positive(resolve_timeout, "resolve_timeout")
        self.buffer_seconds = check_positive(buffer_seconds, "buffer_seconds")
        self.reacquire_poll_s = check_positive(reacquire_poll_s, "reacquire_poll_s")
        self.max_buffered = int(max_buffered)
        flags = pylsl.proc_threadsafe
        if clock_sync:
            flags |= pylsl.proc_clocksync
        if dejitter:
            flags |= pylsl.proc_dejitter | pylsl.proc_monotonize
        self.processing_flags = flags
        self.on_event = on_event
        self._inlet: pylsl.StreamInlet | None = None
        self._stream: BufferedStream | None = None
        self._reacquire_predicate = self.predicate
        self.time_correction_s = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ setup
    def _make_inlet(self, lsl_info: pylsl.StreamInfo) -> pylsl.StreamInlet:
        inlet = pylsl.StreamInlet(
            lsl_info, max_buflen=self.max_buffered, recover=False, processing_flags=self.processing_flags
        )
        inlet.open_stream(timeout=self.resolve_timeout)
        return inlet

    def open(self) -> None:
        """Resolve the stream, open an inlet and read its full description.

        Calling it again after :meth:`close` reconnects with a new, empty buffer.

        Raises
        ------
        TimeoutError
            If no stream matches within ``resolve_timeout``.
        RuntimeError
            If the acquisition thread is running (``stop()`` first).
        """
        if self.running:
            raise RuntimeError(f"source {self.name!r} is running; call stop() before open().")
        lsl_info = resolve_one(self.predicate, self.resolve_timeout)
        inlet = self._make_inlet(lsl_info)
        full = inlet.info(timeout=self.resolve_timeout)
        info = from_lsl_info(full)
        self._warm_up_clock(inlet)
        if info.source_id:
            self._reacquire_predicate = build_predicate(info.name, info.type, info.source_id)
        else:
            self._reacquire_predicate = (
                build_predicate(info.name, info.type) + f" and hostname='{_escape(full.hostname())}'"
            )
            log.warning(
                "LSL stream %r has no source_id; after a dropout it is re-acquired by name, type and host.", info.name
            )
        self._inlet = inlet
        self._stream = BufferedStream.create(info, self.buffer_seconds)
        self.streams = {info.name: self._stream}
        self._stream.stats.connected = True

    def _warm_up_clock(self, inlet: pylsl.StreamInlet) -> None:
        # The first time_correction waits for liblsl's first clock estimate; do that here, not on the
        # first pulled chunk, so the acquisition thread never blocks on it later.
        try:
            self.time_correction_s = inlet.time_correction(timeout=self.resolve_timeout)
        except LslTimeoutError:
            log.warning(
                "no LSL clock correction for %r within %.1f s; timestamps may be offset",
                self.name,
                self.resolve_timeout,
            )

    def start(self) -> None:
        """Start the acquisition thread (``open()`` is called first if the source was never opened).

        Raises
        ------
        RuntimeError
            If the source is already running, or was closed: call ``open()`` (new buffer) first.
        """
        if self.streams and self._inlet is None and not self.running:
            raise RuntimeError(
                f"source {self.name!r} was closed; call open() to reconnect (with a new buffer) before start()."
            )
        super().start()

    def close(self) -> None:
        """Stop the thread and close the inlet. Safe to call twice.

        The buffers and counters in :attr:`streams` stay readable. To stream again, call
        :meth:`open` (which makes new buffers) and then :meth:`start`; ``start()`` alone on a
        closed source raises RuntimeError.
        """
        self.stop()
        if self._inlet is not None:
            self._inlet.close_stream()
            self._inlet = None

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        stream = self._stream
        if stream is None or self._inlet is None:
            raise RuntimeError(f"source {self.name!r} is not open; call open() before start().")
        info = stream.info
        is_string = info.is_string
        # Up to 4 s per pull: a backlog (samples queued between open() and start(), or after a stall) comes out
        # in one chunk, so a "latest" pipeline decides once on its newest sample instead of on stale pieces.
        max_chunk = max(64, int(info.srate * 4.0)) if info.srate > 0 else 1024
        # Numeric streams are pulled straight into this preallocated array (unused for strings).
        dest = np.empty((0, 0)) if is_string else np.empty((max_chunk, info.n_channels), _np_dtype(info.channel_format))
        next_correction = pylsl.local_clock()
        while not self._stop.is_set():
            inlet = self._inlet
            try:
                if is_string:
                    values, ts = inlet.pull_chunk(timeout=0.1, max_samples=max_chunk, min_samples=1)
                    data = values
                else:
                    # as_numpy: a view of ``dest`` and a float64 timestamp array, no Python lists in between
                    data, ts = inlet.pull_chunk(
                        timeout=0.1, max_samples=max_chunk, dest_obj=dest, min_samples=1, as_numpy=True
                    )
                now = pylsl.local_clock()
                if now >= next_correction:
                    next_correction = now + 5.0
                    try:
                        self.time_correction_s = inlet.time_correction(timeout=0.0)
                        stream.stats.clock_offset = self.time_correction_s
                    except LslTimeoutError:
                        pass  # clock correction is refreshed on the next attempt; data still flows
            except LostError:
                self._handle_dropout(stream)
                continue
            if len(ts):
                stream.push(data, np.asarray(ts, dtype=np.float64), now)

    def _handle_dropout(self, stream: BufferedStream) -> None:
        stream.stats.connected = False
        stream.stats.n_dropouts += 1
        lost_at = pylsl.local_clock()
        log.warning("LSL stream %r lost; re-acquiring [%s]", stream.info.name, self._reacquire_predicate)
        if self.on_event is not None:
            self.on_event("dropout", {"stream": stream.info.name, "time": lost_at})
        if self._inlet is not None:
            self._inlet.close_stream()
        while not self._stop.is_set():
            found = pylsl.resolve_bypred(self._reacquire_predicate, 1, self.reacquire_poll_s)
            if not found:
                continue
            self._check_layout(stream.info, from_lsl_info(found[0]))
            try:
                inlet = self._make_inlet(found[0])
                full = from_lsl_info(inlet.info(timeout=self.resolve_timeout))  # with desc: labels
                self._check_layout(stream.info, full, labels=True)
                self._warm_up_clock(inlet)
            except (LostError, LslTimeoutError) as exc:
                # The outlet vanished again (or did not answer) while connecting: keep looking.
                log.warning("LSL stream %r did not reconnect (%s); retrying", stream.info.name, exc)
                continue
            self._inlet = inlet
            stream.stats.connected = True
            stream.stats.n_reacquired += 1
            back_at = pylsl.local_clock()
            log.warning("LSL stream %r re-acquired after %.2f s", stream.info.name, back_at - lost_at)
            if self.on_event is not None:
                self.on_event("reacquired", {"stream": stream.info.name, "time": back_at, "after_s": back_at - lost_at})
            return

    @staticmethod
    def _check_layout(old: StreamInfo, new: StreamInfo, *, labels: bool = False) -> None:
        """Refuse a returning stream whose samples would not fit the old buffer or mean the same.

        ``labels`` compares channel labels too (only meaningful for the full info from the inlet:
        a resolved info carries no ``desc``).
        """
        if (new.n_channels, new.channel_format) != (old.n_channels, old.channel_format):
            raise RuntimeError(
                f"LSL stream {old.name!r} came back with {new.n_channels} channels of "
                f"{new.channel_format}, but it had {old.n_channels} of {old.channel_format}; "
                "refusing to mix them in one buffer. Restart the session to accept the new layout."
            )
        if new.srate != old.srate:
            raise RuntimeError(
                f"LSL stream {old.name!r} came back at {new.srate:g} Hz, but it had {old.srate:g} Hz; "
                "refusing to mix them in one buffer. Restart the session to accept the new rate."
            )
        if labels and new.labels != old.labels:
            raise RuntimeError(
                f"LSL stream {old.name!r} came back with channels {new.labels}, but it had {old.labels}; "
                "refusing to mix them in one buffer. Restart the session to accept the new channels."
            )


def _np_dtype(fmt: str) -> type:
    return {
        "float32": np.float32,
        "double64": np.float64,
        "int8": np.int8,
        "int16": np.int16,
        "int32": np.int32,
        "int64": np.int64,
    }[fmt]


def list_lsl_streams(wait_time: float = 1.0) -> list[dict]:
    """Describe every LSL stream visible within ``wait_time`` s (for ``closedloop devices``)."""
    out = []
    for s in pylsl.resolve_streams(wait_time):
        out.append(
            {
                "name": s.name(),
                "type": s.type(),
                "channels": s.channel_count(),
                "srate": s.nominal_srate(),
                "source_id": s.source_id(),
                "hostname": s.hostname(),
            }
        )
    return out
