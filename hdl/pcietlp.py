"""The AXI4-Stream interfaces of the Xilinx UltraScale PCIe hard IP, 64 bits wide.

The hard IP (PG156, "UltraScale Devices Gen3 Integrated Block for PCI Express") talks to the
user logic on four AXI4-Stream interfaces, named from the IP's side:

======  ==========  ========================================================================
name    direction   carries
======  ==========  ========================================================================
``cq``  IP -> user  completer requests: the host's reads and writes of the device's BARs
``cc``  user -> IP  completer completions: the answers to those reads
``rq``  user -> IP  requester requests: the device's DMA reads and writes of host memory
``rc``  IP -> user  requester completions: the data of those DMA reads
======  ==========  ========================================================================

At 64 bits a beat holds two DWORDs (lane 0 = bits 0..31 first); ``tkeep`` has one bit per
DWORD. Every TLP starts with a descriptor (4 DWORDs on ``cq``/``rq``, 3 on ``cc``/``rc``),
then the payload, DWORD-aligned (the IP's "DWORD alignment" mode): on ``cq``/``rq`` payload
DWORD 0 starts beat 2, on ``cc``/``rc`` it sits in lane 1 of beat 1. The descriptor layouts
below are PG156's, bit for bit (the same packing as cocotbext-pcie's ``Tlp_us``); ``tuser``
widths are those of the 64-bit interface. Only the ``tuser`` fields this design drives or
reads are named: byte enables (``first_be``, ``last_be``) on ``cq``/``rq``; parity stays 0
(the IP is configured without parity checking).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "DATA_WIDTH",
    "USER_WIDTHS",
    "ReqType",
    "CplStatus",
    "cq_descriptor",
    "cc_descriptor",
    "rq_descriptor",
    "rc_descriptor",
    "tlp_beat_layout",
    "axis_signature",
    "axis_to_stream",
    "stream_to_axis",
    "PacketMux",
]

#: Width of ``tdata`` on every interface.
DATA_WIDTH = 64
#: ``tuser`` width of each interface at 64 bits.
USER_WIDTHS = {"cq": 85, "cc": 33, "rq": 60, "rc": 75}


class ReqType:
    """Values of the descriptors' ``req_type`` field (memory requests only are used)."""

    MEM_READ = 0b0000
    MEM_WRITE = 0b0001


class CplStatus:
    """Completion status codes."""

    SC = 0b000  # successful completion
    UR = 0b001  # unsupported request
    CA = 0b100  # completer abort


#: Completer request descriptor (``cq`` beats 0 and 1).
cq_descriptor = data.StructLayout(
    {
        "at": 2,
        "address": 62,  # the byte address >> 2
        "dword_count": 11,
        "req_type": 4,
        "_r0": 1,
        "requester_id": 16,
        "tag": 8,
        "target_function": 8,
        "bar_id": 3,
        "bar_aperture": 6,
        "tc": 3,
        "attr": 3,
        "_r1": 1,
    }
)

#: Completer completion descriptor (``cc`` beat 0 and lane 0 of beat 1).
cc_descriptor = data.StructLayout(
    {
        "lower_address": 7,
        "_r0": 1,
        "at": 2,
        "_r1": 6,
        "byte_count": 13,
        "locked_read": 1,
        "_r2": 2,
        "dword_count": 11,
        "status": 3,
        "poisoned": 1,
        "_r3": 1,
        "requester_id": 16,
        "tag": 8,
        "completer_id": 16,
        "completer_id_enable": 1,
        "tc": 3,
        "attr": 3,
        "force_ecrc": 1,
    }
)

#: Requester request descriptor (``rq`` beats 0 and 1).
rq_descriptor = data.StructLayout(
    {
        "at": 2,
        "address": 62,
        "dword_count": 11,
        "req_type": 4,
        "poisoned": 1,
        "requester_id": 16,
        "tag": 8,
        "completer_id": 16,
        "requester_id_enable": 1,
        "tc": 3,
        "attr": 3,
        "force_ecrc": 1,
    }
)

