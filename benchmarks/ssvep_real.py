"""SSVEP decoding on real recordings: ssvep_exo subjects 01-08, closedloop's methods vs the pyRiemann peer.

For every subject and window (0.5, 1, 2, 4 s from trial onset), 5-fold stratified cross-validation
(the same folds for every method) gives 3-class (13/17/21 Hz) and 4-class (+ rest) accuracy and
Wolpaw ITR (stated gaze shift 1.0 s: the SSVEP is weak in the first second of a trial) for:

- ``fbcca``: Chen et al. 2015, training-free (folds only calibrate the rest threshold);
- ``etrca``: Nakanishi et al. 2018, templates + TRCA filters from the training folds;
- ``dnn``: Guney et al., two-stage. The global stage uses the *other half* of the subjects
  (01-04 for 05-08 and vice versa: no trial of the test subject, 2 global models per window
  instead of 8), then fine-tuning on the training folds;
- ``peer-mdm``: Kalunga et al. 2016 with pyRiemann: causal band-pass around each frequency
  (f ± 1 Hz, Butterworth order 4) on the continuous recording, the filtered signals stacked as
  channels, covariance (Ledoit-Wolf) -> MDM. 4-class: MDM with rest as a class. The causal filters
  run on the stream, so a decision also draws on the ~1 s before its window (filter memory);
- ``peer-mdm-win``: the same, but the band-pass runs zero-phase *inside* the window only (the
  closedloop methods' rule), which shows how much of the peer's lead at short windows is that memory.

Then the inference cost per decision (median and p99 of ``predict`` on one window, single thread)
of each method's real runtime (the model file through ``decoders.loader.load_decoder``; the
peer's filter + covariance + MDM).

Usage::

    python benchmarks/ssvep_real.py [--json] [--subjects 1 2] [--windows 1 2] [--methods fbcca etrca]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
from scipy import signal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from decoders.dataset import load_spec  # noqa: E402
from decoders.report import classification_metrics, itr_bits_per_min  # noqa: E402
from decoders.ssvep.core import (  # noqa: E402
    FilterBankSpec,
    SsvepData,
    cross_validate,
    cv_folds,
    fit_scorer,
    load_ssvep_data,
    write_model,
)
from decoders.ssvep.rest import calibrate_threshold, rest_statistic  # noqa: E402

SPEC = REPO / "tests" / "datasets" / "ssvep_exo_all.toml"
WINDOWS = (0.5, 1.0, 2.0, 4.0)
METHODS = ("fbcca", "etrca", "dnn", "peer-mdm", "peer-mdm-win")
GAZE_S = 1.0


def peer_bank(freqs: tuple[float, ...], sfreq: float) -> list[np.ndarray]:
    """Kalunga et al.: a band-pass of ±1 Hz around each stimulus frequency."""
    return [signal.butter(4, [f - 1.0, f + 1.0], "bandpass", fs=sfreq, output="sos") for f in freqs]


def peer_preprocess(freqs: tuple[float, ...]) -> Any:
    def run(data: np.ndarray, sfreq: float) -> np.ndarray:
        return np.concatenate([signal.sosfilt(sos, data, axis=0) for sos in peer_bank(freqs, sfreq)], axis=1)

    return run


def peer_cv(
    data: SsvepData, window: float, folds: list[tuple[np.ndarray, np.ndarray]], *, in_window: bool = False
) -> dict[str, Any]:
    from dataclasses import replace

    from pyriemann.classification import MDM
    from pyriemann.estimation import Covariances

    from decoders.dataset import load_epochs

    spec = replace(data.spec, tmax=data.spec.tmin + window).with_classes(data.class_names)
    if in_window:
        ep = load_epochs(spec, recordings=data.recordings)
        bank = peer_bank(data.frequencies, data.sfreq)
        X = np.concatenate(
            [signal.sosfiltfilt(sos, ep.X, axis=1, padlen=min(27, ep.X.shape[1] - 1)) for sos in bank], 2
        )
    else:
        ep = load_epochs(spec, recordings=data.recordings, preprocess=peer_preprocess(data.frequencies))
        X = ep.X
    covs = Covariances("lwf").fit_transform(np.transpose(X, (0, 2, 1)).astype(np.float64))
    y = ep.y
    n_t = len(data.targets)
    y_pred = np.full(len(y), -1)
    y_pred_t = np.full(len(y), -1)
    for tr, te in folds:
        y_pred[te] = MDM().fit(covs[tr], y[tr]).predict(covs[te])
        tr_t = tr[y[tr] < n_t]
        y_pred_t[te] = MDM().fit(covs[tr_t], y[tr_t]).predict(covs[te])
    tm = y < n_t
    return {
        "y_true": y.tolist(),
        "y_pred": y_pred.tolist(),
        "y_true_targets": y[tm].tolist(),
        "y_pred_targets": y_pred_t[tm].tolist(),
    }


def dnn_globals(
    spec: Any, subjects: list[str], window: float, data_by_subject: dict[str, SsvepData], seed: int
) -> dict[str, Any]:
    """One global DNN per half of the subjects; maps each test subject to the net trained on the other half."""
    import torch

    from decoders.ssvep.dnn import DnnSettings, train_dnn

    torch.set_num_threads(1)
    half = len(subjects) // 2
    halves = [subjects[:half], subjects[half:]]
    out: dict[str, Any] = {}
    for h, other in ((0, 1), (1, 0)):
        xs, ys = [], []
        for g in halves[other]:
            d = data_by_subject[g]
            ep = d.epochs(window)
            fb = FilterBankSpec.make(d.options.subbands_for("dnn"), d.sfreq, d.options)
            keep = ep.y < len(d.targets)
            xs.append(fb.apply(ep.X[keep]))
            ys.append(ep.y[keep])
        d0 = data_by_subject[subjects[0]]
        settings = DnnSettings(epochs_global=d0.options.epochs_global, epochs_finetune=d0.options.epochs_finetune)
        net, _ = train_dnn(np.concatenate(xs), np.concatenate(ys), len(d0.targets), settings=settings, seed=seed)
        for g in halves[h]:
            out[g] = net
    return out


def inference_cost(data: SsvepData, window: float, n: int = 500) -> dict[str, dict[str, float]]:
    """Median / p99 ms of one decision per method (model file through load_decoder; peer pipeline)."""
    from pyriemann.classification import MDM
    from pyriemann.estimation import Covariances

    from decoders.loader import load_decoder

    ep = data.epochs(window)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, ep.n_trials, n)
    cost: dict[str, dict[str, float]] = {}

    def measure(fn: Any) -> dict[str, float]:
        for i in idx[:20]:
            fn(ep.X[i])
        wall, cpu = [], []
        for i in idx:
            c0, t0 = time.thread_time(), time.perf_counter()
            fn(ep.X[i])
            wall.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.thread_time() - c0) * 1e3)
        return {
            "median_ms": float(np.median(wall)),
            "p99_ms": float(np.percentile(wall, 99)),
            "cpu_median_ms": float(np.median(cpu)),
            "cpu_p99_ms": float(np.percentile(cpu, 99)),
        }

    with tempfile.TemporaryDirectory() as tmp:
        n_t = len(data.targets)
        for method in ("fbcca", "etrca", "dnn"):
            fb = FilterBankSpec.make(data.options.subbands_for(method), data.sfreq, data.options)
            bands = fb.apply(ep.X)
            tm = ep.y < n_t
            if method == "dnn":
                from dataclasses import replace

                data = replace(data, options=replace(data.options, epochs_global=1, epochs_finetune=1))
            scorer = fit_scorer(method, bands[tm], ep.y[tm], n_t, fb, data)
            thr = calibrate_threshold(rest_statistic(scorer.score(bands[~tm])), 0.1) if data.rest else None
            path = Path(tmp) / f"{method}.onnx"
            write_model(path, method, data, window, fb, scorer, thr, training_data="benchmark")
            dec = load_decoder(path)
            cost[method] = measure(lambda x, dec=dec: dec.predict(x.astype(np.float32)))
        bank = peer_bank(data.frequencies, data.sfreq)
        cov = Covariances("lwf")
        Xc = np.concatenate([signal.sosfilt(sos, ep.X, axis=1) for sos in bank], axis=2)
        mdm = MDM().fit(cov.fit_transform(np.transpose(Xc, (0, 2, 1)).astype(np.float64)), ep.y)
        zi = [np.zeros((sos.shape[0], 2, ep.X.shape[2])) for sos in bank]

        def peer_predict(x: np.ndarray) -> Any:
            # online: the causal filters run on the stream; per decision only covariance + MDM on the filtered window
            xf = np.concatenate(
                [signal.sosfilt(sos, x, axis=0, zi=z)[0] for sos, z in zip(bank, zi, strict=True)], axis=1
            )
            return mdm.predict_proba(cov.transform(xf.T[None].astype(np.float64)))

        cost["peer-mdm"] = measure(peer_predict)
    return cost


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object after the table")
    p.add_argument("--subjects", type=int, nargs="*", default=list(range(1, 9)))
    p.add_argument("--windows", type=float, nargs="*", default=list(WINDOWS))
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dnn-epochs", type=int, nargs=2, default=(10, 10), metavar=("GLOBAL", "FINETUNE"))
    p.add_argument("--cost-only", action="store_true", help="measure only the inference cost per decision")
    args = p.parse_args(argv)

    spec = load_spec(SPEC)
    from dataclasses import replace

    subjects = [f"subject{s:02d}" for s in args.subjects]
    data_by_subject: dict[str, SsvepData] = {}
    for g in subjects:
        d = load_ssvep_data(spec.with_groups([g]))
        opts = replace(d.options, epochs_global=args.dnn_epochs[0], epochs_finetune=args.dnn_epochs[1])
        data_by_subject[g] = replace(d, options=opts)
    results: dict[str, Any] = {}
    t_start = time.monotonic()
    for w in [] if args.cost_only else args.windows:
        globals_ = dnn_globals(spec, subjects, w, data_by_subject, args.seed) if "dnn" in args.methods else {}
        for g in subjects:
            d = data_by_subject[g]
            ep = d.epochs(w)
            folds = cv_folds(ep.y, np.array([g] * ep.n_trials), 5, args.seed)
            for m in args.methods:
                t0 = time.monotonic()
                if m.startswith("peer-mdm"):
                    cv = peer_cv(d, w, folds, in_window=m == "peer-mdm-win")
                else:
                    cv = cross_validate(m, d, w, seed=args.seed, folds=folds, epochs=ep, global_net=globals_.get(g))
                acc3 = classification_metrics(cv["y_true_targets"], cv["y_pred_targets"], d.targets)["accuracy"]
                acc4 = classification_metrics(cv["y_true"], cv["y_pred"], d.class_names)["accuracy"]
                results.setdefault(m, {}).setdefault(str(w), {})[g] = {
                    "acc3": acc3,
                    "acc4": acc4,
                    "itr3": itr_bits_per_min(3, acc3, w, GAZE_S),
                    "itr4": itr_bits_per_min(4, acc4, w, GAZE_S),
                }
                print(
                    f"  {g} {w:g}s {m:<9} 3-class {acc3 * 100:5.1f} %  4-class {acc4 * 100:5.1f} %  "
                    f"({time.monotonic() - t0:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    for m in results:
        for w in results[m]:
            vals = list(results[m][w].values())
            results[m][w]["mean"] = {k: float(np.mean([v[k] for v in vals])) for k in ("acc3", "acc4", "itr3", "itr4")}
    cost = {str(w): inference_cost(data_by_subject[subjects[0]], w) for w in args.windows}

    print(f"\nSSVEP, ssvep_exo (8 ch @ 256 Hz), 5-fold CV per subject, ITR with {GAZE_S} s gaze shift")
    cols = [*subjects, "mean"]
    header = f"{'method':<9} {'win':>4} {'metric':<8}" + "".join(f"{c.replace('subject', 'S'):>7}" for c in cols)
    print(header)
    print("-" * len(header))
    for m in results:
        for w in results[m]:
            for key, label, scale in (
                ("acc3", "acc3 %", 100),
                ("acc4", "acc4 %", 100),
                ("itr3", "itr3 b/m", 1),
                ("itr4", "itr4 b/m", 1),
            ):
                row = "".join(f"{results[m][w][c][key] * scale:7.1f}" for c in cols)
                print(f"{m:<9} {float(w):4g} {label:<8}{row}")
    print("\ninference per decision (single thread, model file through load_decoder): median / p99 ms")
    print("wall clock (includes waiting for a CPU on a shared machine) | CPU time of the decoding thread")
    print(f"{'method':<9}" + "".join(f"{w + ' s':>16}" for w in cost) + " |" + "".join(f"{w + ' s':>16}" for w in cost))
    for m in cost[next(iter(cost))]:
        row = "".join(f"{c[m]['median_ms']:7.2f} /{c[m]['p99_ms']:6.2f} " for c in cost.values())
        row += " |" + "".join(f"{c[m]['cpu_median_ms']:7.2f} /{c[m]['cpu_p99_ms']:6.2f} " for c in cost.values())
        print(f"{m:<9}{row}")
    print(f"(total {time.monotonic() - t_start:.0f} s)")
    if args.json:
        print(json.dumps({"accuracy": results, "inference_ms": cost, "gaze_shift_s": GAZE_S, "folds": 5}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
