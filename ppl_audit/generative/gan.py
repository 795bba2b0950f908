"""A GAN of 28 x 28 images with a 5-dimensional latent: generator (the decoder prior) and critic.

Losses (``[training] loss``):

* ``"wgan-gp"`` (Gulrajani et al. 2017, Algorithm 1): the critic ``D``
  maximises ``E[D(x)] - E[D(G(z))] - lambda E[(||grad D(x_hat)||_2 - 1)^2]``
  over ``n_critic`` batches per generator step, the generator maximises
  ``E[D(G(z))]``. Its critic is an (approximately 1-Lipschitz) potential
  whose score difference estimates the Wasserstein-1 distance, a graded
  realism score that later audits read (the GWIN-style rejection and
  OoD-by-critic detectors).
* ``"dcgan"`` (Radford et al. 2016, non-saturating loss): one
  discriminator step and one generator step per batch, binary cross-entropy
  on logits.

Why the shipped card ``models/mnist-gan.toml`` uses the one it uses is
written there, with the CPU seconds measured for both.

Networks: a DCGAN-style generator (linear -> 7x7 maps -> two stride-2
transposed convolutions, batch norm, sigmoid output in ``[0, 1]``) and a
critic of two stride-2 convolutions with leaky ReLU and no normalisation
(the gradient penalty is per sample, so batch norm is not allowed in a
WGAN-GP critic). The critic returns one unbounded score per image: higher =
more like the training data (for ``dcgan`` it is the discriminator's logit).
:class:`GAN` holds both, so one safetensors file stores ``generator.*`` and
``critic.*``.

Examples
--------
>>> gan = GAN(latent_dim=5, channels=8)
>>> x = gan.decoder(torch.randn(3, 5))
>>> x.shape, gan.critic(x).shape
(torch.Size([3, 1, 28, 28]), torch.Size([3]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ppl_audit._device import resolve_device
from ppl_audit.cards import ModelCard
from ppl_audit.generative.common import IMAGE_SHAPE, trained_decoder_sections
from ppl_audit.priors.decoder import decoder_prior
from ppl_audit.progress import ProgressFn, report
from ppl_audit.training import (
    CardConfig,
    EVAL_CHUNK,
    DataConfig,
    Stopwatch,
    Trainer,
    TrainResult,
    check_adversarial_fields,
    check_field,
    load_training_data,
    seeded,
)

KIND = "gan"  # the [model] kind of GAN cards
LOSSES = ("wgan-gp", "dcgan")
LEAKY_SLOPE = 0.2  # leaky ReLU slope of the critic (DCGAN's and WGAN-GP's choice)
HISTORY_POINTS_PER_EPOCH = 10  # training curves are averaged over tenths of an epoch
EVAL_SEED = 1  # seeds the generated images of the reported critic gap
TRAINING_TASK = "training GAN"  # progress task name


class Generator(nn.Module):
    """``z (N, D) -> images (N, 1, 28, 28)`` in ``[0, 1]``.

    Parameters
    ----------
    latent_dim : int
    channels : int
        Maps at 14 x 14; the 7 x 7 stage has twice as many.

    Examples
    --------
    >>> x = Generator(5, 8).eval()(torch.randn(2, 5))
    >>> x.shape, bool(x.min() >= 0 and x.max() <= 1)
    (torch.Size([2, 1, 28, 28]), True)
    """

    def __init__(self, latent_dim: int = 5, channels: int = 32):
        super().__init__()
        self.latent_dim = int(latent_dim)
        c = int(channels)
        side = IMAGE_SHAPE[1] // 4
        self.project = nn.Sequential(
            nn.Linear(self.latent_dim, 2 * c * side * side),
            nn.BatchNorm1d(2 * c * side * side),
            nn.ReLU(),
            nn.Unflatten(1, (2 * c, side, side)),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, kernel_size=4, stride=2, padding=1),  # 7 -> 14
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.ConvTranspose2d(c, IMAGE_SHAPE[0], kernel_size=4, stride=2, padding=1),  # 14 -> 28
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 1, 28, 28)`` in ``[0, 1]``."""
        return self.upsample(self.project(z))


