import pytest
import torch

from ganlib.models import DCGANCritic, DCGANGenerator, MLPCritic, MLPGenerator
from ganlib.models.dcgan import upsampling_plan


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("d_norm", ["none", "layer", "batch"])
def test_dcgan_is_sized_from_the_image(shape, d_norm):
    g, d = DCGANGenerator(16, shape, 8), DCGANCritic(shape, 8, d_norm)
    x = g(torch.randn(4, 16))
    assert x.shape == (4, *shape) and x.abs().max() <= 1
    assert d(x).shape == (4,)
    assert isinstance(list(d.modules())[-1], torch.nn.Linear)  # linear last layer
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    assert has_bn == (d_norm == "batch")


def test_upsampling_plan():
    assert upsampling_plan(8) == (4, 1) and upsampling_plan(28) == (7, 2) and upsampling_plan(32) == (4, 3)
    with pytest.raises(ValueError, match="too small"):
        upsampling_plan(5)


def test_mlp_width_depth_and_linear_output():
    g, d = MLPGenerator(2, (2,), 32, 3), MLPCritic(2, 32, 3)
    linears = [m for m in d.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 and linears[-1].out_features == 1
    assert g(torch.randn(5, 2)).shape == (5, 2) and d(torch.randn(5, 2)).shape == (5,)
    assert MLPGenerator(4, (1, 8, 8), 16, 1)(torch.randn(3, 4)).shape == (3, 1, 8, 8)
