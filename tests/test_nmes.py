"""NMES knee control: knee model physics, RISE/PID controllers, NARX ONNX, GA, simulated stimulator."""

from __future__ import annotations

import dataclasses
import time
import uuid

import numpy as np
import pylsl
import pytest

from decoders.card import read_card
from stimulation.nmes.closed_loop import run_closed_loop
from stimulation.nmes.ga import GAIN_BOUNDS, GaSettings, rise_cost_on_narx, tune_rise_gains
from stimulation.nmes.knee_model import NOMINAL_KNEE, KneeModel, draw_subjects, recruitment
from stimulation.nmes.knee_stream import KneeAngleStream
from stimulation.nmes.pid import BASELINE_PID, PidController, PidGains
from stimulation.nmes.references import sine_reference, step_reference
from stimulation.nmes.rise import (
    EMPIRICAL_GAINS,
    RiseBank,
    RiseController,
    RiseGains,
    check_stability_conditions,
    stability_violations,
)
from stimulation.nmes.sysid import NarxConfig, NarxOnnx, export_narx_onnx, log_sessions, train_narx
from stimulation.sim_stimulator import SimulatedNackError, SimulatedStimulator
from stimulation.stimulator import Stimulator, StimulatorLinkError

DT = 0.005


# ------------------------------------------------------------------ knee model
def test_gravity_pulls_the_shank_down_to_rest() -> None:
    m = KneeModel(NOMINAL_KNEE, noise=False, fatigue=False, theta0_deg=60.0)
    assert m.gravity_torque_nm(60.0) < 0 < m.gravity_torque_nm(-20.0)
    angles = [m.advance(0.05) for _ in range(400)]  # 20 s, no stimulation: a damped pendulum test
    assert angles[5] < 60.0  # it starts falling at once
    assert min(angles) < m.rest_angle_deg()  # overshoots like a leg-drop test
    assert abs(float(np.mean(angles[-40:])) - m.rest_angle_deg()) < 1.0
    assert 0.0 < m.rest_angle_deg() < 20.0


def test_stimulation_extends_the_knee_and_more_pulse_width_extends_more() -> None:
    finals = []
    for pw in (0.0, 150.0, 220.0, 300.0):
        m = KneeModel(NOMINAL_KNEE, noise=False, fatigue=False)
        finals.append(m.advance(6.0, pw))
    assert finals == sorted(finals)
    assert finals[2] - finals[0] > 20.0
    assert recruitment(0.0, NOMINAL_KNEE) == 0.0 and recruitment(1000.0, NOMINAL_KNEE) == 1.0


def test_transport_delay_holds_back_the_response() -> None:
    m = KneeModel(NOMINAL_KNEE, noise=False, fatigue=False)
    m.advance(NOMINAL_KNEE.delay_s * 0.8, 300.0)
    assert m.activation == 0.0
    m.advance(NOMINAL_KNEE.delay_s * 0.5)
    assert m.activation > 0.0


def test_fatigue_lowers_the_torque() -> None:
    on = KneeModel(NOMINAL_KNEE, noise=False, fatigue=True)
    off = KneeModel(NOMINAL_KNEE, noise=False, fatigue=False)
    on.advance(60.0, 230.0)
    off.advance(60.0, 230.0)
    assert on.fitness < 0.8 and off.fitness == 1.0
    assert on.angle_deg < off.angle_deg - 5.0
    assert on.stimulation_torque_nm(0.5, 30.0, on.fitness) < off.stimulation_torque_nm(0.5, 30.0, 1.0)


def test_subjects_are_seeded_and_varied() -> None:
    a = draw_subjects(4, 11)
    assert a == draw_subjects(4, 11)
    assert a != draw_subjects(4, 12)
    torques = [s.max_torque_nm for s in a]
    assert max(torques) / min(torques) > 1.1
    assert draw_subjects(2, 1, spread=0.0) == [NOMINAL_KNEE, NOMINAL_KNEE]
    with pytest.raises(ValueError, match="pw_saturation_us"):
        dataclasses.replace(NOMINAL_KNEE, pw_saturation_us=50.0)


