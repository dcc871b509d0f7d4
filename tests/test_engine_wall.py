"""fxsplit.engine.wall: the DAG order of a job list (invalid graphs are user errors) and predict_wall_time."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

pytest.register_assert_rewrite("engine_helpers")      # its asserts report like a test's

from engine_helpers import write_file  # noqa: E402
from fxsplit.engine import BuildResult, Job, JobResult, predict_wall_time, run_jobs  # noqa: E402
from fxsplit.errors import FxsplitError  # noqa: E402


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
