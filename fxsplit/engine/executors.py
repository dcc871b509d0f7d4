"""Where jobs run: the worker side (:func:`_execute`, output capture, the pool bootstrap) and
:class:`Pool`, the submitting side's handle on the executor (the engine's own local process
pool, created lazily, killed with the tools it started, replaced when it breaks; or the
caller's executor).

Everything a worker imports is here or in the modules this one imports: keep it light.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import io
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .cache import LOG, WORK, tar_dir, untar

USAGE = "usage.json"      # in a local job's root: the peak so far (read by the engine if the worker dies)
from .jobs import fn_name, safe_name
from .tools import environment_mismatch, source_digest, tool_versions

_FD_LOCK = threading.Lock()


# Initializer of the engine's own pool workers, run as ``exec(_BOOTSTRAP, {})`` (a builtin, so
# starting a worker imports nothing of fxsplit). It puts each worker in its own process group
# (so the engine can kill a worker together with the tools it started) and registers the
# ``fxsplit`` package *without running its __init__*: ``import fxsplit.engine`` and the job
# functions' modules load only what they import themselves; the package __init__ (which may
# import torch) runs on first access to one of its attributes, so semantics are unchanged.
# (tests/test_engine_executors.py::test_workers_stay_light checks a worker loads neither torch nor hls4ml.)
_BOOTSTRAP = r"""
import importlib.util, os, signal, sys
try:
    os.setpgrp()
except OSError:
    pass
signal.signal(signal.SIGINT, signal.default_int_handler)
if "fxsplit" not in sys.modules and os.environ.get("FXSPLIT_WORKER_EAGER_INIT") != "1":
    spec = importlib.util.find_spec("fxsplit")
    if spec is not None and spec.loader is not None and spec.submodule_search_locations:
        mod = importlib.util.module_from_spec(spec)

        def __getattr__(name, _mod=mod, _spec=spec):
            if name.startswith("__") and name.endswith("__"):
                raise AttributeError(name)
            _mod.__dict__.pop("__getattr__", None)
            _spec.loader.exec_module(_mod)
            return getattr(_mod, name)

        mod.__getattr__ = __getattr__
        sys.modules["fxsplit"] = mod
"""

# Run after _BOOTSTRAP in a warm pool's workers (``WARM``: the job functions' modules): import each
# and call its ``warm_worker()`` if it has one (a job module's way to load what its jobs import
# lazily, e.g. what unpickling a torch.fx GraphModule pulls in), so a worker's first job does not
# pay for it. A failure here is left to the job that needs the module (it fails with the real error).
_WARM_CODE = r"""
import importlib
for _name in WARM:
    try:
        _w = getattr(importlib.import_module(_name), "warm_worker", None)
        if callable(_w):
            _w()
    except Exception:
        pass
"""


# ----------------------------------------------------------------------------- worker side

def _worker_id() -> str:
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker
            return get_worker().address
        except Exception:
            pass
    return f"{socket.gethostname()}/{os.getpid()}"


def _worker_tmp_base() -> str | None:
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker
            d = get_worker().local_directory
            os.makedirs(d, exist_ok=True)
            return d
        except Exception:
            pass
    return None


def _run_captured(fn: Callable, work: str, inputs: dict, params: dict, log_path: Path):
    """Run fn with fds 1/2 (and sys.stdout/err) sent to log_path. -> (ok, meta, error)"""
    with open(log_path, "ab", buffering=0) as logf:
        have_fds = _FD_LOCK.acquire(blocking=False)
        saved_fds = None
        saved_std = (sys.stdout, sys.stderr)
        text = None
        try:
            if have_fds:
                for s in saved_std:
                    with contextlib.suppress(Exception):
                        s.flush()
                saved_fds = (os.dup(1), os.dup(2))
                os.dup2(logf.fileno(), 1)
                os.dup2(logf.fileno(), 2)
            else:
                logf.write(b"[fxsplit] note: this worker runs several jobs at once in threads; output of "
                           b"subprocesses is not captured here (use one thread per worker)\n")
            text = io.TextIOWrapper(open(os.dup(logf.fileno()), "wb", buffering=0),
                                    encoding="utf-8", errors="replace", line_buffering=True,
                                    write_through=True)
            sys.stdout = sys.stderr = text
            try:
                meta = fn(work, inputs, **params)
                if meta is None:
                    meta = {}
                if not isinstance(meta, dict):
                    raise TypeError(f"job function {fn_name(fn)} returned {type(meta).__name__}, "
                                    "expected a dict of JSON-able metadata")
                try:
                    meta = json.loads(json.dumps(meta))
                except (TypeError, ValueError) as e:
                    raise TypeError(f"job function {fn_name(fn)} returned metadata that is not "
                                    f"JSON-able: {e}") from None
                return True, meta, None
            except (Exception, SystemExit) as e:
                traceback.print_exc()
                msg = str(e).strip().splitlines()
                return False, None, f"{type(e).__name__}: {msg[-1] if msg else ''}".rstrip(": ")
        finally:
            sys.stdout, sys.stderr = saved_std
            if text is not None:
                with contextlib.suppress(Exception):
                    text.close()
            if saved_fds is not None:
                os.dup2(saved_fds[0], 1)
                os.dup2(saved_fds[1], 2)
                os.close(saved_fds[0])
                os.close(saved_fds[1])
            if have_fds:
                _FD_LOCK.release()


class _ByValue:
    """A function pickled by value (cloudpickle): for job functions defined in ``__main__``."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __reduce__(self):
        import cloudpickle
        return (_loads_by_value, (cloudpickle.dumps(self.fn),))


