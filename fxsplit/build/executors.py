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
from .jobs import fn_name, safe_name
from .tools import environment_mismatch, source_digest, tool_versions

_FD_LOCK = threading.Lock()


# Initializer of the engine's own pool workers, run as ``exec(_BOOTSTRAP, {})`` (a builtin, so
# starting a worker imports nothing of fxsplit). It puts each worker in its own process group
# (so the engine can kill a worker together with the tools it started) and registers the
# ``fxsplit`` package *without running its __init__*: ``import fxsplit.build`` and the job
# functions' modules load only what they import themselves; the package __init__ (which may
# import torch) runs on first access to one of its attributes, so semantics are unchanged.
# (tests/test_build_engine.py::test_workers_stay_light checks a worker loads neither torch nor hls4ml.)
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
    """:func:`_execute` on a spec that travelled as bytes (any executor but a local process pool)."""
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
            ok, meta, error = _run_captured(spec["fn"], str(work), inputs, spec["params"], root / LOG)
        t1 = time.time()
        shutil.rmtree(root / "inputs", ignore_errors=True)
        res = {"ok": ok, "meta": meta, "error": error, "start": t0, "end": t1, "seconds": t1 - t0,
               "worker": _worker_id(), "env": env}
        if remote:
            res["tar"] = tar_dir(root, [WORK, LOG])
        else:
            (root / "worker.pid").unlink(missing_ok=True)
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


class Pool:
    """The executor the engine submits to.

    ``executor`` None: the engine's own process pool of ``max_workers`` workers (started with
    ``mp_context``, default 'forkserver'), created on the first :meth:`submit`. A broken
    process pool (a worker died) is replaced by one of ours; :meth:`abort` kills our workers
    and the tools they started.
    """

    def __init__(self, executor: cf.Executor | None, max_workers: int | None, mp_context: Any = None):
        self.executor = executor      # created lazily when it is ours
        self.own = executor is None
        self.mp_context = mp_context
        self.max_workers = max_workers or (getattr(executor, "_max_workers", None) if executor else None) \
            or os.cpu_count() or 1
        # local: shares this machine's disk and environment
        self.local = self.own or isinstance(executor, (cf.ProcessPoolExecutor, cf.ThreadPoolExecutor))
        # in-flight limit: exact for pools we know the size of; external executors get everything ready
        self.limit = self.max_workers if (self.own or isinstance(executor, cf.ProcessPoolExecutor)
                                          or max_workers) else None
        self.procs: dict | None = None     # pid -> Process of the current process pool

    def submit(self, spec: dict) -> tuple[cf.Future, cf.Executor]:
        """Submit ``_execute(spec)``; returns the future and the executor it went to."""
        if self.executor is None:
            self.executor = cf.ProcessPoolExecutor(self.max_workers,
                                                   mp_context=self.mp_context or _default_context(),
                                                   initializer=exec, initargs=(_BOOTSTRAP, {}))
            self.own = True
            self.procs = None
        pool = self.executor
        if isinstance(pool, cf.ProcessPoolExecutor):
            with _main_hidden():          # workers are launched lazily, by submit
                fut = pool.submit(_execute, spec)
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
            fut = pool.submit(_execute_packed, cloudpickle.dumps(spec))
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
        for p in procs.values():          # the pool terminates its workers; wait for their exit codes
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
            _kill(self.executor, self.procs)
            self.executor = None

    def shutdown(self) -> None:
        """End of the run: shut our pool down (a caller's pool is left running)."""
        if self.own and self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None
