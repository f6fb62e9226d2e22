"""The whole Core on Icarus Verilog and Verilator through cocotb (tests/cocotb/tb_core.py).

Frames in, frames out, against the reference models: same orders byte for byte, same top of
book, same counters; crossed with input idle patterns and transmit back-pressure.
"""

import dataclasses

import pytest
from tick2quote.hdl.core import Core
from tick2quote.hdl.coremap import CoreConfig
from tick2quote.sim.corescenario import small_config
from tick2quote.sim.harness import run_cocotb
from tick2quote.sim.models.pricing import QuoteParams

# Quote busily: a wide band and no minimum edge, so most book changes move a quote.
DEFAULT = QuoteParams(spread_bps=40, band_bps=2000, quote_size=100, skew_num=3, skew_shift=4)


def core(**params) -> Core:
    params["peers"] = tuple(params["peers"])
    params["default"] = QuoteParams(**params["default"])
    return Core(CoreConfig(**params))


def _params() -> dict:
    cfg = small_config(default=DEFAULT)
    values = dataclasses.asdict(cfg)
    values["default"] = dataclasses.asdict(cfg.default)
    return values


@pytest.mark.parametrize(
    "simulator, messages, idle, backpressure, kill, random_params",
    [
        ("verilator", 1500, "none", "none", False, False),
        ("verilator", 1200, "random_25", "random_25", True, True),
        ("verilator", 1000, "bursty", "random_60", True, True),
        ("icarus", 250, "bursty", "alternate", True, True),
    ],
)
def test_core_matches_model(simulator, messages, idle, backpressure, kill, random_params):
    run_cocotb(
        core,
        toplevel="core",
        test_module="tb_core",
        simulator=simulator,
        params=_params(),
        test_params={
            "seed": messages,
            "messages": messages,
            "feed_symbols": 12,
            "idle": idle,
            "backpressure": backpressure,
            "kill": kill,
            "pace": 25,
            "random_params": random_params,
        },
    )


@pytest.mark.parametrize("simulator, messages", [("verilator", 1500), ("icarus", 200)])
def test_tick_records_quote_as_the_itch_messages(simulator, messages):
    run_cocotb(
        core,
        toplevel="core",
        test_module="tb_core",
        simulator=simulator,
        params=_params(),
        test_params={
            "mode": "ticks",
            "seed": messages + 1,
            "messages": messages,
            "feed_symbols": 12,
            "idle": "random_25",
            "backpressure": "random_25",
            "pace": 30,
        },
    )
