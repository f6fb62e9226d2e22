"""cocotb testbench of the ITCH parser (``ItchParser``), run on Icarus and Verilator.

Messages come from the real Nasdaq captures (frames decoded with the project's codecs), from a
synthetic session (:mod:`tick2quote.sim.feed`) and from generated corner cases (every type with
random bytes, unknown types, wrong lengths, truncated messages). Every event is checked against
:class:`~tick2quote.sim.models.parser.ParserModel`, its latency (valid exactly one cycle after
the message's last beat was accepted) and its stamp; the counters must match the model's; and
the test ends with nothing left unread.

The whole bench runs in one coroutine that, every cycle, sets the inputs, waits for
``ReadOnly`` and samples what the coming clock edge will see, so its view of every handshake is
the same on both simulators.
"""

import os
import random
from pathlib import Path

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge
from tick2quote.hdl.events import BookEvent as EVENT_LAYOUT
from tick2quote.hdl.layouts import message_layout
from tick2quote.hdl.parser import itch_counters_layout
from tick2quote.host.capture import read_frames
from tick2quote.host.protocol import ethernet, itch, moldudp64
from tick2quote.sim.cocotb_streams import TB, pack, unpack
from tick2quote.sim.feed import FeedConfig, generate
from tick2quote.sim.harness import params_from_env
from tick2quote.sim.models.parser import ITCH_KINDS, BookEvent, EventKind, ParserModel
from tick2quote.sim.streams import PAUSE_PATTERNS, pause_pattern

OMI = Path(os.environ.get("T2Q_OMI_DIR", "/work/shared/data/omi"))


def capture_messages() -> list[tuple[bytes, int, int, bool]]:
    """``(bytes, length, sequence, truncated)`` of every ITCH message in the real captures."""
    out = []
    for path in sorted(OMI.glob("*Itch*.pcap")):
        for _ts, frame, _offset in read_frames(path):
            udp = ethernet.decode_udp_frame(frame, allow_zero_checksum=True)
            packet = moldudp64.decode(udp.payload)
            for index, body in enumerate(packet.messages):
                out.append((bytes(body), len(body), packet.sequence + index, False))
    return out


def session_messages(seed: int, count: int) -> list[tuple[bytes, int, int, bool]]:
    """A synthetic session's messages, numbered from a random sequence number."""
    records = generate(FeedConfig(seed=seed, symbols=12, messages=count))
    base = random.Random(seed).randrange(1 << 40)
    out = []
    for index, record in enumerate(records):
        body = itch.encode_message(record)
        out.append((body, len(body), base + index, False))
    return out


def corner_messages(rng: random.Random) -> list[tuple[bytes, int, int, bool]]:
    """Every type with random bytes, unknown types, wrong lengths and truncated messages."""
    out = []
    for itch_type, size in itch.SIZES.items():
        for _ in range(4 if itch_type in ITCH_KINDS else 2):
            body = bytearray(rng.randbytes(size))
            body[0] = ord(itch_type)
            out.append((bytes(body), size, rng.randrange(1 << 64), False))
    unknown = sorted(set(range(256)) - {ord(t) for t in itch.SIZES})
    for _ in range(12):
        body = bytearray(rng.randbytes(rng.randint(1, 64)))
        body[0] = rng.choice(unknown)
        out.append((bytes(body), len(body), rng.randrange(1 << 64), False))
    for _ in range(12):
        itch_type = rng.choice(list(ITCH_KINDS))
        size = itch.SIZES[itch_type]
        body = bytearray(rng.randbytes(rng.choice([rng.randint(1, size - 1), size + 3])))
        body[0] = ord(itch_type)
        out.append((bytes(body), len(body), rng.randrange(1 << 64), False))
    for _ in range(12):
        itch_type = rng.choice(list(itch.SIZES))
        size = itch.SIZES[itch_type]
        body = bytearray(rng.randbytes(rng.randint(1, size)))
        body[0] = ord(itch_type)
        out.append((bytes(body), size, rng.randrange(1 << 64), True))
    return out


def message_beats(body: bytes, length: int, sequence: int, truncated: bool) -> list[int]:
    """Packed input beats of one message (type byte at lane 0 of the first)."""
    chunks = [body[k : k + 8] for k in range(0, len(body), 8)]
    return [
        pack(
            message_layout,
            {
                "data": int.from_bytes(chunk, "little"),
                "keep": (1 << len(chunk)) - 1,
                "first": n == 0,
                "last": n == len(chunks) - 1,
                "length": length,
                "sequence": sequence,
                "truncated": truncated and n == len(chunks) - 1,
            },
        )
        for n, chunk in enumerate(chunks)
    ]


