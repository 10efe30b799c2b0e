"""Decision-latency benchmark: closedloop against the LSL floor and an mne-lsl peer.

For each configuration (``8ch_250Hz``: 8 channels at 250 Hz, ``64ch_1kHz``: 64 channels at
1 kHz) a *separate process* (multiprocessing, spawn context) creates an LSL outlet with a unique
name and pushes samples in real time, paced against absolute deadlines on ``local_clock``:
one sample per push at 250 Hz, chunks of 4 samples every 4 ms at 1 kHz. Channel ``ch1`` is a
sample counter, the others carry a 10 Hz sine plus noise. Every sample of a push is stamped
with ``local_clock()`` read immediately before the push call, so a sample's timestamp *is* the
time it was pushed (all samples of one chunk share the stamp of the chunk's last sample).

Three measurements run one after the other (never concurrently, so they do not compete for
the CPU), against the same pusher process:

``floor``
    A bare ``pylsl.StreamInlet`` (default settings) calling ``pull_sample(timeout=1.0)`` in a
    loop. Latency = ``local_clock()`` right after the sample is returned - its timestamp.
``closedloop``
    A :class:`~app.session.Session` built with :func:`~app.config.parse_config` (LSL source,
    a real ONNX reference-projection SSVEP decoder with the card's causal band-pass, hop 40 ms,
    ``catch_up = "latest"``, an LSL command outlet). Latency = ``local_clock()`` read in a
    session subscriber, which runs right after the command has been pushed to the outputs in
    ``Session._dispatch`` - ``command.sample_time`` (timestamp of the window's last sample).
``mne_lsl``
    The same decoder (:class:`~decoders.onnx_decoder.OnnxDecoder`) and the same causal filter
    (:class:`~app.pipeline.CausalFilter` on the new samples only) fed from
    ``mne_lsl.stream.StreamLSL(bufsize, name=...).connect()`` at its defaults
    (``acquisition_delay=0.001`` s, no processing flags). The user loop polls
    ``n_new_samples`` and sleeps 1 ms when fewer than one hop (40 ms) of new samples are
    available, otherwise ``get_data(winsize)`` -> filter -> decode. Latency = ``local_clock()``
    after the decode - timestamp of the newest sample of the window.

Clock domain of the peer: without the ``clocksync`` processing flag mne-lsl returns the raw
timestamps the outlet stamped, i.e. the pusher's ``local_clock``. Pusher and benchmark share
the host, hence the same monotonic clock, so no correction is needed; the LSL
``time_correction`` measured by the floor inlet is reported (it is ~0 on one host). closedloop's
LSL source applies ``proc_clocksync`` (its default), which adds that same ~0 offset.

Command line::

    python benchmarks/latency.py [--json] [--decisions N] [--configs 8ch_250Hz,64ch_1kHz]
    closedloop bench latency [--json] [--decisions N]

With ``--json`` exactly one JSON object goes to stdout (progress and any library chatter go to
stderr): ``{"8ch_250Hz": {"closedloop": {...}, "floor": {...}, "mne_lsl": {...}}, ...}`` with
``p50_ms``, ``p95_ms``, ``p99_ms``, ``max_ms`` and ``n`` per entry, plus the top-level keys
``comparison``, ``settings`` and ``machine``.

The pusher helpers (:class:`PusherSpec`, :func:`run_pusher`, :class:`Pusher`) are reused by
``benchmarks/throughput.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
from pylsl.util import TimeoutError as LslTimeoutError

__all__ = [
    "CONFIGS",
    "BenchConfig",
    "Pusher",
    "PusherSpec",
    "build_model",
    "latency_stats",
    "machine_info",
    "main",
    "run_pusher",
    "stdout_to_stderr",
]

HOP_S = 0.04
WINDOW_S = 0.5
FREQUENCIES = (8.0, 10.0, 12.0, 15.0)
WARMUP = 10
POLL_S = 0.001


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark configuration.

    Parameters
    ----------
    name : str
        Key in the report (``"8ch_250Hz"``).
    n_channels : int
        Channels of the pushed stream (channel 0 is a sample counter).
    srate : float
        Nominal sampling rate in Hz.
    chunk : int
        Samples per push (the pusher pushes every ``chunk / srate`` s).
    """

    name: str
    n_channels: int
    srate: float
    chunk: int


