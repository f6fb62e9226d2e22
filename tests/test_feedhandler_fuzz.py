"""Fuzz of the gateware feed handler: random and mutated frames through the RTL.

At least 100 000 frames on Verilator (the fastest simulator here) and a smaller run on Icarus,
through the ``fuzz`` test of tests/cocotb/tb_feedhandler.py: no lock-up (the input is never
back-pressured and good frames after each batch are parsed), every frame counted exactly once,
every event and counter equal to the reference models'.
"""

import pytest
from tick2quote.hdl.feedhandler import FeedHandler
from tick2quote.sim.harness import run_cocotb


@pytest.mark.parametrize("simulator, frames", [("verilator", 100_000), ("icarus", 2_000)])
def test_feedhandler_fuzz(simulator, frames):
    run_cocotb(
        lambda **_: FeedHandler(),
        toplevel="feed_handler",
        test_module="tb_feedhandler",
        simulator=simulator,
        params={"session_messages": 600},
        test_params={"fuzz_frames": frames, "fuzz_batch": 20_000},
        testcase="fuzz",
    )
