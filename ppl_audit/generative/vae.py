"""A variational auto-encoder of 28 x 28 images with a small latent (the level-set paper's MNIST VAE).

Generative model and inference network (Kingma & Welling 2014)::

    z ~ N(0, I_D)                      D = 5 for MNIST (Booth et al.)
    x | z ~ prod_pixels Lik(decoder(z))
    q(z | x) = N(mean(x), diag(exp(log_var(x))))
    ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || N(0, I))       (Kingma & Welling, eq. 10)

Likelihoods (``[architecture] likelihood``):

* ``"bernoulli"``: the decoder's sigmoid output is the Bernoulli mean, used
  directly as the image in ``[0, 1]``; ``log p(x | z)`` is the binary
  cross-entropy, evaluated at grey values too (the usual practice, not a
  normalised density on ``[0, 1]``). Its ELBO is comparable with published
  MNIST VAE numbers.
* ``"continuous-bernoulli"``: the normalised density on ``[0, 1]``
  (Loaiza-Ganem & Cunningham 2019); the decoder's image is the
  distribution's mean, which differs from the sigmoid of its logits.

Both networks are MLPs: on a 2-core CPU they train an epoch of 60,000 images
in seconds. :class:`VAE` exposes :attr:`VAE.encoder` (``x -> (mean,
log_var)``) and :attr:`VAE.decoder` (``z -> image``), both batched and
device-agnostic.

Examples
--------
>>> vae = VAE(latent_dim=5, hidden=(32, 16))
>>> mean, log_var = vae.encoder(torch.rand(4, 1, 28, 28))
>>> mean.shape, vae.decoder(mean).shape
(torch.Size([4, 5]), torch.Size([4, 1, 28, 28]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import ContinuousBernoulli

from ppl_audit._device import resolve_device
from ppl_audit.cards import ModelCard
from ppl_audit.generative.common import IMAGE_SHAPE, NUM_PIXELS, trained_decoder_sections
from ppl_audit.priors.decoder import decoder_prior
from ppl_audit.progress import ProgressFn, report
from ppl_audit.training import (
    CardConfig,
    EVAL_CHUNK,
    DataConfig,
    Stopwatch,
    Trainer,
    TrainResult,
    check_field,
    load_training_data,
    minibatches,
    seeded,
)
from ppl_audit.validators import is_positive_int

KIND = "vae"  # the [model] kind of VAE cards
LIKELIHOODS = ("bernoulli", "continuous-bernoulli")
ACTIVE_DIM_KL_NATS = 0.01  # a latent whose mean KL on the test set is below this carries no information
EVAL_SEED = 1  # seeds the reparameterisation noise of the reported (test) ELBO
TRAINING_TASK = "training VAE"  # progress task name


def _mlp(sizes, final_activation: bool) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VAEEncoder(nn.Module):
    """``q(z | x)``: images ``(N, 1, 28, 28)`` -> ``(mean, log_var)``, each ``(N, D)``.

    Examples
    --------
    >>> mean, log_var = VAEEncoder(3, (16,))(torch.rand(2, 1, 28, 28))
    >>> mean.shape, log_var.shape
    (torch.Size([2, 3]), torch.Size([2, 3]))
    """

    def __init__(self, latent_dim: int, hidden=(512, 256)):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.body = _mlp([NUM_PIXELS, *hidden], final_activation=True)
        self.head = nn.Linear(hidden[-1], 2 * self.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, log_var)`` of the approximate posterior."""
        mean, log_var = self.head(self.body(x.flatten(1))).chunk(2, dim=-1)
        return mean, log_var


