"""Routing spindle detections in a running session: LSL markers, the stimulation trigger, event extents.

A session pipeline running a ``spindle-gru`` model issues one event :class:`~app.pipeline.Command`
per hop (values ``[spindle, trigger, probability, active]``, label ``"spindle"`` at an onset).
:class:`SpindleTriggerRouter` subscribes to the session (``session.subscribe(router)``) and, for that
pipeline's commands:

- publishes a JSON marker on an LSL ``Markers`` stream (default ``closedloop-spindle``) at every
  onset (``"spindle_onset"``), trigger (``"spindle_trigger"``) and end (``"spindle_end"``),
  stamped with the command's ``sample_time``::

      {"event": "spindle_trigger", "seq": 812, "sample_time": 1234.512, "issued_time": 1234.5131,
       "probability": 0.81, "pipeline": "spindle"}

- calls ``on_trigger(command)`` for each trigger — e.g. the auditory stimulation's 15 ms pink-noise
  burst: ``SpindleTriggerRouter("spindle", on_trigger=lambda c: audio.burst(request_time=c.issued_time,
  source="spindle"))`` with :class:`stimulation.audio.AudioStimulator`, which applies the safety
  supervisor;
- keeps the detected events as ``[start, end]`` in the stream's clock (:attr:`events`).

Threading: the router runs on the pipeline's decoding thread (where the session dispatches
commands); ``on_trigger`` must return quickly (the audio stimulator only queues the burst).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import pylsl

from acquisition.lsl import make_outlet
from acquisition.stream import StreamInfo
from app.pipeline import Command

__all__ = ["SpindleTriggerRouter", "events_from_commands"]


def events_from_commands(commands: Iterable[Command], srate: float | None = None) -> list[list[float]]:
    """Detected events ``[start, end]`` from a spindle pipeline's commands, in issue order.

    Times are ``sample_index / srate`` (s from the first sample the pipeline saw) when ``srate``
    is given, else ``sample_time`` (stream clock). An event still active after the last command
    ends at the last command's time.
    """
    events: list[list[float]] = []
    start: float | None = None
    t = 0.0
    for cmd in sorted(commands, key=lambda c: c.seq):
        t = cmd.sample_index / srate if srate else cmd.sample_time
        onset, active = cmd.values[0] >= 0.5, cmd.values[3] >= 0.5
        if onset and start is None:
            start = t
        if start is not None and not active:
            events.append([start, t])
            start = None
    if start is not None:
        events.append([start, t])
    return events


class SpindleTriggerRouter:
    """Session subscriber turning a spindle pipeline's commands into markers and stimulation triggers.

    Parameters
    ----------
    pipeline : str
        Name of the spindle pipeline whose commands to route (others are ignored).
    on_trigger : callable, optional
        ``on_trigger(command)`` at every stimulation trigger (on the decoding thread).
    marker_stream : str or None
        Name of the LSL Markers outlet; None publishes nothing.
    """

    def __init__(
        self,
        pipeline: str,
        on_trigger: Callable[[Command], Any] | None = None,
        marker_stream: str | None = "closedloop-spindle",
    ) -> None:
        self.pipeline = pipeline
        self.on_trigger = on_trigger
        self.events: list[list[float]] = []
        self.n_onsets = 0
        self.n_triggers = 0
        self._start: float | None = None
        self._outlet: pylsl.StreamOutlet | None = None
        if marker_stream:
            info = StreamInfo.simple(
                marker_stream, "Markers", ["spindle"], 0.0, channel_format="string", source_id=marker_stream
            )
            self._outlet = make_outlet(info)

    def _mark(self, event: str, cmd: Command) -> None:
        if self._outlet is None:
            return
        msg = {
            "event": event,
            "seq": cmd.seq,
            "sample_time": cmd.sample_time,
            "issued_time": cmd.issued_time,
            "probability": round(cmd.values[2], 4),
            "pipeline": cmd.pipeline,
        }
        self._outlet.push_sample([json.dumps(msg, separators=(",", ":"))], cmd.sample_time)

    def __call__(self, cmd: Command) -> None:
        """Route one command (called by the session for every command)."""
        if cmd.pipeline != self.pipeline or cmd.kind != "event" or len(cmd.values) != 4:
            return
        onset, trigger, active = cmd.values[0] >= 0.5, cmd.values[1] >= 0.5, cmd.values[3] >= 0.5
        if onset and self._start is None:
            self._start = cmd.sample_time
            self.n_onsets += 1
            self._mark("spindle_onset", cmd)
        if trigger:
            self.n_triggers += 1
            self._mark("spindle_trigger", cmd)
            if self.on_trigger is not None:
                self.on_trigger(cmd)
        if self._start is not None and not active:
            self.events.append([self._start, cmd.sample_time])
            self._start = None
            self._mark("spindle_end", cmd)

    def close(self) -> None:
        """Drop the LSL outlet."""
        self._outlet = None
