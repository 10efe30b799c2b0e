"""From a dataset spec to labelled EMG windows: the ``[emg]`` table, epochs cut into sliding windows.

Spec keys (table ``[emg]``, all optional)::

    [emg]
    window_s = 0.2             # s, 0.2-0.25 typical
    hop_s = 0.05               # s between decisions
    bandpass_hz = [20.0, 450.0]
    filter_order = 4
    notch_hz = 60.0            # or omit / false for none
    common_average = false
    rest_class = "rest"        # class used for rest gating (default: a class named "rest", if any)
    threshold_uv = 5.0         # ZC/SSC threshold in µV (default: 0.1 × median channel RMS of the rest windows)
    grid = [["ch29", "ch30", "ch31", "ch32"], ...]   # electrode layout, rows of channel names

Each class event's epoch ``[onset + tmin, onset + tmax]`` (ending no later than ``onset +
duration`` when the event is an annotation with a duration) is cut into windows whose last
sample lies on the global hop grid of the recording, exactly where a live pipeline decides.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from decoders.dataset import DatasetError, DatasetSpec, Recording, check_compatible, read_recording
from decoders.emg.features import Preprocessing, causal_filter, window_ends

__all__ = [
    "EmgSettings",
    "RecordingWindows",
    "emg_settings",
    "epoch_windows",
    "grid_index",
    "iter_windows",
]


@dataclass(frozen=True)
class EmgSettings:
    """Windowing, preprocessing and layout of an EMG decoder (from the spec's ``[emg]`` table)."""

    window_s: float = 0.2
    hop_s: float = 0.05
    pre: Preprocessing = field(default_factory=Preprocessing)
    rest_class: str | None = None
    threshold_uv: float | None = None
    grid: tuple[tuple[str, ...], ...] | None = None


_EMG_KEYS = {
    "window_s",
    "hop_s",
    "bandpass_hz",
    "filter_order",
    "notch_hz",
    "common_average",
    "rest_class",
    "threshold_uv",
    "grid",
    "epochs",
    "lr",
    "hidden",
}


def _spec_err(spec: DatasetSpec, problem: str) -> DatasetError:
    return DatasetError(f"dataset spec {str(spec.path)!r}: {problem}")


def emg_settings(spec: DatasetSpec, options: dict[str, Any] | None = None) -> EmgSettings:
    """Read and validate the ``[emg]`` table (or ``options``, which wins) of ``spec``.

    Raises
    ------
    DatasetError
        Unknown key, a window outside 50-1000 ms, a hop longer than the window, a malformed grid
        (not a rectangle of unique channel names), a rest class that is not a class.
    """
    t = dict(spec.table("emg"))
    t.update(options or {})
    unknown = sorted(set(t) - _EMG_KEYS)
    if unknown:
        raise _spec_err(spec, f"[emg] has unknown key(s) {unknown}; known: {sorted(_EMG_KEYS)}.")

    def num(key: str, default: float) -> float:
        v = t.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v) or v <= 0:
            raise _spec_err(spec, f"[emg] {key} must be a number > 0, got {v!r}.")
        return float(v)

    window_s, hop_s = num("window_s", 0.2), num("hop_s", 0.05)
    if not 0.05 <= window_s <= 1.0:
        raise _spec_err(spec, f"[emg] window_s must be 0.05-1.0 s (200-250 ms typical), got {window_s}.")
    if hop_s > window_s:
        raise _spec_err(spec, f"[emg] hop_s ({hop_s} s) must not exceed window_s ({window_s} s).")
    band = t.get("bandpass_hz", [20.0, 450.0])
    if not isinstance(band, list) or len(band) != 2 or not all(isinstance(b, int | float) for b in band):
        raise _spec_err(spec, f"[emg] bandpass_hz must be [low, high] in Hz, got {band!r}.")
    notch = t.get("notch_hz", 60.0)
    if notch is False:
        notch = None
    if notch is not None and (isinstance(notch, bool) or not isinstance(notch, int | float)):
        raise _spec_err(spec, f"[emg] notch_hz must be a frequency in Hz or false, got {notch!r}.")
    order = t.get("filter_order", 4)
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 8:
        raise _spec_err(spec, f"[emg] filter_order must be an integer 1-8, got {order!r}.")
    car = t.get("common_average", False)
    if not isinstance(car, bool):
        raise _spec_err(spec, f"[emg] common_average must be true or false, got {car!r}.")
    pre = Preprocessing((float(band[0]), float(band[1])), order, None if notch is None else float(notch), car)
    rest = t.get("rest_class", "rest" if "rest" in spec.classes else None)
    if rest is not None and rest not in spec.classes:
        raise _spec_err(spec, f"[emg] rest_class {rest!r} is not one of the classes {list(spec.classes)}.")
    thr = None if t.get("threshold_uv") is None else num("threshold_uv", 1.0)
    grid = t.get("grid")
    rows: tuple[tuple[str, ...], ...] | None = None
    if grid is not None:
        if (
            not isinstance(grid, list)
            or not grid
            or not all(isinstance(r, list) and r and all(isinstance(c, str) for c in r) for r in grid)
        ):
            raise _spec_err(spec, "[emg] grid must be a list of rows, each a list of channel names.")
        widths = sorted({len(r) for r in grid})
        if len(widths) != 1:
            raise _spec_err(spec, f"[emg] grid rows must all have the same length (a rectangle), got lengths {widths}.")
        flat = [c for r in grid for c in r]
        dupes = sorted({c for c in flat if flat.count(c) > 1})
        if dupes:
            raise _spec_err(spec, f"[emg] grid names channel(s) {dupes} more than once.")
        rows = tuple(tuple(r) for r in grid)
    return EmgSettings(window_s, hop_s, pre, rest, thr, rows)


