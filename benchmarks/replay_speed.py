"""Replay-speed benchmark: a long 64 ch 1 kHz XDF through a pipeline as fast as possible.

Writes a synthetic recording (64 channels at 1 kHz, ``--minutes`` long: 10 Hz sine on every
channel plus white noise, generated and written in 10 s blocks with
:class:`~acquisition.xdf_writer.XdfWriter`) into a temporary folder, then builds a Session with a
replay source and a 64-channel 1 kHz reference-projection SSVEP ONNX decoder (window 0.5 s,
hop 0.04 s) and runs :meth:`~app.session.Session.run_fast` (deterministic, every hop decided).

Reported: file size and time to write it; time to read it (``Session.open()``: pyxdf parse of
the file into memory and model loading) separately from the processing time (``run_fast``:
chunking, ring buffer, causal filter, decoder, dispatch); x real time = recording seconds /
processing seconds (and / read + processing seconds); decisions made.

Usage::

    python benchmarks/replay_speed.py [--minutes 10] [--json]
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

from acquisition.stream import StreamInfo
from acquisition.xdf_writer import XdfWriter
from app.bench_latency import build_model, machine_info, stdout_to_stderr

N_CHANNELS = 64
SRATE = 1000.0
HOP_S = 0.04
WINDOW_S = 0.5
BLOCK_S = 10.0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_recording(path: Path, minutes: float, *, seed: int = 0) -> dict[str, float]:
    """Write ``minutes`` of 64 ch 1 kHz synthetic EEG to ``path``; return samples, size and timing."""
    rng = np.random.default_rng(seed)
    labels = [f"ch{i + 1}" for i in range(N_CHANNELS)]
    info = StreamInfo.simple("replay-bench-eeg", "EEG", labels, SRATE, unit="microvolts", source_id="replay-bench")
    n_total = round(minutes * 60.0 * SRATE)
    block = round(BLOCK_S * SRATE)
    phase = rng.uniform(0, 2 * np.pi, N_CHANNELS)
    t0 = 1000.0
    t_start = time.perf_counter()
    with XdfWriter(path) as writer:
        sid = writer.add_stream(info)
        for i0 in range(0, n_total, block):
            n = min(block, n_total - i0)
            idx = np.arange(i0, i0 + n)
            t = idx / SRATE
            data = 10.0 * np.sin(2 * np.pi * 10.0 * t[:, None] + phase[None, :])
            data += 5.0 * rng.standard_normal((n, N_CHANNELS))
            writer.write_samples(sid, data.astype(np.float32), t0 + t)
            writer.write_clock_offset(sid, t0 + float(t[-1]), 0.0)  # like LabRecorder, one per block
    return {
        "samples": n_total,
        "recording_s": n_total / SRATE,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "write_s": round(time.perf_counter() - t_start, 2),
    }


def run(minutes: float, workdir: Path) -> dict[str, Any]:
    """Write the recording, replay it with ``Session.run_fast`` and return the measurements."""
    from app.config import parse_config
    from app.session import Session

    path = workdir / "replay_64ch_1kHz.xdf"
    _progress(f"writing {minutes:g} min of {N_CHANNELS} ch at {SRATE:g} Hz to {path} ...")
    written = write_recording(path, minutes)
    _progress(f"wrote {written['file_mb']} MB in {written['write_s']} s; building model and session ...")
    model = build_model(workdir, N_CHANNELS, SRATE, window_s=WINDOW_S, hop_s=HOP_S)
    config = parse_config(
        {
            "session": {"name": "bench-replay"},
            "sources": {"eeg": {"kind": "replay", "path": str(path)}},
            "pipelines": {"p": {"source": "eeg", "model": str(model), "hop_s": HOP_S}},
        }
    )
    session = Session(config)
    t0 = time.perf_counter()
    session.open()
    read_s = time.perf_counter() - t0
    _progress(f"read the file (Session.open) in {read_s:.2f} s; replaying as fast as possible ...")
    t1 = time.perf_counter()
    commands = session.run_fast()
    process_s = time.perf_counter() - t1
    stats = session.fast_stats
    rec_s = float(stats.get("recording_s", written["recording_s"]))
    expected = int((written["samples"] - round(WINDOW_S * SRATE)) // round(HOP_S * SRATE)) + 1
    if session.errors:
        raise RuntimeError(f"replay failed: {session.errors[0]['error']}")
    return {
        "channels": N_CHANNELS,
        "srate_hz": SRATE,
        "minutes": minutes,
        "recording_s": round(rec_s, 3),
        "file_mb": written["file_mb"],
        "write_s": written["write_s"],
        "read_s": round(read_s, 3),
        "process_s": round(process_s, 3),
        "run_fast_wall_s": round(float(stats.get("wall_s", float("nan"))), 3),
        "x_realtime_processing": round(rec_s / process_s, 1),
        "x_realtime_read_and_processing": round(rec_s / (read_s + process_s), 1),
        "decisions": len(commands),
        "decisions_expected": expected,
        "hop_s": HOP_S,
        "window_s": WINDOW_S,
    }


def format_table(r: dict[str, Any]) -> str:
    """Readable table of the result."""
    rows = [
        ("recording", f"{r['minutes']:g} min = {r['recording_s']:.1f} s, {r['channels']} ch at {r['srate_hz']:g} Hz"),
        ("file", f"{r['file_mb']} MB, written in {r['write_s']:.2f} s"),
        ("read (open)", f"{r['read_s']:.2f} s"),
        ("processing", f"{r['process_s']:.2f} s (run_fast)"),
        ("x real time", f"{r['x_realtime_processing']:.1f} (processing only)"),
        ("x real time", f"{r['x_realtime_read_and_processing']:.1f} (read + processing)"),
        ("decisions", f"{r['decisions']} (expected {r['decisions_expected']}; hop {r['hop_s'] * 1000:.0f} ms)"),
    ]
    return "\n".join(f"{k:<12} {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description="Replay a 64 ch 1 kHz XDF through a pipeline as fast as possible.")
    parser.add_argument("--minutes", type=float, default=10.0, help="recording length in minutes (default 10)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error(f"--minutes must be > 0, got {args.minutes}.")
    redirect = stdout_to_stderr() if args.json else contextlib.nullcontext()
    with redirect, tempfile.TemporaryDirectory(prefix="closedloop-replay-") as tmp:
        result = run(args.minutes, Path(tmp))
    result["machine"] = machine_info()
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
        m = result["machine"]
        print(f"\nmachine: {m['cpu']}, {m['cores']} cores; python {m['python']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
