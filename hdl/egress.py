"""Order egress: order actions in, Ethernet/IPv4/UDP frames carrying OUCH 5.0 out.

:class:`OrderEgress` turns each :data:`~tick2quote.hdl.orders.order_layout` record into one
Ethernet II frame: IPv4 (no options), UDP (checksum 0), and one SoupBinTCP packet of type 'U'
(unsequenced data) carrying one OUCH 5.0 message:

============  ========  ===========================  ======================================
order kind    OUCH      frame length (bytes)         beats (8 bytes; keep of the last beat)
============  ========  ===========================  ======================================
ENTER         'O' 47    14+20+8+3+47 = 92            12 (0x0F)
REPLACE       'U' 40    14+20+8+3+40 = 85            11 (0x1F)
CANCEL        'X' 9     14+20+8+3+9 = 54, padded 60  8 (0x0F)
============  ========  ===========================  ======================================

Constants (every field not taken from the order or the configuration):

- Ethernet: EtherType 0x0800. IPv4: version 4, IHL 5 (0x45), TOS 0, flags and fragment offset 0
  (DF clear), protocol 17; identification counts frames from 0 (wraps at 16 bits); header
  checksum computed. UDP checksum 0 (none). Padding bytes 0.
- SoupBinTCP: length = 1 + OUCH message size, packet type 'U'.
- Enter Order: Side 'B' (side 0) / 'S' (side 1), Price = the 32-bit price zero-extended to the
  signed 64-bit OUCH price, Time In Force '0' (day), Display 'Y', Capacity 'P' (principal),
  Intermarket Sweep 'N', Cross Type 'N', Appendage Length 0. Symbol: the 8 bytes last written
  for the order's locate on :attr:`OrderEgress.directory`, or 8 spaces for a locate never
  written or outside the memory.
- Replace Order: Time In Force '0', Display 'Y', Intermarket Sweep 'N', Appendage Length 0.
- Cancel Order: Quantity 0 (cancel the whole order).
- ClOrdID (Enter and Replace): 'T', the order's ``stamp`` as 8 upper-case hexadecimal digits
  (most significant first), then 5 spaces: ``f"T{stamp:08X}     "``. The host reads the stamp
  back as ``int(cl_ord_id[1:9], 16)``.

Timing. Beat 0 (destination MAC and 2 bytes of source MAC) depends on the configuration only,
so it is presented **in the cycle the order is accepted** (``o.valid`` follows ``i.valid``
combinationally while the egress is idle; ``o.payload`` does not depend on ``i.payload``): the
latency from order accepted to first beat valid is 0 cycles. Each later beat comes from a
register loaded one cycle ahead from the latched order, so beats follow back to back, one per
cycle when ``o.ready`` is high. The IPv4 total length, UDP length and header checksum of each
order kind are precomputed for the next identification (see :class:`FrameSender`). ``i.ready``
is high exactly while no frame is in flight (it does not depend on ``o.ready``), so there is
one idle cycle between two frames.

``latency`` strobes, the cycle after beat 0 is taken (valid and ready), ``cycle - stamp`` where
``cycle`` is the free-running counter input in the cycle beat 0 was taken: tick-to-quote in
cycles when ``stamp`` is the ingress stamp, including any back-pressure from the MAC.

The configuration (:data:`udp_config_layout`) is read continuously; change it only while no
frame is in flight, at least 4 cycles before the next order. After reset the symbol memory is
swept to spaces (``symbols`` cycles, during which neither ``i`` nor ``directory`` is ready).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .latencystats import sample_layout
from .layouts import BEAT_BYTES, beat_layout
from .orders import OrderKind, order_layout
from .sweep import reset_sweep

__all__ = [
    "ETHERNET_FIELDS",
    "IPV4_FIELDS",
    "UDP_FIELDS",
    "SOUP_FIELDS",
    "OUCH_FIELDS",
    "udp_config_layout",
    "directory_layout",
    "egress_counters_layout",
    "FrameSender",
    "OrderEgress",
    "field_bytes",
]

#: Wire layouts as ``(name, size)`` in wire order; the names and sizes are those of
#: :mod:`tick2quote.host.protocol.ethernet` and :mod:`tick2quote.host.protocol.ouch` (checked in
#: the tests).
ETHERNET_FIELDS = (("dst", 6), ("src", 6), ("ethertype", 2))
IPV4_FIELDS = (
    ("version_ihl", 1), ("tos", 1), ("total_length", 2), ("ident", 2), ("flags_fragment", 2),
    ("ttl", 1), ("protocol", 1), ("checksum", 2), ("src", 4), ("dst", 4),
)  # fmt: skip
UDP_FIELDS = (("src_port", 2), ("dst_port", 2), ("length", 2), ("checksum", 2))
SOUP_FIELDS = (("length", 2), ("packet_type", 1))
OUCH_FIELDS = {
    "O": (
        ("type", 1), ("user_ref_num", 4), ("side", 1), ("quantity", 4), ("symbol", 8),
        ("price", 8), ("time_in_force", 1), ("display", 1), ("capacity", 1),
        ("intermarket_sweep", 1), ("cross_type", 1), ("cl_ord_id", 14), ("appendage_length", 2),
    ),
    "U": (
        ("type", 1), ("orig_user_ref_num", 4), ("user_ref_num", 4), ("quantity", 4),
        ("price", 8), ("time_in_force", 1), ("display", 1), ("intermarket_sweep", 1),
        ("cl_ord_id", 14), ("appendage_length", 2),
    ),
    "X": (("type", 1), ("user_ref_num", 4), ("quantity", 4)),
}  # fmt: skip

#: Addresses of the frames sent. MAC and IPv4 addresses are big-endian integers
#: (``0x001122334455`` is ``00:11:22:33:44:55``, ``0x0A000001`` is ``10.0.0.1``).
udp_config_layout = data.StructLayout(
    {
        "dst_mac": 48,
        "src_mac": 48,
        "src_ip": 32,
        "dst_ip": 32,
        "src_port": 16,
        "dst_port": 16,
        "ttl": 8,
    }
)

#: One Stock Directory entry: the locate and its 8 symbol bytes in wire order (byte ``i`` at
#: bits ``8i .. 8i+7``).
directory_layout = data.StructLayout({"locate": 16, "stock": 64})

#: Frames sent per order kind; orders of no known kind (dropped); directory entries ignored
#: (locate outside the memory).
egress_counters_layout = data.StructLayout(
    {"enter": 32, "replace": 32, "cancel": 32, "bad_kind": 32, "directory_ignored": 32}
)

_MIN_FRAME = 60  # Ethernet minimum without FCS
_HEADER_BYTES = 14 + 20 + 8
_ETHERTYPE_IPV4 = 0x0800
_IPPROTO_UDP = 17
_KIND_CODE = {OrderKind.ENTER: "O", OrderKind.REPLACE: "U", OrderKind.CANCEL: "X"}


def _byte_list(value, size: int) -> list[Value]:
    """``value`` as ``size`` bytes in wire order: an int or a Value big-endian, a str as
    space-padded ASCII, a list of byte Values as it is."""
    if isinstance(value, str):
        raw = value.encode("ascii").ljust(size, b" ")
        if len(raw) != size:
            raise ValueError(f"text {value!r} does not fit {size} bytes")
        return [Const(b, 8) for b in raw]
    if isinstance(value, list):
        if len(value) != size:
            raise ValueError(f"{len(value)} bytes given for a field of {size}")
        return value
    if isinstance(value, int):
        return [Const(b, 8) for b in value.to_bytes(size, "big")]
    value = Value.cast(value)
    wide = Cat(value, Const(0, max(0, 8 * size - len(value))))
    return [wide[8 * (size - 1 - k) : 8 * (size - k)] for k in range(size)]


def field_bytes(fields, values: dict) -> list[Value]:
    """The bytes of a structure declared as ``(name, size)`` fields, from ``values`` by name
    (every field must be given, and nothing else)."""
    names = [name for name, _ in fields]
    if set(values) != set(names):
        raise ValueError(f"fields {sorted(set(names) ^ set(values))} missing or unknown")
    out = []
    for name, size in fields:
        out += _byte_list(values[name], size)
    return out


def _hex_digit(nibble) -> Value:
    return Cat(Mux(nibble < 10, 0x30 + nibble, 0x37 + nibble), Const(0, 8))[:8]


def cl_ord_id_bytes(stamp) -> list[Value]:
    """ClOrdID bytes: 'T', 8 upper-case hex digits of ``stamp``, 5 spaces."""
    digits = [_hex_digit(stamp[4 * (7 - k) : 4 * (8 - k)]) for k in range(8)]
    return [Const(ord("T"), 8), *digits, *[Const(0x20, 8)] * 5]


class FrameSender:
    """Elaboration helper: sends Ethernet/IPv4/UDP frames whose payload is one of several
    fixed-size variants (used by :class:`OrderEgress` and the top-of-book feed).

    :meth:`build` adds the logic to a module. The sender owns the IPv4 identification (the
    next frame's, in ``ident``) and, per variant, the header checksum for that identification,
    kept up to date in registers: ``base`` sums the configuration's header words (1 cycle),
    ``partial[v]`` adds the variant's total length and ``ident`` (1 cycle), ``checksum[v]`` folds
    and complements it (1 cycle). A frame latches the identification and its variant's checksum
    when it is accepted; ``ident`` then counts on and the checksums follow 3 cycles later, well
    before the next frame (every frame is at least 8 beats long).
    """

    def __init__(self, payload_sizes: list[int]):
        self.payload_sizes = list(payload_sizes)
        self.beats = [
            -(-max(_MIN_FRAME, _HEADER_BYTES + size) // BEAT_BYTES) for size in payload_sizes
        ]

    def build(self, m: Module, o, config, *, start, variant_in, payloads, hold=None):
        """Add the sender to ``m``.

        ``o``: the beat stream out. ``config``: a :data:`udp_config_layout` value. ``start``: a
        frame of variant ``variant_in`` may start this cycle (only taken while :attr:`idle` and
        ``hold`` is low; the caller latches the payload registers when :attr:`accept` is high).
        ``payloads[v]``: the payload bytes of variant ``v``, from registers that the caller loads
        on :attr:`accept`. Afterwards read :attr:`idle` (a frame may start: none in flight, and
        not in the first 3 cycles after reset, while the checksums settle), :attr:`accept` and
        :attr:`first_taken` (beat 0 transferred this cycle).
        """
        hold = Const(0) if hold is None else hold
        variants = len(self.payload_sizes)
        self.idle = idle = Signal(name="sender_idle")
        self.accept = accept = Signal(name="sender_accept")
        self.first_taken = Signal(name="sender_first_taken")
        active = Signal(name="sender_active")
        index = Signal(range(max(self.beats) + 1), name="sender_index")
        variant = Signal(range(variants), name="sender_variant")
        # The checksum registers settle 3 cycles after reset: no frame starts before.
        settled = Signal(2, name="sender_settled")
        with m.If(settled != 3):
            m.d.sync += settled.eq(settled + 1)
        m.d.comb += [idle.eq(~active & (settled == 3)), accept.eq(start & idle & ~hold)]

        # Identification and header checksums.
        ident = Signal(16, name="ip_ident")
        frame_ident = Signal(16, name="frame_ident")
        frame_checksum = Signal(16, name="frame_checksum")
        words = [
            0x4500, Cat(Const(_IPPROTO_UDP, 8), config.ttl),
            config.src_ip[16:], config.src_ip[:16], config.dst_ip[16:], config.dst_ip[:16],
        ]  # fmt: skip
        base = Signal(19, name="ip_base_sum")
        m.d.sync += base.eq(sum(words))
        checksums = []
        for v, size in enumerate(self.payload_sizes):
            partial = Signal(20, name=f"ip_partial{v}")
            checksum = Signal(16, name=f"ip_checksum{v}")
            m.d.sync += partial.eq(base + (20 + 8 + size) + ident)
            fold = Signal(17, name=f"ip_fold{v}")
            m.d.comb += fold.eq(partial[:16] + partial[16:])
            m.d.sync += checksum.eq(~(fold[:16] + fold[16])[:16])
            checksums.append(checksum)
        with m.If(accept):
            m.d.sync += [
                ident.eq(ident + 1),
                frame_ident.eq(ident),
                frame_checksum.eq(Array(checksums)[variant_in]),
                variant.eq(variant_in),
            ]

        # Frame bytes per variant, padded to whole beats.
        frames = []
        for v, size in enumerate(self.payload_sizes):
            header = field_bytes(ETHERNET_FIELDS, {
                "dst": config.dst_mac, "src": config.src_mac, "ethertype": _ETHERTYPE_IPV4,
            }) + field_bytes(IPV4_FIELDS, {
                "version_ihl": 0x45, "tos": 0, "total_length": 20 + 8 + size,
                "ident": frame_ident, "flags_fragment": 0, "ttl": config.ttl,
                "protocol": _IPPROTO_UDP, "checksum": frame_checksum,
                "src": config.src_ip, "dst": config.dst_ip,
            }) + field_bytes(UDP_FIELDS, {
                "src_port": config.src_port, "dst_port": config.dst_port,
                "length": 8 + size, "checksum": 0,
            })  # fmt: skip
            if len(payloads[v]) != size:
                raise ValueError(f"variant {v}: {len(payloads[v])} payload bytes, not {size}")
            body = header + list(payloads[v])
            length = max(_MIN_FRAME, len(body))
            body += [Const(0, 8)] * (BEAT_BYTES * self.beats[v] - len(body))
            frames.append((body, length))
        # Beat 0 is the destination MAC and 2 bytes of the source MAC: the configuration only.
        beat0 = frames[0][0][:BEAT_BYTES]

        # The presented beat: beat 0 straight from the configuration, the others registered.
        out_data = Signal(8 * BEAT_BYTES, name="out_data")
        out_keep = Signal(BEAT_BYTES, name="out_keep")
        out_last = Signal(name="out_last")
        at_beat0 = ~active | (index == 0)
        m.d.comb += [
            o.valid.eq(active | accept),
            o.payload.data.eq(Mux(at_beat0, Cat(*beat0), out_data)),
            o.payload.keep.eq(Mux(at_beat0, (1 << BEAT_BYTES) - 1, out_keep)),
            o.payload.first.eq(at_beat0),
            o.payload.last.eq(~at_beat0 & out_last),
            self.first_taken.eq(o.valid & o.ready & at_beat0),
        ]
        advance = o.valid & o.ready
        next_index = Signal.like(index, name="sender_next_index")
        m.d.comb += next_index.eq(Mux(active, index, 0) + 1)
        selected = Mux(active, variant, variant_in)
        with m.If(accept):
            m.d.sync += [active.eq(1), index.eq(0)]
        with m.If(advance):
            with m.If(~at_beat0 & out_last):
                m.d.sync += active.eq(0)
            with m.Else():
                m.d.sync += index.eq(next_index)
                with m.Switch(selected):
                    for v, (body, length) in enumerate(frames):
                        with m.Case(v):
                            with m.Switch(next_index):
                                for k in range(1, self.beats[v]):
                                    with m.Case(k):
                                        lanes = min(BEAT_BYTES, length - BEAT_BYTES * k)
                                        m.d.sync += [
                                            out_data.eq(Cat(*body[8 * k : 8 * k + 8])),
                                            out_keep.eq((1 << lanes) - 1),
                                            out_last.eq(k == self.beats[v] - 1),
                                        ]


class OrderEgress(wiring.Component):
    """Order actions in, OUCH 5.0 frames out (see the module documentation).

    Parameters
    ----------
    symbols:
        Entries of the symbol memory (locates ``0 .. symbols - 1``), 1 .. 65536.

    Attributes
    ----------
    i : In(stream.Signature(order_layout))
    o : Out(stream.Signature(beat_layout))
        Frames, FCS not included.
    directory : In(stream.Signature(directory_layout))
        Symbol of a locate (from ITCH Stock Directory messages).
    config : In(udp_config_layout)
    cycle : In(32)
        The core's free-running cycle counter.
    latency : Out(sample_layout)
    counters : Out(egress_counters_layout)
    """

    def __init__(self, *, symbols: int = 1024):
        if not isinstance(symbols, int) or not 1 <= symbols <= 1 << 16:
            raise ValueError(f"symbols must be an integer in 1 .. 65536, not {symbols!r}")
        self.symbols = symbols
        super().__init__(
            {
                "i": In(stream.Signature(order_layout)),
                "o": Out(stream.Signature(beat_layout)),
                "directory": In(stream.Signature(directory_layout)),
                "config": In(udp_config_layout),
                "cycle": In(32),
                "latency": Out(sample_layout),
                "counters": Out(egress_counters_layout),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        order = self.i.payload
        spaces = int.from_bytes(b" " * 8, "little")

        # Symbol memory, swept to spaces after reset.
        m.submodules.symbols = memory = Memory(shape=64, depth=self.symbols, init=[])
        write = memory.write_port()
        read = memory.read_port(transparent_for=(write,))
        clearing, clear_addr = reset_sweep(m, self.symbols)
        entry = self.directory.payload
        entry_ok = entry.locate < self.symbols
        m.d.comb += self.directory.ready.eq(~clearing)
        m.d.comb += [
            write.addr.eq(Mux(clearing, clear_addr, entry.locate)),
            write.data.eq(Mux(clearing, spaces, entry.stock)),
            write.en.eq(clearing | (self.directory.valid & entry_ok)),
        ]

        # The order, latched when accepted.
        held = Signal(order_layout)
        locate_ok = Signal()
        # The symbol, registered from the memory's read port (cycle 2; it is first needed for
        # beat 6, loaded in cycle 5): keeps the block RAM's output delay off the beat mux.
        symbol = Signal(64)
        m.d.sync += symbol.eq(Mux(locate_ok, read.data, spaces))
        sender = FrameSender([len(self._message(c, held, symbol)) + 3
                              for c in "OUX"])  # fmt: skip
        payloads = []
        for code in "OUX":
            ouch = self._message(code, held, symbol)
            soup = field_bytes(SOUP_FIELDS, {"length": 1 + len(ouch), "packet_type": "U"})
            payloads.append(soup + ouch)
        kind = order.kind.as_value()
        kind_ok = kind != 3
        sender.build(m, self.o, self.config, start=self.i.valid & kind_ok, variant_in=kind,
                     payloads=payloads, hold=clearing)  # fmt: skip
        m.d.comb += [
            self.i.ready.eq(sender.idle & ~clearing),
            read.addr.eq(order.locate),
            read.en.eq(sender.accept),
        ]
        with m.If(sender.accept):
            m.d.sync += [held.eq(order), locate_ok.eq(order.locate < self.symbols)]

        # Latency sample: the cycle beat 0 was taken, less the order's stamp.
        stamp = Mux(sender.idle, order.stamp, held.stamp)
        m.d.sync += [
            self.latency.valid.eq(sender.first_taken),
            self.latency.value.eq(self.cycle - stamp),
        ]

        # Counters.
        counts = self.counters
        with m.If(sender.accept):
            for kind, name in ((OrderKind.ENTER, "enter"), (OrderKind.REPLACE, "replace"),
                               (OrderKind.CANCEL, "cancel")):  # fmt: skip
                with m.If(order.kind == kind):
                    m.d.sync += counts[name].eq(counts[name] + 1)
        with m.If(self.i.valid & self.i.ready & ~kind_ok):
            m.d.sync += counts.bad_kind.eq(counts.bad_kind + 1)
        with m.If(self.directory.valid & self.directory.ready & ~entry_ok):
            m.d.sync += counts.directory_ignored.eq(counts.directory_ignored + 1)
        return m

    @staticmethod
    def _message(code: str, held, symbol) -> list[Value]:
        """The OUCH message bytes of type ``code`` for the latched order ``held``."""
        cl_ord_id = cl_ord_id_bytes(held.stamp)
        price = Cat(held.price, Const(0, 32))
        if code == "O":
            stock = [symbol[8 * k : 8 * k + 8] for k in range(8)]  # wire order
            values = {
                "type": "O", "user_ref_num": held.user_ref,
                "side": Mux(held.side, ord("S"), ord("B")),
                "quantity": held.quantity, "symbol": stock, "price": price,
                "time_in_force": "0", "display": "Y", "capacity": "P",
                "intermarket_sweep": "N", "cross_type": "N", "cl_ord_id": cl_ord_id,
                "appendage_length": 0,
            }  # fmt: skip
        elif code == "U":
            values = {
                "type": "U", "orig_user_ref_num": held.orig_ref, "user_ref_num": held.user_ref,
                "quantity": held.quantity, "price": price, "time_in_force": "0",
                "display": "Y", "intermarket_sweep": "N", "cl_ord_id": cl_ord_id,
                "appendage_length": 0,
            }  # fmt: skip
        else:
            values = {"type": "X", "user_ref_num": held.user_ref, "quantity": 0}
        return field_bytes(OUCH_FIELDS[code], values)
