"""Publish the simulated knee angle on Lab Streaming Layer.

:class:`KneeAngleStream` runs a :class:`~stimulation.sim_stimulator.SimulatedStimulator` in real
time and pushes every sensor sample to an LSL outlet (one channel ``knee_angle``, degrees, type
``Kinematics``, 200 Hz by default — the layout of ``acquisition.simulator``'s ``knee`` scenario),
so any LSL consumer (the Session's knee-angle source, LabRecorder, a plot) sees the leg move with
what the stimulator delivers. Timestamps are ``pylsl.local_clock()`` at the moment the sample was
computed.
"""

from __future__ import annotations

import pylsl

from acquisition.validation import check_positive, check_type
from stimulation.sim_stimulator import SimulatedStimulator

__all__ = ["KneeAngleStream"]


class KneeAngleStream:
    """LSL outlet of a simulated stimulator's knee angle.

    Parameters
    ----------
    stimulator : SimulatedStimulator
        The simulation; :meth:`start` puts it in real-time mode.
    name : str
        LSL stream name.
    rate_hz : float
        Sample rate, Hz.
    source_id : str
        LSL source id (defaults to the name).
    """

    def __init__(
        self,
        stimulator: SimulatedStimulator,
        *,
        name: str = "sim_knee_angle",
        rate_hz: float = 200.0,
        source_id: str | None = None,
    ) -> None:
        check_type(stimulator, SimulatedStimulator, "stimulator")
        check_type(name, str, "name")
        self.rate_hz = check_positive(rate_hz, "rate_hz")
        self.stimulator = stimulator
        info = pylsl.StreamInfo(name, "Kinematics", 1, self.rate_hz, "float32", source_id or name)
        ch = info.desc().append_child("channels").append_child("channel")
        ch.append_child_value("label", "knee_angle")
        ch.append_child_value("unit", "degrees")
        ch.append_child_value("type", "angle")
        self.outlet = pylsl.StreamOutlet(info)
        self.name = name
        self.samples_pushed = 0

    def _push(self, _t_monotonic: float, angle_deg: float) -> None:
        self.outlet.push_sample([angle_deg], pylsl.local_clock())
        self.samples_pushed += 1

    def start(self) -> None:
        """Start the real-time simulation and the publishing (on the simulator's thread)."""
        self.stimulator.start_realtime(self.rate_hz, self._push)

    def stop(self) -> None:
        """Stop publishing (the simulation waits in stepped mode)."""
        self.stimulator.stop_realtime()

    def close(self) -> None:
        """Stop and release the outlet."""
        self.stop()
        del self.outlet

    def __enter__(self) -> KneeAngleStream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
