"""Report helpers shared by every training method: metrics, ITR, figures and report.json."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "classification_metrics",
    "format_metrics",
    "itr_bits_per_min",
    "jsonable",
    "save_confusion_png",
    "save_curve_png",
    "write_report_json",
]


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class recall and the confusion matrix.

    Parameters
    ----------
    y_true, y_pred : sequence of int, shape (n_trials,)
        Indices into ``classes``.
    classes : sequence of str

    Returns
    -------
    dict
        ``accuracy`` (0-1), ``n_trials``, ``per_class`` (name -> recall 0-1, or None for a
        class without trials), ``confusion`` (rows = true class, columns = predicted, counts),
        ``classes``.
    """
    yt = np.asarray(y_true, dtype=int).ravel()
    yp = np.asarray(y_pred, dtype=int).ravel()
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {yt.shape[0]} and {yp.shape[0]}.")
    k = len(classes)
    conf = np.zeros((k, k), dtype=int)
    np.add.at(conf, (yt, yp), 1)
    per_class: dict[str, float | None] = {}
    for i, name in enumerate(classes):
        n = int(conf[i].sum())
        per_class[str(name)] = float(conf[i, i] / n) if n else None
    n = int(yt.size)
    return {
        "accuracy": float(np.trace(conf) / n) if n else float("nan"),
        "n_trials": n,
        "per_class": per_class,
        "confusion": conf.tolist(),
        "classes": [str(c) for c in classes],
    }


def itr_bits_per_min(n_classes: int, accuracy: float, window_s: float, gaze_shift_s: float = 0.0) -> float:
    """Wolpaw information transfer rate.

    ``B = log2 N + P log2 P + (1 - P) log2((1 - P) / (N - 1))`` bits per selection, times
    selections per minute ``60 / (window_s + gaze_shift_s)``. Accuracy at or below chance gives 0.

    Parameters
    ----------
    n_classes : int
        N >= 2.
    accuracy : float
        P in [0, 1].
    window_s : float
        Decision window in s.
    gaze_shift_s : float
        Time between selections for the user to shift gaze, s (added to each selection).

    Returns
    -------
    float
        bits/min.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}.")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}.")
    if window_s + gaze_shift_s <= 0:
        raise ValueError(f"window_s + gaze_shift_s must be > 0 s, got {window_s} + {gaze_shift_s}.")
    n, p = float(n_classes), float(accuracy)
    if p <= 1.0 / n:
        return 0.0
    bits = math.log2(n) + p * math.log2(p)
    if p < 1.0:
        bits += (1.0 - p) * math.log2((1.0 - p) / (n - 1.0))
    return bits * 60.0 / (window_s + gaze_shift_s)


def save_confusion_png(
    confusion: Sequence[Sequence[int]] | np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Save the confusion matrix (rows = true, columns = predicted) as a PNG with counts and row-normalised colour."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    conf = np.asarray(confusion, dtype=float)
    rows = conf.sum(axis=1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    k = len(classes)
    fig = Figure(figsize=(1.2 + 0.9 * k, 1.0 + 0.8 * k), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues")
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(k), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(
                j, i, f"{int(conf[i, j])}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black"
            )
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def save_curve_png(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    xlabel: str,
    ylabels: Mapping[str, str] | None = None,
    title: str = "",
) -> Path:
    """Save one panel per series (e.g. accuracy and ITR) against ``x`` as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    names = list(series)
    fig = Figure(figsize=(4.0 * len(names), 3.2), dpi=100)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        ax.plot(list(x), list(series[name]), marker="o")
        ax.set_xlabel(xlabel)
        ax.set_ylabel((ylabels or {}).get(name, name))
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def jsonable(value: Any) -> Any:
    """``value`` with numpy types, tuples and Paths turned into JSON types (non-finite floats -> None)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_report_json(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``report`` as indented JSON (numpy values converted, NaN -> null)."""
    out = Path(path)
    out.write_text(json.dumps(jsonable(dict(report)), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return out


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        if value and all(isinstance(v, list) for v in value.values()):  # e.g. detections per recording
            return f"{sum(len(v) for v in value.values())} items over {len(value)} entries"
        return ", ".join(f"{k} {_format_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value) and len(value) <= 8:
            return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
        return f"{len(value)} items"
    return str(value)


def format_metrics(result: Mapping[str, Any]) -> str:
    """Human-readable accuracy, per-class recall, confusion matrix and (if present) ITR.

    Results without a classification summary (continuous decoding: ``r2``, ``nrmse`` ...; event
    detection: ``precision``, ``recall``, ``f1`` ...) are printed as one ``key  value`` line each.
    """
    if not {"accuracy", "n_trials", "per_class", "confusion"} <= set(result):
        return "\n".join(f"{key:<20}{_format_value(value)}" for key, value in result.items())
    lines = [f"accuracy      {result['accuracy'] * 100:.1f} % over {result['n_trials']} trials"]
    if "trial_accuracy" in result:
        lines.append(f"trial accuracy {result['trial_accuracy'] * 100:.1f} %")
    if "itr_bits_per_min" in result:
        gaze = result.get("gaze_shift_s", 0.0)
        lines.append(
            f"ITR           {result['itr_bits_per_min']:.1f} bits/min (Wolpaw; window {result['window_s']:g} s "
            f"+ gaze shift {gaze:g} s)"
        )
    lines.append("per-class recall")
    for name, rec in result["per_class"].items():
        lines.append(f"  {name:>12}: " + ("   n/a" if rec is None else f"{rec * 100:5.1f} %"))
    classes = result.get("classes") or list(result["per_class"])
    pred_classes = result.get("predicted_classes") or classes
    width = max(6, *(len(str(c)) for c in list(classes) + list(pred_classes))) + 1
    lines.append("confusion (rows true, columns predicted)")
    lines.append(" " * (width + 2) + "".join(f"{c!s:>{width}}" for c in pred_classes))
    for name, row in zip(classes, result["confusion"], strict=False):
        lines.append(f"  {name!s:>{width}}" + "".join(f"{int(v):>{width}}" for v in row))
    return "\n".join(lines)
