"""Driver of the stimulator interface box (``firmware/``) over a serial port, with pyserial.

:class:`SerialStimulator` speaks :mod:`stimulation.protocol`: every method sends one command and
waits for its ACK (returned) or NACK (raised as :class:`StimulatorNackError` naming the command,
the reason and what to do). A heartbeat thread keeps the device's watchdog fed at a fixed rate
scheduled on absolute deadlines; if the host stops (crash, hang, cable pulled) the firmware turns
every output off within its watchdog time (90 ms) and latches a fault.

Threads (all daemon threads, named ``stimbox-*``):

- reader: reads the port, decodes frames (:class:`~stimulation.protocol.StreamDecoder`), hands
  replies to the waiting caller and events to ``on_event`` and the event queue;
- writer: the only thread that writes the port; commands are queued in order with their sequence
  numbers, so the device always sees increasing seqs even with the heartbeat thread interleaving;
- heartbeat (while started): HEARTBEAT every ``1 / heartbeat_hz`` s.

A failure in any of them (port error, device gone, heartbeat refused or unanswered) is passed to
``on_error`` on that thread and logged; a port failure also fails every waiting and later call
with :class:`StimulatorLinkError`. The device's own watchdog is what makes that fail closed.

Tested against ``firmware/build/stimbox-sim`` on a pseudo-terminal (tests/test_firmware.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import serial

from acquisition.validation import check_int, check_positive, check_type
from stimulation.protocol import (
    N_CHANNELS,
    PROTOCOL_VERSION,
    Ack,
    Cmd,
    DeviceState,
    Event,
    Fault,
    Frame,
    HelloInfo,
    Nack,
    NackReason,
    ProtocolError,
    SetChannel,
    StatusInfo,
    StreamDecoder,
    Trigger,
    decode_reply,
    encode_command,
)
from stimulation.stimulator import (
    ChannelState,
    Stimulator,
    StimulatorError,
    StimulatorLinkError,
    StimulatorStatus,
    StimulatorTimeoutError,
)
from stimulation.stimulator import StimulatorNackError as _BaseNackError

__all__ = [
    "HeartbeatAck",
    "SerialStimulator",
    "StimulatorError",
    "StimulatorLinkError",
    "StimulatorNackError",
    "StimulatorTimeoutError",
    "TimedEvent",
]

log = logging.getLogger(__name__)

_ALL_CHANNELS = 0xFF
_READ_POLL_S = 0.05

#: What to do about each refusal, for error messages.
_FIX: dict[NackReason, str] = {
    NackReason.BAD_FRAMING: "the frame was damaged on the line; check the port and cable, then retry",
    NackReason.BAD_CRC: "the frame was corrupted on the line; check the port and cable, then retry",
    NackReason.BAD_VERSION: "host and firmware protocol versions differ; update one of them",
    NackReason.UNKNOWN_CMD: "the firmware does not know this command; update the firmware",
    NackReason.BAD_LENGTH: "host and firmware disagree on the payload; update one of them",
    NackReason.SEQUENCE: "sequence numbers are out of step; call hello() to resynchronise",
    NackReason.BAD_ARG: "pass a valid value (see SerialStimulator.info for channel and line counts)",
    NackReason.LIMIT: "the firmware's hard limits cannot be raised from the host; request a lower value "
    "(limits in SerialStimulator.info)",
    NackReason.NOT_ARMED: "call arm() first",
    NackReason.FAULT_LATCHED: "a fault is latched; resolve its cause, call clear_fault(), then arm() again",
    NackReason.NOT_CONFIGURED: "call set_channel() for that channel first",
}


class StimulatorNackError(_BaseNackError):
    """The device refused a command.

    Attributes
    ----------
    nack : Nack
        The refusal as received.
    reason : NackReason
        Machine-readable reason code.
    detail : int
        Reason-specific detail (:class:`~stimulation.protocol.Field`, fault cause, channel...).
    state : DeviceState
        Device state reported with the refusal.
    """

    def __init__(self, message: str, command: Cmd, nack: Nack) -> None:
        super().__init__(message, command)
        self.nack = nack
        self.reason = nack.reason
        self.detail = nack.detail
        self.state = nack.state


@dataclass(frozen=True)
class HeartbeatAck:
    """An acknowledged heartbeat.

    Parameters
    ----------
    device_ms : int
        Device time at which the heartbeat was taken, ms (device clock, u32).
    sent_s : float
        Host ``time.monotonic()`` just before the frame was queued, s.
    received_s : float
        Host ``time.monotonic()`` when the ACK was decoded, s.
    """

    device_ms: int
    sent_s: float
    received_s: float


@dataclass(frozen=True)
class TimedEvent:
    """A device EVENT with the host time it was decoded.

    Parameters
    ----------
    event : Event
        The event (``event.t_ms`` is the device's own timestamp of the change, ms).
    received_s : float
        Host ``time.monotonic()`` when it was decoded, s.
    """

    event: Event
    received_s: float


@dataclass
class _Pending:
    cmd: Cmd
    done: threading.Event = field(default_factory=threading.Event)
    reply: Ack | Nack | None = None
    error: StimulatorError | None = None
    received_s: float = 0.0


def _to_wire(value: Any, scale: float, bits: int, name: str, unit: str) -> int:
    v = check_positive(value, name, allow_zero=True)
    wire = round(v * scale)
    top = (1 << bits) - 1
    if wire > top:
        raise ValueError(
            f"{name} must be at most {top / scale:g} {unit} to fit the protocol's {bits}-bit field, got {value!r}."
        )
    return int(wire)


def _mask(channels: int | Iterable[int], name: str) -> int:
    if isinstance(channels, int) and not isinstance(channels, bool):
        chans: list[int] = [channels]
    else:
        chans = list(check_type(channels, (list, tuple, set, frozenset, range), name))
    mask = 0
    for c in chans:
        check_int(c, f"{name} entry", minimum=0)
        if c >= 8:
            raise ValueError(f"{name} entries must be channel indices 0..7 (8-bit mask), got {c!r}.")
        mask |= 1 << c
    if mask == 0:
        raise ValueError(f"{name} must name at least one channel, got {channels!r}.")
    return mask


class SerialStimulator(Stimulator):
    """The stimulator interface box over a serial port.

    Opening the port sends HELLO (which also resynchronises sequence numbers) and keeps the
    device's identity and hard limits in :attr:`info`. Use as a context manager, or call
    :meth:`close`, which stops the heartbeat and sends STIM_OFF + DISARM best-effort.

    Parameters
    ----------
    port : str
        Serial port path (e.g. ``/dev/ttyACM0`` or the pty path printed by ``stimbox-sim``).
    timeout_s : float
        How long each command waits for its reply, s.
    baudrate : int
        UART rate (ignored by pseudo-terminals and USB CDC).
    heartbeat_hz : float
        Default rate of :meth:`start_heartbeat`, Hz. The firmware watchdog is 90 ms, so 50 Hz
        (20 ms) tolerates one heartbeat late by up to 70 ms (a busy interpreter can hold the
        heartbeat thread back by tens of ms; 20 Hz left only 40 ms and tripped under load).
    on_event : callable, optional
        Called with every :class:`TimedEvent` on the reader thread (keep it short; exceptions are
        passed to ``on_error``). Events are also queued for :meth:`next_event`.
    on_error : callable, optional
        Called with the exception when a background thread fails (reader, writer, heartbeat), on
        that thread. Wire it to the safety supervisor's fault path.

    Attributes
    ----------
    info : HelloInfo
        Identity and hard limits from the last HELLO.
    decoder : StreamDecoder
        The reply stream decoder (``decoder.bad`` counts corrupted device frames by reason).
    last_heartbeat : HeartbeatAck or None
        The latest acknowledged heartbeat (device and host times).
    last_event : TimedEvent or None
        The latest EVENT.
    heartbeats_sent, heartbeats_failed, heartbeat_deadlines_missed : int
        Heartbeat thread counters.
    unmatched_replies, bad_replies : int
        Replies that matched no waiting command (late after a timeout, framing NACKs) and
        replies that did not decode.

    Raises
    ------
    serial.SerialException
        When the port cannot be opened.
    StimulatorError
        When HELLO fails (no device, wrong protocol version).
    """

    def __init__(
        self,
        port: str,
        *,
        timeout_s: float = 0.1,
        baudrate: int = 115200,
        heartbeat_hz: float = 50.0,
        on_event: Callable[[TimedEvent], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        check_type(port, str, "port")
        self.timeout_s = check_positive(timeout_s, "timeout_s")
        self._heartbeat_hz = check_positive(heartbeat_hz, "heartbeat_hz")
        check_int(baudrate, "baudrate", minimum=1)
        self.port = port
        self.name = f"stimbox:{port}"
        self._on_event = on_event
        self._on_error = on_error
        self._lock = threading.Lock()  # guards _seq, _pending and the order of _txq puts only
        self._seq = 0
        self._pending: dict[int, _Pending] = {}
        self._txq: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._events: queue.SimpleQueue[TimedEvent] = queue.SimpleQueue()  # lossless; drain it
        self._failure: StimulatorError | None = None
        self._closing = threading.Event()
        self._closed = False
        self.decoder = StreamDecoder()
        self.unmatched_replies = 0
        self.bad_replies = 0
        self.last_event: TimedEvent | None = None
        self.last_heartbeat: HeartbeatAck | None = None
        self.heartbeats_sent = 0
        self.heartbeats_failed = 0
        self.heartbeat_deadlines_missed = 0
        self.n_refused: dict[str, int] = {}  # NACKs received, by NackReason name
        self._hb_thread: threading.Thread | None = None
        self._hb_stop = threading.Event()
        self.info: HelloInfo | None = None

        self._serial = serial.Serial(port, baudrate=baudrate, timeout=_READ_POLL_S, write_timeout=1.0)
        self._serial.reset_input_buffer()
        self._reader = threading.Thread(target=self._read_loop, name="stimbox-reader", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="stimbox-writer", daemon=True)
        self._reader.start()
        self._writer.start()
        opened = False
        try:
            self.info = self.hello()
            opened = True
        finally:
            if not opened:  # no threads or port left behind by a failed open
                self._shutdown_threads()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> SerialStimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def close(self) -> None:
        """Stop the heartbeat, send STIM_OFF (all) and DISARM best-effort, release the port.

        Failures of the two commands are logged, not raised (the device watchdog turns outputs off
        anyway once heartbeats stop). Safe to call twice.
        """
        if self._closed:
            return
        self.stop_heartbeat()
        if self._failure is None:
            for cmd, args in ((Cmd.STIM_OFF, _ALL_CHANNELS), (Cmd.DISARM, None)):
                try:
                    self._request(cmd, args)
                except StimulatorError as exc:
                    log.warning(
                        "close(): %s on %s failed (%s); the device watchdog will turn outputs off",
                        cmd.name,
                        self.port,
                        exc,
                    )
        self._shutdown_threads()

    def _shutdown_threads(self) -> None:
        self._closing.set()
        self._txq.put(None)
        me = threading.current_thread()  # close() may run inside on_error on an I/O thread
        if self._writer is not me:
            self._writer.join(timeout=2.0)
        with contextlib.suppress(serial.SerialException, OSError, AttributeError):
            self._serial.cancel_read()  # else the read poll timeout ends the loop within 50 ms
        if self._reader is not me:
            self._reader.join(timeout=2.0)
        self._serial.close()
        self._closed = True
        self._fail_pending(StimulatorLinkError(f"{self.name} is closed", None))

    # ------------------------------------------------------------------ commands
    def hello(self) -> HelloInfo:
        """HELLO: identity and hard limits; resynchronises sequence numbers.

        Raises
        ------
        StimulatorError
            On refusal, timeout or link failure; also when the device's protocol version differs.
        """
        ack = self._request(Cmd.HELLO)
        try:
            info = HelloInfo.unpack(ack.data)
        except ProtocolError as exc:
            raise StimulatorError(f"HELLO: malformed identity from {self.port}: {exc}", Cmd.HELLO) from exc
        if info.protocol_version != PROTOCOL_VERSION:
            raise StimulatorError(
                f"HELLO: device speaks protocol {info.protocol_version}, this driver {PROTOCOL_VERSION}; "
                "update the firmware or the host",
                Cmd.HELLO,
            )
        self.info = info
        return info

    def arm(self) -> Ack:
        """ARM: allow stimulation; starts the device watchdog (heartbeats needed from now on)."""
        return self._request(Cmd.ARM)

    def disarm(self) -> Ack:
        """DISARM: every output off, device disarmed (a latched fault stays latched)."""
        return self._request(Cmd.DISARM)

    def set_channel(self, channel: int, *, current_ma: float, pulse_width_us: float, frequency_hz: float) -> Ack:
        """SET_CHANNEL: pulse parameters of one channel (takes effect at once if it is on).

        Values are rounded to the wire units (1 µA, 1 µs, 0.1 Hz). The device refuses values
        above its hard limits (:class:`StimulatorNackError`, reason LIMIT, detail = the field)
        and changes nothing then. A higher current is reached by the device's ramp.

        Parameters
        ----------
        channel : int
            Channel index, 0..n_channels-1.
        current_ma : float
            Phase amplitude, mA.
        pulse_width_us : float
            Phase width, µs.
        frequency_hz : float
            Pulse rate, Hz (> 0).
        """
        ch = check_int(channel, "channel", minimum=0)
        if ch > 0xFF:
            raise ValueError(f"channel must fit the protocol's 8-bit field (0..255), got {channel!r}.")
        args = SetChannel(
            channel=ch,
            pulse_width_us=_to_wire(pulse_width_us, 1.0, 16, "pulse_width_us", "µs"),
            current_ua=_to_wire(current_ma, 1000.0, 32, "current_ma", "mA"),
            frequency_dhz=_to_wire(frequency_hz, 10.0, 16, "frequency_hz", "Hz"),
        )
        return self._request(Cmd.SET_CHANNEL, args)

    def stim_on(self, channels: int | Iterable[int]) -> Ack:
        """STIM_ON: start the given channel(s) (one index or several); each ramps up from 0 mA."""
        return self._request(Cmd.STIM_ON, _mask(channels, "channels"))

    def stim_off(self, channels: int | Iterable[int] | None = None) -> Ack:
        """STIM_OFF: stop the given channel(s), or every channel when ``channels`` is None."""
        return self._request(Cmd.STIM_OFF, _ALL_CHANNELS if channels is None else _mask(channels, "channels"))

    def heartbeat(self) -> HeartbeatAck:
        """HEARTBEAT: feed the device watchdog; returns the device time it was taken at."""
        sent = time.monotonic()
        ack, received = self._request_timed(Cmd.HEARTBEAT, None)
        if len(ack.data) != 4:
            raise StimulatorError(f"HEARTBEAT: ACK carries {len(ack.data)} data bytes, expected 4", Cmd.HEARTBEAT)
        hb = HeartbeatAck(int.from_bytes(ack.data, "little"), sent, received)
        self.last_heartbeat = hb
        return hb

    def estop(self) -> Ack:
        """ESTOP: every output and trigger off now; latches FAULT(ESTOP) until :meth:`clear_fault`."""
        return self._request(Cmd.ESTOP)

    def clear_fault(self) -> Ack:
        """CLEAR_FAULT: leave FAULT for DISARMED (outputs stay off until arm() and stim_on())."""
        return self._request(Cmd.CLEAR_FAULT)

    def status(self) -> StatusInfo:
        """STATUS: state, per-channel target and applied values, counters of refused frames."""
        ack = self._request(Cmd.STATUS)
        return StatusInfo.unpack(ack.state, ack.data)

    def stimulator_status(self) -> StimulatorStatus:
        """STATUS, in the driver-independent form of :class:`~stimulation.stimulator.Stimulator`."""
        st = self.status()
        channels = tuple(
            ChannelState(
                current_ma=c.applied_ua / 1000.0 if c.on else 0.0,
                target_ma=c.target_ua / 1000.0,
                pulse_width_us=float(c.pulse_width_us),
                frequency_hz=c.frequency_dhz / 10.0,
                on=c.on,
            )
            for c in st.channels
        )
        return StimulatorStatus(
            state=st.state.name.lower(),
            fault=None if st.fault is Fault.NONE else st.fault.name.lower(),
            channels=channels,
            outputs=st.outputs,
            details={
                "t_ms": st.t_ms,
                "heartbeat_age_ms": st.heartbeat_age_ms,
                "rx_ok": st.rx_ok,
                "rejected": {r.name: n for r, n in st.rejected.items() if n},
            },
        )

    def trigger(self, line: int, duration_ms: int) -> Ack:
        """TRIGGER: hold trigger ``line`` (0: audio gate, 1: TTL) high for ``duration_ms`` ms (armed only)."""
        check_int(line, "line", minimum=0)
        check_int(duration_ms, "duration_ms", minimum=0)
        if line > 0xFF or duration_ms > 0xFFFF:
            raise ValueError(f"line must be 0..255 and duration_ms 0..65535, got {line!r} and {duration_ms!r}.")
        return self._request(Cmd.TRIGGER, Trigger(line, duration_ms))

    def safe_state(self, reason: str) -> None:
        """Safety-supervisor hook: stop every channel now (STIM_OFF all), waiting at most ``timeout_s``.

        Raises
        ------
        StimulatorError
            When the device did not confirm (the supervisor then latches a fault; the device
            watchdog still turns outputs off once heartbeats stop).
        """
        log.info("%s: safe state (%s)", self.name, reason)
        self._request(Cmd.STIM_OFF, _ALL_CHANNELS)

    def send_raw(self, data: bytes) -> None:
        """Queue raw bytes for the port, in order with commands (diagnostics and tests only)."""
        check_type(data, (bytes, bytearray), "data")
        self._check_usable(None)
        self._txq.put(bytes(data))

    # ------------------------------------------------------------------ events
    def next_event(self, timeout_s: float = 0.0) -> TimedEvent | None:
        """The oldest queued event, waiting up to ``timeout_s`` s; None if none arrived."""
        try:
            return self._events.get(timeout=timeout_s) if timeout_s > 0 else self._events.get_nowait()
        except queue.Empty:
            return None

    def wait_event(self, predicate: Callable[[Event], bool], timeout_s: float) -> TimedEvent | None:
        """Consume queued events until one satisfies ``predicate`` (others are dropped); None on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            ev = self.next_event(max(remaining, 0.0))
            if ev is None:
                return None
            if predicate(ev.event):
                return ev

    def drain_events(self) -> list[TimedEvent]:
        """Every queued event, oldest first; the queue is left empty."""
        out: list[TimedEvent] = []
        while (ev := self.next_event()) is not None:
            out.append(ev)
        return out

    # ------------------------------------------------------------------ heartbeat
    @property
    def heartbeat_running(self) -> bool:
        """True while the heartbeat thread runs."""
        return self._hb_thread is not None and self._hb_thread.is_alive()

    def start_heartbeat(self, rate_hz: float | None = None) -> None:
        """Start sending HEARTBEAT at ``rate_hz`` (default: the constructor's ``heartbeat_hz``).

        Deadlines are absolute (``start + k / rate``); a missed deadline is skipped and counted in
        :attr:`heartbeat_deadlines_missed`, never made up with a burst. Failures go to ``on_error``.

        Raises
        ------
        RuntimeError
            When the heartbeat is already running or the driver is closed.
        """
        rate = self._heartbeat_hz if rate_hz is None else check_positive(rate_hz, "rate_hz")
        self._check_usable(Cmd.HEARTBEAT)
        if self.heartbeat_running:
            raise RuntimeError("heartbeat is already running; call stop_heartbeat() before starting it again.")
        self._hb_stop = threading.Event()
        self._hb_thread = threading.Thread(
            target=self._heartbeat_loop, args=(1.0 / rate, self._hb_stop), name="stimbox-heartbeat", daemon=True
        )
        self._hb_thread.start()

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat thread (returns once it has sent its last heartbeat). Safe if not running."""
        thread = self._hb_thread
        if thread is None:
            return
        self._hb_stop.set()
        if thread is not threading.current_thread():
            thread.join(timeout=max(2.0, 3 * self.timeout_s))
        self._hb_thread = None

    def _heartbeat_loop(self, period_s: float, stop: threading.Event) -> None:
        next_t = time.monotonic()
        while not stop.is_set():
            try:
                self.heartbeat()
                self.heartbeats_sent += 1
            except StimulatorError as exc:
                self.heartbeats_failed += 1
                self._report(exc, "heartbeat")
                if isinstance(exc, StimulatorLinkError):
                    return
            next_t += period_s
            now = time.monotonic()
            if next_t <= now:
                skipped = math.floor((now - next_t) / period_s) + 1
                self.heartbeat_deadlines_missed += skipped
                next_t += skipped * period_s
            stop.wait(next_t - now)

    # ------------------------------------------------------------------ internals
    def _check_usable(self, cmd: Cmd | None) -> None:
        if self._failure is not None:
            what = cmd.name if cmd is not None else "send"
            raise StimulatorLinkError(f"{what}: the link to {self.port} has failed ({self._failure})", cmd)
        if self._closed or self._closing.is_set():
            what = cmd.name if cmd is not None else "send"
            raise StimulatorLinkError(f"{what}: {self.name} is closed; open a new SerialStimulator", cmd)

    def _request(self, cmd: Cmd, args: SetChannel | Trigger | int | None = None) -> Ack:
        return self._request_timed(cmd, args)[0]

    def _request_timed(self, cmd: Cmd, args: SetChannel | Trigger | int | None) -> tuple[Ack, float]:
        self._check_usable(cmd)
        slot = _Pending(cmd)
        with self._lock:
            self._seq = self._seq % 0xFFFF + 1  # 1..65535: seq 0 is what framing NACKs carry
            seq = self._seq
            wire = encode_command(cmd, seq, args)  # a few µs; the seq must be encoded in queue order
            self._pending[seq] = slot
            self._txq.put(wire)  # in seq order: the device refuses a seq behind the last one
        if not slot.done.wait(self.timeout_s):
            with self._lock:
                self._pending.pop(seq, None)
            raise StimulatorTimeoutError(
                f"{cmd.name} (seq {seq}): no reply from {self.port} within {self.timeout_s * 1000:.0f} ms; "
                "check that the device is connected and running",
                cmd,
            )
        if slot.error is not None:
            raise slot.error
        reply = slot.reply
        if isinstance(reply, Nack):
            # every refusal is logged with its reason (acceptance: refused commands are logged)
            log.warning(
                "%s: %s (seq %d) refused: %s (state %s)", self.name, cmd.name, seq, reply.describe(), reply.state.name
            )
            self.n_refused[reply.reason.name] = self.n_refused.get(reply.reason.name, 0) + 1
            raise StimulatorNackError(
                f"{cmd.name} refused by the device: {reply.describe()} (state {reply.state.name}); "
                f"{_FIX.get(reply.reason, 'see stimulation.protocol.NackReason')}",
                cmd,
                reply,
            )
        if not isinstance(reply, Ack):
            raise StimulatorError(f"{cmd.name}: reply slot completed without a reply (driver bug)", cmd)
        return reply, slot.received_s

    def _fail_pending(self, error: StimulatorError) -> None:
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for slot in pending:
            slot.error = error
            slot.done.set()

    def _report(self, exc: BaseException, where: str) -> None:
        log.error("%s: %s failed: %s", self.name, where, exc)
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:  # a broken handler must not kill the I/O thread
                log.exception("%s: on_error handler raised", self.name)

    def _link_failed(self, exc: BaseException, where: str) -> None:
        if self._closing.is_set():
            return
        err = StimulatorLinkError(f"{where} on {self.port} failed: {exc}", None)
        self._failure = err
        self._fail_pending(err)
        self._report(err, where)

    def _write_loop(self) -> None:
        while True:
            data = self._txq.get()
            if data is None:
                return
            try:
                self._serial.write(data)
            except (serial.SerialException, OSError) as exc:
                self._link_failed(exc, "serial write")
                return

    def _read_loop(self) -> None:
        while not self._closing.is_set():
            try:
                data = self._serial.read(max(1, self._serial.in_waiting))
            except (serial.SerialException, OSError, TypeError) as exc:
                # TypeError: pyserial's read on a port closed under it
                self._link_failed(exc, "serial read")
                return
            if not data:
                continue
            received = time.monotonic()
            for frame in self.decoder.feed(data):
                self._dispatch(frame, received)

    def _dispatch(self, frame: Frame, received: float) -> None:
        try:
            reply = decode_reply(frame)
        except ProtocolError as exc:
            self.bad_replies += 1
            log.warning("%s: undecodable reply dropped: %s", self.name, exc)
            return
        if isinstance(reply, Event):
            timed = TimedEvent(reply, received)
            self.last_event = timed
            self._events.put(timed)
            if self._on_event is not None:
                try:
                    self._on_event(timed)
                except Exception as exc:  # noqa: BLE001 - reported to on_error; the link itself is fine
                    self._report(exc, "on_event handler")
            return
        with self._lock:
            slot = self._pending.pop(reply.seq, None)
        if slot is None:
            self.unmatched_replies += 1  # a late reply after a timeout, or a framing NACK (seq 0)
            return
        slot.reply = reply
        slot.received_s = received
        slot.done.set()

    # ------------------------------------------------------------------ conveniences
    @property
    def outputs(self) -> int:
        """Output bit mask from the latest EVENT (0 before any)."""
        ev = self.last_event
        return 0 if ev is None else ev.event.outputs

    @property
    def device_state(self) -> DeviceState | None:
        """Device state from the latest EVENT (None before any)."""
        ev = self.last_event
        return None if ev is None else ev.event.state

    @property
    def device_fault(self) -> Fault | None:
        """Latched fault from the latest EVENT (None before any)."""
        ev = self.last_event
        return None if ev is None else ev.event.fault

    @property
    def n_channels(self) -> int:
        """Channels the device reported in HELLO."""
        return self.info.n_channels if self.info is not None else N_CHANNELS
