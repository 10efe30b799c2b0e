"""Headless lab-rig daemon: the Session behind an authenticated local HTTP/JSON control API.

``closedloop daemon --config rig.toml`` loads and validates the config once, then serves a
small JSON API (standard library only: :class:`http.server.ThreadingHTTPServer`) bound to
127.0.0.1 by default. Every ``/api/...`` route needs ``Authorization: Bearer <token>``; the
token comes from ``--token-file`` or the ``CLOSEDLOOP_TOKEN`` environment variable and is
compared with :func:`hmac.compare_digest`. Without a token the daemon refuses to start unless
``--no-auth`` is given, which is itself refused on a non-loopback address. ``GET /healthz``
and ``GET /openapi.json`` need no token. Logs are JSON lines on stderr, one object per
event: ``{"time", "level", "event", "details"}``.

Design rules (the README section "Headless daemon" is the user-facing version):

- **Same engine.** Every ``POST /api/session/start`` builds a new :class:`~app.session.Session`
  from the config (a Session opens once), with any model overrides applied; no pipeline logic
  lives here.
- **Safety.** ``arm`` / ``disarm`` / ``estop`` call the running Session's
  :meth:`~app.session.Session.arm`, :meth:`~app.session.Session.disarm`,
  :meth:`~app.session.Session.estop` and :meth:`~app.session.Session.clear_fault`, i.e. its
  :class:`~stimulation.safety.SafetySupervisor` and every stimulator device (audit log entries
  name the API client). On top, the daemon keeps an e-stop *latch* that outlives sessions:
  ``estop`` always succeeds (with or without a session), latches, e-stops the session (device
  ESTOP first, then the supervisor's fault), records an ``estop`` event and *holds* every
  non-stimulation output (commands are still decoded, counted and recorded, but not
  delivered) until ``POST /api/disarm`` releases the latch: it clears the supervisor's fault and
  disarms (to ``disarmed``, never straight back to ``armed``). While latched, ``arm`` and session
  (re)starts answer 409. The reported ``state`` is ``estopped`` while latched, otherwise the
  supervisor's (``disarmed`` / ``armed`` / ``stimulating`` / ``fault``).
- **Models.** Pipelines are built when a session opens, so ``POST /api/model`` checks the
  file's card (:func:`decoders.card.read_card`) against the live stream
  (:meth:`~decoders.card.ModelCard.check_stream`, then a dry-run
  :func:`~app.session.build_pipeline`), answers 422 with the mismatch message on failure and
  otherwise stores the override and restarts the session with it. With no session running
  the card is validated and stored; the stream check happens at the next start.
- **Recording** is attached to the running session without restarting it: a
  :class:`~app.recorder.Recorder` that starts at the ring buffers' current write counters is
  placed on ``session.recorder`` (which the session already feeds with commands and events)
  and detached and closed on ``POST /api/recording/stop``, session stop, or shutdown.
- **Signals.** SIGTERM/SIGINT stop the session (outputs to their safe state, recording closed
  with its footers), shut the server down and exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import logging
import math
import os
import signal
import socket
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from app.config import ConfigError, SessionConfig, load_config
from app.pipeline import Command
from app.recorder import Recorder
from app.session import Session, build_pipeline
from decoders.card import CardMismatchError, read_card

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ROUTES",
    "TOKEN_ENV",
    "ApiError",
    "Daemon",
    "DaemonError",
    "GatedOutput",
    "SafetyState",
    "openapi_document",
    "run",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_ENV = "CLOSEDLOOP_TOKEN"
MIN_TOKEN_LENGTH = 16
MAX_BODY_BYTES = 1 << 20
MAX_RECENT_COMMANDS = 500
API_VERSION = "1.0.0"

EVENT_LOGGER = "closedloop.daemon"
_events = logging.getLogger(EVENT_LOGGER)


# ============================================================================ errors
class DaemonError(Exception):
    """The daemon refuses to start (no token, unsafe host, unreadable token file...); exit code 2."""


class ApiError(Exception):
    """An API request that cannot be served; becomes a JSON error response.

    Parameters
    ----------
    status : int
        HTTP status code (4xx / 5xx).
    message : str
        What went wrong and, where possible, what to do about it.
    headers : mapping of str to str, optional
        Extra response headers (``Allow``, ``WWW-Authenticate``).
    """

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# ============================================================================ logging
def _jsonable(value: Any) -> Any:
    """Copy ``value`` into plain JSON types; NaN/Inf become None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        with contextlib.suppress(TypeError, ValueError):
            return _jsonable(value.item())
    return str(value)


def _iso(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).isoformat(timespec="milliseconds")


