"""Teleop back ends: rosbridge against a real WebSocket server (rosbridge v2 JSON), stretch_body contract."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import types

import numpy as np
import pytest
from websockets.asyncio.server import serve

from app.pipeline import Command
from stimulation.teleop.bridge import TeleopBridge
from stimulation.teleop.mapping import flexemg_config
from stimulation.teleop.rosbridge_backend import STRETCH_ROS_JOINTS, RosbridgeBackend, RosbridgeSettings
from stimulation.teleop.stretch_backend import StretchBodyBackend, StretchBodyUnavailable
from tests.conftest import wait_until

CLASSES = ("rest", "Fist", "Raise", "Lower", "Open")


def cmd(label: str) -> Command:
    values = tuple(1.0 if c == label else 0.0 for c in CLASSES)
    return Command("test", 0, "discrete", 0.0, 0.0, label, values, CLASSES, 0)


class RosbridgeServer:
    """A minimal rosbridge v2 server: records every JSON op it receives, can publish to the client."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self._ready = threading.Event()
        self._clients: list = []
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("test rosbridge server did not start within 5 s")

    async def _handler(self, ws) -> None:  # type: ignore[no-untyped-def]
        self._clients.append(ws)
        async for text in ws:
            self.received.append(json.loads(text))

    async def _main(self) -> None:
        async with serve(self._handler, "127.0.0.1", 0) as srv:
            self.port = srv.sockets[0].getsockname()[1]
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    def publish(self, topic: str, msg: dict) -> None:
        """Send a rosbridge ``publish`` op to every client (as rosbridge does for a subscription)."""
        text = json.dumps({"op": "publish", "topic": topic, "msg": msg})

        async def _send() -> None:
            for ws in self._clients:
                await ws.send(text)

        asyncio.run_coroutine_threadsafe(_send(), self.loop).result(5)

    def ops(self, op: str) -> list[dict]:
        return [m for m in self.received if m["op"] == op]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


@pytest.fixture
def server():
    s = RosbridgeServer()
    yield s
    s.close()


def strip_id(msg: dict) -> dict:
    d = dict(msg)
    d.pop("id", None)
    return d


def test_rosbridge_velocity_mode_exact_messages(server):
    settings = RosbridgeSettings(
        host="127.0.0.1", port=server.port, base_topic="/t/cmd_vel", velocity_topic="/t/vel",
        joint_states_topic="/t/joint_states", odom_topic="/t/odom",
    )  # fmt: skip
    backend = RosbridgeBackend(settings)
    try:
        assert wait_until(lambda: len(server.received) >= 4, 5)
        assert [strip_id(m) for m in server.received[:4]] == [
            {"op": "advertise", "topic": "/t/cmd_vel", "type": "geometry_msgs/Twist", "latch": False,
             "queue_size": 100},
            {"op": "advertise", "topic": "/t/vel", "type": "std_msgs/Float64MultiArray", "latch": False,
             "queue_size": 100},
            {"op": "subscribe", "topic": "/t/joint_states", "type": "sensor_msgs/JointState", "compression": "none",
             "throttle_rate": 0, "queue_length": 0},
            {"op": "subscribe", "topic": "/t/odom", "type": "nav_msgs/Odometry", "compression": "none",
             "throttle_rate": 0, "queue_length": 0},
        ]  # fmt: skip
        assert all(m["id"].startswith(f"{m['op']}:{m['topic']}:") for m in server.received[:4])
        backend.command_velocities(np.array([0.1, -0.2, 0.05, 0.3, 0.5, -0.01, 0.7, -0.4]))
        assert wait_until(lambda: len(server.ops("publish")) >= 2, 5)
        twist, arm = (strip_id(m) for m in server.ops("publish")[:2])
        assert twist == {
            "op": "publish", "topic": "/t/cmd_vel", "latch": False,
            "msg": {"linear": {"x": 0.1, "y": 0.0, "z": 0.0}, "angular": {"x": 0.0, "y": 0.0, "z": -0.2}},
        }  # fmt: skip
        assert arm == {
            "op": "publish", "topic": "/t/vel", "latch": False,
            "msg": {"layout": {"dim": [], "data_offset": 0}, "data": [0.05, 0.3, 0.5, -0.01, 0.7, -0.4]},
        }  # fmt: skip
        # feedback: joint states and odometry published by the server reach the guards
        assert backend.positions() is None
        server.publish("/t/joint_states", {"name": list(STRETCH_ROS_JOINTS), "position": [0.5, 0.1, 0.2, 0.01, 0, 0]})
        pose = {"position": {"x": 1.0, "y": 2.0, "z": 0}, "orientation": {"x": 0, "y": 0, "z": 0.0, "w": 1.0}}
        server.publish("/t/odom", {"pose": {"pose": pose}})
        assert wait_until(lambda: backend.positions() is not None and backend.base_pose() is not None, 5)
        np.testing.assert_allclose(backend.positions()[2:], [0.5, 0.1, 0.2, 0.01, 0, 0])
        assert backend.base_pose() == (1.0, 2.0, 0.0)
    finally:
        backend.close()
    assert wait_until(lambda: len(server.ops("unadvertise")) == 2 and len(server.ops("unsubscribe")) == 2, 5)
    last_twist = [m for m in server.ops("publish") if m["topic"] == "/t/cmd_vel"][-1]
    assert last_twist["msg"]["linear"]["x"] == 0.0  # close() stops the robot first


