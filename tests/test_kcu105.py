"""The KCU105 top and the Vivado project ``t2q build --board kcu105`` writes without Vivado.

One build plan of the default top (the full core with its PCIe DMA block, the 10G Ethernet IP,
the PCIe hard IP) is written once for the module (elaborating the whole core takes about half a
minute); the tests read what was written: the Verilog (instances, their port connections and
the widths of the nets on them), the Tcl script and the constraint files.
"""

import re
from dataclasses import dataclass

import pytest
from tick2quote.boards import build as board_build
from tick2quote.boards.capacity import Capacity
from tick2quote.boards.kcu105 import IP_MODULE, Kcu105Top
from tick2quote.boards.kcu105_pcie import PCIE_IP_MODULE
from tick2quote.hdl import pciemap

# ----------------------------------------------------------------------------- Verilog reading

_MODULE = re.compile(r"^module (\S+)\s*\(.*?^endmodule", re.M | re.S)
_INSTANCE = re.compile(
    r"^  (?P<type>[^\s(]+)\s+(?:#\((?P<params>.*?)\n  \)\s*)?"
    r"(?P<name>[^\s(]+) \((?P<ports>.*?)\n  \);",
    re.M | re.S,
)
_CONNECTION = re.compile(r"\.(\\\S+|\w+)\s*\((.*?)\)(?:,)?\n", re.S)
_DECLARATION = re.compile(
    r"^\s*(?:input|output|inout|wire|reg)\s+(\[(\d+):(\d+)\]\s+)?(\S+)\s*;", re.M
)


@dataclass
class VerilogInstance:
    type: str
    params: dict[str, str]
    ports: dict[str, str]


def _unescape(name: str) -> str:
    return name[1:] if name.startswith("\\") else name


def verilog_modules(text: str) -> dict[str, str]:
    """Module name -> its text."""
    return {_unescape(match[1]): match[0] for match in _MODULE.finditer(text)}


def instances(module: str) -> dict[str, VerilogInstance]:
    """Instance name -> type, parameters and port connections, in one module's text."""
    found = {}
    for match in _INSTANCE.finditer(module):
        params = dict(_CONNECTION.findall((match["params"] or "") + "\n"))
        ports = {_unescape(port): expr.strip()
                 for port, expr in _CONNECTION.findall(match["ports"] + "\n")}  # fmt: skip
        found[_unescape(match["name"])] = VerilogInstance(_unescape(match["type"]), params, ports)
    return found


def width(module: str, expr: str) -> int:
    """Bits of a port-connection expression: a constant, a net, a net's slice or bit, or a
    concatenation of those."""
    expr = expr.strip()
    if expr.startswith("{"):
        return sum(width(module, part) for part in _split_concat(expr[1:-1]))
    if match := re.fullmatch(r"(\d+)'[hdbo][0-9a-fA-Fxz_]+", expr):
        return int(match[1])
    if match := re.fullmatch(r"(.+?)\s*\[(\d+)(?::(\d+))?\]", expr):
        return int(match[2]) - int(match[3] or match[2]) + 1
    declared = {_unescape(name): int(hi) - int(lo) + 1 if hi else 1
                for _, hi, lo, name in _DECLARATION.findall(module)}  # fmt: skip
    return declared[_unescape(expr)]


def _split_concat(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for k, char in enumerate(text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:k])
            start = k + 1
    return [*parts, text[start:]]


def top_ports(modules: dict[str, str]) -> dict[str, tuple[str, int]]:
    """The top module's ports: name -> (direction, width)."""
    found = {}
    for line in modules["top"].splitlines():
        if match := re.match(r"\s*(input|output|inout)\s+(?:\[(\d+):(\d+)\]\s+)?(\S+);", line):
            direction, hi, lo, name = match.groups()
            found[_unescape(name)] = (direction, 1 if hi is None else int(hi) - int(lo) + 1)
    return found


# ----------------------------------------------------------------------------- the build plan


@dataclass
class Project:
    files: dict[str, str]
    modules: dict[str, str]
    seconds: float


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    """``t2q build --board kcu105``'s project, written once: the default top, full core."""
    build_dir = tmp_path_factory.mktemp("kcu105")
    report = board_build.run_build("kcu105", build_dir=build_dir)
    assert report.project == build_dir / "top.tcl" and report.bitstream is None
    files = {
        str(path.relative_to(build_dir)): path.read_text()
        for path in build_dir.rglob("*")
        if path.is_file()
    }
    print(f"\nKCU105 project written in {report.wall_seconds:.1f} s")
    return Project(files, verilog_modules(files["top.v"]), report.wall_seconds)


