"""XDF writer and reader: round trips through the real pyxdf, crash safety under SIGKILL, error paths, real files."""

from __future__ import annotations

import gzip
import os
import re
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import pyxdf

from acquisition.stream import ChannelInfo, StreamInfo
from acquisition.xdf_reader import RecordedStream, XdfFormatError, XdfTruncatedWarning, read_xdf
from acquisition.xdf_writer import BOUNDARY_UUID, MAX_CHUNK_BYTES, NUMERIC_DTYPES, XdfWriter

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MUSE_DIR = DATA_DIR / "muse_eeg_xdf"
MUSE_FILES = sorted(MUSE_DIR.glob("*.xdf")) if MUSE_DIR.is_dir() else []
needs_data = pytest.mark.skipif(
    not MUSE_FILES, reason=f"real LabRecorder recordings not found in {MUSE_DIR} (shared data folder absent)"
)


def _eeg_info(n_channels: int = 4, fmt: str = "float32", name: str = "test-eeg") -> StreamInfo:
    channels = tuple(ChannelInfo(f"E{i}", "microvolts", "EEG") for i in range(n_channels))
    return StreamInfo(name, "EEG", channels, 250.0, fmt, source_id=f"{name}-sid")


def _marker_info(n_channels: int = 1, name: str = "test-markers") -> StreamInfo:
    return StreamInfo.simple(name, "Markers", [f"M{i}" for i in range(n_channels)], 0, channel_format="string")


def _numeric_data(fmt: str, n: int, n_channels: int, seed: int = 0) -> np.ndarray:
    """Values covering the whole range of the format (extremes, NaN, inf, -0.0 for floats)."""
    rng = np.random.default_rng(seed)
    dtype = NUMERIC_DTYPES[fmt]
    if dtype.kind == "f":
        data = rng.standard_normal((n, n_channels)).astype(dtype) * 1e3
        special = [np.nan, np.inf, -np.inf, -0.0, np.finfo(dtype).tiny / 2, np.finfo(dtype).max]
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, size=(n, n_channels), dtype=dtype, endpoint=True)
        special = [info.min, info.max, 0, -1]
    data.flat[: len(special)] = special
    return data


def _timestamps(n: int, start: float = 1000.0, srate: float = 250.0) -> np.ndarray:
    return start + np.arange(n) / srate + np.random.default_rng(n).uniform(0, 1e-3, n)


def _load_raw(path: Path) -> list[dict]:
    streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False, synchronize_clocks=False)
    return streams


def _by_name(streams: list[RecordedStream]) -> dict[str, RecordedStream]:
    return {s.info.name: s for s in streams}


