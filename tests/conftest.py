"""Shared fixtures: paths, unique names, condition waits with deadlines."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
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


# ----------------------------------------------------------------------------- GUI (pytest-qt)
# The offscreen platform plugin cannot resize native windows; Qt says so once per window. Not our code.
QT_PLATFORM_LIMITATIONS = ("This plugin does not support propagateSizeHints()",)


@pytest.fixture
def qt_warnings() -> Iterator[list[str]]:
    """Record every Qt warning (and worse) during the test; the test fails if any was emitted."""
    from PyQt6.QtCore import QtMsgType, qInstallMessageHandler

    seen: list[str] = []

    def handler(kind: QtMsgType, _ctx: object, message: str | None) -> None:
        if kind not in (QtMsgType.QtDebugMsg, QtMsgType.QtInfoMsg):
            text = message or ""
            if not any(p in text for p in QT_PLATFORM_LIMITATIONS):
                seen.append(f"{kind.name}: {text}")

    previous = qInstallMessageHandler(handler)
    try:
        yield seen
    finally:
        qInstallMessageHandler(previous)
    assert not seen, f"Qt warnings: {seen}"


@pytest.fixture
def window(qtbot, qt_warnings):  # type: ignore[no-untyped-def]
    """The real main window, shown offscreen; closed (session stopped) at the end."""
    from ui.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()
    assert win.ctl.session is None or win.ctl.session.state in ("stopped", "fault", "idle")
