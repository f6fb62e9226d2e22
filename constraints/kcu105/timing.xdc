# KCU105 10 GbE timing constraints and the clock groups (pins are in boards/kcu105.py).
# Files here are read in name order: pcie.xdc, which creates pcie_refclk, comes first.

# SFP+ MGT reference clock from the Si570: 156.25 MHz.
create_clock -name mgt_refclk -period 6.400 [get_ports mgt_refclk_0__p__io]

# The board clock (125 MHz LVDS, the 10G IP's DRP clock) is constrained in the generated
# top.xdc as clock "clk125_0__p".

# Three unrelated clock trees:
# - the core's, the 10G IP's coreclk_out (156.25 MHz, derived from the MGT reference clock by
#   the IP's own constraints);
# - the PCIe hard IP's user_clk (250 MHz, derived from the PCIe reference clock);
# - the DRP clock.
# The core crosses between the first two itself (async FIFOs, synchronisers, Gray-coded
# counters in PcieCore); nothing else crosses.
set_clock_groups -asynchronous \
    -group [get_clocks -include_generated_clocks mgt_refclk] \
    -group [get_clocks -include_generated_clocks pcie_refclk] \
    -group [get_clocks -include_generated_clocks clk125_0__p]

# SFP status and control pins are static.
set_false_path -from [get_ports sfp_0__rx_los__io]
set_false_path -to [get_ports sfp_0__tx_disable__io]
