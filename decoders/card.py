"""Model cards: the metadata every decoder file carries, and the check against a live stream.

A decoder is an ONNX file whose metadata holds a JSON *model card* under the key
:data:`CARD_METADATA_KEY`. The card names the paradigm, sampling rate, channel labels and
order, analysis window, output kind and classes, the preprocessing the model expects and
where the model came from (DESIGN: "Models are files with cards"). Loading code reads the
card with :func:`read_card` and refuses a stream that does not match with
:meth:`ModelCard.check_stream`.

Card JSON (``card_version`` 1)::

    {
      "card_version": 1,
      "paradigm": "ssvep",                       # ssvep | mi | emg | continuous | spindle | other
      "srate": 250.0,                            # Hz
      "channel_labels": ["PO7", "O1", "Oz"],     # column order of the window
      "window_s": 1.0,                           # s
      "hop_s": 0.04,                             # s, recommended decision hop
      "output": "discrete",                      # discrete | continuous | event
      "classes": ["8.0Hz", "10.0Hz"],            # class names, or output dimension names
      "input_name": "window",                    # name of the graph input
      "preprocessing": {"bandpass_hz": [5.0, 45.0], "filter_order": 4, "notch_hz": null,
                        "units": "microvolts", "reference": "none"},
      "provenance": {"created_by": "closedloop", "created_at": "2024-01-01T00:00:00+00:00",
                     "method": "ssvep-reference-projection", "training_data": "none",
                     "code_version": "0.1.0"}
    }
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from acquisition.validation import check_int, check_option, check_positive, check_type

__all__ = [
    "CARD_METADATA_KEY",
    "CARD_VERSION",
    "OUTPUTS",
    "PARADIGMS",
    "UNITS",
    "CardMismatchError",
    "ModelCard",
    "card_from_metadata",
    "embed_card",
    "read_card",
]

#: Key of the ONNX ``metadata_props`` entry that holds the card JSON.
CARD_METADATA_KEY = "closedloop.model_card"

#: The card format version this code writes and reads.
CARD_VERSION = 1
SUPPORTED_CARD_VERSIONS = (1,)

PARADIGMS = ("ssvep", "mi", "emg", "continuous", "spindle", "other")
OUTPUTS = ("discrete", "continuous", "event")
UNITS = ("microvolts", "volts")

#: Provenance keys every card must name.
REQUIRED_PROVENANCE_KEYS = ("created_by", "created_at", "method")

#: Relative tolerance when comparing the card's sampling rate with a stream's.
SRATE_RTOL = 1e-6

_PREFIX = "model card key"


def _key(path: str) -> str:
    return f"{_PREFIX} {path!r}"


class CardMismatchError(ValueError):
    """A model card does not fit the stream it is about to decode.

    The message lists every mismatch (rate, channel count, missing, extra and reordered
    labels), each with the model's and the stream's value.
    """


def _json_copy(value: Any, name: str) -> Any:
    """Return a JSON round-tripped deep copy of ``value``; refuse what JSON cannot hold (incl. NaN)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{_key(name)} must be JSON-serialisable (str, finite numbers, bool, None, lists, dicts with str keys), "
            f"got {value!r}: {err}."
        ) from err


def _check_labels(value: Any, name: str, *, minimum: int = 1) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{_key(name)} must be a list of str, got {type(value).__name__} ({value!r}).")
    labels = tuple(value)
    for i, lbl in enumerate(labels):
        check_type(lbl, str, f"{_key(name)}[{i}]")
        if not lbl.strip():
            raise ValueError(f"{_key(name)}[{i}] must be a non-empty label, got {lbl!r}.")
    if len(labels) < minimum:
        raise ValueError(f"{_key(name)} must list at least {minimum} name(s), got {list(labels)!r}.")
    dupes = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
    if dupes:
        raise ValueError(f"{_key(name)} must not repeat a name; repeated: {dupes} in {list(labels)!r}.")
    return labels


