"""NMES knee-angle tracking: RISE with empirical gains vs RISE with GA-tuned gains vs PID.

For each simulated subject (seeded parameter spread, :func:`~stimulation.nmes.knee_model.draw_subjects`):

1. log "past sessions" on the subject's knee model (:func:`~stimulation.nmes.sysid.log_sessions`);
2. train the NARX MLP with torch, export it to ONNX, load it with onnxruntime;
3. tune the RISE gains with the genetic algorithm against the NARX model
   (:func:`~stimulation.nmes.ga.tune_rise_gains`; the empirical sets seed the first generation);
4. run every controller on the *true* knee model (fatigue on, sensor noise, a fresh seed): a
   10-40° sine (period 6 s) and a 10° -> 40° step at 1 s, and compute the RMSE of the knee angle.

Controllers: the empirical RISE sets of :data:`~stimulation.nmes.rise.EMPIRICAL_GAINS` and the
PID :data:`~stimulation.nmes.pid.BASELINE_PID` (the *baselines*: gains from a few live
trial-and-error runs on the nominal subject), the subject's GA-tuned RISE gains, and two
*reference* rows a clinic could not afford (exhaustive 64-72-trial live grids on the nominal
subject: :data:`~stimulation.nmes.rise.GRID_TUNED_RISE`, :data:`~stimulation.nmes.pid.GRID_TUNED_PID`).

Prints one table (mean ± sd over subjects, degrees) or, with ``--json``, one JSON object; saves a
PNG of target vs measured angle for the first subject (``--png``).

Usage::

    python benchmarks/nmes_rise.py [--subjects 5] [--generations 50] [--population 50] [--json] [--png PATH]

Defaults are the paper-order GA settings (population 50, 50 generations, mutation 0.1); on one
shared core the run takes about 4-9 minutes (40-100 s per subject). ``--quick`` (2 subjects,
15 generations, shorter logs and training) takes about 30 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.bench_latency import machine_info, stdout_to_stderr
from stimulation.nmes.closed_loop import ClosedLoopResult, run_closed_loop
from stimulation.nmes.ga import PAPER_GA_SETTINGS, GaSettings, tune_rise_gains
from stimulation.nmes.knee_model import KneeModel, KneeParams, draw_subjects
from stimulation.nmes.pid import BASELINE_PID, GRID_TUNED_PID, PidController
from stimulation.nmes.references import sine_reference, step_reference
from stimulation.nmes.rise import EMPIRICAL_GAINS, GRID_TUNED_RISE, RiseController, RiseGains
from stimulation.nmes.sysid import NarxConfig, NarxOnnx, export_narx_onnx, free_run_rmse, log_sessions, train_narx

DT_S = 0.005
PAPER_RMSE_DEG = {"ga_tuned": [3.0, 6.0], "empirical": [8.0, 11.0]}


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


#: Controllers a clinic has: the empirical RISE sets and the PID baseline (few live trials each).
BASELINES = (*EMPIRICAL_GAINS, "pid")
#: Reference rows: exhaustive live grids on the nominal subject (70 trials; not clinically affordable).
REFERENCES = ("rise_grid", "pid_grid")


def _controllers(ga_gains: RiseGains, with_references: bool) -> dict[str, Any]:
    ctrls: dict[str, Any] = {name: RiseController(g, DT_S) for name, g in EMPIRICAL_GAINS.items()}
    ctrls["rise_ga"] = RiseController(ga_gains, DT_S)
    ctrls["pid"] = PidController(BASELINE_PID, DT_S)
    if with_references:
        ctrls["rise_grid"] = RiseController(GRID_TUNED_RISE, DT_S)
        ctrls["pid_grid"] = PidController(GRID_TUNED_PID, DT_S)
    return ctrls


def run_subject(
    index: int,
    params: KneeParams,
    *,
    seed: int,
    settings: GaSettings,
    narx_config: NarxConfig,
    log_s: float,
    sine_s: float,
    step_s: float,
    workdir: Path,
    with_references: bool = True,
) -> tuple[dict[str, Any], dict[str, dict[str, ClosedLoopResult]]]:
    """Identify, tune and evaluate one subject; returns its JSON record and the traces."""
    t0 = time.perf_counter()
    log = log_sessions(params, seed=seed * 1000 + index, duration_s=log_s)
    val = log_sessions(params, seed=seed * 1000 + index + 500, duration_s=min(60.0, log_s / 3))
    t_log = time.perf_counter() - t0
    t0 = time.perf_counter()
    mlp = train_narx(log, narx_config, seed=seed + index)
    path = export_narx_onnx(mlp, workdir / f"narx_subject{index}.onnx", training_data=f"simulated subject {index}")
    narx = NarxOnnx(path)
    t_train = time.perf_counter() - t0
    firsts = [log.theta_deg[log.segment == s][0] for s in np.unique(log.segment)]
    theta0 = float(np.median(firsts))
    t0 = time.perf_counter()
    ga = tune_rise_gains(
        narx,
        theta0_deg=theta0,
        settings=settings,
        seed=seed + index,
        seed_gains=list(EMPIRICAL_GAINS.values()),
    )
    t_ga = time.perf_counter() - t0
    t_sine = np.arange(0.0, sine_s, DT_S)
    t_step = np.arange(0.0, step_s, DT_S)
    refs = {"sine": sine_reference(t_sine), "step": step_reference(t_step)}
    traces: dict[str, dict[str, ClosedLoopResult]] = {}
    rmse: dict[str, dict[str, float]] = {}
    for name, ctrl in _controllers(ga.best, with_references).items():
        traces[name] = {}
        rmse[name] = {}
        for ref_name, ref in refs.items():
            model = KneeModel(params, fatigue=True, noise=True, seed=seed * 7919 + index)
            res = run_closed_loop(ctrl, model, ref, dt_s=DT_S)
            traces[name][ref_name] = res
            rmse[name][ref_name] = res.rmse_deg()
    record = {
        "subject": index,
        "params": {k: round(v, 4) for k, v in params.__dict__.items()},
        "narx_free_run_rmse_deg": {"train": free_run_rmse(narx, log), "validation": free_run_rmse(narx, val)},
        "ga": {
            "best_gains": ga.best.__dict__,
            "best_cost_deg": ga.best_cost,
            "initial_best_cost_deg": ga.initial_best_cost,
            "history": ga.history,
            "evaluations": ga.evaluations,
        },
        "rmse_deg": rmse,
        "final_fitness": {name: float(tr["sine"].fitness[-1]) for name, tr in traces.items()},
        "seconds": {"log": t_log, "train": t_train, "ga": t_ga},
    }
    return record, traces


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, sd, min, max of each controller's RMSE per reference, degrees."""
    names = list(records[0]["rmse_deg"])
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        out[name] = {}
        for ref in ("sine", "step"):
            v = np.array([r["rmse_deg"][name][ref] for r in records])
            out[name][ref] = {
                "mean": float(v.mean()),
                "sd": float(v.std()),
                "min": float(v.min()),
                "max": float(v.max()),
            }
    return out


