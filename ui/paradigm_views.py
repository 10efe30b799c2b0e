"""Paradigm views: the DKF cursor task, the EMG gesture and robot view, spindle detections over the sleep trace.

Each view takes real :class:`~app.pipeline.Command` objects (``set_command`` / ``add_command``),
which the main window's frame timer drains from the engine's queue, and reads engine state
(ring buffers, the teleop bridge) only from GUI-thread timers. :class:`ParadigmPanel` routes every
command to the view of its pipeline: continuous pipelines drive the cursor, discrete pipelines of
an EMG model the gesture view, event pipelines (spindle detectors) the sleep trace; a teleop output
(``[outputs.X] kind = "teleop"``) gets the robot view. A view without a matching pipeline or
output says so.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any, ClassVar

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, QRectF, Qt, QTimer
from PyQt6.QtGui import QColor, QFont, QImage, QPainter, QPen, QPixmap, QPolygonF
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QTabWidget, QVBoxLayout, QWidget

from app.pipeline import Command

POSITION_NAMES = ("x", "y", "px", "py", "pos_x", "pos_y", "position_x", "position_y")


def cursor_mode(classes: tuple[str, ...]) -> str:
    """``"position"`` when the kinematics names are positions (``x``, ``y``, ``pos…``), else ``"velocity"``."""
    names = [c.lower() for c in classes]
    if names and all(n in POSITION_NAMES or n.startswith("pos") for n in names):
        return "position"
    return "velocity"


# ============================================================================ cursor task
class CursorTask(QWidget):
    """A 2-D cursor driven by continuous commands, with a target to reach (center-out task).

    The workspace is the square [-1, 1]². In ``"velocity"`` mode the cursor integrates the
    command's first two values over the time between commands (``sample_time`` difference,
    at most 0.5 s), scaled so that the running RMS speed of the decoder moves the cursor
    ``speed`` workspace units per s (decoder units need no calibration). In ``"position"`` mode
    the values, standardised by their running mean and SD, place the cursor (±3 SD = edges).
    A target is reached when the cursor centre is within ``radius`` of it; a new target then
    appears on a circle of radius 0.7. A target not reached within ``timeout_s`` counts as a
    timeout.
    """

    def __init__(
        self,
        mode: str = "velocity",
        *,
        radius: float = 0.15,
        speed: float = 0.6,
        timeout_s: float = 15.0,
        seed: int = 0,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setMinimumSize(260, 260)
        self.mode = mode
        self.radius = radius
        self.speed = speed
        self.timeout_s = timeout_s
        self._rng = np.random.default_rng(seed)
        self.xy = np.zeros(2)
        self.trail: deque[tuple[float, float]] = deque(maxlen=80)
        self.hits = 0
        self.timeouts = 0
        self.n_commands = 0
        self.pipeline = ""
        self.names: tuple[str, ...] = ()
        self.last_values: tuple[float, ...] = ()
        self._ms = 0.0  # running mean square of the velocity magnitude
        self._mean = np.zeros(2)
        self._var = np.ones(2)
        self._last_t: float | None = None
        self._target_t: float | None = None
        self.target = self._new_target()

    def _new_target(self) -> np.ndarray:
        angle = float(self._rng.uniform(0, 2 * math.pi))
        return np.array([0.7 * math.cos(angle), 0.7 * math.sin(angle)])

    def set_command(self, cmd: Command) -> None:
        """Move the cursor by one continuous command (values: a velocity or position vector)."""
        if not cmd.values:
            return
        v = np.zeros(2)
        vals = np.asarray(cmd.values[:2], dtype=float)
        if not np.isfinite(vals).all():
            return
        v[: vals.size] = vals
        self.n_commands += 1
        self.pipeline = cmd.pipeline
        self.names = cmd.classes
        self.last_values = tuple(cmd.values)
        t = float(cmd.sample_time)
        dt = 0.05 if self._last_t is None else min(0.5, max(0.0, t - self._last_t))
        self._last_t = t
        if self._target_t is None:
            self._target_t = t
        if self.mode == "position":
            a = 0.02
            self._mean = (1 - a) * self._mean + a * v if self.n_commands > 1 else v.copy()
            self._var = (1 - a) * self._var + a * (v - self._mean) ** 2
            self.xy = (v - self._mean) / (3 * np.sqrt(np.maximum(self._var, 1e-12)))
        else:
            mag2 = float(v @ v)
            self._ms = mag2 if self.n_commands == 1 else 0.98 * self._ms + 0.02 * mag2
            rms = math.sqrt(self._ms)
            if rms > 1e-12:
                self.xy = self.xy + v / rms * self.speed * dt
        self.xy = np.clip(self.xy, -1.0, 1.0)
        self.trail.append((float(self.xy[0]), float(self.xy[1])))
        if float(np.linalg.norm(self.xy - self.target)) <= self.radius:
            self.hits += 1
            self.target = self._new_target()
            self._target_t = t
        elif t - self._target_t > self.timeout_s:
            self.timeouts += 1
            self.target = self._new_target()
            self._target_t = t
        self.update()

    def _to_px(self, x: float, y: float, side: float, x0: float, y0: float) -> QPointF:
        return QPointF(x0 + (x + 1) / 2 * side, y0 + (1 - y) / 2 * side)

    def paintEvent(self, event: object) -> None:
        """Workspace, target, cursor trail and cursor, plus the score line."""
        p = QPainter(self)
        try:
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            p.fillRect(self.rect(), QColor(20, 20, 30))
            side = min(self.width(), self.height() - 40) - 20
            x0, y0 = (self.width() - side) / 2, 10.0
            p.setPen(QPen(QColor(90, 90, 110), 1))
            p.drawRect(QRectF(x0, y0, side, side))
            p.drawLine(self._to_px(-1, 0, side, x0, y0), self._to_px(1, 0, side, x0, y0))
            p.drawLine(self._to_px(0, -1, side, x0, y0), self._to_px(0, 1, side, x0, y0))
            r = self.radius / 2 * side
            p.setPen(QPen(QColor(0, 200, 80), 3))
            p.setBrush(QColor(0, 160, 60, 90))
            p.drawEllipse(self._to_px(float(self.target[0]), float(self.target[1]), side, x0, y0), r, r)
            p.setBrush(Qt.BrushStyle.NoBrush)
            pts = list(self.trail)
            for i in range(1, len(pts)):
                alpha = int(40 + 200 * i / len(pts))
                p.setPen(QPen(QColor(255, 200, 0, alpha), 2))
                (xa, ya), (xb, yb) = pts[i - 1], pts[i]
                p.drawLine(self._to_px(xa, ya, side, x0, y0), self._to_px(xb, yb, side, x0, y0))
            p.setPen(QPen(QColor(0, 0, 0), 1))
            p.setBrush(QColor(255, 210, 0))
            p.drawEllipse(self._to_px(float(self.xy[0]), float(self.xy[1]), side, x0, y0), 9.0, 9.0)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QColor(230, 230, 230))
            vals = ", ".join(
                f"{n}={v:+.3g}" for n, v in zip(self.names or ("v0", "v1"), self.last_values, strict=False)
            )
            text = (
                f"{self.mode} mode | hits {self.hits} | timeouts {self.timeouts} | commands {self.n_commands}"
                f"\n{self.pipeline}: {vals}"
            )
            p.drawText(QRectF(6, y0 + side + 2, self.width() - 12, 36), Qt.AlignmentFlag.AlignLeft, text)
        finally:
            p.end()


# ============================================================================ EMG gestures
GESTURE_COLORS = ("#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


class GestureView(QWidget):
    """The current decoded gesture (discrete command of an EMG pipeline), its probabilities and hold time."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(260, 200)
        self.label: str | None = None
        self.classes: tuple[str, ...] = ()
        self.probs: tuple[float, ...] = ()
        self.n_commands = 0
        self.pipeline = ""
        self.held_s = 0.0
        self.changes = 0
        self._since: float | None = None

    def set_command(self, cmd: Command) -> None:
        """Show a discrete command (label and class probabilities)."""
        self.n_commands += 1
        self.pipeline = cmd.pipeline
        self.classes, self.probs = tuple(cmd.classes), tuple(cmd.values)
        if cmd.label != self.label or self._since is None:
            if self.label is not None:
                self.changes += 1
            self.label = cmd.label
            self._since = cmd.sample_time
        self.held_s = max(0.0, cmd.sample_time - self._since)
        self.update()

    def paintEvent(self, event: object) -> None:
        """The gesture name in large type, then one probability bar per class."""
        p = QPainter(self)
        try:
            w, h = self.width(), self.height()
            p.fillRect(self.rect(), QColor(250, 250, 250))
            top = 64
            font = QFont()
            font.setPointSize(26)
            font.setBold(True)
            p.setFont(font)
            k = self.classes.index(self.label) if self.label in self.classes else -1
            color = QColor(GESTURE_COLORS[k % len(GESTURE_COLORS)]) if k >= 0 else QColor(120, 120, 120)
            p.setPen(color)
            p.drawText(QRectF(8, 4, w - 16, top - 8), Qt.AlignmentFlag.AlignCenter, self.label or "–")
            font.setPointSize(9)
            font.setBold(False)
            p.setFont(font)
            p.setPen(QColor(60, 60, 60))
            p.drawText(
                QRectF(8, top - 8, w - 16, 18),
                Qt.AlignmentFlag.AlignCenter,
                f"{self.pipeline} | held {self.held_s:.1f} s | {self.n_commands} commands, {self.changes} changes",
            )
            n = len(self.probs)
            if n:
                row = (h - top - 16) / n
                for i, (c, v) in enumerate(zip(self.classes or tuple(map(str, range(n))), self.probs, strict=False)):
                    y = top + 12 + i * row
                    bar = QColor(GESTURE_COLORS[i % len(GESTURE_COLORS)])
                    p.fillRect(QRectF(110, y + 2, (w - 120), row - 4), QColor(228, 228, 228))
                    p.fillRect(QRectF(110, y + 2, (w - 120) * max(0.0, min(1.0, v)), row - 4), bar)
                    p.setPen(QColor(0, 0, 0))
                    p.drawText(QRectF(4, y, 104, row), Qt.AlignmentFlag.AlignVCenter, f"{c} {v:.2f}")
        finally:
            p.end()


