"""Teleop configuration: which decoder label moves which joint in which mode, and the safety rules.

The configuration is a plain dict (a ``[teleop]`` TOML table)::

    initial_mode = "drive"
    min_confidence = 0.6      # discrete commands below this are refused and stop the motion
    dwell_s = 0.15            # a label must be held this long (s) before it acts
    deadman_s = 0.10          # no confident command for this long (s) -> all velocities zero
    speed_scale = 1.0         # multiplies every speed (0 < x <= 1)
    coarse = 0.6              # fraction of each joint's max velocity in coarse speed
    fine = 0.2                # ... and in fine speed
    start_speed = "coarse"
    accel_scale = 1.0         # multiplies every acceleration limit (0 < x <= 1)
    control_period_s = 0.01   # bridge tick; the joint-limit guard looks one tick ahead
    workspace = [-1.7, 1.7, -1.7, 1.7]   # xmin xmax ymin ymax (m) of the base centre
    joint_margin = {lift = 0.0}          # optional per-joint margin (m/rad) kept from each limit

    [bindings]                # any mode (a mode's own binding wins)
    rest = "stop"
    Fist = "next_mode"

    [modes.drive]             # modes cycle in this order
    Raise = "base_translate+"
    Lower = "base_translate-"
    Open = "base_rotate+"

    [continuous]              # vectors from continuous decoders (e.g. a DKF)
    target = "base"           # "base": [v m/s, w rad/s]; "end_effector": [x, y, z] m/s
    scale = [1.0, 1.0]        # per component, decoder unit -> m/s or rad/s

Actions: ``"<joint>+"``/``"<joint>-"`` (a :data:`~.joints.DOF_NAMES` joint, positive/negative
direction), ``"stop"``, ``"next_mode"``, ``"prev_mode"``, ``"speed_toggle"``, ``"fine"``,
``"coarse"``. End-effector velocity on the Stretch decomposes exactly: x (forward) is the
base translation, y (towards the arm side) the arm extension, z the lift.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .joints import DOF_NAMES

__all__ = ["ContinuousMap", "TeleopConfig", "flexemg_config", "load_teleop_config", "parse_action"]

ONE_SHOT_ACTIONS = ("next_mode", "prev_mode", "speed_toggle", "fine", "coarse")
ACTIONS = ("stop", *ONE_SHOT_ACTIONS)


def parse_action(action: str, where: str) -> tuple[str, int] | str:
    """``"lift+"`` -> ``("lift", +1)``; a named action is returned as is; ValueError otherwise."""
    if not isinstance(action, str):
        raise TypeError(f"teleop config {where}: action must be a string, got {type(action).__name__}.")
    if action in ACTIONS:
        return action
    if action[-1:] in "+-" and action[:-1] in DOF_NAMES:
        return action[:-1], 1 if action[-1] == "+" else -1
    raise ValueError(
        f"teleop config {where}: unknown action {action!r}; use '<joint>+' or '<joint>-' with a joint in "
        f"{list(DOF_NAMES)}, or one of {list(ACTIONS)}."
    )


@dataclass(frozen=True)
class ContinuousMap:
    """How a continuous command vector becomes joint velocities.

    Attributes
    ----------
    target : str
        ``"base"`` (values = [v m/s, w rad/s]) or ``"end_effector"`` (values = [x, y, z] m/s
        -> base translation, arm, lift).
    scale : tuple of float
        Multiplier per component (decoder unit -> m/s or rad/s).
    """

    target: str = "base"
    scale: tuple[float, ...] = (1.0, 1.0)

    def __post_init__(self) -> None:
        n = {"base": 2, "end_effector": 3}.get(self.target)
        if n is None:
            raise ValueError(f"teleop config continuous.target must be 'base' or 'end_effector', got {self.target!r}.")
        if len(self.scale) != n or not all(math.isfinite(s) for s in self.scale):
            raise ValueError(
                f"teleop config continuous.scale must be {n} finite numbers for target {self.target!r}, "
                f"got {list(self.scale)}."
            )

    @property
    def joints(self) -> tuple[str, ...]:
        """Joint driven by each component."""
        return ("base_translate", "base_rotate") if self.target == "base" else ("base_translate", "arm", "lift")


@dataclass(frozen=True)
class TeleopConfig:
    """Validated teleop configuration (see the module docstring for the keys and units)."""

    modes: dict[str, dict[str, str]]
    bindings: dict[str, str] = field(default_factory=lambda: {"rest": "stop"})
    initial_mode: str | None = None
    min_confidence: float = 0.6
    dwell_s: float = 0.15
    deadman_s: float = 0.10
    speed_scale: float = 1.0
    coarse: float = 0.6
    fine: float = 0.2
    start_speed: str = "coarse"
    accel_scale: float = 1.0
    control_period_s: float = 0.01
    workspace: tuple[float, float, float, float] = (-1.7, 1.7, -1.7, 1.7)
    joint_margin: dict[str, float] = field(default_factory=dict)
    continuous: ContinuousMap = field(default_factory=ContinuousMap)

    def __post_init__(self) -> None:
        if not self.modes:
            raise ValueError("teleop config needs at least one [modes.NAME] table.")
        for mode, table in self.modes.items():
            if not isinstance(table, Mapping):
                raise TypeError(f"teleop config modes.{mode} must be a table of label = action.")
            for label, action in table.items():
                parse_action(action, f"modes.{mode}.{label}")
        for label, action in self.bindings.items():
            parse_action(action, f"bindings.{label}")
        if self.initial_mode is not None and self.initial_mode not in self.modes:
            raise ValueError(
                f"teleop config initial_mode {self.initial_mode!r} is not a mode; modes are {list(self.modes)}."
            )
        for key, lo, hi in (
            ("min_confidence", 0.0, 1.0),
            ("speed_scale", 1e-9, 1.0),
            ("coarse", 1e-9, 1.0),
            ("fine", 1e-9, 1.0),
            ("accel_scale", 1e-9, 1.0),
        ):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"teleop config {key} must be a number in [{lo:g}, {hi:g}], got {v!r}.")
        for key in ("dwell_s", "deadman_s", "control_period_s"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or not (v >= 0 if key == "dwell_s" else v > 0) or not math.isfinite(v):
                raise ValueError(f"teleop config {key} must be a finite number of seconds > 0, got {v!r}.")
        if self.start_speed not in ("coarse", "fine"):
            raise ValueError(f"teleop config start_speed must be 'coarse' or 'fine', got {self.start_speed!r}.")
        w = self.workspace
        if len(w) != 4 or not (w[0] < w[1] and w[2] < w[3]):
            raise ValueError(f"teleop config workspace must be [xmin, xmax, ymin, ymax] with min < max, got {list(w)}.")
        for name, m in self.joint_margin.items():
            if name not in DOF_NAMES or not m >= 0:
                raise ValueError(f"teleop config joint_margin.{name} must name a joint and be >= 0, got {m!r}.")

    @property
    def mode_names(self) -> tuple[str, ...]:
        """Modes in cycling order."""
        return tuple(self.modes)

    def action_for(self, mode: str, label: str) -> str | None:
        """Action bound to ``label`` in ``mode`` (mode table first, then global bindings)."""
        return self.modes.get(mode, {}).get(label) or self.bindings.get(label)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TeleopConfig:
        """Build from a dict (a parsed ``[teleop]`` table); unknown keys are an error."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"teleop config has unknown keys {sorted(unknown)}; known keys are {sorted(known)}.")
        kw: dict[str, Any] = dict(d)
        if "modes" in kw:
            kw["modes"] = {str(k): dict(v) for k, v in kw["modes"].items()}
        if "bindings" in kw:
            kw["bindings"] = dict(kw["bindings"])
        if "workspace" in kw:
            kw["workspace"] = tuple(float(x) for x in kw["workspace"])
        if "joint_margin" in kw:
            kw["joint_margin"] = {str(k): float(v) for k, v in kw["joint_margin"].items()}
        if "continuous" in kw:
            c = dict(kw["continuous"])
            bad = set(c) - {"target", "scale"}
            if bad:
                raise ValueError(f"teleop config continuous has unknown keys {sorted(bad)}; known: target, scale.")
            target = c.get("target", "base")
            default_scale = (1.0,) * (2 if target == "base" else 3)
            kw["continuous"] = ContinuousMap(target, tuple(float(x) for x in c.get("scale", default_scale)))
        return cls(**kw)


