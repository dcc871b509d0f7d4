"""fxsplit as users install it: a wheel (``pip install fxsplit``), not an editable checkout.

The wheel is built offline (``pip wheel --no-deps --no-build-isolation --no-index``) from a copy of the
checkout's sources (its top-level files and the ``fxsplit`` package: setuptools writes ``build/`` and
``*.egg-info`` next to the sources it builds, and a ``build/`` left from an earlier build can leak stale files
into the next wheel), installed with ``pip install --target`` into a directory of its own, and used from a
subprocess whose ``PYTHONPATH`` is that directory only, run outside the checkout: the checkout's ``fxsplit``
cannot be imported there (checked: every module it uses comes from the install).

- The wheel ships one top-level package, ``fxsplit`` (the model zoo is ``fxsplit.zoo``: no ``models``
  package that would shadow a user's own), and the Vivado stitcher with its glue RTL as package data.
- A vitis-flow bundle emitted from the install (``emit_only=True``) holds the same files as one emitted from
  the checkout, and its ``stitched/vitis`` files are byte for byte the same (the stitcher included).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STITCHER_FILES = ("fxsplit/flows/vitis/tcl/fxsplit_stitch.tcl", "fxsplit/flows/vitis/tcl/rtl/fxsplit_join.v")

# One tiny zoo model through the vendor flow, emit only: the partition projects, stitch.json, the vectors from
# the stitched C simulation, the Vivado side (stitch.tcl, the stitcher, the testbench) and run_vitis.sh.
EMIT = r"""
import json, os, sys
import fxsplit
import fxsplit.flows.vitis as vitis
from fxsplit.zoo import build
model, shape = build("jet_tagger")
fxsplit.compile(model, shape, flow="vitis", emit_only=True, output_dir=sys.argv[1], progress=False, jobs=2,
                config={"csim_opt": "-O0", "tb_vectors": 20})
print("FXSPLIT-WHERE " + json.dumps({name: os.path.realpath(path) for name, path in (
    ("fxsplit", fxsplit.__file__), ("zoo", sys.modules["fxsplit.zoo"].__file__),
    ("compiler", sys.modules["fxsplit.compiler"].__file__), ("tcl_dir", str(vitis.TCL_DIR)))}))
"""

# Files whose presence depends on the run, not on what was emitted: the cache, logs, the report (timings),
# the run state and its lock, Python's byte code. A C-simulation library's name carries the random stamp
# hls4ml gives each project it writes (``firmware/<project>-<stamp>.so``).
VOLATILE_DIRS = {".cache", "logs", "__pycache__"}
VOLATILE_FILES = {"report.json", "report.html", "fxsplit.json", ".fxsplit.lock"}
STAMPED_LIB = re.compile(r"-[0-9a-f]{8}\.so$")


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def _pip(*args, cwd):
    return _run([sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "--disable-pip-version-check"],
                cwd=cwd)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for f in ROOT.iterdir():                      # pyproject.toml, README.md (the readme), ...
        if f.is_file():
            shutil.copy2(f, src / f.name)
    shutil.copytree(ROOT / "fxsplit", src / "fxsplit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _pip("wheel", "--no-build-isolation", "-w", str(base / "dist"), str(src), cwd=base)
    (whl,) = (base / "dist").glob("fxsplit-*.whl")
    return whl


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("install") / "site"
    _pip("install", "--target", str(target), str(wheel), cwd=wheel.parent)
    return target


def _emit(out: Path, pythonpath: Path, cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    r = _run([sys.executable, "-c", EMIT, str(out)], cwd=cwd, env=env)
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("FXSPLIT-WHERE ")]
    return json.loads(line.split(" ", 1)[1])


def _files(top: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d not in VOLATILE_DIRS]
        rel = Path(dirpath).relative_to(top)
        out |= {STAMPED_LIB.sub("-<stamp>.so", str(rel / f)) for f in filenames
                if f not in VOLATILE_FILES and not f.endswith(".pyc")}
    return out


def test_wheel_ships_fxsplit_only_with_the_stitcher(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"fxsplit"}, top
    assert not any(n.startswith("models/") for n in names)
    assert "fxsplit/zoo/__init__.py" in names and "fxsplit/zoo/jet_tagger.py" in names
    with zipfile.ZipFile(wheel) as z:
        for f in STITCHER_FILES:
            assert f in names, f"{f} is not in {wheel.name}"
            assert z.read(f) == (ROOT / f).read_bytes()


def test_bundle_from_the_wheel_equals_the_checkouts(site, tmp_path):
    work = tmp_path / "work"                      # outside the checkout: nothing of it on sys.path
    work.mkdir()
    assert ROOT not in work.resolve().parents
    assert not (site / "models").exists()
    where = _emit(tmp_path / "from_wheel", site, work)
    for name, path in where.items():              # every module (and the stitcher) from the install
        assert Path(path).is_relative_to(site.resolve()), (name, path)
    ref = _emit(tmp_path / "from_checkout", ROOT, work)
    assert Path(ref["fxsplit"]).is_relative_to(ROOT / "fxsplit")

    bundle = tmp_path / "from_wheel" / "stitched" / "vitis"
    ref_bundle = tmp_path / "from_checkout" / "stitched" / "vitis"
    files = _files(bundle)
    assert {"stitch.json", "stitch.tcl", "fxsplit_tb.v", "run_vitis.sh", "tcl/fxsplit_stitch.tcl",
            "tcl/rtl/fxsplit_join.v"} <= files
    assert files == _files(ref_bundle)
    for f in sorted(files):                       # paths in stitch.json are relative: the same bytes
        assert (bundle / f).read_bytes() == (ref_bundle / f).read_bytes(), f
    assert os.access(bundle / "run_vitis.sh", os.X_OK)
    assert _files(tmp_path / "from_wheel") == _files(tmp_path / "from_checkout")
