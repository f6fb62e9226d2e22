"""amaranth.sim tests of the PCIe DMA engines' own logic (hdl/pcieh2c.py, hdl/pciec2h.py).

The cocotb tests (test_pcie_cocotb.py) run the whole path against cocotbext-pcie's root
complex, which answers reads in order; here a Python root complex answers the tick fetcher's
reads split at 64- or 128-byte boundaries and *out of order* between requests, to check the
reorder buffer, and frames built by the host codecs check the transmit tap's records.
"""

import gc
import random
import re
import struct

import pytest
from amaranth.sim import Simulator
from tick2quote.hdl import pciemap
from tick2quote.hdl.coremap import CoreConfig
from tick2quote.hdl.pciebar import BarCompleter
from tick2quote.hdl.pciec2h import (
    HEADER_BYTES,
    MAX_PAYLOAD,
    RECORD_BYTES,
    RecordKind,
    TxTap,
    record_header_layout,
)
from tick2quote.hdl.pciecore import REPLY_PORT
from tick2quote.hdl.pciedma import PcieDma
from tick2quote.hdl.pcieh2c import SLOT_BYTES, TickFetcher
from tick2quote.hdl.pcietlp import PacketMux, tlp_beat_layout
from tick2quote.host import pcie_transport
from tick2quote.host.protocol import ethernet, tick
from tick2quote.sim.streams import beats_bytes, packet_beats, pause_pattern

RING_LOG2 = 5
BASE = 0x10_0000 - 4 * SLOT_BYTES  # the ring crosses a 4 KB boundary


def _records(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    rec = tick.TICK.record
    return [
        tick.encode(rec(rng.randrange(4096), rng.randint(1, 4), rng.randint(0, 1),
                        rng.randrange(1, 10**9), rng.randrange(1, 10**6), k, k, 0))
        for k in range(count)
    ]  # fmt: skip


def _dwords_to_beats(dwords: list[int]) -> list[dict]:
    beats = []
    for at in range(0, len(dwords), 2):
        pair = dwords[at : at + 2]
        data = pair[0] | (pair[1] << 32 if len(pair) == 2 else 0)
        beats.append({"data": data, "keep": (1 << len(pair)) - 1, "last": 0, "user": 0})
    beats[-1]["last"] = 1
    return beats


def _completions(memory: bytearray, tag: int, address: int, dwords: int, rcb: int, rng):
    """The completions of one read, split at ``rcb`` boundaries (and at random multiples)."""
    out, at, end = [], address, address + 4 * dwords
    while at < end:
        size = min(end - at, rcb * rng.randint(1, 2) - (at % rcb))
        remaining = end - at
        payload = memory[at - BASE : at - BASE + size]
        dw0 = (at & 0xFFF) | (remaining << 16) | (int(size == remaining) << 30)
        dw1 = size // 4
        dw2 = tag
        words = [dw0, dw1, dw2, *struct.unpack(f"<{size // 4}I", payload)]
        out.append(_dwords_to_beats(words))
        at += size
    return out


@pytest.mark.parametrize("tags, rcb, backpressure", [(4, 64, "random_25"), (2, 128, "bursty"),
                                                     (1, 64, "none")])  # fmt: skip
def test_fetcher_releases_records_in_ring_order(tags, rcb, backpressure):
    dut = TickFetcher(tags=tags)
    records = _records(150, seed=tags)
    size = 1 << RING_LOG2
    memory = bytearray(size * SLOT_BYTES)
    requests: list[tuple[int, int, int]] = []
    got: list[bytes] = []
    rng = random.Random(rcb)

    async def host(ctx):
        ctx.set(dut.base, BASE)
        ctx.set(dut.size_log2, RING_LOG2)
        ctx.set(dut.max_read_req, 2)
        ctx.set(dut.enable, 1)
        written = 0
        for _ in range(2000):  # ends the test if records stop coming
            if len(got) == len(records):
                break
            head = ctx.get(dut.head)
            burst = rng.randint(1, 12)
            while written < len(records) and written - head < size and burst:
                slot = written % size
                memory[slot * SLOT_BYTES : slot * SLOT_BYTES + 40] = records[written]
                written, burst = written + 1, burst - 1
            ctx.set(dut.tail, written)
            for _ in range(rng.randint(1, 30)):
                await ctx.tick()
        assert ctx.get(dut.head) == len(records)

    async def requester(ctx):
        pause = pause_pattern("random_25", 3)
        while True:
            beats = []
            while len(beats) < 2:
                ctx.set(dut.rq.ready, not next(pause))
                _, _, valid, ready, payload = await ctx.tick().sample(
                    dut.rq.valid, dut.rq.ready, dut.rq.payload
                )
                if valid and ready:
                    beats.append(payload)
            assert beats[1].last and beats[0].user == 0xFF
            address = beats[0].data & ~3
            dw2, dw3 = beats[1].data & 0xFFFFFFFF, beats[1].data >> 32
            assert (dw2 >> 11) & 0xF == 0  # a memory read
            assert address % SLOT_BYTES == 0 and (address + 4 * (dw2 & 0x7FF) - 1) // 4096 == (
                address // 4096
            ), "a read must not cross a 4 KB boundary"
            requests.append((dw3 & 0xFF, address, dw2 & 0x7FF))

    async def completer(ctx):
        while True:
            if not requests:
                await ctx.tick()
                continue
            # answer a random outstanding request: completions of different reads reorder
            tag, address, dwords = requests.pop(rng.randrange(len(requests)))
            for cpl in _completions(memory, tag, address, dwords, rcb, rng):
                for beat in cpl:
                    ctx.set(dut.rc.valid, 1)
                    ctx.set(dut.rc.payload, beat)
                    await ctx.tick()
                ctx.set(dut.rc.valid, 0)
                for _ in range(rng.randint(0, 3)):
                    await ctx.tick()

    async def consumer(ctx):
        pause = pause_pattern(backpressure, 5)
        beats = []
        while len(got) < len(records):
            ctx.set(dut.o.ready, not next(pause))
            _, _, valid, ready, payload = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload
            )
            if valid and ready:
                beats.append(payload)
                if payload.last:
                    assert len(beats) == 5 and beats[0].first
                    got.append(beats_bytes((b.data, b.keep) for b in beats))
                    beats = []

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(host)
    sim.add_testbench(requester, background=True)
    sim.add_testbench(completer, background=True)
    sim.add_testbench(consumer, background=True)
    sim.run()
    assert got == records


