"""ResNet20 for CIFAR-10 (He et al. 2016): 3 stages x 3 basic blocks, 16/32/64 channels,
1x1-conv projection shortcuts when the shape changes. Cut markers between the stages
and before the head give four partitions.

``ResNet20Small``: the same topology at reduced width (3/6/12 channels) on 16x16 inputs, average pooling by 4:
a network of ResNet20's shape whose every layer a streaming design can hold."""

from torch import nn

from .. import Cut


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(y + s)


class ResNet20(nn.Module):
    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64), pool: int = 8):
        super().__init__()
        w1, w2, w3 = widths
        self.conv = nn.Conv2d(3, w1, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU()
        self.stage1 = nn.Sequential(*[BasicBlock(w1, w1, 1) for _ in range(3)])
        self.cut2 = Cut("stage2")
        self.stage2 = nn.Sequential(BasicBlock(w1, w2, 2), BasicBlock(w2, w2, 1), BasicBlock(w2, w2, 1))
        self.cut3 = Cut("stage3")
        self.stage3 = nn.Sequential(BasicBlock(w2, w3, 2), BasicBlock(w3, w3, 1), BasicBlock(w3, w3, 1))
        self.cut_head = Cut("head")
        self.pool = nn.AvgPool2d(pool)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        x = self.stage2(self.cut2(self.stage1(x)))
        x = self.stage3(self.cut3(x))
        x = self.pool(self.cut_head(x))
        return self.fc(self.flatten(x))


class ResNet20Small(ResNet20):
    """ResNet20 at 3/6/12 channels for 16x16 inputs (average pooling by 4 after the two stride-2 stages)."""

    def __init__(self, num_classes: int = 10):
        super().__init__(num_classes, widths=(3, 6, 12), pool=4)


class ResNet20Half(ResNet20):
    """ResNet20 at half width (8/16/32 channels) on CIFAR-10's 32x32 inputs: the width between the reduced model
    the tests stream and the full one."""

    def __init__(self, num_classes: int = 10):
        super().__init__(num_classes, widths=(8, 16, 32), pool=8)
