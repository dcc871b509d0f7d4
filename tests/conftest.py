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


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def random_inputs(rng, shape, n=200, scale=4.0):
    """Uniform in [-scale, scale): covers the fixed<16,6> input range well beyond +-1, exercising wrap."""
    return rng.uniform(-scale, scale, size=(n, *shape))
