"""The eight controllable degrees of freedom of a Stretch-like mobile manipulator.

Limits come from Hello Robot's published Stretch 3 parameters in the ``stretch_body`` package
(github.com/hello-robot/stretch_body, files ``body/stretch_body/robot_params_SE3.py`` and
``robot_params_SE3_eoa.py``; the ``motion.max`` profile of each joint gives the velocity and
acceleration limits, ``range_m`` / ``range_t`` + ``zero_t`` + ``gr`` + ``range_pad_t`` give the ranges):

============== ===================== ============== ============== =====================================
DoF            range                 max velocity   max accel.     source
============== ===================== ============== ============== =====================================
base_translate unbounded (workspace) 0.30 m/s       0.30 m/s²      ``base.motion.max`` (vel_m, accel_m)
base_rotate    unbounded             0.50 rad/s     1.0 rad/s²     gamepad teleop ``max_rotation_vel``
                                                                   (``gamepad_joints.py``); accel: ours
lift           0.0 .. 1.10 m         0.15 m/s       0.30 m/s²      ``lift.range_m``, ``lift.motion.max``
arm            0.0 .. 0.52 m         0.40 m/s       0.40 m/s²      ``arm.range_m``, ``arm.motion.max``
wrist_yaw      -1.345 .. 4.497 rad   6.0 rad/s      10 rad/s²      ``wrist_yaw`` range_t [0, 9340],
                                                                   zero_t 7136, gr 2.4, pad 100 ticks,
                                                                   flipped polarity; ``motion.max``
gripper        0.0 .. 0.045 m        0.045 m/s      0.5 m/s²       ``stretch_gripper_3_conversion``
               (per finger; aperture                               open_aperture_m 0.09 (range); the
               0 .. 0.09 m)                                        speed and accel. are ours (the
                                                                   published profile is in motor units)
head_pan       -3.876 .. 1.841 rad   7.0 rad/s      14 rad/s²      ``head_pan`` range_t [0, 3827],
                                                                   zero_t 1250, pad 50, flipped; ``max``
head_tilt      -1.614 .. 0.342 rad   7.0 rad/s      14 rad/s²      ``head_tilt`` range_t [1775, 3150],
                                                                   zero_t 2048, pad 50, flipped; ``max``
============== ===================== ============== ============== =====================================

Dynamixel ticks convert to rad as ``-(t - zero_t) * 2π / 4096 / gr`` (flipped encoder polarity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DOF_NAMES", "STRETCH_JOINTS", "JointSpec", "joint_index"]


@dataclass(frozen=True)
class JointSpec:
    """Limits of one controllable degree of freedom.

    Attributes
    ----------
    name : str
        DoF name (``lift``, ``arm``...).
    unit : str
        ``"m"`` or ``"rad"``; velocities are in unit/s, accelerations in unit/s².
    lower, upper : float
        Position range (``-inf``/``inf`` for the base, whose bound is the workspace).
    max_velocity : float
        Largest speed the bridge ever commands (unit/s).
    max_accel : float
        Acceleration limit applied when speeding up or reversing (unit/s²).
    """

    name: str
    unit: str
    lower: float
    upper: float
    max_velocity: float
    max_accel: float

    @property
    def bounded(self) -> bool:
        """True when the joint has a finite position range."""
        return math.isfinite(self.lower) and math.isfinite(self.upper)


def _dxl_range(range_t: tuple[int, int], zero_t: int, gr: float, pad_t: int) -> tuple[float, float]:
    """Dynamixel tick range (flipped polarity) -> (lower, upper) in rad."""
    ends = [-(t - zero_t) * 2 * math.pi / 4096 / gr for t in (range_t[0] + pad_t, range_t[1] - pad_t)]
    return round(min(ends), 3), round(max(ends), 3)


_WRIST = _dxl_range((0, 9340), 7136, 2.4, 100)
_PAN = _dxl_range((0, 3827), 1250, 1.0, 50)
_TILT = _dxl_range((1775, 3150), 2048, 1.0, 50)

#: The 8 DoF in the bridge's canonical order (velocity vectors use this order).
STRETCH_JOINTS: tuple[JointSpec, ...] = (
    JointSpec("base_translate", "m", -math.inf, math.inf, 0.30, 0.30),
    JointSpec("base_rotate", "rad", -math.inf, math.inf, 0.50, 1.0),
    JointSpec("lift", "m", 0.0, 1.10, 0.15, 0.30),
    JointSpec("arm", "m", 0.0, 0.52, 0.40, 0.40),
    JointSpec("wrist_yaw", "rad", _WRIST[0], _WRIST[1], 6.0, 10.0),
    JointSpec("gripper", "m", 0.0, 0.045, 0.045, 0.5),
    JointSpec("head_pan", "rad", _PAN[0], _PAN[1], 7.0, 14.0),
    JointSpec("head_tilt", "rad", _TILT[0], _TILT[1], 7.0, 14.0),
)

DOF_NAMES: tuple[str, ...] = tuple(j.name for j in STRETCH_JOINTS)


def joint_index(name: str) -> int:
    """Index of DoF ``name`` in :data:`DOF_NAMES`; ValueError listing the valid names."""
    try:
        return DOF_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown teleop joint {name!r}; valid joints are {list(DOF_NAMES)}.") from None
