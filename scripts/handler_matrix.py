#!/usr/bin/env python3
"""The handler matrix as a Markdown table: every name in hls4ml's PyTorch converter registry, io_parallel and
io_stream, with the operation mid-model and a cut right before and right after it (tests/handler_models.py).

    python scripts/handler_matrix.py                       # all cases (several minutes on 2 cores)
    python scripts/handler_matrix.py ReLU Conv2d --io io_stream -o out/handler_matrix

Cells: pass / hls4ml fails (reason) / refused (reason) / FAIL (what). The same checks as
tests/test_handler_matrix.py (uncut fxsplit == plain hls4ml, stitched == uncut, bit for bit)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("handlers", nargs="*", help="registry names (default: the whole registry)")
    ap.add_argument("--io", choices=["io_parallel", "io_stream"], action="append",
                    help="io type(s) (default: both)")
    ap.add_argument("-o", "--output-dir", help="where the projects go (default: a temporary directory)")
    ap.add_argument("-n", type=int, default=None, help="random inputs per case (default: 50)")
    ap.add_argument("--times", action="store_true", help="add a seconds column")
    args = ap.parse_args(argv)

    import warnings
    warnings.filterwarnings("ignore")
    import handler_models as hm

    names = hm.registry()
    if args.handlers:
        unknown = [h for h in args.handlers if h not in names]
        if unknown:
            ap.error(f"not in hls4ml's PyTorch registry: {unknown}")
        names = [h for h in names if h in args.handlers]
    io_types = args.io or list(hm.IO_TYPES)
    out = Path(args.output_dir).resolve() if args.output_dir else Path(tempfile.mkdtemp(prefix="handler_matrix_"))
    cache = out / ".cache"
    log_path = out / "hls4ml.log"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.time()
    executor = hm.build_pool()      # one warm pool for every case (workers import hls4ml once)
    with executor, open(log_path, "w") as log:
        for name in names:
            for io_type in io_types:
                row = hm.run_case(name, io_type, out / f"{name}_{io_type}", cache_dir=cache, log=log, executor=executor,
                                  **({"n": args.n} if args.n else {}))
                rows.append(row)
                status = "FAIL" if row.failures else "ok"
                print(f"[{len(rows)}/{len(names) * len(io_types)}] {name} {io_type}: {status} ({row.seconds:.1f} s)",
                      file=sys.stderr, flush=True)
    table = hm.markdown_table(rows)
    if args.times:
        lines = table.splitlines()
        lines[0] += " seconds |"
        lines[1] += "---|"
        lines[2:] = [ln + f" {r.seconds:.1f} |" for ln, r in zip(lines[2:], rows)]
        table = "\n".join(lines)
    print(table)
    print("\nHow each handler is triggered (tests/handler_models.py): " +
          "; ".join(f"{r.handler}: {r.what}" for r in rows if r.io_type == io_types[0] and r.what))
    failures = [f for r in rows for f in r.failures]
    print(f"\n{len(rows)} cases in {time.time() - t0:.0f} s; {sum(1 for r in rows if r.failures)} with failures; "
          f"projects in {out}")
    for f in failures:
        print(f"- {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
