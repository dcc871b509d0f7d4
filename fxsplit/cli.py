"""The ``fxsplit`` command line: ``compile``, ``report``, ``verify``.

Exit codes: 0 ok; 1 build or verification failed, or any fxsplit error (message on stderr,
no traceback unless ``--debug`` or ``FXSPLIT_DEBUG=1``); 2 usage error; 130 interrupted (Ctrl-C).

``fxsplit compile`` stores how it was invoked in ``DIR/fxsplit.json``, so that ``fxsplit verify
DIR`` can rebuild the design (every job comes from the cache) and verify it again.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path

from .errors import FxsplitError
from .flows import flow_names, get_flow

STATE_FILE = "fxsplit.json"
STATE_FORMAT = 1
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Usage(Exception):
    """A usage error found after argparse (bad MODULE:ATTR, bad shape...): exit 2."""


# ----------------------------------------------------------------------------- argument parsing

def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"invalid shape {text!r}: use positive integers like 16 or 3,8,8")
    return dims


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _opt(text: str) -> str:
    t = text if text.startswith("-") else "-" + text
    if t not in ("-O0", "-O1", "-O2", "-O3"):
        raise argparse.ArgumentTypeError(f"expected O0..O3, got {text!r}")
    return t


DEFAULT_VERIFY = 20      # compile verifies by default: a small random sample, bit-exact or exit 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fxsplit", description="Cut a PyTorch model at fxsplit.Cut markers, build every partition "
        "(hls4ml C simulation, optionally RTL) in parallel with a cache, and stitch them bit-exactly.")
    p.add_argument("--debug", action="store_true", help="show tracebacks of fxsplit errors (or FXSPLIT_DEBUG=1)")
    p.add_argument("--version", action="version", version=f"fxsplit {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("compile", help="partition, build and stitch a model",
                       description="Partition, build and stitch a model. MODEL is MODULE:ATTR (or FILE.py:ATTR), "
                       "where ATTR is an nn.Module instance, a class or a zero-argument factory; zoo models "
                       "are named fxsplit.zoo:<name>, models:<name> or just <name> (e.g. jet_tagger).")
    c.add_argument("model", metavar="MODEL",
                   help="MODULE:ATTR, FILE.py:ATTR or a zoo model (fxsplit.zoo:<name>, models:<name>, <name>)")
    c.add_argument("--input-shape", type=_shape, action="append", metavar="SHAPE",
                   help="per-sample input shape, PyTorch layout (16 or 3,8,8); once per input "
                        "(optional for zoo models)")
    c.add_argument("--splits", nargs="+", default=None, metavar="NAME",
                   help="also split before these modules / nodes (in addition to the Cut markers); LAYER@K cuts "
                        "inside Linear or convolution LAYER, before its output (channel) K (its outputs built as separate "
                        "partitions)")
    c.add_argument("--auto-split", type=_positive, default=None, metavar="W",
                   help="add balanced cuts (to the markers) for the shortest predicted build on W workers")
    c.add_argument("--split-layers", choices=("on", "off"), default=None,
                   help="with --auto-split: may the cuts go inside a wide Linear or convolution (default: in the "
                        "rtl flow)")
    c.add_argument("--flow", choices=flow_names(), default="hls4ml")
    c.add_argument("--emit-only", action="store_true",
                   help="vitis flow: write every Vitis HLS project, the DAG description, test vectors and the run "
                        "script, for a machine that has vitis_hls and vivado")
    c.add_argument("-j", "--jobs", type=_positive, default=None, help="local build workers (default: CPU count)")
    c.add_argument("--compare-monolithic", action="store_true",
                   help="rtl flow: synthesize the uncut design as well; the report puts uncut vs stitched side by "
                        "side (build wall, CPU time, peak memory, resources, latency)")
    c.add_argument("--max-job-memory", default=None, metavar="SIZE",
                   help="with --auto-split: also cut until every partition's jobs are predicted to peak under SIZE")
    c.add_argument("--memory", default=None, metavar="SIZE",
                   help="memory budget of the local build, e.g. 16GiB: a job starts only if its predicted peak "
                        "memory fits in what the running jobs leave (default: 80%% of the memory available when the "
                        "build starts; 'off': none)")
    c.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="build on a running Dask scheduler (e.g. tcp://host:8786, as dask-jobqueue starts on "
                        "SLURM/HTCondor); artifacts come back to this machine, workers need no shared disk")
    c.add_argument("-o", "--output-dir", default=None, metavar="DIR", help="default: fxsplit_out/<ModelClass>")
    c.add_argument("--config", default=None, metavar="FILE", help="fxsplit config as JSON or YAML")
    c.add_argument("--hls-config", default=None, metavar="FILE",
                   help="an hls4ml config dict of the uncut model (JSON or YAML, as hls4ml users keep them: Model, "
                        "LayerType, LayerName); the stitched design gives plain hls4ml's bits with it")
    c.add_argument("--precision", default=None, help="default precision, e.g. 'fixed<12,4>' (overrides --config)")
    c.add_argument("--reuse-factor", type=_positive, default=None, help="default reuse factor (overrides --config)")
    c.add_argument("--io-type", choices=("io_parallel", "io_stream"), default=None,
                   help="hls4ml io type (overrides --config); ResNet-sized CNNs need io_stream for C simulation")
    c.add_argument("--csim-opt", type=_opt, default=None, metavar="O0..O3",
                   help="g++ optimisation of the C simulations (overrides --config)")
    c.add_argument("--no-synth", action="store_true", help="rtl flow: skip Yosys synthesis")
    c.add_argument("--cache-dir", default=None, metavar="DIR", help="build cache (default: DIR/.cache)")
    c.add_argument("--verify", type=int, default=DEFAULT_VERIFY, metavar="N",
                   help=f"verify on N inputs from Design.stress_inputs (half over the input types' whole range, "
                        f"half uniform in [-4, 4) with rounding ties), bit-exact or a non-zero exit (at the RTL level "
                        f"for the rtl flow); default {DEFAULT_VERIFY}, 0 turns it off")
    c.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator",
                   help="RTL simulator for --verify with the rtl flow")
    c.add_argument("--seed", type=int, default=0, help="seed of the model zoo weights and the random inputs")
    c.add_argument("--no-progress", action="store_true", help="no live progress display")
    c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    r = sub.add_parser("report", help="print the report of a built output directory")
    r.add_argument("dir", metavar="DIR")
    r.add_argument("--json", action="store_true", help="print report.json instead of the text report")
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    v = sub.add_parser("verify", help="re-verify a design built by 'fxsplit compile' (rebuilds from the cache)")
    v.add_argument("dir", metavar="DIR")
    v.add_argument("-n", "--samples", type=_positive, default=100, metavar="N")
    v.add_argument("--level", default=None,
                   help="a verification level of the design's flow (csim; rtl for the rtl flow); default: its deepest")
    v.add_argument("--simulator", choices=("verilator", "icarus"), default=None)
    v.add_argument("--seed", type=int, default=None, help="seed of the random inputs (default: the compile's)")
    v.add_argument("--no-progress", action="store_true")
    v.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def _version() -> str:
    from . import __version__
    return __version__


# ----------------------------------------------------------------------------- model and config

ZOO_MODULES = ("fxsplit.zoo", "models")    # "models:<name>": the older spelling of the zoo, still accepted


def _zoo():
    from . import zoo
    return zoo


def _load_object(spec: str, cwd: str | None = None):
    """Resolve MODEL: ``fxsplit.zoo:<name>``, ``models:<name>`` or a bare ``<name>`` of the model zoo (the zoo
    is used without importing any package of the user's named ``models``), else MODULE:ATTR or FILE.py:ATTR
    (a ``models`` module of the user's own is loaded as any other when ATTR is not a zoo name)."""
    if ":" not in spec:
        if spec in _zoo().ZOO:
            return ("zoo", _zoo(), spec)
        raise _Usage(f"MODEL must be MODULE:ATTR, FILE.py:ATTR or a zoo model name, got {spec!r} "
                     f"(e.g. fxsplit.zoo:jet_tagger; zoo models: {', '.join(sorted(_zoo().ZOO))})")
    mod_name, attr = spec.rsplit(":", 1)
    if not mod_name or not attr:
        raise _Usage(f"MODEL must be MODULE:ATTR or FILE.py:ATTR, got {spec!r}")
    if mod_name in ZOO_MODULES and attr in _zoo().ZOO:
        return ("zoo", _zoo(), attr)
    base = cwd or os.getcwd()
    if base not in sys.path:
        sys.path.insert(0, base)
    if mod_name.endswith(".py"):
        path = Path(base, mod_name)
        if not path.is_file():
            raise FxsplitError(f"model file {str(path)!r} does not exist")
        ispec = importlib.util.spec_from_file_location(f"fxsplit_user_{path.stem}", path)
        module = importlib.util.module_from_spec(ispec)
        sys.modules[ispec.name] = module
        ispec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name and mod_name.startswith(e.name):
                if mod_name == "models":
                    raise FxsplitError(f"{attr!r} is not a zoo model, and no module 'models' can be imported "
                                       f"(from {base})",
                                       hint=f"zoo models: {', '.join(sorted(_zoo().ZOO))}") from e
                raise FxsplitError(f"cannot import module {mod_name!r} (from {base})",
                                   hint="run from the directory that holds it, or set PYTHONPATH") from e
            raise
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            known = sorted(n for n in dir(module) if not n.startswith("_"))
            hint = [f"it has: {', '.join(known[:15])}"] if mod_name != "fxsplit.zoo" else []
            if mod_name in ZOO_MODULES:
                hint.append(f"zoo models: {', '.join(sorted(_zoo().ZOO))}")
            raise FxsplitError(f"module {mod_name!r} has no attribute {attr!r}", hint="; ".join(hint))
        obj = getattr(obj, part)
    return ("obj", obj, attr)


def load_model(spec: str, seed: int = 0, cwd: str | None = None):
    """Return (model in eval mode, default input shape or None) for MODULE:ATTR."""
    from torch import nn
    kind, obj, attr = _load_object(spec, cwd)
    if kind == "zoo":
        model, shape = obj.build(attr, seed=seed)
        return model, shape
    shape = None
    if isinstance(obj, nn.Module):
        model = obj
    elif callable(obj):
        import torch
        torch.manual_seed(seed)
        try:
            model = obj()
        except TypeError as e:
            raise FxsplitError(f"{spec}: calling {attr}() failed: {e}",
                               hint="ATTR must be an nn.Module instance, a class or a zero-argument factory") from e
        if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], nn.Module):
            model, shape = model
    else:
        model = obj
    if not isinstance(model, nn.Module):
        raise FxsplitError(f"{spec} is not a torch.nn.Module (got {type(model).__name__})",
                           hint="ATTR must be an nn.Module instance, a class or a zero-argument factory")
    return model.eval(), shape


