"""Multichannel scope: stacked traces that keep up with 64 channels at 1 kHz.

Per frame the scope reads only the samples new since its last frame from the stream's ring
buffer (:meth:`RingBuffer.read_since`, never blocking the acquisition thread), runs the
display filters on them (:class:`app.pipeline.CausalFilter`: the same causal IIR code as the
pipelines, with its own state), appends them to a display window of ``view_s`` seconds and
draws a **min/max (peak) decimation to the plot's pixel width**: every pixel column gets the
minimum and maximum of the samples it covers, so a spike of one sample stays visible whatever
the zoom. Each trace is scaled by its own µV-per-lane factor and **clipped to its lane**, so an
artefact never paints over its neighbours. The lanes are rasterised with numpy straight into
one image the size of the plot area (:func:`raster_traces`: each column filled from its min to
its max, joined to the neighbouring column), drawn by one ``drawImage``: a few ms per frame for
64 channels at any rate, where a vector path of 64 × 2 × width points costs ~100 ms in Qt.

The pure parts (:class:`DisplayWindow`, :func:`column_minmax`, :func:`lane_values`,
:func:`raster_traces`) are tested without Qt.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QEvent, QObject, QPoint, QRect, QRectF, Qt
from PyQt6.QtGui import QImage, QPainter
from PyQt6.QtWidgets import QGraphicsItem

from acquisition.ringbuffer import RingBuffer
from acquisition.source import BufferedStream
from app.pipeline import CausalFilter, FilterSettings

LANE_FILL = 0.9  # fraction of a lane a trace may use (clipped beyond)


def column_minmax(data: np.ndarray, n_columns: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Peak decimation to pixel columns: the min and max of the samples each column covers.

    Every column covers ``k = max(1, round(n / n_columns))`` consecutive samples, the newest in the
    last column, so the columns span ``k · n_columns`` samples: the oldest samples are left out, or
    the oldest columns padded with the first sample, when ``n`` is not a multiple.

    Parameters
    ----------
    data : ndarray, shape (n_samples, n_channels)
    n_columns : int
        Number of pixel columns (the plot's width in pixels).

    Returns
    -------
    lo, hi : ndarray, shape (n_columns, n_channels)
    n_covered : int
        Samples spanned by the columns (``k · n_columns``, within a factor 2/3–4/3 of ``n`` when
        ``n ≥ n_columns``): the image spans ``n_covered / srate`` seconds ending now.
    """
    n, n_ch = data.shape
    if n_columns < 1:
        raise ValueError(f"n_columns must be >= 1, got {n_columns}.")
    if n == 0:
        z = np.zeros((n_columns, n_ch), dtype=data.dtype)
        return z, z, n_columns
    k = max(1, round(n / n_columns))
    covered = k * n_columns
    if covered > n:
        data = np.concatenate((np.repeat(data[:1], covered - n, axis=0), data))
    elif covered < n:
        data = data[n - covered :]
    body = data.reshape(n_columns, k, n_ch)
    if k == 1:
        return body[:, 0], body[:, 0], covered
    return body.min(axis=1), body.max(axis=1), covered


def lane_values(values: np.ndarray, uv_per_lane: np.ndarray) -> np.ndarray:
    """Scale µV to lane units (1 = a lane's height) per channel and clip each trace to its lane.

    Parameters
    ----------
    values : ndarray, shape (n_points, n_channels), µV
    uv_per_lane : ndarray, shape (n_channels,)
        µV spanned by one lane for each channel.

    Returns
    -------
    ndarray, shape (n_points, n_channels), float32, within ±LANE_FILL/2
    """
    scale = np.where(uv_per_lane > 0, uv_per_lane, 1.0).astype(np.float32)
    y = (values / scale).astype(np.float32, copy=False)
    return np.clip(y, -LANE_FILL / 2, LANE_FILL / 2)


def stack_traces(data: np.ndarray, uv_per_lane: np.ndarray) -> np.ndarray:
    """Lane values offset to plot y (channel 0 on top: channel ``c`` is centred at ``n_ch - 1 - c``)."""
    n_ch = data.shape[1]
    return lane_values(data, uv_per_lane) + np.arange(n_ch - 1, -1, -1, dtype=np.float32)


