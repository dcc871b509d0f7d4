"""Render a build report: ``report.json``, a self-contained ``report.html`` and terminal text.

The report dict (built by the compiler; every field but ``partitions`` is optional)::

    {"model": str, "flow": str, "output_dir": str, "wall_seconds": float,
     "partitions": [{"name", "layers", "params", "ops",
                     "inputs": [{"name", "shape", "precision"}], "outputs": [...],
                     "latency": int | None, "resources": {"LUT", "FF", "CARRY", "DSP"} | None,
                     "jobs": [job rows]}],
     "jobs": [BuildResult.to_dict()["jobs"] rows],
     "predicted_wall": {"1": s, "2": s, "4": s, "8": s},
     "verification": {...} | None}

The HTML has no external resources (inline CSS and SVG, no JavaScript): a summary, one table
row per partition, a Gantt chart of the build (one row per worker, bars coloured by step; jobs
reused from the cache in their own hatched row) and resource bar charts (LUT, FF, DSP).
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

__all__ = ["write_report", "render_html", "format_text"]

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
            from .build import predict_wall_time
            pw = {str(w): predict_wall_time(jobs, w) for w in (1, 2, 4, 8)}
    return {str(k): v for k, v in (pw or {}).items()}


def _nice_ticks(vmax: float, n: int = 5) -> list[float]:
    if vmax <= 0:
        return [0.0]
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(vmax / step + 1e-9) + 1)]


# ----------------------------------------------------------------------------- charts (SVG)

def gantt_svg(jobs: list[dict], width: int = 1000) -> str:
    """One row per worker; one bar per job run (coloured by step). Reused jobs in a hatched row."""
    ran = [j for j in jobs if j.get("start") is not None and j.get("end") is not None]
    cached = [j for j in jobs if j.get("state") == "cached"]
    if not ran and not cached:
        return '<p class="muted">No jobs.</p>'
    colors: dict[str, str] = {}
    for j in sorted(jobs, key=lambda j: j.get("step", "")):
        _step_color(j.get("step", "?"), colors)
    t0 = min((j["start"] for j in ran), default=0.0)
    t_end = max((j["end"] for j in ran), default=0.0)
    span_ran = max(t_end - t0, 1e-6) if ran else 0.0
    saved = sum(float(j.get("build_seconds") or 0.0) for j in cached)
    span = max(span_ran, min(saved, span_ran) if span_ran else saved, 1e-6)
    workers = sorted({str(j.get("worker") or "?") for j in ran})
    rows = workers + (["reused from cache"] if cached else [])
    label_w, row_h, top, bottom = 190, 26, 28, 30
    plot_w = width - label_w - 20
    height = top + row_h * len(rows) + bottom + 26
    sx = plot_w / span
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" role="img" '
           f'aria-label="Gantt chart of the build">',
           '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="6" height="6" fill="#e3f2fd"/>'
           '<line x1="0" y1="0" x2="0" y2="6" stroke="#0277bd" stroke-width="2"/></pattern></defs>']
    for k, t in enumerate(_nice_ticks(span)):
        x = label_w + t * sx
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + row_h * len(rows)}" '
                   f'stroke="#e0e0e0"/>')
        out.append(f'<text x="{x:.1f}" y="{top - 8}" text-anchor="middle" fill="#555">{_esc(_fmt_s(t))}</text>')
    for i, name in enumerate(rows):
        y = top + i * row_h
        if i % 2 == 0:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{row_h}" fill="#fafafa"/>')
        short = name if len(name) <= 28 else "…" + name[-27:]
        out.append(f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4}" text-anchor="end" fill="#333">'
                   f'<title>{_esc(name)}</title>{_esc(short)}</text>')
    for j in ran:
        i = workers.index(str(j.get("worker") or "?"))
        y = top + i * row_h + 4
        x = label_w + (j["start"] - t0) * sx
        w = max((j["end"] - j["start"]) * sx, 2.0)
        failed = j.get("state") == "failed"
        col = _step_color(j.get("step", "?"), colors)
        tip = (f"{j.get('id')}: {j.get('state')} in {_fmt_s(j['end'] - j['start'])}"
               f" (attempt {j.get('attempts', 1)}) on {j.get('worker')}")
        stroke = ' stroke="#c62828" stroke-width="2.5"' if failed else ' stroke="#fff" stroke-width="0.5"'
        out.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 8}" rx="2" fill="{col}"{stroke}>'
                   f'<title>{_esc(tip)}</title></rect>')
        label = f"{j.get('partition', '')} {j.get('step', '')}" + (" ✗" if failed else "")
        if w > 7 * len(label):
            out.append(f'<text x="{x + 4:.1f}" y="{y + row_h / 2 + 1}" fill="#fff" font-weight="bold">'
                       f'{_esc(label)}</text>')
    if cached:
        y = top + (len(rows) - 1) * row_h + 4
        x = float(label_w)
        for j in cached:
            w = max(float(j.get("build_seconds") or 0.0) * sx, 3.0)
            tip = f"{j.get('id')}: reused from the cache (its build took {_fmt_s(j.get('build_seconds'))})"
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 8}" fill="url(#hatch)" '
                       f'stroke="{_step_color(j.get("step", "?"), colors)}" stroke-width="1.5">'
                       f'<title>{_esc(tip)}</title></rect>')
            x += w
    # legend
    ly = top + row_h * len(rows) + 22
    lx = label_w
    for step, col in colors.items():
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{col}"/>'
                   f'<text x="{lx + 16}" y="{ly}" fill="#333">{_esc(step)}</text>')
        lx += 28 + 7 * len(step)
    if cached:
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="url(#hatch)" stroke="#0277bd"/>'
                   f'<text x="{lx + 16}" y="{ly}" fill="#333">reused (width = build time saved: '
                   f'{_esc(_fmt_s(saved))})</text>')
        lx += 300
    if any(j.get("state") == "failed" for j in ran):
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="#fff" stroke="#c62828" '
                   f'stroke-width="2.5"/><text x="{lx + 16}" y="{ly}" fill="#333">failed</text>')
    out.append(f'<text x="{label_w}" y="{height - 6}" fill="#777">time since the first job started '
               f'(wall clock of the workers)</text>')
    out.append("</svg>")
    return "\n".join(out)


def resources_svg(partitions: list[dict], kinds: tuple[str, ...] = ("LUT", "FF", "DSP"),
                  width: int = 1000) -> str:
    """One horizontal bar panel per resource kind (own scale each), one bar per partition."""
    parts = [p for p in partitions if isinstance(p.get("resources"), dict)]
    if not parts:
        return '<p class="muted">No resource estimates in this report (they come from synthesis / the RTL flow).</p>'
    kinds = tuple(k for k in kinds if any(p["resources"].get(k) is not None for p in parts)) or kinds
    pal = {"LUT": "#4C78A8", "FF": "#F58518", "DSP": "#54A24B", "CARRY": "#B279A2", "BRAM": "#E45756"}
    gap = 24
    panel_w = (width - gap * (len(kinds) - 1)) / len(kinds)
    label_w, bar_h, top = 80, 18, 30
    height = top + len(parts) * (bar_h + 6) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" role="img" '
           f'aria-label="Resources per partition">']
    for k, kind in enumerate(kinds):
        ox = k * (panel_w + gap)
        vals = [float(p["resources"].get(kind) or 0) for p in parts]
        vmax = max(vals) or 1.0
        ticks = _nice_ticks(vmax, 4)
        vmax = max(vmax, ticks[-1])
        plot_w = panel_w - label_w - 44
        out.append(f'<text x="{ox + label_w}" y="14" font-weight="bold" font-size="13" fill="#333">'
                   f'{_esc(kind)}</text>')
        for t in ticks:
            x = ox + label_w + t / vmax * plot_w
            out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 24}" stroke="#e8e8e8"/>'
                       f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle" fill="#777">{_esc(_fmt_n(t))}</text>')
        for i, (p, v) in enumerate(zip(parts, vals)):
            y = top + i * (bar_h + 6)
            w = v / vmax * plot_w
            out.append(f'<text x="{ox + label_w - 6}" y="{y + bar_h - 5}" text-anchor="end" fill="#333">'
                       f'{_esc(p.get("name"))}</text>')
            out.append(f'<rect x="{ox + label_w}" y="{y}" width="{max(w, 0.5):.1f}" height="{bar_h}" '
                       f'fill="{pal.get(kind, "#888")}"><title>{_esc(p.get("name"))} {kind}: {_fmt_n(v)}'
                       f'</title></rect>')
            out.append(f'<text x="{ox + label_w + w + 4:.1f}" y="{y + bar_h - 5}" fill="#333">{_esc(_fmt_n(v))}</text>')
    out.append("</svg>")
    return "\n".join(out)


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.muted{color:#777} .cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:110px;background:#fcfcfc}
.card .v{font-size:19px;font-weight:600} .card .k{font-size:11px;color:#666;text-transform:uppercase}
table{border-collapse:collapse;font-size:12px;margin:6px 0} th,td{border:1px solid #ddd;padding:4px 7px;vertical-align:top}
th{background:#f3f3f3;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:3px;padding:1px 5px;margin:1px 2px 1px 0;color:#fff;font-size:11px;white-space:nowrap}
.ports{font-family:monospace;font-size:11px;white-space:nowrap}
pre{background:#f6f6f6;border:1px solid #e3e3e3;padding:8px;font-size:11px;overflow:auto;max-height:300px}
.fail{color:#c62828;font-weight:600}
"""


