"""The build engine, with real worker processes (local pool and a real Dask LocalCluster)."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import dask  # noqa: F401  (a hard dependency: no importorskip)
import distributed
import pytest
from hypothesis import given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fxsplit.engine import (BuildResult, Job, JobResult, output_dir_lock, predict_wall_time,  # noqa: E402
                           run_jobs, source_digest, tool_versions, verify_entry)
from fxsplit.errors import FxsplitError  # noqa: E402
from conftest import sigint_state  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent),
                                                    os.environ.get("PYTHONPATH", "")])}


# ----------------------------------------------------------------------------- toy job functions
# (top level: they are pickled by reference and run in worker processes)

def _count(counter: str | None, what: str) -> None:
    if counter:
        with open(counter, "a") as f:
            f.write(what + "\n")


def write_file(workdir, inputs, name="out.txt", content="hello", counter=None, sleep=0.0, size=0):
    _count(counter, "write_file " + name)
    print(f"writing {name}")
    time.sleep(sleep)
    Path(workdir, name).write_text(content)
    if size:
        Path(workdir, "blob.bin").write_bytes(os.urandom(size))
    return {"name": name, "pid": os.getpid()}


def concat(workdir, inputs, counter=None, tag="cat"):
    """Reads every dependency's artifacts; fails loudly if one is missing."""
    _count(counter, "concat " + tag)
    parts = []
    for dep in sorted(inputs):
        for f in sorted(Path(inputs[dep]).glob("*.txt")):
            parts.append(f.read_text())
    Path(workdir, "out.txt").write_text("+".join(parts))
    Path(workdir, "sub").mkdir()
    Path(workdir, "sub", "n.json").write_text(json.dumps(len(parts)))
    return {"parts": len(parts), "text": "+".join(parts)}


def compile_c(workdir, inputs, counter=None):
    """A real subprocess (g++): its warnings (fd 2) and the binary's output (fd 1) go to the log."""
    _count(counter, "compile_c")
    src = Path(workdir, "hello.c")
    src.write_text('#include <stdio.h>\nint main(){int unused_var; printf("hello from C\\n"); return 0;}\n')
    subprocess.run(["g++", "-Wall", "-o", str(Path(workdir, "hello")), str(src)], check=True)
    subprocess.run([str(Path(workdir, "hello"))], check=True)
    return {"binary": "hello"}


def boom(workdir, inputs, counter=None):
    _count(counter, "boom")
    for i in range(40):
        print(f"line {i} of the tool output")
    subprocess.run(["sh", "-c", "echo 'ERROR: [HLS 200-70] something broke' >&2"])
    raise ValueError("synthesis failed: latency constraint not met")


def kill_once(workdir, inputs, marker, counter=None):
    _count(counter, "kill_once")
    print("about to die" if not os.path.exists(marker) else "second attempt")
    Path(workdir, "partial.txt").write_text("partial")
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    Path(workdir, "out.txt").write_text("survived")
    return {"ok": True}


def kill_always(workdir, inputs, counter=None):
    _count(counter, "kill_always")
    Path(workdir, "partial.txt").write_text("partial")
    os.kill(os.getpid(), signal.SIGKILL)


def sleeper(workdir, inputs, seconds, pid_dir, counter=None):
    _count(counter, "sleeper")
    Path(pid_dir).mkdir(exist_ok=True)
    Path(pid_dir, f"{os.getpid()}.pid").write_text(str(os.getpid()))
    Path(workdir, "partial.txt").write_text("partial")
    time.sleep(seconds)
    Path(workdir, "out.txt").write_text("slept")
    return {"slept": seconds}


def stamp(workdir, inputs, name, log, seconds=0.0):
    with open(log, "a") as f:
        f.write(f"start {name} {time.time()}\n")
    time.sleep(seconds)
    Path(workdir, "out.txt").write_text(name)
    with open(log, "a") as f:
        f.write(f"end {name} {time.time()}\n")
    return {}


def loaded_modules(workdir, inputs):
    import fxsplit.engine  # noqa: F401  (what every job imports)
    from fxsplit.errors import FxsplitError as E  # noqa: F401
    return {"torch": "torch" in sys.modules, "hls4ml": "hls4ml" in sys.modules,
            "main": getattr(sys.modules.get("__main__"), "__file__", None)}


