"""Scripted pick task in simulation: perfect commands (lower bound) vs commands decoded from real EMG.

The virtual participant drives to the table, raises the lift, extends the arm, closes the gripper
on the box and lifts it (:mod:`stimulation.teleop.task`, mapping ``configs/teleop_flexemg.toml``).
The *perfect* run sends the intended label with confidence 1 every 50 ms. The *decoded* run
(``--model``) performs each gesture with real EMG: the steady part (1-4 s after onset, as the
training spec cuts epochs) of every trial of that gesture in the flexemg test block
(../shared/data/flexemg_hdemg/001-Session1Test, not used for training), cycled in order, pushed
through a real LSL outlet -> inlet -> causal filters -> the EMG decoder -> bridge -> MuJoCo.

Usage::

    python benchmarks/teleop_task.py [--model emg_lda.onnx] [--lead-s 0.0] [--strip task.png] [--gif task.gif]
                                     [--log commands.jsonl] [--json]

Train a model first with ``closedloop train emg --method lda --dataset flexemg_train.toml --out emg_lda.onnx``
(``benchmarks/convert_flexemg.py`` writes the spec). Prints a table (or JSON with ``--json``):
success, completion time (s, simulated), per-step end times, commands taken/refused, bridge
latency (command received -> back-end call, ms) and how far the object was lifted (m).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from stimulation.teleop.mapping import load_teleop_config  # noqa: E402
from stimulation.teleop.task import PerfectCommands, TaskResult, default_steps, run_task  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "flexemg_hdemg" / "001-Session1Test"
CONFIG = REPO / "configs" / "teleop_flexemg.toml"


def load_segments(folder: Path, t0: float = 1.0, t1: float = 4.0) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """Per gesture, the [t0, t1] s part after each onset in every trial of ``folder`` (µV)."""
    from convert_flexemg import SRATE, channel_names, read_trial

    files = sorted(folder.glob("*.mat"))
    if not files:
        raise FileNotFoundError(f"no flexemg trials (*.mat) in {folder}")
    segs: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    for f in files:
        emg, ann = read_trial(f)
        for onset, _dur, name in ann:
            if name == "rest_end":
                continue
            a, b = round((onset + t0) * SRATE), round((onset + t1) * SRATE)
            segs[name].append(emg[a:b])
    return dict(segs), channel_names()


def summarize(name: str, r: TaskResult, wall_s: float) -> dict:
    """JSON-able summary of one run."""
    log = r.bridge.log
    lat = r.bridge.latencies_ms()
    steps = default_steps()
    cmd_entries = [e for e in log if e.kind]
    return {
        "run": name,
        "success": bool(r.success),
        "completion_s": round(float(r.completion_s), 3),
        "object_lift_m": round(r.object_lift_m, 4),
        "corrections": r.corrections,
        "steps": [{"step": s.name, "end_s": round(t, 3)} for s, t in zip(steps, r.step_times_s, strict=False)],
        "n_commands": len(cmd_entries),
        "n_taken": sum(e.decision == "taken" for e in cmd_entries),
        "n_refused": sum(e.decision == "refused" for e in cmd_entries),
        "refused_reasons": dict(
            collections.Counter(e.reason.split(" ")[0] for e in cmd_entries if e.decision == "refused")
        ),
        "n_safety_events": sum(e.decision == "safety" for e in log),
        "labels": dict(collections.Counter(str(e.label) for e in cmd_entries)),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 4) if lat.size else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 4) if lat.size else None,
        "wall_s": round(wall_s, 2),
    }


def write_strip(frames: list[np.ndarray], path: Path, cols: int = 6) -> None:
    """Tile frames (H × W × 3) into one PNG, ``cols`` per row."""
    import imageio.v3 as iio

    h, w, _ = frames[0].shape
    rows = -(-len(frames) // cols)
    canvas = np.full((rows * h, cols * w, 3), 255, dtype=np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, cols)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = f
    iio.imwrite(path, canvas)


def write_gif(frames: list[np.ndarray], path: Path, fps: float) -> None:
    """Animated GIF of the frames."""
    import imageio.v3 as iio

    iio.imwrite(path, np.stack(frames), duration=1000.0 / fps, loop=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="trained EMG model (.onnx); without it only the perfect run is made")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="flexemg test trials folder")
    ap.add_argument("--config", type=Path, default=CONFIG, help="teleop mapping TOML")
    ap.add_argument("--lead-s", type=float, default=0.0, help="decoded run: participant lets go this early (s)")
    ap.add_argument("--strip", type=Path, help="write a PNG frame strip of the perfect run")
    ap.add_argument("--gif", type=Path, help="write an animated GIF of the perfect run")
    ap.add_argument("--frame-every-s", type=float, default=1.0, help="simulated s between frames")
    ap.add_argument("--camera", default="task", help="camera of the strip/GIF: task, overview, side, head_cam")
    ap.add_argument("--log", type=Path, help="write every command record (decision, latency, effect) as JSONL")
    ap.add_argument("--timeout-s", type=float, default=120.0, help="simulated time limit per run")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    cfg = load_teleop_config(args.config)
    want_frames = args.strip is not None or args.gif is not None
    runs: list[tuple[str, TaskResult, float]] = []

    t = time.perf_counter()
    perfect = run_task(
        PerfectCommands(),
        config=cfg,
        timeout_s=args.timeout_s,
        frame_every_s=args.frame_every_s if want_frames else None,
        camera=args.camera,
    )
    runs.append(("perfect", perfect, time.perf_counter() - t))
    if args.model is not None:
        from stimulation.teleop.emg_replay import EmgReplaySource

        segs, ch = load_segments(args.data)
        src = EmgReplaySource(str(args.model), segs, ch, 1000.0)
        t = time.perf_counter()
        decoded = run_task(src, config=cfg, lead_s=args.lead_s, timeout_s=args.timeout_s)
        runs.append(("decoded_emg", decoded, time.perf_counter() - t))
        transit_ms = np.asarray(src.transit_s) * 1e3
        src.close()
    if want_frames:
        if args.strip is not None:
            write_strip(perfect.frames, args.strip)
        if args.gif is not None:
            write_gif(perfect.frames, args.gif, fps=4.0)
    if args.log is not None:
        with args.log.open("w") as f:
            for name, r, _ in runs:
                for rec in r.bridge.records:
                    f.write(json.dumps({"run": name, **rec.to_dict()}) + "\n")
                for e in r.bridge.log:
                    if e.decision == "safety":
                        f.write(json.dumps({"run": name, **e.to_dict()}) + "\n")
    summaries = [summarize(n, r, w) for n, r, w in runs]
    if args.model is not None:
        summaries[1]["lsl_hop_transit_ms_p50"] = round(float(np.percentile(transit_ms, 50)), 3)
        summaries[1]["lsl_hop_transit_ms_p99"] = round(float(np.percentile(transit_ms, 99)), 3)
    out = {
        "runs": summaries,
        "lower_bound_s": summaries[0]["completion_s"],
        "decoded_s": summaries[1]["completion_s"] if len(summaries) > 1 else None,
        "model": str(args.model) if args.model else None,
        "data": str(args.data) if args.model else None,
        "lead_s": args.lead_s,
        "strip": str(args.strip) if args.strip else None,
        "gif": str(args.gif) if args.gif else None,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{'run':<12} {'ok':<4} {'time s':>7} {'lift m':>7} {'cmds':>5} {'taken':>5} {'refused':>7} "
              f"{'lat p50 ms':>10} {'lat p99 ms':>10}")  # fmt: skip
        for s in summaries:
            print(
                f"{s['run']:<12} {'yes' if s['success'] else 'NO':<4} {s['completion_s']:>7.2f} "
                f"{s['object_lift_m']:>7.3f} "
                f"{s['n_commands']:>5} {s['n_taken']:>5} {s['n_refused']:>7} {s['latency_ms_p50']:>10.3f} "
                f"{s['latency_ms_p99']:>10.3f}"
            )
        print("\nstep end times (s, simulated):")
        names = [st["step"] for st in summaries[0]["steps"]]
        for i, n in enumerate(names):
            cells = [f"{s['steps'][i]['end_s']:7.2f}" if i < len(s["steps"]) else "      -" for s in summaries]
            print(f"  {n:<24} " + " ".join(cells))
        for s in summaries:
            print(f"{s['run']}: refused {s['refused_reasons']}, labels {s['labels']}")
    return 0 if all(s["success"] for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
