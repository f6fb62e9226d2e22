"""OrderEgress (gateware) in amaranth.sim, against the host codecs and scapy.

Random order actions (every kind, random fields, known and unknown locates, directory entries
written between orders) with idle input and back-pressure on ``o``. Every frame must equal the
frame the host codecs build for that order (``ethernet.encode_udp_frame`` around
``ouch.encode_soup``), scapy must parse its headers and compute the same IPv4 checksum, the
IPv4 identification must count frames, beats must follow back to back while ``o.ready`` is
high, beat 0 must be valid in the cycle the order is accepted, and each latency sample must be
the cycle beat 0 was taken less the order's stamp.
"""

import gc
import random

import pytest
from amaranth.sim import Simulator
from scapy.all import IP, UDP, Ether
from tick2quote.hdl import egress
from tick2quote.hdl.egress import OrderEgress, directory_layout, udp_config_layout
from tick2quote.hdl.orders import OrderKind, order_layout
from tick2quote.host.protocol import ethernet, ouch
from tick2quote.sim.streams import beats_bytes, pack, pause_pattern, unpack

SYMBOLS = 16
CONFIG = {
    "dst_mac": 0x0200_0000_00AB,
    "src_mac": 0x0211_2233_4455,
    "src_ip": 0x0A01_0203,
    "dst_ip": 0xC0A8_6407,
    "src_port": 40000,
    "dst_port": 15000,
    "ttl": 64,
}


def config_frame(ident: int, payload: bytes) -> bytes:
    """The frame the host codec builds for a payload under :data:`CONFIG`."""
    return ethernet.encode_udp_frame(
        ethernet.UdpFrame(
            dst_mac=CONFIG["dst_mac"].to_bytes(6, "big"),
            src_mac=CONFIG["src_mac"].to_bytes(6, "big"),
            src_ip=CONFIG["src_ip"].to_bytes(4, "big"),
            dst_ip=CONFIG["dst_ip"].to_bytes(4, "big"),
            src_port=CONFIG["src_port"],
            dst_port=CONFIG["dst_port"],
            payload=payload,
            ttl=CONFIG["ttl"],
            ident=ident,
        )
    )


def expected_message(order: dict, symbol: str) -> bytes:
    """The OUCH message for an order, built with the host encoder."""
    kind = OrderKind(order["kind"])
    cl_ord_id = f"T{order['stamp']:08X}"
    common = dict(time_in_force="0", display="Y", intermarket_sweep="N", cl_ord_id=cl_ord_id)
    if kind is OrderKind.ENTER:
        record = ouch.make("to_exchange", "O", user_ref_num=order["user_ref"],
                           side="S" if order["side"] else "B", quantity=order["quantity"],
                           symbol=symbol, price=order["price"], capacity="P", cross_type="N",
                           **common)  # fmt: skip
    elif kind is OrderKind.REPLACE:
        record = ouch.make("to_exchange", "U", orig_user_ref_num=order["orig_ref"],
                           user_ref_num=order["user_ref"], quantity=order["quantity"],
                           price=order["price"], **common)  # fmt: skip
    else:
        record = ouch.make("to_exchange", "X", user_ref_num=order["user_ref"], quantity=0)
    return ouch.encode(record)


def random_orders(rng: random.Random, count: int) -> list[dict]:
    orders = []
    for _ in range(count):
        kind = rng.choice(list(OrderKind))
        orders.append(
            {
                "kind": kind.value,
                "locate": rng.choice([rng.randrange(SYMBOLS), rng.randrange(1 << 16)]),
                "side": rng.randrange(2),
                "user_ref": rng.randrange(1 << 32),
                "orig_ref": rng.randrange(1 << 32) if kind is OrderKind.REPLACE else 0,
                "quantity": 0 if kind is OrderKind.CANCEL else rng.randrange(1 << 32),
                "price": 0 if kind is OrderKind.CANCEL else rng.randrange(1 << 32),
                "stamp": rng.randrange(1 << 32),
            }
        )
    return orders


def random_symbol(rng: random.Random) -> bytes:
    return bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(1, 8)))


def run(orders, directory, idle: str, backpressure: str, seed: int):
    """Drive ``orders`` (and ``directory`` entries before each order's index) through the
    gateware; return the frames as ``(beats [(cycle, fields)], accept cycle, symbol table at
    acceptance)``, the latency samples and the counters."""
    dut = OrderEgress(symbols=SYMBOLS)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    frames, samples, result = [], [], {}

    async def bench(ctx):
        ctx.set(dut.config.as_value(), pack(udp_config_layout, CONFIG))
        pause_in, pause_out = pause_pattern(idle, seed), pause_pattern(backpressure, seed + 1)
        table: dict[int, bytes] = {}
        queue = list(orders)
        pending_dir = list(directory)
        accepted: list[tuple[int, dict]] = []
        current: list = []
        cycle, quiet = 0, 0
        offer = entry = None
        while quiet < 30:
            ctx.set(dut.cycle, cycle & 0xFFFF_FFFF)
            if offer is None and queue and not next(pause_in):
                offer = queue.pop(0)
            ctx.set(dut.i.valid, offer is not None)
            if offer is not None:
                ctx.set(dut.i.payload.as_value(), pack(order_layout, offer))
            if entry is None and pending_dir and cycle % 3 == 0:
                entry = pending_dir[0]
            ctx.set(dut.directory.valid, entry is not None)
            if entry is not None:
                ctx.set(dut.directory.payload.as_value(), pack(directory_layout, entry))
            ready = not next(pause_out)
            ctx.set(dut.o.ready, ready)
            _, _, i_ready, d_ready, o_valid, beat, latency = await ctx.tick().sample(
                dut.i.ready, dut.directory.ready, dut.o.valid, dut.o.payload.as_value(),
                dut.latency.as_value(),
            )  # fmt: skip
            if entry is not None and d_ready:
                pending_dir.pop(0)
                if entry["locate"] < SYMBOLS:
                    table[entry["locate"]] = entry["stock"].to_bytes(8, "little")
                entry = None
            if offer is not None and i_ready:
                accepted.append((cycle, offer, dict(table)))
                offer = None
            lat = unpack(egress.sample_layout, latency)
            if lat["valid"]:
                samples.append(lat["value"])
            if o_valid:
                fields = unpack(egress.beat_layout, beat)
                current.append((cycle, ready, fields))
                if ready and fields["last"]:
                    frames.append(current)
                    current = []
            busy = o_valid or queue or offer is not None
            quiet = 0 if busy else quiet + 1
            cycle += 1
        assert not current
        result["accepted"] = accepted
        result["counters"] = unpack(egress.egress_counters_layout, ctx.get(dut.counters.as_value()))

    sim.add_testbench(bench)
    sim.run()
    return frames, result["accepted"], samples, result["counters"]