def _tcl_config(tcl: str, module: str) -> dict[str, str]:
    line = next(line for line in tcl.splitlines() if line.endswith(f"[get_ips {module}]")
                and line.startswith("set_property -dict"))  # fmt: skip
    return dict(re.findall(r"CONFIG\.(\S+) \{([^}]*)\}", line))


# ----------------------------------------------------------------------------- tests


def test_the_top_builds_the_full_core_with_its_pcie_dma(project):
    top = instances(project.modules["top"])
    assert top["core"].type == "top.core"
    # The whole core and the DMA block, not a front end alone.
    for block in ("core.core.book", "core.core.quoter", "core.core.egress", "core.core.control",
                  "core.dma.bar", "core.dma.fetcher", "core.dma.writer", "core.tap"):  # fmt: skip
        assert f"top.{block}" in project.modules, block
    # Its two clocks: the 10G IP's core clock and reset, the PCIe hard IP's user clock and reset.
    core, mac, pcie = top["core"].ports, top["mac"].ports, top["pcie"].ports
    assert core["clk"] == mac["coreclk_out"] and core["rst"] == mac["areset_datapathclk_out"]
    assert core["pcie_clk"] == pcie["user_clk"] and core["pcie_rst"] == pcie["user_reset"]
    assert core["clk"] != core["pcie_clk"]
    # The AXI4-Stream interfaces and cfg_max_read_req: every port the two share is one net.
    shared = set(core) & set(pcie)
    assert {"cq__tdata", "cq__tready", "rc__tdata", "rc__tvalid", "cc__tready", "rq__tready",
            "max_read_req"} <= shared  # fmt: skip
    for name in shared:
        assert core[name] == pcie[name], name


