"""Shared fixtures: paths, unique names, condition waits with deadlines."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MODEL = REPO / "models" / "ssvep_reference.onnx"


def unique(prefix: str = "test") -> str:
    """A stream name / source_id no other test (or run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` s pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@pytest.fixture
def data_dir() -> Path:
    """../shared/data, or skip with the reason when it is absent (a user's machine)."""
    if not DATA.is_dir():
        pytest.skip(f"real recordings folder {DATA} is absent (it ships only with the development machines)")
    return DATA
