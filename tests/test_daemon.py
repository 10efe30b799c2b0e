"""The headless daemon, run as a rig would run it: a real process, real HTTP on 127.0.0.1, real files.

One daemon process (``configs/demo.toml``, simulated SSVEP EEG) serves most tests; the start-up
refusals and the SIGTERM-while-recording test start their own. Waits poll with deadlines.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import MODEL, REPO, wait_until

from acquisition.xdf_reader import read_xdf

CONFIG = "configs/demo.toml"
DEMO_LABELS = ["PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2"]  # the simulator's montage = the demo card's
EXPECTED_ROUTES = {
    ("/healthz", "get"),
    ("/openapi.json", "get"),
    ("/api/status", "get"),
    ("/api/session/start", "post"),
    ("/api/session/stop", "post"),
    ("/api/arm", "post"),
    ("/api/disarm", "post"),
    ("/api/estop", "post"),
    ("/api/model", "post"),
    ("/api/recording/start", "post"),
    ("/api/recording/stop", "post"),
    ("/api/commands", "get"),
    ("/api/latency", "get"),
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Client:
    """A plain HTTP client (http.client) for one daemon."""

    port: int
    token: str | None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | bool | None = True,
        headers: dict[str, str] | None = None,
    ) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            h = dict(headers or {})
            tok = self.token if token is True else token
            if tok:
                h["Authorization"] = f"Bearer {tok}"
            data: bytes | None = None
            if isinstance(body, bytes):
                data = body
            elif body is not None:
                data = json.dumps(body).encode()
            if data is not None:
                h["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            raw = r.read()
            assert r.getheader("Content-Type") == "application/json", raw
            return Response(r.status, json.loads(raw), {k.lower(): v for k, v in r.getheaders()})
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        r = self.request(method, path, body)
        assert r.status == 200, (method, path, r.status, r.body)
        return r.body

    def status(self) -> Any:
        return self.ok("GET", "/api/status")

    def n_commands(self) -> int:
        return int(self.ok("GET", "/api/commands?n=1")["total"])


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    client: Client
    log_path: Path

    def log_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]


def launch(
    tmp: Path,
    *args: str,
    token: str | None = None,
    token_env: str | None = None,
    port: int | None = None,
    config: str = CONFIG,
) -> tuple[subprocess.Popen[bytes], Path, int]:
    """Start ``python -m app.cli daemon --config configs/demo.toml`` with stderr (JSON logs) to a file."""
    port = free_port() if port is None else port
    env = {k: v for k, v in os.environ.items() if k != "CLOSEDLOOP_TOKEN"}
    if token_env is not None:
        env["CLOSEDLOOP_TOKEN"] = token_env
    cmd = [sys.executable, "-m", "app.cli", "daemon", "--config", config, "--port", str(port), *args]
    if token is not None:
        tf = tmp / "token"
        tf.write_text(token + "\n")
        tf.chmod(0o600)
        cmd += ["--token-file", str(tf)]
    log_path = tmp / f"daemon-{port}.log"
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env=env)
    return proc, log_path, port


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"daemon exited with {proc.returncode} before it was healthy:\n{log_path.read_text()}")
        try:
            r = Client(port, None).get("/healthz", token=False)
            if r.status == 200 and r.body["status"] == "ok":
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"daemon not healthy within {timeout} s:\n{log_path.read_text()}")


def terminate(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise
    return int(proc.returncode)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    tmp = tmp_path_factory.mktemp("daemon")
    token = secrets.token_urlsafe(32)
    proc, log_path, port = launch(tmp, token=token)
    try:
        wait_healthy(proc, port, log_path)
        yield DaemonProcess(proc, Client(port, token), log_path)
    finally:
        rc = terminate(proc)
    assert rc == 0, log_path.read_text()


@pytest.fixture
def api(daemon: DaemonProcess) -> Iterator[Client]:
    """The shared daemon's client; leaves it idle and disarmed after each test."""
    c = daemon.client
    yield c
    c.post("/api/disarm")
    if c.status()["daemon"]["session_running"]:
        c.ok("POST", "/api/session/stop")
    c.ok("POST", "/api/model", {"pipeline": "ssvep", "path": None})


