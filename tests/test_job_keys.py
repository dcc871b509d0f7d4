"""Every job is keyed on everything that produces its artifacts: every setting of every module (not only what
``extra_repr()`` shows) and the installed files of the libraries that write or read them."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap

import numpy as np
import torch
from torch import nn

import fxsplit
from fxsplit.engine import tools
from fxsplit.lower.spec import module_settings
from conftest import FAST


class PoolNet(nn.Module):
    def __init__(self, count_include_pad: bool):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(2, 3, 3, padding=1), nn.ReLU()
        self.pool = nn.AvgPool2d(2, stride=2, padding=1, count_include_pad=count_include_pad)
        self.cut = fxsplit.Cut("head")
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(3 * 5 * 5, 4)

    def forward(self, x):
        return self.fc(self.flatten(self.cut(self.pool(self.relu(self.conv(x))))))


def test_a_setting_extra_repr_does_not_show_is_in_the_key(tmp_path):
    """The same model with count_include_pad flipped, into the same output directory: the partition holding the
    pool and the uncut reference are built again, and the design follows the new model."""
    torch.manual_seed(0)
    first = PoolNet(True).eval()
    second = PoolNet(False).eval()
    second.load_state_dict(first.state_dict())
    assert first.pool.extra_repr() == second.pool.extra_repr()       # what the old key read
    x = np.random.default_rng(0).uniform(-2, 2, size=(40, 2, 8, 8))
    kw = dict(config={**FAST, "precision": "fixed<16,6>"}, output_dir=tmp_path / "o", progress=False)
    d1 = fxsplit.compile(first, (2, 8, 8), **kw)
    d2 = fxsplit.compile(second, (2, 8, 8), **kw)
    states = {r.id: r.state for r in d2.build}
    assert states["p0/csim"] == "built" and states["monolithic/csim"] == "built", states
    assert states["head/csim"] == "cached", states      # the Linear after the cut did not change
    y1, y2 = np.asarray(d1.predict(x)), np.asarray(d2.predict(x))
    assert not np.array_equal(y1, y2)
    with torch.no_grad():
        ref = second(torch.tensor(x, dtype=torch.float32)).numpy()
    assert np.max(np.abs(y2 - ref)) < 0.05, np.max(np.abs(y2 - ref))
    r = d2.verify(x)
    assert r.bit_exact and r.max_abs_error_vs_torch < 0.05, r


def test_module_settings_cover_what_converters_read():
    pairs = [(nn.AvgPool2d(2, padding=1, count_include_pad=True), nn.AvgPool2d(2, padding=1, count_include_pad=False)),
             (nn.AvgPool1d(2, padding=1, count_include_pad=True), nn.AvgPool1d(2, padding=1, count_include_pad=False)),
             (nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
              nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)),
             (nn.RNN(3, 4, nonlinearity="tanh"), nn.RNN(3, 4, nonlinearity="relu"))]
    for a, b in pairs:
        assert module_settings(a) != module_settings(b), type(a).__name__
    # deterministic: the same module settings encode alike (no memory addresses), also across instances
    def rnn():
        torch.manual_seed(0)
        return nn.RNN(3, 4)
    assert module_settings(rnn()) == module_settings(rnn())
    assert " at 0x" not in module_settings(nn.RNN(3, 4))


def test_an_edited_library_install_is_another_tool(tmp_path, monkeypatch):
    """A library that writes artifacts is keyed on a digest of its installed files, not only its version: a
    patched template or header gives other keys."""
    site = tmp_path / "site"
    pkg = site / "fxs_fake_hls"
    (pkg / "templates").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "templates" / "nnet_dense.h").write_text("// accumulate\n")
    dist = site / "fxs_fake_hls-1.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fxs-fake-hls\nVersion: 1.0.0\n")
    (dist / "top_level.txt").write_text("fxs_fake_hls\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setattr(tools, "_DIGESTED", (*tools._DIGESTED, "fxs-fake-hls"))
    before = tools._distribution_version("fxs-fake-hls")
    assert before.startswith("1.0.0 files:")
    assert tools._distribution_version("fxs-fake-hls") == before
    (pkg / "templates" / "nnet_dense.h").write_text(textwrap.dedent("""\
        // accumulate, patched
        """))
    after = tools._distribution_version("fxs-fake-hls")
    assert after.startswith("1.0.0 files:") and after != before
    key = {v: fxsplit.engine.job_key("csim", b"x", tools={"hls4ml": v}) for v in (before, after)}
    assert key[before] != key[after]
    # the real libraries: version and digest of their files
    for name in ("hls4ml", "da4ml", "brevitas"):
        v = tools.tool_versions([name])[name]
        assert v.startswith(importlib.metadata.version(name) + " files:") and len(v.split("files:")[1]) == 16, v
    assert "fxs_fake_hls" not in sys.modules
