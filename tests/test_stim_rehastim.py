"""RehaStim 2 driver without hardware, at the level pysciencemode allows.

Real library: port errors, a port where no device answers (the library waits forever for the
init packet; the driver times out), and its ``Channel`` validation. The device object itself is
a recorder of calls standing in for ``pysciencemode.Rehastim2`` (a physical stimulator cannot
exist here), so the contract test checks how our commands map onto the library's calls.
"""

from __future__ import annotations

import os
import pty
import sys
import time
from pathlib import Path
from typing import Any

import pysciencemode
import pytest
from conftest import wait_until

from app.outputs import StimulatorOutput
from stimulation.limits import SafetyLimits
from stimulation.rehastim import RehaStimStimulator
from stimulation.safety import NmesRequest, SafetySupervisor
from stimulation.stimulator import Stimulator, StimulatorLinkError, StimulatorNackError, StimulatorTimeoutError


class RecordingRehastim2:
    """Stands in for ``pysciencemode.Rehastim2``: records every call with its arguments."""

    def __init__(self, port: str) -> None:
        self.port = port
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _rec(self, name: str, **kw: Any) -> None:
        self.calls.append((name, kw))

    def init_channel(self, stimulation_interval: int, list_channels: list, **kw: Any) -> None:
        assert all(isinstance(c, pysciencemode.Channel) for c in list_channels)
        self._rec("init_channel", stimulation_interval=stimulation_interval, channels=_desc(list_channels))

    def start_stimulation(self, stimulation_duration: float | None = None, upd_list_channels: list | None = None):
        self._rec("start_stimulation", channels=_desc(upd_list_channels or []))

    def pause_stimulation(self) -> None:
        self._rec("pause_stimulation")

    def end_stimulation(self) -> None:
        self._rec("end_stimulation")

    def disconnect(self) -> None:
        self._rec("disconnect")

    def close_port(self) -> None:
        self._rec("close_port")

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def _desc(channels: list) -> list[tuple[int, float, int]]:
    return [(c.get_no_channel(), c.get_amplitude(), c.get_pulse_width()) for c in channels]


@pytest.fixture
def stim() -> Any:
    dev: dict[str, RecordingRehastim2] = {}

    def factory(port: str) -> RecordingRehastim2:
        dev["d"] = RecordingRehastim2(port)
        return dev["d"]

    s = RehaStimStimulator("/dev/ttyFAKE", device_factory=factory, watchdog_s=0.1)
    s.device = dev["d"]  # type: ignore[attr-defined]
    yield s
    s.close()


def test_missing_port_is_a_link_error_from_the_real_library() -> None:
    with pytest.raises(StimulatorLinkError, match="cannot open RehaStim 2 port /dev/does-not-exist"):
        RehaStimStimulator("/dev/does-not-exist", timeout_s=2.0)


def test_no_device_answering_times_out_with_a_clear_error() -> None:
    master, slave = pty.openpty()
    path = os.ttyname(slave)
    try:
        with pytest.raises(StimulatorTimeoutError, match=r"no RehaStim 2 answered on .* within 0\.3 s"):
            RehaStimStimulator(path, timeout_s=0.3)
    finally:
        os.close(master)  # the library's waiting thread gets EIO and ends
        os.close(slave)


def test_missing_pysciencemode_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pysciencemode", None)
    with pytest.raises(ImportError, match="optional package 'pysciencemode'"):
        RehaStimStimulator("/dev/ttyUSB0")


