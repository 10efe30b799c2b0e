"""SSVEP training methods ``fbcca``, ``etrca``, ``dnn`` and the SSVEP evaluator (registered on import).

``closedloop train ssvep --method M`` cross-validates M on the spec at the model window (and
the report windows), fits it on every trial, calibrates the rest threshold on the rest trials
(when the spec has a class without a frequency), writes the model and the report:
``confusion.png``, ``accuracy_itr_vs_window.png`` and the summary (``report.json`` written by
the CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from decoders.card import ModelCard
from decoders.dataset import DatasetError, DatasetSpec
from decoders.evaluation import evaluate_discrete
from decoders.report import classification_metrics, itr_bits_per_min, save_confusion_png, save_curve_png
from decoders.ssvep import runtime as _runtime  # noqa: F401  (registers the runtimes)
from decoders.ssvep.core import (
    METHODS,
    FilterBankSpec,
    SsvepData,
    cross_validate,
    fit_scorer,
    load_ssvep_data,
    write_model,
)
from decoders.ssvep.rest import calibrate_threshold, rest_statistic
from decoders.training import TrainContext, register_evaluator, register_method

__all__ = ["DEFAULT_REPORT_WINDOWS", "evaluate_ssvep", "train_ssvep"]

DEFAULT_REPORT_WINDOWS = (0.5, 1.0, 2.0, 4.0)


def _pretrain_arrays(
    ctx: TrainContext, data: SsvepData, window_s: float, fb: FilterBankSpec
) -> tuple[np.ndarray, np.ndarray] | None:
    if ctx.pretrain is None:
        return None
    pdata = load_ssvep_data(ctx.pretrain, channels=data.ch_names)
    if abs(pdata.sfreq - data.sfreq) > 1e-6 * data.sfreq:
        raise DatasetError(
            f"--pretrain spec {str(ctx.pretrain.path)!r} runs at {pdata.sfreq:g} Hz but --dataset "
            f"{str(data.spec.path)!r} at {data.sfreq:g} Hz (sampling-rate mismatch)."
        )
    missing = [t for t in data.targets if t not in pdata.targets]
    if missing:
        raise DatasetError(f"--pretrain spec {str(ctx.pretrain.path)!r} lacks the target class(es) {missing}.")
    ep = pdata.epochs(window_s)
    to_target = np.array([data.targets.index(c) if c in data.targets else -1 for c in ep.classes])
    y = to_target[ep.y]
    keep = y >= 0
    return fb.apply(ep.X[keep]), y[keep]


def _metrics(cv: dict[str, Any], data: SsvepData) -> dict[str, Any]:
    """3-class (targets) and, with a rest class, (targets + rest)-class metrics with ITR."""
    w, gaze = float(cv["window_s"]), data.options.gaze_shift_s
    tgt = classification_metrics(cv["y_true_targets"], cv["y_pred_targets"], data.targets)
    tgt["itr_bits_per_min"] = itr_bits_per_min(len(data.targets), tgt["accuracy"], w, gaze)
    out: dict[str, Any] = {"targets": tgt}
    if data.rest:
        full = classification_metrics(cv["y_true"], cv["y_pred"], data.class_names)
        full["itr_bits_per_min"] = itr_bits_per_min(len(data.class_names), full["accuracy"], w, gaze)
        out["with_rest"] = full
    return out


def train_ssvep(ctx: TrainContext) -> dict[str, Any]:
    """Train ``ctx.method`` (fbcca | etrca | dnn) on ``ctx.spec``; see the module docstring."""
    method = ctx.method
    data = load_ssvep_data(ctx.spec)
    opts = data.options
    window = opts.window_s or data.epoch_length_s()
    ctx.progress(0.05, f"loaded {len(data.recordings)} recording(s), classes {list(data.class_names)}")
    fb = FilterBankSpec.make(opts.subbands_for(method), data.sfreq, opts)

    global_net = None
    if method == "dnn":
        import torch

        torch.set_num_threads(1)
        pre = _pretrain_arrays(ctx, data, window, fb)
        if pre is not None:
            from decoders.ssvep.dnn import DnnSettings, train_dnn

            ctx.progress(
                0.1, f"DNN global stage on {len(pre[1])} trials of {ctx.pretrain.path.name if ctx.pretrain else ''}"
            )
            global_net, _ = train_dnn(
                pre[0],
                pre[1],
                len(data.targets),
                settings=DnnSettings(epochs_global=opts.epochs_global, epochs_finetune=opts.epochs_finetune),
                seed=ctx.seed,
            )
    elif ctx.pretrain is not None:
        raise ValueError(f"--pretrain is for the deep method 'dnn'; {method!r} does not use it.")

    if opts.report_windows is not None:
        windows = list(opts.report_windows)
    elif method == "dnn":
        windows = [window]
    else:
        windows = [w for w in DEFAULT_REPORT_WINDOWS if w <= data.epoch_length_s() + 1e-9]
    if window not in windows:
        windows.append(window)
    windows = sorted(set(windows))

    curve: dict[float, dict[str, Any]] = {}
    for i, w in enumerate(windows):
        base = 0.15 + 0.6 * i / len(windows)

        def prog(f: float, msg: str, base: float = base) -> None:
            ctx.progress(base + 0.6 * f / len(windows), f"cross-validating {msg}")

        cv = cross_validate(method, data, w, seed=ctx.seed, global_net=global_net, progress=prog)
        curve[w] = {"cv": cv, **_metrics(cv, data)}
    main = curve[window]

    ctx.progress(0.8, f"fitting {method} on all trials")
    ep = data.epochs(window)
    bands = fb.apply(ep.X)
    n_t = len(data.targets)
    tmask = ep.y < n_t
    scorer = fit_scorer(method, bands[tmask], ep.y[tmask], n_t, fb, data, seed=ctx.seed, global_net=global_net)
    thr = None
    if data.rest:
        thr = calibrate_threshold(
            rest_statistic(scorer.score(bands[~tmask]), opts.rest_statistic), opts.false_activation_rate
        )
    parity = None
    if scorer.onnx_model is not None:
        import onnxruntime as ort

        sess = ort.InferenceSession(scorer.onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
        ref = scorer.score(bands[:8])
        got = sess.run(None, {sess.get_inputs()[0].name: bands[:8].astype(np.float32)})[0]
        parity = float(np.max(np.abs(ref - got)))
    training = f"{ctx.spec.path.name} ({len(ep.y)} trials, groups {sorted(set(ep.groups.tolist()))})"
    if ctx.pretrain is not None:
        training += f"; global stage: {ctx.pretrain.path.name}"
    card = write_model(ctx.out, method, data, window, fb, scorer, thr, training_data=training)

    headline = main.get("with_rest", main["targets"])
    summary: dict[str, Any] = {
        "classes": list(card.classes),
        "window_s": card.window_s,
        "gaze_shift_s": opts.gaze_shift_s,
        "cv_folds": main["cv"]["folds"],
        "cv_accuracy": headline["accuracy"],
        "cv_itr_bits_per_min": headline["itr_bits_per_min"],
        "cv_accuracy_targets": main["targets"]["accuracy"],
        "cv_itr_targets_bits_per_min": main["targets"]["itr_bits_per_min"],
        "per_class": headline["per_class"],
        "confusion": headline["confusion"],
        "rest_threshold": thr,
        "false_activation_rate": opts.false_activation_rate if thr is not None else None,
        "window_curve": {
            str(w): {
                "accuracy_targets": c["targets"]["accuracy"],
                "itr_targets_bits_per_min": c["targets"]["itr_bits_per_min"],
                **(
                    {
                        "accuracy_with_rest": c["with_rest"]["accuracy"],
                        "itr_with_rest_bits_per_min": c["with_rest"]["itr_bits_per_min"],
                    }
                    if "with_rest" in c
                    else {}
                ),
            }
            for w, c in curve.items()
        },
    }
    if parity is not None:
        summary["onnx_max_abs_diff"] = parity
    if ctx.report_dir is not None:
        ctx.progress(0.95, "writing report")
        save_confusion_png(
            headline["confusion"],
            headline["classes"],
            ctx.report_dir / "confusion.png",
            f"{method}, {window:g} s window, cross-validated ({headline['accuracy'] * 100:.1f} %)",
        )
        series = {"accuracy (%)": [curve[w]["targets"]["accuracy"] * 100 for w in windows]}
        series["ITR (bits/min)"] = [curve[w]["targets"]["itr_bits_per_min"] for w in windows]
        if data.rest:
            series["accuracy with rest (%)"] = [curve[w]["with_rest"]["accuracy"] * 100 for w in windows]
        save_curve_png(
            windows,
            series,
            ctx.report_dir / "accuracy_itr_vs_window.png",
            xlabel="window (s)",
            title=f"{method}: cross-validated, gaze shift {opts.gaze_shift_s:g} s in the ITR",
        )
        summary["report_files"] = ["confusion.png", "accuracy_itr_vs_window.png", "report.json"]
    return summary


def evaluate_ssvep(model: Path, card: ModelCard, spec: DatasetSpec) -> dict[str, Any]:
    """Evaluate a SSVEP model on ``spec`` (one window per trial from tmin) with Wolpaw ITR.

    The JSON keys: ``accuracy``, ``n_trials``, ``per_class``, ``confusion``, ``classes``,
    ``itr_bits_per_min`` (N = the model's class count), ``window_s``, ``gaze_shift_s``, plus
    the per-trial ``y_true``/``y_pred``.
    """
    result = evaluate_discrete(model, spec)
    gaze = float(card.provenance.get("parameters", {}).get("gaze_shift_s", 0.5))
    table = spec.table("ssvep")
    if "gaze_shift_s" in table:
        gaze = float(table["gaze_shift_s"])
    result["gaze_shift_s"] = gaze
    result["itr_bits_per_min"] = itr_bits_per_min(len(card.classes), result["accuracy"], card.window_s, gaze)
    result["method"] = card.provenance.get("method")
    return result


for _m in METHODS:
    register_method("ssvep", _m, train_ssvep)
register_evaluator("ssvep", evaluate_ssvep)