class JsonLineFormatter(logging.Formatter):
    """Format every log record as one JSON object: ``{"time", "level", "event", "details"}``.

    Records emitted through :func:`emit` carry ``event`` and ``details``; any other record
    (from the engine's modules) becomes ``event = "log"`` with the logger name and message.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON."""
        event = getattr(record, "event", None)
        details = dict(getattr(record, "details", None) or {})
        if not event:
            event = "log"
            details = {"logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            details["traceback"] = self.formatException(record.exc_info)
        obj = {"time": _iso(record.created), "level": record.levelname.lower(), "event": event, "details": details}
        return json.dumps(_jsonable(obj), separators=(",", ":"))


def setup_logging(verbose: int = 0, stream: Any = None) -> None:
    """Send every log record of this process to ``stream`` (stderr) as JSON lines.

    Parameters
    ----------
    verbose : int
        0: daemon events at info and above, other modules at warning; 1: other modules at
        info; 2: everything at debug (incl. one event per GET request).
    stream : file-like, optional
        Where to write (default ``sys.stderr``).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.WARNING - 10 * min(verbose, 2))
    _events.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)


def emit(level: int, event: str, **details: Any) -> None:
    """Log one structured daemon event (``level`` is a :mod:`logging` level)."""
    _events.log(level, event, extra={"event": event, "details": details})


# ============================================================================ safety latch
DISARMED, ARMED, ESTOPPED = "disarmed", "armed", "estopped"


class SafetyState:
    """Front-end e-stop latch and armed flag that outlive a Session (the Session's SafetySupervisor does the rest).

    Transitions::

        disarmed --arm (running session)--> armed
        armed    --disarm | session stop/restart/fault--> disarmed
        any      --estop--> estopped      (latched; outputs held in their safe state)
        estopped --disarm--> disarmed     (explicit release; never straight back to armed)

    Methods are thread-safe and never block on anything slow, so an e-stop is not delayed by
    a session that is starting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state = DISARMED
        self.since = time.time()
        self.reason = "daemon started"
        self.n_estops = 0
        self.n_held = 0  # commands not delivered to outputs because the e-stop is latched

    @property
    def holds_outputs(self) -> bool:
        """True while the e-stop latch holds every output in its safe state."""
        return self.state == ESTOPPED

    def _set(self, state: str, reason: str) -> str:
        prev = self.state
        self.state, self.since, self.reason = state, time.time(), reason
        return prev

    def arm(self, reason: str) -> str:
        """Move to ``armed``; return the previous state.

        Raises
        ------
        ApiError
            409 while the e-stop is latched.
        """
        with self._lock:
            if self.state == ESTOPPED:
                raise ApiError(
                    409, "cannot arm: the e-stop is latched; POST /api/disarm to release it, then arm again."
                )
            return self._set(ARMED, reason) if self.state != ARMED else ARMED

    def disarm(self, reason: str) -> str:
        """Move to ``disarmed`` (also releases a latched e-stop); return the previous state."""
        with self._lock:
            return self._set(DISARMED, reason)

    def estop(self, reason: str) -> str:
        """Latch the e-stop; return the previous state."""
        with self._lock:
            self.n_estops += 1
            return self._set(ESTOPPED, reason)

    def session_ended(self, reason: str) -> bool:
        """Disarm because the session stopped, restarted or faulted; a latched e-stop stays. True if it changed."""
        with self._lock:
            if self.state == ARMED:
                self._set(DISARMED, reason)
                return True
            return False

    def snapshot(self) -> dict[str, Any]:
        """JSON-able view for ``/api/status``."""
        return {
            "state": self.state,
            "since": _iso(self.since),
            "reason": self.reason,
            "estops": self.n_estops,
            "held_commands": self.n_held,
        }


class GatedOutput:
    """Wraps one session output so a latched e-stop holds it in its safe state.

    ``send`` is dropped (and counted in :attr:`SafetyState.n_held`) while the e-stop is
    latched; ``safe_state`` and ``close`` always pass through.

    Parameters
    ----------
    inner : Output
        The session's output (e.g. :class:`~app.outputs.LslCommandOutlet`).
    safety : SafetyState
        The daemon's safety state.
    """

    def __init__(self, inner: Any, safety: SafetyState) -> None:
        self.inner = inner
        self.name: str = inner.name
        self.safety = safety
        self.n_held = 0

    def send(self, command: Command) -> None:
        """Deliver ``command`` unless the e-stop is latched."""
        if self.safety.holds_outputs:
            self.n_held += 1
            self.safety.n_held += 1
            return
        self.inner.send(command)

    def safe_state(self, reason: str) -> None:
        """Put the wrapped output in its safe state."""
        self.inner.safe_state(reason)

    def close(self) -> None:
        """Close the wrapped output."""
        self.inner.close()

    def snapshot(self) -> dict[str, Any]:
        """Kind, commands delivered and held."""
        return {"kind": type(self.inner).__name__, "sent": getattr(self.inner, "n_sent", None), "held": self.n_held}


def _stimulation_output(out: Any) -> bool:
    """True for outputs the session's SafetySupervisor gates itself (stimulator, audio)."""
    from app.outputs import StimulatorOutput

    return isinstance(out, StimulatorOutput) or type(out).__name__ == "AudioOutput"


# ============================================================================ the controller
@dataclass
class Request:
    """What a route handler gets: the parsed query, the JSON body (a dict) and the client address."""

    query: dict[str, list[str]] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    client: str = ""


def _fields(body: Mapping[str, Any], spec: Mapping[str, tuple[type | tuple[type, ...], bool]]) -> dict[str, Any]:
    """Check a JSON body against ``{key: (types, required)}``; 400 naming unknown, missing or wrong keys."""
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise ApiError(400, f"unknown key(s) {unknown} in the request body; allowed keys are {sorted(spec)}.")
    out: dict[str, Any] = {}
    for key, (types, required) in spec.items():
        if key not in body:
            if required:
                raise ApiError(400, f"request body key {key!r} is required but missing.")
            continue
        value = body[key]
        tup = types if isinstance(types, tuple) else (types,)
        if not isinstance(value, tup) or (isinstance(value, bool) and bool not in tup):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in tup)
            raise ApiError(400, f"request body key {key!r} must be {names}, found {value!r}.")
        out[key] = value
    return out


class Daemon:
    """The controller behind the API: owns the current Session, the safety state and overrides.

    Control operations (session start/stop, model, recording, arm) are serialised by one lock;
    ``estop``, ``disarm`` and the read-only routes never wait for it.

    Parameters
    ----------
    config_path : Path
        The config file (shown in the status).
    config : SessionConfig
        The validated config every session is built from.
    host, port : str, int
        Where the API listens (shown in the status).
    auth : bool
        Whether the API requires a token (shown in the status).
    """

    def __init__(self, config_path: Path, config: SessionConfig, *, host: str, port: int, auth: bool) -> None:
        self.config_path = config_path.resolve()
        self.config = config
        self.host = host
        self.port = port
        self.auth = auth
        self.safety = SafetyState()
        self.session: Session | None = None
        self.sessions_started = 0
        self.model_overrides: dict[str, Path] = {}
        self.started = time.monotonic()
        self._lock = threading.RLock()
        self._closing = False
        self._fault_seen: Session | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def session_running(self) -> bool:
        """True while the current session is in state ``running``."""
        s = self.session
        return s is not None and s.state == "running"

    def _recording(self) -> Recorder | None:
        s = self.session
        if s is None or s.recorder is None or s.recorder.closed:
            return None
        return s.recorder

    def _record_event(self, kind: str, details: dict[str, Any]) -> None:
        rec = self._recording()
        if rec is not None:
            rec.add_event(kind, details)

    def _resolve(self, path: str) -> Path:
        """A path from a request: relative paths are relative to the config file's folder (like the config's)."""
        p = Path(path).expanduser()
        return (p if p.is_absolute() else self.config.base_dir / p).resolve()

    def _effective_config(self) -> SessionConfig:
        pipelines = {
            name: dataclasses.replace(p, model=self.model_overrides[name]) if name in self.model_overrides else p
            for name, p in self.config.pipelines.items()
        }
        return dataclasses.replace(self.config, pipelines=pipelines)

    def _refuse_if_closing(self) -> None:
        if self._closing:
            raise ApiError(503, "the daemon is shutting down.")

    def _open_session(self) -> Session:
        """Build, open, gate and start a new Session from the config (caller holds the lock)."""
        self._refuse_if_closing()
        if self.safety.holds_outputs:
            raise ApiError(409, "the e-stop is latched; POST /api/disarm to release it before starting a session.")
        session = Session(self._effective_config())
        try:
            session.open()
        except CardMismatchError as exc:
            raise ApiError(422, f"session refused to open: {exc}") from exc
        except TimeoutError as exc:
            raise ApiError(503, f"session could not open a source: {exc}") from exc
        except (ValueError, FileNotFoundError) as exc:
            raise ApiError(422, f"session could not open: {exc}") from exc
        for name, out in list(session.outputs.items()):
            if not _stimulation_output(out):  # stimulation outputs are gated by the session's supervisor
                session.outputs[name] = GatedOutput(out, self.safety)
        try:
            session.start()
        except BaseException:
            session.stop()
            raise
        if self.safety.holds_outputs:  # an e-stop arrived while the session was starting
            session.estop("e-stop latched while the session was starting", who="daemon")
        self.session = session
        self.sessions_started += 1
        emit(
            logging.INFO,
            "session_started",
            name=session.config.name,
            n=self.sessions_started,
            models={n: str(p.model) for n, p in session.config.pipelines.items()},
            recording=str(session.record_path) if session.recorder is not None else None,
        )
        return session

    def _stop_session(self, reason: str) -> dict[str, Any]:
        """Stop the current session: outputs safe, threads stopped, recording closed (caller holds the lock)."""
        s = self.session
        assert s is not None
        rec = self._recording()
        if self.safety.session_ended(f"session stopped: {reason}"):
            emit(logging.INFO, "disarmed", reason=f"session stopped: {reason}")
        self._record_event("session_stop", {"reason": reason})
        s.stop()
        out = {
            "reason": reason,
            "state": s.state,
            "commands": s.n_commands,
            "recording": str(rec.path) if rec is not None else None,
        }
        emit(logging.INFO, "session_stopped", **out)
        return out

    # ------------------------------------------------------------------ routes
    def api_healthz(self, req: Request) -> dict[str, Any]:
        """``GET /healthz``: liveness (no auth)."""
        return {"status": "ok", "uptime_s": round(time.monotonic() - self.started, 3)}

    def api_status(self, req: Request) -> dict[str, Any]:
        """``GET /api/status``: daemon info, safety state and the current (or last) session's status."""
        s = self.session
        rec = self._recording()
        outputs = {n: o.snapshot() for n, o in s.outputs.items() if isinstance(o, GatedOutput)} if s else {}
        for snap in outputs.values():  # the engine itself holds every output while its supervisor is in fault
            snap["held"] += getattr(s, "n_held_safety", 0)
        return {
            "daemon": {
                "api_version": API_VERSION,
                "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self.started, 3),
                "config": str(self.config_path),
                "host": self.host,
                "port": self.port,
                "auth": self.auth,
                "session_running": self.session_running,
                "sessions_started": self.sessions_started,
                "model_overrides": {k: str(v) for k, v in self.model_overrides.items()},
                "recording": str(rec.path) if rec is not None else None,
            },
            "safety": {
                **self._safety_view(),
                "outputs_safe": not self.session_running
                or self.safety.holds_outputs
                or self._combined_state() in (DISARMED, "fault"),
                "outputs": outputs,
            },
            "session": s.status() if s is not None else None,
        }

    def api_session_start(self, req: Request) -> dict[str, Any]:
        """``POST /api/session/start``: build and start a new Session from the config."""
        _fields(req.body, {})
        with self._lock:
            s = self.session
            if s is not None and s.state == "running":
                raise ApiError(409, f"session {s.config.name!r} is already running; POST /api/session/stop first.")
            if s is not None and s.state == "fault":
                last = s.errors[-1]["error"] if s.errors else "unknown error"
                raise ApiError(
                    409,
                    f"the current session faulted ({last}); its outputs are safe. POST /api/session/stop to clear "
                    "it, then start again.",
                )
            session = self._open_session()
            return {"started": True, "session": session.status()}

    def api_session_stop(self, req: Request) -> dict[str, Any]:
        """``POST /api/session/stop``: outputs to their safe state, recording closed."""
        _fields(req.body, {})
        with self._lock:
            s = self.session
            if s is None or s.state not in ("open", "running", "fault"):
                state = s.state if s is not None else "none started"
                raise ApiError(409, f"no session is running (last session: {state}); nothing to stop.")
            return {"stopped": True, **self._stop_session("stop via API")}

    def _live_session(self) -> Session | None:
        s = self.session
        return s if s is not None and s.state in ("open", "running", "fault") else None

    def _combined_state(self) -> str:
        """``estopped`` while latched, else the live session's supervisor state, else ``disarmed``."""
        if self.safety.holds_outputs:
            return ESTOPPED
        s = self._live_session()
        if s is None:
            return DISARMED
        return str(s.safety_status()["state"])

    def _safety_view(self) -> dict[str, Any]:
        """The latch snapshot with the combined state and the supervisor's status (limits, dose, outputs)."""
        snap = self.safety.snapshot()
        s = self._live_session()
        if self.session is not None:  # held by the engine (supervisor fault) plus by the daemon's latch
            snap["held_commands"] += getattr(self.session, "n_held_safety", 0)
        snap["state"] = self._combined_state()
        snap["supervisor"] = s.safety_status() if s is not None else None
        return snap

    def api_arm(self, req: Request) -> dict[str, Any]:
        """``POST /api/arm``: arm the session's supervisor and stimulators (running session, no latched e-stop)."""
        _fields(req.body, {})
        who = f"api:{req.client}"
        with self._lock:
            s = self.session
            if s is None or s.state != "running":
                state = s.state if s is not None else "none started"
                raise ApiError(409, f"arming needs a running session (session: {state}); POST /api/session/start.")
            prev = self._combined_state()
            self.safety.arm(f"arm via API from {req.client}")  # 409 while the e-stop is latched
            try:
                s.arm(who, "arm via API")
            except RuntimeError as exc:
                self.safety.disarm(f"arm refused by the session: {exc}")
                raise ApiError(409, f"cannot arm: {exc}") from exc
        if prev != ARMED:
            emit(logging.WARNING, "armed", client=req.client)
            self._record_event("arm", {"via": "daemon API", "client": req.client})
        return {"previous": prev, "safety": self._safety_view()}

    def api_disarm(self, req: Request) -> dict[str, Any]:
        """``POST /api/disarm``: disarm; also releases a latched e-stop and clears the supervisor's fault."""
        _fields(req.body, {})
        who = f"api:{req.client}"
        prev = self._combined_state()
        self.safety.disarm(f"disarm via API from {req.client}")
        s = self._live_session()
        if s is not None:
            if s.safety_status()["state"] == "fault":
                s.clear_fault(who, "released by POST /api/disarm")
            s.disarm(who, "disarm via API")
        if prev != DISARMED:
            emit(logging.WARNING, "disarmed", previous=prev, client=req.client)
            self._record_event("disarm", {"via": "daemon API", "previous": prev, "client": req.client})
        return {"previous": prev, "safety": self._safety_view()}

    def api_estop(self, req: Request) -> dict[str, Any]:
        """``POST /api/estop``: latch the e-stop, every device and output to its safe state now. Always succeeds."""
        reason = "estop via API"
        prev = self._combined_state()
        self.safety.estop(f"{reason} from {req.client}")  # the gate closes before anything else
        s = self._live_session()
        if s is not None:  # a stopped session's outputs are closed
            s.estop(reason, who=f"api:{req.client}")  # device ESTOP first, then the supervisor; never raises
        self._record_event("estop", {"reason": reason, "previous": prev, "client": req.client})
        emit(logging.CRITICAL, "estop", previous=prev, client=req.client, session=s.state if s else None)
        return {"previous": prev, "safety": self._safety_view()}

    def api_model(self, req: Request) -> dict[str, Any]:
        """``POST /api/model``: check a model against the live stream, store it, restart the session with it."""
        b = _fields(req.body, {"pipeline": (str, True), "path": ((str, type(None)), True)})
        name: str = b["pipeline"]
        with self._lock:
            self._refuse_if_closing()
            if name not in self.config.pipelines:
                raise ApiError(
                    400, f"pipeline {name!r} is not in the config; pipelines: {sorted(self.config.pipelines)}."
                )
            path = self._resolve(b["path"]) if b["path"] is not None else self.config.pipelines[name].model
            try:
                card = read_card(path)
            except (FileNotFoundError, ValueError) as exc:
                raise ApiError(422, f"model for pipeline {name!r} refused: {exc}") from exc
            s = self.session
            running = s is not None and s.state == "running"
            if s is not None and running:
                if self._recording() is not None:
                    raise ApiError(
                        409,
                        "a recording is in progress; loading a model restarts the session, which would end it. "
                        "POST /api/recording/stop first.",
                    )
                if self.safety.holds_outputs:
                    raise ApiError(409, "the e-stop is latched; POST /api/disarm before loading a model (it restarts).")
                pcfg = dataclasses.replace(s.config.pipelines[name], model=path)
                src = s.sources[pcfg.source]
                stream = src.streams[pcfg.stream] if pcfg.stream else src.primary()
                labels = list(pcfg.channels) if pcfg.channels is not None else list(stream.info.labels)
                try:
                    card.check_stream(stream.info.srate, labels, stream_name=stream.info.name)
                    build_pipeline(pcfg, stream)  # dry run: window, filters and the ONNX session itself
                except (CardMismatchError, ValueError) as exc:
                    emit(logging.WARNING, "model_refused", pipeline=name, path=str(path), error=str(exc))
                    raise ApiError(422, f"model {str(path)!r} for pipeline {name!r} refused: {exc}") from exc
            if b["path"] is None:
                self.model_overrides.pop(name, None)
            else:
                self.model_overrides[name] = path
            emit(logging.INFO, "model_loaded", pipeline=name, path=str(path), restart=running)
            if running:
                self._stop_session(f"model change for pipeline {name!r}")
                self._open_session()
            return {
                "pipeline": name,
                "model": str(path),
                "override": b["path"] is not None,
                "card": card.to_dict(),
                "checked_against_stream": running,
                "restarted": running,
                "safety": self._safety_view(),
            }

    def _default_record_path(self) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = (
            self.config.base_dir / self.config.recording.path.format(session=self.config.name, time=stamp)
        ).resolve()
        path, k = base, 1
        while path.exists():
            path = base.with_name(f"{base.stem}-{k}{base.suffix}")
            k += 1
        return path

    def api_recording_start(self, req: Request) -> dict[str, Any]:
        """``POST /api/recording/start``: record the running session to XDF from now on (no restart)."""
        b = _fields(req.body, {"path": ((str, type(None)), False)})
        with self._lock:
            self._refuse_if_closing()
            s = self.session
            if s is None or s.state != "running":
                raise ApiError(409, "recording needs a running session; POST /api/session/start first.")
            current = self._recording()
            if current is not None:
                raise ApiError(409, f"already recording to {str(current.path)!r}; POST /api/recording/stop first.")
            path = self._resolve(b["path"]) if b.get("path") else self._default_record_path()
            if path.suffix != ".xdf":
                raise ApiError(422, f"recording path {str(path)!r} must end in .xdf.")
            if path.exists():
                raise ApiError(409, f"recording path {str(path)!r} already exists; choose another name.")
            streams = [st for src in s.sources.values() for st in src.streams.values()]
            session = s
            try:
                rec = Recorder(
                    path,
                    streams,
                    from_now=True,
                    flush_interval_s=s.config.recording.flush_interval_s,
                    on_error=lambda exc, tb: session.report_error("recorder", exc, tb),
                )
            except OSError as exc:
                raise ApiError(422, f"cannot create recording {str(path)!r}: {exc}") from exc
            rec.start()
            s.record_path = path
            s.recorder = rec
            rec.add_event("recording_started", {"via": "daemon API", "client": req.client})
            emit(logging.INFO, "recording_started", path=str(path), client=req.client)
            return {"recording": True, "path": str(path)}

    def api_recording_stop(self, req: Request) -> dict[str, Any]:
        """``POST /api/recording/stop``: close the recording (stream footers written); the session keeps running."""
        _fields(req.body, {})
        with self._lock:
            rec = self._recording()
            s = self.session
            if rec is None or s is None:
                raise ApiError(409, "no recording is in progress.")
            rec.add_event("recording_stopped", {"via": "daemon API", "client": req.client})
            s.recorder = None  # the session stops feeding it before it closes
            rec.close()
            out = {
                "recording": False,
                "path": str(rec.path),
                "commands": rec.n_commands,
                "events": rec.n_events,
                "lost_samples": rec.n_lost,
                "bytes": rec.path.stat().st_size if rec.path.exists() else None,
            }
            emit(logging.INFO, "recording_stopped", **out)
            return out

    def api_commands(self, req: Request) -> dict[str, Any]:
        """``GET /api/commands?n=50``: the most recent commands (oldest first)."""
        unknown = sorted(set(req.query) - {"n", "pipeline"})
        if unknown:
            raise ApiError(400, f"unknown query parameter(s) {unknown}; allowed: n, pipeline.")
        raw = req.query.get("n", ["50"])[-1]
        try:
            n = int(raw)
        except ValueError:
            raise ApiError(400, f"query parameter n must be an integer, found {raw!r}.") from None
        if not 1 <= n <= MAX_RECENT_COMMANDS:
            raise ApiError(400, f"query parameter n must be between 1 and {MAX_RECENT_COMMANDS}, found {n}.")
        pipeline = req.query.get("pipeline", [None])[-1]
        s = self.session
        recent: list[Command] = []
        if s is not None:
            for _ in range(5):  # the deque is appended on the decoding thread
                try:
                    recent = list(s.recent_commands)
                    break
                except RuntimeError:
                    continue
        if pipeline is not None:
            recent = [c for c in recent if c.pipeline == pipeline]
        recent = recent[-n:]
        return {
            "n": len(recent),
            "total": s.n_commands if s is not None else 0,
            "session_running": self.session_running,
            "commands": [json.loads(c.to_json()) for c in recent],
        }

    def api_latency(self, req: Request) -> dict[str, Any]:
        """``GET /api/latency``: decision latency summary of the current (or last) session."""
        s = self.session
        if s is None:
            return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
        return dict(s.latency.summary())

    def api_openapi(self, req: Request) -> dict[str, Any]:
        """``GET /openapi.json``: the OpenAPI 3.1 description (no auth)."""
        return openapi_document(self.host, self.port)

    # ------------------------------------------------------------------ lifecycle
    def tick(self) -> None:
        """Periodic check from the main thread: report faults (and disarm), stop finished sessions."""
        s = self.session
        if s is None:
            return
        if s.state == "fault" and self._fault_seen is not s:
            self._fault_seen = s
            if self.safety.session_ended("session fault"):
                emit(logging.WARNING, "disarmed", reason="session fault")
            emit(logging.ERROR, "session_fault", errors=[{k: v for k, v in e.items()} for e in s.errors])
        elif s.state == "running" and s.sources and all(src.finished.is_set() for src in s.sources.values()):
            with self._lock:
                if self.session is s and s.state == "running":
                    self._stop_session("every source finished")

    def shutdown(self, reason: str) -> None:
        """Refuse further control requests and stop the session (outputs safe, recording closed)."""
        with self._lock:
            self._closing = True
            s = self.session
            if s is not None and s.state in ("open", "running", "fault"):
                self._stop_session(f"daemon shutdown ({reason})")


Handler = Callable[[Daemon, Request], dict[str, Any]]

#: Every route: path -> method -> handler. Paths under /api/ need the bearer token.
ROUTES: dict[str, dict[str, Handler]] = {
    "/healthz": {"GET": Daemon.api_healthz},
    "/openapi.json": {"GET": Daemon.api_openapi},
    "/api/status": {"GET": Daemon.api_status},
    "/api/session/start": {"POST": Daemon.api_session_start},
    "/api/session/stop": {"POST": Daemon.api_session_stop},
    "/api/arm": {"POST": Daemon.api_arm},
    "/api/disarm": {"POST": Daemon.api_disarm},
    "/api/estop": {"POST": Daemon.api_estop},
    "/api/model": {"POST": Daemon.api_model},
    "/api/recording/start": {"POST": Daemon.api_recording_start},
    "/api/recording/stop": {"POST": Daemon.api_recording_stop},
    "/api/commands": {"GET": Daemon.api_commands},
    "/api/latency": {"GET": Daemon.api_latency},
}


# ============================================================================ OpenAPI
def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed JSON, a body that is not an object, or unknown / missing / mistyped keys.",
        401: "Missing or wrong bearer token.",
        403: "Cross-origin browser request, or a Host header that is not this loopback address.",
        409: "Wrong state for this operation (the message says which and what to do).",
        413: "Request body larger than 1 MiB.",
        422: "Well-formed request that cannot be applied (model card mismatch, unreadable file...).",
        503: "The daemon is shutting down, or a source could not be opened.",
    }
    return {str(c): _json_response(text[c], _ref("Error")) for c in codes}


