"""fxsplit.engine.executors: where jobs run. Light pool workers, the warm pool kept between builds and
prewarm, job functions shipped by value from an unguarded script, and a real Dask LocalCluster (artifacts
shipped back, tool versions probed on the workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask  # noqa: F401  (a hard dependency: no importorskip)
import distributed
import pytest

pytest.register_assert_rewrite("engine_helpers")      # its asserts report like a test's

from engine_helpers import (ENV, ROOT, WARM_PROBE, _assert_dead, assert_no_partial, boom, chain_jobs,  # noqa: E402
                            compile_c, concat, counts, fake_tool, loaded_modules, prepend_path, warm_probe,
                            write_file)
from fxsplit.engine import Job, run_jobs, source_digest, tool_versions  # noqa: E402


def test_workers_stay_light(tmp_path):
    """Pool workers import neither torch nor hls4ml (nor the submitter's __main__) unless a job does."""
    r = run_jobs([Job("p0/csim", "p0", "csim", loaded_modules, {}, b"1")], tmp_path, progress=False)
    assert r.ok and r["p0/csim"].meta == {"torch": False, "hls4ml": False, "main": None}


def _pids(result) -> set[int]:
    return {r.meta["pid"] for r in result}


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
    executors.prewarm(2, ["engine_helpers"])
    pids = executors.warm_pool_pids()
    assert len(pids) == 2
    r = run_jobs([Job(f"p{i}/csim", f"p{i}", "csim", warm_probe, {"tag": "w"}, b"w%d" % i) for i in range(3)],
                 tmp_path, max_workers=2, progress=False)
    assert r.ok and _pids(r) <= set(pids) and all(x.meta["warmed"] for x in r)


def test_prewarm_can_wait_for_every_worker(tmp_path):
    """prewarm(wait=True) returns only once every worker has run its imports (here a warm-up that takes 1.5 s
    and leaves a file): the next run's jobs find the workers warm. Without wait it returns before that."""
    from fxsplit.engine import executors
    traces = tmp_path / "warmed"
    traces.mkdir()
    WARM_PROBE.write_text(json.dumps({"sleep": 1.5, "dir": str(traces)}))
    try:
        executors.discard_warm_pool()
        executors.prewarm(2, ["engine_helpers"])
        assert len(list(traces.iterdir())) == 0     # not waited for: both workers are still in their warm-up
        executors.discard_warm_pool()
        for f in traces.iterdir():
            f.unlink()
        executors.prewarm(2, ["engine_helpers"], wait=True)
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
