"""The handler matrix: every layer and operation hls4ml 1.3's PyTorch converter registers
(``get_supported_pytorch_layers()``, read at collection time: a new handler becomes a new case, and a case
that fails until tests/handler_models.py has a model for it), in io_parallel and io_stream, placed mid-model
with a cut right before and right after it.

Per case (``handler_models.run_case``): plain hls4ml converts and compiles the uncut model; where it fails,
fxsplit must raise an FxsplitError saying so. Otherwise fxsplit's uncut C simulation equals plain hls4ml's
``predict`` bit for bit, and the stitched design equals the uncut one bit for bit. A cut fxsplit refuses
because hls4ml merges layers across it must be a true refusal (plain hls4ml's layer list lacks the
operation's layer), and the legal cut(s) are then built and checked alone.

``python scripts/handler_matrix.py`` prints the same cases as a Markdown table."""

from __future__ import annotations

import pytest

from handler_models import BUILDERS, IO_TYPES, build_pool, registry, run_case

HANDLERS = registry()


def test_registry_is_read_and_every_builder_is_a_registry_name():
    assert len(HANDLERS) >= 40, HANDLERS          # hls4ml 1.3 registers 46 names
    stale = sorted(set(BUILDERS) - set(HANDLERS))
    assert not stale, f"tests/handler_models.py builds models for names hls4ml no longer registers: {stale}"


@pytest.fixture(scope="module")
def matrix_cache(tmp_path_factory):
    """One build cache for the matrix: the producer and consumer partitions many cases share build once."""
    return tmp_path_factory.mktemp("handler_matrix_cache")


@pytest.fixture(scope="module")
def matrix_pool():
    """One warm process pool for the matrix (fxsplit.compile(executor=...)): saves a pool start per case."""
    with build_pool() as pool:
        yield pool


@pytest.mark.parametrize("io_type", IO_TYPES)
@pytest.mark.parametrize("handler", HANDLERS)
def test_handler(handler, io_type, tmp_path, matrix_cache, matrix_pool):
    row = run_case(handler, io_type, tmp_path, cache_dir=matrix_cache, executor=matrix_pool)
    assert not row.failures, "\n".join(row.failures)
    cells = (row.uncut, row.before, row.after)
    assert all(cells) and not any(c.startswith("FAIL") for c in cells), cells
