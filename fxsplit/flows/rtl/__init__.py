"""Open RTL flow: per-partition Verilog from the hls4ml ModelGraph via da4ml, parallel Yosys
synthesis, a stitched top with latency-balanced bypass paths, and a self-checking testbench.

Two kinds of design, by the config's ``io_type``: ``io_parallel`` lowers every partition fully parallel (one
sample per cycle); ``io_stream`` makes every partition a streaming network, one hls4ml stream word per beat
(:mod:`.streamflow`, :mod:`.streamnet`).

Stages (each its own module of this package):

- ``lower``: refuse what cannot be matched bit for bit (main process, before any build) and
  extract a plain, picklable program per partition; emit Verilog through da4ml (worker).
- ``synth``: Yosys ``synth_xilinx`` of every partition (worker), and of the stitched top with the
  partitions as black boxes, so the top's delay lines and valid line are counted too.
- ``stitch``: the stitched top from the partition DAG description (``Partitioning.dag()``), as a job.
- ``testbench``: the self-checking testbench and simulator runners (Verilator, Icarus, xsim).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import FxsplitError
from ...ir import MONOLITHIC, STITCHED
from ...plan.costmodel import MiB, StepModel
from ...verify import Mismatch, VerifyResult, compare
from ..base import Built, Step
from ..hls4ml import HLS4MLFlow
from . import lower as rl
from . import streamflow as sf

DEFAULT_LATENCY_CUTOFF = 5.0
STITCHED_TOP = "fxsplit_top"

# The steps' shipped models: fitted by benchmarks/fit_cost_defaults.py on the 2-core x86 development machine
# (jobs=2), from three `benchmarks/bench_auto_split.py --models wide_mlp --repeat 2` runs (times) and 75 jobs of
# benchmarks/bench_memory.py (peak memory: the jet tagger and the wide MLP at fixed<8,3>); refitted from every
# user's own cache as soon as it holds enough jobs of a step.
STEPS = (
    # 27 jobs, 4.3 s .. 317 s, median error 11 %; rms 1.5 s. Memory: rms 6 MiB on 21 jobs
    Step("rtl", tool="da4ml", tools=("da4ml",), when="parallel", doc="da4ml Verilog of the partition",
         seconds=StepModel(a=0.0101, b=0.0, d=7.18e-05, c=1.35, size="adders"),
         memory=StepModel(a=3.665e8, b=0.0, d=3445.0, c=1.0, size="adders")),
    # 25 jobs, 4.7 s .. 277 s, with the Yosys script that skips synth_xilinx's memory maps where there are no
    # memories and reads the cell libraries from RTLIL; rms 7.1 s. Memory: rms 25 MiB on 20 jobs (520 MiB .. 2.6 GiB)
    Step("synth", tool="yosys", tools=("yosys",), deps=("rtl",), when=("parallel", "synth"),
         doc="Yosys synth_xilinx",
         seconds=StepModel(a=3.13, b=0.0, d=0.00763, c=1.2, size="adders"),
         memory=StepModel(a=5.197e8, b=0.0, d=4.016e5, c=1.0, size="adders")),
    # the stitched top: the mean of its jobs there (10 and 7 jobs; synthesis 1.4 s .. 3.9 s)
    Step("rtl", tool=None, scope="stitched", after=("rtl",), when="parallel",
         doc="the stitched tops (pipelined and stream)",
         seconds=StepModel(a=0.0071, b=0.0, d=0.0, c=1.0, size="ports"),
         memory=StepModel(a=360 * MiB, b=0.0, d=0.0, c=1.0, size="ports")),
    Step("synth", tool="yosys", tools=("yosys",), scope="stitched", deps=("rtl",), after=("rtl",),
         when=("parallel", "synth"),
         doc="Yosys on the stitched top, partitions as black boxes",
         seconds=StepModel(a=2.47, b=0.0, d=0.0, c=1.0, size="ports"),
         memory=StepModel(a=495 * MiB, b=0.0, d=0.0, c=1.0, size="ports")),
)


def module_name(partition: str) -> str:
    return f"fxs_{partition}"


# ----------------------------------------------------------------------------- jobs (worker side)

def warm_worker() -> None:
    """Load da4ml's tracer and Verilog generator once per warm worker (see :mod:`fxsplit.engine.executors`)."""
    import da4ml.codegen.rtl.verilog  # noqa: F401
    import da4ml.trace  # noqa: F401


