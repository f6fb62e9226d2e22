"""Host-to-card DMA: tick records fetched from a ring in host memory.

The host keeps a ring of ``2**size_log2`` slots of :data:`SLOT_BYTES` bytes at bus address
``base`` (64-byte aligned); each slot holds one 40-byte tick record (:mod:`.tickparser`) and 24
bytes of padding, so every slot is one aligned 64-byte block: a read never splits a record,
and a completion (split by the host at 64- or 128-byte boundaries) always carries whole slots.
The ring is its own descriptor list: the host writes records at its ``tail`` (a free-running
slot count) and writes the new tail to a doorbell register; :class:`TickFetcher` reads slots
``head .. tail - 1`` and advances ``head`` (free-running too) once their records are sent on.
Saving a descriptor fetch per batch saves a PCIe round trip on the tick path.

Reads are memory read requests on ``rq`` of up to ``min(max_slots, max read request)`` slots,
never crossing the ring's end or a 4 KB boundary, with up to ``tags`` of them outstanding.
Completions (``rc``) may come back in any order between requests: each request has its own
region of a reorder buffer, and requests are released in the order they were made, so records
leave on ``o`` in ring order, five full beats each (``first`` on the first, ``last`` on the
fifth). ``o`` may wait; the fetcher then stops asking. A completion with an error (a bad
status, a poisoned or timed-out request) releases its request without sending its records:
they are counted in ``counters.errors`` and :attr:`TickFetcher.error` stays set until cleared.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import beat_layout
from .pcietlp import USER_WIDTHS, ReqType, rc_descriptor, rq_descriptor, tlp_beat_layout

__all__ = ["SLOT_BYTES", "RECORD_BEATS", "fetcher_counters_layout", "TickFetcher"]

#: Bytes of one ring slot.
SLOT_BYTES = 64
#: Beats of one record (40 bytes).
RECORD_BEATS = 5
_SLOT_SHIFT = 6
_MAX_SLOTS = 8  # 512 bytes, the largest read asked for

#: ``reads`` requests made, ``records`` sent on, ``errors`` records lost to completion errors.
fetcher_counters_layout = data.StructLayout({"reads": 32, "records": 32, "errors": 32})


def _clip(value, limit: int):
    return Mux(value > limit, limit, value)


def _min(a, b):
    return Mux(a < b, a, b)


class TickFetcher(wiring.Component):
    """Fetches tick records from the host's ring (see the module documentation).

    Parameters
    ----------
    tags:
        Read requests outstanding at most (1, 2, 4 or 8); tags ``0 .. tags - 1`` are used.
    max_slots:
        Slots per read request at most (1 .. 8), further limited by ``max_read_req``.

    Attributes
    ----------
    rq : Out(stream.Signature(tlp_beat_layout(60)))
        Memory read requests.
    rc : In(stream.Signature(tlp_beat_layout(75)))
        Their completions (always ready).
    o : Out(stream.Signature(beat_layout))
        The records, in ring order.
    enable : In(1)
        Make new requests (requests in flight complete either way).
    base : In(64)
        Bus address of slot 0.
    size_log2 : In(5)
        The ring has ``2**size_log2`` slots (0 .. 20).
    tail : In(32)
        The host's tail: slots written so far.
    clear : In(1)
        Set ``head`` and the fetch position to 0 and clear :attr:`error`; ignored unless
        :attr:`idle`.
    max_read_req : In(3)
        The link's maximum read request size (``cfg_max_read_req``: ``128 << value`` bytes).
    head : Out(32)
        Slots whose records were sent on.
    idle : Out(1)
        No request outstanding and no record buffered.
    error : Out(1)
        A completion failed since the last ``clear``.
    counters : Out(fetcher_counters_layout)
    """

    def __init__(self, tags: int = 4, max_slots: int = _MAX_SLOTS):
        if tags not in (1, 2, 4, 8):
            raise ValueError(f"tags must be 1, 2, 4 or 8, not {tags!r}")
        if not isinstance(max_slots, int) or not 1 <= max_slots <= _MAX_SLOTS:
            raise ValueError(
                f"max_slots must be an integer in 1 .. {_MAX_SLOTS}, not {max_slots!r}"
            )
        self.tags, self.max_slots = tags, max_slots
        super().__init__(
            {
                "rq": Out(stream.Signature(tlp_beat_layout(USER_WIDTHS["rq"]))),
                "rc": In(stream.Signature(tlp_beat_layout(USER_WIDTHS["rc"]))),
                "o": Out(stream.Signature(beat_layout)),
                "enable": In(1),
                "base": In(64),
                "size_log2": In(5),
                "tail": In(32),
                "clear": In(1),
                "max_read_req": In(3),
                "head": Out(32),
                "idle": Out(1),
                "error": Out(1),
                "counters": Out(fetcher_counters_layout),
            }
        )

    def elaborate(self, platform) -> Module:  # noqa: PLR0915 - three small engines
        m = Module()
        tags, tbits = self.tags, (self.tags - 1).bit_length()
        count_bits = tbits + 1
        m.submodules.buffer = buffer = Memory(shape=64, depth=tags * 64, init=[])
        wp = buffer.write_port()
        rp = buffer.read_port()

        # per request: slots asked for, address bits 11..6, completed, failed
        t_slots = Array(Signal(4, name=f"t{k}_slots") for k in range(tags))
        t_block = Array(Signal(6, name=f"t{k}_block") for k in range(tags))
        t_done = Array(Signal(name=f"t{k}_done") for k in range(tags))
        t_err = Array(Signal(name=f"t{k}_err") for k in range(tags))

        issued, released = Signal(count_bits), Signal(count_bits)
        outstanding = Signal(count_bits)
        m.d.comb += outstanding.eq(issued - released)
        fetch, head = Signal(32), Signal(32)
        counters = self.counters
        m.d.comb += self.head.eq(head)

        # ---------------------------------------------------------------- requests
        mask = Signal(32)
        m.d.comb += mask.eq((Const(1, 33) << self.size_log2) - 1)
        slot = Signal(32)
        address = Signal(64)
        m.d.comb += [slot.eq(fetch & mask), address.eq(self.base + (slot << _SLOT_SHIFT))]
        pending = Signal(32)
        m.d.comb += pending.eq(self.tail - fetch)
        to_end = _clip(mask - slot + 1, 8)
        to_4k = 64 - address[_SLOT_SHIFT:12]
        mrrs = Mux(self.max_read_req == 0, 2, Mux(self.max_read_req == 1, 4, 8))
        count = Signal(4)
        m.d.comb += count.eq(
            _min(_min(_clip(pending, 8), to_end), _min(_clip(to_4k, 8), _min(mrrs, self.max_slots)))
        )
        req_addr, req_slots = Signal(64), Signal(4)
        req_tag = Signal(max(tbits, 1))
        desc = Signal(rq_descriptor)
        m.d.comb += [
            desc.address.eq(req_addr[2:]),
            desc.dword_count.eq(req_slots << (_SLOT_SHIFT - 2)),
            desc.req_type.eq(ReqType.MEM_READ),
            desc.tag.eq(req_tag),
        ]
        sending = Signal()
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.enable & (outstanding < tags) & (pending != 0)):
                    m.d.sync += [
                        req_addr.eq(address),
                        req_slots.eq(count),
                        req_tag.eq(issued[:tbits] if tbits else 0),
                    ]
                    m.next = "ADDRESS"
            with m.State("ADDRESS"):
                m.d.comb += [
                    sending.eq(1),
                    self.rq.valid.eq(1),
                    self.rq.payload.data.eq(desc.as_value()[:64]),
                    self.rq.payload.keep.eq(0b11),
                    self.rq.payload.user.eq(0xFF),  # first_be, last_be: all bytes
                ]
                with m.If(self.rq.ready):
                    m.next = "DESCRIPTOR"
            with m.State("DESCRIPTOR"):
                m.d.comb += [
                    sending.eq(1),
                    self.rq.valid.eq(1),
                    self.rq.payload.data.eq(desc.as_value()[64:]),
                    self.rq.payload.keep.eq(0b11),
                    self.rq.payload.last.eq(1),
                ]
                with m.If(self.rq.ready):
                    m.d.sync += [
                        t_slots[req_tag].eq(req_slots),
                        t_block[req_tag].eq(req_addr[_SLOT_SHIFT:12]),
                        t_done[req_tag].eq(0),
                        t_err[req_tag].eq(0),
                        fetch.eq(fetch + req_slots),
                        issued.eq(issued + 1),
                        counters.reads.eq(counters.reads + 1),
                    ]
                    m.next = "IDLE"

        # ---------------------------------------------------------------- completions
        rc = self.rc
        beat = rc.payload
        m.d.comb += rc.ready.eq(1)
        cpl = Signal(rc_descriptor)
        m.d.comb += cpl.eq(beat.data)  # descriptor DWORDs 0 and 1, on beat 0
        stage = Signal(2)  # 0: beat 0, 1: beat 1, 2: payload beats
        lower = Signal(12)
        failed, completed = Signal(), Signal()
        c_tag = Signal(max(tbits, 1))
        low_half = Signal(32)  # lane 1 of the beat before: the low DWORD of the next word
        offset = Signal(9)  # byte offset in the request of the next word
        tag_now = Mux(stage == 1, beat.data[: max(tbits, 1)], c_tag)
        with m.If(rc.valid):
            m.d.sync += low_half.eq(beat.data[32:])
            with m.If(stage == 0):
                m.d.sync += [
                    lower.eq(cpl.lower_address),
                    failed.eq((cpl.error_code != 0) | (cpl.status != 0) | cpl.poisoned),
                    completed.eq(cpl.request_completed),
                ]
            with m.If(stage == 1):
                block = Cat(Const(0, _SLOT_SHIFT), t_block[tag_now])
                m.d.sync += [c_tag.eq(tag_now), offset.eq(lower - block)]
            with m.If(stage == 2):
                m.d.sync += offset.eq(offset + 8)
            lane = offset[3:6]
            m.d.comb += [
                wp.addr.eq(Cat(lane, offset[6:9], c_tag)),
                wp.data.eq(Cat(low_half, beat.data[:32])),
                wp.en.eq((stage == 2) & beat.keep[0] & (lane < RECORD_BEATS)),
            ]
            with m.If(beat.last):
                m.d.sync += stage.eq(0)
                with m.If(stage != 0):
                    with m.If(completed | failed):
                        m.d.sync += t_done[tag_now].eq(1)
                    with m.If(failed):
                        m.d.sync += t_err[tag_now].eq(1)
            with m.Elif(stage != 2):
                m.d.sync += stage.eq(stage + 1)

        # ---------------------------------------------------------------- release in order
        r_tag = Signal(max(tbits, 1))
        m.d.comb += r_tag.eq(released[:tbits] if tbits else 0)
        ready_tag = (outstanding != 0) & t_done[r_tag]
        r_slot, r_lane = Signal(4), Signal(3)
        first, last = Signal(), Signal()
        o = self.o
        advance = ~o.valid | o.ready
        m.d.comb += [
            rp.en.eq(advance),
            rp.addr.eq(Cat(r_lane, r_slot[:3], r_tag)),
            o.payload.data.eq(rp.data),
            o.payload.keep.eq(0xFF),
            o.payload.first.eq(first),
            o.payload.last.eq(last),
        ]
        release = Signal()
        streaming = ready_tag & ~t_err[r_tag]
        with m.If(advance):
            m.d.sync += [o.valid.eq(streaming), first.eq(r_lane == 0), last.eq(r_lane == 4)]
            with m.If(streaming):
                with m.If(r_lane == RECORD_BEATS - 1):
                    m.d.sync += [r_lane.eq(0), r_slot.eq(r_slot + 1)]
                    with m.If(r_slot == t_slots[r_tag] - 1):
                        m.d.comb += release.eq(1)
                        m.d.sync += r_slot.eq(0)
                with m.Else():
                    m.d.sync += r_lane.eq(r_lane + 1)
        with m.If(ready_tag & t_err[r_tag]):
            m.d.comb += release.eq(1)
            m.d.sync += [
                counters.errors.eq(counters.errors + t_slots[r_tag]),
                self.error.eq(1),
            ]
        with m.If(release):
            m.d.sync += [
                released.eq(released + 1),
                head.eq(head + t_slots[r_tag]),
                t_done[r_tag].eq(0),
            ]
        with m.If(o.valid & o.ready & o.payload.last):
            m.d.sync += counters.records.eq(counters.records + 1)

        m.d.comb += self.idle.eq((outstanding == 0) & ~sending & ~o.valid)
        with m.If(self.clear & self.idle):
            m.d.sync += [fetch.eq(0), head.eq(0), self.error.eq(0)]
        return m
