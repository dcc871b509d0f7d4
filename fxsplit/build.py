"""The build engine shared by every flow: a DAG of jobs, a content-addressed cache, any executor.

A :class:`Job` is one step of one partition (``p0/csim``, ``p0/hls``, ``stitched/tb``...).
:func:`run_jobs` runs a list of jobs on a ``concurrent.futures.Executor`` (a local process
pool by default, or ``dask.distributed.Client(...).get_executor()``), starting each job as
soon as its dependencies are done, and stores every result in a content-addressed cache::

    cache_dir/
      <key>/                 one complete, verified entry per job key (renamed into place atomically)
        work/                the job's artifacts (what ``fn`` wrote into its workdir)
        job.log              the job's captured stdout/stderr (file descriptors 1 and 2)
        manifest.json        meta (fn's return value), timings, size + sha256 of every file in work/
      .tmp/                  entries being built or unpacked (never looked up; swept when stale)
      _failed/<job id>/      the workdir and log of the last failed attempt of a job (for debugging)

Contract for ``Job.fn`` (a module-level function, pickled by reference)::

    fn(workdir: str, inputs: dict[str, str], **params) -> dict   # JSON-able metadata

It runs in a worker process, writes only into ``workdir`` and reads its dependencies'
artifacts from ``inputs[dep_job_id]`` (a private copy: it may be modified, it is thrown away).
Everything it prints, and everything its subprocesses print, goes to the job's log.

The cache key is ``sha256(engine format, step, fn's qualified name, key_data, (dep id, dep key)...)``:
``key_data`` must cover everything that defines the result (graph, weights, config, flow, tool
versions) -- ``params`` are *not* hashed.

Semantics:

- A failing job never stops the others; its dependents are ``"skipped"``.
- ``fn`` raising is a *job failure* and is not retried.  A worker dying under a job
  (SIGKILL, OOM killer: ``BrokenProcessPool`` locally, ``KilledWorker`` on Dask) is an
  *infrastructure failure*: the job is resubmitted up to ``retries`` times, then reported failed.
  Locally the broken pool is replaced by a fresh one and the other in-flight jobs are
  resubmitted without being charged an attempt (the engine tells the culprit from the
  bystanders by the workers' exit codes).
- Ctrl-C (``KeyboardInterrupt`` in the submitting process) kills the local workers (and the
  tools they started), cancels everything pending, removes the temporary directories and re-raises.
  No partial entry can ever appear under ``cache_dir/<key>``: entries are renamed into place
  complete, and every lookup verifies the manifest (a changed, missing or extra file -> rebuilt).

This module must stay light: it never imports torch or hls4ml (workers import it).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import errno
import fcntl
import hashlib
import heapq
import io
import json
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import uuid
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import FxsplitError

__all__ = [
    "ENGINE_FORMAT", "Job", "JobResult", "BuildResult", "run_jobs", "job_key", "verify_entry",
    "predict_wall_time", "output_dir_lock",
]

ENGINE_FORMAT = 1
TAIL_LINES = 30
_MANIFEST = "manifest.json"
_WORK = "work"
_LOG = "job.log"
_TMP = ".tmp"
_FAILED = "_failed"
_STALE_TMP_SECONDS = 24 * 3600
_FREE_RESUBMITS = 3          # a bystander of a pool break is resubmitted this often before being charged


# ----------------------------------------------------------------------------- data types

@dataclass
class Job:
    """One step of one partition. See the module docstring for ``fn``'s contract."""
    id: str
    partition: str
    step: str
    fn: Callable[..., dict]
    params: dict = field(default_factory=dict)
    key_data: bytes | str = b""
    deps: tuple[str, ...] = ()


