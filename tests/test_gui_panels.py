"""GUI panels for the capabilities beyond SSVEP/MI (issue 7): cursor task, EMG gestures + robot, spindles, NMES, audio.

Real Sessions where they are cheap (the teleop output's MuJoCo bridge, the NMES loop on the
simulated stimulator with an audio output, a spindle pipeline with an untrained Portiloop net on
the simulated sleep EEG); real :class:`~app.pipeline.Command` objects pushed into the views where
a trained decoder would be needed (DKF velocities, EMG gestures). Qt runs offscreen; any Qt
warning fails the test (as in tests/test_gui.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before Qt loads

from conftest import MODEL, REPO
from PyQt6.QtWidgets import QWidget

from app.pipeline import Command

EMG_CLASSES = ("rest", "Fist", "Raise", "Lower", "Open")


# ============================================================================ fixtures / helpers
def open_and_start(qtbot, win, config) -> None:  # type: ignore[no-untyped-def]
    """Open ``config`` (a path or a SessionConfig) in the window and start it."""
    if isinstance(config, Path):
        win.load_config(config)
        win.open_session()
    else:
        win.ctl.config = config
        win.ctl.open(config)
    qtbot.waitUntil(lambda: win.ctl.session is not None and win.ctl.session.state == "open", timeout=30000)
    qtbot.waitUntil(lambda: not win.ctl.busy, timeout=30000)
    win.start()
    qtbot.waitUntil(lambda: win.ctl.running and not win.ctl.busy, timeout=30000)


def colours(widget: QWidget) -> np.ndarray:
    """The widget's rendered pixels (rows × cols × RGB uint8)."""
    img = widget.grab().toImage().convertToFormat(widget.grab().toImage().Format.Format_RGB888)
    w, h = img.width(), img.height()
    ptr = img.constBits()
    assert ptr is not None
    ptr.setsize(img.sizeInBytes())
    return np.frombuffer(ptr, np.uint8).reshape(h, img.bytesPerLine())[:, : 3 * w].reshape(h, w, 3).copy()


