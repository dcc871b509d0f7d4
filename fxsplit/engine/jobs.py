"""The engine's data types (:class:`Job`, :class:`JobResult`, :class:`BuildResult`) and cache keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from ..errors import FxsplitError

ENGINE_FORMAT = 2             # bump when the key recipe or the cache layout changes


@dataclass
class Job:
    """One step of one partition. See the package docstring for ``fn``'s contract.

    ``tools``: the tools the step runs: names (``"yosys"``, ``"g++"``, ``"hls4ml"``...; see
    :data:`fxsplit.engine.tools.TOOLS`) or a flow's own :class:`~fxsplit.engine.tools.Tool`. Their
    versions, measured where the job is built, are part of the job's key.
    """
    id: str
    partition: str
    step: str
    fn: Callable[..., dict]
    params: dict = field(default_factory=dict)
    key_data: bytes | str = b""
    deps: tuple[str, ...] = ()
    tools: tuple = ()
    cost: dict | None = None        # {"features": ..., "predicted": s}: recorded in the manifest, not in the key


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
    fxsplit: str | None = None      # source digest of fxsplit the key was computed for
    tools: dict[str, str] = field(default_factory=dict)   # tool -> version the key was computed for
    predicted: float | None = None  # the cost model's prediction of build_seconds (fxsplit.plan.costmodel)
    # what the build that produced the artifacts cost where it ran (fxsplit.engine.usage; cached: from the manifest)
    peak_rss: int | None = None     # bytes: peak resident memory of the worker and every tool it started
    base_rss: int | None = None     # bytes: the worker's own resident memory when the job started
    cpu_seconds: float | None = None   # worker + tools
    predicted_rss: int | None = None   # the cost model's prediction of peak_rss (bytes)
    out_of_memory: str | None = None   # why a failed attempt ran out of memory (fxsplit.engine.usage.memory_failure)

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
            "fxsplit": self.fxsplit, "tools": dict(self.tools),
            "predicted": None if self.predicted is None else round(self.predicted, 3),
            "peak_rss": self.peak_rss, "base_rss": self.base_rss, "cpu_seconds": self.cpu_seconds,
            "predicted_rss": self.predicted_rss, "out_of_memory": self.out_of_memory,
        }


@dataclass
class BuildResult:
    results: dict[str, JobResult]
    cache_dir: Path
    wall_seconds: float = 0.0
    workers: int | None = None
    start: float | None = None
    memory_budget: int | None = None    # bytes: the scheduler's budget for the predicted peaks of running jobs
    warnings: list[str] = field(default_factory=list)

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

    def merge(self, later: "BuildResult") -> None:
        """Add a later run's jobs (``compile``'s post jobs); jobs already here keep this run's record."""
        for k, r in later.results.items():
            self.results.setdefault(k, r)
        self.wall_seconds += later.wall_seconds
        self.warnings.extend(later.warnings)

    def rows(self) -> list[dict]:
        return [r.to_dict() for r in self.results.values()]

    def to_dict(self) -> dict:
        from .wall import predict_wall_time
        return {
            "cache_dir": str(self.cache_dir), "wall_seconds": round(self.wall_seconds, 4),
            "workers": self.workers, "start": self.start, "ok": self.ok,
            "built": len(self.built), "cached": len(self.cached),
            "failed": len(self.failed), "skipped": len(self.skipped),
            "predicted_wall": {str(w): round(predict_wall_time(self, w), 3) for w in (1, 2, 4, 8)},
            "memory_budget": self.memory_budget, "warnings": list(self.warnings),
            "jobs": self.rows(),
        }


# ----------------------------------------------------------------------------- keys

def _as_bytes(x: bytes | str) -> bytes:
    return x if isinstance(x, (bytes, bytearray)) else str(x).encode()


def fn_name(fn: Callable) -> str:
    """``module.qualname`` of a job function (part of its key)."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def job_key(step: str, key_data: bytes | str, dep_keys: Iterable[tuple[str, str]] = (),
            fn_name: str = "", *, source: str | None = None,
            tools: Mapping[str, str] | None = None) -> str:
    """The cache key of a job.

    sha256 over the engine format, step, fn's name, key_data, the deps' (id, key) pairs,
    fxsplit's source digest (``source``; default: :func:`~fxsplit.engine.tools.source_digest`
    of this process) and the versions of the job's tools (``tools``: name -> version).
    Every part is length-prefixed, the variable-length lists counted, so no two different
    inputs hash alike.
    """
    if source is None:
        from .tools import source_digest
        source = source_digest()
    h = hashlib.sha256()

    def put(part: bytes) -> None:
        h.update(len(part).to_bytes(8, "little") + part)

    for part in (f"fxsplit-build-v{ENGINE_FORMAT}".encode(), step.encode(), fn_name.encode(),
                 _as_bytes(key_data)):
        put(part)
    deps = sorted(dep_keys)
    put(b"deps:%d" % len(deps))
    for dep_id, dep_key in deps:
        put(f"{dep_id}={dep_key}".encode())
    put(f"fxsplit-source={source}".encode())
    versions = sorted((tools or {}).items())
    put(b"tools:%d" % len(versions))
    for name, version in versions:
        put(f"{name}={version}".encode())
    return h.hexdigest()


def safe_name(job_id: str) -> str:
    """A job id as a file name (``p0/hls`` -> ``p0_hls``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)
