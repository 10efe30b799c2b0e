"""Throughput benchmark: high-rate, high-channel LSL streams into a closedloop Session.

For each configuration (64 ch at 4 kHz, 256 ch at 2048 Hz) a separate process (spawn context,
:class:`app.bench_latency.Pusher`) pushes chunks of about 10 ms through LSL, paced against
absolute deadlines; channel 0 counts samples and samples carry regular device-clock timestamps
(``t0 + i / srate``). The engine side is a :class:`~app.session.Session` (LSL source ->
pipeline with a reference-projection SSVEP ONNX decoder for that channel count and rate, window
0.25 s, hop 0.05 s = 20 decisions/s, ``catch_up = "latest"`` -> LSL command outlet).

The pusher waits for its first consumer before pushing sample 0, so every pushed sample must
arrive. A checker thread in the engine process reads the source's ring buffer with
``read_since`` (keeping up, so it never loses anything itself) and verifies that the counter
channel is contiguous (no lost, duplicated or reordered samples). Reported per configuration:
samples pushed / received / lost, counter discontinuities, ring-buffer gaps, samples the
pipeline runner lost, decisions made, and the CPU share (``psutil`` ``cpu_percent`` over the run)
of the engine process and of the pusher process, as % of one core and as share of the machine.

Usage::

    python benchmarks/throughput.py [--seconds 60] [--json] [--configs 64ch_4kHz,256ch_2048Hz]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from acquisition.ringbuffer import RingBuffer
from app.bench_latency import Pusher, PusherSpec, build_model, machine_info, stdout_to_stderr


@dataclass(frozen=True)
class ThroughputConfig:
    """One configuration: channels, rate and samples per push (about 10 ms)."""

    name: str
    n_channels: int
    srate: float
    chunk: int


CONFIGS: dict[str, ThroughputConfig] = {
    "64ch_4kHz": ThroughputConfig("64ch_4kHz", 64, 4000.0, 40),
    "256ch_2048Hz": ThroughputConfig("256ch_2048Hz", 256, 2048.0, 20),
}
HOP_S = 0.05
WINDOW_S = 0.25


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class CounterChecker:
    """Reads a ring buffer from sample 0 on its own thread and checks channel 0 counts 0, 1, 2, ...

    Attributes
    ----------
    received : int
        Samples read so far.
    discontinuities : int
        Reads whose counter values did not continue the previous ones.
    lost_by_reader : int
        Samples the buffer overwrote before this reader got them (should stay 0).
    """

    def __init__(self, buffer: RingBuffer) -> None:
        self.buffer = buffer
        self.received = 0
        self.discontinuities = 0
        self.lost_by_reader = 0
        self.first_bad: tuple[int, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counter-checker", daemon=True)

    def start(self) -> None:
        """Start the reader thread."""
        self._thread.start()

    def stop(self) -> None:
        """Drain what is left, then stop the thread."""
        self._stop.set()
        self._thread.join(10.0)

    def _check(self, counts: np.ndarray) -> None:
        expected = np.arange(self.received, self.received + counts.size, dtype=np.float64)
        bad = np.flatnonzero(counts.astype(np.float64) != expected)
        if bad.size:
            self.discontinuities += 1
            if self.first_bad is None:
                self.first_bad = (int(expected[bad[0]]), float(counts[bad[0]]))
            self.received = int(counts[-1]) + 1 - counts.size  # resynchronise on the received counter
        self.received += counts.size

    def _run(self) -> None:
        pos = 0
        while True:
            stopping = self._stop.is_set()
            if self.buffer.wait_for(pos, timeout=0.05):
                r = self.buffer.read_since(pos)
                pos = r.end
                self.lost_by_reader += r.lost
                if len(r):
                    self._check(r.data[:, 0])
            elif stopping:
                return


def run_config(cfg: ThroughputConfig, seconds: float, workdir: Path) -> dict[str, Any]:
    """Push ``cfg`` for ``seconds`` into a Session and return the measurements."""
    from app.config import parse_config
    from app.session import Session

    model = build_model(workdir, cfg.n_channels, cfg.srate, window_s=WINDOW_S, hop_s=HOP_S)
    name = f"closedloop-throughput-{cfg.name}-{uuid.uuid4().hex[:8]}"
    spec = PusherSpec(name, cfg.n_channels, cfg.srate, cfg.chunk, stamps="nominal", wait_consumer_s=60.0)
    config = parse_config(
        {
            "session": {"name": "bench-throughput"},
            "sources": {"eeg": {"kind": "lsl", "name": name}},
            "pipelines": {"p": {"source": "eeg", "model": str(model), "hop_s": HOP_S, "catch_up": "latest"}},
            "outputs": {"cmd": {"kind": "lsl", "stream_name": f"{name}-commands"}},
        }
    )
    engine = psutil.Process()
    _progress(f"[{cfg.name}] pusher: {cfg.n_channels} ch at {cfg.srate:g} Hz, {cfg.chunk} samples per push")
    with Pusher(spec) as pusher:
        pusher_ps = psutil.Process(pusher.pid)
        session = Session(config)
        session.open()  # the inlet subscribes here: the pusher starts with sample 0
        stream = session.sources["eeg"].primary()
        buf = stream.buffer
        if not isinstance(buf, RingBuffer):
            raise RuntimeError(f"stream {name!r} is not numeric")
        checker = CounterChecker(buf)
        try:
            session.start()
            checker.start()
            engine.cpu_percent(None)
            pusher_ps.cpu_percent(None)
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < seconds:
                time.sleep(min(5.0, seconds - elapsed))
                if session.errors:
                    raise RuntimeError(f"session failed: {session.errors[0]['error']}")
                _progress(
                    f"[{cfg.name}] {elapsed + min(5.0, seconds - elapsed):5.0f} s: pushed {pusher.pushed}, "
                    f"received {buf.counter}"
                )
            cpu_engine = engine.cpu_percent(None)
            cpu_pusher = pusher_ps.cpu_percent(None)
            wall = time.monotonic() - t0
            pushed = pusher.halt()
            late = pusher.late
            deadline = time.monotonic() + 10.0
            while buf.counter < pushed and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)  # let the checker and the pipeline read the last chunk
            status = session.status()
        finally:
            session.stop()
            checker.stop()
    received = buf.counter
    pipe = status["pipelines"]["p"]
    src = status["sources"]["eeg"]["streams"][name]
    n_cpu = psutil.cpu_count() or 1
    return {
        "channels": cfg.n_channels,
        "srate_hz": cfg.srate,
        "chunk_samples": cfg.chunk,
        "seconds": round(wall, 2),
        "pushed": pushed,
        "received": received,
        "lost": pushed - received,
        "checked": checker.received,
        "counter_discontinuities": checker.discontinuities,
        "first_discontinuity": checker.first_bad,
        "checker_lost": checker.lost_by_reader,
        "ringbuffer_gaps": src.get("gaps", 0),
        "ringbuffer_overflow_writes": buf.n_overflow_writes,
        "runner_lost": pipe["lost_samples"],
        "decisions": pipe["decisions"],
        "decisions_skipped_stale": pipe["skipped_stale"],
        "decisions_per_s": round(pipe["decisions"] / wall, 2),
        "decision_latency_ms": {k: round(v, 3) if isinstance(v, float) else v for k, v in status["latency"].items()},
        "engine_cpu_pct_of_core": round(cpu_engine, 1),
        "engine_cpu_share_of_machine": round(cpu_engine / 100.0 / n_cpu, 4),
        "pusher_cpu_pct_of_core": round(cpu_pusher, 1),
        "pusher_cpu_share_of_machine": round(cpu_pusher / 100.0 / n_cpu, 4),
        "pusher_late_pushes": late,
        "mb_per_s": round(pushed * cfg.n_channels * 4 / wall / 1e6, 2),
    }


def format_table(report: dict[str, Any], configs: list[str]) -> str:
    """Readable table of the results."""
    cols = [
        ("config", 13, "s"),
        ("pushed", 9, "d"),
        ("received", 9, "d"),
        ("lost", 5, "d"),
        ("discont", 7, "d"),
        ("gaps", 5, "d"),
        ("decisions", 9, "d"),
        ("dec/s", 6, ".2f"),
        ("engine%core", 11, ".1f"),
        ("pusher%core", 11, ".1f"),
        ("MB/s", 6, ".2f"),
    ]
    head = " ".join(f"{n:>{w}}" if i else f"{n:<{w}}" for i, (n, w, _) in enumerate(cols))
    lines = [head, "-" * len(head)]
    for c in configs:
        r = report[c]
        vals = [
            c,
            r["pushed"],
            r["received"],
            r["lost"],
            r["counter_discontinuities"],
            r["ringbuffer_gaps"],
            r["decisions"],
            r["decisions_per_s"],
            r["engine_cpu_pct_of_core"],
            r["pusher_cpu_pct_of_core"],
            r["mb_per_s"],
        ]
        lines.append(
            " ".join(
                f"{v:<{w}{f}}" if i == 0 else f"{v:>{w}{f}}"
                for i, (v, (_, w, f)) in enumerate(zip(vals, cols, strict=True))
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (1 if any sample was lost)."""
    parser = argparse.ArgumentParser(description="LSL -> closedloop throughput: lost samples and CPU share.")
    parser.add_argument("--seconds", type=float, default=60.0, help="push duration per configuration (default 60)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {list(CONFIGS)}")
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not configs or any(c not in CONFIGS for c in configs):
        parser.error(f"--configs must name some of {list(CONFIGS)}, got {args.configs!r}.")
    if args.seconds <= 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}.")
    report: dict[str, Any] = {}
    redirect = stdout_to_stderr() if args.json else contextlib.nullcontext()
    with redirect, tempfile.TemporaryDirectory(prefix="closedloop-throughput-") as tmp:
        for c in configs:
            report[c] = run_config(CONFIGS[c], args.seconds, Path(tmp))
    report["settings"] = {
        "seconds": args.seconds,
        "hop_s": HOP_S,
        "window_s": WINDOW_S,
        "stamps": "t0 + i/srate",
        "decoder": "ssvep reference projection [8, 10, 12, 15] Hz, band-pass 5-45 Hz",
    }
    report["machine"] = machine_info()
    ok = all(report[c]["lost"] == 0 and report[c]["counter_discontinuities"] == 0 for c in configs)
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report, configs))
        m = report["machine"]
        print(
            f"\nmachine: {m['cpu']}, {m['cores']} cores; {args.seconds:g} s per configuration; "
            f"decoder hop {HOP_S * 1000:.0f} ms, window {WINDOW_S} s; %core = psutil cpu_percent of the process "
            f"(100 = one full core)"
        )
        for c in configs:
            r = report[c]
            print(
                f"{c}: engine {r['engine_cpu_share_of_machine'] * 100:.1f} % of the machine, pusher "
                f"{r['pusher_cpu_share_of_machine'] * 100:.1f} %; runner lost {r['runner_lost']}, checker lost "
                f"{r['checker_lost']}, overflow writes {r['ringbuffer_overflow_writes']}, pusher late pushes "
                f"{r['pusher_late_pushes']}; decision latency {json.dumps(r['decision_latency_ms'])}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