def grid_index(grid: Sequence[Sequence[str]] | None, ch_names: Sequence[str], *, where: str) -> np.ndarray:
    """Channel index at each grid position, shape (rows, cols); a 1 × n strip when ``grid`` is None.

    Raises
    ------
    ValueError
        The grid does not hold exactly the channels ``ch_names`` (electrode-grid mismatch); the
        message lists the missing and the extra names.
    """
    names = list(ch_names)
    if grid is None:
        return np.arange(len(names), dtype=np.int64).reshape(1, -1)
    flat = [c for r in grid for c in r]
    missing = [c for c in names if c not in flat]
    extra = [c for c in flat if c not in names]
    if missing or extra:
        raise ValueError(
            f"{where}: electrode-grid mismatch: the grid ({len(grid)} × {len(grid[0])} = {len(flat)} positions) must "
            f"hold exactly the {len(names)} recording channels; channels not in the grid: {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, grid names not in the recording: {extra[:10]}"
            f"{' ...' if len(extra) > 10 else ''}."
        )
    return np.array([[names.index(c) for c in r] for r in grid], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class RecordingWindows:
    """The labelled windows of one recording.

    Attributes
    ----------
    X : ndarray, shape (n_windows, n_samples, n_channels), float32, µV (filtered)
    y : ndarray, shape (n_windows,), int
        Class index (spec class order).
    trial : ndarray, shape (n_windows,), int
        Epoch number within this recording (0, 1, ...); an epoch is one class event.
    trial_y : ndarray, shape (n_trials,), int
        Class index of each epoch.
    end_index : ndarray, shape (n_windows,), int
        Sample index (0-based, in the recording) of each window's last sample.
    recording : int
        Index into ``spec.recordings``.
    ch_names : list of str
        Column labels of ``X``.
    sfreq : float
        Sampling rate in Hz.
    """

    X: np.ndarray
    y: np.ndarray
    trial: np.ndarray
    trial_y: np.ndarray
    end_index: np.ndarray
    recording: int
    ch_names: list[str]
    sfreq: float


def epoch_windows(
    rec: Recording, spec: DatasetSpec, window: int, hop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Window end indices, class and epoch number of every window of every class event in ``rec``.

    Returns
    -------
    ends, y, trial, trial_y : ndarrays of int
    """
    code_to_class = {c.event: i for i, c in enumerate(spec.classes.values())}
    n = rec.data.shape[0]
    sf = rec.sfreq
    ends: list[np.ndarray] = []
    ys: list[int] = []
    trials: list[np.ndarray] = []
    trial_y: list[int] = []
    for ev in rec.events:
        k = code_to_class.get(ev.description)
        if k is None:
            continue
        t_end = ev.onset_s + spec.tmax
        if ev.duration_s > 0:
            t_end = min(t_end, ev.onset_s + ev.duration_s)
        a = max(0, round((ev.onset_s + spec.tmin) * sf))
        b = min(n, round(t_end * sf))
        e = window_ends(a, b, window, hop)
        if e.size == 0:
            continue
        ends.append(e)
        trials.append(np.full(e.size, len(trial_y)))
        ys.extend([k] * e.size)
        trial_y.append(k)
    if not ends:
        return (np.zeros(0, np.int64),) * 3 + (np.zeros(0, np.int64),)  # type: ignore[return-value]
    return np.concatenate(ends), np.asarray(ys, np.int64), np.concatenate(trials), np.asarray(trial_y, np.int64)


def iter_windows(
    spec: DatasetSpec,
    settings: EmgSettings,
    *,
    channels: Sequence[str] | None = None,
    srate: float | None = None,
) -> Iterator[RecordingWindows]:
    """Yield the filtered, labelled windows of each recording of ``spec`` (one recording in memory at a time).

    Parameters
    ----------
    spec : DatasetSpec
    settings : EmgSettings
    channels : sequence of str, optional
        Channels to pick in this order (a model's card); default the recordings' own.
    srate : float, optional
        Required sampling rate in Hz (a model's card).

    Raises
    ------
    DatasetError
        Unreadable recording, missing channels, rate mismatch, a class with no window at all.
    """
    if channels is not None:
        spec = replace(spec, channels=tuple(channels))
    first: Recording | None = None
    counts = np.zeros(len(spec.classes), dtype=np.int64)
    for ri, rs in enumerate(spec.recordings):
        rec = read_recording(rs, spec)
        if srate is not None and abs(rec.sfreq - srate) > 1e-6 * srate:
            raise DatasetError(
                f"dataset spec {str(spec.path)!r}, recording {str(rs.path)!r}: sampling-rate mismatch: "
                f"{rec.sfreq:g} Hz but the model expects {srate:g} Hz."
            )
        if first is None:
            first = rec
        else:
            check_compatible([first, rec], spec)
            if rec.ch_names != first.ch_names:
                rec = replace(rec, data=rec.data[:, [rec.ch_names.index(c) for c in first.ch_names]])
        window = round(settings.window_s * rec.sfreq)
        hop = max(1, round(settings.hop_s * rec.sfreq))
        ends, y, trial, trial_y = epoch_windows(rec, spec, window, hop)
        counts += np.bincount(y, minlength=len(spec.classes))
        if ends.size == 0:
            continue
        filt = causal_filter(rec.data, rec.sfreq, settings.pre)
        view = np.lib.stride_tricks.sliding_window_view(filt, window, axis=0)  # (n - w + 1, C, w)
        X = np.ascontiguousarray(view[ends - window + 1].transpose(0, 2, 1))
        yield RecordingWindows(X, y, trial, trial_y, ends, ri, list(first.ch_names), rec.sfreq)
    empty = [name for name, c in zip(spec.classes, counts, strict=True) if c == 0]
    if empty:
        raise DatasetError(
            f"dataset spec {str(spec.path)!r}: class(es) {empty} got no window: their events are missing from the "
            f"recordings or their epochs [{spec.tmin}, {spec.tmax}] s are shorter than the "
            f"{settings.window_s} s window."
        )
