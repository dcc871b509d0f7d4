"""A compiled, partitioned design: stitched emulation, the uncut reference, verification."""

from __future__ import annotations

import math

import numpy as np
import torch

from .frontend.capture import eval_mode, output_arrays, to_channels_first, to_channels_last
from .errors import FxsplitError
from .fixed import raw_to_float, words_to_float, words_to_raw
from .flows.hls4ml.csim import CSim, run_stitched
from .ir import Partitioning
from .verify import VerifyResult, as_list, compare, outputs_at_limits, torch_err  # noqa: F401  (VerifyResult: re-exported)


class Design:
    """Returned by :func:`fxsplit.compile`: the partitions' C simulations chained along the DAG (``predict``), the
    uncut reference (``predict_monolithic``), the float model (``predict_torch``), ``verify`` and the ``report``.

    Every method that takes inputs raises :class:`FxsplitError` for a wrong number of inputs, a wrong shape, or
    values that are not finite (naming the port, the sample and the element)."""

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
            if self.partitioning.float32_inputs:     # brevitas reads float32: the design reads the same values
                arr = arr.astype(np.float32).astype(np.float64)
            if arr.shape == port.torch_shape:
                arr = arr[None]
            if arr.shape[1:] != port.torch_shape:
                raise FxsplitError(f"input {port.name!r} must have shape (N, {', '.join(map(str, port.torch_shape))}) "
                                   f"(PyTorch layout), got {arr.shape}")
            bad = np.argwhere(~np.isfinite(arr.reshape(arr.shape[0], -1)))
            if len(bad):
                s, i = (int(v) for v in bad[0])
                idx = np.unravel_index(i, port.torch_shape)
                raise FxsplitError(f"input {port.name!r} holds {len(bad)} value(s) that are not finite, the first "
                                   f"{arr.reshape(arr.shape[0], -1)[s, i]} in sample {s} at element "
                                   f"{tuple(int(k) for k in idx)} (PyTorch layout): a fixed-point design has no NaN "
                                   "or infinity, and its comparison with PyTorch would mean nothing",
                                   hint="pass finite inputs (np.nan_to_num clips them into range)")
            out.append(self._to_ports(arr, port))
        return out

    def stress_inputs(self, n: int, seed: int = 0):
        """``n`` input samples (PyTorch layout; an array, or a list for several inputs) that exercise what a design
        can get wrong: the first half spans each input type's whole raw range, an eighth of its elements at the
        type's minimum and an eighth at its maximum (results and accumulators wrap and saturate); the second half
        is uniform in [-4, 4), a quarter of its elements midway between two values of the input type (rounding
        ties). Deterministic in ``seed``.

        Returns:
            An array ``(n, *input_shape)`` (PyTorch layout), or a list of them for several inputs.

        Raises:
            FxsplitError: ``n`` is not a positive integer, or an input's type is not fixed point."""
        from .fixed import parse_type
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise FxsplitError(f"stress_inputs needs a positive number of samples, got {n!r}")
        rng = np.random.default_rng(seed)
        half = (n + 1) // 2
        xs = []
        for port in self.partitioning.inputs:
            shape = port.torch_shape
            try:
                t = parse_type(port.precision)
            except ValueError as e:
                raise FxsplitError(f"input {port.name!r} has type {port.precision!r}, which is not fixed point: "
                                   "fxsplit cannot draw inputs over its range") from e
            lo, hi = t.raw_range()
            full = (rng.integers(lo, hi, size=(half, *shape), endpoint=True, dtype=np.int64).astype(np.float64)
                    if t.width <= 62 else rng.uniform(lo, hi, size=(half, *shape)))
            pick = rng.random(full.shape)
            full[pick < 0.125] = lo
            full[pick > 0.875] = hi
            full = np.ldexp(full, -t.frac)
            wide = rng.uniform(-4.0, 4.0, size=(n - half, *shape))
            ties = rng.random(wide.shape) < 0.25
            lsb = math.ldexp(1.0, -t.frac)
            wide[ties] = (np.floor(wide[ties] / lsb) + 0.5) * lsb
            xs.append(np.concatenate([full, wide]))
        return xs[0] if len(xs) == 1 else xs

    def _to_ports(self, arr: np.ndarray, port) -> np.ndarray:
        """PyTorch layout -> the port's layout (channels-last unless ChannelsLastConversion='off')."""
        return to_channels_last(arr, len(port.torch_shape)) if self.partitioning.channels_last else arr

    def _to_torch(self, arr: np.ndarray, port) -> np.ndarray:
        return to_channels_first(arr, len(port.torch_shape)) if self.partitioning.channels_last else arr

    def _outputs(self, env: dict[str, np.ndarray], n: int):
        """Float outputs from the raw words of the output ports: in PyTorch's layout, or, for a user's
        hls_config with TransposeOutputs=False (hls4ml's default), channels-last as plain hls4ml returns them."""
        outs = []
        for port in self.partitioning.outputs:
            y = words_to_float(env[port.name], port.precision).reshape(n, *port.shape)
            outs.append(self._to_torch(y, port) if self.partitioning.outputs_torch_layout else y)
        return outs[0] if len(outs) == 1 else outs

    def port_values(self, x) -> dict[str, np.ndarray]:
        """Every port's value (channels-last, (N, *Port.shape)) of the stitched emulation, as floats
        (exact up to 53 bits; see :meth:`port_raw` for the exact integers at any width)."""
        xs = self._inputs(x)
        n = xs[0].shape[0]
        ports = self.partitioning.ports()
        return {name: words_to_float(w, ports[name].precision).reshape(n, *ports[name].shape)
                for name, w in self._stitched(xs).items()}

    def port_raw(self, x) -> dict[str, np.ndarray]:
        """Every port's raw integers (value = raw * 2**-F of the port's type), (N, size): exact at any width."""
        ports = self.partitioning.ports()
        return {name: words_to_raw(w, ports[name].precision) for name, w in self._stitched(self._inputs(x)).items()}

    def _stitched(self, xs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Raw words of every port (:func:`fxsplit.flows.hls4ml.csim.run_stitched`)."""
        return run_stitched(self.partitioning, self._csims, xs)

    def predict(self, x):
        """Stitched, bit-accurate emulation: the compiled partitions chained along the DAG.

        Args:
            x: input samples in PyTorch's layout, ``(N, *input_shape)`` (or one sample without the batch dimension);
                a list of arrays for several inputs. NumPy arrays or tensors.

        Returns:
            The outputs as floats (exactly the fixed-point values), in PyTorch's layout (channels-last as plain
            hls4ml returns them for a user's ``hls_config`` without ``TransposeOutputs``); a list for several."""
        xs = self._inputs(x)
        return self._outputs(self._stitched(xs), xs[0].shape[0])

    def _monolithic(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """Raw words of the uncut C simulation's outputs."""
        if self._mono is None:
            raise FxsplitError("this design was compiled with reference=False: no uncut C simulation",
                               hint="compile again with reference=True (the default)")
        return self._mono.run([self._mono.quantize(k, a) for k, a in enumerate(xs)])

    def predict_monolithic(self, x):
        """The same model uncut, with the same numerics: the reference for equivalence.

        Args:
            x: input samples in PyTorch's layout, ``(N, *input_shape)`` (or one sample without the batch dimension);
                a list of arrays for several inputs. NumPy arrays or tensors.

        Returns:
            As :meth:`predict`.

        Raises:
            FxsplitError: the design was compiled with ``reference=False``."""
        xs = self._inputs(x)
        n = xs[0].shape[0]
        ys = self._monolithic(xs)
        env = {p.name: y for p, y in zip(self.partitioning.outputs, ys)}
        return self._outputs(env, n)

    def predict_torch(self, x):
        """The PyTorch float model (markers erased) on the same inputs."""
        return self._torch(self._inputs(x))

    def _torch(self, xs: list[np.ndarray]):
        xs = [torch.as_tensor(self._to_torch(a, p), dtype=torch.float32)
              for a, p in zip(xs, self.partitioning.inputs)]
        with eval_mode(self.partitioning.uncut) as g, torch.no_grad():
            ys = output_arrays(g(*xs))
        return ys[0] if len(ys) == 1 else ys

    def verify(self, x, level: str = "csim", simulator: str | None = None, interface: str | None = None,
               **stream) -> VerifyResult:
        """Partitioned == uncut, bit for bit, on every output element of every sample.

        Args:
            x: input samples in PyTorch's layout, ``(N, *input_shape)`` (or one sample without the batch dimension);
                a list of arrays for several inputs. NumPy arrays or tensors.
            level: a verification level of the design's flow (``Flow.verify_levels``): ``"csim"`` (stitched vs uncut
                C simulation, every flow) or ``"rtl"`` (flow ``"rtl"``: the stitched RTL simulated, equal to the
                stitched C simulation, equal to the uncut one).
            simulator: ``level="rtl"``: ``"verilator"`` (default) or ``"icarus"``.
            interface: ``level="rtl"`` of a fully parallel design: ``"pipeline"`` (default; one sample per cycle)
                or ``"axis"``: the stream-stitched top under random input gaps and output backpressure (``gaps=0.3,
                backpressure=0.3, seed=1``). A streaming design (``io_type="io_stream"``) has the AXI4-Stream top
                only: it runs under gaps and backpressure, then free running for its latency and interval.

        Returns:
            A :class:`VerifyResult`: true when bit-exact (``bool(result)``), with the mismatches, the outputs at
            their type's limits and the error against the float model. It is recorded in
            ``report["verification"]`` and the report files in ``output_dir`` are rewritten.

        Raises:
            FxsplitError: an unknown level, a level the design's flow does not have, stream options without
                ``level="rtl"``, or inputs as above; a missing simulator."""
        from .flows import flow_names, get_flow
        levels = {n: get_flow(n).verify_levels for n in flow_names()}
        known = sorted({lv for ls in levels.values() for lv in ls})
        if level not in known:
            raise FxsplitError(f"unknown verification level {level!r}", hint=f"use one of {known}")
        if level != "rtl" and (interface is not None or stream):
            raise FxsplitError("interface and stream options apply to verify(level='rtl')")
        if level not in levels.get(self.flow, ()) or (level == "rtl" and self.rtl is None):
            having = [n for n, ls in levels.items() if level in ls]
            raise FxsplitError(f"verify(level={level!r}) needs a design compiled with "
                               f"{' or '.join(f'flow={n!r}' for n in having)}",
                               hint=f"fxsplit.compile(..., flow={having[0]!r})")
        xs = self._inputs(x)
        n = xs[0].shape[0]
        env = self._stitched(xs)
        outs = self.partitioning.outputs
        got = [words_to_raw(env[p.name], p.precision) for p in outs]            # exact, any width
        ref = [words_to_raw(y, p.precision) for y, p in zip(self._monolithic(xs), outs)]
        decode = [lambda r, p=p: raw_to_float(r, p.precision) for p in outs]
        torch_out = [self._to_ports(t, p).reshape(n, -1)
                     for t, p in zip(as_list(self._torch(xs)), outs)]
        err = torch_err([d(g) for d, g in zip(decode, got)], torch_out)
        if level == "rtl":
            raw_in = [words_to_raw(env[p.name], p.precision) for p in self.partitioning.inputs]
            res = self.rtl.verify(raw_in, self.partitioning.inputs, outs, got, ref, decode, err,
                                  **({"simulator": simulator} if simulator else {}), interface=interface, **stream)
            if self.report:
                from .report.summary import stitched_update
                stitched_update(self.report, self.rtl)
        else:
            res = compare(level, got, ref, [p.name for p in outs], err, decode=decode)
        res.at_limits = outputs_at_limits(got, outs)
        if self.partitioning.exact_graph is not None:
            res.reading_mismatches = self._reading_mismatches(env, got, decode, n)
        if self.partitioning.torch_exact is not None:
            res.torch_exact = self.partitioning.torch_exact
            res.torch_mismatches = sum(int(np.sum(d(g).reshape(n, -1) != t))
                                       for d, g, t in zip(decode, got, torch_out))
        self.report["verification"] = res.to_dict()
        self.write_report()
        return res

    def _reading_mismatches(self, env: dict, got: list[np.ndarray], decode: list, n: int) -> int:
        """A brevitas model: the output elements where the design (``got``) differs from fxsplit's exact reading of
        the model (``Partitioning.exact_graph``, float64), fed the design's own input values."""
        pt = self.partitioning
        xs = [torch.as_tensor(self._to_torch(words_to_float(env[p.name], p.precision).reshape(n, *p.shape), p),
                              dtype=torch.float64) for p in pt.inputs]
        with torch.no_grad():
            ys = output_arrays(pt.exact_graph(*xs))
        return sum(int(np.sum(d(g).reshape(n, -1) != self._to_ports(y, p).reshape(n, -1)))
                   for d, g, y, p in zip(decode, got, ys, pt.outputs))

    def export_onnx(self, out_dir=None, samples: int = 16, seed: int = 0) -> dict:
        """Every partition (``<partition>.onnx``) and the uncut model (``monolithic.onnx``) as QONNX, written by
        brevitas' exporter into ``out_dir`` (default ``output_dir/onnx``), each run by qonnx's executor on
        ``samples`` random inputs and checked against the module in PyTorch and, for a brevitas model with exact
        arithmetic, against the design bit for bit (:mod:`fxsplit.lower.brevitas.qonnx`). Recorded in ``report["onnx"]``."""
        from .lower.brevitas.qonnx import export_onnx
        import os
        res = export_onnx(self, out_dir or os.path.join(self.output_dir, "onnx"), samples=samples, seed=seed)
        self.report["onnx"] = res
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

