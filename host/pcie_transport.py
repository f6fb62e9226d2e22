"""The device over PCIe: BAR0 registers, a frame window and two DMA rings in host memory.

:class:`PcieTransport` is a :class:`~.transport.Transport` for a card whose gateware is the
core with its PCIe DMA block (``tick2quote.hdl.pciecore.PcieCore``), so the same
:class:`~.device.Device` code runs over PCIe as over UDP:

=========  ===========================================================================
channel    how it travels
=========  ===========================================================================
``tick``   the H2C ring: one 40-byte record per 64-byte slot, then the ``h2c_tail`` doorbell
``feed``   the frame window: a UDP frame to the feed group and port (MoldUDP64 payload)
``orders`` to the device: the frame window, a UDP frame from the gateway to the order port;
           from the device: the C2H ring (records of kind ``order``)
``tob``    the C2H ring (records of kind ``tob``)
``control`` the frame window (a UDP request from ``host_ip:reply_port``, checked by the
           core's control plane like any other: peer address and session token); the
           response comes back on the C2H ring (kind ``control``)
=========  ===========================================================================

The rings live in one DMA buffer (:class:`DmaMemory`): the H2C ring, then the C2H ring, then
the 4-byte word the card writes its C2H head to after records. Register offsets and record
layouts are those of the gateware's map (``tick2quote.hdl.pciemap``; the tests check this copy
against it).

Backends. The transport reaches the card only through a :class:`PcieBackend`: a
:class:`BarAccess` (32-bit loads and stores of BAR0), a :class:`DmaMemory` (a buffer the card
can reach, with its bus address), a clock and :meth:`PcieBackend.poll`. :class:`SysfsBackend`
is the hardware one; the cocotb testbench (``tests/cocotb/tb_pcie.py``) has one over
cocotbext-pcie's root complex, so this module's own code runs against the simulated card.

Running on hardware (:class:`SysfsBackend`), as root:

- the card's BAR0 is mapped through ``/sys/bus/pci/devices/<bdf>/resource0`` (no driver bound
  to the device; ``echo <bdf> > .../driver/unbind`` if one is);
- the DMA buffer is one 2 MB huge page (physically contiguous): reserve some first
  (``echo 4 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages``, hugetlbfs mounted on
  ``/dev/hugepages``); its physical address comes from ``/proc/self/pagemap``;
- physical addresses are bus addresses only with no IOMMU translation for the device: boot
  with ``iommu=pt`` (or the IOMMU off). With the IOMMU on, use VFIO instead: bind the device
  to ``vfio-pci``, map BAR0 through the VFIO region and map the buffer with
  ``VFIO_IOMMU_MAP_DMA`` at an IOVA of your choice; a backend for that plugs in here
  unchanged (not written yet);
- memory decoding and bus mastering are switched on through the device's config space.
"""

from __future__ import annotations

import abc
import collections
import ctypes
import mmap
import os
import struct
import time
from dataclasses import dataclass

from .protocol import ethernet
from .protocol.fields import Format, uint
from .transport import RECEIVE_CHANNELS, SEND_CHANNELS, Datagram, DeviceTimeout, Transport

__all__ = ["BAR_ID", "BAR_REGISTERS", "FRAME_WINDOW", "FRAME_WINDOW_BYTES", "CONTROL_BITS",
           "STATUS_BITS", "H2C_SLOT", "C2H_SLOT", "RECORD_HEADER", "RECORD_KINDS", "BarAccess",
           "DmaMemory", "BufferMemory", "PcieBackend", "SysfsBackend", "PcieAddresses",
           "PcieTransport"]  # fmt: skip

BAR_ID = 0x54325150
FRAME_WINDOW, FRAME_WINDOW_BYTES = 0x1000, 0x800
CONTROL_BITS = {"h2c_enable": 0, "c2h_enable": 1}
STATUS_BITS = {"frame_busy": 0, "h2c_idle": 1, "h2c_error": 2, "c2h_idle": 3, "kill": 4}
_COUNTERS = ("h2c_reads", "h2c_records", "h2c_errors", "c2h_records", "c2h_dropped",
             "c2h_writebacks", "c2h_overflow", "c2h_too_long", "frames")  # fmt: skip
