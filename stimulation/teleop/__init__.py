"""Teleoperation bridge: decoder commands drive a Stretch-like mobile manipulator.

Layers (each module has one job):

- :mod:`.joints` - the 8 DoF and their published Stretch limits;
- :mod:`.model`, :mod:`.sim` - MJCF of the robot in a room, headless MuJoCo simulation + offscreen render;
- :mod:`.mapping` - the configurable label -> motion map (modes, coarse/fine, safety settings);
- :mod:`.controller` - pure arbitration and guards (dwell, confidence, dead-man, limits, log);
- :mod:`.backend`, :mod:`.stretch_backend`, :mod:`.rosbridge_backend` - robots behind one interface;
- :mod:`.bridge` - the Output that connects commands to a back end and measures latency;
- :mod:`.factory` - a bridge from a plain options dict (back end, mapping file);
- :mod:`.task`, :mod:`.emg_replay` - the scripted pick task with perfect or EMG-decoded commands.

Importing this package does not import MuJoCo, roslibpy or stretch_body; import the submodules.
"""

from .bridge import CommandRecord, TeleopBridge
from .controller import ArbitrationEntry, TeleopController
from .joints import DOF_NAMES, STRETCH_JOINTS, JointSpec
from .mapping import TeleopConfig, flexemg_config, load_teleop_config

__all__ = [
    "DOF_NAMES",
    "STRETCH_JOINTS",
    "ArbitrationEntry",
    "CommandRecord",
    "JointSpec",
    "TeleopBridge",
    "TeleopConfig",
    "TeleopController",
    "flexemg_config",
    "load_teleop_config",
]