def counts(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


def entries(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]


def assert_no_partial(cache: Path) -> None:
    """Every entry under cache/ is complete and verifies; .tmp holds nothing."""
    for e in entries(cache):
        assert verify_entry(e, e.name) is not None, f"partial/corrupt entry {e}"
    tmp = cache / ".tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), list(tmp.iterdir())


def chain_jobs(counter, key=b"v1", extra=b"") -> list[Job]:
    """key_data must define the result: jobs with equal step, fn and key_data share an entry."""
    c = str(counter)
    return [
        Job("p0/csim", "p0", "csim", write_file, {"name": "a.txt", "content": "A", "counter": c},
            key + b"a" + extra),
        Job("p1/csim", "p1", "csim", write_file, {"name": "b.txt", "content": "B", "counter": c}, key + b"b"),
        Job("p0/hls", "p0", "hls", concat, {"counter": c, "tag": "p0"}, key, deps=("p0/csim",)),
        Job("p1/hls", "p1", "hls", concat, {"counter": c, "tag": "p1"}, key, deps=("p1/csim",)),
        Job("stitched/tb", "stitched", "tb", concat, {"counter": c, "tag": "st"}, key, deps=("p0/hls", "p1/hls")),
    ]


# ----------------------------------------------------------------------------- cache

def test_cold_build_then_cached_rebuild(tmp_path):
    counter, cache = tmp_path / "count", tmp_path / "cache"
    r1 = run_jobs(chain_jobs(counter), cache, max_workers=2, progress=False)
    assert r1.ok and [j.state for j in r1] == ["built"] * 5
    assert len(counts(counter)) == 5
    st_ = r1["stitched/tb"]
    assert st_.meta == {"parts": 2, "text": "A+B"}
    assert (st_.artifact_dir / "out.txt").read_text() == "A+B"
    assert st_.artifact_dir.parent.parent == cache.resolve()
    assert st_.worker and "/" in st_.worker and st_.start <= st_.end and st_.attempts == 1
    assert "writing a.txt" in r1["p0/csim"].log_path.read_text()
    assert_no_partial(cache)

    r2 = run_jobs(chain_jobs(counter), cache, max_workers=2, progress=False)
    assert r2.ok and [j.state for j in r2] == ["cached"] * 5
    assert len(counts(counter)) == 5, "a cached job ran"
    assert r2["stitched/tb"].meta == st_.meta and r2["stitched/tb"].artifact_dir == st_.artifact_dir
    assert r2["p0/hls"].build_seconds == pytest.approx(r1["p0/hls"].build_seconds, abs=1e-3)
    d = r2.to_dict()
    assert d["cached"] == 5 and d["built"] == 0 and len(d["jobs"]) == 5
    json.dumps(d)


def test_changed_key_rebuilds_its_chain_only(tmp_path):
    counter, cache = tmp_path / "count", tmp_path / "cache"
    run_jobs(chain_jobs(counter), cache, max_workers=2, progress=False)
    before = len(counts(counter))
    r = run_jobs(chain_jobs(counter, extra=b"+new weights"), cache, max_workers=2, progress=False)
    states = {j.id: j.state for j in r}
    assert states == {"p0/csim": "built", "p0/hls": "built", "stitched/tb": "built",
                      "p1/csim": "cached", "p1/hls": "cached"}
    assert sorted(counts(counter)[before:]) == ["concat p0", "concat st", "write_file a.txt"]


def test_corrupted_entries_are_detected_and_rebuilt(tmp_path):
    counter, cache = tmp_path / "count", tmp_path / "cache"
    r = run_jobs(chain_jobs(counter), cache, max_workers=2, progress=False)
    a, b, st_ = r["p0/csim"], r["p1/csim"], r["stitched/tb"]
    (a.artifact_dir / "a.txt").write_text("X")                       # same size, other content
    (st_.artifact_dir / "sub" / "n.json").unlink()                   # missing file
    (b.artifact_dir.parent / "manifest.json").write_text("{not json")  # broken manifest
    r2 = run_jobs(chain_jobs(counter), cache, max_workers=2, progress=False)
    states = {j.id: j.state for j in r2}
    assert states == {"p0/csim": "built", "p1/csim": "built", "stitched/tb": "built",
                      "p0/hls": "cached", "p1/hls": "cached"}
    assert (r2["p0/csim"].artifact_dir / "a.txt").read_text() == "A"
    assert (r2["stitched/tb"].artifact_dir / "sub" / "n.json").exists()
    (r2["p0/hls"].artifact_dir / "extra.txt").write_text("stray")     # extra file
    r3 = run_jobs(chain_jobs(counter), cache, max_workers=2, progress=False)
    assert r3["p0/hls"].state == "built" and r3["p0/csim"].state == "cached"
    assert_no_partial(cache)


def test_workers_stay_light(tmp_path):
    """Pool workers import neither torch nor hls4ml (nor the submitter's __main__) unless a job does."""
    r = run_jobs([Job("p0/csim", "p0", "csim", loaded_modules, {}, b"1")], tmp_path, progress=False)
    assert r.ok and r["p0/csim"].meta == {"torch": False, "hls4ml": False, "main": None}


# a job module's warm_worker() runs once in every worker of a warm pool, before any job (executors._WARM_CODE)
WARMED: list[int] = []


WARM_PROBE = Path(tempfile.gettempdir()) / "fxsplit-test-slow-warm-up.json"


def warm_worker():
    WARMED.append(os.getpid())
    if WARM_PROBE.is_file():     # test_prewarm_can_wait_for_every_worker: a slow warm-up that leaves a trace
        probe = json.loads(WARM_PROBE.read_text())
        time.sleep(probe["sleep"])
        Path(probe["dir"], str(os.getpid())).write_text(str(time.time()))


def warm_probe(workdir, inputs, tag):
    return {"pid": os.getpid(), "warmed": WARMED == [os.getpid()]}


def _pids(result) -> set[int]:
    return {r.meta["pid"] for r in result}


def _assert_dead(pids, timeout=15.0):
    deadline = time.time() + timeout
    for pid in pids:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if time.time() > deadline:
                pytest.fail(f"worker {pid} still alive")
            time.sleep(0.05)


def test_warm_pool_is_reused_then_replaced(tmp_path, monkeypatch):
    """The engine's pool stays warm between runs: the next run with the same workers and fxsplit source takes
    its workers (which ran the job module's warm_worker() before any job); another size, an edited fxsplit or
    keep_warm=False end it, and its workers are gone."""
    from fxsplit.engine import executors, tools
    executors.discard_warm_pool()

    def jobs(tag):
        return [Job(f"p{i}/csim", f"p{i}", "csim", warm_probe, {"tag": tag}, f"{tag}{i}".encode()) for i in range(4)]

    r1 = run_jobs(jobs("a"), tmp_path / "c", max_workers=2, progress=False)
    assert r1.ok and all(r.meta["warmed"] for r in r1), [r.meta for r in r1]
    parked = executors.warm_pool_pids()
    assert len(parked) == 2 and _pids(r1) <= set(parked)
    r2 = run_jobs(jobs("b"), tmp_path / "c", max_workers=2, progress=False)
    assert r2.ok and _pids(r2) <= set(parked), "a warm worker was not reused"
    assert executors.warm_pool_pids() == parked

    r3 = run_jobs(jobs("c"), tmp_path / "c", max_workers=1, progress=False)     # another size
    assert r3.ok and not (_pids(r3) & set(parked))
    _assert_dead(parked)

    parked = executors.warm_pool_pids()
    monkeypatch.setattr(tools, "source_digest", lambda: "fxsplit edited since the workers started")
    r4 = run_jobs(jobs("d"), tmp_path / "c", max_workers=1, progress=False)
    assert r4.ok and not (_pids(r4) & set(parked))
    _assert_dead(parked)
    monkeypatch.undo()

    parked = executors.warm_pool_pids()
    r5 = run_jobs(jobs("e"), tmp_path / "c", max_workers=1, progress=False, keep_warm=False)
    assert r5.ok and executors.warm_pool_pids() == []
    _assert_dead(set(parked) | _pids(r5))


def test_warm_pool_expires_when_idle(tmp_path, monkeypatch):
    from fxsplit.engine import executors
    monkeypatch.setattr(executors, "WARM_IDLE_SECONDS", 0.5)
    r = run_jobs([Job("p0/csim", "p0", "csim", warm_probe, {"tag": "x"}, b"x")], tmp_path, max_workers=2,
                 progress=False)
    pids = executors.warm_pool_pids()
    assert r.ok and _pids(r) <= set(pids)
    _assert_dead(pids)
    assert executors.warm_pool_pids() == []


def test_prewarmed_workers_run_the_build(tmp_path):
    """prewarm (what compile calls before lowering) starts the workers; the run that follows uses them."""
    from fxsplit.engine import executors
    executors.discard_warm_pool()
    executors.prewarm(2, ["test_build_engine"])
    pids = executors.warm_pool_pids()
    assert len(pids) == 2
    r = run_jobs([Job(f"p{i}/csim", f"p{i}", "csim", warm_probe, {"tag": "w"}, b"w%d" % i) for i in range(3)],
                 tmp_path, max_workers=2, progress=False)
    assert r.ok and _pids(r) <= set(pids) and all(x.meta["warmed"] for x in r)


MB = 2 ** 20


def hog(workdir, inputs, mb, where, hold=1.0, burn=0.0):
    """Hold ``mb`` MiB of written (resident) memory for ``hold`` s, in a child process or in the worker;
    burn ``burn`` s of CPU in the child."""
    code = (f"import time\nb = bytes([1]) * ({mb} * {MB})\nt = time.process_time()\n"
            f"while time.process_time() - t < {burn}: pass\ntime.sleep({hold})\n")
    if where == "child":
        subprocess.run([sys.executable, "-c", code], check=True)
    else:
        b = bytes([1]) * (mb * MB)
        time.sleep(hold)
        del b
    return {"pid": os.getpid()}


def test_process_tree_from_proc_children_is_psutils():
    """The monitor lists the worker's descendants from /proc/<pid>/task/<tid>/children (cheap: what a job on a
    busy machine pays in CPU): the same processes, grandchildren included, as psutil's full scan; and the same
    resident sizes."""
    import psutil
    from fxsplit.engine import usage
    if usage._tree(os.getpid()) is None:
        pytest.skip("this kernel has no /proc/<pid>/task/<tid>/children")
    p = subprocess.Popen(["bash", "-c", "sleep 3 & sleep 3 & wait"])
    try:
        time.sleep(0.3)
        ours = set(usage._tree(os.getpid()))
        theirs = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
        assert ours == theirs and p.pid in ours and len(ours) >= 4, (ours, theirs)
        rss, hwm = usage._rss_hwm(p.pid)
        assert rss == psutil.Process(p.pid).memory_info().rss and hwm >= rss
    finally:
        p.kill()
        p.wait()


def test_job_memory_and_cpu_are_measured(tmp_path):
    """Peak resident memory of the worker's process tree and CPU time, per job, within 10 % of what the job
    allocated; recorded in the manifest (a cached job reports the figures of the build that made it)."""
    from fxsplit.engine import executors
    executors.discard_warm_pool()
    jobs = [Job("a/synth", "a", "synth", hog, {"mb": 400, "where": "child", "burn": 1.0}, b"a"),
            Job("b/synth", "b", "synth", hog, {"mb": 300, "where": "worker"}, b"b"),
            Job("c/synth", "c", "synth", hog, {"mb": 0, "where": "worker", "hold": 0.3}, b"c", deps=("b/synth",))]
    r = run_jobs(jobs, tmp_path / "cache", max_workers=1, progress=False)
    assert r.ok
    a, b, c = r["a/synth"], r["b/synth"], r["c/synth"]
    for res, mb in ((a, 400), (b, 300)):
        added = (res.peak_rss - res.base_rss) / MB
        assert abs(added - mb) <= 0.1 * mb, (res.id, added, res.peak_rss, res.base_rss)
    # the same warm worker ran b then c: c's peak is its own, not b's 300 MiB
    assert b.worker == c.worker and (c.peak_rss - c.base_rss) / MB < 30, (c.peak_rss, c.base_rss)
    assert a.cpu_seconds >= 0.9 and c.cpu_seconds < 0.5, (a.cpu_seconds, c.cpu_seconds)
    r2 = run_jobs(jobs, tmp_path / "cache", max_workers=1, progress=False)
    assert all(x.state == "cached" for x in r2)
    assert [(x.peak_rss, x.cpu_seconds) for x in r2] == [(x.peak_rss, x.cpu_seconds) for x in r]
    d = r2.to_dict()["jobs"][0]
    assert d["peak_rss"] == a.peak_rss and d["cpu_seconds"] == a.cpu_seconds


def _overlaps(result, ids) -> list[set[str]]:
    """The sets of jobs running together, from the build's own start and end times."""
    ev = sorted([(result[i].start, 1, i) for i in ids] + [(result[i].end, 0, i) for i in ids])
    running, out = set(), []
    for _, kind, i in ev:
        if kind:
            running.add(i)
            out.append(set(running))
        else:
            running.discard(i)
    return out


def _mem_jobs(tag, mbs, seconds=0.6):
    jobs = []
    for k, mb in enumerate(mbs):
        j = Job(f"p{k}/synth", f"p{k}", "synth", hog, {"mb": 1, "where": "worker", "hold": seconds}, f"{tag}{k}")
        j.cost = {"predicted_rss": mb * MB}
        jobs.append(j)
    return jobs


def test_memory_budget_holds(tmp_path):
    """The scheduler never starts a job whose predicted peak does not fit in what the running jobs leave of the
    budget (checked from the jobs' own start and end times); a job predicted above the whole budget runs alone,
    with a warning naming it; cached jobs take no memory."""
    from fxsplit.engine.scheduler import MemoryBudgetWarning
    budget = 1000 * MB
    mbs = [600, 600, 300, 300, 300, 1500, 100]
    jobs = _mem_jobs("a", mbs)
    with pytest.warns(MemoryBudgetWarning, match="p5/synth is predicted to need 1.46 GiB"):
        r = run_jobs(jobs, tmp_path / "c", max_workers=4, progress=False, memory_budget=budget)
    assert r.ok and r.memory_budget == budget and len(r.warnings) == 1 and "p5/synth" in r.warnings[0]
    ids = [j.id for j in jobs]
    together = _overlaps(r, ids)
    for group in together:
        predicted = sum(mbs[int(i[1])] for i in group)
        assert predicted <= 1000 or group == {"p5/synth"}, (group, predicted)
    assert max(len(g) for g in together) >= 3, together      # three 300 MiB jobs (or 300+300+100) did run together
    assert r.to_dict()["memory_budget"] == budget and r.to_dict()["jobs"][0]["predicted_rss"] == 600 * MB
    # without a budget the same jobs start by count alone: the two 600 MiB jobs run together
    r2 = run_jobs(_mem_jobs("b", mbs), tmp_path / "c", max_workers=4, progress=False)
    assert any({"p0/synth", "p1/synth"} <= g for g in _overlaps(r2, ids))
    with pytest.raises(FxsplitError, match="positive number of bytes"):
        run_jobs(jobs, tmp_path / "c", memory_budget=0, progress=False)


def over_limit(workdir, inputs, mode, mb, limit_mb=0, cgroup=None, counter=None):
    """Allocate ``mb`` MiB past a memory limit: a child under RLIMIT_AS (MemoryError), a child in a memory cgroup
    (the kernel's OOM killer kills it), or this worker itself moved into the cgroup (the worker is killed)."""
    import resource
    _count(counter, "over_limit " + mode)
    code = f"b = bytes([1]) * ({mb} * {MB})"
    if mode == "rlimit":
        def pre():
            resource.setrlimit(resource.RLIMIT_AS, (limit_mb * MB, limit_mb * MB))
        subprocess.run([sys.executable, "-c", code], preexec_fn=pre, check=True)
    elif mode == "cgroup-child":
        def pre():
            Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
        subprocess.run([sys.executable, "-c", code], preexec_fn=pre, check=True)
    else:
        Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
        b = bytes([1]) * (mb * MB)
        del b
    return {}


@pytest.fixture
def memory_cgroup():
    """A cgroup (v1 memory controller) limited to 100 MiB, no swap; skipped where this process cannot make one."""
    root = Path("/sys/fs/cgroup/memory")
    cg = root / f"fxsplit-test-{os.getpid()}-{time.time_ns()}"
    try:
        cg.mkdir()
        (cg / "memory.limit_in_bytes").write_text(str(100 * MB))
    except OSError as e:
        pytest.skip(f"cannot create a memory cgroup here ({e}): the OOM-killer cases need one")
    with contextlib.suppress(OSError):
        (cg / "memory.swappiness").write_text("0")
    yield cg
    for _ in range(100):
        try:
            cg.rmdir()
            break
        except OSError:
            time.sleep(0.1)


def test_a_job_over_an_address_space_limit_is_out_of_memory(tmp_path):
    counter = tmp_path / "count"
    r = run_jobs([Job("p0/synth", "p0", "synth", over_limit,
                      {"mode": "rlimit", "mb": 600, "limit_mb": 300, "counter": str(counter)}, b"rl")],
                 tmp_path / "c", max_workers=1, progress=False)
    j = r["p0/synth"]
    assert j.state == "failed" and j.attempts == 2 and counts(counter) == ["over_limit rlimit"] * 2
    assert j.out_of_memory == "an allocation failed (MemoryError)"
    assert j.error.startswith("out of memory: an allocation failed (MemoryError); last measured peak ")
    assert "memory budget none; it failed the same way when retried with no other job running" in j.error
    assert r.to_dict()["jobs"][0]["out_of_memory"] == j.out_of_memory


def test_a_tool_killed_by_the_oom_killer_is_out_of_memory(tmp_path, memory_cgroup):
    """The kernel's OOM killer kills a job's tool (a memory cgroup of 100 MiB set by the test): reported as out
    of memory with the kill, retried once alone (the job beside it waits), never a plain crash."""
    counter = tmp_path / "count"
    jobs = [Job("p0/synth", "p0", "synth", over_limit,
                {"mode": "cgroup-child", "mb": 400, "cgroup": str(memory_cgroup), "counter": str(counter)}, b"cg"),
            Job("p1/synth", "p1", "synth", hog, {"mb": 1, "where": "worker", "hold": 1.0}, b"side")]
    r = run_jobs(jobs, tmp_path / "c", max_workers=2, progress=False, memory_budget=8 * 2**30)
    j = r["p0/synth"]
    assert j.state == "failed" and j.attempts == 2 and r["p1/synth"].state == "built"
    assert j.out_of_memory.startswith("the kernel killed") and "OOM killer" in j.out_of_memory
    assert "out of memory: the kernel killed" in j.error and "memory budget 8.00 GiB" in j.error
    assert counts(counter) == ["over_limit cgroup-child"] * 2


def test_a_worker_killed_by_the_oom_killer_is_out_of_memory(tmp_path, memory_cgroup):
    """The OOM killer kills the worker itself: the broken pool is read as a kill for memory (exit -SIGKILL and the
    kernel's OOM-kill count), with the peak the worker's monitor last wrote; retried once alone."""
    counter = tmp_path / "count"
    r = run_jobs([Job("p0/synth", "p0", "synth", over_limit,
                      {"mode": "cgroup-worker", "mb": 400, "cgroup": str(memory_cgroup), "counter": str(counter)},
                      b"cw")], tmp_path / "c", max_workers=1, progress=False)
    j = r["p0/synth"]
    assert j.state == "failed" and j.attempts == 2 and counts(counter) == ["over_limit cgroup-worker"] * 2
    assert j.out_of_memory.startswith("its worker was killed by the kernel's OOM killer (SIGKILL"), j.out_of_memory
    assert "out of memory:" in j.error and "last measured peak" in j.error
    assert_no_partial(tmp_path / "c")


def test_no_change_rebuild_of_20_jobs_runs_nothing(tmp_path):
    counter, cache = tmp_path / "count", tmp_path / "cache"
    c = str(counter)
    jobs = [Job(f"p{i}/hls", f"p{i}", "hls", write_file, {"name": f"{i}.txt", "size": 250_000, "counter": c},
                str(i)) for i in range(10)]
    jobs += [Job(f"p{i}/synth", f"p{i}", "synth", concat, {"counter": c}, b"k", deps=(f"p{i}/hls",))
             for i in range(10)]
    r1 = run_jobs(jobs, cache, max_workers=2, progress=False)
    assert r1.ok and len(counts(counter)) == 20
    t0 = time.perf_counter()
    r2 = run_jobs(jobs, cache, max_workers=2, progress=False)
    dt = time.perf_counter() - t0
    assert all(j.state == "cached" and j.worker == "cache" for j in r2)
    assert len(counts(counter)) == 20, "a cached job ran"
    print(f"no-change rebuild of {len(jobs)} cached jobs (2.5 MB): {dt * 1000:.0f} ms")


# ----------------------------------------------------------------------------- scheduling

def test_dag_scheduling_is_not_in_waves(tmp_path):
    log = tmp_path / "stamps"
    jobs = [
        Job("a/slow", "a", "hls", stamp, {"name": "slow", "log": str(log), "seconds": 2.0}, b"1"),
        Job("b/fast", "b", "hls", stamp, {"name": "fast", "log": str(log), "seconds": 0.1}, b"1"),
        Job("b/next", "b", "synth", stamp, {"name": "next", "log": str(log), "seconds": 0.1}, b"1",
            deps=("b/fast",)),
        Job("a/next", "a", "synth", stamp, {"name": "anext", "log": str(log)}, b"1", deps=("a/slow",)),
    ]
    r = run_jobs(jobs, tmp_path / "cache", max_workers=2, progress=False)
    assert r.ok
    ev = {}
    for line in log.read_text().splitlines():
        kind, name, t = line.split()
        ev[(kind, name)] = float(t)
    assert ev[("start", "next")] < ev[("end", "slow")], "b/next waited for an unrelated job"
    assert ev[("start", "anext")] >= ev[("end", "slow")]
    assert r["b/next"].start < r["a/slow"].end


def test_ready_jobs_longest_predicted_path_first(tmp_path):
    """Among ready jobs the engine starts the one with the longest predicted remaining path (the list scheduling
    the report and the automatic split predict with), then the job order; without predictions, the job order."""
    log = tmp_path / "stamps"

    def job(jid, pred, deps=()):
        j = Job(jid, jid.split("/")[0], jid.split("/")[1], stamp, {"name": jid, "log": str(log)}, jid,
                deps=tuple(deps))
        j.cost = None if pred is None else {"predicted": pred}
        return j

    jobs = [job("a/csim", 1.0), job("b/csim", 1.0), job("c/rtl", 0.5), job("c/synth", 50.0, ["c/rtl"]),
            job("d/rtl", 0.5), job("d/synth", 20.0, ["d/rtl"])]
    r = run_jobs(jobs, tmp_path / "c1", max_workers=1, progress=False)
    assert r.ok
    order = [j for j, _ in sorted(((x.id, x.start) for x in r), key=lambda t: t[1])]
    assert order == ["c/rtl", "c/synth", "d/rtl", "d/synth", "a/csim", "b/csim"], order
    plain = [job(j.id, None, j.deps) for j in jobs]
    r2 = run_jobs([Job(j.id, j.partition, j.step, j.fn, j.params, b"plain" + j.id.encode(), deps=j.deps)
                   for j in plain], tmp_path / "c2", max_workers=1, progress=False)
    order2 = [j for j, _ in sorted(((x.id, x.start) for x in r2), key=lambda t: t[1])]
    assert order2 == ["a/csim", "b/csim", "c/rtl", "c/synth", "d/rtl", "d/synth"], order2      # the job order


def test_invalid_graphs_are_user_errors(tmp_path):
    j = lambda i, deps=(): Job(i, "p0", "csim", write_file, {}, b"", deps)  # noqa: E731
    with pytest.raises(FxsplitError, match="same id"):
        run_jobs([j("x"), j("x")], tmp_path, progress=False)
    with pytest.raises(FxsplitError, match="not in the job list"):
        run_jobs([j("x", ("y",))], tmp_path, progress=False)
    with pytest.raises(FxsplitError, match="cycle: x -> y -> x"):
        run_jobs([j("x", ("y",)), j("y", ("x",))], tmp_path, progress=False)
    with pytest.raises(FxsplitError, match="cycle: b -> c -> d -> b"):
        run_jobs([j("a"), j("b", ("c",)), j("c", ("d",)), j("d", ("b", "a"))], tmp_path, progress=False)
    with pytest.raises(ValueError, match="'p0/x': unknown tool name.*'gcc'"):
        run_jobs([Job("p0/x", "p0", "csim", write_file, {}, b"", tools=("gcc",))], tmp_path, progress=False)


# ----------------------------------------------------------------------------- faults

def test_failure_is_isolated_with_log_and_tail(tmp_path, capsys):
    counter, cache, logs = tmp_path / "count", tmp_path / "cache", tmp_path / "logs"
    c = str(counter)
    jobs = [
        Job("p0/hls", "p0", "hls", boom, {"counter": c}, b"1"),
        Job("p0/synth", "p0", "synth", concat, {"counter": c, "tag": "p0s"}, b"1", deps=("p0/hls",)),
        Job("p1/hls", "p1", "hls", write_file, {"counter": c, "sleep": 0.5}, b"1"),
        Job("p1/synth", "p1", "synth", concat, {"counter": c, "tag": "p1s"}, b"1", deps=("p1/hls",)),
        Job("stitched/tb", "stitched", "tb", concat, {"counter": c, "tag": "st"}, b"1",
            deps=("p0/synth", "p1/synth")),
        Job("p2/csim", "p2", "csim", compile_c, {"counter": c}, b"1"),
    ]
    r = run_jobs(jobs, cache, max_workers=2, progress=True, log_dir=logs)
    states = {j.id: j.state for j in r}
    assert states == {"p0/hls": "failed", "p0/synth": "skipped", "stitched/tb": "skipped",
                      "p1/hls": "built", "p1/synth": "built", "p2/csim": "built"}
    assert not r.ok and [f.id for f in r.failed] == ["p0/hls"]
    f = r["p0/hls"]
    assert f.error == "ValueError: synthesis failed: latency constraint not met"
    assert f.log_path == logs.resolve() / "p0_hls.log" and f.log_path.exists()
    assert "ERROR: [HLS 200-70] something broke" in f.log_path.read_text()   # a subprocess' stderr
    tail = f.error_tail.splitlines()
    assert len(tail) == 30 and "ValueError: synthesis failed" in tail[-1] and "line 39" in f.error_tail
    assert f.artifact_dir is None and f.debug_dir and f.debug_dir.exists()
    # subprocess output (g++ warning on fd 2, the binary's stdout on fd 1) is in the job's log
    clog = r["p2/csim"].log_path.read_text()
    assert "unused_var" in clog and "hello from C" in clog
    assert (logs / "p2_csim.log").exists()
    out = capsys.readouterr().out
    assert "[fxsplit] p1 hls built in" in out and "[fxsplit] p0 hls FAILED: ValueError" in out
    assert "[fxsplit] p0 synth skipped" in out
    with pytest.raises(FxsplitError) as ei:
        r.raise_for_failures()
    msg = str(ei.value)
    assert "partition p0, step hls" in msg and str(f.log_path) in msg and "something broke" in msg
    assert ei.value.partition == "p0"
    assert_no_partial(cache)
    # second run: the good ones are reused, the failing one runs (and fails) again
    n = len(counts(counter))
    r2 = run_jobs(jobs, cache, max_workers=2, progress=False)
    assert {j.id: j.state for j in r2} == states | {"p1/hls": "cached", "p1/synth": "cached", "p2/csim": "cached"}
    assert counts(counter)[n:] == ["boom"]


def test_sigkilled_worker_is_retried_without_partial_entry(tmp_path):
    counter, cache, marker = tmp_path / "count", tmp_path / "cache", tmp_path / "marker"
    c = str(counter)
    jobs = [
        Job("p0/hls", "p0", "hls", kill_once, {"marker": str(marker), "counter": c}, b"1"),
        Job("p0/synth", "p0", "synth", concat, {"counter": c, "tag": "after"}, b"1", deps=("p0/hls",)),
        # a bystander running while the pool breaks: resubmitted and not charged an attempt
        Job("p1/hls", "p1", "hls", write_file, {"counter": c, "sleep": 1.0}, b"1"),
        Job("p2/hls", "p2", "hls", write_file, {"counter": c, "name": "x.txt", "sleep": 0.2}, b"2"),
    ]
    r = run_jobs(jobs, cache, max_workers=2, progress=False, retries=1)
    assert r.ok, r.to_dict()
    assert r["p0/hls"].attempts == 2 and (r["p0/hls"].artifact_dir / "out.txt").read_text() == "survived"
    assert "second attempt" in r["p0/hls"].log_path.read_text()
    assert r["p0/synth"].state == "built"
    assert r["p1/hls"].state == r["p2/hls"].state == "built"
    assert_no_partial(cache)

    # a job that always kills its worker: retried once, then failed; bystanders unaffected
    jobs2 = [
        Job("p3/hls", "p3", "hls", kill_always, {"counter": c}, b"1"),
        Job("p3/synth", "p3", "synth", concat, {}, b"1", deps=("p3/hls",)),
        Job("p4/hls", "p4", "hls", write_file, {"counter": c, "sleep": 0.5, "name": "p4.txt"}, b"4"),
    ]
    n = len(counts(counter))
    r2 = run_jobs(jobs2, cache, max_workers=2, progress=False, retries=1)
    assert r2["p3/hls"].state == "failed" and r2["p3/hls"].attempts == 2
    assert "worker running this job died" in r2["p3/hls"].error
    assert r2["p3/synth"].state == "skipped" and r2["p4/hls"].state == "built"
    assert counts(counter)[n:].count("kill_always") == 2
    assert not (cache / r2["p3/hls"].key).exists()
    assert_no_partial(cache)


def _deliverable_sigint() -> None:
    """``preexec_fn`` of a process a Ctrl-C test signals: SIGINT at its default disposition and unblocked, as a
    terminal's foreground process has it. A test suite started in the background from a non-interactive shell
    (``nohup``, ``cmd &``, some CI runners) inherits SIGINT as ignored, and a child would inherit that in turn;
    Python then never installs its KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _sigint_raises_here():
    """This process raises KeyboardInterrupt on SIGINT for the block (whatever it inherited), then SIGINT is put
    back as it was."""
    before, blocked = signal.getsignal(signal.SIGINT), sigint_state().get("blocked")
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before if before is not None else signal.default_int_handler)
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _run_script(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=ENV, preexec_fn=_deliverable_sigint,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_keyboard_interrupt_leaves_no_partial_entry(tmp_path):
    cache, pids = tmp_path / "cache", tmp_path / "pids"
    p = _run_script(f"""
        from test_build_engine import sleeper, write_file
        from fxsplit.engine import Job, run_jobs
        jobs = [Job("q/quick", "q", "csim", write_file, {{}}, b"1"),
                Job(f"p0/hls", "p0", "hls", sleeper, {{"seconds": 60, "pid_dir": {str(pids)!r}}}, b"1"),
                Job(f"p1/hls", "p1", "hls", sleeper, {{"seconds": 60, "pid_dir": {str(pids)!r}}}, b"2"),
                Job(f"p2/hls", "p2", "hls", sleeper, {{"seconds": 60, "pid_dir": {str(pids)!r}}}, b"3",
                    deps=("p0/hls",))]
        run_jobs(jobs, {str(cache)!r}, max_workers=2, progress=True)
    """)
    deadline = time.time() + 30
    while time.time() < deadline and len(list(pids.glob("*.pid")) if pids.exists() else []) < 2:
        time.sleep(0.05)
    assert len(list(pids.glob("*.pid"))) == 2, p.communicate(timeout=10)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode != 0 and "KeyboardInterrupt" in err, (out, err)
    assert "interrupted" in out
    # the sleeping workers were killed, not left running
    for f in pids.glob("*.pid"):
        pid = int(f.read_text())
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"worker {pid} still alive after Ctrl-C")
    # only the quick job may have made it into the cache, complete
    assert len(entries(cache)) <= 1
    assert_no_partial(cache)


def test_ctrl_c_at_random_moments(tmp_path):
    """SIGINT at random moments of a build (worker start-up, jobs running, results coming back, cache commits),
    to the process or to its whole process group as a terminal sends it, with and without the live progress
    display: the build ends within seconds, no partial cache entry, no process of the build left behind."""
    import random

    import psutil
    rng = random.Random(int(os.environ.get("FXSPLIT_CTRL_C_SEED", "1234")))
    for k in range(int(os.environ.get("FXSPLIT_CTRL_C_ROUNDS", "12"))):
        cache = tmp_path / f"cache{k}"
        p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            from test_build_engine import write_file, sleeper
            from fxsplit.engine import Job, run_jobs
            jobs = [Job(f"q{{i}}/csim", f"q{{i}}", "csim", write_file,
                        {{"name": f"{{i}}.txt", "sleep": 0.05 * (i % 4), "size": 200_000}}, b"%d" % i)
                    for i in range(40)]
            jobs += [Job("s/hls", "s", "hls", sleeper, {{"seconds": 30, "pid_dir": {str(tmp_path / "pids")!r}}}, b"s")]
            run_jobs(jobs, {str(cache)!r}, max_workers=2, progress={k % 4 >= 2})
        """)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                             preexec_fn=_deliverable_sigint)
        time.sleep(rng.uniform(0.0, 2.5))
        try:
            tree = [p.pid] + [c.pid for c in psutil.Process(p.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = [p.pid]
        group = k % 2 == 1
        try:
            if group:
                os.killpg(p.pid, signal.SIGINT)
            else:
                p.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            out, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            stack = ""
            if shutil.which("py-spy"):      # where it hangs, if py-spy is installed
                stack = subprocess.run(["py-spy", "dump", "--pid", str(p.pid)], capture_output=True, text=True,
                                       timeout=60).stdout
            for pid in tree + [c.pid for c in psutil.Process(p.pid).children(recursive=True)]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate(timeout=30)      # the workers held the pipes: they are dead now
            pytest.fail(f"round {k} ({'group' if group else 'process'}, progress={k % 4 >= 2}): the build had not "
                        f"exited 15 s after SIGINT\n{stack}\n{err[-3000:]}")
        assert p.returncode != 0, (k, out, err[-2000:])
        _assert_dead(tree, timeout=10)
        if cache.exists():          # (SIGINT may come before the engine made it)
            assert_no_partial(cache)


def test_ctrl_c_that_python_drops_still_stops_the_build(tmp_path):
    """Python drops a KeyboardInterrupt raised in a weakref callback or a ``__del__`` ("Exception ignored in ...";
    seen once in test_ctrl_c_at_random_moments, in an import lock's callback, and the build ran on). The engine
    notes every SIGINT its handler sees and raises at the next turn of its loop. Here a thread runs the handler
    the way such a callback would, and swallows the KeyboardInterrupt: the build still stops, cleanly."""
    with _sigint_raises_here():
        _dropped_ctrl_c_stops_the_build(tmp_path)


def _dropped_ctrl_c_stops_the_build(tmp_path):
    import threading
    before = signal.getsignal(signal.SIGINT)
    pids = tmp_path / "pids"
    jobs = [Job("s/hls", "s", "hls", sleeper, {"seconds": 30, "pid_dir": str(pids)}, b"s")]

    def dropped_ctrl_c():
        while not pids.exists() or not list(pids.iterdir()):      # the job is running
            time.sleep(0.05)
        handler = signal.getsignal(signal.SIGINT)
        assert handler is not before                               # the engine's, during the run
        with contextlib.suppress(KeyboardInterrupt):
            handler(signal.SIGINT, None)

    t = threading.Thread(target=dropped_ctrl_c, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, tmp_path / "cache", max_workers=1, progress=False, keep_warm=False)
    t.join(timeout=5)
    assert not (tmp_path / "cache").exists() or not entries(tmp_path / "cache")   # stopped before the job finished
    _assert_dead([int(p.stem) for p in pids.iterdir()])
    assert_no_partial(tmp_path / "cache")
    assert signal.getsignal(signal.SIGINT) is before


def test_unguarded_user_script_with_its_own_job_function(tmp_path):
    """A script without `if __name__ == "__main__":` whose job fn lives in __main__ (shipped by value)."""
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(f"""
        import os
        from fxsplit.engine import Job, run_jobs

        def my_step(workdir, inputs, n):
            print("my_step runs in", os.getpid())
            open(os.path.join(workdir, "n.txt"), "w").write(str(n))
            return {{"n": n, "pid": os.getpid()}}

        r = run_jobs([Job(f"p{{i}}/csim", f"p{{i}}", "csim", my_step, {{"n": i}}, str(i)) for i in range(3)],
                     {str(tmp_path / "cache")!r}, max_workers=2, progress=False)
        r.raise_for_failures()
        print("RESULT", sorted(j.meta["n"] for j in r), os.getpid() not in {{j.meta["pid"] for j in r}})
    """))
    p = subprocess.run([sys.executable, str(script)], env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("RESULT") == 1 and "RESULT [0, 1, 2] True" in p.stdout, p.stdout


def test_output_dir_lock_between_processes(tmp_path):
    out, events = tmp_path / "out", tmp_path / "events"

    def event(what: str) -> None:
        with open(events, "a") as f:
            f.write(what + "\n")

    holder = _run_script(f"""
        import sys
        from fxsplit.engine import output_dir_lock
        with output_dir_lock({str(out)!r}):
            print("locked", flush=True)
            sys.stdin.readline()                        # hold the lock until told to let go
            with open({str(events)!r}, "a") as f:
                f.write("holder releases\\n")
    """, stdin=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(FxsplitError, match="in use by another fxsplit run .pid") as ei:
        with output_dir_lock(out, timeout=0.3):
            pass
    assert "FXSPLIT_LOCK_TIMEOUT" in ei.value.hint
    msgs = []

    def waiting(msg: str) -> None:                      # printed once, then the holder lets go
        msgs.append(msg)
        event("waiter waits")
        holder.stdin.write("go\n")
        holder.stdin.flush()

    with output_dir_lock(out, timeout=120, message=waiting):
        event("waiter holds")
        with output_dir_lock(out, timeout=0):           # re-entrant within a thread
            pass
    assert events.read_text().splitlines() == ["waiter waits", "holder releases", "waiter holds"]
    assert len(msgs) == 1 and "waiting for another fxsplit run" in msgs[0] and "(pid " in msgs[0]
    holder.wait(timeout=30)
    assert holder.returncode == 0, holder.stderr.read()
    with output_dir_lock(out, timeout=0):               # released
        pass
    assert not (out / ".fxsplit.lock.owner").exists()


def test_output_dir_lock_excludes_other_threads(tmp_path, monkeypatch):
    import threading
    out, seen = tmp_path / "out", []

    def other(timeout=None):
        try:
            with output_dir_lock(out, timeout=timeout, message=lambda m: None):
                seen.append("other holds")
        except FxsplitError as e:
            seen.append(str(e).splitlines()[0])

    monkeypatch.setenv("FXSPLIT_LOCK_TIMEOUT", "0")     # the default timeout comes from the environment
    with output_dir_lock(out):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        with output_dir_lock(out):                      # this thread re-enters
            pass
    assert len(seen) == 1 and "in use by another fxsplit run" in seen[0] and "gave up after 0 s" in seen[0]
    t = threading.Thread(target=other, kwargs={"timeout": 0})
    t.start()
    t.join()
    assert seen[1:] == ["other holds"]


# ----------------------------------------------------------------------------- keys: fxsplit's code, tool versions

def prepend_path(d: str) -> None:
    """ProcessPoolExecutor initializer: this worker finds the tools in ``d`` first."""
    os.environ["PATH"] = d + os.pathsep + os.environ.get("PATH", "")


def fake_tool(bindir: Path, name: str, version_line: str) -> Path:
    """An executable ``name`` in ``bindir`` that prints ``version_line`` (whatever it is asked)."""
    bindir.mkdir(parents=True, exist_ok=True)
    exe = bindir / name
    exe.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    exe.chmod(0o755)
    return exe


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


def test_importing_the_engine_stays_light():
    p = subprocess.run([sys.executable, "-c", "import sys, fxsplit.engine; "
                        "print(sorted(m for m in ('torch', 'hls4ml', 'numpy') if m in sys.modules))"],
                       env=ENV, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "[]", (p.stdout, p.stderr)


# ----------------------------------------------------------------------------- dask

@pytest.fixture(scope="module")
def dask_client(tmp_path_factory):
    wdir = tmp_path_factory.mktemp("dask-workers")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, local_directory=str(wdir))
    client = distributed.Client(cluster)
    client.run(lambda p: sys.path.insert(0, p) if p not in sys.path else None, str(Path(__file__).parent))
    client.run(lambda p: sys.path.insert(0, p) if p not in sys.path else None, str(ROOT))
    yield client, wdir
    client.close()
    cluster.close()


def test_dask_workers_memory_resource_holds(tmp_path, tmp_path_factory):
    """On a Dask cluster whose workers declare MEMORY, every job asks for its predicted peak: no worker ever runs
    jobs whose predictions add up past its MEMORY (checked per worker from the jobs' own start and end times),
    though each worker has two threads; a job predicted above every worker runs alone, with a warning."""
    from fxsplit.engine.scheduler import MemoryBudgetWarning
    wdir = tmp_path_factory.mktemp("dask-mem-workers")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                                       dashboard_address=None, local_directory=str(wdir),
                                       resources={"MEMORY": 1000 * MB})
    client = distributed.Client(cluster)
    try:
        for p in (str(Path(__file__).parent), str(ROOT)):
            client.run(lambda p: sys.path.insert(0, p) if p not in sys.path else None, p)
        mbs = [600, 600, 600, 300, 300, 300, 300, 1500]
        jobs = _mem_jobs("dask", mbs, seconds=0.8)
        with pytest.warns(MemoryBudgetWarning, match="p7/synth is predicted to need 1.46 GiB.*any Dask worker"):
            r = run_jobs(jobs, tmp_path / "c", executor=client.get_executor(), progress=False)
        assert r.ok, [(x.id, x.error) for x in r.failed]
        by_worker: dict[str, list[str]] = {}
        for x in r:
            by_worker.setdefault(x.worker, []).append(x.id)
        assert len(by_worker) == 2
        together_somewhere = False
        for ids in by_worker.values():
            for group in _overlaps(r, ids):
                assert sum(min(mbs[int(i[1])], 1000) for i in group) <= 1000, group
                together_somewhere |= len(group) >= 2
        assert together_somewhere          # two 300 MiB jobs did share a worker's two threads
    finally:
        client.close()
        cluster.close()


def test_dask_executor_ships_artifacts_to_the_submitter(tmp_path, dask_client):
    client, wdir = dask_client
    counter, cache = tmp_path / "count", tmp_path / "cache"
    jobs = chain_jobs(counter) + [Job("p2/csim", "p2", "csim", compile_c, {"counter": str(counter)}, b"1")]
    r = run_jobs(jobs, cache, executor=client.get_executor(), progress=False)
    assert r.ok, r.to_dict()
    assert all(j.worker.startswith("tcp://127.0.0.1") for j in r)
    assert (r["stitched/tb"].artifact_dir / "out.txt").read_text() == "A+B"
    assert (r["p2/csim"].artifact_dir / "hello").exists()
    assert "hello from C" in r["p2/csim"].log_path.read_text()
    assert all(j.artifact_dir.is_relative_to(cache.resolve()) for j in r)
    assert not any(wdir.rglob("fxsplit-job-*")), "worker temp dirs left behind"
    assert_no_partial(cache)
    r2 = run_jobs(jobs, cache, executor=client.get_executor(), progress=False)
    assert all(j.state == "cached" for j in r2) and len(counts(counter)) == len(jobs)

    # failures on Dask: isolated, with the log shipped back
    bad = [Job("p0/hls", "p0", "hls", boom, {}, b"1"), Job("p0/synth", "p0", "synth", concat, {}, b"1",
                                                           deps=("p0/hls",))]
    r3 = run_jobs(bad, tmp_path / "cache2", executor=client.get_executor(), progress=False)
    assert [j.state for j in r3] == ["failed", "skipped"]
    assert "something broke" in r3["p0/hls"].error_tail and r3["p0/hls"].log_path.exists()

    # overhead per job: trivial jobs, independent, through Dask
    n = 20
    quick = [Job(f"q{i}/csim", f"q{i}", "csim", write_file, {}, str(i)) for i in range(n)]
    t0 = time.perf_counter()
    r4 = run_jobs(quick, tmp_path / "cache3", executor=client.get_executor(), progress=False)
    dt = time.perf_counter() - t0
    assert r4.ok
    print(f"dask: {n} trivial jobs on 2 workers in {dt:.2f} s = {dt / n * 1000:.0f} ms/job wall, "
          f"{2 * dt / n * 1000:.0f} ms/job worker-time")


def _set_path(path: str) -> None:
    os.environ["PATH"] = path


def test_dask_keys_use_the_versions_measured_on_the_workers(tmp_path, dask_client):
    """On Dask the versions come from a probe task on the cluster, not from this process."""
    client, _ = dask_client
    fake = tmp_path / "fakebin"
    fake_tool(fake, "g++", "g++ (Cluster) 7.7.7")
    local = tool_versions(["g++"])["g++"]
    saved = client.run(lambda: os.environ["PATH"])
    client.run(prepend_path, str(fake))
    try:
        jobs = [Job("p0/csim", "p0", "csim", write_file, {}, b"1", tools=("g++",))]
        r = run_jobs(jobs, tmp_path / "cache", executor=client.get_executor(), progress=False)
        assert r.ok, r.to_dict()
        j = r["p0/csim"]
        assert j.tools == {"g++": "g++ (Cluster) 7.7.7"} != {"g++": local}
        assert j.fxsplit == source_digest()              # same machine, same fxsplit
        m = json.loads((tmp_path / "cache" / j.key / "manifest.json").read_text())
        assert m["tools"] == {"g++": "g++ (Cluster) 7.7.7"} and j.worker.startswith("tcp://")
        # the same job through a local pool (the real g++ here) is another key
        r2 = run_jobs(jobs, tmp_path / "cache", max_workers=1, progress=False)
        assert r2["p0/csim"].state == "built" and r2["p0/csim"].key != j.key
    finally:
        for addr, path in saved.items():
            client.run(_set_path, path, workers=[addr])


def test_bytes_transfer_on_a_local_pool(tmp_path):
    counter = tmp_path / "count"
    r = run_jobs(chain_jobs(counter), tmp_path / "cache", max_workers=2, progress=False, transfer="bytes")
    assert r.ok and (r["stitched/tb"].artifact_dir / "out.txt").read_text() == "A+B"
    assert_no_partial(tmp_path / "cache")


# ----------------------------------------------------------------------------- prediction

def _rows(durs: dict[str, float], deps: dict[str, tuple] | None = None) -> list[dict]:
    deps = deps or {}
    return [{"id": k, "build_seconds": v, "deps": list(deps.get(k, ()))} for k, v in durs.items()]


def test_predict_wall_time_examples():
    rows = _rows({"a": 4, "b": 3, "c": 2, "d": 1}, {"d": ("a",)})
    assert predict_wall_time(rows, 1) == 10
    assert predict_wall_time(rows, 2) == 5        # a then d on one worker; b, c on the other
    assert predict_wall_time(rows, 8) == 5        # critical path a -> d
    jr = [JobResult(r["id"], "p", "s", "k", build_seconds=r["build_seconds"], deps=tuple(r["deps"]))
          for r in rows]
    assert predict_wall_time(jr, 2) == 5
    assert predict_wall_time(BuildResult({j.id: j for j in jr}, Path(".")), 4) == 5
    assert predict_wall_time([], 4) == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=1, max_size=12), st.data(), st.integers(1, 8))
