"""Host safety supervisor: every stimulation request passes through here before reaching an output.

DESIGN "Safety is layered and fails closed": this is the host layer. The stimulator firmware
keeps its own hard limits and heartbeat watchdog, so a crashed host still ends stimulation.

States
------
``disarmed`` -> ``arm(who, reason)`` -> ``armed`` -> an allowed, non-zero request ->
``stimulating`` -> (stop request | the request's duration ran out | stale data) -> ``armed``.
``disarm`` returns to ``disarmed`` from ``armed``/``stimulating``. ``estop``,
``upstream_fault``, an output whose ``safe_state`` fails, an audit log that cannot be written,
or an internal error move *any* state to ``fault``. A fault latches: nothing but
``clear_fault(who, reason)`` leaves it, and that goes to ``disarmed``, so stimulation needs a
fresh ``arm`` by a person afterwards. Every transition to ``disarmed``/``fault``, every stale
lapse and :meth:`SafetySupervisor.close` calls ``safe_state(reason)`` on every registered
output; an output that raises does not stop the others (the error is kept in ``errors``,
written to the audit log, and latches a fault).

Refuse, or clamp?
-----------------
A request above ``max_current_ma``, ``max_pulse_width_us``, ``max_frequency_hz`` or
``max_charge_per_phase_uc`` is **refused**, never clamped: a controller asking for more than
the limit is misbehaving, and silently delivering "the most we may" would hide that. The
session dose is refused the same way (no shortened duration). The **ramp** limit is the one
clamp: a current *increase* faster than ``max_ramp_ma_per_s`` is allowed at the ramp ceiling
(reason ``ramp_limited``, the granted request in :attr:`Decision.granted`), because a closed-loop
controller is expected to climb and the ramp is how it is allowed to. Decreases are never limited.

The ramp rule, per channel: while the channel is stimulating, the current may rise by at most
``max_ramp_ma_per_s × min(Δt, 1/f)`` per request, Δt being the time since the channel's previous
request and f the new pulse rate (so updates faster than the pulse rate cannot stack rises
within one pulse period). A channel that is off (never started, stopped, zeroed, or whose last
request ran out more than one pulse period ago) starts from 0 mA with a first step of at most
``max_ramp_ma_per_s / f``. Hence between any two consecutive pulses the current rises by at most
the ramp rate times the pulse period, and a long block request cannot jump to full current.
(At a low pulse rate the first pulse may thus be larger: 20 mA/s at 1 Hz allows 20 mA.) The ramp
applies to the current only; pulse-width modulation (RISE drives 0-400 µs at a fixed current) is
bounded by the pulse-width and charge limits here and by the firmware's own ramp limit.

Session dose
------------
The dose is the stimulation time granted on each NMES channel, summed over channels (s). A
request that supersedes a running one on its channel is charged only for the time it extends
the channel's end (so a controller updating every 5 ms with 40 ms requests is not charged
8 times). Time is charged when the request is *allowed* and never refunded when stimulation is
cut short, so the count is an upper bound on what was delivered. Auditory bursts do not count
against the NMES dose; they are limited by level and rate.

Stale data and lost heartbeats versus faults
--------------------------------------------
A **source loss or decoder exception** (``upstream_fault``) is a fault: it latches and needs a
human. **Stale data** (a ``data_age`` older than ``stale_after_s``, or no fresh report since)
and a **missing heartbeat** (none within ``heartbeat_timeout_s``) are *not* latched: outputs go to
their safe state at once, the state drops from ``stimulating`` to ``armed``, and every request is
refused (``stale_data`` / ``heartbeat_lost``) until heartbeats and fresh data return; the ramp then
starts again from 0 mA. A dropout that heals is therefore survivable without a person, while
nothing is delivered on old data. Until the first heartbeat and the first ``data_age`` report
arrive, the upstream counts as stale (fail closed). ``data_age`` takes a stream name; data is
fresh only while every stream reported so far is fresh. A watchdog thread enforces both deadlines
on absolute times of the supervisor clock; every wait it makes has a timeout.

Audit log
---------
JSON lines, opened with ``O_APPEND`` (never truncated; several supervisors may append to the
same file), one line per decision (allowed or refused) and per state change or safety event,
each with ``t`` (supervisor clock, s), ``utc``, ``seq`` (per instance), ``instance``, ``event``,
``state`` and ``prev_state``, ``who``, ``reason``, ``message`` and ``values``. A line is written
before :meth:`SafetySupervisor.request` returns, so an allowed stimulus is on file before it can
be delivered; a background thread fsyncs at most ``audit_sync_interval_s`` (≤ 1 s) after a write,
and at once after a state change. If a line cannot be written the request is refused and the
supervisor faults: a stimulus that cannot be audited is not given.

Threads
-------
All public methods are thread-safe. ``request``/``heartbeat``/``data_age`` run on the caller's
(pipeline) thread, ``estop``/``arm``/... on a front end's thread, the watchdog on its own. The
state lock guards only state; audit writes and ``safe_state`` calls happen outside it (the audit
log's own lock covers just the one ``write`` system call of a line and the file's lifetime). Because a
decision and its delivery are two steps, :meth:`SafetySupervisor.deliver` runs both under a
*delivery lock* that zeroing also takes, so an output's safe state can never be overtaken by a
stimulus decided just before an e-stop.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pylsl

from stimulation.limits import SafetyLimits, charge_per_phase_uc

__all__ = [
    "AudioRequest",
    "AuditLog",
    "Decision",
    "NmesRequest",
    "Reason",
    "SafeStateTarget",
    "SafetyState",
    "SafetySupervisor",
    "StimRequest",
]

log = logging.getLogger(__name__)

#: Relative float tolerance when comparing against a limit (round-off in current × pulse width).
REL_TOL = 1e-9


class SafetyState(StrEnum):
    """States of the supervisor."""

    DISARMED = "disarmed"
    ARMED = "armed"
    STIMULATING = "stimulating"
    FAULT = "fault"


class Reason(StrEnum):
    """Machine-readable reason of a :class:`Decision`."""

    ALLOWED = "allowed"
    RAMP_LIMITED = "ramp_limited"  # allowed, current clamped to the ramp ceiling
    NOT_ARMED = "not_armed"
    FAULT = "fault"
    CLOSED = "closed"
    STALE_DATA = "stale_data"
    HEARTBEAT_LOST = "heartbeat_lost"
    INVALID_REQUEST = "invalid_request"
    CURRENT_LIMIT = "current_limit"
    PULSE_WIDTH_LIMIT = "pulse_width_limit"
    FREQUENCY_LIMIT = "frequency_limit"
    CHARGE_LIMIT = "charge_limit"
    DOSE_LIMIT = "dose_limit"
    AUDIO_LEVEL_LIMIT = "audio_level_limit"
    AUDIO_RATE_LIMIT = "audio_rate_limit"
    OUTPUT_BUSY = "output_busy"
    AUDIT_FAILURE = "audit_failure"
    NO_LIMITS = "no_limits"  # the supervisor was built without limits: it permits no stimulation


@runtime_checkable
class SafeStateTarget(Protocol):
    """What :meth:`SafetySupervisor.register_output` accepts (every :class:`app.outputs.Output` is one)."""

    def safe_state(self, reason: str) -> None:
        """Stop every stimulation now (must not block for long)."""


@dataclass(frozen=True)
class NmesRequest:
    """Ask for NMES on one channel.

    Values are not validated here: the supervisor is the single gate, and refuses (and logs) a
    malformed request instead of raising on the pipeline thread. A request with ``current_ma``
    or ``pulse_width_us`` equal to 0 stops the channel.

    Parameters
    ----------
    channel : int
        Stimulator channel, >= 0.
    current_ma : float
        Current amplitude, mA.
    pulse_width_us : float
        Phase width, µs.
    frequency_hz : float
        Pulse rate, Hz.
    duration_s : float
        How long to stimulate at these settings, s (superseded by the next request on the channel).
    source : str
        Who asks (pipeline or controller name), for the audit log.
    """

    channel: int
    current_ma: float
    pulse_width_us: float
    frequency_hz: float
    duration_s: float
    source: str = "pipeline"

    @property
    def is_stop(self) -> bool:
        """True when the request delivers no charge (current or pulse width is 0)."""
        return self.current_ma == 0 or self.pulse_width_us == 0


@dataclass(frozen=True)
class AudioRequest:
    """Ask for one auditory burst (e.g. Portiloop pink noise).

    Parameters
    ----------
    level_db : float
        Estimated level at the ear, dB SPL.
    burst_ms : float
        Burst length, ms.
    source : str
        Who asks, for the audit log.
    """

    level_db: float
    burst_ms: float
    source: str = "pipeline"


StimRequest = NmesRequest | AudioRequest


@dataclass(frozen=True)
class Decision:
    """The supervisor's answer to one request.

    Attributes
    ----------
    allowed : bool
        Deliver ``granted`` (True) or nothing (False).
    reason : Reason
        Machine-readable reason (``allowed``, ``ramp_limited`` or why it was refused).
    message : str
        Human-readable explanation, naming the value and the limit.
    request : NmesRequest or AudioRequest
        What was asked.
    granted : NmesRequest or AudioRequest or None
        What may be delivered (the request, or with ``current_ma`` clamped by the ramp); None when refused.
    state : SafetyState
        Supervisor state after the decision.
    time : float
        Supervisor clock at the decision, s.
    seq : int
        Sequence number of the decision's audit line.
    dose_used_s : float
        Session dose after the decision, s.
    """

    allowed: bool
    reason: Reason
    message: str
    request: StimRequest
    granted: StimRequest | None
    state: SafetyState
    time: float
    seq: int
    dose_used_s: float


def _jsonable(value: Any) -> Any:
    """Turn ``value`` into something ``json.dumps(allow_nan=False)`` accepts (non-finite floats -> str)."""
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return repr(value)


class AuditLog:
    """Append-only JSON-lines file with batched fsync.

    The file is opened with ``O_APPEND | O_CREAT`` and never truncated; if it does not end with a
    newline (a previous writer died mid-line) one is added first, so the damage stays on its own
    line. :meth:`write` appends one line with a single ``write`` system call before returning; a
    background thread fsyncs at most ``sync_interval_s`` after the first unsynced write, or at
    once after :meth:`request_sync`.

    Parameters
    ----------
    path : str or Path
        The log file (its folder is created if needed).
    sync_interval_s : float
        Longest time a written line stays un-fsynced, s; in (0, 1].
    on_error : callable, optional
        ``on_error(exc)`` when a background fsync fails (called on the sync thread).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        sync_interval_s: float = 0.25,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if isinstance(sync_interval_s, bool) or not isinstance(sync_interval_s, int | float):
            raise TypeError(f"sync_interval_s must be a number in s, got {sync_interval_s!r}.")
        if not 0 < sync_interval_s <= 1.0:
            raise ValueError(f"sync_interval_s must be in (0, 1] s, got {sync_interval_s!r}.")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.path, flags, 0o640)
        self._sync_fd = os.dup(self._fd)  # owned by the sync thread; survives close() of the write fd
        self.sync_interval_s = float(sync_interval_s)
        self._on_error = on_error
        self._write_lock = threading.Lock()  # guards the fd's lifetime; the only I/O under it is the append
        self._cond = threading.Condition()
        self._dirty = False
        self._urgent = False
        self._closing = False
        self.closed = False
        self.n_lines = 0
        self.n_syncs = 0
        if os.fstat(self._fd).st_size > 0:
            with self.path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    self._append(b"\n")
        self._thread = threading.Thread(target=self._run, name=f"audit-sync:{self.path.name}", daemon=True)
        self._thread.start()

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one JSON line (non-finite floats are written as strings).

        Raises
        ------
        RuntimeError
            When the log is closed.
        OSError
            When the write fails (disk full, I/O error).
        """
        data = (json.dumps(_jsonable(record), separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
        with self._write_lock:
            if self.closed:
                raise RuntimeError(f"audit log {self.path} is closed; no more lines can be written.")
            self._append(data)
            self.n_lines += 1
        with self._cond:
            self._dirty = True

    def request_sync(self) -> None:
        """Ask the sync thread to fsync now (does not wait)."""
        with self._cond:
            self._urgent = True
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._urgent and not self._closing:
                        self._cond.wait(self.sync_interval_s)
                    closing = self._closing
                    dirty, self._dirty, self._urgent = self._dirty, False, False
                if dirty or closing:
                    try:
                        os.fsync(self._sync_fd)
                        self.n_syncs += 1
                    except OSError as exc:
                        log.error("audit log %s: fsync failed: %r", self.path, exc)
                        if self._on_error is not None:
                            self._on_error(exc)
                if closing:
                    return
        finally:
            os.close(self._sync_fd)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop writing, fsync what was written, release the file. Safe to call twice."""
        with self._write_lock:
            if self.closed:
                return
            self.closed = True
            os.close(self._fd)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("audit log %s: final fsync did not finish within %.1f s", self.path, timeout_s)


