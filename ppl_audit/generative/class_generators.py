"""One generator per class, batched over classes: the models behind classification by synthesis.

Wang et al. ("Safer Classification by Synthesis", 2017) train one generative
model per class and label a test image by the class whose generator comes
closest to it. This module provides the two kinds of per-class generator the
paper uses, each holding all ``C`` classes' networks stacked along a leading
class axis so that every class runs in one batched matrix product (the
:class:`~ppl_audit.generative.vae_ensemble.EnsembleLinear` layers of the VAE
ensemble, with member ``c`` = class ``c``):

* **per-class VAEs** (card kind ``class-vae``, ``models/mnist-class-vae.toml``):
  a :class:`~ppl_audit.generative.vae_ensemble.VAEEnsemble` whose member
  ``c`` is trained only on images of class ``c`` (10-dimensional latent, the
  paper's). Its encoder gives the latent search a start
  (:meth:`VAEEnsemble.encode`);
* **per-class GANs** (card kind ``class-gan``, ``models/mnist-class-gan.toml``):
  :class:`ClassGAN`, MLP WGAN-GP generators with a 15-dimensional latent (the
  paper's), each with its own critic that sees only its class's images.
  Optionally the kept generator is the exponential moving average of the
  generator's weights over training (:class:`ParameterAverage`, card key
  ``generator_ema_decay``; Yazici et al., "The Unusual Effectiveness of
  Averaging in GAN Training", 2019).

Both expose the interface :mod:`ppl_audit.classifiers.synthesis` searches:
``num_members`` (= classes), ``latent_dim`` and ``decode(z)`` mapping latents
``(C, ..., D)`` to images ``(C, ..., 1, 28, 28)`` in ``[0, 1]``.

Training batches are drawn per class (:func:`class_batches`): each step takes
``batch_size`` images of every class, so each class's model is trained on its
class alone, all classes in one pass. A card may instead train each class's
model apart (``members_apart``: :mod:`~ppl_audit.generative.class_members`, which
also holds the two kinds' trainers).

Examples
--------
>>> gan = ClassGAN(classes=3, latent_dim=4, generator_hidden=(8,), critic_hidden=(8,), seed=0)
>>> gan.decode(torch.zeros(3, 5, 4)).shape
torch.Size([3, 5, 1, 28, 28])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from ppl_audit._device import resolve_device
from ppl_audit.cards import ModelCard
from ppl_audit.validators import check_images, is_fraction
from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.generative.common import IMAGE_SHAPE, NUM_PIXELS, NUM_REPORT_COLUMNS, SAMPLE_SEED
from ppl_audit.generative.vae import LIKELIHOODS
from ppl_audit.generative.vae_ensemble import EnsembleLinear, VAEEnsemble, _standard_normal
from ppl_audit.progress import ProgressFn, report
from ppl_audit.training import (
    CardConfig,
    DataConfig,
    Stopwatch,
    TrainedModel,
    TrainResult,
    check_adversarial_fields,
    check_field,
    load_training_data,
    seeded,
)

VAE_KIND, GAN_KIND = "class-vae", "class-gan"  # the [model] kinds of per-class generator cards
EVAL_SEED = 1  # seeds the reported test ELBO's reparameterisation noise
LEAK = 0.2  # LeakyReLU slope of the GAN networks (Radford et al.'s DCGAN value)
VAE_TASK, GAN_TASK = "training per-class VAEs", "training per-class GANs"  # progress task names


# --------------------------------------------------------------------------- per-class batches


def class_indices(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Indices of each class's images; raise if a class has none.

    Examples
    --------
    >>> [i.tolist() for i in class_indices(torch.tensor([1, 0, 1]), 2)]
    [[1], [0, 2]]
    """
    out = [(labels == c).nonzero().flatten() for c in range(num_classes)]
    empty = [c for c, idx in enumerate(out) if len(idx) == 0]
    if empty:
        raise InvalidInputError(f"classes {empty} have no training images: a per-class generator needs some")
    return out