def format_table(result: dict[str, Any]) -> str:
    """The printed table."""
    lines = [
        f"NMES knee tracking, {result['n_subjects']} simulated subjects (fatigue on), RMSE in degrees "
        f"(mean ± sd [min-max]); GA population {result['ga_settings']['population']}, "
        f"{result['ga_settings']['generations']} generations",
        f"{'controller':<14}{'sine 10-40°':>28}{'step 40°':>28}",
    ]
    for name, s in result["summary"].items():
        cells = [
            f"{s[r]['mean']:.2f} ± {s[r]['sd']:.2f} [{s[r]['min']:.1f}-{s[r]['max']:.1f}]" for r in ("sine", "step")
        ]
        lines.append(f"{name:<14}{cells[0]:>28}{cells[1]:>28}")
    n = result["n_subjects"]
    for label, w in result["wins"].items():
        lines.append(
            f"GA-tuned RISE beats all {label} ({', '.join(w['against'])}): sine in {w['sine']}/{n} subjects, "
            f"step in {w['step']}/{n}; on the mean: sine {w['sine_mean']}, step {w['step_mean']}"
        )
    lines.append(
        f"Paper (Arcolezi et al. 2021, real subjects): GA-tuned {PAPER_RMSE_DEG['ga_tuned'][0]:g}-"
        f"{PAPER_RMSE_DEG['ga_tuned'][1]:g}°, empirical {PAPER_RMSE_DEG['empirical'][0]:g}-"
        f"{PAPER_RMSE_DEG['empirical'][1]:g}°"
    )
    lines.append(f"total {result['seconds']:.0f} s")
    return "\n".join(lines)


