"""TickParser on Icarus Verilog and Verilator through cocotb (tests/cocotb/tb_tickparser.py)."""

import pytest
from tick2quote.hdl.tickparser import TickParser
from tick2quote.sim.harness import SIMULATORS, run_cocotb

#: Not the default ceiling, so the parameter is exercised.
MAX_PRICE = 500_000_000


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_tickparser_cocotb(simulator):
    run_cocotb(
        TickParser,
        toplevel="tick_parser",
        test_module="tb_tickparser",
        simulator=simulator,
        params={"max_price": MAX_PRICE},
    )
