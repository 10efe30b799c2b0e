"""Paradigm feedback: the SSVEP flicker grid and the motor-imagery feedback bar.

SSVEP targets are modulated **per display frame**: the luminance of a target at frame ``n`` is
``0.5 · (1 + sin(2π f n / R + φ))`` (sine) or its sign (square), with ``R`` the display's refresh
rate (Hz). A frame timer runs at the refresh period; the frame index is derived from elapsed
time on the refresh grid, so a late frame does not shift the stimulus phase — it is counted as
dropped (``frames skipped = index jump - 1``) and shown next to the grid. Frequencies that are
not below ``R / 2`` cannot be rendered and are refused with a message.
"""

from __future__ import annotations

import math
import time

import numpy as np
from PyQt6.QtCore import QRectF, Qt, QTimer
from PyQt6.QtGui import QColor, QFont, QPainter, QPen
from PyQt6.QtWidgets import QWidget

WAVEFORMS = ("sine", "square")


def flicker_luminance(
    freq_hz: float, frame: int, refresh_hz: float, waveform: str = "sine", phase: float = 0.0
) -> float:
    """Luminance (0–1) of a target flickering at ``freq_hz`` on display frame ``frame``.

    Parameters
    ----------
    freq_hz : float
        Stimulation frequency in Hz (below ``refresh_hz / 2``).
    frame : int
        Display frame index (0, 1, ...).
    refresh_hz : float
        Display refresh rate in Hz.
    waveform : {"sine", "square"}
    phase : float
        Phase offset in radians.
    """
    cycles = freq_hz * frame / refresh_hz + phase / (2.0 * math.pi)
    if waveform == "square":  # on for the first half of each cycle (exact on the frame grid, no rounding of sin)
        return 1.0 if (round(cycles * 1e9) % 10**9) < 5 * 10**8 else 0.0
    return 0.5 * (1.0 + math.sin(2.0 * math.pi * cycles))


def ssvep_frequencies(card: object | None, source_options: dict | None = None) -> list[float]:
    """SSVEP target frequencies (Hz): from the sim source's ``frequencies``, the card, or 8/10/12/15 Hz."""
    if source_options and source_options.get("frequencies"):
        return [float(f) for f in source_options["frequencies"]]
    if card is not None:
        params = getattr(card, "provenance", {}).get("parameters", {})
        if isinstance(params, dict) and params.get("frequencies_hz"):
            return [float(f) for f in params["frequencies_hz"]]
        freqs = []
        for c in getattr(card, "classes", ()):
            try:
                freqs.append(float(str(c).lower().removesuffix("hz")))
            except ValueError:
                break
        else:
            if freqs:
                return freqs
    return [8.0, 10.0, 12.0, 15.0]


class FlickerGrid(QWidget):
    """A grid of SSVEP targets flickering at their frequencies, frame by frame.

    Parameters
    ----------
    frequencies : list of float
        One target per frequency (Hz).
    refresh_hz : float, optional
        Display refresh rate; the screen's reported rate by default (60 Hz if unknown).
    waveform : {"sine", "square"}
    """

    def __init__(
        self,
        frequencies: list[float] | None = None,
        refresh_hz: float | None = None,
        waveform: str = "sine",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setMinimumSize(240, 180)
        self.waveform = waveform
        self.refresh_hz = refresh_hz or 60.0
        self.frequencies: list[float] = []
        self.labels: list[str] = []
        self.frame = 0
        self.frames_drawn = 0
        self.dropped = 0
        self.selected: int | None = None
        self.cued: int | None = None
        self.message = ""
        self._t0 = 0.0
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._tick)
        self.set_frequencies(frequencies or [8.0, 10.0, 12.0, 15.0])

    def set_frequencies(self, freqs: list[float], labels: list[str] | None = None) -> None:
        """Targets to show (Hz); frequencies at or above half the refresh rate are dropped with a message."""
        ok = [f for f in freqs if 0 < f < self.refresh_hz / 2]
        bad = [f for f in freqs if f not in ok]
        self.frequencies = ok
        self.labels = labels if labels is not None and len(labels) == len(freqs) else [f"{f:g} Hz" for f in freqs]
        self.labels = [lbl for lbl, f in zip(self.labels, freqs, strict=True) if f in ok]
        self.message = f"cannot render {bad} Hz at {self.refresh_hz:g} Hz refresh" if bad else ""
        self.update()

    def set_refresh(self, refresh_hz: float) -> None:
        """Use the display's refresh rate (Hz) for the frame clock."""
        if refresh_hz > 0:
            self.refresh_hz = float(refresh_hz)
            self.set_frequencies([*self.frequencies])
            if self.running:
                self.start()

    @property
    def running(self) -> bool:
        """True while the frame timer runs."""
        return self._timer.isActive()

    def start(self) -> None:
        """Start flickering from frame 0 (dropped-frame count reset)."""
        self.frame = 0
        self.frames_drawn = 0
        self.dropped = 0
        self._t0 = time.perf_counter()
        self._timer.start(max(1, int(1000.0 / self.refresh_hz)))

    def stop(self) -> None:
        """Stop flickering (targets drawn at mid grey)."""
        self._timer.stop()
        self.update()

    def select(self, index: int | None) -> None:
        """Highlight the target the decoder chose (None: none)."""
        self.selected = index
        self.update()

    def cue(self, index: int | None) -> None:
        """Cue a target for a calibration trial (yellow frame; None or -1: no cue). Every target keeps flickering."""
        self.cued = index if index is not None and 0 <= index < len(self.frequencies) else None
        self.update()

    def _tick(self) -> None:
        due = int((time.perf_counter() - self._t0) * self.refresh_hz)
        if due <= self.frame:
            due = self.frame + 1  # timer early: next frame anyway
        if self.frames_drawn:
            self.dropped += due - self.frame - 1
        self.frame = due
        self.frames_drawn += 1
        self.repaint()

    def luminances(self) -> np.ndarray:
        """Current luminance (0–1) of every target."""
        if not self.running:
            return np.full(len(self.frequencies), 0.5)
        return np.array([flicker_luminance(f, self.frame, self.refresh_hz, self.waveform) for f in self.frequencies])

    def paintEvent(self, event: object) -> None:
        """Draw the targets at this frame's luminance, the chosen one outlined, and the frame counters."""
        p = QPainter(self)
        try:
            p.fillRect(self.rect(), QColor(0, 0, 0))
            n = len(self.frequencies)
            if n:
                cols = math.ceil(math.sqrt(n))
                rows = math.ceil(n / cols)
                w, h = self.width() / cols, (self.height() - 20) / rows
                lum = self.luminances()
                font = QFont()
                font.setPointSize(10)
                p.setFont(font)
                for i in range(n):
                    r, c = divmod(i, cols)
                    rect = QRectF(c * w + 0.1 * w, r * h + 0.1 * h, 0.8 * w, 0.8 * h)
                    g = round(255 * float(lum[i]))
                    p.fillRect(rect, QColor(g, g, g))
                    if self.selected == i:
                        p.setPen(QPen(QColor(0, 200, 0), 6))
                        p.drawRect(rect)
                    if self.cued == i:
                        p.setPen(QPen(QColor(255, 210, 0), 10))
                        p.drawRect(rect.adjusted(-6, -6, 6, 6))
                    p.setPen(QColor(255, 80, 80))
                    p.drawText(rect, Qt.AlignmentFlag.AlignCenter, self.labels[i])
            p.setPen(QColor(220, 220, 220))
            text = f"{self.waveform} @ {self.refresh_hz:g} Hz refresh | frame {self.frame} | dropped {self.dropped}" + (
                f" | {self.message}" if self.message else ""
            )
            p.drawText(QRectF(4, self.height() - 18, self.width() - 8, 16), Qt.AlignmentFlag.AlignLeft, text)
        finally:
            p.end()


