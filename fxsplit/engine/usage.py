"""What a job cost where it ran: the peak resident memory of the worker's whole process tree (the worker
and every tool it started: g++, Yosys, Verilator, vitis_hls, vivado) and its CPU time.

:class:`TreeMonitor` runs around a job in the worker (:func:`fxsplit.engine.executors._execute`):

- **peak memory**: a thread samples the resident set size of the worker and all its descendants every
  ``interval`` seconds and keeps the largest sum. Each process' own peak (``VmHWM`` in ``/proc/<pid>/status``;
  the worker's is reset at the start with ``/proc/self/clear_refs``, so an earlier job in a warm worker does
  not count) is a lower bound that a short spike between two samples cannot escape: the reported peak is the
  larger of the two. ``base_rss`` is the worker's own RSS when the job started (the interpreter, torch,
  hls4ml), so ``peak_rss - base_rss`` is what the job added. The tree comes from
  ``/proc/<pid>/task/<tid>/children`` and both sizes from one read of each ``status`` (1.7 % of a core at
  0.05 s, measured; psutil's scan of every process on the machine cost 5.8 %, which two jobs on two busy cores
  took from their tools); psutil where the kernel lists no children. A child that has not run a program of its
  own yet (the same name, address-space size and resident size as its parent: a tool's ``popen`` or
  ``posix_spawn`` shares its parent's memory until its ``exec``, a ``fork`` copies it on write) is not added
  again: a sample caught in that instant would double a 7 GiB Yosys that starts ``abc``.
- **CPU time**: ``getrusage`` of the worker (all its threads) and of its waited-for descendants, as deltas
  over the job. A tool still running when the job returns is not counted (jobs wait for their tools).

- **out of memory**: the kernel's count of OOM kills (``oom_kill`` in ``/proc/vmstat``: the system's OOM
  killer and every memory cgroup's) before and after, so that a job whose tool was killed for memory is
  reported as such (:func:`memory_failure`), not as a plain crash.

With ``live_path``, the peak so far is also written there (JSON) as it grows: the engine reads it when a worker
dies under a job, to report the last measured peak.

Linux gives every figure; elsewhere the ``/proc`` parts are skipped (sampling alone).
"""

from __future__ import annotations

import json
import os
import re
import resource
import threading
import time

INTERVAL = 0.05


def _status(pid: int) -> tuple[bytes | None, int | None, int | None, int | None]:
    """A process' name, address-space size, resident set size and own peak (bytes), in one read of
    /proc/<pid>/status."""
    name = size = rss = hwm = None
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Name:"):
                    name = line[5:].strip()
                elif line.startswith(b"VmSize:"):
                    size = int(line.split()[1]) * 1024
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                elif line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    break                       # VmRSS follows VmSize and VmHWM
    except (OSError, ValueError, IndexError):
        pass
    return name, size, rss, hwm


def _rss_hwm(pid: int) -> tuple[int | None, int | None]:
    """A process' resident set size and own peak (bytes), in one read of /proc/<pid>/status."""
    return _status(pid)[2:]


def _tree(pid: int) -> list[int] | None:
    """``pid`` and its descendants (see :func:`_tree_parents`)."""
    tree = _tree_parents(pid)
    return None if tree is None else list(tree)


def _tree_parents(pid: int) -> dict[int, int | None] | None:
    """``pid`` and its descendants, each with its parent (None for ``pid``), from /proc/<pid>/task/<tid>/children
    (a few small reads; psutil's ``children(recursive=True)`` reads the status of every process on the machine,
    about 3 ms a sample, which a job on a busy machine pays in CPU); None where the kernel has no such file."""
    out: dict[int, int | None] = {}
    todo: list[tuple[int, int | None]] = [(pid, None)]
    while todo:
        p, parent = todo.pop()
        out[p] = parent
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            if p == pid:
                return None
            continue                            # exited meanwhile
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children", "rb") as f:
                    todo.extend((int(c), p) for c in f.read().split())
            except FileNotFoundError:
                if p == pid:
                    return None                 # no CONFIG_PROC_CHILDREN
            except (OSError, ValueError):
                continue
    return out


