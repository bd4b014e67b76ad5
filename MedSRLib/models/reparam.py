"""placeholder"""
from torch import nn
from .idman import fold_weight_norm
def prepare_for_inference(module: nn.Module) -> nn.Module:
    return fold_weight_norm(module).eval()