def _check_preprocessing(pre: dict[str, Any], srate: float) -> None:
    """Validate the documented preprocessing keys; other keys pass through untouched."""
    if "bandpass_hz" in pre:
        name = "preprocessing.bandpass_hz"
        band = pre["bandpass_hz"]
        if not isinstance(band, list) or len(band) != 2:
            raise ValueError(f"{_key(name)} must be a [low, high] pair in Hz, got {band!r}.")
        lo = check_positive(band[0], f"{_key(name)}[0]", allow_zero=True)
        hi = check_positive(band[1], f"{_key(name)}[1]")
        if not lo < hi < srate / 2:
            raise ValueError(f"{_key(name)} must satisfy 0 <= low < high < Nyquist ({srate / 2:g} Hz), got {band!r}.")
    if "filter_order" in pre:
        check_int(pre["filter_order"], _key("preprocessing.filter_order"), minimum=1)
    if "notch_hz" in pre and pre["notch_hz"] is not None:
        notch = check_positive(pre["notch_hz"], _key("preprocessing.notch_hz"))
        if notch >= srate / 2:
            raise ValueError(
                f"{_key('preprocessing.notch_hz')} must be below Nyquist ({srate / 2:g} Hz) or null, got {notch!r}."
            )
    if "units" in pre:
        check_option(pre["units"], UNITS, _key("preprocessing.units"))
    if "reference" in pre:
        check_type(pre["reference"], str, _key("preprocessing.reference"))


def _check_provenance(prov: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED_PROVENANCE_KEYS if k not in prov]
    if missing:
        raise ValueError(
            f"{_key('provenance')} must name {list(REQUIRED_PROVENANCE_KEYS)}; missing {missing} in {prov!r}."
        )
    for k in ("created_by", "method", "code_version"):
        if k in prov:
            check_type(prov[k], str, _key(f"provenance.{k}"))
    created_at = check_type(prov["created_at"], str, _key("provenance.created_at"))
    try:
        datetime.fromisoformat(created_at)
    except ValueError as err:
        raise ValueError(
            f"{_key('provenance.created_at')} must be an ISO 8601 timestamp such as "
            f"'2024-01-01T12:00:00+00:00', got {created_at!r}."
        ) from err


