"""Toy job functions and helpers shared by the build-engine tests (tests/test_engine_*.py).

The job functions are module-level functions of an importable module: the engine pickles them by reference, and
its worker processes (the local pool, Dask workers, builds started in a fresh interpreter) import them from here
(tests/ is on their sys.path or PYTHONPATH). This module stays light: no torch, hls4ml or Dask.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fxsplit.engine import Job, verify_entry  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent),
                                                    os.environ.get("PYTHONPATH", "")])}


# ----------------------------------------------------------------------------- toy job functions
# (top level: they are pickled by reference and run in worker processes)

def _count(counter: str | None, what: str) -> None:
    if counter:
        with open(counter, "a") as f:
            f.write(what + "\n")


def write_file(workdir, inputs, name="out.txt", content="hello", counter=None, sleep=0.0, size=0):
    _count(counter, "write_file " + name)
    print(f"writing {name}")
    time.sleep(sleep)
    Path(workdir, name).write_text(content)
    if size:
        Path(workdir, "blob.bin").write_bytes(os.urandom(size))
    return {"name": name, "pid": os.getpid()}


def concat(workdir, inputs, counter=None, tag="cat"):
    """Reads every dependency's artifacts; fails loudly if one is missing."""
    _count(counter, "concat " + tag)
    parts = []
    for dep in sorted(inputs):
        for f in sorted(Path(inputs[dep]).glob("*.txt")):
            parts.append(f.read_text())
    Path(workdir, "out.txt").write_text("+".join(parts))
    Path(workdir, "sub").mkdir()
    Path(workdir, "sub", "n.json").write_text(json.dumps(len(parts)))
    return {"parts": len(parts), "text": "+".join(parts)}


def compile_c(workdir, inputs, counter=None):
    """A real subprocess (g++): its warnings (fd 2) and the binary's output (fd 1) go to the log."""
    _count(counter, "compile_c")
    src = Path(workdir, "hello.c")
    src.write_text('#include <stdio.h>\nint main(){int unused_var; printf("hello from C\\n"); return 0;}\n')
    subprocess.run(["g++", "-Wall", "-o", str(Path(workdir, "hello")), str(src)], check=True)
    subprocess.run([str(Path(workdir, "hello"))], check=True)
    return {"binary": "hello"}


def boom(workdir, inputs, counter=None):
    _count(counter, "boom")
    for i in range(40):
        print(f"line {i} of the tool output")
    subprocess.run(["sh", "-c", "echo 'ERROR: [HLS 200-70] something broke' >&2"])
    raise ValueError("synthesis failed: latency constraint not met")


def kill_once(workdir, inputs, marker, counter=None):
    _count(counter, "kill_once")
    print("about to die" if not os.path.exists(marker) else "second attempt")
    Path(workdir, "partial.txt").write_text("partial")
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    Path(workdir, "out.txt").write_text("survived")
    return {"ok": True}


def kill_always(workdir, inputs, counter=None):
    _count(counter, "kill_always")
    Path(workdir, "partial.txt").write_text("partial")
    os.kill(os.getpid(), signal.SIGKILL)


def sleeper(workdir, inputs, seconds, pid_dir, counter=None):
    _count(counter, "sleeper")
    Path(pid_dir).mkdir(exist_ok=True)
    Path(pid_dir, f"{os.getpid()}.pid").write_text(str(os.getpid()))
    Path(workdir, "partial.txt").write_text("partial")
    time.sleep(seconds)
    Path(workdir, "out.txt").write_text("slept")
    return {"slept": seconds}


def stamp(workdir, inputs, name, log, seconds=0.0):
    with open(log, "a") as f:
        f.write(f"start {name} {time.time()}\n")
    time.sleep(seconds)
    Path(workdir, "out.txt").write_text(name)
    with open(log, "a") as f:
        f.write(f"end {name} {time.time()}\n")
    return {}


def loaded_modules(workdir, inputs):
    import fxsplit.engine  # noqa: F401  (what every job imports)
    from fxsplit.errors import FxsplitError as E  # noqa: F401
    return {"torch": "torch" in sys.modules, "hls4ml": "hls4ml" in sys.modules,
            "main": getattr(sys.modules.get("__main__"), "__file__", None)}


# a job module's warm_worker() runs once in every worker of a warm pool, before any job (executors._WARM_CODE)
WARMED: list[int] = []


WARM_PROBE = Path(tempfile.gettempdir()) / "fxsplit-test-slow-warm-up.json"


def warm_worker():
    WARMED.append(os.getpid())
    if WARM_PROBE.is_file():     # test_prewarm_can_wait_for_every_worker: a slow warm-up that leaves a trace
        probe = json.loads(WARM_PROBE.read_text())
        time.sleep(probe["sleep"])
        Path(probe["dir"], str(os.getpid())).write_text(str(time.time()))


