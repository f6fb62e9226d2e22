# KCU105 10 GbE timing constraints (pins are in boards/kcu105.py).

# SFP+ MGT reference clock from the Si570: 156.25 MHz.
create_clock -name mgt_refclk -period 6.400 [get_ports mgt_refclk_0__p__io]

# The board clock (125 MHz LVDS, the 10G IP's DRP clock) is constrained in the generated
# top.xdc as clock "clk125_0__p".

# The core runs on the IP's coreclk_out (156.25 MHz, derived from the MGT reference clock by
# the IP's own constraints); the DRP clock is unrelated to it.
set_clock_groups -asynchronous -group [get_clocks -include_generated_clocks mgt_refclk] \
    -group [get_clocks -include_generated_clocks clk125_0__p]

# SFP status and control pins are static.
set_false_path -from [get_ports sfp_0__rx_los__io]
set_false_path -to [get_ports sfp_0__tx_disable__io]
