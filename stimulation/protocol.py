"""Wire protocol of the stimulator interface box, in Python (mirror of ``firmware/src/protocol.h``).

A frame on the wire is ``COBS(raw) + b"\\x00"`` where ``raw`` is::

    version u8 | seq u16 LE | cmd u8 | payload (0..128 bytes) | crc u16 LE

and ``crc`` is CRC-16/CCITT-FALSE (polynomial 0x1021, init 0xFFFF, no reflection, no final XOR)
over every raw byte before it. Multi-byte fields are little-endian. Units on the wire: current
in microamperes (µA, u32), pulse width in microseconds (µs, u16), frequency in decihertz
(0.1 Hz, u16), durations and device timestamps in milliseconds (ms).

Commands (host -> device) and their payloads:

============  ====  ============================================================
command       code  payload
============  ====  ============================================================
HELLO         0x01  (none) - also resets the device's sequence window
ARM           0x02  (none)
DISARM        0x03  (none)
SET_CHANNEL   0x04  channel u8, pulse_width_us u16, current_ua u32, frequency_dhz u16
STIM_ON       0x05  channel_mask u8
STIM_OFF      0x06  channel_mask u8 (bits of absent channels are ignored)
HEARTBEAT     0x07  (none)
ESTOP         0x08  (none)
STATUS        0x09  (none)
TRIGGER       0x0A  line u8, duration_ms u16
CLEAR_FAULT   0x0B  (none)
============  ====  ============================================================

Replies (device -> host): every command gets exactly one ``ACK`` (0x80: req_cmd u8, status u8,
state u8, data) or ``NACK`` (0x81: req_cmd u8, reason u8, detail u8, state u8) carrying the
command's seq. ``EVENT`` frames (0x82: t_ms u32, changed u8, state u8, fault u8, outputs u8,
triggers u8) are unsolicited, sent whenever the state, fault, output mask or trigger mask
changes, before the reply that caused it; their seq is the device's own event counter.

Everything here is pure and synchronous: no I/O, no threads. :class:`StreamDecoder` is the
resumable byte-stream side (feed it whatever a serial read returned).
"""

from __future__ import annotations

import binascii
import struct
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import TypeVar

__all__ = [
    "CRC_LEN",
    "HEADER_LEN",
    "MAX_PAYLOAD",
    "MAX_RAW",
    "MAX_WIRE",
    "MIN_RAW",
    "N_CHANNELS",
    "N_TRIGGERS",
    "PROTOCOL_VERSION",
    "Ack",
    "AckStatus",
    "ChannelStatus",
    "Cmd",
    "CobsError",
    "DeviceState",
    "Event",
    "EventFlag",
    "Fault",
    "Field",
    "Frame",
    "FrameError",
    "HelloInfo",
    "Nack",
    "NackReason",
    "ProtocolError",
    "ReplyCode",
    "SetChannel",
    "StatusInfo",
    "StreamDecoder",
    "Trigger",
    "build_raw",
    "cobs_decode",
    "cobs_encode",
    "crc16_ccitt_false",
    "decode_command",
    "decode_reply",
    "encode_ack",
    "encode_command",
    "encode_event",
    "encode_frame",
    "encode_nack",
    "parse_raw",
]

PROTOCOL_VERSION = 1
HEADER_LEN = 4
CRC_LEN = 2
MAX_PAYLOAD = 128
MIN_RAW = HEADER_LEN + CRC_LEN
MAX_RAW = HEADER_LEN + MAX_PAYLOAD + CRC_LEN
#: Largest frame on the wire, delimiter included (COBS adds 1 byte per 254, plus 1).
MAX_WIRE = MAX_RAW + MAX_RAW // 254 + 1 + 1
N_CHANNELS = 4
N_TRIGGERS = 2

_ALL_BITS = 0xFF
_E = TypeVar("_E", bound=IntEnum)


