"""The NMES control loop: knee-angle stream -> controller (5 ms) -> SafetySupervisor -> stimulator (25 Hz).

:class:`NmesControlLoop` is the thin thread adapter around a pure controller (B1's
``RiseController`` / ``PidController``, or anything with ``step(theta_ref_deg, theta_deg) ->
pulse width µs``). Every ``period_s`` (absolute deadlines on ``time.monotonic``) it:

1. reads the newest sample of the angle stream and reports its age to the supervisor
   (:meth:`~stimulation.safety.SafetySupervisor.data_age`) together with a heartbeat;
2. while the supervisor is armed and the data is fresh, steps the controller with the reference
   trajectory's value at that time (the controller is reset whenever stepping resumes, so
   integral terms never wind up while disarmed or stale);
3. every ``1 / update_hz`` s asks the supervisor to deliver ``NmesRequest(pulse_width_us=...)``
   at the output's fixed current and pulse rate; the supervisor checks limits, logs the decision
   and, if allowed, calls :meth:`app.outputs.StimulatorOutput.apply` under its delivery lock.

While disarmed (or in fault) no request is made at all — nothing to refuse, nothing to log 25
times a second. Stale data is handled by the supervisor itself (``data_age`` -> outputs zeroed,
requests refused ``stale_data``) and, for a lost source, by the Session's ``report_error`` ->
``upstream_fault``. An exception in the loop goes to ``on_error`` (the Session), which latches an
upstream fault: outputs to zero.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pylsl

from acquisition.ringbuffer import RingBuffer
from acquisition.source import BufferedStream
from stimulation.safety import Decision, NmesRequest, SafetyState, SafetySupervisor

__all__ = ["NmesControlLoop", "NmesTarget", "PulseWidthController", "Reference", "make_reference"]

log = logging.getLogger(__name__)


class PulseWidthController(Protocol):
    """What the loop drives: ``step(theta_ref_deg, theta_deg) -> pulse width µs`` every ``dt_s``."""

    def step(self, theta_ref_deg: float, theta_deg: float) -> float:
        """One control period; returns the pulse width to deliver, µs."""


class NmesTarget(Protocol):
    """The stimulator side of the loop (:class:`app.outputs.StimulatorOutput` is one)."""

    name: str
    channel: int
    current_ma: float
    frequency_hz: float

    def apply(self, decision: Decision) -> None:
        """Push ``decision.granted`` to the device (called under the supervisor's delivery lock)."""


Reference = Callable[[float], float]
"""``reference(t_s) -> θ_ref`` in degrees, ``t_s`` seconds since the loop started."""


def make_reference(kind: str, min_deg: float, max_deg: float, period_s: float) -> Reference:
    """A target trajectory.

    Parameters
    ----------
    kind : {"sine", "step", "constant"}
        ``sine``: between ``min_deg`` and ``max_deg`` with period ``period_s`` starting at the
        minimum; ``step``: ``min_deg`` for the first half period then ``max_deg``, repeating;
        ``constant``: ``max_deg``.
    min_deg, max_deg : float
        Range, degrees.
    period_s : float
        Period, s.
    """
    if kind == "sine":
        mid, amp = (min_deg + max_deg) / 2, (max_deg - min_deg) / 2
        return lambda t: mid - amp * math.cos(2 * math.pi * t / period_s)
    if kind == "step":
        return lambda t: min_deg if (t % period_s) < period_s / 2 else max_deg
    if kind == "constant":
        return lambda t: max_deg
    raise ValueError(f"reference kind must be 'sine', 'step' or 'constant', got {kind!r}.")


@dataclass
class LoopSample:
    """The loop's latest values (read by status displays)."""

    t: float = math.nan
    theta_ref_deg: float = math.nan
    theta_deg: float = math.nan
    pulse_width_us: float = 0.0
    data_age_s: float = math.nan


class NmesControlLoop:
    """Run a pulse-width controller on a knee-angle stream behind the safety supervisor.

    Parameters
    ----------
    name : str
        Controller name (config key), used as the request ``source`` in the audit log.
    controller : PulseWidthController
        Stepped every ``period_s``; ``reset()`` is called (when it has one) whenever stepping resumes.
    stream : BufferedStream
        Numeric stream with the knee angle in degrees.
    supervisor : SafetySupervisor
        The session's supervisor.
    target : NmesTarget
        The stimulator output.
    reference : callable
        Target trajectory (:func:`make_reference`).
    period_s : float
        Control period, s (5 ms for RISE).
    update_hz : float
        Rate of pulse-width updates sent to the stimulator, Hz (25 Hz).
    channel_index : int
        Column of the stream holding the angle.
    on_error : callable
        ``on_error(where, exc, traceback_text)`` on the loop thread when the loop fails; the loop ends.
    clock : callable
        The stream's clock (``pylsl.local_clock``).
    on_update : callable, optional
        ``on_update(details, time)`` after every pulse-width request, on the loop thread (the
        Session records it as an ``nmes_update`` event in the XDF); keep it short.
    """

    def __init__(
        self,
        name: str,
        controller: PulseWidthController,
        stream: BufferedStream,
        supervisor: SafetySupervisor,
        target: NmesTarget,
        reference: Reference,
        *,
        period_s: float = 0.005,
        update_hz: float = 25.0,
        channel_index: int = 0,
        on_error: Callable[[str, BaseException, str], None] | None = None,
        clock: Callable[[], float] = pylsl.local_clock,
        on_update: Callable[[dict[str, Any], float], None] | None = None,
    ) -> None:
        if not isinstance(stream.buffer, RingBuffer):
            raise TypeError(f"controller {name!r} needs a numeric stream, got marker stream {stream.info.name!r}.")
        if not callable(getattr(controller, "step", None)):
            raise TypeError(f"controller must have step(theta_ref_deg, theta_deg), got {type(controller).__name__}.")
        if not 0 <= channel_index < stream.info.n_channels:
            raise ValueError(
                f"channel_index must be in 0..{stream.info.n_channels - 1} for stream {stream.info.name!r}, "
                f"got {channel_index}."
            )
        self.name = name
        self.controller = controller
        self.stream = stream
        self.supervisor = supervisor
        self.target = target
        self.reference = reference
        self.period_s = float(period_s)
        self.ticks_per_update = max(1, round(1.0 / (update_hz * period_s)))
        self.channel_index = channel_index
        self.on_error = on_error
        self._clock = clock
        self.on_update = on_update
        self._buffer: RingBuffer = stream.buffer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latest = LoopSample()
        self.decisions: Counter[str] = Counter()
        self.n_ticks = 0
        self.n_steps = 0
        self.n_deadlines_missed = 0
        self.error: BaseException | None = None
        self.history: list[tuple[float, float, float, float]] = []  # (t, ref, theta, pw) per update, bounded
        self.max_history = 10_000

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        """True while the loop thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the loop thread."""
        if self.running:
            raise RuntimeError(f"controller {self.name!r} is already running.")
        self._stop.clear()
        self._thread = threading.Thread(target=self._guarded_run, name=f"nmes:{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the loop thread (joins at most ``timeout_s``)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self._thread = None

    def status(self) -> dict[str, Any]:
        """JSON-able snapshot: latest reference, angle, pulse width, decision counts."""
        s = self.latest
        return {
            "running": self.running,
            "theta_ref_deg": s.theta_ref_deg,
            "theta_deg": s.theta_deg,
            "pulse_width_us": s.pulse_width_us,
            "data_age_s": s.data_age_s,
            "steps": self.n_steps,
            "deadlines_missed": self.n_deadlines_missed,
            "decisions": dict(self.decisions),
        }

    def summary(self) -> dict[str, Any]:
        """Tracking RMSE over the updates delivered while stimulating (degrees), and decision counts."""
        live = [(r, th) for (_, r, th, pw) in self.history if pw > 0 and math.isfinite(th)]
        rmse = math.sqrt(sum((r - th) ** 2 for r, th in live) / len(live)) if live else math.nan
        return {
            "updates": len(self.history),
            "stimulating_updates": len(live),
            "rmse_deg": rmse,
            "decisions": dict(self.decisions),
            "deadlines_missed": self.n_deadlines_missed,
        }

    # ------------------------------------------------------------------ loop
    def _guarded_run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - handed to the session, which latches an upstream fault
            self.error = exc
            log.error("controller %r failed: %r", self.name, exc)
            if self.on_error is not None:
                self.on_error(f"controller:{self.name}", exc, traceback.format_exc())

    def _run(self) -> None:
        sup = self.supervisor
        stale_after = sup.stale_after_s
        stream_key = f"controller:{self.name}"
        t_start = self._clock()
        next_t = time.monotonic()
        stepping = False
        while not self._stop.is_set():
            self.n_ticks += 1
            now = self._clock()
            last = self._buffer.latest(1)
            sup.heartbeat()
            if len(last) == 0:
                age = math.inf
                theta = math.nan
            else:
                theta = float(last.data[-1, self.channel_index])
                age = now - float(last.timestamps[-1])
            sup.data_age(age if math.isfinite(age) else math.nan, stream_key)
            live = sup.state in (SafetyState.ARMED, SafetyState.STIMULATING)
            fresh = age <= stale_after and math.isfinite(theta)
            t = now - t_start
            ref = self.reference(t)
            if live and fresh:
                if not stepping:
                    reset = getattr(self.controller, "reset", None)
                    if callable(reset):
                        reset()
                    stepping = True
                pw = float(self.controller.step(ref, theta))
                self.n_steps += 1
            else:
                stepping = False
                pw = 0.0
            self.latest = LoopSample(t, ref, theta, pw, age)
            if live and self.n_ticks % self.ticks_per_update == 0:
                self._deliver(pw, t, ref, theta)
            next_t += self.period_s
            wait = next_t - time.monotonic()
            if wait < 0:
                skipped = math.floor(-wait / self.period_s) + 1
                self.n_deadlines_missed += skipped
                next_t += skipped * self.period_s
                wait = next_t - time.monotonic()
            self._stop.wait(max(0.0, wait))

    def _deliver(self, pw: float, t: float, ref: float, theta: float) -> None:
        tgt = self.target
        req = NmesRequest(
            channel=tgt.channel,
            current_ma=tgt.current_ma,  # pulse width 0 makes it a stop request
            pulse_width_us=pw,
            frequency_hz=tgt.frequency_hz,
            duration_s=2.0 * self.ticks_per_update * self.period_s,  # two update periods: one late update is ok
            source=f"controller:{self.name}",
        )
        decision = self.supervisor.deliver(req, tgt.apply)
        self.decisions[decision.reason.value] += 1
        delivered = pw if decision.allowed else 0.0
        if len(self.history) < self.max_history:
            self.history.append((t, ref, theta, delivered))
        if self.on_update is not None:
            details = {
                "controller": self.name,
                "theta_ref_deg": ref,
                "theta_deg": theta,
                "pulse_width_us": pw,
                "allowed": decision.allowed,
                "reason": decision.reason.value,
                "current_ma": getattr(decision.granted, "current_ma", 0.0),
            }
            self.on_update(details, decision.time)
