"""Tests of the physiological signal simulator (pure generator and real-time source)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pylsl import local_clock
from scipy import signal

from acquisition.ringbuffer import RingBuffer
from acquisition.simulator import (
    SCENARIOS,
    SignalGenerator,
    SimulatedSource,
    SimulatorSettings,
    Trial,
    simulate,
)
from acquisition.source import MarkerBuffer

EXPECTED_CHANNELS = {
    "ssvep": ["PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2"],
    "mi": ["FC3", "FCz", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "CP3", "CPz", "CP4"],
    "spindle": ["C3"],
    "emg": [f"E{i:02d}" for i in range(1, 65)],
    "knee": ["knee_angle"],
}


def _bandpass(x: np.ndarray, lo: float, hi: float, fs: float) -> np.ndarray:
    sos = signal.butter(4, (lo, hi), "bandpass", fs=fs, output="sos")
    return signal.sosfiltfilt(sos, x, axis=0)


def _rows(trials: list[Trial], label: str, skip: int = 0) -> np.ndarray:
    """Sample indices of every entry labelled ``label`` (first ``skip`` samples of each left out)."""
    return np.concatenate([np.arange(t.onset_sample + skip, t.end_sample) for t in trials if t.label == label])


# ---------------------------------------------------------------------- pure generator
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chunk_invariance(scenario: str) -> None:
    settings = SimulatorSettings(scenario=scenario, seed=3)
    whole = SignalGenerator(settings)
    n = round(16.0 * whole.srate)
    ref, ref_markers = whole.generate(n)
    assert ref_markers, "the reference run should contain markers"

    rng = np.random.default_rng(0)
    sizes = [300, 0, 700, 1, 255, 257, 0]  # across block boundaries (256 samples), empty chunks included
    while sum(sizes) < n:
        sizes.append(int(rng.integers(0, 400)))
    sizes[-1] -= sum(sizes) - n
    assert min(sizes) >= 0 and sum(sizes) == n
    chunked = SignalGenerator(settings)
    parts, markers = [], []
    for size in sizes:
        data, mk = chunked.generate(size)
        assert data.shape == (size, whole.info.n_channels)
        parts.append(data)
        markers.extend(mk)
    np.testing.assert_array_equal(np.concatenate(parts), ref)
    assert markers == ref_markers
    assert chunked.position == n


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_determinism_and_seed(scenario: str) -> None:
    a, ma, _ = simulate(SimulatorSettings(scenario=scenario, seed=7), 10.0)
    b, mb, _ = simulate(SimulatorSettings(scenario=scenario, seed=7), 10.0)
    c, _, _ = simulate(SimulatorSettings(scenario=scenario, seed=8), 10.0)
    np.testing.assert_array_equal(a, b)
    assert ma == mb
    assert not np.allclose(a, c)
    assert np.all(np.isfinite(a))


def test_schedule_differs_between_seeds() -> None:
    labels = [[t.label for t in SignalGenerator(SimulatorSettings(seed=s)).schedule(192.0)] for s in (1, 2)]
    assert labels[0] != labels[1]
    assert sorted(labels[0]) == sorted(labels[1])  # balanced: same counts, other order


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_stream_metadata(scenario: str) -> None:
    gen = SignalGenerator(SimulatorSettings(scenario=scenario))
    info = gen.info
    assert info.name == f"closedloop-sim-{scenario}"
    assert info.labels == EXPECTED_CHANNELS[scenario]
    assert info.srate == {"ssvep": 250.0, "mi": 250.0, "spindle": 250.0, "emg": 1000.0, "knee": 100.0}[scenario]
    assert info.type == {"emg": "EMG", "knee": "Kinematics"}.get(scenario, "EEG")
    unit = "degrees" if scenario == "knee" else "microvolts"
    assert {c.unit for c in info.channels} == {unit}
    assert info.channel_format == "float32"
    mi = gen.marker_info
    assert (mi.name, mi.type, mi.n_channels, mi.srate) == (f"closedloop-sim-{scenario}-markers", "Markers", 1, 0.0)
    assert mi.is_string
    data, _ = gen.generate(round(10 * info.srate))
    assert data.dtype == np.float32 and data.shape == (round(10 * info.srate), info.n_channels)
    empty, none = gen.generate(0)
    assert empty.shape == (0, info.n_channels) and none == []
    if scenario == "emg":
        assert gen.grid is not None
        assert len(gen.grid) == 8 and all(len(row) == 8 for row in gen.grid)
        assert gen.grid[0][:2] == ["E01", "E02"] and gen.grid[1][0] == "E09"
        assert [lbl for row in gen.grid for lbl in row] == info.labels
    else:
        assert gen.grid is None


def test_markers_match_schedule_and_label_at() -> None:
    gen = SignalGenerator(SimulatorSettings(scenario="mi", trial_s=3.0, rest_s=1.5, seed=1))
    _, markers = gen.generate(round(30 * gen.srate))
    trials = gen.schedule(30.0)
    assert [m[0] for m in markers] == [t.onset_sample for t in trials]
    docs = [json.loads(m[1]) for m in markers]
    assert docs[0] == {"event": "trial", "label": trials[0].label, "onset_sample": 0, "duration_s": 3.0}
    assert docs[1] == {"event": "rest", "label": "rest", "onset_sample": 750, "duration_s": 1.5}
    for (onset, _), doc, t in zip(markers, docs, trials, strict=True):
        assert doc["onset_sample"] == onset == t.onset_sample
        assert doc["duration_s"] == pytest.approx(t.n_samples / gen.srate)
        assert gen.label_at(onset) == t.label == doc["label"]
        assert gen.label_at(t.end_sample - 1) == t.label
        assert gen.trial_at(onset) == t
    assert {d["label"] for d in docs if d["event"] == "trial"} == {"left", "right", "rest"}
    assert gen.label_at(-1) is None
    # The ground truth is available ahead of the data.
    assert gen.label_at(round(1000 * gen.srate)) is not None


def test_ssvep_marker_format() -> None:
    gen = SignalGenerator(SimulatorSettings(scenario="ssvep"))
    _, markers = gen.generate(round(16 * gen.srate))
    docs = [json.loads(m) for _, m in markers]
    assert sorted(d["label"] for d in docs) == ["10.0Hz", "12.0Hz", "15.0Hz", "8.0Hz"]
    for d in docs:
        assert d["event"] == "trial" and d["duration_s"] == 4.0
        assert d["label"] == f"{d['frequency_hz']!r}Hz"


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="scenario"):
        SimulatorSettings(scenario="ecog")
    with pytest.raises(TypeError, match="srate"):
        SimulatorSettings(srate=True)
    with pytest.raises(ValueError, match="srate must be >= 200"):
        SimulatorSettings(scenario="emg", srate=150.0)
    with pytest.raises(ValueError, match="line_noise_hz"):
        SimulatorSettings(srate=100.0, line_noise_hz=50.0)
    SimulatorSettings(srate=100.0, line_noise_hz=0.0)  # the suggested fix works
    with pytest.raises(ValueError, match=r"mi_classes\[1\]"):
        SimulatorSettings(scenario="mi", mi_classes=("left", "tongue"))
    with pytest.raises(ValueError, match="spindle_duration_s"):
        SimulatorSettings(spindle_duration_s=(2.0, 0.5))
    with pytest.raises(ValueError, match="erd_depth"):
        SimulatorSettings(erd_depth=1.5)
    with pytest.raises(ValueError, match="ssvep_frequencies"):
        SimulatorSettings(ssvep_frequencies=())
    with pytest.raises(TypeError, match="settings"):
        SignalGenerator("ssvep")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_samples"):
        SignalGenerator().generate(-1)
    resolved = SimulatorSettings(scenario="emg").resolved()
    assert (resolved.srate, resolved.rest_s, resolved.noise_rms) == (1000.0, 2.0, 3.0)
    listed = SimulatorSettings(ssvep_frequencies=[9, 11])  # type: ignore[arg-type]
    assert listed.ssvep_frequencies == (9.0, 11.0)


# ---------------------------------------------------------------------- physiology
def test_background_is_one_over_f() -> None:
    for scenario in ("ssvep", "mi", "spindle"):
        settings = SimulatorSettings(scenario=scenario, ssvep_amplitude_uv=0.0, alpha_rms_uv=0.0, line_noise_uv=0.0)
        data, _, info = simulate(settings, 120.0)
        f, psd = signal.welch(data[:, 0], info.srate, nperseg=round(2 * info.srate))
        sel = (f >= 2) & (f <= 40) & ~((f > 4) & (f < 25))  # leave out delta/mu/beta/spindle bands
        slope = np.polyfit(np.log10(f[sel]), np.log10(psd[sel]), 1)[0]
        assert -2.5 < slope < -0.5, (scenario, slope)
        rms = float(np.sqrt(np.mean(data[:, 0].astype(np.float64) ** 2)))
        assert 8.0 < rms < 40.0, (scenario, rms)


def test_ssvep_peaks_at_stimulus_frequency_and_harmonic() -> None:
    gen = SignalGenerator(SimulatorSettings(scenario="ssvep", seed=2))
    seconds = 96.0
    data, _ = gen.generate(round(seconds * gen.srate))
    oz = data[:, gen.info.labels.index("Oz")].astype(np.float64)
    trials = [t for t in gen.schedule(seconds) if t.end_sample <= data.shape[0]]
    for freq in gen.settings.ssvep_frequencies:
        segs = [oz[t.onset_sample + 50 : t.end_sample] for t in trials if t.params["frequency_hz"] == freq]
        assert len(segs) >= 4
        f, psd = signal.welch(np.stack(segs), gen.srate, nperseg=segs[0].shape[0], axis=-1)
        psd = psd.mean(axis=0)
        for h in (1, 2):
            peak = psd[np.argmin(np.abs(f - h * freq))]
            dist = np.abs(f - h * freq)
            neighbours = np.median(psd[(dist >= 0.75) & (dist <= 2.0)])
            assert peak > 3.0 * neighbours, (freq, h, peak / neighbours)


def test_ssvep_cca_above_chance_but_not_trivial() -> None:
    gen = SignalGenerator(SimulatorSettings(scenario="ssvep", seed=4))
    seconds = 200.0
    data, _ = gen.generate(round(seconds * gen.srate))
    fs, n = gen.srate, round(gen.srate)
    sos = signal.butter(4, (6.0, 60.0), "bandpass", fs=fs, output="sos")
    t = np.arange(n) / fs
    refs = {
        f: np.column_stack([fn(2 * np.pi * h * f * t) for h in (1, 2, 3) for fn in (np.sin, np.cos)])
        for f in gen.settings.ssvep_frequencies
    }

    def cca(x: np.ndarray, y: np.ndarray) -> float:
        qx, _ = np.linalg.qr(x - x.mean(0))
        qy, _ = np.linalg.qr(y - y.mean(0))
        return float(np.linalg.svd(qx.T @ qy, compute_uv=False)[0])

    hits = []
    for trial in gen.schedule(seconds - 4.0):
        seg = signal.sosfiltfilt(sos, data[trial.onset_sample + 35 : trial.onset_sample + 35 + n], axis=0)
        guess = max(refs, key=lambda f: cca(seg, refs[f]))
        hits.append(guess == trial.params["frequency_hz"])
    accuracy = float(np.mean(hits))
    assert 0.45 < accuracy < 0.97, accuracy  # chance is 0.25


def test_mi_erd_lateralised() -> None:
    gen = SignalGenerator(SimulatorSettings(scenario="mi", seed=5))
    seconds = 120.0
    data, _ = gen.generate(round(seconds * gen.srate))
    mu = _bandpass(data.astype(np.float64), 9.5, 12.5, gen.srate) ** 2
    trials = [t for t in gen.schedule(seconds) if t.end_sample <= data.shape[0]]
    skip = round(1.0 * gen.srate)  # ERD fully developed 1 s after the cue
    power = {lbl: mu[_rows(trials, lbl, skip)].mean(axis=0) for lbl in ("left", "right", "rest")}
    c3, c4 = gen.info.labels.index("C3"), gen.info.labels.index("C4")
    assert power["left"][c4] < 0.6 * power["right"][c4]
    assert power["right"][c3] < 0.6 * power["left"][c3]
    assert power["left"][c4] < 0.6 * power["rest"][c4]
    assert power["right"][c3] < 0.6 * power["rest"][c3]
    # No ERD on the ipsilateral side.
    assert power["left"][c3] == pytest.approx(power["rest"][c3], rel=0.35)


def test_spindles() -> None:
    gen = SignalGenerator(SimulatorSettings(scenario="spindle", seed=6))
    seconds = 180.0
    data, markers = gen.generate(round(seconds * gen.srate))
    docs = [json.loads(m) for _, m in markers]
    assert len(docs) >= 8
    onsets = np.array([d["onset_sample"] for d in docs]) / gen.srate
    assert np.all(np.diff(onsets) >= 5.0 - 1e-9) and np.all(np.diff(onsets) <= 20.0 + 1e-9)
    for d in docs:
        assert d["event"] == d["label"] == "spindle"
        assert 0.5 <= d["duration_s"] <= 2.0
        assert 11.0 <= d["frequency_hz"] <= 16.0 and 15.0 <= d["amplitude_uv"] <= 40.0
    sigma = _bandpass(data[:, 0].astype(np.float64), 11.0, 16.0, gen.srate) ** 2
    inside = np.zeros(sigma.shape[0], bool)
    outside = np.ones(sigma.shape[0], bool)
    for t in gen.schedule(seconds):
        quarter = t.n_samples // 4
        inside[t.onset_sample + quarter : t.end_sample - quarter] = True  # the spindle's middle half
        outside[max(0, t.onset_sample - 250) : t.end_sample + 250] = False
        assert gen.label_at(t.onset_sample + 1) == "spindle"
        assert gen.label_at(t.end_sample) is None
    assert sigma[inside].mean() > 5.0 * sigma[outside].mean()


def test_emg_gestures() -> None:
    gen = SignalGenerator(SimulatorSettings(scenario="emg", seed=7, trial_s=3.0))
    seconds = 75.0
    data, _ = gen.generate(round(seconds * gen.srate))
    trials = [t for t in gen.schedule(seconds) if t.end_sample <= data.shape[0]]
    skip = round(0.5 * gen.srate)  # ramps and the previous gesture's tail
    x = data.astype(np.float64)
    rest_rms = np.sqrt((x[_rows(trials, "rest", skip)] ** 2).mean(axis=0))
    assert np.all(rest_rms < 10.0)
    maps = {}
    for gesture in gen.settings.emg_gestures[1:]:
        rms = np.sqrt((x[_rows(trials, gesture, skip)] ** 2).mean(axis=0))
        active = gen.activation_map(gesture) > 0.5
        assert active.any()
        assert np.all(rms[active] > 3.0 * rest_rms[active]), gesture
        assert 20.0 < rms.max() < 500.0
        maps[gesture] = rms / rms.max()
    names = list(maps)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.corrcoef(maps[a], maps[b])[0, 1] < 0.9, (a, b)
    with pytest.raises(RuntimeError, match="emg"):
        SignalGenerator().activation_map("fist")


def test_emg_band_limited() -> None:
    data, _, info = simulate(SimulatorSettings(scenario="emg", line_noise_uv=0.0), 20.0)
    f, psd = signal.welch(data.astype(np.float64), info.srate, nperseg=1000, axis=0)
    psd = psd.mean(axis=1)
    in_band = psd[(f >= 50) & (f <= 400)].mean()
    assert psd[(f >= 1) & (f <= 5)].mean() < 0.1 * in_band
    assert psd[f >= 490].mean() < 0.1 * in_band


def test_knee_swings() -> None:
    gen = SignalGenerator(SimulatorSettings(scenario="knee", seed=9))
    seconds = 60.0
    data, markers = gen.generate(round(seconds * gen.srate))
    angle = data[:, 0]
    assert -45.0 < angle.min() and angle.max() < 100.0
    swings = [json.loads(m) for _, m in markers if json.loads(m)["event"] == "swing"]
    assert len(swings) == 10  # 4 s swing + 2 s rest
    for d in swings:
        assert d["label"] == "swing" and 30.0 <= d["target_deg"] <= 60.0
        seg = angle[d["onset_sample"] : d["onset_sample"] + 200]
        assert abs(float(angle[d["onset_sample"]])) < 10.0  # starts near rest
        assert seg.max() > 0.7 * d["target_deg"]  # reaches the target
        assert gen.label_at(d["onset_sample"]) == "swing"


# ---------------------------------------------------------------------- real-time source
def _wait_for_samples(buffer: RingBuffer, n: int, timeout: float) -> bool:
    """Block on the ring buffer's condition until it holds ``n`` samples or ``timeout`` s pass."""
    deadline = local_clock() + timeout
    while buffer.counter < n:
        remaining = deadline - local_clock()
        if remaining <= 0:
            return False
        buffer.wait_for(buffer.counter, remaining)
    return True


