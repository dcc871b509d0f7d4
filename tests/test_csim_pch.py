"""The host's precompiled hls4ml headers (fxsplit/flows/hls4ml/pch.py): built once, found again,
refused by g++ when they do not fit (and that refusal seen), and never a change of one bit.

Real hls4ml projects, real g++, the real csim job (called in this process, so that the precompiled
headers go to a directory of the test's own)."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil

import numpy as np
import pytest

import fxsplit
from fxsplit import partition
from fxsplit.flows.hls4ml import pch as pch_mod
from fxsplit.flows.hls4ml.csim import CSim, PCH_EXTRA, csim_job, WEIGHTS_DIR
from fxsplit.lower import lower, normalize_config

from fxsplit.zoo import build as build_model


@pytest.fixture
def pch_dir(tmp_path, monkeypatch):
    d = tmp_path / "pch"
    monkeypatch.setenv("FXSPLIT_PCH_DIR", str(d))
    return d


def _specs(tmp_path, opt="-O0"):
    model, shape = build_model("residual_cnn")
    pt = partition(model, shape)
    # a narrow type with wrap and saturation in it, so the inputs below reach both
    fc = normalize_config({"io_type": "io_stream", "csim_opt": opt, "precision": "fixed<10,4>",
                           "layers": {"conv0": {"precision": {"result": "fixed<8,3,RND,SAT>"}}}}, pt)
    low = lower(pt, fc, str(tmp_path / "lower"))
    return low.partitioning, low


def _csim(workdir, meta, inputs, outputs):
    return CSim(os.path.join(workdir, meta["lib"]), meta["project"], [p.precision for p in inputs],
                [p.precision for p in outputs], [math.prod(s) for s in meta["inputs"]],
                [math.prod(s) for s in meta["outputs"]])


def _built_without_pch(tmp_path):
    """The residual CNN's uncut C simulation, built by the real csim job without precompiled headers."""
    pt, low = _specs(tmp_path)
    spec = dataclasses.replace(low.mono_spec, csim_pch=False)
    wd = tmp_path / "job"
    wd.mkdir()
    return pt, spec, wd, csim_job(str(wd), {}, spec)


def _run(sim, x):
    return sim.run([sim.quantize(0, x.reshape(len(x), -1))])


def test_pch_built_once_used_and_bit_identical(tmp_path, pch_dir):
    pt, low = _specs(tmp_path)
    spec = low.mono_spec
    metas = {}
    for tag, on in (("cold", True), ("warm", True), ("off", False)):
        wd = tmp_path / tag
        wd.mkdir()
        metas[tag] = (str(wd), csim_job(str(wd), {}, dataclasses.replace(spec, csim_pch=on)))
    cold, warm, off = (metas[t][1]["pch"] for t in ("cold", "warm", "off"))
    assert cold["used"] and cold["built"] and cold["seconds"] > 0
    assert warm["used"] and not warm["built"] and warm["key"] == cold["key"]
    assert off == {"used": False}
    assert [p.name for p in pch_dir.iterdir() if not p.name.endswith(".lock")] == [cold["key"]]
    # the element types' loader and quantizer: compiled once into shared objects, declared extern in the library
    types = cold["support"]["types"]
    assert types and cold["support"]["shared"] == types and warm["support"]["shared"] == types
    assert cold["support"]["built"] == len(types) and warm["support"]["built"] == 0
    assert sorted(p.suffix for p in (pch_dir / cold["key"] / "support").iterdir()) == \
        sorted([".o"] * len(types) + [".lock"] * len(types))
    assert "ap_fixed<10,4>" in types, types
    for tag, shared in (("cold", True), ("off", False)):
        sup = tmp_path / tag / spec.name / "firmware" / pch_mod.SUPPORT_HEADER
        assert sup.is_file() is shared
    text = (tmp_path / "cold" / spec.name / "firmware" / pch_mod.SUPPORT_HEADER).read_text()
    assert all(f"extern template void fxsplit::load_weights_from_txt<{t} >" in text for t in types)
    # the project is still a plain hls4ml project a user can build by hand: one library, no precompiled header
    script = (tmp_path / "off" / spec.name / "build_lib.sh").read_text()
    assert "fxsplit_unity.cpp" in script and 'CFLAGS="-O0 -fPIC' in script

    # inputs far outside the types' range: wrap and saturation both taken
    x = np.random.default_rng(3).uniform(-40, 40, size=(64, *pt.inputs[0].shape))
    outs = {t: _run(_csim(wd, m, pt.inputs, pt.outputs), x) for t, (wd, m) in metas.items()}
    for t in ("warm", "off"):
        assert all(np.array_equal(a, b) for a, b in zip(outs["cold"], outs[t])), t
    assert len(np.unique(outs["cold"][0])) > 10


