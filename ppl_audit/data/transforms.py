"""Synthetic out-of-distribution images made from a batch of in-distribution ones.

Four transforms, each a batched tensor operation over ``(N, C, H, W)`` images
in ``[0, 1]`` that returns a new batch of the same shape, dtype and device:

=================== ======================================================================
``uniform-noise``   every pixel i.i.d. U[0, 1]; the input's pixels are not used
``gaussian-noise``  every pixel i.i.d. N(0.5, 0.25^2) clipped to [0, 1]; pixels not used
``hflip``           mirror left-right (reverse the width axis)
``vflip``           mirror top-bottom (reverse the height axis)
=================== ======================================================================

An audit file names them by these strings; :func:`apply_transform` and
:data:`TRANSFORMS` map the names onto the functions. Noise is drawn with an
explicit :class:`torch.Generator`: it is drawn on the generator's device and
then moved to the images' device, so a CPU generator with a given seed gives
the same noise whether the images live on the CPU or a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

import torch

from ppl_audit.validators import check_images
from ppl_audit.errors import InvalidInputError

# Gaussian-noise OoD images: centred in [0, 1] with two standard deviations
# either side inside it, so about 4.6% of pixels (2 * Phi(-2)) are clipped
# to 0 or 1 and the rest keep a Gaussian's shape.
GAUSSIAN_NOISE_MEAN = 0.5
GAUSSIAN_NOISE_STD = 0.25


def _draw(kind: str, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard uniform or normal noise shaped like ``x`` (checked), on ``x``'s device and dtype."""
    check_images(x)
    device = x.device if generator is None else generator.device
    sampler = torch.rand if kind == "uniform" else torch.randn
    noise = sampler(x.shape, generator=generator, device=device, dtype=x.dtype)
    return noise.to(x.device)


def _flip(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` (checked) reversed along ``dim``."""
    check_images(x)
    return x.flip(dim)


def uniform_noise(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images whose pixels are i.i.d. U[0, 1], shaped like ``x``.

    Parameters
    ----------
    x : torch.Tensor
        float ``(N, C, H, W)`` in ``[0, 1]``; only its shape, dtype and device are used.
    generator : torch.Generator, optional
        Source of randomness (the global RNG when ``None``).

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``x``.

    Examples
    --------
    >>> out = uniform_noise(torch.zeros(2, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    >>> out.shape, bool(out.min() >= 0), bool(out.max() < 1)
    (torch.Size([2, 1, 28, 28]), True, True)
    """
    return _draw("uniform", x, generator)


def gaussian_noise(x: torch.Tensor, *, generator: torch.Generator | None = None,
                   mean: float = GAUSSIAN_NOISE_MEAN, std: float = GAUSSIAN_NOISE_STD) -> torch.Tensor:
    """Images whose pixels are i.i.d. ``N(mean, std^2)`` clipped to ``[0, 1]``, shaped like ``x``.

    Parameters
    ----------
    x : torch.Tensor
        float ``(N, C, H, W)`` in ``[0, 1]``; only its shape, dtype and device are used.
    generator : torch.Generator, optional
        Source of randomness (the global RNG when ``None``).
    mean, std : float
        Of the Gaussian before clipping; default 0.5 and 0.25.

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``x``, values in ``[0, 1]``.

    Examples
    --------
    >>> out = gaussian_noise(torch.zeros(4, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    >>> bool(out.min() >= 0) and bool(out.max() <= 1), round(float(out.mean()), 1)
    (True, 0.5)
    """
    if not (isinstance(mean, (int, float)) and math.isfinite(mean)):
        raise InvalidInputError(f"gaussian_noise mean must be a finite number, got {mean!r}")
    if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
        raise InvalidInputError(f"gaussian_noise std must be a positive finite number, got {std!r}")
    return _draw("normal", x, generator).mul_(std).add_(mean).clamp_(0.0, 1.0)


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror images left-right (reverse the width axis).

    Examples
    --------
    >>> hflip(torch.tensor([[[[0.0, 0.5, 1.0]]]])).flatten().tolist()
    [1.0, 0.5, 0.0]
    """
    return _flip(x, -1)


def vflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror images top-bottom (reverse the height axis).

    Examples
    --------
    >>> vflip(torch.tensor([[[[0.0], [1.0]]]])).flatten().tolist()
    [1.0, 0.0]
    """
    return _flip(x, -2)


@dataclass(frozen=True)
class ImageTransform:
    """A named transform as an audit file refers to it.

    Parameters
    ----------
    name : str
        The registry name, e.g. ``"hflip"``.
    fn : callable
        ``fn(x, generator) -> images``.
    random : bool
        Whether the output depends on the generator.
    description : str
        One line for reports.
    """

    name: str
    fn: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
    random: bool
    description: str

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.fn(x, generator)


TRANSFORMS: Mapping[str, ImageTransform] = MappingProxyType({
    t.name: t
    for t in (
        ImageTransform("uniform-noise", lambda x, g: uniform_noise(x, generator=g), True,
                       "pixels i.i.d. U[0, 1]"),
        ImageTransform("gaussian-noise", lambda x, g: gaussian_noise(x, generator=g), True,
                       f"pixels i.i.d. N({GAUSSIAN_NOISE_MEAN}, {GAUSSIAN_NOISE_STD}^2) clipped to [0, 1]"),
        ImageTransform("hflip", lambda x, g: hflip(x), False, "mirrored left-right"),
        ImageTransform("vflip", lambda x, g: vflip(x), False, "mirrored top-bottom"),
    )
})


def available_transforms() -> tuple[str, ...]:
    """Names an audit file may use.

    Examples
    --------
    >>> available_transforms()
    ('uniform-noise', 'gaussian-noise', 'hflip', 'vflip')
    """
    return tuple(TRANSFORMS)


def get_transform(name: str) -> ImageTransform:
    """The transform registered as ``name``.

    Raises
    ------
    InvalidInputError
        Unknown name; the message lists the known ones.

    Examples
    --------
    >>> get_transform("vflip").random
    False
    """
    if name not in TRANSFORMS:
        raise InvalidInputError(f"unknown image transform {name!r}; known transforms: {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name]


def apply_transform(name: str, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the transform registered as ``name`` to a batch of images.

    Parameters
    ----------
    name : str
        One of :func:`available_transforms`.
    x : torch.Tensor
        float ``(N, C, H, W)`` in ``[0, 1]``.
    generator : torch.Generator, optional
        Used by the noise transforms (the global RNG when ``None``).

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``x``, values in ``[0, 1]``.

    Examples
    --------
    >>> x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    >>> torch.equal(apply_transform("hflip", apply_transform("hflip", x)), x)
    True
    """
    return get_transform(name)(x, generator=generator)


__all__ = [
    "GAUSSIAN_NOISE_MEAN",
    "GAUSSIAN_NOISE_STD",
    "TRANSFORMS",
    "ImageTransform",
    "apply_transform",
    "available_transforms",
    "gaussian_noise",
    "get_transform",
    "hflip",
    "uniform_noise",
    "vflip",
]
