"""Screenshots of every main view of the GUI on a running session (docs, the Xvfb test).

``python -m ui.screenshots OUT_DIR [--config F.toml] [--seconds S] [--prefix P] [--tabs A,B]``
opens the main window on the config (``configs/demo.toml`` by default), starts the session,
lets it run ``S`` seconds, then shows each tab in turn for a moment and saves
``OUT_DIR/P<tab>.png`` (a grab of the whole window); ``--scope64`` adds ``64ch-signals.png``
with 64 channels at 1 kHz on the scope. It prints one JSON line with the saved
files, the session's command count and every Qt warning seen (a message handler records
them). Run it under a real display (Xvfb) or offscreen.
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
    win.tabs.setCurrentWidget(win.signals)
    pump(app, seconds)
    files = []
    for i, name in enumerate(win.TABS):
        if tabs and name not in tabs:
            continue
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


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m ui.screenshots", description=__doc__)
    p.add_argument("out_dir")
    p.add_argument("--config", default=str(DEMO_CONFIG))
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--prefix", default="")
    p.add_argument("--tabs", help="comma-separated tab names (default: all)")
    p.add_argument("--scope64", action="store_true", help="also shoot the Signals tab on 64 channels at 1 kHz")
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
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
