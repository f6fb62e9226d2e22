"""ECP5 ``EHXPLLL`` set-up: exact divider search and the primitive instance.

The board tops need 125 MHz for the RGMII transmit side (exact: Ethernet allows +-100 ppm), the
same clock shifted by a quarter period for the RGMII ``tx_clk`` pin, and the core clock. The
feedback is taken from ``CLKOP`` (the Ethernet clock), so that output is exact by construction;
:func:`solve_ecp5_pll` picks the VCO so that the core clock divides from it as closely as the
dividers allow and reports the frequencies actually reached.
"""

from dataclasses import dataclass

from amaranth.hdl import Const, Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PllPlan", "solve_ecp5_pll", "Ecp5Pll"]

# Limits from the ECP5 family data sheet (sysCLOCK PLL timing).
_PFD_MIN, _PFD_MAX = 3.125e6, 400e6
_VCO_MIN, _VCO_MAX = 400e6, 800e6
_IN_MIN, _IN_MAX = 8e6, 400e6
_DIV_MAX = 128


@dataclass(frozen=True)
class PllPlan:
    """Dividers of one ``EHXPLLL`` configuration and the frequencies they give (Hz).

    ``eth`` is ``CLKOP`` (also the feedback), ``core`` is ``CLKOS``, ``eth_shifted`` is
    ``CLKOS2`` delayed by ``shift_steps`` eighths of a VCO period.
    """

    clkin: float
    clki_div: int
    clkfb_div: int
    eth_div: int
    core_div: int
    vco: float
    eth: float
    core: float
    shift_steps: int

    @property
    def shift_ns(self) -> float:
        """Delay of ``CLKOS2`` relative to ``CLKOP``, in ns."""
        return self.shift_steps / 8 / self.vco * 1e9


def solve_ecp5_pll(clkin: float, core: float, *, eth: float = 125e6,
                   shift_ns: float = 2.0) -> PllPlan:  # fmt: skip
    """The ``EHXPLLL`` dividers for exact ``eth`` and the ``core`` clock closest to the request.

    Raises :class:`ValueError` when the input is out of range or no divider set gives ``eth``
    exactly.
    """
    if not _IN_MIN <= clkin <= _IN_MAX:
        raise ValueError(f"PLL input must be within 8 .. 400 MHz, not {clkin / 1e6:g} MHz")
    if core <= 0:
        raise ValueError(f"core clock must be positive, not {core!r}")
    best = None
    for clki_div in range(1, _DIV_MAX + 1):
        pfd = clkin / clki_div
        if pfd < _PFD_MIN:
            break
        if pfd > _PFD_MAX:
            continue
        clkfb_div = round(eth / pfd)
        if not 1 <= clkfb_div <= 80 or abs(pfd * clkfb_div - eth) > 1e-3:
            continue
        for eth_div in range(1, _DIV_MAX + 1):
            vco = eth * eth_div
            if not _VCO_MIN <= vco <= _VCO_MAX:
                continue
            core_div = max(1, min(_DIV_MAX, round(vco / core)))
            error = abs(vco / core_div - core)
            key = (error, -pfd, abs(vco - 600e6))
            if best is None or key < best[0]:
                best = (key, clki_div, clkfb_div, eth_div, core_div, vco)
    if best is None:
        raise ValueError(f"no EHXPLLL divider set makes {eth / 1e6:g} MHz from {clkin / 1e6:g}")
    _, clki_div, clkfb_div, eth_div, core_div, vco = best
    steps = round(shift_ns * 1e-9 * vco * 8)
    return PllPlan(clkin, clki_div, clkfb_div, eth_div, core_div, vco, eth, vco / core_div, steps)


class Ecp5Pll(wiring.Component):
    """One ``EHXPLLL`` configured by a :class:`PllPlan`.

    Attributes
    ----------
    clkin : In(1)
        Reference clock.
    eth_clk, eth_clk_shifted, core_clk : Out(1)
        ``CLKOP``, ``CLKOS2`` and ``CLKOS``; the board top drives its clock domains from them
        and constrains them.
    locked : Out(1)
        PLL lock.
    """

    clkin: In(1)
    eth_clk: Out(1)
    eth_clk_shifted: Out(1)
    core_clk: Out(1)
    locked: Out(1)

    def __init__(self, plan: PllPlan):
        self.plan = plan
        super().__init__()

    def elaborate(self, platform) -> Module:
        m = Module()
        plan = self.plan
        coarse, fine = divmod(plan.shift_steps, 8)

        def mhz(freq):
            return f"{freq / 1e6:.6g}"

        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=mhz(plan.clkin),
            a_FREQUENCY_PIN_CLKOP=mhz(plan.eth),
            a_FREQUENCY_PIN_CLKOS=mhz(plan.core),
            a_FREQUENCY_PIN_CLKOS2=mhz(plan.eth),
            a_ICP_CURRENT="12",
            a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED",
            p_INTFB_WAKE="DISABLED",
            p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA",
            p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC",
            p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=plan.clki_div,
            p_CLKFB_DIV=plan.clkfb_div,
            p_FEEDBK_PATH="CLKOP",
            p_CLKOP_ENABLE="ENABLED",
            p_CLKOP_DIV=plan.eth_div,
            p_CLKOP_CPHASE=plan.eth_div - 1,
            p_CLKOP_FPHASE=0,
            p_CLKOS_ENABLE="ENABLED",
            p_CLKOS_DIV=plan.core_div,
            p_CLKOS_CPHASE=plan.core_div - 1,
            p_CLKOS_FPHASE=0,
            p_CLKOS2_ENABLE="ENABLED",
            p_CLKOS2_DIV=plan.eth_div,
            p_CLKOS2_CPHASE=plan.eth_div - 1 + coarse,
            p_CLKOS2_FPHASE=fine,
            i_CLKI=self.clkin,
            i_CLKFB=self.eth_clk,
            i_RST=Const(0),
            i_STDBY=Const(0),
            i_PHASESEL0=Const(0),
            i_PHASESEL1=Const(0),
            i_PHASEDIR=Const(1),
            i_PHASESTEP=Const(1),
            i_PHASELOADREG=Const(1),
            i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0),
            i_ENCLKOS=Const(0),
            i_ENCLKOS2=Const(0),
            o_CLKOP=self.eth_clk,
            o_CLKOS=self.core_clk,
            o_CLKOS2=self.eth_clk_shifted,
            o_LOCK=self.locked,
        )
        return m
