"""HD-EMG gesture decoding: causal preprocessing, windowed time-domain features, LDA and grid CNN, post-processing.

Modules: :mod:`.features` (preprocessing, windows, RMS/Hudgins TD features in numpy),
:mod:`.graph` (the same features and the classifier heads as ONNX graphs), :mod:`.lda`,
:mod:`.cnn`, :mod:`.windows` (dataset spec -> labelled windows), :mod:`.postprocess`
(majority vote, rest gating, confidence threshold, mode switch -> teleop commands) and
:mod:`.methods` (``closedloop train/evaluate`` registration).
"""
