"""Scheduling: the engine loop (lookups, submissions, retries, pool breaks), memory admission, out-of-memory
detection and Ctrl-C. The DAG order and the wall-time prediction live in :mod:`.wall`."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import heapq
import json
import shutil
import signal
import threading
import time
import uuid
import warnings
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from ..errors import FxsplitError
from .cache import LOG, WORK, Cache, tail
from .executors import Pool, _ByValue
from .jobs import BuildResult, Job, JobResult, fn_name, job_key
from .tools import check_tool_names, environment_mismatch, tool_name
from .usage import memory_failure, oom_kills
from .wall import _toposort, predict_wall_time  # noqa: F401  (predict_wall_time: re-exported)

_FREE_RESUBMITS = 3          # a bystander of a pool break is resubmitted this often before being charged


# ----------------------------------------------------------------------------- the engine

def _tool_names(job: Job) -> list:
    """The job's tools (names, or :class:`~fxsplit.engine.tools.Tool` declarations), checked."""
    try:
        return check_tool_names(job.tools)
    except ValueError as e:
        raise ValueError(f"build job {job.id!r}: {e}") from None


class MemoryBudgetWarning(UserWarning):
    """A job is predicted to need more memory than the whole budget: it runs alone."""


def _set_usage(r: JobResult, usage: dict | None) -> None:
    """Peak memory and CPU time of the run that built ``r`` (fxsplit.engine.usage), when it was measured."""
    if usage:
        r.peak_rss, r.base_rss, r.cpu_seconds = usage.get("peak_rss"), usage.get("base_rss"), usage.get("cpu_seconds")


class _Inflight:
    __slots__ = ("job_id", "root", "pool", "oom0")

    def __init__(self, job_id: str, root: Path | None, pool: Any, oom0: int | None):
        self.job_id = job_id
        self.root = root              # the build directory (paths mode: known at submission)
        self.pool = pool              # the executor it went to
        self.oom0 = oom0              # the kernel's OOM-kill count read before it was submitted


class _Ready:
    """The ready jobs: the one with the longest predicted remaining path first (its own predicted time,
    ``Job.cost["predicted"]``, plus the longest chain of its dependents': the list scheduling
    :func:`predict_wall_time` and the automatic split assume), then the job order (jobs without predictions keep
    it); a job put back in front (a retry) goes before all."""

    def __init__(self, prio: dict[str, float], index: dict[str, int]):
        self.heap: list[tuple[float, int, str]] = []
        self.prio, self.index = prio, index
        self.front = 0

    def append(self, jid: str) -> None:
        heapq.heappush(self.heap, (-self.prio[jid], self.index[jid], jid))

    def appendleft(self, jid: str) -> None:
        self.front -= 1
        heapq.heappush(self.heap, (float("-inf"), self.front, jid))

    def popleft(self) -> str:
        return heapq.heappop(self.heap)[2]

    def __len__(self) -> int:
        return len(self.heap)


