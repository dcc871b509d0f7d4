"""Comparison, shared by every flow and level: exact element-wise equality and its report.

Flows return :class:`VerifyResult` built with :func:`compare`; they never call back into ``Design``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Mismatch:
    """One differing output element, wherever it was found (a comparison of C simulations, an RTL testbench)."""
    sample: int
    output: str          # output port name (a testbench's own result: its Verilog name)
    index: int           # flat element index (channels-last)
    got: float | int     # the value (a testbench's own result: the raw integer of the port's type)
    expected: float | int


@dataclass
class VerifyResult:
    level: str
    n_samples: int
    bit_exact: bool
    mismatches: int                      # number of differing output elements
    max_abs_error_vs_torch: float        # stitched design vs PyTorch float, reported not hidden
    details: list[Mismatch] = field(default_factory=list)   # first mismatches (at most 100)
    extra: dict[str, Any] = field(default_factory=dict)
    # brevitas models: whether their own PyTorch output is exact (then the design must equal it bit for bit), and
    # how many output elements of the design differ from it (None: a float model, nothing claimed)
    torch_exact: bool | None = None
    torch_mismatches: int | None = None
    # output port -> {"min": elements at the type's minimum, "max": at its maximum, "of": elements compared}:
    # how much of the sample reached saturation or wrap limits (an all-zero count says the inputs never did)
    at_limits: dict[str, dict[str, int]] = field(default_factory=dict)
    # brevitas models: output elements where the design differs from fxsplit's exact reading of the model (every
    # brevitas layer as the exact fixed-point map fxsplit derived and checked against brevitas, run in float64):
    # must be 0 (else hls4ml computes something other than what fxsplit read)
    reading_mismatches: int | None = None

    @property
    def matches_torch(self) -> bool | None:
        """brevitas model with an exact PyTorch output: the design equals it element for element."""
        if not self.torch_exact:
            return None
        return self.torch_mismatches == 0

    def __bool__(self) -> bool:
        """Passed: the one rule behind ``bool()``, the CLI's exit code, its terminal line and the report's verdict
        (:func:`passed`)."""
        return passed(self.to_dict())

    def failure(self) -> str | None:
        """Why the verification failed, in one sentence; None when it passed."""
        return failure(self.to_dict())

    def to_dict(self) -> dict:
        """JSON-able, for the report (at most the first 10 mismatches)."""
        return {"level": self.level, "n_samples": self.n_samples, "bit_exact": self.bit_exact,
                "passed": self.bit_exact and self.matches_torch is not False and not self.reading_mismatches,
                "mismatches": self.mismatches, "max_abs_error_vs_torch": self.max_abs_error_vs_torch,
                "summary": self.summary(), "first_mismatches": [m.__dict__ for m in self.details[:10]],
                **({"torch_exact": self.torch_exact, "torch_mismatches": self.torch_mismatches,
                    "matches_torch": self.matches_torch} if self.torch_exact is not None else {}),
                **({"at_limits": self.at_limits} if self.at_limits else {}),
                **({"reading_mismatches": self.reading_mismatches} if self.reading_mismatches is not None else {}),
                **({"extra": self.extra} if self.extra else {})}

    def summary(self) -> str:
        state = "bit-exact" if self.bit_exact else f"{self.mismatches} mismatching elements"
        text = (f"{self.level}: {self.n_samples} samples, {state}; max |design - torch float| = "
                f"{self.max_abs_error_vs_torch:.4g}")
        if self.at_limits:
            lo = sum(v["min"] for v in self.at_limits.values())
            hi = sum(v["max"] for v in self.at_limits.values())
            of = sum(v["of"] for v in self.at_limits.values())
            text += f"; output elements at their type's minimum {lo}, maximum {hi} (of {of})"
        if self.reading_mismatches is not None:
            text += ("; equals fxsplit's exact reading of the brevitas layers" if not self.reading_mismatches else
                     f"; {self.reading_mismatches} elements differ from fxsplit's exact reading of the brevitas layers")
        if self.torch_exact:
            text += ("; equals the brevitas model bit for bit" if self.matches_torch else
                     f"; {self.torch_mismatches} elements differ from the brevitas model")
        elif self.torch_exact is False:
            text += "; brevitas rounds in float32 (a sum past 24 bits or a float layer), so only the error is reported"
        return text


def outputs_at_limits(raw: list[np.ndarray], ports) -> dict[str, dict[str, int]]:
    """Per output port, how many elements of ``raw`` (raw integers) sit at the minimum or maximum of the port's type."""
    from .fixed import parse_type
    out = {}
    for r, p in zip(raw, ports):
        lo, hi = parse_type(p.precision).raw_range()
        out[p.name] = {"min": int(np.sum(r == lo)), "max": int(np.sum(r == hi)), "of": int(np.asarray(r).size)}
    return out


def failure(ver: dict) -> str | None:
    """Why a verification result (``VerifyResult.to_dict()``, as stored in ``report.json``) failed, or None.

    It fails when the stitched design differs from the uncut reference (at its level: C simulation, or RTL vs both
    C simulations), or, for a brevitas model whose own arithmetic is exact (every sum within float32's 24 bits), when
    the design differs from the brevitas model's output in any element, or for any brevitas model, when it differs
    from fxsplit's exact reading of the model. Where brevitas rounds in float32, the error against it is reported,
    not checked."""
    if not ver.get("bit_exact"):
        return f"the partitioned design is not bit-exact ({ver.get('mismatches')} differing elements)"
    if ver.get("reading_mismatches"):
        return (f"{ver['reading_mismatches']} output elements differ from fxsplit's exact reading of the brevitas "
                "model: hls4ml computes something other than the layers fxsplit read (please report this model)")
    if ver.get("torch_exact") and ver.get("torch_mismatches") != 0:
        return (f"{ver.get('torch_mismatches')} output elements differ from the brevitas model, whose own arithmetic "
                "is exact here")
    return None


def passed(ver: dict) -> bool:
    """The verdict of a verification result (dict form): see :func:`failure`."""
    return failure(ver) is None


def as_list(y) -> list:
    return list(y) if isinstance(y, list) else [y]


def torch_err(got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    return float(max(np.max(np.abs(g - r)) if g.size else 0.0 for g, r in zip(got, ref)))


def compare(level: str, got: list[np.ndarray], ref: list[np.ndarray], names: list[str], err_torch: float,
            extra: dict | None = None, decode: list | None = None) -> VerifyResult:
    """Exact comparison of ``got`` against ``ref`` (one (N, ...) array per output port, usually raw
    integers); ``decode[i]`` turns output ``i``'s values into floats for the mismatch details."""
    n = got[0].shape[0]
    details, total = [], 0
    for name, g, r in zip(names, got, ref):
        g2, r2 = g.reshape(n, -1), r.reshape(n, -1)
        if g2.shape != r2.shape:
            raise ValueError(f"output {name!r}: shapes {g.shape} and {r.shape} differ")
        diff = np.argwhere(g2 != r2)
        total += len(diff)
        dec = decode[names.index(name)] if decode else (lambda v: v)
        for s, i in diff[: max(0, 100 - len(details))]:
            details.append(Mismatch(int(s), name, int(i), float(dec(np.array([g2[s, i]]))[0]),
                                    float(dec(np.array([r2[s, i]]))[0])))
    return VerifyResult(level, n, total == 0, total, err_torch, details, extra or {})