def _frame(dst_port: int, src_port: int, payload: bytes) -> bytes:
    return ethernet.encode_udp_frame(
        ethernet.UdpFrame(
            dst_mac=bytes(6),
            src_mac=bytes(6),
            src_ip=bytes(4),
            dst_ip=bytes(4),
            src_port=src_port,
            dst_port=dst_port,
            payload=payload,
        )  # fmt: skip
    )


def test_tap_keeps_orders_tops_and_replies():
    ports = {"order_port": 15000, "tob_port": 26500, "reply_port": 45000}
    rng = random.Random(9)
    frames, expected = [], []
    for k in range(60):
        length = rng.choice([1, 6, 7, 8, 9, 24, 40, 50, 80, MAX_PAYLOAD, MAX_PAYLOAD + 1])
        payload = bytes(rng.randrange(256) for _ in range(length))
        which = k % 4
        if which == 0:
            frames.append(_frame(15000, ports["order_port"], payload))
            kind = RecordKind.ORDER
        elif which == 1:
            frames.append(_frame(ports["tob_port"], ports["tob_port"], payload))
            kind = RecordKind.TOB
        elif which == 2:
            frames.append(_frame(ports["reply_port"], 21554, payload))
            kind = RecordKind.CONTROL
        else:
            frames.append(_frame(26477, 1234, payload))  # not kept
            kind = 0
        if kind and length <= MAX_PAYLOAD:
            expected.append((kind, payload))
    too_long = sum(1 for f in frames if len(ethernet.decode_udp_frame(f).payload) > MAX_PAYLOAD
                   and ethernet.decode_udp_frame(f).src_port != 1234)  # fmt: skip
    dut = TxTap()
    got, words = [], []
    starts = []

    async def source(ctx):
        for name, value in ports.items():
            ctx.set(getattr(dut, name), value)
        ctx.set(dut.room, 1)
        idle = pause_pattern("random_25", 1)
        now = 0

        async def step():
            nonlocal now
            ctx.set(dut.cycle, now)
            await ctx.tick()
            now += 1

        for frame in frames:
            for beat in packet_beats(frame):
                while next(idle):
                    ctx.set(dut.take, 0)
                    await step()
                ctx.set(dut.beat, beat)
                ctx.set(dut.take, 1)
                if beat["first"]:
                    starts.append(now)
                await step()
            ctx.set(dut.take, 0)
        for _ in range(5):
            await step()
        assert ctx.get(dut.counters.too_long) == too_long
        assert ctx.get(dut.counters.overflow) == 0

    async def sink(ctx):
        while True:
            _, _, wv, word, hv, header = await ctx.tick().sample(
                dut.words.valid, dut.words.payload, dut.headers.valid, dut.headers.payload
            )
            if wv:
                words.append(word.data)
            if hv:
                data = b"".join(w.to_bytes(8, "little") for w in words[: header.words])
                del words[: header.words]
                got.append((header.kind, data[: header.length], header.cycle))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(sink, background=True)
    sim.add_testbench(source)
    sim.run()
    assert [(k, p) for k, p, _ in got] == expected
    kept = [s for s, f in zip(starts, frames) if _kept(f, ports)]
    assert [c for _, _, c in got] == kept, "each record carries its frame's first cycle"
    assert not words


