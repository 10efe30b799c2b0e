"""The clinician GUI (issue 7), driven for real: the main window offscreen with pytest-qt, screenshots under Xvfb.

Every Qt test runs with a message handler that records Qt warnings; any warning fails the test.
Acceptance 4 (same config + same recording -> same commands in the GUI, the daemon and
``closedloop replay --fast``) is :func:`test_gui_daemon_and_fast_replay_give_the_same_commands`.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before Qt loads; the Xvfb test runs its own process

from conftest import MODEL, REPO, unique, wait_until
from PyQt6.QtCore import Qt

from acquisition.simulator import SimulatorSettings, simulate
from acquisition.stream import StreamInfo
from acquisition.xdf_writer import XdfWriter
from app.pipeline import Command
from ui.feedback import flicker_luminance, mi_value, ssvep_frequencies
from ui.quality import FLAT, LINE, OK, RAILED, channel_quality
from ui.scope import DisplayWindow, column_minmax, raster_traces, stack_traces

DEMO = REPO / "configs" / "demo.toml"


# ============================================================================ fixtures
def open_and_start(qtbot, win, config: Path) -> None:  # type: ignore[no-untyped-def]
    win.load_config(config)
    win.open_session()
    qtbot.waitUntil(lambda: win.ctl.session is not None and win.ctl.session.state == "open", timeout=30000)
    qtbot.waitUntil(lambda: not win.ctl.busy, timeout=30000)
    win.start()
    qtbot.waitUntil(lambda: win.ctl.running and not win.ctl.busy, timeout=30000)


# ============================================================================ pure parts
def test_column_minmax_keeps_a_one_sample_spike_and_the_range() -> None:
    x = np.zeros((5000, 3), dtype=np.float32)
    x[1234, 1] = 500.0
    x[4321, 2] = -300.0
    lo, hi, covered = column_minmax(x, 800)
    assert lo.shape == hi.shape == (800, 3) and covered == 800 * 6  # round(5000 / 800) samples per column
    assert hi[:, 1].max() == 500.0 and lo[:, 2].min() == -300.0 and not hi[:, 0].any() and not lo[:, 0].any()
    assert hi[-1 - (4999 - 1234) // 6, 1] == 500.0  # the newest sample ends the last column
    lo, hi, covered = column_minmax(x[:100], 800)  # fewer samples than pixels: one sample per column
    assert covered == 800 and lo.shape == (800, 3)


def test_stacked_traces_are_scaled_per_channel_and_clipped_to_their_lane() -> None:
    x = np.array([[1e6, 10.0, -5.0]], dtype=np.float32)
    y = stack_traces(x, np.array([100.0, 20.0, 10.0], dtype=np.float32))
    assert y[0, 0] == pytest.approx(2 + 0.45)  # channel 0 on top, clipped to its lane
    assert y[0, 1] == pytest.approx(1 + 0.45)  # 10 µV of a 20 µV lane: at the clip edge
    assert y[0, 2] == pytest.approx(0 - 0.45)


def test_raster_fills_each_column_between_min_and_max_inside_its_lane() -> None:
    lo = np.array([[0.0, -0.4], [0.0, -0.4]], dtype=np.float32)
    hi = np.array([[0.0, 0.4], [0.0, 0.4]], dtype=np.float32)
    colors = np.array([1, 2], dtype=np.uint32)
    img = raster_traces(lo, hi, 100, colors, 0)  # top-down: channel 0 rows 0-49, channel 1 rows 50-99
    assert set(np.flatnonzero(img[:, 0] == 1)) <= {24, 25, 26}  # a flat trace: 1-2 px at the lane centre
    ch1 = np.flatnonzero(img[:, 0] == 2)
    assert ch1.min() >= 50 and 50 + 4 <= ch1.min() <= 50 + 6 and 100 - 6 <= ch1.max() <= 100 - 4
    assert np.array_equal(raster_traces(lo, hi, 100, colors, 0, bottom_up=True), img[::-1])


def test_scope_scrolls_incrementally_to_the_same_picture_as_a_full_redraw(qtbot, qt_warnings) -> None:  # type: ignore[no-untyped-def]
    from acquisition.source import BufferedStream
    from ui.scope import ScopeWidget

    info = StreamInfo.simple("grid", "EMG", [f"E{i:02d}" for i in range(64)], 1000.0)
    stream = BufferedStream.create(info, 30)
    scope = ScopeWidget()
    qtbot.addWidget(scope)
    scope.resize(900, 600)
    scope.show()
    scope.set_stream(stream)
    rng = np.random.default_rng(1)
    t = 0.0
    for _ in range(40):
        chunk = (40 * rng.standard_normal((100, 64))).astype(np.float32)
        stream.buffer.write(chunk, t + np.arange(100) / 1000.0)
        t += 0.1
        scope.refresh()
        qtbot.wait(5)
    assert scope._pixels is not None
    k = scope._k
    rest = k - scope._pending.shape[0]
    stream.buffer.write(np.zeros((rest, 64), np.float32), t + np.arange(rest) / 1e3)
    scope.refresh()  # complete the pending column
    incremental = scope.ordered_pixels()
    assert scope._col != 0  # the image ring has scrolled
    scope.redraw()
    again = scope.ordered_pixels()
    assert again.shape == incremental.shape
    assert np.mean(again == incremental) > 0.999
    assert (incremental != ScopeWidget.BACKGROUND).mean() > 0.05  # traces, not a blank plot


def test_display_window_filters_causally_and_keeps_raw() -> None:
    w = DisplayWindow(2, 1000.0, view_s=1.0)
    t = np.arange(3000) / 1000.0
    sig = np.stack([100 + 10 * np.sin(2 * np.pi * 10 * t), np.full_like(t, 5.0)], axis=1).astype(np.float32)
    w.set_filters(1.0, None, 50.0)
    for k in range(0, 3000, 37):
        w.push(sig[k : k + 37])
    assert w.filled == 1000
    assert abs(float(w.data[:, 0].mean())) < 2.0  # the 100 µV offset is gone after the high-pass
    assert float(w.raw[:, 0].mean()) == pytest.approx(100.0, abs=1.0)
    assert np.ptp(w.data[-500:, 0]) == pytest.approx(20.0, rel=0.15)  # the 10 Hz sine passes


def test_quality_verdicts_flat_railed_line_ok() -> None:
    rng = np.random.default_rng(0)
    fs = 250.0
    t = np.arange(250) / fs
    ok = 10 * rng.standard_normal(250)
    flat = np.full(250, 3.0)
    railed = np.clip(50 * rng.standard_normal(250), -30, 30)
    line = 2 * rng.standard_normal(250) + 40 * np.sin(2 * np.pi * 50 * t)
    x = np.stack([ok, flat, railed, line], axis=1)
    assert channel_quality(x, fs) == [OK, FLAT, RAILED, LINE]
    with pytest.raises(ValueError, match="samples × channels"):
        channel_quality(ok, fs)


def test_flicker_is_frame_based_and_mi_bar_value() -> None:
    # 15 Hz on a 60 Hz display: period of 4 frames whatever the wall-clock timing
    lum = [flicker_luminance(15.0, n, 60.0) for n in range(8)]
    assert lum[0] == pytest.approx(0.5) and lum[1] == pytest.approx(1.0) and lum[3] == pytest.approx(0.0)
    assert lum[:4] == pytest.approx(lum[4:])
    assert [flicker_luminance(10.0, n, 60.0, "square") for n in range(6)] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert mi_value(("left", "right", "rest"), (0.1, 0.7, 0.2)) == pytest.approx(0.6)
    from decoders.card import read_card

    assert ssvep_frequencies(read_card(MODEL)) == [8.0, 10.0, 12.0, 15.0]


# ============================================================================ the main window (offscreen)
def test_simulator_loop_commands_arm_and_estop_from_button_and_keyboard(qtbot, window) -> None:  # type: ignore[no-untyped-def]
    win = window
    open_and_start(qtbot, win, DEMO)
    # setup panel: the simulator's streams with channels and rate
    table = win.setup.table
    rows = {table.item(r, 1).text(): r for r in range(table.rowCount())}
    assert "closedloop-sim-ssvep" in rows
    r = rows["closedloop-sim-ssvep"]
    assert table.item(r, 3).text() == "8" and table.item(r, 4).text() == "250"
    # commands arrive through the queued feed; the latency strip shows them
    qtbot.waitUntil(lambda: win.commands_seen >= 5, timeout=20000)
    assert win.last_command is not None and win.last_command.label in ("8.0Hz", "10.0Hz", "12.0Hz", "15.0Hz")
    qtbot.waitUntil(lambda: int(win.latency.values["commands"].text() or 0) >= 5, timeout=5000)
    assert win.latency.values["p50"].text().endswith("ms")
    # the scope shows data
    win.tabs.setCurrentWidget(win.signals)
    qtbot.waitUntil(
        lambda: win.signals.scope.window is not None and win.signals.scope.window.filled > 250, timeout=10000
    )
    qtbot.waitUntil(lambda: win.signals.scope.frames > 5 and len(win.signals.quality) == 8, timeout=10000)
    pixels = win.signals.scope._pixels
    assert pixels is not None and (pixels != win.signals.scope.BACKGROUND).mean() > 0.02  # traces drawn
    # arm from the stimulation panel
    win.tabs.setCurrentWidget(win.stim)
    qtbot.mouseClick(win.stim.arm_btn, Qt.MouseButton.LeftButton)
    assert win.ctl.safety_state()["state"] == "armed"
    qtbot.waitUntil(lambda: win.safety_label.text() == "ARMED", timeout=3000)
    # e-stop from the keyboard (Esc): latched, outputs held, arming refused until released
    win.activateWindow()
    qtbot.keyClick(win, Qt.Key.Key_Escape)
    assert win.ctl.estopped and win.ctl.n_estops == 1 and "keyboard Esc" in win.ctl.last_estop_reason
    assert win.safety_label.text() in ("ESTOPPED", "FAULT")  # daemon-style stand-in / SafetySupervisor
    s = win.ctl.session
    outs = [o for o in s.outputs.values() if hasattr(o, "n_sent")]
    assert outs, "the session has a command outlet"
    n0 = s.n_blocked  # commands keep being decoded and recorded, but the engine holds every output
    qtbot.waitUntil(lambda: s.n_blocked > n0 + 2, timeout=5000)
    sent = outs[0].n_sent
    qtbot.waitUntil(lambda: s.n_blocked > n0 + 5, timeout=5000)
    assert outs[0].n_sent == sent
    qtbot.mouseClick(win.stim.arm_btn, Qt.MouseButton.LeftButton)
    assert "e-stop is latched" in win.stim.note.text() or win.ctl.estopped
    qtbot.mouseClick(win.stim.clear_btn, Qt.MouseButton.LeftButton)
    assert win.ctl.safety_state()["state"] == "disarmed"
    qtbot.waitUntil(lambda: outs[0].n_sent > sent, timeout=5000)  # released: commands flow again
    # Space and the big button e-stop too
    qtbot.keyClick(win.tabs, Qt.Key.Key_Space)
    assert win.ctl.estopped and win.ctl.n_estops == 2
    qtbot.mouseClick(win.stim.clear_btn, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(win.estop_btn, Qt.MouseButton.LeftButton)
    assert win.ctl.estopped and win.ctl.n_estops == 3
    # the log shows what happened; stop puts outputs safe and ends the session
    assert any("E-STOP" in line for line in win.log_panel.lines)
    qtbot.mouseClick(win.stop_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.ctl.state == "stopped" and not win.ctl.busy, timeout=15000)
    assert not s.errors


def test_setup_panel_finds_an_lsl_stream_on_the_network_and_shows_it(qtbot, window) -> None:  # type: ignore[no-untyped-def]
    import threading

    from acquisition.lsl import make_outlet

    name = unique("gui-lsl")
    info = StreamInfo.simple(name, "EEG", [f"C{i}" for i in range(4)], 500.0, source_id=name)
    outlet = make_outlet(info)
    stop = threading.Event()

    def push() -> None:
        k = 0
        while not stop.is_set():
            t = np.arange(k, k + 10) / 500.0
            outlet.push_chunk((20 * np.sin(2 * np.pi * 7 * t)[:, None] * np.ones((1, 4))).astype(np.float32))
            k += 10
            stop.wait(0.02)

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    try:
        win = window
        win.setup.kind.setCurrentIndex(2)  # LSL stream
        win.setup.search_lsl()
        qtbot.waitUntil(
            lambda: any(name in win.setup.lsl_list.item(i).text() for i in range(win.setup.lsl_list.count())),
            timeout=15000,
        )
        row = next(i for i in range(win.setup.lsl_list.count()) if name in win.setup.lsl_list.item(i).text())
        win.setup.lsl_list.setCurrentRow(row)
        win.setup.open_session()
        qtbot.waitUntil(
            lambda: win.ctl.session is not None and win.ctl.state == "open" and not win.ctl.busy, timeout=20000
        )
        table = win.setup.table  # filled by the queued "opened" signal, which may land after the state changes
        qtbot.waitUntil(lambda: table.rowCount() > 0 and table.item(0, 1) is not None, timeout=10000)
        assert table.item(0, 1).text() == name and table.item(0, 3).text() == "4" and table.item(0, 4).text() == "500"
        qtbot.mouseClick(win.start_btn, Qt.MouseButton.LeftButton)
        win.tabs.setCurrentWidget(win.signals)
        qtbot.waitUntil(
            lambda: win.signals.scope.window is not None and win.signals.scope.window.filled > 100, timeout=15000
        )
        assert win.signals.scope.labels == ["C0", "C1", "C2", "C3"]
        # the SSVEP grid flickers frame by frame while the Feedback tab is shown
        win.tabs.setCurrentWidget(win.feedback)
        qtbot.waitUntil(lambda: win.flicker.frames_drawn > 10, timeout=10000)
        assert win.flicker.running and len(set(np.round(win.flicker.luminances(), 3))) > 1
        win.tabs.setCurrentWidget(win.setup)
        assert not win.flicker.running
    finally:
        stop.set()
        pusher.join(5)


def test_decoder_panel_checks_a_model_against_the_stream_and_recording(qtbot, window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from decoders.ssvep_reference import build_ssvep_reference_model, save_model

    win = window
    open_and_start(qtbot, win, DEMO)
    win.tabs.setCurrentWidget(win.decoder)
    qtbot.waitUntil(
        lambda: win.decoder.table.rowCount() == 1 and "ssvep" in win.decoder.card.toPlainText(), timeout=5000
    )
    labels = ["PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2"]
    wrong = save_model(build_ssvep_reference_model([8.0, 10.0, 12.0, 15.0], 256.0, 1.0, labels), tmp_path / "w.onnx")
    win.decoder.load_model("ssvep", wrong)
    qtbot.waitUntil(lambda: "refused" in win.decoder.check.text(), timeout=15000)
    assert "256" in win.decoder.check.text() and "250" in win.decoder.check.text()
    assert not win.decoder.use_btn.isEnabled()
    same = tmp_path / "same.onnx"
    shutil.copy(MODEL, same)
    win.decoder.load_model("ssvep", same)
    qtbot.waitUntil(lambda: "matches" in win.decoder.check.text(), timeout=15000)
    assert win.decoder.use_btn.isEnabled() and '"srate": 250.0' in win.decoder.card.toPlainText()
    if not win.decoder.training_available:
        assert "unavailable" in win.decoder.result.toPlainText() and not win.decoder.train_btn.isEnabled()
    # record start/stop on the running session
    out = tmp_path / "gui.xdf"
    win.start_recording(out)
    qtbot.waitUntil(lambda: win.ctl.recording_path == out and not win.ctl.busy, timeout=10000)
    n0 = win.ctl.session.n_commands
    qtbot.waitUntil(lambda: win.ctl.session.n_commands > n0 + 3, timeout=10000)
    win.ctl.stop_recording()
    qtbot.waitUntil(lambda: win.ctl.recording_path is None and not win.ctl.busy, timeout=10000)
    from acquisition.xdf_reader import read_xdf

    names = {s.info.name: s for s in read_xdf(out)}
    assert names["closedloop-sim-ssvep"].n_samples > 100


def test_closedloop_gui_with_the_demo_config_runs_and_quits_by_itself(tmp_path: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "gui", "--config", "configs/demo.toml", "--seconds", "4"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("gui: session 'demo'"))
    assert int(line.split(" commands")[0].rsplit(" ", 1)[1]) > 0


# ============================================================================ acceptance 4
T0 = 5000.0  # recording clock (s); the EEG starts LEAD_S after a first marker, so live replay cannot miss samples
LEAD_S = 1.5
SPEED = 2.0


def write_recording(path: Path, seconds: float = 5.0) -> None:
    """A simulated SSVEP recording (the demo's montage and rate) with a marker stream that starts first."""
    settings = SimulatorSettings(scenario="ssvep", seed=11, trial_s=2.0, ssvep_amplitude_uv=5.0)
    data, markers, info = simulate(settings, seconds)
    ts = T0 + LEAD_S + np.arange(data.shape[0]) / info.srate
    minfo = StreamInfo.simple("markers", "Markers", ["marker"], 0.0, channel_format="string")
    with XdfWriter(path) as w:
        sid = w.add_stream(info, created_at=T0)
        mid = w.add_stream(minfo, created_at=T0)
        w.write_samples(mid, [["recording-start"]], np.array([T0]))
        w.write_samples(sid, data, ts)
        w.write_samples(mid, [[m] for _, m in markers], np.array([ts[k] for k, _ in markers]))


def replay_config(path: Path, recording: Path) -> Path:
    path.write_text(
        f'[session]\nname = "acceptance4"\nstale_after_s = 0.5\n'
        f'[sources.eeg]\nkind = "replay"\npath = "{recording}"\nspeed = {SPEED}\n'
        f'[pipelines.ssvep]\nsource = "eeg"\nmodel = "{MODEL}"\nhop_s = 0.1\ncatch_up = "all"\n'
        f'[outputs.commands]\nkind = "lsl"\nstream_name = "acceptance4-{os.getpid()}"\n'
    )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def daemon_commands(config: Path, tmp: Path) -> list[dict]:
    port = free_port()
    log = tmp / "daemon.log"
    cmd = [sys.executable, "-m", "app.cli", "daemon", "--config", str(config), "--port", str(port), "--no-auth"]
    with open(log, "wb") as err:
        proc = subprocess.Popen([*cmd, "--start"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    try:

        def finished() -> bool:
            try:
                st = http_get(port, "/api/status")
            except OSError:
                return False
            s = st.get("session")
            return s is not None and s["state"] == "stopped"

        assert wait_until(finished, 60, interval=0.1), log.read_text()
        body = http_get(port, "/api/commands?n=500")
        assert body["n"] == body["total"], body  # every command of the run fits the recent list
        return body["commands"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()


def test_gui_daemon_and_fast_replay_give_the_same_commands(qtbot, window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rec = tmp_path / "rec.xdf"
    write_recording(rec)
    cfg = replay_config(tmp_path / "replay.toml", rec)
    # closedloop replay --fast (recording timestamps, virtual clock)
    out = tmp_path / "fast.jsonl"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "replay",
            str(rec),
            "--config",
            str(cfg),
            "--fast",
            "--commands-out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    fast = [Command.from_json(line) for line in out.read_text().splitlines()]
    assert len(fast) > 20
    # the GUI, replaying the same file through the same config at SPEED x real time
    win = window
    win.ctl.keep_all_commands = True
    open_and_start(qtbot, win, cfg)
    qtbot.waitUntil(lambda: win.ctl.state == "stopped" and not win.ctl.busy, timeout=60000)
    gui = win.ctl.all_commands
    t0 = win.ctl.replay_t0("eeg")
    # the daemon, same config and file
    daemon = daemon_commands(cfg, tmp_path)

    def key(c: Command | dict) -> tuple:
        d = c if isinstance(c, dict) else c.__dict__
        return (d["label"], d["sample_index"])

    assert [key(c) for c in gui] == [key(c) for c in fast]
    assert [key(c) for c in daemon] == [key(c) for c in fast]
    for a, b, c in zip(gui, fast, daemon, strict=True):
        assert a.values == pytest.approx(b.values, abs=1e-5) and c["values"] == pytest.approx(b.values, abs=1e-5)
        # live stamps map back onto the recording clock: t_rec = T0 + (t_live - t0) * speed
        assert T0 + (a.sample_time - t0) * SPEED == pytest.approx(b.sample_time, abs=1e-6)
    d0, f0 = daemon[0]["sample_time"], fast[0].sample_time
    for c, b in zip(daemon, fast, strict=True):
        assert (c["sample_time"] - d0) * SPEED == pytest.approx(b.sample_time - f0, abs=1e-6)


# ============================================================================ screenshots under Xvfb
def _free_display() -> int:
    for n in range(90, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number between :90 and :199")


@pytest.fixture
def xvfb() -> Iterator[str]:
    """A private Xvfb server; yields its DISPLAY. Skips only when Xvfb is not installed."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb); the screenshot test needs a real X display")
    n = _free_display()
    proc = subprocess.Popen(
        [exe, f":{n}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: Path(f"/tmp/.X11-unix/X{n}").exists() or proc.poll() is not None, 10)
        assert proc.poll() is None, "Xvfb exited at start"
        yield f":{n}"
    finally:
        proc.terminate()
        proc.wait(10)


def _nonblank_plot(png: Path) -> float:
    """Fraction of pixels that are neither the most common colour (a blank plot is one colour)."""
    import imageio.v3 as iio

    img = iio.imread(png)[..., :3].reshape(-1, 3)
    _, counts = np.unique(img, axis=0, return_counts=True)
    return 1.0 - counts.max() / img.shape[0]


@pytest.mark.slow
def test_screenshots_of_every_main_view_under_xvfb(xvfb: str, tmp_path: Path) -> None:
    from test_gui_panels import make_spindle_model

    out = Path(os.environ.get("CLOSEDLOOP_SCREENSHOTS") or tmp_path / "screenshots")
    env = {**os.environ, "DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb"}
    spindle = make_spindle_model(tmp_path / "spindle.onnx")  # None when decoders.spindle is absent
    panels = ["--panels", *(["--spindle-model", str(spindle)] if spindle is not None else [])]
    r = subprocess.run(
        [
            *[sys.executable, "-m", "ui.screenshots", str(out), "--config", str(DEMO), "--seconds", "2.5"],
            *["--scope64", *panels],
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "Warning:" not in r.stderr, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["qt_warnings"] == [], res["qt_warnings"]
    assert res["commands"] > 0
    files = res["files"]
    names = {Path(f).name for f in files}
    assert {"setup.png", "signals.png", "decoder.png", "feedback.png", "stimulation.png", "log.png"} <= names
    assert "64ch-signals.png" in names
    # the paradigm and stimulation panels, each on a session that has the pipeline/output
    assert {"stimulation-nmes.png", "paradigms-emg-robot.png", "paradigms-cursor.png"} <= names
    assert spindle is None or "paradigms-spindles.png" in names
    for f in files:
        assert _nonblank_plot(Path(f)) > 0.05, f"{f} looks blank"


# ============================================================================ training from the decoder panel
def test_decoder_panel_trains_with_a_progress_bar_off_the_gui_thread(
    qtbot, window, data_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    spec = REPO / "tests" / "datasets" / "eegmmidb_S001_ff_run14.toml"  # one run: seconds to train
    panel = window.decoder
    if not panel.training_available:
        pytest.skip("decoders/training.py is not installed in this build")
    window.tabs.setCurrentWidget(panel)
    seen: list[int] = []
    panel.progress.valueChanged.connect(seen.append)
    panel.paradigm.setCurrentText("mi")
    panel.dataset.setText(str(spec))
    panel.method.setText("csp-lda")
    panel.out.setText(str(tmp_path / "mi.onnx"))
    qtbot.mouseClick(panel.train_btn, Qt.MouseButton.LeftButton)
    assert not panel.train_btn.isEnabled()  # running on a worker thread; the GUI stays responsive
    qtbot.waitUntil(lambda: panel.training_done, timeout=240000)
    text = panel.result.toPlainText()
    assert "failed" not in text, text
    assert (tmp_path / "mi.onnx").is_file() and json.loads(text)["model"] == str(tmp_path / "mi.onnx")
    assert panel.progress.value() == 100 and len(set(seen)) >= 2
