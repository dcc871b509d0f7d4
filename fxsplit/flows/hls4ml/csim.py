"""The hls4ml flow's build step: each partition's hls4ml project and its C-simulation library.

Worker side (``csim_job``): rebuild the partition's ModelGraph from its spec, write the project,
add fxsplit's exact bridge to it, compile the bit-accurate C simulation. Main side (``CSim``): call
the library through that bridge. Every flow builds these: they are the stitched emulation
(``Design.predict``) and the uncut reference.

The bridge (``fxsplit_raw_<project>``) carries every element as the raw bits of its hls4ml type
(:mod:`fxsplit.fixed`), so a tensor crossing a cut reaches the next partition exactly at any width;
hls4ml's own ``<project>_double`` bridge rounds wider than 53 bits. Model inputs are converted from
double by the type itself (``fxsplit_quantize_<project>_<k>``: ``ap_fixed``'s rounding and overflow),
exactly as hls4ml's bridge does.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
import threading

import numpy as np

from ...fixed import layout, words_to_float

from ...errors import FxsplitError
from ...lower.spec import ModelSpec, build_modelgraph, write_project

_WDIR_HEADER = """#ifndef FXSPLIT_WDIR_H_
#define FXSPLIT_WDIR_H_
// fxsplit: the C simulation reads its weights from the weights/ folder next to the loaded library,
// so a library built on a worker (or in a cache) stays valid wherever it is loaded.
#include <dlfcn.h>
#include <string>
static inline std::string fxsplit_weights_dir() {
    Dl_info info;
    if (dladdr((void *)&fxsplit_weights_dir, &info) && info.dli_fname) {
        std::string p(info.dli_fname);
        return p.substr(0, p.find_last_of('/')) + "/weights";
    }
    return "firmware/weights";
}
#endif
"""
WEIGHTS_DIR = "fxsplit_weights_dir()"

# hls4ml's loader ``nnet::load_weights_from_txt<T, SIZE>`` is a template of the array size too: every size a
# project loads instantiates (and g++ -O3 optimizes) its whole body again, text parsing and the double -> T
# conversion included (ResNet20: 34 distinct instantiations in one library, 18 in each half). fxsplit's
# library compiles hls4ml's body once per element type: ``fxsplit::load_weights_from_txt<T>`` is that body
# verbatim with the size as an argument (the same ``std::istringstream(token) >> w[i]``, so the same bits),
# and the unity file renames the project's calls to a one-line forwarder. The project's own files are left
# as hls4ml wrote them.
_LOADER_HEADER = """#ifndef FXSPLIT_WEIGHTS_H_
#define FXSPLIT_WEIGHTS_H_
// fxsplit: hls4ml's nnet::load_weights_from_txt (nnet_utils/nnet_helpers.h), the array size at run time
// instead of a template argument, so that its body is compiled once per element type, not once per size.
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
namespace fxsplit {
template <class T> void load_weights_from_txt(T *w, size_t SIZE, const char *fname) {
    std::string full_path = std::string(WEIGHTS_DIR) + "/" + std::string(fname);
    std::ifstream infile(full_path.c_str(), std::ios::binary);
    if (infile.fail()) {
        std::cerr << "ERROR: file " << std::string(full_path) << " does not exist" << std::endl;
        exit(1);
    }
    std::string line;
    if (std::getline(infile, line)) {
        std::istringstream iss(line);
        std::string token;
        size_t i = 0;
        while (std::getline(iss, token, ',')) {
            std::istringstream(token) >> w[i];
            i++;
        }
        if (SIZE != i) {
            std::cerr << "ERROR: Expected " << SIZE << " values";
            std::cerr << " but read only " << i << " values" << std::endl;
        }
    }
}
} // namespace fxsplit
namespace nnet {
template <class T, size_t SIZE> inline void fxsplit_load_weights_from_txt(T *w, const char *fname) {
    fxsplit::load_weights_from_txt<T>(w, SIZE, fname);
}
} // namespace nnet
#endif
"""

# build_lib.sh, after hls4ml's flag probes: fxsplit's --print-flags mode (the flags a precompiled header
# must be built with), then ONE translation unit (the model and its bridge: the headers are parsed once,
# not twice), with the host's precompiled hls4ml headers when the job passes them in FXSPLIT_PCH.
_BUILD_TAIL = """if [ "$1" = "--print-flags" ]; then echo "${CC}|${CFLAGS}"; exit 0; fi

