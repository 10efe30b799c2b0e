"""Session configuration: a TOML file validated up front.

Every error is a :class:`ConfigError` naming the key path (``sources.eeg.kind``), what was
expected and what was found, so a typo is caught before any device is opened. Relative
paths (models, recordings, replay files) are resolved against the config file's folder.

The format, by example (``configs/demo.toml`` is the reference)::

    [session]
    name = "demo"
    duration_s = 20.0          # optional; run until stopped when absent
    stale_after_s = 0.5        # data older than this puts outputs to their safe state

    [sources.eeg]
    kind = "sim"               # sim | lsl | brainflow | replay
    scenario = "ssvep"         # sim only: ssvep | mi | spindle | emg | knee
    seed = 1

    [pipelines.ssvep]
    source = "eeg"
    model = "../models/ssvep_reference.onnx"
    hop_s = 0.1                # default: the model card's hop
    catch_up = "latest"
    run_on = "source"          # decode on the acquisition thread (lowest latency) or "thread" (own thread)

    [outputs.commands]
    kind = "lsl"
    stream_name = "closedloop-commands"

    [recording]
    enabled = false
    path = "recordings/{session}-{time}.xdf"

Stimulation (``configs/nmes_sim.toml`` is the reference; docs/stimulation.md explains every key)::

    [safety]                   # required as soon as an output can stimulate
    audit_log = "../logs/{session}-safety.jsonl"
    profile = "patients/P001.toml"   # optional; may only lower the limits below
    heartbeat_timeout_s = 0.2

    [safety.limits]            # every key required (stimulation.limits.SafetyLimits)
    max_current_ma = 40.0
    ...

    [sources.knee]
    kind = "sim"
    scenario = "knee"
    driven_by = "nmes"         # closed loop: the knee moves with what this stimulator output delivers

    [outputs.nmes]
    kind = "stimulator"        # stimulator | audio | lsl
    driver = "serial"          # serial | sim | rehastim
    port = "stimbox-sim"       # a serial port, or "stimbox-sim" to start the firmware's host build
    channel = 0

    [controllers.knee]
    kind = "rise"              # rise | pid
    source = "knee"
    output = "nmes"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stimulation.limits import LimitsError, SafetyLimits, load_profile

SOURCE_KINDS = ("sim", "lsl", "brainflow", "replay")
COMMAND_OUTPUT_KINDS = ("lsl", "teleop")
STIM_OUTPUT_KINDS = ("stimulator", "audio")
OUTPUT_KINDS = COMMAND_OUTPUT_KINDS + STIM_OUTPUT_KINDS
TELEOP_BACKENDS = ("mujoco", "stretch_body", "rosbridge")
STIMULATOR_DRIVERS = ("serial", "sim", "rehastim")
AUDIO_SINKS = ("device", "file", "null")
CONTROLLER_KINDS = ("rise", "pid")
REFERENCE_KINDS = ("sine", "step", "constant")
#: ``port`` value that starts ``firmware/build/stimbox-sim`` on a fresh pseudo-terminal.
STIMBOX_SIM_PORT = "stimbox-sim"
SIM_SCENARIOS = ("ssvep", "mi", "spindle", "emg", "knee")


class ConfigError(ValueError):
    """A malformed session configuration (the message names the key path)."""


_MISSING = object()
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true/false",
    dict: "a table",
    list: "a list",
}


def _get(table: dict, key: str, types: type | tuple[type, ...], path: str, default: Any = _MISSING) -> Any:
    full = f"{path}.{key}" if path else key
    if key not in table:
        if default is _MISSING:
            raise ConfigError(f"config key '{full}' is required but missing.")
        return default
    value = table[key]
    tup = types if isinstance(types, tuple) else (types,)
    if float in tup and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (isinstance(value, bool) and bool not in tup) or not isinstance(value, tup):
        expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in tup)
        raise ConfigError(f"config key '{full}' must be {expected}, found {value!r} ({type(value).__name__}).")
    return value


def _check_keys(table: dict, allowed: set[str], path: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"config table '{path}' has unknown key(s) {unknown}; allowed keys are {sorted(allowed)}.")


def _require_table(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{path}' must be a table, found {value!r}.")


def _positive(value: float | None, path: str, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"config key '{path}' must be {rule}, found {value!r}.")


@dataclass(frozen=True)
class SourceConfig:
    """One ``[sources.NAME]`` table; ``options`` holds the kind-specific keys (validated)."""

    name: str
    kind: str
    options: dict[str, Any]


@dataclass(frozen=True)
class PipelineConfig:
    """One ``[pipelines.NAME]`` table."""

    name: str
    source: str
    model: Path
    stream: str | None = None
    channels: tuple[str, ...] | None = None
    window_s: float | None = None
    hop_s: float | None = None
    bandpass_hz: tuple[float | None, float | None] | None = None
    notch_hz: float | None = None
    filter_order: int | None = None
    use_card_filters: bool = True
    catch_up: str = "latest"
    min_confidence: float = 0.0
    run_on: str = "source"


@dataclass(frozen=True)
class OutputConfig:
    """One ``[outputs.NAME]`` table."""

    name: str
    kind: str
    options: dict[str, Any]


@dataclass(frozen=True)
class SafetyConfig:
    """The ``[safety]`` table: limits (lowered by an optional patient profile) and the audit log.

    Attributes
    ----------
    limits : SafetyLimits
        Limits in force (the config's ``[safety.limits]`` lowered by ``profile``).
    config_limits : SafetyLimits
        The config's limits before the profile.
    profile : Path or None
        Patient profile file.
    patient_id : str or None
        ``[patient] id`` of the profile.
    audit_log : str
        Audit log path pattern (``{session}`` and ``{time}`` are filled in), relative to the config.
    heartbeat_timeout_s : float
        Longest time without a pipeline heartbeat before outputs are zeroed, s.
    arm_on_start : bool
        Arm as soon as the session starts (allowed only when every stimulator is simulated:
        ``driver = "sim"`` or ``port = "stimbox-sim"``; a real device is armed by a person).
    """

    limits: SafetyLimits
    config_limits: SafetyLimits
    profile: Path | None = None
    patient_id: str | None = None
    audit_log: str = "../logs/{session}-safety.jsonl"
    heartbeat_timeout_s: float = 0.2
    arm_on_start: bool = False


@dataclass(frozen=True)
class ControllerConfig:
    """One ``[controllers.NAME]`` table: a closed-loop NMES controller reading a stream, driving an output."""

    name: str
    kind: str
    source: str
    output: str
    stream: str | None = None
    channel: str | None = None
    period_s: float = 0.005
    update_hz: float = 25.0
    reference: str = "sine"
    reference_min_deg: float = 10.0
    reference_max_deg: float = 40.0
    reference_period_s: float = 8.0
    gains: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordingConfig:
    """The ``[recording]`` table."""

    enabled: bool = False
    path: str = "recordings/{session}-{time}.xdf"
    flush_interval_s: float = 0.25


@dataclass(frozen=True)
class SessionConfig:
    """A validated session configuration."""

    name: str
    base_dir: Path
    sources: dict[str, SourceConfig]
    pipelines: dict[str, PipelineConfig]
    outputs: dict[str, OutputConfig] = field(default_factory=dict)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    duration_s: float | None = None
    stale_after_s: float = 0.5
    safety: SafetyConfig | None = None
    controllers: dict[str, ControllerConfig] = field(default_factory=dict)


#: Keys of a ``kind = "sim"``, ``scenario = "knee"`` source driven by a stimulator output (closed loop).
_KNEE_PLANT_KEYS = {"driven_by", "delay_s", "fatigue"}

_SOURCE_KEYS = {
    "sim": {
        "kind",
        "scenario",
        "seed",
        "srate",
        "chunk_s",
        "frequencies",
        "trial_s",
        "rest_s",
        "amplitude_uv",
        "noise_uv",
        "buffer_s",
        *_KNEE_PLANT_KEYS,
    },
    "lsl": {"kind", "name", "type", "source_id", "resolve_timeout", "clock_sync", "dejitter", "buffer_s"},
    "brainflow": {"kind", "board_id", "params", "buffer_s"},
    "replay": {"kind", "path", "speed", "buffer_s"},
}


def _source(name: str, t: Any) -> SourceConfig:
    path = f"sources.{name}"
    _require_table(t, path)
    kind = _get(t, "kind", str, path)
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"config key '{path}.kind' must be one of {list(SOURCE_KINDS)}, found {kind!r}.")
    _check_keys(t, _SOURCE_KEYS[kind], path)
    opts: dict[str, Any] = {}
    if "buffer_s" in t:
        opts["buffer_s"] = _get(t, "buffer_s", float, path)
        _positive(opts["buffer_s"], f"{path}.buffer_s")
    if kind == "sim":
        scen = _get(t, "scenario", str, path, "ssvep")
        if scen not in SIM_SCENARIOS:
            raise ConfigError(f"config key '{path}.scenario' must be one of {list(SIM_SCENARIOS)}, found {scen!r}.")
        opts["scenario"] = scen
        opts["seed"] = _get(t, "seed", int, path, 0)
        for k in ("srate", "chunk_s", "trial_s", "rest_s", "amplitude_uv", "noise_uv"):
            if k in t:
                opts[k] = _get(t, k, float, path)
                _positive(opts[k], f"{path}.{k}", allow_zero=(k == "rest_s"))
        if "frequencies" in t:
            freqs = _get(t, "frequencies", list, path)
            if not freqs or not all(isinstance(f, int | float) and not isinstance(f, bool) and f > 0 for f in freqs):
                raise ConfigError(
                    f"config key '{path}.frequencies' must be a list of positive numbers, found {freqs!r}."
                )
            opts["frequencies"] = tuple(float(f) for f in freqs)
    elif kind == "lsl":
        for k in ("name", "type", "source_id"):
            if k in t:
                opts[k] = _get(t, k, str, path)
        if not any(k in opts for k in ("name", "type", "source_id")):
            raise ConfigError(f"config table '{path}' (kind 'lsl') needs at least one of 'name', 'type', 'source_id'.")
        opts["resolve_timeout"] = _get(t, "resolve_timeout", float, path, 5.0)
        _positive(opts["resolve_timeout"], f"{path}.resolve_timeout")
        opts["clock_sync"] = _get(t, "clock_sync", bool, path, True)
        opts["dejitter"] = _get(t, "dejitter", bool, path, False)
    elif kind == "brainflow":
        opts["board_id"] = _get(t, "board_id", int, path, -1)
        opts["params"] = _get(t, "params", dict, path, {})
    elif kind == "replay":
        opts["path"] = _get(t, "path", str, path)
        opts["speed"] = _get(t, "speed", float, path, 1.0)
        _positive(opts["speed"], f"{path}.speed")
    if kind == "sim" and (set(t) & _KNEE_PLANT_KEYS):
        if opts["scenario"] != "knee" or "driven_by" not in t:
            raise ConfigError(
                f"config keys {sorted(set(t) & _KNEE_PLANT_KEYS)} of '{path}' apply only to scenario = \"knee\" "
                'with driven_by = "<stimulator output>" (a simulated knee moved by what the stimulator delivers).'
            )
        opts["driven_by"] = _get(t, "driven_by", str, path)
        opts["delay_s"] = _get(t, "delay_s", float, path, None)
        _positive(opts["delay_s"], f"{path}.delay_s", allow_zero=True)
        opts["fatigue"] = _get(t, "fatigue", bool, path, True)
    return SourceConfig(name, kind, opts)


_PIPELINE_KEYS = {
    "source",
    "stream",
    "model",
    "channels",
    "window_s",
    "hop_s",
    "bandpass_hz",
    "notch_hz",
    "filter_order",
    "use_card_filters",
    "catch_up",
    "min_confidence",
    "run_on",
}


def _pipeline(name: str, t: Any, base: Path, sources: dict[str, SourceConfig]) -> PipelineConfig:
    path = f"pipelines.{name}"
    _require_table(t, path)
    _check_keys(t, _PIPELINE_KEYS, path)
    source = _get(t, "source", str, path)
    if source not in sources:
        raise ConfigError(
            f"config key '{path}.source' names source {source!r}, but only {sorted(sources)} are defined."
        )
    model = base / _get(t, "model", str, path)
    chans = _get(t, "channels", list, path, None)
    if chans is not None and not all(isinstance(c, str) for c in chans):
        raise ConfigError(f"config key '{path}.channels' must be a list of channel labels, found {chans!r}.")
    window_s = _get(t, "window_s", float, path, None)
    hop_s = _get(t, "hop_s", float, path, None)
    _positive(window_s, f"{path}.window_s")
    _positive(hop_s, f"{path}.hop_s")
    band = _get(t, "bandpass_hz", list, path, None)
    if band is not None:
        if len(band) != 2 or not all(b is None or isinstance(b, int | float) for b in band):
            raise ConfigError(f"config key '{path}.bandpass_hz' must be [low, high] in Hz, found {band!r}.")
        band = (None if band[0] in (None, 0) else float(band[0]), float(band[1]))
    notch = _get(t, "notch_hz", float, path, None)
    _positive(notch, f"{path}.notch_hz")
    order = _get(t, "filter_order", int, path, None)
    if order is not None and not 1 <= order <= 10:
        raise ConfigError(f"config key '{path}.filter_order' must be between 1 and 10, found {order}.")
    catch_up = _get(t, "catch_up", str, path, "latest")
    if catch_up not in ("latest", "all"):
        raise ConfigError(f"config key '{path}.catch_up' must be 'latest' or 'all', found {catch_up!r}.")
    run_on = _get(t, "run_on", str, path, "source")
    if run_on not in ("source", "thread"):
        raise ConfigError(f"config key '{path}.run_on' must be 'source' or 'thread', found {run_on!r}.")
    min_conf = _get(t, "min_confidence", float, path, 0.0)
    if not 0 <= min_conf <= 1:
        raise ConfigError(f"config key '{path}.min_confidence' must be between 0 and 1, found {min_conf}.")
    return PipelineConfig(
        name=name,
        source=source,
        model=model,
        stream=_get(t, "stream", str, path, None),
        channels=tuple(chans) if chans is not None else None,
        window_s=window_s,
        hop_s=hop_s,
        bandpass_hz=band,
        notch_hz=notch,
        filter_order=order,
        use_card_filters=_get(t, "use_card_filters", bool, path, True),
        catch_up=catch_up,
        min_confidence=min_conf,
        run_on=run_on,
    )


_OUTPUT_KEYS = {
    "lsl": {"kind", "stream_name", "source_id"},
    # teleop: the keys of stimulation.teleop.factory.make_bridge (checked again, in detail, when it is built)
    "teleop": {"kind", "backend", "mapping", "name", "timestep", "rosbridge", "gripper_rad_per_m"},
    "stimulator": {
        "kind",
        "driver",
        "port",
        "channel",
        "current_ma",
        "frequency_hz",
        "heartbeat_hz",
        "timeout_s",
        "seed",
    },
    "audio": {
        "kind",
        "sink",
        "path",
        "level_db",
        "burst_ms",
        "full_scale_db_spl",
        "trigger_label",
        "marker_stream",
        "samplerate",
    },
}


def _output(name: str, t: Any) -> OutputConfig:
    path = f"outputs.{name}"
    _require_table(t, path)
    kind = _get(t, "kind", str, path)
    if kind not in OUTPUT_KINDS:
        raise ConfigError(f"config key '{path}.kind' must be one of {list(OUTPUT_KINDS)}, found {kind!r}.")
    _check_keys(t, _OUTPUT_KEYS[kind], path)
    opts: dict[str, Any]
    if kind == "lsl":
        opts = {
            "stream_name": _get(t, "stream_name", str, path, "closedloop-commands"),
            "source_id": _get(t, "source_id", str, path, ""),
        }
    elif kind == "teleop":
        opts = {k: v for k, v in t.items() if k != "kind"}
        opts.setdefault("name", name)
        backend = opts.get("backend", "mujoco")
        if backend not in TELEOP_BACKENDS:
            raise ConfigError(f"config key '{path}.backend' must be one of {list(TELEOP_BACKENDS)}, found {backend!r}.")
    elif kind == "stimulator":
        driver = _get(t, "driver", str, path)
        if driver not in STIMULATOR_DRIVERS:
            raise ConfigError(
                f"config key '{path}.driver' must be one of {list(STIMULATOR_DRIVERS)}, found {driver!r}."
            )
        opts = {"driver": driver, "port": _get(t, "port", str, path, STIMBOX_SIM_PORT if driver == "serial" else "")}
        if driver in ("serial", "rehastim") and not opts["port"]:
            raise ConfigError(f"config key '{path}.port' is required for driver {driver!r} (a serial port path).")
        opts["channel"] = _get(t, "channel", int, path, 0)
        if not 0 <= opts["channel"] <= 7:
            raise ConfigError(f"config key '{path}.channel' must be a channel index 0..7, found {opts['channel']}.")
        for key, default in (("current_ma", 30.0), ("frequency_hz", 25.0), ("heartbeat_hz", 50.0), ("timeout_s", 0.2)):
            opts[key] = _get(t, key, float, path, default)
            _positive(opts[key], f"{path}.{key}")
        opts["seed"] = _get(t, "seed", int, path, 0)
    else:  # audio
        sink = _get(t, "sink", str, path, "device")
        if sink not in AUDIO_SINKS:
            raise ConfigError(f"config key '{path}.sink' must be one of {list(AUDIO_SINKS)}, found {sink!r}.")
        opts = {"sink": sink, "path": _get(t, "path", str, path, "../recordings/{session}-{time}-audio.wav")}
        for key, default in (("level_db", 45.0), ("burst_ms", 15.0), ("full_scale_db_spl", 85.0)):
            opts[key] = _get(t, key, float, path, default)
            _positive(opts[key], f"{path}.{key}")
        opts["samplerate"] = _get(t, "samplerate", int, path, 44100)
        _positive(opts["samplerate"], f"{path}.samplerate")
        opts["trigger_label"] = _get(t, "trigger_label", str, path, "spindle")
        opts["marker_stream"] = _get(t, "marker_stream", str, path, "closedloop-audio")
    return OutputConfig(name, kind, opts)


def _safety(t: Any, base: Path) -> SafetyConfig:
    _require_table(t, "safety")
    _check_keys(t, {"limits", "profile", "audit_log", "heartbeat_timeout_s", "arm_on_start"}, "safety")
    if "limits" not in t:
        raise ConfigError(
            f"config table 'safety.limits' is required; give every limit explicitly: {list(SafetyLimits.keys())}."
        )
    try:
        config_limits = SafetyLimits.from_table(t["limits"], path="safety.limits", where="config")
        limits = config_limits
        profile_path: Path | None = None
        patient: str | None = None
        if "profile" in t:
            profile_path = base / _get(t, "profile", str, "safety")
            prof = load_profile(profile_path)
            limits = config_limits.with_profile(prof)
            patient = prof.patient_id
    except LimitsError as exc:
        raise ConfigError(str(exc)) from None
    hb = _get(t, "heartbeat_timeout_s", float, "safety", 0.2)
    _positive(hb, "safety.heartbeat_timeout_s")
    return SafetyConfig(
        limits=limits,
        config_limits=config_limits,
        profile=profile_path,
        patient_id=patient,
        audit_log=_get(t, "audit_log", str, "safety", SafetyConfig.audit_log),
        heartbeat_timeout_s=hb,
        arm_on_start=_get(t, "arm_on_start", bool, "safety", False),
    )


_CONTROLLER_KEYS = {
    "kind",
    "source",
    "stream",
    "channel",
    "output",
    "period_s",
    "update_hz",
    "reference",
    "reference_min_deg",
    "reference_max_deg",
    "reference_period_s",
    "gains",
}


def _controller(
    name: str, t: Any, sources: dict[str, SourceConfig], outputs: dict[str, OutputConfig]
) -> ControllerConfig:
    path = f"controllers.{name}"
    _require_table(t, path)
    _check_keys(t, _CONTROLLER_KEYS, path)
    kind = _get(t, "kind", str, path)
    if kind not in CONTROLLER_KINDS:
        raise ConfigError(f"config key '{path}.kind' must be one of {list(CONTROLLER_KINDS)}, found {kind!r}.")
    source = _get(t, "source", str, path)
    if source not in sources:
        raise ConfigError(
            f"config key '{path}.source' names source {source!r}, but only {sorted(sources)} are defined."
        )
    output = _get(t, "output", str, path)
    if output not in outputs or outputs[output].kind != "stimulator":
        stims = sorted(n for n, o in outputs.items() if o.kind == "stimulator")
        raise ConfigError(
            f"config key '{path}.output' must name a kind = \"stimulator\" output, found {output!r}; "
            f"stimulator outputs: {stims}."
        )
    period = _get(t, "period_s", float, path, 0.005)
    _positive(period, f"{path}.period_s")
    update = _get(t, "update_hz", float, path, 25.0)
    _positive(update, f"{path}.update_hz")
    if update * period > 1.0:
        raise ConfigError(
            f"config key '{path}.update_hz' ({update} Hz) must not exceed 1 / period_s ({1 / period:g} Hz)."
        )
    ref = _get(t, "reference", str, path, "sine")
    if ref not in REFERENCE_KINDS:
        raise ConfigError(f"config key '{path}.reference' must be one of {list(REFERENCE_KINDS)}, found {ref!r}.")
    lo = _get(t, "reference_min_deg", float, path, 10.0)
    hi = _get(t, "reference_max_deg", float, path, 40.0)
    if not 0 <= lo <= hi <= 90:
        raise ConfigError(
            f"config keys '{path}.reference_min_deg' and 'reference_max_deg' need 0 <= min <= max <= 90 degrees, "
            f"found {lo} and {hi}."
        )
    per = _get(t, "reference_period_s", float, path, 8.0)
    _positive(per, f"{path}.reference_period_s")
    return ControllerConfig(
        name=name,
        kind=kind,
        source=source,
        output=output,
        stream=_get(t, "stream", str, path, None),
        channel=_get(t, "channel", str, path, None),
        period_s=period,
        update_hz=update,
        reference=ref,
        reference_min_deg=lo,
        reference_max_deg=hi,
        reference_period_s=per,
        gains=dict(_get(t, "gains", dict, path, {})),
    )


def parse_config(data: dict, base_dir: Path | str = ".") -> SessionConfig:
    """Validate a parsed TOML document into a :class:`SessionConfig`."""
    base = Path(base_dir)
    _check_keys(
        data, {"session", "sources", "pipelines", "outputs", "recording", "safety", "controllers"}, "<top level>"
    )
    sess = _get(data, "session", dict, "", {})
    _check_keys(sess, {"name", "duration_s", "stale_after_s"}, "session")
    name = _get(sess, "name", str, "session", "session")
    duration = _get(sess, "duration_s", float, "session", None)
    _positive(duration, "session.duration_s")
    stale = _get(sess, "stale_after_s", float, "session", 0.5)
    _positive(stale, "session.stale_after_s")
    src_tables = _get(data, "sources", dict, "")
    if not src_tables:
        raise ConfigError("config table 'sources' must define at least one source, found none.")
    sources = {n: _source(n, t) for n, t in src_tables.items()}
    pipelines = {n: _pipeline(n, t, base, sources) for n, t in _get(data, "pipelines", dict, "", {}).items()}
    outputs = {n: _output(n, t) for n, t in _get(data, "outputs", dict, "", {}).items()}
    safety = _safety(data["safety"], base) if "safety" in data else None
    stimulating = sorted(n for n, o in outputs.items() if o.kind in ("stimulator", "audio"))
    if stimulating and safety is None:
        raise ConfigError(
            f"output(s) {stimulating} can stimulate, so the config needs a [safety] table with [safety.limits] "
            "(every limit set explicitly; there are no default clinical limits)."
        )
    if safety is not None and safety.arm_on_start:
        real = sorted(
            n
            for n, o in outputs.items()
            if o.kind == "stimulator" and o.options["driver"] != "sim" and o.options["port"] != STIMBOX_SIM_PORT
        )
        if real:
            raise ConfigError(
                f"config key 'safety.arm_on_start' is allowed only with simulated stimulators, but output(s) {real} "
                "drive a device; remove it and arm from the GUI, the daemon API or Session.arm()."
            )
    for sname, scfg in sources.items():
        if "driven_by" in scfg.options:
            target = scfg.options["driven_by"]
            if target not in outputs or outputs[target].kind != "stimulator":
                raise ConfigError(
                    f"config key 'sources.{sname}.driven_by' must name a kind = \"stimulator\" output (the plant is "
                    f"driven by what it delivers), found {target!r}."
                )
    controllers = {n: _controller(n, t, sources, outputs) for n, t in _get(data, "controllers", dict, "", {}).items()}
    rec = _get(data, "recording", dict, "", {})
    _check_keys(rec, {"enabled", "path", "flush_interval_s"}, "recording")
    flush = _get(rec, "flush_interval_s", float, "recording", 0.25)
    if not 0 < flush <= 1.0:
        raise ConfigError(f"config key 'recording.flush_interval_s' must be in (0, 1] s, found {flush}.")
    recording = RecordingConfig(
        enabled=_get(rec, "enabled", bool, "recording", False),
        path=_get(rec, "path", str, "recording", RecordingConfig.path),
        flush_interval_s=flush,
    )
    return SessionConfig(name, base, sources, pipelines, outputs, recording, duration, stale, safety, controllers)


def load_config(path: str | Path) -> SessionConfig:
    """Read and validate a TOML session config.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ConfigError
        If the TOML is malformed (with line/column) or a key is missing, unknown or wrong.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist.")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}.") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text: {exc}.") from exc
    return parse_config(data, p.resolve().parent)
