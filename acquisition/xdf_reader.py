"""Read XDF recordings into :class:`RecordedStream` objects, on top of ``pyxdf``.

``pyxdf.load_xdf`` does all the parsing of chunk contents; this module adds three things:

1. **Typed results.** Each stream comes back as a :class:`RecordedStream` holding a
   :class:`~acquisition.stream.StreamInfo` (channel labels, units and types from
   ``<desc><channels><channel>`` when present, else ``"ch1"`` ... ``"chN"``), the samples and
   the timestamps. Empty streams have data of shape ``(0, n_channels)`` with the stream's dtype.
2. **Clear errors.** A missing file raises ``FileNotFoundError``; a file that is not XDF or is
   damaged raises :class:`XdfFormatError` naming the file, the byte offset and the problem.
3. **Safe handling of truncated files.** Before ``pyxdf`` sees the file, its chunk *framing*
   (length prefix, tag, stream id of every chunk; never the contents) is walked once. A file
   that ends inside a chunk -- a recording interrupted by a crash, a full disk or a copy that
   stopped -- is handed to ``pyxdf`` cut at the end of its last whole chunk, and an
   :class:`XdfTruncatedWarning` says how many bytes were dropped (or, with
   ``allow_truncated=False``, :class:`XdfFormatError` is raised).

What pyxdf itself does with damaged files (pyxdf 1.17, checked by cutting a valid file at every
byte offset)
--------------------------------------------------------------------------------------------------
- A file not starting with ``b"XDF:"``: ``OSError("Invalid XDF file ...")``; a missing file: a
  bare ``Exception``.
- Cut at a chunk boundary: loads cleanly; streams whose StreamFooter is missing are fine. This
  is what a writer killed between two chunks (see :mod:`acquisition.xdf_writer`) leaves behind.
- Cut inside the XML of the FileHeader or of a StreamHeader: ``xml.etree`` ``ParseError``. Cut
  inside a chunk's 2-byte tag or inside a ClockOffset: ``struct.error``. Cut inside a length
  prefix, a stream id, a Boundary or a StreamFooter: a logged error at most, and the file loads.
- Cut inside a Samples chunk: the partial chunk is dropped with a *logged* error (no exception,
  no warning) -- **except** when the cut falls inside the values of the chunk's last sample of
  a numeric stream: then pyxdf returns the chunk whole and silently fills that sample with bytes
  left over from the previous sample. Cutting the file at the last whole chunk, as done here,
  avoids both the exceptions and this silent corruption.
- Damage in the middle of a file: pyxdf logs an error and scans forward to the next Boundary
  chunk, silently losing what lies between. The framing walk here refuses such a file with
  :class:`XdfFormatError` instead.

Files compressed with gzip (``.xdfz`` or ``.xdf.gz``) are read the same way.
"""

from __future__ import annotations

import gzip
import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast
from xml.etree.ElementTree import ParseError

import numpy as np
import pyxdf

from acquisition.stream import ChannelInfo, StreamInfo
from acquisition.validation import check_type
from acquisition.xdf_writer import (
    NUMERIC_DTYPES,
    TAG_BOUNDARY,
    TAG_CLOCK_OFFSET,
    TAG_FILE_HEADER,
    TAG_SAMPLES,
    TAG_STREAM_FOOTER,
    TAG_STREAM_HEADER,
)

_STREAM_TAGS = (TAG_STREAM_HEADER, TAG_SAMPLES, TAG_CLOCK_OFFSET, TAG_STREAM_FOOTER)
_KNOWN_TAGS = (TAG_FILE_HEADER, *_STREAM_TAGS, TAG_BOUNDARY)

# Exceptions pyxdf raises on malformed content (see the module docstring).
_PYXDF_ERRORS = (ParseError, struct.error, OSError, EOFError, ValueError, KeyError, IndexError, RuntimeError, TypeError)


class XdfFormatError(ValueError):
    """The file is not an XDF file, or it is damaged beyond what can be read safely."""


class XdfTruncatedWarning(UserWarning):
    """The file ends inside a chunk; only the whole chunks before the cut were read."""


