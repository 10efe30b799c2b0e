"""The panels of the main window: session setup, signals, decoder, stimulation, latency, log.

Every panel reads the engine through :class:`ui.engine.SessionController` from GUI-thread
timers (``refresh`` methods) and starts anything slow (device search, opening a session,
checking a model, training) on a worker thread whose result comes back as a queued signal.
"""

from __future__ import annotations

import importlib.util
import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QObject, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QPixmap
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGraphicsItem,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from scipy import signal

from app.config import SIM_SCENARIOS, SessionConfig, SourceConfig, parse_config
from ui.calibration import CalibrationBlock, CalibrationPlan
from ui.engine import SessionController
from ui.quality import FLAT, LINE, OK, RAILED, channel_quality
from ui.scope import ScopeWidget

SOURCE_KINDS = ("Config file", "Simulator", "LSL stream", "BrainFlow board", "Recording (replay)")
QUALITY_COLORS = {OK: "#2ca02c", FLAT: "#7f7f7f", RAILED: "#d62728", LINE: "#ff7f0e"}


def fmt(value: Any, spec: str = ".1f", unit: str = "") -> str:
    """Format a number for a status label; '–' for None/NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:{spec}}{unit}"


def source_config(kind: str, options: dict[str, Any]) -> SourceConfig:
    """A validated :class:`SourceConfig` from the setup panel's fields (same validation as a config file)."""
    return parse_config({"sources": {"src": {"kind": kind, **options}}}).sources["src"]


class _Relay(QObject):
    """Carries results of worker threads back to the GUI thread (queued signals)."""

    lsl_found = pyqtSignal(object)
    boards_found = pyqtSignal(object)
    progress = pyqtSignal(float, str)
    done = pyqtSignal(object, str)


