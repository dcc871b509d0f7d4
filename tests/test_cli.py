"""The fxsplit command line, run as real subprocesses (python -m fxsplit): real builds, no mocks.

The builds share one cache with tests/test_compile_engine.py (same model, same config -> same keys).
"""

import json
import os
import subprocess
import sys

import pytest
from pathlib import Path

from conftest import ROOT


def shared_cache(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "fxsplit-jet-O0-cache")


def fxsplit(*args, cwd=None, timeout=600, env=None):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.pop("FXSPLIT_DEBUG", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "fxsplit", *args], cwd=cwd or ROOT, env=e, timeout=timeout,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "jet"
    r = fxsplit("compile", "models:jet_tagger", "--input-shape", "16", "-o", str(out), "--verify", "50",
                "--csim-opt=-O0", "--cache-dir", shared_cache(tmp_path_factory), "--no-progress")
    return out, r


def test_compile_verify_and_report_files(built):
    out, r = built
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verification: csim: 50 samples, bit-exact" in r.stdout
    assert "fxsplit: JetTagger (hls4ml flow), 3 partition(s)" in r.stdout
    for name in ("p0", "hidden", "head"):
        assert f"\n{name} " in r.stdout
    assert f"report: {out / 'report.html'}" in r.stdout
    rep = json.loads((out / "report.json").read_text())
    assert [p["name"] for p in rep["partitions"]] == ["p0", "hidden", "head"]
    assert rep["verification"]["bit_exact"] is True and rep["verification"]["n_samples"] == 50
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Verification" in html and "fixed&lt;16,6&gt;" in html
    state = json.loads((out / "fxsplit.json").read_text())
    assert state["model"] == "models:jet_tagger" and state["config"] == {"csim_opt": "-O0"}
    assert (out / "head" / "hls4ml").is_dir() and (out / "logs").is_dir()


def test_report_command(built):
    out, _ = built
    r = fxsplit("report", str(out))
    assert r.returncode == 0, r.stderr
    assert "3 partition(s)" in r.stdout and "verification: csim: 50 samples, bit-exact" in r.stdout
    assert str(out / "report.html") in r.stdout
    r = fxsplit("report", str(out), "--json")
    assert json.loads(r.stdout)["model"] == "JetTagger"