def warm_probe(workdir, inputs, tag):
    return {"pid": os.getpid(), "warmed": WARMED == [os.getpid()]}


MB = 2 ** 20


def hog(workdir, inputs, mb, where, hold=1.0, burn=0.0):
    """Hold ``mb`` MiB of written (resident) memory for ``hold`` s, in a child process or in the worker;
    burn ``burn`` s of CPU in the child."""
    code = (f"import time\nb = bytes([1]) * ({mb} * {MB})\nt = time.process_time()\n"
            f"while time.process_time() - t < {burn}: pass\ntime.sleep({hold})\n")
    if where == "child":
        subprocess.run([sys.executable, "-c", code], check=True)
    elif where == "forked":         # held by the worker, and a forked child that shares it until it exits
        b = bytes([1]) * (mb * MB)
        pid = os.fork()
        if pid == 0:
            time.sleep(hold)
            os._exit(0)
        os.waitpid(pid, 0)
        del b
    else:
        b = bytes([1]) * (mb * MB)
        time.sleep(hold)
        del b
    return {"pid": os.getpid()}


def over_limit(workdir, inputs, mode, mb, limit_mb=0, cgroup=None, counter=None):
    """Allocate ``mb`` MiB past a memory limit: a child under RLIMIT_AS (MemoryError), a child in a memory cgroup
    (the kernel's OOM killer kills it), or this worker itself moved into the cgroup (the worker is killed)."""
    import resource
    _count(counter, "over_limit " + mode)
    code = f"b = bytes([1]) * ({mb} * {MB})"
    if mode == "rlimit":
        def pre():
            resource.setrlimit(resource.RLIMIT_AS, (limit_mb * MB, limit_mb * MB))
        subprocess.run([sys.executable, "-c", code], preexec_fn=pre, check=True)
    elif mode == "cgroup-child":
        def pre():
            Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
        subprocess.run([sys.executable, "-c", code], preexec_fn=pre, check=True)
    else:
        Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
        b = bytes([1]) * (mb * MB)
        del b
    return {}


# ----------------------------------------------------------------------------- cache checks

def counts(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


def entries(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]


def assert_no_partial(cache: Path) -> None:
    """Every entry under cache/ is complete and verifies; .tmp holds nothing."""
    for e in entries(cache):
        assert verify_entry(e, e.name) is not None, f"partial/corrupt entry {e}"
    tmp = cache / ".tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), list(tmp.iterdir())


def chain_jobs(counter, key=b"v1", extra=b"") -> list[Job]:
    """key_data must define the result: jobs with equal step, fn and key_data share an entry."""
    c = str(counter)
    return [
        Job("p0/csim", "p0", "csim", write_file, {"name": "a.txt", "content": "A", "counter": c},
            key + b"a" + extra),
        Job("p1/csim", "p1", "csim", write_file, {"name": "b.txt", "content": "B", "counter": c}, key + b"b"),
        Job("p0/hls", "p0", "hls", concat, {"counter": c, "tag": "p0"}, key, deps=("p0/csim",)),
        Job("p1/hls", "p1", "hls", concat, {"counter": c, "tag": "p1"}, key, deps=("p1/csim",)),
        Job("stitched/tb", "stitched", "tb", concat, {"counter": c, "tag": "st"}, key, deps=("p0/hls", "p1/hls")),
    ]


# ----------------------------------------------------------------------------- processes

def _assert_dead(pids, timeout=15.0):
    deadline = time.time() + timeout
    for pid in pids:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if time.time() > deadline:
                pytest.fail(f"worker {pid} still alive")
            time.sleep(0.05)


def _deliverable_sigint() -> None:
    """``preexec_fn`` of a process a Ctrl-C test signals: SIGINT at its default disposition and unblocked, as a
    terminal's foreground process has it. A test suite started in the background from a non-interactive shell
    (``nohup``, ``cmd &``, some CI runners) inherits SIGINT as ignored, and a child would inherit that in turn;
    Python then never installs its KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _run_script(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=ENV, preexec_fn=_deliverable_sigint,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


# ----------------------------------------------------------------------------- tools

def prepend_path(d: str) -> None:
    """ProcessPoolExecutor initializer: this worker finds the tools in ``d`` first."""
    os.environ["PATH"] = d + os.pathsep + os.environ.get("PATH", "")


def fake_tool(bindir: Path, name: str, version_line: str) -> Path:
    """An executable ``name`` in ``bindir`` that prints ``version_line`` (whatever it is asked)."""
    bindir.mkdir(parents=True, exist_ok=True)
    exe = bindir / name
    exe.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    exe.chmod(0o755)
    return exe
