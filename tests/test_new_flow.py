"""A flow defined here alone, registered at run time: its step (a new name, run by a new tool) is run by the
engine through ``compile``, priced by the cost model and the automatic split, and listed by the report, with no
edit anywhere else in fxsplit."""

import gzip
import json
import os
import subprocess

import pytest

import fxsplit
from conftest import FAST
from fxsplit import zoo
from fxsplit.engine import Tool
from fxsplit.flows import flow_names, register_flow, unregister_flow
from fxsplit.flows.base import Step
from fxsplit.flows.hls4ml import HLS4MLFlow
from fxsplit.ir import STITCHED
from fxsplit.plan.autosplit import plan_auto
from fxsplit.plan.costmodel import MiB, StepModel

GZIP = Tool("gzip", ("gzip",), ("--version",))      # a binary fxsplit itself never runs


def pack_job(workdir: str, inputs: dict, csim_job_id: str, project: str) -> dict:
    """The partition's hls4ml firmware, compressed by the gzip binary (the job's tool)."""
    src = os.path.join(inputs[csim_job_id], project, "firmware", f"{project}.cpp")
    dst = os.path.join(workdir, f"{project}.cpp.gz")
    with open(dst, "wb") as f:
        subprocess.run(["gzip", "-9", "-c", src], stdout=f, check=True)
    meta = {"archive": os.path.basename(dst), "bytes": os.path.getsize(src), "packed": os.path.getsize(dst)}
    with open(os.path.join(workdir, "pack.json"), "w") as f:
        json.dump(meta, f)
    return meta


def bundle_job(workdir: str, inputs: dict, partitions: list[str]) -> dict:
    """Every partition's archive sizes, in one index."""
    index = {}
    for name in partitions:
        with open(os.path.join(inputs[f"{name}/pack"], "pack.json")) as f:
            index[name] = json.load(f)
    with open(os.path.join(workdir, "index.json"), "w") as f:
        json.dump(index, f)
    return {"partitions": len(index), "packed": sum(v["packed"] for v in index.values())}


PACK_SECONDS = StepModel(a=0.25, b=0.0, d=1.0e-6, c=1.0, size="code")


class PackFlow(HLS4MLFlow):
    name = "pack"
    summary = "C simulation, and every partition's firmware compressed"
    steps = (*HLS4MLFlow.steps,
             Step("pack", tool="gzip", tools=(GZIP,), deps=("csim",), doc="the firmware, gzipped",
                  seconds=PACK_SECONDS, memory=StepModel(a=20 * MiB, b=0.0, d=0.0, c=1.0, size="code")),
             Step("bundle", tool=None, scope="stitched", after=("pack",), doc="one index of the archives",
                  seconds=StepModel(a=0.05, b=0.0, d=0.0, c=1.0, size="ports"),
                  memory=StepModel(a=10 * MiB, b=0.0, d=0.0, c=1.0, size="ports")))
    report_sections = ("pack",)

    def jobs(self) -> list:
        out = super().jobs()
        names = [p.name for p in self.pt.partitions]
        for name in names:
            out.append(self.job("pack", name, pack_job, {"csim_job_id": f"{name}/csim", "project": name},
                                key_data=name, deps=(f"{name}/csim",)))
        out.append(self.job("bundle", STITCHED, bundle_job, {"partitions": names}, key_data=json.dumps(names),
                            deps=tuple(f"{n}/pack" for n in names)))
        return out

    @classmethod
    def report(cls, report: dict, design) -> None:
        report["pack"] = {r.partition: r.meta["packed"] for r in design.build if r.step == "pack"}


@pytest.fixture
def pack_flow():
    register_flow(PackFlow)
    yield PackFlow
    unregister_flow("pack")


