"""The quoter's per-symbol memories behind a one-entry, always coherent read cache.

:class:`StateCache` keeps one block-RAM-shaped memory per state word (:data:`~.quoterstate.STATE`),
all read at one address and written at one address per cycle, each word with its own write
enable. A read issued in cycle ``c`` (:attr:`~StateCache.rd_en`, :attr:`~StateCache.rd_addr`)
lands in cycle ``c + 2``: the block RAM answers in ``c + 1`` and its data goes straight into
registers (the *raw* words; ECP5 block RAM's clock-to-out leaves no room for logic after it).
From then on the cache *holds* that locate: :attr:`~StateCache.valid`,
:attr:`~StateCache.locate`.

Coherence. Every write to the held locate, and every write that raced the read (in the cycle of
the read or the next one), is remembered per word in a *forward* register that overrides the
raw word. So :attr:`~StateCache.word` is always the memory's current content for the held
locate, up to the writes of the previous cycle, and :attr:`~StateCache.current` adds the write
of this cycle: what an event taken this cycle must copy. A read of the locate being written in
the same cycle returns whatever the block RAM gives; the forward register replaces it whole.

Reset: while ``clearing`` the memories are written with their reset words (one address per
cycle, from the reset sweep) and the cache holds nothing.
"""

from __future__ import annotations

from amaranth.hdl import Mux, Signal
from amaranth.lib.memory import Memory

__all__ = ["StateCache"]


class StateCache:
    """Per-symbol memories and their read cache, built into module ``m``.

    ``layouts`` maps a word's name to its shape, ``reset`` to its reset value; ``clearing`` and
    ``clear_addr`` come from the reset sweep. The owner drives :attr:`rd_en`, :attr:`rd_addr`,
    :attr:`wr_addr`, and per word :attr:`wr_en` and :attr:`wr_data` (from registers: the write
    data is also forwarded into the cache).
    """

    def __init__(self, m, depth: int, layouts: dict, reset: dict, clearing, clear_addr):
        bits = (depth - 1).bit_length()
        self.rd_en = Signal(name="cache_rd_en")
        self.rd_addr = Signal(bits, name="cache_rd_addr")
        self.wr_addr = Signal(bits, name="cache_wr_addr")
        self.wr_en = {name: Signal(name=f"{name}_wr_en") for name in layouts}
        self.wr_data = {
            name: Signal(shape, name=f"{name}_wr_data") for name, shape in layouts.items()
        }
        #: the cache holds :attr:`locate` (its words are :attr:`word`)
        self.valid = Signal(name="cache_valid")
        self.locate = Signal(bits, name="cache_locate")
        #: a read was issued last cycle, for :attr:`inflight_addr` (it lands this cycle)
        self.inflight = Signal(name="cache_inflight")
        self.inflight_addr = Signal(bits, name="cache_inflight_addr")
        self.word = {}
        self.current = {}

        m.d.sync += [
            self.inflight.eq(self.rd_en & ~clearing),
            self.inflight_addr.eq(self.rd_addr),
        ]
        with m.If(self.inflight):
            m.d.sync += [self.valid.eq(1), self.locate.eq(self.inflight_addr)]
        with m.If(clearing):
            m.d.sync += self.valid.eq(0)
        prev_en = {name: Signal(name=f"{name}_pw_en") for name in layouts}
        prev_addr = Signal(bits, name="cache_pw_addr")
        m.d.sync += prev_addr.eq(self.wr_addr)
        write_here = self.wr_addr == self.locate
        for name, shape in layouts.items():
            mem = Memory(shape=shape, depth=depth, init=[])
            m.submodules[f"mem_{name}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [
                wp.addr.eq(Mux(clearing, clear_addr[:bits], self.wr_addr)),
                wp.data.eq(Mux(clearing, reset[name], self.wr_data[name])),
                wp.en.eq(clearing | self.wr_en[name]),
                rp.addr.eq(self.rd_addr),
            ]
            raw = Signal(shape, name=f"{name}_raw")
            fwd = Signal(name=f"{name}_fwd")
            fwd_data = Signal(shape, name=f"{name}_fwd_data")
            prev_data = Signal(shape, name=f"{name}_pw_data")
            en, data = self.wr_en[name], self.wr_data[name]
            m.d.sync += [prev_en[name].eq(en & ~clearing), prev_data.eq(data)]
            with m.If(self.inflight):
                hit_now = en & (self.wr_addr == self.inflight_addr)
                hit_prev = prev_en[name] & (prev_addr == self.inflight_addr)
                m.d.sync += [
                    raw.eq(rp.data),
                    fwd.eq(hit_now | hit_prev),
                    fwd_data.eq(Mux(hit_now, data, prev_data)),
                ]
            with m.Elif(en & write_here):
                m.d.sync += [fwd.eq(1), fwd_data.eq(data)]
            word = Signal(shape, name=f"{name}_word")
            m.d.comb += word.eq(Mux(fwd, fwd_data, raw))
            current = Signal(shape, name=f"{name}_current")
            m.d.comb += current.eq(Mux(en & write_here, data, word))
            self.word[name] = word
            self.current[name] = current

    def hit(self, locate):
        """The cache holds ``locate`` (its low address bits) this cycle."""
        return self.valid & (self.locate == locate[: len(self.locate)])