def render_html(report: dict) -> str:
    jobs = _jobs(report)
    parts = report.get("partitions") or []
    c = _counts(jobs)
    pw = _predicted(report)
    title = f"fxsplit report: {report.get('model', 'model')} ({report.get('flow', '?')} flow)"
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
         f"<h1>{_esc(title)}</h1>",
         f'<div class="muted">output: {_esc(report.get("output_dir", "-"))} &middot; generated '
         f'{_esc(time.strftime("%Y-%m-%d %H:%M:%S"))}</div>']
    cards = [("partitions", len(parts)), ("total wall", _fmt_s(report.get("wall_seconds"))),
             ("jobs built", c["built"]), ("jobs reused", c["cached"])]
    if c["failed"] or c["skipped"]:
        cards += [("failed", c["failed"]), ("skipped", c["skipped"])]
    for w in ("1", "2", "4", "8"):
        if w in pw:
            cards.append((f"predicted, {w} worker{'s' if w != '1' else ''}", _fmt_s(pw[w])))
    h.append('<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{_esc(k)}</div><div class="v">{_esc(v)}</div></div>' for k, v in cards)
        + "</div>")
    if pw:
        h.append('<div class="muted">Predicted wall: the measured build time of every job (also of reused '
                 'ones), list-scheduled on W workers respecting dependencies.</div>')
    num = report.get("numerics")
    if isinstance(num, dict) and num:
        h.append(f'<div class="muted">numerics: {_esc(_numerics(num))}</div>')
        if _accum_lines(num):
            h.append('<div class="muted">accumulators made exact (plain hls4ml\'s type -> this design\'s): '
                     + "; ".join(f"<code>{_esc(x)}</code>" for x in _accum_lines(num)) + "</div>")
    bq = report.get("brevitas")
    if isinstance(bq, dict):
        h.append("<h2>brevitas quantizers, read exactly</h2>" + _brevitas_html(bq))
    ver = report.get("verification")
    if isinstance(ver, dict) and ver:
        h.append("<h2>Verification</h2>" + _verification_html(ver))

    h.append(_layer_splits_html(report.get("layer_splits")))
    # partition table
    colors: dict[str, str] = {}
    h.append("<h2>Partitions</h2><table><tr><th>partition</th><th>layers</th><th>params</th><th>ops</th>"
             "<th>inputs</th><th>outputs</th><th>latency (cycles)</th><th>LUT</th><th>FF</th><th>CARRY</th>"
             "<th>DSP</th><th>steps</th></tr>")
    jobs_by_part: dict[str, list[dict]] = {}
    for j in jobs:
        jobs_by_part.setdefault(j.get("partition"), []).append(j)
    for p in parts:
        res = p.get("resources") or {}
        pj = p.get("jobs") or jobs_by_part.get(p.get("name"), [])
        steps = []
        for j in pj:
            st = j.get("state", "?")
            secs = j.get("build_seconds") if st == "cached" else j.get("seconds")
            col = _step_color(j.get("step", "?"), colors)
            mark = {"cached": "reused", "built": "built", "failed": "FAILED", "skipped": "skipped"}.get(st, st)
            style = f"background:{col}" + (";opacity:.6" if st == "cached" else "") + (
                ";outline:2px solid #c62828" if st == "failed" else "") + (";opacity:.35" if st == "skipped" else "")
            tip = str(j.get("id")) + (f": peak memory {_fmt_bytes(j['peak_rss'])}, CPU {_fmt_s(j.get('cpu_seconds'))}"
                                 if j.get("peak_rss") is not None else "")
            steps.append(f'<span class="badge" style="{style}" title="{_esc(tip)}">'
                         f'{_esc(j.get("step"))} {_esc(_fmt_s(secs))} {_esc(mark)}</span>')
        h.append("<tr>" + f"<td><b>{_esc(p.get('name'))}</b></td>"
                 + "".join(f'<td class="n">{_esc(_fmt_n(p.get(k)))}</td>' for k in ("layers", "params", "ops"))
                 + f'<td class="ports">{"<br>".join(_esc(s) for s in _ports(p.get("inputs")))}</td>'
                 + f'<td class="ports">{"<br>".join(_esc(s) for s in _ports(p.get("outputs")))}</td>'
                 + f'<td class="n">{_esc(_fmt_n(p.get("latency")))}</td>'
                 + "".join(f'<td class="n">{_esc(_fmt_n(res.get(k)))}</td>' for k in ("LUT", "FF", "CARRY", "DSP"))
                 + f"<td>{''.join(steps)}</td></tr>")
    h.append("</table>")

    # other jobs (monolithic reference, stitched design...)
    names = {p.get("name") for p in parts}
    other = [j for j in jobs if j.get("partition") not in names]
    if other:
        h.append("<h3>Other jobs</h3><table><tr><th>job</th><th>state</th><th>time</th><th>worker</th></tr>")
        for j in other:
            st = j.get("state")
            h.append(f'<tr><td>{_esc(j.get("id"))}</td><td style="color:{STATE_COLORS.get(st, "#333")}">'
                     f'{_esc(st)}</td><td class="n">{_esc(_fmt_s(j.get("build_seconds") if st == "cached" else j.get("seconds")))}'
                     f'</td><td>{_esc(j.get("worker"))}</td></tr>')
        h.append("</table>")

    h.append(_usage_html(jobs, report.get("build") if isinstance(report.get("build"), dict) else None))
    h.append(_prediction_html(report, jobs))

    st = report.get("stitched")
    if isinstance(st, dict) and st:
        h.append("<h2>Stitched design</h2>" + _stitched_html(st))
    cmp = report.get("compare_monolithic")
    if isinstance(cmp, dict) and cmp:
        h.append(_compare_html(cmp))
    vt = report.get("vitis")
    if isinstance(vt, dict) and vt:
        h.append("<h2>Vitis HLS</h2>" + _vitis_html(vt, parts))

    h.append("<h2>Build timeline</h2>" + gantt_svg(jobs))
    h.append("<h2>Resources per partition</h2>" + resources_svg(parts))

    failed = [j for j in jobs if j.get("state") == "failed"]
    if failed:
        h.append("<h2>Failures</h2>")
        for j in failed:
            h.append(f'<p class="fail">{_esc(j.get("id"))}: {_esc(j.get("error"))}</p>'
                     f'<div class="muted">log: {_esc(j.get("log_path"))}</div>'
                     f'<pre>{_esc(j.get("error_tail") or "")}</pre>')
    h.append("</body></html>")
    return "\n".join(h)


