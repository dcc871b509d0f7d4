"""A compiled, partitioned design: stitched emulation, the uncut reference, verification."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .capture import to_channels_first, to_channels_last
from .errors import FxsplitError
from .flows.hls4ml import CSim
from .ir import Partitioning


@dataclass
class Mismatch:
    sample: int
    output: str          # output port name
    index: int           # flat element index (channels-last)
    got: float
    expected: float


@dataclass
class VerifyResult:
    level: str
    n_samples: int
    bit_exact: bool
    mismatches: int                      # number of differing output elements
    max_abs_error_vs_torch: float        # stitched design vs PyTorch float, reported not hidden
    details: list[Mismatch] = field(default_factory=list)   # first mismatches (at most 100)
    extra: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.bit_exact

    def to_dict(self) -> dict:
        """JSON-able, for the report (at most the first 10 mismatches)."""
        return {"level": self.level, "n_samples": self.n_samples, "bit_exact": self.bit_exact,
                "mismatches": self.mismatches, "max_abs_error_vs_torch": self.max_abs_error_vs_torch,
                "summary": self.summary(), "first_mismatches": [m.__dict__ for m in self.details[:10]],
                **({"extra": self.extra} if self.extra else {})}

    def summary(self) -> str:
        state = "bit-exact" if self.bit_exact else f"{self.mismatches} mismatching elements"
        return (f"{self.level}: {self.n_samples} samples, {state}; max |design - torch float| = "
                f"{self.max_abs_error_vs_torch:.4g}")


class Design:
    """Returned by :func:`fxsplit.compile`."""

    def __init__(self, partitioning: Partitioning, flow: str, output_dir: str, csims: dict[str, CSim],
                 monolithic: CSim, build=None, report: dict | None = None, rtl=None):
        self.partitioning = partitioning
        self.flow = flow
        self.output_dir = output_dir
        self._csims = csims
        self._mono = monolithic
        self.build = build
        self.report = report or {}
        self.rtl = rtl

    @property
    def partitions(self):
        return self.partitioning.partitions

    # -- input/output layout: users speak PyTorch (channels-first), ports are channels-last
    def _inputs(self, x) -> list[np.ndarray]:
        ports = self.partitioning.inputs
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(ports):
            raise FxsplitError(f"the model has {len(ports)} input(s), got {len(xs)} array(s)")
        out = []
        for arr, port in zip(xs, ports):
            arr = np.asarray(arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else arr, dtype=np.float64)
            if arr.shape == port.torch_shape:
                arr = arr[None]
            if arr.shape[1:] != port.torch_shape:
                raise FxsplitError(f"input {port.name!r} must have shape (N, {', '.join(map(str, port.torch_shape))}) "
                                   f"(PyTorch layout), got {arr.shape}")
            out.append(to_channels_last(arr, len(port.torch_shape)))
        return out

    def _outputs(self, env: dict[str, np.ndarray], n: int):
        outs = []
        for port in self.partitioning.outputs:
            y = env[port.name].reshape(n, *port.shape)
            outs.append(to_channels_first(y, len(port.torch_shape)))
        return outs[0] if len(outs) == 1 else outs

    def port_values(self, x) -> dict[str, np.ndarray]:
        """Every port's value (channels-last, (N, *Port.shape)) of the stitched emulation."""
        xs = self._inputs(x)
        n = xs[0].shape[0]
        env = {p.name: a for p, a in zip(self.partitioning.inputs, xs)}
        for part in self.partitioning.partitions:
            ys = self._csims[part.name]([env[p.name] for p in part.inputs])
            for port, y in zip(part.outputs, ys):
                env[port.name] = y.reshape(n, *port.shape)
        return env

    def predict(self, x):
        """Stitched, bit-accurate emulation: the compiled partitions chained along the DAG."""
        xs = self._inputs(x)
        return self._outputs(self.port_values(x), xs[0].shape[0])

    def predict_monolithic(self, x):
        """The same model uncut, with the same numerics: the reference for equivalence."""
        if self._mono is None:
            raise FxsplitError("this design was compiled with reference=False: no uncut C simulation",
                               hint="compile again with reference=True (the default)")
        xs = self._inputs(x)
        n = xs[0].shape[0]
        ys = self._mono(xs)
        env = {p.name: y for p, y in zip(self.partitioning.outputs, ys)}
        return self._outputs(env, n)

    def predict_torch(self, x):
        xs = [torch.as_tensor(to_channels_first(a, len(p.torch_shape)), dtype=torch.float32)
              for a, p in zip(self._inputs(x), self.partitioning.inputs)]
        with torch.no_grad():
            y = self.partitioning.graph(*xs)
        ys = y if isinstance(y, (tuple, list)) else [y]
        ys = [t.numpy().astype(np.float64) for t in ys]
        return ys[0] if len(ys) == 1 else ys

    def verify(self, x, level: str = "csim", simulator: str | None = None) -> VerifyResult:
        """Partitioned == uncut, bit for bit. level='csim' (stitched vs monolithic C simulation)
        or 'rtl' (stitched RTL simulation vs stitched C simulation vs monolithic; ``simulator``
        'verilator' (default) or 'icarus'). The result is recorded in ``report["verification"]``
        and the report files in ``output_dir`` are rewritten."""
        if level == "rtl":
            if self.rtl is None:
                raise FxsplitError("verify(level='rtl') needs a design compiled with flow='rtl'",
                                   hint="fxsplit.compile(..., flow='rtl')")
            res = self.rtl.verify(self, x, **({"simulator": simulator} if simulator else {}))
            if self.report:
                from .summary import stitched_update
                stitched_update(self.report, self.rtl)
        elif level != "csim":
            raise FxsplitError(f"unknown verification level {level!r}", hint="use 'csim' or 'rtl'")
        else:
            got = _as_list(self.predict(x))
            ref = _as_list(self.predict_monolithic(x))
            res = compare(level, got, ref, [p.name for p in self.partitioning.outputs],
                          torch_err(got, _as_list(self.predict_torch(x))))
        self.report["verification"] = res.to_dict()
        self.write_report()
        return res

    def write_report(self):
        """(Re)write ``output_dir/report.json`` and ``report.html``; returns their paths."""
        from .report import write_report
        if not self.report:
            return None
        return write_report(self.report, self.output_dir)

    def __repr__(self) -> str:
        return f"Design(flow={self.flow!r}, partitions={[p.name for p in self.partitions]}, output_dir={self.output_dir!r})"


def _as_list(y):
    return list(y) if isinstance(y, list) else [y]


def torch_err(got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    return float(max(np.max(np.abs(g - r)) if g.size else 0.0 for g, r in zip(got, ref)))


def compare(level: str, got: list[np.ndarray], ref: list[np.ndarray], names: list[str], err_torch: float,
            extra: dict | None = None) -> VerifyResult:
    n = got[0].shape[0]
    details, total = [], 0
    for name, g, r in zip(names, got, ref):
        g2, r2 = g.reshape(n, -1), r.reshape(n, -1)
        diff = np.argwhere(g2 != r2)
        total += len(diff)
        for s, i in diff[: max(0, 100 - len(details))]:
            details.append(Mismatch(int(s), name, int(i), float(g2[s, i]), float(r2[s, i])))
    return VerifyResult(level, n, total == 0, total, err_torch, details, extra or {})