#: Register name -> byte offset in BAR0.
BAR_REGISTERS = {
    "id": 0x000, "version": 0x004, "control": 0x008, "status": 0x00C, "clear": 0x010,
    "h2c_base_lo": 0x020, "h2c_base_hi": 0x024, "h2c_size_log2": 0x028, "h2c_tail": 0x02C,
    "h2c_head": 0x030, "c2h_base_lo": 0x040, "c2h_base_hi": 0x044, "c2h_size_log2": 0x048,
    "c2h_tail": 0x04C, "c2h_head": 0x050, "c2h_wb_lo": 0x054, "c2h_wb_hi": 0x058,
    "frame_length": 0x060, "order_port": 0x070, "tob_port": 0x074, "reply_port": 0x078,
    **{name: 0x080 + 4 * k for k, name in enumerate(_COUNTERS)},
}  # fmt: skip
#: Bytes of an H2C slot (a 40-byte tick record, then padding) and of a C2H slot.
H2C_SLOT, C2H_SLOT = 64, 128
#: The header at the start of a C2H slot; the payload follows it.
RECORD_HEADER = Format(
    "PcieRecord",
    [uint("kind", 1), uint("flags", 1), uint("length", 2), uint("cycle", 4),
     uint("sequence", 4), uint("reserved", 4)],
    byteorder="little",
)  # fmt: skip
#: Record ``kind`` -> the channel it belongs to.
RECORD_KINDS = {1: "orders", 2: "tob", 3: "control"}
_TICK_SIZE = 40
_WRITEBACK_BYTES = 64
_MASK32 = 0xFFFFFFFF


class BarAccess(abc.ABC):
    """32-bit access to BAR0."""

    @abc.abstractmethod
    def read32(self, offset: int) -> int:
        """The DWORD at byte ``offset``."""

    @abc.abstractmethod
    def write32(self, offset: int, value: int) -> None:
        """Store one DWORD at byte ``offset``."""

    def write_block(self, offset: int, data: bytes) -> None:
        """Store ``data`` (a whole number of DWORDs) from byte ``offset``."""
        for at, (value,) in enumerate(struct.iter_unpack("<I", data)):
            self.write32(offset + 4 * at, value)


class DmaMemory(abc.ABC):
    """A buffer in host memory that the card reaches at :attr:`bus_address`."""

    bus_address: int
    size: int

    @abc.abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``."""

    @abc.abstractmethod
    def write(self, offset: int, data: bytes) -> None:
        """Store ``data`` at ``offset``."""


class BufferMemory(DmaMemory):
    """A :class:`DmaMemory` over a writable buffer (an ``mmap``) at a known bus address."""

    def __init__(self, buffer, bus_address: int):
        self.buffer, self.bus_address, self.size = buffer, bus_address, len(buffer)

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.buffer[offset : offset + length])

    def write(self, offset: int, data: bytes) -> None:
        self.buffer[offset : offset + len(data)] = data


class PcieBackend:
    """What :class:`PcieTransport` needs of a card: :attr:`bar`, :attr:`memory`, a clock.

    Subclasses set :attr:`bar` and :attr:`memory`; the clock and :meth:`poll` default to the
    host's monotonic clock and doing nothing (hardware makes progress on its own)."""

    bar: BarAccess
    memory: DmaMemory
    #: The :attr:`~.transport.Datagram.clock` of arrival times.
    clock_name = "user"

    def now_ns(self) -> int:
        """The clock of timeouts and arrival times, in ns."""
        return time.perf_counter_ns()

    def poll(self) -> None:
        """Called in every wait loop: let the card make progress (a simulation runs here)."""

    def close(self) -> None:
        """Release the mappings."""


class _MmapBar(BarAccess):
    def __init__(self, mapping: mmap.mmap):
        self.mapping = mapping
        self.words = memoryview(mapping).cast("I")

    def read32(self, offset: int) -> int:
        return self.words[offset >> 2]

    def write32(self, offset: int, value: int) -> None:
        self.words[offset >> 2] = value & _MASK32


class SysfsBackend(PcieBackend):
    """The card at PCI address ``bdf`` (``0000:01:00.0``), through sysfs and a huge page
    (see the module documentation for what the machine needs)."""

    def __init__(self, bdf: str, *, hugepage_dir: str = "/dev/hugepages",
                 hugepage_size: int = 2 << 20):  # fmt: skip
        self.root = f"/sys/bus/pci/devices/{bdf}"
        self._enable_device()
        fd = os.open(f"{self.root}/resource0", os.O_RDWR | os.O_SYNC)
        try:
            self._bar_map = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self.bar = _MmapBar(self._bar_map)
        path = f"{hugepage_dir}/tick2quote-{bdf.replace(':', '_')}-{os.getpid()}"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, hugepage_size)
            self._dma_map = mmap.mmap(fd, hugepage_size, mmap.MAP_SHARED)
        finally:
            os.close(fd)
            os.unlink(path)
        self._dma_map[:] = bytes(hugepage_size)  # fault the page in
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._dma_map))
        self.memory = BufferMemory(self._dma_map, _physical_address(address))

    def _enable_device(self) -> None:
        with open(f"{self.root}/enable", "w") as f:
            f.write("1")
        with open(f"{self.root}/config", "r+b") as f:
            f.seek(4)
            command = int.from_bytes(f.read(2), "little")
            f.seek(4)
            f.write((command | 0x6).to_bytes(2, "little"))  # memory space, bus master

    def close(self) -> None:
        self.bar.words.release()
        self._bar_map.close()
        self.memory.buffer = None
        self._dma_map.close()


