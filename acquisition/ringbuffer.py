"""Preallocated ring buffer of samples × channels with timestamps.

One writer (the acquisition thread) and any number of readers (pipelines, recorder,
display). Readers keep their own position as a value of the monotonic write counter,
so nothing is ever copied except the samples a reader asks for.

Concurrency model
-----------------
The writer fills the slots first and publishes the new ``counter`` afterwards (a single
attribute assignment, atomic under the GIL). A reader copies the slots it wants and then
re-reads the counter: any sample that the writer may have overwritten while the copy
ran is dropped from the result and reported in ``lost`` (seqlock-style validation).
The only lock is the condition used to wake readers; it guards no data.

Overflow policy: the buffer is *newest-wins* for the writer (it never blocks); a reader
that falls more than ``capacity`` samples behind loses the oldest samples and is told
how many. Timestamp gaps (jumps larger than ``gap_factor`` sample periods) are counted
on write.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from acquisition.validation import check_int, check_positive


@dataclass(frozen=True)
class ReadResult:
    """Samples returned by :meth:`RingBuffer.read_since`.

    Attributes
    ----------
    data : ndarray, shape (n_samples, n_channels), float32
    timestamps : ndarray, shape (n_samples,), float64, seconds on ``pylsl.local_clock``
    start : int
        Write-counter value of the first returned sample.
    end : int
        Write-counter value just past the last returned sample (pass it to the next read).
    lost : int
        Samples between the requested counter and ``start`` that were overwritten
        before this reader got to them.
    """

    data: np.ndarray
    timestamps: np.ndarray
    start: int
    end: int
    lost: int

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])


@dataclass(frozen=True)
class Gap:
    """A timestamp discontinuity seen on write: at sample ``counter`` time jumped by ``duration`` s."""

    counter: int
    timestamp: float
    duration: float


class RingBuffer:
    """Preallocated float32 samples × channels plus float64 timestamps.

    Parameters
    ----------
    capacity : int
        Number of samples kept (e.g. ``int(30 * srate)`` for 30 s).
    n_channels : int
        Number of channels per sample.
    srate : float
        Nominal sampling rate in Hz, used for gap detection; 0 disables it.
    gap_factor : float
        A jump between consecutive timestamps larger than ``gap_factor / srate`` s is a gap.
    """

    def __init__(self, capacity: int, n_channels: int, srate: float = 0.0, gap_factor: float = 3.0) -> None:
        self.capacity = check_int(capacity, "capacity", minimum=1)
        self.n_channels = check_int(n_channels, "n_channels", minimum=1)
        self.srate = check_positive(srate, "srate", allow_zero=True)
        self.gap_factor = check_positive(gap_factor, "gap_factor")
        self._data = np.zeros((self.capacity, self.n_channels), dtype=np.float32)
        self._ts = np.zeros(self.capacity, dtype=np.float64)
        self._counter = 0  # total samples ever written; published after the slots are filled
        self._cond = threading.Condition()
        self._last_ts = np.nan
        self.n_gaps = 0
        self.gap_seconds = 0.0
        self.gaps: list[Gap] = []  # most recent gaps (bounded)
        self.n_overflow_writes = 0  # chunks larger than capacity (oldest part dropped at once)

    # ------------------------------------------------------------------ writer
    @property
    def counter(self) -> int:
        """Total number of samples written so far (monotonic)."""
        return self._counter

    @property
    def last_timestamp(self) -> float:
        """Timestamp of the newest sample, NaN before the first write."""
        return self._last_ts

    def write(self, data: np.ndarray, timestamps: np.ndarray) -> int:
        """Append a chunk; return the new write counter.

        Parameters
        ----------
        data : array_like, shape (n_samples, n_channels)
        timestamps : array_like, shape (n_samples,), seconds on ``pylsl.local_clock``

        Raises
        ------
        ValueError
            If the shapes do not match the buffer.
        """
        arr = np.asarray(data, dtype=np.float32)
        ts = np.asarray(timestamps, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.n_channels:
            raise ValueError(
                f"data must have shape (n_samples, {self.n_channels}), got {arr.shape}; "
                "check the channel count of the source against the buffer."
            )
        if ts.shape != (arr.shape[0],):
            raise ValueError(f"timestamps must have shape ({arr.shape[0]},), got {ts.shape}.")
        n = arr.shape[0]
        if n == 0:
            return self._counter
        self._account_gaps(ts)
        if n > self.capacity:
            self.n_overflow_writes += 1
            arr, ts = arr[-self.capacity :], ts[-self.capacity :]
            skipped = n - self.capacity
        else:
            skipped = 0
        start = self._counter + skipped
        m = arr.shape[0]
        i0 = start % self.capacity
        first = min(m, self.capacity - i0)
        self._data[i0 : i0 + first] = arr[:first]
        self._ts[i0 : i0 + first] = ts[:first]
        if first < m:
            self._data[: m - first] = arr[first:]
            self._ts[: m - first] = ts[first:]
        self._last_ts = float(ts[-1])
        with self._cond:
            self._counter = start + m
            self._cond.notify_all()
        return self._counter

    def _account_gaps(self, ts: np.ndarray) -> None:
        if self.srate <= 0:
            return
        limit = self.gap_factor / self.srate
        if ts.shape[0] == 1:  # the common live case: one scalar comparison, no temporaries
            if not float(ts[0]) - self._last_ts > limit:  # also False for the first write (NaN)
                return
        prev = np.concatenate(([self._last_ts], ts[:-1]))
        dt = ts - prev
        idx = np.flatnonzero(dt > limit)  # NaN (first write) compares False
        for i in idx:
            self.n_gaps += 1
            missing = float(dt[i]) - 1.0 / self.srate
            self.gap_seconds += missing
            self.gaps.append(Gap(self._counter + int(i), float(ts[i]), missing))
        if len(self.gaps) > 1000:
            del self.gaps[: len(self.gaps) - 1000]

    # ----------------------------------------------------------------- readers
    def wait_for(self, counter: int, timeout: float) -> bool:
        """Block until the write counter exceeds ``counter`` or ``timeout`` s pass.

        Returns True if new data is available.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._counter > counter, timeout=timeout)

    def _copy(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        n = end - start
        i0 = start % self.capacity
        first = min(n, self.capacity - i0)
        if first == n:
            return self._data[i0 : i0 + n].copy(), self._ts[i0 : i0 + n].copy()
        data = np.concatenate((self._data[i0:], self._data[: n - first]))
        ts = np.concatenate((self._ts[i0:], self._ts[: n - first]))
        return data, ts

    def read_since(self, counter: int, max_samples: int | None = None) -> ReadResult:
        """Return every sample written at or after write-counter value ``counter``.

        Parameters
        ----------
        counter : int
            The ``end`` of this reader's previous read (0 for the start of the stream).
        max_samples : int, optional
            Return at most this many samples (the oldest ones first); read again for more.
        """
        if counter < 0:
            raise ValueError(f"counter must be >= 0, got {counter}.")
        end = self._counter
        if counter > end:
            raise ValueError(
                f"counter {counter} is ahead of the write counter {end}; pass a value from a previous read."
            )
        start = max(counter, end - self.capacity)
        if max_samples is not None:
            end = min(end, start + max_samples)
        data, ts = self._copy(start, end)
        # Validate: samples older than (counter_now - capacity) may have been overwritten during the copy.
        oldest_valid = self._counter - self.capacity
        if oldest_valid > start:
            cut = min(oldest_valid - start, end - start)
            data, ts, start = data[cut:], ts[cut:], start + cut
        return ReadResult(data, ts, start, end, start - counter)

    def latest(self, n: int) -> ReadResult:
        """Return the newest ``n`` samples (fewer if fewer were written)."""
        check_int(n, "n", minimum=0)
        if n > self.capacity:
            raise ValueError(f"n must be <= capacity ({self.capacity}), got {n}.")
        end = self._counter
        return self.read_since(max(0, end - n))
