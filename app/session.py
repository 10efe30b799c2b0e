"""The Session: one engine under the CLI, the daemon, the GUI and replay.

A Session is built from a validated :class:`~app.config.SessionConfig`. ``open()`` resolves
every source, loads every model and checks its card against the live stream, creates the
outputs and the recorder — so every configuration or hardware error surfaces before
anything runs. ``start()`` starts acquisition, the recorder and one decoding thread per
pipeline; ``stop()`` puts every output in its safe state and closes the recording.

Failure handling (DESIGN "Safety ... fails closed"): an exception on any acquisition,
decoding or recording thread reaches :meth:`Session.report_error`, which stores the error
and traceback in :attr:`errors` and the session log, moves the session to state
``"fault"`` and puts every output in its safe state; commands are no longer delivered to
outputs until a new session starts. A *dropout* of an LSL stream is not a fault: the
session keeps running, records the event, and stale data (older than ``stale_after_s``)
puts the outputs in their safe state until fresh data returns.

Safety (issue 5): every session owns a :class:`~stimulation.safety.SafetySupervisor` built
from the ``[safety]`` table (limits lowered by the optional patient profile; a session without
the table gets a supervisor with no limits, which permits no stimulation). Stimulation outputs
(``kind = "stimulator"`` / ``"audio"``) are registered with it; NMES controllers
(``[controllers.X]``) request every pulse-width update through it. Upstream failures
(``report_error``: source lost, decoder or controller exception) latch
:meth:`~stimulation.safety.SafetySupervisor.upstream_fault`; pipelines and controllers feed it
heartbeats and data ages, so stale data zeroes outputs. Front ends (GUI, daemon, CLI) use
:meth:`Session.arm`, :meth:`Session.disarm`, :meth:`Session.estop`, :meth:`Session.clear_fault`
and :meth:`Session.safety_status`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pylsl

from acquisition.ringbuffer import RingBuffer
from acquisition.source import BufferedStream, Source
from app.config import ControllerConfig, OutputConfig, PipelineConfig, SessionConfig, SourceConfig, load_config
from app.latency import LatencyTracker
from app.outputs import LslCommandOutlet, Output, StimulatorOutput, build_stimulator
from app.pipeline import Command, FilterSettings, Pipeline, PipelineSettings, select_channels
from app.recorder import Recorder
from app.runner import PipelineRunner
from decoders.card import CardMismatchError, ModelCard
from decoders.loader import load_decoder
from stimulation.nmes_loop import NmesControlLoop, make_reference
from stimulation.safety import SafetyState, SafetySupervisor

log = logging.getLogger(__name__)


@dataclass
class LogEntry:
    """One line of the session log."""

    time: float
    level: str
    message: str
    details: dict


def build_source(cfg: SourceConfig, on_error: Callable, on_event: Callable, base_dir: Path) -> Source:
    """Create the acquisition source described by one ``[sources.NAME]`` table."""
    o = cfg.options
    buffer_s = o.get("buffer_s", 30.0)
    if cfg.kind == "sim" and "driven_by" in o:
        from stimulation.knee_plant import KneePlantSource

        return KneePlantSource(
            cfg.name,
            srate=o.get("srate", 200.0),
            seed=o["seed"],
            noise_deg=o.get("noise_uv"),  # the knee scenario's noise is in degrees rms
            delay_s=o["delay_s"],
            fatigue=o["fatigue"],
            chunk_s=o.get("chunk_s", 0.01),
            on_error=on_error,
            buffer_seconds=buffer_s,
        )
    if cfg.kind == "sim":
        from acquisition.simulator import SimulatedSource, SimulatorSettings

        kwargs: dict[str, Any] = {"scenario": o["scenario"], "seed": o["seed"]}
        if "srate" in o:
            kwargs["srate"] = o["srate"]
        if "frequencies" in o:
            kwargs["ssvep_frequencies"] = o["frequencies"]
        for k in ("trial_s", "rest_s"):
            if k in o:
                kwargs[k] = o[k]
        if "amplitude_uv" in o:  # strength of the scenario's signal of interest
            key = {"ssvep": "ssvep_amplitude_uv", "emg": "emg_amplitude_uv"}.get(o["scenario"])
            if key is None:
                raise ValueError(
                    f"config key 'sources.{cfg.name}.amplitude_uv' applies to scenarios ssvep and emg, "
                    f"not {o['scenario']!r}."
                )
            kwargs[key] = o["amplitude_uv"]
        if "noise_uv" in o:
            kwargs["noise_rms"] = o["noise_uv"]
        return SimulatedSource(
            cfg.name,
            SimulatorSettings(**kwargs),
            chunk_s=o.get("chunk_s", 0.01),
            on_error=on_error,
            buffer_seconds=buffer_s,
        )
    if cfg.kind == "lsl":
        from acquisition.lsl_source import LslSource

        return LslSource(
            cfg.name,
            stream_name=o.get("name"),
            stream_type=o.get("type"),
            source_id=o.get("source_id"),
            resolve_timeout=o["resolve_timeout"],
            clock_sync=o["clock_sync"],
            dejitter=o["dejitter"],
            buffer_seconds=buffer_s,
            on_error=on_error,
            on_event=on_event,
        )
    if cfg.kind == "brainflow":
        from acquisition.brainflow_source import BrainFlowSource

        return BrainFlowSource(
            cfg.name, board_id=o["board_id"], params=o["params"], on_error=on_error, buffer_seconds=buffer_s
        )
    if cfg.kind == "replay":
        from acquisition.replay import ReplaySource

        path = Path(o["path"])
        if not path.is_absolute():
            path = base_dir / path
        return ReplaySource(cfg.name, path, speed=o["speed"], on_error=on_error, buffer_seconds=buffer_s)
    raise ValueError(f"unknown source kind {cfg.kind!r}")  # unreachable: config validation lists the kinds


def build_pipeline(
    cfg: PipelineConfig, stream: BufferedStream, *, clock: Callable[[], float] | None = None
) -> tuple[Pipeline, ModelCard]:
    """Load the model of one pipeline, check its card against ``stream`` and build the Pipeline.

    Raises
    ------
    CardMismatchError
        When the stream's rate, channel count or labels differ from the card (both values named).
    """
    decoder = load_decoder(cfg.model)
    card = decoder.card
    info = stream.info
    what = f"pipeline {cfg.name!r} (model {cfg.model.name})"
    indices = None
    labels = info.labels
    if cfg.channels is not None:
        indices = select_channels(info.labels, cfg.channels, what=what)
        labels = list(cfg.channels)
    try:
        card.check_stream(info.srate, labels, stream_name=info.name)
    except CardMismatchError as exc:
        raise CardMismatchError(f"{what} refuses to start: {exc}") from None
    if cfg.window_s is not None and abs(cfg.window_s - card.window_s) > 1e-9:
        raise CardMismatchError(
            f"{what}: config window_s = {cfg.window_s} s but the model was built for {card.window_s} s windows; "
            "remove window_s from the config or use a model with that window."
        )
    pre = card.preprocessing if cfg.use_card_filters else {}
    band = cfg.bandpass_hz if cfg.bandpass_hz is not None else pre.get("bandpass_hz")
    notch = cfg.notch_hz if cfg.notch_hz is not None else pre.get("notch_hz")
    order = cfg.filter_order or int(pre.get("filter_order", 4))
    filters = FilterSettings(tuple(band) if band is not None else None, order, notch)  # type: ignore[arg-type]
    settings = PipelineSettings(
        name=cfg.name,
        window_s=card.window_s,
        hop_s=cfg.hop_s or card.hop_s,
        filters=filters,
        catch_up=cfg.catch_up,
        min_confidence=cfg.min_confidence,
        channel_indices=indices,
    )
    return Pipeline(settings, decoder, info.srate, info.n_channels, clock=clock), card


def build_output(cfg: OutputConfig, session_name: str, base_dir: Path) -> Output:
    """Create the output one ``[outputs.NAME]`` table describes (opens stimulator drivers).

    Raises
    ------
    StimulatorError, RuntimeError, OSError
        When a stimulator cannot be opened (port missing, no device answering, simulator not built).
    """
    o = cfg.options
    if cfg.kind == "lsl":
        return LslCommandOutlet(cfg.name, **o)
    if cfg.kind == "teleop":
        from stimulation.teleop.factory import make_bridge

        bridge = make_bridge(o, base_dir, where=f"outputs.{cfg.name}")
        bridge.start()  # its own tick thread: dead-man timeout, ramps, guards (and a real-time simulation)
        return bridge
    if cfg.kind == "stimulator":
        holder: dict[str, StimulatorOutput] = {}

        def on_event(ev: Any) -> None:
            out = holder.get("out")
            if out is not None:
                out.on_device_event(ev)

        driver, sim = build_stimulator(
            o["driver"],
            o["port"],
            timeout_s=o["timeout_s"],
            heartbeat_hz=o["heartbeat_hz"],
            seed=o["seed"],
            on_event=on_event if o["driver"] == "serial" else None,
        )
        try:
            out = StimulatorOutput(
                cfg.name,
                driver,
                channel=o["channel"],
                current_ma=o["current_ma"],
                frequency_hz=o["frequency_hz"],
                sim_process=sim,
            )
        except BaseException:
            driver.close()
            if sim is not None:
                sim.close()
            raise
        holder["out"] = out
        driver.start_heartbeat()
        return out
    if cfg.kind == "audio":
        from app.outputs import AudioOutput

        return AudioOutput.from_options(cfg.name, o, session_name=session_name, base_dir=base_dir)
    raise ValueError(f"unknown output kind {cfg.kind!r}")  # unreachable: config validation lists the kinds


def build_controller(cfg: ControllerConfig) -> Any:
    """The pulse-width controller a ``[controllers.NAME]`` table names, stepped every ``period_s``.

    ``kind = "rise"``: :class:`stimulation.nmes.rise.RiseController` with ``gains = {ks, alpha1,
    alpha2, beta}`` or ``gains = {preset = "empirical_a"}`` (a key of ``EMPIRICAL_GAINS``; the
    default). ``kind = "pid"``: :class:`stimulation.nmes.pid.PidController` with ``gains = {kp, ki,
    kd}`` (default ``BASELINE_PID``).

    Raises
    ------
    ValueError
        Unknown preset or gain keys, or RISE gains outside the stability conditions.
    """
    where = f"config table 'controllers.{cfg.name}.gains'"
    table = dict(cfg.gains)
    if cfg.kind == "rise":
        from stimulation.nmes.rise import EMPIRICAL_GAINS, RiseController, RiseGains

        preset = table.pop("preset", None if table else "empirical_a")
        if preset is not None:
            if table or preset not in EMPIRICAL_GAINS:
                raise ValueError(
                    f"{where}: give either preset (one of {sorted(EMPIRICAL_GAINS)}) or ks, alpha1, alpha2, beta; "
                    f"found {cfg.gains!r}."
                )
            gains = EMPIRICAL_GAINS[preset]
        else:
            try:
                gains = RiseGains(**table)
            except TypeError as exc:
                raise ValueError(
                    f"{where} needs exactly ks, alpha1, alpha2, beta; found {sorted(table)} ({exc})."
                ) from None
        return RiseController(gains, dt_s=cfg.period_s, stim_frequency_hz=cfg.update_hz)
    from stimulation.nmes.pid import BASELINE_PID, PidController, PidGains

    try:
        pid_gains = PidGains(**table) if table else BASELINE_PID
    except TypeError as exc:
        raise ValueError(f"{where} needs exactly kp, ki, kd; found {sorted(table)} ({exc}).") from None
    return PidController(pid_gains, dt_s=cfg.period_s, stim_frequency_hz=cfg.update_hz)


class Session:
    """A running closed loop: sources -> pipelines -> outputs, plus the recorder.

    Parameters
    ----------
    config : SessionConfig
        Validated configuration (see :func:`app.config.load_config`).
    record_path : str or Path, optional
        Record to this XDF file (overrides ``[recording]``).
    audit_log_path : str or Path, optional
        The safety audit log (overrides ``[safety] audit_log``).
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        record_path: str | Path | None = None,
        audit_log_path: str | Path | None = None,
    ) -> None:
        self.config = config
        self.state = "idle"
        self.sources: dict[str, Source] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.cards: dict[str, ModelCard] = {}
        self.runners: dict[str, PipelineRunner] = {}
        self.outputs: dict[str, Output] = {}
        self.recorder: Recorder | None = None
        self.record_path = Path(record_path) if record_path else None
        self.audit_log_path = Path(audit_log_path) if audit_log_path else None
        self.safety: SafetySupervisor | None = None
        self.controllers: dict[str, NmesControlLoop] = {}
        self.errors: list[dict[str, Any]] = []
        self.log: deque[LogEntry] = deque(maxlen=2000)
        self.latency = LatencyTracker()
        self.recent_commands: deque[Command] = deque(maxlen=500)
        self.last_command: dict[str, Command] = {}
        self.keep_all_commands = False  # demo and tests: keep every command in all_commands
        self.all_commands: list[Command] = []
        self.fast_stats: dict[str, float] = {}
        self._virtual_time = False  # fast replay: no wall-clock latency
        self.n_commands = 0
        self.n_blocked = 0  # commands not delivered to outputs because the session is faulted or data stale
        self.n_held_safety = 0  # of those, held because the safety supervisor has a fault latched (e-stop)
        self._subscribers: list[Callable[[Command], None]] = []
        self._stale: set[str] = set()
        self._lock = threading.Lock()
        self.started_at = float("nan")

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> Session:
        """Load and validate a TOML config, then build the Session (not yet opened)."""
        return cls(load_config(path), **kwargs)

    # ----------------------------------------------------------------- logging
    def _log(self, level: str, message: str, **details: Any) -> None:
        self.log.append(LogEntry(pylsl.local_clock(), level, message, details))
        getattr(log, level if level != "fault" else "error")(message)
        if self.recorder is not None:
            self.recorder.add_event(level, {"message": message, **details})

    def report_error(self, where: str, exc: BaseException, tb: str) -> None:
        """Called from any thread when something fails: fault state, outputs safe, traceback kept."""
        with self._lock:
            self.errors.append({"time": pylsl.local_clock(), "where": where, "error": repr(exc), "traceback": tb})
            self.state = "fault"
        self._log("error", f"{where} failed: {exc!r}", traceback=tb)
        if self.safety is not None:
            try:
                self.safety.upstream_fault(where, repr(exc))
            except Exception as sup_exc:  # noqa: BLE001 - the outputs still go safe below
                log.error("safety supervisor upstream_fault failed: %r", sup_exc)
        self._all_safe(f"fault in {where}: {exc!r}")

    def _all_safe(self, reason: str) -> None:
        for out in list(self.outputs.values()):
            try:
                out.safe_state(reason)
            except Exception as exc:  # noqa: BLE001 - one broken output must not stop the others going safe
                self.errors.append(
                    {"time": pylsl.local_clock(), "where": f"output:{out.name}", "error": repr(exc), "traceback": ""}
                )
                log.error("output %r failed to go to its safe state: %r", out.name, exc)

    def _on_source_error(self, source: Source, exc: BaseException, tb: str) -> None:
        self.report_error(f"source:{source.name}", exc, tb)

    def _on_source_event(self, kind: str, details: dict) -> None:
        self._log("warning", f"stream event: {kind}", kind=kind, **details)

    def _on_stale(self, runner: PipelineRunner, age: float | None) -> None:
        if age is not None:
            self._stale.add(runner.name)
            self._log(
                "warning", f"data for pipeline {runner.name!r} is stale ({age:.2f} s old); outputs safe", age_s=age
            )
            self._all_safe(f"stale data in pipeline {runner.name!r}")
        else:
            self._stale.discard(runner.name)
            self._log("info", f"fresh data again for pipeline {runner.name!r}")
            if not self._stale and self.state == "running":
                for out in list(self.outputs.values()):
                    resume = getattr(out, "resume", None)  # outputs that refuse commands after a safe state
                    if resume is not None:
                        resume()

    # ------------------------------------------------------------ subscribers
    def subscribe(self, callback: Callable[[Command], None]) -> None:
        """Call ``callback(command)`` for every command, on the pipeline's decoding thread."""
        self._subscribers.append(callback)

    def _dispatch(self, cmd: Command) -> None:
        # a latched safety fault (e-stop, upstream fault) holds every output, command streams included
        deliver = self.state == "running" and not self._stale
        if deliver and self.safety is not None and self.safety.state is SafetyState.FAULT:
            deliver = False
            self.n_held_safety += 1
        if deliver:
            for out in self.outputs.values():
                out.send(cmd)
        else:
            self.n_blocked += 1
        if not self._virtual_time:
            self.latency.add(pylsl.local_clock() - cmd.sample_time)
        self.n_commands += 1
        self.recent_commands.append(cmd)
        self.last_command[cmd.pipeline] = cmd
        if self.keep_all_commands:
            self.all_commands.append(cmd)
        if self.recorder is not None:
            self.recorder.add_command(cmd)
        for cb in self._subscribers:
            cb(cmd)

    # ------------------------------------------------------------------ safety (front ends)
    def _stimulator_outputs(self) -> list[StimulatorOutput]:
        return [o for o in self.outputs.values() if isinstance(o, StimulatorOutput)]

    def _require_safety(self) -> SafetySupervisor:
        if self.safety is None:
            raise RuntimeError(f"session is {self.state!r}; open() it before arming or clearing faults.")
        return self.safety

    def arm(self, who: str = "session", reason: str = "armed") -> str:
        """Allow stimulation: the supervisor goes ``armed`` and every stimulator device is armed.

        Parameters
        ----------
        who : str
            Person or front end (``"clinician:jdoe@gui"``), for the audit log.
        reason : str
            Why, for the audit log.

        Returns
        -------
        str
            The supervisor state after arming.

        Raises
        ------
        RuntimeError
            In ``fault`` (clear it first), before ``open()``, after close, or when a device refuses to arm
            (the supervisor is then disarmed again).
        """
        sup = self._require_safety()
        state = sup.arm(who, reason)
        try:
            for out in self._stimulator_outputs():
                out.arm()
        except Exception as exc:
            sup.disarm(who, f"a stimulator refused to arm: {exc!r}")
            raise RuntimeError(f"arming failed: a stimulator refused ({exc}); disarmed again.") from exc
        self._log("warning", f"stimulation armed by {who}: {reason}", who=who)
        return state.value

    def disarm(self, who: str = "session", reason: str = "disarmed") -> str:
        """Stop stimulation: outputs to their safe state, devices disarmed; a latched fault stays latched.

        Returns
        -------
        str
            The supervisor state after disarming (``fault`` if one is latched).
        """
        sup = self._require_safety()
        state = sup.disarm(who, reason)
        for out in self._stimulator_outputs():
            try:
                out.disarm()
            except Exception as exc:  # noqa: BLE001 - the device watchdog and STIM_OFF cover it; kept and logged
                self.errors.append(
                    {"time": pylsl.local_clock(), "where": f"output:{out.name}", "error": repr(exc), "traceback": ""}
                )
                log.error("output %r: device disarm failed: %r", out.name, exc)
        self._log("warning", f"stimulation disarmed by {who}: {reason}", who=who)
        return state.value

    def estop(self, reason: str = "emergency stop", who: str = "session") -> None:
        """Emergency stop from any front end or thread. Never raises.

        Order: every stimulator device gets ESTOP first (the fastest way to outputs off; the device
        latches its own fault), then the supervisor latches its fault and zeroes every output, then
        every other output (LSL) is told to go safe.
        """
        for out in self._stimulator_outputs():
            try:
                out.estop()
            except Exception as exc:  # noqa: BLE001 - the supervisor's safe_state and the device watchdog follow
                log.error("output %r: device e-stop failed: %r", out.name, exc)
                self.errors.append(
                    {"time": pylsl.local_clock(), "where": f"estop:{out.name}", "error": repr(exc), "traceback": ""}
                )
        if self.safety is not None:
            self.safety.estop(who, reason)
        self._all_safe(f"e-stop: {reason}")
        self._log("critical", f"e-stop by {who}: {reason}", who=who)

    def clear_fault(self, who: str = "session", reason: str = "fault cleared") -> str:
        """A person acknowledges a latched fault: supervisor and devices go ``disarmed`` (arm again to stimulate).

        Raises
        ------
        RuntimeError
            When the supervisor is not in ``fault``.
        """
        sup = self._require_safety()
        state = sup.clear_fault(who, reason)
        for out in self._stimulator_outputs():
            out.clear_fault()
        self._log("warning", f"fault cleared by {who}: {reason}", who=who)
        return state.value

    def safety_status(self) -> dict[str, Any]:
        """JSON-able: supervisor state, fault, limits in force, delivered dose, outputs and controllers."""
        sup = self.safety
        sc = self.config.safety
        if sup is None:
            return {"state": SafetyState.DISARMED.value, "fault": None, "limits": None, "supervisor": False}
        st = sup.status()
        st["supervisor"] = True
        st["config_limits"] = sc.config_limits.as_dict() if sc is not None else None
        st["patient"] = sc.patient_id if sc is not None else None
        st["dose_remaining_s"] = sup.dose_remaining_s
        st["audit_log"] = str(sup.audit_log_path)
        st["outputs"] = {
            o.name: o.status()  # type: ignore[attr-defined]
            for o in self.outputs.values()
            if callable(getattr(o, "status", None))
        }
        st["controllers"] = {n: c.status() for n, c in self.controllers.items()}
        st["channels"] = {str(k): v for k, v in st["channels"].items()}
        return st

    # --------------------------------------------------------------- lifecycle
    def open(self) -> None:
        """Open sources, load and check models, create outputs and the recorder.

        On any error everything opened so far is closed again and the error is raised.
        """
        if self.state != "idle":
            raise RuntimeError(f"session is {self.state!r}; open() works only once on a new session.")
        try:
            self.safety = self._build_supervisor()
            for name, scfg in self.config.sources.items():
                src = build_source(scfg, self._on_source_error, self._on_source_event, self.config.base_dir)
                self.sources[name] = src
                src.open()
            for name, pcfg in self.config.pipelines.items():
                stream = self._stream_for(pcfg)
                self.pipelines[name], self.cards[name] = build_pipeline(pcfg, stream)
            for name, ocfg in self.config.outputs.items():
                self.outputs[name] = build_output(ocfg, self.config.name, self.config.base_dir)
                if ocfg.kind in ("stimulator", "audio"):
                    out = self.outputs[name]
                    if hasattr(out, "supervisor"):  # outputs that ask the supervisor themselves (audio)
                        out.supervisor = self.safety
                        out.stimulator.on_event = self._record_stim_event  # type: ignore[attr-defined]
                    self.safety.register_output(out)
            for name, scfg in self.config.sources.items():
                if "driven_by" in scfg.options:
                    target = self.outputs[scfg.options["driven_by"]]
                    assert isinstance(target, StimulatorOutput)  # checked by config validation
                    self.sources[name].bind_feedback(target.delivered, target.current_ma)  # type: ignore[attr-defined]
            for name, ccfg in self.config.controllers.items():
                self.controllers[name] = self._build_controller(ccfg)
            path = self.record_path
            if path is None and self.config.recording.enabled:
                stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
                path = self.config.base_dir / self.config.recording.path.format(session=self.config.name, time=stamp)
            if path is not None:
                streams = [s for src in self.sources.values() for s in src.streams.values()]
                self.recorder = Recorder(
                    path,
                    streams,
                    flush_interval_s=self.config.recording.flush_interval_s,
                    on_error=lambda exc, tb: self.report_error("recorder", exc, tb),
                )
                self.record_path = Path(path)
        except BaseException:
            self.close()
            raise
        self.state = "open"

    def _build_supervisor(self) -> SafetySupervisor:
        sc = self.config.safety
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        if self.audit_log_path is not None:
            path = self.audit_log_path
        elif sc is not None:
            path = self.config.base_dir / sc.audit_log.format(session=self.config.name, time=stamp)
        else:  # no stimulation outputs: the audit of arm/e-stop goes to the temp folder
            path = Path(tempfile.gettempdir()) / "closedloop-audit" / f"{self.config.name}-{stamp}.jsonl"
        self.audit_log_path = Path(path)
        sup = SafetySupervisor(
            sc.limits if sc is not None else None,
            audit_log_path=path,
            heartbeat_timeout_s=sc.heartbeat_timeout_s if sc is not None else 0.2,
            stale_after_s=self.config.stale_after_s,
        )
        self._log(
            "info",
            f"safety supervisor: audit log {path}"
            + ("" if sc is not None else " (no [safety] table: no stimulation permitted)"),
        )
        return sup

    def _build_controller(self, ccfg: ControllerConfig) -> NmesControlLoop:
        assert self.safety is not None
        src = self.sources[ccfg.source]
        if ccfg.stream is None:
            stream = src.primary()
        elif ccfg.stream in src.streams:
            stream = src.streams[ccfg.stream]
        else:
            raise ValueError(
                f"config key 'controllers.{ccfg.name}.stream' names {ccfg.stream!r}, "
                f"but source {ccfg.source!r} has streams {sorted(src.streams)}."
            )
        index = 0
        if ccfg.channel is not None:
            labels = list(stream.info.labels)
            if ccfg.channel not in labels:
                raise ValueError(
                    f"config key 'controllers.{ccfg.name}.channel' names {ccfg.channel!r}, "
                    f"but stream {stream.info.name!r} has channels {labels}."
                )
            index = labels.index(ccfg.channel)
        target = self.outputs[ccfg.output]
        assert isinstance(target, StimulatorOutput)  # checked by config validation
        return NmesControlLoop(
            ccfg.name,
            self.controller_factory(ccfg),
            stream,
            self.safety,
            target,
            make_reference(ccfg.reference, ccfg.reference_min_deg, ccfg.reference_max_deg, ccfg.reference_period_s),
            period_s=ccfg.period_s,
            update_hz=ccfg.update_hz,
            channel_index=index,
            on_error=self.report_error,
            on_update=lambda details, t: self._record_stim_event("nmes_update", details, t),
        )

    #: Builds the controller of a ``[controllers.X]`` table; tests may swap in their own.
    controller_factory: Callable[[ControllerConfig], Any] = staticmethod(build_controller)

    def _record_stim_event(self, kind: str, details: dict[str, Any], t: float) -> None:
        """Stimulation events (NMES updates, audio bursts) into the recording, stamped with their time."""
        rec = self.recorder
        if rec is not None and not rec.closed:
            rec.add_event(kind, details, timestamp=t)

    def _on_age(self, name: str, age: float) -> None:
        sup = self.safety
        if sup is not None:
            sup.heartbeat()
            sup.data_age(age if math.isfinite(age) else math.nan, f"pipeline:{name}")

    def _stream_for(self, pcfg: PipelineConfig) -> BufferedStream:
        src = self.sources[pcfg.source]
        if pcfg.stream is None:
            return src.primary()
        if pcfg.stream not in src.streams:
            raise ValueError(
                f"config key 'pipelines.{pcfg.name}.stream' names {pcfg.stream!r}, "
                f"but source {pcfg.source!r} has streams {sorted(src.streams)}."
            )
        return src.streams[pcfg.stream]

    def start(self) -> None:
        """Start recording, acquisition and decoding threads."""
        if self.state == "idle":
            self.open()
        if self.state != "open":
            raise RuntimeError(f"session is {self.state!r}; start() needs an opened session.")
        self.state = "running"
        self.started_at = pylsl.local_clock()
        if self.recorder is not None:
            self.recorder.start()
        # Runners attach before the sources start, so a replay's first samples reach every pipeline.
        for name, pipe in self.pipelines.items():
            stream = self._stream_for(self.config.pipelines[name])
            runner = PipelineRunner(
                pipe,
                stream,
                self._dispatch,
                self.report_error,
                self._on_stale,
                self.config.stale_after_s,
                mode=self.config.pipelines[name].run_on,
                on_age=self._on_age,
            )
            self.runners[name] = runner
            runner.start()
        for src in self.sources.values():
            src.start()
        for loop in self.controllers.values():
            loop.start()
        if self.config.safety is not None and self.config.safety.arm_on_start:
            self.arm("config:arm_on_start", "[safety] arm_on_start = true (simulated stimulators only)")
        self._log("info", f"session {self.config.name!r} started")

    def stop(self) -> None:
        """Outputs safe, threads stopped, recording closed. Safe to call more than once."""
        if self.state in ("idle", "stopped"):
            return
        for name, loop in self.controllers.items():
            loop.stop()
            self._log("info", f"controller {name!r}: {loop.summary()}", **loop.summary())
        if self.safety is not None:
            self.safety.disarm("session", "session stopped")
        self._all_safe("session stopped")
        for r in self.runners.values():
            r.stop()
        for src in self.sources.values():
            src.stop()
        if self.state != "fault":
            self.state = "stopped"
        self._log("info", f"session {self.config.name!r} stopped")
        self.close()

    def close(self) -> None:
        """Release sources, outputs and the recorder."""
        for src in self.sources.values():
            try:
                src.close()
            except Exception as exc:  # noqa: BLE001 - keep closing the rest; the error is logged and kept
                log.error("closing source %r failed: %r", src.name, exc)
                self.errors.append(
                    {"time": pylsl.local_clock(), "where": f"source:{src.name}", "error": repr(exc), "traceback": ""}
                )
        if self.recorder is not None and not self.recorder.closed:
            self.recorder.close()
        for loop in self.controllers.values():
            loop.stop()
        if self.safety is not None:
            self.safety.close()  # every stimulation output to its safe state, audit log closed
        for out in self.outputs.values():
            try:
                out.close()
            except Exception as exc:  # noqa: BLE001 - keep closing the rest; the error is logged and kept
                log.error("closing output %r failed: %r", out.name, exc)
                self.errors.append(
                    {"time": pylsl.local_clock(), "where": f"output:{out.name}", "error": repr(exc), "traceback": ""}
                )

    def run(
        self,
        duration_s: float | None = None,
        *,
        on_tick: Callable[[Session], None] | None = None,
        tick_s: float = 0.5,
        stop_event: threading.Event | None = None,
    ) -> None:
        """Start, run for ``duration_s`` (config value when None; until ``stop_event`` otherwise), stop.

        ``on_tick(session)`` is called on this thread every ``tick_s`` s (status lines).
        Finite sources (replay) end the run when they are done.
        """
        duration = duration_s if duration_s is not None else self.config.duration_s
        stop_event = stop_event or threading.Event()
        self.start()
        try:
            t0 = time.monotonic()
            next_tick = t0 + tick_s
            while not stop_event.is_set():
                now = time.monotonic()
                if duration is not None and now - t0 >= duration:
                    break
                if self.sources and all(s.finished.is_set() for s in self.sources.values()):
                    break
                wait = next_tick - now
                if duration is not None:
                    wait = min(wait, t0 + duration - now)
                stop_event.wait(max(0.0, wait))
                if time.monotonic() >= next_tick:
                    next_tick += tick_s
                    if on_tick is not None:
                        on_tick(self)
        finally:
            self.stop()

    def run_fast(self, chunk_s: float = 0.05) -> list[Command]:
        """Replay every source as fast as possible, deterministically; return all commands.

        Every source must be a :class:`~acquisition.replay.ReplaySource`. Samples keep their
        recorded timestamps; pipelines decide at every hop (``catch_up = "all"``) and the issue
        time of a command is the timestamp of its last sample (a virtual clock), so two runs
        give identical commands. The recorder, if any, is fed synchronously.
        """
        from acquisition.replay import ReplaySource

        if self.state == "idle":
            self.open()
        if self.state != "open":
            raise RuntimeError(f"session is {self.state!r}; run_fast() needs an opened session.")
        replays = {n: s for n, s in self.sources.items() if isinstance(s, ReplaySource)}
        if len(replays) != len(self.sources):
            others = sorted(set(self.sources) - set(replays))
            raise RuntimeError(f"run_fast() needs replay sources only; {others} are live sources.")
        by_stream: dict[tuple[str, str], list[str]] = {}
        for name, pipe in self.pipelines.items():
            pipe.virtual_time = True
            pipe.settings = dataclasses.replace(pipe.settings, catch_up="all")
            pcfg = self.config.pipelines[name]
            key = (pcfg.source, pcfg.stream or self._stream_key(self.sources[pcfg.source]))
            by_stream.setdefault(key, []).append(name)
        commands: list[Command] = []
        self._virtual_time = True
        self.keep_all_commands = True
        self.state = "running"
        self.started_at = pylsl.local_clock()
        wall0 = time.perf_counter()
        try:
            for sname, src in replays.items():
                for skey, data, ts in src.iter_chunks(chunk_s):
                    stream = src.streams[skey]
                    stream.push(data, ts, float(ts[-1]))
                    for pname in by_stream.get((sname, skey), []):
                        for cmd in self.pipelines[pname].process(np.asarray(data, dtype=np.float32), ts):
                            self._dispatch(cmd)
                            commands.append(cmd)
                    if self.recorder is not None:
                        self.recorder.poll()
        except Exception as exc:
            self.report_error("replay", exc, traceback.format_exc())
            raise
        finally:
            wall = time.perf_counter() - wall0
            rec_s = max((s.duration_s for s in replays.values()), default=0.0)
            self.fast_stats = {
                "wall_s": wall,
                "recording_s": rec_s,
                "speed_x": rec_s / wall if wall > 0 else float("inf"),
            }
            if self.state == "running":
                self.state = "stopped"
            self._all_safe("replay finished")
            self.close()
        return commands

    @staticmethod
    def _stream_key(src: Source) -> str:
        prim = src.primary()
        return next(k for k, v in src.streams.items() if v is prim)

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """JSON-able snapshot for status lines, the daemon API and the GUI."""
        now = pylsl.local_clock()
        sources = {}
        for name, src in self.sources.items():
            streams = {}
            for sname, s in src.streams.items():
                st = s.stats
                buf = s.buffer
                entry: dict[str, Any] = {
                    "srate": s.info.srate,
                    "channels": s.info.n_channels,
                    "samples": st.n_samples,
                    "nonfinite": st.n_nonfinite,
                    "dropouts": st.n_dropouts,
                    "reacquired": st.n_reacquired,
                    "connected": st.connected,
                    "clock_offset_s": st.clock_offset,
                }
                if isinstance(buf, RingBuffer):
                    entry["gaps"] = buf.n_gaps
                    entry["gap_seconds"] = round(buf.gap_seconds, 4)
                    last = buf.last_timestamp
                    entry["data_age_s"] = (now - last) if last == last else None
                streams[sname] = entry
            sources[name] = {
                "running": src.running,
                "error": repr(src.error) if src.error else None,
                "streams": streams,
            }
        pipelines = {}
        for name, p in self.pipelines.items():
            r = self.runners.get(name)
            last_cmd = self.last_command.get(name)
            pipelines[name] = {
                "decisions": p.n_decisions,
                "skipped_stale": p.n_skipped_stale,
                "suppressed_nonfinite": p.n_suppressed_nonfinite,
                "nonfinite_samples": p.n_nonfinite_samples,
                "lost_samples": r.n_lost if r else 0,
                "stale": bool(r and r.stale),
                "last_label": last_cmd.label if last_cmd is not None else None,
                "last_confidence": last_cmd.confidence if last_cmd is not None else None,
            }
        return {
            "name": self.config.name,
            "state": self.state,
            "uptime_s": (now - self.started_at) if self.started_at == self.started_at else 0.0,
            "commands": self.n_commands,
            "blocked_commands": self.n_blocked,
            "latency": self.latency.summary(),
            "sources": sources,
            "pipelines": pipelines,
            "recording": str(self.record_path) if self.recorder is not None else None,
            "errors": [{k: v for k, v in e.items() if k != "traceback"} for e in self.errors],
            "safety": self.safety_status(),
        }
