"""The ``closedloop`` command line, run as a user would (subprocesses, real LSL)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pylsl
import pytest
from conftest import REPO, wait_until

from acquisition.xdf_reader import read_xdf


def closedloop(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_demo_closes_the_loop_and_matches_ground_truth() -> None:
    r = closedloop("demo", "--seconds", "20")
    assert r.returncode == 0, r.stderr
    m = re.search(r"matched ground truth (\d+) of (\d+) = ([\d.]+) %", r.stdout)
    assert m, r.stdout
    matched, scored = int(m.group(1)), int(m.group(2))
    assert scored >= 100
    assert matched / scored >= 0.90, r.stdout
    assert "decision latency" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["record", "--source", "usb:3", "--seconds", "1", "--out", "x.xdf"], "unknown source 'usb:3'"),
        (["record", "--source", "brainflow:abc", "--seconds", "1", "--out", "x.xdf"], "needs an integer board id"),
        (["record", "--source", "lsl:", "--seconds", "1", "--out", "x.xdf"], "needs a stream name"),
        (["run", "--config", "does-not-exist.toml"], "does not exist"),
        (["replay", "nothing-here.xdf"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args: list[str], message: str) -> None:
    r = closedloop(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_malformed_config_and_card_mismatch_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[sources.eeg]\nkind = "sim"\nscenario = "ssvep"\nseed = "x"\n')
    r = closedloop("run", "--config", str(bad), "--seconds", "1")
    assert r.returncode == 2 and "'sources.eeg.seed' must be an integer, found 'x'" in r.stderr
    mismatch = tmp_path / "mismatch.toml"
    mismatch.write_text(
        f'[sources.eeg]\nkind = "sim"\nscenario = "ssvep"\nsrate = 500.0\n'
        f'[pipelines.p]\nsource = "eeg"\nmodel = "{REPO / "models" / "ssvep_reference.onnx"}"\n'
    )
    r = closedloop("run", "--config", str(mismatch), "--seconds", "1")
    assert r.returncode == 2, r.stderr
    assert "refuses to start" in r.stderr and "250" in r.stderr and "500" in r.stderr


def test_corrupt_xdf_replay_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.xdf"
    bad.write_bytes(b"XDF:" + bytes(range(256)) * 4)
    r = closedloop("replay", str(bad))
    assert r.returncode == 2 and "corrupt.xdf" in r.stderr and "Traceback" not in r.stderr


def test_record_then_replay_fast_through_the_demo_pipelines(tmp_path: Path) -> None:
    out = tmp_path / "rec.xdf"
    r = closedloop("record", "--source", "sim", "--seconds", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    streams = {s.info.name: s for s in read_xdf(out)}
    assert streams["closedloop-sim-ssvep"].n_samples >= 2 * 250
    jl = tmp_path / "cmds.jsonl"
    r = closedloop("replay", str(out), "--config", "configs/demo.toml", "--fast", "--commands-out", str(jl))
    assert r.returncode == 0, r.stderr
    assert "real time" in r.stdout
    assert len(jl.read_text().splitlines()) >= 10
    r = closedloop("record", "--source", "sim", "--seconds", "1", "--out", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr


def _receive_all(info: pylsl.StreamInfo, expected: int, results: dict, key: str) -> None:
    inlet = pylsl.StreamInlet(info, max_buflen=60, recover=False)
    inlet.open_stream(10)
    chunks, n = [], 0
    deadline = pylsl.local_clock() + 60
    try:
        while n < expected and pylsl.local_clock() < deadline:
            data, ts = inlet.pull_chunk(timeout=0.2, max_samples=4096)
            if ts:
                chunks.append(np.asarray(data))
                n += len(ts)
    except Exception as exc:  # noqa: BLE001 - reported through results and asserted by the test
        results[key + ":error"] = repr(exc)
    results[key] = (np.concatenate(chunks) if chunks else np.zeros((0, info.channel_count())), inlet.info())


@pytest.mark.parametrize(
    ("name", "speed"),
    [("sub-P032_ses-S001_task-Default_run-001_eeg.xdf", "4"), ("sub-P003_ses-S001_task-Default_run-001_eeg.xdf", "2")],
)
def test_replay_lsl_republishes_every_sample_of_real_labrecorder_files(data_dir: Path, name: str, speed: str) -> None:
    path = data_dir / "muse_eeg_xdf" / name
    recorded = read_xdf(path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "replay", str(path), "--lsl", "--speed", speed],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        hostname = None
        found: dict[str, pylsl.StreamInfo] = {}
        # the outlets are new: find them by type among the Muse streams announced by this replay
        assert wait_until(lambda: len(_muse_streams(found)) == len(recorded), 20.0), found
        threads, results = [], {}
        for r in recorded:
            if r.n_samples == 0:
                continue
            t = threading.Thread(target=_receive_all, args=(found[r.info.type], r.n_samples, results, r.info.type))
            t.start()
            threads.append(t)
        for t in threads:
            t.join(90)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    del hostname
    for r in recorded:
        info = found[r.info.type]
        assert info.channel_count() == r.info.n_channels
        assert info.nominal_srate() == r.info.srate
        if r.n_samples == 0:
            continue
        assert r.info.type + ":error" not in results, results[r.info.type + ":error"]
        data, full = results[r.info.type]
        assert data.shape == (r.n_samples, r.info.n_channels), (r.info.type, data.shape)
        np.testing.assert_array_equal(data.astype(np.float32), np.asarray(r.data, dtype=np.float32))
        ch = full.desc().child("channels").child("channel")
        assert ch.child_value("label") == r.info.labels[0]


def _muse_streams(found: dict[str, pylsl.StreamInfo]) -> dict[str, pylsl.StreamInfo]:
    for s in pylsl.resolve_bypred("starts-with(name,'Muse')", 1, 0.5):
        found.setdefault(s.type(), s)
    return found


def test_devices_lists_lsl_streams_and_brainflow_boards() -> None:
    import json

    from conftest import unique

    from acquisition.lsl import make_outlet
    from acquisition.stream import StreamInfo

    name = unique("dev")
    outlet = make_outlet(StreamInfo.simple(name, "EEG", ["Cz", "Pz"], 500.0, source_id=name))
    r = closedloop("devices", "--json", "--wait", "2")
    del outlet
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    mine = [s for s in out["lsl_streams"] if s["name"] == name]
    assert mine and mine[0]["channels"] == 2 and mine[0]["srate"] == 500.0 and mine[0]["source_id"] == name
    assert any(b["id"] == -1 and b["name"] == "Synthetic" for b in out["brainflow_boards"])