def class_batches(labels: torch.Tensor, num_classes: int, batch_size: int, steps: int,
                  generator: torch.Generator) -> Iterator[torch.Tensor]:
    """``steps`` index batches ``(C, batch_size)``: row ``c`` holds images of class ``c`` only.

    Each class's images are taken in a fresh random order and, when a class
    has fewer than ``steps * batch_size`` images, in successive fresh orders:
    every image is used once before any is used twice.

    Examples
    --------
    >>> labels = torch.tensor([0, 1, 0, 1, 1])
    >>> batch = next(class_batches(labels, 2, 2, 1, torch.Generator().manual_seed(0)))
    >>> labels[batch].tolist()
    [[0, 0], [1, 1]]
    """
    needed = steps * batch_size
    rows = []
    for idx in class_indices(labels.cpu(), num_classes):  # C small draws per epoch, not a hot path
        repeats = math.ceil(needed / len(idx))
        order = torch.cat([idx[torch.randperm(len(idx), generator=generator)] for _ in range(repeats)])
        rows.append(order[:needed])
    table = torch.stack(rows).view(num_classes, steps, batch_size).to(labels.device)
    for s in range(steps):
        yield table[:, s]


def steps_per_epoch(labels: torch.Tensor, num_classes: int, batch_size: int) -> int:
    """Batches per epoch: enough for the average class's images to be seen once.

    Examples
    --------
    >>> steps_per_epoch(torch.arange(10) % 2, 2, 2)
    3
    """
    return max(1, math.ceil(len(labels) / num_classes / batch_size))


