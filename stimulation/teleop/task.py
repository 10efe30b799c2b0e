"""The scripted pick task in simulation: drive to the table, raise the lift, extend the arm, grasp, lift.

A *virtual participant* (:class:`TaskScript`) watches the simulated robot and decides which
gesture to perform now; a *command source* turns the performed gesture into decoder commands
(:class:`PerfectCommands`: the intended label with confidence 1 every hop; the EMG benchmark:
real EMG of that gesture replayed through LSL -> EMG decoder). :func:`run_task` closes the loop
in simulated time: every hop the source's commands go through :class:`~.bridge.TeleopBridge`
into the MuJoCo back end, the bridge ticks every control period, physics advances.

The script follows the four-gesture mapping of :func:`~.mapping.flexemg_config` (Fist = next
mode; Raise/Lower = + / - of the mode's joint). A step ends when its goal is reached,
anticipating the command pipeline's lag by ``lead_s`` (a participant learns to let go early).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from app.pipeline import Command

from .backend import MujocoBackend
from .bridge import TeleopBridge
from .mapping import TeleopConfig, flexemg_config
from .sim import TeleopSim

__all__ = ["PerfectCommands", "TaskResult", "TaskScript", "TaskStep", "default_steps", "run_task"]

CLASSES = ("rest", "Fist", "Raise", "Lower", "Open")


class CommandSource(Protocol):
    """Turns the gesture performed during [t, t + duration) into the decoder's commands."""

    def produce(self, gesture: str, t: float, duration: float) -> list[Command]:
        """Commands decided in that interval (times on the simulation clock, s)."""


class PerfectCommands:
    """The ideal decoder: one command per hop with the performed label and confidence 1."""

    def __init__(self, classes: tuple[str, ...] = CLASSES, pipeline: str = "perfect") -> None:
        self.classes = classes
        self.pipeline = pipeline
        self._seq = 0

    def produce(self, gesture: str, t: float, duration: float) -> list[Command]:
        """One command stamped at the end of the interval."""
        values = tuple(1.0 if c == gesture else 0.0 for c in self.classes)
        cmd = Command(
            self.pipeline, self._seq, "discrete", t + duration, t + duration, gesture, values, self.classes, 0
        )
        self._seq += 1
        return [cmd]


@dataclass
class TaskStep:
    """One step of the script.

    Attributes
    ----------
    name : str
    gesture : str
        Gesture that moves towards the goal.
    error : callable
        ``error(sim, bridge)`` -> signed distance to the goal: < 0 not reached yet, 0 reached,
        > 0 overshot (m, or any unit consistent with ``tol``).
    tol : float
        The goal counts as reached when ``-tol <= error`` (and ``error <= tol`` if ``reverse``).
    reverse : str or None
        Gesture that corrects an overshoot (None: overshooting is harmless).
    """

    name: str
    gesture: str
    error: Callable[[TeleopSim, TeleopBridge], float]
    tol: float = 0.0
    reverse: str | None = None


def _mode_step(mode: str) -> TaskStep:
    return TaskStep(f"mode -> {mode}", "Fist", lambda sim, bridge: 0.0 if bridge.controller.mode == mode else -1.0)


def default_steps(lift_by: float = 0.08, tol: float = 0.012) -> list[TaskStep]:
    """The pick task for :func:`flexemg_config` (object and table from :mod:`.model`)."""

    def obj(sim: TeleopSim) -> np.ndarray:
        return sim.body_position("target")

    z0: list[float] = []

    def lifted(sim: TeleopSim, bridge: TeleopBridge) -> float:
        if not z0:
            z0.append(float(obj(sim)[2]))
        return float(obj(sim)[2]) - (z0[0] + lift_by)

    return [
        TaskStep(
            "drive to the table", "Raise", lambda sim, b: float(sim.finger_center()[0] - obj(sim)[0]), tol, "Lower"
        ),
        _mode_step("lift"),
        TaskStep("raise the lift", "Raise", lambda sim, b: float(sim.finger_center()[2] - obj(sim)[2]), tol, "Lower"),
        _mode_step("arm"),
        TaskStep("extend the arm", "Raise", lambda sim, b: float(obj(sim)[1] + 0.005 - sim.finger_center()[1])),
        _mode_step("wrist_gripper"),
        TaskStep("close the gripper", "Lower", lambda sim, b: sim.gripper_force() - 8.0),
        _mode_step("head"),
        _mode_step("drive"),
        _mode_step("lift"),
        TaskStep("lift the object", "Raise", lifted),
    ]


