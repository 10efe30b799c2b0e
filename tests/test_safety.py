"""SafetySupervisor and safety limits: every limit, the state machine, ramp, dose, watchdog, audit log.

Most tests drive the supervisor with a hand-advanced clock and ``watchdog=False`` (calling ``poll()``),
so timing is deterministic; one test runs the real watchdog thread on ``pylsl.local_clock`` and waits
on an event with a deadline. The hypothesis test runs random sequences of every operation and checks
the invariants against an independent model.
"""

from __future__ import annotations

import json
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pylsl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stimulation.limits import (
    SANITY_CEILINGS,
    LimitsError,
    PatientProfile,
    ProfileError,
    SafetyLimits,
    load_limits,
    load_profile,
)
from stimulation.safety import (
    REL_TOL,
    AudioRequest,
    AuditLog,
    Decision,
    NmesRequest,
    Reason,
    SafetyState,
    SafetySupervisor,
)

LIMITS = {
    "max_current_ma": 40.0,
    "max_pulse_width_us": 400.0,
    "max_frequency_hz": 50.0,
    "max_charge_per_phase_uc": 12.0,
    "max_ramp_ma_per_s": 1000.0,  # 40 mA per pulse at 25 Hz: the ramp does not interfere unless a test lowers it
    "max_session_dose_s": 100.0,
    "max_audio_db_spl": 60.0,
    "max_audio_rate_hz": 2.5,
}
HB = 0.2
STALE = 0.5


def limits(**over: float) -> SafetyLimits:
    return SafetyLimits(**{**LIMITS, **over})


