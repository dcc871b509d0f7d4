"""Shared helpers for the fxsplit benchmarks (tables, fresh directories, machine info, JSON)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def fresh_run_dir(name: str, root: str | None = None) -> Path:
    """A new, empty directory for one benchmark run (output dirs and caches live inside it,
    so every "cold" build really is cold)."""
    base = Path(root or tempfile.gettempdir()).expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=base))


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict:
    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.splitlines()[0].strip()
        except Exception:
            return None
    info = {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "loadavg_at_start": loadavg(), "gxx": version(["g++", "--version"]), "yosys": version(["yosys", "-V"])}
    try:
        import hls4ml
        info["hls4ml"] = hls4ml.__version__
    except Exception:
        pass
    try:
        import da4ml
        info["da4ml"] = da4ml.__version__
    except Exception:
        pass
    try:
        info["fxsplit_commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "fxsplit"],
                               capture_output=True, text=True).stdout.strip()
        info["fxsplit_dirty"] = bool(dirty)
    except Exception:
        pass
    return info


def table(rows: list[list], headers: list[str], title: str | None = None) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)))
    return "\n".join(lines)


def _fmt(c) -> str:
    if c is None:
        return "-"
    if isinstance(c, float):
        return f"{c:.2f}"
    return str(c)


def _numeric(s: str) -> bool:
    try:
        float(s.rstrip("sx%"))
        return True
    except ValueError:
        return False


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def write_json(run_dir: Path, payload: dict) -> Path:
    """The figures go to ``<run_dir>.json``, next to the run's output directory."""
    path = run_dir.with_suffix(".json") if run_dir.suffix == "" else Path(str(run_dir) + ".json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    return path


def job_rows(build) -> list[dict]:
    return [{"id": r.id, "partition": r.partition, "step": r.step, "state": r.state,
             "seconds": round(r.seconds, 3), "build_seconds": round(r.build_seconds, 3),
             "cpu_seconds": r.cpu_seconds, "peak_rss": r.peak_rss,
             "start": r.start, "end": r.end, "deps": list(r.deps), "meta": _small_meta(r.meta)} for r in build]


def _small_meta(meta):
    if not isinstance(meta, dict):
        return meta
    return {k: v for k, v in meta.items() if k not in ("cell_types", "log", "ports") and not isinstance(v, (list, dict))
            or k in ("inputs", "outputs")}
