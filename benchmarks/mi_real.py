"""Motor imagery on real recordings: eegmmidb S001, closedloop's methods vs the pyRiemann peers.

Two tasks of PhysioNet eegmmidb subject S001 (64 channels, 160 Hz), 2 s windows 0.5-2.5 s after
the cue, leave-one-run-out cross-validation (3 folds; the same folds for every method):

- ``lr``: runs 4/8/12, imagined left vs right fist (45 trials);
- ``ff``: runs 6/10/14, imagined both fists vs both feet (45 trials).

Methods (every one sees the recording after the causal Butterworth band-pass its card names,
run over the whole recording as a session pipeline would):

- ``csp-lda``: CSP (4 filters, Ledoit-Wolf) + LDA, 8-30 Hz;
- ``simpleconv``: EEG-SimpleConv (El Ouahidi et al. 2024), Euclidean alignment from the training
  folds, resampled to 80 Hz, 4-38 Hz, trained on the training folds only;
- ``simpleconv-pt`` (lr only, ``--pretrain``): the same after a global stage on the subject's
  *executed* left/right fist runs 3/7/11 (the only other data here with the same classes);
- ``peer-ts-lr``: pyRiemann covariances (OAS) -> TangentSpace -> LogisticRegression, 8-30 Hz;
- ``peer-mdm``: pyRiemann covariances (OAS) -> MDM, 8-30 Hz.

Then the inference cost per decision (median and p99 of one window through the method's real
runtime, single thread: the ONNX model file through ``decoders.loader.load_decoder`` for
closedloop's methods, ``predict_proba`` for the peers; the causal filter is shared by all and
excluded) and ONNX parity (max abs difference of the ONNX output vs scikit-learn / torch on the
test windows).

Usage::

    python benchmarks/mi_real.py [--json] [--save FILE] [--decisions 2000] [--tasks lr ff] [--methods csp-lda peer-mdm]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from decoders.dataset import Epochs, load_spec  # noqa: E402
from decoders.loader import load_decoder  # noqa: E402
from decoders.mi.csp import build_csp_lda_onnx, fit_csp_lda  # noqa: E402
from decoders.mi.methods import onnx_probabilities, training_windows  # noqa: E402
from decoders.mi.options import group_folds, load_mi_epochs, make_card, parse_options, window_samples  # noqa: E402
from decoders.ssvep_reference import save_model  # noqa: E402

SPECS = REPO / "tests" / "datasets"
TASKS = {"lr": "eegmmidb_S001_lr.toml", "ff": "eegmmidb_S001_ff.toml"}
PRETRAIN = {"lr": "eegmmidb_S001_lr_executed.toml"}
METHODS = ("csp-lda", "simpleconv", "simpleconv-pt", "peer-ts-lr", "peer-mdm")
CLOSEDLOOP = ("csp-lda", "simpleconv", "simpleconv-pt")
#: The 21 sensorimotor channels (FC, C and CP rows) of the 10-10 montage, eegmmidb spelling (--motor-channels).
MOTOR_CHANNELS = tuple(
    f"{row}{pos}".ljust(4, ".") for row in ("Fc", "C", "Cp") for pos in ("5", "3", "1", "z", "2", "4", "6")
)


def _timing(fn: Callable[[np.ndarray], Any], windows: np.ndarray, n: int) -> dict[str, float]:
    """Median and p99 in µs of ``fn(window)`` over ``n`` calls (after 20 warm-up calls).

    Wall-clock (``perf_counter``) and this thread's CPU time (``thread_time``): on a shared machine the
    wall-clock tail includes time the thread waited for a core; the CPU time is the decoder's own cost.
    """
    for i in range(20):
        fn(windows[i % len(windows)])
    wall = np.empty(n)
    cpu = np.empty(n)
    for i in range(n):
        w = windows[i % len(windows)]
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        fn(w)
        wall[i] = time.perf_counter_ns() - t0
        cpu[i] = time.thread_time_ns() - c0
    return {
        "median_us": float(np.median(wall) / 1e3),
        "p99_us": float(np.percentile(wall, 99) / 1e3),
        "cpu_median_us": float(np.median(cpu) / 1e3),
        "cpu_p99_us": float(np.percentile(cpu, 99) / 1e3),
    }


def _peer(name: str) -> Any:
    from pyriemann.classification import MDM
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if name == "peer-ts-lr":
        return make_pipeline(Covariances("oas"), TangentSpace(), LogisticRegression(max_iter=1000))
    return make_pipeline(Covariances("oas"), MDM())


def run_task(
    task: str, methods: list[str], n_decisions: int, seed: int, epochs: int | None, channels: tuple[str, ...] | None
) -> dict[str, Any]:
    """Cross-validate every method on one task; time and check parity of each on its last fold's model."""
    import torch

    from decoders.mi.simpleconv import (
        SimpleConvSettings,
        export_simpleconv_onnx,
        torch_probabilities,
        train_simpleconv,
    )

    torch.set_num_threads(1)
    spec = load_spec(SPECS / TASKS[task])
    if channels is not None:
        spec = dataclasses.replace(spec, channels=channels)
    opts = parse_options(spec.table("mi"), str(spec.path))
    narrow: Epochs = load_mi_epochs(spec, opts.band("csp-lda"), opts.filter_order)
    broad: Epochs = load_mi_epochs(spec, opts.band("simpleconv"), opts.filter_order)
    folds = group_folds(narrow.y, narrow.groups, opts.folds, seed)
    k = len(narrow.classes)
    n_win = window_samples(narrow, spec, opts)
    step = max(1, round(opts.crop_step_s * narrow.sfreq))

    def crops(ep: Epochs, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y, _ = training_windows(ep.X[idx], ep.y[idx], ep.groups[idx], n_win, step)
        return x, y

    sc_settings = SimpleConvSettings() if epochs is None else SimpleConvSettings(epochs=epochs)
    pre = None
    if "simpleconv-pt" in methods and task in PRETRAIN:
        pspec = load_spec(SPECS / PRETRAIN[task])
        if channels is not None:
            pspec = dataclasses.replace(pspec, channels=channels)
        pe = load_mi_epochs(pspec, opts.band("simpleconv"), opts.filter_order)
        pre = training_windows(pe.X, pe.y, pe.groups, n_win, step)
    out: dict[str, Any] = {
        "task": task,
        "n_trials": narrow.n_trials,
        "classes": list(narrow.classes),
        "window_s": n_win / narrow.sfreq,
        "train_crops_per_trial": int(crops(narrow, folds[0][0])[0].shape[0] // len(folds[0][0])),
        "fold_test_groups": [sorted(set(narrow.groups[te].tolist())) for _, te in folds],
        "methods": {},
    }
    tmpdir = tempfile.TemporaryDirectory(prefix="mi_real_")
    tmp = Path(tmpdir.name)
    for method in methods:
        if method == "simpleconv-pt" and pre is None:
            continue
        t0 = time.monotonic()
        accs: list[float] = []
        parity: float | None = None  # peers have no ONNX export
        timing: dict[str, float] = {}
        global_net = None
        for fi, (tr, te) in enumerate(folds):
            last = fi == len(folds) - 1
            x_te = (narrow if method == "csp-lda" or method.startswith("peer") else broad).X[te, :n_win]
            if method == "csp-lda":
                model = fit_csp_lda(*crops(narrow, tr), k, n_components=opts.csp_components, reg="ledoit_wolf")
                proba = model.predict_proba(x_te)
                if last:
                    card = make_card(narrow.subset(tr), spec, method, opts, {}, n_window=n_win)
                    graph = build_csp_lda_onnx(model, card)
                    ref = proba
            elif method.startswith("simpleconv"):
                if method == "simpleconv-pt" and global_net is None:
                    _, global_net = train_simpleconv(
                        *crops(broad, tr), k, broad.sfreq, settings=sc_settings, pretrain=pre, seed=seed
                    )
                net, _ = train_simpleconv(
                    *crops(broad, tr), k, broad.sfreq, settings=sc_settings, global_net=global_net, seed=seed
                )
                proba = torch_probabilities(net, x_te)
                if last:
                    card = make_card(broad.subset(tr), spec, "simpleconv", opts, {}, n_window=n_win)
                    graph = export_simpleconv_onnx(net, card)
                    ref = proba
            else:
                x_tr, y_tr = crops(narrow, tr)
                peer = _peer(method).fit(x_tr.transpose(0, 2, 1).astype(np.float64), y_tr)
                windows = x_te.transpose(0, 2, 1).astype(np.float64)
                proba = peer.predict_proba(windows)
                if last:
                    timing = _timing(lambda w, p=peer: p.predict_proba(w[None]), windows, n_decisions)
            y_te = narrow.y[te]
            accs.append(float(np.mean(np.argmax(proba, axis=1) == y_te)))
        if method in CLOSEDLOOP:
            test_x = (narrow if method == "csp-lda" else broad).X[folds[-1][1], :n_win]
            parity = float(np.max(np.abs(onnx_probabilities(graph.SerializeToString(), test_x) - ref)))
            path = save_model(graph, tmp / f"{task}_{method}.onnx")
            decoder = load_decoder(path)
            timing = _timing(decoder.predict, np.ascontiguousarray(test_x, dtype=np.float32), n_decisions)
        out["methods"][method] = {
            "fold_accuracy": accs,
            "accuracy": float(np.mean(accs)),
            "onnx_max_abs_diff": parity,
            **timing,
            "seconds": round(time.monotonic() - t0, 1),
        }
        print(f"# {task} {method}: {np.mean(accs):.3f} ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    tmpdir.cleanup()
    return out


def print_table(results: list[dict[str, Any]]) -> None:
    """One table: task x method -> fold and mean accuracy, inference cost, parity."""
    head = f"{'task':<5} {'method':<14} {'accuracy per fold':<20} {'mean':>6} {'median µs':>10} "
    head += f"{'p99 µs':>9} {'cpu p99 µs':>11} {'ONNX |diff|':>12}"
    print(head)
    print("-" * len(head))
    for res in results:
        tests = "/".join(",".join(g) for g in res["fold_test_groups"])
        what = f"test runs per fold: {tests}; {res['n_trials']} trials; {res['window_s']:g} s windows"
        print(f"{res['task']:<5} ({what})")
        for method, r in res["methods"].items():
            folds = " ".join(f"{a:.3f}" for a in r["fold_accuracy"])
            diff = "-" if r["onnx_max_abs_diff"] is None else f"{r['onnx_max_abs_diff']:.1e}"
            print(
                f"{res['task']:<5} {method:<14} {folds:<20} {r['accuracy']:>6.3f} {r['median_us']:>10.0f} "
                f"{r['p99_us']:>9.0f} {r['cpu_p99_us']:>11.0f} {diff:>12}"
            )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table (or JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--decisions", type=int, default=2000, help="timed decisions per method (default 2000)")
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="simpleconv training epochs (default: the method's 60)")
    p.add_argument("--save", help="also write the JSON object to this file")
    p.add_argument(
        "--motor-channels", action="store_true", help="every method on the 21 FC/C/CP channels instead of all 64"
    )
    args = p.parse_args(argv)
    t0 = time.monotonic()
    channels = MOTOR_CHANNELS if args.motor_channels else None
    results = [run_task(t, args.methods, args.decisions, args.seed, args.epochs, channels) for t in args.tasks]
    summary: dict[str, Any] = {
        "dataset": "eegmmidb_S001",
        "window_s": 2.0,
        "folds": "leave-one-run-out",
        "channels": list(channels) if channels else "all 64",
    }
    for method in args.methods:
        accs = [r["methods"][method]["accuracy"] for r in results if method in r["methods"]]
        if accs:
            summary[f"mean_accuracy_{method}"] = float(np.mean(accs))
    summary["seconds"] = round(time.monotonic() - t0, 1)
    doc = {"results": results, "summary": summary}
    if args.save:
        Path(args.save).write_text(json.dumps(doc, allow_nan=False, indent=1), encoding="utf-8")
    if args.json:
        print(json.dumps(doc, allow_nan=False))
    else:
        print_table(results)
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
