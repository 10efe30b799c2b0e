"""RingBuffer: counters, wrap-around, overflow accounting, gaps, concurrent reader validation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acquisition.ringbuffer import RingBuffer


def _chunk(start: int, n: int, ch: int = 3, srate: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(start, start + n)
    data = np.repeat(idx[:, None], ch, axis=1).astype(np.float32)
    return data, idx / srate


def test_write_and_read_since_returns_exact_samples() -> None:
    rb = RingBuffer(16, 3, 100.0)
    rb.write(*_chunk(0, 5))
    r = rb.read_since(0)
    assert (r.start, r.end, r.lost) == (0, 5, 0)
    np.testing.assert_array_equal(r.data[:, 0], np.arange(5))
    rb.write(*_chunk(5, 7))
    r2 = rb.read_since(r.end)
    np.testing.assert_array_equal(r2.data[:, 2], np.arange(5, 12))
    np.testing.assert_allclose(r2.timestamps, np.arange(5, 12) / 100.0)


def test_wraparound_and_latest() -> None:
    rb = RingBuffer(10, 3, 100.0)
    for k in range(0, 37, 4):
        rb.write(*_chunk(k, 4))
    assert rb.counter == 40
    last = rb.latest(7)
    np.testing.assert_array_equal(last.data[:, 1], np.arange(33, 40))
    assert last.end == 40
    assert rb.latest(0).data.shape == (0, 3)
    with pytest.raises(ValueError, match="capacity"):
        rb.latest(11)


def test_reader_that_falls_behind_is_told_how_much_it_lost() -> None:
    rb = RingBuffer(10, 3, 100.0)
    rb.write(*_chunk(0, 25))
    r = rb.read_since(0)
    assert r.lost == 15 and r.start == 15 and len(r) == 10
    np.testing.assert_array_equal(r.data[:, 0], np.arange(15, 25))
    assert rb.n_overflow_writes == 1


def test_max_samples_pages_through_data() -> None:
    rb = RingBuffer(64, 3, 100.0)
    rb.write(*_chunk(0, 50))
    got, pos = [], 0
    while True:
        r = rb.read_since(pos, max_samples=7)
        if not len(r):
            break
        got.append(r.data[:, 0])
        pos = r.end
    np.testing.assert_array_equal(np.concatenate(got), np.arange(50))


def test_bad_shapes_and_counters_are_refused() -> None:
    rb = RingBuffer(10, 3)
    with pytest.raises(ValueError, match=r"shape \(n_samples, 3\)"):
        rb.write(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="timestamps must have shape"):
        rb.write(np.zeros((4, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="ahead of the write counter"):
        rb.read_since(5)
    with pytest.raises(ValueError):
        RingBuffer(0, 3)
    with pytest.raises(TypeError):
        RingBuffer(10.5, 3)  # type: ignore[arg-type]
    assert rb.write(np.zeros((0, 3)), np.zeros(0)) == 0  # empty chunk is a no-op


def test_gap_detection_counts_timestamp_jumps() -> None:
    rb = RingBuffer(100, 1, 100.0)
    rb.write(np.zeros((10, 1)), np.arange(10) / 100.0)
    rb.write(np.zeros((10, 1)), 0.5 + np.arange(10) / 100.0)  # jump of 0.41 s
    assert rb.n_gaps == 1
    assert rb.gaps[0].counter == 10
    assert rb.gap_seconds == pytest.approx(0.40, abs=1e-9)
    rb.write(np.zeros((5, 1)), 0.6 + np.arange(5) / 100.0)  # continuous: 0.59 -> 0.60
    assert rb.n_gaps == 1


def test_wait_for_wakes_on_write_and_times_out() -> None:
    rb = RingBuffer(10, 1)
    assert rb.wait_for(0, timeout=0.01) is False
    t = threading.Timer(0.05, lambda: rb.write(np.zeros((1, 1)), np.zeros(1)))
    t.start()
    assert rb.wait_for(0, timeout=5.0) is True
    t.join()


def test_concurrent_reader_never_sees_torn_or_duplicated_samples() -> None:
    """One writer, two readers: each reader sees a contiguous counter (or is told what it lost)."""
    rb = RingBuffer(257, 4, 1000.0)
    total = 200_000
    errors: list[str] = []

    def reader() -> None:
        pos = 0
        while pos < total:
            rb.wait_for(pos, timeout=1.0)
            r = rb.read_since(pos)
            if r.start != pos + r.lost:
                errors.append(f"lost count wrong at {pos}: start={r.start} lost={r.lost}")
                return
            if len(r):  # the value of every sample is its counter index: any torn or stale slot shows
                vals = r.data[:, 0].astype(np.int64)
                if vals[0] != r.start or np.any(np.diff(vals) != 1) or np.any(r.data[:, 3] != r.data[:, 0]):
                    errors.append(f"torn read at {pos}: start={r.start} first={vals[0]} lost={r.lost}")
                    return
            pos = r.end

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for th in readers:
        th.start()
    for k in range(0, total, 100):
        rb.write(*_chunk(k, 100, ch=4, srate=1000.0))
    for th in readers:
        th.join(30)
    assert not errors, errors
    assert not any(th.is_alive() for th in readers)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30), st.integers(1, 50))
def test_any_chunking_gives_the_same_stream(chunks: list[int], capacity: int) -> None:
    rb = RingBuffer(capacity, 2, 0.0)
    start = 0
    for n in chunks:
        rb.write(*_chunk(start, n, ch=2))
        start += n
    r = rb.read_since(0)
    assert r.end == start
    assert r.lost == max(0, start - capacity)
    np.testing.assert_array_equal(r.data[:, 0], np.arange(r.start, r.end))
