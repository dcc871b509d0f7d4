"""Automatic, balanced cuts and the cost model behind them (fxsplit.plan.autosplit, fxsplit.plan.costmodel), with real
builds: the cost model is fitted on the jobs a real build left in its cache, the chosen cuts are checked
against every other choice by brute force, and an automatically split design is built and verified bit-exact."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.plan.autosplit import plan_auto
from fxsplit.plan.costmodel import CostModel, StepModel, cache_records, default_models, partition_features
from fxsplit.frontend.partitioner import strip_markers
from fxsplit.zoo import build

ROOT = Path(__file__).resolve().parent.parent


def unmarked(name):
    """A zoo model without its markers."""
    model, shape = build(name)
    return strip_markers(model, shape), shape


def test_fit_recovers_a_known_law():
    """Least squares over the exponent grid: records drawn from t = a + b*layers + d*x^c (with 3 % noise) give
    back c and predictions within the noise; too few records keep the default."""
    rng = np.random.default_rng(0)
    true = StepModel(a=1.5, b=0.2, d=3e-3, c=1.3)
    recs = []
    for _ in range(30):
        f = {"layers": int(rng.integers(1, 12)), "adders": int(rng.integers(100, 50000))}
        recs.append(("synth", f, true.predict(f) * float(rng.normal(1, 0.03))))
    cm = CostModel.fit(recs)
    m = cm.steps["synth"]
    assert m.records == 30 and abs(m.c - 1.3) <= 0.1
    for _, f, t in recs:
        assert abs(cm.predict("synth", f) - true.predict(f)) <= 0.1 * true.predict(f)
    assert cm.source("synth") == "fitted on 30 jobs" and cm.source("rtl") == "shipped default"
    few = CostModel.fit(recs[:3])
    assert few.steps["synth"] is default_models()["synth"]


def test_features_are_what_the_layers_compute():
    model, shape = build("jet_tagger")                 # 16-64-32-32-5, markers after fc1/relu1 and relu3
    pt = fxsplit.partition(model, shape)
    f = partition_features(pt, "fixed<16,6>")
    assert [p.name for p in pt.partitions] == ["p0", "hidden", "head"]
    assert f["p0"]["macs"] == 16 * 64 and f["hidden"]["macs"] == 64 * 32 + 32 * 32 and f["head"]["macs"] == 32 * 5
    assert f["p0"]["weights"] == 16 * 64 + 64 and f["p0"]["layers"] == 2
    assert f["*"]["macs"] == sum(f[p]["macs"] for p in ("p0", "hidden", "head"))
    # nonzero digits: fc1's weights quantized to 10 fractional bits, counted directly
    w = model.fc1.weight.detach().numpy()
    q = np.abs(np.round(w * 1024)).astype(np.int64)
    assert f["p0"]["digits"] == sum(bin(int(v)).count("1") for v in q.ravel())
    assert f["p0"]["ports"] == (16 + 64) * 16 and f["head"]["ports"] == (32 + 5) * 16


def _cnn_with_bn():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
            self.bn0 = nn.BatchNorm2d(4)
            self.relu0 = nn.ReLU()
            self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(4)
            self.relu1 = nn.ReLU()
            self.flat = nn.Flatten()
            self.fc = nn.Linear(4 * 6 * 6, 5)

        def forward(self, x):
            x = self.relu0(self.bn0(self.conv0(x)))
            return self.fc(self.flat(self.relu1(self.bn1(self.conv1(x)))))
    return Net().eval(), (3, 6, 6)


def test_streaming_buffers_and_pooling_trees_are_features():
    """A streaming partition's registers: every window's line buffer and window (a padded convolution's rows
    are wider), the gather of a feature map before a Linear; a pooling's reduction tree counts in the kernels. The
    streaming Yosys models grow with them; jobs recorded before the buffer feature do not teach those models."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = nn.AvgPool2d(2)
            self.flat = nn.Flatten()
            self.fc = nn.Linear(4 * 3 * 3, 5)

        def forward(self, x):
            return self.fc(self.flat(self.pool(self.conv(x))))
    model = Net().eval()
    pt = fxsplit.partition(model, (3, 6, 6), splits=["pool", "flat"])
    f = partition_features(pt, "fixed<16,6>")                  # 16-bit inputs: one word per element
    conv, pool, head = (f[p.name] for p in pt.partitions)
    assert conv["buffer"] == (2 * 8 + 9) * 3                   # 2 rows of the padded 8-wide input + the 3x3 window
    assert pool["buffer"] == (1 * 6 + 4) * 4 and pool["kernels"] == 3 * 4     # 3 additions per window per channel
    assert head["buffer"] == 4 * 3 * 3 and f["*"]["buffer"] == conv["buffer"] + pool["buffer"] + head["buffer"]
    m = default_models()["stream_synth"]
    assert m.size == "stream" and m.predict({**pool, "buffer": 0}) < m.predict(pool)
    rec = [("stream_synth", {"kernels": k, "buffer": 10}, 40 + 0.01 * k ** 1.3) for k in range(100, 1100, 100)]
    assert CostModel.fit(rec).steps["stream_synth"].records == 10
    old = [("stream_synth", {"kernels": k}, 40 + 0.01 * k ** 1.3) for k in range(100, 1100, 100)]
    assert CostModel.fit(old).steps["stream_synth"] is default_models()["stream_synth"]


