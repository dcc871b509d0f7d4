"""Test vectors and the self-checking testbench core that every generated testbench shares (the open RTL
flow's pipeline and stream testbenches, the Vitis flow's wrapper testbench).

Vector files: one per port, ``in_<port>.hex`` for a model input and ``exp_<port>.hex`` for the expected
values of an output (:func:`vector_file`); one line per sample, all elements of the port packed into one
word (element 0 in the LSBs, each element the raw two's complement of its type, ``width`` bits), written
in hex, zero-padded to the word's digits (:func:`write_hex`). A testbench reads them with ``$readmemh``
into ``mem_in_<port>`` / ``mem_exp_<port>``, one word per sample (:func:`vector_memory`,
:func:`load_vectors`).

Report, what the simulator prints and :data:`MISMATCH_RE` / :data:`SUMMARY_RE` / :data:`CYCLES_RE` read:

- every wrong element, ``MISMATCH sample=<i> port=<name> elem=<j> got=<raw> expected=<raw>``
  (:func:`mismatch_display`, from the comparison loop of :func:`compare_output`);
- ``TIMEOUT: ...`` when the run stopped before every sample came out (:func:`timeout_display`);
- stream testbenches: ``CYCLES <n>`` (:func:`cycles_display`);
- last, the exact line ``N passed, M failed``, then ``$finish`` (:func:`finish_lines`).

The pieces are lines of Verilog-2001 (a list of strings, indented as they go into the module); the
testbenches add the parts that depend on the interface they drive (ports, handshakes, clocks).
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Sequence

import numpy as np

SUFFIX = ".hex"
INPUT, EXPECTED = "in", "exp"          # the two kinds of vector file

MISMATCH_RE = re.compile(r"MISMATCH sample=(\d+) port=(\S+) elem=(\d+) got=(-?\d+) expected=(-?\d+)")
SUMMARY_RE = re.compile(r"^(\d+) passed, (\d+) failed\s*$", re.M)
CYCLES_RE = re.compile(r"^CYCLES (\d+)$", re.M)
TIMEOUT = "TIMEOUT"


# ----------------------------------------------------------------------------- vector files

def vector_file(kind: str, port: str) -> str:
    """The file name of a port's vectors: ``in_<port>.hex`` (``kind`` "in") or ``exp_<port>.hex`` ("exp")."""
    return f"{kind}_{port}{SUFFIX}"


def write_hex(path: str, raw: np.ndarray, width: int) -> None:
    """One line per sample: all elements of the port packed (element 0 in the LSBs), hex."""
    raw = np.asarray(raw)
    n = raw.shape[0]
    flat = raw.reshape(n, -1)
    size = flat.shape[1]
    ndig = (size * width + 3) // 4
    mask = (1 << width) - 1
    with open(path, "w") as fh:
        for s in range(n):
            word = 0
            for e, v in enumerate(flat[s].tolist()):
                word |= (int(v) & mask) << (e * width)
            fh.write(format(word, "x").zfill(ndig) + "\n")


def write_vectors(where: str, inputs: Iterable[tuple[str, np.ndarray, int]],
                  expected: Iterable[tuple[str, np.ndarray, int]]) -> None:
    """Every vector file of one testbench into directory ``where``: ``(port, raw, width)`` per model input
    and per expected output, ``raw`` of shape (n_samples, ...) of raw integers."""
    for kind, ports in ((INPUT, inputs), (EXPECTED, expected)):
        for port, raw, width in ports:
            write_hex(os.path.join(where, vector_file(kind, port)), np.asarray(raw), width)


# ----------------------------------------------------------------------------- reading them in a testbench

def memory(kind: str, port: str) -> str:
    """The testbench memory that holds a port's vectors, one word per sample."""
    return f"mem_{kind}_{port}"


def vector_memory(kind: str, port: str, bits: int) -> str:
    """The declaration of a port's vector memory (``bits``: the width of one sample's word; N samples)."""
    return f"    reg [{bits - 1}:0] {memory(kind, port)} [0:N-1];"


def load_vectors(inputs: Sequence[str], outputs: Sequence[str], before: Sequence[str] = (),
                 after: Sequence[str] = ()) -> list[str]:
    """The testbench's initial block: the statements ``before``, ``$readmemh`` of every input's and every
    output's vectors into their memories, then the statements ``after``."""
    L = ["    initial begin"] + [f"        {s}" for s in before]
    L += [f'        $readmemh("{vector_file(INPUT, p)}", {memory(INPUT, p)});' for p in inputs]
    L += [f'        $readmemh("{vector_file(EXPECTED, p)}", {memory(EXPECTED, p)});' for p in outputs]
    return L + [f"        {s}" for s in after] + ["    end"]


# ----------------------------------------------------------------------------- comparing, reporting

