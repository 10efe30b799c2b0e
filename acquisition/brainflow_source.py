"""BrainFlow boards as a :class:`~acquisition.source.Source`.

The board's description (``BoardShim.get_board_descr``) gives the row layout of the data
BrainFlow returns; every row except the package counter and the timestamp becomes a channel
of one numeric stream, typed by its role (EEG, EMG, accelerometer, ...). BrainFlow stamps each
sample with host UNIX time; a :class:`~acquisition.clock.ClockMapper` maps those stamps onto
``pylsl.local_clock`` at ingestion, so BrainFlow data shares the clock domain of every other
stream (DESIGN: "Timestamps are facts").

Lifecycle: ``open()`` validates the board and prepares the session (connection errors surface
here); the acquisition thread starts the stream, polls ``get_board_data`` on absolute
deadlines and, when asked to stop or when it fails, stops the stream and releases the
session. ``start()`` after ``stop()`` prepares the session again.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pylsl
from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams, BrainFlowPresets
from brainflow.exit_codes import BrainFlowError, BrainFlowExitCodes

from acquisition.clock import ClockMapper
from acquisition.source import BufferedStream, ErrorCallback, Source, StreamStats
from acquisition.stream import ChannelInfo, StreamInfo
from acquisition.validation import check_positive, check_type

log = logging.getLogger(__name__)

# (description key, channel type, unit, label prefix), in order of precedence: a row listed under
# several roles (BrainFlow lists ExG rows as EEG, EMG, ECG and EOG at once) takes the first.
# Units are those BrainFlow documents for its output; "" where it is board specific.
_ROLES: tuple[tuple[str, str, str, str], ...] = (
    ("eeg_channels", "EEG", "microvolts", "EEG"),
    ("emg_channels", "EMG", "microvolts", "EMG"),
    ("ecg_channels", "ECG", "microvolts", "ECG"),
    ("eog_channels", "EOG", "microvolts", "EOG"),
    ("accel_channels", "Accel", "g", "Accel"),
    ("gyro_channels", "Gyro", "deg/s", "Gyro"),
    ("magnetometer_channels", "Mag", "", "Mag"),
    ("rotation_channels", "Rotation", "", "Rotation"),
    ("ppg_channels", "PPG", "", "PPG"),
    ("optical_channels", "Optical", "", "Optical"),
    ("eda_channels", "EDA", "", "EDA"),
    ("temperature_channels", "Temperature", "celsius", "Temp"),
    ("resistance_channels", "Resistance", "", "Resistance"),
    ("analog_channels", "Analog", "", "Analog"),
    ("other_channels", "Misc", "", "Other"),
    ("battery_channel", "Battery", "percent", "Battery"),
    ("marker_channel", "Marker", "", "Marker"),
)
_MAIN_ROLES = ("EEG", "EMG", "ECG", "EOG")  # the stream type is the first of these present
_XYZ_ROLES = ("Accel", "Gyro", "Mag")

_PARAM_FIELDS: dict[str, Any] = vars(BrainFlowInputParams())  # name -> default (its type is the expected type)
_VIRTUAL_BOARDS = (BoardIds.STREAMING_BOARD.value, BoardIds.PLAYBACK_FILE_BOARD.value)
_MAX_LEAD_S = 1.0  # a mapped timestamp this far in the future means BrainFlow is not on UNIX time


def _board_label(board_id: int) -> str:
    try:
        return f"{BoardIds(board_id).name} (id {board_id})"
    except ValueError:
        return f"id {board_id}"


def _valid_board_id(board_id: Any) -> int:
    check_type(board_id, int, "board_id")
    valid = {b.value for b in BoardIds if b is not BoardIds.NO_BOARD}
    if int(board_id) not in valid:
        raise ValueError(
            f"board_id must be a brainflow.board_shim.BoardIds value, got {int(board_id)!r}. "
            "Run `closedloop devices` (or acquisition.brainflow_source.list_boards()) to list the boards "
            "and their ids; e.g. BoardIds.SYNTHETIC_BOARD is -1, BoardIds.CYTON_BOARD is 0."
        )
    return int(board_id)


def _valid_params(params: dict[str, Any] | None) -> BrainFlowInputParams:
    if params is None:
        params = {}
    check_type(params, dict, "params")
    out = BrainFlowInputParams()
    for key, value in params.items():
        if key not in _PARAM_FIELDS:
            raise ValueError(
                f"params has unknown key {key!r}; valid keys (fields of brainflow BrainFlowInputParams) are "
                f"{sorted(_PARAM_FIELDS)}."
            )
        expected = type(_PARAM_FIELDS[key])
        if expected is int and isinstance(value, BoardIds):
            value = int(value)
        check_type(value, expected, f"params[{key!r}]")
        setattr(out, key, value)
    return out


def _valid_preset(preset: Any) -> int:
    check_type(preset, int, "preset")
    valid = [p.value for p in BrainFlowPresets]
    if int(preset) not in valid:
        raise ValueError(f"preset must be a brainflow BrainFlowPresets value {valid}, got {preset!r}.")
    return int(preset)


def _describe(board_id: int, preset: int) -> dict[str, Any]:
    # Check the preset first: asking BrainFlow (5.x) for the description of a missing preset
    # adds an empty entry for it to BrainFlow's table, after which it is listed as a preset.
    try:
        presets = [int(p) for p in BoardShim.get_board_presets(board_id)]
    except BrainFlowError as exc:
        raise ValueError(
            f"BrainFlow has no description of board {_board_label(board_id)} ({exc}); "
            "run `closedloop devices` to list the boards it knows."
        ) from exc
    if preset not in presets:
        raise ValueError(
            f"preset must be one of the presets board {_board_label(board_id)} has: "
            f"{[BrainFlowPresets(p).name for p in sorted(presets)]}; got {BrainFlowPresets(preset).name}."
        )
    try:
        return BoardShim.get_board_descr(board_id, preset)
    except BrainFlowError as exc:
        raise ValueError(
            f"BrainFlow could not describe board {_board_label(board_id)} with preset "
            f"{BrainFlowPresets(preset).name} ({exc})."
        ) from exc


@dataclass(frozen=True)
class _Layout:
    """Where things are in the (n_rows, n_samples) array BrainFlow returns."""

    rows: tuple[int, ...]  # data rows, in channel order
    channels: tuple[ChannelInfo, ...]
    stream_type: str
    srate: float
    n_rows: int
    timestamp_row: int
    package_row: int | None


def _layout(descr: dict[str, Any], board_label: str) -> _Layout:
    """Build the channel layout from a BrainFlow board description."""
    for key in ("num_rows", "timestamp_channel", "sampling_rate"):
        if key not in descr:
            raise ValueError(
                f"the BrainFlow description of board {board_label} lacks {key!r}; "
                "streaming/playback boards need params['master_board'] set to the recorded board's id."
            )
    n_rows = int(descr["num_rows"])
    ts_row = int(descr["timestamp_channel"])
    pkg_row = int(descr["package_num_channel"]) if "package_num_channel" in descr else None
    role_of: dict[int, tuple[str, str, str, int, int]] = {}  # row -> (type, unit, prefix, index, count)
    for key, ctype, unit, prefix in _ROLES:
        if key not in descr:
            continue
        role_rows = descr[key] if isinstance(descr[key], list) else [descr[key]]
        for k, r in enumerate(role_rows):
            role_of.setdefault(int(r), (ctype, unit, prefix, k, len(role_rows)))
    eeg_rows = [int(r) for r in descr.get("eeg_channels", [])]
    eeg_names = [s.strip() for s in str(descr.get("eeg_names", "")).split(",") if s.strip()]
    names = dict(zip(eeg_rows, eeg_names, strict=False)) if len(eeg_names) == len(eeg_rows) else {}
    rows: list[int] = []
    channels: list[ChannelInfo] = []
    for r in range(n_rows):
        if r == ts_row or r == pkg_row:
            continue
        ctype, unit, prefix, k, count = role_of.get(r, ("Misc", "", "Row", r, 0))
        if r in names and ctype == "EEG":
            label = names[r]
        elif ctype in _XYZ_ROLES and count == 3:
            label = f"{prefix}{'XYZ'[k]}"
        elif count == 1 and ctype in ("Battery", "Marker"):
            label = prefix
        else:
            label = f"{prefix}{k + 1}" if count else f"{prefix}{r}"
        rows.append(r)
        channels.append(ChannelInfo(label, unit, ctype))
    present = {c.type for c in channels}
    stream_type = next((t for t in _MAIN_ROLES if t in present), channels[0].type if channels else "Misc")
    return _Layout(tuple(rows), tuple(channels), stream_type, float(descr["sampling_rate"]), n_rows, ts_row, pkg_row)


class _OwnedBoardShim(BoardShim):
    """``BoardShim`` whose finaliser releases only a session that this object prepared.

    ``BoardShim.__del__`` releases *any* prepared session with the same board id and params, so a
    source that failed to open (because another source holds that session) would, when garbage
    collected, pull the session out from under the running one. The source tracks ownership
    in :attr:`owns_session` and always releases explicitly; the finaliser is a last resort.
    """

    owns_session = False

    def __del__(self) -> None:
        if not self.owns_session:
            return
        try:
            self.release_session()
        except Exception as exc:  # noqa: BLE001 - a finaliser cannot raise; nothing else can act on it
            log.error(
                "BrainFlow session of board id %s was released by the finaliser and failed: %s", self.board_id, exc
            )


@dataclass
class BrainFlowStreamStats(StreamStats):
    """:class:`StreamStats` plus BrainFlow specifics (written by the acquisition thread)."""

    n_dropped_samples: int = 0  # samples missing according to the board's package counter
    n_package_gaps: int = 0  # discontinuities of the package counter
    clock_uncertainty_s: float = float("nan")  # ClockMapper.uncertainty_s
    last_age_s: float = float("nan")  # receive time - newest sample time of the last chunk, s
    max_lead_s: float = -math.inf  # max over chunks of newest sample time - receive time, s (should be <= 0)


class BrainFlowSource(Source):
    """A BrainFlow board (real or the synthetic one) as one numeric stream on ``local_clock``.

    Parameters
    ----------
    name : str
        Name of the source in the session; also the stream's name and key in :attr:`streams`.
    board_id : int
        A ``brainflow.board_shim.BoardIds`` value (``closedloop devices`` lists them).
    params : dict, optional
        Fields of ``BrainFlowInputParams`` (``serial_port``, ``ip_address``, ``ip_port``,
        ``mac_address``, ``other_info``, ``timeout``, ``serial_number``, ``file``,
        ``master_board``, ...). Unknown keys raise ``ValueError``.
    preset : int
        ``BrainFlowPresets`` value selecting which of the board's data sets to read.
    poll_s : float
        Polling period of ``get_board_data``, s (absolute deadlines on ``local_clock``).
    on_error : callable, optional
        See :class:`~acquisition.source.Source`; called on the acquisition thread.
    buffer_seconds : float
        Length of the ring buffer, s.
    brainflow_logging : bool
        Keep BrainFlow's own (stderr) logger on at INFO level; off by default.

    Notes
    -----
    Samples are ``float32`` in the units BrainFlow returns (ExG in microvolts, accelerometer in
    g). The package-number and timestamp rows are not channels; gaps of the package counter are
    counted in ``stats.n_dropped_samples`` / ``stats.n_package_gaps``
    (:class:`BrainFlowStreamStats`).
    """

    def __init__(
        self,
        name: str = "brainflow",
        board_id: int = BoardIds.SYNTHETIC_BOARD,
        params: dict[str, Any] | None = None,
        *,
        preset: int = BrainFlowPresets.DEFAULT_PRESET,
        poll_s: float = 0.005,
        on_error: ErrorCallback | None = None,
        buffer_seconds: float = 30.0,
        brainflow_logging: bool = False,
    ) -> None:
        super().__init__(check_type(name, str, "name"), on_error)
        self.board_id = _valid_board_id(board_id)
        self._input_params = _valid_params(params)
        self.params: dict[str, Any] = dict(params or {})
        self.preset = _valid_preset(preset)
        self.poll_s = check_positive(poll_s, "poll_s")
        self.buffer_seconds = check_positive(buffer_seconds, "buffer_seconds")
        self.brainflow_logging = bool(check_type(brainflow_logging, bool, "brainflow_logging"))
        if self.board_id in _VIRTUAL_BOARDS and self._input_params.master_board == BoardIds.NO_BOARD.value:
            raise ValueError(
                f"board {_board_label(self.board_id)} replays another board's data: set params['master_board'] "
                "to that board's BoardIds value (e.g. BoardIds.CYTON_BOARD)."
            )
        self.board_label = _board_label(self.board_id)
        self.clock = ClockMapper()
        self._board: _OwnedBoardShim | None = None
        self._layout: _Layout | None = None
        self._stats = BrainFlowStreamStats()
        self._in_run = False
        self._last_package: int | None = None
        self._max_package = 0

    # ------------------------------------------------------------------ properties
    @property
    def _prepared(self) -> bool:
        """Whether *this* source holds a prepared session.

        Not ``BoardShim.is_prepared()``: that answers for any session with the same board id and
        params, including another source's.
        """
        return self._board is not None and self._board.owns_session

    @property
    def stream(self) -> BufferedStream:
        """The data stream (after :meth:`open`)."""
        try:
            return self.streams[self.name]
        except KeyError:
            raise RuntimeError(f"source {self.name!r} is not open; call open() first.") from None

    @property
    def source_id(self) -> str:
        """Stable identifier of the device: ``brainflow-<board id>-<serial, address or file>``."""
        p = self._input_params
        ident = p.serial_number or p.serial_port or p.mac_address or p.ip_address or p.file
        if p.ip_address and p.ip_port:
            ident = f"{p.ip_address}:{p.ip_port}"
        if not ident:
            ident = "synthetic" if self.board_id == BoardIds.SYNTHETIC_BOARD.value else "auto"
        return f"brainflow-{self.board_id}-{ident}"

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Read the board description, build the stream and prepare the BrainFlow session.

        Raises
        ------
        ValueError
            If BrainFlow has no description for this board and preset.
        RuntimeError
            If the session cannot be prepared (device absent, port busy, another session on the
            same board and parameters, ...), with the board name and BrainFlow's error code.
        """
        if self.running or self._in_run:
            raise RuntimeError(f"source {self.name!r} is running; stop() it before open().")
        self._set_brainflow_logging()
        descr_id = self._input_params.master_board if self.board_id in _VIRTUAL_BOARDS else self.board_id
        descr = _describe(descr_id, self.preset)
        layout = _layout(descr, self.board_label)
        if not layout.rows:
            raise ValueError(f"board {self.board_label} preset {self.preset} has no data rows besides the timestamp.")
        info = StreamInfo(
            name=self.name,
            type=layout.stream_type,
            channels=layout.channels,
            srate=layout.srate,
            channel_format="float32",
            source_id=self.source_id,
            desc={
                "manufacturer": "BrainFlow",
                "brainflow_board": self.board_label,
                "brainflow_board_name": str(descr.get("name", "")),
                "brainflow_preset": BrainFlowPresets(self.preset).name,
                "brainflow_version": BoardShim.get_version(),
                "brainflow_rows": json.dumps(list(layout.rows)),
                "timestamps": "BrainFlow host UNIX time mapped onto pylsl.local_clock by ClockMapper",
            },
        )
        if self._board is None:
            try:
                self._board = _OwnedBoardShim(self.board_id, self._input_params)
            except BrainFlowError as exc:
                raise self._error("create the board object", exc) from exc
        if not self._prepared:
            self._prepare()
        stream = BufferedStream.create(info, self.buffer_seconds)
        self._stats = BrainFlowStreamStats()
        stream.stats = self._stats
        self._layout = layout
        self.clock.update(force=True)
        self._stats.clock_offset = self.clock.offset
        self.streams = {self.name: stream}

    def close(self) -> None:
        """Stop the thread and release the BrainFlow session. Safe to call twice.

        Raises
        ------
        RuntimeError
            If the acquisition thread did not stop (it still owns the session and releases it
            when it ends), or if releasing the session fails.
        """
        self.stop()
        if self._in_run:
            raise RuntimeError(
                f"source {self.name!r} ({self.board_label}) did not stop within the timeout; the BrainFlow "
                "session is released by the acquisition thread when it ends."
            )
        board = self._board
        if board is not None and board.owns_session:
            board.owns_session = False
            try:
                board.release_session()
            except BrainFlowError as exc:
                raise self._error("release the session", exc) from exc

    def _run(self) -> None:
        board, layout = self._board, self._layout
        if board is None or layout is None:
            raise RuntimeError(f"source {self.name!r} is not open; call open() before start().")
        self._in_run = True
        started = False
        try:
            if not self._prepared:
                self._prepare()
            ring = int(max(60.0, self.buffer_seconds) * max(layout.srate, 1.0))
            self.clock.update(force=True)
            self._last_package = None
            try:
                board.start_stream(ring)
            except BrainFlowError as exc:
                raise self._error("start the stream", exc) from exc
            started = True
            self._stats.connected = True
            deadline = pylsl.local_clock()
            while not self._stop.is_set():
                self._poll(board)
                deadline += self.poll_s
                now = pylsl.local_clock()
                if deadline < now - self.poll_s:  # fell behind (slow read): do not try to catch up in a burst
                    deadline = now
                self._stop.wait(max(0.0, deadline - now))
            started = False
            try:
                board.stop_stream()
            except BrainFlowError as exc:
                raise self._error("stop the stream", exc) from exc
            self._poll(board)  # drain what arrived before the stream stopped (lossless)
        except BaseException as exc:
            for err in self._cleanup(board, started):
                exc.add_note(f"during cleanup after this error: {err}")
            raise
        else:
            errors = self._cleanup(board, False)
            if errors:
                raise errors[0]

    # ------------------------------------------------------------------ helpers
    def _cleanup(self, board: _OwnedBoardShim, started: bool) -> list[RuntimeError]:
        """Stop the stream (if started) and release the session; return the errors instead of raising."""
        errors: list[RuntimeError] = []
        try:
            if started:
                try:
                    board.stop_stream()
                except BrainFlowError as exc:
                    errors.append(self._error("stop the stream", exc))
            if board.owns_session:
                board.owns_session = False
                try:
                    board.release_session()
                except BrainFlowError as exc:
                    errors.append(self._error("release the session", exc))
        finally:
            self._stats.connected = False
            self._in_run = False
        for err in errors:
            log.error("%s", err)
        return errors

    def _prepare(self) -> None:
        board = self._board
        if board is None:
            raise RuntimeError(f"source {self.name!r} has no board object; call open() first.")
        try:
            board.prepare_session()
        except BrainFlowError as exc:
            raise self._error("prepare the session", exc) from exc
        board.owns_session = True

    def _error(self, action: str, exc: BrainFlowError) -> RuntimeError:
        code = getattr(exc, "exit_code", None)
        try:
            code_name = BrainFlowExitCodes(code).name if code is not None else "unknown"
        except ValueError:
            code_name = "unknown"
        hint = {
            BrainFlowExitCodes.ANOTHER_BOARD_IS_CREATED_ERROR.name: (
                "another session with this board and params is prepared (in this process); close it first"
            ),
            BrainFlowExitCodes.UNABLE_TO_OPEN_PORT_ERROR.name: "check params['serial_port'] and that no other "
            "program holds the port",
            BrainFlowExitCodes.BOARD_NOT_READY_ERROR.name: "check that the device is on, charged and in range",
        }.get(code_name, "check the device connection and params")
        return RuntimeError(
            f"BrainFlow could not {action} of board {self.board_label} for source {self.name!r} "
            f"(error {code_name}, code {code}): {hint}. BrainFlow said: {exc}"
        )

    def _set_brainflow_logging(self) -> None:
        try:
            if self.brainflow_logging:
                BoardShim.enable_board_logger()
            else:
                BoardShim.disable_board_logger()
        except BrainFlowError as exc:
            raise self._error("set the log level", exc) from exc

    def _poll(self, board: BoardShim) -> None:
        """Read everything BrainFlow holds and push it (acquisition thread)."""
        try:
            data = board.get_board_data(preset=self.preset)
        except BrainFlowError as exc:
            raise self._error("read data", exc) from exc
        receive_time = pylsl.local_clock()
        if data.shape[1] > 0:
            self._ingest(data, receive_time)

    def _ingest(self, data: np.ndarray, receive_time: float) -> None:
        """Map timestamps, count package gaps and push one chunk.

        Parameters
        ----------
        data : ndarray, shape (n_rows, n_samples), float64
            As returned by ``BoardShim.get_board_data``.
        receive_time : float
            ``local_clock`` when the chunk was read, s.
        """
        layout = self._layout
        if layout is None:
            raise RuntimeError(f"source {self.name!r} is not open; call open() first.")
        if data.shape[0] != layout.n_rows:
            raise RuntimeError(
                f"BrainFlow returned {data.shape[0]} rows for board {self.board_label}, its description says "
                f"{layout.n_rows}; the board or BrainFlow version does not match the description."
            )
        stats = self._stats
        self.clock.update()
        ts = self.clock.map(data[layout.timestamp_row])
        lead = float(ts[-1]) - receive_time
        if lead > _MAX_LEAD_S:
            raise RuntimeError(
                f"BrainFlow timestamps of board {self.board_label} are {lead:.3f} s in the future after mapping "
                "UNIX time onto local_clock; this BrainFlow build does not stamp samples with UNIX time "
                "(time.time()), so they cannot be mapped. Report the platform and BrainFlow version."
            )
        if layout.package_row is not None:
            self._count_packages(data[layout.package_row])
        self.stream.push(data[list(layout.rows)].T, ts, receive_time)
        stats.last_age_s = -lead
        stats.max_lead_s = max(stats.max_lead_s, lead)
        stats.clock_uncertainty_s = self.clock.uncertainty_s
        stats.clock_offset = self.clock.offset

    def _count_packages(self, packages: np.ndarray) -> None:
        """Add the samples missing from the package counter of one chunk to the stats."""
        pk = np.rint(packages).astype(np.int64)
        self._max_package = max(self._max_package, int(pk.max()))
        n_missing, n_gaps = count_package_gaps(pk, self._last_package, self._max_package + 1)
        self._last_package = int(pk[-1])
        self._stats.n_dropped_samples += n_missing
        self._stats.n_package_gaps += n_gaps


