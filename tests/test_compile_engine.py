"""fxsplit.compile on top of the build engine: incremental rebuilds, Dask, fault isolation, the
output-dir lock. Real g++ builds, real worker processes, a real Dask cluster; jet_tagger at -O0."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fxsplit
from fxsplit import zoo
from conftest import FAST, ROOT, random_inputs
from fxsplit.flows.hls4ml import csim as hflow

JOBS = {"p0/csim", "hidden/csim", "head/csim", "monolithic/csim"}


def shared_cache(tmp_path_factory):
    # the same cache as tests/test_cli.py: same model + config -> same keys
    return str(tmp_path_factory.getbasetemp() / "fxsplit-jet-O0-cache")


def states(design):
    return {r.id: r.state for r in design.build}


@pytest.fixture(scope="module")
def jet():
    return zoo.build("jet_tagger")


def test_incremental_rebuild_only_the_changed_partition(jet, tmp_path_factory, tmp_path):
    model, shape = jet
    cache = shared_cache(tmp_path_factory)
    d1 = fxsplit.compile(model, shape, config=dict(FAST), output_dir=tmp_path / "a", cache_dir=cache, progress=False)
    assert set(states(d1)) == JOBS and d1.build.ok
    assert (tmp_path / "a" / "report.json").is_file() and (tmp_path / "a" / "report.html").is_file()

    cfg = dict(FAST, partitions={"head": {"reuse_factor": 2}})
    d2 = fxsplit.compile(model, shape, config=cfg, output_dir=tmp_path / "a", cache_dir=cache, progress=False)
    # head's reuse factor changed: its csim rebuilds; the uncut reference does not (a reuse factor changes no bit
    # of a C simulation, and the reference is built with none: lower.spec.reference_config)
    assert states(d2) == {"p0/csim": "cached", "hidden/csim": "cached", "head/csim": "built",
                          "monolithic/csim": "cached"}
    # ... and the stitched design, built with reuse factor 2, still equals it bit for bit
    res2 = d2.verify(random_inputs(__import__("numpy").random.default_rng(1), shape, n=100))
    assert res2.bit_exact, res2.summary()
    # a numeric change of head (its precision) rebuilds head and the reference
    d4 = fxsplit.compile(model, shape, config=dict(FAST, partitions={"head": {"precision": "fixed<12,5>"}}),
                         output_dir=tmp_path / "b", cache_dir=cache, progress=False)
    assert states(d4) == {"p0/csim": "cached", "hidden/csim": "cached", "head/csim": "built",
                          "monolithic/csim": "built"}
    # the workers of the last compile stay warm for the next one (fxsplit.engine.executors)
    from fxsplit.engine.executors import warm_pool_pids
    assert {int(r.worker.rsplit("/", 1)[1]) for r in d4.build if r.state == "built"} <= set(warm_pool_pids())

    d3 = fxsplit.compile(model, shape, config=cfg, output_dir=tmp_path / "a", cache_dir=cache, progress=False)
    assert set(states(d3).values()) == {"cached"}
    x = random_inputs(__import__("numpy").random.default_rng(0), shape, n=100)
    res = d3.verify(x)
    assert res.bit_exact, res.summary()
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    assert rep["verification"]["bit_exact"] is True and rep["verification"]["n_samples"] == 100
    assert {j["id"]: j["state"] for j in rep["jobs"]} == states(d3)


def test_dask_executor_artifacts_come_back(jet, tmp_path):
    import distributed
    model, shape = jet
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, local_directory=str(tmp_path / "dask"))
    client = distributed.Client(cluster)
    call = torch.nn.Module.__call__
    try:
        d = fxsplit.compile(model, shape, config=dict(FAST), output_dir=tmp_path / "out",
                            cache_dir=tmp_path / "cache", executor=client.get_executor(), progress=False)
    finally:
        client.close()
        cluster.close()
    # no torch.fx trace left running in this process (the scheduler thread never unpickles a GraphModule)
    assert torch.nn.Module.__call__ is call
    assert set(states(d).values()) == {"built"}
    assert all(str(r.worker).startswith("tcp://127.0.0.1") for r in d.build)
    for name in ("p0", "hidden", "head"):
        assert (tmp_path / "out" / name / "hls4ml" / "firmware").is_dir()
    x = random_inputs(__import__("numpy").random.default_rng(1), shape, n=100)
    assert d.verify(x).bit_exact


# -- fault isolation. No real config makes g++ fail for one partition only (ap_types accept widths of
# 0 and > 1024 at compile time; ac_* types are converted for Vivado), so the fault is injected with a
# job function that wraps the real one and fails when a flag file sits next to the cache.

def faulty_csim_job(workdir, inputs, spec):
    cache_dir = Path(workdir).parents[2]          # cache_dir/.tmp/<entry>/work
    if (cache_dir / f"FAIL-{spec.name}").exists():
        print(f"injected fault: refusing to build {spec.name}", flush=True)
        raise RuntimeError(f"injected fault in {spec.name}")
    return hflow.csim_job(workdir, inputs, spec)


def test_failing_partition_is_isolated_and_the_rest_cached(jet, tmp_path, monkeypatch):
    model, shape = jet
    monkeypatch.setattr(hflow, "csim_job", faulty_csim_job)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "FAIL-head").touch()
    out = tmp_path / "out"
    with pytest.raises(fxsplit.FxsplitError) as ei:
        fxsplit.compile(model, shape, config=dict(FAST), output_dir=out, cache_dir=cache, progress=False,
                        reference=False)
    msg = str(ei.value)
    log = out / "logs" / "head_csim.log"
    assert "partition head, step csim (head/csim)" in msg and "injected fault in head" in msg
    assert "log: " in msg and "head" in msg.split("log: ", 1)[1].splitlines()[0]
    assert ei.value.partition == "head"
    logs = list((out / "logs").glob("head*"))
    assert logs and "injected fault" in logs[0].read_text(), (log, list((out / "logs").iterdir()))
    rep = json.loads((out / "report.json").read_text())        # a failed build still leaves a report
    assert {j["id"]: j["state"] for j in rep["jobs"]} == {"p0/csim": "built", "hidden/csim": "built",
                                                           "head/csim": "failed"}
    assert "Failures" in (out / "report.html").read_text()

    (cache / "FAIL-head").unlink()                               # the fault fixed
    d = fxsplit.compile(model, shape, config=dict(FAST), output_dir=out, cache_dir=cache, progress=False,
                        reference=False)
    assert states(d) == {"p0/csim": "cached", "hidden/csim": "cached", "head/csim": "built"}


def test_two_concurrent_compiles_on_one_output_dir(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "fxsplit", "compile", "models:jet_tagger", "-o", str(out), "--csim-opt=-O0",
           "--cache-dir", str(tmp_path / "cache"), "--no-progress", "-j", "2"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, so + se
    # one built everything, the other waited for the lock and then reused every job
    summaries = sorted(next(ln for ln in so.splitlines() if ln.startswith("fxsplit: JetTagger")) for so, _ in outs)
    assert any("4 built, 0 reused" in s for s in summaries), summaries
    assert any("0 built, 4 reused" in s for s in summaries), summaries
    assert any("waiting for another fxsplit run" in se for _, se in outs)
    r = subprocess.run([sys.executable, "-m", "fxsplit", "verify", str(out), "-n", "50", "--no-progress"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bit-exact" in r.stdout and "rebuilt:" not in r.stdout


def test_reference_config_drops_only_the_reuse_factor():
    from fxsplit.lower.spec import reference_config
    cfg = {"Model": {"Precision": {"default": "fixed<16,6>"}, "ReuseFactor": 4, "Strategy": "Resource"},
           "LayerName": {"fc1": {"ReuseFactor": 2}, "fc2": {"ReuseFactor": 8, "Precision": {"result": "fixed<8,3>"}}},
           "LayerType": {"Dense": {"ReuseFactor": 16}}}
    ref = reference_config(cfg)
    assert ref == {"Model": {"Precision": {"default": "fixed<16,6>"}, "ReuseFactor": 1, "Strategy": "Resource"},
                   "LayerName": {"fc2": {"Precision": {"result": "fixed<8,3>"}}}, "LayerType": {}}
    assert cfg["LayerName"]["fc1"] == {"ReuseFactor": 2}          # the user's config is not touched
    # the same numerics with other reuse factors give the same reference
    assert reference_config({**cfg, "LayerName": {"fc2": {"Precision": {"result": "fixed<8,3>"}}}}) == ref


@pytest.mark.parametrize("flow", ["hls4ml", "rtl", "vitis"])
def test_compile_prewarms_every_module_its_jobs_need(jet, tmp_path, flow, monkeypatch):
    """compile starts the workers (fxsplit.engine.executors.prewarm) with Flow.job_modules before it lowers the
    model; the build takes that pool only if it preloaded every job function's module."""
    if flow == "vitis":     # the tools are only looked up (validate), never run: their jobs are listed, not built
        bindir = tmp_path / "bin"
        bindir.mkdir()
        for tool in ("vitis_hls", "vivado"):
            (bindir / tool).write_text("#!/bin/sh\nexit 1\n")
            (bindir / tool).chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    from fxsplit.engine.scheduler import worker_modules
    from fxsplit.flows import get_flow
    from fxsplit.lower import lower, normalize_config
    model, shape = jet
    pt = fxsplit.partition(model, shape)
    fc = normalize_config(dict(FAST), pt, exact_accum_default=(flow == "rtl"))
    if flow == "vitis":
        fc.backend = "Vitis"
    lw = lower(pt, fc, str(tmp_path))
    fl = get_flow(flow)(lw.partitioning, lw, fc, tmp_path, reference=True)
    fl.validate()
    jobs = fl.jobs()
    assert {j.step for j in jobs} >= {"csim", *({"rtl": ["rtl", "synth"], "vitis": ["hls"]}.get(flow, []))}
    modules = set(worker_modules(jobs))
    if flow == "vitis":       # the post-build Vivado job (it needs finish()'s stitch.json to be listed)
        from fxsplit.flows.vitis import vivado_job
        modules.add(vivado_job.__module__)
    assert modules <= set(fl.job_modules)