@dataclass(frozen=True)
class ModelCard:
    """What a decoder expects and produces, stored as JSON in the ONNX file's metadata.

    Every field is validated on construction; errors name the key (``model card key 'srate'``),
    the rule and the value found.

    Parameters
    ----------
    paradigm : str
        One of ``ssvep``, ``mi``, ``emg``, ``continuous``, ``spindle``, ``other``.
    srate : float
        Sampling rate of the input window in Hz (> 0).
    channel_labels : tuple of str
        Channel labels in the column order of the input window; unique, at least one.
    window_s : float
        Length of the analysis window in s (> 0); the window holds ``round(window_s * srate)`` samples.
    hop_s : float
        Recommended hop between decisions in s (> 0).
    output : str
        ``"discrete"`` (class probabilities summing to 1), ``"continuous"`` (a real vector)
        or ``"event"`` (per-class event probabilities).
    classes : tuple of str
        Class names for discrete/event output (discrete needs at least two), or the names of the
        output dimensions for continuous output; unique. Their count is the output length.
    preprocessing : dict
        JSON-able description of what must happen to the raw stream before the window reaches
        the model. Documented (and validated when present) keys: ``bandpass_hz`` ``[low, high]``
        in Hz, ``filter_order`` int >= 1, ``notch_hz`` float in Hz or ``None``, ``units``
        ``"microvolts"`` or ``"volts"``, ``reference`` str (``"none"``, ``"average"`` or a label).
        Other keys are kept as they are.
    provenance : dict
        JSON-able record of where the model came from. Must name ``created_by`` (str),
        ``created_at`` (ISO 8601 str) and ``method`` (str); usual extras are ``training_data``,
        ``code_version`` and ``parameters``.
    card_version : int
        Card format version; only ``1`` is known.
    input_name : str
        Name of the ONNX graph input that receives the window.
    """

    paradigm: str
    srate: float
    channel_labels: tuple[str, ...]
    window_s: float
    hop_s: float
    output: str
    classes: tuple[str, ...]
    preprocessing: dict[str, Any] = field(hash=False)
    provenance: dict[str, Any] = field(hash=False)
    card_version: int = CARD_VERSION
    input_name: str = "window"

    def __post_init__(self) -> None:
        version = check_int(self.card_version, _key("card_version"))
        if version not in SUPPORTED_CARD_VERSIONS:
            raise ValueError(
                f"{_key('card_version')}: unknown card_version {version!r}; this closedloop reads "
                f"{list(SUPPORTED_CARD_VERSIONS)}. Upgrade closedloop or re-export the model with card_version 1."
            )
        check_option(self.paradigm, PARADIGMS, _key("paradigm"))
        srate = check_positive(self.srate, _key("srate"))
        labels = _check_labels(self.channel_labels, "channel_labels")
        window_s = check_positive(self.window_s, _key("window_s"))
        hop_s = check_positive(self.hop_s, _key("hop_s"))
        if round(window_s * srate) < 1:
            raise ValueError(f"{_key('window_s')} must span at least one sample at {srate:g} Hz, got {window_s!r} s.")
        check_option(self.output, OUTPUTS, _key("output"))
        classes = _check_labels(self.classes, "classes", minimum=2 if self.output == "discrete" else 1)
        check_type(self.preprocessing, dict, _key("preprocessing"))
        check_type(self.provenance, dict, _key("provenance"))
        pre = _json_copy(self.preprocessing, "preprocessing")
        prov = _json_copy(self.provenance, "provenance")
        _check_preprocessing(pre, srate)
        _check_provenance(prov)
        check_type(self.input_name, str, _key("input_name"))
        if not self.input_name:
            raise ValueError(f"{_key('input_name')} must be a non-empty graph input name, got {self.input_name!r}.")
        for name, value in (
            ("srate", srate),
            ("window_s", window_s),
            ("hop_s", hop_s),
            ("channel_labels", labels),
            ("classes", classes),
            ("preprocessing", pre),
            ("provenance", prov),
            ("card_version", version),
        ):
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ derived
    @property
    def n_channels(self) -> int:
        """Number of input channels, ``len(channel_labels)``."""
        return len(self.channel_labels)

    @property
    def n_window_samples(self) -> int:
        """Number of samples in one input window, ``round(window_s * srate)``."""
        return round(self.window_s * self.srate)

    @property
    def n_outputs(self) -> int:
        """Length of the 1-D decoder output, ``len(classes)``."""
        return len(self.classes)

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Return the card as a plain JSON-able dict (tuples become lists)."""
        d: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            d[f.name] = list(value) if isinstance(value, tuple) else json.loads(json.dumps(value))
        return d

    def to_json(self) -> str:
        """Return the card as compact JSON text with sorted keys (deterministic for equal cards)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCard:
        """Build a card from a dict as produced by :meth:`to_dict`, validating every key.

        Raises
        ------
        TypeError
            ``d`` is not a mapping, or a key holds a value of the wrong type.
        ValueError
            A required key is missing, a key is unknown, ``card_version`` is unknown, or a value
            breaks its rule. The message names the key path, the rule and the value found.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"model card must be a JSON object (dict), got {type(d).__name__} ({d!r}).")
        if "card_version" in d:
            version = check_int(d["card_version"], _key("card_version"))
            if version not in SUPPORTED_CARD_VERSIONS:
                raise ValueError(
                    f"{_key('card_version')}: unknown card_version {version!r}; this closedloop reads "
                    f"{list(SUPPORTED_CARD_VERSIONS)}. Upgrade closedloop or re-export the model with card_version 1."
                )
        names = [f.name for f in fields(cls)]
        optional = {"card_version", "input_name"}
        missing = [n for n in names if n not in d and n not in optional]
        if missing:
            raise ValueError(f"model card is missing required key(s) {missing}; keys found: {sorted(d)}.")
        unknown = sorted(str(k) for k in d if k not in names)
        if unknown:
            raise ValueError(f"model card has unknown key(s) {unknown} for card_version 1; known keys: {names}.")
        return cls(**{n: d[n] for n in names if n in d})

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        """Parse card JSON text and validate it with :meth:`from_dict`."""
        check_type(text, (str, bytes), "model card JSON")
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"model card is not valid JSON ({err}); text starts with {str(text)[:80]!r}.") from err
        return cls.from_dict(d)

    # -------------------------------------------------------------- stream check
    def check_stream(self, srate: float, labels: Sequence[str], *, stream_name: str = "") -> None:
        """Refuse a stream whose rate or channels do not match the card.

        Parameters
        ----------
        srate : float
            Nominal sampling rate of the stream in Hz.
        labels : sequence of str
            Channel labels of the stream in column order (after any channel selection the
            pipeline does before decoding).
        stream_name : str
            Stream name used in the message.

        Raises
        ------
        CardMismatchError
            Rate differs by more than 1e-6 relative, or the labels differ in count, content or
            order. One message lists every mismatch with the model's and the stream's value.
        """
        stream_srate = check_positive(srate, "srate")
        stream_labels = [check_type(lbl, str, f"labels[{i}]") for i, lbl in enumerate(labels)]
        check_type(stream_name, str, "stream_name")
        stream = f"stream {stream_name!r}" if stream_name else "the stream"
        problems: list[str] = []
        if abs(stream_srate - self.srate) > SRATE_RTOL * self.srate:
            problems.append(f"model expects {self.srate!r} Hz but {stream} runs at {stream_srate!r} Hz")
        model_labels = list(self.channel_labels)
        if stream_labels != model_labels:
            if len(stream_labels) != len(model_labels):
                problems.append(
                    f"model expects {len(model_labels)} channels {model_labels} but {stream} has "
                    f"{len(stream_labels)} channels {stream_labels}"
                )
            missing = [lbl for lbl in model_labels if lbl not in stream_labels]
            extra = [lbl for lbl in stream_labels if lbl not in model_labels]
            if missing:
                problems.append(f"channels missing from {stream}: {missing}")
            if extra:
                problems.append(f"channels in {stream} that the model does not use: {extra}")
            if not missing and not extra:
                problems.append(f"channel order differs: model expects {model_labels} but {stream} has {stream_labels}")
            elif missing and {m.casefold() for m in missing} == {e.casefold() for e in extra}:
                problems.append("the missing and extra labels differ only in letter case")
        if problems:
            raise CardMismatchError(
                f"Model card does not match {stream}: "
                + "; ".join(problems)
                + ". Fix: select and reorder the stream's channels to the card's labels, resample to the card's "
                "rate, or load a model made for this montage and rate."
            )


# ------------------------------------------------------------------ ONNX files
def embed_card(model: onnx.ModelProto, card: ModelCard) -> None:
    """Store ``card`` as JSON in ``model.metadata_props`` under :data:`CARD_METADATA_KEY`.

    An existing card entry is replaced; other metadata entries are kept.
    """
    check_type(model, onnx.ModelProto, "model")
    check_type(card, ModelCard, "card")
    for prop in model.metadata_props:
        if prop.key == CARD_METADATA_KEY:
            prop.value = card.to_json()
            return
    entry = model.metadata_props.add()
    entry.key = CARD_METADATA_KEY
    entry.value = card.to_json()


def card_from_metadata(metadata: Mapping[str, str], source: str) -> ModelCard:
    """Build the card from an ONNX metadata mapping (``custom_metadata_map``).

    Parameters
    ----------
    metadata : mapping of str to str
        The model's metadata properties.
    source : str
        Where the metadata came from (a file path), used in messages.
    """
    if CARD_METADATA_KEY not in metadata:
        raise ValueError(
            f"ONNX model {source!r} has no model card (metadata key {CARD_METADATA_KEY!r}; keys found: "
            f"{sorted(metadata)}). Fix: embed one with decoders.card.embed_card(model, card) before saving."
        )
    try:
        return ModelCard.from_json(metadata[CARD_METADATA_KEY])
    except TypeError as err:
        raise TypeError(f"ONNX model {source!r} has an invalid model card: {err}") from err
    except ValueError as err:
        raise ValueError(f"ONNX model {source!r} has an invalid model card: {err}") from err


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """Read the model card from an ONNX file without creating an inference session.

    Parameters
    ----------
    path : str or path-like
        ONNX model file.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or is not a file.
    ValueError
        The file is not an ONNX model, has no card, or the card is invalid.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file {str(p)!r} does not exist (or is not a file).")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise ValueError(f"model file {str(p)!r} is not an ONNX model (protobuf parsing failed: {err}).") from err
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise ValueError(
            f"model file {str(p)!r} is not an ONNX model (no IR version, graph or opset found; "
            f"size {p.stat().st_size} bytes)."
        )
    return card_from_metadata({prop.key: prop.value for prop in model.metadata_props}, str(p))
