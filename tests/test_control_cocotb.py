"""ControlPlane on Icarus Verilog and Verilator through cocotb (tests/cocotb/tb_control.py)."""

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from tick2quote.hdl.control import ControlPlane
from tick2quote.hdl.layouts import beat_layout
from tick2quote.hdl.regmap import ParamStore, device_map
from tick2quote.sim.harness import SIMULATORS, run_cocotb

PARAMS = {
    "symbols": 4,
    "ip": "10.0.0.2",
    "mac": 0x020000000001,
    "port": 0x5432,
    "token": 0x1122334455667788,
    "peers": ["10.0.0.9"],
}


class ControlTop(wiring.Component):
    """ControlPlane with a ParamStore behind its ``params`` window (a one-block toplevel)."""

    def __init__(self, symbols, **kwargs):
        self.plane = ControlPlane(device_map(symbols), **kwargs)
        self.store = ParamStore(self.plane.regmap.windows["params"])
        super().__init__(
            {
                "i": In(stream.Signature(beat_layout)),
                "o": Out(stream.Signature(beat_layout)),
                "regs": Out(self.plane.regs.shape()),
                "status": In(self.plane.status.shape()),
                "counters": Out(self.plane.counters.shape()),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.plane, m.submodules.store = self.plane, self.store
        wiring.connect(m, self.plane.params, self.store.ctrl)
        wiring.connect(m, wiring.flipped(self.i), self.plane.i)
        wiring.connect(m, self.plane.o, wiring.flipped(self.o))
        m.d.comb += [
            self.regs.eq(self.plane.regs),
            self.plane.status.eq(self.status),
            self.counters.eq(self.plane.counters),
        ]
        return m


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_control_cocotb(simulator):
    run_cocotb(
        ControlTop,
        toplevel="control",
        test_module="tb_control",
        simulator=simulator,
        params=PARAMS,
    )
