"""The streaming side of the open RTL flow (``config={"io_type": "io_stream"}``): every partition a streaming
Verilog network (:mod:`.streamnet`), synthesized by Yosys in parallel, the partitions joined stream to stream in a
stitched top with FIFOs on the edges that must hold beats, and that top simulated against the C simulation.

Jobs (run by the engine like the fully parallel flow's, declared in :data:`STREAM_STEPS`):

- ``<partition>/stream``: the partition's stream graph emitted (:func:`~.streamnet.emit_stream_net`): its da4ml
  kernels, line buffers, forks and the partition's top ``fxs_<partition>``;
- ``<partition>/stream_synth``: Yosys ``synth_xilinx`` of it;
- ``stitched/stream``: the stitched top (:func:`~.streamnet.stitch_stream_nets`), its edge FIFOs sized from the
  partitions' need maps and buffers;
- ``stitched/stream_synth``: Yosys on the stitched top, the partitions as black boxes (its forks and FIFOs counted).

Pins of every module (partition and top): ``clk``; ``rst_n``, synchronous and active low (it clears counters,
credits and FIFOs; frames follow each other without a reset); per stream ``<tensor>_TDATA`` (one hls4ml stream
word: the elements of the last dimension, element 0 in the least significant bits, raw two's complement),
``<tensor>_TVALID`` and ``<tensor>_TREADY``: the names and packing Vitis HLS gives an hls4ml io_stream IP's data
ports.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ...errors import FxsplitError
from ...plan.costmodel import MiB, StepModel
from ...verify import Mismatch, VerifyResult, compare
from ..base import Step

STREAM_TOP = "fxsplit_stream_top"

# Shipped models, measured on the 2-core x86 development machine (8-bit weight types spanning each layer) and
# refitted from every user's own cache as soon as it holds enough jobs of a step. The emission step: fitted by
# benchmarks/bench_stream_resnet.py --fit on the 16 partition jobs of its three cold builds of the reduced-width
# ResNet20 (zoo ``resnet20_small``). Yosys grows superlinearly with a partition's kernels and buffers (c = 1.3).
STREAM_STEPS = (
    # 16 jobs, 0.1 s .. 24 s; rms 2.4 s. Memory: rms 2.5 MiB (390 .. 420 MiB)
    Step("stream", tool="da4ml", tools=("da4ml",), when="stream",
         doc="da4ml kernels, line buffers and FIFOs of the streaming partition",
         seconds=StepModel(a=0.0384, b=0.0, d=3.494e-05, c=1.35, size="kernels"),
         memory=StepModel(a=4.066e8, b=0.0, d=1.173e4, c=0.5, size="kernels")),
    # Yosys CPU time and peak memory of 15 partitions of the full-width ResNet20's plan for 8 workers (zoo
    # ``resnet20``; bench_stream_resnet.py --wide resnet20 --partitions), 107 s .. 574 s, 2.0 .. 7.7 GiB: relative
    # rms 7 % (time), 4 % (memory); the buffer weights are costmodel.BUFFER_TIME and BUFFER_MEMORY
    Step("stream_synth", tool="yosys", tools=("yosys",), deps=("stream",), when=("stream", "synth"),
         doc="Yosys synth_xilinx of the streaming partition",
         seconds=StepModel(a=45.88, b=0.0, d=1.110e-03, c=1.35, size="stream"),
         memory=StepModel(a=0.0, b=0.0, d=1.041e6, c=0.95, size="stream_memory")),
    # the stitched top: the mean of its 3 jobs there (0.04 .. 0.07 s; synthesis 1.9 .. 8.0 s)
    Step("stream", tool=None, scope="stitched", after=("stream",), when="stream",
         doc="the stitched streaming top and its edge FIFOs",
         seconds=StepModel(a=0.06, b=0.0, d=0.0, c=1.0, size="ports"),
         memory=StepModel(a=360 * MiB, b=0.0, d=0.0, c=1.0, size="ports")),
    Step("stream_synth", tool="yosys", tools=("yosys",), scope="stitched", deps=("stream",), after=("stream",),
         when=("stream", "synth"), doc="Yosys on the stitched streaming top, partitions as black boxes",
         seconds=StepModel(a=3.96, b=0.0, d=0.0, c=1.0, size="ports"),
         memory=StepModel(a=495 * MiB, b=0.0, d=0.0, c=1.0, size="ports")),
)


# ----------------------------------------------------------------------------- jobs (worker side)

def read_meta(src: str) -> dict:
    """A Verilog job's metadata (``rtl_meta.json`` in its artifacts: ``top``, ``files`` relative to them)."""
    with open(os.path.join(src, "rtl_meta.json")) as f:
        return json.load(f)


