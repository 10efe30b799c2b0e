"""Spindle detection on DREAMS excerpts 1-5: leave-one-excerpt-out Portiloop vs YASA vs the database's detector.

For each excerpt, the Portiloop detector is trained on the other four (``fit_portiloop``, CPU,
single thread) and run causally over the held-out excerpt (``evaluate_spindle``: the online
detector fed in chunks at the excerpt's own rate). The peers are scored on the same held-out
excerpt with the same one-to-one IoU >= 0.2 matching: YASA ``spindles_detect`` (offline,
zero-phase filters, default settings; excerpt 3 is upsampled 50 -> 100 Hz for it) and the
database's own automatic detections. Reference: expert 1 united with expert 2.

Also measured: time per decision of the session runtime (``SpindleGruDecoder.predict`` with one
24 ms hop of new samples; front end + one GRU step + event logic) and of the bare ONNX step,
p50/p99 on one thread; ONNX-vs-torch parity of the step graph over 500 steps with the hidden
state carried.

Usage::

    python benchmarks/spindle_real.py [--iterations 2000] [--excerpts 1 2 3 4 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from convert_dreams import DEFAULT_SRC, convert  # noqa: E402

from decoders.card import read_card  # noqa: E402
from decoders.dataset import load_spec  # noqa: E402
from decoders.spindle.data import SpindleOptions, load_spindle_recordings  # noqa: E402
from decoders.spindle.evaluation import evaluate_spindle  # noqa: E402
from decoders.spindle.events import EventScore  # noqa: E402


def yasa_events(signal: np.ndarray, sfreq: float) -> list[list[float]]:
    """YASA spindles_detect with default settings (offline); [start_s, end_s] per spindle."""
    import yasa
    from scipy.signal import resample_poly

    x, sf = signal, sfreq
    if sf < 100:  # YASA's 1-30 Hz broad band needs Nyquist > 30 Hz
        factor = int(np.ceil(100 / sf))
        x, sf = resample_poly(x, factor, 1), sf * factor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp = yasa.spindles_detect(x, sf, verbose=False)
    return [] if sp is None else sp.summary()[["Start", "End"]].to_numpy().tolist()


def timing(model_path: Path, n_calls: int = 3000) -> dict[str, float]:
    """p50/p99 (ms) per decision of the session runtime and of the bare ONNX step, one thread."""
    from decoders.spindle.runtime import SpindleGruDecoder

    card = read_card(model_path)
    dec = SpindleGruDecoder(model_path, card)
    rng = np.random.default_rng(0)
    n, hop = card.n_window_samples, round(card.hop_s * card.srate)
    stream = rng.normal(0, 20, n + hop * (n_calls + 1)).astype(np.float32)
    times = []
    for k in range(n_calls + 1):
        w = stream[k * hop : k * hop + n, None]
        t0 = time.perf_counter()
        dec.predict(w)
        times.append(time.perf_counter() - t0)
    t = np.array(times[1:]) * 1e3
    step = dec.model
    win = rng.normal(0, 1, (1, 54)).astype(np.float32)
    h = np.zeros((1, step.hidden_size), dtype=np.float32)
    st = []
    for _ in range(n_calls):
        t0 = time.perf_counter()
        _, h = step.step(win, h)
        st.append(time.perf_counter() - t0)
    s = np.array(st) * 1e3
    return {
        "decision_p50_ms": float(np.percentile(t, 50)),
        "decision_p99_ms": float(np.percentile(t, 99)),
        "onnx_step_p50_ms": float(np.percentile(s, 50)),
        "onnx_step_p99_ms": float(np.percentile(s, 99)),
    }


def parity(net: Any, model_path: Path, n_steps: int = 500) -> float:
    """Max |ONNX - torch| over ``n_steps`` steps of 7 copies with the hidden state carried."""
    import torch

    from decoders.spindle.detector import OrtStepModel
    from decoders.spindle.network import StepGraph

    ort_step = OrtStepModel(model_path)
    graph = StepGraph(net).eval()
    rng = np.random.default_rng(1)
    h_o = np.zeros((7, net.hidden_size), dtype=np.float32)
    h_t = torch.zeros(7, net.hidden_size)
    worst = 0.0
    with torch.no_grad():
        for _ in range(n_steps):
            w = rng.normal(0, 1, (7, net.window)).astype(np.float32)
            p_o, h_o = ort_step.step(w, h_o)
            p_t, h_t = graph(torch.from_numpy(w), h_t)
            worst = max(worst, float(np.abs(p_o - p_t.numpy()).max()), float(np.abs(h_o - h_t.numpy()).max()))
    return worst


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Convert, train/evaluate every fold, score the peers; return the JSON-able results."""
    import torch

    from decoders.spindle.training import fit_portiloop, write_model

    torch.set_num_threads(1)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="spindle_real_"))
    spec_path = convert(args.src, work / "fif", args.excerpts, echo=lambda line: print(line, file=sys.stderr))
    spec = load_spec(spec_path)
    options = {"iterations": args.iterations}
    opts = SpindleOptions.from_spec(spec, options)
    recs = load_spindle_recordings(spec, opts)
    pooled = {"portiloop": EventScore(), "yasa": EventScore(), "dreams_automatic": EventScore()}
    folds = []
    model_path = None
    net = None
    for i, held in enumerate(spec.recordings):
        t0 = time.monotonic()
        train_spec = spec.with_recordings([r for r in spec.recordings if r is not held])
        test_spec = spec.with_recordings([held])
        net, card, _summary = fit_portiloop(train_spec, options, seed=args.seed)
        model_path = work / f"portiloop_without_{held.group}.onnx"
        write_model(net, card, model_path)
        train_s = time.monotonic() - t0
        res = evaluate_spindle(model_path, card, test_spec)
        rec = recs[i]
        dets = res["detections"][str(rec.path)]
        fold: dict[str, Any] = {"excerpt": held.group, "threshold": card.provenance["detector"]["threshold"]}
        fold["train_s"] = round(train_s, 1)
        fold["portiloop"] = {k: res[k] for k in ("precision", "recall", "f1", "median_delay_s", "p90_delay_s")}
        pooled["portiloop"].add(dets, rec.reference)
        for name, events in (("yasa", yasa_events(rec.signal, rec.sfreq)), ("dreams_automatic", rec.automatic)):
            s = EventScore()
            s.add(events, rec.reference)
            pooled[name].add(events, rec.reference)
            fold[name] = {k: v for k, v in s.summary().items() if k in fold["portiloop"]}
        folds.append(fold)
        print(
            f"fold {held.group}: portiloop F1 {fold['portiloop']['f1']:.3f}, yasa F1 {fold['yasa']['f1']:.3f} "
            f"({train_s:.0f} s)",
            file=sys.stderr,
        )
    assert model_path is not None and net is not None
    results: dict[str, Any] = {
        "folds": folds,
        "pooled": {k: v.summary() for k, v in pooled.items()},
        "timing": timing(model_path),
        "onnx_torch_max_abs_diff": parity(net, model_path),
        "iterations": args.iterations,
        "reference": "expert 1 united with expert 2 (excerpts 1-5)",
    }
    return results


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v * 100:5.1f}" if pct else f"{v:5.3f}"