def _replaceable_sigint():
    """The SIGINT handler the engine may replace for a while and put back, or None: not in the main thread, a
    handler that ignores SIGINT (respected), or one not set from Python (``getsignal`` None: cannot be put back)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    prev = signal.getsignal(signal.SIGINT)
    return None if prev is signal.SIG_IGN else prev


class _Engine:
    """One run: the ready queue, what is in flight, and each job's fate."""

    def __init__(self, jobs, cache_dir, executor, max_workers, progress, retries, log_dir,
                 transfer, mp_context, keep_warm=True, memory_budget=None):
        from .progress import make_progress

        self.order = _toposort(list(jobs))
        self.jobs = {j.id: j for j in self.order}
        self.cache = Cache(cache_dir, log_dir)
        self.pool = Pool(executor, max_workers, mp_context, warm=worker_modules(self.order), keep_warm=keep_warm)
        if transfer == "auto":
            transfer = "paths" if self.pool.local else "bytes"
        if transfer not in ("paths", "bytes"):
            raise ValueError(f"transfer must be 'auto', 'paths' or 'bytes', not {transfer!r}")
        self.transfer = transfer
        self.retries = max(0, int(retries))
        # what the keys cover besides the jobs: fxsplit's source and the tools' versions where they run
        self.tools = {tool_name(t): t for j in self.order for t in _tool_names(j)}
        self.env = self.pool.measure([self.tools[n] for n in sorted(self.tools)])
        self.results: dict[str, JobResult] = {}
        for j in self.order:
            versions = {n: self.env["tools"][n] for n in sorted(map(tool_name, _tool_names(j)))}
            key = job_key(j.step, j.key_data, [(d, self.results[d].key) for d in j.deps], fn_name(j.fn),
                          source=self.env["fxsplit"], tools=versions)
            self.results[j.id] = JobResult(j.id, j.partition, j.step, key, deps=tuple(j.deps),
                                           fxsplit=self.env["fxsplit"], tools=versions,
                                           predicted=(j.cost or {}).get("predicted"),
                                           predicted_rss=(j.cost or {}).get("predicted_rss"))
        self.dependents: dict[str, list[str]] = {j.id: [] for j in self.order}
        for j in self.order:
            for d in j.deps:
                self.dependents[d].append(j.id)
        self.missing = {j.id: len(set(j.deps)) for j in self.order}
        self.prio: dict[str, float] = {}
        for j in reversed(self.order):
            self.prio[j.id] = float((j.cost or {}).get("predicted") or 0.0) + max(
                (self.prio[c] for c in self.dependents[j.id]), default=0.0)
        self.index = {j.id: k for k, j in enumerate(self.order)}
        self.inflight: dict[cf.Future, _Inflight] = {}
        self.free_resubmits: dict[str, int] = {}
        self.startup_breaks = 0
        self.progress = make_progress(progress)
        if memory_budget is not None and (isinstance(memory_budget, bool) or int(memory_budget) <= 0):
            raise FxsplitError(f"the memory budget must be a positive number of bytes, got {memory_budget!r}")
        self.budget = int(memory_budget) if memory_budget is not None else None
        self.warnings: list[str] = []
        self.alone: set[str] = set()      # jobs that ran out of memory once: retried with nothing beside them
        # every build directory this run made under cache/.tmp: an interrupted run removes those still there (one
        # whose result was coming back or being committed is no longer in flight, but may be left half-made)
        self.roots: set[Path] = set()

    # -- memory budget
    def _predicted_rss(self, jid: str) -> int:
        return int(self.results[jid].predicted_rss or 0)

    def _fits(self, jid: str) -> bool:
        """Start ``jid`` now? Only if its predicted peak fits in what the running jobs' predicted peaks leave of
        the budget; a job predicted above the whole budget starts only when nothing else runs (and is named)."""
        if jid in self.alone:
            return not self.inflight
        if any(i.job_id in self.alone for i in self.inflight.values()):
            return False
        if self.budget is None:
            return True
        need = self._predicted_rss(jid)
        running = sum(self._predicted_rss(i.job_id) for i in self.inflight.values())
        if not self.inflight:
            if need > self.budget:
                msg = (f"{jid} is predicted to need {need / 2**30:.2f} GiB at its peak, more than the whole memory "
                       f"budget ({self.budget / 2**30:.2f} GiB): it runs alone")
                self.warnings.append(msg)
                warnings.warn(msg, MemoryBudgetWarning, stacklevel=3)
            return True
        return running + need <= self.budget

    def _expected(self, r: JobResult) -> dict:
        """What ``r``'s key was computed for (its worker must measure the same)."""
        return {"fxsplit": r.fxsplit, "tools": r.tools, "where": self.env.get("where")}

    # -- job lifecycle
    def _release(self, jid: str, ready: _Ready) -> None:
        for c in self.dependents[jid]:
            self.missing[c] -= 1
            if self.missing[c] == 0:
                ready.append(c)

    def _skip_dependents(self, jid: str) -> None:
        stack = list(self.dependents[jid])
        while stack:
            c = stack.pop()
            r = self.results[c]
            if r.state != "pending":
                continue
            r.state = "skipped"
            r.error = f"not run: dependency {jid} failed"
            self.progress.update(r, "skipped")
            stack.extend(self.dependents[c])

    def _lookup(self, jid: str) -> bool:
        r = self.results[jid]
        m = self.cache.lookup(r.key, self._expected(r))
        if m is None:
            return False
        entry = self.cache.dir / r.key
        r.state = "cached"
        r.artifact_dir = entry / WORK
        r.meta = m.get("meta")
        r.build_seconds = float(m.get("seconds") or 0.0)
        _set_usage(r, m.get("usage"))
        r.worker = "cache"
        r.log_path = self.cache.log_copy(jid, entry / LOG)
        self.progress.update(r, "cached")
        return True

    def _submit(self, jid: str) -> bool:
        """Start ``jid`` on the pool; False when the pool turned out broken (the job was not started)."""
        job = self.jobs[jid]
        r = self.results[jid]
        paths = self.transfer == "paths"
        inputs = {d: ("path", str(self.results[d].artifact_dir)) if paths
                  else ("tar", self.cache.tar_of(self.results[d].key))   # unpacks as <dst>/work
                  for d in job.deps}
        root = self.cache.new_root(r.key) if paths else None     # a path: the worker creates it
        if root is not None:
            self.roots.add(root)
        spec = {"id": jid, "fn": job.fn, "params": job.params, "inputs": inputs,
                "root": str(root) if root else None, "nonce": uuid.uuid4().hex,
                "tools": [self.tools[n] for n in r.tools], "expect": self._expected(r)}
        if getattr(job.fn, "__module__", None) == "__main__" and paths:
            spec["fn"] = _ByValue(job.fn)
        need = self._predicted_rss(jid)
        cap = self.pool.dask_memory()
        if cap is not None and need > cap:
            msg = (f"{jid} is predicted to need {need / 2**30:.2f} GiB at its peak, more than any Dask worker declares "
                   f"(MEMORY {cap / 2**30:.2f} GiB): it runs alone on the largest")
            self.warnings.append(msg)
            warnings.warn(msg, MemoryBudgetWarning, stacklevel=2)
        # read before submitting: on a loaded machine the worker can start, run and be killed before submit returns
        oom0 = oom_kills()
        try:
            fut, pool = self.pool.submit(spec, memory=need)
        except BrokenProcessPool:
            # a worker died before its future reached _finish (on a loaded machine, a job can run and kill its
            # worker before the next submit): this job was never started and waits its turn again, uncharged;
            # the break is settled through the futures still in flight on that pool, or here if there are none
            broken = self.pool.executor
            if not any(i.pool is broken for i in self.inflight.values()):
                self.pool.broken(broken, [])
            if root is not None:
                self.roots.discard(root)
                shutil.rmtree(root, ignore_errors=True)
            return False
        r.attempts += 1
        self.inflight[fut] = _Inflight(jid, root, pool, oom0)
        self.progress.update(r, "running")
        return True

    def _finish(self, fut: cf.Future, ready: _Ready) -> None:
        info = self.inflight.pop(fut)
        r = self.results[info.job_id]
        try:
            exc = fut.exception()
        except cf.CancelledError as e:
            exc = e
        if exc is None:
            self._finish_ran(r, info, fut.result(), ready)
        elif isinstance(exc, BrokenProcessPool) and isinstance(info.pool, cf.ProcessPoolExecutor):
            self._pool_broken(fut, info, exc, ready)
        else:
            self._infra_failure(r, info, exc, ready, charged=True)

    def _finish_ran(self, r: JobResult, info: _Inflight, res: dict, ready: _Ready) -> None:
        """The worker returned: commit the entry, or keep the failed attempt."""
        r.start, r.end, r.worker = res["start"], res["end"], res["worker"]
        r.seconds = r.build_seconds = float(res["seconds"])
        _set_usage(r, res.get("usage"))
        if info.root is None:
            info.root = self.cache.new_root(r.key)
            self.roots.add(info.root)
            self.cache.unpack_into(info.root, res["tar"])
        root = Path(res.get("root") or info.root)
        # built with another fxsplit / other tools than the key says: never commit it
        mismatch = environment_mismatch(self._expected(r), res.get("env") or {}, res["worker"])
        if mismatch or not res["ok"]:
            why = None if mismatch else memory_failure(res["error"], tail(root / LOG), res.get("usage"))
            if why is not None:
                self._out_of_memory(r, why, root, ready)
                return
            self._fail(r, mismatch or res["error"], root)
            return
        r.meta = res["meta"]
        entry = self.cache.commit(r.key, root, {
            "id": r.id, "partition": r.partition, "step": r.step, "fxsplit": r.fxsplit, "tools": r.tools,
            "meta": res["meta"], "seconds": res["seconds"], "start": res["start"], "end": res["end"],
            "worker": res["worker"], "cost": self.jobs[r.id].cost, "usage": res.get("usage")})
        r.artifact_dir = entry / WORK
        r.log_path = self.cache.log_copy(r.id, entry / LOG)
        r.state = "built"
        self.progress.update(r, "built")
        self._release(r.id, ready)

    def _out_of_memory(self, r: JobResult, why: str, root: Path | None, ready: _Ready) -> None:
        """A job ran out of memory: retried once with nothing running beside it, then failed, saying so."""
        r.out_of_memory = why
        peak = "unknown" if r.peak_rss is None else f"{r.peak_rss / 2**30:.2f} GiB"
        budget = "none" if self.budget is None else f"{self.budget / 2**30:.2f} GiB"
        if r.id not in self.alone:
            self.alone.add(r.id)
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)
            self.progress.update(r, "retry", note=f"out of memory ({why}); retrying it alone")
            ready.appendleft(r.id)
            return
        self._fail(r, f"out of memory: {why}; last measured peak {peak} (the worker and its tools), memory budget "
                      f"{budget}; it failed the same way when retried with no other job running", root)

    def _fail(self, r: JobResult, error: str, root: Path | None, fallback_tail: str | None = None) -> None:
        """Mark a job failed (its dependents skipped), keeping its attempt under _failed/."""
        r.error = error
        dst = self.cache.keep_failed(r.id, root)
        if dst is None:
            r.log_path = None
        else:
            r.debug_dir = dst / WORK
            r.error_tail = tail(dst / LOG)
            r.log_path = self.cache.log_copy(r.id, dst / LOG)
        if r.error_tail is None:
            r.error_tail = fallback_tail
        r.state = "failed"
        self.progress.update(r, "failed")
        self._skip_dependents(r.id)

    def _infra_failure(self, r: JobResult, info: _Inflight, exc: BaseException, ready: _Ready,
                       charged: bool) -> None:
        """The worker under a job died / the task was lost. Retry or fail; never commit."""
        what = f"{type(exc).__name__}: {exc}".strip()
        if not charged:
            self.free_resubmits[r.id] = self.free_resubmits.get(r.id, 0) + 1
            if self.free_resubmits[r.id] > _FREE_RESUBMITS:
                charged = True
        retries_used = r.attempts - 1 - min(self.free_resubmits.get(r.id, 0), _FREE_RESUBMITS)
        if not charged or retries_used < self.retries:
            if info.root is not None:
                shutil.rmtree(info.root, ignore_errors=True)
            self.progress.update(r, "retry", note=what)
            ready.appendleft(r.id)
            return
        self._fail(r, f"the worker running this job died ({what}) on attempt {r.attempts}; "
                      f"gave up after {self.retries} retr{'y' if self.retries == 1 else 'ies'}",
                   info.root, fallback_tail=what)

    def _pool_broken(self, fut: cf.Future, info: _Inflight, exc: BaseException, ready: _Ready) -> None:
        """A local worker died: every job in flight on that pool is lost. The one whose worker
        died is charged an attempt; bystanders (never started, or terminated by the pool
        because of the other's death: exit code -SIGTERM, or not yet exited) are resubmitted free."""
        same = [f for f, i in self.inflight.items() if i.pool is info.pool]
        exitcodes = self.pool.broken(info.pool, same)
        victims = [(fut, info)] + [(f, self.inflight.pop(f)) for f in same]
        self._check_startup_death(victims, exitcodes)
        for f, i in victims:
            if f is not fut and f.done() and f.exception() is None:
                self.inflight[f] = i      # finished before the break: handle normally
                self._finish(f, ready)
                continue
            pid = None
            if i.root is not None:
                with contextlib.suppress(OSError, ValueError):
                    pid = int((i.root / "worker.pid").read_text())
            # the culprit died on its own: an exit code other than the pool's SIGTERM; a worker still alive
            # when the codes were read (None: on a loaded machine the pool may not have terminated it yet,
            # and Pool.broken kills it) was a bystander
            culprit = i.root is None or (pid is not None and exitcodes.get(pid) not in (-signal.SIGTERM, None))
            r = self.results[i.job_id]
            oom = oom_kills()
            if (culprit and pid is not None and exitcodes.get(pid) == -signal.SIGKILL and oom is not None
                    and i.oom0 is not None and oom > i.oom0):
                self._read_live_usage(r, i.root)
                self._out_of_memory(r, f"its worker was killed by the kernel's OOM killer (SIGKILL, {oom - i.oom0} "
                                       "OOM kill(s) meanwhile)", i.root, ready)
                continue
            self._infra_failure(r, i, exc, ready, charged=culprit)

    @staticmethod
    def _read_live_usage(r: JobResult, root: Path | None) -> None:
        """The peak a dead worker's monitor last wrote (fxsplit.engine.usage, ``live_path``)."""
        from .executors import USAGE
        try:
            _set_usage(r, json.loads((root / USAGE).read_text()))
        except (OSError, ValueError, TypeError):
            pass

    def _check_startup_death(self, victims: list, exitcodes: dict) -> None:
        """Two pool breaks in a row before any job started: the workers cannot start at all."""
        started = [i for _, i in victims if i.root is not None and (i.root / "worker.pid").exists()]
        if started or any(i.root is None for _, i in victims):
            self.startup_breaks = 0
            return
        self.startup_breaks += 1
        if self.startup_breaks < 2:
            return
        for _, i in victims:
            if i.root is not None:
                shutil.rmtree(i.root, ignore_errors=True)
        codes = sorted({c for c in exitcodes.values() if c not in (None, -signal.SIGTERM)})
        raise FxsplitError(
            "the build's worker processes die while starting (before running any job)"
            + (f"; exit code(s) {codes}" if codes else ""),
            hint="run a job in-process to see why (the workers import fxsplit and the job "
                 "functions' modules: check they import without error in a fresh python), "
                 "or pass executor=concurrent.futures.ThreadPoolExecutor(1) to debug")

    def _abort(self) -> None:
        """Ctrl-C (or any error): kill the workers and their tools, drop the unfinished builds. A second Ctrl-C
        while this runs (a terminal's impatient user) is held back until it is done: it is short (the kills, then
        at most a few seconds of waiting for the workers' exit), and cut short it would leave processes behind.
        The caller's handler is always put back, wherever a second Ctrl-C lands (an ignored SIGINT left behind
        is inherited by every process started later); one not set from Python (``getsignal`` None, which could
        not be put back) is left alone, as is an ignoring one."""
        prev = _replaceable_sigint()
        hold = prev is not None
        try:
            if hold:
                with contextlib.suppress(KeyboardInterrupt, ValueError, OSError):   # one already pending: aborting
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
            for f in self.inflight:
                f.cancel()
            self.pool.abort()
            for root in {*self.roots, *(i.root for i in self.inflight.values() if i.root is not None)}:
                shutil.rmtree(root, ignore_errors=True)       # committed ones were renamed away: not there
            self.inflight.clear()
        finally:
            if hold and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
                signal.signal(signal.SIGINT, prev)

    @contextlib.contextmanager
    def _sigint_noted(self):
        """Ctrl-C during the run is noted as well as raised. Python drops a KeyboardInterrupt that lands in a
        weakref callback or a ``__del__`` (it prints "Exception ignored in ..."; seen in an import lock's callback
        during a run); the run loop then raises it itself, at its next turn (within 0.5 s), instead of building
        on. The caller's own handler still runs; one that ignores SIGINT is respected, and one not set from
        Python (``getsignal`` None, which could not be restored) is left alone."""
        self.interrupted = False
        prev = _replaceable_sigint()
        if prev is None:
            yield
            return

        def noted(signum, frame):
            self.interrupted = True
            (prev if callable(prev) else signal.default_int_handler)(signum, frame)   # SIG_DFL: raise as Python does

        signal.signal(signal.SIGINT, noted)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, prev)

    def run(self) -> BuildResult:
        with self._sigint_noted():
            return self._run()

    def _run(self) -> BuildResult:
        t0 = time.time()
        self.cache.sweep_tmp()
        self.progress.start(list(self.results.values()))
        ready = _Ready(self.prio, self.index)
        for j in self.order:
            if self.missing[j.id] == 0:
                ready.append(j.id)
        try:
            while ready or self.inflight:
                if self.interrupted:
                    raise KeyboardInterrupt
                deferred: list[str] = []      # ready, but their predicted peak does not fit in the budget now
                while ready and (self.pool.limit is None or len(self.inflight) < self.pool.limit):
                    jid = ready.popleft()
                    if self.results[jid].state != "pending":
                        continue
                    if self._lookup(jid):
                        self._release(jid, ready)
                    elif self._fits(jid):
                        if not self._submit(jid):
                            ready.appendleft(jid)
                            break            # settle the broken pool first
                    else:
                        deferred.append(jid)
                for jid in deferred:
                    ready.append(jid)
                if not self.inflight:
                    continue
                done, _ = cf.wait(list(self.inflight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    if f in self.inflight:
                        self._finish(f, ready)
        except BaseException as e:
            self._abort()
            self.progress.stop(interrupted=isinstance(e, KeyboardInterrupt))
            raise
        finally:
            self.pool.shutdown()
        res = BuildResult(self.results, self.cache.dir, time.time() - t0, self.pool.max_workers, t0,
                          memory_budget=self.budget, warnings=list(self.warnings))
        self.progress.stop(result=res)
        return res


def worker_modules(jobs) -> tuple[str, ...]:
    """The modules of the jobs' functions: what a warm pool's workers import when they start."""
    return tuple(sorted({m for j in jobs if (m := getattr(j.fn, "__module__", None)) and m != "__main__"}))


def run_jobs(jobs: list[Job], cache_dir: str | Path, *, executor: cf.Executor | None = None,
             max_workers: int | None = None, progress: bool | None = None, retries: int = 1,
             log_dir: str | Path | None = None, transfer: str = "auto",
             mp_context: Any = None, keep_warm: bool = True, memory_budget: int | None = None) -> BuildResult:
    """Run ``jobs`` (a DAG through ``Job.deps``) with a content-addressed cache in ``cache_dir``.

    executor: any ``concurrent.futures.Executor``; default: a process pool of ``max_workers``
      (default ``os.cpu_count()``) workers started with 'forkserver' (no torch in the workers),
      created only if something has to be built. Dask: ``Client(...).get_executor()``; give
      Dask workers one thread each (output capture redirects the worker process' fds).
    progress: None = live display on a TTY (plain lines otherwise / when CI is set);
      True = always show; False = silent.
    retries: resubmissions of a job whose worker died (fn raising is not retried).
    log_dir: if given, every job's log is copied to ``log_dir/<job id>.log``.
    transfer: "auto" (paths for local pools, tar bytes for any other executor), "paths", "bytes".
    keep_warm: our own pool (fresh, or the idle pool of an earlier run if it matches) is not shut
      down at the end but kept idle (:func:`~.executors.prewarm`,
      ``FXSPLIT_WARM_IDLE_SECONDS``, default 300 s): the next run with the same number of workers
      reuses its workers, which have imported the job functions' modules (and what their
      ``warm_worker()`` loads) already. Workers are replaced if fxsplit's source changed.
    memory_budget: bytes. A job starts only if its predicted peak memory (``Job.cost["predicted_rss"]``, the
      cost model's; 0 when a job has none) fits in the budget minus the predicted peaks of the jobs running;
      a job predicted above the whole budget runs alone (``MemoryBudgetWarning``, ``BuildResult.warnings``).
      Cached jobs take no memory. None: no budget, jobs start by count alone. For a local pool; on a Dask
      cluster whose workers declare a ``MEMORY`` resource, every job asks for its predicted peak of it instead
      (Dask then places jobs by each worker's memory), with or without this budget.

    Never raises for a failing job (see ``BuildResult.raise_for_failures``); raises
    FxsplitError for an invalid job graph and re-raises KeyboardInterrupt after cleaning up.
    """
    return _Engine(jobs, cache_dir, executor, max_workers, progress, retries, log_dir, transfer,
                   mp_context, keep_warm, memory_budget).run()
