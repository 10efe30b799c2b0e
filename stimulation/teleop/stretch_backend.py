"""Back end for a real Hello Robot Stretch through ``stretch_body`` (optional, imported lazily).

Install on the robot with ``pip install hello-robot-stretch-body``. The calls made (the contract
the test suite checks against a fake module) are:

- ``stretch_body.robot.Robot()`` then ``robot.startup()`` (False -> RuntimeError);
- each command: ``robot.base.set_velocity(v_m, w_r)``, ``robot.lift.set_velocity(v_m)``,
  ``robot.arm.set_velocity(v_m)``, ``robot.end_of_arm.get_joint("wrist_yaw").set_velocity(v_r)``,
  ``robot.end_of_arm.get_joint("stretch_gripper").set_velocity(v)``,
  ``robot.head.get_joint("head_pan" | "head_tilt").set_velocity(v_r)``, then one
  ``robot.push_command()`` (the stepper commands only take effect on push);
- positions from ``robot.lift.status["pos"]``, ``robot.arm.status["pos"]``, the Dynamixel joints'
  ``status["pos"]`` and ``robot.base.status["x" | "y" | "theta"]``;
- ``close()``: zero velocities, then ``robot.stop()``.

The gripper joint is commanded in the motor's rad/s: one finger's m/s × ``gripper_rad_per_m``
(default 1 / 0.171, the finger length of ``stretch_gripper_3_conversion``: a small-angle
approximation).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from .joints import DOF_NAMES

__all__ = ["StretchBodyBackend", "StretchBodyUnavailable"]

_DXL = {"wrist_yaw": "end_of_arm", "gripper": "end_of_arm", "head_pan": "head", "head_tilt": "head"}
_DXL_NAME = {"wrist_yaw": "wrist_yaw", "gripper": "stretch_gripper", "head_pan": "head_pan", "head_tilt": "head_tilt"}


class StretchBodyUnavailable(RuntimeError):
    """``stretch_body`` is not installed (the back end is an optional extra)."""


class StretchBodyBackend:
    """Drive a Stretch with ``stretch_body`` velocity commands.

    Parameters
    ----------
    robot : object, optional
        An already started ``stretch_body.robot.Robot`` (tests inject one); created and started
        otherwise.
    gripper_rad_per_m : float
        Gripper motor rad/s per finger m/s.
    """

    name = "stretch_body"
    realtime = False

    def __init__(self, robot: Any = None, gripper_rad_per_m: float = 1.0 / 0.171) -> None:
        if robot is None:
            try:
                robot_mod = importlib.import_module("stretch_body.robot")
            except ImportError as exc:
                raise StretchBodyUnavailable(
                    "the stretch_body back end needs Hello Robot's 'stretch_body' package, which is not installed "
                    f"({exc}); install it on the robot with `pip install hello-robot-stretch-body`, or use the "
                    "'mujoco' or 'rosbridge' back end."
                ) from None
            robot = robot_mod.Robot()
            if not robot.startup():
                raise RuntimeError("stretch_body Robot.startup() failed: is the robot powered, homed and free?")
        self.robot = robot
        self.gripper_rad_per_m = gripper_rad_per_m
        self._last = np.zeros(len(DOF_NAMES))

    def _dxl(self, dof: str) -> Any:
        return getattr(self.robot, _DXL[dof]).get_joint(_DXL_NAME[dof])

    def command_velocities(self, velocity: np.ndarray) -> None:
        """Send every DoF velocity then ``push_command()``."""
        v = [float(x) for x in velocity]
        r = self.robot
        r.base.set_velocity(v[0], v[1])
        r.lift.set_velocity(v[2])
        r.arm.set_velocity(v[3])
        self._dxl("wrist_yaw").set_velocity(v[4])
        self._dxl("gripper").set_velocity(v[5] * self.gripper_rad_per_m)
        self._dxl("head_pan").set_velocity(v[6])
        self._dxl("head_tilt").set_velocity(v[7])
        r.push_command()
        self._last = np.asarray(v)

    def positions(self) -> np.ndarray | None:
        """Positions from the robot's status dicts (base_translate: NaN -> estimated by the bridge)."""
        try:
            r = self.robot
            b = r.base.status
            q = [
                float("nan"),
                float(b["theta"]),
                float(r.lift.status["pos"]),
                float(r.arm.status["pos"]),
                float(self._dxl("wrist_yaw").status["pos"]),
                float(self._dxl("gripper").status["pos"]) / self.gripper_rad_per_m,
                float(self._dxl("head_pan").status["pos"]),
                float(self._dxl("head_tilt").status["pos"]),
            ]
        except (KeyError, AttributeError, TypeError):
            return None
        return np.asarray(q)

    def base_pose(self) -> tuple[float, float, float] | None:
        """Odometry (x, y, theta) from ``robot.base.status``."""
        try:
            b = self.robot.base.status
            return float(b["x"]), float(b["y"]), float(b["theta"])
        except (KeyError, AttributeError, TypeError):
            return None

    def stop(self) -> None:
        """Zero every velocity."""
        self.command_velocities(np.zeros(len(DOF_NAMES)))

    def close(self) -> None:
        """Zero velocities and stop the robot's threads."""
        self.stop()
        self.robot.stop()
