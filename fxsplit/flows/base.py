"""The flow interface: what a back end declares once (its steps) and how ``compile`` drives it.

A flow is a :class:`Flow` subclass registered by name (:func:`fxsplit.flows.register_flow`). It declares:

- ``steps``: every kind of job it runs (:class:`Step`: name, the tool it is timed by, dependencies, the cost
  feature it grows with and its shipped time and memory models). The engine's jobs are made from these
  declarations (:meth:`Flow.job`), the automatic split and the cost model price the same declarations, and the
  report lists them;
- ``verify_levels`` and ``report_sections``: what ``Design.verify`` and the report offer for it;
- ``options``: the compile options it takes beyond the common ones (the Vitis flow's ``emit_only``).

``compile`` drives every flow the same way::

    cls = get_flow(name)
    cls.configure(config, fc)  # adjust the normalized config (e.g. the backend the flow builds with)
    flow = cls(partitioning, lowered, fc, output_dir, reference=True, **options)
    flow.validate()            # refuse, before any file is written, what the flow cannot build exactly
    jobs = flow.jobs()         # engine Jobs, one per (partition, step): content-keyed, run in parallel
    flow.export(result)        # copy finished artifacts out of the cache (also after failures)
    built = flow.finish(result)   # main process, after success: load, collect -> Built
    post = flow.post_jobs(jobs)   # jobs that need finish's output (the Vivado stitch), then post_finish

Every flow builds on the hls4ml flow (:mod:`fxsplit.flows.hls4ml`): the bit-accurate C simulation of each
partition, behind ``Design.predict``, and of the uncut reference.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from ..errors import FxsplitError
from ..ir import MONOLITHIC, STITCHED, Partitioning
from ..lower import FlowConfig, Lowered
from ..plan.costmodel import SIZES, StepModel

SCOPES = ("partition", "stitched")


@dataclass(frozen=True)
class Step:
    """One kind of job of a flow, declared once.

    ``scope="partition"``: one job per partition (and per uncut design the flow builds: ``reference`` says
    whether the uncut reference runs it); ``"stitched"``: one job for the stitched design. ``deps``: steps of the
    same partition (or of the stitched design) it needs; ``after``: partition steps the stitched job needs from
    every partition. ``tool``: the tool whose run the step's time measures (a job without it among its tools, e.g.
    an emit-only project, is not priced); None for pure Python. ``tools``: what its jobs run by default (their
    versions key the job; :class:`fxsplit.engine.Tool` for a flow's own binary). ``when``: a boolean option
    (``FlowConfig`` attribute or compile option, :meth:`Flow.run_options`), or several, that must be on for the
    step to run. ``seconds``/``memory``: the
    shipped time and peak-memory models (:class:`~fxsplit.plan.costmodel.StepModel`; ``size`` says what they grow
    with), refitted from each user's cache. ``model``: the cost model's name for it (default: ``name``, for the
    stitched scope ``stitch_<name>``)."""
    name: str
    tool: str | None
    seconds: StepModel
    memory: StepModel
    scope: str = "partition"
    deps: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    tools: tuple = ()
    when: str | tuple[str, ...] | None = None
    reference: bool = False
    model: str = ""
    doc: str = ""

    def __post_init__(self):
        if self.scope not in SCOPES:
            raise ValueError(f"step {self.name!r}: scope must be one of {SCOPES}, not {self.scope!r}")
        for m in (self.seconds, self.memory):
            if m.size not in SIZES:
                raise ValueError(f"step {self.name!r}: size {m.size!r} is not one of {SIZES}")
        if not self.model:
            object.__setattr__(self, "model", self.name if self.scope == "partition" else f"stitch_{self.name}")

    @property
    def whens(self) -> tuple[str, ...]:
        return () if self.when is None else (self.when,) if isinstance(self.when, str) else tuple(self.when)

    def active(self, options: Mapping[str, Any]) -> bool:
        return all(bool(options.get(w, True)) for w in self.whens)

    def to_dict(self) -> dict:
        return {"name": self.name, "scope": self.scope, "tool": self.tool, "deps": list(self.deps),
                "after": list(self.after), "when": " and ".join(self.whens) or None, "model": self.model, "size": self.seconds.size,
                "doc": self.doc}


@dataclass
class Built:
    """What a finished flow hands ``Design``."""
    csims: dict[str, Any]                   # partition name -> CSim
    monolithic: Any | None                  # the uncut CSim (None with reference=False)
    rtl: Any | None = None                  # flow-specific stitched artifacts (flows.rtl.RTLDesign)


class Flow(abc.ABC):
    """A back end. Subclasses set the class attributes below and implement :meth:`jobs` and :meth:`finish`."""
    name: ClassVar[str]
    steps: ClassVar[tuple[Step, ...]] = ()
    verify_levels: ClassVar[tuple[str, ...]] = ("csim",)
    report_sections: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[str, ...]] = ()           # compile options of this flow alone
    # the modules of this flow's job functions: ``compile`` starts the workers, which import them, while it lowers
    # the model (fxsplit.engine.executors.prewarm)
    job_modules: ClassVar[tuple[str, ...]] = ()
    can_compare_monolithic: ClassVar[bool] = False    # flows that synthesize can build the uncut design too
    exact_accum_default: ClassVar[bool] = False       # under fxsplit's own config: exact accumulators by default
    summary: ClassVar[str] = ""                       # one line for ``fxsplit --help`` and the README

    def __init__(self, pt: Partitioning, lowered: Lowered, fc: FlowConfig, output_dir: str | Path,
                 reference: bool = True, compare_monolithic: bool = False, **options):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise FxsplitError(f"{', '.join(unknown)} do(es) not apply to flow={self.name!r}",
                               hint=f"the {self.name} flow takes {', '.join(self.options) or 'no options of its own'}")
        self.pt, self.lowered, self.fc = pt, lowered, fc
        self.out = Path(output_dir)
        self.reference = reference
        self.compare_monolithic = bool(compare_monolithic)
        self.opts = dict(options)

    # ---- what the flow declares, read by the engine, the auto split, the cost model and the report
    @classmethod
    def step(cls, name: str, scope: str = "partition") -> Step:
        for s in cls.steps:
            if s.name == name and s.scope == scope:
                return s
        raise FxsplitError(f"the {cls.name} flow declares no {scope} step {name!r}",
                           hint=f"declare it in {cls.__name__}.steps")

    @classmethod
    def active_steps(cls, options: Mapping[str, Any]) -> list[Step]:
        """The steps that run under ``options`` (config and compile options, e.g. ``{"synth": False}``)."""
        return [s for s in cls.steps if s.active(options)]

    @classmethod
    def configure(cls, config: dict | None, fc: FlowConfig) -> None:
        """Adjust the normalized config for this flow, or refuse it (before anything is lowered)."""

    @classmethod
    def splits_layers_by_default(cls, io_type: str) -> bool:
        """``compile(splits="auto", split_layers=None)``: may the automatic cuts go inside a wide Linear or convolution?"""
        return False

    @classmethod
    def run_options(cls, fc: FlowConfig, **options) -> dict:
        """What the steps' ``when`` reads: the config's flags and this flow's compile options."""
        return {"synth": bool(getattr(fc, "synth", True)), **options}

    def job(self, step: str, partition: str, fn: Callable[..., dict], params: dict | None = None,
            key_data: bytes | str = b"", deps: tuple[str, ...] = (), tools: tuple | None = None):
        """An engine Job of a declared step (its id ``<partition>/<step>``, its tools from the declaration)."""
        from ..engine import Job
        s = self.step(step, "stitched" if partition == STITCHED else "partition")
        return Job(id=f"{partition}/{step}", partition=partition, step=step, fn=fn, params=dict(params or {}),
                   key_data=key_data, deps=tuple(deps), tools=tuple(s.tools if tools is None else tools))

    def reference_partitions(self) -> list[str]:
        """Besides the partitions, the uncut designs this build makes (the reference C simulation)."""
        return [MONOLITHIC] if self.reference else []

    # ---- the build
    def validate(self) -> None:
        """Refuse what this flow cannot build bit-exactly (nothing is written yet)."""
        if self.compare_monolithic and not self.can_compare_monolithic:
            raise FxsplitError(f"compare_monolithic synthesizes the uncut design beside the partitions; the {self.name} "
                               "flow synthesizes nothing here",
                               hint="use flow='rtl' (Yosys) for the side-by-side table")

    @abc.abstractmethod
    def jobs(self) -> list:
        """The engine Jobs of the build (made with :meth:`job`)."""

    def post_jobs(self, jobs: list) -> list:
        """Jobs that need ``finish``'s output (run by ``compile`` after it, with the same engine and cache; the
        list may repeat earlier jobs, which are then cache hits, to depend on their artifacts)."""
        return []

    def post_finish(self, result) -> dict | None:
        """After the post jobs: collect their figures for the report."""
        return None

    def export(self, result) -> None:
        """Copy finished artifacts out of the cache into ``output_dir`` (also after a failed build)."""

    @abc.abstractmethod
    def finish(self, result) -> Built:
        """After a successful build (and ``export``): load and collect what ``Design`` needs."""

    @classmethod
    def report(cls, report: dict, design) -> None:
        """Add this flow's sections (``report_sections``) to the report being built for ``design``."""

    @classmethod
    def report_html(cls, report: dict) -> str:
        """This flow's sections in the HTML report (by default each as its JSON)."""
        import html
        import json
        return "".join(f"<h2>{html.escape(name)}</h2><pre>{html.escape(json.dumps(report[name], indent=1))}</pre>"
                       for name in cls.report_sections if report.get(name) is not None)
