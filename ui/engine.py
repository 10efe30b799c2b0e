"""The GUI's handle on the Session engine: open/start/stop off the GUI thread, state read by timers.

:class:`SessionController` owns one :class:`~app.session.Session` at a time (a Session opens
once, so every start after a stop builds a new one from the same config, like the daemon).
Rules it follows:

- **No pipeline logic here.** Sources, pipelines, outputs and the recorder are the Session's.
- **Nothing slow on the GUI thread.** ``open``, ``start``, ``stop``, model checks and recording
  start run on a worker thread; their results come back through Qt signals, which Qt queues
  to the GUI thread because the controller lives there.
- **The acquisition thread never touches a widget.** Commands reach the GUI through a
  ``Session.subscribe`` callback that only appends to a bounded deque; widgets drain it from a
  ``QTimer`` (:meth:`take_commands`) and read ``Session.status()`` and ring buffers the same way.
- **Safety.** When the Session has ``arm()/disarm()/estop()/clear_fault()/safety_status()``
  (the stimulation SafetySupervisor), the controller calls them. Otherwise it keeps the daemon's
  stand-in (:class:`app.daemon.SafetyState` with :class:`app.daemon.GatedOutput` around every
  command outlet): arm needs a running session, an e-stop latches, puts every output in its safe
  state and holds the outputs until disarm. With the supervisor, the Session itself holds every
  output while a fault is latched. ``estop`` never waits for a lock held by a slow operation.
- **Deterministic replay.** ``Session.start`` attaches every pipeline runner before it starts the
  sources, so the first recorded sample reaches every pipeline and live replay makes the same
  decisions as ``closedloop replay --fast`` (with ``catch_up = "all"``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pylsl
from PyQt6.QtCore import QObject, pyqtSignal

from app.config import SessionConfig, SourceConfig, load_config
from app.daemon import ESTOPPED, GatedOutput, SafetyState
from app.outputs import LslCommandOutlet
from app.pipeline import Command
from app.recorder import Recorder
from app.session import Session, build_pipeline
from decoders.card import ModelCard, read_card

log = logging.getLogger(__name__)

WHO = "clinician@gui"
SAFETY_METHODS = ("arm", "disarm", "estop", "clear_fault", "safety_status")


def supervisor_available(session: Any) -> bool:
    """True when ``session`` has the SafetySupervisor methods (stimulation configured in the engine)."""
    return session is not None and all(hasattr(session, m) for m in SAFETY_METHODS)


def config_with_source(
    config: SessionConfig, source: SourceConfig | None, *, with_pipelines: bool = True
) -> SessionConfig:
    """A copy of ``config`` whose first source is replaced by ``source`` (as ``closedloop replay --config``).

    Parameters
    ----------
    config : SessionConfig
        The base configuration (pipelines, outputs, recording).
    source : SourceConfig or None
        The source picked in the setup panel; None keeps the config's sources.
    with_pipelines : bool
        False drops every pipeline (look at a stream whose channels do not match the models).
    """
    sources = dict(config.sources)
    if source is not None:
        first = next(iter(sources))
        sources = {first: dataclasses.replace(source, name=first), **{k: v for k, v in sources.items() if k != first}}
    pipelines = config.pipelines if with_pipelines else {}
    return dataclasses.replace(config, sources=sources, pipelines=pipelines)


@dataclasses.dataclass
class StreamView:
    """What the setup panel shows about one stream of the open session."""

    source: str
    key: str
    name: str
    type: str
    srate: float
    labels: list[str]
    numeric: bool
    clock_offset_s: float


class SessionController(QObject):
    """Build, open, start and stop Sessions for the GUI; the only place the GUI touches the engine.

    Signals are emitted from worker threads and delivered on the GUI thread (queued).
    """

    opened = pyqtSignal()
    started = pyqtSignal()
    stopped = pyqtSignal(str)
    failed = pyqtSignal(str, str)  # what, message
    busy_changed = pyqtSignal(bool)
    message = pyqtSignal(str, str)  # level, text (session log lines from the GUI side)
    model_checked = pyqtSignal(str, object, str)  # pipeline, ModelCard or None, message

    MAX_PENDING_COMMANDS = 5000

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.base_config: SessionConfig | None = None
        self.config: SessionConfig | None = None
        self.config_path: Path | None = None
        self.session: Session | None = None
        self.safety = SafetyState()  # stand-in when the Session has no SafetySupervisor
        self.model_overrides: dict[str, Path] = {}
        self.n_estops = 0
        self.last_estop_reason = ""
        self._pending: deque[Command] = deque(maxlen=self.MAX_PENDING_COMMANDS)
        self._all_commands: list[Command] = []
        self.keep_all_commands = False
        self._busy = threading.Lock()
        self._worker: threading.Thread | None = None

    # ------------------------------------------------------------------ config
    def load_config(self, path: str | Path) -> SessionConfig:
        """Read and validate a config file (fast; raises ConfigError / FileNotFoundError)."""
        cfg = load_config(path)
        self.config_path = Path(path)
        self.base_config = cfg
        self.config = cfg
        self.model_overrides.clear()
        return cfg

    def effective_config(self) -> SessionConfig:
        """The config with the model overrides of the decoder panel applied."""
        if self.config is None:
            raise RuntimeError("no configuration loaded; open a config file or pick a source first.")
        pipelines = {
            n: dataclasses.replace(p, model=self.model_overrides[n]) if n in self.model_overrides else p
            for n, p in self.config.pipelines.items()
        }
        return dataclasses.replace(self.config, pipelines=pipelines)

    # ------------------------------------------------------------------ state
    @property
    def busy(self) -> bool:
        """True while a worker operation (open/start/stop/model/recording) runs."""
        return self._busy.locked()

    @property
    def state(self) -> str:
        """The current session's state (``"none"`` before the first open)."""
        return self.session.state if self.session is not None else "none"

    @property
    def running(self) -> bool:
        """True while the current session is running."""
        return self.session is not None and self.session.state == "running"

    def _run_in_worker(self, what: str, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on a worker thread; False (and a message) if another operation is running."""
        if not self._busy.acquire(blocking=False):
            self.message.emit("warning", f"{what}: another operation is still running; try again.")
            return False
        self.busy_changed.emit(True)

        def body() -> None:
            try:
                fn()
            except Exception as exc:
                log.debug("%s failed", what, exc_info=True)
                self.failed.emit(what, f"{exc}")
                self.message.emit("error", f"{what} failed: {exc!r}\n{traceback.format_exc()}")
            finally:
                self._busy.release()
                self.busy_changed.emit(False)

        self._worker = threading.Thread(target=body, name=f"gui:{what}", daemon=True)
        self._worker.start()
        return True

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no worker operation runs (tests, shutdown); False on timeout."""
        w = self._worker
        if w is not None:
            w.join(timeout)
        return not self.busy

    # ------------------------------------------------------------------ lifecycle
    def open(self, config: SessionConfig | None = None) -> bool:
        """Stop any running session, then open a new one from ``config`` (worker thread)."""
        if config is not None:
            self.config = config

        def work() -> None:
            self._stop_current("new session")
            session = self._new_session()
            self.message.emit("info", f"session {session.config.name!r} opened: {self._describe(session)}")
            self.opened.emit()

        return self._run_in_worker("open session", work)

    def _new_session(self) -> Session:
        """Build and open a Session from the effective config; gate its outputs behind the stand-in safety."""
        session = Session(self.effective_config())
        session.open()
        if not supervisor_available(session):  # the engine holds every output while its supervisor is in fault
            for name, out in list(session.outputs.items()):
                if isinstance(out, LslCommandOutlet):
                    session.outputs[name] = GatedOutput(out, self.safety)
        session.subscribe(self._on_command)
        self.session = session
        return session

    def start(self) -> bool:
        """Start the open session (opening a new one first when the last one has stopped)."""

        def work() -> None:
            s = self.session
            if s is None or s.state in ("stopped", "fault"):
                self._stop_current("restart")
                s = self._new_session()
                self.opened.emit()
            if s.state == "running":
                return
            if self.safety.holds_outputs and not supervisor_available(s):
                raise RuntimeError("the e-stop is latched; release it (Disarm / Clear fault) before starting.")
            self._pending.clear()
            self._all_commands.clear()
            self._start_session(s)
            self.message.emit("info", f"session {s.config.name!r} started")
            self.started.emit()

        return self._run_in_worker("start session", work)

    def _start_session(self, s: Session) -> None:
        """``Session.start()`` (it attaches every pipeline runner before starting the sources)."""
        s.start()

    def stop(self, reason: str = "stop button") -> bool:
        """Stop the current session: outputs safe, threads stopped, recording closed (worker thread)."""

        def work() -> None:
            self._stop_current(reason)

        return self._run_in_worker("stop session", work)

    def _stop_current(self, reason: str) -> None:
        s = self.session
        if s is None or s.state in ("idle", "stopped"):
            return
        if not supervisor_available(s) and self.safety.session_ended(f"session stopped: {reason}"):
            self.message.emit("info", f"disarmed: session stopped ({reason})")
        elif supervisor_available(s):
            s.disarm(WHO, f"session stopped: {reason}")
        s.stop()
        self.message.emit("info", f"session {s.config.name!r} stopped ({reason}); {s.n_commands} commands")
        self.stopped.emit(reason)

    def shutdown(self, timeout: float = 15.0) -> None:
        """Stop everything synchronously (window closing); outputs go to their safe state first."""
        self.wait_idle(timeout)
        s = self.session
        if s is not None and s.state in ("open", "running", "fault"):
            s.stop()

    def poll(self) -> None:
        """Called from a GUI timer: stop a session whose finite sources (replay) have all finished."""
        s = self.session
        if (
            s is not None
            and s.state == "running"
            and s.sources
            and all(src.finished.is_set() for src in s.sources.values())
            and not self.busy
        ):
            self.stop("every source finished")

    # ------------------------------------------------------------------ commands
    def _on_command(self, cmd: Command) -> None:
        # Runs on the decoding (acquisition) thread: append only, never touch Qt objects.
        self._pending.append(cmd)
        if self.keep_all_commands:
            self._all_commands.append(cmd)

    def take_commands(self) -> list[Command]:
        """Commands that arrived since the last call (GUI thread)."""
        out = []
        while self._pending:
            try:
                out.append(self._pending.popleft())
            except IndexError:
                break
        return out

    @property
    def all_commands(self) -> list[Command]:
        """Every command of the current run when :attr:`keep_all_commands` is set (tests, comparisons)."""
        return list(self._all_commands)

    def replay_t0(self, source: str) -> float:
        """``local_clock`` time at which replay source ``source`` started (maps live stamps to recording time)."""
        s = self.session
        src = s.sources.get(source) if s is not None else None
        return float(getattr(src, "t0", float("nan")))

    # ------------------------------------------------------------------ streams
    def streams(self) -> list[StreamView]:
        """Every stream of the current session (setup panel, scope selector)."""
        s = self.session
        if s is None:
            return []
        out = []
        for sname, src in s.sources.items():
            for key, st in src.streams.items():
                info = st.info
                out.append(
                    StreamView(
                        sname,
                        key,
                        info.name,
                        info.type,
                        info.srate,
                        info.labels,
                        not info.is_string,
                        float(st.stats.clock_offset),
                    )
                )
        return out

    def buffered_stream(self, source: str, key: str) -> Any:
        """The :class:`~acquisition.source.BufferedStream` ``key`` of ``source`` (None if gone)."""
        s = self.session
        if s is None or source not in s.sources:
            return None
        return s.sources[source].streams.get(key)

    @staticmethod
    def _describe(s: Session) -> str:
        parts = []
        for src in s.sources.values():
            for st in src.streams.values():
                parts.append(f"{st.info.name} ({st.info.n_channels} ch @ {st.info.srate:g} Hz)")
        return ", ".join(parts)

    # ------------------------------------------------------------------ safety
    def arm(self) -> None:
        """Arm stimulation/teleop outputs (needs a running session and no latched e-stop)."""
        s = self.session
        if supervisor_available(s):
            assert s is not None
            s.arm(WHO, "arm button")
        else:
            if s is None or s.state != "running":
                raise RuntimeError("arming needs a running session; start it first.")
            if self.safety.holds_outputs:
                raise RuntimeError("the e-stop is latched; Clear fault / Disarm releases it, then arm again.")
            self.safety.arm("arm button")
        self._record_event("arm", {"via": "gui"})
        self.message.emit("warning", "ARMED")

    def disarm(self) -> None:
        """Disarm (and, with the stand-in, release a latched e-stop to ``disarmed``)."""
        s = self.session
        if supervisor_available(s):
            assert s is not None
            s.disarm(WHO, "disarm button")
        else:
            self.safety.disarm("disarm button")
        self._record_event("disarm", {"via": "gui"})
        self.message.emit("info", "disarmed")

    def clear_fault(self) -> None:
        """Release a latched e-stop / fault (never straight back to armed)."""
        s = self.session
        if supervisor_available(s):
            assert s is not None
            s.clear_fault(WHO, "clear fault button")
        else:
            self.safety.disarm("clear fault button")
        self.message.emit("info", "fault cleared (disarmed)")

    def estop(self, reason: str = "e-stop button") -> None:
        """Emergency stop: latch, every output to its safe state now. Always succeeds, never waits."""
        self.n_estops += 1
        self.last_estop_reason = reason
        s = self.session
        if supervisor_available(s):
            assert s is not None
            s.estop(reason, WHO)
        else:
            self.safety.estop(reason)  # the gate closes before anything else
            if s is not None and s.state in ("open", "running", "fault"):
                s._all_safe(f"estop: {reason}")  # no public hook yet (Session.estop lands with stimulation)
        self._record_event("estop", {"reason": reason, "via": "gui"})
        self.message.emit("critical", f"E-STOP ({reason})")

    def safety_state(self) -> dict[str, Any]:
        """``{"state", "supervisor", "details"}`` for the stimulation panel and the e-stop banner."""
        s = self.session
        if supervisor_available(s):
            assert s is not None
            st = s.safety_status()
            state = str(st.get("state", "unknown")) if isinstance(st, dict) else str(st)
            return {"state": state, "supervisor": True, "details": st}
        snap = self.safety.snapshot()
        return {"state": snap["state"], "supervisor": False, "details": snap}

    @property
    def estopped(self) -> bool:
        """True while an e-stop is latched."""
        st = self.safety_state()["state"].lower()
        return st in (ESTOPPED, "estop", "e-stop", "fault", "faulted") or "estop" in st

    def _record_event(self, kind: str, details: dict[str, Any]) -> None:
        s = self.session
        if s is not None and s.recorder is not None and not s.recorder.closed:
            s.recorder.add_event(kind, details)

    # ------------------------------------------------------------------ recording
    def start_recording(self, path: str | Path) -> bool:
        """Record the running session to ``path`` (XDF) from now on, without restarting it (worker thread)."""
        path = Path(path)

        def work() -> None:
            s = self.session
            if s is None or s.state != "running":
                raise RuntimeError("recording needs a running session; start it first.")
            if s.recorder is not None and not s.recorder.closed:
                raise RuntimeError(f"already recording to {str(s.recorder.path)!r}.")
            if path.suffix != ".xdf":
                raise ValueError(f"recording path {str(path)!r} must end in .xdf.")
            if path.exists():
                raise FileExistsError(f"recording path {str(path)!r} already exists; choose another name.")
            streams = [st for src in s.sources.values() for st in src.streams.values()]
            session = s
            rec = Recorder(
                path,
                streams,
                from_now=True,
                flush_interval_s=s.config.recording.flush_interval_s,
                on_error=lambda exc, tb: session.report_error("recorder", exc, tb),
            )
            rec.start()
            s.record_path = path
            s.recorder = rec
            rec.add_event("recording_started", {"via": "gui"})
            self.message.emit("info", f"recording to {path}")

        return self._run_in_worker("start recording", work)

    def stop_recording(self) -> bool:
        """Close the recording (footers written); the session keeps running (worker thread)."""

        def work() -> None:
            s = self.session
            rec = s.recorder if s is not None else None
            if s is None or rec is None or rec.closed:
                raise RuntimeError("no recording is in progress.")
            rec.add_event("recording_stopped", {"via": "gui"})
            s.recorder = None
            rec.close()
            self.message.emit("info", f"recording closed: {rec.path} ({rec.n_commands} commands)")

        return self._run_in_worker("stop recording", work)

    @property
    def recording_path(self) -> Path | None:
        """The file being recorded, or None."""
        s = self.session
        if s is None or s.recorder is None or s.recorder.closed:
            return None
        return Path(s.recorder.path)

    # ------------------------------------------------------------------ models
    def check_model(self, pipeline: str, path: str | Path) -> bool:
        """Read a model's card and check it against the live stream (worker thread); ``model_checked`` reports."""
        path = Path(path)

        def work() -> None:
            card = read_card(path)
            s = self.session
            cfg = self.effective_config()
            if pipeline not in cfg.pipelines:
                raise ValueError(f"pipeline {pipeline!r} is not in the config; pipelines: {sorted(cfg.pipelines)}.")
            msg = "card read; checked against the stream at the next start (no session open)."
            if s is not None and s.state in ("open", "running"):
                pcfg = dataclasses.replace(cfg.pipelines[pipeline], model=path)
                src = s.sources[pcfg.source]
                stream = src.streams[pcfg.stream] if pcfg.stream else src.primary()
                labels = list(pcfg.channels) if pcfg.channels is not None else list(stream.info.labels)
                card.check_stream(stream.info.srate, labels, stream_name=stream.info.name)
                build_pipeline(pcfg, stream)  # dry run: window, filters and the ONNX session itself
                msg = f"card matches stream {stream.info.name!r} ({stream.info.srate:g} Hz, {len(labels)} channels)."
            self.model_checked.emit(pipeline, card, msg)

        return self._run_in_worker("check model", work)

    def use_model(self, pipeline: str, path: str | Path) -> None:
        """Use ``path`` for ``pipeline`` from the next (re)start on."""
        self.model_overrides[pipeline] = Path(path)
        self.message.emit("info", f"pipeline {pipeline!r} will use {path} (restart the session to go online with it)")

    def cards(self) -> dict[str, ModelCard]:
        """The cards of the current session's pipelines."""
        return dict(self.session.cards) if self.session is not None else {}

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any] | None:
        """``Session.status()`` of the current session (GUI timer)."""
        s = self.session
        return s.status() if s is not None else None

    def data_age_s(self) -> float:
        """Age (s) of the newest sample over every numeric stream; NaN when nothing has arrived."""
        s = self.session
        if s is None:
            return float("nan")
        now = pylsl.local_clock()
        ages = []
        for src in s.sources.values():
            for st in src.streams.values():
                last = getattr(st.buffer, "last_timestamp", float("nan"))
                if last == last:
                    ages.append(now - last)
        return float(min(ages)) if ages else float("nan")
