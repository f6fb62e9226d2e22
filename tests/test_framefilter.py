"""FrameFilter (gateware) against the ingress reference model's frame filter, in amaranth.sim.

Frames built by scapy (independent of the project's codecs): every drop cause, 802.1Q tags and
IPv4 options of every length (so the payload starts at both lanes 2 and 6), zero checksums with
and without ``allow_zero_checksum``, address and port tables, Ethernet padding, frames cut at
every length and random bit flips, with and without idle cycles between beats. For each frame
the payload passed on (bytes, ``truncated``, ``drop``) must be what the model says, and the
counters must equal the model's, every frame counted once.
"""

import gc
import ipaddress
import random

import pytest
from amaranth.sim import Simulator
from scapy.all import IP, TCP, UDP, Dot1Q, Ether, IPOption_NOP, Raw
from tick2quote.hdl.framefilter import FILTER_COUNTERS, FrameFilter
from tick2quote.host.protocol import itch, moldudp64
from tick2quote.sim.models.ingress import IngressConfig, filter_frame
from tick2quote.sim.streams import packet_beats, pause_pattern

GROUP, PORT = "233.54.12.111", 26477
OTHER_GROUP, OTHER_PORT = "233.54.12.112", 26478


def mold(n: int, seq: int = 1) -> bytes:
    msgs = [itch.encode_message(itch.make("D", locate=1, order_ref=k)) for k in range(n)]
    return moldudp64.encode(moldudp64.Packet(b"SESSION001", seq, msgs))


def frame(payload: bytes, *, vlan=True, options=0, dst=GROUP, dport=PORT, **ip) -> bytes:
    eth = Ether(dst="01:00:5e:36:0c:6f", src="00:11:22:33:44:55")
    if vlan:
        eth = eth / Dot1Q(vlan=141)
    opts = {"options": [IPOption_NOP()] * options} if options else {}
    return bytes(eth / IP(src="10.1.2.3", dst=dst, **opts, **ip) / UDP(sport=1, dport=dport)
                 / payload)  # fmt: skip