def test_never_cuts_a_group_hls4ml_fuses():
    model, shape = _cnn_with_bn()
    # a cost model in which every layer costs the same: balance would like every cut
    flat = CostModel({s: StepModel(a=0.0, b=10.0, d=0.0, c=1.0) for s in default_models()})
    plan = plan_auto(model, shape, 8, flow="hls4ml", reference=False, cost_model=flat)
    assert "bn0" not in plan.splits and "bn1" not in plan.splits
    assert plan.candidates == 5                   # relu0, conv1, relu1, flat, fc: not the two BatchNorms
    # two layers per partition at most ([conv0, bn0], [conv1, bn1] cannot be split): 5 partitions do it
    assert plan.partitions == 5 and max(plan.predicted) == 20


def test_markers_stay_and_the_choice_is_the_best_one():
    """Brute force over every subset of the candidate cuts (each priced by the same prediction): auto's
    predicted wall is the best one's (within the 5 % tie rule), and the markers are always kept."""
    model, shape = build("jet_tagger")
    for workers in (1, 2, 4):
        plan = plan_auto(model, shape, workers, flow="rtl")
        cands = ["relu1", "relu2", "fc3", "relu3"]       # between the markers (before fc2 and fc4)
        best = None
        for r in range(len(cands) + 1):
            for sub in itertools.combinations(cands, r):
                w = plan_auto(model, shape, workers, flow="rtl", splits=list(sub)).markers_only["predicted_wall"]
                best = w if best is None else min(best, w)
        assert plan.predicted_wall <= best * 1.051, (workers, plan.to_dict(), best)
        assert plan.predicted_wall <= plan.markers_only["predicted_wall"] + 1e-3      # (rounded to ms)
        pt = fxsplit.partition(model, shape, plan.splits)
        names = [p.name for p in pt.partitions]
        assert "hidden" in names and "head" in names and len(names) == plan.partitions


def test_balance_on_an_unmarked_model():
    model, shape = unmarked("wide_mlp")
    one = plan_auto(model, shape, 1, flow="rtl")
    four = plan_auto(model, shape, 4, flow="rtl")
    assert one.markers_only["partitions"] == 1
    assert four.partitions >= 2 and four.predicted_wall < four.markers_only["predicted_wall"]
    assert max(four.predicted) < sum(four.predicted)
    # the uncut build on one worker: the same prediction as one partition planned for one worker, whatever W
    assert one.uncut == {"workers": 1, "predicted_wall": one.markers_only["predicted_wall"]}
    assert four.uncut == one.uncut and four.predicted_wall < four.uncut["predicted_wall"]