def oom_kills() -> int | None:
    """The kernel's count of processes killed for memory since boot (None where /proc/vmstat has none)."""
    try:
        with open("/proc/vmstat", "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


# what tools and Python print when an allocation fails (an address-space limit, no memory left)
_NO_MEMORY = re.compile(r"MemoryError|std::bad_alloc|[Oo]ut of memory|Cannot allocate memory|"
                        r"virtual memory exhausted|memory exhausted|ERROR: Out of Memory")


def memory_failure(error: str | None, log_tail: str | None, usage: dict | None) -> str | None:
    """Why a failed job ran out of memory, or None: the kernel killed a process for memory while it ran, or an
    allocation failed (the error or the end of its log says so)."""
    if usage and usage.get("oom_kills"):
        return f"the kernel killed {usage['oom_kills']} process(es) for memory while it ran (OOM killer, SIGKILL)"
    for text in (error, log_tail):
        m = _NO_MEMORY.search(text or "")
        if m:
            return f"an allocation failed ({m.group(0)})"
    return None


def _unexeced(child: tuple, parent: tuple) -> bool:
    """``child`` (its :func:`_status`) has not run a program of its own: its parent's name and address-space size,
    and its resident size within 2 % of the parent's (the same memory: shared, or copied on write)."""
    name, size, rss, _ = child
    pname, psize, prss, _ = parent
    return (name is not None and name == pname and size is not None and size == psize and prss is not None
            and rss is not None and abs(rss - prss) <= 0.02 * max(prss, 1))


class TreeMonitor:
    def __init__(self, interval: float = INTERVAL, live_path: str | os.PathLike | None = None):
        import psutil
        self._psutil = psutil
        self.interval = interval
        self.live_path = live_path
        self._written = 0
        self.proc = psutil.Process()
        self._fast = _tree(self.proc.pid) is not None      # /proc children lists (Linux), else psutil
        self.peak = 0
        self.peak_single = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "TreeMonitor":
        try:        # the worker's own peak restarts now (a warm worker ran other jobs before)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.base_rss = self.proc.memory_info().rss
        self.peak = self.peak_single = self.base_rss
        self._oom0 = oom_kills()
        self._t0 = time.perf_counter()
        self._self0 = resource.getrusage(resource.RUSAGE_SELF)
        self._children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._thread = threading.Thread(target=self._run, name="fxsplit-usage", daemon=True)
        self._thread.start()
        return self

    def _sizes(self) -> list[tuple[int, int | None]]:
        """(resident size, own peak or None) of every process in the tree that is still there."""
        tree = _tree_parents(self.proc.pid) if self._fast else None
        if tree is not None:
            st = {pid: _status(pid) for pid in tree}
            out = []
            for pid, parent in tree.items():
                name, size, rss, hwm = st[pid]
                if rss is None:                 # exited since the listing
                    continue
                if parent is not None and _unexeced(st[pid], st[parent]):
                    rss = 0                     # its parent's memory, counted there
                out.append((rss, hwm))
            return out
        ps = self._psutil
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except ps.Error:
            return []
        out = []
        for p in procs:
            try:
                out.append((p.memory_info().rss, _rss_hwm(p.pid)[1]))
            except ps.Error:          # exited between the listing and the read
                continue
        return out

    def _sample(self) -> None:
        sizes = self._sizes()
        if not sizes:
            return
        for _rss, hwm in sizes:
            if hwm is not None and hwm > self.peak_single:
                self.peak_single = hwm
        total = sum(rss for rss, _hwm in sizes)
        self.samples += 1
        if total > self.peak:
            self.peak = total
        peak = max(self.peak, self.peak_single)
        if self.live_path is not None and peak > self._written * 1.05:
            try:
                tmp = f"{self.live_path}.tmp"
                with open(tmp, "w") as f:
                    json.dump({"peak_rss": int(peak), "base_rss": int(self.base_rss)}, f)
                os.replace(tmp, self.live_path)
                self._written = peak
            except OSError:
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        s1 = resource.getrusage(resource.RUSAGE_SELF)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_self = (s1.ru_utime - self._self0.ru_utime) + (s1.ru_stime - self._self0.ru_stime)
        self.cpu_children = (c1.ru_utime - self._children0.ru_utime) + (c1.ru_stime - self._children0.ru_stime)
        oom1 = oom_kills()
        self.oom = (oom1 - self._oom0) if oom1 is not None and self._oom0 is not None else None

    def result(self) -> dict:
        """``peak_rss`` (bytes, the whole tree), ``base_rss`` (the worker at the start), ``cpu_seconds``
        (worker + tools), ``cpu_tools_seconds`` (the tools alone), ``samples``, ``oom_kills`` (processes the
        kernel killed for memory meanwhile, anywhere; None where unknown)."""
        return {"peak_rss": int(max(self.peak, self.peak_single)), "base_rss": int(self.base_rss),
                "cpu_seconds": round(self.cpu_self + self.cpu_children, 3),
                "cpu_tools_seconds": round(self.cpu_children, 3), "samples": self.samples, "oom_kills": self.oom}
