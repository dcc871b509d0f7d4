"""fxsplit.engine.tools: what a job's key covers besides its inputs (fxsplit's source digest, the versions of its
tools), measured in the submitting process and checked again in the workers."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("engine_helpers")      # its asserts report like a test's

from engine_helpers import (ROOT, assert_no_partial, compile_c, concat, counts, fake_tool,  # noqa: E402
                            prepend_path, write_file)
from fxsplit.engine import Job, run_jobs, source_digest, tool_versions  # noqa: E402


# a job module and a runner for builds in a fresh interpreter (own PATH / PYTHONPATH)
_JOB_MODULE = """
import os
from pathlib import Path


def write(workdir, inputs, name, content):
    Path(workdir, name).write_text(content)
    return {"pid": os.getpid()}


def where(workdir, inputs):
    import fxsplit.engine
    Path(workdir, "where.txt").write_text(fxsplit.engine.__file__)
    return {"fxsplit.engine": fxsplit.engine.__file__}
"""


_RUNNER = """
import json, sys
import fxsplit.engine
from fxsplit.engine import Job, run_jobs
import fxjobs

cache, tools = sys.argv[1], tuple(t for t in sys.argv[2].split(",") if t)
jobs = [Job("p0/a", "p0", "a", fxjobs.write, {"name": "a.txt", "content": "A"}, b"1"),
        Job("p1/a", "p1", "a", fxjobs.write, {"name": "b.txt", "content": "B"}, b"2", tools=tools),
        Job("p0/where", "p0", "where", fxjobs.where, {}, b"1", deps=("p0/a",))]
r = run_jobs(jobs, cache, max_workers=2, progress=False)
print(json.dumps({"engine": fxsplit.engine.__file__, "digest": fxsplit.engine.source_digest(),
                  "jobs": {j.id: j.to_dict() for j in r}}))
"""


def _run_build(tmp_path: Path, cache: Path, pythonpath: list[Path], tools: str = "",
               path_prefix: Path | None = None) -> dict:
    """run_jobs in a fresh interpreter (its workers inherit its environment); -> its report."""
    helpers = tmp_path / "helpers"
    helpers.mkdir(exist_ok=True)
    (helpers / "fxjobs.py").write_text(_JOB_MODULE)
    (helpers / "runner.py").write_text(_RUNNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*pythonpath, helpers]))}
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env.get('PATH', '')}"
    p = subprocess.run([sys.executable, str(helpers / "runner.py"), str(cache), tools], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.splitlines()[-1])


def test_editing_fxsplit_makes_every_job_a_miss(tmp_path):
    """A copy of the fxsplit package (first on PYTHONPATH): a comment edited in its Verilog
    emitter, which no job here imports, rebuilds every job."""
    copy = tmp_path / "site"
    shutil.copytree(ROOT / "fxsplit", copy / "fxsplit", ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    r1 = _run_build(tmp_path, cache, [copy])
    assert r1["engine"].startswith(str(copy)), r1["engine"]
    assert r1["jobs"]["p0/where"]["meta"]["fxsplit.engine"].startswith(str(copy)), "the workers use the copy"
    assert {j["state"] for j in r1["jobs"].values()} == {"built"}
    assert {j["fxsplit"] for j in r1["jobs"].values()} == {r1["digest"]}
    r2 = _run_build(tmp_path, cache, [copy])
    assert {j["state"] for j in r2["jobs"].values()} == {"cached"} and r2["digest"] == r1["digest"]

    emitter = sorted(p for p in (copy / "fxsplit").rglob("*.py")
                     if "build" not in p.relative_to(copy).parts and "endmodule" in p.read_text())[0]
    with open(emitter, "a") as f:
        f.write("\n# an edited comment\n")
    r3 = _run_build(tmp_path, cache, [copy])
    assert r3["digest"] != r1["digest"]
    assert {j["state"] for j in r3["jobs"].values()} == {"built"}, (emitter, r3["jobs"])
    assert all(r3["jobs"][k]["key"] != r1["jobs"][k]["key"] for k in r1["jobs"])
    manifest = json.loads((cache / r3["jobs"]["p0/a"]["key"] / "manifest.json").read_text())
    assert manifest["fxsplit"] == r3["digest"]


def test_a_tool_version_change_makes_its_jobs_a_miss(tmp_path):
    """Another yosys earlier on PATH (measured in the submitting process and in the workers)."""
    cache = tmp_path / "cache"
    real = tool_versions(["yosys"])["yosys"]
    r1 = _run_build(tmp_path, cache, [ROOT], tools="yosys")
    assert r1["jobs"]["p1/a"]["state"] == "built" and r1["jobs"]["p1/a"]["tools"] == {"yosys": real}
    r2 = _run_build(tmp_path, cache, [ROOT], tools="yosys")
    assert {j["state"] for j in r2["jobs"].values()} == {"cached"}
    fake = tmp_path / "fakebin"
    fake_tool(fake, "yosys", "Yosys 0.99+1 (git sha1 fake)")
    r3 = _run_build(tmp_path, cache, [ROOT], tools="yosys", path_prefix=fake)
    states = {k: j["state"] for k, j in r3["jobs"].items()}
    assert states == {"p0/a": "cached", "p1/a": "built", "p0/where": "cached"}, r3["jobs"]
    assert r3["jobs"]["p1/a"]["tools"] == {"yosys": "Yosys 0.99+1 (git sha1 fake)"}
    manifest = json.loads((cache / r3["jobs"]["p1/a"]["key"] / "manifest.json").read_text())
    assert manifest["tools"] == {"yosys": "Yosys 0.99+1 (git sha1 fake)"}
    r4 = _run_build(tmp_path, cache, [ROOT], tools="yosys")      # the real one again: its entry is still there
    assert r4["jobs"]["p1/a"]["state"] == "cached" and r4["jobs"]["p1/a"]["key"] == r1["jobs"]["p1/a"]["key"]


def test_a_worker_with_other_tool_versions_fails_the_job(tmp_path):
    """The key is computed for the g++ measured here; the pool's workers find another g++ first."""
    counter, cache, fake = tmp_path / "count", tmp_path / "cache", tmp_path / "fakebin"
    fake_tool(fake, "g++", "g++ (Fake) 9.9.9")
    real = tool_versions(["g++"])["g++"]
    assert real.startswith("g++") and "Fake" not in real
    jobs = [Job("p0/csim", "p0", "csim", compile_c, {"counter": str(counter)}, b"1", tools=("g++",)),
            Job("p0/hls", "p0", "hls", concat, {"counter": str(counter)}, b"1", deps=("p0/csim",)),
            Job("p1/csim", "p1", "csim", write_file, {"counter": str(counter)}, b"1")]
    pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver"),
                                  initializer=prepend_path, initargs=(str(fake),))
    with pool:
        r = run_jobs(jobs, cache, executor=pool, transfer="paths", progress=False)
    f = r["p0/csim"]
    assert f.state == "failed" and r["p0/hls"].state == "skipped" and r["p1/csim"].state == "built"
    assert f.tools == {"g++": real}
    assert f.error.startswith("worker ") and "/" in f.error.split()[1]       # worker host/pid
    assert f"has g++ 'g++ (Fake) 9.9.9' but the key was computed for '{real}'" in f.error
    assert "heterogeneous cluster" in f.error and "in the submitting process" in f.error
    assert counts(counter) == ["write_file out.txt"], "the job function ran on the mismatched worker"
    assert not (cache / f.key).exists() and not (cache / r["p0/hls"].key).exists()
    assert "has g++ 'g++ (Fake) 9.9.9'" in f.log_path.read_text()
    assert_no_partial(cache)
    # the same jobs on a matching pool: built
    r2 = run_jobs(jobs, cache, max_workers=1, progress=False)
    assert r2.ok and r2["p0/csim"].state == "built" and r2["p0/csim"].key == f.key


