"""``closedloop train`` and ``closedloop evaluate`` (argument parsing lives in app/cli.py).

::

    closedloop train PARADIGM --dataset SPEC.toml --method METHOD --out MODEL.onnx [--report DIR]
                     [--pretrain SPEC.toml] [--seed N]
    closedloop evaluate MODEL.onnx --dataset SPEC.toml [--json]

``train`` shows progress on stderr, writes the model (ONNX + card) and, with ``--report``, a
report folder (the method's figures plus ``report.json`` with the summary). ``evaluate`` prints
accuracy, per-class recall, the confusion matrix and (SSVEP) ITR, or with ``--json`` one JSON
object with at least ``accuracy``, ``n_trials``, ``per_class``, ``confusion``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from decoders.card import read_card
from decoders.dataset import load_spec
from decoders.report import format_metrics, jsonable, write_report_json
from decoders.training import TrainContext, evaluator_for, method_for

__all__ = ["cmd_evaluate", "cmd_train", "stderr_progress"]


def stderr_progress(prefix: str = "train") -> Callable[[float, str], None]:
    """A progress sink printing ``[ 42%] message`` on stderr (one rewritten line on a terminal)."""
    err = sys.stderr
    tty = err.isatty()
    last: dict[str, Any] = {"t": 0.0, "msg": ""}

    def show(fraction: float, message: str) -> None:
        frac = min(max(float(fraction), 0.0), 1.0)
        now = time.monotonic()
        if message == last["msg"] and frac < 1.0 and now - last["t"] < 0.5:
            return
        last["t"], last["msg"] = now, message
        text = f"{prefix}: [{frac * 100:3.0f}%] {message}"
        if tty:
            err.write("\r\033[K" + text + ("\n" if frac >= 1.0 else ""))
        else:
            err.write(text + "\n")
        err.flush()

    return show


def cmd_train(args: argparse.Namespace) -> int:
    """Train ``args.method`` for ``args.paradigm`` on ``args.dataset``; write ``args.out`` and the report."""
    spec = load_spec(args.dataset)
    if spec.paradigm != args.paradigm:
        raise ValueError(
            f"dataset spec {args.dataset!r} is for paradigm {spec.paradigm!r}, not {args.paradigm!r}; "
            f"run `closedloop train {spec.paradigm} ...` or fix the spec's 'paradigm'."
        )
    pretrain = load_spec(args.pretrain) if getattr(args, "pretrain", None) else None
    if pretrain is not None and pretrain.paradigm != args.paradigm:
        raise ValueError(
            f"--pretrain spec {args.pretrain!r} is for paradigm {pretrain.paradigm!r}, not {args.paradigm!r}."
        )
    fn = method_for(args.paradigm, args.method)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report_dir = Path(args.report) if getattr(args, "report", None) else None
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
    progress = stderr_progress(f"train {args.paradigm}/{args.method}")
    ctx = TrainContext(
        paradigm=args.paradigm,
        method=args.method,
        spec=spec,
        out=out,
        report_dir=report_dir,
        pretrain=pretrain,
        seed=int(getattr(args, "seed", 0) or 0),
        progress=progress,
        options=spec.table(args.paradigm),
    )
    t0 = time.monotonic()
    progress(0.0, f"loading {spec.path.name}")
    summary = dict(fn(ctx))
    summary.setdefault("paradigm", args.paradigm)
    summary.setdefault("method", args.method)
    summary.setdefault("model", str(out))
    summary.setdefault("dataset", str(spec.path))
    summary["train_seconds"] = round(time.monotonic() - t0, 2)
    progress(1.0, "done")
    if not out.is_file():
        raise RuntimeError(f"method {args.method!r} finished without writing the model file {str(out)!r}.")
    if report_dir is not None:
        summary["report"] = str(report_dir)
        write_report_json(summary, report_dir / "report.json")
    for key, value in summary.items():
        if isinstance(value, float):
            text = f"{value:.4g}"
        elif isinstance(value, dict | list):
            text = json.dumps(jsonable(value))
            if len(text) > 200:
                text = text[:197] + "..."
        else:
            text = str(value)
        print(f"{key:<24} {text}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate the model file ``args.model`` on ``args.dataset``; print a summary or JSON."""
    path = Path(args.model)
    card = read_card(path)
    spec = load_spec(args.dataset)
    if spec.paradigm != card.paradigm:
        raise ValueError(
            f"model {str(path)!r} is a {card.paradigm!r} model but dataset spec {args.dataset!r} is for "
            f"{spec.paradigm!r}."
        )
    evaluate = evaluator_for(card.paradigm)
    result: dict[str, Any] = dict(evaluate(path, card, spec))
    if args.json:
        print(json.dumps(jsonable(result), allow_nan=False))
    else:
        print(f"model   {path}  ({card.paradigm}, {card.provenance.get('method', '?')}, classes {list(card.classes)})")
        print(f"dataset {spec.path}")
        print(format_metrics(result))
    return 0