def is_teleop_bridge(output: Any) -> bool:
    """True for a :class:`stimulation.teleop.bridge.TeleopBridge` (checked without importing MuJoCo)."""
    return hasattr(output, "render") and hasattr(output, "controller") and hasattr(output, "log")


class RobotRenderer:
    """Renders the teleop bridge's simulated robot on its own thread, at most ``fps`` frames/s while active.

    An offscreen MuJoCo frame costs ~70-200 ms on this machine (software GL) and releases the
    interpreter lock while it draws, so it must not run on the GUI thread. When the bridge's back
    end exposes its simulation (``backend.sim.model`` / ``.data``), only the scene update (~0.1 ms)
    runs under the bridge lock and the drawing runs outside it, so commands and control ticks
    are not held up by rendering; otherwise :meth:`TeleopBridge.render` is called (which holds the
    bridge lock for the whole frame). The GL context belongs to this thread and is freed by it.
    """

    def __init__(
        self, bridge: Any, camera: str = "overview", size: tuple[int, int] = (320, 240), fps: float = 5.0
    ) -> None:
        self.bridge, self.camera, self.size = bridge, camera, size
        self.period_s = 1.0 / fps
        self.active = threading.Event()
        self.frames = 0
        self.error = ""
        self.render_ms = float("nan")
        self._latest: np.ndarray | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renderer: Any = None
        self._thread = threading.Thread(target=self._run, name="gui:robot-render", daemon=True)
        self._thread.start()

    def take(self) -> np.ndarray | None:
        """The newest frame not taken yet (height × width × 3 uint8), else None (GUI thread)."""
        with self._lock:
            img, self._latest = self._latest, None
        return img

    def _render_once(self) -> np.ndarray | None:
        b = self.bridge
        sim = getattr(getattr(b, "backend", None), "sim", None)
        lock = getattr(b, "_lock", None)
        w, h = self.size
        if sim is not None and hasattr(sim, "model") and hasattr(sim, "data") and lock is not None:
            import mujoco  # stimulation.teleop.sim (already imported by the bridge) chose the GL backend

            if self._renderer is None:
                self._renderer = mujoco.Renderer(sim.model, h, w)
            with lock:  # the scene is copied from the simulation state under the bridge lock (~0.1 ms)
                self._renderer.update_scene(sim.data, camera=self.camera)
            return np.asarray(self._renderer.render()).copy()  # drawing: outside the lock
        return b.render(self.camera, w, h)  # type: ignore[no-any-return]

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.active.wait(0.2):
                    continue
                t = time.perf_counter()
                try:
                    img = self._render_once()
                except Exception as exc:  # noqa: BLE001 - no GL on this machine: shown, not raised
                    self.error = f"render failed: {exc}"
                    return
                if img is None:
                    self.error = "no camera: a real robot (no simulated view)"
                    return
                self.render_ms = (time.perf_counter() - t) * 1e3
                with self._lock:
                    self._latest = img
                self.frames += 1
                self._stop.wait(max(0.0, self.period_s - (time.perf_counter() - t)))
        finally:
            if self._renderer is not None:
                self._renderer.close()  # on the thread that owns its GL context
                self._renderer = None

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (the current frame finishes first)."""
        self._stop.set()
        self.active.set()
        self._thread.join(timeout)


class RobotView(QWidget):
    """The teleop bridge's offscreen MuJoCo camera, its mode/speed and the last arbitration log lines.

    Frames come from a :class:`RobotRenderer` thread (5 frames/s, 320 × 240, only while the view
    is visible); a GUI timer at the same rate shows the newest one and the bridge's state.
    """

    LOG_LINES = 8

    def __init__(self, fps: float = 5.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge: Any = None
        self.renderer: RobotRenderer | None = None
        self.fps = fps
        self.frames = 0
        self.camera = "overview"
        lay = QVBoxLayout(self)
        self.image = QLabel("no teleop output in this session")
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setMinimumSize(320, 240)
        self.image.setStyleSheet("background:#202020; color:#dddddd;")
        lay.addWidget(self.image, 3)
        self.state = QLabel("")
        self.state.setStyleSheet("font-weight:bold;")
        lay.addWidget(self.state)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumHeight(150)
        lay.addWidget(self.log, 1)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(int(1000 / fps))

    @property
    def render_error(self) -> str:
        """Why the robot cannot be shown ('' while frames come)."""
        return self.renderer.error if self.renderer is not None else ""

    def set_bridge(self, bridge: Any) -> None:
        """Show ``bridge`` (None: the note that the session has no teleop output)."""
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
        self.bridge = bridge
        if bridge is None:
            self.image.clear()
            self.image.setText("no teleop output in this session")
            self.state.setText("")
            self.log.setPlainText("")
        else:
            self.renderer = RobotRenderer(bridge, self.camera, fps=self.fps)

    def close_renderer(self) -> None:
        """Stop the render thread (window closing)."""
        if self.renderer is not None:
            self.renderer.close()

    def refresh(self) -> None:
        """Show the newest frame and update mode/speed and the log (timer; rendering paused while hidden)."""
        b, r = self.bridge, self.renderer
        if b is None or r is None:
            return
        visible = self.isVisible()
        if visible != r.active.is_set():
            if visible:
                r.active.set()
            else:
                r.active.clear()
        if not visible:
            return
        img = r.take()
        if img is not None:
            arr = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
            h, w = arr.shape[:2]
            qimg = QImage(arr.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888).copy()
            self.image.setPixmap(QPixmap.fromImage(qimg))
            self.frames += 1
        elif r.error and self.image.text() != r.error:
            self.image.setText(r.error)
        ctl = b.controller
        active = getattr(ctl, "active_action", None)
        text = (
            f"{b.name}: mode {ctl.mode} | speed {ctl.speed} | action {active or '–'} | commands {len(b.records)}"
            f" | frame {fmt_ms(r.render_ms)}"
        )
        if self.state.text() != text:
            self.state.setText(text)
        lines = [format_arbitration(e) for e in list(b.log)[-self.LOG_LINES :]]
        joined = "\n".join(lines)
        if self.log.toPlainText() != joined:
            self.log.setPlainText(joined)


def fmt_ms(v: float) -> str:
    """'12 ms' or '–' for NaN."""
    return f"{v:.0f} ms" if math.isfinite(v) else "–"


def _detector_threshold(card: Any) -> float | None:
    """The detection threshold of a spindle model's card (``provenance.detector.threshold``), if any."""
    det = (getattr(card, "provenance", None) or {}).get("detector") or {}
    thr = det.get("threshold") if isinstance(det, dict) else None
    return float(thr) if isinstance(thr, int | float) else None