def _post(summary: str, description: str, ok: dict[str, Any], codes: tuple[int, ...], body: Any = None) -> dict:
    op: dict[str, Any] = {
        "summary": summary,
        "description": description,
        "responses": {"200": _json_response("Done.", ok), **_errors(400, 401, 403, 413, *codes), "500": _ERR500},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    else:
        op["requestBody"] = {
            "required": False,
            "description": "Empty, or an empty JSON object.",
            "content": {"application/json": {"schema": {"type": "object", "additionalProperties": False}}},
        }
    return op


_ERR500 = _json_response(
    "Unexpected error in the handler (logged with its traceback; the server keeps running).", _ref("Error")
)


def openapi_document(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> dict[str, Any]:
    """The hand-written OpenAPI 3.1 description of every route in :data:`ROUTES`."""
    safety = {"type": "object", "properties": {"previous": {"type": "string"}, "safety": _ref("Safety")}}
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness probe",
                "security": [],
                "responses": {
                    "200": _json_response(
                        "The server answers.",
                        {"type": "object", "properties": {"status": {"const": "ok"}, "uptime_s": {"type": "number"}}},
                    )
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": _json_response("OpenAPI 3.1 document.", {"type": "object"})},
            }
        },
        "/api/status": {
            "get": {
                "summary": "Daemon, safety and session status",
                "description": "`session` is the current or last session's `Session.status()`, null before one.",
                "responses": {"200": _json_response("Status.", _ref("Status")), **_errors(401, 403), "500": _ERR500},
            }
        },
        "/api/session/start": {
            "post": _post(
                "Start a session",
                "Builds a new Session from the config (with model overrides) and starts it. 409 if one is running, "
                "the last one faulted (stop it first) or the e-stop is latched.",
                {"type": "object", "properties": {"started": {"type": "boolean"}, "session": {"type": "object"}}},
                (409, 422, 503),
            )
        },
        "/api/session/stop": {
            "post": _post(
                "Stop the session",
                "Every output to its safe state, threads stopped, recording closed. Disarms (a latched e-stop stays).",
                {
                    "type": "object",
                    "properties": {"stopped": {"type": "boolean"}, "recording": {"type": ["string", "null"]}},
                },
                (409,),
            )
        },
        "/api/arm": {
            "post": _post(
                "Arm",
                "Needs a running session and no latched e-stop (409 otherwise); arms the SafetySupervisor and devices.",
                safety,
                (409,),
            )
        },
        "/api/disarm": {
            "post": _post(
                "Disarm / release the e-stop",
                "Always succeeds; from `estopped` it releases the latch to `disarmed`.",
                safety,
                (),
            )
        },
        "/api/estop": {
            "post": _post(
                "Emergency stop",
                "Always succeeds: latches `estopped`, puts every output in its safe state, records an `estop` event "
                "and holds outputs until POST /api/disarm.",
                safety,
                (),
            )
        },
        "/api/model": {
            "post": _post(
                "Load a model for a pipeline",
                "Reads the ONNX file's model card and, with a running session, checks it against the live stream "
                "(422 with the mismatch message) and restarts the session with the model. Without a running session "
                "the override is stored and checked at the next start. `path: null` reverts to the config's model. "
                "Relative paths are relative to the config file's folder. 409 while recording or e-stopped.",
                {
                    "type": "object",
                    "properties": {
                        "pipeline": {"type": "string"},
                        "model": {"type": "string"},
                        "override": {"type": "boolean"},
                        "card": {"type": "object"},
                        "checked_against_stream": {"type": "boolean"},
                        "restarted": {"type": "boolean"},
                    },
                },
                (409, 422, 503),
                body={
                    "type": "object",
                    "required": ["pipeline", "path"],
                    "additionalProperties": False,
                    "properties": {"pipeline": {"type": "string"}, "path": {"type": ["string", "null"]}},
                },
            )
        },
        "/api/recording/start": {
            "post": _post(
                "Start recording the running session",
                "Attaches an XDF recorder to the running session without restarting it. `path` (must end in .xdf, "
                "must not exist; relative to the config's folder) defaults to the config's [recording] path.",
                {"type": "object", "properties": {"recording": {"type": "boolean"}, "path": {"type": "string"}}},
                (409, 422),
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"path": {"type": ["string", "null"]}},
                },
            )
        },
        "/api/recording/stop": {
            "post": _post(
                "Stop recording",
                "Closes the XDF file (footers written); the session keeps running.",
                {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string"},
                        "commands": {"type": "integer"},
                        "events": {"type": "integer"},
                        "lost_samples": {"type": "integer"},
                    },
                },
                (409,),
            )
        },
        "/api/commands": {
            "get": {
                "summary": "Recent commands",
                "parameters": [
                    {
                        "name": "n",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_RECENT_COMMANDS, "default": 50},
                    },
                    {"name": "pipeline", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json_response(
                        "Oldest first.",
                        {
                            "type": "object",
                            "properties": {
                                "n": {"type": "integer"},
                                "total": {"type": "integer"},
                                "session_running": {"type": "boolean"},
                                "commands": {"type": "array", "items": _ref("Command")},
                            },
                        },
                    ),
                    **_errors(400, 401, 403),
                    "500": _ERR500,
                },
            }
        },
        "/api/latency": {
            "get": {
                "summary": "Decision latency (last <= 5000 commands)",
                "responses": {"200": _json_response("Summary.", _ref("Latency")), **_errors(401, 403), "500": _ERR500},
            }
        },
    }
    num_or_null = {"type": ["number", "null"]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "closedloop daemon API",
            "version": API_VERSION,
            "description": "Control API of the headless closedloop daemon. Every /api route needs "
            "`Authorization: Bearer <token>`. Errors are JSON objects `{error, status}`.",
        },
        "servers": [{"url": f"http://{host}:{port}"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "status"],
                    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                },
                "Safety": {
                    "type": "object",
                    "properties": {
                        "state": {"enum": [DISARMED, ARMED, "stimulating", "fault", ESTOPPED]},
                        "since": {"type": "string", "format": "date-time"},
                        "reason": {"type": "string"},
                        "estops": {"type": "integer"},
                        "held_commands": {"type": "integer"},
                        "outputs_safe": {"type": "boolean"},
                        "supervisor": {
                            "type": ["object", "null"],
                            "description": "Session.safety_status(): state, fault, limits in force, dose used, "
                            "stimulation outputs and NMES controllers (null without a session).",
                        },
                    },
                },
                "Status": {
                    "type": "object",
                    "properties": {
                        "daemon": {"type": "object"},
                        "safety": _ref("Safety"),
                        "session": {"type": ["object", "null"]},
                    },
                },
                "Command": {
                    "type": "object",
                    "properties": {
                        "pipeline": {"type": "string"},
                        "seq": {"type": "integer"},
                        "kind": {"enum": ["discrete", "continuous", "event"]},
                        "sample_time": {"type": "number"},
                        "issued_time": {"type": "number"},
                        "label": {"type": ["string", "null"]},
                        "values": {"type": "array", "items": {"type": "number"}},
                        "classes": {"type": "array", "items": {"type": "string"}},
                        "sample_index": {"type": "integer"},
                    },
                },
                "Latency": {
                    "type": "object",
                    "properties": {
                        "n": {"type": "integer"},
                        "p50_ms": num_or_null,
                        "p95_ms": num_or_null,
                        "p99_ms": num_or_null,
                        "max_ms": num_or_null,
                    },
                },
            },
        },
    }


