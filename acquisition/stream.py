"""Stream metadata shared by every source, the recorder and the decoders."""

from __future__ import annotations

from dataclasses import dataclass, field

from acquisition.validation import check_option, check_positive, check_type

CHANNEL_FORMATS = ("float32", "double64", "int8", "int16", "int32", "int64", "string")


@dataclass(frozen=True)
class ChannelInfo:
    """One channel: label (e.g. ``"Oz"``), unit (e.g. ``"microvolts"``) and type (e.g. ``"EEG"``)."""

    label: str
    unit: str = ""
    type: str = ""


@dataclass(frozen=True)
class StreamInfo:
    """Metadata of one stream, in the LSL sense.

    Parameters
    ----------
    name, type : str
        LSL stream name and content type (``"EEG"``, ``"Markers"``, ...).
    channels : tuple of ChannelInfo
        One entry per channel, in column order of the samples × channels arrays.
    srate : float
        Nominal sampling rate in Hz; 0 for irregular streams (markers, commands).
    channel_format : str
        One of ``float32``, ``double64``, ``int8``, ``int16``, ``int32``, ``int64``, ``string``.
    source_id : str
        Unique identifier of the device/program; used to re-acquire a stream that came back.
    desc : dict
        Extra metadata to carry along (flat ``str -> str``), written into the XDF header.
    """

    name: str
    type: str
    channels: tuple[ChannelInfo, ...]
    srate: float
    channel_format: str = "float32"
    source_id: str = ""
    desc: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        check_type(self.name, str, "StreamInfo.name")
        check_type(self.type, str, "StreamInfo.type")
        check_positive(self.srate, "StreamInfo.srate", allow_zero=True)
        check_option(self.channel_format, CHANNEL_FORMATS, "StreamInfo.channel_format")
        if len(self.channels) == 0:
            raise ValueError(f"StreamInfo.channels of stream {self.name!r} must not be empty.")
        object.__setattr__(self, "channels", tuple(self.channels))

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return len(self.channels)

    @property
    def labels(self) -> list[str]:
        """Channel labels in column order."""
        return [c.label for c in self.channels]

    @property
    def is_string(self) -> bool:
        """True for marker (string) streams."""
        return self.channel_format == "string"

    @classmethod
    def simple(
        cls,
        name: str,
        type: str,
        labels: list[str],
        srate: float,
        *,
        unit: str = "",
        channel_type: str = "",
        channel_format: str = "float32",
        source_id: str = "",
    ) -> StreamInfo:
        """Build a StreamInfo whose channels share one unit and type."""
        chans = tuple(ChannelInfo(lbl, unit, channel_type or type) for lbl in labels)
        return cls(name, type, chans, float(srate), channel_format, source_id)
