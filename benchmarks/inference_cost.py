"""Inference cost per decision of every decoder method, single thread, on small models trained from real data.

Each method is trained through its registered ``closedloop train`` function
(:func:`decoders.training.method_for`) with a small, quick configuration on real recordings
(the same recipes as the tests: ssvep_exo subject01, eegmmidb_S001, flexemg, DAD M1, DREAMS),
written as a model file, loaded with :func:`decoders.loader.load_decoder` (the object a session
runs) and called ``--n`` times (default 500) on windows of the card's shape (float32, Gaussian).
Model size does not depend on the training length, so the cost is that of a fully trained model
(the SSVEP models are built at every window 0.5, 1, 2, 4 s).

Single thread: ``OMP/OPENBLAS/MKL_NUM_THREADS=1``, ``torch.set_num_threads(1)``, onnxruntime
sessions with one intra-op thread. Per decision we record the wall clock (``time.perf_counter``;
it includes waiting for a CPU on a loaded machine) and the decoding thread's own CPU time
(``time.thread_time``), and print median and p99 of both, one row per method, plus the machine
load (``os.getloadavg``). ``--json`` prints one JSON object after the table.

Usage::

    python benchmarks/inference_cost.py [--json] [--n 500] [--paradigms ssvep mi emg continuous spindle]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from decoders.dataset import DatasetSpec, load_spec  # noqa: E402
from decoders.loader import load_decoder  # noqa: E402
from decoders.training import TrainContext, method_for  # noqa: E402

DATA = REPO.parent / "shared" / "data"
SPECS = REPO / "tests" / "datasets"
PARADIGMS = ("ssvep", "mi", "emg", "continuous", "spindle")
SSVEP_WINDOWS = (0.5, 1.0, 2.0, 4.0)
BUDGET_MS = 5.0


@dataclass
class Job:
    """One model to train and time: paradigm, method, a label (e.g. the window) and its training spec."""

    paradigm: str
    method: str
    label: str
    spec: DatasetSpec
    pretrain: DatasetSpec | None = None


def with_table(spec: DatasetSpec, name: str, **values: Any) -> DatasetSpec:
    """A copy of ``spec`` with ``values`` set in its ``[name]`` table."""
    return replace(spec, tables={**spec.tables, name: {**spec.table(name), **values}})


def ssvep_jobs(work: Path, windows: tuple[float, ...]) -> Iterator[Job]:
    spec = load_spec(SPECS / "ssvep_exo_s01.toml")
    spec = spec.with_recordings(spec.recordings[:1])
    for w in windows:
        for m in ("fbcca", "etrca", "dnn"):
            opts = {"window_s": w, "report_windows": [w], "folds": 2, "epochs_global": 1, "epochs_finetune": 1}
            yield Job("ssvep", m, f"{w:g} s", with_table(spec, "ssvep", **opts))


def mi_jobs(work: Path) -> Iterator[Job]:
    spec = load_spec(SPECS / "eegmmidb_S001_lr.toml")
    yield Job("mi", "csp-lda", f"{spec.table('mi').get('window_s', '')} s", spec)
    tiny = {"epochs": 1, "epochs_finetune": 1, "folds": 2}  # full-size network, one epoch
    yield Job("mi", "simpleconv", f"{spec.table('mi').get('window_s', '')} s", with_table(spec, "mi", **tiny))


def emg_jobs(work: Path) -> Iterator[Job]:
    import convert_flexemg

    specs = convert_flexemg.convert(DATA / "flexemg_hdemg", work / "flexemg", n_trials=2)
    spec = load_spec(specs["train"])
    yield Job("emg", "lda", "", spec)
    yield Job("emg", "cnn", "", with_table(spec, "emg", epochs=1))


def continuous_jobs(work: Path) -> Iterator[Job]:
    import convert_dad

    specs = convert_dad.convert(DATA / "dad_m1_reach", work / "dad")
    spec = with_table(load_spec(specs["train"]), "continuous", epochs=5)
    for m in ("kf", "wiener", "dkf-nw", "dkf-nn"):
        yield Job("continuous", m, "", spec)


def spindle_jobs(work: Path) -> Iterator[Job]:
    from convert_dreams import convert

    folder = work / "dreams"
    convert(DATA / "dreams_spindles", folder / "dreams_fif", [2, 1], 300.0, echo=lambda s: None)
    shutil.copy(SPECS / "dreams_spindles_tiny.toml", folder / "tiny.toml")
    yield Job("spindle", "portiloop", "", load_spec(folder / "tiny.toml"))


def measure(predict: Callable[[np.ndarray], Any], windows: np.ndarray, n: int) -> dict[str, float]:
    """Median / p99 of wall clock and thread CPU time (ms) over ``n`` calls, after 20 warm-up calls."""
    for i in range(20):
        predict(windows[i % len(windows)])
    wall = np.empty(n)
    cpu = np.empty(n)
    for i in range(n):
        x = windows[i % len(windows)]
        c0, t0 = time.thread_time(), time.perf_counter()
        predict(x)
        wall[i] = time.perf_counter() - t0
        cpu[i] = time.thread_time() - c0
    wall *= 1e3
    cpu *= 1e3
    return {
        "n": n,
        "wall_median_ms": float(np.median(wall)),
        "wall_p99_ms": float(np.percentile(wall, 99)),
        "cpu_median_ms": float(np.median(cpu)),
        "cpu_p99_ms": float(np.percentile(cpu, 99)),
    }


def run_job(job: Job, work: Path, n: int, seed: int) -> dict[str, Any]:
    out = work / "models" / f"{job.paradigm}_{job.method}_{job.label.replace(' ', '')}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    ctx = TrainContext(job.paradigm, job.method, job.spec, out, pretrain=job.pretrain, seed=seed)
    method_for(job.paradigm, job.method)(ctx)
    train_s = time.monotonic() - t0
    dec = load_decoder(out)
    card = dec.card
    rng = np.random.default_rng(seed)
    shape = (card.n_window_samples, card.n_channels)
    windows = rng.normal(0.0, 10.0, (32, *shape)).astype(np.float32)
    if job.paradigm == "continuous":
        windows = np.abs(windows)  # binned spike counts / rates are >= 0
    res = measure(dec.predict, windows, n)
    return {
        "paradigm": job.paradigm,
        "method": job.method,
        "label": job.label,
        "window_s": card.window_s,
        "window_shape": list(shape),
        "runtime": card.provenance.get("runtime") or "onnx",
        "train_s": train_s,
        **res,
        "cpu_p99_under_budget": res["cpu_p99_ms"] < BUDGET_MS,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object after the table")
    p.add_argument("--n", type=int, default=500, help="decisions timed per method (default 500)")
    p.add_argument("--paradigms", nargs="*", default=list(PARADIGMS), choices=list(PARADIGMS))
    p.add_argument("--ssvep-windows", type=float, nargs="*", default=list(SSVEP_WINDOWS))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.n < 100:
        p.error("--n must be >= 100 (p99 needs at least 100 decisions)")

    import torch

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="inference_cost_") as tmp:
        work = Path(tmp)
        makers: dict[str, Callable[[], Iterator[Job]]] = {
            "ssvep": lambda: ssvep_jobs(work, tuple(args.ssvep_windows)),
            "mi": lambda: mi_jobs(work),
            "emg": lambda: emg_jobs(work),
            "continuous": lambda: continuous_jobs(work),
            "spindle": lambda: spindle_jobs(work),
        }
        for paradigm in args.paradigms:
            try:
                jobs = list(makers[paradigm]())
            except Exception as err:  # noqa: BLE001  (a missing data folder or converter failure: skip, named)
                errors[paradigm] = f"{type(err).__name__}: {err}"
                print(f"  {paradigm}: skipped ({errors[paradigm]})", file=sys.stderr, flush=True)
                continue
            for job in jobs:
                key = f"{job.paradigm}/{job.method} {job.label}".strip()
                try:
                    row = run_job(job, work, args.n, args.seed)
                except Exception as err:  # noqa: BLE001  (a failing method is reported, the rest still run)
                    errors[key] = f"{type(err).__name__}: {err}"
                    print(f"  {key}: FAILED {errors[key]}", file=sys.stderr, flush=True)
                    traceback.print_exc(file=sys.stderr)
                    continue
                rows.append(row)
                print(
                    f"  {key}: trained in {row['train_s']:.1f} s, CPU p99 {row['cpu_p99_ms']:.2f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    load_after = os.getloadavg()

    print(f"\nInference per decision, single thread, {args.n} decisions each (model file through load_decoder)")
    print(
        f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} on {os.cpu_count()} CPUs"
    )
    head = (
        f"{'paradigm':<11}{'method':<11}{'window':>8}{'shape':>11}{'runtime':>13}"
        f"{'wall med':>10}{'wall p99':>10}{'cpu med':>10}{'cpu p99':>10}  <5 ms"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        shape = "x".join(str(s) for s in r["window_shape"])
        print(
            f"{r['paradigm']:<11}{r['method']:<11}{r['window_s']:>7.3g}s{shape:>11}{r['runtime']:>13}"
            f"{r['wall_median_ms']:>10.3f}{r['wall_p99_ms']:>10.3f}{r['cpu_median_ms']:>10.3f}{r['cpu_p99_ms']:>10.3f}"
            f"  {'yes' if r['cpu_p99_under_budget'] else 'NO'}"
        )
    for k, v in errors.items():
        print(f"{k}: not measured ({v})")
    print(f"(total {time.monotonic() - t_start:.0f} s; times in ms)")
    if args.json:
        print(
            json.dumps(
                {
                    "budget_ms": BUDGET_MS,
                    "n": args.n,
                    "loadavg_before": list(load_before),
                    "loadavg_after": list(load_after),
                    "cpus": os.cpu_count(),
                    "results": rows,
                    "errors": errors,
                }
            )
        )
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