def _stream_desc(d: dict) -> str:
    """How a stream-top simulation paused: ``; AXI4-Stream top, random input gaps 0.3, ...``."""
    if d.get("interface") != "axis":
        return ""
    return (f"; AXI4-Stream top, random input gaps {d.get('gaps')}, output backpressure {d.get('backpressure')} "
            f"(seed {d.get('seed')}), {_fmt_n(d.get('cycles'))} cycles")


_LEVELS = {"csim": "stitched C simulation vs the uncut C simulation",
           "rtl": "stitched RTL simulation vs stitched C simulation vs the uncut C simulation"}


def _verification_html(ver: dict) -> str:
    """The verification result as sentences and a mismatch table (never a raw JSON dump)."""
    from .verify import passed
    ok = passed(ver)
    extra = ver.get("extra") or {}
    rows = [("result", "BIT-EXACT" if ver.get("bit_exact") else
             f"MISMATCH: {_fmt_n(ver.get('mismatches'))} differing elements"),
            ("compared", _LEVELS.get(ver.get("level"), str(ver.get("level")))),
            ("random samples", _fmt_n(ver.get("n_samples"))),
            ("max |design - PyTorch float|", f"{ver.get('max_abs_error_vs_torch', float('nan')):.4g} "
                                             "(quantization error, reported, not a failure)")]
    if ver.get("torch_exact") is not None:
        rows[0] = ("result", rows[0][1] if ver.get("matches_torch") is not False else
                   f"MISMATCH: {_fmt_n(ver.get('torch_mismatches'))} elements differ from the brevitas model")
        rows.append(("vs the brevitas model",
                     "equal bit for bit (brevitas' own arithmetic is exact here)" if ver.get("matches_torch") else
                     f"{_fmt_n(ver.get('torch_mismatches'))} differing elements" if ver.get("torch_exact") else
                     "brevitas rounds in float32 (a sum past 24 bits or a float layer): the error above is reported, not checked"))
    lim = ver.get("at_limits")
    if isinstance(lim, dict) and lim:
        rows.append(("outputs at their type's limits",
                     "; ".join(f"{k}: {_fmt_n(v.get('min'))} at the minimum, {_fmt_n(v.get('max'))} at the maximum "
                               f"(of {_fmt_n(v.get('of'))})" for k, v in lim.items())))
    rtl = extra.get("rtl_vs_csim")
    if isinstance(rtl, dict):
        rows.append(("RTL vs C simulation", f"{rtl.get('passed')} samples passed, {rtl.get('failed')} failed "
                     f"({extra.get('simulator')}, {_fmt_n(extra.get('latency_cycles'))} cycles latency, "
                     f"{_fmt_s(extra.get('sim_seconds'))}){_stream_desc(extra)}"))
        rows.append(("stitched vs uncut C simulation",
                     f"{_fmt_n(extra.get('csim_vs_monolithic_mismatches'))} differing elements"))
    if extra.get("testbench_dir"):
        rows.append(("testbench", extra["testbench_dir"]))
    color = "#2e7d32" if ok else "#c62828"
    out = (f'<table><tr><th>result</th><td style="color:{color};font-weight:bold">{_esc(rows[0][1])}</td></tr>'
           + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows[1:]) + "</table>")
    mm = ver.get("first_mismatches") or []
    if mm:
        out += ("<h3>First mismatches</h3><table><tr><th>sample</th><th>output</th><th>element</th>"
                "<th>got</th><th>expected</th></tr>" + "".join(
                    f"<tr><td class=\"n\">{_esc(m.get('sample'))}</td><td>{_esc(m.get('output'))}</td>"
                    f"<td class=\"n\">{_esc(m.get('index'))}</td><td class=\"n\">{_esc(m.get('got'))}</td>"
                    f"<td class=\"n\">{_esc(m.get('expected'))}</td></tr>" for m in mm) + "</table>")
    return out