def rtl_job(workdir: str, inputs: dict, program: dict, module: str, latency_cutoff: float | None,
            solver: dict | None = None) -> dict:
    meta = rl.emit_verilog(program, workdir, module, latency_cutoff=latency_cutoff, solver_options=solver)
    with open(os.path.join(workdir, "rtl_meta.json"), "w") as f:
        json.dump(meta, f, default=str)
    return meta


_rtl_meta = sf.read_meta


def synth_job(workdir: str, inputs: dict, rtl_job_id: str) -> dict:
    """Yosys on one partition (fully parallel or streaming: the Verilog job ``rtl_job_id`` wrote its
    ``rtl_meta.json``): counts, log, stat.json and netlist stay in the job's artifacts."""
    from .synth import synthesize
    src = inputs[rtl_job_id]
    meta = _rtl_meta(src)
    return synthesize(workdir, [os.path.join(src, p) for p in meta["files"]], meta["top"])


def stitch_job(workdir: str, inputs: dict, dag: dict, top: str) -> dict:
    """The stitched tops, from the DAG description and every partition's RTL metadata: the pipelined
    one (``<top>.v``) and the stream one (``<top>_axis.v``, :mod:`.stream`)."""
    from .stitch import generate_stitched
    from .stream import generate_stream_stitched
    rtl = {p["name"]: _rtl_meta(inputs[f"{p['name']}/rtl"]) for p in dag["partitions"]}
    text, latency, schedule = generate_stitched(top, dag, rtl)
    with open(os.path.join(workdir, f"{top}.v"), "w") as f:
        f.write(text)
    axis_top = f"{top}_axis"
    axis_text, edges = generate_stream_stitched(axis_top, dag, rtl)
    with open(os.path.join(workdir, f"{axis_top}.v"), "w") as f:
        f.write(axis_text)
    return {"top": top, "file": f"{top}.v", "latency": latency, "schedule": schedule,
            "axis": {"top": axis_top, "file": f"{axis_top}.v", "edges": edges}}


def top_synth_job(workdir: str, inputs: dict, top: str, partitions: list[str]) -> dict:
    """Yosys on the stitched top alone: partitions are black boxes (counted by their own jobs)."""
    from .synth import synthesize
    st = inputs[f"{STITCHED}/rtl"]
    boxes = [os.path.join(inputs[f"{name}/rtl"], _rtl_meta(inputs[f"{name}/rtl"])["wrapper"]) for name in partitions]
    return synthesize(workdir, [os.path.join(st, f"{top}.v")], top, blackboxes=boxes)


def _digest(obj) -> bytes:
    return hashlib.sha256(pickle.dumps(obj, protocol=4)).hexdigest().encode()


# ----------------------------------------------------------------------------- the flow (main process)

