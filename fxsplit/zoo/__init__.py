"""fxsplit model zoo. Split points are written in the model source with ``fxsplit.Cut``.

``ZOO`` maps a name to ``(factory, input_shape)``; factories build a model with
deterministic weights (seeded) in eval mode, with BatchNorm statistics set to
non-trivial values so the numerics are exercised.
"""

from .jet_tagger import JetTagger, WideMLP
from .residual_cnn import ResidualCNN, BranchyCNN
from .resnet20 import ResNet20, ResNet20Half, ResNet20Small
from .precision import folded_weights, integer_bits, spanning_config
from .qat import QATJetTagger, QATResidualCNN

ZOO = {
    "jet_tagger": (JetTagger, (16,)),
    "wide_mlp": (WideMLP, (64,)),
    "residual_cnn": (ResidualCNN, (3, 8, 8)),
    "branchy_cnn": (BranchyCNN, (4, 8, 8)),
    "resnet20": (ResNet20, (3, 32, 32)),
    "resnet20_small": (ResNet20Small, (3, 16, 16)),  # ResNet20's topology at 3/6/12 channels
    "resnet20_half": (ResNet20Half, (3, 32, 32)),    # at 8/16/32 channels
    "qat_jet_tagger": (QATJetTagger, (16,)),       # brevitas, quantization-aware
    "qat_residual_cnn": (QATResidualCNN, (3, 8, 8)),
}


def build(name: str, seed: int = 0):
    """Instantiate zoo model ``name`` with seeded weights, in eval mode. Returns (model, input_shape)."""
    import torch
    if name not in ZOO:
        raise KeyError(f"unknown zoo model {name!r}; known: {sorted(ZOO)}")
    factory, shape = ZOO[name]
    torch.manual_seed(seed)
    model = factory()
    randomize_batchnorm(model, seed)
    if any(type(m).__module__.startswith("brevitas.") for m in model.modules()):
        from .qat import calibrate
        calibrate(model, shape, seed)       # the activation scales a quantization-aware training run learns
    return model.eval(), shape


def randomize_batchnorm(model, seed: int = 0) -> None:
    """Give BatchNorm layers non-trivial running statistics and affine parameters."""
    import torch
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
