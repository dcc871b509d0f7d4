"""Open RTL flow: per-partition Verilog from the hls4ml ModelGraph via da4ml, parallel Yosys
synthesis, a stitched top with latency-balanced bypass paths, and a self-checking testbench.

Main process: refuse what cannot be matched bit for bit (before any build) and extract a
plain, picklable program per partition. Workers: emit Verilog (da4ml), synthesize (Yosys).
Main process again: stitch the partition modules along the DAG.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path


from ..build import copy_artifacts
from ..errors import FxsplitError
from ..ir import Partitioning
from . import rtl_lower as rl

DEFAULT_LATENCY_CUTOFF = 5.0
STITCHED_TOP = "fxsplit_top"


def module_name(partition: str) -> str:
    return f"fxs_{partition}"


def rtl_job(workdir: str, inputs: dict, program: dict, module: str, latency_cutoff: float | None) -> dict:
    meta = rl.emit_verilog(program, workdir, module, latency_cutoff=latency_cutoff)
    with open(os.path.join(workdir, "rtl_meta.json"), "w") as f:
        json.dump(meta, f, default=str)
    return meta


def synth_job(workdir: str, inputs: dict, rtl_job_id: str) -> dict:
    from ..synth import synthesize
    src = inputs[rtl_job_id]
    with open(os.path.join(src, "rtl_meta.json")) as f:
        meta = json.load(f)
    return synthesize(workdir, [os.path.join(src, p) for p in meta["files"]], meta["top"])


def _tool_versions() -> str:
    import da4ml
    from ..synth import find_yosys
    try:
        yosys = " ".join(find_yosys())
    except FxsplitError:
        yosys = "none"
    return f"da4ml={da4ml.__version__};yosys={yosys}"


def _digest(obj) -> bytes:
    return hashlib.sha256(pickle.dumps(obj, protocol=4)).hexdigest().encode()


@dataclass
class RTLPlan:
    programs: dict[str, dict]
    latency_cutoff: float | None
    synth: bool
    names: list[str]

    def jobs(self):
        from ..build import Job
        tools = _tool_versions()
        out = []
        for name in self.names:
            prog = self.programs[name]
            rid = f"{name}/rtl"
            out.append(Job(id=rid, partition=name, step="rtl", fn=rtl_job,
                           params={"program": prog, "module": module_name(name),
                                   "latency_cutoff": self.latency_cutoff},
                           key_data=b"%s|%s|%r|%s" % (_digest(prog), module_name(name).encode(),
                                                      self.latency_cutoff, tools.encode())))
            if self.synth:
                out.append(Job(id=f"{name}/synth", partition=name, step="synth", fn=synth_job,
                               params={"rtl_job_id": rid}, key_data=f"synth_xilinx|{tools}", deps=(rid,)))
        return out

    def finish(self, result, out: Path, pt: Partitioning) -> "RTLDesign":
        from ..stitch_rtl import stitch
        rtl, synth = {}, {}
        for name in self.names:
            r = result[f"{name}/rtl"]
            dest = copy_artifacts(Path(r.artifact_dir), out / name / "rtl", r.key)
            rtl[name] = dict(r.meta, workdir=str(dest))
            if self.synth:
                synth[name] = dict(result[f"{name}/synth"].meta)
        st = stitch(str(out), STITCHED_TOP, pt.partitions, pt.inputs, pt.outputs, pt.output_sources, rtl)
        return RTLDesign(top=st["top"], file=st["file"], files=st["files"], latency=st["latency"],
                         schedule=st.get("schedule"), partitions=rtl, synth=synth, stitched_dir=str(out / "stitched"))


def plan(pt: Partitioning, specs: dict, graphs: dict, fc) -> RTLPlan:
    """Refuse unsupported layers/types (before any build) and extract one program per partition."""
    if fc.io_type != "io_parallel":
        raise FxsplitError("flow='rtl' lowers fully parallel hls4ml models", hint="use config io_type='io_parallel'")
    programs = {}
    for part in pt.partitions:
        hm = graphs[part.name]
        rl.check_rtl_supported(hm, part.name)
        inv = {v: k for k, v in specs[part.name].name_map.items()}
        programs[part.name] = rl.extract_program(hm, part.name, input_names=[inv.get(v, v) for v in hm.inputs],
                                                 output_names=[p.name for p in part.outputs])
    cutoff = DEFAULT_LATENCY_CUTOFF if fc.latency_cutoff is None else fc.latency_cutoff
    return RTLPlan(programs, cutoff, fc.synth, [p.name for p in pt.partitions])


@dataclass
class RTLDesign:
    top: str
    file: str
    files: list[str]
    latency: int
    schedule: dict | None
    partitions: dict[str, dict]            # emit_verilog metadata (+ workdir) per partition
    synth: dict[str, dict]                 # Yosys results per partition (empty if synthesis was off)
    stitched_dir: str
    last_sim: dict = field(default_factory=dict)

    def partition_report(self, name: str) -> dict:
        meta = self.partitions[name]
        entry = {"latency": meta.get("latency"), "verilog": [os.path.join(meta["workdir"], f) for f in meta["files"]],
                 "rtl_module": meta.get("top")}
        s = self.synth.get(name)
        if s:
            entry["resources"] = {"LUT": s.get("lut"), "FF": s.get("ff"), "CARRY": s.get("carry"),
                                  "DSP": s.get("dsp")}
            entry["synth_seconds"] = s.get("seconds")
        return entry

    def stitched_report(self) -> dict:
        totals = None
        if self.synth:
            totals = {k.upper(): sum(int(s.get(k) or 0) for s in self.synth.values())
                      for k in ("lut", "ff", "carry", "dsp")}
        return {"top": self.top, "file": self.file, "latency": self.latency, "resources_total": totals,
                "simulation": self.last_sim or None}

    def verify(self, design, x, simulator: str = "verilator"):
        """Three ways: stitched RTL simulation == stitched C simulation == uncut C simulation."""
        from ..design import Mismatch, _as_list, compare, torch_err
        from ..testbench import simulate
        pt = design.partitioning
        if design._mono is None:
            raise FxsplitError("verify(level='rtl') compares against the uncut model: compile with reference=True")
        xs = design._inputs(x)
        n = xs[0].shape[0]
        raw_in = [rl.quantize_raw(a.reshape(n, -1), p.precision) for a, p in zip(xs, pt.inputs)]
        env = design.port_values(x)
        csim = [env[p.name].reshape(n, -1) for p in pt.outputs]
        mono = [y.reshape(n, -1) for y in design._mono(xs)]
        expected = [rl.to_raw(y, p.precision) for y, p in zip(csim, pt.outputs)]
        ports_in = [{"name": p.name, "precision": p.precision, "shape": list(p.shape)} for p in pt.inputs]
        ports_out = [{"name": p.name, "precision": p.precision, "shape": list(p.shape)} for p in pt.outputs]
        workdir = os.path.join(self.stitched_dir, f"tb_{simulator}")
        sim = simulate(simulator, self.files, self.top, ports_in, ports_out, raw_in, expected, self.latency, workdir)
        names = [p.name for p in pt.outputs]
        base = compare("rtl", csim, mono, names, torch_err(csim, [t.reshape(n, -1) for t in _as_list(
            design.predict_torch(x))]))
        prec = {p.name: p.precision for p in pt.outputs}
        vname = {rl.verilog_name(p.name): p.name for p in pt.outputs}
        rtl_details = [Mismatch(m.sample, vname.get(m.port, m.port), m.element,
                                float(rl.from_raw(m.got, prec[vname.get(m.port, m.port)])),
                                float(rl.from_raw(m.expected, prec[vname.get(m.port, m.port)])))
                       for m in sim.mismatches]
        self.last_sim = {"simulator": simulator, "samples": n, "passed": sim.passed, "failed": sim.failed,
                         "seconds": round(sim.seconds, 2), "log": sim.log if len(sim.log) < 4000 else sim.log[-4000:]}
        base.details = (rtl_details + base.details)[:100]
        base.mismatches += len(sim.mismatches) if sim.mismatches else sim.failed
        base.bit_exact = base.bit_exact and sim.ok and sim.passed == n
        base.extra = {"rtl_vs_csim": {"passed": sim.passed, "failed": sim.failed},
                      "csim_vs_monolithic_mismatches": base.mismatches - (len(sim.mismatches) or sim.failed),
                      "simulator": simulator, "latency_cycles": self.latency, "testbench_dir": workdir,
                      "sim_seconds": sim.seconds}
        return base

