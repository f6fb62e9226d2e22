"""Great Scott Gadgets ButterStick r1.0 (LFE5UM5G-85F, speed grade 8) with its RGMII PHY.

The seven RGB LEDs share their colour lines: the green line is held on and LEDs 0..3 show link,
frames received, kill switch and frames sent.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import io
from amaranth_boards.butterstick import ButterStickPlatform

from .top import Ecp5BoardTop

__all__ = ["ButterStickTop"]


class ButterStickTop(Ecp5BoardTop):
    """Board top for the ButterStick (see :class:`~.top.Ecp5BoardTop`)."""

    board = "butterstick"
    eth_port = 0

    @classmethod
    def make_platform(cls):
        return ButterStickPlatform()

    def drive_leds(self, platform, m: Module, roles: dict[str, Signal]) -> None:
        leds = platform.request("rgb_leds_muxed", 0, dir="-")
        m.submodules.led_green = green = io.Buffer("o", leds.g)
        m.submodules.led_lines = lines = io.Buffer("o", leds.leds)
        m.d.comb += [
            green.o.eq(1),
            lines.o[0].eq(roles["link"]),
            lines.o[1].eq(roles["rx"]),
            lines.o[2].eq(roles["kill"]),
            lines.o[3].eq(roles["tx"]),
        ]
