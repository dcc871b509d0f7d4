"""A precompiled header shared by every hls4ml C-simulation library built on a host.

Every hls4ml project carries its own copy of the same headers (``ap_types/``, ``nnet_utils/``), and
parsing them is a fixed cost of every library: for ResNet20 cut in four, that fixed cost made the
partitioned build as slow as the monolithic one. This module builds those headers once per host,
toolchain, compiler flags and header content, as a GCC precompiled header (``fxsplit_pch.h.gch``), and
every later C-simulation build of any project includes it.

Exactness does not depend on it: the precompiled header holds the same header text the project
carries (the key is the SHA-256 of that text, the compiler's identity and the flags), every header it
holds has an include guard, so the project's own copies are skipped, not mixed in; and a project
built without it (``csim_pch=False``, or a user running ``build_lib.sh`` by hand) gives the same library.
GCC refuses a precompiled header built with other flags or another compiler on its own; fxsplit
checks that it was used (``-Winvalid-pch``) and records it in the job's metadata.

Location: ``$FXSPLIT_PCH_DIR``, else ``$XDG_CACHE_HOME/fxsplit/pch`` (``~/.cache/fxsplit/pch``): per
host, like the compiler itself, so Dask workers on other hosts build their own. Concurrent builders
of the same key wait on a file lock; the entry appears by an atomic rename, never half-written.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ...engine.cache import user_cache_dir

PCH_NAME = "fxsplit_pch.h"
FORMAT = 1                          # bump when the header's composition changes
_GUARD = re.compile(r"#ifndef\s+(\w+)\s*\n\s*#define\s+(\w+)")
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_NOT_USED = re.compile(r"\.gch: not used because|cannot open precompiled|one or more PCH files were found, but they were invalid")


def pch_root() -> Path:
    if os.environ.get("FXSPLIT_PCH_DIR"):
        return Path(os.environ["FXSPLIT_PCH_DIR"]).expanduser()
    return user_cache_dir("pch")


def _guarded(text: str) -> bool:
    m = _GUARD.match(_COMMENTS.sub("", text).lstrip())
    return bool(m) and m.group(1) == m.group(2)


def script_flags(proj: str) -> tuple[str, list[str]]:
    """The compiler and flags the project's own ``build_lib.sh`` compiles with (its probes included),
    read by running the script in fxsplit's ``--print-flags`` mode: the precompiled header must be
    built with exactly these."""
    r = subprocess.run(["bash", "./build_lib.sh", "--print-flags"], cwd=proj, capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or len(lines) != 1 or "|" not in lines[0]:
        raise RuntimeError(f"build_lib.sh --print-flags failed in {proj}: {r.stdout}{r.stderr}")
    cc, flags = lines[0].split("|", 1)
    return cc, shlex.split(flags)


@functools.lru_cache(maxsize=None)
def _compiler_id(cc: str) -> str:
    """The compiler's path and ``-v`` banner (once per worker process, not per job)."""
    r = subprocess.run([cc, "-v"], capture_output=True, text=True)
    path = shutil.which(cc) or cc
    return f"{os.path.realpath(path)}\n{r.stderr}"


