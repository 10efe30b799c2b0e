"""A stimulator that drives the simulated knee: pulse width in, knee angle out.

:class:`SimulatedStimulator` implements :class:`~stimulation.stimulator.Stimulator` with the
behaviour of the firmware box (``firmware/``) that matters to a controller and to the safety
supervisor, and feeds what it delivers to a :class:`~stimulation.nmes.knee_model.KneeModel`:

- states ``disarmed`` -> :meth:`arm` -> ``armed`` -> :meth:`stim_on` -> ``stimulating``;
  :meth:`estop` latches ``fault`` (``"estop"``) until :meth:`clear_fault`, which goes to
  ``disarmed``; a missed heartbeat (none for ``watchdog_s`` while armed) latches ``"watchdog"``;
- hard limits the host cannot raise (:data:`HARD_LIMITS`): values above them are refused with
  :class:`SimulatedNackError` and change nothing;
- the current of a channel that is switched on ramps up from 0 mA at ``ramp_ma_per_s``;
- the knee channel (``knee_channel``, the quadriceps) reaches the model as the pulse width scaled
  by the delivered current relative to the set current (``pw · I_now / I_set``), so the ramp
  reaches the muscle; the model assumes the 25 Hz pulse rate of the experiments.

Time: in *stepped* mode (default) nothing moves until :meth:`advance` is called — deterministic,
for tests, benchmarks and replay. :meth:`start_realtime` runs a thread that advances the model
with the monotonic clock at ``rate_hz`` (absolute deadlines) and hands every sensor sample to a
callback (:class:`~stimulation.nmes.knee_stream.KneeAngleStream` publishes them on LSL). The
watchdog runs on the simulation clock in stepped mode and on the monotonic clock in real-time
mode (so a simulation thread that falls behind and catches up cannot trip it by itself).

Thread safety: every public method may be called from any thread; one lock guards the device
state and the model (a model step of a few ms of simulated time is microseconds of work).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from acquisition.validation import check_int, check_positive, check_type
from stimulation.nmes.knee_model import NOMINAL_KNEE, KneeModel, KneeParams
from stimulation.stimulator import (
    ChannelState,
    Stimulator,
    StimulatorLinkError,
    StimulatorNackError,
    StimulatorStatus,
)

__all__ = ["HARD_LIMITS", "SimulatedNackError", "SimulatedStimulator"]

log = logging.getLogger(__name__)

#: Device hard limits of the simulated box (same role as the firmware's): current mA, pulse width µs, rate Hz.
HARD_LIMITS: dict[str, float] = {"current_ma": 100.0, "pulse_width_us": 500.0, "frequency_hz": 100.0}

_STEP_S = 0.005  # largest chunk of model time between device-state updates, s


class SimulatedNackError(StimulatorNackError):
    """The simulated device refused a command.

    Attributes
    ----------
    reason : str
        ``"limit"``, ``"state"`` or ``"fault"``.
    detail : str
        The field or state concerned.
    """

    def __init__(self, message: str, command: str, reason: str, detail: str) -> None:
        super().__init__(message, command)
        self.reason = reason
        self.detail = detail


@dataclass
class _Channel:
    target_ma: float = 0.0
    current_ma: float = 0.0
    pulse_width_us: float = 0.0
    frequency_hz: float = 25.0
    on: bool = False


class SimulatedStimulator(Stimulator):
    """Simulated stimulator box driving a knee model.

    Parameters
    ----------
    params : KneeParams
        The simulated subject.
    n_channels : int
        Output channels (>= 1).
    knee_channel : int
        The channel on the quadriceps (drives the model).
    fatigue, noise : bool
        Knee model switches (see :class:`~stimulation.nmes.knee_model.KneeModel`).
    seed : int
        Seed of the model's noise.
    watchdog_s : float or None
        Heartbeat timeout while armed, s (90 ms like the firmware); None disables it.
    ramp_ma_per_s : float
        Current ramp of a channel switched on, mA/s.
    name : str
        Name used in logs and by the safety supervisor.
    """

    def __init__(
        self,
        params: KneeParams = NOMINAL_KNEE,
        *,
        n_channels: int = 2,
        knee_channel: int = 0,
        fatigue: bool = True,
        noise: bool = True,
        seed: int = 0,
        watchdog_s: float | None = 0.09,
        ramp_ma_per_s: float = 200.0,
        name: str = "simulated-stimulator",
    ) -> None:
        check_type(params, KneeParams, "params")
        self._n = check_int(n_channels, "n_channels", minimum=1)
        self.knee_channel = check_int(knee_channel, "knee_channel", minimum=0)
        if self.knee_channel >= self._n:
            raise ValueError(f"knee_channel must be < n_channels ({self._n}), got {knee_channel!r}.")
        self.watchdog_s = None if watchdog_s is None else check_positive(watchdog_s, "watchdog_s")
        self.ramp_ma_per_s = check_positive(ramp_ma_per_s, "ramp_ma_per_s")
        self.name = name
        self.model = KneeModel(params, fatigue=fatigue, noise=noise, seed=seed)
        self._lock = threading.RLock()
        self._channels = [_Channel() for _ in range(self._n)]
        self._state = "disarmed"
        self._fault: str | None = None
        self._last_heartbeat = -math.inf
        self._closed = False
        self._delivered_pw = 0.0
        self._hb_thread: threading.Thread | None = None
        self._hb_stop = threading.Event()
        self._rt_thread: threading.Thread | None = None
        self._rt_stop = threading.Event()
        self._realtime = False
        self.heartbeats = 0
        self.realtime_deadlines_missed = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def close(self) -> None:
        """Stop the threads, every output off, disarm. Safe twice."""
        if self._closed:
            return
        self.stop_realtime()
        self.stop_heartbeat()
        with self._lock:
            self._all_off()
            if self._state != "fault":
                self._state = "disarmed"
            self._closed = True

    @property
    def n_channels(self) -> int:
        """Number of output channels."""
        return self._n

    def _check_open(self, command: str) -> None:
        if self._closed:
            raise StimulatorLinkError(f"{self.name}: {command} on a closed stimulator", command)

    # ------------------------------------------------------------------ identity and state
    def hello(self) -> dict[str, Any]:
        """Identity and hard limits."""
        self._check_open("hello")
        return {"device": "simulated knee stimulator", "n_channels": self._n, "hard_limits": dict(HARD_LIMITS)}

    def stimulator_status(self) -> StimulatorStatus:
        """State, fault and what every channel delivers now."""
        self._check_open("status")
        with self._lock:
            self._update_state()
            chans = tuple(
                ChannelState(c.current_ma, c.target_ma, c.pulse_width_us, c.frequency_hz, c.on) for c in self._channels
            )
            outputs = sum(1 << i for i, c in enumerate(self._channels) if c.on)
            return StimulatorStatus(
                self._state,
                self._fault,
                chans,
                outputs,
                {"time_s": self.model.time_s, "knee_angle_deg": self.model.angle_deg, "fitness": self.model.fitness},
            )

    def _refuse(self, command: str, reason: str, detail: str, message: str) -> None:
        raise SimulatedNackError(
            f"{self.name}: {command} refused ({reason}: {detail}): {message}", command, reason, detail
        )

    def _require_not_fault(self, command: str) -> None:
        self._update_state()
        if self._state == "fault":
            self._refuse(command, "fault", str(self._fault), "a fault is latched; clear_fault() first")

    def arm(self) -> str:
        """Allow stimulation; heartbeats are needed from now on (when the watchdog is on)."""
        self._check_open("arm")
        with self._lock:
            self._require_not_fault("arm")
            if self._state == "disarmed":
                self._state = "armed"
            self._last_heartbeat = self._now()
            return self._state

    def disarm(self) -> str:
        """Every output off; stimulation refused until armed again (a fault stays latched)."""
        self._check_open("disarm")
        with self._lock:
            self._all_off()
            if self._state != "fault":
                self._state = "disarmed"
            return self._state

    # ------------------------------------------------------------------ stimulation
    def set_channel(self, channel: int, *, current_ma: float, pulse_width_us: float, frequency_hz: float) -> str:
        """Pulse parameters of one channel (take effect at once if it is on); refused above the hard limits."""
        self._check_open("set_channel")
        ch = check_int(channel, "channel", minimum=0)
        if ch >= self._n:
            raise ValueError(f"channel must be in 0..{self._n - 1}, got {channel!r}.")
        values = {"current_ma": current_ma, "pulse_width_us": pulse_width_us, "frequency_hz": frequency_hz}
        for key, v in values.items():
            check_type(v, (int, float), key)
            if not math.isfinite(v) or v < 0 or (key == "frequency_hz" and v == 0):
                raise ValueError(f"{key} must be a finite number >= 0 (> 0 for the rate), got {v!r}.")
        with self._lock:
            self._require_not_fault("set_channel")
            for key, v in values.items():
                if v > HARD_LIMITS[key]:
                    self._refuse("set_channel", "limit", key, f"{v:g} is above the device limit {HARD_LIMITS[key]:g}")
            c = self._channels[ch]
            c.target_ma = float(current_ma)
            c.current_ma = min(c.current_ma, c.target_ma)
            c.pulse_width_us = float(pulse_width_us)
            c.frequency_hz = float(frequency_hz)
            return self._state

    def _mask(self, channels: int | Iterable[int] | None) -> list[int]:
        if channels is None:
            return list(range(self._n))
        idx = [channels] if isinstance(channels, int) else list(channels)
        for i in idx:
            check_int(i, "channel", minimum=0)
            if i >= self._n:
                raise ValueError(f"channel must be in 0..{self._n - 1}, got {i!r}.")
        return idx

    def stim_on(self, channels: int | Iterable[int]) -> str:
        """Start the given channel(s); each ramps up from 0 mA. Refused unless armed."""
        self._check_open("stim_on")
        idx = self._mask(channels)
        with self._lock:
            self._require_not_fault("stim_on")
            if self._state == "disarmed":
                self._refuse("stim_on", "state", "disarmed", "arm() first")
            for i in idx:
                if not self._channels[i].on:
                    self._channels[i].on = True
                    self._channels[i].current_ma = 0.0
            self._state = "stimulating"
            self._push_to_model()
            return self._state

    def stim_off(self, channels: int | Iterable[int] | None = None) -> str:
        """Stop the given channel(s), every channel when None."""
        self._check_open("stim_off")
        idx = self._mask(channels)
        with self._lock:
            for i in idx:
                self._channels[i].on = False
                self._channels[i].current_ma = 0.0
            if self._state == "stimulating" and not any(c.on for c in self._channels):
                self._state = "armed"
            self._push_to_model()
            return self._state

    def set_pulse_width(self, pulse_width_us: float) -> None:
        """Change only the knee channel's pulse width, µs (what a controller does every pulse)."""
        with self._lock:
            c = self._channels[self.knee_channel]
            self.set_channel(
                self.knee_channel, current_ma=c.target_ma, pulse_width_us=pulse_width_us, frequency_hz=c.frequency_hz
            )
            self._push_to_model()

    # ------------------------------------------------------------------ safety
    def heartbeat(self) -> float:
        """Feed the watchdog; returns the watchdog-clock time it was taken at, s."""
        self._check_open("heartbeat")
        with self._lock:
            self._update_state()
            self._last_heartbeat = self._now()
            self.heartbeats += 1
            return self._last_heartbeat

    def start_heartbeat(self, rate_hz: float | None = None) -> None:
        """Heartbeats from a thread at ``rate_hz`` (20 Hz default), absolute deadlines on the monotonic clock."""
        self._check_open("start_heartbeat")
        period = 1.0 / check_positive(rate_hz if rate_hz is not None else 20.0, "rate_hz")
        self.stop_heartbeat()
        self._hb_stop = threading.Event()
        stop = self._hb_stop

        def loop() -> None:
            nxt = time.monotonic()
            while not stop.is_set():
                self.heartbeat()
                nxt += period
                stop.wait(max(0.0, nxt - time.monotonic()))

        self._hb_thread = threading.Thread(target=loop, name="simstim-heartbeat", daemon=True)
        self._hb_thread.start()

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat thread (the watchdog then trips while armed)."""
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=2.0)
            self._hb_thread = None

    def estop(self) -> str:
        """Every output off now; latches the fault ``"estop"``."""
        self._check_open("estop")
        with self._lock:
            self._enter_fault("estop")
            return self._state

    def clear_fault(self) -> str:
        """Leave a latched fault for ``disarmed``."""
        self._check_open("clear_fault")
        with self._lock:
            self._update_state()
            if self._state == "fault":
                self._state = "disarmed"
                self._fault = None
            return self._state

    def _enter_fault(self, fault: str) -> None:
        self._all_off()
        if self._state != "fault":
            log.warning("%s: fault %s at t=%.3f s, outputs off", self.name, fault, self.model.time_s)
        self._state = "fault"
        self._fault = fault

    def _all_off(self) -> None:
        for c in self._channels:
            c.on = False
            c.current_ma = 0.0
        self._push_to_model()

    def _now(self) -> float:
        """Watchdog clock: monotonic in real-time mode, simulation time in stepped mode, s."""
        return time.monotonic() if self._realtime else self.model.time_s

    def _update_state(self) -> None:
        if (
            self.watchdog_s is not None
            and self._state in ("armed", "stimulating")
            and self._now() - self._last_heartbeat > self.watchdog_s
        ):
            self._enter_fault("watchdog")

    # ------------------------------------------------------------------ the knee
    @property
    def delivered_pulse_width_us(self) -> float:
        """Pulse width reaching the muscle now (scaled by the ramping current), µs."""
        return self._delivered_pw

    def _push_to_model(self) -> None:
        c = self._channels[self.knee_channel]
        pw = 0.0
        if self._state == "stimulating" and c.on and c.target_ma > 0:
            pw = c.pulse_width_us * min(1.0, c.current_ma / c.target_ma)
        if pw != self._delivered_pw:
            self.model.command(pw)
            self._delivered_pw = pw

    def advance(self, duration_s: float) -> float:
        """Move the simulation ``duration_s`` seconds ahead (stepped mode); returns the true angle, degrees.

        The device state (ramp, watchdog) is updated every 5 ms of simulated time.
        """
        self._check_open("advance")
        remaining = check_positive(duration_s, "duration_s", allow_zero=True)
        with self._lock:
            while remaining > 1e-12:
                dt = min(_STEP_S, remaining)
                self._update_state()
                for c in self._channels:
                    if c.on and c.current_ma < c.target_ma:
                        c.current_ma = min(c.target_ma, c.current_ma + self.ramp_ma_per_s * dt)
                self._push_to_model()
                self.model.advance(dt)
                remaining -= dt
            self._update_state()
            return self.model.angle_deg

    def read_angle_deg(self) -> float:
        """The knee angle as the sensor reads it now (with noise), degrees."""
        with self._lock:
            return self.model.measure()

    @property
    def time_s(self) -> float:
        """Simulation time, s."""
        return self.model.time_s

    def start_realtime(self, rate_hz: float = 200.0, on_sample: Callable[[float, float], None] | None = None) -> None:
        """Advance the model with the wall clock on a thread, one sensor sample every ``1 / rate_hz`` s.

        Parameters
        ----------
        rate_hz : float
            Sensor sample rate, Hz.
        on_sample : callable, optional
            ``on_sample(monotonic_time_s, angle_deg)`` for every sample, on the simulation thread
            (keep it short). An exception in it stops the thread, turns outputs off and latches
            the fault ``"simulator"``.
        """
        self._check_open("start_realtime")
        period = 1.0 / check_positive(rate_hz, "rate_hz")
        self.stop_realtime()
        self._rt_stop = threading.Event()
        stop = self._rt_stop
        with self._lock:
            self._realtime = True
            self._last_heartbeat = time.monotonic()  # the clock changes: a fresh watchdog period

        def loop() -> None:
            nxt = time.monotonic()
            try:
                while not stop.is_set():
                    nxt += period
                    delay = nxt - time.monotonic()
                    if delay > 0:
                        if stop.wait(delay):
                            break
                    elif delay < -period:
                        self.realtime_deadlines_missed += 1
                    self.advance(period)
                    angle = self.read_angle_deg()
                    if on_sample is not None:
                        on_sample(time.monotonic(), angle)
            except Exception:
                log.exception("%s: real-time simulation failed; outputs off", self.name)
                with self._lock:
                    self._enter_fault("simulator")

        self._rt_thread = threading.Thread(target=loop, name="simstim-realtime", daemon=True)
        self._rt_thread.start()

    def stop_realtime(self) -> None:
        """Stop the real-time thread (the simulation then waits in stepped mode)."""
        self._rt_stop.set()
        if self._rt_thread is not None:
            self._rt_thread.join(timeout=2.0)
            self._rt_thread = None
        with self._lock:
            if self._realtime:
                self._realtime = False
                self._last_heartbeat = self.model.time_s
