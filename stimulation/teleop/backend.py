"""Robot back ends behind one interface: the MuJoCo simulation, ``stretch_body``, ROS 2 via rosbridge.

A back end receives guarded DoF velocities (unit/s, :data:`~.joints.DOF_NAMES` order) from the
bridge; it never sees decoder commands. Every back end also reports what it knows of the robot
(positions, base pose) so the bridge's joint-limit and workspace guards use measurements when
they exist and a dead-reckoned estimate otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from .joints import DOF_NAMES

if TYPE_CHECKING:
    from .sim import TeleopSim

__all__ = ["MujocoBackend", "TeleopBackend"]


@runtime_checkable
class TeleopBackend(Protocol):
    """What the bridge needs from a robot.

    Calls come from the bridge (under its lock, on the decoding thread or the bridge's tick
    thread); implementations must not block for long (no waits for acknowledgements).
    """

    name: str

    def command_velocities(self, velocity: np.ndarray) -> None:
        """Command DoF velocities (unit/s, shape (8,), :data:`DOF_NAMES` order)."""

    def positions(self) -> np.ndarray | None:
        """Measured DoF positions (m/rad, shape (8,)) or None when unknown."""

    def base_pose(self) -> tuple[float, float, float] | None:
        """Measured base (x m, y m, yaw rad) or None when unknown."""

    def stop(self) -> None:
        """Zero every velocity now (safe state)."""

    def close(self) -> None:
        """Release the connection / hardware (after :meth:`stop`)."""


class MujocoBackend:
    """The default back end: :class:`~.sim.TeleopSim` (headless MuJoCo).

    Parameters
    ----------
    sim : TeleopSim, optional
        A simulation to drive (a new one with default settings otherwise).

    Notes
    -----
    The bridge never steps physics itself in tests and benchmarks: the caller advances
    simulated time with :meth:`advance`. In a live session the bridge's tick thread calls
    :meth:`advance` with the elapsed wall time (``realtime = True``).
    """

    name = "mujoco"
    realtime = True

    def __init__(self, sim: TeleopSim | None = None) -> None:
        if sim is None:
            from .sim import TeleopSim

            sim = TeleopSim()
        self.sim = sim
        self.n_calls = 0

    def command_velocities(self, velocity: np.ndarray) -> None:
        """Set the simulated DoF velocity command."""
        self.sim.set_velocity(velocity)
        self.n_calls += 1

    def positions(self) -> np.ndarray:
        """Simulated DoF positions."""
        return self.sim.positions()

    def base_pose(self) -> tuple[float, float, float]:
        """Simulated base pose."""
        return self.sim.base_pose()

    def advance(self, duration: float) -> None:
        """Step physics by ``duration`` s."""
        self.sim.advance(duration)

    def render(self, camera: str = "overview", width: int = 320, height: int = 240) -> np.ndarray:
        """Offscreen RGB frame (height × width × 3, uint8); see :meth:`TeleopSim.render`."""
        return self.sim.render(camera, width, height)

    def stop(self) -> None:
        """Zero the velocity command."""
        self.sim.set_velocity(np.zeros(len(DOF_NAMES)))

    def close(self) -> None:
        """Free renderers."""
        self.sim.close()