def load_config(path: str | None) -> dict:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise FxsplitError(f"config file {path!r} does not exist")
    text = p.read_text()
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml
            cfg = yaml.safe_load(text)
        else:
            cfg = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise FxsplitError(f"cannot parse config file {path!r}: {e}") from e
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise FxsplitError(f"config file {path!r} must hold a mapping, got {type(cfg).__name__}")
    return cfg


# ----------------------------------------------------------------------------- commands

def _compile(state: dict, progress: bool | None):
    from .compiler import CompileOptions, build
    model, zoo_shape = load_model(state["model"], state["seed"], state.get("cwd"))
    shapes = [tuple(s) for s in state["input_shape"]] if state.get("input_shape") else None
    if shapes is None:
        if zoo_shape is None:
            raise _Usage(f"--input-shape is required for {state['model']} (e.g. --input-shape 16)")
        shapes = [tuple(zoo_shape)]
    state["input_shape"] = [list(s) for s in shapes]
    shape_arg = shapes[0] if len(shapes) == 1 else shapes
    client = _dask_client(state["scheduler"]) if state.get("scheduler") else None
    auto_only = {} if state.get("splits") == "auto" else {"workers": None, "max_job_memory": None, "split_layers": None}
    try:
        opts = CompileOptions.from_mapping(state, input_shape=shape_arg, progress=progress,
                                           executor=client.get_executor() if client else None,
                                           emit_only=bool(state.get("emit_only")),
                                           compare_monolithic=bool(state.get("compare_monolithic")), **auto_only)
        design = build(model, opts)
    finally:
        if client is not None:
            client.close()
    return design, shapes


