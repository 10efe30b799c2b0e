"""``closedloop`` command line: devices, demo, record, replay, run, bench.

Exit codes: 0 success, 1 runtime failure (session fault, demo below target), 2 bad usage or
bad input (malformed config, unknown source, unreadable file, model card mismatch).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Quiet liblsl's INFO lines on stderr unless the user has their own liblsl config; must happen before pylsl loads.
os.environ.setdefault("LSLAPICFG", str(Path(__file__).with_name("lsl_api.cfg")))

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.toml"

log = logging.getLogger("closedloop")


class UsageError(Exception):
    """Bad command-line input; printed without a traceback, exit code 2."""


# ---------------------------------------------------------------------------- helpers
def _install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _status_line(session: Any, extra: str = "") -> str:
    st = session.status()
    parts = [f"[{st['uptime_s']:6.1f}s] {st['state']}"]
    for sname, src in st["sources"].items():
        for strm in src["streams"].values():
            if "data_age_s" in strm:
                age = strm["data_age_s"]
                age_txt = f"{age * 1e3:.0f}ms" if age is not None else "-"
                conn = "" if strm["connected"] else " DISCONNECTED"
                parts.append(f"{sname}: {strm['samples']} smp age {age_txt} gaps {strm['gaps']}{conn}")
                break
    lat = st["latency"]
    if lat["n"]:
        parts.append(f"cmds {st['commands']} p50 {lat['p50_ms']:.1f}ms p99 {lat['p99_ms']:.1f}ms")
    for pname, p in st["pipelines"].items():
        if p["last_label"] is not None:
            parts.append(f"{pname}={p['last_label']}")
    if st["errors"]:
        parts.append(f"ERRORS {len(st['errors'])}: {st['errors'][-1]['where']}")
    if extra:
        parts.append(extra)
    return " | ".join(parts)


def _printer(stream: Any = None) -> Any:
    out = stream or sys.stdout
    tty = out.isatty()

    def show(text: str, final: bool = False) -> None:
        if tty:
            out.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            out.write(text + "\n")
        out.flush()

    return show


# ---------------------------------------------------------------------------- devices
def cmd_devices(args: argparse.Namespace) -> int:
    """List LSL streams and BrainFlow boards."""
    from acquisition.brainflow_source import list_boards
    from acquisition.lsl_source import list_lsl_streams

    streams = list_lsl_streams(args.wait)
    boards = list_boards()
    if args.json:
        print(json.dumps({"lsl_streams": streams, "brainflow_boards": boards}, indent=2))
        return 0
    print(f"LSL streams on the network ({len(streams)}, searched {args.wait:.1f} s):")
    if not streams:
        print("  (none)")
    for s in streams:
        print(
            f"  {s['name']:<30} type={s['type']:<10} {s['channels']:>3} ch @ {s['srate']:g} Hz  "
            f"source_id={s['source_id']!r} host={s['hostname']}"
        )
    print(f"\nBrainFlow boards ({len(boards)}; use as brainflow:BOARD_ID):")
    for b in boards:
        rate = f"{b['sampling_rate']:g} Hz" if b.get("sampling_rate") else "rate of master board"
        print(f"  {b['id']:>4}  {b['name']:<32} {rate:<22} eeg={b.get('n_eeg', 0)}")
    return 0


# ---------------------------------------------------------------------------- demo
def demo_ground_truth(session: Any) -> dict[str, Any]:
    """Compare every command with the simulator's ground truth over the command's window.

    Windows that straddle two trials are *ambiguous* and not scored.
    """
    from acquisition.simulator import SimulatedSource

    matched = scored = ambiguous = 0
    per_class: dict[str, list[int]] = {}
    for name, pipe in session.pipelines.items():
        src = session.sources[session.config.pipelines[name].source]
        if not isinstance(src, SimulatedSource):
            continue
        gen = src.generator
        n_win = pipe.window
        for cmd in session.all_commands:
            if cmd.pipeline != name:
                continue
            end = round((cmd.sample_time - src.t0) * gen.srate)
            first, last = gen.label_at(end - n_win + 1), gen.label_at(end)
            if first is None or first != last:
                ambiguous += 1
                continue
            scored += 1
            ok = cmd.label == last
            matched += ok
            per_class.setdefault(last, [0, 0])
            per_class[last][0] += ok
            per_class[last][1] += 1
    return {
        "scored": scored,
        "matched": matched,
        "ambiguous": ambiguous,
        "accuracy": matched / scored if scored else float("nan"),
        "per_class": {k: v[0] / v[1] for k, v in sorted(per_class.items())},
    }


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the embedded default closed loop on the simulator and score it against ground truth."""
    from app.session import Session

    config = Path(args.config) if args.config else DEMO_CONFIG
    session = Session.from_file(config, record_path=args.record)
    session.keep_all_commands = True
    show = _printer()
    stop = threading.Event()
    _install_signal_handlers(stop)
    print(f"closedloop demo: {config.name}, {args.seconds:g} s on the simulated source (Ctrl-C stops early)")
    session.open()
    for name, card in session.cards.items():
        print(
            f"  pipeline {name!r}: {card.paradigm} model, classes {list(card.classes)}, "
            f"window {card.window_s:g} s, hop {session.pipelines[name].settings.hop_s:g} s"
        )

    def tick(s: Any) -> None:
        gt = demo_ground_truth(s)
        extra = f"match {gt['matched']}/{gt['scored']}" if gt["scored"] else ""
        show(_status_line(s, extra))

    session.run(args.seconds, on_tick=tick, stop_event=stop)
    show(_status_line(session), final=True)
    gt = demo_ground_truth(session)
    st = session.status()
    lat = st["latency"]
    print("\nSummary")
    print(f"  commands decoded     {st['commands']}")
    print(f"  scored vs truth      {gt['scored']} (ambiguous windows spanning two targets: {gt['ambiguous']})")
    acc = gt["accuracy"]
    print(f"  matched ground truth {gt['matched']} of {gt['scored']} = {acc * 100:.1f} %")
    for label, a in gt["per_class"].items():
        print(f"      {label:>8}: {a * 100:5.1f} %")
    if lat["n"]:
        print(
            f"  decision latency     p50 {lat['p50_ms']:.2f} ms  p95 {lat['p95_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms"
            f"  max {lat['max_ms']:.2f} ms  (n={lat['n']})"
        )
    if session.record_path is not None and session.recorder is not None:
        print(f"  recording            {session.record_path}")
    if args.json:
        print(json.dumps({"ground_truth": gt, "status": st}, default=str))
    if st["errors"]:
        print(f"  ERRORS: {st['errors']}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------- record
def source_config_from_spec(spec: str) -> dict[str, Any]:
    """Translate ``sim[:SCENARIO] | lsl:NAME | brainflow:BOARD_ID`` into a ``[sources.X]`` table."""
    kind, _, arg = spec.partition(":")
    if kind == "sim":
        return {"kind": "sim", "scenario": arg or "ssvep"}
    if kind == "lsl":
        if not arg:
            raise UsageError("source 'lsl:' needs a stream name, e.g. lsl:MyEEG (see `closedloop devices`).")
        return {"kind": "lsl", "name": arg}
    if kind == "brainflow":
        try:
            board = int(arg) if arg else -1
        except ValueError:
            raise UsageError(
                f"source 'brainflow:{arg}' needs an integer board id (e.g. brainflow:-1 for the synthetic board); "
                "see `closedloop devices`."
            ) from None
        return {"kind": "brainflow", "board_id": board}
    raise UsageError(
        f"unknown source {spec!r}; use one of: sim, sim:SCENARIO (ssvep|mi|spindle|emg|knee), "
        "lsl:NAME, brainflow:BOARD_ID."
    )


def cmd_record(args: argparse.Namespace) -> int:
    """Record a source to XDF for N seconds."""
    from app.config import parse_config
    from app.session import Session

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UsageError(f"--out {str(out)!r} already exists; choose another name or pass --overwrite.")
    if out.exists():
        out.unlink()
    cfg = parse_config({"session": {"name": "record"}, "sources": {"src": source_config_from_spec(args.source)}})
    session = Session(cfg, record_path=out)
    stop = threading.Event()
    _install_signal_handlers(stop)
    show = _printer()
    session.open()
    session.run(args.seconds, on_tick=lambda s: show(_status_line(s, f"-> {out}")), stop_event=stop)
    show(_status_line(session, f"-> {out}"), final=True)
    rec = session.recorder
    assert rec is not None  # record_path was given
    total = sum(s.stats.n_samples for src in session.sources.values() for s in src.streams.values())
    print(f"recorded {total} samples from {args.source} to {out} (lost in recorder: {rec.n_lost})")
    return 1 if session.errors else 0


# ---------------------------------------------------------------------------- replay
def cmd_replay(args: argparse.Namespace) -> int:
    """Replay an XDF file into the engine / onto LSL, optionally through a config's pipelines."""
    from acquisition.replay import ReplaySource

    path = Path(args.file)
    if args.fast:
        if not args.config:
            raise UsageError("--fast replays through pipelines: give --config F.toml with the pipelines to run.")
        return _replay_fast(args, path)
    if args.config:
        return _replay_session(args, path)
    src = ReplaySource(
        "replay", path, speed=args.speed, lsl=args.lsl, wait_consumers_s=args.wait_consumers if args.lsl else 0.0
    )
    src.open()
    if src.truncation_warning:
        print(f"warning: {src.truncation_warning}", file=sys.stderr)
    print(
        f"replaying {path.name}: {len(src.recorded)} streams, {src.duration_s:.1f} s at x{args.speed:g}"
        + (" (republished on LSL)" if args.lsl else "")
    )
    for r in src.recorded:
        print(
            f"  {r.info.name:<28} {r.info.type:<10} {r.info.n_channels:>3} ch @ {r.info.srate:g} Hz  "
            f"{r.n_samples} samples"
        )
    stop = threading.Event()
    _install_signal_handlers(stop)
    show = _printer()
    src.start()
    while not stop.is_set() and src.running:
        stop.wait(0.5)
        played = sum(s.stats.n_samples for s in src.streams.values())
        show(f"played {played} samples")
    src.close()
    played = sum(s.stats.n_samples for s in src.streams.values())
    show(f"played {played} samples", final=True)
    if src.error is not None:
        print(f"replay failed: {src.error!r}", file=sys.stderr)
        return 1
    return 0


def _replay_config(args: argparse.Namespace, path: Path) -> Any:
    from dataclasses import replace

    from app.config import SourceConfig, load_config

    cfg = load_config(args.config)
    first = next(iter(cfg.sources))
    src = SourceConfig(first, "replay", {"path": str(path.resolve()), "speed": args.speed})
    return replace(cfg, sources={first: src})


def _replay_session(args: argparse.Namespace, path: Path) -> int:
    from app.session import Session

    session = Session(_replay_config(args, path), record_path=args.record)
    stop = threading.Event()
    _install_signal_handlers(stop)
    show = _printer()
    session.open()
    session.run(None, on_tick=lambda s: show(_status_line(s)), stop_event=stop)
    show(_status_line(session), final=True)
    return 1 if session.errors else 0


def _replay_fast(args: argparse.Namespace, path: Path) -> int:
    from app.session import Session

    session = Session(_replay_config(args, path))
    session.open()
    commands = session.run_fast()
    st = session.status()
    print(
        f"replayed {path.name} as fast as possible: {session.fast_stats['recording_s']:.1f} s of data in "
        f"{session.fast_stats['wall_s']:.2f} s (x{session.fast_stats['speed_x']:.0f} real time), "
        f"{len(commands)} commands"
    )
    if args.commands_out:
        with open(args.commands_out, "w", encoding="utf-8") as f:
            for c in commands:
                f.write(c.to_json() + "\n")
        print(f"commands written to {args.commands_out}")
    return 1 if st["errors"] else 0


# ---------------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    """Run a headless session from a config file."""
    from app.session import Session

    session = Session.from_file(args.config, record_path=args.record)
    stop = threading.Event()
    _install_signal_handlers(stop)
    show = _printer()
    session.open()
    for name, card in session.cards.items():
        print(f"pipeline {name!r}: {card.paradigm} model, classes {list(card.classes)}")
    session.run(args.seconds, on_tick=lambda s: show(_status_line(s)), stop_event=stop)
    show(_status_line(session), final=True)
    st = session.status()
    print(json.dumps({"commands": st["commands"], "latency": st["latency"], "state": st["state"]}, default=str))
    if st["errors"]:
        for e in session.errors:
            print(f"error in {e['where']}: {e['error']}\n{e['traceback']}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------- daemon
def cmd_daemon(args: argparse.Namespace) -> int:
    """Run the headless daemon with its HTTP/JSON control API (see app/daemon.py)."""
    from app.daemon import run

    return run(args)


# ---------------------------------------------------------------------------- train / evaluate / gui
def cmd_train(args: argparse.Namespace) -> int:
    """Train a decoder from a dataset spec (see app/training_cli.py)."""
    from app.training_cli import cmd_train as run_train

    return run_train(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a model file on a dataset spec (see app/training_cli.py)."""
    from app.training_cli import cmd_evaluate as run_evaluate

    return run_evaluate(args)


def cmd_gui(args: argparse.Namespace) -> int:
    """Open the clinician GUI (see ui/main_window.py)."""
    from ui.main_window import cmd_gui as run_gui

    return run_gui(args)


# ---------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    """Run a benchmark (latency)."""
    from app.bench_latency import main as latency_main

    argv = ["--json"] if args.json else []
    if args.decisions:
        argv += ["--decisions", str(args.decisions)]
    return latency_main(argv)


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI in the README)."""
    p = argparse.ArgumentParser(prog="closedloop", description="Real-time closed-loop BCI engine.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("devices", help="list LSL streams on the network and BrainFlow boards")
    d.add_argument("--wait", type=float, default=1.0, help="seconds to search for LSL streams (default 1)")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(func=cmd_devices)

    m = sub.add_parser("demo", help="embedded closed loop on the simulator, scored against ground truth")
    m.add_argument("--seconds", type=float, default=20.0, help="duration (default 20)")
    m.add_argument("--config", help="config to run instead of configs/demo.toml")
    m.add_argument("--record", help="also record the session to this XDF file")
    m.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    m.set_defaults(func=cmd_demo)

    r = sub.add_parser("record", help="record a source to XDF")
    r.add_argument("--source", required=True, help="sim[:SCENARIO] | lsl:NAME | brainflow:BOARD_ID")
    r.add_argument("--seconds", type=float, required=True, help="duration in s")
    r.add_argument("--out", required=True, help="output .xdf file")
    r.add_argument("--overwrite", action="store_true", help="replace an existing file")
    r.set_defaults(func=cmd_record)

    p_rep = sub.add_parser("replay", help="replay an XDF recording")
    p_rep.add_argument("file", help="the .xdf file")
    p_rep.add_argument("--lsl", action="store_true", help="republish every stream as an LSL outlet")
    p_rep.add_argument("--speed", type=float, default=1.0, help="playback speed (default 1 = real time)")
    p_rep.add_argument(
        "--wait-consumers",
        type=float,
        default=10.0,
        help="with --lsl: wait up to S s for listeners before playing (default 10; 0 = don't wait)",
    )
    p_rep.add_argument("--config", help="run this config's pipelines on the recording (it replaces the first source)")
    p_rep.add_argument("--fast", action="store_true", help="with --config: as fast as possible, deterministic")
    p_rep.add_argument("--commands-out", help="with --fast: write the commands as JSON lines here")
    p_rep.add_argument("--record", help="with --config: record the replayed session")
    p_rep.set_defaults(func=cmd_replay)

    u = sub.add_parser("run", help="run a headless session from a config file")
    u.add_argument("--config", required=True, help="session config (TOML)")
    u.add_argument("--seconds", type=float, help="duration (default: config session.duration_s, else until Ctrl-C)")
    u.add_argument("--record", help="record to this XDF file (overrides [recording])")
    u.set_defaults(func=cmd_run)

    dm = sub.add_parser("daemon", help="headless session controlled through an authenticated local HTTP/JSON API")
    dm.add_argument("--config", required=True, help="session config (TOML), read once at start")
    dm.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dm.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0 = any free port, logged)")
    dm.add_argument("--token-file", help="file holding the API bearer token (else $CLOSEDLOOP_TOKEN)")
    dm.add_argument(
        "--no-auth", action="store_true", help="serve the API without a token (refused unless --host is loopback)"
    )
    dm.add_argument("--start", action="store_true", help="start the session right away")
    dm.set_defaults(func=cmd_daemon)

    t = sub.add_parser("train", help="train a decoder from a dataset spec (TOML) and write MODEL.onnx + report")
    t.add_argument("paradigm", choices=["ssvep", "mi", "emg", "continuous", "spindle"], help="paradigm")
    t.add_argument("--dataset", required=True, help="dataset spec (TOML)")
    t.add_argument("--method", required=True, help="method name (e.g. fbcca, etrca, dnn, csp-lda, simpleconv)")
    t.add_argument("--out", required=True, help="output model file (.onnx)")
    t.add_argument("--report", help="folder for the training report (accuracy, confusion matrix, figures)")
    t.add_argument("--pretrain", help="deep methods: dataset spec of other subjects for the global training stage")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a model file on a dataset spec")
    e.add_argument("model", help="model file (.onnx)")
    e.add_argument("--dataset", required=True, help="dataset spec (TOML)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser("gui", help="clinician GUI (PyQt6)")
    g.add_argument("--config", help="session config (TOML)")
    g.add_argument("--demo", action="store_true", help="open configs/demo.toml (the simulator) and start it")
    g.add_argument("--seconds", type=float, help="quit by itself after N s (smoke tests)")
    g.set_defaults(func=cmd_gui)

    from app.estop import add_estop_parser

    add_estop_parser(sub)

    b = sub.add_parser("bench", help="benchmarks")
    b.add_argument("which", choices=["latency"], help="which benchmark")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--decisions", type=int, help="decisions per configuration (default 2000)")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``closedloop`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from app.config import ConfigError
    from decoders.card import CardMismatchError

    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"closedloop {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, CardMismatchError, FileNotFoundError, ValueError, TypeError, TimeoutError) as exc:
        print(f"closedloop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"closedloop {args.command}: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
