"""The 1 GbE block on Icarus Verilog and Verilator through cocotb (tests/cocotb/tb_mac.py),
checked against cocotbext-eth's GMII source and sink."""

import pytest
from tick2quote.boards.ethernet import GmiiEthernet
from tick2quote.sim.harness import SIMULATORS, run_cocotb


def one_clock_ethernet(rx_buffer_depth: int, tx_depth: int) -> GmiiEthernet:
    """The board tops' Ethernet block with its three clock domains joined into one."""
    return GmiiEthernet(rx_domain="sync", tx_domain="sync", core_domain="sync",
                        rx_buffer_depth=rx_buffer_depth, tx_depth=tx_depth)  # fmt: skip


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_mac_cocotb(simulator):
    run_cocotb(
        one_clock_ethernet,
        toplevel="gmii_ethernet",
        test_module="tb_mac",
        simulator=simulator,
        params={"rx_buffer_depth": 256, "tx_depth": 64},
        test_params={"seed": 3},
    )