def _brevitas_html(bq: dict) -> str:
    rows = "".join(
        f"<tr><td>{_esc(q.get('layer'))}</td><td>{_esc(q.get('kind'))}</td>"
        f"<td class=\"n\">{_esc(q.get('bit_width', ''))}</td><td>{_esc(q.get('scale', q.get('weight_scale', '')))}</td>"
        f"<td>{_esc(q.get('rounding', ''))}</td><td><code>{_esc(q.get('type'))}</code>"
        f"{'' if not q.get('bias') else ' + bias <code>' + _esc(q.get('bias')) + '</code>'}</td></tr>"
        for q in bq.get("quantizers") or [])
    inputs = ", ".join(f"{k}: {v}" for k, v in (bq.get("input_precisions") or {}).items())
    claim = ("brevitas' own arithmetic is exact: the design must equal it bit for bit" if bq.get("torch_exact") else
             "brevitas rounds in float32 in " + ", ".join(bq.get("inexact_in_brevitas") or []) +
             ": the error against it is reported")
    return (f"<p>{_esc(claim)}. Model inputs: <code>{_esc(inputs or '-')}</code>.</p>"
            "<table><tr><th>layer</th><th>kind</th><th>bits</th><th>scale</th><th>rounding</th><th>hls4ml type</th>"
            f"</tr>{rows}</table>")


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


