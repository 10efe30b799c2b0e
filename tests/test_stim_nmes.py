"""The NMES loop closed end to end on the simulator (issue 5, acceptance 5).

``configs/nmes_sim.toml`` as shipped: simulated knee -> RISE (5 ms) -> SafetySupervisor ->
SerialStimulator -> ``stimbox-sim`` (the firmware core on a pty) -> the pulse width the device
confirms -> the simulated knee. What the device delivers is read back from the device itself
(STATUS over the pty), never from the host's own bookkeeping.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, wait_until

from app.config import ConfigError, load_config, parse_config
from app.outputs import StimulatorOutput
from app.session import Session
from stimulation.knee_plant import KneePlantSource, PlantInput

CONFIG = REPO / "configs" / "nmes_sim.toml"


def device_pw(session: Session) -> float:
    """Pulse width the device reports delivering on the output's channel (µs; 0 when off)."""
    out = session.outputs["nmes"]
    assert isinstance(out, StimulatorOutput)
    return out.driver.stimulator_status().channels[out.channel].delivered_pulse_width_us


def audit(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    yield from _session(tmp_path, "serial")


def _session(tmp_path: Path, driver: str) -> Iterator[Session]:
    cfg = load_config(CONFIG)
    if driver != "serial":
        nmes = cfg.outputs["nmes"]
        opts = {**nmes.options, "driver": driver}
        cfg = dataclasses.replace(cfg, outputs={**cfg.outputs, "nmes": dataclasses.replace(nmes, options=opts)})
    s = Session(cfg, audit_log_path=tmp_path / "audit.jsonl")
    s.open()
    try:
        yield s
    finally:
        s.stop()
        s.close()


def test_config_closes_the_loop_through_the_device(session: Session) -> None:
    loop = session.controllers["knee"]
    assert type(loop.controller).__name__ == "RiseController"
    src = session.sources["knee"]
    assert isinstance(src, KneePlantSource)
    session.start()  # arm_on_start: the supervisor and the device are armed
    assert session.safety_status()["state"] in ("armed", "stimulating")
    assert wait_until(lambda: device_pw(session) > 0, 10.0), session.safety_status()
    # the plant receives what the device delivers (read back from the device), not what was asked
    assert wait_until(lambda: src.last_input.pulse_width_us > 0, 2.0)
    st = session.safety_status()
    assert st["state"] == "stimulating" and st["dose_used_s"] > 0
    assert wait_until(lambda: session.safety_status()["controllers"]["knee"]["steps"] > 100, 5.0)
    assert st["limits"]["max_pulse_width_us"] == 400.0
    # disarm: the device stops, the plant sees zero, nothing more is requested
    session.disarm("test", "end of block")
    assert device_pw(session) == 0
    assert wait_until(lambda: src.last_input == PlantInput(), 1.0)
    assert session.safety_status()["state"] == "disarmed"


@pytest.fixture(params=["serial", "sim"])
def any_driver_session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    yield from _session(tmp_path, request.param)


def test_killing_the_stream_sets_the_output_to_zero(any_driver_session: Session) -> None:
    session = any_driver_session
    session.start()
    assert wait_until(lambda: device_pw(session) > 0, 10.0), session.safety_status()
    assert wait_until(lambda: device_pw(session) > 20, 10.0), session.safety_status()
    session.sources["knee"].stop()  # the stream dies: no more samples
    # stale after 0.1 s -> the supervisor zeroes the stimulator and refuses requests
    assert wait_until(lambda: not session.safety_status()["upstream_ok"], 2.0), session.safety_status()
    assert device_pw(session) == 0
    st = session.safety_status()
    assert st["upstream_reason"] == "stale_data" and st["state"] == "armed"  # not latched: survivable
    assert st["outputs"]["nmes"]["delivered_pulse_width_us"] == 0
    n = st["controllers"]["knee"]["decisions"].get("stale_data", 0)
    assert wait_until(lambda: session.safety_status()["controllers"]["knee"]["decisions"].get("stale_data", 0) > n, 2)
    assert device_pw(session) == 0  # still zero while the loop keeps asking
    sup = session.safety
    assert sup is not None
    records = audit(sup.audit_log_path)
    assert any(r["event"] == "upstream_stale" and r["reason"] == "stale_data" for r in records)
    assert any(r["event"] == "decision" and not r["allowed"] and r["reason"] == "stale_data" for r in records)


def test_a_lost_source_latches_an_upstream_fault_and_zeroes(session: Session) -> None:
    src = session.sources["knee"]
    assert isinstance(src, KneePlantSource)
    session.start()
    assert wait_until(lambda: device_pw(session) > 0, 10.0)
    out = session.outputs["nmes"]
    assert isinstance(out, StimulatorOutput)

    def lost() -> PlantInput:
        raise ConnectionError("knee sensor unplugged")

    src.bind_feedback(lost)  # the acquisition thread fails on its next sample -> Session.report_error
    assert wait_until(lambda: session.safety_status()["state"] == "fault", 2.0)
    assert device_pw(session) == 0
    st = session.safety_status()
    assert st["fault"]["kind"] == "upstream_fault" and st["fault"]["who"] == "source:knee"
    assert session.state == "fault"
    with pytest.raises(RuntimeError, match="fault"):
        session.arm("test", "try to re-arm")  # a latched fault needs a person
    session.clear_fault("test", "sensor replaced")
    assert session.safety_status()["state"] == "disarmed"


def test_estop_reaches_the_device_and_latches(session: Session) -> None:
    session.start()
    assert wait_until(lambda: device_pw(session) > 0, 10.0)
    session.estop("test e-stop", who="test")
    out = session.outputs["nmes"]
    assert isinstance(out, StimulatorOutput)
    dev = out.driver.stimulator_status()
    assert dev.outputs == 0 and dev.state == "fault" and dev.fault == "estop"
    assert session.safety_status()["state"] == "fault"
    with pytest.raises(RuntimeError, match="fault"):
        session.arm("test", "re-arm")
    session.clear_fault("test", "checked the patient")
    assert out.driver.stimulator_status().state == "disarmed"
    session.arm("test", "resume")
    assert wait_until(lambda: device_pw(session) > 0, 10.0)


def test_a_session_without_safety_table_permits_no_stimulation(tmp_path: Path) -> None:
    cfg = parse_config({"session": {"name": "plain"}, "sources": {"k": {"kind": "sim", "scenario": "knee"}}})
    s = Session(cfg, audit_log_path=tmp_path / "a.jsonl")
    s.open()
    try:
        assert s.safety_status()["limits"] is None
        assert s.arm("test", "arm") == "armed"
        s.estop("test")
        assert s.safety_status()["state"] == "fault"
    finally:
        s.close()


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda d: d.pop("safety"), r"needs a \[safety\] table"),
        (lambda d: d["safety"]["limits"].pop("max_current_ma"), r"missing required key\(s\) \['max_current_ma'\]"),
        (lambda d: d["outputs"]["nmes"].update(driver="laser"), r"'outputs.nmes.driver' must be one of"),
        (lambda d: d["outputs"]["nmes"].update(port="/dev/ttyACM0"), r"arm_on_start' is allowed only with simulated"),
        (lambda d: d["controllers"]["knee"].update(output="nope"), r"'controllers.knee.output' must name"),
        (lambda d: d["sources"]["knee"].update(driven_by="nope"), r"'sources.knee.driven_by' must name"),
        (lambda d: d["sources"]["knee"].update(scenario="ssvep"), r"apply only to scenario = \"knee\""),
        (lambda d: d["controllers"]["knee"].update(reference="zigzag"), r"'controllers.knee.reference' must be"),
    ],
)
def test_stimulation_config_errors_name_the_key(patch, message: str) -> None:
    import tomllib

    doc = tomllib.loads(CONFIG.read_text())
    patch(doc)
    with pytest.raises(ConfigError, match=message):
        parse_config(doc, CONFIG.parent)


