"""fxsplit.engine.cache: the content-addressed cache (hits, misses, verification of every entry, the tar
transfer of artifacts), through real builds on a local process pool."""

from __future__ import annotations

import json
import time

import pytest

pytest.register_assert_rewrite("engine_helpers")      # its asserts report like a test's

from engine_helpers import assert_no_partial, chain_jobs, concat, counts, write_file  # noqa: E402
from fxsplit.engine import Job, run_jobs  # noqa: E402


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


def test_bytes_transfer_on_a_local_pool(tmp_path):
    counter = tmp_path / "count"
    r = run_jobs(chain_jobs(counter), tmp_path / "cache", max_workers=2, progress=False, transfer="bytes")
    assert r.ok and (r["stitched/tb"].artifact_dir / "out.txt").read_text() == "A+B"
    assert_no_partial(tmp_path / "cache")