def test_pch_refused_by_gcc_is_reported_not_hidden(tmp_path, pch_dir):
    """A precompiled header that does not fit the flags (built at -O0, used at -O1: ``__OPTIMIZE__``
    differs) is refused by g++; the job says so, and the library is still right."""
    pt, low0 = _specs(tmp_path / "a", "-O0")
    _pt1, low1 = _specs(tmp_path / "b", "-O1")
    wd0, wd1, wd2 = (tmp_path / n for n in ("w0", "w1", "w2"))
    for w in (wd0, wd1, wd2):
        w.mkdir()
    m0 = csim_job(str(wd0), {}, low0.mono_spec)
    # the -O1 project's key, then the -O0 header planted under it
    proj1 = wd1 / low1.mono_spec.name
    m_ok = csim_job(str(wd1), {}, low1.mono_spec)
    assert m_ok["pch"]["used"] and m_ok["pch"]["key"] != m0["pch"]["key"]
    key1 = m_ok["pch"]["key"]
    gch = pch_mod.PCH_NAME + ".gch"
    shutil.copyfile(pch_dir / m0["pch"]["key"] / gch, pch_dir / key1 / gch)
    m_bad = csim_job(str(wd2), {}, low1.mono_spec)
    assert m_bad["pch"]["used"] is False and "not used" in m_bad["pch"]["error"], m_bad["pch"]
    x = np.random.default_rng(4).uniform(-40, 40, size=(16, *pt.inputs[0].shape))
    a = _run(_csim(str(wd1), m_ok, pt.inputs, pt.outputs), x)
    b = _run(_csim(str(wd2), m_bad, pt.inputs, pt.outputs), x)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert proj1.is_dir()


def test_pch_concurrent_builders_build_once(tmp_path, pch_dir):
    """Two workers needing the same precompiled header at once: one builds it, the other waits and uses it. They are
    two processes, as the engine's workers are (hls4ml's converter traces with torch.fx, which patches torch's
    globals while it traces: two traces in one process's threads would trip over each other)."""
    import concurrent.futures as cf
    import multiprocessing
    _pt, low = _specs(tmp_path)
    spec = low.specs[next(iter(low.specs))]
    tags = ("t1", "t2")
    for t in tags:
        (tmp_path / t).mkdir()
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futs = {t: pool.submit(csim_job, str(tmp_path / t), {}, dataclasses.replace(spec)) for t in tags}
        res = {t: f.result() for t, f in futs.items()}
    built = sorted(r["pch"]["built"] for r in res.values())
    assert built == [False, True] and all(r["pch"]["used"] for r in res.values())
    # and each element type's shared object once, whichever job got to it first
    types = res["t1"]["pch"]["support"]["types"]
    assert types and all(r["pch"]["support"]["shared"] == types for r in res.values())
    assert sum(r["pch"]["support"]["built"] for r in res.values()) == len(types)
    assert not [p for p in pch_dir.iterdir() if p.name.startswith(".")], "a temporary directory was left behind"


def test_pch_that_cannot_build_falls_back_and_is_remembered(tmp_path, pch_dir):
    _pt, low = _specs(tmp_path)
    wd = tmp_path / "w"
    wd.mkdir()
    m = csim_job(str(wd), {}, low.mono_spec)            # writes the project; its header builds fine
    proj = str(wd / low.mono_spec.name)
    bad = {**PCH_EXTRA, "broken.h": "#error not a header\n"}
    r1 = pch_mod.ensure_pch(proj, bad, WEIGHTS_DIR, log=lambda s: None)
    assert r1["header"] is None and "not a header" in r1["error"]
    r2 = pch_mod.ensure_pch(proj, bad, WEIGHTS_DIR, log=lambda s: None)     # not retried on every job
    assert r2["header"] is None and r2["key"] == r1["key"] and "not a header" in r2["error"]
    good = pch_mod.ensure_pch(proj, PCH_EXTRA, WEIGHTS_DIR)
    assert good["header"] and good["key"] == m["pch"]["key"] and not good["built"]