def _headers(proj: str, extra: dict[str, str]) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(every file copied into the PCH directory, the headers the PCH includes). ap_types is copied
    whole; of nnet_utils every guarded header but the per-project ``nnet_code_gen.h``."""
    fw = os.path.join(proj, "firmware")
    files: list[tuple[str, bytes]] = []
    for root, _dirs, names in os.walk(os.path.join(fw, "ap_types")):
        for n in names:
            p = os.path.join(root, n)
            files.append((os.path.relpath(p, fw), Path(p).read_bytes()))
    includes = []
    nu = os.path.join(fw, "nnet_utils")
    for n in sorted(os.listdir(nu)):
        if not n.endswith(".h") or n == "nnet_code_gen.h":
            continue
        data = Path(nu, n).read_bytes()
        files.append((f"nnet_utils/{n}", data))
        if _guarded(data.decode("utf-8", "replace")):
            includes.append(f"nnet_utils/{n}")
    for name, text in extra.items():
        files.append((name, text.encode()))
    return sorted(files), includes


def ensure_pch(proj: str, extra: dict[str, str], weights_dir: str, log=print,
               compiler: tuple[str, list[str]] | None = None) -> dict:
    """Build (or find) the precompiled header for project ``proj``; return ``{"header": path, "key": k,
    "built": bool, "seconds": s}``, or ``{"header": None, "error": why}`` if GCC cannot build one (the
    library is then built without it, the same bits, only slower). ``extra``: fxsplit's own headers
    (name -> text) included first, in order. ``compiler``: ``script_flags(proj)`` if the caller has it."""
    import filelock

    cc, flags = compiler or script_flags(proj)
    flags = flags + ["-D", f"WEIGHTS_DIR={weights_dir}"]
    files, includes = _headers(proj, extra)
    h = hashlib.sha256(f"fxsplit-pch {FORMAT}\n{_compiler_id(cc)}\n{flags}\n{list(extra)}\n".encode())
    for name, data in files:
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    key = h.hexdigest()[:24]
    root = pch_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    header = final / PCH_NAME
    if (final / (PCH_NAME + ".gch")).is_file():
        return {"header": str(header), "key": key, "built": False, "seconds": 0.0}
    with filelock.FileLock(str(root / f"{key}.lock")):
        if (final / (PCH_NAME + ".gch")).is_file():         # another worker built it while we waited
            return {"header": str(header), "key": key, "built": False, "seconds": 0.0}
        failed = root / f"{key}.failed"
        if failed.is_file():
            return {"header": None, "key": key, "error": failed.read_text()[-2000:]}
        t0 = time.time()
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            for name, data in files:
                p = tmp / name
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            text = ["// fxsplit: precompiled once per host, toolchain, flags and header content (fxsplit/flows/hls4ml/pch.py)"]
            text += [f'#include "{n}"' for n in extra]
            text += ["#include <iostream>", '#include "ap_fixed.h"', '#include "ap_int.h"', '#include "hls_stream.h"']
            text += [f'#include "{n}"' for n in includes]
            (tmp / PCH_NAME).write_text("\n".join(text) + "\n")
            cmd = [cc, *flags, "-I", str(tmp / "ap_types"), "-I", str(tmp), "-w", "-x", "c++-header",
                   str(tmp / PCH_NAME), "-o", str(tmp / (PCH_NAME + ".gch"))]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                failed.write_text(f"{shlex.join(cmd)}\n{r.stdout}{r.stderr}")
                log(f"[fxsplit] could not precompile the hls4ml headers (building without): {r.stderr[-500:]}")
                return {"header": None, "key": key, "error": r.stderr[-2000:]}
            # built in a sibling directory and renamed into place whole: a reader sees no .gch or a complete one
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        secs = time.time() - t0
        log(f"[fxsplit] precompiled the hls4ml headers in {secs:.1f} s: {header}")
        return {"header": str(header), "key": key, "built": True, "seconds": secs}


def pch_rejected(build_output: str) -> str | None:
    """GCC's reason for not using the precompiled header (``-Winvalid-pch``), or None."""
    m = _NOT_USED.search(build_output)
    if not m:
        return None
    line = next((ln for ln in build_output.splitlines() if m.group(0) in ln), m.group(0))
    return line.strip()


# ----------------------------------------------------------------------------- shared per-type objects
#
# Besides parsing, every library repeats the code of its element types that is the same in every project:
# hls4ml's weight loader (fxsplit's per-type form, text parsing and ap_fixed's string conversion) and the
# bridge's input quantizer (ap_fixed's conversion from double). g++ -O3 spends about 1 s per library on them
# (measured on ResNet20's partitions and its 3-layer head: 3.7 s -> 2.9 s). Each element type's instantiations
# are compiled ONCE per host, toolchain, flags and header content (next to the precompiled header, whose key
# covers all of these) into an object every library of that type links; the library's translation unit
# declares them ``extern template`` (``fxsplit_support.h``), so g++ does not instantiate them again. The code
# is the same text with the same flags, so the same bits; a project built by hand (no FXSPLIT_SUPPORT)
# compiles its own, as before.

