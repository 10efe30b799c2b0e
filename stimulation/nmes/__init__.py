"""Closed-loop NMES of the knee (Arcolezi et al.): knee model, RISE and PID controllers, NARX
identification, genetic-algorithm gain tuning, and the helpers that run them together.

Modules: :mod:`~stimulation.nmes.knee_model` (plant), :mod:`~stimulation.nmes.rise` (RISE),
:mod:`~stimulation.nmes.pid` (PID baseline), :mod:`~stimulation.nmes.references` (target
trajectories), :mod:`~stimulation.nmes.closed_loop` (controller + plant runs),
:mod:`~stimulation.nmes.sysid` (NARX MLP, ONNX), :mod:`~stimulation.nmes.ga` (gain tuning),
:mod:`~stimulation.nmes.knee_stream` (LSL outlet of the simulated angle).
"""
