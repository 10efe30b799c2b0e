"""Back end for ROS 2 through rosbridge (WebSocket, rosbridge v2 JSON protocol) with ``roslibpy``.

Messages (topic names and the arm mode are settings, defaults follow the Stretch ROS 2 driver):

- base: ``geometry_msgs/Twist`` on ``base_topic`` (``/stretch/cmd_vel``): ``linear.x`` = base
  translation (m/s), ``angular.z`` = rotation (rad/s), other fields 0;
- arm, ``arm_mode = "velocity"``: ``std_msgs/Float64MultiArray`` on ``velocity_topic``
  (``/stretch/joint_velocity_cmd``) with ``data`` = velocities of ``joint_names`` (lift, arm,
  wrist yaw, gripper finger, head pan, head tilt; unit/s), as a ros2_control forward velocity
  controller expects;
- arm, ``arm_mode = "trajectory"``: ``trajectory_msgs/JointTrajectory`` on ``trajectory_topic``
  with one point at ``trajectory_horizon_s``: positions = last joint state + v × horizon,
  velocities = v;
- feedback: subscribes to ``sensor_msgs/JointState`` on ``joint_states_topic`` and, when
  ``odom_topic`` is set, ``nav_msgs/Odometry`` (pose for the workspace guard).

Each :meth:`command_velocities` publishes one base and one arm message; publishing is
non-blocking (roslibpy queues the frame on its event-loop thread).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .joints import DOF_NAMES

__all__ = ["RosbridgeBackend", "RosbridgeSettings"]

#: ROS joint names of the Stretch driver for DoF 2..7 (lift ... head_tilt).
STRETCH_ROS_JOINTS = (
    "joint_lift",
    "wrist_extension",
    "joint_wrist_yaw",
    "joint_gripper_finger_left",
    "joint_head_pan",
    "joint_head_tilt",
)


@dataclass(frozen=True)
class RosbridgeSettings:
    """Connection and topic settings of the rosbridge back end.

    Attributes
    ----------
    host, port : str, int
        rosbridge WebSocket server (``rosbridge_server`` default port 9090).
    base_topic, velocity_topic, trajectory_topic, joint_states_topic, odom_topic : str
        Topic names (``odom_topic = ""`` disables the odometry subscription).
    arm_mode : str
        ``"velocity"`` or ``"trajectory"``.
    trajectory_horizon_s : float
        Time of the single trajectory point (s).
    joint_names : tuple of str
        ROS names of lift, arm, wrist yaw, gripper, head pan, head tilt.
    connect_timeout_s : float
        Give up connecting after this many seconds.
    transport : str
        roslibpy transport (``"asyncio"``: one background event loop, no Twisted reactor).
    """

    host: str = "localhost"
    port: int = 9090
    base_topic: str = "/stretch/cmd_vel"
    velocity_topic: str = "/stretch/joint_velocity_cmd"
    trajectory_topic: str = "/stretch_controller/joint_trajectory"
    joint_states_topic: str = "/stretch/joint_states"
    odom_topic: str = "/odom"
    arm_mode: str = "velocity"
    trajectory_horizon_s: float = 0.2
    joint_names: tuple[str, ...] = STRETCH_ROS_JOINTS
    connect_timeout_s: float = 5.0
    transport: str = "asyncio"

    def __post_init__(self) -> None:
        if self.arm_mode not in ("velocity", "trajectory"):
            raise ValueError(f"rosbridge arm_mode must be 'velocity' or 'trajectory', got {self.arm_mode!r}.")
        if len(self.joint_names) != 6:
            raise ValueError(f"rosbridge joint_names must name 6 joints (lift..head_tilt), got {self.joint_names}.")
        if not self.connect_timeout_s > 0 or not self.trajectory_horizon_s > 0:
            raise ValueError("rosbridge connect_timeout_s and trajectory_horizon_s must be > 0 s.")


class RosbridgeBackend:
    """Publish guarded velocities to ROS 2 over rosbridge.

    Parameters
    ----------
    settings : RosbridgeSettings

    Raises
    ------
    ConnectionError
        When the rosbridge server does not answer within ``connect_timeout_s``.
    """

    name = "rosbridge"
    realtime = False

    def __init__(self, settings: RosbridgeSettings | None = None) -> None:
        import roslibpy  # optional at import time of the package; installed with closedloop

        self.settings = s = settings or RosbridgeSettings()
        self._roslibpy = roslibpy
        self.ros = roslibpy.Ros(s.host, s.port, transport=s.transport)
        try:
            self.ros.run(timeout=s.connect_timeout_s)
        except (roslibpy.core.RosTimeoutError, OSError) as exc:
            raise ConnectionError(
                f"rosbridge back end could not connect to ws://{s.host}:{s.port} within {s.connect_timeout_s} s "
                f"({type(exc).__name__}: {exc}); is rosbridge_server running?"
            ) from None
        self._lock = threading.Lock()
        self._joint_pos: dict[str, float] = {}
        self._pose: tuple[float, float, float] | None = None
        self.base = roslibpy.Topic(self.ros, s.base_topic, "geometry_msgs/Twist")
        self.base.advertise()
        if s.arm_mode == "velocity":
            self.arm = roslibpy.Topic(self.ros, s.velocity_topic, "std_msgs/Float64MultiArray")
        else:
            self.arm = roslibpy.Topic(self.ros, s.trajectory_topic, "trajectory_msgs/JointTrajectory")
        self.arm.advertise()
        self.joint_states = roslibpy.Topic(self.ros, s.joint_states_topic, "sensor_msgs/JointState")
        self.joint_states.subscribe(self._on_joint_states)
        self.odom = None
        if s.odom_topic:
            self.odom = roslibpy.Topic(self.ros, s.odom_topic, "nav_msgs/Odometry")
            self.odom.subscribe(self._on_odom)
        self.n_published = 0

    # ------------------------------------------------------------ feedback
    def _on_joint_states(self, msg: dict[str, Any]) -> None:
        """roslibpy event-loop thread: store the latest joint positions."""
        names, pos = msg.get("name", []), msg.get("position", [])
        with self._lock:
            for n, p in zip(names, pos, strict=False):
                self._joint_pos[n] = float(p)

    def _on_odom(self, msg: dict[str, Any]) -> None:
        """roslibpy event-loop thread: store the latest base pose (yaw from the quaternion)."""
        try:
            p = msg["pose"]["pose"]["position"]
            o = msg["pose"]["pose"]["orientation"]
            yaw = math.atan2(2 * (o["w"] * o["z"] + o["x"] * o["y"]), 1 - 2 * (o["y"] ** 2 + o["z"] ** 2))
            pose = (float(p["x"]), float(p["y"]), float(yaw))
        except (KeyError, TypeError):
            return
        with self._lock:
            self._pose = pose

    def positions(self) -> np.ndarray | None:
        """Last joint state mapped to DoF order (NaN where not reported); None before the first one."""
        with self._lock:
            if not self._joint_pos:
                return None
            jp = dict(self._joint_pos)
            pose = self._pose
        q = np.full(len(DOF_NAMES), np.nan)
        if pose is not None:
            q[1] = pose[2]
        for i, n in enumerate(self.settings.joint_names, start=2):
            if n in jp:
                q[i] = jp[n]
        return q

    def base_pose(self) -> tuple[float, float, float] | None:
        """Last odometry pose or None."""
        with self._lock:
            return self._pose

    # ------------------------------------------------------------ commands
    def twist_message(self, velocity: np.ndarray) -> dict[str, Any]:
        """The ``geometry_msgs/Twist`` dict for ``velocity``."""
        return {
            "linear": {"x": float(velocity[0]), "y": 0.0, "z": 0.0},
            "angular": {"x": 0.0, "y": 0.0, "z": float(velocity[1])},
        }

    def arm_message(self, velocity: np.ndarray) -> dict[str, Any]:
        """The arm message (Float64MultiArray or JointTrajectory) for ``velocity``."""
        v = [float(x) for x in velocity[2:]]
        s = self.settings
        if s.arm_mode == "velocity":
            return {"layout": {"dim": [], "data_offset": 0}, "data": v}
        q = self.positions()
        now = [0.0] * 6 if q is None else [0.0 if math.isnan(x) else float(x) for x in q[2:]]
        h = s.trajectory_horizon_s
        sec = int(h)
        return {
            "joint_names": list(s.joint_names),
            "points": [
                {
                    "positions": [p + vi * h for p, vi in zip(now, v, strict=True)],
                    "velocities": v,
                    "time_from_start": {"sec": sec, "nanosec": round((h - sec) * 1e9)},
                }
            ],
        }

    def command_velocities(self, velocity: np.ndarray) -> None:
        """Publish one Twist and one arm message."""
        m = self._roslibpy.Message
        self.base.publish(m(self.twist_message(velocity)))
        self.arm.publish(m(self.arm_message(velocity)))
        self.n_published += 2

    def stop(self) -> None:
        """Publish zero velocities."""
        self.command_velocities(np.zeros(len(DOF_NAMES)))

    def close(self) -> None:
        """Zero velocities, unadvertise/unsubscribe and close the connection."""
        if not self.ros.is_connected:
            return
        self.stop()
        self.joint_states.unsubscribe()
        if self.odom is not None:
            self.odom.unsubscribe()
        self.base.unadvertise()
        self.arm.unadvertise()
        self.ros.close()