def test_verify_command_rebuilds_from_cache(built):
    out, _ = built
    r = fxsplit("verify", str(out), "-n", "30", "--seed", "7", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rebuilt:" not in r.stdout              # every job came from the cache
    assert "verification: csim: 30 samples, bit-exact" in r.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["verification"]["n_samples"] == 30
    assert all(j["state"] == "cached" for j in rep["jobs"])


def test_usage_errors_exit_2(tmp_path):
    r = fxsplit("compile")                                        # MODEL missing
    assert r.returncode == 2 and "required" in r.stderr
    r = fxsplit("compile", "models:jet_tagger", "--input-shape", "3,x")
    assert r.returncode == 2 and "invalid shape" in r.stderr
    r = fxsplit("frobnicate")
    assert r.returncode == 2
    r = fxsplit("compile", "no_colon_here", "-o", str(tmp_path / "o"))
    assert r.returncode == 2 and "MODULE:ATTR" in r.stderr and "Traceback" not in r.stderr


def test_fxsplit_errors_exit_1_without_traceback(tmp_path):
    out = tmp_path / "o"
    r = fxsplit("compile", "models:jet_tagger", "--input-shape", "16", "--splits", "fc_nope", "-o", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "fxsplit: error: splits names 'fc_nope'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()                                      # validated before anything is written
    r = fxsplit("compile", "models:jet_tagger", "--splits", "fc_nope", "-o", str(out), env={"FXSPLIT_DEBUG": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr
    r = fxsplit("report", str(tmp_path))
    assert r.returncode == 1 and "no report.json" in r.stderr and "Traceback" not in r.stderr
    r = fxsplit("verify", str(tmp_path))
    assert r.returncode == 1 and "fxsplit.json" in r.stderr
    r = fxsplit("compile", "models:not_a_model", "-o", str(out))
    assert r.returncode == 1 and "jet_tagger" in r.stderr and "Traceback" not in r.stderr


def test_verification_is_on_by_default_and_0_turns_it_off(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli_default")
    common = ["--input-shape", "16", "--csim-opt=-O0", "--cache-dir", shared_cache(tmp_path_factory), "--no-progress"]
    r = fxsplit("compile", "models:jet_tagger", "-o", str(base / "on"), *common)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verification: csim: 20 samples, bit-exact" in r.stdout
    r = fxsplit("compile", "models:jet_tagger", "-o", str(base / "off"), "--verify", "0", *common)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verification:" not in r.stdout
    assert json.loads((base / "off" / "report.json").read_text())["verification"] is None


def test_readme_resnet20_command_runs_as_written(tmp_path):
    """The README's ResNet20 example, word for word (only the output directory moved into tmp)."""
    import re
    import shlex
    readme = Path(os.path.join(ROOT, "README.md")).read_text()
    cmd = re.search(r"`(fxsplit compile models:resnet20 [^`]*)`", readme).group(1)
    argv = shlex.split(cmd)[1:]
    argv[argv.index("-o") + 1] = str(tmp_path / "r20")
    r = fxsplit(*argv, "--no-progress", timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((tmp_path / "r20" / "report.json").read_text())
    assert [p["name"] for p in rep["partitions"]] == ["p0", "stage2", "stage3", "head"]
    assert rep["verification"]["bit_exact"] is True and rep["verification"]["n_samples"] >= 1


def test_compile_with_a_users_hls4ml_config_file(tmp_path, tmp_path_factory):
    """--hls-config takes the hls4ml config as users keep it (JSON here), names in hls4ml's own layer names."""
    import sys as _sys
    _sys.path.insert(0, ROOT)
    from hls4ml.utils.config import config_from_pytorch_model
    from fxsplit.zoo import build
    model, shape = build("jet_tagger")
    cfg = config_from_pytorch_model(model, shape, granularity="name", default_precision="fixed<14,6>")
    cfg.pop("PytorchModel")
    cfg["LayerName"]["fc2"]["Precision"] = {"weight": "fixed<8,3>", "bias": "fixed<8,3>", "result": "fixed<12,5>"}
    path = tmp_path / "hls4ml_config.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "o"
    r = fxsplit("compile", "models:jet_tagger", "--hls-config", str(path), "--csim-opt=-O0", "-o", str(out),
                "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verification: csim: 20 samples, bit-exact" in r.stdout
    # the user's per-layer setting reached the partition that holds fc2, and only that one
    assert "ap_fixed<12,5>" in (out / "hidden" / "hls4ml" / "firmware" / "defines.h").read_text()
    assert "ap_fixed<12,5>" not in (out / "head" / "hls4ml" / "firmware" / "defines.h").read_text()
    state = json.loads((out / "fxsplit.json").read_text())
    assert state["hls_config"]["LayerName"]["fc2"]["Precision"]["result"] == "fixed<12,5>"


def test_scheduler_address_runs_the_build_on_a_dask_cluster(tmp_path, tmp_path_factory):
    """--scheduler connects to a running Dask scheduler (a real LocalCluster here, as dask-jobqueue would
    start one on SLURM/HTCondor): every job runs on its workers and the artifacts come back."""
    import distributed
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, local_directory=str(tmp_path / "workers"))
    try:
        with distributed.Client(cluster) as c:
            c.run(lambda p: sys.path.insert(0, p) if p not in sys.path else None, ROOT)
        out = tmp_path / "jet"
        r = fxsplit("compile", "models:jet_tagger", "-o", str(out), "--verify", "20", "--csim-opt=-O0",
                    "--scheduler", cluster.scheduler_address, "--no-progress")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "verification: csim: 20 samples, bit-exact" in r.stdout
        jobs = json.loads((out / "report.json").read_text())["jobs"]
        workers = {j["worker"] for j in jobs}
        assert jobs and all(w.startswith("tcp://127.0.0.1") for w in workers), workers
    finally:
        cluster.close()
    r = fxsplit("compile", "models:jet_tagger", "-o", str(tmp_path / "x"), "--scheduler", "tcp://127.0.0.1:9",
                "--no-progress", timeout=120)
    assert r.returncode != 0 and "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'" in r.stderr
    assert not (tmp_path / "x").exists()


@pytest.fixture
def isolated_imports(monkeypatch):
    """sys.path and a module named 'models' as they were: resolving MODEL puts its directory on sys.path."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    saved = sys.modules.pop("models", None)
    yield
    sys.modules.pop("models", None)
    if saved is not None:
        sys.modules["models"] = saved


def test_zoo_names_never_import_a_users_models_package(tmp_path, isolated_imports):
    """models:<zoo name> (the spelling scripts and users have), fxsplit.zoo:<name> and the bare <name> all give
    the zoo's model, even run where a package of the user's own named 'models' is importable."""
    import torch
    from fxsplit.cli import load_model
    from fxsplit.zoo import build
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("raise RuntimeError('the user package was imported')\n")
    ref, ref_shape = build("jet_tagger", seed=3)
    for spec in ("models:jet_tagger", "fxsplit.zoo:jet_tagger", "jet_tagger"):
        model, shape = load_model(spec, seed=3, cwd=str(tmp_path))
        assert type(model).__name__ == "JetTagger" and shape == ref_shape == (16,), spec
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
        assert "models" not in sys.modules, spec


def test_a_users_own_models_module_loads_for_other_names(tmp_path, isolated_imports):
    from fxsplit.cli import _load_object, _Usage, load_model
    from fxsplit.errors import FxsplitError
    (tmp_path / "models.py").write_text("from torch import nn\n\ndef tiny():\n    return nn.Linear(4, 2)\n")
    model, shape = load_model("models:tiny", cwd=str(tmp_path))
    assert type(model).__name__ == "Linear" and shape is None
    assert sys.modules["models"].__file__ == str(tmp_path / "models.py")
    with pytest.raises(FxsplitError, match="has no attribute 'nope'") as e:
        _load_object("models:nope", cwd=str(tmp_path))
    assert "tiny" in str(e.value) and "jet_tagger" in str(e.value)          # theirs, and the zoo's names
    sys.modules.pop("models")
    sys.path.remove(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FxsplitError, match="'nope' is not a zoo model") as e:  # no 'models' anywhere
        _load_object("models:nope", cwd=str(empty))
    assert "jet_tagger" in str(e.value)
    with pytest.raises(_Usage, match="zoo model"):
        _load_object("not_a_zoo_name", cwd=str(empty))
