"""Auditory stimulation: pink-noise bursts, sinks, the no-device fallback, supervisor gating, LSL markers."""

from __future__ import annotations

import collections
import itertools
import json
import logging
import math
import sys
import threading
import time
import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pylsl
import pytest
from conftest import unique, wait_until
from scipy.signal import welch

from app.outputs import AudioOutput
from app.pipeline import Command
from stimulation.audio import (
    AudioStimulator,
    BurstRecord,
    DeviceSink,
    FileSink,
    NullSink,
    burst_samples,
    open_sink,
    pink_noise,
)
from stimulation.limits import SafetyLimits
from stimulation.safety import SafetySupervisor

LIMITS = SafetyLimits(
    max_current_ma=10.0,
    max_pulse_width_us=300.0,
    max_frequency_hz=50.0,
    max_charge_per_phase_uc=3.0,
    max_ramp_ma_per_s=10.0,
    max_session_dose_s=60.0,
    max_audio_db_spl=55.0,
    max_audio_rate_hz=2.0,
)


def test_pink_noise_has_a_one_over_f_spectrum() -> None:
    x = pink_noise(2**16, np.random.default_rng(0))
    assert x.shape == (2**16,) and abs(x.mean()) < 1e-9 and math.isclose(np.sqrt(np.mean(x**2)), 1.0)
    f, p = welch(x, fs=1000.0, nperseg=4096)
    band = (f > 5) & (f < 400)
    slope = np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]
    assert -1.2 < slope < -0.8, slope  # white noise would be 0, brown -2


def test_burst_length_level_and_ramps() -> None:
    x = burst_samples(44100, 15.0, 45.0, 85.0, np.random.default_rng(1))
    assert x.dtype == np.float32 and len(x) == round(44100 * 0.015)
    assert abs(x[0]) < 1e-6 and abs(x[-1]) < 0.01  # ramps start and end at (near) zero
    ramp = round(44100 * 0.0025)
    core = x[ramp:-ramp].astype(np.float64)
    rms_db = 20 * np.log10(np.sqrt(np.mean(core**2)))
    assert abs(rms_db - (45.0 - 85.0)) < 1.5  # -40 dB re full scale, within the shaping's spread
    with pytest.raises(ValueError, match="exceeds this rig's full scale"):
        burst_samples(44100, 15.0, 90.0, 85.0, np.random.default_rng(1))


def test_file_sink_writes_every_burst(tmp_path: Path) -> None:
    path = tmp_path / "audio.wav"
    stim = AudioStimulator(FileSink(path, 22050), marker_stream=None)
    recs = [stim.burst(source="test") for _ in range(3)]
    stim.close()
    assert all(r is not None and r.started.is_set() and r.start_time >= r.request_time for r in recs)
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 22050 and w.getnchannels() == 1 and w.getsampwidth() == 2
        assert w.getnframes() == 3 * round(22050 * 0.015)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.abs(pcm).max() > 0


def test_no_audio_device_falls_back_to_the_file_sink_with_one_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as on a rig without PortAudio
    with caplog.at_level(logging.WARNING, logger="stimulation.audio"):
        sink = open_sink("device", path=tmp_path / "fallback.wav")
    assert isinstance(sink, FileSink) and sink.path == tmp_path / "fallback.wav"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no audio device" in lines[0] and "fallback.wav" in lines[0]
    stim = AudioStimulator(sink, marker_stream=None)
    assert stim.burst() is not None  # plays (into the file) without a crash
    stim.close()
    assert isinstance(open_sink("device"), NullSink)  # no path: null sink, still no crash
    with pytest.raises(ValueError, match="'device', 'file' or 'null'"):
        open_sink("speaker")


def test_device_sink_callback_copies_bursts_and_stamps_the_dac_time() -> None:
    # PortAudio is absent here: drive the callback as PortAudio's thread would
    sink = DeviceSink.__new__(DeviceSink)
    sink.samplerate = 1000
    sink._queue = collections.deque()
    sink._current = None
    sink._lock = threading.Lock()
    sink.n_underflows = 0
    sink.n_bursts = 0
    rec = BurstRecord(1, 0.0, math.nan, 40.0, 15.0, "device", "test", threading.Event())
    sink.play(np.arange(1, 16, dtype=np.float32), rec)
    out = np.zeros((10, 1), dtype=np.float32)
    now = pylsl.local_clock()
    sink._callback(out, 10, SimpleNamespace(currentTime=100.0, outputBufferDacTime=100.02), None)
    assert rec.started.is_set() and abs(rec.start_time - (now + 0.02)) < 0.01
    assert out[:, 0].tolist() == list(range(1, 11))
    sink._callback(out, 10, SimpleNamespace(currentTime=100.01, outputBufferDacTime=100.03), None)
    assert out[:5, 0].tolist() == list(range(11, 16)) and not out[5:].any()
    sink.play(np.ones(5, dtype=np.float32), BurstRecord(2, 0, math.nan, 40, 5, "device", "t", threading.Event()))
    sink.stop()
    sink._callback(out, 10, SimpleNamespace(currentTime=100.02, outputBufferDacTime=100.04), None)
    assert not out.any()  # stop() silenced it


@pytest.fixture
def supervisor(tmp_path: Path):
    sup = SafetySupervisor(LIMITS, audit_log_path=tmp_path / "audit.jsonl", heartbeat_timeout_s=5.0, stale_after_s=5.0)
    yield sup
    sup.close()


