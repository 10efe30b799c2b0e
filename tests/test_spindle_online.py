"""Online equals offline for spindle detection (issue 4, acceptance 3), and trigger routing.

90 s of DREAMS excerpt 2 (200 Hz, CZ-A1) go into an XDF file, which ReplaySource republishes on LSL
at 6x speed. A running Session reads the LSL stream with a ``spindle-gru`` model (card rate 200 Hz:
the runtime resamples to 250 Hz itself). The events rebuilt from the session's commands must equal
``closedloop evaluate``'s detections on the same XDF up to one hop (25 ms); the router publishes an
LSL marker and calls the trigger callback for each of them.

The model is the untrained network (random weights, seed 0) with its threshold set so that it
fires a few times in these 90 s: the test is about the online/offline guarantee, not quality.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pylsl
import pytest

from acquisition.replay import ReplaySource
from acquisition.stream import StreamInfo
from acquisition.xdf_writer import XdfWriter
from app.cli import main as cli_main
from app.config import parse_config
from app.pipeline import Command
from app.session import Session
from decoders.dataset import load_spec
from decoders.spindle.data import load_spindle_recordings
from decoders.spindle.detector import DetectorSettings, OrtStepModel, SpindleDetector
from decoders.spindle.online import SpindleTriggerRouter, events_from_commands
from decoders.spindle.preprocessing import FrontEndSettings
from tests.conftest import DATA, REPO, unique, wait_until

sys.path.insert(0, str(REPO / "benchmarks"))
from convert_dreams import convert

SFREQ = 200.0
SECONDS = 90.0


def make_model(path: Path, x: np.ndarray) -> Path:
    """Untrained Portiloop net with a threshold at the 93rd percentile of its outputs on ``x``."""
    torch = pytest.importorskip("torch")
    from decoders.spindle.training import build_card, write_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    from decoders.spindle.network import PortiloopNet

    net = PortiloopNet().eval()
    front = FrontEndSettings()
    card = build_card(srate=SFREQ, channel="CZ-A1", front=front, settings=DetectorSettings(), training_data="none")
    write_model(net, card, path)
    prob = SpindleDetector(OrtStepModel(path), SFREQ, front).process(x).prob
    thr = float(np.clip(np.percentile(prob[prob.size // 10 :], 93), 0.01, 0.99))
    card = build_card(
        srate=SFREQ, channel="CZ-A1", front=front, settings=DetectorSettings(threshold=thr), training_data="none"
    )
    write_model(net, card, path)
    return path


def test_lsl_replay_into_session_matches_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = DATA / "dreams_spindles"
    if not src.is_dir():
        pytest.skip(f"DREAMS recordings folder {src} is absent (it ships only with the development machines)")
    spec_fif = convert(src, tmp_path / "fif", [2], SECONDS)
    rec = load_spindle_recordings(load_spec(spec_fif))[0]
    x = rec.signal.astype(np.float32)
    assert rec.sfreq == SFREQ and x.size == int(SECONDS * SFREQ)
    model = make_model(tmp_path / "spindle.onnx", x)

    # 1. the recording as XDF, and `closedloop evaluate` on it
    name = unique("dreams-e2")
    xdf = tmp_path / "excerpt2.xdf"
    with XdfWriter(xdf) as w:
        sid = w.add_stream(StreamInfo.simple(name, "EEG", ["CZ-A1"], SFREQ, unit="microvolts", source_id=name))
        w.write_samples(sid, x[:, None], 7000.0 + np.arange(x.size) / SFREQ)
    spec_xdf = tmp_path / "xdf.toml"
    spec_xdf.write_text(f'paradigm = "spindle"\n[[recordings]]\npath = "{xdf.name}"\nstream = "{name}"\n')
    capsys.readouterr()
    assert cli_main(["evaluate", str(model), "--dataset", str(spec_xdf), "--json"]) == 0
    offline = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["detections"][str(xdf.resolve())]
    assert len(offline) >= 2, f"the test model should fire a few times, got {offline}"

    # 2. replay on LSL into a running session; a router turns commands into markers and triggers
    marker_name = unique("spindle-markers")
    triggers: list[Command] = []
    router = SpindleTriggerRouter("spindle", on_trigger=triggers.append, marker_stream=marker_name)
    marker_inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", marker_name, 1, 10.0)[0])
    marker_inlet.open_stream(10.0)
    replay = ReplaySource("replay", xdf, speed=6.0, lsl=True, wait_consumers_s=20.0)
    replay.open()
    cfg = parse_config(
        {
            "session": {"name": "spindle-online"},
            "sources": {"eeg": {"kind": "lsl", "name": name, "resolve_timeout": 10.0}},
            "pipelines": {
                "spindle": {"source": "eeg", "model": str(model), "catch_up": "all", "run_on": "thread"},
            },
        }
    )
    session = Session(cfg)
    session.keep_all_commands = True
    session.subscribe(router)
    session.open()
    session.start()
    replay_thread = threading.Thread(target=replay.start, daemon=True)
    try:
        replay_thread.start()
        pipe = session.pipelines["spindle"]
        assert wait_until(lambda: pipe.samples_consumed >= x.size, 120.0, 0.1), (
            f"the session consumed {pipe.samples_consumed} of {x.size} samples"
        )
    finally:
        session.stop()
        session.close()
        replay.close()
        replay_thread.join(10.0)
    assert not session.errors, session.errors
    assert pipe.samples_consumed == x.size  # lossless: sample indices are recording sample indices
    decoder = pipe.decoder
    assert getattr(decoder, "n_resyncs", None) == 0

    # 3. same events up to one hop (online times are input-sample times: <= 1 hop late, <= 1 sample early)
    online = events_from_commands(session.all_commands, SFREQ)
    hop = pipe.hop / SFREQ
    assert len(online) == len(offline), (online, offline)
    for (a, b), (c, d) in zip(online, offline, strict=True):
        assert -1 / SFREQ - 1e-6 <= a - c <= hop + 1e-6, (a, c)
        if d < SECONDS - 1.0:  # offline closes an event still active at the end at the last sample
            assert -1 / SFREQ - 1e-6 <= b - d <= hop + 1e-6, (b, d)
    # 4. one trigger and one onset marker per event (variant "all"), on the real LSL marker stream
    assert router.n_onsets == len(offline) and len(triggers) == len(offline)
    assert all(c.values[1] >= 0.5 for c in triggers)
    received: list[dict] = []
    assert wait_until(
        lambda: (
            received.extend(json.loads(s[0]) for s in marker_inlet.pull_chunk(timeout=0.0)[0])
            or (sum(m["event"] == "spindle_trigger" for m in received) >= len(offline))
        ),
        10.0,
        0.05,
    )
    onsets = [m for m in received if m["event"] == "spindle_onset"]
    assert len(onsets) == len(offline)
    router.close()
