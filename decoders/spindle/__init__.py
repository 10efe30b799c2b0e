"""Sleep-spindle detection after Portiloop (Valenchon et al. 2022): causal 250 Hz front end, a 1-D conv + GRU
network run as staggered copies carrying their hidden state, threshold, refractory period and stimulation triggers.

Modules: :mod:`~decoders.spindle.preprocessing` (resampling, filters, running standardisation),
:mod:`~decoders.spindle.detector` (the stateful online detector and event logic),
:mod:`~decoders.spindle.runtime` (the ``spindle-gru`` decoder runtime for sessions),
:mod:`~decoders.spindle.online` (LSL markers and stimulation triggers in a session),
:mod:`~decoders.spindle.events` (event matching and scores), :mod:`~decoders.spindle.data` (spindle datasets),
:mod:`~decoders.spindle.evaluation` (``closedloop evaluate``), :mod:`~decoders.spindle.variant` (change detector
settings of a model), :mod:`~decoders.spindle.network` and :mod:`~decoders.spindle.training` (torch; ``train``
extra) and :mod:`~decoders.spindle.methods` (registers method ``portiloop`` and the spindle evaluator).
See docs/spindle.md.
"""
