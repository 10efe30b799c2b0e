"""``closedloop train emg --method lda|cnn`` and ``closedloop evaluate`` for EMG models.

Training: every class epoch of the spec is cut into sliding windows (see
:mod:`decoders.emg.windows`), filtered causally as a live pipeline would, turned into RMS +
Hudgins TD features, and classified per window. The model file is a plain ONNX graph (window ->
probabilities) with the card naming the grid, the ZC/SSC threshold and the rest class.

Evaluation (``evaluate --json``): ``accuracy`` (window level), ``trial_accuracy`` (majority
vote over the windows of each epoch), ``n_windows``, ``n_trials``, ``per_class`` and
``confusion`` (window level), ``trial_confusion``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from decoders.card import ModelCard, embed_card
from decoders.dataset import DatasetError, DatasetSpec
from decoders.emg.features import FEATURES, Preprocessing, td_features
from decoders.emg.graph import classifier_input
from decoders.emg.windows import EmgSettings, RecordingWindows, emg_settings, grid_index, iter_windows
from decoders.report import classification_metrics, save_confusion_png
from decoders.training import TrainContext, code_version, now_iso, register_evaluator, register_method

__all__ = ["evaluate_emg", "train_cnn_method", "train_lda_method"]

#: ZC/SSC threshold = this fraction of the median per-channel RMS of the rest windows (µV), unless given.
THRESHOLD_FRACTION = 0.1


def _collect(spec: DatasetSpec, settings: EmgSettings, progress: Any) -> tuple[list[RecordingWindows], float]:
    parts: list[RecordingWindows] = []
    n = len(spec.recordings)
    for i, part in enumerate(iter_windows(spec, settings)):
        parts.append(part)
        progress(0.3 * (i + 1) / n, f"windows of {spec.recordings[part.recording].path.name}")
    if not parts:
        raise DatasetError(f"dataset spec {str(spec.path)!r}: no class epoch yielded a window.")
    if settings.threshold_uv is not None:
        return parts, settings.threshold_uv
    rest = list(spec.classes).index(settings.rest_class) if settings.rest_class else None
    rms = []
    for p in parts:
        x = p.X if rest is None else p.X[p.y == rest]
        if len(x):
            rms.append(np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=1)).ravel())
    thr = THRESHOLD_FRACTION * float(np.median(np.concatenate(rms)))
    return parts, max(thr, 1e-3)


def _features(parts: list[RecordingWindows], thr: float, car: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classifier input (n, 5, C) float32, labels, recording index per window."""
    F = np.concatenate([classifier_input(td_features(p.X, thr, common_average=car)) for p in parts])
    y = np.concatenate([p.y for p in parts])
    rec = np.concatenate([np.full(len(p.y), p.recording) for p in parts])
    return F, y, rec


def _card(
    ctx: TrainContext, settings: EmgSettings, parts: list[RecordingWindows], thr: float, method: str, extra: dict
) -> ModelCard:
    ch = parts[0].ch_names
    grid = [list(r) for r in settings.grid] if settings.grid is not None else [list(ch)]
    return ModelCard(
        paradigm="emg",
        srate=parts[0].sfreq,
        channel_labels=tuple(ch),
        window_s=settings.window_s,
        hop_s=settings.hop_s,
        output="discrete",
        classes=tuple(ctx.spec.classes),
        preprocessing=settings.pre.card_dict(),
        provenance={
            "created_by": "closedloop",
            "created_at": now_iso(),
            "method": method,
            "training_data": str(ctx.spec.path),
            "code_version": code_version(),
            "seed": ctx.seed,
            "emg": {
                "features": list(FEATURES),
                "threshold_uv": thr,
                "rest_class": settings.rest_class,
                "grid": grid,
                "grid_given": settings.grid is not None,
                "common_average": settings.pre.common_average,
            },
            "parameters": extra,
        },
    )


