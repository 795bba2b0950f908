"""A labelled world whose answers are known, shared by the calibration and sweep audits' tests.

The world is the house/rocket prior with each latent shown as its own "image" (``z / (1 + z)``, so a
classifier can read ``z`` back), and :func:`bayes_classifier` computes the world's Bayes posterior from it,
optionally with its logit divided by a temperature.
"""

from __future__ import annotations

import torch

from ppl_audit.classifiers import CallableClassifier
from ppl_audit.priors import HouseRocketWorld


class LatentImageWorld(HouseRocketWorld):
    """House/rocket latents as 1 x 1 x 3 "images" in (0, 1): the classifier can invert them exactly."""

    image_shape = (1, 1, 3)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z / (1 + z)).reshape(len(z), 1, 1, 3)


def bayes_classifier(world: HouseRocketWorld, temperature: float = 1.0) -> CallableClassifier:
    def probs(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), 3).double()
        p = world.class_posterior((x / (1 - x)).float()).double().clamp(1e-9, 1 - 1e-9)
        house = torch.sigmoid((p[:, 1].log() - p[:, 0].log()) / temperature)
        return torch.stack([1 - house, house], -1).float()

    return CallableClassifier(probs, ("rocket", "house"))


TRIANGLE = torch.tensor([[0.0, 2.0], [-1.7, -1.0], [1.7, -1.0]])  # three class means, 2 to 3.4 apart


class ShiftedGenerators:
    """Three overlapping classes: class ``c`` shows ``y = z + TRIANGLE[c]``, ``z ~ N(0, I_2)``, as 1 x 1 x 2
    "images" ``sigmoid(y)``, stacked for :class:`~ppl_audit.priors.ClassMixturePrior`."""

    num_members = 3
    latent_dim = 2

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        y = z + TRIANGLE[:, None, :].to(z)
        return torch.sigmoid(y).reshape(*z.shape[:2], 1, 1, 2)


def triangle_classifier(temperature: float = 1.0) -> CallableClassifier:
    """The Bayes posterior of :class:`ShiftedGenerators`' uniform mixture, with log-probabilities divided by
    ``temperature``: where it says ``t``, the truth is ``softmax(temperature * log t)``."""
    def probs(x: torch.Tensor) -> torch.Tensor:
        y = torch.logit(x.reshape(len(x), 2).double().clamp(1e-12, 1 - 1e-12))
        log_post = -0.5 * ((y[:, None, :] - TRIANGLE.double()) ** 2).sum(-1)
        return torch.softmax(log_post / temperature, -1).float()

    return CallableClassifier(probs, ("a", "b", "c"))