def _loads_by_value(data: bytes) -> Callable:
    import cloudpickle
    return cloudpickle.loads(data)


def _execute_packed(data: bytes) -> dict:
    """:func:`_execute` on a spec that travelled as bytes (any executor but a thread pool)."""
    import cloudpickle
    return _execute(cloudpickle.loads(data))


def _measure(tools) -> dict:
    """fxsplit's source digest and the versions of ``tools``, measured in this process."""
    return {"fxsplit": source_digest(), "tools": tool_versions(tools)}


def probe_environment(tools) -> dict:
    """A task for a remote executor: what a job key computed on its workers must cover."""
    return {**_measure(tools), "worker": _worker_id()}


def _execute(spec: dict) -> dict:
    """The task submitted to the executor (top level, so it pickles by reference).

    ``spec["root"]`` set: the worker shares the submitter's disk; it builds right there
    (a directory in ``cache_dir/.tmp`` chosen by the submitter) and inputs are paths.
    ``spec["root"]`` None: remote-safe mode; own temp dir, inputs arrive as tar bytes, the
    workdir and log go back as tar bytes.

    First the worker measures fxsplit's source digest and the job's tools (``spec["tools"]``)
    and returns them as ``env``; if they differ from ``spec["expect"]`` (what the key was
    computed for) the job function is not run.
    """
    t0 = time.time()
    remote = spec["root"] is None
    if remote:
        root = Path(tempfile.mkdtemp(prefix="fxsplit-job-", dir=_worker_tmp_base()))
    else:
        root = Path(spec["root"])
        root.mkdir(parents=True, exist_ok=False)
        (root / "worker.pid").write_text(str(os.getpid()))
    try:
        work = root / WORK
        work.mkdir()
        env = _measure(spec.get("tools", ()))
        mismatch = environment_mismatch(spec["expect"], env, _worker_id()) if "expect" in spec else None
        usage = None
        if mismatch:
            with open(root / LOG, "a") as f:
                f.write(f"[fxsplit] not run: {mismatch}\n")
            ok, meta, error = False, None, mismatch
        else:
            inputs: dict[str, str] = {}
            for dep_id, (kind, payload) in spec["inputs"].items():
                dst = root / "inputs" / safe_name(dep_id)
                if kind == "tar":             # a tar of the dependency's entry holding work/
                    untar(payload, dst)
                    dst = dst / WORK
                    dst.mkdir(exist_ok=True)
                else:
                    shutil.copytree(payload, dst, symlinks=True)
                inputs[dep_id] = str(dst)
            from .usage import TreeMonitor
            with TreeMonitor(live_path=None if remote else root / USAGE) as mon:
                ok, meta, error = _run_captured(spec["fn"], str(work), inputs, spec["params"], root / LOG)
            usage = mon.result()
        t1 = time.time()
        shutil.rmtree(root / "inputs", ignore_errors=True)
        res = {"ok": ok, "meta": meta, "error": error, "start": t0, "end": t1, "seconds": t1 - t0,
               "worker": _worker_id(), "env": env, "usage": usage}
        if remote:
            res["tar"] = tar_dir(root, [WORK, LOG])
        else:
            (root / "worker.pid").unlink(missing_ok=True)
            (root / USAGE).unlink(missing_ok=True)
            res["root"] = str(root)
        return res
    finally:
        if remote:
            shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------- submitting side

