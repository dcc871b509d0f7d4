"""The report's charts as inline SVG: the build's Gantt chart (a row per worker, bars by step; reused jobs in
their own hatched row) and the resources per partition."""

from __future__ import annotations


from .fmt import _esc, _fmt_n, _fmt_s, _nice_ticks, _step_color


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