@pytest.fixture(scope="module")
def auto_built(tmp_path_factory):
    model, shape = build("residual_cnn")
    out = tmp_path_factory.mktemp("auto") / "rc"
    d = fxsplit.compile(model, shape, splits="auto", workers=4, config=FAST, output_dir=out, progress=False,
                        jobs=2)
    return d, out, model, shape


def test_compile_auto_is_bit_exact_and_reported(auto_built):
    d, out, model, shape = auto_built
    au = d.report["auto_split"]
    assert au["workers"] == 4 and len(d.partitions) == au["partitions"]
    names = [p.name for p in d.partitions]
    assert "block_tail" in names and "head" in names              # the markers stay
    x = np.random.default_rng(1).uniform(-8, 8, size=(40, *shape))
    assert d.verify(x).bit_exact
    jobs = d.report["jobs"]
    assert all(j["predicted"] is not None and j["predicted"] > 0 for j in jobs)
    html = (out / "report.html").read_text()
    assert "<h2>Automatic split</h2>" in html and "Build time: predicted vs measured" in html
    for j in jobs:
        assert f"<td>{j['id']}</td>" in html


def test_cost_model_learns_from_the_cache(auto_built):
    """Every built job recorded its features in its cache manifest; a cache with enough of them refits the
    C-simulation model (and the prediction of the next build comes from it)."""
    d, out, model, shape = auto_built
    recs = cache_records(out / ".cache")
    built = [r for r in d.build if r.state == "built"]
    assert len(recs) == len(built) and {r[0] for r in recs} == {"csim"}
    # more builds of other cuts into the same cache
    for k, s in enumerate([["conv2"], ["relu0", "pool"]]):
        fxsplit.compile(model, shape, splits=s, config=FAST, output_dir=out.parent / f"more{k}",
                        cache_dir=out / ".cache", progress=False, jobs=2, reference=False)
    cm = CostModel.from_cache(out / ".cache")
    assert cm.steps["csim"].records >= 6 and cm.source("csim").startswith("fitted on")
    # the peak memory of every built job was measured and recorded too: its own model is fitted from them
    mrecs = cache_records(out / ".cache", target="peak_rss")
    assert len(mrecs) == len(cache_records(out / ".cache"))
    assert all(v > 50 * 2**20 for _, _, v in mrecs)          # a worker with torch and hls4ml, at least
    mm = CostModel.from_cache(out / ".cache", target="peak_rss")
    assert mm.steps["csim"].records >= 6 and mm.source("csim").startswith("fitted on")
    d2 = fxsplit.compile(model, shape, splits="auto", workers=2, config=FAST, output_dir=out.parent / "again",
                         cache_dir=out / ".cache", progress=False, jobs=2)
    assert d2.report["auto_split"]["model"]["csim"]["source"].startswith("fitted on")
    # the next build predicts each job's peak with that model (within a factor 2 of what it measures)
    for j in d2.report["jobs"]:
        if j["state"] == "built":
            assert 0.5 < j["predicted_rss"] / j["peak_rss"] < 2.0, j