def _layer_splits_html(ls: Any) -> str:
    """The layers built as several partitions (cuts inside a layer): each one's pieces by output range."""
    if not isinstance(ls, dict) or not ls:
        return ""
    h = ["<h2>Cuts inside layers</h2><table><tr><th>layer</th><th>partitions</th><th>outputs of each</th></tr>"]
    for layer, bounds in ls.items():
        b = list(bounds) if isinstance(bounds, (list, tuple)) else []
        ranges = ", ".join(f"{x}..{y - 1}" if isinstance(x, int) and isinstance(y, int) else f"{x}..{y}"
                           for x, y in zip(b, b[1:]))
        h.append(f'<tr><td><code>{_esc(layer)}</code></td><td class="n">{max(len(b) - 1, 0)}</td>'
                 f"<td>{_esc(ranges)}</td></tr>")
    h.append('</table><p class="muted">Each range of the layer\'s outputs is a partition of its own (a Linear holding '
             "the layer's rows of weights), joined by hls4ml Concatenates; every type is the uncut layer's, so the "
             "stitched design equals the uncut one bit for bit.</p>")
    return "".join(h)


def _prediction_html(report: dict, jobs: list[dict]) -> str:
    """The automatic split (what it chose, predicted against the markers alone) and the cost model's prediction
    of every job against its measured build time."""
    h = []
    au = report.get("auto_split")
    if isinstance(au, dict) and au:
        mo = au.get("markers_only") or {}
        h.append("<h2>Automatic split</h2><p>"
                 f"{_esc(au.get('partitions'))} partitions for {_esc(au.get('workers'))} workers: cuts added before "
                 f"<code>{_esc(', '.join(au.get('splits') or []) or '(none)')}</code> "
                 f"({_esc(au.get('candidates'))} candidates, {_esc(_fmt_n(au.get('crossing_bits')))} bits on the "
                 f"added cuts). Predicted build wall {_esc(_fmt_s(au.get('predicted_wall')))}; with the markers "
                 f"alone ({_esc(mo.get('partitions'))} partition{'' if mo.get('partitions') == 1 else 's'}) "
                 f"{_esc(_fmt_s(mo.get('predicted_wall')))}.</p>")
        model = au.get("model") or {}
        if model:
            h.append('<p class="muted">cost model: ' + _esc("; ".join(
                f"{k} {v.get('source')}" for k, v in sorted(model.items()))) + "</p>")
    rows = [j for j in jobs if j.get("predicted") is not None and j.get("state") in ("built", "cached")]
    if rows:
        h.append("<h2>Build time: predicted vs measured</h2><table><tr><th>job</th><th>predicted</th>"
                 "<th>measured</th><th>error</th></tr>")
        for j in rows:
            meas = float(j.get("build_seconds") or 0.0)
            pred = float(j["predicted"])
            err = f"{(pred - meas) / meas * 100:+.0f} %" if meas > 0 else "-"
            h.append(f'<tr><td>{_esc(j.get("id"))}</td><td class="n">{_esc(_fmt_s(pred))}</td>'
                     f'<td class="n">{_esc(_fmt_s(meas))}</td><td class="n">{_esc(err)}</td></tr>')
        h.append("</table><p class=\"muted\">Predicted before the build by fxsplit's cost model (features of each "
                 "partition, coefficients fitted on the jobs in the cache); measured: the job's build time "
                 "(for a reused job, the time of the build that produced it).</p>")
    return "".join(h)


