"""2x2 max pooling as strided maxima: torch's values bit for bit, torch's own op wherever a gradient is taken."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ppl_audit.classifiers.cnn import PatchCNN
from ppl_audit.classifiers.lenet import LeNet5
from ppl_audit.classifiers.pooling import MaxPool2x2, max_pool_2x2


@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (2, 6, 28, 28), (2, 16, 10, 10), (1, 2, 5, 7), (3, 9, 8),
                                   (1, 1, 2, 2)])
def test_values_equal_torch_max_pool_bit_for_bit(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x.view(-1)[::7] = 0.0  # ties, as ReLU maps give
    x.view(-1)[3] = float("-inf")
    assert torch.equal(max_pool_2x2(x), F.max_pool2d(x, 2))


def test_nan_propagates_as_in_torch():
    x = torch.rand(1, 1, 4, 4)
    x[0, 0, 1, 2] = float("nan")
    assert torch.equal(max_pool_2x2(x).isnan(), F.max_pool2d(x, 2).isnan())
    assert int(max_pool_2x2(x).isnan().sum()) == 1


def test_a_map_under_two_by_two_is_refused_as_torch_refuses_it():
    with pytest.raises(RuntimeError):
        max_pool_2x2(torch.zeros(1, 1, 1, 4))


def test_gradients_are_torch_max_pools_even_with_ties():
    # torch sends a window's gradient to one of its tied maxima; two maxima would split it
    x = torch.zeros(1, 1, 4, 4, requires_grad=True)
    (ours,) = torch.autograd.grad(max_pool_2x2(x).sum(), x)
    (torchs,) = torch.autograd.grad(F.max_pool2d(x, 2).sum(), x)
    assert torch.equal(ours, torchs) and float(ours.sum()) == 4.0


@pytest.mark.parametrize("net, shape", [(PatchCNN(2, 64), (8, 1, 64, 64)), (LeNet5(), (8, 1, 28, 28))])
def test_networks_predict_as_with_nn_max_pool_and_keep_their_state_dict_keys(net, shape):
    torch.manual_seed(0)
    net.eval()
    before = with_torch_pooling(net)
    x = torch.rand(shape)
    with torch.no_grad():
        assert torch.equal(net(x), before(x))
    assert sum(isinstance(m, nn.MaxPool2d) for m in before.modules()) == 2
    assert not any(isinstance(m, MaxPool2x2) for m in before.modules())
    assert list(net.state_dict()) == list(before.state_dict())  # cached weights of either version load into the other


def with_torch_pooling(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every :class:`MaxPool2x2` swapped for ``nn.MaxPool2d(2)``: the network as it was
    before (``benchmarks/evaluation_cost.py`` times it too)."""
    before = copy.deepcopy(module)
    for parent in list(before.modules()):
        for key, child in list(parent.named_children()):
            if isinstance(child, MaxPool2x2):
                setattr(parent, key, nn.MaxPool2d(2))
    return before