def test_model_noise_is_seeded() -> None:
    a = KneeModel(NOMINAL_KNEE, seed=5)
    b = KneeModel(NOMINAL_KNEE, seed=5)
    ra = [a.measure() for _ in range(10)]
    rb = [b.measure() for _ in range(10)]
    assert ra == rb and np.std(ra) > 0.05
    with pytest.raises(ValueError, match="pulse_width_us"):
        a.command(-1.0)


# ------------------------------------------------------------------ controllers
def test_rise_output_is_saturated_and_held_between_pulses() -> None:
    c = RiseController(EMPIRICAL_GAINS["empirical_a"], DT)
    outs = [c.step(80.0, 0.0) for _ in range(400)]
    assert max(outs) == 400.0 and min(outs) >= 0.0
    assert c.unsaturated_us >= 400.0  # the integral winds only up to the limit (anti-windup)
    c.reset()
    down = [c.step(0.0, 60.0) for _ in range(100)]
    assert max(down) == 0.0 and c.unsaturated_us <= 0.0
    c.reset()
    seq = [c.step(30.0 + 5 * np.sin(k / 3), 20.0) for k in range(64)]
    for k in range(64):  # 25 Hz at 5 ms: a new value only every 8th step
        if k % 8:
            assert seq[k] == seq[k - 1]


def test_rise_stability_conditions_are_checked() -> None:
    for g in EMPIRICAL_GAINS.values():
        assert stability_violations(g) == []
    bad = RiseGains(ks=0.0, alpha1=0.4, alpha2=0.9, beta=-1.0)
    msgs = stability_violations(bad)
    assert len(msgs) == 4 and any("alpha1" in m for m in msgs)
    with pytest.raises(ValueError, match="alpha2 must be > 1"):
        RiseController(RiseGains(ks=5, alpha1=1, alpha2=0.5, beta=1), DT)
    with pytest.raises(ValueError, match="beta must be >"):
        check_stability_conditions(
            RiseGains(ks=5, alpha1=1, alpha2=2, beta=3), disturbance_bound=2.0, disturbance_rate_bound=4.0
        )
    check_stability_conditions(
        RiseGains(ks=5, alpha1=1, alpha2=2, beta=5), disturbance_bound=2.0, disturbance_rate_bound=4.0
    )
    for lo_hi, floor in zip(GAIN_BOUNDS, (0.0, 0.5, 1.0, 0.0), strict=True):
        assert lo_hi[0] > floor


def test_rise_bank_matches_single_controllers() -> None:
    gains = [EMPIRICAL_GAINS["empirical_a"], EMPIRICAL_GAINS["empirical_b"], RiseGains(30, 3, 5, 50)]
    bank = RiseBank(np.array([g.as_array() for g in gains]), dt_s=DT)
    singles = [RiseController(g, DT) for g in gains]
    rng = np.random.default_rng(0)
    for k in range(300):
        ref, theta = 25 + 15 * np.sin(k * DT), 20 + rng.normal(0, 3)
        out = bank.step(ref, theta)
        assert np.array_equal(out, [c.step(ref, theta) for c in singles])


@pytest.mark.parametrize("make", [lambda: RiseController(EMPIRICAL_GAINS["empirical_a"], DT), PidController])
def test_controllers_track_a_step_on_the_nominal_subject(make) -> None:
    t = np.arange(0.0, 10.0, DT)
    res = run_closed_loop(make(), KneeModel(NOMINAL_KNEE, seed=1, fatigue=False), step_reference(t), dt_s=DT)
    late = res.t_s >= 6.0
    assert abs(float(np.mean(res.true_deg[late])) - 40.0) < 2.0
    assert res.rmse_deg(skip_s=6.0) < 3.0
    assert res.pulse_width_us.max() <= 400.0 and res.pulse_width_us.min() >= 0.0


def test_pid_gains_and_saturation() -> None:
    c = PidController(BASELINE_PID, DT)
    outs = [c.step(90.0, 0.0) for _ in range(200)]
    assert max(outs) == 400.0 and c.unsaturated_us == pytest.approx(400.0)  # integral stops at the limit
    c.reset()
    assert max(c.step(0.0, 50.0) for _ in range(50)) == 0.0
    with pytest.raises(ValueError, match=r"PidGains\.kp"):
        PidGains(-1.0, 0.0, 0.0)