def _dask_client(address: str):
    """A client of the running Dask scheduler at ``address``; an unreachable one is a clear error."""
    from dask.distributed import Client

    from .errors import FxsplitError
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise FxsplitError(f"cannot reach the Dask scheduler at {address!r}: {e}",
                           hint="check the address (tcp://host:port) and that the scheduler is running") from None


def _verify(design, shapes, n: int, seed: int, level: str, simulator: str | None) -> bool:
    x = design.stress_inputs(n, seed)
    res = design.verify(x, level=level, simulator=simulator if level == "rtl" else None)
    ok = bool(res)
    print(f"verification: {res.summary()}")
    if not ok:
        for m in res.details[:10]:
            print(f"  sample {m.sample} {m.output}[{m.index}]: got {m.got!r}, expected {m.expected!r}")
        print(f"VERIFICATION FAILED: {res.failure()}", file=sys.stderr)
    return ok


def cmd_compile(args) -> int:
    from .report import format_text
    config = load_config(args.config)
    if args.precision:
        config["precision"] = args.precision
    if args.reuse_factor:
        config["reuse_factor"] = args.reuse_factor
    if args.csim_opt:
        config["csim_opt"] = args.csim_opt
    if args.io_type:
        config["io_type"] = args.io_type
    if args.no_synth:
        config["synth"] = False
    if args.verify < 0:
        raise _Usage("--verify N needs N >= 0")
    if args.max_job_memory and not args.auto_split:
        raise _Usage("--max-job-memory limits the jobs of an automatic split: give --auto-split W too")
    if args.split_layers and not args.auto_split:
        raise _Usage("--split-layers says whether an automatic split may cut inside a layer: give --auto-split W too "
                     "(to cut inside a layer yourself: --splits LAYER@K)")
    if args.auto_split and args.splits:
        raise _Usage("--auto-split chooses the cuts besides the markers; give it or --splits, not both")
    state = {
        "format": STATE_FORMAT, "argv": sys.argv[1:], "cwd": os.getcwd(), "model": args.model,
        "input_shape": [list(s) for s in args.input_shape] if args.input_shape else None,
        "splits": "auto" if args.auto_split else args.splits, "workers": args.auto_split,
        "flow": args.flow, "config": config, "jobs": args.jobs,
        "hls_config": load_config(args.hls_config) if args.hls_config else None,
        "output_dir": str(Path(args.output_dir).resolve()) if args.output_dir else None,
        "cache_dir": str(Path(args.cache_dir).resolve()) if args.cache_dir else None,
        "seed": args.seed, "simulator": args.simulator, "emit_only": args.emit_only, "scheduler": args.scheduler,
        "memory": args.memory, "max_job_memory": args.max_job_memory,
        "split_layers": None if args.split_layers is None else args.split_layers == "on",
        "compare_monolithic": args.compare_monolithic,
    }
    design, shapes = _compile(state, None if not args.no_progress else False)
    state["output_dir"] = design.output_dir
    if state["splits"] == "auto":           # what auto chose: a later verify rebuilds exactly this design
        state["splits"], state["workers"] = design.report["auto_split"]["splits"], None
        state["auto_split"] = design.report["auto_split"]
    _write_state(Path(design.output_dir), state)
    ok = True
    if args.verify:
        level = get_flow(args.flow).verify_levels[-1]
        ok = _verify(design, shapes, args.verify, args.seed, level, args.simulator)
    print(format_text(design.report), end="")
    line = auto_split_line(design.report)
    if line:
        print(line)
    print(f"report: {Path(design.output_dir) / 'report.html'}")
    return EXIT_OK if ok else EXIT_FAIL


