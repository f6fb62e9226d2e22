"""Wire-to-wire timing with a time-interval counter over SCPI (pyvisa).

A time-interval counter measures, per event, the time from an edge on its *start* channel (a tap
on the feed fibre or cable into the device) to an edge on its *stop* channel (a tap on the order
link out): the device's wire-to-wire latency, independent of any host clock.

:class:`TimeIntervalCounter` speaks the SCPI subset below, modelled on the Keysight 53230A
(the Tektronix FCA3000 family accepts the same forms). Every command is sent upper-case in its
short form, terminated by a line feed:

=============================  =================================================================
``*IDN?``                      identification: maker, model, serial, firmware
``*RST``, ``*CLS``             reset the settings; clear the status and the error queue
``SYST:ERR?``                  pop the oldest error: ``<code>,"<text>"``; ``+0,"No error"`` when
                               the queue is empty
``CONF:TINT (@a),(@b)``        time-interval function, start on channel a, stop on channel b
``CONF?``                      the function in force, e.g. ``"TINT (@1),(@2)"``
``INP<n>:LEV <volts>``         trigger level of channel n (and ``INP<n>:LEV?``)
``INP<n>:SLOP POS|NEG``        trigger edge of channel n (and ``INP<n>:SLOP?``)
``SAMP:COUN <n>``              readings per trigger (and ``SAMP:COUN?``)
``CALC:STAT 1``                enable the math subsystem (``CALC:STAT?``)
``CALC:AVER:STAT 1``           accumulate statistics over the readings (``CALC:AVER:STAT?``)
``READ?``                      start a measurement and return its readings, comma-separated
``FETC?``                      return the readings of the last measurement again
``CALC:AVER:ALL?``             mean, standard deviation, minimum, maximum of the readings
``CALC:AVER:COUN:CURR?``       how many readings the statistics hold
=============================  =================================================================

After every setting the driver reads ``SYST:ERR?`` until it answers code 0; any error raises
:class:`InstrumentError` carrying the queue's text. A query that is not answered within the
resource's timeout raises :class:`InstrumentTimeout` naming the command, the timeout and what the
error queue then holds. ``host/tic_sim.yaml`` is a pyvisa-sim definition answering the same
commands, for tests and for trying the driver without an instrument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import pyvisa
import pyvisa.constants
import pyvisa.errors

__all__ = [
    "SIM_DEFINITION",
    "InstrumentError",
    "InstrumentTimeout",
    "TimeIntervalConfig",
    "IntervalStatistics",
    "TimeIntervalCounter",
    "sim_resource_manager",
]

#: The packaged pyvisa-sim definition of a counter (``tic_sim.yaml``).
SIM_DEFINITION = resources.files(__package__).joinpath("tic_sim.yaml")
#: Resource name of the simulated counter in :data:`SIM_DEFINITION`.
SIM_RESOURCE = "TCPIP0::192.0.2.10::inst0::INSTR"
SLOPES = ("POS", "NEG")
CHANNELS = (1, 2)
MAX_SAMPLES = 1_000_000
#: At most this many entries are drained from the error queue at once (a stuck queue stops here).
_MAX_QUEUE = 32
_ERROR = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')


class InstrumentError(RuntimeError):
    """The instrument reported errors, or answered something the driver cannot read.

    ``errors`` holds the ``(code, text)`` pairs drained from ``SYST:ERR?`` (may be empty when the
    problem is a malformed answer); ``command`` is the command that caused it.
    """

    def __init__(self, message: str, command: str = "", errors: list[tuple[int, str]] = ()):
        self.command = command
        self.errors = list(errors)
        if self.errors:
            message += ": " + "; ".join(f'{code},"{text}"' for code, text in self.errors)
        super().__init__(message)


class InstrumentTimeout(InstrumentError):
    """A query was not answered within ``timeout_ms``."""

    def __init__(self, command: str, timeout_ms: float, errors: list[tuple[int, str]] = ()):
        self.timeout_ms = timeout_ms
        super().__init__(f"no answer to {command!r} within {timeout_ms} ms", command, errors)


@dataclass(frozen=True)
class TimeIntervalConfig:
    """The time-interval setup as read back from the instrument."""

    channel_start: int
    channel_stop: int
    level_start_v: float
    level_stop_v: float
    slope_start: str
    slope_stop: str
    sample_count: int


@dataclass(frozen=True)
class IntervalStatistics:
    """The instrument's statistics over its readings, in seconds."""

    count: int
    mean_s: float
    stdev_s: float
    min_s: float
    max_s: float