@dataclass
class JobResult:
    id: str
    partition: str
    step: str
    key: str
    state: str = "pending"          # "built" | "cached" | "failed" | "skipped"
    artifact_dir: Path | None = None
    meta: dict | None = None
    seconds: float = 0.0            # time this job took in this run (0 when cached)
    build_seconds: float = 0.0      # time the build that produced the artifacts took (cached: from the manifest)
    start: float | None = None      # wall clock (time.time()) on the worker, this run; None when cached
    end: float | None = None
    worker: str | None = None       # "host/pid" or the Dask worker address; "cache" when reused
    attempts: int = 0               # how many times it was submitted to a worker in this run
    log_path: Path | None = None
    error: str | None = None
    error_tail: str | None = None
    deps: tuple[str, ...] = ()
    debug_dir: Path | None = None   # failed jobs: the workdir of the failed attempt (cache_dir/_failed/...)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "partition": self.partition, "step": self.step, "key": self.key,
            "state": self.state,
            "artifact_dir": str(self.artifact_dir) if self.artifact_dir else None,
            "meta": self.meta, "seconds": round(self.seconds, 4),
            "build_seconds": round(self.build_seconds, 4),
            "start": self.start, "end": self.end, "worker": self.worker, "attempts": self.attempts,
            "log_path": str(self.log_path) if self.log_path else None,
            "error": self.error, "error_tail": self.error_tail, "deps": list(self.deps),
            "debug_dir": str(self.debug_dir) if self.debug_dir else None,
        }


@dataclass
class BuildResult:
    results: dict[str, JobResult]
    cache_dir: Path
    wall_seconds: float = 0.0
    workers: int | None = None
    start: float | None = None

    def __getitem__(self, job_id: str) -> JobResult:
        return self.results[job_id]

    def __iter__(self) -> Iterator[JobResult]:
        return iter(self.results.values())

    def __len__(self) -> int:
        return len(self.results)

    @property
    def ok(self) -> bool:
        return all(r.state in ("built", "cached") for r in self.results.values())

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results.values() if r.state == "failed"]

    @property
    def skipped(self) -> list[JobResult]:
        return [r for r in self.results.values() if r.state == "skipped"]

    @property
    def built(self) -> list[JobResult]:
        return [r for r in self.results.values() if r.state == "built"]

    @property
    def cached(self) -> list[JobResult]:
        return [r for r in self.results.values() if r.state == "cached"]

    def raise_for_failures(self) -> None:
        failed = self.failed
        if not failed:
            return
        lines = [f"build failed: {len(failed)} of {len(self.results)} job(s) failed"
                 + (f", {len(self.skipped)} skipped because a dependency failed" if self.skipped else "")]
        for r in failed:
            lines.append(f"- partition {r.partition}, step {r.step} ({r.id}): {r.error}")
            if r.log_path:
                lines.append(f"  log: {r.log_path}")
            if r.debug_dir:
                lines.append(f"  workdir of the failed attempt: {r.debug_dir}")
            if r.error_tail:
                lines.append("  last lines of its output:")
                lines.extend("    | " + ln for ln in r.error_tail.splitlines())
        parts = sorted({r.partition for r in failed})
        raise FxsplitError(
            "\n".join(lines), partition=", ".join(parts),
            hint="read the log(s) above and fix the cause; jobs that succeeded are cached and "
                 "will not run again")

    def rows(self) -> list[dict]:
        return [r.to_dict() for r in self.results.values()]

    def to_dict(self) -> dict:
        return {
            "cache_dir": str(self.cache_dir), "wall_seconds": round(self.wall_seconds, 4),
            "workers": self.workers, "start": self.start, "ok": self.ok,
            "built": len(self.built), "cached": len(self.cached),
            "failed": len(self.failed), "skipped": len(self.skipped),
            "predicted_wall": {str(w): round(predict_wall_time(self, w), 3) for w in (1, 2, 4, 8)},
            "jobs": self.rows(),
        }


# ----------------------------------------------------------------------------- keys

def _as_bytes(x: bytes | str) -> bytes:
    return x if isinstance(x, (bytes, bytearray)) else str(x).encode()


