"""hls4ml's jet-tagging MLP (16-64-32-32-5) and a wider MLP, with Cut markers in the source."""

from torch import nn

from .. import Cut


class JetTagger(nn.Module):
    """16 inputs -> 64 -> 32 -> 32 -> 5 with ReLU; three partitions."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 64)
        self.relu1 = nn.ReLU()
        self.cut1 = Cut("hidden")
        self.fc2 = nn.Linear(64, 32)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(32, 32)
        self.relu3 = nn.ReLU()
        self.cut2 = Cut("head")
        self.fc4 = nn.Linear(32, 5)

    def forward(self, x):
        x = self.cut1(self.relu1(self.fc1(x)))
        x = self.relu3(self.fc3(self.relu2(self.fc2(x))))
        return self.fc4(self.cut2(x))


class WideMLP(nn.Module):
    """64 -> 64 -> 64 -> 32 -> 5 with ReLU; one partition per hidden layer."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.relu1 = nn.ReLU()
        self.cut1 = Cut("l2")
        self.fc2 = nn.Linear(64, 64)
        self.relu2 = nn.ReLU()
        self.cut2 = Cut("l3")
        self.fc3 = nn.Linear(64, 32)
        self.relu3 = nn.ReLU()
        self.cut3 = Cut("head")
        self.fc4 = nn.Linear(32, 5)

    def forward(self, x):
        x = self.cut1(self.relu1(self.fc1(x)))
        x = self.cut2(self.relu2(self.fc2(x)))
        x = self.cut3(self.relu3(self.fc3(x)))
        return self.fc4(x)
