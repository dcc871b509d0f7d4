"""The partitioning IR shared by every flow: ports, partitions, the partition DAG.

Conventions (all flows rely on them):
- A *port* is one tensor that crosses a partition boundary (or a model input/output).
  Its name is the torch.fx node name of that tensor in the uncut graph, so it is
  unique in the design and identical on both sides of a cut.
- ``Port.shape`` excludes the batch dimension and is **channels-last** (hls4ml's
  layout): a PyTorch tensor of shape (C, H, W) has port shape (H, W, C); (C, L) -> (L, C).
  ``Port.torch_shape`` keeps the PyTorch (channels-first) shape. The one exception: an hls4ml
  config with ``ChannelsLastConversion='off'`` keeps PyTorch's layout everywhere
  (``Partitioning.channels_last`` is False and ``Port.shape == Port.torch_shape``).
- ``Port.precision`` is the hls4ml type of the tensor on the wire (e.g. ``fixed<16,6>``),
  filled in by lowering; producer and consumers of a port use exactly this type.
- ``Partition.sources[port]`` names the producer of each input port: another
  partition's name, or ``"input"`` for a model input.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import torch.fx

MODEL_INPUT = "input"          # the producer of a model input (``Partition.sources``)
STITCHED = "stitched"          # the stitched design: its jobs' partition and its directory in output_dir
MONOLITHIC = "monolithic"      # the uncut reference: its jobs' partition, project name and directory


_CUT_RE = re.compile(r"^(?P<layer>[^@\s]+)@(?P<at>-?\d+)$")


@dataclass(frozen=True)
class CutPoint:
    """A cut besides the model's markers: before the first operation of ``layer`` (a module's qualified name, as in
    ``model.named_modules()``, or a traced operation's name), or, with ``output``, inside the Linear ``layer``
    before its output ``output`` (written ``"fc2@32"``; :mod:`fxsplit.frontend.layersplit`)."""
    layer: str
    output: int | None = None

    def __str__(self) -> str:
        return self.layer if self.output is None else f"{self.layer}@{self.output}"

    @classmethod
    def of(cls, entry: "str | CutPoint") -> "CutPoint":
        """``"fc2"`` / ``"fc2@32"`` / a CutPoint -> a CutPoint; anything else is an error."""
        if isinstance(entry, CutPoint):
            return entry
        if not isinstance(entry, str):
            from .errors import FxsplitError
            raise FxsplitError(f"splits must be a list of module names (strings), got {entry!r}")
        m = _CUT_RE.match(entry)
        return cls(m.group("layer"), int(m.group("at"))) if m else cls(entry)


@dataclass
class Port:
    name: str
    shape: tuple[int, ...]
    torch_shape: tuple[int, ...]
    precision: str | None = None

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "torch_shape": list(self.torch_shape),
                "precision": self.precision}


@dataclass
class Partition:
    name: str
    index: int
    module: torch.fx.GraphModule
    inputs: list[Port]
    outputs: list[Port]
    nodes: list[str]                       # fx node names (uncut graph) computed here
    sources: dict[str, str] = field(default_factory=dict)   # input port -> producer partition | "input"
    layers: list[str] = field(default_factory=list)        # module qualnames / ops, for reports

    def __repr__(self) -> str:
        ins = ", ".join(p.name for p in self.inputs)
        outs = ", ".join(p.name for p in self.outputs)
        return f"Partition({self.name!r}, in=[{ins}], out=[{outs}], nodes={len(self.nodes)})"


@dataclass
class Partitioning:
    graph: torch.fx.GraphModule            # the traced graph the partitions are cut from (markers erased)
    partitions: list[Partition]
    inputs: list[Port]                     # model inputs
    outputs: list[Port]                    # model outputs, in the order the model returns them
    output_sources: dict[str, str] = field(default_factory=dict)  # model output port -> producer partition
    channels_last: bool = True             # False: hls4ml's ChannelsLastConversion='off', ports in PyTorch layout
    float32_inputs: bool = False           # brevitas model: inputs are rounded to float32 (what brevitas reads)
    torch_exact: bool | None = None        # brevitas model: True if its own PyTorch output is exact (quantized, or
                                           # float32 sums that fit), so the design must equal it bit for bit
    float_scales: dict[str, tuple] = field(default_factory=dict)   # brevitas model: tensor -> the float scale its
                                           # values (integer levels) stand multiplied by (lower.brevitas Scaled)
    exact_graph: torch.fx.GraphModule | None = None   # brevitas model: the uncut graph with every brevitas layer
                                           # replaced by fxsplit's exact reading of it (float64 fixed-point maps):
                                           # what the design must compute, bit for bit (Design.verify checks it)
    outputs_torch_layout: bool = True      # Design returns outputs in PyTorch's layout; False: as the ports
                                           # (hls4ml's TransposeOutputs=False, its default for a user's hls_config)
    original: torch.fx.GraphModule | None = None   # with layer splits: the uncut graph as the model is written
                                                   # (``graph`` then holds the pieces; see fxsplit.frontend.layersplit)
    layer_splits: dict[str, dict] = field(default_factory=dict)   # original layer node -> its pieces and cats

    @property
    def uncut(self) -> torch.fx.GraphModule:
        """The model as written, markers erased: the uncut reference is built from it."""
        return self.original if self.original is not None else self.graph

    def origin(self, name: str) -> str:
        """The uncut graph's node that a node of ``graph`` computes (a piece of a split layer: the layer; a piece of
        its BatchNorm, or a cat joining them: the layer's output node)."""
        key = id(self.layer_splits), len(self.layer_splits)
        if getattr(self, "_origins", (None,))[0] != key:        # (read once per layer_splits, not per node)
            from .frontend.layersplit import origins
            self._origins = key, origins(self.layer_splits)
        return self._origins[1].get(name, name)

    def copy(self) -> "Partitioning":
        """The same partitioning with its own Port objects (graphs and modules shared): lowering types and lays
        out the copy, never the frontend's partitioning."""
        ports: dict[str, Port] = {}

        def cp(p: Port) -> Port:
            return ports.setdefault(p.name, dataclasses.replace(p))

        parts = [dataclasses.replace(part, inputs=[cp(p) for p in part.inputs], outputs=[cp(p) for p in part.outputs],
                                     nodes=list(part.nodes), sources=dict(part.sources), layers=list(part.layers))
                 for part in self.partitions]
        return dataclasses.replace(self, partitions=parts, inputs=[cp(p) for p in self.inputs],
                                   outputs=[cp(p) for p in self.outputs], output_sources=dict(self.output_sources))

    def port_types(self) -> dict[str, str | None]:
        """Every port's hls4ml type by name."""
        return {name: p.precision for name, p in self.ports().items()}

    def keep_torch_layout(self) -> None:
        """ChannelsLastConversion='off': every port keeps PyTorch's layout."""
        self.channels_last = False
        for p in self.ports().values():
            p.shape = tuple(p.torch_shape)

    def __getitem__(self, name: str) -> Partition:
        for p in self.partitions:
            if p.name == name:
                return p
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.partitions)

    def __iter__(self):
        return iter(self.partitions)

    def dag(self) -> dict[str, Any]:
        """The partition DAG as plain JSON-able data: the one description every stitcher reads.

        ``{"inputs": [port], "outputs": [port], "output_sources": {output port: partition},
        "partitions": [{"name", "inputs": [port], "outputs": [port], "sources": {input port: producer}}]}``
        with ``port = Port.to_dict()`` (channels-last shape and hls4ml precision)."""
        return {"inputs": [p.to_dict() for p in self.inputs], "outputs": [p.to_dict() for p in self.outputs],
                "output_sources": dict(self.output_sources),
                "partitions": [{"name": part.name, "inputs": [p.to_dict() for p in part.inputs],
                                "outputs": [p.to_dict() for p in part.outputs], "sources": dict(part.sources)}
                               for part in self.partitions]}

    def ports(self) -> dict[str, Port]:
        """Every port in the design by name."""
        out: dict[str, Port] = {p.name: p for p in self.inputs}
        for part in self.partitions:
            for p in part.outputs:
                out[p.name] = p
        return out