def _physical_address(virtual: int) -> int:
    """The physical address of a virtual one (``/proc/self/pagemap``, needs CAP_SYS_ADMIN)."""
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(virtual // page * 8)
        entry = int.from_bytes(f.read(8), "little")
    frame = entry & ((1 << 55) - 1)
    if not entry >> 63 or frame == 0:
        raise PermissionError("no physical address in /proc/self/pagemap: run as root")
    return frame * page + virtual % page


@dataclass(frozen=True)
class PcieAddresses:
    """The network identities the transport puts in the frames it writes to the window.

    The device's (``device_ip``, ``device_mac``, ``control_port``, ``order_port``,
    ``tob_port``), the feed's (``feed_group``, ``feed_port``), the gateway's (``gateway_ip``,
    ``gateway_port``: fills come from there), and the host's own: ``host_ip`` must be one of
    the core's peers, and ``reply_port`` is where its control requests come from. The
    defaults are the core's build defaults (``hdl.coremap.CoreConfig``).
    """

    device_ip: str = "192.168.1.2"
    device_mac: int = 0x02_00_00_00_00_02
    control_port: int = 21554
    order_port: int = 15000
    tob_port: int = 26500
    feed_group: str = "233.54.12.111"
    feed_port: int = 26477
    gateway_ip: str = "192.168.1.1"
    gateway_port: int = 15000
    host_ip: str = "10.0.0.1"
    host_mac: int = 0x02_00_00_00_00_01
    reply_port: int = 45000


def _ip(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


class PcieTransport(Transport):
    """A device behind a :class:`PcieBackend` (see the module documentation).

    Parameters
    ----------
    backend:
        The card.
    addresses:
        The identities put in the frames written to the window.
    h2c_slots, c2h_slots:
        Ring sizes (powers of two); both rings and the write-back word must fit the backend's
        DMA memory.
    timeout, retries:
        Default wait per attempt of a control request (seconds of the backend's clock) and
        extra attempts; ``timeout`` also bounds waits for the card (a free H2C slot, the frame
        window).

    Opening the transport stops both rings, clears them and programs them, the write-back
    address and the C2H filter ports (from ``addresses``), then starts them. Records already
    in flight are lost. The filter ports must follow the core's ``order_port`` and
    ``tob_port`` registers: after changing those, write the same values to the BAR registers
    of the same names (:meth:`write_register`).
    """

    def __init__(self, backend: PcieBackend, addresses: PcieAddresses | None = None, *,
                 h2c_slots: int = 1024, c2h_slots: int = 1024, timeout: float = 0.2,
                 retries: int = 2):  # fmt: skip
        super().__init__()
        for name, slots in (("h2c_slots", h2c_slots), ("c2h_slots", c2h_slots)):
            if not isinstance(slots, int) or slots < 2 or slots & (slots - 1):
                raise ValueError(f"{name} must be a power of two of at least 2, not {slots!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        need = h2c_slots * H2C_SLOT + c2h_slots * C2H_SLOT + _WRITEBACK_BYTES
        if backend.memory.size < need:
            raise ValueError(f"the DMA memory holds {backend.memory.size} bytes, not {need}")
        self.backend, self.bar, self.memory = backend, backend.bar, backend.memory
        self.addresses = addresses or PcieAddresses()
        self.timeout, self.retries = timeout, retries
        self.h2c_slots, self.c2h_slots = h2c_slots, c2h_slots
        self._c2h_at = h2c_slots * H2C_SLOT
        self._wb_at = self._c2h_at + c2h_slots * C2H_SLOT
        self._h2c_tail = self._h2c_head = self._c2h_read = 0
        self._queues: dict[str, collections.deque] = {
            name: collections.deque() for name in (*RECEIVE_CHANNELS, "control")
        }
        #: Records whose header did not check out (sequence, length, kind).
        self.bad_records = 0
        self._open()

    # -- registers -------------------------------------------------------------------------------

    def read_register(self, name: str) -> int:
        """A BAR0 register by name."""
        return self.bar.read32(BAR_REGISTERS[name])

    def write_register(self, name: str, value: int) -> None:
        """Write a BAR0 register by name."""
        self.bar.write32(BAR_REGISTERS[name], value)

    def dma_counters(self) -> dict[str, int]:
        """The DMA block's counters (see ``hdl.pciemap.COUNTERS``)."""
        return {name: self.read_register(name) for name in _COUNTERS}

    def _wait_status(self, bit: str, value: int, what: str) -> None:
        deadline = self.backend.now_ns() + int(self.timeout * 1e9)
        while (self.read_register("status") >> STATUS_BITS[bit] & 1) != value:
            if self.backend.now_ns() > deadline:
                raise TimeoutError(f"the card did not get {what} within {self.timeout} s")
            self.backend.poll()

    def _open(self) -> None:
        ident = self.read_register("id")
        if ident != BAR_ID:
            raise OSError(f"BAR0 id is {ident:#010x}, not a tick2quote DMA block ({BAR_ID:#x})")
        self.write_register("control", 0)
        self._wait_status("h2c_idle", 1, "idle")
        self._wait_status("c2h_idle", 1, "idle")
        self.write_register("clear", 0b11)
        self.memory.write(self._wb_at, bytes(4))
        base = self.memory.bus_address
        for prefix, offset, slots in (("h2c", 0, self.h2c_slots),
                                      ("c2h", self._c2h_at, self.c2h_slots)):  # fmt: skip
            self.write_register(f"{prefix}_base_lo", (base + offset) & _MASK32)
            self.write_register(f"{prefix}_base_hi", (base + offset) >> 32)
            self.write_register(f"{prefix}_size_log2", slots.bit_length() - 1)
        self.write_register("c2h_wb_lo", (base + self._wb_at) & _MASK32)
        self.write_register("c2h_wb_hi", (base + self._wb_at) >> 32)
        a = self.addresses
        for name in ("order_port", "tob_port", "reply_port"):
            self.write_register(name, getattr(a, name))
        self.write_register(
            "control", 1 << CONTROL_BITS["h2c_enable"] | 1 << CONTROL_BITS["c2h_enable"]
        )

    # -- to the device ---------------------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        """Send one Ethernet frame (FCS excluded) into the core's receive path."""
        if not 0 < len(frame) <= FRAME_WINDOW_BYTES:
            raise ValueError(f"a frame is 1 .. {FRAME_WINDOW_BYTES} bytes, not {len(frame)}")
        self._wait_status("frame_busy", 0, "the frame window free")
        self.bar.write_block(FRAME_WINDOW, frame + bytes(-len(frame) % 4))
        self.write_register("frame_length", len(frame))

    def _udp(self, src: tuple[str, int], dst: tuple[str, int], dst_mac: bytes, payload) -> bytes:
        return ethernet.encode_udp_frame(
            ethernet.UdpFrame(
                dst_mac=dst_mac,
                src_mac=self.addresses.host_mac.to_bytes(6, "big"),
                src_ip=_ip(src[0]),
                dst_ip=_ip(dst[0]),
                src_port=src[1],
                dst_port=dst[1],
                payload=bytes(payload),
            )  # fmt: skip
        )

    def send_ticks(self, records: bytes) -> None:
        """Put back-to-back 40-byte tick records in the H2C ring and ring the doorbell (waiting
        for room while the ring is full)."""
        if len(records) % _TICK_SIZE:
            raise ValueError(f"{len(records)} bytes is not a whole number of tick records")
        for at in range(0, len(records), _TICK_SIZE):
            if self._h2c_tail - self._h2c_head >= self.h2c_slots:
                self._wait_h2c_room()
            slot = self._h2c_tail % self.h2c_slots
            self.memory.write(slot * H2C_SLOT, records[at : at + _TICK_SIZE])
            self._h2c_tail += 1
        self.write_register("h2c_tail", self._h2c_tail & _MASK32)

    def _wait_h2c_room(self) -> None:
        """Ring the doorbell and wait for the card to free a slot (it takes records at the
        core's pace; :class:`TimeoutError` when it takes none for :attr:`timeout`)."""
        self.write_register("h2c_tail", self._h2c_tail & _MASK32)
        deadline = self.backend.now_ns() + int(self.timeout * 1e9)
        while True:
            head = self._unwrap(self.read_register("h2c_head"), self._h2c_tail)
            if head != self._h2c_head:
                self._h2c_head = head
                deadline = self.backend.now_ns() + int(self.timeout * 1e9)
            if self._h2c_tail - self._h2c_head < self.h2c_slots:
                return
            if self.backend.now_ns() > deadline:
                raise TimeoutError(f"the card took no tick record for {self.timeout} s")
            self.backend.poll()

    @staticmethod
    def _unwrap(value: int, near: int) -> int:
        """The integer closest below ``near`` whose low 32 bits are ``value``."""
        return near - ((near - value) & _MASK32)

    def send(self, channel: str, payload: bytes) -> None:
        if channel not in SEND_CHANNELS:
            raise ValueError(f"send channel must be one of {SEND_CHANNELS}, not {channel!r}")
        a, mac = self.addresses, self.addresses.device_mac.to_bytes(6, "big")
        if channel == "tick":
            self.send_ticks(payload)
        elif channel == "feed":
            group = _ip(a.feed_group)
            group_mac = bytes([0x01, 0x00, 0x5E, group[1] & 0x7F, group[2], group[3]])
            src = (a.host_ip, a.feed_port)
            self.send_frame(self._udp(src, (a.feed_group, a.feed_port), group_mac, payload))
        else:
            src = (a.gateway_ip, a.gateway_port)
            self.send_frame(self._udp(src, (a.device_ip, a.order_port), mac, payload))
        self.counters.sent[channel] += 1

    # -- from the device -------------------------------------------------------------------------

    def _drain(self) -> None:
        """Move every record the card has written into the per-channel queues."""
        head = self._unwrap(int.from_bytes(self.memory.read(self._wb_at, 4), "little"),
                            self._c2h_read + self.c2h_slots)  # fmt: skip
        if head == self._c2h_read:
            return
        now = self.backend.now_ns()
        while self._c2h_read < head:
            at = self._c2h_at + (self._c2h_read % self.c2h_slots) * C2H_SLOT
            slot = self.memory.read(at, C2H_SLOT)
            header = RECORD_HEADER.decode(slot)
            channel = RECORD_KINDS.get(header.kind)
            size = RECORD_HEADER.size
            if (header.sequence != self._c2h_read & _MASK32 or channel is None
                    or header.length > C2H_SLOT - size):  # fmt: skip
                self.bad_records += 1
            else:
                payload = slot[size : size + header.length]
                self._queues[channel].append(
                    Datagram(channel, payload, now, self.backend.clock_name)
                )
            self._c2h_read += 1
        self.write_register("c2h_tail", self._c2h_read & _MASK32)

    def recv(self, channel: str, timeout: float = 0.0) -> Datagram | None:
        if channel not in RECEIVE_CHANNELS:
            raise ValueError(f"receive channel must be one of {RECEIVE_CHANNELS}, not {channel!r}")
        queue = self._queues[channel]
        deadline = self.backend.now_ns() + int(max(timeout, 0.0) * 1e9)
        while True:
            if not queue:
                self._drain()
            if queue:
                self.counters.received[channel] += 1
                return queue.popleft()
            if self.backend.now_ns() >= deadline:
                return None
            self.backend.poll()

    def request(self, payload: bytes, timeout: float | None = None,
                retries: int | None = None) -> bytes:  # fmt: skip
        """Send one control request through the frame window and return the response with
        the same request_id from the C2H ring (see :meth:`.transport.Transport.request`)."""
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        a = self.addresses
        frame = self._udp((a.host_ip, a.reply_port), (a.device_ip, a.control_port),
                          a.device_mac.to_bytes(6, "big"), payload)  # fmt: skip
        request_id = bytes(payload[4:8])
        start = self.backend.now_ns()
        replies = self._queues["control"]
        for attempt in range(retries + 1):
            if attempt:
                self.counters.retries += 1
            self.send_frame(frame)
            self.counters.sent["control"] += 1
            deadline = self.backend.now_ns() + int(timeout * 1e9)
            while self.backend.now_ns() < deadline:
                self._drain()
                while replies:
                    reply = replies.popleft().payload
                    if reply[4:8] == request_id and len(reply) >= 8:
                        self.counters.received["control"] += 1
                        return reply
                    self.counters.stray += 1
                self.backend.poll()
        self.counters.timeouts += 1
        elapsed = (self.backend.now_ns() - start) / 1e9
        raise DeviceTimeout("pcie", a.control_port, elapsed, retries + 1,
                            int.from_bytes(request_id, "big"))  # fmt: skip

    def close(self) -> None:
        if self.backend is None:
            return
        try:
            self.write_register("control", 0)
        finally:
            self.backend.close()
            self.backend = None
