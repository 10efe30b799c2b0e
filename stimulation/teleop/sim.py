"""Headless MuJoCo simulation of the Stretch-like manipulator (fixed time step, offscreen render).

Offscreen rendering needs an OpenGL context without a display. This module sets
``MUJOCO_GL=egl`` unless the variable is already set (EGL works on this machine; ``osmesa``
needs the OSMesa library and PyOpenGL's OSMesa platform, ``glfw`` needs a display). The
variable must be set before the first ``import mujoco`` anywhere in the process.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

from .joints import DOF_NAMES, STRETCH_JOINTS
from .model import build_mjcf

__all__ = ["DEFAULT_START", "TeleopSim"]

#: Start pose (DoF order of :data:`DOF_NAMES`): base at the origin, lift 0.3 m, arm in, gripper open.
DEFAULT_START: dict[str, float] = {
    "base_translate": 0.0,
    "base_rotate": 0.0,
    "lift": 0.30,
    "arm": 0.0,
    "wrist_yaw": 0.0,
    "gripper": 0.045,
    "head_pan": -1.2,
    "head_tilt": -0.5,
}

_JOINT_OF_DOF = {
    "lift": "lift",
    "arm": "arm",
    "wrist_yaw": "wrist_yaw",
    "gripper": "finger_left",
    "head_pan": "head_pan",
    "head_tilt": "head_tilt",
}


class TeleopSim:
    """The MuJoCo model stepped at a fixed time step, commanded with DoF velocities.

    Parameters
    ----------
    timestep : float
        Physics time step in s (default 2 ms).
    start : dict, optional
        Start positions by DoF name (m or rad); missing DoF take :data:`DEFAULT_START`.

    Notes
    -----
    Not thread-safe: one thread steps, commands and renders (the bridge holds its lock around
    every call).
    """

    def __init__(self, timestep: float = 0.002, start: dict[str, float] | None = None) -> None:
        if not 0 < timestep <= 0.01:
            raise ValueError(f"sim timestep must be in (0, 0.01] s, got {timestep}.")
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(timestep))
        self.data = mujoco.MjData(self.model)
        self.timestep = timestep
        m = self.model
        self._qadr = {
            n: m.jnt_qposadr[m.joint(n).id]
            for n in ("base_x", "base_y", "base_yaw", "finger_right", *_JOINT_OF_DOF.values())
        }
        self._dadr = {n: m.jnt_dofadr[m.joint(n).id] for n in self._qadr}
        self._act = {n: m.actuator(f"v_{n}").id for n in ("base_x", "base_y", "base_yaw", *_JOINT_OF_DOF)}
        self._velocity = np.zeros(len(DOF_NAMES))
        self._odometry = 0.0
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self.reset(start)

    # ------------------------------------------------------------------ state
    def reset(self, start: dict[str, float] | None = None) -> None:
        """Put the robot in its start pose and the objects back on the table; time = 0."""
        unknown = set(start or {}) - set(DOF_NAMES)
        if unknown:
            raise ValueError(f"sim start pose names unknown DoF {sorted(unknown)}; valid: {list(DOF_NAMES)}.")
        pose = {**DEFAULT_START, **(start or {})}
        mujoco.mj_resetData(self.model, self.data)
        d = self.data
        d.qpos[self._qadr["base_yaw"]] = pose["base_rotate"]
        d.act[self._act["base_yaw"]] = pose["base_rotate"]
        for dof, jn in _JOINT_OF_DOF.items():
            d.qpos[self._qadr[jn]] = pose[dof]
            d.act[self._act[dof]] = pose[dof]
        d.qpos[self._qadr["finger_right"]] = pose["gripper"]
        self._velocity[:] = 0.0
        self._odometry = pose["base_translate"]
        mujoco.mj_forward(self.model, d)

    @property
    def time(self) -> float:
        """Simulated time in s."""
        return float(self.data.time)

    def set_velocity(self, velocity: np.ndarray) -> None:
        """Command DoF velocities (unit/s, shape (8,), :data:`DOF_NAMES` order) until the next call."""
        v = np.asarray(velocity, dtype=np.float64)
        if v.shape != (len(DOF_NAMES),) or not np.isfinite(v).all():
            raise ValueError(f"sim velocity must be 8 finite values in order {list(DOF_NAMES)}, got {v!r}.")
        self._velocity[:] = v

    def advance(self, duration: float) -> None:
        """Step the physics for ``duration`` s (rounded to whole time steps, at least one)."""
        n = max(1, round(duration / self.timestep))
        d, v = self.data, self._velocity
        ctrl = d.ctrl
        for _ in range(n):
            yaw = d.qpos[self._qadr["base_yaw"]]
            x0, y0 = d.qpos[self._qadr["base_x"]], d.qpos[self._qadr["base_y"]]
            ctrl[self._act["base_x"]] = v[0] * math.cos(yaw)
            ctrl[self._act["base_y"]] = v[0] * math.sin(yaw)
            ctrl[self._act["base_yaw"]] = v[1]
            for i, dof in enumerate(DOF_NAMES[2:], start=2):
                ctrl[self._act[dof]] = v[i]
            mujoco.mj_step(self.model, d)
            dx = d.qpos[self._qadr["base_x"]] - x0
            dy = d.qpos[self._qadr["base_y"]] - y0
            self._odometry += dx * math.cos(yaw) + dy * math.sin(yaw)

    # --------------------------------------------------------------- readouts
    def positions(self) -> np.ndarray:
        """DoF positions (m or rad, shape (8,)); base_translate is odometry along the heading."""
        q = self.data.qpos
        out = np.empty(len(DOF_NAMES))
        out[0] = self._odometry
        out[1] = q[self._qadr["base_yaw"]]
        for i, dof in enumerate(DOF_NAMES[2:], start=2):
            out[i] = q[self._qadr[_JOINT_OF_DOF[dof]]]
        return out

    def velocities(self) -> np.ndarray:
        """Measured DoF velocities (unit/s, shape (8,)); base_translate along the heading."""
        qv = self.data.qvel
        yaw = self.data.qpos[self._qadr["base_yaw"]]
        out = np.empty(len(DOF_NAMES))
        out[0] = qv[self._dadr["base_x"]] * math.cos(yaw) + qv[self._dadr["base_y"]] * math.sin(yaw)
        out[1] = qv[self._dadr["base_yaw"]]
        for i, dof in enumerate(DOF_NAMES[2:], start=2):
            out[i] = qv[self._dadr[_JOINT_OF_DOF[dof]]]
        return out

    def base_pose(self) -> tuple[float, float, float]:
        """Base (x m, y m, yaw rad) in the world frame."""
        q = self.data.qpos
        return float(q[self._qadr["base_x"]]), float(q[self._qadr["base_y"]]), float(q[self._qadr["base_yaw"]])

    def body_position(self, name: str) -> np.ndarray:
        """World position (m, shape (3,)) of body ``name`` (e.g. ``"target"``, ``"finger_left"``)."""
        return self.data.body(name).xpos.copy()

    def finger_center(self) -> np.ndarray:
        """World position (m) of the midpoint between the two finger pads."""
        return 0.5 * (self.data.geom("pad_left").xpos + self.data.geom("pad_right").xpos)

    def gripper_force(self) -> float:
        """Squeeze force of the gripper actuator in N (positive = closing)."""
        return float(-self.data.actuator_force[self._act["gripper"]])

    def limits(self) -> dict[str, tuple[float, float]]:
        """Position range (lower, upper) of every bounded DoF as compiled into the model."""
        return {j.name: (j.lower, j.upper) for j in STRETCH_JOINTS if j.bounded}

    # ---------------------------------------------------------------- render
    def render(self, camera: str = "overview", width: int = 320, height: int = 240) -> np.ndarray:
        """Offscreen RGB image (height × width × 3, uint8) from ``camera`` (``overview``, ``side``, ``head_cam``)."""
        key = (width, height)
        r = self._renderers.get(key)
        if r is None:
            r = mujoco.Renderer(self.model, height, width)
            self._renderers[key] = r
        r.update_scene(self.data, camera=camera)
        return r.render().copy()

    def close(self) -> None:
        """Free the renderers' GL contexts."""
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
