"""Registers the motor-imagery methods (``csp-lda``, ``simpleconv``) and the MI evaluator.

::

    closedloop train mi --dataset SPEC.toml --method csp-lda --out MODEL.onnx [--report DIR]
    closedloop train mi --dataset SPEC.toml --method simpleconv --out MODEL.onnx [--pretrain OTHERS.toml] [--seed N]
    closedloop evaluate MODEL.onnx --dataset SPEC.toml [--json]

Both methods band-pass every recording with the causal filter the card will name (the one a
session pipeline runs), cut ``[tmin, tmax)`` epochs, train on crops of the model window
(``[mi] window_s``, every ``crop_step_s``; the whole epoch by default) and test on each trial's first
window ``[tmin, tmin + window_s)``, the one ``closedloop evaluate`` decodes. They report
cross-validated accuracy (folds never split a recording group), then fit on all trials and write
ONNX + card. The summary holds ``cv_accuracy``, ``cv_per_class``, ``cv_confusion``,
``fold_accuracy`` and ``onnx_max_abs_diff`` (ONNX output vs the training framework's on every
trial's first window). Evaluation is the generic discrete evaluator
(:func:`decoders.evaluation.evaluate_discrete`).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from decoders.card import ModelCard
from decoders.dataset import DatasetError, DatasetSpec, Epochs
from decoders.evaluation import evaluate_discrete
from decoders.mi.csp import build_csp_lda_onnx, fit_csp_lda
from decoders.mi.options import (
    MiOptions,
    crop_windows,
    group_folds,
    load_mi_epochs,
    make_card,
    parse_options,
    window_samples,
)
from decoders.report import classification_metrics, save_confusion_png
from decoders.ssvep_reference import save_model
from decoders.training import TrainContext, register_evaluator, register_method

__all__ = ["evaluate_mi", "onnx_probabilities", "train_csp_lda", "train_simpleconv_method", "training_windows"]


def onnx_probabilities(model_bytes: bytes, X: np.ndarray, input_name: str = "window") -> np.ndarray:
    """Run an exported graph (single thread) on windows (n × n_samples × n_channels) -> probabilities (n × K)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, {input_name: np.ascontiguousarray(X, dtype=np.float32)})[0]
    return np.asarray(out, dtype=np.float64)


