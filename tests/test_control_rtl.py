"""ControlPlane (gateware) in amaranth.sim: requests built by scapy + the host codec, responses
checked by scapy (IPv4 checksum) and decoded by the host codec, against the host's
:class:`EndpointModel`; every drop cause counted, never applied, never answered."""

import random

import pytest
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from scapy.all import ARP, IP, UDP, Ether, IPOption_NOP, Raw
from tick2quote.hdl import control as hdl_control
from tick2quote.hdl.control import GUARD_COUNTERS, ControlPlane
from tick2quote.hdl.layouts import beat_layout
from tick2quote.hdl.regmap import DEVICE_COUNTERS, ParamStore, device_map
from tick2quote.host.protocol import control as proto
from tick2quote.host.protocol.errors import DecodeError
from tick2quote.host.protocol.ethernet import decode_udp_frame
from tick2quote.sim.streams import beats_bytes, packet_beats, pause_pattern

DEV_IP, DEV_MAC, PORT, TOKEN = "10.0.0.2", 0x02_00_00_00_00_01, 0x5432, 0x1122334455667788
HOST_IP, OTHER_IP, HOST_MAC = "10.0.0.9", "10.0.0.77", "02:aa:bb:cc:dd:ee"
SYMBOLS = 4


class ControlTop(wiring.Component):
    """ControlPlane with a ParamStore behind its ``params`` window."""

    def __init__(self, **kwargs):
        self.plane = ControlPlane(device_map(SYMBOLS), **kwargs)
        self.store = ParamStore(self.plane.regmap.windows["params"])
        members = {
            "i": In(stream.Signature(beat_layout)),
            "o": Out(stream.Signature(beat_layout)),
            "regs": Out(self.plane.regs.shape()),
            "status": In(self.plane.status.shape()),
            "counters": Out(self.plane.counters.shape()),
            "row_locate": In(self.store.row_locate.shape()),
            "row": Out(self.store.row.shape()),
        }
        super().__init__(members)

    def elaborate(self, platform):
        from amaranth.hdl import Module

        m = Module()
        m.submodules.plane, m.submodules.store = self.plane, self.store
        wiring.connect(m, self.plane.params, self.store.ctrl)
        wiring.connect(m, wiring.flipped(self.i), self.plane.i)
        wiring.connect(m, self.plane.o, wiring.flipped(self.o))
        m.d.comb += [
            self.regs.eq(self.plane.regs),
            self.plane.status.eq(self.status),
            self.counters.eq(self.plane.counters),
            self.store.row_locate.eq(self.row_locate),
            self.row.eq(self.store.row),
        ]
        return m


def make_top():
    return ControlTop(ip=DEV_IP, mac=DEV_MAC, port=PORT, token=TOKEN, peers=[HOST_IP])


def frame(payload: bytes, *, src=HOST_IP, dst=DEV_IP, dport=PORT, sport=40000, **ip) -> bytes:
    eth = Ether(dst="02:00:00:00:00:01", src=HOST_MAC)
    return bytes(eth / IP(src=src, dst=dst, **ip) / UDP(sport=sport, dport=dport) / Raw(payload))


def request(opcode, address, value, token=TOKEN, request_id=7) -> bytes:
    return proto.encode_request(proto.Request(opcode, request_id, token, address, value))


def ip_int(text: str) -> int:
    return int.from_bytes(bytes(map(int, text.split("."))), "big")