class Critic(nn.Module):
    """``images (N, 1, 28, 28) -> scores (N,)``; higher = more like the training data.

    Examples
    --------
    >>> Critic(8)(torch.rand(4, 1, 28, 28)).shape
    torch.Size([4])
    """

    def __init__(self, channels: int = 32):
        super().__init__()
        c = int(channels)
        side = IMAGE_SHAPE[1] // 4
        self.net = nn.Sequential(
            nn.Conv2d(IMAGE_SHAPE[0], c, kernel_size=4, stride=2, padding=1),  # 28 -> 14
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(c, 2 * c, kernel_size=4, stride=2, padding=1),  # 14 -> 7
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Flatten(),
            nn.Linear(2 * c * side * side, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)`` of images in ``[0, 1]`` (centred to ``[-1, 1]`` inside)."""
        return self.net(2.0 * x - 1.0).squeeze(-1)


class GAN(nn.Module):
    """Generator and critic; :attr:`decoder` is the generator (the decoder prior's network).

    Examples
    --------
    >>> sorted({k.split(".")[0] for k in GAN(5, 8).state_dict()})
    ['critic', 'generator']
    """

    def __init__(self, latent_dim: int = 5, channels: int = 32, critic_channels: int | None = None):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.generator = Generator(latent_dim, channels)
        self.critic = Critic(critic_channels or channels)

    @property
    def decoder(self) -> Generator:
        """The generator, ``z -> image``."""
        return self.generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Generated images ``(N, 1, 28, 28)``."""
        return self.generator(z)


@dataclass(frozen=True)
class GANConfig(CardConfig):
    """The ``[architecture]`` and ``[training]`` keys of a GAN card.

    Examples
    --------
    >>> GANConfig(loss="lsgan")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: loss must be one of ('wgan-gp', 'dcgan'), got 'lsgan'
    """

    type: str = "dcgan-conv"
    latent_dim: int = 5
    channels: int = 32
    critic_channels: int = 32
    loss: str = "wgan-gp"
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.9
    critic_steps: int = 5
    gradient_penalty: float = 10.0
    seed: int = 0

    TYPE = 'dcgan-conv'
    POSITIVE_INTEGERS = ('latent_dim', 'channels', 'critic_channels', 'epochs', 'batch_size', 'critic_steps')

    def __post_init__(self):
        super().__post_init__()
        check_field(self.loss in LOSSES, "loss", self.loss, f"one of {LOSSES}")
        check_adversarial_fields(self)
        if self.loss == "dcgan":
            check_field(self.critic_steps == 1, "critic_steps", self.critic_steps, "1 with loss = 'dcgan'")


def build_gan(card: ModelCard) -> GAN:
    """The untrained GAN a card describes (validates the card).

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> build_gan(load_card("mnist-gan")).latent_dim
    5
    """
    config = GANConfig.from_card(card)
    DataConfig.from_card(card)
    return GAN(config.latent_dim, config.channels, config.critic_channels)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator):
    """``E[(||grad_x D(x_hat)||_2 - 1)^2]`` at random interpolates (Gulrajani et al., Algorithm 1, line 7).

    Examples
    --------
    >>> gp = gradient_penalty(Critic(4), torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28),
    ...                       torch.Generator().manual_seed(0))
    >>> gp.ndim, bool(gp >= 0)
    (0, True)
    """
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def _noise(n: int, latent_dim: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.randn(n, latent_dim, generator=generator).to(device)


@torch.no_grad()
def critic_gap(gan: GAN, images: torch.Tensor, seed: int = EVAL_SEED) -> dict[str, float]:
    """Mean critic score of ``images`` and of as many generated images, and their difference.

    For ``wgan-gp`` the gap estimates the Wasserstein-1 distance between the
    data and the generator (lower is better, 0 at a perfect fit, as judged by
    this critic).

    Examples
    --------
    >>> out = critic_gap(GAN(2, 4).eval(), torch.rand(6, 1, 28, 28))
    >>> sorted(out)
    ['critic_gap', 'critic_score_generated', 'critic_score_real']
    """
    was_training = gan.training
    gan.eval()
    generator = torch.Generator().manual_seed(seed)
    real_sum, fake_sum = 0.0, 0.0
    for x in images.split(EVAL_CHUNK):
        real_sum += float(gan.critic(x).double().sum())
        fake_sum += float(gan.critic(gan.generator(_noise(len(x), gan.latent_dim, generator, x.device))).double().sum())
    gan.train(was_training)
    real, fake = real_sum / len(images), fake_sum / len(images)
    return {"critic_score_real": real, "critic_score_generated": fake, "critic_gap": real - fake}


def wgan_gp_critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, penalty_weight: float,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The WGAN-GP critic loss ``E[D(G(z))] - E[D(x)] + lambda GP`` and its penalty ``GP`` (Algorithm 1, line 7).

    Parameters
    ----------
    critic : nn.Module
        ``images -> scores (N,)``.
    real, fake : torch.Tensor
        Equal-sized batches of training and generated images (``fake`` detached).
    penalty_weight : float
        ``lambda``.
    generator : torch.Generator
        Draws the interpolation weights of :func:`gradient_penalty`.

    Returns
    -------
    (loss, penalty) : tuple of 0-d tensors
        ``loss`` carries the graph for the critic's update.

    Examples
    --------
    >>> loss, gp = wgan_gp_critic_loss(Critic(4), torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28), 10.0,
    ...                                torch.Generator().manual_seed(0))
    >>> loss.ndim, bool(gp >= 0)
    (0, True)
    """
    d_real, d_fake = critic(real), critic(fake)
    penalty = gradient_penalty(critic, real, fake, generator)
    return d_fake.mean() - d_real.mean() + penalty_weight * penalty, penalty


@dataclass(frozen=True)
class GANFit:
    """What :func:`fit_gan` returns besides the trained networks.

    Attributes
    ----------
    history : dict of str to list of float
        ``critic_loss``, ``generator_loss`` (and ``gradient_penalty`` for
        ``wgan-gp``), each averaged over ``log_every`` critic batches.
    generator_steps : int
    log_every : int
        Critic batches per history point (a tenth of an epoch, at least 1).
    unit : str
        What one history point spans, in words (for the training report).
    """

    history: dict[str, list[float]]
    generator_steps: int
    log_every: int
    unit: str


def fit_gan(gan: GAN, images: torch.Tensor, config: GANConfig, generator: torch.Generator, *,
            progress: ProgressFn | None = None, task: str = TRAINING_TASK) -> GANFit:
    """Train ``gan`` in place on ``images``: the loop of :func:`train_gan` (Adam for both networks).

    One epoch is one pass of the critic over ``images`` in full batches of
    ``config.batch_size`` drawn in the order of ``generator``; with
    ``wgan-gp`` the generator steps once every ``config.critic_steps``
    critic batches (Gulrajani et al., Algorithm 1). ``config.seed`` is not
    read: the caller seeds the initialisation and ``generator``. The GAN is
    left in training mode.

    Parameters
    ----------
    gan : GAN
        On the device of ``images``.
    images : torch.Tensor
        Training images ``(N, 1, 28, 28)`` in ``[0, 1]``.
    config : GANConfig
        Loss, epochs, batch size, optimiser and critic settings.
    generator : torch.Generator
        Data order, latent draws and gradient-penalty interpolates.
    progress : callable, optional
        Receives ``(task, critic step, total critic steps)``.
    task : str
        The progress task name.

    Returns
    -------
    GANFit

    Examples
    --------
    >>> gan = GAN(2, 4)
    >>> fit = fit_gan(gan, torch.rand(8, 1, 28, 28), GANConfig(latent_dim=2, epochs=1, batch_size=4, critic_steps=2),
    ...               torch.Generator().manual_seed(0))
    >>> fit.generator_steps, len(fit.history["critic_loss"])
    (1, 2)
    """
    device = images.device
    betas = (config.beta1, config.beta2)
    opt_critic = torch.optim.Adam(gan.critic.parameters(), lr=config.learning_rate, betas=betas)
    opt_gen = torch.optim.Adam(gan.generator.parameters(), lr=config.learning_rate, betas=betas)
    wgan = config.loss == "wgan-gp"
    n = len(images)
    steps_per_epoch = max(1, n // config.batch_size)  # full batches only: batch norm and the critic see equal sizes
    total = config.epochs * steps_per_epoch
    log_every = max(1, steps_per_epoch // HISTORY_POINTS_PER_EPOCH)
    names = ("critic_loss", "generator_loss", "gradient_penalty") if wgan else ("critic_loss", "generator_loss")
    history = {k: [] for k in names}
    window = {k: [] for k in names}
    step = generator_steps = 0
    gan.train()
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)[: steps_per_epoch * config.batch_size].to(device)
        for idx in order.split(config.batch_size):
            real = images[idx]
            with torch.no_grad():
                fake = gan.generator(_noise(len(idx), config.latent_dim, generator, device))
            if wgan:
                critic_loss, penalty = wgan_gp_critic_loss(gan.critic, real, fake, config.gradient_penalty, generator)
                window["gradient_penalty"].append(float(penalty.detach()))
            else:
                d_real, d_fake = gan.critic(real), gan.critic(fake)
                critic_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                               + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
            opt_critic.zero_grad(set_to_none=True)
            critic_loss.backward()
            opt_critic.step()
            window["critic_loss"].append(float(critic_loss.detach()))
            step += 1
            if step % config.critic_steps == 0:
                gan.critic.requires_grad_(False)  # the generator step needs no critic weight gradients
                scores = gan.critic(gan.generator(_noise(config.batch_size, config.latent_dim, generator, device)))
                if wgan:
                    gen_loss = -scores.mean()
                else:  # non-saturating: maximise log D(G(z))
                    gen_loss = F.binary_cross_entropy_with_logits(scores, torch.ones_like(scores))
                opt_gen.zero_grad(set_to_none=True)
                gen_loss.backward()
                opt_gen.step()
                gan.critic.requires_grad_(True)
                generator_steps += 1
                window["generator_loss"].append(float(gen_loss.detach()))
            if step % log_every == 0:
                for k in names:
                    if window[k]:
                        history[k].append(sum(window[k]) / len(window[k]))
                        window[k] = []
            report(progress, task, step, total)
    if log_every == steps_per_epoch:
        unit = "epoch"
    elif log_every * HISTORY_POINTS_PER_EPOCH <= steps_per_epoch < (log_every + 1) * HISTORY_POINTS_PER_EPOCH:
        unit = f"1/{HISTORY_POINTS_PER_EPOCH} epoch ({log_every} critic batches)"
    else:
        unit = f"{log_every} critic batches"
    return GANFit(history, generator_steps, log_every, unit)


def train_gan(card: ModelCard, *, data_dir=None, device="auto", progress: ProgressFn | None = None) -> TrainResult:
    """Train a GAN card on its dataset (WGAN-GP or DCGAN, Adam for both networks).

    One epoch is one pass of the critic over the training images; with
    ``wgan-gp`` the generator steps once every ``critic_steps`` critic batches.
    The loop is :func:`fit_gan`.

    Returns
    -------
    TrainResult
        ``metrics``: ``test_critic_gap`` (the headline), ``test_critic_score_real``,
        ``test_critic_score_generated``, ``generator_steps``, ``num_train``,
        ``num_test``, ``seconds``; ``history``: critic and generator losses
        (and the gradient penalty, for wgan-gp) per tenth of an epoch.

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> card = load_card("mnist-gan").with_overrides(data={"train_split": "test"}, training={"epochs": 1})
    >>> train_gan(card, data_dir="tests/fixtures/data", device="cpu").metrics["num_train"]  # doctest: +SKIP
    100
    """
    config = GANConfig.from_card(card)
    data = DataConfig.from_card(card)
    device = resolve_device(device)
    watch = Stopwatch()
    train, test = load_training_data(data, data_dir, device)
    with seeded(config.seed):
        gan = GAN(config.latent_dim, config.channels, config.critic_channels).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    wgan = config.loss == "wgan-gp"
    fit = fit_gan(gan, train.images, config, generator, progress=progress)
    history = fit.history
    gan.eval()
    gap = critic_gap(gan, test.images)
    metrics = {
        "test_critic_gap": gap["critic_gap"],
        "test_critic_score_real": gap["critic_score_real"],
        "test_critic_score_generated": gap["critic_score_generated"],
        "generator_steps": fit.generator_steps,
        "num_train": len(train),
        "num_test": len(test),
        "seconds": float(watch),
    }
    critic_title = "critic loss" if wgan else "discriminator loss (BCE)"
    gen_title = "generator loss" if wgan else "generator loss (non-saturating BCE)"
    critic_series = "E[D(G(z))] - E[D(x)] + lambda GP" if wgan else "discriminator"
    gen_series = "-E[D(G(z))]" if wgan else "generator"
    panels = {critic_title: {critic_series: history["critic_loss"]},
              gen_title: {gen_series: history["generator_loss"]}}
    if wgan:
        panels["gradient penalty"] = {"E[(||grad D|| - 1)^2]": history["gradient_penalty"]}
    return TrainResult(gan.cpu(), metrics, {"unit": fit.unit, "panels": panels})


TRAINER = Trainer(
    kind=KIND,
    build=build_gan,
    train=train_gan,
    headline=("test_critic_gap", "critic gap, test images - generated"),
    report_sections=trained_decoder_sections,
    wrap=decoder_prior,
    description="DCGAN-style generator and critic of 28 x 28 images (WGAN-GP or DCGAN loss)",
)


__all__ = [
    "EVAL_SEED",
    "GAN",
    "HISTORY_POINTS_PER_EPOCH",
    "KIND",
    "LEAKY_SLOPE",
    "LOSSES",
    "TRAINER",
    "TRAINING_TASK",
    "Critic",
    "GANConfig",
    "GANFit",
    "Generator",
    "build_gan",
    "critic_gap",
    "fit_gan",
    "gradient_penalty",
    "train_gan",
    "wgan_gp_critic_loss",
]