def test_bursts_are_gated_by_the_supervisor_and_published_as_markers(supervisor: SafetySupervisor) -> None:
    name = unique("audio")
    stim = AudioStimulator(NullSink(), level_db=45.0, supervisor=supervisor, marker_stream=name)
    try:
        infos = pylsl.resolve_byprop("name", name, 1, 5.0)
        assert infos, "audio marker stream not found"
        inlet = pylsl.StreamInlet(infos[0])
        inlet.open_stream(5.0)
        assert stim.burst() is None  # disarmed
        supervisor.arm("clinician:test", "audio test")
        supervisor.heartbeat()
        supervisor.data_age(0.0)
        t_req = pylsl.local_clock()
        rec = stim.burst(request_time=t_req, source="test")
        assert rec is not None and rec.request_time == t_req
        assert stim.burst() is None  # within 1 / max_audio_rate_hz of the last one
        time.sleep(0.55)  # the rate limit is the stimulus here
        supervisor.heartbeat()
        assert stim.burst(level_db=70.0) is None  # above max_audio_db_spl
        assert [d.reason.value for d in stim.refused] == ["not_armed", "audio_rate_limit", "audio_level_limit"]
        got: list[dict] = []

        def pull() -> bool:
            sample, ts = inlet.pull_sample(0.0)
            if sample is not None:
                got.append({**json.loads(sample[0]), "_ts": ts})
            return len(got) >= 4

        assert wait_until(pull, 5.0), got
        bursts = [m for m in got if m["event"] == "audio_burst"]
        assert len(bursts) == 1 and [m["reason"] for m in got if m["event"] == "audio_refused"] == [
            "not_armed",
            "audio_rate_limit",
            "audio_level_limit",
        ]
        b = bursts[0]
        assert b["request_time"] == t_req and b["start_time"] >= t_req and b["latency_ms"] >= 0
        assert b["burst_ms"] == 15.0 and b["level_db"] == 45.0 and b["sink"] == "null"
        assert abs(b["_ts"] - b["start_time"]) < 1e-6  # the marker is stamped with the start time
        audit = [json.loads(x) for x in supervisor.audit_log_path.read_text().splitlines()]
        reasons = [r["reason"] for r in audit if r["event"] == "decision" and r["values"]["kind"] == "audio"]
        assert reasons == ["not_armed", "allowed", "audio_rate_limit", "audio_level_limit"]
    finally:
        stim.close()


def test_audio_output_triggers_on_its_label_and_silences(supervisor: SafetySupervisor) -> None:
    stim = AudioStimulator(NullSink(), supervisor=None, marker_stream=None)
    out = AudioOutput("audio", stim, trigger_label="spindle")
    supervisor.register_output(out)
    out.supervisor = supervisor
    supervisor.arm("clinician:test", "t")
    supervisor.heartbeat()
    supervisor.data_age(0.0)
    now = pylsl.local_clock()

    def cmd(label: str, seq: int) -> Command:
        return Command("spindle", seq, "event", now, now, label, (), (), 0)

    out.send(cmd("none", 1))
    out.send(cmd("spindle", 2))
    assert out.n_ignored == 1 and out.n_triggers == 1 and len(stim.bursts) == 1
    assert stim.bursts[0].request_time == now and stim.bursts[0].source == "pipeline:spindle"
    st = out.status()
    assert st["bursts"] == 1 and st["sink"] == "null" and st["last_latency_ms"] >= 0
    supervisor.estop("test", "stop")
    time.sleep(0.55)
    out.send(cmd("spindle", 3))
    assert len(stim.bursts) == 1 and stim.refused[-1].reason.value == "fault"
    supervisor.unregister_output(out)
    out.close()


def test_audio_output_from_a_config_plays_on_decoded_commands(tmp_path: Path) -> None:
    """A decoding pipeline's commands trigger bursts through the session's supervisor (rate limit included)."""
    from conftest import MODEL

    from app.config import parse_config
    from app.session import Session

    limits = {k: getattr(LIMITS, k) for k in LIMITS.keys()}
    cfg = parse_config(
        {
            "session": {"name": "audio"},
            "safety": {"limits": limits},
            "sources": {"eeg": {"kind": "sim", "scenario": "ssvep", "seed": 3, "amplitude_uv": 8.0}},
            "pipelines": {"ssvep": {"source": "eeg", "model": str(MODEL), "hop_s": 0.1}},
            "outputs": {
                "audio": {
                    "kind": "audio",
                    "sink": "file",
                    "path": str(tmp_path / "bursts.wav"),
                    "trigger_label": "8.0Hz",
                    "marker_stream": unique("audio"),
                    "level_db": 50.0,
                }
            },
        },
        tmp_path,
    )
    s = Session(cfg, audit_log_path=tmp_path / "audit.jsonl")
    s.open()
    try:
        s.start()
        s.arm("clinician:test", "audio block")
        out = s.outputs["audio"]
        assert isinstance(out, AudioOutput)
        assert wait_until(lambda: len(out.stimulator.bursts) >= 2, 20.0), s.safety_status()
        st = s.safety_status()
        assert st["outputs"]["audio"]["sink"] == "file" and st["outputs"]["audio"]["bursts"] >= 2
    finally:
        s.stop()
    times = [b.start_time for b in out.stimulator.bursts]
    # the supervisor spaces its decisions by >= 1 / max_audio_rate_hz; the start follows each within a few ms
    assert all(b - a >= 1 / LIMITS.max_audio_rate_hz - 0.02 for a, b in itertools.pairwise(times))
    audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    audio = [r for r in audit if r["event"] == "decision" and r["values"].get("kind") == "audio"]
    assert sum(r["allowed"] for r in audio) == len(out.stimulator.bursts)
    assert all(r["values"]["level_db"] == 50.0 for r in audio)
    with wave.open(str(tmp_path / "bursts.wav"), "rb") as w:
        assert w.getnframes() == len(times) * round(44100 * 0.015)
