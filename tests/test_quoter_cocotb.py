"""Quoter on Icarus Verilog and Verilator through cocotb (tests/cocotb/tb_quoter.py).

Random streams checked order by order and counter by counter against QuoterModel; each run
crosses input idle patterns with output back-pressure and a kind of lookahead hint.
"""

import json
import re

import pytest
from tick2quote.hdl.quoter import Quoter
from tick2quote.sim.harness import _for_icarus, run_cocotb, verilog_of

GEOMETRY = {"symbols": 8, "ref_window": 16}


def quoter(symbols, ref_window):
    return Quoter(symbols=symbols, ref_window=ref_window)


@pytest.mark.parametrize(
    "simulator, events, source, sink, hint",
    [
        ("verilator", 1500, "random_25", "random_60", "book"),
        ("verilator", 800, "none", "none", "none"),
        ("icarus", 300, "bursty", "alternate", "noise"),
        ("verilator", 300, "bursty", "alternate", "noise"),
    ],
)
def test_quoter_streams_match_model(simulator, events, source, sink, hint):
    session = {"seed": events, "events": events, "source": source, "sink": sink, "hint": hint}
    run_cocotb(
        quoter,
        toplevel="quoter",
        test_module="tb_quoter",
        simulator=simulator,
        params=GEOMETRY,
        extra_env={"T2Q_QUOTER_SESSION": json.dumps(session)},
    )


def test_every_combinational_block_wakes_at_time_zero():
    """Every ``always @*`` block of the quoter's Verilog, as the harness gives it to Icarus,
    reads a wake-up register set at time zero.

    Icarus runs an ``always @*`` block only when one of its inputs changes. A block that reads
    no wake-up register stays unknown while its inputs keep their initial values: the
    control-write plan's locate once did, and the parameter writes for locate 0 were lost on
    Icarus only. The quoter's reset-less plan registers give Yosys' bare one-statement blocks,
    which the harness wakes with registers of their own.
    """
    text = _for_icarus(verilog_of(quoter, "quoter", GEOMETRY))
    blocks = text.count("always @*")
    unwoken = re.findall(
        r"always @\*(?! begin\n\s*if \((?:\\\S*dump_module\S*|\\t2q_wake\$\d+) \)).*\n.*", text
    )
    assert blocks > 0
    assert unwoken == [], unwoken[:5]