CONFIGS: dict[str, BenchConfig] = {
    "8ch_250Hz": BenchConfig("8ch_250Hz", 8, 250.0, 1),
    "64ch_1kHz": BenchConfig("64ch_1kHz", 64, 1000.0, 4),
}


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ pusher
@dataclass(frozen=True)
class PusherSpec:
    """What the pusher process sends.

    Parameters
    ----------
    name : str
        LSL stream name (and source_id); make it unique per run.
    n_channels : int
        Channels; channel 0 carries the sample counter (0, 1, 2, ...), exact in float32 up to 2**24.
    srate : float
        Nominal rate in Hz.
    chunk : int
        Samples per push; pushes happen every ``chunk / srate`` s against absolute deadlines.
    stamps : str
        ``"push"``: every sample of a push is stamped with ``local_clock()`` read right before
        the push (latency benchmark). ``"nominal"``: sample ``i`` is stamped ``t0 + i / srate``
        like a device with its own sample clock (throughput benchmark: regular timestamps, so a
        timestamp gap means lost data).
    wait_consumer_s : float
        If > 0, wait up to this long for the first consumer before pushing sample 0, so that a
        consumer sees every sample.
    """

    name: str
    n_channels: int
    srate: float
    chunk: int
    stamps: str = "push"
    wait_consumer_s: float = 0.0

    def __post_init__(self) -> None:
        if self.stamps not in ("push", "nominal"):
            raise ValueError(f"PusherSpec.stamps must be 'push' or 'nominal', got {self.stamps!r}.")
        if self.n_channels < 1 or self.chunk < 1 or self.srate <= 0:
            raise ValueError(
                f"PusherSpec needs n_channels >= 1, chunk >= 1 and srate > 0, got {self.n_channels}, "
                f"{self.chunk}, {self.srate}."
            )


