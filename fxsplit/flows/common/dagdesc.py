"""The edges of a partition DAG description (``Partitioning.dag()``, ``stitch.json``), and which of them
need a deep FIFO when partitions talk by handshake: one function that both stream stitchers call (the
Vivado one in ``flows/vitis/tcl/`` through ``flows/vitis/tcl_desc.py``, the open Verilog one in
``flows/rtl/stream.py``).

Plain Python, no torch: the vendor-flow description is read on machines that only run Vivado.

An edge carries one tensor from its producer (a partition, or the model input ``"input"``) to one
consumer (a partition, or the model output ``"output"``). It is

- **bypass** when the producer also reaches the consumer through another partition (a skip connection
  over one or more partitions);
- **reconvergent** when another input of the same consumer shares an ancestor with it: the two paths
  leave a common source and meet again, so under backpressure the shorter one must buffer what the
  longer one still holds. Every bypass edge is reconvergent; an edge from a model input whose consumer
  also reads a tensor computed from the same input is too.
"""

from __future__ import annotations

from typing import Any

MODEL_INPUT = "input"
MODEL_OUTPUT = "output"


def node(producer: str, tensor: str) -> str:
    """The graph node of a producer: partitions by name, each model input on its own."""
    return f"{MODEL_INPUT}:{tensor}" if producer == MODEL_INPUT else producer


def ancestors(n: str, preds: dict[str, set[str]]) -> set[str]:
    seen, todo = {n}, [n]
    while todo:
        for p in preds.get(todo.pop(), ()):
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


def edges(desc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every edge of the description, in a fixed order (partition inputs in partition order, then the
    model outputs), as ``{"tensor", "producer", "consumer", "bypass", "reconvergent"}`` (0/1 flags)."""
    out: list[dict[str, Any]] = []
    for p in desc["partitions"]:
        for t in p["inputs"]:
            out.append({"tensor": t["name"], "producer": p["sources"].get(t["name"], MODEL_INPUT),
                        "consumer": p["name"]})
    for t in desc["outputs"]:
        out.append({"tensor": t["name"], "producer": desc["output_sources"].get(t["name"]),
                    "consumer": MODEL_OUTPUT})
    preds: dict[str, set[str]] = {}
    succs: dict[str, set[str]] = {}
    for e in out:
        if e["consumer"] != MODEL_OUTPUT:
            preds.setdefault(e["consumer"], set()).add(node(e["producer"], e["tensor"]))
            succs.setdefault(node(e["producer"], e["tensor"]), set()).add(e["consumer"])

    def reaches(a: str, b: str) -> bool:
        seen, todo = {a}, [a]
        while todo:
            for s in succs.get(todo.pop(), ()):
                if s == b:
                    return True
                if s not in seen:
                    seen.add(s)
                    todo.append(s)
        return False

    for e in out:
        p, c = node(e["producer"], e["tensor"]), e["consumer"]
        e["bypass"] = int(c != MODEL_OUTPUT and any(s != c and reaches(s, c) for s in succs.get(p, ())))
        reconv = False
        if c != MODEL_OUTPUT:
            mine = ancestors(p, preds)
            reconv = any(o is not e and o["consumer"] == c and mine & ancestors(node(o["producer"], o["tensor"]), preds)
                         for o in out)
        e["reconvergent"] = int(reconv)
    return out