class VAEDecoder(nn.Module):
    """``p(x | z)``: latents ``(N, D)`` -> images ``(N, 1, 28, 28)`` in ``[0, 1]`` (the likelihood's mean).

    Examples
    --------
    >>> x = VAEDecoder(3, (16,))(torch.randn(2, 3))
    >>> x.shape, bool(x.min() >= 0 and x.max() <= 1)
    (torch.Size([2, 1, 28, 28]), True)
    """

    def __init__(self, latent_dim: int, hidden=(256, 512), likelihood: str = "bernoulli"):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.latent_dim = int(latent_dim)
        self.likelihood = likelihood
        self.net = _mlp([self.latent_dim, *hidden, NUM_PIXELS], final_activation=False)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits ``(N, 1, 28, 28)`` of the likelihood."""
        return self.net(z).view(-1, *IMAGE_SHAPE)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The image: the likelihood's mean, ``(N, 1, 28, 28)`` in ``[0, 1]``."""
        logits = self.logits(z)
        if self.likelihood == "bernoulli":
            return torch.sigmoid(logits)
        return ContinuousBernoulli(logits=logits).mean

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` summed over pixels, ``(N,)`` nats."""
        logits = self.logits(z)
        if self.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
        return ContinuousBernoulli(logits=logits).log_prob(x).flatten(1).sum(-1)


class VAE(nn.Module):
    """Encoder and decoder of a VAE with a standard normal prior on ``D`` latents.

    Parameters
    ----------
    latent_dim : int
        ``D`` (5 for MNIST, as in the level-set paper).
    hidden : sequence of int
        Encoder widths; the decoder mirrors them.
    likelihood : str
        ``"bernoulli"`` or ``"continuous-bernoulli"`` (module docstring).

    Examples
    --------
    >>> vae = VAE(2, hidden=(16,))
    >>> vae.elbo(torch.rand(3, 1, 28, 28), generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3])
    """

    def __init__(self, latent_dim: int = 5, hidden=(512, 256), likelihood: str = "bernoulli"):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.encoder = VAEEncoder(latent_dim, tuple(hidden))
        self.decoder = VAEDecoder(latent_dim, tuple(reversed(hidden)), likelihood)

    def elbo_terms(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """``(log p(x | z), KL per latent (N, D))`` with one reparameterised draw ``z ~ q(z | x)``."""
        mean, log_var = self.encoder(x)
        if generator is None:
            noise = torch.randn_like(mean)
        else:
            noise = torch.randn(mean.shape, generator=generator, device=generator.device).to(mean.device)
        z = mean + torch.exp(0.5 * log_var) * noise
        kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var)  # KL(N(m, s^2) || N(0, 1)), closed form
        return self.decoder.log_likelihood(x, z), kl

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Single-sample ELBO estimate per image, ``(N,)`` nats (Kingma & Welling, eq. 10)."""
        log_lik, kl = self.elbo_terms(x, generator)
        return log_lik - kl.sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction: the decoded posterior mean, ``(N, 1, 28, 28)``."""
        return self.decoder(self.encoder(x)[0])


@dataclass(frozen=True)
class VAEConfig(CardConfig):
    """The ``[architecture]`` and ``[training]`` keys of a VAE card.

    Examples
    --------
    >>> VAEConfig(likelihood="gaussian")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: likelihood must be one of ('bernoulli', 'continuous-bernoulli'), got 'gaussian'
    """

    type: str = "mlp-vae"
    latent_dim: int = 5
    hidden: tuple[int, ...] = (512, 256)
    likelihood: str = "bernoulli"
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0

    TYPE = 'mlp-vae'

    def __post_init__(self):
        super().__post_init__()
        check_field(is_positive_int(self.latent_dim), "latent_dim", self.latent_dim, "a positive integer")
        check_field(isinstance(self.hidden, tuple) and len(self.hidden) > 0 and all(map(is_positive_int, self.hidden)),
                    "hidden", self.hidden, "a non-empty list of positive integers")
        check_field(self.likelihood in LIKELIHOODS, "likelihood", self.likelihood, f"one of {LIKELIHOODS}")


def build_vae(card: ModelCard) -> VAE:
    """The untrained VAE a card describes (validates the card).

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> build_vae(load_card("mnist-vae")).latent_dim
    5
    """
    config = VAEConfig.from_card(card)
    DataConfig.from_card(card)
    return VAE(config.latent_dim, config.hidden, config.likelihood)


@torch.no_grad()
def evaluate_vae(vae: VAE, images: torch.Tensor, seed: int = EVAL_SEED) -> dict[str, float]:
    """Mean ELBO, reconstruction term and KL over ``images`` (nats per image), chunked and seeded.

    Returns
    -------
    dict
        ``elbo_nats``, ``reconstruction_nats``, ``kl_nats`` and ``active_latent_dims``
        (latents whose mean KL exceeds ``ACTIVE_DIM_KL_NATS``).

    Examples
    --------
    >>> out = evaluate_vae(VAE(2, (8,)), torch.rand(5, 1, 28, 28))
    >>> abs(out["elbo_nats"] - (out["reconstruction_nats"] - out["kl_nats"])) < 1e-6
    True
    """
    was_training = vae.training
    vae.eval()
    generator = torch.Generator().manual_seed(seed)
    log_lik_sum, kl_sum = 0.0, torch.zeros(vae.latent_dim, dtype=torch.float64)
    for x in images.split(EVAL_CHUNK):
        log_lik, kl = vae.elbo_terms(x, generator)
        log_lik_sum += float(log_lik.double().sum())
        kl_sum += kl.double().sum(0).cpu()
    vae.train(was_training)
    n = len(images)
    kl_per_dim = kl_sum / n
    return {
        "elbo_nats": (log_lik_sum - float(kl_sum.sum())) / n,
        "reconstruction_nats": log_lik_sum / n,
        "kl_nats": float(kl_per_dim.sum()),
        "active_latent_dims": int((kl_per_dim > ACTIVE_DIM_KL_NATS).sum()),
    }


def train_vae(card: ModelCard, *, data_dir=None, device="auto", progress: ProgressFn | None = None) -> TrainResult:
    """Train a VAE card on its dataset by maximising the ELBO with Adam.

    Returns
    -------
    TrainResult
        ``metrics``: ``test_elbo_nats`` (the headline, nats per image; higher
        is better), ``test_reconstruction_nats``, ``test_kl_nats``,
        ``active_latent_dims``, ``train_elbo_nats``, ``num_train``,
        ``num_test``, ``seconds``; ``history``: per-epoch train and test ELBO.

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> card = load_card("mnist-vae").with_overrides(data={"train_split": "test"}, training={"epochs": 1})
    >>> train_vae(card, data_dir="tests/fixtures/data", device="cpu").metrics["num_train"]  # doctest: +SKIP
    100
    """
    config = VAEConfig.from_card(card)
    data = DataConfig.from_card(card)
    device = resolve_device(device)
    watch = Stopwatch()
    train, test = load_training_data(data, data_dir, device)
    with seeded(config.seed):
        vae = VAE(config.latent_dim, config.hidden, config.likelihood).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(vae.parameters(), lr=config.learning_rate)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = config.epochs * steps_per_epoch
    history = {"train": [], "test": []}
    step = 0
    vae.train()
    for _ in range(config.epochs):
        elbo_sum = 0.0
        for idx in minibatches(len(train), config.batch_size, generator, device):
            elbo = vae.elbo(train.images[idx], generator)
            loss = -elbo.mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            elbo_sum += float(elbo.detach().sum())
            step += 1
            report(progress, TRAINING_TASK, step, total)
        history["train"].append(elbo_sum / len(train))
        history["test"].append(evaluate_vae(vae, test.images)["elbo_nats"])
    vae.eval()
    final = evaluate_vae(vae, test.images)
    metrics = {
        "test_elbo_nats": final["elbo_nats"],
        "test_reconstruction_nats": final["reconstruction_nats"],
        "test_kl_nats": final["kl_nats"],
        "active_latent_dims": final["active_latent_dims"],
        "train_elbo_nats": evaluate_vae(vae, train.images)["elbo_nats"],
        "num_train": len(train),
        "num_test": len(test),
        "seconds": float(watch),
    }
    curves = {"unit": "epoch",
              "panels": {"ELBO (nats per image)": {"train (running)": history["train"], "test": history["test"]}}}
    return TrainResult(vae.cpu(), metrics, curves)


TRAINER = Trainer(
    kind=KIND,
    build=build_vae,
    train=train_vae,
    headline=("test_elbo_nats", "test ELBO (nats per image)"),
    report_sections=trained_decoder_sections,
    wrap=decoder_prior,
    description="MLP VAE of 28 x 28 images with a standard normal latent",
)


__all__ = [
    "ACTIVE_DIM_KL_NATS",
    "EVAL_SEED",
    "KIND",
    "LIKELIHOODS",
    "TRAINER",
    "TRAINING_TASK",
    "VAE",
    "VAEConfig",
    "VAEDecoder",
    "VAEEncoder",
    "build_vae",
    "evaluate_vae",
    "train_vae",
]