def test_pch_key_follows_header_content(tmp_path, pch_dir):
    """A changed hls4ml header (another hls4ml version, a patched copy) is another precompiled header."""
    _pt, low = _specs(tmp_path)
    wd = tmp_path / "w"
    wd.mkdir()
    m = csim_job(str(wd), {}, low.mono_spec)
    proj = wd / low.mono_spec.name
    h = proj / "firmware" / "nnet_utils" / "nnet_dense.h"
    h.write_text(h.read_text() + "\n// patched\n")
    extra = PCH_EXTRA
    files, includes = pch_mod._headers(str(proj), extra)
    assert "nnet_utils/nnet_code_gen.h" not in includes and "nnet_utils/nnet_dense.h" in includes
    r = pch_mod.ensure_pch(str(proj), extra, WEIGHTS_DIR, log=lambda s: None)
    assert r["header"] and r["key"] != m["pch"]["key"] and r["built"]


def test_pch_off_by_config(tmp_path):
    with pytest.raises(fxsplit.FxsplitError, match="csim_pch"):
        model, shape = build_model("jet_tagger")
        fxsplit.compile(model, shape, output_dir=tmp_path / "o", config={"csim_pch": "yes"})


def test_project_is_hls4mls_own_and_library_is_exact_only(tmp_path):
    """What the csim job writes besides hls4ml's files: the project's hls4ml_config.yml names the partition's
    module instead of pickling it (loadable without constructing Python objects); hls4ml's float/double wrappers stay in the bridge
    file, guarded, so the file still compiles as hls4ml wrote it, but fxsplit's library leaves them out and
    exports only its exact bridge."""
    import ctypes
    import subprocess

    import yaml

    _pt, spec, wd, meta = _built_without_pch(tmp_path)
    proj = wd / spec.name
    # FullLoader refuses the !!python/object/apply hls4ml's writer gives a module (it takes hls4ml's tuples)
    cfg = yaml.load((proj / "hls4ml_config.yml").read_text(), Loader=yaml.FullLoader)
    assert isinstance(cfg["PytorchModel"], str) and repr(spec.name) in cfg["PytorchModel"]
    assert cfg["ProjectName"] == spec.name and cfg["IOType"] == "io_stream" and cfg["HLSConfig"]["Model"]
    assert (proj / "hls4ml_config.yml").stat().st_size < 20_000

    bridge = (proj / f"{spec.name}_bridge.cpp").read_text()
    for fn in ("float", "double"):
        assert f"#ifndef FXSPLIT_EXACT_BRIDGE_ONLY\nvoid {spec.name}_{fn}(" in bridge
    flags = subprocess.run(["bash", "./build_lib.sh", "--print-flags"], cwd=proj, capture_output=True, text=True,
                           check=True).stdout.strip().split("|")
    # hls4ml's own bridge translation unit, wrappers included (the macro unset), still compiles
    r = subprocess.run([flags[0], *flags[1].split(), "-fsyntax-only", "-Ifirmware/ap_types/", "-Ifirmware",
                        f"-DWEIGHTS_DIR=\"{proj / 'firmware' / 'weights'}\"", f"{spec.name}_bridge.cpp"],
                       cwd=proj, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]

    lib = ctypes.CDLL(str(wd / meta["lib"]))
    assert hasattr(lib, f"fxsplit_raw_{spec.name}") and hasattr(lib, f"fxsplit_quantize_{spec.name}_0")
    for fn in ("float", "double"):
        assert not hasattr(lib, f"{spec.name}_{fn}")


def test_weights_loaded_once_per_type_give_hls4mls_bits(tmp_path):
    """fxsplit's library loads the weights with hls4ml's loader body compiled once per element type (the
    size an argument); the same project built with hls4ml's own per-size loader gives the same bits."""
    import re
    import subprocess

    pt, spec, wd, meta = _built_without_pch(tmp_path)
    proj = wd / spec.name
    model_cpp = (proj / "firmware" / f"{spec.name}.cpp").read_text()
    sizes = set(re.findall(r"nnet::load_weights_from_txt<([^,]+), (\d+)>", model_cpp))
    assert len(sizes) >= 3                         # the project as hls4ml wrote it: one instantiation per size

    def symbols(lib):
        out = subprocess.run(["nm", "-C", str(lib)], capture_output=True, text=True, check=True).stdout
        return {m for m in re.findall(r"(\w+)::load_weights_from_txt<", out)}

    assert symbols(wd / meta["lib"]) == {"fxsplit"}
    # hls4ml's own loader: the unity file without the rename, built into a second library
    unity = (proj / "fxsplit_unity.cpp").read_text()
    assert "#define load_weights_from_txt fxsplit_load_weights_from_txt" in unity
    (proj / "fxsplit_unity.cpp").write_text(unity.replace("#define load_weights_from_txt", "#define fxsplit_unused"))
    lib_dir = proj / "firmware"
    before = set(lib_dir.glob("*.so"))
    subprocess.run(["sed", "-i", "s/^LIB_STAMP=.*/LIB_STAMP=hls4mlloader/", "build_lib.sh"], cwd=proj, check=True)
    subprocess.run(["bash", "./build_lib.sh"], cwd=proj, check=True, capture_output=True)
    theirs_lib, = set(lib_dir.glob("*.so")) - before
    assert symbols(theirs_lib) == {"nnet"}
    ours = _csim(str(wd), meta, pt.inputs, pt.outputs)
    theirs = _csim(str(wd), {**meta, "lib": os.path.relpath(theirs_lib, wd)}, pt.inputs, pt.outputs)
    x = np.random.default_rng(5).uniform(-40, 40, size=(64, *pt.inputs[0].shape))
    a, b = _run(ours, x), _run(theirs, x)
    assert all(np.array_equal(u, v) for u, v in zip(a, b)) and len(np.unique(a[0])) > 10