#: Requester completion descriptor (``rc`` beat 0 and lane 0 of beat 1).
rc_descriptor = data.StructLayout(
    {
        "lower_address": 12,
        "error_code": 4,
        "byte_count": 13,
        "locked_read": 1,
        "request_completed": 1,
        "_r0": 1,
        "dword_count": 11,
        "status": 3,
        "poisoned": 1,
        "_r1": 1,
        "requester_id": 16,
        "tag": 8,
        "completer_id": 16,
        "_r2": 1,
        "tc": 3,
        "attr": 3,
        "_r3": 1,
    }
)


def tlp_beat_layout(user_width: int) -> data.StructLayout:
    """One beat of a TLP stream inside the design: ``data`` (two DWORDs), ``keep`` (one bit per
    DWORD), the interface's ``user`` bits and ``last``."""
    return data.StructLayout({"data": DATA_WIDTH, "keep": 2, "user": user_width, "last": 1})


def axis_signature(user_width: int) -> wiring.Signature:
    """An AXI4-Stream interface of the hard IP, seen from its source (``tready`` flows back).

    In a component, ``In(axis_signature(...))`` is an interface the component receives; its
    Verilog ports are ``<name>__tdata``, ``<name>__tkeep``, ``<name>__tlast``, ``<name>__tuser``,
    ``<name>__tvalid`` and ``<name>__tready``.
    """
    return wiring.Signature(
        {
            "tdata": Out(DATA_WIDTH),
            "tkeep": Out(2),
            "tlast": Out(1),
            "tuser": Out(user_width),
            "tvalid": Out(1),
            "tready": In(1),
        }
    )


def axis_to_stream(m: Module, axis, port) -> None:
    """Drive the stream ``port`` (an ``In`` port of a block) from the received ``axis``."""
    m.d.comb += [
        port.valid.eq(axis.tvalid),
        port.payload.data.eq(axis.tdata),
        port.payload.keep.eq(axis.tkeep),
        port.payload.user.eq(axis.tuser),
        port.payload.last.eq(axis.tlast),
        axis.tready.eq(port.ready),
    ]


def stream_to_axis(m: Module, port, axis) -> None:
    """Drive the sent ``axis`` from the stream ``port`` (an ``Out`` port of a block)."""
    m.d.comb += [
        axis.tvalid.eq(port.valid),
        axis.tdata.eq(port.payload.data),
        axis.tkeep.eq(port.payload.keep),
        axis.tuser.eq(port.payload.user),
        axis.tlast.eq(port.payload.last),
        port.ready.eq(axis.tready),
    ]


class PacketMux(wiring.Component):
    """``inputs`` packet streams (index 0 first) onto ``o``, a whole packet at a time.

    Parameters
    ----------
    layout:
        The payload layout; it must have a ``last`` field.
    inputs:
        Number of inputs.

    Attributes
    ----------
    i : array of In(stream.Signature(layout))
    o : Out(stream.Signature(layout))
    """

    def __init__(self, layout: data.StructLayout, inputs: int):
        if not isinstance(inputs, int) or inputs < 1:
            raise ValueError(f"inputs must be a positive integer, not {inputs!r}")
        if "last" not in {name for name, _ in layout}:
            raise ValueError("the layout must have a 'last' field")
        self.inputs = inputs
        super().__init__(
            {
                "i": In(stream.Signature(layout)).array(inputs),
                "o": Out(stream.Signature(layout)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.inputs
        locked = Signal()
        owner = Signal(range(n))
        pick = Signal(range(n))
        for k in reversed(range(n)):
            with m.If(self.i[k].valid):
                m.d.comb += pick.eq(k)
        taken = Signal(range(n))
        m.d.comb += taken.eq(Mux(locked, owner, pick))
        with m.Switch(taken):
            for k in range(n):
                with m.Case(k):
                    m.d.comb += [
                        self.o.valid.eq(self.i[k].valid),
                        self.o.payload.eq(self.i[k].payload),
                        self.i[k].ready.eq(self.o.ready),
                    ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [locked.eq(~self.o.payload.last), owner.eq(taken)]
        return m