def save_png(traces: dict[str, dict[str, ClosedLoopResult]], path: Path, subject: int) -> None:
    """Target vs measured angle of every controller for one subject (sine and step panels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=False)
    for ax, ref in zip(axes, ("sine", "step"), strict=True):
        first = next(iter(traces.values()))[ref]
        ax.plot(first.t_s, first.reference_deg, "k--", lw=1.5, label="target")
        for name, tr in traces.items():
            r = tr[ref]
            ax.plot(r.t_s, r.measured_deg, lw=0.9, label=f"{name} ({r.rmse_deg():.1f}°)")
        ax.set_ylabel("knee angle (deg)")
        ax.set_title(f"subject {subject}: {ref}")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole benchmark; returns the JSON-able result."""
    import torch

    torch.set_num_threads(1)
    settings = GaSettings(
        population=args.population,
        generations=args.generations,
        mutation_rate=PAPER_GA_SETTINGS.mutation_rate,
        crossover_rate=PAPER_GA_SETTINGS.crossover_rate,
    )
    narx_config = NarxConfig() if not args.quick else NarxConfig(one_step_epochs=10, rollout_iters=300)
    subjects = draw_subjects(args.subjects, args.seed)
    t_start = time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory(prefix="closedloop-nmes-") as tmp:
        for i, params in enumerate(subjects):
            _progress(f"subject {i + 1}/{len(subjects)}: logging, NARX training, GA, evaluation ...")
            record, traces = run_subject(
                i,
                params,
                seed=args.seed,
                settings=settings,
                narx_config=narx_config,
                log_s=args.log_s,
                sine_s=args.sine_s,
                step_s=args.step_s,
                workdir=Path(tmp),
                with_references=not args.no_references,
            )
            records.append(record)
            _progress(
                "  "
                + ", ".join(f"{n}: sine {v['sine']:.2f} step {v['step']:.2f}" for n, v in record["rmse_deg"].items())
            )
            if i == 0 and args.png:
                save_png(traces, Path(args.png), i)
    summary = summarise(records)
    wins: dict[str, Any] = {}
    for label, group in (("baselines", BASELINES), ("references", REFERENCES)):
        others = [n for n in group if n in summary]
        if not others:
            continue
        wins[label] = {"against": others}
        for ref in ("sine", "step"):
            wins[label][ref] = sum(
                all(r["rmse_deg"]["rise_ga"][ref] < r["rmse_deg"][o][ref] for o in others) for r in records
            )
            wins[label][f"{ref}_mean"] = all(summary["rise_ga"][ref]["mean"] < summary[o][ref]["mean"] for o in others)
    return {
        "benchmark": "nmes_rise",
        "n_subjects": len(subjects),
        "seed": args.seed,
        "ga_settings": settings.__dict__,
        "narx_config": {**narx_config.__dict__, "hidden": list(narx_config.hidden)},
        "trajectories": {
            "sine": {"low_deg": 10, "high_deg": 40, "period_s": 6, "duration_s": args.sine_s},
            "step": {"from_deg": 10, "to_deg": 40, "at_s": 1, "duration_s": args.step_s},
        },
        "summary": summary,
        "wins": wins,
        "paper_rmse_deg": PAPER_RMSE_DEG,
        "subjects": records,
        "png": args.png,
        "seconds": time.perf_counter() - t_start,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        description="RMSE of RISE (empirical / GA-tuned gains) and PID on simulated knees."
    )
    parser.add_argument("--subjects", type=int, default=5, help="simulated subjects (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of subjects, data, GA and noise (default 0)")
    parser.add_argument("--population", type=int, default=PAPER_GA_SETTINGS.population, help="GA population")
    parser.add_argument("--generations", type=int, default=PAPER_GA_SETTINGS.generations, help="GA generations")
    parser.add_argument("--log-s", type=float, default=300.0, help="seconds of logged sessions per subject")
    parser.add_argument("--sine-s", type=float, default=30.0, help="length of the sine trial, s")
    parser.add_argument("--step-s", type=float, default=20.0, help="length of the step trial, s")
    parser.add_argument("--png", default="nmes_rise.png", help="PNG of target vs measured for subject 0 ('' = none)")
    parser.add_argument("--quick", action="store_true", help="2 subjects, 15 generations, shorter logs and training")
    parser.add_argument(
        "--no-references", action="store_true", help="skip the exhaustive-grid reference rows (rise_grid, pid_grid)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.quick:
        args.subjects = min(args.subjects, 2)
        args.generations = min(args.generations, 15)
        args.log_s = min(args.log_s, 200.0)
    redirect = stdout_to_stderr() if args.json else contextlib.nullcontext()
    with redirect:
        result = run(args)
    result["machine"] = machine_info()
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