# ============================================================================ setup
class SetupPanel(QWidget):
    """Pick a source (config, simulator, LSL, BrainFlow, replay), open/start/stop, see the streams."""

    def __init__(self, controller: SessionController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctl = controller
        self.relay = _Relay(self)
        self.relay.lsl_found.connect(self._show_lsl)
        self.relay.boards_found.connect(self._show_boards)
        lay = QVBoxLayout(self)

        box = QGroupBox("Source")
        form = QFormLayout(box)
        self.kind = QComboBox()
        self.kind.addItems(SOURCE_KINDS)
        form.addRow("kind", self.kind)
        self.pages = QStackedWidget()
        form.addRow(self.pages)
        # config file
        page = QWidget()
        pl = QHBoxLayout(page)
        self.config_path = QLineEdit()
        self.config_path.setPlaceholderText("session config (TOML)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_config)
        pl.addWidget(self.config_path)
        pl.addWidget(browse)
        self.pages.addWidget(page)
        # simulator
        page = QWidget()
        pf = QFormLayout(page)
        self.scenario = QComboBox()
        self.scenario.addItems(SIM_SCENARIOS)
        self.seed = QSpinBox()
        self.seed.setRange(0, 1_000_000)
        self.sim_rate = QDoubleSpinBox()
        self.sim_rate.setRange(0, 20000)
        self.sim_rate.setSpecialValueText("scenario default")
        self.sim_rate.setSuffix(" Hz")
        pf.addRow("scenario", self.scenario)
        pf.addRow("seed", self.seed)
        pf.addRow("rate", self.sim_rate)
        self.pages.addWidget(page)
        # LSL
        page = QWidget()
        pv = QVBoxLayout(page)
        self.lsl_list = QListWidget()
        self.lsl_search = QPushButton("Search the network (2 s)")
        self.lsl_search.clicked.connect(self.search_lsl)
        pv.addWidget(self.lsl_list)
        pv.addWidget(self.lsl_search)
        self.pages.addWidget(page)
        # BrainFlow
        page = QWidget()
        pv = QVBoxLayout(page)
        self.boards = QComboBox()
        self.boards_btn = QPushButton("List boards")
        self.boards_btn.clicked.connect(self.list_boards)
        pv.addWidget(self.boards)
        pv.addWidget(self.boards_btn)
        self.pages.addWidget(page)
        # replay
        page = QWidget()
        pf = QFormLayout(page)
        row = QHBoxLayout()
        self.replay_path = QLineEdit()
        self.replay_path.setPlaceholderText("recording (.xdf)")
        rb = QPushButton("Browse…")
        rb.clicked.connect(self._browse_replay)
        row.addWidget(self.replay_path)
        row.addWidget(rb)
        pf.addRow("file", row)
        self.replay_speed = QDoubleSpinBox()
        self.replay_speed.setRange(0.1, 100.0)
        self.replay_speed.setValue(1.0)
        self.replay_speed.setSuffix(" ×")
        pf.addRow("speed", self.replay_speed)
        self.pages.addWidget(page)
        self.kind.currentIndexChanged.connect(self.pages.setCurrentIndex)
        self.with_pipelines = QCheckBox("run the config's pipelines (models are checked against the stream)")
        self.with_pipelines.setChecked(True)
        form.addRow(self.with_pipelines)
        lay.addWidget(box)

        row = QHBoxLayout()
        self.open_btn = QPushButton("Open session")
        self.open_btn.clicked.connect(self.open_session)
        row.addWidget(self.open_btn)
        self.status = QLabel("no session")
        self.status.setWordWrap(True)
        row.addWidget(self.status, 1)
        lay.addLayout(row)

        self.table = QTableWidget(0, 7)
        self.table.setHorizontalHeaderLabels(
            ["source", "stream", "type", "channels", "rate (Hz)", "clock offset (ms)", "labels"]
        )
        self.table.horizontalHeader().setStretchLastSection(True)  # type: ignore[union-attr]
        lay.addWidget(self.table, 1)
        self.ctl.opened.connect(self.refresh_streams)
        self.ctl.failed.connect(self._failed)

    # ------------------------------------------------------------------ actions
    def _browse_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Session config", "", "TOML (*.toml)")
        if path:
            self.config_path.setText(path)

    def _browse_replay(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Recording", "", "XDF (*.xdf)")
        if path:
            self.replay_path.setText(path)

    def search_lsl(self) -> None:
        """Resolve LSL streams on a worker thread (2 s); the list fills when it answers."""
        self.lsl_search.setEnabled(False)
        self.lsl_list.clear()
        self.lsl_list.addItem("searching…")

        def work() -> None:
            from acquisition.lsl_source import list_lsl_streams

            try:
                self.relay.lsl_found.emit(list_lsl_streams(2.0))
            except Exception as exc:  # noqa: BLE001 - shown in the list
                self.relay.lsl_found.emit([{"error": repr(exc)}])

        threading.Thread(target=work, name="gui:lsl-resolve", daemon=True).start()

    def _show_lsl(self, streams: list[dict]) -> None:
        self.lsl_search.setEnabled(True)
        self.lsl_list.clear()
        self.lsl_streams = [s for s in streams if "error" not in s]
        for s in streams:
            if "error" in s:
                self.lsl_list.addItem(f"search failed: {s['error']}")
            else:
                self.lsl_list.addItem(
                    f"{s['name']}  ({s['type']}, {s['channels']} ch @ {s['srate']:g} Hz, {s['hostname']})"
                )
        if not streams:
            self.lsl_list.addItem("(no LSL streams found)")

    def list_boards(self) -> None:
        """List BrainFlow boards on a worker thread."""
        self.boards_btn.setEnabled(False)

        def work() -> None:
            from acquisition.brainflow_source import list_boards

            try:
                self.relay.boards_found.emit(list_boards())
            except Exception as exc:  # noqa: BLE001 - shown in the combo
                self.relay.boards_found.emit([{"id": None, "name": f"listing failed: {exc!r}"}])

        threading.Thread(target=work, name="gui:boards", daemon=True).start()

    def _show_boards(self, boards: list[dict]) -> None:
        self.boards_btn.setEnabled(True)
        self.boards.clear()
        for b in boards:
            rate = fmt(b.get("sampling_rate"), "g", " Hz")
            self.boards.addItem(f"{b['id']}: {b['name']} ({rate})", b.get("id"))

    def chosen_source(self) -> SourceConfig | None:
        """The source picked in the panel (None: the config file's own sources)."""
        kind = self.kind.currentIndex()
        if kind == 0:
            return None
        if kind == 1:
            opts: dict[str, Any] = {"scenario": self.scenario.currentText(), "seed": self.seed.value()}
            if self.sim_rate.value() > 0:
                opts["srate"] = self.sim_rate.value()
            return source_config("sim", opts)
        if kind == 2:
            i = self.lsl_list.currentRow()
            streams = getattr(self, "lsl_streams", [])
            if not 0 <= i < len(streams):
                raise ValueError("pick an LSL stream from the list (Search the network first).")
            s = streams[i]
            opts = {"name": s["name"], "source_id": s["source_id"]} if s["source_id"] else {"name": s["name"]}
            return source_config("lsl", opts)
        if kind == 3:
            board = self.boards.currentData()
            if board is None:
                raise ValueError("pick a BrainFlow board (List boards first).")
            return source_config("brainflow", {"board_id": int(board)})
        path = self.replay_path.text().strip()
        if not path:
            raise ValueError("choose a recording (.xdf) to replay.")
        return source_config("replay", {"path": str(Path(path).resolve()), "speed": self.replay_speed.value()})

    def build_config(self) -> SessionConfig:
        """The session config from the panel: the config file (if any) with the chosen source."""
        text = self.config_path.text().strip()
        if text and (self.ctl.config_path is None or Path(text).resolve() != self.ctl.config_path.resolve()):
            self.ctl.load_config(text)
        base = self.ctl.base_config
        src = self.chosen_source()
        if base is None:
            if src is None:
                raise ValueError("give a session config file or pick a source.")
            return parse_config({"session": {"name": "gui"}, "sources": {"src": {"kind": src.kind, **src.options}}})
        from ui.engine import config_with_source

        return config_with_source(base, src, with_pipelines=self.with_pipelines.isChecked())

    def open_session(self) -> None:
        """Build the config and open a session on a worker thread."""
        try:
            cfg = self.build_config()
        except Exception as exc:  # noqa: BLE001 - config errors are shown, not raised
            self._failed("open session", str(exc))
            return
        self.status.setText("opening…")
        self.ctl.open(cfg)

    def _failed(self, what: str, message: str) -> None:
        self.status.setText(f"<b>{what} failed:</b> {message}")

    def refresh_streams(self) -> None:
        """Fill the stream table (channels, rate, clock offset) from the open session."""
        views = self.ctl.streams()
        self.table.setRowCount(len(views))
        st = self.ctl.status() or {}
        for r, v in enumerate(views):
            off = st.get("sources", {}).get(v.source, {}).get("streams", {}).get(v.key, {}).get("clock_offset_s")
            cells = [
                v.source,
                v.name,
                v.type,
                str(len(v.labels)),
                f"{v.srate:g}",
                fmt(off * 1e3 if off is not None else None, ".3f"),
                ", ".join(v.labels[:16]) + (" …" if len(v.labels) > 16 else ""),
            ]
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        s = self.ctl.session
        if s is not None:
            self.status.setText(f"session {s.config.name!r}: {s.state}; {len(views)} streams")


# ============================================================================ signals
class SignalPanel(QWidget):
    """Scope (peak-decimated, per-channel scale, filters), spectrum and per-channel quality."""

    SPECTRUM_CHANNELS = 8

    def __init__(self, controller: SessionController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctl = controller
        lay = QVBoxLayout(self)
        bar = QHBoxLayout()
        self.stream_combo = QComboBox()
        self.stream_combo.currentIndexChanged.connect(self._pick_stream)
        bar.addWidget(QLabel("stream"))
        bar.addWidget(self.stream_combo, 1)
        self.hp = QCheckBox("high-pass 1 Hz")
        self.lp = QCheckBox("low-pass 40 Hz")
        self.notch = QCheckBox("notch")
        self.notch_hz = QComboBox()
        self.notch_hz.addItems(["50", "60"])
        for w in (self.hp, self.lp, self.notch):
            w.toggled.connect(self._filters_changed)
        self.notch_hz.currentIndexChanged.connect(self._filters_changed)
        bar.addWidget(self.hp)
        bar.addWidget(self.lp)
        bar.addWidget(self.notch)
        bar.addWidget(self.notch_hz)
        self.scale = QDoubleSpinBox()
        self.scale.setRange(0.1, 1e6)
        self.scale.setValue(100.0)
        self.scale.setSuffix(" µV/lane")
        self.scale.valueChanged.connect(lambda v: self.scope.set_scale(v))
        bar.addWidget(self.scale)
        auto = QPushButton("Auto-scale each channel")
        auto.clicked.connect(lambda: self.scope.autoscale())
        bar.addWidget(auto)
        self.channel = QComboBox()
        bar.addWidget(self.channel)
        for text, factor in (("×½", 0.5), ("×2", 2.0)):
            b = QPushButton(text)
            b.setToolTip("zoom the selected channel (its µV per lane)")
            b.clicked.connect(lambda _=False, f=factor: self._zoom_channel(f))
            bar.addWidget(b)
        lay.addLayout(bar)
        self.scope = ScopeWidget(self)
        lay.addWidget(self.scope, 4)
        low = QHBoxLayout()
        self.spectrum = pg.PlotWidget()
        self.spectrum.setBackground("w")
        self.spectrum.setMenuEnabled(False)
        item = self.spectrum.getPlotItem()
        assert item is not None
        item.setLabel("bottom", "frequency", units="Hz")
        item.setLabel("left", "PSD (dB µV²/Hz)")
        item.setTitle("mean of ≤ 8 channels (blue), selected channel (red)", size="9pt")
        item.showGrid(x=True, y=True, alpha=0.3)
        item.disableAutoRange()  # fixed ranges: the axes are not re-rendered on every update
        for name in ("left", "bottom"):  # ... and are blitted from a pixmap cache
            item.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self._spectrum_ranged = False
        self.psd_mean = item.plot(pen=pg.mkPen("#1f77b4", width=2), name="mean")
        self.psd_chan = item.plot(pen=pg.mkPen("#d62728", width=1), name="channel")
        low.addWidget(self.spectrum, 3)
        qbox = QGroupBox("signal quality (last 1 s, raw)")
        self.quality_grid = QGridLayout(qbox)
        self.quality_labels: list[QLabel] = []
        low.addWidget(qbox, 2)
        lay.addLayout(low, 2)
        self.quality: list[str] = []
        self._streams: list[tuple[str, str]] = []

    def set_streams(self) -> None:
        """Offer the numeric streams of the open session (the first one is shown)."""
        views = [v for v in self.ctl.streams() if v.numeric]
        self._streams = [(v.source, v.key) for v in views]
        self.stream_combo.blockSignals(True)
        self.stream_combo.clear()
        for v in views:
            self.stream_combo.addItem(f"{v.name} ({len(v.labels)} ch @ {v.srate:g} Hz)")
        self.stream_combo.blockSignals(False)
        if views:
            self.stream_combo.setCurrentIndex(0)
            self._pick_stream(0)

    def _pick_stream(self, index: int) -> None:
        if not 0 <= index < len(self._streams):
            return
        stream = self.ctl.buffered_stream(*self._streams[index])
        if stream is None:
            return
        self.scope.set_stream(stream, self.scale.value())
        self._spectrum_ranged = False
        self._filters_changed()
        self.channel.clear()
        self.channel.addItems(self.scope.labels)
        for lbl in self.quality_labels:
            lbl.deleteLater()
        self.quality_labels = []
        cols = 8
        for i, name in enumerate(self.scope.labels):
            lbl = QLabel(name)
            lbl.setAlignment(Qt.AlignmentFlag.AlignCenter)
            lbl.setMinimumWidth(36)
            self.quality_grid.addWidget(lbl, i // cols, i % cols)
            self.quality_labels.append(lbl)

    def _filters_changed(self, *_: object) -> None:
        self.scope.set_filters(
            1.0 if self.hp.isChecked() else None,
            40.0 if self.lp.isChecked() else None,
            float(self.notch_hz.currentText()) if self.notch.isChecked() else None,
        )

    def _zoom_channel(self, factor: float) -> None:
        i = self.channel.currentIndex()
        if 0 <= i < len(self.scope.uv_per_lane):
            self.scope.set_scale(float(self.scope.uv_per_lane[i]) * factor, i)

    def refresh_frame(self) -> None:
        """Per display frame: new samples into the scope and redraw."""
        self.scope.refresh()

    def refresh_slow(self) -> None:
        """A few times per second: spectrum and quality verdicts."""
        w = self.scope.window
        if w is None or w.filled < max(16, int(w.srate * 0.5)):
            return
        raw = w.tail(1.0, raw=True)
        self.quality = channel_quality(raw, w.srate)
        for lbl, verdict, name in zip(self.quality_labels, self.quality, self.scope.labels, strict=False):
            if lbl.property("verdict") != verdict:  # restyling is costly: only on change
                lbl.setProperty("verdict", verdict)
                lbl.setText(f"{name}\n{verdict}")
                lbl.setStyleSheet(f"background:{QUALITY_COLORS[verdict]}; color:white; border-radius:3px;")
        # spectrum: the selected channel and the mean over at most SPECTRUM_CHANNELS evenly spaced channels
        # (a handful of FFTs: numpy's FFT holds the interpreter lock, which the decoding threads need)
        x = w.tail(2.0)
        nper = min(x.shape[0], int(w.srate))
        if nper < 16:
            return
        n_ch = x.shape[1]
        ch = min(max(0, self.channel.currentIndex()), n_ch - 1)
        subset = np.unique(np.linspace(0, n_ch - 1, min(n_ch, self.SPECTRUM_CHANNELS)).round().astype(int))
        cols = np.append(subset, ch)
        xs = x[:, cols]
        freqs, psd = signal.welch(xs - xs.mean(axis=0), fs=w.srate, nperseg=nper, axis=0)
        db = 10 * np.log10(np.maximum(psd, 1e-12))
        self.psd_mean.setData(freqs, db[:, :-1].mean(axis=1))
        self.psd_chan.setData(freqs, db[:, -1])
        if not self._spectrum_ranged:  # once per stream: the axes stay put afterwards
            self._spectrum_ranged = True
            item = self.spectrum.getPlotItem()
            assert item is not None
            item.setXRange(0, w.srate / 2, padding=0.02)
            item.setYRange(float(db.min()) - 5, float(db.max()) + 5, padding=0)


# ============================================================================ decoder
class DecoderPanel(QWidget):
    """Pipelines and their model cards; load a model (checked against the stream); train when available."""

    calibration_cue = pyqtSignal(int)  # cued target index in the flicker grid, -1 for none
    calibration_running = pyqtSignal(bool)

    def __init__(self, controller: SessionController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctl = controller
        self.relay = _Relay(self)
        self.relay.progress.connect(self._progress)
        self.relay.done.connect(self._trained)
        lay = QVBoxLayout(self)
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(
            ["pipeline", "model", "paradigm", "classes", "window/hop (s)", "decisions"]
        )
        self.table.horizontalHeader().setStretchLastSection(True)  # type: ignore[union-attr]
        self.table.itemSelectionChanged.connect(self._show_card)
        lay.addWidget(self.table, 1)
        row = QHBoxLayout()
        self.load_btn = QPushButton("Load model…")
        self.load_btn.clicked.connect(self._load)
        self.use_btn = QPushButton("Use it and go online (restarts the session)")
        self.use_btn.setEnabled(False)
        self.use_btn.clicked.connect(self._use)
        row.addWidget(self.load_btn)
        row.addWidget(self.use_btn)
        self.check = QLabel("")
        self.check.setWordWrap(True)
        row.addWidget(self.check, 1)
        lay.addLayout(row)
        self.card = QPlainTextEdit()
        self.card.setReadOnly(True)
        lay.addWidget(self.card, 2)
        tbox = QGroupBox("calibration / training")
        tl = QFormLayout(tbox)
        self.training_available = importlib.util.find_spec("decoders.training") is not None
        self.training_done = False
        self.paradigm = QComboBox()
        self.paradigm.addItems(["ssvep", "mi", "emg", "continuous", "spindle"])
        self.dataset = QLineEdit()
        self.dataset.setPlaceholderText("dataset spec (TOML)")
        self.method = QLineEdit()
        self.method.setPlaceholderText("method (e.g. fbcca, csp-lda)")
        self.out = QLineEdit()
        self.out.setPlaceholderText("output model (.onnx)")
        self.train_btn = QPushButton("Train")
        self.train_btn.clicked.connect(self.train)
        self.progress = QProgressBar()
        self.result = QPlainTextEdit()
        self.result.setReadOnly(True)
        self.result.setMaximumHeight(120)
        tl.addRow("paradigm", self.paradigm)
        tl.addRow("dataset", self.dataset)
        tl.addRow("method", self.method)
        tl.addRow("model out", self.out)
        tl.addRow(self.train_btn, self.progress)
        tl.addRow("result", self.result)
        self.confusion = QLabel("")
        tl.addRow("confusion", self.confusion)
        if not self.training_available:
            self.train_btn.setEnabled(False)
            self.result.setPlainText("training unavailable: decoders/training.py is not installed in this build.")
        lower = QHBoxLayout()
        lower.addWidget(self._calibration_box(), 1)
        lower.addWidget(tbox, 1)
        lay.addLayout(lower)
        self._checked: tuple[str, Path] | None = None
        self.ctl.model_checked.connect(self._checked_model)
        self.ctl.failed.connect(self._failed)

    # ------------------------------------------------------------------ calibration
    def _calibration_box(self) -> QGroupBox:
        box = QGroupBox("Calibration (SSVEP)")
        form = QFormLayout(box)
        self.calibration_targets: Callable[[], list[float]] = lambda: [8.0, 10.0, 12.0, 15.0]
        self.calibration: CalibrationBlock | None = None
        self.calibration_model: Path | None = None
        self.cal_trials = QSpinBox()
        self.cal_trials.setRange(2, 100)
        self.cal_trials.setValue(5)
        self.cal_trial_s = QDoubleSpinBox()
        self.cal_trial_s.setRange(0.5, 60.0)
        self.cal_trial_s.setValue(4.0)
        self.cal_trial_s.setSuffix(" s")
        self.cal_rest_s = QDoubleSpinBox()
        self.cal_rest_s.setRange(0.0, 60.0)
        self.cal_rest_s.setValue(1.0)
        self.cal_rest_s.setSuffix(" s")
        self.cal_targets = QLabel("")
        self.cal_method = QComboBox()
        self.cal_method.addItems(["fbcca", "etrca"])
        self.cal_dir = QLineEdit(str(Path.cwd() / "calibration"))
        self.cal_start_btn = QPushButton("Start calibration")
        self.cal_start_btn.clicked.connect(self.start_calibration)
        self.cal_abort_btn = QPushButton("Abort")
        self.cal_abort_btn.setEnabled(False)
        self.cal_abort_btn.clicked.connect(lambda: self.calibration.abort("abort button") if self.calibration else None)
        self.cal_progress = QProgressBar()
        self.cal_progress.setFormat("%v / %m trials")
        self.cal_status = QLabel("")
        self.cal_status.setWordWrap(True)
        self.cal_accuracy = QLabel("–")
        self.cal_confusion = QTableWidget(0, 0)
        self.cal_confusion.setMinimumHeight(120)
        self.go_online_btn = QPushButton("Go online with the calibrated model")
        self.go_online_btn.setEnabled(False)
        self.go_online_btn.clicked.connect(self.go_online)
        form.addRow("trials per target", self.cal_trials)
        form.addRow("trial", self.cal_trial_s)
        form.addRow("rest", self.cal_rest_s)
        form.addRow("targets", self.cal_targets)
        form.addRow("method", self.cal_method)
        form.addRow("folder", self.cal_dir)
        buttons = QHBoxLayout()
        buttons.addWidget(self.cal_start_btn)
        buttons.addWidget(self.cal_abort_btn)
        form.addRow(buttons)
        form.addRow(self.cal_progress)
        form.addRow(self.cal_status)
        form.addRow("CV accuracy", self.cal_accuracy)
        form.addRow("confusion", self.cal_confusion)
        form.addRow(self.go_online_btn)
        return box

    def start_calibration(self) -> bool:
        """Run a calibration block on the running session (see :mod:`ui.calibration`), then train."""
        if self.calibration is not None and self.calibration.phase in ("recording", "running", "closing"):
            return False
        freqs = list(self.calibration_targets())
        self.cal_targets.setText(", ".join(f"{f:g} Hz" for f in freqs))
        plan = CalibrationPlan(
            frequencies=freqs,
            trials_per_target=self.cal_trials.value(),
            trial_s=self.cal_trial_s.value(),
            rest_s=self.cal_rest_s.value(),
            out_dir=Path(self.cal_dir.text().strip() or "calibration"),
        )
        block = CalibrationBlock(self.ctl, plan, self)
        block.cue.connect(self.calibration_cue)
        block.progress.connect(self._calibration_progress)
        block.finished.connect(self._calibration_finished)
        block.failed.connect(self._calibration_failed)
        self.calibration = block
        self.calibration_model = None
        self.go_online_btn.setEnabled(False)
        self.cal_accuracy.setText("–")
        self.cal_confusion.setRowCount(0)
        self.cal_confusion.setColumnCount(0)
        self.cal_progress.setRange(0, block.n_planned)
        self.cal_progress.setValue(0)
        if not block.start():
            return False
        self.cal_start_btn.setEnabled(False)
        self.cal_abort_btn.setEnabled(True)
        how = "following the simulator's schedule" if block.mode == "simulator" else "own random schedule"
        self.cal_status.setText(f"recording {plan.xdf_path.name} ({how})…")
        self.calibration_running.emit(True)
        return True

    def _calibration_progress(self, done: int, planned: int) -> None:
        self.cal_progress.setRange(0, planned)
        self.cal_progress.setValue(min(done, planned))

    def _calibration_failed(self, message: str) -> None:
        self.cal_start_btn.setEnabled(True)
        self.cal_abort_btn.setEnabled(False)
        self.cal_status.setText(f"<span style='color:#d62728'>✘ {message}</span>")
        self.calibration_running.emit(False)

    def _calibration_finished(self, spec: Path) -> None:
        self.cal_abort_btn.setEnabled(False)
        self.calibration_running.emit(False)
        method = self.cal_method.currentText()
        model = spec.with_name(f"{spec.stem}-{method}.onnx")
        self.calibration_model = model
        self.cal_status.setText(f"recorded; spec {spec.name}; training {method}…")
        self.paradigm.setCurrentText("ssvep")
        self.dataset.setText(str(spec))
        self.method.setText(method)
        self.out.setText(str(model))
        self.train()

    def show_cv_result(self, summary: dict[str, Any]) -> None:
        """Cross-validated accuracy and confusion matrix (rows: true class, columns: decided) of a summary."""
        acc = summary.get("cv_accuracy")
        if isinstance(acc, int | float):
            folds = summary.get("cv_folds")
            self.cal_accuracy.setText(f"{100 * acc:.1f} %" + (f" ({folds}-fold)" if folds else ""))
        conf = summary.get("confusion")
        classes = [str(c) for c in summary.get("classes", [])]
        if conf is None:
            return
        m = np.asarray(conf)
        if m.ndim != 2:
            return
        names_r = classes if len(classes) == m.shape[0] else [str(i) for i in range(m.shape[0])]
        names_c = classes if len(classes) == m.shape[1] else [str(i) for i in range(m.shape[1])]
        self.cal_confusion.setRowCount(m.shape[0])
        self.cal_confusion.setColumnCount(m.shape[1])
        self.cal_confusion.setVerticalHeaderLabels(names_r)
        self.cal_confusion.setHorizontalHeaderLabels(names_c)
        for r in range(m.shape[0]):
            for c in range(m.shape[1]):
                item = QTableWidgetItem(f"{m[r, c]:g}")
                if r == c:
                    item.setBackground(QColor(200, 235, 200))
                self.cal_confusion.setItem(r, c, item)

    def go_online(self) -> None:
        """Use the calibrated (and card-checked) model and restart the session with it."""
        if (
            self._checked is not None
            and self.calibration_model is not None
            and self._checked[1] == self.calibration_model
        ):
            self.go_online_btn.setEnabled(False)
            self._use()

    def refresh(self) -> None:
        """Fill the pipeline table from the session's cards and counters."""
        cfg = self.ctl.config
        if cfg is None:
            return
        cards = self.ctl.cards()
        st = (self.ctl.status() or {}).get("pipelines", {})
        names = list(cfg.pipelines)
        if self.table.rowCount() != len(names):
            self.table.setRowCount(len(names))
        for r, name in enumerate(names):
            card = cards.get(name)
            model = self.ctl.model_overrides.get(name, cfg.pipelines[name].model)
            cells = [
                name,
                Path(model).name,
                card.paradigm if card else "–",
                ", ".join(card.classes) if card else "–",
                f"{card.window_s:g} / {cfg.pipelines[name].hop_s or card.hop_s:g}" if card else "–",
                str(st.get(name, {}).get("decisions", 0)),
            ]
            for c, text in enumerate(cells):
                item = self.table.item(r, c)
                if item is None:
                    self.table.setItem(r, c, QTableWidgetItem(text))
                elif item.text() != text:
                    item.setText(text)
        if self.card.toPlainText() == "" and names:
            self.table.selectRow(0)

    def selected_pipeline(self) -> str | None:
        """Name of the pipeline selected in the table (the first by default)."""
        cfg = self.ctl.config
        if cfg is None or not cfg.pipelines:
            return None
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []  # type: ignore[union-attr]
        names = list(cfg.pipelines)
        return names[rows[0].row()] if rows and rows[0].row() < len(names) else names[0]

    def _show_card(self) -> None:
        name = self.selected_pipeline()
        card = self.ctl.cards().get(name) if name else None
        if card is not None:
            self.card.setPlainText(json.dumps(card.to_dict(), indent=2))

    def _load(self) -> None:
        name = self.selected_pipeline()
        if name is None:
            self.check.setText("the config has no pipeline to load a model into.")
            return
        path, _ = QFileDialog.getOpenFileName(self, f"Model for pipeline {name}", "", "ONNX (*.onnx)")
        if path:
            self.load_model(name, path)

    def load_model(self, pipeline: str, path: str | Path) -> None:
        """Read the model's card and check it against the live stream (worker thread)."""
        self._checked = None
        self.use_btn.setEnabled(False)
        self.check.setText(f"checking {Path(path).name}…")
        self._pending = (pipeline, Path(path))
        self.ctl.check_model(pipeline, path)

    def _checked_model(self, pipeline: str, card: Any, message: str) -> None:
        self.card.setPlainText(json.dumps(card.to_dict(), indent=2))
        self.check.setText(f"<span style='color:#2ca02c'>✔ {pipeline}: {message}</span>")
        self._checked = getattr(self, "_pending", None)
        self.use_btn.setEnabled(self._checked is not None)
        cal = self.calibration_model
        if self._checked is not None and cal is not None and self._checked[1] == cal:
            self.go_online_btn.setEnabled(True)
            self.cal_status.setText(f"model {cal.name} trained and checked: ready to go online.")

    def _failed(self, what: str, message: str) -> None:
        if what == "check model":
            self.check.setText(f"<span style='color:#d62728'>✘ refused: {message}</span>")
            if (
                self.calibration_model is not None
                and getattr(self, "_pending", (None, None))[1] == self.calibration_model
            ):
                self.cal_status.setText(f"<span style='color:#d62728'>✘ calibrated model refused: {message}</span>")

    def _use(self) -> None:
        if self._checked is None:
            return
        name, path = self._checked
        self.ctl.use_model(name, path)
        if self.ctl.running or self.ctl.session is not None:
            self.ctl.open()
            self.ctl.opened.connect(self._start_once)

    def _start_once(self) -> None:
        self.ctl.opened.disconnect(self._start_once)
        self.ctl.start()

    # ------------------------------------------------------------------ training
    def train(self) -> None:
        """Run ``closedloop train`` logic on a worker thread with a progress bar."""
        if not self.training_available:
            return
        args = {
            "paradigm": self.paradigm.currentText(),
            "dataset": self.dataset.text().strip(),
            "method": self.method.text().strip(),
            "out": self.out.text().strip(),
        }
        if not all(args.values()):
            self.result.setPlainText("give a dataset spec, a method and an output file.")
            return
        self.train_btn.setEnabled(False)
        self.progress.setValue(0)

        def work() -> None:
            try:
                summary = run_training(args, lambda f, m: self.relay.progress.emit(f, m))
                self.relay.done.emit(summary, "")
            except Exception as exc:  # noqa: BLE001 - shown in the panel
                self.relay.done.emit(None, f"{exc}")

        threading.Thread(target=work, name="gui:train", daemon=True).start()

    def _progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(round(100 * max(0.0, min(1.0, fraction))))
        self.progress.setFormat(f"%p% {message}")

    def _trained(self, summary: Any, error: str) -> None:
        self.train_btn.setEnabled(True)
        self.training_done = True
        if error:
            self.result.setPlainText(f"training failed: {error}")
            if self.calibration_model is not None and Path(self.out.text().strip()) == self.calibration_model:
                self.cal_status.setText(f"<span style='color:#d62728'>✘ training failed: {error}</span>")
                self.cal_start_btn.setEnabled(True)
            return
        self.progress.setValue(100)
        self.result.setPlainText(json.dumps(summary, indent=2, default=str))
        self.show_cv_result(summary)
        if self.calibration_model is not None and Path(self.out.text().strip()) == self.calibration_model:
            self.cal_status.setText(f"trained {self.calibration_model.name}; checking its card against the stream…")
            self.cal_start_btn.setEnabled(True)
        pngs = sorted(Path(summary.get("report", ".")).glob("*confusion*.png"))
        if pngs:
            pix = QPixmap(str(pngs[0]))
            self.confusion.setPixmap(pix.scaledToHeight(min(240, pix.height())))
            self.confusion.setToolTip(str(pngs[0]))
        out = self.out.text().strip()
        name = self.selected_pipeline()
        if out and name:
            self.load_model(name, out)


def run_training(args: dict[str, str], progress: Callable[[float, str], None]) -> dict:
    """Train a model as ``closedloop train`` does (decoders.training), reporting progress.

    Parameters
    ----------
    args : dict
        ``paradigm``, ``dataset`` (spec path), ``method``, ``out`` (model path); the report goes to
        ``<out stem>-report/`` next to the model.
    progress : callable
        ``progress(fraction 0–1, message)``, called on the worker thread.

    Returns
    -------
    dict
        The method's summary (cross-validated result), plus ``model``, ``report`` and ``train_seconds``.
    """
    import time

    from decoders.dataset import load_spec
    from decoders.training import TrainContext, method_for

    spec = load_spec(args["dataset"])
    if spec.paradigm != args["paradigm"]:
        raise ValueError(
            f"dataset spec {args['dataset']!r} is for paradigm {spec.paradigm!r}, not {args['paradigm']!r}."
        )
    fn = method_for(args["paradigm"], args["method"])
    out = Path(args["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    report = out.with_name(f"{out.stem}-report")
    report.mkdir(parents=True, exist_ok=True)
    ctx = TrainContext(
        paradigm=args["paradigm"],
        method=args["method"],
        spec=spec,
        out=out,
        report_dir=report,
        seed=0,
        progress=progress,
        options=spec.table(args["paradigm"]),
    )
    t0 = time.monotonic()
    progress(0.0, f"loading {spec.path.name}")
    summary = dict(fn(ctx))
    progress(1.0, "done")
    if not out.is_file():
        raise RuntimeError(f"method {args['method']!r} returned without writing the model file {str(out)!r}.")
    summary.setdefault("model", str(out))
    summary["report"] = str(report)
    summary["train_seconds"] = round(time.monotonic() - t0, 2)
    return summary


# ============================================================================ stimulation
class StimulationPanel(QWidget):
    """Armed/disarmed state, limits in force, delivered dose; arm, disarm, clear fault."""

    def __init__(self, controller: SessionController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctl = controller
        lay = QVBoxLayout(self)
        self.state = QLabel("")
        self.state.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.state.setMinimumHeight(48)
        lay.addWidget(self.state)
        row = QHBoxLayout()
        self.arm_btn = QPushButton("Arm")
        self.disarm_btn = QPushButton("Disarm")
        self.clear_btn = QPushButton("Clear fault / release e-stop")
        self.arm_btn.clicked.connect(lambda: self._do(self.ctl.arm))
        self.disarm_btn.clicked.connect(lambda: self._do(self.ctl.disarm))
        self.clear_btn.clicked.connect(lambda: self._do(self.ctl.clear_fault))
        for b in (self.arm_btn, self.disarm_btn, self.clear_btn):
            row.addWidget(b)
        lay.addLayout(row)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        from ui.stim_views import StimulationViews  # here: ui.stim_views imports this module

        self.views = StimulationViews(controller)
        low = QHBoxLayout()
        low.addWidget(self.details, 2)
        low.addWidget(self.views, 3)
        lay.addLayout(low, 1)

    def _do(self, fn: Callable[[], None]) -> None:
        try:
            fn()
            self.note.setText("")
        except Exception as exc:  # noqa: BLE001 - refusals are shown, not raised
            self.note.setText(f"<span style='color:#d62728'>{exc}</span>")
        self.refresh()

    def refresh(self) -> None:
        """Show the safety state and, with a SafetySupervisor, its limits and dose."""
        st = self.ctl.safety_state()
        state = st["state"]
        color = {"armed": "#ff7f0e", "disarmed": "#2ca02c"}.get(state.lower(), "#d62728")
        if self.state.text() != state.upper():
            self.state.setText(state.upper())
            self.state.setStyleSheet(f"background:{color}; color:white; font-size:20px; font-weight:bold;")
        if st["supervisor"]:
            text = supervisor_text(st["details"])
        else:
            outputs = list(self.ctl.session.outputs) if self.ctl.session is not None else []
            text = (
                "no stimulation output configured: limits and delivered dose appear here when the session has a "
                "SafetySupervisor.\n"
                f"state machine: GUI stand-in (as the daemon's): {json.dumps(st['details'], default=str)}\n"
                f"gated outputs: {outputs or 'none'}"
            )
        if self.details.toPlainText() != text:
            self.details.setPlainText(text)


def supervisor_text(d: dict[str, Any]) -> str:
    """Human-readable SafetySupervisor status: state, fault, limits in force, delivered dose, outputs."""
    lines = [f"state: {d.get('state')}"]
    fault = d.get("fault")
    if fault:
        lines.append(f"FAULT latched: {json.dumps(fault, default=str)}")
    limits = d.get("limits")
    stim_outputs = d.get("outputs") or {}
    if limits is None and not stim_outputs:
        lines.append("no stimulation output configured (the supervisor has no limits and permits no stimulation).")
    if limits is not None:
        lines.append("limits in force:")
        lines += [f"  {k}: {v}" for k, v in limits.items()]
    used, limit = d.get("dose_used_s"), d.get("dose_limit_s")
    if limit is not None or used:
        lines.append(
            f"delivered dose: {fmt(used, '.1f', ' s')} of {fmt(limit, '.1f', ' s')} "
            f"(remaining {fmt(d.get('dose_remaining_s'), '.1f', ' s')})"
        )
    active = d.get("channels") or {}
    lines.append(f"active channels: {active or 'none'}")
    for name, o in stim_outputs.items():
        lines.append(f"output {name}: {json.dumps(o, default=str)}")
    for name, c in (d.get("controllers") or {}).items():
        lines.append(f"controller {name}: {json.dumps(c, default=str)}")
    if d.get("patient"):
        lines.append(f"patient profile: {d['patient']}")
    lines.append(f"allowed / refused requests: {d.get('n_allowed', 0)} / {d.get('n_refused', 0)}")
    return "\n".join(lines)


# ============================================================================ latency + log
class LatencyPanel(QWidget):
    """p50/p99 decision latency, data age, dropped samples, commands, frame rate (always visible)."""

    FIELDS = (
        ("state", "session"),
        ("commands", "commands"),
        ("p50", "latency p50"),
        ("p99", "latency p99"),
        ("age", "data age"),
        ("dropped", "dropped samples"),
        ("blocked", "held/blocked"),
        ("last", "last command"),
        ("fps", "display"),
        ("flicker", "SSVEP frames dropped"),
        ("recording", "recording"),
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        self.values: dict[str, QLabel] = {}
        for key, title in self.FIELDS:
            box = QVBoxLayout()
            t = QLabel(title)
            t.setStyleSheet("color:#555; font-size:10px;")
            v = QLabel("–")
            v.setStyleSheet("font-weight:bold;")
            box.addWidget(t)
            box.addWidget(v)
            lay.addLayout(box)
            self.values[key] = v
        lay.addStretch(1)

    def show_status(self, st: dict[str, Any] | None, extra: dict[str, str]) -> None:
        """Update from ``Session.status()`` plus GUI-side values (fps, flicker, recording)."""
        vals: dict[str, str] = {}
        if st:
            lat = st["latency"]
            ages = [
                s.get("data_age_s")
                for src in st["sources"].values()
                for s in src["streams"].values()
                if s.get("data_age_s") is not None
            ]
            lost = sum(p["lost_samples"] + p["skipped_stale"] for p in st["pipelines"].values())
            gaps = sum(s.get("gaps", 0) for src in st["sources"].values() for s in src["streams"].values())
            last = [f"{n}: {p['last_label']}" for n, p in st["pipelines"].items() if p["last_label"] is not None]
            vals = {
                "state": st["state"],
                "commands": str(st["commands"]),
                "p50": fmt(lat.get("p50_ms"), ".2f", " ms"),
                "p99": fmt(lat.get("p99_ms"), ".2f", " ms"),
                "age": fmt(min(ages) * 1e3 if ages else None, ".0f", " ms"),
                "dropped": f"{lost} (gaps {gaps})",
                "blocked": str(st["blocked_commands"]),
                "last": ", ".join(last) or "–",
            }
        vals.update(extra)
        for key, label in self.values.items():
            text = vals.get(key, "–")
            if label.text() != text:
                label.setText(text)


class LogPanel(QPlainTextEdit):
    """The session log (engine log entries and GUI actions), newest at the bottom."""

    COLORS: ClassVar[dict[str, str]] = {
        "info": "#000000",
        "warning": "#b35900",
        "error": "#d62728",
        "critical": "#d62728",
        "fault": "#d62728",
    }

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        self._seen: set[tuple[float, str]] = set()
        self.lines: list[str] = []

    def add(self, level: str, text: str) -> None:
        """Append one line."""
        line = f"[{level}] {text}"
        self.lines.append(line)
        color = self.COLORS.get(level, "#000000")
        esc = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
        self.appendHtml(f"<span style='color:{color}'>[{level}] {esc}</span>")

    def pull(self, session: Any) -> None:
        """Append the session log entries not shown yet."""
        if session is None:
            return
        for entry in list(session.log):
            key = (entry.time, entry.message)
            if key in self._seen:
                continue
            self._seen.add(key)
            self.add(entry.level, entry.message)
        if len(self._seen) > 20000:
            self._seen = {(e.time, e.message) for e in session.log}


def color_for(state: str) -> QColor:
    """Banner colour of a safety state."""
    return QColor({"armed": "#ff7f0e", "disarmed": "#2ca02c"}.get(state, "#d62728"))
