"""The vendor flow (``flow="vitis"``): a Vitis HLS project per partition, built in parallel.

Every partition becomes an hls4ml Vitis-backend project (the same ModelGraph, config and boundary types as
the other flows; lowering runs with ``backend="Vitis"``). Its ``hls`` job writes the project and, where
``vitis_hls`` is on PATH, runs C synthesis and IP export and reads the synthesis report with hls4ml's own
reader (``hls4ml.report.parse_vivado_report``, strictly: :mod:`.reports`). With ``emit_only=True`` (no Vitis here) the job writes the
project only; ``stitched/vitis/`` then holds what a machine with the tools needs:

- ``stitch.json``: the partition DAG (``Partitioning.dag()``, the description the open Verilog stitcher reads
  too) plus, per partition, its IP's RTL interface as read from the hls4ml pragmas (:mod:`.interface`);
- ``vectors/``: random inputs over each input type's whole range and the expected outputs, from the
  bit-exact C simulation (raw words, one hex line per sample, as the RTL testbenches read them);
- ``stitch.tcl``: the same description for Vivado's Tcl (:mod:`.tcl_desc`, plus the computed wiring), read
  by ``tcl/fxsplit_stitch.tcl`` (package data of this module, ``TCL_DIR``, copied with its glue RTL into
  ``stitched/vitis/tcl``; an install without them is refused before anything is built);
- ``fxsplit_tb.v``: the self-checking testbench of the stitched wrapper, reading the vectors;
- ``run_vitis.sh``: every partition's Vitis HLS synthesis in parallel, then the stitched design in Vivado
  (block design, out-of-context synthesis, reports, IP export, xsim of the testbench).

Vivado is not installed here: the stitcher is tested in a real ``tclsh`` against a mock of Vivado's
commands (``tests/test_vivado_tcl.py``), which proves the wiring, not that Vivado accepts every command.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np

from ...errors import FxsplitError
from ...ir import STITCHED
from ...plan.costmodel import MiB, StepModel
from ..base import Built, Step
from ..hls4ml import HLS4MLFlow

VITIS_TOOLS = ("vitis_hls", "vivado")
TCL_DIR = Path(__file__).resolve().parent / "tcl"     # the Vivado stitcher, shipped as package data
STITCHER_FILES = ("fxsplit_stitch.tcl", "rtl/fxsplit_join.v")
# Vitis HLS and Vivado are not installed on the machine the other steps' models were measured on: these shipped
# models are rough guesses until a user's cache has measured the steps (then they are refitted from it)
STEPS = (
    Step("hls", tool="vitis_hls", tools=("hls4ml", "torch", "numpy", "vitis_hls"),
         doc="Vitis-backend hls4ml project; C synthesis and IP export where vitis_hls is on PATH",
         seconds=StepModel(a=30.0, b=5.0, d=1.0e-3, c=1.0, size="macs", per_layer=True),
         memory=StepModel(a=2048 * MiB, b=50 * MiB, d=0.0, c=1.0, size="macs", per_layer=True)),
    Step("vivado", tool="vivado", tools=("vivado",), scope="stitched", after=("hls",), when="vivado",
         model="vivado", doc="the stitched design in Vivado: block design, synthesis, reports, IP, xsim",
         seconds=StepModel(a=300.0, b=0.0, d=1.0e-2, c=1.0, size="adders"),
         memory=StepModel(a=4096 * MiB, b=0.0, d=1.0e4, c=1.0, size="adders")),
)
N_VECTORS = 200                    # default of config tb_vectors
VITIS_BUILD_ARGS = "reset=1 csim=0 synth=1 cosim=0 validation=0 export=1 vsynth=0"


def missing_tools(names=VITIS_TOOLS) -> list[str]:
    return [t for t in names if shutil.which(t) is None]


def stitcher_dir() -> Path:
    """The directory of the Vivado stitcher and its glue RTL, which every bundle carries; an error naming the
    missing files when this install of fxsplit lacks them (a bundle without them cannot be stitched)."""
    missing = [f for f in STITCHER_FILES if not (TCL_DIR / f).is_file()]
    if missing:
        raise FxsplitError(f"flow='vitis': this fxsplit install lacks the Vivado stitcher "
                           f"({', '.join(str(TCL_DIR / f) for f in missing)})",
                           hint="reinstall fxsplit from a complete wheel or source tree (pip install "
                                "--force-reinstall fxsplit); a package built without its package data "
                                "(fxsplit/flows/vitis/tcl) cannot write a bundle Vivado can stitch")
    return TCL_DIR


# ----------------------------------------------------------------------------- the hls job (worker side)

def hls_job(workdir: str, inputs: dict, spec, ports: dict, run_vitis: bool) -> dict:
    """Write the partition's Vitis-backend hls4ml project; with ``run_vitis``, run C synthesis and IP export
    and read the synthesis report."""
    from ...lower.spec import build_modelgraph, write_project
    from .interface import read_interface
    proj = os.path.join(workdir, spec.name)
    hm = build_modelgraph(spec, proj)
    write_project(hm, spec)
    with open(os.path.join(proj, "firmware", f"{spec.name}.cpp")) as f:
        iface = read_interface(f.read(), spec.name, spec.io_type, ports["inputs"], ports["outputs"])
    meta = {"project": spec.name, "interface": iface, "ran_vitis": False}
    if run_vitis:
        log = os.path.join(proj, "vitis_hls.log")
        with open(log, "w") as fh:
            r = subprocess.run(["vitis_hls", "-f", "build_prj.tcl", VITIS_BUILD_ARGS], cwd=proj, stdout=fh,
                               stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError(f"vitis_hls failed on {spec.name} (exit {r.returncode}); log: {log}")
        from .ipxact import check_ip
        from .reports import read_hls_report
        meta["hls_report"] = read_hls_report(proj, spec.name)
        # Vivado instantiates the IP from its component.xml: its ports must be the ones stitch.json describes
        got = check_ip(os.path.join(proj, f"{spec.name}_prj", "solution1", "impl", "ip", "component.xml"), iface,
                       spec.name)
        iface["control"] = [got["reset"] if c in ("ap_rst", "ap_rst_n") else c for c in iface["control"]]
        meta["ip_vlnv"] = got["vlnv"]
        meta["ran_vitis"] = True
    print(f"[fxsplit] {'built' if run_vitis else 'wrote'} the Vitis HLS project {spec.name}", file=sys.stdout)
    return meta


def ip_dir(artifact_dir: str, partition: str) -> str:
    """Where Vitis HLS's ``export_design`` leaves a partition's IP, inside its ``hls`` job's artifacts."""
    return os.path.join(artifact_dir, partition, f"{partition}_prj", "solution1", "impl", "ip")


