"""The clinician GUI's main window and the ``closedloop gui`` entry point.

Layout: a top bar (session state, Start / Stop, Record, the safety state and a large **E-STOP**
button that is always visible), tabs (Setup, Signals, Decoder, Feedback, Paradigms, Stimulation,
Log) and a live latency strip at the bottom. The Paradigms tab holds the DKF cursor task, the EMG
gesture and robot view and the spindle detections (:mod:`ui.paradigm_views`); the Stimulation tab
plots the NMES loop and lists audio bursts (:mod:`ui.stim_views`). The e-stop also fires from the
keyboard: **Esc** or **Space** (application-wide; Space types a space inside text fields instead)
and **F12**.

Two GUI-thread timers drive every widget: a frame timer (40 Hz: scope, command feed, MI bar)
and a status timer (4 Hz: latency strip, spectrum, quality, decoder table, safety state, log).
Nothing slow runs on the GUI thread (see :mod:`ui.engine`). The engine's acquisition and decoding
threads share the interpreter with the GUI, so the window lowers Python's thread switch interval
to 1 ms: a decoding thread that wakes while the GUI draws waits at most ~1 ms for the GIL.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.pipeline import Command
from ui.engine import SessionController
from ui.feedback import FeedbackBar, FlickerGrid, ssvep_frequencies
from ui.panels import DecoderPanel, LatencyPanel, LogPanel, SetupPanel, SignalPanel, StimulationPanel, color_for
from ui.paradigm_views import ParadigmPanel

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.toml"
ESTOP_KEYS = ("Esc", "Space", "F12")
FRAME_MS = 25  # 40 frames/s at most: above the 30 fps goal, and leaves CPU to acquisition and decoding
STATUS_MS = 250
GIL_SWITCH_INTERVAL_S = 0.001  # a decoding thread waiting for the GIL gets it within ~1 ms of GUI work


class MainWindow(QMainWindow):
    """The clinician GUI on one :class:`~ui.engine.SessionController`.

    Parameters
    ----------
    controller : SessionController, optional
        A controller to use (tests); a new one by default.
    """

    TABS = ("Setup", "Signals", "Decoder", "Feedback", "Paradigms", "Stimulation", "Log")

    def __init__(self, controller: SessionController | None = None) -> None:
        super().__init__()
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        self.setWindowTitle("closedloop")
        self.resize(1280, 860)
        self.ctl = controller or SessionController(self)
        self.commands_seen = 0
        self.last_command: Command | None = None
        self._fps_t = time.perf_counter()
        self._fps_frames = 0
        self.fps = 0.0
        self._status_ticks = 0

        central = QWidget()
        root = QVBoxLayout(central)
        root.setContentsMargins(6, 6, 6, 6)
        root.addLayout(self._top_bar())
        self.tabs = QTabWidget()
        self.setup = SetupPanel(self.ctl)
        self.signals = SignalPanel(self.ctl)
        self.decoder = DecoderPanel(self.ctl)
        fb = QWidget()
        fl = QHBoxLayout(fb)
        self.flicker = FlickerGrid()
        self.mi_bar = FeedbackBar()
        fl.addWidget(self.flicker, 3)
        fl.addWidget(self.mi_bar, 2)
        self.feedback = fb
        self.paradigms = ParadigmPanel()
        self.stim = StimulationPanel(self.ctl)
        self.log_panel = LogPanel()
        pages = (self.setup, self.signals, self.decoder, fb, self.paradigms, self.stim, self.log_panel)
        for name, w in zip(self.TABS, pages, strict=True):
            self.tabs.addTab(w, name)
        self.tabs.currentChanged.connect(self._tab_changed)
        root.addWidget(self.tabs, 1)
        self.latency = LatencyPanel()
        root.addWidget(self.latency)
        self.setCentralWidget(central)

        self.estop_shortcuts = []
        for key in ESTOP_KEYS:
            sc = QShortcut(QKeySequence(key), self)
            sc.setContext(Qt.ShortcutContext.ApplicationShortcut)
            sc.activated.connect(lambda k=key: self.estop(f"keyboard {k}"))
            self.estop_shortcuts.append(sc)

        self.decoder.calibration_targets = lambda: list(self.flicker.frequencies)
        self.decoder.calibration_cue.connect(self.flicker.cue)
        self.decoder.calibration_running.connect(self._calibration_running)
        self.ctl.opened.connect(self._opened)
        self.ctl.started.connect(self._update_buttons)
        self.ctl.stopped.connect(lambda _r: self._update_buttons())
        self.ctl.busy_changed.connect(lambda _b: self._update_buttons())
        self.ctl.message.connect(self.log_panel.add)
        self.ctl.failed.connect(lambda what, msg: self.log_panel.add("error", f"{what}: {msg}"))

        self.frame_timer = QTimer(self)
        self.frame_timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.frame_timer.timeout.connect(self.on_frame)
        self.frame_timer.start(FRAME_MS)
        self.status_timer = QTimer(self)
        self.status_timer.timeout.connect(self.on_status)
        self.status_timer.start(STATUS_MS)
        self._update_buttons()
        self.on_status()

    # ------------------------------------------------------------------ layout
    def _top_bar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        self.state_label = QLabel("no session")
        self.state_label.setStyleSheet("font-size:14px; font-weight:bold;")
        bar.addWidget(self.state_label)
        self.start_btn = QPushButton("Start")
        self.start_btn.clicked.connect(self.start)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.clicked.connect(lambda: self.ctl.stop("stop button"))
        self.record_btn = QPushButton("Record…")
        self.record_btn.setCheckable(True)
        self.record_btn.clicked.connect(self._record_clicked)
        for b in (self.start_btn, self.stop_btn, self.record_btn):
            b.setMinimumHeight(40)
            bar.addWidget(b)
        bar.addStretch(1)
        self.safety_label = QLabel("")
        self.safety_label.setMinimumWidth(140)
        self.safety_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        bar.addWidget(self.safety_label)
        self.estop_btn = QPushButton("E-STOP\n(Esc / Space)")
        self.estop_btn.setMinimumSize(220, 64)
        self.estop_btn.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.estop_btn.setStyleSheet(
            "QPushButton{background:#c00000; color:white; font-size:22px; font-weight:bold; border-radius:8px;}"
            "QPushButton:pressed{background:#800000;}"
        )
        self.estop_btn.clicked.connect(lambda: self.estop("e-stop button"))
        bar.addWidget(self.estop_btn)
        return bar

    # ------------------------------------------------------------------ actions
    def load_config(self, path: str | Path) -> None:
        """Read a config file into the setup panel (validated now; opened with :meth:`open_session`)."""
        self.ctl.load_config(path)
        self.setup.config_path.setText(str(path))
        self.setup.kind.setCurrentIndex(0)
        self.log_panel.add("info", f"config {path} loaded")

    def open_session(self) -> None:
        """Open a session from the setup panel's choices (worker thread)."""
        self.setup.open_session()

    def start(self) -> None:
        """Start the session (opening it first if needed)."""
        if self.ctl.session is None:
            try:
                cfg = self.setup.build_config()
            except Exception as exc:  # noqa: BLE001 - shown, not raised
                self.log_panel.add("error", f"cannot start: {exc}")
                return
            self.ctl.config = cfg
        self.ctl.start()

    def estop(self, reason: str = "e-stop button") -> None:
        """Emergency stop: every output safe now, latched until released on the Stimulation tab."""
        self.ctl.estop(reason)
        self._show_safety()
        self.stim.refresh()

    def _record_clicked(self, checked: bool) -> None:
        if checked:
            name = self.ctl.config.name if self.ctl.config else "session"
            default = str(Path.cwd() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.xdf")
            path, _ = QFileDialog.getSaveFileName(self, "Record to", default, "XDF (*.xdf)")
            if not path:
                self.record_btn.setChecked(False)
                return
            self.start_recording(path)
        else:
            self.ctl.stop_recording()

    def start_recording(self, path: str | Path) -> None:
        """Record the running session to ``path`` (XDF) without restarting it."""
        self.record_btn.setChecked(True)
        self.ctl.start_recording(path)

    def _opened(self) -> None:
        self.setup.refresh_streams()
        self.signals.set_streams()
        self.decoder.refresh()
        s = self.ctl.session
        self.paradigms.configure(s)
        self.stim.views.reset()
        if s is not None:
            cards = list(s.cards.values())
            ssvep = next((c for c in cards if c.paradigm == "ssvep"), None)
            first = next(iter(s.config.sources.values()), None)
            is_sim_ssvep = first is not None and first.kind == "sim" and first.options.get("scenario") == "ssvep"
            opts = first.options if first is not None and is_sim_ssvep else None
            if ssvep is not None or opts is not None:
                self.flicker.set_frequencies(ssvep_frequencies(ssvep, opts), None)
        self._update_buttons()

    def _calibration_running(self, running: bool) -> None:
        """A calibration block shows the flicker grid while it runs, then returns to the Decoder tab."""
        if running:
            self.tabs.setCurrentWidget(self.feedback)
        else:
            self.flicker.cue(None)
            self.tabs.setCurrentWidget(self.decoder)

    def _tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is self.feedback:
            screen = self.screen()
            if screen is not None and screen.refreshRate() > 0:
                self.flicker.set_refresh(screen.refreshRate())
            self.flicker.start()
        else:
            self.flicker.stop()

    def _update_buttons(self) -> None:
        busy = self.ctl.busy
        running = self.ctl.running
        self.start_btn.setEnabled(not busy and not running)
        self.stop_btn.setEnabled(not busy and running)
        self.record_btn.setEnabled(not busy and running)
        self.setup.open_btn.setEnabled(not busy)
        self.record_btn.setChecked(self.ctl.recording_path is not None)
        s = self.ctl.session
        self.state_label.setText(f"{s.config.name}: {s.state}" if s is not None else "no session")

    def _show_safety(self) -> None:
        st = self.ctl.safety_state()["state"]
        if self.safety_label.text() == st.upper():
            return  # restyling costs layout and paint work: only on change
        self.safety_label.setText(st.upper())
        self.safety_label.setStyleSheet(
            f"background:{color_for(st.lower()).name()}; color:white; font-size:16px; font-weight:bold; padding:6px;"
        )

    # ------------------------------------------------------------------ timers
    def on_frame(self) -> None:
        """Frame timer: drain commands, update the feedback, redraw the scope when it is visible."""
        cmds = self.ctl.take_commands()
        if cmds:
            self.commands_seen += len(cmds)
            last = cmds[-1]
            self.last_command = last
            if last.kind == "discrete":
                self.mi_bar.set_command(last.classes, last.values)
                if last.label is not None and last.label in last.classes:
                    self.flicker.select(last.classes.index(last.label))
            self.paradigms.add_commands(cmds)
        if self.tabs.currentWidget() is self.signals:
            self.signals.refresh_frame()
        elif self.tabs.currentWidget() is self.paradigms:
            self.paradigms.refresh()
        now = time.perf_counter()
        if now - self._fps_t >= 1.0:
            frames = self.signals.scope.frames
            self.fps = (frames - self._fps_frames) / (now - self._fps_t)
            self._fps_frames, self._fps_t = frames, now

    def on_status(self) -> None:
        """Status timer: latency strip, state, safety, and the visible tab's slow parts."""
        self._status_ticks += 1
        self.ctl.poll()
        st = self.ctl.status()
        rec = self.ctl.recording_path
        extra = {
            "fps": f"{self.fps:.0f} fps" if self.tabs.currentWidget() is self.signals else "scope hidden",
            "flicker": f"{self.flicker.dropped}" if self.flicker.frames_drawn else "–",
            "recording": rec.name if rec is not None else "off",
        }
        self.latency.show_status(st, extra)
        self._show_safety()
        self._update_buttons()
        current = self.tabs.currentWidget()
        if current is self.setup:
            self.setup.refresh_streams()
        elif current is self.signals and self._status_ticks % 2 == 0:  # 2 Hz: spectrum and quality
            self.signals.refresh_slow()
        elif current is self.decoder:
            self.decoder.refresh()
        elif current is self.stim:
            self.stim.refresh()
        self.log_panel.pull(self.ctl.session)

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event: QCloseEvent | None) -> None:
        """Outputs safe, session stopped, recording closed, then close."""
        self.frame_timer.stop()
        self.status_timer.stop()
        self.flicker.stop()
        self.paradigms.robot.close_renderer()
        self.ctl.shutdown()
        if event is not None:
            event.accept()


