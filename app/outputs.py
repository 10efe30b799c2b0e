"""Command outputs. Every output has ``send(command)``, ``safe_state(reason)`` and ``close()``.

Stimulation outputs (NMES, audio, teleop) plug in here behind the SafetySupervisor in later
work; the LSL command outlet is the first one.
"""

from __future__ import annotations

import json
from typing import Protocol, runtime_checkable

import pylsl

from acquisition.lsl import make_outlet
from acquisition.stream import StreamInfo
from app.pipeline import Command


@runtime_checkable
class Output(Protocol):
    """Something commands go to. ``send`` runs on a pipeline's decoding thread."""

    name: str

    def send(self, command: Command) -> None:
        """Deliver one command (must not block for long)."""

    def safe_state(self, reason: str) -> None:
        """Put the output in its safe state (stimulation off, robot stopped...)."""

    def close(self) -> None:
        """Release resources (after ``safe_state``)."""


COMMAND_STREAM_TYPE = "Markers"


class LslCommandOutlet:
    """Publishes every command as a JSON string on an LSL ``Markers`` stream.

    A ``safe_state`` is published as ``{"event": "safe_state", "reason": ...}`` so listeners
    (stimulus programs, robots) can stop too.
    """

    def __init__(self, name: str, stream_name: str = "closedloop-commands", source_id: str = "") -> None:
        self.name = name
        self.info = StreamInfo.simple(
            stream_name,
            COMMAND_STREAM_TYPE,
            ["command"],
            0.0,
            channel_format="string",
            source_id=source_id or f"closedloop-commands-{stream_name}",
        )
        self._outlet = make_outlet(self.info)
        self.n_sent = 0

    def send(self, command: Command) -> None:
        """Push ``command.to_json()`` stamped with the command's issue time."""
        self._outlet.push_sample([command.to_json()], command.issued_time)
        self.n_sent += 1

    def safe_state(self, reason: str) -> None:
        """Announce the safe state on the stream."""
        msg = json.dumps({"event": "safe_state", "reason": reason})
        self._outlet.push_sample([msg], pylsl.local_clock())

    def close(self) -> None:
        """Drop the outlet."""
        self._outlet = None  # type: ignore[assignment]