def test_predict_wall_time_bounds(durs, data, w):
    ids = [f"j{i}" for i in range(len(durs))]
    deps = {ids[i]: tuple(data.draw(st.sets(st.sampled_from(ids[:i]), max_size=3)) if i else ())
            for i in range(len(ids))}
    rows = _rows(dict(zip(ids, durs)), deps)
    crit: dict[str, float] = {}
    for i, k in enumerate(ids):
        crit[k] = durs[i] + max((crit[d] for d in deps[k]), default=0.0)
    total, cp = sum(durs), max(crit.values())
    t = predict_wall_time(rows, w)
    assert max(cp, total / w) - 1e-6 <= t <= total + 1e-6
    assert predict_wall_time(rows, 1) == pytest.approx(total)
    assert predict_wall_time(rows, len(ids)) == pytest.approx(cp)


def test_prewarm_can_wait_for_every_worker(tmp_path):
    """prewarm(wait=True) returns only once every worker has run its imports (here a warm-up that takes 1.5 s
    and leaves a file): the next run's jobs find the workers warm. Without wait it returns before that."""
    from fxsplit.engine import executors
    traces = tmp_path / "warmed"
    traces.mkdir()
    WARM_PROBE.write_text(json.dumps({"sleep": 1.5, "dir": str(traces)}))
    try:
        executors.discard_warm_pool()
        executors.prewarm(2, ["test_build_engine"])
        assert len(list(traces.iterdir())) == 0     # not waited for: both workers are still in their warm-up
        executors.discard_warm_pool()
        for f in traces.iterdir():
            f.unlink()
        executors.prewarm(2, ["test_build_engine"], wait=True)
        pids = executors.warm_pool_pids()
        assert len(pids) == 2
        assert sorted(int(f.name) for f in traces.iterdir()) == pids      # both warmed before prewarm returned
        r = run_jobs([Job(f"p{i}/csim", f"p{i}", "csim", warm_probe, {"tag": "v"}, b"v%d" % i) for i in range(2)],
                     tmp_path / "cache", max_workers=2, progress=False)
        # the jobs ran in those workers, after their warm-up
        assert r.ok and _pids(r) <= set(pids) and all(x.meta["warmed"] for x in r)
        warmed_at = max(float(f.read_text()) for f in traces.iterdir())
        assert all(x.start >= warmed_at for x in r)
    finally:
        WARM_PROBE.unlink(missing_ok=True)
        executors.discard_warm_pool()
