"""The flow interface: plan/validate, jobs, finish.

``compile`` drives every flow the same way::

    flow = get_flow(name)(partitioning, lowered, config, output_dir, reference=True)
    flow.validate()            # refuse, before any file is written, what the flow cannot build exactly
    jobs = flow.jobs()         # build.Job list: content-keyed, run in parallel by the engine
    flow.export(result)        # copy finished artifacts out of the cache (also after failures)
    built = flow.finish(result)   # main process, after success: load, collect -> Built

The base flow is the hls4ml flow: every flow builds the bit-accurate C simulation of each
partition (the stitched emulation behind ``Design.predict``) and of the uncut reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ir import Partitioning
from ..lower import FlowConfig, Lowered


@dataclass
class Built:
    """What a finished flow hands ``Design``."""
    csims: dict[str, Any]                   # partition name -> CSim
    monolithic: Any | None                  # the uncut CSim (None with reference=False)
    rtl: Any | None = None                  # flow-specific stitched artifacts (flows.rtl.RTLDesign)


class Flow:
    name = "hls4ml"
    # the modules of this flow's job functions (jobs() and post_jobs()): ``compile`` starts the workers,
    # which import them, while it lowers the model (fxsplit.engine.executors.prewarm)
    job_modules: tuple[str, ...] = ("fxsplit.flows.hls4ml.csim",)

    # flows that synthesize can build the uncut design too (compile(compare_monolithic=True))
    can_compare_monolithic = False

    def __init__(self, pt: Partitioning, lowered: Lowered, fc: FlowConfig, output_dir: str | Path,
                 reference: bool = True, compare_monolithic: bool = False):
        self.pt, self.lowered, self.fc = pt, lowered, fc
        self.out = Path(output_dir)
        self.reference = reference
        self.compare_monolithic = bool(compare_monolithic)

    def validate(self) -> None:
        """Refuse what this flow cannot build bit-exactly (nothing is written yet)."""
        self._validate_compare()

    def _validate_compare(self) -> None:
        from ..errors import FxsplitError
        if self.compare_monolithic and not self.can_compare_monolithic:
            raise FxsplitError(f"compare_monolithic synthesizes the uncut design beside the partitions; the {self.name} "
                               "flow synthesizes nothing here",
                               hint="use flow='rtl' (Yosys) for the side-by-side table")

    def jobs(self) -> list:
        from .hls4ml.csim import csim_job
        from ..engine import Job
        specs = dict(self.lowered.specs)
        if self.reference:
            specs[self.lowered.mono_spec.name] = self.lowered.mono_spec
        return [Job(id=f"{name}/csim", partition=name, step="csim", fn=csim_job, params={"spec": spec},
                    key_data=spec.key_data(), tools=("g++", "hls4ml", "torch", "numpy"))
                for name, spec in specs.items()]

    def post_jobs(self, jobs: list) -> list:
        """Jobs that need ``finish``'s output (run by ``compile`` after it, with the same engine and cache; the
        list may repeat earlier jobs, which are then cache hits, to depend on their artifacts)."""
        return []

    def post_finish(self, result) -> dict | None:
        """After the post jobs: collect their figures for the report."""
        return None

    def export(self, result) -> None:
        """Copy every finished hls4ml project to ``output_dir/<name>/hls4ml`` (also after a failed build:
        the partitions that did build are kept)."""
        from ..engine import copy_artifacts
        for r in result:
            if r.step == "csim" and r.state in ("built", "cached"):
                copy_artifacts(Path(r.artifact_dir) / r.meta["project"], self.out / r.meta["project"] / "hls4ml",
                               r.key)

    def finish(self, result) -> Built:
        """After a successful build (and ``export``): load the C simulations."""
        from .hls4ml.csim import CSim

        def load(name: str, inputs, outputs) -> CSim:
            r = result[f"{name}/csim"]
            return CSim(str(Path(r.artifact_dir) / r.meta["lib"]), r.meta["project"],
                        [p.precision for p in inputs], [p.precision for p in outputs],
                        [math.prod(s) for s in r.meta["inputs"]], [math.prod(s) for s in r.meta["outputs"]])

        csims = {p.name: load(p.name, p.inputs, p.outputs) for p in self.pt.partitions}
        mono = load(self.lowered.mono_spec.name, self.pt.inputs, self.pt.outputs) if self.reference else None
        return Built(csims, mono)