def test_rosbridge_trajectory_mode_and_bridge(server):
    settings = RosbridgeSettings(
        host="127.0.0.1", port=server.port, arm_mode="trajectory", trajectory_topic="/arm/traj", odom_topic="",
        trajectory_horizon_s=0.5,
    )  # fmt: skip
    backend = RosbridgeBackend(settings)
    clock = [0.0]
    bridge = TeleopBridge(backend, flexemg_config(dwell_s=0.0), clock=lambda: clock[0])
    try:
        server.publish("/stretch/joint_states", {"name": list(STRETCH_ROS_JOINTS), "position": [0.4, 0, 0, 0, 0, 0]})
        assert wait_until(lambda: backend.positions() is not None, 5)
        types_advertised = [m["type"] for m in server.ops("advertise")]
        assert types_advertised == ["geometry_msgs/Twist", "trajectory_msgs/JointTrajectory"]
        assert [m["topic"] for m in server.ops("subscribe")] == ["/stretch/joint_states"]
        for k in range(20):  # Fist (mode -> lift) then Raise for 0.2 s
            clock[0] = k * 0.01
            bridge.send(cmd("Fist" if k == 0 else "Raise" if k > 1 else "rest"))
        assert wait_until(lambda: len(server.ops("publish")) >= 40, 5)
        traj = [m for m in server.ops("publish") if m["topic"] == "/arm/traj"][-1]["msg"]
        assert traj["joint_names"] == list(STRETCH_ROS_JOINTS)
        (point,) = traj["points"]
        v_lift = point["velocities"][0]
        assert v_lift > 0 and point["velocities"][1:] == [0.0] * 5
        assert point["positions"][0] == pytest.approx(0.4 + v_lift * 0.5)
        assert point["time_from_start"] == {"sec": 0, "nanosec": 500000000}
    finally:
        bridge.close()


def test_rosbridge_unreachable_is_a_clear_error():
    with pytest.raises(ConnectionError, match=r"could not connect to ws://127\.0\.0\.1:9 .*rosbridge_server"):
        RosbridgeBackend(RosbridgeSettings(host="127.0.0.1", port=9, connect_timeout_s=0.5))


def test_rosbridge_settings_validation():
    with pytest.raises(ValueError, match="arm_mode"):
        RosbridgeSettings(arm_mode="position")


# ------------------------------------------------------------------------ stretch_body
class _Joint:
    def __init__(self, log: list, name: str, pos: float = 0.0) -> None:
        self.log, self.name, self.status = log, name, {"pos": pos}

    def set_velocity(self, v: float) -> None:
        self.log.append((f"{self.name}.set_velocity", round(v, 9)))


class _Group:
    def __init__(self, log: list, joints: dict[str, _Joint]) -> None:
        self.log, self.joints = log, joints

    def get_joint(self, name: str) -> _Joint:
        self.log.append(("get_joint", name))
        return self.joints[name]


