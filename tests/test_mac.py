"""The 1 GbE MAC and the width/clock crossings in amaranth.sim, checked against ``zlib.crc32``.

The reference here is Ethernet itself: a frame on the wire is ``55 x 7, D5, data, FCS`` with
the FCS the little-endian ``zlib.crc32`` of the data (padded with zeros to 60 bytes).
"""

import random
import zlib

import pytest
from amaranth.hdl import Module
from amaranth.lib.fifo import SyncFIFO
from amaranth.sim import Simulator
from tick2quote.boards.ethernet import GmiiEthernet
from tick2quote.boards.framebuffer import FrameBuffer
from tick2quote.boards.mac import MIN_IFG_BYTES, MacRx, MacTx
from tick2quote.boards.widthconv import ReadRegister, RxCrossing, SkidBuffer
from tick2quote.sim.streams import beats_bytes, packet_beats, pause_pattern, stream_put

RNG_SEED = 20240611


def wire_frame(data: bytes, *, preamble: int = 7, fcs: bytes | None = None) -> bytes:
    """``data`` as GMII carries it: preamble, SFD, data, FCS (correct unless given)."""
    if fcs is None:
        fcs = zlib.crc32(data).to_bytes(4, "little")
    return b"\x55" * preamble + b"\xd5" + data + fcs


def random_frames(rng: random.Random, count: int, low: int = 60, high: int = 200) -> list[bytes]:
    return [rng.randbytes(rng.randint(low, high)) for _ in range(count)]


def run(dut, testbenches, *, background=(), clocks=(("sync", 8e-9),), deadline=None):
    """Simulate ``dut`` until the ``testbenches`` finish (or until ``deadline`` seconds)."""
    sim = Simulator(dut)
    for domain, period in clocks:
        sim.add_clock(period, domain=domain)
    for bench in testbenches:
        sim.add_testbench(bench)
    for bench in background:
        sim.add_testbench(bench, background=True)
    if deadline is None:
        sim.run()
    else:
        sim.run_until(deadline)


async def drive_gmii(ctx, dut, bursts, *, gap=12):
    """Drive GMII bursts of ``(bytes, error byte index or None)`` with ``gap`` idle cycles."""
    for burst, error_at in bursts:
        for index, byte in enumerate(burst):
            ctx.set(dut.rx_dv, 1)
            ctx.set(dut.rxd, byte)
            ctx.set(dut.rx_er, int(index == error_at))
            await ctx.tick()
        ctx.set(dut.rx_dv, 0)
        ctx.set(dut.rx_er, 0)
        await ctx.tick().repeat(gap)


# ---------------------------------------------------------------- MacRx


def test_rx_strips_preamble_and_fcs_and_flags_bad_frames():
    rng = random.Random(RNG_SEED)
    cases = []  # (burst, error index, expected data, expected ok)
    for data in random_frames(rng, 12):
        cases.append((wire_frame(data, preamble=rng.randint(0, 7)), None, data, True))
    for data in random_frames(rng, 4):
        bad = (zlib.crc32(data) ^ (1 << rng.randrange(32))).to_bytes(4, "little")
        cases.append((wire_frame(data, fcs=bad), None, data, False))
    runt = rng.randbytes(59)  # 63 bytes with FCS
    cases.append((wire_frame(runt), None, runt, False))
    errored = rng.randbytes(100)
    cases.append((wire_frame(errored), 50, errored, False))
    rng.shuffle(cases)
    garbage = (b"\x12\x55\xd5" + rng.randbytes(70), None)  # not a preamble: ignored

    dut = MacRx()
    received = []
    counters = dict.fromkeys(("good", "bad_fcs", "runt", "phy_error", "bad_preamble"), None)

    async def source(ctx):
        bursts = [(burst, err) for burst, err, _, _ in cases]
        await drive_gmii(ctx, dut, bursts[:3] + [garbage] + bursts[3:])
        await ctx.tick().repeat(8)
        for name in counters:
            counters[name] = ctx.get(getattr(dut.counters, name))

    async def sink(ctx):
        frame = bytearray()
        async for _clk, _rst, valid, payload in ctx.tick().sample(dut.o.valid, dut.o.payload):
            if not valid:
                continue
            if payload.end:
                received.append((bytes(frame), bool(payload.ok)))
                frame = bytearray()
            else:
                frame.append(payload.data)

    run(dut, [source], background=[sink])

    assert received == [(data, ok) for _, _, data, ok in cases]
    assert counters == {"good": 12, "bad_fcs": 4, "runt": 1, "phy_error": 1, "bad_preamble": 1}


# ---------------------------------------------------------------- MacTx