def _vitis_html(vt: dict, parts: list[dict]) -> str:
    """Per-partition C-synthesis estimates (hls4ml's report reader), their sum, and Vivado's figures
    where it synthesized a partition; or, where Vitis HLS did not run, where the projects are."""
    if not vt.get("ran"):
        return (f'<p>Vitis HLS did not run here (emit only): every partition\'s project, the stitcher and '
                f'<code>run_vitis.sh</code> are in <code>{_esc(vt.get("bundle"))}</code>.</p>'
                + _vivado_stitch_html(vt.get("stitched")))
    keys = ("LUT", "FF", "DSP", "BRAM_18K", "URAM")
    h = ["<table><tr><th>partition</th><th>latency (cycles, best-worst)</th><th>interval</th>"
         "<th>clock (ns, target / estimated)</th>" + "".join(f"<th>{k}</th>" for k in keys)
         + "<th>Vivado synthesis</th></tr>"]
    for p in parts:
        r = p.get("hls")
        if not r:
            h.append(f'<tr><td><b>{_esc(p.get("name"))}</b></td><td colspan="9">no report</td></tr>')
            continue
        lat, ii, clk = r["latency_cycles"], r["interval"], r["clock_ns"]
        vs = r.get("vivado_synth")
        h.append(f'<tr><td><b>{_esc(p.get("name"))}</b></td><td class="n">{lat["best"]}-{lat["worst"]}</td>'
                 f'<td class="n">{ii["min"]}-{ii["max"]}</td><td class="n">{clk["target"]} / {clk["estimated"]}</td>'
                 + "".join(f'<td class="n">{_esc(_fmt_n(r["resources"].get(k)))}</td>' for k in keys)
                 + f'<td>{_esc(_resources(vs)) if vs else "-"}</td></tr>')
    tot = vt.get("total_estimate")
    if tot:
        h.append('<tr><td><b>sum of the partitions</b></td><td colspan="3" class="muted">C-synthesis estimates; '
                 "the stitched design's own figures are Vivado's, below</td>"
                 + "".join(f'<td class="n"><b>{_esc(_fmt_n(tot.get(k)))}</b></td>' for k in keys) + "<td></td></tr>")
    h.append("</table>")
    h.append(_vivado_stitch_html(vt.get("stitched")) or
             '<p class="muted">The stitched design was not built in Vivado in this run.</p>')
    if vt.get("missing"):
        h.append(f'<p class="fail">no sum: partitions {_esc(", ".join(vt["missing"]))} have no report</p>')
    return "".join(h)


