"""The BAR completer: the host's memory reads and writes of a BAR, as a simple register bus.

:class:`BarCompleter` takes completer requests (``cq``) from the UltraScale PCIe hard IP
(:mod:`.pcietlp`) and turns them into register bus cycles, one DWORD at a time:

- a memory write of any length writes its DWORDs at consecutive addresses (two cycles a
  payload beat); byte enables are not looked at: the host writes whole DWORDs;
- a memory read of one or two DWORDs (a 32- or 64-bit load) reads them and answers with a
  successful completion on ``cc``; a longer read gets a completer-abort completion and no
  data (nothing in this BAR is read in bursts);
- any other request is dropped (the device has no I/O BAR and takes no messages).

One request is handled at a time; ``cq`` waits meanwhile, so non-posted requests never need
more than the one credit the IP's ``pcie_cq_np_req`` gives per cycle.

The register bus reads with one cycle of latency: ``r_data`` must hold the DWORD at the
``addr`` of the cycle before in which ``r_en`` was high.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .pcietlp import USER_WIDTHS, CplStatus, ReqType, cc_descriptor, cq_descriptor, tlp_beat_layout

__all__ = ["reg_bus_signature", "BarCompleter"]


def reg_bus_signature(addr_bits: int) -> wiring.Signature:
    """The register bus a :class:`BarCompleter` drives: DWORD ``addr``; ``w_en`` with
    ``w_data``; ``r_en``, answered by ``r_data`` one cycle later."""
    return wiring.Signature(
        {
            "addr": Out(addr_bits),
            "w_en": Out(1),
            "w_data": Out(32),
            "r_en": Out(1),
            "r_data": In(32),
        }
    )


def _leading_zeros(be: Signal):
    """Bytes before the first enabled byte of a 4-bit byte enable (0 for 0)."""
    return Mux(be[0], 0, Mux(be[1], 1, Mux(be[2], 2, Mux(be[3], 3, 0))))


def _trailing_zeros(be: Signal):
    """Bytes after the last enabled byte of a 4-bit byte enable (0 for 0)."""
    return Mux(be[3], 0, Mux(be[2], 1, Mux(be[1], 2, Mux(be[0], 3, 0))))


class BarCompleter(wiring.Component):
    """Serves one BAR of ``2**addr_bits`` DWORDs (see the module documentation).

    Parameters
    ----------
    addr_bits:
        DWORD address bits of the BAR (the BAR is ``4 << addr_bits`` bytes); addresses wrap.

    Attributes
    ----------
    cq : In(stream.Signature(tlp_beat_layout(85)))
        Completer requests.
    cc : Out(stream.Signature(tlp_beat_layout(33)))
        Completions of reads.
    bus : Out(reg_bus_signature(addr_bits))
        The register bus.
    """

    def __init__(self, addr_bits: int = 11):
        if not isinstance(addr_bits, int) or not 2 <= addr_bits <= 20:
            raise ValueError(f"addr_bits must be an integer in 2 .. 20, not {addr_bits!r}")
        self.addr_bits = addr_bits
        super().__init__(
            {
                "cq": In(stream.Signature(tlp_beat_layout(USER_WIDTHS["cq"]))),
                "cc": Out(stream.Signature(tlp_beat_layout(USER_WIDTHS["cc"]))),
                "bus": Out(reg_bus_signature(addr_bits)),
            }
        )

    def elaborate(self, platform) -> Module:  # noqa: PLR0915 - one state machine
        m = Module()
        cq, cc, bus = self.cq, self.cc, self.bus
        beat = cq.payload

        head = Signal(64)  # descriptor DWORDs 0 and 1 (the address)
        desc = Signal(cq_descriptor)
        m.d.comb += desc.eq(Cat(head, beat.data))  # valid while beat 1 is on cq
        first_be, last_be = Signal(4), Signal(4)
        addr = Signal(self.addr_bits)
        lane = Signal()  # the payload DWORD of the current beat being written
        words = Signal(2)  # DWORDs read
        read0, read1 = Signal(32), Signal(32)

        cpl = Signal(cc_descriptor)
        m.d.comb += bus.addr.eq(addr)

        with m.FSM():
            with m.State("HEAD"):
                m.d.comb += cq.ready.eq(1)
                with m.If(cq.valid & ~beat.last):
                    m.d.sync += [
                        head.eq(beat.data),
                        first_be.eq(beat.user[0:4]),
                        last_be.eq(beat.user[4:8]),
                    ]
                    m.next = "DESCRIPTOR"

            with m.State("DESCRIPTOR"):
                m.d.comb += cq.ready.eq(1)
                with m.If(cq.valid):
                    count = desc.dword_count
                    one = count == 1
                    fb, lb = first_be, Mux(one, first_be, last_be)
                    size = Mux(one, 4, 8) - _leading_zeros(fb) - _trailing_zeros(lb)
                    m.d.sync += [
                        addr.eq(desc.address),
                        lane.eq(0),
                        words.eq(0),
                        cpl.lower_address.eq(Cat(_leading_zeros(fb)[:2], desc.address[:5])),
                        cpl.byte_count.eq(Mux(fb == 0, 1, size)),
                        cpl.requester_id.eq(desc.requester_id),
                        cpl.tag.eq(desc.tag),
                        cpl.completer_id.eq(desc.target_function),
                        cpl.tc.eq(desc.tc),
                        cpl.attr.eq(desc.attr),
                        cpl.at.eq(desc.at),
                    ]
                    is_read = desc.req_type == ReqType.MEM_READ
                    is_write = desc.req_type == ReqType.MEM_WRITE
                    with m.If(is_write & ~beat.last):
                        m.next = "WRITE"
                    with m.Elif(is_read & ((count == 1) | (count == 2))):
                        m.d.sync += [cpl.dword_count.eq(count), cpl.status.eq(CplStatus.SC)]
                        m.next = "READ"
                    with m.Elif(is_read):
                        m.d.sync += [cpl.dword_count.eq(0), cpl.status.eq(CplStatus.CA)]
                        m.next = "COMPLETE0"
                    with m.Elif(~beat.last):
                        m.next = "DISCARD"
                    with m.Else():
                        m.next = "HEAD"

            with m.State("WRITE"):
                keep = beat.keep
                second = Mux(lane, 0, keep[1])  # this beat has a DWORD still to write after
                m.d.comb += [
                    bus.w_en.eq(cq.valid & Mux(lane, keep[1], keep[0])),
                    bus.w_data.eq(Mux(lane, beat.data[32:], beat.data[:32])),
                    cq.ready.eq(~second),
                ]
                with m.If(cq.valid):
                    m.d.sync += addr.eq(addr + 1)
                    with m.If(second):
                        m.d.sync += lane.eq(1)
                    with m.Else():
                        m.d.sync += lane.eq(0)
                        with m.If(beat.last):
                            m.next = "HEAD"

            with m.State("READ"):
                # r_en for DWORD ``words`` while fewer than dword_count were asked for; the data
                # of the one asked for in the cycle before lands in read0 / read1
                asking = words < cpl.dword_count
                m.d.comb += bus.r_en.eq(asking)
                with m.If(asking):
                    m.d.sync += [addr.eq(addr + 1), words.eq(words + 1)]
                with m.If(words == 1):
                    m.d.sync += read0.eq(bus.r_data)
                with m.If(words == 2):
                    m.d.sync += read1.eq(bus.r_data)
                with m.If(~asking):
                    m.next = "COMPLETE0"

            with m.State("COMPLETE0"):
                m.d.comb += [
                    cc.valid.eq(1),
                    cc.payload.data.eq(cpl.as_value()[:64]),
                    cc.payload.keep.eq(0b11),
                    cc.payload.user.eq(0),  # no discontinue, no parity
                ]
                with m.If(cc.ready):
                    m.next = "COMPLETE1"

            with m.State("COMPLETE1"):
                has_data = cpl.dword_count != 0
                two = cpl.dword_count == 2
                m.d.comb += [
                    cc.valid.eq(1),
                    cc.payload.data.eq(Cat(cpl.as_value()[64:], Mux(has_data, read0, 0))),
                    cc.payload.keep.eq(Cat(Const(1), has_data)),
                    cc.payload.last.eq(~two),
                ]
                with m.If(cc.ready):
                    with m.If(two):
                        m.next = "COMPLETE2"
                    with m.Else():
                        m.next = "HEAD"

            with m.State("COMPLETE2"):
                m.d.comb += [
                    cc.valid.eq(1),
                    cc.payload.data.eq(read1),
                    cc.payload.keep.eq(0b01),
                    cc.payload.last.eq(1),
                ]
                with m.If(cc.ready):
                    m.next = "HEAD"

            with m.State("DISCARD"):
                m.d.comb += cq.ready.eq(1)
                with m.If(cq.valid & beat.last):
                    m.next = "HEAD"
        return m
