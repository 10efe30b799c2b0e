"""Conversions between closedloop's :class:`StreamInfo` and pylsl stream descriptions.

Channel metadata follows the LSL convention ``desc/channels/channel/{label,unit,type}``
(https://github.com/sccn/xdf/wiki/Meta-Data), so any LSL tool (LabRecorder, mne-lsl)
sees labels and units.
"""

from __future__ import annotations

import pylsl

from acquisition.stream import ChannelInfo, StreamInfo

_FORMATS = {
    "float32": pylsl.cf_float32,
    "double64": pylsl.cf_double64,
    "string": pylsl.cf_string,
    "int32": pylsl.cf_int32,
    "int16": pylsl.cf_int16,
    "int8": pylsl.cf_int8,
    "int64": pylsl.cf_int64,
}
_FORMAT_NAMES = {v: k for k, v in _FORMATS.items()}


def to_lsl_info(info: StreamInfo, *, chunk_size: int = 0) -> pylsl.StreamInfo:
    """Build a ``pylsl.StreamInfo`` with channel labels, units and types in ``desc``."""
    lsl = pylsl.StreamInfo(
        info.name, info.type, info.n_channels, info.srate, _FORMATS[info.channel_format], info.source_id
    )
    chans = lsl.desc().append_child("channels")
    for ch in info.channels:
        c = chans.append_child("channel")
        c.append_child_value("label", ch.label)
        if ch.unit:
            c.append_child_value("unit", ch.unit)
        if ch.type:
            c.append_child_value("type", ch.type)
    for key, value in info.desc.items():
        lsl.desc().append_child_value(str(key), str(value))
    return lsl


def from_lsl_info(lsl: pylsl.StreamInfo) -> StreamInfo:
    """Read a ``pylsl.StreamInfo`` (ideally the full one from ``inlet.info()``) into a StreamInfo.

    Channels without a ``desc/channels/channel`` entry are named ``ch1`` ... ``chN``.
    """
    n = lsl.channel_count()
    labels, units, types = [f"ch{i + 1}" for i in range(n)], [""] * n, [lsl.type()] * n
    ch = lsl.desc().child("channels").child("channel")
    i = 0
    while not ch.empty() and i < n:
        label = ch.child_value("label")
        if label:
            labels[i] = label
        units[i] = ch.child_value("unit")
        types[i] = ch.child_value("type") or lsl.type()
        ch = ch.next_sibling("channel")
        i += 1
    fmt = _FORMAT_NAMES.get(lsl.channel_format(), "float32")
    chans = tuple(ChannelInfo(lbl, u, t) for lbl, u, t in zip(labels, units, types, strict=True))
    return StreamInfo(lsl.name(), lsl.type(), chans, float(lsl.nominal_srate()), fmt, lsl.source_id())


def make_outlet(info: StreamInfo, *, chunk_size: int = 0, max_buffered: int = 360) -> pylsl.StreamOutlet:
    """Create an LSL outlet carrying ``info`` with its channel metadata."""
    return pylsl.StreamOutlet(to_lsl_info(info), chunk_size, max_buffered)
