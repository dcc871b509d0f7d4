"""Verilog names of the open RTL flow: tensor ports as identifiers, element iteration over a program's ports, the
valid shift register every pipelined module carries."""

from __future__ import annotations

import re

import numpy as np

from .rtltype import type_frac

_VERILOG_KEYWORDS = set(
    """always and assign automatic begin buf bufif0 bufif1 case casex casez cell cmos config deassign default
    defparam design disable edge else end endcase endconfig endfunction endgenerate endmodule endprimitive
    endspecify endtable endtask event for force forever fork function generate genvar highz0 highz1 if ifnone
    incdir include initial inout input instance integer join large liblist library localparam macromodule medium
    module nand negedge nmos nor noshowcancelled not notif0 notif1 or output parameter pmos posedge primitive
    pull0 pull1 pulldown pullup pulsestyle_ondetect pulsestyle_onevent rcmos real realtime reg release repeat
    rnmos rpmos rtran rtranif0 rtranif1 scalared showcancelled signed small specify specparam strong0 strong1
    supply0 supply1 table task time tran tranif0 tranif1 tri tri0 tri1 triand trior trireg unsigned use uwire
    vectored wait wand weak0 weak1 while wire wor xnor xor
    bit byte int logic shortint longint string chandle class const enum export extends final import inside
    interface package program property rand randc ref sequence static struct super this type typedef union var
    virtual void clk in_valid out_valid""".split()
)


def _n_elements(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def _port_elements(entries, fields):
    """(verilog name, type width, frac bits, element index, da4ml field) for every element of every port."""
    n = 0
    for e in entries:
        W, F = e['type'][1], type_frac(e['type'])
        name = verilog_name(e['port'])
        for el in range(_n_elements(e['shape'])):
            yield name, W, F, el, fields[n]
            n += 1


def valid_shift_register(reg: str, latency: int) -> list[str]:
    """Verilog lines of a ``latency``-bit shift register ``reg`` fed by ``in_valid`` (bit k = valid k+1 cycles ago)."""
    lines = [f"    reg [{latency - 1}:0] {reg} = {latency}'d0;"]
    if latency == 1:
        lines.append(f'    always @(posedge clk) {reg} <= in_valid;')
    else:
        lines.append(f'    always @(posedge clk) {reg} <= {{{reg}[{latency - 2}:0], in_valid}};')
    return lines


def verilog_name(port: str) -> str:
    """The Verilog identifier used for a tensor port (identity for ordinary fx names)."""
    name = re.sub(r'[^A-Za-z0-9_]', '_', port)
    if not name or not (name[0].isalpha() or name[0] == '_'):
        name = 'p_' + name
    if name in _VERILOG_KEYWORDS or name.startswith('fxs_'):
        name = 'port_' + name
    return name

