"""Session: a real closed loop on the simulator, LSL command outlet, errors, recording, fast replay."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pylsl
import pytest
from conftest import MODEL, REPO, unique, wait_until

from acquisition.lsl import make_outlet
from acquisition.stream import StreamInfo
from acquisition.xdf_reader import XdfFormatError, read_xdf
from app.config import parse_config
from app.session import Session
from decoders.card import CardMismatchError
from decoders.ssvep_reference import build_ssvep_reference_model, save_model

SSVEP_CH = ["PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2"]


def _cfg(tmp_path: Path | None = None, **over: object) -> dict:
    d: dict = {
        "session": {"name": "t", "stale_after_s": 0.5},
        "sources": {"eeg": {"kind": "sim", "scenario": "ssvep", "seed": 3}},
        "pipelines": {"ssvep": {"source": "eeg", "model": str(MODEL), "hop_s": 0.1}},
    }
    d.update(over)
    return d


@pytest.mark.parametrize("run_on", ["source", "thread"])
def test_closed_loop_on_simulator_delivers_commands_to_lsl_outlet(run_on: str) -> None:
    name = unique("cmds")
    pipes = {"ssvep": {"source": "eeg", "model": str(MODEL), "hop_s": 0.1, "run_on": run_on}}
    cfg = parse_config(_cfg(outputs={"out": {"kind": "lsl", "stream_name": name}}, pipelines=pipes))
    session = Session(cfg)
    got = []
    session.subscribe(got.append)
    session.open()
    found = pylsl.resolve_byprop("name", name, 1, 5.0)
    assert found, "command outlet not visible on LSL"
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(5.0)
    session.start()
    try:
        assert wait_until(lambda: len(got) >= 20, 15.0)
        msgs = []
        assert wait_until(lambda: bool(msgs.extend(inlet.pull_chunk(timeout=0.0)[0]) or len(msgs) >= 10), 5.0)
    finally:
        session.stop()
    first = json.loads(msgs[0][0])
    assert first["pipeline"] == "ssvep" and first["kind"] == "discrete"
    assert first["label"] in ("8.0Hz", "10.0Hz", "12.0Hz", "15.0Hz")
    assert abs(sum(first["values"]) - 1) < 1e-4
    # every command carries the time of its last sample and its issue time, in local_clock
    assert all(0 <= c.issued_time - c.sample_time < 1.0 for c in got)
    assert all(b.sample_time > a.sample_time for a, b in itertools.pairwise(got))
    st = session.status()
    assert st["state"] == "stopped" and st["commands"] == len(got) and not st["errors"]
    assert st["latency"]["n"] == len(got)
    # stop announced the safe state on the command stream
    tail = []
    wait_until(
        lambda: bool(tail.extend(inlet.pull_chunk(timeout=0.0)[0]) or any("safe_state" in m[0] for m in tail)), 3.0
    )
    assert any(json.loads(m[0]).get("event") == "safe_state" for m in tail)


def test_model_card_mismatch_refuses_to_start_naming_both_values(tmp_path: Path) -> None:
    # stream at 256 Hz, model built for 250 Hz
    cfg = parse_config(_cfg(sources={"eeg": {"kind": "sim", "scenario": "ssvep", "srate": 256.0}}))
    with pytest.raises(CardMismatchError, match=r"250(\.0)? Hz.*256(\.0)? Hz"):
        Session(cfg).open()
    # wrong channels: motor-imagery montage into the occipital SSVEP model
    cfg = parse_config(_cfg(sources={"eeg": {"kind": "sim", "scenario": "mi"}}))
    with pytest.raises(CardMismatchError, match=r"refuses to start.*PO7"):
        Session(cfg).open()
    # explicit channel selection that the stream lacks
    cfg = parse_config(_cfg(pipelines={"ssvep": {"source": "eeg", "model": str(MODEL), "channels": ["Oz", "Cz"]}}))
    with pytest.raises(ValueError, match=r"channels \['Cz'\] are not in the stream"):
        Session(cfg).open()


def test_channel_subset_selection_feeds_the_model_in_card_order(tmp_path: Path) -> None:
    model = tmp_path / "occ3.onnx"
    save_model(build_ssvep_reference_model([8.0, 10.0, 12.0, 15.0], 250.0, 1.0, ["O2", "Oz", "O1"]), model)
    cfg = parse_config(_cfg(pipelines={"p": {"source": "eeg", "model": str(model), "channels": ["O2", "Oz", "O1"]}}))
    s = Session(cfg)
    s.open()
    try:
        assert s.pipelines["p"].settings.channel_indices == (7, 6, 5)
    finally:
        s.close()


@pytest.mark.parametrize("run_on", ["source", "thread"])
def test_decoder_exception_faults_session_and_puts_outputs_safe(run_on: str) -> None:
    name = unique("cmds")
    pipes = {"ssvep": {"source": "eeg", "model": str(MODEL), "hop_s": 0.1, "run_on": run_on}}
    cfg = parse_config(_cfg(outputs={"out": {"kind": "lsl", "stream_name": name}}, pipelines=pipes))
    session = Session(cfg)
    session.open()
    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", name, 1, 5.0)[0])
    inlet.open_stream(5.0)
    real = session.pipelines["ssvep"].decoder
    calls = {"n": 0}

    class Exploding:
        card = real.card

        def predict(self, window: np.ndarray) -> np.ndarray:
            calls["n"] += 1
            if calls["n"] == 5:
                raise FloatingPointError("decoder blew up")
            return real.predict(window)

    session.pipelines["ssvep"].decoder = Exploding()
    session.start()
    try:
        assert wait_until(lambda: session.state == "fault", 15.0)
        st = session.status()
        assert st["errors"][0]["where"] == "pipeline:ssvep"
        assert "decoder blew up" in st["errors"][0]["error"]
        assert "FloatingPointError" in session.errors[0]["traceback"]
        assert any(e.level == "error" and "decoder blew up" in e.message for e in session.log)
        msgs: list = []
        assert wait_until(
            lambda: bool(msgs.extend(inlet.pull_chunk(timeout=0.0)[0]) or any("safe_state" in m[0] for m in msgs)), 5.0
        )
        # nothing but the safe-state notice after the fault: commands are no longer delivered
        n_before = session.n_commands
        assert session.sources["eeg"].running  # acquisition keeps going (and recording would too)
    finally:
        session.stop()
    assert session.state == "fault"
    assert session.n_commands == n_before


def test_source_thread_exception_reaches_the_session() -> None:
    session = Session(parse_config(_cfg()))
    session.open()
    src = session.sources["eeg"]
    gen = src.generator
    original = gen.generate
    state = {"n": 0}

    def failing(n: int):  # the simulator's generator fails after a few chunks
        state["n"] += 1
        if state["n"] > 20:
            raise OSError("device unplugged")
        return original(n)

    gen.generate = failing  # type: ignore[method-assign]
    session.start()
    try:
        assert wait_until(lambda: session.state == "fault", 10.0)
    finally:
        session.stop()
    assert session.errors[0]["where"] == "source:eeg"
    assert "device unplugged" in session.errors[0]["error"]
    assert "OSError" in session.errors[0]["traceback"]
    assert not src.running


def test_nan_samples_are_counted_and_never_decoded() -> None:
    name, sid = unique("nan"), unique("sid")
    info = StreamInfo.simple(name, "EEG", SSVEP_CH, 250.0, source_id=sid)
    outlet = make_outlet(info)
    cfg = parse_config(
        {
            "sources": {"eeg": {"kind": "lsl", "source_id": sid}},
            "pipelines": {"p": {"source": "eeg", "model": str(MODEL), "hop_s": 0.04, "catch_up": "all"}},
        }
    )
    session = Session(cfg)
    session.keep_all_commands = True
    session.open()
    session.start()
    try:
        rng = np.random.default_rng(0)
        t0 = pylsl.local_clock()
        for k in range(12):  # 12 chunks of 0.25 s = 3 s of data, NaN burst in chunk 5
            x = rng.standard_normal((62, 8)).astype(np.float32)
            if k == 5:
                x[10:20, 3] = np.nan
                x[30, :] = np.inf
            outlet.push_chunk(x, (t0 + (k * 62 + np.arange(62)) / 250.0).tolist())
        assert wait_until(lambda: session.sources["eeg"].primary().stats.n_samples == 12 * 62, 10.0)
        assert wait_until(lambda: session.pipelines["p"].samples_consumed == 12 * 62, 5.0)
    finally:
        session.stop()
    st = session.status()
    assert st["sources"]["eeg"]["streams"][name]["nonfinite"] == 11
    assert st["pipelines"]["p"]["nonfinite_samples"] == 11
    assert st["pipelines"]["p"]["suppressed_nonfinite"] > 0
    assert st["state"] == "stopped" and not st["errors"]
    assert all(np.isfinite(c.values).all() for c in session.all_commands)


def test_recording_holds_every_stream_command_and_event(tmp_path: Path) -> None:
    out = tmp_path / "rec.xdf"
    session = Session(parse_config(_cfg()), record_path=out)
    session.keep_all_commands = True
    session.run(3.0)
    streams = {s.info.name: s for s in read_xdf(out)}
    eeg = streams["closedloop-sim-ssvep"]
    buf = session.sources["eeg"].primary().buffer
    r = buf.read_since(0)
    assert eeg.info.labels == SSVEP_CH and eeg.info.srate == 250.0
    assert eeg.n_samples == buf.counter == len(r)
    np.testing.assert_array_equal(eeg.data, r.data)
    np.testing.assert_allclose(eeg.timestamps, r.timestamps, rtol=0, atol=1e-9)
    assert eeg.complete
    cmds = streams["closedloop-commands"]
    assert cmds.n_samples == len(session.all_commands) > 10
    first = json.loads(cmds.data[0][0])
    assert first["seq"] == 0 and first["pipeline"] == "ssvep"
    events = [json.loads(v[0]) for v in streams["closedloop-events"].data]
    assert any("started" in e.get("message", "") for e in events)
    assert streams["closedloop-sim-ssvep-markers"].n_samples >= 1


def test_recording_survives_sigkill_with_all_data_older_than_one_second(tmp_path: Path) -> None:
    out = tmp_path / "killed.xdf"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "record", "--source", "sim", "--seconds", "60", "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: out.exists() and out.stat().st_size > 3 * 250 * 8 * 4, 30.0)
        assert wait_until(lambda: out.stat().st_size > 4 * 250 * 8 * 4, 30.0)
        kill_time = pylsl.local_clock()  # same monotonic clock as the recorder's timestamps
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    streams = {s.info.name: s for s in read_xdf(out)}
    eeg = streams["closedloop-sim-ssvep"]
    assert not eeg.complete  # no footer: the process never closed the file
    ts = eeg.timestamps
    assert eeg.n_samples > 250
    np.testing.assert_allclose(np.diff(ts), 1 / 250.0, rtol=0, atol=1e-6)  # contiguous, nothing missing
    assert ts[-1] >= kill_time - 1.0, f"newest recorded sample is {kill_time - ts[-1]:.3f} s older than the kill"


def _record_sim(tmp_path: Path, seconds: float = 6.0) -> Path:
    out = tmp_path / "sim.xdf"
    Session(parse_config(_cfg()), record_path=out).run(seconds)
    return out


def test_fast_replay_is_deterministic_and_matches_the_recording(tmp_path: Path) -> None:
    rec = _record_sim(tmp_path)
    cfg = parse_config(
        {
            "sources": {"eeg": {"kind": "replay", "path": str(rec)}},
            "pipelines": {"ssvep": {"source": "eeg", "model": str(MODEL), "hop_s": 0.1}},
        }
    )
    runs = [Session(cfg).run_fast() for _ in range(2)]
    assert len(runs[0]) > 30
    assert [c.to_json() for c in runs[0]] == [c.to_json() for c in runs[1]]
    n = read_xdf(rec)[0].n_samples
    assert [c.sample_index for c in runs[0]] == list(range(249, n, 25))
    assert all(c.issued_time == c.sample_time for c in runs[0])  # virtual clock


def test_replay_of_corrupt_or_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xdf"
    bad.write_bytes(b"not an xdf file at all")
    cfg = parse_config({"sources": {"r": {"kind": "replay", "path": str(bad)}}})
    with pytest.raises(XdfFormatError, match=r"bad\.xdf"):
        Session(cfg).open()
    rec = _record_sim(tmp_path, 4.0)  # half the file still holds well over one 1-s decision window
    data = rec.read_bytes()
    cut = tmp_path / "cut.xdf"
    cut.write_bytes(data[: len(data) // 2 + 3])  # cut inside a chunk
    cfg = parse_config(
        {
            "sources": {"r": {"kind": "replay", "path": str(cut)}},
            "pipelines": {"p": {"source": "r", "model": str(MODEL)}},
        }
    )
    s = Session(cfg)
    s.open()
    assert s.sources["r"].truncation_warning  # the whole chunks before the cut are played, with a warning
    cmds = s.run_fast()
    assert len(cmds) > 0 and not s.errors


def test_brainflow_synthetic_board_streams_into_a_session_on_local_clock(tmp_path: Path) -> None:
    """Acceptance 5: BrainFlow timestamps mapped onto local_clock (error < 5 ms), recorded as such."""
    import time

    out = tmp_path / "bf.xdf"
    cfg = parse_config({"sources": {"bf": {"kind": "brainflow", "board_id": -1}}})
    session = Session(cfg, record_path=out)
    session.open()
    src = session.sources["bf"]
    stream = src.primary()
    ages = []
    session.start()
    try:
        assert wait_until(lambda: stream.stats.n_samples >= 500, 15.0)
        for _ in range(50):  # newest sample age, read on local_clock
            ages.append(pylsl.local_clock() - stream.buffer.last_timestamp)
            time.sleep(0.01)
        # independent offset estimate: tightest interleaved reads of the two clocks
        pairs = []
        for _ in range(2000):
            a = pylsl.local_clock()
            u = time.time()
            b = pylsl.local_clock()
            pairs.append((b - a, (a + b) / 2 - u))
        pairs.sort()
        independent = float(np.median([o for _, o in pairs[:200]]))
        mapping_error = abs(src.clock.offset - independent)
    finally:
        session.stop()
    assert mapping_error < 0.005, f"BrainFlow->local_clock mapping error {mapping_error * 1e3:.3f} ms"
    assert min(ages) > -0.005  # never in the future
    assert np.median(ages) < 0.1  # fresh: the board emits ~every few ms and the source polls every 5 ms
    rec = {s.info.name: s for s in read_xdf(out)}
    bf = next(s for s in rec.values() if s.info.type != "Markers")
    assert bf.n_samples == stream.stats.n_samples
    assert abs(bf.timestamps[-1] - stream.buffer.last_timestamp) < 1e-9
    assert np.all(np.diff(bf.timestamps) > 0)


def test_session_survives_a_dropout_and_records_the_gap(tmp_path: Path) -> None:
    """Acceptance 6 at session level: the outlet vanishes and returns; the session keeps running."""
    import gc
    import threading

    name, sid = unique("drop"), unique("sid")
    info = StreamInfo.simple(name, "EEG", SSVEP_CH, 250.0, source_id=sid)
    state = {"outlet": make_outlet(info), "k": 0, "pause": False}
    stop = threading.Event()

    def pusher() -> None:
        t0 = pylsl.local_clock()
        while not stop.is_set():
            due = int((pylsl.local_clock() - t0) * 250)
            out = state["outlet"]
            if out is not None and not state["pause"] and due > state["k"]:
                n = due - state["k"]
                out.push_chunk(np.full((n, 8), 1.0, np.float32) * np.arange(state["k"], due)[:, None])
                state["k"] = due
            elif state["pause"]:
                state["k"] = due
            stop.wait(0.004)

    out = tmp_path / "drop.xdf"
    cfg = parse_config(
        {
            "session": {"stale_after_s": 0.3},
            "sources": {"eeg": {"kind": "lsl", "source_id": sid}},
            "pipelines": {"p": {"source": "eeg", "model": str(MODEL), "hop_s": 0.1}},
        }
    )
    session = Session(cfg, record_path=out)
    session.open()
    th = threading.Thread(target=pusher, daemon=True)
    th.start()
    session.start()
    stream = session.sources["eeg"].primary()
    try:
        assert wait_until(lambda: session.n_commands >= 5, 10.0)
        state["pause"] = True
        state["outlet"] = None  # drop the only reference: the outlet disappears from the network
        gc.collect()
        assert wait_until(lambda: stream.stats.n_dropouts == 1, 5.0)
        assert wait_until(lambda: session.status()["pipelines"]["p"]["stale"], 5.0)
        state["outlet"] = make_outlet(info)
        back = pylsl.local_clock()
        state["pause"] = False
        assert wait_until(lambda: stream.stats.n_reacquired == 1, 5.0)
        reacquired_after = pylsl.local_clock() - back
        n_before = session.n_commands
        assert wait_until(lambda: session.n_commands > n_before + 5, 10.0)
        assert session.state == "running"
    finally:
        session.stop()
        stop.set()
        th.join(5)
    assert reacquired_after < 2.0
    assert stream.buffer.n_gaps >= 1
    assert not session.errors
    rec = {s.info.name: s for s in read_xdf(out)}
    events = [json.loads(v[0]) for v in rec["closedloop-events"].data]
    kinds = [e.get("kind") for e in events]
    assert "dropout" in kinds and "reacquired" in kinds
    assert any("stale" in e.get("message", "") for e in events)
    ts = rec[name].timestamps
    assert np.max(np.diff(ts)) > 0.3  # the outage is visible in the recorded timestamps


def test_teleop_output_from_config_moves_the_simulated_robot_and_stops_it(tmp_path: Path) -> None:
    """An ``[outputs.X] kind = "teleop"`` table builds the MuJoCo bridge; decoded commands move it, stop zeroes it."""
    mapping = tmp_path / "map.toml"
    mapping.write_text(
        "[teleop]\ninitial_mode = 'lift'\nmin_confidence = 0.0\ndwell_s = 0.0\ndeadman_s = 0.5\n"
        "[teleop.modes.lift]\n'8.0Hz' = 'lift+'\n'10.0Hz' = 'lift-'\n'12.0Hz' = 'arm+'\n'15.0Hz' = 'arm-'\n"
    )
    outputs = {"robot": {"kind": "teleop", "backend": "mujoco", "mapping": str(mapping)}}
    session = Session(parse_config(_cfg(outputs=outputs)))
    got: list = []
    session.subscribe(got.append)
    session.open()
    bridge = session.outputs["robot"]
    session.start()
    try:
        assert wait_until(lambda: len(got) >= 15, 15.0)
    finally:
        session.stop()
    taken = [r for r in bridge.records if r.entry.decision == "taken"]
    assert taken, [r.entry.reason for r in bridge.records[:5]]
    assert {r.entry.action for r in taken} <= {"lift+", "lift-", "arm+", "arm-"}
    assert any(any(v != 0.0 for v in r.velocity) for r in taken)  # the command had an effect
    # stopping the session put the robot in its safe state: the last thing in the log is a halt
    assert bridge.log[-1].decision == "safety"


def test_teleop_output_with_an_unknown_backend_is_refused_by_the_config() -> None:
    from app.config import ConfigError

    with pytest.raises(ConfigError, match=r"outputs.robot.backend' must be one of \['mujoco'"):
        parse_config(_cfg(outputs={"robot": {"kind": "teleop", "backend": "roomba"}}))


def test_estop_holds_command_outputs_until_the_fault_is_cleared() -> None:
    """E-stop latches a fault in the supervisor; while latched no output gets a command (decoding goes on)."""
    name = unique("estop-cmds")
    session = Session(parse_config(_cfg(outputs={"out": {"kind": "lsl", "stream_name": name}})))
    got: list = []
    session.subscribe(got.append)
    session.start()
    try:
        assert wait_until(lambda: len(got) >= 3, 10.0)
        blocked0 = session.n_blocked
        session.estop("operator pressed e-stop", who="test")
        n0 = len(got)
        assert wait_until(lambda: len(got) >= n0 + 5, 10.0)  # still decoded and recorded ...
        assert session.n_blocked >= blocked0 + 5  # ... but held from every output
        session.clear_fault("test", "checked")
        n1, blocked1 = len(got), session.n_blocked
        assert wait_until(lambda: len(got) >= n1 + 5, 10.0)
        assert session.n_blocked == blocked1  # delivered again
    finally:
        session.stop()