async def capture_gmii_tx(ctx, dut, frames_out, gaps, count, *, domain="sync"):
    """Collect ``count`` transmitted bursts and the idle gaps before each (after the first)."""
    burst, idle, seen = bytearray(), None, 0
    async for _clk, _rst, en, er, d in ctx.tick(domain).sample(dut.tx_en, dut.tx_er, dut.txd):
        if en:
            if not burst and idle is not None:
                gaps.append(idle)
            burst.append(d)
            assert not er
        elif burst:
            frames_out.append(bytes(burst))
            burst, idle, seen = bytearray(), 1, seen + 1
            if seen == count:
                return
        elif idle is not None:
            idle += 1


def expected_wire(data: bytes) -> bytes:
    padded = data + bytes(max(0, 60 - len(data)))
    return wire_frame(padded)


@pytest.mark.parametrize("ifg", [MIN_IFG_BYTES, 20])
def test_tx_frames_pads_and_keeps_the_gap(ifg):
    rng = random.Random(RNG_SEED + ifg)
    frames = random_frames(rng, 10, low=1, high=130) + [rng.randbytes(59), rng.randbytes(60)]
    dut = MacTx(ifg=ifg)
    sent, gaps = [], []

    async def source(ctx):
        for data in frames:  # back to back: the MAC always has the next frame waiting
            for index, byte in enumerate(data):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"data": byte, "last": int(index == len(data) - 1)})
                await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        await capture_gmii_tx(ctx, dut, sent, gaps, len(frames))
        assert ctx.get(dut.frames) == len(frames)
        assert ctx.get(dut.underruns) == 0

    run(dut, [source, sink])
    assert sent == [expected_wire(data) for data in frames]
    assert gaps == [ifg] * (len(frames) - 1)


def test_tx_underrun_is_flagged_and_counted():
    dut = MacTx()
    events = []

    async def source(ctx):
        data = bytes(range(40))
        for index, byte in enumerate(data):
            if index == 20:  # the byte source runs dry for two cycles
                ctx.set(dut.i.valid, 0)
                await ctx.tick().repeat(2)
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"data": byte, "last": int(index == len(data) - 1)})
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(30)
        events.append((ctx.get(dut.frames), ctx.get(dut.underruns)))

    async def watch(ctx):
        async for _clk, _rst, en, er in ctx.tick().sample(dut.tx_en, dut.tx_er):
            if en and er:
                events.append("tx_er")

    run(dut, [source], background=[watch])
    assert events == ["tx_er", (0, 1)]


@pytest.mark.parametrize("ifg", [0, 11, 256, "12"])
def test_tx_rejects_a_short_gap(ifg):
    with pytest.raises(ValueError, match=r"ifg must be an integer in 12 \.\. 255"):
        MacTx(ifg=ifg)


# ---------------------------------------------------------------- frame buffer and crossings


def test_frame_buffer_rejects_bad_depth():
    with pytest.raises(ValueError, match="depth must be a power of two of at least 4, not 6"):
        FrameBuffer(6)
    with pytest.raises(ValueError, match="buffer_depth must be a power of two"):
        RxCrossing(buffer_depth=100)


@pytest.mark.parametrize("pattern", ["none", "bursty", "random_60"])
def test_rx_crossing_delivers_good_frames_across_clocks(pattern):
    """MAC bytes at 125 MHz -> beats at 156.25 MHz; bad and oversize frames disappear."""
    rng = random.Random(RNG_SEED)
    frames = []  # (data, ok)
    for _ in range(40):
        size = rng.choice([1, 7, 8, 9, 16, 17, rng.randint(1, 300)])
        frames.append((rng.randbytes(size), rng.random() > 0.25))
    frames.append((rng.randbytes(64 * 8 + 3), True))  # larger than the 64-beat buffer
    frames.append((rng.randbytes(64 * 8), True))  # exactly fills it
    frames.append((rng.randbytes(10), True))
    dut = RxCrossing(mac_domain="mac", core_domain="sync", buffer_depth=64)
    expected = [data for data, ok in frames if ok and len(data) <= 64 * 8]
    received = []

    async def source(ctx):
        for data, ok in frames:
            for byte in data:
                ctx.set(dut.i.payload, {"data": byte, "end": 0, "ok": 0})
                ctx.set(dut.i.valid, 1)
                await ctx.tick("mac")
            ctx.set(dut.i.payload, {"data": 0, "end": 1, "ok": int(ok)})
            await ctx.tick("mac")
            ctx.set(dut.i.valid, 0)
            await ctx.tick("mac").repeat(rng.randint(1, 12))

    async def sink(ctx):
        pause = pause_pattern(pattern, seed=3)
        beats = []
        while len(received) < len(expected):
            ctx.set(dut.o.ready, int(not next(pause)))
            _, _, valid, ready, payload = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload
            )
            if valid and ready:
                assert bool(payload.first) == (not beats)
                beats.append((payload.data, payload.keep))
                if payload.last:
                    received.append(beats_bytes(beats))
                    beats = []

    run(dut, [sink], background=[source], clocks=(("mac", 8e-9), ("sync", 6.4e-9)))
    assert received == expected