def training_windows(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, n_window: int, step: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training crops: each ``n_window``-sample window every ``step`` samples of each trial, labels/groups repeated.

    With ``n_window`` equal to the epoch length this is the trials themselves.
    """
    crops = crop_windows(X, n_window, step)
    n_crops = crops.shape[1]
    flat = crops.reshape(-1, n_window, X.shape[2])
    return flat, np.repeat(y, n_crops), np.repeat(groups, n_crops)


def _cv_summary(
    ep: Epochs, y_pred: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], n_window: int
) -> dict[str, Any]:
    m = classification_metrics(ep.y, y_pred, ep.classes)
    return {
        "cv_accuracy": m["accuracy"],
        "cv_per_class": m["per_class"],
        "cv_confusion": m["confusion"],
        "fold_accuracy": [float(np.mean(y_pred[te] == ep.y[te])) for _, te in folds],
        "n_folds": len(folds),
        "n_trials": int(ep.n_trials),
        "classes": list(ep.classes),
        "window_s": n_window / ep.sfreq,
    }


def _write_report(ctx: TrainContext, summary: dict[str, Any]) -> None:
    if ctx.report_dir is None:
        return
    path = save_confusion_png(
        summary["cv_confusion"],
        summary["classes"],
        ctx.report_dir / "confusion_cv.png",
        title=f"{ctx.method}: cross-validated accuracy {summary['cv_accuracy']:.1%} ({summary['n_folds']} folds)",
    )
    summary["confusion_png"] = str(path)


def _options(ctx: TrainContext) -> MiOptions:
    """The spec's ``[mi]`` table, overridden by ``ctx.options``, validated."""
    return parse_options({**ctx.spec.table("mi"), **ctx.options}, str(ctx.spec.path))


def train_csp_lda(ctx: TrainContext) -> dict[str, Any]:
    """``closedloop train mi --method csp-lda``: CSP (one-vs-rest for > 2 classes) + LDA -> ONNX."""
    if ctx.pretrain is not None:
        raise ValueError(
            "method 'csp-lda' is trained on the target subject only; drop --pretrain (simpleconv uses it)."
        )
    opts = _options(ctx)
    band = opts.band("csp-lda")
    ep = load_mi_epochs(ctx.spec, band, opts.filter_order)
    n_win = window_samples(ep, ctx.spec, opts)
    step = max(1, round(opts.crop_step_s * ep.sfreq))
    reg = None if opts.csp_reg == "none" else opts.csp_reg
    k = len(ep.classes)
    folds = group_folds(ep.y, ep.groups, opts.folds, ctx.seed)
    y_pred = np.empty_like(ep.y)
    for i, (tr, te) in enumerate(folds):
        ctx.progress(0.1 + 0.7 * i / len(folds), f"cross-validation fold {i + 1}/{len(folds)}")
        xc, yc, _ = training_windows(ep.X[tr], ep.y[tr], ep.groups[tr], n_win, step)
        model = fit_csp_lda(xc, yc, k, n_components=opts.csp_components, reg=reg)
        y_pred[te] = np.argmax(model.predict_proba(ep.X[te, :n_win]), axis=1)
    summary = _cv_summary(ep, y_pred, folds, n_win)
    ctx.progress(0.85, f"fitting on all {ep.n_trials} trials")
    xc, yc, _ = training_windows(ep.X, ep.y, ep.groups, n_win, step)
    model = fit_csp_lda(xc, yc, k, n_components=opts.csp_components, reg=reg)
    params = {
        "csp_components": opts.csp_components,
        "csp_reg": opts.csp_reg,
        "n_features": int(model.filters.shape[1]),
        "scheme": "binary" if k == 2 else "one-vs-rest",
        "cv_accuracy": summary["cv_accuracy"],
    }
    card = make_card(ep, ctx.spec, "csp-lda", opts, params, n_window=n_win)
    onnx_model = build_csp_lda_onnx(model, card)
    save_model(onnx_model, ctx.out)
    first = ep.X[:, :n_win]
    summary["onnx_max_abs_diff"] = float(
        np.max(np.abs(onnx_probabilities(onnx_model.SerializeToString(), first) - model.predict_proba(first)))
    )
    _write_report(ctx, summary)
    return summary


def _pretrain_epochs(pretrain: DatasetSpec, ep: Epochs, opts: MiOptions, n_window: int) -> Epochs:
    pe = load_mi_epochs(pretrain, opts.band("simpleconv"), opts.filter_order)
    where = f"--pretrain dataset spec {str(pretrain.path)!r}"
    if pe.ch_names != ep.ch_names:
        raise DatasetError(f"{where}: channels {pe.ch_names} differ from the target spec's {ep.ch_names}.")
    if abs(pe.sfreq - ep.sfreq) > 1e-6 * ep.sfreq:
        raise DatasetError(f"{where}: sampling-rate mismatch, {pe.sfreq:g} Hz vs the target's {ep.sfreq:g} Hz.")
    if pe.classes != ep.classes:
        raise DatasetError(f"{where}: classes {list(pe.classes)} differ from the target's {list(ep.classes)}.")
    if pe.X.shape[1] < n_window:
        raise DatasetError(
            f"{where}: epochs of {pe.X.shape[1]} samples are shorter than the model window ({n_window} samples); "
            "make its [epochs] at least as long as the target's window."
        )
    return pe


def train_simpleconv_method(ctx: TrainContext) -> dict[str, Any]:
    """``closedloop train mi --method simpleconv [--pretrain SPEC]``: EEG-SimpleConv -> ONNX, alignment in the graph."""
    from decoders.mi.simpleconv import (
        SimpleConvSettings,
        export_simpleconv_onnx,
        torch_probabilities,
        train_simpleconv,
    )

    opts = _options(ctx)
    settings = SimpleConvSettings(**{f.name: getattr(opts, f.name) for f in fields(SimpleConvSettings)})
    ep = load_mi_epochs(ctx.spec, opts.band("simpleconv"), opts.filter_order)
    if opts.resample_hz > ep.sfreq:
        raise DatasetError(
            f"dataset spec {str(ctx.spec.path)!r}: key 'mi.resample_hz' ({opts.resample_hz:g} Hz) is above the "
            f"recordings' rate ({ep.sfreq:g} Hz)."
        )
    n_win = window_samples(ep, ctx.spec, opts)
    step = max(1, round(opts.crop_step_s * ep.sfreq))
    global_net = None
    k = len(ep.classes)
    xc, yc, _ = training_windows(ep.X, ep.y, ep.groups, n_win, step)
    if ctx.pretrain is not None:
        ctx.progress(0.02, f"loading pretraining data {ctx.pretrain.path.name}")
        pe = _pretrain_epochs(ctx.pretrain, ep, opts, n_win)
        pretrain = training_windows(pe.X, pe.y, pe.groups, n_win, step)
        ctx.progress(0.05, f"global stage on {pe.n_trials} trials of {len(np.unique(pe.groups))} group(s)")
        _, global_net = train_simpleconv(xc, yc, k, ep.sfreq, settings=settings, pretrain=pretrain, seed=ctx.seed)
    folds = group_folds(ep.y, ep.groups, opts.folds, ctx.seed)
    y_pred = np.empty_like(ep.y)
    for i, (tr, te) in enumerate(folds):
        ctx.progress(0.3 + 0.5 * i / len(folds), f"cross-validation fold {i + 1}/{len(folds)}")
        xtr, ytr, _ = training_windows(ep.X[tr], ep.y[tr], ep.groups[tr], n_win, step)
        net, _ = train_simpleconv(xtr, ytr, k, ep.sfreq, settings=settings, global_net=global_net, seed=ctx.seed)
        y_pred[te] = np.argmax(torch_probabilities(net, ep.X[te, :n_win]), axis=1)
    summary = _cv_summary(ep, y_pred, folds, n_win)
    ctx.progress(0.85, f"training on all {ep.n_trials} trials")
    net, _ = train_simpleconv(xc, yc, k, ep.sfreq, settings=settings, global_net=global_net, seed=ctx.seed)
    params = {
        "resample_hz": net.net_rate,
        "feature_maps": settings.feature_maps,
        "n_blocks": settings.n_blocks,
        "kernel_size": settings.kernel_size,
        "epochs": settings.epochs,
        "epochs_finetune": settings.epochs_finetune if global_net is not None else 0,
        "lr": settings.lr,
        "batch_size": settings.batch_size,
        "mixup": settings.mixup,
        "seed": ctx.seed,
        "alignment": "Euclidean alignment matrix of the training trials, inside the graph",
        "pretrained": global_net is not None,
        "cv_accuracy": summary["cv_accuracy"],
    }
    card = make_card(ep, ctx.spec, "simpleconv", opts, params, pretrain=ctx.pretrain, n_window=n_win)
    onnx_model = export_simpleconv_onnx(net, card)
    save_model(onnx_model, ctx.out)
    first = ep.X[:, :n_win]
    summary["onnx_max_abs_diff"] = float(
        np.max(np.abs(onnx_probabilities(onnx_model.SerializeToString(), first) - torch_probabilities(net, first)))
    )
    summary["pretrained"] = global_net is not None
    _write_report(ctx, summary)
    return summary


def evaluate_mi(path: Path, card: ModelCard, spec: DatasetSpec) -> dict[str, Any]:
    """``closedloop evaluate`` for MI models: the generic discrete evaluator (card filter, one window per trial)."""
    result = evaluate_discrete(path, spec)
    result["method"] = str(card.provenance.get("method", ""))
    return result


register_method("mi", "csp-lda", train_csp_lda)
register_method("mi", "simpleconv", train_simpleconv_method)
register_evaluator("mi", evaluate_mi)
