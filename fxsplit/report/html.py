"""The report as ``report.json`` and a self-contained ``report.html``.

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

import json
import os
import time
from pathlib import Path
from typing import Any

from .fmt import STATE_COLORS, _accum_lines, _compare_html, _counts, _esc, _fmt_bytes, _fmt_n, _fmt_s, _jobs, _numerics, _ports, _predicted, _resources, _step_color, _usage_html
from .svg import gantt_svg, resources_svg


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
    h.append("<h2>Partitions</h2><table><tr><th>partition</th><th>layers</th><th>params</th>"
             "<th title=\"weights that are not zero in their layer's weight type\">nonzero weights</th><th>ops</th>"
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
                 + "".join(f'<td class="n">{_esc(_fmt_n(p.get(k)))}</td>'
                           for k in ("layers", "params", "nonzero_weights", "ops"))
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
    h.append(_flow_sections_html(report))
    steps = report.get("steps")
    if isinstance(steps, list) and steps:
        h.append(_steps_html(report.get("flow"), steps, jobs))

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
    interval = d.get("interval_cycles", d.get("interval"))
    return (f"; AXI4-Stream top, random input gaps {d.get('gaps')}, output backpressure {d.get('backpressure')} "
            f"(seed {d.get('seed')}), {_fmt_n(d.get('cycles'))} cycles"
            + (f"; free running: {_fmt_n(interval)} cycles between frames" if interval is not None else ""))


_LEVELS = {"csim": "stitched C simulation vs the uncut C simulation",
           "rtl": "stitched RTL simulation vs stitched C simulation vs the uncut C simulation"}


def _verification_html(ver: dict) -> str:
    """The verification result as sentences and a mismatch table (never a raw JSON dump)."""
    from ..verify import passed
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
    if ver.get("reading_mismatches") is not None:
        bad = ver["reading_mismatches"]
        if bad:
            rows[0] = ("result", f"MISMATCH: {_fmt_n(bad)} elements differ from fxsplit's exact reading")
        rows.append(("vs fxsplit's exact reading", "equal bit for bit (every brevitas layer as the fixed-point map "
                     "fxsplit read and checked, run in float64)" if not bad else
                     f"{_fmt_n(bad)} differing elements: hls4ml computes something other than the layers read"))
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


def _scale_cell(v) -> str:
    """A quantizer's scale: a list of per-channel scales (the first ones, then '...') as plain numbers."""
    if isinstance(v, list):
        return ", ".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v) + (" (per channel)"
                                                                                       if len(v) > 1 else "")
    return str(v)


def _brevitas_html(bq: dict) -> str:
    rows = "".join(
        f"<tr><td>{_esc(q.get('layer'))}</td><td>{_esc(q.get('kind'))}</td>"
        f"<td class=\"n\">{_esc(q.get('bit_width', ''))}</td><td>{_esc(_scale_cell(q.get('scale', q.get('weight_scale', ''))))}</td>"
        f"<td>{_esc(q.get('rounding', ''))}</td><td><code>{_esc(q.get('type'))}</code>"
        f"{'' if not q.get('bias') else ' + bias <code>' + _esc(q.get('bias')) + '</code>'}</td>"
        f"<td>{_esc(_checked(q))}</td></tr>"
        for q in bq.get("quantizers") or [])
    inputs = ", ".join(f"{k}: {v}" for k, v in (bq.get("input_precisions") or {}).items())
    claim = ("brevitas' own arithmetic is exact: the design must equal it bit for bit" if bq.get("torch_exact") else
             "brevitas rounds in float32 in " + ", ".join(bq.get("inexact_in_brevitas") or []) +
             ": the error against it is reported")
    arith = "".join(f"<p>Input arithmetic {_esc(', '.join(a.get('operations') or []))} on "
                    f"<code>{_esc(a.get('input_type'))}</code> -> <code>{_esc(a.get('type'))}</code>: "
                    f"{_esc(a.get('note', ''))}.</p>" for a in bq.get("input_arithmetic") or [])
    return (f"<p>{_esc(claim)}. Model inputs: <code>{_esc(inputs or '-')}</code>.</p>{arith}"
            "<table><tr><th>layer</th><th>kind</th><th>bits</th><th>scale</th><th>rounding</th><th>hls4ml type</th>"
            f"<th>checked</th></tr>{rows}</table>")


