"""host.instrument: the SCPI time-interval counter driver against the pyvisa-sim definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from tick2quote.host import instrument
from tick2quote.host.instrument import (
    SIM_DEFINITION,
    SIM_RESOURCE,
    InstrumentError,
    InstrumentTimeout,
    IntervalStatistics,
    TimeIntervalConfig,
    TimeIntervalCounter,
    sim_resource_manager,
)

pytest.importorskip("pyvisa_sim")
SIM_PATH = Path(str(SIM_DEFINITION))


def _sim_readings() -> list[float]:
    """The fixed READ? answer, read from the yaml itself (not through the driver)."""
    spec = yaml.safe_load(SIM_PATH.read_text())
    (device,) = spec["devices"].values()
    answer = next(d["r"] for d in device["dialogues"] if d["q"] == "READ?")
    return [float(x) for x in answer.split(",")]


@pytest.fixture
def tic():
    import pyvisa

    rm = pyvisa.ResourceManager(f"{SIM_PATH}@sim")
    counter = TimeIntervalCounter.open(SIM_RESOURCE, rm, timeout_ms=500)
    yield counter
    counter.close()
    rm.close()


def test_identify_and_reset(tic):
    maker, model, serial, firmware = tic.identify().split(",")
    assert (maker, model) == ("Keysight Technologies", "53230A") and serial and firmware
    tic.reset()
    assert tic.read_error_queue() == []


def test_configure_and_read_back(tic):
    tic.configure_time_interval(channel_start=2, channel_stop=1, trigger_level_v=0.25, slope="NEG")
    tic.measure(8)
    assert tic.read_configuration() == TimeIntervalConfig(2, 1, 0.25, 0.25, "NEG", "NEG", 8)
    tic.configure_time_interval(trigger_level_v=-1.5)
    config = tic.read_configuration()
    assert (config.channel_start, config.channel_stop) == (1, 2)
    assert (config.level_start_v, config.slope_stop) == (-1.5, "POS")
    assert tic.resource.query("CALC:AVER:STAT?") == "1"


def test_measure_fetch_and_statistics_agree_with_numpy(tic):
    tic.configure_time_interval(trigger_level_v=0.1)
    readings = tic.measure(8)
    assert readings == _sim_readings()
    assert all(4e-7 < r < 5e-7 for r in readings)
    assert tic.fetch() == readings
    stats = tic.read_statistics()
    assert isinstance(stats, IntervalStatistics)
    assert stats.count == len(readings)
    assert stats.mean_s == pytest.approx(np.mean(readings), rel=1e-9)
    assert stats.stdev_s == pytest.approx(np.std(readings, ddof=1), rel=1e-6)
    assert (stats.min_s, stats.max_s) == (min(readings), max(readings))


def test_out_of_range_level_raises_with_the_error_queue_text(tic):
    with pytest.raises(InstrumentError) as info:
        tic.configure_time_interval(trigger_level_v=7.5)
    assert info.value.command == "INP1:LEV 7.500000"
    assert info.value.errors == [(-100, "Command error")]
    assert '-100,"Command error"' in str(info.value)
    assert tic.read_error_queue() == []  # drained by the driver


def test_reading_count_mismatch_is_an_error(tic):
    # The simulated counter always returns eight readings, whatever SAMP:COUN says.
    with pytest.raises(InstrumentError, match="asked for 3 readings, READ\\? returned 8"):
        tic.measure(3)


def test_unanswered_query_times_out_clearly(tic):
    tic.timeout_ms = 50
    with pytest.raises(InstrumentTimeout) as info:
        tic.query("MEAS:FREQ?")
    assert info.value.command == "MEAS:FREQ?" and info.value.timeout_ms == 50
    assert info.value.errors == [(-100, "Command error")]
    assert "no answer to 'MEAS:FREQ?' within 50 ms" in str(info.value)
    assert isinstance(info.value, InstrumentError)
    tic.timeout_ms = 500
    assert tic.identify().startswith("Keysight")  # the session is still usable


def test_parameters_are_checked_before_anything_is_sent(tic):
    with pytest.raises(ValueError, match="slope must be one of"):
        tic.configure_time_interval(slope="UP")
    with pytest.raises(ValueError, match="start and stop channels must differ"):
        tic.configure_time_interval(channel_start=1, channel_stop=1)
    with pytest.raises(ValueError, match="channels must be in"):
        tic.configure_time_interval(channel_start=3)
    with pytest.raises(ValueError, match="n must be an int"):
        tic.measure(0)
    assert tic.read_error_queue() == []


def test_packaged_definition_opens():
    rm = sim_resource_manager()
    try:
        assert SIM_RESOURCE in rm.list_resources()
        with TimeIntervalCounter.open(SIM_RESOURCE, rm) as tic:
            assert "53230A" in tic.identify()
    finally:
        rm.close()
    assert instrument.SIM_DEFINITION.is_file()