def sim_resource_manager() -> pyvisa.ResourceManager:
    """A pyvisa ResourceManager serving the packaged simulated counter (needs pyvisa-sim)."""
    return pyvisa.ResourceManager(f"{SIM_DEFINITION}@sim")


class TimeIntervalCounter:
    """A time-interval counter on an open pyvisa message-based resource.

    Use :meth:`open` to open one by VISA resource name. ``timeout_ms`` applies to every query.
    """

    def __init__(self, resource: pyvisa.resources.MessageBasedResource, timeout_ms: float = 2000):
        self.resource = resource
        resource.read_termination = "\n"
        resource.write_termination = "\n"
        resource.timeout = timeout_ms

    @classmethod
    def open(
        cls,
        resource_name: str,
        resource_manager: pyvisa.ResourceManager | None = None,
        timeout_ms: float = 2000,
    ) -> TimeIntervalCounter:
        """Open ``resource_name`` (default manager: pyvisa's, i.e. a real VISA library)."""
        rm = resource_manager if resource_manager is not None else pyvisa.ResourceManager()
        return cls(rm.open_resource(resource_name), timeout_ms)

    def close(self) -> None:
        """Close the VISA session."""
        self.resource.close()

    def __enter__(self) -> TimeIntervalCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def timeout_ms(self) -> float:
        """The query timeout in milliseconds."""
        return self.resource.timeout

    @timeout_ms.setter
    def timeout_ms(self, value: float) -> None:
        self.resource.timeout = value

    # -- raw access ----------------------------------------------------------------------------

    def write(self, command: str) -> None:
        """Send ``command``; then drain the error queue and raise if it held any error."""
        self.resource.write(command)
        self.check_errors(command)

    def query(self, command: str) -> str:
        """Send ``command`` and return the answer without its terminator."""
        try:
            return self.resource.query(command).strip()
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise InstrumentTimeout(command, self.timeout_ms, self._drain()) from None
            raise InstrumentError(f"VISA error on {command!r}: {exc}", command) from exc

    def read_error_queue(self) -> list[tuple[int, str]]:
        """Drain ``SYST:ERR?``: the errors queued, oldest first (empty when none)."""
        errors = []
        for _ in range(_MAX_QUEUE):
            answer = self.resource.query("SYST:ERR?").strip()
            match = _ERROR.match(answer)
            if match is None:
                raise InstrumentError(f"unreadable SYST:ERR? answer {answer!r}", "SYST:ERR?")
            code, text = int(match.group(1)), match.group(2)
            if code == 0:
                break
            errors.append((code, text))
        return errors

    def check_errors(self, command: str = "") -> None:
        """Raise :class:`InstrumentError` if the error queue holds any error."""
        errors = self.read_error_queue()
        if errors:
            raise InstrumentError(f"instrument error after {command!r}", command, errors)

    def _drain(self) -> list[tuple[int, str]]:
        try:
            return self.read_error_queue()
        except (InstrumentError, pyvisa.errors.VisaIOError):
            return []

    # -- the measurement -----------------------------------------------------------------------

    def identify(self) -> str:
        """The ``*IDN?`` string: maker, model, serial number, firmware."""
        return self.query("*IDN?")

    def reset(self) -> None:
        """Reset the settings (``*RST``) and clear status and error queue (``*CLS``)."""
        self.resource.write("*RST")
        self.resource.write("*CLS")
        self.check_errors("*RST;*CLS")

    def configure_time_interval(
        self,
        channel_start: int = 1,
        channel_stop: int = 2,
        trigger_level_v: float = 0.0,
        slope: str = "POS",
        statistics: bool = True,
    ) -> None:
        """Measure from an edge on ``channel_start`` to the next edge on ``channel_stop``.

        Both channels trigger at ``trigger_level_v`` volts on the ``slope`` edge (``"POS"`` or
        ``"NEG"``). ``statistics`` turns on the instrument's running statistics. A level the
        instrument cannot set raises :class:`InstrumentError` with its error-queue text.
        """
        if channel_start not in CHANNELS or channel_stop not in CHANNELS:
            raise ValueError(f"channels must be in {CHANNELS}, not {channel_start, channel_stop}")
        if channel_start == channel_stop:
            raise ValueError(f"start and stop channels must differ, not both {channel_start}")
        if slope not in SLOPES:
            raise ValueError(f"slope must be one of {SLOPES}, not {slope!r}")
        self.write(f"CONF:TINT (@{channel_start}),(@{channel_stop})")
        for channel in CHANNELS:
            self.write(f"INP{channel}:LEV {float(trigger_level_v):f}")
            self.write(f"INP{channel}:SLOP {slope}")
        self.write(f"CALC:STAT {int(statistics)}")
        self.write(f"CALC:AVER:STAT {int(statistics)}")

    def read_configuration(self) -> TimeIntervalConfig:
        """The time-interval setup the instrument holds."""
        function = self.query("CONF?").strip('"')
        match = re.fullmatch(r"TINT \(@(\d)\),\(@(\d)\)", function)
        if match is None:
            raise InstrumentError(f"not in time-interval mode: CONF? is {function!r}", "CONF?")
        start, stop = int(match.group(1)), int(match.group(2))
        return TimeIntervalConfig(
            channel_start=start,
            channel_stop=stop,
            level_start_v=self._number(f"INP{start}:LEV?"),
            level_stop_v=self._number(f"INP{stop}:LEV?"),
            slope_start=self.query(f"INP{start}:SLOP?"),
            slope_stop=self.query(f"INP{stop}:SLOP?"),
            sample_count=int(self._number("SAMP:COUN?")),
        )

    def measure(self, n: int) -> list[float]:
        """Take ``n`` readings (``SAMP:COUN n`` then ``READ?``): intervals in seconds.

        Raises :class:`InstrumentError` if the instrument returns a different number of readings.
        """
        if not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
            raise ValueError(f"n must be an int in 1..{MAX_SAMPLES}, not {n!r}")
        self.write(f"SAMP:COUN {n}")
        readings = self._numbers("READ?")
        if len(readings) != n:
            raise InstrumentError(
                f"asked for {n} readings, READ? returned {len(readings)}", "READ?"
            )
        return readings

    def fetch(self) -> list[float]:
        """The readings of the last measurement again (``FETC?``), in seconds."""
        return self._numbers("FETC?")

    def read_statistics(self) -> IntervalStatistics:
        """The instrument's statistics over the readings taken since they were last cleared."""
        values = self._numbers("CALC:AVER:ALL?")
        if len(values) != 4:
            raise InstrumentError(f"CALC:AVER:ALL? gave {len(values)} values, not 4", "CALC:AVER")
        count = self._number("CALC:AVER:COUN:CURR?")
        mean, stdev, low, high = values
        return IntervalStatistics(int(count), mean, stdev, low, high)

    def _numbers(self, command: str) -> list[float]:
        answer = self.query(command)
        try:
            return [float(part) for part in answer.split(",")]
        except ValueError:
            raise InstrumentError(
                f"non-numeric answer to {command!r}: {answer!r}", command
            ) from None

    def _number(self, command: str) -> float:
        values = self._numbers(command)
        if len(values) != 1:
            raise InstrumentError(f"expected one number from {command!r}, got {values}", command)
        return values[0]