def test_profile_lowers_limits_and_may_not_raise_them(tmp_path: Path) -> None:
    import tomllib

    doc = tomllib.loads(CONFIG.read_text())
    (tmp_path / "p.toml").write_text('[patient]\nid = "P001"\n[limits]\nmax_current_ma = 20.0\n')
    doc["safety"]["profile"] = "p.toml"
    cfg = parse_config(doc, tmp_path)
    assert cfg.safety is not None and cfg.safety.limits.max_current_ma == 20.0
    assert cfg.safety.config_limits.max_current_ma == 40.0 and cfg.safety.patient_id == "P001"
    (tmp_path / "p.toml").write_text('[patient]\nid = "P001"\n[limits]\nmax_current_ma = 60.0\n')
    with pytest.raises(ConfigError, match="may only lower"):
        parse_config(doc, tmp_path)


def test_profile_limit_below_the_output_current_refuses_every_request(tmp_path: Path) -> None:
    cfg = load_config(CONFIG)
    assert cfg.safety is not None
    low = dataclasses.replace(cfg.safety.limits, max_current_ma=10.0)  # the output asks for 30 mA
    s = Session(
        dataclasses.replace(cfg, safety=dataclasses.replace(cfg.safety, limits=low)),
        audit_log_path=tmp_path / "a.jsonl",
    )
    s.open()
    try:
        s.start()
        assert wait_until(lambda: s.safety_status()["controllers"]["knee"]["decisions"].get("current_limit", 0) > 3, 5)
        assert device_pw(s) == 0
        refused = [r for r in audit(tmp_path / "a.jsonl") if r["event"] == "decision" and not r["allowed"]]
        assert refused and all(r["reason"] and r["message"] for r in refused)
        assert math.isclose(refused[0]["values"]["current_ma"], 30.0)
    finally:
        s.stop()
        s.close()


def test_the_recording_holds_the_knee_stream_and_every_nmes_update(tmp_path: Path) -> None:
    from acquisition.xdf_reader import read_xdf

    out = tmp_path / "nmes.xdf"
    s = Session(load_config(CONFIG), record_path=out, audit_log_path=tmp_path / "a.jsonl")
    s.open()
    try:
        s.start()
        assert wait_until(lambda: device_pw(s) > 0, 10.0)
        assert wait_until(lambda: s.controllers["knee"].summary()["stimulating_updates"] > 10, 5.0)
    finally:
        s.stop()
    streams = {st.info.name: st for st in read_xdf(out)}
    assert streams["knee-knee"].n_samples == s.sources["knee"].streams["knee_angle"].stats.n_samples > 20
    events = [json.loads(v[0]) for v in streams["closedloop-events"].data]
    updates = [e for e in events if e["event"] == "nmes_update"]
    assert len(updates) >= 10 and all(e["controller"] == "knee" for e in updates)
    allowed = [e for e in updates if e["allowed"]]
    assert allowed and all(0 <= e["pulse_width_us"] <= 400 and e["current_ma"] <= 40 for e in allowed)
    assert len(updates) == sum(s.controllers["knee"].decisions.values())