def corner_frames(rng: random.Random) -> list[bytes]:
    """Every cause, every IPv4 header length, both tag cases, padding, cuts and bit flips."""
    p = mold(3)
    out = []
    for vlan in (False, True):
        for options in range(0, 41, 4):
            out.append(frame(mold(rng.randint(0, 4)), vlan=vlan, options=options))
        out += [
            frame(p, vlan=vlan, chksum=0x1234),
            frame(p, vlan=vlan, chksum=0),
            frame(p, vlan=vlan, flags="MF"),
            frame(p, vlan=vlan, frag=7),
            frame(p, vlan=vlan, dst=OTHER_GROUP),
            frame(p, vlan=vlan, dport=OTHER_PORT),
            frame(p[:19], vlan=vlan),
            frame(b"", vlan=vlan),
            frame(p, vlan=vlan) + bytes(rng.randint(1, 30)),  # Ethernet padding
            frame(p, vlan=vlan, version=6),
            frame(p, vlan=vlan, ihl=4),
            frame(p, vlan=vlan, len=12),
            frame(p, vlan=vlan, proto=6),
        ]
    out += [
        bytes(Ether() / IP(dst=GROUP) / TCP(dport=PORT) / p),
        bytes(Ether(type=0x0806) / Raw(bytes(28))),
        bytes(Ether() / IP(dst=GROUP) / UDP(dport=PORT, len=9) / p),
        bytes(Ether() / IP(dst=GROUP, len=500) / UDP(dport=PORT) / p),
        bytes(Ether() / Dot1Q(vlan=3) / Dot1Q(vlan=4) / IP(dst=GROUP) / UDP(dport=PORT) / p),
    ]
    good = frame(mold(5), options=8)
    out += [good[:n] for n in range(0, len(good), 3)]
    for _ in range(60):
        f = bytearray(frame(mold(rng.randint(1, 4)), vlan=rng.random() < 0.5,
                            options=4 * rng.randint(0, 10)))  # fmt: skip
        for _ in range(rng.randint(1, 3)):
            bit = rng.randrange(8 * min(len(f), 90))
            f[bit // 8] ^= 1 << (bit % 8)
        out.append(bytes(f))
    return [f for f in out if f]


CONFIGS = {
    "open": (IngressConfig(), {}),
    "tables": (
        IngressConfig(
            dst_ips=frozenset({ipaddress.IPv4Address(GROUP).packed, bytes([10, 0, 0, 1])}),
            dst_ports=frozenset({PORT, 1}),
            allow_zero_checksum=True,
        ),
        {"groups": [GROUP, "10.0.0.1"], "ports": [PORT, 1], "allow_zero_checksum": 1},
    ),
}


def apply_config(ctx, dut, hw: dict) -> None:
    ctx.set(dut.allow_zero_checksum, hw.get("allow_zero_checksum", 0))
    for n, ip in enumerate(hw.get("groups", [])):
        ctx.set(dut.groups[n].enable, 1)
        ctx.set(dut.groups[n].address, int(ipaddress.IPv4Address(ip)))
    for n, port in enumerate(hw.get("ports", [])):
        ctx.set(dut.ports[n].enable, 1)
        ctx.set(dut.ports[n].port, port)


def run_filter(frames: list[bytes], hw: dict, idle: str, seed: int):
    """Per frame: the payload packets that left (bytes, truncated, drop), and the counters."""
    dut = FrameFilter()
    owner = []  # frame index of the beat taken in each cycle (None when idle)
    packets: dict[int, list] = {}
    result = {}

    async def bench(ctx):
        apply_config(ctx, dut, hw)
        pause = pause_pattern(idle, seed)
        beats = [(n, b) for n, f in enumerate(frames) for b in packet_beats(f)]
        current = None
        position = 0
        for cycle in range(10**6):
            if position < len(beats) and not next(pause):
                index, beat = beats[position]
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, beat)
                owner.append(index)
                position += 1
            else:
                ctx.set(dut.i.valid, 0)
                owner.append(None)
            _, _, valid, out = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if cycle and valid:
                index = owner[cycle - 1]
                raw = int(out.data).to_bytes(8, "little")
                data = bytes(raw[k] for k in range(8) if (int(out.keep) >> k) & 1)
                if out.first:
                    current = [index, bytearray(), None, None]
                    packets.setdefault(index, []).append(current)
                assert current is not None and current[0] == index
                current[1] += data
                if out.last:
                    current[2], current[3] = int(out.truncated), int(out.drop)
                    current = None
            if position == len(beats) and owner[-6:] == [None] * 6:
                break
        result["counters"] = {n: ctx.get(getattr(dut.counters, n)) for n in FILTER_COUNTERS}

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return packets, result["counters"]


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("idle", ["none", "random_25"])
def test_filter_matches_model(config, idle):
    rng = random.Random(hash((config, idle)) & 0xFFFF)
    frames = corner_frames(rng)
    model_config, hw = CONFIGS[config]
    packets, counters = run_filter(frames, hw, idle, seed=3)
    expected = {name: 0 for name in FILTER_COUNTERS}
    for n, f in enumerate(frames):
        result = filter_frame(f, model_config)
        expected["frames"] += 1
        expected[result.cause] += 1
        got = packets.get(n, [])
        if result.payload:  # (an empty payload has no lane to pass on)
            assert len(got) == 1, (n, result, got)
            _, data, truncated, drop = got[0]
            assert (bytes(data), truncated) == (result.payload, result.truncated), n
            # ``drop`` is final once 20 payload bytes have left (a MoldUDP64 header)
            assert len(data) < 20 or not drop, n
        else:
            # A dropped frame's payload may leave, but marked by the time 20 bytes have.
            for _, data, _, drop in got:
                assert drop or len(data) < 20, (n, result, got)
    assert counters == expected
    assert sum(counters.values()) == 2 * len(frames)
    # every cause was exercised
    tables = {"wrong_dst_ip", "wrong_dst_port"}
    assert all(counters[name] for name in FILTER_COUNTERS if hw or name not in tables)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"groups": 0}, r"groups must be an integer in 1 \.\. 16, not 0"),
        ({"ports": 17}, r"ports must be an integer in 1 \.\. 16, not 17"),
        ({"counter_width": 0}, r"counter_width must be an integer in 1 \.\. 64, not 0"),
    ],
)
def test_parameters_are_checked(kwargs, text):
    with pytest.raises(ValueError, match=text):
        FrameFilter(**kwargs)
    gc.collect()
