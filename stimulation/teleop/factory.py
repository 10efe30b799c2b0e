"""Build a :class:`~.bridge.TeleopBridge` from a plain options dict (e.g. a future ``[outputs.teleop]`` table).

Keys::

    backend = "mujoco"                 # mujoco | stretch_body | rosbridge
    mapping = "configs/teleop_flexemg.toml"   # teleop mapping TOML (relative to base_dir); default: flexemg_config()
    name = "teleop"                    # output name
    timestep = 0.002                   # mujoco: physics time step (s)
    [rosbridge]                        # rosbridge: any RosbridgeSettings field (host, port, base_topic, ...)
    host = "robot.local"
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .bridge import TeleopBridge
from .mapping import flexemg_config, load_teleop_config

__all__ = ["BACKENDS", "make_bridge"]

BACKENDS = ("mujoco", "stretch_body", "rosbridge")
_KEYS = {"backend", "mapping", "name", "timestep", "rosbridge", "gripper_rad_per_m"}


def make_bridge(options: Mapping[str, Any], base_dir: str | Path = ".", where: str = "teleop") -> TeleopBridge:
    """Create the back end and the bridge described by ``options``.

    Raises
    ------
    ValueError
        Unknown key or back end (the message names ``where.key``).
    """
    unknown = set(options) - _KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known keys are {sorted(_KEYS)}.")
    backend_name = options.get("backend", "mujoco")
    if backend_name not in BACKENDS:
        raise ValueError(f"{where}.backend must be one of {list(BACKENDS)}, got {backend_name!r}.")
    mapping = options.get("mapping")
    if mapping is None:
        config = flexemg_config()
    else:
        path = Path(mapping)
        config = load_teleop_config(path if path.is_absolute() else Path(base_dir) / path)
    backend: Any
    if backend_name == "mujoco":
        from .backend import MujocoBackend
        from .sim import TeleopSim

        backend = MujocoBackend(TeleopSim(timestep=float(options.get("timestep", 0.002))))
    elif backend_name == "stretch_body":
        from .stretch_backend import StretchBodyBackend

        backend = StretchBodyBackend(gripper_rad_per_m=float(options.get("gripper_rad_per_m", 1.0 / 0.171)))
    else:
        from .rosbridge_backend import RosbridgeBackend, RosbridgeSettings

        ros = dict(options.get("rosbridge", {}))
        known = set(RosbridgeSettings.__dataclass_fields__)
        bad = set(ros) - known
        if bad:
            raise ValueError(f"{where}.rosbridge: unknown keys {sorted(bad)}; known keys are {sorted(known)}.")
        if "joint_names" in ros:
            ros["joint_names"] = tuple(ros["joint_names"])
        backend = RosbridgeBackend(RosbridgeSettings(**ros))
    return TeleopBridge(backend, config, name=str(options.get("name", "teleop")))
