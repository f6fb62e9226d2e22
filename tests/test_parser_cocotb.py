"""ItchParser on Icarus Verilog and Verilator through cocotb (tests/cocotb/tb_parser.py)."""

import pytest
from tick2quote.hdl.parser import ItchParser
from tick2quote.sim.harness import SIMULATORS, run_cocotb


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_parser_cocotb(simulator):
    run_cocotb(
        lambda **_: ItchParser(),
        toplevel="itch_parser",
        test_module="tb_parser",
        simulator=simulator,
        params={"session_messages": 300},
    )
