"""Figures of the PCIe path: DMA round-trip latency and sustained tick-record rate, simulated.

Runs the ``bench`` test of tests/cocotb/tb_pcie.py on Verilator: the core with its PCIe DMA
block (``hdl.pciecore.PcieCore``) under cocotbext-pcie's root complex and UltraScale PCIe hard
IP model (Gen3 x2, 64-bit interfaces at 250 MHz; the core at 156.25 MHz), driven by the host
driver ``host.pcie_transport.PcieTransport``. Two figures:

- **round trip**: one tick record at a time, the card idle in between. From the moment the
  host writes the ``h2c_tail`` doorbell (the record is already in the H2C ring) to the moment
  the C2H record of the order it caused lands in host memory (the root complex's memory model
  stamps each write). Only records that made an order count. The stages come from the TLPs
  seen on the hard IP's interfaces and the frames on the core's ``tx``;
- **sustained rate**: a burst of records written to the ring at once and one doorbell; records
  per second of simulated time until the card's ``h2c_head`` (read over the BAR) covers them
  all, the host reading the C2H ring meanwhile.

Times are simulated nanoseconds; cycles are given at both clocks. The PCIe link itself is the
model's (its latencies are not a given board's).

Usage: ``python -m tick2quote.sim.bench_pcie [--messages N] [--records N] [--burst N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from ..hdl import pciemap
from ..hdl.coremap import CoreConfig
from ..hdl.layouts import beat_layout
from ..hdl.pciecore import PcieCore
from .bench_core import BUSY, core_params
from .corescenario import small_config
from .harness import REPO_ROOT, run_cocotb
from .models.pricing import QuoteParams
from .streams import unpack

__all__ = ["STAGES", "Tracer", "run", "report", "main"]


class Tracer:
    """Times (ns) of the TLPs crossing the hard IP's interfaces and of the frames on ``tx``:
    ``doorbell`` (a BAR write of ``h2c_tail`` taken from ``cq``), ``read`` (a DMA read request
    taken by ``rq``), ``completion`` (the last beat of a completion on ``rc``), ``write`` (a
    DMA write request on ``rq``, with its address) and ``order`` (an order frame's first beat
    on ``tx``); and :attr:`beats`, the beats taken on each interface, and :attr:`cycles`, the
    PCIe clock cycles seen. Python runs every PCIe clock cycle while it is on: for figures
    only."""

    def __init__(self, dut, cfg: CoreConfig):
        self.dut, self.cfg = dut, cfg
        self.events: list[tuple[float, str, int]] = []
        self.beats = {"cq": 0, "rq": 0, "rc": 0}
        self.cycles = 0
        cocotb.start_soon(self._pcie())
        cocotb.start_soon(self._core())

    async def _pcie(self) -> None:
        dut, beat = self.dut, {"cq": 0, "rq": 0, "rc": 0}
        head = {}
        doorbell = pciemap.offsets()["h2c_tail"]
        while True:
            await ReadOnly()
            now = get_sim_time("ns")
            self.cycles += 1
            for bus in ("cq", "rq", "rc"):
                if not (
                    getattr(dut, f"{bus}__tvalid").value and getattr(dut, f"{bus}__tready").value
                ):
                    continue
                self.beats[bus] += 1
                data = getattr(dut, f"{bus}__tdata").value.to_unsigned()
                if beat[bus] == 0:
                    head[bus] = data
                elif beat[bus] == 1 and bus != "rc":
                    write = (data >> 11) & 0xF == 1
                    address = head[bus] & ~3
                    if bus == "cq" and write and address % pciemap.BAR_BYTES == doorbell:
                        self.events.append((now, "doorbell", address))
                    elif bus == "rq":
                        self.events.append((now, "write" if write else "read", address))
                last = getattr(dut, f"{bus}__tlast").value
                if last and bus == "rc":
                    self.events.append((now, "completion", 0))
                beat[bus] = 0 if last else beat[bus] + 1
            await RisingEdge(dut.pcie_clk)

    async def _core(self) -> None:
        dut, first, seen = self.dut, True, 0
        while True:
            await ReadOnly()
            if dut.tx__valid.value and dut.tx__ready.value:
                payload = unpack(beat_layout, dut.tx__payload.value.to_unsigned())
                if first:
                    start = get_sim_time("ns")
                if seen == 4:  # the UDP ports
                    src = int.from_bytes(payload["data"].to_bytes(8, "little")[2:4], "big")
                    if src == self.cfg.order_port:
                        self.events.append((start, "order", 0))
                first, seen = bool(payload["last"]), 0 if payload["last"] else seen + 1
            await RisingEdge(dut.clk)

    def after(self, t: float, kind: str, address: int | None = None) -> float:
        """The time of the first ``kind`` event at or after ``t`` (at ``address``)."""
        return next(
            e[0]
            for e in self.events
            if e[0] >= t and e[1] == kind and (address is None or e[2] == address)
        )


#: Stages of the round trip, in order, as (name, the event that ends it).
STAGES = (
    ("doorbell to the card", "doorbell"),
    ("card asks for the slot", "read"),
    ("read round trip", "completion"),
    ("core: record to order frame", "order"),
    ("tap, crossing, write request", "write"),
    ("write lands in host memory", "landed"),
)


def _pcie_core(**params) -> PcieCore:
    params["peers"] = tuple(params["peers"])
    params["default"] = QuoteParams(**params["default"])
    return PcieCore(CoreConfig(**params))


def run(messages: int, records: int, burst: int, seed: int = 3) -> dict:
    """One Verilator run of the bench test; its figures (see ``tb_pcie.bench``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pcie.json"
        run_cocotb(
            _pcie_core,
            toplevel="pciecore",
            test_module="tb_pcie",
            simulator="verilator",
            params=core_params(small_config(default=BUSY)),
            test_params={
                "mode": "bench",
                "seed": seed,
                "messages": messages,
                "feed_symbols": 8,
                "latency_records": records,
                "burst_records": burst,
            },
            testcase="bench",
            extra_env={"T2Q_PCIE_BENCH": str(out)},
        )
        return json.loads(out.read_text())


def report(figures: dict) -> str:
    """The figures as text."""
    core_ns = 1e9 / figures["core_clock_hz"]
    pcie_ns = 1e9 / figures["pcie_clock_hz"]
    samples = figures["samples"]
    lines = [f"round trip, doorbell -> order record in host memory ({len(samples)} orders):"]
    totals = [s[-1] - s[0] for s in samples]
    for name, values in [("total", totals)] + [
        (stage, [s[k + 1] - s[k] for s in samples]) for k, stage in enumerate(figures["stages"])
    ]:
        median = statistics.median(values)
        lines.append(
            f"  {name:<30} median {median:7.1f} ns = {median / core_ns:6.1f} core cycles "
            f"= {median / pcie_ns:6.1f} PCIe cycles  (min {min(values):.1f}, "
            f"max {max(values):.1f} ns)"
        )
    rate = figures["burst_records"] / figures["burst_ns"] * 1e9
    per_record = figures["burst_ns"] / figures["burst_records"] / core_ns
    lines.append(
        f"sustained: {figures['burst_records']} records in {figures['burst_ns']:.0f} ns = "
        f"{rate / 1e6:.1f} M records/s ({per_record:.2f} core cycles a record; "
        f"the tick port's limit is 5 beats = {figures['core_clock_hz'] / 5e6:.2f} M/s)"
    )
    lines.append(
        f"  the completion interface (rc, 64 bits at 250 MHz) carried a beat in "
        f"{100 * figures['rc_busy']:.0f}% of the PCIe cycles of the burst"
    )
    lines.append(f"DMA counters: {figures['dma']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1500, help="ITCH messages generated")
    parser.add_argument("--records", type=int, default=120, help="records timed one by one")
    parser.add_argument("--burst", type=int, default=800, help="records in the burst")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT / "tests" / "cocotb"))
    print(report(run(args.messages, args.records, args.burst)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
