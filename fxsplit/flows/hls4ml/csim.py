"""The hls4ml flow's build step: each partition's hls4ml project and its C-simulation library.

Worker side (``csim_job``): rebuild the partition's ModelGraph from its spec, write the project,
compile the bit-accurate C simulation. Main side (``CSim``): call the library through its
``<project>_double`` bridge. Every flow builds these: they are the stitched emulation
(``Design.predict``) and the uncut reference.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys

import numpy as np

from ...errors import FxsplitError
from ...lower.convert import ModelSpec, build_modelgraph

_WDIR_HEADER = """#pragma once
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
"""


def _relocatable_build_script(proj: str, opt: str) -> None:
    """Patch hls4ml's build_lib.sh: our optimisation level, and weights found relative to the library
    (hls4ml bakes the absolute project path into it, which breaks once the project is moved)."""
    with open(os.path.join(proj, "firmware", "fxsplit_wdir.h"), "w") as f:
        f.write(_WDIR_HEADER)
    script = os.path.join(proj, "build_lib.sh")
    with open(script) as f:
        text = f.read()
    text, n1 = re.subn(r'CFLAGS="-O\d', f'CFLAGS="{opt} -include firmware/fxsplit_wdir.h', text, count=1)
    text, n2 = re.subn(r'^WEIGHTS_DIR=.*$', "WEIGHTS_DIR='fxsplit_weights_dir()'", text, count=1, flags=re.M)
    if n1 != 1 or n2 != 1:
        raise RuntimeError("hls4ml's build_lib.sh has an unexpected form; cannot make the library relocatable")
    with open(script, "w") as f:
        f.write(text)


def csim_job(workdir: str, inputs: dict[str, str], spec: ModelSpec) -> dict:
    """Write the hls4ml project of ``spec`` into ``workdir/<name>`` and compile its C-simulation library."""
    import time
    proj = os.path.join(workdir, spec.name)
    t0 = time.time()
    hm = build_modelgraph(spec, proj)
    hm.write()
    t1 = time.time()
    print(f"[fxsplit] wrote hls4ml project {spec.name} in {t1 - t0:.1f} s", flush=True)
    _relocatable_build_script(proj, spec.csim_opt)
    r = subprocess.run(["bash", "./build_lib.sh"], cwd=proj, stdout=sys.stdout.fileno(), stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise RuntimeError(f"g++ failed to compile the C simulation of {spec.name} (exit {r.returncode})")
    import glob
    libs = glob.glob(os.path.join(proj, "firmware", f"{spec.name}-*.so"))
    if len(libs) != 1:
        raise RuntimeError(f"build_lib.sh produced {len(libs)} libraries in {proj}/firmware, expected one")
    lib = os.path.relpath(libs[0], workdir)
    return {"lib": lib, "project": spec.name, "write_seconds": t1 - t0, "compile_seconds": time.time() - t1,
            "inputs": [list(v.shape) for v in hm.get_input_variables()],
            "outputs": [list(v.shape) for v in hm.get_output_variables()]}



# ----------------------------------------------------------------------------- C simulation (main side)

class CSim:
    """A compiled hls4ml C-simulation library, called through its ``<project>_double`` bridge."""

    def __init__(self, lib_path: str, project: str, in_sizes: list[int], out_sizes: list[int]):
        self.lib_path = lib_path
        self._lib = ctypes.cdll.LoadLibrary(lib_path)
        self._fn = getattr(self._lib, f"{project}_double")
        self._fn.restype = None
        ptr = np.ctypeslib.ndpointer(ctypes.c_double, flags="C_CONTIGUOUS")
        self._fn.argtypes = [ptr] * (len(in_sizes) + len(out_sizes))
        self.in_sizes, self.out_sizes = in_sizes, out_sizes

    def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """xs: one (N, ...) float64 array per input, channels-last; returns one (N, size) array per output."""
        n = xs[0].shape[0]
        flat = [np.ascontiguousarray(x.reshape(n, -1), dtype=np.float64) for x in xs]
        for f, size in zip(flat, self.in_sizes):
            if f.shape[1] != size:
                raise FxsplitError(f"input of size {f.shape[1]} given where the C simulation expects {size}")
        outs = [np.zeros((n, s), dtype=np.float64) for s in self.out_sizes]
        for i in range(n):
            row_out = [np.zeros(s, dtype=np.float64) for s in self.out_sizes]
            self._fn(*[f[i] for f in flat], *row_out)
            for o, r in zip(outs, row_out):
                o[i] = r
        return outs
