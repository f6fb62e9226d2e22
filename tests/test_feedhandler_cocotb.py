"""FeedHandler on Icarus Verilog and Verilator through cocotb (tests/cocotb/tb_feedhandler.py)."""

import pytest
from tick2quote.hdl.feedhandler import FeedHandler
from tick2quote.sim.harness import SIMULATORS, run_cocotb


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_feedhandler_cocotb(simulator):
    run_cocotb(
        lambda **_: FeedHandler(),
        toplevel="feed_handler",
        test_module="tb_feedhandler",
        simulator=simulator,
        params={"session_messages": 600},
    )