class RTLFlow(HLS4MLFlow):
    name = "rtl"
    summary = "da4ml Verilog per partition, Yosys in parallel, a stitched top simulated in Verilator or Icarus"
    steps = (*HLS4MLFlow.steps, *STEPS, *sf.STREAM_STEPS)
    verify_levels = ("csim", "rtl")
    job_modules = (*HLS4MLFlow.job_modules, __name__, sf.__name__)
    can_compare_monolithic = True
    exact_accum_default = True

    @classmethod
    def splits_layers_by_default(cls, io_type: str) -> bool:
        """In the open RTL flow one layer's Yosys time can be the build's: the automatic cuts may go inside a wide
        Linear or convolution (the pieces keep the layer's types; a streaming design splits only a layer predicted
        above a worker's fair share, each piece holding a line buffer of its own)."""
        return io_type in ("io_parallel", "io_stream")

    @classmethod
    def run_options(cls, fc, **options) -> dict:
        """``parallel`` or ``stream``: which of the two designs the config's ``io_type`` asks for."""
        io = getattr(fc, "io_type", "io_parallel")
        return {**super().run_options(fc, **options), "parallel": io == "io_parallel", "stream": io == "io_stream"}

    def validate(self) -> None:
        """Refuse unsupported layers/types (before any build) and extract one program per partition (and one of
        the uncut model with ``compare_monolithic``)."""
        super().validate()
        if self.compare_monolithic and not self.fc.synth:
            raise FxsplitError("compare_monolithic compares synthesized designs, and synthesis is off",
                               hint="leave config['synth'] on (CLI: drop --no-synth)")
        self.cutoff = DEFAULT_LATENCY_CUTOFF if self.fc.latency_cutoff is None else self.fc.latency_cutoff
        self.dag = self.pt.dag()
        self.stream = self.fc.io_type == "io_stream"
        if self.fc.io_type not in ("io_parallel", "io_stream"):
            raise FxsplitError(f"flow='rtl' has no {self.fc.io_type!r} design",
                               hint="use config io_type='io_parallel' or 'io_stream'")
        if self.stream:
            return self._validate_stream()
        self.programs = {}
        specs, graphs = self.lowered.specs, self.lowered.graphs
        for part in self.pt.partitions:
            hm = graphs[part.name]
            rl.check_rtl_supported(hm, part.name)
            self.programs[part.name] = rl.extract_program(hm, part.name, input_names=_port_names(hm, specs[part.name]),
                                                          output_names=[p.name for p in part.outputs])
        self.mono_program = None
        if self.compare_monolithic:
            mono, spec = self.lowered.mono, self.lowered.mono_spec
            rl.check_rtl_supported(mono, MONOLITHIC)
            self.mono_program = rl.extract_program(mono, MONOLITHIC, input_names=_port_names(mono, spec),
                                                   output_names=[p.name for p in self.pt.outputs])

    def _validate_stream(self) -> None:
        """Every partition's stream graph (refusing, naming the layer, what it cannot stream exactly)."""
        from .streamnet import stream_graph
        specs, graphs = self.lowered.specs, self.lowered.graphs
        self.nets = {}
        for part in self.pt.partitions:
            hm = graphs[part.name]
            self.nets[part.name] = stream_graph(hm, part.name, input_names=_port_names(hm, specs[part.name]),
                                                output_names=[p.name for p in part.outputs])
        self.mono_net = None
        if self.compare_monolithic:
            mono, spec = self.lowered.mono, self.lowered.mono_spec
            self.mono_net = stream_graph(mono, MONOLITHIC, input_names=_port_names(mono, spec),
                                         output_names=[p.name for p in self.pt.outputs])

    def _solver_key(self) -> bytes:
        """config['da4ml_solver'] in a Verilog job's key (it changes the adder graphs, never the numbers)."""
        return json.dumps(self.fc.da4ml_solver, sort_keys=True).encode()

    def _stream_jobs(self) -> list:
        out = []
        names = [p.name for p in self.pt.partitions]
        nets = dict(self.nets)
        if self.mono_net is not None:
            nets[MONOLITHIC] = self.mono_net
        digests = {}
        for name, net in nets.items():
            digests[name] = _digest(net)
            out.append(self.job("stream", name, sf.stream_job,
                                {"net": net, "module": module_name(name), "latency_cutoff": self.cutoff,
                                 "solver": self.fc.da4ml_solver},
                                key_data=b"%s|%s|%r|%s" % (digests[name], module_name(name).encode(), self.cutoff,
                                                           self._solver_key())))
            if self.fc.synth:
                out.append(self.job("stream_synth", name, synth_job, {"rtl_job_id": f"{name}/stream"},
                                    key_data="synth_xilinx -family xcup -flatten", deps=(f"{name}/stream",)))
        ids = tuple(f"{n}/stream" for n in names)
        ins, outs = [p.name for p in self.pt.inputs], [p.name for p in self.pt.outputs]
        out.append(self.job("stream", STITCHED, sf.stream_stitch_job,
                            {"parts": [{"name": n, "net": self.nets[n]} for n in names], "model_inputs": ins,
                             "model_outputs": outs, "top": sf.STREAM_TOP},
                            key_data=b"|".join([json.dumps([ins, outs, sf.STREAM_TOP]).encode()]
                                               + [digests[n] for n in names]), deps=ids))
        if self.fc.synth:
            out.append(self.job("stream_synth", STITCHED, sf.stream_top_synth_job,
                                {"top": sf.STREAM_TOP, "partitions": names},
                                key_data=f"synth_xilinx -family xcup -flatten|{sf.STREAM_TOP}",
                                deps=(f"{STITCHED}/stream", *ids)))
        return out

    def _finish_stream(self, result, built: Built) -> Built:
        from ...engine import copy_artifacts
        metas, synth = {}, {}
        for part in self.pt.partitions:
            r = result[f"{part.name}/stream"]
            dest = copy_artifacts(Path(r.artifact_dir), self.out / part.name / "rtl", r.key)
            metas[part.name] = dict(r.meta, workdir=str(dest))
            if self.fc.synth:
                synth[part.name] = _copy_synth(result[f"{part.name}/stream_synth"], dest / "synth")
        mono = None
        if self.mono_net is not None:
            r = result[f"{MONOLITHIC}/stream"]
            dest = copy_artifacts(Path(r.artifact_dir), self.out / MONOLITHIC / "rtl", r.key)
            mono = dict(r.meta, workdir=str(dest),
                        synth=_copy_synth(result[f"{MONOLITHIC}/stream_synth"], dest / "synth"))
        st = result[f"{STITCHED}/stream"]
        st_dir = copy_artifacts(Path(st.artifact_dir), self.out / STITCHED / "rtl", st.key)
        top_synth = _copy_synth(result[f"{STITCHED}/stream_synth"], st_dir / "synth") if self.fc.synth else None
        stitched = dict(st.meta, workdir=str(st_dir))
        files = sf.design_files(metas, [str(st_dir / f) for f in st.meta["files"]])
        built.rtl = sf.StreamDesign(top=st.meta["top"], files=files, partitions=metas, stitched=stitched,
                                    synth=synth, stitched_dir=str(self.out / STITCHED), top_synth=top_synth,
                                    monolithic=mono)
        return built

    def jobs(self) -> list:
        out = super().jobs()
        if self.stream:
            return out + self._stream_jobs()
        names = [p.name for p in self.pt.partitions]
        progs = dict(self.programs)
        if self.mono_program is not None:        # the uncut design, emitted and synthesized like a partition
            progs[MONOLITHIC] = self.mono_program
        for name in progs:
            prog = progs[name]
            rid = f"{name}/rtl"
            out.append(self.job("rtl", name, rtl_job,
                                {"program": prog, "module": module_name(name), "latency_cutoff": self.cutoff,
                                 "solver": self.fc.da4ml_solver},
                                key_data=b"%s|%s|%r|%s" % (_digest(prog), module_name(name).encode(), self.cutoff,
                                                           self._solver_key())))
            if self.fc.synth:
                out.append(self.job("synth", name, synth_job, {"rtl_job_id": rid},
                                    key_data="synth_xilinx -family xcup -flatten", deps=(rid,)))
        rtl_ids = tuple(f"{n}/rtl" for n in names)
        out.append(self.job("rtl", STITCHED, stitch_job, {"dag": self.dag, "top": STITCHED_TOP},
                            key_data=json.dumps([self.dag, STITCHED_TOP], sort_keys=True), deps=rtl_ids))
        if self.fc.synth:
            out.append(self.job("synth", STITCHED, top_synth_job, {"top": STITCHED_TOP, "partitions": names},
                                key_data=f"synth_xilinx -family xcup -flatten|{STITCHED_TOP}",
                                deps=(f"{STITCHED}/rtl", *rtl_ids)))
        return out

    def finish(self, result) -> Built:
        from ...engine import copy_artifacts
        built = super().finish(result)
        if self.stream:
            return self._finish_stream(result, built)
        rtl, synth = {}, {}
        for part in self.pt.partitions:
            name = part.name
            r = result[f"{name}/rtl"]
            dest = copy_artifacts(Path(r.artifact_dir), self.out / name / "rtl", r.key)
            rtl[name] = dict(r.meta, workdir=str(dest))
            if self.fc.synth:
                synth[name] = _copy_synth(result[f"{name}/synth"], dest / "synth")
        mono = None
        if self.mono_program is not None:
            r = result[f"{MONOLITHIC}/rtl"]
            dest = copy_artifacts(Path(r.artifact_dir), self.out / MONOLITHIC / "rtl", r.key)
            mono = dict(r.meta, workdir=str(dest), synth=_copy_synth(result[f"{MONOLITHIC}/synth"], dest / "synth"))
        st = result[f"{STITCHED}/rtl"]
        st_dir = copy_artifacts(Path(st.artifact_dir), self.out / STITCHED / "rtl", st.key)
        top_synth = _copy_synth(result[f"{STITCHED}/synth"], st_dir / "synth") if self.fc.synth else None
        part_files = _stitched_files(self.pt.partitions, rtl)
        files = part_files + [str(st_dir / st.meta["file"])]
        axis = dict(st.meta["axis"], file=str(st_dir / st.meta["axis"]["file"]))
        axis["files"] = part_files + [axis["file"]]
        built.rtl = RTLDesign(top=st.meta["top"], file=str(st_dir / st.meta["file"]), files=files,
                              latency=int(st.meta["latency"]), schedule=st.meta["schedule"], partitions=rtl,
                              synth=synth, top_synth=top_synth, stitched_dir=str(self.out / STITCHED), axis=axis,
                              monolithic=mono)
        return built