def count_near(px: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """Pixels within ``tol`` (per channel) of colour ``rgb``."""
    return int(np.count_nonzero((np.abs(px.astype(int) - np.array(rgb)) <= tol).all(axis=-1)))


def cmd(pipeline: str, seq: int, kind: str, t: float, label, values, classes) -> Command:  # type: ignore[no-untyped-def]
    return Command(pipeline, seq, kind, t, t, label, tuple(float(v) for v in values), tuple(classes), seq)


# ============================================================================ DKF cursor task
def test_cursor_task_reaches_targets_with_velocity_commands_and_tracks_positions(qtbot, qt_warnings) -> None:  # type: ignore[no-untyped-def]
    from ui.paradigm_views import CursorTask, ParadigmPanel, cursor_mode

    assert cursor_mode(("vx", "vy")) == "velocity" and cursor_mode(("x", "y")) == "position"
    panel = ParadigmPanel()
    qtbot.addWidget(panel)
    panel.resize(700, 600)
    panel.show()
    panel.configure(None)  # no session: every view says what is missing
    assert not panel.notes["cursor"].isHidden() and "no continuous pipeline" in panel.notes["cursor"].text()
    assert panel.cursor_task.isHidden() and panel.robot.isHidden() and not panel.notes["robot"].isHidden()
    task = panel.cursor_task
    rng = np.random.default_rng(1)
    seq = 0
    # a decoder whose velocities (mm/s, any scale) point at the target, with noise: the cursor reaches it
    for _ in range(400):
        v = (task.target - task.xy) * 80.0 + rng.normal(0, 10.0, 2)
        panel.add_commands([cmd("dkf", seq, "continuous", 100.0 + 0.05 * seq, None, v, ("vx", "vy"))])
        seq += 1
    assert task.hits >= 3 and task.n_commands == 400 and task.mode == "velocity"
    assert panel.notes["cursor"].isHidden() and not task.isHidden()  # the view appears once commands arrive
    assert np.all(np.abs(task.xy) <= 1.0)
    px = colours(task)
    assert count_near(px, (255, 210, 0)) > 50  # the cursor
    assert count_near(px, (0, 200, 80), 50) > 50  # the target's ring
    # a decoder pointing away never reaches a target: timeouts are counted
    hits = task.hits
    for _ in range(400):
        v = -(task.target - task.xy) * 80.0
        panel.add_commands([cmd("dkf", seq, "continuous", 100.0 + 0.05 * seq, None, v, ("vx", "vy"))])
        seq += 1
    assert task.hits == hits and task.timeouts >= 1
    # position decoders place the cursor (standardised, ±3 SD = the edges)
    pos = CursorTask("position")
    for k in range(200):
        pos.set_command(cmd("dkf", k, "continuous", 0.05 * k, None, (np.sin(k / 10), np.cos(k / 10)), ("x", "y")))
    assert 0.15 < float(np.abs(pos.xy).max()) <= 1.0


# ============================================================================ EMG gestures + robot
def test_gesture_view_shows_the_decoded_gesture_and_its_probabilities(qtbot, qt_warnings) -> None:  # type: ignore[no-untyped-def]
    from ui.paradigm_views import ParadigmPanel

    panel = ParadigmPanel()
    qtbot.addWidget(panel)
    panel.resize(900, 500)
    panel.show()
    panel.tabs.setCurrentIndex(1)
    panel.routes = {"emg": "gesture"}  # as configure() does for a pipeline whose card says paradigm "emg"
    probs = {"rest": (0.9, 0.025, 0.025, 0.025, 0.025), "Raise": (0.05, 0.05, 0.8, 0.05, 0.05)}
    seq = 0
    for label, n in (("rest", 10), ("Raise", 25)):
        for _ in range(n):
            panel.add_commands([cmd("emg", seq, "discrete", 0.02 * seq, label, probs[label], EMG_CLASSES)])
            seq += 1
    g = panel.gesture
    assert g.label == "Raise" and g.probs[2] == pytest.approx(0.8) and g.n_commands == 35 and g.changes == 1
    assert g.held_s == pytest.approx(0.02 * 24)
    px = colours(g)
    assert count_near(px, (255, 127, 14), 30) > 2000  # the orange "Raise" bar (3rd class colour) and its name


def test_robot_view_renders_the_teleop_output_of_a_real_session(qtbot, window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from app.config import parse_config

    mapping = tmp_path / "map.toml"
    mapping.write_text(
        "[teleop]\ninitial_mode = 'lift'\nmin_confidence = 0.0\ndwell_s = 0.0\ndeadman_s = 0.5\n"
        "[teleop.modes.lift]\n'8.0Hz' = 'lift+'\n'10.0Hz' = 'lift-'\n'12.0Hz' = 'arm+'\n'15.0Hz' = 'arm-'\n"
    )
    cfg = parse_config(
        {
            "session": {"name": "teleop-gui", "stale_after_s": 0.5},
            "sources": {"eeg": {"kind": "sim", "scenario": "ssvep", "seed": 3}},
            "pipelines": {"ssvep": {"source": "eeg", "model": str(MODEL), "hop_s": 0.1}},
            "outputs": {"robot": {"kind": "teleop", "backend": "mujoco", "mapping": str(mapping)}},
        }
    )
    win = window
    open_and_start(qtbot, win, cfg)
    win.tabs.setCurrentWidget(win.paradigms)
    win.paradigms.tabs.setCurrentIndex(1)
    robot = win.paradigms.robot
    assert robot.bridge is win.ctl.session.outputs["robot"] and win.paradigms.notes["robot"].isHidden()
    qtbot.waitUntil(lambda: robot.frames >= 3 or bool(robot.render_error), timeout=20000)
    assert not robot.render_error, robot.render_error
    pix = robot.image.pixmap()
    assert pix is not None and pix.width() == 320 and pix.height() == 240
    img = colours(robot.image)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # a rendered scene, not a flat colour
    qtbot.waitUntil(lambda: "taken" in robot.log.toPlainText(), timeout=10000)
    assert "mode lift" in robot.state.text() and "speed coarse" in robot.state.text()
    assert any(a in robot.log.toPlainText() for a in ("lift+", "lift-", "arm+", "arm-"))
    # the ssvep pipeline is not an EMG or continuous one: those views keep their notes
    assert not win.paradigms.notes["cursor"].isHidden() and not win.paradigms.notes["spindle"].isHidden()


# ============================================================================ spindles
def test_spindle_view_shades_detections_over_the_sleep_trace(qtbot, qt_warnings) -> None:  # type: ignore[no-untyped-def]
    from app.config import parse_config
    from app.session import Session
    from ui.paradigm_views import SpindleView

    session = Session(parse_config({"sources": {"eeg": {"kind": "sim", "scenario": "spindle", "seed": 2}}}))
    session.open()
    session.start()
    try:
        view = SpindleView(view_s=6.0)
        qtbot.addWidget(view)
        view.resize(800, 300)
        view.show()
        stream = session.sources["eeg"].primary()
        view.set_stream(stream, 0, stream.info.labels[0])
        qtbot.waitUntil(lambda: stream.buffer.counter > 250 * 3, timeout=10000)
        t_end = float(stream.buffer.latest(1).timestamps[-1])
        classes = ("spindle", "trigger", "probability", "active")
        # decisions every 24 ms over the last 3 s: one detected spindle from -2.0 s to -1.0 s, triggered at onset
        for k, t in enumerate(np.arange(t_end - 3.0, t_end, 0.024)):
            on = t_end - 2.0 <= t < t_end - 1.0
            onset = on and t - 0.024 < t_end - 2.0
            values = (1.0 if onset else 0.0, 1.0 if onset else 0.0, 0.9 if on else 0.1, 1.0 if on else 0.0)
            view.add_command(cmd("spindle", k, "event", float(t), "spindle" if onset else None, values, classes))
        view.refresh()
        spans = view.shaded_spans()
        assert len(spans) == 1 and spans[0][1] - spans[0][0] == pytest.approx(1.0, abs=0.06)
        assert view.n_onsets == 1 and view.n_triggers == 1 and view._x.size > 250
        px = colours(view)
        assert count_near(px, (255, 214, 164), 25) > 2000  # the shaded spindle (orange, translucent)
        assert count_near(px, (31, 80, 160), 60) > 200  # the EEG trace
        assert count_near(px, (214, 39, 40), 30) > 20  # the onset line
    finally:
        session.stop()
        session.close()


def make_spindle_model(path: Path) -> Path | None:
    """An untrained Portiloop net (seed 0) on C3 at 250 Hz whose threshold makes it fire on the simulated sleep EEG.

    None when ``decoders.spindle`` (or torch) is not importable in this build. The views only need
    real event commands, not good detections.
    """
    try:
        import torch

        from decoders.spindle.detector import DetectorSettings, OrtStepModel, SpindleDetector
        from decoders.spindle.network import PortiloopNet
        from decoders.spindle.preprocessing import FrontEndSettings
        from decoders.spindle.training import build_card, write_model
    except ImportError:
        return None
    from acquisition.simulator import SimulatorSettings, simulate

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = PortiloopNet().eval()
    front = FrontEndSettings()
    kw: dict = {"srate": 250.0, "channel": "C3", "front": front, "training_data": "none"}
    write_model(net, build_card(settings=DetectorSettings(), **kw), path)
    x, _, _ = simulate(SimulatorSettings(scenario="spindle", seed=2), 20.0)
    prob = SpindleDetector(OrtStepModel(path), 250.0, front).process(x[:, 0]).prob
    thr = float(np.clip(np.percentile(prob[prob.size // 10 :], 90), 0.01, 0.99))  # untrained: fires now and then
    write_model(net, build_card(settings=DetectorSettings(threshold=thr), **kw), path)
    return path


def test_spindle_pipeline_of_a_real_session_feeds_the_spindles_tab(qtbot, window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from app.config import parse_config

    path = make_spindle_model(tmp_path / "spindle.onnx")
    if path is None:
        pytest.skip("decoders.spindle (or torch) is not importable in this build")
    cfg = parse_config(
        {
            "session": {"name": "spindle-gui"},
            "sources": {"eeg": {"kind": "sim", "scenario": "spindle", "seed": 2}},
            "pipelines": {"spindle": {"source": "eeg", "model": str(path), "catch_up": "all"}},
        }
    )
    win = window
    open_and_start(qtbot, win, cfg)
    win.tabs.setCurrentWidget(win.paradigms)
    win.paradigms.tabs.setCurrentIndex(2)
    view = win.paradigms.spindle
    assert win.paradigms.routes == {"spindle": "spindle"} and view.channel_name == "C3"
    assert view.threshold is not None and 0.0 < view.threshold < 1.0  # from the card, drawn on the strip
    assert win.paradigms.notes["spindle"].isHidden()
    qtbot.waitUntil(lambda: view.n_commands > 100 and view._x.size > 500, timeout=20000)
    probs = [e[2] for e in view.events]
    assert all(0.0 <= p <= 1.0 for p in probs) and len(set(probs)) > 10  # the detector's probability, live
    qtbot.waitUntil(lambda: view.n_onsets >= 1, timeout=30000)
    assert view.shaded_spans()
    assert count_near(colours(view), (31, 80, 160), 60) > 200


# ============================================================================ stimulation: NMES + audio
def nmes_audio_config(tmp_path: Path) -> Path:
    """configs/nmes_sim.toml on the simulated stimulator, plus the demo's SSVEP EEG driving an audio output."""
    text = (REPO / "configs" / "nmes_sim.toml").read_text()
    text = text.replace('driver = "serial"', 'driver = "sim"').replace('port = "stimbox-sim"', "")
    text = text.replace('"../out/audit/{session}-{time}-safety.jsonl"', f'"{tmp_path / "audit.jsonl"}"')
    text += (
        '\n[sources.eeg]\nkind = "sim"\nscenario = "ssvep"\nseed = 3\n'
        f'[pipelines.ssvep]\nsource = "eeg"\nmodel = "{MODEL}"\nhop_s = 0.1\n'
        '[outputs.audio]\nkind = "audio"\nsink = "null"\ntrigger_label = "8.0Hz"\nlevel_db = 50.0\n'
    )
    path = tmp_path / "nmes_audio.toml"
    path.write_text(text)
    return path


def test_stimulation_tab_plots_nmes_target_measured_and_pulse_width_and_lists_audio_bursts(
    qtbot, window, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    win = window
    # the tab is laid out and painted once before the session arms: that first paint takes tens of ms
    # holding the interpreter lock, and the simulated device's watchdog trips after 90 ms without a heartbeat
    win.tabs.setCurrentWidget(win.stim)
    qtbot.wait(100)
    open_and_start(qtbot, win, nmes_audio_config(tmp_path))
    views = win.stim.views
    qtbot.waitUntil(lambda: views.n_samples >= 30 and max(views.pw, default=0) > 0, timeout=20000)
    ref, theta = np.array(views.ref), np.array(views.theta)
    assert np.nanmin(ref) >= 10.0 - 1e-6 and np.nanmax(ref) <= 40.0 + 1e-6 and np.ptp(ref[np.isfinite(ref)]) > 0.5
    assert np.isfinite(theta).sum() >= 25
    assert 0 < max(views.pw) <= 400.0 and max(views.pw_delivered) > 0  # the device delivers what RISE asks
    x, y = views.theta_curve.getData()
    assert x is not None and y is not None and len(x) >= 30 and x.max() <= 0.0 and x.min() >= -views.history_s
    assert np.isfinite(y).sum() >= 25 and not views.angle_plot.isHidden()
    assert "controller knee" in views.nmes_note.text() and "pulse width" in views.nmes_note.text()
    qtbot.waitUntil(lambda: "delivered dose: 0.0 s" not in views.dose.text(), timeout=10000)
    assert "of 1800 s" in views.dose.text()
    qtbot.waitUntil(lambda: "bursts" in views.audio.text() and "last at" in views.audio.text(), timeout=20000)
    assert "audio audio (null)" in views.audio.text()
    px = colours(views.angle_plot)
    assert count_near(px, (31, 119, 180), 40) > 50 and count_near(px, (44, 160, 44), 40) > 20
    assert count_near(colours(views.pw_plot), (214, 39, 40), 40) > 50


def test_stimulation_tab_says_when_there_is_no_nmes_or_audio(qtbot, window) -> None:  # type: ignore[no-untyped-def]
    win = window
    open_and_start(qtbot, win, REPO / "configs" / "demo.toml")
    win.tabs.setCurrentWidget(win.stim)
    views = win.stim.views
    qtbot.waitUntil(lambda: "delivered dose" in views.dose.text(), timeout=5000)
    qtbot.wait(300)
    assert views.n_samples == 0 and "no NMES controller" in views.nmes_note.text()
    assert views.angle_plot.isHidden() and views.pw_plot.isHidden()
    assert views.audio.text() == "no audio output in this session" and "none" in views.dose.text()
