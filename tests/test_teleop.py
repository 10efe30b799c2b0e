"""Teleop bridge: mapping, dwell, mode switch, dead-man, guards (property-based), MuJoCo sim."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.pipeline import Command
from stimulation.teleop.backend import MujocoBackend
from stimulation.teleop.bridge import TeleopBridge
from stimulation.teleop.controller import TeleopController
from stimulation.teleop.joints import DOF_NAMES, STRETCH_JOINTS
from stimulation.teleop.mapping import TeleopConfig, flexemg_config, load_teleop_config
from stimulation.teleop.sim import TeleopSim

CLASSES = ("rest", "Fist", "Raise", "Lower", "Open")
HOP = 0.05


def cmd(label: str | None, conf: float = 1.0, seq: int = 0, classes: tuple[str, ...] = CLASSES) -> Command:
    """A discrete command whose winning class is ``label`` with probability ``conf``."""
    k = classes.index(label) if label is not None else 0
    rest = (1.0 - conf) / (len(classes) - 1)
    values = tuple(conf if i == k else rest for i in range(len(classes)))
    return Command("test", seq, "discrete", 0.0, 0.0, label, values, classes, 0)


def vec(*values: float) -> Command:
    return Command("dkf", 0, "continuous", 0.0, 0.0, None, tuple(values), ("vx", "vy"), 0)


# ------------------------------------------------------------------ mapping and arbitration
def test_dwell_then_move_and_label_change_stops_at_once():
    c = TeleopController(flexemg_config(dwell_s=0.15))
    t = 0.0
    decisions = []
    for _ in range(4):
        decisions.append(c.on_command(cmd("Raise"), t).decision)
        t += HOP
    assert decisions == ["refused", "refused", "refused", "taken"]  # 0, 50, 100 ms refused; 150 ms acts
    assert "dwell" in c.log[0].reason
    c.update(t)
    v = c.update(t + 0.05)
    assert v[0] > 0 and np.count_nonzero(v) == 1
    c.on_command(cmd("Lower"), t)  # new gesture: previous motion stops before the dwell of the new one
    assert c.update(t + 0.001)[0] == 0.0
    assert c.log[-1].decision == "refused" and "dwell" in c.log[-1].reason


def test_mode_switch_fires_once_per_hold_and_cycles():
    cfg = flexemg_config(dwell_s=0.1)
    c = TeleopController(cfg)
    assert c.mode == "drive"
    t = 0.0
    for _ in range(10):  # holding Fist for 0.5 s switches exactly once
        c.on_command(cmd("Fist"), t)
        t += HOP
    assert c.mode == "lift"
    assert sum(e.action == "next_mode" and e.decision == "taken" for e in c.log) == 1
    assert any("already done" in e.reason for e in c.log)
    c.on_command(cmd("rest"), t)
    for _ in range(3):
        c.on_command(cmd("Fist"), t := t + HOP)
    assert c.mode == "arm"
    c.on_command(cmd("Raise"), t := t + HOP)
    c.on_command(cmd("Raise"), t := t + 0.1)
    c.update(t)
    v = c.update(t + 0.02)
    assert v[DOF_NAMES.index("arm")] > 0 and v[DOF_NAMES.index("lift")] == 0


def test_coarse_fine_and_speed_scale():
    cfg = flexemg_config(dwell_s=0.0, coarse=0.5, fine=0.1, speed_scale=0.8, accel_scale=1.0)
    c = TeleopController(cfg, start=np.array([0, 0, 0.5, 0.2, 0, 0.02, 0, 0]))
    c.on_command(cmd("Fist"), 0.0)  # -> lift
    c.on_command(cmd("Raise"), 0.01)
    for k in range(200):
        v = c.update(0.01 + k * 0.01, positions=np.array([0, 0, 0.5, 0.2, 0, 0.02, 0, 0]))
        c.on_command(cmd("Raise"), 0.01 + k * 0.01)
    assert v[2] == pytest.approx(0.5 * 0.8 * 0.15)
    c.on_command(cmd("Open"), 2.1)  # speed toggle in lift mode
    assert c.speed == "fine"
    c.on_command(cmd("Raise"), 2.11)
    v = c.update(2.12, positions=np.array([0, 0, 0.5, 0.2, 0, 0.02, 0, 0]))
    assert v[2] == pytest.approx(0.1 * 0.8 * 0.15)


def test_acceleration_limit_on_speed_up_only():
    c = TeleopController(flexemg_config(dwell_s=0.0, coarse=1.0))
    c.on_command(cmd("Raise"), 0.0)
    v1 = c.update(0.0)
    v2 = c.update(0.1)
    assert v1[0] == 0.0 and v2[0] == pytest.approx(0.1 * STRETCH_JOINTS[0].max_accel)
    c.on_command(cmd("rest"), 0.1)
    assert c.update(0.11)[0] == 0.0  # stopping is immediate


def test_confidence_gating_refuses_and_stops():
    c = TeleopController(flexemg_config(dwell_s=0.0, min_confidence=0.7))
    for k in range(11):
        c.on_command(cmd("Raise", 0.9), k * 0.05)
        c.update(k * 0.05)
    assert c.update(0.5)[0] > 0
    e = c.on_command(cmd("Raise", 0.5), 0.5)
    assert e.decision == "refused" and "confidence 0.50 < 0.70" in e.reason
    assert c.update(0.51)[0] == 0.0
    e = c.on_command(cmd(None, 0.2), 0.6)
    assert e.decision == "refused"


def test_unbound_label_and_event_kind_are_refused():
    c = TeleopController(flexemg_config(bindings={"Fist": "next_mode"}, dwell_s=0.0))
    e = c.on_command(cmd("rest"), 0.0)
    assert e.decision == "refused" and "not bound in mode 'drive'" in e.reason
    ev = Command("spindle", 0, "event", 0.0, 0.0, "spindle", (0.9,), ("spindle",), 0)
    assert "not mapped" in c.on_command(ev, 0.1).reason


def test_continuous_base_and_end_effector():
    c = TeleopController(flexemg_config(continuous={"target": "base", "scale": [0.5, 1.0]}, accel_scale=1.0))
    c.on_command(vec(0.2, 0.1), 0.0)
    c.update(0.0)
    c.on_command(vec(0.2, 0.1), 0.05)
    v = c.update(2.0 - 1e-3)  # long after: ramped up but dead-man would apply after 0.1 s
    assert v[0] == 0.0 and c.log[-1].decision == "safety"
    c2 = TeleopController(
        TeleopConfig.from_dict({"modes": {"m": {}}, "continuous": {"target": "end_effector", "scale": [1, 1, 1]}}),
        start=np.array([0, 0, 0.5, 0.2, 0, 0.02, 0, 0]),
    )
    for k in range(100):
        c2.on_command(Command("dkf", k, "continuous", 0, 0, None, (0.05, 0.1, -0.02), ("x", "y", "z"), 0), k * 0.01)
        v = c2.update(k * 0.01)
    np.testing.assert_allclose(v[[0, 3, 2]], [0.05, 0.1, -0.02])
    e = c2.on_command(Command("dkf", 0, "continuous", 0, 0, None, (math.nan, 0, 0), ("x", "y", "z"), 0), 1.0)
    assert e.decision == "refused" and "finite" in e.reason


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="unknown action 'liftt\\+'"):
        flexemg_config(modes={"m": {"Raise": "liftt+"}}, initial_mode="m")
    with pytest.raises(ValueError, match="min_confidence"):
        flexemg_config(min_confidence=1.5)
    with pytest.raises(ValueError, match="unknown keys"):
        TeleopConfig.from_dict({"modes": {"m": {}}, "deadman": 1})
    p = tmp_path / "t.toml"
    p.write_text('[teleop]\ninitial_mode = "x"\n[teleop.modes.drive]\nRaise = "base_translate+"\n')
    with pytest.raises(ValueError, match=r"t\.toml: teleop config initial_mode 'x'"):
        load_teleop_config(p)


def test_shipped_flexemg_toml_matches_builtin():
    from tests.conftest import REPO

    cfg = load_teleop_config(REPO / "configs" / "teleop_flexemg.toml")
    ref = flexemg_config()
    assert cfg.modes == ref.modes and cfg.bindings == ref.bindings


# -------------------------------------------------------------------------- guards
def test_joint_limit_guard_stops_at_limit():
    c = TeleopController(flexemg_config(dwell_s=0.0, coarse=1.0), start=np.array([0, 0, 1.0, 0, 0, 0.02, 0, 0]))
    c.on_command(cmd("Fist"), 0.0)
    t = 0.0
    for _ in range(400):
        t += 0.01
        c.on_command(cmd("Raise"), t)
        c.update(t)
    assert c.q[2] <= 1.10 + 1e-12 and c.q[2] > 1.09
    assert c.velocity[2] == pytest.approx(0.0, abs=1e-6)


def test_workspace_guard_keeps_base_inside():
    cfg = flexemg_config(dwell_s=0.0, coarse=1.0, workspace=(-1.0, 0.5, -1.0, 1.0))
    c = TeleopController(cfg)
    t = 0.0
    for _ in range(600):
        t += 0.01
        c.on_command(cmd("Raise"), t)
        c.update(t)
    assert 0.45 < c.pose[0] <= 0.5 + 1e-12


ALL_JOINTS = TeleopConfig.from_dict(
    {
        "dwell_s": 0.02,
        "coarse": 1.0,
        "fine": 0.5,
        "workspace": [-1.5, 1.5, -1.5, 1.5],
        "bindings": {"rest": "stop", "mode": "next_mode", "speed": "speed_toggle"},
        "modes": {"all": {f"{j}{s}": f"{j}{s}" for j in DOF_NAMES for s in "+-"}},
    }
)
LABELS = ("rest", "mode", "speed", *sorted(ALL_JOINTS.modes["all"]))

step = st.tuples(
    st.sampled_from((*LABELS, None)),
    st.floats(0.0, 1.0),
    st.integers(0, 30),  # control ticks until the next command
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(step, min_size=1, max_size=40), st.lists(st.floats(-1, 1), min_size=8, max_size=8))
def test_property_no_command_sequence_breaks_a_limit(sequence, start_frac):
    """Kinematic plant q += v dt: positions stay inside limits, |v| <= vmax, speed-ups <= amax dt."""
    lo = np.array([j.lower if j.bounded else -1.0 for j in STRETCH_JOINTS])
    hi = np.array([j.upper if j.bounded else 1.0 for j in STRETCH_JOINTS])
    q0 = lo + (np.asarray(start_frac) + 1) / 2 * (hi - lo)
    c = TeleopController(ALL_JOINTS, start=q0.copy())
    classes = tuple(lb for lb in LABELS)
    dt = ALL_JOINTS.control_period_s
    q, v_prev, t = q0.copy(), np.zeros(8), 0.0
    vmax = np.array([j.max_velocity for j in STRETCH_JOINTS])
    amax = np.array([j.max_accel for j in STRETCH_JOINTS])
    for label, conf, ticks in sequence:
        c.on_command(cmd(label, conf, classes=classes), t)
        for _ in range(ticks + 1):
            v = c.update(t, positions=q.copy(), pose=(q[0], 0.0, 0.0))
            assert np.all(np.abs(v) <= vmax + 1e-12)
            faster = (np.abs(v) > np.abs(v_prev) + 1e-12) & (np.sign(v) == np.sign(v_prev))
            assert np.all(np.abs(v[faster]) - np.abs(v_prev[faster]) <= amax[faster] * dt + 1e-9)
            started = (np.sign(v) != np.sign(v_prev)) & (v != 0)
            assert np.all(np.abs(v[started]) <= amax[started] * dt + 1e-9)
            q = q + v * dt
            t += dt
            v_prev = v
            bounded = np.array([j.bounded for j in STRETCH_JOINTS])
            assert np.all(q[bounded] <= hi[bounded] + 1e-9) and np.all(q[bounded] >= lo[bounded] - 1e-9)
            assert -1.5 - 1e-9 <= q[0] <= 1.5 + 1e-9  # base x (heading +x) inside the workspace


@settings(max_examples=8, deadline=None, derandomize=True)
@given(st.lists(step, min_size=1, max_size=12))
def test_property_sim_joints_stay_in_range(sequence):
    """The same random sequences through the bridge into MuJoCo: measured positions/velocities in limits."""
    sim = TeleopSim()
    bridge = TeleopBridge(MujocoBackend(sim), ALL_JOINTS, clock=lambda: sim.time)
    classes = tuple(LABELS)
    vmax = np.array([j.max_velocity for j in STRETCH_JOINTS])
    lo = np.array([j.lower for j in STRETCH_JOINTS])
    hi = np.array([j.upper for j in STRETCH_JOINTS])
    for label, conf, ticks in sequence:
        bridge.send(cmd(label, conf, classes=classes))
        for _ in range(ticks + 1):
            bridge.tick()
            sim.advance(ALL_JOINTS.control_period_s)
            q, v = sim.positions(), sim.velocities()
            assert np.all(q[2:] <= hi[2:] + 2e-3) and np.all(q[2:] >= lo[2:] - 2e-3)
            assert np.all(np.abs(v) <= vmax * 1.05 + 2e-3)
    sim.close()


# ---------------------------------------------------------------------------- dead-man
def _drive(sim: TeleopSim, bridge: TeleopBridge, label: str, seconds: float, conf: float = 1.0) -> None:
    t_end = sim.time + seconds
    while sim.time < t_end - 1e-9:
        bridge.send(cmd(label, conf))
        for _ in range(5):
            bridge.tick()
            sim.advance(0.01)


@pytest.mark.parametrize("how", ["commands stop", "confidence drops"])
@pytest.mark.parametrize("mode_presses,label,joint", [(0, "Raise", "base_translate"), (1, "Raise", "lift"),
                                                     (2, "Raise", "arm"), (3, "Open", "wrist_yaw")])  # fmt: skip
def test_deadman_all_velocities_zero_within_200ms(how, mode_presses, label, joint):
    sim = TeleopSim()
    cfg = flexemg_config(coarse=1.0)
    bridge = TeleopBridge(MujocoBackend(sim), cfg, clock=lambda: sim.time)
    for _ in range(mode_presses):
        _drive(sim, bridge, "Fist", 0.2)
        _drive(sim, bridge, "rest", 0.05)
    _drive(sim, bridge, label, 0.8)
    j = DOF_NAMES.index(joint)
    assert abs(sim.velocities()[j]) > 0.1 * STRETCH_JOINTS[j].max_velocity, "joint was not moving"
    t_last = sim.time
    max_v_after = []
    while sim.time < t_last + 0.2 - 1e-9:
        if how == "confidence drops":
            bridge.send(cmd(label, 0.3))
        for _ in range(5):
            bridge.tick()
            sim.advance(0.01)
        max_v_after.append(np.abs(sim.velocities()).max())
    assert sim.time == pytest.approx(t_last + 0.2)
    np.testing.assert_array_equal(bridge.controller.velocity, np.zeros(8))  # commanded: zero
    assert max_v_after[-1] < 5e-3, f"measured |v| {max_v_after[-1]:.4f} after 200 ms"
    reasons = [e.reason for e in bridge.log if e.decision in ("safety", "refused")]
    assert any(r.startswith("deadman" if how == "commands stop" else "confidence") for r in reasons)
    sim.close()


def test_safe_state_halts_until_resume():
    sim = TeleopSim()
    bridge = TeleopBridge(MujocoBackend(sim), flexemg_config(), clock=lambda: sim.time)
    _drive(sim, bridge, "Raise", 0.5)
    bridge.safe_state("e-stop")
    assert np.all(bridge.controller.velocity == 0)
    bridge.send(cmd("Raise"))
    assert bridge.records[-1].entry.decision == "refused" and "halted (e-stop)" in bridge.records[-1].entry.reason
    bridge.resume()
    _drive(sim, bridge, "Raise", 0.5)
    assert bridge.controller.velocity[0] > 0
    sim.close()


def test_bridge_records_latency_and_effect():
    sim = TeleopSim()
    bridge = TeleopBridge(MujocoBackend(sim), flexemg_config(), clock=lambda: sim.time)
    _drive(sim, bridge, "Raise", 0.5)
    recs = bridge.records
    assert len(recs) == 10 and all(r.latency_s >= 0 for r in recs)
    d = recs[-1].to_dict()
    assert d["decision"] == "taken" and d["action"] == "base_translate+" and d["velocity"]["base_translate"] > 0
    assert d["latency_ms"] >= 0 and set(d["positions"]) == set(DOF_NAMES)


def test_sim_render_offscreen():
    sim = TeleopSim()
    img = sim.render("overview", 160, 120)
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8 and img.std() > 5
    head = sim.render("head_cam", 160, 120)
    assert head.shape == (120, 160, 3) and not np.array_equal(img, head)
    sim.close()


def test_sim_model_limits_follow_joint_specs():
    sim = TeleopSim()
    m = sim.model
    for dof, jn in (("lift", "lift"), ("arm", "arm"), ("wrist_yaw", "wrist_yaw"), ("head_tilt", "head_tilt")):
        spec = STRETCH_JOINTS[DOF_NAMES.index(dof)]
        np.testing.assert_allclose(m.jnt_range[m.joint(jn).id], [spec.lower, spec.upper], atol=1e-4)
    sim.close()


def test_factory_builds_bridges_and_names_bad_keys():
    from stimulation.teleop.factory import make_bridge
    from tests.conftest import REPO

    bridge = make_bridge({"backend": "mujoco", "mapping": "configs/teleop_flexemg.toml", "name": "arm"}, REPO)
    assert bridge.name == "arm" and bridge.config.modes["lift"]["Raise"] == "lift+"
    img = bridge.render("task", 64, 48)
    assert img is not None and img.shape == (48, 64, 3)
    bridge.close()
    with pytest.raises(ValueError, match=r"teleop\.backend must be one of"):
        make_bridge({"backend": "ros1"})
    with pytest.raises(ValueError, match=r"teleop: unknown keys \['speed'\]"):
        make_bridge({"speed": 1})
    with pytest.raises(ValueError, match=r"teleop\.rosbridge: unknown keys \['hostname'\]"):
        make_bridge({"backend": "rosbridge", "rosbridge": {"hostname": "x"}})
