"""PcieCore against cocotbext-pcie's root complex and UltraScale PCIe hard IP model.

tests/cocotb/tb_pcie.py: enumeration and BAR access, tick records through the H2C ring and
orders / top-of-book records back through the C2H ring with the host driver
(``host.pcie_transport``) under the ``Device`` API, equal to the reference models; ring
wrap-around; a full C2H ring dropping and counting while the MAC side keeps every frame.
"""

import dataclasses

import pytest
from tick2quote.hdl.coremap import CoreConfig
from tick2quote.hdl.pciecore import PcieCore
from tick2quote.sim.corescenario import small_config
from tick2quote.sim.harness import run_cocotb
from tick2quote.sim.models.pricing import QuoteParams

# Quote busily: a wide band and no minimum edge, so most book changes move a quote.
DEFAULT = QuoteParams(spread_bps=40, band_bps=2000, quote_size=100, skew_num=3, skew_shift=4)


def pcie_core(**params) -> PcieCore:
    """The design under test from JSON-ready build parameters."""
    params["peers"] = tuple(params["peers"])
    params["default"] = QuoteParams(**params["default"])
    return PcieCore(CoreConfig(**params))


def build_params() -> dict:
    """A small core that the simulators build quickly."""
    cfg = small_config(default=DEFAULT)
    values = dataclasses.asdict(cfg)
    values["default"] = dataclasses.asdict(cfg.default)
    return values


def _run(simulator: str, testcase: list[str] | None = None, **test_params) -> None:
    run_cocotb(
        pcie_core,
        toplevel="pciecore",
        test_module="tb_pcie",
        simulator=simulator,
        params=build_params(),
        testcase=testcase,
        test_params={
            "seed": 3,
            "feed_symbols": 8,
            "per_packet": 4,
            "chunk": 8,
            "h2c_slots": 16,
            "c2h_slots": 64,
            **test_params,
        },  # fmt: skip
    )


def test_pcie_verilator():
    _run("verilator", messages=1500, tx_pause="random_25")


def test_pcie_icarus():
    # Icarus runs about 20 times slower: the round trip only, on a short session
    _run("icarus", ["ticks_round_trip"], messages=50, tx_pause="alternate", h2c_slots=8,
         c2h_slots=8, mac_gap=300)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_pcie_verilator_long(seed):
    _run("verilator", messages=3000, seed=seed, tx_pause="random_60", per_packet=8)