class TaskScript:
    """The virtual participant.

    For each step it performs the step's gesture; it lets go (performs ``rest``) when the goal
    is predicted to be reached within ``lead_s`` at the current rate, waits until the robot is
    still, then checks the goal: reached -> next step (after ``rest_s`` of rest); short -> the
    gesture again; overshot -> the ``reverse`` gesture, the same way.
    """

    def __init__(self, steps: list[TaskStep], lead_s: float = 0.0, rest_s: float = 0.05) -> None:
        self.steps = steps
        self.lead_s = lead_s
        self.rest_s = rest_s
        self.index = 0
        self._rest_until: float | None = None
        self._prev: tuple[float, float] | None = None
        self._settling = False
        self.step_end_times: list[float] = []
        self.n_corrections = 0

    @property
    def finished(self) -> bool:
        """All steps done."""
        return self.index >= len(self.steps)

    def gesture(self, sim: TeleopSim, bridge: TeleopBridge) -> str:
        """The gesture to perform now (``"rest"`` between steps and after the last one)."""
        t = sim.time
        if self._rest_until is not None:
            if t < self._rest_until:
                return "rest"
            self._rest_until = None
        if self.finished:
            return "rest"
        step = self.steps[self.index]
        err = step.error(sim, bridge)
        rate = 0.0 if self._prev is None or t <= self._prev[0] else (err - self._prev[1]) / (t - self._prev[0])
        self._prev = (t, err)
        still = float(np.abs(sim.velocities()).max()) < 0.01
        reached = err >= -step.tol and (step.reverse is None or err <= step.tol)
        if self._settling:
            if not still:
                return "rest"
            self._settling = False
            if reached:
                self.index += 1
                self._prev = None
                self.step_end_times.append(t)
                self._rest_until = t + self.rest_s
                return "rest"
            self.n_corrections += 1
        elif reached and (still or step.reverse is None):
            self._settling = True
            return "rest"
        predicted = err + rate * self.lead_s
        if err < -step.tol:
            if predicted >= -step.tol:
                self._settling = True
                return "rest"
            return step.gesture
        if step.reverse is not None and err > step.tol:
            if predicted <= step.tol:
                self._settling = True
                return "rest"
            return step.reverse
        self._settling = True
        return "rest"


@dataclass
class TaskResult:
    """Outcome of one run."""

    success: bool
    completion_s: float
    step_times_s: list[float]
    object_lift_m: float
    bridge: TeleopBridge
    frames: list[np.ndarray] = field(default_factory=list)
    gestures: list[tuple[float, str]] = field(default_factory=list)
    corrections: int = 0


def run_task(
    source: CommandSource,
    *,
    config: TeleopConfig | None = None,
    steps: list[TaskStep] | None = None,
    lead_s: float = 0.0,
    hop_s: float = 0.05,
    timeout_s: float = 120.0,
    settle_s: float = 1.0,
    frame_every_s: float | None = None,
    frame_size: tuple[int, int] = (320, 240),
    camera: str = "overview",
) -> TaskResult:
    """Run the scripted task closed-loop in simulated time.

    Parameters
    ----------
    source : CommandSource
        Perfect commands or decoded EMG.
    config : TeleopConfig, optional
        Default :func:`flexemg_config`.
    lead_s : float
        How early (s of current velocity) the participant lets go of a gesture.
    hop_s : float
        Interval at which the source is asked for commands (its decision hop), s.
    timeout_s : float
        Give up after this much simulated time.
    settle_s : float
        Simulated time kept after the last step before judging whether the object is lifted.
    frame_every_s : float, optional
        Render a frame this often (s) for the strip/GIF.
    """
    cfg = config or flexemg_config()
    sim = TeleopSim()
    backend = MujocoBackend(sim)
    bridge = TeleopBridge(backend, cfg, clock=lambda: sim.time)
    script = TaskScript(steps or default_steps(), lead_s=lead_s)
    z_start = float(sim.body_position("target")[2])
    period = cfg.control_period_s
    n_sub = max(1, round(hop_s / period))
    frames: list[np.ndarray] = []
    gestures: list[tuple[float, str]] = []
    next_frame = 0.0
    end_time: float | None = None
    while sim.time < timeout_s:
        gesture = script.gesture(sim, bridge)
        if not gestures or gestures[-1][1] != gesture:
            gestures.append((sim.time, gesture))
        t0 = sim.time
        for cmd in source.produce(gesture, t0, hop_s):
            bridge.send(cmd)
        for _ in range(n_sub):
            bridge.tick()
            sim.advance(period)
            if frame_every_s is not None and sim.time >= next_frame:
                frames.append(sim.render(camera, *frame_size))
                next_frame += frame_every_s
        if script.finished:
            if end_time is None:
                end_time = script.step_end_times[-1]
            if sim.time >= end_time + settle_s:
                break
    lift = float(sim.body_position("target")[2]) - z_start
    between = abs(sim.body_position("target")[0] - sim.finger_center()[0]) < 0.03
    success = script.finished and lift > 0.05 and between
    if frame_every_s is not None:
        frames.append(sim.render(camera, *frame_size))
    result = TaskResult(
        success=success,
        completion_s=end_time if end_time is not None else float("nan"),
        step_times_s=script.step_end_times,
        object_lift_m=lift,
        bridge=bridge,
        frames=frames,
        gestures=gestures,
        corrections=script.n_corrections,
    )
    sim.close()
    return result
