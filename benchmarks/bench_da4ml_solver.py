"""da4ml's decomposition-depth search on the kernels fxsplit builds: solver time and adders, with and without it.

    python benchmarks/bench_da4ml_solver.py [--models jet_tagger,resnet20_small,resnet20_half] [--max-weights N]

Every Linear/Conv of the named zoo models, as the open RTL flow hands it to ``da4ml.cmvm.solve``: the weights
hls4ml builds (a following BatchNorm folded in), quantized to 8 bits spanning each layer
(``fxsplit.zoo.spanning_config``), one row per input of the per-pixel kernel (``C_in * k * k`` for a convolution),
8-bit signed inputs. Each kernel is solved twice, side by side: with da4ml's default search over every
decomposition depth, and with its default depth alone (what fxsplit does above
``fxsplit.flows.rtl.trace.SEARCH_DEPTHS_UP_TO`` weights). Printed per kernel and in total: solver seconds, da4ml's
adder cost and the pipeline depth, and the ratios. Kernels over ``--max-weights`` are left out (the search on
ResNet20's 576x64 kernels takes over 18 minutes each).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import _common as C

from fxsplit.fixed import parse_type  # noqa: E402
from fxsplit.zoo import build, folded_weights, spanning_config  # noqa: E402


def kernels(name: str) -> list[tuple[str, np.ndarray]]:
    """(layer, weights as the solver sees them: rows = the per-pixel kernel's inputs, columns = outputs)."""
    model, shape = build(name)
    types = {k: v["precision"]["weight"] for k, v in spanning_config(model, shape)["layers"].items()}
    out = []
    for layer, w in folded_weights(model, shape).items():
        t = parse_type(types[layer])
        step = 2.0 ** -(t.width - t.integer)
        lim = 2.0 ** (t.integer - 1)
        q = np.clip(np.round(w.detach().double().numpy() / step) * step, -lim, lim - step)
        m = q.reshape(q.shape[0], -1).T            # (C_out, C_in, k, k) or (out, in) -> (inputs, outputs)
        out.append((f"{name}.{layer}", m.astype(np.float32)))
    return out


def solve(m: np.ndarray, search: bool) -> tuple[float, float, float]:
    from da4ml.cmvm import solve as da4ml_solve
    n = m.shape[0]
    t0 = time.perf_counter()
    p = da4ml_solve(m, qintervals=[(-128.0, 127.0, 1.0)] * n, latencies=[0.0] * n, search_all_decompose_dc=search)
    return time.perf_counter() - t0, float(p.cost), float(max(p.out_latencies))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="jet_tagger,resnet20_small,resnet20_half")
    ap.add_argument("--max-weights", type=int, default=20000)
    ap.add_argument("--out-root", default=None)
    a = ap.parse_args()
    run = C.fresh_run_dir("bench_da4ml_solver", a.out_root)
    rows, recs = [], []
    tot = {True: [0.0, 0.0], False: [0.0, 0.0]}
    for name in a.models.split(","):
        for layer, m in kernels(name):
            nz = int(np.count_nonzero(m))
            if m.size > a.max_weights:
                print(f"  {layer} {m.shape[0]}x{m.shape[1]}: left out (over --max-weights)", flush=True)
                continue
            (ts, cs, ls), (td, cd, ld) = solve(m, True), solve(m, False)
            for k, (t, c) in ((True, (ts, cs)), (False, (td, cd))):
                tot[k][0] += t
                tot[k][1] += c
            rows.append([layer, f"{m.shape[0]}x{m.shape[1]}", nz, f"{ts:.2f}", f"{td:.2f}", f"{ts / max(td, 1e-9):.1f}x",
                         f"{cs:.0f}", f"{cd:.0f}", f"{100 * (cd - cs) / cs:+.2f}%", f"{ls:.0f}/{ld:.0f}"])
            recs.append({"layer": layer, "shape": list(m.shape), "nonzero": nz, "search": [ts, cs, ls],
                         "default_depth": [td, cd, ld]})
            print(f"  {layer}: done", flush=True)
    print(C.table(rows, ["kernel", "inputs x outputs", "nonzero", "search s", "default s", "time ratio",
                         "search cost", "default cost", "cost change", "depth (search/default)"],
                  "da4ml.cmvm.solve with and without the decomposition-depth search"))
    print(f"total: solver {tot[True][0]:.1f} s with the search, {tot[False][0]:.1f} s without "
          f"({tot[True][0] / tot[False][0]:.2f}x); adder cost {tot[True][1]:.0f} vs {tot[False][1]:.0f} "
          f"({100 * (tot[False][1] - tot[True][1]) / tot[True][1]:+.2f}%)")
    print("figures:", C.write_json(run, {"benchmark": "bench_da4ml_solver", "machine": C.machine(), "kernels": recs,
                                         "totals": {"search": tot[True], "default_depth": tot[False]}}))


if __name__ == "__main__":
    main()
