"""OrderEgress and FillParser on Icarus Verilog and Verilator through cocotb
(tests/cocotb/tb_egress.py)."""

import pytest
from tick2quote.hdl.egress import OrderEgress
from tick2quote.hdl.fills import FillParser
from tick2quote.sim.harness import SIMULATORS, run_cocotb

EGRESS_SYMBOLS = 16  # tests/test_egress.py's SYMBOLS


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_egress_cocotb(simulator):
    run_cocotb(
        lambda symbols, **_: OrderEgress(symbols=symbols),
        toplevel="order_egress",
        test_module="tb_egress",
        simulator=simulator,
        params={"block": "egress", "symbols": EGRESS_SYMBOLS},
        test_params={"orders": 80},
    )


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_fills_cocotb(simulator):
    run_cocotb(
        lambda **_: FillParser(),
        toplevel="fill_parser",
        test_module="tb_egress",
        simulator=simulator,
        params={"block": "fills"},
        test_params={"frames": 80},
    )
