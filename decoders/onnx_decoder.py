"""Decoder backed by an ONNX file with an embedded model card, run by onnxruntime on the CPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from acquisition.validation import check_int, check_type
from decoders.card import ModelCard, card_from_metadata

__all__ = ["OnnxDecoder"]

# Errors onnxruntime raises when a file cannot be turned into a session.
_ORT_LOAD_ERRORS: tuple[type[BaseException], ...] = (
    _ort_state.Fail,
    _ort_state.InvalidArgument,
    _ort_state.InvalidGraph,
    _ort_state.InvalidProtobuf,
    _ort_state.NoModel,
    _ort_state.NoSuchFile,
    _ort_state.NotFound,
    _ort_state.NotImplemented,
    _ort_state.RuntimeException,
)


def _dim_ok(dim: Any, expected: int) -> bool:
    """True if an ONNX dimension (int, symbolic name or None) can take the value ``expected``."""
    return not isinstance(dim, int) or dim == expected


class OnnxDecoder:
    """Run an ONNX decoder file whose metadata holds a :class:`~decoders.card.ModelCard`.

    The session uses the CPU execution provider, sequential execution and all graph
    optimisations. At load time the graph input (named ``card.input_name``, float32) must have a
    shape compatible with ``(1, card.n_window_samples, card.n_channels)`` and the first graph
    output must yield ``len(card.classes)`` values per window; one warm-up run on a zero window
    checks the output size and takes the first-call cost out of the real-time loop.

    Threading: ``predict`` and ``predict_batch`` reuse one preallocated input buffer, so call
    them from one thread only (the pipeline's decoding thread). The decoder itself is stateless
    between calls.

    Parameters
    ----------
    path : str or path-like
        The ``.onnx`` file.
    intra_op_threads : int
        Threads onnxruntime may use inside one operator (>= 1). Keep 1 for small models next to
        a real-time acquisition thread.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a loadable ONNX model, has no or an invalid card, or its graph disagrees
        with its card (input name, dtype or shape, output length). The message names the path.
    """

    def __init__(self, path: str | os.PathLike[str], *, intra_op_threads: int = 1) -> None:
        check_type(path, (str, os.PathLike), "path")
        threads = check_int(intra_op_threads, "intra_op_threads", minimum=1)
        self.path = Path(path)
        where = str(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file {where!r} does not exist (or is not a file).")

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only; no per-session chatter on stderr
        try:
            session = ort.InferenceSession(where, sess_options=opts, providers=["CPUExecutionProvider"])
        except _ORT_LOAD_ERRORS as err:
            raise ValueError(f"model file {where!r} is not a loadable ONNX model: {err}") from err
        self._session = session
        self.card: ModelCard = card_from_metadata(session.get_modelmeta().custom_metadata_map, where)
        card = self.card
        n_samples, n_channels, n_out = card.n_window_samples, card.n_channels, card.n_outputs

        inputs = {i.name: i for i in session.get_inputs()}
        if card.input_name not in inputs:
            raise ValueError(
                f"model {where!r}: the card names graph input {card.input_name!r} but the graph's inputs are "
                f"{sorted(inputs)}. Fix: rename the input or the card's 'input_name'."
            )
        if len(inputs) != 1:
            raise ValueError(
                f"model {where!r}: the graph must have exactly one input ({card.input_name!r}), found {sorted(inputs)}."
            )
        inp = inputs[card.input_name]
        if inp.type != "tensor(float)":
            raise ValueError(
                f"model {where!r}: graph input {inp.name!r} must be float32 (tensor(float)), got {inp.type}."
            )
        shape = list(inp.shape)
        expected = (1, n_samples, n_channels)
        if (
            len(shape) != 3
            or not _dim_ok(shape[0], 1)
            or not _dim_ok(shape[1], n_samples)
            or not _dim_ok(shape[2], n_channels)
        ):
            raise ValueError(
                f"model {where!r}: graph input {inp.name!r} has shape {shape} but the card implies {expected} "
                f"(batch, {card.window_s!r} s x {card.srate!r} Hz = {n_samples} samples, {n_channels} channels "
                f"{list(card.channel_labels)}). Fix: re-export the model or correct its card."
            )
        self._batch_dynamic = not isinstance(shape[0], int)

        out = session.get_outputs()[0]
        self.output_name: str = out.name
        out_shape = list(out.shape)
        if out_shape and not _dim_ok(out_shape[-1], n_out):
            raise ValueError(
                f"model {where!r}: graph output {out.name!r} has shape {out_shape} but the card lists "
                f"{n_out} classes {list(card.classes)}. Fix: re-export the model or correct its card."
            )

        self._input = np.zeros(expected, dtype=np.float32)
        self._feed = {card.input_name: self._input}
        self._output_names = [self.output_name]
        warm = np.asarray(session.run(self._output_names, self._feed)[0])
        if warm.size != n_out:
            raise ValueError(
                f"model {where!r}: graph output {out.name!r} yields {warm.size} values (shape {list(warm.shape)}) "
                f"per window but the card lists {n_out} classes {list(card.classes)}."
            )
        self._expected_window = (n_samples, n_channels)

    @property
    def supports_batch(self) -> bool:
        """True if the graph's batch dimension is dynamic, so :meth:`predict_batch` can run."""
        return self._batch_dynamic

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Decode one window.

        Parameters
        ----------
        window : ndarray, shape (n_samples, n_channels)
            ``card.n_window_samples`` samples in ``card.channel_labels`` column order and the
            card's units; float32 preferred (other real dtypes are cast).

        Returns
        -------
        ndarray, shape (len(card.classes),), dtype float64
            The graph's output for this window (class probabilities for a discrete card); a copy.

        Raises
        ------
        ValueError
            Wrong shape or non-finite values.
        """
        if not isinstance(window, np.ndarray) or window.shape != self._expected_window:
            found = window.shape if isinstance(window, np.ndarray) else type(window).__name__
            raise ValueError(
                f"window must have shape (n_samples, n_channels) = {self._expected_window} for model "
                f"{str(self.path)!r}, got {found}."
            )
        if window.dtype == np.float32 and window.flags.c_contiguous:
            feed = {self.card.input_name: window[None]}  # a view, no copy (the pipeline hands a contiguous window)
            buf = window
        else:
            buf = self._input[0]
            np.copyto(buf, window, casting="same_kind")
            feed = self._feed
        if not np.isfinite(buf).all():
            raise ValueError(f"window for model {str(self.path)!r} holds NaN or infinite values; refusing to decode.")
        out = self._session.run(self._output_names, feed)[0]
        return np.array(out, dtype=np.float64).reshape(-1)

    def predict_batch(self, windows: np.ndarray) -> np.ndarray:
        """Decode several windows in one session run (offline evaluation, calibration).

        Parameters
        ----------
        windows : ndarray, shape (n_windows, n_samples, n_channels)
            Windows as for :meth:`predict`.

        Returns
        -------
        ndarray, shape (n_windows, len(card.classes)), dtype float64

        Raises
        ------
        RuntimeError
            The graph has a fixed batch size of 1 (see :attr:`supports_batch`).
        ValueError
            Wrong shape or non-finite values.
        """
        if not self._batch_dynamic:
            raise RuntimeError(
                f"model {str(self.path)!r} has a fixed batch size of 1; predict_batch needs a dynamic batch "
                "dimension. Fix: call predict() per window or re-export with a symbolic batch dimension."
            )
        if not isinstance(windows, np.ndarray) or windows.ndim != 3 or windows.shape[1:] != self._expected_window:
            found = windows.shape if isinstance(windows, np.ndarray) else type(windows).__name__
            raise ValueError(
                f"windows must have shape (n_windows, n_samples, n_channels) = (n, *{self._expected_window}) "
                f"for model {str(self.path)!r}, got {found}."
            )
        if windows.shape[0] == 0:
            return np.zeros((0, self.card.n_outputs), dtype=np.float64)
        batch = np.ascontiguousarray(windows, dtype=np.float32)
        if not np.isfinite(batch).all():
            raise ValueError(f"windows for model {str(self.path)!r} hold NaN or infinite values; refusing to decode.")
        out = self._session.run(self._output_names, {self.card.input_name: batch})[0]
        return np.array(out, dtype=np.float64).reshape(windows.shape[0], -1)

    def __repr__(self) -> str:
        c = self.card
        return (
            f"OnnxDecoder({str(self.path)!r}, paradigm={c.paradigm!r}, srate={c.srate!r}, "
            f"channels={c.n_channels}, window_s={c.window_s!r}, classes={list(c.classes)!r})"
        )
