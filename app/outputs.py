"""Command outputs. Every output has ``send(command)``, ``safe_state(reason)`` and ``close()``.

- :class:`LslCommandOutlet` publishes commands on an LSL Markers stream;
- :class:`StimulatorOutput` drives a stimulator (firmware box, RehaStim 2, simulator) for the
  NMES control loop, behind the SafetySupervisor;
- :class:`AudioOutput` plays a pink-noise burst for each command with the trigger label, behind
  the SafetySupervisor (``stimulation.audio``).

Every output is registered with the session's SafetySupervisor, which calls ``safe_state`` on a
fault, e-stop, disarm, stale-data lapse and close.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import select
import subprocess
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pylsl

from acquisition.lsl import make_outlet
from acquisition.stream import StreamInfo
from app.pipeline import Command
from stimulation.knee_plant import PlantInput
from stimulation.safety import Decision, NmesRequest
from stimulation.stimulator import Stimulator, StimulatorError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
STIMBOX_SIM = REPO / "firmware" / "build" / "stimbox-sim"


@runtime_checkable
class Output(Protocol):
    """Something commands go to. ``send`` runs on a pipeline's decoding thread."""

    name: str

    def send(self, command: Command) -> None:
        """Deliver one command (must not block for long)."""

    def safe_state(self, reason: str) -> None:
        """Put the output in its safe state (stimulation off, robot stopped...)."""

    def close(self) -> None:
        """Release resources (after ``safe_state``)."""


COMMAND_STREAM_TYPE = "Markers"


class LslCommandOutlet:
    """Publishes every command as a JSON string on an LSL ``Markers`` stream.

    A ``safe_state`` is published as ``{"event": "safe_state", "reason": ...}`` so listeners
    (stimulus programs, robots) can stop too.
    """

    def __init__(self, name: str, stream_name: str = "closedloop-commands", source_id: str = "") -> None:
        self.name = name
        self.info = StreamInfo.simple(
            stream_name,
            COMMAND_STREAM_TYPE,
            ["command"],
            0.0,
            channel_format="string",
            source_id=source_id or f"closedloop-commands-{stream_name}",
        )
        self._outlet = make_outlet(self.info)
        self.n_sent = 0

    def send(self, command: Command) -> None:
        """Push ``command.to_json()`` stamped with the command's issue time."""
        self._outlet.push_sample([command.to_json()], command.issued_time)
        self.n_sent += 1

    def safe_state(self, reason: str) -> None:
        """Announce the safe state on the stream."""
        msg = json.dumps({"event": "safe_state", "reason": reason})
        self._outlet.push_sample([msg], pylsl.local_clock())

    def close(self) -> None:
        """Drop the outlet."""
        self._outlet = None  # type: ignore[assignment]


