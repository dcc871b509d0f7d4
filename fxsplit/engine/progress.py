"""Build progress: a live per-partition table on a terminal, plain log lines elsewhere.

``make_progress(None)`` picks the live display (``rich.live``) when stdout is a TTY and the
environment variable ``CI`` is not set, plain lines (``[fxsplit] p0 csim built in 12.3 s``)
otherwise; ``make_progress(False)`` is silent; ``make_progress(True)`` always shows something
(live on a TTY, plain lines otherwise). The engine calls ``start``, ``update`` and ``stop``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

PREFIX = "[fxsplit]"


class Progress:
    """Silent progress (the base class): the engine's interface."""

    def start(self, results: list) -> None:
        pass

    def update(self, r: Any, state: str, note: str | None = None) -> None:
        pass

    def stop(self, result: Any = None, interrupted: bool = False) -> None:
        pass


def _summary(result: Any) -> str:
    n = len(result)
    parts = [f"{len(result.built)} built", f"{len(result.cached)} reused"]
    if result.failed:
        parts.append(f"{len(result.failed)} FAILED")
    if result.skipped:
        parts.append(f"{len(result.skipped)} skipped")
    return f"{PREFIX} {n} job{'s' if n != 1 else ''}: " + ", ".join(parts) + f" in {result.wall_seconds:.1f} s"


class PlainProgress(Progress):
    """One line per event, for logs and CI."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream
        self.lock = threading.Lock()

    def _print(self, line: str) -> None:
        with self.lock:
            s = self.stream or sys.stdout
            print(line, file=s, flush=True)

    def update(self, r: Any, state: str, note: str | None = None) -> None:
        name = f"{PREFIX} {r.partition} {r.step}"
        if state == "running":
            self._print(f"{name} started" + (f" (attempt {r.attempts})" if r.attempts > 1 else ""))
        elif state == "built":
            self._print(f"{name} built in {r.seconds:.1f} s")
        elif state == "cached":
            self._print(f"{name} cached (reused)")
        elif state == "failed":
            self._print(f"{name} FAILED: {r.error}" + (f" (log: {r.log_path})" if r.log_path else ""))
        elif state == "skipped":
            self._print(f"{name} skipped ({r.error})")
        elif state == "retry":
            self._print(f"{name} worker lost ({note}); resubmitting")

    def stop(self, result: Any = None, interrupted: bool = False) -> None:
        if interrupted:
            self._print(f"{PREFIX} interrupted: running jobs killed, nothing partial was cached")
        elif result is not None:
            self._print(_summary(result))


_STYLE = {"running": "bold yellow", "built": "green", "cached": "cyan", "failed": "bold red",
          "skipped": "dim", "pending": "dim", "retry": "magenta", "done": "green"}


class LiveProgress(Progress):
    """A rich.live table: one row per partition (current step, state, elapsed, jobs done)."""

    def __init__(self, console: Any = None):
        from rich.console import Console

        self.console = console or Console()
        self.live = None
        self.rows: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.t0 = time.time()

    def start(self, results: list) -> None:
        from rich.live import Live

        self.t0 = time.time()
        for r in results:
            row = self.rows.setdefault(r.partition, {"total": 0, "done": 0, "step": "", "state": "pending",
                                                     "t_start": None, "t_end": None, "running": {}})
            row["total"] += 1
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def update(self, r: Any, state: str, note: str | None = None) -> None:
        now = time.time()
        with self.lock:
            row = self.rows.get(r.partition)
            if row is None:
                return
            if state in ("running", "retry"):
                row["running"][r.id] = r.step
                row["step"] = r.step
                row["state"] = state
                row["t_start"] = row["t_start"] or now
                row["t_end"] = None
                return
            row["running"].pop(r.id, None)
            row["done"] += 1
            row["step"] = r.step
            if state == "failed" or row["state"] == "failed":
                row["state"] = "failed"
            elif row["running"]:
                row["state"] = "running"
                row["step"] = next(iter(row["running"].values()))
            elif row["done"] >= row["total"]:
                row["state"] = "done" if state in ("built", "cached") else state
            else:
                row["state"] = state
            if not row["running"]:
                row["t_end"] = now if row["t_start"] else None

    def __rich__(self):
        from rich.table import Table

        now = time.time()
        t = Table(title=f"fxsplit build  {now - self.t0:6.1f} s", title_justify="left", expand=False)
        for col in ("partition", "step", "state", "elapsed", "jobs"):
            t.add_column(col, justify="right" if col in ("elapsed", "jobs") else "left")
        with self.lock:
            for name, row in self.rows.items():
                if row["t_start"]:
                    el = f"{(row['t_end'] or now) - row['t_start']:.1f} s"
                else:
                    el = "-"
                st = row["state"]
                t.add_row(name, row["step"] or "-", f"[{_STYLE.get(st, '')}]{st}[/]", el,
                          f"{row['done']}/{row['total']}")
        return t

    def stop(self, result: Any = None, interrupted: bool = False) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        if interrupted:
            self.console.print(f"{PREFIX} interrupted: running jobs killed, nothing partial was cached")
        elif result is not None:
            self.console.print(_summary(result))
            for r in result.failed:
                self.console.print(f"{PREFIX} [bold red]{r.partition} {r.step} FAILED[/]: {r.error}"
                                   + (f"  (log: {r.log_path})" if r.log_path else ""), markup=True,
                                   highlight=False)


def wants_live() -> bool:
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and not os.environ.get("CI")


def make_progress(progress: bool | Progress | None) -> Progress:
    if isinstance(progress, Progress):
        return progress
    if progress is False:
        return Progress()
    if wants_live():
        return LiveProgress()
    return PlainProgress()