def test_tool_versions_measures_the_tools(tmp_path, monkeypatch):
    v = tool_versions(["yosys", "g++", "python", "numpy"])
    assert list(v) == ["yosys", "g++", "python", "numpy"]
    assert "Yosys" in v["yosys"] and v["g++"].startswith("g++") and v["python"] == sys.version
    import numpy
    assert v["numpy"] == numpy.__version__
    with pytest.raises(ValueError, match="unknown tool name.*'gcc'"):
        tool_versions(["g++", "gcc"])
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))                  # nothing there
    assert tool_versions(["g++", "yosys", "vivado", "iverilog"]) == {
        "g++": "missing", "yosys": "missing", "vivado": "missing", "iverilog": "missing"}
    # a reinstalled tool (same path, new mtime) is measured again
    exe = fake_tool(bindir, "iverilog", "Icarus Verilog version 10.0 (fake)")
    assert tool_versions(["iverilog"]) == {"iverilog": "Icarus Verilog version 10.0 (fake)"}
    fake_tool(bindir, "iverilog", "Icarus Verilog version 13.0 (fake)")
    st_ = exe.stat()
    os.utime(exe, ns=(st_.st_atime_ns, st_.st_mtime_ns + 2_000_000_000))
    assert tool_versions(["iverilog"]) == {"iverilog": "Icarus Verilog version 13.0 (fake)"}


def test_manifest_records_source_and_tools_and_a_disagreeing_one_is_rebuilt(tmp_path):
    counter, cache = tmp_path / "count", tmp_path / "cache"
    jobs = [Job("p0/csim", "p0", "csim", write_file, {"counter": str(counter)}, b"1", tools=("g++", "python"))]
    r = run_jobs(jobs, cache, max_workers=1, progress=False)
    j = r["p0/csim"]
    want = tool_versions(["g++", "python"])
    assert j.state == "built" and j.fxsplit == source_digest() and j.tools == want
    row = r.to_dict()["jobs"][0]
    assert row["fxsplit"] == source_digest() and row["tools"] == want
    mpath = cache / j.key / "manifest.json"
    m = json.loads(mpath.read_text())
    assert m["fxsplit"] == source_digest() and m["tools"] == want
    assert run_jobs(jobs, cache, max_workers=1, progress=False)["p0/csim"].state == "cached"
    for field, value in (("tools", {**want, "g++": "g++ (other) 1.0"}), ("fxsplit", "0" * 64)):
        Path(mpath).write_text(json.dumps({**m, field: value}))
        r2 = run_jobs(jobs, cache, max_workers=1, progress=False)
        assert r2["p0/csim"].state == "built" and r2["p0/csim"].key == j.key, field
        assert json.loads(mpath.read_text())[field] == m[field]
    assert len(counts(counter)) == 3
