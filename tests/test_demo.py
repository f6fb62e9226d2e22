"""``t2q demo`` runs the generated feed through the core model and reports what happened."""

import io

from rich.console import Console
from tick2quote.sim.demo import run_demo


def test_demo_quotes_and_reports(tmp_path):
    out = io.StringIO()
    core = run_demo(
        seed=2, symbols=8, messages=2_000, out_dir=tmp_path, console=Console(file=out, width=120)
    )
    text = out.getvalue()
    assert (tmp_path / "feed.pcap").stat().st_size > 0
    assert core.ingress.counters["gaps"] == 0
    assert core.quoter.counters["enter"] > 0
    assert "Top of book and our quotes" in text and "OUCH 5.0 orders" in text
    assert f"{core.counters['messages']:,} messages" in text
