"""One interface for every stimulator driver: the firmware box, the RehaStim 2 and the simulator.

:class:`Stimulator` is the contract the Session, the NMES controller and the safety supervisor
code against. Three implementations:

- :class:`stimulation.serial_stimulator.SerialStimulator` — the stimulator interface box
  (``firmware/``) over a serial port (tested against ``stimbox-sim`` on a pty);
- :class:`stimulation.rehastim.RehaStimStimulator` — Hasomed RehaStim 2 through ``pysciencemode``;
- ``stimulation.sim_stimulator.SimulatedStimulator`` — drives the simulated knee model.

Units everywhere: current in mA, pulse (phase) width in µs, pulse rate in Hz, times in s unless
the name says ms. Channels are 0-based indices. Every method blocks at most the driver's
``timeout_s`` and raises a :class:`StimulatorError` subclass when the device refuses or does not
answer; :meth:`Stimulator.safe_state` is the safety supervisor's hook (stop every output now).

The supervisor decides, the driver delivers: nothing here checks clinical limits (the
:class:`~stimulation.safety.SafetySupervisor` does, and the device keeps its own hard limits).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ChannelState",
    "Stimulator",
    "StimulatorError",
    "StimulatorLinkError",
    "StimulatorNackError",
    "StimulatorStatus",
    "StimulatorTimeoutError",
]


class StimulatorError(RuntimeError):
    """A stimulator command did not succeed.

    Attributes
    ----------
    command : object or None
        The command concerned (a :class:`~stimulation.protocol.Cmd` for the serial box, a name
        otherwise; None for a link failure outside a command).
    """

    def __init__(self, message: str, command: Any = None) -> None:
        super().__init__(message)
        self.command = command


class StimulatorNackError(StimulatorError):
    """The device refused a command (see the subclass attributes for the machine-readable reason)."""


class StimulatorTimeoutError(StimulatorError):
    """No reply arrived within the timeout."""


class StimulatorLinkError(StimulatorError):
    """The link to the device failed, the port could not be opened, or the driver is closed."""


@dataclass(frozen=True)
class ChannelState:
    """What one channel is delivering, as the device reports it.

    Parameters
    ----------
    current_ma : float
        Current being delivered now, mA (0 when off; may lag the target while the device ramps).
    target_ma : float
        Current set by :meth:`Stimulator.set_channel`, mA.
    pulse_width_us : float
        Phase width, µs.
    frequency_hz : float
        Pulse rate, Hz.
    on : bool
        The channel is delivering pulses.
    """

    current_ma: float
    target_ma: float
    pulse_width_us: float
    frequency_hz: float
    on: bool

    @property
    def delivered_pulse_width_us(self) -> float:
        """Pulse width actually delivered, µs: 0 unless the channel is on with a current > 0."""
        return self.pulse_width_us if self.on and self.current_ma > 0 else 0.0


@dataclass(frozen=True)
class StimulatorStatus:
    """A snapshot of the device, driver-independent.

    Parameters
    ----------
    state : str
        ``"disarmed"``, ``"armed"``, ``"stimulating"`` or ``"fault"``.
    fault : str or None
        Latched fault cause (``"estop"``, ``"watchdog"``...), None when not faulted.
    channels : tuple of ChannelState
        One per channel, index = channel.
    outputs : int
        Bit mask of channels on.
    details : dict
        Driver-specific extras (counters, device time), JSON-able.
    """

    state: str
    fault: str | None
    channels: tuple[ChannelState, ...]
    outputs: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view for status lines and the daemon API."""
        return {
            "state": self.state,
            "fault": self.fault,
            "outputs": self.outputs,
            "channels": [
                {
                    "current_ma": c.current_ma,
                    "target_ma": c.target_ma,
                    "pulse_width_us": c.pulse_width_us,
                    "frequency_hz": c.frequency_hz,
                    "on": c.on,
                }
                for c in self.channels
            ],
            **({"details": self.details} if self.details else {}),
        }


class Stimulator(ABC):
    """A stimulator driver: lifecycle, state commands, channel settings, heartbeat, e-stop.

    Lifecycle: the constructor opens the link (``open`` is implicit, as with a file) and checks
    the device identity; :meth:`close` turns every output off best-effort and releases the link.
    Use it as a context manager.

    Attributes
    ----------
    name : str
        Human-readable name (driver and port), used in logs and by the safety supervisor.
    n_channels : int
        Number of output channels.
    """

    name: str

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Stimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True after :meth:`close`."""

    @abstractmethod
    def close(self) -> None:
        """Stop the heartbeat, every output off and disarm best-effort, release the link. Safe twice."""

    @property
    @abstractmethod
    def n_channels(self) -> int:
        """Number of output channels."""

    # ------------------------------------------------------------------ identity and state
    @abstractmethod
    def hello(self) -> Any:
        """Identify the device (and resynchronise the link); returns the driver's identity record."""

    @abstractmethod
    def stimulator_status(self) -> StimulatorStatus:
        """Query the device: state, fault and what every channel delivers now."""

    @abstractmethod
    def arm(self) -> Any:
        """Allow stimulation (the device may start its watchdog: heartbeats needed from now on)."""

    @abstractmethod
    def disarm(self) -> Any:
        """Every output off, stimulation refused until armed again."""

    # ------------------------------------------------------------------ stimulation
    @abstractmethod
    def set_channel(self, channel: int, *, current_ma: float, pulse_width_us: float, frequency_hz: float) -> Any:
        """Pulse parameters of one channel (take effect at once if it is on).

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

    @abstractmethod
    def stim_on(self, channels: int | Iterable[int]) -> Any:
        """Start the given channel(s)."""

    @abstractmethod
    def stim_off(self, channels: int | Iterable[int] | None = None) -> Any:
        """Stop the given channel(s), every channel when ``channels`` is None."""

    # ------------------------------------------------------------------ safety
    @abstractmethod
    def heartbeat(self) -> Any:
        """Feed the device watchdog (a no-op on devices without one)."""

    @abstractmethod
    def start_heartbeat(self, rate_hz: float | None = None) -> None:
        """Send heartbeats on a background thread at ``rate_hz`` (absolute deadlines)."""

    @abstractmethod
    def stop_heartbeat(self) -> None:
        """Stop the heartbeat thread (the device watchdog then turns outputs off)."""

    @abstractmethod
    def estop(self) -> Any:
        """Emergency stop: every output off now and a fault latched on the device."""

    @abstractmethod
    def clear_fault(self) -> Any:
        """Leave the device's latched fault for ``disarmed``."""

    def safe_state(self, reason: str) -> None:
        """Safety-supervisor hook: stop every channel now (raises when the device does not confirm)."""
        self.stim_off(None)
