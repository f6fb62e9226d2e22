"""The reset-time clear sweep every block with block RAM needs.

Block RAM keeps its contents across a soft reset, so a block that must start from known memory
walks every address once after reset, writing its initial value, and refuses input meanwhile.
"""

from amaranth.hdl import Module, Signal

__all__ = ["reset_sweep"]


def reset_sweep(m: Module, count: int) -> tuple[Signal, Signal]:
    """Add a sweep over addresses ``0 .. count - 1`` to ``m``, starting at reset.

    Returns ``(clearing, address)``: ``clearing`` is 1 from reset until the cycle after
    ``address`` reached ``count - 1``; ``address`` steps by one each cycle meanwhile.
    """
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, not {count!r}")
    clearing = Signal(init=1)
    address = Signal(range(count))
    with m.If(clearing):
        m.d.sync += address.eq(address + 1)
        with m.If(address == count - 1):
            m.d.sync += clearing.eq(0)
    return clearing, address
