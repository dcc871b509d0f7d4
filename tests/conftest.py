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

# scripts/test.sh, run as root, has just installed these tools (scripts/setup.sh): there a missing one is an error
# of the set-up, not a reason to skip the tests that need it
REQUIRED_TOOLS = os.environ.get("FXSPLIT_REQUIRE_TOOLS", "").split()


def pytest_sessionstart(session):
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise pytest.UsageError(f"FXSPLIT_REQUIRE_TOOLS names {', '.join(missing)}, which is not on PATH: the tests "
                                "that need it would skip; install it (scripts/setup.sh as root) or unset the variable")


# Small C-simulation libraries compile twice as fast at -O0; numerics do not depend on it.
FAST = {"csim_opt": "-O0"}

# The longest test files first: with pytest-xdist's --dist loadfile (scripts/test.sh) each file runs whole on one
# worker, in collection order, so a long file collected last ran alone at the end (test_zoo_rtl.py: about 10 min
# with the other core idle). The order inside a file is kept.
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


def sigint_state() -> dict:
    """How this process treats SIGINT: the Python-level handler, and from the kernel (/proc) whether it is ignored
    process-wide or blocked in the main thread. Children inherit an ignored or blocked SIGINT, so a test that
    leaves either behind breaks every later Ctrl-C test on its worker."""
    import signal
    state = {"handler": signal.getsignal(signal.SIGINT)}
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        bit = 1 << (signal.SIGINT - 1)
        state["ignored"] = bool(int(fields["SigIgn"], 16) & bit)
        state["blocked"] = bool(int(fields["SigBlk"], 16) & bit)
    except (OSError, KeyError, ValueError):
        pass
    return state


@pytest.fixture(autouse=True)
def _sigint_left_as_found(request):
    """Every test leaves SIGINT as it found it. One that does not fails here, by name (instead of a Ctrl-C test
    hanging later on the same xdist worker), and the state is put back for the tests after it."""
    import signal
    import threading
    before = sigint_state()
    yield
    if threading.current_thread() is not threading.main_thread():
        return
    after = sigint_state()
    if after == before:
        return
    if after.get("blocked") and not before.get("blocked"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, before["handler"] if before["handler"] is not None else signal.default_int_handler)
    pytest.fail(f"{request.node.nodeid} left SIGINT changed: {before} before, {after} after (restored now)",
                pytrace=False)