def test_tx_crossing_feeds_the_mac_without_underrun():
    """Beats from the core at 156.25 MHz, with pauses mid-frame -> GMII at 125 MHz."""
    rng = random.Random(RNG_SEED + 1)
    frames = [rng.randbytes(rng.choice([1, 8, 9, 59, 60, 61, rng.randint(1, 400)]))
              for _ in range(25)]  # fmt: skip

    dut = GmiiEthernet(rx_domain="mac", tx_domain="mac", core_domain="sync", tx_depth=64)
    sent, gaps = [], []

    async def source(ctx):
        idle = pause_pattern("random_25", seed=5)
        for data in frames:
            for beat in packet_beats(data):
                while next(idle):
                    ctx.set(dut.tx.valid, 0)
                    await ctx.tick()
                ctx.set(dut.tx.valid, 1)
                ctx.set(dut.tx.payload, beat)
                await ctx.tick().until(dut.tx.ready)
            ctx.set(dut.tx.valid, 0)

    async def sink(ctx):
        await capture_gmii_tx(ctx, dut, sent, gaps, len(frames), domain="mac")
        assert ctx.get(dut.tx_frames) == len(frames)
        assert ctx.get(dut.tx_underruns) == 0

    run(dut, [source, sink], clocks=(("mac", 8e-9), ("sync", 6.4e-9)))
    assert sent == [expected_wire(data) for data in frames]
    assert min(gaps) >= MIN_IFG_BYTES


@pytest.mark.parametrize("pattern", ["none", "bursty", "random_60"])
def test_read_register_passes_every_entry_in_order_and_reads_from_its_own_state(pattern):
    """A FIFO read through :class:`ReadRegister` under back-pressure: nothing lost, doubled or
    reordered, and the FIFO's read enable never follows the consumer's ``ready``."""
    rng = random.Random(RNG_SEED + 2)
    values = [rng.getrandbits(16) for _ in range(300)]
    m = Module()
    m.submodules.fifo = fifo = SyncFIFO(width=16, depth=4)
    m.submodules.register = register = ReadRegister(16)
    m.d.comb += [
        register.r_data.eq(fifo.r_data),
        register.r_rdy.eq(fifo.r_rdy),
        fifo.r_en.eq(register.r_en),
    ]
    received = []

    async def source(ctx):
        idle = pause_pattern("random_25", seed=7)
        for value in values:
            while next(idle):
                ctx.set(fifo.w_en, 0)
                await ctx.tick()
            ctx.set(fifo.w_data, value)
            ctx.set(fifo.w_en, 1)
            await ctx.tick().until(fifo.w_rdy)
        ctx.set(fifo.w_en, 0)

    async def sink(ctx):
        pause = pause_pattern(pattern, seed=3)
        while len(received) < len(values):
            ctx.set(register.o.ready, 0)
            held = ctx.get(register.r_en)
            ctx.set(register.o.ready, 1)
            assert ctx.get(register.r_en) == held == (not ctx.get(register.o.valid))
            ctx.set(register.o.ready, int(not next(pause)))
            _, _, valid, ready, payload = await ctx.tick().sample(
                register.o.valid, register.o.ready, register.o.payload
            )
            if valid and ready:
                received.append(payload)

    run(m, [sink], background=[source])
    assert received == values


SKID_PATTERNS = [("none", "none"), ("random_25", "bursty"), ("bursty", "random_60")]


@pytest.mark.parametrize(("source_pattern", "sink_pattern"), SKID_PATTERNS)
def test_skid_buffer_passes_every_entry_in_order_at_full_rate_from_its_own_state(
    source_pattern, sink_pattern
):
    """:class:`SkidBuffer` under idle and back-pressure patterns: nothing lost, doubled or
    reordered; ``i.ready`` never follows ``o.ready`` in the same cycle; and with neither side
    pausing, one entry passes every cycle."""
    rng = random.Random(RNG_SEED + 3)
    values = [rng.getrandbits(9) for _ in range(400)]
    dut = SkidBuffer(9)
    received, accepted_cycles = [], []

    async def source(ctx):
        idle = pause_pattern(source_pattern, seed=11)
        for value in values:
            await stream_put(ctx, dut.i, value, idle=idle)

    async def sink(ctx):
        pause = pause_pattern(sink_pattern, seed=13)
        cycle = 0
        while len(received) < len(values):
            ctx.set(dut.o.ready, 0)
            held = ctx.get(dut.i.ready)
            ctx.set(dut.o.ready, 1)
            assert ctx.get(dut.i.ready) == held
            ctx.set(dut.o.ready, int(not next(pause)))
            _, _, valid, ready, payload = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload
            )
            cycle += 1
            if valid and ready:
                received.append(payload)
                accepted_cycles.append(cycle)

    run(dut, [sink], background=[source], deadline=1e-4)  # 12 500 cycles; ~2 000 needed
    assert received == values
    if source_pattern == sink_pattern == "none":
        assert accepted_cycles == list(range(accepted_cycles[0], accepted_cycles[0] + len(values)))