# ============================================================================ HTTP
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    """True if ``host`` (name or address) resolves to loopback addresses only."""
    h = host.strip("[]")
    if h.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(h, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


class ApiServer(ThreadingHTTPServer):
    """The HTTP server; one thread per request, daemon threads so shutdown never waits on a client."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: Daemon, token: str | None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.token = token.encode() if token is not None else None
        self.loopback = is_loopback(address[0])
        super().__init__(address, ApiHandler)


class ApiHandler(BaseHTTPRequestHandler):
    """Routes requests to :class:`Daemon` methods; every answer (errors included) is JSON."""

    server_version = "closedloop-daemon/" + API_VERSION
    timeout = 30.0  # a client that stops sending does not hold a thread forever
    server: ApiServer

    # every method goes through _handle, so unknown routes are 404 and wrong methods 405
    def do_GET(self) -> None:
        """Handle GET."""
        self._handle("GET")

    def do_POST(self) -> None:
        """Handle POST."""
        self._handle("POST")

    def do_PUT(self) -> None:
        """Handle PUT (no route takes it: 404/405)."""
        self._handle("PUT")

    def do_DELETE(self) -> None:
        """Handle DELETE (no route takes it: 404/405)."""
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        """Handle PATCH (no route takes it: 404/405)."""
        self._handle("PATCH")

    def do_OPTIONS(self) -> None:
        """Handle OPTIONS (no route takes it: 404/405; no CORS)."""
        self._handle("OPTIONS")

    # ------------------------------------------------------------------ plumbing
    def _client(self) -> str:
        return f"{self.client_address[0]}:{self.client_address[1]}"

    def _check_origin(self) -> None:
        if self.headers.get("Origin") is not None:
            raise ApiError(403, "cross-origin browser requests are refused (request has an Origin header).")
        host = self.headers.get("Host")
        if self.server.loopback and host:
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.strip("[]").lower() not in _LOOPBACK_NAMES | {self.server.server_address[0]}:
                raise ApiError(403, f"Host {host!r} is not this loopback server (DNS rebinding?); use 127.0.0.1.")

    def _authorize(self) -> None:
        token = self.server.token
        if token is None:
            return
        challenge = {"WWW-Authenticate": 'Bearer realm="closedloop"'}
        header = self.headers.get("Authorization")
        if header is None:
            raise ApiError(401, "missing Authorization header; send 'Authorization: Bearer <token>'.", challenge)
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "Authorization header must be 'Bearer <token>'.", challenge)
        if not hmac.compare_digest(given.strip().encode(), token):
            emit(logging.WARNING, "auth_failed", client=self._client(), path=urlsplit(self.path).path)
            raise ApiError(401, "invalid token.", challenge)

    def _read_body(self) -> dict[str, Any]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "chunked request bodies are not supported; send Content-Length.")
        raw_len = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(raw_len)
        except ValueError:
            raise ApiError(400, f"Content-Length must be an integer, found {raw_len!r}.") from None
        if length < 0:
            raise ApiError(400, f"Content-Length must not be negative, found {length}.")
        if length > MAX_BODY_BYTES:
            raise ApiError(413, f"request body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit.")
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"request body is not UTF-8 text: {exc}.") from None
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}.") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"request body must be a JSON object, found a JSON {type(body).__name__}.")
        return body

    def _handle(self, method: str) -> None:
        t0 = time.perf_counter()
        url = urlsplit(self.path)
        path = url.path
        headers: dict[str, str] = {}
        try:
            self._check_origin()
            if path == "/api" or path.startswith("/api/"):
                self._authorize()
            methods = ROUTES.get(path)
            if methods is None:
                raise ApiError(404, f"no route {path!r}; GET /openapi.json lists the API.")
            handler = methods.get(method)
            if handler is None:
                allowed = ", ".join(sorted(methods))
                raise ApiError(405, f"{method} is not allowed on {path}; use {allowed}.", {"Allow": allowed})
            body = self._read_body() if method == "POST" else {}
            req = Request(parse_qs(url.query, keep_blank_values=True), body, self._client())
            status, payload = 200, handler(self.server.app, req)
        except ApiError as exc:
            status, payload, headers = exc.status, {"error": exc.message, "status": exc.status}, exc.headers
        except Exception as exc:  # noqa: BLE001 - a failing handler answers 500 and never kills the server
            status = 500
            payload = {
                "error": f"internal error in {method} {path}: {exc!r} (details in the daemon log)",
                "status": 500,
            }
            emit(
                logging.ERROR,
                "handler_error",
                method=method,
                path=path,
                error=repr(exc),
                traceback=traceback.format_exc(),
            )
        self._send_json(status, payload, headers)
        level = logging.DEBUG if method == "GET" and status < 400 else logging.INFO
        if status >= 500:
            level = logging.ERROR
        emit(
            level,
            "http_request",
            method=method,
            path=path,
            status=status,
            ms=round((time.perf_counter() - t0) * 1e3, 2),
            client=self._client(),
        )

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = (json.dumps(_jsonable(payload), allow_nan=False, separators=(",", ":")) + "\n").encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError as exc:  # the client went away; nothing to answer
            emit(logging.DEBUG, "client_gone", client=self._client(), error=repr(exc))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors raised by the request parser (bad request line, unsupported method...) as JSON too."""
        self.close_connection = True
        try:
            short = HTTPStatus(code).phrase
        except ValueError:
            short = "error"
        text = message or short
        if explain:
            text = f"{text}: {explain}"
        self._send_json(code, {"error": text, "status": code})

    def log_message(self, format: str, *args: Any) -> None:
        """The base class's plain-text log lines become JSON events (requests are logged by ``_handle``)."""
        emit(logging.DEBUG, "http_server", client=self._client(), message=format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are logged by ``_handle`` with their duration."""


# ============================================================================ entry point
def read_token(token_file: str | None, no_auth: bool, environ: Mapping[str, str] | None = None) -> str | None:
    """The API token from ``--token-file`` or ``CLOSEDLOOP_TOKEN``; None only with ``no_auth``.

    Raises
    ------
    DaemonError
        No token and no ``--no-auth``; ``--no-auth`` together with ``--token-file``; an
        unreadable, empty or short (< 16 characters) token.
    """
    env = os.environ if environ is None else environ
    if no_auth:
        if token_file:
            raise DaemonError("--no-auth and --token-file contradict each other; give one of them.")
        if env.get(TOKEN_ENV):
            emit(logging.WARNING, "token_ignored", reason=f"--no-auth given; {TOKEN_ENV} is ignored")
        return None
    if token_file:
        p = Path(token_file)
        try:
            token = p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DaemonError(f"cannot read --token-file {token_file!r}: {exc.strerror or exc}.") from exc
        mode = p.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            emit(
                logging.WARNING,
                "token_file_permissions",
                path=str(p),
                mode=oct(stat.S_IMODE(mode)),
                advice=f"chmod 600 {p}",
            )
        source = f"--token-file {token_file!r}"
    else:
        token = env.get(TOKEN_ENV, "").strip()
        source = f"${TOKEN_ENV}"
        if not token:
            raise DaemonError(
                f"no API token: give --token-file F or set {TOKEN_ENV} (make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'); --no-auth turns authentication off "
                "and is allowed on a loopback address only."
            )
    if not token:
        raise DaemonError(f"the API token from {source} is empty.")
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise DaemonError(
            f"the API token from {source} must be at least {MIN_TOKEN_LENGTH} characters without spaces "
            f"(it has {len(token)}); make one with python -c 'import secrets; print(secrets.token_urlsafe(32))'."
        )
    return token


def check_host(host: str, auth: bool) -> None:
    """Refuse ``--no-auth`` on a non-loopback address; warn about plain HTTP off loopback."""
    if is_loopback(host):
        return
    if not auth:
        raise DaemonError(
            f"--no-auth is refused with --host {host!r}, which is not a loopback address; "
            "use a token, or bind 127.0.0.1."
        )
    emit(
        logging.WARNING,
        "api_exposed",
        host=host,
        advice="plain HTTP: the token travels unencrypted; prefer 127.0.0.1 behind an SSH tunnel or a TLS proxy",
    )


def run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT; the ``closedloop daemon`` subcommand.

    Parameters
    ----------
    args : argparse.Namespace
        ``config``, ``host``, ``port``, ``token_file``, ``no_auth``, ``start``, ``verbose``.

    Returns
    -------
    int
        0 after a clean shutdown, 1 if stopping the session failed, 2 if the daemon refused to start.
    """
    setup_logging(getattr(args, "verbose", 0))
    config_path = Path(args.config)
    try:
        token = read_token(args.token_file, args.no_auth)
        check_host(args.host, auth=token is not None)
        config = load_config(config_path)
        app = Daemon(config_path, config, host=args.host, port=args.port, auth=token is not None)
        server = ApiServer((args.host, args.port), app, token)
    except (DaemonError, ConfigError, FileNotFoundError, OSError) as exc:
        emit(logging.ERROR, "startup_failed", error=str(exc), config=str(config_path))
        return 2
    app.port = int(server.server_address[1])
    if token is None:
        emit(logging.WARNING, "auth_disabled", reason="--no-auth: any local process can control the session")

    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="api", daemon=True)
    thread.start()
    emit(
        logging.INFO,
        "listening",
        url=f"http://{args.host}:{app.port}",
        host=args.host,
        port=app.port,
        auth=token is not None,
        config=str(app.config_path),
        pid=os.getpid(),
    )
    rc = 0
    try:
        if args.start:
            try:
                app.api_session_start(Request(client="--start"))
            except ApiError as exc:
                emit(logging.ERROR, "session_start_failed", error=exc.message)
        while not stop.wait(0.25):
            try:
                app.tick()
            except Exception as exc:  # noqa: BLE001 - the monitor must keep running
                emit(logging.ERROR, "monitor_error", error=repr(exc), traceback=traceback.format_exc())
    finally:
        reason = received[0] if received else "exception"
        emit(logging.INFO, "shutdown", signal=reason)
        try:
            app.shutdown(reason)
        except Exception as exc:  # noqa: BLE001 - still shut the server down; exit code says it failed
            emit(logging.CRITICAL, "session_stop_failed", error=repr(exc), traceback=traceback.format_exc())
            rc = 1
        server.shutdown()
        server.server_close()
        thread.join(5.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        emit(logging.INFO, "stopped", exit_code=rc)
    return rc


def main(argv: list[str] | None = None) -> int:
    """``python -m app.daemon`` is ``closedloop daemon``."""
    from app.cli import main as cli_main

    return cli_main(["daemon", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
