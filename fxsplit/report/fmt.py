"""What the report's renderings share: colours, escaping, number formats, and the rows they all show (jobs,
usage, resources, predictions, numerics)."""

from __future__ import annotations

import html
import math
import re
from typing import Any

STEP_COLORS = {"csim": "#4C78A8", "hls": "#F58518", "rtl": "#B279A2", "synth": "#54A24B",
               "tb": "#72B7B2", "lower": "#E45756", "stitch": "#9D755D", "verify": "#EECA3B"}
_FALLBACK = ["#BAB0AC", "#FF9DA6", "#79706E", "#D67195", "#8CD17D"]
STATE_COLORS = {"built": "#2e7d32", "cached": "#0277bd", "failed": "#c62828", "skipped": "#757575"}


# ----------------------------------------------------------------------------- helpers

_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def _esc(x: Any) -> str:
    """HTML/XML-escape, dropping characters XML does not allow (the SVG stays well-formed)."""
    return html.escape(_CTRL.sub("", "" if x is None else str(x)), quote=True)


def _jobs(report: dict) -> list[dict]:
    jobs = report.get("jobs") or []
    if isinstance(jobs, dict):                       # a whole BuildResult.to_dict()
        jobs = jobs.get("jobs") or []
    if not jobs:                                     # fall back to the per-partition lists
        for p in report.get("partitions") or []:
            jobs.extend(p.get("jobs") or [])
    return [j for j in jobs if isinstance(j, dict)]


def _step_color(step: str, cache: dict[str, str]) -> str:
    if step not in cache:
        cache[step] = STEP_COLORS.get(step) or _FALLBACK[len(cache) % len(_FALLBACK)]
    return cache[step]


def _fmt_s(s: Any) -> str:
    if s is None:
        return "-"
    try:
        s = float(s)
    except (TypeError, ValueError):
        return str(s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(s, 60)
    if m < 60:
        return f"{int(m)} min {sec:02.0f} s"
    h, m = divmod(m, 60)
    return f"{int(h)} h {int(m):02d} min"


def _fmt_n(n: Any) -> str:
    if n is None or n == "":
        return "-"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.2f}"
    try:
        return f"{int(n):,}"
    except (TypeError, ValueError):
        return str(n)


def _fmt_bytes(n: Any) -> str:
    if n is None:
        return "-"
    n = float(n)
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _usage_rows(jobs: list[dict]) -> list[dict]:
    """Jobs with measured peak memory / CPU time (built in this run, or reused with the figures of their build)."""
    return [j for j in jobs if j.get("peak_rss") is not None and j.get("state") in ("built", "cached", "failed")]


def _usage_summary(jobs: list[dict]) -> str | None:
    rows = _usage_rows(jobs)
    if not rows:
        return None
    top = max(rows, key=lambda j: j["peak_rss"])
    cpu = sum(float(j.get("cpu_seconds") or 0.0) for j in rows)
    return (f"largest job peak {_fmt_bytes(top['peak_rss'])} ({top.get('id')}), sum of job peaks "
            f"{_fmt_bytes(sum(j['peak_rss'] for j in rows))}; CPU {_fmt_s(cpu)} over {len(rows)} job(s)")


def _rel_err(j: dict) -> str:
    pred, meas = j.get("predicted_rss"), j.get("peak_rss")
    if not pred or not meas:
        return "-"
    return f"{(float(pred) - meas) / meas * 100:+.0f} %"


def _budget_line(build: dict) -> str | None:
    b = build.get("memory_budget")
    return None if b is None else f"memory budget {_fmt_bytes(b)} (the running jobs' predicted peaks)"


_CMP_RESOURCES = ("LUT", "FF", "CARRY", "DSP", "BRAM")


def _ratio(a: Any, b: Any) -> str:
    try:
        return f"{float(a) / float(b):.2f}x" if float(b) else "-"
    except (TypeError, ValueError):
        return "-"


def _compare_rows(cmp: dict) -> list[tuple[str, str, str, str]]:
    u, s = cmp.get("uncut") or {}, cmp.get("stitched") or {}
    rows = [(f"build wall ({cmp.get('workers')} workers)", _fmt_s(u.get("wall_seconds")), _fmt_s(s.get("wall_seconds")),
             _ratio(u.get("wall_seconds"), s.get("wall_seconds"))),
            ("CPU time", _fmt_s(u.get("cpu_seconds")), _fmt_s(s.get("cpu_seconds")),
             _ratio(u.get("cpu_seconds"), s.get("cpu_seconds"))),
            ("largest job's peak memory", _fmt_bytes(u.get("peak_rss_max")), _fmt_bytes(s.get("peak_rss_max")),
             _ratio(u.get("peak_rss_max"), s.get("peak_rss_max"))),
            ("latency (cycles)", _fmt_n(u.get("latency")), _fmt_n(s.get("latency")), _ratio(u.get("latency"), s.get("latency")))]
    ur, sr = u.get("resources") or {}, s.get("resources") or {}
    rows += [(k, _fmt_n(ur.get(k)), _fmt_n(sr.get(k)), _ratio(ur.get(k), sr.get(k))) for k in _CMP_RESOURCES]
    return rows


