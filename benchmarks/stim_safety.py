"""Stimulation safety timings on the firmware's host build (``stimbox-sim`` on a pseudo-terminal).

Measures (issue 5, acceptance 1):

watchdog
    The host stops heartbeats; the device turns its outputs off by itself. Per trial: arm, start
    a channel, send one heartbeat (every 10th trial: run the heartbeat thread, then stop it like a
    crashed host), wait for the device's EVENT "outputs off, fault WATCHDOG". Reported on the
    device's own millisecond clock (EVENT ``t_ms`` − the last HEARTBEAT's device time: what the
    device does, independent of the pty) and on the host clock (last heartbeat queued -> off
    EVENT decoded: adds the pty transit and thread wake-ups). Limit: 100 ms.
estop-driver
    ``SerialStimulator.estop()`` called -> the device's "outputs off" EVENT decoded on the host
    (host clock; pty included) while a channel is stimulating.
estop-session
    ``Session.estop()`` on a running ``configs/nmes_sim.toml`` session (RISE loop stimulating)
    -> the device's "outputs off" EVENT decoded on the host.
estop-api
    ``POST /api/estop`` to an in-process daemon (real HTTP on 127.0.0.1) running
    ``configs/nmes_sim.toml`` -> the device's "outputs off" EVENT decoded in that session.
estop-cli
    ``closedloop estop --port PTY --json`` as a subprocess against an armed device: the ESTOP
    ACK round trip it reports (command queued -> device ACK decoded), and the process's wall time
    (Python start-up and imports included; not the safety path: the watchdog does not wait for it).

Limit for the e-stop paths: 20 ms to the device. Run::

    python benchmarks/stim_safety.py [--trials 100] [--estop-trials 20] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.config import load_config  # noqa: E402
from app.outputs import STIMBOX_SIM, StimboxSimProcess, StimulatorOutput  # noqa: E402
from app.session import Session  # noqa: E402
from stimulation.protocol import DeviceState, Event, Fault  # noqa: E402
from stimulation.serial_stimulator import SerialStimulator  # noqa: E402

WATCHDOG_LIMIT_MS = 100.0
ESTOP_LIMIT_MS = 20.0


def _stats(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        "n": len(s),
        "min_ms": s[0],
        "median_ms": statistics.median(s),
        "p99_ms": s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)],
        "max_ms": s[-1],
    }


def _ensure_sim() -> None:
    if not STIMBOX_SIM.is_file():
        subprocess.run(["make", "-C", str(REPO / "firmware"), "sim"], check=True, capture_output=True)


def bench_watchdog(trials: int) -> dict[str, Any]:
    dev: list[float] = []
    host: list[float] = []
    sim = StimboxSimProcess()
    try:
        with SerialStimulator(sim.path, timeout_s=0.5) as stim:
            stim.set_channel(0, current_ma=10.0, pulse_width_us=200, frequency_hz=25.0)
            for trial in range(trials):
                if trial > 0:
                    stim.clear_fault()
                stim.drain_events()
                stim.arm()
                stim.stim_on(0)
                if stim.wait_event(lambda e: e.outputs == 0b1, 1.0) is None:
                    raise RuntimeError(f"watchdog trial {trial}: the output never went on")
                if trial % 10 == 0:
                    stim.start_heartbeat(50.0)
                    deadline = time.monotonic() + 2.0
                    while stim.heartbeats_sent < 3 and time.monotonic() < deadline:
                        time.sleep(0.005)
                    stim.stop_heartbeat()
                else:
                    stim.heartbeat()
                last = stim.last_heartbeat
                off = stim.wait_event(lambda e: e.fault is Fault.WATCHDOG and e.outputs == 0, 1.0)
                if off is None or last is None:
                    raise RuntimeError(f"watchdog trial {trial}: no watchdog EVENT within 1 s")
                dev.append(float((off.event.t_ms - last.device_ms) & 0xFFFF_FFFF))
                host.append((off.received_s - last.sent_s) * 1000.0)
    finally:
        sim.close()
    return {"device_clock": _stats(dev), "host_clock": _stats(host), "limit_ms": WATCHDOG_LIMIT_MS}


def _off(ev: Event) -> bool:
    return ev.outputs == 0 and ev.state is DeviceState.FAULT


def bench_estop_driver(trials: int) -> dict[str, Any]:
    lat: list[float] = []
    sim = StimboxSimProcess()
    try:
        with SerialStimulator(sim.path, timeout_s=0.5) as stim:
            stim.set_channel(1, current_ma=10.0, pulse_width_us=200, frequency_hz=25.0)
            stim.start_heartbeat()
            for _ in range(trials):
                if stim.status().state is DeviceState.FAULT:
                    stim.clear_fault()
                stim.arm()
                stim.stim_on(1)
                stim.wait_event(lambda e: e.outputs == 0b10, 1.0)
                stim.drain_events()
                t0 = time.monotonic()
                stim.estop()
                off = stim.wait_event(_off, 1.0)
                if off is None:
                    raise RuntimeError("estop-driver: no off EVENT within 1 s")
                lat.append((off.received_s - t0) * 1000.0)
            stim.stop_heartbeat()
    finally:
        sim.close()
    return _stats(lat)


def _device_pw(out: StimulatorOutput) -> float:
    return out.driver.stimulator_status().channels[out.channel].delivered_pulse_width_us


def _wait(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def bench_estop_session(trials: int, audit: Path) -> dict[str, Any]:
    lat: list[float] = []
    s = Session(load_config(REPO / "configs" / "nmes_sim.toml"), audit_log_path=audit)
    s.open()
    try:
        s.start()
        out = s.outputs["nmes"]
        assert isinstance(out, StimulatorOutput)
        for _ in range(trials):
            _wait(lambda: _device_pw(out) > 0, 15.0, "stimulation to start")
            t0 = time.monotonic()
            s.estop("benchmark", who="bench")
            _wait(lambda t0=t0: out.last_off_event_s >= t0, 1.0, "the device's off EVENT")
            lat.append((out.last_off_event_s - t0) * 1000.0)
            s.clear_fault("bench", "next trial")
            s.arm("bench", "next trial")
    finally:
        s.stop()
    return _stats(lat)


def bench_estop_api(trials: int, audit: Path) -> dict[str, Any]:
    from app.daemon import ApiServer, Daemon

    cfg = load_config(REPO / "configs" / "nmes_sim.toml")
    assert cfg.safety is not None
    cfg = dataclasses.replace(cfg, safety=dataclasses.replace(cfg.safety, audit_log=str(audit)))  # absolute path
    daemon = Daemon(REPO / "configs" / "nmes_sim.toml", cfg, host="127.0.0.1", port=0, auth=False)
    server = ApiServer(("127.0.0.1", 0), daemon, None)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="bench-daemon", daemon=True)
    thread.start()

    def post(path: str) -> dict[str, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    lat: list[float] = []
    try:
        post("/api/session/start")
        s = daemon.session
        assert s is not None
        out = s.outputs["nmes"]
        assert isinstance(out, StimulatorOutput)
        for trial in range(trials):
            if trial > 0:
                post("/api/disarm")
                post("/api/arm")
            _wait(lambda: _device_pw(out) > 0, 15.0, "stimulation to start")
            t0 = time.monotonic()
            post("/api/estop")
            _wait(lambda t0=t0: out.last_off_event_s >= t0, 1.0, "the device's off EVENT")
            lat.append((out.last_off_event_s - t0) * 1000.0)
        post("/api/disarm")
        post("/api/session/stop")
    finally:
        daemon.shutdown("benchmark done")
        server.shutdown()
        server.server_close()
    return _stats(lat)


def bench_estop_cli(trials: int) -> dict[str, Any]:
    ack: list[float] = []
    wall: list[float] = []
    sim = StimboxSimProcess()
    try:
        for _ in range(trials):
            t0 = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "app.cli", "estop", "--port", sim.path, "--json"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=30,
            )
            wall.append((time.monotonic() - t0) * 1000.0)
            if proc.returncode != 0:
                raise RuntimeError(f"closedloop estop failed ({proc.returncode}): {proc.stderr.strip()}")
            ack.append(float(json.loads(proc.stdout)["ack_ms"]))
    finally:
        sim.close()
    return {"ack": _stats(ack), "process_wall": _stats(wall)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=100, help="watchdog trials (default 100, at least 100 for the claim)")
    ap.add_argument("--estop-trials", type=int, default=20, help="trials per e-stop path (default 20)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    import logging
    import tempfile

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("closedloop.daemon").setLevel(logging.CRITICAL + 1)  # its events would interleave the table

    _ensure_sim()
    with tempfile.TemporaryDirectory() as tmp:
        res: dict[str, Any] = {
            "watchdog": bench_watchdog(args.trials),
            "estop_driver": bench_estop_driver(args.estop_trials),
            "estop_session": bench_estop_session(args.estop_trials, Path(tmp) / "session.jsonl"),
            "estop_api": bench_estop_api(args.estop_trials, Path(tmp) / "api.jsonl"),
            "estop_cli": bench_estop_cli(max(3, args.estop_trials // 4)),
        }
    res["ok"] = bool(
        res["watchdog"]["device_clock"]["max_ms"] < WATCHDOG_LIMIT_MS
        and all(res[k]["max_ms"] < ESTOP_LIMIT_MS for k in ("estop_driver", "estop_session", "estop_api"))
        and res["estop_cli"]["ack"]["max_ms"] < ESTOP_LIMIT_MS
    )
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    rows = [
        ("watchdog, device clock", res["watchdog"]["device_clock"], WATCHDOG_LIMIT_MS),
        ("watchdog, host clock (pty)", res["watchdog"]["host_clock"], WATCHDOG_LIMIT_MS),
        ("e-stop: SerialStimulator.estop()", res["estop_driver"], ESTOP_LIMIT_MS),
        ("e-stop: Session.estop()", res["estop_session"], ESTOP_LIMIT_MS),
        ("e-stop: POST /api/estop", res["estop_api"], ESTOP_LIMIT_MS),
        ("e-stop: CLI --port, ESTOP ACK", res["estop_cli"]["ack"], ESTOP_LIMIT_MS),
        ("e-stop: CLI process wall time", res["estop_cli"]["process_wall"], math.nan),
    ]
    print(f"{'path':34s} {'n':>4s} {'min':>8s} {'median':>8s} {'p99':>8s} {'max':>8s} {'limit':>7s}  (ms)")
    for name, st, lim in rows:
        print(
            f"{name:34s} {st['n']:4d} {st['min_ms']:8.2f} {st['median_ms']:8.2f} {st['p99_ms']:8.2f} "
            f"{st['max_ms']:8.2f} {lim:7.0f}"
        )
    print("all within limits" if res["ok"] else "SOME LIMIT EXCEEDED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