class FakeClock:
    """A clock that moves only when told to (s)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class RecordingOutput:
    """An output that records its safe_state calls (the supervisor only needs safe_state)."""

    def __init__(self, name: str = "rec", fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.calls: list[str] = []
        self.called = threading.Event()
        self.times: list[float] = []

    def safe_state(self, reason: str) -> None:
        self.calls.append(reason)
        self.times.append(pylsl.local_clock())
        self.called.set()
        if self.fail:
            raise OSError(f"{self.name}: serial port gone")


def read_log(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def nmes(
    current: float = 10.0, pw: float = 200.0, f: float = 25.0, d: float = 0.04, ch: int = 0, **kw: Any
) -> NmesRequest:
    return NmesRequest(ch, current, pw, f, d, **kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(tmp_path: Path, clock: FakeClock):
    made: list[SafetySupervisor] = []

    def _make(lim: SafetyLimits | None = None, **kw: Any) -> SafetySupervisor:
        kw.setdefault("clock", clock)
        kw.setdefault("watchdog", False)
        sup = SafetySupervisor(
            lim or limits(),
            audit_log_path=tmp_path / "audit.jsonl",
            heartbeat_timeout_s=HB,
            stale_after_s=STALE,
            **kw,
        )
        made.append(sup)
        return sup

    yield _make
    for sup in made:
        sup.close()


def fresh(sup: SafetySupervisor, clock: FakeClock, dt: float = 0.0) -> None:
    """Advance the clock and report a heartbeat and fresh data."""
    clock.advance(dt)
    sup.heartbeat()
    sup.data_age(0.01)


def armed(sup: SafetySupervisor, clock: FakeClock) -> SafetySupervisor:
    sup.arm("clinician:test", "test")
    fresh(sup, clock)
    return sup


# ---------------------------------------------------------------------------------------------- limits


def test_limits_from_table_and_units() -> None:
    lim = SafetyLimits.from_table(dict(LIMITS))
    assert lim.as_dict() == LIMITS
    assert SafetyLimits.from_table({**LIMITS, "max_current_ma": 30}).max_current_ma == 30.0
    assert isinstance(SafetyLimits.from_table({**LIMITS, "max_current_ma": 30}).max_current_ma, float)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"max_current_ma": -5.0}, r"'safety\.limits\.max_current_ma' must be a finite number > 0 mA, found -5\.0"),
        ({"max_current_ma": 0}, r"'safety\.limits\.max_current_ma' must be a finite number > 0 mA, found 0"),
        ({"max_pulse_width_us": "400"}, r"'safety\.limits\.max_pulse_width_us' must be a number in µs, found str"),
        ({"max_frequency_hz": True}, r"'safety\.limits\.max_frequency_hz' must be a number in Hz, found bool True"),
        ({"max_frequency_hz": math.inf}, r"'safety\.limits\.max_frequency_hz' must be a finite number > 0 Hz"),
        ({"max_current_ma": 5000.0}, r"'safety\.limits\.max_current_ma' must be <= 150 mA \(sanity ceiling"),
        ({"max_current_ma": None}, r"missing required key\(s\) \['max_current_ma'\]"),
        ({"max_currant_ma": 3.0}, r"table 'safety\.limits' has unknown key\(s\) \['max_currant_ma'\]"),
    ],
)
def test_limits_table_errors_name_key_rule_and_value(patch: dict, message: str) -> None:
    table = {**LIMITS, **patch}
    table = {k: v for k, v in table.items() if v is not None}
    with pytest.raises(LimitsError, match=message):
        SafetyLimits.from_table(table, where="rig.toml")


def test_limits_in_code_use_type_and_value_errors() -> None:
    with pytest.raises(TypeError, match=r"SafetyLimits\.max_current_ma must be a number in mA, found str"):
        limits(max_current_ma="40")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"SafetyLimits\.max_audio_db_spl must be <= 85 dB SPL"):
        limits(max_audio_db_spl=120.0)
    assert set(SANITY_CEILINGS) == set(SafetyLimits.keys())


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _limits_toml(**over: float) -> str:
    vals = {**LIMITS, **over}
    return "[safety.limits]\n" + "".join(f"{k} = {float(v)!r}\n" for k, v in vals.items())


def test_load_limits_from_toml_and_malformed_toml(tmp_path: Path) -> None:
    good = _write(tmp_path / "rig.toml", "[session]\nname = 'x'\n" + _limits_toml())
    assert load_limits(good).as_dict() == LIMITS
    broken = _write(tmp_path / "broken.toml", "[safety.limits]\nmax_current_ma = = 3\n")
    with pytest.raises(LimitsError, match=r"broken\.toml: not valid TOML \(.*line 2.*\); fix the syntax"):
        load_limits(broken)
    no_table = _write(tmp_path / "none.toml", "[safety]\nx = 1\n")
    with pytest.raises(LimitsError, match=r"none\.toml: table 'safety\.limits' is missing; add a \[safety\.limits\]"):
        load_limits(no_table)
    wrong = _write(tmp_path / "wrong.toml", _limits_toml(max_charge_per_phase_uc=-1))
    with pytest.raises(LimitsError, match=r"wrong\.toml: key 'safety\.limits\.max_charge_per_phase_uc' .* found -1"):
        load_limits(wrong)
    with pytest.raises(LimitsError, match=r"file not found"):
        load_limits(tmp_path / "absent.toml")


def test_profile_may_only_lower_limits(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "rig.toml", _limits_toml())
    lower = _write(
        tmp_path / "p1.toml",
        '[patient]\nid = "P001"\nnote = "left leg"\n[limits]\nmax_current_ma = 25.0\nmax_audio_db_spl = 60.0\n',
    )
    lim = load_limits(cfg, profile=lower)
    assert lim.max_current_ma == 25.0
    assert lim.max_audio_db_spl == 60.0  # equal is allowed (not a raise)
    assert lim.max_pulse_width_us == LIMITS["max_pulse_width_us"]  # untouched keys keep the config value
    raise_ = _write(tmp_path / "p2.toml", '[patient]\nid = "P002"\n[limits]\nmax_pulse_width_us = 450\n')
    with pytest.raises(ProfileError) as info:
        load_limits(cfg, profile=raise_)
    msg = str(info.value)
    assert "limits.max_pulse_width_us" in msg and "= 450 µs" in msg
    assert "'safety.limits.max_pulse_width_us' = 400 µs" in msg and "may only lower" in msg
    with pytest.raises(ProfileError, match=r"'patient\.id' must be a non-empty string"):
        load_profile(_write(tmp_path / "p3.toml", "[patient]\n[limits]\n"))
    with pytest.raises(ProfileError, match=r"table 'limits' has unknown key\(s\) \['max_volts'\]"):
        load_profile(_write(tmp_path / "p4.toml", '[patient]\nid = "P"\n[limits]\nmax_volts = 3\n'))
    with pytest.raises(ProfileError, match=r"key 'limits\.max_current_ma' must be a finite number > 0 mA"):
        limits().with_profile(PatientProfile.from_document({"patient": {"id": "P"}, "limits": {"max_current_ma": 0}}))
    assert issubclass(ProfileError, LimitsError) and issubclass(LimitsError, ValueError)


# ---------------------------------------------------------------------------------------------- every limit


@pytest.mark.parametrize(
    ("req", "reason", "text"),
    [
        (nmes(current=40.5), Reason.CURRENT_LIMIT, "40.5 mA exceeds max_current_ma = 40 mA"),
        (nmes(pw=401.0), Reason.PULSE_WIDTH_LIMIT, "401 µs exceeds max_pulse_width_us = 400 µs"),
        (nmes(f=60.0), Reason.FREQUENCY_LIMIT, "60 Hz exceeds max_frequency_hz = 50 Hz"),
        (nmes(current=35.0, pw=400.0), Reason.CHARGE_LIMIT, "charge per phase 14 µC (35 mA × 400 µs) exceeds"),
        (nmes(d=101.0), Reason.DOSE_LIMIT, "would exceed max_session_dose_s = 100 s"),
        (nmes(current=math.nan), Reason.INVALID_REQUEST, "current_ma must be a finite number >= 0, got nan"),
        (nmes(current=-1.0), Reason.INVALID_REQUEST, "current_ma must be a finite number >= 0"),
        (nmes(ch=-1), Reason.INVALID_REQUEST, "channel must be an integer >= 0"),
        (nmes(f=0.0), Reason.INVALID_REQUEST, "needs frequency_hz > 0 and duration_s > 0"),
        (AudioRequest(61.0, 15.0), Reason.AUDIO_LEVEL_LIMIT, "61 dB SPL exceeds max_audio_db_spl = 60 dB SPL"),
        (AudioRequest(50.0, 500.0), Reason.AUDIO_RATE_LIMIT, "longer than the minimum interval 400 ms"),
        (AudioRequest(50.0, math.inf), Reason.INVALID_REQUEST, "burst_ms must be a finite number > 0 ms"),
    ],
)
def test_every_limit_is_refused_with_its_reason_and_logged(make, clock, req, reason, text) -> None:
    sup = armed(make(), clock)
    out = RecordingOutput()
    sup.register_output(out)
    d = sup.request(req)
    assert not d.allowed and d.granted is None
    assert d.reason is reason
    assert text in d.message
    assert sup.state is SafetyState.ARMED  # a refusal is not a fault and stops nothing
    sup.close()
    line = next(r for r in read_log(sup.audit_log_path) if r["seq"] == d.seq)
    assert line["event"] == "decision" and line["allowed"] is False
    assert line["reason"] == reason.value and text in line["message"]


def test_limits_are_inclusive_and_charge_round_off_tolerated(make, clock) -> None:
    sup = armed(make(), clock)
    d = sup.request(nmes(current=40.0, pw=300.0, f=50.0, ch=0))  # every limit exactly (ramp: 40 mA at 25 Hz)
    assert not d.allowed or d.reason is Reason.RAMP_LIMITED  # 50 Hz: first step is 1000 mA/s / 50 Hz = 20 mA
    d = sup.request(nmes(current=40.0, pw=300.0, f=25.0, ch=1))
    assert d.allowed and d.reason is Reason.ALLOWED and d.granted == d.request
    pw = 12000 / 33.16  # 33.16 mA × 361.88... µs = 12.000000000000002 µC in floats
    d = sup.request(nmes(current=33.16, pw=pw, f=25.0, ch=2))
    assert d.allowed and d.reason is Reason.ALLOWED


def test_audio_rate_limit(make, clock) -> None:
    sup = armed(make(), clock)
    assert sup.request(AudioRequest(50.0, 15.0)).allowed
    fresh(sup, clock, 0.3)
    d = sup.request(AudioRequest(50.0, 15.0))
    assert d.reason is Reason.AUDIO_RATE_LIMIT and "0.3 s since the last burst" in d.message
    fresh(sup, clock, 0.1)
    assert sup.request(AudioRequest(50.0, 15.0)).allowed  # 0.4 s after the first = 1 / 2.5 Hz


# ---------------------------------------------------------------------------------------------- state machine


def test_disarmed_refuses_everything_and_arming_is_explicit(make, clock) -> None:
    sup = make()
    fresh(sup, clock)
    assert sup.state is SafetyState.DISARMED
    for req in (nmes(), nmes(current=0.0), AudioRequest(40.0, 15.0)):
        d = sup.request(req)
        assert not d.allowed and d.reason is Reason.NOT_ARMED
    assert sup.arm("clinician:a", "start therapy") is SafetyState.ARMED
    assert sup.arm("clinician:a", "again") is SafetyState.ARMED  # idempotent, logged
    d = sup.request(nmes())
    assert d.allowed and sup.state is SafetyState.STIMULATING
    assert sup.request(nmes(current=0.0)).allowed  # stop request
    assert sup.state is SafetyState.ARMED
    sup.request(nmes())
    assert sup.disarm("clinician:a", "done") is SafetyState.DISARMED
    assert sup.request(nmes()).reason is Reason.NOT_ARMED


def test_stimulation_ends_when_its_duration_runs_out(make, clock) -> None:
    sup = armed(make(), clock)
    assert sup.request(nmes(d=0.1)).allowed
    fresh(sup, clock, 0.1 + 0.03)  # inside one pulse period (40 ms) after the end: still one pulse train
    assert sup.poll() is SafetyState.STIMULATING
    fresh(sup, clock, 0.02)
    assert sup.poll() is SafetyState.ARMED


@pytest.mark.parametrize("start", ["disarmed", "armed", "stimulating", "fault"])
def test_estop_from_any_state_latches_until_cleared(make, clock, start: str) -> None:
    sup = make()
    out = RecordingOutput()
    sup.register_output(out)
    fresh(sup, clock)
    if start != "disarmed":
        sup.arm("clinician:a", "go")
    if start == "stimulating":
        assert sup.request(nmes()).allowed
    if start == "fault":
        sup.upstream_fault("source:eeg", "stream lost")
    n = len(out.calls)
    sup.estop("gui:button")
    assert sup.state is SafetyState.FAULT
    assert len(out.calls) == n + 1 and "e-stop from gui:button" in out.calls[-1]
    fault = sup.fault
    assert fault is not None and fault["kind"] == ("upstream_fault" if start == "fault" else "estop")
    assert sup.request(nmes()).reason is Reason.FAULT
    with pytest.raises(RuntimeError, match=r"cannot arm: a fault is latched .* clear_fault"):
        sup.arm("clinician:a", "retry")
    assert sup.disarm("clinician:a", "try") is SafetyState.FAULT  # disarm does not clear a fault
    fresh(sup, clock, 5.0)
    assert sup.poll() is SafetyState.FAULT  # time and fresh data do not clear it either
    assert sup.clear_fault("clinician:a", "checked electrodes") is SafetyState.DISARMED
    assert sup.fault is None
    assert sup.request(nmes()).reason is Reason.NOT_ARMED  # still needs an arm
    sup.arm("clinician:a", "resume")
    assert sup.request(nmes()).allowed


def test_clear_fault_only_from_fault_and_who_is_required(make, clock) -> None:
    sup = make()
    with pytest.raises(
        RuntimeError, match=r"clear_fault\(\) works only in state 'fault', the supervisor is 'disarmed'"
    ):
        sup.clear_fault("clinician:a", "nothing")
    with pytest.raises(ValueError, match=r"who must not be empty"):
        sup.arm("  ", "x")
    with pytest.raises(TypeError, match=r"who must be a string"):
        sup.arm(None, "x")  # type: ignore[arg-type]
    sup.estop(None)  # type: ignore[arg-type]  # an e-stop never raises, whatever it is given
    assert sup.state is SafetyState.FAULT
    with pytest.raises(TypeError, match=r"NmesRequest or AudioRequest"):
        sup.request({"current_ma": 3})  # type: ignore[arg-type]


def test_upstream_fault_zeroes_outputs_and_latches(make, clock) -> None:
    sup = armed(make(), clock)
    out = RecordingOutput()
    sup.register_output(out)
    sup.request(nmes())
    sup.upstream_fault("pipeline:rise", "ValueError('decoder exploded')")
    assert sup.state is SafetyState.FAULT and out.calls[-1].startswith("upstream fault in pipeline:rise")
    fresh(sup, clock, 0.05)
    assert sup.request(nmes()).reason is Reason.FAULT


def test_a_failing_output_does_not_stop_the_others(make, clock) -> None:
    sup = armed(make(), clock)
    a, bad, b = RecordingOutput("a"), RecordingOutput("bad"), RecordingOutput("b")
    for o in (a, bad, b):  # the broken one sits in the middle
        sup.register_output(o)  # registering puts each in its safe state; that still works
    bad.fail = True
    sup.disarm("clinician:a", "end")
    assert a.calls[-1].startswith("disarmed") and b.calls[-1].startswith("disarmed")
    assert sup.state is SafetyState.FAULT  # an output that cannot confirm its safe state latches a fault
    assert sup.errors and sup.errors[0]["where"] == "output:bad" and "serial port gone" in sup.errors[0]["error"]
    sup.close()
    assert a.calls[-1] == b.calls[-1] == "safety supervisor closed"
    events = [r["event"] for r in read_log(sup.audit_log_path)]
    assert "output_safe_state_failed" in events and "fault" in events


# ---------------------------------------------------------------------------------------------- ramp


def test_ramp_limits_current_increases_by_clamping(make, clock) -> None:
    sup = armed(make(limits(max_ramp_ma_per_s=10.0)), clock)
    d = sup.request(nmes(current=30.0, f=25.0, d=0.04))
    assert d.allowed and d.reason is Reason.RAMP_LIMITED
    assert isinstance(d.granted, NmesRequest) and d.granted.current_ma == pytest.approx(0.4)  # 10 mA/s / 25 Hz
    assert "clamped to 0.4 mA" in d.message
    levels = [d.granted.current_ma]
    for _ in range(4):  # a controller at 25 Hz climbs 0.4 mA per pulse
        fresh(sup, clock, 0.04)
        g = sup.request(nmes(current=30.0, f=25.0, d=0.04)).granted
        assert isinstance(g, NmesRequest)
        levels.append(g.current_ma)
    assert levels == pytest.approx([0.4, 0.8, 1.2, 1.6, 2.0])
    for _ in range(8):  # 200 Hz updates inside one pulse period cannot stack rises
        fresh(sup, clock, 0.005)
        g = sup.request(nmes(current=30.0, f=25.0, d=0.04)).granted
        assert isinstance(g, NmesRequest)
    assert g.current_ma == pytest.approx(2.0 + 10.0 * 0.04)
    fresh(sup, clock, 0.04)
    d = sup.request(nmes(current=1.0, f=25.0))  # decreases are never limited
    assert d.reason is Reason.ALLOWED and isinstance(d.granted, NmesRequest) and d.granted.current_ma == 1.0
    sup.request(nmes(current=0.0))  # stopped: the next start ramps from 0 again
    fresh(sup, clock, 0.04)
    g = sup.request(nmes(current=30.0, f=25.0, d=5.0)).granted  # a long block cannot jump to full current
    assert isinstance(g, NmesRequest) and g.current_ma == pytest.approx(0.4)
    fresh(sup, clock, 5.0 + 0.05)  # ran out more than one pulse period ago: off, ramps from 0
    g = sup.request(nmes(current=30.0, f=25.0)).granted
    assert isinstance(g, NmesRequest) and g.current_ma == pytest.approx(0.4)
    other = sup.request(nmes(current=30.0, ch=1)).granted  # channels ramp independently
    assert isinstance(other, NmesRequest) and other.current_ma == pytest.approx(0.4)


# ---------------------------------------------------------------------------------------------- dose


def test_dose_accounting_and_refusal(make, clock) -> None:
    sup = armed(make(limits(max_session_dose_s=1.0)), clock)
    assert sup.request(nmes(d=0.4)).allowed
    fresh(sup, clock, 0.5)
    assert sup.request(nmes(d=0.4)).allowed
    assert sup.dose_used_s == pytest.approx(0.8)
    fresh(sup, clock, 0.5)
    d = sup.request(nmes(d=0.4))
    assert not d.allowed and d.reason is Reason.DOSE_LIMIT and "0.800 s + 0.400 s would exceed" in d.message
    assert sup.request(nmes(d=0.2)).allowed  # exactly to the limit
    assert sup.dose_remaining_s == pytest.approx(0.0)
    fresh(sup, clock, 0.3)
    assert sup.request(nmes(d=0.001)).reason is Reason.DOSE_LIMIT
    assert sup.request(nmes(d=0.001, ch=1)).reason is Reason.DOSE_LIMIT  # summed over channels
    assert sup.request(nmes(current=0.0)).allowed  # stopping is always possible


def test_overlapping_updates_are_charged_once(make, clock) -> None:
    sup = armed(make(), clock)
    for _ in range(200):  # a controller updating every 5 ms with 40 ms requests for 1 s
        assert sup.request(nmes(d=0.04)).allowed
        fresh(sup, clock, 0.005)
    assert sup.dose_used_s == pytest.approx(200 * 0.005 + 0.035)


# ---------------------------------------------------------------------------------------------- watchdog


def test_heartbeat_lapse_zeroes_outputs_without_latching(make, clock) -> None:
    sup = armed(make(limits(max_ramp_ma_per_s=10.0)), clock)
    out = RecordingOutput()
    sup.register_output(out)
    n = len(out.calls)
    assert sup.request(nmes(d=1.0)).allowed
    clock.advance(HB - 0.001)
    sup.data_age(0.01)
    assert sup.poll() is SafetyState.STIMULATING and len(out.calls) == n
    clock.advance(0.002)  # HB + 1 ms after the last heartbeat
    assert sup.poll() is SafetyState.ARMED
    assert len(out.calls) == n + 1 and out.calls[-1] == "heartbeat lost or data stale"
    d = sup.request(nmes())
    assert d.reason is Reason.HEARTBEAT_LOST and "no heartbeat" in d.message
    assert sup.state is SafetyState.ARMED  # not a fault: no human needed
    fresh(sup, clock)
    d = sup.request(nmes(current=30.0))
    assert d.allowed and isinstance(d.granted, NmesRequest) and d.granted.current_ma == pytest.approx(0.4)


def test_stale_data_zeroes_outputs_and_refuses_until_fresh(make, clock) -> None:
    sup = armed(make(), clock)
    out = RecordingOutput()
    sup.register_output(out)
    assert sup.request(nmes()).allowed
    sup.data_age(0.8, stream="eeg")  # the pipeline reports old data: immediate
    assert out.calls[-1] == "stale data in 'eeg' (0.800 s old)"
    d = sup.request(nmes())
    assert d.reason is Reason.STALE_DATA and sup.state is SafetyState.ARMED
    assert sup.fault is None  # not latched
    sup.data_age(0.01, stream="eeg")  # fresh again (and the 'default' stream still is)
    assert sup.upstream_ok
    assert sup.request(nmes()).allowed and sup.state is SafetyState.STIMULATING
    lines = read_log(sup.audit_log_path)
    stale = [r for r in lines if r["event"] == "upstream_stale"]
    assert stale[-1]["reason"] == "stale_data" and stale[-1]["prev_state"] == "stimulating"
    assert stale[-1]["state"] == "armed" and "outputs zeroed" in stale[-1]["message"]


def test_data_freshness_expires_without_new_reports(make, clock) -> None:
    sup = armed(make(), clock)
    assert sup.request(nmes()).allowed
    for _ in range(6):  # heartbeats keep coming, data reports stop
        clock.advance(0.1)
        sup.heartbeat()
    assert sup.poll() is SafetyState.ARMED and not sup.upstream_ok
    assert sup.request(nmes()).reason is Reason.STALE_DATA
    sup.data_age(math.nan)  # unknown age counts as infinitely old
    assert not sup.upstream_ok
    sup.data_age(0.0)
    assert sup.upstream_ok and sup.request(nmes()).allowed


def test_no_heartbeat_or_data_yet_is_stale(make, clock) -> None:
    sup = make()
    sup.arm("clinician:a", "go")
    assert sup.request(nmes()).reason is Reason.HEARTBEAT_LOST
    sup.heartbeat()
    d = sup.request(nmes())
    assert d.reason is Reason.STALE_DATA and "or none yet" in d.message


def test_real_time_watchdog_zeroes_after_heartbeats_stop(tmp_path: Path) -> None:
    """Real clock, real watchdog thread: wait on the safe_state event with a deadline, no sleeps."""
    sup = SafetySupervisor(limits(), audit_log_path=tmp_path / "a.jsonl", heartbeat_timeout_s=HB, stale_after_s=5.0)
    try:
        out = RecordingOutput()
        sup.register_output(out)
        out.called.clear()
        sup.arm("clinician:a", "go")
        sup.data_age(0.0)
        before_last_hb = pylsl.local_clock()  # taken before the supervisor stamps the heartbeat
        sup.heartbeat()
        assert out.called.wait(timeout=HB + 2.0), "the watchdog did not zero the outputs"
        delay = out.times[-1] - before_last_hb
        assert delay > HB  # never before the deadline (lapse means age > timeout)
        assert out.calls[-1] == "heartbeat lost or data stale"
        assert sup.state is SafetyState.ARMED
        print(f"\nwatchdog: safe_state {1000 * delay:.1f} ms after the last heartbeat (timeout {1000 * HB:.0f} ms)")
    finally:
        sup.close()


# ---------------------------------------------------------------------------------------------- delivery & threads


def test_deliver_orders_a_concurrent_estop_after_the_delivery(make) -> None:
    sup = make(clock=pylsl.local_clock, zero_lock_timeout_s=5.0)
    sup.arm("clinician:a", "go")
    sup.heartbeat()
    sup.data_age(0.0)
    order: list[str] = []
    out = RecordingOutput()
    sup.register_output(out)
    out.safe_state = lambda reason: order.append("safe")  # type: ignore[method-assign]
    in_send, release = threading.Event(), threading.Event()

    def send(decision: Decision) -> None:
        in_send.set()
        release.wait(5.0)
        order.append("send")

    t = threading.Thread(target=sup.deliver, args=(nmes(), send))
    t.start()
    assert in_send.wait(5.0)
    stopper = threading.Thread(target=sup.estop, args=("api:client",))
    stopper.start()
    deadline = time.monotonic() + 5.0
    while sup.state is not SafetyState.FAULT and time.monotonic() < deadline:
        in_send.wait(0.001)  # condition poll with a deadline
    assert sup.state is SafetyState.FAULT
    release.set()
    t.join(5.0)
    stopper.join(5.0)
    assert order == ["send", "safe"]


def test_deliver_send_failure_faults_and_reraises(make, clock) -> None:
    sup = armed(make(), clock)

    def send(decision: Decision) -> None:
        raise OSError("write timeout")

    with pytest.raises(OSError, match="write timeout"):
        sup.deliver(nmes(), send)
    assert sup.state is SafetyState.FAULT and sup.fault is not None and sup.fault["kind"] == "delivery_failure"
    sent: list[Decision] = []
    d = sup.deliver(nmes(), sent.append)
    assert not d.allowed and not sent


def test_concurrent_requests_and_estop_nothing_allowed_after_estop(make) -> None:
    sup = make(clock=pylsl.local_clock)
    sup.arm("clinician:a", "go")
    stop = threading.Event()
    decisions: list[Decision] = []

    def worker(ch: int) -> None:
        while not stop.is_set():
            sup.heartbeat()
            sup.data_age(0.0)
            decisions.append(sup.request(nmes(ch=ch, d=0.001)))

    threads = [threading.Thread(target=worker, args=(ch,)) for ch in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5.0
    while sum(d.allowed for d in decisions) < 30 and time.monotonic() < deadline:
        stop.wait(0.001)
    sup.estop("gui:button")
    n_at_estop = len(decisions)
    while len(decisions) < n_at_estop + 30 and time.monotonic() < deadline:
        stop.wait(0.001)
    stop.set()
    for t in threads:
        t.join(5.0)
    sup.close()
    lines = read_log(sup.audit_log_path)
    estop_seq = next(r["seq"] for r in lines if r["event"] == "estop")
    after = [r for r in lines if r["event"] == "decision" and r["seq"] > estop_seq]
    assert after and not any(r["allowed"] for r in after)
    assert sum(d.allowed for d in decisions) >= 30


# ---------------------------------------------------------------------------------------------- audit log

REQUIRED = {"t", "utc", "seq", "instance", "event", "state", "prev_state", "who", "reason", "message", "values"}


def test_audit_log_is_valid_json_lines_append_only_across_instances(tmp_path: Path, clock) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    a = SafetySupervisor(limits(), audit_log_path=path, clock=clock, watchdog=False)
    a.arm("clinician:a", "first session")
    fresh(a, clock)
    a.request(nmes())
    a.request(nmes(current=99.0))
    a.estop("gui")
    a.close()
    first = path.read_bytes()
    b = SafetySupervisor(limits(), audit_log_path=path, clock=clock, watchdog=False)
    b.request(AudioRequest(40.0, 15.0))
    b.close()
    assert path.read_bytes().startswith(first)  # never truncated, never rewritten
    lines = read_log(path)
    assert {r["instance"] for r in lines} == {a.instance, b.instance}
    for r in lines:
        assert REQUIRED <= set(r)
        assert r["state"] in {s.value for s in SafetyState}
    decisions = [r for r in lines if r["event"] == "decision"]
    assert [r["allowed"] for r in decisions] == [True, False, False]
    for r in decisions:
        if not r["allowed"]:
            assert r["reason"] in {x.value for x in Reason} and r["reason"] not in ("allowed", "ramp_limited")
            assert r["message"]
    events = [r["event"] for r in lines]
    assert events[:3] == ["open", "arm", "upstream_fresh"] and "estop" in events and events.count("close") == 2
    assert next(r for r in lines if r["event"] == "estop")["who"] == "gui"
    assert a._audit.n_syncs >= 1


def test_audit_log_survives_a_torn_last_line_and_writes_non_finite_values(tmp_path: Path, clock) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"event":"torn')  # a previous writer died mid-line
    sup = SafetySupervisor(limits(), audit_log_path=path, clock=clock, watchdog=False)
    sup.arm("clinician:a", "go")
    fresh(sup, clock)
    d = sup.request(nmes(current=math.inf))
    sup.close()
    raw = path.read_text().splitlines()
    assert raw[0] == '{"event":"torn'
    lines = [json.loads(x) for x in raw[1:]]
    line = next(r for r in lines if r["seq"] == d.seq)
    assert line["values"]["current_ma"] == "inf" and line["reason"] == "invalid_request"


def test_unwritable_audit_log_fails_closed(clock) -> None:
    sup = SafetySupervisor(limits(), audit_log_path="/dev/full", clock=clock, watchdog=False)
    try:
        assert sup.state is SafetyState.FAULT and sup.fault is not None and sup.fault["kind"] == "audit_failure"
        with pytest.raises(RuntimeError, match="fault is latched"):
            sup.arm("clinician:a", "go")
        assert not sup.request(nmes()).allowed
    finally:
        sup.close()
    assert sup.request(nmes()).reason is Reason.CLOSED


def test_audit_sync_interval_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sync_interval_s must be in \(0, 1\] s, got 2"):
        AuditLog(tmp_path / "x.jsonl", sync_interval_s=2)


# ---------------------------------------------------------------------------------------------- property test

PROP_LIMITS = limits(max_ramp_ma_per_s=20.0, max_session_dose_s=1.5)
_SPECIAL = st.sampled_from([0.0, math.nan, math.inf, -1.0])


def _value(typical: st.SearchStrategy, wide: st.SearchStrategy, edges: list[float]) -> st.SearchStrategy:
    """5 % malformed, 10 % at or just past a limit, 35 % anywhere in a wide range, 50 % typical."""
    return st.integers(0, 19).flatmap(
        lambda k: _SPECIAL if k == 0 else st.sampled_from(edges) if k < 3 else wide if k < 10 else typical
    )


_KEEP_ALIVE = st.tuples(st.booleans(), st.floats(0.0, 0.12))  # (heartbeat + fresh data first?, clock step s)
_NMES = st.tuples(
    st.just("nmes"),
    st.integers(0, 2),
    _value(st.floats(1.0, 25.0), st.floats(0.0, 45.0), [40.0, 41.0, 0.0]),  # mA
    _value(st.floats(50.0, 300.0), st.floats(0.0, 450.0), [400.0, 401.0, 0.0]),  # µs
    _value(st.floats(10.0, 50.0), st.floats(0.0, 60.0), [50.0, 51.0]),  # Hz
    _value(st.floats(0.001, 0.3), st.floats(0.0, 2.0), [0.04, 1.5]),  # s
    _KEEP_ALIVE,
)
_AUDIO = st.tuples(
    st.just("audio"),
    _value(st.floats(20.0, 60.0), st.floats(-10.0, 90.0), [60.0, 61.0]),  # dB SPL
    _value(st.floats(5.0, 50.0), st.floats(0.0, 600.0), [400.0, 401.0]),  # ms
    _KEEP_ALIVE,
)
_CONTROL = st.sampled_from(["arm", "arm", "disarm", "estop", "clear", "clear", "fault"]).map(lambda k: (k,))
_TIME = st.one_of(
    st.tuples(st.just("tick"), st.floats(0.0, 0.6)),
    st.tuples(st.just("fresh"), st.floats(0.0, 0.15)),
    st.tuples(st.just("hb")),
    st.tuples(st.just("data"), st.one_of(st.floats(0.0, 1.0), _SPECIAL)),
)
# weights: 50 % NMES requests, 10 % audio, 15 % arm/disarm/e-stop/clear/fault, 25 % clock and upstream
OPS = st.integers(0, 19).flatmap(lambda k: _NMES if k < 10 else _AUDIO if k < 12 else _CONTROL if k < 15 else _TIME)


def _le(value: float, limit: float) -> bool:
    return value <= limit * (1 + REL_TOL) + 1e-12


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.lists(OPS, min_size=20, max_size=60))
def test_no_sequence_exceeds_a_limit_or_stimulates_unarmed(start_armed: bool, ops: list[tuple]) -> None:
    lim = PROP_LIMITS
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as tmp:
        sup = SafetySupervisor(
            lim, audit_log_path=Path(tmp) / "a.jsonl", clock=clock, watchdog=False, heartbeat_timeout_s=HB,
            stale_after_s=STALE,
        )  # fmt: skip
        out = RecordingOutput()
        sup.register_output(out)
        model = "disarmed"
        last_hb, newest = -math.inf, -math.inf
        prev_level: dict[int, float] = {}
        run_start: dict[int, float] = {}
        run_max_period: dict[int, float] = {}
        intervals: dict[int, list[tuple[float, float]]] = {}
        last_audio = -math.inf
        if start_armed:
            ops = [("arm",), ("fresh", 0.0), *ops]
        try:
            for op in ops:
                kind = op[0]
                if kind in ("nmes", "audio") and op[-1][0]:
                    fresh(sup, clock, op[-1][1])
                    last_hb, newest = clock.t, clock.t - 0.01
                n_safe = len(out.calls)
                if kind == "tick":
                    clock.advance(op[1])
                    sup.poll()
                elif kind == "fresh":
                    fresh(sup, clock, op[1])
                    last_hb, newest = clock.t, clock.t - 0.01
                elif kind == "hb":
                    sup.heartbeat()
                    last_hb = clock.t
                elif kind == "data":
                    sup.data_age(op[1])
                    newest = clock.t - op[1]
                elif kind == "arm":
                    if model == "fault":
                        with pytest.raises(RuntimeError):
                            sup.arm("clinician:h", "prop")
                    else:
                        sup.arm("clinician:h", "prop")
                        model = "armed"
                elif kind == "disarm":
                    sup.disarm("clinician:h", "prop")
                    assert len(out.calls) == n_safe + 1
                    model = "fault" if model == "fault" else "disarmed"
                elif kind in ("estop", "fault"):
                    sup.estop("prop") if kind == "estop" else sup.upstream_fault("source:x", "lost")
                    assert len(out.calls) == n_safe + 1
                    model = "fault"
                elif kind == "clear":
                    if model == "fault":
                        sup.clear_fault("clinician:h", "prop")
                        model = "disarmed"
                    else:
                        with pytest.raises(RuntimeError):
                            sup.clear_fault("clinician:h", "prop")
                if kind in ("disarm", "estop", "fault"):  # every channel is known to be at 0 mA now
                    run_start.clear()
                    run_max_period.clear()
                if kind == "nmes":
                    _, ch, cur, pw, f, dur, _ = op
                    d = sup.request(NmesRequest(ch, cur, pw, f, dur))
                    event(f"nmes {d.reason.value}")
                    if d.allowed:
                        g = d.granted
                        assert isinstance(g, NmesRequest)
                        assert model == "armed", "stimulation allowed while not armed"
                        assert clock.t - last_hb <= HB and clock.t - newest <= STALE, "allowed on stale upstream"
                        assert all(math.isfinite(v) and v >= 0 for v in (g.current_ma, g.pulse_width_us))
                        if g.is_stop:
                            prev_level[ch] = 0.0
                            run_start.pop(ch, None)
                            run_max_period.pop(ch, None)
                        else:
                            assert _le(g.current_ma, lim.max_current_ma)
                            assert _le(g.pulse_width_us, lim.max_pulse_width_us)
                            assert _le(g.frequency_hz, lim.max_frequency_hz)
                            assert _le(g.current_ma * g.pulse_width_us / 1000, lim.max_charge_per_phase_uc)
                            assert g.current_ma <= cur and g.duration_s == dur > 0
                            # refuse, never clamp: what was *asked* is within every hard limit too
                            assert _le(cur, lim.max_current_ma) and _le(pw * cur / 1000, lim.max_charge_per_phase_uc)
                            period = 1.0 / g.frequency_hz
                            # (a) one step rises at most ramp × pulse period above the previous grant
                            assert g.current_ma <= prev_level.get(ch, 0.0) + lim.max_ramp_ma_per_s * period + 1e-9
                            # (b) within a run the current stays under the ramp line from the run's start
                            start = run_start.setdefault(ch, clock.t)
                            run_max_period[ch] = max(run_max_period.get(ch, 0.0), period)
                            envelope = lim.max_ramp_ma_per_s * (clock.t - start + run_max_period[ch])
                            assert g.current_ma <= envelope + 1e-9
                            prev_level[ch] = g.current_ma
                            intervals.setdefault(ch, []).append((clock.t, clock.t + dur))
                    else:
                        assert d.granted is None and d.reason not in (Reason.ALLOWED, Reason.RAMP_LIMITED)
                elif kind == "audio":
                    d = sup.request(AudioRequest(op[1], op[2]))
                    event(f"audio {d.reason.value}")
                    if d.allowed:
                        assert model == "armed"
                        assert _le(op[1], lim.max_audio_db_spl) and 0 < op[2] <= 1000 / lim.max_audio_rate_hz + 1e-9
                        assert (clock.t - last_audio) * (1 + REL_TOL) >= 1 / lim.max_audio_rate_hz
                        last_audio = clock.t
                # the dose: the supervisor's count and, independently, the union of granted intervals
                assert _le(sup.dose_used_s, lim.max_session_dose_s)
                union = sum(_union_length(iv) for iv in intervals.values())
                assert union <= sup.dose_used_s + 1e-9
                assert (sup.state is SafetyState.FAULT) == (model == "fault")
                if model != "armed":
                    assert sup.state in (SafetyState.DISARMED, SafetyState.FAULT)
        finally:
            sup.close()
        lines = read_log(Path(tmp) / "a.jsonl")
        decisions = [r for r in lines if r["event"] == "decision"]
        assert len(decisions) == sup.n_allowed + sup.n_refused
        assert all(r["reason"] for r in decisions)
        assert [r["seq"] for r in lines] == sorted(r["seq"] for r in lines)


def _union_length(iv: list[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for a, b in sorted(iv):
        if b > end:
            total += b - max(a, end)
            end = b
    return total
