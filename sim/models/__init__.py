"""Pure-Python reference models of every gateware block (no Amaranth, no cocotb)."""