def _signal_block(n_channels: int, srate: float, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A reusable block of 10 Hz sine + noise, shape (n_samples, n_channels), float32."""
    rng = np.random.default_rng(seed)
    n = round(seconds * srate)
    t = np.arange(n) / srate
    phase = rng.uniform(0, 2 * np.pi, n_channels)
    block = 10.0 * np.sin(2 * np.pi * 10.0 * t[:, None] + phase[None, :]) + 5.0 * rng.standard_normal((n, n_channels))
    return block.astype(np.float32)


def run_pusher(
    spec: PusherSpec,
    ready: Any,
    stop: Any,
    halted: Any,
    release: Any,
    pushed: Synchronized,
    late: Synchronized,
) -> None:
    """Body of the pusher process: create the outlet, then push in real time until ``stop`` is set.

    Parameters
    ----------
    spec : PusherSpec
    ready, stop, halted, release : multiprocessing.Event
        ``ready`` is set once the outlet exists; the loop ends when ``stop`` is set, after which
        ``halted`` is set (``pushed`` is final) and the outlet stays alive until ``release`` is
        set (at most 60 s), so consumers can drain the last chunks before the outlet goes away.
    pushed : multiprocessing.Value ('q')
        Samples pushed so far (updated after every push).
    late : multiprocessing.Value ('q')
        Pushes that started more than one push period after their deadline.
    """
    from acquisition.lsl import make_outlet
    from acquisition.stream import StreamInfo

    labels = [f"ch{i + 1}" for i in range(spec.n_channels)]
    info = StreamInfo.simple(spec.name, "EEG", labels, spec.srate, unit="microvolts", source_id=spec.name)
    outlet = make_outlet(info, chunk_size=0)
    block = _signal_block(spec.n_channels, spec.srate)
    n_block = block.shape[0] - block.shape[0] % spec.chunk
    block = np.ascontiguousarray(block[:n_block])
    ready.set()
    if spec.wait_consumer_s > 0:
        outlet.wait_for_consumers(spec.wait_consumer_s)
    period = spec.chunk / spec.srate
    n = 0
    k = 0
    n_late = 0
    t0 = pylsl.local_clock()
    offsets = np.arange(spec.chunk, dtype=np.float32)
    while not stop.is_set():
        k += 1
        deadline = t0 + k * period
        delay = deadline - pylsl.local_clock()
        if delay > 0:
            time.sleep(delay)
        elif delay < -period:
            n_late += 1
        i0 = n % n_block
        x = block[i0 : i0 + spec.chunk].copy()
        x[:, 0] = n + offsets
        if spec.stamps == "push":
            ts = pylsl.local_clock()
            outlet.push_chunk(x, ts if spec.chunk == 1 else [ts] * spec.chunk)
        else:
            outlet.push_chunk(x, t0 + (n + spec.chunk - 1) / spec.srate)
        n += spec.chunk
        pushed.value = n
        late.value = n_late
    halted.set()
    release.wait(60.0)


class Pusher:
    """Start :func:`run_pusher` in a separate process (spawn context) and stop it again.

    Use as a context manager; ``pid`` is the child's process id (for CPU accounting) and
    :attr:`pushed` the number of samples pushed so far.
    """

    def __init__(self, spec: PusherSpec, *, start_timeout: float = 60.0) -> None:
        self.spec = spec
        self.start_timeout = start_timeout
        ctx = mp.get_context("spawn")
        self._ready = ctx.Event()
        self._stop = ctx.Event()
        self._halted = ctx.Event()
        self._release = ctx.Event()
        self._pushed = ctx.Value("q", 0)
        self._late = ctx.Value("q", 0)
        self._proc = ctx.Process(
            target=run_pusher,
            args=(spec, self._ready, self._stop, self._halted, self._release, self._pushed, self._late),
            name=f"pusher:{spec.name}",
            daemon=True,
        )

    @property
    def pid(self) -> int:
        """Process id of the pusher."""
        if self._proc.pid is None:
            raise RuntimeError("the pusher process has not been started; use it as a context manager.")
        return self._proc.pid

    @property
    def pushed(self) -> int:
        """Samples pushed so far."""
        return int(self._pushed.value)

    @property
    def late(self) -> int:
        """Pushes that started more than one period after their deadline."""
        return int(self._late.value)

    def start(self) -> None:
        """Start the process and wait until its outlet exists."""
        self._proc.start()
        if not self._ready.wait(self.start_timeout):
            self.stop()
            raise RuntimeError(
                f"pusher process for {self.spec.name!r} did not create its outlet within {self.start_timeout:.0f} s."
            )

    def halt(self, timeout: float = 10.0) -> int:
        """Stop pushing but keep the outlet alive (consumers can drain it); return the final sample count."""
        self._stop.set()
        if not self._halted.wait(timeout):
            raise RuntimeError(f"pusher process for {self.spec.name!r} did not halt within {timeout:.0f} s.")
        return self.pushed

    def stop(self, timeout: float = 10.0) -> None:
        """Stop pushing, close the outlet and join the process (terminate it only if it does not stop in time)."""
        self._stop.set()
        self._release.set()
        if self._proc.pid is not None:
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout)

    def __enter__(self) -> Pusher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------ helpers
def build_model(
    directory: Path,
    n_channels: int,
    srate: float,
    *,
    window_s: float = WINDOW_S,
    hop_s: float = HOP_S,
    frequencies: Sequence[float] = FREQUENCIES,
) -> Path:
    """Write a reference-projection SSVEP model for channels ``ch1..chN`` at ``srate`` into ``directory``."""
    from decoders.ssvep_reference import build_ssvep_reference_model, save_model

    labels = [f"ch{i + 1}" for i in range(n_channels)]
    model = build_ssvep_reference_model(
        list(frequencies), srate, window_s, labels, hop_s=hop_s, created_at="2000-01-01T00:00:00+00:00"
    )
    return save_model(model, directory / f"ssvep_{n_channels}ch_{int(srate)}Hz.onnx")


def latency_stats(seconds: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """p50, p95, p99 and max in ms, and n, of latencies given in s."""
    x = np.asarray(seconds, dtype=np.float64) * 1000.0
    if x.size == 0:
        nan = float("nan")
        return {"p50_ms": nan, "p95_ms": nan, "p99_ms": nan, "max_ms": nan, "n": 0}
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 4),
        "p95_ms": round(float(p95), 4),
        "p99_ms": round(float(p99), 4),
        "max_ms": round(float(x.max()), 4),
        "n": int(x.size),
    }


def machine_info() -> dict[str, Any]:
    """CPU, core count, OS and library versions (for the report)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "pylsl": getattr(pylsl, "__version__", "?"),
        "liblsl": pylsl.library_version(),
    }
    with contextlib.suppress(ImportError):
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    return info


# ------------------------------------------------------------------------------------ measurements
def _resolve(name: str, timeout: float = 10.0) -> pylsl.StreamInfo:
    found = pylsl.resolve_byprop("name", name, 1, timeout)
    if not found:
        raise RuntimeError(f"benchmark stream {name!r} did not appear on LSL within {timeout:.0f} s.")
    return found[0]


