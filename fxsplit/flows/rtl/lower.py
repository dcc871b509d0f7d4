"""Lower an hls4ml ModelGraph (io_parallel, Vivado backend) to Verilog through da4ml.

The lowering reproduces hls4ml's C simulation bit for bit: every layer is traced
symbolically with ``da4ml.trace`` following the exact arithmetic of hls4ml's
``nnet_utils`` templates (per-product casts into ``accum_t``, bias cast into
``accum_t``, the final cast into ``result_t`` with that type's rounding and
overflow modes, ...).  Anything we cannot match exactly is refused up front with
an :class:`~fxsplit.errors.FxsplitError`.

The work is split so that the slow part can run in another process; this module gathers the stages:

- :mod:`.rtltype`: types as ``(signed, W, I, rounding, overflow)``, parsed by :func:`fxsplit.fixed.parse_type`;
- :mod:`.program` (fast, main process): :func:`check_rtl_supported` raises if a layer/type is unsupported,
  :func:`extract_program` turns the ModelGraph into a plain, picklable dict (numpy arrays, tuples, strings;
  no hls4ml objects);
- :mod:`.trace` (worker process): :func:`trace_program` traces the program with da4ml;
- :mod:`.emit` (slow, worker process): :func:`emit_verilog` writes Verilog into a work directory;
- :mod:`.names`: Verilog identifiers of tensor ports.

Port encoding (contract with :mod:`fxsplit.flows.rtl.stitch` and :mod:`fxsplit.flows.rtl.testbench`)
-------------------------------------------------------------------------------
The wrapper module has ``clk``, ``in_valid``, ``out_valid`` and one Verilog port per
tensor, named after the tensor (see :func:`verilog_name`).  Each element is the raw
two's-complement integer of exactly the hls4ml type of that port (``W`` bits,
value = raw * 2**-frac; unsigned types are stored unsigned); element 0 sits in the LSBs,
elements are in the C order of the channels-last shape.  da4ml narrows bit widths
internally; the wrapper sign/zero-extends back to the exact hls4ml type.
"""

from __future__ import annotations

from .emit import emit_verilog
from .names import valid_shift_register, verilog_name
from .program import check_rtl_supported, extract_program, port_layout
from .rtltype import (SUPPORTED_OVERFLOW, SUPPORTED_ROUNDING, UnsupportedType, from_raw, parse_precision, quantize_raw,
                      raw_to_unsigned, to_raw, type_frac, type_kif, type_raw_range, type_str, unsigned_to_raw)
from .trace import reciprocal_constant, trace_program

__all__ = ['emit_verilog', 'valid_shift_register', 'verilog_name', 'check_rtl_supported', 'extract_program',
           'port_layout', 'SUPPORTED_OVERFLOW', 'SUPPORTED_ROUNDING', 'UnsupportedType', 'from_raw', 'parse_precision',
           'quantize_raw', 'raw_to_unsigned', 'to_raw', 'type_frac', 'type_kif', 'type_raw_range', 'type_str',
           'unsigned_to_raw', 'reciprocal_constant', 'trace_program']