# ============================================================================ stimulator
class StimboxSimProcess:
    """``firmware/build/stimbox-sim`` running on a fresh pseudo-terminal (built with make if missing).

    The simulator exits when its stdin pipe closes (:meth:`close`, or this process dying).

    Parameters
    ----------
    binary : Path
        The host build of the firmware.
    log_path : Path, optional
        Where the simulator writes its log (stderr); discarded when None.
    timeout_s : float
        How long to wait for the pty path on its stdout, s.

    Raises
    ------
    RuntimeError
        When the binary cannot be built or does not print a pty path in time.
    """

    def __init__(self, binary: Path = STIMBOX_SIM, *, log_path: Path | None = None, timeout_s: float = 10.0) -> None:
        if not binary.is_file():
            try:
                subprocess.run(
                    ["make", "-C", str(binary.parents[1]), "sim"], check=True, capture_output=True, timeout=300
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise RuntimeError(
                    f"{binary} is missing and `make -C firmware sim` failed ({exc}); install make and a C compiler."
                ) from exc
        self._log = log_path.open("ab") if log_path is not None else None
        self.proc = subprocess.Popen(
            [str(binary)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline().decode(errors="replace").strip() if ready else ""
        if not line.startswith("/dev/"):
            self.close()
            raise RuntimeError(f"stimbox-sim did not print a pty path within {timeout_s} s (got {line!r}).")
        self.path = line

    def close(self, timeout_s: float = 5.0) -> None:
        """Close its stdin (it turns outputs off and exits), wait, kill if it hangs. Safe twice."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()


def build_stimulator(
    driver: str,
    port: str,
    *,
    timeout_s: float,
    heartbeat_hz: float,
    seed: int = 0,
    on_event: Any = None,
    on_error: Any = None,
) -> tuple[Stimulator, StimboxSimProcess | None]:
    """Open the driver an ``[outputs.X] kind = "stimulator"`` table names.

    Parameters
    ----------
    driver : {"serial", "sim", "rehastim"}
    port : str
        Serial port; ``"stimbox-sim"`` (serial only) starts the firmware's host build on a pty.
    timeout_s : float
        Per-command reply timeout, s.
    heartbeat_hz : float
        Heartbeat rate of drivers with a device watchdog, Hz.
    seed : int
        Seed of the simulated stimulator.
    on_event, on_error : callable, optional
        Serial driver hooks (device EVENT frames, background failures).

    Returns
    -------
    (Stimulator, StimboxSimProcess or None)
        The opened driver and the simulator process it talks to (when started here).
    """
    if driver == "serial":
        from app.config import STIMBOX_SIM_PORT
        from stimulation.serial_stimulator import SerialStimulator

        sim = StimboxSimProcess() if port == STIMBOX_SIM_PORT else None
        try:
            stim = SerialStimulator(
                sim.path if sim is not None else port,
                timeout_s=timeout_s,
                heartbeat_hz=heartbeat_hz,
                on_event=on_event,
                on_error=on_error,
            )
        except BaseException:
            if sim is not None:
                sim.close()
            raise
        return stim, sim
    if driver == "rehastim":
        from stimulation.rehastim import RehaStimStimulator

        return RehaStimStimulator(port, timeout_s=max(timeout_s, 1.0)), None
    if driver == "sim":
        from stimulation.sim_stimulator import SimulatedStimulator

        sim_stim = SimulatedStimulator(seed=seed)
        sim_stim.start_realtime(200.0)  # device state (ramps, watchdog) follows the wall clock
        return sim_stim, None
    raise ValueError(f"unknown stimulator driver {driver!r}; use 'serial', 'sim' or 'rehastim'.")


class StimulatorOutput:
    """One stimulator channel driven by the NMES control loop, behind the SafetySupervisor.

    The loop asks the supervisor; the supervisor calls :meth:`apply` with an allowed decision
    under its delivery lock. :meth:`delivered` is what the device *confirmed* it delivers (read
    back after every update, and cleared at once by a device EVENT that turns the channel off),
    which is what the simulated knee (``stimulation.knee_plant``) moves with.

    Commands from decoding pipelines are not stimulation requests: :meth:`send` only counts them.

    Parameters
    ----------
    name : str
        Output name (config key).
    driver : Stimulator
        An opened driver.
    channel : int
        Channel this output drives.
    current_ma : float
        Fixed current of the pulse-width-modulated train, mA (the supervisor may ramp it).
    frequency_hz : float
        Pulse rate, Hz.
    sim_process : StimboxSimProcess, optional
        A simulator process to stop on :meth:`close`.
    """

    def __init__(
        self,
        name: str,
        driver: Stimulator,
        *,
        channel: int = 0,
        current_ma: float = 30.0,
        frequency_hz: float = 25.0,
        sim_process: StimboxSimProcess | None = None,
    ) -> None:
        if not 0 <= channel < driver.n_channels:
            raise ValueError(
                f"output {name!r}: channel must be 0..{driver.n_channels - 1} on {driver.name}, got {channel}."
            )
        self.name = name
        self.driver = driver
        self.channel = channel
        self.current_ma = float(current_ma)
        self.frequency_hz = float(frequency_hz)
        self.sim_process = sim_process
        self._delivered = PlantInput()
        self._on = False
        self.n_ignored_commands = 0
        self.n_updates = 0
        self.n_safe_states = 0
        self.last_safe_reason = ""
        self.last_off_event_s = math.nan  # host time.monotonic() of the latest device EVENT with this channel off
        self._closed = False

    # ------------------------------------------------------------------ what the plant sees
    def delivered(self) -> PlantInput:
        """Pulse width (µs) and current (mA) the device confirmed on this channel; zeros when off."""
        return self._delivered

    def on_device_event(self, timed_event: Any) -> None:
        """Serial driver hook (reader thread): the device turned this channel off by itself (watchdog, e-stop)."""
        ev = getattr(timed_event, "event", timed_event)
        if not (int(getattr(ev, "outputs", 0)) >> self.channel) & 1:
            self._on = False
            self._delivered = PlantInput()
            self.last_off_event_s = float(getattr(timed_event, "received_s", math.nan))

    # ------------------------------------------------------------------ Output protocol
    def send(self, command: Command) -> None:
        """Decoded commands do not drive NMES (the controller does); counted only."""
        self.n_ignored_commands += 1

    def apply(self, decision: Decision) -> None:
        """Push an allowed decision to the device (called by ``SafetySupervisor.deliver``).

        Raises
        ------
        StimulatorError
            When the device refuses or does not answer (the supervisor then latches a fault).
        """
        req = decision.granted
        if not isinstance(req, NmesRequest):
            raise TypeError(f"output {self.name!r} delivers NMES requests, got {type(req).__name__}.")
        if req.is_stop:
            if self._on:
                self.driver.stim_off(self.channel)
                self._on = False
            self._delivered = PlantInput()
            return
        self.driver.set_channel(
            self.channel, current_ma=req.current_ma, pulse_width_us=req.pulse_width_us, frequency_hz=req.frequency_hz
        )
        if not self._on:
            self.driver.stim_on(self.channel)
            self._on = True
        self.n_updates += 1
        st = self.driver.stimulator_status().channels[self.channel]
        self._delivered = PlantInput(st.delivered_pulse_width_us, st.current_ma if st.on else 0.0)

    def safe_state(self, reason: str) -> None:
        """Every channel of the device off now (waits for the device's ACK)."""
        self._delivered = PlantInput()
        self._on = False
        self.n_safe_states += 1
        self.last_safe_reason = reason
        if self._closed or self.driver.closed:
            return
        self.driver.safe_state(reason)

    # ------------------------------------------------------------------ device state commands
    def arm(self) -> None:
        """Arm the device (its watchdog starts; the driver's heartbeat thread keeps it fed)."""
        self.driver.arm()

    def disarm(self) -> None:
        """Disarm the device (outputs off)."""
        self._on = False
        self._delivered = PlantInput()
        self.driver.disarm()

    def estop(self) -> None:
        """Device e-stop: outputs off and a fault latched on the device."""
        self._on = False
        self._delivered = PlantInput()
        self.driver.estop()

    def clear_fault(self) -> None:
        """Clear the device's latched fault (to disarmed), if it has one."""
        st = self.driver.stimulator_status()
        if st.state == "fault":
            self.driver.clear_fault()

    def status(self) -> dict[str, Any]:
        """JSON-able: driver, channel, what is delivered, device state."""
        out: dict[str, Any] = {
            "kind": "stimulator",
            "driver": self.driver.name,
            "channel": self.channel,
            "current_ma": self.current_ma,
            "frequency_hz": self.frequency_hz,
            "delivered_pulse_width_us": self._delivered.pulse_width_us,
            "delivered_current_ma": self._delivered.current_ma,
            "updates": self.n_updates,
            "safe_states": self.n_safe_states,
        }
        return out

    def close(self) -> None:
        """Outputs off and disarm best-effort, release the driver, stop a simulator process. Safe twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.driver.close()
        except (StimulatorError, OSError) as exc:
            log.warning("output %r: closing %s failed: %r", self.name, self.driver.name, exc)
        if self.sim_process is not None:
            self.sim_process.close()


# ============================================================================ audio
class AudioOutput:
    """Plays a pink-noise burst for every command whose label is the trigger label (e.g. a spindle detection).

    The burst is requested at the command's issue time and goes through the session's
    SafetySupervisor (level and rate limits, armed state); see :mod:`stimulation.audio` for the
    sinks, the timing and the LSL marker stream.

    Parameters
    ----------
    name : str
        Output name (config key).
    stimulator : AudioStimulator
        The burst generator (its ``supervisor`` is set by the Session when it registers this output).
    trigger_label : str
        Command label that triggers a burst.
    """

    def __init__(self, name: str, stimulator: Any, *, trigger_label: str = "spindle") -> None:
        self.name = name
        self.stimulator = stimulator
        self.trigger_label = trigger_label
        self.n_triggers = 0
        self.n_ignored = 0

    @classmethod
    def from_options(cls, name: str, o: dict[str, Any], *, session_name: str, base_dir: Path) -> AudioOutput:
        """Build from a validated ``[outputs.NAME] kind = "audio"`` table."""
        from datetime import datetime

        from stimulation.audio import AudioStimulator, open_sink

        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = base_dir / o["path"].format(session=session_name, time=stamp)
        sink = open_sink(o["sink"], samplerate=o["samplerate"], path=path)
        stim = AudioStimulator(
            sink,
            level_db=o["level_db"],
            burst_ms=o["burst_ms"],
            full_scale_db_spl=o["full_scale_db_spl"],
            marker_stream=o["marker_stream"],
        )
        return cls(name, stim, trigger_label=o["trigger_label"])

    @property
    def supervisor(self) -> Any:
        """The SafetySupervisor every burst goes through (None: not yet registered)."""
        return self.stimulator.supervisor

    @supervisor.setter
    def supervisor(self, value: Any) -> None:
        self.stimulator.supervisor = value

    def send(self, command: Command) -> None:
        """A burst for a command with the trigger label; other commands are counted and ignored."""
        if command.label != self.trigger_label:
            self.n_ignored += 1
            return
        self.n_triggers += 1
        if self.stimulator.supervisor is None:
            raise RuntimeError(f"audio output {self.name!r} has no safety supervisor; it cannot play bursts.")
        self.stimulator.burst(request_time=command.issued_time, source=f"pipeline:{command.pipeline}")

    def safe_state(self, reason: str) -> None:
        """Silence now."""
        self.stimulator.safe_state(reason)

    def status(self) -> dict[str, Any]:
        """JSON-able: sink, bursts played and refused, last request-to-start latency."""
        bursts = self.stimulator.bursts
        last = bursts[-1] if bursts else None
        return {
            "kind": "audio",
            "sink": self.stimulator.sink.kind,
            "triggers": self.n_triggers,
            "bursts": len(bursts),
            "refused": len(self.stimulator.refused),
            "last_latency_ms": last.latency_ms if last is not None and last.started.is_set() else None,
        }

    def close(self) -> None:
        """Silence and release the sink."""
        self.stimulator.close()