@dataclass(frozen=True, eq=False, repr=False)
class RecordedStream:
    """One stream of an XDF file.

    Attributes
    ----------
    stream_id : int
        Id of the stream inside the file (1, 2, ... as written).
    info : StreamInfo
        Metadata rebuilt from the StreamHeader. ``info.desc`` holds the ``<desc>`` children that
        are plain text (everything else stays in ``raw_info``).
    data : ndarray, shape (n_samples, n_channels), or list of list of str
        Samples in the stream's format (``float32``, ``float64`` for ``double64``, ``int8`` ...
        ``int64``); string streams give one list of ``n_channels`` str per sample.
    timestamps : ndarray, shape (n_samples,), float64
        Time of each sample in seconds (clock-synchronised and/or dejittered if asked for).
    clock_times, clock_values : ndarray, shape (n_offsets,), float64
        ClockOffset chunks: collection time and offset in seconds.
    complete : bool
        True if the stream's StreamFooter was found, i.e. the writer closed the file normally. A
        recording killed mid-way has whole data but no footers.
    raw_info : dict
        The StreamHeader ``<info>`` as returned by pyxdf (every value a list; nested dicts),
        plus pyxdf's ``stream_id``, ``effective_srate`` and ``segments`` entries.
    """

    stream_id: int
    info: StreamInfo
    data: np.ndarray | list[list[str]]
    timestamps: np.ndarray
    clock_times: np.ndarray
    clock_values: np.ndarray
    complete: bool
    raw_info: dict[str, Any]

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(self.timestamps.shape[0])

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        i = self.info
        return (
            f"RecordedStream(stream_id={self.stream_id}, name={i.name!r}, type={i.type!r}, "
            f"channel_format={i.channel_format!r}, n_samples={self.n_samples}, n_channels={i.n_channels}, "
            f"srate={i.srate}, complete={self.complete})"
        )


def read_xdf(
    path: str | Path,
    *,
    dejitter: bool = False,
    synchronize_clocks: bool = True,
    allow_truncated: bool = True,
) -> list[RecordedStream]:
    """Read every stream of an XDF file.

    Parameters
    ----------
    path : str or Path
        The ``.xdf`` file (``.xdfz`` / ``.xdf.gz`` for gzip-compressed files).
    dejitter : bool
        Replace the timestamps of regular streams by a linear fit (pyxdf ``dejitter_timestamps``).
        Off by default: the measured timestamps are the facts this application records.
    synchronize_clocks : bool
        Apply the ClockOffset chunks to the timestamps (pyxdf ``synchronize_clocks``).
    allow_truncated : bool
        When the file ends inside a chunk, read the whole chunks before the cut and emit an
        :class:`XdfTruncatedWarning` (True), or raise :class:`XdfFormatError` (False).

    Returns
    -------
    list of RecordedStream
        In the order of their StreamHeader chunks in the file.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    XdfFormatError
        Not an XDF file; damaged framing or content; truncated inside the FileHeader (nothing
        to read) or, with ``allow_truncated=False``, truncated anywhere.

    Warns
    -----
    XdfTruncatedWarning
        The file ends inside a chunk and ``allow_truncated`` is True.
    """
    check_type(path, (str, Path), "read_xdf path")
    check_type(dejitter, bool, "read_xdf dejitter")
    check_type(synchronize_clocks, bool, "read_xdf synchronize_clocks")
    check_type(allow_truncated, bool, "read_xdf allow_truncated")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"read_xdf path {str(path)!r} does not exist. Check the file name and folder.")
    if path.is_dir():
        raise IsADirectoryError(f"read_xdf path {str(path)!r} is a folder; pass the .xdf file inside it.")
    compressed = path.suffix == ".xdfz" or path.suffixes[-2:] == [".xdf", ".gz"]

    with _open(path, compressed) as f:
        size = None if compressed else path.stat().st_size
        intact, problem = _scan_chunks(f, size, path)
    if problem is not None:
        if not allow_truncated:
            raise XdfFormatError(f"{problem} Pass allow_truncated=True to read the whole chunks before the cut.")
        warnings.warn(problem, XdfTruncatedWarning, stacklevel=2)

    source: Any = str(path)
    if problem is not None:
        source = io.BufferedReader(_PrefixReader(_open(path, compressed), intact), buffer_size=1 << 16)
    try:
        streams, _ = pyxdf.load_xdf(
            source, dejitter_timestamps=dejitter, synchronize_clocks=synchronize_clocks, handle_clock_resets=True
        )
    except _PYXDF_ERRORS as exc:
        raise XdfFormatError(
            f"pyxdf could not read {str(path)!r}: {type(exc).__name__}: {exc}. The file is damaged; "
            "the recording may be truncated or corrupted."
        ) from exc
    finally:
        if not isinstance(source, str):
            source.close()
    return [_to_recorded(s, path) for s in streams]


