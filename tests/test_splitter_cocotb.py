"""MessageSplitter on Icarus Verilog and Verilator through cocotb (tests/cocotb/tb_splitter.py)."""

import pytest
from tick2quote.hdl.splitter import MessageSplitter
from tick2quote.sim.harness import SIMULATORS, run_cocotb


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_splitter_cocotb(simulator):
    run_cocotb(
        MessageSplitter,
        toplevel="splitter",
        test_module="tb_splitter",
        simulator=simulator,
        test_params={"packets": 4, "seed": 3},
    )