def auto_split_line(report: dict) -> str | None:
    """For an automatic split: how long the build took against the uncut build's predicted time on one worker,
    e.g. ``build: 41.2 s on 2 workers (auto split, 4 partitions, predicted 39.0 s); the uncut build is predicted
    to take 118 s on one worker (2.9x this build's time)``. A build that reused jobs from the cache is no measure
    of that: the line then says how many it reused, and gives no ratio."""
    au = report.get("auto_split")
    wall = report.get("wall_seconds")
    if not isinstance(au, dict) or not au or not isinstance(wall, (int, float)) or wall <= 0:
        return None
    workers = (report.get("build") or {}).get("workers")
    on = f"{workers} worker{'s' if workers != 1 else ''}" if workers else "its workers"
    jobs = report.get("jobs") or []
    reused = sum(1 for j in jobs if j.get("state") == "cached")
    what = f"auto split, {au.get('partitions')} partitions"
    if isinstance(au.get("predicted_wall"), (int, float)) and au.get("workers") == workers:
        what += f", predicted {au['predicted_wall']:.1f} s"
    if reused:
        what += f"; {reused} of {len(jobs)} jobs reused from the cache"
    line = f"build: {wall:.1f} s on {on} ({what})"
    uncut = (au.get("uncut") or {}).get("predicted_wall")
    if isinstance(uncut, (int, float)) and uncut > 0:
        line += f"; the uncut build is predicted to take {uncut:.0f} s on one worker"
        if not reused:
            line += f" ({uncut / wall:.1f}x this build's time)"
    return line