class Bench:
    """Drives frames in, collects response frames, tallies the expected counters."""

    def __init__(self, top, source="none", sink="none", seed=0):
        self.top = top
        self.model = proto.EndpointModel(top.plane.describe())
        self.model.status = {name: 1000 + 17 * k for k, name in enumerate(DEVICE_COUNTERS)}
        self.idle = pause_pattern(source, seed)
        self.pause = pause_pattern(sink, seed + 1)
        self.responses: list[tuple[int, bytes]] = []  # (cycle of first beat, frame)
        self.expected = dict.fromkeys(GUARD_COUNTERS, 0)
        self.cycle = 0
        self.latencies: list[int] = []

    async def collector(self, ctx):
        beats, start = [], 0
        while True:
            ready = not next(self.pause)
            ctx.set(self.top.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(self.top.o.valid, self.top.o.payload)
            self.cycle += 1
            if ready and valid:
                if not beats:
                    start = self.cycle
                    assert payload.first
                beats.append((payload.data, payload.keep))
                if payload.last:
                    self.responses.append((start, beats_bytes(beats)))
                    beats = []

    async def send(self, ctx, data: bytes, cause: str, expect=None, src=HOST_IP):
        """Send a frame; ``expect`` is the response payload (or None for no response)."""
        before = len(self.responses)
        for beat in packet_beats(data):
            while next(self.idle):
                ctx.set(self.top.i.valid, 0)
                await ctx.tick()
            ctx.set(self.top.i.valid, 1)
            ctx.set(self.top.i.payload, beat)
            await ctx.tick()
        ctx.set(self.top.i.valid, 0)
        sent = self.cycle
        self.expected["frames"] += 1
        self.expected[cause] += 1
        for _ in range(300):
            if len(self.responses) > before:
                break
            await ctx.tick()
        if expect is None:
            assert len(self.responses) == before, f"a {cause} frame was answered"
            return None
        assert len(self.responses) == before + 1, "no response"
        start, reply = self.responses[-1]
        self.latencies.append(start - sent)
        self.expected["responses"] += 1
        check_frame(reply, src)
        decoded = decode_udp_frame(reply)
        assert decoded.payload == expect
        response = proto.decode_response(decoded.payload)
        if response.status != proto.Status.OK:
            self.expected["refused"] += 1
        return response

    async def ask(self, ctx, payload: bytes, src=HOST_IP):
        """A request from ``src`` to the control port: answered as the model says."""
        if ip_int(src) not in self.model.peers():
            cause = "not_peer"
        else:
            try:
                req = proto.decode_request(payload)
                token_ok = req.token == self.model.value("session_token")
                cause = "accepted" if token_ok else "bad_token"
            except DecodeError:
                cause = "malformed"
        # The guard counters as the device reads them while executing this request.
        tally = dict(self.expected, frames=self.expected["frames"] + 1)
        tally[cause] += 1
        self.model.status.update(tally)
        expect = self.model.handle(payload, ip_int(src))
        assert (expect is not None) == (cause == "accepted")
        return await self.send(ctx, frame(payload, src=src), cause, expect, src)


def check_frame(reply: bytes, requester: str) -> None:
    """Headers of a response, checked by scapy independently of the project's codec."""
    pkt = Ether(reply)
    assert pkt.dst == HOST_MAC and pkt.src == "02:00:00:00:00:01"
    assert pkt[IP].src == DEV_IP and pkt[IP].dst == requester and pkt[IP].ihl == 5
    recomputed = IP(bytes(pkt[IP]))
    del recomputed.chksum
    assert IP(bytes(recomputed)).chksum == pkt[IP].chksum
    assert pkt[UDP].sport == PORT and pkt[UDP].dport == 40000
    assert pkt[UDP].len == 8 + len(bytes(pkt[UDP].payload)) or len(reply) == 60


def run(testbench, source="none", sink="none", seed=0):
    top = make_top()
    bench = Bench(top, source, sink, seed)
    sim = Simulator(top)
    sim.add_clock(1e-8)

    async def main(ctx):
        ctx.set(top.status, {n: bench.model.status[n] for n in DEVICE_COUNTERS})
        await testbench(ctx, bench)
        counters = ctx.get(top.counters)
        for name in GUARD_COUNTERS:
            assert getattr(counters, name) == bench.expected[name], name
        # Nothing the model does not hold: every rw register and field reads back alike.
        token = bench.model.value("session_token")
        src = ".".join(str(b) for b in min(bench.model.peers()).to_bytes(4, "big"))
        for address, raw in bench.model.values.items():
            entry = bench.model._entries[address][1]
            if entry["access"] == "rw":
                got = await bench.ask(ctx, request(proto.Opcode.READ, address, 1, token), src)
                assert got.values[0] & ((1 << entry["width"]) - 1) == raw

    sim.add_testbench(main)
    sim.add_testbench(bench.collector, background=True)
    sim.run()
    return bench


R, W = proto.Opcode.READ, proto.Opcode.WRITE


def test_reads_every_kind():
    names = ["device_ip", "device_mac", "control_port", "peer0", "session_token", "kill_switch"]

    async def bench_fn(ctx, b):
        desc = b.model.description["registers"]
        for name in names + ["messages_in", "reject_throttle", "frames"]:
            await b.ask(ctx, request(R, desc[name]["address"], 1))
        await b.ask(ctx, request(R, 0x180, 8))  # a block of counters
        await b.ask(ctx, request(R, 0x1000, 12))  # more than max_read: BAD_COUNT
        await b.ask(ctx, request(R, 0x1000 + 16 * 3, 8))  # symbol 3's parameters
        await b.ask(ctx, request(R, 0x1000 + 16 * 3 + 8, 8))  # runs into a hole: BAD_ADDRESS
        await b.ask(ctx, request(R, 0xFFFFFFFF, 2))  # past the address space
        await b.ask(ctx, request(R, 0x40, 0))
        await b.ask(ctx, request(9, 0x100, 1))  # unknown opcode

    run(bench_fn)


@pytest.mark.parametrize("source,sink", [("none", "none"), ("random_25", "random_60")])
def test_writes_and_refusals(source, sink):
    def param(locate, name):
        win = b_holder[0].model.description["windows"]["params"]
        index = next(f["index"] for f in win["fields"] if f["name"] == name)
        return 0x1000 + 16 * locate + index

    b_holder = []

    async def bench_fn(ctx, b):
        b_holder.append(b)
        mask = (1 << 64) - 1
        cases = [
            ("band_bps", 0), ("band_bps", 1), ("tick", 5), ("tick", 1), ("tick", 100),
            ("quote_size", -1 & mask), ("quote_size", 0), ("max_inventory", 1 << 32),
            ("skew_shift", 32), ("skew_shift", 31), ("skew_num", -5 & mask),
            ("skew_num", -40000 & mask), ("skew_num", 32767), ("skew_num", 32768),
            ("max_loss", mask), ("enabled", 2), ("enabled", 0), ("spread_bps", 65536),
        ]  # fmt: skip
        for k, (name, value) in enumerate(cases):
            await b.ask(ctx, request(W, param(k % SYMBOLS, name), value))
        desc = b.model.description["registers"]
        for name, value in [
            ("kill_switch", 0), ("kill_switch", 2), ("control_port", 0), ("messages_in", 5),
            ("frames", 1), ("subscription_mask", mask), ("feed_port", 70000),
        ]:  # fmt: skip
            await b.ask(ctx, request(W, desc[name]["address"], value))
        await b.ask(ctx, request(W, 0x1000 + 12, 1))  # a hole in the window
        await b.ask(ctx, request(W, 0x9999, 1))
        regs = ctx.get(b.top.regs)
        assert regs.kill_switch == 0 and regs.subscription_mask == mask and regs.feed_port == 26477
        for locate in range(SYMBOLS):
            ctx.set(b.top.row_locate, locate)
            await ctx.tick()
            row = ctx.get(b.top.row)
            for f in b.model.description["windows"]["params"]["fields"]:
                held = b.model.values[0x1000 + 16 * locate + f["index"]]
                assert getattr(row, f["name"]) & ((1 << f["width"]) - 1) == held

    bench = run(bench_fn, source, sink, seed=3)
    print("request -> response cycles:", min(bench.latencies), max(bench.latencies))


def test_guard_drops_and_counts():
    async def bench_fn(ctx, b):
        kill = request(W, 0x100, 0)
        await b.ask(ctx, kill, src=OTHER_IP)  # not a peer
        await b.ask(ctx, request(W, 0x100, 0, token=TOKEN ^ 1))  # wrong token
        await b.ask(ctx, kill[:27])  # short payload
        await b.ask(ctx, kill + b"\0")  # long payload
        await b.ask(ctx, b"X" + kill[1:])  # magic
        await b.ask(ctx, kill[:2] + b"\x02" + kill[3:])  # version
        await b.send(ctx, frame(kill, dport=PORT + 1), "wrong_port")
        await b.send(ctx, frame(kill, dst="10.0.0.3"), "ignored")
        await b.send(ctx, frame(kill, chksum=0x1234), "malformed")
        await b.send(ctx, frame(kill, options=[IPOption_NOP()] * 4), "malformed")
        await b.send(ctx, frame(kill, flags="MF"), "malformed")
        await b.send(ctx, frame(kill)[:60], "truncated")
        await b.send(ctx, frame(kill)[:40], "truncated")
        await b.send(ctx, frame(kill)[:20], "ignored")
        await b.send(ctx, bytes(Ether() / ARP(pdst=DEV_IP)), "ignored")
        assert ctx.get(b.top.regs).kill_switch == 1  # never applied
        await b.ask(ctx, kill)  # the same request, done right, is applied
        assert ctx.get(b.top.regs).kill_switch == 0

    run(bench_fn)


def test_peer_and_token_changes():
    async def bench_fn(ctx, b):
        desc = b.model.description["registers"]
        peer1, token = desc["peer1"]["address"], desc["session_token"]["address"]
        read = request(R, 0x100, 1)
        await b.ask(ctx, read, src=OTHER_IP)  # dropped
        await b.ask(ctx, request(W, peer1, 1 << 32 | ip_int(OTHER_IP)))
        await b.ask(ctx, read, src=OTHER_IP)  # now answered
        await b.ask(ctx, request(W, token, 0xABCD))
        await b.ask(ctx, read)  # the old token: dropped
        await b.ask(ctx, request(R, 0x100, 1, token=0xABCD))
        await b.ask(ctx, request(W, desc["peer0"]["address"], ip_int(HOST_IP), token=0xABCD))
        await b.ask(ctx, request(R, 0x100, 1, token=0xABCD))  # peer0 disabled: dropped
        await b.ask(ctx, request(R, 0x100, 1, token=0xABCD), src=OTHER_IP)

    run(bench_fn)


def test_random_requests_match_model():
    rng = random.Random(11)
    desc = device_map(SYMBOLS)
    addresses = [r.address for r in desc.registers.values()] + [0x00, 0x01, 0x03, 0x10, 0x41]
    addresses += [0x1000 + k for k in range(16 * SYMBOLS)] + [0x50, 0x2000]

    async def bench_fn(ctx, b):
        for _ in range(80):
            op = rng.choice([R, R, W, W, W, 3])
            address = rng.choice(addresses)
            if op == R:
                value = rng.choice([1, 1, 2, 5, 8, 9])
            else:
                value = rng.choice([0, 1, 5, 31, 32, 100, 65535, 65536, 2**32, 2**64 - 1])
            await b.ask(ctx, request(op, address, value, request_id=rng.getrandbits(32)))

    run(bench_fn, "random_25", "random_25", seed=5)


def test_field_lists_match_host_formats():
    assert dict(hdl_control.REQUEST_FIELDS) == {f.name: f.size for f in proto.REQUEST.fields}
    assert dict(hdl_control.RESPONSE_FIELDS) == {
        f.name: f.size for f in proto.RESPONSE_HEADER.fields
    }
    assert hdl_control.CONTROL_MAGIC == proto.MAGIC
    assert hdl_control.CONTROL_VERSION == proto.VERSION
    assert hdl_control.OPCODES == {op.name: op.value for op in proto.Opcode}
    assert hdl_control.STATUSES == {s.name: s.value for s in proto.Status}
