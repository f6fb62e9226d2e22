"""cocotb testbench for ControlPlane (run by tests/test_control_cocotb.py on both simulators).

Request frames are built by scapy around payloads from the host codec; responses are checked by
scapy (addresses, ports, IPv4 checksum) and must equal what the host's EndpointModel answers.
Every test is crossed with input idle insertion and output back-pressure, and ends with nothing
left unread; dropped requests must change no register (read back through the protocol).
"""

import cocotb
from cocotb.triggers import with_timeout
from scapy.all import IP, UDP, Ether, IPOption_NOP, Raw
from tick2quote.hdl.control import GUARD_COUNTERS, ControlPlane
from tick2quote.hdl.layouts import beat_layout
from tick2quote.hdl.regmap import DEVICE_COUNTERS, device_map
from tick2quote.host.protocol import control as proto
from tick2quote.host.protocol.errors import DecodeError
from tick2quote.host.protocol.ethernet import decode_udp_frame
from tick2quote.sim.cocotb_streams import TB, StreamSink, StreamSource, pack
from tick2quote.sim.harness import params_from_env
from tick2quote.sim.streams import beats_bytes, packet_beats, pause_pattern

P = params_from_env()
PLANE = ControlPlane(
    device_map(P["symbols"]), ip=P["ip"], mac=P["mac"], port=P["port"], token=P["token"],
    peers=P["peers"],
)  # fmt: skip
HOST, OTHER, HOST_MAC = P["peers"][0], "10.0.0.77", "02:aa:bb:cc:dd:ee"
R, W = proto.Opcode.READ, proto.Opcode.WRITE
PAUSES = ["none", "random_25"]


def ip_int(text: str) -> int:
    return int.from_bytes(bytes(map(int, text.split("."))), "big")


def frame(payload: bytes, *, src=HOST, dst=None, dport=None, **ip) -> bytes:
    eth = Ether(dst="02:00:00:00:00:01", src=HOST_MAC)
    udp = UDP(sport=40001, dport=dport or P["port"])
    return bytes(eth / IP(src=src, dst=dst or P["ip"], **ip) / udp / Raw(payload))


class ControlTB(TB):
    def __init__(self, dut, source: str, sink: str):
        super().__init__(dut)
        self.i = StreamSource(dut, "i", beat_layout, dut.clk, pause_pattern(source, 1))
        self.o = StreamSink(dut, "o", beat_layout, dut.clk, pause_pattern(sink, 2))
        self.model = proto.EndpointModel(PLANE.describe())
        self.model.status = {n: 7 * k + 3 for k, n in enumerate(DEVICE_COUNTERS)}
        dut.status.value = pack(
            PLANE.status.shape(), {n: self.model.status[n] for n in DEVICE_COUNTERS}
        )
        self.tally = dict.fromkeys(GUARD_COUNTERS, 0)
        self.token = P["token"]
        self.next_id = 1

    async def response(self) -> bytes:
        beats = []
        while not beats or not beats[-1]["last"]:
            beats.append(await with_timeout(self.o.recv(), 20, "us"))
        assert beats[0]["first"] and not any(b["first"] for b in beats[1:])
        return beats_bytes((b["data"], b["keep"]) for b in beats)

    async def send(self, data: bytes, cause: str, expect=None, src=HOST):
        for beat in packet_beats(data):
            self.i.send(beat)
        await self.i.wait()
        self.tally["frames"] += 1
        self.tally[cause] += 1
        if expect is None:
            await self.cycles(60)
            assert self.o.empty(), f"a {cause} frame was answered"
            return None
        reply = await self.response()
        pkt = Ether(reply)
        assert pkt.dst == HOST_MAC and pkt[IP].src == P["ip"] and pkt[IP].dst == src
        assert pkt[UDP].sport == P["port"] and pkt[UDP].dport == 40001
        check = IP(bytes(pkt[IP]))
        del check.chksum
        assert IP(bytes(check)).chksum == pkt[IP].chksum
        payload = decode_udp_frame(reply).payload
        assert payload == expect
        self.tally["responses"] += 1
        response = proto.decode_response(payload)
        self.tally["refused"] += response.status != proto.Status.OK
        return response

    async def ask(self, opcode, address, value, *, src=HOST, token=None, payload=None):
        """A request to the control port, answered (or dropped) as the model says."""
        self.next_id += 1
        token = self.token if token is None else token
        payload = payload or proto.encode_request(
            proto.Request(opcode, self.next_id, token, address, value)
        )
        if ip_int(src) not in self.model.peers():
            cause = "not_peer"
        else:
            try:
                ok = proto.decode_request(payload).token == self.model.value("session_token")
                cause = "accepted" if ok else "bad_token"
            except DecodeError:
                cause = "malformed"
        tally = dict(self.tally, frames=self.tally["frames"] + 1)
        tally[cause] += 1
        self.model.status.update(tally)
        expect = self.model.handle(payload, ip_int(src))
        return await self.send(frame(payload, src=src), cause, expect, src)

    async def finish(self):
        """Every guard counter, then every held register and field, read back and checked."""
        src = ".".join(str(b) for b in min(self.model.peers()).to_bytes(4, "big"))
        await self.ask(R, 0x40, 8, src=src)
        await self.ask(R, 0x48, 3, src=src)
        for address in list(self.model.values):
            await self.ask(R, address, 1, src=src)
        assert self.o.empty()