def _vivado_stitch_html(st: dict | None) -> str:
    """The ``stitched/vivado`` job's figures: Vivado's synthesis of the whole block design and the xsim run."""
    if not st:
        return ""
    u, t = st["utilization"], st["timing"]
    return ("<p><b>Stitched in Vivado</b> (out-of-context synthesis of the whole block design, glue included): "
            + _esc(", ".join(f"{k} {_fmt_n(v)}" for k, v in u.items()))
            + f"; WNS {_esc(t.get('wns_ns'))} ns ({'met' if t.get('met') else 'NOT met'}); "
            f"xsim: {st['xsim']['passed']} vectors passed, {st['xsim']['failed']} failed.</p>")


def _stitched_html(st: dict) -> str:
    tot = st.get("resources_total") or {}
    top = st.get("resources_top") or {}
    rows = [("top module", st.get("top")), ("Verilog", st.get("file")),
            ("latency (cycles)", _fmt_n(st.get("latency")))]
    if st.get("axis_file"):
        rows.append(("stream top (AXI4-Stream)", f'{st.get("axis_top")}: {st.get("axis_file")}'))
    if tot:
        rows.append(("resources (partitions + top)", _resources(tot)))
        rows.append(("of which the top (delay and valid lines)", _resources(top)))
        rows.append(("top synthesis log", st.get("top_synth_log")))
    sim = st.get("simulation")
    if isinstance(sim, dict) and sim:
        ok = sim.get("failed") == 0 and sim.get("passed") == sim.get("samples")
        rows.append(("last RTL simulation", f"{sim.get('simulator')}: {sim.get('passed')}/{sim.get('samples')} "
                     f"samples passed, {sim.get('failed')} failed, {_fmt_s(sim.get('seconds'))}{_stream_desc(sim)}"
                     + ("" if ok else "  (FAILED)")))
    out = "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table>"
    if isinstance(sim, dict) and sim.get("log"):
        out += f'<details><summary>simulation log</summary><pre>{_esc(sim.get("log"))}</pre></details>'
    return out


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jp, hp = out / "report.json", out / "report.html"
    for path, text in ((jp, json.dumps(report, indent=2, default=str)), (hp, render_html(report))):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return jp, hp


# ----------------------------------------------------------------------------- terminal

