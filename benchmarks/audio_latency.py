"""Auditory stimulation: request-to-start latency of a pink-noise burst, per sink (issue 5, acceptance 6).

For each sink that can open here — ``device`` (the sound card through PortAudio; the start time
is the DAC time of the burst's first sample, from the PortAudio callback), ``file`` (WAV file:
the start is when the burst is written) and ``null`` — it requests ``--bursts`` 15 ms bursts
through an armed :class:`~stimulation.safety.SafetySupervisor` (so the gate's cost is included),
spaced by the supervisor's minimum interval, and reports the latency ``start_time −
request_time`` (both ``pylsl.local_clock``). Without an audio device the ``device`` row says so
and the file sink stands in (as the Session would). Run::

    python benchmarks/audio_latency.py [--bursts 40] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stimulation.audio import AudioStimulator, DeviceSink, FileSink, NullSink, Sink  # noqa: E402
from stimulation.limits import SafetyLimits  # noqa: E402
from stimulation.safety import SafetySupervisor  # noqa: E402

LIMITS = SafetyLimits(
    max_current_ma=1.0,
    max_pulse_width_us=1.0,
    max_frequency_hz=1.0,
    max_charge_per_phase_uc=1.0,
    max_ramp_ma_per_s=1.0,
    max_session_dose_s=1.0,
    max_audio_db_spl=60.0,
    max_audio_rate_hz=20.0,
)


def run_sink(sink: Sink, n: int, audit: Path) -> dict[str, Any]:
    sup = SafetySupervisor(LIMITS, audit_log_path=audit, heartbeat_timeout_s=5.0, stale_after_s=5.0)
    stim = AudioStimulator(sink, level_db=45.0, supervisor=sup, marker_stream=None)
    lat: list[float] = []
    try:
        sup.arm("bench", "audio latency")
        interval = 1.0 / LIMITS.max_audio_rate_hz + 0.005
        for _ in range(n):
            sup.heartbeat()
            sup.data_age(0.0)
            rec = stim.burst(source="bench")
            if rec is None:
                raise RuntimeError(f"burst refused: {stim.refused[-1].message}")
            if not rec.started.wait(2.0):
                raise RuntimeError(f"{sink.kind} sink: a burst did not start within 2 s")
            lat.append(rec.latency_ms)
            time.sleep(interval)
    finally:
        stim.close()
        sup.close()
    s = sorted(lat)
    return {
        "sink": sink.kind,
        "n": len(s),
        "min_ms": s[0],
        "median_ms": statistics.median(s),
        "p99_ms": s[min(len(s) - 1, int(0.99 * len(s)))],
        "max_ms": s[-1],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bursts", type=int, default=40, help="bursts per sink (default 40)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    rows: list[dict[str, Any]] = []
    device_note = ""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            rows.append(run_sink(DeviceSink(44100), args.bursts, Path(tmp) / "d.jsonl"))
        except (OSError, ImportError) as exc:
            device_note = f"no audio device here ({exc}); the file sink stands in"
        rows.append(run_sink(FileSink(Path(tmp) / "a.wav", 44100), args.bursts, Path(tmp) / "f.jsonl"))
        rows.append(run_sink(NullSink(44100), args.bursts, Path(tmp) / "n.jsonl"))
    if args.json:
        print(json.dumps({"rows": rows, "device": device_note or "measured"}, indent=2))
        return 0
    print(f"{'sink':8s} {'n':>4s} {'min':>8s} {'median':>8s} {'p99':>8s} {'max':>8s}  request -> start (ms)")
    for r in rows:
        print(
            f"{r['sink']:8s} {r['n']:4d} {r['min_ms']:8.3f} {r['median_ms']:8.3f} {r['p99_ms']:8.3f} {r['max_ms']:8.3f}"
        )
    if device_note:
        print(device_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
