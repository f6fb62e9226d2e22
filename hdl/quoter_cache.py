"""The quoter's per-symbol memories behind a one-entry, always coherent read cache.

:class:`StateCache` keeps one block-RAM-shaped memory per state word (:data:`~.quoterstate.STATE`),
all read at one address and written at one address per cycle, each word with its own write
enable. A read issued in cycle ``c`` (:attr:`~StateCache.rd_en`, :attr:`~StateCache.rd_addr`)
lands in cycle ``c + 2``: the block RAM answers in ``c + 1`` and its data goes into one
register per word (:attr:`~StateCache.word`) through a single two-input multiplexer whose
select and enable come from registers (ECP5 block RAM's clock-to-out leaves room for little
more). From then on the cache *holds* that locate: :attr:`~StateCache.valid`,
:attr:`~StateCache.locate`.

Each memory reads and writes through one address (the write's in a cycle with a write, the
read's otherwise), so it maps onto one block RAM port with no logic behind the read data: the
cache refuses reads in a cycle with any write (:attr:`~StateCache.rd_ok`); the owner retries.

Coherence. Every write to the held locate, and a write in the cycle a read lands, is
written into the held word too (it overrides the landing read). So :attr:`~StateCache.word`
is always the memory's current content for the held locate, up to the writes of the previous
cycle, and :attr:`~StateCache.current` adds the write of this cycle: what
an event taken this cycle must copy.

Reset: while ``clearing`` the memories are written with their reset words (one address per
cycle, from the reset sweep) and the cache holds nothing.

:class:`RefTable` is the UserRefNum -> (locate, side) table fills look up.
"""

from __future__ import annotations

from amaranth.hdl import Mux, Signal
from amaranth.lib.memory import Memory

from .quoterstate import ref_layout

__all__ = ["StateCache", "RefTable"]


class StateCache:
    """Per-symbol memories and their read cache, built into module ``m``.

    ``layouts`` maps a word's name to its shape, ``reset`` to its reset value; ``clearing`` and
    ``clear_addr`` come from the reset sweep; ``writing`` (a register) is set in every cycle in
    which a word may be written (the memories then use the write address). The owner drives
    :attr:`rd_en`, :attr:`rd_addr`, :attr:`wr_addr`, per word :attr:`wr_en` and
    :attr:`wr_data` (from registers: the write data is also forwarded into the cache), and
    :attr:`wr_addr_next`, the address the next cycle's write will have (so that the address
    compares are registered). A read (``rd_en``) is issued only when :attr:`rd_ok`.
    """

    def __init__(self, m, depth: int, layouts: dict, reset: dict, clearing, clear_addr, writing):
        bits = (depth - 1).bit_length()
        self.rd_en = Signal(name="cache_rd_en")
        self.rd_addr = Signal(bits, name="cache_rd_addr")
        self.wr_addr = Signal(bits, name="cache_wr_addr")
        self.wr_addr_next = Signal(bits, name="cache_wr_addr_next")
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
        #: no write this cycle: a read may be issued
        self.rd_ok = Signal(name="cache_rd_ok")
        m.d.comb += self.rd_ok.eq(~writing & ~clearing)
        m.d.sync += [
            self.inflight.eq(self.rd_en & self.rd_ok),
            self.inflight_addr.eq(self.rd_addr),
        ]
        with m.If(self.inflight):
            m.d.sync += [self.valid.eq(1), self.locate.eq(self.inflight_addr)]
        with m.If(clearing):
            m.d.sync += self.valid.eq(0)
        # a write this cycle to the held locate / to the locate of the read landing now
        write_here = Signal(name="cache_write_here")
        lands_here = Signal(name="cache_lands_here")
        held_next = Mux(self.inflight, self.inflight_addr, self.locate)
        m.d.sync += [
            write_here.eq(self.wr_addr_next == held_next),
            lands_here.eq(self.wr_addr_next == self.rd_addr),
        ]
        for name, shape in layouts.items():
            mem = Memory(shape=shape, depth=depth, init=[])
            m.submodules[f"mem_{name}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            # one address for both ports: they map onto one block RAM port
            addr = Signal(bits, name=f"{name}_addr")
            m.d.comb += [
                addr.eq(Mux(clearing, clear_addr[:bits], Mux(writing, self.wr_addr, self.rd_addr))),
                wp.addr.eq(addr),
                wp.data.eq(Mux(clearing, reset[name], self.wr_data[name])),
                wp.en.eq(clearing | self.wr_en[name]),
                rp.addr.eq(addr),
            ]
            # the held word: the landing read, or the write that overrides it (one LUT after
            # the read data: the select and the enable come from registers)
            word = Signal(shape, name=f"{name}_word")
            en, data = self.wr_en[name], self.wr_data[name]
            take_write = Signal(name=f"{name}_take_write")
            m.d.comb += take_write.eq(Mux(self.inflight, en & lands_here, en & write_here))
            with m.If(self.inflight | take_write):
                m.d.sync += word.eq(Mux(take_write, data, rp.data))
            current = Signal(shape, name=f"{name}_current")
            m.d.comb += current.eq(Mux(en & write_here, data, word))
            self.word[name] = word
            self.current[name] = current

    def hit(self, locate):
        """The cache holds ``locate`` (its low address bits) this cycle."""
        return self.valid & (self.locate == locate[: len(self.locate)])


class RefTable:
    """The UserRefNum -> (locate, side) table (:data:`~.quoterstate.ref_layout` entries).

    Two banks by the number's lowest bit, so the two numbers an update issues (consecutive)
    are written in one cycle; ``1 << bank_bits`` entries each, cleared while ``clearing``.
    A read of both banks at :attr:`rd_addr` (the number without its lowest bit) in a cycle with
    :attr:`rd_en` lands in :attr:`raw` two cycles later; the owner issues reads only in cycles
    with no write (both ports of a bank share one address: one block RAM port). Writes: per bank
    :attr:`wr_en`, :attr:`wr_index`, :attr:`wr_data`.
    """

    def __init__(self, m, bank_bits: int, clearing, clear_addr):
        self.rd_addr = Signal(max(bank_bits, 1), name="refs_rd_addr")
        self.rd_en = Signal(name="refs_rd_en")
        self.raw = [Signal(ref_layout, name=f"refs{b}_raw") for b in (0, 1)]
        self.wr_en = [Signal(name=f"refs{b}_wr_en") for b in (0, 1)]
        self.wr_index = [Signal(max(bank_bits, 1), name=f"refs{b}_wr_index") for b in (0, 1)]
        self.wr_data = [Signal(ref_layout, name=f"refs{b}_wr_data") for b in (0, 1)]
        loading = Signal(name="refs_loading")
        m.d.sync += loading.eq(self.rd_en)
        clear = clearing & (clear_addr >> bank_bits == 0)
        for b in (0, 1):
            mem = Memory(shape=ref_layout, depth=1 << bank_bits, init=[])
            m.submodules[f"refs{b}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            addr = Signal(bank_bits, name=f"refs{b}_addr")
            waddr = Mux(clearing, clear_addr, self.wr_index[b])[:bank_bits]
            m.d.comb += [
                wp.en.eq(clear | self.wr_en[b]),
                wp.data.eq(Mux(clearing, 0, self.wr_data[b].as_value())),
                addr.eq(Mux(wp.en, waddr, self.rd_addr[:bank_bits])),
                wp.addr.eq(addr),
                rp.addr.eq(addr),
            ]
            with m.If(loading):
                m.d.sync += self.raw[b].eq(rp.data)