def format_arbitration(e: Any) -> str:
    """One arbitration log entry as a line: decision, action, label, reason, mode/speed."""
    label = f" {e.label}" if getattr(e, "label", None) else ""
    return f"{e.time:.2f} {e.decision:<8} {e.action:<10}{label}  ({e.reason}) [{e.mode}/{e.speed}]"


# ============================================================================ spindles
class SpindleView(QWidget):
    """The sleep EEG trace of a spindle pipeline's channel with its detections shaded over it.

    Event commands carry ``[spindle, trigger, probability, active]`` (``decoders.spindle``); the
    span of every command whose ``active`` value is set is shaded, every onset (label
    ``"spindle"``) is marked with a red line and every stimulation trigger with an orange
    triangle. The bottom strip shows the detector's probability. The last ``view_s`` seconds
    are shown, read from the stream's ring buffer by a GUI timer.
    """

    def __init__(self, view_s: float = 10.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(400, 220)
        self.view_s = view_s
        self.stream: Any = None
        self.channel = 0
        self.channel_name = ""
        self.pipeline = ""
        self.events: deque[tuple[float, float, float, float, float]] = deque(maxlen=20000)
        self.n_onsets = 0
        self.n_triggers = 0
        self.n_commands = 0
        self.onset_times: deque[float] = deque(maxlen=200)
        self._x = np.zeros(0, dtype=np.float32)
        self._t = np.zeros(0)
        self._prev_t: float | None = None
        self.threshold: float | None = None

    def set_stream(self, stream: Any, channel: int, name: str) -> None:
        """The :class:`~acquisition.source.BufferedStream` and channel index to draw (None: detections only)."""
        self.stream, self.channel, self.channel_name = stream, channel, name

    def add_command(self, cmd: Command) -> None:
        """One event command of the spindle pipeline."""
        names = [c.lower() for c in cmd.classes]

        def value(name: str, default: int) -> float:
            i = names.index(name) if name in names else default
            return float(cmd.values[i]) if 0 <= i < len(cmd.values) else 0.0

        onset = 1.0 if cmd.label is not None else 0.0
        trig, prob, active = value("trigger", 1), value("probability", 2), value("active", 3)
        start = self._prev_t if self._prev_t is not None and cmd.sample_time - self._prev_t < 0.5 else cmd.sample_time
        self._prev_t = cmd.sample_time
        self.events.append((start, cmd.sample_time, prob, max(active, onset), trig))
        self.n_commands += 1
        self.pipeline = cmd.pipeline
        if onset:
            self.n_onsets += 1
            self.onset_times.append(cmd.sample_time)
        if trig >= 0.5:
            self.n_triggers += 1

    def refresh(self) -> None:
        """Read the last ``view_s`` seconds of the channel and repaint (GUI timer)."""
        st = self.stream
        if st is not None and getattr(st, "buffer", None) is not None and hasattr(st.buffer, "latest"):
            n = min(int(self.view_s * max(st.info.srate, 1.0)), st.buffer.capacity)
            r = st.buffer.latest(n)
            if len(r):
                self._x = r.data[:, self.channel]
                self._t = r.timestamps
        self.update()

    def shaded_spans(self) -> list[tuple[float, float]]:
        """Merged (start, end) times (s, ``local_clock``) of the detected spindles in view."""
        t_end = self._t_end()
        spans: list[list[float]] = []
        for a, b, _p, act, _tr in self.events:
            if b < t_end - self.view_s or act < 0.5:
                continue
            if spans and a - spans[-1][1] < 1e-6 + 0.05:
                spans[-1][1] = b
            else:
                spans.append([a, b])
        return [(a, b) for a, b in spans]

    def _t_end(self) -> float:
        ends = [float(self._t[-1])] if self._t.size else []
        if self.events:
            ends.append(self.events[-1][1])
        return max(ends) if ends else 0.0

    def paintEvent(self, event: object) -> None:
        """Trace, shaded detections, onset/trigger marks, probability strip and counters."""
        p = QPainter(self)
        try:
            w, h = float(self.width()), float(self.height())
            p.fillRect(self.rect(), QColor(255, 255, 255))
            t_end = self._t_end()
            t0 = t_end - self.view_s
            left, right = 66.0, w - 8
            trace_h = (h - 40) * 0.72
            prob_top = 8 + trace_h + 6
            prob_h = h - 40 - trace_h - 6

            def px(t: float) -> float:
                return left + (t - t0) / self.view_s * (right - left)

            for a, b in self.shaded_spans():
                p.fillRect(
                    QRectF(px(max(a, t0)), 8, max(2.0, px(b) - px(max(a, t0))), trace_h), QColor(255, 170, 60, 110)
                )
            if self._x.size > 1:
                x = self._x - float(np.median(self._x))
                scale = float(np.percentile(np.abs(x), 99)) or 1.0
                y = 8 + trace_h / 2 - np.clip(x / scale, -1.0, 1.0) * trace_h / 2 * 0.95
                xs = left + (self._t - t0) / self.view_s * (right - left)
                keep = xs >= left
                p.setPen(QPen(QColor(31, 80, 160), 1))
                p.drawPath(pg.arrayToQPath(xs[keep].astype(float), y[keep].astype(float)))
                p.setPen(QColor(80, 80, 80))
                p.drawText(QRectF(2, 8, left - 4, 16), Qt.AlignmentFlag.AlignLeft, f"±{scale:.0f}")
                p.drawText(QRectF(2, 24, left - 4, 16), Qt.AlignmentFlag.AlignLeft, "µV")
            p.setPen(QPen(QColor(214, 39, 40), 2))
            for t in self.onset_times:
                if t >= t0:
                    p.drawLine(QPointF(px(t), 8), QPointF(px(t), 8 + trace_h))
            p.setPen(QColor(170, 170, 170))
            p.drawRect(QRectF(left, prob_top, right - left, prob_h))
            ev = [e for e in self.events if e[1] >= t0]
            if len(ev) > 1:
                ts = np.array([e[1] for e in ev])
                pr = np.clip(np.array([e[2] for e in ev]), 0, 1)
                p.setPen(QPen(QColor(44, 160, 44), 1))
                p.drawPath(
                    pg.arrayToQPath(left + (ts - t0) / self.view_s * (right - left), prob_top + (1 - pr) * prob_h)
                )
            if self.threshold is not None and 0.0 <= self.threshold <= 1.0:
                yt = prob_top + (1 - self.threshold) * prob_h
                p.setPen(QPen(QColor(120, 120, 120), 1, Qt.PenStyle.DashLine))
                p.drawLine(QPointF(left, yt), QPointF(right, yt))
            p.setBrush(QColor(255, 127, 14))
            p.setPen(Qt.PenStyle.NoPen)
            for e in ev:
                if e[4] >= 0.5:
                    xm = px(e[1])
                    p.drawPolygon(
                        QPolygonF([QPointF(xm - 5, prob_top), QPointF(xm + 5, prob_top), QPointF(xm, prob_top + 8)])
                    )
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QColor(60, 60, 60))
            p.drawText(QRectF(2, prob_top, left - 4, 16), Qt.AlignmentFlag.AlignLeft, "p(spindle)")
            if self.threshold is not None:
                p.drawText(
                    QRectF(2, prob_top + 16, left - 4, 16), Qt.AlignmentFlag.AlignLeft, f"thr {self.threshold:.2f}"
                )
            text = (
                f"{self.pipeline or 'spindle'} on {self.channel_name or '–'} | last {self.view_s:g} s | "
                f"spindles {self.n_onsets} | triggers {self.n_triggers} | decisions {self.n_commands}"
            )
            p.drawText(QRectF(left, h - 28, right - left, 24), Qt.AlignmentFlag.AlignLeft, text)
        finally:
            p.end()