def format_text(report: dict, width: int = 120) -> str:
    """The report for a terminal: summary line(s) and a per-partition table (plain text)."""
    from rich.console import Console
    from rich.table import Table

    jobs = _jobs(report)
    parts = report.get("partitions") or []
    c = _counts(jobs)
    pw = _predicted(report)
    buf = io.StringIO()
    con = Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False)
    con.print(f"fxsplit: {report.get('model', 'model')} ({report.get('flow', '?')} flow), "
              f"{len(parts)} partition(s), wall {_fmt_s(report.get('wall_seconds'))}; "
              f"jobs: {c['built']} built, {c['cached']} reused"
              + (f", {c['failed']} FAILED" if c["failed"] else "")
              + (f", {c['skipped']} skipped" if c["skipped"] else ""), markup=False)
    if isinstance(report.get("numerics"), dict):
        con.print("numerics: " + _numerics(report["numerics"]), markup=False)
        for line in _accum_lines(report["numerics"]):
            con.print(f"  accumulator {line}", markup=False)
    bq = report.get("brevitas")
    if isinstance(bq, dict):
        con.print(f"brevitas: {len(bq.get('quantizers') or [])} quantized layers read exactly; "
                  + ("the design must equal brevitas' output bit for bit" if bq.get("torch_exact") else
                     "brevitas rounds in float32 in " + ", ".join(bq.get("inexact_in_brevitas") or [])),
                  markup=False, soft_wrap=True)
    if pw:
        con.print("predicted wall on " + ", ".join(f"{w}: {_fmt_s(v)}" for w, v in pw.items())
                  + " worker(s)", markup=False)
    usage = _usage_summary(jobs)
    build = report.get("build") if isinstance(report.get("build"), dict) else {}
    if usage:
        con.print("memory and CPU: " + usage + (f"; {_budget_line(build)}" if _budget_line(build) else ""),
                  markup=False)
    for w in build.get("warnings") or []:
        con.print(f"warning: {w}", markup=False)
    au = report.get("auto_split")
    if isinstance(au, dict) and au:
        mo = au.get("markers_only") or {}
        con.print(f"auto split for {au.get('workers')} workers: cuts before {', '.join(au.get('splits') or []) or '(none)'}"
                  f"; predicted wall {_fmt_s(au.get('predicted_wall'))} (markers alone: "
                  f"{_fmt_s(mo.get('predicted_wall'))})", markup=False)
    for layer, bounds in (report.get("layer_splits") or {}).items():
        con.print(f"layer {layer} built as {len(bounds) - 1} partitions, by outputs "
                  f"{', '.join(f'{a}..{b - 1}' for a, b in zip(bounds, bounds[1:]))}", markup=False)
    num = ("layers", "params", "ops", "latency", "LUT", "FF", "CARRY", "DSP")
    t = Table(show_lines=False, pad_edge=False, box=None, header_style="bold")
    for col in ("partition", *num, "steps"):
        if col == "steps":
            t.add_column(col, overflow="fold")
        else:
            t.add_column(col, justify="right" if col in num else "left", no_wrap=True, min_width=max(len(col), 5))
    for p in parts:
        res = p.get("resources") or {}
        pj = p.get("jobs") or [j for j in jobs if j.get("partition") == p.get("name")]
        steps = "  ".join(
            f"{j.get('step')}:{'reused' if j.get('state') == 'cached' else j.get('state')}"
            + (f" {_fmt_s(j.get('build_seconds') if j.get('state') == 'cached' else j.get('seconds'))}"
               if j.get("state") in ("built", "cached", "failed") else "") for j in pj)
        t.add_row(str(p.get("name")), *(_fmt_n(p.get(k)) for k in ("layers", "params", "ops", "latency")),
                  *(_fmt_n(res.get(k)) for k in ("LUT", "FF", "CARRY", "DSP")), steps or "-")
    if parts:
        con.print(t)
        con.print("ports:", markup=False)
        for p in parts:
            con.print(f"  {p.get('name')}: " + ", ".join(_ports(p.get("inputs"))) + " -> "
                      + ", ".join(_ports(p.get("outputs"))), markup=False, soft_wrap=True)
    st = report.get("stitched")
    if isinstance(st, dict) and st:
        tot = st.get("resources_total") or {}
        sim = st.get("simulation") or {}
        con.print(f"stitched: {st.get('top')} ({st.get('file')}), latency {_fmt_n(st.get('latency'))} cycles"
                  + (f", partitions + top: {_resources(tot)} (top alone: {_resources(st.get('resources_top') or {})})"
                     if tot else "")
                  + (f"; last simulation ({sim.get('simulator')}): {sim.get('passed')}/{sim.get('samples')} passed"
                     if sim else ""), markup=False, soft_wrap=True)
    cmp = report.get("compare_monolithic")
    if isinstance(cmp, dict) and cmp:
        con.print("uncut vs stitched: " + "; ".join(f"{n} {a} vs {b} ({r})" for n, a, b, r in _compare_rows(cmp)),
                  markup=False, soft_wrap=True)
    for j in jobs:
        if j.get("state") == "failed":
            con.print(f"FAILED {j.get('id')}: {j.get('error')}  (log: {j.get('log_path')})", markup=False)
    return buf.getvalue().rstrip() + "\n"