def _kept(frame: bytes, ports: dict) -> bool:
    udp = ethernet.decode_udp_frame(frame)
    kind = udp.src_port in (ports["order_port"], ports["tob_port"]) or (
        udp.dst_port == ports["reply_port"]
    )
    return kind and len(udp.payload) <= MAX_PAYLOAD


def test_host_driver_map_is_the_gateware_map():
    """The host driver's copy of the BAR map and record layout is the gateware's."""
    assert pcie_transport.BAR_REGISTERS == {n: o for n, o, _ in pciemap.REGISTERS}
    assert pcie_transport.BAR_ID == pciemap.BAR_ID
    assert pcie_transport.FRAME_WINDOW == pciemap.FRAME_WINDOW
    assert pcie_transport.FRAME_WINDOW_BYTES == pciemap.FRAME_WINDOW_BYTES
    assert pcie_transport.STATUS_BITS == pciemap.STATUS_BITS
    assert pcie_transport.CONTROL_BITS == pciemap.CONTROL_BITS
    assert (pcie_transport.H2C_SLOT, pcie_transport.C2H_SLOT) == (SLOT_BYTES, RECORD_BYTES)
    header = pcie_transport.RECORD_HEADER
    assert header.size == HEADER_BYTES
    for name, member in record_header_layout:
        assert (header.offsets[name], header.field(name).size) == (
            member.offset // 8, member.width // 8), name  # fmt: skip
    kinds = {RecordKind.ORDER: "orders", RecordKind.TOB: "tob", RecordKind.CONTROL: "control"}
    assert pcie_transport.RECORD_KINDS == kinds


def test_host_driver_defaults_are_the_core_defaults():
    cfg, addresses = CoreConfig(), pcie_transport.PcieAddresses()
    for name in ("control_port", "order_port", "tob_port", "feed_group", "feed_port",
                 "gateway_ip", "gateway_port"):  # fmt: skip
        assert getattr(addresses, name) == getattr(cfg, name), name
    assert (addresses.device_ip, addresses.device_mac) == (cfg.ip, cfg.mac)
    assert addresses.reply_port == REPLY_PORT


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TickFetcher(tags=3), "tags must be 1, 2, 4 or 8, not 3"),
        (lambda: TickFetcher(max_slots=9), "max_slots must be an integer in 1 .. 8, not 9"),
        (lambda: BarCompleter(addr_bits=1), "addr_bits must be an integer in 2 .. 20, not 1"),
        (lambda: PacketMux(tlp_beat_layout(60), 0), "inputs must be a positive integer, not 0"),
        (
            lambda: PcieDma(order_port=0, tob_port=1, reply_port=2),
            "order_port must be an integer in 1 .. 65535, not 0",
        ),  # fmt: skip
    ],
)
def test_parameters_are_checked(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
    gc.collect()  # the half-built object, kept by the traceback's cycle, goes while filtered


class _NoCard(pcie_transport.PcieBackend):
    """Enough of a backend for the parameter checks, which come before any access."""

    def __init__(self, size: int):
        self.bar = None
        self.memory = pcie_transport.BufferMemory(bytearray(size), 0)


@pytest.mark.parametrize(
    "kwargs, size, message",
    [
        ({"h2c_slots": 3}, 1 << 20, "h2c_slots must be a power of two of at least 2, not 3"),
        ({"c2h_slots": 1}, 1 << 20, "c2h_slots must be a power of two of at least 2, not 1"),
        ({"timeout": 0}, 1 << 20, "timeout must be > 0 seconds, not 0"),
        ({}, 4096, "the DMA memory holds 4096 bytes, not 196672"),
    ],
)
def test_transport_parameters_are_checked(kwargs, size, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        pcie_transport.PcieTransport(_NoCard(size), **kwargs)
