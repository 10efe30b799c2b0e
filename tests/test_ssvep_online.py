"""Acceptance 3: online equals offline for SSVEP.

Real ssvep_exo data (subject01, both sessions, 64 trials) go into an XDF file (EEG + marker
stream, written by XdfWriter), which ReplaySource republishes on LSL at 6x speed. A running
Session reads the LSL stream and decodes with a trained FBCCA model (rest class included).
The session's decision for each trial (the command whose window is exactly the trial's
window) must reach an accuracy within 3 points of ``closedloop evaluate`` on the same XDF.

To keep the test short, the XDF holds one 2-s segment per trial (0.75 s before the decision
window to 0.25 s after it) rather than the whole 528 s; segments are 512 samples long and the
window ends at the same offset in each, so the pipeline's hop grid (0.125 s) lands exactly on
every trial window. The model filters inside each window (no stream filter on its card), so
the segment joins cannot leak into a decision.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from acquisition.replay import ReplaySource
from acquisition.stream import StreamInfo
from acquisition.xdf_writer import XdfWriter
from app.cli import main as cli_main
from app.config import parse_config
from app.session import Session
from decoders.dataset import load_spec, read_recording
from tests.conftest import DATA, REPO, unique, wait_until

SFREQ = 256
WINDOW = 256  # 1 s decision window
PRE = 192  # samples of each segment before the window
SEGMENT = 512  # 2 s per trial
HOP = 32  # 0.125 s: (PRE + WINDOW - WINDOW) % HOP == 0, so every trial window ends on a decision point
TMIN = 1.0  # s: trial window starts 1 s after the trial onset event (as in tests/datasets/ssvep_exo_s01.toml)


def write_trial_xdf(path: Path, spec_path: Path, stream_name: str) -> tuple[int, list[str]]:
    """One SEGMENT per trial of every recording in the spec; a marker (event code) at each window start."""
    spec = load_spec(spec_path)
    codes = {c.event for c in spec.classes.values()}
    segs: list[np.ndarray] = []
    marks: list[str] = []
    for rs in spec.recordings:
        rec = read_recording(rs, spec)
        for ev in rec.events:
            if ev.description not in codes:
                continue
            a = round((ev.onset_s + TMIN) * SFREQ)
            segs.append(rec.data[a - PRE : a - PRE + SEGMENT].astype(np.float32))
            marks.append(ev.description)
    data = np.concatenate(segs)
    t0 = 5000.0
    ts = t0 + np.arange(data.shape[0]) / SFREQ
    with XdfWriter(path) as w:
        eeg = w.add_stream(
            StreamInfo.simple(stream_name, "EEG", rec.ch_names, SFREQ, unit="microvolts", source_id=stream_name)
        )
        mk = w.add_stream(
            StreamInfo.simple(stream_name + "-markers", "Markers", ["event"], 0.0, channel_format="string")
        )
        w.write_samples(eeg, data, ts)
        w.write_samples(mk, [[m] for m in marks], t0 + (np.arange(len(marks)) * SEGMENT + PRE) / SFREQ)
    return data.shape[0], marks


def test_lsl_replay_into_session_matches_evaluate(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1. train FBCCA (targets + rest) with a 1-s window and 3 sub-bands (cheap decisions at a 0.125 s hop)
    text = (REPO / "tests" / "datasets" / "ssvep_exo_s01.toml").read_text(encoding="utf-8")
    text = re.sub(r"^root = .*$", f'root = "{DATA / "ssvep_exo"}"', text, flags=re.M)
    text = re.sub(r"^window_s = .*$", "window_s = 1.0\nn_subbands = 3\nreport_windows = [1.0]", text, flags=re.M)
    spec_fif = tmp_path / "s01.toml"
    spec_fif.write_text(text, encoding="utf-8")
    model = tmp_path / "fbcca.onnx"
    assert cli_main(["train", "ssvep", "--dataset", str(spec_fif), "--method", "fbcca", "--out", str(model)]) == 0

    # 2. the same trials as an XDF (EEG + markers), and its dataset spec (window starts at the marker)
    name = unique("ssvep-exo")
    xdf = tmp_path / "s01_trials.xdf"
    n_samples, marks = write_trial_xdf(xdf, spec_fif, name)
    assert len(marks) == 64
    classes = re.search(r"(\[classes\.13Hz\].*?)\n\[ssvep\]", text, flags=re.S)
    assert classes is not None
    spec_xdf = tmp_path / "xdf.toml"
    spec_xdf.write_text(
        f'paradigm = "ssvep"\n[epochs]\ntmin = 0.0\ntmax = 1.0\n{classes.group(1)}\n'
        f'[ssvep]\ngaze_shift_s = 1.0\n\n[[recordings]]\npath = "{xdf.name}"\nstream = "{name}"\n',
        encoding="utf-8",
    )
    capsys.readouterr()
    assert cli_main(["evaluate", str(model), "--dataset", str(spec_xdf), "--json"]) == 0
    offline = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert offline["n_trials"] == 64
    assert offline["accuracy"] > 0.4  # chance 0.25: the model works on these trials
    # the XDF trials are the FIF trials: evaluate on the original recordings agrees
    assert cli_main(["evaluate", str(model), "--dataset", str(spec_fif), "--json"]) == 0
    on_fif = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert on_fif["y_pred"] == offline["y_pred"]

    # 3. replay on LSL into a running session
    replay = ReplaySource("replay", xdf, speed=6.0, lsl=True, wait_consumers_s=20.0)
    replay.open()
    cfg = parse_config(
        {
            "session": {"name": "ssvep-online"},
            "sources": {"eeg": {"kind": "lsl", "name": name, "resolve_timeout": 10.0}},
            "pipelines": {
                "ssvep": {
                    "source": "eeg",
                    "model": str(model),
                    "hop_s": HOP / SFREQ,
                    "catch_up": "all",
                    "run_on": "thread",
                }
            },
        }
    )
    session = Session(cfg)
    session.keep_all_commands = True
    session.open()
    session.start()
    replay_thread = threading.Thread(target=replay.start, daemon=True)
    try:
        replay_thread.start()
        pipe = session.pipelines["ssvep"]
        assert wait_until(lambda: pipe.samples_consumed >= n_samples, 200.0, 0.1), (
            f"the session consumed {pipe.samples_consumed} of {n_samples} samples"
        )
        last_d = (len(marks) - 1) * SEGMENT + PRE + WINDOW - 1
        assert wait_until(lambda: any(c.sample_index >= last_d for c in list(session.all_commands)), 30.0, 0.05)
    finally:
        session.stop()
        session.close()
        replay.close()
        replay_thread.join(10.0)
    assert not session.errors, session.errors
    assert pipe.samples_consumed == n_samples  # lossless: sample indices are XDF sample indices

    by_index = {c.sample_index: c for c in session.all_commands}
    classes_model = list(session.cards["ssvep"].classes)
    y_online = []
    for k in range(len(marks)):
        d = k * SEGMENT + PRE + WINDOW - 1
        assert d in by_index, f"no decision at the end of trial {k}'s window (sample {d})"
        y_online.append(classes_model.index(by_index[d].label))
    y_true = offline["y_true"]
    acc_online = float(np.mean(np.array(y_online) == np.array(y_true)))
    assert abs(acc_online - offline["accuracy"]) <= 0.03, (acc_online, offline["accuracy"])
    agree = float(np.mean(np.array(y_online) == np.array(offline["y_pred"])))
    assert agree >= 0.97, f"online and offline decisions agree on only {agree * 100:.1f} % of trials"