def measure_floor(stream_name: str, n_samples: int, *, warmup: int = WARMUP) -> tuple[np.ndarray, float]:
    """Bare ``pylsl.StreamInlet`` pulling single samples; returns (latencies in s, time correction in s)."""
    inlet = pylsl.StreamInlet(_resolve(stream_name))
    inlet.open_stream(timeout=10.0)
    correction = float("nan")
    with contextlib.suppress(LslTimeoutError):
        correction = inlet.time_correction(timeout=5.0)
    lat = np.empty(n_samples + warmup, dtype=np.float64)
    i = 0
    timeouts = 0
    t_open = pylsl.local_clock()  # the outlet may hand a new inlet samples pushed before it connected: skip them
    try:
        while i < lat.size:
            _sample, ts = inlet.pull_sample(timeout=1.0)
            now = pylsl.local_clock()
            if ts is None:
                timeouts += 1
                if timeouts > 10:
                    raise RuntimeError(f"floor inlet on {stream_name!r} received nothing for 10 s.")
                continue
            if ts < t_open:
                continue
            lat[i] = now - ts
            i += 1
    finally:
        inlet.close_stream()
    return lat[warmup:], correction


def measure_closedloop(
    stream_name: str, model: Path, n_decisions: int, *, warmup: int = WARMUP, hop_s: float = HOP_S
) -> tuple[np.ndarray, dict[str, Any]]:
    """closedloop Session on the stream; returns (latencies in s, pipeline status at the end)."""
    from app.config import parse_config
    from app.pipeline import Command
    from app.session import Session

    config = parse_config(
        {
            "session": {"name": "bench-latency"},
            "sources": {"eeg": {"kind": "lsl", "name": stream_name}},
            "pipelines": {
                "p": {
                    "source": "eeg",
                    "model": str(model),
                    "hop_s": hop_s,
                    "use_card_filters": True,
                    "catch_up": "latest",
                }
            },
            "outputs": {"cmd": {"kind": "lsl", "stream_name": f"{stream_name}-commands"}},
        }
    )
    session = Session(config)
    target = n_decisions + warmup
    lat: list[float] = []
    split: list[tuple[float, float]] = []  # (receive - push, publish - receive) when the split is unambiguous
    done = threading.Event()
    stats: list[Any] = []

    def on_command(cmd: Command) -> None:  # runs on the pipeline thread, right after outputs.send
        now = pylsl.local_clock()
        if cmd.sample_time >= t_start[0]:  # never time a window that ends in a backlog from before the start
            lat.append(now - cmd.sample_time)
            # Diagnostic split: the acquisition thread stamps every chunk it pulls with its receive time. When the
            # newest chunk ends with the decision's sample, receive - push is the LSL + acquisition part and
            # publish - receive the ring buffer hand-off + pipeline + output part.
            st, buf = stats[0]
            received = st.last_receive_time
            if buf.last_timestamp == cmd.sample_time and received >= cmd.sample_time:
                split.append((received - cmd.sample_time, now - received))
        if len(lat) >= target:
            done.set()

    session.subscribe(on_command)
    timeout = 3.0 * target * hop_s + 30.0
    t_start = [float("inf")]
    session.open()
    primary = session.sources["eeg"].primary()
    stats.append((primary.stats, primary.buffer))
    t_start[0] = pylsl.local_clock()
    session.start()
    try:
        while not done.wait(0.5):
            if session.errors:
                raise RuntimeError(f"closedloop session failed: {session.errors[0]['error']}")
            timeout -= 0.5
            if timeout <= 0:
                raise RuntimeError(f"closedloop session produced {len(lat)} of {target} decisions in time.")
        status = dict(session.status()["pipelines"]["p"])
    finally:
        session.stop()
    if split:
        parts = np.asarray(split[warmup:] or split)
        status["split_n"] = int(parts.shape[0])
        for i, key in enumerate(("receive_minus_push", "publish_minus_receive")):
            p50, p99 = np.percentile(parts[:, i] * 1000.0, [50, 99])
            status[f"{key}_p50_ms"] = round(float(p50), 3)
            status[f"{key}_p99_ms"] = round(float(p99), 3)
    return np.asarray(lat[warmup:target], dtype=np.float64), status


