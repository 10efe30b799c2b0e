"""The decoder contract every pipeline stage relies on."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from decoders.card import ModelCard

__all__ = ["Decoder"]


@runtime_checkable
class Decoder(Protocol):
    """A fitted decoder: one analysis window in, one decision vector out.

    Threading: ``predict`` is called on the pipeline's decoding thread only, never on the GUI
    or acquisition thread, and never from two threads at once. A decoder must be stateless
    between calls (the output depends on the window alone); a decoder that keeps state (an
    adaptive classifier, a smoother) must say so in its docstring, say what resets it, and
    keep that state private to the decoding thread.

    Attributes
    ----------
    card : ModelCard
        What the decoder expects (rate, channel labels and order, window) and produces
        (output kind and classes). The pipeline checks it against the stream before decoding.
    """

    card: ModelCard

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Decode one window.

        Parameters
        ----------
        window : ndarray, shape (n_samples, n_channels), dtype float32
            The most recent ``card.n_window_samples`` samples, preprocessed as the card's
            ``preprocessing`` says, columns in ``card.channel_labels`` order, in the card's units.
            The pipeline passes a read-only view of its window buffer, valid during the call
            only: copy it to keep it.

        Returns
        -------
        ndarray, shape (len(card.classes),), dtype float64
            Class probabilities summing to 1 for ``output == "discrete"``, per-class event
            probabilities for ``"event"``, or the continuous output vector for ``"continuous"``.
            A new array the caller may keep.

        Raises
        ------
        ValueError
            The window has the wrong shape or holds non-finite values.
        """
        ...
