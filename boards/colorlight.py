"""Colorlight 5A-75B r7.0 (LFE5U-25F, speed grade 6).

The full core does not fit this device: at 4 x 64 it takes some 54 000 LUT4 and 35 000
flip-flops against the LFE5U-25F's 24 288 of each, and 64 multipliers against 28. Its logic is
almost all fixed datapath, so smaller tables do not bring it near. ``t2q build --board
colorlight`` says so after synthesis (from nextpnr's demand before packing). The top is kept
for a core cut down to fit.

The board has two RGMII PHYs; the top uses port 0 for both directions. It has a single LED: it
is lit while the kill switch is on, otherwise it flashes with frames received or sent.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import io
from amaranth_boards.colorlight_5a75b_r7_0 import Colorlight_5A75B_R70Platform

from .top import Ecp5BoardTop

__all__ = ["ColorlightTop"]


class ColorlightTop(Ecp5BoardTop):
    """Board top for the Colorlight 5A-75B (see :class:`~.top.Ecp5BoardTop`)."""

    board = "colorlight"
    eth_port = 0

    @classmethod
    def make_platform(cls):
        return Colorlight_5A75B_R70Platform()

    def drive_leds(self, platform, m: Module, roles: dict[str, Signal]) -> None:
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led.o.eq(Mux(roles["kill"], 1, roles["rx"] | roles["tx"]))
