import os
import shutil
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Icarus Verilog has no PyPI build: without root (apt-get install iverilog) the tests that also run it skip.
HAVE_ICARUS = shutil.which("iverilog") is not None and shutil.which("vvp") is not None
needs_icarus = pytest.mark.skipif(not HAVE_ICARUS, reason="Icarus Verilog (iverilog, vvp) is not installed: "
                                                          "apt-get install iverilog (needs root)")

# Small C-simulation libraries compile twice as fast at -O0; numerics do not depend on it.
FAST = {"csim_opt": "-O0"}

# The longest test files first: with pytest-xdist's --dist loadfile (scripts/test.sh) each file runs whole on one
# worker, in collection order, so a long file collected last ran alone at the end (test_zoo_rtl.py: about 10 min
# with the other core idle, stop 21's CI run). The order inside a file is kept.
HEAVY_FIRST = ("test_zoo_rtl.py", "test_brevitas.py", "test_cli.py", "test_rtl_stream.py", "test_layersplit.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def random_inputs(rng, shape, n=200, scale=4.0):
    """Uniform in [-scale, scale): covers the fixed<16,6> input range well beyond +-1, exercising wrap."""
    return rng.uniform(-scale, scale, size=(n, *shape))
