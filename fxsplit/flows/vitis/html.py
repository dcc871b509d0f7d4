"""The Vitis flow's report section in HTML: per-partition C-synthesis estimates, their sum, and the stitched design's
figures from Vivado (or, where the tools did not run, where the bundle is)."""

from __future__ import annotations

from ...report.fmt import _esc, _fmt_n, _resources


def section_html(vt: dict, parts: list[dict]) -> str:
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
