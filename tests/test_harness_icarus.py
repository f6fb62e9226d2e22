"""The Icarus rewrite of ``sim/harness.py``: every combinational block is evaluated at time zero.

A block whose inputs never change after time zero must still show its value: Icarus 11 makes no
event of a declaration's initial value, so without the rewrite these outputs read ``X``.
"""

import subprocess

from tick2quote.sim.harness import _for_icarus

# The two forms Yosys's Verilog backend writes: a block reading the wake-up register Amaranth
# declares, and a bare one-statement block.
_DESIGN = r"""
module dut;
  reg \$auto$verilog_backend.cc:1:dump_module$1  = 0;
  reg [2:0] source = 3'd5;
  reg [2:0] woken;
  reg [2:0] bare;
  always @* begin
    if (\$auto$verilog_backend.cc:1:dump_module$1 ) begin end
    woken = source;
  end
  always @*
    bare = source;
  initial begin
    #1 $display("woken=%b bare=%b", woken, bare);
  end
endmodule
"""


def _run(text: str, tmp_path) -> str:
    source = tmp_path / "dut.v"
    source.write_text(text)
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "dut.vvp"), str(source)], check=True)
    return subprocess.run(
        ["vvp", "-n", str(tmp_path / "dut.vvp")], check=True, capture_output=True, text=True
    ).stdout


def test_both_block_forms_are_evaluated_at_time_zero(tmp_path):
    assert "woken=101 bare=101" in _run(_for_icarus(_DESIGN), tmp_path)


def test_without_the_rewrite_icarus_leaves_them_unknown(tmp_path):
    # The reason for the rewrite: if this starts passing, Icarus changed and it may go.
    assert "woken=xxx bare=xxx" in _run(_DESIGN, tmp_path)