# ------------------------------------------------------------------ NARX and GA
@pytest.fixture(scope="module")
def tiny_narx(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    log = log_sessions(NOMINAL_KNEE, seed=3, duration_s=60.0)
    cfg = NarxConfig(n_lags=3, hidden=(8,), one_step_epochs=3, rollout_iters=20, rollout_len=10, batch=64)
    mlp = train_narx(log, cfg, seed=0)
    path = export_narx_onnx(mlp, tmp_path_factory.mktemp("narx") / "narx.onnx")
    return mlp, path, log


def test_narx_log_is_at_the_pulse_rate(tiny_narx) -> None:
    _, _, log = tiny_narx
    assert log.theta_deg.size > 60.0 / 0.04 * 0.9
    assert log.pulse_width_us.max() <= 400.0 and log.pulse_width_us.min() >= 0.0
    assert len(np.unique(log.segment)) >= 2


def test_narx_onnx_matches_torch(tiny_narx) -> None:
    mlp, path, _ = tiny_narx
    card = read_card(path)
    assert card.channel_labels == ("knee_angle", "pulse_width") and card.classes == ("knee_angle",)
    onnx_model = NarxOnnx(path)
    assert onnx_model.n_lags == 3
    rng = np.random.default_rng(1)
    windows = np.stack([rng.uniform(0, 70, (64, 3)), rng.uniform(0, 400, (64, 3))], axis=-1).astype(np.float32)
    diff = np.abs(onnx_model.predict(windows) - mlp.predict(windows.astype(np.float64)))
    assert diff.max() < 1e-4
    with pytest.raises(ValueError, match="shape"):
        onnx_model.predict(windows[:, :2])


def test_ga_improves_on_its_initial_population_within_the_stability_region(tiny_narx) -> None:
    _, path, _ = tiny_narx
    narx = NarxOnnx(path)
    settings = GaSettings(population=8, generations=4)
    res = tune_rise_gains(narx, theta0_deg=9.0, settings=settings, seed=2, duration_s=4.0)
    again = tune_rise_gains(narx, theta0_deg=9.0, settings=settings, seed=2, duration_s=4.0)
    assert res.best == again.best  # seeded
    assert res.best_cost < res.initial_best_cost
    assert all(b <= a for a, b in zip(res.history, res.history[1:], strict=False))  # elitism
    assert stability_violations(res.best) == []
    assert res.evaluations == 8 * 5
    cost = rise_cost_on_narx(narx, res.best.as_array()[None], theta0_deg=9.0, duration_s=4.0, seed=2)
    assert cost[0] == pytest.approx(res.best_cost)


# ------------------------------------------------------------------ simulated stimulator
def test_simulated_stimulator_moves_the_knee_and_fails_closed() -> None:
    stim = SimulatedStimulator(NOMINAL_KNEE, fatigue=False, noise=False, watchdog_s=0.09)
    assert isinstance(stim, Stimulator)
    rest = stim.advance(0.5)
    with pytest.raises(SimulatedNackError, match="arm"):
        stim.stim_on(0)
    stim.arm()
    stim.set_channel(0, current_ma=30.0, pulse_width_us=260.0, frequency_hz=25.0)
    stim.stim_on(0)
    for _ in range(60):  # 3 s with heartbeats every 50 ms
        stim.heartbeat()
        stim.advance(0.05)
    st = stim.stimulator_status()
    assert st.state == "stimulating" and st.channels[0].current_ma == 30.0 and st.outputs == 1
    lifted = stim.model.angle_deg
    assert lifted > rest + 20.0
    stim.advance(0.2)  # no heartbeat: the watchdog trips
    st = stim.stimulator_status()
    assert st.state == "fault" and st.fault == "watchdog" and st.outputs == 0
    assert stim.delivered_pulse_width_us == 0.0
    stim.advance(3.0)
    assert stim.model.angle_deg < lifted - 15.0  # the leg falls back
    with pytest.raises(SimulatedNackError, match="fault"):
        stim.arm()
    assert stim.clear_fault() == "disarmed"
    with pytest.raises(SimulatedNackError, match="limit"):
        stim.set_channel(0, current_ma=30.0, pulse_width_us=900.0, frequency_hz=25.0)
    stim.arm()
    stim.estop()
    assert stim.stimulator_status().fault == "estop"
    stim.close()
    with pytest.raises(StimulatorLinkError):
        stim.arm()


def test_simulated_stimulator_closes_the_loop_with_rise() -> None:
    stim = SimulatedStimulator(NOMINAL_KNEE, fatigue=False, noise=True, watchdog_s=None)
    stim.arm()
    stim.set_channel(0, current_ma=30.0, pulse_width_us=0.0, frequency_hz=25.0)
    stim.stim_on(0)
    ctrl = RiseController(EMPIRICAL_GAINS["empirical_a"], DT)
    t = np.arange(0.0, 8.0, DT)
    ref = sine_reference(t)
    err = []
    for k in range(t.size):
        stim.set_pulse_width(ctrl.step(float(ref[k]), stim.read_angle_deg()))
        stim.advance(DT)
        err.append(ref[k] - stim.model.angle_deg)
    assert float(np.sqrt(np.mean(np.square(err[400:])))) < 8.0


def test_knee_angle_stream_publishes_on_lsl() -> None:
    name = f"test_knee_{uuid.uuid4().hex[:8]}"
    stim = SimulatedStimulator(NOMINAL_KNEE, watchdog_s=None)
    stream = KneeAngleStream(stim, name=name, rate_hz=200.0)
    try:
        stream.start()
        found = pylsl.resolve_byprop("name", name, timeout=5.0)
        assert found, "stream not found"
        inlet = pylsl.StreamInlet(found[0])
        inlet.open_stream(timeout=5.0)
        got: list[float] = []
        deadline = time.monotonic() + 10.0
        while len(got) < 20 and time.monotonic() < deadline:
            samples, _ = inlet.pull_chunk(timeout=0.5)
            got += [s[0] for s in samples]
        assert len(got) >= 20
        assert all(-10.0 < a < 30.0 for a in got)  # resting leg, sensor noise
        assert inlet.info().nominal_srate() == 200.0
        inlet.close_stream()
    finally:
        stream.close()
        stim.close()
    assert stream.samples_pushed >= 20


def test_simulated_stimulator_realtime_watchdog_uses_the_wall_clock() -> None:
    from conftest import wait_until

    stim = SimulatedStimulator(NOMINAL_KNEE, watchdog_s=0.3)  # generous: CI shares the CPU
    try:
        stim.start_realtime(200.0)
        stim.start_heartbeat(20.0)
        stim.arm()
        stim.set_channel(0, current_ma=20.0, pulse_width_us=200.0, frequency_hz=25.0)
        stim.stim_on(0)
        assert wait_until(lambda: stim.time_s > 0.5, 10.0)
        assert stim.stimulator_status().state == "stimulating"
        stim.stop_heartbeat()  # the host goes quiet: the device turns outputs off by itself
        assert wait_until(lambda: stim.stimulator_status().state == "fault", 5.0)
        st = stim.stimulator_status()
        assert st.fault == "watchdog" and st.outputs == 0 and stim.delivered_pulse_width_us == 0.0
    finally:
        stim.close()
    assert stim.closed


def test_session_log_from_a_recording_splits_at_gaps() -> None:
    from stimulation.nmes.sysid import SessionLog

    t_angle = np.arange(0.0, 10.0, 0.005)
    angle = 10.0 + t_angle  # 1 degree per second
    t_pulse = np.concatenate([np.arange(1.0, 3.0, 0.04), np.arange(5.0, 6.0, 0.04)])
    log = SessionLog.from_recording(t_angle, angle, t_pulse, np.full(t_pulse.size, 150.0))
    assert log.theta_deg.size == t_pulse.size
    assert np.allclose(log.theta_deg, 10.0 + t_pulse)
    assert list(np.unique(log.segment)) == [0, 1]
    assert log.windows(10).size == (50 - 9) + (25 - 9)
    with pytest.raises(ValueError, match="strictly increasing"):
        SessionLog.from_recording(t_angle[::-1], angle, t_pulse, np.full(t_pulse.size, 150.0))