class Cmd(IntEnum):
    """Command codes (host -> device)."""

    HELLO = 0x01
    ARM = 0x02
    DISARM = 0x03
    SET_CHANNEL = 0x04
    STIM_ON = 0x05
    STIM_OFF = 0x06
    HEARTBEAT = 0x07
    ESTOP = 0x08
    STATUS = 0x09
    TRIGGER = 0x0A
    CLEAR_FAULT = 0x0B


class ReplyCode(IntEnum):
    """Reply codes (device -> host)."""

    ACK = 0x80
    NACK = 0x81
    EVENT = 0x82


class AckStatus(IntEnum):
    """ACK status byte."""

    OK = 0  #: the command took effect
    NO_CHANGE = 1  #: accepted; the device already was in the requested state


class NackReason(IntEnum):
    """NACK reason byte; ``STATUS.rejected`` counts frames by these."""

    BAD_FRAMING = 1  #: COBS malformed, frame too long, or shorter than header + CRC
    BAD_CRC = 2  #: CRC mismatch (seq/cmd echoed as received, untrusted)
    BAD_VERSION = 3  #: version byte is not PROTOCOL_VERSION; detail = version received
    UNKNOWN_CMD = 4  #: not a command code
    BAD_LENGTH = 5  #: payload length wrong for the command; detail = length received
    SEQUENCE = 6  #: seq repeats or is behind the last accepted one (send HELLO to resync)
    BAD_ARG = 7  #: a field is invalid; detail = :class:`Field`
    LIMIT = 8  #: a compiled-in hard limit would be exceeded; detail = :class:`Field`
    NOT_ARMED = 9  #: STIM_ON / TRIGGER while disarmed
    FAULT_LATCHED = 10  #: a fault is latched; detail = :class:`Fault`
    NOT_CONFIGURED = 11  #: STIM_ON on a channel never set; detail = channel


class Field(IntEnum):
    """NACK detail for ``BAD_ARG`` and ``LIMIT``: the offending field."""

    NONE = 0
    CHANNEL = 1
    PULSE_WIDTH = 2
    CURRENT = 3
    FREQUENCY = 4
    CHARGE = 5
    CHANNEL_MASK = 6
    TRIGGER_LINE = 7
    DURATION = 8


class DeviceState(IntEnum):
    """Device state byte."""

    DISARMED = 0
    ARMED = 1
    STIMULATING = 2
    FAULT = 3


class Fault(IntEnum):
    """Latched fault cause."""

    NONE = 0
    ESTOP = 1
    WATCHDOG = 2


class EventFlag(IntFlag):
    """What an EVENT reports as changed."""

    STATE = 0x01
    FAULT = 0x02
    OUTPUTS = 0x04
    TRIGGERS = 0x08


class ProtocolError(ValueError):
    """Bytes that are not a valid frame or payload.

    Attributes
    ----------
    reason : NackReason
        The reason the device would give for the same bytes.
    """

    def __init__(self, message: str, reason: NackReason = NackReason.BAD_FRAMING) -> None:
        super().__init__(message)
        self.reason = reason


class CobsError(ProtocolError):
    """Malformed COBS data (an empty frame, a zero byte inside, or a block past the end)."""


class FrameError(ProtocolError):
    """A frame that fails a protocol check (length, CRC, version, code, payload length)."""


# ---------------------------------------------------------------------------------- primitives