def test_auto_split_cuts_until_every_job_fits_in_max_job_memory():
    """max_job_memory: more cuts, until every partition's largest job is predicted under the limit (here a
    peak-memory model of 1 kB per unit of each step's size, so that the limit binds); one layer alone above it is
    an error naming it."""
    model, shape = build("wide_mlp")
    mm = CostModel({s: StepModel(a=0.0, b=0.0, d=1000.0, c=1.0, size=m.size)
                    for s, m in default_models("peak_rss").items()}, default_models("peak_rss"), "peak_rss")
    free = plan_auto(model, shape, 2, precision="fixed<8,3>", memory_model=mm)
    limit = int(max(free.predicted_rss) * 0.999)
    lim = plan_auto(model, shape, 2, precision="fixed<8,3>", memory_model=mm, max_job_memory=limit)
    assert lim.partitions > free.partitions and max(lim.predicted_rss) <= limit < max(free.predicted_rss)
    assert lim.to_dict()["max_job_memory"] == limit and len(lim.predicted_rss) == lim.partitions
    with pytest.raises(fxsplit.FxsplitError, match="alone is predicted to need"):
        plan_auto(model, shape, 2, precision="fixed<8,3>", memory_model=mm, max_job_memory=1)
    with pytest.raises(fxsplit.FxsplitError, match="positive number of bytes"):
        plan_auto(model, shape, 2, memory_model=mm, max_job_memory=-5)


def test_auto_split_errors(tmp_path):
    model, shape = build("jet_tagger")
    with pytest.raises(fxsplit.FxsplitError, match="applies to splits='auto' only"):
        fxsplit.compile(model, shape, max_job_memory="4GiB", output_dir=tmp_path / "o")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(fxsplit.FxsplitError, match="workers must be a positive integer"):
            fxsplit.compile(model, shape, splits="auto", workers=bad, output_dir=tmp_path / "o")
    with pytest.raises(fxsplit.FxsplitError, match="applies to splits='auto' only"):
        fxsplit.compile(model, shape, workers=2, output_dir=tmp_path / "o")
    with pytest.raises(fxsplit.FxsplitError, match="with splits='auto' fxsplit chooses the partitions"):
        fxsplit.compile(model, shape, splits="auto", config={"partitions": {"hidden": {"reuse_factor": 2}}},
                        output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert fxsplit.auto_splits(model, shape, workers=2) == plan_auto(model, shape, 2, split_layers=True).splits


def test_cli_auto_split_records_the_cuts(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "fxsplit", "compile", "models:jet_tagger", "--auto-split", "2",
                        "--csim-opt", "O0", "--verify", "20", "-o", str(out), "--no-progress"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "auto split for 2 workers" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("build: "))     # measured vs predicted uncut
    assert "on 2 workers (auto split" in line and "the uncut build is predicted to take" in line, line
    assert "x this build's time)" in line, line                                     # a cold build: the ratio
    state = json.loads((out / "fxsplit.json").read_text())
    assert isinstance(state["splits"], list) and state["auto_split"]["workers"] == 2
    r = subprocess.run([sys.executable, "-m", "fxsplit", "verify", str(out), "-n", "10"], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr + r.stdout
    r = subprocess.run([sys.executable, "-m", "fxsplit", "compile", "models:jet_tagger", "--auto-split", "2",
                        "--splits", "fc2", "-o", str(tmp_path / "x")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "not both" in r.stderr


def test_cli_cut_inside_a_layer_and_verify_from_the_state(tmp_path):
    """--splits LAYER@K through the CLI; `fxsplit verify` rebuilds the same design from fxsplit.json."""
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "fxsplit", "compile", "models:jet_tagger", "--splits", "fc2@16",
                        "--csim-opt", "O0", "--verify", "30", "-o", str(out), "--no-progress"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "bit-exact" in r.stdout and json.loads((out / "fxsplit.json").read_text())["splits"] == ["fc2@16"]
    assert "layer fc2 built as 2 partitions, by outputs 0..15, 16..31" in r.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["layer_splits"] == {"fc2": [0, 16, 32]}
    assert [p["name"] for p in rep["partitions"]] == ["p0", "hidden", "p2", "head"]
    r = subprocess.run([sys.executable, "-m", "fxsplit", "verify", str(out), "-n", "10"], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0 and "bit-exact" in r.stdout, r.stderr + r.stdout
    r = subprocess.run([sys.executable, "-m", "fxsplit", "compile", "models:jet_tagger", "--split-layers", "on",
                        "-o", str(tmp_path / "x")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "give --auto-split W too" in r.stderr