def cmd_gui(args: argparse.Namespace) -> int:
    """``closedloop gui [--config F.toml] [--demo] [--seconds N]``.

    ``--demo`` opens ``configs/demo.toml`` (the simulator) and starts it; ``--config`` opens and
    starts the given config; without either the window opens on the Setup tab. ``--seconds N``
    closes the window after N s (smoke tests). Returns 1 if the session faulted, else 0.
    """
    app = QApplication.instance() or QApplication(sys.argv[:1])
    win = MainWindow()
    config = args.config or (str(DEMO_CONFIG) if args.demo else None)
    if config:
        win.load_config(config)
        win.ctl.opened.connect(_start_once(win))
        win.open_session()
        win.tabs.setCurrentWidget(win.signals)
    win.show()
    if args.seconds:
        QTimer.singleShot(int(args.seconds * 1000), win.close)
    app.exec()
    s = win.ctl.session
    st = s.status() if s is not None else None
    if st is not None:
        lat = st["latency"]
        print(
            f"gui: session {st['name']!r} {st['state']}, {st['commands']} commands, latency p50 "
            f"{lat['p50_ms']:.2f} ms p99 {lat['p99_ms']:.2f} ms, display {win.fps:.0f} fps",
            file=sys.stdout,
        )
        for e in st["errors"]:
            print(f"error in {e['where']}: {e['error']}", file=sys.stderr)
    return 1 if (s is not None and (s.errors or s.state == "fault")) else 0


def _start_once(win: MainWindow) -> Any:
    def start() -> None:
        win.ctl.opened.disconnect(start)
        win.ctl.start()

    return start


if __name__ == "__main__":  # pragma: no cover - `closedloop gui` is the entry point
    from app.cli import main

    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PyQt6")
    sys.exit(main(["gui", *sys.argv[1:]]))