# ============================================================================ the tab
class ParadigmPanel(QWidget):
    """Tabs for the cursor task, EMG gestures + robot, and spindles; commands routed by pipeline.

    :meth:`configure` reads the open session (its pipelines' cards and outputs); :meth:`add_commands`
    takes the commands the frame timer drained; :meth:`refresh` redraws the visible view. A view
    whose pipeline (or teleop output) the session lacks is hidden behind a one-line note; it
    appears when a matching command arrives (e.g. from a pipeline added later).
    """

    NOTES: ClassVar[dict[str, str]] = {
        "cursor": "no continuous pipeline in this session (a continuous decoder, e.g. a DKF, drives the cursor)",
        "gesture": "no EMG gesture pipeline in this session",
        "robot": 'no teleop output in this session ([outputs.NAME] kind = "teleop" shows the robot here)',
        "spindle": "no spindle pipeline in this session (an event decoder, e.g. decoders/spindle)",
    }

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        self.tabs = QTabWidget()
        lay.addWidget(self.tabs)
        self.cursor_task = CursorTask()
        self.gesture = GestureView()
        self.robot = RobotView()
        self.spindle = SpindleView()
        self.views: dict[str, QWidget] = {
            "cursor": self.cursor_task,
            "gesture": self.gesture,
            "robot": self.robot,
            "spindle": self.spindle,
        }
        self.notes: dict[str, QLabel] = {}
        for key, text in self.NOTES.items():
            note = QLabel(text)
            note.setStyleSheet("color:#666; font-size:13px;")
            self.notes[key] = note
        pages = []
        for keys in (("cursor",), ("gesture", "robot"), ("spindle",)):
            page = QWidget()
            pl = QVBoxLayout(page)
            row = QHBoxLayout()
            for k in keys:
                pl.addWidget(self.notes[k])
                row.addWidget(self.views[k], 3 if k == "robot" else 2)
            pl.addLayout(row, 1)
            pl.addStretch(0)
            pages.append(page)
        self.tabs.addTab(pages[0], "Cursor task")
        self.tabs.addTab(pages[1], "EMG gestures / robot")
        self.tabs.addTab(pages[2], "Spindles")
        self.routes: dict[str, str] = {}
        self._ticks = 0
        self.configure(None)

    def _show(self, key: str, present: bool) -> None:
        self.views[key].setVisible(present)
        self.notes[key].setVisible(not present)

    def configure(self, session: Any) -> None:
        """Route the session's pipelines to the views and pick up its teleop output and spindle stream."""
        self.routes = {}
        cards = dict(getattr(session, "cards", {}) or {}) if session is not None else {}
        pipes = dict(getattr(session, "pipelines", {}) or {}) if session is not None else {}
        for name in set(cards) | set(pipes):
            card = cards.get(name)
            kind = getattr(pipes.get(name), "kind", None) or getattr(card, "output", "discrete")
            paradigm = getattr(card, "paradigm", "")
            if kind == "continuous":
                self.routes[name] = "cursor"
                self.cursor_task.mode = cursor_mode(tuple(getattr(card, "classes", ())))
            elif kind == "event" or paradigm == "spindle":
                self.routes[name] = "spindle"
                self._spindle_stream(session, name, card)
                self.spindle.threshold = _detector_threshold(card)
            elif paradigm == "emg":
                self.routes[name] = "gesture"
        outputs = getattr(session, "outputs", {}) if session is not None else {}
        bridge = next((o for o in outputs.values() if is_teleop_bridge(o)), None)
        self.robot.set_bridge(bridge)
        used = set(self.routes.values())
        for key in ("cursor", "gesture", "spindle"):
            self._show(key, key in used)
        self._show("robot", bridge is not None)

    def _spindle_stream(self, session: Any, name: str, card: Any) -> None:
        try:
            pcfg = session.config.pipelines[name]
            src = session.sources[pcfg.source]
            stream = src.streams[pcfg.stream] if pcfg.stream else src.primary()
            labels = list(stream.info.labels)
            wanted = (pcfg.channels or tuple(getattr(card, "channel_labels", ())) or (labels[0],))[0]
            ch = labels.index(wanted) if wanted in labels else 0
            self.spindle.set_stream(stream, ch, labels[ch] if labels else "")
        except (AttributeError, KeyError, IndexError):
            self.spindle.set_stream(None, 0, "")

    def add_commands(self, cmds: list[Command]) -> None:
        """Give every command to the view of its pipeline (unknown pipelines: by command kind)."""
        for c in cmds:
            route = self.routes.get(c.pipeline)
            if route is None:
                route = {"continuous": "cursor", "event": "spindle"}.get(c.kind)
            if route == "cursor":
                self.cursor_task.set_command(c)
            elif route == "gesture":
                self.gesture.set_command(c)
            elif route == "spindle":
                self.spindle.add_command(c)
            if route is not None and not self.notes[route].isHidden():
                self._show(route, True)

    def refresh(self) -> None:
        """Redraw the visible view (frame timer, while this tab is shown; the sleep trace at 10 Hz)."""
        self._ticks += 1
        if self.tabs.currentIndex() == 2 and self._ticks % 4 == 0:
            self.spindle.refresh()