def test_the_default_capacity_sizes_the_core_tables(project):
    capacity = Kcu105Top.default_capacity
    assert capacity == Capacity(symbols=1024, orders=65536)
    # The order table: 4 ways of orders / 4 sets; the ladders: one row per symbol.
    book = project.modules["top.core.core.book"]
    memories = re.findall(r"reg \[\d+:\d+\] (\S+) \[(\d+):(\d+)\];", book)
    depths = {name: abs(int(hi) - int(lo)) + 1 for name, hi, lo in memories}
    assert [depths[f"way{k}"] for k in range(capacity.ways)] == [capacity.orders // 4] * 4
    assert depths["bids"] == depths["asks"] == capacity.symbols
    with pytest.raises(ValueError, match="orders must be a power of two"):
        Kcu105Top(capacity="1024x6000")


def test_the_pcie_hard_ip_instance_and_its_ports(project):
    module = project.modules["top.pcie"]
    found = instances(module)
    ip = found["pcie"]
    assert ip.type == PCIE_IP_MODULE
    ports = ip.ports
    # PG156's 64-bit AXI4-Stream interfaces: data, DWORD keep, tuser widths per interface.
    for prefix, user in [("m_axis_cq", 85), ("s_axis_cc", 33), ("s_axis_rq", 60),
                         ("m_axis_rc", 75)]:  # fmt: skip
        assert width(module, ports[f"{prefix}_tdata"]) == 64
        assert width(module, ports[f"{prefix}_tkeep"]) == 2
        assert width(module, ports[f"{prefix}_tuser"]) == user, prefix
        assert width(module, ports[f"{prefix}_tlast"]) == 1
        assert width(module, ports[f"{prefix}_tvalid"]) == 1
    assert width(module, ports["m_axis_cq_tready"]) == 22
    assert width(module, ports["m_axis_rc_tready"]) == 22
    assert width(module, ports["s_axis_cc_tready"]) == 4
    assert width(module, ports["s_axis_rq_tready"]) == 4
    # Two lanes, on the top-level pins.
    for port, net, direction in [("pci_exp_txp", "pcie_0__tx_p__io", "output"),
                                 ("pci_exp_txn", "pcie_0__tx_n__io", "output"),
                                 ("pci_exp_rxp", "pcie_0__rx_p__io", "input"),
                                 ("pci_exp_rxn", "pcie_0__rx_n__io", "input")]:  # fmt: skip
        assert ports[port] == net
        assert top_ports(project.modules)[net] == (direction, 2)
    # Configuration: link training and configuration space on, non-posted requests unthrottled.
    assert ports["cfg_link_training_enable"] == "1'h1"
    assert ports["cfg_config_space_enable"] == "1'h1"
    assert ports["pcie_cq_np_req"] == "1'h1"
    assert width(module, ports["cfg_max_read_req"]) == 3
    for port in ("user_clk", "user_reset", "user_lnk_up"):
        assert width(module, ports[port]) == 1
    # Reference clock through IBUFDS_GTE3: O to sys_clk_gt, ODIV2 (undivided) to sys_clk.
    ibuf = next(inst for inst in found.values() if inst.type == "IBUFDS_GTE3")
    assert ibuf.ports["I"] == "pcie_0__clk_p__io" and ibuf.ports["IB"] == "pcie_0__clk_n__io"
    assert ibuf.params["REFCLK_HROW_CK_SEL"] == "2'h0"
    assert ports["sys_clk_gt"] == ibuf.ports["O"]
    assert ports["sys_clk"] == ibuf.ports["ODIV2"]
    assert ports["sys_clk"] != ports["sys_clk_gt"]
    # sys_reset (active low) is PERST# through an input buffer.
    perst = found["perst_n"]
    assert perst.ports["pcie_0__perst_n__io"] == "pcie_0__perst_n__io"
    assert ports["sys_reset"] == perst.ports["i"]
    assert "IBUF" in project.modules["top.pcie.perst_n.buf"]


def test_the_10g_ethernet_ip_instance_and_its_ports(project):
    mac = instances(project.modules["top"])["mac"]
    assert mac.type == IP_MODULE
    for port in ("coreclk_out", "areset_datapathclk_out", "s_axis_tx_tdata", "s_axis_tx_tready",
                 "m_axis_rx_tdata", "m_axis_rx_tuser", "refclk_p", "txp", "rxn"):  # fmt: skip
        assert port in mac.ports, port
    assert mac.ports["txp"] == "sfp_0__tx__io" and mac.ports["refclk_p"] == "mgt_refclk_0__p__io"


def test_the_tcl_script_creates_both_ips_before_synthesis(project):
    tcl = project.files["top.tcl"]
    assert "part xcku040-ffva1156-2-e" in tcl
    assert "add_files top.v" in tcl
    assert tcl.index('read_xdc "constraints/pcie.xdc"') < tcl.index(
        'read_xdc "constraints/timing.xdc"'
    )  # timing.xdc groups the clock pcie.xdc creates
    for name, module in [("axi_10g_ethernet", IP_MODULE), ("pcie3_ultrascale", PCIE_IP_MODULE)]:
        create = f"create_ip -name {name} -vendor xilinx.com -library ip -module_name {module}"
        assert create in tcl
        assert tcl.index(create) < tcl.index(f"generate_target all [get_ips {module}]")
        assert tcl.index(f"synth_ip [get_ips {module}]") < tcl.index("synth_design")


def test_the_pcie_ip_configuration(project):
    config = _tcl_config(project.files["top.tcl"], PCIE_IP_MODULE)
    assert config["PL_LINK_CAP_MAX_LINK_SPEED"] == "8.0_GT/s"
    # x2: as many lanes as the top drives.
    lanes = top_ports(project.modules)["pcie_0__tx_p__io"][1]
    assert config["PL_LINK_CAP_MAX_LINK_WIDTH"] == f"X{lanes}" == "X2"
    assert config["axisten_if_width"] == "64_bit"
    assert config["axisten_freq"] == "250"
    assert config["axisten_if_enable_client_tag"] == "true"  # the DMA engine tags its reads
    assert config["AXISTEN_IF_RC_STRADDLE"] == "false"
    # BAR0: memory, 32-bit, big enough for every register and the frame window.
    assert config["pf0_bar0_type"] == "Memory" and config["pf0_bar0_64bit"] == "false"
    scale = {"Kilobytes": 1 << 10, "Megabytes": 1 << 20}[config["pf0_bar0_scale"]]
    bar_bytes = int(config["pf0_bar0_size"]) * scale
    assert bar_bytes == 8192 == pciemap.BAR_BYTES
    last_register = max(offset for _, offset, _ in pciemap.REGISTERS) + 4
    assert last_register <= pciemap.FRAME_WINDOW
    assert pciemap.FRAME_WINDOW + pciemap.FRAME_WINDOW_BYTES <= bar_bytes
    # Identity: AMD/Xilinx's vendor ID, a device ID, both four hex digits.
    assert config["vendor_id"] == "10EE"
    assert re.fullmatch(r"[0-9A-F]{4}", config["PF0_DEVICE_ID"])
    # The PCIe block next to the quad the edge connector's lanes 0 and 1 are wired to.
    assert config["pcie_blk_locn"] == "X0Y0" and config["select_quad"] == "GTH_Quad_225"


def test_the_clock_constraints(project):
    pcie_xdc = project.files["constraints/pcie.xdc"]
    timing_xdc = project.files["constraints/timing.xdc"]
    everything = "\n".join([project.files["top.xdc"], pcie_xdc, timing_xdc])
    clocks = {name: (float(period), target) for name, period, target in re.findall(
        r"create_clock -name (\S+) -period ([0-9.]+) \[get_(?:ports|nets) \"?([^\]\"]+)\"?\]",
        everything)}  # fmt: skip
    assert clocks["pcie_refclk"] == (10.0, "pcie_0__clk_p__io")  # 100 MHz from the host
    assert clocks["mgt_refclk"] == (6.4, "mgt_refclk_0__p__io")  # 156.25 MHz for 10GBASE-R
    assert clocks["clk125_0__p"][0] == 8.0
    # The core clock, the PCIe user clock and the DRP clock are in separate asynchronous
    # groups, each through its reference clock and the clocks derived from it.
    statement = re.search(r"set_clock_groups -asynchronous((?:.*\\\n)*.*)", timing_xdc)[1]
    groups = re.findall(r"-group \[get_clocks -include_generated_clocks (\S+)\]", statement)
    assert sorted(groups) == sorted(["mgt_refclk", "pcie_refclk", "clk125_0__p"])
    assert set(groups) <= set(clocks)
    # PERST# is asynchronous.
    assert "set_false_path -from [get_ports pcie_0__perst_n__io]" in pcie_xdc
    # Every port the constraint files name is a port of the top.
    ports = top_ports(project.modules)
    for name in re.findall(r"get_ports (\w+)", pcie_xdc + timing_xdc):
        assert name in ports, name


def test_the_pin_constraints(project):
    xdc = project.files["top.xdc"]

    def loc(port: str) -> str:
        return re.search(rf"set_property LOC (\S+) \[get_ports \"{re.escape(port)}\"\]", xdc)[1]

    def attr(name: str, port: str) -> str:
        return re.search(rf"set_property {name} \"(\S+)\" \[get_ports \"{re.escape(port)}\"\]",
                         xdc)[1]  # fmt: skip

    # PCIe edge connector: reference clock, PERST# (pulled up), lanes 0 and 1.
    assert (loc("pcie_0__clk_p__io"), loc("pcie_0__clk_n__io")) == ("AB6", "AB5")
    assert loc("pcie_0__perst_n__io") == "K22"
    assert attr("IOSTANDARD", "pcie_0__perst_n__io") == "LVCMOS18"
    assert attr("PULLUP", "pcie_0__perst_n__io") == "TRUE"
    lanes = {"tx_p": ("AC4", "AE4"), "tx_n": ("AC3", "AE3"),
             "rx_p": ("AB2", "AD2"), "rx_n": ("AB1", "AD1")}  # fmt: skip
    for name, pins in lanes.items():
        assert tuple(loc(f"pcie_0__{name}__io\\[{k}]") for k in range(2)) == pins, name
    # SFP+ cage 0 and its reference clock.
    for port, pin in [("sfp_0__tx__io", "U4"), ("sfp_0__tx_n__io", "U3"), ("sfp_0__rx__io", "T2"),
                      ("sfp_0__rx_n__io", "T1"), ("mgt_refclk_0__p__io", "P6"),
                      ("mgt_refclk_0__n__io", "P5")]:  # fmt: skip
        assert loc(port) == pin, port


def test_kcu105_core_clock_is_fixed():
    with pytest.raises(ValueError, match="156.25 MHz, not 125 MHz"):
        Kcu105Top(core_clock=125e6)
