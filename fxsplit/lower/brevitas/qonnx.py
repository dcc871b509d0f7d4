"""``Design.export_onnx(dir)``: every partition and the uncut model as QONNX, each checked by qonnx's executor.

The files come from brevitas' own exporter (``brevitas.export.export_qonnx``): brevitas quantizers become QONNX
``Quant`` nodes, the interchange FINN and hls4ml's ONNX frontend read. A partition whose input crosses a cut gets
the quantizer that produced that tensor at its input (idempotent on the tensor's values), so the file carries the
port's exact type (an exact sum crossing a cut: a fixed-point quantizer of its type; a float-scaled port: its levels
times its scale at the file's input). Every file is executed by qonnx (``qonnx.core.onnx_exec.execute_onnx``) on
inputs taken from the design on random samples, and must give what the module gives in PyTorch and, for a brevitas
model whose arithmetic is exact, the design's own port values bit for bit; a file that does not is an error, not an
export.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ...frontend.capture import eval_mode, output_arrays
from ...errors import FxsplitError
from .grid import ACTS, GRID_MODULES, SAME_GRID_FUNCS, SAME_GRID_MODULES, uses_brevitas

def _fixed_point_quantizer(precision: str, name: str, start: torch.fx.Node):
    """A brevitas quantizer that is the identity on the values of the fixed-point type ``precision`` (a power-of-two
    scale ``2**-frac``, its width and sign): the type of a tensor no quantizer produced (an exact sum), in QONNX."""
    from brevitas.nn import QuantIdentity
    from brevitas.quant import Int8ActPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    from ...fixed import layout
    lay = layout(precision)
    if lay.width > 24:
        raise FxsplitError(f"the tensor {name!r} crosses a cut as the exact output of {start.target!r} in a "
                           f"{lay.width}-bit type: float32, which a QONNX file's inputs hold, does not hold it exactly",
                           module=str(start.target), hint="cut after the quantizer that follows that layer to export "
                                                          "the partitions as QONNX")
    integer = lay.width - lay.frac
    top = 2.0 ** (integer - 1) if lay.signed else 2.0 ** integer
    q = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint if lay.signed else Uint8ActPerTensorFixedPoint,
                      bit_width=lay.width, scaling_impl_type="const", scaling_const=top, min_val=-top, max_val=top,
                      return_quant_tensor=False).eval()
    if float(q.act_quant.scale()) != 2.0 ** -lay.frac:
        raise FxsplitError(f"internal: brevitas' quantizer for {precision} has scale {float(q.act_quant.scale())!r}",
                           module=str(start.target), hint="please report this model")
    return q


def _quantizer_of(gm: torch.fx.GraphModule, name: str, precision: str | None = None, scaled: bool = False):
    """The brevitas quantizer module whose grid the tensor ``name`` is on (walking back through reshapes, pooling,
    ReLU and dropout), or None for a float tensor of a float model. An exact sum (no quantizer produced it) gets a
    quantizer of its fixed-point type ``precision``; refused where that tensor carries a float scale."""
    node = next(n for n in gm.graph.nodes if n.name == name)
    start = node
    while True:
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            cls = type(m).__name__
            if cls in ACTS:
                return m
            if cls not in SAME_GRID_MODULES | GRID_MODULES:
                break
        elif node.op in ("call_function", "call_method"):
            fn = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
            if fn not in SAME_GRID_FUNCS:
                break
        else:
            break
        node = node.all_input_nodes[0]
    if not uses_brevitas(gm):
        return None
    if precision is not None and not scaled:
        return _fixed_point_quantizer(precision, name, start)
    raise FxsplitError(f"the tensor {name!r} crosses a cut as the exact output of {start.target!r}, integers times a "
                       "float scale: a standalone QONNX file of the partition that reads it has no quantizer to carry "
                       "its type", module=str(start.target),
                       hint="cut after the quantizer that follows that layer to export the partitions as QONNX")


class _WithInputQuant(torch.nn.Module):
    """A partition with the producer's quantizer on each input that crosses a cut."""

    def __init__(self, module: torch.nn.Module, quants: list):
        super().__init__()
        self.module = module
        self.quants = torch.nn.ModuleList([q if q is not None else torch.nn.Identity() for q in quants])

    def forward(self, *xs):
        return self.module(*[q(x) for q, x in zip(self.quants, xs)])


