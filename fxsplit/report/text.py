"""The report for a terminal: summary lines and a table per partition (rich, plain text)."""

from __future__ import annotations

import io

from .fmt import _accum_lines, _budget_line, _compare_rows, _counts, _fmt_n, _fmt_s, _jobs, _numerics, _ports, _predicted, _resources, _usage_summary


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
                  + (f", {_fmt_n(st.get('interval'))} cycles between frames" if st.get("interval") is not None else "")
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