# fxsplit: one translation unit, and the precompiled hls4ml headers when given (same bits either way)
PCH_FLAGS=()
if [ -n "${FXSPLIT_PCH}" ]; then PCH_FLAGS=(-include "${FXSPLIT_PCH}" -Winvalid-pch); fi
# and the shared objects of the element types' loader and quantizer when given (one path per line)
SUPPORT_OBJS=()
SUPPORT_FLAGS=()
if [ -n "${FXSPLIT_SUPPORT}" ]; then mapfile -t SUPPORT_OBJS <<< "${FXSPLIT_SUPPORT}"; SUPPORT_FLAGS=(-D FXSPLIT_SHARED_SUPPORT); fi
${CC} "${PCH_FLAGS[@]}" "${SUPPORT_FLAGS[@]}" ${CFLAGS} ${INCFLAGS} -D WEIGHTS_DIR="${WEIGHTS_DIR}" -shared fxsplit_unity.cpp "${SUPPORT_OBJS[@]}" -o firmware/${PROJECT}-${LIB_STAMP}.so
"""
_COMPILE_LINES = re.compile(r"^\$\{CC\}[^\n]*-c firmware/\$\{PROJECT\}\.cpp[^\n]*\n.*?^rm -f \*\.o\n?", re.S | re.M)


def _relocatable_build_script(proj: str, project: str, opt: str) -> None:
    """Patch hls4ml's build_lib.sh: our optimisation level, weights found relative to the library (hls4ml
    bakes the absolute project path into it, which breaks once the project is moved), one translation
    unit ``fxsplit_unity.cpp`` and the optional precompiled header (``_BUILD_TAIL``)."""
    with open(os.path.join(proj, "firmware", "fxsplit_wdir.h"), "w") as f:
        f.write(_WDIR_HEADER)
    with open(os.path.join(proj, "firmware", "fxsplit_weights.h"), "w") as f:
        f.write(_LOADER_HEADER)
    with open(os.path.join(proj, "fxsplit_unity.cpp"), "w") as f:
        f.write(f'// fxsplit: the model and its bridge in one translation unit (fxsplit calls only its exact bridge)\n'
                f'#define FXSPLIT_EXACT_BRIDGE_ONLY 1\n#include "firmware/fxsplit_wdir.h"\n'
                f'// the project\'s own includes first, in its order (hls4ml\'s weight loader among them), then the\n'
                f'// loader\'s calls in the model renamed to fxsplit\'s, compiled once per element type\n'
                f'#include <iostream>\n#include "firmware/{project}.h"\n#include "firmware/parameters.h"\n'
                f'#include "firmware/fxsplit_weights.h"\n'
                f'#ifdef FXSPLIT_SHARED_SUPPORT\n#include "firmware/fxsplit_raw.h"\n#include "firmware/fxsplit_support.h"\n#endif\n'
                f'#define load_weights_from_txt fxsplit_load_weights_from_txt\n'
                f'#include "firmware/{project}.cpp"\n#undef load_weights_from_txt\n#include "{project}_bridge.cpp"\n')
    script = os.path.join(proj, "build_lib.sh")
    with open(script) as f:
        text = f.read()
    text, n1 = re.subn(r'CFLAGS="-O\d', f'CFLAGS="{opt}', text, count=1)
    text, n2 = re.subn(r'^WEIGHTS_DIR=.*$', f"WEIGHTS_DIR='{WEIGHTS_DIR}'", text, count=1, flags=re.M)
    text, n3 = _COMPILE_LINES.subn(lambda _m: _BUILD_TAIL, text, count=1)
    if (n1, n2, n3) != (1, 1, 1):
        raise RuntimeError("hls4ml's build_lib.sh has an unexpected form; cannot make the library relocatable")
    with open(script, "w") as f:
        f.write(text)


_RAW_HEADER = r"""#ifndef FXSPLIT_RAW_H_
#define FXSPLIT_RAW_H_
// fxsplit: exact C-simulation bridge. Every element travels as the raw bits of its hls4ml type, in
// ceil(W/64) little-endian 64-bit words (the low W bits used), at any width ap_fixed/ap_int allow.
#include <stddef.h>
#include <stdint.h>
#include "ap_fixed.h"
#include "ap_int.h"
#include "hls_stream.h"