def _write_state(out: Path, state: dict) -> None:
    path = out / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path, what: str) -> dict:
    if not path.parent.is_dir():
        raise FxsplitError(f"{str(path.parent)!r} is not a directory")
    if not path.is_file():
        raise FxsplitError(f"{str(path.parent)!r} has no {path.name}: not built by {what}",
                           hint="build it first: fxsplit compile MODULE:ATTR -o DIR")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FxsplitError(f"{str(path)!r} is not valid JSON: {e}") from e


def cmd_report(args) -> int:
    from .report import format_text
    d = Path(args.dir).resolve()
    report = _read_json(d / "report.json", "fxsplit (no report.json)")
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(format_text(report), end="")
    from .verify import failure
    ver = report.get("verification")
    why = failure(ver) if isinstance(ver, dict) else None
    if isinstance(ver, dict) and ver.get("summary"):
        print(f"verification: {ver['summary']}")
    if why:
        print(f"VERIFICATION FAILED: {why}", file=sys.stderr)
    print(f"report: {d / 'report.html'}")
    return EXIT_FAIL if report.get("failed") or why else EXIT_OK


def cmd_verify(args) -> int:
    d = Path(args.dir).resolve()
    state = _read_json(d / STATE_FILE, "'fxsplit compile'")
    if state.get("format") != STATE_FORMAT:
        raise FxsplitError(f"{d / STATE_FILE} has an unknown format {state.get('format')!r}")
    state["output_dir"] = str(d)          # the directory may have been moved
    design, shapes = _compile(state, None if not args.no_progress else False)
    built = [r.id for r in design.build.built]
    if built:
        print(f"rebuilt: {', '.join(built)} (not in the cache any more)")
    level = args.level or get_flow(state["flow"]).verify_levels[-1]
    seed = state.get("seed", 0) if args.seed is None else args.seed
    ok = _verify(design, shapes, args.samples, seed, level, args.simulator or state.get("simulator"))
    print(f"report: {d / 'report.html'}")
    return EXIT_OK if ok else EXIT_FAIL


COMMANDS = {"compile": cmd_compile, "report": cmd_report, "verify": cmd_verify}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)          # usage errors: argparse exits with 2
    debug = getattr(args, "debug", False) or os.environ.get("FXSPLIT_DEBUG", "") not in ("", "0")
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\nfxsplit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Usage as e:
        if debug:
            traceback.print_exc()
        parser.print_usage(sys.stderr)
        print(f"fxsplit: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except FxsplitError as e:
        if debug:
            traceback.print_exc()
        print(f"fxsplit: error: {e}", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:
        # output piped into e.g. `head`: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
