"""Adversarial out-of-distribution inputs: noise pushed up a generative model's likelihood.

Choi & Jang ("Generative Ensembles for Robust Anomaly Detection") show that a
single likelihood model is easy to fool: start from Gaussian noise and take
fast-gradient-sign (FGSM, Goodfellow et al. 2015) steps that *increase* the
model's ``log p(x)``; the result is noise that the model finds likely. An
ensemble's WAIC is meant to resist this, since the other members were not
attacked. :func:`fgsm_from_noise` makes those inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ppl_audit._device import resolve_device
from ppl_audit.data.transforms import GAUSSIAN_NOISE_MEAN, GAUSSIAN_NOISE_STD, gaussian_noise
from ppl_audit.errors import InvalidInputError, ModelOutputError

IMAGE_SHAPE = (1, 28, 28)  # the paper's MNIST / Fashion-MNIST inputs


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def fgsm_from_noise(
    log_likelihood_fn: Callable[[torch.Tensor], torch.Tensor],
    num_images: int,
    *,
    epsilon: float,
    steps: int = 1,
    generator: torch.Generator | None,
    image_shape: Sequence[int] = IMAGE_SHAPE,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Gaussian noise moved up a model's log-likelihood by signed-gradient steps.

    Starts from pixels i.i.d. ``N(0.5, 0.25^2)`` clipped to ``[0, 1]``
    (:func:`ppl_audit.data.transforms.gaussian_noise`) and takes ``steps``
    steps ``x <- clip(x + epsilon * sign(grad_x log p(x)), 0, 1)``.

    The gradient is that of ``sum_n log p(x_n)``, which is every image's own
    gradient as long as ``log_likelihood_fn`` treats images independently
    (put models with batch normalisation in ``eval()`` mode).

    Parameters
    ----------
    log_likelihood_fn : callable
        Differentiable ``(N, C, H, W) -> (N,)``, one model's ``log p(x)``.
    num_images : int
        ``N >= 1``.
    epsilon : float
        Step size in pixel units, ``> 0``.
    steps : int
        Number of signed-gradient steps, ``>= 1`` (1 is classic FGSM).
    generator : torch.Generator or None
        Draws the starting noise (the global RNG when ``None``); the same
        seed gives the same images.
    image_shape : sequence of int
        ``(C, H, W)``; the paper's ``(1, 28, 28)`` by default.
    device : str or torch.device
        Where the images and the gradient live (``"auto"`` picks CUDA when present).

    Returns
    -------
    torch.Tensor
        ``(num_images, *image_shape)`` float32 in ``[0, 1]``, detached.

    Raises
    ------
    InvalidInputError
        ``epsilon``, ``steps``, ``num_images`` or ``image_shape`` out of range.
    ModelOutputError
        ``log_likelihood_fn`` returned the wrong shape, a non-finite value or
        a non-finite gradient.

    Examples
    --------
    >>> log_p = lambda x: -(x - 0.8).pow(2).flatten(1).sum(1)
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = fgsm_from_noise(log_p, 4, epsilon=0.05, steps=3, generator=gen)
    >>> x.shape, bool(x.min() >= 0) and bool(x.max() <= 1)
    (torch.Size([4, 1, 28, 28]), True)
    """
    num_images = _positive_int(num_images, "num_images")
    steps = _positive_int(steps, "steps")
    valid_number = isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool)
    if not (valid_number and math.isfinite(epsilon) and epsilon > 0):
        raise InvalidInputError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise InvalidInputError(f"image_shape must be three positive integers (C, H, W), got {image_shape!r}")
    if not callable(log_likelihood_fn):
        raise InvalidInputError(f"log_likelihood_fn must be callable, got {type(log_likelihood_fn).__name__}")
    target = resolve_device(device)
    x = gaussian_noise(torch.zeros((num_images, *shape), device=target), generator=generator,
                       mean=GAUSSIAN_NOISE_MEAN, std=GAUSSIAN_NOISE_STD)
    for step in range(steps):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            log_p = log_likelihood_fn(x)
            if not isinstance(log_p, torch.Tensor) or log_p.shape != (num_images,):
                got = tuple(log_p.shape) if isinstance(log_p, torch.Tensor) else type(log_p).__name__
                raise ModelOutputError(f"log_likelihood_fn returned {got}, expected a ({num_images},) tensor")
            bad = int((~torch.isfinite(log_p)).sum())
            if bad:
                raise ModelOutputError(
                    f"log_likelihood_fn returned {bad} NaN or inf value(s) of {num_images} at FGSM step {step + 1}"
                )
            if not log_p.requires_grad:
                raise ModelOutputError("log_likelihood_fn is not differentiable in x (its output has no gradient)")
            (grad,) = torch.autograd.grad(log_p.sum(), x)
        if not torch.isfinite(grad).all():
            raise ModelOutputError(f"log_likelihood_fn has a NaN or inf gradient at FGSM step {step + 1}")
        x = (x.detach() + epsilon * grad.sign()).clamp_(0.0, 1.0)
    return x.detach()


__all__ = [
    "IMAGE_SHAPE",
    "fgsm_from_noise",
]
