"""Bad input is an error and a failed verification is a failure everywhere: the exit code, the terminal line, the
HTML verdict and ``bool(VerifyResult)`` agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import fxsplit
from pathlib import Path
from fxsplit.errors import FxsplitError
from fxsplit.verify import VerifyResult, failure, passed
from conftest import FAST, ROOT


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.relu = nn.Linear(6, 8), nn.ReLU()
        self.cut = fxsplit.Cut("tail")
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.cut(self.relu(self.fc1(x))))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = Tiny().eval()
    with torch.no_grad():             # weights of a trained model's size: sums beyond [-4, 4) saturate
        model.fc1.weight.mul_(4)
        model.fc2.weight.mul_(4)
    return fxsplit.compile(model, (6,), config={**FAST, "precision": "fixed<8,3,RND,SAT>"},
                           output_dir=tmp_path_factory.mktemp("trust") / "tiny", progress=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_inputs_that_are_not_finite_are_refused(tiny, bad):
    x = np.zeros((5, 6))
    x[3, 4] = bad
    for call in (tiny.predict, tiny.predict_monolithic, tiny.verify):
        with pytest.raises(FxsplitError, match=r"sample 3 at element \(4,\)"):
            call(x)


def test_stress_inputs_reach_the_limits(tiny):
    x = tiny.stress_inputs(400, seed=3)
    assert x.shape == (400, 6) and np.all(np.isfinite(x))
    assert np.array_equal(x, tiny.stress_inputs(400, seed=3))
    prec = tiny.partitioning.inputs[0].precision        # fixed<8,3>: raw in [-128, 127] * 2**-5
    assert prec.startswith("fixed<8,3")
    first = x[:200]
    assert np.all(first == np.round(first * 32) / 32)
    assert np.sum(first == -4.0) > 0 and np.sum(first == 127 / 32) > 0
    assert np.sum(np.abs(x[200:] * 32 - np.floor(x[200:] * 32) - 0.5) < 1e-12) > 0.2 * x[200:].size   # ties
    r = tiny.verify(x)
    assert r and r.bit_exact
    lim = r.at_limits["fc2"]
    assert lim["of"] == 1200 and lim["min"] > 0 and lim["max"] > 0, lim
    assert "output elements at their type's minimum" in r.summary()
    html = (tiny.output_dir and Path(os.path.join(tiny.output_dir, "report.html")).read_text())
    assert "outputs at their type" in html


def test_partition_names_differing_only_in_case_are_refused():
    class TwoCuts(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.c(fxsplit.cut(self.b(fxsplit.cut(self.a(x), "Enc")), "enc"))

    with pytest.raises(FxsplitError, match="'Enc' and 'enc' differ only in case"):
        fxsplit.partition(TwoCuts().eval(), (4,))


def _result(bit_exact=True, torch_exact=None, torch_mismatches=None):
    return VerifyResult("csim", 10, bit_exact, 0 if bit_exact else 4, 0.1, torch_exact=torch_exact,
                        torch_mismatches=torch_mismatches)


@pytest.mark.parametrize("res,ok", [
    (_result(), True),
    (_result(bit_exact=False), False),
    (_result(torch_exact=True, torch_mismatches=0), True),
    (_result(torch_exact=True, torch_mismatches=3), False),        # differs from the exact brevitas model
    (_result(torch_exact=False, torch_mismatches=3), True),        # brevitas rounds in float32: reported
], ids=["exact", "stitched-differs", "brevitas-equal", "brevitas-differs", "brevitas-inexact"])
def test_one_verdict_everywhere(res, ok, tmp_path):
    from fxsplit.report import render_html
    d = res.to_dict()
    assert bool(res) is ok and passed(d) is ok and d["passed"] is ok and (failure(d) is None) is ok
    report = {"model": "M", "flow": "hls4ml", "partitions": [], "jobs": [], "verification": d}
    html = render_html(report).split("<h2>Verification</h2>", 1)[1]
    assert ("#2e7d32" in html) is ok and ("#c62828" in html) is (not ok)
    # the CLI's report command reads the same verdict from report.json
    (tmp_path / "report.json").write_text(json.dumps(report))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "fxsplit", "report", str(tmp_path)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == (0 if ok else 1), r.stdout + r.stderr
    assert ("VERIFICATION FAILED" in r.stderr) is (not ok)