def stream_job(workdir: str, inputs: dict, net: dict, module: str, latency_cutoff: float | None,
               solver: dict | None = None) -> dict:
    """One partition's streaming network; ``rtl_meta.json`` holds its metadata (files relative to the job)."""
    from .streamnet import emit_stream_net
    meta = emit_stream_net(net, workdir, module, latency_cutoff=latency_cutoff, solver_options=solver)
    meta.pop("workdir")
    with open(os.path.join(workdir, "rtl_meta.json"), "w") as f:
        json.dump(meta, f, default=str)
    return meta


def stream_stitch_job(workdir: str, inputs: dict, parts: list[dict], model_inputs: list[str],
                      model_outputs: list[str], top: str) -> dict:
    """The stitched streaming top (its forks, edge FIFOs and top module in ``src/``) from every partition's stream
    graph (``parts``: name and net) and emitted metadata."""
    from .streamnet import stitch_stream_nets
    full = [{"name": p["name"], "net": p["net"],
             "meta": dict(read_meta(inputs[f"{p['name']}/stream"]), workdir=inputs[f"{p['name']}/stream"])}
            for p in parts]
    meta = stitch_stream_nets(full, model_inputs, model_outputs, workdir, top)
    root = os.path.abspath(workdir)
    own = [os.path.relpath(f, root) for f in meta["files"] if os.path.abspath(f).startswith(root + os.sep)]
    out = {k: v for k, v in meta.items() if k not in ("files", "workdir")}
    out["files"] = own
    with open(os.path.join(workdir, "rtl_meta.json"), "w") as f:
        json.dump(out, f)
    return out


def stream_top_synth_job(workdir: str, inputs: dict, top: str, partitions: list[str]) -> dict:
    """Yosys on the stitched streaming top alone (forks and edge FIFOs): the partitions are black boxes."""
    from .synth import synthesize
    st = inputs["stitched/stream"]
    boxes = []
    for name in partitions:
        src = inputs[f"{name}/stream"]
        boxes.append(os.path.join(src, "src", f"{read_meta(src)['top']}.v"))
    return synthesize(workdir, [os.path.join(st, f) for f in read_meta(st)["files"]], top, blackboxes=boxes)


# ----------------------------------------------------------------------------- the design (main process)

RESOURCES = {"LUT": "lut", "FF": "ff", "CARRY": "carry", "DSP": "dsp", "SRL": "srl", "BRAM": "bram"}


def _resources(s: dict | None) -> dict | None:
    return {k: s.get(v) for k, v in RESOURCES.items()} if s else None


def synth_entry(s: dict | None) -> dict:
    """A partition's synthesis in the report: resources, Yosys time, log and netlist (empty without synthesis)."""
    if not s:
        return {}
    return {"resources": _resources(s), "synth_seconds": s.get("seconds"), "synth_log": s.get("log"),
            "netlist": s.get("netlist")}


def resource_totals(synth: dict[str, dict], top_synth: dict | None) -> tuple[dict | None, dict | None]:
    """(every partition plus the stitched top's own logic, the top's own logic), or (None, None) without
    synthesis."""
    if not (synth and top_synth):
        return None, None
    top = {k: int(top_synth.get(v) or 0) for k, v in RESOURCES.items()}
    return {k: top[k] + sum(int(s.get(v) or 0) for s in synth.values()) for k, v in RESOURCES.items()}, top


def monolithic_entry(m: dict | None, latency) -> dict | None:
    """The uncut design beside the stitched one: its latency, resources, Verilog and synthesis log."""
    if not m:
        return None
    s = m.get("synth") or {}
    return {"latency": latency, "resources": _resources(s) or {k: None for k in RESOURCES},
            "verilog": [os.path.join(m["workdir"], f) for f in m["files"]], "rtl_module": m.get("top"),
            "synth_log": s.get("log"), "netlist": s.get("netlist")}


def frame_timing(ins: list[tuple[list[int], int]], outs: list[tuple[list[int], int]], frames: int) -> dict:
    """Latency and interval of a streaming module from the cycles of the beats on its streams: ``ins``/``outs``
    per stream (cycles of its beats, beats per frame). Latency: the first beat of frame 0 in to the last beat of frame 0
    out; interval: the most cycles between the last beats of consecutive frames."""
    firsts = [c[0] for c, b in ins if c]
    ends = []
    for f in range(frames):
        last = [c[(f + 1) * b - 1] for c, b in outs if len(c) >= (f + 1) * b]
        if len(last) < len(outs):
            break
        ends.append(max(last))
    if not firsts or not ends:
        return {"latency": None, "interval": None}
    return {"latency": int(ends[0] - min(firsts)),
            "interval": int(max(np.diff(ends))) if len(ends) > 1 else None}


