"""Continuous decoding of kinematics from binned features: Kalman filter, Wiener filter, discriminative Kalman filter.

Modules: :mod:`.data` (NPZ/XDF datasets), :mod:`.filters` (the KF/DKF recursions in numpy),
:mod:`.fit` (fitting KF, Wiener, DKF-NW, DKF-NN), :mod:`.graph` (ONNX graphs of the
observation parts), :mod:`.runtime` (stateful decoders registered with
:func:`decoders.loader.register_runtime`), :mod:`.metrics`, :mod:`.methods` (train/evaluate).
"""
