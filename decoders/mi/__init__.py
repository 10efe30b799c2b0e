"""Motor-imagery decoders: CSP + LDA and EEG-SimpleConv, exported to ONNX, plus the feedback smoother.

Modules: :mod:`decoders.mi.options` (the ``[mi]`` spec table, causal preprocessing, folds, cards),
:mod:`decoders.mi.csp` (CSP + LDA fitting and its ONNX graph), :mod:`decoders.mi.alignment`
(Euclidean alignment and the resampling matrix), :mod:`decoders.mi.simpleconv` (the torch network,
training only), :mod:`decoders.mi.feedback` (smoothed class-probability stream for a feedback bar)
and :mod:`decoders.mi.methods` (registration with ``closedloop train mi`` / ``evaluate``).
"""