def check(orders, frames, accepted, samples, *, backpressure: bool):
    assert len(frames) == len(orders) == len(accepted)
    for ident, (beats, (accept_cycle, order, table)) in enumerate(zip(frames, accepted)):
        taken = [(c, f) for c, ready, f in beats if ready]
        # Beat 0 valid in the cycle the order was accepted; no gap while o.ready is high.
        assert beats[0][0] == accept_cycle
        assert [f["first"] for _, f in taken] == [1] + [0] * (len(taken) - 1)
        cycles = [c for c, _, _ in beats]
        assert cycles == list(range(cycles[0], cycles[0] + len(cycles)))
        frame = beats_bytes((f["data"], f["keep"]) for _, f in taken)
        raw = table.get(order["locate"], b" " * 8)
        symbol = raw.decode("ascii")
        soup = ouch.encode_soup("U", expected_message(order, symbol))
        assert frame == config_frame(ident & 0xFFFF, soup), f"frame {ident}"
        # Independent header check: scapy parses it and recomputes the same IPv4 checksum.
        packet = Ether(frame)
        assert packet[IP].id == ident & 0xFFFF
        ours = packet[IP].chksum
        del packet[IP].chksum
        assert IP(bytes(packet[IP]))[IP].chksum == ours
        assert bytes(packet[UDP].payload)[: packet[UDP].len - 8] == soup
        assert len(frame) == max(60, 42 + len(soup))
        (pkt,) = ouch.iter_soup(soup)
        record, _ = ouch.decode(pkt.payload, "to_exchange")
        if "cl_ord_id" in record._fields:
            assert int(record.cl_ord_id[1:9], 16) == order["stamp"]
        first_taken = taken[0][0]
        assert samples[ident] == (first_taken - order["stamp"]) & 0xFFFF_FFFF
        if not backpressure:
            assert first_taken == accept_cycle
    assert len(samples) == len(frames)


@pytest.mark.parametrize(
    "idle, backpressure",
    [
        ("none", "none"),
        ("random_60", "none"),
        ("none", "random_25"),
        ("bursty", "alternate"),
    ],  # fmt: skip
)
def test_egress_frames(idle, backpressure):
    seed = hash((idle, backpressure)) & 0xFFFF
    rng = random.Random(seed)
    orders = random_orders(rng, 120)
    directory = [{"locate": rng.randrange(SYMBOLS + 4), "stock": int.from_bytes(
        random_symbol(rng).ljust(8, b" "), "little")} for _ in range(40)]  # fmt: skip
    frames, accepted, samples, counters = run(orders, directory, idle, backpressure, seed)
    check(orders, frames, accepted, samples, backpressure=backpressure != "none")
    kinds = [OrderKind(o["kind"]) for o in orders]
    assert counters["enter"] == kinds.count(OrderKind.ENTER)
    assert counters["replace"] == kinds.count(OrderKind.REPLACE)
    assert counters["cancel"] == kinds.count(OrderKind.CANCEL)
    assert counters["directory_ignored"] == sum(d["locate"] >= SYMBOLS for d in directory)


def test_bad_kind_is_dropped_and_counted():
    rng = random.Random(5)
    orders = random_orders(rng, 6)
    bad = dict(orders[2], kind=3)
    frames, accepted, samples, counters = run(orders[:2] + [bad] + orders[2:], [], "none",
                                              "none", 1)  # fmt: skip
    accepted = [a for a in accepted if a[1]["kind"] != 3]
    check(orders, frames, accepted, samples, backpressure=False)
    assert counters["bad_kind"] == 1


def test_layouts_match_host_codecs():
    declared = {
        "ethernet": (egress.ETHERNET_FIELDS, ethernet.ETHERNET),
        "ipv4": (egress.IPV4_FIELDS, ethernet.IPV4),
        "udp": (egress.UDP_FIELDS, ethernet.UDP),
        "soup": (egress.SOUP_FIELDS, ouch.SOUP_HEADER),
        **{code: (egress.OUCH_FIELDS[code], ouch.TO_EXCHANGE[code]) for code in "OUX"},
    }
    for name, (fields, fmt) in declared.items():
        assert tuple(fields) == tuple((f.name, f.size) for f in fmt.fields), name


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_parameters_checked():
    with pytest.raises(ValueError, match="symbols must be an integer in 1 .. 65536, not 0"):
        OrderEgress(symbols=0)
    gc.collect()
