"""Screenshots of every main view of the GUI on a running session (docs, the Xvfb test).

``python -m ui.screenshots OUT_DIR [--config F.toml] [--seconds S] [--prefix P] [--tabs A,B]``
opens the main window on the config (``configs/demo.toml`` by default), starts the session,
lets it run ``S`` seconds, then shows each tab in turn for a moment and saves
``OUT_DIR/P<tab>.png`` (a grab of the whole window); ``--scope64`` adds ``64ch-signals.png``
with 64 channels at 1 kHz on the scope; ``--panels [--spindle-model M.onnx]`` adds the
paradigm and stimulation panels on their own sessions (:func:`take_panel_screenshots`). It
prints one JSON line with the saved files, the session's command count and every Qt warning
seen (a message handler records them). Run it under a real display (Xvfb) or offscreen.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from PyQt6.QtCore import QEventLoop, QTimer, QtMsgType, qInstallMessageHandler
from PyQt6.QtWidgets import QApplication

import app.cli  # noqa: F401 - sets LSLAPICFG (quiet liblsl) before pylsl loads
from ui.main_window import DEMO_CONFIG, REPO_ROOT, MainWindow

QT_WARNINGS: list[str] = []


def _record_qt_message(kind: QtMsgType, _ctx: object, message: str | None) -> None:
    if kind not in (QtMsgType.QtDebugMsg, QtMsgType.QtInfoMsg):
        QT_WARNINGS.append(f"{kind.name}: {message}")
    print(f"qt {kind.name}: {message}", file=sys.stderr)


def pump(app: QApplication, seconds: float) -> None:
    """Run the Qt event loop for ``seconds`` s (timers, paints and queued signals are processed)."""
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def take_screenshots(
    out_dir: Path, config: Path, seconds: float = 4.0, prefix: str = "", tabs: list[str] | None = None
) -> dict:
    """Run the GUI on ``config`` and save one PNG per tab; returns ``{"files", "commands", "state"}``."""
    qInstallMessageHandler(_record_qt_message)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    out_dir.mkdir(parents=True, exist_ok=True)
    win = open_window(config, app)
    win.tabs.setCurrentWidget(win.signals)
    pump(app, seconds)
    files = []
    for i, name in enumerate(win.TABS):
        if (tabs and name not in tabs) or (name == "Paradigms" and not tabs):
            continue  # the paradigm views are shot on sessions that have them (--panels)
        win.tabs.setCurrentIndex(i)
        if name == "Signals":
            win.signals.hp.setChecked(True)
            win.signals.scope.autoscale()
        if name == "Stimulation":
            win.ctl.arm()
        pump(app, 0.8)
        path = out_dir / f"{prefix}{name.lower()}.png"
        win.grab().save(str(path))
        files.append(str(path))
    s = win.ctl.session
    result = {"files": files, "commands": s.n_commands if s else 0, "state": s.state if s else None, "fps": win.fps}
    win.close()
    result["qt_warnings"] = list(QT_WARNINGS)
    return result


SCOPE64_TOML = """\
# 64 channels at 1 kHz (the simulated 8 x 8 EMG grid) next to the demo's SSVEP EEG and pipeline
[session]
name = "scope64"
[sources.emg]
kind = "sim"
scenario = "emg"
seed = 3
[sources.eeg]
kind = "sim"
scenario = "ssvep"
seed = 7
amplitude_uv = 5.0
[pipelines.ssvep]
source = "eeg"
model = "{model}"
hop_s = 0.1
"""


def write_scope64_config(folder: Path) -> Path:
    """Write the 64-channel, 1 kHz session (scope screenshots and benchmarks/gui_fps.py) into ``folder``."""
    path = folder / "scope64.toml"
    path.write_text(SCOPE64_TOML.format(model=REPO_ROOT / "models" / "ssvep_reference.onnx"))
    return path


# ---------------------------------------------------------------------------- paradigm and stimulation panels
PANELS_TELEOP_TOML = """\
# The flexemg teleop mapping on the simulated robot; gestures come from the scripted feed below
[session]
name = "panels-robot"
[sources.knee]
kind = "sim"
scenario = "knee"
[outputs.robot]
kind = "teleop"
backend = "mujoco"
mapping = "{mapping}"
"""

PANELS_SPINDLE_TOML = """\
[session]
name = "panels-spindle"
[sources.eeg]
kind = "sim"
scenario = "spindle"
seed = {seed}
[pipelines.spindle]
source = "eeg"
model = "{model}"
catch_up = "all"
"""

AUDIO_TOML = """
[sources.eeg]
kind = "sim"
scenario = "ssvep"
seed = 3
[pipelines.ssvep]
source = "eeg"
model = "{model}"
hop_s = 0.1
[outputs.audio]
kind = "audio"
sink = "null"
trigger_label = "8.0Hz"
level_db = 50.0
"""

# (gesture, seconds): a participant driving forward, switching to the lift and raising it, resting
GESTURE_SCRIPT = (("rest", 0.5), ("Raise", 2.0), ("rest", 0.4), ("Fist", 0.3), ("rest", 0.4), ("Raise", 5.0))
EMG_CLASSES = ("rest", "Fist", "Raise", "Lower", "Open")


def write_nmes_audio_config(folder: Path) -> Path:
    """``configs/nmes_sim.toml`` on the simulated stimulator, plus SSVEP EEG whose 8 Hz decisions trigger audio."""
    text = (REPO_ROOT / "configs" / "nmes_sim.toml").read_text()
    text = text.replace('driver = "serial"', 'driver = "sim"').replace('port = "stimbox-sim"', "")
    text = text.replace('"../out/audit/{session}-{time}-safety.jsonl"', f'"{folder / "audit.jsonl"}"')
    path = folder / "nmes_audio.toml"
    path.write_text(text + AUDIO_TOML.format(model=REPO_ROOT / "models" / "ssvep_reference.onnx"))
    return path


class ScriptedFeed:
    """Scripted decoder output for views whose trained models are not in the repository (screenshots only).

    Every 50 ms: a DKF-like velocity command (towards the cursor task's target, with noise) into the
    cursor view, and an EMG gesture command following :data:`GESTURE_SCRIPT` into the gesture view and
    to the session's teleop bridge (so the robot moves with the gesture shown).
    """

    def __init__(self, win: MainWindow, bridge: object | None) -> None:
        import numpy as np

        from app.pipeline import Command

        self.np, self.Command = np, Command
        self.win, self.bridge = win, bridge
        self.rng = np.random.default_rng(0)
        self.seq = 0
        self.t0 = time.monotonic()
        self.timer = QTimer()
        self.timer.timeout.connect(self.step)
        self.timer.start(50)

    def gesture(self, t: float) -> str:
        total = sum(d for _, d in GESTURE_SCRIPT)
        t = t % total
        for name, d in GESTURE_SCRIPT:
            if t < d:
                return name
            t -= d
        return "rest"

    def step(self) -> None:
        np, Command = self.np, self.Command
        import pylsl

        now = pylsl.local_clock()
        task = self.win.paradigms.cursor_task
        v = (task.target - task.xy) * 60.0 + self.rng.normal(0.0, 12.0, 2)
        cmds = [Command("dkf", self.seq, "continuous", now, now, None, (float(v[0]), float(v[1])), ("vx", "vy"), 0)]
        label = self.gesture(time.monotonic() - self.t0)
        p = self.rng.dirichlet(np.ones(len(EMG_CLASSES))) * 0.2
        p[EMG_CLASSES.index(label)] += 0.8
        g = Command("emg", self.seq, "discrete", now, now, label, tuple(float(x) for x in p), EMG_CLASSES, 0)
        cmds.append(g)
        self.seq += 1
        self.win.paradigms.routes.setdefault("emg", "gesture")
        self.win.paradigms.add_commands(cmds)
        if self.bridge is not None:
            self.bridge.send(g)  # type: ignore[attr-defined]


def open_window(config: Path, app: QApplication) -> MainWindow:
    """Show the main window (1280 × 860), open ``config`` (up to 30 s) and start the session."""
    win = MainWindow()
    win.resize(1280, 860)
    win.show()
    win.load_config(config)
    win.open_session()
    deadline = time.monotonic() + 30
    while win.ctl.session is None or win.ctl.busy:
        pump(app, 0.1)
        if time.monotonic() > deadline:
            raise TimeoutError("the session did not open within 30 s")
    win.ctl.start()
    return win


def take_panel_screenshots(out_dir: Path, seconds: float = 6.0, spindle_model: Path | None = None) -> dict:
    """Screenshots of the paradigm and stimulation panels on real sessions (see the module docstring).

    ``stimulation-nmes.png``: the NMES loop (sim stimulator) with audio bursts; ``paradigms-cursor.png``
    and ``paradigms-emg-robot.png``: scripted DKF velocities and EMG gestures (:class:`ScriptedFeed`),
    the gestures also driving the session's MuJoCo teleop bridge; ``paradigms-spindles.png`` (with
    ``spindle_model``): a real spindle pipeline on the simulated sleep EEG.
    """
    qInstallMessageHandler(_record_qt_message)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    commands = 0

    def shoot(win: MainWindow, name: str) -> None:
        pump(app, 0.5)
        path = out_dir / name
        win.grab().save(str(path))
        files.append(str(path))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        win = open_window(write_nmes_audio_config(folder), app)
        win.tabs.setCurrentWidget(win.stim)
        pump(app, seconds)
        shoot(win, "stimulation-nmes.png")
        commands += win.ctl.session.n_commands if win.ctl.session else 0
        win.close()

        mapping = REPO_ROOT / "configs" / "teleop_flexemg.toml"
        cfg = folder / "robot.toml"
        cfg.write_text(PANELS_TELEOP_TOML.format(mapping=mapping))
        win = open_window(cfg, app)
        win.tabs.setCurrentWidget(win.paradigms)
        win.paradigms.tabs.setCurrentIndex(1)
        while win.ctl.busy or not win.ctl.running:
            pump(app, 0.1)
        feed = ScriptedFeed(win, win.paradigms.robot.bridge)
        pump(app, seconds)
        shoot(win, "paradigms-emg-robot.png")
        win.paradigms.tabs.setCurrentIndex(0)
        shoot(win, "paradigms-cursor.png")
        feed.timer.stop()
        commands += feed.seq
        win.close()

        if spindle_model is not None:
            cfg = folder / "spindle.toml"
            cfg.write_text(PANELS_SPINDLE_TOML.format(model=Path(spindle_model).resolve(), seed=2))
            win = open_window(cfg, app)
            win.tabs.setCurrentWidget(win.paradigms)
            win.paradigms.tabs.setCurrentIndex(2)
            pump(app, max(seconds, 8.0))
            shoot(win, "paradigms-spindles.png")
            commands += win.ctl.session.n_commands if win.ctl.session else 0
            win.close()
    return {"files": files, "commands": commands, "qt_warnings": list(QT_WARNINGS)}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m ui.screenshots", description=__doc__)
    p.add_argument("out_dir")
    p.add_argument("--config", default=str(DEMO_CONFIG))
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--prefix", default="")
    p.add_argument("--tabs", help="comma-separated tab names (default: all)")
    p.add_argument("--scope64", action="store_true", help="also shoot the Signals tab on 64 channels at 1 kHz")
    p.add_argument("--panels", action="store_true", help="also shoot the paradigm and stimulation panels")
    p.add_argument("--spindle-model", help="spindle model (.onnx) for the Spindles screenshot (with --panels)")
    a = p.parse_args(argv)
    tabs = [t.strip() for t in a.tabs.split(",")] if a.tabs else None
    out = Path(a.out_dir)
    res = take_screenshots(out, Path(a.config), a.seconds, a.prefix, tabs)
    if a.scope64:
        with tempfile.TemporaryDirectory() as tmp:
            more = take_screenshots(out, write_scope64_config(Path(tmp)), a.seconds, "64ch-", ["Signals"])
        res = {
            "files": res["files"] + more["files"],
            "commands": min(res["commands"], more["commands"]),
            "state": more["state"],
            "fps": more["fps"],
            "qt_warnings": more["qt_warnings"],  # cumulative over both runs
        }
    if a.panels:
        more = take_panel_screenshots(out, max(a.seconds, 4.0), Path(a.spindle_model) if a.spindle_model else None)
        res["files"] = res["files"] + more["files"]
        res["qt_warnings"] = more["qt_warnings"]  # cumulative
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