def raster_traces(
    lo: np.ndarray, hi: np.ndarray, height: int, colors: np.ndarray, background: int, *, bottom_up: bool = False
) -> np.ndarray:
    """Draw min/max columns of stacked lanes into an RGB32 image (channel 0 in the top lane).

    Parameters
    ----------
    lo, hi : ndarray, shape (n_columns, n_channels)
        Column minima / maxima in lane units (within ±0.5).
    height : int
        Image height in pixels.
    colors : ndarray of uint32, shape (n_channels,)
        0xAARRGGBB colour of each channel.
    background : int
        0xAARRGGBB background.
    bottom_up : bool
        Order the image rows bottom-up (row 0 is the bottom of the picture), as a y-up view draws them.

    Returns
    -------
    ndarray of uint32, shape (height, n_columns)
        Every column is filled between its min and max, extended to meet the neighbouring
        column so a trace stays connected.
    """
    n_cols, n_ch = lo.shape
    lane_px = height / n_ch
    centre = ((np.arange(n_ch, dtype=np.float32) + 0.5) * lane_px)[None, :]
    top = centre - hi * lane_px  # pixel rows grow downwards
    bottom = centre - lo * lane_px
    # connect column j to column j-1: extend each span to reach the previous one
    top[1:] = np.minimum(top[1:], bottom[:-1])
    bottom[1:] = np.maximum(bottom[1:], top[:-1])
    top_i = np.floor(top).T.astype(np.int16, order="C")  # (n_ch, n_cols): rows gathered below
    bottom_i = np.ceil(bottom).T.astype(np.int16, order="C")
    rows = np.arange(height - 1, -1, -1, dtype=np.int16) if bottom_up else np.arange(height, dtype=np.int16)
    row_ch = np.minimum((rows.astype(np.int64) * n_ch) // height, n_ch - 1)
    mask = (rows[:, None] >= top_i[row_ch]) & (rows[:, None] <= bottom_i[row_ch])
    out = np.full((height, n_cols), background, dtype=np.uint32)
    np.copyto(out, colors[row_ch][:, None], where=mask)
    return out


class DisplayWindow:
    """The last ``view_s`` seconds of a stream as the scope shows them (filtered, samples × channels, µV).

    Parameters
    ----------
    n_channels : int
    srate : float
        Sampling rate in Hz.
    view_s : float
        Width of the time window in s.
    """

    def __init__(self, n_channels: int, srate: float, view_s: float = 5.0) -> None:
        self.n_channels = n_channels
        self.srate = srate if srate > 0 else 1.0
        self.view_s = view_s
        self.n = max(2, round(view_s * self.srate))
        # two rings (filtered, raw) written at _pos: a frame copies only its new samples
        self._data = np.zeros((self.n, n_channels), dtype=np.float32)
        self._raw = np.zeros((self.n, n_channels), dtype=np.float32)
        self._pos = 0
        self.filled = 0
        self.settings = FilterSettings()
        self._filter: CausalFilter | None = None

    def _ordered(self, ring: np.ndarray) -> np.ndarray:
        return np.concatenate((ring[self._pos :], ring[: self._pos])) if self._pos else ring.copy()

    @property
    def data(self) -> np.ndarray:
        """The filtered window, oldest sample first (n × n_channels, a copy)."""
        return self._ordered(self._data)

    @property
    def raw(self) -> np.ndarray:
        """The unfiltered window, oldest sample first (n × n_channels, a copy)."""
        return self._ordered(self._raw)

    def set_filters(self, highpass_hz: float | None, lowpass_hz: float | None, notch_hz: float | None) -> None:
        """Choose the display filters (None = off); the filtered view restarts from the raw window."""
        nyq = self.srate / 2
        hp = highpass_hz if highpass_hz is not None and 0 < highpass_hz < nyq else None
        lp = lowpass_hz if lowpass_hz is not None and 0 < lowpass_hz < nyq else None
        if hp is not None and lp is not None and lp <= hp:
            lp = None
        notch = notch_hz if notch_hz is not None and 0 < notch_hz < nyq else None
        band = (hp, lp) if (hp is not None or lp is not None) else None
        self.settings = FilterSettings(band, 2, notch)
        self._filter = CausalFilter(self.settings, self.srate, self.n_channels) if (band or notch) else None
        raw = self.raw
        data = np.zeros_like(raw)
        if self._filter is not None and self.filled:
            data[self.n - self.filled :] = self._filter(raw[self.n - self.filled :])
        elif self._filter is None:
            data = raw
        self._data, self._raw, self._pos = data, raw, 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Append new samples (n × n_channels, µV): filtered into :attr:`data`, raw into :attr:`raw`.

        Returns the filtered chunk.
        """
        m = chunk.shape[0]
        if m == 0:
            return np.zeros((0, self.n_channels), dtype=np.float32)
        chunk = np.asarray(chunk, dtype=np.float32)
        if not np.isfinite(chunk).all():
            chunk = np.nan_to_num(chunk, nan=0.0, posinf=0.0, neginf=0.0)
        filt = self._filter(chunk) if self._filter is not None else chunk
        for ring, new in ((self._raw, chunk), (self._data, filt)):
            tail = new[-self.n :]
            k = tail.shape[0]
            first = min(k, self.n - self._pos)
            ring[self._pos : self._pos + first] = tail[:first]
            ring[: k - first] = tail[first:]
        self._pos = (self._pos + min(m, self.n)) % self.n
        self.filled = min(self.n, self.filled + m)
        return filt

    def tail(self, seconds: float, *, raw: bool = False) -> np.ndarray:
        """The newest ``seconds`` of the window that has been filled (samples × channels, a copy)."""
        k = min(self.filled, round(seconds * self.srate))
        ring = self._raw if raw else self._data
        idx = (self._pos - k + np.arange(k)) % self.n
        return ring[idx]


class _PaintCounter(QObject):
    """Counts paint events of a widget: the scope's frame counter."""

    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self.frames = 0

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:
        if event is not None and event.type() == QEvent.Type.Paint:
            self.frames += 1
        return False


class TraceImage(pg.GraphicsObject):
    """The traces image over ``[-span, 0] × [-0.5, n_ch - 0.5]`` in plot coordinates.

    The image is a ring of pixel columns: column :attr:`start_col` is the oldest, so scrolling
    costs no copy; :meth:`paint` blits the two parts side by side, 1:1 in device pixels when
    the sizes match (Qt's fast path).
    """

    def __init__(self) -> None:
        super().__init__()
        self.image: QImage | None = None
        self._pixels: np.ndarray | None = None
        self.rect = QRectF(-1.0, -0.5, 1.0, 1.0)
        self.start_col = 0

    def set_pixels(self, pixels: np.ndarray, rect: QRectF, start_col: int = 0) -> None:
        """Show ``pixels`` (uint32 0xAARRGGBB, rows top-down; oldest column ``start_col``) over ``rect``."""
        h, w = pixels.shape
        if pixels is not self._pixels or self.image is None:
            self._pixels = pixels  # the QImage borrows this buffer (updated in place between frames)
            self.image = QImage(pixels.data, w, h, 4 * w, QImage.Format.Format_RGB32)  # type: ignore[call-overload]
        self.start_col = start_col
        if rect != self.rect:
            self.prepareGeometryChange()
            self.rect = rect
        self.update()

    def boundingRect(self) -> QRectF:
        return QRectF(self.rect)

    def paint(self, painter: QPainter, *args: object) -> None:
        """Blit the ring's two parts (oldest first) into the target rectangle in device pixels."""
        img = self.image
        if img is None:
            return
        target = painter.transform().mapRect(self.rect)
        painter.save()
        painter.resetTransform()
        w, h = img.width(), img.height()
        c = self.start_col % w if w else 0
        parts = [(c, w - c), (0, c)] if c else [(0, w)]
        exact = abs(target.width() - w) < 1.5 and abs(target.height() - h) < 1.5
        x = target.left()
        sx = target.width() / w if w else 1.0
        for src_x, src_w in parts:
            if src_w <= 0:
                continue
            if exact:
                painter.drawImage(QPoint(round(x), round(target.top())), img, QRect(src_x, 0, src_w, h))
            else:
                painter.drawImage(QRectF(x, target.top(), src_w * sx, target.height()), img, QRectF(src_x, 0, src_w, h))
            x += src_w * sx
        painter.restore()


class ScopeWidget(pg.PlotWidget):
    """Stacked multichannel traces with peak decimation, per-channel scaling, clipping and filters.

    Call :meth:`set_stream` with a :class:`~acquisition.source.BufferedStream`, then :meth:`refresh`
    from a GUI timer (it reads the ring buffer; the acquisition thread never calls in here).
    The traces are rasterised with numpy into one image the size of the plot area (one min/max
    span per pixel column and channel), which costs a few ms for 64 channels whatever the rate.
    """

    COLORS = (0xFF1F77B4, 0xFFD62728)
    BACKGROUND = 0xFFFFFFFF

    def __init__(self, parent: object = None, view_s: float = 5.0) -> None:
        self.labels: list[str] = []
        super().__init__(parent)
        self.view_s = view_s
        self.stream: BufferedStream | None = None
        self.window: DisplayWindow | None = None
        self.uv_per_lane = np.zeros(0, dtype=np.float32)
        self.default_uv = 100.0
        self.filters: tuple[float | None, float | None, float | None] = (None, None, None)
        self._counter = 0
        self.n_lost = 0
        self._dirty = True
        self._pixels: np.ndarray | None = None
        self._pending: np.ndarray | None = None
        self._last: tuple[np.ndarray, np.ndarray] | None = None
        self._k = 1
        self._col = 0  # oldest column of the image ring
        self._colors = np.zeros(0, dtype=np.uint32)
        self.setBackground("w")
        self.setMenuEnabled(False)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        item = self.getPlotItem()
        assert item is not None
        self.plot_item = item
        item.setLabel("bottom", "time", units="s")
        for name in ("left", "bottom"):  # axes are redrawn from a pixmap cache, not re-rendered every frame
            item.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.traces = TraceImage()
        item.addItem(self.traces)
        self.paint_counter = _PaintCounter(self)
        vp = self.viewport()
        assert vp is not None
        vp.installEventFilter(self.paint_counter)
        self.setToolTip("Stacked channels; each lane is clipped to its height. Scale per channel in the controls.")
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)

    # ------------------------------------------------------------------ setup
    @property
    def frames(self) -> int:
        """Frames painted so far (paint events of the viewport)."""
        return self.paint_counter.frames

    def set_stream(self, stream: BufferedStream, default_uv: float = 100.0) -> None:
        """Show ``stream`` (a numeric BufferedStream), from its newest samples on."""
        self.stream = stream
        info = stream.info
        self.labels = list(info.labels)
        n_ch = len(self.labels)
        self.window = DisplayWindow(n_ch, info.srate, self.view_s)
        self.window.set_filters(*self.filters)
        self.default_uv = default_uv
        self.uv_per_lane = np.full(n_ch, default_uv, dtype=np.float32)
        buf = stream.buffer
        self._counter = max(0, buf.counter - self.window.n)
        self.n_lost = 0
        self._dirty = True
        self.plot_item.setYRange(-0.5, n_ch - 0.5, padding=0)
        self.plot_item.setXRange(-self.view_s, 0, padding=0)
        self._set_ticks()

    def _set_ticks(self) -> None:
        n_ch = len(self.labels)
        if n_ch == 0:
            return
        h = max(1, self.height())
        step = max(1, math.ceil(n_ch / max(1, h / 14)))
        ticks = [(float(n_ch - 1 - i), self.labels[i]) for i in range(0, n_ch, step)]
        axis = self.plot_item.getAxis("left")
        axis.setTicks([ticks, []])

    def resizeEvent(self, ev: object) -> None:
        """Re-space the channel labels to the new height."""
        super().resizeEvent(ev)  # type: ignore[arg-type]
        self._set_ticks()
        self._dirty = True

    def set_filters(self, highpass_hz: float | None, lowpass_hz: float | None, notch_hz: float | None) -> None:
        """Display filters (None = off); the pipelines are not affected."""
        self.filters = (highpass_hz, lowpass_hz, notch_hz)
        if self.window is not None:
            self.window.set_filters(*self.filters)
        self._dirty = True

    def set_scale(self, uv_per_lane: float, channel: int | None = None) -> None:
        """µV per lane for one channel or (``channel=None``) for all."""
        if channel is None:
            self.uv_per_lane[:] = uv_per_lane
            self.default_uv = uv_per_lane
        else:
            self.uv_per_lane[channel] = uv_per_lane
        self._dirty = True

    def autoscale(self) -> None:
        """Per-channel scale from the shown data: a lane spans 6 robust standard deviations."""
        if self.window is None or self.window.filled < 2:
            return
        x = self.window.tail(self.view_s)
        mad = np.median(np.abs(x - np.median(x, axis=0)), axis=0) * 1.4826
        self.uv_per_lane = np.where(mad > 0, 6.0 * mad, self.default_uv).astype(np.float32)
        self._dirty = True

    # ------------------------------------------------------------------ frames
    def pull(self) -> np.ndarray:
        """Read the samples new since the last call into the display window; returns them filtered."""
        if self.stream is None or self.window is None:
            return np.zeros((0, 0), dtype=np.float32)
        buf = self.stream.buffer
        if not isinstance(buf, RingBuffer):
            raise TypeError(f"the scope shows numeric streams; {self.stream.info.name!r} is a marker stream.")
        r = buf.read_since(self._counter)
        self._counter = r.end
        self.n_lost += r.lost
        return self.window.push(r.data)

    def refresh(self) -> None:
        """Pull new samples and draw them (call from a GUI timer).

        Only the pixel columns the new samples complete are rasterised; the image scrolls left by
        that many columns. Changes of size, scale or filters redraw the whole window.
        """
        new = self.pull()
        if self._dirty or self._pixels is None:
            self.redraw()
        elif new.shape[0]:
            self._append(new)

    def _geometry(self) -> tuple[int, int] | None:
        vb = self.plot_item.getViewBox()
        if vb is None:
            return None
        rect = vb.sceneBoundingRect()
        return max(16, int(rect.width())), max(16, int(rect.height()))

    def redraw(self) -> None:
        """Peak-decimate the whole display window to the pixel columns and rasterise the lanes."""
        w = self.window
        geo = self._geometry()
        if w is None or geo is None:
            return
        width, height = geo
        lo, hi, covered = column_minmax(w.data, width)
        lo, hi = lane_values(lo, self.uv_per_lane), lane_values(hi, self.uv_per_lane)
        n_ch = lo.shape[1]
        self._colors = np.array([self.COLORS[c % 2] for c in range(n_ch)], dtype=np.uint32)
        self._pixels = raster_traces(lo, hi, height, self._colors, self.BACKGROUND, bottom_up=False)
        self._col = 0
        self._k = covered // width
        self._pending = np.zeros((0, n_ch), dtype=np.float32)
        self._last = (lo[-1:].copy(), hi[-1:].copy())
        span = covered / w.srate  # ≈ view_s: the time axis shows exactly the span the columns cover
        self.plot_item.setXRange(-span, 0, padding=0)
        self.traces.set_pixels(self._pixels, QRectF(-span, -0.5, span, float(n_ch)))
        self._dirty = False

    def _append(self, new: np.ndarray) -> None:
        """Scroll the image by the columns ``new`` samples complete and rasterise only those."""
        pixels = self._pixels
        assert pixels is not None and self._pending is not None and self._last is not None
        if self._geometry() != (pixels.shape[1], pixels.shape[0]):
            self.redraw()
            return
        data = np.concatenate((self._pending, new)) if self._pending.shape[0] else new
        k = self._k
        m = data.shape[0] // k
        self._pending = data[m * k :]
        if m == 0:
            return
        width = pixels.shape[1]
        if m >= width:
            self.redraw()
            return
        cols = data[: m * k].reshape(m, k, -1)
        lo = lane_values(cols.min(axis=1), self.uv_per_lane)
        hi = lane_values(cols.max(axis=1), self.uv_per_lane)
        block = raster_traces(
            np.concatenate((self._last[0], lo)),  # the previous column, so the new ones join it
            np.concatenate((self._last[1], hi)),
            pixels.shape[0],
            self._colors,
            self.BACKGROUND,
            bottom_up=False,
        )
        pixels[:, (self._col + np.arange(m)) % width] = block[:, 1:]  # overwrite the m oldest columns
        self._col = (self._col + m) % width
        self._last = (lo[-1:].copy(), hi[-1:].copy())
        self.traces.set_pixels(pixels, self.traces.rect, self._col)

    def ordered_pixels(self) -> np.ndarray | None:
        """The traces image with its oldest column first (a copy), as it appears on screen."""
        p = self._pixels
        if p is None:
            return None
        return np.concatenate((p[:, self._col :], p[:, : self._col]), axis=1)