def print_table(res: dict[str, Any]) -> None:
    """Human-readable table on stdout."""
    methods = ("portiloop", "yasa", "dreams_automatic")
    print("Spindle detection, DREAMS excerpts, leave-one-excerpt-out (IoU >= 0.2, one-to-one)")
    print(f"{'excerpt':<10}" + "".join(f"{m + ' F1':>22}" for m in methods) + f"{'portiloop delay s':>20}")
    for f in res["folds"]:
        row = f"{f['excerpt']:<10}" + "".join(f"{_fmt(f[m]['f1']):>22}" for m in methods)
        print(row + f"{_fmt(f['portiloop']['median_delay_s']):>20}")
    print("pooled:")
    print(f"{'method':<18}{'precision':>10}{'recall':>10}{'F1':>8}{'median delay s':>16}{'p90 delay s':>14}")
    for m in methods:
        p = res["pooled"][m]
        print(
            f"{m:<18}{_fmt(p['precision']):>10}{_fmt(p['recall']):>10}{_fmt(p['f1']):>8}"
            f"{_fmt(p['median_delay_s']):>16}{_fmt(p['p90_delay_s']):>14}"
        )
    t = res["timing"]
    print(
        f"per decision (1 thread): runtime p50 {t['decision_p50_ms']:.3f} ms p99 {t['decision_p99_ms']:.3f} ms; "
        f"ONNX step p50 {t['onnx_step_p50_ms']:.3f} ms p99 {t['onnx_step_p99_ms']:.3f} ms"
    )
    print(f"ONNX vs torch max |diff| over 500 steps with hidden state: {res['onnx_torch_max_abs_diff']:.2e}")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--work", default=None, help="folder for converted files and models (default: a temp dir)")
    ap.add_argument("--excerpts", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    args = ap.parse_args(argv)
    if not args.src.is_dir():
        print(f"spindle_real: DREAMS folder {args.src} is absent", file=sys.stderr)
        return 2
    res = run(args)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print_table(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
