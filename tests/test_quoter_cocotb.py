"""Quoter on Icarus Verilog and Verilator through cocotb (tests/cocotb/tb_quoter.py).

Random streams checked order by order and counter by counter against QuoterModel; each run
crosses input idle patterns with output back-pressure and a kind of lookahead hint.
"""

import json

import pytest
from tick2quote.hdl.quoter import Quoter
from tick2quote.sim.harness import run_cocotb

GEOMETRY = {"symbols": 8, "ref_window": 16}


def quoter(symbols, ref_window):
    return Quoter(symbols=symbols, ref_window=ref_window)


@pytest.mark.parametrize(
    "simulator, events, source, sink, hint",
    [
        ("verilator", 1500, "random_25", "random_60", "book"),
        ("verilator", 800, "none", "none", "none"),
        pytest.param(
            "icarus",
            300,
            "bursty",
            "alternate",
            "noise",
            marks=pytest.mark.xfail(
                strict=True,
                reason="Icarus only: locate 0's parameters read back as 0 late in this session; "
                "the same session on Verilator (next case) and in Amaranth's simulator equals "
                "the model. Open: suspected state left X until first written (4-state only).",
            ),
        ),  # fmt: skip
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