def crc16_ccitt_false(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data``.

    Parameters
    ----------
    data : bytes-like
        The bytes to check.
    crc : int
        Running value to continue from (0xFFFF to start).

    Returns
    -------
    int
        The CRC, 0..0xFFFF. ``crc16_ccitt_false(b"123456789") == 0x29B1``.

    Notes
    -----
    Computed by :func:`binascii.crc_hqx` (the standard library's C implementation of the
    non-reflected 0x1021 polynomial), which equals CRC-16/CCITT-FALSE when started at 0xFFFF.
    """
    return binascii.crc_hqx(data, crc)


def cobs_encode(data: bytes | bytearray | memoryview) -> bytes:
    """COBS-encode ``data`` (Cheshire & Baker 1999); the result holds no zero byte.

    Parameters
    ----------
    data : bytes-like
        Any bytes, zeros included.

    Returns
    -------
    bytes
        The encoded block, without the 0x00 delimiter; at most ``len(data) + len(data) // 254 + 1``
        bytes. A trailing run of exactly 254 non-zero bytes gets no extra 0x01 code byte (as in
        the reference vectors and the firmware).
    """
    out = bytearray()
    view = bytes(data)
    n = len(view)
    start = 0
    while True:
        zero = view.find(0, start, min(n, start + 254))
        if zero >= 0:  # a block ending at a zero
            out.append(zero - start + 1)
            out += view[start:zero]
            start = zero + 1
            continue
        end = min(n, start + 254)
        run = end - start
        if run == 254:  # a full block: no implied zero
            out.append(0xFF)
            out += view[start:end]
            start = end
            if start == n:
                return bytes(out)
            continue
        out.append(run + 1)
        out += view[start:end]
        return bytes(out)


def cobs_decode(data: bytes | bytearray | memoryview) -> bytes:
    """Decode one COBS block (delimiter not included).

    Parameters
    ----------
    data : bytes-like
        The encoded frame without its 0x00 delimiter.

    Returns
    -------
    bytes
        The decoded bytes.

    Raises
    ------
    CobsError
        When ``data`` is empty, holds a 0x00, or a code byte points past the end.
    """
    src = bytes(data)
    if not src:
        raise CobsError("COBS frame is empty (two delimiters in a row carry no frame).")
    if 0 in src:
        raise CobsError(f"COBS frame holds a 0x00 byte at offset {src.index(0)}; 0x00 is only a delimiter.")
    out = bytearray()
    i = 0
    n = len(src)
    while i < n:
        code = src[i]
        end = i + code
        if end > n:
            raise CobsError(f"COBS code byte {code:#04x} at offset {i} runs {end - n} byte(s) past the frame end.")
        out += src[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


# ---------------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Parameters
    ----------
    seq : int
        Sequence number, 0..65535 (a command's seq; an EVENT's event counter).
    cmd : int
        Command or reply code (:class:`Cmd` / :class:`ReplyCode`; any u8 for raw tests).
    payload : bytes
        0..:data:`MAX_PAYLOAD` bytes.
    version : int
        Protocol version byte.
    """

    seq: int
    cmd: int
    payload: bytes = b""
    version: int = PROTOCOL_VERSION


def _check_u(value: int, bits: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be int, got {type(value).__name__} ({value!r}).")
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must fit an unsigned {bits}-bit field (0..{(1 << bits) - 1}), got {value!r}.")
    return value


def build_raw(frame: Frame) -> bytes:
    """``header | payload | crc`` of ``frame`` (no COBS), as the CRC sees it.

    Raises
    ------
    TypeError, ValueError
        When a header field does not fit its wire width or the payload exceeds :data:`MAX_PAYLOAD`.
    """
    _check_u(frame.version, 8, "version")
    _check_u(frame.seq, 16, "seq")
    _check_u(frame.cmd, 8, "cmd")
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError(f"payload must be at most {MAX_PAYLOAD} bytes, got {len(frame.payload)}.")
    body = struct.pack("<BHB", frame.version, frame.seq, frame.cmd) + bytes(frame.payload)
    return body + struct.pack("<H", crc16_ccitt_false(body))


def encode_frame(frame: Frame) -> bytes:
    """Wire form of ``frame``: ``COBS(raw) + b"\\x00"`` (at most :data:`MAX_WIRE` bytes)."""
    return cobs_encode(build_raw(frame)) + b"\x00"


def parse_raw(raw: bytes | bytearray | memoryview) -> Frame:
    """Check a COBS-decoded frame (length, CRC, version) and return it.

    Raises
    ------
    FrameError
        ``reason`` BAD_FRAMING (shorter than header + CRC, or longer than :data:`MAX_RAW`),
        BAD_CRC or BAD_VERSION - checked in that order, as the firmware does.
    """
    data = bytes(raw)
    if len(data) < MIN_RAW:
        raise FrameError(f"frame has {len(data)} bytes, fewer than header + CRC ({MIN_RAW}).", NackReason.BAD_FRAMING)
    if len(data) > MAX_RAW:
        raise FrameError(f"frame has {len(data)} bytes, more than the maximum {MAX_RAW}.", NackReason.BAD_FRAMING)
    body, (crc,) = data[:-CRC_LEN], struct.unpack("<H", data[-CRC_LEN:])
    want = crc16_ccitt_false(body)
    if crc != want:
        raise FrameError(f"CRC mismatch: frame says {crc:#06x}, bytes give {want:#06x}.", NackReason.BAD_CRC)
    version, seq, cmd = struct.unpack("<BHB", body[:HEADER_LEN])
    if version != PROTOCOL_VERSION:
        raise FrameError(f"protocol version {version} is not the supported {PROTOCOL_VERSION}.", NackReason.BAD_VERSION)
    return Frame(seq=seq, cmd=cmd, payload=body[HEADER_LEN:], version=version)


# ---------------------------------------------------------------------------------- command payloads


@dataclass(frozen=True)
class SetChannel:
    """SET_CHANNEL payload, in wire units.

    Parameters
    ----------
    channel : int
        Channel index (the device has :data:`N_CHANNELS`).
    pulse_width_us : int
        Phase width, µs (u16).
    current_ua : int
        Phase amplitude, µA (u32).
    frequency_dhz : int
        Pulse rate, 0.1 Hz units (u16).
    """

    channel: int
    pulse_width_us: int
    current_ua: int
    frequency_dhz: int

    FORMAT = struct.Struct("<BHIH")

    def pack(self) -> bytes:
        """The 9-byte payload (raises ``ValueError`` when a value does not fit its field)."""
        _check_u(self.channel, 8, "channel")
        _check_u(self.pulse_width_us, 16, "pulse_width_us")
        _check_u(self.current_ua, 32, "current_ua")
        _check_u(self.frequency_dhz, 16, "frequency_dhz")
        return self.FORMAT.pack(self.channel, self.pulse_width_us, self.current_ua, self.frequency_dhz)

    @classmethod
    def unpack(cls, payload: bytes) -> SetChannel:
        """Parse a 9-byte payload (``FrameError`` BAD_LENGTH otherwise)."""
        _need_len(payload, cls.FORMAT.size, "SET_CHANNEL")
        return cls(*cls.FORMAT.unpack(payload))


@dataclass(frozen=True)
class Trigger:
    """TRIGGER payload.

    Parameters
    ----------
    line : int
        Trigger line (0: audio gate, 1: TTL out).
    duration_ms : int
        How long the line stays high, ms (u16).
    """

    line: int
    duration_ms: int

    FORMAT = struct.Struct("<BH")

    def pack(self) -> bytes:
        """The 3-byte payload (raises ``ValueError`` when a value does not fit its field)."""
        _check_u(self.line, 8, "line")
        _check_u(self.duration_ms, 16, "duration_ms")
        return self.FORMAT.pack(self.line, self.duration_ms)

    @classmethod
    def unpack(cls, payload: bytes) -> Trigger:
        """Parse a 3-byte payload (``FrameError`` BAD_LENGTH otherwise)."""
        _need_len(payload, cls.FORMAT.size, "TRIGGER")
        return cls(*cls.FORMAT.unpack(payload))


CommandArgs = SetChannel | Trigger | int | None

#: Payload length of every command.
COMMAND_PAYLOAD_LEN: dict[Cmd, int] = {
    Cmd.HELLO: 0,
    Cmd.ARM: 0,
    Cmd.DISARM: 0,
    Cmd.SET_CHANNEL: SetChannel.FORMAT.size,
    Cmd.STIM_ON: 1,
    Cmd.STIM_OFF: 1,
    Cmd.HEARTBEAT: 0,
    Cmd.ESTOP: 0,
    Cmd.STATUS: 0,
    Cmd.TRIGGER: Trigger.FORMAT.size,
    Cmd.CLEAR_FAULT: 0,
}


def _need_len(payload: bytes, n: int, what: str) -> None:
    if len(payload) != n:
        raise FrameError(f"{what} payload must be {n} bytes, got {len(payload)}.", NackReason.BAD_LENGTH)


def encode_command(cmd: Cmd, seq: int, args: CommandArgs = None) -> bytes:
    """Wire bytes of one command.

    Parameters
    ----------
    cmd : Cmd
        The command.
    seq : int
        Sequence number, 0..65535.
    args : SetChannel | Trigger | int | None
        :class:`SetChannel` for SET_CHANNEL, :class:`Trigger` for TRIGGER, the channel bit mask
        (int, 0..255) for STIM_ON / STIM_OFF, ``None`` for the others.

    Raises
    ------
    TypeError
        When ``args`` is not what ``cmd`` takes.
    ValueError
        When a value does not fit its wire field.
    """
    cmd = Cmd(cmd)
    if cmd is Cmd.SET_CHANNEL:
        if not isinstance(args, SetChannel):
            raise TypeError(f"SET_CHANNEL needs a SetChannel argument, got {type(args).__name__}.")
        payload = args.pack()
    elif cmd is Cmd.TRIGGER:
        if not isinstance(args, Trigger):
            raise TypeError(f"TRIGGER needs a Trigger argument, got {type(args).__name__}.")
        payload = args.pack()
    elif cmd in (Cmd.STIM_ON, Cmd.STIM_OFF):
        payload = bytes([_check_u(args, 8, f"{cmd.name} channel mask")])  # type: ignore[arg-type]
    else:
        if args is not None:
            raise TypeError(f"{cmd.name} takes no argument, got {args!r}.")
        payload = b""
    return encode_frame(Frame(seq=seq, cmd=int(cmd), payload=payload))


def decode_command(frame: Frame) -> tuple[Cmd, CommandArgs]:
    """The command and its arguments in a frame (the device's view).

    Raises
    ------
    FrameError
        ``reason`` UNKNOWN_CMD or BAD_LENGTH.
    """
    try:
        cmd = Cmd(frame.cmd)
    except ValueError:
        raise FrameError(f"{frame.cmd:#04x} is not a command code.", NackReason.UNKNOWN_CMD) from None
    _need_len(frame.payload, COMMAND_PAYLOAD_LEN[cmd], cmd.name)
    if cmd is Cmd.SET_CHANNEL:
        return cmd, SetChannel.unpack(frame.payload)
    if cmd is Cmd.TRIGGER:
        return cmd, Trigger.unpack(frame.payload)
    if cmd in (Cmd.STIM_ON, Cmd.STIM_OFF):
        return cmd, frame.payload[0]
    return cmd, None


# ---------------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Ack:
    """ACK reply.

    Parameters
    ----------
    seq : int
        The acknowledged command's seq.
    req_cmd : int
        The acknowledged command's code.
    status : AckStatus
        OK or NO_CHANGE.
    state : DeviceState
        Device state after the command.
    data : bytes
        Command-specific data (HELLO: :class:`HelloInfo`; HEARTBEAT: device t_ms u32;
        STATUS: :class:`StatusInfo`).
    """

    seq: int
    req_cmd: int
    status: AckStatus
    state: DeviceState
    data: bytes = b""


@dataclass(frozen=True)
class Nack:
    """NACK reply.

    Parameters
    ----------
    seq : int
        The refused frame's seq (0 for a COBS-level framing error; untrusted for BAD_CRC).
    req_cmd : int
        The refused frame's code (as received).
    reason : NackReason
        Why.
    detail : int
        Reason-specific detail (:class:`Field`, :class:`Fault`, a channel, a length or a version).
    state : DeviceState
        Device state (unchanged by the refused frame, except a watchdog trip found on arrival).
    """

    seq: int
    req_cmd: int
    reason: NackReason
    detail: int
    state: DeviceState

    def describe(self) -> str:
        """Reason and detail in words, e.g. ``"LIMIT (CURRENT)"``."""
        if self.reason in (NackReason.BAD_ARG, NackReason.LIMIT):
            return f"{self.reason.name} ({_name(Field, self.detail)})"
        if self.reason is NackReason.FAULT_LATCHED:
            return f"{self.reason.name} ({_name(Fault, self.detail)})"
        if self.reason is NackReason.NOT_CONFIGURED:
            return f"{self.reason.name} (channel {self.detail})"
        if self.reason in (NackReason.BAD_LENGTH, NackReason.BAD_VERSION):
            return f"{self.reason.name} (received {self.detail})"
        return self.reason.name


@dataclass(frozen=True)
class Event:
    """Unsolicited EVENT: the device's state changed.

    Parameters
    ----------
    seq : int
        Device event counter (wraps at 65536; a gap means events were lost).
    t_ms : int
        Device time of the change, ms since device boot (u32, wraps).
    changed : EventFlag
        What changed.
    state : DeviceState
        New state.
    fault : Fault
        Latched fault cause.
    outputs : int
        Bit mask of channels delivering pulses.
    triggers : int
        Bit mask of trigger lines high.
    """

    seq: int
    t_ms: int
    changed: EventFlag
    state: DeviceState
    fault: Fault
    outputs: int
    triggers: int

    FORMAT = struct.Struct("<IBBBBB")


@dataclass(frozen=True)
class HelloInfo:
    """HELLO data: identity and the device's compiled-in hard limits.

    Parameters
    ----------
    protocol_version, fw_major, fw_minor : int
        Versions.
    n_channels, n_triggers : int
        Channel and trigger-line counts.
    max_current_ua : int
        Current limit, µA.
    max_pulse_width_us : int
        Pulse width limit, µs.
    max_frequency_dhz : int
        Frequency limit, 0.1 Hz.
    max_charge_nc : int
        Charge-per-phase limit (current × pulse width), nC.
    ramp_ua_per_ms : int
        Largest current rise per 1 ms tick, µA.
    watchdog_ms : int
        Outputs go off this long after the last heartbeat, ms.
    max_trigger_ms : int
        Longest trigger pulse, ms.
    """

    protocol_version: int
    fw_major: int
    fw_minor: int
    n_channels: int
    n_triggers: int
    max_current_ua: int
    max_pulse_width_us: int
    max_frequency_dhz: int
    max_charge_nc: int
    ramp_ua_per_ms: int
    watchdog_ms: int
    max_trigger_ms: int

    FORMAT = struct.Struct("<BBBBBIHHIHHH")

    def pack(self) -> bytes:
        """The 23-byte HELLO data."""
        return self.FORMAT.pack(*(getattr(self, f) for f in self.__dataclass_fields__))

    @classmethod
    def unpack(cls, data: bytes) -> HelloInfo:
        """Parse HELLO data (``FrameError`` BAD_LENGTH on a wrong size)."""
        _need_len(data, cls.FORMAT.size, "HELLO data")
        return cls(*cls.FORMAT.unpack(data))


@dataclass(frozen=True)
class ChannelStatus:
    """One channel in a STATUS reply.

    Parameters
    ----------
    target_ua : int
        Current set by SET_CHANNEL, µA.
    applied_ua : int
        Current being delivered, µA (ramps toward ``target_ua``; 0 when off).
    pulse_width_us : int
        Phase width, µs.
    frequency_dhz : int
        Pulse rate, 0.1 Hz.
    configured : bool
        SET_CHANNEL was accepted at least once.
    on : bool
        The channel is delivering pulses.
    """

    target_ua: int
    applied_ua: int
    pulse_width_us: int
    frequency_dhz: int
    configured: bool
    on: bool

    FORMAT = struct.Struct("<IIHHB")

    @property
    def charge_nc(self) -> float:
        """Applied charge per phase, nC (µA × µs / 1000)."""
        return self.applied_ua * self.pulse_width_us / 1000.0


@dataclass(frozen=True)
class StatusInfo:
    """STATUS data (plus the state from the ACK header).

    Parameters
    ----------
    state : DeviceState
        Device state.
    t_ms : int
        Device time of the snapshot, ms.
    fault : Fault
        Latched fault cause.
    outputs : int
        Bit mask of channels on.
    triggers : int
        Bit mask of trigger lines high.
    heartbeat_age_ms : int
        Time since the last heartbeat (or ARM), ms; 65535 = saturated or none yet.
    rx_ok : int
        Frames accepted (ACKed) since boot.
    channels : tuple of ChannelStatus
        One per channel.
    rejected : dict of NackReason to int
        Frames refused since boot, by reason.
    """

    state: DeviceState
    t_ms: int
    fault: Fault
    outputs: int
    triggers: int
    heartbeat_age_ms: int
    rx_ok: int
    channels: tuple[ChannelStatus, ...]
    rejected: dict[NackReason, int]

    HEAD = struct.Struct("<IBBBHI")
    SIZE = HEAD.size + ChannelStatus.FORMAT.size * N_CHANNELS + 4 * len(NackReason)

    @classmethod
    def unpack(cls, state: DeviceState, data: bytes) -> StatusInfo:
        """Parse STATUS data (``FrameError`` BAD_LENGTH on a wrong size)."""
        _need_len(data, cls.SIZE, "STATUS data")
        t_ms, fault, outputs, triggers, age, rx_ok = cls.HEAD.unpack_from(data, 0)
        off = cls.HEAD.size
        chans = []
        for _ in range(N_CHANNELS):
            tgt, app, pw, fq, flags = ChannelStatus.FORMAT.unpack_from(data, off)
            chans.append(ChannelStatus(tgt, app, pw, fq, bool(flags & 1), bool(flags & 2)))
            off += ChannelStatus.FORMAT.size
        counts = struct.unpack_from(f"<{len(NackReason)}I", data, off)
        return cls(
            state=state,
            t_ms=t_ms,
            fault=_enum(Fault, fault, "STATUS fault"),
            outputs=outputs,
            triggers=triggers,
            heartbeat_age_ms=age,
            rx_ok=rx_ok,
            channels=tuple(chans),
            rejected={r: counts[r - 1] for r in NackReason},
        )

    def pack(self) -> bytes:
        """The STATUS data bytes (inverse of :meth:`unpack`, for tests and models)."""
        out = bytearray(
            self.HEAD.pack(self.t_ms, self.fault, self.outputs, self.triggers, self.heartbeat_age_ms, self.rx_ok)
        )
        for c in self.channels:
            flags = (1 if c.configured else 0) | (2 if c.on else 0)
            out += ChannelStatus.FORMAT.pack(c.target_ua, c.applied_ua, c.pulse_width_us, c.frequency_dhz, flags)
        out += struct.pack(f"<{len(NackReason)}I", *(self.rejected.get(r, 0) for r in NackReason))
        return bytes(out)


def _name(enum: type[IntEnum], value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return str(value)


def _enum(enum: type[_E], value: int, what: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        raise FrameError(f"{what} {value} is not a valid {enum.__name__}.", NackReason.BAD_FRAMING) from None


def decode_reply(frame: Frame) -> Ack | Nack | Event:
    """The reply in a frame from the device.

    Raises
    ------
    FrameError
        When the code is not a reply code, the payload has the wrong length, or an enum byte is
        out of range.
    """
    p = frame.payload
    if frame.cmd == ReplyCode.ACK:
        if len(p) < 3:
            raise FrameError(f"ACK payload must be at least 3 bytes, got {len(p)}.", NackReason.BAD_LENGTH)
        return Ack(
            frame.seq, p[0], _enum(AckStatus, p[1], "ACK status"), _enum(DeviceState, p[2], "ACK state"), bytes(p[3:])
        )
    if frame.cmd == ReplyCode.NACK:
        _need_len(p, 4, "NACK")
        return Nack(
            frame.seq, p[0], _enum(NackReason, p[1], "NACK reason"), p[2], _enum(DeviceState, p[3], "NACK state")
        )
    if frame.cmd == ReplyCode.EVENT:
        _need_len(p, Event.FORMAT.size, "EVENT")
        t_ms, changed, state, fault, outputs, triggers = Event.FORMAT.unpack(p)
        return Event(
            frame.seq,
            t_ms,
            EventFlag(changed),
            _enum(DeviceState, state, "EVENT state"),
            _enum(Fault, fault, "EVENT fault"),
            outputs,
            triggers,
        )
    raise FrameError(f"{frame.cmd:#04x} is not a reply code.", NackReason.UNKNOWN_CMD)


def encode_ack(
    seq: int, req_cmd: int, state: DeviceState, data: bytes = b"", status: AckStatus = AckStatus.OK
) -> bytes:
    """Wire bytes of an ACK (the device's side; for tests and models)."""
    return encode_frame(Frame(seq, ReplyCode.ACK, bytes([req_cmd, status, state]) + data))


def encode_nack(seq: int, req_cmd: int, reason: NackReason, state: DeviceState, detail: int = 0) -> bytes:
    """Wire bytes of a NACK (the device's side; for tests and models)."""
    return encode_frame(Frame(seq, ReplyCode.NACK, bytes([req_cmd, reason, detail, state])))


def encode_event(event: Event) -> bytes:
    """Wire bytes of an EVENT (the device's side; for tests and models)."""
    payload = Event.FORMAT.pack(
        event.t_ms, event.changed, event.state, event.fault, event.outputs & _ALL_BITS, event.triggers & _ALL_BITS
    )
    return encode_frame(Frame(event.seq, ReplyCode.EVENT, payload))


# ---------------------------------------------------------------------------------- stream decoder


class StreamDecoder:
    """Resumable decoder of a byte stream into frames; counts what it drops.

    Feed it whatever a serial read returned, in any chunking: the partial frame is kept until
    its delimiter arrives. A frame longer than :data:`MAX_WIRE` is dropped without buffering
    the rest of it. Back-to-back delimiters (empty frames) are skipped silently, as in the
    firmware. Overflow policy: bad frames are dropped and counted, never raised.

    Attributes
    ----------
    frames : int
        Frames returned so far.
    bad : collections.Counter of NackReason
        Frames dropped, by the reason the device would give (BAD_FRAMING, BAD_CRC, BAD_VERSION).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.frames = 0
        self.bad: Counter[NackReason] = Counter()

    @property
    def bad_total(self) -> int:
        """Frames dropped, all reasons."""
        return sum(self.bad.values())

    def reset(self) -> None:
        """Drop a partial frame (counters are kept)."""
        self._buf.clear()
        self._overflow = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Decode ``data``; return the complete, valid frames it finished, in order.

        Parameters
        ----------
        data : bytes-like
            Received bytes (possibly empty, possibly splitting a frame anywhere).

        Returns
        -------
        list of Frame
            Frames that passed COBS, length, CRC and version checks.
        """
        out: list[Frame] = []
        chunk = bytes(data)
        start = 0
        while start < len(chunk):
            zero = chunk.find(0, start)
            if zero < 0:
                self._append(chunk[start:])
                break
            self._append(chunk[start:zero])
            start = zero + 1
            frame = self._finish()
            if frame is not None:
                out.append(frame)
        return out

    def _append(self, part: bytes) -> None:
        if self._overflow:
            return
        if len(self._buf) + len(part) > MAX_WIRE:
            self._overflow = True
            self._buf.clear()
            return
        self._buf += part

    def _finish(self) -> Frame | None:
        if self._overflow:
            self._overflow = False
            self.bad[NackReason.BAD_FRAMING] += 1
            return None
        if not self._buf:
            return None
        encoded = bytes(self._buf)
        self._buf.clear()
        try:
            frame = parse_raw(cobs_decode(encoded))
        except ProtocolError as exc:
            self.bad[exc.reason] += 1
            return None
        self.frames += 1
        return frame