def _compare_html(cmp: dict) -> str:
    h = ["<h2>Uncut vs stitched</h2>",
         '<div class="muted">The same model synthesized whole and as the stitched partitions, in this build. Build '
         "wall: the jobs of each (da4ml + Yosys) list-scheduled on the build's workers with their measured times; "
         "stitched resources: every partition plus the top's own logic.</div>",
         "<table><tr><th></th><th>uncut</th><th>stitched</th><th>uncut / stitched</th></tr>"]
    for name, a, b, r in _compare_rows(cmp):
        h.append(f'<tr><th>{_esc(name)}</th><td class="n">{_esc(a)}</td><td class="n">{_esc(b)}</td>'
                 f'<td class="n">{_esc(r)}</td></tr>')
    h.append("</table>")
    return "".join(h)


def _usage_html(jobs: list[dict], build: dict | None = None) -> str:
    """Peak memory (the worker and every tool it started) and CPU time per partition and step."""
    rows = _usage_rows(jobs)
    if not rows:
        return ""
    build = build or {}
    notes = [x for x in (_budget_line(build),) if x] + [f"warning: {w}" for w in build.get("warnings") or []]
    h = ["<h2>Memory and CPU per job</h2>", "".join(f"<p>{_esc(n)}</p>" for n in notes),
         f'<div class="muted">{_esc(_usage_summary(jobs))}. Peak: resident memory of the worker and every tool it '
         "started, sampled every 50 ms and bounded below by each process' own peak; worker: its resident memory "
         "when the job started (the interpreter, torch, hls4ml); reused jobs show the figures of the build that "
         "made them.</div>",
         "<table><tr><th>job</th><th>state</th><th>wall</th><th>CPU</th><th>peak memory</th><th>predicted</th>"
         "<th>error</th><th>worker</th><th>added by the job</th></tr>"]
    for j in sorted(rows, key=lambda j: -j["peak_rss"]):
        wall = j.get("build_seconds") if j.get("state") == "cached" else j.get("seconds")
        base = j.get("base_rss")
        h.append(f'<tr><td>{_esc(j.get("id"))}</td><td>{_esc(j.get("state"))}</td>'
                 f'<td class="n">{_esc(_fmt_s(wall))}</td><td class="n">{_esc(_fmt_s(j.get("cpu_seconds")))}</td>'
                 f'<td class="n">{_esc(_fmt_bytes(j["peak_rss"]))}</td>'
                 f'<td class="n">{_esc(_fmt_bytes(j.get("predicted_rss")))}</td><td class="n">{_esc(_rel_err(j))}</td>'
                 f'<td class="n">{_esc(_fmt_bytes(base))}</td>'
                 f'<td class="n">{_esc(_fmt_bytes(None if base is None else j["peak_rss"] - base))}</td></tr>')
    h.append("</table>")
    return "".join(h)


def _ports(ports: Any) -> list[str]:
    out = []
    for p in ports or []:
        if isinstance(p, dict):
            shape = p.get("shape")
            shape = "(" + ", ".join(str(d) for d in shape) + ")" if isinstance(shape, (list, tuple)) else (shape or "?")
            out.append(f"{p.get('name', '?')} {shape} {p.get('precision') or ''}".strip())
        else:
            out.append(str(p))
    return out


def _counts(jobs: list[dict]) -> dict[str, int]:
    c = {"built": 0, "cached": 0, "failed": 0, "skipped": 0}
    for j in jobs:
        c[j.get("state", "")] = c.get(j.get("state", ""), 0) + 1
    return c


def _predicted(report: dict) -> dict[str, float]:
    pw = report.get("predicted_wall") or (report.get("build") or {}).get("predicted_wall")
    if not pw:
        jobs = _jobs(report)
        if jobs:
            from ..engine import predict_wall_time
            pw = {str(w): predict_wall_time(jobs, w) for w in (1, 2, 4, 8)}
    return {str(k): v for k, v in (pw or {}).items()}


def _nice_ticks(vmax: float, n: int = 5) -> list[float]:
    if vmax <= 0:
        return [0.0]
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(vmax / step + 1e-9) + 1)]


def _numerics(num: dict) -> str:
    changed = num.get("accumulators_changed") or []
    exact = ("off (as hls4ml)" if not num.get("exact_accum") else
             f"on, {len(changed)} accumulator(s) changed from plain hls4ml's" if changed else "on")
    return (f"{num.get('config')}, default precision {num.get('default_precision')}, {num.get('io_type')}, "
            f"exact accumulators {exact}")


def _accum_lines(num: dict) -> list[str]:
    """Each accumulator exact_accum replaced: layer, plain hls4ml's type -> the exact type."""
    return [f"{c.get('layer')}: {c.get('from')} -> {c.get('to')}" for c in (num.get("accumulators_changed") or [])]


def _resources(res: dict) -> str:
    return ", ".join(f"{k} {_fmt_n(v)}" for k, v in res.items())
