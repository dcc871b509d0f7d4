"""``fxsplit.compile``: validate everything, then build every partition in parallel."""

from __future__ import annotations

import os
import time
from pathlib import Path

from torch import nn

from .errors import FxsplitError
from .flows import FLOWS, get_flow
from .ir import Partitioning
from .lower import hls4ml_layer_names, lower, normalize_config
from .lower.convert import accumulator_changes
from .plan.autosplit import plan_auto, splits_layers_by_default
from .plan.costmodel import CostModel, annotate, partition_features
from .frontend.partitioner import partition as make_partitioning
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


def compile(model: nn.Module, input_shape, splits=None, flow: str = "hls4ml", config: dict | None = None,
            output_dir=None, jobs: int | None = None, executor=None, progress: bool | None = None,
            cache_dir=None, reference: bool = True, hls_config: dict | None = None, emit_only: bool = False,
            workers: int | None = None, memory=None, max_job_memory=None, compare_monolithic: bool = False,
            split_layers: bool | None = None):
    """Partition ``model``, build every partition (in parallel, cached) and return a :class:`Design`.

    Everything (tracing, cuts, names, config, layer support, types) is validated before
    any build starts; nothing is written before that, and nothing outside ``output_dir``
    (and ``cache_dir``, by default ``output_dir/.cache``). ``reference=False`` skips building the
    uncut C simulation (then ``predict_monolithic``/``verify`` are unavailable).

    ``hls_config``: an hls4ml config dict of the uncut model, as hls4ml users keep it (e.g. from
    ``hls4ml.utils.config_from_pytorch_model(model, input_shape, granularity='name')``, any granularity);
    fxsplit splits it per partition and the stitched design gives the bits plain hls4ml gives with it.
    ``config`` then holds only fxsplit's own keys (io_type, backend, part, clock_period, csim_opt, ...).

    ``flow="vitis"``: Vitis HLS per partition, in parallel; needs ``vitis_hls`` and ``vivado`` on PATH, or
    ``emit_only=True`` to write every project, the DAG description, test vectors and the run script.

    ``splits="auto"``: fxsplit adds the cuts (to the model's markers, which stay) that minimise the predicted
    build wall on ``workers`` workers (default: ``jobs``, else the CPU count), with the cost model fitted from
    the jobs in the cache (:mod:`fxsplit.plan.autosplit`); the report's ``auto_split`` says what it chose and why.

    ``memory``: the build's memory budget (bytes, or "16GiB"; default: 80 % of the memory available when the
    build starts; "off": none). A job starts only if its predicted peak memory (the cost model's, fitted from the
    cache like the times) fits in what the running jobs leave; one predicted above the whole budget runs alone,
    with a warning. Applies to fxsplit's own process pool (not to a caller's executor or Dask).

    ``compare_monolithic=True`` (flow="rtl"): the uncut design is emitted and synthesized as well, and the report's
    ``compare_monolithic`` puts it beside the stitched one (build wall on the build's workers, CPU time, peak
    memory, resources, latency): what splitting costs and saves, measured in the same run.

    ``max_job_memory`` (with ``splits="auto"``; bytes or "4GiB"): the automatic cuts also make every partition's
    jobs predicted to peak under it (a single layer predicted above it is an error).

    ``split_layers`` (with ``splits="auto"``): may the automatic cuts go inside a wide Linear layer, building ranges
    of its outputs as separate partitions (``"fc2@32"`` in ``splits`` does it by hand; :mod:`fxsplit.frontend.layersplit`)?
    None (default): in the open RTL flow with exact accumulation and io_parallel; True: wherever the layer allows
    it; False: never. The report's ``auto_split.layer_splits`` lists what it split."""
    from .engine import output_dir_lock, run_jobs
    from .design import Design

    t_start = time.time()
    if flow not in FLOWS:
        raise FxsplitError(f"unknown flow {flow!r}", hint=f"use one of {tuple(FLOWS)}")
    if emit_only and flow != "vitis":
        raise FxsplitError(f"emit_only applies to flow='vitis' only (the {flow} flow runs end to end here)")
    if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
        raise FxsplitError(f"jobs must be a positive integer, got {jobs!r}")
    out = _resolve_output_dir(output_dir, model)
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else out / ".cache"

    budget = memory_budget(memory)
    if executor is not None:
        budget = None           # a caller's executor (Dask...) places jobs itself
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise FxsplitError(f"workers must be a positive integer, got {workers!r}")
    auto = isinstance(splits, str) and splits == "auto"
    if workers is not None and not auto:
        raise FxsplitError("workers= sizes an automatic split; it applies to splits='auto' only",
                           hint="the build's parallelism is jobs= (or the executor)")
    if split_layers is not None and (not auto or not isinstance(split_layers, bool)):
        raise FxsplitError("split_layers= (True/False) says whether splits='auto' may cut inside a layer; it applies to "
                           "splits='auto' only", hint="to cut inside a layer yourself, give splits=['<layer>@<output>']")
    if max_job_memory is not None:
        if not auto:
            raise FxsplitError("max_job_memory= limits the jobs of an automatic split; it applies to splits='auto' "
                               "only", hint="for a budget of the whole build, use memory=")
        if isinstance(max_job_memory, str) and max_job_memory.strip().lower() in ("off", "none", "unlimited"):
            raise FxsplitError(f"max_job_memory={max_job_memory!r} is not a memory size",
                               hint="give bytes or a size like '4GiB'")
        max_job_memory = memory_budget(max_job_memory)

    def prewarm() -> None:
        # the model traces and cuts: start the build's workers now, so that they import torch and hls4ml while
        # this process lowers every partition (they wait idle, warm, if everything is cached). Only where a core
        # is left for those imports: on 2 cores with 2 workers they slowed the lowering as much as they saved
        # (measured: cold CLI build of the jet tagger 8.7 s either way, no-change rebuild 3.5 -> 4.0 s).
        mode = os.environ.get("FXSPLIT_PREWARM", "auto")
        cpus = os.cpu_count() or 1
        if executor is None and (mode == "1" or (mode == "auto" and cpus > (jobs or cpus))):
            from .engine.executors import prewarm as start_workers
            start_workers(jobs, get_flow(flow).job_modules)

    # ---- validate (no file written yet)
    names = hls4ml_layer_names(model) if hls_config is not None else None
    plan = None
    costs = CostModel.from_cache(cache)
    mem_model = CostModel.from_cache(cache, target="peak_rss")
    if auto:
        if (config or {}).get("partitions"):
            raise FxsplitError("config['partitions'] sets options per partition, but with splits='auto' fxsplit "
                               "chooses the partitions: an override would silently cover only part of the layers "
                               "it was meant for", hint="give those options per layer (config['layers']), or "
                                                        "choose the cuts yourself")
        pt0: Partitioning = make_partitioning(model, input_shape, None)
        prewarm()
        fc0 = normalize_config(config, pt0, hls_config=hls_config, hls_names=names,
                               exact_accum_default=(flow == "rtl"))
        plan = plan_auto(model, input_shape, workers or jobs or os.cpu_count() or 1, precision=fc0.precision,
                         input_precision=fc0.input_precision, flow=flow, synth=fc0.synth,
                         reference=reference, cost_model=costs, max_job_memory=max_job_memory,
                         memory_model=mem_model,
                         split_layers=(splits_layers_by_default(flow, fc0.io_type)
                                       if split_layers is None else split_layers))
        splits = plan.splits
    pt: Partitioning = make_partitioning(model, input_shape, splits)
    if not auto:
        prewarm()
    fc = normalize_config(config, pt, hls_config=hls_config, hls_names=names,
                          exact_accum_default=(flow == "rtl"))
    if flow == "vitis":
        if (config or {}).get("backend", "Vitis") != "Vitis":
            raise FxsplitError(f"flow='vitis' builds with hls4ml's Vitis backend, config says "
                               f"backend={config['backend']!r}", hint="leave config['backend'] unset for this flow")
        fc.backend = "Vitis"
    lowered = lower(pt, fc, str(out))
    fl = get_flow(flow)(pt, lowered, fc, out, reference=reference, compare_monolithic=compare_monolithic,
                        **({"emit_only": True} if emit_only else {}))
    fl.validate()
    job_list = fl.jobs()
    feats = partition_features(pt, fc.precision, fc.input_precision)
    annotate(job_list, feats, costs, mono=lowered.mono_spec.name, memory=mem_model)
    t_validated = time.time()

    # ---- build
    out.mkdir(parents=True, exist_ok=True)
    with output_dir_lock(out):
        lowered.write_logs(out / "logs")
        result = run_jobs(job_list, cache, executor=executor, max_workers=jobs, progress=progress,
                          log_dir=out / "logs", memory_budget=budget)
        fl.export(result)
        _stop_on_failures(result, result, out, type(model).__name__, flow, t_start)
        built = fl.finish(result)
        post_jobs = fl.post_jobs(job_list)
        post = None
        if post_jobs:
            annotate(post_jobs, feats, costs, mono=lowered.mono_spec.name, memory=mem_model)
            r2 = run_jobs(post_jobs, cache, executor=executor, max_workers=jobs, progress=progress,
                          log_dir=out / "logs", memory_budget=budget)
            result.merge(r2)
            _stop_on_failures(r2, result, out, type(model).__name__, flow, t_start)
            post = fl.post_finish(r2)
        design = Design(pt, flow, str(out), built.csims, built.monolithic, build=result, rtl=built.rtl)
        design.report = build_report(design, model_name=type(model).__name__,
                                     timings={"validate": t_validated - t_start, "total": time.time() - t_start})
        if post:
            design.report.setdefault(flow, {})["stitched"] = post
        if plan is not None:
            design.report["auto_split"] = plan.to_dict()
        if pt.layer_splits:             # cuts inside layers: each layer's output ranges, one partition each
            design.report["layer_splits"] = {e["module"]: list(e["bounds"]) for e in pt.layer_splits.values()}
        if lowered.brevitas is not None:
            design.report["brevitas"] = lowered.brevitas.to_dict()
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