class FeedbackBar(QWidget):
    """Motor-imagery feedback: a bar from the centre, ``value`` in [-1, 1] (left … right), plus class bars.

    ``set_command(classes, values)`` takes a discrete command's probabilities; the bar shows
    ``p(right) - p(left)`` when both classes exist, otherwise the winning class's margin.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(240, 120)
        self.value = 0.0
        self.classes: tuple[str, ...] = ()
        self.probs: tuple[float, ...] = ()

    def set_command(self, classes: tuple[str, ...], values: tuple[float, ...]) -> None:
        """Show the probabilities of a discrete command."""
        self.classes, self.probs = tuple(classes), tuple(values)
        self.value = mi_value(self.classes, self.probs)
        self.update()

    def paintEvent(self, event: object) -> None:
        """Centre bar plus one thin bar per class."""
        p = QPainter(self)
        try:
            w, h = self.width(), self.height()
            p.fillRect(self.rect(), QColor(250, 250, 250))
            mid = w / 2
            bar_h = h * 0.35
            p.fillRect(QRectF(10, 8, w - 20, bar_h), QColor(225, 225, 225))
            length = (w / 2 - 10) * max(-1.0, min(1.0, self.value))
            color = QColor(31, 119, 180) if self.value >= 0 else QColor(214, 39, 40)
            p.fillRect(QRectF(min(mid, mid + length), 8, abs(length), bar_h), color)
            p.setPen(QColor(0, 0, 0))
            p.drawLine(int(mid), 4, int(mid), int(8 + bar_h + 4))
            vcenter = Qt.AlignmentFlag.AlignVCenter
            lower = [c.lower() for c in self.classes]
            left, right = ("left", "right") if "left" in lower and "right" in lower else ("", "margin of the winner")
            p.drawText(QRectF(10, 8, w - 20, bar_h), Qt.AlignmentFlag.AlignLeft | vcenter, left)
            p.drawText(QRectF(10, 8, w - 20, bar_h), Qt.AlignmentFlag.AlignRight | vcenter, right)
            n = len(self.probs)
            if n:
                top = 16 + bar_h
                row = (h - top - 4) / n
                for i, (c, v) in enumerate(zip(self.classes or tuple(map(str, range(n))), self.probs, strict=False)):
                    y = top + i * row
                    p.fillRect(QRectF(90, y + 2, (w - 100) * max(0.0, min(1.0, v)), row - 4), QColor(44, 160, 44))
                    p.drawText(QRectF(4, y, 84, row), Qt.AlignmentFlag.AlignVCenter, f"{c} {v:.2f}")
        finally:
            p.end()


def mi_value(classes: tuple[str, ...], probs: tuple[float, ...]) -> float:
    """Feedback value in [-1, 1]: ``p(right) - p(left)``, else the winner's margin over the runner-up."""
    lower = [c.lower() for c in classes]
    if "left" in lower and "right" in lower and len(probs) == len(classes):
        return float(probs[lower.index("right")] - probs[lower.index("left")])
    if len(probs) >= 2:
        s = sorted(probs, reverse=True)
        return float(s[0] - s[1])
    return 0.0