# ------------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("fmt", ["float32", "double64", "int8", "int16", "int32", "int64"])
def test_numeric_round_trip_is_bit_identical(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"{fmt}.xdf"
    info = _eeg_info(5, fmt)
    data = _numeric_data(fmt, 300, 5)
    ts = _timestamps(300)
    with XdfWriter(path) as writer:
        sid = writer.add_stream(info)
        writer.write_samples(sid, data, ts)
        assert writer.sample_counts == {sid: 300}

    # the reference reader, untouched
    (raw,) = _load_raw(path)
    assert raw["time_series"].dtype == data.dtype.newbyteorder("=")
    assert raw["time_series"].tobytes() == data.tobytes()
    np.testing.assert_allclose(raw["time_stamps"], ts, rtol=0, atol=1e-6)

    # our layer
    (rec,) = read_xdf(path, dejitter=False, synchronize_clocks=False)
    assert isinstance(rec.data, np.ndarray)
    assert rec.data.shape == (300, 5)
    assert rec.data.dtype == data.dtype
    assert rec.data.tobytes() == data.tobytes()
    assert rec.timestamps.dtype == np.float64
    assert np.max(np.abs(rec.timestamps - ts)) <= 1e-6
    assert rec.info == info
    assert rec.complete
    assert rec.stream_id == sid


def test_metadata_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "meta.xdf"
    channels = (
        ChannelInfo("Fp1", "microvolts", "EEG"),
        ChannelInfo("EMG <L&R>", "mV", "EMG"),
        ChannelInfo("trig", "", ""),
    )
    info = StreamInfo(
        'amp "A" <1> & co',
        "ExG",
        channels,
        512.5,
        "float32",
        source_id="serial-42",
        desc={"manufacturer": "Acme & Sons"},
    )
    with XdfWriter(path) as writer:
        writer.add_stream(info, created_at=123.5, uid="uid-1", hostname="rig-1")
        writer.write_samples(1, np.zeros((2, 3), np.float32), [1.0, 2.0])
    (rec,) = read_xdf(path)
    assert rec.info == info
    assert rec.info.name == 'amp "A" <1> & co'
    assert rec.info.type == "ExG"
    assert rec.info.srate == 512.5
    assert rec.info.source_id == "serial-42"
    assert rec.info.labels == ["Fp1", "EMG <L&R>", "trig"]
    assert [c.unit for c in rec.info.channels] == ["microvolts", "mV", ""]
    assert [c.type for c in rec.info.channels] == ["EEG", "EMG", ""]
    assert rec.info.desc == {"manufacturer": "Acme & Sons"}
    assert rec.raw_info["uid"] == ["uid-1"]
    assert rec.raw_info["hostname"] == ["rig-1"]
    assert rec.raw_info["version"] == ["1.1"]
    assert float(rec.raw_info["created_at"][0]) == 123.5


def test_string_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "markers.xdf"
    samples = [["start", "ünïcødé ✓"], ["", "x" * 300], ["<xml & stuff>", "line\nbreak"]]
    ts = [10.0, 10.5, 11.25]
    with XdfWriter(path) as writer:
        sid = writer.add_stream(_marker_info(2))
        writer.write_samples(sid, samples[:1], ts[:1])
        writer.write_samples(sid, samples[1:], ts[1:])
    (raw,) = _load_raw(path)
    assert raw["time_series"] == samples
    (rec,) = read_xdf(path)
    assert rec.data == samples
    assert rec.info.is_string
    assert rec.info.labels == ["M0", "M1"]
    assert rec.info.srate == 0
    np.testing.assert_array_equal(rec.timestamps, ts)


def test_multiple_chunks_and_interleaved_streams(tmp_path: Path) -> None:
    path = tmp_path / "multi.xdf"
    eeg = _numeric_data("float32", 1000, 8, seed=1)
    eeg_ts = _timestamps(1000)
    acc = _numeric_data("int16", 200, 3, seed=2)
    acc_ts = _timestamps(200, srate=50.0)
    markers = [[f"m{i}"] for i in range(20)]
    marker_ts = np.sort(np.random.default_rng(3).uniform(1000, 1004, 20))
    with XdfWriter(path) as writer:
        ids = [
            writer.add_stream(_eeg_info(8, name="eeg")),
            writer.add_stream(_marker_info(name="markers")),
            writer.add_stream(StreamInfo.simple("acc", "ACC", ["x", "y", "z"], 50.0, channel_format="int16")),
        ]
        assert ids == [1, 2, 3]
        for k in range(20):  # interleaved, uneven chunk sizes
            e0, e1 = k * 50, (k + 1) * 50
            writer.write_samples(1, eeg[e0:e1], eeg_ts[e0:e1])
            writer.write_samples(2, markers[k : k + 1], marker_ts[k : k + 1])
            a0, a1 = k * 10, (k + 1) * 10
            writer.write_samples(3, acc[a0 : a0 + 3], acc_ts[a0 : a0 + 3])
            writer.write_samples(3, acc[a0 + 3 : a1], acc_ts[a0 + 3 : a1])
        assert writer.sample_counts == {1: 1000, 2: 20, 3: 200}
        assert writer.sample_count(3) == 200

    chunks: list[int] = []

    def count(values, stamps, info, stream_id):
        chunks.append(stream_id)
        return values, stamps, info

    pyxdf.load_xdf(str(path), on_chunk=count, dejitter_timestamps=False)
    assert chunks.count(1) == 20 and chunks.count(2) == 20 and chunks.count(3) == 40

    got = _by_name(read_xdf(path, synchronize_clocks=False))
    assert got["eeg"].data.tobytes() == eeg.tobytes()
    assert got["acc"].data.tobytes() == acc.tobytes()
    assert got["markers"].data == markers
    np.testing.assert_array_equal(got["eeg"].timestamps, eeg_ts)
    np.testing.assert_array_equal(got["acc"].timestamps, acc_ts)
    np.testing.assert_array_equal(got["markers"].timestamps, marker_ts)


def test_large_chunks_are_split(tmp_path: Path) -> None:
    path = tmp_path / "big.xdf"
    n = 3 * MAX_CHUNK_BYTES // (9 + 64 * 4) + 17  # a bit more than 3 chunks' worth of 64-channel float32
    data = _numeric_data("float32", n, 64)
    ts = _timestamps(n, srate=1000.0)
    markers = [["y" * 1000] for _ in range(2500)]  # ~2.5 MB of strings
    with XdfWriter(path) as writer:
        writer.add_stream(_eeg_info(64))
        writer.add_stream(_marker_info())
        writer.write_samples(1, data, ts)
        writer.write_samples(2, markers, np.arange(2500.0))
    sizes: dict[int, list[int]] = {1: [], 2: []}

    def count(values, stamps, info, stream_id):
        sizes[stream_id].append(len(stamps))
        return values, stamps, info

    pyxdf.load_xdf(str(path), on_chunk=count, dejitter_timestamps=False)
    assert len(sizes[1]) == 4 and sum(sizes[1]) == n
    assert len(sizes[2]) == 3 and sum(sizes[2]) == 2500
    eeg, mk = read_xdf(path)
    assert eeg.data.tobytes() == data.tobytes()
    np.testing.assert_array_equal(eeg.timestamps, ts)
    assert mk.data == markers


def test_safe_dtype_conversion_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "cast.xdf"
    data = np.arange(12, dtype=np.int16).reshape(4, 3)
    with XdfWriter(path) as writer:
        writer.add_stream(_eeg_info(3, "float32"))
        writer.add_stream(_eeg_info(3, "double64", name="d"))
        writer.write_samples(1, data, np.arange(4.0))
        writer.write_samples(2, data.astype(">f8"), np.arange(4.0))  # big-endian input is stored little-endian
    a, b = read_xdf(path)
    np.testing.assert_array_equal(a.data, data.astype(np.float32))
    assert a.data.dtype == np.float32
    np.testing.assert_array_equal(b.data, data.astype(np.float64))


def test_empty_streams(tmp_path: Path) -> None:
    path = tmp_path / "empty.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(_eeg_info(6, "int32"))
        writer.add_stream(_marker_info(2))
        size = os.path.getsize(path)
        writer.write_samples(1, np.empty((0, 6), np.int32), np.empty(0))
        writer.write_samples(2, [], [])
        assert os.path.getsize(path) == size  # empty chunks write nothing
        assert writer.sample_counts == {1: 0, 2: 0}
    eeg, mk = read_xdf(path)
    assert isinstance(eeg.data, np.ndarray)
    assert eeg.data.shape == (0, 6) and eeg.data.dtype == np.int32
    assert eeg.timestamps.shape == (0,) and eeg.timestamps.dtype == np.float64
    assert mk.data == [] and len(mk) == 0
    assert eeg.complete and mk.complete


def test_clock_offsets_and_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "clock.xdf"
    data = _numeric_data("float32", 1000, 2)
    ts = 500.0 + np.arange(1000) / 100.0
    with XdfWriter(path) as writer:
        sid = writer.add_stream(StreamInfo.simple("clk", "EEG", ["a", "b"], 100.0))
        for k in range(10):
            sl = slice(k * 100, (k + 1) * 100)
            writer.write_samples(sid, data[sl], ts[sl])
            writer.write_clock_offset(sid, ts[sl][-1], 0.25)
            writer.write_boundary()
    raw = path.read_bytes()
    assert raw.count(BOUNDARY_UUID) == 10
    footer = _load_raw(path)[0]["footer"]["info"]
    assert footer["sample_count"] == ["1000"]
    assert len(footer["clock_offsets"][0]["offset"]) == 10

    (plain,) = read_xdf(path, synchronize_clocks=False)
    np.testing.assert_array_equal(plain.timestamps, ts)
    assert plain.data.tobytes() == data.tobytes()
    np.testing.assert_array_equal(plain.clock_times, ts[99::100])
    np.testing.assert_array_equal(plain.clock_values, np.full(10, 0.25))

    (synced,) = read_xdf(path, synchronize_clocks=True)
    np.testing.assert_allclose(synced.timestamps, ts + 0.25, rtol=0, atol=1e-6)

    (dejittered,) = read_xdf(path, dejitter=True, synchronize_clocks=False)
    np.testing.assert_allclose(dejittered.timestamps, ts, rtol=0, atol=1e-6)


def test_reading_while_the_writer_is_open(tmp_path: Path) -> None:
    path = tmp_path / "live.xdf"
    writer = XdfWriter(path)
    sid = writer.add_stream(_eeg_info(2))
    writer.write_samples(sid, np.ones((10, 2), np.float32), np.arange(10.0))
    (rec,) = read_xdf(path)  # whole chunks only, no footer yet: no warning
    assert len(rec) == 10 and not rec.complete
    writer.close()
    writer.close()  # idempotent
    (rec,) = read_xdf(path)
    assert rec.complete


def test_gzip_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "plain.xdf"
    data = _numeric_data("double64", 200, 3)
    with XdfWriter(path) as writer:
        writer.add_stream(_eeg_info(3, "double64"))
        writer.write_samples(1, data[:100], np.arange(100.0))
        writer.write_samples(1, data[100:], np.arange(100.0, 200.0))
    zipped = tmp_path / "zipped.xdfz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    (rec,) = read_xdf(zipped)
    assert rec.data.tobytes() == data.tobytes()

    cut = tmp_path / "cut.xdf.gz"
    cut.write_bytes(gzip.compress(path.read_bytes()[:-500]))
    with pytest.warns(XdfTruncatedWarning, match="truncated"):
        (rec,) = read_xdf(cut)
    assert rec.data.tobytes() == data[:100].tobytes()


def test_threads_writing_different_streams(tmp_path: Path) -> None:
    path = tmp_path / "threads.xdf"
    n_threads, n_chunks = 4, 200
    with XdfWriter(path) as writer:
        ids = [writer.add_stream(_eeg_info(3, name=f"s{i}")) for i in range(n_threads)]

        def work(sid: int) -> None:
            for k in range(n_chunks):
                values = np.full((5, 3), sid * 10_000 + k, np.float32)
                writer.write_samples(sid, values, np.full(5, float(k)))

        threads = [threading.Thread(target=work, args=(sid,)) for sid in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    for rec in read_xdf(path):
        expected = rec.stream_id * 10_000 + np.repeat(np.arange(n_chunks), 5)
        np.testing.assert_array_equal(rec.data[:, 0], expected)


def test_many_small_chunks_round_trip(tmp_path: Path) -> None:
    """64 channels at 1000 Hz in 20 ms chunks for 60 s (write speed is a benchmark matter, not asserted here)."""
    path = tmp_path / "many.xdf"
    chunk = _numeric_data("float32", 20, 64)
    offsets = np.arange(20) / 1000.0
    with XdfWriter(path) as writer:
        sid = writer.add_stream(_eeg_info(64))
        for k in range(3000):
            writer.write_samples(sid, chunk, 1000.0 + k * 0.02 + offsets)
    (rec,) = read_xdf(path, synchronize_clocks=False)
    assert rec.n_samples == 60_000
    np.testing.assert_array_equal(rec.data[-20:], chunk)
    assert os.path.getsize(path) > 60_000 * (9 + 64 * 4)


# ------------------------------------------------------------------------------------------------ crash safety
_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from acquisition.stream import StreamInfo
    from acquisition.xdf_writer import XdfWriter

    srate, per_chunk, n_ch = 250.0, 25, 8
    writer = XdfWriter(sys.argv[1])
    sid = writer.add_stream(StreamInfo.simple("killed-counter", "EEG", [f"c{i}" for i in range(n_ch)], srate))
    marker = writer.add_stream(StreamInfo.simple("killed-markers", "Markers", ["m"], 0, channel_format="string"))
    t0 = time.monotonic()
    n = 0
    while True:
        deadline = t0 + (n + per_chunk) / srate  # absolute deadline of the chunk's last sample
        time.sleep(max(0.0, deadline - time.monotonic()))
        now = time.monotonic()
        counter = np.arange(n, n + per_chunk, dtype=np.float32)
        values = np.repeat(counter[:, None], n_ch, axis=1)
        stamps = t0 + np.arange(n, n + per_chunk) / srate  # sample clock: monotonic even when a write runs late
        writer.write_samples(sid, values, stamps)
        writer.write_samples(marker, [[f"chunk {n // per_chunk}"]], [now])
        n += per_chunk
        if n % (10 * per_chunk) == 0:
            writer.write_clock_offset(sid, now, 0.0)
        print(n, repr(now), flush=True)
    """
)


def test_sigkill_leaves_a_readable_file_without_gaps(tmp_path: Path) -> None:
    path = tmp_path / "killed.xdf"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    reported = 0
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 30.0
        while reported < 2 * 250:  # at least 2 s of data written
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"writer subprocess wrote only {reported} samples in 30 s"
            if sel.select(timeout=remaining):
                line = proc.stdout.readline()
                assert line, f"writer subprocess exited early: {proc.stderr.read()}"
                reported = int(line.split()[0])
        kill_time = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()

    streams = _by_name(read_xdf(path, synchronize_clocks=False))  # no XdfTruncatedWarning: whole chunks only
    eeg = streams["killed-counter"]
    assert not eeg.complete  # no footer after SIGKILL
    counter = eeg.data[:, 0]
    np.testing.assert_array_equal(counter, np.arange(len(counter), dtype=np.float32))  # from 0, no gap
    np.testing.assert_array_equal(eeg.data, np.repeat(counter[:, None], 8, axis=1))
    assert len(counter) >= reported  # everything the writer reported is on disk
    assert len(counter) % 25 == 0  # whole chunks only
    assert np.all(np.diff(eeg.timestamps) > 0)
    # every sample stamped up to 1 s before the kill is there (the next one would be later than that)
    assert eeg.timestamps[-1] + 1 / 250 > kill_time - 1.0
    assert len(streams["killed-markers"].data) == len(counter) // 25


def test_failed_write_is_rolled_back_to_a_chunk_boundary(tmp_path: Path) -> None:
    """A write cut short by the file-size limit (like a full disk) must not leave half a chunk behind."""
    path = tmp_path / "full.xdf"
    script = textwrap.dedent(
        """
        import resource, signal, sys
        import numpy as np
        from acquisition.stream import StreamInfo
        from acquisition.xdf_writer import XdfWriter

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        writer = XdfWriter(sys.argv[1])
        sid = writer.add_stream(StreamInfo.simple("full", "EEG", ["a", "b", "c"], 100.0))
        n = 0
        try:
            while True:
                writer.write_samples(sid, np.full((37, 3), n, np.float32), np.arange(n, n + 37.0))
                n += 37
        except OSError as exc:
            print(n, exc.errno, flush=True)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    written = int(out.stdout.split()[0])
    assert 0 < written and path.stat().st_size <= 100_000
    (rec,) = read_xdf(path, allow_truncated=False)
    assert len(rec) == written


# ------------------------------------------------------------------------------------------------ error paths
def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.xdf"
    with pytest.raises(FileNotFoundError, match=r"nope\.xdf"):
        read_xdf(missing)
    with pytest.raises(IsADirectoryError, match="folder"):
        read_xdf(tmp_path)
    with pytest.raises(TypeError, match="path"):
        read_xdf(123)  # type: ignore[arg-type]


@pytest.mark.parametrize("content", [b"", b"XD", b"XDF:", b"<?xml version='1.0'?>", bytes(range(256)) * 40])
def test_not_xdf(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.xdf"
    path.write_bytes(content)
    with pytest.raises(XdfFormatError, match=r"junk\.xdf"):
        read_xdf(path)


def test_random_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    path = tmp_path / "random.xdf"
    path.write_bytes(rng.integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    with pytest.raises(XdfFormatError, match="not an XDF file"):
        read_xdf(path)
    path.write_bytes(b"XDF:" + rng.integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    with pytest.raises(XdfFormatError, match=r"random\.xdf"):
        read_xdf(path)


def _valid_file(path: Path) -> tuple[np.ndarray, list[list[str]]]:
    data = _numeric_data("float32", 120, 3)
    markers = [[f"m{i}"] for i in range(6)]
    with XdfWriter(path) as writer:
        writer.add_stream(_eeg_info(3, name="eeg"))
        writer.add_stream(_marker_info(name="markers"))
        for k in range(6):
            writer.write_samples(1, data[k * 20 : (k + 1) * 20], np.arange(k * 20, (k + 1) * 20) / 250)
            writer.write_samples(2, markers[k : k + 1], [k * 0.08])
    return data, markers


def test_truncated_mid_chunk_loads_the_whole_chunks(tmp_path: Path) -> None:
    full = tmp_path / "full.xdf"
    data, markers = _valid_file(full)
    raw = full.read_bytes()
    cut = tmp_path / "cut.xdf"
    seen = set()
    warned = 0
    # every 7th byte: hits headers, length fields, footers and, in every chunk, the 12 value bytes of its last
    # sample (where plain pyxdf would silently return stale values)
    for at in range(200, len(raw), 7):
        cut.write_bytes(raw[:at])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            streams = read_xdf(cut, synchronize_clocks=False)
        for w in caught:  # a cut exactly at a chunk boundary gives no warning
            assert w.category is XdfTruncatedWarning
            assert re.search(r"cut\.xdf.* is truncated: it ends inside .* of chunk \d+", str(w.message))
        warned += bool(caught)
        got = _by_name(streams)
        if "eeg" in got:
            n = len(got["eeg"])
            assert n % 20 == 0
            assert got["eeg"].data.tobytes() == data[:n].tobytes()  # no stale or partial sample
            seen.add(n)
        if "markers" in got:
            assert got["markers"].data == markers[: len(got["markers"])]
    assert len(seen) >= 5
    assert warned >= (len(raw) - 200) // 7 - 10


def test_truncation_refused_when_not_allowed(tmp_path: Path) -> None:
    full = tmp_path / "full.xdf"
    _valid_file(full)
    cut = tmp_path / "cut.xdf"
    cut.write_bytes(full.read_bytes()[:-10])
    with pytest.raises(XdfFormatError, match=r"cut\.xdf.*truncated.*allow_truncated=True"):
        read_xdf(cut, allow_truncated=False)
    cut.write_bytes(full.read_bytes()[:30])  # inside the FileHeader: nothing to read
    with pytest.raises(XdfFormatError, match=r"FileHeader.*truncated"):
        read_xdf(cut)


def test_corruption_in_the_middle_is_refused(tmp_path: Path) -> None:
    full = tmp_path / "full.xdf"
    _valid_file(full)
    raw = bytearray(full.read_bytes())
    first_samples = raw.index(b"\x03\x00\x01\x00\x00\x00")  # tag 3 of stream 1
    bad = tmp_path / "bad.xdf"
    raw_bad = bytearray(raw)
    raw_bad[first_samples - 5] = 7  # the chunk's length-size byte
    bad.write_bytes(bytes(raw_bad))
    with pytest.raises(XdfFormatError, match=r"bad\.xdf.*corrupted at chunk 4.*length-size byte"):
        read_xdf(bad)
    raw_bad = bytearray(raw)
    raw_bad[first_samples + 2] = 9  # stream id 9 was never declared
    bad.write_bytes(bytes(raw_bad))
    with pytest.raises(XdfFormatError, match="stream id 9"):
        read_xdf(bad)


def test_writer_refuses_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "exists.xdf"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"exists\.xdf.*overwrite=True"):
        XdfWriter(path)
    assert path.read_bytes() == b"precious"
    with XdfWriter(path, overwrite=True) as writer:
        writer.add_stream(_eeg_info())
    assert read_xdf(path)[0].info == _eeg_info()
    with pytest.raises(TypeError, match="path"):
        XdfWriter(3)  # type: ignore[arg-type]


def test_write_samples_validation(tmp_path: Path) -> None:
    with XdfWriter(tmp_path / "v.xdf") as writer:
        sid = writer.add_stream(_eeg_info(4))
        mk = writer.add_stream(_marker_info(2))
        with pytest.raises(ValueError, match=r"shape \(n_samples, 4\).*\(10, 3\)"):
            writer.write_samples(sid, np.zeros((10, 3), np.float32), np.arange(10.0))
        with pytest.raises(ValueError, match=r"shape \(n_samples, 4\)"):
            writer.write_samples(sid, np.zeros(4, np.float32), [0.0])
        with pytest.raises(TypeError, match="ndarray"):
            writer.write_samples(sid, [[0.0] * 4], [0.0])
        with pytest.raises(TypeError, match=r"float32.*float64.*astype"):
            writer.write_samples(sid, np.zeros((2, 4)), [0.0, 1.0])
        with pytest.raises(ValueError, match=r"timestamps.*\(2,\).*\(3,\)"):
            writer.write_samples(sid, np.zeros((2, 4), np.float32), [0.0, 1.0, 2.0])
        with pytest.raises(ValueError, match="finite"):
            writer.write_samples(sid, np.zeros((2, 4), np.float32), [0.0, np.nan])
        with pytest.raises(ValueError, match="2 str"):
            writer.write_samples(mk, [["only one"]], [0.0])
        with pytest.raises(TypeError, match="must be str"):
            writer.write_samples(mk, [["a", 3]], [0.0])
        with pytest.raises(TypeError, match="list of samples"):
            writer.write_samples(mk, "a", [0.0])
        with pytest.raises(ValueError, match=r"stream_id.*add_stream"):
            writer.write_samples(99, np.zeros((1, 4), np.float32), [0.0])
        with pytest.raises(TypeError, match="stream_id"):
            writer.write_samples("1", np.zeros((1, 4), np.float32), [0.0])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="finite"):
            writer.write_clock_offset(sid, 1.0, np.inf)
        with pytest.raises(ValueError, match="XML element names"):
            writer.add_stream(StreamInfo("x", "y", (ChannelInfo("a"),), 1.0, desc={"bad key": "v"}))
        with pytest.raises(TypeError, match="StreamInfo"):
            writer.add_stream("eeg")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="control character"):
            writer.add_stream(StreamInfo.simple("bell\x07", "EEG", ["a"], 1.0))
        assert writer.sample_counts == {sid: 0, mk: 0}
    # nothing of the refused calls reached the file
    eeg, markers = read_xdf(tmp_path / "v.xdf")
    assert len(eeg) == 0 and len(markers) == 0


def test_closed_writer_refuses_everything(tmp_path: Path) -> None:
    writer = XdfWriter(tmp_path / "c.xdf")
    sid = writer.add_stream(_eeg_info(2))
    writer.close()
    assert writer.closed
    with pytest.raises(RuntimeError, match=r"closed writer.*new XdfWriter"):
        writer.write_samples(sid, np.zeros((1, 2), np.float32), [0.0])
    with pytest.raises(RuntimeError, match="closed"):
        writer.write_samples(sid, np.zeros((0, 2), np.float32), [])
    with pytest.raises(RuntimeError, match="closed"):
        writer.add_stream(_eeg_info(2))
    with pytest.raises(RuntimeError, match="closed"):
        writer.write_clock_offset(sid, 0.0, 0.0)
    with pytest.raises(RuntimeError, match="closed"):
        writer.write_boundary()
    with pytest.raises(RuntimeError, match="closed"):
        writer.fsync()
    writer.close()


# ------------------------------------------------------------------------------------------------ real recordings
@needs_data
@pytest.mark.parametrize("path", MUSE_FILES, ids=lambda p: p.name[:8])
def test_muse_labrecorder_files(path: Path) -> None:
    streams = read_xdf(path)
    assert len(streams) == 4
    by_type = {s.info.type: s for s in streams}
    assert set(by_type) == {"EEG", "ACC", "GYRO", "PPG"}
    eeg = by_type["EEG"]
    assert eeg.info.labels == ["TP9", "AF7", "AF8", "TP10", "AUX_RIGHT"]
    assert eeg.info.srate == 256.0
    assert eeg.info.channel_format == "float32"
    assert by_type["PPG"].info.labels == ["LUX", "IR", "RED"]
    assert by_type["ACC"].info.desc == {"manufacturer": "Muse"}
    for s in streams:
        assert s.complete
        assert isinstance(s.data, np.ndarray)
        assert s.data.shape == (len(s.timestamps), s.info.n_channels)
        assert s.data.dtype == np.float32
        if len(s) == 0:
            assert s.data.shape == (0, s.info.n_channels)
    assert len(eeg) > 1000


@needs_data
@pytest.mark.parametrize("path", MUSE_FILES, ids=lambda p: p.name[:8])
def test_muse_rewrite_is_identical(tmp_path: Path, path: Path) -> None:
    original = read_xdf(path, dejitter=False, synchronize_clocks=False)
    copy = tmp_path / "copy.xdf"
    with XdfWriter(copy) as writer:
        for s in original:
            sid = writer.add_stream(s.info)
            writer.write_samples(sid, s.data, s.timestamps)
            for t, v in zip(s.clock_times, s.clock_values, strict=True):
                writer.write_clock_offset(sid, t, v)
    again = read_xdf(copy, dejitter=False, synchronize_clocks=False)
    assert len(again) == len(original)
    for a, b in zip(original, again, strict=True):
        assert a.info == b.info
        assert a.info.desc == b.info.desc
        assert a.data.dtype == b.data.dtype
        assert a.data.shape == b.data.shape
        assert a.data.tobytes() == b.data.tobytes()
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_array_equal(a.clock_times, b.clock_times)
        np.testing.assert_array_equal(a.clock_values, b.clock_values)