def count_package_gaps(packages: np.ndarray, previous: int | None, modulus: int) -> tuple[int, int]:
    """Count samples missing from a wrapping package counter.

    Parameters
    ----------
    packages : array_like of int, shape (n_samples,)
        Package numbers of consecutive samples.
    previous : int or None
        Package number of the sample before ``packages[0]`` (None at the start of the stream).
    modulus : int
        The counter wraps from ``modulus - 1`` to 0 (e.g. 256 for a byte counter).

    Returns
    -------
    n_missing : int
        Samples the counter skipped. A repeated number (step 0) is not a loss.
    n_gaps : int
        Number of places where samples were skipped.
    """
    pk = np.asarray(packages, dtype=np.int64)
    seq = pk if previous is None else np.concatenate(([previous], pk))
    if seq.size < 2:
        return 0, 0
    step = np.diff(seq)
    step = np.where(step < 0, step + modulus, step)  # wrap-around
    missing = np.where(step > 1, step - 1, 0)
    return int(missing.sum()), int(np.count_nonzero(missing))


def list_boards() -> list[dict[str, Any]]:
    """Every BrainFlow board whose description can be read (default preset).

    Returns
    -------
    list of dict
        One dict per board, sorted by id, with keys ``id`` (int), ``enum`` (``BoardIds`` member
        name), ``name`` (BrainFlow's board name), ``sampling_rate`` (Hz, None for the streaming
        and playback boards, which take the rate of their master board) and ``n_eeg`` (number of EEG channels).
    """
    BoardShim.disable_board_logger()  # unreadable ids would each log an error to stderr
    out: list[dict[str, Any]] = []
    for board in BoardIds:
        if board is BoardIds.NO_BOARD:
            continue
        try:
            descr = BoardShim.get_board_descr(board.value, BrainFlowPresets.DEFAULT_PRESET)
        except BrainFlowError:
            continue
        rate = descr.get("sampling_rate")
        out.append(
            {
                "id": board.value,
                "enum": board.name,
                "name": str(descr.get("name", board.name)),
                "sampling_rate": float(rate) if rate is not None else None,
                "n_eeg": len(descr.get("eeg_channels", [])),
            }
        )
    return sorted(out, key=lambda d: d["id"])


__all__ = ["BrainFlowSource", "BrainFlowStreamStats", "count_package_gaps", "list_boards"]