namespace fxsplit {
template <class T> struct nw { static const int value = (T::width + 63) / 64; };

template <class T> inline void put(const T &v, uint64_t *w) {
    ap_uint<T::width> u = v.range(T::width - 1, 0);
    for (int k = 0; k < nw<T>::value; k++) {
        ap_uint<T::width> s = u >> (64 * k);
        w[k] = (uint64_t)s.to_uint64();
    }
}
template <class T> inline void get(const uint64_t *w, T &v) {
    ap_uint<T::width> u = 0;
    for (int k = 0; k < nw<T>::value; k++) u |= ap_uint<T::width>(w[k]) << (64 * k);
    v.range(T::width - 1, 0) = u;
}
// one sample of a port: an array of SIZE elements, or a stream of T packs (nnet::array)
template <class T, size_t SIZE> void from_raw(const uint64_t *src, T *dst) {
    for (size_t i = 0; i < SIZE; i++) get(src + i * nw<T>::value, dst[i]);
}
template <class T, size_t SIZE> void from_raw(const uint64_t *src, hls::stream<T> &dst) {
    for (size_t i = 0; i < SIZE / T::size; i++) {
        T c;
        for (size_t j = 0; j < T::size; j++) get(src + (i * T::size + j) * nw<typename T::value_type>::value, c[j]);
        dst.write(c);
    }
}
template <class T, size_t SIZE> void to_raw(T *src, uint64_t *dst) {
    for (size_t i = 0; i < SIZE; i++) put(src[i], dst + i * nw<T>::value);
}
template <class T, size_t SIZE> void to_raw(hls::stream<T> &src, uint64_t *dst) {
    for (size_t i = 0; i < SIZE / T::size; i++) {
        T c = src.read();
        for (size_t j = 0; j < T::size; j++) put(c[j], dst + (i * T::size + j) * nw<typename T::value_type>::value);
    }
}
template <class T, size_t SIZE> inline size_t stride(T *) { return SIZE * nw<T>::value; }
template <class T, size_t SIZE> inline size_t stride(hls::stream<T> &) {
    return SIZE * nw<typename T::value_type>::value;
}
// a model input: double -> the type (its own rounding and overflow, as hls4ml's bridge) -> raw
template <class E> void quantize(long n, const double *x, uint64_t *raw) {
    for (long i = 0; i < n; i++) {
        E v = E(x[i]);
        put(v, raw + i * nw<E>::value);
    }
}
} // namespace fxsplit
#endif
"""

# fxsplit's own headers of every C-simulation library, precompiled with hls4ml's (included first, in this order)
PCH_EXTRA = {"fxsplit_wdir.h": _WDIR_HEADER, "fxsplit_raw.h": _RAW_HEADER, "fxsplit_weights.h": _LOADER_HEADER}

_DOUBLE_FN = re.compile(r"void (\w+)_double\(([^)]*)\)\s*\{(.*?)\n\}", re.S)
_SIZE = r"([\d\s*+()]+)"      # hls4ml writes sizes as products, e.g. 14*6
_IN_CONV = re.compile(r"nnet::convert_data<double,\s*([\w:]+),\s*" + _SIZE + r">\((\w+),\s*(\w+)\);")
_OUT_CONV = re.compile(r"nnet::convert_data<([\w:]+),\s*double,\s*" + _SIZE + r">\((\w+),\s*(\w+)\);")


def add_raw_bridge(proj: str, project: str) -> None:
    """Append fxsplit's exact bridge to hls4ml's ``<project>_bridge.cpp``, derived from its ``_double``
    wrapper (same top function, same declarations, one loop over the samples):

    - ``fxsplit_raw_<project>(n, in..., out...)``: every port as raw words (see :mod:`fxsplit.fixed`);
    - ``fxsplit_quantize_<project>_<k>(n, x, raw)``: input ``k`` from double, by its type;
    - ``fxsplit_width_<project>(k)`` / ``fxsplit_words_<project>(k)``: width and words per element of port
      ``k`` (inputs, then outputs), which the caller checks against the ports it expects."""
    with open(os.path.join(proj, "firmware", "fxsplit_raw.h"), "w") as f:
        f.write(_RAW_HEADER)
    path = os.path.join(proj, f"{project}_bridge.cpp")
    with open(path) as f:
        text = f.read()
    m = _DOUBLE_FN.search(text)
    if m is None or m.group(1) != project:
        raise RuntimeError(f"hls4ml's {project}_bridge.cpp has no {project}_double wrapper in the expected form")
    # hls4ml's float and double wrappers, which fxsplit never calls, are left out of fxsplit's library (each
    # instantiates the top function's callers and the float/double conversions of every port: measured
    # 0.3-1.2 s of g++ -O3 per library); the file still builds them when FXSPLIT_EXACT_BRIDGE_ONLY is unset
    wrappers = re.compile(rf"^void {re.escape(project)}_(?:float|double)\([^)]*\)\s*\{{.*?\n\}}", re.S | re.M)
    text, n = wrappers.subn(lambda w: f"#ifndef FXSPLIT_EXACT_BRIDGE_ONLY\n{w.group(0)}\n#endif", text)
    if n != 2:
        raise RuntimeError(f"hls4ml's {project}_bridge.cpp has {n} float/double wrappers, expected 2")
    with open(path, "w") as f:
        f.write(text)
    params = [p.replace("double", "").replace("*", "").strip() for p in m.group(2).split(",") if p.strip()]
    body = m.group(3)
    ins = _IN_CONV.findall(body)      # (type, size, param, variable)
    outs = _OUT_CONV.findall(body)    # (type, size, variable, param)
    if [i[2] for i in ins] + [o[3] for o in outs] != params:
        raise RuntimeError(f"hls4ml's {project}_double converts {len(ins)} inputs and {len(outs)} outputs, "
                           f"which do not match its parameters {params}")
    body = _IN_CONV.sub(lambda c: f"fxsplit::from_raw<{c[1]}, {c[2]}>({c[3]} + s * fxsplit::stride<{c[1]}, "
                                  f"{c[2]}>({c[4]}), {c[4]});", body)
    body = _OUT_CONV.sub(lambda c: f"fxsplit::to_raw<{c[1]}, {c[2]}>({c[3]}, {c[4]} + s * fxsplit::stride<{c[1]}, "
                                   f"{c[2]}>({c[3]}));", body)

    def scalar(typ: str, var: str) -> str:
        return f"{typ}::value_type" if re.search(rf"hls::stream<\s*{re.escape(typ)}\s*>\s*{var}\b", body) else typ

    scalars = [scalar(t, v) for t, _, _, v in ins] + [scalar(t, v) for t, _, v, _ in outs]
    sig = ", ".join(f"uint64_t *{p}" for p in params)
    lines = ['', '#include "firmware/fxsplit_raw.h"', 'extern "C" {',
             f"void fxsplit_raw_{project}(long n, {sig}) {{", "    for (long s = 0; s < n; s++) {",
             body, "    }", "}"]
    for k, (typ, size, _p, var) in enumerate(ins):
        lines.append(f"void fxsplit_quantize_{project}_{k}(long n, const double *x, uint64_t *raw) "
                     f"{{ fxsplit::quantize<{scalars[k]}>(n * ({size}), x, raw); }}")
    cases = "".join(f" case {k}: return {e}::width;" for k, e in enumerate(scalars))
    words = "".join(f" case {k}: return fxsplit::nw<{e}>::value;" for k, e in enumerate(scalars))
    lines += [f"int fxsplit_width_{project}(int k) {{ switch (k) {{{cases} }} return -1; }}",
              f"int fxsplit_words_{project}(int k) {{ switch (k) {{{words} }} return -1; }}", "}", ""]
    with open(path, "a") as f:
        f.write("\n".join(lines))


def warm_worker() -> None:
    """Load what a csim job imports on the way (unpickling its spec's GraphModule re-traces it with
    fxsplit's tracer and pulls in about a thousand torch modules; hls4ml's converters and writers): a
    warm pool's workers call this once when they start, so no job waits for it
    (:mod:`fxsplit.engine.executors`)."""
    import pickle

    import hls4ml.converters  # noqa: F401
    import torch

    from ...frontend.capture import LeafTracer

    m = torch.nn.Sequential(torch.nn.Linear(1, 1))
    gm = torch.fx.GraphModule(m, LeafTracer().trace(m))
    pickle.loads(pickle.dumps(gm))


def csim_job(workdir: str, inputs: dict[str, str], spec: ModelSpec) -> dict:
    """Write the hls4ml project of ``spec`` into ``workdir/<name>`` and compile its C-simulation library
    (one translation unit, with the host's precompiled hls4ml headers unless ``spec.csim_pch`` is off)."""
    import time
    from .pch import (ensure_pch, ensure_support, pch_rejected, script_flags, support_types,
                      write_support_header)
    proj = os.path.join(workdir, spec.name)
    t0 = time.time()
    hm = build_modelgraph(spec, proj)
    write_project(hm, spec)
    t1 = time.time()
    print(f"[fxsplit] wrote hls4ml project {spec.name} in {t1 - t0:.1f} s", flush=True)
    _relocatable_build_script(proj, spec.name, spec.csim_opt)
    add_raw_bridge(proj, spec.name)
    env = dict(os.environ)
    env.pop("FXSPLIT_PCH", None)
    env.pop("FXSPLIT_SUPPORT", None)
    pch: dict = {"used": False}
    if spec.csim_pch:
        compiler = script_flags(proj)            # the build script's compiler and flags, asked once
        pch.update(ensure_pch(proj, PCH_EXTRA, WEIGHTS_DIR, compiler=compiler))
        if pch.get("header"):
            env["FXSPLIT_PCH"] = pch["header"]
            types = support_types(proj, spec.name)
            sup = ensure_support(proj, pch, list(types.values()), WEIGHTS_DIR, compiler=compiler)
            objs = write_support_header(proj, types, sup["objects"])
            if objs:
                env["FXSPLIT_SUPPORT"] = "\n".join(objs)
            pch["support"] = {"types": sorted(set(types.values())), "shared": sorted(sup["objects"]),
                              "built": sup["built"], "seconds": round(sup["seconds"], 3)}
    t2 = time.time()
    r = subprocess.run(["bash", "./build_lib.sh"], cwd=proj, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, errors="replace")
    sys.stdout.write(r.stdout)
    sys.stdout.flush()
    if r.returncode != 0:
        raise RuntimeError(f"g++ failed to compile the C simulation of {spec.name} (exit {r.returncode})")
    if pch.get("header"):
        why = pch_rejected(r.stdout)
        pch["used"] = why is None
        if why:
            pch["error"] = why
            print(f"[fxsplit] g++ did not use the precompiled headers ({why}); the library is the same, "
                  "only its build was slower", flush=True)
    fw = os.path.join(proj, "firmware")     # not glob: the output path may hold [ ] * ?
    libs = [os.path.join(fw, f) for f in os.listdir(fw) if f.startswith(f"{spec.name}-") and f.endswith(".so")]
    if len(libs) != 1:
        raise RuntimeError(f"build_lib.sh produced {len(libs)} libraries in {proj}/firmware, expected one")
    lib = os.path.relpath(libs[0], workdir)
    return {"lib": lib, "project": spec.name, "write_seconds": t1 - t0, "compile_seconds": time.time() - t2,
            "pch": {k: v for k, v in pch.items() if k != "header"},
            "inputs": [list(v.shape) for v in hm.get_input_variables()],
            "outputs": [list(v.shape) for v in hm.get_output_variables()]}


# ----------------------------------------------------------------------------- C simulation (main side)

CSIM_STACK_BYTES = 1 << 30
"""The stack of the thread that runs a C simulation. hls4ml's layers keep their intermediate arrays on the stack:
an io_parallel Dense (and each output pixel of a Conv) holds all ``n_in * n_out`` products in its accumulator type,
18 MiB for a 3x3 convolution of 512 channels (4608 x 512) with 8-byte accumulators, past the usual 8 MiB of a
process's main thread, where it is a segmentation fault rather than an error. The thread's stack is reserved
address space; only the pages a layer touches take memory."""

_STACK_LOCK = threading.Lock()


def on_large_stack(fn, *args):
    """``fn(*args)`` on a thread with a :data:`CSIM_STACK_BYTES` stack (its result returned, its exception
    raised here)."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn(*args)
        except BaseException as e:     # noqa: BLE001  (re-raised in the caller's thread)
            box["error"] = e
    with _STACK_LOCK:                  # (threading.stack_size is process-wide: set for this one thread only)
        old = threading.stack_size(CSIM_STACK_BYTES)
        try:
            t = threading.Thread(target=target, name="fxsplit-csim", daemon=True)
            t.start()
        finally:
            threading.stack_size(old)
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


class CSim:
    """A compiled hls4ml C-simulation library, called through fxsplit's exact bridge.

    ``run`` takes and returns raw words (:mod:`fxsplit.fixed`): what partitions hand each other.
    ``quantize`` converts a model input from float by its type; ``__call__`` does both and returns floats."""

    def __init__(self, lib_path: str, project: str, in_precisions: list[str], out_precisions: list[str],
                 in_sizes: list[int], out_sizes: list[int]):
        self.lib_path, self.project = lib_path, project
        self._lib = ctypes.cdll.LoadLibrary(lib_path)
        self.in_precisions, self.out_precisions = list(in_precisions), list(out_precisions)
        self.in_sizes, self.out_sizes = list(in_sizes), list(out_sizes)
        precs = self.in_precisions + self.out_precisions
        width, words = self._sym("width", ctypes.c_int, [ctypes.c_int]), self._sym("words", ctypes.c_int, [ctypes.c_int])
        self.words = []
        for k, prec in enumerate(precs):
            lay = layout(prec)
            if width(k) != lay.width or words(k) != lay.words:
                raise FxsplitError(f"internal: port {k} of the C simulation {project!r} is {width(k)} bits wide, "
                                   f"but fxsplit expects {prec} ({lay.width} bits)")
            self.words.append(lay.words)
        u64 = np.ctypeslib.ndpointer(np.uint64, flags="C_CONTIGUOUS")
        f64 = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
        self._raw = self._sym("raw", None, [ctypes.c_long] + [u64] * len(precs))
        self._quant = [getattr(self._lib, f"fxsplit_quantize_{project}_{k}") for k in range(len(in_sizes))]
        for q in self._quant:
            q.restype, q.argtypes = None, [ctypes.c_long, f64, u64]

    def _sym(self, what, restype, argtypes):
        fn = getattr(self._lib, f"fxsplit_{what}_{self.project}")
        fn.restype, fn.argtypes = restype, argtypes
        return fn

    def quantize(self, k: int, x: np.ndarray) -> np.ndarray:
        """Input ``k`` as floats (N, ...) channels-last -> raw words (N, size * words), by its type."""
        n = x.shape[0]
        flat = np.ascontiguousarray(x.reshape(n, -1), dtype=np.float64)
        if flat.shape[1] != self.in_sizes[k]:
            raise FxsplitError(f"input of size {flat.shape[1]} given where the C simulation expects {self.in_sizes[k]}")
        out = np.zeros((n, self.in_sizes[k] * self.words[k]), dtype=np.uint64)
        on_large_stack(self._quant[k], n, flat, out)
        return out

    def run(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """Raw words in (one (N, size * words) array per input), raw words out."""
        n = xs[0].shape[0]
        ins = []
        for k, x in enumerate(xs):
            a = np.ascontiguousarray(x.reshape(n, -1), dtype=np.uint64)
            if a.shape[1] != self.in_sizes[k] * self.words[k]:
                raise FxsplitError(f"input {k} of {self.project!r}: {a.shape[1]} words per sample given, "
                                   f"{self.in_sizes[k] * self.words[k]} expected")
            ins.append(a)
        nin = len(self.in_sizes)
        outs = [np.zeros((n, s * self.words[nin + k]), dtype=np.uint64) for k, s in enumerate(self.out_sizes)]
        on_large_stack(self._raw, n, *ins, *outs)
        return outs

    def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """xs: one (N, ...) float array per input, channels-last; returns one (N, size) float array per output
        (exact up to 53 bits)."""
        ys = self.run([self.quantize(k, x) for k, x in enumerate(xs)])
        return [words_to_float(y, p) for y, p in zip(ys, self.out_precisions)]


def run_stitched(partitioning, csims: dict[str, CSim], xs: list) -> dict:
    """The stitched emulation: raw words of every port. Model inputs (floats in the ports' layout) are converted
    once by their type, in the first partition that reads them; then the partitions' C simulations run in order
    along the DAG, each tensor handed on bit for bit."""
    first = {}
    for part in partitioning.partitions:
        for k, p in enumerate(part.inputs):
            first.setdefault(p.name, (csims[part.name], k))
    env = {}
    for p, a in zip(partitioning.inputs, xs):
        csim, k = first[p.name]
        env[p.name] = csim.quantize(k, a)
    for part in partitioning.partitions:
        ys = csims[part.name].run([env[p.name] for p in part.inputs])
        for port, y in zip(part.outputs, ys):
            env[port.name] = y
    return env