def test_simulated_source_live() -> None:
    errors: list[BaseException] = []
    src = SimulatedSource(
        "sim-test", SimulatorSettings(scenario="ssvep", seed=1), on_error=lambda s, e, tb: errors.append(e)
    )
    with pytest.raises(RuntimeError, match="open"):
        _ = src.generator
    src.open()
    assert set(src.streams) == {"closedloop-sim-ssvep", "closedloop-sim-ssvep-markers"}
    sig, mrk = src.signal_stream, src.marker_stream
    assert isinstance(sig.buffer, RingBuffer) and isinstance(mrk.buffer, MarkerBuffer)
    srate = src.generator.srate
    src.start()
    try:
        assert _wait_for_samples(sig.buffer, math.ceil(0.5 * srate), timeout=5.0), "no data within 5 s"
        assert sig.stats.connected and mrk.stats.connected
        res = sig.buffer.read_since(0)
        now = local_clock()
        assert res.lost == 0 and len(res) >= 0.5 * srate
        np.testing.assert_allclose(np.diff(res.timestamps), 1.0 / srate, rtol=0, atol=1e-9)
        assert res.timestamps[0] == src.t0
        assert 0.0 <= now - res.timestamps[-1] < 0.5  # fresh; generous so a busy CI machine cannot flake it
        assert res.timestamps[-1] <= now
        # The samples are the generator's samples.
        ref, _ = SignalGenerator(SimulatorSettings(scenario="ssvep", seed=1)).generate(len(res))
        np.testing.assert_array_equal(res.data, ref)
        # The first trial starts at sample 0: its marker is stamped with t0.
        assert mrk.buffer.wait_for(0, timeout=5.0)
        values, ts, _ = mrk.buffer.read_since(0)
        doc = json.loads(values[0][0])
        assert doc["onset_sample"] == 0 and ts[0] == src.t0
        assert src.label_at_time(src.t0 + 0.5) == doc["label"]
        assert src.label_at_time(src.t0 - 1.0) is None
        assert sig.buffer.n_gaps == 0
    finally:
        t_stop = local_clock()
        src.stop()
    assert not src.running
    assert local_clock() - t_stop < 1.0
    assert not sig.stats.connected
    assert errors == [] and src.error is None

    # Restart: the sample sequence continues, re-anchored at the restart time.
    n_before = sig.buffer.counter
    position = src.generator.position
    src.start()
    try:
        assert _wait_for_samples(sig.buffer, n_before + 10, timeout=5.0)
        res = sig.buffer.read_since(n_before)
        assert src.t0 + position / srate == pytest.approx(res.timestamps[0], abs=1e-9)
        np.testing.assert_allclose(np.diff(res.timestamps), 1.0 / srate, rtol=0, atol=1e-9)
    finally:
        src.stop()
    assert not src.running
    src.close()


def test_simulated_source_validation() -> None:
    with pytest.raises(ValueError, match="chunk_s"):
        SimulatedSource(chunk_s=0.0)
    with pytest.raises(TypeError, match="settings"):
        SimulatedSource(settings={"scenario": "mi"})  # type: ignore[arg-type]
    src = SimulatedSource()
    assert math.isnan(src.t0) and src.label_at_time(0.0) is None