def test_support_types_resolve_only_what_they_can(tmp_path):
    """Which element types a library takes from the shared objects: names resolved through the project's global
    typedefs (a stream's nnet::array to its element type), ap types and float/double only; anything else (a
    struct, a name defined twice, an unknown name) is left to the library to compile itself."""
    fw = tmp_path / "p" / "firmware"
    fw.mkdir(parents=True)
    (fw / "defines.h").write_text(
        "typedef nnet::array<ap_fixed<16,6,AP_RND,AP_SAT>, 3*1> input_t;\n"
        "typedef ap_fixed<16,6> model_default_t;\ntypedef model_default_t weight2_t;\n"
        "typedef ap_uint<1> bias2_t;\ntypedef float bias3_t;\ntypedef my_struct weight4_t;\n"
        "typedef ap_int<4> twice_t;\ntypedef ap_int<5> twice_t;\n")
    (fw / "p.cpp").write_text(
        "nnet::load_weights_from_txt<weight2_t, 640>(w2, \"w2.txt\");\n"
        "nnet::load_weights_from_txt<bias2_t, 10>(b2, \"b2.txt\");\n"
        "nnet::load_weights_from_txt<bias3_t, 10>(b3, \"b3.txt\");\n"
        "nnet::load_weights_from_txt<weight4_t, 10>(w4, \"w4.txt\");\n"
        "nnet::load_weights_from_txt<twice_t, 10>(t, \"t.txt\");\n"
        "nnet::load_weights_from_txt<unknown_t, 10>(u, \"u.txt\");\n")
    (tmp_path / "p" / "p_bridge.cpp").write_text("{ fxsplit::quantize<input_t::value_type>(n * (3), x, raw); }\n")
    assert pch_mod.support_types(str(tmp_path / "p"), "p") == {
        "bias2_t": "ap_uint<1>", "bias3_t": "float", "input_t::value_type": "ap_fixed<16,6,AP_RND,AP_SAT>",
        "weight2_t": "ap_fixed<16,6>"}


def test_support_object_that_cannot_build_falls_back_and_is_remembered(tmp_path, pch_dir):
    """A type g++ refuses to compile on its own: no object for it (its library compiles its own code), the
    refusal is remembered (not retried by every job), and the other types' objects are still used."""
    _pt, low = _specs(tmp_path)
    spec = low.mono_spec
    wd = tmp_path / "w"
    wd.mkdir()
    meta = csim_job(str(wd), {}, spec)              # the precompiled header and the real types' objects
    good = meta["pch"]["support"]["types"]
    proj = str(wd / spec.name)
    pch = pch_mod.ensure_pch(proj, PCH_EXTRA, WEIGHTS_DIR)
    bad = "ap_fixed<16,6,NOT_A_MODE>"               # shaped like a shareable type; g++ refuses it
    logs: list[str] = []
    r1 = pch_mod.ensure_support(proj, pch, [bad, *good], WEIGHTS_DIR, log=logs.append)
    assert set(r1["objects"]) == set(good) and r1["built"] == 0
    assert len(logs) == 1 and "NOT_A_MODE" in logs[0]
    sup = pch_dir / pch["key"] / "support"
    assert len(list(sup.glob("*.failed"))) == 1
    r2 = pch_mod.ensure_support(proj, pch, [bad, *good], WEIGHTS_DIR, log=logs.append)
    assert set(r2["objects"]) == set(good) and len(logs) == 1      # remembered, not compiled again
    assert not [p for p in sup.iterdir() if p.name.startswith(".")], "a temporary file was left behind"
