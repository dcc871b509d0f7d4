"""The DAG order of a job list and :func:`predict_wall_time`: the scheduler's own list-scheduling rule applied to
measured (or predicted) durations, for the report, the auto split and the benchmarks."""

from __future__ import annotations

import graphlib
import heapq
import sys
from typing import Any

from ..errors import FxsplitError
from .jobs import BuildResult, Job, JobResult


def _toposort(jobs: list[Job]) -> list[Job]:
    """Dependencies first; otherwise the order of ``jobs`` (an already sorted list is unchanged)."""
    by_id: dict[str, Job] = {}
    for j in jobs:
        if j.id in by_id:
            raise FxsplitError(f"two build jobs have the same id {j.id!r}", partition=j.partition,
                               hint="job ids must be unique, e.g. '<partition>/<step>'")
        by_id[j.id] = j
    for j in jobs:
        for d in j.deps:
            if d not in by_id:
                raise FxsplitError(f"build job {j.id!r} depends on {d!r}, which is not in the job list",
                                   partition=j.partition)
    index = {j.id: i for i, j in enumerate(jobs)}
    sorter = graphlib.TopologicalSorter({j.id: j.deps for j in jobs})
    try:
        sorter.prepare()
    except graphlib.CycleError as e:
        cycle = e.args[1][:-1][::-1]      # graphlib lists predecessors first: reverse to "depends on"
        first = min(range(len(cycle)), key=lambda i: index[cycle[i]])
        cycle = cycle[first:] + cycle[:first]
        raise FxsplitError("build jobs form a cycle: " + " -> ".join(cycle + [cycle[0]]),
                           partition=by_id[cycle[0]].partition) from None
    order: list[Job] = []
    ready: list[int] = []
    while sorter.is_active():
        for jid in sorter.get_ready():
            heapq.heappush(ready, index[jid])
        j = jobs[heapq.heappop(ready)]
        order.append(j)
        sorter.done(j.id)
    return order


def predict_wall_time(results: Any, workers: int) -> float:
    """List-schedule the measured job durations on ``workers`` workers, respecting deps.

    ``results``: a BuildResult, JobResults or their ``to_dict()`` rows. A job's duration is
    the time its build took (``build_seconds``; for a reused job the duration recorded when it
    was built). Jobs are started as soon as a worker is free and their deps are done; among
    ready jobs the one with the longest remaining critical path goes first.
    """
    if isinstance(results, BuildResult):
        results = list(results)
    elif isinstance(results, dict) and "jobs" in results:
        results = results["jobs"]
    rows = [r.to_dict() if isinstance(r, JobResult) else r for r in results]
    if not rows:
        return 0.0
    workers = max(1, int(workers))
    dur = {r["id"]: float(r.get("build_seconds") or r.get("seconds") or 0.0) for r in rows}
    deps = {r["id"]: [d for d in (r.get("deps") or []) if d in dur] for r in rows}
    children: dict[str, list[str]] = {k: [] for k in dur}
    for k, ds in deps.items():
        for d in ds:
            children[d].append(k)
    prio: dict[str, float] = {}

    def crit(k: str) -> float:
        if k not in prio:
            prio[k] = dur[k] + max((crit(c) for c in children[k]), default=0.0)
        return prio[k]

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(dur) + 100))
    for k in dur:
        crit(k)
    missing = {k: len(ds) for k, ds in deps.items()}
    ready = [(-prio[k], k) for k, n in missing.items() if n == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    t = 0.0
    free = workers
    done = 0
    while done < len(dur):
        while ready and free:
            _, k = heapq.heappop(ready)
            heapq.heappush(running, (t + dur[k], k))
            free -= 1
        if not running:     # cycle or bad data: nothing can start
            break
        t, k = heapq.heappop(running)
        free += 1
        done += 1
        for c in children[k]:
            missing[c] -= 1
            if missing[c] == 0:
                heapq.heappush(ready, (-prio[c], c))
    return t
