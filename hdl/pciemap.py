"""The register map of the PCIe DMA block's BAR0 (:class:`~.pciedma.PcieDma`).

Plain Python, no Amaranth: the gateware builds its register file from :data:`REGISTERS`, and
the host driver's own copy (:mod:`tick2quote.host.pcie_transport`, which imports nothing from
the gateware) is checked against it in the tests.

BAR0 is :data:`BAR_BYTES` bytes. Every register is 32 bits at a 4-byte aligned offset and is
read and written whole (32- or 64-bit loads; stores of whole DWORDs). ``ro`` registers ignore
writes; ``wo`` registers read as 0.

=================  ====  ==================================================================
register           use
=================  ====  ==================================================================
``id``             ro    :data:`BAR_ID`: this BAR is a tick2quote DMA block
``version``        ro    :data:`VERSION` of this map
``control``        rw    bit 0: fetch tick records (H2C ring); bit 1: write records (C2H ring)
``status``         ro    see :data:`STATUS_BITS`
``clear``          wo    bit 0: H2C head, fetch position and tail to 0; bit 1: C2H head and
                         tail to 0. Each waits until its engine is idle (disable it first)
``h2c_base_*``     rw    bus address of the H2C ring (64-byte aligned), low and high DWORDs
``h2c_size_log2``  rw    the H2C ring has ``2**n`` slots of 64 bytes
``h2c_tail``       rw    doorbell: slots the host has filled (free-running)
``h2c_head``       ro    slots whose records went to the core (free-running)
``c2h_base_*``     rw    bus address of the C2H ring (128-byte aligned)
``c2h_size_log2``  rw    the C2H ring has ``2**n`` slots of 128 bytes
``c2h_tail``       rw    doorbell: slots the host has read (free-running)
``c2h_head``       ro    records written (free-running)
``c2h_wb_*``       rw    where the device writes ``c2h_head`` after records (0: nowhere)
``frame_length``   wo    doorbell: send the first n bytes of the frame window to the core's
                         receive path as one Ethernet frame (1 .. 2048; while ``frame_busy``
                         is clear)
``order_port``     rw    UDP source port of the order frames copied to the C2H ring
``tob_port``       rw    UDP source port of the top-of-book frames copied
``reply_port``     rw    UDP destination port of the control responses copied
counters           ro    see :data:`COUNTERS` (32 bits, wrapping)
=================  ====  ==================================================================

The frame window (:data:`FRAME_WINDOW`, :data:`FRAME_WINDOW_BYTES` bytes, write-only) holds the
frame ``frame_length`` sends, byte ``k`` of the frame at window byte ``k``.
"""

__all__ = [
    "BAR_ID",
    "VERSION",
    "BAR_BYTES",
    "FRAME_WINDOW",
    "FRAME_WINDOW_BYTES",
    "STATUS_BITS",
    "CONTROL_BITS",
    "COUNTERS",
    "REGISTERS",
    "offsets",
]

BAR_ID = 0x54325150
VERSION = 1
BAR_BYTES = 0x2000
FRAME_WINDOW = 0x1000
FRAME_WINDOW_BYTES = 0x800

#: ``control`` bits.
CONTROL_BITS = {"h2c_enable": 0, "c2h_enable": 1}
#: ``status`` bits: the frame window is being sent; the H2C engine is idle (no read in flight,
#: no record held); an H2C read failed since the last clear; the C2H writer is idle; the core's
#: kill switch is set.
STATUS_BITS = {"frame_busy": 0, "h2c_idle": 1, "h2c_error": 2, "c2h_idle": 3, "kill": 4}

#: Counter registers, in address order from 0x080.
COUNTERS = (
    "h2c_reads",  # read requests made
    "h2c_records",  # tick records sent to the core
    "h2c_errors",  # records lost to failed reads
    "c2h_records",  # records written to the ring
    "c2h_dropped",  # records dropped: ring full or disabled
    "c2h_writebacks",  # head write-backs
    "c2h_overflow",  # records lost for room between the clock domains
    "c2h_too_long",  # payloads longer than a slot holds
    "frames",  # frames sent from the frame window
)

#: ``(name, byte offset, access)`` of every register.
REGISTERS: tuple[tuple[str, int, str], ...] = (
    ("id", 0x000, "ro"),
    ("version", 0x004, "ro"),
    ("control", 0x008, "rw"),
    ("status", 0x00C, "ro"),
    ("clear", 0x010, "wo"),
    ("h2c_base_lo", 0x020, "rw"),
    ("h2c_base_hi", 0x024, "rw"),
    ("h2c_size_log2", 0x028, "rw"),
    ("h2c_tail", 0x02C, "rw"),
    ("h2c_head", 0x030, "ro"),
    ("c2h_base_lo", 0x040, "rw"),
    ("c2h_base_hi", 0x044, "rw"),
    ("c2h_size_log2", 0x048, "rw"),
    ("c2h_tail", 0x04C, "rw"),
    ("c2h_head", 0x050, "ro"),
    ("c2h_wb_lo", 0x054, "rw"),
    ("c2h_wb_hi", 0x058, "rw"),
    ("frame_length", 0x060, "wo"),
    ("order_port", 0x070, "rw"),
    ("tob_port", 0x074, "rw"),
    ("reply_port", 0x078, "rw"),
    *((name, 0x080 + 4 * k, "ro") for k, name in enumerate(COUNTERS)),
)


def offsets() -> dict[str, int]:
    """Register name -> byte offset."""
    return {name: offset for name, offset, _ in REGISTERS}
