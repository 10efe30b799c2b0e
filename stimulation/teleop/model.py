"""MJCF of a Stretch-like mobile manipulator in a small room with a table and graspable objects.

Written for this project (no Hello Robot meshes). Geometry follows the Stretch layout: a
differential-drive base (here: planar slide x/y + yaw hinge, driven so that it only moves
along its heading), a vertical mast carrying the lift, a telescoping arm that extends to the
robot's right (-y of the base frame), a wrist yaw joint, a two-finger parallel gripper that
points along the arm, and a pan/tilt head with a camera on top of the mast.

Every DoF is driven by an ``intvelocity`` actuator: the control is a velocity (unit/s), the
actuator integrates it into a position set-point clamped to the joint range (``actrange``)
and a stiff PD servo tracks the set-point. Joint ranges come from :mod:`.joints`.

Scene (world frame, m): room 4 × 4 m centred at the origin; the robot starts at (0, 0)
heading +x; a table (top at 0.70 m) centred at (TABLE_X, TABLE_Y); a box ``target`` (5 × 5 ×
10 cm, 0.1 kg) near its edge and a cylinder ``bottle`` further back.
"""

from __future__ import annotations

from .joints import STRETCH_JOINTS

__all__ = ["LIFT_BASE_Z", "OBJECT_POS", "ROOM_HALF", "TABLE_TOP_Z", "build_mjcf"]

ROOM_HALF = 2.0  # m, half side of the square room
TABLE_X, TABLE_Y = 1.4, -0.80  # m, table centre
TABLE_TOP_Z = 0.70  # m
OBJECT_POS = (1.4, -0.62, TABLE_TOP_Z + 0.05)  # m, centre of the target box
LIFT_BASE_Z = 0.15  # m, height of the arm axis when lift = 0
ARM_ROOT_Y = -0.20  # m, wrist y (base frame) when arm = 0
FINGER_Y = -0.12  # m, finger pad centre relative to the wrist, along the arm


def _rng(name: str) -> str:
    j = {s.name: s for s in STRETCH_JOINTS}[name]
    return f"{j.lower:.4f} {j.upper:.4f}"


def _table_legs() -> str:
    h = (TABLE_TOP_Z - 0.04) / 2
    return "\n".join(
        f'      <geom type="box" pos="{sx * 0.35} {sy * 0.25} {h}" size="0.03 0.03 {h}" material="wood"/>'
        for sx in (-1, 1)
        for sy in (-1, 1)
    )


