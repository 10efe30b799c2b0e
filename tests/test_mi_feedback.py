"""FeedbackSmoother: exponential smoothing of the MI class-probability stream for a feedback bar."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.mi.feedback import DEFAULT_TIME_CONSTANT_S, FeedbackSmoother


def test_step_response_reaches_63_percent_after_one_time_constant() -> None:
    s = FeedbackSmoother(("left", "right"), time_constant_s=0.5, hop_s=0.1)
    s.update([1.0, 0.0])
    for _ in range(5):  # 5 hops of 0.1 s = one time constant
        out = s.update([0.0, 1.0])
    assert out[1] == pytest.approx(1.0 - math.exp(-1.0), abs=1e-12)
    assert s.bar() == pytest.approx(out[1] - out[0])
    assert s.n_updates == 6


def test_timestamps_give_the_same_result_as_the_hop_and_handle_irregular_gaps() -> None:
    by_hop = FeedbackSmoother(("a", "b"), time_constant_s=1.0, hop_s=0.1)
    by_time = FeedbackSmoother(("a", "b"), time_constant_s=1.0, hop_s=0.1)
    rng = np.random.default_rng(0)
    for i in range(50):
        p = rng.dirichlet([1.0, 1.0])
        np.testing.assert_allclose(by_hop.update(p), by_time.update(p, sample_time=100.0 + 0.1 * i), atol=1e-12)
    # a skipped decision (0.3 s gap) weighs the new value by 1 - exp(-0.3 / tau)
    before = by_time.value.copy()
    out = by_time.update([1.0, 0.0], sample_time=100.0 + 0.1 * 49 + 0.3)
    assert out[0] == pytest.approx(before[0] + (1 - math.exp(-0.3)) * (1.0 - before[0]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).filter(lambda v: sum(v) > 1e-3), min_size=1))
def test_output_stays_a_probability_vector(rows: list[list[float]]) -> None:
    s = FeedbackSmoother(("a", "b", "c"))
    for row in rows:
        p = np.asarray(row) / sum(row)
        out = s.update(p)
        assert abs(out.sum() - 1.0) < 1e-9 and out.min() >= -1e-12


def test_reset_and_defaults() -> None:
    s = FeedbackSmoother(("a", "b"))
    assert s.time_constant_s == DEFAULT_TIME_CONSTANT_S
    assert s.bar() == 0.0
    s.update([0.2, 0.8], sample_time=1.0)
    s.reset()
    assert s.value is None and s.n_updates == 0
    np.testing.assert_allclose(s.update([0.9, 0.1], sample_time=0.5), [0.9, 0.1])  # earlier time is fine after reset


def test_bad_input_is_refused() -> None:
    s = FeedbackSmoother(("a", "b"))
    with pytest.raises(ValueError, match="one value per class"):
        s.update([0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        s.update([0.2, 0.2])
    with pytest.raises(ValueError, match="sum to 1"):
        s.update([float("nan"), 1.0])
    s.update([0.5, 0.5], sample_time=2.0)
    with pytest.raises(ValueError, match="not after"):
        s.update([0.5, 0.5], sample_time=2.0)
    with pytest.raises(ValueError, match="time_constant_s"):
        FeedbackSmoother(("a", "b"), time_constant_s=0.0)
    with pytest.raises(ValueError, match="unique"):
        FeedbackSmoother(("a", "a"))
    with pytest.raises(RuntimeError, match="two classes"):
        FeedbackSmoother(("a", "b", "c")).bar()
