"""The Decoder tab's SSVEP calibration block (issue 7), driven for real: the main window offscreen with pytest-qt.

Simulator SSVEP session -> calibration block (the cue follows the simulator's own schedule) ->
XDF with one ``calibration_cue`` marker per trial -> dataset spec -> fbcca trained on a worker
thread -> cross-validated accuracy and confusion shown -> Go online -> commands from the new model.
Qt warnings fail the tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

os.environ["QT_QPA_PLATFORM"] = "offscreen"

from conftest import MODEL
from PyQt6.QtCore import Qt

from ui.calibration import CUE_EVENT, cue_marker, write_spec

FREQS = [8.0, 10.0, 12.0, 15.0]


def sim_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "calib.toml"
    cfg.write_text(
        f"""
[session]
name = "calib"
stale_after_s = 0.5

[sources.eeg]
kind = "sim"
scenario = "ssvep"
seed = 3
frequencies = {FREQS}
trial_s = 2.0
amplitude_uv = 5.0

[pipelines.ssvep]
source = "eeg"
model = {json.dumps(str(MODEL))}
hop_s = 0.1
catch_up = "latest"

[outputs.commands]
kind = "lsl"
stream_name = "closedloop-commands-{tmp_path.name}"
""",
        encoding="utf-8",
    )
    return cfg


def test_cue_marker_and_spec_round_trip(tmp_path: Path) -> None:
    from decoders.dataset import load_spec

    (tmp_path / "c.xdf").write_bytes(b"")  # load_spec checks the file exists
    spec = load_spec(write_spec(tmp_path / "c.toml", tmp_path / "c.xdf", [8.0, 12.5], 3.0, stream="EEG x"))
    assert spec.paradigm == "ssvep" and (spec.tmin, spec.tmax) == (0.0, 3.0)
    assert list(spec.classes) == ["8Hz", "12.5Hz"]
    assert spec.classes["12.5Hz"].event == cue_marker(12.5) and spec.classes["12.5Hz"].frequency == 12.5
    assert json.loads(cue_marker(12.5)) == {"event": CUE_EVENT, "target": "12.5Hz", "frequency_hz": 12.5}
    rec = spec.recordings[0]
    assert rec.path == tmp_path / "c.xdf"
    assert rec.options == {"stream": "EEG x", "marker_stream": "closedloop-events"}


def test_calibration_block_records_trains_and_goes_online(qtbot, window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from acquisition.xdf_reader import read_xdf
    from decoders.dataset import load_epochs, load_spec

    win = window
    win.load_config(sim_config(tmp_path))
    win.open_session()
    qtbot.waitUntil(lambda: win.ctl.session is not None and win.ctl.session.state == "open", timeout=30000)
    qtbot.waitUntil(lambda: not win.ctl.busy, timeout=30000)
    win.start()
    qtbot.waitUntil(lambda: win.ctl.running and not win.ctl.busy, timeout=30000)
    assert win.flicker.frequencies == FREQS  # the grid's targets come from the simulator's frequencies

    dec = win.decoder
    win.tabs.setCurrentWidget(dec)
    dec.cal_trials.setValue(2)
    dec.cal_dir.setText(str(tmp_path / "cal"))
    dec.cal_method.setCurrentText("fbcca")
    assert dec.start_calibration()
    block = dec.calibration
    assert block is not None and block.mode == "simulator" and block.trial_s == 2.0
    assert win.tabs.currentWidget() is win.feedback and win.flicker.running  # the grid flickers during the block
    cued: list[int] = []
    block.cue.connect(cued.append)
    qtbot.waitUntil(lambda: win.flicker.cued is not None, timeout=10000)

    qtbot.waitUntil(lambda: block.phase in ("done", "failed"), timeout=60000)
    assert block.phase == "done", dec.cal_status.text()
    assert win.tabs.currentWidget() is dec and win.flicker.cued is None
    assert {i for i in cued if i >= 0} == {0, 1, 2, 3} and min(block.counts) >= 2

    # the XDF holds one calibration_cue marker per trial, each naming the cued target
    streams = read_xdf(block.plan.xdf_path)
    events = next(s for s in streams if s.info.name == "closedloop-events")
    cues = [json.loads(str(v[0])) for v in events.data if json.loads(str(v[0]))["event"] == CUE_EVENT]
    assert len(cues) == block.n_marked >= 8
    assert {c["target"] for c in cues} == {"8Hz", "10Hz", "12Hz", "15Hz"}
    # ... and the spec next to it loads: 2 s epochs per cue, every class with >= 2 trials
    spec = load_spec(block.plan.spec_path)
    assert spec.recordings[0].path == block.plan.xdf_path
    ep = load_epochs(spec)
    assert ep.X.shape[1:] == (500, 8) and ep.sfreq == 250.0
    assert np.bincount(ep.y, minlength=4).min() >= 2 and len(ep.y) == block.n_marked

    # training on the worker thread -> accuracy, confusion, checked card -> Go online enabled
    qtbot.waitUntil(lambda: dec.go_online_btn.isEnabled(), timeout=120000)
    assert dec.progress.value() == 100
    assert dec.cal_accuracy.text().endswith("-fold)") and "%" in dec.cal_accuracy.text()
    acc = float(dec.cal_accuracy.text().split("%")[0])
    assert acc >= 75.0  # 5 µV SSVEP in 10 µV EEG, 2 s windows: fbcca separates the targets
    assert dec.cal_confusion.rowCount() == dec.cal_confusion.columnCount() == 4
    total = sum(float(dec.cal_confusion.item(r, c).text()) for r in range(4) for c in range(4))
    assert total == len(ep.y)
    model = dec.calibration_model
    assert model is not None and model.is_file()

    # Go online: the session restarts with the calibrated model and commands keep arriving
    old_session = win.ctl.session
    qtbot.mouseClick(dec.go_online_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.ctl.session is not old_session and win.ctl.running and not win.ctl.busy, timeout=30000)
    assert win.ctl.session is not None
    assert Path(win.ctl.session.config.pipelines["ssvep"].model) == model
    card = win.ctl.cards()["ssvep"]
    assert card.provenance.get("method") == "fbcca" and list(card.classes) == ["8Hz", "10Hz", "12Hz", "15Hz"]
    seen = win.commands_seen
    qtbot.waitUntil(lambda: win.commands_seen >= seen + 10, timeout=15000)
    assert win.last_command is not None and win.last_command.classes == tuple(card.classes)


def test_own_schedule_on_an_lsl_stream_cues_balanced_trials_with_rest(qtbot, window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A non-simulated source: the block's own schedule (random rounds, trial then rest), markers at the cues."""
    import threading

    from conftest import unique

    from acquisition.lsl import make_outlet
    from acquisition.stream import StreamInfo
    from acquisition.xdf_reader import read_xdf
    from decoders.dataset import load_epochs, load_spec

    name = unique("gui-cal")
    outlet = make_outlet(StreamInfo.simple(name, "EEG", [f"C{i}" for i in range(4)], 250.0, source_id=name))
    stop = threading.Event()

    def push() -> None:
        k = 0
        while not stop.is_set():
            t = np.arange(k, k + 5) / 250.0
            outlet.push_chunk((10 * np.sin(2 * np.pi * 9 * t)[:, None] * np.ones((1, 4))).astype(np.float32))
            k += 5
            stop.wait(0.02)

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    try:
        cfg = tmp_path / "lsl.toml"
        cfg.write_text(
            f'[session]\nname = "lslcal"\n\n[sources.eeg]\nkind = "lsl"\nname = "{name}"\n', encoding="utf-8"
        )
        win = window
        win.load_config(cfg)
        win.open_session()
        qtbot.waitUntil(
            lambda: win.ctl.session is not None and win.ctl.state == "open" and not win.ctl.busy, timeout=20000
        )
        dec = win.decoder
        assert not dec.start_calibration() and "running session" in dec.cal_status.text()  # refused, said why
        assert dec.cal_start_btn.isEnabled() and win.ctl.recording_path is None
        win.start()
        qtbot.waitUntil(lambda: win.ctl.running and not win.ctl.busy, timeout=20000)
        win.flicker.set_frequencies([9.0, 11.0])
        dec.cal_trials.setValue(2)
        dec.cal_trial_s.setValue(0.6)
        dec.cal_rest_s.setValue(0.3)
        dec.cal_dir.setText(str(tmp_path / "cal"))
        assert dec.start_calibration()
        block = dec.calibration
        assert block is not None and block.mode == "own" and block.n_planned == 4
        cued: list[int] = []
        block.cue.connect(cued.append)
        qtbot.waitUntil(lambda: block.phase in ("done", "failed"), timeout=30000)
        assert block.phase == "done", dec.cal_status.text()
        assert block.counts == [2, 2] and cued.count(-1) >= 3  # a rest (no cue) between the trials
        streams = read_xdf(block.plan.xdf_path)
        events = next(s for s in streams if s.info.name == "closedloop-events")
        ts = [float(t) for v, t in zip(events.data, events.timestamps, strict=True) if CUE_EVENT in str(v[0])]
        assert len(ts) == 4 and np.allclose(np.diff(ts), 0.9, atol=0.25)  # trial + rest apart
        ep = load_epochs(load_spec(block.plan.spec_path))
        assert ep.X.shape == (4, 150, 4) and sorted(ep.y.tolist()) == [0, 0, 1, 1]
        qtbot.waitUntil(lambda: dec.train_btn.isEnabled(), timeout=60000)  # the training it starts has ended
        assert dec.result.toPlainText() != ""
    finally:
        stop.set()
        pusher.join(5)