SUPPORT_FORMAT = 1
SUPPORT_HEADER = "fxsplit_support.h"
_TYPEDEF = re.compile(r"^\s*typedef\s+([^;]+?)\s+(\w+)\s*;", re.M)
_SHAREABLE = re.compile(r"^(?:(?:ap_fixed|ap_ufixed|ap_int|ap_uint)<[\w\s,]+>|float|double)$")
_LOADER_CALL = re.compile(r"load_weights_from_txt<\s*([\w:]+)\s*,")
_QUANTIZE_CALL = re.compile(r"fxsplit::quantize<\s*([\w:]+)\s*>\(")


def _template_args(t: str) -> list[str] | None:
    """The top-level template arguments of ``t`` (``nnet::array<ap_fixed<16,6>, 3*1>`` -> its two)."""
    i = t.find("<")
    if i < 0 or not t.endswith(">"):
        return None
    args, depth, cur = [], 0, ""
    for ch in t[i + 1:-1]:
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
            continue
        depth += (ch == "<") - (ch == ">")
        cur += ch
    return args + [cur.strip()]


def support_types(proj: str, project: str) -> dict[str, str]:
    """The element types of project ``proj`` whose loader and quantizer a shared object can provide:
    ``{name the project uses: the type, spelled as in its typedefs}``. Only ap_fixed/ap_int types and
    float/double are shared; a name that does not resolve to one of those is left to the library itself."""
    fw = os.path.join(proj, "firmware")
    typedefs: dict[str, str] = {}
    p = os.path.join(fw, "defines.h")          # the global typedefs (parameters.h has per-layer local ones)
    if os.path.isfile(p):
        for t, name in _TYPEDEF.findall(Path(p).read_text(errors="replace")):
            if name in typedefs and typedefs[name] != " ".join(t.split()):
                typedefs[name] = ""              # defined twice, differently: not shared
            else:
                typedefs[name] = " ".join(t.split())

    def expand(name: str) -> str | None:
        """Follow the typedef chain; a stream element (``X::value_type``) through X's nnet::array."""
        for _ in range(8):
            if name.endswith("::value_type"):
                base = expand(name[: -len("::value_type")])
                args = _template_args(base) if base and base.startswith("nnet::array<") else None
                if not args or len(args) != 2:
                    return None
                name = args[0]
            elif name in typedefs:
                if not typedefs[name]:
                    return None
                name = typedefs[name]
            else:
                return name
        return None

    def resolve(name: str) -> str | None:
        t = expand(name)
        return t if t is not None and _SHAREABLE.match(t) else None

    names: set[str] = set()
    src = os.path.join(fw, f"{project}.cpp")
    names.update(_LOADER_CALL.findall(Path(src).read_text(errors="replace")))
    bridge = os.path.join(proj, f"{project}_bridge.cpp")
    if os.path.isfile(bridge):
        names.update(_QUANTIZE_CALL.findall(Path(bridge).read_text(errors="replace")))
    out = {}
    for n in sorted(names):
        t = resolve(n)
        if t is not None:
            out[n] = t
    return out


def _instantiations(t: str, extern: bool) -> str:
    e = "extern " if extern else ""
    return (f"{e}template void fxsplit::load_weights_from_txt<{t} >({t} *, size_t, const char *);\n"
            f"{e}template void fxsplit::quantize<{t} >(long, const double *, uint64_t *);\n")


