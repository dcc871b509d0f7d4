"""The ports of an exported IP (its IP-XACT ``component.xml``) checked against the interface fxsplit expects.

Vitis HLS's ``export_design`` writes ``<prj>/solution1/impl/ip/component.xml``: an IP-XACT component whose
``model/ports`` list every RTL port with its direction (``in``/``out``) and, for vectors, ``vector/left`` and
``right``. Vivado reads that file, not fxsplit's description, when it instantiates the IP in the stitched block
design. So the ``hls`` job compares the two right after the export, and a difference (a port renamed, a width
that is not the one the pragmas imply, an extra input nobody drives) fails that partition's job with both sides
named, instead of surfacing later as a Vivado error in the stitch or, worse, as a silently unconnected pin.

Both schema generations are read: SPIRIT 1685-2009 (what Vivado and Vitis HLS write) and IP-XACT 1685-2014
(``ipxact:`` namespace, ``vectors/vector``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ...errors import FxsplitError

NAMESPACES = {
    "http://www.spiritconsortium.org/XMLSchema/SPIRIT/1685-2009",
    "http://www.accellera.org/XMLSchema/IPXACT/1685-2014",
    "http://www.accellera.org/XMLSchema/IPXACT/1685-2022",
}


def _local(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def _child(el, name: str):
    for c in el:
        if _local(c.tag)[1] == name:
            return c
    return None


def _text(el, *path: str) -> str | None:
    for name in path:
        if el is None:
            return None
        el = _child(el, name)
    return None if el is None or el.text is None else el.text.strip()


def read_ports(xml_path: str) -> dict:
    """``{"vlnv": "vendor:library:name:version", "ports": {name: {"dir": "in"|"out"|"inout", "width": int}}}``."""
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as e:
        raise FxsplitError(f"cannot read the IP description {xml_path}: {e}") from e
    ns, name = _local(root.tag)
    if name != "component" or ns not in NAMESPACES:
        raise FxsplitError(f"{xml_path} is not an IP-XACT component (root element {root.tag!r})")
    vlnv = ":".join(_text(root, k) or "?" for k in ("vendor", "library", "name", "version"))
    model = _child(root, "model")
    ports_el = _child(model, "ports") if model is not None else None
    if ports_el is None:
        raise FxsplitError(f"{xml_path}: the component {vlnv} lists no ports (no model/ports element)")
    ports = {}
    for p in ports_el:
        if _local(p.tag)[1] != "port":
            continue
        pname, wire = _text(p, "name"), _child(p, "wire")
        if not pname or wire is None:
            continue                                    # transactional ports: none in an HLS export
        direction = _text(wire, "direction")
        vec = _child(wire, "vector")
        if vec is None and _child(wire, "vectors") is not None:          # 1685-2014
            vec = _child(_child(wire, "vectors"), "vector")
        width = 1
        if vec is not None:
            try:
                left, right = int(_text(vec, "left")), int(_text(vec, "right"))
            except (TypeError, ValueError) as e:
                raise FxsplitError(f"{xml_path}: port {pname!r} has a vector whose bounds are not numbers "
                                   "(a parameterized width)") from e
            width = abs(left - right) + 1
        ports[pname] = {"dir": direction, "width": width}
    return {"vlnv": vlnv, "ports": ports}


def expected_ports(iface: dict) -> dict:
    """The ports a partition's interface description (:func:`.interface.read_interface`) says the IP has."""
    out = {}
    for c in iface["control"]:
        out[c] = {"dir": "in" if c in ("ap_clk", "ap_rst", "ap_rst_n", "ap_start") else "out", "width": 1}
    for group in ("inputs", "outputs"):
        for arg in iface[group]:
            for pin in arg["pins"]:
                out[pin["name"]] = {"dir": pin["dir"], "width": pin["width"]}
    return out


def check_ip(xml_path: str, iface: dict, partition: str, vlnv: str | None = None) -> dict:
    """Refuse an exported IP whose ports differ from ``iface``. Extra outputs are allowed (left open in the
    block design); an extra input is not (Vivado would leave it undriven). Returns what was read, with
    ``reset``: the IP's reset pin."""
    got = read_ports(xml_path)
    want = expected_ports(iface)
    # the reset's polarity is the IP's to say (Vitis HLS makes it active-low ap_rst_n for AXI tops; the pragmas
    # do not say so): one reset of either name is accepted, and reported back
    resets = [r for r in ("ap_rst", "ap_rst_n") if r in got["ports"]]
    described = [r for r in ("ap_rst", "ap_rst_n") if r in want]
    if len(resets) == 1 and described and resets != described:
        want[resets[0]] = want.pop(described[0])
    got["reset"] = resets[0] if len(resets) == 1 else None
    problems = []
    if vlnv and got["vlnv"] != vlnv:
        problems.append(f"its VLNV is {got['vlnv']}, the stitcher instantiates {vlnv}")
    for name, w in want.items():
        g = got["ports"].get(name)
        if g is None:
            problems.append(f"no port {name} ({w['dir']}, {w['width']} bits)")
        elif (g["dir"], g["width"]) != (w["dir"], w["width"]):
            problems.append(f"port {name} is {g['dir']} {g['width']} bits, expected {w['dir']} {w['width']} bits")
    for name, g in got["ports"].items():
        if name not in want and g["dir"] != "out":
            problems.append(f"extra {g['dir']} port {name} ({g['width']} bits) that nothing would drive")
    if problems:
        raise FxsplitError(f"partition {partition!r}: the exported IP ({xml_path}) does not have the ports "
                           "stitch.json describes:\n  - " + "\n  - ".join(problems), partition=partition,
                           hint="the interface is read from the hls4ml pragmas of the top function "
                                "(fxsplit.flows.vitis.interface); a Vitis HLS version that names ports "
                                "differently needs that reader taught its rule. Please report it with this message.")
    return got


__all__ = ["read_ports", "expected_ports", "check_ip"]