def wait_commands(api: Client, more_than: int, timeout: float = 15.0) -> int:
    assert wait_until(lambda: api.n_commands() > more_than, timeout, interval=0.05), api.status()
    return api.n_commands()


# --------------------------------------------------------------------------------------------- start-up
@pytest.mark.parametrize(
    ("args", "token_env", "message"),
    [
        ([], None, "no API token"),
        (["--no-auth", "--host", "0.0.0.0"], None, "--no-auth is refused"),
        ([], "short", "at least 16 characters"),
    ],
)
def test_daemon_refuses_to_start_unsafely(tmp_path: Path, args: list[str], token_env: str | None, message: str) -> None:
    proc, log_path, _ = launch(tmp_path, *args, token_env=token_env)
    assert proc.wait(60) == 2, log_path.read_text()
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    failed = [e for e in events if e["event"] == "startup_failed"]
    assert failed and message in failed[0]["details"]["error"], events
    assert "Traceback" not in log_path.read_text()


# --------------------------------------------------------------------------------------------- protocol
def test_auth_is_required_on_every_api_route(api: Client) -> None:
    assert api.get("/healthz", token=False).status == 200
    for path, method in sorted(EXPECTED_ROUTES):
        if not path.startswith("/api/"):
            continue
        for token in (False, "wrong-" + secrets.token_urlsafe(24)):
            r = api.request(method.upper(), path, token=token)
            assert r.status == 401, (path, token, r.body)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.body["status"] == 401 and r.body["error"]
    r = api.get("/api/status", token=False, headers={"Authorization": f"Basic {api.token}"})
    assert r.status == 401 and "Bearer" in r.body["error"]
    assert api.get("/api/status").status == 200


def test_bad_requests_get_a_json_error_naming_the_problem(api: Client) -> None:
    r = api.post("/api/model", b'{"pipeline": "ssvep", ')
    assert r.status == 400 and "not valid JSON" in r.body["error"]
    r = api.post("/api/model", [1, 2])
    assert r.status == 400 and "JSON object" in r.body["error"]
    r = api.post("/api/model", {"pipeline": "ssvep"})
    assert r.status == 400 and "'path' is required" in r.body["error"]
    r = api.post("/api/model", {"pipeline": 3, "path": None})
    assert r.status == 400 and "'pipeline' must be str" in r.body["error"]
    r = api.post("/api/session/start", {"seconds": 3})
    assert r.status == 400 and "unknown key(s) ['seconds']" in r.body["error"]
    r = api.get("/api/commands?n=abc")
    assert r.status == 400 and "must be an integer" in r.body["error"]
    r = api.get("/api/nothing-here")
    assert r.status == 404 and "/api/nothing-here" in r.body["error"]
    r = api.get("/api/arm")
    assert r.status == 405 and r.headers["allow"] == "POST" and "GET is not allowed" in r.body["error"]
    r = api.request("DELETE", "/api/status")
    assert r.status == 405 and r.headers["allow"] == "GET"
    r = api.get("/api/status", headers={"Origin": "http://example.com"})
    assert r.status == 403 and "Origin" in r.body["error"]
    r = api.post("/api/session/stop")
    assert r.status == 409 and "no session is running" in r.body["error"]
    r = api.post("/api/arm")
    assert r.status == 409 and "running session" in r.body["error"]
    assert api.get("/healthz", token=False).status == 200  # still serving


def test_openapi_describes_every_route(api: Client) -> None:
    from app.daemon import ROUTES

    r = api.get("/openapi.json", token=False)
    assert r.status == 200
    doc = r.body
    assert doc["openapi"].startswith("3.1")
    listed = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert listed == EXPECTED_ROUTES
    assert {(p, m.lower()) for p, ms in ROUTES.items() for m in ms} == EXPECTED_ROUTES
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert "200" in op["responses"] and op["summary"]
            assert (op.get("security") == []) == (not path.startswith("/api/"))