def build_mjcf(timestep: float = 0.002) -> str:
    """Return the MJCF XML of the robot and room.

    Parameters
    ----------
    timestep : float
        Physics time step in s.
    """
    return f"""<mujoco model="closedloop_stretch_room">
  <!-- Written for closedloop (no Hello Robot meshes). Joint ranges (range=) and velocity limits of the
       8 DoF follow Hello Robot's published Stretch 3 parameters: stretch_body robot_params_SE3.py and
       robot_params_SE3_eoa.py (github.com/hello-robot/stretch_body); lift 0-1.10 m, arm 0-0.52 m,
       wrist yaw, gripper (aperture 0-0.09 m) and head pan/tilt ranges derived in stimulation/teleop/joints.py. -->
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual><global offwidth="640" offheight="480"/><quality shadowsize="1024"/></visual>
  <default>
    <joint damping="1" armature="0.05"/>
    <geom friction="1 0.01 0.001" condim="3"/>
    <default class="robot"><geom contype="2" conaffinity="1" rgba="0.15 0.15 0.17 1"/></default>
    <default class="visual"><geom contype="0" conaffinity="0" group="1"/></default>
    <default class="pad"><geom contype="2" conaffinity="1" condim="4" friction="1.5 0.02 0.002"
      solref="0.004 1" solimp="0.95 0.99 0.001" rgba="0.9 0.5 0.1 1"/></default>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.82 0.82 0.8" rgb2="0.72 0.72 0.7"
      width="256" height="256"/>
    <material name="floor" texture="grid" texrepeat="8 8"/>
    <material name="wood" rgba="0.55 0.38 0.22 1"/>
    <material name="wall" rgba="0.9 0.9 0.86 1"/>
  </asset>
  <worldbody>
    <light pos="0 0 3.5" dir="0 0 -1" diffuse="0.8 0.8 0.8"/>
    <light pos="1.5 1.5 2.5" dir="-0.3 -0.5 -1" diffuse="0.4 0.4 0.4"/>
    <camera name="overview" pos="-1.1 1.7 2.2" xyaxes="-0.75 -0.66 0 0.38 -0.43 0.82"/>
    <camera name="side" pos="1.4 1.3 1.3" xyaxes="-1 0 0 0 -0.45 0.89"/>
    <camera name="task" pos="0.75 -1.85 1.3" mode="targetbody" target="target" fovy="60"/>
    <geom name="floor" type="plane" size="{ROOM_HALF} {ROOM_HALF} 0.05" material="floor" contype="1" conaffinity="2"/>
    <geom name="wall_n" type="box" pos="0 {ROOM_HALF} 0.5" size="{ROOM_HALF} 0.02 0.5" material="wall" contype="1"/>
    <geom name="wall_s" type="box" pos="0 -{ROOM_HALF} 0.5" size="{ROOM_HALF} 0.02 0.5" material="wall" contype="1"/>
    <geom name="wall_e" type="box" pos="{ROOM_HALF} 0 0.5" size="0.02 {ROOM_HALF} 0.5" material="wall" contype="1"/>
    <geom name="wall_w" type="box" pos="-{ROOM_HALF} 0 0.5" size="0.02 {ROOM_HALF} 0.5" material="wall" contype="1"/>
    <body name="table" pos="{TABLE_X} {TABLE_Y} 0">
      <geom name="table_top" type="box" pos="0 0 {TABLE_TOP_Z - 0.02}" size="0.40 0.30 0.02" material="wood"/>
{_table_legs()}
    </body>
    <body name="target" pos="{OBJECT_POS[0]} {OBJECT_POS[1]} {OBJECT_POS[2]}">
      <freejoint name="target_free"/>
      <geom name="target_geom" type="box" size="0.025 0.025 0.05" mass="0.1" condim="4"
        friction="1.5 0.02 0.002" rgba="0.1 0.45 0.85 1"/>
    </body>
    <body name="bottle" pos="{TABLE_X + 0.2} {TABLE_Y - 0.1} {TABLE_TOP_Z + 0.08}">
      <freejoint name="bottle_free"/>
      <geom name="bottle_geom" type="cylinder" size="0.03 0.08" mass="0.2" rgba="0.2 0.7 0.3 1"/>
    </body>

    <body name="base" pos="0 0 0" childclass="robot">
      <joint name="base_x" type="slide" axis="1 0 0" damping="20"/>
      <joint name="base_y" type="slide" axis="0 1 0" damping="20"/>
      <joint name="base_yaw" type="hinge" axis="0 0 1" damping="5"/>
      <geom name="base_body" type="box" pos="0 0 0.10" size="0.17 0.165 0.09" mass="20" contype="0" conaffinity="0"/>
      <geom type="cylinder" class="visual" pos="0.12 0.165 0.05" size="0.05 0.01" euler="1.5708 0 0"
        rgba="0.05 0.05 0.05 1"/>
      <geom type="cylinder" class="visual" pos="0.12 -0.165 0.05" size="0.05 0.01" euler="1.5708 0 0"
        rgba="0.05 0.05 0.05 1"/>
      <geom name="mast" type="box" class="visual" pos="-0.08 0.05 0.75" size="0.03 0.05 0.65" rgba="0.3 0.3 0.32 1"/>
      <body name="lift_link" pos="-0.08 0 {LIFT_BASE_Z}" gravcomp="1">
        <joint name="lift" type="slide" axis="0 0 1" range="{_rng("lift")}" damping="30"/>
        <geom name="carriage" type="box" class="visual" pos="0 0.0 0" size="0.06 0.06 0.05" mass="1.0"
          rgba="0.2 0.2 0.22 1"/>
        <geom type="box" class="visual" pos="0 {ARM_ROOT_Y / 2} 0" size="0.025 {-ARM_ROOT_Y / 2} 0.02" mass="0.3"
          rgba="0.35 0.35 0.38 1"/>
        <body name="arm_link" pos="0 0 0" gravcomp="1">
          <joint name="arm" type="slide" axis="0 -1 0" range="{_rng("arm")}" damping="30"/>
          <geom name="arm_tube" type="box" class="visual" pos="0 {ARM_ROOT_Y + 0.14} 0" size="0.02 0.14 0.017"
            mass="0.5" rgba="0.45 0.45 0.48 1"/>
          <body name="wrist" pos="0 {ARM_ROOT_Y} 0" gravcomp="1">
            <joint name="wrist_yaw" type="hinge" axis="0 0 1" range="{_rng("wrist_yaw")}" damping="0.5"/>
            <geom name="wrist_body" type="box" pos="0 -0.04 0" size="0.04 0.04 0.025" mass="0.2" contype="0"
              conaffinity="0"/>
            <body name="finger_left" pos="0 {FINGER_Y} 0" gravcomp="1">
              <joint name="finger_left" type="slide" axis="1 0 0" range="{_rng("gripper")}" damping="2"/>
              <geom name="pad_left" class="pad" type="box" pos="0.008 0 0" size="0.008 0.035 0.02" mass="0.03"/>
            </body>
            <body name="finger_right" pos="0 {FINGER_Y} 0" gravcomp="1">
              <joint name="finger_right" type="slide" axis="-1 0 0" range="{_rng("gripper")}" damping="2"/>
              <geom name="pad_right" class="pad" type="box" pos="-0.008 0 0" size="0.008 0.035 0.02" mass="0.03"/>
            </body>
          </body>
        </body>
      </body>
      <body name="head_pan_link" pos="-0.08 0.05 1.42" gravcomp="1">
        <joint name="head_pan" type="hinge" axis="0 0 1" range="{_rng("head_pan")}" damping="0.2"/>
        <geom type="cylinder" class="visual" size="0.03 0.02" mass="0.1"/>
        <body name="head_tilt_link" pos="0 0 0.04" gravcomp="1">
          <joint name="head_tilt" type="hinge" axis="0 1 0" range="{_rng("head_tilt")}" damping="0.2"/>
          <geom type="box" class="visual" size="0.03 0.09 0.025" mass="0.2" rgba="0.1 0.1 0.1 1"/>
          <camera name="head_cam" pos="0.04 0 0" xyaxes="0 -1 0 0.5 0 0.866" fovy="70"/>
        </body>
      </body>
    </body>
  </worldbody>
  <contact>
    <exclude body1="finger_left" body2="finger_right"/>
  </contact>
  <equality>
    <joint joint1="finger_right" joint2="finger_left" polycoef="0 1 0 0 0" solref="0.005 1"/>
  </equality>
  <actuator>
    <intvelocity name="v_base_x" joint="base_x" kp="80000" kv="2700" actrange="{-ROOM_HALF} {ROOM_HALF}"/>
    <intvelocity name="v_base_y" joint="base_y" kp="80000" kv="2700" actrange="{-ROOM_HALF} {ROOM_HALF}"/>
    <intvelocity name="v_base_yaw" joint="base_yaw" kp="8000" kv="140" actrange="-1000 1000"/>
    <intvelocity name="v_lift" joint="lift" kp="20000" kv="400" actrange="{_rng("lift")}"/>
    <intvelocity name="v_arm" joint="arm" kp="20000" kv="260" actrange="{_rng("arm")}"/>
    <intvelocity name="v_wrist_yaw" joint="wrist_yaw" kp="500" kv="11" actrange="{_rng("wrist_yaw")}"/>
    <intvelocity name="v_gripper" joint="finger_left" kp="600" kv="20" actrange="{_rng("gripper")}"
      forcerange="-25 25"/>
    <intvelocity name="v_head_pan" joint="head_pan" kp="500" kv="11" actrange="{_rng("head_pan")}"/>
    <intvelocity name="v_head_tilt" joint="head_tilt" kp="500" kv="11" actrange="{_rng("head_tilt")}"/>
  </actuator>
</mujoco>
"""


if __name__ == "__main__":  # write the MJCF: python -m stimulation.teleop.model > stretch_room.xml
    print(build_mjcf())