def test_compile_respects_a_memory_budget(jet, tmp_path):
    """compile(memory=...): every job carries a predicted peak; under a budget smaller than any of them each job
    runs alone (checked from the jobs' start and end times), each named in a warning; the report shows the
    measured peak and CPU time of every job beside the prediction."""
    from fxsplit.engine.scheduler import MemoryBudgetWarning
    model, shape = jet
    with pytest.raises(fxsplit.FxsplitError, match="not a memory size"):
        fxsplit.compile(model, shape, config=dict(FAST), output_dir=tmp_path / "bad", memory="lots", progress=False)
    assert not (tmp_path / "bad").exists()
    with pytest.warns(MemoryBudgetWarning):
        d = fxsplit.compile(model, shape, config=dict(FAST), output_dir=tmp_path / "a", memory="1MiB", jobs=2,
                            progress=False)
    b = d.build
    assert b.ok and b.memory_budget == 2 ** 20 and len(b.warnings) == len(JOBS)
    spans = sorted((r.start, r.end) for r in b)
    assert all(e0 <= s1 for (_, e0), (s1, _) in zip(spans, spans[1:])), spans     # one job at a time
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    assert rep["build"]["memory_budget"] == 2 ** 20 and len(rep["build"]["warnings"]) == len(JOBS)
    for j in rep["jobs"]:
        assert j["predicted_rss"] > 2 ** 20 and j["peak_rss"] > j["base_rss"] > 0 and j["cpu_seconds"] > 0, j
    html = (tmp_path / "a" / "report.html").read_text()
    assert "memory budget 1 MiB" in html and "Memory and CPU per job" in html
    # the default budget: a fraction of the memory available; "off": none
    d2 = fxsplit.compile(model, shape, config=dict(FAST), output_dir=tmp_path / "a", progress=False)
    assert d2.build.memory_budget > 2 ** 28 and not d2.build.warnings
    d3 = fxsplit.compile(model, shape, config=dict(FAST), output_dir=tmp_path / "a", memory="off", progress=False)
    assert d3.build.memory_budget is None


def test_compile_leaves_the_models_parameters_where_they_are(tmp_path):
    """Jobs travel to the worker processes as bytes of the standard pickler. multiprocessing's own pickler, with
    torch's reductions, moves every tensor it sends into shared memory and frees the old memory under any NumPy
    array viewing it: hls4ml's in-process graphs of the model and the user's own views then read freed memory."""
    import numpy as np
    model, shape = zoo.build("jet_tagger")
    views = {k: (v.data_ptr(), v.detach().numpy(), v.detach().clone()) for k, v in model.state_dict().items()}
    fxsplit.compile(model, shape, config=dict(FAST), output_dir=tmp_path / "out", cache_dir=tmp_path / "cache",
                    jobs=2, progress=False)
    junk = [np.full(4096, 7.0, dtype=np.float32) for _ in range(256)]     # reuse any freed memory
    for k, v in model.state_dict().items():
        ptr, view, copy = views[k]
        assert v.data_ptr() == ptr, f"{k} was moved"
        assert np.array_equal(view, copy.numpy()), f"a NumPy view of {k} no longer reads its values"
    assert len(junk) == 256
