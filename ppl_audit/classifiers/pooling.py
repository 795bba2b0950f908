"""2x2 max pooling that gives torch's values at a fraction of its CPU cost.

``F.max_pool2d(x, 2)`` also computes the argmax indices that its backward
needs; on a CPU that made it slower than the convolution before it (18% of a
house/rocket level set's time). Two element-wise maxima over strided views
give the same values bit for bit in about a seventh of the time
(``benchmarks/pooling_cost.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)``'s values: a 2x2 window, stride 2, an odd last row or column dropped.

    Where autograd records through ``x``, off the CPU, or for a map under 2x2 (torch's error), torch's
    own op runs, so that gradients (which pass to one of tied inputs) and GPU speed stay torch's.

    Examples
    --------
    >>> x = torch.arange(30.0).reshape(1, 1, 5, 6)
    >>> torch.equal(max_pool_2x2(x), F.max_pool2d(x, 2))
    True
    """
    if x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()) or x.ndim < 3 or min(x.shape[-2:]) < 2:
        return F.max_pool2d(x, 2)
    x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
    rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` through :func:`max_pool_2x2`; it has no state, so state dicts are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled ``x``."""
        return max_pool_2x2(x)


__all__ = ["MaxPool2x2", "max_pool_2x2"]