def generator_steps_per_epoch(labels: torch.Tensor, num_classes: int, batch_size: int, critic_steps: int) -> int:
    """Generator steps per epoch of the per-class GANs: one per ``critic_steps`` critic batches.

    Examples
    --------
    >>> generator_steps_per_epoch(torch.zeros(56000), 10, 32, 5)
    35
    """
    return max(1, steps_per_epoch(labels, num_classes, batch_size) // critic_steps)


# --------------------------------------------------------------------------- the per-class GAN


def _mlp(members: int, sizes, final: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(EnsembleLinear(members, a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(LEAK))
    if final is not None:
        layers.append(final)
    return nn.Sequential(*layers)


class ClassGAN(nn.Module):
    """``C`` MLP GANs (generator and WGAN critic per class) with stacked parameters.

    Generator ``c``: ``z ~ N(0, I_D) -> LeakyReLU MLP -> sigmoid -> 28 x 28``;
    critic ``c``: ``784 -> LeakyReLU MLP -> 1`` (no normalisation layers, as
    the gradient penalty requires).

    Parameters
    ----------
    classes : int
        ``C``.
    latent_dim : int
        ``D`` (Wang et al.: 15).
    generator_hidden, critic_hidden : sequence of int
        Hidden widths.
    seed : int, optional
        Seeds the initialisation.

    Examples
    --------
    >>> gan = ClassGAN(2, 3, (8,), (8,), seed=0)
    >>> gan.critic(torch.rand(2, 4, 784)).shape
    torch.Size([2, 4])
    """

    def __init__(self, classes: int = 10, latent_dim: int = 15, generator_hidden=(256, 512),
                 critic_hidden=(512, 256), *, seed: int | None = None):
        super().__init__()
        self.num_members = int(classes)
        self.latent_dim = int(latent_dim)
        self.generator_hidden = tuple(int(h) for h in generator_hidden)
        self.critic_hidden = tuple(int(h) for h in critic_hidden)
        with seeded(0 if seed is None else seed):
            self.generator = _mlp(self.num_members, [self.latent_dim, *self.generator_hidden, NUM_PIXELS],
                                  nn.Sigmoid())
            self.critic_net = _mlp(self.num_members, [NUM_PIXELS, *self.critic_hidden, 1], None)

    def _check_latents(self, z: torch.Tensor) -> None:
        if z.ndim < 2 or z.shape[0] != self.num_members or z.shape[-1] != self.latent_dim:
            raise InvalidInputError(
                f"latents must have shape ({self.num_members}, ..., {self.latent_dim}), got {tuple(z.shape)}")

    def decode_flat(self, z: torch.Tensor) -> torch.Tensor:
        """``z (C, ..., D)`` -> flat images ``(C, ..., 784)`` in ``[0, 1]``."""
        self._check_latents(z)
        lead = z.shape[1:-1]
        return self.generator(z.reshape(self.num_members, -1, self.latent_dim)).view(
            self.num_members, *lead, NUM_PIXELS)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z (C, ..., D)`` -> images ``(C, ..., 1, 28, 28)`` in ``[0, 1]``."""
        flat = self.decode_flat(z)
        return flat.view(*flat.shape[:-1], *IMAGE_SHAPE)

    def critic(self, flat: torch.Tensor) -> torch.Tensor:
        """Critic values ``(C, B)`` of flat images ``(C, B, 784)`` (image ``b`` of row ``c`` scored by critic ``c``)."""
        return self.critic_net(flat).squeeze(-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)


def class_gradient_penalty(gan: ClassGAN, real: torch.Tensor, fake: torch.Tensor,
                           generator: torch.Generator) -> torch.Tensor:
    """Per-class WGAN-GP penalty ``E[(||grad D_c(x_hat)|| - 1)^2]``, ``(C,)`` (Gulrajani et al., Alg. 1).

    Interpolates pair real and fake images of the same class; the gradient of
    the summed critic values is each interpolate's own gradient because the
    critics and images do not interact.

    Examples
    --------
    >>> gan = ClassGAN(2, 3, (8,), (8,), seed=0)
    >>> class_gradient_penalty(gan, torch.rand(2, 4, 784), torch.rand(2, 4, 784),
    ...                        torch.Generator().manual_seed(0)).shape
    torch.Size([2])
    """
    eps = torch.rand(*real.shape[:2], 1, generator=generator).to(real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(gan.critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.norm(dim=-1) - 1).square().mean(1)


class ParameterAverage:
    """Exponential moving average of a module's parameters: ``avg <- decay * avg + (1 - decay) * theta``.

    Started at the module's current parameters; :meth:`update` after every
    optimiser step, :meth:`copy_to` to load the average into a module of the
    same architecture. A GAN generator's weights oscillate around an
    equilibrium under simultaneous gradient play; their average lies nearer
    it (Yazici et al., 2019, who use ``decay = 0.999``).

    Parameters
    ----------
    module : torch.nn.Module
        The module whose parameters are averaged (buffers are not: the
        generators here have none).
    decay : float
        In ``[0, 1)``; the average's horizon is about ``1 / (1 - decay)`` steps.

    Examples
    --------
    >>> layer = nn.Linear(1, 1, bias=False)
    >>> _ = layer.weight.data.fill_(0.0)
    >>> average = ParameterAverage(layer, decay=0.5)
    >>> _ = layer.weight.data.fill_(1.0)
    >>> average.update(layer)
    >>> average.update(layer)
    >>> float(average.shadow[0])
    0.75
    """

    def __init__(self, module: nn.Module, decay: float):
        if not is_fraction(decay):
            raise InvalidInputError(f"the average's decay must be a number in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.shadow = [p.detach().clone() for p in module.parameters()]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average ``(1 - decay)`` of the way to the module's current parameters."""
        params = [p.detach() for p in module.parameters()]
        if len(params) != len(self.shadow):
            raise InvalidInputError(f"the module has {len(params)} parameter tensors, the average {len(self.shadow)}")
        for average, param in zip(self.shadow, params):  # a handful of tensors, not a per-sample loop
            average.lerp_(param, 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite the module's parameters with the average."""
        for p, a in zip(module.parameters(), self.shadow, strict=True):
            p.copy_(a)


# --------------------------------------------------------------------------- cards


def _check_classes(classes) -> None:
    check_field(classes >= 2 if isinstance(classes, int) else False, "classes", classes, "an integer >= 2")


def _check_widths(name: str, value) -> None:
    check_field(isinstance(value, tuple) and len(value) > 0 and all(isinstance(h, int) and h > 0 for h in value),
                name, value, "a non-empty list of positive integers")


@dataclass(frozen=True)
class ClassVAEConfig(CardConfig):
    """The ``[architecture]`` and ``[training]`` keys of a ``class-vae`` card.

    Examples
    --------
    >>> ClassVAEConfig(latent_dim=0)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: latent_dim must be a positive integer, got 0
    """

    type: str = "mlp-class-vae"
    classes: int = 10
    latent_dim: int = 10
    hidden: tuple[int, ...] = (512, 256)
    likelihood: str = "bernoulli"
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    members_apart: bool = False

    TYPE = 'mlp-class-vae'
    POSITIVE_INTEGERS = ('latent_dim', 'epochs', 'batch_size')

    def __post_init__(self):
        super().__post_init__()
        _check_classes(self.classes)
        _check_widths("hidden", self.hidden)
        check_field(self.likelihood in LIKELIHOODS, "likelihood", self.likelihood, f"one of {LIKELIHOODS}")
        check_field(isinstance(self.members_apart, bool), "members_apart", self.members_apart, "true or false")


@dataclass(frozen=True)
class ClassGANConfig(CardConfig):
    """The ``[architecture]`` and ``[training]`` keys of a ``class-gan`` card.

    ``epochs`` counts generator steps in units of one pass over the average
    class's images by the critic (``critic_steps`` batches per generator step).
    ``generator_ema_decay`` > 0 keeps the exponential moving average of the
    generators' weights (:class:`ParameterAverage`) instead of their last
    values; 0 (the default) keeps the last values.

    Examples
    --------
    >>> ClassGANConfig(critic_steps=0)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: critic_steps must be a positive integer, got 0
    """

    type: str = "mlp-class-wgan-gp"
    classes: int = 10
    latent_dim: int = 15
    generator_hidden: tuple[int, ...] = (256, 512)
    critic_hidden: tuple[int, ...] = (512, 256)
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    critic_steps: int = 5
    gradient_penalty: float = 10.0
    generator_ema_decay: float = 0.0
    seed: int = 0
    members_apart: bool = False

    TYPE = 'mlp-class-wgan-gp'
    POSITIVE_INTEGERS = ('latent_dim', 'epochs', 'batch_size', 'critic_steps')

    def __post_init__(self):
        super().__post_init__()
        _check_classes(self.classes)
        _check_widths("generator_hidden", self.generator_hidden)
        _check_widths("critic_hidden", self.critic_hidden)
        check_adversarial_fields(self)
        check_field(is_fraction(self.generator_ema_decay), "generator_ema_decay", self.generator_ema_decay,
                    "a number in [0, 1) (0: keep the last weights)")
        check_field(isinstance(self.members_apart, bool), "members_apart", self.members_apart, "true or false")


def build_class_vae(card: ModelCard) -> VAEEnsemble:
    """The untrained per-class VAEs a card describes (member ``c`` = class ``c``).

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> vae = build_class_vae(load_card("mnist-class-vae"))
    >>> vae.num_members, vae.latent_dim
    (10, 10)
    """
    config = ClassVAEConfig.from_card(card)
    DataConfig.from_card(card)
    return VAEEnsemble(config.classes, config.latent_dim, config.hidden, config.likelihood, seed=config.seed)


def build_class_gan(card: ModelCard) -> ClassGAN:
    """The untrained per-class GANs a card describes.

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> gan = build_class_gan(load_card("mnist-class-gan"))
    >>> gan.num_members, gan.latent_dim
    (10, 15)
    """
    config = ClassGANConfig.from_card(card)
    DataConfig.from_card(card)
    return ClassGAN(config.classes, config.latent_dim, config.generator_hidden, config.critic_hidden,
                    seed=config.seed)


def _check_labels(train, classes: int, card: ModelCard) -> None:
    if int(train.labels.max()) >= classes:
        raise InvalidInputError(f"{card.name}: the data has labels up to {int(train.labels.max())} but the card "
                                f"declares classes = {classes}")


# --------------------------------------------------------------------------- training


@torch.no_grad()
def own_class_elbo(vae: VAEEnsemble, images: torch.Tensor, labels: torch.Tensor, *,
                   seed: int = EVAL_SEED) -> list[float]:
    """Each class VAE's mean ELBO (nats) on the images of its own class, seeded.

    Examples
    --------
    >>> vae = VAEEnsemble(2, 2, (8,), seed=0)
    >>> len(own_class_elbo(vae, torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 0, 1])))
    2
    """
    elbo = vae.elbo(images, generator=torch.Generator().manual_seed(seed))  # (C, N): every class on every image
    own = labels.to(elbo.device)
    return [float(elbo[c, own == c].double().mean()) for c in range(vae.num_members)]


def train_class_vae(card: ModelCard, *, data_dir=None, device="auto",
                    progress: ProgressFn | None = None) -> TrainResult:
    """Train one VAE per class, all in one batched pass per step, by maximising each one's ELBO on its class.

    Returns
    -------
    TrainResult
        ``metrics``: ``test_elbo_nats`` (headline: mean over classes of each
        VAE's ELBO on its own class's test images), ``test_elbo_nats_per_class``,
        ``classes``, ``num_train``, ``num_test``, ``seconds``; ``history``:
        per-epoch negative ELBO of every class's VAE.

    Raises
    ------
    ModelOutputError
        A class's loss is not finite at the end of an epoch.
    """
    config = ClassVAEConfig.from_card(card)
    watch = Stopwatch()
    train, test = class_data(card, config.classes, data_dir, device)
    vae = VAEEnsemble(config.classes, config.latent_dim, config.hidden, config.likelihood,
                      seed=config.seed).to(train.images.device)
    c = config.classes
    steps = steps_per_epoch(train.labels, c, config.batch_size)
    history = fit_class_vaes(vae, train.images.flatten(1), train.labels, steps, config,
                             torch.Generator().manual_seed(config.seed), progress, name=card.name)
    per_class = own_class_elbo(vae, test.images, test.labels)
    metrics = {"test_elbo_nats": sum(per_class) / c, "test_elbo_nats_per_class": per_class, "classes": c,
               "num_train": len(train), "num_test": len(test), "seconds": float(watch)}
    curves = {"unit": "epoch", "panels": {"negative ELBO per image (nats), own class": {
        f"class {k}": [row[k] for row in history] for k in range(c)}}}
    return TrainResult(vae.cpu(), metrics, curves)


def class_data(card: ModelCard, classes: int, data_dir, device):
    """``(train, test)`` of a per-class card, on ``device``, refused when a label exceeds ``classes``."""
    train, test = load_training_data(DataConfig.from_card(card), data_dir, resolve_device(device))
    _check_labels(train, classes, card)
    return train, test


def fit_class_vaes(vae: VAEEnsemble, flat_images: torch.Tensor, labels: torch.Tensor, steps: int,
                   config: ClassVAEConfig, generator: torch.Generator, progress: ProgressFn | None, *, name: str,
                   class_ids=None, task: str = VAE_TASK) -> list[list[float]]:
    """Train ``vae``'s members in place, member ``c`` on the images labelled ``c``: ``steps`` batches an
    epoch; returns each epoch's negative ELBO per member. ``class_ids``: the classes the members are
    (default ``0..C-1``), for the error that names a diverged one."""
    c, d, device = vae.num_members, config.latent_dim, flat_images.device
    class_ids = list(range(c)) if class_ids is None else list(class_ids)
    optimiser = torch.optim.Adam(vae.parameters(), lr=config.learning_rate)
    history: list[list[float]] = []
    vae.train()
    for epoch in range(config.epochs):
        loss_sum = torch.zeros(c, dtype=torch.float64, device=device)
        for s, idx in enumerate(class_batches(labels, c, config.batch_size, steps, generator)):
            flat = flat_images[idx]  # (C, B, 784): row c is class c
            log_lik, kl = vae._elbo_terms(flat, _standard_normal((c, config.batch_size, d), generator, device))
            negative = kl - log_lik  # (C, B)
            optimiser.zero_grad(set_to_none=True)
            negative.mean(1).sum().backward()
            optimiser.step()
            loss_sum += negative.detach().mean(1).double()
            report(progress, task, epoch * steps + s + 1, config.epochs * steps)
        epoch_loss = loss_sum / steps
        diverged = [class_ids[i] for i in (~torch.isfinite(epoch_loss)).nonzero().flatten().tolist()]
        if diverged:
            raise ModelOutputError(f"{name}: the VAEs of classes {diverged} diverged (non-finite loss) in "
                                   f"epoch {epoch + 1}; lower learning_rate = {config.learning_rate}")
        history.append(epoch_loss.tolist())
    vae.eval()
    return history


def train_class_gan(card: ModelCard, *, data_dir=None, device="auto", progress: ProgressFn | None = None,
                    on_generator_step: Callable[[ClassGAN, int], None] | None = None) -> TrainResult:
    """Train one WGAN-GP per class (Gulrajani et al., Algorithm 1), all classes in one batched pass per step.

    Each critic step draws ``batch_size`` real images of every class, the
    same number of fakes from each class's generator, and minimises
    ``D_c(fake) - D_c(real) + lambda * GP_c`` summed over classes; each
    generator step minimises ``-D_c(G_c(z))``. Adam as the card says. With
    ``generator_ema_decay`` > 0 the returned generators carry the moving
    average of their weights; the critics keep their last weights, and the
    test critic gap is measured with the averaged generators.

    Parameters
    ----------
    on_generator_step : callable, optional
        Called as ``on_generator_step(gan, step)`` after every generator
        update (``step`` counts from 1) with the raw, not averaged, weights:
        for monitoring, e.g. a benchmark tracking other averages. It must not
        change ``gan``.

    Returns
    -------
    TrainResult
        ``metrics``: ``test_critic_gap`` (headline: mean over classes of
        ``D_c(real test images of c) - D_c(fakes)``, an estimate of each
        class's Wasserstein-1 distance), ``test_critic_gap_per_class``,
        ``generator_steps``, ``classes``, ``num_train``, ``seconds``;
        ``history``: per-epoch mean critic loss and gap of every class.

    Raises
    ------
    ModelOutputError
        A non-finite loss.
    """
    config = ClassGANConfig.from_card(card)
    watch = Stopwatch()
    train, test = class_data(card, config.classes, data_dir, device)
    gan = ClassGAN(config.classes, config.latent_dim, config.generator_hidden, config.critic_hidden,
                   seed=config.seed).to(train.images.device)
    c = config.classes
    g_steps = generator_steps_per_epoch(train.labels, c, config.batch_size, config.critic_steps)
    history = fit_class_gans(gan, train.images.flatten(1), train.labels, g_steps, config,
                             torch.Generator().manual_seed(config.seed), progress, name=card.name,
                             on_generator_step=on_generator_step)
    gaps = critic_gaps(gan, test.images, test.labels)
    metrics = {"test_critic_gap": sum(gaps) / c, "test_critic_gap_per_class": gaps,
               "generator_steps": config.epochs * g_steps, "classes": c, "num_train": len(train),
               "num_test": len(test), "seconds": float(watch)}
    curves = {"unit": "epoch", "panels": {
        "critic gap D(real) - D(fake), training batches": {
            f"class {k}": [row[k] for row in history["gap"]] for k in range(c)},
        "critic loss (with gradient penalty)": {
            f"class {k}": [row[k] for row in history["critic_loss"]] for k in range(c)}}}
    return TrainResult(gan.cpu(), metrics, curves)


def fit_class_gans(gan: ClassGAN, flat_images: torch.Tensor, labels: torch.Tensor, g_steps: int,
                   config: ClassGANConfig, generator: torch.Generator, progress: ProgressFn | None, *, name: str,
                   class_ids=None, task: str = GAN_TASK,
                   on_generator_step: Callable[[ClassGAN, int], None] | None = None) -> dict[str, list[list[float]]]:
    """Train ``gan``'s members in place (WGAN-GP, member ``c`` on the images labelled ``c``), ``g_steps``
    generator steps an epoch, then keep the weights' moving average where the config asks; returns each
    epoch's mean critic ``gap`` and ``critic_loss`` per member, in eval mode. ``class_ids`` as
    :func:`fit_class_vaes` takes it."""
    c, d, b, device = gan.num_members, config.latent_dim, config.batch_size, flat_images.device
    class_ids = list(range(c)) if class_ids is None else list(class_ids)
    betas = (config.beta1, config.beta2)
    g_opt = torch.optim.Adam(gan.generator.parameters(), lr=config.learning_rate, betas=betas)
    d_opt = torch.optim.Adam(gan.critic_net.parameters(), lr=config.learning_rate, betas=betas)
    history: dict[str, list[list[float]]] = {"gap": [], "critic_loss": []}
    average = ParameterAverage(gan.generator, config.generator_ema_decay) if config.generator_ema_decay else None
    gan.train()
    for epoch in range(config.epochs):
        batches = class_batches(labels, c, b, g_steps * config.critic_steps, generator)
        gap_sum = torch.zeros(c, dtype=torch.float64, device=device)
        loss_sum = torch.zeros(c, dtype=torch.float64, device=device)
        for s in range(g_steps):
            for _ in range(config.critic_steps):
                real = flat_images[next(batches)]
                with torch.no_grad():
                    fake = gan.decode_flat(_standard_normal((c, b, d), generator, device))
                d_real, d_fake = gan.critic(real).mean(1), gan.critic(fake).mean(1)
                loss = d_fake - d_real + config.gradient_penalty * class_gradient_penalty(gan, real, fake, generator)
                d_opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                d_opt.step()
            gap_sum += (d_real - d_fake).detach().double()
            loss_sum += loss.detach().double()
            g_loss = -gan.critic(gan.decode_flat(_standard_normal((c, b, d), generator, device))).mean(1)
            g_opt.zero_grad(set_to_none=True)
            g_loss.sum().backward()
            g_opt.step()
            if average is not None:
                average.update(gan.generator)
            if on_generator_step is not None:
                on_generator_step(gan, epoch * g_steps + s + 1)
            report(progress, task, epoch * g_steps + s + 1, config.epochs * g_steps)
        if not bool(torch.isfinite(loss_sum).all()):
            bad = [class_ids[i] for i in (~torch.isfinite(loss_sum)).nonzero().flatten().tolist()]
            raise ModelOutputError(f"{name}: the GANs of classes {bad} diverged (non-finite critic loss) in "
                                   f"epoch {epoch + 1}; lower learning_rate = {config.learning_rate}")
        history["gap"].append((gap_sum / g_steps).tolist())
        history["critic_loss"].append((loss_sum / g_steps).tolist())
    if average is not None:
        average.copy_to(gan.generator)
    gan.eval()
    return history


@torch.no_grad()
def critic_gaps(gan: ClassGAN, images: torch.Tensor, labels: torch.Tensor, *,
                     seed: int = EVAL_SEED) -> list[float]:
    """Each class critic's ``mean D_c(real images of c) - mean D_c(as many fakes)``, seeded.

    Examples
    --------
    >>> gan = ClassGAN(2, 3, (8,), (8,), seed=0)
    >>> len(critic_gaps(gan, torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 0, 1])))
    2
    """
    check_images(images, IMAGE_SHAPE)
    flat = images.flatten(1).to(next(gan.parameters()).device)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for c, idx in enumerate(class_indices(labels.cpu(), gan.num_members)):
        real = gan.critic(flat[idx.to(flat.device)].expand(gan.num_members, -1, -1))[c].mean()
        z = _standard_normal((gan.num_members, len(idx), gan.latent_dim), generator, flat.device)
        fake = gan.critic(gan.decode_flat(z))[c].mean()
        out.append(float(real - fake))
    return out


# --------------------------------------------------------------------------- report and loading


def class_sample_sections(trained: TrainedModel, data_dir=None) -> list:
    """Report section: prior samples of every class's generator, one row per class (reads no data).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from ppl_audit.cards import load_card
    >>> trained = SimpleNamespace(module=ClassGAN(2, 3, (8,), (8,)), card=load_card("mnist-class-gan"), info={})
    >>> [s.name for s in class_sample_sections(trained)]
    ['samples']
    """
    from ppl_audit.report import Section
    from ppl_audit.report.figures import montage_figure, rounded

    model = trained.module
    k = model.num_members
    z = torch.randn(NUM_REPORT_COLUMNS, model.latent_dim, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    device = next(model.parameters()).device
    with torch.no_grad():
        images = model.decode(z.to(device).expand(k, -1, -1)).reshape(-1, *IMAGE_SHAPE).cpu()
    figure = montage_figure(
        "samples", f"{trained.card.name}: samples, z ~ N(0, I), one row per class",
        f"The same {NUM_REPORT_COLUMNS} draws from the {model.latent_dim}-dimensional standard normal prior "
        f"(seed {SAMPLE_SEED}) decoded by each class's generator.",
        images, NUM_REPORT_COLUMNS, row_labels=[f"class {c}" for c in range(k)],
        data={"seed": SAMPLE_SEED, "latents": rounded(z)},
    )
    return [Section("samples", "Samples", figures=[figure])]


__all__ = [
    "ClassGAN",
    "ClassGANConfig",
    "ClassVAEConfig",
    "ParameterAverage",
    "build_class_gan",
    "build_class_vae",
    "generator_steps_per_epoch",
    "class_batches",
    "class_gradient_penalty",
    "class_indices",
    "own_class_elbo",
    "critic_gaps",
    "train_class_gan",
    "train_class_vae",
]