def _parity(model: onnx.ModelProto, windows: np.ndarray, reference: np.ndarray, features: np.ndarray) -> dict:
    """Max abs difference of the graph's probabilities and of its feature tensor against the references."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    feat = next(n.output[0] for n in m.graph.node if n.output[0].startswith("features"))
    m.graph.output.append(onnx.helper.make_tensor_value_info(feat, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    prob, got = sess.run(None, {"window": np.ascontiguousarray(windows, dtype=np.float32)})
    return {
        "onnx_max_abs_diff": float(np.max(np.abs(prob - reference))),
        "onnx_feature_max_abs_diff": float(np.max(np.abs(got - features))),
    }


def _save(model: onnx.ModelProto, card: ModelCard, out: Path) -> None:
    embed_card(model, card)
    onnx.save(model, str(out))


def _group_cv(F: np.ndarray, y: np.ndarray, rec: np.ndarray, n_classes: int) -> dict[str, Any] | None:
    from sklearn.model_selection import GroupKFold

    from decoders.emg.lda import fit_lda

    groups = np.unique(rec)
    if len(groups) < 2:
        return None
    pred = np.empty_like(y)
    for tr, te in GroupKFold(n_splits=min(5, len(groups))).split(F, y, rec):
        if len(np.unique(y[tr])) < 2:
            return None
        pred[te] = fit_lda(F[tr], y[tr]).predict(F[te])
    return classification_metrics(y, pred, [str(i) for i in range(n_classes)])


def train_lda_method(ctx: TrainContext) -> dict[str, Any]:
    """``--method lda``: RMS + Hudgins TD features -> shrinkage LDA; writes the ONNX model and report."""
    from decoders.emg.lda import export_lda, fit_lda

    spec = ctx.spec
    settings = emg_settings(spec)
    parts, thr = _collect(spec, settings, ctx.progress)
    if settings.grid is not None:
        grid_index(settings.grid, parts[0].ch_names, where=f"dataset spec {str(spec.path)!r} [emg] grid")
    F, y, rec = _features(parts, thr, settings.pre.common_average)
    flat = F.reshape(len(F), -1)
    ctx.progress(0.4, f"LDA on {len(y)} windows × {flat.shape[1]} features")
    cv = _group_cv(flat, y, rec, len(spec.classes))
    clf = fit_lda(flat, y)
    n_samples, n_channels = parts[0].X.shape[1:]
    model = export_lda(
        clf,
        n_samples=n_samples,
        n_channels=n_channels,
        threshold_uv=thr,
        common_average=settings.pre.common_average,
        n_classes=len(spec.classes),
    )
    sub = slice(0, min(256, len(parts[0].y)))
    ref = np.zeros((sub.stop, len(spec.classes)))
    ref[:, clf.classes_] = clf.predict_proba(flat[sub].astype(np.float64))
    diff = _parity(model, parts[0].X[sub], ref, F[sub])
    card = _card(ctx, settings, parts, thr, "emg-td-lda", {"shrinkage": "ledoit-wolf", "solver": "lsqr"})
    _save(model, card, ctx.out)
    train_acc = float(np.mean(clf.predict(flat) == y))
    summary: dict[str, Any] = {
        "n_windows": len(y),
        "n_channels": int(n_channels),
        "threshold_uv": thr,
        "train_accuracy": train_acc,
        **diff,
    }
    if cv is not None:
        summary["cv_accuracy"] = cv["accuracy"]
        if ctx.report_dir is not None:
            save_confusion_png(cv["confusion"], list(spec.classes), ctx.report_dir / "confusion_cv.png", "LDA CV")
    return summary


def train_cnn_method(ctx: TrainContext) -> dict[str, Any]:
    """``--method cnn``: standardised TD feature maps on the electrode grid -> small CNN (torch)."""
    import torch

    from decoders.emg.cnn import export_cnn, predict_proba, train_cnn

    torch.set_num_threads(1)
    spec = ctx.spec
    settings = emg_settings(spec)
    opts = spec.table("emg")
    parts, thr = _collect(spec, settings, ctx.progress)
    gi = grid_index(settings.grid, parts[0].ch_names, where=f"dataset spec {str(spec.path)!r} [emg] grid")
    F, y, _ = _features(parts, thr, settings.pre.common_average)
    mean = F.mean(axis=0, dtype=np.float64)
    scale = F.std(axis=0, dtype=np.float64)
    scale = np.where(scale > 1e-6, scale, 1.0)
    z = ((F - mean) / scale).astype(np.float32)
    epochs = int(opts.get("epochs", 30))
    model = train_cnn(
        z,
        y,
        gi,
        len(spec.classes),
        epochs=epochs,
        lr=float(opts.get("lr", 3e-3)),
        hidden=int(opts.get("hidden", 16)),
        seed=ctx.seed,
        progress=lambda f, m: ctx.progress(0.3 + 0.6 * f, m),
    )
    n_samples, n_channels = parts[0].X.shape[1:]
    onnx_model = export_cnn(
        model,
        n_samples=n_samples,
        n_channels=n_channels,
        threshold_uv=thr,
        common_average=settings.pre.common_average,
        mean=mean,
        scale=scale,
    )
    sub = slice(0, min(256, len(parts[0].y)))
    z0 = z[: len(parts[0].y)][sub]
    diff = _parity(onnx_model, parts[0].X[sub], predict_proba(model, z0), F[sub])
    card = _card(
        ctx,
        settings,
        parts,
        thr,
        "emg-grid-cnn",
        {"epochs": epochs, "hidden": model.conv1.out_channels, "grid_shape": list(gi.shape)},
    )
    _save(onnx_model, card, ctx.out)
    train_acc = float(np.mean(np.argmax(predict_proba(model, z), axis=1) == y))
    return {
        "n_windows": len(y),
        "n_channels": int(n_channels),
        "grid_shape": list(gi.shape),
        "threshold_uv": thr,
        "train_accuracy": train_acc,
        **diff,
    }


def settings_from_card(card: ModelCard) -> EmgSettings:
    """The windowing and preprocessing a model was trained with, from its card."""
    pre = card.preprocessing
    band = pre.get("bandpass_hz") or [20.0, min(450.0, 0.45 * card.srate)]
    emg = card.provenance.get("emg", {})
    grid = emg.get("grid") if emg.get("grid_given") else None
    return EmgSettings(
        window_s=card.window_s,
        hop_s=card.hop_s,
        pre=Preprocessing(
            (float(band[0]), float(band[1])),
            int(pre.get("filter_order", 4)),
            pre.get("notch_hz"),
            bool(emg.get("common_average", False)),
        ),
        rest_class=emg.get("rest_class"),
        threshold_uv=emg.get("threshold_uv"),
        grid=tuple(tuple(r) for r in grid) if grid else None,
    )


def evaluate_emg(path: Path, card: ModelCard, spec: DatasetSpec) -> dict[str, Any]:
    """Window-level and trial-level (majority vote) accuracy of an EMG model on ``spec``.

    Raises
    ------
    DatasetError
        The spec's classes are not the model's, its ``[emg] grid`` differs from the model's
        (electrode-grid mismatch), or its recordings lack the model's channels or rate.
    """
    from decoders.loader import load_decoder

    foreign = [c for c in spec.classes if c not in card.classes]
    if foreign:
        raise DatasetError(
            f"dataset spec {str(spec.path)!r}: class(es) {foreign} are not among the model's classes "
            f"{list(card.classes)}."
        )
    settings = settings_from_card(card)
    spec_grid = spec.table("emg").get("grid")
    if spec_grid is not None and settings.grid is not None and [list(r) for r in settings.grid] != spec_grid:
        raise DatasetError(
            f"dataset spec {str(spec.path)!r}: electrode-grid mismatch: its [emg] grid differs from the grid of model "
            f"{str(path)!r} ({len(settings.grid)} × {len(settings.grid[0])}, first row {list(settings.grid[0])}). "
            "Use the layout the model was trained with."
        )
    decoder = load_decoder(path)
    to_model = np.array([card.classes.index(c) for c in spec.classes])
    y_true: list[np.ndarray] = []
    y_pred: list[np.ndarray] = []
    t_true: list[int] = []
    t_pred: list[int] = []
    for part in iter_windows(spec, settings, channels=card.channel_labels, srate=card.srate):
        batch = getattr(decoder, "predict_batch", None)
        if batch is not None and getattr(decoder, "supports_batch", False):
            prob = batch(part.X)
        else:
            prob = np.stack([decoder.predict(x) for x in part.X])
        pred = np.argmax(prob, axis=1)
        y_true.append(to_model[part.y])
        y_pred.append(pred)
        for t in range(len(part.trial_y)):
            votes = np.bincount(pred[part.trial == t], minlength=len(card.classes))
            t_true.append(int(to_model[part.trial_y[t]]))
            t_pred.append(int(np.argmax(votes)))
    yt, yp = np.concatenate(y_true), np.concatenate(y_pred)
    result = classification_metrics(yt, yp, card.classes)
    trials = classification_metrics(t_true, t_pred, card.classes)
    result["n_windows"] = result.pop("n_trials")
    result.update(
        trial_accuracy=trials["accuracy"],
        n_trials=trials["n_trials"],
        trial_confusion=trials["confusion"],
        window_s=card.window_s,
        hop_s=card.hop_s,
        model=str(path),
        dataset=str(spec.path),
    )
    return result


register_method("emg", "lda", train_lda_method)
register_method("emg", "cnn", train_cnn_method)
register_evaluator("emg", evaluate_emg)