def _field(v: str | int) -> tuple[str, list[str]]:
    """A report field: an int goes into the format as it is, an expression as ``%0d`` and an argument."""
    return (str(v), []) if isinstance(v, int) else ("%0d", [v])


def mismatch_display(port: str, sample: str | int, elem: str | int, got: str | int, expected: str | int) -> str:
    """The ``$display`` of one MISMATCH line (values: Verilog expressions, or ints written into the line)."""
    fmt, args = [], []
    for key, v in (("sample", sample), ("elem", elem), ("got", got), ("expected", expected)):
        f, a = _field(v)
        fmt.append(f"{key}={f}")
        args += a
    fmt.insert(1, f"port={port}")
    return f'$display("MISMATCH {" ".join(fmt)}"' + "".join(f", {a}" for a in args) + ");"


def element_regs(got: str, exp: str, width: int, signed: bool) -> list[str]:
    """The two registers :func:`compare_output` compares in: one element as simulated, one as expected."""
    sg = "signed " if signed else ""
    return [f"    reg {sg}[{width - 1}:0] {got};", f"    reg {sg}[{width - 1}:0] {exp};"]


def compare_output(port: str, name: str, size: int, width: int, data: str, sample: str, on_bad: str,
                   got: str, exp: str, indent: int = 12) -> list[str]:
    """Compare every element of output ``port`` (its vector memory ``mem_exp_<name>``) in the word ``data``
    with sample ``sample`` of its expectations, through the registers ``got`` and ``exp``
    (:func:`element_regs`); a wrong element runs the statement ``on_bad`` and prints its MISMATCH line.
    ``size`` elements of ``width`` bits; uses the testbench's integer ``e``."""
    pad = " " * indent
    return [f"{pad}for (e = 0; e < {size}; e = e + 1) begin",
            f"{pad}    {got} = {data}[e*{width} +: {width}];",
            f"{pad}    {exp} = {memory(EXPECTED, name)}[{sample}][e*{width} +: {width}];",
            f"{pad}    if ({got} !== {exp}) begin",
            f"{pad}        {on_bad}",
            f"{pad}        {mismatch_display(port, sample, 'e', got, exp)}",
            f"{pad}    end",
            f"{pad}end"]


def timeout_display(cond: str, message: str, *args: str) -> str:
    """``if (cond)`` print the TIMEOUT line ``message`` (a ``$display`` format, with ``args``)."""
    return f'if ({cond}) $display("{TIMEOUT}: {message}"' + "".join(f", {a}" for a in args) + ");"


def cycles_display(expr: str) -> str:
    """The ``$display`` of the ``CYCLES <n>`` line."""
    return f'$display("CYCLES %0d", {expr});'


def finish_lines(cond: str, body: Sequence[str], passed: str, failed: str, indent: int = 8) -> list[str]:
    """Once ``cond`` holds: the statements ``body``, then the summary ``<passed> passed, <failed> failed`` and
    ``$finish``."""
    pad = " " * indent
    return ([f"{pad}if ({cond}) begin"] + [f"{pad}    {s}" for s in body] +
            [f'{pad}    $display("%0d passed, %0d failed", {passed}, {failed});', f"{pad}    $finish;", f"{pad}end"])


def check_in_order(clock: str, valid: str, compares: Sequence[str], timeout: int,
                   otherwise: Sequence[str] = ()) -> list[str]:
    """The checker of a testbench whose outputs come out one sample at a time, in order: on each falling
    edge of ``clock`` where ``valid`` holds, sample ``i_out`` is compared (``compares``: the
    :func:`compare_output` lines of every output, setting ``bad``) and counted passed or failed; the
    lines ``otherwise`` follow that ``if``. The run ends when all N samples are out or after ``timeout``
    cycles (a sample that never came out counts as failed). Uses the integers ``i_out``, ``n_pass``,
    ``n_fail``, ``cycles`` and ``bad``."""
    return (["    always @(negedge " + clock + ") begin",
             f"        if ({valid} && i_out < N) begin",
             "            bad = 0;"] + list(compares) +
            ["            if (bad) n_fail = n_fail + 1; else n_pass = n_pass + 1;",
             "            i_out = i_out + 1;",
             "        end"] + list(otherwise) +
            finish_lines(f"i_out >= N || cycles > {timeout}",
                         [timeout_display("i_out < N", "%0d samples never came out", "N - i_out")],
                         "n_pass", "n_fail + (N - i_out)") +
            ["    end"])


__all__ = ["vector_file", "write_hex", "write_vectors", "memory", "vector_memory", "load_vectors",
           "mismatch_display", "element_regs", "compare_output", "timeout_display", "cycles_display",
           "finish_lines", "check_in_order", "MISMATCH_RE", "SUMMARY_RE", "CYCLES_RE", "TIMEOUT", "SUFFIX",
           "INPUT", "EXPECTED"]
