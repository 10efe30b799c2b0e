"""Property-based: no sequence of host commands makes the *device* exceed a limit (issue 5, acceptance 2).

The whole host chain against the real firmware core on a pty: hypothesis draws sequences of
stimulation requests (through SafetySupervisor.deliver -> StimulatorOutput.apply ->
SerialStimulator -> stimbox-sim), arm / disarm / e-stop / clear-fault, stale data, and raw
driver commands that bypass the supervisor (a buggy host). After every step the device's own
STATUS is read over the pty and checked against the host limits (for what went through the
supervisor) and the firmware's hard limits (always). Every refused request must be in the audit
log with its reason; every command the device refused must be in the driver's log with its
reason. (tests/test_safety.py and tests/test_firmware.py hold the per-layer property tests.)
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.outputs import StimboxSimProcess, StimulatorOutput
from stimulation.limits import SafetyLimits
from stimulation.protocol import DeviceState, NackReason
from stimulation.safety import NmesRequest, SafetyState, SafetySupervisor
from stimulation.serial_stimulator import SerialStimulator, StimulatorNackError

HOST = SafetyLimits(
    max_current_ma=30.0,
    max_pulse_width_us=400.0,
    max_frequency_hz=50.0,
    max_charge_per_phase_uc=9.0,
    max_ramp_ma_per_s=200.0,
    max_session_dose_s=1e4,
    max_audio_db_spl=60.0,
    max_audio_rate_hz=2.0,
)
# the firmware's compiled-in hard limits (firmware/src/device.h), restated independently
DEV_MAX_UA, DEV_MAX_PW, DEV_MAX_DHZ, DEV_MAX_NC = 100_000, 500, 1000, 40_000


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SerialStimulator]:
    sim = StimboxSimProcess(log_path=tmp_path_factory.mktemp("stimbox") / "sim.log")
    try:
        with SerialStimulator(sim.path, timeout_s=1.0) as stim:
            stim.start_heartbeat()
            yield stim
    finally:
        sim.close()


_req = st.tuples(
    st.just("request"),
    st.integers(0, 3),
    st.one_of(st.floats(0.0, 30.0), st.sampled_from([30.0, 30.5, 80.0, 0.0])),  # mA
    st.one_of(st.floats(0.0, 400.0), st.sampled_from([300.0, 400.0, 401.0, 0.0])),  # µs
    st.one_of(st.floats(1.0, 50.0), st.sampled_from([50.0, 51.0, 120.0])),  # Hz
)
_raw = st.tuples(
    st.just("raw"),
    st.integers(0, 3),
    st.sampled_from([10.0, 99.0, 100.0, 100.001, 150.0]),  # mA, around the device's 100 mA
    st.sampled_from([100, 399, 500, 501]),  # µs
    st.sampled_from([25.0, 100.0, 100.1]),  # Hz
)
_ctl = st.sampled_from(["arm", "disarm", "estop", "clear", "stale", "fresh", "wait"]).map(lambda k: (k,))
OPS = st.one_of(_req, _req, _raw, _ctl)


def _check_device(stim: SerialStimulator, host_only: bool, sup_state: SafetyState) -> None:
    s = stim.status()
    event(f"device {s.state.name.lower()}, outputs {'on' if s.outputs else 'off'}")
    for i, c in enumerate(s.channels):
        where = f"channel {i}: {c}"
        assert c.target_ua <= DEV_MAX_UA and c.pulse_width_us <= DEV_MAX_PW and c.frequency_dhz <= DEV_MAX_DHZ, where
        assert c.target_ua * c.pulse_width_us <= DEV_MAX_NC * 1000, where
        assert c.applied_ua <= c.target_ua, where
        if c.on and host_only:  # everything that reached this channel went through the supervisor
            assert c.target_ua <= HOST.max_current_ma * 1000 + 1, where
            assert c.pulse_width_us <= HOST.max_pulse_width_us and c.frequency_dhz <= HOST.max_frequency_hz * 10, where
            assert c.target_ua * c.pulse_width_us <= HOST.max_charge_per_phase_uc * 1e6 + 1000, where
    if sup_state in (SafetyState.DISARMED, SafetyState.FAULT) and host_only:
        assert s.outputs == 0, f"device outputs {s.outputs:#x} while the supervisor is {sup_state.value}"
    if s.state in (DeviceState.DISARMED, DeviceState.FAULT):
        assert s.outputs == 0, s


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=1, max_size=14))
def test_no_host_command_sequence_makes_the_device_exceed_a_limit(device: SerialStimulator, ops: list[Any]) -> None:
    stim = device
    if stim.status().state is DeviceState.FAULT:
        stim.clear_fault()
    stim.disarm()
    cap = Captured()
    drv_log = logging.getLogger("stimulation.serial_stimulator")
    drv_log.addHandler(cap)
    n_nacks = 0
    with tempfile.TemporaryDirectory() as tmp:
        audit = Path(tmp) / "audit.jsonl"
        sup = SafetySupervisor(HOST, audit_log_path=audit, heartbeat_timeout_s=0.5, stale_after_s=0.5)
        outs = [StimulatorOutput(f"ch{c}", stim, channel=c) for c in range(stim.n_channels)]
        for out in outs:
            sup.register_output(out)
        host_only = True  # no raw command has touched the device since it was last zeroed
        try:
            for op in ops:
                kind = op[0]
                if kind == "request":
                    _, ch, ma, pw, hz = op
                    sup.heartbeat()
                    sup.data_age(0.01)
                    try:
                        d = sup.deliver(NmesRequest(ch, ma, pw, hz, 0.2, source="prop"), outs[ch].apply)
                        event(f"request {d.reason.value}")
                    except StimulatorNackError:
                        n_nacks += 1  # e.g. a stale raw setting on the device; the supervisor latched a fault
                elif kind == "raw":  # a host bug bypassing the supervisor: only the firmware stands in the way
                    _, ch, ma, pw, hz = op
                    host_only = False
                    try:
                        stim.set_channel(ch, current_ma=ma, pulse_width_us=pw, frequency_hz=hz)
                        stim.arm()
                        stim.stim_on(ch)
                    except StimulatorNackError:
                        n_nacks += 1
                elif kind == "arm":
                    if sup.state is not SafetyState.FAULT:
                        sup.arm("clinician:prop", "prop")
                        try:
                            stim.arm()
                        except StimulatorNackError:
                            n_nacks += 1
                elif kind == "disarm":
                    sup.disarm("clinician:prop", "prop")
                    stim.disarm()
                    host_only = True  # STIM_OFF all + DISARM: every channel is off
                elif kind == "estop":
                    stim.estop()
                    sup.estop("prop", "prop")
                    host_only = True
                elif kind == "clear":
                    if sup.state is SafetyState.FAULT:
                        sup.clear_fault("clinician:prop", "prop")
                    if stim.status().state is DeviceState.FAULT:
                        stim.clear_fault()
                elif kind == "stale":
                    sup.data_age(5.0)  # zeroes the outputs when it makes the upstream stale
                elif kind == "fresh":
                    sup.heartbeat()
                    sup.data_age(0.0)
                else:
                    time.sleep(0.03)  # ramps advance on the device
                _check_device(stim, host_only, sup.state)
        finally:
            for out in outs:
                sup.unregister_output(out)
            sup.close()
            drv_log.removeHandler(cap)
        records = [json.loads(line) for line in audit.read_text().splitlines()]
    decisions = [r for r in records if r["event"] == "decision"]
    assert len(decisions) == sup.n_allowed + sup.n_refused
    for r in decisions:
        assert r["reason"] and r["message"], r
        if not r["allowed"]:
            assert r["reason"] not in ("allowed", "ramp_limited"), r
    refusals = [r.getMessage() for r in cap.records if "refused:" in r.getMessage()]
    assert len(refusals) == n_nacks, [r.getMessage() for r in cap.records]
    for msg in refusals:  # "...: SET_CHANNEL (seq 12) refused: LIMIT (CURRENT) (state ARMED)"
        assert any(f"refused: {reason.name}" in msg for reason in NackReason), msg
