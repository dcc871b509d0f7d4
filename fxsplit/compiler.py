"""``fxsplit.compile``: validate everything, then build every partition in parallel."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from torch import nn

from .errors import FxsplitError
from .flows import get_flow
from .ir import Partitioning
from .lower import hls4ml_layer_names, lower, normalize_config
from .lower.convert import accumulator_changes, nonzero_weights
from .plan.autosplit import plan_auto
from .plan.costmodel import CostModel, annotate, partition_features, weight_types
from .report.summary import build_report


def _resolve_output_dir(output_dir, model: nn.Module) -> Path:
    if output_dir is None:
        output_dir = Path("fxsplit_out") / type(model).__name__
    out = Path(output_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise FxsplitError(f"output_dir {str(out)!r} exists and is not a directory")
    return out


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}
# without memory=: this fraction of the memory available when the build starts (the rest: the main process,
# the workers' idle memory, what else the machine runs, and the model's error)
DEFAULT_MEMORY_FRACTION = 0.8


def memory_budget(memory) -> int | None:
    """``compile``'s ``memory=``: bytes (int), a size ("16GiB", "500M", "1.5GB"), "off" (no budget) or None
    (the default: :data:`DEFAULT_MEMORY_FRACTION` of the memory available now)."""
    import re
    if memory is None:
        import psutil
        return int(psutil.virtual_memory().available * DEFAULT_MEMORY_FRACTION)
    if isinstance(memory, str) and memory.strip().lower() in ("off", "none", "unlimited"):
        return None
    if isinstance(memory, (int, float)) and not isinstance(memory, bool) and memory > 0:
        return int(memory)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", memory) if isinstance(memory, str) else None
    if m is None or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise FxsplitError(f"memory={memory!r} is not a memory size",
                           hint="give bytes, or a size like '16GiB', '500MB', '1.5G'; 'off' for no budget")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass
class CompileOptions:
    """Everything :func:`compile` takes besides the model, by the same names; the CLI fills one too
    (:meth:`from_mapping`). :meth:`check` validates them all before anything is traced or written."""
    input_shape: Any
    splits: Any = None
    flow: str = "hls4ml"
    config: dict | None = None
    output_dir: Any = None
    jobs: int | None = None
    executor: Any = None
    progress: bool | None = None
    cache_dir: Any = None
    reference: bool = True
    hls_config: dict | None = None
    emit_only: bool = False
    workers: int | None = None
    memory: Any = None
    max_job_memory: Any = None
    compare_monolithic: bool = False
    split_layers: bool | None = None

    @classmethod
    def from_mapping(cls, values: dict, **overrides) -> "CompileOptions":
        """The options named in ``values`` (other keys are ignored), then ``overrides``."""
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in names}, **overrides})

    @property
    def auto(self) -> bool:
        return isinstance(self.splits, str) and self.splits == "auto"

    def check(self) -> None:
        """Refuse inconsistent options (an :class:`FxsplitError` naming the option and what to do)."""
        flow = get_flow(self.flow)
        if self.emit_only and "emit_only" not in flow.options:
            raise FxsplitError(f"emit_only applies to flow='vitis' only (the {self.flow} flow runs end to end here)")
        if self.jobs is not None and (isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1):
            raise FxsplitError(f"jobs must be a positive integer, got {self.jobs!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise FxsplitError(f"workers must be a positive integer, got {self.workers!r}")
        if self.workers is not None and not self.auto:
            raise FxsplitError("workers= sizes an automatic split; it applies to splits='auto' only",
                               hint="the build's parallelism is jobs= (or the executor)")
        if self.split_layers is not None and (not self.auto or not isinstance(self.split_layers, bool)):
            raise FxsplitError("split_layers= (True/False) says whether splits='auto' may cut inside a layer; it "
                               "applies to splits='auto' only",
                               hint="to cut inside a layer yourself, give splits=['<layer>@<output>']")
        if self.max_job_memory is not None:
            if not self.auto:
                raise FxsplitError("max_job_memory= limits the jobs of an automatic split; it applies to "
                                   "splits='auto' only", hint="for a budget of the whole build, use memory=")
            if isinstance(self.max_job_memory, str) and self.max_job_memory.strip().lower() in ("off", "none",
                                                                                                "unlimited"):
                raise FxsplitError(f"max_job_memory={self.max_job_memory!r} is not a memory size",
                                   hint="give bytes or a size like '4GiB'")
            memory_budget(self.max_job_memory)
        memory_budget(self.memory)
        if self.auto and (self.config or {}).get("partitions"):
            raise FxsplitError("config['partitions'] sets options per partition, but with splits='auto' fxsplit "
                               "chooses the partitions: an override would silently cover only part of the layers "
                               "it was meant for", hint="give those options per layer (config['layers']), or "
                                                        "choose the cuts yourself")

    def flow_options(self) -> dict:
        """The options of the flow alone (``Flow.options``), as its constructor takes them."""
        return {"emit_only": True} if self.emit_only else {}


def compile(model: nn.Module, input_shape, splits=None, flow: str = "hls4ml", config: dict | None = None,
            output_dir=None, jobs: int | None = None, executor=None, progress: bool | None = None,
            cache_dir=None, reference: bool = True, hls_config: dict | None = None, emit_only: bool = False,
            workers: int | None = None, memory=None, max_job_memory=None, compare_monolithic: bool = False,
            split_layers: bool | None = None):
    """Partition ``model``, build every partition (in parallel, cached) and return a :class:`~fxsplit.Design`.

    Everything (options, tracing, cuts, names, config, layer support, types) is validated before any build starts;
    nothing is written before that, and nothing outside ``output_dir`` (and ``cache_dir``).

    Args:
        model: the PyTorch model (float, or brevitas QAT), with its ``fxsplit.Cut`` / ``fxsplit.cut`` markers.
        input_shape: one input's shape without the batch dimension, e.g. ``(3, 32, 32)``; a list of shapes for
            several inputs.
        splits: more cuts besides the markers: module names to cut before (``"layer2.0"``), ``"fc2@32"`` to cut
            inside a Linear before its output 32, or ``"auto"``: the cuts that minimise the predicted build wall on
            ``workers`` workers (default: ``jobs``, else the CPU count), with the cost model fitted from the jobs in
            the cache (:mod:`fxsplit.plan.autosplit`); the report's ``auto_split`` says what it chose and why.
        flow: ``"hls4ml"`` (C simulation), ``"rtl"`` (open RTL: da4ml, Yosys, Verilator) or ``"vitis"`` (Vitis
            HLS and Vivado, which must be on PATH unless ``emit_only``); see :func:`fxsplit.flows.flow_names`.
        config: fxsplit's config (precision, io_type, reuse_factor, synth, csim_opt, part, clock_period, ...;
            with ``hls_config`` only the keys that are not numerics).
        output_dir: where the projects, the stitched design and the report go (default ``fxsplit_out/<Model>``).
        jobs: parallel build jobs (default: the CPU count). executor: a ``concurrent.futures`` executor to run
            them on instead (e.g. a Dask client's ``get_executor()``).
        progress: show the live build display (default: when the terminal is interactive).
        cache_dir: the build cache (default ``output_dir/.cache``); a job whose inputs, code and tools are unchanged
            is reused from it.
        reference: build the uncut C simulation too (the reference of ``predict_monolithic`` and ``verify``).
        hls_config: an hls4ml config dict of the uncut model, as hls4ml users keep it (e.g. from
            ``hls4ml.utils.config_from_pytorch_model(model, input_shape, granularity='name')``, any
            granularity); fxsplit splits it per partition and the stitched design gives plain hls4ml's bits.
        emit_only: ``flow="vitis"`` only: write every project, the DAG description, test vectors and the run
            script for a machine with the tools.
        workers: the workers an automatic split balances for.
        memory: the build's memory budget (bytes, or ``"16GiB"``; default: 80 % of the memory available when the
            build starts; ``"off"``: none). A job starts only if its predicted peak memory fits in what the running
            jobs leave; one predicted above the whole budget runs alone, with a warning. Applies to fxsplit's own
            process pool (not to a caller's executor).
        max_job_memory: with ``splits="auto"``: the cuts also make every partition's jobs predicted to peak under
            it (bytes or ``"4GiB"``).
        compare_monolithic: ``flow="rtl"``: emit and synthesize the uncut design as well; the report's
            ``compare_monolithic`` puts it beside the stitched one (build wall, CPU time, peak memory, resources,
            latency).
        split_layers: with ``splits="auto"``: may the cuts go inside a wide Linear or convolution? None (default):
            as the flow says (the open RTL flow); True: wherever the layer allows it; False: never.

    Returns:
        A :class:`~fxsplit.Design`: ``predict`` (the stitched emulation), ``predict_monolithic``, ``verify``,
        ``report`` (also written to ``output_dir/report.json`` and ``report.html``).

    Raises:
        FxsplitError: an invalid option, model, cut, name or config, or a layer or type the flow cannot build
            exactly (before anything is built: the message names the module, partition and source line and says
            what to do); a failed build (after the report is written, naming the failed jobs and their logs).
    """
    return build(model, CompileOptions(
        input_shape=input_shape, splits=splits, flow=flow, config=config, output_dir=output_dir, jobs=jobs,
        executor=executor, progress=progress, cache_dir=cache_dir, reference=reference, hls_config=hls_config,
        emit_only=emit_only, workers=workers, memory=memory, max_job_memory=max_job_memory,
        compare_monolithic=compare_monolithic, split_layers=split_layers))


def build(model: nn.Module, opts: CompileOptions):
    """:func:`compile` with its options in one :class:`CompileOptions`."""
    from .design import Design
    from .engine import output_dir_lock, run_jobs
    from .frontend.layersplit import copy_graph
    from .frontend.partitioner import partition_graph, trace_eval

    t_start = time.time()
    opts.check()
    flow_cls = get_flow(opts.flow)
    out = _resolve_output_dir(opts.output_dir, model)
    cache = Path(opts.cache_dir).expanduser().resolve() if opts.cache_dir else out / ".cache"
    budget = None if opts.executor is not None else memory_budget(opts.memory)   # a caller's executor places jobs
    jobs = opts.jobs

    def prewarm() -> None:
        # the model traces and cuts: start the build's workers now, so that they import torch and hls4ml while
        # this process lowers every partition (they wait idle, warm, if everything is cached). Only where a core
        # is left for those imports: on 2 cores with 2 workers they slowed the lowering as much as they saved
        # (measured: cold CLI build of the jet tagger 8.7 s either way, no-change rebuild 3.5 -> 4.0 s).
        mode = os.environ.get("FXSPLIT_PREWARM", "auto")
        cpus = os.cpu_count() or 1
        if opts.executor is None and (mode == "1" or (mode == "auto" and cpus > (jobs or cpus))):
            from .engine.executors import prewarm as start_workers
            start_workers(jobs, flow_cls.job_modules)

    # ---- validate (no file written yet): the model is traced once; the plan and the cuts read copies
    traced = trace_eval(model, opts.input_shape)
    names = hls4ml_layer_names(model, traced) if opts.hls_config is not None else None
    plan = None
    costs = CostModel.from_cache(cache)
    mem_model = CostModel.from_cache(cache, target="peak_rss")
    cuts = opts.splits
    if opts.auto:
        pt0: Partitioning = partition_graph(copy_graph(traced), [])
        prewarm()
        fc0 = normalize_config(opts.config, pt0, hls_config=opts.hls_config, hls_names=names,
                               exact_accum_default=flow_cls.exact_accum_default)
        split_layers = (flow_cls.splits_layers_by_default(fc0.io_type) if opts.split_layers is None
                        else opts.split_layers)
        plan = plan_auto(model, opts.input_shape, opts.workers or jobs or os.cpu_count() or 1,
                         precision=fc0.precision, input_precision=fc0.input_precision, flow=opts.flow,
                         synth=fc0.synth, reference=opts.reference, cost_model=costs,
                         max_job_memory=(memory_budget(opts.max_job_memory) if opts.max_job_memory is not None
                                         else None),
                         memory_model=mem_model, split_layers=split_layers,
                         options=flow_cls.run_options(fc0, **opts.flow_options()), traced=traced,
                         types=weight_types(fc0.layer_name))
        cuts = plan.cuts
    frontend: Partitioning = partition_graph(traced, [cuts] if isinstance(cuts, str) else list(cuts or []))
    if not opts.auto:
        prewarm()
    fc = normalize_config(opts.config, frontend, hls_config=opts.hls_config, hls_names=names,
                          exact_accum_default=flow_cls.exact_accum_default)
    flow_cls.configure(opts.config, fc)
    lowered = lower(frontend, fc, str(out))
    pt = lowered.partitioning                        # every port typed and laid out
    nz = nonzero_weights(lowered)                    # (read before the flow's jobs touch the graphs' weights)
    fl = flow_cls(pt, lowered, fc, out, reference=opts.reference, compare_monolithic=opts.compare_monolithic,
                  **opts.flow_options())
    fl.validate()
    job_list = fl.jobs()
    feats = partition_features(pt, fc.precision, fc.input_precision, types=weight_types(fc.layer_name))
    annotate(job_list, feats, costs, flow_cls.steps, memory=mem_model)
    t_validated = time.time()

    # ---- build
    model_name = type(model).__name__
    out.mkdir(parents=True, exist_ok=True)
    with output_dir_lock(out):
        lowered.write_logs(out / "logs")
        result = run_jobs(job_list, cache, executor=opts.executor, max_workers=jobs, progress=opts.progress,
                          log_dir=out / "logs", memory_budget=budget)
        fl.export(result)
        _stop_on_failures(result, result, out, model_name, opts.flow, t_start)
        built = fl.finish(result)
        post_jobs = fl.post_jobs(job_list)
        post = None
        if post_jobs:
            annotate(post_jobs, feats, costs, flow_cls.steps, memory=mem_model)
            r2 = run_jobs(post_jobs, cache, executor=opts.executor, max_workers=jobs, progress=opts.progress,
                          log_dir=out / "logs", memory_budget=budget)
            result.merge(r2)
            _stop_on_failures(r2, result, out, model_name, opts.flow, t_start)
            post = fl.post_finish(r2)
        design = Design(pt, opts.flow, str(out), built.csims, built.monolithic, build=result, rtl=built.rtl)
        design.report = build_report(design, model_name=model_name,
                                     timings={"validate": t_validated - t_start, "total": time.time() - t_start})
        if post:
            design.report.setdefault(opts.flow, {})["stitched"] = post
        if plan is not None:
            design.report["auto_split"] = plan.to_dict()
        if pt.layer_splits:             # cuts inside layers: each layer's output ranges, one partition each
            design.report["layer_splits"] = {e["module"]: list(e["bounds"]) for e in pt.layer_splits.values()}
        if lowered.brevitas is not None:
            design.report["brevitas"] = lowered.brevitas.to_dict()
        for entry in design.report["partitions"]:
            entry["nonzero_weights"] = nz.get(entry["name"])
        design.report["nonzero_weights"] = {"partitions": sum(nz[p.name] for p in pt.partitions),
                                            "uncut": nz[lowered.mono_spec.name]}
        design.report["numerics"] = {
            "config": "hls_config (the user's hls4ml config)" if fc.from_hls_config else "fxsplit config",
            "default_precision": fc.precision, "io_type": fc.io_type, "exact_accum": bool(fc.exact_accum),
            "accumulators_changed": accumulator_changes(pt, fc, lowered)}
        design.write_report()
    return design


def _stop_on_failures(run, whole, out: Path, model_name: str, flow: str, t_start: float) -> None:
    """A run with failed jobs: the report of the whole build so far, then the error naming them."""
    if not run.ok:
        _write_failure_report(whole, out, model_name, flow, time.time() - t_start)
    run.raise_for_failures()


def _write_failure_report(result, out: Path, model_name: str, flow: str, wall: float) -> None:
    """A failed build still leaves report.json/html behind (jobs, failures, logs), best effort."""
    from .report import write_report
    b = result.to_dict()
    names = list(dict.fromkeys(r.partition for r in result))
    report = {"model": model_name, "flow": flow, "output_dir": str(out), "wall_seconds": wall,
              "partitions": [{"name": n, "jobs": [j for j in b["jobs"] if j["partition"] == n]} for n in names],
              "jobs": b["jobs"], "build": {k: v for k, v in b.items() if k != "jobs"},
              "predicted_wall": b.get("predicted_wall"), "verification": None, "failed": True}
    try:
        write_report(report, out)
    except OSError:
        pass
