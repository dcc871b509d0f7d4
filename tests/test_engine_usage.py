"""fxsplit.engine.usage: what a job cost where it ran (peak memory of the worker's process tree, CPU time)
and how a job that ran out of memory is told from a crash (MemoryError, the kernel's OOM killer)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("engine_helpers")      # its asserts report like a test's

from engine_helpers import MB, assert_no_partial, counts, hog, over_limit  # noqa: E402
from fxsplit.engine import Job, run_jobs  # noqa: E402


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


def test_a_child_sharing_its_parents_memory_is_not_counted_twice(tmp_path):
    """A forked child (or a tool's popen before its exec) shares its parent's pages: the tree's peak is the memory
    once, not twice (Yosys' popen of abc had doubled a 7 GiB job's peak)."""
    jobs = [Job("f/synth", "f", "synth", hog, {"mb": 300, "where": "forked", "hold": 1.0}, b"f")]
    r = run_jobs(jobs, tmp_path / "cache", max_workers=1, progress=False)
    assert r.ok
    added = (r["f/synth"].peak_rss - r["f/synth"].base_rss) / MB
    assert abs(added - 300) <= 30, added


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