# ---------------------------------------------------------------------------------------------- framing walk
def _open(path: Path, compressed: bool) -> IO[bytes]:
    if compressed:
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")  # closed by the caller


def _scan_chunks(f: IO[bytes], size: int | None, path: Path) -> tuple[int, str | None]:
    """Walk the chunk framing of an XDF file without parsing chunk contents.

    Parameters
    ----------
    f : binary file
        Positioned at the start of the file.
    size : int or None
        File size in bytes (None for a compressed file: chunks are then skipped by reading).
    path : Path
        For messages.

    Returns
    -------
    intact : int
        Byte offset just past the last whole chunk.
    problem : str or None
        None if the file ends exactly at a chunk boundary, else a message describing where the
        file was cut.

    Raises
    ------
    XdfFormatError
        Not XDF, damaged framing, or nothing readable (cut inside the magic or the FileHeader).
    """
    name = repr(str(path))
    start = 0
    try:
        magic = f.read(4)
        if magic != b"XDF:":
            if len(magic) < 4 and b"XDF:".startswith(magic):
                raise XdfFormatError(
                    f"XDF file {name} has only {len(magic)} bytes, not even the 4-byte magic 'XDF:'; "
                    "the recording may be truncated (nothing was recorded)."
                )
            raise XdfFormatError(
                f"File {name} is not an XDF file: it must start with the magic bytes b'XDF:', found {magic!r}."
            )
        start = 4
        declared: set[int] = set()
        n_chunks = 0
        while True:
            head = f.read(1)
            if not head:
                break
            width = head[0]
            where = f"chunk {n_chunks + 1} at byte {start}"
            if width not in (1, 4, 8):
                raise _corrupt(name, where, f"its length-size byte must be 1, 4 or 8, found {width}")
            raw = f.read(width)
            if len(raw) < width:
                return _cut(name, n_chunks, start, "the length field", size)
            length = int.from_bytes(raw, "little")
            if length < 2:
                raise _corrupt(name, where, f"its length must be >= 2 bytes (tag included), found {length}")
            raw = f.read(2)
            if len(raw) < 2:
                return _cut(name, n_chunks, start, "the tag", size)
            tag = int.from_bytes(raw, "little")
            if tag not in _KNOWN_TAGS:
                raise _corrupt(name, where, f"its tag must be one of {list(_KNOWN_TAGS)}, found {tag}")
            if n_chunks == 0 and tag != TAG_FILE_HEADER:
                raise _corrupt(name, where, f"the first chunk must be the FileHeader (tag 1), found tag {tag}")
            rest = length - 2
            if tag in _STREAM_TAGS:
                if rest < 4:
                    raise _corrupt(name, where, f"tag {tag} needs a 4-byte stream id but the chunk has {rest} bytes")
                raw = f.read(4)
                if len(raw) < 4:
                    return _cut(name, n_chunks, start, "the stream id", size)
                stream_id = int.from_bytes(raw, "little")
                if tag == TAG_STREAM_HEADER and stream_id in declared:
                    raise _corrupt(name, where, f"stream id {stream_id} is declared twice")
                if tag != TAG_STREAM_HEADER and stream_id not in declared:
                    raise _corrupt(
                        name, where, f"tag {tag} refers to stream id {stream_id}, which has no StreamHeader before it"
                    )
                rest -= 4
            if tag in (TAG_CLOCK_OFFSET, TAG_BOUNDARY) and rest != 16:
                raise _corrupt(name, where, f"tag {tag} must carry 16 bytes of content, found {rest}")
            end = start + 1 + width + length
            if size is not None:
                if end > size:
                    return _cut(name, n_chunks, start, "the content", size)
                f.seek(end)
            elif not _skip(f, rest):
                return _cut(name, n_chunks, start, "the content", size)
            if tag == TAG_STREAM_HEADER:
                declared.add(stream_id)
            n_chunks += 1
            start = end
    except EOFError:  # gzip stream cut off
        return _cut(name, n_chunks, start, "the compressed data", size)
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise XdfFormatError(f"XDF file {name} is not valid gzip data ({exc}); the file may be corrupted.") from exc
    if n_chunks == 0:
        raise XdfFormatError(
            f"XDF file {name} holds the magic 'XDF:' but no FileHeader chunk; the recording may be truncated."
        )
    return start, None


def _skip(f: IO[bytes], n: int) -> bool:
    """Read and discard ``n`` bytes; False if the file ended first."""
    while n > 0:
        got = len(f.read(min(n, 1 << 20)))
        if got == 0:
            return False
        n -= got
    return True