class _Base:
    def __init__(self, log: list) -> None:
        self.log, self.status = log, {"x": 0.5, "y": -0.2, "theta": 0.1}

    def set_velocity(self, v_m: float, w_r: float) -> None:
        self.log.append(("base.set_velocity", round(v_m, 9), round(w_r, 9)))


class FakeRobot:
    """Stands in for stretch_body.robot.Robot (no robot here); records every call."""

    def __init__(self) -> None:
        self.calls: list = [("Robot",)]
        log = self.calls
        self.base = _Base(log)
        self.lift = _Joint(log, "lift", 0.6)
        self.arm = _Joint(log, "arm", 0.1)
        self.end_of_arm = _Group(log, {"wrist_yaw": _Joint(log, "wrist_yaw"), "stretch_gripper": _Joint(log, "grip")})
        self.head = _Group(log, {"head_pan": _Joint(log, "head_pan"), "head_tilt": _Joint(log, "head_tilt")})

    def startup(self) -> bool:
        self.calls.append(("startup",))
        return True

    def push_command(self) -> None:
        self.calls.append(("push_command",))

    def stop(self) -> None:
        self.calls.append(("stop",))


@pytest.fixture
def fake_stretch_body(monkeypatch):
    robots: list[FakeRobot] = []

    def make() -> FakeRobot:
        robots.append(FakeRobot())
        return robots[-1]

    pkg = types.ModuleType("stretch_body")
    mod = types.ModuleType("stretch_body.robot")
    mod.Robot = make  # type: ignore[attr-defined]
    pkg.robot = mod  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stretch_body", pkg)
    monkeypatch.setitem(sys.modules, "stretch_body.robot", mod)
    return robots


def test_stretch_body_contract(fake_stretch_body):
    backend = StretchBodyBackend()
    (robot,) = fake_stretch_body
    assert robot.calls == [("Robot",), ("startup",)]
    robot.calls.clear()
    backend.command_velocities(np.array([0.1, 0.2, 0.03, 0.04, 0.5, 0.0171, 0.7, -0.8]))
    sets = [c for c in robot.calls if c[0] != "get_joint"]
    assert sets == [
        ("base.set_velocity", 0.1, 0.2),
        ("lift.set_velocity", 0.03),
        ("arm.set_velocity", 0.04),
        ("wrist_yaw.set_velocity", 0.5),
        ("grip.set_velocity", pytest.approx(0.1)),  # 0.0171 m/s per finger / 0.171 m finger length
        ("head_pan.set_velocity", 0.7),
        ("head_tilt.set_velocity", -0.8),
        ("push_command",),
    ]
    q = backend.positions()
    assert q is not None and np.isnan(q[0]) and q[1] == 0.1 and q[2] == 0.6 and q[3] == 0.1
    assert backend.base_pose() == (0.5, -0.2, 0.1)
    robot.calls.clear()
    backend.close()
    assert robot.calls[-2:] == [("push_command",), ("stop",)]
    assert ("base.set_velocity", 0.0, 0.0) in robot.calls


def test_stretch_body_through_bridge_zeroes_on_deadman(fake_stretch_body):
    backend = StretchBodyBackend()
    clock = [0.0]
    bridge = TeleopBridge(backend, flexemg_config(dwell_s=0.0), clock=lambda: clock[0])
    robot = fake_stretch_body[0]
    for k in range(10):
        clock[0] = k * 0.05
        bridge.send(cmd("Raise"))
    assert [c for c in robot.calls if c[0] == "base.set_velocity"][-1][1] > 0
    clock[0] = 0.45 + 0.15
    bridge.tick()
    assert [c for c in robot.calls if c[0] == "base.set_velocity"][-1] == ("base.set_velocity", 0.0, 0.0)
    assert bridge.log[-1].decision == "safety" and bridge.log[-1].reason.startswith("deadman")


def test_stretch_body_absent_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "stretch_body", None)  # import of stretch_body raises ImportError
    monkeypatch.delitem(sys.modules, "stretch_body.robot", raising=False)
    with pytest.raises(StretchBodyUnavailable, match="pip install hello-robot-stretch-body"):
        StretchBodyBackend()
