"""GUI frame rate with 64 channels at 1 kHz on screen, and decoder latency with the GUI open vs headless.

Usage::

    python benchmarks/gui_fps.py [--seconds 15] [--display xvfb|offscreen] [--json]

One session config runs twice: a 64-channel, 1 kHz simulated EMG grid (the scope's stream) next to
the demo's simulated SSVEP EEG decoded by the demo model every 0.1 s.

1. **Headless**: ``Session.run`` for ``--seconds``; decision latency p50/p99 (ms).
2. **GUI**: the real main window (a real X window under a private Xvfb, or offscreen) showing the
   64-channel stream on the Signals tab; the scope's frame counter (paint events of the plot) over
   ``--seconds`` gives frames/s, and the same session's decision latency is measured meanwhile.

Goals (issue 7): >= 30 frames/s, and p99 latency with the GUI within 2 ms of headless.
Prints a table, or one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GOAL_FPS = 30.0
GOAL_P99_DELTA_MS = 2.0


def write_config(folder: Path) -> Path:
    """The benchmark session: 64 ch EMG at 1 kHz (displayed) + the demo SSVEP pipeline (decoded)."""
    from ui.screenshots import write_scope64_config

    return write_scope64_config(folder)


def summary(lat_s: np.ndarray) -> dict[str, float]:
    """n, p50, p99, max of latencies given in s (ms)."""
    if lat_s.size == 0:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    p50, p99 = np.percentile(lat_s, [50, 99]) * 1e3
    return {"n": int(lat_s.size), "p50_ms": float(p50), "p99_ms": float(p99), "max_ms": float(lat_s.max() * 1e3)}


def run_headless(config: Path, seconds: float) -> dict[str, float]:
    """Decision latency of the session without any GUI."""
    from app.session import Session

    s = Session.from_file(config)
    s.open()
    s.run(seconds)
    if s.errors:
        raise RuntimeError(f"headless session failed: {s.errors}")
    return summary(s.latency.values())


def start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    """A private Xvfb on a free display number."""
    exe = shutil.which("Xvfb")
    if exe is None:
        raise RuntimeError("Xvfb is not installed; use --display offscreen")
    n = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    proc = subprocess.Popen([exe, f":{n}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"])
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("Xvfb did not start")
        time.sleep(0.05)
    return proc, f":{n}"


def run_gui(config: Path, seconds: float, warmup_s: float = 2.0, tab: str = "Signals") -> dict[str, float]:
    """Frames/s of the scope showing 64 ch at 1 kHz, and the decision latency meanwhile."""
    from PyQt6.QtWidgets import QApplication

    from ui.screenshots import open_window
    from ui.screenshots import pump as pump_events

    app = QApplication.instance() or QApplication(sys.argv[:1])

    def pump(t: float) -> None:
        pump_events(app, t)

    win = open_window(config, app)
    win.tabs.setCurrentIndex(list(win.TABS).index(tab))
    while not win.ctl.running or win.ctl.busy:
        pump(0.05)
    scope = win.signals.scope
    pump(warmup_s)
    s = win.ctl.session
    assert s is not None
    n_ch = len(scope.labels)
    f0, c0, t0 = scope.frames, s.latency.count, time.perf_counter()
    pump(seconds)
    f1, c1, t1 = scope.frames, s.latency.count, time.perf_counter()
    lat = s.latency.values()[-(c1 - c0) :] if c1 > c0 else np.zeros(0)
    out = {
        "fps": (f1 - f0) / (t1 - t0),
        "frames": f1 - f0,
        "channels": n_ch,
        "srate": scope.window.srate if scope.window else float("nan"),
        "platform": app.platformName(),
        **{f"latency_{k}": v for k, v in summary(lat).items()},
        "lost_samples": scope.n_lost,
    }
    win.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Run both phases; print a table or JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=15.0, help="measurement time per phase (default 15)")
    p.add_argument("--display", choices=["xvfb", "offscreen"], default="xvfb" if shutil.which("Xvfb") else "offscreen")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--tab", default="Signals", help="tab shown during the GUI phase (default Signals)")
    p.add_argument("--switch-ms", type=float, help="sys.setswitchinterval for both phases, in ms (default: as the GUI)")
    a = p.parse_args(argv)
    xvfb = None
    if a.display == "xvfb":
        xvfb, display = start_xvfb()
        os.environ["DISPLAY"] = display
        os.environ["QT_QPA_PLATFORM"] = "xcb"
    else:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    import app.cli  # noqa: F401 - quiet liblsl before pylsl loads

    if a.switch_ms is not None:
        sys.setswitchinterval(a.switch_ms / 1e3)

    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write_config(Path(tmp))
            load0 = os.getloadavg()
            headless = run_headless(cfg, a.seconds)
            gui = run_gui(cfg, a.seconds, tab=a.tab)
            load1 = os.getloadavg()
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(10)
    delta = gui["latency_p99_ms"] - headless["p99_ms"]
    result = {
        "display": a.display,
        "seconds": a.seconds,
        "cpus": os.cpu_count(),
        "load_avg_1min": [round(load0[0], 2), round(load1[0], 2)],
        "gui": gui,
        "headless": headless,
        "p99_delta_ms": delta,
        "goal_fps": GOAL_FPS,
        "goal_p99_delta_ms": GOAL_P99_DELTA_MS,
        "fps_ok": gui["fps"] >= GOAL_FPS,
        "latency_ok": delta <= GOAL_P99_DELTA_MS,
    }
    if a.json:
        print(json.dumps(result))
        return 0
    print(
        f"GUI frame rate, {gui['channels']} ch @ {gui['srate']:g} Hz on the scope ({gui['platform']}, "
        f"{a.seconds:g} s, load avg {load0[0]:.1f} -> {load1[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    print(f"  frames/s: {gui['fps']:.1f}  (goal >= {GOAL_FPS:g}: {'ok' if result['fps_ok'] else 'MISSED'})")
    print("decision latency (ms)      n     p50     p99     max")
    print(
        f"  headless          {headless['n']:>6} {headless['p50_ms']:7.2f} {headless['p99_ms']:7.2f} "
        f"{headless['max_ms']:7.2f}"
    )
    print(
        f"  GUI open          {gui['latency_n']:>6} {gui['latency_p50_ms']:7.2f} {gui['latency_p99_ms']:7.2f} "
        f"{gui['latency_max_ms']:7.2f}"
    )
    verdict = "ok" if result["latency_ok"] else "MISSED"
    print(f"  p99 GUI - headless: {delta:+.2f} ms (goal <= {GOAL_P99_DELTA_MS:g}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