def vivado_job(workdir: str, inputs: dict, desc: dict, files: dict) -> dict:
    """The stitched design in Vivado (``tcl/fxsplit_stitch.tcl``): block design from the DAG description, out-of-
    context synthesis with utilization and timing reports, IP export, and xsim of the self-checking testbench.

    ``files``: the bundle's stitcher, testbench and vectors (relative path -> text). The partitions' IP
    repositories are their ``hls`` jobs' artifacts (``inputs``), so this job runs wherever the engine puts it."""
    from .reports import read_timing, read_utilization
    from .tcl_desc import to_tcl
    for rel, text in files.items():
        path = os.path.join(workdir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    desc = json.loads(json.dumps(desc))
    for p in desc["partitions"]:
        p["ip_repo"] = ip_dir(inputs[f"{p['name']}/hls"], p["name"])
    with open(os.path.join(workdir, "stitch.tcl"), "w") as f:
        f.write(to_tcl(desc))
    log = os.path.join(workdir, "vivado_stitch.log")
    cmd = ["vivado", "-mode", "batch", "-nojournal", "-log", log, "-source", os.path.join("tcl", "fxsplit_stitch.tcl"),
           "-tclargs", "desc=stitch.tcl", "out=vivado", "synth=1", "export=1", "sim=1", "tb=fxsplit_tb.v",
           "tb_top=fxsplit_tb", "vectors=vectors"]
    print("[fxsplit] " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        tail = "\n".join(r.stdout.splitlines()[-30:])
        raise RuntimeError(f"Vivado's stitch of the partitions failed (exit {r.returncode}); its log: {log}\n{tail}")
    import re
    sim = Path(os.path.join(workdir, "vivado", "xsim.log")).read_text()
    m = re.search(r"(\d+) passed, (\d+) failed", sim)
    if m is None or int(m.group(2)) != 0 or int(m.group(1)) == 0:      # the stitcher checks this too
        raise RuntimeError("the xsim testbench did not pass: " + (m.group(0) if m else "no summary line"))
    rep = os.path.join(workdir, "vivado", "reports")
    return {"xsim": {"passed": int(m.group(1)), "failed": 0},
            "utilization": read_utilization(os.path.join(rep, "utilization.rpt")),
            "timing": read_timing(os.path.join(rep, "timing_summary.rpt")),
            "ip": os.path.join("vivado", "ip")}


# ----------------------------------------------------------------------------- the flow (main process)

class VitisFlow(HLS4MLFlow):
    name = "vitis"
    summary = "Vitis HLS per partition in parallel, DAG stitching in Vivado, xsim (emit_only: the complete bundle)"
    steps = (*HLS4MLFlow.steps, *STEPS)
    report_sections = ("vitis",)
    options = ("emit_only",)
    job_modules = (*HLS4MLFlow.job_modules, __name__)

    def __init__(self, *args, emit_only: bool = False, **kwargs):
        super().__init__(*args, emit_only=emit_only, **kwargs)
        self.emit_only = bool(emit_only)

    @classmethod
    def run_options(cls, fc, emit_only: bool = False, **options) -> dict:
        return {**super().run_options(fc, **options), "emit_only": bool(emit_only), "vivado": not emit_only}

    @classmethod
    def configure(cls, config, fc) -> None:
        """The flow builds with hls4ml's Vitis backend."""
        if (config or {}).get("backend", "Vitis") != "Vitis":
            raise FxsplitError(f"flow='vitis' builds with hls4ml's Vitis backend, config says "
                               f"backend={config['backend']!r}", hint="leave config['backend'] unset for this flow")
        fc.backend = "Vitis"

    @classmethod
    def report(cls, report: dict, design) -> None:
        """Each partition's C-synthesis estimates where Vitis HLS ran (``hls``, its latency and resources), and
        ``report["vitis"]``: their sum, or, where Vitis HLS did not run (emit only), where the bundle is. A sum that
        would leave partitions out is not given: ``missing`` names them."""
        from .reports import total
        build = design.build
        hls = {}
        for entry in report["partitions"]:
            r = build.results.get(f"{entry['name']}/hls") if build is not None else None
            est = (r.meta or {}).get("hls_report") if r is not None and r.state in ("built", "cached") else None
            if est is not None:
                entry["hls"] = est
                entry["latency"] = est["latency_cycles"]["worst"]
                entry["resources"] = dict(est["resources"])
                hls[entry["name"]] = est
        out = {"bundle": os.path.join(design.output_dir, STITCHED, "vitis"), "ran": bool(hls)}
        if hls:
            if len(hls) != len(report["partitions"]):
                out["missing"] = [p["name"] for p in report["partitions"] if p["name"] not in hls]
            else:
                out["total_estimate"] = total(hls)
        report["vitis"] = out

    @classmethod
    def report_html(cls, report: dict) -> str:
        from .html import section_html
        vt = report.get("vitis")
        return "<h2>Vitis HLS</h2>" + section_html(vt, report.get("partitions") or []) if isinstance(vt, dict) and vt else ""

    def validate(self) -> None:
        if self.fc.backend != "Vitis":
            raise FxsplitError(f"flow='vitis' builds with hls4ml's Vitis backend, not {self.fc.backend!r}",
                               hint="leave config['backend'] unset (or 'Vitis') for this flow")
        missing = missing_tools()
        if missing and not self.emit_only:
            raise FxsplitError(f"flow='vitis' needs {', '.join(missing)} on PATH, and this machine has "
                               f"{'none of them' if len(missing) == len(VITIS_TOOLS) else 'not those'}",
                               hint="source the Vitis/Vivado settings64.sh first, or pass emit_only=True "
                                    "(CLI --emit-only) to write every project and the run script for a machine "
                                    "that has the tools")
        stitcher_dir()                       # before anything is built: the bundle needs it
        self.ports = {part.name: self._port_descs(part) for part in self.pt.partitions}

    def _port_descs(self, part) -> dict:
        def desc(p):
            return {"port": p.name, "precision": p.precision, "size": p.size,
                    "pack": (p.shape[-1] if len(p.shape) > 1 else p.size) if self.fc.io_type == "io_stream" else 1}
        return {"inputs": [desc(p) for p in part.inputs], "outputs": [desc(p) for p in part.outputs]}

    def jobs(self) -> list:
        out = super().jobs()
        run = not self.emit_only
        tools = self.step("hls").tools
        for part in self.pt.partitions:
            spec = self.lowered.specs[part.name]
            out.append(self.job("hls", part.name, hls_job,
                                {"spec": spec, "ports": self.ports[part.name], "run_vitis": run},
                                key_data=spec.key_data() + json.dumps([self.ports[part.name], run]).encode(),
                                tools=tools if run else tuple(t for t in tools if t != "vitis_hls")))
        return out

    def export(self, result) -> None:
        from ...engine import copy_artifacts
        super().export(result)
        for r in result:
            if r.step == "hls" and r.state in ("built", "cached"):
                copy_artifacts(Path(r.artifact_dir) / r.meta["project"], self.out / r.partition / "vitis", r.key)

    def finish(self, result) -> Built:
        built = super().finish(result)
        bundle = self.out / STITCHED / "vitis"
        bundle.mkdir(parents=True, exist_ok=True)
        hls = {p.name: result[f"{p.name}/hls"].meta for p in self.pt.partitions}
        desc = self.pt.dag()
        desc.update({"top": "fxsplit_top", "io_type": self.fc.io_type, "part": self.fc.part,
                     "clock_period": self.fc.clock_period, "flow": "vitis"})
        for p in desc["partitions"]:
            p["project"] = os.path.relpath(self.out / p["name"] / "vitis", bundle)
            p["ip_repo"] = os.path.join(p["project"], f"{p['name']}_prj", "solution1", "impl", "ip")
            p["interface"] = hls[p["name"]]["interface"]
        from .tcl_desc import to_tcl, wrapper_testbench
        (bundle / "stitch.json").write_text(json.dumps(desc, indent=1))
        (bundle / "stitch.tcl").write_text(to_tcl(desc))            # the same description, for Vivado's Tcl
        (bundle / "fxsplit_tb.v").write_text(wrapper_testbench(desc, self.fc.tb_vectors))
        self._write_vectors(bundle / "vectors", built)
        tcl = bundle / "tcl"                 # the static Vivado stitcher travels with the bundle
        for f in STITCHER_FILES:
            (tcl / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stitcher_dir() / f, tcl / f)
        script = bundle / "run_vitis.sh"
        script.write_text(_run_script([p.name for p in self.pt.partitions]))
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return built

    def post_jobs(self, jobs: list) -> list:
        """With the tools (not emit only): the Vivado stitch, after the bundle is written. It depends on every
        partition's ``hls`` job (cached by now: they are passed again so the engine hands over their IPs)."""
        if self.emit_only:
            return []
        bundle = self.out / STITCHED / "vitis"
        files = {str(f.relative_to(bundle)): f.read_text()
                 for f in sorted(bundle.rglob("*")) if f.is_file() and
                 (f.parts[len(bundle.parts)] in ("tcl", "vectors") or f == bundle / "fxsplit_tb.v")}
        desc = json.loads((bundle / "stitch.json").read_text())
        hls = [j for j in jobs if j.step == "hls"]
        return hls + [self.job("vivado", STITCHED, vivado_job, {"desc": desc, "files": files},
                               key_data=json.dumps([desc, files], sort_keys=True), deps=tuple(j.id for j in hls))]

    def post_finish(self, result) -> dict:
        """Copy the stitched Vivado project out of the cache; its figures go to the report."""
        from ...engine import copy_artifacts
        r = result[f"{STITCHED}/vivado"]
        copy_artifacts(Path(r.artifact_dir), self.out / STITCHED / "vitis" / "vivado_run", r.key)
        return dict(r.meta)

    def _write_vectors(self, where: Path, built: Built) -> None:
        """Inputs drawn over each input type's whole raw range; expected outputs from the stitched C
        simulation (the uncut one is checked equal in ``verify``)."""
        from ...fixed import layout, raw_to_float, words_to_raw
        from ..hls4ml.csim import run_stitched
        from ..rtl.testbench import write_hex
        where.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        n = self.fc.tb_vectors
        xs = []
        for p in self.pt.inputs:
            lay = layout(p.precision)
            lo, hi = (-(1 << (lay.width - 1)), (1 << (lay.width - 1)) - 1) if lay.signed else (0, (1 << lay.width) - 1)
            raw = rng.integers(lo, hi, size=(n, p.size), endpoint=True, dtype=np.int64) \
                if lay.width <= 62 else np.array([[int(rng.integers(0, 2 ** 62)) % (hi - lo + 1) + lo
                                                   for _ in range(p.size)] for _ in range(n)], dtype=object)
            xs.append(raw_to_float(raw, p.precision).reshape(n, *p.shape))
        env = run_stitched(self.pt, built.csims, xs)
        for kind, ports in (("in", self.pt.inputs), ("exp", self.pt.outputs)):
            for p in ports:
                write_hex(str(where / f"{kind}_{p.name}.hex"), words_to_raw(env[p.name], p.precision),
                          layout(p.precision).width)
        (where / "README").write_text(
            f"{n} samples, one line per sample, all elements of a port packed (element 0 in the LSBs), "
            "raw two's complement of the port's hls4ml type (stitch.json), hex.\n"
            "in_<port>.hex: model inputs; exp_<port>.hex: the outputs of the bit-exact C simulation.\n")


def _run_script(partitions: list[str]) -> str:
    names = " ".join(partitions)
    stitch = """command -v vivado >/dev/null || { echo "vivado not on PATH: source the Vivado settings64.sh first" >&2; exit 1; }
# the whole design in Vivado: block design from stitch.tcl, out-of-context synthesis, reports, IP export, and
# the xsim run of the self-checking testbench on the vectors of the bit-exact C simulation
vivado -mode batch -nojournal -log vivado_stitch.log -source tcl/fxsplit_stitch.tcl -tclargs \\
  desc=stitch.tcl out=vivado synth=1 export=1 sim=1 tb=fxsplit_tb.v tb_top=fxsplit_tb vectors=vectors
echo "stitched design: vivado/ (reports in vivado/reports, IP in vivado/ip, simulation log in vivado_stitch.log)"
"""
    return f"""#!/usr/bin/env bash
# fxsplit vendor flow, on a machine with Vitis HLS and Vivado: every partition's C synthesis and IP export, in
# parallel, then the stitched design in Vivado.
# Usage: bash run_vitis.sh [jobs]   (from anywhere; paths are relative to this script)
set -euo pipefail
cd "$(dirname "$0")"
command -v vitis_hls >/dev/null || {{ echo "vitis_hls not on PATH: source the Vitis settings64.sh first" >&2; exit 1; }}
JOBS=${{1:-$(nproc)}}
PARTITIONS="{names}"
printf '%s\\n' $PARTITIONS | xargs -P "$JOBS" -I{{}} sh -c \\
  'cd ../../{{}}/vitis && vitis_hls -f build_prj.tcl "{VITIS_BUILD_ARGS}" > vitis_hls.log 2>&1 \\
   && echo "{{}}: Vitis HLS done" || {{ echo "{{}}: Vitis HLS failed, see {{}}/vitis/vitis_hls.log" >&2; exit 255; }}'
echo "every partition synthesized and exported (IP under <partition>/vitis/<partition>_prj/solution1/impl/ip)"
""" + stitch


__all__ = ["VitisFlow", "hls_job", "vivado_job", "ip_dir", "missing_tools", "VITIS_TOOLS"]