def _checked(q: dict) -> str:
    """A fold's exhaustive check and, on float-scaled tensors, brevitas' decisions that differ from the reading."""
    parts = []
    if q.get("checked_inputs") is not None:
        parts.append(f"{q['checked_inputs']} inputs")
    if q.get("fold_differs"):
        parts.append(f"brevitas differs on {q['fold_differs']} of them")
    if q.get("decisions_differing") is not None:
        parts.append(f"{q['decisions_differing']} of {q.get('decisions_checked')} decisions on the calibration "
                     "batch differ from brevitas'")
    return "; ".join(parts)


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
    h.append('</table><p class="muted">Each range of the layer\'s outputs (a convolution\'s output channels) is a '
             "partition of its own (a layer holding those rows of weights or filters, a convolution's followed by "
             "those channels of its BatchNorm), joined by hls4ml Concatenates; every type is the uncut layer's, so "
             "the stitched design equals the uncut one bit for bit.</p>")
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


def _stitched_html(st: dict) -> str:
    tot = st.get("resources_total") or {}
    top = st.get("resources_top") or {}
    rows = [("top module", st.get("top")), ("Verilog", st.get("file")),
            ("latency (cycles)", _fmt_n(st.get("latency")) if st.get("latency") is not None else
             "from the RTL simulation: run verify(x, level='rtl')")]
    if st.get("interface") == "axis":
        rows[0] = ("top module", f"{st.get('top')} (streaming, AXI4-Stream)")
        rows.append(("interval between frames (cycles)", _fmt_n(st.get("interval"))))
        for f in st.get("fifos") or []:
            rows.append((f"FIFO {f.get('name')}", f"stream {f.get('stream')}: depth {', '.join(map(str, f.get('depths', [])))}"
                         f" (deadlock-free minimum {', '.join(map(str, f.get('min_depths', [])))})"))
    if st.get("axis_file"):
        rows.append(("stream top (AXI4-Stream)", f'{st.get("axis_top")}: {st.get("axis_file")}'))
    if tot:
        rows.append(("resources (partitions + top)", _resources(tot)))
        rows.append(("of which the top (forks and FIFOs)" if st.get("interface") == "axis" else
                     "of which the top (delay and valid lines)", _resources(top)))
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


def _steps_html(flow, steps: list[dict], jobs: list[dict]) -> str:
    """The steps the flow declares (what each job of the build is), with how many jobs of each ran or were reused."""
    h = [f"<h2>Steps of the {_esc(flow)} flow</h2><table><tr><th>step</th><th>scope</th><th>tool</th>"
         "<th>needs</th><th>cost model</th><th>jobs</th><th>what it does</th></tr>"]
    for s in steps:
        stitched = s.get("scope") == "stitched"
        n = sum(1 for j in jobs if j.get("step") == s.get("name") and (j.get("partition") == "stitched") == stitched)
        needs = [*(s.get("deps") or []), *(f"every partition's {a}" for a in s.get("after") or [])]
        h.append(f'<tr><td>{_esc(s.get("name"))}</td><td>{_esc(s.get("scope"))}</td><td>{_esc(s.get("tool") or "")}'
                 f'</td><td>{_esc(", ".join(needs))}</td><td>{_esc(s.get("model"))} ({_esc(s.get("size"))})</td>'
                 f'<td class="n">{n}</td><td>{_esc(s.get("doc") or "")}</td></tr>')
    h.append("</table>")
    return "".join(h)


def _flow_sections_html(report: dict) -> str:
    """The sections the report's flow adds (``Flow.report_sections``), as the flow renders them; a report of a
    flow this install does not know shows none."""
    from ..errors import FxsplitError
    from ..flows import get_flow
    try:
        flow = get_flow(str(report.get("flow")))
    except FxsplitError:
        return ""
    return flow.report_html(report)

