"""OrderBook on Icarus Verilog and Verilator through cocotb (tests/cocotb/tb_book.py).

A long session (over 200 000 ITCH messages) on Verilator at a moderate geometry, a shorter one
on Icarus at a tight geometry, and a short smoke run at the full default capacity on Verilator.
"""

import json

import pytest
from tick2quote.hdl.book import OrderBook
from tick2quote.sim.harness import run_cocotb

MODERATE = {"symbols": 64, "sets": 2048, "ways": 4, "depth": 8}


def book(symbols, sets, ways, depth):
    return OrderBook(symbols=symbols, sets=sets, ways=ways, depth=depth)


def run_session(simulator: str, geometry: dict, **session):
    # Only the geometry goes into the build's parameter hash: runs of different lengths
    # share one simulator build.
    run_cocotb(
        book,
        toplevel="book",
        test_module="tb_book",
        simulator=simulator,
        params=geometry,
        extra_env={"T2Q_BOOK_SESSION": json.dumps(session)},
    )


#: A tight geometry for the shorter run: full sets, evictions and unknown best prices happen.
TIGHT = {"symbols": 64, "sets": 256, "ways": 4, "depth": 4}


@pytest.mark.parametrize(
    "simulator, geometry, messages",
    [("verilator", MODERATE, 200_000), ("icarus", TIGHT, 10_000)],
    ids=["verilator", "icarus"],
)
def test_book_session_matches_model(simulator, geometry, messages):
    run_session(simulator, geometry, seed=9, feed_symbols=48, messages=messages)


@pytest.mark.slow
def test_book_full_capacity_smoke():
    # Default capacity (65 536 orders, 1024 symbols): 100 to 250 s on two cores, almost all of
    # it Verilog generation (the memories' init blocks) and the Verilator build.
    geometry = {"symbols": 1024, "sets": 16384, "ways": 4, "depth": 8}
    run_session("verilator", geometry, seed=4, feed_symbols=400, messages=3000)