def ensure_support(proj: str, pch: dict, types: list[str], weights_dir: str, log=print,
                   compiler: tuple[str, list[str]] | None = None) -> dict:
    """The shared objects of ``types`` (built here if missing) for a project whose precompiled header is
    ``pch`` (``ensure_pch``'s result, which must have a header). Returns ``{"objects": {type: path},
    "built": n, "seconds": s}``; a type whose object g++ cannot build is left out (and remembered).
    ``compiler``: ``script_flags(proj)`` if the caller has it (it runs the project's build script)."""
    import filelock

    cc, flags = compiler or script_flags(proj)
    flags = flags + ["-D", f"WEIGHTS_DIR={weights_dir}"]           # exactly the precompiled header's flags
    final = Path(pch["header"]).parent
    sup = final / "support"
    objects, built, t0 = {}, 0, time.time()
    try:
        sup.mkdir(exist_ok=True)
    except OSError as e:                  # a read-only shared cache, say: the library compiles its own
        log(f"[fxsplit] no shared objects for the element types ({e}); each library compiles its own")
        return {"objects": {}, "built": 0, "seconds": 0.0, "error": str(e)}
    for t in sorted(set(types)):
        src = (f"// fxsplit: {t}'s weight loader and input quantizer, shared by every C-simulation library of this "
               f"toolchain, flags and headers (fxsplit/flows/hls4ml/pch.py)\n"
               + "".join(f'#include "{n}"\n' for n in ("fxsplit_wdir.h", "fxsplit_raw.h", "fxsplit_weights.h"))
               + _instantiations(t, extern=False))
        # the precompiled header's key covers the compiler, the flags and every header; the source, the rest
        h = hashlib.sha256(f"fxsplit-support {SUPPORT_FORMAT}\n{pch['key']}\n{src}".encode()).hexdigest()[:20]
        obj = sup / f"{h}.o"
        try:
            built += _build_support(obj, sup, h, src, t, cc, flags, pch["header"], final, log, filelock)
        except OSError as e:
            log(f"[fxsplit] could not write the shared code of {t} ({e}); the library compiles its own")
        if obj.is_file():
            objects[t] = str(obj)
    return {"objects": objects, "built": built, "seconds": time.time() - t0}


def _build_support(obj: Path, sup: Path, h: str, src: str, t: str, cc: str, flags: list[str], header: str,
                   final: Path, log, filelock) -> int:
    """Compile one type's shared object unless it is there (or failed before); 1 if built here."""
    if obj.is_file():
        return 0
    with filelock.FileLock(str(sup / f"{h}.lock")):
        if obj.is_file() or (sup / f"{h}.failed").is_file():      # another worker built it while we waited
            return 0
        fd, tmp_src = tempfile.mkstemp(prefix=f".{h}-", suffix=".cpp", dir=sup)
        tmp_obj = tmp_src[:-4] + ".o"
        try:
            with os.fdopen(fd, "w") as f:
                f.write(src)
            cmd = [cc, "-include", header, "-Winvalid-pch", *flags, "-I", str(final / "ap_types"),
                   "-I", str(final), "-w", "-c", tmp_src, "-o", tmp_obj]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                (sup / f"{h}.failed").write_text(f"{shlex.join(cmd)}\n{r.stdout}{r.stderr}")
                log(f"[fxsplit] could not compile the shared code of {t} (the library compiles its own): "
                    f"{r.stderr[-500:]}")
                return 0
            os.replace(tmp_obj, obj)         # complete or absent, never half-written
            return 1
        finally:
            for p in (tmp_src, tmp_obj):
                with contextlib.suppress(OSError):
                    os.unlink(p)


def write_support_header(proj: str, types: dict[str, str], objects: dict[str, str]) -> list[str]:
    """``firmware/fxsplit_support.h``: the ``extern template`` declarations of the types that have a shared
    object. Returns the objects to link, in a stable order."""
    shared = sorted({t for t in types.values() if t in objects})
    text = ["#ifndef FXSPLIT_SUPPORT_H_", "#define FXSPLIT_SUPPORT_H_",
            "// fxsplit: these element types' weight loader and input quantizer come from objects compiled once per",
            "// host and toolchain (fxsplit/flows/hls4ml/pch.py), linked by build_lib.sh when FXSPLIT_SUPPORT lists them",
            *(_instantiations(t, extern=True).rstrip("\n") for t in shared), "#endif", ""]
    Path(proj, "firmware", SUPPORT_HEADER).write_text("\n".join(text))
    return [objects[t] for t in shared]