@contextlib.contextmanager
def _main_hidden():
    """Keep 'spawn'/'forkserver' workers from importing the submitter's ``__main__``.

    Workers only need importable modules (fxsplit's job functions). Importing the user's
    script in every worker would re-run its top level: torch imports, and in a script without
    ``if __name__ == "__main__":`` the whole compile again (the worker then dies at startup).
    Functions defined in ``__main__`` are shipped by value with cloudpickle instead.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {a: main.__dict__[a] for a in ("__file__", "__spec__") if a in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _default_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _kill(executor: cf.Executor, procs: dict | None) -> None:
    """Kill a local pool's workers and whatever they started (each worker leads its own group)."""
    procs = dict(procs or getattr(executor, "_processes", None) or {})
    for pid in procs:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(OSError):
                kill(pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        executor.shutdown(wait=False, cancel_futures=True)
    for p in procs.values():
        with contextlib.suppress(Exception):
            p.join(5)


# ----------------------------------------------------------------------------- warm pools

# One idle process pool of ours kept alive between builds in this process (the next build with the
# same workers takes it instead of starting workers that import torch and hls4ml again). Killed after
# WARM_IDLE_SECONDS idle, when another pool is parked, and at interpreter exit.
WARM_IDLE_SECONDS = float(os.environ.get("FXSPLIT_WARM_IDLE_SECONDS", "300"))
_WARM_LOCK = threading.Lock()
_parked: dict | None = None      # {"key", "warm", "executor", "procs", "timer"}
_exit_hook = False


def _warm_key(max_workers: int, ctx: Any) -> tuple:
    """What a parked pool must match to be reused: size, start method and fxsplit's source (workers
    hold fxsplit's modules as they were when they started; an edited fxsplit needs new workers)."""
    from .tools import source_digest
    return (int(max_workers), ctx.get_start_method(), source_digest())


def _alive(executor: cf.Executor, procs: dict | None) -> bool:
    return (not getattr(executor, "_broken", False) and not getattr(executor, "_shutdown_thread", False)
            and bool(procs) and all(p.is_alive() for p in procs.values()))


def _discard(entry: dict | None) -> None:
    if entry is None:
        return
    if entry.get("timer") is not None:
        entry["timer"].cancel()
    _kill(entry["executor"], entry["procs"])


def _take_parked(key: tuple, warm: frozenset) -> tuple[cf.Executor, dict] | None:
    """The parked pool if it matches ``key`` and its workers preloaded at least ``warm``; else None
    (and a parked pool that does not match is killed: one idle pool at most)."""
    global _parked
    with _WARM_LOCK:
        entry, _parked = _parked, None
    if entry is None:
        return None
    if entry["key"] == key and warm <= entry["warm"] and _alive(entry["executor"], entry["procs"]):
        entry["timer"].cancel()
        return entry["executor"], getattr(entry["executor"], "_processes", None) or entry["procs"]
    _discard(entry)
    return None


def _park(key: tuple, warm: frozenset, executor: cf.Executor, procs: dict | None) -> None:
    global _parked, _exit_hook
    if not _alive(executor, procs):
        _kill(executor, procs)
        return
    timer = threading.Timer(WARM_IDLE_SECONDS, _expire, args=(executor,))
    timer.daemon = True
    with _WARM_LOCK:
        old, _parked = _parked, {"key": key, "warm": warm, "executor": executor, "procs": procs, "timer": timer}
        if not _exit_hook:
            # before concurrent.futures' own exit handler (threading's exit hooks run last-registered first),
            # which would wait for idle workers that may still be importing torch
            threading._register_atexit(discard_warm_pool)
            _exit_hook = True
    _discard(old)
    timer.start()


def _expire(executor: cf.Executor) -> None:
    global _parked
    with _WARM_LOCK:
        entry = _parked if _parked is not None and _parked["executor"] is executor else None
        if entry is not None:
            _parked = None
    _discard(entry)


def discard_warm_pool() -> None:
    """Kill the idle pool kept warm between builds, if any (workers hold no state worth keeping)."""
    global _parked
    with _WARM_LOCK:
        entry, _parked = _parked, None
    _discard(entry)


def warm_pool_pids() -> list[int]:
    """The worker pids of the idle warm pool (empty if there is none)."""
    with _WARM_LOCK:
        return sorted(_parked["procs"]) if _parked is not None else []


def prewarm(max_workers: int | None, warm: tuple[str, ...] | list[str], mp_context: Any = None,
            wait: bool = False) -> None:
    """Start (or keep) a warm pool of ``max_workers`` workers that preload the modules ``warm``. By default
    without waiting for it: its workers import while the caller goes on (``compile`` lowers the model
    meanwhile). ``wait=True`` returns once every worker has started and imported them (a notebook session
    or a benchmark that wants its next build to measure the build alone). The next :func:`run_jobs` with
    the same workers takes the pool."""
    pool = Pool(None, max_workers, mp_context, warm=warm)
    ex = pool._ensure()
    with _main_hidden():
        # each submit to a pool with no idle worker starts one (a worker runs a task only after its initializer)
        futs = [ex.submit(os.getpid) for _ in range(pool.max_workers)]
        seen: set[int] = set()
        while wait:
            # a worker that finished its imports first may have taken two: ping until every worker answered
            seen |= {f.result() for f in futs}      # a worker that died while starting raises here
            if len(seen) >= pool.max_workers:
                break
            futs = [ex.submit(_ping, 0.05) for _ in range(pool.max_workers)]
    pool.procs = getattr(ex, "_processes", None)
    pool.shutdown()


def _ping(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


class Pool:
    """The executor the engine submits to.

    ``executor`` None: the engine's own process pool of ``max_workers`` workers (started with
    ``mp_context``, default 'forkserver'), created on the first :meth:`submit`, or the idle pool
    parked by the last build if it matches (same size, start method, fxsplit source, and it preloaded
    the modules ``warm``). A broken process pool (a worker died) is replaced by one of ours;
    :meth:`abort` kills our workers and the tools they started; :meth:`shutdown` parks our pool warm
    for the next build (``keep_warm``), or shuts it down.
    """

    def __init__(self, executor: cf.Executor | None, max_workers: int | None, mp_context: Any = None,
                 warm: tuple[str, ...] | list[str] = (), keep_warm: bool = True):
        self.executor = executor      # created lazily when it is ours
        self.own = executor is None
        self.mp_context = mp_context
        self.warm = frozenset(warm)
        self.keep_warm = keep_warm
        self.reused = False           # this run took a warm pool
        self.max_workers = max_workers or (getattr(executor, "_max_workers", None) if executor else None) \
            or os.cpu_count() or 1
        # local: shares this machine's disk and environment
        self.local = self.own or isinstance(executor, (cf.ProcessPoolExecutor, cf.ThreadPoolExecutor))
        # in-flight limit: exact for pools we know the size of; external executors get everything ready
        self.limit = self.max_workers if (self.own or isinstance(executor, cf.ProcessPoolExecutor)
                                          or max_workers) else None
        self.procs: dict | None = None     # pid -> Process of the current process pool

    def _ensure(self) -> cf.Executor:
        if self.executor is None:
            ctx = self.mp_context or _default_context()
            got = _take_parked(_warm_key(self.max_workers, ctx), self.warm)
            if got is not None:
                self.executor, self.procs = got
                self.reused = True
            else:
                self.executor = cf.ProcessPoolExecutor(
                    self.max_workers, mp_context=ctx, initializer=exec,
                    initargs=(_BOOTSTRAP + _WARM_CODE, {"WARM": tuple(sorted(self.warm))}))
                self.procs = None
            self.own = True
        return self.executor

    def dask_memory(self) -> int | None:
        """On a Dask cluster whose workers declare a ``MEMORY`` resource (``dask worker --resources MEMORY=16e9``,
        ``LocalCluster(resources={"MEMORY": ...})``): the largest one, in bytes; else None."""
        client = getattr(self.executor, "_client", None)
        if self.local or client is None:
            return None
        if not hasattr(self, "_dask_memory"):
            try:
                caps = [float((w.get("resources") or {}).get("MEMORY") or 0)
                        for w in client.scheduler_info()["workers"].values()]
            except Exception:                   # noqa: BLE001  (not a Dask client after all)
                caps = []
            self._dask_memory = int(max(caps)) if caps and max(caps) > 0 else None
        return self._dask_memory

    def submit(self, spec: dict, memory: int | None = None) -> tuple[cf.Future, cf.Executor]:
        """Submit ``_execute(spec)``; returns the future and the executor it went to. ``memory`` (bytes, the job's
        predicted peak): on a Dask cluster whose workers declare a ``MEMORY`` resource, the job asks for that
        much of it (at most the largest worker's), so Dask never runs jobs together past a worker's memory."""
        pool = self._ensure()
        if isinstance(pool, cf.ProcessPoolExecutor):
            # as bytes of the standard pickler: the pool's own (multiprocessing's ForkingPickler, with torch's
            # reductions) moves every tensor it sends into shared memory, and so frees the memory of the
            # caller's parameters under any NumPy array viewing them (hls4ml's graphs of the model in this
            # process, the user's own), which then read whatever the allocator puts there next
            data = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
            with _main_hidden():          # workers are launched lazily, by submit
                fut = pool.submit(_execute_packed, data)
            if self.procs is None:
                self.procs = getattr(pool, "_processes", None)
        elif isinstance(pool, cf.ThreadPoolExecutor):
            fut = pool.submit(_execute, spec)
        else:
            # as bytes: Dask's scheduler unpickles the task graph in a thread of the submitting process, and
            # unpickling a torch.fx GraphModule re-traces it, patching torch.nn.Module.__call__ process-wide
            # while the main thread may be running or tracing a model (seen: a trace in the main thread
            # failing with "module is not installed as a submodule", and every later trace with it)
            import cloudpickle
            cap = self.dask_memory()
            extra = {"resources": {"MEMORY": min(int(memory or 0), cap)}} if cap is not None else {}
            fut = pool.submit(_execute_packed, cloudpickle.dumps(spec), **extra)
        return fut, pool

    def measure(self, tools: list[str]) -> dict:
        """fxsplit's source digest and the versions of ``tools`` where the jobs will run, and
        where they were measured: here for a local pool (same machine, same environment), by
        one probe task on the executor otherwise."""
        if self.local:
            return {**_measure(tools), "where": f"in the submitting process {_worker_id()}"}
        from ..errors import FxsplitError
        try:
            probe = self.executor.submit(probe_environment, tools).result()
        except Exception as e:
            raise FxsplitError(
                f"could not measure fxsplit's source and the tool versions on the executor's workers "
                f"({type(e).__name__}: {e})",
                hint="the workers must be able to import fxsplit (the same version as here)") from e
        return {"fxsplit": probe["fxsplit"], "tools": probe["tools"], "where": f"on worker {probe['worker']}"}

    def broken(self, pool: cf.Executor, futures: list[cf.Future]) -> dict[int, int | None]:
        """A process pool broke (a worker died): wait for its in-flight ``futures`` to settle,
        kill what is left of it and return its workers' exit codes (pid -> code). The next
        :meth:`submit` starts a fresh pool of ours (also in place of a caller's broken pool)."""
        procs = dict(self.procs or {})
        cf.wait(futures, timeout=30)
        # the pool's manager thread terminates and joins its workers: let it finish first. Two threads joining one
        # worker race to read its exit status, and the loser of a forkserver worker's reads 255 for a SIGKILL
        manager = getattr(pool, "_executor_manager_thread", None)
        if manager is not None:
            manager.join(10)
        for p in procs.values():          # wait for their exit codes (cached by the manager's join)
            with contextlib.suppress(Exception):
                p.join(5)
        exitcodes = {pid: p.exitcode for pid, p in procs.items()}
        _kill(pool, procs)                # and whatever they had started
        if pool is self.executor:
            self.executor = None
            self.procs = None
            self.own = True               # a user's broken pool is replaced by one of ours
        return exitcodes

    def abort(self) -> None:
        """Ctrl-C: kill our pool's workers and the tools they started (a caller's pool is left alone)."""
        if self.own and self.executor is not None:
            ex, self.executor = self.executor, None      # whatever happens below, shutdown() will not wait on it
            _kill(ex, self.procs)

    def shutdown(self) -> None:
        """End of the run: park our pool warm for the next build (``keep_warm``, a local process pool
        whose workers are all alive), or shut it down (a caller's pool is left running)."""
        if self.own and self.executor is not None:
            ex, self.executor = self.executor, None
            if self.keep_warm and isinstance(ex, cf.ProcessPoolExecutor):
                _park(_warm_key(self.max_workers, self.mp_context or _default_context()), self.warm, ex,
                      self.procs or getattr(ex, "_processes", None))
            else:
                ex.shutdown(wait=True)
