"""Small CNNs on 8x8 inputs with skip connections; cuts inside residual blocks."""

import torch
from torch import nn

from .. import Cut, cut


class ResidualCNN(nn.Module):
    """conv-bn-relu, a residual block with a Cut *inside* it (the skip tensor crosses the cut),
    max-pool, a second conv, flatten and a classifier."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(4)
        self.relu0 = nn.ReLU()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.cut_in_block = Cut("block_tail")
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.cut_head = Cut("head")
        self.conv3 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = self.relu0(self.bn0(self.conv0(x)))
        y = self.relu1(self.conv1(x))
        y = self.cut_in_block(y)
        y = self.conv2(y)
        x = self.relu2(x + y)            # skip connection over the cut
        x = self.cut_head(self.pool(x))
        x = self.relu3(self.conv3(x))
        return self.fc(self.flatten(x))


class BranchyCNN(nn.Module):
    """Two branches joined by a concatenation, a bypass that skips a whole partition,
    and the functional cut() marker."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.branch_a = nn.Conv2d(4, 4, 3, padding=1)
        self.relu_a = nn.ReLU()
        self.branch_b = nn.Conv2d(4, 2, 1)
        self.relu_b = nn.ReLU()
        self.mix = nn.Conv2d(6, 4, 3, padding=1)
        self.relu_m = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        s = self.relu(self.stem(x))
        a = self.relu_a(self.branch_a(s))
        a = cut(a, "branches")
        b = self.relu_b(self.branch_b(s))
        m = torch.cat([a, b], dim=1)
        m = cut(m, "mix")
        m = self.relu_m(self.mix(m)) + s          # s bypasses the 'branches' partition
        m = self.pool(m)
        return self.fc(torch.flatten(m, 1))