@dataclass
class StreamDesign:
    """A streaming RTL design: partitions' streaming networks, the stitched top, their synthesis."""
    top: str
    files: list[str]                       # every Verilog file of the stitched design (da4ml's primitives once)
    partitions: dict[str, dict]            # emit_stream_net metadata (+ workdir) per partition
    stitched: dict                         # stitch_stream_nets metadata (+ workdir): forks, streams, ports
    synth: dict[str, dict]
    stitched_dir: str
    top_synth: dict | None = None
    monolithic: dict | None = None         # compare_monolithic: the uncut network's metadata + synth
    last_sim: dict = field(default_factory=dict)
    latency: int | None = None             # from the last free-running simulation

    def monolithic_report(self) -> dict | None:
        return monolithic_entry(self.monolithic, None)

    def partition_report(self, name: str) -> dict:
        meta = self.partitions[name]
        timing = (self.last_sim.get("partitions") or {}).get(name) or {}
        entry = {"latency": timing.get("latency"), "interval": timing.get("interval"),
                 "verilog": [os.path.join(meta["workdir"], f) for f in meta["files"]], "rtl_module": meta.get("top"),
                 "stream_units": {op: sum(u["op"] == op for u in meta["units"])
                                  for op in sorted({u["op"] for u in meta["units"]})},
                 "fork_depths": {u["name"]: u["depths"] for u in meta["units"] if u["op"] == "fork"}}
        return {**entry, **synth_entry(self.synth.get(name))}

    def stitched_report(self) -> dict:
        """Resources: every partition plus the top's own forks and edge FIFOs."""
        totals, top = resource_totals(self.synth, self.top_synth)
        return {"top": self.top, "file": os.path.join(self.stitched["workdir"], "src", f"{self.top}.v"),
                "interface": "axis", "latency": self.latency,
                "interval": (self.last_sim or {}).get("interval"), "resources_total": totals,
                "resources_top": top, "top_synth_log": (self.top_synth or {}).get("log"),
                "fifos": [{"name": f["name"], "stream": f["port"], "depths": f["depths"],
                           "min_depths": f["min_depths"]} for f in self.stitched.get("forks", [])],
                "simulation": self.last_sim or None}

    def verify(self, raw_in: list[np.ndarray], inputs: list, outputs: list, csim: list[np.ndarray],
               mono: list[np.ndarray], decode: list, torch_err: float, simulator: str = "verilator",
               interface: str | None = None, gaps: float = 0.3, backpressure: float = 0.3,
               seed: int = 1) -> VerifyResult:
        """The stitched streaming top simulated twice on one build, the frames back to back with no reset between
        them: under random input gaps and output backpressure (``gaps``, ``backpressure``, ``seed``), then free
        running (inputs offered every cycle, outputs always taken), which gives the latency and the interval between
        frames, stitched and per partition (beats counted on the streams between partitions). Both runs must equal
        the stitched C simulation, every element of every frame; that equals the uncut C simulation."""
        from .names import verilog_name
        from .streamtb import simulate_streams
        if interface not in (None, "axis"):
            raise FxsplitError(f"a streaming design has one interface, AXI4-Stream; interface={interface!r} does not "
                               "apply", hint="leave interface out (or pass 'axis')")
        n = raw_in[0].shape[0]
        pin, pout = self.stitched["ports"]["inputs"], self.stitched["ports"]["outputs"]
        by_in = {p.name: r for p, r in zip(inputs, raw_in)}
        by_out = {p.name: r for p, r in zip(outputs, csim)}

        def beats(p: dict, r: np.ndarray) -> dict:
            return {"name": p["name"], "elem_bits": p["elem_bits"],
                    "raw": np.asarray(r).reshape(n * int(p["beats"]), int(p["beat"]))}

        ins = [beats(p, by_in[p["var"]]) for p in pin]
        outs = [beats(p, by_out[p["var"]]) for p in pout]
        order = list(self.partitions)
        streams = self.stitched["streams"]
        probes = []
        for name in order:
            probes += [s["wire"] for s in streams[name]["ins"] + streams[name]["outs"]]
        probes = list(dict.fromkeys(probes))
        workdir = os.path.join(self.stitched_dir, f"tb_stream_{simulator}")
        runs = [dict(gaps=gaps, backpressure=backpressure, seed=seed), dict(gaps=0.0, backpressure=0.0, seed=seed)]
        latency = sum(int(u.get("latency") or 0) for m in self.partitions.values() for u in m["units"])
        got = simulate_streams(self.top, self.files, workdir, ins, outs, simulator=simulator, runs=runs,
                               latency=latency, probes=probes)
        vname = {verilog_name(p.name): p.name for p in outputs}
        shape = {p["name"]: (int(p["beats"]), int(p["beat"])) for p in pout}
        prec = {p.name: p.precision for p in outputs}
        from ...fixed import raw_to_float
        details, bad_frames, ok = [], set(), True
        for run, r in zip(runs, got):
            res = r["result"]
            for m in res.mismatches:
                nb, bw = shape.get(m.output, (1, 1))
                name = vname.get(m.output, m.output)
                frame, idx = m.sample // nb, (m.sample % nb) * bw + m.index
                bad_frames.add(frame)
                details.append(Mismatch(frame, name, idx, float(raw_to_float(np.array(m.got), prec[name])),
                                        float(raw_to_float(np.array(m.expected), prec[name]))))
            for k, p in enumerate(pout):                # frames whose beats did not all come out
                done = len(r["out_cycles"][k]) // int(p["beats"])
                bad_frames.update(range(done, n))
            total = sum(o["raw"].shape[0] for o in outs)
            ok = ok and res.passed == total and res.failed == 0 and not res.timeout and not any(r["extra"])
        free = got[1]
        cyc = dict(zip(probes, free["probe_cycles"]))
        per = {}
        for name in order:
            s = streams[name]
            per[name] = frame_timing([(cyc[x["wire"]], int(x["beats"])) for x in s["ins"]],
                                     [(cyc[x["wire"]], int(x["beats"])) for x in s["outs"]], n)
        whole = frame_timing([(c, int(p["beats"])) for c, p in zip(free["in_cycles"], pin)],
                             [(c, int(p["beats"])) for c, p in zip(free["out_cycles"], pout)], n)
        self.latency = whole["latency"]
        base = compare("rtl", csim, mono, [p.name for p in outputs], torch_err, decode=decode)
        csim_vs_mono = base.mismatches
        rtl_failed = len(bad_frames)
        self.last_sim = {"simulator": simulator, "interface": "axis", "samples": n, "passed": n - rtl_failed,
                         "failed": rtl_failed, "seconds": round(sum(r["sim_seconds"] for r in got), 2),
                         "build_seconds": got[0]["build_seconds"], "gaps": gaps, "backpressure": backpressure,
                         "seed": seed, "cycles": got[0]["result"].cycles, "latency": whole["latency"],
                         "interval": whole["interval"], "free_running_cycles": free["result"].cycles,
                         "partitions": per,
                         "log": got[0]["result"].log[-4000:]}
        base.details = (details + base.details)[:100]
        base.mismatches += len(details) if details else (0 if ok else max(1, rtl_failed))
        base.bit_exact = base.bit_exact and ok
        base.extra = {"rtl_vs_csim": {"passed": n - rtl_failed, "failed": rtl_failed},
                      "csim_vs_monolithic_mismatches": csim_vs_mono, "simulator": simulator, "interface": "axis",
                      "latency_cycles": whole["latency"], "interval_cycles": whole["interval"],
                      "partition_timing": per, "testbench_dir": workdir,
                      "sim_seconds": self.last_sim["seconds"], "gaps": gaps, "backpressure": backpressure,
                      "seed": seed, "cycles": got[0]["result"].cycles}
        return base


def design_files(partitions: dict[str, dict], own: list[str]) -> list[str]:
    """Every partition's Verilog (da4ml's shared primitives once, first), then the stitched top's own files."""
    files: list[str] = []
    seen: set[str] = set()
    for meta in partitions.values():
        static = set(meta.get("static_files", []))
        for f in meta["files"]:
            if f in static:
                if os.path.basename(f) in seen:
                    continue
                seen.add(os.path.basename(f))
            files.append(os.path.abspath(os.path.join(meta["workdir"], f)))
    files.sort(key=lambda f: 0 if os.path.basename(os.path.dirname(f)) == "static" else 1)
    return files + list(own)


__all__ = ["STREAM_STEPS", "STREAM_TOP", "StreamDesign", "stream_job", "read_meta", "stream_stitch_job",
           "stream_top_synth_job", "frame_timing", "design_files", "synth_entry", "resource_totals",
           "monolithic_entry"]
