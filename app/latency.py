"""Bounded latency statistics (decision latency, data age) for status displays and benchmarks."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class LatencyTracker:
    """Keeps the last ``maxlen`` latencies (s) and reports percentiles in ms.

    ``add`` runs on the decoding thread; ``summary`` on any thread (a lock guards the deque
    reference swap only).
    """

    def __init__(self, maxlen: int = 5000) -> None:
        self._values: deque[float] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, seconds: float) -> None:
        """Record one latency in s."""
        with self._lock:
            self._values.append(seconds)
        self.count += 1

    def values(self) -> np.ndarray:
        """Copy of the kept latencies in s."""
        with self._lock:
            return np.fromiter(self._values, dtype=np.float64, count=len(self._values))

    def summary(self) -> dict[str, float | int]:
        """``{"n", "p50_ms", "p95_ms", "p99_ms", "max_ms"}`` over the kept values (NaN when empty)."""
        v = self.values()
        if v.size == 0:
            nan = float("nan")
            return {"n": 0, "p50_ms": nan, "p95_ms": nan, "p99_ms": nan, "max_ms": nan}
        p50, p95, p99 = np.percentile(v, [50, 95, 99]) * 1e3
        return {
            "n": int(v.size),
            "p50_ms": float(p50),
            "p95_ms": float(p95),
            "p99_ms": float(p99),
            "max_ms": float(v.max() * 1e3),
        }
