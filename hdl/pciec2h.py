"""Card-to-host DMA: the frames the core sends, as records in a ring in host memory.

Two halves, one on each side of a clock-domain crossing:

- :class:`TxTap` (core clock) watches the core's transmit stream without ever holding it up.
  Of each IPv4/UDP frame (no IP options) it keeps the UDP payload when the frame is an order
  (UDP source port ``order_port``), a top-of-book record (source port ``tob_port``) or a
  control response to the host (destination port ``reply_port``), as 64-bit words, and then
  one header (kind, payload length, the core cycle of the frame's first beat, word count). A
  payload longer than :data:`MAX_PAYLOAD` is not kept (``too_long``); nor is one that finds no
  room for a whole record in the crossing (``overflow``): the decision is made at the beat
  holding the UDP header, so a record is always whole.
- :class:`RecordWriter` (PCIe clock) writes each record into the next slot of the host's ring
  with one memory write request: ``2**size_log2`` slots of :data:`RECORD_BYTES` bytes at bus
  address ``base`` (128-byte aligned), slot ``head % size``. A slot starts with the 16-byte
  header of :data:`record_header_layout` (little-endian) and holds the payload from byte 16. The
  host owns slots from its ``tail`` (a free-running count of slots it has read, written to a
  doorbell register) up to ``head``; a record finding the ring full (``head - tail == size``)
  or the ring disabled is dropped and counted. A record is written only once all of its
  words have crossed (a request then never waits for data between its beats), so the header goes
  after the words and the record path is store-and-forward. After a record, when no other
  record is waiting (or every :data:`WRITEBACK_EVERY` records), the writer writes ``head`` (32
  bits) to the host address ``writeback`` (unless 0): posted writes stay in order, so a
  record is in host memory before the head that covers it.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import beat_layout
from .pcietlp import USER_WIDTHS, ReqType, rq_descriptor, tlp_beat_layout

__all__ = [
    "RECORD_BYTES",
    "HEADER_BYTES",
    "MAX_PAYLOAD",
    "WRITEBACK_EVERY",
    "RecordKind",
    "record_header_layout",
    "tap_header_layout",
    "word_layout",
    "TxTap",
    "RecordWriter",
]

#: Bytes of one ring slot.
RECORD_BYTES = 128
#: Bytes of the record header.
HEADER_BYTES = 16
#: The longest payload kept.
MAX_PAYLOAD = RECORD_BYTES - HEADER_BYTES
#: The head is written back at least every this many records.
WRITEBACK_EVERY = 8
_SLOT_SHIFT = 7
_UDP_PAYLOAD = 42  # Ethernet 14 + IPv4 20 + UDP 8


class RecordKind:
    """The ``kind`` of a record."""

    ORDER = 1
    TOB = 2
    CONTROL = 3


#: The record header at the start of a slot: ``kind``; ``flags`` (0); ``length``: payload
#: bytes; ``cycle``: the core cycle the frame's first beat was sent; ``sequence``: the slot's
#: free-running index (the value of ``head`` before the record).
record_header_layout = data.StructLayout(
    {"kind": 8, "flags": 8, "length": 16, "cycle": 32, "sequence": 32, "reserved": 32}
)
#: A record's header as it crosses the clock domains.
tap_header_layout = data.StructLayout({"kind": 2, "length": 16, "cycle": 32, "words": 4})
#: One payload word.
word_layout = data.StructLayout({"data": 64})
#: ``overflow``: records lost for room in the crossing; ``too_long``: payloads too long.
tap_counters_layout = data.StructLayout({"overflow": 32, "too_long": 32})
#: ``records`` written, ``dropped`` (ring full or disabled), ``writebacks`` of the head.
writer_counters_layout = data.StructLayout({"records": 32, "dropped": 32, "writebacks": 32})


def _byte(value, lane: int):
    return value[8 * lane : 8 * lane + 8]


def _be16(value, lane: int):
    """The big-endian 16-bit field in lanes ``lane`` and ``lane + 1``."""
    return Cat(_byte(value, lane + 1), _byte(value, lane))


class TxTap(wiring.Component):
    """Turns the core's transmitted frames into records (see the module documentation).

    Attributes
    ----------
    beat : In(beat_layout)
        The beat on the transmit stream.
    take : In(1)
        The beat is taken this cycle (``valid & ready``).
    cycle : In(32)
        The core's cycle counter.
    order_port, tob_port, reply_port : In(16)
        Which frames to keep.
    room : In(1)
        Both outputs have room for a whole record (:data:`MAX_PAYLOAD` / 8 words and a header).
    words : Out(stream.Signature(word_layout))
        Payload words (``ready`` is not waited for: ``room`` guarantees it).
    headers : Out(stream.Signature(tap_header_layout))
        One per record, after its last word.
    counters : Out(tap_counters_layout)
    """

    def __init__(self):
        super().__init__(
            {
                "beat": In(beat_layout),
                "take": In(1),
                "cycle": In(32),
                "order_port": In(16),
                "tob_port": In(16),
                "reply_port": In(16),
                "room": In(1),
                "words": Out(stream.Signature(word_layout)),
                "headers": Out(stream.Signature(tap_header_layout)),
                "counters": Out(tap_counters_layout),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        beat, data_ = self.beat, self.beat.data
        index = Signal(range(8))  # beat of the frame, saturating at 7
        ipv4_udp = Signal()
        start = Signal(32)
        kind = Signal(2)
        length = Signal(16)
        wanted = Signal(4)  # words of the payload
        sent = Signal(4)  # words written so far
        prev = Signal(64)
        counters = self.counters

        udp_length = _be16(data_, 6)
        payload = Signal(17)
        m.d.comb += payload.eq(udp_length - 8)
        frame_kind = Mux(
            _be16(data_, 2) == self.order_port,
            RecordKind.ORDER,
            Mux(
                _be16(data_, 2) == self.tob_port,
                RecordKind.TOB,
                Mux(_be16(data_, 4) == self.reply_port, RecordKind.CONTROL, 0),
            ),
        )
        word_now = Signal()
        with m.If(self.take):
            m.d.sync += [prev.eq(data_), index.eq(Mux(beat.last, 0, Mux(index == 7, 7, index + 1)))]
            with m.Switch(index):
                with m.Case(0):
                    m.d.sync += [start.eq(self.cycle), kind.eq(0), sent.eq(0)]
                with m.Case(1):
                    ethertype_ok = _be16(data_, 4) == 0x0800
                    m.d.sync += ipv4_udp.eq(ethertype_ok & (_byte(data_, 6) == 0x45))
                with m.Case(2):
                    m.d.sync += ipv4_udp.eq(ipv4_udp & (_byte(data_, 7) == 17))
                with m.Case(4):
                    with m.If(ipv4_udp & (frame_kind != 0) & (udp_length >= 8)):
                        with m.If(payload > MAX_PAYLOAD):
                            m.d.sync += counters.too_long.eq(counters.too_long + 1)
                        with m.Elif(~self.room):
                            m.d.sync += counters.overflow.eq(counters.overflow + 1)
                        with m.Else():
                            m.d.sync += [
                                kind.eq(frame_kind),
                                length.eq(payload),
                                wanted.eq((payload + 7) >> 3),
                            ]
            m.d.comb += word_now.eq((kind != 0) & (index >= 6) & (sent < wanted))
            with m.If(word_now):
                m.d.sync += sent.eq(sent + 1)

        # a payload ending in the last beat's lanes 2..7 leaves one word for the next cycle
        flush, flush_word = Signal(), Signal(64)
        header = Signal(tap_header_layout)
        m.d.comb += [header.kind.eq(kind), header.length.eq(length), header.cycle.eq(start)]
        words, headers = self.words, self.headers
        done = self.take & beat.last & (kind != 0)
        short = (sent + word_now) < wanted
        m.d.sync += [flush.eq(done & short), headers.valid.eq(0)]
        with m.If(done):
            m.d.sync += [
                flush_word.eq(data_[16:]),
                headers.payload.eq(header),
                headers.payload.words.eq(sent + word_now + short),
                kind.eq(0),
                headers.valid.eq(~short),
            ]
        with m.If(flush):
            m.d.sync += headers.valid.eq(1)
        m.d.comb += [
            words.valid.eq(word_now | flush),
            words.payload.data.eq(Mux(flush, flush_word, Cat(prev[16:], data_[:16]))),
        ]
        return m


class RecordWriter(wiring.Component):
    """Writes records into the host's ring (see the module documentation).

    Attributes
    ----------
    headers : In(stream.Signature(tap_header_layout))
        Record headers, each after its words.
    words : In(stream.Signature(word_layout))
        Payload words.
    words_level : In(8)
        Words available on ``words`` (a record starts only once all of its words are).
    rq : Out(stream.Signature(tlp_beat_layout(60)))
        Memory write requests.
    enable : In(1)
        Write records (else drop them).
    base : In(64)
        Bus address of slot 0.
    size_log2 : In(5)
        The ring has ``2**size_log2`` slots.
    tail : In(32)
        Slots the host has read.
    writeback : In(64)
        Where ``head`` is written (0: nowhere).
    clear : In(1)
        Set ``head`` to 0; done at once when :attr:`idle`, else ignored.
    head : Out(32)
        Records written.
    idle : Out(1)
        No record or write-back is being sent.
    counters : Out(writer_counters_layout)
    """

    def __init__(self):
        super().__init__(
            {
                "headers": In(stream.Signature(tap_header_layout)),
                "words": In(stream.Signature(word_layout)),
                "words_level": In(8),
                "rq": Out(stream.Signature(tlp_beat_layout(USER_WIDTHS["rq"]))),
                "enable": In(1),
                "base": In(64),
                "size_log2": In(5),
                "tail": In(32),
                "writeback": In(64),
                "clear": In(1),
                "head": Out(32),
                "idle": Out(1),
                "counters": Out(writer_counters_layout),
            }
        )

    def elaborate(self, platform) -> Module:  # noqa: PLR0915 - one state machine
        m = Module()
        rq, counters = self.rq, self.counters
        hdr = self.headers.payload
        head = Signal(32)
        m.d.comb += self.head.eq(head)
        mask = Signal(32)
        m.d.comb += mask.eq((Const(1, 33) << self.size_log2) - 1)
        used = Signal(32)
        m.d.comb += used.eq(head - self.tail)
        left = Signal(4)  # words still to send or drop
        due = Signal()  # the head changed since it was last written back
        since = Signal(range(WRITEBACK_EVERY + 1))  # records since the last write-back

        # both descriptors are assigned whole, outside the state machine: a signal driven
        # partly from a process and partly by constants becomes constant ``always @*`` blocks
        # in the Verilog, which Verilator never evaluates
        address = Signal(64)
        desc, wb_desc = Signal(rq_descriptor), Signal(rq_descriptor)
        for d, dwords in ((desc, (hdr.words + 2) << 1), (wb_desc, 1)):
            m.d.comb += [
                d.address.eq(address[2:]),
                d.dword_count.eq(dwords),
                d.req_type.eq(ReqType.MEM_WRITE),
            ]
        record = Signal(record_header_layout)
        m.d.comb += [
            record.kind.eq(hdr.kind),
            record.length.eq(hdr.length),
            record.cycle.eq(hdr.cycle),
            record.sequence.eq(head),
        ]
        whole = self.headers.valid & (self.words_level >= hdr.words)
        write_back = due & (self.writeback != 0) & (~whole | (since >= WRITEBACK_EVERY))

        def send(payload, keep=0b11, last=0, user=0):
            m.d.comb += [
                rq.valid.eq(1),
                rq.payload.data.eq(payload),
                rq.payload.keep.eq(keep),
                rq.payload.last.eq(last),
                rq.payload.user.eq(user),
            ]

        finish = Signal()  # the last beat of a record is taken
        with m.If(finish):
            m.d.comb += self.headers.ready.eq(1)
            m.d.sync += [
                head.eq(head + 1),
                counters.records.eq(counters.records + 1),
                due.eq(1),
                since.eq(Mux(since == WRITEBACK_EVERY, since, since + 1)),
            ]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.idle.eq(1)
                with m.If(self.clear):
                    m.d.sync += [head.eq(0), due.eq(0), since.eq(0)]
                with m.Elif(write_back):
                    m.d.sync += address.eq(self.writeback)
                    m.next = "WB_ADDRESS"
                with m.Elif(whole):
                    m.d.sync += left.eq(hdr.words)
                    with m.If(self.enable & (used <= mask)):
                        m.d.sync += address.eq(self.base + ((head & mask) << _SLOT_SHIFT))
                        m.next = "ADDRESS"
                    with m.Else():
                        m.next = "DROP"

            with m.State("ADDRESS"):
                send(desc.as_value()[:64], user=0xFF)
                with m.If(rq.ready):
                    m.next = "DESCRIPTOR"
            with m.State("DESCRIPTOR"):
                send(desc.as_value()[64:])
                with m.If(rq.ready):
                    m.next = "HEADER0"
            with m.State("HEADER0"):
                send(record.as_value()[:64])
                with m.If(rq.ready):
                    m.next = "HEADER1"
            with m.State("HEADER1"):
                send(record.as_value()[64:], last=left == 0)
                with m.If(rq.ready):
                    with m.If(left == 0):
                        m.d.comb += finish.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                send(self.words.payload.data, last=left == 1)
                m.d.comb += self.words.ready.eq(rq.ready)
                with m.If(rq.ready):
                    m.d.sync += left.eq(left - 1)
                    with m.If(left == 1):
                        m.d.comb += finish.eq(1)
                        m.next = "IDLE"
            with m.State("DROP"):
                m.d.comb += self.words.ready.eq(left != 0)
                with m.If(left != 0):
                    m.d.sync += left.eq(left - 1)
                with m.Else():
                    m.d.comb += self.headers.ready.eq(1)
                    m.d.sync += counters.dropped.eq(counters.dropped + 1)
                    m.next = "IDLE"

            with m.State("WB_ADDRESS"):
                send(wb_desc.as_value()[:64], user=0x0F)
                with m.If(rq.ready):
                    m.next = "WB_DESCRIPTOR"
            with m.State("WB_DESCRIPTOR"):
                send(wb_desc.as_value()[64:])
                with m.If(rq.ready):
                    m.next = "WB_DATA"
            with m.State("WB_DATA"):
                send(head, keep=0b01, last=1)
                with m.If(rq.ready):
                    m.d.sync += [
                        due.eq(0),
                        since.eq(0),
                        counters.writebacks.eq(counters.writebacks + 1),
                    ]
                    m.next = "IDLE"
        return m
