"""The C simulation of a layer whose products exceed a process's usual 8 MiB stack: hls4ml's io_parallel Dense keeps
all n_in * n_out products on the stack (1024 x 1024 of 8-byte accumulators: 8 MiB, as a 3x3 convolution of 512
channels does in a ResNet18), so fxsplit runs its C simulations on a thread with a large stack."""

import json
import os
import resource
import subprocess
import sys
import textwrap

import numpy as np
import torch
from torch import nn

import fxsplit

_CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from fxsplit.flows.hls4ml.csim import CSim
    resource.setrlimit(resource.RLIMIT_STACK, (8 << 20, resource.getrlimit(resource.RLIMIT_STACK)[1]))
    a = json.loads(sys.argv[1])
    c = CSim(a["lib"], a["project"], a["ins"], a["outs"], a["in_sizes"], a["out_sizes"])
    x = c.quantize(0, np.ones((2, a["in_sizes"][0])))
    out = np.zeros((2, a["out_sizes"][0] * c.words[-1]), dtype=np.uint64)
    if sys.argv[2] == "main_thread":
        c._raw(2, x, out)                 # on the 8 MiB main thread
    else:
        out = c.run([x])[0]               # fxsplit's way
    print("ran", int(out.astype(bool).sum()))
""")


def _child(args: dict, how: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args), how], capture_output=True, text=True,
                          env=env, timeout=120)


def test_csim_of_a_layer_past_the_default_stack_runs(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 1024)).eval()
    d = fxsplit.compile(model, (1024,), flow="hls4ml", config={"csim_opt": "-O0", "precision": "fixed<40,20>"},
                        output_dir=tmp_path / "o", jobs=2, progress=False)
    x = torch.randn(6, 1024)
    y = d.predict(x)                                               # the stitched C simulations, in this process
    np.testing.assert_array_equal(y, d.predict_monolithic(x))
    with torch.no_grad():
        assert np.abs(y - model(x).numpy()).max() < 1e-3          # fixed<40,20>: the float layer to 2**-20 steps
    mono = d._mono
    args = {"lib": mono.lib_path, "project": mono.project, "ins": mono.in_precisions, "outs": mono.out_precisions,
            "in_sizes": mono.in_sizes, "out_sizes": mono.out_sizes}
    # under an 8 MiB stack limit: the layer's products overflow the main thread's stack, not fxsplit's thread
    crashed = _child(args, "main_thread")
    assert crashed.returncode == -11, (crashed.returncode, crashed.stdout, crashed.stderr[-2000:])
    ran = _child(args, "csim_thread")
    assert ran.returncode == 0 and ran.stdout.startswith("ran "), (ran.returncode, ran.stderr[-2000:])
    assert int(ran.stdout.split()[1]) > 0