def _fn_name(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def job_key(step: str, key_data: bytes | str, dep_keys: Iterable[tuple[str, str]] = (),
            fn_name: str = "") -> str:
    """The cache key of a job: sha256 over the engine format, step, fn, key_data and deps' keys."""
    h = hashlib.sha256()
    for part in (f"fxsplit-build-v{ENGINE_FORMAT}".encode(), step.encode(), fn_name.encode()):
        h.update(len(part).to_bytes(8, "little") + part)
    kd = _as_bytes(key_data)
    h.update(len(kd).to_bytes(8, "little") + kd)
    for dep_id, dep_key in sorted(dep_keys):
        part = f"{dep_id}={dep_key}".encode()
        h.update(len(part).to_bytes(8, "little") + part)
    return h.hexdigest()


def _safe(job_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)


# ----------------------------------------------------------------------------- manifest / verify

def _scan(root: Path) -> dict[str, list]:
    """size + sha256 of every file under root (symlinks recorded by target)."""
    out: dict[str, list] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if os.path.islink(p):
                out[rel] = ["L", os.readlink(p)]
                continue
            with open(p, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            out[rel] = [os.path.getsize(p), digest]
    return out


def _read_manifest(entry: Path) -> dict | None:
    try:
        with open(entry / _MANIFEST, "rb") as f:
            m = json.loads(f.read())
        if not isinstance(m, dict) or m.get("format") != ENGINE_FORMAT or not isinstance(m.get("files"), dict):
            return None
        return m
    except (OSError, ValueError):
        return None


def verify_entry(entry: str | Path, key: str | None = None) -> dict | None:
    """Return the manifest of a complete, unmodified cache entry, else None.

    Checks the manifest parses, names ``key``, and that ``work/`` holds exactly the files it
    lists with the same sizes (a cheap stat pass first) and sha256 digests.
    """
    entry = Path(entry)
    m = _read_manifest(entry)
    if m is None or (key is not None and m.get("key") != key):
        return None
    work = entry / _WORK
    files: dict = m["files"]
    # cheap pass: the set of names and sizes
    seen = 0
    try:
        for dirpath, dirnames, filenames in os.walk(work):
            rel_dir = os.path.relpath(dirpath, work)
            for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                rec = files.get(rel)
                if rec is None:
                    return None
                p = os.path.join(dirpath, name)
                if rec[0] == "L":
                    if not os.path.islink(p) or os.readlink(p) != rec[1]:
                        return None
                elif os.path.islink(p) or os.path.getsize(p) != rec[0]:
                    return None
                seen += 1
    except OSError:
        return None
    if seen != len(files) or not work.is_dir():
        return None
    # full pass: contents
    try:
        for rel, rec in files.items():
            if rec[0] == "L":
                continue
            with open(work / rel, "rb") as f:
                if hashlib.file_digest(f, "sha256").hexdigest() != rec[1]:
                    return None
    except OSError:
        return None
    return m


def _discard(path: Path, cache_dir: Path) -> None:
    """Remove a directory, first renaming it into .tmp so a half-removed tree is never looked up."""
    if not path.exists():
        return
    trash = cache_dir / _TMP / f"trash-{uuid.uuid4().hex}"
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


# ----------------------------------------------------------------------------- tar helpers

def _tar_dir(root: Path, names: Iterable[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tf:
        for n in names:
            if (root / n).exists() or (root / n).is_symlink():
                tf.add(root / n, arcname=n)
    return buf.getvalue()


def _untar(data: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
        tf.extractall(dest, filter="data")


# ----------------------------------------------------------------------------- worker side

_FD_LOCK = threading.Lock()


# Initializer of the engine's own pool workers, run as ``exec(_BOOTSTRAP, {})`` (a builtin, so
# starting a worker imports nothing of fxsplit). It puts each worker in its own process group
# (so the engine can kill a worker together with the tools it started) and registers the
# ``fxsplit`` package *without running its __init__*: ``import fxsplit.build`` and the job
# functions' modules load only what they import themselves; the package __init__ (which may
# import torch) runs on first access to one of its attributes, so semantics are unchanged.
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
                    raise TypeError(f"job function {_fn_name(fn)} returned {type(meta).__name__}, "
                                    "expected a dict of JSON-able metadata")
                try:
                    meta = json.loads(json.dumps(meta))
                except (TypeError, ValueError) as e:
                    raise TypeError(f"job function {_fn_name(fn)} returned metadata that is not "
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


def _execute(spec: dict) -> dict:
    """The task submitted to the executor (top level, so it pickles by reference).

    ``spec["root"]`` set: the worker shares the submitter's disk; it builds right there
    (a directory in ``cache_dir/.tmp`` chosen by the submitter) and inputs are paths.
    ``spec["root"]`` None: remote-safe mode; own temp dir, inputs arrive as tar bytes, the
    workdir and log go back as tar bytes.
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
        work = root / _WORK
        work.mkdir()
        inputs: dict[str, str] = {}
        for dep_id, (kind, payload) in spec["inputs"].items():
            dst = root / "inputs" / _safe(dep_id)
            if kind == "tar":             # a tar of the dependency's entry holding work/
                _untar(payload, dst)
                dst = dst / _WORK
                dst.mkdir(exist_ok=True)
            else:
                shutil.copytree(payload, dst, symlinks=True)
            inputs[dep_id] = str(dst)
        ok, meta, error = _run_captured(spec["fn"], str(work), inputs, spec["params"], root / _LOG)
        t1 = time.time()
        shutil.rmtree(root / "inputs", ignore_errors=True)
        res = {"ok": ok, "meta": meta, "error": error, "start": t0, "end": t1, "seconds": t1 - t0,
               "worker": _worker_id()}
        if remote:
            res["tar"] = _tar_dir(root, [_WORK, _LOG])
        else:
            (root / "worker.pid").unlink(missing_ok=True)
            res["root"] = str(root)
        return res
    finally:
        if remote:
            shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------- scheduling

def _toposort(jobs: list[Job]) -> list[Job]:
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
    order: list[Job] = []
    state: dict[str, int] = {}

    def visit(j: Job, stack: list[str]) -> None:
        s = state.get(j.id)
        if s == 2:
            return
        if s == 1:
            cyc = stack[stack.index(j.id):] + [j.id]
            raise FxsplitError("build jobs form a cycle: " + " -> ".join(cyc), partition=j.partition)
        state[j.id] = 1
        stack.append(j.id)
        for d in j.deps:
            visit(by_id[d], stack)
        stack.pop()
        state[j.id] = 2
        order.append(j)

    for j in jobs:
        visit(j, [])
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


# ----------------------------------------------------------------------------- the engine

def _tail(path: Path | None, n: int = TAIL_LINES) -> str | None:
    if path is None or not path.exists():
        return None
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))
        data = f.read()
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-n:])


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


class _Inflight:
    __slots__ = ("job_id", "root", "pool", "spec_bytes")

    def __init__(self, job_id: str, root: Path | None, pool: Any):
        self.job_id = job_id
        self.root = root
        self.pool = pool


class _Engine:
    def __init__(self, jobs, cache_dir, executor, max_workers, progress, retries, log_dir,
                 transfer, mp_context):
        from .progress import make_progress

        self.order = _toposort(list(jobs))
        self.jobs = {j.id: j for j in self.order}
        self.cache_dir = Path(cache_dir).resolve()
        self.tmp = self.cache_dir / _TMP
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.log_dir = Path(log_dir).resolve() if log_dir is not None else None
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self.retries = max(0, int(retries))
        self.mp_context = mp_context
        self.user_executor = executor
        self.max_workers = max_workers or (getattr(executor, "_max_workers", None) if executor else None) \
            or os.cpu_count() or 1
        self.pool = executor          # created lazily when it is ours
        self.own_pool = executor is None
        local = self.own_pool or isinstance(executor, (cf.ProcessPoolExecutor, cf.ThreadPoolExecutor))
        if transfer == "auto":
            transfer = "paths" if local else "bytes"
        if transfer not in ("paths", "bytes"):
            raise ValueError(f"transfer must be 'auto', 'paths' or 'bytes', not {transfer!r}")
        self.transfer = transfer
        # in-flight limit: exact for pools we know the size of; external executors get everything ready
        self.limit = self.max_workers if (self.own_pool or isinstance(executor, cf.ProcessPoolExecutor)
                                          or max_workers) else None
        self.keys: dict[str, str] = {}
        for j in self.order:
            self.keys[j.id] = job_key(j.step, j.key_data, [(d, self.keys[d]) for d in j.deps], _fn_name(j.fn))
        self.results = {j.id: JobResult(j.id, j.partition, j.step, self.keys[j.id], deps=tuple(j.deps))
                        for j in self.order}
        self.dependents: dict[str, list[str]] = {j.id: [] for j in self.order}
        for j in self.order:
            for d in j.deps:
                self.dependents[d].append(j.id)
        self.missing = {j.id: len(set(j.deps)) for j in self.order}
        self.inflight: dict[cf.Future, _Inflight] = {}
        self.free_resubmits: dict[str, int] = {}
        self.tar_cache: dict[str, bytes] = {}
        self.progress = make_progress(progress)
        self.pool_procs: dict | None = None
        self.startup_breaks = 0

    # -- pool management
    def _ensure_pool(self):
        if self.pool is None:
            self.pool = cf.ProcessPoolExecutor(self.max_workers, mp_context=self.mp_context or _default_context(),
                                               initializer=exec, initargs=(_BOOTSTRAP, {}))
            self.own_pool = True
            self.pool_procs = None
        return self.pool

    def _kill_pool(self, pool, procs: dict | None) -> None:
        """Kill a local pool's workers and whatever they started (each worker leads its own group)."""
        procs = dict(procs or getattr(pool, "_processes", None) or {})
        for pid in procs:
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(OSError):
                    kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            pool.shutdown(wait=False, cancel_futures=True)
        for p in procs.values():
            with contextlib.suppress(Exception):
                p.join(5)

    # -- job lifecycle
    def _release(self, jid: str, ready: deque) -> None:
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

    def _log_copy(self, r: JobResult, src: Path) -> Path:
        if self.log_dir is None or not src.exists():
            return src
        dst = self.log_dir / f"{_safe(r.id)}.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(src, dst)
            return dst
        return src

    def _lookup(self, jid: str) -> bool:
        r = self.results[jid]
        entry = self.cache_dir / r.key
        if not entry.exists():
            return False
        m = verify_entry(entry, r.key)
        if m is None:
            _discard(entry, self.cache_dir)       # corrupted: rebuild
            return False
        r.state = "cached"
        r.artifact_dir = entry / _WORK
        r.meta = m.get("meta")
        r.build_seconds = float(m.get("seconds") or 0.0)
        r.worker = "cache"
        r.log_path = self._log_copy(r, entry / _LOG)
        self.progress.update(r, "cached")
        return True

    def _submit(self, jid: str) -> None:
        job = self.jobs[jid]
        r = self.results[jid]
        inputs: dict[str, tuple[str, Any]] = {}
        for d in job.deps:
            adir = self.results[d].artifact_dir
            if self.transfer == "paths":
                inputs[d] = ("path", str(adir))
            else:
                if d not in self.tar_cache:
                    self.tar_cache[d] = _tar_dir(adir.parent, [_WORK])
                inputs[d] = ("tar", self.tar_cache[d])   # unpacks as <dst>/work
        root = self.tmp / f"{r.key[:16]}-{uuid.uuid4().hex[:12]}" if self.transfer == "paths" else None
        spec = {"id": jid, "fn": job.fn, "params": job.params, "inputs": inputs,
                "root": str(root) if root else None, "nonce": uuid.uuid4().hex}
        if getattr(job.fn, "__module__", None) == "__main__" and self.transfer == "paths":
            spec["fn"] = _ByValue(job.fn)
        pool = self._ensure_pool() if self.own_pool else self.pool
        if isinstance(pool, cf.ProcessPoolExecutor):
            with _main_hidden():          # workers are launched lazily, by submit
                fut = pool.submit(_execute, spec)
        else:
            fut = pool.submit(_execute, spec)
        if self.pool_procs is None and isinstance(pool, cf.ProcessPoolExecutor):
            self.pool_procs = getattr(pool, "_processes", None)
        r.attempts += 1
        self.inflight[fut] = _Inflight(jid, root, pool)
        self.progress.update(r, "running")

    def _commit(self, r: JobResult, res: dict, root: Path) -> None:
        manifest = {"format": ENGINE_FORMAT, "key": r.key, "id": r.id, "partition": r.partition,
                    "step": r.step, "meta": res["meta"], "seconds": res["seconds"], "start": res["start"],
                    "end": res["end"], "worker": res["worker"], "created": time.time(),
                    "files": _scan(root / _WORK)}
        with open(root / _MANIFEST, "w") as f:
            json.dump(manifest, f)
        dest = self.cache_dir / r.key
        try:
            os.rename(root, dest)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            # somebody else committed the same key meanwhile; keep theirs if it is sound
            if verify_entry(dest, r.key) is None:
                _discard(dest, self.cache_dir)
                os.rename(root, dest)
            else:
                shutil.rmtree(root, ignore_errors=True)
        r.artifact_dir = dest / _WORK
        r.log_path = self._log_copy(r, dest / _LOG)

    def _unpack_result(self, info: _Inflight, res: dict) -> Path:
        if info.root is not None:
            return Path(res.get("root") or info.root)
        root = self.tmp / f"{self.results[info.job_id].key[:16]}-{uuid.uuid4().hex[:12]}"
        info.root = root
        _untar(res["tar"], root)
        (root / _WORK).mkdir(exist_ok=True)
        return root

    def _finish(self, fut: cf.Future, ready: deque) -> None:
        info = self.inflight.pop(fut)
        jid = info.job_id
        r = self.results[jid]
        try:
            exc = fut.exception()
        except cf.CancelledError as e:
            exc = e
        if exc is None:
            res = fut.result()
            r.start, r.end, r.worker = res["start"], res["end"], res["worker"]
            r.seconds = r.build_seconds = float(res["seconds"])
            root = self._unpack_result(info, res)
            if res["ok"]:
                r.meta = res["meta"]
                self._commit(r, res, root)
                r.state = "built"
                self.progress.update(r, "built")
                self._release(jid, ready)
            else:
                r.error = res["error"]
                self._keep_failed(r, root)
                r.state = "failed"
                self.progress.update(r, "failed")
                self._skip_dependents(jid)
            return
        if isinstance(exc, BrokenProcessPool) and isinstance(info.pool, cf.ProcessPoolExecutor):
            self._pool_broken(fut, info, exc, ready)
            return
        self._infra_failure(r, info, exc, ready, charged=True)

    def _keep_failed(self, r: JobResult, root: Path | None) -> None:
        if root is None or not root.exists():
            r.log_path = None
            return
        dst = self.cache_dir / _FAILED / _safe(r.id)
        _discard(dst, self.cache_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        (root / "inputs").exists() and shutil.rmtree(root / "inputs", ignore_errors=True)
        (root / "worker.pid").unlink(missing_ok=True)
        os.rename(root, dst)
        r.debug_dir = dst / _WORK
        r.error_tail = _tail(dst / _LOG)
        r.log_path = self._log_copy(r, dst / _LOG)

    def _infra_failure(self, r: JobResult, info: _Inflight, exc: BaseException, ready: deque,
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
        r.error = (f"the worker running this job died ({what}) on attempt {r.attempts}; "
                   f"gave up after {self.retries} retr{'y' if self.retries == 1 else 'ies'}")
        self._keep_failed(r, info.root)
        if r.error_tail is None:
            r.error_tail = what
        r.state = "failed"
        self.progress.update(r, "failed")
        self._skip_dependents(r.id)

    def _pool_broken(self, fut: cf.Future, info: _Inflight, exc: BaseException, ready: deque) -> None:
        pool = info.pool
        procs = dict(self.pool_procs or {})
        same = [f for f, i in self.inflight.items() if i.pool is pool]
        cf.wait(same, timeout=30)
        for p in procs.values():          # the pool terminates its workers; wait for their exit codes
            with contextlib.suppress(Exception):
                p.join(5)
        exitcodes = {pid: p.exitcode for pid, p in procs.items()}
        self._kill_pool(pool, procs)      # and whatever they had started
        if pool is self.pool:
            self.pool = None
            self.pool_procs = None
            self.own_pool = True          # a user's broken pool is replaced by one of ours
        victims = [(fut, info)] + [(f, self.inflight.pop(f)) for f in same]
        started = [i for _, i in victims if i.root is not None and (i.root / "worker.pid").exists()]
        if started or any(i.root is None for _, i in victims):
            self.startup_breaks = 0
        else:
            self.startup_breaks += 1
            codes = sorted({c for c in exitcodes.values() if c not in (None, -signal.SIGTERM)})
            if self.startup_breaks >= 2:
                for _, i in victims:
                    if i.root is not None:
                        shutil.rmtree(i.root, ignore_errors=True)
                raise FxsplitError(
                    "the build's worker processes die while starting (before running any job)"
                    + (f"; exit code(s) {codes}" if codes else ""),
                    hint="run a job in-process to see why (the workers import fxsplit and the job "
                         "functions' modules: check they import without error in a fresh python), "
                         "or pass executor=concurrent.futures.ThreadPoolExecutor(1) to debug")
        for f, i in victims:
            if f is not fut and f.done() and f.exception() is None:
                self.inflight[f] = i      # finished before the break: handle normally
                self._finish(f, ready)
                continue
            culprit = True
            pid = None
            if i.root is not None:
                with contextlib.suppress(OSError, ValueError):
                    pid = int((i.root / "worker.pid").read_text())
                if pid is None:
                    culprit = False       # never started
                elif exitcodes.get(pid) == -signal.SIGTERM:
                    culprit = False       # terminated by the pool because another worker died
            r = self.results[i.job_id]
            self._infra_failure(r, i, exc, ready, charged=culprit)

    def _abort(self) -> None:
        futs = list(self.inflight)
        for f in futs:
            f.cancel()
        if self.own_pool and self.pool is not None:
            self._kill_pool(self.pool, self.pool_procs)
            self.pool = None
        for i in self.inflight.values():
            if i.root is not None:
                shutil.rmtree(i.root, ignore_errors=True)
        self.inflight.clear()

    def _sweep_tmp(self) -> None:
        now = time.time()
        with contextlib.suppress(OSError):
            for e in os.scandir(self.tmp):
                with contextlib.suppress(OSError):
                    if now - e.stat(follow_symlinks=False).st_mtime > _STALE_TMP_SECONDS:
                        shutil.rmtree(e.path, ignore_errors=True)

    def run(self) -> BuildResult:
        t0 = time.time()
        self._sweep_tmp()
        self.progress.start(list(self.results.values()))
        ready: deque[str] = deque(j.id for j in self.order if self.missing[j.id] == 0)
        try:
            while ready or self.inflight:
                while ready and (self.limit is None or len(self.inflight) < self.limit):
                    jid = ready.popleft()
                    if self.results[jid].state != "pending":
                        continue
                    if self._lookup(jid):
                        self._release(jid, ready)
                    else:
                        self._submit(jid)
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
            if self.own_pool and self.pool is not None:
                self.pool.shutdown(wait=True)
                self.pool = None
        res = BuildResult(self.results, self.cache_dir, time.time() - t0, self.max_workers, t0)
        self.progress.stop(result=res)
        return res


def run_jobs(jobs: list[Job], cache_dir: str | Path, *, executor: cf.Executor | None = None,
             max_workers: int | None = None, progress: bool | None = None, retries: int = 1,
             log_dir: str | Path | None = None, transfer: str = "auto",
             mp_context: Any = None) -> BuildResult:
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

    Never raises for a failing job (see ``BuildResult.raise_for_failures``); raises
    FxsplitError for an invalid job graph and re-raises KeyboardInterrupt after cleaning up.
    """
    return _Engine(jobs, cache_dir, executor, max_workers, progress, retries, log_dir, transfer,
                   mp_context).run()


# ----------------------------------------------------------------------------- output-dir lock

_HELD: dict[str, list] = {}
_HELD_LOCK = threading.Lock()


@contextlib.contextmanager
def output_dir_lock(path: str | Path, timeout: float | None = None, *, poll: float = 0.2,
                    message: Callable[[str], None] | None = None):
    """Hold an exclusive lock on an output directory (``fcntl.flock`` on ``<dir>/.fxsplit.lock``).

    If another process holds it, print one message naming the holder and **wait**; give up
    after ``timeout`` seconds (default: env ``FXSPLIT_LOCK_TIMEOUT``, else 3600; 0 = fail at
    once) with an FxsplitError. Re-entrant within one process. The lock is released when the
    block ends or the process dies (the kernel drops flocks), so a crashed run never leaves a
    stale lock behind.
    """
    d = Path(path).resolve()
    d.mkdir(parents=True, exist_ok=True)
    lock_path = d / ".fxsplit.lock"
    k = str(lock_path)
    with _HELD_LOCK:
        if k in _HELD:
            _HELD[k][1] += 1
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield lock_path
        finally:
            with _HELD_LOCK:
                _HELD[k][1] -= 1
        return
    if timeout is None:
        timeout = float(os.environ.get("FXSPLIT_LOCK_TIMEOUT", "3600"))
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            holder = ""
            with contextlib.suppress(OSError):
                holder = lock_path.read_text().strip()
            if time.monotonic() >= deadline:
                raise FxsplitError(
                    f"output directory {d} is in use by another fxsplit run"
                    + (f" ({holder})" if holder else "") + f"; gave up after {timeout:g} s",
                    hint="wait for the other run to finish, use another output_dir, or raise the "
                         "wait with FXSPLIT_LOCK_TIMEOUT=<seconds>")
            if not said:
                msg = (f"[fxsplit] waiting for another fxsplit run on {d}"
                       + (f" ({holder})" if holder else "") + f"; giving up in {timeout:g} s")
                (message or (lambda s: print(s, file=sys.stderr, flush=True)))(msg)
                said = True
            time.sleep(poll)
        info = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode() + b"\n", 0)
        with _HELD_LOCK:
            _HELD[k] = [fd, 1]
        try:
            yield lock_path
        finally:
            with _HELD_LOCK:
                _HELD.pop(k, None)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- output directory

def copy_artifacts(src: Path, dest: Path, key: str) -> Path:
    """Atomically copy a cache entry to ``dest`` (skipped when ``dest`` already holds that key)."""
    stamp = dest / ".fxsplit-key"
    if stamp.exists() and stamp.read_text() == key:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    shutil.copytree(src, tmp / "x", symlinks=True)
    (tmp / "x" / ".fxsplit-key").write_text(key)
    old = dest.parent / f".{dest.name}-old-{os.getpid()}"
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp / "x", dest)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return dest
