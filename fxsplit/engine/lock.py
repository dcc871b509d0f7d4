"""The output-directory lock: one fxsplit run per output directory at a time."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from ..errors import FxsplitError

LOCK_FILE = ".fxsplit.lock"
OWNER_FILE = ".fxsplit.lock.owner"     # who holds it (the lock file itself is only flock'ed)


@contextlib.contextmanager
def output_dir_lock(path: str | Path, timeout: float | None = None, *, poll: float = 0.2,
                    message: Callable[[str], None] | None = None):
    """Hold an exclusive lock on an output directory (``filelock.FileLock`` on ``<dir>/.fxsplit.lock``).

    If another process (or another thread of this one) holds it, print one message naming the
    holder (read from ``<dir>/.fxsplit.lock.owner``) and **wait**; give up after ``timeout``
    seconds (default: env ``FXSPLIT_LOCK_TIMEOUT``, else 3600; 0 = fail at once) with an
    FxsplitError. Re-entrant within a thread. The lock is released when the block ends or the
    process dies (the kernel drops flocks), so a crashed run never leaves a stale lock behind
    (a stale owner file is only ever shown while somebody holds the lock, and is overwritten
    by the next holder).
    """
    import filelock               # here, not at the top: workers import this package and never lock

    d = Path(path).resolve()
    d.mkdir(parents=True, exist_ok=True)
    lock_path = d / LOCK_FILE
    owner = d / OWNER_FILE
    # one instance per path in this process; its state (fd, count) is per thread
    lock = filelock.FileLock(str(lock_path), is_singleton=True)
    if lock.is_locked:                    # held by this thread: re-enter
        with lock.acquire(timeout=0):
            yield lock_path
        return
    if timeout is None:
        timeout = float(os.environ.get("FXSPLIT_LOCK_TIMEOUT", "3600"))
    deadline = time.monotonic() + timeout

    def holder() -> str:
        with contextlib.suppress(OSError):
            return owner.read_text().strip()
        return ""

    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        if timeout > 0:
            h = holder()
            msg = (f"[fxsplit] waiting for another fxsplit run on {d}"
                   + (f" ({h})" if h else "") + f"; giving up in {timeout:g} s")
            (message or (lambda s: print(s, file=sys.stderr, flush=True)))(msg)
        try:
            lock.acquire(timeout=max(0.0, deadline - time.monotonic()), poll_interval=poll)
        except filelock.Timeout:
            h = holder()
            raise FxsplitError(
                f"output directory {d} is in use by another fxsplit run"
                + (f" ({h})" if h else "") + f"; gave up after {timeout:g} s",
                hint="wait for the other run to finish, use another output_dir, or raise the "
                     "wait with FXSPLIT_LOCK_TIMEOUT=<seconds>") from None
    try:
        info = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        tmp = owner.with_name(f"{OWNER_FILE}.{socket.gethostname()}.{os.getpid()}")
        tmp.write_text(info + "\n")
        os.replace(tmp, owner)
        try:
            yield lock_path
        finally:
            with contextlib.suppress(OSError):
                owner.unlink()        # still holding the lock: this is our own owner file
    finally:
        lock.release()