def _port_names(hm, spec) -> list[str]:
    """The model graph's inputs by the names of the tensors that cross the cuts (hls4ml may rename them)."""
    inv = {v: k for k, v in spec.name_map.items()}
    return [inv.get(v, v) for v in hm.inputs]


def _copy_synth(r, dest: Path) -> dict:
    """A synthesis job's log, stat.json and netlist, copied next to the RTL they describe."""
    from ...engine import copy_artifacts
    copy_artifacts(Path(r.artifact_dir), dest, r.key)
    meta = dict(r.meta)
    for k in ("log", "stat", "netlist"):
        if meta.get(k):
            meta[k] = str(dest / meta[k])
    return meta


def _stitched_files(partitions, rtl: dict) -> list[str]:
    """Every partition's Verilog (da4ml's shared primitives once, first)."""
    return sf.design_files({p.name: rtl[p.name] for p in partitions}, [])




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
    top_synth: dict | None = None          # Yosys on the stitched top alone (partitions as black boxes)
    last_sim: dict = field(default_factory=dict)
    axis: dict | None = None               # the stream-stitched top: top, file, files, edges (with FIFO depths)
    monolithic: dict | None = None         # compare_monolithic: the uncut design's emit_verilog metadata + synth

    def monolithic_report(self) -> dict | None:
        """The uncut design beside the stitched one: its latency, resources, Verilog and synthesis log."""
        return sf.monolithic_entry(self.monolithic, (self.monolithic or {}).get("latency"))

    def partition_report(self, name: str) -> dict:
        meta = self.partitions[name]
        entry = {"latency": meta.get("latency"), "verilog": [os.path.join(meta["workdir"], f) for f in meta["files"]],
                 "rtl_module": meta.get("top")}
        return {**entry, **sf.synth_entry(self.synth.get(name))}

    def stitched_report(self) -> dict:
        """Resources: every partition plus the top's own logic (delay lines, valid line)."""
        totals, top = sf.resource_totals(self.synth, self.top_synth)
        return {"top": self.top, "file": self.file, "latency": self.latency, "resources_total": totals,
                "resources_top": top, "top_synth_log": (self.top_synth or {}).get("log"),
                "axis_top": (self.axis or {}).get("top"), "axis_file": (self.axis or {}).get("file"),
                "simulation": self.last_sim or None}

    def verify(self, raw_in: list[np.ndarray], inputs: list, outputs: list, csim: list[np.ndarray],
               mono: list[np.ndarray], decode: list, torch_err: float, simulator: str = "verilator",
               interface: str | None = None, gaps: float = 0.3, backpressure: float = 0.3, seed: int = 1) -> VerifyResult:
        """Three ways: stitched RTL simulation == stitched C simulation == uncut C simulation.

        ``raw_in``: model inputs as raw integers of their types (N, size), as the C simulation converted
        them; ``inputs``/``outputs``: the model's ports; ``csim``/``mono``: stitched and uncut C-simulation
        outputs as raw integers, one (N, size) array per output; ``decode``: raw -> float per output.
        ``interface``: "pipeline" (the pipelined top, one sample per cycle) or "axis" (the stream top, with
        random input gaps and output backpressure: ``gaps``, ``backpressure``, ``seed``)."""
        from .testbench import simulate
        interface = interface or "pipeline"
        if interface not in ("pipeline", "axis"):
            raise FxsplitError(f"unknown RTL interface {interface!r}", hint="use 'pipeline' or 'axis'")
        n = raw_in[0].shape[0]
        ports_in = [{"name": p.name, "precision": p.precision, "shape": list(p.shape)} for p in inputs]
        ports_out = [{"name": p.name, "precision": p.precision, "shape": list(p.shape)} for p in outputs]
        if interface == "axis":
            if not self.axis:
                raise FxsplitError("this design has no stream-stitched top; rebuild it with this fxsplit")
            workdir = os.path.join(self.stitched_dir, f"tb_axis_{simulator}")
            sim = simulate(simulator, self.axis["files"], self.axis["top"], ports_in, ports_out, raw_in, csim,
                           self.latency, workdir, stream={"gaps": gaps, "backpressure": backpressure, "seed": seed})
        else:
            workdir = os.path.join(self.stitched_dir, f"tb_{simulator}")
            sim = simulate(simulator, self.files, self.top, ports_in, ports_out, raw_in, csim, self.latency, workdir)
        base = compare("rtl", csim, mono, [p.name for p in outputs], torch_err, decode=decode)
        prec = {p.name: p.precision for p in outputs}
        vname = {rl.verilog_name(p.name): p.name for p in outputs}
        rtl_details = [Mismatch(m.sample, vname.get(m.output, m.output), m.index,
                                float(rl.from_raw(m.got, prec[vname.get(m.output, m.output)])),
                                float(rl.from_raw(m.expected, prec[vname.get(m.output, m.output)])))
                       for m in sim.mismatches]
        self.last_sim = {"simulator": simulator, "interface": interface, "samples": n, "passed": sim.passed,
                         "failed": sim.failed, "seconds": round(sim.seconds, 2),
                         "log": sim.log if len(sim.log) < 4000 else sim.log[-4000:]}
        if interface == "axis":
            self.last_sim.update(gaps=gaps, backpressure=backpressure, seed=seed, cycles=sim.cycles)
        csim_vs_mono = base.mismatches
        base.details = (rtl_details + base.details)[:100]
        base.mismatches += len(sim.mismatches) if sim.mismatches else sim.failed
        base.bit_exact = base.bit_exact and sim.ok and sim.passed == n
        base.extra = {"rtl_vs_csim": {"passed": sim.passed, "failed": sim.failed},
                      "csim_vs_monolithic_mismatches": csim_vs_mono,
                      "simulator": simulator, "interface": interface, "latency_cycles": self.latency,
                      "testbench_dir": workdir, "sim_seconds": sim.seconds}
        if interface == "axis":
            base.extra.update(gaps=gaps, backpressure=backpressure, seed=seed, cycles=sim.cycles)
        return base


__all__ = ["RTLFlow", "RTLDesign", "module_name", "rtl_job", "synth_job", "stitch_job", "top_synth_job",
           "DEFAULT_LATENCY_CUTOFF", "STITCHED_TOP"]
