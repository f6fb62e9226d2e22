"""LambdaConcept ECPIX-5 85F (LFE5UM5G-85F, speed grade 8) with its RGMII Gigabit PHY.

LEDs (the four RGB LEDs, one colour each): 0 green = link, 1 green = frames received, 2 red =
kill switch on, 3 blue = frames sent.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import io
from amaranth_boards.ecpix5 import ECPIX585Platform

from .top import Ecp5BoardTop

__all__ = ["Ecpix5Top"]


class Ecpix5Top(Ecp5BoardTop):
    """Board top for the ECPIX-5 85F (see :class:`~.top.Ecp5BoardTop`)."""

    board = "ecpix5"
    eth_port = 0

    @classmethod
    def make_platform(cls):
        return ECPIX585Platform()

    def drive_leds(self, platform, m: Module, roles: dict[str, Signal]) -> None:
        for index, (role, colour) in enumerate(
            [("link", "g"), ("rx", "g"), ("kill", "r"), ("tx", "b")]
        ):
            led = platform.request("rgb_led", index, dir="-")
            m.submodules[f"led_{role}"] = buffer = io.Buffer("o", getattr(led, colour))
            m.d.comb += buffer.o.eq(roles[role])
