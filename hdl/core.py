"""The tick-to-quote core: Ethernet frames in, orders, top-of-book frames and responses out.

:class:`Core` is what a board top instantiates: one receive stream of every frame reaching the
device and one transmit stream of every frame it sends (64-bit beats, FCS stripped; the board's
MAC adds it). Inside::

    rx --+--> FeedHandler (MoldUDP64 / ITCH) --+
         +--> TickReceiver -> TickParser ------+--> EventDispatcher --> OrderBook --+--> Quoter
         +--> FillParser (OUCH Executed) ------------------------------------------|-----^  |
         +--> ControlPlane (registers) -- parameters, kill switch, mask -----------|-----^  |
                                                                                   v        v
    tx <-- FrameMux <-- OrderEgress (OUCH 5.0) <---------------------------------- quoter.o
                   <-- ControlPlane responses
                   <-- TopOfBookFeed <---------------------------------- book updates

The register map is :func:`~.coremap.core_map`; every block counter is a register. A sequence
gap (or an event lost to a full buffer) marks every symbol stale until the host writes a new
``recover_epoch``; a stale symbol is never quoted. The device starts with the kill switch set.

Transmit priority: orders, then control responses, then top-of-book frames (a frame in flight is
never interrupted, so an order can wait for the rest of one). A top-of-book frame does not start
until the quoter could have sent the order of the last update it took, so the order that update
may cause does not wait behind it.

Book updates reach the quoter through a 32-entry queue (bypassed when empty, so it adds no
latency) and the top-of-book feed through a 16-update queue (an update finding it full is dropped
and counted: the feed sends at most one update in 12 cycles).
The book waits while the queue is full; the feed handler's buffer then fills and, when full,
marks the book stale (counted): under overload the core degrades to "stale, not quoting",
never to a wrong quote.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .book import OrderBook, top_of_book_layout
from .book import counter_layout as book_counters_layout
from .control import ControlPlane
from .coremap import LATENCY_BUCKETS, CoreConfig, core_map, counter_registers
from .dispatch import EventDispatcher
from .egress import OrderEgress, egress_counters_layout
from .feedhandler import FeedHandler, feed_counters_layout
from .fills import FillParser, fill_counters_layout
from .framemux import FrameMux
from .latencystats import LatencyStats
from .layouts import beat_layout
from .quoter import Quoter
from .quoterstate import Field, ctl_layout
from .quoterstate import counter_layout as quoter_counters_layout
from .regmap import ParamStore
from .tickparser import TickParser, tick_counters_layout
from .tickrx import TickReceiver, tickrx_counters_layout
from .tobfeed import TopOfBookFeed, tobfeed_counters_layout

__all__ = ["Core", "CORE_COUNTERS", "counter_blocks"]

#: The core's own counters: stale marks (gaps, overflows), recoveries, parameter writes lost.
CORE_COUNTERS = ("stale_marks", "recoveries", "ctl_lost")
_TOB_QUEUE = 32
_TOB_FEED_QUEUE = 16


def counter_blocks() -> dict[str, data.StructLayout]:
    """Block name -> counters layout, in register order (see :func:`~.coremap.core_map`)."""
    return {
        "feed": feed_counters_layout(32),
        "tickrx": tickrx_counters_layout,
        "tick": tick_counters_layout(32),
        "book": book_counters_layout,
        "quoter": quoter_counters_layout,
        "egress": egress_counters_layout,
        "fills": fill_counters_layout(32),
        "tob": tobfeed_counters_layout,
        "core": data.StructLayout({name: 32 for name in CORE_COUNTERS}),
    }


def _epoch_pulse(m: Module, value: Signal, name: str) -> Signal:
    """A one-cycle pulse each time ``value`` changes (after reset: on its first change)."""
    held = Signal.like(value, name=f"{name}_held")
    pulse = Signal(name=f"{name}_pulse")
    m.d.sync += held.eq(value)
    m.d.comb += pulse.eq(held != value)
    return pulse


class Core(wiring.Component):
    """The whole tick-to-quote gateware (see the module documentation).

    Parameters
    ----------
    config:
        A :class:`~.coremap.CoreConfig`: capacities, reset addresses, token, peers, defaults.

    Attributes
    ----------
    rx : In(stream.Signature(beat_layout))
        Every frame reaching the device; ``rx.ready`` is always 1.
    tx : Out(stream.Signature(beat_layout))
        Every frame the device sends.
    ticks : In(stream.Signature(beat_layout))
        Tick records from a host link other than Ethernet (a PCIe DMA engine): 40-byte records,
        5 full beats each, ``last`` on the fifth. They share the tick-record parser with the
        records arriving over UDP, a whole record at a time (UDP first).
    kill : Out(1)
        The kill switch (for a board LED).
    cycle : Out(32)
        The free-running cycle counter events are stamped with.
    """

    def __init__(self, config: CoreConfig | None = None):
        self.config = config or CoreConfig()
        cfg = self.config
        self.regmap = core_map(cfg, counter_blocks())
        self._control = ControlPlane(
            self.regmap,
            ip=cfg.ip,
            mac=cfg.mac,
            port=cfg.control_port,
            token=cfg.token,
            peers=cfg.peers,
        )
        super().__init__(
            {
                "rx": In(stream.Signature(beat_layout)),
                "tx": Out(stream.Signature(beat_layout)),
                "ticks": In(stream.Signature(beat_layout)),
                "kill": Out(1),
                "cycle": Out(32),
            }
        )

    def describe(self) -> dict:
        """The register map as JSON-ready data (what the host's register client reads)."""
        return {**self._control.describe(), "clock_hz": self.config.clock_hz}

    def elaborate(self, platform) -> Module:  # noqa: PLR0915 - the wiring diagram, in order
        m = Module()
        cfg = self.config
        m.submodules.control = ctl = self._control
        m.submodules.feed = feed = FeedHandler(groups=2, ports=2)
        m.submodules.tickrx = tickrx = TickReceiver()
        m.submodules.tick = tick = TickParser()
        m.submodules.fills = fills = FillParser()
        m.submodules.dispatch = dispatch = EventDispatcher()
        m.submodules.book = book = OrderBook(
            cfg.symbols, sets=cfg.order_sets, ways=cfg.order_ways, depth=cfg.ladder_depth
        )
        m.submodules.quoter = quoter = Quoter(cfg.symbols, cfg.ref_window, default=cfg.default)
        m.submodules.egress = egress = OrderEgress(symbols=cfg.symbols)
        m.submodules.tobfeed = tobfeed = TopOfBookFeed(depth=_TOB_FEED_QUEUE)
        m.submodules.latency = latency = LatencyStats(buckets=LATENCY_BUCKETS)
        m.submodules.txmux = txmux = FrameMux(3)
        regs = ctl.regs

        cycle = Signal(32)
        m.d.sync += cycle.eq(cycle + 1)
        m.d.comb += [self.cycle.eq(cycle), self.kill.eq(regs.kill_switch)]
        for block in (feed, tick, quoter, egress):
            m.d.comb += block.cycle.eq(cycle)

        # ---------------------------------------------------------------- receive fan-out
        m.d.comb += self.rx.ready.eq(1)
        for port in (feed.i, tickrx.i, fills.i, ctl.i):
            m.d.comb += [port.valid.eq(self.rx.valid), port.payload.eq(self.rx.payload)]
        ident = ctl.identity
        m.d.comb += [
            feed.allow_zero_checksum.eq(regs.allow_zero_checksum),
            tickrx.address.eq(ident.ip),
            tickrx.port.eq(regs.tick_port),
            fills.address.eq(ident.ip),
            fills.port.eq(regs.order_port),
        ]
        for k in range(2):
            group = getattr(regs, f"feed_group{k}")
            port = getattr(regs, f"feed_port{k}")
            m.d.comb += [
                feed.groups[k].enable.eq(group[32]),
                feed.groups[k].address.eq(group[:32]),
                feed.ports[k].enable.eq(port[16]),
                feed.ports[k].port.eq(port[:16]),
            ]
        m.submodules.tickmux = tickmux = FrameMux(2)
        wiring.connect(m, tickrx.o, tickmux.i[0])
        wiring.connect(m, wiring.flipped(self.ticks), tickmux.i[1])
        wiring.connect(m, tickmux.o, tick.i)

        # ---------------------------------------------------------------- events -> book
        wiring.connect(m, feed.o, dispatch.feed)
        wiring.connect(m, tick.o, dispatch.tick)
        wiring.connect(m, dispatch.book, book.i)
        wiring.connect(m, dispatch.trading, quoter.trading)
        m.d.comb += [
            book.stale_locate.eq(dispatch.stale_locate),
            dispatch.book_stale.eq(book.stale_now),
        ]
        wiring.connect(m, dispatch.directory, egress.directory)
        stale_marks = Signal(32)
        recover = _epoch_pulse(m, regs.recover_epoch, "recover")
        recoveries = Signal(32)
        m.d.comb += [book.mark_stale_all.eq(feed.stale), book.recover_all.eq(recover)]
        with m.If(feed.stale):
            m.d.sync += stale_marks.eq(stale_marks + 1)
        with m.If(recover):
            m.d.sync += recoveries.eq(recoveries + 1)

        # ---------------------------------------------------------------- book -> quoter
        m.submodules.tob_queue = queue = fifo.SyncFIFO(
            width=top_of_book_layout.size, depth=_TOB_QUEUE
        )
        update = book.o.payload.as_value()
        through = ~queue.r_rdy & quoter.tob.ready  # the queue is empty and the quoter free
        m.d.comb += [
            quoter.tob.valid.eq(queue.r_rdy | book.o.valid),
            quoter.tob.payload.eq(Mux(queue.r_rdy, queue.r_data, update)),
            queue.r_en.eq(quoter.tob.ready),
            book.o.ready.eq(queue.w_rdy),  # = through | w_rdy (an empty queue has room)
            queue.w_en.eq(book.o.valid & ~through),
            queue.w_data.eq(update),
            tobfeed.i.valid.eq(book.o.valid & book.o.ready),
            tobfeed.i.payload.eq(book.o.payload),
        ]
        # the book's update for an event it takes is on its output 5 cycles later: let the
        # quoter fetch that symbol's state meanwhile. The hint is registered: it drives the
        # quoter's state memory address, and the event comes straight from the feed
        # handler's buffer through the dispatcher (placed across the die from that memory)
        m.d.sync += [
            quoter.lookahead.valid.eq(book.i.valid & book.i.ready),
            quoter.lookahead.locate.eq(book.i.payload.locate),
        ]
        # orders first: no top-of-book frame starts while the quoter may be about to send one
        # (the transmit port finishes a frame before it starts the next)
        window = quoter.miss_latency + 2  # a top of book taken -> its first order, and one
        quoting = Signal(range(window + 1))
        with m.If(quoter.tob.valid & quoter.tob.ready):
            m.d.sync += quoting.eq(window)
        with m.Elif(quoting != 0):
            m.d.sync += quoting.eq(quoting - 1)
        m.d.comb += tobfeed.hold.eq((quoting != 0) | quoter.o.valid)
        m.d.comb += dispatch.quiet.eq(~book.busy & ~book.o.valid & ~queue.r_rdy)

        # ---------------------------------------------------------------- control -> blocks
        m.d.comb += quoter.kill.eq(regs.kill_switch)
        wiring.connect(m, fills.o, quoter.fill)
        m.submodules.params = params = ParamStore(self.regmap.windows["params"])
        wiring.connect(m, ctl.params, params.ctrl)
        m.submodules.ctl_queue = ctl_queue = fifo.SyncFIFO(width=ctl_layout.size, depth=4)
        request = Signal(ctl_layout)
        m.d.comb += [
            request.write.eq(1),
            request.locate.eq(ctl.params.locate),
            request.field.eq(ctl.params.field),
            request.value.eq(ctl.params.wdata),
            ctl_queue.w_data.eq(request),
            ctl_queue.w_en.eq(ctl.params.we),
            quoter.ctl.valid.eq(ctl_queue.r_rdy),
            quoter.ctl.payload.eq(ctl_queue.r_data),
            ctl_queue.r_en.eq(quoter.ctl.ready),
            quoter.ctl_data.ready.eq(1),
        ]
        assert Field.TICK.value == 0, "window field index = quoter field number"
        ctl_lost = Signal(32)
        with m.If(ctl.params.we & ~ctl_queue.w_rdy):
            m.d.sync += ctl_lost.eq(ctl_lost + 1)
        m.submodules.subscription = subs = ParamStore(self.regmap.windows["subscription"])
        wiring.connect(m, ctl.subscription, subs.ctrl)
        m.d.comb += [
            book.mask_write.eq(ctl.subscription.we),
            book.mask_locate.eq(ctl.subscription.locate),
            book.mask_tracked.eq(ctl.subscription.wdata[0]),
        ]

        # ---------------------------------------------------------------- egress and tx
        wiring.connect(m, quoter.o, egress.i)
        ecfg, tcfg = egress.config, tobfeed.config
        m.d.comb += [
            ecfg.dst_mac.eq(regs.gateway_mac),
            ecfg.src_mac.eq(ident.mac),
            ecfg.src_ip.eq(ident.ip),
            ecfg.dst_ip.eq(regs.gateway_ip),
            ecfg.src_port.eq(regs.order_port),
            ecfg.dst_port.eq(regs.gateway_port),
            ecfg.ttl.eq(regs.ttl),
            tcfg.dst_mac.eq(regs.tob_mac),
            tcfg.src_mac.eq(ident.mac),
            tcfg.src_ip.eq(ident.ip),
            tcfg.dst_ip.eq(regs.tob_group),
            tcfg.src_port.eq(regs.tob_port),
            tcfg.dst_port.eq(regs.tob_port),
            tcfg.ttl.eq(regs.ttl),
        ]
        wiring.connect(m, egress.o, txmux.i[0])
        wiring.connect(m, ctl.o, txmux.i[1])
        wiring.connect(m, tobfeed.o, txmux.i[2])
        wiring.connect(m, txmux.o, wiring.flipped(self.tx))

        # ---------------------------------------------------------------- status registers
        m.d.comb += [
            latency.sample.eq(egress.latency),
            latency.clear.eq(_epoch_pulse(m, regs.latency_clear_epoch, "latency_clear")),
        ]
        status = ctl.status
        m.d.comb += [
            status.cycle.eq(cycle),
            status.symbols.eq(cfg.symbols),
            status.clock_hz.eq(cfg.clock_hz),
            status.latency_min.eq(latency.min),
            status.latency_max.eq(latency.max),
            status.latency_sum.eq(latency.sum),
            status.latency_count.eq(latency.count),
        ]
        for k in range(LATENCY_BUCKETS):
            m.d.comb += getattr(status, f"latency_hist{k}").eq(latency.histogram[k])
        own = Signal(counter_blocks()["core"])
        m.d.comb += [
            own.stale_marks.eq(stale_marks),
            own.recoveries.eq(recoveries),
            own.ctl_lost.eq(ctl_lost),
        ]
        sources = {
            "feed": feed.counters,
            "tickrx": tickrx.counters,
            "tick": tick.counters,
            "book": book.counters,
            "quoter": quoter.counters,
            "egress": egress.counters,
            "fills": fills.counters,
            "tob": tobfeed.counters,
            "core": own,
        }
        for name, block, path in counter_registers(counter_blocks()):
            value = sources[block]
            for member in path:
                value = getattr(value, member)
            m.d.comb += getattr(status, name).eq(value)
        return m