def test_a_flow_defined_in_a_test_file_runs_is_priced_and_reported(pack_flow, tmp_path):
    assert "pack" in flow_names()
    model, shape = zoo.build("jet_tagger")
    d = fxsplit.compile(model, shape, flow="pack", config=dict(FAST), output_dir=tmp_path / "out", jobs=2,
                        progress=False)
    names = [p.name for p in d.partitions]
    assert len(names) >= 2
    # the engine ran the new step, with the new tool's version in its key
    packs = {r.partition: r for r in d.build if r.step == "pack"}
    assert sorted(packs) == sorted(names)
    for r in packs.values():
        assert r.state == "built" and r.tools["gzip"].startswith("gzip")
        archive = os.path.join(r.artifact_dir, r.meta["archive"])
        with gzip.open(archive, "rb") as f:
            assert len(f.read()) == r.meta["bytes"] > r.meta["packed"] > 0
    bundle = d.build[f"{STITCHED}/bundle"]
    assert bundle.state == "built" and bundle.meta["partitions"] == len(names)
    assert bundle.meta["packed"] == sum(r.meta["packed"] for r in packs.values())
    # the cost model priced it with the flow's own declaration (no cache yet: the shipped model)
    for r in packs.values():
        assert r.predicted is not None and r.predicted >= PACK_SECONDS.a
    # the report lists the step and the flow's section
    steps = {(s["scope"], s["name"]): s for s in d.report["steps"]}
    assert steps["partition", "pack"]["tool"] == "gzip" and steps["stitched", "bundle"]["model"] == "stitch_bundle"
    assert d.report["pack"] == {n: packs[n].meta["packed"] for n in names}
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Steps of the pack flow" in html and "the firmware, gzipped" in html
    assert "<h2>pack</h2>" in html                 # the flow's own section, rendered by the default renderer
    # a rebuild reuses every job, the new ones too
    again = fxsplit.compile(model, shape, flow="pack", config=dict(FAST), output_dir=tmp_path / "out", jobs=2,
                            progress=False)
    assert {r.state for r in again.build} == {"cached"}
    # and the design is what every flow's is: the stitched C simulation equals the uncut one
    assert d.verify(d.stress_inputs(64, seed=3), level="csim").bit_exact


def test_the_automatic_split_prices_the_new_step(pack_flow, tmp_path):
    """The plan sums the new step into every partition's predicted time: with a pack step that dominates the
    build, the predicted walls grow by it, and compile(splits="auto") builds the chosen cuts with it."""
    model, shape = zoo.build("jet_tagger")
    base = plan_auto(model, shape, 2, precision="fixed<16,6>", flow="hls4ml")
    packed = plan_auto(model, shape, 2, precision="fixed<16,6>", flow="pack")
    assert "pack" in packed.model and "stitch_bundle" in packed.model
    assert packed.model["pack"]["source"] == "shipped default"
    assert sum(packed.predicted) > sum(base.predicted) + PACK_SECONDS.a * packed.partitions * 0.99
    d = fxsplit.compile(model, shape, splits="auto", workers=2, flow="pack", config=dict(FAST),
                        output_dir=tmp_path / "auto", jobs=2, progress=False)
    assert d.report["auto_split"]["model"]["pack"]["size"] == "code"
    assert {r.partition for r in d.build if r.step == "pack"} == {p.name for p in d.partitions}


def test_a_step_the_flow_does_not_declare_is_refused(pack_flow, tmp_path):
    class Sloppy(PackFlow):
        name = "sloppy"

        def jobs(self):
            return [*super().jobs(), self.job("zip", self.pt.partitions[0].name, pack_job)]

    register_flow(Sloppy)
    try:
        model, shape = zoo.build("jet_tagger")
        with pytest.raises(fxsplit.FxsplitError, match="declares no partition step 'zip'"):
            fxsplit.compile(model, shape, flow="sloppy", config=dict(FAST), output_dir=tmp_path / "s", progress=False)
        assert not (tmp_path / "s").exists()           # refused before anything was written
    finally:
        unregister_flow("sloppy")