def load_teleop_config(path: str | Path) -> TeleopConfig:
    """Read a TOML file holding a ``[teleop]`` table (or the keys at top level)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"teleop config file {path} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"teleop config file {path} is not valid TOML: {exc}") from None
    table = data.get("teleop", data)
    try:
        return TeleopConfig.from_dict(table)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{path}: {exc}") from None


def flexemg_config(**overrides: Any) -> TeleopConfig:
    """Mapping for the four flexemg gestures (Fist, Raise, Lower, Open) plus rest.

    Fist cycles the modes drive -> lift -> arm -> wrist_gripper -> head; within a mode Raise and
    Lower move the mode's main joint in the positive/negative direction and Open is the mode's
    third action. ``configs/teleop_flexemg.toml`` holds the same mapping.
    """
    d: dict[str, Any] = {
        "initial_mode": "drive",
        "bindings": {"rest": "stop", "Fist": "next_mode"},
        "modes": {
            "drive": {"Raise": "base_translate+", "Lower": "base_translate-", "Open": "base_rotate+"},
            "lift": {"Raise": "lift+", "Lower": "lift-", "Open": "speed_toggle"},
            "arm": {"Raise": "arm+", "Lower": "arm-", "Open": "speed_toggle"},
            "wrist_gripper": {"Raise": "gripper+", "Lower": "gripper-", "Open": "wrist_yaw+"},
            "head": {"Raise": "head_tilt+", "Lower": "head_tilt-", "Open": "head_pan+"},
        },
    }
    d.update(overrides)
    return TeleopConfig.from_dict(d)
