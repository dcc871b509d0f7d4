"""fxsplit.engine.lock: output_dir_lock, one fxsplit run per output directory, between processes and threads."""

from __future__ import annotations

import subprocess

import pytest

pytest.register_assert_rewrite("engine_helpers")      # its asserts report like a test's

from engine_helpers import _run_script  # noqa: E402
from fxsplit.engine import output_dir_lock  # noqa: E402
from fxsplit.errors import FxsplitError  # noqa: E402


def test_output_dir_lock_between_processes(tmp_path):
    out, events = tmp_path / "out", tmp_path / "events"

    def event(what: str) -> None:
        with open(events, "a") as f:
            f.write(what + "\n")

    holder = _run_script(f"""
        import sys
        from fxsplit.engine import output_dir_lock
        with output_dir_lock({str(out)!r}):
            print("locked", flush=True)
            sys.stdin.readline()                        # hold the lock until told to let go
            with open({str(events)!r}, "a") as f:
                f.write("holder releases\\n")
    """, stdin=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(FxsplitError, match="in use by another fxsplit run .pid") as ei:
        with output_dir_lock(out, timeout=0.3):
            pass
    assert "FXSPLIT_LOCK_TIMEOUT" in ei.value.hint
    msgs = []

    def waiting(msg: str) -> None:                      # printed once, then the holder lets go
        msgs.append(msg)
        event("waiter waits")
        holder.stdin.write("go\n")
        holder.stdin.flush()

    with output_dir_lock(out, timeout=120, message=waiting):
        event("waiter holds")
        with output_dir_lock(out, timeout=0):           # re-entrant within a thread
            pass
    assert events.read_text().splitlines() == ["waiter waits", "holder releases", "waiter holds"]
    assert len(msgs) == 1 and "waiting for another fxsplit run" in msgs[0] and "(pid " in msgs[0]
    holder.wait(timeout=30)
    assert holder.returncode == 0, holder.stderr.read()
    with output_dir_lock(out, timeout=0):               # released
        pass
    assert not (out / ".fxsplit.lock.owner").exists()


def test_output_dir_lock_excludes_other_threads(tmp_path, monkeypatch):
    import threading
    out, seen = tmp_path / "out", []

    def other(timeout=None):
        try:
            with output_dir_lock(out, timeout=timeout, message=lambda m: None):
                seen.append("other holds")
        except FxsplitError as e:
            seen.append(str(e).splitlines()[0])

    monkeypatch.setenv("FXSPLIT_LOCK_TIMEOUT", "0")     # the default timeout comes from the environment
    with output_dir_lock(out):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        with output_dir_lock(out):                      # this thread re-enters
            pass
    assert len(seen) == 1 and "in use by another fxsplit run" in seen[0] and "gave up after 0 s" in seen[0]
    t = threading.Thread(target=other, kwargs={"timeout": 0})
    t.start()
    t.join()
    assert seen[1:] == ["other holds"]