def _corrupt(name: str, where: str, what: str) -> XdfFormatError:
    return XdfFormatError(
        f"XDF file {name} is corrupted at {where}: {what}. The recording may be truncated or damaged; "
        "pyxdf.load_xdf can attempt a recovery by scanning for Boundary chunks."
    )


def _cut(name: str, n_chunks: int, start: int, part: str, size: int | None) -> tuple[int, str]:
    if n_chunks == 0:
        raise XdfFormatError(
            f"XDF file {name} ends inside {part} of its FileHeader chunk, so it holds no readable data; "
            "the recording may be truncated."
        )
    total = f" of {size}" if size is not None else ""
    lost = f" ({size - start} bytes dropped)" if size is not None else ""
    return start, (
        f"XDF file {name} is truncated: it ends inside {part} of chunk {n_chunks + 1} (starting at byte {start}); "
        f"read the {n_chunks} whole chunks in the first {start}{total} bytes{lost}. The recording was probably "
        "interrupted (crash, kill, full disk) or the copy is incomplete."
    )


class _PrefixReader(io.RawIOBase):
    """Read-only view of the first ``limit`` bytes of a binary file (closes the file when closed)."""

    def __init__(self, f: IO[bytes], limit: int) -> None:
        super().__init__()
        self._f = f
        self._limit = limit
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._limit - self._pos)
        if n <= 0:
            return 0
        data = self._f.read(n)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._limit}[whence]
        self._pos = min(max(0, base + offset), self._limit)
        self._f.seek(self._pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


# ---------------------------------------------------------------------------------------------- conversion
def _text(node: dict[str, Any] | None, key: str, default: str = "") -> str:
    """Text of leaf ``key`` in a pyxdf XML dict (values are lists; empty elements are None)."""
    if not isinstance(node, dict):
        return default
    values = node.get(key)
    if not values or not isinstance(values[0], str):
        return default
    return values[0]


def _child(node: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    if not isinstance(node, dict):
        return None
    values = node.get(key)
    if not values or not isinstance(values[0], dict):
        return None
    return values[0]


def _to_recorded(stream: dict[str, Any], path: Path) -> RecordedStream:
    raw = stream["info"]
    stream_id = int(raw["stream_id"])
    name = _text(raw, "name")
    where = f"stream {stream_id} ({name!r}) of {str(path)!r}"
    try:
        n_channels = int(_text(raw, "channel_count", "0"))
        srate = float(_text(raw, "nominal_srate", "0"))
    except ValueError as exc:
        raise XdfFormatError(
            f"StreamHeader of {where} has a non-numeric channel_count or nominal_srate: {exc}."
        ) from exc
    fmt = _text(raw, "channel_format")

    desc = _child(raw, "desc")
    listed = _child(desc, "channels")
    entries = listed.get("channel", []) if listed else []
    if len(entries) == n_channels and all(isinstance(e, dict) for e in entries):
        channels = tuple(
            ChannelInfo(_text(e, "label") or f"ch{i + 1}", _text(e, "unit"), _text(e, "type"))
            for i, e in enumerate(entries)
        )
    else:
        channels = tuple(ChannelInfo(f"ch{i + 1}") for i in range(n_channels))
    extra = {}
    if desc:
        for key, values in desc.items():
            if key != "channels" and len(values) == 1 and (values[0] is None or isinstance(values[0], str)):
                extra[key] = values[0] or ""
    try:
        info = StreamInfo(
            name=name,
            type=_text(raw, "type"),
            channels=channels,
            srate=srate,
            channel_format=fmt,
            source_id=_text(raw, "source_id"),
            desc=extra,
        )
    except ValueError as exc:
        raise XdfFormatError(f"StreamHeader of {where} is invalid: {exc}") from exc

    timestamps = np.asarray(stream["time_stamps"], dtype=np.float64)
    if info.is_string:
        data: np.ndarray | list[list[str]] = [list(sample) for sample in stream["time_series"]]
    else:
        dtype = NUMERIC_DTYPES[fmt].newbyteorder("=")
        series = stream["time_series"]
        data = np.empty((0, n_channels), dtype=dtype) if len(series) == 0 else np.asarray(series, dtype=dtype)
    return RecordedStream(
        stream_id=stream_id,
        info=info,
        data=data,
        timestamps=timestamps,
        clock_times=np.asarray(stream.get("clock_times", []), dtype=np.float64),
        clock_values=np.asarray(stream.get("clock_values", []), dtype=np.float64),
        complete="footer" in stream,
        raw_info=raw,
    )
