"""A labelled prior: a mixture over per-class generators that knows each sample's true class.

Generative process (one generator per class, e.g. ``models/mnist-class-vae.toml``)::

    c ~ Categorical(w) over the included classes     (uniform by default)
    z ~ N(0, I_D)
    x = generator_c(z)

The latent is ``(u_class, z1 .. zD)`` with ``u_class ~ N(0, 1)``; the class is
the quantile cell of ``Phi(u_class)`` under the cumulative weights. So the
whole latent is a standard normal (its own standard-normal transform), every
sampler moves in a smooth density, and a move of ``u_class`` across a cell
boundary switches the generator. Leaving a class out (``classes=``) gives the
"every class but ``k``" prior that the confidently-wrong audit samples from.

Each image comes from exactly one generator, and two continuous generators
almost never make the very same image, so the class posterior given the
latent, a one-hot of its class, is also the true class given the image.

Examples
--------
>>> from ppl_audit.generative.class_generators import ClassGAN
>>> gan = ClassGAN(classes=3, latent_dim=4, generator_hidden=(8,), critic_hidden=(8,), seed=0)
>>> prior = ClassMixturePrior(gan, ("a", "b", "c"), classes=("a", "c"))
>>> z, c = prior.sample_with_class(5, generator=torch.Generator().manual_seed(0))
>>> prior.decode(z).shape, sorted(set(c.tolist())) <= [0, 2]
(torch.Size([5, 1, 28, 28]), True)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.priors.base import StandardNormalPrior

CLASS_COORDINATE = "u_class"  # the latent coordinate whose normal quantile picks the class
DEFAULT_CHUNK_SIZE = 2048  # latents per batched decode: 10 generators x ~205 rows each


class ClassMixturePrior(StandardNormalPrior):
    """The mixture over per-class generators, as a :class:`~ppl_audit.priors.base.Prior` with true classes.

    Parameters
    ----------
    generators : object
        Per-class generators stacked along a leading class axis, as the ``class-vae`` and
        ``class-gan`` cards load: ``num_members`` (one per class), ``latent_dim`` and
        ``decode(z (C, n, D)) -> images (C, n, C_img, H, W)`` in ``[0, 1]``.
    class_names : sequence of str
        The name of each generator's class, in member order (``len == num_members``).
    classes : sequence of str, optional
        The classes the mixture draws from (default all); the rest keep their names, with
        prior mass 0.
    weights : sequence of float, optional
        Mixture weights of ``classes`` (default uniform); normalised.
    name : str, optional
        How reports name the prior.

    Raises
    ------
    InvalidInputError
        ``class_names`` does not name one class per generator, ``classes`` names a class without
        a generator or none at all, or the weights are not positive finite numbers, one per class.
    """

    def __init__(self, generators, class_names: Sequence[str], *, classes: Sequence[str] | None = None,
                 weights: Sequence[float] | None = None, name: str | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE):
        members = getattr(generators, "num_members", None)
        if not isinstance(members, int) or not callable(getattr(generators, "decode", None)):
            raise InvalidInputError("a class-mixture prior needs per-class generators stacked along a class axis "
                                    f"(num_members, latent_dim, decode), got {type(generators).__name__}")
        self.class_names = tuple(str(c) for c in class_names)
        if len(self.class_names) != members or len(set(self.class_names)) != members:
            raise InvalidInputError(f"a class-mixture prior needs one distinct class name per generator: "
                                    f"{members} generators, class names {list(self.class_names)}")
        included = self.class_names if classes is None else tuple(str(c) for c in classes)
        missing = [c for c in included if c not in self.class_names]
        if missing or not included or len(set(included)) != len(included):
            raise InvalidInputError(f"classes {list(included)} must be distinct and each have a generator "
                                    f"(generators for: {list(self.class_names)}; missing: {missing})")
        self.generators = generators
        self.included = tuple(self.class_names.index(c) for c in included)
        self._weights = _normalised(weights, len(self.included))
        self.latent_names = (CLASS_COORDINATE, *(f"z{i + 1}" for i in range(int(generators.latent_dim))))
        self.device = next(generators.parameters()).device if hasattr(generators, "parameters") else \
            torch.device("cpu")
        self.image_shape = tuple(self._decode_members(torch.zeros(members, 1, self.latent_dim - 1,
                                                                  device=self.device)).shape[-3:])
        self.name = name or "class-mixture"
        self.chunk_size = int(chunk_size)

    @property
    def class_weights(self) -> dict[str, float]:
        """Each included class's mixture weight."""
        return {self.class_names[c]: float(w) for c, w in zip(self.included, self._weights)}

    def class_of(self, z: torch.Tensor) -> torch.Tensor:
        """Each latent's class, an index into :attr:`class_names`, shape ``(N,)``."""
        self._check_latents(z, batched=True)
        cumulative = torch.cumsum(self._weights.to(z.device, torch.float64), 0)
        cell = torch.searchsorted(cumulative[:-1].contiguous(), torch.special.ndtr(z[:, 0].double()), right=True)
        return torch.as_tensor(self.included, device=z.device)[cell]

    def class_posterior(self, z: torch.Tensor) -> torch.Tensor:
        """``P(class | z)`` ``(N, C)`` over :attr:`class_names`: one-hot, since the latent fixes the generator."""
        return torch.nn.functional.one_hot(self.class_of(z), len(self.class_names)).to(z.dtype)

    def sample_with_class(self, n: int, *, generator: torch.Generator | None = None):
        """Draw ``n`` latents with their classes: ``(z (n, 1 + D), c (n,))``."""
        z = self.sample(n, generator=generator)
        return z, self.class_of(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)``: each latent through its own class's generator, all classes batched.

        Each chunk's latents are scattered into a ``(classes, rows, D)`` block (row ``r`` of class ``c``
        the ``r``-th latent of that class), decoded by the stacked generators in one pass, and gathered back.
        """
        self._check_latents(z, batched=True)
        if z.shape[0] == 0:
            return z.new_zeros((0, *self.image_shape))
        parts = [self._decode_chunk(chunk) for chunk in z.split(self.chunk_size)]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _decode_chunk(self, z: torch.Tensor) -> torch.Tensor:
        cls = self.class_of(z)
        members = len(self.class_names)
        counts = torch.bincount(cls, minlength=members)
        starts = torch.cumsum(counts, 0) - counts
        order = torch.argsort(cls, stable=True)
        row = torch.empty_like(cls)
        row[order] = torch.arange(len(cls), device=z.device) - starts[cls[order]]
        block = z.new_zeros(members, int(counts.max()), self.latent_dim - 1)
        block[cls, row] = z[:, 1:]
        return self._decode_members(block)[cls, row]

    def _decode_members(self, block: torch.Tensor) -> torch.Tensor:
        images = self.generators.decode(block.to(self.device)).to(block.device)
        if images.ndim != 5 or images.shape[:2] != block.shape[:2]:
            raise ModelOutputError(f"the per-class generators returned shape {tuple(images.shape)} for latents "
                                   f"{tuple(block.shape)}; expected ({block.shape[0]}, {block.shape[1]}, C, H, W)")
        return images

    def _check_latents(self, z, *, batched: bool) -> None:
        if not isinstance(z, torch.Tensor) or not torch.is_floating_point(z):
            raise InvalidInputError(f"latents must be a floating-point tensor, got {type(z).__name__}")
        if z.ndim < 1 or z.shape[-1] != self.latent_dim or (batched and z.ndim != 2):
            shape = "(N, 1 + D)" if batched else "(..., 1 + D)"
            raise InvalidInputError(f"latents must have shape {shape} = (..., {self.latent_dim}), got {tuple(z.shape)}")

    def __repr__(self) -> str:
        classes = [self.class_names[c] for c in self.included]
        return f"ClassMixturePrior({self.name}, classes={classes}, latent_dim={self.latent_dim})"


def _normalised(weights, count: int) -> torch.Tensor:
    if weights is None:
        return torch.full((count,), 1.0 / count, dtype=torch.float64)
    values = list(weights) if not isinstance(weights, (str, bytes)) else None
    if values is None or len(values) != count or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0 for w in values):
        raise InvalidInputError(f"weights must be {count} positive finite numbers, one per class, got {weights!r}")
    w = torch.tensor(values, dtype=torch.float64)
    return w / w.sum()


def class_mixture_prior(trained, class_names: Sequence[str] | None = None, *,
                        classes: Sequence[str] | None = None) -> ClassMixturePrior:
    """The labelled prior of a loaded ``class-vae`` or ``class-gan`` card: member ``c`` is class ``c``.

    Examples
    --------
    >>> trained = load_model("mnist-class-vae", data_dir="/data")  # doctest: +SKIP
    >>> prior = class_mixture_prior(trained, classes="012345689")  # doctest: +SKIP
    >>> prior.class_weights["7"]  # doctest: +SKIP
    Traceback (most recent call last):
    KeyError: '7'
    """
    module = trained.module
    names = tuple(class_names) if class_names is not None else tuple(str(c) for c in range(module.num_members))
    left_out = [c for c in names if classes is not None and c not in tuple(str(k) for k in classes)]
    label = f"{trained.card.name} without {', '.join(left_out)}" if left_out else trained.card.name
    return ClassMixturePrior(module, names, classes=classes, name=label)


__all__ = ["CLASS_COORDINATE", "ClassMixturePrior", "class_mixture_prior"]
