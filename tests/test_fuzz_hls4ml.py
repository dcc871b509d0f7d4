"""Fuzz against plain hls4ml: random small DAGs of supported layers, random cuts, random hls4ml configs
(granularity, precisions with rounding and saturation, accumulators, reuse factor, strategy, io type).
Each case either compiles and gives plain hls4ml's bits, stitched and uncut, or raises FxsplitError;
any other exception fails the test (as does FxsplitError where plain hls4ml converts the model and no
rule of fxsplit explains the refusal: the message must say why)."""

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

import fxsplit
from conftest import FAST
from test_property import WIDTH, RandomDAG

TYPES = ["fixed<10,4>", "fixed<14,6>", "fixed<16,6>", "fixed<12,5,RND,SAT>", "fixed<18,8,RND_CONV,SAT>", "auto"]


@st.composite
def fuzz_case(draw):
    n = draw(st.integers(2, 6))
    program = [("linear", (0,))]
    for i in range(1, n):
        k = i + 1
        op = draw(st.sampled_from(["linear", "relu", "leaky", "bn", "sigmoid", "tanh", "add", "sub", "mul",
                                   "cat_linear"]))
        if op in ("add", "sub", "mul", "cat_linear"):
            a = draw(st.integers(1, k - 1))
            b = draw(st.integers(0, k - 1))            # a == b allowed: hls4ml refuses x + x, so must fxsplit
            program.append((op, (a, b)))
        else:
            program.append((op, (draw(st.integers(max(1, k - 3), k - 1)),)))
    cuts = sorted(draw(st.sets(st.integers(1, len(program) - 1), min_size=1, max_size=3)))
    cfg = {"granularity": draw(st.sampled_from(["model", "type", "name"])),
           "default": draw(st.sampled_from(TYPES[:5])),
           "io_type": draw(st.sampled_from(["io_parallel", "io_stream"])),
           "tweaks": draw(st.lists(st.tuples(st.integers(0, len(program)), st.sampled_from(TYPES),
                                             st.sampled_from(TYPES), st.sampled_from([1, 2]),
                                             st.sampled_from(["Latency", "Resource"])), max_size=3))}
    return program, cuts, cfg


def _hls_config(model, cfg):
    from hls4ml.utils.config import config_from_pytorch_model
    hc = config_from_pytorch_model(model, (WIDTH,), granularity=cfg["granularity"], default_precision=cfg["default"],
                                   channels_last_conversion="internal")
    if cfg["granularity"] == "name":
        names = [k for k in hc["LayerName"] if isinstance(hc["LayerName"][k], dict)]
        for idx, result, accum, rf, strategy in cfg["tweaks"]:
            lc = hc["LayerName"][names[idx % len(names)]]
            prec = lc.setdefault("Precision", {})
            if not isinstance(prec, dict):
                prec = lc["Precision"] = {"result": prec}
            prec["result"] = result
            if "weight" in prec:                    # a layer with weights: its accumulator, reuse and strategy
                prec["accum"] = accum
                lc["ReuseFactor"], lc["Strategy"] = rf, strategy
    return hc


def _plain(model, hc, io_type, out):
    import hls4ml
    hm = hls4ml.converters.convert_from_pytorch_model(model, hls_config=hc, output_dir=str(out), backend="Vivado",
                                                      io_type=io_type)
    hm.compile()
    return hm


# every example compiles real hls4ml C simulations: few examples, no shrinking (a failing example is
# printed in full; shrinking would recompile for many minutes)
@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=fuzz_case(), seed=st.integers(0, 2 ** 16))
def test_fuzz_against_plain_hls4ml(case, seed, tmp_path_factory):
    program, cuts, cfg = case
    torch.manual_seed(seed)
    model = RandomDAG(program, cuts).eval()
    out = tmp_path_factory.mktemp("fuzz")
    x = np.random.default_rng(seed).uniform(-20, 20, size=(100, WIDTH))
    hc = None
    try:
        hc = _hls_config(model, cfg)                # hls4ml's own config builder traces the model too
        plain = _plain(model, hc, cfg["io_type"], out / "plain")
        expected = np.asarray(plain.predict(x)).reshape(100, -1)
    except Exception as e:                          # plain hls4ml fails: fxsplit must refuse, clearly
        plain_error = e
    else:
        plain_error = None
    try:
        design = fxsplit.compile(model, (WIDTH,), hls_config=hc, config={**FAST, "io_type": cfg["io_type"]},
                                 output_dir=out / "fx", progress=False,
                                 cache_dir=tmp_path_factory.getbasetemp() / "fuzz-cache")
    except fxsplit.FxsplitError as e:
        if plain_error is None:
            # fxsplit may refuse only what it cannot make bit-exact: a cut through a group hls4ml merges
            assert "merges" in str(e) and cuts, (program, cuts, cfg, str(e))
        event("refused: plain hls4ml fails too" if plain_error is not None else "refused: a cut through a merged group")
        return
    assert plain_error is None, f"plain hls4ml fails ({plain_error!r}) but fxsplit compiled {program} {cfg}"
    assert len(design.partitions) == len(cuts) + 1
    ours = np.asarray(design.predict(x)).reshape(100, -1)
    assert np.array_equal(ours, expected), (program, cuts, cfg, int(np.sum(ours != expected)))
    res = design.verify(x)
    assert res.bit_exact, (program, cuts, cfg, res.details[:3])
    event(f"bit-exact vs plain hls4ml, {len(cuts) + 1} partition(s)")
