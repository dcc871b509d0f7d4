"""brevitas quantization-aware models: every quantizer read exactly, or refused before any build.

A traced model holding ``brevitas.nn`` layers is read once, on the uncut graph, in eval mode (:func:`plan`), into
fxsplit's exact layers (``lower/quant.py``), which hls4ml's PyTorch converter takes through fxsplit's handlers:

- each activation quantizer (QuantIdentity, QuantReLU, QuantHardTanh) becomes an ``FxsQuantAct`` whose hls4ml type
  holds exactly brevitas' grid: ``bit_width`` bits, signedness, ``scale = 2**-frac`` (a power of two; a float
  scale: below),
  zero point 0, round half to even (``RoundSte``) / floor / toward zero, clamped (``SAT``, ``SAT_SYM`` for a
  narrow signed range);
- each QuantLinear / QuantConv1d / QuantConv2d becomes an ``FxsQuantDense`` / ``FxsQuantConv`` holding the values
  brevitas computes with: its quantized weight (integers times power-of-two scales, per tensor or per output
  channel; float scales: below) and the bias its bias quantizer hands the layer (or the float bias), each in the
  narrowest fixed-point type that holds every value; the sum is exact (hls4ml's ``auto`` accumulator);
- a BatchNorm followed by a quantizer becomes an ``FxsQuantBatchNorm``: a fixed-point scale and bias per channel,
  found so that every input the channel can receive gets brevitas' level (checked exhaustively, else refused);
- float (not power-of-two) scales: a float-scaled quantizer's tensor holds its integer levels (``fixed<W,W>``), a
  QuantLinear / QuantConv with float weight scales (per tensor or per output channel) integer weights and an exact
  integer accumulator; the scale (``s_in * s_w[c]``) is carried by the reader (:class:`.grid.Scaled`), not by the
  hardware, and absorbed by the consumer: a BatchNorm and quantizer, or a quantizer alone, folded into a fixed-point
  scale and bias on the integers (checked on every reachable input), ReLU, max pooling and reshapes (a per-tensor
  scale) keeping it, a sum of two tensors of one shared quantizer's scale, the exact product at a model output. An
  ``Int32Bias``/``Int16Bias`` bias is added as its integer, a float bias folded by a BatchNorm / quantizer right
  after the layer (elsewhere refused, as a sum of two scales and a flattened per-channel scale are). brevitas computes with float32 products there: its quantizer decisions that
  differ from the exact reading are counted on the calibration batch (``decisions_differing``) and the layer named
  in ``Plan.inexact_in_brevitas``;
- ReLU and max pooling of quantized values, reshapes and dropout keep the grid; the sum of two quantized tensors is
  exact; brevitas_examples' TensorNorm is a float affine, computed exactly from 24-bit coefficients and reported;
- a model input read by quantizers gets a type wide enough that every float32 value which can change their
  rounding is held exactly (``fixed<W,I,TRN,SAT>``, 24 fractional bits below the finest quantizer's step).

The reading is checked: every exact layer, fed brevitas' own input from a random batch, must give brevitas' own
output bit for bit wherever brevitas' float32 arithmetic is exact (``Plan.inexact_in_brevitas`` names where it is
not). ``Design.verify`` then compares the design to brevitas itself.

The reader is split by job: :mod:`.grid` (types and tables), :mod:`.layers` (quantizers, quantized layers),
:mod:`.norm` (BatchNorm and TensorNorm folds), :mod:`.reader` (the plan, its check, the frozen partitions),
:mod:`.qonnx` (the partitions and the uncut model exported as QONNX by brevitas' own exporter).
"""

from .grid import (ACTS, FLOAT32_BITS, GRID_MODULES, MAX_WIDTH, SAME_GRID_FUNCS, SAME_GRID_MODULES, Grid, Plan,
                   exact_type, is_brevitas, uses_brevitas)
from .reader import freeze_partitions, plan

__all__ = ["ACTS", "FLOAT32_BITS", "GRID_MODULES", "MAX_WIDTH", "SAME_GRID_FUNCS", "SAME_GRID_MODULES", "Grid", "Plan",
           "exact_type", "is_brevitas", "uses_brevitas", "freeze_partitions", "plan"]