def test_commands_map_onto_the_library_calls(stim: Any) -> None:
    dev: RecordingRehastim2 = stim.device
    assert isinstance(stim, Stimulator) and stim.n_channels == 8 and dev.port == "/dev/ttyFAKE"
    stim.set_channel(0, current_ma=30.0, pulse_width_us=200, frequency_hz=25.0)
    assert dev.calls == []  # nothing is sent for a channel that is off
    with pytest.raises(StimulatorNackError, match="not armed"):
        stim.stim_on(0)
    stim.arm()
    stim.stim_on(0)
    assert dev.calls == [
        ("init_channel", {"stimulation_interval": 40, "channels": [(1, 30.0, 200)]}),
        ("start_stimulation", {"channels": [(1, 30.0, 200)]}),
    ]
    stim.set_channel(0, current_ma=30.0, pulse_width_us=250, frequency_hz=25.0)  # RISE update: no re-init
    assert dev.calls[-1] == ("start_stimulation", {"channels": [(1, 30.0, 250)]}) and len(dev.calls) == 3
    stim.set_channel(2, current_ma=10.0, pulse_width_us=100, frequency_hz=25.0)  # new channel, still off
    stim.stim_on([2])
    assert dev.calls[-2] == ("init_channel", {"stimulation_interval": 40, "channels": [(1, 30.0, 250), (3, 10.0, 100)]})
    assert dev.calls[-1] == ("start_stimulation", {"channels": [(1, 30.0, 250), (3, 10.0, 100)]})
    stim.stim_off(0)
    assert dev.calls[-1] == ("start_stimulation", {"channels": [(1, 0.0, 250), (3, 10.0, 100)]})
    st = stim.stimulator_status()
    assert st.state == "stimulating" and st.outputs == 0b100 and st.details["readback"] is False
    assert st.channels[2].delivered_pulse_width_us == 100 and st.channels[0].delivered_pulse_width_us == 0
    stim.stim_off(None)
    assert dev.calls[-1] == ("pause_stimulation", {})
    with pytest.raises(StimulatorNackError, match="one stimulation rate"):
        stim.set_channel(1, current_ma=5.0, pulse_width_us=100, frequency_hz=50.0)
    for bad in ({"current_ma": 140.0}, {"pulse_width_us": 501}, {"frequency_hz": 200.0}):
        kw = {"current_ma": 5.0, "pulse_width_us": 100, "frequency_hz": 25.0, **bad}
        with pytest.raises(ValueError):
            stim.set_channel(1, **kw)


def test_estop_ends_stimulation_and_latches(stim: Any) -> None:
    dev: RecordingRehastim2 = stim.device
    stim.set_channel(0, current_ma=20.0, pulse_width_us=300, frequency_hz=20.0)
    stim.arm()
    stim.stim_on(0)
    stim.estop()
    assert dev.calls[-1] == ("end_stimulation", {})
    assert stim.stimulator_status().state == "fault" and stim.stimulator_status().outputs == 0
    with pytest.raises(StimulatorNackError, match="latched"):
        stim.arm()
    stim.clear_fault()
    stim.arm()
    stim.stim_on(0)  # after end_stimulation the channel list is initialised again
    assert dev.names()[-2:] == ["init_channel", "start_stimulation"]
    stim.close()
    assert dev.names()[-3:] == ["end_stimulation", "disconnect", "close_port"]
    with pytest.raises(StimulatorLinkError, match="closed"):
        stim.stim_on(0)


def test_host_watchdog_pauses_when_heartbeats_stop(stim: Any) -> None:
    dev: RecordingRehastim2 = stim.device
    stim.set_channel(0, current_ma=20.0, pulse_width_us=300, frequency_hz=20.0)
    stim.arm()
    stim.start_heartbeat()
    stim.stim_on(0)
    for _ in range(5):  # heartbeats keep it on
        stim.heartbeat()
        time.sleep(0.03)  # pacing the heartbeats (the stimulus), not a wait for a condition
    assert stim.stimulator_status().outputs == 1
    assert wait_until(lambda: stim.stimulator_status().outputs == 0, 2.0)
    assert dev.calls[-1] == ("pause_stimulation", {}) and stim.n_watchdog_trips == 1
    stim.stop_heartbeat()


def test_behind_the_safety_supervisor(stim: Any, tmp_path: Path) -> None:
    dev: RecordingRehastim2 = stim.device
    lim = SafetyLimits(40.0, 400.0, 50.0, 12.0, 1000.0, 100.0, 60.0, 2.0)
    with SafetySupervisor(lim, audit_log_path=tmp_path / "a.jsonl") as sup:
        out = StimulatorOutput("reha", stim, channel=3, current_ma=30.0, frequency_hz=25.0)
        sup.register_output(out)
        sup.arm("clinician:test", "t")
        out.arm()
        sup.heartbeat()
        sup.data_age(0.0)
        d = sup.deliver(NmesRequest(3, 30.0, 200.0, 25.0, 0.1), out.apply)
        assert d.allowed and dev.calls[-1] == ("start_stimulation", {"channels": [(4, 30.0, 200)]})
        assert out.delivered().pulse_width_us == 200
        sup.estop("test", "stop")
        assert dev.calls[-1] == ("pause_stimulation", {}) and out.delivered().pulse_width_us == 0
        sup.unregister_output(out)
