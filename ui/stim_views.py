"""Stimulation views: NMES target vs measured knee angle and pulse width over time, delivered dose, audio bursts.

:class:`StimulationViews` samples ``Session.safety_status()`` from a GUI timer (10 Hz): for every
NMES controller (``["controllers"][name]``: ``theta_ref_deg``, ``theta_deg``, ``pulse_width_us``)
and the pulse width its stimulator output reports delivering (``["outputs"][output]
["delivered_pulse_width_us"]``) it keeps the last ``history_s`` seconds and plots them against
"seconds ago" (fixed axes: nothing is re-laid out per update). It also shows the delivered dose
(``dose_used_s`` of ``dose_limit_s``) and, for every audio output, the bursts played/refused, the
last request-to-start latency and the times of the last bursts (read from the output's
``AudioStimulator.bursts``). Without controllers or audio outputs it says so.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import QGraphicsItem, QLabel, QVBoxLayout, QWidget

from ui.panels import fmt

SAMPLE_MS = 100


class StimulationViews(QWidget):
    """NMES tracking plots, dose and audio-burst summary for the Stimulation tab.

    Parameters
    ----------
    controller : SessionController
        Where the session comes from (``controller.session``).
    history_s : float
        Seconds of NMES history kept and plotted.
    """

    def __init__(self, controller: Any, history_s: float = 20.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctl = controller
        self.history_s = history_s
        n = int(history_s * 1000 / SAMPLE_MS) + 2
        self.t: deque[float] = deque(maxlen=n)
        self.ref: deque[float] = deque(maxlen=n)
        self.theta: deque[float] = deque(maxlen=n)
        self.pw: deque[float] = deque(maxlen=n)
        self.pw_delivered: deque[float] = deque(maxlen=n)
        self.controller_name: str | None = None
        self.n_samples = 0
        lay = QVBoxLayout(self)
        self.nmes_note = QLabel("no NMES controller in this session")
        self.nmes_note.setStyleSheet("color:#666;")
        lay.addWidget(self.nmes_note)
        self.angle_plot = self._plot("knee angle (deg)", (0.0, 90.0))
        self.ref_curve = self.angle_plot.getPlotItem().plot(  # type: ignore[union-attr]
            pen=pg.mkPen("#2ca02c", width=2, style=pg.QtCore.Qt.PenStyle.DashLine), name="target"
        )
        self.theta_curve = self.angle_plot.getPlotItem().plot(pen=pg.mkPen("#1f77b4", width=2), name="measured")  # type: ignore[union-attr]
        self.pw_plot = self._plot("pulse width (µs)", (0.0, 400.0))
        self.pw_curve = self.pw_plot.getPlotItem().plot(pen=pg.mkPen("#d62728", width=2), name="requested")  # type: ignore[union-attr]
        self.pwd_curve = self.pw_plot.getPlotItem().plot(pen=pg.mkPen("#ff7f0e", width=1), name="delivered")  # type: ignore[union-attr]
        lay.addWidget(self.angle_plot, 1)
        lay.addWidget(self.pw_plot, 1)
        self.legend = QLabel(
            "<span style='color:#2ca02c'>– – target</span> &nbsp; <span style='color:#1f77b4'>—— measured</span>"
            " &nbsp; <span style='color:#d62728'>—— pulse width requested</span> &nbsp; "
            "<span style='color:#ff7f0e'>—— delivered (device)</span>"
        )
        lay.addWidget(self.legend)
        self.dose = QLabel("delivered dose: –")
        self.dose.setStyleSheet("font-weight:bold;")
        lay.addWidget(self.dose)
        self.audio = QLabel("no audio output in this session")
        self.audio.setWordWrap(True)
        lay.addWidget(self.audio)
        lay.addStretch(0)  # takes the space only while the plots are hidden
        self._pw_max = 400.0
        self._show_plots(False)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.sample)
        self.timer.start(SAMPLE_MS)

    def _plot(self, label: str, yrange: tuple[float, float]) -> pg.PlotWidget:
        w = pg.PlotWidget()
        w.setBackground("w")
        w.setMenuEnabled(False)
        w.setMinimumHeight(110)
        item = w.getPlotItem()
        assert item is not None
        item.setLabel("left", label)
        item.setLabel("bottom", "time (s, 0 = now)")
        item.showGrid(x=True, y=True, alpha=0.3)
        item.setMouseEnabled(x=False, y=False)
        item.disableAutoRange()
        item.setXRange(-self.history_s, 0, padding=0.01)
        item.setYRange(*yrange, padding=0.02)
        for name in ("left", "bottom"):
            item.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        return w

    def reset(self) -> None:
        """Forget the history (a new session)."""
        for d in (self.t, self.ref, self.theta, self.pw, self.pw_delivered):
            d.clear()
        self.controller_name = None

    def sample(self) -> None:
        """Read ``safety_status()`` once (timer): append the NMES values, update dose and audio, redraw."""
        s = self.ctl.session
        st = s.safety_status() if s is not None and hasattr(s, "safety_status") else None
        if not isinstance(st, dict):
            return
        controllers = st.get("controllers") or {}
        self._show_plots(bool(controllers))
        if controllers:
            name = self.controller_name if self.controller_name in controllers else next(iter(controllers))
            self.controller_name = name
            c = controllers[name]
            if s is not None and s.state == "running":
                out_name = getattr(getattr(s, "config", None), "controllers", {}).get(name)
                out_name = getattr(out_name, "output", None)
                delivered = (st.get("outputs") or {}).get(out_name, {}).get("delivered_pulse_width_us", math.nan)
                self.t.append(time.monotonic())
                self.ref.append(_num(c.get("theta_ref_deg")))
                self.theta.append(_num(c.get("theta_deg")))
                self.pw.append(_num(c.get("pulse_width_us")))
                self.pw_delivered.append(_num(delivered))
                self.n_samples += 1
            limit = (st.get("limits") or {}).get("max_pulse_width_us")
            if limit and limit != self._pw_max:
                self._pw_max = float(limit)
                self.pw_plot.getPlotItem().setYRange(0, self._pw_max, padding=0.02)  # type: ignore[union-attr]
            self.nmes_note.setText(
                f"controller {name}: target {fmt(c.get('theta_ref_deg'), '.1f', '°')}, measured "
                f"{fmt(c.get('theta_deg'), '.1f', '°')}, pulse width {fmt(c.get('pulse_width_us'), '.0f', ' µs')}, "
                f"steps {c.get('steps', 0)}, deadlines missed {c.get('deadlines_missed', 0)}"
            )
            if self.isVisible():
                self._draw()
        used, limit_s = st.get("dose_used_s"), st.get("dose_limit_s")
        text = (
            f"delivered dose: {fmt(used, '.1f', ' s')} of {fmt(limit_s, '.0f', ' s')} "
            f"(remaining {fmt(st.get('dose_remaining_s'), '.0f', ' s')})"
            if st.get("supervisor") and limit_s is not None
            else "delivered dose: none (no stimulation limits in force)"
        )
        if self.dose.text() != text:
            self.dose.setText(text)
        audio = self.audio_text(s, st)
        if self.audio.text() != audio:
            self.audio.setText(audio)

    def _show_plots(self, on: bool) -> None:
        if self.angle_plot.isHidden() == on:  # change visibility only when it changes (layout work)
            for w in (self.angle_plot, self.pw_plot, self.legend):
                w.setVisible(on)
            if not on:
                self.nmes_note.setText("no NMES controller in this session")

    def _draw(self) -> None:
        if len(self.t) < 2:
            return
        now = time.monotonic()
        x = np.fromiter(self.t, float) - now
        self.ref_curve.setData(x, np.fromiter(self.ref, float), connect="finite")
        self.theta_curve.setData(x, np.fromiter(self.theta, float), connect="finite")
        self.pw_curve.setData(x, np.fromiter(self.pw, float), connect="finite")
        self.pwd_curve.setData(x, np.fromiter(self.pw_delivered, float), connect="finite")
        hi = np.nanmax(np.concatenate([np.fromiter(self.ref, float), np.fromiter(self.theta, float), [0.0]]))
        item = self.angle_plot.getPlotItem()
        assert item is not None
        if math.isfinite(hi) and hi > item.viewRange()[1][1]:
            item.setYRange(0, 10 * math.ceil(hi / 10 + 0.5), padding=0.02)

    @staticmethod
    def audio_text(session: Any, st: dict[str, Any]) -> str:
        """Bursts played/refused, triggers, last latency and the times of the last bursts of every audio output."""
        lines = []
        for name, o in (st.get("outputs") or {}).items():
            if o.get("kind") != "audio":
                continue
            times = ""
            out = getattr(session, "outputs", {}).get(name)
            bursts = list(getattr(getattr(out, "stimulator", None), "bursts", []))[-5:]
            t0 = getattr(session, "started_at", math.nan)
            if bursts:
                times = ", last at " + ", ".join(f"{b.request_time - t0:.1f}" for b in bursts) + " s"
            lines.append(
                f"audio {name} ({o.get('sink')}): {o.get('bursts', 0)} bursts, {o.get('refused', 0)} refused, "
                f"{o.get('triggers', 0)} triggers, last latency {fmt(o.get('last_latency_ms'), '.1f', ' ms')}{times}"
            )
        return "\n".join(lines) if lines else "no audio output in this session"


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
