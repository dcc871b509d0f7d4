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

The cache key is ``sha256(engine format, step, fn's qualified name, key_data, (dep id, dep key)...,
fxsplit's source digest, (tool, version) for each of Job.tools)``: ``key_data`` must cover
everything else that defines the result (graph, weights, config, flow) -- ``params`` are *not*
hashed. The source digest (:func:`source_digest`: every file of the installed fxsplit package)
and the tool versions (:func:`tool_versions`: ``yosys -V``, ``g++ --version``, installed
hls4ml...) are measured where the jobs run: in this process for a local pool, by one probe task
on the executor otherwise (Dask). The worker building a job measures them again; if they differ
from what the key was computed for (a heterogeneous cluster), the job fails and nothing is
committed. The manifest records both (``fxsplit``, ``tools``), as do ``JobResult.fxsplit`` /
``JobResult.tools``; an entry whose manifest disagrees with its key is rebuilt.

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

The parts, by module:

- :mod:`.jobs`: ``Job``, ``JobResult``, ``BuildResult``, ``job_key``
- :mod:`.cache`: the cache directory (manifest, ``verify_entry``, commit, discard), tar
  helpers, ``copy_artifacts``
- :mod:`.executors`: the worker side (``_execute``, output capture, pool bootstrap) and the
  engine's handle on its executor (own local pool: creation, kill, replacement)
- :mod:`.scheduler`: job order, the engine loop (lookups, submissions, retries, pool
  breaks), ``run_jobs``, ``predict_wall_time``
- :mod:`.lock`: ``output_dir_lock``
- :mod:`.tools`: ``source_digest``, ``tool_versions`` (what a key covers besides its inputs)

This package must stay light: it never imports torch or hls4ml (workers import it).
"""

from __future__ import annotations

from .cache import copy_artifacts, verify_entry
from .jobs import ENGINE_FORMAT, BuildResult, Job, JobResult, job_key
from .lock import output_dir_lock
from .scheduler import run_jobs
from .wall import predict_wall_time
from .tools import TOOLS, Tool, source_digest, tool_versions

__all__ = [
    "ENGINE_FORMAT", "Job", "JobResult", "BuildResult", "run_jobs", "job_key", "verify_entry",
    "predict_wall_time", "output_dir_lock", "copy_artifacts", "source_digest", "tool_versions", "TOOLS", "Tool",
]