@dataclass
class _Channel:
    """Ramp and dose bookkeeping of one NMES channel."""

    level_ma: float = 0.0
    set_time: float = -math.inf
    until: float = -math.inf
    frequency_hz: float = 1.0

    def active(self, now: float) -> bool:
        # a gap shorter than one pulse period drops no pulse, so the train counts as continuous
        return self.level_ma > 0 and now <= self.until + 1.0 / self.frequency_hz

    def off(self, now: float) -> None:
        self.level_ma = 0.0
        self.until = min(self.until, now)


def _over(value: float, limit: float) -> bool:
    return value > limit * (1.0 + REL_TOL)


def _check_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string naming the person or front end, got {type(value).__name__}.")
    if not value.strip():
        raise ValueError(f"{name} must not be empty; say who does this (e.g. 'clinician:jdoe').")
    return value


def _finite_nonneg(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and value >= 0


class SafetySupervisor:
    """Gate between commands and stimulation outputs: limits, state machine, watchdog, audit log.

    Parameters
    ----------
    limits : SafetyLimits or None
        Limits to enforce (config lowered by the patient profile; see :mod:`stimulation.limits`).
        None for a session without stimulation outputs: the state machine, e-stop and audit log
        work as usual, and every stimulation request is refused (``no_limits``).
    audit_log_path : str or Path
        JSON-lines audit log, appended to (never truncated).
    clock : callable
        Returns the time in s; ``pylsl.local_clock`` (the session's clock domain) by default.
    heartbeat_timeout_s : float
        Longest time without :meth:`heartbeat` before outputs go to their safe state, s.
    stale_after_s : float
        Data older than this (as reported through :meth:`data_age`) zeroes outputs, s.
    watchdog : bool
        Run the watchdog thread (default). Tests with a hand-driven clock pass False and call :meth:`poll`.
    audit_sync_interval_s : float
        Longest time an audit line stays un-fsynced, s; in (0, 1].
    zero_lock_timeout_s : float
        How long zeroing waits for an in-flight :meth:`deliver` before calling ``safe_state`` anyway, s.

    Attributes
    ----------
    errors : list of dict
        Failures of outputs' ``safe_state``, of the audit log and of internal threads.
    instance : str
        Random id written on every audit line of this supervisor.
    """

    def __init__(
        self,
        limits: SafetyLimits | None,
        *,
        audit_log_path: str | Path,
        clock: Callable[[], float] = pylsl.local_clock,
        heartbeat_timeout_s: float = 0.2,
        stale_after_s: float = 0.5,
        watchdog: bool = True,
        audit_sync_interval_s: float = 0.25,
        zero_lock_timeout_s: float = 0.5,
    ) -> None:
        if limits is not None and not isinstance(limits, SafetyLimits):
            raise TypeError(f"limits must be a SafetyLimits or None, got {type(limits).__name__} ({limits!r}).")
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}.")
        for name, value in (
            ("heartbeat_timeout_s", heartbeat_timeout_s),
            ("stale_after_s", stale_after_s),
            ("zero_lock_timeout_s", zero_lock_timeout_s),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number in s, got {type(value).__name__} ({value!r}).")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0 s, got {value!r}.")
        self.limits = limits
        self.heartbeat_timeout_s = float(heartbeat_timeout_s)
        self.stale_after_s = float(stale_after_s)
        self._clock = clock
        self._zero_lock_timeout_s = float(zero_lock_timeout_s)
        self._max_wait_s = min(0.1, self.heartbeat_timeout_s / 2, self.stale_after_s / 2)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._delivery = threading.RLock()
        self._state = SafetyState.DISARMED
        self._fault: dict[str, Any] | None = None
        self._channels: dict[int, _Channel] = {}
        self._audio_until = -math.inf
        self._last_audio = -math.inf
        self._dose_used = 0.0
        self._last_hb = -math.inf
        self._data_time: dict[str, float] = {}
        self._upstream_ok = False
        self._upstream_reason = Reason.HEARTBEAT_LOST
        self._outputs: list[SafeStateTarget] = []
        self._seq = 0
        self._closed = False
        self.errors: list[dict[str, Any]] = []
        self.instance = uuid.uuid4().hex[:12]
        self.n_allowed = 0
        self.n_refused = 0
        self._audit = AuditLog(audit_log_path, sync_interval_s=audit_sync_interval_s, on_error=self._on_audit_error)
        with self._lock:
            rec = self._record_locked(
                self._clock(),
                "open",
                "supervisor",
                "start",
                SafetyState.DISARMED,
                message="safety supervisor started",
                values={
                    **(limits.as_dict() if limits is not None else {"limits": None}),
                    "heartbeat_timeout_s": self.heartbeat_timeout_s,
                    "stale_after_s": self.stale_after_s,
                },
            )
        self._emit([rec], urgent=True)
        self._watchdog: threading.Thread | None = None
        if watchdog:
            self._watchdog = threading.Thread(target=self._watchdog_loop, name="safety-watchdog", daemon=True)
            self._watchdog.start()

    # ------------------------------------------------------------------ read-only views
    @property
    def state(self) -> SafetyState:
        """Current state."""
        with self._lock:
            return self._state

    @property
    def fault(self) -> dict[str, Any] | None:
        """The first cause of the latched fault (``kind``, ``who``, ``reason``, ``time``), None when not faulted."""
        with self._lock:
            return dict(self._fault) if self._fault is not None else None

    @property
    def dose_used_s(self) -> float:
        """NMES stimulation time granted this session, s (summed over channels)."""
        with self._lock:
            return self._dose_used

    @property
    def dose_remaining_s(self) -> float:
        """``max_session_dose_s`` minus the dose used, s."""
        with self._lock:
            if self.limits is None:
                return 0.0
            return max(0.0, self.limits.max_session_dose_s - self._dose_used)

    @property
    def upstream_ok(self) -> bool:
        """True while heartbeats and data are fresh (as of the last check)."""
        with self._lock:
            return self._upstream_ok

    @property
    def audit_log_path(self) -> Path:
        """The audit log file."""
        return self._audit.path

    def status(self) -> dict[str, Any]:
        """A snapshot for front ends: state, fault, dose, upstream freshness, active channels."""
        with self._lock:
            now = self._clock()
            return {
                "state": self._state.value,
                "fault": dict(self._fault) if self._fault else None,
                "dose_used_s": self._dose_used,
                "dose_limit_s": None if self.limits is None else self.limits.max_session_dose_s,
                "limits": None if self.limits is None else self.limits.as_dict(),
                "upstream_ok": self._upstream_ok,
                "upstream_reason": None if self._upstream_ok else self._upstream_reason.value,
                "channels": {ch: c.level_ma for ch, c in self._channels.items() if c.active(now)},
                "n_allowed": self.n_allowed,
                "n_refused": self.n_refused,
            }

    # ------------------------------------------------------------------ audit plumbing
    def _record_locked(
        self,
        now: float,
        event: str,
        who: str,
        reason: str,
        prev: SafetyState,
        *,
        message: str = "",
        values: Mapping[str, Any] | None = None,
        allowed: bool | None = None,
    ) -> dict[str, Any]:
        self._seq += 1
        rec: dict[str, Any] = {
            "t": now,
            "utc": datetime.now(UTC).isoformat(timespec="microseconds"),
            "seq": self._seq,
            "instance": self.instance,
            "event": event,
            "state": self._state.value,
            "prev_state": prev.value,
            "who": who,
            "reason": str(reason),
            "message": message,
        }
        if allowed is not None:
            rec["allowed"] = allowed
        rec["values"] = dict(values) if values else {}
        return rec

    def _emit(self, records: Iterable[dict[str, Any]], *, urgent: bool = False) -> bool:
        """Write records to the audit log; on failure fault and zero outputs. Returns True when all were written."""
        wrote_any = False
        for rec in records:
            try:
                self._audit.write(rec)
                wrote_any = True
            except (OSError, RuntimeError, ValueError) as exc:
                self._audit_failed(exc, rec)
                return False
        if urgent and wrote_any:
            self._audit.request_sync()
        return True

    def _on_audit_error(self, exc: BaseException) -> None:
        self._audit_failed(exc, None)

    def _audit_failed(self, exc: BaseException, rec: Mapping[str, Any] | None) -> None:
        log.error("audit log %s failed (%r); the unwritten line was %r", self._audit.path, exc, rec)
        with self._lock:
            self.errors.append({"time": self._clock(), "where": "audit_log", "error": repr(exc), "line": rec})
            if self._closed and isinstance(exc, RuntimeError):
                return  # a line racing close(): outputs were already zeroed by close()
            if self._state is not SafetyState.FAULT:
                self._enter_fault_locked(self._clock(), "audit_failure", "supervisor", f"audit log failed: {exc!r}")
        self._zero_outputs("audit log failure", audit=False)

    # ------------------------------------------------------------------ state helpers (call with the lock held)
    def _reset_outputs_locked(self, now: float) -> None:
        for ch in self._channels.values():
            ch.off(now)
        self._audio_until = -math.inf

    def _any_active_locked(self, now: float) -> bool:
        return now <= self._audio_until or any(c.active(now) for c in self._channels.values())

    def _enter_fault_locked(self, now: float, kind: str, who: str, reason: str) -> SafetyState:
        prev = self._state
        self._state = SafetyState.FAULT
        if self._fault is None:
            self._fault = {"kind": kind, "who": who, "reason": reason, "time": now}
        self._reset_outputs_locked(now)
        self._cond.notify_all()
        return prev

    def _update_upstream_locked(self, now: float) -> tuple[list[dict[str, Any]], bool]:
        """Re-evaluate heartbeat and data freshness at ``now``; returns (audit records, outputs must be zeroed)."""
        hb_age = now - self._last_hb
        data_age = now - min(self._data_time.values()) if self._data_time else math.inf
        if hb_age > self.heartbeat_timeout_s:
            ok, reason = False, Reason.HEARTBEAT_LOST
        elif data_age > self.stale_after_s:
            ok, reason = False, Reason.STALE_DATA
        else:
            ok, reason = True, Reason.ALLOWED
        if not ok:
            self._upstream_reason = reason
        if ok == self._upstream_ok:
            return [], False
        self._upstream_ok = ok
        values = {"heartbeat_age_s": hb_age, "data_age_s": data_age}
        prev = self._state
        if ok:
            self._cond.notify_all()  # new deadlines for the watchdog
            rec = self._record_locked(
                now, "upstream_fresh", "watchdog", "fresh", prev, message="heartbeat and data fresh", values=values
            )
            return [rec], False
        zero = self._state in (SafetyState.ARMED, SafetyState.STIMULATING)
        if zero:
            self._reset_outputs_locked(now)
            self._state = SafetyState.ARMED
        if reason is Reason.HEARTBEAT_LOST:
            msg = (
                f"no heartbeat for {hb_age:.3f} s (timeout {self.heartbeat_timeout_s} s)"
                if math.isfinite(hb_age)
                else "no heartbeat received yet"
            )
        else:
            msg = (
                f"newest data is {data_age:.3f} s old (stale after {self.stale_after_s} s)"
                if math.isfinite(data_age)
                else "no data age reported yet"
            )
        msg += "; outputs zeroed, requests refused until fresh" if zero else "; requests refused until fresh"
        rec = self._record_locked(now, "upstream_stale", "watchdog", reason.value, prev, message=msg, values=values)
        return [rec], zero

    def _upstream_message_locked(self) -> str:
        if self._upstream_reason is Reason.HEARTBEAT_LOST:
            return (
                f"no heartbeat from the pipeline within {self.heartbeat_timeout_s} s; "
                "requests are refused until heartbeats resume"
            )
        return f"data older than {self.stale_after_s} s (or none yet); requests are refused until fresh data arrives"

    # ------------------------------------------------------------------ outputs
    def register_output(self, output: SafeStateTarget) -> None:
        """Have ``output.safe_state(reason)`` called on every fault, e-stop, disarm, stale lapse and close.

        The output is put in its safe state at once (it has not been granted anything yet).

        Raises
        ------
        TypeError
            When ``output`` has no callable ``safe_state``.
        """
        if not callable(getattr(output, "safe_state", None)):
            raise TypeError(f"output must have a safe_state(reason) method, got {type(output).__name__}.")
        output.safe_state("registered with the safety supervisor")
        with self._lock:
            if output not in self._outputs:
                self._outputs.append(output)

    def unregister_output(self, output: SafeStateTarget) -> None:
        """Stop managing ``output`` (after putting it in its safe state)."""
        with self._lock:
            if output in self._outputs:
                self._outputs.remove(output)
        output.safe_state("unregistered from the safety supervisor")

    def _zero_outputs(self, reason: str, *, audit: bool = True) -> None:
        """Call ``safe_state(reason)`` on every output; failures are kept, logged and latch a fault."""
        with self._lock:
            outputs = list(self._outputs)
        got = self._delivery.acquire(timeout=self._zero_lock_timeout_s)
        failures: list[tuple[Any, BaseException]] = []
        try:
            for out in outputs:
                try:
                    out.safe_state(reason)
                except Exception as exc:  # noqa: BLE001 - one broken output must not keep the others live
                    failures.append((out, exc))
        finally:
            if got:
                self._delivery.release()
        if got and not failures:
            return
        records: list[dict[str, Any]] = []
        with self._lock:
            now = self._clock()
            if not got:
                log.error("a delivery did not finish within %.2f s; outputs zeroed anyway", self._zero_lock_timeout_s)
                records.append(
                    self._record_locked(
                        now,
                        "delivery_lock_timeout",
                        "supervisor",
                        "output_busy",
                        self._state,
                        message=f"a delivery was still running after {self._zero_lock_timeout_s} s; zeroed anyway",
                    )
                )
            for out, err in failures:
                name = getattr(out, "name", type(out).__name__)
                log.error("output %r failed to go to its safe state (%s): %r", name, reason, err)
                self.errors.append({"time": now, "where": f"output:{name}", "error": repr(err), "during": reason})
                records.append(
                    self._record_locked(
                        now,
                        "output_safe_state_failed",
                        "supervisor",
                        "output_failure",
                        self._state,
                        message=f"output {name!r} raised {err!r} in safe_state({reason!r})",
                        values={"output": name},
                    )
                )
            if failures and self._state is not SafetyState.FAULT:
                prev = self._enter_fault_locked(now, "output_failure", "supervisor", "an output failed its safe state")
                records.append(
                    self._record_locked(
                        now,
                        "fault",
                        "supervisor",
                        "output_failure",
                        prev,
                        message="an output could not confirm its safe state; fault latched",
                    )
                )
        if audit:
            self._emit(records, urgent=True)

    # ------------------------------------------------------------------ commands from people / front ends
    def arm(self, who: str, reason: str) -> SafetyState:
        """Allow stimulation from now on (``disarmed`` -> ``armed``).

        Parameters
        ----------
        who : str
            Person or front end (``"clinician:jdoe@gui"``), for the audit log.
        reason : str
            Why, for the audit log.

        Returns
        -------
        SafetyState
            The new state (arming an armed supervisor changes nothing and is logged).

        Raises
        ------
        RuntimeError
            In ``fault`` (clear the fault first) or after :meth:`close`.
        """
        _check_text(who, "who")
        _check_text(reason, "reason")
        error: RuntimeError | None = None
        with self._lock:
            if self._closed:
                raise RuntimeError("the safety supervisor is closed; create a new one to stimulate again.")
            now = self._clock()
            prev = self._state
            if prev is SafetyState.FAULT:
                cause = self._fault or {}
                error = RuntimeError(
                    f"cannot arm: a fault is latched ({cause.get('kind')}: {cause.get('reason')}); "
                    "a person must call clear_fault(who, reason) first."
                )
                rec = self._record_locked(now, "arm_refused", who, reason, prev, message=str(error))
            elif prev is SafetyState.DISARMED:
                self._state = SafetyState.ARMED
                self._cond.notify_all()
                rec = self._record_locked(now, "arm", who, reason, prev, message="stimulation armed")
            else:
                rec = self._record_locked(now, "arm", who, reason, prev, message="already armed; nothing changed")
            state = self._state
        self._emit([rec], urgent=True)
        if error is not None:
            raise error
        return state

    def disarm(self, who: str, reason: str) -> SafetyState:
        """Stop stimulation and refuse requests until armed again; outputs go to their safe state.

        In ``fault`` the fault stays latched (only :meth:`clear_fault` leaves it); outputs are zeroed anyway.

        Returns
        -------
        SafetyState
            The new state.
        """
        _check_text(who, "who")
        _check_text(reason, "reason")
        with self._lock:
            now = self._clock()
            prev = self._state
            if prev is not SafetyState.FAULT:
                self._state = SafetyState.DISARMED
            self._reset_outputs_locked(now)
            msg = "stimulation disarmed" if prev is not SafetyState.FAULT else "disarm in fault: fault stays latched"
            rec = self._record_locked(now, "disarm", who, reason, prev, message=msg)
            state = self._state
        self._zero_outputs(f"disarmed by {who}: {reason}")
        self._emit([rec], urgent=True)
        return state

    def estop(self, source: str, reason: str = "emergency stop") -> None:
        """Emergency stop from any front end or thread: outputs to safe state, fault latched. Never raises.

        Parameters
        ----------
        source : str
            Which front end / button / API client.
        reason : str
            Free text for the audit log.
        """
        src = str(source) if source else "unknown"
        try:
            self._fault_and_zero("estop", src, str(reason), f"e-stop from {src}: {reason}")
        except Exception as exc:  # an e-stop must reach the outputs whatever else fails
            log.exception("e-stop bookkeeping failed; zeroing outputs directly")
            with self._lock:
                self._state = SafetyState.FAULT
                if self._fault is None:
                    self._fault = {"kind": "estop", "who": src, "reason": str(reason), "time": math.nan}
                self.errors.append({"time": math.nan, "where": "estop", "error": repr(exc)})
            self._zero_outputs(f"e-stop from {src}", audit=False)

    def upstream_fault(self, where: str, reason: str) -> None:
        """A failure upstream (source lost, decoder exception): outputs to safe state, fault latched.

        Parameters
        ----------
        where : str
            Which part failed (``"source:eeg"``, ``"pipeline:rise"``).
        reason : str
            What happened (exception repr), for the audit log.
        """
        self._fault_and_zero("upstream_fault", str(where), str(reason), f"upstream fault in {where}: {reason}")

    def _fault_and_zero(self, event: str, who: str, reason: str, safe_reason: str) -> None:
        with self._lock:
            now = self._clock()
            prev = self._enter_fault_locked(now, event, who, reason)
            rec = self._record_locked(now, event, who, reason, prev, message=f"{safe_reason}; fault latched")
        self._zero_outputs(safe_reason)
        self._emit([rec], urgent=True)

    def clear_fault(self, who: str, reason: str) -> SafetyState:
        """A person acknowledges a fault: ``fault`` -> ``disarmed`` (stimulation needs a new :meth:`arm`).

        Raises
        ------
        RuntimeError
            When not in ``fault``.
        """
        _check_text(who, "who")
        _check_text(reason, "reason")
        with self._lock:
            now = self._clock()
            prev = self._state
            if prev is not SafetyState.FAULT:
                raise RuntimeError(f"clear_fault() works only in state 'fault', the supervisor is {prev.value!r}.")
            cause = self._fault
            self._fault = None
            self._state = SafetyState.DISARMED
            self._reset_outputs_locked(now)
            rec = self._record_locked(
                now, "clear_fault", who, reason, prev, message="fault cleared; disarmed", values={"cleared": cause}
            )
        self._emit([rec], urgent=True)
        return SafetyState.DISARMED

    # ------------------------------------------------------------------ pipeline side
    def heartbeat(self) -> None:
        """The pipeline is alive; call at least every ``heartbeat_timeout_s`` (any thread)."""
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            self._last_hb = now
            if self._upstream_ok:
                return
            records, zero = self._update_upstream_locked(now)
        if zero:
            self._zero_outputs("heartbeat check")
        self._emit(records)

    def data_age(self, age_s: float, stream: str = "default") -> None:
        """Report the age of the newest sample of ``stream``, s (newest-sample time = now - age).

        Data counts as fresh only while every reported stream is fresh. A NaN age counts as
        infinitely old; a negative one (clock jitter) as 0.

        Raises
        ------
        TypeError
            When ``age_s`` is not a number.
        """
        if isinstance(age_s, bool) or not isinstance(age_s, int | float):
            raise TypeError(f"age_s must be a number in s, got {type(age_s).__name__} ({age_s!r}).")
        age = math.inf if math.isnan(age_s) else max(0.0, float(age_s))
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            self._data_time[str(stream)] = now - age
            records, zero = self._update_upstream_locked(now)
        if zero:
            self._zero_outputs(f"stale data in {stream!r} ({age:.3f} s old)")
        self._emit(records, urgent=zero)

    def poll(self) -> SafetyState:
        """Check the heartbeat and data deadlines and the end of stimulation at the clock's now.

        The watchdog thread calls this at each deadline; tests with a hand-driven clock call it directly.

        Returns
        -------
        SafetyState
            The state after the check.
        """
        with self._lock:
            if self._closed:
                return self._state
            now = self._clock()
            records, zero = self._update_upstream_locked(now)
            if self._state is SafetyState.STIMULATING and not self._any_active_locked(now):
                self._state = SafetyState.ARMED
                records.append(
                    self._record_locked(
                        now,
                        "stimulation_end",
                        "supervisor",
                        "duration_elapsed",
                        SafetyState.STIMULATING,
                        message="every granted stimulation has run its duration",
                    )
                )
            state = self._state
        if zero:
            self._zero_outputs("heartbeat lost or data stale")
        self._emit(records, urgent=zero)
        return state

    def _next_deadline_locked(self) -> float:
        deadline = math.inf
        if self._upstream_ok:
            deadline = self._last_hb + self.heartbeat_timeout_s
            if self._data_time:
                deadline = min(deadline, min(self._data_time.values()) + self.stale_after_s)
        if self._state is SafetyState.STIMULATING:
            for c in self._channels.values():
                if c.level_ma > 0:
                    deadline = min(deadline, c.until + 1.0 / c.frequency_hz)
            if self._audio_until > -math.inf:
                deadline = min(deadline, self._audio_until)
        return deadline

    def _watchdog_loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                try:
                    wait = self._max_wait_s
                    deadline = self._next_deadline_locked()
                    if math.isfinite(deadline):
                        # wake just after the deadline: lapses are strict (age > timeout)
                        wait = min(wait, max(0.0, deadline - self._clock()) + 0.001)
                except Exception:  # noqa: BLE001 - a broken clock must not kill the watchdog; poll() faults below
                    wait = self._max_wait_s
                self._cond.wait(wait)
                if self._closed:
                    return
            try:
                self.poll()
            except Exception as exc:  # the watchdog failing is a fault, never a silent death
                log.exception("safety watchdog check failed")
                with self._lock:
                    self.errors.append({"time": math.nan, "where": "watchdog", "error": repr(exc)})
                try:
                    self._fault_and_zero("watchdog_error", "watchdog", repr(exc), f"watchdog error: {exc!r}")
                except Exception:  # noqa: BLE001
                    with self._lock:
                        self._state = SafetyState.FAULT
                    self._zero_outputs("watchdog error", audit=False)

    # ------------------------------------------------------------------ requests
    def request(self, request: StimRequest) -> Decision:
        """Decide one stimulation request; the decision is on the audit log before this returns.

        Parameters
        ----------
        request : NmesRequest or AudioRequest

        Returns
        -------
        Decision
            ``allowed`` with ``granted`` (possibly ramp-clamped), or refused with the reason.

        Raises
        ------
        TypeError
            When ``request`` is neither an :class:`NmesRequest` nor an :class:`AudioRequest`.
        """
        return self._request(request, None)

    def _request(self, request: StimRequest, forced: tuple[Reason, str] | None) -> Decision:
        if not isinstance(request, NmesRequest | AudioRequest):
            raise TypeError(f"request must be an NmesRequest or AudioRequest, got {type(request).__name__}.")
        with self._lock:
            now = self._clock()
            if self._closed:
                self.n_refused += 1
                decision = Decision(
                    False,
                    Reason.CLOSED,
                    "the safety supervisor is closed (not audited: the log is closed)",
                    request,
                    None,
                    self._state,
                    now,
                    0,
                    self._dose_used,
                )
                log.warning("request after close refused: %r", request)
                return decision
            records, zero = self._update_upstream_locked(now)
            prev = self._state
            extra: dict[str, Any] = {}
            granted: StimRequest | None = None
            if forced is not None:
                allowed, reason, message = False, forced[0], forced[1]
            else:
                allowed, reason, message, granted, extra = self._decide_locked(request, now)
            if allowed:
                self.n_allowed += 1
            else:
                self.n_refused += 1
            values: dict[str, Any] = {"kind": "nmes" if isinstance(request, NmesRequest) else "audio"}
            values.update({k: v for k, v in dataclasses.asdict(request).items() if k != "source"})
            values.update(extra)
            values["dose_used_s"] = self._dose_used
            rec = self._record_locked(
                now, "decision", request.source, reason.value, prev, message=message, values=values, allowed=allowed
            )
            records.append(rec)
            decision = Decision(
                allowed, reason, message, request, granted, self._state, now, rec["seq"], self._dose_used
            )
        if zero:
            self._zero_outputs("heartbeat lost or data stale")
        if not self._emit(records, urgent=zero or prev is not decision.state):
            # a stimulus that cannot be audited is not given; _emit has latched the fault
            return dataclasses.replace(
                decision,
                allowed=False,
                reason=Reason.AUDIT_FAILURE,
                message=f"audit log could not be written; refused and fault latched ({message})",
                granted=None,
                state=self.state,
            )
        return decision

    def deliver(self, request: StimRequest, send: Callable[[Decision], None]) -> Decision:
        """Decide ``request`` and, if allowed, call ``send(decision)`` — both under the delivery lock.

        Zeroing takes the same lock, so an e-stop or a fault always reaches the outputs *after* any
        delivery that was decided before it. If ``send`` raises, a fault is latched, outputs are
        zeroed and the exception propagates.

        Parameters
        ----------
        request : NmesRequest or AudioRequest
        send : callable
            ``send(decision)`` pushes ``decision.granted`` to the stimulator (must not block for long).

        Returns
        -------
        Decision
        """
        if not self._delivery.acquire(timeout=self._zero_lock_timeout_s):
            return self._request(
                request,
                (Reason.OUTPUT_BUSY, f"a delivery or zeroing held the outputs for > {self._zero_lock_timeout_s} s"),
            )
        try:
            decision = self._request(request, None)
            if decision.allowed:
                try:
                    send(decision)
                except Exception as exc:
                    self._fault_and_zero(
                        "delivery_failure", request.source, repr(exc), f"delivering a stimulus failed: {exc!r}"
                    )
                    raise
            return decision
        finally:
            self._delivery.release()

    def _decide_locked(
        self, req: StimRequest, now: float
    ) -> tuple[bool, Reason, str, StimRequest | None, dict[str, Any]]:
        if self._state is SafetyState.FAULT:
            cause = self._fault or {}
            return (
                False,
                Reason.FAULT,
                f"fault latched ({cause.get('kind')}: {cause.get('reason')}); a person must clear_fault() and arm()",
                None,
                {},
            )
        if self._state is SafetyState.DISARMED:
            return False, Reason.NOT_ARMED, "stimulation is disarmed; arm(who, reason) first", None, {}
        if self.limits is None:
            return (
                False,
                Reason.NO_LIMITS,
                "this supervisor has no limits (no [safety.limits] table), so it permits no stimulation",
                None,
                {},
            )
        if not self._upstream_ok:
            return False, self._upstream_reason, self._upstream_message_locked(), None, {}
        if isinstance(req, NmesRequest):
            return self._decide_nmes_locked(req, now)
        return self._decide_audio_locked(req, now)

    def _decide_nmes_locked(
        self, req: NmesRequest, now: float
    ) -> tuple[bool, Reason, str, StimRequest | None, dict[str, Any]]:
        lim = self.limits
        assert lim is not None  # checked in _decide_locked; narrows the type for mypy
        ch = req.channel
        if isinstance(ch, bool) or not isinstance(ch, int) or ch < 0:
            return False, Reason.INVALID_REQUEST, f"channel must be an integer >= 0, got {ch!r}", None, {}
        for name in ("current_ma", "pulse_width_us", "frequency_hz", "duration_s"):
            value = getattr(req, name)
            if not _finite_nonneg(value):
                return False, Reason.INVALID_REQUEST, f"{name} must be a finite number >= 0, got {value!r}", None, {}
        chan = self._channels.get(ch)
        if req.is_stop:
            if chan is not None:
                chan.off(now)
            if self._state is SafetyState.STIMULATING and not self._any_active_locked(now):
                self._state = SafetyState.ARMED
            return True, Reason.ALLOWED, f"channel {ch} stopped", req, {"granted_current_ma": 0.0}
        if req.frequency_hz == 0 or req.duration_s == 0:
            return (
                False,
                Reason.INVALID_REQUEST,
                f"a stimulating request needs frequency_hz > 0 and duration_s > 0, got {req.frequency_hz!r} Hz "
                f"and {req.duration_s!r} s",
                None,
                {},
            )
        if _over(req.current_ma, lim.max_current_ma):
            msg = f"current {req.current_ma:g} mA exceeds max_current_ma = {lim.max_current_ma:g} mA"
            return False, Reason.CURRENT_LIMIT, msg, None, {}
        if _over(req.pulse_width_us, lim.max_pulse_width_us):
            msg = f"pulse width {req.pulse_width_us:g} µs exceeds max_pulse_width_us = {lim.max_pulse_width_us:g} µs"
            return False, Reason.PULSE_WIDTH_LIMIT, msg, None, {}
        if _over(req.frequency_hz, lim.max_frequency_hz):
            msg = f"frequency {req.frequency_hz:g} Hz exceeds max_frequency_hz = {lim.max_frequency_hz:g} Hz"
            return False, Reason.FREQUENCY_LIMIT, msg, None, {}
        charge = charge_per_phase_uc(req.current_ma, req.pulse_width_us)
        if _over(charge, lim.max_charge_per_phase_uc):
            msg = (
                f"charge per phase {charge:.4g} µC ({req.current_ma:g} mA × {req.pulse_width_us:g} µs) exceeds "
                f"max_charge_per_phase_uc = {lim.max_charge_per_phase_uc:g} µC"
            )
            return False, Reason.CHARGE_LIMIT, msg, None, {"charge_per_phase_uc": charge}
        active = chan is not None and chan.active(now)
        charged_s = max(0.0, now + req.duration_s - chan.until) if (chan is not None and active) else req.duration_s
        if _over(self._dose_used + charged_s, lim.max_session_dose_s):
            msg = (
                f"session dose {self._dose_used:.3f} s + {charged_s:.3f} s would exceed "
                f"max_session_dose_s = {lim.max_session_dose_s:g} s"
            )
            return False, Reason.DOSE_LIMIT, msg, None, {"dose_charge_s": charged_s}
        period = 1.0 / req.frequency_hz
        if chan is not None and active:
            base, dt = chan.level_ma, min(max(0.0, now - chan.set_time), period)
        else:
            base, dt = 0.0, period
        ceiling = base + lim.max_ramp_ma_per_s * dt
        granted: NmesRequest = req
        reason = Reason.ALLOWED
        msg = f"channel {ch}: {req.current_ma:g} mA, {req.pulse_width_us:g} µs, {req.frequency_hz:g} Hz"
        if req.current_ma > ceiling:
            granted = dataclasses.replace(req, current_ma=ceiling)
            reason = Reason.RAMP_LIMITED
            msg = (
                f"channel {ch}: current {req.current_ma:g} mA clamped to {ceiling:.4g} mA by "
                f"max_ramp_ma_per_s = {lim.max_ramp_ma_per_s:g} mA/s (from {base:.4g} mA over {dt:.4g} s)"
            )
        if chan is None:
            chan = self._channels[ch] = _Channel()
        chan.level_ma = granted.current_ma
        chan.set_time = now
        chan.until = now + req.duration_s
        chan.frequency_hz = req.frequency_hz
        self._dose_used += charged_s
        self._state = SafetyState.STIMULATING
        extra = {
            "granted_current_ma": granted.current_ma,
            "charge_per_phase_uc": charge_per_phase_uc(granted.current_ma, req.pulse_width_us),
            "dose_charge_s": charged_s,
        }
        return True, reason, msg, granted, extra

    def _decide_audio_locked(
        self, req: AudioRequest, now: float
    ) -> tuple[bool, Reason, str, StimRequest | None, dict[str, Any]]:
        lim = self.limits
        assert lim is not None  # checked in _decide_locked; narrows the type for mypy
        level, burst = req.level_db, req.burst_ms
        if isinstance(level, bool) or not isinstance(level, int | float) or not math.isfinite(level):
            return False, Reason.INVALID_REQUEST, f"level_db must be a finite number (dB SPL), got {level!r}", None, {}
        if not _finite_nonneg(burst) or burst == 0:
            return False, Reason.INVALID_REQUEST, f"burst_ms must be a finite number > 0 ms, got {burst!r}", None, {}
        if _over(level, lim.max_audio_db_spl):
            msg = f"audio level {level:g} dB SPL exceeds max_audio_db_spl = {lim.max_audio_db_spl:g} dB SPL"
            return False, Reason.AUDIO_LEVEL_LIMIT, msg, None, {}
        min_interval = 1.0 / lim.max_audio_rate_hz
        if _over(burst / 1000.0, min_interval):
            msg = (
                f"burst of {burst:g} ms is longer than the minimum interval {min_interval * 1000:.4g} ms "
                f"between bursts at max_audio_rate_hz = {lim.max_audio_rate_hz:g} Hz"
            )
            return False, Reason.AUDIO_RATE_LIMIT, msg, None, {}
        since = now - self._last_audio
        if since * (1.0 + REL_TOL) < min_interval:
            msg = (
                f"{since:.4g} s since the last burst; max_audio_rate_hz = {lim.max_audio_rate_hz:g} Hz needs "
                f">= {min_interval:.4g} s"
            )
            return False, Reason.AUDIO_RATE_LIMIT, msg, None, {}
        self._last_audio = now
        self._audio_until = now + burst / 1000.0
        self._state = SafetyState.STIMULATING
        return True, Reason.ALLOWED, f"audio burst {burst:g} ms at {level:g} dB SPL", req, {}

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Outputs to their safe state, watchdog stopped, audit log synced and closed. Safe to call twice.

        After close every request is refused with ``closed`` (and not audited: the log is closed).
        """
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            prev = self._state
            if prev in (SafetyState.ARMED, SafetyState.STIMULATING):
                self._state = SafetyState.DISARMED
            self._reset_outputs_locked(now)
            rec = self._record_locked(
                now,
                "close",
                "supervisor",
                "close",
                prev,
                message="safety supervisor closed",
                values={"dose_used_s": self._dose_used, "n_allowed": self.n_allowed, "n_refused": self.n_refused},
            )
            self._closed = True
            self._cond.notify_all()
        self._zero_outputs("safety supervisor closed")
        self._emit([rec])
        if self._watchdog is not None:
            self._watchdog.join(2.0)
        self._audit.close()

    def __enter__(self) -> SafetySupervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
