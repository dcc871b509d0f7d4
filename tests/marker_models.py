"""Models that spell the functional cut marker every way a user might (for test_markers.py).

Module-level ``import fxsplit`` as in a user's model file; the helper ``cut_here`` lives in
another module (marker_helpers) and calls the marker itself.
"""

from torch import nn

import fxsplit
import fxsplit as fxs
from fxsplit import cut
from fxsplit import cut as split_here

import marker_helpers


class _Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)


class ModuleAttribute(_Base):
    def forward(self, x):
        return self.fc2(fxsplit.cut(self.act(self.fc1(x)), "tail"))


class PackageAlias(_Base):
    def forward(self, x):
        return self.fc2(fxs.cut(self.act(self.fc1(x)), "tail"))


class FromImport(_Base):
    def forward(self, x):
        return self.fc2(cut(self.act(self.fc1(x)), "tail"))


class FromImportAlias(_Base):
    def forward(self, x):
        return self.fc2(split_here(self.act(self.fc1(x)), name="tail"))


class LocalImport(_Base):
    def forward(self, x):
        from fxsplit import cut as c
        return self.fc2(c(self.act(self.fc1(x)), "tail"))


class LocalModuleImport(_Base):
    def forward(self, x):
        import fxsplit.frontend.markers
        return self.fc2(fxsplit.frontend.markers.cut(self.act(self.fc1(x)), "tail"))


class HelperInOtherModule(_Base):
    def forward(self, x):
        return self.fc2(marker_helpers.cut_here(self.act(self.fc1(x))))


class CutModule(_Base):
    def __init__(self):
        super().__init__()
        self.cut = fxsplit.Cut("tail")

    def forward(self, x):
        return self.fc2(self.cut(self.act(self.fc1(x))))


ALL = [ModuleAttribute, PackageAlias, FromImport, FromImportAlias, LocalImport, LocalModuleImport,
       HelperInOtherModule, CutModule]


class MarkerInsideLeaf(nn.Module):
    """A torch.nn leaf subclass whose forward calls cut(): invisible to torch.fx, must be refused."""

    class _Leaf(nn.ReLU):
        def forward(self, x):
            return cut(super().forward(x), "tail")

    _Leaf.__module__ = "torch.nn.modules.activation"    # torch.fx keeps it as one leaf node

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(8, 8), self._Leaf(), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class UncalledCut(_Base):
    def __init__(self):
        super().__init__()
        self.cut = fxsplit.Cut("tail")

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CutOnTuple(_Base):
    def forward(self, x):
        h = self.act(self.fc1(x))
        h, _ = cut((h, x), "tail")
        return self.fc2(h)
