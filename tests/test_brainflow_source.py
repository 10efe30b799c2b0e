"""BrainFlowSource against the real BrainFlow synthetic board, and ClockMapper with fake clocks.

Every board session gets a unique ``other_info`` so BrainFlow (which keys sessions by board id
and parameters) never confuses sessions of different tests. Tests wait on conditions with
deadlines, never on blind sleeps.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pylsl
import pytest
from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams, BrainFlowPresets

from acquisition.brainflow_source import BrainFlowSource, BrainFlowStreamStats, count_package_gaps, list_boards
from acquisition.clock import ClockEstimate, ClockMapper
from acquisition.ringbuffer import RingBuffer

pytestmark = pytest.mark.timeout(60)

SYNTH = BoardIds.SYNTHETIC_BOARD.value
SYNTH_DESCR = BoardShim.get_board_descr(SYNTH)


# ---------------------------------------------------------------------------------------------- helpers
def unique() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, buf: RingBuffer | None = None) -> None:
    """Wait until ``predicate()`` holds, waking on new data in ``buf`` (or an Event wait), with a deadline."""
    deadline = pylsl.local_clock() + timeout
    idle = threading.Event()
    while not predicate():
        remaining = deadline - pylsl.local_clock()
        if remaining <= 0:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        if buf is not None:
            buf.wait_for(buf.counter, min(remaining, 0.2))
        else:
            idle.wait(min(remaining, 0.01))


def wait_samples(src: BrainFlowSource, n: int, timeout: float = 5.0) -> None:
    buf = src.stream.buffer
    assert isinstance(buf, RingBuffer)
    wait_until(lambda: buf.counter >= n, timeout, f"{n} samples from {src.name!r}", buf)


def independent_offset(n: int = 5000) -> tuple[float, float]:
    """``local_clock - time.time`` from many interleaved reads: median over the tightest 10 % of brackets."""
    mids = np.empty(n)
    unix = np.empty(n)
    widths = np.empty(n)
    for i in range(n):
        a = pylsl.local_clock()
        u = time.time()
        b = pylsl.local_clock()
        mids[i], unix[i], widths[i] = 0.5 * (a + b), u, b - a
    tight = widths <= np.quantile(widths, 0.1)
    return float(np.median(mids[tight] - unix[tight])), float(np.median(widths[tight]) / 2)


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[BrainFlowSource, list[BaseException]]]:
    """One synthetic board streaming for the read-only tests of this module."""
    errors: list[BaseException] = []
    src = BrainFlowSource(
        name=unique(), params={"other_info": unique()}, on_error=lambda s, exc, tb: errors.append(exc)
    )
    src.start()
    try:
        wait_samples(src, 1)
        yield src, errors
    finally:
        src.close()


# ---------------------------------------------------------------------------------------------- fake clocks
class FakeClocks:
    """Deterministic local and foreign clocks.

    Every read advances the local time by ``read_cost`` s. True offset ``local - foreign`` is
    ``offset + drift * (local - t0) + step``; ``bump`` is added to foreign reads only (an outlier),
    ``delays`` (consumed one per foreign read) stall the clock after a foreign read (preemption).
    """

    def __init__(self, offset: float = 12.5, drift: float = 0.0, read_cost: float = 1e-6, t0: float = 1000.0):
        self.t = t0
        self.t0 = t0
        self.offset = offset
        self.drift = drift
        self.read_cost = read_cost
        self.step = 0.0
        self.bump = 0.0
        self.delays: list[float] = []

    def true_offset(self, local: float) -> float:
        return self.offset + self.drift * (local - self.t0) + self.step

    def local(self) -> float:
        t = self.t
        self.t += self.read_cost
        return t

    def foreign(self) -> float:
        f = self.t - self.true_offset(self.t) + self.bump
        self.t += self.read_cost + (self.delays.pop(0) if self.delays else 0.0)
        return f

    def mapper(self, **kwargs: object) -> ClockMapper:
        return ClockMapper(self.foreign, self.local, **kwargs)  # type: ignore[arg-type]

    def run(self, mapper: ClockMapper, seconds: float, dt: float = 0.5) -> None:
        """Advance time by ``seconds`` in steps of ``dt``, calling ``update()`` at each step."""
        end = self.t + seconds
        while self.t < end:
            self.t += dt
            mapper.update()


# ---------------------------------------------------------------------------------------------- ClockMapper
def test_clock_mapper_offset_and_uncertainty() -> None:
    clk = FakeClocks(offset=-1.7e9, read_cost=2e-6)
    m = clk.mapper(n_reads=4)
    assert m.update(force=True)
    assert m.offset == pytest.approx(-1.7e9, abs=1e-6)
    assert m.uncertainty_s == pytest.approx(2e-6)  # half the bracket local, foreign, local = 2 reads
    foreign = np.array([100.0, 100.004, 100.008]) + 1.7e9
    np.testing.assert_allclose(m.map(foreign), foreign - 1.7e9, atol=1e-6)
    assert m.map(foreign).dtype == np.float64


def test_clock_mapper_keeps_the_narrowest_bracket() -> None:
    clk = FakeClocks(offset=3.0, read_cost=1e-6)
    clk.delays = [0.010, 0.004, 0.0, 0.020]  # reads 0, 1 and 3 were preempted after the foreign read
    m = clk.mapper(n_reads=4)
    m.update(force=True)
    assert m.offset == pytest.approx(3.0, abs=2e-6)
    assert m.uncertainty_s == pytest.approx(1e-6)


def test_clock_mapper_before_first_estimate_raises() -> None:
    m = FakeClocks().mapper()
    assert not m.ready
    with pytest.raises(RuntimeError, match="update"):
        m.map(np.array([1.0]))
    with pytest.raises(RuntimeError, match="update"):
        _ = m.offset


def test_clock_mapper_schedule_uses_absolute_deadlines() -> None:
    clk = FakeClocks(read_cost=0.0)
    m = clk.mapper(interval_s=5.0)
    clk.t = 0.0
    assert m.update()  # first call is always due
    assert m.next_due == pytest.approx(5.0)
    clk.t = 4.9
    assert not m.update()
    clk.t = 5.3  # late: the next deadline stays on the 5 s grid
    assert m.update()
    assert m.next_due == pytest.approx(10.0)
    clk.t = 100.0  # very late: restart the grid from now
    assert m.update()
    assert m.next_due == pytest.approx(105.0)


def test_clock_mapper_rejects_outliers_with_the_median() -> None:
    clk = FakeClocks(offset=7.0)
    m = clk.mapper(interval_s=1.0, window=9, fit_drift=False)
    clk.run(m, 5.0)
    clk.bump = 0.004  # below the step threshold: enters the window, the median ignores it
    clk.t += 1.0
    assert m.update()
    clk.bump = 0.0
    assert m.offset == pytest.approx(7.0, abs=2e-6)
    clk.bump = 0.5  # far off, with a narrow bracket: held back as a step suspect, then dropped
    clk.t += 1.0
    assert m.update()
    clk.bump = 0.0
    assert m.offset == pytest.approx(7.0, abs=2e-6)
    clk.run(m, 2.0)
    assert m.n_rejected == 1
    assert m.n_steps == 0
    assert m.offset == pytest.approx(7.0, abs=2e-6)


def test_clock_mapper_fits_drift() -> None:
    drift = 50e-6  # 50 ppm, e.g. an undisciplined host clock against NTP time
    clk = FakeClocks(offset=-3.0, drift=drift)
    with_drift = clk.mapper(interval_s=5.0, window=12, fit_drift=True, min_drift_span_s=30.0)
    clk2 = FakeClocks(offset=-3.0, drift=drift)
    no_drift = clk2.mapper(interval_s=5.0, window=12, fit_drift=False)
    clk.run(with_drift, 120.0)
    clk2.run(no_drift, 120.0)
    assert with_drift.drift == pytest.approx(drift, rel=1e-3)
    now = clk.t
    foreign_now = now - clk.true_offset(now)
    err = abs(float(with_drift.map(np.array([foreign_now]))[0]) - now)
    assert err < 5e-6
    # The median alone lags by about half the window (30 s x 50 ppm = 1.5 ms).
    now2 = clk2.t
    err2 = abs(float(no_drift.map(np.array([now2 - clk2.true_offset(now2)]))[0]) - now2)
    assert err2 > 1e-3
    assert no_drift.drift == 0.0


def test_clock_mapper_drift_fit_ignores_an_outlier() -> None:
    clk = FakeClocks(offset=1.0, drift=20e-6)
    m = clk.mapper(interval_s=5.0, window=12, min_drift_span_s=30.0)
    clk.run(m, 40.0)
    clk.bump = 0.006
    clk.t += 5.0
    m.update(force=True)
    clk.bump = 0.0
    clk.run(m, 20.0)
    assert m.drift == pytest.approx(20e-6, rel=0.05)
    assert m.offset_at(clk.t) == pytest.approx(clk.true_offset(clk.t), abs=2e-5)


def test_clock_mapper_follows_a_confirmed_step() -> None:
    clk = FakeClocks(offset=5.0)
    m = clk.mapper(interval_s=1.0, step_confirm=2, fit_drift=False)
    clk.run(m, 6.0)
    clk.step = -2.0  # the foreign (wall) clock is set forward by 2 s
    clk.t += 1.0
    m.update()
    assert m.offset == pytest.approx(5.0, abs=1e-5)  # one estimate is not enough
    clk.t += 1.0
    m.update()
    assert m.n_steps == 1
    assert m.offset == pytest.approx(3.0, abs=1e-5)
    assert len(m.estimates) == 2


def test_clock_mapper_validates_input() -> None:
    clk = FakeClocks()
    with pytest.raises(ValueError, match="window"):
        clk.mapper(window=0)
    with pytest.raises(TypeError, match="callable"):
        ClockMapper(foreign_clock=1.0)  # type: ignore[arg-type]
    m = clk.mapper()
    with pytest.raises(ValueError, match="finite"):
        m.add(ClockEstimate(local_time=1.0, offset=float("nan"), half_bracket=0.0))
    backwards = iter([10.0, 0.0, 9.0])
    m2 = ClockMapper(lambda: 0.0, lambda: next(backwards), n_reads=1)
    with pytest.raises(RuntimeError, match="backwards"):
        m2.measure()


def test_count_package_gaps() -> None:
    assert count_package_gaps(np.array([254, 255, 0, 1]), 253, 256) == (0, 0)
    assert count_package_gaps(np.array([1, 2, 5, 6]), None, 256) == (2, 1)
    assert count_package_gaps(np.array([254, 1]), None, 256) == (2, 1)  # lost 255 and 0 across the wrap
    assert count_package_gaps(np.array([3, 3, 4]), 2, 256) == (0, 0)  # a repeated number is not a loss
    assert count_package_gaps(np.array([9]), 7, 256) == (1, 1)
    assert count_package_gaps(np.array([9]), None, 256) == (0, 0)


# ---------------------------------------------------------------------------------------------- validation
def test_unknown_param_key_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown key 'serial'.*'serial_port'"):
        BrainFlowSource(params={"serial": "/dev/ttyUSB0"})


def test_param_of_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match=r"params\['ip_port'\] must be int"):
        BrainFlowSource(params={"ip_port": "6677"})


def test_invalid_board_id_is_refused() -> None:
    with pytest.raises(ValueError, match=r"board_id .* got 12345.*closedloop devices"):
        BrainFlowSource(board_id=12345)
    with pytest.raises(TypeError, match="board_id"):
        BrainFlowSource(board_id="synthetic")  # type: ignore[arg-type]


def test_playback_board_needs_master_board() -> None:
    with pytest.raises(ValueError, match="master_board"):
        BrainFlowSource(board_id=BoardIds.PLAYBACK_FILE_BOARD)


def test_missing_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="ANCILLARY_PRESET"):
        BrainFlowSource(params={"other_info": unique()}, preset=BrainFlowPresets.ANCILLARY_PRESET).open()


def test_unreachable_board_gives_a_clear_error() -> None:
    src = BrainFlowSource(board_id=BoardIds.CYTON_BOARD, params={"serial_port": f"/dev/{unique()}"})
    with pytest.raises(RuntimeError, match=r"CYTON_BOARD.*UNABLE_TO_OPEN_PORT_ERROR, code 2"):
        src.open()
    src.close()  # nothing was prepared: still fine


def test_list_boards_includes_the_synthetic_board() -> None:
    boards = list_boards()
    synth = [b for b in boards if b["id"] == SYNTH]
    assert synth == [{"id": SYNTH, "enum": "SYNTHETIC_BOARD", "name": "Synthetic", "sampling_rate": 250.0, "n_eeg": 16}]
    assert all(b["id"] != BoardIds.NO_BOARD.value for b in boards)
    assert len(boards) > 10


# ---------------------------------------------------------------------------------------------- real board
def test_stream_info_matches_the_board_description(running: tuple[BrainFlowSource, list[BaseException]]) -> None:
    src, _ = running
    info = src.stream.info
    n_rows = SYNTH_DESCR["num_rows"]
    assert info.n_channels == n_rows - 2  # all rows but package number and timestamp
    assert info.labels[:16] == SYNTH_DESCR["eeg_names"].split(",")
    assert info.type == "EEG"
    assert info.srate == SYNTH_DESCR["sampling_rate"]
    assert info.source_id == f"brainflow-{SYNTH}-synthetic"
    assert {c.unit for c in info.channels[:16]} == {"microvolts"}
    types = [c.type for c in info.channels]
    assert types.count("Accel") == len(SYNTH_DESCR["accel_channels"])
    assert types.count("Gyro") == len(SYNTH_DESCR["gyro_channels"])
    assert types.count("PPG") == len(SYNTH_DESCR["ppg_channels"])
    assert types[-2:] == ["Battery", "Marker"]  # rows 29 and 31 around the timestamp row 30
    assert [c.label for c in info.channels if c.type == "Accel"] == ["AccelX", "AccelY", "AccelZ"]


def test_data_flows_at_the_nominal_rate(running: tuple[BrainFlowSource, list[BaseException]]) -> None:
    src, errors = running
    buf = src.stream.buffer
    assert isinstance(buf, RingBuffer)
    buf.wait_for(buf.counter, 1.0)
    c0, t0 = buf.counter, pylsl.local_clock()
    wait_until(lambda: pylsl.local_clock() - t0 >= 2.2, 5.0, "2.2 s of data", buf)
    buf.wait_for(buf.counter, 1.0)
    c1, t1 = buf.counter, pylsl.local_clock()
    rate = (c1 - c0) / (t1 - t0)
    nominal = SYNTH_DESCR["sampling_rate"]
    assert rate == pytest.approx(nominal, rel=0.05)
    r = buf.read_since(c0)
    assert r.lost == 0
    assert r.data.shape == (c1 - c0, src.stream.info.n_channels)
    ts_rate = (len(r) - 1) / (r.timestamps[-1] - r.timestamps[0])
    assert ts_rate == pytest.approx(nominal, rel=0.05)
    assert np.isfinite(r.data).all()
    stats = src.stream.stats
    assert isinstance(stats, BrainFlowStreamStats)
    assert stats.connected
    assert stats.n_dropped_samples == 0 and stats.n_package_gaps == 0
    assert errors == []


def test_timestamps_are_on_local_clock(running: tuple[BrainFlowSource, list[BaseException]]) -> None:
    src, errors = running
    buf = src.stream.buffer
    assert isinstance(buf, RingBuffer)
    wait_samples(src, 300)
    buf.wait_for(buf.counter, 1.0)
    now = pylsl.local_clock()
    r = buf.read_since(0)
    assert np.all(np.diff(r.timestamps) > 0), "mapped timestamps must be strictly increasing"
    assert r.timestamps[-1] <= now + 0.005, "newest sample is in the future"
    assert r.timestamps[-1] >= now - 0.5, "newest sample is implausibly old"
    stats = src.stream.stats
    assert isinstance(stats, BrainFlowStreamStats)
    assert stats.max_lead_s <= 0.005, f"a chunk's newest sample was {stats.max_lead_s * 1e3:.2f} ms after receipt"

    ref, ref_unc = independent_offset()
    mapped = src.clock.offset_at(pylsl.local_clock())
    error = abs(mapped - ref)
    print(
        f"\nClockMapper offset {mapped:.6f} s, independent {ref:.6f} s: mapping error {error * 1e9:.0f} ns "
        f"(mapper uncertainty {src.clock.uncertainty_s * 1e9:.0f} ns, reference {ref_unc * 1e9:.0f} ns)"
    )
    assert error < 0.005
    assert stats.clock_offset == pytest.approx(mapped, abs=0.005)
    assert errors == []


def test_stop_releases_the_session_and_start_prepares_again() -> None:
    params = {"other_info": unique()}
    first = BrainFlowSource(name=unique(), params=params)
    second = BrainFlowSource(name=unique(), params=params)
    try:
        first.start()
        wait_samples(first, 10)
        with pytest.raises(RuntimeError, match="ANOTHER_BOARD_IS_CREATED_ERROR"):
            second.open()
        first.stop()
        assert first.error is None
        second.open()  # the first session was released by stop()
        second.close()
        counter = first.stream.buffer.counter
        first.start()  # prepares the session again
        wait_samples(first, counter + 10)
        first.close()
        second.open()
        second.close()
    finally:
        first.close()
        second.close()


def test_a_failed_open_leaves_the_other_sources_session_alone() -> None:
    params = {"other_info": unique()}
    owner = BrainFlowSource(name=unique(), params=params)
    try:
        owner.start()
        wait_samples(owner, 10)
        intruder = BrainFlowSource(name=unique(), params=params)
        with pytest.raises(RuntimeError, match="ANOTHER_BOARD_IS_CREATED_ERROR"):
            intruder.open()
        intruder.close()
        del intruder
        gc.collect()  # BrainFlow's own BoardShim finaliser would release the owner's session here
        wait_samples(owner, owner.stream.buffer.counter + 25)
        assert owner.error is None
    finally:
        owner.close()


def test_close_without_start_releases_the_session() -> None:
    params = {"other_info": unique()}
    first = BrainFlowSource(params=params)
    first.open()
    first.close()
    first.close()  # twice is fine
    second = BrainFlowSource(params=params)
    second.open()
    second.close()


def test_thread_error_reaches_on_error_and_the_session_is_released() -> None:
    params = {"other_info": unique()}
    failed = threading.Event()
    seen: list[BaseException] = []

    def on_error(source: object, exc: BaseException, tb: str) -> None:
        seen.append(exc)
        failed.set()

    src = BrainFlowSource(name=unique(), params=params, on_error=on_error)
    try:
        src.start()
        wait_samples(src, 5)
        # A real fault: the session disappears under the running acquisition thread (BrainFlow keys
        # sessions by board id and parameters, so another BoardShim with the same ones releases it).
        input_params = BrainFlowInputParams()
        input_params.other_info = params["other_info"]
        BoardShim(SYNTH, input_params).release_session()
        assert failed.wait(5.0), "on_error was not called"
        assert isinstance(seen[0], RuntimeError)
        assert "BOARD_NOT_CREATED_ERROR" in str(seen[0])
        assert src.error is seen[0]
        assert not src.stream.stats.connected
        other = BrainFlowSource(params=params)
        other.open()  # nothing of the failed session is left prepared
        other.close()
    finally:
        src.close()