# --------------------------------------------------------------------------------------------- the loop
def test_session_cycle_commands_latency_arm_estop(api: Client) -> None:
    r = api.post("/api/session/start")
    assert r.status == 200 and r.body["session"]["state"] == "running"
    r = api.post("/api/session/start")
    assert r.status == 409 and "already running" in r.body["error"]
    wait_commands(api, 5)
    body = api.ok("GET", "/api/commands?n=5")
    assert body["n"] == 5 and body["session_running"]
    seqs = [c["seq"] for c in body["commands"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    for c in body["commands"]:
        assert c["pipeline"] == "ssvep" and c["kind"] == "discrete"
        assert c["classes"] == ["8.0Hz", "10.0Hz", "12.0Hz", "15.0Hz"] and c["label"] in c["classes"]
        assert c["issued_time"] >= c["sample_time"]
    lat = api.ok("GET", "/api/latency")
    assert lat["n"] > 0 and 0 < lat["p50_ms"] <= lat["p99_ms"] < 1000

    assert api.ok("POST", "/api/arm")["safety"]["state"] == "armed"
    st = api.status()
    assert st["safety"]["state"] == "armed" and not st["safety"]["outputs_safe"]

    est = api.ok("POST", "/api/estop")
    assert est["previous"] == "armed" and est["safety"]["state"] == "estopped"
    st = api.status()
    assert st["safety"]["state"] == "estopped" and st["safety"]["outputs_safe"]
    sent = st["safety"]["outputs"]["commands"]["sent"]
    n = st["session"]["commands"]
    wait_commands(api, n + 5)  # decoding goes on while the outputs are held
    st = api.status()
    assert st["safety"]["outputs"]["commands"]["sent"] == sent
    assert st["safety"]["outputs"]["commands"]["held"] >= 5 and st["safety"]["held_commands"] >= 5
    r = api.post("/api/arm")
    assert r.status == 409 and "latched" in r.body["error"]
    assert api.status()["safety"]["state"] == "estopped"

    assert api.ok("POST", "/api/disarm")["previous"] == "estopped"
    assert api.status()["safety"]["state"] == "disarmed"
    api.ok("POST", "/api/arm")
    stopped = api.ok("POST", "/api/session/stop")
    assert stopped["state"] == "stopped" and stopped["commands"] > 0
    st = api.status()
    assert not st["daemon"]["session_running"] and st["session"]["state"] == "stopped"
    assert st["safety"]["state"] == "disarmed" and st["safety"]["outputs_safe"]  # a stop disarms
    assert api.post("/api/session/stop").status == 409


def test_estop_latch_refuses_session_start_until_disarm(api: Client) -> None:
    assert api.ok("POST", "/api/estop")["safety"]["state"] == "estopped"  # works without a session
    r = api.post("/api/session/start")
    assert r.status == 409 and "disarm" in r.body["error"]
    api.ok("POST", "/api/disarm")
    assert api.ok("POST", "/api/session/start")["started"]


def test_recording_start_stop_gives_a_complete_xdf(api: Client, tmp_path: Path) -> None:
    out = tmp_path / "rec.xdf"
    r = api.post("/api/recording/start", {"path": str(out)})
    assert r.status == 409 and "running session" in r.body["error"]
    api.ok("POST", "/api/session/start")
    wait_commands(api, 2)
    assert api.post("/api/recording/start", {"path": str(tmp_path / "x.txt")}).status == 422
    assert api.ok("POST", "/api/recording/start", {"path": str(out)})["path"] == str(out)
    r = api.post("/api/recording/start", {"path": str(tmp_path / "other.xdf")})
    assert r.status == 409 and "already recording" in r.body["error"]
    assert api.status()["daemon"]["recording"] == str(out)
    wait_commands(api, api.n_commands() + 10)
    api.ok("POST", "/api/estop")  # recorded as an event
    stopped = api.ok("POST", "/api/recording/stop")
    assert stopped["path"] == str(out) and stopped["commands"] >= 10 and stopped["lost_samples"] == 0
    assert api.post("/api/recording/stop").status == 409
    assert api.status()["daemon"]["session_running"]  # recording stop leaves the session running
    r = api.post("/api/recording/start", {"path": str(out)})
    assert r.status == 409 and "already exists" in r.body["error"]

    streams = {s.info.name: s for s in read_xdf(out)}
    assert all(s.complete for s in streams.values()), streams
    eeg = streams["closedloop-sim-ssvep"]
    assert eeg.n_samples >= 250 and eeg.info.srate == 250.0
    cmds = [json.loads(v[0]) for v in streams["closedloop-commands"].data]
    assert len(cmds) == stopped["commands"] and all(c["pipeline"] == "ssvep" for c in cmds)
    ev = streams["closedloop-events"]
    events = [json.loads(v[0])["event"] for v in ev.data]
    assert events[0] == "recording_started" and "estop" in events and events[-1] == "recording_stopped"
    # it starts when asked, not at the start of the ring buffers (which hold the session's first seconds)
    assert abs(eeg.timestamps[0] - ev.timestamps[0]) < 0.1
    assert eeg.timestamps[0] <= cmds[0]["sample_time"]


def test_model_load_checks_the_card_against_the_live_stream(api: Client, tmp_path: Path) -> None:
    from decoders.ssvep_reference import build_ssvep_reference_model, save_model

    wrong = save_model(
        build_ssvep_reference_model([8.0, 10.0, 12.0, 15.0], 256.0, 1.0, DEMO_LABELS), tmp_path / "ssvep_256.onnx"
    )
    same = tmp_path / "copy.onnx"
    shutil.copy(MODEL, same)
    api.ok("POST", "/api/session/start")
    started = api.status()["daemon"]["sessions_started"]

    r = api.post("/api/model", {"pipeline": "ssvep", "path": str(wrong)})
    assert r.status == 422, r.body
    assert "256" in r.body["error"] and "250" in r.body["error"] and "Hz" in r.body["error"]
    st = api.status()
    assert st["daemon"]["session_running"] and st["daemon"]["sessions_started"] == started  # untouched
    r = api.post("/api/model", {"pipeline": "nope", "path": str(same)})
    assert r.status == 400 and "'nope'" in r.body["error"]
    r = api.post("/api/model", {"pipeline": "ssvep", "path": str(tmp_path / "missing.onnx")})
    assert r.status == 422 and "does not exist" in r.body["error"]

    body = api.ok("POST", "/api/model", {"pipeline": "ssvep", "path": str(same)})
    assert body["restarted"] and body["checked_against_stream"] and body["card"]["srate"] == 250.0
    st = api.status()
    assert st["daemon"]["sessions_started"] == started + 1 and st["daemon"]["model_overrides"] == {"ssvep": str(same)}
    wait_commands(api, 2)  # the restarted session decodes with the loaded model

    api.ok("POST", "/api/session/stop")
    idle = api.ok("POST", "/api/model", {"pipeline": "ssvep", "path": str(wrong)})
    assert not idle["checked_against_stream"] and not idle["restarted"]
    r = api.post("/api/session/start")  # the stored override is checked against the stream at start
    assert r.status == 422 and "256" in r.body["error"] and "250" in r.body["error"]
    assert not api.ok("POST", "/api/model", {"pipeline": "ssvep", "path": None})["override"]
    assert api.status()["daemon"]["model_overrides"] == {}
    api.ok("POST", "/api/session/start")


# --------------------------------------------------------------------------------------------- signals
def test_sigterm_during_recording_exits_0_and_leaves_a_complete_xdf(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(32)
    proc, log_path, port = launch(tmp_path, "--start", token_env=token)  # token from the environment
    try:
        wait_healthy(proc, port, log_path)
        api = Client(port, token)
        assert wait_until(lambda: api.status()["daemon"]["session_running"], 15, interval=0.05)
        out = tmp_path / "sigterm.xdf"
        api.ok("POST", "/api/recording/start", {"path": str(out)})
        wait_commands(api, api.n_commands() + 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log_path.read_text()
    finally:
        terminate(proc)
    streams = {s.info.name: s for s in read_xdf(out)}
    assert streams and all(s.complete for s in streams.values()), streams
    assert streams["closedloop-sim-ssvep"].n_samples >= 250
    assert streams["closedloop-commands"].n_samples >= 10
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    for e in events:
        assert set(e) == {"time", "level", "event", "details"}, e
    names = [e["event"] for e in events]
    assert names[0] == "listening" and names[-1] == "stopped"
    shutdown = next(e for e in events if e["event"] == "shutdown")
    assert shutdown["details"]["signal"] == "SIGTERM"
    stop = next(e for e in events if e["event"] == "session_stopped")
    assert stop["details"]["recording"] == str(out)
    assert events[-1]["details"]["exit_code"] == 0


# --------------------------------------------------------------------------------------------- in-process
def test_a_failing_handler_answers_500_and_the_server_keeps_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from app import daemon as d
    from app.config import load_config

    def boom(_app: d.Daemon, _req: d.Request) -> dict[str, Any]:
        raise RuntimeError("handler exploded")

    monkeypatch.setitem(d.ROUTES, "/api/latency", {"GET": boom})
    token = secrets.token_urlsafe(32)
    app = d.Daemon(REPO / CONFIG, load_config(REPO / CONFIG), host="127.0.0.1", port=0, auth=True)
    server = d.ApiServer(("127.0.0.1", 0), app, token)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        api = Client(int(server.server_address[1]), token)
        r = api.get("/api/latency")
        assert r.status == 500 and "handler exploded" in r.body["error"]
        assert api.get("/healthz", token=False).status == 200
        assert api.status()["session"] is None
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --------------------------------------------------------------------------------------------- stimulation
def test_nmes_session_arm_estop_reach_the_supervisor_and_the_device(tmp_path: Path) -> None:
    """configs/nmes_sim.toml through the daemon: the API drives the SafetySupervisor and stimbox-sim."""
    audit = tmp_path / "audit.jsonl"
    text = (REPO / "configs" / "nmes_sim.toml").read_text()
    text = "\n".join(f'audit_log = "{audit}"' if line.startswith("audit_log") else line for line in text.splitlines())
    cfg = tmp_path / "nmes.toml"
    cfg.write_text(text)
    token = secrets.token_urlsafe(32)
    proc, log_path, port = launch(tmp_path, token=token, config=str(cfg))
    api = Client(port, token)
    try:
        wait_healthy(proc, port, log_path)
        api.ok("POST", "/api/session/start")  # arm_on_start: the simulated stimulator is armed at start

        def sup() -> dict[str, Any]:
            return api.status()["safety"]["supervisor"]

        def delivered() -> float:
            return float(sup()["outputs"]["nmes"]["delivered_pulse_width_us"])

        assert wait_until(lambda: delivered() > 0, 15.0, interval=0.05), api.status()["safety"]
        st = api.status()["safety"]
        assert st["state"] == "stimulating" and not st["outputs_safe"]
        assert st["supervisor"]["limits"]["max_current_ma"] == 40.0 and st["supervisor"]["dose_used_s"] > 0
        est = api.ok("POST", "/api/estop")
        assert est["previous"] == "stimulating" and est["safety"]["state"] == "estopped"
        assert est["safety"]["supervisor"]["state"] == "fault"
        assert est["safety"]["supervisor"]["fault"]["kind"] == "estop"
        assert est["safety"]["supervisor"]["outputs"]["nmes"]["delivered_pulse_width_us"] == 0
        assert api.post("/api/arm").status == 409
        time.sleep(0.3)  # the loop keeps running: nothing may reach the device while latched
        assert delivered() == 0
        assert api.ok("POST", "/api/disarm")["safety"]["state"] == "disarmed"
        assert api.ok("POST", "/api/arm")["safety"]["state"] in ("armed", "stimulating")
        assert wait_until(lambda: delivered() > 0, 15.0, interval=0.05)
        # the CLI path through the daemon API
        env = {**os.environ, "CLOSEDLOOP_TOKEN": token}
        out = subprocess.run(
            [sys.executable, "-m", "app.cli", "estop", "--api", f"http://127.0.0.1:{port}", "--json"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert got["via"] == "api" and got["state"] == "estopped" and got["previous"] in ("armed", "stimulating")
        assert delivered() == 0
        api.ok("POST", "/api/disarm")
        api.ok("POST", "/api/session/stop")
    finally:
        assert terminate(proc) == 0, log_path.read_text()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    estops = [r for r in records if r["event"] == "estop"]
    assert len(estops) == 2 and all(r["who"].startswith("api:127.0.0.1") for r in estops)
    assert any(r["event"] == "arm" and r["who"] == "config:arm_on_start" for r in records)
    assert any(r["event"] == "clear_fault" and r["who"].startswith("api:") for r in records)
