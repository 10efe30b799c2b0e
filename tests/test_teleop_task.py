"""Acceptance 1 of the teleop issue, short: the scripted pick task lifts the object in MuJoCo,
with perfect commands and with commands decoded from real EMG (LSL -> EMG decoder -> bridge)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from app.cli import main as cli_main
from app.pipeline import Command
from stimulation.teleop.backend import MujocoBackend
from stimulation.teleop.bridge import TeleopBridge
from stimulation.teleop.mapping import flexemg_config, load_teleop_config
from stimulation.teleop.sim import TeleopSim
from stimulation.teleop.task import PerfectCommands, default_steps, run_task
from tests.conftest import DATA, REPO, wait_until

sys.path.insert(0, str(REPO / "benchmarks"))
import convert_flexemg
import teleop_task

FLEX = DATA / "flexemg_hdemg"
CONFIG = REPO / "configs" / "teleop_flexemg.toml"


def test_perfect_commands_task_lifts_the_object():
    r = run_task(PerfectCommands(), config=load_teleop_config(CONFIG), timeout_s=60.0)
    assert r.success, f"steps done {len(r.step_times_s)}/{len(default_steps())}, lift {r.object_lift_m:.3f} m"
    assert len(r.step_times_s) == len(default_steps()) and r.object_lift_m > 0.05
    assert np.all(np.diff(r.step_times_s) > 0) and r.completion_s == r.step_times_s[-1]
    recs = r.bridge.records
    assert len(recs) > 100 and all(rec.latency_s >= 0 for rec in recs)
    taken = [rec.to_dict() for rec in recs if rec.entry.decision == "taken"]
    assert {d["action"] for d in taken} >= {"base_translate+", "lift+", "arm+", "gripper-", "next_mode"}
    assert r.gestures[0] == (0.0, "Raise")


@pytest.fixture(scope="module")
def emg_model(tmp_path_factory) -> str:
    if not FLEX.is_dir():
        pytest.skip(f"real recordings folder {FLEX} is absent (it ships only with the development machines)")
    out = tmp_path_factory.mktemp("teleop_emg")
    specs = convert_flexemg.convert(FLEX, out / "flex", n_trials=3)
    model = out / "emg_lda.onnx"
    assert cli_main(["train", "emg", "--dataset", str(specs["train"]), "--method", "lda", "--out", str(model)]) == 0
    return str(model)


def test_decoded_emg_task_lifts_the_object(emg_model):
    """Test-block trials (not used for training) replayed through LSL -> LDA decoder -> bridge -> MuJoCo."""
    from stimulation.teleop.emg_replay import EmgReplaySource

    segs, ch = teleop_task.load_segments(FLEX / "001-Session1Test")
    assert sorted(segs) == ["Fist", "Lower", "Open", "Raise", "rest"] and all(len(s) == 10 for s in segs.values())
    src = EmgReplaySource(emg_model, segs, ch, 1000.0)
    try:
        r = run_task(src, config=load_teleop_config(CONFIG), lead_s=0.0, timeout_s=90.0)
    finally:
        src.close()
    assert r.success, f"steps done {len(r.step_times_s)}, lift {r.object_lift_m:.3f} m"
    labelled = [e for e in r.bridge.log if e.kind == "discrete"]
    assert {e.pipeline for e in labelled} == {"emg"} and len(labelled) > 100
    assert src.n_samples >= r.completion_s * 1000 * 0.99  # every sample went through LSL


def test_bridge_live_thread_with_realtime_sim():
    """Live arrangement: tick thread steps the sim in real time; commands arrive from another thread."""
    sim = TeleopSim()
    bridge = TeleopBridge(MujocoBackend(sim), flexemg_config(dwell_s=0.05))
    classes = ("rest", "Fist", "Raise", "Lower", "Open")
    values = (0.0, 0.0, 1.0, 0.0, 0.0)
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            bridge.send(Command("live", 0, "discrete", 0.0, 0.0, "Raise", values, classes, 0))
            stop.wait(0.02)

    bridge.start()
    th = threading.Thread(target=produce)
    th.start()
    try:
        assert wait_until(lambda: sim.positions()[0] > 0.05, 20), "base did not move under live commands"
        frames = [bridge.render("overview", 64, 48) for _ in range(2)]  # GUI-style render while the sim runs
        assert all(f is not None and f.shape == (48, 64, 3) for f in frames)
    finally:
        stop.set()
        th.join(5)
    assert wait_until(lambda: not np.any(bridge.controller.velocity), 20), "dead-man did not zero the command"
    t_zero = sim.time
    assert wait_until(lambda: sim.time > t_zero + 0.3, 20)
    with bridge._lock:  # the tick thread steps the sim under this lock
        v = sim.velocities()
    bridge.close()
    assert np.abs(v).max() < 5e-3 and any(e.reason.startswith("deadman") for e in bridge.log)
    assert bridge.n_ticks > 10


def test_session_subscriber_drives_the_bridge(emg_model):
    """Real EMG (a Raise segment of a test trial) on an LSL outlet -> Session (LSL source, EMG pipeline)
    -> ``session.subscribe(bridge.send)`` -> bridge ticking a real-time MuJoCo sim: the base drives forward."""
    import pylsl

    from acquisition.lsl import make_outlet
    from acquisition.stream import StreamInfo
    from app.config import parse_config
    from app.session import Session
    from tests.conftest import unique

    segs, ch = teleop_task.load_segments(FLEX / "001-Session1Test")
    emg = np.concatenate([segs["rest"][0][:500], segs["Raise"][0], segs["Raise"][1]])  # 0.5 s rest, 6 s Raise
    name = unique("teleop-emg")
    info = StreamInfo.simple(name, "EMG", ch, 1000.0, unit="microvolts", channel_type="EMG", source_id=name)
    outlet = make_outlet(info)  # channel labels go into the stream's description (checked against the card)
    cfg = parse_config(
        {
            "session": {"name": "teleop", "stale_after_s": 1.0},
            "sources": {"emg": {"kind": "lsl", "name": name, "resolve_timeout": 5.0}},
            "pipelines": {"emg": {"source": "emg", "model": emg_model, "channels": ch}},
        }
    )
    session = Session(cfg)
    sim = TeleopSim()
    bridge = TeleopBridge(MujocoBackend(sim), load_teleop_config(CONFIG))
    session.subscribe(bridge.send)
    stop = threading.Event()

    def push() -> None:
        t_next = pylsl.local_clock()
        for k in range(0, emg.shape[0], 20):  # 20 ms chunks in real time
            if stop.is_set():
                return
            outlet.push_chunk(emg[k : k + 20].astype(np.float32))
            t_next += 0.02
            stop.wait(max(0.0, t_next - pylsl.local_clock()))

    pusher = threading.Thread(target=push)
    pusher.start()
    try:
        session.open()
        bridge.start()
        session.start()
        assert wait_until(lambda: sim.positions()[0] > 0.1, 20), (
            f"base at {sim.positions()[0]:.3f} m; log tail {[e.reason for e in bridge.log[-5:]]}"
        )
    finally:
        stop.set()
        pusher.join(5)
        session.stop()
        session.close()
        bridge.close()
    taken = [r.entry for r in bridge.records if r.entry.decision == "taken" and r.entry.action == "base_translate+"]
    assert taken and {e.pipeline for e in taken} == {"emg"}