def fields_at(name):
    win = PLANE.describe()["windows"]["params"]
    index = next(f["index"] for f in win["fields"] if f["name"] == name)
    return lambda locate: win["base"] + win["stride"] * locate + index


@cocotb.test()
@cocotb.parametrize(source=PAUSES, sink=PAUSES)
async def test_reads_writes_refusals(dut, source, sink):
    tb = ControlTB(dut, source, sink)
    await tb.reset()
    regs = PLANE.describe()["registers"]
    for name in ("device_ip", "device_mac", "control_port", "peer0", "session_token",
                 "kill_switch", "messages_in", "frames"):  # fmt: skip
        await tb.ask(R, regs[name]["address"], 1)
    await tb.ask(R, 0x180, 8)
    await tb.ask(R, 0x1000, 8)
    await tb.ask(R, 0x1000, 9)  # BAD_COUNT
    await tb.ask(R, 0x1008, 8)  # runs into a hole: BAD_ADDRESS
    mask = 2**64 - 1
    for k, (name, value) in enumerate([
        ("band_bps", 0), ("tick", 5), ("tick", 1), ("quote_size", -1 & mask), ("skew_shift", 32),
        ("skew_shift", 31), ("skew_num", -3 & mask), ("skew_num", 40000), ("max_loss", mask),
    ]):  # fmt: skip
        await tb.ask(W, fields_at(name)(k % P["symbols"]), value)
    for name, value in [("kill_switch", 0), ("messages_in", 1), ("feed_port", 0), ("feed_port", 9)]:
        await tb.ask(W, regs[name]["address"], value)
    await tb.ask(W, 0x7777, 1)
    await tb.ask(5, 0x100, 1)
    await tb.finish()
    assert tb.o.empty()


@cocotb.test()
@cocotb.parametrize(source=PAUSES, sink=PAUSES)
async def test_guard(dut, source, sink):
    tb = ControlTB(dut, source, sink)
    await tb.reset()
    regs = PLANE.describe()["registers"]
    kill = proto.encode_request(proto.Request(W, 1, tb.token, regs["kill_switch"]["address"], 0))
    await tb.ask(0, 0, 0, payload=kill, src=OTHER)
    await tb.ask(W, regs["kill_switch"]["address"], 0, token=tb.token ^ 1 << 63)
    await tb.ask(0, 0, 0, payload=kill[:20])
    await tb.ask(0, 0, 0, payload=b"T3" + kill[2:])
    await tb.send(frame(kill, dport=P["port"] + 1), "wrong_port")
    await tb.send(frame(kill, dst="10.0.0.3"), "ignored")
    await tb.send(frame(kill, chksum=1), "malformed")
    await tb.send(frame(kill, options=[IPOption_NOP()] * 4), "malformed")
    await tb.send(frame(kill)[:65], "truncated")
    assert dut.regs.value.to_unsigned() & 1 == 1  # the kill switch (bit 0) is still set
    # peer and token changes take effect at once
    await tb.ask(W, regs["peer2"]["address"], 1 << 32 | ip_int(OTHER))
    await tb.ask(R, 0x100, 1, src=OTHER)
    await tb.ask(W, regs["session_token"]["address"], 99)
    await tb.ask(R, 0x100, 1)  # the old token: dropped
    tb.token = 99
    await tb.ask(W, regs["peer0"]["address"], 0)
    await tb.ask(R, 0x100, 1)  # no longer a peer: dropped
    await tb.ask(0, 0, 0, payload=kill[:8] + (99).to_bytes(8, "big") + kill[16:], src=OTHER)
    assert dut.regs.value.to_unsigned() & 1 == 0
    await tb.finish()
