"""cocotb testbench: the 1 GbE block (MAC + crossings, one clock) against cocotbext-eth's GMII
models, which frame, pad and compute the FCS independently of our MAC."""

import random

import cocotb
from cocotb.triggers import RisingEdge
from cocotbext.eth import GmiiFrame, GmiiSink, GmiiSource
from tick2quote.hdl.layouts import beat_layout
from tick2quote.sim.cocotb_streams import TB, StreamSink, StreamSource
from tick2quote.sim.harness import params_from_env
from tick2quote.sim.streams import beats_bytes, packet_beats, pause_pattern

PARAMS = params_from_env()


class MacTB(TB):
    """Clock, reset, GMII models on both sides and stream models on the core side."""

    def __init__(self, dut, pause: str = "none"):
        super().__init__(dut, period_ns=8.0)
        self.gmii_in = GmiiSource(dut.rxd, dut.rx_er, dut.rx_dv, dut.clk, dut.rst)
        self.gmii_out = GmiiSink(dut.txd, dut.tx_er, dut.tx_en, dut.clk, dut.rst)
        self.rx = StreamSink(dut, "rx", beat_layout, dut.clk, pause_pattern("none"))
        self.tx = StreamSource(dut, "tx", beat_layout, dut.clk, pause_pattern(pause, seed=7))
        self.gaps: list[int] = []
        cocotb.start_soon(self._watch_gaps())

    async def _watch_gaps(self) -> None:
        idle, seen = 0, False
        while True:
            await RisingEdge(self.clock)
            if self.dut.tx_en.value:
                if seen and idle:
                    self.gaps.append(idle)
                seen, idle = True, 0
            else:
                idle += 1

    async def receive_frame(self) -> bytes:
        beats = []
        while True:
            beat = await self.rx.recv()
            assert bool(beat["first"]) == (not beats)
            beats.append((beat["data"], beat["keep"]))
            if beat["last"]:
                return beats_bytes(beats)


@cocotb.test()
@cocotb.parametrize(size=[60, 61, 64, 65, 200, 1500])
async def rx_good_and_bad_frames(dut, size):
    """Good frames arrive whole without FCS; bad FCS and PHY-error frames never arrive."""
    tb = MacTB(dut)
    await tb.reset()
    rng = random.Random(PARAMS.get("seed", 1) * 1000 + size)
    expected = []
    for index in range(6):
        payload = rng.randbytes(size)
        kind = index % 3
        if kind == 0:
            frame = GmiiFrame.from_payload(payload)
            expected.append(payload)
        elif kind == 1:  # wrong FCS: the raw payload ends in four bytes that are not its CRC
            frame = GmiiFrame.from_raw_payload(payload + bytes(4))
        else:  # the PHY flags an error in the middle of the frame
            frame = GmiiFrame.from_payload(payload)
            frame.error = [0] * len(frame.data)
            frame.error[len(frame.data) // 2] = 1
        await tb.gmii_in.send(frame)
    received = [await tb.receive_frame() for _ in expected]
    await tb.cycles(size * 3 + 200)
    assert received == expected
    assert tb.rx.empty()


@cocotb.test()
@cocotb.parametrize(pause=["none", "random_60"], size=[1, 8, 59, 60, 61, 300])
async def tx_frames_padded_with_fcs(dut, pause, size):
    """Frames from the core leave framed, padded to 60 bytes, with a good FCS and >= 12 idle
    byte times between them."""
    tb = MacTB(dut, pause)
    await tb.reset()
    rng = random.Random(PARAMS.get("seed", 1) * 7 + size)
    frames = [rng.randbytes(size) for _ in range(4)]
    for data in frames:
        for beat in packet_beats(data):
            tb.tx.send(beat)
    for data in frames:
        frame = await tb.gmii_out.recv()
        assert frame.check_fcs()
        assert frame.error is None or not any(frame.error)
        assert frame.get_payload() == data + bytes(max(0, 60 - len(data)))
    await tb.cycles(30)
    assert tb.gmii_out.empty()
    assert len(tb.gaps) == len(frames) - 1
    assert min(tb.gaps) >= 12