def measure_mne_lsl(
    stream_name: str,
    model: Path,
    n_decisions: int,
    *,
    warmup: int = WARMUP,
    hop_s: float = HOP_S,
    poll_s: float = POLL_S,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The same decoder and causal filter fed from an mne-lsl ``StreamLSL`` at default settings.

    Returns (latencies in s, details: missed samples, polls).
    """
    import mne_lsl
    from mne_lsl.stream import StreamLSL

    from app.pipeline import CausalFilter, FilterSettings
    from decoders.onnx_decoder import OnnxDecoder

    mne_lsl.set_log_level("WARNING")
    decoder = OnnxDecoder(model)
    card = decoder.card
    srate = card.srate
    n_ch = card.n_channels
    window_n = card.n_window_samples
    hop_n = max(1, round(hop_s * srate))
    pre = card.preprocessing
    band = pre.get("bandpass_hz")
    settings = FilterSettings(tuple(band) if band else None, int(pre.get("filter_order", 4)), pre.get("notch_hz"))
    filt = CausalFilter(settings, srate, n_ch)
    fbuf = np.zeros((window_n, n_ch), dtype=np.float32)
    filled = 0
    last_counter = -1.0
    missed = 0
    polls = 0
    target = n_decisions + warmup
    lat: list[float] = []
    stream = StreamLSL(bufsize=max(2.0, 4 * card.window_s), name=stream_name).connect()
    t_start = pylsl.local_clock()
    deadline = time.monotonic() + 3.0 * target * hop_s + 30.0
    try:
        while len(lat) < target:
            if stream.n_new_samples < hop_n:
                polls += 1
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mne-lsl peer produced {len(lat)} of {target} decisions in time.")
                time.sleep(poll_s)
                continue
            data, ts = stream.get_data(winsize=card.window_s)  # (n_channels, n_samples), (n_samples,)
            counter = data[0]
            new = int(np.count_nonzero((ts > 0) & (counter > last_counter)))
            if new == 0:
                continue
            if filled and counter[-new] != last_counter + 1:
                missed += int(counter[-new] - last_counter - 1)
            y = filt(np.ascontiguousarray(data[:, -new:].T))
            last_counter = float(counter[-1])
            if new >= window_n:
                fbuf[:] = y[-window_n:]
            else:
                fbuf[:-new] = fbuf[new:]
                fbuf[-new:] = y
            filled += new
            if filled < window_n:
                continue
            decoder.predict(fbuf)
            now = pylsl.local_clock()
            if ts[-1] >= t_start:
                lat.append(now - float(ts[-1]))
    finally:
        stream.disconnect()
    return np.asarray(lat[warmup:target], dtype=np.float64), {"missed_samples": missed, "empty_polls": polls}


def run_config(cfg: BenchConfig, n_decisions: int, workdir: Path) -> dict[str, Any]:
    """Run floor, closedloop and mne_lsl (sequentially) against one pusher process."""
    model = build_model(workdir, cfg.n_channels, cfg.srate)
    name = f"closedloop-bench-{cfg.name}-{uuid.uuid4().hex[:8]}"
    spec = PusherSpec(name, cfg.n_channels, cfg.srate, cfg.chunk, stamps="push")
    _progress(
        f"[{cfg.name}] starting pusher process ({cfg.n_channels} ch, {cfg.srate:g} Hz, {cfg.chunk} sample(s)/push)"
    )
    with Pusher(spec) as pusher:
        n_floor = n_decisions * cfg.chunk
        _progress(f"[{cfg.name}] floor: bare pylsl inlet, {n_floor} samples ...")
        floor, correction = measure_floor(name, n_floor)
        _progress(f"[{cfg.name}] closedloop: Session, {n_decisions} decisions at {HOP_S * 1000:.0f} ms hop ...")
        closed, pipe_status = measure_closedloop(name, model, n_decisions)
        _progress(f"[{cfg.name}] mne_lsl: StreamLSL defaults, {n_decisions} decisions, {POLL_S * 1000:g} ms poll ...")
        peer, peer_info = measure_mne_lsl(name, model, n_decisions)
        late = pusher.late
    return {
        "floor": latency_stats(floor),
        "closedloop": latency_stats(closed),
        "mne_lsl": latency_stats(peer),
        "_details": {
            "lsl_time_correction_ms": round(correction * 1000.0, 4),
            "pusher_late_pushes": late,
            "closedloop_pipeline": pipe_status,
            "mne_lsl": peer_info,
        },
    }


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b > 0 else float("nan")


def format_table(report: dict[str, Any], configs: Sequence[str]) -> str:
    """Readable table of the report, with ratios and differences of the p99s."""
    lines = [f"{'config':<11} {'measurement':<11} {'p50_ms':>8} {'p95_ms':>8} {'p99_ms':>8} {'max_ms':>8} {'n':>6}"]
    lines.append("-" * len(lines[0]))
    for c in configs:
        r = report[c]
        for i, m in enumerate(("floor", "closedloop", "mne_lsl")):
            s = r[m]
            lines.append(
                f"{c if i == 0 else '':<11} {m:<11} {s['p50_ms']:>8.2f} {s['p95_ms']:>8.2f} {s['p99_ms']:>8.2f} "
                f"{s['max_ms']:>8.2f} {s['n']:>6d}"
            )
        cmp = report["comparison"][c]
        lines.append(
            f"{'':<11} p99 closedloop/floor = {cmp['closedloop_over_floor_p99']:.2f} "
            f"(closedloop - floor = {cmp['closedloop_minus_floor_p99_ms']:+.2f} ms); "
            f"closedloop/mne_lsl = {cmp['closedloop_over_mne_lsl_p99']:.2f} "
            f"(closedloop - mne_lsl = {cmp['closedloop_minus_mne_lsl_p99_ms']:+.2f} ms)"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to fd 1 (Python and C libraries, child processes) to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="closedloop bench latency",
        description="Decision latency of closedloop vs the bare LSL floor and an mne-lsl StreamLSL peer.",
    )
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    parser.add_argument("--decisions", type=int, default=2000, help="decisions (and floor pushes) per config")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {list(CONFIGS)} (default: all)"
    )
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        parser.error(f"--configs must name some of {list(CONFIGS)}, got {args.configs!r}.")
    if args.decisions < 1:
        parser.error(f"--decisions must be >= 1, got {args.decisions}.")

    report: dict[str, Any] = {}
    comparison: dict[str, Any] = {}
    details: dict[str, Any] = {}
    t_start = time.monotonic()
    redirect = stdout_to_stderr() if args.json else contextlib.nullcontext()
    try:
        with redirect, tempfile.TemporaryDirectory(prefix="closedloop-bench-") as tmp:
            for c in configs:
                r = run_config(CONFIGS[c], args.decisions, Path(tmp))
                details[c] = r.pop("_details")
                report[c] = r
                cl, fl, pe = r["closedloop"]["p99_ms"], r["floor"]["p99_ms"], r["mne_lsl"]["p99_ms"]
                comparison[c] = {
                    "closedloop_over_floor_p99": _ratio(cl, fl),
                    "closedloop_minus_floor_p99_ms": round(cl - fl, 4),
                    "closedloop_over_mne_lsl_p99": _ratio(cl, pe),
                    "closedloop_minus_mne_lsl_p99_ms": round(cl - pe, 4),
                }
                _progress(f"[{c}] done: p99 floor {fl:.2f} ms, closedloop {cl:.2f} ms, mne_lsl {pe:.2f} ms")
    except (RuntimeError, TimeoutError, ValueError) as exc:
        print(f"closedloop bench latency: error: {exc}", file=sys.stderr)
        return 1
    report["comparison"] = comparison
    report["details"] = details
    report["settings"] = {
        "decisions": args.decisions,
        "warmup_discarded": WARMUP,
        "hop_s": HOP_S,
        "window_s": WINDOW_S,
        "decoder": f"ssvep reference projection, {list(FREQUENCIES)} Hz, band-pass 5-45 Hz order 4",
        "pusher": {c: {"chunk": CONFIGS[c].chunk, "stamps": "local_clock() at push"} for c in configs},
        "floor": "pylsl.StreamInlet defaults, pull_sample(timeout=1.0) per sample",
        "closedloop": "Session (LslSource clock_sync, catch_up=latest, LSL command outlet); t = subscriber",
        "mne_lsl": f"StreamLSL.connect() defaults (acquisition_delay 0.001 s, no processing flags); user loop polls "
        f"n_new_samples with {POLL_S * 1000:g} ms sleep; same CausalFilter + OnnxDecoder",
        "runtime_s": round(time.monotonic() - t_start, 1),
    }
    report["machine"] = machine_info()
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report, configs))
        m = report["machine"]
        print(
            f"\nmachine: {m['cpu']}, {m['cores']} cores; liblsl {m['liblsl']}; decisions {args.decisions} per config "
            f"(+{WARMUP} warm-up discarded); hop {HOP_S * 1000:.0f} ms; window {WINDOW_S} s"
        )
        print(f"mne_lsl peer: {report['settings']['mne_lsl']}")
        for c in configs:
            print(f"{c}: {json.dumps(details[c])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