class ParserTB(TB):
    """Clock, reset and a per-cycle source and sink for one ItchParser.

    The shared stream models report when a beat was *taken*; this bench also needs the cycle an
    event first became *valid* (the latency), that its payload holds while it waits, and that
    the input never stalls while the output is ready, so it drives both ports itself.
    """

    def __init__(self, dut):
        super().__init__(dut)
        dut.i__valid.value = 0
        dut.i__payload.value = 0
        dut.o__ready.value = 0
        dut.cycle.value = 0

    async def run(self, messages, idle: str, backpressure: str, seed: int):
        """Stream ``messages`` through; return (cycle of every accepted beat, cycle of each
        message's last beat, [(event, first valid cycle)], cycles where the input stalled while
        the output was ready, counters)."""
        dut = self.dut
        beats = [(n, b) for n, m in enumerate(messages) for b in message_beats(*m)]
        last_cycles = [None] * len(messages)
        accepted, received, stalls = [], [], []
        pause_in = pause_pattern(idle, seed)
        pause_out = pause_pattern(backpressure, seed + 1)
        position, cycle, quiet, pending = 0, 1, 0, None
        offering = False
        while quiet < 8:
            dut.cycle.value = cycle
            if not offering and position < len(beats) and not next(pause_in):
                offering = True
            dut.i__valid.value = int(offering)
            if offering:
                dut.i__payload.value = beats[position][1]
            out_ready = not next(pause_out)
            dut.o__ready.value = int(out_ready)
            await ReadOnly()
            in_ready = bool(dut.i__ready.value)
            out_valid = bool(dut.o__valid.value)
            if out_ready and not in_ready:
                stalls.append(cycle)
            if offering and in_ready:
                message_index, _ = beats[position]
                last_cycles[message_index] = cycle
                accepted.append(cycle)
                position += 1
                offering = False
            if out_valid:
                word = dut.o__payload.value.to_unsigned()
                pending = pending or (word, cycle)
                assert word == pending[0], "payload changed while waiting"
                if out_ready:
                    received.append((to_event(word), pending[1]))
                    pending = None
            quiet = quiet + 1 if position == len(beats) and not out_valid else 0
            await RisingEdge(dut.clk)
            cycle += 1
        counters = unpack(itch_counters_layout(32), dut.counters.value.to_unsigned())
        return accepted, last_cycles, received, stalls, counters


def to_event(word: int) -> BookEvent:
    values = unpack(EVENT_LAYOUT, word)
    values["kind"] = EventKind(values["kind"])
    return BookEvent(**values)


def check(messages, last_cycles, received, stalls, counters):
    model = ParserModel()
    expected = []
    for (body, length, sequence, truncated), stamp in zip(messages, last_cycles):
        event = model.message(body, sequence, stamp, length=length, truncated=truncated)
        if event is not None:
            expected.append(event)
    assert len(received) == len(expected), (len(received), len(expected))
    for n, ((got, _), want) in enumerate(zip(received, expected)):
        assert got == want, f"event {n}: {got} != {want}"
    assert [cycle - event.stamp for event, cycle in received] == [1] * len(expected)
    assert stalls == [], "input stalled while the output was ready"
    assert counters == {name: model.counters[name] for name in counters}
    assert sum(counters.values()) == len(messages)
    return len(expected)


@cocotb.test()
@cocotb.parametrize(
    patterns=[
        ("none", "none"),
        ("random_25", "none"),
        ("none", "random_60"),
        ("bursty", "alternate"),
    ]
)
async def parser_matches_model(dut, patterns):
    """Real, synthetic and corner-case messages, crossed with idle and back-pressure."""
    idle, backpressure = patterns
    seed = PAUSE_PATTERNS.index(idle) * 10 + PAUSE_PATTERNS.index(backpressure)
    rng = random.Random(seed)
    messages = capture_messages()
    assert len(messages) >= 60
    messages += session_messages(seed, params_from_env().get("session_messages", 300))
    messages += corner_messages(rng)
    rng.shuffle(messages)
    tb = ParserTB(dut)
    await tb.reset()
    accepted, *results = await tb.run(messages, idle, backpressure, seed)
    events = check(messages, *results)
    if idle == "none" and backpressure == "none":
        # One beat a cycle, messages back to back.
        assert accepted == list(range(accepted[0], accepted[0] + len(accepted)))
    dut._log.info(
        "%d messages, %d events, all 1 cycle after their last beat", len(messages), events
    )
