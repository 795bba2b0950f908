"""An ensemble of K WGAN-GP GANs whose critics score realism: Choi & Jang's discriminator scores.

In Choi & Jang, "Generative Ensembles for Robust Anomaly Detection", ``K``
WGAN critics are trained with their generators and then fine-tuned against
the frozen generators; an input's single critic value ``D_k(x)`` (higher =
more like the training data) and the ensemble variance ``Var_k D_k(x)`` are
out-of-distribution scores (:class:`ppl_audit.detectors.ood.CriticDetector` and
:class:`~ppl_audit.detectors.ood.CriticVarianceDetector` read
:meth:`GANEnsemble.critic_scores`).

Training (:func:`train_gan_ensemble`), member by member:

1. joint WGAN-GP training of generator and critic, the loop of
   :func:`ppl_audit.generative.gan.fit_gan` (Gulrajani et al. 2017,
   Algorithm 1);
2. critic fine-tuning (:func:`finetune_critic`): ``finetune_critic_steps``
   critic-only WGAN-GP steps against the trained generator, frozen and in
   eval mode, so that each critic is fitted to the generator it will be
   compared with rather than to one that kept moving.

Member ``k`` (0-based) is initialised under seed ``seed + k`` and draws its
data order, latents and gradient-penalty interpolates from a
``torch.Generator`` seeded with ``seed + k``: the members differ only by
their seeds, which is what makes their disagreement a score. All members are
built from one config, so they share one architecture.

Examples
--------
>>> ens = GANEnsemble(members=2, latent_dim=2, channels=4)
>>> ens.critic_scores(torch.rand(3, 1, 28, 28)).shape
torch.Size([2, 3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ppl_audit._device import resolve_device
from ppl_audit.cards import ModelCard
from ppl_audit.validators import check_images, is_non_negative_int, is_positive_int
from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.generative.common import IMAGE_SHAPE, NUM_REPORT_COLUMNS, SAMPLE_SEED, decode_on
from ppl_audit.generative.gan import GAN, GANConfig, critic_gap, fit_gan, wgan_gp_critic_loss
from ppl_audit.progress import ProgressFn, report
from ppl_audit.training import (
    CardConfig,
    EVAL_CHUNK,
    DataConfig,
    Stopwatch,
    Trainer,
    TrainedModel,
    TrainResult,
    check_field,
    load_training_data,
    seeded,
)
from ppl_audit.training.members import MemberTraining

KIND = "gan-ensemble"  # the [model] kind of GAN-ensemble cards
MIN_MEMBERS = 2  # Var_k D_k(x) needs at least two critics
LOSS = "wgan-gp"  # Choi & Jang's critics are Wasserstein critics: graded, unbounded realism scores
# progress task names: member k (0-based, as in GANEnsemble.member), the n-th of K
JOINT_TASK = "training GAN ensemble member {k} ({n}/{K})"
FINETUNE_TASK = "fine-tuning GAN ensemble critic {k} ({n}/{K})"


def _member_label(k: int) -> str:
    """``"member 0"``: labels use the 0-based index of :meth:`GANEnsemble.member` and the state-dict keys."""
    return f"member {k}"


# --------------------------------------------------------------------------- the module


class GANEnsemble(nn.Module):
    """``K`` GANs of one architecture; member ``k`` is initialised under seed ``seed + k``.

    State-dict keys are ``members.{k}.generator.*`` and ``members.{k}.critic.*``.

    Parameters
    ----------
    members : int
        ``K >= 2``.
    latent_dim, channels, critic_channels
        As for :class:`~ppl_audit.generative.gan.GAN` (``critic_channels``
        ``None``: ``channels``).
    seed : int
        Member ``k`` is built under :func:`ppl_audit.training.seeded` ``(seed + k)``.

    Raises
    ------
    InvalidInputError
        ``members`` is not an integer >= 2.

    Examples
    --------
    >>> ens = GANEnsemble(members=3, latent_dim=2, channels=4)
    >>> len(ens), ens.latent_dim, sorted({k.split(".")[2] for k in ens.state_dict()})
    (3, 2, ['critic', 'generator'])
    """

    def __init__(self, members: int = 5, latent_dim: int = 5, channels: int = 32,
                 critic_channels: int | None = None, seed: int = 0):
        check_field(is_positive_int(members) and members >= MIN_MEMBERS, "members", members,
                    f"an integer >= {MIN_MEMBERS}")
        gans = []
        for k in range(members):
            with seeded(seed + k):
                gans.append(GAN(latent_dim, channels, critic_channels))
        super().__init__()
        self._adopt(gans)

    def _adopt(self, gans: Sequence[GAN]) -> None:
        self.members = nn.ModuleList(gans)
        self.latent_dim = gans[0].latent_dim

    @classmethod
    def from_members(cls, gans: Sequence[GAN]) -> "GANEnsemble":
        """An ensemble of existing GANs (not copied), which must share one architecture.

        Parameters
        ----------
        gans : sequence of GAN
            At least two, with the same state-dict keys and shapes.

        Raises
        ------
        InvalidInputError
            Fewer than two members, a member that is not a ``GAN``, or
            members of different architectures (naming the member, the
            parameter and both shapes).

        Examples
        --------
        >>> len(GANEnsemble.from_members([GAN(2, 4), GAN(2, 4)]))
        2
        >>> GANEnsemble.from_members([GAN(2, 4), GAN(2, 8)])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ppl_audit.errors.InvalidInputError: members of different architectures: member 1 has generator.project...
        """
        gans = list(gans)
        check_field(len(gans) >= MIN_MEMBERS, "members", len(gans), f"at least {MIN_MEMBERS} GANs")
        for k, gan in enumerate(gans):
            if not isinstance(gan, GAN):
                raise InvalidInputError(f"member {k} must be a ppl_audit.generative.GAN, got {type(gan).__name__}")
        reference = {name: tuple(t.shape) for name, t in gans[0].state_dict().items()}
        for k, gan in enumerate(gans[1:], start=1):
            shapes = {name: tuple(t.shape) for name, t in gan.state_dict().items()}
            if set(shapes) != set(reference):
                extra, missing = sorted(set(shapes) - set(reference)), sorted(set(reference) - set(shapes))
                raise InvalidInputError(f"members of different architectures: member {k} has extra keys {extra} "
                                        f"and lacks {missing} compared with member 0")
            for name, shape in reference.items():
                if shapes[name] != shape:
                    raise InvalidInputError(f"members of different architectures: member {k} has {name} of shape "
                                            f"{shapes[name]}, member 0 {shape}")
        ensemble = cls.__new__(cls)
        nn.Module.__init__(ensemble)
        ensemble._adopt(gans)
        return ensemble

    def __len__(self) -> int:
        return len(self.members)

    def member(self, k: int) -> GAN:
        """Member ``k`` (0-based), the GAN itself (not a copy).

        Raises
        ------
        InvalidInputError
            ``k`` is not in ``0 .. K-1``.

        Examples
        --------
        >>> GANEnsemble(members=2, latent_dim=2, channels=4).member(1).latent_dim
        2
        """
        check_field(isinstance(k, int) and not isinstance(k, bool) and 0 <= k < len(self.members), "k", k,
                    f"a member index in 0..{len(self.members) - 1}")
        return self.members[k]

    @torch.no_grad()
    def critic_scores(self, x: torch.Tensor, chunk: int = EVAL_CHUNK) -> torch.Tensor:
        """Every member's critic value ``D_k(x)``: ``(K, N)``, higher = more like the training data.

        Runs in eval mode without gradients (the previous mode is restored),
        ``chunk`` images at a time on the ensemble's device.

        Parameters
        ----------
        x : torch.Tensor
            Images ``(N, 1, 28, 28)`` in ``[0, 1]``, on any device.
        chunk : int
            Images per forward pass.

        Returns
        -------
        torch.Tensor
            ``(K, N)`` float32 on the device of ``x``.

        Raises
        ------
        InvalidInputError
            ``x`` is not such a batch, or ``chunk`` is not a positive integer.
        ModelOutputError
            A critic returned NaN or infinite values (with their counts per member).

        Examples
        --------
        >>> GANEnsemble(members=2, latent_dim=2, channels=4).critic_scores(torch.rand(5, 1, 28, 28)).shape
        torch.Size([2, 5])
        """
        check_images(x, IMAGE_SHAPE)
        check_field(is_positive_int(chunk), "chunk", chunk, "a positive integer")
        first = next(self.parameters())
        was_training = self.training
        self.eval()
        try:
            rows = [torch.cat([gan.critic(part.to(first.device, first.dtype)).float() for part in x.split(chunk)])
                    if len(x) else torch.zeros(0, device=first.device) for gan in self.members]
        finally:
            self.train(was_training)
        scores = torch.stack(rows)
        bad = ~torch.isfinite(scores)
        if bad.any():
            nan, inf = torch.isnan(scores).sum(dim=1), torch.isinf(scores).sum(dim=1)
            counts = ", ".join(f"member {k}: {int(nan[k])} NaN, {int(inf[k])} inf"
                               for k in range(len(self.members)) if bad[k].any())
            raise ModelOutputError(f"critic scores of {len(x)} images are not finite ({counts})")
        return scores.to(x.device)


# --------------------------------------------------------------------------- the card


@dataclass(frozen=True)
class GANEnsembleConfig(CardConfig):
    """The ``[architecture]`` and ``[training]`` keys of a GAN-ensemble card.

    The GAN keys mean what they mean in :class:`~ppl_audit.generative.gan.GANConfig`
    (the loss is always WGAN-GP) and are validated by it.

    Parameters
    ----------
    members : int
        ``K >= 2`` GANs, member ``k`` seeded with ``seed + k``.
    finetune_critic_steps : int
        Critic-only WGAN-GP batches per member against its frozen generator
        after joint training (``>= 0``; 0 skips fine-tuning).

    Examples
    --------
    >>> GANEnsembleConfig(members=1)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: members must be an integer >= 2, got 1
    >>> GANEnsembleConfig(seed=3).member_config(2).seed
    5
    """

    type: str = "dcgan-conv"
    members: int = 5
    latent_dim: int = 5
    channels: int = 16
    critic_channels: int = 16
    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.9
    critic_steps: int = 5
    gradient_penalty: float = 10.0
    finetune_critic_steps: int = 500
    seed: int = 0

    POSITIVE_INTEGERS = ()

    def __post_init__(self):
        super().__post_init__()
        check_field(is_positive_int(self.members) and self.members >= MIN_MEMBERS, "members", self.members,
                    f"an integer >= {MIN_MEMBERS}")
        check_field(is_non_negative_int(self.finetune_critic_steps), "finetune_critic_steps",
                    self.finetune_critic_steps, "an integer >= 0")
        self.member_config(0)  # every shared GAN key, checked by GANConfig

    def member_config(self, k: int) -> GANConfig:
        """The :class:`~ppl_audit.generative.gan.GANConfig` member ``k`` trains with (seed ``seed + k``)."""
        return GANConfig(type=self.type, latent_dim=self.latent_dim, channels=self.channels,
                         critic_channels=self.critic_channels, loss=LOSS, epochs=self.epochs,
                         batch_size=self.batch_size, learning_rate=self.learning_rate, beta1=self.beta1,
                         beta2=self.beta2, critic_steps=self.critic_steps, gradient_penalty=self.gradient_penalty,
                         seed=self.seed + k)


def build_gan_ensemble(card: ModelCard) -> GANEnsemble:
    """The untrained ensemble a card describes (validates the card).

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> len(build_gan_ensemble(load_card("mnist-gan-ensemble")))
    5
    """
    config = GANEnsembleConfig.from_card(card)
    DataConfig.from_card(card)
    return GANEnsemble(config.members, config.latent_dim, config.channels, config.critic_channels, seed=config.seed)


# --------------------------------------------------------------------------- training


def finetune_critic(gan: GAN, images: torch.Tensor, steps: int, config: GANConfig, generator: torch.Generator, *,
                    log_every: int = 1, progress: ProgressFn | None = None,
                    task: str = "fine-tuning critic") -> list[float]:
    """Fine-tune ``gan.critic`` in place against its frozen generator (Choi & Jang's critic fine-tuning).

    ``steps`` critic-only WGAN-GP batches (the critic loss of Gulrajani et
    al., Algorithm 1, line 7) with a fresh Adam optimiser of
    ``config.learning_rate`` and betas; real batches are full batches of
    ``config.batch_size`` from successive shuffles of ``images``. The
    generator runs in eval mode without gradients, so neither its weights
    nor its batch-norm statistics change, and the critic is fitted to the
    very sampler it is later compared with. Modes are restored afterwards.

    Parameters
    ----------
    gan : GAN
        On the device of ``images``.
    images : torch.Tensor
        Training images ``(N, 1, 28, 28)`` (with fewer than
        ``config.batch_size`` of them, every batch is all of them).
    steps : int
        Critic batches (``>= 0``).
    config : GANConfig
        ``batch_size``, ``latent_dim``, ``learning_rate``, ``beta1``,
        ``beta2``, ``gradient_penalty``.
    generator : torch.Generator
        Data order, latents and interpolates.
    log_every : int
        Critic batches per returned loss value.
    progress : callable, optional
        Receives ``(task, step, steps)``.
    task : str
        The progress task name.

    Returns
    -------
    list of float
        The critic loss averaged over each ``log_every`` batches (a last,
        partial window is dropped).

    Examples
    --------
    >>> gan = GAN(2, 4)
    >>> before = {k: v.clone() for k, v in gan.generator.state_dict().items()}
    >>> losses = finetune_critic(gan, torch.rand(8, 1, 28, 28), 3, GANConfig(latent_dim=2, batch_size=4),
    ...                          torch.Generator().manual_seed(0))
    >>> len(losses), all(torch.equal(before[k], v) for k, v in gan.generator.state_dict().items())
    (3, True)
    """
    check_field(is_non_negative_int(steps), "steps", steps, "an integer >= 0")
    check_field(is_positive_int(log_every), "log_every", log_every, "a positive integer")
    device = images.device
    n = len(images)
    batch = min(config.batch_size, n)
    per_shuffle = max(1, n // batch)  # full batches only, as in joint training
    opt = torch.optim.Adam(gan.critic.parameters(), lr=config.learning_rate, betas=(config.beta1, config.beta2))
    was_generator, was_critic = gan.generator.training, gan.critic.training
    gan.generator.eval()
    gan.critic.train()
    losses, window = [], []
    step = 0
    try:
        while step < steps:
            order = torch.randperm(n, generator=generator)[: per_shuffle * batch].to(device)
            for idx in order.split(batch):
                if step == steps:
                    break
                with torch.no_grad():
                    z = torch.randn(len(idx), config.latent_dim, generator=generator).to(device)
                    fake = gan.generator(z)
                loss, _ = wgan_gp_critic_loss(gan.critic, images[idx], fake, config.gradient_penalty, generator)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                window.append(float(loss.detach()))
                step += 1
                if step % log_every == 0:
                    losses.append(sum(window) / len(window))
                    window = []
                report(progress, task, step, steps)
    finally:
        gan.generator.train(was_generator)
        gan.critic.train(was_critic)
    return losses


def train_gan_ensemble(card: ModelCard, *, data_dir=None, device="auto",
                       progress: ProgressFn | None = None) -> TrainResult:
    """Train a GAN-ensemble card: each member's WGAN-GP run, then its critic's fine-tuning.

    Members are trained one after another (:func:`train_gan_member`, which also
    trains one alone, on a worker: the trainer's ``members``); member ``k`` is
    initialised under seed ``seed + k`` and its :func:`~ppl_audit.generative.gan.fit_gan`
    and :func:`finetune_critic` draw from one ``torch.Generator`` seeded with
    ``seed + k``, so it is the same member wherever it trains. Critic gaps on the test split are measured after fine-tuning
    (and, for comparison, before it) with the generated images of
    :func:`~ppl_audit.generative.gan.critic_gap`.

    Returns
    -------
    TrainResult
        ``module``: the :class:`GANEnsemble` (CPU, eval mode). ``metrics``:
        ``test_critic_gap`` (the headline: the members' mean of
        ``E[D_k(x_test)] - E[D_k(G_k(z))]``), ``test_critic_gap_per_member``,
        ``test_critic_gap_before_finetune_per_member``,
        ``test_critic_score_real_per_member`` (mean critic score of the test
        images), ``test_critic_score_generated_per_member``,
        ``generator_steps`` (per member), ``finetune_critic_steps``,
        ``members``, ``num_train``, ``num_test``, ``seconds``. ``history``:
        each member's critic loss during joint training and during
        fine-tuning, both per the joint run's history unit.

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> card = load_card("mnist-gan-ensemble").with_overrides(
    ...     architecture={"members": 2, "channels": 4, "critic_channels": 4},
    ...     data={"train_split": "test", "num_train": 100, "num_test": 100},
    ...     training={"epochs": 1, "batch_size": 25, "finetune_critic_steps": 2})
    >>> train_gan_ensemble(card, data_dir="tests/fixtures/data", device="cpu").metrics["members"]  # doctest: +SKIP
    2
    """
    config = GANEnsembleConfig.from_card(card)
    train, test = load_training_data(DataConfig.from_card(card), data_dir, resolve_device(device))
    watch = Stopwatch()
    members = [_train_member(config, k, train, test, progress) for k in range(config.members)]
    return _join(card, members, seconds=float(watch))


def build_gan_member(card: ModelCard, k: int) -> GAN:
    """Member ``k`` of the card's ensemble, untrained: the GAN the whole ensemble builds under seed ``seed + k``."""
    config = GANEnsembleConfig.from_card(card)
    with seeded(config.seed + k):
        return GAN(config.latent_dim, config.channels, config.critic_channels)


def train_gan_member(card: ModelCard, k: int, *, data_dir=None, device="auto",
                     progress: ProgressFn | None = None) -> TrainResult:
    """Member ``k`` of a GAN-ensemble card trained alone (its WGAN-GP run, then its critic's fine-tuning):
    the same weights as inside :func:`train_gan_ensemble`. ``metrics`` and ``history`` are the member's."""
    config = GANEnsembleConfig.from_card(card)
    train, test = load_training_data(DataConfig.from_card(card), data_dir, resolve_device(device))
    return _train_member(config, k, train, test, progress)


def _train_member(config: GANEnsembleConfig, k: int, train, test, progress) -> TrainResult:
    watch = Stopwatch()
    device, K = train.images.device, config.members
    with seeded(config.seed + k):  # as GANEnsemble builds member k
        gan = GAN(config.latent_dim, config.channels, config.critic_channels).to(device)
    member_config = config.member_config(k)
    generator = torch.Generator().manual_seed(member_config.seed)
    fit = fit_gan(gan, train.images, member_config, generator, progress=progress,
                  task=JOINT_TASK.format(k=k, n=k + 1, K=K))
    gan.eval()
    before = critic_gap(gan, test.images)
    finetune = finetune_critic(gan, train.images, config.finetune_critic_steps, member_config, generator,
                               log_every=fit.log_every, progress=progress, task=FINETUNE_TASK.format(k=k, n=k + 1, K=K))
    gan.eval()
    gap = critic_gap(gan, test.images)
    metrics = {"critic_gap": gap["critic_gap"], "critic_gap_before_finetune": before["critic_gap"],
               "critic_score_real": gap["critic_score_real"], "critic_score_generated": gap["critic_score_generated"],
               "generator_steps": fit.generator_steps, "num_train": len(train), "num_test": len(test),
               "seconds": float(watch)}
    return TrainResult(gan.cpu(), metrics, {"unit": fit.unit, "joint": fit.history["critic_loss"],
                                            "finetune": finetune})


def _join(card: ModelCard, members: Sequence[TrainResult], seconds: float | None = None) -> TrainResult:
    """The ensemble's :class:`TrainResult` from its members' (``seconds``: the whole run's, else the members')."""
    config = GANEnsembleConfig.from_card(card)
    K = config.members
    per_member = [m.metrics["critic_gap"] for m in members]
    metrics = {
        "test_critic_gap": math.fsum(per_member) / K,
        "test_critic_gap_per_member": per_member,
        "test_critic_gap_before_finetune_per_member": [m.metrics["critic_gap_before_finetune"] for m in members],
        "test_critic_score_real_per_member": [m.metrics["critic_score_real"] for m in members],
        "test_critic_score_generated_per_member": [m.metrics["critic_score_generated"] for m in members],
        "generator_steps": members[-1].metrics["generator_steps"],
        "finetune_critic_steps": config.finetune_critic_steps,
        "members": K,
        "num_train": members[0].metrics["num_train"],
        "num_test": members[0].metrics["num_test"],
        "seconds": seconds if seconds is not None else math.fsum(m.metrics["seconds"] for m in members),
    }
    series = "E[D(G(z))] - E[D(x)] + lambda GP"
    panels = {f"critic loss, joint training ({series})": {_member_label(k): m.history["joint"]
                                                          for k, m in enumerate(members)},
              f"critic loss, fine-tuning against the frozen generator ({series})": {
                  _member_label(k): m.history["finetune"] for k, m in enumerate(members)}}
    ensemble = GANEnsemble.from_members([m.module for m in members])
    return TrainResult(ensemble.cpu().eval(), metrics, {"unit": members[-1].history["unit"], "panels": panels})


# --------------------------------------------------------------------------- report and loading


def _report_sections(trained: TrainedModel, data_dir=None) -> list:
    """One section: a row of samples per member, the same latents in every row (reads no data)."""
    from ppl_audit.report import Section
    from ppl_audit.report.figures import montage_figure, rounded

    ensemble = trained.module
    K = len(ensemble)
    z = torch.randn(NUM_REPORT_COLUMNS, ensemble.latent_dim, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    was_training = ensemble.training
    ensemble.eval()
    images = torch.cat([decode_on(ensemble.member(k).generator, z) for k in range(K)])
    ensemble.train(was_training)
    figure = montage_figure(
        "samples", f"{trained.card.name}: samples of each member, z ~ N(0, I)",
        f"Row k: member k's generator decoding the same {NUM_REPORT_COLUMNS} draws from the "
        f"{ensemble.latent_dim}-dimensional standard normal prior (seed {SAMPLE_SEED}). The members differ only "
        "by their seeds; their critics, not these samples, are what the ensemble's scores read.",
        images, NUM_REPORT_COLUMNS, row_labels=[_member_label(k) for k in range(K)],
        data={"seed": SAMPLE_SEED, "latents": rounded(z)},
    )
    return [Section("samples", "Samples of each member", figures=[figure])]


def _total_steps(card: ModelCard, member_steps: int) -> int:
    """Critic batches of the whole ensemble, given member 0's joint-training batches (the timed task).

    Every member trains on the same data for as long, then fine-tunes its critic for
    ``finetune_critic_steps`` critic-only batches, each a little cheaper than a joint batch (no generator
    step every ``critic_steps``): counting them as joint batches errs long by at most that difference.

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> _total_steps(load_card("mnist-gan-ensemble"), 2811)
    16555
    """
    config = GANEnsembleConfig.from_card(card)
    return config.members * (member_steps + config.finetune_critic_steps)


TRAINER = Trainer(
    kind=KIND,
    build=build_gan_ensemble,
    train=train_gan_ensemble,
    headline=("test_critic_gap", "mean critic gap over members, test images - generated"),
    report_sections=_report_sections,
    description="K WGAN-GP GANs of 28 x 28 images, critics fine-tuned against frozen generators (Choi & Jang)",
    total_steps=_total_steps,
    members=MemberTraining(count=lambda card: GANEnsembleConfig.from_card(card).members, build=build_gan_member,
                           train=train_gan_member, join=_join),
)

__all__ = [
    "GANEnsemble",
    "GANEnsembleConfig",
    "build_gan_ensemble",
    "finetune_critic",
    "train_gan_ensemble",
]
