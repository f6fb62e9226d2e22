# KCU105 PCIe edge connector timing constraints (pins are in boards/kcu105_pcie.py).

# PCIe reference clock from the host, 100 MHz (MGTREFCLK0_225, through IBUFDS_GTE3). The hard
# IP's clocks, user_clk (250 MHz) among them, come out of its transceivers and are derived from
# this one.
create_clock -name pcie_refclk -period 10.000 [get_ports pcie_0__clk_p__io]

# PERST# is asynchronous to every clock: the hard IP synchronises it.
set_false_path -from [get_ports pcie_0__perst_n__io]
