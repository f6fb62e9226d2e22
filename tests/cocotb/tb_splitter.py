"""cocotb testbench for MessageSplitter (run by tests/test_splitter_cocotb.py on both simulators).

Packets are built with the host codecs; the expected messages come from the host MoldUDP64
decoder. Every test is crossed with input idle insertion and output back-pressure, and ends with
nothing left unread.
"""

import random
import string

import cocotb
from cocotb.triggers import with_timeout
from tick2quote.hdl.layouts import (
    beat_layout,
    message_layout,
    mold_header_layout,
    packet_status_layout,
)
from tick2quote.host.protocol import itch, moldudp64
from tick2quote.sim.cocotb_streams import TB, StreamSink, StreamSource
from tick2quote.sim.harness import params_from_env
from tick2quote.sim.streams import beats_bytes, packet_beats, pause_pattern

PARAMS = params_from_env()
HEADER_SIZE = moldudp64.HEADER.size


class SplitterTB(TB):
    def __init__(self, dut, source: str, sink: str, seed: int):
        super().__init__(dut)
        self.i = StreamSource(dut, "i", beat_layout, dut.clk, pause_pattern(source, seed))
        self.o = StreamSink(dut, "o", message_layout, dut.clk, pause_pattern(sink, seed + 1))
        self.header = StreamSink(
            dut, "header", mold_header_layout, dut.clk, pause_pattern(sink, seed + 2)
        )
        self.status = StreamSink(dut, "status", packet_status_layout, dut.clk)

    async def message(self) -> tuple[bytes, dict, int]:
        """One message: its bytes, its last beat's fields and the cycle that beat was taken."""
        beats = []
        while not beats or not beats[-1][1]["last"]:
            beats.append(await with_timeout(self.o.recv_timed(), 100, "us"))
        fields = [b for _, b in beats]
        assert [b["first"] for b in fields] == [1] + [0] * (len(fields) - 1)
        assert all(b["keep"] == 0xFF for b in fields[:-1]), "only a last beat may be partial"
        assert len({(b["length"], b["sequence"]) for b in fields}) == 1
        return beats_bytes((b["data"], b["keep"]) for b in fields), fields[-1], beats[-1][0]


def random_itch(rng: random.Random) -> bytes:
    code = rng.choice(sorted(itch.FORMATS))
    values = {}
    for f in itch.FORMATS[code].fields[1:]:
        if f.kind in ("alpha", "char"):
            values[f.name] = "".join(rng.choices(string.ascii_uppercase, k=f.size))
        elif f.kind == "bytes":
            values[f.name] = rng.randbytes(f.size)
        else:
            values[f.name] = rng.getrandbits(8 * f.size)
    return itch.encode_message(itch.make(code, **values))


def random_packets(rng: random.Random, count: int) -> list[bytes]:
    """Packets of real and unknown-type (1..60 byte) messages, a heartbeat, an end of session."""
    out = []
    for _ in range(count):
        msgs = [
            random_itch(rng) if rng.random() < 0.8 else b"?" + rng.randbytes(rng.randint(0, 59))
            for _ in range(rng.randint(1, 60))
        ]
        packet = moldudp64.Packet(rng.randbytes(10), rng.getrandbits(40), msgs)
        out.append(moldudp64.encode(packet))
    out.append(moldudp64.encode(moldudp64.Packet(b"HEARTBEAT0", 77, [], moldudp64.HEARTBEAT)))
    out.append(moldudp64.encode(moldudp64.Packet(b"END-SESSN0", 78, [], moldudp64.END_OF_SESSION)))
    return out


def expectations(packet: bytes, cut: int | None = None):
    """Decoded packet, and per message: (bytes present, truncated, packet offset of last byte).

    ``cut`` sends only the packet's first ``cut`` bytes (inside its last message or prefix)."""
    decoded = moldudp64.decode(packet)
    blocks = list(itch.iter_blocks(packet, HEADER_SIZE))
    msgs = []
    for (pos, length), body in zip(blocks, decoded.messages):
        end = pos + length if cut is None else min(pos + length, cut)
        if end > pos:  # a message none of whose bytes arrived is not sent
            msgs.append((body[: end - pos], end < pos + length, end - 1))
    return decoded, msgs


@cocotb.test
@cocotb.parametrize(source=["none", "random_25"], sink=["none", "random_60"])
async def split_packets(dut, source, sink):
    seed = PARAMS.get("seed", 1)
    tb = SplitterTB(dut, source, sink, seed)
    await tb.reset()
    rng = random.Random(f"{seed}-{source}-{sink}")
    packets = random_packets(rng, PARAMS.get("packets", 4))
    cut = len(packets[0]) - 3
    plan = [(p, None) for p in packets] + [(packets[0], cut)]

    first_beat = 0
    for packet, limit in plan:
        for beat in packet_beats(packet[:limit]):
            tb.i.send(beat)

    latencies = []
    for packet, limit in plan:
        decoded, msgs = expectations(packet, limit)
        header = await with_timeout(tb.header.recv(), 100, "us")
        assert header["session"].to_bytes(10, "little") == decoded.session
        assert (header["sequence"], header["count"]) == (decoded.sequence, decoded.count)
        for k, (want, truncated, last_byte) in enumerate(msgs):
            body, last, taken = await tb.message()
            assert body == want
            assert last["sequence"] == decoded.sequence + k
            assert last["length"] == len(decoded.messages[k])
            assert last["truncated"] == truncated
            accepted = tb.i.accepted[first_beat + last_byte // 8]
            latencies.append(taken - accepted)
        status = await with_timeout(tb.status.recv(), 100, "us")
        assert status["messages"] == len(msgs)
        assert status["truncated"] == (limit is not None)
        announced = 0 if decoded.is_end_of_session else decoded.count
        assert status["count_mismatch"] == (len(msgs) != announced)
        assert not (status["zero_length"] or status["short"])
        first_beat += len(packet_beats(packet[:limit]))

    await tb.i.wait()
    await tb.cycles(16)
    for port in (tb.o, tb.header, tb.status):
        assert port.empty(), f"{port.name} has unread beats"
        assert not port.valid.value, f"{port.name} holds an unread beat"
    assert len(tb.i.accepted) == first_beat
    dut._log.info(
        "%d messages; last byte in -> last beat taken: min %d, max %d cycles",
        len(latencies),
        min(latencies),
        max(latencies),
    )
    if sink == "none":  # taken the cycle it appears: the latency itself
        assert max(latencies) == 1
