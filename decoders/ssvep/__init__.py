"""SSVEP decoders: FBCCA (training-free), ensemble TRCA, the Guney et al. DNN, rest detection and ITR.

``decoders.ssvep.methods`` registers the training methods ``fbcca``, ``etrca`` and ``dnn`` and the
SSVEP evaluator; ``decoders.ssvep.runtime`` registers the runtimes that run the model files.
"""