def _export_and_check(module, xs: list[torch.Tensor], expected: list[np.ndarray] | None, path: Path,
                      what: str) -> dict:
    """Export ``module`` on inputs ``xs`` to ``path``, run the file through qonnx's executor, and compare with
    ``module`` in PyTorch (float tolerance) and with ``expected`` (the design's values: bit for bit)."""
    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    log = io.StringIO()
    # in eval mode, as traced; the user's modules (shared with the partitions) keep their own flags afterwards
    with eval_mode(module), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        with torch.no_grad():
            ref = output_arrays(module(*xs))
        try:
            export_qonnx(module, input_t=tuple(xs) if len(xs) > 1 else xs[0], export_path=str(path))
        except Exception as e:
            raise FxsplitError(f"brevitas could not export {what} as QONNX: {type(e).__name__}: {e}",
                               hint="see brevitas.export.export_qonnx; the rest of the design is unaffected") from e
        model = cleanup_model(ModelWrapper(str(path)))
    model.save(str(path))
    feeds = {i.name: x.numpy() for i, x in zip(model.graph.input, xs)}
    outs = execute_onnx(model, feeds)
    got = [np.asarray(outs[o.name], dtype=np.float64) for o in model.graph.output]
    if len(got) != len(ref):
        raise FxsplitError(f"the QONNX file of {what} has {len(got)} outputs, the module {len(ref)}")
    err_torch = max(float(np.max(np.abs(g - r))) if g.size else 0.0 for g, r in zip(got, ref))
    scale = max(float(np.max(np.abs(r))) if r.size else 0.0 for r in ref)
    if not err_torch <= 1e-5 * scale + 1e-6:
        raise FxsplitError(f"qonnx's execution of the QONNX file of {what} differs from the module in PyTorch by "
                           f"{err_torch:.3g}: the file does not compute what the partition computes",
                           hint="please report this model")
    exact = None
    if expected is not None:
        exact = all(g.shape == e.shape and np.array_equal(g, e) for g, e in zip(got, expected))
        if not exact:
            bad = sum(int(np.sum(g != e)) for g, e in zip(got, expected) if g.shape == e.shape)
            raise FxsplitError(f"qonnx's execution of the QONNX file of {what} differs from the design in {bad} "
                               "elements, where both should hold brevitas' exact values", hint="please report this model")
    return {"file": str(path), "quant_nodes": [n.op_type for n in model.graph.node].count("Quant"),
            "max_abs_error_vs_torch": err_torch, "equals_design": exact, "samples": int(xs[0].shape[0])}


def export_onnx(design, out_dir, samples: int = 16, seed: int = 0) -> dict:
    """Write ``<out_dir>/<partition>.onnx`` for every partition and ``monolithic.onnx`` for the uncut model, each
    checked by qonnx's executor on ``samples`` random inputs (see the module doc). Returns (and writes to
    ``onnx.json``) what was checked."""
    pt = design.partitioning
    gm = pt.graph
    out = Path(out_dir).expanduser().resolve()
    gen = torch.Generator().manual_seed(seed)
    x_model = [torch.randn((samples, *p.torch_shape), generator=gen) * 3 for p in pt.inputs]
    env = design.port_values(x_model if len(x_model) > 1 else x_model[0])      # channels-last, exact values
    exact = bool(pt.torch_exact)

    def torch_layout(name: str) -> np.ndarray:
        port = pt.ports()[name]
        return design._to_torch(env[name], port)

    def model_values(name: str) -> torch.Tensor:
        """A crossing tensor as the brevitas partition reads it: a float-scaled port's levels times its scale, in
        float32 (the values brevitas' quantizer, put back at the input, sends to the same levels)."""
        v = torch.as_tensor(torch_layout(name), dtype=torch.float64)
        sc = pt.float_scales.get(name)
        if sc is not None:
            s = torch.tensor(sc, dtype=torch.float64)
            v = v * (s.reshape((1, -1) + (1,) * (v.dim() - 2)) if s.numel() > 1 else s.reshape(()))
        return v.to(torch.float32)

    # validate every partition before writing anything
    quants = {part.name: [None if p.name in [q.name for q in pt.inputs] else
                          _quantizer_of(gm, p.name, p.precision, p.name in pt.float_scales)
                          for p in part.inputs] for part in pt.partitions}
    out.mkdir(parents=True, exist_ok=True)
    result = {"dir": str(out), "partitions": {}, "exact": exact}
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        model_inputs = [q.name for q in pt.inputs]
        for part in pt.partitions:
            xs = [x_model[model_inputs.index(p.name)] if p.name in model_inputs else model_values(p.name)
                  for p in part.inputs]
            expected = [torch_layout(p.name) for p in part.outputs] if exact else None
            wrapped = _WithInputQuant(part.module, quants[part.name])
            result["partitions"][part.name] = _export_and_check(wrapped, xs, expected, Path(tmp) / f"{part.name}.onnx",
                                                                f"partition {part.name!r}")
        expected = [torch_layout(p.name) for p in pt.outputs] if exact else None
        result["monolithic"] = _export_and_check(gm, x_model, expected, Path(tmp) / "monolithic.onnx",
                                                 "the uncut model")
        for name in [*(p.name for p in pt.partitions), "monolithic"]:
            os.replace(Path(tmp) / f"{name}.onnx", out / f"{name}.onnx")
    for r in [*result["partitions"].values(), result["monolithic"]]:
        r["file"] = str(out / Path(r["file"]).name)
    (out / "onnx.json").write_text(json.dumps(result, indent=2))
    return result
