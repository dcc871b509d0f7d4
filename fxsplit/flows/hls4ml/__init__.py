"""The hls4ml flow: one hls4ml project and bit-accurate C simulation per partition (any machine).

Every other flow builds on it: the C simulations are the stitched emulation behind ``Design.predict`` and, uncut,
the reference every level of verification compares with. The build step lives in :mod:`.csim`.
"""

from __future__ import annotations

import math
from pathlib import Path

from ...ir import MONOLITHIC
from ...plan.costmodel import StepModel
from ..base import Built, Flow, Step

CSIM = Step(
    "csim", tool="g++", tools=("g++", "hls4ml", "torch", "numpy"), reference=True, doc="hls4ml project + g++ C simulation",
    # fitted on the 36 g++ -O3 jobs (the default csim_opt) of two `benchmarks/bench_hls_build.py --repeat 5` runs of
    # ResNet20 with warm precompiled headers (1.8 s .. 7.6 s; the head, a stage, two halves) on a 2-core x86 machine.
    # Code size counts: 32x32 feature maps compile slower than 8x8 ones with the same layers. rms 0.47 s
    seconds=StepModel(a=1.596, b=0.0652, d=7.816e-07, c=1.15, size="code", per_layer=True),
    # fitted on 75 measured jobs of benchmarks/bench_memory.py (26 of them C simulations, 570 .. 780 MiB); the
    # intercept is mostly the worker (Python, torch, hls4ml: about 340 MiB). rms 14 MiB
    memory=StepModel(a=5.924e8, b=7.015e5, d=1.869e5, c=0.5, size="code", per_layer=True))


class HLS4MLFlow(Flow):
    name = "hls4ml"
    summary = "bit-accurate C simulation of every partition (hls4ml + g++); any machine"
    steps = (CSIM,)
    job_modules = ("fxsplit.flows.hls4ml.csim",)

    def jobs(self) -> list:
        from .csim import csim_job
        specs = dict(self.lowered.specs)
        if self.reference:
            specs[MONOLITHIC] = self.lowered.mono_spec
        return [self.job("csim", name, csim_job, {"spec": spec}, key_data=spec.key_data())
                for name, spec in specs.items()]

    def export(self, result) -> None:
        """Copy every finished hls4ml project to ``output_dir/<name>/hls4ml`` (also after a failed build:
        the partitions that did build are kept)."""
        from ...engine import copy_artifacts
        for r in result:
            if r.step == "csim" and r.state in ("built", "cached"):
                copy_artifacts(Path(r.artifact_dir) / r.meta["project"], self.out / r.meta["project"] / "hls4ml",
                               r.key)

    def finish(self, result) -> Built:
        """After a successful build (and ``export``): load the C simulations."""
        from .csim import CSim

        def load(name: str, inputs, outputs) -> CSim:
            r = result[f"{name}/csim"]
            return CSim(str(Path(r.artifact_dir) / r.meta["lib"]), r.meta["project"],
                        [p.precision for p in inputs], [p.precision for p in outputs],
                        [math.prod(s) for s in r.meta["inputs"]], [math.prod(s) for s in r.meta["outputs"]])

        csims = {p.name: load(p.name, p.inputs, p.outputs) for p in self.pt.partitions}
        mono = load(MONOLITHIC, self.pt.inputs, self.pt.outputs) if self.reference else None
        return Built(csims, mono)


__all__ = ["HLS4MLFlow", "CSIM"]
